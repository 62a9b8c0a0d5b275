// Integer matmul of aitbc-llm-int8-v1 (state/llm/fixed.py::matmul_q8), bit-exact with NumPy.
//
// Weights of a q8r matrix (rows of several tensors may be stacked), as packed by gpu/llm_cuda.py::pack_q8r:
//   q int8  [O][Kp]  the int8 weights, each row zero-padded to Kp = 32 * G;
//   u uint8 [O][G]   the per-32-group sub-scales;
//   m int32 [O]      the Q36 row scales.
// Activations: x int32 [T][K] (Q16, already saturated to int32 by the caller).
//
//   llm_quant_rows: per row t, fixed.quant_shift: s = clamp(bit_length(max |x|) - bits, -16, 48),
//                   a = round_shift(x, s) written as int16 [T][Kp] (zeros in the padding), s as int32 [T].
//   llm_matmul_q8:  acc = sum_g u[o][g] * sum_{k in g} a[t][k] * q[o][k], exact: a group sum is below
//                   32 * 2**14 * 127 < 2**26 (int32), the total below 2**42 (int64), so any summation order
//                   gives the same integer; then y = sat32(round_shift(round_shift(acc, 14) * m[o], 22 - s[t])).
// round_shift(x, s) = (x + 2**(s-1)) >> s (arithmetic shift: round half up) for s > 0, x * 2**-s otherwise.
// The 8-bit x 16-bit products use __dp2a_lo/__dp2a_hi on sm_61+ (unless LLM_PLAIN_MAC is defined), plain
// int32 multiply-adds otherwise; both give the same exact int32 group sum.

typedef long long llm_i64;
typedef unsigned long long llm_u64;

#define LLM_THREADS 256
#define LLM_ROWS 8      // output rows per block: one warp each
#define LLM_TB 8        // positions per block
#define LLM_GROUP 32    // weights per sub-scale
#define LLM_ACC_DROP 14 // fixed.ACC_DROP
#define LLM_W_FRAC 36   // fixed.W_FRAC

__device__ __forceinline__ llm_i64 llm_round_shift(llm_i64 x, int s)
{
    if (s > 0) return (x + (1LL << (s - 1))) >> s;
    return (llm_i64)((llm_u64)x << (-s));  // wraps like NumPy's int64 left shift
}

__device__ __forceinline__ int llm_sat32(llm_i64 v)
{
    return v > 2147483647LL ? 2147483647 : (v < -2147483648LL ? (int)(-2147483647 - 1) : (int)v);
}

__device__ __forceinline__ int llm_bit_length(llm_u64 v)
{
    int n = 0;
    while (v) { ++n; v >>= 1; }
    return n;
}

// c + a[0]*w[0] + a[1]*w[1] + a[2]*w[2] + a[3]*w[3]: a01/a23 hold two int16 each (low half first),
// w four int8 (lowest byte first).
__device__ __forceinline__ int llm_dot4(int a01, int a23, int w, int c)
{
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 610) && !defined(LLM_PLAIN_MAC)
    return __dp2a_hi(a23, w, __dp2a_lo(a01, w, c));
#else
    const int w0 = (signed char)(w & 0xff), w1 = (signed char)((w >> 8) & 0xff);
    const int w2 = (signed char)((w >> 16) & 0xff), w3 = (signed char)((w >> 24) & 0xff);
    const int x0 = (short)(a01 & 0xffff), x1 = (short)((a01 >> 16) & 0xffff);
    const int x2 = (short)(a23 & 0xffff), x3 = (short)((a23 >> 16) & 0xffff);
    return c + x0 * w0 + x1 * w1 + x2 * w2 + x3 * w3;
#endif
}

// grid = (T), block = 256
extern "C" __global__ void __launch_bounds__(LLM_THREADS)
llm_quant_rows(const int* __restrict__ x, short* __restrict__ a, int* __restrict__ s_out, int K, int Kp, int bits)
{
    __shared__ llm_i64 red[LLM_THREADS];
    __shared__ int shift;
    const int t = blockIdx.x, tid = threadIdx.x;
    const int* xr = x + (size_t)t * K;
    llm_i64 mx = 0;
    for (int k = tid; k < K; k += LLM_THREADS) {
        llm_i64 v = xr[k];
        v = v < 0 ? -v : v;
        mx = v > mx ? v : mx;
    }
    red[tid] = mx;
    __syncthreads();
    for (int w = LLM_THREADS / 2; w > 0; w >>= 1) {
        if (tid < w && red[tid + w] > red[tid]) red[tid] = red[tid + w];
        __syncthreads();
    }
    if (tid == 0) {
        int s = llm_bit_length((llm_u64)red[0]) - bits;
        s = s < -16 ? -16 : (s > 48 ? 48 : s);
        shift = s;
        s_out[t] = s;
    }
    __syncthreads();
    const int s = shift;
    short* ar = a + (size_t)t * Kp;
    for (int k = tid; k < Kp; k += LLM_THREADS)
        ar[k] = k < K ? (short)llm_round_shift((llm_i64)xr[k], s) : (short)0;
}

// grid = (ceil(O / 8), ceil(T / 8)), block = 256: warp w computes output row o = 8 * blockIdx.x + w for the
// positions 8 * blockIdx.y .. + 7; lane l takes the 32-groups g = l, l + 32, ... of the row.
extern "C" __global__ void __launch_bounds__(LLM_THREADS)
llm_matmul_q8(const short* __restrict__ a, const int* __restrict__ s, const signed char* __restrict__ q,
              const unsigned char* __restrict__ u, const int* __restrict__ m, int* __restrict__ y,
              int T, int O, int G)
{
    __shared__ llm_i64 red[LLM_ROWS][LLM_TB][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int o = blockIdx.x * LLM_ROWS + warp;
    const int t0 = blockIdx.y * LLM_TB;
    const int nt = T - t0 < LLM_TB ? T - t0 : LLM_TB;
    const size_t Kp = (size_t)G * LLM_GROUP;
    llm_i64 acc[LLM_TB];
#pragma unroll
    for (int i = 0; i < LLM_TB; ++i) acc[i] = 0;
    if (o < O) {
        const signed char* qr = q + (size_t)o * Kp;
        const unsigned char* ur = u + (size_t)o * G;
        for (int g = lane; g < G; g += 32) {
            const int4* wp = (const int4*)(qr + (size_t)g * LLM_GROUP);
            const int4 w0 = wp[0], w1 = wp[1];
            const int w[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
            const llm_i64 ug = ur[g];
#pragma unroll
            for (int i = 0; i < LLM_TB; ++i) {
                if (i < nt) {
                    const int4* ap = (const int4*)(a + (size_t)(t0 + i) * Kp + (size_t)g * LLM_GROUP);
                    int d = 0;
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        const int4 av = ap[j];
                        d = llm_dot4(av.x, av.y, w[2 * j], d);
                        d = llm_dot4(av.z, av.w, w[2 * j + 1], d);
                    }
                    acc[i] += (llm_i64)d * ug;
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < LLM_TB; ++i) red[warp][i][lane] = acc[i];
    __syncthreads();
    if (o < O && lane < nt) {
        llm_i64 sum = 0;
        for (int j = 0; j < 32; ++j) sum += red[warp][lane][j];
        const int t = t0 + lane;
        const llm_i64 r = llm_round_shift(sum, LLM_ACC_DROP) * (llm_i64)m[o];
        y[(size_t)t * O + o] = llm_sat32(llm_round_shift(r, LLM_W_FRAC - LLM_ACC_DROP - s[t]));
    }
}
