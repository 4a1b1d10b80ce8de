/* fffbench C kernels: shared helpers (vector types, exact-erf GELU, bf16 conversion).
 *
 * Written with GCC/Clang vector extensions, so the same source compiles to AVX-512, AVX2, NEON or
 * scalar code depending on -march; x86 non-temporal stores are used where the target has them.
 */
#ifndef FFFC_H
#define FFFC_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define FFFC_INLINE static inline __attribute__((always_inline))

/* Built with -DFFFC_PROFILE (scripts/profile_cpu.py): time stamps per part of a kernel and thread,
 * summed into fffc_prof_ and read (and reset) by fffc_profile; how notes/cpu-kernels.md breaks the
 * kernels' time down. Each kernel numbers its own parts (at most 8). Otherwise nothing. */
#ifdef FFFC_PROFILE
#include <x86intrin.h>
extern uint64_t fffc_prof_[8][8];
#ifdef _OPENMP
#define FFFC_PROF_THREAD (omp_get_thread_num() & 7)
#else
#define FFFC_PROF_THREAD 0
#endif
#define PROF_T(v) uint64_t v = __rdtsc()
#define PROF_ADD(part, t) (fffc_prof_[FFFC_PROF_THREAD][part] += __rdtsc() - (t), t = __rdtsc())
#else
#define PROF_T(v)
#define PROF_ADD(part, t)
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef uint16_t u16x16u __attribute__((vector_size(32), aligned(2)));
typedef float v16u2 __attribute__((vector_size(64), aligned(2)));

/* ---- exact (erf) GELU in float32 --------------------------------------------------------------
 * erfc(|u|) by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7) with a branch-free expf, so
 * loops over it vectorise. GELU(z) = z/2 * (1 + erf(z/sqrt2)) = z/2 * (2 - q) for z >= 0 and
 * z/2 * q for z < 0, q = erfc(|z|/sqrt2): no cancellation for negative z. */
FFFC_INLINE float fffc_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    /* round to nearest by the 1.5 * 2^23 trick: branch-free and vectorisable on every target */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, 4);
    return p * s;
}

FFFC_INLINE float fffc_gelu(float z) {
    float u = __builtin_fabsf(z) * 0.70710678118654752f;
    float t = 1.0f / (1.0f + 0.3275911f * u);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    float q = poly * fffc_expf(-u * u);
    return 0.5f * z * (z >= 0.0f ? 2.0f - q : q);
}

/* The same GELU on 16 lanes. The walks store pre-activations and the bag applies this to a row's
 * 12 at once: a scalar GELU per node (about 40 dependent operations) cost a quarter of the whole
 * kernel, though the walk's next step depends only on the sign of z. */
FFFC_INLINE v16 v16_sel(i32x16 m, v16 a, v16 b) { return (v16)((m & (i32x16)a) | (~m & (i32x16)b)); }
FFFC_INLINE v16 fffc_expf16(v16 x) {
    const v16 lo = {-87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f,
                    -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f};
    x = v16_sel(x < lo, lo, x);
    v16 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    v16 r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    v16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    i32x16 e = (__builtin_convertvector(n, i32x16) + 127) << 23;
    return p * (v16)e;
}

FFFC_INLINE v16 fffc_gelu16(v16 z) {
    v16 u = (v16)((i32x16)z & 0x7fffffff) * 0.70710678118654752f;
    v16 t = 1.0f / (1.0f + 0.3275911f * u);
    v16 poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    v16 q = poly * fffc_expf16(-u * u);
    return 0.5f * z * v16_sel(z >= 0.0f, 2.0f - q, q);
}

/* a[0..n) = GELU(a[0..n)) in place */
static inline void fffc_gelu_row(float *a, long n) {
    long i = 0;
    for (; i + 16 <= n; i += 16) *(v16u *)(a + i) = fffc_gelu16(*(const v16u *)(a + i));
    if (i < n) {
        float t[16] = {0};
        memcpy(t, a + i, sizeof(float) * (size_t)(n - i));
        *(v16u *)t = fffc_gelu16(*(const v16u *)t);
        memcpy(a + i, t, sizeof(float) * (size_t)(n - i));
    }
}

/* ---- vector helpers --------------------------------------------------------------------------- */
FFFC_INLINE v16 v16_load(const float *p) { return *(const v16u *)p; }
FFFC_INLINE void v16_store(float *p, v16 v) { *(v16u *)p = v; }
FFFC_INLINE v16 v16_splat(float a) { return (v16){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }
FFFC_INLINE float v16_hsum(v16 v) {
    typedef float v8 __attribute__((vector_size(32)));
    typedef float v4 __attribute__((vector_size(16)));
    v8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
    v8 b = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    v8 c = a + b;
    v4 d = __builtin_shufflevector(c, c, 0, 1, 2, 3) + __builtin_shufflevector(c, c, 4, 5, 6, 7);
    return (d[0] + d[2]) + (d[1] + d[3]);
}

/* bf16 <-> f32: bf16 is the top half of an f32; rounding to nearest even on the way down. */
FFFC_INLINE float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
FFFC_INLINE uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
FFFC_INLINE v16 v16_load_bf16(const uint16_t *p) {
#if defined(__AVX512F__)
    return (v16)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16);
#else
    u16x16 h = *(const u16x16u *)p;
    u32x16 w = __builtin_convertvector(h, u32x16) << 16;
    return (v16)w;
#endif
}
FFFC_INLINE u16x16 v16_to_bf16(v16 v) {
#if defined(__AVX512BF16__)
    return (u16x16)_mm512_cvtneps_pbh((__m512)v); /* one instruction, the same rounding (to nearest even) */
#endif
    u32x16 u = (u32x16)v;
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return __builtin_convertvector(u, u16x16);
}

/* Native bf16 dot products (AVX512-BF16 vdpbf16ps): 32 bf16 pairs of x and w summed into 16 fp32
 * lanes in one instruction, with no conversion of either operand. Where the CPU lacks it the bf16
 * kernels widen each operand to fp32 first (two integer ops per 16 elements and operand). */
#if defined(__AVX512BF16__)
#define FFFC_DPBF16 1
FFFC_INLINE v16 fffc_dpbf16(v16 acc, v16 a, v16 b) {
    return (v16)_mm512_dpbf16_ps((__m512)acc, (__m512bh)a, (__m512bh)b);
}
#else
#define FFFC_DPBF16 0
FFFC_INLINE v16 fffc_dpbf16(v16 acc, v16 a, v16 b) { return acc + a * b; } /* never called */
#endif

/* element type of x, weights and y: 0 float32, 1 bfloat16 (fp32 accumulation either way) */
FFFC_INLINE v16 ldv(const void *p, size_t i, int bf) {
    return bf ? v16_load_bf16((const uint16_t *)p + i) : v16_load((const float *)p + i);
}
FFFC_INLINE float lds(const void *p, size_t i, int bf) {
    return bf ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* ---- the register tile's vector ---------------------------------------------------------------
 * The register-blocked kernels (the dots, the block dots and the bag of fffc_opt) keep a tile of
 * accumulators in registers. Its vector `vc` is one machine register, FFFC_VC floats (16 with
 * AVX-512, 8 otherwise: AVX2's ymm), and the tile shapes are chosen from FFFC_VREGS, the number of
 * vector registers the ISA has (32 or 16), so that the accumulators fit. Tiles written for 32 zmm and
 * compiled as pairs of ymm on an AVX2-only CPU spill on every step: there fff-c-opt took 64 ms, slower
 * than the same algorithm in Numba (45 ms). With AVX-512 vc is v16 and the code is unchanged. */
#if defined(__AVX512F__)
#define FFFC_VC 16
#define FFFC_VREGS 32
#else
#define FFFC_VC 8
#define FFFC_VREGS 16
#endif
typedef float vc __attribute__((vector_size(FFFC_VC * 4)));
typedef float vcu __attribute__((vector_size(FFFC_VC * 4), aligned(4)));
typedef uint32_t u32xc __attribute__((vector_size(FFFC_VC * 4)));
typedef uint16_t u16xc __attribute__((vector_size(FFFC_VC * 2)));
typedef uint16_t u16xcu __attribute__((vector_size(FFFC_VC * 2), aligned(2)));

FFFC_INLINE vc vc_splat(float a) {
#if FFFC_VC == 16
    return v16_splat(a);
#else
    return (vc){a, a, a, a, a, a, a, a};
#endif
}
FFFC_INLINE float vc_hsum(vc v) {
#if FFFC_VC == 16
    return v16_hsum(v);
#else
    typedef float v4 __attribute__((vector_size(16)));
    v4 d = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
    return (d[0] + d[2]) + (d[1] + d[3]);
#endif
}
/* bf16 bits of a vc, rounded to nearest even (as f32_to_bf16 and v16_to_bf16) */
FFFC_INLINE u16xc vc_to_bf16(vc v) {
#if FFFC_VC == 16
    return v16_to_bf16(v);
#else
    u32xc u = (u32xc)v;
    return __builtin_convertvector((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16, u16xc);
#endif
}
/* FFFC_VC elements at p + i as float32 (bf: bf16 bits, widened) */
FFFC_INLINE vc ldc(const void *p, size_t i, int bf) {
#if FFFC_VC == 16
    return ldv(p, i, bf);
#else
    if (bf) return (vc)(__builtin_convertvector(*(const u16xcu *)((const uint16_t *)p + i), u32xc) << 16);
    return *(const vcu *)((const float *)p + i);
#endif
}

/* A queue of x rows (then byte ranges: weight rows) to prefetch into L2, a few cache lines at a time
 * while other work runs: a whole row set at once queues up behind the demand misses. */
typedef struct {
    const char *x;
    const int32_t *rows; /* the rows, or NULL for rows first, first + 1, ... */
    long first;
    int n;
    size_t rowb;
    size_t done, total; /* lines issued, lines in all (x rows, then the ranges) */
    size_t r, o;        /* position: row index, byte offset in the row */
    int nrg, g;         /* byte ranges (weight rows) after the x rows, and the current one */
    size_t go;          /* byte offset in the current range */
    const char *rg[32];
    size_t rgb[32];
} pfq_t;

/* add a byte range (lines of it) to the queue's tail */
static inline void pfq_range(pfq_t *q, const void *p, size_t bytes) {
    if (q->nrg < 32 && bytes) q->rg[q->nrg] = (const char *)p, q->rgb[q->nrg++] = bytes, q->total += (bytes + 63) / 64;
}

static inline void pfq_step(pfq_t *q, size_t lines) {
    size_t xl = (size_t)q->n * ((q->rowb + 63) / 64);
    for (; lines && q->done < q->total; lines--, q->done++) {
        const char *p;
        if (q->done < xl) {
            p = q->x + (size_t)(q->rows ? q->rows[q->r] : q->first + (long)q->r) * q->rowb + q->o;
            q->o += 64;
            if (q->o >= q->rowb) q->o = 0, q->r++;
        } else {
            p = q->rg[q->g] + q->go;
            q->go += 64;
            if (q->go >= q->rgb[q->g]) q->go = 0, q->g++;
        }
        __builtin_prefetch(p, 0, 2); /* to L2 */
    }
}

/* The counting sort of both bucketed schedules (as MoE kernels sort tokens by expert): rows 0 .. B-1
 * by key nid[r * L + at] - base in 0 .. T-1, into perm; start[0 .. T] the buckets' bounds, start[T + 1
 * .. 2T] the fill cursors, from start + 2T + 1 the units (first, rows, bucket), at most U rows of one
 * bucket each. Returns the number of units; start needs 2T + 1 + 3 (T + B / U + 2) longs. */
static inline long fffc_sort_units(const int32_t *nid, long L, long at, long base, long B, long T, long U,
                                   int32_t *perm, long *start) {
    long *fill = start + T + 1, *units = start + 2 * T + 1, nunits = 0;
    for (long t = 0; t <= T; t++) start[t] = 0;
    for (long r = 0; r < B; r++) start[nid[r * L + at] - base + 1]++;
    for (long t = 0; t < T; t++) start[t + 1] += start[t];
    memcpy(fill, start, sizeof(long) * (size_t)T);
    for (long r = 0; r < B; r++) perm[fill[nid[r * L + at] - base]++] = (int32_t)r;
    for (long t = 0; t < T; t++)
        for (long i = start[t]; i < start[t + 1]; i += U) {
            units[3 * nunits] = i, units[3 * nunits + 1] = start[t + 1] - i < U ? start[t + 1] - i : U;
            units[3 * nunits + 2] = t, nunits++;
        }
    return nunits;
}

/* the next index of a shared counter: work handed out one item at a time, so that a thread whose
 * core a co-tenant shares does less of it instead of holding up the others */
static inline long fffc_grab(long *next) { return __atomic_fetch_add(next, 1, __ATOMIC_RELAXED); }

/* Orders a thread's streaming (non-temporal) stores before what follows: each thread that streamed
 * output issues it before its parallel region ends, so the caller reads y complete. */
FFFC_INLINE void fffc_sfence(void) {
#if defined(__SSE__)
    _mm_sfence();
#endif
}

static inline int fffc_threads(int n) {
#ifdef _OPENMP
    return n > 0 ? n : omp_get_max_threads();
#else
    (void)n;
    return 1;
#endif
}

#endif
