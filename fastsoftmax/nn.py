"""Layers for hand-written NumPy networks: softmax activations and the fused loss.

Each layer has ``forward`` (also its ``__call__``), which computes with
fastsoftmax and keeps what the backward pass needs, and ``backward``, which
returns the gradient with respect to the forward input through the fused
kernels: no Jacobian is ever formed.

Classes
-------
Softmax
    ``softmax(x)``; backward through :func:`fastsoftmax.softmax_vjp`.
LogSoftmax
    ``log_softmax(x)``; backward through :func:`fastsoftmax.log_softmax_vjp`.
SoftmaxCrossEntropy
    The loss of logits against class indices or probabilities; its gradient
    comes from the same pass as the loss (:func:`fastsoftmax.softmax_cross_entropy`).

The activations combine with any loss written by hand (mean squared error
after ``Softmax``, negative log-likelihood after ``LogSoftmax``), and
``SoftmaxCrossEntropy`` follows any hand-written network.

What a layer keeps for ``backward`` is the result of its latest ``forward``:
a second ``forward`` replaces it.  Arrays that a layer keeps are handed out
read-only, so that an in-place edit of a returned array fails loudly instead
of silently changing a later ``backward``; copy them to edit them.
"""

from __future__ import annotations

import operator
from typing import Any, SupportsIndex

import numpy as np
from numpy.typing import ArrayLike

from ._api import (_check_reduction, _loss_options, _FloatArray, _Reduction, log_softmax, log_softmax_vjp,
                   softmax, softmax_cross_entropy, softmax_vjp)

__all__ = ["Softmax", "LogSoftmax", "SoftmaxCrossEntropy"]


def _read_only(arr: _FloatArray) -> _FloatArray:
    """`arr` itself, marked read-only (it is the layer's cache)."""
    arr.flags.writeable = False
    return arr


def _check_grad_shape(grad: ArrayLike, shape: tuple[int, ...], layer: str) -> None:
    """ValueError unless `grad` has the shape of the forward output."""
    grad_shape = np.shape(grad)
    if grad_shape != shape:
        raise ValueError(f"{layer}.backward: grad has shape {grad_shape}, but the output "
                         f"of the latest forward has shape {shape}")


def _not_run(layer: str) -> RuntimeError:
    return RuntimeError(f"{layer}.backward was called before {layer}.forward: "
                        f"there is nothing to differentiate yet")


class _Activation:
    """What the activations share: the axis, the kept output, and backward
    through the output's vector-Jacobian product."""

    def __init__(self, axis: SupportsIndex = -1) -> None:
        self.axis = operator.index(axis)  # TypeError now for a float or a tuple
        self._output: _FloatArray | None = None
        self._axis = self.axis  # the axis of the kept output

    def _function(self, x: ArrayLike, axis: int) -> _FloatArray:
        raise NotImplementedError

    def _vjp(self, output: _FloatArray, grad: ArrayLike, axis: int) -> _FloatArray:
        raise NotImplementedError

    def forward(self, x: ArrayLike) -> _FloatArray:
        """The activation of `x` along `axis`, kept for `backward`.

        Parameters
        ----------
        x : array_like
            Input of any shape with `axis`; dtypes as :func:`fastsoftmax.softmax`.

        Returns
        -------
        ndarray
            The (log-)probabilities, the shape of `x`; read-only.

        Examples
        --------
        >>> import numpy as np
        >>> from fastsoftmax.nn import LogSoftmax, Softmax
        >>> Softmax(axis=0).forward(np.zeros((2, 3)))
        array([[0.5, 0.5, 0.5],
               [0.5, 0.5, 0.5]])
        >>> np.round(LogSoftmax().forward(np.array([0.0, 0.0])), 4)
        array([-0.6931, -0.6931])
        """
        output = _read_only(self._function(x, self.axis))
        self._output, self._axis = output, self.axis
        return output

    __call__ = forward

    def backward(self, grad: ArrayLike) -> _FloatArray:
        """Gradient with respect to the input of the latest `forward`.

        Parameters
        ----------
        grad : array_like
            The gradient of the loss with respect to the output (``dL/ds``
            or ``dL/dlogp``), the output's shape.

        Returns
        -------
        ndarray
            ``dL/dx``, the shape of the input (a new array).

        Raises
        ------
        RuntimeError
            If `forward` has not been called.
        ValueError
            If `grad` does not have the shape of the output.

        Examples
        --------
        >>> import numpy as np
        >>> from fastsoftmax.nn import LogSoftmax, Softmax
        >>> layer = Softmax()
        >>> _ = layer(np.array([0.0, 0.0]))
        >>> layer.backward(np.array([1.0, -1.0]))
        array([ 0.5, -0.5])
        >>> layer = LogSoftmax()
        >>> _ = layer(np.array([0.0, 0.0]))
        >>> layer.backward(np.array([1.0, 0.0]))
        array([ 0.5, -0.5])
        """
        layer = type(self).__name__
        if self._output is None:
            raise _not_run(layer)
        _check_grad_shape(grad, self._output.shape, layer)
        return self._vjp(self._output, grad, self._axis)


class Softmax(_Activation):
    """Softmax activation along one axis.

    Parameters
    ----------
    axis : int, optional
        The axis the probabilities sum to 1 along (default the last).

    See Also
    --------
    fastsoftmax.softmax, fastsoftmax.softmax_vjp

    Notes
    -----
    ``forward`` keeps its output ``s``, the only thing the backward pass
    needs: ``dL/dx = s * (g - sum(s * g, axis))`` for ``g = dL/ds``.  That
    output is returned read-only (see the module notes).

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.nn import Softmax
    >>> layer = Softmax()
    >>> s = layer(np.array([[1.0, 2.0, 3.0]]))
    >>> np.round(s, 4)
    array([[0.09  , 0.2447, 0.6652]])

    The gradient of ``s[0, 2]`` with respect to the input:

    >>> np.round(layer.backward(np.array([[0.0, 0.0, 1.0]])), 4)
    array([[-0.0599, -0.1628,  0.2227]])
    """

    def _function(self, x: ArrayLike, axis: int) -> _FloatArray:
        return softmax(x, axis)

    def _vjp(self, output: _FloatArray, grad: ArrayLike, axis: int) -> _FloatArray:
        return softmax_vjp(output, grad, axis)


class LogSoftmax(_Activation):
    """Log-softmax activation along one axis.

    Parameters
    ----------
    axis : int, optional
        The class axis (default the last).

    See Also
    --------
    fastsoftmax.log_softmax, fastsoftmax.log_softmax_vjp

    Notes
    -----
    ``forward`` keeps its output ``logp``: the backward pass is
    ``dL/dx = g - exp(logp) * sum(g, axis)`` for ``g = dL/dlogp``.  That
    output is returned read-only (see the module notes).

    Examples
    --------
    A negative log-likelihood written by hand on top of the layer gives the
    familiar gradient ``softmax(x) - onehot``:

    >>> import numpy as np
    >>> from fastsoftmax.nn import LogSoftmax
    >>> layer = LogSoftmax()
    >>> logp = layer(np.array([[1.0, 2.0, 3.0]]))
    >>> loss = -logp[0, 0]
    >>> grad = np.zeros_like(logp)
    >>> grad[0, 0] = -1.0
    >>> np.round(layer.backward(grad), 4)
    array([[-0.91  ,  0.2447,  0.6652]])
    """

    def _function(self, x: ArrayLike, axis: int) -> _FloatArray:
        return log_softmax(x, axis)

    def _vjp(self, output: _FloatArray, grad: ArrayLike, axis: int) -> _FloatArray:
        return log_softmax_vjp(output, grad, axis)


class SoftmaxCrossEntropy:
    """Softmax cross-entropy loss of logits, with its gradient from the same pass.

    Parameters
    ----------
    axis : int, optional
        The class axis of the logits (default the last).
    reduction : {"mean", "sum", "none"}, optional
        Mean over rows (default), sum, or one loss per row.
    weight : array_like, optional
        One weight per class (>= 0), as in PyTorch's ``CrossEntropyLoss``.
    ignore_index : int, optional
        Class-index targets with this value add nothing (their gradient is 0).
    label_smoothing : float, optional
        In ``[0, 1]``: mix the target with the uniform distribution.

    The options mean what they mean in
    :func:`fastsoftmax.softmax_cross_entropy` (and in PyTorch); they are
    checked here (the weights' count against the classes at the first
    ``forward``).

    See Also
    --------
    fastsoftmax.softmax_cross_entropy

    Notes
    -----
    ``forward`` calls :func:`fastsoftmax.softmax_cross_entropy` once, with
    ``return_grad=True``, and keeps ``dlogits``; ``backward`` only scales it
    by the upstream gradient.  The target is class indices (an integer
    dtype, the shape of the logits without `axis`) or probabilities (a
    floating dtype, the shape of the logits).  For predictions, take
    ``argmax`` of the logits, or :func:`fastsoftmax.softmax` of them.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.nn import SoftmaxCrossEntropy
    >>> loss_fn = SoftmaxCrossEntropy()
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> round(float(loss_fn(logits, np.array([0, 1]))), 6)
    0.31854
    >>> np.round(loss_fn.backward(), 4)          # (softmax(logits) - onehot) / 2
    array([[-0.1705,  0.1212,  0.0493],
           [ 0.0543, -0.0988,  0.0445]])
    """

    def __init__(self, axis: SupportsIndex = -1, reduction: _Reduction = "mean", *,
                 weight: ArrayLike | None = None, ignore_index: int | None = None,
                 label_smoothing: float = 0.0) -> None:
        _check_reduction(reduction)
        self.axis = operator.index(axis)  # TypeError now for a float or a tuple
        self.reduction: _Reduction = reduction
        # checked now (all but the weights' count, which needs the logits)
        self.weight = None if weight is None else np.array(weight)
        _loss_options(self.weight, ignore_index, label_smoothing,
                      n=len(self.weight) if self.weight is not None and self.weight.ndim else 0,
                      is_index=True)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self._dlogits: _FloatArray | None = None
        self._loss_shape: tuple[int, ...] = ()
        self._axis = self.axis  # normalised (non-negative) once forward has run

    def forward(self, logits: ArrayLike, target: ArrayLike) -> np.floating[Any] | _FloatArray:
        """The loss of `logits` against `target`; ``dlogits`` is kept for `backward`.

        Parameters
        ----------
        logits : array_like
            Unnormalised log-probabilities, classes along `axis`.
        target : array_like
            Class indices (integer dtype, the shape of `logits` without
            `axis`) or probabilities (floating dtype, the shape of `logits`).

        Returns
        -------
        numpy scalar or ndarray
            A scalar for "mean" and "sum"; one loss per row, an array of the
            batch shape, for "none".

        Examples
        --------
        >>> import numpy as np
        >>> from fastsoftmax.nn import SoftmaxCrossEntropy
        >>> loss_fn = SoftmaxCrossEntropy(reduction="none")
        >>> np.round(loss_fn.forward(np.zeros((2, 4)), np.array([3, 0])), 4)
        array([1.3863, 1.3863])
        """
        # One branch per reduction, so that the type checker sees which
        # overload (scalar or per-row loss) is called.
        loss: np.floating[Any] | _FloatArray
        weight, ignore, smoothing = self.weight, self.ignore_index, self.label_smoothing
        if self.reduction == "none":
            loss, dlogits = softmax_cross_entropy(
                logits, target, self.axis, reduction="none", return_grad=True, weight=weight,
                ignore_index=ignore, label_smoothing=smoothing)
        else:
            loss, dlogits = softmax_cross_entropy(
                logits, target, self.axis, reduction=self.reduction, return_grad=True,
                weight=weight, ignore_index=ignore, label_smoothing=smoothing)
        self._dlogits = _read_only(dlogits)
        self._loss_shape = np.shape(loss)
        # valid: the call above has checked the axis against the logits
        self._axis = self.axis % dlogits.ndim if dlogits.ndim else 0
        return loss

    __call__ = forward

    def backward(self, grad_loss: ArrayLike = 1.0) -> _FloatArray:
        """Gradient of the loss with respect to the logits of the latest `forward`.

        Parameters
        ----------
        grad_loss : array_like, optional
            The upstream gradient ``dL/dloss`` (default 1: the loss is the
            end of the network).  A scalar, or for ``reduction="none"`` also
            one value per row (the shape of the loss).

        Returns
        -------
        ndarray
            ``dL/dlogits``, the shape and floating dtype of the logits.  For
            a `grad_loss` of 1 (the default) it is the kept ``dlogits``
            itself, read-only; otherwise a new array.

        Raises
        ------
        RuntimeError
            If `forward` has not been called.
        ValueError
            If `grad_loss` is neither a scalar nor of the loss's shape.

        Examples
        --------
        Weighting the rows of a per-row loss:

        >>> import numpy as np
        >>> from fastsoftmax.nn import SoftmaxCrossEntropy
        >>> loss_fn = SoftmaxCrossEntropy(reduction="none")
        >>> _ = loss_fn(np.zeros((2, 2)), np.array([0, 1]))
        >>> loss_fn.backward(np.array([1.0, 3.0]))
        array([[-0.5,  0.5],
               [ 1.5, -1.5]])
        """
        if self._dlogits is None:
            raise _not_run("SoftmaxCrossEntropy")
        dlogits = self._dlogits
        # Keep the logits' dtype: a float64 upstream gradient must not turn
        # float32 logits' gradient into float64.
        g = np.asarray(grad_loss, dtype=dlogits.dtype)
        if g.ndim == 0:
            # the common case, the loss ends the network: no copy
            return dlogits if g == 1 else dlogits * g
        if g.shape != self._loss_shape:
            raise ValueError(
                f"SoftmaxCrossEntropy.backward: grad_loss must be a scalar or have the "
                f"shape of the loss {self._loss_shape} (reduction={self.reduction!r}), "
                f"got shape {g.shape}")
        # One upstream value per row, broadcast along the class axis.
        return dlogits * np.expand_dims(g, self._axis)
