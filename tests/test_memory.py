"""Memory: no leaks over many calls, what a call allocates, and requests too
big to allocate (docs/reliability.rst, "Memory").

The leak tests watch the process's resident memory (RSS) over 100,000
calls of each function, error paths included; the allocation tests measure
a call's peak with tracemalloc, which sees NumPy's array buffers.
"""

import functools
import itertools
import os
import re

import numpy as np
import pytest
from numpy.exceptions import AxisError

import fastsoftmax as fs
from fastsoftmax import _backend, _build_config

from _helpers import peak_allocation
from _registry import FUNCTIONS

MIB = 1 << 20


def sanitized_build():
    """AddressSanitizer keeps freed memory in quarantine, so RSS grows by
    design under it (.ci/sanitizers)."""
    return any(flag.startswith("-fsanitize")
               for flags in _build_config.VARIANT_FLAGS.values() for flag in flags)


def rss_bytes():
    """Resident memory of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


needs_rss = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm") or sanitized_build(),
    reason="RSS from /proc/self/statm (Linux), not under AddressSanitizer")


# --------------------------------------------------------------------------
# no leaks: resident memory over many calls
# --------------------------------------------------------------------------

def calls(rows, n, dtype):
    """{label: call}: every public function on (rows, n) data through the
    fast paths (C-contiguous, last axis; its registry entry's run), and the
    general ones (another axis, axis=None, out=, class indices)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, n)).astype(dtype)
    other = rng.standard_normal((rows, n)).astype(dtype)
    out = np.empty_like(x)
    index = rng.integers(0, n, rows)
    s, logp = fs.softmax(x), fs.log_softmax(x)
    result = {}
    for f in FUNCTIONS.values():
        # the Jacobian has n**2 numbers per row: at most 4 MiB
        part = np.s_[:64, :128] if f.name == "softmax_jacobian" else np.s_[:, :]
        result[f.name] = functools.partial(f.run, f.from_logits(x[part], other[part], -1))
    result.update({
        "log_softmax axis=None, out=": lambda: fs.log_softmax(x, axis=None, out=out),
        "softmax_vjp axis=0": lambda: fs.softmax_vjp(s, other, axis=0),
        "log_softmax_vjp, out=": lambda: fs.log_softmax_vjp(logp, other, out=out),
        "cross_entropy index": lambda: fs.softmax_cross_entropy(x, index, return_grad=True),
    })
    return result


def raising_calls():
    """{label: (call, exception)}: calls that raise, on small data, from the
    argument checks and from inside a kernel (after its buffers are taken)."""
    x = np.random.default_rng(0).standard_normal((4, 10))
    s = fs.softmax(x)
    bad_index = np.array([0, 1, 2, 10])
    return {
        "complex dtype": (lambda: fs.softmax(x.astype(complex)), TypeError),
        "axis out of range": (lambda: fs.log_softmax(x, axis=5), AxisError),
        "out of the wrong shape": (lambda: fs.softmax(x, out=np.empty((4, 9))), ValueError),
        "shapes differ": (lambda: fs.softmax_vjp(s, s[:, :9]), ValueError),
        "jacobian repeated axis": (lambda: fs.softmax_jacobian(s, axis=(0, -2)), AxisError),
        "class index out of range": (lambda: fs.softmax_cross_entropy(x, bad_index), IndexError),
        "unknown reduction": (lambda: fs.softmax_cross_entropy(x, bad_index, reduction="max"),
                              ValueError),
        "kernel: rows not contiguous": (lambda: _backend.kernels.softmax_rows(
            x[:, ::2], np.empty((4, 5)), 1, False), ValueError),
    }


def rss_growth(call, n_calls, warmup):
    """Growth of RSS over n_calls calls, after `warmup` calls have filled
    the caches (NumPy's, the allocator's, Python's free lists)."""
    for _ in itertools.repeat(None, warmup):
        call()
    before = rss_bytes()
    for _ in itertools.repeat(None, n_calls):
        call()
    return rss_bytes() - before


def swallow(call, exception):
    def run():
        try:
            call()
        except exception:
            return
        raise AssertionError("no exception")
    return run


# Slack: what one-off growth the allocator may show (a new arena, a page
# of the heap); a leak of 11 bytes per call, 1.1 MB over 100,000 calls,
# is beyond it.  The large inputs are 1 MiB per array: leaking one per call
# over 100 calls would be 100 MiB.
SLACK = 1 * MIB


@needs_rss
@pytest.mark.parametrize("label", list(calls(4, 10, np.float64)))
def test_no_leak_small_inputs(label):
    call = calls(4, 10, np.float64)[label]
    growth = rss_growth(call, 100_000, warmup=2_000)
    assert growth <= SLACK, f"{label}: RSS grew by {growth / MIB:.2f} MiB over 100,000 calls"


@needs_rss
@pytest.mark.parametrize("label", list(raising_calls()))
def test_no_leak_when_raising(label):
    call, exception = raising_calls()[label]
    growth = rss_growth(swallow(call, exception), 100_000, warmup=2_000)
    assert growth <= SLACK, f"{label}: RSS grew by {growth / MIB:.2f} MiB over 100,000 calls"


@needs_rss
@pytest.mark.parametrize("label", list(calls(256, 1024, np.float32)))
def test_no_leak_large_inputs(label):
    call = calls(256, 1024, np.float32)[label]
    growth = rss_growth(call, 100, warmup=10)
    assert growth <= 4 * SLACK, f"{label}: RSS grew by {growth / MIB:.2f} MiB over 100 calls"


# --------------------------------------------------------------------------
# what a call allocates (tracemalloc: Python objects and NumPy buffers)
# --------------------------------------------------------------------------

def test_tracemalloc_sees_numpy_buffers():
    # NumPy reports its data buffers to tracemalloc (since 1.13); without
    # that the measurements below would be meaningless.
    peak = peak_allocation(lambda: np.empty(MIB, np.uint8))
    assert MIB <= peak <= MIB + 64 * 1024


ROWS, N = 512, 1024
NBYTES32 = ROWS * N * 4  # one float32 array, 2 MiB
# Python objects of a call (views, tuples, the result object): a few kB.
OVERHEAD = 64 * 1024


def data(dtype=np.float32, shape=(ROWS, N)):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def test_softmax_allocates_one_output():
    x = data()
    assert peak_allocation(lambda: fs.softmax(x)) <= 1.1 * x.nbytes
    assert peak_allocation(lambda: fs.log_softmax(x)) <= 1.1 * x.nbytes
    s, v = fs.softmax(x), data()
    assert peak_allocation(lambda: fs.softmax_vjp(s, v)) <= 1.1 * x.nbytes
    assert peak_allocation(lambda: fs.log_softmax_vjp(s, v)) <= 1.1 * x.nbytes


def test_out_allocates_nothing():
    x, out = data(), np.empty((ROWS, N), np.float32)
    assert peak_allocation(lambda: fs.softmax(x, out=out)) <= OVERHEAD
    assert peak_allocation(lambda: fs.softmax(x, out=x)) <= OVERHEAD  # in place
    s, v = fs.softmax(x), data()
    assert peak_allocation(lambda: fs.softmax_jvp(s, v, out=v)) <= OVERHEAD
    # axis 0 of a transposed array: its rows are contiguous in memory, and
    # so are out's, so nothing is copied
    assert peak_allocation(lambda: fs.softmax(x.T, axis=0, out=out.T)) <= OVERHEAD


def test_jacobian_allocates_one_output():
    s = fs.softmax(data(shape=(64, 128)))
    expected = 64 * 128 * 128 * 4
    assert peak_allocation(lambda: fs.softmax_jacobian(s)) <= 1.1 * expected
    out = np.empty((64, 128, 128), np.float32)
    assert peak_allocation(lambda: fs.softmax_jacobian(s, out=out)) <= OVERHEAD


def test_cross_entropy_allocates_grad_and_row_losses():
    x = data()
    index = np.random.default_rng(1).integers(0, N, ROWS)
    losses = ROWS * 8  # float64, one per row: the kernel's scratch (traced too)
    assert losses <= peak_allocation(lambda: fs.softmax_cross_entropy(x, index)) <= losses + OVERHEAD
    with_grad = peak_allocation(lambda: fs.softmax_cross_entropy(x, index, return_grad=True))
    assert x.nbytes + losses <= with_grad <= x.nbytes + losses + OVERHEAD
    probs = data()
    with_grad = peak_allocation(lambda: fs.softmax_cross_entropy(x, probs, return_grad=True))
    assert x.nbytes + losses <= with_grad <= x.nbytes + losses + OVERHEAD
    per_row = peak_allocation(lambda: fs.softmax_cross_entropy(x, index, reduction="none"))
    assert losses <= per_row <= 2 * losses + OVERHEAD  # float64 losses, cast to float32
    # the options of a probability target are applied as the kernel reads
    # it: no target-sized temporary, only the weights (a float64 copy and
    # one in x's dtype)
    options = {"weight": np.linspace(0.5, 2, N), "label_smoothing": 0.1}
    with_options = peak_allocation(lambda: fs.softmax_cross_entropy(x, probs, return_grad=True,
                                                                    **options))
    assert with_options <= x.nbytes + losses + 2 * 8 * N + OVERHEAD


# The temporaries documented in docs/reliability.rst: an input whose softmax
# axis is not contiguous is copied once (the kernels take contiguous rows);
# float16 is read and written as it is; integers go through float64.
@pytest.mark.parametrize("case, arrays_allowed", [
    ("strided input", 2),       # contiguous copy of the input + output
    ("axis=0", 2),              # at most the same (the column kernel needs no copy)
    ("axis=None", 1),           # a C-contiguous array is one contiguous row
    ("tuple axis, last two", 1),
    ("reversed rows", 1),       # negative row stride: rows still contiguous
    ("broadcast rows", 1),      # row stride 0: no copy
])
def test_layout_temporaries(case, arrays_allowed):
    x = data()
    inputs = {
        "strided input": (data(shape=(ROWS, 2 * N))[:, ::2], -1),
        "axis=0": (x, 0),
        "axis=None": (x, None),
        "tuple axis, last two": (x.reshape(ROWS, 32, 32), (1, 2)),
        "reversed rows": (x[::-1], -1),
        "broadcast rows": (np.broadcast_to(x[0], (ROWS, N)), -1),
    }
    arr, axis = inputs[case]
    peak = peak_allocation(lambda: fs.softmax(arr, axis=axis))
    assert peak <= arrays_allowed * NBYTES32 + OVERHEAD, f"{peak / NBYTES32:.2f} arrays"


@pytest.mark.parametrize("dtype, arrays_allowed", [
    # float16 (1 unit): the float16 result (1), nothing else
    (np.float16, 1),
    # int32 (1 unit): float64 copy (2) + float64 result (2)
    (np.int32, 4),
])
def test_dtype_conversion_temporaries(dtype, arrays_allowed):
    x = data(dtype)
    peak = peak_allocation(lambda: fs.softmax(x))
    assert peak <= arrays_allowed * x.nbytes + OVERHEAD, f"{peak / x.nbytes:.2f} x input"


# --------------------------------------------------------------------------
# requests too big to allocate
# --------------------------------------------------------------------------
# Every array these calls could allocate is far beyond any address space
# (exbibytes, or more than an index can count), so they fail at once, even
# where the system overcommits memory: nothing is ever touched.  The inputs
# are broadcast views and cost nothing.

def huge(shape, dtype=np.float64):
    return np.broadcast_to(np.ones((), dtype), shape)


def huge_rows(rows, n, dtype=np.float32):
    """(rows, n) view of one real row: its rows are contiguous, so the
    kernels could take it without a copy."""
    return np.broadcast_to(np.full(n, 1.0 / n, dtype), (rows, n))


G = 10**9
# {label: (call, the shape of the array it cannot allocate)}
HUGE_CALLS = {
    "softmax": (lambda: fs.softmax(huge((G, G))), (G, G)),
    "log_softmax axis=None": (lambda: fs.log_softmax(huge((G, G)), axis=None), (G, G)),
    "softmax axis=0": (lambda: fs.softmax(huge((G, G)), axis=0), (G, G)),
    "softmax_jvp": (lambda: fs.softmax_jvp(huge((G, G)), huge((G, G))), (G, G)),
    "log_softmax_vjp": (lambda: fs.log_softmax_vjp(huge((G, G)), huge((G, G))), (G, G)),
    "cross_entropy": (lambda: fs.softmax_cross_entropy(huge((G, G)), huge((G, G)),
                                                       return_grad=True), (G, G)),
    # 10**7 Jacobians of 10**5 x 10**5: 355 PiB
    "softmax_jacobian": (lambda: fs.softmax_jacobian(huge_rows(10**7, 10**5)),
                         (10**7, 10**5, 10**5)),
    # an input that needs a contiguous copy (400 TB, itself too big): the
    # result is allocated first, so the error names the result, not the copy
    "softmax_jacobian copied input": (
        lambda: fs.softmax_jacobian(huge((10**10, 10**4), np.float32)),
        (10**10, 10**4, 10**4)),
}


@pytest.mark.parametrize("label", list(HUGE_CALLS))
def test_huge_request_raises_memory_error_naming_the_size(label):
    call, shape = HUGE_CALLS[label]
    with pytest.raises(MemoryError) as info:
        call()
    message = str(info.value)
    # NumPy's wording: "Unable to allocate 6.94 EiB for an array with shape (...)"
    assert re.search(r"\d+(\.\d*)? [KMGTPE]iB", message), message
    assert str(shape) in message, message


# A Jacobian whose size in bytes does not fit in an index (NumPy's own
# "array is too big" names no size), also for an input that would need a
# contiguous copy first: 2**30 rows of 2**20 classes is 2**70 numbers.
@pytest.mark.parametrize("contiguous_rows", [True, False])
def test_jacobian_whose_size_overflows_names_it(contiguous_rows):
    shape = (2**30, 2**20, 2**20)
    s = huge_rows(2**30, 2**20) if contiguous_rows else huge((2**30, 2**20), np.float32)
    with pytest.raises((ValueError, MemoryError)) as info:
        fs.softmax_jacobian(s)
    message = str(info.value)
    assert str(shape) in message or str(np.prod(shape, dtype=object) * 4) in message, message
