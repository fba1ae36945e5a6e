// bench/gemm_wgmma/gemm_wgmma.cu: the test and benchmark of peft_cuda.cu's Hopper GEMM (gemm_wgmma_kernel,
// namespace wgk there): correctness on 44 shapes against a plain fp32-accumulating kernel, then TFLOP/s on
// the Llama layer shapes beside cuBLAS (cublasGemmEx, bf16 in, fp32 out) in the same run.
//
// Build:  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -Wall,-Wextra -o gemm_wgmma gemm_wgmma.cu
// cuBLAS: add -DWITH_CUBLAS -lcublasLt -lcublas       (run.sh does both, then runs them)
// Run:    ./gemm_wgmma [all|correct|speed]
#include "../../peft_cuda.cu"
#include <vector>
#include <algorithm>
#include <string>
#ifdef WITH_CUBLAS
#include <cublas_v2.h>
#endif


static const char *g_ctx = "";  // what the program was doing (printed on a CUDA error)
#define CKT(x)                                                                                                     \
    do {                                                                                                          \
        cudaError_t e_ = (x);                                                                                     \
        if (e_ != cudaSuccess) {                                                                                  \
            printf("CUDA ERROR at %s:%d in [%s]: %s -> %s (%d)\n", __FILE__, __LINE__, g_ctx, #x, cudaGetErrorString(e_), \
                   (int)e_);                                                                                      \
            fflush(stdout);                                                                                       \
            exit(2);                                                                                              \
        }                                                                                                         \
    } while (0)

// ---- data generation (seeded LCG hash per element, on the device) ----
__device__ __forceinline__ float lcg_uniform(unsigned long long seed, unsigned long long idx) {
    unsigned long long s = seed * 0x9E3779B97F4A7C15ull + idx;
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    s ^= s >> 29;
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    s ^= s >> 32;
    return (float)((s >> 40) & 0xFFFFFF) * (2.0f / 16777216.0f) - 1.0f;  // [-1, 1)
}
// rows x ld buffer: columns < cols get uniform [-1,1) bf16, columns in [cols, ld) get garbage (NaN / huge).
__global__ void fill_bf16_kernel(__nv_bfloat16 *p, long rows, long cols, long ld, unsigned long long seed) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < rows * ld; i += (long)gridDim.x * blockDim.x) {
        const long c = i % ld;
        if (c < cols) p[i] = __float2bfloat16(lcg_uniform(seed, (unsigned long long)i));
        else {
            __nv_bfloat16_raw r;
            r.x = (c & 1) ? 0x7FC1 : 0x7F00;  // NaN or 1.7e38: any read of the pad as data wrecks the result
            p[i] = __nv_bfloat16(r);
        }
    }
}
// Structured probes. mode 0: A[i][k] = (k == i%64), B[j][k] = k + 64*(j%4)  => C[i][j] = (i%64) + 64*(j%4)
//                    mode 1: A[i][k] = k + 64*(i%4), B[j][k] = (k == j%64)  => C[i][j] = (j%64) + 64*(i%4)
// (integers < 256 are exact in bf16, so a wrong value decodes to the (row-mod-4, k) actually fetched)
__global__ void fill_probe_kernel(__nv_bfloat16 *p, long rows, long cols, long ld, int onehot) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < rows * ld; i += (long)gridDim.x * blockDim.x) {
        const long r = i / ld, c = i % ld;
        float v = 0.f;
        if (c < cols) v = onehot ? (c == r % 64 ? 1.f : 0.f) : (float)(c + 64 * (r % 4));
        p[i] = __float2bfloat16(v);
    }
}
__global__ void fill_f32_kernel(float *p, long n, unsigned long long seed, int poison) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        if (poison) p[i] = __uint_as_float(0x7FC00001u);
        else p[i] = lcg_uniform(seed, (unsigned long long)i);
    }
}

// Reference: fp32 accumulation, one thread per output, 16x16 shared-memory tiles of the same bf16 inputs.
__global__ void ref_gemm_kernel(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M,
                                int N, int K, int accumulate) {
    __shared__ float sa[16][17], sb[16][17];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
    double acc = 0.0; // the sum in double: an fp32 sum over K = 11008 terms is itself off by up to 1e-3
    for (int k0 = 0; k0 < K; k0 += 16) {
        const int ar = blockIdx.y * 16 + ty, br = blockIdx.x * 16 + ty;
        sa[ty][tx] = (ar < M && k0 + tx < K) ? __bfloat162float(a[(long)ar * lda + k0 + tx]) : 0.f;
        sb[ty][tx] = (br < N && k0 + tx < K) ? __bfloat162float(b[(long)br * ldb + k0 + tx]) : 0.f;
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 16; ++kk) acc = fma((double)sa[ty][kk], (double)sb[tx][kk], acc);
        __syncthreads();
    }
    if (row < M && col < N) {
        float *p = c + (long)row * ldc + col;
        *p = (float)(accumulate ? *p + acc : acc);
    }
}
static void ref_gemm(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M, int N, int K,
                     int acc) {
    dim3 g((N + 15) / 16, (M + 15) / 16), blk(16, 16);
    ref_gemm_kernel<<<g, blk>>>(c, ldc, a, lda, b, ldb, M, N, K, acc);
    CKT(cudaGetLastError());
}

static int grid_for(long n) { long g = (n + 255) / 256; return (int)std::min(g, 132L * 32); }
static void fill_bf16(__nv_bfloat16 *p, long rows, long cols, long ld, unsigned long long seed) {
    fill_bf16_kernel<<<grid_for(rows * ld), 256>>>(p, rows, cols, ld, seed);
    CKT(cudaGetLastError());
}
static void fill_f32(float *p, long n, unsigned long long seed, int poison) {
    fill_f32_kernel<<<grid_for(n), 256>>>(p, n, seed, poison);
    CKT(cudaGetLastError());
}

// ---- comparison ----
struct CmpResult {
    double max_err = 0;
    long bad = 0, nan = 0, pad_bad = 0;
    bool pass = true;
};
// c and r: host copies of M x ldc buffers; columns >= N must be bit-identical (untouched).
static CmpResult compare(const char *label, const float *c, const float *r, int M, int N, long ldc, int BN, int probe_mode,
                         double tol = 1e-3) {
    CmpResult res;
    int shown = 0;
    long min_r = -1, max_r = -1, min_c = -1, max_c = -1;
    for (long i = 0; i < M; ++i) {
        for (long j = 0; j < N; ++j) {
            const float g = c[i * ldc + j], e = r[i * ldc + j];
            double err = fabs((double)g - (double)e) / std::max(1.0, fabs((double)e));
            const bool isnan_ = !(g == g) || isinf(g);
            if (isnan_) { err = INFINITY; res.nan++; }
            if (err > res.max_err) res.max_err = err;
            if (err > tol) {
                if (res.bad == 0) { min_r = max_r = i; min_c = max_c = j; }
                min_r = std::min(min_r, i); max_r = std::max(max_r, i);
                min_c = std::min(min_c, j); max_c = std::max(max_c, j);
                res.bad++;
                if (shown < 6) {
                    printf("    [%s] bad C[%ld][%ld]: expected %.7g got %.7g (rel err %.3g)  tile-local row %ld (consumer wg %ld, warp %ld, lane/4 %ld%s), tile-local col %ld (8-col chunk %ld, lane%%4 %ld, %s)\n",
                           label, i, j, e, g, err, i % 128, (i % 128) / 64, (i % 64) / 16, i % 8, (i % 16) >= 8 ? ", +8 half" : "",
                           j % BN, (j % BN) / 8, (j % 8) / 2, (j & 1) ? "odd" : "even");
                    if (probe_mode == 0 && g == g) {
                        int v = (int)lrintf(g);
                        printf("      probe decode: got value %d = k %d + 64*(B row%%4 = %d); expected k=%ld (A row %ld %% 64), B row%%4=%ld\n", v,
                               v % 64, v / 64, i % 64, i, j % 4);
                    } else if (probe_mode == 1 && g == g) {
                        int v = (int)lrintf(g);
                        printf("      probe decode: got value %d = k %d + 64*(A row%%4 = %d); expected k=%ld (B row %ld %% 64), A row%%4=%ld\n", v,
                               v % 64, v / 64, j % 64, j, i % 4);
                    }
                    shown++;
                }
            }
        }
        for (long j = N; j < ldc; ++j) {
            uint32_t gb, eb;
            memcpy(&gb, &c[i * ldc + j], 4);
            memcpy(&eb, &r[i * ldc + j], 4);
            if (gb != eb) {
                if (res.pad_bad < 3)
                    printf("    [%s] pad element C[%ld][%ld] (col >= N=%d) was modified: before 0x%08x now 0x%08x (%g)\n", label, i, j, N,
                           eb, gb, c[i * ldc + j]);
                res.pad_bad++;
            }
        }
    }
    if (res.bad)
        printf("    [%s] %ld bad elements of %ld (%ld NaN/Inf = unwritten or garbage read); bad rows %ld..%ld, bad cols %ld..%ld\n", label,
               res.bad, (long)M * N, res.nan, min_r, max_r, min_c, max_c);
    res.pass = res.bad == 0 && res.pad_bad == 0;
    return res;
}

// ---- variants ----
typedef cudaError_t (*GemmFn)(float *, long, const __nv_bfloat16 *, long, const __nv_bfloat16 *, long, int, int, int, int,
                              cudaStream_t, int);
typedef cudaError_t (*GemmK2Fn)(float *, long, const __nv_bfloat16 *, long, const __nv_bfloat16 *, long, int, int, int, int,
                                const __nv_bfloat16 *, long, const __nv_bfloat16 *, long, int);
struct Variant {
    const char *name;
    GemmFn fn;
    int bn;
    GemmK2Fn k2;
};
// B given as B^T (N x K, K-major); the stores straight from registers (SB 0) or through SB bytes of smem
template <int BN, int STAGES, int SB>
static cudaError_t wgmma_fn(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M, int N, int K,
                            int acc, cudaStream_t st, int max_ctas) {
    return wgk::gemm_wgmma_t<BN, STAGES, SB>(c, ldc, a, lda, b, ldb, M, N, K, acc, st, max_ctas, 0);
}
template <int BN, int STAGES, int SB>
static cudaError_t wgmma_k2_fn(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M, int N, int K,
                               int acc, const __nv_bfloat16 *a2, long lda2, const __nv_bfloat16 *b2, long ldb2, int K2) {
    return wgk::gemm_wgmma_t<BN, STAGES, SB>(c, ldc, a, lda, b, ldb, M, N, K, acc, 0, 0, 0, a2, lda2, b2, ldb2, K2);
}
static Variant variants[] = {
    {"wgmma_bn256_s4", wgmma_fn<256, 4, 0>, 256, wgmma_k2_fn<256, 4, 0>},
    {"bn256_s4_tma16k", wgmma_fn<256, 4, 16384>, 256, wgmma_k2_fn<256, 4, 16384>},
    {"bn256_s3_tma32k", wgmma_fn<256, 3, 32768>, 256, wgmma_k2_fn<256, 3, 32768>},
    {"wgmma_bn128_s6", wgmma_fn<128, 6, 0>, 128, wgmma_k2_fn<128, 6, 0>},
};
static const int NVAR = sizeof(variants) / sizeof(variants[0]);

#ifdef WITH_CUBLAS
static cublasHandle_t g_cublas = nullptr;
#define CKB(x)                                                                                            \
    do {                                                                                                  \
        cublasStatus_t s_ = (x);                                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                \
            printf("CUBLAS ERROR at %s:%d in [%s]: %s -> status %d\n", __FILE__, __LINE__, g_ctx, #x, (int)s_); \
            exit(2);                                                                                      \
        }                                                                                                 \
    } while (0)
// Row-major C(MxN) = A(MxK) B(NxK)^T  ==  column-major C^T(NxM) = B^T... : op(B)=T on col-major (K x N, ldb), A col-major (K x M, lda)
static void cublas_gemm(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M, int N, int K,
                        int acc) {
    const float alpha = 1.f, beta = acc ? 1.f : 0.f;
    CKB(cublasGemmEx(g_cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, b, CUDA_R_16BF, (int)ldb, a, CUDA_R_16BF, (int)lda, &beta, c,
                     CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
#endif

struct Shape {
    int M, N, K;
    long lda, ldb, ldc;  // 0 = default (K rounded up to 8 / N)
    int acc;
    int probe;    // -1 none, 0/1 probe modes
    int max_ctas; // 0 = SM count
    int coff;     // C base offset in floats (1 => only 4-byte aligned)
    const char *note;
};

static long round8(long x) { return (x + 7) / 8 * 8; }

static int n_pass = 0, n_fail = 0;
#ifdef WITH_CUBLAS
static int n_cub_fail = 0;
#endif

static void run_correctness_case(const Shape &s0, unsigned long long seed) {
    Shape s = s0;
    if (!s.lda) s.lda = round8(s.K);
    if (!s.ldb) s.ldb = round8(s.K);
    if (!s.ldc) s.ldc = s.N;
    char desc[256];
    snprintf(desc, sizeof desc, "M=%d N=%d K=%d lda=%ld ldb=%ld ldc=%ld acc=%d%s%s%s", s.M, s.N, s.K, s.lda, s.ldb, s.ldc, s.acc,
             s.coff ? " C+1float(4B-aligned)" : "", s.max_ctas ? " (grid capped)" : "", s.note ? s.note : "");
    g_ctx = desc;
    __nv_bfloat16 *a, *b;
    float *cbuf, *rbuf;
    const long csz = (long)s.M * s.ldc + 4;
    CKT(cudaMalloc(&a, (size_t)s.M * s.lda * 2));
    CKT(cudaMalloc(&b, (size_t)s.N * s.ldb * 2));
    CKT(cudaMalloc(&cbuf, (size_t)csz * 4));
    CKT(cudaMalloc(&rbuf, (size_t)csz * 4));
    float *c = cbuf + s.coff, *r = rbuf + s.coff;
    if (s.probe < 0) {
        fill_bf16(a, s.M, s.K, s.lda, seed * 3 + 1);
        fill_bf16(b, s.N, s.K, s.ldb, seed * 3 + 2);
    } else {
        fill_probe_kernel<<<grid_for((long)s.M * s.lda), 256>>>(a, s.M, s.K, s.lda, s.probe == 0);
        CKT(cudaGetLastError());
        fill_probe_kernel<<<grid_for((long)s.N * s.ldb), 256>>>(b, s.N, s.K, s.ldb, s.probe == 1);
        CKT(cudaGetLastError());
    }
    // reference
    fill_f32(rbuf, csz, seed * 3 + 3, !s.acc);
    ref_gemm(r, s.ldc, a, s.lda, b, s.ldb, s.M, s.N, s.K, s.acc);
    CKT(cudaDeviceSynchronize());
    std::vector<float> hr((size_t)s.M * s.ldc), hc((size_t)s.M * s.ldc);
    CKT(cudaMemcpy(hr.data(), r, hr.size() * 4, cudaMemcpyDeviceToHost));
    for (int v = 0; v < NVAR; ++v) {
        fill_f32(cbuf, csz, seed * 3 + 3, !s.acc);  // same initial C as the reference (poison NaN or random)
        CKT(cudaDeviceSynchronize());
        CKT(variants[v].fn(c, s.ldc, a, s.lda, b, s.ldb, s.M, s.N, s.K, s.acc, 0, s.max_ctas));
        CKT(cudaDeviceSynchronize());
        CKT(cudaMemcpy(hc.data(), c, hc.size() * 4, cudaMemcpyDeviceToHost));
        CmpResult cr = compare(variants[v].name, hc.data(), hr.data(), s.M, s.N, s.ldc, variants[v].bn, s.probe);
        printf("%s %-16s %s  max_rel_err=%.3g%s\n", cr.pass ? "PASS" : "FAIL", variants[v].name, desc, cr.max_err,
               cr.pad_bad ? "  (pad columns modified!)" : "");
        fflush(stdout);
        if (cr.pass) n_pass++; else n_fail++;
    }
#ifdef WITH_CUBLAS
    if (s.probe < 0) {  // cross-check of the reference itself
        fill_f32(cbuf, csz, seed * 3 + 3, !s.acc);
        cublas_gemm(c, s.ldc, a, s.lda, b, s.ldb, s.M, s.N, s.K, s.acc);
        CKT(cudaDeviceSynchronize());
        CKT(cudaMemcpy(hc.data(), c, hc.size() * 4, cudaMemcpyDeviceToHost));
        CmpResult cr = compare("cublas", hc.data(), hr.data(), s.M, s.N, s.ldc, 256, -1);
        printf("%s %-16s %s  max_rel_err=%.3g  (cuBLAS vs reference: checks the reference)\n", cr.pass ? "pass" : "MISMATCH",
               "cublas", desc, cr.max_err);
        if (!cr.pass) n_cub_fail++;
    }
#endif
    CKT(cudaFree(a));
    CKT(cudaFree(b));
    CKT(cudaFree(cbuf));
    CKT(cudaFree(rbuf));
}

static void correctness() {
    printf("== correctness (tolerance: max |c-ref|/max(1,|ref|) <= 1e-3; C poisoned with NaN unless acc=1; pad columns must stay untouched) ==\n");
    const Shape shapes[] = {
        // structured probes first: a failure here decodes which smem element the MMA actually read
        {128, 256, 64, 0, 0, 0, 0, 0, 0, 0, " probe0 (A one-hot, B encoded)"},
        {128, 256, 64, 0, 0, 0, 0, 1, 0, 0, " probe1 (A encoded, B one-hot)"},
        {128, 256, 64, 0, 0, 0, 0, -1, 0, 0, nullptr},
        {1, 1, 1, 0, 0, 0, 0, -1, 0, 0, nullptr},
        {7, 13, 5, 0, 0, 0, 0, -1, 0, 0, nullptr},
        {130, 250, 70, 0, 0, 0, 0, -1, 0, 0, nullptr},
        {1000, 3000, 200, 0, 0, 0, 0, -1, 0, 0, nullptr},
        {8192, 2048, 2048, 0, 0, 0, 0, -1, 0, 0, nullptr},
        {8192, 5632, 2048, 0, 0, 0, 0, -1, 0, 0, nullptr},
        {8192, 2048, 5632, 0, 0, 0, 0, -1, 0, 0, nullptr},
        {300, 520, 1000, 0, 0, 523, 1, -1, 0, 0, nullptr},
        // extras
        {300, 520, 1000, 0, 0, 523, 0, -1, 0, 0, nullptr},
        {300, 520, 1000, 0, 0, 523, 1, -1, 0, 1, nullptr},
        {1000, 3000, 203, 264, 216, 3001, 0, -1, 0, 0, " (wide pads of NaN garbage)"},
        {1000, 3000, 130, 0, 0, 3001, 0, -1, 5, 0, " (5 CTAs: many tiles per CTA, odd k-tile count)"},
        {1000, 3000, 130, 0, 0, 3001, 1, -1, 7, 0, " (7 CTAs)"},
        {257, 129, 4096, 0, 0, 0, 0, -1, 0, 0, nullptr},
        {64, 8, 1, 0, 0, 0, 0, -1, 0, 0, nullptr},
        {2, 300, 9, 0, 0, 301, 0, -1, 0, 1, nullptr},
        {2100, 1000, 128, 0, 0, 0, 0, -1, 0, 0, " (17 M-tiles: partial last tile group)"},
        {2048, 16, 4096, 0, 0, 0, 1, -1, 0, 0, " (LoRA-like narrow N)"},
        {16, 2048, 4096, 0, 0, 0, 0, -1, 0, 0, " (LoRA-like narrow M)"},
    };
    unsigned long long seed = 12345;
    for (const Shape &s : shapes) run_correctness_case(s, seed++);
    printf("wgmma correctness: %d passed, %d failed\n", n_pass, n_fail);
#ifdef WITH_CUBLAS
    printf("cublas-vs-reference mismatches: %d (nonzero => suspect the reference kernel or the test, not only wgmma)\n", n_cub_fail);
#endif
    fflush(stdout);
}

// C (+)= A B^T + A2 B2^T with A2 (M, K2), B2 (N, K2): the rank-r product (LoRA's) as one more step over K
static void correctness_k2() {
    printf("== correctness, a second product A2 B2^T in the same GEMM (K2 <= 64) ==\n");
    const int shapes[][5] = {{1000, 3000, 200, 8, 0}, {1000, 3000, 200, 8, 1}, {300, 520, 1000, 5, 0}, {8192, 2048, 2048, 16, 1},
                             {130, 250, 64, 64, 0}, {257, 129, 4096, 13, 1}};
    for (const auto &sh : shapes) {
        const int M = sh[0], N = sh[1], K = sh[2], K2 = sh[3], acc = sh[4];
        const long lda = round8(K), ld2 = round8(K2);
        char desc[128];
        snprintf(desc, sizeof desc, "k2 M=%d N=%d K=%d K2=%d acc=%d", M, N, K, K2, acc);
        g_ctx = desc;
        __nv_bfloat16 *a, *b, *a2, *b2;
        float *c, *r;
        CKT(cudaMalloc(&a, (size_t)M * lda * 2));
        CKT(cudaMalloc(&b, (size_t)N * lda * 2));
        CKT(cudaMalloc(&a2, (size_t)M * ld2 * 2));
        CKT(cudaMalloc(&b2, (size_t)N * ld2 * 2));
        CKT(cudaMalloc(&c, (size_t)M * N * 4));
        CKT(cudaMalloc(&r, (size_t)M * N * 4));
        fill_bf16(a, M, K, lda, 11 + M);
        fill_bf16(b, N, K, lda, 12 + N);
        fill_bf16(a2, M, K2, ld2, 13 + K2); // pad columns of NaN garbage: the second product must not read them
        fill_bf16(b2, N, K2, ld2, 14 + K2);
        std::vector<float> hc((size_t)M * N), hr((size_t)M * N);
        for (int v = 0; v < NVAR; ++v) {
            fill_f32(r, (long)M * N, 99, !acc);
            CKT(cudaMemcpy(c, r, (size_t)M * N * 4, cudaMemcpyDeviceToDevice));
            ref_gemm(r, N, a, lda, b, lda, M, N, K, acc);
            ref_gemm(r, N, a2, ld2, b2, ld2, M, N, K2, 1);
            CKT(variants[v].k2(c, N, a, lda, b, lda, M, N, K, acc, a2, ld2, b2, ld2, K2));
            CKT(cudaDeviceSynchronize());
            CKT(cudaMemcpy(hc.data(), c, hc.size() * 4, cudaMemcpyDeviceToHost));
            CKT(cudaMemcpy(hr.data(), r, hr.size() * 4, cudaMemcpyDeviceToHost));
            CmpResult cr = compare(variants[v].name, hc.data(), hr.data(), M, N, N, variants[v].bn, -1);
            printf("%s %-16s %s  max_rel_err=%.3g\n", cr.pass ? "PASS" : "FAIL", variants[v].name, desc, cr.max_err);
            if (cr.pass) n_pass++; else n_fail++;
        }
        CKT(cudaFree(a)); CKT(cudaFree(b)); CKT(cudaFree(a2)); CKT(cudaFree(b2)); CKT(cudaFree(c)); CKT(cudaFree(r));
    }
    printf("wgmma k2 correctness: %d passed, %d failed (all checks so far)\n", n_pass, n_fail);
}

// ---- speed ----
static float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}
template <class F>
static float time_ms(F &&launch, int warm = 5, int reps = 20) {
    cudaEvent_t e0, e1;
    CKT(cudaEventCreate(&e0));
    CKT(cudaEventCreate(&e1));
    for (int i = 0; i < warm; ++i) launch();
    CKT(cudaDeviceSynchronize());
    std::vector<float> t;
    for (int i = 0; i < reps; ++i) {
        CKT(cudaEventRecord(e0));
        launch();
        CKT(cudaEventRecord(e1));
        CKT(cudaEventSynchronize(e1));
        float ms;
        CKT(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms);
    }
    CKT(cudaEventDestroy(e0));
    CKT(cudaEventDestroy(e1));
    return median(t);
}

static void speed() {
    printf("== speed (median of 20 after 5 warm-ups, cudaEvent per run; TFLOP/s = 2MNK/t) ==\n");
    // M, N, K, accumulate (C += AB^T: timed only, C grows over the runs)
    const int shapes[][4] = {{8192, 2048, 2048, 0}, {8192, 5632, 2048, 0}, {8192, 2048, 5632, 0}, {8192, 32000, 2048, 0},
                             {4096, 4096, 4096, 0}, {4096, 11008, 4096, 0}, {4096, 4096, 11008, 0}, {8192, 2048, 2048, 1},
                             {8192, 2048, 5632, 1}, {4096, 4096, 4096, 1}};
    const int NS = sizeof(shapes) / sizeof(shapes[0]);
    std::vector<std::vector<double>> tf(NS, std::vector<double>(NVAR + 1, 0));
    std::vector<double> chk(NS, 0);
    for (int si = 0; si < NS; ++si) {
        const int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2], acc = shapes[si][3];
        char desc[128];
        snprintf(desc, sizeof desc, "speed M=%d N=%d K=%d", M, N, K);
        g_ctx = desc;
        __nv_bfloat16 *a, *b;
        float *c, *r;
        CKT(cudaMalloc(&a, (size_t)M * K * 2));
        CKT(cudaMalloc(&b, (size_t)N * K * 2));
        CKT(cudaMalloc(&c, (size_t)M * N * 4));
        CKT(cudaMalloc(&r, (size_t)M * N * 4));
        fill_bf16(a, M, K, K, 777 + si);
        fill_bf16(b, N, K, K, 999 + si);
        ref_gemm(r, N, a, K, b, K, M, N, K, 0);
        CKT(cudaDeviceSynchronize());
        std::vector<float> hr((size_t)M * N), hc((size_t)M * N);
        CKT(cudaMemcpy(hr.data(), r, hr.size() * 4, cudaMemcpyDeviceToHost));
        const double flops = 2.0 * M * N * (double)K;
        // the tensor cores' fp32 accumulation is not the double sum of the reference: its error grows with K (at
        // K = 11008 the wgmma variants and cuBLAS are off by up to ~1.2e-3 on a few of 16.7M outputs), so the
        // tolerance is 1e-3 up to K = 4096 and grows in proportion beyond; cuBLAS is checked the same way below
        const double tol_k = 1e-3 * std::max(1.0, K / 4096.0);
        for (int v = 0; v < NVAR; ++v) {
            fill_f32(c, (long)M * N, 0, 1);
            float ms = time_ms([&] { CKT(variants[v].fn(c, N, a, K, b, K, M, N, K, acc, 0, 0)); });
            CKT(cudaDeviceSynchronize());
            tf[si][v] = flops / (ms * 1e-3) / 1e12;
            if (acc) {
                printf("%-16s M=%5d N=%5d K=%5d +=  %8.3f ms  %7.1f TFLOP/s\n", variants[v].name, M, N, K, ms, tf[si][v]);
                continue;
            }
            CKT(cudaMemcpy(hc.data(), c, hc.size() * 4, cudaMemcpyDeviceToHost));
            CmpResult cr = compare(variants[v].name, hc.data(), hr.data(), M, N, N, variants[v].bn, -1, tol_k);
            printf("%-16s M=%5d N=%5d K=%5d  %8.3f ms  %7.1f TFLOP/s  check vs ref: %s (max_rel_err %.3g)\n", variants[v].name, M, N, K, ms,
                   tf[si][v], cr.pass ? "ok" : "WRONG", cr.max_err);
            if (!cr.pass) n_fail++;
            fflush(stdout);
        }
#ifdef WITH_CUBLAS
        {
            float ms = time_ms([&] { cublas_gemm(c, N, a, K, b, K, M, N, K, acc); });
            CKT(cudaDeviceSynchronize());
            tf[si][NVAR] = flops / (ms * 1e-3) / 1e12;
            if (acc) printf("%-16s M=%5d N=%5d K=%5d  %8.3f ms  %7.1f TFLOP/s\n", "cublasGemmEx", M, N, K, ms, tf[si][NVAR]);
            else { // cuBLAS against the same reference and tolerance (the last call wrote C = A B^T)
                CKT(cudaMemcpy(hc.data(), c, hc.size() * 4, cudaMemcpyDeviceToHost));
                CmpResult cr = compare("cublasGemmEx", hc.data(), hr.data(), M, N, N, 256, -1, tol_k);
                printf("%-16s M=%5d N=%5d K=%5d  %8.3f ms  %7.1f TFLOP/s  check vs ref: %s (max_rel_err %.3g; not counted)\n", "cublasGemmEx", M, N, K, ms,
                       tf[si][NVAR], cr.pass ? "ok" : "WRONG", cr.max_err);
            }
        }
#endif
        CKT(cudaFree(a));
        CKT(cudaFree(b));
        CKT(cudaFree(c));
        CKT(cudaFree(r));
    }
    printf("\n== summary (TFLOP/s) ==\n%-20s", "M x N x K");
    for (int v = 0; v < NVAR; ++v) printf(" %16s", variants[v].name);
#ifdef WITH_CUBLAS
    printf(" %14s", "cublas");
    for (int v = 0; v < NVAR; ++v) printf("  v%d/cublas", v);
#endif
    printf("\n");
    for (int si = 0; si < NS; ++si) {
        char sh[64];
        snprintf(sh, sizeof sh, "%dx%dx%d%s", shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][3] ? " +=" : "");
        printf("%-20s", sh);
        for (int v = 0; v < NVAR; ++v) printf(" %16.1f", tf[si][v]);
#ifdef WITH_CUBLAS
        printf(" %14.1f", tf[si][NVAR]);
        for (int v = 0; v < NVAR; ++v) printf("  %12.2f", tf[si][v] / tf[si][NVAR]);
#endif
        printf("\n");
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    const std::string mode = argc > 1 ? argv[1] : "all";
    int dev = 0;
    CKT(cudaSetDevice(dev));
    cudaDeviceProp p;
    CKT(cudaGetDeviceProperties(&p, dev));
    num_sms = p.multiProcessorCount; // peft_cuda.cu's (gpu_init sets it in peft)
    int rt = 0, drv = 0;
    CKT(cudaRuntimeGetVersion(&rt));
    CKT(cudaDriverGetVersion(&drv));
    printf("device: %s, cc %d.%d, %d SMs, smem/block optin %zu, L2 %d MB; runtime %d driver %d%s%s\n", p.name, p.major, p.minor,
           p.multiProcessorCount, p.sharedMemPerBlockOptin, p.l2CacheSize >> 20, rt, drv,
           "",
#ifdef WITH_CUBLAS
           " [WITH_CUBLAS]"
#else
           ""
#endif
    );
    if (p.major != 9) printf("WARNING: this kernel needs sm_90a (Hopper); the launches will fail on cc %d.%d\n", p.major, p.minor);
    {
        cudaFuncAttributes fa;
        CKT(cudaFuncGetAttributes(&fa, wgk::gemm_wgmma_kernel<256, 4, 0, 0>));
        printf("kernel bn256_s4: %d regs, %zu B local, dyn smem %d\n", fa.numRegs, fa.localSizeBytes, wgk::Cfg<256, 4>::SMEM_BYTES);
        CKT(cudaFuncGetAttributes(&fa, wgk::gemm_wgmma_kernel<256, 4, 0, 16384>));
        printf("kernel bn256_s4_tma16k: %d regs, %zu B local, dyn smem %d\n", fa.numRegs, fa.localSizeBytes, wgk::Cfg<256, 4, 16384>::SMEM_BYTES);
        CKT(cudaFuncGetAttributes(&fa, wgk::gemm_wgmma_kernel<128, 6, 0, 0>));
        printf("kernel bn128_s6: %d regs, %zu B local, dyn smem %d\n", fa.numRegs, fa.localSizeBytes, wgk::Cfg<128, 6>::SMEM_BYTES);
    }
#ifdef WITH_CUBLAS
    CKB(cublasCreate(&g_cublas));
#endif
    if (mode == "all" || mode == "correct") { correctness(); correctness_k2(); }
    if (mode == "all" || mode == "speed") speed();
    printf("RESULT: %s (%d wgmma checks failed)\n", n_fail ? "FAIL" : "OK", n_fail);
    return n_fail ? 1 : 0;
}

