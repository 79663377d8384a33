# cython: language_level=3
"""Thread control shared by every Cython kernel module.

Each module's ``prange`` loops take their number of threads from OpenMP's
setting for the calling thread, which :func:`set_num_threads` changes; all
modules link the same OpenMP runtime, so one call here governs them all.
Compiled without OpenMP, the kernels run serially and these do nothing.
"""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static void fastdiv_set_threads(int n) { omp_set_num_threads(n); }
    static int fastdiv_max_threads(void) { return omp_get_max_threads(); }
    static int fastdiv_has_openmp(void) { return 1; }
    #else
    static void fastdiv_set_threads(int n) { (void)n; }
    static int fastdiv_max_threads(void) { return 1; }
    static int fastdiv_has_openmp(void) { return 0; }
    #endif
    """
    void fastdiv_set_threads(int n) nogil
    int fastdiv_max_threads() nogil
    int fastdiv_has_openmp() nogil


def set_num_threads(int n):
    """Use ``n`` threads (at least 1) in the calling thread's next loops."""
    fastdiv_set_threads(n if n > 1 else 1)


def max_threads():
    """Threads the next parallel loop of the calling thread would use."""
    return fastdiv_max_threads()


def has_openmp():
    """True when the extensions were compiled with OpenMP."""
    return fastdiv_has_openmp() == 1
