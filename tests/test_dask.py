"""fastsoftmax.dask: the functions over dask arrays, on a real distributed cluster.

dask and distributed are optional: without them these tests skip, unless
FASTSOFTMAX_EXPECT_DASK=1 is set, which makes a missing one a failure (so
that a CI job that installs them cannot silently stop running these).

One LocalCluster of two worker processes serves the whole module; every
result is computed there (the workers import fastsoftmax themselves), and
compared with the top-level NumPy functions or with the reference in higher
precision.
"""

import contextlib
import importlib
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from numpy.exceptions import AxisError

import fastsoftmax as fs
from fastsoftmax import reference as ref

from _registry import check, oracle


def _require(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("FASTSOFTMAX_EXPECT_DASK") == "1":
            pytest.fail(f"FASTSOFTMAX_EXPECT_DASK=1, but {name} is not installed",
                        pytrace=False)
        pytest.skip(f"{name} is not installed (FASTSOFTMAX_EXPECT_DASK=1 makes this a failure)",
                    allow_module_level=True)


dask = _require("dask")
da = _require("dask.array")
distributed = _require("distributed")
fsd = importlib.import_module("fastsoftmax.dask")

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = [F32, F64]
DTYPE_IDS = ["float32", "float64"]


@pytest.fixture(scope="module", autouse=True)
def client():
    """A real two-process cluster on this machine; the default scheduler of
    every test here (a test may override it for a moment)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)


@contextlib.contextmanager
def no_rechunk():
    """A context in which a RechunkWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", fsd.RechunkWarning)
        yield


def compute(*arrays):
    """Compute on the cluster; a lazy result must already have the dtype
    and shape that the computed one has."""
    values = dask.compute(*arrays)
    for lazy, value in zip(arrays, values):
        assert isinstance(lazy, da.Array)
        assert np.asarray(value).dtype == lazy.dtype
        assert np.shape(value) == lazy.shape
    return values if len(values) > 1 else values[0]


# --------------------------------------------------------------------------
# Import: fastsoftmax never needs dask; fastsoftmax.dask names the extra
# --------------------------------------------------------------------------

def test_import_without_dask(tmp_path):
    script = """if True:
        import sys
        import fastsoftmax
        assert "dask" not in sys.modules, "import fastsoftmax imported dask"
        sys.modules["dask"] = sys.modules["dask.array"] = None   # as if not installed
        try:
            import fastsoftmax.dask
        except ImportError as exc:
            print(exc)
        else:
            raise AssertionError("fastsoftmax.dask imported without dask")
    """
    # from an empty folder, so that the same fastsoftmax as here is imported
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'pip install "fastsoftmax[dask]"' in done.stdout


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------

# name -> (shape, chunks, axis, whether the chunks split a softmax axis)
LAYOUTS = {
    "rows-chunked": ((60, 40), (16, 40), -1, False),
    "axis-split": ((60, 40), (16, 15), -1, True),
    "axis0-3d": ((20, 9, 24), (7, 4, 10), 0, True),
    "axis1-3d-whole": ((20, 9, 24), (7, 9, 10), 1, False),
    "tuple-axes": ((20, 9, 24), (7, 4, 24), (1, 2), True),
    "all-axes": ((20, 9, 24), (7, 9, 24), None, True),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_forward(name, dtype, layout, rng):
    func = getattr(fsd, name)
    shape, chunks, axis, splits = LAYOUTS[layout]
    xn = (rng.standard_normal(shape) * 4).astype(dtype)
    x = da.from_array(xn, chunks=chunks)
    if splits:
        with pytest.warns(fsd.RechunkWarning, match=name):
            result = func(x, axis=axis)
    else:
        with no_rechunk():
            result = func(x, axis=axis)
    # the batch chunks are kept, the softmax axes are whole
    axes = range(len(shape)) if axis is None else np.atleast_1d(axis) % len(shape)
    for a in range(len(shape)):
        expected = (shape[a],) if a in axes else x.chunks[a]
        assert result.chunks[a] == expected
    value = compute(result)
    assert value.dtype == dtype
    check(value, oracle(getattr(ref, name), xn, axis=axis), getattr(fs, name), dtype)


def test_forward_rows_are_those_of_the_kernel(rng):
    """Along the last axis each block runs the same kernel on the same rows
    as the top-level function: the results are identical (docs/api.rst, section Threads: the way
    rows are split among threads changes nothing)."""
    xn = rng.standard_normal((100, 33))
    x = da.from_array(xn, chunks=(9, 33))
    p, logp = compute(fsd.softmax(x), fsd.log_softmax(x))
    np.testing.assert_array_equal(p, fs.softmax(xn))
    np.testing.assert_array_equal(logp, fs.log_softmax(xn))


def test_numpy_and_other_inputs(rng):
    """Array-likes are wrapped (whole along the axis: no warning); the
    dtype rules are those of the top-level functions."""
    xn = rng.standard_normal((30, 7))
    with no_rechunk():
        from_numpy = fsd.softmax(xn, axis=0)
        from_list = fsd.log_softmax([[1, 2, 3], [4, 5, 6]])  # integers: float64
        from_f16 = fsd.softmax(xn.astype(np.float16))
        from_scalar = fsd.softmax(3.0)                       # 0-d: one element
    a, b, c, d = compute(from_numpy, from_list, from_f16, from_scalar)
    np.testing.assert_array_equal(a, fs.softmax(xn, axis=0))
    np.testing.assert_array_equal(b, fs.log_softmax([[1, 2, 3], [4, 5, 6]]))
    assert c.dtype == np.float16
    np.testing.assert_array_equal(c, fs.softmax(xn.astype(np.float16)))
    assert d.shape == () and d == 1.0


# --------------------------------------------------------------------------
# Derivatives
# --------------------------------------------------------------------------

PRODUCTS = ["softmax_jvp", "softmax_vjp", "log_softmax_vjp"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", PRODUCTS)
@pytest.mark.parametrize("axis", [-1, 0])
def test_products(name, dtype, axis, rng):
    """The same kernel on the same rows: equal to the top-level function.
    The second input comes split differently, also along the axis."""
    shape = (50, 24)
    xn = rng.standard_normal(shape).astype(dtype)
    first = fs.log_softmax(xn, axis) if name == "log_softmax_vjp" else fs.softmax(xn, axis)
    second = rng.standard_normal(shape).astype(dtype)
    a = da.from_array(first, chunks=(50, 8) if axis == 0 else (12, 24))  # whole along axis
    b = da.from_array(second, chunks=(7, 5))
    with pytest.warns(fsd.RechunkWarning, match=name) as caught:
        result = getattr(fsd, name)(a, b, axis=axis)
    assert len(caught) == 1
    assert result.chunks == a.chunks
    np.testing.assert_array_equal(compute(result), getattr(fs, name)(first, second, axis))


def test_products_mixed_dtypes(rng):
    s = fs.softmax(rng.standard_normal((20, 6)).astype(np.float32))
    v = rng.standard_normal((20, 6))
    result = fsd.softmax_jvp(da.from_array(s, chunks=(5, 6)), v)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(compute(result), fs.softmax_jvp(s, v))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("axis", [-1, 1])
def test_jacobian(dtype, axis, rng):
    sn = fs.softmax(rng.standard_normal((6, 5, 7)).astype(dtype), axis=axis)
    s = da.from_array(sn, chunks=(4, 2, 3))
    with pytest.warns(fsd.RechunkWarning, match="softmax_jacobian"):
        jac = fsd.softmax_jacobian(s, axis=axis)
    n = sn.shape[axis]
    batch_chunks = tuple(c for a, c in enumerate(s.chunks) if a != axis % 3)
    assert jac.shape == tuple(np.delete(sn.shape, axis % 3)) + (n, n)
    assert jac.chunks == batch_chunks + ((n,), (n,))
    np.testing.assert_array_equal(compute(jac), fs.softmax_jacobian(sn, axis=axis))


@pytest.mark.parametrize("axis", [(1, 2), (2, 0), None], ids=repr)
def test_derivatives_over_several_axes(axis, rng):
    # the axes are made whole in every block; the Jacobian's joint axes
    # become one, as in the top-level function
    xn = rng.standard_normal((6, 5, 7))
    sn, logp, g = fs.softmax(xn, axis), fs.log_softmax(xn, axis), rng.standard_normal(xn.shape)
    chunks = tuple(-1 if axis is None or a in axis else 2 for a in range(3))
    s_d, logp_d, g_d = (da.from_array(a, chunks=chunks) for a in (sn, logp, g))
    for name, first, first_d in [("softmax_jvp", sn, s_d), ("softmax_vjp", sn, s_d),
                                 ("log_softmax_vjp", logp, logp_d)]:
        result = getattr(fsd, name)(first_d, g_d, axis=axis)
        np.testing.assert_array_equal(compute(result), getattr(fs, name)(first, g, axis))
    jac = fsd.softmax_jacobian(s_d, axis=axis)
    expected = fs.softmax_jacobian(sn, axis=axis)
    assert jac.shape == expected.shape
    np.testing.assert_array_equal(compute(jac), expected)


@pytest.mark.parametrize("return_sign", [False, True])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [-1, (0, 2), None], ids=repr)
@pytest.mark.parametrize("b_kind", [None, "numpy", "dask"])
def test_logsumexp(b_kind, axis, keepdims, return_sign, rng):
    """The kernel on whole rows: equal to the top-level function; b is
    broadcast to x and chunked as x."""
    xn = 3 * rng.standard_normal((6, 4, 5))
    bn = None if b_kind is None else rng.standard_normal((4, 5))
    b = da.from_array(bn, chunks=(1, 5)) if b_kind == "dask" else bn
    x = da.from_array(xn, chunks=(2, 2, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fsd.RechunkWarning)  # (axis None or (0, 2))
        result = fsd.logsumexp(x, axis, b=b, keepdims=keepdims, return_sign=return_sign)
    expected = fs.logsumexp(xn, axis, b=bn, keepdims=keepdims, return_sign=return_sign)
    for got, want in zip(result, expected) if return_sign else [(result, expected)]:
        assert got.shape == np.shape(want) and got.dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(compute(got), want)


# docs/api.rst, section Masks: "fastsoftmax.dask takes where too (a NumPy
# or dask array, broadcast lazily and chunked as x)"
@pytest.mark.parametrize("mask_kind", ["numpy", "dask"])
@pytest.mark.parametrize("axis", [-1, 1, (1, 2)], ids=repr)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_where(name, axis, mask_kind, rng):
    xn = 3 * rng.standard_normal((6, 4, 5))
    mask_n = rng.random((1, 4, 5)) < 0.6
    mask_n[0, 0] = False  # an empty row along the last axis
    mask = da.from_array(mask_n, chunks=(1, 2, 5)) if mask_kind == "dask" else mask_n
    x = da.from_array(xn, chunks=(2, 4, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fsd.RechunkWarning)  # (a mask split along axis)
        result = getattr(fsd, name)(x, axis, where=mask)
    expected = getattr(fs, name)(xn, axis, where=mask_n)
    assert result.shape == np.shape(expected)
    np.testing.assert_array_equal(compute(result), expected)


# --------------------------------------------------------------------------
# Fused loss
# --------------------------------------------------------------------------

def _targets(rng, shape, axis, kind):
    n = shape[axis]
    if kind == "index":
        return rng.integers(0, n, np.delete(shape, axis % len(shape)))
    return rng.random(shape)  # rows need not sum to 1


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(reduction, axis, kind, dtype, rng):
    """Losses of rows spread over 5 x 3 blocks, reduced across them, and the
    gradient, against the top-level function on the whole array."""
    shape = (60, 11)
    ln = (rng.standard_normal(shape) * 3).astype(dtype)
    tn = _targets(rng, shape, axis, kind)
    if kind == "probs":
        tn = tn.astype(dtype)
    logits = da.from_array(ln, chunks=(12, 4) if axis == -1 else (4, 4))
    target = da.from_array(tn, chunks=5)  # chunked unlike the logits
    with pytest.warns(fsd.RechunkWarning, match="softmax_cross_entropy"):
        loss, grad = fsd.softmax_cross_entropy(logits, target, axis, reduction=reduction,
                                               return_grad=True)
    with pytest.warns(fsd.RechunkWarning):
        loss_only = fsd.softmax_cross_entropy(logits, target, axis, reduction=reduction)
    expected_loss, expected_grad = fs.softmax_cross_entropy(ln, tn, axis, reduction=reduction,
                                                            return_grad=True)
    loss_value, grad_value, loss_only_value = compute(loss, grad, loss_only)
    assert grad.chunks[axis] == (shape[axis],)

    eps = np.finfo(dtype).eps
    rows = ln.size // shape[axis]
    if reduction == "none":
        # per-row losses: the kernel's, on the same rows
        assert loss.shape == expected_loss.shape
        np.testing.assert_array_equal(loss_value, expected_loss)
    else:
        assert loss.shape == () and loss_value.dtype == expected_loss.dtype
        # All row losses are >= 0.  The top level adds them in float64 and
        # rounds the total once (0.5 eps).  Here, float32 row losses are
        # rounded each (0.5 eps of the total, as they share a sign), added
        # in float64 and rounded once more: 1.5 eps apart at most, plus the
        # float64 sums' own rounding, at most rows * 2**-53 each (nothing
        # next to float32's eps, and the whole bound for float64 data).
        bound = (2 * eps if dtype == F32 else 2 * rows * eps) * expected_loss
        assert abs(loss_value - expected_loss) <= bound
    np.testing.assert_array_equal(loss_only_value, loss_value)

    if reduction == "mean":
        # The kernel scales by 1/rows as it writes each element; here the
        # unscaled gradient is rounded first, then scaled and rounded
        # again.  Each element is a difference of terms of size at most
        # max(1, sum(target)) / rows, each rounded once in either order:
        # a few eps of that size apart.
        size = max(1.0, float(np.max(np.sum(tn, axis)))) if kind == "probs" else 1.0
        atol = 4 * eps * size / rows
        np.testing.assert_allclose(grad_value, expected_grad, rtol=0, atol=atol)
    else:
        np.testing.assert_array_equal(grad_value, expected_grad)


# docs/api.rst, section Fused loss: "nn.SoftmaxCrossEntropy and
# fastsoftmax.dask accept them too"; "mean" divides by the weights of the
# rows counted in every block
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_cross_entropy_options(axis, kind, reduction, rng):
    shape = (9, 5) if axis == -1 else (5, 9)
    xn = 3 * rng.standard_normal(shape)
    tn = _targets(rng, shape, axis, "index" if kind == "index" else "probs")
    options = {"weight": rng.random(5) + 0.25, "label_smoothing": 0.1}
    if kind == "index":
        tn[::3] = -100
        options["ignore_index"] = -100
    x = da.from_array(xn, chunks=(3, 5) if axis == -1 else (5, 3))
    t = da.from_array(tn, chunks=3 if kind == "index" else x.chunks)
    loss, grad = fsd.softmax_cross_entropy(x, t, axis, reduction=reduction, return_grad=True,
                                           **options)
    expected_loss, expected_grad = fs.softmax_cross_entropy(
        xn, tn, axis, reduction=reduction, return_grad=True, **options)
    np.testing.assert_allclose(compute(loss), expected_loss, rtol=1e-14)
    np.testing.assert_allclose(compute(grad), expected_grad, rtol=1e-14, atol=1e-17)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_cross_entropy_weighted_mean_gradient_scales_before_rounding(dtype, rng):
    # the blocks' gradients are scaled before they are rounded to the
    # result dtype: large weights do not overflow float16 on the way
    xn = rng.standard_normal((6, 3)).astype(dtype)
    tn = np.array([0, 1, 2, 0, -1, 1])
    options = {"weight": np.full(3, 1e5), "ignore_index": -1, "label_smoothing": 0.1}
    _, expected = fs.softmax_cross_entropy(xn, tn, return_grad=True, **options)
    _, grad = fsd.softmax_cross_entropy(da.from_array(xn, chunks=(2, 3)),
                                        da.from_array(tn, chunks=2), return_grad=True,
                                        **options)
    result = compute(grad)
    assert result.dtype == dtype and np.isfinite(result).all()
    # (one rounding more than at the top level, where the kernel scales:
    # within an ulp of the result dtype)
    np.testing.assert_allclose(result.astype(np.float64), expected.astype(np.float64),
                               rtol=np.finfo(dtype).eps, atol=0)


def test_cross_entropy_reduction_spans_all_blocks(rng):
    """The mean is over all rows, not a mean of block means (the blocks are
    of unequal size, so the two differ)."""
    ln = rng.standard_normal((10, 4))
    tn = rng.integers(0, 4, 10)
    logits = da.from_array(ln, chunks=((1, 9), 4))
    with no_rechunk():
        mean = fsd.softmax_cross_entropy(logits, tn)
        total = fsd.softmax_cross_entropy(logits, tn, reduction="sum")
    rows = fs.softmax_cross_entropy(ln, tn, reduction="none")
    mean_value, total_value = compute(mean, total)
    np.testing.assert_allclose(mean_value, rows.mean(), rtol=1e-15)
    np.testing.assert_allclose(total_value, rows.sum(), rtol=1e-15)
    block_means = (rows[:1].mean() + rows[1:].mean()) / 2
    assert abs(mean_value - block_means) > 1e-3


# (older dask warns that the client is bypassed: that is the point here)
@pytest.mark.filterwarnings("ignore:Running on a single-machine scheduler:UserWarning")
def test_cross_entropy_runs_each_block_once(rng, monkeypatch):
    """Loss and gradient computed together come from one kernel pass per
    block (counted in this process: the synchronous scheduler)."""
    from fastsoftmax import _api

    calls = []
    kernel = _api.softmax_cross_entropy

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(_api, "softmax_cross_entropy", counting)
    logits = da.from_array(rng.standard_normal((40, 5)), chunks=(10, 5))
    loss, grad = fsd.softmax_cross_entropy(logits, np.zeros(40, np.int64), return_grad=True)
    with dask.config.set(scheduler="synchronous"):
        dask.compute(loss, grad)
    assert calls == [(10, 5)] * 4


def test_cross_entropy_empty_batch():
    logits = da.zeros((0, 3), chunks=(5, 3))
    target = np.zeros(0, np.int64)
    mean, total = compute(fsd.softmax_cross_entropy(logits, target),
                          fsd.softmax_cross_entropy(logits, target, reduction="sum"))
    assert np.isnan(mean) and total == 0


def test_bad_class_index_raises_when_computed(rng):
    """The values are known only when computed: the IndexError comes then,
    from the worker, naming the row in the whole array."""
    logits = da.from_array(rng.standard_normal((6, 4, 3)), chunks=(2, 2, 3))
    target = rng.integers(0, 3, (6, 4))
    target[3, 2] = 3
    loss = fsd.softmax_cross_entropy(logits, target)  # no error yet
    with pytest.raises(IndexError, match=re.escape("target index 3 is out of range for 3 "
                                                   "classes (at row (3, 2))")):
        loss.compute()
    target1d = np.array([0, 1, 2, 0, -1, 1])
    loss = fsd.softmax_cross_entropy(logits[:, 0], target1d)
    with pytest.raises(IndexError, match=re.escape("target index -1 is out of range for 3 "
                                                   "classes (at row 4)")):
        loss.compute()


# --------------------------------------------------------------------------
# Laziness and the warning
# --------------------------------------------------------------------------

def _forbidden(*args, **kwargs):
    raise AssertionError("something was computed")


def test_nothing_is_computed_until_asked(rng):
    """Every function only builds a graph: with a scheduler that fails on
    any use, each call still succeeds and returns dask arrays."""
    x = da.from_array(rng.standard_normal((20, 6)), chunks=(5, 3))
    target = da.from_array(rng.integers(0, 6, 20), chunks=5)
    with dask.config.set(scheduler=_forbidden), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", fsd.RechunkWarning)
        results = [
            fsd.softmax(x), fsd.log_softmax(x, axis=0), fsd.softmax(x, axis=None),
            fsd.softmax_jacobian(x), fsd.softmax_jvp(x, x), fsd.softmax_vjp(x, x),
            fsd.log_softmax_vjp(x, x, axis=0),
            fsd.softmax_cross_entropy(x, target),
            *fsd.softmax_cross_entropy(x, target, reduction="none", return_grad=True),
            *fsd.softmax_cross_entropy(x, x, axis=0, return_grad=True),
        ]
        assert all(isinstance(r, da.Array) for r in results)
        with pytest.raises(AssertionError, match="something was computed"):
            results[0].compute()  # the guard does catch a computation


def test_warning_points_at_the_caller():
    x = da.zeros((4, 6), chunks=(2, 3))
    with pytest.warns(fsd.RechunkWarning) as caught:
        fsd.softmax(x)
        fsd.softmax_jacobian(x)
        fsd.softmax_vjp(x, x)
        fsd.softmax_cross_entropy(x, np.zeros(4, np.int64))
    assert [w.filename for w in caught] == [__file__] * 4
    assert "rechunk({1: -1})" in str(caught[0].message)
    # dask's own category silences it too
    assert issubclass(fsd.RechunkWarning, da.PerformanceWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", da.PerformanceWarning)
        fsd.softmax(x)


# --------------------------------------------------------------------------
# Errors: raised at the call, as the top-level function raises them
# --------------------------------------------------------------------------

def _masked():
    return da.ma.masked_array(da.zeros((4, 3), chunks=2), mask=da.zeros((4, 3), chunks=2))


ERRORS = {
    "complex": ("softmax", lambda: (np.ones((4, 3), complex),), {}),
    "axis-out-of-range": ("log_softmax", lambda: (np.ones((4, 3)),), {"axis": 2}),
    "repeated-axis": ("softmax", lambda: (np.ones((4, 3)),), {"axis": (1, -1)}),
    "product-shapes": ("softmax_jvp", lambda: (np.ones((4, 3)), np.ones((3, 4))), {}),
    "product-repeated-axis": ("softmax_vjp", lambda: (np.ones((4, 3)), np.ones((4, 3))),
                              {"axis": (0, -2)}),
    "jacobian-axis": ("softmax_jacobian", lambda: (np.ones((4, 3)),), {"axis": -3}),
    "logsumexp-b-shape": ("logsumexp", lambda: (np.ones((4, 3)),), {"b": np.ones(4)}),
    "logsumexp-b-dtype": ("logsumexp", lambda: (np.ones((4, 3)),), {"b": np.ones(3, complex)}),
    "reduction": ("softmax_cross_entropy", lambda: (np.ones((4, 3)), np.zeros(4, int)),
                  {"reduction": "avg"}),
    "index-target-shape": ("softmax_cross_entropy",
                           lambda: (np.ones((4, 3)), np.zeros(3, int)), {}),
    "probs-target-shape": ("softmax_cross_entropy",
                           lambda: (np.ones((4, 3)), np.ones(4)), {}),
    "bool-target": ("softmax_cross_entropy",
                    lambda: (np.ones((4, 3)), np.zeros(4, bool)), {}),
    "masked": ("softmax", lambda: (np.ma.masked_array(np.ones(3)),), {}),
    "weight-length": ("softmax_cross_entropy", lambda: (np.ones((4, 3)), np.zeros(4, int)),
                      {"weight": np.ones(2)}),
    "smoothing": ("softmax_cross_entropy", lambda: (np.ones((4, 3)), np.zeros(4, int)),
                  {"label_smoothing": 2.0}),
    "ignore-with-probs": ("softmax_cross_entropy", lambda: (np.ones((4, 3)), np.ones((4, 3))),
                          {"ignore_index": 0}),
    "where-dtype": ("log_softmax", lambda: (np.ones((4, 3)),), {"where": np.ones(3, int)}),
    "where-shape": ("logsumexp", lambda: (np.ones((4, 3)),), {"where": np.ones((2, 3), bool)}),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_match_the_top_level(case):
    name, make_args, kwargs = ERRORS[case]
    with pytest.raises((TypeError, ValueError, IndexError)) as top:
        getattr(fs, name)(*make_args(), **kwargs)
    # the same inputs as dask arrays (a masked one as a masked dask array)
    dask_args = [_masked() if isinstance(a, np.ma.MaskedArray)
                 else da.from_array(a, chunks=2) for a in make_args()]
    with pytest.raises(type(top.value)) as ours:
        getattr(fsd, name)(*dask_args, **kwargs)
    if case != "masked":  # its message says "masked dask array"
        assert str(ours.value) == str(top.value)
    if case.endswith("axis-out-of-range") or case == "repeated-axis":
        assert isinstance(ours.value, AxisError)


def test_unknown_chunk_sizes_and_out():
    x = da.from_array(np.arange(12.0).reshape(4, 3), chunks=2)
    unknown = x[x[:, 0] > 3]  # rows known only when computed
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fsd.softmax(unknown)
    with pytest.raises(TypeError, match="out"):  # dask arrays are immutable
        fsd.softmax(x, out=np.empty((4, 3)))
