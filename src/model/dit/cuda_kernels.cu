// The DiT block's element-wise glue around its matrix products, fused for
// the GPU (src/model/dit/cuda_kernels.rs). Each replaces a chain of ~6-10
// candle ops (dtype casts, broadcasts, the f32 LayerNorm) over the block's
// [B, L, D] hidden states with one pass, the same f32 arithmetic as
// diffusers' FP32LayerNorm / modulation / gated residual.
//
// Per-frame tensors (shift and scale [B, F, 2, D], gate [B, F, D], f32)
// broadcast over the L / F tokens of each latent frame.

#include <cuda_bf16.h>
#include <stdint.h>

#include "../cuda_block_reduce.cuh"

#define THREADS 256
#define MAX_PER_THREAD 16  // D <= THREADS * MAX_PER_THREAD = 4096

// y = LayerNorm(x) * (1 + scale[b, f]) + shift[b, f], the LayerNorm over D
// in f32 with weight / bias (f32) and eps; x bf16 [rows = B * L, D], y bf16;
// shift_scale f32 [B, F, 2, D]. One block per row.
extern "C" __global__ void __launch_bounds__(THREADS)
modulate_bf16(const __nv_bfloat16* __restrict__ x, const float* __restrict__ weight, const float* __restrict__ bias,
              const float* __restrict__ shift_scale, __nv_bfloat16* __restrict__ y, int d, int tokens, int frames,
              float eps) {
    __shared__ float scratch[THREADS / 32];
    const size_t row = blockIdx.x;
    const int b = row / tokens;
    const int f = (row % tokens) / (tokens / frames);
    const __nv_bfloat16* xr = x + row * d;
    float v[MAX_PER_THREAD];
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < MAX_PER_THREAD; j++) {
        const int i = threadIdx.x + j * THREADS;
        v[j] = i < d ? __bfloat162float(xr[i]) : 0.f;
        sum += v[j];
    }
    const float mean = block_sum<THREADS>(sum, scratch) / d;
    float sq = 0.f;
#pragma unroll
    for (int j = 0; j < MAX_PER_THREAD; j++) {
        const int i = threadIdx.x + j * THREADS;
        const float c = i < d ? v[j] - mean : 0.f;
        sq += c * c;
    }
    const float inv = rsqrtf(block_sum<THREADS>(sq, scratch) / d + eps);
    const float* sh = shift_scale + ((size_t)b * frames + f) * 2 * d;  // [B, F, 2, D]: shift, then scale
    const float* sc = sh + d;
    __nv_bfloat16* yr = y + row * d;
#pragma unroll
    for (int j = 0; j < MAX_PER_THREAD; j++) {
        const int i = threadIdx.x + j * THREADS;
        if (i < d) {
            const float n = (v[j] - mean) * inv * weight[i] + bias[i];
            yr[i] = __float2bfloat16_rn(n * (1.f + sc[i]) + sh[i]);
        }
    }
}

// out = bf16(f32(x) + f32(y) * gate[b, f]); x, y, out bf16 [B * L, D].
extern "C" __global__ void __launch_bounds__(THREADS)
gated_residual_bf16(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ y,
                    const float* __restrict__ gate, __nv_bfloat16* __restrict__ out, int d, int tokens, int frames,
                    size_t n) {
    const size_t i = (size_t)blockIdx.x * THREADS + threadIdx.x;
    if (i >= n) return;
    const size_t row = i / d;
    const int col = i % d;
    const int b = row / tokens;
    const int f = (row % tokens) / (tokens / frames);
    const float g = gate[((size_t)b * frames + f) * d + col];
    out[i] = __float2bfloat16_rn(__bfloat162float(x[i]) + __bfloat162float(y[i]) * g);
}
