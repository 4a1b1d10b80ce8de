/* The bf16 FFF forward on AMX tiles (one tree, B large): the tree is cut into blocks of at most four
 * levels, and a block's 2^b - 1 <= 15 nodes are one 16-column tile of W1. For rows that share the
 * block's subtree, all 15 logits of 16 rows are one tile product (16 x d x 16, d / 32 steps of
 * tdpbf16ps), of which a row then uses b: up to 15 / 4 = 3.75x the dots of a row-by-row walk, each
 * step 8192 multiply-adds in one instruction against 32 for vdpbf16ps. The output is a tile product
 * too: the rows of one last-block subtree share its ancestors, so y = A W2p with A the 16 x 32 matrix
 * of GELU activations (ancestors, then the block's nodes, zero where not visited) and W2p the 32 rows
 * of W2 those columns name: one step per 16 output columns.
 *
 *   phase 1   groups of `group` consecutive rows through every block but the last: block 0 straight
 *             from x (tile loads take rows at one stride), then the group's rows partitioned by
 *             subtree and copied into a stage (from L2: they were just read) for the next block
 *   sort      rows counting-sorted by their last-block subtree (as MoE kernels sort tokens by expert)
 *   phase 2   one unit per last-block subtree (at most `chunk` rows), handed out one at a time: its
 *             x rows gathered into a stage, the last block, the bag. Each subtree's packed weights
 *             are loaded once per call (units cut from bigger subtrees load them again).
 *
 * W1 and W2 are packed at build (fffbench/backends/_amx.py) in the tiles' layout: per subtree and
 * 32 elements of d, 16 pairs x 16 nodes x 2 (the "VNNI" order tdpbf16ps reads); per last-block
 * subtree and 16 output columns, 16 pairs of W2 rows x 16 columns x 2. Accumulation is float32
 * throughout; activations enter the output product as bf16, as the inputs and weights do.
 */
#include "fffc.h"

#include <stdlib.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define FFFC_AMX 1
#else
#define FFFC_AMX 0
#endif

#define AMX_MAXB 4 /* blocks (the tree's depth + 1 <= 16 levels) */

/* laid out as AmxPlan in _amx.py */
typedef struct {
    long d, dout, D;         /* width, output width, depth (one tree) */
    const float *b1;         /* N */
    const uint16_t *w1p;     /* packed W1: block by block, subtree by subtree, d/32 tiles of 16 x 32 */
    const uint16_t *w2p;     /* packed W2: per last-block subtree, dout/16 tiles of 16 x 32 */
    int nb, nthreads;        /* blocks, threads */
    int group, chunk;        /* rows per phase-1 group, at most per phase-2 unit */
    int pf;                  /* bit 0: a unit prefetches the next unit's x rows and weights (amx_pf);
                              * bit 1: phase 1 copies a group's x rows to a stage first (one sequential
                              * stream the hardware prefetcher follows, not 64 rows' streams at a stride) */
    int bl[AMX_MAXB];        /* levels per block (<= 4) */
} fffc_amx_plan;

/* The process asks Linux for the AMX register state once (arch_prctl, Linux >= 5.16); 0 when the
 * tiles can be used, else why not (1 not built for AMX, 2 refused by the kernel). */
int fffc_amx_init(void) {
#if FFFC_AMX && defined(__linux__)
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */)) return 2;
    return 0;
#else
    return 1;
#endif
}

#if FFFC_AMX

/* the parts a -DFFFC_PROFILE build times (fffc.h; scripts/profile_cpu.py names them) */
enum { P_BLK0, P_LOGITS, P_WALK, P_BAG, P_REGATHER, P_GATHER, P_SORT };

typedef struct {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg_t;

/* every tile 16 rows x 64 bytes: tiles 0-3 accumulators, 4-5 rows of x (or activations), 6-7 weights.
 * A constant: built on the stack, GCC 12 dropped the column widths' stores as dead (ldtilecfg then
 * faults on the rows it does see). */
static const tilecfg_t TILES = {1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};
static void tiles_on(void) { _tile_loadconfig(&TILES); }

typedef struct {
    const fffc_amx_plan *p;
    long L;
    int lev0[AMX_MAXB];   /* first level of each block */
    long sub0[AMX_MAXB];  /* first subtree of each block in w1p */
    size_t rowb;          /* bytes per x row */
    size_t w1sub;         /* uint16 per packed W1 subtree: d/32 tiles of 512 */
    const void *x;
    void *y;
    int32_t *nid;
    float *act;
} amx_ctx;

/* What a thread prefetches while it works on a unit: the next unit's x rows and, where it is another
 * subtree, its packed weights, a share of lines per step of work (tick), so that the memory streams
 * under the tile products instead of before them. */
typedef struct {
    pfq_t x;
    size_t xper;
} amx_pf;

static inline void tick(amx_pf *f) { pfq_step(&f->x, f->xper); }

/* steps (ticks) of work in a phase-2 unit of n rows: the queue's lines are spread over them */
static inline size_t unit_ticks(const fffc_amx_plan *p, long n) {
    return (size_t)(n + n / 64 + 1 + (n / 16 + 1) * ((p->dout + 63) / 64));
}

/* The logits of n <= 64 staged rows (stride rowb) for the 15 nodes of one subtree: up to four 16-row
 * tiles share each weight tile. Rows past n in the last tile are whatever the buffer holds; their
 * results are not read. */
static void block_logits(const amx_ctx *c, const char *xs, int n, const uint16_t *w, float *z /* 64 x 16 */) {
    int nt = (n + 15) / 16;
    long ks = c->p->d / 32;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const size_t stride = c->rowb;
    for (long k = 0; k < ks; k++) {
        _tile_loadd(6, w + k * 512, 64);
        const char *a = xs + k * 64;
        _tile_loadd(4, a, stride);
        _tile_dpbf16ps(0, 4, 6);
        if (nt > 1) {
            _tile_loadd(5, a + 16 * stride, stride);
            _tile_dpbf16ps(1, 5, 6);
        }
        if (nt > 2) {
            _tile_loadd(4, a + 32 * stride, stride);
            _tile_dpbf16ps(2, 4, 6);
        }
        if (nt > 3) {
            _tile_loadd(5, a + 48 * stride, stride);
            _tile_dpbf16ps(3, 5, 6);
        }
    }
    _tile_stored(0, z, 64);
    if (nt > 1) _tile_stored(1, z + 256, 64);
    if (nt > 2) _tile_stored(2, z + 512, 64);
    if (nt > 3) _tile_stored(3, z + 768, 64);
}

/* Walk block b for up to 16 rows at once from their logits z (16 x 16, the block's nodes in local
 * heap order), one lane per row: each level's local index, logit and bias gathered, the nodes and
 * pre-activations scattered to the rows' nid and act (the GELU is the bag's). child[i]: the subtree
 * below the block; locs[k][i0 + i]: the local index at the block's level k. (Against a scalar
 * walk of four dependent steps per row: 0.28 against 0.33 ms per thread at B = 16384.) Indices are
 * 32-bit: B (D + 1) < 2^31, which the caller (c_cpu.py) ensures. */
static inline void walk_block(const amx_ctx *c, int b, long sub, const int32_t *rows, int nr, const float *z,
                                int32_t *child, int (*locs)[64], int i0) {
    const fffc_amx_plan *p = c->p;
    const int lb = c->lev0[b], nl = p->bl[b];
    const int root1 = (int)((1L << lb) + sub); /* root + 1 */
    const __mmask16 live = (__mmask16)((1u << nr) - 1);
    const __m512i lane16 = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                              _mm512_set1_epi32(16));
    __m512i base = _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(live, rows), _mm512_set1_epi32((int)c->L));
    __m512i m = _mm512_setzero_si512();
    for (int k = 0; k < nl; k++) {
        __m512i node = _mm512_add_epi32(_mm512_set1_epi32((root1 << k) - 1 - ((1 << k) - 1)), m);
        __m512 zz = _mm512_add_ps(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, _mm512_add_epi32(lane16, m), z, 4),
                                  _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, node, p->b1, 4));
        __m512i at = _mm512_add_epi32(base, _mm512_set1_epi32(lb + k));
        _mm512_mask_i32scatter_epi32(c->nid, live, at, node, 4);
        _mm512_mask_i32scatter_ps(c->act, live, at, zz, 4);
        _mm512_storeu_si512(locs[k] + i0, m);
        __mmask16 right = _mm512_cmp_ps_mask(zz, _mm512_setzero_ps(), _CMP_GT_OQ);
        m = _mm512_mask_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(m, 1), _mm512_set1_epi32(1)), right,
                                  _mm512_add_epi32(_mm512_slli_epi32(m, 1), _mm512_set1_epi32(1)), _mm512_set1_epi32(1));
    }
    _mm512_mask_storeu_epi32(child, live, _mm512_sub_epi32(m, _mm512_set1_epi32((1 << nl) - 1)));
}

/* Two output tiles (16 rows x 16 columns each, fp32) as one 64-byte line of bf16 per row, streamed to
 * the rows' y at column col. */
static inline void stream_pair(uint16_t *const *yrow, int nr, long col, const float (*c0)[16], const float (*c1)[16]) {
    for (int i = 0; i < nr; i++)
        _mm512_stream_si512((__m512i *)(yrow[i] + col), (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(c1[i]), _mm512_load_ps(c0[i])));
}

/* y rows of n <= 64 rows of one last-block subtree: activations as 16 x 32 bf16 tiles (ancestors in
 * columns 0 .. lb-1, the block's 15 nodes after them), times the subtree's 32 W2 rows, 64 output
 * columns (four accumulator tiles) at a time, converted and streamed to y as soon as stored: two
 * lines per row and step keep the write-combining buffers draining under the next step's products
 * (assembling a tile's rows in L1 and streaming each out whole took 1.25x as long). */
static void block_bag(const amx_ctx *c, long sub, const int32_t *rows, int n, const int (*locs)[64], amx_pf *pf) {
    const fffc_amx_plan *p = c->p;
    const int b = p->nb - 1, lb = c->lev0[b], nl = p->bl[b];
    const long L = c->L, dout = p->dout;
    uint16_t a[64][32] __attribute__((aligned(64)));
    float cb[4][16][16] __attribute__((aligned(64)));
    const uint16_t *w = p->w2p + (size_t)sub * (dout / 16) * 512;
    const __mmask16 all = (__mmask16)((1u << L) - 1);
    for (int i = 0; i < n; i++) { /* GELU of the row's pre-activations, as bf16, into its columns */
        uint16_t h[16] __attribute__((aligned(32)));
        __m512 g = (__m512)fffc_gelu16((v16)_mm512_maskz_loadu_ps(all, c->act + rows[i] * L));
        _mm256_store_si256((__m256i *)h, (__m256i)_mm512_cvtneps_pbh(g));
        _mm512_store_si512((__m512i *)a[i], _mm512_setzero_si512());
        _mm256_mask_storeu_epi16(a[i], (__mmask16)((1u << lb) - 1), _mm256_load_si256((const __m256i *)h));
        for (int k = 0; k < nl; k++) a[i][lb + locs[k][i]] = h[lb + k];
    }
    for (int t0 = 0; t0 < n; t0 += 16) {
        const int nr = n - t0 < 16 ? n - t0 : 16;
        uint16_t *yrow[16];
        for (int i = 0; i < nr; i++) yrow[i] = (uint16_t *)c->y + (size_t)rows[t0 + i] * dout;
        _tile_loadd(4, a[t0], 64);
        /* a pair of zeroed output tiles (t0, t1: columns 16 cc .. 16 cc + 31) from the W2 tiles in 6, 7 */
#define BAG_PRODUCTS(t0, t1, cc)                                                                       \
    do {                                                                                               \
        _tile_loadd(6, w + (cc) * 512, 64);                                                            \
        _tile_loadd(7, w + ((cc) + 1) * 512, 64);                                                      \
        _tile_dpbf16ps(t0, 4, 6);                                                                      \
        _tile_dpbf16ps(t1, 4, 7);                                                                      \
    } while (0)
#define BAG_STORES(t0, t1)                                                                             \
    do {                                                                                               \
        _tile_stored(t0, cb[t0], 64);                                                                  \
        _tile_stored(t1, cb[t1], 64);                                                                  \
    } while (0)
        /* pairs of output tiles (32 columns) alternate between tiles 0-1 and 2-3, so that one pair's
         * products run while the previous pair is stored, converted and streamed */
        const long np = dout / 32;
        for (long q = 0; q < np; q += 2) {
            tick(pf);
            _tile_zero(0);
            _tile_zero(1);
            BAG_PRODUCTS(0, 1, 2 * q);
            if (q > 0) {
                BAG_STORES(2, 3);
                stream_pair(yrow, nr, (q - 1) * 32, cb[2], cb[3]);
            }
            if (q + 1 < np) {
                _tile_zero(2);
                _tile_zero(3);
                BAG_PRODUCTS(2, 3, 2 * (q + 1));
            }
            BAG_STORES(0, 1);
            stream_pair(yrow, nr, q * 32, cb[0], cb[1]);
        }
        if (np % 2 == 0) {
            BAG_STORES(2, 3);
            stream_pair(yrow, nr, (np - 1) * 32, cb[2], cb[3]);
        }
#undef BAG_PRODUCTS
#undef BAG_STORES
    }
}

/* Block b for n staged rows (stride rowb; rows[] their indices in x) of subtree `sub`: the logits
 * 64 rows at a time, the walk (child[i]: the subtree below), and in the last block the bag. */
static void block_rows(const amx_ctx *c, int b, long sub, const char *stage, const int32_t *rows, int n,
                       int32_t *child, amx_pf *pf) {
    const fffc_amx_plan *p = c->p;
    const int last = b == p->nb - 1;
    const uint16_t *w = p->w1p + (size_t)(c->sub0[b] + sub) * c->w1sub;
    float z[64 * 16] __attribute__((aligned(64)));
    int locs[4][64];
    for (int i0 = 0; i0 < n; i0 += 64) {
        int g = n - i0 < 64 ? n - i0 : 64;
        if (pf) tick(pf);
        PROF_T(t);
        block_logits(c, stage + (size_t)i0 * c->rowb, g, w, z);
        PROF_ADD(b ? P_LOGITS : P_BLK0, t);
        for (int t = 0; t < g; t += 16)
            walk_block(c, b, sub, rows + i0 + t, g - t < 16 ? g - t : 16, z + 16 * t, child + i0 + t, locs, t);
        PROF_ADD(P_WALK, t);
        if (last) {
            block_bag(c, sub, rows + i0, g, (const int(*)[64])locs, pf);
            PROF_ADD(P_BAG, t);
        }
    }
}

/* Phase 1, blocks 0 .. nb-2 of a group of consecutive rows: block b for n staged rows of subtree
 * `sub`; below it the rows are partitioned by child and each child's copied (from L2: the group's x
 * rows were just read) into the next stage, down to the block above the last, where each row's
 * last-block subtree is recorded for the sort (in nid at the last block's first level, which the
 * last block's walk overwrites). ws: 4 x group ints per depth. */
static void top_block(const amx_ctx *c, int b, long sub, const char *stage, const int32_t *rows, int n,
                      char *const *stages, int32_t *ws) {
    const fffc_amx_plan *p = c->p;
    if (b >= AMX_MAXB - 1) return;
    const int nl = p->bl[b], nch = 1 << nl, G = p->group;
    int32_t *child = ws, *order = ws + G, *crow = ws + 2 * G;
    block_rows(c, b, sub, stage, rows, n, child, NULL);
    if (b + 1 == p->nb - 1) {
        for (int i = 0; i < n; i++) c->nid[rows[i] * c->L + c->lev0[b + 1]] = (int32_t)((sub << nl) + child[i]);
        return;
    }
    int cnt[17] = {0}, pos[16];
    for (int i = 0; i < n; i++) cnt[child[i] + 1]++;
    for (int k = 0; k < nch; k++) cnt[k + 1] += cnt[k];
    memcpy(pos, cnt, sizeof pos);
    for (int i = 0; i < n; i++) order[pos[child[i]]++] = i;
    for (int k = 0; k < nch; k++) {
        int lo = cnt[k], m = cnt[k + 1] - lo;
        if (!m) continue;
        PROF_T(t);
        for (int i = 0; i < m; i++) {
            int s = order[lo + i];
            crow[i] = rows[s];
            memcpy(stages[0] + (size_t)i * c->rowb, stage + (size_t)s * c->rowb, c->rowb);
        }
        PROF_ADD(P_REGATHER, t);
        top_block(c, b + 1, (sub << nl) + k, stages[0], crow, m, stages + 1, ws + 4 * G);
    }
}

/* The calling thread's share of the scratch (its stages, its ints), its tiles configured. */
typedef struct {
    char *stage;
    int32_t *work;
} amx_share;
static amx_share thread_on(char *stage, size_t stage_bytes, int32_t *work, size_t work_ints) {
    int id = 0;
#ifdef _OPENMP
    id = omp_get_thread_num();
#endif
    tiles_on();
    return (amx_share){stage + stage_bytes * (size_t)id, work + work_ints * (size_t)id};
}

/* The number of last-block subtrees (`start` holds 2T + 1 + 3 (T + B / chunk + 2) longs: fffc_sort_units). */
static long amx_subtrees(const fffc_amx_plan *p) {
    long lev = 0;
    for (int b = 0; b < p->nb - 1; b++) lev += p->bl[b];
    return 1L << lev;
}

/* scratch: nid, act (B * (D + 1)); perm (B); start (longs, see amx_subtrees); stage: per thread
 * nb * (max(group, chunk) + 64) rows of x; work: per thread 4 * max(group, chunk) * (nb + 1) ints. */
int fff_amx_bucket(const fffc_amx_plan *p, const void *x, void *y, long B, int32_t *nid, float *act, int32_t *perm,
                   long *start, char *stage, int32_t *work) {
    if (B * (p->D + 1) >= (1L << 31)) return -2;
    amx_ctx c = {p, p->D + 1, {0}, {0}, (size_t)p->d * 2, (size_t)(p->d / 32) * 512, x, y, nid, act};
    for (int b = 1; b < p->nb; b++) c.lev0[b] = c.lev0[b - 1] + p->bl[b - 1];
    for (int b = 1; b < p->nb; b++) c.sub0[b] = c.sub0[b - 1] + (1L << c.lev0[b - 1]);
    const long L = c.L, T = amx_subtrees(p), lbl = c.lev0[p->nb - 1];
    const int nth = fffc_threads(p->nthreads), G = p->group, chunk = p->chunk, M = G > chunk ? G : chunk;
    const size_t stage_bytes = (size_t)p->nb * (M + 64) * c.rowb, work_ints = (size_t)4 * M * (p->nb + 1);
    const long groups = (B + G - 1) / G;
    long next_group = 0, next_unit = 0;

    /* phase 1: groups of G consecutive rows through every block but the last, straight from x */
#pragma omp parallel num_threads(nth)
    {
        amx_share sh = thread_on(stage, stage_bytes, work, work_ints);
        char *stages[AMX_MAXB];
        for (int b = 0; b < p->nb; b++) stages[b] = sh.stage + (size_t)b * (M + 64) * c.rowb;
        int32_t *ws = sh.work, *rows = ws + 4 * (size_t)M * p->nb;
        for (long g = fffc_grab(&next_group); g < groups; g = fffc_grab(&next_group)) {
            long r0 = g * G;
            int n = (int)(B - r0 < G ? B - r0 : G);
            const char *xs = (const char *)x + (size_t)r0 * c.rowb;
            if (n % 16 || (p->pf & 2)) { /* the batch's tail too: tiles read whole 16-row blocks */
                if (n % 16) memset(stages[p->nb - 1], 0, (size_t)((n + 15) / 16 * 16) * c.rowb);
                PROF_T(t);
                memcpy(stages[p->nb - 1], xs, (size_t)n * c.rowb);
                PROF_ADD(P_GATHER, t);
                xs = stages[p->nb - 1];
            }
            for (int i = 0; i < n; i++) rows[i] = (int32_t)(r0 + i);
            top_block(&c, 0, 0, xs, rows, n, stages, ws);
        }
        _tile_release();
    }
    /* counting sort by the last block's subtree, then units of at most `chunk` rows of one subtree */
    PROF_T(ts);
    long *units = start + 2 * T + 1, nunits = fffc_sort_units(nid, L, lbl, 0, B, T, chunk, perm, start);
    PROF_ADD(P_SORT, ts);
    /* phase 2: units handed out one at a time, each claimed one ahead so that its x rows and the
     * subtree's packed weights stream in during the unit before it */
#pragma omp parallel num_threads(nth)
    {
        amx_share sh = thread_on(stage, stage_bytes, work, work_ints);
        char *st = sh.stage;
        int32_t *rows = sh.work, *child = sh.work + M;
        const int b = p->nb - 1;
        amx_pf pf;
        memset(&pf, 0, sizeof pf);
        long u = fffc_grab(&next_unit);
        long un = u < nunits ? fffc_grab(&next_unit) : nunits;
        while (u < nunits) {
            long first = units[3 * u], sub = units[3 * u + 2];
            int n = (int)units[3 * u + 1];
            pfq_t q = {(const char *)x, NULL, 0, 0, c.rowb, 0, 0, 0, 0, 0, 0, 0};
            if (un < nunits && (p->pf & 1)) {
                long s2 = units[3 * un + 2];
                q.rows = perm + units[3 * un], q.n = (int)units[3 * un + 1];
                q.total = (size_t)q.n * ((c.rowb + 63) / 64);
                if (s2 != sub) {
                    pfq_range(&q, p->w1p + (size_t)(c.sub0[b] + s2) * c.w1sub, c.w1sub * 2);
                    pfq_range(&q, p->w2p + (size_t)s2 * (p->dout / 16) * 512, (size_t)(p->dout / 16) * 1024);
                }
            }
            pf.x = q;
            pf.xper = (q.total + unit_ticks(p, n) - 1) / unit_ticks(p, n);
            PROF_T(t);
            for (int i = 0; i < n; i++) {
                int32_t r = perm[first + i];
                rows[i] = r;
                tick(&pf);
                memcpy(st + (size_t)i * c.rowb, (const char *)x + (size_t)r * c.rowb, c.rowb);
            }
            PROF_ADD(P_GATHER, t);
            block_rows(&c, b, sub, st, rows, n, child, &pf);
            pfq_step(&pf.x, pf.x.total);
            u = un;
            un = u < nunits ? fffc_grab(&next_unit) : nunits;
        }
        fffc_sfence();
        _tile_release();
    }
    return 0;
}

#else /* no AMX in this build */

int fff_amx_bucket(const fffc_amx_plan *p, const void *x, void *y, long B, int32_t *nid, float *act, int32_t *perm,
                   long *start, char *stage, int32_t *work) {
    (void)p, (void)x, (void)y, (void)B, (void)nid, (void)act, (void)perm, (void)start, (void)stage, (void)work;
    return -1;
}

#endif
