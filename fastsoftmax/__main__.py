"""``python -m fastsoftmax``: what this build is, whether it is right, how fast it is.

    python -m fastsoftmax          # the demo (default): config, correctness,
                                   # gradient checks, a float32 speed table
    python -m fastsoftmax bench    # longer speed tables: more ops, more repeats,
                                   # and the memory floor

The demo exits with status 1 if any correctness or gradient check fails.
For careful, saved benchmarks use ``pytest benchmarks/ --benchmark-only``.
"""

import argparse
import statistics
import sys
import timeit

import numpy as np

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax.testing import DEFAULT_RTOL, check_grad, check_vjp

try:
    import scipy.special as sps
except ImportError:  # scipy is optional: its column is left out
    sps = None


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


def _exact_dtype(dtype):
    """The dtype the reference computes the 'exact' value in: float64 for
    float32 data, long double for float64 data (where the platform has one)."""
    return np.dtype(np.float64) if dtype == np.float32 else np.dtype(np.longdouble)


def _ulp_error(got, exact, dtype, scale=None):
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


def _check_one(name, shape, axis, dtype, rng):
    """Error in ulp of fs.<name> against reference.<name> on random data."""
    hi = _exact_dtype(dtype)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    ours, exact = getattr(fs, name), getattr(ref, name)

    def total(a):
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


def correctness_rows(seed=0):
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

def _max_error(check, *args):
    """The error check_vjp/check_grad measure, without raising: rtol=inf
    accepts any finite error; a NaN still raises, and is reported as NaN."""
    try:
        return check(*args, rtol=np.inf)
    except AssertionError:
        return float("nan")


def gradcheck_rows(seed=0):
    """Max relative error of candidate derivatives against finite differences.

    The first row is the classic mistake (the Jacobian's diagonal only); it
    is expected to fail.
    """
    rng = np.random.default_rng(seed)
    x = 2 * rng.standard_normal((4, 6))
    g = rng.standard_normal((4, 6))
    labels = rng.integers(0, 6, 4)
    probs = fs.softmax(rng.standard_normal((4, 6)))

    def naive_delta(x, g):  # d softmax as if each s_i depended on x_i only
        s = fs.softmax(x)
        return g * s * (1 - s)

    checks = [
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
# Speed
# --------------------------------------------------------------------------

def naive_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def naive_log_softmax(x):
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def naive_softmax_vjp(s, g):
    return s * (g - (s * g).sum(-1, keepdims=True))


def naive_softmax_jacobian(s):
    # diag(s) - s sᵀ for every row, by broadcasting
    n = s.shape[-1]
    return s[:, :, None] * np.eye(n, dtype=s.dtype) - s[:, :, None] * s[:, None, :]


def naive_cross_entropy(x, labels):
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


def _calibrate(func, target=0.01):
    """Calls per measurement so that one measurement takes about `target` s."""
    func()  # warm-up: first-touch page faults, thread pool start
    once = timeit.timeit(func, number=1)
    return max(1, int(target / max(once, 1e-9)))


def median_times(funcs, repeat):
    """Median seconds per call of each function, measured in turns so that a
    noisy moment on the machine hits every column alike."""
    numbers = [_calibrate(f) for f in funcs]
    samples = [[] for _ in funcs]
    for _ in range(repeat):
        for func, number, times in zip(funcs, numbers, samples):
            times.append(timeit.timeit(func, number=number) / number)
    return [statistics.median(times) for times in samples]


def speed_rows(cases, repeat=7, floor=False):
    """One row per case: ms per call and speed-ups.

    `cases` is a list of ``(label, ours, numpy, scipy, floor)``: zero-argument
    callables, scipy and floor may be None.  The ratio columns are
    "numpy time / our time" (how many times faster we are) and, with
    ``floor=True``, "our time / floor time" (1.0 would be as fast as moving
    the bytes).
    """
    with_scipy = any(case[3] is not None for case in cases)
    rows = []
    for label, ours, numpy_f, scipy_f, floor_f in cases:
        funcs = [ours, numpy_f] + ([scipy_f] if scipy_f else []) + ([floor_f] if floor else [])
        times = iter(median_times(funcs, repeat))
        t_ours, t_numpy = next(times), next(times)
        t_scipy = next(times) if scipy_f else None
        t_floor = next(times) if floor else None
        row = [label, _ms(t_ours), _ms(t_numpy)]
        if with_scipy:
            row.append(_ms(t_scipy))
        if floor:
            row.append(_ms(t_floor))
        row.append(_ratio(t_numpy, t_ours))
        if with_scipy:
            row.append(_ratio(t_scipy, t_ours))
        if floor:
            row.append(_ratio(t_ours, t_floor))
        rows.append(row)
    headers = ["shape", "fastsoftmax ms", "numpy ms"]
    headers += ["scipy ms"] if with_scipy else []
    headers += ["floor ms"] if floor else []
    headers += ["numpy/ours"] + (["scipy/ours"] if with_scipy else [])
    headers += ["ours/floor"] if floor else []
    return headers, rows


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.1f}x"


def print_table(headers, rows, title=None):
    """Print an aligned plain-text table: text left, numbers right."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def numeric(cell):
        return cell[:1].isdigit() or cell[:1] in "-." or cell in ("nan", "inf")

    def line(cells):
        return "  ".join(c.rjust(w) if numeric(c) else c.ljust(w)
                         for c, w in zip(map(str, cells), widths)).rstrip()

    if title:
        print(f"\n{title}")
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


# --------------------------------------------------------------------------
# The speed cases
# --------------------------------------------------------------------------

FORWARD_SHAPES = [(4096, 1024), (256, 32000), (16384, 64), (64, 128)]


def _data(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def forward_cases(op, shapes=FORWARD_SHAPES, dtype=np.float32):
    ours = {"softmax": fs.softmax, "log_softmax": fs.log_softmax}[op]
    naive = {"softmax": naive_softmax, "log_softmax": naive_log_softmax}[op]
    theirs = getattr(sps, op) if sps else None
    cases = []
    for shape in shapes:
        x, y = _data(shape, dtype), np.empty(shape, dtype)
        cases.append((str(shape), lambda x=x: ours(x), lambda x=x: naive(x),
                      (lambda x=x: theirs(x, axis=-1)) if theirs else None,
                      lambda x=x, y=y: np.copyto(y, x)))
    return cases


def vjp_cases(shapes=((4096, 1024), (256, 32000))):
    cases = []
    for shape in shapes:
        s, g, y = fs.softmax(_data(shape)), _data(shape, seed=1), np.empty(shape, np.float32)
        # Floor: a copy reads one array; np.add reads both inputs and writes
        # the output once, as the vjp must, and is as memory-bound.
        cases.append((str(shape), lambda s=s, g=g: fs.softmax_vjp(s, g),
                      lambda s=s, g=g: naive_softmax_vjp(s, g), None,
                      lambda s=s, g=g, y=y: np.add(s, g, out=y)))
    return cases


def jacobian_cases(shapes=((256, 256),)):
    cases = []
    for rows, n in shapes:
        s = fs.softmax(_data((rows, n)))
        jac = np.empty((rows, n, n), np.float32)
        cases.append((str((rows, n)), lambda s=s: fs.softmax_jacobian(s),
                      lambda s=s: naive_softmax_jacobian(s), None,
                      lambda s=s, jac=jac: np.copyto(jac, s[:, :, None])))
    return cases


def cross_entropy_cases(shapes=((4096, 1024),)):
    cases = []
    for shape in shapes:
        x, y = _data(shape), np.empty(shape, np.float32)
        labels = np.random.default_rng(2).integers(0, shape[-1], shape[0])
        cases.append((str(shape),
                      lambda x=x, t=labels: fs.softmax_cross_entropy(x, t, return_grad=True),
                      lambda x=x, t=labels: naive_cross_entropy(x, t), None,
                      lambda x=x, y=y: np.copyto(y, x)))
    return cases


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

def demo():
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
    headers, rows = speed_rows(forward_cases("softmax"), repeat=7)
    print_table(headers, rows, title=f"softmax float32, median time per call "
                                     f"(fastsoftmax on {threads} thread(s))")
    if failed:
        print(f"\n{failed} check(s) FAILED")
        return 1
    print("\nAll checks passed.")
    return 0


def bench(repeat=25):
    print(f"fastsoftmax {fs.__version__}, {fs.get_num_threads()} thread(s); median of "
          f"{repeat} runs.\nfloor: NumPy moving the same bytes into a preallocated array "
          f"(np.copyto) on one thread,\nso a threaded kernel can beat it (ours/floor < 1).")
    tables = [
        ("softmax float32", forward_cases("softmax")),
        ("log_softmax float32", forward_cases("log_softmax")),
        ("softmax_vjp float32 (numpy: s * (g - (s * g).sum(-1)); floor: np.add(s, g))",
         vjp_cases()),
        ("softmax_jacobian float32 (numpy: diag(s) - s s^T by broadcasting)",
         jacobian_cases()),
        ("softmax_cross_entropy float32, class indices, return_grad=True",
         cross_entropy_cases()),
    ]
    for title, cases in tables:
        headers, rows = speed_rows(cases, repeat=repeat, floor=True)
        print_table(headers, rows, title=title)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastsoftmax",
        description="Show the build, check correctness and gradients, time the kernels.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="config, correctness, gradient checks, speed (default)")
    bench_parser = sub.add_parser("bench", help="longer speed tables with the memory floor")
    bench_parser.add_argument("--repeat", type=int, default=25,
                              help="timed runs per case (default 25)")
    args = parser.parse_args(argv)
    if args.command == "bench":
        return bench(args.repeat)
    return demo()


if __name__ == "__main__":
    sys.exit(main())
