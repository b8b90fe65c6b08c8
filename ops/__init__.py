"""flowgrad's ops: one file per family. ``base`` holds the contract and registry."""
from .base import REGISTRY, NONDIFF, Op, apply, as_node  # noqa: F401
from .broadcast import broadcast_to_like, sum_to_like  # noqa: F401
from .elementwise import (abs, add, cos, div, equal, exp, greater, greater_equal,  # noqa: F401
                          less, less_equal, log, log1p, maximum, minimum, mul, neg,
                          not_equal, pow, sign, sin, sqrt, sub, tanh, where)
from .reductions import log_softmax, logsumexp, max, mean, min, softmax, sum  # noqa: F401
from .shape import (broadcast_to, concatenate, expand_dims, reshape,  # noqa: F401
                    squeeze, stack, transpose)
from .indexing import getitem, take  # noqa: F401
from .linalg import (det, dot, eigh, eigvalsh, inv, logdet, matmul, norm,  # noqa: F401
                     outer, solve, trace)
from .creation import ones_like, zeros_like  # noqa: F401
from .nn import linear, relu, sigmoid, softplus  # noqa: F401
from .losses import bce_with_logits, l2, mse, softmax_cross_entropy  # noqa: F401
from .conv import conv2d  # noqa: F401
from .pooling import avg_pool2d, max_pool2d  # noqa: F401
# issue 22's vocabulary (one block, for merging)
from .special import erf, tan  # noqa: F401
from .activations import clip, elu, gelu, leaky_relu  # noqa: F401
from .statistics import cumsum, prod, std, var  # noqa: F401
from .tensor import astype, pad, split  # noqa: F401
from .einsum import einsum  # noqa: F401
from .linalg import cholesky, lstsq, qr, svd  # noqa: F401
from .gradient import stop_gradient  # noqa: F401  (issue 21)
from .complex import conj, imag, real  # noqa: F401  (complex gradients)

#: the ops that are public as ``fg.NAME`` (some shadow builtins on purpose: fg.sum,
#: fg.pow, fg.abs, fg.max, fg.min)
__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "log1p", "sqrt", "abs",
    "tanh", "sin", "cos", "maximum", "minimum", "where", "sign",
    "equal", "not_equal", "greater", "greater_equal", "less", "less_equal",
    "sum", "mean", "max", "min", "logsumexp", "softmax", "log_softmax",
    "reshape", "transpose", "broadcast_to", "expand_dims", "squeeze",
    "concatenate", "stack", "getitem", "take",
    "matmul", "dot", "outer", "trace", "det", "logdet", "inv", "solve", "eigvalsh", "eigh",
    "norm",
    "linear", "sigmoid", "softplus", "relu", "mse", "l2", "bce_with_logits",
    "softmax_cross_entropy",
    "zeros_like", "ones_like",
    "conv2d", "max_pool2d", "avg_pool2d",
]
__all__ += ["clip", "leaky_relu", "elu", "gelu", "erf", "tan", "var", "std", "prod",
            "cumsum", "einsum", "pad", "split", "astype",
            "cholesky", "qr", "lstsq", "svd"]   # issue 22
__all__ += ["stop_gradient"]   # issue 21: derivatives the user controls
__all__ += ["conj", "real", "imag"]   # complex parts (PyTorch's gradient convention)
