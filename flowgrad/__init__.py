"""flowgrad: define-and-run automatic differentiation on static graphs.

Build a graph of op nodes, differentiate it (derivatives are nodes too), compile
it once, run it on numpy or another backend, draw it. See README.md and
``shared/design/API.md`` for the public contract; this file only gathers names.
"""
from .errors import (BackendError, DifferentiationError, FeedError,  # noqa: F401
                     FlowgradError, GradientCheckError, GraphError, ShapeError)
from .graph import Graph, Node, default_graph, name_scope, reset_default_graph  # noqa: F401
from .leaves import constant, placeholder, variable  # noqa: F401
from . import ops  # noqa: F401
from .ops import *  # noqa: F401,F403  (every op of ops.__all__ is fg.NAME)
from .autodiff import adjoints, grad, jvp, vjp  # noqa: F401
from .scheduler import Program, compile, run  # noqa: F401
from .tracing import Trace  # noqa: F401
from .backends import get_backend, set_default_backend, to_numpy  # noqa: F401
from .testing import check_grads  # noqa: F401
from .progress import progress  # noqa: F401
from . import optim  # noqa: F401
from .errors import OptimizerError  # noqa: F401
from . import viz  # noqa: F401
from .data import batches  # noqa: F401
from .checkpoint import CheckpointError, load_variables, save_variables  # noqa: F401
from .higher_order import hessian, hvp, jacobian  # noqa: F401
from . import seed  # noqa: F401  (the seed's worked example as a graph)
