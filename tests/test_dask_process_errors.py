"""A guarded task that dask runs in another process (the "processes" scheduler, a
``dask.distributed`` cluster of worker processes) fails with the RunError the threaded
scheduler gives: the same class, message, node and ``__cause__`` -- a gather's index out
of range, one_hot's label refusal -- never the bare exception without a node or line.
(A while_loop's limit is pinned too: its task runs in the calling process under such a
scheduler, DaskBackend.task, so it was the RunError already.)

One worker process, started once for the module (spawned: about a second), and a
one-worker cluster (about 1.5 s); each test then takes a few hundredths of a second."""
import multiprocessing
import os
import pickle
import threading
from types import SimpleNamespace
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.backends.dask_backend import DaskBackend
from flowgrad.engine.lazy_errors import TaskFailed, guard, naming

dask = pytest.importorskip("dask")


@pytest.fixture(scope="module")
def processes():
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield lambda: dask.config.set(scheduler="processes", pool=pool)
    finally:
        pool.shutdown(wait=True)


def _failure(backend, outs, feed):
    with pytest.raises(Exception) as e:
        got = fg.compile(outs, backend=backend)(feed)
        [fg.to_numpy(v) for v in (got if isinstance(got, list) else [got])]
    return e.value


def _loop():
    x = fg.placeholder("x")
    return fg.while_loop(lambda c: c < 1e9, lambda c: c * 2.0, x, max_iters=5), {x: 1.0}


def _gather():
    t = fg.placeholder("t", (7, 3))
    i = fg.placeholder("i", (2, 2), "int64")
    feed = {t: np.arange(21.0).reshape(7, 3), i: np.array([[1, 2], [0, 3]])}
    return fg.take(t, i, axis=1), feed            # 3: the first index past the axis


def _one_hot():
    lab = fg.placeholder("lab", (3,), "int64")
    return fg.one_hot(lab, 4), {lab: np.array([0, 1, 4])}


CASES = {"while_loop": (_loop, fg.LoopLimitError, "max_iters=5"),
         "gather": (_gather, IndexError, "index 3 is out of bounds for axis 1 with size 3"),
         "one_hot": (_one_hot, fg.FeedError, "class labels must lie in [0, 4)")}


@pytest.mark.parametrize("backend", [pytest.param("dask", id="dask"),
                                     pytest.param(DaskBackend(chunks=1), id="chunked")])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_task_failing_in_another_process_is_the_threaded_run_error(processes, backend,
                                                                     case):
    build, cls, words = CASES[case]
    with fg.Graph():
        out, feed = build()
        want = _failure(backend, out, feed)            # the threaded scheduler
        with processes():
            got = _failure(backend, out, feed)
    assert isinstance(want, fg.RunError) and isinstance(want, cls)
    assert type(got) is type(want)
    assert str(got) == str(want) and words in str(got).splitlines()[0]
    assert "test_dask_process_errors.py:" in str(got).splitlines()[0]   # the user's line
    assert got.node is want.node and got.node is not None
    assert type(got.__cause__) is type(want.__cause__)
    assert str(got.__cause__) == str(want.__cause__)


def test_a_lazy_value_the_user_computes_in_processes_is_the_run_error(processes):
    """DaskBackend(lazy=True) hands the dask array out: the user's own dask.compute in
    processes gets the same RunError, node and all."""
    with fg.Graph():
        out, feed = _one_hot()
        want = _failure("dask", out, feed)
        lazy = fg.compile(out, backend=DaskBackend(lazy=True))(feed)
        with processes(), pytest.raises(fg.RunError) as e:
            dask.compute(lazy)
    assert type(e.value) is type(want) and str(e.value) == str(want)
    assert e.value.node is want.node


def _ninth(labels):
    return labels[9]


class Local(ValueError):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, why):
        super().__init__(why)
        self.lock = threading.Lock()


def _unportable(labels):
    raise Local("no")


def _guarded_failure(fn=_ninth):
    """``fn`` guarded as one_hot's step, sent away and back (pickled, as dask sends a
    task): the exception its call raises there, and the node it names."""
    with fg.Graph() as g:
        lab = fg.placeholder("lab", (3,), "int64")
        node = fg.one_hot(lab, 4)
    plan = SimpleNamespace(graph=g, made_steps=lambda: [SimpleNamespace(node=node.id)])
    check = naming(plan, [lambda: guard(fn)])[0]()
    sent = pickle.loads(pickle.dumps(check))
    with pytest.raises(TaskFailed) as e:
        sent(np.arange(3))
    return e.value, node


def test_a_sent_failure_comes_back_as_the_run_error_of_its_node():
    failed, node = _guarded_failure()
    back = pickle.loads(pickle.dumps(failed))
    assert type(back) is not TaskFailed and isinstance(back, IndexError)
    assert isinstance(back, fg.RunError) and back.node is node
    assert str(back) == str(failed)
    assert str(back).startswith("'one_hot_1' (one_hot), built at ")
    assert isinstance(back.__cause__, IndexError)


def test_a_failure_whose_graph_is_elsewhere_still_names_node_and_line():
    """Unpickled in another process (or once the graph is gone), the report keeps its
    words: the node, its op and the user's line, without ``.node``."""
    failed, _ = _guarded_failure()
    w = failed.where
    elsewhere = TaskFailed(w._replace(pid=os.getpid() + 1), failed.original)
    back = pickle.loads(pickle.dumps(elsewhere))
    assert isinstance(back, fg.RunError) and isinstance(back, IndexError)
    assert back.node is None and str(back) == str(failed)
    assert "test_dask_process_errors.py:" in str(back).splitlines()[0]


def test_an_original_that_cannot_travel_arrives_as_its_words():
    failed, node = _guarded_failure(_unportable)
    back = pickle.loads(pickle.dumps(failed))
    assert isinstance(back, fg.RunError) and isinstance(back, RuntimeError)
    assert back.node is node and "RuntimeError: Local: no" in str(back)


def _wrapped_failure():
    """What dask's "processes" scheduler raises without tblib: the task's exception
    wrapped as a RemoteException (its message, then the worker's traceback)."""
    from dask.multiprocessing import remote_exception
    failed, node = _guarded_failure()
    raise remote_exception(pickle.loads(pickle.dumps(failed)), "worker traceback")


def test_a_scheduler_wrapped_failure_is_unwrapped_where_flowgrad_computes():
    import dask.array as da
    lazy = da.from_delayed(dask.delayed(_wrapped_failure)(), (3, 4), dtype=np.float64)
    with pytest.raises(fg.RunError) as e:
        DaskBackend().to_numpy(lazy)
    assert type(e.value).__module__ == "flowgrad.errors"     # not dask's wrapper class
    assert isinstance(e.value, IndexError) and e.value.node.name == "one_hot_1"
    assert "worker traceback" not in str(e.value)
    assert isinstance(e.value.__cause__, IndexError)


@pytest.fixture(scope="module")
def cluster():
    """A dask.distributed cluster of one worker process (about 1.5 s to start); its
    client is made the scheduler only inside ``with cluster():``."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c, \
            distributed.Client(c, set_as_default=False) as client:
        yield client.as_current


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_task_failing_on_a_cluster_worker_is_the_threaded_run_error(cluster, case):
    build, cls, _ = CASES[case]
    with fg.Graph():
        out, feed = build()
        want = _failure("dask", out, feed)             # the threaded scheduler
        lazy = fg.compile(out, backend=DaskBackend(lazy=True))
        with cluster():
            got = _failure("dask", out, feed)
            with pytest.raises(fg.RunError) as own:    # the user's own dask.compute
                dask.compute(lazy(feed))
    for err in (got, own.value):
        assert type(err) is type(want) and isinstance(err, cls)
        assert str(err) == str(want) and err.node is want.node
        assert type(err.__cause__) is type(want.__cause__)


def _max_empty():
    v = fg.placeholder("v", (None,))
    return fg.max(v), {v: np.zeros(0)}


def _not_positive_definite():
    a = fg.placeholder("a", (2, 2))
    return fg.cholesky(a), {a: np.array([[1.0, 2.0], [2.0, 1.0]])}


# a task of dask's own (located by the numpy backend where flowgrad computes) and numpy's
# cholesky as a guarded task (flowgrad/engine/lazy_errors.py)
OWN = {"max of empty": (_max_empty, ValueError),
       "cholesky": (_not_positive_definite, np.linalg.LinAlgError)}


@pytest.mark.parametrize("case", sorted(OWN))
def test_a_compute_failure_in_processes_or_on_a_cluster_is_the_run_error(processes, cluster,
                                                                         case):
    build, cls = OWN[case]
    with fg.Graph():
        out, feed = build()
        want = _failure("dask", out, feed)             # the threaded scheduler
        with processes():
            in_processes = _failure("dask", out, feed)
        with cluster():
            on_cluster = _failure("dask", out, feed)
    assert isinstance(want, fg.RunError) and isinstance(want, cls)
    for got in (in_processes, on_cluster):
        assert type(got) is type(want) and str(got) == str(want)
        assert got.node is want.node and got.node is not None
        assert type(got.__cause__) is type(want.__cause__)
