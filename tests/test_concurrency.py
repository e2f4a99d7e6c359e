"""Python threads, thread-count changes and fork (docs/api.rst, section Threads;
docs/reliability.rst).

tests/test_build.py already runs softmax and log_softmax from 8 threads and
checks threadpoolctl; this file covers every public function at once, the
GIL release itself, set_num_threads racing with calls, and fork().
"""

import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _backend

from _registry import FUNCTIONS

N_THREADS = 16
HAS_FORK = hasattr(os, "fork")


def openmp():
    return _backend.kernels.openmp_enabled()


@pytest.fixture
def restore_threads():
    yield
    fs.set_num_threads(None)


def in_thread(func):
    """func() run in a new Python thread; its result (or exception)."""
    box = {}

    def target():
        try:
            box["result"] = func()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


# --------------------------------------------------------------------------
# every public function, on data of three sizes
# --------------------------------------------------------------------------

def make_calls(seed):
    """[(label, function, args, kwargs)]: every public function (its
    registry entry's run), and the other paths (another axis, axis=None,
    out=, class indices), on a small input (run on the calling thread), a
    batch large enough for row-parallel threads, and one long row (split
    across threads), float32 and float64."""
    rng = np.random.default_rng(seed)
    calls = []
    for dtype in (np.float32, np.float64):
        for shape in [(3, 33), (64, 517), (1, 70_001)]:
            x = (4 * rng.standard_normal(shape)).astype(dtype)
            x[0, 1] = -np.inf  # a mask
            other = rng.standard_normal(shape).astype(dtype)
            name = f"{np.dtype(dtype).name}{shape}"
            for f in FUNCTIONS.values():
                # the Jacobian has n**2 numbers per row: 8 rows of 40 (12,800
                # numbers, threaded) stand in for the larger shapes
                part = np.s_[:8, :40] if f.name == "softmax_jacobian" and shape != (3, 33) \
                    else np.s_[:, :]
                inputs = f.from_logits(x[part], other[part], -1)
                calls.append((f"{f.name} {name}", f.run, (inputs,), {}))
            index = rng.integers(0, shape[1], shape[0])
            calls += [
                (f"softmax axis=0 {name}", fs.softmax, (x,), {"axis": 0}),
                (f"log_softmax axis=None {name}", fs.log_softmax, (x,), {"axis": None}),
                (f"softmax out= {name}", fs.softmax, (x,), {"out": np.empty_like(x)}),
                (f"cross_entropy index {name}", fs.softmax_cross_entropy, (x, index),
                 {"return_grad": True}),
            ]
    return calls


def run_calls(calls):
    """The results of `calls`; out= arguments get a fresh array each time,
    so that two runs never share an output."""
    results = []
    for _, func, args, kwargs in calls:
        if "out" in kwargs:
            kwargs = dict(kwargs, out=np.empty_like(kwargs["out"]))
        results.append(func(*args, **kwargs))
    return results


def identical(got, want):
    """Bit-identical results: same type, dtype, shape and every bit (NaNs
    in the same places); tuples element by element."""
    if isinstance(want, tuple):
        return (isinstance(got, tuple) and len(got) == len(want)
                and all(identical(g, w) for g, w in zip(got, want)))
    if type(got) is not type(want):
        return False
    got, want = np.asarray(got), np.asarray(want)
    return (got.dtype == want.dtype and got.shape == want.shape
            and got.tobytes() == want.tobytes())


def test_every_public_function_from_16_threads_at_once():
    calls = [make_calls(seed) for seed in range(N_THREADS)]
    # a 17th set of calls that all threads make on the same (shared) inputs
    shared = make_calls(1000)
    # the serial results, one thread at a time, as a worker thread sees the
    # thread count (its OpenMP limit is the default one)
    serial = in_thread(lambda: [run_calls(c) for c in calls] + [run_calls(shared)])
    threads_seen = in_thread(fs.get_num_threads)

    start = threading.Barrier(N_THREADS)
    results = [None] * N_THREADS
    counts = [None] * N_THREADS
    errors = []

    def worker(i):
        counts[i] = fs.get_num_threads()
        try:
            start.wait()  # all threads call at once
            results[i] = [(run_calls(calls[i]), run_calls(shared)) for _ in range(3)]
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)
            start.abort()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(N_THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    assert counts == [threads_seen] * N_THREADS
    for i in range(N_THREADS):
        for own, common in results[i]:
            for (label, *_), got, want in zip(calls[i], own, serial[i]):
                assert identical(got, want), f"thread {i}: {label}"
            for (label, *_), got, want in zip(shared, common, serial[-1]):
                assert identical(got, want), f"thread {i}, shared input: {label}"


# --------------------------------------------------------------------------
# the GIL is released while a kernel runs
# --------------------------------------------------------------------------

def kernel_call(name, dtype=np.float32):
    """A call of one compiled kernel on about 8 million elements (about 5 ms
    on one thread), made directly: between taking the time before and after
    it there is only the kernel's own Python wrapper."""
    kernels = _backend.kernels
    rng = np.random.default_rng(0)
    rows, n = 2048, 4096
    row = rng.standard_normal(n).astype(dtype)
    x = np.broadcast_to(row, (rows, n))  # row stride 0: a cheap big input
    out = np.empty((rows, n), dtype)
    if name == "softmax_rows":
        return lambda: kernels.softmax_rows(x, out, 1, False)
    if name == "softmax_rows-take_log":
        return lambda: kernels.softmax_rows(x, out, 1, True)
    if name == "product_rows":
        return lambda: kernels.product_rows(x, x, out, 1, False)
    if name == "product_rows-log_vjp":
        return lambda: kernels.product_rows(x, x, out, 1, True)
    if name == "softmax_jacobian_rows":
        jac = np.empty((1, 2896, 2896), dtype)
        return lambda: kernels.softmax_jacobian_rows(x[:1, :2896], jac, 1)
    if name == "cross_entropy_rows":
        loss = np.empty(rows)
        return lambda: kernels.cross_entropy_rows(x, x, None, loss, out, 1.0, 1)
    raise ValueError(name)


KERNELS = ["softmax_rows", "softmax_rows-take_log", "product_rows", "product_rows-log_vjp",
           "softmax_jacobian_rows", "cross_entropy_rows"]


def heartbeats_during(call):
    """(duration, timestamps) of `call`: the times at which another Python
    thread ran while it was in progress.

    The other thread takes the GIL for one append and gives it back
    (time.sleep(0)); the switch interval is raised to 1 s, so that a thread
    holding the GIL is never forced to give it up within a call.  If the
    call held the GIL from start to end, no timestamp could fall inside it:
    the result is exactly empty, not merely short, so the test below does
    not depend on timing thresholds (only on the other thread being
    scheduled at all during the call, which it retries).
    """
    beats = []
    stop = threading.Event()

    def heartbeat():
        while not stop.is_set():
            beats.append(time.perf_counter())
            time.sleep(0)  # releases the GIL

    old_interval = sys.getswitchinterval()
    thread = threading.Thread(target=heartbeat)
    thread.start()
    try:
        while not beats:  # the heartbeat is running
            time.sleep(0.001)
        sys.setswitchinterval(1.0)
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
    finally:
        sys.setswitchinterval(old_interval)
        stop.set()
        thread.join()
    return t1 - t0, [b for b in beats if t0 < b < t1]


# docs/api.rst, section Threads:
# "Every kernel releases the GIL: Python threads may call it concurrently."
@pytest.mark.parametrize("name", KERNELS)
def test_kernels_release_the_gil(name):
    call = kernel_call(name)
    call()  # first touch of the output pages, outside the measurement
    for attempt in range(20):  # a busy machine may not schedule the heartbeat at once
        duration, beats = heartbeats_during(call)
        if beats:
            break
    assert beats, (f"no other Python thread ran during {name} ({duration * 1e3:.1f} ms, "
                   f"20 tries): the kernel holds the GIL")


# --------------------------------------------------------------------------
# set_num_threads from another thread, during calls
# --------------------------------------------------------------------------

THREAD_SETTINGS = [1, 2, 3, None, 4]


def test_calls_stay_correct_while_the_thread_count_changes(restore_threads):
    calls = make_calls(7)

    def results_for_every_setting():
        outcomes = []
        for n in THREAD_SETTINGS:
            fs.set_num_threads(n)
            outcomes.append(run_calls(calls))
        fs.set_num_threads(None)
        return outcomes

    # Rows split among threads give the same bits for any count; one long
    # row split across threads may differ by rounding, so a result made
    # while the count changes must equal the result of *some* count.
    possible = in_thread(results_for_every_setting)

    stop = threading.Event()
    errors = []
    changes = [0]

    def churn():
        for n in itertools.cycle(THREAD_SETTINGS):
            if stop.is_set():
                return
            fs.set_num_threads(n)
            changes[0] += 1
            time.sleep(0)

    def caller():
        try:
            for _ in range(5):
                for k, got in enumerate(run_calls(calls)):
                    label = calls[k][0]
                    candidates = [outcome[k] for outcome in possible]
                    if not any(identical(got, want) for want in candidates):
                        errors.append(f"{label}: differs from every thread count's result")
        except BaseException as exc:
            errors.append(exc)

    changer = threading.Thread(target=churn)
    callers = [threading.Thread(target=caller) for _ in range(4)]
    changer.start()
    for c in callers:
        c.start()
    for c in callers:
        c.join()
    stop.set()
    changer.join()
    assert not errors, errors[:5]
    assert changes[0] > len(THREAD_SETTINGS)  # the count did change during the calls
    fs.set_num_threads(None)
    assert fs.get_num_threads() == in_thread(fs.get_num_threads)  # back to the default


# --------------------------------------------------------------------------
# fork
# --------------------------------------------------------------------------
# GNU libgomp keeps its thread pool per calling thread and has no fork
# handler: in a child made by fork() that thread's pool points to workers
# that do not exist, and a parallel region would wait for them forever.  So
# fastsoftmax sets one thread in a forked child (os.register_at_fork).
# Calls that stay on one thread were never affected.  See
# docs/reliability.rst, "fork".

FORK_BUDGET_S = 20  # a child that needs longer is stuck (a normal one takes < 1 s)
fork_only = pytest.mark.skipif(not HAS_FORK, reason="no os.fork on this platform")
# Python 3.12+ warns when a process with threads (here OpenMP's) forks.
fork_warning = pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")


def large_calls():
    """Every public function on inputs that take the threaded paths."""
    return [call for call in make_calls(3) if "(3, 33)" not in call[0]]


def small_calls():
    """Every public function on inputs below the threading threshold."""
    return [call for call in make_calls(3) if "(3, 33)" in call[0]]


def start_thread_pool():
    """Run a parallel region on this thread, as a program would before it forks."""
    x = np.random.default_rng(0).standard_normal((2000, 1000))
    fs.softmax(x)
    if openmp() and fs.get_num_threads() > 1:
        assert _backend.kernels.parallel_team_size(2) == 2


def child_main(calls, expected, budget):
    """Body of a forked child: run `calls`, compare with `expected`.  Exit
    status 0 if all match, 1 if one differs, 2 if the child does not run on
    one thread, SIGALRM if stuck."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the default action ends the process
    signal.alarm(budget)
    if fs.get_num_threads() != 1:
        print(f"child: {fs.get_num_threads()} threads", file=sys.stderr)
        return 2
    for (label, *_), got, want in zip(calls, run_calls(calls), expected):
        if not identical(got, want):
            print(f"child: {label} differs", file=sys.stderr)
            return 1
    return 0


def fork_and_run(how, calls, expected, budget=FORK_BUDGET_S):
    """Exit status of a child forked (os.fork or multiprocessing's 'fork'
    context) to run child_main; negative for a signal, as in multiprocessing."""
    if how == "os.fork":
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            status = 1
            try:
                status = child_main(calls, expected, budget)
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_mp_child, args=(calls, expected, budget))
    child.start()
    child.join(budget + 30)
    if child.exitcode is None:
        child.kill()
        child.join()
        pytest.fail("the forked child did not end")
    return child.exitcode


def _mp_child(calls, expected, budget):
    sys.exit(child_main(calls, expected, budget))


@fork_only
@fork_warning
def test_fork_child_runs_small_inputs(restore_threads):
    calls = small_calls()
    expected = run_calls(calls)
    start_thread_pool()
    assert fork_and_run("os.fork", calls, expected) == 0


@fork_only
@fork_warning
@pytest.mark.parametrize("how", ["os.fork", "multiprocessing"])
def test_forked_child_runs_on_one_thread(how, restore_threads):
    # The parent's pool is running when it forks; the child runs every
    # function on inputs that would take the threaded paths, on one thread,
    # and gets the parent's one-thread results bit for bit.
    start_thread_pool()
    calls = large_calls()
    fs.set_num_threads(1)
    expected = run_calls(calls)
    fs.set_num_threads(None)  # the parent forks with its default count
    status = fork_and_run(how, calls, expected)
    assert status != -signal.SIGALRM, "the child hung in a parallel region"
    assert status == 0
    # the parent's own thread pool still works, with its thread count
    start_thread_pool()
    assert fs.get_num_threads() == in_thread(fs.get_num_threads)
