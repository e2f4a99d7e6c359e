"""A fast speed check for CI: fastsoftmax must beat naive NumPy by 2x.

Runs in a few seconds without pytest-benchmark flags:

    pytest benchmarks/test_ratio_check.py

Why a ratio: absolute times depend on the machine, but naive NumPy on the
same machine, measured in the same moments, is a yardstick that moves with
it.  Medians of interleaved calls (ours, naive, ours, naive, ...;
fastsoftmax._timing.median_times) make a busy moment slow both sides alike,
and a failing case is measured again (up to ATTEMPTS times) before it
fails, so that a burst of activity from another process does not fail the
build.

Why 2x: the naive expression makes five passes over memory (max, subtract,
exp, sum, divide) and allocates three temporaries; the kernels make one or
two passes with a vectorised exp, on every core.  Measured on an idle 2-core
AVX-512 machine (interleaved medians, as here):

    build, threads            softmax    softmax    log_softmax  softmax_vjp
                              4096x1024  256x4096   4096x1024    4096x1024
    avx512, 2                 3.5x       3.3x       3.6x         3.8x
    avx2, 2                   2.6x       2.3x       2.8x         3.6x
    avx512, 1                 1.9x       1.7x       1.9x         2.7x
    baseline (SSE2), 2        1.7x       1.2x       1.7x         3.0x
    baseline (SSE2), 1        0.9x       0.5x       0.9x         1.7x

2x leaves room (1.6x) for noisy runners, passes on an AVX2-only CPU, and fails
when the exp is no longer vectorised well (the SSE2 build already fails, a
scalar exp is slower still) and, on 2 or more cores, when the kernels stop
using the threads (only just: 1.7-1.9x).  The vjp has no exp: its case
guards against extra passes and temporaries.  With a single thread (a
1-core runner, or OMP_NUM_THREADS=1) the bound is 1.3x: serial code is
expected there, but the SSE2 build still fails.

Threaded kernels suffer far more than single-threaded NumPy when another
process keeps a core busy for seconds (an OpenMP thread that is not
scheduled holds up the rest), so run this on a runner of its own.
"""

import pytest

import fastsoftmax as fs
from fastsoftmax import _backend
from fastsoftmax._ops import implementation, make_inputs
from fastsoftmax._timing import median_times

MIN_SPEEDUP = 2.0  # with 2 or more threads
MIN_SPEEDUP_ONE_THREAD = 1.3
ROUNDS = 15  # interleaved pairs per measurement; the median discards outliers
BUDGET_S = 1.0  # stop a measurement early after this long
MIN_ROUNDS = 5  # ... once this many pairs are done
ATTEMPTS = 3  # measurements before a case fails

# Collected by a plain `pytest benchmarks/test_ratio_check.py` (it uses no
# benchmark fixture); the marker lets `pytest benchmarks/ -m ratio_check`
# pick it alone.  `--benchmark-only` skips it.
pytestmark = pytest.mark.ratio_check


def _case(op, shape):
    """fastsoftmax's and naive NumPy's calls of `op` on float32 data."""
    a = make_inputs(op, shape)
    return implementation(op, "fastsoftmax", a), implementation(op, "numpy", a)


@pytest.mark.parametrize("op,shape", [
    ("softmax", (4096, 1024)),
    ("softmax", (256, 4096)),
    ("log_softmax", (4096, 1024)),
    ("softmax_vjp", (4096, 1024)),
])
def test_faster_than_naive_numpy(op, shape):
    threads = fs.get_num_threads()
    bound = MIN_SPEEDUP if threads > 1 else MIN_SPEEDUP_ONE_THREAD
    ours, naive = _case(op, shape)
    for _ in range(ATTEMPTS):
        t_ours, t_naive = median_times([ours, naive], ROUNDS, target=None, budget=BUDGET_S,
                                       min_rounds=MIN_ROUNDS)
        speedup = t_naive / t_ours
        print(f"{op} float32 {shape}: fastsoftmax {t_ours * 1e3:.3f} ms, "
              f"naive NumPy {t_naive * 1e3:.3f} ms, {speedup:.1f}x")
        if speedup >= bound:
            return
    pytest.fail(
        f"{op} float32 {shape}: fastsoftmax is only {speedup:.2f}x faster than naive "
        f"NumPy ({t_ours * 1e3:.3f} ms vs {t_naive * 1e3:.3f} ms, median of interleaved "
        f"runs, {ATTEMPTS} attempts); expected >= {bound}x on {threads} thread(s), "
        f"SIMD path {_backend.SIMD_PATH}")
