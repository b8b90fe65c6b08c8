"""The engine: from outputs to a compiled program, and the executors that run it.

``program.py`` is ``compile`` and ``Program`` (prune, order, simplify, plan, bind, pick an
executor); ``simplify.py`` the simplifier (CSE, folding, fills) driving the identities
of ``rewrite_rules.py`` (a table of rules, as data); ``lengths.py`` the
run-time length symbols and their checks; ``binding.py`` turns feeds into checked arrays;
``plan.py`` holds the declared records (``Step``, ``Plan``), the verifier and the
printer; ``executors/`` one module per way of running a plan, behind one interface
(``accepts(plan, backend)``, ``build(plan, backend)``); ``lockstep.py`` runs one
executor beside the reference interpreter (``fg.compile(..., verify=True)``);
``feeds.py`` declares a program's feeds once (``FeedSpec``), rendered as the reference
check and as the generated binder. The generated executors are written by
``codegen.py`` with ``fusion.py`` (numexpr chains), ``regions.py``,
``region_kernels.py`` and ``region_cache.py`` (numba loops and their on-disk cache),
``numpy_kernels.py`` (numpy-specialised kernels), ``scalar_plan.py`` and
``scalar_tier.py`` (the scalar path on Python floats).
"""
from .plan import FLAT_STEPS, FlatSteps, Plan, PlanError, Step, format_plan, verify

__all__ = ["FLAT_STEPS", "FlatSteps", "Plan", "PlanError", "Step", "format_plan", "verify"]
