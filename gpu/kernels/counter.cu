// Counter-based input generator: the CUDA twin of state/kinds/counter.py (bit-identical).
//   u32(key, stream, idx) = low32(splitmix64(key ^ ((stream << 40) | idx)))
//   f32(u)                = (u >> 8) * 2^-23 - 1      (exact in float32)
// All arithmetic is unsigned 64-bit with wrap-around; shift counts are constants < 64.

typedef unsigned long long u64;
typedef unsigned int u32;

__device__ __forceinline__ u64 splitmix64(u64 x)
{
    u64 z = x + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ u32 counter_u32(u64 key, u64 stream, u64 idx)
{
    return (u32)splitmix64(key ^ ((stream << 40) | idx));
}

// out[i] = u32(key, stream, start + i) for i < count (grid-stride loop).
extern "C" __global__ void gen_u32(u32* __restrict__ out, u64 key, u64 stream, u64 start, u64 count)
{
    const u64 step = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        out[i] = counter_u32(key, stream, start + i);
}

// out[i] = f32(u32(key, stream, start + i)); the explicit _rn intrinsics forbid any contraction
// (both operations are exact anyway: a 24-bit integer times 2^-23, minus 1).
extern "C" __global__ void gen_f32(float* __restrict__ out, u64 key, u64 stream, u64 start, u64 count)
{
    const u64 step = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step) {
        const u32 u = counter_u32(key, stream, start + i);
        out[i] = __fadd_rn(__fmul_rn((float)(u >> 8), 1.1920928955078125e-07f), -1.0f);
    }
}
