"""``fastsoftmax bench --placement``: does a kernel's speed depend on where
its arrays lie in memory?

NumPy's allocator decides where a result (or a second input) lands
relative to the first input, and users do not control it.  A load/store
unit may treat a load as depending on an earlier store when their
addresses agree in the low 12 bits (4K aliasing), and arrays whose rows
map to the same cache sets evict each other; either makes a kernel's
speed depend on the placement alone.  This module times every kernel with
its output -- and, for the products, its second input -- placed at several
byte offsets modulo 4096 from the first input, all in turns in one
process, and reports the spread (slowest / fastest offset).  It also times
the default call, which allocates its output, against the best placed one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

import fastsoftmax as fs
from fastsoftmax import _backend
from fastsoftmax._ops import Shape, make_inputs
from fastsoftmax._report import number, print_table
from fastsoftmax._timing import Timed, median_times, with_threads

PAGE = 4096
# Offsets of the output (and second input) from the first input, modulo a
# page, in bytes: same page offset, one cache line, and points across the page.
OFFSETS = (0, 64, 256, 1024, 2048, 3072)
# Row lengths of the placement table (the rows count fills about 1 Mi elements).
ROW_LENGTHS = (10, 37, 64, 128, 1024, 32000)
ELEMENTS = 1 << 20
OPS = ("softmax", "log_softmax", "softmax_vjp", "log_softmax_vjp",
       "softmax_jacobian", "softmax_cross_entropy")
# The Jacobian's result is n times its input: its shapes stay small.
JACOBIAN_SHAPES = ((256, 10), (64, 37), (32, 64), (16, 128))


def placed(shape: Shape, dtype: DTypeLike, anchor: NDArray[Any], offset: int) -> NDArray[Any]:
    """An uninitialised C-contiguous array whose data start `offset` bytes
    after `anchor`'s, modulo a page (a view into a slightly larger buffer)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(nbytes + 2 * PAGE, np.uint8)
    start = (anchor.ctypes.data + offset - buffer.ctypes.data) % PAGE
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


def shapes(op: str, quick: bool = False) -> tuple[Shape, ...]:
    """The shapes `op` is timed on."""
    if op == "softmax_jacobian":
        return JACOBIAN_SHAPES[:2] if quick else JACOBIAN_SHAPES
    lengths = ROW_LENGTHS[:3] if quick else ROW_LENGTHS
    total = ELEMENTS // 16 if quick else ELEMENTS
    return tuple((max(1, total // n), n) for n in lengths)


def placed_call(op: str, a: dict[str, NDArray[Any]], offset: int) -> Timed:
    """The call of `op` on inputs `a` writing into an output placed at
    `offset` from the first input (the products' second input too)."""
    first = a["s"] if "s" in a else a["x"]
    if op in ("softmax", "log_softmax"):
        func = getattr(fs, op)
        out = placed(first.shape, first.dtype, first, offset)
        return lambda: func(first, out=out)
    if op in ("softmax_vjp", "log_softmax_vjp"):
        func = getattr(fs, op)
        g = placed(first.shape, first.dtype, first, offset)
        g[...] = a["g"]
        out = placed(first.shape, first.dtype, first, offset)
        return lambda: func(first, g, out=out)
    if op == "softmax_jacobian":
        out = placed(first.shape + first.shape[-1:], first.dtype, first, offset)
        return lambda: fs.softmax_jacobian(first, out=out)
    # The loss has no out=: its kernel is called with a placed gradient.
    grad = placed(first.shape, first.dtype, first, offset)
    labels = a["labels"].astype(np.int64)
    scale = 1.0 / len(first)
    return lambda: _backend.kernels.cross_entropy_rows(
        first, None, labels, None, grad, scale, fs.get_num_threads())


def default_call(op: str, a: dict[str, NDArray[Any]]) -> Timed:
    """The call as a user writes it: the output freshly allocated."""
    func = getattr(fs, op)
    if op in ("softmax_vjp", "log_softmax_vjp"):
        return lambda: func(a["s"], a["g"])
    if op == "softmax_cross_entropy":
        return lambda: func(a["x"], a["labels"], return_grad=True)
    first = a["s"] if "s" in a else a["x"]
    return lambda: func(first)


def inputs_for(op: str, shape: Shape, dtype: DTypeLike) -> dict[str, NDArray[Any]]:
    # the op table's inputs; log_softmax_vjp takes what softmax_vjp takes
    return make_inputs("softmax_vjp" if op == "log_softmax_vjp" else op, shape, dtype)


def _churn() -> None:
    """Allocate and free arrays of assorted sizes first, as a program does,
    so that the default call's output does not land where a fresh process
    would put it."""
    kept = [np.empty(size, np.uint8) for size in (100, 5000, 70000, 1 << 20, 3 << 20, 777)]
    del kept[::2]


def rows(threads: int, repeat: int, quick: bool = False) -> Iterator[list[str]]:
    """One table row per op, dtype and shape on `threads` threads: the
    fastest and slowest placement, their ratio, and the default call."""
    _churn()
    for op in OPS:
        for dtype in (np.float32, np.float64):
            for shape in shapes(op, quick):
                a = inputs_for(op, shape, dtype)
                calls = [with_threads(threads, placed_call(op, a, off)) for off in OFFSETS]
                calls.append(with_threads(threads, default_call(op, a)))
                *times, default = median_times(calls, repeat, target=0.005)
                fs.set_num_threads(None)
                fast, slow = int(np.argmin(times)), int(np.argmax(times))
                yield [op, np.dtype(dtype).name, str(shape), str(threads),
                       f"{number(times[fast] * 1e3)} at {OFFSETS[fast]}",
                       f"{number(times[slow] * 1e3)} at {OFFSETS[slow]}",
                       f"{times[slow] / times[fast]:.2f}",
                       f"{default / times[fast]:.2f}"]


def placement_table(threads: tuple[int, ...], repeat: int, quick: bool = False) -> None:
    """Print the placement table for each thread count."""
    headers = ["op", "dtype", "shape", "threads", "fastest ms at offset",
               "slowest ms at offset", "slowest/fastest", "default/fastest"]
    for n in threads:
        print_table(headers, list(rows(n, repeat, quick)),
                    title=f"Placement: output (and the products' second input) at "
                          f"{', '.join(map(str, OFFSETS))} bytes from the input, modulo "
                          f"{PAGE}; median ms per call; default = fresh output")
