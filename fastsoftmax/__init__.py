"""fastsoftmax: fast, exact softmax, its derivatives and fused cross-entropy for NumPy.

Forward: :func:`softmax`, :func:`log_softmax`.  Derivatives (from the
softmax output, as backprop caches it): :func:`softmax_jacobian`,
:func:`softmax_jvp`, :func:`softmax_vjp`, :func:`log_softmax_vjp`.  Fused
loss: :func:`softmax_cross_entropy`.  Threads: :func:`get_num_threads`,
:func:`set_num_threads`; build facts: :func:`show_config`.

``fastsoftmax.reference`` has a plain NumPy version of every math function
(the ground truth of the tests); ``fastsoftmax.testing`` has gradient
checkers for hand-written derivatives; ``fastsoftmax.nn`` has layers
(softmax, log-softmax, softmax + cross-entropy) for hand-written NumPy
networks, and ``fastsoftmax.dask`` the functions over dask arrays.
"""

__version__ = "0.1.0"

from ._api import *  # the math functions: _api.__all__
from ._api import __all__
from ._backend import get_num_threads, set_num_threads, show_config

__all__ += ("get_num_threads", "set_num_threads", "show_config")  # after the math functions
