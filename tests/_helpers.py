"""Test machinery shared by the test modules (conftest puts this folder on
sys.path): the one memory-layout generator, and the registry's names that
test modules import from here.

The public functions, their references, inputs and error budgets are in
_registry.py.
"""

import tracemalloc

import numpy as np

# re-exported: test modules import these from here
from _registry import (BOUNDS, DTYPE_IDS, FLOAT_DTYPES, FORWARD, FORWARD_IDS,  # noqa: F401
                       assert_ulp_close, check, oracle, oracle_dtype, representable)

# --------------------------------------------------------------------------
# Memory layouts: the same values in differently strided arrays
# --------------------------------------------------------------------------

LAYOUTS = {
    "C": "C-contiguous",
    "F": "Fortran-contiguous",
    "transposed": "the axes' order reversed in memory (the transpose of a C array)",
    "last-axis-outer": "the last axis outermost in memory (np.moveaxis of a C array)",
    "strided": "a view of a larger array with steps 2 and 3 (big[1::2, 1::3, ...])",
    "strided-reversed": "every other element, the last axis reversed (negative stride)",
    "row-strided": "a step on the first axis only (big[::2])",
    "padded": "contiguous rows spaced apart (big[..., :n])",
    "reversed": "negative strides on every axis",
    "rows-reversed": "a negative stride on the first axis (x[::-1])",
    "readonly": "not writeable",
    "broadcast": "a zero stride along the first axis: its first index repeated",
    "byteswapped": "non-native byte order",
}


def _into(big, index, a):
    """big[index], filled with a's values: a view with big's strides."""
    view = big[index]
    view[...] = a
    return view


def laid_out(a, layout):
    """An array with the values of `a` in the memory layout `layout` (see
    LAYOUTS); "broadcast" repeats a's first index along the first axis.  A
    0-d array has one layout: a copy (read-only or byte-swapped as asked)."""
    a = np.asarray(a)
    ndim, shape = a.ndim, a.shape
    if layout == "readonly":
        x = a.copy()
        x.flags.writeable = False
    elif layout == "byteswapped":
        x = a.astype(a.dtype.newbyteorder())
        assert not x.dtype.isnative or a.dtype.itemsize == 1
    elif layout == "broadcast":
        x = np.broadcast_to(a[:1] if ndim else a, shape)
        if ndim and shape[0] > 1:
            assert x.strides[0] == 0
    elif ndim == 0 or layout == "C":
        x = np.array(a, order="C")  # (np.ascontiguousarray makes 0-d 1-d)
    elif layout == "F":
        x = np.asfortranarray(a)
    elif layout == "transposed":
        x = np.ascontiguousarray(a.T).T
    elif layout == "last-axis-outer":
        x = np.moveaxis(np.ascontiguousarray(np.moveaxis(a, -1, 0)), 0, -1)
    elif layout == "strided":
        steps = [(2, 3)[i % 2] for i in range(ndim)]
        big = np.zeros(tuple(s * st + 1 for s, st in zip(shape, steps)), a.dtype)
        x = _into(big, tuple(slice(1, 1 + s * st, st) for s, st in zip(shape, steps)), a)
    elif layout == "strided-reversed":
        big = np.zeros([2 * d + 1 for d in shape], a.dtype)
        x = _into(big, (slice(1, None, 2),) * (ndim - 1) + (slice(-2, None, -2),), a)
    elif layout == "row-strided":
        x = _into(np.zeros((2 * shape[0],) + shape[1:], a.dtype), np.s_[::2], a)
    elif layout == "padded":
        x = _into(np.zeros(shape[:-1] + (shape[-1] + 3,), a.dtype), np.s_[..., :shape[-1]], a)
    elif layout == "reversed":
        flip = (slice(None, None, -1),) * ndim
        x = np.ascontiguousarray(a[flip])[flip]
        assert all(s < 0 for s, n in zip(x.strides, shape) if n > 1) or x.size <= 1
    elif layout == "rows-reversed":
        x = np.ascontiguousarray(a[::-1])[::-1]
    else:
        raise ValueError(layout)
    if layout != "broadcast":
        assert np.array_equal(x, a, equal_nan=a.dtype.kind in "fc")
    return x


def peak_allocation(call):
    """Peak traced memory (tracemalloc: Python objects and NumPy buffers)
    during call(), above what was allocated before."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak - before
