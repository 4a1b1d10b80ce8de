/* Measurement helpers: the copy-bandwidth floor with the kernels' threads, and what the build targets. */
#include "fffc.h"

/* dst = src over n bytes, split into contiguous chunks over nthreads threads */
void fffc_copy(void *dst, const void *src, long n, int nthreads) {
    int nth = fffc_threads(nthreads);
#pragma omp parallel num_threads(nth)
    {
        int id = 0, nt = 1;
#ifdef _OPENMP
        id = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        long lo = n * id / nt, hi = n * (id + 1) / nt;
        memcpy((char *)dst + lo, (const char *)src + lo, (size_t)(hi - lo));
    }
}

/* The instruction sets this build was compiled for (-march=native on the build machine): bit 0
 * AVX2+FMA, 1 AVX-512F, 2 AVX512-BF16 (native bf16 dots), 3 AMX tiles (used by MKL's bf16 GEMM). */
int fffc_isa(void) {
    int m = 0;
#if defined(__AVX2__) && defined(__FMA__)
    m |= 1;
#endif
#if defined(__AVX512F__)
    m |= 2;
#endif
#if defined(__AVX512BF16__)
    m |= 4;
#endif
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
    m |= 8;
#endif
    return m;
}
