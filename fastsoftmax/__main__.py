"""``fastsoftmax`` (or ``python -m fastsoftmax`` outside the source folder):
what this build is, whether it is right, how fast it is.

    python -m fastsoftmax                 # the demo (default): config, correctness,
                                          # gradient checks, a float32 speed table
    python -m fastsoftmax bench           # every op, float32 and float64, against
                                          # NumPy, SciPy, PyTorch (if installed) and
                                          # the memory floor; (1, 10) call overhead;
                                          # 1 thread vs all threads
    python -m fastsoftmax bench --plot DIR    # also DIR/throughput.png and
                                              # DIR/threads.png (needs matplotlib)
    python -m fastsoftmax bench --quick   # small shapes, few repeats: a smoke test

The demo exits with status 1 if any correctness or gradient check fails.
The bench prints its tables on stdout and its progress on stderr, so that
``python -m fastsoftmax bench > bench.txt`` keeps the tables only.
For careful, saved benchmarks use ``pytest benchmarks/ --benchmark-only``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

import fastsoftmax as fs
from fastsoftmax import _backend
from fastsoftmax import reference as ref
from fastsoftmax.testing import DEFAULT_RTOL, check_grad, check_vjp

# scipy, torch and matplotlib are optional: they may be missing, or come
# without type stubs (scipy); the ignores on their imports allow for both.
try:
    import scipy  # type: ignore[import, unused-ignore]
    import scipy.special as sps  # type: ignore[import, unused-ignore]
except ImportError:  # scipy is optional: its column is left out
    scipy = sps = None  # type: ignore[assignment, unused-ignore]

Shape = tuple[int, ...]
FloatType = Union[type[np.float32], type[np.float64]]   # the dtypes timed
Inputs = dict[str, NDArray[Any]]   # an op's arguments by name (see make_inputs)
Timed = Callable[[], object]       # one call of one implementation, as timed
Cases = Iterable[tuple[str, dict[str, Timed]]]   # (label, {column: call})


# --------------------------------------------------------------------------
# Correctness: fastsoftmax against fastsoftmax.reference
# --------------------------------------------------------------------------

# (shape, axis) pairs every function is checked on: the last axis, and a
# middle axis (the data is not contiguous along it).
CASES = [((32, 300), -1), ((6, 33, 5), 1)]

MATH_FUNCTIONS = ("softmax", "log_softmax", "softmax_jacobian", "softmax_jvp",
                  "softmax_vjp", "log_softmax_vjp", "softmax_cross_entropy")

# Largest accepted error, in units of the dtype's machine epsilon (see
# _ulp_error).  API.md promises "a few ulp" for the forward functions.
ULP_LIMIT = 8


def _exact_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype the reference computes the 'exact' value in: float64 for
    float32 data, long double for float64 data (where the platform has one)."""
    return np.dtype(np.float64) if dtype == np.float32 else np.dtype(np.longdouble)


def _ulp_error(got: ArrayLike, exact: ArrayLike, dtype: np.dtype[Any],
               scale: ArrayLike | None = None) -> float:
    """max |got - exact| / (eps(dtype) * scale), elementwise.

    The scale is |exact| by default: the relative error API.md bounds for
    the forward functions.  The derivatives are differences of terms (e.g.
    ``g_i - <s, g>``), and a difference of nearly equal terms can only be
    as accurate as the terms are large, so for them the caller passes the
    size of the terms.
    """
    exact = np.asarray(exact, dtype=np.longdouble)
    scale = np.abs(exact) if scale is None else np.asarray(scale, dtype=np.longdouble)
    scale = np.maximum(scale, np.finfo(dtype).tiny)
    diff = np.abs(np.asarray(got, dtype=np.longdouble) - exact)
    return float(np.max(diff / (np.finfo(dtype).eps * scale)))


def _check_one(name: str, shape: Shape, axis: int, dtype: np.dtype[Any],
               rng: np.random.Generator) -> float:
    """Error in ulp of fs.<name> against reference.<name> on random data."""
    hi = _exact_dtype(dtype)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    ours, exact = getattr(fs, name), getattr(ref, name)

    def total(a: NDArray[Any]) -> Any:
        return np.sum(a, axis=axis, keepdims=True)

    if name in ("softmax", "log_softmax"):
        return _ulp_error(ours(x, axis), exact(x.astype(hi), axis), dtype)
    if name == "softmax_jacobian":  # s_i (δ_ij - s_j): no cancellation to speak of
        s = fs.softmax(x, axis)
        return _ulp_error(ours(s, axis), exact(s.astype(hi), axis), dtype)
    if name in ("softmax_jvp", "softmax_vjp"):  # s_i (g_i - <s, g>)
        s = fs.softmax(x, axis)
        s_hi, g_hi = s.astype(hi), g.astype(hi)
        terms = s_hi * (np.abs(g_hi) + total(np.abs(s_hi * g_hi)))
        return _ulp_error(ours(s, g, axis), exact(s_hi, g_hi, axis), dtype, terms)
    if name == "log_softmax_vjp":  # g_i - exp(logp_i) sum(g)
        logp = fs.log_softmax(x, axis)
        logp_hi, g_hi = logp.astype(hi), g.astype(hi)
        terms = np.abs(g_hi) + np.exp(logp_hi) * total(np.abs(g_hi))
        return _ulp_error(ours(logp, g, axis), exact(logp_hi, g_hi, axis), dtype, terms)
    # softmax_cross_entropy: class indices on the last axis, probabilities
    # elsewhere.  The error is the worse of the per-row losses (relative) and
    # the gradient s_i sum(t) - t_i (relative to its terms).
    if axis == -1:
        target = rng.integers(0, shape[axis], shape[:-1])
        target_hi = target
        onehot = np.zeros(shape, hi)
        np.put_along_axis(onehot, target[..., None], 1, axis=-1)
    else:
        target = fs.softmax(g, axis)
        target_hi = onehot = target.astype(hi)
    loss, grad = ours(x, target, axis, reduction="none", return_grad=True)
    loss_x, grad_x = exact(x.astype(hi), target_hi, axis, reduction="none", return_grad=True)
    terms = ref.softmax(x.astype(hi), axis) * total(onehot) + onehot
    return max(_ulp_error(loss, loss_x, dtype), _ulp_error(grad, grad_x, dtype, terms))


def correctness_rows(seed: int = 0) -> list[list[str]]:
    """One row per (function, dtype, shape, axis): error in ulp, PASS/FAIL."""
    rng = np.random.default_rng(seed)
    rows = []
    for name in MATH_FUNCTIONS:
        for dtype in (np.float32, np.float64):
            for shape, axis in CASES:
                err = _check_one(name, shape, axis, np.dtype(dtype), rng)
                ok = err <= ULP_LIMIT
                rows.append([name, np.dtype(dtype).name, str(shape), str(axis),
                             f"{err:.2f}", "PASS" if ok else "FAIL"])
    return rows


# --------------------------------------------------------------------------
# Gradient checks against central finite differences
# --------------------------------------------------------------------------

def _max_error(check: Callable[..., float], *args: Any) -> float:
    """The error check_vjp/check_grad measure, without raising: rtol=inf
    accepts any finite error; a NaN still raises, and is reported as NaN."""
    try:
        return check(*args, rtol=np.inf)
    except AssertionError:
        return float("nan")


def gradcheck_rows(seed: int = 0) -> list[list[str]]:
    """Max relative error of candidate derivatives against finite differences.

    The first row is the classic mistake (the Jacobian's diagonal only); it
    is expected to fail.
    """
    rng = np.random.default_rng(seed)
    x = 2 * rng.standard_normal((4, 6))
    g = rng.standard_normal((4, 6))
    labels = rng.integers(0, 6, 4)
    probs = fs.softmax(rng.standard_normal((4, 6)))

    def naive_delta(x: NDArray[Any], g: NDArray[Any]) -> Any:
        # d softmax as if each s_i depended on x_i only
        s = fs.softmax(x)
        return g * s * (1 - s)

    checks: list[tuple[Any, ...]] = [
        ("naive delta g*s*(1-s)", False,
         check_vjp, fs.softmax, naive_delta, x, g),
        ("fs.softmax_vjp", True,
         check_vjp, fs.softmax, lambda x, g: fs.softmax_vjp(fs.softmax(x), g), x, g),
        ("fs.log_softmax_vjp", True,
         check_vjp, fs.log_softmax,
         lambda x, g: fs.log_softmax_vjp(fs.log_softmax(x), g), x, g),
        ("softmax_cross_entropy grad (indices, mean)", True,
         check_grad, lambda x: fs.softmax_cross_entropy(x, labels),
         lambda x: fs.softmax_cross_entropy(x, labels, return_grad=True)[1], x),
        ("softmax_cross_entropy grad (probs, sum)", True,
         check_grad, lambda x: fs.softmax_cross_entropy(x, probs, reduction="sum"),
         lambda x: fs.softmax_cross_entropy(x, probs, reduction="sum",
                                            return_grad=True)[1], x),
    ]
    rows = []
    for label, should_pass, check, *args in checks:
        err = _max_error(check, *args)
        passed = err <= DEFAULT_RTOL
        rows.append([label, f"{err:.1e}", "PASS" if passed else "FAIL",
                     "as expected" if passed == should_pass else "UNEXPECTED"])
    return rows


# --------------------------------------------------------------------------
# Speed: the implementations compared
# --------------------------------------------------------------------------

OPS = ("softmax", "log_softmax", "softmax_vjp", "softmax_jacobian", "softmax_cross_entropy")
FORWARD_OPS = ("softmax", "log_softmax")

# Column order of every speed table; "fastsoftmax" is "ours" in the ratios.
IMPLEMENTATIONS = ("fastsoftmax", "numpy", "scipy", "torch", "floor")
LABELS = {"fastsoftmax": "fastsoftmax", "numpy": "naive NumPy", "scipy": "SciPy",
          "torch": "PyTorch", "floor": "memory floor (np.copyto)"}


# The expressions a user would write.  (NumPy's type stubs give a reduction
# with keepdims=True the type Any, so these return Any.)

def naive_softmax(x: NDArray[Any]) -> Any:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def naive_log_softmax(x: NDArray[Any]) -> Any:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def naive_softmax_vjp(s: NDArray[Any], g: NDArray[Any]) -> Any:
    return s * (g - (s * g).sum(-1, keepdims=True))


def naive_softmax_jacobian(s: NDArray[Any]) -> Any:
    # diag(s) - s sᵀ for every row, by broadcasting
    n = s.shape[-1]
    return s[:, :, None] * np.eye(n, dtype=s.dtype) - s[:, :, None] * s[:, None, :]


def naive_cross_entropy(x: NDArray[Any], labels: NDArray[Any]) -> tuple[Any, NDArray[Any]]:
    """Mean loss and its gradient (s - onehot) / rows, for class indices."""
    rows = np.arange(len(x))
    shifted = x - x.max(-1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(-1)
    loss = np.mean(np.log(total) - shifted[rows, labels])
    grad = e / total[:, None]
    grad[rows, labels] -= 1
    grad /= len(x)
    return loss, grad


NAIVE: dict[str, Callable[..., object]] = {
    "softmax": naive_softmax, "log_softmax": naive_log_softmax,
    "softmax_vjp": naive_softmax_vjp, "softmax_jacobian": naive_softmax_jacobian,
    "softmax_cross_entropy": naive_cross_entropy}


def make_inputs(op: str, shape: Shape, dtype: FloatType = np.float32, seed: int = 0) -> Inputs:
    """The arguments of `op` on random data, a dict of arrays: x (logits),
    s = softmax(x), g (an upstream gradient), labels (class indices)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=dtype)
    if op in FORWARD_OPS:
        return {"x": x}
    if op == "softmax_vjp":
        return {"s": fs.softmax(x), "g": rng.standard_normal(shape, dtype=dtype)}
    if op == "softmax_jacobian":
        return {"s": fs.softmax(x)}
    return {"x": x, "labels": rng.integers(0, shape[-1], shape[:-1])}


def _args(op: str, a: Inputs) -> tuple[NDArray[Any], ...]:
    """The positional arguments of `op` (ours and the naive one alike)."""
    names = {"softmax_vjp": ("s", "g"), "softmax_jacobian": ("s",),
             "softmax_cross_entropy": ("x", "labels")}.get(op, ("x",))
    return tuple(a[name] for name in names)


def _ours(op: str, a: Inputs) -> Timed:
    func, args = getattr(fs, op), _args(op, a)
    if op == "softmax_cross_entropy":
        return lambda: func(*args, return_grad=True)
    return lambda: func(*args)


def _naive(op: str, a: Inputs) -> Timed:
    func, args = NAIVE[op], _args(op, a)
    return lambda: func(*args)


def _scipy(op: str, a: Inputs) -> Timed | None:
    if sps is None or op not in FORWARD_OPS:
        return None
    func, x = getattr(sps, op), a["x"]
    return lambda: func(x, axis=-1)


def _torch(op: str, a: Inputs, torch: Any) -> Timed:
    """PyTorch on the same memory (torch.from_numpy, no copies)."""
    if op in FORWARD_OPS:
        func, x = getattr(torch, op), torch.from_numpy(a["x"])
        return lambda: func(x, dim=-1)
    if op == "softmax_vjp":  # softmax's own backward kernel:
        # _softmax_backward_data(grad_output, output, dim, input_dtype)
        s, g = torch.from_numpy(a["s"]), torch.from_numpy(a["g"])
        return lambda: torch._softmax_backward_data(g, s, -1, s.dtype)
    if op == "softmax_jacobian":  # at logits log(s), whose softmax is s
        jacobian = torch.func.vmap(torch.func.jacrev(lambda v: torch.softmax(v, -1)))
        logits = torch.from_numpy(np.log(a["s"]))
        return lambda: jacobian(logits)
    # cross-entropy: forward and backward, as training runs it
    x = torch.from_numpy(a["x"]).requires_grad_(True)
    labels = torch.from_numpy(a["labels"])
    cross_entropy = torch.nn.functional.cross_entropy

    def forward_backward() -> tuple[Any, Any]:
        loss = cross_entropy(x, labels)
        (grad,) = torch.autograd.grad(loss, x)
        return loss, grad
    return forward_backward


def _floor(op: str, a: Inputs) -> Timed:
    """NumPy moving the bytes `op` must move, into a preallocated array."""
    if op == "softmax_vjp":  # read s and g, write dx
        s, g = a["s"], a["g"]
        out = np.empty_like(s)
        return lambda: np.add(s, g, out=out)
    if op == "softmax_jacobian":  # read s, write rows * n * n values
        s = a["s"]
        out = np.empty(s.shape + s.shape[-1:], s.dtype)
        return lambda: np.copyto(out, s[:, :, None])
    x = a["x"]  # forward and cross-entropy: read the logits, write as many
    out = np.empty_like(x)
    return lambda: np.copyto(out, x)


def implementations(op: str, a: Inputs, names: Iterable[str],
                    torch: Any = None) -> dict[str, Timed]:
    """{name: zero-argument callable} for those of `names` that exist for
    `op` (SciPy has the forward ops only; "torch" needs the module)."""
    makers: dict[str, Callable[[str, Inputs], Timed | None]] = {
        "fastsoftmax": _ours, "numpy": _naive, "scipy": _scipy, "floor": _floor,
        "torch": lambda op, a: _torch(op, a, torch) if torch else None}
    funcs = {name: makers[name](op, a) for name in names}
    return {name: func for name, func in funcs.items() if func is not None}


def columns_for(op: str, torch: Any = None, names: Sequence[str] = IMPLEMENTATIONS) -> list[str]:
    """The implementations of `names` that can run `op` here, in table order."""
    available = {"scipy": sps is not None and op in FORWARD_OPS, "torch": torch is not None}
    return [name for name in names if available.get(name, True)]


def op_cases(op: str, shapes: Iterable[Shape], dtype: FloatType, names: Sequence[str],
             torch: Any = None) -> Iterator[tuple[str, dict[str, Timed]]]:
    """(shape label, implementations) per shape, made one at a time so that
    only one shape's arrays are alive while it is timed."""
    for shape in shapes:
        yield str(shape), implementations(op, make_inputs(op, shape, dtype), names, torch)


def _work(op: str, shape: Shape) -> int:
    """Elements an op reads or writes: rows * n * n for the Jacobian."""
    return math.prod(shape) * (shape[-1] if op == "softmax_jacobian" else 1)


def _with_threads(n: int, func: Timed) -> Timed:
    """func, run on n threads (set before every call: about a microsecond,
    nothing next to the large inputs timed this way)."""
    def call() -> object:
        fs.set_num_threads(n)
        return func()
    return call


# --------------------------------------------------------------------------
# Speed: timing and tables
# --------------------------------------------------------------------------

def _calibrate(func: Timed, target: float = 0.01) -> int:
    """Calls per measurement so that one measurement takes about `target` s."""
    func()  # warm-up: first-touch page faults, thread pool start, lazy imports
    once = timeit.timeit(func, number=1)
    return max(1, int(target / max(once, 1e-9)))


def median_times(funcs: Sequence[Timed], repeat: int, target: float = 0.01,
                 budget: float | None = None) -> list[float]:
    """Median seconds per call of each function, measured in turns so that a
    noisy moment on the machine hits every column alike.

    Each measurement runs a function as many times as fill about `target`
    seconds.  With a `budget` (seconds), the rounds stop once it is spent
    and at least 3 rounds are done, so that huge cases do not take minutes.
    """
    numbers = [_calibrate(f, target) for f in funcs]
    samples: list[list[float]] = [[] for _ in funcs]
    start = time.perf_counter()
    for done in range(1, repeat + 1):
        for func, number, times in zip(funcs, numbers, samples):
            times.append(timeit.timeit(func, number=number) / number)
        if budget is not None and done >= 3 and time.perf_counter() - start > budget:
            break
    return [statistics.median(times) for times in samples]


def speed_table(cases: Cases, columns: Sequence[str], ratios: Sequence[tuple[str, str, str]],
                repeat: int, *, key: str = "shape", unit: str = "ms", target: float = 0.01,
                budget: float | None = None) -> tuple[list[str], list[list[str]]]:
    """Time each case's implementations side by side: (headers, rows).

    `cases`: ``(label, {column: zero-argument callable})`` pairs; a column a
    case lacks shows "-".  `ratios`: ``(header, a, b)`` triples, each a
    column "time of a / time of b".  `unit`: "ms" or "us" per call.
    """
    scale = {"ms": 1e3, "us": 1e6}[unit]
    headers = [key] + [f"{column} {unit}" for column in columns] + [r[0] for r in ratios]
    rows = []
    for label, funcs in cases:
        names = [column for column in columns if column in funcs]
        times = dict(zip(names, median_times([funcs[n] for n in names], repeat,
                                             target, budget)))
        rows.append([label]
                    + [_number(times[c] * scale) if c in times else "-" for c in columns]
                    + [_ratio(times.get(a), times.get(b)) for _, a, b in ratios])
    return headers, rows


def ours_over(columns: Iterable[str]) -> list[tuple[str, str, str]]:
    """Ratio columns "ours/X" (our time / X's time) for every other column."""
    return [(f"ours/{c}", "fastsoftmax", c) for c in columns if c != "fastsoftmax"]


def _number(value: float, digits: int = 4) -> str:
    """`digits` significant digits (more left of the point), no exponent."""
    if not math.isfinite(value) or value <= 0:
        return f"{value:g}"
    decimals = min(6, max(0, digits - 1 - math.floor(math.log10(value))))
    return f"{value:.{decimals}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{_number(a / b, digits=3)}x"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                title: str | None = None) -> None:
    """Print an aligned plain-text table: text left, numbers right."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def numeric(cell: str) -> bool:
        return cell[:1].isdigit() or cell[:1] in "-." or cell in ("nan", "inf")

    def line(cells: Iterable[object]) -> str:
        return "  ".join(c.rjust(w) if numeric(c) else c.ljust(w)
                         for c, w in zip(map(str, cells), widths)).rstrip()

    if title:
        print(f"\n{title}")
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    sys.stdout.flush()


# --------------------------------------------------------------------------
# Bench: sizes
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Sizes:
    """What the bench times, and how long it tries."""
    forward: tuple[Shape, ...]        # softmax and log_softmax shapes
    vjp: tuple[Shape, ...]
    jacobian: tuple[Shape, ...]       # (rows, n): the result is rows x n x n
    cross_entropy: tuple[Shape, ...]  # class-index targets, return_grad=True
    tiny: Shape                       # every op, whole-call microseconds
    threads_min_work: int             # the thread table: shapes with at least this work
    plot_total: int                   # throughput plot: elements per call (rows = total / n)
    plot_ns: tuple[int, ...]          # throughput plot: row lengths
    scaling_shape: Shape              # threads plot
    repeat: int                       # rounds per case (at most)
    target: float                     # seconds per measurement (calls are calibrated)
    tiny_target: float                # the same for the (1, 10) table: many calls each
    budget: float                     # seconds per case after which rounds stop (>= 3 done)
    quick: bool = False

    def shapes(self, op: str) -> tuple[Shape, ...]:
        return {"softmax": self.forward, "log_softmax": self.forward,
                "softmax_vjp": self.vjp, "softmax_jacobian": self.jacobian,
                "softmax_cross_entropy": self.cross_entropy}[op]


FULL = Sizes(
    forward=((4096, 1024), (256, 32000), (16384, 64), (64, 128), (1, 4_000_000),
             (16384, 4096)),
    vjp=((4096, 1024), (256, 32000)),
    jacobian=((256, 256), (64, 1024)),
    cross_entropy=((4096, 1024),),
    tiny=(1, 10),
    threads_min_work=2**20,
    plot_total=2**22,
    plot_ns=tuple(4**k for k in range(2, 11)),  # 16 .. 2**20
    scaling_shape=(4096, 1024),
    repeat=25, target=0.01, tiny_target=0.02, budget=10.0)

QUICK = Sizes(
    forward=((64, 1024), (4, 8000), (512, 64), (64, 128), (1, 65536), (16, 4096)),
    vjp=((64, 1024), (4, 8000)),
    jacobian=((16, 64), (2, 256)),
    cross_entropy=((64, 1024),),
    tiny=(1, 10),
    threads_min_work=2**15,
    plot_total=2**16,
    plot_ns=(16, 256, 4096, 65536),
    scaling_shape=(64, 1024),
    repeat=3, target=0.002, tiny_target=0.002, budget=0.5, quick=True)

# Extra words for a table's title, per op.
OP_NOTES = {
    "softmax_vjp": "numpy: s * (g - (s * g).sum(-1)); torch: _softmax_backward_data; "
                   "floor: np.add(s, g, out=dx)",
    "softmax_jacobian": "(rows, n) -> (rows, n, n); numpy: diag(s) - s s^T by broadcasting; "
                        "torch: vmap(jacrev(softmax)); floor: np.copyto(J, s[:, :, None])",
    "softmax_cross_entropy": "class indices, return_grad=True; torch: F.cross_entropy "
                             "forward + autograd backward",
}

# The ops of the threads plot.
SCALING_OPS = ("softmax", "log_softmax", "softmax_vjp", "softmax_cross_entropy")


# --------------------------------------------------------------------------
# Bench: the tables
# --------------------------------------------------------------------------

def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _import_torch(threads: int) -> Any:
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


def print_bench_header(sizes: Sizes, repeat: int, threads: int, torch: Any) -> None:
    if sizes.quick:
        print("QUICK RUN (--quick): small shapes, few repeats. A smoke test, not a measurement.\n")
    fs.show_config()
    versions = [f"numpy {np.__version__}"]
    versions.append(f"scipy {scipy.__version__}" if sps else "scipy: not installed")
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
        for op in OPS:
            _progress(f"timing {op} {dtype_name} ...")
            columns = columns_for(op, torch)
            headers, rows = speed_table(
                op_cases(op, sizes.shapes(op), dtype, columns, torch), columns,
                ours_over(columns), repeat, target=sizes.target, budget=sizes.budget)
            note = f" ({OP_NOTES[op]})" if op in OP_NOTES else ""
            print_table(headers, rows, title=f"{op} {dtype_name}{note}")


def tiny_tables(sizes: Sizes, repeat: int, torch: Any) -> None:
    """Every op on one tiny row: the whole call, Python overhead included."""
    for dtype in (np.float32, np.float64):
        dtype_name = np.dtype(dtype).name
        _progress(f"timing every op at {sizes.tiny} {dtype_name} ...")
        columns = columns_for("softmax", torch)  # softmax has them all; "-" where absent
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
                    func = _ours(op, make_inputs(op, shape))
                    yield (f"{op} {shape}",
                           {one: _with_threads(1, func), many: _with_threads(threads, func)})

    try:
        headers, rows = speed_table(cases(), [one, many], [("speed-up", one, many)], repeat,
                                    key="op, shape", target=sizes.target,
                                    budget=sizes.budget)
    finally:
        fs.set_num_threads(None)
    print_table(headers, rows, title=f"Thread scaling, float32: fastsoftmax on 1 vs "
                                     f"{threads} threads (fs.set_num_threads)")


# --------------------------------------------------------------------------
# Bench: the plots
# --------------------------------------------------------------------------

def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or None."""
    try:
        import matplotlib  # type: ignore[import, unused-ignore]
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import, unused-ignore]
    return plt


def throughput_series(sizes: Sizes, repeat: int, torch: Any) -> dict[str, list[float]]:
    """softmax float32 effective GB/s ((bytes read + written) / time) per
    implementation, for rows of n elements, sizes.plot_total elements a call."""
    _progress("timing softmax throughput against the row length ...")
    columns = columns_for("softmax", torch)
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
            func = _ours(op, make_inputs(op, sizes.scaling_shape))
            times = median_times([_with_threads(t, func) for t in counts], repeat,
                                 sizes.target, sizes.budget)
            series[op] = [times[0] / t for t in times]
    finally:
        fs.set_num_threads(None)
    rows = [[op] + [f"{s:.2f}x" for s in speedups] for op, speedups in series.items()]
    print_table(["op"] + [f"{t} thread{'s' * (t > 1)}" for t in counts], rows,
                title=f"Speed-up over 1 thread, float32 {sizes.scaling_shape} (threads.png)")
    return series


def line_plot(path: str, x: Sequence[float], series: dict[str, list[float]], *, title: str,
              xlabel: str, ylabel: str, logx: bool = False, ideal: bool = False) -> None:
    """One line per series; the floor dashed; optionally y = x dotted."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, ys in series.items():
        ax.plot(x, ys, marker="o", label=LABELS.get(name, name),
                linestyle="--" if name == "floor" else "-")
    if ideal:
        ax.plot(x, x, color="gray", linestyle=":", label="ideal (linear)")
    if logx:
        ax.set_xscale("log", base=2)
    else:
        ax.set_xticks(x)
    ax.set_ylim(bottom=0)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    _progress(f"wrote {path}")


def write_plots(plot_dir: str, sizes: Sizes, repeat: int, threads: int, torch: Any) -> None:
    os.makedirs(plot_dir, exist_ok=True)
    where = f"{_backend.SIMD_PATH}, {threads} thread(s)"
    where += ", --quick" if sizes.quick else ""
    line_plot(os.path.join(plot_dir, "throughput.png"), list(sizes.plot_ns),
              throughput_series(sizes, repeat, torch),
              title=f"softmax float32, {sizes.plot_total:,} elements per call ({where})",
              xlabel="row length n (rows = elements / n)",
              ylabel="effective GB/s (read + written)", logx=True)
    line_plot(os.path.join(plot_dir, "threads.png"), list(range(1, threads + 1)),
              scaling_series(sizes, repeat, threads),
              title=f"fastsoftmax thread scaling, float32 {sizes.scaling_shape} ({where})",
              xlabel="threads (fs.set_num_threads)", ylabel="speed-up over 1 thread",
              ideal=True)


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

DEMO_SHAPES = [(4096, 1024), (256, 32000), (16384, 64), (64, 128)]


def demo() -> int:
    fs.show_config()

    rows = correctness_rows()
    print_table(["function", "dtype", "shape", "axis", "max err (ulp)", "result"], rows,
                title=f"Correctness vs fastsoftmax.reference (exact: float64 for float32, "
                      f"long double for float64; limit {ULP_LIMIT} ulp)")
    failed = sum(row[-1] != "PASS" for row in rows)

    grad_rows = gradcheck_rows()
    print_table(["derivative", "max rel err", "result", "expected?"], grad_rows,
                title=f"Gradient check vs central finite differences (float64, "
                      f"pass: error <= {DEFAULT_RTOL:g})")
    failed += sum(row[-1] != "as expected" for row in grad_rows)

    threads = fs.get_num_threads()
    columns = columns_for("softmax", names=("fastsoftmax", "numpy", "scipy"))
    speed_ups = [(f"{c}/ours", c, "fastsoftmax") for c in columns[1:]]
    headers, rows = speed_table(op_cases("softmax", DEMO_SHAPES, np.float32, columns),
                                columns, speed_ups, repeat=7)
    print_table(headers, rows, title=f"softmax float32, median time per call "
                                     f"(fastsoftmax on {threads} thread(s))")
    if failed:
        print(f"\n{failed} check(s) FAILED")
        return 1
    print("\nAll checks passed.")
    return 0


def bench(sizes: Sizes = FULL, repeat: int | None = None, plot_dir: str | None = None) -> int:
    repeat = repeat or sizes.repeat
    threads = fs.get_num_threads()
    torch = _import_torch(threads)
    print_bench_header(sizes, repeat, threads, torch)
    op_tables(sizes, repeat, torch)
    tiny_tables(sizes, repeat, torch)
    thread_table(sizes, repeat, threads)
    if plot_dir is not None:
        write_plots(plot_dir, sizes, repeat, threads, torch)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastsoftmax",
        description="Show the build, check correctness and gradients, time the kernels.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="config, correctness, gradient checks, speed (default)")
    bench_parser = sub.add_parser(
        "bench", help="every op against NumPy, SciPy, PyTorch and the memory floor")
    bench_parser.add_argument("--repeat", type=int, default=None,
                              help=f"measurements per case, at most (default {FULL.repeat}; "
                                   f"{QUICK.repeat} with --quick)")
    bench_parser.add_argument("--quick", action="store_true",
                              help="small shapes, few repeats: a smoke test (seconds)")
    bench_parser.add_argument("--plot", metavar="DIR",
                              help="also write DIR/throughput.png and DIR/threads.png "
                                   "(needs matplotlib: pip install \".[plot]\")")
    args = parser.parse_args(argv)
    if args.command == "bench":
        if args.plot is not None and _pyplot() is None:
            parser.error("--plot needs matplotlib (pip install \".[plot]\")")
        if args.repeat is not None and args.repeat < 1:
            parser.error("--repeat must be at least 1")
        return bench(QUICK if args.quick else FULL, args.repeat, args.plot)
    return demo()


if __name__ == "__main__":
    sys.exit(main())
