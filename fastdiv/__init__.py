"""fastdiv: fast, exact softmax with temperature and divergences between
probability distributions, on NumPy, Numba and Cython backends."""

# The kernels live in the subpackage fastdiv.backends, and the public function
# ``backends`` shares its name. Python sets a subpackage as an attribute of its
# parent when the subpackage is first imported, which would later replace the
# function; importing the subpackage first, then binding the function, keeps
# ``fastdiv.backends()`` callable.
from fastdiv import backends as _kernels  # noqa: I001
from fastdiv._dispatch import BackendUnavailableError, backends, options
from fastdiv.divergence import cross_entropy, entropy, js_distance, js_div, kl_div
from fastdiv.losses import distill_loss, nll, soft_cross_entropy
from fastdiv.pairwise import nearest, pairwise
from fastdiv.softmax import log_softmax, logsumexp, softmax

del _kernels

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "backends",
    "cross_entropy",
    "distill_loss",
    "entropy",
    "js_distance",
    "js_div",
    "kl_div",
    "log_softmax",
    "logsumexp",
    "nearest",
    "nll",
    "options",
    "pairwise",
    "soft_cross_entropy",
    "softmax",
]
