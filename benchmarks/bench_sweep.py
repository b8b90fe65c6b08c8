"""The reverse sweep's cost a node: now, without the builder forms, and without the site
shortcut either (issue 19).

One process, rounds alternated, min CPU time of each: a chain y = sin(y) of --n nodes
is built, then differentiated (grad builds two nodes a chain node: the rule's cos(x)
and the product). ``rules`` switches the builder forms off (ops/fast_rules.py): every
rule runs as the op's own, building through Node operators and ``apply``. ``walk``
also switches the site shortcut off: every node a primitive rule builds then finds the
user's line by walking the frames (ops.base.plain_rule answering False for every
rule), as before either existed.

    .venv/bin/python benchmarks/bench_sweep.py [--n 50000] [--rounds 8]
"""
from __future__ import annotations

import argparse
import gc
import time

import flowgrad as fg
import flowgrad.ops.base as base
import flowgrad.ops.fast_rules as fast_rules


def _variants():
    """{name: (ops.base.plain_rule, fast_rules.REVERSE)}"""
    forms = fast_rules.REVERSE
    return {"now": (base.plain_rule, forms), "rules": (base.plain_rule, {}),
            "walk": (lambda rule: False, {})}


def _grad_seconds(n):
    with fg.Graph():
        x = fg.placeholder("x")
        y = x
        for _ in range(n):
            y = fg.sin(y)
        gc.collect()
        t = time.process_time()
        fg.grad(y, x)
        return time.process_time() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    variants = _variants()
    best = {k: float("inf") for k in variants}
    try:
        for _ in range(args.rounds):
            for k, (plain, forms) in variants.items():
                base.plain_rule, fast_rules.REVERSE = plain, forms
                best[k] = min(best[k], _grad_seconds(args.n))
    finally:
        base.plain_rule, fast_rules.REVERSE = variants["now"]
    print(f"grad of a {args.n:,}-node sin chain, min CPU of {args.rounds} alternated rounds\n")
    print("| variant | grad | µs a chain node | vs now |")
    print("|---|---|---|---|")
    for k, s in best.items():
        print(f"| {k} | {s:.3f} s | {s / args.n * 1e6:.2f} | {s / best['now']:.2f}× |")


if __name__ == "__main__":
    main()
