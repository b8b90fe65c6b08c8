"""flowgrad: define-and-run automatic differentiation on static graphs.

Build a graph of op nodes, differentiate it (derivatives are nodes too), compile
it once, run it on numpy or another backend, draw it. See README.md and docs/
(theory, the op table, how-tos); this file only gathers names.
"""
from .errors import (BackendError, DifferentiationError, FeedError,  # noqa: F401
                     FlowgradError, GradientCheckError, GraphError, ShapeError)
from .errors import GraphFileError  # noqa: F401
from .errors import NumericsError, RunError, UsageError  # noqa: F401
from .errors import VerifyError  # noqa: F401
from .errors import ArgumentError  # noqa: F401
from .errors import NodeLookupError  # noqa: F401
from .numerics import detect_anomaly  # noqa: F401
from .graph import Graph, Node, default_graph, name_scope, reset_default_graph  # noqa: F401
from .composite import composite  # noqa: F401
from .leaves import constant, placeholder, variable  # noqa: F401
from . import ops  # noqa: F401
from .ops import *  # noqa: F401,F403  (every op of ops.__all__ is fg.NAME)
from .autodiff import adjoints, grad, jvp, vjp  # noqa: F401
from .engine.program import Program, compile, run  # noqa: F401
from .tracing import Trace  # noqa: F401
from .backends import get_backend, set_default_backend, to_numpy  # noqa: F401
from .testing import check_grads  # noqa: F401
from .training.progress import progress  # noqa: F401
from .training import optim  # noqa: F401
from .errors import OptimizerError  # noqa: F401
from . import viz  # noqa: F401
from .training.data import batches  # noqa: F401
from .training.checkpoint import CheckpointError, load_variables, save_variables  # noqa: F401
from .higher_order import hessian, hvp, jacobian  # noqa: F401
from . import worked_example  # noqa: F401  (the lecture notes' worked example as a graph)
from .vectorize import vectorize  # noqa: F401  (issue 21: batching transform)
from .io import export_onnx, import_onnx, load_graph, save_graph  # noqa: F401
from .ops.classification import argmax, one_hot  # noqa: F401
from . import random  # noqa: F401  (fg.random.normal …: random draws as nodes)
from . import nn  # noqa: F401  (layers, initialisers, dropout)
from .training import metrics  # noqa: F401
from .summary import summary  # noqa: F401
from .audit import precision_audit  # noqa: F401  (float32 against float64, node by node)
from .training.fit import Callback, EarlyStopping, History  # noqa: F401  (opt.fit's pieces)
from .training.callbacks import ModelCheckpoint, ReduceLROnPlateau, TerminateOnNaN  # noqa: F401
from .custom import custom_jvp, custom_vjp  # noqa: F401  (issue 21: your own rules)
from . import custom_op as _custom_op  # noqa: F401,E402  (registers custom_call)
from .remat import remat  # noqa: F401,E402  (issue 21: recompute in the backward pass)
from . import seeds as _seeds  # noqa: F401,E402  (registers shaped_like: a seed held to its input)
from .loops.build import cond, fori_loop, scan, while_loop  # noqa: F401,E402  (issue 20: loops)
from .loops.loop_op import LoopLimitError  # noqa: F401,E402


def __getattr__(name):
    """``fg.seed`` was the worked example's old name: "seed" now means only random seeds
    and the seed adjoint v̄ = 1, so the module is ``fg.worked_example``."""
    if name == "seed":
        import warnings
        warnings.warn("fg.seed is now fg.worked_example (it holds the lecture notes' worked "
                      "example)", DeprecationWarning, stacklevel=2)
        return worked_example
    raise AttributeError(f"module 'flowgrad' has no attribute {name!r}")
