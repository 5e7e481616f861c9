// WanAttention's glue around its matrix products, fused for the GPU
// (src/model/attention_kernels.rs), bf16 activations, f32 arithmetic:
//
// - norm_rope_heads_bf16: the q or k projection [B, L, D] -> RMSNorm across
//   all heads (f32, weight, rounded to bf16 as diffusers' `norm_q/norm_k`
//   output) -> optional interleaved RoPE with cos / sin [L, hd/2] (f32) ->
//   [B, H, L, hd] bf16. Replaces the f32 casts, the norm, the head split copy
//   and the RoPE chain (~7 candle ops over [B, L, D]).
// - few_key_attention_bf16: attention of each query token over a handful of
//   keys (StreamAvatar's talk / listen audio attention: a latent frame's
//   tokens over that frame's ~4 audio tokens), with the query's RMSNorm
//   fused in: q projection [G, Lq, D] raw, keys (normed) and values
//   [G, n, D] -> out [G, Lq, D] with heads already merged (ready for
//   `to_out`). Scores and softmax in f32.
//
// Rows are tokens: one block of THREADS threads per token, pairs of columns
// per thread (bf16x2 loads and stores).

#include <cuda_bf16.h>
#include <stdint.h>

#include "cuda_block_reduce.cuh"

#define THREADS 256
#define MAX_PAIRS 8       // D <= 2 * THREADS * MAX_PAIRS = 4096
#define MAX_KEYS 16       // keys per group in few_key_attention
#define MAX_LANE_PAIRS 4  // head dim <= 32 lanes * 2 * 4 = 256

__device__ __forceinline__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// Loads the row's column pairs into v and, when norm_w is given, applies
// RMSNorm over the whole row (x * rsqrt(mean(x^2) + eps) * w), rounded to
// bf16 like the unfused norm's output.
__device__ __forceinline__ void load_normed_row(const __nv_bfloat16* __restrict__ xr,
                                                const float* __restrict__ norm_w, int pairs, int d, float eps,
                                                float2 (&v)[MAX_PAIRS], float* scratch) {
    const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(xr);
    float sq = 0.f;
#pragma unroll
    for (int j = 0; j < MAX_PAIRS; j++) {
        const int p = threadIdx.x + j * THREADS;
        v[j] = p < pairs ? __bfloat1622float2(x2[p]) : make_float2(0.f, 0.f);
        sq += v[j].x * v[j].x + v[j].y * v[j].y;
    }
    if (norm_w == nullptr) return;
    const float inv = rsqrtf(block_sum<THREADS>(sq, scratch) / d + eps);
#pragma unroll
    for (int j = 0; j < MAX_PAIRS; j++) {
        const int p = threadIdx.x + j * THREADS;
        if (p < pairs) {
            v[j].x = round_bf16(v[j].x * inv * norm_w[2 * p]);
            v[j].y = round_bf16(v[j].y * inv * norm_w[2 * p + 1]);
        }
    }
}

// x [B, L, D] bf16 -> out [B, H, L, hd] bf16; norm_w [D] f32 or null;
// cos, sin [L, hd/2] f32 or null (no rotation). One block per (b, l).
extern "C" __global__ void __launch_bounds__(THREADS)
norm_rope_heads_bf16(const __nv_bfloat16* __restrict__ x, const float* __restrict__ norm_w,
                     const float* __restrict__ cos, const float* __restrict__ sin, __nv_bfloat16* __restrict__ out,
                     int d, int heads, int tokens, float eps) {
    __shared__ float scratch[THREADS / 32];
    const size_t row = blockIdx.x;
    const int b = row / tokens, l = row % tokens;
    const int hd = d / heads, pairs = d / 2;
    float2 v[MAX_PAIRS];
    load_normed_row(x + row * d, norm_w, pairs, d, eps, v, scratch);
#pragma unroll
    for (int j = 0; j < MAX_PAIRS; j++) {
        const int p = threadIdx.x + j * THREADS;
        if (p >= pairs) continue;
        const int col = 2 * p, h = col / hd, e = col % hd;
        float2 y = v[j];
        if (cos != nullptr) {
            const size_t t = (size_t)l * (hd / 2) + e / 2;
            const float c = cos[t], s = sin[t];
            y = make_float2(v[j].x * c - v[j].y * s, v[j].x * s + v[j].y * c);
        }
        __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(out + (((size_t)b * heads + h) * tokens + l) * hd + e);
        *o = __floats2bfloat162_rn(y.x, y.y);
    }
}

// q [G, Lq, D] raw projection (bf16), norm_w [D] f32; k, v [G, n, D] bf16
// (keys already normed); out [G, Lq, D] bf16 = per head softmax(q k^T *
// scale) v. One block per query token; warp w handles heads w, w + 8, ...
extern "C" __global__ void __launch_bounds__(THREADS)
few_key_attention_bf16(const __nv_bfloat16* __restrict__ q, const float* __restrict__ norm_w,
                       const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v,
                       __nv_bfloat16* __restrict__ out, int d, int heads, int lq, int n_keys, float eps, float scale) {
    __shared__ float scratch[THREADS / 32];
    extern __shared__ float2 qs[];  // the normed query row, d / 2 pairs
    const size_t row = blockIdx.x;
    const size_t g = row / lq;
    const int hd = d / heads, pairs = d / 2, head_pairs = hd / 2;
    float2 r[MAX_PAIRS];
    load_normed_row(q + row * d, norm_w, pairs, d, eps, r, scratch);
#pragma unroll
    for (int j = 0; j < MAX_PAIRS; j++) {
        const int p = threadIdx.x + j * THREADS;
        if (p < pairs) qs[p] = r[j];
    }
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const __nv_bfloat162* k2 = reinterpret_cast<const __nv_bfloat162*>(k + g * n_keys * d);
    const __nv_bfloat162* v2 = reinterpret_cast<const __nv_bfloat162*>(v + g * n_keys * d);
    __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(out + row * d);
    for (int h = warp; h < heads; h += THREADS / 32) {
        float scores[MAX_KEYS];
        float top = -3.0e38f;
#pragma unroll
        for (int key = 0; key < MAX_KEYS; key++) {
            scores[key] = 0.f;
            if (key >= n_keys) continue;  // n_keys is uniform: no divergence
            float partial = 0.f;
#pragma unroll
            for (int i = 0; i < MAX_LANE_PAIRS; i++) {
                const int e = lane + i * 32;  // pair index within the head
                if (e < head_pairs) {
                    const float2 a = qs[h * head_pairs + e];
                    const float2 bk = __bfloat1622float2(k2[(size_t)key * pairs + h * head_pairs + e]);
                    partial += a.x * bk.x + a.y * bk.y;
                }
            }
            scores[key] = warp_sum(partial) * scale;
            top = fmaxf(top, scores[key]);
        }
        float total = 0.f;
#pragma unroll
        for (int key = 0; key < MAX_KEYS; key++) {
            if (key >= n_keys) continue;
            scores[key] = __expf(scores[key] - top);
            total += scores[key];
        }
        const float inv_total = 1.f / total;
#pragma unroll
        for (int i = 0; i < MAX_LANE_PAIRS; i++) {
            const int e = lane + i * 32;
            if (e >= head_pairs) continue;
            float2 acc = make_float2(0.f, 0.f);
#pragma unroll
            for (int key = 0; key < MAX_KEYS; key++) {
                if (key >= n_keys) continue;
                const float2 vv = __bfloat1622float2(v2[(size_t)key * pairs + h * head_pairs + e]);
                acc.x += scores[key] * vv.x;
                acc.y += scores[key] * vv.y;
            }
            o2[h * head_pairs + e] = __floats2bfloat162_rn(acc.x * inv_total, acc.y * inv_total);
        }
    }
}
