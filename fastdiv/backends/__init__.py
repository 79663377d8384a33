"""Kernels: the NumPy reference, the Numba kernels and the Cython kernels.

Nothing here is public; ``fastdiv._dispatch`` finds a kernel by topic and name.
"""
