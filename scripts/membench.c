/* One core's memory paths, measured the way fff-c-opt's bucketed schedules use them: what the AMX
 * path's time model in notes/cpu-kernels.md rests on. Two threads (one per core), each over its half
 * of a B x 1536-byte matrix (B = 16384: x in bf16 at d = 768):
 *
 *   seq read                 its rows in order (phase 1's read of x)
 *   rand gather              its rows in a random order, copied into a 64-row stage (phase 2's gather)
 *   y stream                 streaming stores of as many rows, in a random order (the bag's y)
 *   rand gather + y stream   both, row by row; seq read + y stream: likewise
 *
 * A pair that takes the sum of its parts' times shares one per-core resource; one that takes their
 * maximum overlaps. Cold by default (512 MiB written between trials: x comes from DRAM); `warm`
 * reads x twice before each trial instead (x in L3, as back-to-back calls of `fffbench run` see it).
 *
 *     cc -O2 -march=native -fopenmp scripts/membench.c -o /tmp/membench && /tmp/membench [warm]   (AVX-512)
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define ROWB 1536
#define B 16384

volatile long keep_; /* the trials' loads feed it, so the compiler keeps them */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static char *huge(size_t n) { /* 2 MiB pages, as the harness's buffers */
    n = (n + (1u << 21) - 1) & ~(size_t)((1u << 21) - 1);
    char *p = aligned_alloc(1u << 21, n);
    madvise(p, n, MADV_HUGEPAGE);
    memset(p, 1, n);
    return p;
}

int main(int argc, char **argv) {
    const int warm = argc > 1 && !strcmp(argv[1], "warm");
    char *x = huge((size_t)B * ROWB), *y = huge((size_t)B * ROWB), *junk = huge(512u << 20);
    int32_t *perm = malloc(B * sizeof *perm);
    for (int i = 0; i < B; i++) perm[i] = i;
    srand(1);
    for (int i = B - 1; i > 0; i--) {
        int j = rand() % (i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    static const char *names[] = {"seq read", "rand gather", "y stream", "rand gather + y stream", "seq read + y stream"};
    printf("# %s, %d rows of %d bytes per thread, ms per trial\n", warm ? "warm" : "cold", B / 2, ROWB);
    for (int rep = 0; rep < 5; rep++)
        for (int m = 0; m < 5; m++) {
            if (warm)
                for (int w = 0; w < 2; w++) {
#pragma omp parallel for num_threads(2)
                    for (long i = 0; i < (long)B * ROWB; i += 64) (void)((volatile char *)x)[i];
                }
            else
                memset(junk, rep + m, 512u << 20);
            long sink = 0;
            double t0 = now();
#pragma omp parallel num_threads(2) reduction(+ : sink)
            {
                static __thread char stage[64 * ROWB] __attribute__((aligned(64)));
                __m512i acc = _mm512_setzero_si512();
                const long lo = B / 2 * omp_get_thread_num(), hi = lo + B / 2;
                for (long i = lo; i < hi; i++) {
                    const long r = (m == 1 || m == 3) ? perm[i] : i;
                    if (m != 2) {
                        const __m512i *s = (const __m512i *)(x + (size_t)r * ROWB);
                        __m512i *d = (__m512i *)(stage + (i & 63) * ROWB);
                        for (int l = 0; l < ROWB / 64; l++) {
                            __m512i v = _mm512_load_si512(s + l);
                            if (m == 0 || m == 4)
                                acc = _mm512_xor_si512(acc, v);
                            else
                                _mm512_store_si512(d + l, v);
                        }
                    }
                    if (m >= 2) {
                        __m512i *d = (__m512i *)(y + (size_t)perm[i] * ROWB);
                        for (int l = 0; l < ROWB / 64; l++) _mm512_stream_si512(d + l, acc);
                    }
                }
                _mm_sfence();
                sink += _mm512_reduce_add_epi64(acc) + stage[5];
            }
            const double t = now() - t0;
            keep_ = sink;
            printf("%-24s %.3f\n", names[m], t * 1e3);
        }
    return 0;
}
