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

// The maximum (or the sum) of every thread's v, through red (LLM_THREADS int64 of shared memory); every
// thread gets it. Call from every thread of the block: it synchronises the block.
__device__ llm_i64 llm_block_reduce(llm_i64 v, llm_i64* red, bool sum)
{
    const int tid = threadIdx.x;
    red[tid] = v;
    __syncthreads();
    for (int w = LLM_THREADS / 2; w > 0; w >>= 1) {
        if (tid < w) red[tid] = sum ? red[tid] + red[tid + w] : (red[tid + w] > red[tid] ? red[tid + w] : red[tid]);
        __syncthreads();
    }
    const llm_i64 r = red[0];
    __syncthreads();
    return r;
}

// max |x[k]| over k < n, by the whole block (see llm_block_reduce)
__device__ llm_i64 llm_block_max_abs(const int* __restrict__ x, int n, llm_i64* red)
{
    llm_i64 mx = 0;
    for (int k = threadIdx.x; k < n; k += LLM_THREADS) {
        llm_i64 v = x[k];
        v = v < 0 ? -v : v;
        mx = v > mx ? v : mx;
    }
    return llm_block_reduce(mx, red, false);
}

// fixed.quant_shift's exponent for a vector of largest magnitude mx: clamp(bit_length(mx) - bits, -16, 48)
__device__ __forceinline__ int llm_quant_exp(llm_i64 mx, int bits)
{
    const int s = llm_bit_length((llm_u64)mx) - bits;
    return s < -16 ? -16 : (s > 48 ? 48 : s);
}

// grid = (T), block = 256
extern "C" __global__ void __launch_bounds__(LLM_THREADS)
llm_quant_rows(const int* __restrict__ x, short* __restrict__ a, int* __restrict__ s_out, int K, int Kp, int bits)
{
    __shared__ llm_i64 red[LLM_THREADS];
    const int t = blockIdx.x, tid = threadIdx.x;
    const int* xr = x + (size_t)t * K;
    const int s = llm_quant_exp(llm_block_max_abs(xr, K, red), bits);
    if (tid == 0) s_out[t] = s;
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

// ---------------------------------------------------------------------------------------------------------
// Attention over the KV cache (state/llm/generate.py::_attention_heads = fixed.attention_q16_keys per KV
// head), bit-exact. One block per (query row r, KV head h): r = t * grp + g is query head h * grp + g of
// position t (pos[t]); keys 0 .. n_s - 1 of head h, those after pos[t] masked.
//   kv int32 [cap][nkv][2 * hd + 1]: per cached position and KV head, ka (the key through quant_shift,
//      |ka| <= 2**14), v (int32), then sk (the key's exponent);
//   q int32 [T][n_heads][hd] (already roped and saturated); exp_t int64 [65536] (fixed._exp_r16_table);
//   scratch int64 [nkv][T * grp][n_s]: the scores, then the weights e; out int64 [T][n_heads * hd].
// score_j = round_shift(dot(qa, ka_j) * c, min(32 - sq - sk_j, 62)), c = isqrt(2**32 // hd);
// e_j = round_shift(exp_q30(score_j - max score), 14); out = round_div(sum e_j v_j, sum e_j) (floor).
// Every int64 step is the NumPy one: shifts by 64 or more give 0 (as NumPy's), divisions floor.

__device__ __forceinline__ llm_i64 llm_shl(llm_i64 x, int n)  // NumPy's int64 << n (n >= 0)
{
    return n >= 64 ? 0 : (llm_i64)((llm_u64)x << n);
}

__device__ __forceinline__ llm_i64 llm_shr(llm_i64 x, int n)  // NumPy's int64 >> n (n >= 0): arithmetic
{
    return n >= 64 ? (x < 0 ? -1 : 0) : (x >> n);
}

__device__ __forceinline__ llm_i64 llm_round_shift_np(llm_i64 x, int s)  // fixed.round_shift, any s
{
    if (s > 0) return llm_shr((llm_i64)((llm_u64)x + (llm_u64)llm_shl(1, s - 1)), s);
    return llm_shl(x, -s);
}

__device__ __forceinline__ llm_i64 llm_floordiv(llm_i64 a, llm_i64 b)  // b > 0
{
    llm_i64 q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

__device__ __forceinline__ llm_i64 llm_exp_q30(llm_i64 z, const llm_i64* __restrict__ exp_t, llm_i64 ln2)
{
    const llm_i64 nz = -z < (1LL << 40) ? -z : (1LL << 40);  // z <= 0
    const llm_i64 n32 = nz << 16;
    const llm_i64 k = n32 / ln2;  // both >= 0: floor
    const llm_i64 r16 = (n32 - k * ln2 + (1LL << 15)) >> 16;
    const llm_i64 e = exp_t[r16];
    const int kk = k < 40 ? (int)k : 40;
    return (((e << 1) >> kk) + 1) >> 1;
}

// grid = (T * grp, nkv), block = 256
extern "C" __global__ void __launch_bounds__(LLM_THREADS)
llm_attention(const int* __restrict__ q, const int* __restrict__ pos, const int* __restrict__ kv,
              const llm_i64* __restrict__ exp_t, llm_i64* __restrict__ scratch, llm_i64* __restrict__ out,
              int n_s, int nkv, int grp, int hd, llm_i64 c, llm_i64 ln2)
{
    __shared__ llm_i64 red[LLM_THREADS];
    __shared__ int qa[256];
    const int tid = threadIdx.x, r = blockIdx.x, h = blockIdx.y;
    const int t = r / grp, g = r - t * grp;
    const int head = h * grp + g, nh = nkv * grp;
    const int* qr = q + ((size_t)t * nh + head) * hd;
    const llm_i64 qpos = pos[t];
    const int w = 2 * hd + 1;
    llm_i64* e = scratch + ((size_t)h * gridDim.x + r) * n_s;

    // quant_shift of the query row (QBITS = 14)
    const int sq = llm_quant_exp(llm_block_max_abs(qr, hd, red), 14);
    for (int k = tid; k < hd; k += LLM_THREADS) qa[k] = (int)llm_round_shift_np((llm_i64)qr[k], sq);
    __syncthreads();

    // scores (kept in e[]) and their maximum over the unmasked keys
    llm_i64 best = (llm_i64)(-9223372036854775807LL - 1);
    for (int j = tid; j < n_s; j += LLM_THREADS) {
        if (j > qpos) continue;
        const int* kr = kv + ((size_t)j * nkv + h) * w;
        llm_i64 dot = 0;
        for (int k = 0; k < hd; ++k) dot += (llm_i64)qa[k] * kr[k];
        int sh = 32 - sq - kr[2 * hd];
        sh = sh < 62 ? sh : 62;
        const llm_i64 sc = llm_round_shift_np((llm_i64)((llm_u64)dot * (llm_u64)c), sh);
        e[j] = sc;
        best = sc > best ? sc : best;
    }
    const llm_i64 top = llm_block_reduce(best, red, false);

    // weights and their sum
    llm_i64 sum = 0;
    for (int j = tid; j < n_s; j += LLM_THREADS) {
        llm_i64 ej = 0;
        if (j <= qpos) ej = (llm_exp_q30(e[j] - top, exp_t, ln2) + (1LL << 13)) >> 14;
        e[j] = ej;
        sum += ej;
    }
    const llm_i64 d = llm_block_reduce(sum, red, true);

    // out = round_div(sum_j e_j v_j, d)
    llm_i64* o = out + (size_t)t * nh * hd + (size_t)head * hd;
    for (int k = tid; k < hd; k += LLM_THREADS) {
        llm_i64 num = 0;
        for (int j = 0; j <= qpos && j < n_s; ++j) num += e[j] * (llm_i64)kv[((size_t)j * nkv + h) * w + hd + k];
        o[k] = llm_floordiv(num + d / 2, d);
    }
}

// ---------------------------------------------------------------------------------------------------------
// SwiGLU of the stacked gate/up product (state/llm/generate.py::_swiglu), bit-exact: gu int32 [T][2F] (gate
// then up, as llm_matmul_q8 wrote them), sw int32 [T][F] = sat32(round_shift(silu_q16(g) * u, 16)) with
// silu_q16(g) = round_shift(g * sigmoid_q30(g), 30), sigmoid_q30(g) = round_div(g >= 0 ? 2**60 : e * 2**30,
// 2**30 + e), e = exp_q30(-|g|). grid = ceil(T * F / 256), block = 256.
extern "C" __global__ void __launch_bounds__(LLM_THREADS)
llm_swiglu(const int* __restrict__ gu, const llm_i64* __restrict__ exp_t, int* __restrict__ sw, int T, int F,
           llm_i64 ln2)
{
    const size_t i = (size_t)blockIdx.x * LLM_THREADS + threadIdx.x;
    if (i >= (size_t)T * F) return;
    const size_t t = i / F, f = i - t * F;
    const llm_i64 g = gu[t * 2 * F + f], u = gu[t * 2 * F + F + f];
    const llm_i64 e = llm_exp_q30(g < 0 ? g : -g, exp_t, ln2);
    const llm_i64 den = e + (1LL << 30);
    llm_i64 num = g >= 0 ? (1LL << 60) : (e << 30);
    num = (num + (den >> 1)) / den;  // both positive: floor
    num = (num * g + (1LL << 29)) >> 30;
    num = (num * u + (1LL << 15)) >> 16;
    sw[i] = llm_sat32(num);
}
