/* The dot-product kernels of fffc_opt_impl.h (included by it once per element type: BF, SFX, CH,
 * ldr and fmr defined there): rows against their own weight rows, against one shared row, and
 * against the 1, 3 or 7 rows of a block of levels. */

/* G dots x_g . w_g in one loop: G independent chains, two accumulators each, so neither the FMA
 * latency nor one row's dependency on its previous level stalls the core. */
#define DEF_DOTS(G)                                                                                   \
    FFFC_INLINE void SFX(dots##G)(const void *const *xr, const void *const *wr, long d, float *out) {  \
        vc a0[G], a1[G];                                                                             \
        _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) a0[g] = a1[g] = vc_splat(0.0f);          \
        long j = 0;                                                                                   \
        for (; j + 2 * CH <= d; j += 2 * CH) {                                                        \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) {                                     \
                a0[g] = SFX(fmr)(a0[g], SFX(ldr)(xr[g], j), SFX(ldr)(wr[g], j));                      \
                a1[g] = SFX(fmr)(a1[g], SFX(ldr)(xr[g], j + CH), SFX(ldr)(wr[g], j + CH));             \
            }                                                                                         \
        }                                                                                             \
        for (; j + CH <= d; j += CH) {                                                                \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++)                                       \
                a0[g] = SFX(fmr)(a0[g], SFX(ldr)(xr[g], j), SFX(ldr)(wr[g], j));                      \
        }                                                                                             \
        for (; j + FFFC_VC <= d; j += FFFC_VC) {                                                                \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) a1[g] += ldc(xr[g], j, BF) * ldc(wr[g], j, BF); \
        }                                                                                             \
        _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) {                                         \
            float s = vc_hsum(a0[g] + a1[g]);                                                        \
            for (long t = j; t < d; t++) s += lds(xr[g], t, BF) * lds(wr[g], t, BF);                  \
            out[g] = s;                                                                               \
        }                                                                                             \
    }
DEF_DOTS(1)
DEF_DOTS(2)
DEF_DOTS(3)
DEF_DOTS(4)
DEF_DOTS(5)
DEF_DOTS(6)
DEF_DOTS(7)
DEF_DOTS(8)
#undef DEF_DOTS

/* One dot alone (a single row's walk, B = 1): four accumulators, so the chain of dependent FMAs is
 * a quarter of the row instead of a half. */
FFFC_INLINE float SFX(dot4)(const void *x, const void *w, long d) {
    vc a0 = vc_splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
    long j = 0;
    for (; j + 4 * CH <= d; j += 4 * CH) {
        a0 = SFX(fmr)(a0, SFX(ldr)(x, j), SFX(ldr)(w, j));
        a1 = SFX(fmr)(a1, SFX(ldr)(x, j + CH), SFX(ldr)(w, j + CH));
        a2 = SFX(fmr)(a2, SFX(ldr)(x, j + 2 * CH), SFX(ldr)(w, j + 2 * CH));
        a3 = SFX(fmr)(a3, SFX(ldr)(x, j + 3 * CH), SFX(ldr)(w, j + 3 * CH));
    }
    for (; j + CH <= d; j += CH) a0 = SFX(fmr)(a0, SFX(ldr)(x, j), SFX(ldr)(w, j));
    for (; j + FFFC_VC <= d; j += FFFC_VC) a1 += ldc(x, j, BF) * ldc(w, j, BF);
    float s = vc_hsum((a0 + a1) + (a2 + a3));
    for (; j < d; j++) s += lds(x, j, BF) * lds(w, j, BF);
    return s;
}

static void SFX(dots)(const void *const *xr, const void *const *wr, int G, long d, float *out) {
    switch (G) {
    case 1: out[0] = SFX(dot4)(xr[0], wr[0], d); break;
    case 2: SFX(dots2)(xr, wr, d, out); break;
    case 3: SFX(dots3)(xr, wr, d, out); break;
    case 4: SFX(dots4)(xr, wr, d, out); break;
    case 5: SFX(dots5)(xr, wr, d, out); break;
    case 6: SFX(dots6)(xr, wr, d, out); break;
    case 7: SFX(dots7)(xr, wr, d, out); break;
    default: SFX(dots8)(xr, wr, d, out); break;
    }
}

/* G <= 8 dots of rows x_g with ONE weight row w (the rows share a node): the weight chunk is loaded
 * once for all G rows, so a dot costs about one load per FMA instead of two. */
#define DEF_SDOTS(G)                                                                                   \
    FFFC_INLINE void SFX(sdots##G)(const void *const *xr, const void *w, long d, float *out) {          \
        vc a0[G], a1[G];                                                                              \
        _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) a0[g] = a1[g] = vc_splat(0.0f);           \
        long j = 0;                                                                                    \
        for (; j + 2 * CH <= d; j += 2 * CH) {                                                         \
            vc w0 = SFX(ldr)(w, j), w1_ = SFX(ldr)(w, j + CH);                                        \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) {                                      \
                a0[g] = SFX(fmr)(a0[g], SFX(ldr)(xr[g], j), w0);                                       \
                a1[g] = SFX(fmr)(a1[g], SFX(ldr)(xr[g], j + CH), w1_);                                 \
            }                                                                                          \
        }                                                                                              \
        for (; j + CH <= d; j += CH) {                                                                 \
            vc w0 = SFX(ldr)(w, j);                                                                   \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) a0[g] = SFX(fmr)(a0[g], SFX(ldr)(xr[g], j), w0); \
        }                                                                                              \
        for (; j + FFFC_VC <= d; j += FFFC_VC) {                                                                 \
            vc w0 = ldc(w, j, BF);                                                                    \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) a1[g] += ldc(xr[g], j, BF) * w0;       \
        }                                                                                              \
        _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) {                                          \
            float s = vc_hsum(a0[g] + a1[g]);                                                         \
            for (long t = j; t < d; t++) s += lds(xr[g], t, BF) * lds(w, t, BF);                       \
            out[g] = s;                                                                                \
        }                                                                                              \
    }
DEF_SDOTS(1)
DEF_SDOTS(2)
DEF_SDOTS(3)
DEF_SDOTS(4)
DEF_SDOTS(5)
DEF_SDOTS(6)
DEF_SDOTS(7)
DEF_SDOTS(8)
#undef DEF_SDOTS

static void SFX(sdots)(const void *const *xr, const void *w, int G, long d, float *out) {
    switch (G) {
    case 1: SFX(sdots1)(xr, w, d, out); break;
    case 2: SFX(sdots2)(xr, w, d, out); break;
    case 3: SFX(sdots3)(xr, w, d, out); break;
    case 4: SFX(sdots4)(xr, w, d, out); break;
    case 5: SFX(sdots5)(xr, w, d, out); break;
    case 6: SFX(sdots6)(xr, w, d, out); break;
    case 7: SFX(sdots7)(xr, w, d, out); break;
    default: SFX(sdots8)(xr, w, d, out); break;
    }
}

/* Dots of G rows with the M = 2^b - 1 weight rows of a b-level block of the tree (its root, the
 * root's children, ...): one pass over the rows' x for b levels. Per FFFC_VC columns: M weight loads and
 * G x loads feed G*M FMAs, all accumulators in registers (b = 3, G = 3: 10 loads for 21 FMAs). The
 * extra FMAs (7 dots for 3 levels) are cheaper than streaming x through L1 three times. */
#define DEF_BDOTS(M, G)                                                                                \
    static void SFX(bdots_##M##_##G)(const void *const *xr, const void *const *wr, long d, float *out) { \
        vc acc[G][M];                                                                                 \
        _Pragma("GCC unroll 8") for (int g = 0; g < G; g++)                                            \
            _Pragma("GCC unroll 8") for (int m = 0; m < M; m++) acc[g][m] = vc_splat(0.0f);           \
        long j = 0;                                                                                    \
        for (; j + CH <= d; j += CH) {                                                                 \
            vc w[M];                                                                                  \
            _Pragma("GCC unroll 8") for (int m = 0; m < M; m++) w[m] = SFX(ldr)(wr[m], j);             \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) {                                      \
                vc xv = SFX(ldr)(xr[g], j);                                                           \
                _Pragma("GCC unroll 8") for (int m = 0; m < M; m++) acc[g][m] = SFX(fmr)(acc[g][m], xv, w[m]); \
            }                                                                                          \
        }                                                                                              \
        for (; j + FFFC_VC <= d; j += FFFC_VC) {                                                                 \
            _Pragma("GCC unroll 8") for (int g = 0; g < G; g++) {                                      \
                vc xv = ldc(xr[g], j, BF);                                                            \
                _Pragma("GCC unroll 8") for (int m = 0; m < M; m++) acc[g][m] += xv * ldc(wr[m], j, BF); \
            }                                                                                          \
        }                                                                                              \
        _Pragma("GCC unroll 8") for (int g = 0; g < G; g++)                                            \
            _Pragma("GCC unroll 8") for (int m = 0; m < M; m++) {                                      \
                float s = vc_hsum(acc[g][m]);                                                         \
                for (long t = j; t < d; t++) s += lds(xr[g], t, BF) * lds(wr[m], t, BF);               \
                out[g * 8 + m] = s;                                                                    \
            }                                                                                          \
    }
DEF_BDOTS(7, 1)
DEF_BDOTS(7, 2)
DEF_BDOTS(7, 3)
DEF_BDOTS(3, 1)
DEF_BDOTS(3, 2)
DEF_BDOTS(3, 3)
DEF_BDOTS(3, 4)
DEF_BDOTS(3, 5)
DEF_BDOTS(3, 6)
#undef DEF_BDOTS

/* max rows per call of bdots for a block of b levels */
static inline int SFX(bdots_rows)(int b) {
    /* G rows x M = 2^b - 1 accumulators, M weights and one x in registers: 32 registers take 3 rows of a
     * 3-level block, 6 of a 2-level one and 8 of one level (two accumulators each); 16 take 1, 3 and 6 */
#if FFFC_VREGS >= 32
    return b == 3 ? 3 : b == 2 ? 6 : 8;
#else
    return b == 3 ? 1 : b == 2 ? 3 : 6;
#endif
}

static void SFX(bdots)(int b, int G, const void *const *xr, const void *const *wr, long d, float *out) {
    if (b == 1) {
        float z[8];
        SFX(sdots)(xr, wr[0], G, d, z);
        for (int g = 0; g < G; g++) out[g * 8] = z[g];
        return;
    }
    if (b == 3) {
        switch (G) {
        case 1: SFX(bdots_7_1)(xr, wr, d, out); break;
        case 2: SFX(bdots_7_2)(xr, wr, d, out); break;
        default: SFX(bdots_7_3)(xr, wr, d, out); break;
        }
        return;
    }
    switch (G) {
    case 1: SFX(bdots_3_1)(xr, wr, d, out); break;
    case 2: SFX(bdots_3_2)(xr, wr, d, out); break;
    case 3: SFX(bdots_3_3)(xr, wr, d, out); break;
    case 4: SFX(bdots_3_4)(xr, wr, d, out); break;
    case 5: SFX(bdots_3_5)(xr, wr, d, out); break;
    default: SFX(bdots_3_6)(xr, wr, d, out); break;
    }
}
