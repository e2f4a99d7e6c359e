"""fastsoftmax.nn: the layers' gradients, their agreement with the reference,
their cached state, their errors, and the digits example."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from _registry import DTYPE_IDS, FLOAT_DTYPES, check, oracle, oracle_dtype

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax.nn import LogSoftmax, Softmax, SoftmaxCrossEntropy
from fastsoftmax.testing import check_grad, check_vjp

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "digits_mlp.py"

# (layer class, the fastsoftmax forward and VJP it wraps, their references)
ACTIVATIONS = [
    (Softmax, fs.softmax, fs.softmax_vjp, ref.softmax, ref.softmax_vjp),
    (LogSoftmax, fs.log_softmax, fs.log_softmax_vjp, ref.log_softmax, ref.log_softmax_vjp),
]
ACTIVATION_IDS = ["Softmax", "LogSoftmax"]
over_activations = pytest.mark.parametrize("layer_cls, func, vjp, ref_func, ref_vjp",
                                           ACTIVATIONS, ids=ACTIVATION_IDS)
LAYERS = [Softmax, LogSoftmax, SoftmaxCrossEntropy]
REDUCTIONS = ["mean", "sum", "none"]
# the last axis, a non-last one, and a middle one of a 3-d batch
SHAPES_AXES = [((5,), -1), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1)]
SHAPE_IDS = ["1d", "2d-last", "2d-axis0", "3d-axis1"]


def _target(kind, shape, axis, rng):
    """Class indices (the logits' shape without `axis`) or unnormalised
    probabilities (the logits' shape) for logits of `shape`."""
    n = shape[axis]
    if kind == "index":
        batch = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
        return rng.integers(0, n, size=batch)
    return rng.uniform(0.0, 1.0, size=shape)


def _forward_backward(layer, x, g):
    layer.forward(x)
    return layer.backward(g)


# --------------------------------------------------------------------------
# Gradients against finite differences (float64)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shape, axis", SHAPES_AXES, ids=SHAPE_IDS)
@over_activations
def test_activation_backward_is_the_vjp(layer_cls, func, vjp, ref_func, ref_vjp, shape, axis,
                                        rng):
    x = 3.0 * rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    layer = layer_cls(axis)
    check_vjp(lambda x: func(x, axis), lambda x, g: _forward_backward(layer, x, g), x, g)


@pytest.mark.parametrize("shape, axis", SHAPES_AXES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_cross_entropy_backward_is_the_gradient(kind, reduction, shape, axis, rng):
    logits = 3.0 * rng.standard_normal(shape)
    target = _target(kind, shape, axis, rng)
    layer = SoftmaxCrossEntropy(axis, reduction)
    if reduction == "none":
        # A scalar function of the per-row losses: their weighted sum, the
        # weights being the upstream gradient passed to backward.
        upstream = rng.standard_normal(np.shape(layer(logits, target)))
    else:
        upstream = 2.5  # the loss scaled by an upstream scalar gradient

    def loss(x):
        return float(np.sum(upstream * layer.forward(x, target)))

    def grad(x):
        layer.forward(x, target)
        return layer.backward(upstream)

    check_grad(loss, grad, logits)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_default_backward_is_the_gradient_of_the_loss(reduction, rng):
    """backward() with no argument: the gradient of the loss itself (of
    the sum of the rows' losses for "none")."""
    logits, target = rng.standard_normal((4, 5)), rng.integers(0, 5, 4)
    layer = SoftmaxCrossEntropy(reduction=reduction)

    def grad(x):
        layer.forward(x, target)
        return layer.backward()

    check_grad(lambda x: float(np.sum(layer.forward(x, target))), grad, logits)


# --------------------------------------------------------------------------
# Agreement with fastsoftmax and its reference, float32 and float64
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape, axis", SHAPES_AXES, ids=SHAPE_IDS)
@over_activations
def test_activation_matches_reference(layer_cls, func, vjp, ref_func, ref_vjp, shape, axis,
                                      dtype, rng):
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    layer = layer_cls(axis)
    out = layer(x)
    grad = layer.backward(g)
    assert out.dtype == dtype and grad.dtype == dtype
    # The layer adds nothing to the computation: bit for bit the functions.
    np.testing.assert_array_equal(out, func(x, axis))
    np.testing.assert_array_equal(grad, vjp(out, g, axis))
    # Forward: within the error budget of the forward functions (_registry).
    check(out, oracle(ref_func, x, axis=axis), func, dtype)
    # Backward: the reference VJP of the same output, in higher precision.
    # Both VJPs sum products and subtract: an error of a few eps of the
    # magnitudes involved, `terms`, and not of the (possibly cancelled)
    # result.  The kernels' budget is below 1.5 eps * terms
    # (_registry.py); 4 leaves room for no other effect.
    high = oracle_dtype(dtype)
    expected = oracle(ref_vjp, out, g, axis=axis)
    out_h, g_h = out.astype(high), g.astype(high)
    if layer_cls is Softmax:
        terms = out_h * (np.abs(g_h) + np.sum(np.abs(out_h * g_h), axis, keepdims=True))
    else:
        terms = np.abs(g_h) + np.exp(out_h) * np.sum(np.abs(g_h), axis, keepdims=True)
    assert np.all(np.abs(grad.astype(high) - expected) <= 4 * np.finfo(dtype).eps * terms)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape, axis", SHAPES_AXES, ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_cross_entropy_matches_reference(kind, reduction, shape, axis, dtype, rng):
    logits = (3.0 * rng.standard_normal(shape)).astype(dtype)
    target = _target(kind, shape, axis, rng)
    if kind == "probs":
        target = target.astype(dtype)
    layer = SoftmaxCrossEntropy(axis, reduction)
    loss = layer(logits, target)
    grad = layer.backward()
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype
    np.testing.assert_array_equal(loss, fs.softmax_cross_entropy(
        logits, target, axis, reduction=reduction))
    np.testing.assert_array_equal(grad, fs.softmax_cross_entropy(
        logits, target, axis, reduction=reduction, return_grad=True)[1])
    # The reference in higher precision (class indices stay integers).
    high = oracle_dtype(dtype)
    t_high = target if kind == "index" else target.astype(high)
    ref_loss, ref_grad = ref.softmax_cross_entropy(
        logits.astype(high), t_high, axis, reduction=reduction, return_grad=True)
    # A row's loss is log(sum exp(x - max)) + max - <t, x> times sum(t): its
    # rounding is absolute, a few eps of the magnitudes of logits and
    # targets, summed over the rows for "sum".  The gradient s * sum(t) - t
    # errs by a few eps of sum(t) (<= n), divided by the rows for "mean".
    eps = np.finfo(dtype).eps
    n = shape[axis]
    rows = np.prod(shape) // n
    scale = n * (1.0 + float(np.max(np.abs(logits))))
    loss_atol = 8 * eps * scale * (rows if reduction == "sum" else 1)
    grad_atol = 8 * eps * n / (rows if reduction == "mean" else 1)
    np.testing.assert_allclose(np.asarray(loss, np.float64), np.asarray(ref_loss, np.float64),
                               rtol=0, atol=loss_atol)
    np.testing.assert_allclose(grad.astype(np.float64), ref_grad.astype(np.float64),
                               rtol=0, atol=grad_atol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_options_are_those_of_the_function(reduction, rng):
    logits = rng.standard_normal((6, 4))
    target = np.array([0, 3, -100, 1, 2, -100])
    options = {"weight": [1.0, 0.5, 2.0, 1.5], "ignore_index": -100, "label_smoothing": 0.2}
    layer = SoftmaxCrossEntropy(reduction=reduction, **options)
    loss, grad = fs.softmax_cross_entropy(logits, target, reduction=reduction,
                                          return_grad=True, **options)
    np.testing.assert_array_equal(layer(logits, target), loss)
    np.testing.assert_array_equal(layer.backward(), grad)


def test_cross_entropy_options_are_checked_at_construction():
    with pytest.raises(ValueError, match="label_smoothing"):
        SoftmaxCrossEntropy(label_smoothing=-1.0)
    with pytest.raises(ValueError, match="weight must be finite and >= 0"):
        SoftmaxCrossEntropy(weight=[1.0, -1.0])
    with pytest.raises(TypeError, match="ignore_index"):
        SoftmaxCrossEntropy(ignore_index=0.5)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_cross_entropy_grad_loss_keeps_the_dtype(dtype, rng):
    """A float64 upstream gradient scales float32 dlogits in float32."""
    layer = SoftmaxCrossEntropy(reduction="none")
    layer(rng.standard_normal((3, 4)).astype(dtype), np.array([0, 1, 2]))
    assert layer.backward(np.float64(2.0)).dtype == dtype
    assert layer.backward(np.ones(3, np.float64)).dtype == dtype


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_scalar_grad_loss_scales(reduction, rng):
    layer = SoftmaxCrossEntropy(reduction=reduction)
    layer(rng.standard_normal((3, 4)), np.array([0, 1, 2]))
    np.testing.assert_array_equal(layer.backward(-3.0), -3.0 * layer.backward())


def test_cross_entropy_per_row_grad_loss_follows_the_class_axis(rng):
    """For reduction="none" with classes on axis 0, row j's upstream value
    scales column j."""
    logits, target, w = rng.standard_normal((4, 3)), np.array([0, 3, 1]), np.array([1., 2., 3.])
    layer = SoftmaxCrossEntropy(axis=0, reduction="none")
    layer(logits, target)
    np.testing.assert_array_equal(layer.backward(w), layer.backward() * w)


# --------------------------------------------------------------------------
# The layers combine with hand-written losses
# --------------------------------------------------------------------------

def test_log_softmax_with_nll_equals_the_fused_loss(rng):
    logits, target = rng.standard_normal((5, 6)), rng.integers(0, 6, 5)
    rows = np.arange(5)
    layer = LogSoftmax()
    logp = layer(logits)
    nll = -logp[rows, target].mean()
    dlogp = np.zeros_like(logp)
    dlogp[rows, target] = -1.0 / 5  # d mean(-logp[row, target]) / d logp
    fused = SoftmaxCrossEntropy()
    np.testing.assert_allclose(nll, fused(logits, target), rtol=1e-14)
    np.testing.assert_allclose(layer.backward(dlogp), fused.backward(), rtol=0, atol=1e-16)


def test_softmax_with_squared_error_chain(rng):
    """Softmax over a non-last axis followed by a squared error written by hand."""
    x, y = rng.standard_normal((4, 3)), rng.uniform(size=(4, 3))
    layer = Softmax(axis=0)

    def loss(x):
        return float(np.sum((layer(x) - y) ** 2))

    def grad(x):
        s = layer(x)
        return layer.backward(2.0 * (s - y))

    check_grad(loss, grad, x)


# --------------------------------------------------------------------------
# Cached state
# --------------------------------------------------------------------------

@over_activations
def test_activation_backward_uses_the_latest_forward(layer_cls, func, vjp, ref_func, ref_vjp,
                                                     rng):
    x1, x2 = rng.standard_normal((2, 5)), rng.standard_normal((3, 4))
    g2 = rng.standard_normal((3, 4))
    layer = layer_cls()
    layer(x1)
    out2 = layer(x2)
    np.testing.assert_array_equal(layer.backward(g2), vjp(func(x2), g2))
    np.testing.assert_array_equal(out2, func(x2))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(3, 4\)"):  # x1's shape is gone
        layer.backward(np.ones((2, 5)))


def test_cross_entropy_backward_uses_the_latest_forward(rng):
    logits1, logits2 = rng.standard_normal((2, 5)), rng.standard_normal((3, 4))
    target2 = np.array([3, 0, 1])
    layer = SoftmaxCrossEntropy(reduction="none")
    layer(logits1, np.array([0, 4]))
    layer(logits2, target2)
    expected = fs.softmax_cross_entropy(logits2, target2, reduction="none", return_grad=True)[1]
    np.testing.assert_array_equal(layer.backward(), expected)
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):  # one value per row of logits2
        layer.backward(np.ones(2))


@over_activations
def test_activation_backward_uses_the_axis_of_its_forward(layer_cls, func, vjp, ref_func, ref_vjp,
                                                          rng):
    x, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    layer = layer_cls(axis=0)
    out = layer(x)
    layer.axis = 1  # takes effect at the next forward
    np.testing.assert_array_equal(layer.backward(g), vjp(out, g, 0))


@over_activations
def test_activation_output_is_read_only(layer_cls, func, vjp, ref_func, ref_vjp,
                                        rng):
    """The output is the cache: editing it in place would change backward."""
    x, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    layer = layer_cls()
    out = layer(x)
    with pytest.raises(ValueError, match="read-only"):
        out *= 2.0
    assert x.flags.writeable  # only the layer's own array is locked
    np.testing.assert_array_equal(layer.backward(g), vjp(func(x), g))


def test_cross_entropy_kept_gradient_is_read_only(rng):
    logits, target = rng.standard_normal((3, 4)), np.array([0, 1, 2])
    layer = SoftmaxCrossEntropy()
    layer(logits, target)
    dlogits = layer.backward()
    with pytest.raises(ValueError, match="read-only"):
        dlogits -= 1.0
    scaled = layer.backward(2.0)  # a new array, free to edit
    scaled -= 1.0
    expected = fs.softmax_cross_entropy(logits, target, return_grad=True)[1]
    np.testing.assert_array_equal(layer.backward(), expected)


@over_activations
def test_activation_backward_can_be_repeated(layer_cls, func, vjp, ref_func, ref_vjp,
                                             rng):
    """backward does not consume the cache: several upstream gradients may
    be pulled back through one forward."""
    x = rng.standard_normal((3, 4))
    g1, g2 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    layer = layer_cls()
    out = layer(x)
    first = layer.backward(g1)
    first += 100.0  # the caller's array, not the layer's
    np.testing.assert_array_equal(layer.backward(g2), vjp(out, g2))
    np.testing.assert_array_equal(layer.backward(g1), vjp(out, g1))


def test_call_is_forward(rng):
    x, target = rng.standard_normal((2, 3)), np.array([2, 0])
    np.testing.assert_array_equal(Softmax()(x), Softmax().forward(x))
    np.testing.assert_array_equal(LogSoftmax()(x), LogSoftmax().forward(x))
    assert SoftmaxCrossEntropy()(x, target) == SoftmaxCrossEntropy().forward(x, target)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

@pytest.mark.parametrize("layer_cls", LAYERS, ids=lambda c: c.__name__)
def test_backward_before_forward(layer_cls):
    layer = layer_cls()
    args = () if layer_cls is SoftmaxCrossEntropy else (np.ones(3),)
    with pytest.raises(RuntimeError, match=f"{layer_cls.__name__}.backward was called "
                                           f"before {layer_cls.__name__}.forward"):
        layer.backward(*args)


@pytest.mark.parametrize("layer_cls", [Softmax, LogSoftmax], ids=lambda c: c.__name__)
@pytest.mark.parametrize("grad_shape", [(4, 3), (3,), (12,), (1, 3, 4)])
def test_activation_grad_shape_mismatch(layer_cls, grad_shape, rng):
    """Even a gradient that would broadcast, or has the same size, is refused."""
    layer = layer_cls()
    layer(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match=rf"grad has shape {re_shape(grad_shape)}.* "
                                         rf"shape \(3, 4\)"):
        layer.backward(np.ones(grad_shape))


@pytest.mark.parametrize("reduction, grad_shape", [
    ("mean", (3,)), ("sum", (1,)), ("none", (4,)), ("none", (3, 1)), ("none", (1, 3)),
])
def test_cross_entropy_grad_loss_shape_mismatch(reduction, grad_shape, rng):
    layer = SoftmaxCrossEntropy(reduction=reduction)
    layer(rng.standard_normal((3, 4)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=rf"scalar or have the shape of the loss .*"
                                         rf"got shape {re_shape(grad_shape)}"):
        layer.backward(np.ones(grad_shape))


@pytest.mark.parametrize("reduction", ["avg", "Mean", None])
def test_bad_reduction(reduction):
    with pytest.raises(ValueError, match="'mean', 'sum', 'none'"):
        SoftmaxCrossEntropy(reduction=reduction)


@pytest.mark.parametrize("layer_cls", LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("axis", [1.0, (0, 1), None])
def test_axis_must_be_an_int(layer_cls, axis):
    with pytest.raises(TypeError):
        layer_cls(axis)


@pytest.mark.parametrize("layer_cls", LAYERS, ids=lambda c: c.__name__)
def test_out_of_range_axis_fails_at_forward(layer_cls):
    layer = layer_cls(axis=2)
    args = (np.ones((2, 3)),) + ((np.zeros(2, np.int64),) if layer_cls is SoftmaxCrossEntropy
                                 else ())
    with pytest.raises(np.exceptions.AxisError):
        layer(*args)


def test_failed_forward_keeps_the_previous_state(rng):
    """A forward that raises leaves the layer as it was."""
    logits, target = rng.standard_normal((2, 3)), np.array([2, 0])
    layer = SoftmaxCrossEntropy()
    layer(logits, target)
    with pytest.raises(IndexError):
        layer(logits, np.array([3, 0]))
    expected = fs.softmax_cross_entropy(logits, target, return_grad=True)[1]
    np.testing.assert_array_equal(layer.backward(), expected)


def re_shape(shape):
    """A shape tuple as a regular expression."""
    return str(shape).replace("(", r"\(").replace(")", r"\)")


# --------------------------------------------------------------------------
# The example docs/examples/digits_mlp.py
# --------------------------------------------------------------------------

def test_digits_example(capsys):
    """The whole example, as CI runs it: gradient check, 95% test accuracy,
    the same network with the reference loss.  It takes about a second."""
    pytest.importorskip("sklearn")
    if not EXAMPLE.is_file():  # the tests may run outside the source tree
        pytest.skip(f"{EXAMPLE} is not here")
    spec = importlib.util.spec_from_file_location("digits_mlp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status = module.main([])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "OK: test accuracy" in out
