"""softmax_cross_entropy (docs/api.rst, section Fused loss).

test_equivalence.py runs it against the reference in higher precision over
target kinds, dtypes, reductions, shapes and axes, within the budgets
derived in _registry.py; here: result dtypes, identities, finite
differences, special values and errors particular to the loss.
"""

import re

import numpy as np
import pytest

import fastsoftmax as fs
import fastsoftmax.nn
from fastsoftmax import reference as ref
from fastsoftmax.testing import check_grad

from _registry import (EPS, F16, F32, F64, GRAD_ULPS, LOSS_ULPS, REDUCTIONS, assert_grad_close,
                       assert_loss_close, assert_ulp_close, cross_entropy_logits, grad_terms,
                       high_dtype, loss_terms, rows_of)
from _registry import target_for


# --------------------------------------------------------------------------
# Empty batch, dtypes of the results
# --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch(kind, dtype):
    # docs/api.rst, section Fused loss: ""mean" over an empty batch is NaN, "sum" is 0."
    logits = np.zeros((0, 4), dtype)
    target = np.zeros(0, np.int64) if kind == "index" else np.zeros((0, 4), dtype)
    mean = fs.softmax_cross_entropy(logits, target)
    assert isinstance(mean, np.generic) and mean.dtype == dtype and np.isnan(mean)
    total, grad = fs.softmax_cross_entropy(logits, target, reduction="sum", return_grad=True)
    assert isinstance(total, np.generic) and total.dtype == dtype and total == 0
    assert grad.shape == (0, 4) and grad.dtype == dtype
    none = fs.softmax_cross_entropy(logits, target, reduction="none")
    assert none.shape == (0,) and none.dtype == dtype


@pytest.mark.parametrize("logits_dtype, target_dtype, compute, grad_dtype", [
    (np.float32, np.int64, F32, F32),
    (np.float64, np.int32, F64, F64),
    (np.float16, np.int64, F32, F16),
    (np.int64, np.int64, F64, F64),
    (np.int32, np.uint8, F64, F64),
    (np.float32, np.float32, F32, F32),
    (np.float32, np.float64, F64, F64),
    (np.float16, np.float16, F32, F16),
    (np.float16, np.float32, F32, F32),
    (np.int64, np.float32, F64, F64),
])
def test_result_dtypes(logits_dtype, target_dtype, compute, grad_dtype, rng):
    # docs/api.rst, section Fused loss:
    # ""mean"/"sum" return a NumPy scalar of the computation dtype"
    # docs/api.rst, section Fused loss: "an array of the batch shape" ("none")
    logits = cross_entropy_logits(rng, (3, 4), logits_dtype)
    if np.dtype(target_dtype).kind in "iu":
        target = np.array([0, 3, 1], target_dtype)
    else:
        target = rng.random((3, 4)).astype(target_dtype)
    for reduction in ("mean", "sum"):
        loss, grad = fs.softmax_cross_entropy(logits, target, reduction=reduction,
                                              return_grad=True)
        assert isinstance(loss, np.generic) and loss.dtype == compute
        assert isinstance(grad, np.ndarray) and grad.shape == (3, 4)
        assert grad.dtype == grad_dtype
    loss = fs.softmax_cross_entropy(logits, target, reduction="none")
    assert isinstance(loss, np.ndarray) and loss.shape == (3,) and loss.dtype == compute


def test_zero_d_logits_with_a_probability_target():
    # docs/api.rst, section Fused loss: "of a floating dtype it is probabilities with the shape of
    #          logits"; a 0-d logits array is one row of one class, so its
    #          probability target is 0-d too.  -0.75 * log_softmax(2.0) = 0.
    loss, grad = fs.softmax_cross_entropy(np.float64(2.0), np.float64(0.75),
                                          reduction="none", return_grad=True)
    assert loss.shape == () and loss == 0
    assert grad.shape == () and grad == 0  # softmax * 0.75 - 0.75


def test_zero_d_logits_with_a_one_element_target_is_a_shape_error():
    # docs/api.rst, section Errors: "Any other shape raises ValueError naming both shapes."
    with pytest.raises(ValueError):
        fs.softmax_cross_entropy(np.float64(2.0), np.array([0.75]))


def test_array_likes_and_defaults():
    # defaults: axis=-1, reduction="mean", return_grad=False
    loss = fs.softmax_cross_entropy([[0.0, 0.0], [0.0, 0.0]], [0, 1])
    assert isinstance(loss, np.generic)
    np.testing.assert_allclose(loss, np.log(2), rtol=1e-15)


# docs/api.rst, section Threads: "a single huge row is split across them
# too" and "a single row split across threads may differ by rounding only"
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked-chunk"])
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_row_split_across_threads(dtype, kind, masked, rng):
    # 200_003 >= SPLIT_ROW_MIN and 1 row < 2 threads: split with the
    # defaults.  masked: the first 150_000 logits are -inf (the target has
    # no weight there), so on 2 threads a whole chunk is -inf.
    n = 200_003
    logits = cross_entropy_logits(rng, (n,), dtype)
    target = target_for(rng, (n,), -1, kind, dtype)
    if masked:
        logits[:150_000] = -np.inf
        if kind == "index":
            target = np.int64(n - 7)
        else:
            target[:150_000] = 0
    hp = high_dtype(dtype)
    x, t = rows_of(logits, target, -1, hp)
    expected_loss = ref.softmax_cross_entropy(x, t, reduction="sum")
    expected_grad = ref.softmax(x) * t.sum() - t
    try:
        results = {}
        for threads in (1, 2, 3):
            fs.set_num_threads(threads)
            results[threads] = fs.softmax_cross_entropy(logits, target, reduction="sum",
                                                        return_grad=True)
    finally:
        fs.set_num_threads(None)
    for loss, grad in results.values():
        assert_loss_close(loss, expected_loss, x, t, "sum", np.dtype(dtype))
        assert_grad_close(grad, expected_grad, x, t, -1, 1.0)
        if masked:
            assert (grad[:150_000] == 0).all()


# --------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((6, 9), -1), ((3, 7, 4), 1), ((5,), 0)])
def test_index_targets_equal_one_hot_targets(shape, axis, dtype, reduction, rng):
    # docs/api.rst, section Fused loss: "for one-hot or index targets: s - y"
    logits = cross_entropy_logits(rng, shape, dtype)
    index = target_for(rng, shape, axis, "index", None)
    x, onehot_rows = rows_of(logits, index, axis, dtype)
    onehot = np.moveaxis(onehot_rows, -1, axis % len(shape)).reshape(shape)
    loss_i, grad_i = fs.softmax_cross_entropy(logits, index, axis, reduction=reduction,
                                              return_grad=True)
    loss_h, grad_h = fs.softmax_cross_entropy(logits, onehot, axis, reduction=reduction,
                                              return_grad=True)
    # The two losses are the same double-precision operations (T = 1 exactly,
    # and the weighted sum has one nonzero term): equal up to one rounding.
    hp = high_dtype(dtype)
    xh, th = rows_of(logits, index, axis, hp)
    terms = loss_terms(xh, th)
    floor = terms if reduction == "none" else terms.sum() if reduction == "sum" else terms.mean()
    assert_ulp_close(loss_i, loss_h, dtype, 1, floor)
    # The gradients differ only in the target's entry, where the index path
    # rounds p_c scale before subtracting scale: <= 0.5 ulp of p_c scale, and
    # each final rounding 0.5 ulp of |grad|: 1.5 ulp of max(|grad|, G).
    rows = x.size // x.shape[-1]
    scale = 1.0 / rows if reduction == "mean" else 1.0
    g_terms = np.moveaxis(grad_terms(xh, th, scale), -1, axis % len(shape))
    assert_ulp_close(grad_i, grad_h, dtype, 1.5, g_terms)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((4, 9), -1), ((3, 7, 4), 1)])
def test_grad_formula_with_unnormalised_targets(shape, axis, dtype, reduction, rng):
    # docs/api.rst, section Fused loss: "dlogits = softmax(logits) * sum(target) - target per row
    #          ..., divided by the row count for "mean""
    # docs/api.rst, section Fused loss:
    # "of a floating dtype it is probabilities ... (rows need not sum to 1)"
    logits = cross_entropy_logits(rng, shape, dtype)
    target = rng.random(shape)
    target /= target.sum(axis, keepdims=True)
    # rows summing to 2.5, 1, 0.3 and 0 ... (cycled over the batch)
    weights = np.resize([2.5, 1.0, 0.3, 0.0], target.size // shape[axis])
    weights = np.expand_dims(weights.reshape(np.delete(shape, axis)), axis)
    target = (target * weights).astype(dtype)
    _, grad = fs.softmax_cross_entropy(logits, target, axis, reduction=reduction,
                                       return_grad=True)
    hp = high_dtype(dtype)
    x, t = rows_of(logits, target, axis, hp)
    rows = x.size // x.shape[-1]
    p = ref.softmax(x, axis=-1)  # in high precision
    expected = p * t.sum(-1, keepdims=True) - t
    scale = 1.0 / rows if reduction == "mean" else 1.0
    expected = np.moveaxis(expected * scale, -1, axis)
    assert_grad_close(grad, expected, x, t, axis, scale)
    # rows of zero weight have loss 0 and gradient exactly 0
    zero_rows = np.moveaxis(t, -1, 0).sum(0) == 0
    loss = fs.softmax_cross_entropy(logits, target, axis, reduction="none")
    assert (loss[zero_rows] == 0).all()
    assert (np.moveaxis(grad, axis, -1)[zero_rows] == 0).all()


@pytest.mark.parametrize("scale", [2.5, 0.5, 7.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_is_linear_in_the_target(scale, dtype, rng):
    # docs/api.rst, section Fused loss:
    # "Loss per row: -sum(target * log_softmax(logits))" -- linear in
    # the target, so rows summing to `scale` give `scale` times the loss.
    logits = cross_entropy_logits(rng, (5, 8), dtype)
    target = rng.random((5, 8))
    target /= target.sum(-1, keepdims=True)
    base = fs.softmax_cross_entropy(logits, target.astype(dtype), reduction="none")
    scaled = fs.softmax_cross_entropy(logits, (scale * target).astype(dtype),
                                      reduction="none")
    hp = high_dtype(dtype)
    x, t = rows_of(logits, scale * target, -1, hp)
    # both within LOSS_ULPS of their exact values (scale*target rounds the
    # target by 0.5 ulp, which moves the loss by 0.5 ulp of M): sum of the two
    bound = (2 * LOSS_ULPS[np.dtype(dtype)] + 0.5) * EPS[np.dtype(dtype)] * loss_terms(x, t)
    assert (np.abs(scaled.astype(hp) - scale * base.astype(hp)) <= bound).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((4, 9), -1), ((3, 7, 4), 1)])
def test_grad_is_log_softmax_vjp_of_minus_target(shape, axis, dtype, kind, reduction, rng):
    # The loss is -sum(t * log_softmax(x)): its gradient is the VJP of
    # log_softmax with g = -t, scaled by 1/rows for "mean".
    # docs/api.rst, section Fused loss: "Loss per row: -sum(target * log_softmax(logits))."
    logits = cross_entropy_logits(rng, shape, dtype)
    target = target_for(rng, shape, axis, kind, dtype)
    _, grad = fs.softmax_cross_entropy(logits, target, axis, reduction=reduction,
                                       return_grad=True)
    hp = high_dtype(dtype)
    x, t_rows = rows_of(logits, target, axis, hp)
    t = np.moveaxis(t_rows, -1, axis).astype(dtype)
    rows = x.size // x.shape[-1]
    scale = 1.0 / rows if reduction == "mean" else 1.0
    logp = fs.log_softmax(logits, axis)
    via_vjp = fs.log_softmax_vjp(logp, -t, axis) * dtype(scale)
    # Error budget (ulp of the terms G = scale (p|T| + |t|)): the fused
    # gradient GRAD_ULPS, log_softmax_vjp 1.5 (float32) / 4 (float64), the
    # scaling 0.5; and exp(logp) inherits log_softmax's error, "a few ulp"
    # (docs/api.rst, section Accuracy; we allow 4) of max(1, |logp|), on p |T| scale.
    dt = np.dtype(dtype)
    ulps = GRAD_ULPS[dt] + {F32: 1.5, F64: 4}[dt] + 0.5
    g_terms = np.moveaxis(grad_terms(x, t_rows, scale), -1, axis)
    p_t = scale * np.moveaxis(ref.softmax(x, axis=-1) * np.abs(t_rows.sum(-1, keepdims=True)),
                              -1, axis)
    logp_mag = np.maximum(1, np.abs(logp.astype(hp)))
    bound = EPS[dt] * (ulps * np.maximum(np.abs(via_vjp.astype(hp)), g_terms)
                       + 4 * logp_mag * p_t)
    assert (np.abs(grad.astype(hp) - via_vjp.astype(hp)) <= bound).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("shape, axis", [((7,), -1), ((4, 6), -1), ((3, 5, 2), 1),
                                         ((5, 3), 0)])
def test_grad_vs_finite_differences(shape, axis, kind, reduction, rng):
    # docs/api.rst, section Fused loss:
    # "With return_grad=True it returns (loss, dlogits)" -- dlogits is
    # the gradient of the reduced loss.
    logits = cross_entropy_logits(rng, shape, np.float64)
    target = target_for(rng, shape, axis, kind, np.float64)
    err = check_grad(
        lambda x: fs.softmax_cross_entropy(x, target, axis, reduction=reduction),
        lambda x: fs.softmax_cross_entropy(x, target, axis, reduction=reduction,
                                           return_grad=True)[1],
        logits)
    assert err < 1e-8  # central differences: ~1e-10 of noise (see testing.py)


def test_none_gradient_is_the_gradient_of_the_sum(rng):
    # docs/api.rst, section Fused loss:
    # "divided by the row count for "mean"" -- and only for "mean":
    # "none" gives each row's own gradient, the gradient of the sum.
    logits = cross_entropy_logits(rng, (4, 6), np.float64)
    target = target_for(rng, (4, 6), -1, "prob", np.float64)
    _, g_none = fs.softmax_cross_entropy(logits, target, reduction="none", return_grad=True)
    _, g_sum = fs.softmax_cross_entropy(logits, target, reduction="sum", return_grad=True)
    _, g_mean = fs.softmax_cross_entropy(logits, target, reduction="mean", return_grad=True)
    np.testing.assert_array_equal(g_none, g_sum)
    np.testing.assert_allclose(g_mean, g_sum / 4, rtol=4 * EPS[F64], atol=0)


# --------------------------------------------------------------------------
# Special values
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_weight_on_minus_inf_contributes_zero(dtype):
    # docs/api.rst, section Special values:
    # "A zero target weight on a -inf logit contributes 0 (the limit
    #          of 0 · log 0), not NaN."
    logits = np.array([[0.0, -np.inf, 1.0], [2.0, -np.inf, -np.inf]], dtype)
    target = np.array([[0.25, 0.0, 0.75], [1.0, 0.0, 0.0]], dtype)
    loss, grad = fs.softmax_cross_entropy(logits, target, reduction="none",
                                          return_grad=True)
    p = np.exp(1.0) / (1 + np.exp(1.0))  # softmax of [0, 1]
    expected = [-(0.25 * np.log(1 - p) + 0.75 * np.log(p)), 0.0]
    x, t = rows_of(logits, target, -1, high_dtype(dtype))
    assert_loss_close(loss, np.array(expected), x, t, "none", np.dtype(dtype))
    assert np.isfinite(grad).all()
    assert grad[0, 1] == 0 and (grad[1] == 0).all()
    # the same row with class indices
    loss_i = fs.softmax_cross_entropy(logits, np.array([2, 0]), reduction="none")
    assert np.isfinite(loss_i).all() and loss_i[1] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_positive_weight_on_minus_inf_is_infinite_loss(dtype):
    # A positive weight on a -inf logit (probability 0): -t log 0 = +inf.
    logits = np.array([[0.0, -np.inf, 1.0], [0.0, 1.0, 2.0]], dtype)
    target = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype)
    loss = fs.softmax_cross_entropy(logits, target, reduction="none")
    assert loss[0] == np.inf and np.isfinite(loss[1])
    assert fs.softmax_cross_entropy(logits, target, reduction="mean") == np.inf
    loss_i = fs.softmax_cross_entropy(logits, np.array([1, 2]), reduction="none")
    assert loss_i[0] == np.inf and np.isfinite(loss_i[1])


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_row_only_affects_that_row(dtype, bad, kind, threads, rng):
    # docs/api.rst, section Special values: "A row ... that holds a NaN or +inf, yields NaN in
    # every entry of that row only"; here: a NaN loss for that row only.
    logits = cross_entropy_logits(rng, (5, 7), dtype)
    target = target_for(rng, (5, 7), -1, kind, dtype)
    clean_loss, clean_grad = fs.softmax_cross_entropy(logits, target, reduction="none",
                                                      return_grad=True)
    logits[2, 3] = bad
    loss, grad = fs.softmax_cross_entropy(logits, target, reduction="none", return_grad=True)
    assert np.isnan(loss[2])
    others = [0, 1, 3, 4]
    np.testing.assert_array_equal(loss[others], clean_loss[others])
    np.testing.assert_array_equal(grad[others], clean_grad[others])
    assert np.isnan(fs.softmax_cross_entropy(logits, target))


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

def _names(pattern, message):
    """The number `pattern` appears in message as a token of its own."""
    return re.search(rf"(?<![\w.-]){re.escape(str(pattern))}(?![\w.])", message) is not None


@pytest.mark.parametrize("bad, row", [(5, 3), (-1, 3), (7, 0), (-5, 5), (100, 5)])
def test_index_out_of_range(bad, row):
    # docs/api.rst, section Errors: "A class index out of range raises IndexError naming the bad
    #          value and row."  "Negative indices are out of range (no
    #          wrap-around)."
    logits = np.zeros((6, 5))
    target = np.array([0, 1, 2, 4, 0, 1])
    target[row] = bad
    with pytest.raises(IndexError) as excinfo:
        fs.softmax_cross_entropy(logits, target)
    message = str(excinfo.value)
    assert _names(bad, message), message
    assert re.search(rf"\brow\D{{0,4}}{row}\b", message), message


def test_index_out_of_range_in_a_batch_grid():
    # the row of a 2-d batch, as a tuple (or as the flat row number)
    logits = np.zeros((2, 3, 4))
    target = np.zeros((2, 3), np.int64)
    target[1, 2] = 4
    with pytest.raises(IndexError) as excinfo:
        fs.softmax_cross_entropy(logits, target)
    message = str(excinfo.value)
    assert _names(4, message)
    assert "(1, 2)" in message or re.search(r"\brow\D{0,4}5\b", message), message


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32])
def test_index_out_of_range_other_int_dtypes(dtype):
    logits = np.zeros((2, 3))
    with pytest.raises(IndexError):
        fs.softmax_cross_entropy(logits, np.array([0, 3], dtype))
    if np.dtype(dtype).kind == "i":
        with pytest.raises(IndexError):
            fs.softmax_cross_entropy(logits, np.array([-1, 0], dtype))


def test_float_target_with_index_shape():
    # docs/api.rst, section Fused loss: "of a floating dtype it is probabilities with the shape of
    #          logits ... Any other shape raises ValueError naming both shapes."
    with pytest.raises(ValueError) as excinfo:
        fs.softmax_cross_entropy(np.zeros((4, 5)), np.zeros(4))
    message = str(excinfo.value)
    assert "(4, 5)" in message and "(4,)" in message


@pytest.mark.parametrize("logits_shape, target_shape, dtype", [
    ((4, 5), (4, 5), np.int64),     # indices must have the batch shape
    ((4, 5), (5,), np.int64),
    ((4, 5), (4, 1), np.int64),
    ((4, 5), (4, 6), np.float64),
    ((4, 5), (1, 5), np.float64),   # no broadcasting
    ((4, 5), (5, 4), np.float32),
    ((3, 4, 5), (3, 5), np.int64),  # the batch of axis -1 is (3, 4)
])
def test_wrong_target_shape(logits_shape, target_shape, dtype):
    # docs/api.rst, section Errors: "Any other shape raises ValueError naming both shapes."
    with pytest.raises(ValueError) as excinfo:
        fs.softmax_cross_entropy(np.zeros(logits_shape), np.zeros(target_shape, dtype))
    message = str(excinfo.value)
    assert str(logits_shape) in message and str(target_shape) in message


def test_index_target_shape_follows_axis():
    # "the shape of logits without axis": axis=0 of (4, 5) wants (5,)
    loss = fs.softmax_cross_entropy(np.zeros((4, 5)), np.zeros(5, np.int64), axis=0,
                                    reduction="none")
    assert loss.shape == (5,)
    with pytest.raises(ValueError):
        fs.softmax_cross_entropy(np.zeros((4, 5)), np.zeros(4, np.int64), axis=0)


@pytest.mark.parametrize("target", [np.zeros((2, 3), bool), np.zeros(2, bool),
                                    np.zeros((2, 3), complex), np.zeros((2, 3), object),
                                    np.full((2, 3), "a")],
                         ids=["bool", "bool-index-shape", "complex", "object", "str"])
def test_bad_target_dtype(target):
    # docs/api.rst, section Fused loss:
    # "target of an integer dtype is class indices ...; of a floating
    #          dtype it is probabilities" -- anything else is a TypeError.
    with pytest.raises(TypeError):
        fs.softmax_cross_entropy(np.zeros((2, 3)), target)


@pytest.mark.parametrize("logits", [np.zeros((2, 3), complex), np.full((2, 3), "a")],
                         ids=["complex", "str"])
def test_bad_logits_dtype(logits):
    with pytest.raises(TypeError):
        fs.softmax_cross_entropy(logits, np.array([0, 1]))


@pytest.mark.parametrize("reduction", ["avg", "Mean", "", "sum ", "elementwise"])
def test_bad_reduction_lists_the_valid_ones(reduction):
    # docs/api.rst, section Errors: "Any other string raises ValueError listing the valid ones."
    with pytest.raises(ValueError) as excinfo:
        fs.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction=reduction)
    message = str(excinfo.value)
    assert all(name in message for name in ("mean", "sum", "none")), message


@pytest.mark.parametrize("axis", [(0,), (0, 1)])
def test_tuple_axis_is_rejected(axis):
    with pytest.raises(TypeError):
        fs.softmax_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3)), axis=axis)


# --------------------------------------------------------------------------
# weight, ignore_index, label_smoothing (docs/api.rst, section Fused loss:
# "mean exactly what they mean in torch.nn.functional.cross_entropy")
# --------------------------------------------------------------------------

OPTION_SETS = {
    "weight": {"weight": [0.5, 2.0, 0.0, 1.0, 3.0]},
    "ignore": {"ignore_index": -100},
    "ignore-in-range": {"ignore_index": 2},
    "smoothing": {"label_smoothing": 0.2},
    "smoothing-1": {"label_smoothing": 1.0},
    "all": {"weight": [0.5, 2.0, 0.25, 1.0, 3.0], "ignore_index": -100,
            "label_smoothing": 0.1},
}


# (ignore_index is for index targets only: test_bad_options)
KIND_OPTIONS = [pytest.param(kind, name, id=f"{kind}-{name}") for kind in ("index", "prob")
                for name, options in OPTION_SETS.items()
                if not (kind == "prob" and "ignore_index" in options)]


def _option_inputs(rng, kind, dtype, axis, options):
    """Logits (4, 5, 3) with 5 classes along `axis`; index targets with
    some rows at the ignored index, or probabilities."""
    x = rng.standard_normal((4, 5, 3)).astype(dtype) * 2
    x = np.moveaxis(x, 1, axis)
    batch = np.delete(x.shape, axis % 3)
    if kind == "index":
        t = rng.integers(0, 5, batch)
        if "ignore_index" in options:
            t.reshape(-1)[::4] = options["ignore_index"]
    else:
        t = rng.random(x.shape).astype(dtype)
    return x, t


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind, options", KIND_OPTIONS)
@pytest.mark.parametrize("axis", [-1, 1, 0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_options_match_pytorch(dtype, axis, kind, options, reduction, rng):
    torch = pytest.importorskip("torch")
    options = OPTION_SETS[options]
    x, t = _option_inputs(rng, kind, dtype, axis, options)
    loss, grad = fs.softmax_cross_entropy(x, t, axis, reduction=reduction, return_grad=True,
                                          **options)
    # PyTorch wants the classes on axis 1
    xt = torch.tensor(np.moveaxis(x, axis, 1).astype(np.float64), requires_grad=True)
    tt = torch.tensor(t if kind == "index" else np.moveaxis(t, axis, 1).astype(np.float64))
    kwargs = dict(options)
    if "weight" in kwargs:
        kwargs["weight"] = torch.tensor(kwargs["weight"], dtype=torch.float64)
    expected = torch.nn.functional.cross_entropy(xt, tt, reduction=reduction, **kwargs)
    (expected_grad,) = torch.autograd.grad(expected.sum(), xt)
    tol = {np.float32: 2e-6, np.float64: 1e-14}[dtype]
    np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grad, np.moveaxis(expected_grad.numpy(), 1, axis),
                               rtol=tol, atol=tol)
    assert loss.dtype == dtype and grad.dtype == dtype


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind, options", KIND_OPTIONS)
def test_options_match_the_reference(kind, options, reduction, threads, rng):
    options = OPTION_SETS[options]
    x, t = _option_inputs(rng, kind, np.float64, -1, options)
    loss, grad = fs.softmax_cross_entropy(x, t, reduction=reduction, return_grad=True,
                                          **options)
    expected_loss, expected_grad = ref.softmax_cross_entropy(
        x.astype(np.longdouble), t if kind == "index" else t.astype(np.longdouble),
        reduction=reduction, return_grad=True, **options)
    np.testing.assert_allclose(loss, expected_loss.astype(np.float64), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(grad, expected_grad.astype(np.float64), rtol=1e-14,
                               atol=1e-16)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_row_ignored(reduction):
    # docs/api.rst, section Fused loss: '"mean" with every row ignored is NaN'
    x = np.arange(12.0).reshape(4, 3)
    loss, grad = fs.softmax_cross_entropy(x, np.full(4, -1), reduction=reduction,
                                          return_grad=True, ignore_index=-1,
                                          label_smoothing=0.3)
    if reduction == "mean":
        assert np.isnan(loss)
    else:
        assert (np.asarray(loss) == 0).all()
    assert (grad == 0).all()


def test_options_on_rows_of_no_classes():
    # n = 0: no class to weigh (a weight of shape (0,)), every row ignored
    loss = fs.softmax_cross_entropy(np.zeros((3, 0)), np.full(3, -100), weight=np.zeros(0),
                                    ignore_index=-100)
    assert np.isnan(loss)


def test_ignored_rows_add_nothing_and_get_no_gradient(rng):
    x = rng.standard_normal((6, 4))
    t = np.array([0, -100, 3, -100, 1, 2])
    loss, grad = fs.softmax_cross_entropy(x, t, reduction="none", return_grad=True,
                                          ignore_index=-100, label_smoothing=0.2)
    assert (loss[[1, 3]] == 0).all() and (grad[[1, 3]] == 0).all()
    kept = [0, 2, 4, 5]
    loss_kept, grad_kept = fs.softmax_cross_entropy(x[kept], t[kept], reduction="none",
                                                    return_grad=True, label_smoothing=0.2)
    np.testing.assert_array_equal(loss[kept], loss_kept)
    np.testing.assert_array_equal(grad[kept], grad_kept)
    # an index out of range that is not the ignored one is still an error
    with pytest.raises(IndexError, match=r"target index -7 .* \(at row 1\)"):
        fs.softmax_cross_entropy(x, np.array([0, -7, 0, 0, 0, 0]), ignore_index=-100)


def test_weighted_mean_divides_by_the_weights_of_the_rows_counted(rng):
    x = rng.standard_normal((5, 3))
    t = np.array([0, 1, 2, 1, -1])
    w = np.array([1.0, 3.0, 0.5])
    per_row = fs.softmax_cross_entropy(x, t, reduction="none", weight=w, ignore_index=-1)
    mean = fs.softmax_cross_entropy(x, t, weight=w, ignore_index=-1)
    np.testing.assert_allclose(mean, per_row.sum() / w[t[:4]].sum(), rtol=1e-15)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_options_on_one_row_split_across_threads(dtype, kind, rng):
    n = 200_003
    x = cross_entropy_logits(rng, (n,), dtype)
    t = target_for(rng, (n,), -1, kind, dtype)
    w = rng.random(n) + 0.5
    options = {"weight": w, "label_smoothing": 0.05}
    hp = high_dtype(dtype)
    expected = ref.softmax_cross_entropy(x.astype(hp), t if kind == "index" else t.astype(hp),
                                         reduction="sum", return_grad=True, **options)
    try:
        for threads in (1, 2, 3):
            fs.set_num_threads(threads)
            loss, grad = fs.softmax_cross_entropy(x, t, reduction="sum", return_grad=True,
                                                  **options)
            np.testing.assert_allclose(loss, expected[0], rtol=4 * np.finfo(dtype).eps)
            np.testing.assert_allclose(grad, expected[1], rtol=8 * np.finfo(dtype).eps,
                                       atol=8 * np.finfo(dtype).eps * np.abs(expected[1]).max())
    finally:
        fs.set_num_threads(None)


# "Bad values raise ValueError naming the argument", before anything is written
BAD_OPTIONS = [
    ({"weight": [1.0, 2.0]}, "index", ValueError, r"^weight must hold one weight per class, "
                                                   r"shape \(3,\), got shape \(2,\)$"),
    ({"weight": [[1.0, 2.0, 3.0]]}, "index", ValueError, r"^weight must hold one weight"),
    ({"weight": [1.0, -2.0, 3.0]}, "prob", ValueError,
     r"^weight must be finite and >= 0, got an entry -2.0$"),
    ({"weight": [1.0, np.nan, 3.0]}, "index", ValueError, r"^weight must be finite"),
    ({"weight": ["a", "b", "c"]}, "index", TypeError, r"^weight has dtype <U1"),
    ({"ignore_index": -100}, "prob", ValueError, r"^ignore_index applies to class-index "
                                                 r"targets only"),
    ({"ignore_index": 1.0}, "index", TypeError, r"^ignore_index must be an int, got 1.0$"),
    ({"ignore_index": True}, "index", TypeError, r"^ignore_index must be an int"),
    ({"label_smoothing": -0.1}, "index", ValueError,
     r"^label_smoothing must lie in \[0, 1\], got -0.1$"),
    ({"label_smoothing": 1.5}, "prob", ValueError, r"^label_smoothing must lie in \[0, 1\]"),
    ({"label_smoothing": np.nan}, "index", ValueError, r"^label_smoothing must lie in"),
    ({"label_smoothing": "0.1"}, "index", TypeError,
     r"^label_smoothing must be a float in \[0, 1\], got '0.1'$"),
    ({"label_smoothing": np.array([0.1, 0.2])}, "index", TypeError,
     r"^label_smoothing must be a float in \[0, 1\]"),
    ({"ignore_index": 2 ** 70}, "index", ValueError,
     r"^ignore_index must lie in the int64 range"),
]


@pytest.mark.parametrize("options, kind, error, message", BAD_OPTIONS)
def test_bad_options(options, kind, error, message):
    x = np.zeros((2, 3))
    t = np.array([0, 1]) if kind == "index" else np.full((2, 3), 0.5)
    with pytest.raises(error, match=message):
        fs.softmax_cross_entropy(x, t, **options)
    with pytest.raises(error, match=message):
        fs.nn.SoftmaxCrossEntropy(**options)(x, t)
