"""Loops and branches as single graph nodes (``fg.scan``, ``fg.cond``, ``fg.while_loop``,
``fg.fori_loop``).

``build.py`` traces the user's Python functions once into bodies and adds the loop node
and its results; ``body.py`` is a traced body (a sub-graph with its argument
placeholders, its captures, its compiled programs) and replays it into another graph;
``loop_op.py`` declares a loop (``LoopSpec``) and the two ops, ``loop`` (one run) and
``loop_out`` (one result), and runs them; ``grad.py`` builds their derivatives, which
are loops too (one backward loop for every result a loss reads); ``task.py`` runs a loop
as one task of a lazy backend (dask). Graph files keep loops through
flowgrad/io/loop_io.py; ONNX export and import through flowgrad/io/onnx_loops.py and
onnx_import_loops.py; drawings through viz/loops.py, viz/unroll.py, viz/loop_formula.py.
"""
