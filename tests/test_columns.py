"""The column kernel: softmax along a non-last axis without a transposed copy.

A C-contiguous array reduced along one middle axis is a stack of (n, inner)
blocks; fastsoftmax runs those down the columns, vectorised across them,
when inner >= ``_api._COLS_MIN_INNER``.  The tests here lower that
threshold to 1 so that every shape takes the column kernel, check that it
does, and hold it to the same error budget as the row kernel.
"""

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _api, _backend
from _registry import DTYPE_IDS, FLOAT_DTYPES, FORWARD, FORWARD_IDS, check, oracle


@pytest.fixture
def cols_calls(monkeypatch, simd_path):
    """Every middle-axis reduction of a C-contiguous array takes the column
    kernel; yields the list of its calls' input shapes."""
    calls = []
    kernels = _backend.kernels

    class Spy:
        def __getattr__(self, name):
            return getattr(kernels, name)

        def softmax_cols(self, x, out, *args):
            calls.append(tuple(x.shape))
            return kernels.softmax_cols(x, out, *args)

    monkeypatch.setattr(_api, "_COLS_MIN_INNER", 1)
    with _backend.use(Spy()):  # inside simd_path's block: undone before it
        yield calls


SHAPES_AXES = [
    ((7, 1), 0),            # inner 1
    ((1, 5), 0),            # n = 1
    ((2, 3), 0),
    ((100, 15), 0),
    ((33, 16), 0),
    ((9, 17), 0),
    ((40, 129), 0),         # one full tile of 128 columns and one more
    ((3, 50, 300), 1),      # several tiles per outer block
    ((4, 6, 5, 7), 1),      # inner = 5 * 7
    ((2, 3, 4, 70), 2),
]


@pytest.mark.parametrize("shape, axis", SHAPES_AXES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_matches_reference(func, reference, dtype, shape, axis, cols_calls, threads, rng):
    x = (rng.standard_normal(shape) * 8).astype(dtype)
    got = func(x, axis=axis)
    n = shape[axis]
    inner = int(np.prod(shape[axis + 1:]))
    assert cols_calls == [(int(np.prod(shape[:axis])), n, inner)]
    assert got.dtype == dtype and got.shape == shape
    check(got, oracle(reference, x, axis=axis), func, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_special_values_stay_in_their_column(func, reference, dtype, cols_calls, threads, rng):
    x = rng.standard_normal((6, 40)).astype(dtype)
    x[:, 1] = -np.inf            # a fully masked column: NaN
    x[2:, 3] = -np.inf           # partly masked: exactly 0 / -inf there
    x[4, 5] = np.nan             # NaN, +inf: NaN in that column only
    x[0, 7] = np.inf
    x[:, 9] = np.finfo(dtype).max
    x[0, 11] = -np.finfo(dtype).max
    x[:, 13] = [0, -200, -200, -200, -200, -200]   # exp underflows but for one
    got = func(x, axis=0)
    assert cols_calls
    expected = oracle(reference, x, axis=0)
    for col in (1, 5, 7):
        assert np.isnan(got[:, col]).all()
    masked = got[2:, 3]
    assert (masked == (-np.inf if func is fs.log_softmax else 0.0)).all()
    good = np.ones(40, bool)
    good[[1, 5, 7]] = False
    check(got[:, good], expected[:, good], func, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_out_in_place_and_other_dtypes(func, reference, dtype, cols_calls, threads, rng):
    x = rng.standard_normal((30, 20)).astype(dtype)
    expected = func(x, axis=0)
    out = np.empty_like(x)
    assert func(x, axis=0, out=out) is out                 # straight into out
    np.testing.assert_array_equal(out, expected)
    assert func(x, axis=0, out=x) is x                     # in place
    np.testing.assert_array_equal(x, expected)
    strided = np.empty((30, 40), dtype)[:, ::2]            # through a buffer
    assert func(x.copy(), axis=0, out=strided) is strided
    half = x.astype(np.float16)                            # float16 columns
    got16 = func(half, axis=0)
    assert got16.dtype == np.float16
    np.testing.assert_array_equal(got16, func(half.astype(np.float32), axis=0)
                                  .astype(np.float16))


@pytest.mark.parametrize("func, reference", FORWARD, ids=FORWARD_IDS)
def test_default_threshold_takes_rows_for_short_inner_axes(func, reference, rng):
    """Below the threshold (inner < 16) the transposed row path is used."""
    calls = []
    kernels = _backend.kernels

    class Spy:
        def __getattr__(self, name):
            return getattr(kernels, name)

        def softmax_cols(self, *args):
            calls.append(args[0].shape)
            return kernels.softmax_cols(*args)

    with _backend.use(Spy()):
        x = rng.standard_normal((50, 8))
        np.testing.assert_allclose(func(x, axis=0), reference(x, axis=0), rtol=1e-13,
                                   atol=1e-300)
        assert calls == []
        func(rng.standard_normal((50, 16)), axis=0)
    assert calls == [(1, 50, 16)]
