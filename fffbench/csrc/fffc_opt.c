/* Optimized FFF forward on the CPU (float32 or bfloat16 storage, float32 accumulation).
 *
 *   y = sum over trees and levels of GELU(x . W1[n] + b1[n]) W2[n],  n_{l+1} = 2 n_l + 1 + [z > 0]
 *
 * Two schedules, both exact (the float64 reference's arithmetic up to float32 rounding):
 *
 * fff_opt_walk    (any number of trees; small batches) threads over groups of rows; the rows of a
 *                 group walk their trees level by level together, their dots fused in one loop (eight
 *                 independent chains hide FMA and L2 latency), each row's next W1 row prefetched as
 *                 soon as it is known; the output is an embedding bag, y = sum_i a_i W2[n_i],
 *                 accumulated in registers and streamed out with non-temporal stores.
 *
 * fff_opt_bucket  (one tree, large batches) the weights do not fit a core's L2 (W1 + W2 = 25 MB at
 *                 768 x 1x11), so rows are bucketed by subtree, as MoE kernels sort tokens by expert:
 *                 phase 1 walks the top S levels of every row (their 2^S - 1 W1 rows stay in L2);
 *                 rows are counting-sorted by their level-S subtree; phase 2 gives each thread a
 *                 contiguous run of subtrees, and a subtree's W1 and W2 rows are loaded into that
 *                 core's L2 once for all of its rows instead of once per row from L3 or DRAM.
 *                 Both phases work on tiles of rows, node-major: the tile's rows are kept grouped by
 *                 node (a stable partition per block of levels, i.e. a radix sort by path), and a
 *                 group's x rows are streamed once per block of two levels against the block's three
 *                 W1 rows (so x passes through L1 once per two levels, and each W1 load feeds several
 *                 rows); the rows then walk the block in registers. The output is an embedding bag,
 *                 computed for each group of rows as soon as its walk ends: the group shares every
 *                 node above its last block, so most W2 chunks are loaded once for all its rows.
 *                 Phase 1 may instead walk groups of a few consecutive rows level by level (p1g),
 *                 their x rows in L1 and the next groups' prefetched under the compute.
 *                 The price of bucketing is a second read of x (phase 2): about 175 MB of memory
 *                 traffic per call at B = 16384 against 126 MB compulsory.
 */
#include "fffc.h"

#include <stdlib.h>

/* A built kernel: shape, weights and parameters (laid out as fffc_plan in c_cpu.py). */
typedef struct {
    long d, dout, K, D;         /* width, output width, trees, depth */
    const void *w1;             /* K*N x d, heap order; bf16 bits or float32 */
    const float *b1;            /* K*N */
    const void *w2;             /* K*N x dout */
    int bf, nthreads;           /* element type (1: bf16), threads of the case */
    int group, pf, mt_rows;     /* walk: rows walked together, prefetch mode, rows from which it threads */
    int S, R, blk, pfd, nt;     /* bucket: top levels, tile rows, levels per block, prefetch distance, NT stores */
    int unit, dyn;              /* bucket: rows per phase-2 work unit (0: a subtree), units handed out dynamically */
    int bagc;                   /* bucket: columns per block of a tile's bag (0: all) */
    int xpf;                    /* bucket: phase 2 prefetches the next tile's x across units, over walk and bag */
    int p1g;                    /* bucket: phase 1 walks groups of p1g consecutive rows (0: node-major tiles) */
} fffc_plan;

/* where the bag writes: fused into the last block of the walk */
typedef struct {
    const void *w2;
    void *y;
    long dout;
    int nt;
    long cols; /* columns per block of the tile's bag (0: all) */
    int xpf;   /* the tile's prefetch queue is also stepped during the bag (p->xpf) */
} bag_t;

/* The bag's register tile (gbag in fffc_opt_impl.h), sized to the register file: accumulators for
 * BAG_ROWS rows x BAG_NV registers of columns, plus one level's W2 chunk and the rows' broadcast
 * activations. 6 x 4 with 32 registers (24 + 4 + 1-4); 3 x 3 with 16 (9 + 3 + 3: 3 x 4 needs 19 and
 * kept two accumulators on the stack, a store-forwarded chain through every level). */
#define BAG_ROWS (FFFC_VREGS >= 32 ? 6 : 3)
#define BAG_NV (FFFC_VREGS >= 32 ? 4 : 3)
#define BAG_COLS (BAG_NV * FFFC_VC)
/* columns per prefetch step of the bag: whole tiles, about 64 */
#define BAG_STEP (BAG_COLS >= 64 ? BAG_COLS : 64 / BAG_COLS * BAG_COLS)

/* The column blocks of a tile's bag (cols rounded up to whole register tiles; a tail under one step
 * joins the last block, so that only the layer's own tail takes gbag's narrower loops) and, with a
 * prefetch queue, its steps of BAG_STEP columns (the last step takes the rest of the block):
 * tile_bag walks them, bag_steps counts them to spread the queue evenly. */
static inline long bag_block_end(const bag_t *bag, long c0) {
    long cb = bag->cols > 0 ? (bag->cols + BAG_COLS - 1) / BAG_COLS * BAG_COLS : bag->dout, c1 = c0 + cb;
    return c1 > bag->dout || bag->dout - c1 < BAG_STEP ? bag->dout : c1;
}
static inline long bag_step_end(long c, long c1) { return c + 2 * BAG_STEP <= c1 ? c + BAG_STEP : c1; }
static long bag_steps(const bag_t *bag) {
    long n = 0;
    for (long c0 = 0, c1; c0 < bag->dout; c0 = c1) {
        c1 = bag_block_end(bag, c0);
        for (long c = c0; c < c1; c = bag_step_end(c, c1)) n++;
    }
    return n;
}

#define WORK_INTS(R) (8 * (size_t)(R) + 8)

FFFC_INLINE void prefetch_row(const void *p, size_t bytes) {
    const char *c = (const char *)p;
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 2); /* to L2 */
}

FFFC_INLINE void store_y(void *y, size_t i, v16 v, int bf, int nt) {
    if (bf) {
        u16x16 h = v16_to_bf16(v);
#if defined(__AVX__)
        if (nt) {
            _mm256_stream_si256((__m256i *)((uint16_t *)y + i), (__m256i)h);
            return;
        }
#endif
        *(u16x16u *)((uint16_t *)y + i) = h;
    } else {
#if defined(__AVX512F__)
        if (nt) {
            _mm512_stream_ps((float *)y + i, (__m512)v);
            return;
        }
#elif defined(__AVX__)
        if (nt) {
            typedef float v8 __attribute__((vector_size(32)));
            _mm256_stream_ps((float *)y + i, (__m256)__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7));
            _mm256_stream_ps((float *)y + i + 8, (__m256)__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
            return;
        }
#endif
        v16_store((float *)y + i, v);
    }
}

/* store_y for one register tile vector (vc): FFFC_VC floats (with AVX-512 store_y itself) */
FFFC_INLINE void store_yc(void *y, size_t i, vc v, int bf, int nt) {
#if FFFC_VC == 16
    store_y(y, i, v, bf, nt);
#else
#if defined(__AVX__)
    if (nt && bf) {
        _mm_stream_si128((__m128i *)((uint16_t *)y + i), (__m128i)vc_to_bf16(v));
        return;
    }
    if (nt) {
        _mm256_stream_ps((float *)y + i, (__m256)v);
        return;
    }
#endif
    if (bf)
        *(u16xcu *)((uint16_t *)y + i) = vc_to_bf16(v);
    else
        *(vcu *)((float *)y + i) = v;
#endif
}

/* the parts of fff_opt_bucket a -DFFFC_PROFILE build times (fffc.h; scripts/profile_cpu.py names
 * them): phase 1, phase 2 whole, the bag within phase 2, the sort */
enum { Q_PHASE1, Q_PHASE2, Q_BAG, Q_SORT };

/* The kernels proper, instantiated once per storage type so that the element type is a constant
 * inside OpenMP's outlined regions. */
#define BF 0
#define SFX(name) name##_f32
#include "fffc_opt_impl.h"
#undef BF
#undef SFX
#define BF 1
#define SFX(name) name##_bf16
#include "fffc_opt_impl.h"
#undef BF
#undef SFX

/* Entry points: one plan per built kernel (its weights, shape and tuned parameters), so that a call
 * passes four arguments; the Python-to-C call costs about 0.1 us per argument. */
void fff_opt_walk(const fffc_plan *p, const void *x, void *y, long B, int32_t *nid, float *act) {
    (p->bf ? walk_all_bf16 : walk_all_f32)(p, x, y, B, nid, act);
}

void fff_opt_bucket(const fffc_plan *p, const void *x, void *y, long B, int32_t *nid, float *act, int32_t *perm,
                    long *start, int32_t *work) {
    (p->bf ? bucket_bf16 : bucket_f32)(p, x, y, B, nid, act, perm, start, work);
}

/* B <= 64 rows (fff_opt_walk with the plan's thread rule and no scratch: nodes and activations on the
 * stack); int B so that ctypes may pass it without a declared type. */
void fff_opt_small(const fffc_plan *p, const void *x, void *y, int B) {
    (p->bf ? walk_all_bf16 : walk_all_f32)(p, x, y, B, NULL, NULL);
}

/* The same call that does nothing: the Python-to-C call overhead, measured at build. */
void fffc_noop(const fffc_plan *p, const void *x, void *y, int B) { (void)p, (void)x, (void)y, (void)B; }

/* The bf16 path this build takes: 1 native dot products (AVX512-BF16), 0 widening to fp32. */
int fffc_bf16_native(void) { return FFFC_DPBF16; }
