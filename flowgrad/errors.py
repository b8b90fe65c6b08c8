"""The exceptions flowgrad raises: one class per kind of user mistake."""


class FlowgradError(Exception):
    """Base class of every error flowgrad raises on purpose."""


class ShapeError(FlowgradError, ValueError):
    """Operands whose shapes do not fit the op, detected when the node is built."""


class FeedError(FlowgradError, ValueError):
    """A missing, unknown, mis-shaped or mis-typed feed; nothing was computed."""


class GraphError(FlowgradError, ValueError):
    """Nodes of two graphs mixed, or a graph used in a way it cannot support."""


class DifferentiationError(FlowgradError, TypeError):
    """An op lacks the rule asked for, or a derivative is asked of a non-scalar."""


class UsageError(FlowgradError, TypeError):
    """A flowgrad function called with an argument of the wrong kind: a number where a node
    is wanted, ``None`` for a program's outputs, a dtype name flowgrad does not know, or a
    node used where only a value can go (``float(node)``). Raised before anything is built."""


class ArgumentError(FlowgradError, ValueError):
    """An argument of the right kind whose value flowgrad refuses: a stride or a pool size
    below 1, a negative padding, an unknown padding mode, a layer of 0 units, a patience
    of −1, an empty list of operands. Raised before anything is built; the message names
    the function, the value and the line of your code that passed it."""


class BackendError(FlowgradError, RuntimeError):
    """A backend that is unknown, not installed, or has no device to run on."""


class GradientCheckError(FlowgradError, AssertionError):
    """A derivative disagrees with central finite differences."""


class GraphFileError(FlowgradError, ValueError):
    """A graph file (or ONNX model) that cannot be read or written faithfully: corrupt,
    truncated, too large, of a newer format, or naming an op flowgrad does not have.
    Nothing is built when it is raised."""


class RunError(FlowgradError, RuntimeError):
    """A kernel failed while a program ran; the message names the node, its op, its
    inputs' shapes and dtypes and the line that built it. The original is ``__cause__``."""

    def __init__(self, message, node=None):
        super().__init__(message)
        #: the node whose kernel raised
        self.node = node


class NumericsError(FlowgradError, FloatingPointError):
    """A value turned NaN or ±Inf although none of its inputs was (``check_numerics=True``
    or ``fg.detect_anomaly()``). ``.node`` is that node, ``.trace`` a Trace of every value
    computed up to and including it."""

    def __init__(self, message, node=None, trace=None):
        super().__init__(message)
        self.node = node
        self.trace = trace
        self._explanation = None

    @property
    def explanation(self):
        """The recognised trap (flowgrad.explain.Explanation), or None. An error raised
        again at a loop node (a NaN found in its body: no trace of its own) has its
        cause's, the one its message quotes."""
        cause = self.traced_cause()
        if cause is not None and cause is not self:
            return cause.explanation
        return self._explanation

    @explanation.setter
    def explanation(self, found):
        self._explanation = found

    def traced_cause(self):
        """The NumericsError that the checked run raised where it found the NaN (the
        last of the chain ``__cause__`` that carries a trace: a loop raises its body's
        again, wrapped, at the loop node); this error if it is that one; None if none."""
        err, found = self, None
        for _ in range(64):                 # a chain of causes is short; never loop forever
            if err is None:
                break
            if isinstance(err, NumericsError) and err.trace is not None:
                found = err
            err = err.__cause__
        return found

    def explain(self) -> str:
        """The likely cause and the usual fix, when the culprit matches a known trap
        (an untaken where branch, log or division at 0, sqrt at 0 in the backward pass,
        exp overflow); else says that none was recognised."""
        cause = self.traced_cause()
        if cause is not None and cause is not self:
            return cause.explain()
        if self.explanation is None:
            from .explain import explain
            self.explanation = explain(self.node, self.trace)
        if self.explanation is None:
            return ("no known trap recognised at this node: look at its inputs' values in "
                    "the message, and draw the trace with fg.viz.draw(err)")
        return str(self.explanation)


class VerifyError(FlowgradError, AssertionError):
    """Lockstep verify mode (``fg.compile(..., verify=True)``, ``FLOWGRAD_VERIFY=1``): the
    program's executor and the reference interpreter disagree. ``.node`` is the first
    node whose values differ, ``.step`` its plan step (None for a leaf or constant),
    ``.got`` and ``.want`` the executor's and the reference's values."""

    def __init__(self, message, node=None, step=None, got=None, want=None):
        super().__init__(message)
        self.node, self.step, self.got, self.want = node, step, got, want


class NodeLookupError(FlowgradError, KeyError):
    """A result asked about a node it does not hold: ``audit.error(node)`` for a node the
    precision audit did not cover (not an ancestor of its outputs, or of another graph).
    Still a KeyError, as the mapping lookup it replaces was; the message names the node
    and the user's line."""

    def __str__(self):               # KeyError's would quote the whole message
        return str(self.args[0]) if self.args else ""


class OptimizerError(FlowgradError, ValueError):
    """An optimizer setting out of range (a learning rate of inf, a schedule value that is
    NaN, a negative eps), a program whose outputs are not the loss and its gradients, or
    a fit of an optimizer that is fitting in another thread already."""


def located(cls, message: str, *args, **kwargs):
    """``cls(message)`` ending with ``"\n  at file:line"``: the user's code that called
    flowgrad (the innermost frame outside it), for an error raised straight back to
    that call (a feed, an assignment, a name), so that it says which line to look at."""
    from .ops.base import at_user_line    # (lazily: ops imports this module)
    return cls(message + at_user_line(), *args, **kwargs)
