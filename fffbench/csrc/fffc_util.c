/* Measurement helpers: the copy-bandwidth floor with the kernels' threads, and what the build targets. */
#include "fffc.h"

#include <stdint.h>

/* dst = src over n bytes, split into contiguous chunks over nthreads threads; with a 64-byte aligned
 * dst of whole lines, by vector loads and non-temporal stores (AVX-512 or AVX): no read for ownership
 * of dst, the most a kernel that reads x once and writes y once can get. memcpy takes regular stores
 * at these sizes: 1.5x slower on the 2-core Intel VM of notes/cpu-kernels.md, 1.6x on the Zen 3 one,
 * which made the floor look that much lower in bandwidth than the memory is. */
void fffc_copy(void *dst, const void *src, long n, int nthreads) {
    int nth = fffc_threads(nthreads);
#pragma omp parallel num_threads(nth)
    {
        int id = 0, nt = 1;
#ifdef _OPENMP
        id = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        long lo = n * id / nt, hi = n * (id + 1) / nt;
#if defined(__AVX512F__) || defined(__AVX__)
        lo &= ~63L, hi = id == nt - 1 ? n : hi & ~63L;
        if (((uintptr_t)dst & 63) == 0) {
            long i = lo;
            for (; i + 64 <= hi; i += 64) {
#if defined(__AVX512F__)
                _mm512_stream_si512((__m512i *)((char *)dst + i), _mm512_loadu_si512((const char *)src + i));
#else
                _mm256_stream_si256((__m256i *)((char *)dst + i), _mm256_loadu_si256((const __m256i *)((const char *)src + i)));
                _mm256_stream_si256((__m256i *)((char *)dst + i + 32),
                                    _mm256_loadu_si256((const __m256i *)((const char *)src + i + 32)));
#endif
            }
            memcpy((char *)dst + i, (const char *)src + i, (size_t)(hi - i));
            _mm_sfence();
        } else
#endif
            memcpy((char *)dst + lo, (const char *)src + lo, (size_t)(hi - lo));
    }
}

#ifdef FFFC_PROFILE
uint64_t fffc_prof_[8][8];
uint64_t fffc_tsc(void) { return __rdtsc(); }
void fffc_profile(uint64_t *out /* 8 threads x 8 parts */) {
    memcpy(out, fffc_prof_, sizeof fffc_prof_);
    memset(fffc_prof_, 0, sizeof fffc_prof_);
}
#endif

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
