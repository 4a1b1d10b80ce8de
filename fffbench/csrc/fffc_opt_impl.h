/* Body of fffc_opt.c, included once per element type: BF (0 float32, 1 bfloat16) and SFX(name). */

/* One multiply-accumulate step of a dot product consumes CH elements of both operands: one register
 * of floats (FFFC_VC), or with native bf16 32 bf16 (loaded as raw bits and fed to vdpbf16ps). ldr
 * loads a step's operand, fmr accumulates; the remainder of d below CH goes through ldc (converting)
 * and scalars. */
#define NATIVE (BF && FFFC_DPBF16)
#define CH (NATIVE ? 32 : FFFC_VC)
FFFC_INLINE vc SFX(ldr)(const void *p, size_t j) {
#if BF && FFFC_DPBF16
    return *(const v16u2 *)((const uint16_t *)p + j);
#else
    return ldc(p, j, BF);
#endif
}
FFFC_INLINE vc SFX(fmr)(vc acc, vc a, vc b) {
#if BF && FFFC_DPBF16
    return fffc_dpbf16(acc, a, b);
#else
    return acc + a * b;
#endif
}

#include "fffc_opt_dots.h"

/* Walk levels l0..l1 of one tree for G <= 8 rows together. n[g]: the rows' nodes at level l0 (tree
 * relative), updated in place. Row g's level l goes to nid[g][l] (the absolute W1/W2 row, off + node)
 * and act[g][l] (pre-activations). pf 1: prefetch each row's next W1 row (to L2) once it is known;
 * pf 2: prefetch both children's W1 rows (to L2) before the dot, so where the weights are not in L2
 * the next level's loads overlap this level's dot instead of following it; pf 3: and the node's W2
 * row for the bag. To L2, not L1: on a hot path (a B = 1 loop) both children would push the path's
 * own rows out of L1 (into L1 a B = 1 call took 1.5x as long; to L2 1.2x, with W2 rows 1.3x). */
static inline void SFX(walk)(const void *const *xr, int G, const void *w1, const float *b1, const void *w2, long d,
                             long dout, long off, long *n, int l0, int l1, int32_t *const *nid, float *const *act,
                             int pf) {
    const size_t es = BF ? 2 : 4;
    const void *wr[8];
    float z[8];
    for (int l = l0; l <= l1; l++) {
        for (int g = 0; g < G; g++) wr[g] = (const char *)w1 + (size_t)(off + n[g]) * d * es;
        if (pf >= 2)
            for (int g = 0; g < G; g++) {
                if (l < l1) {
                    const char *c = (const char *)w1 + (size_t)(off + 2 * n[g] + 1) * d * es;
                    for (size_t o = 0; o < 2 * d * es; o += 64) __builtin_prefetch(c + o, 0, 2);
                }
                if (pf == 3) prefetch_row((const char *)w2 + (size_t)(off + n[g]) * dout * es, dout * es);
            }
        SFX(dots)(xr, wr, G, d, z);
        for (int g = 0; g < G; g++) {
            long a = off + n[g];
            float zz = z[g] + b1[a];
            nid[g][l] = (int32_t)a;
            act[g][l] = zz; /* GELU applied by the bag */
            n[g] = 2 * n[g] + 1 + (zz > 0.0f);
        }
        if (pf == 1 && l < l1)
            for (int g = 0; g < G; g++) prefetch_row((const char *)w1 + (size_t)(off + n[g]) * d * es, d * es);
    }
}

/* The embedding bag for G rows, y_g = sum_p act_g[p] W2[nid_g[p]], column block by column block: the
 * rows of a group share most of their W2 rows when they come sorted by path, and a block of those
 * (P x 512 bytes) stays in L1 from one row to the next. */
static void SFX(bag_group)(int G, int P, long dout, const void *w2, int32_t *const *nid, float *const *act,
                           void *const *yr, int nt) {
    for (int g = 0; g < G; g++) fffc_gelu_row(act[g], P); /* the walk left pre-activations */
    long c = 0;
    for (; c + 8 * FFFC_VC <= dout; c += 8 * FFFC_VC) {
        for (int g = 0; g < G; g++) {
            vc a[8];
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) a[k] = vc_splat(0.0f);
            const int32_t *ni = nid[g];
            const float *ac = act[g];
            for (int p = 0; p < P; p++) {
                size_t o = (size_t)ni[p] * dout + c;
                vc s = vc_splat(ac[p]);
                _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) a[k] += s * ldc(w2, o + k * FFFC_VC, BF);
            }
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) store_yc(yr[g], c + k * FFFC_VC, a[k], BF, nt);
        }
    }
    for (; c + 16 <= dout; c += 16)
        for (int g = 0; g < G; g++) {
            v16 a0 = v16_splat(0.0f);
            for (int p = 0; p < P; p++) a0 += v16_splat(act[g][p]) * ldv(w2, (size_t)nid[g][p] * dout + c, BF);
            store_y(yr[g], c, a0, BF, nt);
        }
    for (; c < dout; c++)
        for (int g = 0; g < G; g++) {
            float s = 0.0f;
            for (int p = 0; p < P; p++) s += act[g][p] * lds(w2, (size_t)nid[g][p] * dout + c, BF);
            if (BF)
                ((uint16_t *)yr[g])[c] = f32_to_bf16(s);
            else
                ((float *)yr[g])[c] = s;
        }
}

/* One group of G <= 8 rows from r0: walk every tree, then the bag. Nodes and activations live on
 * the stack when a row has at most WALK_STACK of them, else in the caller's scratch (rows r0..). */
#define WALK_STACK 64
static void SFX(walk_group)(const fffc_plan *p, const void *x, void *y, long r0, int G, int32_t *nid, float *act) {
    long D = p->D, K = p->K, N = (2L << D) - 1, L = D + 1, P = K * L, d = p->d, dout = p->dout;
    const size_t es = BF ? 2 : 4;
    int32_t nid_s[8 * WALK_STACK];
    float act_s[8 * WALK_STACK];
    int stack = P <= WALK_STACK;
    const void *xr[8];
    void *yr[8];
    long n[8];
    int32_t *ni[8];
    float *ac[8];
    for (long k = 0; k < K; k++) {
        for (int g = 0; g < G; g++) {
            xr[g] = (const char *)x + (size_t)(r0 + g) * d * es, n[g] = 0;
            ni[g] = (stack ? nid_s + g * P : nid + (r0 + g) * P) + k * L;
            ac[g] = (stack ? act_s + g * P : act + (r0 + g) * P) + k * L;
        }
        SFX(walk)(xr, G, p->w1, p->b1, p->w2, d, dout, k * N, n, 0, (int)D, ni, ac, p->pf);
    }
    for (int g = 0; g < G; g++) {
        ni[g] = stack ? nid_s + g * P : nid + (r0 + g) * P;
        ac[g] = stack ? act_s + g * P : act + (r0 + g) * P;
        yr[g] = (char *)y + (size_t)(r0 + g) * dout * es;
    }
    SFX(bag_group)(G, (int)P, dout, p->w2, ni, ac, yr, p->nt);
}

/* Any number of trees and depth. Below p->mt_rows rows one thread, with no parallel region at all
 * (the fork and join of a team costs microseconds, more than a small batch's walk). */
static void SFX(walk_all)(const fffc_plan *p, const void *x, void *y, long B, int32_t *nid, float *act) {
    int G = p->group < 1 ? 1 : p->group > 8 ? 8 : p->group;
    int nth = B < p->mt_rows ? 1 : fffc_threads(p->nthreads);
    if (nth == 1) {
        for (long r0 = 0; r0 < B; r0 += G) SFX(walk_group)(p, x, y, r0, (int)(B - r0 < G ? B - r0 : G), nid, act);
        return;
    }
#pragma omp parallel num_threads(nth)
    {
#pragma omp for schedule(static) nowait
        for (long r0 = 0; r0 < B; r0 += G) SFX(walk_group)(p, x, y, r0, (int)(B - r0 < G ? B - r0 : G), nid, act);
        fffc_sfence();
    }
}

/* The embedding bag for a group of G <= BAG_ROWS rows, y_g = sum_l act_g[l] W2[nid_g[l]], over
 * columns c0..c1 (BAG_NV registers' worth at a time, G x BAG_NV accumulators in registers, then 16,
 * then one). Rows come sorted by path, so at most levels the whole group sits at one node: that W2
 * chunk is loaded once for all G rows. dout is W2's row length; the caller sweeps column blocks over
 * all of a tile's groups. */
#define DEF_GBAG(G)                                                                                    \
    static void SFX(gbag##G)(long dout, long c0, long c1, const void *w2, const int32_t *const *nid,       \
                             const float *const *act, int L, void *const *yr, int nt) {                \
        uint64_t same = 0;                                                                             \
        for (int l = 0; l < L; l++) {                                                                  \
            int eq = 1;                                                                                \
            for (int g = 1; g < G; g++) eq &= nid[g][l] == nid[0][l];                                  \
            same |= (uint64_t)eq << l;                                                                 \
        }                                                                                              \
        long c = c0;                                                                                   \
        for (; c + BAG_COLS <= c1; c += BAG_COLS) {                                                    \
            vc a[G][BAG_NV];                                                                           \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++)                                        \
                _Pragma("GCC unroll 4") for (int k = 0; k < BAG_NV; k++) a[g][k] = vc_splat(0.0f);     \
            for (int l = 0; l < L; l++) {                                                              \
                if (same >> l & 1) {                                                                   \
                    size_t o = (size_t)nid[0][l] * dout + c;                                           \
                    vc u[BAG_NV];                                                                      \
                    _Pragma("GCC unroll 4") for (int k = 0; k < BAG_NV; k++) u[k] = ldc(w2, o + k * FFFC_VC, BF); \
                    _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) {                              \
                        vc s = vc_splat(act[g][l]);                                                    \
                        _Pragma("GCC unroll 4") for (int k = 0; k < BAG_NV; k++) a[g][k] += s * u[k];  \
                    }                                                                                  \
                } else {                                                                               \
                    _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) {                              \
                        size_t o = (size_t)nid[g][l] * dout + c;                                       \
                        vc s = vc_splat(act[g][l]);                                                    \
                        _Pragma("GCC unroll 4") for (int k = 0; k < BAG_NV; k++)                       \
                            a[g][k] += s * ldc(w2, o + k * FFFC_VC, BF);                               \
                    }                                                                                  \
                }                                                                                      \
            }                                                                                          \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++)                                        \
                _Pragma("GCC unroll 4") for (int k = 0; k < BAG_NV; k++) store_yc(yr[g], c + k * FFFC_VC, a[g][k], BF, nt); \
        }                                                                                              \
        for (; c + 16 <= c1; c += 16)                                                                  \
            for (int g = 0; g < G; g++) {                                                              \
                v16 a0 = v16_splat(0.0f);                                                              \
                for (int l = 0; l < L; l++) a0 += v16_splat(act[g][l]) * ldv(w2, (size_t)nid[g][l] * dout + c, BF); \
                store_y(yr[g], c, a0, BF, nt);                                                         \
            }                                                                                          \
        for (; c < c1; c++)                                                                            \
            for (int g = 0; g < G; g++) {                                                              \
                float s = 0.0f;                                                                        \
                for (int l = 0; l < L; l++) s += act[g][l] * lds(w2, (size_t)nid[g][l] * dout + c, BF); \
                if (BF)                                                                                \
                    ((uint16_t *)yr[g])[c] = f32_to_bf16(s);                                           \
                else                                                                                   \
                    ((float *)yr[g])[c] = s;                                                           \
            }                                                                                          \
    }
DEF_GBAG(1)
DEF_GBAG(2)
DEF_GBAG(3)
DEF_GBAG(4)
DEF_GBAG(5)
DEF_GBAG(6)
#undef DEF_GBAG

static void SFX(gbag)(int G, long dout, long c0, long c1, const void *w2, const int32_t *const *nid,
                      const float *const *act, int L, void *const *yr, int nt) {
    switch (G) {
    case 1: SFX(gbag1)(dout, c0, c1, w2, nid, act, L, yr, nt); break;
    case 2: SFX(gbag2)(dout, c0, c1, w2, nid, act, L, yr, nt); break;
    case 3: SFX(gbag3)(dout, c0, c1, w2, nid, act, L, yr, nt); break;
    case 4: SFX(gbag4)(dout, c0, c1, w2, nid, act, L, yr, nt); break;
    case 5: SFX(gbag5)(dout, c0, c1, w2, nid, act, L, yr, nt); break;
    default: SFX(gbag6)(dout, c0, c1, w2, nid, act, L, yr, nt); break;
    }
}

/* The bag of a walked tile (rows sorted by path): GELU on every row's pre-activations, then column
 * block by column block over all of the tile's groups of BAG_ROWS rows, so that a column block of every
 * W2 row the tile uses (the subtree's and the shared ones above it: 70 x 256 bytes at 1x11) stays
 * in L1 while all the tile's rows read it. Measured no faster than the bag per group on the 2-core
 * VM (64 columns slower), so the tuner chooses; the bag's cost there is its FMAs and y's stores. */
static void SFX(tile_bag)(const bag_t *bag, const int32_t *rows, int R, int32_t *nid, float *act, long L, pfq_t *q,
                          size_t per) {
    const size_t es = BF ? 2 : 4;
    for (int i = 0; i < R; i++) fffc_gelu_row(act + (size_t)rows[i] * L, L);
    for (long c0 = 0, c1; c0 < bag->dout; c0 = c1) {
        c1 = bag_block_end(bag, c0);
        for (int i0 = 0; i0 < R; i0 += BAG_ROWS) {
            int G = R - i0 < BAG_ROWS ? R - i0 : BAG_ROWS;
            const int32_t *ni[6];
            const float *ac[6];
            void *yr[6];
            for (int g = 0; g < G; g++) {
                int32_t r = rows[i0 + g];
                ni[g] = nid + (size_t)r * L, ac[g] = act + (size_t)r * L;
                yr[g] = (char *)bag->y + (size_t)r * bag->dout * es;
            }
            if (q) /* a few lines per step of BAG_STEP columns: bursts of prefetches beyond the miss buffers stall the bag */
                for (long c = c0, e; c < c1; c = e) {
                    e = bag_step_end(c, c1);
                    pfq_step(q, per);
                    SFX(gbag)(G, bag->dout, c, e, bag->w2, ni, ac, (int)L, yr, bag->nt);
                }
            else
                SFX(gbag)(G, bag->dout, c0, c1, bag->w2, ni, ac, (int)L, yr, bag->nt);
        }
    }
}

/* Node-major walk of a tile of R rows that all sit at node n0 of level l0, down to level l1, in
 * blocks of up to three levels. At every block the tile's rows are grouped by their node at the
 * block's first level (a stable partition per block, i.e. a radix sort by path); each group's x
 * rows are streamed once per block against the block's 1, 3 or 7 W1 rows (bdots), and the rows
 * then walk the block's levels in registers. On return rows[] is sorted by path. Writes nid/act
 * [r*L + l] for l0 <= l <= l1 and nid[r*L + l1 + 1] (the node below) when l1 < L - 1. `q`: the next
 * tile's x rows, prefetched a few lines per group. `bag`: if given, the output rows: with cols < 0
 * those of every group of rows as soon as its walk ends (its nodes and activations still in L1; the
 * group shares every node above the last block, so most W2 chunks are loaded once for all its rows),
 * else the whole tile's after the walk (tile_bag). */
static void SFX(tile_walk)(const void *x, long d, const void *w1, const float *b1, int32_t *rows, int R, long n0,
                           int l0, int l1, int32_t *nid, float *act, long L, int32_t *tmp, int32_t *seg,
                           int32_t *segn, int32_t *seg2, int32_t *segn2, int32_t *leaf, int blk, pfq_t *q,
                           const bag_t *bag) {
    const size_t es = BF ? 2 : 4, rowb = (size_t)d * es;
    int nseg = 1;
    seg[0] = 0, seg[1] = R, segn[0] = (int32_t)n0;
    long groups = 0;
    for (int l = l0; l <= l1; l += blk) {
        int b = l1 - l + 1 < blk ? l1 - l + 1 : blk;
        groups += (R + SFX(bdots_rows)(b) - 1) / SFX(bdots_rows)(b) + nseg;
    }
    /* with bag->xpf the tile's bag steps the queue too: the next tile's x streams in while y streams out */
    int bagq = q && bag && bag->xpf && bag->cols >= 0;
    if (bagq) groups += bag_steps(bag) * ((R + BAG_ROWS - 1) / BAG_ROWS);
    size_t per_group = q ? (q->total + groups - 1) / (groups ? groups : 1) : 0;
    for (int l = l0; l <= l1; l += blk) {
        int b = l1 - l + 1 < blk ? l1 - l + 1 : blk, M = (1 << b) - 1, GM = SFX(bdots_rows)(b);
        int nseg2 = 0;
        for (int s = 0; s < nseg; s++) {
            int lo = seg[s], hi = seg[s + 1];
            long n = segn[s];
            /* the block's nodes in heap order: n; 2n+1, 2n+2; 4n+3 .. 4n+6 */
            const void *wr[7];
            long node[7];
            for (int m = 0; m < M; m++) {
                int lev = m == 0 ? 0 : m < 3 ? 1 : 2;
                long first = (1L << lev) - 1;
                node[m] = (n << lev) + ((1L << lev) - 1) + (m - first);
                wr[m] = (const char *)w1 + (size_t)node[m] * rowb;
            }
            for (int i0 = lo; i0 < hi; i0 += GM) {
                int G = hi - i0 < GM ? hi - i0 : GM;
                const void *xr[8];
                float z[64];
                if (q) pfq_step(q, per_group);
                for (int g = 0; g < G; g++) xr[g] = (const char *)x + (size_t)rows[i0 + g] * rowb;
                SFX(bdots)(b, G, xr, wr, d, z);
                for (int g = 0; g < G; g++) {
                    int32_t r = rows[i0 + g];
                    int loc = 0;
                    for (int k = 0; k < b; k++) {
                        float zz = z[g * 8 + loc] + b1[node[loc]];
                        nid[(size_t)r * L + l + k] = (int32_t)node[loc];
                        act[(size_t)r * L + l + k] = zz; /* GELU applied by the bag */
                        loc = 2 * loc + 1 + (zz > 0.0f);
                    }
                    leaf[i0 + g] = loc - M; /* 0 .. 2^b - 1: the child block the row goes to */
                    if (l + b > l1 && l1 + 1 < L) nid[(size_t)r * L + l1 + 1] = (int32_t)((n << b) + M + (loc - M));
                }
                if (bag && bag->cols < 0 && l + b > l1)
                    for (int g0 = 0; g0 < G; g0 += BAG_ROWS) {
                        int Gb = G - g0 < BAG_ROWS ? G - g0 : BAG_ROWS;
                        const int32_t *ni[6];
                        const float *ac[6];
                        void *yr[6];
                        for (int g = 0; g < Gb; g++) {
                            int32_t r = rows[i0 + g0 + g];
                            ni[g] = nid + (size_t)r * L, ac[g] = act + (size_t)r * L;
                            yr[g] = (char *)bag->y + (size_t)r * bag->dout * es;
                            fffc_gelu_row(act + (size_t)r * L, L);
                        }
                        PROF_T(tb);
                        SFX(gbag)(Gb, bag->dout, 0, bag->dout, bag->w2, ni, ac, (int)L, yr, bag->nt);
                        PROF_ADD(Q_BAG, tb);
                    }
            }
            /* stable partition of the group's rows by the node they reach below the block */
            int cnt[9] = {0};
            for (int i = lo; i < hi; i++) cnt[leaf[i] + 1]++;
            for (int c = 0; c < (1 << b); c++) cnt[c + 1] += cnt[c];
            for (int c = 0; c < (1 << b); c++)
                if (cnt[c + 1] > cnt[c] && l + b <= l1)
                    seg2[nseg2] = lo + cnt[c], segn2[nseg2++] = (int32_t)((n << b) + ((1L << b) - 1) + c);
            for (int i = lo; i < hi; i++) tmp[lo + cnt[leaf[i]]++] = rows[i];
            for (int i = lo; i < hi; i++) rows[i] = tmp[i];
        }
        if (l + b <= l1) {
            seg2[nseg2] = R;
            int32_t *t = seg;
            seg = seg2, seg2 = t;
            t = segn, segn = segn2, segn2 = t;
            nseg = nseg2;
        }
    }
    if (bag && bag->cols >= 0) {
        PROF_T(tb);
        SFX(tile_bag)(bag, rows, R, nid, act, L, bagq ? q : NULL, per_group);
        PROF_ADD(Q_BAG, tb);
    }
}

/* Phase 1 for rows r0 .. r0+n-1 by groups of p->p1g consecutive rows walked together level by level
 * (walk: fused dots, one per level and row, no block's extra dots), their x rows in L1 through all S
 * levels and the 2^S - 1 top W1 rows in L2. Against node-major tiles, whose later passes re-read a
 * tile too large for L1 from L2 while the memory stands idle, the next rows can stream in under the
 * compute: the x rows pfd groups ahead are prefetched (to L2), a share of their lines before each
 * level, since a whole group's lines at once (288 at 6 rows) queue up behind the demand misses.
 * Measured on the 2-core Zen 3 VM (notes/cpu-kernels.md): 4.2 ms node-major, 3.5 ms in groups of 6
 * without prefetch, 2.85-3.2 ms in groups of 4 with it, against 1.8 ms for streaming x alone. */
static void SFX(top_groups)(const fffc_plan *p, const void *x, long r0, int n, long B, int32_t *nid, float *act) {
    const size_t es = BF ? 2 : 4, rowb = (size_t)p->d * es;
    const long L = p->D + 1;
    const int S = p->S, G0 = p->p1g > 8 ? 8 : p->p1g;
    for (long g0 = r0; g0 < r0 + n; g0 += G0) {
        int G = (int)(r0 + n - g0 < G0 ? r0 + n - g0 : G0);
        const void *xr[8];
        long node[8];
        int32_t *ni[8];
        float *ac[8];
        for (int g = 0; g < G; g++) {
            xr[g] = (const char *)x + (size_t)(g0 + g) * rowb, node[g] = 0;
            ni[g] = nid + (g0 + g) * L, ac[g] = act + (g0 + g) * L;
        }
        long pa = g0 + (long)G0 * p->pfd, pe = pa + G0 < B ? pa + G0 : B;
        size_t pb = p->pfd && pa < pe ? (size_t)(pe - pa) * rowb : 0, po = 0, step = (pb / S + 63) / 64 * 64;
        const char *pr = (const char *)x + (size_t)pa * rowb;
        for (int l = 0; l < S; l++) {
            for (size_t e = po + step; po < e && po < pb; po += 64) __builtin_prefetch(pr + po, 0, 2);
            SFX(walk)(xr, G, p->w1, p->b1, p->w2, p->d, p->dout, 0, node, l, l, ni, ac, 0);
        }
        for (int g = 0; g < G; g++) ni[g][S] = (int32_t)node[g]; /* the subtree's root, for the sort */
    }
}

/* One tree, depth D > S: the two-phase, node-major schedule (see the top of fffc_opt.c).
 * scratch: nid and act (B*(D+1) each), perm (B), start (2^(S+1) + 1 + 3 * (2^S + B / R + 2)), work
 * (WORK_INTS(R) ints per thread). Work comes in tiles of R rows in phase 1 and units of at most
 * p->unit rows of one subtree in phase 2 (0: whole subtrees), split into equal contiguous shares
 * (p->dyn 0) or handed out one at a time (p->dyn 1): then a thread whose core is shared with another
 * process does less of the work instead of holding up the other (with static shares the kernel is
 * as slow as its slower core, 3x under a co-tenant's load). A small
 * unit lets several threads share a big subtree (its weights then go to several L2s). pfd: the x
 * rows of the tile pfd tiles ahead (phase 1: in the order tiles are handed out; phase 2: within the
 * unit) are prefetched during the current one (0: off). */
static void SFX(bucket)(const fffc_plan *p, const void *x, void *y, long B, int32_t *nid, float *act, int32_t *perm,
                        long *start, int32_t *work) {
    long D = p->D, d = p->d, L = D + 1;
    int S = p->S, R = p->R, blk = p->blk < 1 ? 1 : p->blk > 3 ? 3 : p->blk, pfd = p->pfd;
    long T = 1L << S, ntiles = (B + R - 1) / R;
    const size_t es = BF ? 2 : 4, rowb = (size_t)d * es, lines = (rowb + 63) / 64;
    int nth = fffc_threads(p->nthreads);
    const void *w1 = p->w1;
    const float *b1 = p->b1;
    long next1 = 0, next2 = 0; /* the next tile and unit to hand out when p->dyn */

    /* phase 1: tiles of R consecutive rows through the top S levels */
#pragma omp parallel num_threads(nth)
    {
        int id = 0;
#ifdef _OPENMP
        id = omp_get_thread_num();
#endif
        int32_t *wk = work + WORK_INTS(R) * (size_t)id;
        int32_t *rows = wk, *tmp = wk + R, *sg = wk + 2 * R, *sn = wk + 3 * R + 2, *sg2 = wk + 4 * R + 4,
                *sn2 = wk + 5 * R + 6;
        int32_t *leaf = wk + 6 * R + 8;
        PROF_T(tp);
        long t, t1 = ntiles * (id + 1) / nth;
        for (t = p->dyn ? fffc_grab(&next1) : ntiles * id / nth; t < (p->dyn ? ntiles : t1);
             t = p->dyn ? fffc_grab(&next1) : t + 1) {
            long r0 = t * R;
            int n = (int)(B - r0 < R ? B - r0 : R);
            if (p->p1g > 0) {
                SFX(top_groups)(p, x, r0, n, B, nid, act);
                continue;
            }
            long nx = r0 + (long)R * pfd * (p->dyn ? nth : 1), nn = B - nx < R ? B - nx : R;
            pfq_t q = {(const char *)x, NULL, nx, nn > 0 ? (int)nn : 0, rowb, 0, 0, 0, 0, 0, 0, 0};
            q.total = (size_t)q.n * lines;
            for (int i = 0; i < n; i++) rows[i] = (int32_t)(r0 + i);
            SFX(tile_walk)(x, d, w1, b1, rows, n, 0, 0, S - 1, nid, act, L, tmp, sg, sn, sg2, sn2, leaf, blk,
                           pfd ? &q : NULL, NULL);
        }
        PROF_ADD(Q_PHASE1, tp);
    }
    PROF_T(ts);
    /* counting sort of the rows by subtree (nid at level S holds the subtree's root), then the units */
    long U = p->unit > 0 ? (p->unit < R ? R : p->unit) : B;
    long *units = start + 2 * T + 1, nunits = fffc_sort_units(nid, L, S, T - 1, B, T, U, perm, start);
    PROF_ADD(Q_SORT, ts);
    /* phase 2: units in order, each in tiles of R rows; walk the subtree node-major, then the bag */
#pragma omp parallel num_threads(nth)
    {
        int id = 0;
#ifdef _OPENMP
        id = omp_get_thread_num();
#endif
        int32_t *wk = work + WORK_INTS(R) * (size_t)id;
        int32_t *tmp = wk + R, *sg = wk + 2 * R, *sn = wk + 3 * R + 2, *sg2 = wk + 4 * R + 4, *sn2 = wk + 5 * R + 6;
        int32_t *leaf = wk + 6 * R + 8;
        bag_t bag = {p->w2, y, p->dout, p->nt, p->bagc, p->xpf};
        PROF_T(tp);
        /* static: the units whose first row falls in the thread's share of the rows */
        long u = 0, lo = B * id / nth, hi = B * (id + 1) / nth;
        if (!p->dyn)
            while (u < nunits && units[3 * u] < lo) u++;
#define UNIT_OK(v) ((v) < nunits && (p->dyn || units[3 * (v)] < hi))
        /* p->xpf: the thread claims its next unit one ahead, so that the x rows of the tile after the
         * current one are known across unit boundaries (at S = 8 a subtree has ~64 rows, less than a
         * tile: within a unit there is no next tile to prefetch) */
        u = p->dyn ? fffc_grab(&next2) : u;
        long un = !p->xpf ? 0 : p->dyn ? (UNIT_OK(u) ? fffc_grab(&next2) : nunits) : u + 1;
        while (UNIT_OK(u)) {
            long first = units[3 * u], end = first + units[3 * u + 1], sub = units[3 * u + 2];
            for (long i = first; i < end; i += R) {
                int n = (int)(end - i < R ? end - i : R), on = pfd != 0, cross = 0;
                long nx = i + (long)R * pfd, nn = end - nx < R ? end - nx : R;
                if (p->xpf) { /* the next tile: in this unit, else the first of the next unit */
                    on = 1, nx = i + R, nn = end - nx < R ? end - nx : R;
                    if (nn <= 0 && UNIT_OK(un))
                        cross = 1, nx = units[3 * un], nn = units[3 * un + 1] < R ? units[3 * un + 1] : R;
                }
                pfq_t q = {(const char *)x, perm + nx, 0, on && nn > 0 ? (int)nn : 0, rowb, 0, 0, 0, 0, 0, 0, 0};
                q.total = (size_t)q.n * lines;
                if (cross && units[3 * un + 2] != sub && ((2L << (D - S)) - 1) * (rowb + (size_t)p->dout * es) <= (256u << 10)) {
                    /* the next tile starts another subtree: its W1 and W2 rows too where they fit (<= 256 KB:
                     * S >= 7 at 1x11 d = 768; one contiguous run of 2^(l-S) rows per level l >= S), which
                     * the walk and the bag would otherwise first touch from DRAM */
                    long s2 = units[3 * un + 2];
                    for (long l = S; l <= D; l++) {
                        long w = 1L << (l - S), n0 = ((1L << l) - 1) + s2 * w;
                        pfq_range(&q, (const char *)w1 + (size_t)n0 * rowb, (size_t)w * rowb);
                        pfq_range(&q, (const char *)p->w2 + (size_t)n0 * p->dout * es, (size_t)w * p->dout * es);
                    }
                }
                SFX(tile_walk)(x, d, w1, b1, perm + i, n, (T - 1) + sub, S, (int)D, nid, act, L, tmp, sg, sn, sg2,
                               sn2, leaf, blk, on ? &q : NULL, &bag);
                if (on) pfq_step(&q, q.total);
            }
            if (p->xpf)
                u = un, un = p->dyn ? (UNIT_OK(u) ? fffc_grab(&next2) : nunits) : u + 1;
            else
                u = p->dyn ? fffc_grab(&next2) : u + 1;
        }
#undef UNIT_OK
        fffc_sfence();
        PROF_ADD(Q_PHASE2, tp);
    }
}

#undef NATIVE
#undef CH
