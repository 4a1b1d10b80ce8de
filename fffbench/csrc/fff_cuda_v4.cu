// fffbench CUDA FFF v4: one weight load serves many rows.
//
// Semantics as every fffbench kernel: heap-ordered tree, children of n are 2n+1 (left) and 2n+2
// (right), z = x . W1[n] + b1[n], y += GELU(z) W2[n], go right iff z > 0, exact erf GELU.
//
// Large batches (the staged path): the levels are cut into stages of 4 (the last may be shorter).
// Before stage s > 0 the rows are grouped by their node at the stage's first level (a counting
// sort as MoE kernels sort tokens by expert: the previous stage bumps a per-group counter and
// writes the row into that group's slot list). A block takes up to 16*warps rows of one group and
// loads the group's subtree (the 15 nodes of the stage's 4 levels) into shared memory once; each
// warp computes the logits of its 16 rows against all 15 nodes as one small matrix product on the
// tensor cores (m16n8k8 3xTF32 for float32 = fp32-accurate; m16n8k16 bf16 with fp32 accumulation
// for bfloat16), x streamed from global memory straight into the MMA fragments (a dot product does
// not care in which order its k terms come, so every thread loads contiguous 16-byte pieces of a
// row and the weights are read with the same permutation), then walks the 4 levels in registers.
// The last stage also computes the output: the tile's rows share every node above the stage, so
// y_tile = A (16 rows x [path nodes + subtree nodes], zero where a row did not visit) . W2[those
// nodes] is one more small product on the tensor cores, each W2 row loaded once per 16 rows.
// One kernel per stage, launched with programmatic dependent launch (optional), all
// graph-capturable: no host sync, no allocation, counters reset by the next kernels.
//
// Small batches (B <= a threshold): one launch, no sort: one warp per row walks the tree with a
// few levels computed speculatively at once (the dots of a node and its descendants issued
// together, which halves the chain of dependent L2 round trips), then accumulates the output.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define FULL 0xffffffffu

namespace v4 {

__device__ __forceinline__ float gelu(float z) { return 0.5f * z * (1.0f + erff(z * 0.70710678118654752440f)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

template <typename T> struct Is32 { static constexpr bool value = false; };
template <> struct Is32<float> { static constexpr bool value = true; };

__device__ __forceinline__ float tof(float v) { return v; }
__device__ __forceinline__ float tof(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void griddep_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void griddep_launch() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

__device__ __forceinline__ uint64_t l2_policy(int hint) {
    uint64_t p;
    if (hint == 1) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
    else if (hint == 2) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    else asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(p));
    return p;
}

__device__ __forceinline__ uint4 ld_x(const void* p, uint64_t pol) {
    uint4 v;
    asm("ld.global.nc.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p), "l"(pol));
    return v;
}

// 3xTF32 split as CUTLASS's fast-fp32 GEMM does it: big = f rounded to tf32 (half-ulp add, then
// truncate: two integer ops; cvt.rna.tf32 is emulated on sm_90), small = f - big exactly, passed
// as is: the tensor core reads only a tf32 operand's upper 19 bits (truncation), so small keeps
// 11 more bits of f and the product error is ~2^-21 relative instead of tf32's 2^-11.
__device__ __forceinline__ void split(float f, uint32_t& hi, uint32_t& lo) {
    hi = (__float_as_uint(f) + 0x1000u) & 0xffffe000u;
    lo = __float_as_uint(f - __uint_as_float(hi));
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// d += a.b in 3xTF32: small products first
__device__ __forceinline__ void mma3(float (&d)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4],
                                     uint32_t bh0, uint32_t bh1, uint32_t bl0, uint32_t bl1) {
    mma_tf32(d, al[0], al[1], al[2], al[3], bh0, bh1);
    mma_tf32(d, ah[0], ah[1], ah[2], ah[3], bl0, bl1);
    mma_tf32(d, ah[0], ah[1], ah[2], ah[3], bh0, bh1);
}

__device__ __forceinline__ uint32_t word(const uint4& u, int i) { return i == 0 ? u.x : i == 1 ? u.y : i == 2 ? u.z : u.w; }

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
    return *reinterpret_cast<uint32_t*>(&h);
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

// Hopper bulk copy (TMA without a tensor map) completing on an mbarrier in shared memory. Used by
// the staged path's w1_bulk option only; the bodies are empty below sm_90, where the kernel takes
// the cp.async path instead (BULK is forced off there, so these are never reached).
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t arrivals) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(arrivals) : "memory");
    // make the initialised barrier visible to the async proxy (the bulk copies' complete_tx) and,
    // after the block barrier that follows, to the other threads
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}
// one arrival that also raises the phase's expected transaction count by bytes
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
// bytes (multiple of 16) from global src to shared dst (both 16-byte aligned); completes on bar
__device__ __forceinline__ void bulk_g2s(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
#endif
}
// wait until the phase of the given parity has completed (acquire: its bulk writes are visible)
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t done = 0;
    while (!done) {
        asm volatile("{\n\t.reg .pred p;\n\t"
                     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
                     "selp.u32 %0, 1, 0, p;\n\t}"
                     : "=r"(done) : "r"(bar), "r"(parity) : "memory");
    }
#endif
}

// ------------------------------------------------------------------------------------------
// staged path
// ------------------------------------------------------------------------------------------
struct StageArgs {
    const void* x; void* y; const void* w1; const void* b1; const void* w2;
    float* acts;                 // (B, L) activations of the levels walked so far
    int* in_cnt;                 // rows per group at level l0 (null: stage 0, one group = all rows)
    const int* in_slots;         // group g's rows at in_slots[g * cap + i]
    int* out_cnt; int* out_slots;  // the next stage's groups (null in the last stage)
    int* done;                   // blocks that have read in_cnt: the last one resets in_cnt and done
    int B, d, dout, L, l0, nlev, cap, hint, trigger;
    int w1first;                 // wait for the W1 rows before issuing the x prologue
    unsigned long long* trace;   // null, or 8 words per block: globaltimer start/end, clock64 at phase ends
};

__device__ __forceinline__ unsigned long long gtimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
// trace slots: 0 globaltimer at entry, 1 globaltimer at exit, 2 clock at entry, 3 after the work
// assignment, 4 after the W1 rows are in, 5 after the logits and walk (warp 0), 6 after the
// output product, 7 at exit
#define TRACE(slot, value) do { if (a.trace && threadIdx.x == 0) a.trace[blockIdx.x * 8 + (slot)] = (value); } while (0)

constexpr int TILE = 16;         // rows per warp (the MMA's m)
constexpr int LGS = 17;          // logits scratch row stride (floats)
constexpr int AS = 36;           // bag activation matrix row stride (floats; 4 mod 32: the column-split
                                 // output's fragment loads (row g, node t) hit 32 distinct banks)
constexpr int KMAX = 32;         // path + subtree nodes in the bag, at most
constexpr int NSLOT = 4;         // bag: W2 chunks in flight (cp.async ring)
constexpr int CH_BYTES = 256;    // bag: bytes of each W2 row per chunk (64 fp32 / 128 bf16 columns)
constexpr int CH_STRIDE = CH_BYTES + 32;  // 288 B (72 words, 8 mod 32 banks): conflict-free fragment loads
constexpr int CH_SLOT = KMAX * CH_STRIDE;

struct WarpScratch { float lg[TILE * LGS]; float a[TILE * AS]; int rows[TILE]; };

template <typename T>
__host__ __device__ constexpr int w_stride_bytes(int d) { return d * (int)sizeof(T) + 64; }  // 64 B pad: no bank conflicts

// shared memory: a region for the subtree's W1 rows (logits), reused by the W2 ring (bag), then
// biases, the bag's node list, scan scratch, and per-warp scratch
template <typename T>
__host__ __device__ inline size_t region_bytes(int d, bool final_) {
    size_t w = (size_t)16 * w_stride_bytes<T>(d);
    size_t r = (size_t)NSLOT * CH_SLOT;
    return final_ && r > w ? r : w;
}
template <typename T>
__host__ __device__ inline size_t stage_smem(int d, int warps, bool final_) {
    return region_bytes<T>(d, final_) + 16 * sizeof(float) + (KMAX + 32 + 4) * sizeof(int) + (size_t)warps * sizeof(WarpScratch);
}


__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// The output of one tile (called by every warp of the block, active or not: it has block barriers):
// y_tile (16 x dout) = A (16 x K) . W2[knode] (K x dout), computed transposed (MMA m = output
// columns, n = the tile's rows, k = nodes). The block's warps share one group, hence one node
// list: its W2 rows stream through a ring of NSLOT chunks in shared memory (cp.async, all threads
// copy), 256 bytes of each row per chunk, so every W2 row is read from L2 once per block.
template <typename T, int KSPLIT>
__device__ __forceinline__ void bag(const StageArgs& a, unsigned char* ring, const int* sKnode, WarpScratch& ws,
                                    bool active, int half, int nsub, int g_, int t_) {
    constexpr bool F32 = Is32<T>::value;
    const int K = a.l0 + nsub;
    const int KR = F32 ? (K + 7) / 8 * 8 : (K + 15) / 16 * 16;  // rows the MMAs read (rows >= K hold zeros)
    const int nch = a.dout * (int)sizeof(T) / CH_BYTES;
    const int tid = threadIdx.x;
    __syncthreads();  // every warp is past its logits: the W1 region is free
    for (int i = tid; i < NSLOT * (KR - K) * (CH_STRIDE / 16); i += blockDim.x) {
        const int sl = i / ((KR - K) * (CH_STRIDE / 16)), r = i % ((KR - K) * (CH_STRIDE / 16));
        *reinterpret_cast<uint4*>(ring + sl * CH_SLOT + (K + r / (CH_STRIDE / 16)) * CH_STRIDE + (r % (CH_STRIDE / 16)) * 16) =
            make_uint4(0, 0, 0, 0);
    }
    auto issue = [&](int c) {
        unsigned char* slot = ring + (c % NSLOT) * CH_SLOT;
        for (int i = tid; i < K * (CH_BYTES / 16); i += blockDim.x) {
            const int k = i / (CH_BYTES / 16), piece = i % (CH_BYTES / 16);
            cp_async16(slot + k * CH_STRIDE + piece * 16,
                       static_cast<const unsigned char*>(a.w2) + ((size_t)sKnode[k] * a.dout) * sizeof(T) + c * CH_BYTES + piece * 16);
        }
    };
#pragma unroll
    for (int c = 0; c < NSLOT - 1; c++) {
        if (c < nch) issue(c);
        cp_async_commit();
    }
    int yr[4];  // rows 2t, 2t+1, 8+2t, 9+2t of the tile
#pragma unroll
    for (int q = 0; q < 4; q++) yr[q] = ws.rows[(q >> 1) * 8 + 2 * t_ + (q & 1)];
    if constexpr (F32) {
        float* Y = static_cast<float*>(a.y);
        const int KS = KR / 8;
        uint32_t bh[4][2][2], bl[4][2][2];  // [k-step][n-tile][b0/b1]
#pragma unroll
        for (int s = 0; s < 4; s++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                split(ws.a[(8 * h + g_) * AS + 8 * s + t_], bh[s][h][0], bl[s][h][0]);
                split(ws.a[(8 * h + g_) * AS + 8 * s + t_ + 4], bh[s][h][1], bl[s][h][1]);
            }
        for (int c = 0; c < nch; c++) {
            cp_async_wait<NSLOT - 2>();
            __syncthreads();  // chunk c is in for everyone; everyone is done with chunk c-1's slot
            if (c + NSLOT - 1 < nch) issue(c + NSLOT - 1);
            cp_async_commit();
            if (!active || c % KSPLIT != half) continue;
            const unsigned char* slot = ring + (c % NSLOT) * CH_SLOT + 16 * g_;
            float cc[4][2][4];
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int e = 0; e < 4; e++) cc[j][h][e] = 0.f;
#pragma unroll
            for (int s = 0; s < 4; s++) {
                if (s < KS) {
                    const float4 p0 = *reinterpret_cast<const float4*>(slot + (8 * s + t_) * CH_STRIDE);
                    const float4 q0 = *reinterpret_cast<const float4*>(slot + (8 * s + t_) * CH_STRIDE + 128);
                    const float4 p1 = *reinterpret_cast<const float4*>(slot + (8 * s + t_ + 4) * CH_STRIDE);
                    const float4 q1 = *reinterpret_cast<const float4*>(slot + (8 * s + t_ + 4) * CH_STRIDE + 128);
                    const float P0[4] = {p0.x, p0.y, p0.z, p0.w}, Q0[4] = {q0.x, q0.y, q0.z, q0.w};
                    const float P1[4] = {p1.x, p1.y, p1.z, p1.w}, Q1[4] = {q1.x, q1.y, q1.z, q1.w};
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        // m-tile j: row m=g <-> column c0+4g+j, m=g+8 <-> c0+32+4g+j
                        uint32_t ah[4], al[4];
                        split(P0[j], ah[0], al[0]);   // (m g,   k t)
                        split(Q0[j], ah[1], al[1]);   // (m g+8, k t)
                        split(P1[j], ah[2], al[2]);   // (m g,   k t+4)
                        split(Q1[j], ah[3], al[3]);   // (m g+8, k t+4)
#pragma unroll
                        for (int h = 0; h < 2; h++)
                            mma3(cc[j][h], ah, al, bh[s][h][0], bh[s][h][1], bl[s][h][0], bl[s][h][1]);
                    }
                }
            }
            const int c0 = c * 64;
#pragma unroll
            for (int q = 0; q < 4; q++) {
                if (yr[q] < 0) continue;
                const int h = q >> 1, e = q & 1;
                float* yp = Y + (size_t)yr[q] * a.dout + c0 + 4 * g_;
                __stcs(reinterpret_cast<float4*>(yp), make_float4(cc[0][h][e], cc[1][h][e], cc[2][h][e], cc[3][h][e]));
                __stcs(reinterpret_cast<float4*>(yp + 32), make_float4(cc[0][h][e + 2], cc[1][h][e + 2], cc[2][h][e + 2], cc[3][h][e + 2]));
            }
        }
    } else {
        __nv_bfloat16* Y = static_cast<__nv_bfloat16*>(a.y);
        const int KS = KR / 16;
        uint32_t b[2][2][2];  // [k-step][n-tile][b0/b1]
#pragma unroll
        for (int s = 0; s < 2; s++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const float* ar = ws.a + (8 * h + g_) * AS + 16 * s + 2 * t_;
                b[s][h][0] = pack_bf16(ar[0], ar[1]);
                b[s][h][1] = pack_bf16(ar[8], ar[9]);
            }
        for (int c = 0; c < nch; c++) {
            cp_async_wait<NSLOT - 2>();
            __syncthreads();
            if (c + NSLOT - 1 < nch) issue(c + NSLOT - 1);
            cp_async_commit();
            if (!active || c % KSPLIT != half) continue;
            const unsigned char* slot = ring + (c % NSLOT) * CH_SLOT + 16 * g_;
            float cc[8][2][4];
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int e = 0; e < 4; e++) cc[j][h][e] = 0.f;
#pragma unroll
            for (int s = 0; s < 2; s++) {
                if (s < KS) {
                    uint4 U[4], V[4];  // nodes 16s + {2t, 2t+1, 2t+8, 2t+9}; columns c0+8g.. and c0+64+8g..
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        const int k = 16 * s + 2 * t_ + (q & 1) + (q >> 1) * 8;
                        U[q] = *reinterpret_cast<const uint4*>(slot + k * CH_STRIDE);
                        V[q] = *reinterpret_cast<const uint4*>(slot + k * CH_STRIDE + 128);
                    }
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        // m-tile j: row m=g <-> column c0+8g+j, m=g+8 <-> c0+64+8g+j
                        const int w = j >> 1;
                        const uint32_t sel = (j & 1) ? 0x7632u : 0x5410u;
                        const uint32_t a0 = __byte_perm(word(U[0], w), word(U[1], w), sel);  // (m g,   k 2t,2t+1)
                        const uint32_t a1 = __byte_perm(word(V[0], w), word(V[1], w), sel);  // (m g+8, k 2t,2t+1)
                        const uint32_t a2 = __byte_perm(word(U[2], w), word(U[3], w), sel);  // (m g,   k 2t+8,+9)
                        const uint32_t a3 = __byte_perm(word(V[2], w), word(V[3], w), sel);  // (m g+8, k 2t+8,+9)
#pragma unroll
                        for (int h = 0; h < 2; h++) mma_bf16(cc[j][h], a0, a1, a2, a3, b[s][h][0], b[s][h][1]);
                    }
                }
            }
            const int c0 = c * 128;
#pragma unroll
            for (int q = 0; q < 4; q++) {
                if (yr[q] < 0) continue;
                const int h = q >> 1, e = q & 1;
                __nv_bfloat16* yp = Y + (size_t)yr[q] * a.dout + c0 + 8 * g_;
                uint4 lo, hi;
                lo.x = pack_bf16(cc[0][h][e], cc[1][h][e]); lo.y = pack_bf16(cc[2][h][e], cc[3][h][e]);
                lo.z = pack_bf16(cc[4][h][e], cc[5][h][e]); lo.w = pack_bf16(cc[6][h][e], cc[7][h][e]);
                hi.x = pack_bf16(cc[0][h][e + 2], cc[1][h][e + 2]); hi.y = pack_bf16(cc[2][h][e + 2], cc[3][h][e + 2]);
                hi.z = pack_bf16(cc[4][h][e + 2], cc[5][h][e + 2]); hi.w = pack_bf16(cc[6][h][e + 2], cc[7][h][e + 2]);
                __stcs(reinterpret_cast<uint4*>(yp), lo);
                __stcs(reinterpret_cast<uint4*>(yp + 64), hi);
            }
        }
    }
    cp_async_wait<0>();
}

// W2 unit rows in the column-split output are 128 bytes, unpadded; piece p (16 bytes) of row k is
// stored at piece p ^ swz(k), so the 8 lanes of each quarter-warp's fragment load (pieces g = 0..1,
// rows t = 0..3 apart by 1 (fp32) or by 2 (bf16)) hit 8 distinct 16-byte bank groups
template <typename T>
__device__ __forceinline__ int unit_swz(int k) { return Is32<T>::value ? (k & 3) << 1 : ((k >> 1) & 3) << 1; }

// The output of the block's rows with y's columns split over the block's warps (the colsplit option;
// called by every warp after the walk, KSPLIT = 1). A unit is 128 bytes of y's columns (32 fp32 / 64
// bf16); warp w computes units w, w + warps, ... for all of the block's rows, from the activations
// every tile left in shared memory, and streams its units' W2 rows (K nodes x 128 bytes) through a
// ring of its own in the W1 region, up to 4 units deep (d = 768: 4 of its 6 units in fp32, all 3 in
// bf16), synchronised by cp.async groups and __syncwarp only. So no block barrier orders the units
// and no warp waits for another: the block's output is 4 short chains of 6 (fp32) or 3 (bf16) units
// with their W2 loads in flight together, instead of one chain of 12 (6) ring steps. Per unit the
// MMA is the default bag's, transposed the same way (m = 16 columns, n = 8 rows, k = 8 nodes, the
// same k-steps and 3xTF32 order), so each output element is computed from the same operands.
template <typename T>
__device__ __forceinline__ void bag_cols(const StageArgs& a, unsigned char* region, int region_bytes_, const int* sKnode,
                                         const WarpScratch* scratch, int nsub, int g_, int t_) {
    constexpr bool F32 = Is32<T>::value;
    const int K = a.l0 + nsub, K8 = (K + 7) / 8 * 8;  // rows K..K8-1 load node R (sKnode), times activation 0
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int nunits = a.dout * (int)sizeof(T) / 128;
    const int mine = warp < nunits ? (nunits - warp + warps - 1) / warps : 0;
    const int area = region_bytes_ / warps & ~127, ub = K8 * 128;
    const int depth = min(4, min(area / ub, mine));  // area >= 9216 bytes, ub <= 4096: depth >= 1 when mine > 0
    unsigned char* ring = region + warp * area;
    __syncthreads();  // every warp is past its logits (the W1 region is free) and its tile's activations are in
    if (mine == 0) return;
    const unsigned char* w2 = static_cast<const unsigned char*>(a.w2);
    auto issue = [&](int i) {
        if (i < mine) {
            unsigned char* slot = ring + (i % depth) * ub;
            const size_t col = (size_t)(warp + i * warps) * 128;
            for (int q = lane; q < K8 * 8; q += 32) {
                const int k = q >> 3, p = q & 7;
                cp_async16(slot + k * 128 + ((p ^ unit_swz<T>(k)) << 4), w2 + (size_t)sKnode[k] * a.dout * sizeof(T) + col + p * 16);
            }
        }
        cp_async_commit();
    };
    for (int i = 0; i < depth; i++) issue(i);
    const int ntiles = blockDim.x >> 5;  // KSPLIT = 1: a tile per warp
    for (int i = 0; i < mine; i++) {
        switch (depth) {  // unit i's group is complete once at most depth - 1 newer groups are pending
            case 1: cp_async_wait<0>(); break;
            case 2: cp_async_wait<1>(); break;
            case 3: cp_async_wait<2>(); break;
            default: cp_async_wait<3>(); break;
        }
        __syncwarp();  // every lane's copies of unit i are visible to the warp
        const unsigned char* slot = ring + (i % depth) * ub;
        const int u = warp + i * warps;
        if constexpr (F32) {
            const int KS = K8 / 8;
            uint32_t ah[4][2][4], al[4][2][4];  // [k-step][m-tile][a0..a3]
#pragma unroll
            for (int s = 0; s < 4; s++) {
                if (s < KS) {
                    const int r0 = 8 * s + t_, r1 = r0 + 4;
                    const float4 P = *reinterpret_cast<const float4*>(slot + r0 * 128 + ((g_ ^ unit_swz<T>(r0)) << 4));
                    const float4 Q = *reinterpret_cast<const float4*>(slot + r1 * 128 + ((g_ ^ unit_swz<T>(r1)) << 4));
                    // m-tile j: row m = g <-> column 4g + 2j, m = g + 8 <-> column 4g + 2j + 1 of the unit
                    split(P.x, ah[s][0][0], al[s][0][0]); split(P.y, ah[s][0][1], al[s][0][1]);
                    split(Q.x, ah[s][0][2], al[s][0][2]); split(Q.y, ah[s][0][3], al[s][0][3]);
                    split(P.z, ah[s][1][0], al[s][1][0]); split(P.w, ah[s][1][1], al[s][1][1]);
                    split(Q.z, ah[s][1][2], al[s][1][2]); split(Q.w, ah[s][1][3], al[s][1][3]);
                }
            }
            float* Y = static_cast<float*>(a.y) + (size_t)u * 32 + 4 * g_;
            for (int tt = 0; tt < ntiles; tt++) {
                const WarpScratch& ts = scratch[tt];
                if (ts.rows[0] < 0) break;  // tiles fill in order: the rest are empty too
                float cc[2][2][4];  // [n-tile h][m-tile j][c0..c3]
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int j = 0; j < 2; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++) cc[h][j][e] = 0.f;
#pragma unroll
                for (int s = 0; s < 4; s++) {
                    if (s < KS) {
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            uint32_t bh0, bl0, bh1, bl1;
                            split(ts.a[(8 * h + g_) * AS + 8 * s + t_], bh0, bl0);
                            split(ts.a[(8 * h + g_) * AS + 8 * s + t_ + 4], bh1, bl1);
#pragma unroll
                            for (int j = 0; j < 2; j++) mma3(cc[h][j], ah[s][j], al[s][j], bh0, bh1, bl0, bl1);
                        }
                    }
                }
#pragma unroll
                for (int q = 0; q < 4; q++) {  // rows 2t + e of n-tile h: columns 4g .. 4g + 3
                    const int h = q >> 1, e = q & 1, r = ts.rows[8 * h + 2 * t_ + e];
                    if (r >= 0)
                        __stcs(reinterpret_cast<float4*>(Y + (size_t)r * a.dout),
                               make_float4(cc[h][0][e], cc[h][0][e + 2], cc[h][1][e], cc[h][1][e + 2]));
                }
            }
        } else {
            const int KS = (K + 15) / 16;
            uint32_t am[2][4][4];  // [k-step][m-tile][a0..a3]
#pragma unroll
            for (int s = 0; s < 2; s++) {
                if (s < KS) {
                    uint4 U[4];  // nodes 16s + {2t, 2t+1, 2t+8, 2t+9}, columns 8g .. 8g + 7 of the unit
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        const int k = 16 * s + 2 * t_ + (q & 1) + (q >> 1) * 8;
                        U[q] = k < K8 ? *reinterpret_cast<const uint4*>(slot + k * 128 + ((g_ ^ unit_swz<T>(k)) << 4))
                                      : make_uint4(0, 0, 0, 0);
                    }
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        // m-tile j: row m = g <-> column 8g + 2j (low halves), m = g + 8 <-> 8g + 2j + 1 (high)
                        am[s][j][0] = __byte_perm(word(U[0], j), word(U[1], j), 0x5410);
                        am[s][j][1] = __byte_perm(word(U[0], j), word(U[1], j), 0x7632);
                        am[s][j][2] = __byte_perm(word(U[2], j), word(U[3], j), 0x5410);
                        am[s][j][3] = __byte_perm(word(U[2], j), word(U[3], j), 0x7632);
                    }
                }
            }
            __nv_bfloat16* Y = static_cast<__nv_bfloat16*>(a.y) + (size_t)u * 64 + 8 * g_;
            for (int tt = 0; tt < ntiles; tt++) {
                const WarpScratch& ts = scratch[tt];
                if (ts.rows[0] < 0) break;
                float cc[2][4][4];  // [n-tile h][m-tile j][c0..c3]
#pragma unroll
                for (int h = 0; h < 2; h++)
#pragma unroll
                    for (int j = 0; j < 4; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++) cc[h][j][e] = 0.f;
#pragma unroll
                for (int s = 0; s < 2; s++) {
                    if (s < KS) {
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            const float* ar = ts.a + (8 * h + g_) * AS + 16 * s + 2 * t_;
                            const uint32_t b0 = pack_bf16(ar[0], ar[1]), b1 = pack_bf16(ar[8], ar[9]);
#pragma unroll
                            for (int j = 0; j < 4; j++)
                                mma_bf16(cc[h][j], am[s][j][0], am[s][j][1], am[s][j][2], am[s][j][3], b0, b1);
                        }
                    }
                }
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const int h = q >> 1, e = q & 1, r = ts.rows[8 * h + 2 * t_ + e];
                    if (r >= 0) {
                        uint4 v;
                        v.x = pack_bf16(cc[h][0][e], cc[h][0][e + 2]); v.y = pack_bf16(cc[h][1][e], cc[h][1][e + 2]);
                        v.z = pack_bf16(cc[h][2][e], cc[h][2][e + 2]); v.w = pack_bf16(cc[h][3][e], cc[h][3][e + 2]);
                        __stcs(reinterpret_cast<uint4*>(Y + (size_t)r * a.dout), v);
                    }
                }
            }
        }
        __syncwarp();  // every lane is done with unit i's slot before it is refilled
        issue(i + depth);
    }
    cp_async_wait<0>();
}

// blocks per SM the register budget is cut for: deep prefetch takes registers; the last stage
// (more live state in the output product) needs 3 blocks per SM to hold its grid at once
template <bool F32, bool FINAL, int DEPTH, int KSPLIT>
struct MinBlocks { static constexpr int value = KSPLIT > 1 ? 2 : DEPTH >= 8 ? 2 : (F32 || FINAL ? 3 : 4); };

// shared memory a stage kernel is launched with: the layout above, plus (BULK) 16 bytes at its
// end for the W1 fill's mbarrier (the layout's size is a multiple of 16, so it is 8-byte aligned)
template <typename T>
__host__ __device__ inline size_t stage_smem_launch(int d, int warps, bool final_, bool bulk) {
    return stage_smem<T>(d, warps, final_) + (bulk ? 16 : 0);
}

// KB = k-blocks of 128 bytes per row (d * sizeof(T) / 128); FINAL: this stage writes y.
// x is prefetched DEPTH k-blocks ahead in registers, issued in groups of G k-blocks (G = 4: each
// thread's loads of a row cover 512 contiguous bytes at once). KSPLIT warps share a 16-row tile,
// each taking KB / KSPLIT of the k-blocks (more warps, each with a shorter chain); their partial
// logits meet in shared memory, and in the last stage they take turns over the output's chunks.
// BULK (the w1_bulk option, sm_90 and up): the subtree's W1 rows come in by one cp.async.bulk per
// row, issued by one thread and completing on an mbarrier, instead of 16-byte cp.async by every
// thread; everyone waits on the barrier (phase 0: a block fills its W1 rows exactly once) before
// the first MMA reads them. The W2 ring that later reuses the region starts after that wait and a
// block barrier, so the bulk writes are complete before any cp.async of the ring lands there.
// COLS (the colsplit option, FINAL and KSPLIT = 1 only): the output by bag_cols instead of bag.
template <typename T, int KB, bool FINAL, int DEPTH, int G, int KSPLIT, bool BULK, bool COLS>
__global__ void __launch_bounds__(128 * KSPLIT, MinBlocks<Is32<T>::value, FINAL, DEPTH, KSPLIT>::value)
stage_kernel(StageArgs a) {
    static_assert(KB % KSPLIT == 0, "k-blocks must split evenly");
    constexpr int KBH = KB / KSPLIT;
    constexpr bool F32 = Is32<T>::value;
    static_assert(DEPTH % G == 0, "groups must tile the ring");
    static_assert(!COLS || (FINAL && KSPLIT == 1), "the column-split output is the last stage's, one warp per tile");
    griddep_wait();  // no-op without programmatic dependent launch
    if (a.trigger) griddep_launch();  // only when the whole grid is resident (see fff_v4_plan)
    TRACE(0, gtimer());
    TRACE(2, clock64());
    extern __shared__ __align__(16) unsigned char smem[];
    const int sw = w_stride_bytes<T>(a.d);
    unsigned char* sW = smem;                                          // W1 rows, then the W2 ring
    float* sB = reinterpret_cast<float*>(smem + region_bytes<T>(a.d, FINAL));  // 16 biases
    int* sKnode = reinterpret_cast<int*>(sB + 16);                      // bag: node of each k
    int* sScan = sKnode + KMAX;                                         // 32
    int* sInfo = sScan + 32;                                            // group, first position, rows in group, last
    WarpScratch* scratch = reinterpret_cast<WarpScratch*>(sInfo + 4);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    const int rpb = warps / KSPLIT * TILE;
    const int tile = warp / KSPLIT, half = warp % KSPLIT;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr bool kBulk = BULK;
#else
    constexpr bool kBulk = false;  // no bulk copy below sm_90: the cp.async fill
#endif
    uint32_t sBar = 0;  // the W1 fill's mbarrier (kBulk only), past the end of the layout
    if constexpr (kBulk) {
        sBar = (uint32_t)__cvta_generic_to_shared(smem + stage_smem<T>(a.d, warps, FINAL));
        if (tid == 0) mbar_init(sBar, 1);  // one arrival (tid 0's expect_tx) plus the bytes
        // the work assignment below passes at least one __syncthreads before the fill: every
        // thread sees the initialised barrier before it waits on it
    }

    // ---- which group and which rows of it this block takes
    if (a.in_cnt == nullptr) {
        if (tid == 0) { sInfo[0] = 0; sInfo[1] = blockIdx.x * rpb; sInfo[2] = a.B; }
        __syncthreads();
    } else {
        const int ng = 1 << a.l0;
        const int per = (ng + blockDim.x - 1) / blockDim.x;
        const int g0 = min(ng, tid * per), g1 = min(ng, g0 + per);
        if (tid == 0) sInfo[0] = -1;
        int local = 0;
        for (int g = g0; g < g1; g++) local += (a.in_cnt[g] + rpb - 1) / rpb;
        int v = local;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) { int n = __shfl_up_sync(FULL, v, o); if (lane >= o) v += n; }
        if (lane == 31) sScan[warp] = v;
        __syncthreads();
        int before = 0;
        for (int w = 0; w < warp; w++) before += sScan[w];
        int s = before + v - local;
        for (int g = g0; g < g1; g++) {
            const int c = a.in_cnt[g], nt = (c + rpb - 1) / rpb;
            if ((int)blockIdx.x >= s && (int)blockIdx.x < s + nt) { sInfo[0] = g; sInfo[1] = ((int)blockIdx.x - s) * rpb; sInfo[2] = c; }
            s += nt;
        }
        __syncthreads();
        // every block has read the counts once it has passed this point: the last one resets them
        // (and the block counter) for the next call; stream order makes that visible to it
        if (tid == 0) sInfo[3] = atomicAdd(a.done, 1) == (int)gridDim.x - 1;
        __syncthreads();
        if (sInfo[3]) {
            for (int g = tid; g < ng; g += blockDim.x) a.in_cnt[g] = 0;
            if (tid == 0) *a.done = 0;
        }
    }
    const int grp = sInfo[0];
    TRACE(3, clock64());
    if (grp < 0) { TRACE(1, gtimer()); TRACE(7, 0); return; }  // block-uniform: more blocks than tiles
    const int pos0 = sInfo[1], cnt = sInfo[2];
    const int R = (1 << a.l0) - 1 + grp;  // subtree root, global node
    const int nsub = (1 << a.nlev) - 1;

    // ---- the subtree's W1 rows into shared memory (async), biases, the bag's node list
    {
        const int chunks = a.d * (int)sizeof(T) / 16;
        if constexpr (kBulk) {
            // rows 0..nsub-1: one bulk copy each (d * sizeof(T) bytes: a multiple of 128; rows
            // start at multiples of sw = d * sizeof(T) + 64 from the 16-byte aligned region)
            const uint32_t rb = (uint32_t)(a.d * (int)sizeof(T));
            if (tid == 0) {
                mbar_arrive_expect_tx(sBar, (uint32_t)nsub * rb);
                const uint32_t dst0 = (uint32_t)__cvta_generic_to_shared(sW);
                for (int m = 0; m < nsub; m++) {
                    const int j = 31 - __clz(m + 1), node = ((R + 1) << j) - 1 + (m + 1 - (1 << j));
                    bulk_g2s(dst0 + (uint32_t)(m * sw), static_cast<const unsigned char*>(a.w1) + (size_t)node * rb, rb, sBar);
                }
            }
            // rows nsub..15 (at least row 15) are zeros, written by everyone as before
            for (int i = tid; i < (16 - nsub) * chunks; i += blockDim.x) {
                const int m = nsub + i / chunks, c = i % chunks;
                *reinterpret_cast<uint4*>(sW + m * sw + c * 16) = make_uint4(0, 0, 0, 0);
            }
        } else {
            for (int i = tid; i < 16 * chunks; i += blockDim.x) {
                const int m = i / chunks, c = i - m * chunks;
                unsigned char* dst = sW + m * sw + c * 16;
                if (m < nsub) {
                    const int j = 31 - __clz(m + 1), node = ((R + 1) << j) - 1 + (m + 1 - (1 << j));
                    cp_async16(dst, static_cast<const unsigned char*>(a.w1) + (size_t)node * a.d * sizeof(T) + c * 16);
                } else {
                    *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
                }
            }
        }
        cp_async_commit();
        if (tid < 16) {
            float b = 0.f;
            if (tid < nsub) {
                const int j = 31 - __clz(tid + 1), node = ((R + 1) << j) - 1 + (tid + 1 - (1 << j));
                b = tof(static_cast<const T*>(a.b1)[node]);
            }
            sB[tid] = b;
        }
        if (FINAL && tid < KMAX) {
            const int P = a.l0;
            int node = R;
            if (tid < P) node = ((R + 1) >> (P - tid)) - 1;
            else if (tid < P + nsub) {
                const int m = tid - P, j = 31 - __clz(m + 1);
                node = ((R + 1) << j) - 1 + (m + 1 - (1 << j));
            }
            sKnode[tid] = node;
        }
    }

    // ---- this warp's rows (each warp of a tile reads the list: no barrier needed)
    WarpScratch& ws = scratch[warp];
    WarpScratch& tws = scratch[tile * KSPLIT];  // the tile's shared scratch: partial logits 0, activations
    if (lane < TILE) {
        const int p = pos0 + tile * TILE + lane;
        int r = -1;
        if (p < cnt) r = a.in_slots ? a.in_slots[(size_t)grp * a.cap + p] : p;
        ws.rows[lane] = r;
    }
    __syncwarp();
    const bool active = ws.rows[0] >= 0;  // warp-uniform; inactive warps still take part in barriers
    const int g_ = lane >> 2, t_ = lane & 3;
    int rA = ws.rows[g_], rB = ws.rows[g_ + 8];
    if (rA < 0) rA = ws.rows[0];
    if (rB < 0) rB = ws.rows[0];
    const uint64_t pol = l2_policy(a.hint);
    const unsigned char* xa = static_cast<const unsigned char*>(a.x) + (size_t)max(rA, 0) * a.d * sizeof(T) + 16 * t_;
    const unsigned char* xb = static_cast<const unsigned char*>(a.x) + (size_t)max(rB, 0) * a.d * sizeof(T) + 16 * t_;

    xa += half * KBH * 128;
    xb += half * KBH * 128;
    if (a.w1first) {  // block-uniform
        if constexpr (kBulk) mbar_wait(sBar, 0);
        else cp_async_wait_all();
        __syncthreads();
    }
    uint4 bufA[DEPTH][2], bufB[DEPTH][2];
    if (active) {
#pragma unroll
        for (int j = 0; j < DEPTH; j++) {
            if (j < KBH) {
                bufA[j][0] = ld_x(xa + j * 128, pol); bufA[j][1] = ld_x(xa + j * 128 + 64, pol);
                bufB[j][0] = ld_x(xb + j * 128, pol); bufB[j][1] = ld_x(xb + j * 128 + 64, pol);
            }
        }
    }
    if constexpr (kBulk) mbar_wait(sBar, 0);  // returns at once if the w1first wait saw it complete
    else cp_async_wait_all();
    __syncthreads();
    TRACE(4, clock64());
    if (!FINAL && KSPLIT == 1 && !active) return;

    if (active) {
        // ---- logits of 16 rows x 16 nodes: C[n-tile][4]; fp32 keeps the three 3xTF32 products in
        // separate accumulators (three dependent MMA chains of a third the length, summed at the end)
        constexpr int NACC = F32 ? 3 : 1;
        float acc[2][4], acx[NACC][2][4];
#pragma unroll
        for (int q = 0; q < NACC; q++)
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int e = 0; e < 4; e++) acx[q][h][e] = 0.f;
        const unsigned char* w0 = sW + g_ * sw + 16 * t_ + half * KBH * 128;
        const unsigned char* w1p = sW + (g_ + 8) * sw + 16 * t_ + half * KBH * 128;
#pragma unroll
        for (int kb = 0; kb < KBH; kb++) {
            const int slot = kb % DEPTH;
            const uint4 A0 = bufA[slot][0], A1 = bufA[slot][1], B0 = bufB[slot][0], B1 = bufB[slot][1];
            if (G == 1) {
                if (kb + DEPTH < KBH) {
                    bufA[slot][0] = ld_x(xa + (kb + DEPTH) * 128, pol); bufA[slot][1] = ld_x(xa + (kb + DEPTH) * 128 + 64, pol);
                    bufB[slot][0] = ld_x(xb + (kb + DEPTH) * 128, pol); bufB[slot][1] = ld_x(xb + (kb + DEPTH) * 128 + 64, pol);
                }
            }
            const uint4 W00 = *reinterpret_cast<const uint4*>(w0 + kb * 128);
            const uint4 W01 = *reinterpret_cast<const uint4*>(w0 + kb * 128 + 64);
            const uint4 W10 = *reinterpret_cast<const uint4*>(w1p + kb * 128);
            const uint4 W11 = *reinterpret_cast<const uint4*>(w1p + kb * 128 + 64);
#pragma unroll
            for (int s = 0; s < 4; s++) {
                // words 2s, 2s+1 of the 8 this thread holds per row (0-3 first vector, 4-7 second)
                const uint4& va = s < 2 ? A0 : A1;
                const uint4& vb = s < 2 ? B0 : B1;
                const uint4& vw0 = s < 2 ? W00 : W01;
                const uint4& vw1 = s < 2 ? W10 : W11;
                const int i0 = (2 * s) & 3, i1 = (2 * s + 1) & 3;
                if constexpr (F32) {
                    uint32_t ah[4], al[4];
                    split(__uint_as_float(word(va, i0)), ah[0], al[0]);
                    split(__uint_as_float(word(vb, i0)), ah[1], al[1]);
                    split(__uint_as_float(word(va, i1)), ah[2], al[2]);
                    split(__uint_as_float(word(vb, i1)), ah[3], al[3]);
                    uint32_t bh0, bl0, bh1, bl1;
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const uint4& vw = h ? vw1 : vw0;
                        split(__uint_as_float(word(vw, i0)), bh0, bl0);
                        split(__uint_as_float(word(vw, i1)), bh1, bl1);
                        mma_tf32(acx[0 % NACC][h], al[0], al[1], al[2], al[3], bh0, bh1);
                        mma_tf32(acx[1 % NACC][h], ah[0], ah[1], ah[2], ah[3], bl0, bl1);
                        mma_tf32(acx[2 % NACC][h], ah[0], ah[1], ah[2], ah[3], bh0, bh1);
                    }
                } else {
                    const uint32_t a0 = word(va, i0), a1 = word(vb, i0), a2 = word(va, i1), a3 = word(vb, i1);
                    mma_bf16(acx[0][0], a0, a1, a2, a3, word(vw0, i0), word(vw0, i1));
                    mma_bf16(acx[0][1], a0, a1, a2, a3, word(vw1, i0), word(vw1, i1));
                }
            }
            if (G > 1 && kb % G == G - 1) {  // the group just used frees its slots: refill them
#pragma unroll
                for (int q = 0; q < G; q++) {
                    const int nk = kb - G + 1 + q + DEPTH, sl = (kb - G + 1 + q) % DEPTH;
                    if (nk < KBH) {
                        bufA[sl][0] = ld_x(xa + nk * 128, pol); bufA[sl][1] = ld_x(xa + nk * 128 + 64, pol);
                        bufB[sl][0] = ld_x(xb + nk * 128, pol); bufB[sl][1] = ld_x(xb + nk * 128 + 64, pol);
                    }
                }
            }
        }
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int e = 0; e < 4; e++) {  // small terms first, as one chain would have added them
                float v = acx[0][h][e];
#pragma unroll
                for (int q = 1; q < NACC; q++) v += acx[q][h][e];
                acc[h][e] = v;
            }
        // C layout: c0 (row g, col 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1); n-tile h adds 8 to the col
#pragma unroll
        for (int h = 0; h < 2; h++) {
            ws.lg[g_ * LGS + 8 * h + 2 * t_] = acc[h][0];
            ws.lg[g_ * LGS + 8 * h + 2 * t_ + 1] = acc[h][1];
            ws.lg[(g_ + 8) * LGS + 8 * h + 2 * t_] = acc[h][2];
            ws.lg[(g_ + 8) * LGS + 8 * h + 2 * t_ + 1] = acc[h][3];
        }
        if (FINAL && half == 0)
            for (int i = lane; i < TILE * AS; i += 32) ws.a[i] = 0.f;
    }
    if (KSPLIT > 1) __syncthreads();  // the tile's partial logits are all in
    else __syncwarp();
    if (!FINAL && !active) return;

    if (active && half == 0) {
        // ---- walk the stage's levels, one lane per row
        if (lane < TILE && ws.rows[lane] >= 0) {
            const int row = ws.rows[lane];
            int m = 0;
            float av[4]; int mv[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                if (j < a.nlev) {
                    float z = sB[m];
#pragma unroll
                    for (int h = 0; h < KSPLIT; h++) z += scratch[warp + h].lg[lane * LGS + m];
                    av[j] = gelu(z); mv[j] = m;
                    m = 2 * m + 1 + (z > 0.f);
                }
            }
            if (!FINAL) {
#pragma unroll
                for (int j = 0; j < 4; j++)
                    if (j < a.nlev) a.acts[(size_t)row * a.L + a.l0 + j] = av[j];
                const int ng = (grp << a.nlev) + (m - nsub);
                const int rank = atomicAdd(&a.out_cnt[ng], 1);
                a.out_slots[(size_t)ng * a.cap + rank] = row;
            } else {
                for (int k = 0; k < a.l0; k++) ws.a[lane * AS + k] = a.acts[(size_t)row * a.L + k];
#pragma unroll
                for (int j = 0; j < 4; j++)
                    if (j < a.nlev) ws.a[lane * AS + a.l0 + mv[j]] = av[j];
            }
        }
    }
    if (warp == 0) TRACE(5, clock64());
    if constexpr (FINAL && COLS) bag_cols<T>(a, smem, (int)region_bytes<T>(a.d, FINAL), sKnode, scratch, nsub, g_, t_);
    else if constexpr (FINAL) bag<T, KSPLIT>(a, smem, sKnode, tws, active, half, nsub, g_, t_);
    if (FINAL) {
        if (COLS && a.trace) __syncthreads();  // the output phase ends with the block's slowest warp
        TRACE(6, clock64());
    }
    if (FINAL || warp == 0) { TRACE(7, clock64()); TRACE(1, gtimer()); }
}
// ------------------------------------------------------------------------------------------
// small-batch path: one launch, one warp per row, SPEC levels per round computed together
// ------------------------------------------------------------------------------------------
struct SmallArgs { const void* x; void* y; const void* w1; const void* b1; const void* w2; int B, d, L; };

template <typename T> struct V16;
template <> struct V16<float> {
    static constexpr int N = 4;
    __device__ __forceinline__ static void unpack(uint4 u, float* o) {
        o[0] = __uint_as_float(u.x); o[1] = __uint_as_float(u.y); o[2] = __uint_as_float(u.z); o[3] = __uint_as_float(u.w);
    }
    __device__ __forceinline__ static uint4 pack(const float* i) {
        return make_uint4(__float_as_uint(i[0]), __float_as_uint(i[1]), __float_as_uint(i[2]), __float_as_uint(i[3]));
    }
};
template <> struct V16<__nv_bfloat16> {
    static constexpr int N = 8;
    __device__ __forceinline__ static void unpack(uint4 u, float* o) {
        const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
        for (int i = 0; i < 4; i++) { float2 f = __bfloat1622float2(h[i]); o[2 * i] = f.x; o[2 * i + 1] = f.y; }
    }
    __device__ __forceinline__ static uint4 pack(const float* i) {
        return make_uint4(pack_bf16(i[0], i[1]), pack_bf16(i[2], i[3]), pack_bf16(i[4], i[5]), pack_bf16(i[6], i[7]));
    }
};

// VPL: 16-byte vectors per lane per row (d = 32 * VPL * V16<T>::N)
template <typename T, int VPL, int SPEC>
__global__ void __launch_bounds__(128) small_kernel(SmallArgs a) {
    constexpr int N = V16<T>::N, E = VPL * N, NS = (1 << SPEC) - 1;
    const int lane = threadIdx.x & 31;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= a.B) return;
    const T* w1 = static_cast<const T*>(a.w1);
    const T* b1 = static_cast<const T*>(a.b1);
    const T* w2 = static_cast<const T*>(a.w2);
    float xr[E];
    {
        const uint4* xp = reinterpret_cast<const uint4*>(static_cast<const T*>(a.x) + (size_t)row * a.d);
#pragma unroll
        for (int v = 0; v < VPL; v++) V16<T>::unpack(__ldcs(xp + v * 32 + lane), xr + v * N);
    }
    int my_node = 0; float my_act = 0.f;  // lane l keeps level l's (node, activation)
    int n = 0;
    for (int l = 0; l < a.L; l += SPEC) {
        const int S = min(SPEC, a.L - l);
        float z[NS];
        int node[NS];
#pragma unroll
        for (int m = 0; m < NS; m++) {
            const int j = m == 0 ? 0 : (m < 3 ? 1 : 2);
            node[m] = ((n + 1) << j) - 1 + (m + 1 - (1 << j));
            z[m] = 0.f;
        }
        float bias[NS];
#pragma unroll
        for (int m = 0; m < NS; m++) {
            const int j = m == 0 ? 0 : (m < 3 ? 1 : 2);
            bias[m] = j < S ? tof(b1[node[m]]) : 0.f;
        }
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            float wv[NS][N];
#pragma unroll
            for (int m = 0; m < NS; m++) {
                const int j = m == 0 ? 0 : (m < 3 ? 1 : 2);
                if (j < S) V16<T>::unpack(__ldg(reinterpret_cast<const uint4*>(w1 + (size_t)node[m] * a.d) + v * 32 + lane), wv[m]);
                else
#pragma unroll
                    for (int e = 0; e < N; e++) wv[m][e] = 0.f;
            }
#pragma unroll
            for (int m = 0; m < NS; m++)
#pragma unroll
                for (int e = 0; e < N; e++) z[m] = fmaf(xr[v * N + e], wv[m][e], z[m]);
        }
#pragma unroll
        for (int m = 0; m < NS; m++) z[m] = warp_sum(z[m]) + bias[m];
        int m = 0;
#pragma unroll
        for (int j = 0; j < SPEC; j++) {
            if (j < S) {
                float zz = z[0];
#pragma unroll
                for (int q = 1; q < NS; q++) if (q == m) zz = z[q];
                int nd = node[0];
#pragma unroll
                for (int q = 1; q < NS; q++) if (q == m) nd = node[q];
                if (lane == l + j) { my_node = nd; my_act = gelu(zz); }
                m = 2 * m + 1 + (zz > 0.f);
            }
        }
        n = ((n + 1) << S) - 1 + (m + 1 - (1 << S));
    }
    float acc[E];
#pragma unroll
    for (int e = 0; e < E; e++) acc[e] = 0.f;
    for (int l = 0; l < a.L; l += 4) {
        int nd[4]; float av[4];
#pragma unroll
        for (int q = 0; q < 4; q++) {
            nd[q] = __shfl_sync(FULL, my_node, min(l + q, 31));
            av[q] = l + q < a.L ? __shfl_sync(FULL, my_act, min(l + q, 31)) : 0.f;
            if (l + q >= a.L) nd[q] = nd[0];
        }
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            float wv[4][N];
#pragma unroll
            for (int q = 0; q < 4; q++)
                V16<T>::unpack(__ldg(reinterpret_cast<const uint4*>(w2 + (size_t)nd[q] * a.d) + v * 32 + lane), wv[q]);
#pragma unroll
            for (int q = 0; q < 4; q++)
#pragma unroll
                for (int e = 0; e < N; e++) acc[v * N + e] = fmaf(av[q], wv[q][e], acc[v * N + e]);
        }
    }
    uint4* yp = reinterpret_cast<uint4*>(static_cast<T*>(a.y) + (size_t)row * a.d);
#pragma unroll
    for (int v = 0; v < VPL; v++) __stcs(yp + v * 32 + lane, V16<T>::pack(acc + v * N));
}


// ------------------------------------------------------------------------------------------
// probe: what the x access patterns can stream on their own (loads only, no arithmetic)
// ------------------------------------------------------------------------------------------
// PAT 0: the stage kernels' pattern: a warp takes 16 rows, each thread 2 rows x 2 x 16 B per
// 128-byte k-block, DEPTH k-blocks in flight, refilled in groups of G. PAT 1: a warp takes rpw
// rows, each load instruction reads 512 contiguous bytes of one row, DEPTH such loads in flight.
// Write-pattern probe (no loads but the row list): blocks of 128 threads each write 64 rows of y,
// rows[blockIdx.x * 64 + i], with 16-byte streaming stores as the last stage writes y. PIECES: in
// piece-major order, 256 bytes of every row of the block per step (the row-tile output's ring
// steps; the column split writes 4 x 128 bytes per step, the same order of magnitude); else whole
// rows, one warp per row at a time. Identity against permuted row lists separates the cost of
// scattered rows from that of the piece order.
template <bool PIECES>
__global__ void __launch_bounds__(128) wprobe_kernel(uint4* y, const int* rows, int B, int row_bytes) {
    const int tid = threadIdx.x, r0 = blockIdx.x * 64, nr = min(64, B - r0), v16 = row_bytes / 16;
    const uint4 val = make_uint4(tid, r0, 1, 2);
    if (PIECES) {
        for (int c = 0; c < v16; c += 16)
            for (int i = tid; i < nr * 16; i += 128)
                __stcs(y + (size_t)rows[r0 + i / 16] * v16 + c + i % 16, val);
    } else {
        for (int i = tid >> 5; i < nr; i += 4)
            for (int v = tid & 31; v < v16; v += 32) __stcs(y + (size_t)rows[r0 + i] * v16 + v, val);
    }
}

template <int DEPTH, int G, int PAT>
__global__ void __launch_bounds__(128) probe_kernel(const unsigned char* x, int B, int row_bytes, int rpw, unsigned* out) {
    const int lane = threadIdx.x & 31, warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    unsigned acc = 0;
    if (PAT == 0) {
        if (warp * 16 >= B) return;
        const int g_ = lane >> 2, t_ = lane & 3, KB = row_bytes / 128;
        const unsigned char* xa = x + (size_t)(warp * 16 + g_) * row_bytes + 16 * t_;
        const unsigned char* xb = x + (size_t)(warp * 16 + g_ + 8) * row_bytes + 16 * t_;
        uint4 buf[DEPTH][4];
        const uint64_t pol = l2_policy(0);
#pragma unroll
        for (int j = 0; j < DEPTH; j++)
            if (j < KB) { buf[j][0] = ld_x(xa + j * 128, pol); buf[j][1] = ld_x(xa + j * 128 + 64, pol);
                          buf[j][2] = ld_x(xb + j * 128, pol); buf[j][3] = ld_x(xb + j * 128 + 64, pol); }
        for (int k0 = 0; k0 < KB; k0 += DEPTH) {
#pragma unroll
            for (int j = 0; j < DEPTH; j++) {
                if (k0 + j < KB)
#pragma unroll
                    for (int q = 0; q < 4; q++) acc ^= buf[j][q].x ^ buf[j][q].y ^ buf[j][q].z ^ buf[j][q].w;
                if ((j + 1) % G == 0)
#pragma unroll
                    for (int jj = j + 1 - G; jj <= j; jj++) {
                        const int nk = k0 + jj + DEPTH;
                        if (nk < KB) { buf[jj][0] = ld_x(xa + nk * 128, pol); buf[jj][1] = ld_x(xa + nk * 128 + 64, pol);
                                       buf[jj][2] = ld_x(xb + nk * 128, pol); buf[jj][3] = ld_x(xb + nk * 128 + 64, pol); }
                    }
            }
        }
    } else {
        if (warp * rpw >= B) return;
        const int ppr = row_bytes / 512, n = min(rpw, B - warp * rpw) * ppr;
        const unsigned char* base = x + (size_t)warp * rpw * row_bytes + 16 * lane;
        uint4 buf[DEPTH];
#pragma unroll
        for (int j = 0; j < DEPTH; j++)
            if (j < n) buf[j] = __ldg(reinterpret_cast<const uint4*>(base + (j / ppr) * row_bytes + (j % ppr) * 512));
        for (int i0 = 0; i0 < n; i0 += DEPTH) {
#pragma unroll
            for (int j = 0; j < DEPTH; j++) {
                if (i0 + j < n) acc ^= buf[j].x ^ buf[j].y ^ buf[j].z ^ buf[j].w;
                const int ni = i0 + j + DEPTH;
                if (ni < n) buf[j] = __ldg(reinterpret_cast<const uint4*>(base + (ni / ppr) * row_bytes + (ni % ppr) * 512));
            }
        }
    }
    out[warp * 32 + lane] = acc;
}


// Tiny batches: one block of 16 warps per row. Each round takes 4 levels at once: warp w computes
// the dot of node w of the 15-node subtree under the current node (all 15 loads in flight
// together), then one thread walks the 4 levels; 12 levels cost 3 dependent rounds instead of 12.
// The output: thread t owns 16 bytes of y and sums the L visited W2 rows (all loads in flight).
template <typename T, int VPL>
__global__ void __launch_bounds__(512) tiny_kernel(SmallArgs a) {
    constexpr int N = V16<T>::N, E = VPL * N;
    __shared__ float sz[16], sg[16];
    __shared__ int snode[32];
    __shared__ float sact[32];
    __shared__ int snext;
    const int row = blockIdx.x, tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const T* w1 = static_cast<const T*>(a.w1);
    const T* b1 = static_cast<const T*>(a.b1);
    const T* w2 = static_cast<const T*>(a.w2);
    float xr[E];
    {
        const uint4* xp = reinterpret_cast<const uint4*>(static_cast<const T*>(a.x) + (size_t)row * a.d);
#pragma unroll
        for (int v = 0; v < VPL; v++) V16<T>::unpack(__ldg(xp + v * 32 + lane), xr + v * N);
    }
    int n = 0;
    for (int l = 0; l < a.L; l += 4) {
        const int S = min(4, a.L - l), nn = (1 << S) - 1;
        if (w < nn) {
            const int j = 31 - __clz(w + 1), node = ((n + 1) << j) - 1 + (w + 1 - (1 << j));
            const uint4* wp = reinterpret_cast<const uint4*>(w1 + (size_t)node * a.d);
            const float bias = tof(b1[node]);
            float z0 = 0.f, z1 = 0.f;
#pragma unroll
            for (int v = 0; v < VPL; v++) {
                float wv[N];
                V16<T>::unpack(__ldg(wp + v * 32 + lane), wv);
#pragma unroll
                for (int e = 0; e < N; e += 2) {
                    z0 = fmaf(xr[v * N + e], wv[e], z0);
                    z1 = fmaf(xr[v * N + e + 1], wv[e + 1], z1);
                }
            }
            const float z = warp_sum(z0 + z1) + bias;
            if (lane == 0) { sz[w] = z; sg[w] = gelu(z); }
        }
        __syncthreads();
        if (tid == 0) {
            int m = 0;
            for (int j = 0; j < S; j++) {
                const int jj = 31 - __clz(m + 1);
                snode[l + j] = ((n + 1) << jj) - 1 + (m + 1 - (1 << jj));
                sact[l + j] = sg[m];
                m = 2 * m + 1 + (sz[m] > 0.f);
            }
            snext = ((n + 1) << S) - 1 + (m + 1 - (1 << S));
        }
        __syncthreads();
        n = snext;
    }
    const int nvec = a.d / N;
    for (int v = tid; v < nvec; v += blockDim.x) {
        float acc[N];
#pragma unroll
        for (int e = 0; e < N; e++) acc[e] = 0.f;
        for (int l0 = 0; l0 < a.L; l0 += 16) {
            uint4 wv[16];
#pragma unroll
            for (int q = 0; q < 16; q++)
                if (l0 + q < a.L) wv[q] = __ldg(reinterpret_cast<const uint4*>(w2 + (size_t)snode[l0 + q] * a.d) + v);
#pragma unroll
            for (int q = 0; q < 16; q++)
                if (l0 + q < a.L) {
                    float f[N];
                    V16<T>::unpack(wv[q], f);
                    const float av = sact[l0 + q];
#pragma unroll
                    for (int e = 0; e < N; e++) acc[e] = fmaf(av, f[e], acc[e]);
                }
        }
        __stcs(reinterpret_cast<uint4*>(static_cast<T*>(a.y) + (size_t)row * a.d) + v, V16<T>::pack(acc));
    }
}

}  // namespace v4

// ------------------------------------------------------------------------------------------
// host side: a plan per batch size (made outside the timed call), one run call per forward
// ------------------------------------------------------------------------------------------
using namespace v4;

static constexpr int MAXST = 8;

struct V4Plan {
    int dtype, B, d, dout, L, small, spec, pdl, hint0, hint1, nst, sms, xdepth, xgroup;
    int w1first;
    int w1bulk;           // W1 rows by cp.async.bulk on an mbarrier (sm_90+, w1 16-byte aligned; else 0)
    int colsplit;         // the last stage's output split over y's columns (bag_cols; KSPLIT 1 only, else 0)
    int tiles[3], ks[3];  // by stage class [first, middle, last]: 16-row tiles per block, warps per tile
    unsigned long long* trace;  // null, or MAXST x 1024 blocks x 8 words
    const void *w1, *b1, *w2;
    float* acts;
    int l0[MAXST], nlev[MAXST];
    int* cnt[MAXST];    // cnt[s]: rows per group at the start of stage s (s >= 1)
    int* slots[MAXST];
    int* done;          // MAXST ints, zero
    size_t smem[3];
    int grid[MAXST], resident[MAXST];
    int cls(int s) const { return s == nst - 1 ? 2 : (s == 0 ? 0 : 1); }
};

template <typename T> struct KB768 { static constexpr int value = 768 * (int)sizeof(T) / 128; };

template <typename T, int KB, bool FINAL, int D, int G, int KS, bool BULK, bool COLS = false>
static cudaError_t launch_one(const V4Plan& p, int s, const void* x, void* y, cudaStream_t st) {
    StageArgs a;
    a.x = x; a.y = y; a.w1 = p.w1; a.b1 = p.b1; a.w2 = p.w2; a.acts = p.acts;
    a.in_cnt = s > 0 ? p.cnt[s] : nullptr;
    a.in_slots = s > 0 ? p.slots[s] : nullptr;
    a.out_cnt = FINAL ? nullptr : p.cnt[s + 1];
    a.out_slots = FINAL ? nullptr : p.slots[s + 1];
    a.done = p.done + s;
    a.B = p.B; a.d = p.d; a.dout = p.dout; a.L = p.L; a.l0 = p.l0[s]; a.nlev = p.nlev[s]; a.cap = p.B;
    a.hint = FINAL ? p.hint1 : p.hint0;
    a.trigger = p.pdl && !FINAL && p.resident[s];
    a.trace = p.trace ? p.trace + (size_t)s * 1024 * 8 : nullptr;
    a.w1first = p.w1first;
    if (p.grid[s] > 1024) a.trace = nullptr;
    const int c = p.cls(s);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(p.grid[s]); cfg.blockDim = dim3(32 * p.tiles[c] * KS); cfg.stream = st;
    cfg.dynamicSmemBytes = p.smem[c];
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr; cfg.numAttrs = (p.pdl && s > 0) ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, stage_kernel<T, KB, FINAL, D, G, KS, BULK, COLS>, a);
}

template <typename T, int KB, bool FINAL, int D, int G, int KS, bool BULK, bool COLS = false>
static int setup_one(const V4Plan& p, int c) {  // blocks per SM, or -(CUDA error)
    cudaError_t e = cudaFuncSetAttribute(stage_kernel<T, KB, FINAL, D, G, KS, BULK, COLS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)p.smem[c]);
    if (e) return -(int)e;
    int n = 0;
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, stage_kernel<T, KB, FINAL, D, G, KS, BULK, COLS>, 32 * p.tiles[c] * KS, p.smem[c]);
    return e ? -(int)e : n;
}

// which instantiation stage s runs: for d = 768 its class's k-split and the plan's prefetch;
// other widths (4, 1) without k-split; BULK: the plan's w1bulk; the last stage's COLS: its colsplit
template <typename T, int KB, bool B_>
static cudaError_t launch_stage_b(const V4Plan& p, int s, const void* x, void* y, cudaStream_t st) {
    const int c = p.cls(s);
    if constexpr (KB == KB768<T>::value) {
        if (c == 2) return p.ks[2] == 2 ? launch_one<T, KB, true, 4, 1, 2, B_>(p, s, x, y, st)
                         : p.colsplit ? launch_one<T, KB, true, 4, 1, 1, B_, true>(p, s, x, y, st)
                                      : launch_one<T, KB, true, 4, 1, 1, B_>(p, s, x, y, st);
        if (p.ks[c] == 2) return launch_one<T, KB, false, 4, 1, 2, B_>(p, s, x, y, st);
        if (p.xdepth == 8) return p.xgroup == 4 ? launch_one<T, KB, false, 8, 4, 1, B_>(p, s, x, y, st)
                                                : launch_one<T, KB, false, 8, 1, 1, B_>(p, s, x, y, st);
        return launch_one<T, KB, false, 4, 1, 1, B_>(p, s, x, y, st);
    } else {
        if (c == 2) return p.colsplit ? launch_one<T, KB, true, 4, 1, 1, B_, true>(p, s, x, y, st)
                                      : launch_one<T, KB, true, 4, 1, 1, B_>(p, s, x, y, st);
        return launch_one<T, KB, false, 4, 1, 1, B_>(p, s, x, y, st);
    }
}
template <typename T, int KB>
static cudaError_t launch_stage(const V4Plan& p, int s, const void* x, void* y, cudaStream_t st) {
    return p.w1bulk ? launch_stage_b<T, KB, true>(p, s, x, y, st) : launch_stage_b<T, KB, false>(p, s, x, y, st);
}

// blocks per SM of class c's kernel (setting its shared-memory limit), or -(CUDA error)
template <typename T, int KB, bool B_>
static int setup_class_b(const V4Plan& p, int c) {
    if constexpr (KB == KB768<T>::value) {
        if (c == 2) return p.ks[2] == 2 ? setup_one<T, KB, true, 4, 1, 2, B_>(p, c)
                         : p.colsplit ? setup_one<T, KB, true, 4, 1, 1, B_, true>(p, c) : setup_one<T, KB, true, 4, 1, 1, B_>(p, c);
        if (p.ks[c] == 2) return setup_one<T, KB, false, 4, 1, 2, B_>(p, c);
        if (p.xdepth == 8) return p.xgroup == 4 ? setup_one<T, KB, false, 8, 4, 1, B_>(p, c) : setup_one<T, KB, false, 8, 1, 1, B_>(p, c);
        return setup_one<T, KB, false, 4, 1, 1, B_>(p, c);
    } else {
        if (c == 2) return p.colsplit ? setup_one<T, KB, true, 4, 1, 1, B_, true>(p, c) : setup_one<T, KB, true, 4, 1, 1, B_>(p, c);
        return setup_one<T, KB, false, 4, 1, 1, B_>(p, c);
    }
}
template <typename T, int KB>
static int setup_class(const V4Plan& p, int c) {
    return p.w1bulk ? setup_class_b<T, KB, true>(p, c) : setup_class_b<T, KB, false>(p, c);
}

// returns 0 or a CUDA error; fills resident[] (PDL only where a stage's grid fits at once)
template <typename T, int KB>
static int setup_stage(V4Plan& p) {
    int per[3];
    for (int c = 0; c < 3; c++) {
        per[c] = setup_class<T, KB>(p, c);
        if (per[c] < 0) return -per[c];
    }
    for (int s = 0; s < p.nst; s++) p.resident[s] = p.grid[s] <= per[p.cls(s)] * p.sms;
    return 0;
}

template <typename T, int KB>
static cudaError_t run_staged(const V4Plan& p, const void* x, void* y, cudaStream_t st) {
    for (int s = 0; s < p.nst; s++) {
        cudaError_t e = launch_stage<T, KB>(p, s, x, y, st);
        if (e) return e;
    }
    return cudaSuccess;
}

template <typename T, int VPL>
static void run_small(const V4Plan& p, const void* x, void* y, cudaStream_t st) {
    SmallArgs a{x, y, p.w1, p.b1, p.w2, p.B, p.d, p.L};
    const int blocks = (p.B + 3) / 4;
    if (p.small == 2) tiny_kernel<T, VPL><<<p.B, 512, 0, st>>>(a);
    else if (p.spec >= 3) small_kernel<T, VPL, 3><<<blocks, 128, 0, st>>>(a);
    else if (p.spec == 2) small_kernel<T, VPL, 2><<<blocks, 128, 0, st>>>(a);
    else small_kernel<T, VPL, 1><<<blocks, 128, 0, st>>>(a);
}

// k-blocks of 128 bytes per row the staged kernels are built for, by dtype: d = 256, 512, 768, 1024
static int kb_of(int dtype, int d) {
    const int bytes = d * (dtype == 1 ? 2 : 4);
    if (bytes % 128) return 0;
    const int kb = bytes / 128;
    if (dtype == 0 && (kb == 8 || kb == 16 || kb == 24 || kb == 32)) return kb;
    if (dtype == 1 && (kb == 4 || kb == 8 || kb == 12 || kb == 16)) return kb;
    return 0;
}

extern "C" {

// Why v4 cannot run this shape (written to why), 0 if it can.
int fff_v4_supported(int dtype, int d, int dout, int K, int depth, char* why, int n) {
    const char* r = nullptr;
    if (K != 1) r = "more than one tree";
    else if (d != dout) r = "output width differs from input width";
    else if (!kb_of(dtype, d)) r = "width not one of 256, 512, 768, 1024";
    else if (depth + 1 > 4 * MAXST || depth + 1 > 20) r = "tree deeper than 19";
    if (r && why && n > 0) { strncpy(why, r, n - 1); why[n - 1] = 0; }
    return r ? 1 : 0;
}

// Workspace (allocated by the caller): acts (B*L float); for each stage s >= 1, cnt[s] (2^l0[s] ints,
// zero) and slots[s] (2^l0[s] * B ints); done (MAXST ints, zero). Returns a plan, or null (error code in *err).
void* fff_v4_plan(int dtype, int B, int d, int dout, int L, const void* w1, const void* b1, const void* w2,
                  float* acts, int nst, const int* l0, const int* nlev, void* const* cnt, void* const* slots,
                  int* done, int small, int spec, int pdl, int hint0, int hint1, const int* tiles, const int* ks,
                  int xdepth, int xgroup, int w1first, int w1bulk, int colsplit, unsigned long long* trace, int* err) {
    *err = 0;
    if (nst < 1 || nst > MAXST) { *err = -2; return nullptr; }
    for (int c = 0; c < 3; c++)
        if (tiles[c] < 1 || tiles[c] > 4) { *err = -2; return nullptr; }
    V4Plan* p = new V4Plan();
    p->dtype = dtype; p->B = B; p->d = d; p->dout = dout; p->L = L; p->small = small; p->spec = spec;
    p->pdl = pdl; p->hint0 = hint0; p->hint1 = hint1; p->nst = nst;
    const bool k768 = kb_of(dtype, d) == (dtype == 1 ? 12 : 24);
    for (int c = 0; c < 3; c++) { p->tiles[c] = tiles[c]; p->ks[c] = k768 && ks[c] == 2 ? 2 : 1; }
    p->trace = trace; p->w1first = w1first;
    p->xdepth = xdepth == 8 ? 8 : 4; p->xgroup = (xdepth == 8 && xgroup == 4) ? 4 : 1;
    p->w1 = w1; p->b1 = b1; p->w2 = w2; p->acts = acts; p->done = done;
    int dev = 0, major = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&p->sms, cudaDevAttrMultiProcessorCount, dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    // bulk copies need sm_90 and 16-byte aligned sources (rows are multiples of 128 bytes)
    p->w1bulk = w1bulk && major >= 9 && (uintptr_t)w1 % 16 == 0 ? 1 : 0;
    p->colsplit = colsplit && p->ks[2] == 1 ? 1 : 0;
    for (int s = 0; s < nst; s++) {
        const int rpb = 16 * p->tiles[p->cls(s)];
        p->l0[s] = l0[s]; p->nlev[s] = nlev[s];
        p->cnt[s] = static_cast<int*>(cnt[s]); p->slots[s] = static_cast<int*>(slots[s]);
        p->grid[s] = s == 0 ? (B + rpb - 1) / rpb : (B + rpb - 1) / rpb + (1 << l0[s]);
    }
    const int kb = kb_of(dtype, d);
    if (!small) {
        for (int c = 0; c < 3; c++) {
            const int w = p->tiles[c] * p->ks[c];
            p->smem[c] = dtype == 1 ? stage_smem_launch<__nv_bfloat16>(d, w, c == 2, p->w1bulk)
                                    : stage_smem_launch<float>(d, w, c == 2, p->w1bulk);
        }
        int e = 0;
        if (dtype == 0) {
            switch (kb) { case 8: e = setup_stage<float, 8>(*p); break; case 16: e = setup_stage<float, 16>(*p); break;
                          case 24: e = setup_stage<float, 24>(*p); break; case 32: e = setup_stage<float, 32>(*p); break; }
        } else {
            switch (kb) { case 4: e = setup_stage<__nv_bfloat16, 4>(*p); break; case 8: e = setup_stage<__nv_bfloat16, 8>(*p); break;
                          case 12: e = setup_stage<__nv_bfloat16, 12>(*p); break; case 16: e = setup_stage<__nv_bfloat16, 16>(*p); break; }
        }
        if (e) { *err = e; delete p; return nullptr; }
    }
    return p;
}

// pattern 0/1, DEPTH, G as probe_kernel; returns the CUDA error
int fff_v4_probe(int pat, int depth, int g, const void* x, int B, int row_bytes, int rpw, unsigned* out, void* stream) {
    cudaStream_t st = (cudaStream_t)stream;
    const unsigned char* xp = static_cast<const unsigned char*>(x);
    const int warps = pat == 0 ? (B + 15) / 16 : (B + rpw - 1) / rpw, blocks = (warps + 3) / 4;
    if (pat == 0) {
        if (depth == 8 && g == 4) probe_kernel<8, 4, 0><<<blocks, 128, 0, st>>>(xp, B, row_bytes, rpw, out);
        else if (depth == 8) probe_kernel<8, 1, 0><<<blocks, 128, 0, st>>>(xp, B, row_bytes, rpw, out);
        else if (depth == 2) probe_kernel<2, 1, 0><<<blocks, 128, 0, st>>>(xp, B, row_bytes, rpw, out);
        else probe_kernel<4, 1, 0><<<blocks, 128, 0, st>>>(xp, B, row_bytes, rpw, out);
    } else {
        if (depth == 32) probe_kernel<32, 1, 1><<<blocks, 128, 0, st>>>(xp, B, row_bytes, rpw, out);
        else if (depth == 8) probe_kernel<8, 1, 1><<<blocks, 128, 0, st>>>(xp, B, row_bytes, rpw, out);
        else probe_kernel<16, 1, 1><<<blocks, 128, 0, st>>>(xp, B, row_bytes, rpw, out);
    }
    return (int)cudaGetLastError();
}

// write probe: pieces 1 = piece-major order, 0 = whole rows; rows = B row indices; returns the CUDA error
int fff_v4_wprobe(int pieces, void* y, const int* rows, int B, int row_bytes, void* stream) {
    cudaStream_t st = (cudaStream_t)stream;
    const int blocks = (B + 63) / 64;
    if (pieces) wprobe_kernel<true><<<blocks, 128, 0, st>>>(static_cast<uint4*>(y), rows, B, row_bytes);
    else wprobe_kernel<false><<<blocks, 128, 0, st>>>(static_cast<uint4*>(y), rows, B, row_bytes);
    return (int)cudaGetLastError();
}

void fff_v4_free(void* plan) { delete static_cast<V4Plan*>(plan); }

// What a plan applies of the options asked for: bit 0 = W1 by bulk copy, bit 1 = column-split output
int fff_v4_plan_flags(void* plan) {
    const V4Plan& p = *static_cast<V4Plan*>(plan);
    return (p.w1bulk ? 1 : 0) | (p.colsplit ? 2 : 0);
}

int fff_v4_run(void* plan, const void* x, void* y, void* stream) {
    const V4Plan& p = *static_cast<V4Plan*>(plan);
    cudaStream_t st = (cudaStream_t)stream;
    if (((uintptr_t)x | (uintptr_t)y) % 16) return -1;
    cudaError_t e = cudaSuccess;
    const int kb = kb_of(p.dtype, p.d);
    if (p.small) {
        const int vpl = kb / 4;  // 16-byte vectors per lane: d * size / (32 * 16) = kb * 128 / 512
        if (p.dtype == 0) {
            switch (vpl) { case 2: run_small<float, 2>(p, x, y, st); break; case 4: run_small<float, 4>(p, x, y, st); break;
                           case 6: run_small<float, 6>(p, x, y, st); break; case 8: run_small<float, 8>(p, x, y, st); break; }
        } else {
            switch (vpl) { case 1: run_small<__nv_bfloat16, 1>(p, x, y, st); break; case 2: run_small<__nv_bfloat16, 2>(p, x, y, st); break;
                           case 3: run_small<__nv_bfloat16, 3>(p, x, y, st); break; case 4: run_small<__nv_bfloat16, 4>(p, x, y, st); break; }
        }
        e = cudaGetLastError();
    } else if (p.dtype == 0) {
        switch (kb) { case 8: e = run_staged<float, 8>(p, x, y, st); break; case 16: e = run_staged<float, 16>(p, x, y, st); break;
                      case 24: e = run_staged<float, 24>(p, x, y, st); break; case 32: e = run_staged<float, 32>(p, x, y, st); break; }
    } else {
        switch (kb) { case 4: e = run_staged<__nv_bfloat16, 4>(p, x, y, st); break; case 8: e = run_staged<__nv_bfloat16, 8>(p, x, y, st); break;
                      case 12: e = run_staged<__nv_bfloat16, 12>(p, x, y, st); break; case 16: e = run_staged<__nv_bfloat16, 16>(p, x, y, st); break; }
    }
    if (!e) e = cudaGetLastError();
    return (int)e;
}

}  // extern "C"
