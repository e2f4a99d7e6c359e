"""Timing for the benchmarks: medians of calls measured in turns."""

from __future__ import annotations

import statistics
import time
import timeit
from collections.abc import Callable, Sequence

import fastsoftmax as fs

Timed = Callable[[], object]  # one call, as timed

# The time Timer.autorange fills (fixed in the standard library).
_AUTORANGE_S = 0.2


def calls_per_measurement(func: Timed, target: float | None) -> int:
    """Calls of `func` that take about `target` seconds together (one
    where `target` is None).

    A warm-up call first (first-touch page faults, thread pool start, lazy
    imports), then ``timeit.Timer.autorange`` (1, 2, 5, 10, 20, ... calls
    until 0.2 s) on a clock running ``0.2 / target`` times fast, so that
    its fixed 0.2 s stands for `target`.
    """
    func()
    if target is None:
        return 1
    speed = _AUTORANGE_S / target
    number, _ = timeit.Timer(func, timer=lambda: time.perf_counter() * speed).autorange()
    return number


def median_times(funcs: Sequence[Timed], repeat: int, target: float | None = 0.01,
                 budget: float | None = None, min_rounds: int = 3) -> list[float]:
    """Median seconds per call of each function, measured in turns.

    Parameters
    ----------
    funcs : sequence of callables
        Zero-argument calls.
    repeat : int
        Rounds, at most; each round measures every function once, so that
        a noisy moment on the machine hits every one alike.
    target : float or None
        Seconds per measurement: each runs a function as many times as fill
        about that long (see `calls_per_measurement`).  None: one call per
        measurement, for calls long enough to time alone; under load their
        median keeps the calls no other process held up.
    budget : float, optional
        Seconds after which the rounds stop, once `min_rounds` are done, so
        that huge cases do not take minutes.
    min_rounds : int

    Returns
    -------
    list of float
        Per function, the median over the rounds of seconds per call.
    """
    timers = [timeit.Timer(func) for func in funcs]
    numbers = [calls_per_measurement(func, target) for func in funcs]
    samples: list[list[float]] = [[] for _ in funcs]
    start = time.perf_counter()
    for done in range(1, repeat + 1):
        for timer, number, times in zip(timers, numbers, samples):
            times.append(timer.timeit(number) / number)
        if budget is not None and done >= min_rounds and time.perf_counter() - start > budget:
            break
    return [statistics.median(times) for times in samples]


def with_threads(n: int, func: Timed) -> Timed:
    """`func`, run on `n` threads.

    The count is set before every call: about a microsecond, nothing next
    to the large inputs timed this way.  Call ``fs.set_num_threads(None)``
    after the timing.
    """
    def call() -> object:
        fs.set_num_threads(n)
        return func()
    return call
