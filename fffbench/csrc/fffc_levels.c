/* The paper's CPU levels, implemented correctly against a CBLAS bound at run time.
 *
 * The BLAS (MKL, OpenBLAS, ...) is found by Python and its entry points are handed to
 * fffc_blas_bind, so this file needs no BLAS headers or link flags; LP64 and ILP64 interfaces are
 * both supported. Rows are spread over OpenMP threads with the BLAS kept sequential inside them
 * (Level 1 and 2: one BLAS-1/2 call per row and neuron or level, as the reference code), and the
 * BLAS itself is threaded for Level 3 (two GEMMs).
 *
 *   FF  L1: per row, per neuron   z = dot(x, W1[j]) + b1[j];  y += GELU(z) W2[j]     (sdot, saxpy)
 *   FF  L2: per row               h = W1 x + b1;  y = W2^T GELU(h)                   (two sgemv)
 *   FF  L3:                       H = X W1^T;  H = GELU(H + b1);  Y = H W2            (two sgemm)
 *   FFF L1: per row, per level    z = dot(x, W1[n]) + b1[n];  y += GELU(z) W2[n]     (sdot, saxpy)
 *   FFF L2: per tree level        batched gemv over rows, batched GELU, batched axpy
 *   FF  L3 bf16:                  the same two GEMMs on bf16 operands with fp32 accumulation (MKL's
 *                                 cblas_gemm_bf16bf16f32, AMX tiles where present; OpenBLAS's sbgemm)
 */
#include "fffc.h"

#include <stdlib.h>

enum { RowMajor = 101, NoTrans = 111, Trans = 112 };

static struct {
    void *sdot, *saxpy, *sgemv, *sgemm, *set_threads, *get_threads, *gemm_bf16;
    int ilp64;
} B_;

typedef float (*sdot32_t)(int, const float *, int, const float *, int);
typedef float (*sdot64_t)(int64_t, const float *, int64_t, const float *, int64_t);
typedef void (*saxpy32_t)(int, float, const float *, int, float *, int);
typedef void (*saxpy64_t)(int64_t, float, const float *, int64_t, float *, int64_t);
typedef void (*sgemv32_t)(int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef void (*sgemv64_t)(int, int, int64_t, int64_t, float, const float *, int64_t, const float *, int64_t, float,
                          float *, int64_t);
typedef void (*sgemm32_t)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                          int);
typedef void (*gbf32_t)(int, int, int, int, int, int, float, const uint16_t *, int, const uint16_t *, int, float,
                        float *, int);
typedef void (*gbf64_t)(int, int, int, int64_t, int64_t, int64_t, float, const uint16_t *, int64_t, const uint16_t *,
                        int64_t, float, float *, int64_t);
typedef void (*sgemm64_t)(int, int, int, int64_t, int64_t, int64_t, float, const float *, int64_t, const float *,
                          int64_t, float, float *, int64_t);

int fffc_blas_bind(void *sdot, void *saxpy, void *sgemv, void *sgemm, void *set_threads, void *get_threads,
                   void *gemm_bf16, int ilp64) {
    B_.sdot = sdot, B_.saxpy = saxpy, B_.sgemv = sgemv, B_.sgemm = sgemm, B_.gemm_bf16 = gemm_bf16;
    B_.set_threads = set_threads, B_.get_threads = get_threads, B_.ilp64 = ilp64;
    return (sdot && saxpy && sgemv && sgemm) ? 0 : -1;
}

static inline float b_sdot(long n, const float *x, const float *y) {
    return B_.ilp64 ? ((sdot64_t)B_.sdot)(n, x, 1, y, 1) : ((sdot32_t)B_.sdot)((int)n, x, 1, y, 1);
}
static inline void b_saxpy(long n, float a, const float *x, float *y) {
    if (B_.ilp64)
        ((saxpy64_t)B_.saxpy)(n, a, x, 1, y, 1);
    else
        ((saxpy32_t)B_.saxpy)((int)n, a, x, 1, y, 1);
}
static inline void b_sgemv(int trans, long m, long n, const float *a, long lda, const float *x, float beta, float *y) {
    if (B_.ilp64)
        ((sgemv64_t)B_.sgemv)(RowMajor, trans, m, n, 1.0f, a, lda, x, 1, beta, y, 1);
    else
        ((sgemv32_t)B_.sgemv)(RowMajor, trans, (int)m, (int)n, 1.0f, a, (int)lda, x, 1, beta, y, 1);
}
static inline void b_sgemm(int tb, long m, long n, long k, const float *a, long lda, const float *b, long ldb, float *c,
                           long ldc) {
    if (B_.ilp64)
        ((sgemm64_t)B_.sgemm)(RowMajor, NoTrans, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
    else
        ((sgemm32_t)B_.sgemm)(RowMajor, NoTrans, tb, (int)m, (int)n, (int)k, 1.0f, a, (int)lda, b, (int)ldb, 0.0f, c,
                              (int)ldc);
}

static inline void b_gemm_bf16(int tb, long m, long n, long k, const uint16_t *a, long lda, const uint16_t *b,
                               long ldb, float *c, long ldc) {
    if (B_.ilp64)
        ((gbf64_t)B_.gemm_bf16)(RowMajor, NoTrans, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
    else
        ((gbf32_t)B_.gemm_bf16)(RowMajor, NoTrans, tb, (int)m, (int)n, (int)k, 1.0f, a, (int)lda, b, (int)ldb, 0.0f, c,
                                (int)ldc);
}

/* BLAS thread count: set for the duration of a call, restored after (the caller's setting,
 * e.g. threadpoolctl's, is left as it was). */
static int blas_threads_set(int n) {
    /* openblas_{get,set}_num_threads and mkl_{get_max,set_num}_threads take a plain int in both
     * the LP64 and the ILP64 interfaces */
    int prev = B_.get_threads ? ((int (*)(void))B_.get_threads)() : -1;
    if (B_.set_threads) ((void (*)(int))B_.set_threads)(n);
    return prev;
}
static void blas_threads_restore(int prev) {
    if (prev > 0) blas_threads_set(prev);
}

/* ---------------------------------------------------------------------------------------------- FF */

void ff_l1(const float *x, long B, long d, long H, long dout, const float *w1, const float *b1, const float *w2,
           float *y, int nthreads) {
    int prev = blas_threads_set(1);
#pragma omp parallel for num_threads(fffc_threads(nthreads)) schedule(static)
    for (long r = 0; r < B; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * dout;
        memset(yr, 0, sizeof(float) * dout);
        for (long j = 0; j < H; j++) {
            float z = b_sdot(d, xr, w1 + j * d) + b1[j];
            b_saxpy(dout, fffc_gelu(z), w2 + j * dout, yr);
        }
    }
    blas_threads_restore(prev);
}

/* scratch: nthreads * H floats */
void ff_l2(const float *x, long B, long d, long H, long dout, const float *w1, const float *b1, const float *w2,
           float *y, float *scratch, int nthreads) {
    int prev = blas_threads_set(1);
#pragma omp parallel num_threads(fffc_threads(nthreads))
    {
#ifdef _OPENMP
        float *h = scratch + (size_t)omp_get_thread_num() * H;
#else
        float *h = scratch;
#endif
#pragma omp for schedule(static)
        for (long r = 0; r < B; r++) {
            b_sgemv(NoTrans, H, d, w1, d, x + r * d, 0.0f, h);
            for (long j = 0; j < H; j++) h[j] = fffc_gelu(h[j] + b1[j]);
            b_sgemv(Trans, H, dout, w2, dout, h, 0.0f, y + r * dout);
        }
    }
    blas_threads_restore(prev);
}

static void gelu_bias_rows(const float *h, float *out, long B, long H, const float *b1, int nthreads) {
#pragma omp parallel for num_threads(fffc_threads(nthreads)) schedule(static)
    for (long r = 0; r < B; r++) {
        const float *hr = h + r * H;
        float *o = out + r * H;
#pragma omp simd
        for (long j = 0; j < H; j++) o[j] = fffc_gelu(hr[j] + b1[j]);
    }
}

/* h: B * H floats, allocated by the caller outside the timed call */
void ff_l3(const float *x, long B, long d, long H, long dout, const float *w1, const float *b1, const float *w2,
           float *y, float *h, int nthreads) {
    int prev = blas_threads_set(fffc_threads(nthreads));
    b_sgemm(Trans, B, H, d, x, d, w1, d, h, H);
    gelu_bias_rows(h, h, B, H, b1, nthreads);
    b_sgemm(NoTrans, B, dout, H, h, H, w2, dout, y, dout);
    blas_threads_restore(prev);
}

/* bf16: x (B x d), w1 (H x d), w2 (H x dout) bf16 bits; h: B*H floats, hb: B*H bf16, y: B*dout bf16.
 * GEMM 1 accumulates in fp32, GELU(h + b1) is rounded to bf16 for GEMM 2, whose fp32 result is rounded
 * to bf16 on the way out (as torch's bf16 layer does). Returns -1 without a bf16 GEMM. */
int ff_l3_bf16(const uint16_t *x, long B, long d, long H, long dout, const uint16_t *w1, const float *b1,
               const uint16_t *w2, uint16_t *y, float *h, uint16_t *hb, int nthreads) {
    if (!B_.gemm_bf16) return -1;
    int nt = fffc_threads(nthreads);
    int prev = blas_threads_set(nt);
    b_gemm_bf16(Trans, B, H, d, x, d, w1, d, h, H);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long r = 0; r < B; r++) {
        const float *hr = h + r * H;
        uint16_t *o = hb + r * H;
#pragma omp simd
        for (long j = 0; j < H; j++) o[j] = f32_to_bf16(fffc_gelu(hr[j] + b1[j]));
    }
    /* GEMM 2 writes its fp32 result over h (B*dout <= B*H floats when dout <= H; else the caller
     * passes h of B*max(H, dout)) */
    b_gemm_bf16(NoTrans, B, dout, H, hb, H, w2, dout, h, dout);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long r = 0; r < B; r++) {
#pragma omp simd
        for (long j = 0; j < dout; j++) y[r * dout + j] = f32_to_bf16(h[r * dout + j]);
    }
    blas_threads_restore(prev);
    return 0;
}

/* The reference code's variant: both intermediates (B * H floats each, about 0.5 GB at the paper's
 * size) allocated and freed inside every call. Same arithmetic as ff_l3. Returns -1 if out of memory. */
int ff_l3_alloc(const float *x, long B, long d, long H, long dout, const float *w1, const float *b1, const float *w2,
                float *y, int nthreads) {
    float *h = malloc(sizeof(float) * (size_t)B * H), *h2 = malloc(sizeof(float) * (size_t)B * H);
    if (!h || !h2) {
        free(h), free(h2);
        return -1;
    }
    int prev = blas_threads_set(fffc_threads(nthreads));
    b_sgemm(Trans, B, H, d, x, d, w1, d, h, H);
    gelu_bias_rows(h, h2, B, H, b1, nthreads);
    b_sgemm(NoTrans, B, dout, H, h2, H, w2, dout, y, dout);
    blas_threads_restore(prev);
    free(h), free(h2);
    return 0;
}

/* --------------------------------------------------------------------------------------------- FFF */

/* w1: (K, N, d), b1: (K, N), w2: (K, N, dout), N = 2^(D+1) - 1, heap order */
void fff_l1(const float *x, long B, long d, long dout, long K, long D, const float *w1, const float *b1,
            const float *w2, float *y, int nthreads) {
    long N = (2L << D) - 1;
    int prev = blas_threads_set(1);
#pragma omp parallel for num_threads(fffc_threads(nthreads)) schedule(static)
    for (long r = 0; r < B; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * dout;
        memset(yr, 0, sizeof(float) * dout);
        for (long k = 0; k < K; k++) {
            long n = 0;
            for (long l = 0; l <= D; l++) {
                long g = k * N + n;
                float z = b_sdot(d, xr, w1 + g * d) + b1[g];
                b_saxpy(dout, fffc_gelu(z), w2 + g * dout, yr);
                n = 2 * n + 1 + (z > 0.0f);
            }
        }
    }
    blas_threads_restore(prev);
}

/* scratch: node (B longs), z and a (B floats each) */
void fff_l2(const float *x, long B, long d, long dout, long K, long D, const float *w1, const float *b1,
            const float *w2, float *y, long *node, float *z, float *a, int nthreads) {
    long N = (2L << D) - 1;
    int nt = fffc_threads(nthreads);
    int prev = blas_threads_set(1);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long r = 0; r < B; r++) memset(y + r * dout, 0, sizeof(float) * dout);
    for (long k = 0; k < K; k++) {
        const float *w1k = w1 + k * N * d, *b1k = b1 + k * N, *w2k = w2 + k * N * dout;
        for (long r = 0; r < B; r++) node[r] = 0;
        for (long l = 0; l <= D; l++) {
            /* batched gemv: one (1 x d) . (d) product per row against its node's W1 row */
#pragma omp parallel for num_threads(nt) schedule(static)
            for (long r = 0; r < B; r++) b_sgemv(NoTrans, 1, d, x + r * d, d, w1k + node[r] * d, 0.0f, z + r);
            /* batched GELU */
#pragma omp parallel for simd num_threads(nt) schedule(static)
            for (long r = 0; r < B; r++) {
                z[r] += b1k[node[r]];
                a[r] = fffc_gelu(z[r]);
            }
            /* batched axpy, then every row steps down its tree */
#pragma omp parallel for num_threads(nt) schedule(static)
            for (long r = 0; r < B; r++) {
                b_saxpy(dout, a[r], w2k + node[r] * dout, y + r * dout);
                node[r] = 2 * node[r] + 1 + (z[r] > 0.0f);
            }
        }
    }
    blas_threads_restore(prev);
}
