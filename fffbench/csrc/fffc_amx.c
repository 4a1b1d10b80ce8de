/* The bf16 FFF forward on AMX tiles (one tree, B large): the tree is cut into blocks of at most four
 * levels, and a block's 2^b - 1 <= 15 nodes are one 16-column tile of W1. For rows that share the
 * block's subtree, all 15 logits of 16 rows are one tile product (16 x d x 16, d / 32 steps of
 * tdpbf16ps), of which a row then uses b: up to 15 / 4 = 3.75x the dots of a row-by-row walk, each
 * step 8192 multiply-adds in one instruction against 32 for vdpbf16ps. The output is a tile product
 * too: the rows of one last-block subtree share its ancestors, so y = A W2p with A the 16 x 32 matrix
 * of GELU activations (ancestors, then the block's nodes, zero where not visited) and W2p the 32 rows
 * of W2 those columns name: one step per 16 output columns.
 *
 *   block 0   (levels 0 .. b0-1) every row, straight from x, tiles of 16 consecutive rows
 *   sort      rows counting-sorted by their subtree below block 0 (as MoE kernels sort by expert)
 *   units     a subtree's rows, at most `chunk` at a time, handed out one by one to the threads: the
 *             unit's x rows are gathered into a staging buffer (tiles load rows at one stride), each
 *             later block partitions the staged rows by child subtree and gathers them again (from
 *             L2), and the last block's rows go straight on to the bag.
 *
 * W1 and W2 are packed at build (fffbench/backends/c_cpu.py) in the tiles' layout: per subtree and
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

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#define FFFC_AMX 1
#else
#define FFFC_AMX 0
#endif

#define AMX_MAXB 4 /* blocks (the tree's depth + 1 <= 16 levels) */

/* laid out as AmxPlan in c_cpu.py */
typedef struct {
    long d, dout, D;         /* width, output width, depth (one tree) */
    const float *b1;         /* N */
    const uint16_t *w1p;     /* packed W1: block by block, subtree by subtree, d/32 tiles of 16 x 32 */
    const uint16_t *w2p;     /* packed W2: per last-block subtree, dout/16 tiles of 16 x 32 */
    int nb, nthreads, chunk; /* blocks, threads, rows per unit */
    int pf;                  /* prefetch (amx_pf): bit 0 the next unit's x rows, bit 1 the next child's weights */
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

/* Built with -DFFFC_AMX_PROFILE: time stamps per part and thread, read (and reset) by
 * fffc_amx_profile; how notes/cpu-kernels.md breaks the kernel's time down. Otherwise nothing. */
enum { P_BLK0, P_LOGITS, P_WALK, P_BAG, P_REGATHER, P_GATHER, P_SORT, P_PARTS };
#ifdef FFFC_AMX_PROFILE
#include <x86intrin.h>
static uint64_t prof_[8][P_PARTS];
#define PROF_T(v) uint64_t v = __rdtsc()
#define PROF_ADD(part, t) (prof_[omp_get_thread_num() & 7][part] += __rdtsc() - (t), t = __rdtsc())
uint64_t fffc_tsc(void) { return __rdtsc(); }
void fffc_amx_profile(uint64_t *out) {
    memcpy(out, prof_, sizeof prof_);
    memset(prof_, 0, sizeof prof_);
}
#else
#define PROF_T(v)
#define PROF_ADD(part, t)
#endif

typedef struct {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg_t;

/* every tile 16 rows x 64 bytes: tiles 0-3 accumulators, 4-5 rows of x (or activations), 6-7 weights */
static void tiles_on(void) {
    tilecfg_t c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) c.colsb[i] = 64, c.rows[i] = 16;
    _tile_loadconfig(&c);
}

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

/* What a thread prefetches while it works: the next unit's x rows and block-1 weights (x), and the
 * next child subtree's last-block weights (w), each a share of lines per step of work (tick) so that
 * the memory streams under the tile products instead of before them: gathering a unit's rows from
 * DRAM, and a subtree's packed weights on first touch, cost a third of the kernel when not overlapped. */
typedef struct {
    pfq_t x, w;
    size_t xper, wper;
} amx_pf;

static inline void tick(amx_pf *f) {
    pfq_step(&f->w, f->wper);
    pfq_step(&f->x, f->xper);
}

/* steps (ticks) of work in a unit of n rows, and in a last-block subtree of m rows: the lines of a
 * queue are spread over them */
static inline size_t unit_ticks(const fffc_amx_plan *p, long n) {
    return (size_t)(n * (p->nb - 1) + (p->nb - 1) * (n / 64 + 1) + (n / 16 + 8) * ((p->dout + 63) / 64));
}
static inline size_t child_ticks(const fffc_amx_plan *p, long m) {
    return (size_t)(m + m / 64 + 1 + (m / 16 + 1) * ((p->dout + 63) / 64));
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

/* Walk block b for row r from its logits zr (16 per row, local heap order); returns the child
 * subtree (0 .. 2^bl - 1) and writes the block's nodes and pre-activations; loc[] gets the local
 * indices visited. */
static inline int walk_block(const amx_ctx *c, int b, long sub, long r, const float *zr, int *loc) {
    const fffc_amx_plan *p = c->p;
    int lb = c->lev0[b], nl = p->bl[b], m = 0;
    long root = (1L << lb) - 1 + sub;
    for (int k = 0; k < nl; k++) {
        long j = m - ((1L << k) - 1), node = ((root + 1) << k) - 1 + j;
        float z = zr[m] + p->b1[node];
        c->nid[r * c->L + lb + k] = (int32_t)node;
        c->act[r * c->L + lb + k] = z;
        loc[k] = m;
        m = 2 * m + 1 + (z > 0.0f);
    }
    return m - ((1 << nl) - 1);
}

/* y rows of n <= 64 rows of one last-block subtree: activations as 16 x 32 bf16 tiles (ancestors in
 * columns 0 .. lb-1, the block's 15 nodes after them), times the subtree's 32 W2 rows, 64 output
 * columns (four accumulator tiles) at a time, converted and streamed to y as soon as stored: two
 * lines per row and step keep the write-combining buffers draining under the next step's products
 * (assembling a tile's rows in L1 and streaming each out whole took 1.25x as long). */
static void block_bag(const amx_ctx *c, long sub, const int32_t *rows, int n, const int (*locs)[4], amx_pf *pf) {
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
        for (int k = 0; k < nl; k++) a[i][lb + locs[i][k]] = h[lb + k];
    }
    for (int t0 = 0; t0 < n; t0 += 16) {
        const int nr = n - t0 < 16 ? n - t0 : 16;
        uint16_t *yrow[16];
        for (int i = 0; i < nr; i++) yrow[i] = (uint16_t *)c->y + (size_t)rows[t0 + i] * dout;
        _tile_loadd(4, a[t0], 64);
        long cc = 0;
        for (; cc + 4 <= dout / 16; cc += 4) {
            tick(pf);
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            _tile_loadd(6, w + cc * 512, 64);
            _tile_loadd(7, w + (cc + 1) * 512, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(6, w + (cc + 2) * 512, 64);
            _tile_loadd(7, w + (cc + 3) * 512, 64);
            _tile_dpbf16ps(2, 4, 6);
            _tile_dpbf16ps(3, 4, 7);
            _tile_stored(0, cb[0], 64);
            _tile_stored(1, cb[1], 64);
            _tile_stored(2, cb[2], 64);
            _tile_stored(3, cb[3], 64);
            for (int i = 0; i < nr; i++) {
                __m512i *o = (__m512i *)(yrow[i] + cc * 16);
                _mm512_stream_si512(o, (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(cb[1][i]), _mm512_load_ps(cb[0][i])));
                _mm512_stream_si512(o + 1, (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(cb[3][i]), _mm512_load_ps(cb[2][i])));
            }
        }
        for (; cc < dout / 16; cc += 2) { /* dout % 64 == 32 */
            _tile_zero(0);
            _tile_zero(1);
            _tile_loadd(6, w + cc * 512, 64);
            _tile_loadd(7, w + (cc + 1) * 512, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_stored(0, cb[0], 64);
            _tile_stored(1, cb[1], 64);
            for (int i = 0; i < nr; i++)
                _mm512_stream_si512((__m512i *)(yrow[i] + cc * 16),
                                    (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(cb[1][i]), _mm512_load_ps(cb[0][i])));
        }
    }
}

/* Block b (>= 1) for n staged rows (rows[] their indices in x) of subtree `sub` (of block b's level);
 * then each child subtree's rows are gathered into the next stage and go on to block b + 1, or, in the
 * last block, to the bag. ws: per recursion depth, int scratch of 4 x chunk. */
static void unit_block(const amx_ctx *c, int b, long sub, const char *stage, const int32_t *rows, int n, char *const *stages,
                       int32_t *ws, amx_pf *pf) {
    const fffc_amx_plan *p = c->p;
    if (b >= AMX_MAXB) return;
    int last = b == p->nb - 1, nl = p->bl[b], nch = 1 << nl;
    const uint16_t *w = c->p->w1p + (size_t)(c->sub0[b] + sub) * c->w1sub;
    int chunk = p->chunk;
    int32_t *child = ws, *order = ws + chunk, *crow = ws + 2 * chunk;
    float z[64 * 16] __attribute__((aligned(64)));
    int locs[64][4];
    for (int i0 = 0; i0 < n; i0 += 64) {
        int g = n - i0 < 64 ? n - i0 : 64;
        tick(pf);
        PROF_T(t);
        block_logits(c, stage + (size_t)i0 * c->rowb, g, w, z);
        PROF_ADD(P_LOGITS, t);
        for (int i = 0; i < g; i++) child[i0 + i] = walk_block(c, b, sub, rows[i0 + i], z + 16 * i, locs[i]);
        PROF_ADD(P_WALK, t);
        if (last) block_bag(c, sub, rows + i0, g, (const int(*)[4])locs, pf);
        PROF_ADD(P_BAG, t);
    }
    if (last) return;
    /* stable counting sort of the staged rows by child */
    int cnt[17] = {0};
    for (int i = 0; i < n; i++) cnt[child[i] + 1]++;
    for (int k = 0; k < nch; k++) cnt[k + 1] += cnt[k];
    int pos[16];
    memcpy(pos, cnt, sizeof pos);
    for (int i = 0; i < n; i++) order[pos[child[i]]++] = i;
    char *next = stages[0];
    const int below_last = b + 1 == p->nb - 1 && b + 1 < AMX_MAXB;
    for (int k = 0; k < nch; k++) {
        int lo = cnt[k], m = cnt[k + 1] - lo;
        if (!m) continue;
        if (below_last && (p->pf & 2)) { /* the next non-empty child's weights, over this child's work */
            int k2 = k + 1;
            while (k2 < nch && cnt[k2 + 1] == cnt[k2]) k2++;
            pf->w.n = 0, pf->w.nrg = 0, pf->w.done = pf->w.total = 0, pf->w.g = 0, pf->w.go = 0;
            if (k2 < nch) {
                long s2 = (sub << nl) + k2;
                pfq_range(&pf->w, p->w1p + (size_t)(c->sub0[b + 1] + s2) * c->w1sub, c->w1sub * 2);
                pfq_range(&pf->w, p->w2p + (size_t)s2 * (p->dout / 16) * 512, (size_t)(p->dout / 16) * 1024);
            }
            pf->wper = (pf->w.total + child_ticks(p, m) - 1) / child_ticks(p, m);
        }
        PROF_T(t);
        for (int i = 0; i < m; i++) {
            int s = order[lo + i];
            crow[i] = rows[s];
            tick(pf);
            memcpy(next + (size_t)i * c->rowb, stage + (size_t)s * c->rowb, c->rowb);
        }
        PROF_ADD(P_REGATHER, t);
        unit_block(c, b + 1, (sub << nl) + k, next, crow, m, stages + 1, ws + 4 * chunk, pf);
    }
}

/* scratch: nid, act (B * (D + 1)); perm (B); start (longs: 2^lev0[1] + 1 + 3 * (2^lev0[1] + B / chunk + 2));
 * stage: per thread (nb - 1) * (chunk + 64) rows of x; work: per thread 4 * chunk * nb ints. */
int fff_amx_bucket(const fffc_amx_plan *p, const void *x, void *y, long B, int32_t *nid, float *act, int32_t *perm,
                   long *start, char *stage, int32_t *work) {
    amx_ctx c = {p, p->D + 1, {0}, {0}, (size_t)p->d * 2, (size_t)(p->d / 32) * 512, x, y, nid, act};
    for (int b = 1; b < p->nb; b++) c.lev0[b] = c.lev0[b - 1] + p->bl[b - 1];
    for (int b = 1; b < p->nb; b++) c.sub0[b] = c.sub0[b - 1] + (1L << c.lev0[b - 1]);
    const long L = c.L, T = 1L << c.lev0[1];
    const int nth = fffc_threads(p->nthreads), chunk = p->chunk;
    const size_t stage_bytes = (size_t)(p->nb - 1) * (chunk + 64) * c.rowb;
    const long groups = (B + 63) / 64;

    /* block 0: every row, 64 at a time straight from x; the tail through a zeroed staging copy */
#pragma omp parallel num_threads(nth)
    {
        int id = 0;
#ifdef _OPENMP
        id = omp_get_thread_num();
#endif
        tiles_on();
        float z[64 * 16] __attribute__((aligned(64)));
        int locs[64][4];
        char *tail = stage + stage_bytes * (size_t)id;
        for (long g = groups * id / nth; g < groups * (id + 1) / nth; g++) {
            long r0 = g * 64;
            int n = (int)(B - r0 < 64 ? B - r0 : 64);
            const char *xs = (const char *)x + (size_t)r0 * c.rowb;
            if (n % 16) {
                memset(tail, 0, (size_t)((n + 15) / 16 * 16) * c.rowb);
                memcpy(tail, xs, (size_t)n * c.rowb);
                xs = tail;
            }
            PROF_T(t);
            block_logits(&c, xs, n, p->w1p, z);
            PROF_ADD(P_BLK0, t);
            for (int i = 0; i < n; i++) {
                int ch = walk_block(&c, 0, 0, r0 + i, z + 16 * i, locs[i]);
                nid[(r0 + i) * L + c.lev0[1]] = (int32_t)ch; /* the subtree below, for the sort */
            }
        }
        _tile_release();
    }
    /* counting sort by the subtree below block 0, then units of at most `chunk` rows */
    PROF_T(ts);
    long *units = start + T + 1, nunits = 0, lb1 = c.lev0[1];
    for (long t = 0; t <= T; t++) start[t] = 0;
    for (long r = 0; r < B; r++) start[nid[r * L + lb1] + 1]++;
    for (long t = 0; t < T; t++) start[t + 1] += start[t];
    {
        long *fill = units; /* borrowed as the fill cursors before the units are written */
        memcpy(fill, start, sizeof(long) * T);
        for (long r = 0; r < B; r++) perm[fill[nid[r * L + lb1]]++] = (int32_t)r;
    }
    for (long t = 0; t < T; t++)
        for (long i = start[t]; i < start[t + 1]; i += chunk) {
            units[3 * nunits] = i, units[3 * nunits + 1] = start[t + 1] - i < chunk ? start[t + 1] - i : chunk;
            units[3 * nunits + 2] = t, nunits++;
        }
    long next = 0;
    PROF_ADD(P_SORT, ts);
#pragma omp parallel num_threads(nth)
    {
        int id = 0;
#ifdef _OPENMP
        id = omp_get_thread_num();
#endif
        tiles_on();
        char *st = stage + stage_bytes * (size_t)id;
        char *stages[AMX_MAXB];
        for (int b = 0; b < p->nb - 1; b++) stages[b] = st + (size_t)b * (chunk + 64) * c.rowb;
        int32_t *ws = work + (size_t)4 * chunk * p->nb * id;
        amx_pf pf;
        memset(&pf, 0, sizeof pf);
        /* units are claimed one ahead, so that the next one's rows are known while this one runs */
        long u = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
        long un = u < nunits ? __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED) : nunits;
        while (u < nunits) {
            long first = units[3 * u];
            int n = (int)units[3 * u + 1];
            int32_t *rows = ws + 3 * chunk;
            pfq_t q = {(const char *)x, un < nunits ? perm + units[3 * un] : NULL, 0,
                       un < nunits ? (int)units[3 * un + 1] : 0, c.rowb, 0, 0, 0, 0, 0, 0, 0};
            q.total = (size_t)q.n * ((c.rowb + 63) / 64);
            if (un < nunits) pfq_range(&q, p->w1p + (size_t)(c.sub0[1] + units[3 * un + 2]) * c.w1sub, c.w1sub * 2);
            pf.x = q;
            pf.xper = p->pf & 1 ? (q.total + unit_ticks(p, n) - 1) / unit_ticks(p, n) : 0;
            pf.wper = 0;
            PROF_T(t);
            for (int i = 0; i < n; i++) {
                int32_t r = perm[first + i];
                rows[i] = r;
                tick(&pf);
                if (i + 4 < n) { /* rows the queue did not bring in (the first unit's, or a queue off) */
                    const char *q4 = (const char *)x + (size_t)perm[first + i + 4] * c.rowb;
                    for (size_t o = 0; o < c.rowb; o += 64) __builtin_prefetch(q4 + o, 0, 3);
                }
                memcpy(stages[0] + (size_t)i * c.rowb, (const char *)x + (size_t)r * c.rowb, c.rowb);
            }
            PROF_ADD(P_GATHER, t);
            unit_block(&c, 1, units[3 * u + 2], stages[0], rows, n, stages + 1, ws + 4 * chunk, &pf);
            if (p->pf & 1) pfq_step(&pf.x, pf.x.total);
            u = un;
            un = u < nunits ? __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED) : nunits;
        }
        _tile_release();
    }
    _mm_sfence();
    return 0;
}

#else /* no AMX in this build */

int fff_amx_bucket(const fffc_amx_plan *p, const void *x, void *y, long B, int32_t *nid, float *act, int32_t *perm,
                   long *start, char *stage, int32_t *work) {
    (void)p, (void)x, (void)y, (void)B, (void)nid, (void)act, (void)perm, (void)start, (void)stage, (void)work;
    return -1;
}

#endif
