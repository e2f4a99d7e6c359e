"""Half precision: float16 and ml_dtypes.bfloat16 read and written by the
kernels themselves (docs/api.rst, section Half precision).

The contract: computed in float32, returned in the input's dtype, and no
float32 copy of the input or of the result.  So the results must be those
of the converting way (cast to float32, compute, round back to nearest
even), bit for bit, and a call's peak memory that of its result.
"""

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _backend

from _helpers import laid_out, peak_allocation

try:
    import ml_dtypes
except ImportError:  # an optional dependency: its cases are left out
    ml_dtypes = None

HALF_DTYPES = [pytest.param(np.dtype(np.float16), id="float16"),
               pytest.param(np.dtype(ml_dtypes.bfloat16) if ml_dtypes else None, id="bfloat16",
                            marks=pytest.mark.skipif(ml_dtypes is None,
                                                     reason="ml_dtypes is not installed"))]
NAMES = ["softmax", "log_softmax", "logsumexp"]
PRODUCTS = ["softmax_jvp", "softmax_vjp", "log_softmax_vjp"]


def converting(name, x, dtype, *more, **kwargs):
    """The result of the converting way: float32 in, the dtype out."""
    result = getattr(fs, name)(np.asarray(x).astype(np.float32),
                               *(np.asarray(a).astype(np.float32) for a in more), **kwargs)
    with np.errstate(over="ignore"):
        return np.asarray(result).astype(dtype)


def same_bits(a, b):
    """Equal bit for bit, any NaN matching any NaN."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    nan_a, nan_b = np.isnan(a.astype(np.float32)), np.isnan(b.astype(np.float32))
    np.testing.assert_array_equal(nan_a, nan_b)
    np.testing.assert_array_equal(a.view(np.uint16)[~nan_a], b.view(np.uint16)[~nan_b])


# --------------------------------------------------------------------------
# The conversions
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_every_half_converts_to_its_float_exactly(dtype, simd_path):
    bits = np.arange(1 << 16, dtype=np.uint16)
    values = np.empty(bits.size, np.float32)
    _backend.kernels.half_convert(bits, values, False, dtype.name == "bfloat16")
    expected = bits.view(dtype).astype(np.float32)
    nan = np.isnan(expected)
    assert np.isnan(values[nan]).all()
    np.testing.assert_array_equal(values.view(np.uint32)[~nan],
                                  expected.view(np.uint32)[~nan])


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_floats_round_to_the_nearest_half_ties_to_even(dtype, simd_path, rng):
    # random float32 bit patterns (every exponent), every half, the
    # midpoints between neighbouring halves (the ties), and the edges of
    # the range (float16: 65504 is the largest, 65520 rounds to inf;
    # 2**-24 the smallest subnormal, 2**-25 rounds to 0 (even))
    with np.errstate(invalid="ignore"):  # (the NaN patterns)
        halves = np.arange(1 << 16, dtype=np.uint16).view(dtype).astype(np.float64)
    finite = np.sort(halves[np.isfinite(halves)])
    ties = ((finite[:-1] + finite[1:]) / 2).astype(np.float32)
    edges = np.array([65504, 65519.996, 65520, 65536, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26,
                      -0.0, np.inf, -np.inf, np.nan, 3.4e38], np.float32)
    values = np.concatenate([rng.integers(0, 1 << 32, 500_000, dtype=np.uint64)
                             .astype(np.uint32).view(np.float32), finite.astype(np.float32),
                             ties, edges])
    bits = np.empty(values.size, np.uint16)
    _backend.kernels.half_convert(bits, values, True, dtype.name == "bfloat16")
    with np.errstate(invalid="ignore", over="ignore"):
        expected = values.astype(dtype)
    same_bits(bits.view(dtype), expected)


# --------------------------------------------------------------------------
# The results: those of the converting way, bit for bit
# --------------------------------------------------------------------------

# rows up to 2048 elements are computed whole; longer ones a chunk at a time
SHAPE_AXES = [((), -1), ((7,), -1), ((5, 10), -1), ((300, 37), -1), ((4, 6, 33), 1),
              ((3, 4, 5), (0, 2)), ((2, 3), None), ((3, 2048), -1), ((3, 2049), -1),
              ((2, 5000), -1), ((1, 100), -1), ((1, 5000), -1), ((0, 5), -1), ((4, 0), -1),
              ((300, 20), 0), ((2, 50, 16), 1)]


@pytest.mark.parametrize("layout", ["C", "F", "rows-reversed", "byteswapped", "readonly"])
@pytest.mark.parametrize("shape, axis", SHAPE_AXES, ids=str)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_results_are_those_of_the_converting_way(dtype, name, shape, axis, layout, threads,
                                                 rng):
    x = laid_out((rng.standard_normal(shape) * 4).astype(dtype), layout)
    result = getattr(fs, name)(x, axis=axis)
    assert np.asarray(result).dtype == dtype
    same_bits(result, converting(name, x, dtype, axis=axis))


@pytest.mark.parametrize("layout", ["C", "F", "rows-reversed", "byteswapped"])
@pytest.mark.parametrize("shape, axis", SHAPE_AXES, ids=str)
@pytest.mark.parametrize("name", PRODUCTS)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_products_are_those_of_the_converting_way(dtype, name, shape, axis, layout, threads,
                                                  rng):
    logits = rng.standard_normal(shape) * 3
    forward = fs.log_softmax if name == "log_softmax_vjp" else fs.softmax
    a = laid_out(forward(logits, axis=axis).astype(dtype), layout)
    g = laid_out(rng.standard_normal(shape).astype(dtype), layout)
    result = getattr(fs, name)(a, g, axis=axis)
    assert result.dtype == dtype
    same_bits(result, converting(name, a, dtype, g, axis=axis))


# where= (docs/api.rst, section Masks) on half-precision rows: the masked
# copy and the in-place kernel in half precision, logsumexp's mask read as
# for float32 rows
MASK_SHAPES = [((6, 9), (9,)), ((6, 9), (6, 1)), ((2, 3, 4, 3000), (2, 1, 1, 3000)),
               ((5, 40), (5, 40)), ((4, 7), (4, 7))]


@pytest.mark.parametrize("x_shape, mask_shape", MASK_SHAPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_masks_are_those_of_the_converting_way(dtype, name, x_shape, mask_shape, threads, rng):
    mask = rng.random(mask_shape) < 0.7
    mask.reshape(-1)[:2] = False  # (with (6, 1): empty rows)
    x = (rng.standard_normal(x_shape) * 3).astype(dtype)
    x[~np.broadcast_to(mask, x_shape)] = np.nan  # never used
    result = getattr(fs, name)(x, where=mask)
    same_bits(result, converting(name, x, dtype, where=mask))


@pytest.mark.parametrize("shape, axis", [((7,), -1), ((3, 9), -1), ((2, 3, 4), (1, 2)),
                                         ((4, 300), 0)], ids=str)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_jacobian_is_that_of_the_converting_way(dtype, shape, axis, threads, rng):
    s = fs.softmax(rng.standard_normal(shape), axis=axis).astype(dtype)
    result = fs.softmax_jacobian(s, axis=axis)
    assert result.dtype == dtype
    same_bits(result, converting("softmax_jacobian", s, dtype, axis=axis))


LOSS_OPTIONS = {"plain": {}, "options": {"weight": True, "label_smoothing": 0.1,
                                         "ignore_index": -100}}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", LOSS_OPTIONS)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("shape, axis", [((7, 30), -1), ((4, 5, 3), 1), ((2, 5000), -1),
                                         ((1, 100), -1), ((1, 5000), -1)], ids=str)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_loss_is_that_of_the_converting_way(dtype, shape, axis, kind, options, reduction,
                                            threads, rng):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    n = shape[axis]
    kwargs = dict(LOSS_OPTIONS[options])
    if "weight" in kwargs:
        kwargs["weight"] = rng.random(n) + 0.5
    if kind == "index":
        target = rng.integers(0, n, np.delete(shape, axis % len(shape)))
        if "ignore_index" in kwargs:
            target.reshape(-1)[::3] = -100
        float_target = target
    else:
        kwargs.pop("ignore_index", None)
        target = rng.random(shape).astype(dtype)
        float_target = target.astype(np.float32)
    loss, grad = fs.softmax_cross_entropy(x, target, axis, reduction=reduction,
                                          return_grad=True, **kwargs)
    expected_loss, expected_grad = fs.softmax_cross_entropy(
        x.astype(np.float32), float_target, axis, reduction=reduction, return_grad=True,
        **kwargs)
    np.testing.assert_array_equal(loss, expected_loss)
    assert grad.dtype == dtype
    same_bits(grad, expected_grad.astype(dtype))


# "A single huge row is split across threads" (docs/api.rst, section
# Threads), in half precision too: the chunks' partial results (of the
# row's max) are added in chunk order, compensated, and any number of
# threads gives the one-thread converting way's result
SPLIT_CALLS = {
    "softmax": lambda x, p, b, m: fs.softmax(x),
    "log_softmax": lambda x, p, b, m: fs.log_softmax(x),
    "logsumexp": lambda x, p, b, m: fs.logsumexp(x),
    "logsumexp-b-where": lambda x, p, b, m: fs.logsumexp(x, b=b, where=m, return_sign=True),
    "softmax_vjp": lambda x, p, b, m: fs.softmax_vjp(p, x),
    "log_softmax_vjp": lambda x, p, b, m: fs.log_softmax_vjp(p, x),
    "loss-index": lambda x, p, b, m: fs.softmax_cross_entropy(x, np.array([17]),
                                                              return_grad=True),
    "loss-prob-options": lambda x, p, b, m: fs.softmax_cross_entropy(
        x, p, return_grad=True, weight=np.linspace(0.5, 2, x.shape[-1]), label_smoothing=0.2),
}


@pytest.mark.parametrize("name", SPLIT_CALLS)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_one_huge_row_split_across_threads(dtype, name, rng):
    n = 200_003
    x = (rng.standard_normal((1, n)) * 3).astype(dtype)
    p = fs.softmax(rng.standard_normal((1, n), np.float32)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    mask = rng.random(n) < 0.7
    call = SPLIT_CALLS[name]
    results = []
    try:
        fs.set_num_threads(1)
        expected = call(x.astype(np.float32), p.astype(np.float32), b.astype(np.float32), mask)
        for threads in (1, 2, 3):
            fs.set_num_threads(threads)
            results.append(call(x, p, b, mask))
    finally:
        fs.set_num_threads(None)
    for result in results:
        if name.startswith("loss"):  # (loss, gradient): the loss in float32
            np.testing.assert_array_equal(result[0], expected[0])
            same_bits(result[1], expected[1].astype(dtype))
        elif isinstance(result, tuple):
            for got, want in zip(result, expected):
                same_bits(got, np.asarray(want).astype(dtype))
        else:
            same_bits(result, expected.astype(dtype))


@pytest.mark.parametrize("name", PRODUCTS)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_products_in_place(dtype, name, rng):
    a = fs.softmax(rng.standard_normal((5, 3000))).astype(dtype)
    g = rng.standard_normal((5, 3000)).astype(dtype)
    expected = converting(name, a, dtype, g)
    assert getattr(fs, name)(a, g, out=g) is g
    same_bits(g, expected)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_special_values(dtype, name):
    big = float(np.finfo(np.float16).max) if dtype == np.float16 else 3e38
    x = np.array([[1.0, np.nan, 0.0], [-np.inf, -np.inf, -np.inf], [np.inf, 1.0, 0.0],
                  [0.0, -np.inf, 1.0], [big, -big, 0.0], [6e-8, -6e-8, 0.0]]).astype(dtype)
    same_bits(getattr(fs, name)(x), converting(name, x, dtype))
    # a long row too (the chunked passes)
    long_rows = np.repeat(x, 1000, axis=1)
    same_bits(getattr(fs, name)(long_rows), converting(name, long_rows, dtype))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_out_and_in_place(dtype, name, rng):
    x = (rng.standard_normal((6, 40)) * 3).astype(dtype)
    expected = converting(name, x, dtype)
    out = np.empty_like(x)
    assert getattr(fs, name)(x, out=out) is out
    same_bits(out, expected)
    assert getattr(fs, name)(x, out=x) is x
    same_bits(x, expected)


# logsumexp's factors b, read in half precision too (with a mask, and
# broadcast: a (n,) b is never expanded)
B_SHAPES = [((7,), (7,)), ((5, 10), (10,)), ((5, 10), (5, 10)), ((4, 6, 33), (6, 1)),
            ((3, 2049), (3, 2049)), ((2, 5000), (5000,)), ((4, 0), (0,))]


@pytest.mark.parametrize("masked", [False, True], ids=["b", "b-and-where"])
@pytest.mark.parametrize("x_shape, b_shape", B_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_logsumexp_b_is_that_of_the_converting_way(dtype, x_shape, b_shape, masked, threads,
                                                   rng):
    axis = 1 if len(x_shape) == 3 else -1
    x = (rng.standard_normal(x_shape) * 4).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)  # (negative sums too)
    b.reshape(-1)[::5] = 0
    kwargs = {"axis": axis, "return_sign": True}
    if masked:
        kwargs["where"] = rng.random(x_shape[-1:]) < 0.6
    value, sign = fs.logsumexp(x, b=b, **kwargs)
    expected_value, expected_sign = fs.logsumexp(x.astype(np.float32), b=b.astype(np.float32),
                                                 **kwargs)
    same_bits(value, expected_value.astype(dtype))
    same_bits(sign, expected_sign.astype(dtype))
    # without return_sign, a negative sum is NaN
    same_bits(fs.logsumexp(x, b=b, axis=axis, where=kwargs.get("where")),
              converting("logsumexp", x, dtype, axis=axis, b=b.astype(np.float32),
                         where=kwargs.get("where")))


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_logsumexp_b_special_values(dtype):
    x = np.array([[1.0, np.inf, 2.0], [1.0, np.inf, 2.0], [np.nan, 0.0, 1.0],
                  [np.nan, 0.0, 1.0], [-np.inf, -np.inf, 0.0], [3.0, 3.0, 3.0]]).astype(dtype)
    b = np.array([[1.0, -1.0, 1.0], [1.0, 0.0, np.inf], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0],
                  [1.0, 1.0, 0.0], [1.0, -1.0, 0.5]]).astype(dtype)
    for rows in (x, np.repeat(x, 1000, axis=1)):  # (and the chunked passes)
        factors = b if rows is x else np.repeat(b, 1000, axis=1)
        value, sign = fs.logsumexp(rows, b=factors, return_sign=True)
        expected = fs.logsumexp(rows.astype(np.float32), b=factors.astype(np.float32),
                                return_sign=True)
        same_bits(value, expected[0].astype(dtype))
        same_bits(sign, expected[1].astype(dtype))


def test_logsumexp_sign_without_b():
    x = np.array([[0.0, 1.0], [-np.inf, -np.inf], [np.nan, 0.0]], np.float16)
    value, sign = fs.logsumexp(x, return_sign=True)
    same_bits(value, converting("logsumexp", x, np.float16))
    np.testing.assert_array_equal(sign, np.array([1, 0, np.nan], np.float16))
    assert sign.dtype == np.float16


# --------------------------------------------------------------------------
# No float32 copies
# --------------------------------------------------------------------------

# docs/api.rst, section Half precision: "a call allocates nothing the size
# of its input besides its float16 result"
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("shape", [(1024, 1024), (1, 1 << 20)], ids=["rows", "one-row"])
def test_no_float32_copy(dtype, name, shape, rng):
    x = rng.standard_normal(shape).astype(dtype)  # 2 MiB
    getattr(fs, name)(x)  # (warm up)
    peak = peak_allocation(lambda: getattr(fs, name)(x))
    result_bytes = x.nbytes if name != "logsumexp" else x.nbytes // shape[-1]
    # a float32 copy of x would be 4 MiB
    assert peak < result_bytes + 256 * 1024, f"{peak} bytes for a {x.nbytes}-byte input"


@pytest.mark.parametrize("b_shape", ["full", "row"])
@pytest.mark.parametrize("shape", [(1024, 1024), (1, 1 << 20)], ids=["rows", "one-row"])
def test_logsumexp_b_makes_no_float32_copy(shape, b_shape, rng):
    x = rng.standard_normal(shape).astype(np.float16)
    b = rng.random(shape if b_shape == "full" else shape[-1:]).astype(np.float16)
    fs.logsumexp(x, b=b)
    peak = peak_allocation(lambda: fs.logsumexp(x, b=b, return_sign=True))
    assert peak < 256 * 1024, f"{peak} bytes for a {x.nbytes}-byte input"


# (a middle axis: the column kernel reads and writes half precision too,
# where a float32 array takes it: rows of at least 16 after the axis)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("shape, axis", [((1024, 1024), 0), ((16, 256, 256), 1)], ids=str)
def test_middle_axis_makes_no_copy(dtype, name, shape, axis, rng):
    x = rng.standard_normal(shape).astype(dtype)  # 2 MiB
    getattr(fs, name)(x, axis=axis)
    peak = peak_allocation(lambda: getattr(fs, name)(x, axis=axis))
    assert peak < x.nbytes + 64 * 1024, f"{peak} bytes for a {x.nbytes}-byte input"


@pytest.mark.parametrize("name", PRODUCTS)
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("shape", [(1024, 1024), (1, 1 << 20)], ids=["rows", "one-row"])
def test_products_make_no_float32_copy(dtype, name, shape, rng):
    a = fs.softmax(rng.standard_normal(shape, np.float32)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    getattr(fs, name)(a, g)
    peak = peak_allocation(lambda: getattr(fs, name)(a, g))
    assert peak < a.nbytes + 256 * 1024, f"{peak} bytes for {a.nbytes}-byte inputs"


@pytest.mark.parametrize("name", NAMES)
def test_masked_half_makes_no_float32_copy(name, rng):
    x = rng.standard_normal((64, 128, 128)).astype(np.float16)  # 2 MiB
    mask = rng.random((64, 1, 128)) < 0.5
    getattr(fs, name)(x, where=mask)
    peak = peak_allocation(lambda: getattr(fs, name)(x, where=mask))
    result_bytes = x.nbytes if name != "logsumexp" else x.nbytes // x.shape[-1]
    assert peak < result_bytes + 256 * 1024, f"{peak} bytes for a {x.nbytes}-byte input"


@pytest.mark.parametrize("options", [False, True], ids=["plain", "options"])
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("shape", [(1024, 1024), (1, 1 << 20)], ids=["rows", "one-row"])
def test_loss_makes_no_float32_copy(shape, dtype, kind, options, rng):
    x = rng.standard_normal(shape).astype(dtype)  # 2 MiB
    n = shape[-1]
    target = (rng.integers(0, n, shape[0]) if kind == "index"
              else rng.random(shape).astype(dtype))
    kwargs = {"weight": rng.random(n) + 0.5, "label_smoothing": 0.1} if options else {}
    fs.softmax_cross_entropy(x, target, return_grad=True, **kwargs)
    peak = peak_allocation(lambda: fs.softmax_cross_entropy(x, target, return_grad=True,
                                                            **kwargs))
    # the float16 gradient, and with options the class weights: their
    # checked float64 copy and one in float32, and for class indices the
    # float64 smoothing row too (8 + 4, or 8 + 8 + 4 bytes per class)
    options_bytes = (12 if kind == "prob" else 20) * n if options else 0
    assert peak < x.nbytes + options_bytes + 256 * 1024, \
        f"{peak} bytes for a {x.nbytes}-byte input"


def test_jacobian_makes_no_float32_copy(rng):
    s = fs.softmax(rng.standard_normal((4, 512))).astype(np.float16)
    peak = peak_allocation(lambda: fs.softmax_jacobian(s))
    assert peak < s.nbytes * 512 + 64 * 1024  # its float16 result, 2 MiB


def test_other_ml_dtypes_types_are_refused():
    ml = pytest.importorskip("ml_dtypes")
    x = np.zeros(3, ml.float8_e4m3fn)
    with pytest.raises(TypeError, match=r"^x has dtype float8_e4m3fn, which fastsoftmax does "
                                        r"not support: of ml_dtypes' types only bfloat16"):
        fs.softmax(x)
