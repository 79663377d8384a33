# cython: language_level=3
"""Cython kernels for pairwise Jensen-Shannon matrices, dense and CSR.

Twins of ``js_pairwise`` and ``js_pairwise_csr`` in
:mod:`fastdiv.backends.reference`; the method is that of
:mod:`fastdiv.backends.numba_pairwise` (read its docstring): for a scalar
p = P[i, c] against a transposed tile of Q, one vectorised log per
(i, j, c) of

    p (log(2p) - log(p + q)) + q (log(2q) - log(p + q)),

exactly 0 where q == p, summed over c in increasing order into one float64
accumulator per (i, j), so that the result does not depend on the tile
sizes or on the thread count. The inner loops are C below. On a CPU with
AVX-512F the dense one uses the inline log of fastdiv_log8.h (1.5x faster
on a core than a libmvec call; accurate to 1 ulp, or absolutely to 9e-18
near log x = 0, which is what these terms need); elsewhere, and in the CSR
kernel, the SIMD-callable log of fastdiv_math.h (libmvec) in AVX2 and
baseline clones.
"""

cimport cython
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

# cimported for its header: log declared SIMD-callable, FD_HOT clones.
cimport fastdiv.backends._cython._math  # noqa

ctypedef fused floating:
    float
    double

cdef extern from *:
    """
    #include "fastdiv_math.h"
    #define FDP_LN2 0.69314718055994530942

    /* acc_j += p (lp - log(p + q_j)) + q_j (lq_j - log(p + q_j)), and
     * exactly 0 where q_j == p. lp = log(2p), lq_j = log(2 q_j), or 0 where
     * q_j == 0 (then the q-term is 0 * finite = 0). For p > 0. */
    static FD_HOT void fdp_js_accumulate(double p, double lp, const double *q,
                                         const double *lq, ptrdiff_t n,
                                         double *acc) {
        /* The q == p case is a multiplication by 0.0 or 1.0: a select
         * there puts control flow in the loop and GCC does not vectorise
         * it. Both logs of 2p (scalar and vector) are masked because
         * libmvec and the scalar log may round differently. */
        for (ptrdiff_t j = 0; j < n; j++) {
            double qj = q[j];
            double ls = log(p + qj);
            double ne = (double)(qj != p);
            acc[j] += p * ((lp - ls) * ne) + qj * ((lq[j] - ls) * ne);
        }
    }

#if FD_LOG8
    /* The loop above with the inline AVX-512 log of fastdiv_log8.h; n is a
     * multiple of 8 and the buffers are 64-byte aligned. Zeroing both
     * differences where q == p gives what the multiplication by 0.0 gives
     * above, inf * 0 = NaN included. */
    FD_T512 static void fdp_js_accumulate8(double p, double lp, const double *q,
                                           const double *lq, ptrdiff_t n,
                                           double *acc) {
        fd_log8_tables t = fd_log8_load();
        __m512d vp = _mm512_set1_pd(p), vlp = _mm512_set1_pd(lp);
        for (ptrdiff_t j = 0; j < n; j += 8) {
            __m512d qj = _mm512_load_pd(q + j);
            __m512d ls = fd_log8(_mm512_add_pd(vp, qj), &t);
            __mmask8 ne = _mm512_cmp_pd_mask(qj, vp, _CMP_NEQ_UQ);
            __m512d dp = _mm512_maskz_sub_pd(ne, vlp, ls);
            __m512d dq = _mm512_maskz_sub_pd(ne, _mm512_load_pd(lq + j), ls);
            __m512d term = _mm512_fmadd_pd(qj, dq, _mm512_mul_pd(vp, dp));
            _mm512_store_pd(acc + j, _mm512_add_pd(_mm512_load_pd(acc + j), term));
        }
    }
#endif

    static inline void fdp_js_row(double p, double lp, const double *q,
                                  const double *lq, ptrdiff_t n, double *acc) {
#if FD_LOG8
        if (fd_use_log8) {
            fdp_js_accumulate8(p, lp, q, lq, n, acc);
            return;
        }
#endif
        fdp_js_accumulate(p, lp, q, lq, n, acc);
    }

    /* log of a whole array by the log the kernel uses, for the tests. */
    static void fdp_kernel_log(const double *x, ptrdiff_t n, double *out) {
#if FD_LOG8
        if (fd_use_log8) {
            fd_log8_array(x, n, out);
            return;
        }
#endif
        for (ptrdiff_t j = 0; j < n; j++)
            out[j] = log(x[j]);
    }

    /* p == 0: only the q-term, q log(2q / q) = q log 2. */
    static FD_HOT void fdp_js_accumulate_p0(const double *q, ptrdiff_t n,
                                            double *acc) {
        for (ptrdiff_t j = 0; j < n; j++)
            acc[j] += q[j] * FDP_LN2;
    }

    /* lq_j = log(2 q_j), and log(1) = 0 where q_j == 0: the argument
     * moves instead of the result, so no select stops vectorisation. */
    static FD_HOT void fdp_log2x(const double *q, ptrdiff_t n, double *lq) {
        for (ptrdiff_t j = 0; j < n; j++)
            lq[j] = log(2.0 * q[j] + (double)(q[j] == 0.0));
    }

    /* One term for scalars p, q >= 0 (the sparse kernel). */
    static inline double fdp_js_term(double p, double q) {
        if (p == q)
            return 0.0;
        if (p == 0.0)
            return q * FDP_LN2;
        if (q == 0.0)
            return p * FDP_LN2;
        double ls = log(p + q);
        return p * (log(2.0 * p) - ls) + q * (log(2.0 * q) - ls);
    }
    """
    double FDP_LN2
    int fd_use_log8
    void fd_log8_init() nogil
    void fd_log8_enable(int on) nogil
    void fdp_js_row(double p, double lp, const double *q,
                    const double *lq, Py_ssize_t n, double *acc) nogil
    void fdp_kernel_log(const double *x, Py_ssize_t n, double *out) nogil
    void fdp_js_accumulate_p0(const double *q, Py_ssize_t n, double *acc) nogil
    void fdp_log2x(const double *q, Py_ssize_t n, double *lq) nogil
    double fdp_js_term(double p, double q) nogil

cdef extern from "math.h" nogil:
    double log(double x)

cdef extern from "stdlib.h" nogil:
    void *aligned_alloc(size_t alignment, size_t size)

# Lanes per padded tile row. Rows of the tile buffers are padded to a
# multiple of 8 doubles and 64-byte aligned, so that every j goes through
# the vector body of the loops above and none through a scalar epilogue:
# libmvec's log and the scalar log may round differently, and which j
# lands in the epilogue would otherwise depend on the tile size.
cdef enum:
    LANES = 8


cdef inline double *_alloc_doubles(Py_ssize_t count) noexcept nogil:
    cdef size_t size = ((count * sizeof(double) + 63) // 64) * 64
    return <double *> aligned_alloc(64, size if size > 0 else 64)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _js_tile(
    const floating[:, ::1] P,
    const floating[:, ::1] Q,
    floating[:, ::1] out,
    Py_ssize_t diag,
    Py_ssize_t i0,
    Py_ssize_t i1,
    Py_ssize_t tile_q,
    Py_ssize_t tile_k,
) noexcept nogil:
    """Rows i0:i1 of the JS matrix; returns -1 when out of memory.

    Working set: a (tile_k, tile_q) block of Q transposed and its log(2q)
    in float64, plus (i1 - i0, tile_q) accumulators, sized by the caller to
    stay in L2 (rows padded to whole lanes).
    """
    cdef Py_ssize_t k = P.shape[1], m = Q.shape[0], tp = i1 - i0
    cdef Py_ssize_t j0, j1, jn, jpad, c0, c1, c, cc, j, ii, i, jj, w
    cdef double p, v
    cdef double *a
    # w: the row stride of the buffers, tile_q rounded up to whole lanes.
    w = ((tile_q + LANES - 1) // LANES) * LANES
    cdef double *acc = _alloc_doubles(tp * w)
    cdef double *qb = _alloc_doubles(tile_k * w)
    cdef double *lb = _alloc_doubles(tile_k * w)
    if acc == NULL or qb == NULL or lb == NULL:
        free(acc)
        free(qb)
        free(lb)
        return -1
    # Loops with a runtime step are written as while loops: Cython's
    # range() with a variable step needs the GIL.
    j0 = 0 if diag < 0 else i0 + diag
    while j0 < m:
        j1 = min(m, j0 + tile_q)
        jn = j1 - j0
        jpad = ((jn + LANES - 1) // LANES) * LANES
        for ii in range(tp * w):
            acc[ii] = 0.0
        c0 = 0
        while c0 < k:
            c1 = min(k, c0 + tile_k)
            for j in range(jn):
                for c in range(c0, c1):
                    qb[(c - c0) * w + j] = Q[j0 + j, c]
            for cc in range(c1 - c0):
                for j in range(jn, jpad):
                    qb[cc * w + j] = 0.0  # padding lanes, never read back
                fdp_log2x(qb + cc * w, jpad, lb + cc * w)
            for ii in range(tp):
                i = i0 + ii
                if diag >= 0 and j1 <= i + diag + 1:
                    continue  # this tile holds no entry j > i + diag
                a = acc + ii * w
                for c in range(c0, c1):
                    p = P[i, c]
                    if p == 0.0:
                        fdp_js_accumulate_p0(qb + (c - c0) * w, jpad, a)
                    else:
                        fdp_js_row(p, log(2.0 * p), qb + (c - c0) * w,
                                   lb + (c - c0) * w, jpad, a)
            c0 = c1
        for ii in range(tp):
            i = i0 + ii
            for j in range(jn):
                jj = j0 + j
                if diag >= 0:
                    if jj < i + diag:
                        continue
                    if jj == i + diag:
                        out[i, jj] = 0.0
                        continue
                v = 0.5 * acc[ii * w + j]
                # Never negative; a NaN from NaN input stays NaN.
                out[i, jj] = <floating> (0.0 if v < 0.0 else v)
        j0 = j1
    free(acc)
    free(qb)
    free(lb)
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
def js_pairwise(
    const floating[:, ::1] P,
    const floating[:, ::1] Q,
    floating[:, ::1] out,
    Py_ssize_t diag,
    Py_ssize_t tile_p,
    Py_ssize_t tile_q,
    Py_ssize_t tile_k,
):
    """out[i, j] = JS(P[i], Q[j]); ``diag`` as in the reference twin."""
    cdef Py_ssize_t n = P.shape[0]
    cdef Py_ssize_t ntiles = (n + tile_p - 1) // tile_p
    cdef Py_ssize_t t, tile, i0
    cdef int failed = 0
    for t in prange(ntiles, schedule="static", nogil=True):
        # Interleave first and last tiles so that static chunks balance the
        # triangle of the symmetric mode.
        if t % 2 == 0:
            tile = t // 2
        else:
            tile = ntiles - 1 - t // 2
        i0 = tile * tile_p
        if _js_tile(P, Q, out, diag, i0, min(n, i0 + tile_p), tile_q, tile_k):
            failed += 1
    if failed:
        raise MemoryError("js_pairwise: cannot allocate its tile buffers")


fd_log8_init()

def use_log8(bint on):
    """Let the dense JS kernel use the AVX-512 log (where the CPU has it).

    For the tests of the fallback loop; returns whether it was in use.
    """
    cdef bint was = fd_use_log8
    fd_log8_enable(on)
    return was


def kernel_log(const double[::1] x, double[::1] out):
    """out = log(x) by the log of the dense JS kernel (for its tests).

    That is fastdiv_log8.h's on a CPU with AVX-512F, libm's otherwise.
    """
    if x.shape[0] != out.shape[0]:
        raise ValueError(
            f"kernel_log: x and out differ in length ({x.shape[0]} and "
            f"{out.shape[0]})"
        )
    if x.shape[0]:
        fdp_kernel_log(&x[0], x.shape[0], &out[0])


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _csr_rows(
    const int64_t[::1] p_indptr,
    const int64_t[::1] p_indices,
    const floating[::1] p_data,
    const int64_t[::1] qt_indptr,
    const int64_t[::1] qt_indices,
    const floating[::1] qt_data,
    const double *q_sums,
    floating[:, ::1] out,
    Py_ssize_t diag,
    Py_ssize_t first,
    Py_ssize_t step,
) noexcept nogil:
    """Rows first, first + step, ... of the sparse JS matrix (-1: no memory)."""
    cdef Py_ssize_t n = out.shape[0], m = out.shape[1]
    cdef Py_ssize_t i, j, lo, idx, c, r, r0, r1, a, b, mid
    cdef double p, q, p_sum, outside, v
    cdef double *s_acc = <double *> malloc(m * sizeof(double))
    cdef double *p_acc = <double *> malloc(m * sizeof(double))
    cdef double *q_acc = <double *> malloc(m * sizeof(double))
    if s_acc == NULL or p_acc == NULL or q_acc == NULL:
        free(s_acc)
        free(p_acc)
        free(q_acc)
        return -1
    i = first
    while i < n:
        lo = 0 if diag < 0 else i + diag + 1
        for j in range(lo, m):
            s_acc[j] = 0.0
            p_acc[j] = 0.0
            q_acc[j] = 0.0
        p_sum = 0.0
        for idx in range(p_indptr[i], p_indptr[i + 1]):
            c = p_indices[idx]
            p = p_data[idx]
            p_sum += p
            r0 = qt_indptr[c]
            r1 = qt_indptr[c + 1]
            if lo > 0:
                # Row indices are sorted: skip to the first j >= lo.
                a = r0
                b = r1
                while a < b:
                    mid = (a + b) // 2
                    if qt_indices[mid] < lo:
                        a = mid + 1
                    else:
                        b = mid
                r0 = a
            for r in range(r0, r1):
                j = qt_indices[r]
                q = qt_data[r]
                s_acc[j] += fdp_js_term(p, q)
                p_acc[j] += p
                q_acc[j] += q
        for j in range(lo, m):
            outside = (p_sum - p_acc[j]) + (q_sums[j] - q_acc[j])
            v = 0.5 * (s_acc[j] + FDP_LN2 * outside)
            out[i, j] = <floating> (0.0 if v < 0.0 else v)
        if diag >= 0 and i + diag < m:
            out[i, i + diag] = 0.0
        i += step
    free(s_acc)
    free(p_acc)
    free(q_acc)
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
def js_pairwise_csr(
    const int64_t[::1] p_indptr,
    const int64_t[::1] p_indices,
    const floating[::1] p_data,
    const int64_t[::1] qt_indptr,
    const int64_t[::1] qt_indices,
    const floating[::1] qt_data,
    floating[:, ::1] out,
    Py_ssize_t diag,
):
    """JS between CSR rows of P and the rows of Q given as CSC arrays.

    Same arguments and method as the reference twin: per row i, the columns
    of Q at the categories of P[i] are walked, accumulating per j the
    shared terms and masses in increasing category order; then
    2 JS = S + log 2 (sum p - P_s + sum q - Q_s).
    """
    cdef Py_ssize_t n = out.shape[0], m = out.shape[1]
    cdef Py_ssize_t k = qt_indptr.shape[0] - 1
    cdef Py_ssize_t c, r, ch, nchunks = min(n, 64)
    cdef int failed = 0
    cdef double *q_sums = <double *> malloc((m if m > 0 else 1) * sizeof(double))
    if q_sums == NULL:
        raise MemoryError("js_pairwise_csr: cannot allocate its row sums")
    # Row sums of Q in increasing category order, the order of the shared
    # masses: rows with the same support cancel exactly.
    for r in range(m):
        q_sums[r] = 0.0
    for c in range(k):
        for r in range(qt_indptr[c], qt_indptr[c + 1]):
            q_sums[qt_indices[r]] += qt_data[r]
    # Chunk ch takes rows ch, ch + nchunks, ...: interleaved rows balance
    # the shrinking rows of the symmetric mode.
    for ch in prange(nchunks, schedule="static", nogil=True):
        if _csr_rows(p_indptr, p_indices, p_data, qt_indptr, qt_indices,
                     qt_data, q_sums, out, diag, ch, nchunks):
            failed += 1
    free(q_sums)
    if failed:
        raise MemoryError("js_pairwise_csr: cannot allocate its accumulators")
