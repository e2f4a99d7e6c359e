"""fastsoftmax.testing: finite-difference checks of hand-written derivatives."""

import re

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax.testing import DEFAULT_RTOL, check_grad, check_vjp, numerical_jacobian


# --------------------------------------------------------------------------
# numerical_jacobian
# --------------------------------------------------------------------------

@pytest.mark.parametrize("x_shape, f, f_shape", [
    ((3,), lambda x: x ** 2, (3,)),
    ((2, 3), lambda x: x.sum(), ()),
    ((2, 3), lambda x: x.sum(axis=0), (3,)),
    ((4,), lambda x: np.outer(x, x), (4, 4)),
    ((), lambda x: np.stack([x, 2 * x]), (2,)),
])
def test_numerical_jacobian_shape(x_shape, f, f_shape, rng):
    # "Shape f(x).shape + x.shape"
    x = rng.standard_normal(x_shape)
    assert numerical_jacobian(f, x).shape == f_shape + x_shape


def test_numerical_jacobian_of_a_linear_map_is_the_matrix(rng):
    a = rng.standard_normal((4, 3))
    x = rng.standard_normal(3)
    # central differences of a linear map are exact up to rounding: ~eps/h
    np.testing.assert_allclose(numerical_jacobian(lambda x: a @ x, x), a, rtol=0, atol=1e-9)


def test_numerical_jacobian_accuracy_on_a_known_function(rng):
    # f(x)_i = sin(x_i) * sum(x): J_ij = cos(x_i) sum(x) δ_ij + sin(x_i)
    x = rng.standard_normal((2, 3))
    jac = numerical_jacobian(lambda x: np.sin(x) * x.sum(), x)
    flat = x.ravel()
    exact = np.diag(np.cos(flat) * flat.sum()) + np.sin(flat)[:, None]
    # truncation h² |f'''| plus rounding eps/h, h = cbrt(eps) ~ 6e-6: ~1e-10
    np.testing.assert_allclose(jac.reshape(6, 6), exact, rtol=0, atol=1e-8)


def test_numerical_jacobian_large_arguments_use_a_relative_step():
    # step = cbrt(eps) * max(1, |x|): x = 1e8 would lose every digit with h = 6e-6
    x = np.array([1e8, -3e7])
    jac = numerical_jacobian(lambda x: x ** 2, x)
    np.testing.assert_allclose(np.diag(jac), 2 * x, rtol=1e-8)


def test_numerical_jacobian_does_not_modify_x(rng):
    x = rng.standard_normal(5)
    copy = x.copy()
    numerical_jacobian(np.exp, x)
    np.testing.assert_array_equal(x, copy)


def test_numerical_jacobian_explicit_step(rng):
    x = rng.standard_normal(3)
    # a quadratic: central differences are exact for any step
    jac = numerical_jacobian(lambda x: x ** 2, x, eps=0.5)
    np.testing.assert_allclose(jac, np.diag(2 * x), rtol=1e-14, atol=1e-14)


# --------------------------------------------------------------------------
# check_vjp / check_grad on correct and on wrong code
# --------------------------------------------------------------------------

def _worst_index(message):
    match = re.search(r"worst at index (\([\d, ]*\))", message)
    assert match, message
    return eval(match.group(1))  # a tuple of ints


def test_check_vjp_accepts_a_correct_vjp(rng):
    a = rng.standard_normal((3, 4))
    x, g = rng.standard_normal(4), rng.standard_normal(3)
    err = check_vjp(lambda x: a @ np.tanh(x), lambda x, g: (g @ a) * (1 - np.tanh(x) ** 2),
                    x, g)
    assert 0 <= err < 1e-8


def test_check_vjp_rejects_a_wrong_vjp_and_names_the_worst_index(rng):
    x, g = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))

    def vjp(x, g):  # right except at (1, 2)
        result = g * np.cos(x)
        result[1, 2] += 1e-3
        return result

    with pytest.raises(AssertionError) as excinfo:
        check_vjp(np.sin, vjp, x, g)
    assert _worst_index(str(excinfo.value)) == (1, 2)


def test_check_grad_accepts_a_correct_gradient(rng):
    x = rng.standard_normal((3, 2))
    assert check_grad(lambda x: np.sum(x ** 3), lambda x: 3 * x ** 2, x) < 1e-8


def test_check_grad_rejects_a_wrong_gradient_and_names_the_worst_index(rng):
    x = rng.standard_normal((3, 2))

    def grad(x):  # right except at (2, 0)
        result = 3 * x ** 2
        result[2, 0] *= 1.05
        return result

    with pytest.raises(AssertionError) as excinfo:
        check_grad(lambda x: np.sum(x ** 3), grad, x)
    message = str(excinfo.value)
    assert _worst_index(message) == (2, 0)
    assert "claimed" in message and "numerical" in message


def test_check_grad_rejects_a_wrong_shape(rng):
    x = rng.standard_normal((3, 2))
    with pytest.raises(AssertionError, match="shape"):
        check_grad(lambda x: np.sum(x ** 2), lambda x: 2 * x.ravel(), x)


def test_check_grad_requires_a_scalar_function(rng):
    with pytest.raises(ValueError):
        check_grad(lambda x: x ** 2, lambda x: 2 * x, rng.standard_normal(3))


def test_check_vjp_requires_g_of_the_output_shape(rng):
    with pytest.raises(ValueError):
        check_vjp(np.sin, lambda x, g: g * np.cos(x), rng.standard_normal(3),
                  rng.standard_normal(4))


def test_nan_in_the_claimed_derivative_fails(rng):
    x = rng.standard_normal(4)

    def grad(x):
        result = 2 * x
        result[3] = np.nan
        return result

    with pytest.raises(AssertionError) as excinfo:
        check_grad(lambda x: np.sum(x ** 2), grad, x)
    assert _worst_index(str(excinfo.value)) == (3,)


def test_rtol_is_honoured(rng):
    x = rng.standard_normal(4)
    grad = lambda x: 1.01 * 2 * x  # noqa: E731  (a 1 % error)
    with pytest.raises(AssertionError):
        check_grad(lambda x: np.sum(x ** 2), grad, x)
    assert check_grad(lambda x: np.sum(x ** 2), grad, x, rtol=0.1) < 0.1
    assert DEFAULT_RTOL == 1e-6


# --------------------------------------------------------------------------
# The classic softmax mistake
# --------------------------------------------------------------------------
# The softmax Jacobian is diag(s) - s sᵀ; using only its diagonal,
# g * s * (1 - s), is the classic wrong backward pass.  The checker must
# catch it, while the library's VJP passes.

SOFTMAX_CASES = [((6,), -1), ((4, 5), -1), ((3, 4, 2), 1)]


def elementwise_softmax_vjp(x, g, axis):
    s = fs.softmax(x, axis)
    return g * s * (1 - s)


@pytest.mark.parametrize("shape, axis", SOFTMAX_CASES)
def test_the_elementwise_softmax_vjp_fails_the_check(shape, axis, rng):
    x, g = 2 * rng.standard_normal(shape), rng.standard_normal(shape)
    with pytest.raises(AssertionError, match="worst at index"):
        check_vjp(lambda x: fs.softmax(x, axis),
                  lambda x, g: elementwise_softmax_vjp(x, g, axis), x, g)


@pytest.mark.parametrize("shape, axis", SOFTMAX_CASES)
def test_fastsoftmax_softmax_vjp_passes_the_check(shape, axis, rng):
    x, g = 2 * rng.standard_normal(shape), rng.standard_normal(shape)
    err = check_vjp(lambda x: fs.softmax(x, axis),
                    lambda x, g: fs.softmax_vjp(fs.softmax(x, axis), g, axis), x, g)
    assert err < 1e-8


@pytest.mark.parametrize("shape, axis", SOFTMAX_CASES)
def test_a_one_percent_error_is_caught(shape, axis, rng):
    # A subtler mistake: right formula, 1 % too large.  On these O(0.1..1)
    # derivatives that is an error of ~1e-3, three orders above the 1e-6
    # threshold and seven above the finite-difference noise.
    x, g = 2 * rng.standard_normal(shape), 3 * rng.standard_normal(shape)
    with pytest.raises(AssertionError):
        check_vjp(lambda x: fs.softmax(x, axis),
                  lambda x, g: 1.01 * fs.softmax_vjp(fs.softmax(x, axis), g, axis), x, g)


def test_a_one_percent_error_in_log_softmax_vjp_is_caught(rng):
    x, g = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))

    def vjp(x, g):  # the sum term 1 % off
        logp = fs.log_softmax(x)
        return g - 1.01 * np.exp(logp) * g.sum(-1, keepdims=True)

    with pytest.raises(AssertionError):
        check_vjp(fs.log_softmax, vjp, x, g)
    assert check_vjp(fs.log_softmax,
                     lambda x, g: fs.log_softmax_vjp(fs.log_softmax(x), g), x, g) < 1e-8
