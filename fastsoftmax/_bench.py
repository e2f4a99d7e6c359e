"""``fastsoftmax bench``: every op against the alternatives, the call
overhead, thread scaling and the plots; and `speed_table`, which the demo's
speed table uses too.

The tables go to standard output, the progress to standard error.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import DTypeLike

import fastsoftmax as fs
from fastsoftmax import _backend
from fastsoftmax._ops import OPS, Shape, available, implementation, implementations, \
    make_inputs, scipy_version
from fastsoftmax._report import line_plot, number, print_table, ratio
from fastsoftmax._timing import Timed, median_times, with_threads

_T = TypeVar("_T")
Cases = Iterable[tuple[str, dict[str, Timed]]]   # (label, {column: call})

# Column order of every speed table; "fastsoftmax" is "ours" in the ratios.
# The reference is the ground truth of the tests, not a contender: it is left out.
COLUMNS = ("fastsoftmax", "numpy", "scipy", "torch", "floor")
LABELS = {"fastsoftmax": "fastsoftmax", "numpy": "naive NumPy", "scipy": "SciPy",
          "torch": "PyTorch", "floor": "memory floor (np.copyto)"}

# The ops of the threads plot.
SCALING_OPS = ("softmax", "log_softmax", "softmax_vjp", "softmax_cross_entropy")


@dataclass(frozen=True)
class Sizes:
    """What the bench times, and how long it tries."""
    forward: tuple[Shape, ...]        # softmax and log_softmax shapes
    vjp: tuple[Shape, ...]
    jacobian: tuple[Shape, ...]       # (rows, n): the result is rows x n x n
    cross_entropy: tuple[Shape, ...]  # class-index targets, return_grad=True
    threads_min_work: int             # the thread table: shapes with at least this work
    plot_total: int                   # throughput plot: elements per call (rows = total / n)
    plot_ns: tuple[int, ...]          # throughput plot: row lengths
    scaling_shape: Shape              # threads plot
    repeat: int                       # rounds per case (at most)
    target: float                     # seconds per measurement (calls are calibrated)
    tiny_target: float                # the same for the (1, 10) table: many calls each
    budget: float                     # seconds per case after which rounds stop (>= 3 done)
    quick: bool = False
    tiny: Shape = (1, 10)             # every op, whole-call microseconds

    def shapes(self, op: str) -> tuple[Shape, ...]:
        """The shapes `op` is timed on."""
        return {"softmax": self.forward, "log_softmax": self.forward, "logsumexp": self.forward,
                "softmax_where": self.forward, "softmax_vjp": self.vjp, "softmax_jacobian": self.jacobian,
                "softmax_cross_entropy": self.cross_entropy,
                "softmax_cross_entropy_options": self.cross_entropy}[op]


def _sizes(quick: bool) -> Sizes:
    """The full bench, or the smoke test (--quick): each value is given as
    pick(full, quick)."""
    def pick(full: _T, small: _T) -> _T:
        return small if quick else full

    return Sizes(
        forward=pick(((4096, 1024), (256, 32000), (16384, 64), (64, 128), (1, 4_000_000),
                      (16384, 4096)),
                     ((64, 1024), (4, 8000), (512, 64), (64, 128), (1, 65536), (16, 4096))),
        vjp=pick(((4096, 1024), (256, 32000)), ((64, 1024), (4, 8000))),
        jacobian=pick(((256, 256), (64, 1024)), ((16, 64), (2, 256))),
        cross_entropy=pick(((4096, 1024),), ((64, 1024),)),
        threads_min_work=pick(2**20, 2**15),
        plot_total=pick(2**22, 2**16),
        plot_ns=pick(tuple(4**k for k in range(2, 11)), (16, 256, 4096, 65536)),  # 16 .. 2**20
        scaling_shape=pick((4096, 1024), (64, 1024)),
        repeat=pick(25, 3), target=pick(0.01, 0.002), tiny_target=pick(0.02, 0.002),
        budget=pick(10.0, 0.5), quick=quick)


FULL, QUICK = _sizes(quick=False), _sizes(quick=True)


# --------------------------------------------------------------------------
# Speed tables
# --------------------------------------------------------------------------

def speed_table(cases: Cases, columns: Sequence[str], ratios: Sequence[tuple[str, str, str]],
                repeat: int, *, key: str = "shape", unit: str = "ms", target: float = 0.01,
                budget: float | None = None) -> tuple[list[str], list[list[str]]]:
    """Time each case's implementations side by side.

    Parameters
    ----------
    cases : iterable
        ``(label, {column: zero-argument call})`` pairs; a column a case
        lacks shows "-".
    columns : sequence of str
    ratios : sequence of (header, a, b)
        Each a column "time of a / time of b".
    repeat, target, budget
        As for `median_times`.
    key : str
        The header of the label column.
    unit : {"ms", "us"}
        Per call.

    Returns
    -------
    headers, rows : lists of str
    """
    scale = {"ms": 1e3, "us": 1e6}[unit]
    headers = [key] + [f"{column} {unit}" for column in columns] + [r[0] for r in ratios]
    rows = []
    for label, funcs in cases:
        names = [column for column in columns if column in funcs]
        times = dict(zip(names, median_times([funcs[n] for n in names], repeat,
                                             target, budget)))
        rows.append([label]
                    + [number(times[c] * scale) if c in times else "-" for c in columns]
                    + [ratio(times.get(a), times.get(b)) for _, a, b in ratios])
    return headers, rows


def ours_over(columns: Iterable[str]) -> list[tuple[str, str, str]]:
    """Ratio columns "ours/X" (our time / X's time) for every other column."""
    return [(f"ours/{c}", "fastsoftmax", c) for c in columns if c != "fastsoftmax"]


def op_cases(op: str, shapes: Iterable[Shape], dtype: DTypeLike, names: Sequence[str],
             torch: Any = None) -> Iterator[tuple[str, dict[str, Timed]]]:
    """(shape label, implementations) per shape, made one at a time so that
    only one shape's arrays are alive while it is timed."""
    for shape in shapes:
        yield str(shape), implementations(op, make_inputs(op, shape, dtype), names, torch)


def _ours(op: str, shape: Shape) -> Timed:
    """fastsoftmax's call of `op`, float32."""
    call = implementation(op, "fastsoftmax", make_inputs(op, shape))
    assert call is not None  # fastsoftmax runs every op
    return call


def _work(op: str, shape: Shape) -> int:
    """Elements an op reads or writes: rows * n * n for the Jacobian."""
    return math.prod(shape) * (shape[-1] if op == "softmax_jacobian" else 1)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def import_torch(threads: int) -> Any:
    """PyTorch on `threads` threads, or None when it is not installed."""
    try:
        import torch  # type: ignore[import, unused-ignore]
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_header(sizes: Sizes, repeat: int, threads: int, torch: Any) -> None:
    """The build, the machine, the peers' versions and how to read the tables."""
    if sizes.quick:
        print("QUICK RUN (--quick): small shapes, few repeats. A smoke test, not a measurement.\n")
    fs.show_config()
    scipy = scipy_version()
    versions = [f"numpy {np.__version__}"]
    versions.append(f"scipy {scipy}" if scipy else "scipy: not installed")
    versions.append(f"torch {torch.__version__} ({torch.get_num_threads()} thread(s))"
                    if torch else "torch: not installed")
    print(f"\n{_cpu_name()}; Python {platform.python_version()}; {', '.join(versions)}")
    print(f"""
Median time per call of up to {repeat} measurements per implementation, the
implementations measured in turns in one run (a case stops after {sizes.budget:g} s
once 3 rounds are done).  fastsoftmax and torch run on {threads} thread(s).
  numpy  the NumPy expression a user would write (several passes, temporaries)
  scipy  scipy.special (forward ops only)
  torch  PyTorch on the same memory (torch.from_numpy)
  floor  NumPy moving the same bytes (read the inputs, write the output) into
         a preallocated array, on one thread: a threaded kernel can beat it
ours/X = fastsoftmax time / X time: below 1x fastsoftmax is faster.""")


def op_tables(sizes: Sizes, repeat: int, torch: Any) -> None:
    """One table per (dtype, op): every implementation side by side."""
    for dtype in (np.float32, np.float64):
        dtype_name = np.dtype(dtype).name
        for op, spec in OPS.items():
            _progress(f"timing {op} {dtype_name} ...")
            columns = available(op, COLUMNS, torch)
            headers, rows = speed_table(
                op_cases(op, sizes.shapes(op), dtype, columns, torch), columns,
                ours_over(columns), repeat, target=sizes.target, budget=sizes.budget)
            note = f" ({spec.note})" if spec.note else ""
            print_table(headers, rows, title=f"{op} {dtype_name}{note}")


def tiny_tables(sizes: Sizes, repeat: int, torch: Any) -> None:
    """Every op on one tiny row: the whole call, Python overhead included."""
    for dtype in (np.float32, np.float64):
        dtype_name = np.dtype(dtype).name
        _progress(f"timing every op at {sizes.tiny} {dtype_name} ...")
        columns = available("softmax", COLUMNS, torch)  # softmax has them all; "-" where absent
        cases = ((op, implementations(op, make_inputs(op, sizes.tiny, dtype), columns, torch))
                 for op in OPS)
        headers, rows = speed_table(cases, columns, ours_over(columns), repeat, key="op",
                                    unit="us", target=sizes.tiny_target)
        print_table(headers, rows, title=f"every op at {sizes.tiny}, {dtype_name}: "
                                         f"microseconds per whole call")


def thread_table(sizes: Sizes, repeat: int, threads: int) -> None:
    """fastsoftmax on 1 thread against all threads, float32, large shapes."""
    if threads < 2:
        print(f"\nThread scaling: skipped, {threads} thread available "
              "(a serial build, or OMP_NUM_THREADS=1).")
        return
    _progress(f"timing 1 vs {threads} threads ...")
    one, many = "1 thread", f"{threads} threads"

    def cases() -> Iterator[tuple[str, dict[str, Timed]]]:
        for op in OPS:
            for shape in sizes.shapes(op):
                if _work(op, shape) >= sizes.threads_min_work:
                    func = _ours(op, shape)
                    yield (f"{op} {shape}",
                           {one: with_threads(1, func), many: with_threads(threads, func)})

    try:
        headers, rows = speed_table(cases(), [one, many], [("speed-up", one, many)], repeat,
                                    key="op, shape", target=sizes.target,
                                    budget=sizes.budget)
    finally:
        fs.set_num_threads(None)
    print_table(headers, rows, title=f"Thread scaling, float32: fastsoftmax on 1 vs "
                                     f"{threads} threads (fs.set_num_threads)")


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------

def throughput_series(sizes: Sizes, repeat: int, torch: Any) -> dict[str, list[float]]:
    """softmax float32 effective GB/s ((bytes read + written) / time) per
    implementation, for rows of n elements, sizes.plot_total elements a call."""
    _progress("timing softmax throughput against the row length ...")
    columns = available("softmax", COLUMNS, torch)
    series: dict[str, list[float]] = {name: [] for name in columns}
    for n in sizes.plot_ns:
        a = make_inputs("softmax", (sizes.plot_total // n, n))
        funcs = implementations("softmax", a, columns, torch)
        times = median_times([funcs[c] for c in columns], repeat, sizes.target, sizes.budget)
        for name, seconds in zip(columns, times):
            series[name].append(2 * a["x"].nbytes / seconds / 1e9)
    rows = [[str(n), str(sizes.plot_total // n)] + [f"{series[c][i]:.2f}" for c in columns]
            for i, n in enumerate(sizes.plot_ns)]
    print_table(["n", "rows"] + [f"{c} GB/s" for c in columns], rows,
                title=f"softmax float32, effective GB/s = (bytes read + written) / time, "
                      f"{sizes.plot_total} elements per call (throughput.png)")
    return series


def scaling_series(sizes: Sizes, repeat: int, threads: int) -> dict[str, list[float]]:
    """fastsoftmax speed-up on 1..threads threads over 1 thread, per op."""
    _progress("timing thread scaling ...")
    counts = list(range(1, threads + 1))
    series: dict[str, list[float]] = {}
    try:
        for op in SCALING_OPS:
            func = _ours(op, sizes.scaling_shape)
            times = median_times([with_threads(t, func) for t in counts], repeat,
                                 sizes.target, sizes.budget)
            series[op] = [times[0] / t for t in times]
    finally:
        fs.set_num_threads(None)
    rows = [[op] + [f"{s:.2f}x" for s in speedups] for op, speedups in series.items()]
    print_table(["op"] + [f"{t} thread{'s' * (t > 1)}" for t in counts], rows,
                title=f"Speed-up over 1 thread, float32 {sizes.scaling_shape} (threads.png)")
    return series


def write_plots(plot_dir: str, sizes: Sizes, repeat: int, threads: int, torch: Any) -> None:
    """DIR/throughput.png and DIR/threads.png, with their tables."""
    os.makedirs(plot_dir, exist_ok=True)
    where = f"{_backend.SIMD_PATH}, {threads} thread(s)"
    where += ", --quick" if sizes.quick else ""
    path = os.path.join(plot_dir, "throughput.png")
    line_plot(path, list(sizes.plot_ns), throughput_series(sizes, repeat, torch),
              title=f"softmax float32, {sizes.plot_total:,} elements per call ({where})",
              xlabel="row length n (rows = elements / n)",
              ylabel="effective GB/s (read + written)", labels=LABELS, logx=True)
    _progress(f"wrote {path}")
    path = os.path.join(plot_dir, "threads.png")
    line_plot(path, list(range(1, threads + 1)), scaling_series(sizes, repeat, threads),
              title=f"fastsoftmax thread scaling, float32 {sizes.scaling_shape} ({where})",
              xlabel="threads (fs.set_num_threads)", ylabel="speed-up over 1 thread",
              labels=LABELS, ideal=True)
    _progress(f"wrote {path}")


def bench(sizes: Sizes = FULL, repeat: int | None = None, plot_dir: str | None = None) -> int:
    """The whole bench: header, op tables, (1, 10) tables, thread table,
    and with `plot_dir` the plots; returns the exit status, 0."""
    repeat = repeat or sizes.repeat
    threads = fs.get_num_threads()
    torch = import_torch(threads)
    print_header(sizes, repeat, threads, torch)
    op_tables(sizes, repeat, torch)
    tiny_tables(sizes, repeat, torch)
    thread_table(sizes, repeat, threads)
    if plot_dir is not None:
        write_plots(plot_dir, sizes, repeat, threads, torch)
    return 0
