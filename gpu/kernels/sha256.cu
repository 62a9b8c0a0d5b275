// hash-chain: one thread per chain. SHA-256 (FIPS 180-4) on big-endian 32-bit words.
//   chain j: s0 = sha256(seed(32 bytes) || le64(j)); s_{t+1} = sha256(s_t) (32 bytes), `iterations` times.
// Both messages fit one 64-byte block, so each hash is one compression of a padded block:
//   40-byte start: W0..7 = seed words, W8 = bswap(j), W9 = 0 (j < 2^32), W10 = 0x80000000, W15 = 320
//   32-byte step:  W0..7 = state words,                W8 = 0x80000000,                   W15 = 256
// The output stores each state word byte-swapped, so the bytes in memory are the digest bytes.

typedef unsigned int u32;

__constant__ u32 SHA256_K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u};

__device__ __forceinline__ u32 rotr32(u32 x, int n) { return __funnelshift_r(x, x, n); }  // n in 1..31
__device__ __forceinline__ u32 bswap32(u32 x) { return __byte_perm(x, 0, 0x0123); }

// One compression of block w (destroyed) into a fresh state initialised to the SHA-256 IV.
__device__ __forceinline__ void sha256_block(u32 w[16], u32 out[8])
{
    u32 a = 0x6a09e667u, b = 0xbb67ae85u, c = 0x3c6ef372u, d = 0xa54ff53au;
    u32 e = 0x510e527fu, f = 0x9b05688cu, g = 0x1f83d9abu, h = 0x5be0cd19u;
#pragma unroll
    for (int i = 0; i < 64; ++i) {
        u32 wi;
        if (i < 16) {
            wi = w[i];
        } else {  // rolling schedule: w[i & 15] holds W[i-16]
            const u32 w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
            const u32 s0 = rotr32(w15, 7) ^ rotr32(w15, 18) ^ (w15 >> 3);
            const u32 s1 = rotr32(w2, 17) ^ rotr32(w2, 19) ^ (w2 >> 10);
            wi = w[i & 15] + s0 + w[(i - 7) & 15] + s1;
            w[i & 15] = wi;
        }
        const u32 S1 = rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25);
        const u32 ch = (e & f) ^ (~e & g);
        const u32 t1 = h + S1 + ch + SHA256_K[i] + wi;
        const u32 S0 = rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22);
        const u32 maj = (a & b) ^ (a & c) ^ (b & c);
        const u32 t2 = S0 + maj;
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    out[0] = 0x6a09e667u + a; out[1] = 0xbb67ae85u + b; out[2] = 0x3c6ef372u + c; out[3] = 0xa54ff53au + d;
    out[4] = 0x510e527fu + e; out[5] = 0x9b05688cu + f; out[6] = 0x1f83d9abu + g; out[7] = 0x5be0cd19u + h;
}

// seed_be: the 32-byte seed as 8 big-endian words; out: chains x 8 words (digest bytes in memory).
// grid = ceil(chains / blockDim.x), any block size (128 is used).
extern "C" __global__ void hash_chain(const u32* __restrict__ seed_be, u32* __restrict__ out,
                                      u32 chains, u32 iterations)
{
    const u32 j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= chains) return;
    u32 w[16], s[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = seed_be[i];
    w[8] = bswap32(j);  // bytes 32..35 = le32(j); bytes 36..39 = 0
    w[9] = 0u;
    w[10] = 0x80000000u;
    w[11] = 0u; w[12] = 0u; w[13] = 0u; w[14] = 0u;
    w[15] = 320u;  // message length in bits
    sha256_block(w, s);
    for (u32 t = 0; t < iterations; ++t) {
#pragma unroll
        for (int i = 0; i < 8; ++i) w[i] = s[i];
        w[8] = 0x80000000u;
        w[9] = 0u; w[10] = 0u; w[11] = 0u; w[12] = 0u; w[13] = 0u; w[14] = 0u;
        w[15] = 256u;
        sha256_block(w, s);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) out[(size_t)j * 8 + i] = bswap32(s[i]);
}
