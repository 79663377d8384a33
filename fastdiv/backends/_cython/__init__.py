"""Cython kernels, compiled by setup.py with OpenMP where the compiler has it."""
