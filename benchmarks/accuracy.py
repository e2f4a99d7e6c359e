"""Measure the error of every fastsoftmax kernel in ulp, per SIMD path.

Usage::

    python benchmarks/accuracy.py [--n 1000000] [--out docs/_static/accuracy.txt]
                                  [--seed 0] [--no-mpmath]

For each regime of inputs (below), dtype (float32, float64) and SIMD path
the CPU supports, every function runs on `--n` random inputs and its results
are compared with an oracle: the same mathematics evaluated in higher
precision from the same float inputs (float64 for float32 data, the x86
80-bit long double for float64 data).  The report gives the largest error
and its 99.9th percentile over all results, in ulp of the exact value:

    ulp(e) = 2**(floor(log2 |e|) - p + 1) for |e| >= tiny (the smallest
             normal number), p = 24 or 53 the precision;
    ulp(e) = eps * tiny, the spacing of the subnormal numbers, below it
             (so ulp(0) = 2**-149 or 2**-1074).

A NaN or infinity where the oracle has none (or the other way round) is an
infinite error.  For the derivatives, whose results are differences that can
cancel (s_j (v_j - <s, v>) is far smaller than either term when v_j is close
to <s, v>), a second measure divides the error by the ulp of the terms
instead:

    softmax_jvp, softmax_vjp:  s_j (|v_j| + |<s, v>|)
    log_softmax_vjp:           |g_j| + exp(logp_j) |sum g|
    softmax_jacobian:          s_i (delta_ij + s_j)
    cross-entropy gradient:    p_j + [j = target]

The worst case of each (function, dtype, regime) is then recomputed with
mpmath at 40 significant digits (unless --no-mpmath or mpmath is missing),
which checks the oracle itself.  docs/accuracy.rst explains the results.
A run takes about a minute on two cores.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np

import fastsoftmax as fs
from fastsoftmax import _backend
from fastsoftmax import reference as ref
from fastsoftmax._checks import ulp_errors
from fastsoftmax._report import format_table

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
HIGH = {F32: np.dtype(np.float64), F64: np.dtype(np.longdouble)}
ROW = 1000  # row length of every regime but "large-n"


# --------------------------------------------------------------------------
# Regimes: logits of shape (rows, n)
# --------------------------------------------------------------------------

def _rows(total, n):
    return max(1, total // n), n


def normal(rng, dtype, total):
    return rng.standard_normal(_rows(total, ROW)).astype(dtype)


def wide(rng, dtype, total):
    bound = 80.0 if dtype == F32 else 700.0
    return rng.uniform(-bound, bound, _rows(total, ROW)).astype(dtype)


def near_uniform(rng, dtype, total):
    return rng.uniform(0, 1e-3, _rows(total, ROW)).astype(dtype)


def _one_at_zero(rng, x):
    x[np.arange(len(x)), rng.integers(0, x.shape[1], len(x))] = 0
    return x


def dominant(rng, dtype, total):
    # the others' exp spans small normal numbers, subnormal ones and 0
    low, high = (-110.0, -80.0) if dtype == F32 else (-760.0, -700.0)
    return _one_at_zero(rng, rng.uniform(low, high, _rows(total, ROW)).astype(dtype))


def tiny_tail(rng, dtype, total, row=ROW):
    # the others' exp is subnormal or 0: log_softmax at the max is -tail,
    # a tiny number made of subnormal terms
    low, high = (-104.0, -88.0) if dtype == F32 else (-745.0, -709.0)
    return _one_at_zero(rng, rng.uniform(low, high, _rows(total, row)).astype(dtype))


def masked(rng, dtype, total):
    x = rng.standard_normal(_rows(total, ROW))
    x[rng.random(x.shape) < 0.5] = -np.inf
    x[np.arange(len(x)), rng.integers(0, x.shape[1], len(x))] = rng.standard_normal(len(x))
    return x.astype(dtype)


def short_rows(rng, dtype, total):
    # rows short enough for the short-row kernel (see _vmath.hpp)
    return (3 * rng.standard_normal(_rows(total, 10))).astype(dtype)


def short_tiny_tail(rng, dtype, total):
    return tiny_tail(rng, dtype, total, row=37)


def large_n(rng, dtype, total):
    return rng.standard_normal((1, total)).astype(dtype)


REGIMES = {
    "normal": (normal, "N(0, 1) logits, rows of 1000"),
    "wide": (wide, "uniform in +-80 (float32) / +-700 (float64), rows of 1000"),
    "near-uniform": (near_uniform, "uniform in [0, 1e-3): p ~ 1/n, log p ~ log(1/1000)"),
    "dominant": (dominant, "one 0, the others uniform in [-110, -80] / [-760, -700]"),
    "tiny-tail": (tiny_tail, "one 0, the others uniform in [-104, -88] / [-745, -709]"),
    "masked": (masked, "N(0, 1) with half the entries -inf, rows of 1000"),
    # (the forward functions only: where= is theirs)
    "where": (masked, "masked, the -inf entries excluded by where= and NaN in x"),
    "short": (short_rows, "N(0, 9) logits, rows of 10"),
    "short-tail": (short_tiny_tail, "tiny-tail, rows of 37"),
    "large-n": (large_n, "one row of n N(0, 1) logits"),
}


# --------------------------------------------------------------------------
# Inputs, kernels and oracles
# --------------------------------------------------------------------------

FUNCTIONS = ["softmax", "log_softmax", "logsumexp", "softmax_jacobian", "softmax_jvp",
             "softmax_vjp", "log_softmax_vjp", "cross_entropy loss", "cross_entropy grad"]
FORWARD = ("softmax", "log_softmax", "logsumexp")


def make_inputs(x, rng, by_where=False):
    """The float inputs every function gets, from the logits x.

    The derivatives take the forward results as backprop caches them
    (fastsoftmax's own softmax and log_softmax on the default path), and a
    standard normal v (= g).  The cross-entropy takes class indices, chosen
    among each row's finite logits.  The Jacobian gets the first rows of s,
    as many as make about the same number of results as the others (one
    row of 1000 gives 10**6 entries); none for a row longer than 2000.

    by_where: the -inf entries of x are to be left out by where= instead
    (x_where holds NaN there, which must not matter).
    """
    with np.errstate(all="ignore"):
        s, logp = fs.softmax(x), fs.log_softmax(x)
    v = rng.standard_normal(x.shape).astype(x.dtype)
    rows, n = x.shape
    keys = np.where(np.isfinite(x), rng.random(x.shape), -1.0)
    target = keys.argmax(axis=1).astype(np.int64)
    jac_rows = min(rows, max(1, x.size // (n * n))) if n <= 2000 else 0
    inputs = {"x": x, "s": s, "logp": logp, "v": v, "target": target, "s_jac": s[:jac_rows]}
    if by_where:
        inputs["where"] = x != -np.inf
        inputs["x_where"] = np.where(inputs["where"], x, np.nan).astype(x.dtype)
    return inputs


def run_kernels(inp):
    """Every function on the current SIMD path: name -> result array (the
    forward functions only, with where=, for inputs made by_where)."""
    with np.errstate(all="ignore"):
        if "where" in inp:
            return {name: getattr(fs, name)(inp["x_where"], where=inp["where"])
                    for name in FORWARD}
        loss, grad = fs.softmax_cross_entropy(inp["x"], inp["target"], reduction="none",
                                              return_grad=True)
        out = {
            "softmax": fs.softmax(inp["x"]),
            "log_softmax": fs.log_softmax(inp["x"]),
            "logsumexp": fs.logsumexp(inp["x"]),
            "softmax_jvp": fs.softmax_jvp(inp["s"], inp["v"]),
            "softmax_vjp": fs.softmax_vjp(inp["s"], inp["v"]),
            "log_softmax_vjp": fs.log_softmax_vjp(inp["logp"], inp["v"]),
            "cross_entropy loss": loss,
            "cross_entropy grad": grad,
        }
        if len(inp["s_jac"]):
            out["softmax_jacobian"] = fs.softmax_jacobian(inp["s_jac"])
    return out


def oracles(inp):
    """name -> (exact value, {measure: scale}), in higher precision: the
    error is taken in ulp of the scale ("terms", "cond"), besides the ulp
    of the exact value.

    softmax and log_softmax are fastsoftmax.reference run in the higher
    precision.  The products use their formula (the reference forms the
    whole Jacobian, too slow for 10**6 inputs): the sums are NumPy's
    pairwise sums in the higher precision, whose error (~log2(n) units of
    it) is far below an ulp of the data's dtype.
    """
    high = HIGH[inp["x"].dtype]
    x = inp["x"].astype(high)
    s, logp, v = inp["s"].astype(high), inp["logp"].astype(high), inp["v"].astype(high)
    with np.errstate(all="ignore"):
        p, lp = ref.softmax(x), ref.log_softmax(x)
        dot = np.sum(s * v, axis=-1, keepdims=True)
        jvp = s * (v - dot)
        jvp_scales = {"terms": s * (np.abs(v) + np.abs(dot)),
                      "cond": s * (np.abs(v) + np.sum(np.abs(s * v), axis=-1, keepdims=True))}
        gsum = np.sum(v, axis=-1, keepdims=True)
        q = np.exp(logp)
        rows = np.arange(len(x))
        onehot = np.zeros(x.shape, high)
        onehot[rows, inp["target"]] = 1
        lse = ref.logsumexp(x)
        result = {
            "softmax": (p, {}),
            "log_softmax": (lp, {}),
            # its promise: ulp of the larger of |result| and |max x|
            "logsumexp": (lse, {"terms": np.maximum(np.abs(lse), np.abs(np.max(x, axis=-1)))}),
            "softmax_jvp": (jvp, jvp_scales),
            "softmax_vjp": (jvp, jvp_scales),
            "log_softmax_vjp": (v - q * gsum, {
                "terms": np.abs(v) + q * np.abs(gsum),
                "cond": np.abs(v) + q * np.sum(np.abs(v), axis=-1, keepdims=True)}),
            "cross_entropy loss": (-lp[rows, inp["target"]], {}),
            "cross_entropy grad": (p - onehot, {"terms": p + onehot}),
        }
        if len(inp["s_jac"]):
            sj = inp["s_jac"].astype(high)
            eye = np.eye(sj.shape[1], dtype=high)
            jac = sj[:, :, None] * (eye - sj[:, None, :])
            result["softmax_jacobian"] = (jac, {"terms": sj[:, :, None] * (eye + sj[:, None, :])})
    return result


# --------------------------------------------------------------------------
# Errors in ulp (fastsoftmax._checks.ulp_errors: the measure above, elementwise)
# --------------------------------------------------------------------------

def summarize(err):
    return float(err.max()), float(np.percentile(err, 99.9)), int(np.argmax(err))


# --------------------------------------------------------------------------
# mpmath spot checks
# --------------------------------------------------------------------------

def exact_mp(name, inp, flat_index, mp):
    """The exact value of one result, computed with mpmath from the float
    inputs (None where the row is too long to be worth it)."""
    x = inp["x"]
    n = x.shape[1]
    if n > 2000:
        return None
    if name == "softmax_jacobian":
        row, rest = divmod(flat_index, n * n)
        i, j = divmod(rest, n)
        s = inp["s_jac"][row]
        si, sj = mp.mpf(float(s[i])), mp.mpf(float(s[j]))
        return si * ((1 if i == j else 0) - sj)
    if name == "cross_entropy loss":
        row, j = flat_index, int(inp["target"][flat_index])
    elif name == "logsumexp":
        row, j = flat_index, 0
    else:
        row, j = divmod(flat_index, n)
    if name in FORWARD + ("cross_entropy loss", "cross_entropy grad"):
        values = [mp.mpf(float(t)) for t in x[row] if np.isfinite(t)]
        m = max(values)
        # total = 1 + tail can be 1 + 1e-300: log1p of the tail keeps it
        tail = mp.fsum(mp.exp(t - m) for t in values if t != m) + (values.count(m) - 1)
        total, log_total = 1 + tail, mp.log1p(tail)
        if name == "logsumexp":
            return m + log_total
        xj = float(x[row, j])
        if name == "softmax":
            return mp.exp(mp.mpf(xj) - m) / total if np.isfinite(xj) else mp.mpf(0)
        if name == "log_softmax":
            return (mp.mpf(xj) - m) - log_total if np.isfinite(xj) else None
        if name == "cross_entropy loss":
            return log_total - (mp.mpf(xj) - m)
        p = mp.exp(mp.mpf(xj) - m) / total if np.isfinite(xj) else mp.mpf(0)
        return p - (1 if j == inp["target"][row] else 0)
    v = [mp.mpf(float(t)) for t in inp["v"][row]]
    if name in ("softmax_jvp", "softmax_vjp"):
        s = [mp.mpf(float(t)) for t in inp["s"][row]]
        return s[j] * (v[j] - mp.fsum(a * b for a, b in zip(s, v)))
    logp = float(inp["logp"][row, j])
    q = mp.exp(mp.mpf(logp)) if np.isfinite(logp) else mp.mpf(0)
    return v[j] - q * mp.fsum(v)


def to_mp(value, mp):
    """A float32/float64/long double value as an mpmath number, exactly: the
    mantissa of a long double is the sum of two doubles (53 + 11 bits),
    taken before scaling so that tiny values lose nothing."""
    mantissa, exponent = np.frexp(np.longdouble(value))
    high = float(mantissa)
    low = float(mantissa - np.longdouble(high))
    return mp.ldexp(mp.mpf(high) + mp.mpf(low), int(exponent))


def mp_ulp_error(value, exact, dtype, mp):
    """|value - exact| in ulp of exact; value a NumPy float, exact mpmath."""
    info = np.finfo(dtype)
    if exact == 0:
        unit = mp.mpf(float(info.smallest_subnormal))
    else:
        unit = max(mp.mpf(2) ** (mp.floor(mp.log(abs(exact), 2)) - info.nmant),
                   mp.mpf(float(info.smallest_subnormal)))
    return float(abs(to_mp(value, mp) - exact) / unit)


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------

def fmt(value):
    if value == np.inf:
        return "inf"
    return f"{value:.3g}" if value >= 0.01 else ("0" if value == 0 else f"{value:.1e}")


def table(title, lines, paths, key):
    """lines: (function, dtype, regime) -> {path: {"ulp": .., "terms": ..}}."""
    rows = []
    for (func, dtype, regime), per_path in lines.items():
        cells = []
        for p in paths:
            stats = per_path.get(p, {}).get(key)
            cells.append("-" if stats is None else f"{fmt(stats[0])} / {fmt(stats[1])}")
        rows.append([func, dtype, regime, *cells])
    headers = ["function", "dtype", "regime", *(f"{p} max / 99.9%" for p in paths)]
    return [title, "-" * len(title)] + format_table(
        headers, rows, widths=[20, 8, 13, *(21 for _ in paths)],
        align="<<<" + ">" * len(paths), sep=" ", rule="line")


def measure(total, seed, paths, mp):
    """Run every function on every path; returns the results
    {(function, dtype, regime): {path: {measure: (max, p99.9, argmax)}}} and
    the spot checks [(function, dtype, regime, worst ulp vs the oracle, the
    oracle's own error, the kernel's error vs mpmath)]."""
    started = time.perf_counter()
    results, spots = {}, []
    for dtype in (F32, F64):
        for regime, (make, _) in REGIMES.items():
            rng = np.random.default_rng(seed)
            x = make(rng, dtype, total)
            inp = make_inputs(x, rng, by_where=regime == "where")  # (the default kernels)
            exact = oracles(inp)
            for path in paths:
                with _backend.use(path):
                    outputs = run_kernels(inp)
                for name, actual in outputs.items():
                    value, scales = exact[name]
                    entry = {"ulp": summarize(ulp_errors(actual, value, dtype))}
                    for measure_name, scale in scales.items():
                        entry[measure_name] = summarize(ulp_errors(actual, value, dtype, scale))
                    results.setdefault((name, dtype.name, regime), {})[path] = entry
                    if mp is None or path != paths[0]:
                        continue
                    worst = entry["ulp"][2]
                    truth = exact_mp(name, inp, worst, mp)
                    if truth is not None:
                        spots.append((name, dtype.name, regime, entry["ulp"][0],
                                      mp_ulp_error(value.ravel()[worst], truth, dtype, mp),
                                      mp_ulp_error(actual.ravel()[worst], truth, dtype, mp)))
            print(f"{dtype.name} {regime}: done ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr)
    order = {name: i for i, name in enumerate(FUNCTIONS)}
    results = dict(sorted(results.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])))
    return results, spots


def report(results, spots, paths, total, seed, digits):
    """The text of the report."""
    forward = {k: v for k, v in results.items() if k[0] in FORWARD}
    rest = {k: v for k, v in results.items() if k not in forward}
    info = _backend.config()
    lines = [
        "fastsoftmax accuracy: error in ulp against a higher-precision oracle",
        "",
        f"fastsoftmax {info['version']}, numpy {np.__version__}, Python "
        f"{platform.python_version()}, {platform.machine()}; compiler {info['compiler']}",
        f"SIMD paths measured: {', '.join(paths)}; {fs.get_num_threads()} thread(s); "
        f"long double: {np.finfo(np.longdouble).nmant + 1}-bit mantissa",
        f"inputs: {total} per regime and dtype, seed {seed} "
        "(python benchmarks/accuracy.py --n N --seed S)",
        "oracle: float64 for float32 data, long double for float64 data, from the same float inputs",
        "ulp(e): 2**(floor(log2|e|) - p + 1) for |e| >= tiny, else eps * tiny (the subnormal "
        "spacing; ulp(0) too)",
        "each cell: max / 99.9th percentile over all results; inf: a NaN or inf where the oracle "
        "has none",
        "",
        "regimes:",
    ]
    lines += [f"  {name:<13} {text}" for name, (_, text) in REGIMES.items()]
    lines += [""]
    lines += table("softmax, log_softmax and logsumexp, ulp of the exact value", forward,
                   paths, "ulp")
    lines += [""]
    lse = {k: v for k, v in forward.items() if "terms" in v[paths[0]]}
    lines += table("logsumexp, ulp of the larger of |result| and |max x| (its promise)", lse,
                   paths, "terms")
    lines += [""]
    lines += table("derivatives and cross-entropy, ulp of the exact value", rest, paths, "ulp")
    lines += [""]
    terms = {k: v for k, v in rest.items() if "terms" in v[paths[0]]}
    lines += table("derivatives and cross-entropy gradient, ulp of the terms: "
                   "s(|v| + |<s,v>|), |g| + p|sum g|, s_i(d_ij + s_j), p + y",
                   terms, paths, "terms")
    lines += [""]
    cond = {k: v for k, v in rest.items() if "cond" in v[paths[0]]}
    lines += table("the products, ulp of the terms including the sum's own: "
                   "s(|v| + sum|s v|), |g| + p sum|g|", cond, paths, "cond")
    if spots:
        lines += ["", f"mpmath spot checks ({digits} digits): the worst case (in ulp of the "
                  f"exact value) of each line above, on the {paths[0]} path", "-" * 72]
        lines += format_table(
            ["function", "dtype", "regime", "vs oracle", "oracle err", "vs mpmath"],
            [[name, dtype, regime, fmt(vs_oracle), fmt(oracle_err), fmt(vs_mp)]
             for name, dtype, regime, vs_oracle, oracle_err, vs_mp in spots],
            widths=[20, 8, 13, 10, 11, 10], align="<<<>>>", sep=" ", rule=None)
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000,
                        help="inputs per regime and dtype (default 10**6)")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-mpmath", action="store_true",
                        help="skip the mpmath spot checks of the worst cases")
    args = parser.parse_args(argv)

    mp = None
    if not args.no_mpmath:
        try:
            import mpmath
            mp = mpmath.mp
            mp.dps = 40
        except ImportError:
            print("mpmath not installed: no spot checks", file=sys.stderr)

    paths = _backend.supported_paths()
    started = time.perf_counter()
    results, spots = measure(args.n, args.seed, paths, mp)
    text = report(results, spots, paths, args.n, args.seed, mp.dps if mp else None)
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
