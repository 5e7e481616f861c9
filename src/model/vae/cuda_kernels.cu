// Causal 3-D convolution of the Wan VAE as an implicit GEMM on the tensor
// cores (src/model/vae/cuda_kernels.rs): no im2col buffer, no stacked time
// taps, bias fused, the frames-major layout [B, T, C, H, W] read and written
// directly.
//
//   out[b, t, co, y, x] = bias[co] + sum over (dt, dy, dx, ci) of
//       w[co, dt, dy, dx, ci] * in[b, t + dt, ci, y + dy - pad, x + dx - pad]
//
// (time stride 1; `in` already carries the causal front frames: cache or
// zeros). With `up = 2` the convolution runs over the input upsampled 2x
// (nearest) in space without materialising it: grid position (y, x) reads
// in[.., y / 2, x / 2] (the Wan VAE's upsample-then-3x3-conv resample). As a GEMM: M = output channels, N = output pixels of one frame
// (flattened y * W + x), K = taps * C_in with the input channel fastest, so
// one K block of 32 lies inside one tap. The weight is pre-permuted to
// [C_out, kt, kh, kw, C_in] (row-major [M, K]); the B operand is gathered
// from the input on the fly (zero outside the image).
//
// One block = 8 warps = a 128 (channels) x 128 (pixels) output tile of one
// frame; warp (wm = warp % 4, wn = warp / 4) owns channels 32 wm..+31 and
// pixels 64 wn..+63: 2 x 8 tiles of `mma.sync.m16n8k16` (bf16 in, f32
// accumulate). Per K block of 32 the block stages the weight tile A
// [128][32] and the input tile B^T [128 pixels][32 channels] in shared
// memory (rows padded to 40 bf16 = 80 bytes: conflict-free 16-byte stores
// and 32-bit fragment loads); the next block's global loads are issued into
// registers before the current block's products. Fragment layouts as in
// src/model/flash_attention.cu (groupID g = lane / 4, tig = lane % 4):
//   A (16x16): {r0: row g, k 2tig..+1; r1: row g+8; r2: row g, k 2tig+8..+9; r3: row g+8, k 2tig+8..+9}
//   B (16x8):  {b0: k 2tig..+1, col g; b1: k 2tig+8..+9, col g}
//   C (16x8):  {c0,c1: row g, cols 2tig..+1; c2,c3: row g+8}
//
// Requirements (checked by the caller): C_in % 32 == 0, contiguous inputs,
// 16-byte aligned weight rows (K % 8 == 0, implied).

#include <cuda_bf16.h>
#include <stdint.h>

#define TILE_M 128
#define TILE_N 128
#define TILE_K 32
#define LDS (TILE_K + 8)  // padded shared row, in bf16
#define THREADS 256

__device__ __forceinline__ void mma_bf16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t lds_u32(const __nv_bfloat16* p) {
    return *reinterpret_cast<const uint32_t*>(p);
}

__device__ __forceinline__ uint32_t pack2(__nv_bfloat16 lo, __nv_bfloat16 hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}

// in   [B, t_in, c_in, h, w]            (t_in = t_out + kt - 1)
// wgt  [c_out, kt * kh * kw * c_in]
// bias [c_out]
// out  [B, t_out, c_out, ho, wo]        (ho = up h + 2 pad - kh + 1, same for wo)
// grid (ceil(ho * wo / 128), ceil(c_out / 128), B * t_out)
extern "C" __global__ void __launch_bounds__(THREADS)
causal_conv3d_bf16(const __nv_bfloat16* __restrict__ in, const __nv_bfloat16* __restrict__ wgt,
                   const __nv_bfloat16* __restrict__ bias, __nv_bfloat16* __restrict__ out, int t_in, int t_out,
                   int c_in, int c_out, int h, int w, int ho, int wo, int kt, int kh, int kw, int pad,
                   int up) {
    // One stage (20 KB): a two-stage version (40 KB, one barrier per K
    // block) was no faster on an H100 (131-132 TFLOP/s against 133-143 for
    // this one over two runs); a larger shared carve-out also leaves less L1
    // for the input gathers, which re-read the same pixels for every tap.
    __shared__ __align__(16) __nv_bfloat16 as[TILE_M * LDS];
    __shared__ __align__(16) __nv_bfloat16 bs[TILE_N * LDS];

    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int g = lane >> 2, tig = lane & 3;
    const int wm = warp % 4, wn = warp / 4;

    const int hw_out = ho * wo;
    const int p0 = blockIdx.x * TILE_N;
    const int co0 = blockIdx.y * TILE_M;
    const int frame = blockIdx.z;  // b * t_out + t
    const int b = frame / t_out, t = frame % t_out;
    const size_t hw_in = (size_t)h * w;
    const size_t k_total = (size_t)kt * kh * kw * c_in;
    const int kblocks_per_tap = c_in / TILE_K;
    const int n_kblocks = kt * kh * kw * kblocks_per_tap;

    // B loads: this thread's pixel and its 16 channels of each K block.
    const int my_n = tid % TILE_N;
    const int my_ci = (tid / TILE_N) * 16;
    const int my_p = p0 + my_n;
    const bool my_valid = my_p < hw_out;
    const int my_y = my_valid ? my_p / wo : 0;
    const int my_x = my_valid ? my_p % wo : 0;

    uint4 a_reg[2];
    uint32_t b_reg[8];

    auto load_global = [&](int kb) {
        // A: 128 rows x 4 vectors of 8 bf16.
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int i = tid + j * THREADS;
            const int r = i / 4, c = i % 4;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (co0 + r < c_out) v = *reinterpret_cast<const uint4*>(wgt + (size_t)(co0 + r) * k_total + (size_t)kb * TILE_K + c * 8);
            a_reg[j] = v;
        }
        // B: one pixel, 16 channels of one tap.
        const int tap = kb / kblocks_per_tap;
        const int ci0 = (kb % kblocks_per_tap) * TILE_K + my_ci;
        const int dx = tap % kw, dy = (tap / kw) % kh, dt = tap / (kw * kh);
        const int uy = my_y + dy - pad, ux = my_x + dx - pad;  // on the (upsampled) grid
        const bool inside = my_valid && uy >= 0 && uy < h * up && ux >= 0 && ux < w * up;
        const int iy = uy / up, ix = ux / up;
        const __nv_bfloat16 zero = __ushort_as_bfloat16(0);
        if (inside) {
            const __nv_bfloat16* src =
                in + (((size_t)b * t_in + t + dt) * c_in + ci0) * hw_in + (size_t)iy * w + ix;
#pragma unroll
            for (int j = 0; j < 8; j++) b_reg[j] = pack2(src[(2 * j) * hw_in], src[(2 * j + 1) * hw_in]);
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) b_reg[j] = pack2(zero, zero);
        }
    };
    auto store_shared = [&]() {
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int i = tid + j * THREADS;
            const int r = i / 4, c = i % 4;
            *reinterpret_cast<uint4*>(as + r * LDS + c * 8) = a_reg[j];
        }
        uint4* dst = reinterpret_cast<uint4*>(bs + my_n * LDS + my_ci);
        dst[0] = make_uint4(b_reg[0], b_reg[1], b_reg[2], b_reg[3]);
        dst[1] = make_uint4(b_reg[4], b_reg[5], b_reg[6], b_reg[7]);
    };

    float acc[2][8][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int nj = 0; nj < 8; nj++) acc[mi][nj][0] = acc[mi][nj][1] = acc[mi][nj][2] = acc[mi][nj][3] = 0.f;

    load_global(0);
    store_shared();
    __syncthreads();
    for (int kb = 0; kb < n_kblocks; kb++) {
        const bool more = kb + 1 < n_kblocks;
        if (more) load_global(kb + 1);
#pragma unroll
        for (int ks = 0; ks < TILE_K; ks += 16) {
            uint32_t af[2][4];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                const __nv_bfloat16* ap = as + (wm * 32 + mi * 16 + g) * LDS + ks + 2 * tig;
                af[mi][0] = lds_u32(ap);
                af[mi][1] = lds_u32(ap + 8 * LDS);
                af[mi][2] = lds_u32(ap + 8);
                af[mi][3] = lds_u32(ap + 8 * LDS + 8);
            }
#pragma unroll
            for (int nj = 0; nj < 8; nj++) {
                const __nv_bfloat16* bp = bs + (wn * 64 + nj * 8 + g) * LDS + ks + 2 * tig;
                const uint32_t b0 = lds_u32(bp), b1 = lds_u32(bp + 8);
                mma_bf16(acc[0][nj], af[0], b0, b1);
                mma_bf16(acc[1][nj], af[1], b0, b1);
            }
        }
        __syncthreads();
        if (more) {
            store_shared();
            __syncthreads();
        }
    }

    // Epilogue: + bias, to bf16, out[frame, co, p].
    const bool pairs = (hw_out % 2) == 0;
#pragma unroll
    for (int mi = 0; mi < 2; mi++) {
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int co = co0 + wm * 32 + mi * 16 + g + half * 8;
            if (co >= c_out) continue;
            const float bv = __bfloat162float(bias[co]);
            __nv_bfloat16* orow = out + ((size_t)frame * c_out + co) * hw_out;
#pragma unroll
            for (int nj = 0; nj < 8; nj++) {
                const int p = p0 + wn * 64 + nj * 8 + 2 * tig;
                const float v0 = acc[mi][nj][2 * half] + bv, v1 = acc[mi][nj][2 * half + 1] + bv;
                if (pairs && p + 1 < hw_out) {
                    *reinterpret_cast<__nv_bfloat162*>(orow + p) = __floats2bfloat162_rn(v0, v1);
                } else {
                    if (p < hw_out) orow[p] = __float2bfloat16_rn(v0);
                    if (p + 1 < hw_out) orow[p + 1] = __float2bfloat16_rn(v1);
                }
            }
        }
    }
}

// diffusers WanRMS_norm over the channel axis followed by SiLU, fused:
//   y = silu(x / max(||x||_channels, 1e-12) * scale[c]),  scale = gamma * sqrt(C)
// x, out [frames, c, hw] bf16; scale [c] f32; f32 arithmetic, one rounding.
// One thread per (frame, pixel); consecutive threads read consecutive pixels.
// grid (ceil(hw / 256), frames)
extern "C" __global__ void __launch_bounds__(256)
rms_norm_silu_bf16(const __nv_bfloat16* __restrict__ x, const float* __restrict__ scale,
                   __nv_bfloat16* __restrict__ out, int c, int hw) {
    const int p = blockIdx.x * 256 + threadIdx.x;
    if (p >= hw) return;
    const size_t base = (size_t)blockIdx.y * c * hw + p;
    float ss = 0.f;
    for (int i = 0; i < c; i++) {
        const float v = __bfloat162float(x[base + (size_t)i * hw]);
        ss += v * v;
    }
    const float inv = 1.f / fmaxf(sqrtf(ss), 1e-12f);
    for (int i = 0; i < c; i++) {
        const float v = __bfloat162float(x[base + (size_t)i * hw]) * inv * scale[i];
        out[base + (size_t)i * hw] = __float2bfloat16_rn(v / (1.f + __expf(-v)));
    }
}

// ---------------------------------------------------------------------------
// The same convolution from a channels-last copy of the input
// (in_nhwc [B, t_in, h, w, c_in]): a K block's 32 channels of one pixel are
// 64 contiguous bytes, so both tiles are fetched with 16-byte `cp.async`
// (zero-filled outside the image) into a STAGES-deep shared-memory ring,
// with no register staging: the loads of the next STAGES - 1 K blocks are in
// flight while the tensor cores work on the current one. Tiles, warps,
// fragments and the epilogue are those of causal_conv3d_bf16.
// Dynamic shared memory: STAGES * (TILE_M + TILE_N) * LDS * 2 bytes.
#define STAGES 3

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool fill) {
    const uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    const int bytes = fill ? 16 : 0;  // 0: write 16 zero bytes, read nothing
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

extern "C" __global__ void __launch_bounds__(THREADS)
causal_conv3d_nhwc_bf16(const __nv_bfloat16* __restrict__ in, const __nv_bfloat16* __restrict__ wgt,
                        const __nv_bfloat16* __restrict__ bias, __nv_bfloat16* __restrict__ out, int t_in,
                        int t_out, int c_in, int c_out, int h, int w, int ho, int wo, int kt, int kh, int kw, int pad,
                        int up) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __nv_bfloat16* smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);
    // stage s: A at smem + s * STAGE_ELEMS, B right after it
    const int STAGE_ELEMS = (TILE_M + TILE_N) * LDS;

    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int g = lane >> 2, tig = lane & 3;
    const int wm = warp % 4, wn = warp / 4;

    const int hw_out = ho * wo;
    const int p0 = blockIdx.x * TILE_N;
    const int co0 = blockIdx.y * TILE_M;
    const int frame = blockIdx.z;
    const int b = frame / t_out, t = frame % t_out;
    const size_t k_total = (size_t)kt * kh * kw * c_in;
    const int kblocks_per_tap = c_in / TILE_K;
    const int n_kblocks = kt * kh * kw * kblocks_per_tap;

    // This thread's two 16-byte pieces of each tile: rows r0 and r0 + 64,
    // piece `part` (8 channels) of the row's 32.
    const int part = tid % 4;
    const int r0 = tid / 4;
    int py[2], px[2];
    bool pvalid[2];
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const int p = p0 + r0 + 64 * j;
        pvalid[j] = p < hw_out;
        py[j] = pvalid[j] ? p / wo : 0;
        px[j] = pvalid[j] ? p % wo : 0;
    }

    auto issue = [&](int kb, int stage) {
        __nv_bfloat16* as = smem + stage * STAGE_ELEMS;
        __nv_bfloat16* bs = as + TILE_M * LDS;
        const int tap = kb / kblocks_per_tap;
        const int ci0 = (kb % kblocks_per_tap) * TILE_K + part * 8;
        const int dx = tap % kw, dy = (tap / kw) % kh, dt = tap / (kw * kh);
        const size_t frame_in = (size_t)b * t_in + t + dt;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int r = r0 + 64 * j;
            // A: weight row co0 + r (zero rows past c_out).
            const bool a_ok = co0 + r < c_out;
            const __nv_bfloat16* a_src = a_ok ? wgt + (size_t)(co0 + r) * k_total + (size_t)kb * TILE_K + part * 8 : wgt;
            cp_async_16(as + r * LDS + part * 8, a_src, a_ok);
            // B: pixel r of the tile at this tap (zero outside the image).
            const int uy = py[j] + dy - pad, ux = px[j] + dx - pad;
            const bool b_ok = pvalid[j] && uy >= 0 && uy < h * up && ux >= 0 && ux < w * up;
            const __nv_bfloat16* b_src =
                b_ok ? in + ((frame_in * h + uy / up) * w + ux / up) * c_in + ci0 : in;
            cp_async_16(bs + r * LDS + part * 8, b_src, b_ok);
        }
    };

    float acc[2][8][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int nj = 0; nj < 8; nj++) acc[mi][nj][0] = acc[mi][nj][1] = acc[mi][nj][2] = acc[mi][nj][3] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < n_kblocks) issue(s, s);
        cp_async_commit();  // empty groups keep the count uniform
    }
    for (int kb = 0; kb < n_kblocks; kb++) {
        cp_async_wait<STAGES - 2>();  // K block kb has landed (for this thread)
        __syncthreads();              // ... for every thread; stage (kb - 1) % STAGES is free
        const int next = kb + STAGES - 1;
        if (next < n_kblocks) issue(next, next % STAGES);
        cp_async_commit();
        const __nv_bfloat16* as = smem + (kb % STAGES) * STAGE_ELEMS;
        const __nv_bfloat16* bs = as + TILE_M * LDS;
#pragma unroll
        for (int ks = 0; ks < TILE_K; ks += 16) {
            uint32_t af[2][4];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                const __nv_bfloat16* ap = as + (wm * 32 + mi * 16 + g) * LDS + ks + 2 * tig;
                af[mi][0] = lds_u32(ap);
                af[mi][1] = lds_u32(ap + 8 * LDS);
                af[mi][2] = lds_u32(ap + 8);
                af[mi][3] = lds_u32(ap + 8 * LDS + 8);
            }
#pragma unroll
            for (int nj = 0; nj < 8; nj++) {
                const __nv_bfloat16* bp = bs + (wn * 64 + nj * 8 + g) * LDS + ks + 2 * tig;
                const uint32_t b0 = lds_u32(bp), b1 = lds_u32(bp + 8);
                mma_bf16(acc[0][nj], af[0], b0, b1);
                mma_bf16(acc[1][nj], af[1], b0, b1);
            }
        }
    }
    cp_async_wait<0>();

    const bool pairs = (hw_out % 2) == 0;
#pragma unroll
    for (int mi = 0; mi < 2; mi++) {
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int co = co0 + wm * 32 + mi * 16 + g + half * 8;
            if (co >= c_out) continue;
            const float bv = __bfloat162float(bias[co]);
            __nv_bfloat16* orow = out + ((size_t)frame * c_out + co) * hw_out;
#pragma unroll
            for (int nj = 0; nj < 8; nj++) {
                const int p = p0 + wn * 64 + nj * 8 + 2 * tig;
                const float v0 = acc[mi][nj][2 * half] + bv, v1 = acc[mi][nj][2 * half + 1] + bv;
                if (pairs && p + 1 < hw_out) {
                    *reinterpret_cast<__nv_bfloat162*>(orow + p) = __floats2bfloat162_rn(v0, v1);
                } else {
                    if (p < hw_out) orow[p] = __float2bfloat16_rn(v0);
                    if (p + 1 < hw_out) orow[p + 1] = __float2bfloat16_rn(v1);
                }
            }
        }
    }
}
