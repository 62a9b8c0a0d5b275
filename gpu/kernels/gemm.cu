// Tiled shared-memory GEMM, C[M][N] = A[M][K] * B[K][N], all row-major.
// Block tile 64x64, K step 16, 256 threads (16x16); thread (ty, tx) accumulates the 4x4 outputs at
// rows ty + 16*i and columns tx + 16*j in registers. Tiles are loaded with coalesced reads (a warp
// reads 2 x 16 consecutive elements of A, 32 consecutive elements of B) and zero-padded at the
// edges (a zero adds nothing). A is stored transposed in shared memory with one column of padding.
//   matmul_u32:     unsigned 32-bit multiply-add, which wraps mod 2^32 exactly like NumPy's uint32.
//   sgemm_bias_act: float32 fmaf accumulation, then + bias[col] and optionally ReLU.

typedef unsigned int u32;

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 16
#define GEMM_THREADS 256

__device__ __forceinline__ u32 gemm_mac(u32 acc, u32 a, u32 b) { return acc + a * b; }
__device__ __forceinline__ float gemm_mac(float acc, float a, float b) { return fmaf(a, b, acc); }

template <typename T>
__device__ __forceinline__ void gemm_tile(const T* __restrict__ A, const T* __restrict__ B,
                                          int M, int N, int K, int row0, int col0, T acc[4][4])
{
    __shared__ T As[GEMM_BK][GEMM_BM + 1];
    __shared__ T Bs[GEMM_BK][GEMM_BN];
    const int tid = threadIdx.x;
    const int tx = tid & 15;
    const int ty = tid >> 4;

#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
            acc[i][j] = (T)0;

    for (int k0 = 0; k0 < K; k0 += GEMM_BK) {
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const int e = tid + l * GEMM_THREADS;
            const int ar = e >> 4, ac = e & 15;   // A tile: 64 rows x 16 columns
            const int gar = row0 + ar, gac = k0 + ac;
            As[ac][ar] = (gar < M && gac < K) ? A[(size_t)gar * K + gac] : (T)0;
            const int br = e >> 6, bc = e & 63;   // B tile: 16 rows x 64 columns
            const int gbr = k0 + br, gbc = col0 + bc;
            Bs[br][bc] = (gbr < K && gbc < N) ? B[(size_t)gbr * N + gbc] : (T)0;
        }
        __syncthreads();
#pragma unroll
        for (int p = 0; p < GEMM_BK; ++p) {
            T a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[p][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[p][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
                    acc[i][j] = gemm_mac(acc[i][j], a[i], b[j]);
        }
        __syncthreads();
    }
}

// grid = (ceil(N/64), ceil(M/64)), block = 256
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
matmul_u32(const u32* __restrict__ A, const u32* __restrict__ B, u32* __restrict__ C, int M, int N, int K)
{
    const int row0 = blockIdx.y * GEMM_BM, col0 = blockIdx.x * GEMM_BN;
    u32 acc[4][4];
    gemm_tile<u32>(A, B, M, N, K, row0, col0, acc);
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int r = row0 + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int c = col0 + tx + 16 * j;
            if (r < M && c < N) C[(size_t)r * N + c] = acc[i][j];
        }
    }
}

// C = act(A * B + bias), act = ReLU when relu != 0. grid = (ceil(N/64), ceil(M/64)), block = 256
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
sgemm_bias_act(const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ bias,
               float* __restrict__ C, int M, int N, int K, int relu)
{
    const int row0 = blockIdx.y * GEMM_BM, col0 = blockIdx.x * GEMM_BN;
    float acc[4][4];
    gemm_tile<float>(A, B, M, N, K, row0, col0, acc);
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int c = col0 + tx + 16 * j;
        if (c >= N) continue;
        const float bj = bias[c];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = row0 + ty + 16 * i;
            if (r < M) {
                float v = acc[i][j] + bj;
                if (relu) v = fmaxf(v, 0.0f);
                C[(size_t)r * N + c] = v;
            }
        }
    }
}
