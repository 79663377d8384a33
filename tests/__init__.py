"""fastdiv test suite (a package, so that benchmarks can reuse tests.conftest)."""
