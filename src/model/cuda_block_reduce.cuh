// Sums across a warp and across a thread block, shared by our CUDA kernels
// (attention_kernels.cu, dit/cuda_kernels.cu). `scratch` holds one float per
// warp in shared memory; every thread of the block must call block_sum (it
// synchronises) and every thread gets the total.
#pragma once

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <int Threads>
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    v = warp_sum(v);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // scratch may still be read from the previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < Threads / 32; w++) total += scratch[w];
    return total;
}
