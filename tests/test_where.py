"""where= on softmax, log_softmax and logsumexp (docs/api.rst, section Masks).

The equivalence grid (test_equivalence.py) runs the "where-" variants of
the registry on every shape, axis, layout and thread count, with NaN and
inf at the excluded entries; this file holds what the grid does not show:
that a masked row is exactly the row with -inf at its excluded entries,
empty rows, bad masks, the memory a broadcast mask costs, and a huge row
split across threads.
"""

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import reference as ref

from _helpers import peak_allocation
from _registry import FLOAT_DTYPES, DTYPE_IDS, oracle, assert_ulp_close, representable

MASKED_NAMES = ["softmax", "log_softmax", "logsumexp"]
# what every entry of a row with no included entry is
EMPTY_ROW = {"softmax": 0.0, "log_softmax": -np.inf, "logsumexp": -np.inf}


def masked_call(name, x, axis=-1, **kwargs):
    return getattr(fs, name)(x, axis, **kwargs)


# (x's shape, the mask's shape): the broadcast forms of docs/api.rst,
# section Masks, and a full mask
MASK_SHAPES = [((6, 9), (9,)), ((6, 9), (6, 1)), ((6, 9), (6, 9)),
               ((2, 3, 4, 9), (2, 1, 1, 9)), ((5, 300), (300,))]


# docs/api.rst, section Masks: "the other entries are normalised among
# themselves" -- exactly as if the excluded entries were -inf (the kernels
# compute that row), whatever x holds there
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("x_shape, mask_shape", MASK_SHAPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_masked_row_is_the_row_with_minus_inf_excluded(name, x_shape, mask_shape, dtype,
                                                      threads, rng):
    x = rng.standard_normal(x_shape).astype(dtype) * 3
    mask = rng.random(mask_shape) < 0.7
    full = np.broadcast_to(mask, x_shape)
    garbage = np.where(full, x, rng.choice([np.nan, np.inf, -np.inf, 1e30], x_shape))
    result = masked_call(name, garbage.astype(dtype), where=mask)
    expected = masked_call(name, np.where(full, x, -np.inf).astype(dtype))
    kept = full.any(axis=-1)
    np.testing.assert_array_equal(result[kept], expected[kept])
    assert (result[~full] == EMPTY_ROW[name]).all()
    if name == "softmax":
        np.testing.assert_allclose(result[kept].sum(-1), 1.0, rtol=4 * np.finfo(dtype).eps)


# docs/api.rst, section Masks: "A row with no included entry gives 0
# (softmax) or -inf (log_softmax)"; section logsumexp: "with no included
# entry ... gives -inf"
@pytest.mark.parametrize("name", MASKED_NAMES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_a_row_with_no_included_entry_is_empty_not_nan(name, dtype, threads):
    x = np.array([[1.0, np.nan, 3.0], [np.nan, np.inf, -np.inf], [0.0, 0.0, 0.0]], dtype)
    mask = np.array([[True, False, True], [False, False, False], [False, False, False]])
    result = np.asarray(masked_call(name, x, where=mask))
    expected = ref.logsumexp(x, where=mask) if name == "logsumexp" else \
        getattr(ref, name)(x, where=mask)
    np.testing.assert_allclose(result, expected, rtol=4 * np.finfo(dtype).eps)
    assert (result[1:] == EMPTY_ROW[name]).all()
    assert not np.isnan(result).any()
    if name == "logsumexp":
        _, sign = fs.logsumexp(x, where=mask, return_sign=True)
        np.testing.assert_array_equal(sign, [1, 0, 0])


@pytest.mark.parametrize("name", MASKED_NAMES)
def test_an_included_row_of_only_minus_inf_is_still_nan_or_minus_inf(name):
    # The mask empties a row; -inf in an included entry does not: such a
    # row is the all -inf row of section Forward (NaN), and -inf for
    # logsumexp (section logsumexp: "a row of only -inf ... gives -inf").
    x = np.array([[-np.inf, 5.0]])
    result = masked_call(name, x, where=np.array([True, False]))
    expected = -np.inf if name == "logsumexp" else np.nan
    np.testing.assert_array_equal(np.asarray(result).ravel()[:1], [expected])


@pytest.mark.parametrize("name", MASKED_NAMES)
@pytest.mark.parametrize("where", [True, [True, False, True], np.True_],
                         ids=["bool", "list", "numpy-bool"])
def test_any_boolean_array_like_is_a_mask(name, where):
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    expected = getattr(ref, name)(x, where=where)
    np.testing.assert_allclose(masked_call(name, x, where=where), expected, rtol=1e-15)


@pytest.mark.parametrize("name", MASKED_NAMES)
def test_where_false_everywhere_and_empty_axes(name):
    x = np.ones((2, 3))
    np.testing.assert_array_equal(masked_call(name, x, where=False),
                                  np.full((2, 3) if name != "logsumexp" else (2,),
                                          EMPTY_ROW[name]))
    empty = masked_call(name, np.ones((2, 0)), where=np.ones(0, bool))
    assert np.asarray(empty).shape == ((2, 0) if name != "logsumexp" else (2,))
    scalar = masked_call(name, np.float64(2.0), where=np.False_)
    assert np.asarray(scalar) == EMPTY_ROW[name]


# docs/api.rst, section Masks: "A where that is not boolean raises
# TypeError; one that does not broadcast raises ValueError naming both
# shapes" -- before anything is written
@pytest.mark.parametrize("name", MASKED_NAMES)
@pytest.mark.parametrize("where", [np.array([1, 0, 1]), np.array([1.0, 0.0, 1.0]),
                                   [1, 0, 1], ["a", "b", "c"], [None, True, False]],
                         ids=["int", "float", "int-list", "strings", "object"])
def test_a_mask_that_is_not_boolean_is_a_type_error(name, where):
    x = np.full((2, 3), 7.0)
    out = np.full((2, 3) if name != "logsumexp" else (2,), 7.0)
    with pytest.raises(TypeError, match=r"^where must be a boolean array .* got dtype"):
        masked_call(name, x, where=where, out=out)
    assert (out == 7.0).all() and (x == 7.0).all()


@pytest.mark.parametrize("name", MASKED_NAMES)
@pytest.mark.parametrize("mask_shape", [(2,), (3, 1), (2, 2, 3), (4, 3)])
def test_a_mask_that_does_not_broadcast_names_both_shapes(name, mask_shape):
    x = np.full((2, 3), 7.0)
    out = np.full((2, 3) if name != "logsumexp" else (2,), 7.0)
    message = (rf"^where must broadcast to the shape of x, got where.shape="
               rf"{mask_shape}".replace("(", r"\(").replace(")", r"\)")
               + r" and x.shape=\(2, 3\)$")
    with pytest.raises(ValueError, match=message):
        masked_call(name, x, where=np.ones(mask_shape, bool), out=out)
    assert (out == 7.0).all()


def test_a_masked_array_as_x_points_at_where():
    x = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    with pytest.raises(TypeError, match=r"where=~mask"):
        fs.softmax(x)


# docs/api.rst, section Masks: "A mask that broadcasts is not expanded to
# x's size in memory"
@pytest.mark.parametrize("name", MASKED_NAMES)
@pytest.mark.parametrize("mask_shape", [(512,), (8, 1, 1, 512), (8, 4, 32, 1)],
                         ids=["row", "attention", "row-switch"])
def test_a_broadcast_mask_is_never_expanded(name, mask_shape, rng):
    x = rng.standard_normal((8, 4, 32, 512)).astype(np.float32)  # 2 MiB
    mask = rng.random(mask_shape) < 0.5
    out = np.empty(x.shape if name != "logsumexp" else x.shape[:-1], np.float32)
    masked_call(name, x, where=mask, out=out)  # (warm up)
    peak = peak_allocation(lambda: masked_call(name, x, where=mask, out=out))
    # one byte per element of x would be 512 KiB; a row offset per row is
    # 8 KiB, Python objects a few more
    assert peak < 64 * 1024, f"{peak} bytes for a mask of shape {mask_shape}"


# docs/api.rst, section Threads: "a single huge row is still split across
# threads" -- with a mask too, whose first chunk is all excluded
@pytest.mark.parametrize("name", MASKED_NAMES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_one_huge_masked_row_split_across_threads(name, dtype, rng):
    n = 200_003
    x = (rng.standard_normal(n) * 4).astype(dtype)
    mask = rng.random(n) < 0.8
    mask[:120_000] = False
    x[~mask] = np.nan
    expected = representable(oracle(getattr(ref, name), x, where=mask), np.dtype(dtype))
    results = []
    try:
        for threads in (1, 2, 3):
            fs.set_num_threads(threads)
            results.append(masked_call(name, x, where=mask))
    finally:
        fs.set_num_threads(None)
    for result in results:
        if name == "logsumexp":
            assert_ulp_close(result, expected, dtype, 2, floor=np.abs(np.nanmax(x[mask])))
        else:
            got, want = np.asarray(result)[mask], np.asarray(expected)[mask]
            floor = np.abs(want).max() if name == "log_softmax" else None
            assert_ulp_close(got, want, dtype, 4, floor=floor)
            assert (np.asarray(result)[~mask] == EMPTY_ROW[name]).all()


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_in_place_with_a_mask(name, rng):
    x = rng.standard_normal((7, 33))
    mask = rng.random(33) < 0.6
    expected = masked_call(name, x, where=mask)
    assert masked_call(name, x, where=mask, out=x) is x
    np.testing.assert_array_equal(x, expected)


def test_logsumexp_with_b_and_a_mask_ignores_b_where_excluded(rng):
    x = rng.standard_normal((4, 10))
    b = rng.random((4, 10)) + 0.5
    mask = rng.random(10) < 0.6
    garbage = np.where(mask, b, np.inf)
    value, sign = fs.logsumexp(x, b=garbage, where=mask, return_sign=True)
    expected = fs.logsumexp(x, b=np.where(mask, b, 0), return_sign=True)
    np.testing.assert_array_equal(value, expected[0])
    np.testing.assert_array_equal(sign, expected[1])
