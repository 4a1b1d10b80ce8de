// fffbench CUDA kernels: the paper's naive level (one thread per row) and an optimized FFF.
//
// Semantics (every kernel): heap-ordered trees, node n has children 2n+1 (left) and 2n+2 (right),
// z = x . W1[n] + b1[n], y += GELU(z) W2[n], go right iff z > 0, exact erf GELU, sum over trees.
//
// Optimized FFF, in three launches (all graph-capturable, no host sync, no allocation):
//   1. route:   one warp per row walks the top `split` levels (x row held in registers, 16-byte
//               loads), stores each visited (node, activation) and counts rows per subtree;
//   2. scatter: counting sort of rows by their subtree at level `split` (MoE-style token sort);
//   3. deep:    rows in sorted order, so a block's rows share a subtree and its weights stay in
//               L1/L2; one warp per row walks the remaining levels, then accumulates the output
//               as an embedding bag y = sum_i a_i W2[n_i] and writes it with streaming stores.
// Storage dtype T is float or bf16; every dot and sum accumulates in fp32.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>

#define FULL 0xffffffffu

__device__ __forceinline__ float gelu(float z) { return 0.5f * z * (1.0f + erff(z * 0.70710678118654752440f)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

template <typename T> __device__ __forceinline__ float tof(T v);
template <> __device__ __forceinline__ float tof<float>(float v) { return v; }
template <> __device__ __forceinline__ float tof<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T fromf(float v);
template <> __device__ __forceinline__ float fromf<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 fromf<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// 16-byte vectors: 4 floats or 8 bf16
template <typename T> struct Vec;
template <> struct Vec<float> {
    static constexpr int N = 4;
    __device__ __forceinline__ static void load(const float* p, float* o) {
        float4 v = __ldg(reinterpret_cast<const float4*>(p));
        o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
    }
    __device__ __forceinline__ static void load_plain(const float* p, float* o) {  // shared memory
        float4 v = *reinterpret_cast<const float4*>(p);
        o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
    }
    __device__ __forceinline__ static void load_stream(const float* p, float* o) {
        float4 v = __ldcs(reinterpret_cast<const float4*>(p));
        o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
    }
    __device__ __forceinline__ static void store(float* p, const float* i) {
        __stcs(reinterpret_cast<float4*>(p), make_float4(i[0], i[1], i[2], i[3]));
    }
};
template <> struct Vec<__nv_bfloat16> {
    static constexpr int N = 8;
    __device__ __forceinline__ static void unpack(uint4 u, float* o) {
        const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
        for (int i = 0; i < 4; i++) { float2 f = __bfloat1622float2(h[i]); o[2 * i] = f.x; o[2 * i + 1] = f.y; }
    }
    __device__ __forceinline__ static void load(const __nv_bfloat16* p, float* o) {
        unpack(__ldg(reinterpret_cast<const uint4*>(p)), o);
    }
    __device__ __forceinline__ static void load_plain(const __nv_bfloat16* p, float* o) {  // shared memory
        unpack(*reinterpret_cast<const uint4*>(p), o);
    }
    __device__ __forceinline__ static void load_stream(const __nv_bfloat16* p, float* o) {
        unpack(__ldcs(reinterpret_cast<const uint4*>(p)), o);
    }
    __device__ __forceinline__ static void store(__nv_bfloat16* p, const float* i) {
        uint4 u;
        __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
        for (int k = 0; k < 4; k++) h[k] = __floats2bfloat162_rn(i[2 * k], i[2 * k + 1]);
        __stcs(reinterpret_cast<uint4*>(p), u);
    }
};

// ------------------------------------------------------------------------------------------
// Naive level: one thread per row (the paper's CUDA level), fp32, with bounds checks.
// ------------------------------------------------------------------------------------------
// One thread per row, looping over neurons: a dot over the row, GELU, then an axpy into the row's
// output in global memory, as the paper's reference kernel does (with a bounds check, and y
// zeroed by the kernel). Kept naive on purpose: it is the paper's level, not a dense baseline.
__global__ void ff_naive_kernel(const float* __restrict__ x, const float* __restrict__ w1,
                                const float* __restrict__ b1, const float* __restrict__ w2,
                                float* __restrict__ y, int B, int d, int H, int dout) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= B) return;
    const float* xr = x + (size_t)r * d;
    float* yr = y + (size_t)r * dout;
    for (int j = 0; j < dout; j++) yr[j] = 0.f;
    for (int h = 0; h < H; h++) {
        float z = b1[h];
        const float* w = w1 + (size_t)h * d;
        for (int i = 0; i < d; i++) z += xr[i] * w[i];
        const float a = gelu(z);
        const float* v = w2 + (size_t)h * dout;
        for (int j = 0; j < dout; j++) yr[j] += a * v[j];
    }
}

__global__ void fff_naive_kernel(const float* __restrict__ x, const float* __restrict__ w1,
                                 const float* __restrict__ b1, const float* __restrict__ w2,
                                 float* __restrict__ y, int B, int d, int dout, int K, int depth) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= B) return;
    const long long N = (2LL << depth) - 1;
    const float* xr = x + (size_t)r * d;
    float* yr = y + (size_t)r * dout;
    for (int j = 0; j < dout; j++) yr[j] = 0.f;
    for (int k = 0; k < K; k++) {
        long long n = 0;
        for (int l = 0; l <= depth; l++) {
            long long g = k * N + n;
            float z = b1[g];
            const float* w = w1 + (size_t)g * d;
            for (int i = 0; i < d; i++) z += xr[i] * w[i];
            float a = gelu(z);
            const float* v = w2 + (size_t)g * dout;
            for (int j = 0; j < dout; j++) yr[j] += a * v[j];
            n = 2 * n + 1 + (z > 0.f);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Optimized FFF
// ------------------------------------------------------------------------------------------
struct Fff {
    const void* x; const void* w1; const void* b1; const void* w2; void* y;
    int B, d, dout, K, L, split;       // L = depth + 1 levels; route does levels [0, split)
    long long N;                      // nodes per tree
    float* acts; int* nodes;          // (B, K, L) visited activations and nodes
    int* next;                        // (B, K) node at level `split`
    int* counts; int* cursor; int* perm;
    int* offsets;                     // (nbuckets + 1) bucket starts in perm, written by scatter
    int nbuckets, rows_per_block;
    int staged;                       // route: top levels held in shared memory
    int mode;                         // 0 = v2 (shared-memory staging where it fits), 1 = v1, 2 = v3
    int R;                            // v3: rows per warp (1, 2 or 4)
};

// x row in registers: VPL vectors of Vec<T>::N elements per lane (lane-interleaved, coalesced)
// `last_use`: evict-first loads (the deep kernel's read is x's last); the route kernel's read keeps
// x in L2 for the deep kernel.
template <typename T, int VPL, bool last_use>
__device__ __forceinline__ void load_row(const T* row, float* xr, int lane) {
#pragma unroll
    for (int v = 0; v < VPL; v++) {
        if (last_use) Vec<T>::load_stream(row + (v * 32 + lane) * Vec<T>::N, xr + v * Vec<T>::N);
        else Vec<T>::load(row + (v * 32 + lane) * Vec<T>::N, xr + v * Vec<T>::N);
    }
}

// SMEM: the weight row lives in shared memory (plain loads; __ldg is for global memory only)
template <typename T, int VPL, bool SMEM = false>
__device__ __forceinline__ float row_dot(const T* w, const float* xr, int lane) {
    float acc = 0.f;
#pragma unroll
    for (int v = 0; v < VPL; v++) {
        float wv[Vec<T>::N];
        if (SMEM) Vec<T>::load_plain(w + (v * 32 + lane) * Vec<T>::N, wv);
        else Vec<T>::load(w + (v * 32 + lane) * Vec<T>::N, wv);
#pragma unroll
        for (int e = 0; e < Vec<T>::N; e++) acc = fmaf(xr[v * Vec<T>::N + e], wv[e], acc);
    }
    return warp_sum(acc);
}

template <typename T, int VPL, bool SMEM = false>
__device__ __forceinline__ void row_axpy(const T* w, float a, float* acc, int lane) {
#pragma unroll
    for (int v = 0; v < VPL; v++) {
        float wv[Vec<T>::N];
        if (SMEM) Vec<T>::load_plain(w + (v * 32 + lane) * Vec<T>::N, wv);
        else Vec<T>::load(w + (v * 32 + lane) * Vec<T>::N, wv);
#pragma unroll
        for (int e = 0; e < Vec<T>::N; e++) acc[v * Vec<T>::N + e] = fmaf(a, wv[e], acc[v * Vec<T>::N + e]);
    }
}

template <typename T, int VPL>
__global__ void __launch_bounds__(256) fff_route_kernel(Fff p) {
    const int lane = threadIdx.x & 31;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int nwarps = (gridDim.x * blockDim.x) >> 5;
    const T* x = static_cast<const T*>(p.x);
    const T* w1 = static_cast<const T*>(p.w1);
    const T* b1 = static_cast<const T*>(p.b1);
    const int first = (1 << p.split) - 1;
    float xr[VPL * Vec<T>::N];
    for (int r = warp; r < p.B; r += nwarps) {
        load_row<T, VPL, false>(x + (size_t)r * p.d, xr, lane);
        for (int k = 0; k < p.K; k++) {
            long long n = 0;
            for (int l = 0; l < p.split; l++) {
                long long g = k * p.N + n;
                float z = row_dot<T, VPL>(w1 + (size_t)g * p.d, xr, lane) + tof(b1[g]);
                if (lane == 0) {
                    size_t o = ((size_t)r * p.K + k) * p.L + l;
                    p.acts[o] = gelu(z);
                    p.nodes[o] = (int)n;
                }
                n = 2 * n + 1 + (z > 0.f);
            }
            if (lane == 0) {
                p.next[(size_t)r * p.K + k] = (int)n;
                if (k == 0 && p.perm) atomicAdd(&p.counts[n - first], 1);
            }
        }
    }
}

// counting sort of rows by subtree: each block scans the (few) bucket counts itself
__global__ void fff_scatter_kernel(Fff p) {
    extern __shared__ int offs[];
    if (threadIdx.x == 0) {
        int s = 0;
        for (int b = 0; b < p.nbuckets; b++) { offs[b] = s; s += p.counts[b]; }
        if (blockIdx.x == 0) {
            for (int b = 0; b < p.nbuckets; b++) p.offsets[b] = offs[b];
            p.offsets[p.nbuckets] = s;
        }
    }
    __syncthreads();
    const int first = (1 << p.split) - 1;
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < p.B; r += gridDim.x * blockDim.x) {
        int b = p.next[(size_t)r * p.K] - first;
        p.perm[offs[b] + atomicAdd(&p.cursor[b], 1)] = r;
    }
}

template <typename T, int VPL>
__global__ void __launch_bounds__(256) fff_deep_kernel(Fff p) {
    const int lane = threadIdx.x & 31;
    const int wib = threadIdx.x >> 5, wpb = blockDim.x >> 5;
    const T* x = static_cast<const T*>(p.x);
    const T* w1 = static_cast<const T*>(p.w1);
    const T* b1 = static_cast<const T*>(p.b1);
    const T* w2 = static_cast<const T*>(p.w2);
    T* y = static_cast<T*>(p.y);
    if (p.perm && blockIdx.x == 0)  // the sort is finished (stream order): reset it for the next call
        for (int t = threadIdx.x; t < p.nbuckets; t += blockDim.x) { p.counts[t] = 0; p.cursor[t] = 0; }
    const int begin = blockIdx.x * p.rows_per_block;
    const int end = min(p.B, begin + p.rows_per_block);
    float xr[VPL * Vec<T>::N];
    float acc[VPL * Vec<T>::N];
    for (int i = begin + wib; i < end; i += wpb) {
        const int r = p.perm ? p.perm[i] : i;
        const bool deep = p.split < p.L;
        if (deep) load_row<T, VPL, true>(x + (size_t)r * p.d, xr, lane);
#pragma unroll
        for (int e = 0; e < VPL * Vec<T>::N; e++) acc[e] = 0.f;
        for (int k = 0; k < p.K; k++) {
            for (int l = 0; l < p.split; l++) {
                size_t o = ((size_t)r * p.K + k) * p.L + l;
                row_axpy<T, VPL>(w2 + ((size_t)(k * p.N + p.nodes[o])) * p.dout, p.acts[o], acc, lane);
            }
            long long n = p.split ? p.next[(size_t)r * p.K + k] : 0;
            for (int l = p.split; l < p.L; l++) {
                long long g = k * p.N + n;
                float z = row_dot<T, VPL>(w1 + (size_t)g * p.d, xr, lane) + tof(b1[g]);
                row_axpy<T, VPL>(w2 + (size_t)g * p.dout, gelu(z), acc, lane);
                n = 2 * n + 1 + (z > 0.f);
            }
        }
        T* yr = y + (size_t)r * p.dout;
#pragma unroll
        for (int v = 0; v < VPL; v++) Vec<T>::store(yr + (v * 32 + lane) * Vec<T>::N, acc + v * Vec<T>::N);
    }
}

// ------------------------------------------------------------------------------------------
// v3: R rows per warp in lockstep, four launches (walk top, sort, walk deep, embedding bag).
// A warp carries R independent dependency chains (R dots in flight instead of one), and where
// its R rows stand on the same node (always at the root and on the shared top path of a sorted
// bucket) one 16-byte weight load feeds R rows, cutting on-chip load traffic.
// ------------------------------------------------------------------------------------------
template <typename T, int VPL> struct Row { static constexpr int E = VPL * Vec<T>::N; };

// z[q] = x_q . w1[g[q]] + b1[g[q]] for R rows; two partial sums per row halve the FMA chain
template <typename T, int VPL, int R>
__device__ __forceinline__ void dots_r(const T* w1, const T* b1, const long long* g, int d,
                                       const float (&xr)[R][Row<T, VPL>::E], float* z, int lane) {
    constexpr int N = Vec<T>::N;
    bool same = true;
#pragma unroll
    for (int q = 1; q < R; q++) same &= g[q] == g[0];
    float s0[R], s1[R];
#pragma unroll
    for (int q = 0; q < R; q++) { s0[q] = 0.f; s1[q] = 0.f; }
    if (same) {
        const T* w = w1 + (size_t)g[0] * d;
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            float wv[N];
            Vec<T>::load(w + (v * 32 + lane) * N, wv);
#pragma unroll
            for (int q = 0; q < R; q++)
#pragma unroll
                for (int e = 0; e < N; e += 2) {
                    s0[q] = fmaf(xr[q][v * N + e], wv[e], s0[q]);
                    s1[q] = fmaf(xr[q][v * N + e + 1], wv[e + 1], s1[q]);
                }
        }
    } else {
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            float wv[R][N];
#pragma unroll
            for (int q = 0; q < R; q++) Vec<T>::load(w1 + (size_t)g[q] * d + (v * 32 + lane) * N, wv[q]);
#pragma unroll
            for (int q = 0; q < R; q++)
#pragma unroll
                for (int e = 0; e < N; e += 2) {
                    s0[q] = fmaf(xr[q][v * N + e], wv[q][e], s0[q]);
                    s1[q] = fmaf(xr[q][v * N + e + 1], wv[q][e + 1], s1[q]);
                }
        }
    }
    float s[R];
#pragma unroll
    for (int q = 0; q < R; q++) s[q] = s0[q] + s1[q];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
#pragma unroll
        for (int q = 0; q < R; q++) s[q] += __shfl_xor_sync(FULL, s[q], o);
#pragma unroll
    for (int q = 0; q < R; q++) z[q] = s[q] + tof(b1[g[q]]);
}

// acc_q += a[q] * w2[g[q]] for R rows
template <typename T, int VPL, int R>
__device__ __forceinline__ void axpys_r(const T* w2, const long long* g, const float* a, int dout,
                                        float (&acc)[R][Row<T, VPL>::E], int lane) {
    constexpr int N = Vec<T>::N;
    bool same = true;
#pragma unroll
    for (int q = 1; q < R; q++) same &= g[q] == g[0];
    if (same) {
        const T* w = w2 + (size_t)g[0] * dout;
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            float wv[N];
            Vec<T>::load(w + (v * 32 + lane) * N, wv);
#pragma unroll
            for (int q = 0; q < R; q++)
#pragma unroll
                for (int e = 0; e < N; e++) acc[q][v * N + e] = fmaf(a[q], wv[e], acc[q][v * N + e]);
        }
    } else {
#pragma unroll
        for (int v = 0; v < VPL; v++) {
            float wv[R][N];
#pragma unroll
            for (int q = 0; q < R; q++) Vec<T>::load(w2 + (size_t)g[q] * dout + (v * 32 + lane) * N, wv[q]);
#pragma unroll
            for (int q = 0; q < R; q++)
#pragma unroll
                for (int e = 0; e < N; e++) acc[q][v * N + e] = fmaf(a[q], wv[q][e], acc[q][v * N + e]);
        }
    }
}

// the warp's R rows: consecutive positions in (sorted) order; a short last group repeats its
// first row (computed, never stored)
template <int R>
__device__ __forceinline__ int group_rows(const Fff& p, const int* order, int i0, int* r, bool* valid) {
#pragma unroll
    for (int q = 0; q < R; q++) {
        valid[q] = i0 + q < p.B;
        const int i = valid[q] ? i0 + q : i0;
        r[q] = order ? order[i] : i;
    }
    return 0;
}

// Walk levels [l0, l1) of every tree: dots only, storing each visited (node, activation).
// Top walk (l0 = 0): rows in batch order, counts rows per subtree at level l1 for the sort.
// Deep walk: rows in sorted order, starting from the node the top walk reached.
template <typename T, int VPL, int R>
__global__ void __launch_bounds__(256) fff_walk_kernel(Fff p, int l0, int l1, const int* order, int count) {
    constexpr int E = Row<T, VPL>::E;
    const int lane = threadIdx.x & 31;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int i0 = warp * R;
    if (i0 >= p.B) return;
    const T* x = static_cast<const T*>(p.x);
    const T* w1 = static_cast<const T*>(p.w1);
    const T* b1 = static_cast<const T*>(p.b1);
    int r[R]; bool valid[R];
    group_rows<R>(p, order, i0, r, valid);
    float xr[R][E];
#pragma unroll
    for (int q = 0; q < R; q++) {
        if (l1 < p.L) load_row<T, VPL, false>(x + (size_t)r[q] * p.d, xr[q], lane);
        else load_row<T, VPL, true>(x + (size_t)r[q] * p.d, xr[q], lane);
    }
    const int first = (1 << l1) - 1;
    for (int k = 0; k < p.K; k++) {
        long long n[R], g[R];
        float z[R];
#pragma unroll
        for (int q = 0; q < R; q++) n[q] = l0 ? p.next[(size_t)r[q] * p.K + k] : 0;
        for (int l = l0; l < l1; l++) {
#pragma unroll
            for (int q = 0; q < R; q++) g[q] = k * p.N + n[q];
            dots_r<T, VPL, R>(w1, b1, g, p.d, xr, z, lane);
#pragma unroll
            for (int q = 0; q < R; q++) {
                if (lane == q && valid[q]) {
                    size_t o = ((size_t)r[q] * p.K + k) * p.L + l;
                    p.acts[o] = gelu(z[q]);
                    p.nodes[o] = (int)n[q];
                }
                n[q] = 2 * n[q] + 1 + (z[q] > 0.f);
            }
        }
        if (count) {
#pragma unroll
            for (int q = 0; q < R; q++)
                if (lane == q && valid[q]) {
                    p.next[(size_t)r[q] * p.K + k] = (int)n[q];
                    if (k == 0 && p.perm) atomicAdd(&p.counts[n[q] - first], 1);
                }
        }
    }
}

// y_r = sum over the visited nodes of a_i W2[n_i], R rows per warp (sorted: the top path is shared)
template <typename T, int VPL, int R>
__global__ void __launch_bounds__(256) fff_bag_kernel(Fff p, const int* order) {
    constexpr int E = Row<T, VPL>::E;
    const int lane = threadIdx.x & 31;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int i0 = warp * R;
    if (blockIdx.x == 0 && p.perm)  // the sort is finished (stream order): reset it for the next call
        for (int t = threadIdx.x; t < p.nbuckets; t += blockDim.x) { p.counts[t] = 0; p.cursor[t] = 0; }
    if (i0 >= p.B) return;
    const T* w2 = static_cast<const T*>(p.w2);
    T* y = static_cast<T*>(p.y);
    int r[R]; bool valid[R];
    group_rows<R>(p, order, i0, r, valid);
    float acc[R][E];
#pragma unroll
    for (int q = 0; q < R; q++)
#pragma unroll
        for (int e = 0; e < E; e++) acc[q][e] = 0.f;
    for (int k = 0; k < p.K; k++)
        for (int l = 0; l < p.L; l++) {
            long long g[R]; float a[R];
#pragma unroll
            for (int q = 0; q < R; q++) {
                size_t o = ((size_t)r[q] * p.K + k) * p.L + l;
                g[q] = k * p.N + p.nodes[o];
                a[q] = p.acts[o];
            }
            axpys_r<T, VPL, R>(w2, g, a, p.dout, acc, lane);
        }
#pragma unroll
    for (int q = 0; q < R; q++)
        if (valid[q]) {
            T* yr = y + (size_t)r[q] * p.dout;
#pragma unroll
            for (int v = 0; v < VPL; v++) Vec<T>::store(yr + (v * 32 + lane) * Vec<T>::N, acc[q] + v * Vec<T>::N);
        }
}

template <typename T, int VPL, int R>
static void launch_v3(Fff& p, cudaStream_t s) {
    const int blocks = (p.B + 8 * R - 1) / (8 * R);
    if (p.split > 0) {
        fff_walk_kernel<T, VPL, R><<<blocks, 256, 0, s>>>(p, 0, p.split, nullptr, 1);
        if (p.perm) fff_scatter_kernel<<<(p.B + 255) / 256, 256, p.nbuckets * sizeof(int), s>>>(p);
    }
    if (p.split < p.L) fff_walk_kernel<T, VPL, R><<<blocks, 256, 0, s>>>(p, p.split, p.L, p.perm, 0);
    fff_bag_kernel<T, VPL, R><<<blocks, 256, 0, s>>>(p, p.perm);
}

// copy `rows` rows of width d (16-byte multiple) from global to shared memory with all threads
template <typename T>
__device__ __forceinline__ void stage_rows(T* dst, const T* src, int rows, int d) {
    const int n16 = rows * d * (int)sizeof(T) / 16;
    const uint4* s = reinterpret_cast<const uint4*>(src);
    uint4* t = reinterpret_cast<uint4*>(dst);
    for (int i = threadIdx.x; i < n16; i += blockDim.x) t[i] = __ldg(s + i);
}

// Route with the top `staged` levels of tree 0 in shared memory (persistent blocks, one per SM):
// every row of the batch reads those nodes, so they are loaded from L2 once per block, not per row.
template <typename T, int VPL>
__global__ void __launch_bounds__(1024, 1) fff_route_staged_kernel(Fff p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* sw1 = reinterpret_cast<T*>(smem_raw);
    const int top = (1 << p.staged) - 1;
    float* sb1 = reinterpret_cast<float*>(sw1 + (size_t)top * p.d);
    const T* x = static_cast<const T*>(p.x);
    const T* w1 = static_cast<const T*>(p.w1);
    const T* b1 = static_cast<const T*>(p.b1);
    stage_rows<T>(sw1, w1, top, p.d);
    for (int i = threadIdx.x; i < top; i += blockDim.x) sb1[i] = tof(b1[i]);
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int nwarps = (gridDim.x * blockDim.x) >> 5;
    const int first = (1 << p.split) - 1;
    float xr[VPL * Vec<T>::N];
    for (int r = warp; r < p.B; r += nwarps) {
        load_row<T, VPL, false>(x + (size_t)r * p.d, xr, lane);
        int n = 0;
        for (int l = 0; l < p.split; l++) {
            float z = n < top ? row_dot<T, VPL, true>(sw1 + (size_t)n * p.d, xr, lane) + sb1[n]
                              : row_dot<T, VPL>(w1 + (size_t)n * p.d, xr, lane) + tof(b1[n]);
            if (lane == 0) {
                size_t o = (size_t)r * p.L + l;
                p.acts[o] = gelu(z);
                p.nodes[o] = n;
            }
            n = 2 * n + 1 + (z > 0.f);
        }
        if (lane == 0) {
            p.next[r] = n;
            atomicAdd(&p.counts[n - first], 1);
        }
    }
}

// Deep levels with one block per subtree bucket: the bucket's top-path W2 rows and its subtree's
// W1, b1 and W2 rows are staged in shared memory once, then every row of the bucket walks and
// accumulates from shared memory. Single tree only (the host falls back otherwise).
template <typename T, int VPL>
__global__ void __launch_bounds__(512, 1) fff_deep_staged_kernel(Fff p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int b = blockIdx.x;
    const int s = p.split, sub_levels = p.L - s, sub_nodes = (1 << sub_levels) - 1;
    T* stop = reinterpret_cast<T*>(smem_raw);                  // s top-path W2 rows
    T* sw1 = stop + (size_t)s * p.dout;                          // subtree W1 rows
    T* sw2 = sw1 + (size_t)sub_nodes * p.d;                      // subtree W2 rows
    float* sb1 = reinterpret_cast<float*>(sw2 + (size_t)sub_nodes * p.dout);
    const T* x = static_cast<const T*>(p.x);
    const T* w1 = static_cast<const T*>(p.w1);
    const T* b1 = static_cast<const T*>(p.b1);
    const T* w2 = static_cast<const T*>(p.w2);
    T* y = static_cast<T*>(p.y);
    const int root = (1 << s) - 1 + b;
    // top path: ancestors of the subtree root, level s-1 up to 0
    {
        int n = root;
        for (int l = s - 1; l >= 0; l--) {
            n = (n - 1) >> 1;
            stage_rows<T>(stop + (size_t)l * p.dout, w2 + (size_t)n * p.dout, 1, p.dout);
        }
    }
    for (int j = 0; j < sub_levels; j++) {  // subtree level j: 2^j consecutive global nodes
        const int g0 = ((root + 1) << j) - 1, m0 = (1 << j) - 1;
        stage_rows<T>(sw1 + (size_t)m0 * p.d, w1 + (size_t)g0 * p.d, 1 << j, p.d);
        stage_rows<T>(sw2 + (size_t)m0 * p.dout, w2 + (size_t)g0 * p.dout, 1 << j, p.dout);
        for (int i = threadIdx.x; i < (1 << j); i += blockDim.x) sb1[m0 + i] = tof(b1[g0 + i]);
    }
    __syncthreads();
    if (b == 0)  // the sort is finished (stream order): reset it for the next call
        for (int t = threadIdx.x; t < p.nbuckets; t += blockDim.x) { p.counts[t] = 0; p.cursor[t] = 0; }
    const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5, wpb = blockDim.x >> 5;
    const int begin = p.offsets[b], end = p.offsets[b + 1];
    float xr[VPL * Vec<T>::N];
    float acc[VPL * Vec<T>::N];
    for (int i = begin + wib; i < end; i += wpb) {
        const int r = p.perm[i];
        load_row<T, VPL, true>(x + (size_t)r * p.d, xr, lane);
#pragma unroll
        for (int e = 0; e < VPL * Vec<T>::N; e++) acc[e] = 0.f;
        for (int l = 0; l < s; l++)
            row_axpy<T, VPL, true>(stop + (size_t)l * p.dout, p.acts[(size_t)r * p.L + l], acc, lane);
        int m = 0;
        for (int l = s; l < p.L; l++) {
            float z = row_dot<T, VPL, true>(sw1 + (size_t)m * p.d, xr, lane) + sb1[m];
            row_axpy<T, VPL, true>(sw2 + (size_t)m * p.dout, gelu(z), acc, lane);
            m = 2 * m + 1 + (z > 0.f);
        }
        T* yr = y + (size_t)r * p.dout;
#pragma unroll
        for (int v = 0; v < VPL; v++) Vec<T>::store(yr + (v * 32 + lane) * Vec<T>::N, acc + v * Vec<T>::N);
    }
}

// generic shapes (any width, any output width): warp per row, columns strided over lanes
template <typename T>
__global__ void fff_generic_kernel(Fff p) {
    const int lane = threadIdx.x & 31;
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int nwarps = (gridDim.x * blockDim.x) >> 5;
    const T* x = static_cast<const T*>(p.x);
    const T* w1 = static_cast<const T*>(p.w1);
    const T* b1 = static_cast<const T*>(p.b1);
    const T* w2 = static_cast<const T*>(p.w2);
    T* y = static_cast<T*>(p.y);
    for (int r = warp; r < p.B; r += nwarps) {
        const T* xr = x + (size_t)r * p.d;
        for (int k = 0; k < p.K; k++) {
            long long n = 0;
            for (int l = 0; l < p.L; l++) {
                long long g = k * p.N + n;
                float acc = 0.f;
                for (int c = lane; c < p.d; c += 32) acc = fmaf(tof(xr[c]), tof(w1[(size_t)g * p.d + c]), acc);
                float z = warp_sum(acc) + tof(b1[g]);
                if (lane == 0) {
                    size_t o = ((size_t)r * p.K + k) * p.L + l;
                    p.acts[o] = gelu(z);
                    p.nodes[o] = (int)g;
                }
                n = 2 * n + 1 + (z > 0.f);
            }
        }
        __syncwarp();
        const size_t base = (size_t)r * p.K * p.L;
        for (int c = lane; c < p.dout; c += 32) {
            float acc = 0.f;
            for (int i = 0; i < p.K * p.L; i++) acc = fmaf(p.acts[base + i], tof(w2[(size_t)p.nodes[base + i] * p.dout + c]), acc);
            y[(size_t)r * p.dout + c] = fromf<T>(acc);
        }
    }
}

static int g_smem_max = 0;

// shared memory (bytes) the staged kernels need, or 0 where they don't apply
template <typename T>
static size_t route_smem(const Fff& p, int staged) {
    return staged > 0 ? ((size_t)((1 << staged) - 1)) * (p.d * sizeof(T) + sizeof(float)) : 0;
}
template <typename T>
static size_t deep_smem(const Fff& p) {
    const size_t sub = (1u << (p.L - p.split)) - 1;
    return (size_t)p.split * p.dout * sizeof(T) + sub * (p.d + p.dout) * sizeof(T) + sub * sizeof(float);
}

template <typename T, int VPL>
static void launch_fast(Fff& p, cudaStream_t s) {
    if (p.mode == 2) {
        if (p.R >= 4) launch_v3<T, VPL, 4>(p, s);
        else if (p.R == 2) launch_v3<T, VPL, 2>(p, s);
        else launch_v3<T, VPL, 1>(p, s);
        return;
    }
    if (!g_smem_max) {
        int dev; cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&g_smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    }
    int sms = 0, dev = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    const bool single = p.K == 1;
    if (p.split > 0) {
        int staged = 0;
        if (single && p.mode != 1)
            for (int t = p.split; t > 0; t--) if (route_smem<T>(p, t) <= (size_t)g_smem_max) { staged = t; break; }
        if (staged > 0) {
            p.staged = staged;
            size_t bytes = route_smem<T>(p, staged);
            cudaFuncSetAttribute(fff_route_staged_kernel<T, VPL>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
            fff_route_staged_kernel<T, VPL><<<sms, 1024, bytes, s>>>(p);
        } else {
            fff_route_kernel<T, VPL><<<(p.B + 7) / 8, 256, 0, s>>>(p);
        }
        if (p.perm) fff_scatter_kernel<<<(p.B + 255) / 256, 256, p.nbuckets * sizeof(int), s>>>(p);
    }
    const size_t dbytes = deep_smem<T>(p);
    if (p.perm && single && p.mode != 1 && dbytes <= (size_t)g_smem_max) {
        cudaFuncSetAttribute(fff_deep_staged_kernel<T, VPL>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dbytes);
        fff_deep_staged_kernel<T, VPL><<<p.nbuckets, 512, dbytes, s>>>(p);
    } else {
        int blocks = (p.B + p.rows_per_block - 1) / p.rows_per_block;
        fff_deep_kernel<T, VPL><<<blocks, 256, 0, s>>>(p);
    }
}

template <typename T>
static int launch_typed(Fff& p, cudaStream_t s) {
    const int per_vec = 32 * Vec<T>::N;
    const bool aligned = ((uintptr_t)p.x % 16 == 0) && ((uintptr_t)p.y % 16 == 0);
    const int vpl = (p.d == p.dout && p.d % per_vec == 0 && aligned) ? p.d / per_vec : 0;
    switch (vpl) {
        case 1: launch_fast<T, 1>(p, s); break;
        case 2: launch_fast<T, 2>(p, s); break;
        case 3: launch_fast<T, 3>(p, s); break;
        case 4: launch_fast<T, 4>(p, s); break;
        case 6: launch_fast<T, 6>(p, s); break;
        case 8: launch_fast<T, 8>(p, s); break;
        default: {
            p.split = p.L; p.perm = nullptr;
            int blocks = (p.B + 7) / 8;
            fff_generic_kernel<T><<<blocks, 256, 0, s>>>(p);
        }
    }
    return vpl;
}

extern "C" {

// returns the CUDA error code of the launches (0 = success)
int ff_naive_launch(const float* x, const float* w1, const float* b1, const float* w2, float* y,
                    int B, int d, int H, int dout, void* stream) {
    ff_naive_kernel<<<(B + 127) / 128, 128, 0, (cudaStream_t)stream>>>(x, w1, b1, w2, y, B, d, H, dout);
    return (int)cudaGetLastError();
}

int fff_naive_launch(const float* x, const float* w1, const float* b1, const float* w2, float* y,
                     int B, int d, int dout, int K, int depth, void* stream) {
    fff_naive_kernel<<<(B + 31) / 32, 32, 0, (cudaStream_t)stream>>>(x, w1, b1, w2, y, B, d, dout, K, depth);
    return (int)cudaGetLastError();
}

// dtype 0 = float32, 1 = bfloat16. Workspace: acts/nodes (B*K*L), next (B*K), counts/cursor
// (2^split, zeroed once by the caller), perm (B), offsets (2^split + 1). split = levels done by
// the route kernel. mode 0 (v2) stages weights in shared memory where they fit, mode 1 (v1) never
// does, mode 2 (v3) walks `rows_per_warp` rows per warp in lockstep.
// Returns the CUDA error code; *fast is set to the vector width used (0 = generic kernel).
int fff_opt_launch(int dtype, const void* x, const void* w1, const void* b1, const void* w2, void* y,
                   int B, int d, int dout, int K, int depth, int split, int rows_per_block,
                   float* acts, int* nodes, int* next, int* counts, int* cursor, int* perm, int* offsets,
                   int mode, int rows_per_warp, int* fast, void* stream) {
    Fff p;
    p.x = x; p.w1 = w1; p.b1 = b1; p.w2 = w2; p.y = y;
    p.B = B; p.d = d; p.dout = dout; p.K = K; p.L = depth + 1;
    p.split = split < p.L ? split : p.L;
    p.N = (2LL << depth) - 1;
    p.acts = acts; p.nodes = nodes; p.next = next; p.counts = counts; p.cursor = cursor;
    p.nbuckets = 1 << p.split;
    p.perm = (p.split > 0 && p.split < p.L) ? perm : nullptr;
    p.rows_per_block = rows_per_block > 0 ? rows_per_block : 64;
    p.offsets = offsets; p.mode = mode; p.staged = 0;
    p.R = rows_per_warp;
    cudaStream_t s = (cudaStream_t)stream;
    *fast = dtype == 1 ? launch_typed<__nv_bfloat16>(p, s) : launch_typed<float>(p, s);
    return (int)cudaGetLastError();
}

}  // extern "C"
