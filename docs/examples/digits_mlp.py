"""A small NumPy network on scikit-learn's digits, with fastsoftmax.nn as the loss.

The network is 64 inputs -> 64 hidden units (ReLU) -> 10 logits, trained by
mini-batch SGD with momentum on ``sklearn.datasets.load_digits`` (8x8
images of handwritten digits; the data ship with scikit-learn, nothing is
downloaded).  The script

1. checks the gradient of the whole network's loss with respect to every
   weight, on one batch, against finite differences
   (:func:`fastsoftmax.testing.check_grad`, float64);
2. trains with :class:`fastsoftmax.nn.SoftmaxCrossEntropy` (the fused
   kernel) and prints the test accuracy, failing (exit status 1) below 95%;
3. trains again from the same seed with the NumPy reference
   (:func:`fastsoftmax.reference.softmax_cross_entropy`) in its place,
   confirms the same accuracy, and prints the time spent in the loss calls
   of each run.

Run it from anywhere (it needs scikit-learn):

    python docs/examples/digits_mlp.py [--epochs N]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fastsoftmax import reference
from fastsoftmax.nn import SoftmaxCrossEntropy
from fastsoftmax.testing import check_grad

SEED = 0
HIDDEN = 64
EPOCHS = 20
BATCH = 32
LEARNING_RATE = 0.05
MOMENTUM = 0.9
REQUIRED_ACCURACY = 0.95

Array = NDArray[np.float64]


def load_data(seed: int = SEED) -> tuple[Array, Array, NDArray[np.int64], NDArray[np.int64]]:
    """Digits as float64 pixels in [0, 1]: X_train, X_test, y_train, y_test (75% / 25%)."""
    digits = load_digits()
    X = digits.data.astype(np.float64) / 16.0  # pixel values are 0..16
    y = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=seed, stratify=y)
    return X_train, X_test, y_train, y_test


class MLP:
    """``logits = relu(X @ W1 + b1) @ W2 + b2``, with a hand-written backward pass."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, rng: np.random.Generator) -> None:
        # He initialisation keeps the ReLU activations' scale from layer to layer.
        self.params: dict[str, Array] = {
            "W1": rng.standard_normal((n_in, n_hidden)) * np.sqrt(2.0 / n_in),
            "b1": np.zeros(n_hidden),
            "W2": rng.standard_normal((n_hidden, n_out)) * np.sqrt(2.0 / n_hidden),
            "b2": np.zeros(n_out),
        }
        self._cache: tuple[Array, Array, Array] | None = None

    def forward(self, X: Array) -> Array:
        p = self.params
        pre = X @ p["W1"] + p["b1"]
        hidden = np.maximum(pre, 0.0)
        self._cache = (X, pre, hidden)
        return hidden @ p["W2"] + p["b2"]

    def backward(self, dlogits: NDArray[np.floating[Any]]) -> dict[str, Array]:
        """Gradients of the loss with respect to every parameter, given dL/dlogits."""
        assert self._cache is not None, "forward first"
        X, pre, hidden = self._cache
        dhidden = dlogits @ self.params["W2"].T
        dpre = dhidden * (pre > 0)
        return {"W1": X.T @ dpre, "b1": dpre.sum(axis=0),
                "W2": hidden.T @ dlogits, "b2": dlogits.sum(axis=0)}


class ReferenceCrossEntropy:
    """The NumPy reference with the interface of ``SoftmaxCrossEntropy``."""

    def forward(self, logits: Array, target: NDArray[np.int64]) -> Any:
        loss, self._dlogits = reference.softmax_cross_entropy(logits, target, return_grad=True)
        return loss

    def backward(self) -> Any:
        return self._dlogits


def gradient_check(X: Array, y: NDArray[np.int64],
                   seed: int = SEED) -> dict[str, tuple[tuple[int, ...], float]]:
    """check_grad of the network's loss with respect to each parameter, on one batch.

    Returns each parameter's shape and error (about 1e-9 when right); raises
    AssertionError when a gradient is wrong.
    """
    model = MLP(X.shape[1], HIDDEN, 10, np.random.default_rng(seed))
    loss_fn = SoftmaxCrossEntropy()
    errors = {}
    for name, value in model.params.items():
        def loss(w: Array, name: str = name) -> float:
            model.params[name] = w
            return float(loss_fn(model.forward(X), y))

        def grad(w: Array, name: str = name) -> Array:
            model.params[name] = w
            loss_fn(model.forward(X), y)
            return model.backward(loss_fn.backward())[name]

        errors[name] = (value.shape, check_grad(loss, grad, value))
        model.params[name] = value
    return errors


def train(loss_fn: Any, data: tuple[Array, Array, NDArray[np.int64], NDArray[np.int64]],
          epochs: int = EPOCHS, seed: int = SEED) -> tuple[MLP, float, float]:
    """Mini-batch SGD with momentum; returns (model, test accuracy, seconds in loss_fn).

    `loss_fn` has ``forward(logits, target) -> loss`` and ``backward() ->
    dlogits``.  The seed fixes the initial weights and the batch order, so
    two loss functions that compute the same thing train the same network.
    """
    X_train, X_test, y_train, y_test = data
    rng = np.random.default_rng(seed)
    model = MLP(X_train.shape[1], HIDDEN, 10, rng)
    velocity = {name: np.zeros_like(value) for name, value in model.params.items()}
    loss_seconds = 0.0
    for _ in range(epochs):
        order = rng.permutation(len(X_train))
        for start in range(0, len(order), BATCH):
            batch = order[start:start + BATCH]
            logits = model.forward(X_train[batch])
            t0 = time.perf_counter()
            loss_fn.forward(logits, y_train[batch])
            dlogits = loss_fn.backward()
            loss_seconds += time.perf_counter() - t0
            for name, g in model.backward(dlogits).items():
                velocity[name] = MOMENTUM * velocity[name] - LEARNING_RATE * g
                model.params[name] += velocity[name]
    accuracy = float(np.mean(model.forward(X_test).argmax(axis=1) == y_test))
    return model, accuracy, loss_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)

    data = load_data()
    X_train, X_test, y_train, y_test = data
    print(f"digits: {len(X_train)} training and {len(X_test)} test images, "
          f"{X_train.shape[1]} pixels, 10 classes")
    print(f"network: {X_train.shape[1]} -> {HIDDEN} (ReLU) -> 10, float64; SGD with momentum "
          f"{MOMENTUM}, learning rate {LEARNING_RATE}, batch {BATCH}, {args.epochs} epochs")

    print("\ngradient check (one batch, every parameter, fastsoftmax.testing.check_grad):")
    errors = gradient_check(X_train[:BATCH], y_train[:BATCH])
    for name, (shape, error) in errors.items():
        print(f"  d loss / d {name}  {str(shape):<8}  error {error:.1e}")

    t0 = time.perf_counter()
    fused_model, fused_accuracy, fused_seconds = train(SoftmaxCrossEntropy(), data, args.epochs)
    fused_total = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_model, ref_accuracy, ref_seconds = train(ReferenceCrossEntropy(), data, args.epochs)
    ref_total = time.perf_counter() - t0
    steps = args.epochs * -(-len(X_train) // BATCH)
    weight_diff = max(float(np.max(np.abs(fused_model.params[k] - ref_model.params[k])))
                      for k in fused_model.params)

    print(f"\n{'loss layer':<44} {'test accuracy':>13} {'loss calls':>11} {'training':>9}")
    print(f"{'fastsoftmax.nn.SoftmaxCrossEntropy':<44} {fused_accuracy:>13.2%} "
          f"{fused_seconds * 1e3:>8.1f} ms {fused_total * 1e3:>6.0f} ms")
    print(f"{'fastsoftmax.reference.softmax_cross_entropy':<44} {ref_accuracy:>13.2%} "
          f"{ref_seconds * 1e3:>8.1f} ms {ref_total * 1e3:>6.0f} ms")
    print(f"loss forward + backward per step ({steps} steps of {BATCH} x 10 logits): "
          f"{fused_seconds / steps * 1e6:.1f} us fused, {ref_seconds / steps * 1e6:.1f} us "
          f"reference ({ref_seconds / fused_seconds:.1f}x)")
    print(f"largest difference between the two trained networks' weights: {weight_diff:.1e}")

    status = 0
    if fused_accuracy < REQUIRED_ACCURACY:
        print(f"FAILED: test accuracy {fused_accuracy:.2%} < {REQUIRED_ACCURACY:.0%}")
        status = 1
    # The two losses agree to rounding, so the trained weights differ by
    # rounding only (see above) and predict the same classes.
    if fused_accuracy != ref_accuracy:
        print("FAILED: the fused and the reference loss trained different networks")
        status = 1
    if status == 0:
        print(f"OK: test accuracy {fused_accuracy:.2%} >= {REQUIRED_ACCURACY:.0%}, "
              f"the same with the reference loss")
    return status


if __name__ == "__main__":
    sys.exit(main())
