"""The engine: the declared plan a compile emits, and the executors that run it.

``plan.py`` holds the records (``Step``, ``Plan``), the verifier and the printer;
``executors/`` one module per way of running a plan, behind one interface
(``accepts(plan, backend)``, ``build(plan, backend)``); ``lockstep.py`` runs one
executor beside the reference interpreter (``fg.compile(..., verify=True)``);
``feeds.py`` declares a program's feeds once (``FeedSpec``), rendered as the reference
check and as the generated binder. The compile itself (flowgrad/scheduler.py),
simplify, lengths, the feed conversions and the generated-code modules move here when
the other branches of this wave have landed.
"""
from .plan import FLAT_STEPS, FlatSteps, Plan, PlanError, Step, format_plan, verify

__all__ = ["FLAT_STEPS", "FlatSteps", "Plan", "PlanError", "Step", "format_plan", "verify"]
