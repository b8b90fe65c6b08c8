"""Run a function in several threads released at once (the thread-safety tests)."""
from __future__ import annotations

import sys
import threading


def in_threads(fn, n=8, switch=None):
    """Run ``fn(k)`` for k < n in n threads released together by a barrier; re-raise the
    first error. ``switch``: a thread switch interval (seconds) to hold meanwhile
    (``1e-6``: switch as often as Python allows, to make races likelier)."""
    barrier = threading.Barrier(n)
    errors = []

    def body(k):
        try:
            barrier.wait()
            fn(k)
        except BaseException as e:  # noqa: BLE001  (re-raised below)
            errors.append(e)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    old = sys.getswitchinterval()
    if switch is not None:
        sys.setswitchinterval(switch)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0]
