// Fused attention forward for the GPU (src/model/flash_attention.rs):
// softmax(q k^T * scale) v without materialising the score matrix, in the
// way of FlashAttention-2 (online softmax over key tiles), with the tensor
// cores through the portable WMMA API.
//
// Inputs q [B*H, Lq, 128], k and v [B*H, Lk, 128], contiguous bf16; output
// like q. No mask (the streaming DiT attends to the whole KV cache).
//
// One block = 4 warps = 64 query rows of one (batch, head); each warp owns
// 16 rows. Per key tile of 64: K and V tiles go to shared memory, each warp
// computes its 16 x 64 scores with WMMA (f32), applies the online softmax
// row by row (two columns per lane, warp shuffles for max and sum), writes
// P as bf16, rescales its f32 output rows kept in shared memory and adds
// P V with WMMA. Rows past Lq are zero queries and are not written; keys
// past Lk get -inf scores.

#include <cuda_bf16.h>
#include <mma.h>

using namespace nvcuda;

#define HEAD_DIM 128
#define BLOCK_M 64
#define BLOCK_N 64
#define WARPS 4
// Shared-memory row strides, padded past a multiple of 128 bytes so that the
// 16 rows a WMMA load or store touches fall in different banks (unpadded,
// a 256-byte K row stride put all 16 rows in the same banks).
#define LD_KV (HEAD_DIM + 8)   // bf16
#define LD_S (BLOCK_N + 4)     // f32
#define LD_P (BLOCK_N + 8)     // bf16
#define LD_O (HEAD_DIM + 4)    // f32

extern "C" __global__ void __launch_bounds__(WARPS * 32)
flash_attention_fwd_bf16_d128(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                              const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ o, int lq, int lk,
                              float scale_log2) {
    extern __shared__ __align__(128) unsigned char smem[];
    __nv_bfloat16* ks = reinterpret_cast<__nv_bfloat16*>(smem);  // BLOCK_N x LD_KV
    __nv_bfloat16* vs = ks + BLOCK_N * LD_KV;                      // BLOCK_N x LD_KV
    float* ss = reinterpret_cast<float*>(vs + BLOCK_N * LD_KV);    // WARPS x 16 x LD_S
    __nv_bfloat16* ps = reinterpret_cast<__nv_bfloat16*>(ss + WARPS * 16 * LD_S);  // WARPS x 16 x LD_P
    float* os = reinterpret_cast<float*>(ps + WARPS * 16 * LD_P);                  // WARPS x 16 x LD_O
    float* row_max = os + WARPS * 16 * LD_O;                                       // WARPS x 16
    float* row_sum = row_max + WARPS * 16;
    float* row_alpha = row_sum + WARPS * 16;

    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const size_t bh = blockIdx.y;
    const __nv_bfloat16* qb = q + bh * (size_t)lq * HEAD_DIM;
    const __nv_bfloat16* kb = k + bh * (size_t)lk * HEAD_DIM;
    const __nv_bfloat16* vb = v + bh * (size_t)lk * HEAD_DIM;
    __nv_bfloat16* ob = o + bh * (size_t)lq * HEAD_DIM;
    const int q0 = blockIdx.x * BLOCK_M + warp * 16;

    float* o_w = os + warp * 16 * LD_O;
    float* s_w = ss + warp * 16 * LD_S;
    __nv_bfloat16* p_w = ps + warp * 16 * LD_P;
    float* m_w = row_max + warp * 16;
    float* l_w = row_sum + warp * 16;
    float* a_w = row_alpha + warp * 16;

    // Stage this warp's 16 query rows (zero past Lq) in its output area,
    // load them into fragments, then clear the area for the output.
    const int vec_per_row = HEAD_DIM / 8;  // 16-byte vectors
    __nv_bfloat16* q_stage = reinterpret_cast<__nv_bfloat16*>(o_w);
    for (int i = lane; i < 16 * vec_per_row; i += 32) {
        const int r = i / vec_per_row, c = i % vec_per_row;
        int4 val = make_int4(0, 0, 0, 0);
        if (q0 + r < lq) val = reinterpret_cast<const int4*>(qb + (size_t)(q0 + r) * HEAD_DIM)[c];
        reinterpret_cast<int4*>(q_stage)[i] = val;
    }
    __syncwarp();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> qf[HEAD_DIM / 16];
#pragma unroll
    for (int kk = 0; kk < HEAD_DIM / 16; kk++) wmma::load_matrix_sync(qf[kk], q_stage + kk * 16, HEAD_DIM);
    __syncwarp();
    for (int i = lane; i < 16 * LD_O; i += 32) o_w[i] = 0.f;
    if (lane < 16) {
        m_w[lane] = -INFINITY;
        l_w[lane] = 0.f;
    }
    __syncwarp();

    for (int kt = 0; kt < lk; kt += BLOCK_N) {
        __syncthreads();  // every warp is done with the previous K/V tile
        for (int i = threadIdx.x; i < BLOCK_N * vec_per_row; i += WARPS * 32) {
            const int r = i / vec_per_row, c = i % vec_per_row;
            int4 kv = make_int4(0, 0, 0, 0), vv = make_int4(0, 0, 0, 0);
            if (kt + r < lk) {
                kv = reinterpret_cast<const int4*>(kb + (size_t)(kt + r) * HEAD_DIM)[c];
                vv = reinterpret_cast<const int4*>(vb + (size_t)(kt + r) * HEAD_DIM)[c];
            }
            reinterpret_cast<int4*>(ks + r * LD_KV)[c] = kv;
            reinterpret_cast<int4*>(vs + r * LD_KV)[c] = vv;
        }
        __syncthreads();

        // S = Q K^T for 16 rows x 64 keys (K row-major = K^T column-major).
#pragma unroll
        for (int j = 0; j < BLOCK_N / 16; j++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.f);
#pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 16; kk++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> kf;
                wmma::load_matrix_sync(kf, ks + j * 16 * LD_KV + kk * 16, LD_KV);
                wmma::mma_sync(acc, qf[kk], kf, acc);
            }
            wmma::store_matrix_sync(s_w + j * 16, acc, LD_S, wmma::mem_row_major);
        }
        __syncwarp();

        // Online softmax (base 2, scale folded in), one row at a time.
        const int valid = min(BLOCK_N, lk - kt);
        for (int r = 0; r < 16; r++) {
            const float s0 = lane < valid ? s_w[r * LD_S + lane] * scale_log2 : -INFINITY;
            const float s1 = lane + 32 < valid ? s_w[r * LD_S + lane + 32] * scale_log2 : -INFINITY;
            float mx = fmaxf(s0, s1);
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            const float m_old = m_w[r];
            const float m_new = fmaxf(m_old, mx);
            const float p0 = exp2f(s0 - m_new);
            const float p1 = exp2f(s1 - m_new);
            float sum = p0 + p1;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
            const float alpha = exp2f(m_old - m_new);
            p_w[r * LD_P + lane] = __float2bfloat16(p0);
            p_w[r * LD_P + lane + 32] = __float2bfloat16(p1);
            __syncwarp();
            if (lane == 0) {
                m_w[r] = m_new;
                l_w[r] = l_w[r] * alpha + sum;
                a_w[r] = alpha;
            }
        }
        __syncwarp();
        for (int i = lane; i < 16 * HEAD_DIM; i += 32) o_w[(i / HEAD_DIM) * LD_O + i % HEAD_DIM] *= a_w[i / HEAD_DIM];
        __syncwarp();

        // O += P V.
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, o_w + n * 16, LD_O, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < BLOCK_N / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> pf;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> vf;
                wmma::load_matrix_sync(pf, p_w + kk * 16, LD_P);
                wmma::load_matrix_sync(vf, vs + kk * 16 * LD_KV + n * 16, LD_KV);
                wmma::mma_sync(acc, pf, vf, acc);
            }
            wmma::store_matrix_sync(o_w + n * 16, acc, LD_O, wmma::mem_row_major);
        }
        __syncwarp();
    }

    for (int i = lane; i < 16 * HEAD_DIM; i += 32) {
        const int r = i / HEAD_DIM, c = i % HEAD_DIM;
        if (q0 + r < lq) ob[(size_t)(q0 + r) * HEAD_DIM + c] = __float2bfloat16(o_w[r * LD_O + c] / l_w[r]);
    }
}
