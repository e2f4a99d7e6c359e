"""Numerics at the edges of the floating-point range, for all functions but logsumexp.

docs/api.rst, sections Special values and Accuracy: stable for any finite input, -inf
masks give exactly 0 (log -inf), a bad row is NaN and leaves the others alone,
results within a few ulp, sums that do not drift with n.  test_forward.py
pins these down for softmax and log_softmax on ordinary data; here every
function (float32 and float64) meets, one category at a time:

- subnormal inputs, and outputs in the subnormal range (held to an absolute
  bound of a few subnormal steps, so flushing them to 0 fails);
- +-max finite inputs;
- -inf masks: exact zeros, exact -inf, and the gradients at masked entries;
- NaN, +inf and all -inf rows: isolated, the other rows bit-exact;
- n = 1, and rows where exp underflows to 0 for all but one entry (exact
  results);
- cross-entropy's zero-probability targets;
- how far a softmax row's sum may be from 1 (a bound derived below), up to
  one row of 10**7.

Accuracy is checked with the error budgets of _registry.py, against the
reference evaluated in higher precision (_registry.oracle).  Each case
runs on every SIMD path the CPU supports, and with 1 and 2 threads where
the row loops matter.
"""

import math
import warnings

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import reference as ref

from _registry import (BOUNDS, DERIVATIVE_BOUNDS, DERIVATIVE_NAMES, F32, F64, FORWARD_NAMES,
                       FUNCTIONS, GRAD_ULPS, LOSS_ULPS, assert_grad_close, assert_loss_close,
                       assert_ulp_close, check, check_derivative, logprobs, oracle, oracle_dtype,
                       oracle_xent, probs, quiet, representable, rows_of)

DTYPES = [pytest.param(F32, id="float32"), pytest.param(F64, id="float64")]

FORWARD = FORWARD_NAMES
# logsumexp reduces each row to one number, with special values of its own
# (a row of -inf gives -inf, +inf gives +inf): tests/test_logsumexp.py
ALL = [name for name in FUNCTIONS if name != "logsumexp"]
# softmax and log_softmax along axis 0 of a C-contiguous array take another
# kernel (columns, vectorised across them): the same cases run through it
COLUMNS = [f"{name}-axis0" for name in FORWARD]
CASES = ALL + COLUMNS

# 37 elements: a vector body plus a scalar tail for every SIMD width
N = 37


def base(name):
    """The function's name without the -axis0 variant suffix."""
    return name.removesuffix("-axis0")


def subnormal_step(dtype):
    """The spacing of the subnormal numbers, eps * tiny (2**-149, 2**-1074)."""
    return float(np.finfo(dtype).smallest_subnormal)


def tiny(dtype):
    return float(np.finfo(dtype).tiny)


def big(dtype):
    return np.finfo(dtype).max


# --------------------------------------------------------------------------
# Every function as "inputs made from logits, and a call"
# --------------------------------------------------------------------------

def make_inputs(name, x, rng):
    """The inputs of `name` for logits x (rows, n): _registry's, with a
    standard normal v or g (probability-target weights: its magnitudes)."""
    other = rng.standard_normal(x.shape).astype(x.dtype)
    return FUNCTIONS[base(name)].from_logits(x, other, -1)


# columns per call of the column kernel: more than one of its tiles of 128
# columns, the last one partial
MIN_COLUMNS = 130


def call(name, inputs):
    """The results of `name` as a tuple of arrays, one batch row per index.

    For a -axis0 variant, the rows of x become the columns of a C-contiguous
    array reduced along axis 0, repeated to fill MIN_COLUMNS columns.  Each
    column has its own max and sums, computed by the same operations in
    whichever vector lane or tile it lands, so the copies must come out
    identical.
    """
    if name in COLUMNS:
        x = inputs[0]
        copies = -(-MIN_COLUMNS // len(x))
        columns = np.ascontiguousarray(np.tile(x, (copies, 1)).T)
        result = getattr(fs, base(name))(columns, axis=0).T.reshape(copies, *x.shape)
        for copy in result[1:]:
            np.testing.assert_array_equal(copy, result[0], strict=True)
        return (result[0],)
    return FUNCTIONS[name].run(inputs)


def check_close(name, results, inputs):
    """Each result within its function's error budget of the oracle.

    On top of those budgets, a subnormal result cannot be closer than the
    subnormal grid: a floor of `tiny` makes the unit one subnormal step
    (eps * tiny) there.  Where a kernel multiplies an exp that was rounded
    on that grid by a factor (|sum g| in log_softmax_vjp, sum(t) in the
    cross-entropy gradient), the step is multiplied by the same factor;
    where it adds n products that may each be rounded on it (the float64
    loss, sum_j t_j (x_j - m)), by n.
    """
    name, dtype = base(name), results[0].dtype
    high = [np.asarray(a, oracle_dtype(dtype)) for a in inputs]
    with quiet():
        if name in FORWARD:
            func, reference = getattr(fs, name), getattr(ref, name)
            check(results[0], representable(oracle(reference, *inputs), dtype), func, dtype)
        elif name in DERIVATIVE_NAMES:
            grid = tiny(dtype)
            if name == "log_softmax_vjp":
                grid = grid * np.maximum(1, np.abs(high[1].sum(-1, keepdims=True)))
            check_derivative(name, results[0], inputs, -1, grid)
        else:
            loss, grad = results
            expected_loss, expected_grad = oracle_xent(*inputs, -1, "none", high[0].dtype)
            x, t = rows_of(*inputs, -1, high[0].dtype)
            assert_loss_close(loss, representable(expected_loss, dtype), x, t, "none", dtype,
                              grid=tiny(dtype) * x.shape[-1])
            grid = tiny(dtype) * np.maximum(1, np.abs(t.sum(-1, keepdims=True)))
            assert_grad_close(grad, expected_grad, x, t, -1, 1.0, grid)


def run_checked(name, x, rng):
    """(inputs, results) of `name` on inputs made from logits x, the results
    checked against the oracle."""
    inputs = make_inputs(name, x, rng)
    results = call(name, inputs)
    check_close(name, results, inputs)
    return inputs, results


# --------------------------------------------------------------------------
# Subnormal numbers
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_subnormal_inputs(name, dtype, simd_path, rng):
    # Subnormal values mixed with normal ones, signed zeros, and a row of
    # subnormals only, in every input: logits, s (for the Jacobian: any
    # numbers will do), v, g and target weights.  Where the results are
    # subnormal too (the all-subnormal row of v, g, s or t), a kernel that
    # treats subnormal inputs as zero (DAZ) returns 0 and fails the bounds;
    # for the logits, the test checks the max and the shifts of tiny values.
    step = subnormal_step(dtype)
    sub = rng.random((4, N)) < 0.4
    sub[2] = True
    k = rng.integers(1, 2 ** 20, size=(4, N)) * rng.choice([-1, 1], size=(4, N))
    x = rng.standard_normal((4, N)).astype(dtype)
    x[sub] = (k * step)[sub]
    x[1, :3] = [0.0, -0.0, step]
    inputs = make_inputs(name, x, rng)
    if base(name) not in FORWARD:
        # (the logits of the cross-entropy are x itself)
        a = inputs[0] if name == "softmax_jacobian" else inputs[1]
        values = (k * step)[sub]
        a[sub] = np.abs(values) if name in ("softmax_jacobian", "softmax_cross_entropy") \
            else values
    check_close(name, call(name, inputs), inputs)


def subnormal_logits(dtype):
    """Rows whose softmax spans normal, subnormal and underflowed (0) values.

    x - max runs over [log(eps * tiny) - 2, log(tiny) + 10]: the smallest
    entries underflow to 0, the next ones are subnormal with only a few
    significant bits, the last few are normal.  Row 1 is row 0 shifted by
    +50 (the max is not 0), row 2 has three entries at the max.
    """
    low = math.log(subnormal_step(dtype)) - 2
    high = math.log(tiny(dtype)) + 10
    row = np.concatenate([[0.0], np.linspace(low, high, N - 1)])
    x = np.stack([row, row + 50, row]).astype(dtype)
    x[2, [5, 20, 36]] = 0
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_subnormal_outputs(name, dtype, simd_path, rng):
    # Probabilities (and Jacobian entries, JVPs, gradients) in the subnormal
    # range: right to a few subnormal steps, not flushed to 0.
    x = subnormal_logits(dtype)
    inputs, results = run_checked(name, x, rng)
    if base(name) == "softmax":
        s, exact = results[0], oracle(ref.softmax, x)
        step = subnormal_step(dtype)
        assert ((0 < s) & (s < tiny(dtype))).sum() >= 10, "the case has subnormal results"
        # the budget allows 3 steps of error; anything exactly above that
        # must have survived
        ulps, _ = BOUNDS[("softmax", dtype.type)]
        assert (s[exact > (ulps + 1) * step] > 0).all(), "a subnormal result was flushed to 0"


# (k, value): the tail terms exp(value) are subnormal; their sum is either
# subnormal too (l_0 a subnormal number) or a normal number
TINY_TAILS = {F32: [(1000, -95.0), (10**4, -90.0), (3, -103.0)],
              F64: [(1000, -720.0), (10**4, -712.0), (3, -744.0)]}


@pytest.mark.parametrize("axis", [-1, 0], ids=["row", "column"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_near_zero_with_a_subnormal_tail(dtype, axis, simd_path):
    # log_softmax at the max of a row whose other terms are tiny: l_0 =
    # -log1p(tail) ~ -tail.  Each tail term exp(x_j - m) rounded on the
    # subnormal grid would be off by up to half a step, k/2 steps in all;
    # the kernels recompute such a tail from exps scaled by 2^64 (2^128),
    # so l_0 is held to the usual 2 ulp (floor: the subnormal step).
    for k, value in TINY_TAILS[dtype]:
        x = np.full(k + 1, value, dtype)
        x[0] = 0
        if axis == 0:                      # the column kernel: 16 columns
            x = np.repeat(x[:, None], 16, axis=1)
        logp = fs.log_softmax(x, axis=axis)
        exact = oracle(ref.log_softmax, x, axis=axis)
        assert logp.flat[0] < 0, "flushed to 0"
        assert_ulp_close(logp, exact, dtype.type, 2)


# --------------------------------------------------------------------------
# +-max finite inputs
# --------------------------------------------------------------------------

def extreme_logits(dtype):
    """Rows holding +-max among ordinary values.  x - max may overflow
    (-max - max = -inf in the dtype): softmax is still exact, log_softmax
    rounds to -inf where its exact value is beyond the range."""
    m = big(dtype)
    x = np.tile(np.linspace(-3, 3, N), (5, 1)).astype(dtype)
    x[0, [0, 17]] = [m, -m]
    x[1, :] = -m                          # all equal: 1/n each
    x[2, [3, 36]] = m                     # two at the max: 1/2 each
    x[3, [1, 20, 36]] = -m                # -max among ordinary values
    x[4, [0, 36]] = [-m, m]
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FORWARD + COLUMNS + ["softmax_cross_entropy"])
def test_extreme_logits(name, dtype, simd_path, rng):
    # (test_forward checks a 2-element version on the default path; for
    # float64 cross-entropy, sum_j t_j (x_j - m) over several x_j - m ~ -max
    # overflows: the compensated sum must then give inf, not NaN)
    x = extreme_logits(dtype)
    inputs, results = run_checked(name, x, rng)
    if base(name) == "softmax":
        np.testing.assert_array_equal(results[0][1], np.full(N, results[0][1, 0]))
        assert results[0][2, 3] == results[0][2, 36] == 0.5


def extreme_vectors(dtype, shape, rng):
    """v or g with +-max entries.  float32: half of all entries (the kernels
    sum and subtract in double, which cannot overflow).  float64: one entry
    per row, +max or -max: the products and sums then stay in range (two
    extremes could overflow <s, v>, sum(g) or v_j - <s, v> in double:
    test_float64_overflowing_sums_give_no_nan)."""
    m = big(dtype)
    v = rng.standard_normal(shape).astype(dtype)
    if dtype == F32:
        v[rng.random(shape) < 0.25] = m
        v[rng.random(shape) < 0.25] = -m
    else:
        rows = np.arange(shape[0])
        v[rows, rng.integers(0, shape[1], shape[0])] = np.where(rows % 2, -m, m)
    return v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax_jvp", "softmax_vjp", "log_softmax_vjp"])
def test_extreme_vectors(name, dtype, simd_path, rng):
    # |s_j (v_j - <s, v>)| <= max/2 for a probability vector s, so the JVP
    # of +-max vectors is representable; log_softmax_vjp may round to +-inf
    # (g_j - p_j sum(g) beyond the range), and must then match the oracle's
    # infinity.
    x = 2 * rng.standard_normal((4, N)).astype(dtype)
    inputs = make_inputs(name, x, rng)
    inputs[1] = extreme_vectors(dtype, x.shape, rng)
    results = call(name, inputs)
    if name != "log_softmax_vjp":
        assert np.isfinite(results[0]).all()
    check_close(name, results, inputs)


def overflow_cases():
    """float64 calls without a NaN or inf input whose sums overflow.  48
    equal terms: however a kernel splits the sum into partial sums, some of
    them overflow.  (A compensated sum whose partial sum overflows must not
    keep an infinite carry: inf - inf would be NaN.)"""
    m, n = big(F64), 48
    rows_of_huge_loss = np.tile([[0.0, -1e308]], (n, 1))   # loss 1e308 per row
    far = np.tile([0.0, -1e308, -1e308], n // 3)[None]
    far_target = np.tile([0.0, 1.0, 1.0], n // 3)[None]
    return {
        # s sums to just above 1 (1 + 1.7e-16), as a rounded softmax row
        # may: <s, v> overflows.  Exact J v = s max (1 - sum s), about
        # -6e290; -inf is acceptable, the dot overflowed
        "softmax_jvp": lambda: fs.softmax_jvp(np.full(n, np.nextafter(1 / n, 1)),
                                              np.full(n, m)),
        # sum(g) = 48 max.  Exact: max (1 - 48 p) with p = exp(log(1/48)), finite
        "log_softmax_vjp": lambda: fs.log_softmax_vjp(np.full(n, np.log(1 / n)),
                                                      np.full(n, m)),
        # sum_j t_j (x_j - m) = -32e308: the loss is +inf
        "cross_entropy_row": lambda: fs.softmax_cross_entropy(far, far_target),
        # the sum of the rows' losses, 48e308: +inf; their mean, 1e308
        "cross_entropy_sum": lambda: fs.softmax_cross_entropy(
            rows_of_huge_loss, np.ones(n, np.int64), reduction="sum"),
        "cross_entropy_mean": lambda: fs.softmax_cross_entropy(
            rows_of_huge_loss, np.ones(n, np.int64), reduction="mean"),
    }


@pytest.mark.parametrize("case", list(overflow_cases()))
def test_float64_overflowing_sums_give_no_nan(case, simd_path):
    # A partial sum beyond the range may cost the result (it becomes
    # +-inf), but must not turn into NaN.  (float32 data are summed in
    # double, which these sums cannot overflow.)
    run = overflow_cases()[case]
    with quiet():
        result = run()
    assert not np.isnan(result).any()


# --------------------------------------------------------------------------
# -inf masks
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(8, N), (1, 1000)], ids=["rows", "one-split-row"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_masks(name, dtype, shape, simd_path, threads, rng):
    # About half the entries masked (-inf); every row keeps a finite entry.
    # (1, 1000) is split across the threads by the `threads` fixture.
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    mask = rng.random(shape) < 0.5
    mask[:, rng.integers(0, shape[1])] = False
    x[mask] = -np.inf
    inputs, results = run_checked(name, x, rng)
    r = results[0]
    if base(name) == "softmax":
        assert (r[mask] == 0).all()
    elif base(name) == "log_softmax":
        assert (r[mask] == -np.inf).all()
    elif name == "softmax_jacobian":
        # s_j = 0 makes row j and column j of J exactly 0
        rows, cols = np.broadcast_arrays(mask[:, :, None], mask[:, None, :])
        assert (r[rows | cols] == 0).all()
    elif name in ("softmax_jvp", "softmax_vjp"):
        assert (r[mask] == 0).all()
    elif name == "log_softmax_vjp":
        # exp(-inf) = 0: the gradient passes g through unchanged
        np.testing.assert_array_equal(r[mask], inputs[1][mask])
    else:
        loss, grad = results
        assert np.isfinite(loss).all(), "0 * log 0 must add 0, not NaN"
        assert (grad[mask] == 0).all()


# --------------------------------------------------------------------------
# NaN, +inf and all -inf rows stay in their row
# --------------------------------------------------------------------------

BAD_ROWS = [0, 3, 6]  # first, middle, last of 7 rows
BAD_COLUMNS = [0, N // 2, N - 1]


def spoil(a, bad):
    """Put the bad value in rows BAD_ROWS of a (in place): one entry per row
    (first, middle, last column), or the whole row for "all -inf"."""
    for row, col in zip(BAD_ROWS, BAD_COLUMNS):
        if bad == "all -inf":
            a[row] = -np.inf
        else:
            a[row, col] = {"nan": np.nan, "+inf": np.inf}[bad]


ISOLATION_CASES = (
    # the bad value in the logits, before the forward pass: the derivatives
    # then get a NaN row of s or logp, as backprop would
    [pytest.param(name, "logits", bad, id=f"{name}-logits-{bad}")
     for name in CASES for bad in ["nan", "+inf", "all -inf"]]
    # in v or g themselves
    + [pytest.param(name, "vector", bad, id=f"{name}-vector-{bad}")
       for name in ["softmax_jvp", "softmax_vjp", "log_softmax_vjp"]
       for bad in ["nan", "+inf", "all -inf"]]
    # a NaN target weight
    + [pytest.param("softmax_cross_entropy", "vector", "nan",
                    id="softmax_cross_entropy-target-nan")])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, where, bad", ISOLATION_CASES)
def test_bad_values_stay_in_their_row(name, where, bad, dtype, simd_path, threads):
    x = np.random.default_rng(1).standard_normal((7, N)).astype(dtype)
    clean = make_inputs(name, x, np.random.default_rng(2))
    if where == "logits":
        x = x.copy()
        spoil(x, bad)
    inputs = make_inputs(name, x, np.random.default_rng(2))  # the same v, g, t
    if where == "vector":
        spoil(inputs[1], bad)
    good = [i for i in range(7) if i not in BAD_ROWS]
    with quiet():
        results = call(name, inputs)
        expected = call(name, clean)
        # and without the bad rows at all (the column kernel's lanes would
        # then hold other columns: there the rows stay in place)
        alone = None if name in COLUMNS else call(name, [a[good] for a in inputs])
    for i, result in enumerate(results):
        # the other rows: bit for bit what they are with clean bad rows
        np.testing.assert_array_equal(result[good], expected[i][good], strict=True)
        if alone is not None:
            np.testing.assert_array_equal(result[good], alone[i], strict=True)
        spoilt = result[BAD_ROWS]
        if where == "logits" or bad == "nan":
            # docs/api.rst, section Special values:
            # "yields NaN in every entry of that row"; a NaN row of
            # s or logp, or a NaN in v or g (via <s, v> or sum(g)), does
            # the same to the derivatives
            assert np.isnan(spoilt).all()
        else:
            # +inf or -inf in v or g: <s, v> or sum(g) is infinite, so no
            # entry of the row is finite (inf - inf gives NaN in some)
            assert not np.isfinite(spoilt).any()


# --------------------------------------------------------------------------
# n = 1, and rows where exp underflows for all but one entry: exact results
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_one_element_rows(name, dtype, simd_path, rng):
    # softmax([x]) = [1], log_softmax = [0] exactly for any finite x, so
    # J = s (1 - s) = 0, J v = 1 (v - 1 v) = 0, g - exp(0) sum(g) = g - g
    # = 0, and the loss t log 1 = 0 with gradient 1 t - t = 0; a NaN, +inf
    # or -inf "row" is NaN.
    step, m = subnormal_step(dtype), big(dtype)
    values = [0.0, 1.5, -3e3, m, -m, step, -step, np.nan, np.inf, -np.inf]
    x = np.array(values, dtype)[:, None]
    inputs = make_inputs(name, x, rng)
    if len(inputs) > 1 and name != "softmax_cross_entropy":
        inputs[1][:4, 0] = [m, -m, step, 0.0]
    results = call(name, inputs)
    bad = np.isnan(x[:, 0]) | np.isinf(x[:, 0])
    value = {"softmax": 1.0}.get(base(name), 0.0)
    for r in results:
        expected = np.where(bad.reshape((-1,) + (1,) * (r.ndim - 1)), np.nan, value)
        np.testing.assert_array_equal(r, np.broadcast_to(expected, r.shape).astype(dtype),
                                      strict=True)
    # with class indices: loss 0, gradient 0
    if name == "softmax_cross_entropy":
        loss, grad = fs.softmax_cross_entropy(x, np.zeros(len(x), np.int64),
                                              reduction="none", return_grad=True)
        np.testing.assert_array_equal(loss, np.where(bad, np.nan, 0).astype(dtype))
        np.testing.assert_array_equal(grad, np.where(bad, np.nan, 0)[:, None].astype(dtype))


def dominated_logits(dtype, rng):
    """4 rows whose max (5, at a different place in each row) beats every
    other entry by more than the exp's underflow threshold (104 for
    float32, 746 for float64): integer gaps, and -max."""
    lowest = {F32: -110, F64: -750}[dtype]
    x = (5 + rng.integers(100 * lowest, lowest, size=(4, N))).astype(dtype)
    x[:, [9, 30]] = -big(dtype)
    where = np.array([0, 17, N - 1, 5])
    x[np.arange(4), where] = 5
    return x, where


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_all_but_one_exp_underflows(name, dtype, simd_path, rng):
    x, where = dominated_logits(dtype, rng)
    rows = np.arange(4)
    onehot = np.zeros(x.shape, dtype)
    onehot[rows, where] = 1
    # x - max rounded once in the dtype (double rounding through the
    # float32 kernels' double arithmetic gives the same here)
    shifted = x - x.max(-1, keepdims=True)
    inputs, results = run_checked(name, x, rng)
    r = results[0]
    exact = {
        "softmax": onehot,                                  # 1, and exp(...) = 0
        "log_softmax": shifted,                             # log(1 + 0) = 0
        "softmax_jacobian": np.zeros(r.shape, dtype),       # s_i (d_ij - s_j)
        "softmax_jvp": np.zeros(r.shape, dtype),            # 1 (v_k - v_k), 0 (...)
        "softmax_vjp": np.zeros(r.shape, dtype),
    }
    if base(name) in exact:
        np.testing.assert_array_equal(r, exact[base(name)], strict=True)
    elif name == "log_softmax_vjp":
        # exp(logp_j) = 0 for j != k: g_j passes unchanged
        others = onehot == 0
        np.testing.assert_array_equal(r[others], inputs[1][others])
    else:
        # the target's weight at the max adds 0; class indices: at the max
        # loss 0 and gradient 0, elsewhere loss max - x_j (exactly) and
        # gradient onehot(max) - onehot(j)
        loss_at_max, grad_at_max = fs.softmax_cross_entropy(
            x, where, reduction="none", return_grad=True)
        assert (loss_at_max == 0).all() and (grad_at_max == 0).all()
        other = np.array([1, 18, 0, 9])  # 9 holds -max
        loss, grad = fs.softmax_cross_entropy(x, other, reduction="none", return_grad=True)
        gap = x[rows, where].astype(np.float64) - x[rows, other].astype(np.float64)
        np.testing.assert_array_equal(loss, gap.astype(dtype))
        expected_grad = onehot.copy()
        expected_grad[rows, other] = -1
        np.testing.assert_array_equal(grad, expected_grad, strict=True)


# --------------------------------------------------------------------------
# Cross-entropy: zero-probability targets
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_zero_probabilities(dtype, simd_path):
    # Row 0: zero weight on a -inf logit (0 log 0 = 0, not NaN) and on a
    # finite one (0 * finite = 0).  Row 1: a positive weight on a finite
    # logit whose probability underflows to 0: its log-probability is
    # finite (-1000), so is the loss, not +inf.  Row 2: the same with a
    # class index.  The gradient at a -inf logit is exactly 0.
    x = np.array([[0.0, -np.inf, 1.0, 2.0],
                  [0.0, -1000.0, -np.inf, 0.0],
                  [0.0, -1000.0, -np.inf, 0.0]], dtype)
    t = np.array([[0.25, 0.0, 0.0, 0.75],
                  [0.0, 0.5, 0.0, 0.5],
                  [0.0, 1.0, 0.0, 0.0]], dtype)
    loss, grad = fs.softmax_cross_entropy(x, t, reduction="none", return_grad=True)
    check_close("softmax_cross_entropy", (loss, grad), [x, t])
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    assert (grad[np.isneginf(x)] == 0).all()
    # rows 1 and 2: log_softmax = [-log 2, -1000 - log 2, -inf, -log 2]
    log2 = math.log(2)
    np.testing.assert_allclose(loss[1:], [0.5 * (1000 + log2) + 0.5 * log2, 1000 + log2],
                               rtol=2 * np.finfo(dtype).eps)
    # the gradient at the underflowed class is p - 1 = -1 exactly
    assert grad[2, 1] == -1 and grad[1, 1] == -0.5


# --------------------------------------------------------------------------
# Row sums
# --------------------------------------------------------------------------
# softmax stores y_j = exp(x_j - m) rounded to the dtype, sums the stored
# y_j into T, and returns s_j = y_j / T rounded once (up to a relative
# ~2**-47 from forming the factor 1/T).  The exp's own errors therefore
# cancel in sum_j s_j -- they change T exactly as they change the y_j --
# and what is left is
#
#   sum_j s_j = (S_y / T) (1 + r),   |r| <= u + (factor's error),
#
# S_y the exact sum of the y_j, r a p-weighted mean of the final roundings,
# u = eps/2.  So |sum s - 1| <= |T/S_y - 1| + u + (factor's error):
#
# float32: T is summed in double.  A double sum of n positive terms errs by
#   at most (n - 1) 2**-53 relative whatever its order, and the factor by
#   ~2**-47: |sum s - 1| <= eps32/2 + n 2**-53 + 2**-45 -- half an ulp for
#   any n up to ~10**7 (the n term is then 1e-9, 2% of eps32/2).
# float64: T is a compensated (Kahan) sum, relative error <= 2u = eps; the
#   factor: 1/T rounded, 0.5 eps (the FMA builds carry its remainder: ~0);
#   the final rounding, 0.5 eps; a row split across 2 threads adds the
#   products and the addition of the chunk sums, 1 eps: 3 eps.
# Subnormal s_j are rounded on an absolute grid: + n steps / 2.
# A naive sum of n terms in the dtype would err by up to ~n eps/2.
# The deviation sum(s) - 1 itself is evaluated exactly, with math.fsum.

def row_sum_bound(dtype, n):
    if dtype == F32:
        return np.finfo(np.float32).eps / 2 + n * 2.0 ** -53 + 2.0 ** -45 + n * 2.0 ** -150
    return 3 * np.finfo(np.float64).eps + n * 2.0 ** -1075


ROW_SUM_CASES = {
    "normal": lambda rng, n: 3 * rng.standard_normal(n),
    "wide": lambda rng, n: 30 * rng.standard_normal(n),
    "near-uniform": lambda rng, n: 1e-3 * rng.random(n),
    "masked": lambda rng, n: np.where(rng.random(n) < 0.5, -np.inf, rng.standard_normal(n)),
    "subnormal tail": lambda rng, n: rng.uniform(-800, 0, n),
}


@pytest.mark.parametrize("name, n", [(name, n) for name in ["softmax", "softmax-axis0"]
                                     for n in [2, 7, N, 1000, 20_000]
                                     if n < 20_000 or name == "softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_sum_to_one(name, dtype, n, simd_path, threads):
    rng = np.random.default_rng(n)
    for case, make in ROW_SUM_CASES.items():
        x = np.stack([make(rng, n) for _ in range(3)]).astype(dtype)
        x[:, 0] = 0  # keeps a finite entry in masked rows
        batches = [x]
        if n >= 1000 and name == "softmax":
            batches.append(x[:1])  # one row: split across the threads
        for batch in batches:
            with quiet():
                (s,) = call(name, [batch])
            bound = row_sum_bound(dtype, n)
            for row in s:
                deviation = math.fsum(row.astype(np.float64).tolist() + [-1.0])
                assert abs(deviation) <= bound, (
                    f"{case}: |sum - 1| = {abs(deviation):.3g} > {bound:.3g}")


# --------------------------------------------------------------------------
# One row of 10**7
# --------------------------------------------------------------------------
# The row is a block of 10**4 logits repeated 1000 times: the exact results
# are those of the block (softmax / 1000, log_softmax - log 1000, <s, v> and
# sum(g) times 1000), so the oracle runs on 10**4 values, while the kernels
# see one row of 10**7 (split across threads where there are several).  The
# per-entry check takes the smallest and largest of the 1000 copies of each
# entry, which differ only by the rounding of their chunk.

HUGE, BLOCK = 10 ** 7, 10 ** 4
COPIES = HUGE // BLOCK


def huge_row(dtype, rng):
    block = (3 * rng.standard_normal(BLOCK)).astype(dtype)
    return block, np.tile(block, COPIES)


def copies_extremes(result):
    """The smallest and largest of the copies of each block entry."""
    copies = result.reshape(COPIES, BLOCK)
    return copies.min(0), copies.max(0)


@pytest.mark.large
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FORWARD)
def test_one_row_of_ten_million(name, dtype, threads, rng):
    block, x = huge_row(dtype, rng)
    result = getattr(fs, name)(x)
    high = oracle_dtype(dtype)
    with quiet():
        if name == "softmax":
            expected = ref.softmax(block.astype(high)) / COPIES
        else:
            expected = ref.log_softmax(block.astype(high)) - np.log(high(COPIES))
    for extreme in copies_extremes(result):
        check(extreme, expected, getattr(fs, name), dtype)
    if name == "softmax":
        # the bound derived above for the row sum; the check sum adds its
        # own error: NumPy's pairwise sum in double (float32 data) or long
        # double (float64), <= (16 + log2(n / 128)) u < 24 eps of that type
        total = result.sum(dtype=np.float64 if dtype == F32 else np.longdouble)
        checker = 24 * np.finfo(np.float64 if dtype == F32 else np.longdouble).eps
        assert abs(float(total - 1)) <= row_sum_bound(dtype, HUGE) + checker


@pytest.mark.large
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax_jvp", "log_softmax_vjp", "softmax_cross_entropy"])
def test_one_row_of_ten_million_derivatives(name, dtype, rng):
    # at the default thread count (several threads split the row for the
    # products; the cross-entropy runs one row per thread)
    block, x = huge_row(dtype, rng)
    high = oracle_dtype(dtype)
    other_block = rng.standard_normal(BLOCK).astype(dtype)
    other = np.tile(other_block, COPIES)
    with quiet():
        if name == "softmax_jvp":
            s_block = (probs(block) / COPIES).astype(dtype)  # sum(s) ~ 1
            s = np.tile(s_block, COPIES)
            result = fs.softmax_jvp(s, other)
            sb, vb = s_block.astype(high), other_block.astype(high)
            expected = sb * (vb - COPIES * np.sum(sb * vb))
            terms = sb * (np.abs(vb) + COPIES * np.sum(np.abs(sb * vb)))
        elif name == "log_softmax_vjp":
            logp_block = logprobs(block) - dtype.type(np.log(COPIES))  # ~ a row of 10**7
            result = fs.log_softmax_vjp(np.tile(logp_block, COPIES), other)
            pb, gb = np.exp(logp_block.astype(high)), other_block.astype(high)
            expected = gb - pb * COPIES * np.sum(gb)
            terms = np.abs(gb) + pb * COPIES * np.sum(np.abs(gb))
        else:
            t_block = np.abs(other_block)
            loss, result = fs.softmax_cross_entropy(x[None], np.tile(t_block, COPIES)[None],
                                                    reduction="none", return_grad=True)
            result = result[0]
            xb, tb = block.astype(high), t_block.astype(high)
            logp = ref.log_softmax(xb) - np.log(high(COPIES))
            expected_loss = -COPIES * np.sum(tb * logp)
            loss_floor = COPIES * np.sum(tb * (np.abs(logp) + 1))
            # floor: the loss budget's M = sum t (1 + |logp|) (_registry.py)
            assert_ulp_close(loss, [expected_loss], dtype.type, LOSS_ULPS[dtype],
                             floor=loss_floor)
            p = ref.softmax(xb) / COPIES
            expected = p * COPIES * np.sum(tb) - tb
            terms = p * COPIES * np.sum(tb) + tb
    if name == "softmax_cross_entropy":
        ulps, scale = GRAD_ULPS[dtype], 1.0
    else:
        ulps, scale = DERIVATIVE_BOUNDS[name][dtype]
    if dtype == F32:
        # the budget's float32 floor (2**-16 of the terms) counts on
        # short rows; float32 data are summed in plain double, and a sum of
        # n terms errs by at most (n - 1) 2**-53 of their magnitudes in any
        # order: for <s, v> that is n 2**-30 eps32 of the terms
        scale = max(scale, HUGE * 2.0 ** -53 / float(np.finfo(np.float32).eps))
    for extreme in copies_extremes(result):
        assert_ulp_close(extreme, expected, dtype.type, ulps,
                         floor=np.maximum(scale * terms, tiny(dtype)))


# float16 results beyond float16's range are +-inf, as the kernels' own
# float32/float64 results are, and like those come without NumPy's cast
# warning: on the row path, the column path, into out, and the Jacobian.
@pytest.mark.parametrize("call", ["rows", "columns", "out", "jacobian"])
def test_float16_overflow_is_inf_without_a_warning(call):
    big16 = float(np.finfo(np.float16).max)
    x = np.zeros((3, 16), np.float16)
    x[0, :2] = [big16, -big16]              # log-probability -2 max: beyond the range
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if call == "rows":
            r = fs.log_softmax(x)[0, 1]
        elif call == "columns":                 # inner size 16: the column kernel
            cols = np.zeros((3, 16), np.float16)
            cols[:2, 0] = [big16, -big16]
            r = fs.log_softmax(cols, axis=0)[1, 0]
        elif call == "out":
            out = np.empty((3, 16), np.float16)
            r = fs.log_softmax(x, out=out)[0, 1]
        else:                               # J[0, 0] = s_0 (1 - s_0) = -89700
            s = np.zeros((3, 16), np.float16)
            s[0, 0] = 300.0
            r = fs.softmax_jacobian(s)[0, 0, 0]
    assert r == -np.inf
