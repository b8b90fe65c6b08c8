"""Training: everything that changes variables over many runs of a program.

``optim.py`` (the optimizers and their atomic step; the update rules in
``optim_rules.py``, ``optim_sgd.py`` and ``lbfgs.py``; clipping and the finiteness check
in ``optim_grads.py``), ``fit.py`` and ``callbacks.py`` (the training loop and its
hooks), ``schedules.py`` (learning rates), ``data.py`` (mini-batches),
``checkpoint.py`` (saving variables, and with them an optimizer's state as
``optim_state.py`` lays it out), ``progress.py`` and ``metrics.py``. The public
names are ``fg.optim``, ``fg.metrics``, ``fg.progress``, ``fg.batches``,
``fg.save_variables`` … (see flowgrad/__init__.py).
"""
