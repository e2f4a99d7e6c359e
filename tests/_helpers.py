"""Test helpers shared by the test modules (conftest puts this folder on sys.path)."""

import numpy as np

FLOAT_DTYPES = [np.float32, np.float64]


def oracle_dtype(dtype):
    """Higher precision to compute expected values in."""
    return np.float64 if np.dtype(dtype) == np.float32 else np.longdouble


def oracle(func, *arrays, **kwargs):
    """The reference function evaluated in higher precision (float64 for
    float32 data, long double for float64 data)."""
    dtype = np.result_type(*arrays)
    high = [np.asarray(a, dtype=oracle_dtype(dtype)) for a in arrays]
    return func(*high, **kwargs)


def assert_ulp_close(actual, expected, dtype, ulps, floor=None):
    """|actual - expected| <= ulps * ulp(expected) elementwise, where
    ulp(e) = eps * |e| floored at eps * `floor`, with NaN and infinities
    required to match exactly.

    The default floor is the dtype's smallest normal number, so subnormal
    results are held to `ulps` subnormal steps (their ulp is absolute).  A
    larger floor suits values whose error is absolute rather than relative
    (e.g. log-probabilities near 0, which inherit eps * |log S|)."""
    if floor is None:
        floor = np.finfo(dtype).tiny
    actual = np.asarray(actual, dtype=np.float64 if dtype == np.float32 else np.longdouble)
    expected = np.asarray(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape
    same_special = (np.isnan(actual) == np.isnan(expected)).all() and \
        (actual[np.isinf(expected)] == expected[np.isinf(expected)]).all()
    assert same_special, "NaN/inf pattern differs"
    finite = np.isfinite(expected)
    eps = np.finfo(dtype).eps
    scale = eps * np.maximum(np.abs(expected), floor)[finite]   # one ulp per element
    err = np.abs(actual[finite] - expected[finite])
    if err.size:
        safe = np.where(scale > 0, scale, 1.0)  # a zero scale (floor=0) allows no error
        in_ulp = np.where(scale > 0, err / safe, np.where(err > 0, np.inf, 0.0))
        worst = int(np.argmax(in_ulp))
        assert in_ulp[worst] <= ulps, (
            f"error {err[worst]:.3g} is {in_ulp[worst]:.2f} ulp > {ulps} ulp "
            f"(expected {expected[finite][worst]!r}, got {actual[finite][worst]!r})")
