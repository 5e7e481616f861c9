// Fused attention forward for the GPU (src/model/flash_attention.rs):
// softmax(q k^T * scale) v without materialising the score matrix, in the
// way of FlashAttention-2: online softmax over key tiles, scores, softmax
// and the output accumulators all in registers, tensor cores through
// `mma.sync.m16n8k16` (bf16 in, f32 accumulate).
//
// Inputs q [B*H, Lq, 128], k and v [B*H, Lk, 128], contiguous bf16; output
// like q. No mask (the streaming DiT attends to the whole KV cache).
//
// One block = 4 warps = 64 query rows of one (batch, head); each warp owns
// 16 rows and keeps its Q fragments in registers. Per tile of 64 keys the
// block stages K (row-major) and V (transposed, so both products read
// their B operands with 32-bit loads) in shared memory. Fragment layouts
// are the PTX ISA's for m16n8k16 (groupID = lane / 4, tig = lane % 4):
//   A (16x16): {r0: row g, cols 2tig..+1; r1: row g+8; r2: row g, cols
//               2tig+8..+9; r3: row g+8, cols 2tig+8..+9}
//   B (16x8):  {b0: k 2tig..+1, col g; b1: k 2tig+8..+9, col g}
//   C (16x8):  {c0,c1: row g, cols 2tig..+1; c2,c3: row g+8}
// so a score tile's C fragments are directly the A fragments of P for the
// second product. Rows past Lq are zero queries and are not written; keys
// past Lk get -inf scores.

#include <cuda_bf16.h>
#include <stdint.h>

#define HEAD_DIM 128
#define BLOCK_M 64
#define BLOCK_N 64
#define WARPS 4
// Shared-memory row strides padded by 16 bytes: the 8 rows one fragment
// load touches then fall in different banks.
#define LD_K (HEAD_DIM + 8)  // K tile [BLOCK_N][LD_K]
#define LD_VT (BLOCK_N + 8)  // V^T tile [HEAD_DIM][LD_VT]

__device__ __forceinline__ void mma_bf16(float* c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t load_u32(const __nv_bfloat16* p) {
    return *reinterpret_cast<const uint32_t*>(p);
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
flash_attention_fwd_bf16_d128(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                              const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ o, int lq, int lk,
                              float scale_log2) {
    extern __shared__ __align__(16) unsigned char smem[];
    __nv_bfloat16* ks = reinterpret_cast<__nv_bfloat16*>(smem);  // [BLOCK_N][LD_K]
    __nv_bfloat16* vt = ks + BLOCK_N * LD_K;                       // [HEAD_DIM][LD_VT]

    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int g = lane >> 2;
    const int tig = lane & 3;
    const size_t bh = blockIdx.y;
    const __nv_bfloat16* qb = q + bh * (size_t)lq * HEAD_DIM;
    const __nv_bfloat16* kb = k + bh * (size_t)lk * HEAD_DIM;
    const __nv_bfloat16* vb = v + bh * (size_t)lk * HEAD_DIM;
    __nv_bfloat16* ob = o + bh * (size_t)lq * HEAD_DIM;
    const int row0 = blockIdx.x * BLOCK_M + warp * 16 + g;  // this thread's rows: row0, row0 + 8
    const int row1 = row0 + 8;

    // Q as A fragments, 8 k-steps of 16 dims.
    uint32_t qf[HEAD_DIM / 16][4];
#pragma unroll
    for (int kk = 0; kk < HEAD_DIM / 16; kk++) {
        const int c = kk * 16 + 2 * tig;
        qf[kk][0] = row0 < lq ? load_u32(qb + (size_t)row0 * HEAD_DIM + c) : 0u;
        qf[kk][1] = row1 < lq ? load_u32(qb + (size_t)row1 * HEAD_DIM + c) : 0u;
        qf[kk][2] = row0 < lq ? load_u32(qb + (size_t)row0 * HEAD_DIM + c + 8) : 0u;
        qf[kk][3] = row1 < lq ? load_u32(qb + (size_t)row1 * HEAD_DIM + c + 8) : 0u;
    }

    float acc_o[HEAD_DIM / 8][4];
#pragma unroll
    for (int d = 0; d < HEAD_DIM / 8; d++) acc_o[d][0] = acc_o[d][1] = acc_o[d][2] = acc_o[d][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY;  // running max of rows row0 / row1 (base-2 scaled)
    float l0 = 0.f, l1 = 0.f;              // this thread's part of the running sums

    const int vec_per_row = HEAD_DIM / 8;  // 16-byte vectors per K/V row
    for (int kt = 0; kt < lk; kt += BLOCK_N) {
        __syncthreads();  // every warp is done with the previous tile
        // K row-major; consecutive threads take consecutive 16-byte pieces of a row.
        for (int i = threadIdx.x; i < BLOCK_N * vec_per_row; i += WARPS * 32) {
            const int r = i / vec_per_row, c = i % vec_per_row;
            int4 kv = make_int4(0, 0, 0, 0);
            if (kt + r < lk) kv = reinterpret_cast<const int4*>(kb + (size_t)(kt + r) * HEAD_DIM)[c];
            *reinterpret_cast<int4*>(ks + r * LD_K + c * 8) = kv;
        }
        // V transposed; consecutive threads take consecutive keys (their
        // 2-byte stores then land in consecutive words).
        for (int i = threadIdx.x; i < BLOCK_N * vec_per_row; i += WARPS * 32) {
            const int r = i % BLOCK_N, c = i / BLOCK_N;
            int4 vv = make_int4(0, 0, 0, 0);
            if (kt + r < lk) vv = reinterpret_cast<const int4*>(vb + (size_t)(kt + r) * HEAD_DIM)[c];
            const __nv_bfloat16* e = reinterpret_cast<const __nv_bfloat16*>(&vv);
#pragma unroll
            for (int j = 0; j < 8; j++) vt[(c * 8 + j) * LD_VT + r] = e[j];
        }
        __syncthreads();

        // S = Q K^T: 8 tiles of 8 keys.
        float s[BLOCK_N / 8][4];
#pragma unroll
        for (int nt = 0; nt < BLOCK_N / 8; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
            const __nv_bfloat16* krow = ks + (nt * 8 + g) * LD_K + 2 * tig;
#pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 16; kk++) {
                mma_bf16(s[nt], qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], load_u32(krow + kk * 16),
                         load_u32(krow + kk * 16 + 8));
            }
        }

        // Online softmax, base 2 with the scale folded in.
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < BLOCK_N / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const bool valid = kt + nt * 8 + 2 * tig + e < lk;
                s[nt][e] = valid ? s[nt][e] * scale_log2 : -INFINITY;
                s[nt][2 + e] = valid ? s[nt][2 + e] * scale_log2 : -INFINITY;
                mx0 = fmaxf(mx0, s[nt][e]);
                mx1 = fmaxf(mx1, s[nt][2 + e]);
            }
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float new0 = fmaxf(m0, mx0), new1 = fmaxf(m1, mx1);
        const float alpha0 = exp2f(m0 - new0), alpha1 = exp2f(m1 - new1);
        m0 = new0;
        m1 = new1;
        float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
        for (int nt = 0; nt < BLOCK_N / 8; nt++) {
            s[nt][0] = exp2f(s[nt][0] - new0);
            s[nt][1] = exp2f(s[nt][1] - new0);
            s[nt][2] = exp2f(s[nt][2] - new1);
            s[nt][3] = exp2f(s[nt][3] - new1);
            sum0 += s[nt][0] + s[nt][1];
            sum1 += s[nt][2] + s[nt][3];
        }
        l0 = l0 * alpha0 + sum0;
        l1 = l1 * alpha1 + sum1;
#pragma unroll
        for (int d = 0; d < HEAD_DIM / 8; d++) {
            acc_o[d][0] *= alpha0;
            acc_o[d][1] *= alpha0;
            acc_o[d][2] *= alpha1;
            acc_o[d][3] *= alpha1;
        }

        // O += P V: P's A fragments for keys 16j..16j+15 are the score
        // tiles 2j and 2j+1.
#pragma unroll
        for (int j = 0; j < BLOCK_N / 16; j++) {
            const uint32_t p0 = pack_bf16(s[2 * j][0], s[2 * j][1]);
            const uint32_t p1 = pack_bf16(s[2 * j][2], s[2 * j][3]);
            const uint32_t p2 = pack_bf16(s[2 * j + 1][0], s[2 * j + 1][1]);
            const uint32_t p3 = pack_bf16(s[2 * j + 1][2], s[2 * j + 1][3]);
#pragma unroll
            for (int d = 0; d < HEAD_DIM / 8; d++) {
                const __nv_bfloat16* vrow = vt + (d * 8 + g) * LD_VT + j * 16 + 2 * tig;
                mma_bf16(acc_o[d], p0, p1, p2, p3, load_u32(vrow), load_u32(vrow + 8));
            }
        }
    }

    // Full row sums live spread over the 4 threads of a row group.
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = 1.f / l0, inv1 = 1.f / l1;
#pragma unroll
    for (int d = 0; d < HEAD_DIM / 8; d++) {
        const int c = d * 8 + 2 * tig;
        if (row0 < lq)
            *reinterpret_cast<uint32_t*>(ob + (size_t)row0 * HEAD_DIM + c) =
                pack_bf16(acc_o[d][0] * inv0, acc_o[d][1] * inv0);
        if (row1 < lq)
            *reinterpret_cast<uint32_t*>(ob + (size_t)row1 * HEAD_DIM + c) =
                pack_bf16(acc_o[d][2] * inv1, acc_o[d][3] * inv1);
    }
}
