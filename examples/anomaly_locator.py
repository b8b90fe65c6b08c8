"""The NaN/Inf locator on a classic bug: the gradient of a hand-written norm at 0.

    python examples/anomaly_locator.py [--out DIR]

‖v‖ = sqrt(Σ v²) is finite at v = 0, but its derivative v / ‖v‖ is 0/0 there. Run with
``check_numerics=True``, the program stops at the first node that produces a NaN or Inf
from finite inputs and says which it is; ``fg.viz.draw(err)`` draws the path from the zero
vector to that node, in red, with the explanation under it (written to DIR/anomaly.png,
default: next to this file).
"""
from __future__ import annotations

import argparse
import pathlib
import warnings

import numpy as np

import flowgrad as fg


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent))
    args = parser.parse_args()
    with fg.Graph():
        v = fg.variable(np.zeros(3), name="v")
        norm = fg.sqrt(fg.sum(v * v)).named("norm")
        prog = fg.compile([norm, fg.grad(norm, v)], check_numerics=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's own 0/0 warning
            prog()
    except fg.NumericsError as err:
        print(err)
        drawing = fg.viz.draw(err)
        if fg.viz.dot.dot_available():
            path = drawing.render(pathlib.Path(args.out) / "anomaly", format="png",
                                  cleanup=True)
            print("drawn:", path)
        return 0
    print("no NaN/Inf found: that is a bug in this example")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
