"""fastdiv: fast, exact softmax with temperature and divergences between
probability distributions, on NumPy, Numba and Cython backends."""

from fastdiv._dispatch import BackendUnavailableError, backends, options
from fastdiv.softmax import log_softmax, logsumexp, softmax

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "backends",
    "log_softmax",
    "logsumexp",
    "options",
    "softmax",
]
