// peft_cuda.cu: the GPU half of peft.c, built only with `make CUDA=1` (CUDA runtime only, no cuBLAS).
// peft.c calls each kernel function through ON_GPU(gpu_<name>(...)) when --device cuda is on; this file
// holds the device memory and one kernel per kernel function, each small and named for what it
// computes. peft.c's loops are the CPU twins that `make test-cuda` compares every kernel against.
//
// Memory: tensors that host code loads and saves (weights, adapters, optimizer moments, RoPE tables)
// are host allocations with a device mirror: kernels are handed the host pointer and D() translates it
// into the mirror. Activations are device allocations handed out by gpu_alloc, used as they are.
#include <cuda_runtime.h>
#include <cuda.h>          // CUtensorMap and its enums (types only: libcuda is not linked)
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <cooperative_groups.h>
#include <type_traits>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>

#define GPU_QARGS int qtype, int bs, const uint8_t *q, const float *scale, const uint16_t *scale16, const uint8_t *qabsmax, const float *absmax2, float offset, const float *code256, \
                  const uint16_t *hscale, const uint16_t *hzero
enum { QT_NONE, QT_INT8, QT_INT4, QT_NF4, QT_HQQ4, QT_HQQ8 }; // peft.c's QT_*
#define QARGS_NAMES qtype, bs, q, scale, scale16, qabsmax, absmax2, offset, code256, hscale, hzero
#define DQ_BLOCK 256

// ----------------------------------------------------------------------------
// errors: any failing CUDA call ends the program with one "peft:" line

static void cuda_check(cudaError_t e, const char *what, const char *file, int line) {
    if (e == cudaSuccess) return;
    fprintf(stderr, "peft: CUDA error: %s (%s at %s:%d)\n", cudaGetErrorString(e), what, file, line);
    exit(1);
}
#define CK(call) cuda_check((call), #call, __FILE__, __LINE__)
static int sync_each; // PEFT_CUDA_SYNC=1: wait for every kernel, so an error names the kernel that made it
// PEFT_CUDA_PROFILE=1: a CUDA event after every kernel; each kernel is charged the GPU time between the
// event before it and its own (its run, plus any time the GPU sat idle waiting for it), without waiting
// for kernels one by one; printed at the end of a command
static int profile;
static struct { const char *name; double secs, flops; long calls; } prof[128];
static int nprof;
static double prof_flops;
#define PROF_EVENTS 4096
static cudaEvent_t prof_ev[PROF_EVENTS + 1]; // [0]: the last event of the previous batch
static int prof_kind[PROF_EVENTS], prof_n, prof_started;
static double prof_fl[PROF_EVENTS];
static void prof_flush(void) { // add up the batch of events recorded so far
    if (!prof_n) return;
    cuda_check(cudaEventSynchronize(prof_ev[prof_n]), "profile", __FILE__, __LINE__);
    for (int e = 0; e < prof_n; e++) {
        float ms = 0;
        if (prof_started || e > 0) cuda_check(cudaEventElapsedTime(&ms, prof_ev[e], prof_ev[e + 1]), "profile", __FILE__, __LINE__);
        prof[prof_kind[e]].secs += ms * 1e-3; prof[prof_kind[e]].flops += prof_fl[e]; prof[prof_kind[e]].calls++;
    }
    cudaEvent_t t = prof_ev[0]; prof_ev[0] = prof_ev[prof_n]; prof_ev[prof_n] = t; // the last event starts the next batch
    prof_started = 1; prof_n = 0;
}
static void launched(const char *name) {
    cuda_check(cudaGetLastError(), name, __FILE__, __LINE__);
    if (sync_each) cuda_check(cudaDeviceSynchronize(), name, __FILE__, __LINE__);
    if (!profile) return;
    if (!prof_ev[0]) for (int e = 0; e <= PROF_EVENTS; e++) cuda_check(cudaEventCreate(&prof_ev[e]), "profile", __FILE__, __LINE__);
    int i = 0;
    while (i < nprof && strcmp(prof[i].name, name)) i++;
    if (i == nprof && nprof < 127) { prof[i].name = name; nprof++; }
    if (i == 127) prof[127].name = "(others)";
    cuda_check(cudaEventRecord(prof_ev[prof_n + 1]), "profile", __FILE__, __LINE__);
    prof_kind[prof_n] = i; prof_fl[prof_n] = prof_flops; prof_n++;
    prof_flops = 0;
    if (prof_n == PROF_EVENTS) prof_flush();
}
#define LAUNCHED(name) launched(name)
// the profile's name for a GEMM of one shape: "what MxNxK" (+= when it accumulates)
static const char *shape_name(const char *what, int M, int N, int K, int acc) {
    static char names[48][48];
    static int n;
    char b[48];
    snprintf(b, sizeof b, "%s %dx%dx%d%s", what, M, N, K, acc ? " +=" : "");
    for (int i = 0; i < n; i++) if (!strcmp(names[i], b)) return names[i];
    if (n == 48) return what;
    memcpy(names[n], b, sizeof b);
    return names[n++];
}

static int bf16_matmuls; // --dtype bf16
static int large_gemm = 1; // PEFT_CUDA_GEMM=small: only the 64x64 tiles (for comparison)
static int narrow_gemm = 1; // PEFT_CUDA_GEMM=small: no narrow kernels either
static int tc_k = 64, tc_wn = 64; // the large GEMM's tile (below; 64,64 measured fastest of the four on TinyLlama's shapes)
static int wgmma_gemm; // Hopper (sm_90): the large GEMM on wgmma; PEFT_CUDA_GEMM=mma keeps the cp.async kernel
static int tc_attention = 1; // PEFT_CUDA_ATTN=cuda-cores: bf16 attention on the CUDA cores too (for comparison)
static int att_rows = 128; // PEFT_CUDA_ATTN=64: the tensor-core attention forward with 64 query rows a block (a warp 16), not 128 (a warp 32)
static int num_sms = 132;
static int wgmma_tb = 1; // the Hopper GEMM reads an N-contiguous B as it is (MN-major)
static int lora_fused = 1; // LoRA's up-projection and its dinp product as one more step of the Hopper GEMM (PEFT_CUDA_LORA=apart: not)
static int wgmma_epi = 1; // its epilogue: 1 TMA stores from 16 KB slabs (4 stages), 2 from 32 KB (3 stages), 0 straight stores
static int cluster_ok; // Hopper: thread block clusters (distributed shared memory)
static size_t smem_optin; // the most shared memory a block may ask for (A100 163 KB, H100 227 KB, the consumer GPUs 99 KB)
static int copies_on = 1, copies_check, copies_shadow = 1; // PEFT_CUDA_COPIES (the GEMM operands' bf16 copies, below)

static unsigned blocks_for(size_t n, int threads) {
    size_t b = (n + threads - 1) / threads, most = (size_t)num_sms * 32;
    return (unsigned)(b < 1 ? 1 : b > most ? most : b);
}

// a grid-stride loop: i runs over [0, n) across the whole grid
#define FOR_EACH(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

// ----------------------------------------------------------------------------
// device memory and the mirrors of host tensors
//
// A mirrored host block is held as one or more pieces. A piece that peft.c named with gpu_mirror_bf16
// before mirroring (frozen weights that only the GEMMs read, with bf16 matmuls) holds bf16 values only:
// half the memory, and the GEMMs read it as their bf16 operand directly (the same rounding that the
// operand copy of an fp32 mirror makes). Kernels that want fp32 from such a piece get a converted copy
// (weight_f32, below); D() refuses it, so that no kernel reads bf16 bytes as floats.

typedef struct { char *host, *dev, *block; size_t bytes; int bf16, layer; } Mirror; // block: the host block it is part of; layer: streamed (--offload, below), else -1
static Mirror *mirrors;
static int nmirrors, cap_mirrors;
static struct { const char *lo, *hi; int skip; const void *src16; } *bf16_plan; // ranges named by gpu_mirror_bf16 (skip: by gpu_mirror_skip; src16: their bf16 values, by gpu_mirror_bf16_from), not yet mirrored
static int nplan, cap_plan;
static int npieces16;        // bf16 pieces now
static int bf16_weights = 1; // PEFT_CUDA_WEIGHTS=fp32: keep every mirror in fp32 (as before)

static Mirror *find_mirror(const void *p) {
    const char *c = (const char *)p;
    for (int i = 0; i < nmirrors; i++)
        if (c >= mirrors[i].host && (c < mirrors[i].host + mirrors[i].bytes || c == mirrors[i].host)) return &mirrors[i];
    return NULL;
}
// the bf16 piece that holds host address p, or NULL
static const Mirror *bf16_piece(const void *p) {
    if (!npieces16) return NULL;
    const Mirror *m = find_mirror(p);
    return m && m->bf16 ? m : NULL;
}
// the device address of p's value in its bf16 piece m (p points at a float of the host tensor)
static const __nv_bfloat16 *piece16(const Mirror *m, const void *p) { return (const __nv_bfloat16 *)m->dev + ((const char *)p - m->host) / sizeof(float); }
// Activations kept in bf16 (gpu_alloc_act, with bf16 matmuls): n values in 2n bytes that peft.c holds as a
// float pointer, as it holds any tensor memory it never reads itself. The kernels that write or read them
// (the GEMMs, LoRA's and DoRA's adds, RMSNorm, RoPE, attention, SwiGLU, the dropout, the copies to and
// from the host) know it; D() refuses them to every other kernel.
static struct { char *p; size_t n; } *acts16;
static int nacts16, cap_acts16;
static int bf16_acts = 1; // PEFT_CUDA_ACTS=fp32: none
static __nv_bfloat16 *act16(const void *p) { // p's bf16 values when p points into such a block, else NULL
    const char *c = (const char *)p;
    for (int i = 0; i < nacts16; i++) if (c >= acts16[i].p && c < acts16[i].p + 2 * acts16[i].n) return (__nv_bfloat16 *)c;
    return NULL;
}
// the device address of a tensor pointer: a pointer into a mirrored host tensor, or a device pointer
template <typename T> static T *D(T *p) {
    if (!p) return p;
    Mirror *m = find_mirror((const void *)p);
    if (m && m->bf16) { fprintf(stderr, "peft: internal error: a kernel reads the bf16-only weight %p as floats\n", (const void *)p); exit(1); }
    if (m && !m->dev) { fprintf(stderr, "peft: internal error: a kernel reads layer %d's weights, which are not on the GPU now (--offload)\n", m->layer); exit(1); }
    if (m) return (T *)(m->dev + ((const char *)p - m->host));
    if (act16((const void *)p)) { fprintf(stderr, "peft: internal error: a kernel reads the bf16 activations %p as floats\n", (const void *)p); exit(1); }
    return p;
}
// the same for a GEMM's weight operand: a pointer into a bf16 piece stays the host pointer (gemm resolves it)
static const float *DW(const float *p) { return bf16_piece(p) ? p : D(p); }
// and for an output or an input that may be bf16 activations (the GEMM's, attention's): those stay as they are
static float *DO(float *p) { return act16(p) ? p : D(p); }
static const float *DA(const float *p) { return act16(p) ? p : D(p); }

namespace wgk { static PFN_cuTensorMapEncodeTiled_v12000 get_encode_fn(); } // the Hopper GEMM's tensor maps (below)
extern "C" int gpu_init(int bf16, int device, char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) { snprintf(err, errlen, "no CUDA GPU found (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices"); return -1; }
    if (device >= n) { snprintf(err, errlen, "GPU %d (LOCAL_RANK) asked for, this host has %d", device, n); return -1; }
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, device));
    if (p.major < 8) { snprintf(err, errlen, "GPU %s has compute capability %d.%d; peft's kernels need 8.0 (Ampere) or newer", p.name, p.major, p.minor); return -1; }
    CK(cudaSetDevice(device));
    num_sms = p.multiProcessorCount;
    cluster_ok = p.major >= 9;
    smem_optin = p.sharedMemPerBlockOptin;
    bf16_matmuls = bf16;
    const char *s = getenv("PEFT_CUDA_SYNC");
    sync_each = s && *s && *s != '0';
    s = getenv("PEFT_CUDA_GEMM");
    large_gemm = narrow_gemm = !(s && !strcmp(s, "small"));
    wgmma_gemm = p.major == 9 && large_gemm && !(s && !strcmp(s, "mma"));
    if (wgmma_gemm && !wgk::get_encode_fn()) { // a driver without cuTensorMapEncodeTiled: the sm_80 GEMM
        fprintf(stderr, "peft: note: this CUDA driver has no cuTensorMapEncodeTiled; the GEMM runs without wgmma\n");
        wgmma_gemm = 0;
    }
    s = getenv("PEFT_CUDA_TB"); // =0: the GEMM transposes an N-contiguous B into a copy instead of reading it MN-major
    wgmma_tb = !(s && !strcmp(s, "0"));
    s = getenv("PEFT_CUDA_LORA");
    lora_fused = !(s && !strcmp(s, "apart"));
    s = getenv("PEFT_CUDA_EPI"); // =0: the GEMM stores C straight from registers; =2: 32 KB slabs, 3 stages
    if (s && (*s == '0' || *s == '2')) wgmma_epi = *s - '0';
    s = getenv("PEFT_CUDA_TC");
    if (s && sscanf(s, "%d,%d", &tc_k, &tc_wn) == 2 && (tc_k != 32 && tc_k != 64)) tc_k = 64;
    if (tc_wn != 32 && tc_wn != 64) tc_wn = 64;
    s = getenv("PEFT_CUDA_ATTN");
    tc_attention = !(s && !strcmp(s, "cuda-cores"));
    if (s && !strcmp(s, "64")) att_rows = 64;
    s = getenv("PEFT_CUDA_ACTS");
    bf16_acts = !(s && !strcmp(s, "fp32"));
    s = getenv("PEFT_CUDA_WEIGHTS");
    bf16_weights = !(s && !strcmp(s, "fp32"));
    s = getenv("PEFT_CUDA_COPIES");
    copies_on = !(s && !strcmp(s, "0"));
    copies_check = s && !strcmp(s, "check");
    copies_shadow = !(s && !strcmp(s, "noshadow"));
    s = getenv("PEFT_CUDA_PROFILE");
    profile = s && *s && *s != '0';
    size_t fr = 0, tot = 0;
    CK(cudaMemGetInfo(&fr, &tot));
    fprintf(stderr, "device: %s (compute capability %d.%d, %.1f GiB, %.1f GiB free), %s matmuls\n", p.name, p.major, p.minor,
            tot / 1073741824.0, fr / 1073741824.0, bf16 ? "bf16 (fp32 accumulation)" : "fp32");
    return 0;
}
extern "C" void gpu_set_bf16(int on) { bf16_matmuls = on; } // the tests switch between the two
extern "C" int gpu_set_clusters(int on) { int was = cluster_ok; cluster_ok = on; return was; } // tests: GQA attention without clusters on Hopper too
extern "C" int gpu_set_attention_rows(int r) { int was = att_rows; att_rows = r; return was; } // tests: both forwards (64 and 128 query rows a block)
static int narrow_tiles = 1; // the Hopper GEMM may take tiles 128 wide (tests: 0, only 256)
extern "C" void gpu_set_narrow_tiles(int on) { narrow_tiles = on; }
extern "C" size_t gpu_free_bytes(void) { size_t fr = 0, tot = 0; cudaMemGetInfo(&fr, &tot); return fr; }
static size_t peak_used; // device memory in use (all of it, as cudaMemGetInfo sees it) after each allocation
static size_t live_bytes, peak_live; // bytes of gpu_alloc's blocks now, and at most (as torch.cuda.max_memory_allocated counts)
extern "C" size_t gpu_peak_bytes(void) { return peak_used; }
extern "C" size_t gpu_peak_alloc_bytes(void) { return peak_live; }
static void wrote(const void *p, size_t bytes);  // the bf16 copies made from there are stale (below)
static void forget(const void *p, size_t bytes); // the memory is freed: its copies go
static struct { void *p; size_t bytes; } *allocs; // gpu_alloc's blocks, for forget
static int nallocs, cap_allocs;
extern "C" void *gpu_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) { cudaGetLastError(); return NULL; }
    CK(cudaMemset(p, 0, bytes ? bytes : 1));
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess && tot - fr > peak_used) peak_used = tot - fr;
    if (nallocs == cap_allocs) {
        cap_allocs = cap_allocs ? 2 * cap_allocs : 256;
        allocs = (decltype(allocs))realloc(allocs, (size_t)cap_allocs * sizeof *allocs);
        if (!allocs) { fprintf(stderr, "peft: out of memory\n"); exit(1); }
    }
    allocs[nallocs].p = p; allocs[nallocs].bytes = bytes ? bytes : 1; nallocs++;
    live_bytes += bytes ? bytes : 1;
    if (live_bytes > peak_live) peak_live = live_bytes;
    return p;
}
static void free_block(void *p) { // gpu_alloc's block, copies or not
    for (int i = nallocs - 1; i >= 0; i--) if (allocs[i].p == p) { live_bytes -= allocs[i].bytes; allocs[i] = allocs[--nallocs]; break; }
    CK(cudaFree(p));
}
// n activations that only the kernels above touch (peft.c's tensor_alloc_act: the norms' outputs, q, k, v,
// the attention output, gate, up, h, and SwiGLU's gradients), zeroed: in bf16 with bf16 matmuls (see act16), else floats; NULL when out of memory.
// PEFT_CUDA_ACTS=fp32: floats always.
extern "C" size_t gpu_act_size(void) { return bf16_matmuls && bf16_acts ? 2 : 4; }
extern "C" void *gpu_alloc_act(size_t n) {
    if (!bf16_matmuls || !bf16_acts) return gpu_alloc(n * sizeof(float));
    void *p = gpu_alloc(2 * n);
    if (!p) return NULL;
    if (nacts16 == cap_acts16) {
        cap_acts16 = cap_acts16 ? 2 * cap_acts16 : 64;
        acts16 = (decltype(acts16))realloc(acts16, (size_t)cap_acts16 * sizeof *acts16);
        if (!acts16) { fprintf(stderr, "peft: out of memory\n"); exit(1); }
    }
    acts16[nacts16].p = (char *)p; acts16[nacts16].n = n; nacts16++;
    return p;
}
extern "C" void gpu_free(void *p) {
    if (!p) return;
    for (int i = 0; i < nacts16; i++) if (acts16[i].p == (char *)p) { acts16[i] = acts16[--nacts16]; break; }
    for (int i = nallocs - 1; i >= 0; i--) if (allocs[i].p == p) { forget(p, allocs[i].bytes); break; }
    free_block(p);
}
// host[0..bytes) of a block about to be mirrored holds frozen weights that only the GEMMs read: keep them
// in bf16 only (a no-op unless the matmuls are bf16)
extern "C" int gpu_weights_bf16(void) { return bf16_matmuls && bf16_weights; } // gpu_mirror_bf16's condition
static int plan_skip; // the next gpu_mirror_bf16 names a range that gpu_mirror leaves out (streamed by --offload)
extern "C" void gpu_mirror_bf16(const void *host, size_t bytes);
extern "C" void gpu_mirror_skip(const void *host, size_t bytes) {
    plan_skip = 1;
    gpu_mirror_bf16(host, bytes);
    plan_skip = 0;
}
extern "C" void gpu_mirror_bf16(const void *host, size_t bytes) {
    if (!plan_skip && (!bf16_matmuls || !bf16_weights || !bytes)) return;
    if (!bytes) return;
    if (nplan == cap_plan) {
        cap_plan = cap_plan ? 2 * cap_plan : 16;
        bf16_plan = (decltype(bf16_plan))realloc(bf16_plan, (size_t)cap_plan * sizeof *bf16_plan);
        if (!bf16_plan) { fprintf(stderr, "peft: out of memory\n"); exit(1); }
    }
    bf16_plan[nplan].lo = (const char *)host; bf16_plan[nplan].hi = (const char *)host + bytes; bf16_plan[nplan].skip = plan_skip; bf16_plan[nplan].src16 = NULL; nplan++;
}
// gpu_mirror_bf16, with the range's values already rounded to bf16 on the host (src16, round_bf16_kernel's
// rounding; read by the gpu_mirror that follows): the first upload copies half the bytes and converts nothing
extern "C" void gpu_mirror_bf16_from(const void *host, size_t bytes, const void *src16) {
    int n0 = nplan;
    gpu_mirror_bf16(host, bytes);
    if (nplan > n0) bf16_plan[nplan - 1].src16 = src16;
}
__global__ void round_bf16_kernel(__nv_bfloat16 *q, const float *p, size_t n) { FOR_EACH(i, n) q[i] = __float2bfloat16(p[i]); }
// a piece's device values from its host floats (bf16 pieces: through fp32 staging, 64 MiB at a time, or
// copied from src16, their values rounded on the host)
static void upload_piece(const Mirror *m, const void *src16) {
    wrote(m->dev, m->bf16 ? m->bytes / 2 : m->bytes);
    wrote(m->host, m->bytes); // the copies made from a bf16 piece are keyed by its host address
    if (!m->bf16) { if (m->bytes) CK(cudaMemcpy(m->dev, m->host, m->bytes, cudaMemcpyHostToDevice)); return; }
    if (src16) { CK(cudaMemcpy(m->dev, src16, m->bytes / 2, cudaMemcpyHostToDevice)); return; }
    size_t n = m->bytes / sizeof(float), chunk = (size_t)16 << 20;
    float *stage = (float *)gpu_alloc((n < chunk ? n : chunk) * sizeof(float));
    if (!stage) { fprintf(stderr, "peft: out of GPU memory uploading a weight\n"); exit(1); }
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        CK(cudaMemcpy(stage, m->host + i * sizeof(float), k * sizeof(float), cudaMemcpyHostToDevice));
        round_bf16_kernel<<<blocks_for(k, 256), 256>>>((__nv_bfloat16 *)m->dev + i, stage, k);
        LAUNCHED("round_bf16_kernel");
    }
    gpu_free(stage);
}
static Mirror *add_mirror(char *host, size_t bytes, char *block, int bf16, const void *src16) {
    void *dev = gpu_alloc(bf16 ? bytes / 2 : bytes);
    if (!dev) return NULL;
    if (nmirrors == cap_mirrors) {
        cap_mirrors = cap_mirrors ? 2 * cap_mirrors : 64;
        mirrors = (Mirror *)realloc(mirrors, (size_t)cap_mirrors * sizeof(Mirror));
        if (!mirrors) { fprintf(stderr, "peft: out of memory\n"); exit(1); }
    }
    Mirror *m = &mirrors[nmirrors++];
    m->host = host; m->dev = (char *)dev; m->block = block; m->bytes = bytes; m->bf16 = bf16; m->layer = -1;
    npieces16 += bf16;
    upload_piece(m, src16);
    return m;
}
extern "C" void gpu_unmirror(void *host) {
    for (int i = 0; i < nmirrors; i++)
        if (mirrors[i].block == (char *)host) { npieces16 -= mirrors[i].bf16; gpu_free(mirrors[i].dev); mirrors[i--] = mirrors[--nmirrors]; }
}
// a device mirror of host[0..bytes), uploaded: pieces split at the planned bf16 ranges inside it (in order).
// The plan is for this call only: what it did not use is dropped (it may name memory freed later).
extern "C" int gpu_mirror(void *host, size_t bytes) {
    int have = 0;
    for (int i = 0; i < nmirrors; i++) if (mirrors[i].block == (char *)host) { upload_piece(&mirrors[i], NULL); have = 1; }
    if (have) { nplan = 0; return 0; }
    char *at = (char *)host, *end = at + bytes;
    if (!bytes) { nplan = 0; return add_mirror(at, 0, at, 0, NULL) ? 0 : -1; } // an empty tensor still has its (1-byte) mirror
    while (1) {
        int next = -1; // the first planned range at or after at, inside the block
        for (int i = 0; i < nplan; i++)
            if (bf16_plan[i].lo >= at && bf16_plan[i].hi <= end && (next < 0 || bf16_plan[i].lo < bf16_plan[next].lo)) next = i;
        char *lo = next < 0 ? end : (char *)bf16_plan[next].lo;
        if (lo > at && !add_mirror(at, (size_t)(lo - at), (char *)host, 0, NULL)) { nplan = 0; gpu_unmirror(host); return -1; }
        if (next < 0) break;
        char *hi = (char *)bf16_plan[next].hi;
        int skip = bf16_plan[next].skip;
        const void *src16 = bf16_plan[next].src16;
        bf16_plan[next] = bf16_plan[--nplan];
        if (!skip && !add_mirror(lo, (size_t)(hi - lo), (char *)host, 1, src16)) { nplan = 0; gpu_unmirror(host); return -1; }
        at = hi;
    }
    nplan = 0;
    return 0;
}
extern "C" void gpu_sync_mirror(void *host, int to_device) {
    int have = 0;
    for (int i = 0; i < nmirrors; i++) {
        Mirror *m = &mirrors[i];
        if (m->block != (char *)host) continue;
        have = 1;
        if (to_device) upload_piece(m, NULL);
        else if (!m->bf16 && m->bytes) CK(cudaMemcpy(m->host, m->dev, m->bytes, cudaMemcpyDeviceToHost)); // a bf16 piece: no kernel writes it, the host copy stands
    }
    if (!have) { fprintf(stderr, "peft: internal error: tensor %p has no GPU mirror\n", host); exit(1); }
}
extern "C" void gpu_copy(void *dst, const void *src, size_t bytes, int to_device) {
    if (!bytes) return;
    __nv_bfloat16 *a16 = act16(to_device ? dst : src);
    if (a16) { // bf16 activations: the floats converted on the host
        size_t n = bytes / sizeof(float);
        __nv_bfloat16 *h = (__nv_bfloat16 *)malloc(n * sizeof *h);
        if (!h) { fprintf(stderr, "peft: out of memory\n"); exit(1); }
        if (to_device) {
            for (size_t i = 0; i < n; i++) h[i] = __float2bfloat16(((const float *)src)[i]);
            wrote(a16, n * sizeof *h);
            CK(cudaMemcpy(a16, h, n * sizeof *h, cudaMemcpyHostToDevice));
        } else {
            CK(cudaMemcpy(h, a16, n * sizeof *h, cudaMemcpyDeviceToHost));
            for (size_t i = 0; i < n; i++) ((float *)dst)[i] = __bfloat162float(h[i]);
        }
        free(h);
        return;
    }
    if (to_device) { wrote(D(dst), bytes); CK(cudaMemcpy(D(dst), src, bytes, cudaMemcpyHostToDevice)); }
    else CK(cudaMemcpy(dst, D(src), bytes, cudaMemcpyDeviceToHost));
}

// --offload: the frozen base stays in host memory and is streamed in, a layer ahead of its use.
// Each streamed tensor is a Mirror with its layer; its dev points into the slot that holds the layer
// now (NULL while none does). Layer l goes to slot l % nslots, so that with 3 slots the layer in use,
// the one before it and the next one (forward: l+1, backward: l-1) never share a slot. Copies run on
// their own stream; an event per slot says when its copy is done (the kernels' stream waits for it)
// and another when the kernels that read its previous layer are done (the copy waits for that).
// The bytes copied are the ones the resident run mirrors (the quantized blocks as they are; a float
// weight as its bf16 values, rounded on the host as round_bf16_kernel rounds), so the arithmetic is the same.
// --shard: the slot's bytes are not copied from the tensors but gathered from the ranks' chunks of the layer
// (rank r's is bytes [r*chunk, (r+1)*chunk) of the slot): an all-gather on the copy stream (NCCL, several
// ranks), or on one rank a device copy of its chunk; with --offload too the chunk is in pinned host memory and
// is copied into its place in the slot first (the all-gather then runs in place). Same events, same order.
#define MAX_SLOTS 8
static int shard_gather(void *slot, const void *mine, size_t chunk, cudaStream_t s); // several ranks: NCCL's all-gather (1), else 0
static struct {
    int nslots, layers, cur;          // cur: the layer the kernels use now (-1: none)
    size_t slot_bytes, *layer_bytes;  // a slot's bytes; each layer's (its tensors at 256-byte offsets)
    struct { char *host, *dev; size_t bytes; int pinned; } *shard; // --shard: this rank's chunk of each layer (host or device)
    int rank, world;                  // --shard: this rank, of world
    char *slot[MAX_SLOTS];
    int holds[MAX_SLOTS];             // the layer in each slot, -1: none
    cudaEvent_t ready[MAX_SLOTS], free_[MAX_SLOTS];
    int used[MAX_SLOTS];              // free_ was recorded
    cudaStream_t copy;
    struct { const char *host, *src; size_t bytes, off; int pinned; } *t; // the streamed tensors: host address (their Mirror's), source, slot offset
    int nt, cap;
    long copies, fail_at;             // PEFT_CUDA_OFFLOAD_FAIL=N: the Nth layer copy fails (tests)
    int noted;
} ofl;
// host memory pinned for the copies (cudaHostRegister): 1, or 0 (refused: pageable copies, with one note a run).
// PEFT_CUDA_PIN_FAIL=1 refuses every pinning, as a low `ulimit -l` does (tests)
static int pin_host(const void *p, size_t bytes, const char *what) {
    static int refuse = -1;
    if (refuse < 0) { const char *f = getenv("PEFT_CUDA_PIN_FAIL"); refuse = f && !strcmp(f, "1"); }
    cudaError_t e = refuse ? cudaErrorMemoryAllocation : cudaHostRegister((void *)p, bytes, cudaHostRegisterDefault);
    if (e == cudaSuccess) return 1;
    cudaGetLastError();
    if (!ofl.noted++) fprintf(stderr, "peft: note: pinning the host %s was refused (%s; ulimit -l?): copies from pageable memory, slower\n", what, cudaGetErrorString(e));
    return 0;
}
// layer's tensor: host[0..bytes) as the kernels name it; src: the bytes to stream (dev_bytes of them:
// bytes, or bytes/2 for bf16). Pinned here (cudaHostRegister); refused: pageable copies, with a note.
// off: its offset in the layer's slot (layer_layout's); src NULL (--shard): gathered, not copied from the tensor.
static int offload_layers(int layer, char *err, size_t errlen) { // room for layer's entries
    if (layer < ofl.layers) return 0;
    size_t *lb = (size_t *)realloc(ofl.layer_bytes, (size_t)(layer + 1) * sizeof(size_t));
    if (!lb) { snprintf(err, errlen, "out of memory"); return -1; }
    ofl.layer_bytes = lb;
    decltype(ofl.shard) sh = (decltype(ofl.shard))realloc(ofl.shard, (size_t)(layer + 1) * sizeof *ofl.shard);
    if (!sh) { snprintf(err, errlen, "out of memory"); return -1; }
    ofl.shard = sh;
    for (int l = ofl.layers; l <= layer; l++) { lb[l] = 0; memset(&sh[l], 0, sizeof sh[l]); }
    ofl.layers = layer + 1;
    return 0;
}
extern "C" int gpu_offload_add(int layer, void *host, size_t bytes, const void *src, size_t dev_bytes, size_t off, int bf16, char *err, size_t errlen) {
    if (offload_layers(layer, err, errlen)) return -1;
    if (ofl.nt == ofl.cap) {
        ofl.cap = ofl.cap ? 2 * ofl.cap : 64;
        ofl.t = (decltype(ofl.t))realloc(ofl.t, (size_t)ofl.cap * sizeof *ofl.t);
        if (!ofl.t) { snprintf(err, errlen, "out of memory"); return -1; }
    }
    if (nmirrors == cap_mirrors) {
        cap_mirrors = cap_mirrors ? 2 * cap_mirrors : 64;
        mirrors = (Mirror *)realloc(mirrors, (size_t)cap_mirrors * sizeof(Mirror));
        if (!mirrors) { snprintf(err, errlen, "out of memory"); return -1; }
    }
    Mirror *m = &mirrors[nmirrors];
    m->host = (char *)host; m->dev = NULL; m->block = (char *)host; m->bytes = bytes; m->bf16 = bf16; m->layer = layer;
    npieces16 += bf16;
    int pinned = src && pin_host(src, dev_bytes, "weights");
    nmirrors++;
    ofl.t[ofl.nt].host = (const char *)host; ofl.t[ofl.nt].src = (const char *)src; ofl.t[ofl.nt].bytes = dev_bytes;
    ofl.t[ofl.nt].off = off; ofl.t[ofl.nt].pinned = pinned;
    if (off + dev_bytes > ofl.layer_bytes[layer]) ofl.layer_bytes[layer] = off + dev_bytes;
    ofl.nt++;
    return 0;
}
// --shard: this rank's chunk of layer; on_host: it stays at chunk (pinned), else it is uploaded to device memory now
extern "C" int gpu_offload_shard(int layer, void *chunk, size_t chunk_bytes, int rank, int world, int on_host, char *err, size_t errlen) {
    if (offload_layers(layer, err, errlen)) return -1;
    ofl.rank = rank; ofl.world = world;
    ofl.shard[layer].bytes = chunk_bytes;
    if (on_host) { ofl.shard[layer].host = (char *)chunk; ofl.shard[layer].pinned = pin_host(chunk, chunk_bytes, "weights"); return 0; }
    ofl.shard[layer].dev = (char *)gpu_alloc(chunk_bytes);
    if (!ofl.shard[layer].dev) { snprintf(err, errlen, "out of GPU memory for layer %d's chunk of %.1f MiB (%.1f MiB free)", layer, chunk_bytes / 1048576.0, gpu_free_bytes() / 1048576.0); return -1; }
    CK(cudaMemcpy(ofl.shard[layer].dev, chunk, chunk_bytes, cudaMemcpyHostToDevice));
    return 0;
}
// after the adds: nslots device buffers of the largest layer; -1 (err) when they do not fit
extern "C" int gpu_offload_ready(int nslots, char *err, size_t errlen) {
    if (nslots > MAX_SLOTS) nslots = MAX_SLOTS;
    if (nslots > ofl.layers) nslots = ofl.layers;
    ofl.slot_bytes = 0;
    for (int l = 0; l < ofl.layers; l++) {
        size_t b = ofl.shard[l].bytes ? (size_t)ofl.world * ofl.shard[l].bytes : ofl.layer_bytes[l]; // --shard: the gathered chunks
        if (b > ofl.slot_bytes) ofl.slot_bytes = b;
    }
    for (int s = 0; s < nslots; s++) {
        ofl.slot[s] = (char *)gpu_alloc(ofl.slot_bytes);
        if (!ofl.slot[s]) { snprintf(err, errlen, "out of GPU memory for %d layer buffers of %.1f MiB (%.1f MiB free)", nslots, ofl.slot_bytes / 1048576.0, gpu_free_bytes() / 1048576.0); return -1; }
        CK(cudaEventCreateWithFlags(&ofl.ready[s], cudaEventDisableTiming));
        CK(cudaEventCreateWithFlags(&ofl.free_[s], cudaEventDisableTiming));
        ofl.holds[s] = -1; ofl.used[s] = 0;
    }
    ofl.nslots = nslots;
    ofl.cur = -1;
    CK(cudaStreamCreateWithFlags(&ofl.copy, cudaStreamNonBlocking));
    const char *f = getenv("PEFT_CUDA_OFFLOAD_FAIL");
    ofl.fail_at = f && *f ? atol(f) : 0;
    return 0;
}
static Mirror *streamed(const char *host) {
    for (int i = 0; i < nmirrors; i++) if (mirrors[i].layer >= 0 && mirrors[i].host == host) return &mirrors[i];
    fprintf(stderr, "peft: internal error: streamed tensor %p has no mirror\n", (const void *)host);
    exit(1);
}
// layer l into its slot on the copy stream, after the kernels that read the slot's previous layer
static void offload_fetch(int l) {
    int s = l % ofl.nslots;
    if (ofl.holds[s] == l) return;
    if (ofl.fail_at && ++ofl.copies >= ofl.fail_at) { fprintf(stderr, "peft: CUDA error: copying layer %d's weights to the GPU failed (PEFT_CUDA_OFFLOAD_FAIL)\n", l); exit(1); }
    if (ofl.holds[s] >= 0 && ofl.holds[s] == ofl.cur) { CK(cudaEventRecord(ofl.free_[s], 0)); ofl.used[s] = 1; }
    if (ofl.used[s]) CK(cudaStreamWaitEvent(ofl.copy, ofl.free_[s], 0));
    for (int i = 0; i < ofl.nt; i++) {
        Mirror *m = streamed(ofl.t[i].host);
        if (m->layer == ofl.holds[s]) m->dev = NULL;
        if (m->layer != l) continue;
        m->dev = ofl.slot[s] + ofl.t[i].off;
        if (ofl.t[i].src) CK(cudaMemcpyAsync(m->dev, ofl.t[i].src, ofl.t[i].bytes, cudaMemcpyHostToDevice, ofl.copy));
        wrote(m->dev, ofl.t[i].bytes);
    }
    if (ofl.shard[l].bytes) { // --shard: the ranks' chunks side by side; this rank's at rank*chunk
        size_t ch = ofl.shard[l].bytes;
        char *mine = ofl.slot[s] + (size_t)ofl.rank * ch;
        if (ofl.shard[l].host) CK(cudaMemcpyAsync(mine, ofl.shard[l].host, ch, cudaMemcpyHostToDevice, ofl.copy));
        const char *from = ofl.shard[l].host ? mine : ofl.shard[l].dev;
        if (!shard_gather(ofl.slot[s], from, ch, ofl.copy) && from != mine) CK(cudaMemcpyAsync(mine, from, ch, cudaMemcpyDeviceToDevice, ofl.copy));
        wrote(ofl.slot[s], (size_t)ofl.world * ch);
    }
    CK(cudaEventRecord(ofl.ready[s], ofl.copy));
    ofl.holds[s] = l;
}
// the kernels from here on read layer l (waiting for its copy); layer next (-1: none) is copied meanwhile
extern "C" void gpu_offload_use(int l, int next) {
    if (!ofl.nslots) return;
    if (l == ofl.cur) { if (next >= 0 && next != l && next % ofl.nslots != l % ofl.nslots) offload_fetch(next); return; }
    if (ofl.cur >= 0) { int s = ofl.cur % ofl.nslots; CK(cudaEventRecord(ofl.free_[s], 0)); ofl.used[s] = 1; } // its kernels are all queued
    ofl.cur = l;
    offload_fetch(l);
    CK(cudaStreamWaitEvent(0, ofl.ready[l % ofl.nslots], 0));
    if (next >= 0 && next != l && next % ofl.nslots != l % ofl.nslots) offload_fetch(next);
}
// the streamed tensors go (their pinning too), and the slots
extern "C" void gpu_offload_end(void) {
    if (!ofl.nt) return;
    CK(cudaDeviceSynchronize());
    for (int i = ofl.nt - 1; i >= 0; i--) {
        if (ofl.t[i].pinned) cudaHostUnregister((void *)ofl.t[i].src);
        Mirror *m = streamed(ofl.t[i].host);
        npieces16 -= m->bf16;
        *m = mirrors[--nmirrors];
    }
    for (int l = 0; l < ofl.layers; l++) {
        if (ofl.shard[l].pinned) cudaHostUnregister(ofl.shard[l].host);
        if (ofl.shard[l].dev) gpu_free(ofl.shard[l].dev);
    }
    for (int s = 0; s < ofl.nslots; s++) { gpu_free(ofl.slot[s]); cudaEventDestroy(ofl.ready[s]); cudaEventDestroy(ofl.free_[s]); }
    if (ofl.nslots) cudaStreamDestroy(ofl.copy);
    free(ofl.t); free(ofl.layer_bytes); free(ofl.shard);
    memset(&ofl, 0, sizeof(ofl));
}

// --offload activations: the checkpoints (each layer's input, count of them) live in pinned host memory and
// slots of them on the GPU (tensor i in slot i % slots). The forward saves each one to the host once its
// layer wrote it; the backward copies each back in a layer ahead. Copies run on their own stream, each after
// an event recorded when it is queued (so after every kernel queued before that read or wrote the slot); the
// kernels that write a slot wait for its last save, those that read one for its copy.
static struct {
    char *host, *dev;
    size_t bytes;
    int count, slots, holds[MAX_SLOTS], pending[MAX_SLOTS], pinned; // pending: a copy in the kernels have not waited for
    cudaEvent_t saved[MAX_SLOTS], ready[MAX_SLOTS], now;
    cudaStream_t copy;
} xr;
extern "C" int gpu_xring_init(void *host, void *dev, size_t bytes, int count, int slots, char *err, size_t errlen) {
    if (slots > MAX_SLOTS) { snprintf(err, errlen, "at most %d slots", MAX_SLOTS); return -1; }
    xr.host = (char *)host; xr.dev = (char *)dev; xr.bytes = bytes; xr.count = count; xr.slots = slots;
    xr.pinned = pin_host(host, bytes * count, "activations");
    for (int s = 0; s < slots; s++) {
        xr.holds[s] = -1; xr.pending[s] = 0;
        CK(cudaEventCreateWithFlags(&xr.saved[s], cudaEventDisableTiming));
        CK(cudaEventCreateWithFlags(&xr.ready[s], cudaEventDisableTiming));
    }
    CK(cudaEventCreateWithFlags(&xr.now, cudaEventDisableTiming));
    CK(cudaStreamCreateWithFlags(&xr.copy, cudaStreamNonBlocking));
    return 0;
}
static void xring_after_kernels(void) { CK(cudaEventRecord(xr.now, 0)); CK(cudaStreamWaitEvent(xr.copy, xr.now, 0)); } // the copy stream waits for the kernels queued so far
extern "C" void gpu_xring_write(int i) {
    int s = i % xr.slots;
    CK(cudaStreamWaitEvent(0, xr.saved[s], 0)); // the slot's previous tensor is on the host
    if (xr.pending[s]) { CK(cudaStreamWaitEvent(0, xr.ready[s], 0)); xr.pending[s] = 0; }
    xr.holds[s] = i;
}
extern "C" void gpu_xring_save(int i) {
    int s = i % xr.slots;
    xring_after_kernels();
    CK(cudaMemcpyAsync(xr.host + (size_t)i * xr.bytes, xr.dev + (size_t)s * xr.bytes, xr.bytes, cudaMemcpyDeviceToHost, xr.copy));
    CK(cudaEventRecord(xr.saved[s], xr.copy));
}
static void xring_fetch(int i) {
    int s = i % xr.slots;
    if (xr.holds[s] == i) return;
    if (ofl.fail_at && ++ofl.copies >= ofl.fail_at) { fprintf(stderr, "peft: CUDA error: copying layer %d's input to the GPU failed (PEFT_CUDA_OFFLOAD_FAIL)\n", i); exit(1); }
    xring_after_kernels();
    char *d = xr.dev + (size_t)s * xr.bytes;
    CK(cudaMemcpyAsync(d, xr.host + (size_t)i * xr.bytes, xr.bytes, cudaMemcpyHostToDevice, xr.copy));
    wrote(d, xr.bytes); // the bf16 copies made from the slot are stale
    CK(cudaEventRecord(xr.ready[s], xr.copy));
    xr.holds[s] = i;
    xr.pending[s] = 1;
}
extern "C" void gpu_xring_read(int i, int next) {
    int s = i % xr.slots;
    xring_fetch(i);
    if (xr.pending[s]) { CK(cudaStreamWaitEvent(0, xr.ready[s], 0)); xr.pending[s] = 0; }
    if (next >= 0 && next % xr.slots != s) xring_fetch(next);
}
extern "C" void gpu_xring_end(void) {
    if (!xr.slots) return;
    CK(cudaDeviceSynchronize());
    if (xr.pinned) cudaHostUnregister(xr.host);
    for (int s = 0; s < xr.slots; s++) { cudaEventDestroy(xr.saved[s]); cudaEventDestroy(xr.ready[s]); }
    cudaEventDestroy(xr.now);
    cudaStreamDestroy(xr.copy);
    memset(&xr, 0, sizeof(xr));
}

// scratch that grows to the largest request (one user at a time)
static void *scratch_reserve(void **buf, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return *buf;
    gpu_free(*buf);
    *buf = gpu_alloc(bytes);
    if (!*buf) { fprintf(stderr, "peft: out of GPU memory allocating %.1f MiB of scratch (%.1f MiB free)\n", bytes / 1048576.0, gpu_free_bytes() / 1048576.0); exit(1); }
    *cap = bytes;
    return *buf;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it
template <typename T> __device__ T block_sum(T v, T *shared32) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    T s = 0;
    for (int w = 0; w < nw; w++) s += shared32[w];
    return s;
}
__device__ float block_max(float v, float *shared32) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    float m = -INFINITY;
    for (int w = 0; w < nw; w++) m = fmaxf(m, shared32[w]);
    return m;
}

// ----------------------------------------------------------------------------
// bf16 copies of the large GEMM's operands, kept while their source is unchanged
//
// The large GEMM reads bf16 operands (to_bf16_kernel: the contiguous axis padded with zeros to a
// multiple of 8, so every 16-byte piece is whole and aligned). The copy made for one call is kept for
// the next calls that read the same operand, keyed by its source and layout: q, k and v read one input,
// gate and up another, and a frozen weight is read by every step. Every entry point reports the memory
// it writes (wrote), which drops the copies made from it. Copies of weights (sources inside a mirror)
// have their own buffers, kept between steps while 2 GiB stay free; the others share NSLOTS buffers,
// the least recently used taken first, never one holding another operand of the same kernel. Kernels
// whose output a large GEMM reads next (RMSNorm, SwiGLU, RoPE, ...) write its copy beside it (shadow).
// PEFT_CUDA_COPIES=0: a fresh copy for every call (as before the cache); =check: every copy found is
// compared with a fresh one, and a difference stops the program (the test that no writer is missing);
// =noshadow: no kernel writes a copy beside its output.
// 8 values from p (float or bf16), 16-byte aligned, into t
__device__ __forceinline__ void load8(float *t, const float *p) { *(float4 *)t = *(const float4 *)p; *(float4 *)(t + 4) = *(const float4 *)(p + 4); }
__device__ __forceinline__ void widen8(float *t, uint4 u) { // 8 bf16 values (16 bytes) to floats
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
    for (int k = 0; k < 4; k++) { t[2 * k] = __low2float(h[k]); t[2 * k + 1] = __high2float(h[k]); }
}
__device__ __forceinline__ void load8(float *t, const __nv_bfloat16 *p) { widen8(t, *(const uint4 *)p); }
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
// q (no, ldq) = p (no, nc) rounded to bf16, p(o, c) = p[o*so + c]; zeros for c in [nc, ldq). p: float, or
// bf16 (a bf16-only weight: the values as they are)
template <typename S> __global__ void to_bf16_kernel(__nv_bfloat16 *q, long ldq, const S *p, long so, int no, int nc) {
    FOR_EACH(e, (size_t)no * (ldq / 8)) { // 8 values a thread: 16 or 32 bytes in, one uint4 out
        int o = (int)(e / (ldq / 8)), c = (int)(e % (ldq / 8)) * 8;
        const S *src = p + (long)o * so + c;
        float t[8];
        if (c + 7 < nc && ((uintptr_t)src & 15) == 0) load8(t, src);
        else for (int k = 0; k < 8; k++) t[k] = c + k < nc ? to_f(src[k]) : 0.0f;
        __nv_bfloat162 h[4];
        for (int k = 0; k < 4; k++) h[k] = __floats2bfloat162_rn(t[2 * k], t[2 * k + 1]);
        *(uint4 *)(q + (long)o * ldq + c) = *(uint4 *)h;
    }
}
// q[o*ldq + c] = bf16(p[c*so + o]) for o < no, c < nc, zeros for nc <= c < ldq: the transposing copy,
// in 32 x 32 tiles through shared memory (reads and writes coalesced)
template <typename S> __global__ void to_bf16_t_kernel(__nv_bfloat16 *q, long ldq, const S *p, long so, int no, int nc) {
    __shared__ float t[32][33];
    int o0 = blockIdx.x * 32, c0 = blockIdx.y * 32, tx = threadIdx.x % 32, ty = threadIdx.x / 32;
    for (int r = ty; r < 32; r += 8) { int c = c0 + r, o = o0 + tx; t[r][tx] = c < nc && o < no ? to_f(p[(long)c * so + o]) : 0.0f; }
    __syncthreads();
    for (int r = ty; r < 32; r += 8) { int o = o0 + r, c = c0 + tx; if (o < no && c < ldq) q[(long)o * ldq + c] = __float2bfloat16(t[tx][r]); }
}
typedef struct {
    const char *lo, *hi;                  // the source's bytes
    const float *src; long so; int outer, inner, t; // q(o, c) = src[o*so + c] (t: src[c*so + o]), o < outer, c < inner
    size_t flat;                          // outer*inner when the copy is the source's values in order (t = 0, so = inner, inner % 8 == 0)
    __nv_bfloat16 *q; size_t cap;         // the copy, rows of ld = inner rounded up to 8
    int valid, weight; unsigned long used;
} Copy;
#define NSLOTS 6
#define BT 128 // rows of the large GEMM's tiles (the GEMM takes M, N >= BT)
static Copy *copies;
static int ncopies, cap_copies;
static unsigned long copy_clock;
static unsigned long copy_hold; // slots used at or after this clock hold operands of the kernel being set up
// a kernel's operands are gathered from here on: the slots handed out next are not taken for one another
static void copies_next_kernel(void) { copy_hold = copy_clock + 1; }
static size_t copies_reserve = (size_t)2 << 30; // weights' copies leave this much device memory free
// memory that gpu_zero cleared and nothing wrote since: a GEMM or SwiGLU's backward adding into it
// need not read it
static struct { const char *lo, *hi; } zeroed[16];
static int nzeroed;
static int known_zero(const void *p, size_t bytes) {
    const char *lo = (const char *)p, *hi = lo + bytes;
    for (int i = 0; i < nzeroed; i++) if (zeroed[i].lo <= lo && hi <= zeroed[i].hi) return 1;
    return 0;
}
// an entry point wrote bytes at device address p: the copies made from there are stale
static void wrote(const void *p, size_t bytes) {
    const char *lo = (const char *)p, *hi = lo + bytes;
    for (int i = 0; i < ncopies; i++) if (copies[i].valid && copies[i].lo < hi && lo < copies[i].hi) copies[i].valid = 0;
    for (int i = 0; i < nzeroed; i++) if (zeroed[i].lo < hi && lo < zeroed[i].hi) zeroed[i--] = zeroed[--nzeroed];
}
// memory at p is freed: its copies go too (a later allocation may reuse the address)
static void forget(const void *p, size_t bytes) {
    const char *lo = (const char *)p, *hi = lo + bytes;
    for (int i = 0; i < ncopies; i++)
        if (copies[i].lo < hi && lo < copies[i].hi) { free_block(copies[i].q); copies[i--] = copies[--ncopies]; }
    for (int i = 0; i < nzeroed; i++) if (zeroed[i].lo < hi && lo < zeroed[i].hi) zeroed[i--] = zeroed[--nzeroed];
}
static void forget_all(void) { for (int i = 0; i < ncopies; i++) free_block(copies[i].q); ncopies = 0; nzeroed = 0; }
static int in_mirror(const void *dev) {
    const char *c = (const char *)dev;
    for (int i = 0; i < nmirrors; i++) if (c >= mirrors[i].dev && c < mirrors[i].dev + mirrors[i].bytes) return 1;
    return 0;
}
template <typename S> static void convert_from(__nv_bfloat16 *q, long ld, const S *p, long so, int outer, int inner, int t) {
    if (!t) { to_bf16_kernel<S><<<blocks_for((size_t)outer * (ld / 8), 256), 256>>>(q, ld, p, so, outer, inner); LAUNCHED("to_bf16_kernel"); return; }
    dim3 g((outer + 31) / 32, (unsigned)((ld + 31) / 32));
    to_bf16_t_kernel<S><<<g, 256>>>(q, ld, p, so, outer, inner);
    LAUNCHED("to_bf16_t_kernel");
}
// p: a device address, or a host address inside a bf16 piece
static void convert(__nv_bfloat16 *q, long ld, const float *p, long so, int outer, int inner, int t) {
    const Mirror *m = bf16_piece(p);
    if (m) convert_from(q, ld, piece16(m, p), so, outer, inner, t);
    else if (act16(p)) convert_from(q, ld, (const __nv_bfloat16 *)act16(p), so, outer, inner, t);
    else convert_from(q, ld, p, so, outer, inner, t);
}
// the entry for a source and layout: the matching one, else a new one with room for bytes (NULL: no room)
static Copy *copy_entry(const float *p, long so, int outer, int inner, int t, size_t flat, size_t bytes) {
    Copy *c = NULL, *old = NULL, *fit = NULL;
    int slots = 0;
    for (int i = 0; i < ncopies; i++) {
        Copy *e = &copies[i];
        if (e->src == p && (flat ? e->flat == flat : !e->flat && e->so == so && e->outer == outer && e->inner == inner && e->t == t)) return e;
        if (!e->weight) {
            slots++;
            if (e->used >= copy_hold) continue; // another operand of the same kernel
            if (!old || e->used < old->used) old = e;
            if (e->cap >= bytes && (!fit || e->used < fit->used)) fit = e;
        }
    }
    int weight = in_mirror(p);
    // the least recently used slot with room, re-keyed; else the least recently used one, grown (so that a
    // large copy, the logits' gradient, keeps coming back to one slot instead of growing one after another)
    if (!weight && slots >= NSLOTS && old) c = fit ? fit : old;
    else {
        if (weight && gpu_free_bytes() < bytes + copies_reserve) return NULL;
        if (ncopies == cap_copies) {
            cap_copies = cap_copies ? 2 * cap_copies : 64;
            copies = (Copy *)realloc(copies, (size_t)cap_copies * sizeof(Copy));
            if (!copies) { fprintf(stderr, "peft: out of memory\n"); exit(1); }
        }
        c = &copies[ncopies++];
        memset(c, 0, sizeof *c);
        c->weight = weight;
    }
    if (c->cap < bytes) {
        if (c->q) free_block(c->q);
        c->q = (__nv_bfloat16 *)gpu_alloc(bytes);
        c->cap = c->q ? bytes : 0;
        if (!c->q) { *c = copies[--ncopies]; return NULL; }
    }
    size_t last = t ? (size_t)(inner - 1) * so + outer : (size_t)(outer - 1) * so + inner;
    c->lo = (const char *)p; c->hi = (const char *)(p + last);
    c->src = p; c->so = so; c->outer = outer; c->inner = inner; c->t = t; c->flat = flat; c->valid = 0;
    return c;
}
__global__ void count_differences_kernel(unsigned *n, const uint16_t *a, const uint16_t *b, size_t len) {
    FOR_EACH(i, len) if (a[i] != b[i]) atomicAdd(n, 1u);
}
static void *tc_scratch[4]; // 0, 1: the GEMM's operands; 2, 3: LoRA's rank-r operands in the same GEMM
static size_t tc_cap[4];
static unsigned *check_count;
static void check_copy(const Copy *c, int w) { // the whole copy, in the layout it was made in
    long ld = (c->inner + 7) / 8 * 8;
    size_t len = (size_t)c->outer * ld;
    __nv_bfloat16 *q = (__nv_bfloat16 *)scratch_reserve(&tc_scratch[w], &tc_cap[w], len * sizeof(__nv_bfloat16));
    unsigned h = 0;
    if (!check_count && !(check_count = (unsigned *)gpu_alloc(sizeof(unsigned)))) { fprintf(stderr, "peft: out of GPU memory\n"); exit(1); }
    CK(cudaMemset(check_count, 0, sizeof(unsigned)));
    convert(q, ld, c->src, c->so, c->outer, c->inner, c->t);
    count_differences_kernel<<<blocks_for(len, 256), 256>>>(check_count, (const uint16_t *)q, (const uint16_t *)c->q, len);
    CK(cudaMemcpy(&h, check_count, sizeof h, cudaMemcpyDeviceToHost));
    if (h) {
        fprintf(stderr, "peft: internal error: the bf16 copy of %p (%d x %d%s%s) is stale in %u of %zu values (PEFT_CUDA_COPIES=check)\n", (const void *)c->src, c->outer, c->inner,
                c->t ? ", transposed" : "", c->weight ? ", a weight" : "", h, len);
        exit(1);
    }
}
// the large GEMM's operand (outer, inner) with inner contiguous in the copy: q(o, c) = p[o*so + c], or
// p[c*so + o] when t; ld = inner rounded up to 8. w (0 or 1): the scratch used when nothing is kept.
static const __nv_bfloat16 *operand_copy(int w, const float *p, long so, int outer, int inner, int t, long *ld) {
    *ld = (inner + 7) / 8 * 8;
    size_t bytes = (size_t)outer * *ld * sizeof(__nv_bfloat16);
    const Mirror *m = bf16_piece(p);
    if (m && !t && so == inner && inner % 8 == 0 && ((uintptr_t)piece16(m, p) & 15) == 0) return piece16(m, p); // a bf16-only weight is its own copy
    if (act16(p) && !t && so == inner && inner % 8 == 0 && ((uintptr_t)p & 15) == 0) return act16(p);              // and bf16 activations theirs
    Copy *c = NULL;
    if (copies_on) {
        size_t flat = !t && so == inner && inner % 8 == 0 ? (size_t)outer * inner : 0;
        c = copy_entry(p, so, outer, inner, t, flat, bytes);
    }
    if (c && c->valid) {
        if (copies_check) check_copy(c, w);
        c->used = ++copy_clock;
        return c->q;
    }
    __nv_bfloat16 *q = c ? c->q : (__nv_bfloat16 *)scratch_reserve(&tc_scratch[w], &tc_cap[w], bytes);
    convert(q, *ld, p, so, outer, inner, t);
    if (c) { c->valid = 1; c->used = ++copy_clock; }
    return q;
}
// the bf16 copy that a kernel writes beside its output x (n values in order), or NULL when no large
// GEMM would read one. Call after wrote(x).
static __nv_bfloat16 *shadow(const float *x, size_t n) {
    if (!copies_on || !copies_shadow || !bf16_matmuls || !large_gemm || n < (size_t)BT * BT || n % 8 || (n >> 31) || ((uintptr_t)x & 3)) return NULL;
    Copy *c = copy_entry(x, (long)n, 1, (int)n, 0, n, n * sizeof(__nv_bfloat16));
    if (!c) return NULL;
    c->valid = 1; c->used = ++copy_clock;
    return c->q;
}

// ----------------------------------------------------------------------------
// GEMM: C (M,N) (+)= A (M,K) @ B (K,N), A(i,k) = a[i*rsa + k*csa], B(k,j) = b[k*rsb + j*csb], as peft.c's
// gemm, so that W and W^T, dout and dout^T need no copies. Each block computes a 64x64 tile of C,
// stepping through K; each tile of A and B is staged in shared memory, read along its contiguous axis.

// fp32: 256 threads, each a 4x4 of C at rows ty + 16 r, columns tx + 16 c (conflict-free reads)
#define GM 64
#define GK 16
// Split-K (blockIdx.z > 0 in use): block z takes k in [z kchunk, (z+1) kchunk) and writes its own C at
// c + z * zstride. Every kernel below follows that.
#define SPLIT_K_SETUP() do { int kb_ = blockIdx.z * kchunk; a += kb_ * csa; b += kb_ * rsb; K = min(K - kb_, kchunk); c += blockIdx.z * zstride; } while (0)
__global__ void gemm_f32_kernel(float *c, long ldc, const float *a, long rsa, long csa, const float *b, long rsb, long csb, int M, int N, int K, int accumulate, int kchunk, long zstride) {
    __shared__ float As[GK][GM + 1], Bs[GK][GM + 1];
    SPLIT_K_SETUP();
    int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    int i0 = blockIdx.y * GM, j0 = blockIdx.x * GM;
    float acc[4][4] = { { 0 } };
    for (int k0 = 0; k0 < K; k0 += GK) {
        for (int e = tid; e < GM * GK; e += 256) {
            int ii = csa == 1 ? e / GK : e % GM, kk = csa == 1 ? e % GK : e / GM; // the contiguous axis fastest
            int gi = i0 + ii, gk = k0 + kk;
            As[kk][ii] = (gi < M && gk < K) ? a[gi * rsa + gk * csa] : 0.0f;
            int jj = csb == 1 ? e % GM : e / GK, kb = csb == 1 ? e / GM : e % GK;
            int gj = j0 + jj, gkb = k0 + kb;
            Bs[kb][jj] = (gj < N && gkb < K) ? b[gkb * rsb + gj * csb] : 0.0f;
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < GK; kk++) {
            float av[4], bv[4];
            #pragma unroll
            for (int r = 0; r < 4; r++) { av[r] = As[kk][ty + 16 * r]; bv[r] = Bs[kk][tx + 16 * r]; }
            #pragma unroll
            for (int r = 0; r < 4; r++)
                #pragma unroll
                for (int q = 0; q < 4; q++) acc[r][q] = fmaf(av[r], bv[q], acc[r][q]);
        }
        __syncthreads();
    }
    #pragma unroll
    for (int r = 0; r < 4; r++)
        #pragma unroll
        for (int q = 0; q < 4; q++) {
            int i = i0 + ty + 16 * r, j = j0 + tx + 16 * q;
            if (i < M && j < N) c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + acc[r][q];
        }
}

// bf16 operands on the tensor cores (wmma 16x16x16, fp32 accumulation): 128 threads, 4 warps in 2x2,
// each warp a 32x32 piece of the tile. A and B are rounded to bf16 as they are staged.
using namespace nvcuda;
#define WK 32
__global__ void gemm_bf16_kernel(float *c, long ldc, const float *a, long rsa, long csa, const float *b, long rsb, long csb, int M, int N, int K, int accumulate, int kchunk, long zstride) {
    SPLIT_K_SETUP();
    __shared__ __align__(32) __nv_bfloat16 As[GM][WK + 8];
    __shared__ __align__(32) __nv_bfloat16 Bs[WK][GM + 8];
    __shared__ __align__(32) float Cs[GM][GM + 4];
    int tid = threadIdx.x, warp = tid / 32, wr = warp / 2, wc = warp % 2;
    int i0 = blockIdx.y * GM, j0 = blockIdx.x * GM;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
    for (int x = 0; x < 2; x++) for (int y = 0; y < 2; y++) wmma::fill_fragment(acc[x][y], 0.0f);
    for (int k0 = 0; k0 < K; k0 += WK) {
        for (int e = tid; e < GM * WK; e += 128) {
            int ii = csa == 1 ? e / WK : e % GM, kk = csa == 1 ? e % WK : e / GM;
            int gi = i0 + ii, gk = k0 + kk;
            As[ii][kk] = __float2bfloat16((gi < M && gk < K) ? a[gi * rsa + gk * csa] : 0.0f);
            int jj = csb == 1 ? e % GM : e / WK, kb = csb == 1 ? e / GM : e % WK;
            int gj = j0 + jj, gkb = k0 + kb;
            Bs[kb][jj] = __float2bfloat16((gj < N && gkb < K) ? b[gkb * rsb + gj * csb] : 0.0f);
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < WK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb[2];
            for (int x = 0; x < 2; x++) wmma::load_matrix_sync(fa[x], &As[wr * 32 + x * 16][kk], WK + 8);
            for (int y = 0; y < 2; y++) wmma::load_matrix_sync(fb[y], &Bs[kk][wc * 32 + y * 16], GM + 8);
            for (int x = 0; x < 2; x++) for (int y = 0; y < 2; y++) wmma::mma_sync(acc[x][y], fa[x], fb[y], acc[x][y]);
        }
        __syncthreads();
    }
    for (int x = 0; x < 2; x++)
        for (int y = 0; y < 2; y++) wmma::store_matrix_sync(&Cs[wr * 32 + x * 16][wc * 32 + y * 16], acc[x][y], GM + 4, wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < GM * GM; e += 128) {
        int ii = e / GM, jj = e % GM, i = i0 + ii, j = j0 + jj;
        if (i < M && j < N) c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + Cs[ii][jj];
    }
}

// The large GEMM on bf16 operands in memory (their copies, above): the tiles go from global to shared memory by cp.async (no registers on the way), TC_STAGES deep,
// while the tensor cores (wmma 16x16x16, fp32 accumulation) work on the oldest. Each operand stays in
// shared memory in its orientation in memory (AK: A's rows contiguous in k, else its columns in i; BK:
// B's columns contiguous in k, else its rows in j), which the fragments read as row- or column-major.
// tiles: 128 rows x BN = 4 WN columns, K in steps of TK, STAGES deep (tc_shape picks them)
// start copying one LO x LC slab (the operand's rows o0.., values c0.. of its contiguous axis) into s,
// [LO][LC + 8]; rows past no and values past ld (the padded length) are zero-filled
template <int LC, int LO>
__device__ __forceinline__ void slab_async(__nv_bfloat16 *s, const __nv_bfloat16 *p, long ld, int o0, int c0, int no, int tid) {
    #pragma unroll
    for (int k = 0; k < LO * LC / 8 / 256; k++) {
        int v = tid + 256 * k, oo = v / (LC / 8), cc = (v % (LC / 8)) * 8, go = o0 + oo, gc = c0 + cc;
        bool ok = go < no && gc < ld;
        const __nv_bfloat16 *src = ok ? p + (long)go * ld + gc : p;
        unsigned dst = (unsigned)__cvta_generic_to_shared(s + oo * (LC + 8) + cc);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
    }
}
// A (M,K): AK ? a[i*lda + k] : a[k*lda + i];  B (K,N): BK ? b[j*ldb + k] : b[k*ldb + j]. 8 warps in 2 x 4,
// each a 64 x WN piece of the 128 x 4WN tile
template <bool AK, bool BK, int TC_K, int WN, int TC_STAGES>
__global__ void __launch_bounds__(256) gemm_tc_kernel(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M, int N, int K, int accumulate) {
    constexpr int BN = 4 * WN, NF = WN / 16;
    constexpr int ALC = AK ? TC_K : BT, ALO = AK ? BT : TC_K, BLC = BK ? TC_K : BN, BLO = BK ? BN : TC_K;
    constexpr int ASZ = ALO * (ALC + 8), BSZ = BLO * (BLC + 8);
    extern __shared__ __align__(128) __nv_bfloat16 smem_tc[];
    int tid = threadIdx.x, warp = tid / 32, wm = warp / 4, wn = warp % 4;
    int i0 = blockIdx.y * BT, j0 = blockIdx.x * BN;
    typedef typename std::conditional<AK, wmma::row_major, wmma::col_major>::type ALayout;
    typedef typename std::conditional<BK, wmma::col_major, wmma::row_major>::type BLayout;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][NF];
    #pragma unroll
    for (int x = 0; x < 4; x++) for (int y = 0; y < NF; y++) wmma::fill_fragment(acc[x][y], 0.0f);
    int nt = (K + TC_K - 1) / TC_K;
    #define TC_LOAD(stage, k0) do { __nv_bfloat16 *As_ = smem_tc + (stage) * (ASZ + BSZ), *Bs_ = As_ + ASZ; \
        if (AK) slab_async<ALC, ALO>(As_, a, lda, i0, (k0), M, tid); else slab_async<ALC, ALO>(As_, a, lda, (k0), i0, K, tid); \
        if (BK) slab_async<BLC, BLO>(Bs_, b, ldb, j0, (k0), N, tid); else slab_async<BLC, BLO>(Bs_, b, ldb, (k0), j0, K, tid); } while (0)
    #pragma unroll
    for (int st = 0; st < TC_STAGES - 1; st++) {
        if (st < nt) TC_LOAD(st, st * TC_K);
        asm volatile("cp.async.commit_group;\n" ::);
    }
    for (int t = 0; t < nt; t++) {
        asm volatile("cp.async.wait_group %0;\n" ::"n"(TC_STAGES - 2)); // tile t is in
        __syncthreads();                                                 // and every warp is done with tile t-1
        if (t + TC_STAGES - 1 < nt) TC_LOAD((t + TC_STAGES - 1) % TC_STAGES, (t + TC_STAGES - 1) * TC_K);
        asm volatile("cp.async.commit_group;\n" ::);
        const __nv_bfloat16 *As = smem_tc + (t % TC_STAGES) * (ASZ + BSZ), *Bs = As + ASZ;
        #pragma unroll
        for (int kk = 0; kk < TC_K; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, ALayout> fa[4];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, BLayout> fb[NF];
            #pragma unroll
            for (int x = 0; x < 4; x++) {
                int i = wm * 64 + x * 16;
                if (AK) wmma::load_matrix_sync(fa[x], As + i * (ALC + 8) + kk, ALC + 8);
                else wmma::load_matrix_sync(fa[x], As + kk * (ALC + 8) + i, ALC + 8);
            }
            #pragma unroll
            for (int y = 0; y < NF; y++) {
                int j = wn * WN + y * 16;
                if (BK) wmma::load_matrix_sync(fb[y], Bs + j * (BLC + 8) + kk, BLC + 8);
                else wmma::load_matrix_sync(fb[y], Bs + kk * (BLC + 8) + j, BLC + 8);
            }
            #pragma unroll
            for (int x = 0; x < 4; x++)
                #pragma unroll
                for (int y = 0; y < NF; y++) wmma::mma_sync(acc[x][y], fa[x], fb[y], acc[x][y]);
        }
    }
    #undef TC_LOAD
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();
    // epilogue: a whole aligned 16x16 piece goes straight to C (added to it when accumulating); an edge
    // piece goes through this warp's 16x16 of shared memory
    float *cw = (float *)smem_tc + warp * 256;
    #pragma unroll
    for (int x = 0; x < 4; x++)
        #pragma unroll
        for (int y = 0; y < NF; y++) {
            int i = i0 + wm * 64 + x * 16, j = j0 + wn * WN + y * 16;
            if (i >= M || j >= N) continue;
            float *cp = c + i * ldc + j;
            if (i + 16 <= M && j + 16 <= N && ldc % 4 == 0 && ((uintptr_t)cp & 31) == 0) {
                if (accumulate) {
                    wmma::fragment<wmma::accumulator, 16, 16, 16, float> old;
                    wmma::load_matrix_sync(old, cp, (unsigned)ldc, wmma::mem_row_major);
                    for (int e = 0; e < old.num_elements; e++) acc[x][y].x[e] += old.x[e];
                }
                wmma::store_matrix_sync(cp, acc[x][y], (unsigned)ldc, wmma::mem_row_major);
            } else {
                wmma::store_matrix_sync(cw, acc[x][y], 16, wmma::mem_row_major);
                __syncwarp();
                for (int e = threadIdx.x % 32; e < 256; e += 32) {
                    int ii = i + e / 16, jj = j + e % 16;
                    if (ii < M && jj < N) c[ii * ldc + jj] = (accumulate ? c[ii * ldc + jj] : 0.0f) + cw[e];
                }
                __syncwarp();
            }
        }
}
template <bool AK, bool BK, int TK, int WN, int ST>
static void launch_tc(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M, int N, int K, int accumulate) {
    constexpr int BN = 4 * WN, ASZ = (AK ? BT : TK) * ((AK ? TK : BT) + 8), BSZ = (BK ? BN : TK) * ((BK ? TK : BN) + 8);
    constexpr int bytes = ST * (ASZ + BSZ) * 2;
    static bool set = false;
    if (!set) { CK(cudaFuncSetAttribute(gemm_tc_kernel<AK, BK, TK, WN, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)); set = true; }
    dim3 g((N + BN - 1) / BN, (M + BT - 1) / BT);
    gemm_tc_kernel<AK, BK, TK, WN, ST><<<g, 256, bytes>>>(c, ldc, a, lda, b, ldb, M, N, K, accumulate);
}
// the tile shape: PEFT_CUDA_TC=K,WN picks one (32,32 | 64,32 | 32,64 | 64,64) for measuring; default 64,64
template <bool AK, bool BK>
static void launch_tc_shape(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M, int N, int K, int accumulate) {
    if (tc_k == 64 && tc_wn == 64) launch_tc<AK, BK, 64, 64, 3>(c, ldc, a, lda, b, ldb, M, N, K, accumulate);
    else if (tc_k == 64) launch_tc<AK, BK, 64, 32, 3>(c, ldc, a, lda, b, ldb, M, N, K, accumulate);
    else if (tc_wn == 64) launch_tc<AK, BK, 32, 64, 4>(c, ldc, a, lda, b, ldb, M, N, K, accumulate);
    else launch_tc<AK, BK, 32, 32, 4>(c, ldc, a, lda, b, ldb, M, N, K, accumulate);
}

// ----------------------------------------------------------------------------
// the large GEMM on Hopper (sm_90a): wgmma with operands moved by the bulk tensor copy engine (TMA).
// C (M,N) (+)= A B^T with A (M,K) and B (N,K) both bf16 with K contiguous. 384 threads: warpgroup 0's
// first thread issues the TMA copies of 128 x 64 (A) and 256 x 64 (B) tiles, 128-byte swizzled, into a
// ring of 4 stages (full/empty mbarriers); warpgroups 1 and 2 each multiply 64 rows of the 128 x 256
// tile with wgmma m64n256k16 (fp32 accumulators in registers). The epilogue writes each warpgroup's
// 64 x 256 result into its own shared-memory staging buffer (SB bytes, 128-byte swizzled) a slab at a time
// and hands each slab to a TMA store (C = d), a TMA reduce-add in L2 (C += d) or a bf16 store, then goes
// on to the next tile's products while the copy engine drains the slab; SB = 0 (or C not 16-byte aligned)
// stores straight from registers instead.
// A persistent grid (a block per SM) takes the tiles in groups of 16 tile rows (L2 reuse). The tensor
// maps come from the driver's cuTensorMapEncodeTiled, reached through the runtime (no libcuda link).
// PEFT_CUDA_GEMM=mma keeps the cp.async kernel above on Hopper too.
namespace wgk {

constexpr int BM = 128;          // rows of C per CTA tile (2 consumer warpgroups x 64)
constexpr int BK = 64;           // K elements per stage = 128 bytes of bf16 = one 128B swizzle row
constexpr int NTHREADS = 384;    // 3 warpgroups

template <int BN, int STAGES, int SB = 0>
struct Cfg {
    static_assert(BN == 128 || BN == 256, "BN must be 128 or 256 (TMA box rows <= 256)");
    static_assert(SB % 8192 == 0, "the staging buffer holds whole 8 KB boxes (64 rows x 128 B)");
    static constexpr int A_BYTES = BM * BK * 2;               // 16 KB
    static constexpr int B_BYTES = BN * BK * 2;               // 16 or 32 KB
    static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;     // expect_tx per stage
    static constexpr int BAR_BYTES = 2 * STAGES * 8;
    static constexpr int SMEM_BYTES = 1024 /*alignment slack*/ + STAGES * STAGE_BYTES + 2 * SB + BAR_BYTES;
    static_assert(SMEM_BYTES <= 227 * 1024, "too much shared memory");
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
constexpr int GROUP_M = 16;      // tile-order grouping (in M tiles) for L2 reuse
constexpr int PRODUCER_REGS = 40;
constexpr int CONSUMER_REGS = 232;   // 128*40 + 256*232 = 64512 <= 65536
// ------------------------------------------------------------------------------------------------
// PTX wrappers
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ uint32_t mbar_try_wait(uint32_t bar, uint32_t parity) {
    uint32_t ok;
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(ok)
        : "r"(bar), "r"(parity)
        : "memory");
    return ok;
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    while (!mbar_try_wait(bar, parity)) {}
}

// 2-D TMA tile load: box (BK x rows) at coordinates (k0 = inner/K, r0 = row) into smem, completing on mbarrier.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap *map, int k0, int r0, uint32_t bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
        ::"r"(dst), "l"((uint64_t)map), "r"(k0), "r"(r0), "r"(bar)
        : "memory");
}
// 2-D TMA store of a box from smem to C at (c0 = column, r0 = row), and its reduce-add form (C += box, in
// L2); both in a bulk group. Elements outside C are not written.
__device__ __forceinline__ void tma_store_2d(const CUtensorMap *map, uint32_t src, int c0, int r0) {
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];"
                 ::"l"((uint64_t)map), "r"(c0), "r"(r0), "r"(src) : "memory");
}
__device__ __forceinline__ void tma_add_2d(const CUtensorMap *map, uint32_t src, int c0, int r0) {
    asm volatile("cp.reduce.async.bulk.tensor.2d.global.shared::cta.add.tile.bulk_group [%0, {%1, %2}], [%3];"
                 ::"l"((uint64_t)map), "r"(c0), "r"(r0), "r"(src) : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
// the bulk groups have read their smem (it may be written again) / have finished
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory"); }
__device__ __forceinline__ void bulk_wait() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
// this thread's smem writes made visible to the copy engine (the async proxy)
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
// barrier among the `count` threads that name barrier `id` (0 is __syncthreads')
__device__ __forceinline__ void named_sync(int id, int count) { asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory"); }
__device__ __forceinline__ void st_shared_f2(uint32_t a, float x, float y) { asm volatile("st.shared.v2.f32 [%0], {%1, %2};" ::"r"(a), "f"(x), "f"(y) : "memory"); }
__device__ __forceinline__ void st_shared_u32(uint32_t a, uint32_t x) { asm volatile("st.shared.u32 [%0], %1;" ::"r"(a), "r"(x) : "memory"); }

__device__ __forceinline__ void prefetch_tmap(const CUtensorMap *map) {
    asm volatile("prefetch.tensormap [%0];" ::"l"((uint64_t)map) : "memory");
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }

template <int R>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(R)); }
template <int R>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(R)); }

// Shared-memory matrix descriptor for a K-major operand tile written by TMA with 128B swizzle:
//   bits  0-13: start address >> 4
//   bits 16-29: leading byte offset >> 4  (unused for swizzled K-major layouts; set to 1 = 16 B by convention)
//   bits 32-45: stride byte offset >> 4   (1024 B = 8 rows x 128 B between consecutive 8-row core-matrix groups)
//   bits 49-51: base offset = 0 (tiles are 1024-byte aligned)
//   bits 62-63: swizzle mode, 1 = 128B swizzle
// Advancing K by 16 bf16 (32 bytes) inside the 128-byte swizzle row = adding 2 to the start-address field.
__device__ __forceinline__ uint64_t make_desc_sw128(uint32_t saddr) {
    uint64_t d = 0;
    d |= (uint64_t)((saddr & 0x3FFFF) >> 4);
    d |= (uint64_t)(16 >> 4) << 16;
    d |= (uint64_t)(1024 >> 4) << 32;
    d |= (uint64_t)1 << 62;
    return d;
}

// The same for an MN-major B tile (B stored K x N with N contiguous, the transposed GEMM's weight W):
// TMA boxes of 64 columns (128 B) x BK rows, 128B swizzle, one after another. In CUTLASS's terms the
// canonical layout ((8,8,m),(8,k)):((1,8,LBO),(64,SBO)) in elements: a k row is 128 B, 8 k rows make a
// 1024-byte swizzle atom (SBO), and the next 64 columns are the next box (LBO = 64 rows x 128 B = 8 KB).
// Advancing K by 16 = 16 rows = 2048 bytes = adding 128 to the start-address field.
__device__ __forceinline__ uint64_t make_desc_mn_sw128(uint32_t saddr) {
    uint64_t d = 0;
    d |= (uint64_t)((saddr & 0x3FFFF) >> 4);
    d |= (uint64_t)((64 * 128) >> 4) << 16;
    d |= (uint64_t)(1024 >> 4) << 32;
    d |= (uint64_t)1 << 62;
    return d;
}

// wgmma m64n128k16, bf16 x bf16 -> fp32, A and B from shared memory (A K-major; B K-major, or MN-major
// when TB), D += A*B^T.
template <int TB>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t da, uint64_t db) {
    asm volatile(
        "{\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, "
        "%64, %65, 1, 1, 1, 0, %66;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "n"(TB)
        : "memory");
}

// wgmma m64n256k16, the same with N = 256
template <int TB>
__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t da, uint64_t db) {
    asm volatile(
        "{\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,"
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95,"
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111,"
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
        "}, "
        "%128, %129, 1, 1, 1, 0, %130;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(da), "l"(db), "n"(TB)
        : "memory");
}

// Pin the accumulator registers at this point of the instruction stream: the compiler may not move their
// definitions (zeroing) below, or their uses (epilogue) above, this statement. wgmma_fence / wgmma_wait do not name
// the registers, so without this the zeroing could sink past wgmma.fence or epilogue reads rise above wait_group.
template <int N>
__device__ __forceinline__ void fence_operands(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

template <int BN, int TB>
__device__ __forceinline__ void wgmma_tile(float (&d)[BN / 2], uint64_t da, uint64_t db) {
    if constexpr (BN == 128) wgmma_m64n128k16<TB>(d, da, db);
    else wgmma_m64n256k16<TB>(d, da, db);
}

// Grouped tile order: GROUP_M consecutive M-tiles sweep all N-tiles before moving on, so the CTAs running at
// the same time share A rows and B rows in L2.
__device__ __forceinline__ void tile_coords(int t, int tiles_m, int tiles_n, int &tm, int &tn) {
    const int per_group = GROUP_M * tiles_n;
    const int g = t / per_group;
    const int first_m = g * GROUP_M;
    const int gs = min(tiles_m - first_m, GROUP_M);
    const int r = t - g * per_group;
    tm = first_m + r % gs;
    tn = r / gs;
}

// Epilogue store of 2 adjacent columns (col, col+1) of one row.
__device__ __forceinline__ void store2(float *__restrict__ C, long ldc, int M, int N, int row, int col, float v0, float v1) {
    if (row >= M || col >= N) return;
    float *p = C + (long)row * ldc + col;
    if (col + 1 < N && ((reinterpret_cast<uintptr_t>(p) & 7) == 0)) *reinterpret_cast<float2 *>(p) = make_float2(v0, v1);
    else {
        p[0] = v0;
        if (col + 1 < N) p[1] = v1;
    }
}
__device__ __forceinline__ void store2_bf16(__nv_bfloat16 *__restrict__ C, long ldc, int M, int N, int row, int col, float v0, float v1) {
    if (row >= M || col >= N) return;
    __nv_bfloat16 *p = C + (long)row * ldc + col;
    if (col + 1 < N && ((reinterpret_cast<uintptr_t>(p) & 3) == 0)) *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(v0, v1);
    else {
        p[0] = __float2bfloat16(v0);
        if (col + 1 < N) p[1] = __float2bfloat16(v1);
    }
}
// and the load of the old values when accumulating (0 outside C)
__device__ __forceinline__ void load2(float *o, const float *__restrict__ C, long ldc, int M, int N, int row, int col) {
    o[0] = o[1] = 0.0f;
    if (row >= M || col >= N) return;
    const float *p = C + (long)row * ldc + col;
    if (col + 1 < N && ((reinterpret_cast<uintptr_t>(p) & 7) == 0)) { float2 v = *reinterpret_cast<const float2 *>(p); o[0] = v.x; o[1] = v.y; }
    else {
        o[0] = p[0];
        if (col + 1 < N) o[1] = p[1];
    }
}

// Epilogue through shared memory (SB bytes per warpgroup): the warpgroup's 64 rows x BN columns of d, a slab
// of SB / (64 ESZ) columns at a time, written as 8 KB boxes of 64 rows x 128 B (32 fp32 or 64 bf16 columns),
// 128-byte swizzled (16-byte chunk c of row r at chunk c ^ (r % 8): the 8 rows of a warp's store hit
// different banks), then one thread hands the boxes to the copy engine: C = d (store, ESZ 4 or 2) or
// C += d (reduce-add in L2, fp32). The slab's buffer is written again only after the engine has read it.
template <int BN, int SB, int ESZ>
__device__ __forceinline__ void store_tile_tma(const float (&d)[BN / 2], uint32_t sC, const CUtensorMap *tmC, int row, int col, int add) {
    constexpr int RW = SB / (64 * ESZ);     // columns per slab
    constexpr int BOXC = 128 / ESZ;         // columns per box
    static_assert(BN % RW == 0 && RW % BOXC == 0, "slabs of whole boxes");
    const int wt = threadIdx.x % 128, lane = wt % 32, r = (wt / 32) * 16 + lane / 4, bar = threadIdx.x / 128; // named barrier 1 or 2
#pragma unroll
    for (int c0 = 0; c0 < BN; c0 += RW) {
        if (wt == 0) bulk_wait_read();
        named_sync(bar, 128);
#pragma unroll
        for (int j = c0 / 8; j < (c0 + RW) / 8; ++j) { // d[4j..4j+1]: row r, columns 8j + 2 (lane % 4) + {0,1}; d[4j+2..3]: row r + 8
            const int cc = 8 * j - c0 + 2 * (lane % 4), cb = (cc % BOXC) * ESZ;
            const uint32_t p = sC + (cc / BOXC) * 8192 + r * 128 + ((((cb >> 4) ^ (r & 7)) << 4) | (cb & 15));
            if (ESZ == 4) {
                st_shared_f2(p, d[4 * j], d[4 * j + 1]);
                st_shared_f2(p + 1024, d[4 * j + 2], d[4 * j + 3]);
            } else {
                __nv_bfloat162 h0 = __floats2bfloat162_rn(d[4 * j], d[4 * j + 1]), h1 = __floats2bfloat162_rn(d[4 * j + 2], d[4 * j + 3]);
                st_shared_u32(p, *reinterpret_cast<uint32_t *>(&h0));
                st_shared_u32(p + 1024, *reinterpret_cast<uint32_t *>(&h1));
            }
        }
        fence_async_smem();
        named_sync(bar, 128);
        if (wt == 0) {
#pragma unroll
            for (int b = 0; b < RW / BOXC; ++b) {
                if (add) tma_add_2d(tmC, sC + b * 8192, col + c0 + b * BOXC, row);
                else tma_store_2d(tmC, sC + b * 8192, col + c0 + b * BOXC, row);
            }
            bulk_commit();
        }
    }
}

#endif

// TB: B is MN-major (stored K x N, N contiguous: W itself in dinp = dout W), loaded as BN/64 boxes of 64 columns
// SB > 0: the epilogue through shared memory and tmC (C's tensor map: fp32, or bf16 when accumulate == 2).
// k2 = 1: one more step over K from tmA2, tmB2 (LoRA's rank-r product added in the same accumulators: A2
// (M, r <= 64), B2 laid out as B)
template <int BN, int STAGES, int TB, int SB>
__global__ void __launch_bounds__(NTHREADS, 1)
gemm_wgmma_kernel(const __grid_constant__ CUtensorMap tmA, const __grid_constant__ CUtensorMap tmB, const __grid_constant__ CUtensorMap tmC,
                  const __grid_constant__ CUtensorMap tmA2, const __grid_constant__ CUtensorMap tmB2,
                  float *__restrict__ C, long ldc, int M, int N, int K, int accumulate, int k2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using cfg = Cfg<BN, STAGES, SB>;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    // Align the tile area to 1024 bytes (128B-swizzle atom = 8 rows x 128 B; descriptor base offset stays 0).
    const uint32_t raw = smem_u32(smem_raw);
    const uint32_t base = (raw + 1023u) & ~1023u;
    const uint32_t sA0 = base;                                  // STAGES x [128 rows x 128 B]
    const uint32_t sB0 = base + STAGES * cfg::A_BYTES;          // STAGES x [BN rows x 128 B]
    const uint32_t sC0 = base + STAGES * cfg::STAGE_BYTES;      // 2 x SB: the consumers' staging buffers
    const uint32_t bar0 = sC0 + 2 * SB;                         // full[STAGES], then empty[STAGES]
#define FULL_BAR(s) (bar0 + 8u * (uint32_t)(s))
#define EMPTY_BAR(s) (bar0 + 8u * (uint32_t)(STAGES + (s)))

    const int tiles_m = (M + BM - 1) / BM;
    const int tiles_n = (N + BN - 1) / BN;
    const int num_tiles = tiles_m * tiles_n;
    const int k_tiles = (K + BK - 1) / BK + k2; // the last one from tmA2, tmB2 when k2

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(FULL_BAR(s), 1);       // producer's arrive.expect_tx + TMA bytes
            mbar_init(EMPTY_BAR(s), 8);      // lane 0 of each of the 8 consumer warps
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    __syncthreads();

    const int wg = threadIdx.x / 128;
    if (wg == 0) {
        // ---------------- producer warpgroup ----------------
        setmaxnreg_dec<PRODUCER_REGS>();
        if (threadIdx.x == 0) {
            prefetch_tmap(&tmA);
            prefetch_tmap(&tmB);
            if (k2) { prefetch_tmap(&tmA2); prefetch_tmap(&tmB2); }
            int stage = 0;
            uint32_t phase = 0;
            for (int t = blockIdx.x; t < num_tiles; t += gridDim.x) {
                int tm, tn;
                tile_coords(t, tiles_m, tiles_n, tm, tn);
                for (int kt = 0; kt < k_tiles; ++kt) {
                    // First pass over the ring: waiting on parity 1 of a fresh barrier returns at once.
                    mbar_wait(EMPTY_BAR(stage), phase ^ 1u);
                    mbar_arrive_expect_tx(FULL_BAR(stage), (uint32_t)cfg::STAGE_BYTES);
                    // Full box bytes are always delivered (out-of-bounds parts are zero-filled and counted).
                    const int last = k2 && kt == k_tiles - 1, k0 = last ? 0 : kt * BK;
                    const CUtensorMap *ma = last ? &tmA2 : &tmA, *mb = last ? &tmB2 : &tmB;
                    tma_load_2d(sA0 + stage * cfg::A_BYTES, ma, k0, tm * BM, FULL_BAR(stage));
                    if (TB)
                        for (int i = 0; i < BN / 64; ++i) tma_load_2d(sB0 + stage * cfg::B_BYTES + i * 64 * BK * 2, mb, tn * BN + 64 * i, k0, FULL_BAR(stage));
                    else tma_load_2d(sB0 + stage * cfg::B_BYTES, mb, k0, tn * BN, FULL_BAR(stage));
                    if (++stage == STAGES) { stage = 0; phase ^= 1u; }
                }
            }
        }
    } else {
        // ---------------- consumer warpgroups ----------------
        setmaxnreg_inc<CONSUMER_REGS>();
        const int cw = wg - 1;                    // 0: tile rows 0-63, 1: rows 64-127
        const int warp = (threadIdx.x % 128) / 32;
        const int lane = threadIdx.x % 32;
        int stage = 0;
        uint32_t phase = 0;
        float d[BN / 2];
        for (int t = blockIdx.x; t < num_tiles; t += gridDim.x) {
            int tm, tn;
            tile_coords(t, tiles_m, tiles_n, tm, tn);
#pragma unroll
            for (int i = 0; i < BN / 2; ++i) d[i] = 0.f;
            fence_operands(d);
            int prev_stage = 0;
            for (int kt = 0; kt < k_tiles; ++kt) {
                mbar_wait(FULL_BAR(stage), phase);
                const uint64_t da = make_desc_sw128(sA0 + stage * cfg::A_BYTES + cw * 64 * 128);
                const uint64_t db = TB ? make_desc_mn_sw128(sB0 + stage * cfg::B_BYTES) : make_desc_sw128(sB0 + stage * cfg::B_BYTES);
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < BK / 16; ++kk) wgmma_tile<BN, TB>(d, da + 2 * kk, db + (TB ? 128 : 2) * kk);  // +32 B (K-major) or +2048 B (MN-major) per k16
                wgmma_commit();
                fence_operands(d);
                // Keep one wgmma group in flight: this returns when the group of the previous stage is done,
                // so that stage's smem may be overwritten.
                wgmma_wait<1>();
                if (kt > 0 && lane == 0) mbar_arrive(EMPTY_BAR(prev_stage));
                prev_stage = stage;
                if (++stage == STAGES) { stage = 0; phase ^= 1u; }
            }
            wgmma_wait<0>();
            fence_operands(d);
            if (k_tiles > 0 && lane == 0) mbar_arrive(EMPTY_BAR(prev_stage));

            // Epilogue: accumulator fragment of m64nBNk16 -- warp w owns rows 16w..16w+15 of the warpgroup's 64;
            // d[4j+0..1] -> row lane/4,     cols 8j + 2*(lane%4) + {0,1}
            // d[4j+2..3] -> row lane/4 + 8, same cols
            if constexpr (SB > 0) {
                if (accumulate == 2) store_tile_tma<BN, SB, 2>(d, sC0 + cw * SB, &tmC, tm * BM + cw * 64, tn * BN, 0);
                else store_tile_tma<BN, SB, 4>(d, sC0 + cw * SB, &tmC, tm * BM + cw * 64, tn * BN, accumulate);
                continue;
            }
            const int row0 = tm * BM + cw * 64 + warp * 16 + lane / 4;
            const int col0 = tn * BN + 2 * (lane % 4);
            if (accumulate == 2) { // C holds bf16 (activations kept in bf16)
                __nv_bfloat16 *C16 = reinterpret_cast<__nv_bfloat16 *>(C);
#pragma unroll
                for (int j = 0; j < BN / 8; ++j) {
                    store2_bf16(C16, ldc, M, N, row0, col0 + 8 * j, d[4 * j + 0], d[4 * j + 1]);
                    store2_bf16(C16, ldc, M, N, row0 + 8, col0 + 8 * j, d[4 * j + 2], d[4 * j + 3]);
                }
            } else if (!accumulate) {
#pragma unroll
                for (int j = 0; j < BN / 8; ++j) {
                    store2(C, ldc, M, N, row0, col0 + 8 * j, d[4 * j + 0], d[4 * j + 1]);
                    store2(C, ldc, M, N, row0 + 8, col0 + 8 * j, d[4 * j + 2], d[4 * j + 3]);
                }
            } else { // C += d: 8 column groups' old values loaded first, then added and stored (a store may
                     // alias a later load for all the compiler knows: one at a time, each would wait for DRAM)
#pragma unroll
                for (int j0 = 0; j0 < BN / 8; j0 += 8) {
                    float o[32];
#pragma unroll
                    for (int j = 0; j < 8; ++j) {
                        load2(o + 4 * j, C, ldc, M, N, row0, col0 + 8 * (j0 + j));
                        load2(o + 4 * j + 2, C, ldc, M, N, row0 + 8, col0 + 8 * (j0 + j));
                    }
#pragma unroll
                    for (int j = 0; j < 8; ++j) {
                        const float *e = d + 4 * (j0 + j);
                        store2(C, ldc, M, N, row0, col0 + 8 * (j0 + j), e[0] + o[4 * j], e[1] + o[4 * j + 1]);
                        store2(C, ldc, M, N, row0 + 8, col0 + 8 * (j0 + j), e[2] + o[4 * j + 2], e[3] + o[4 * j + 3]);
                    }
                }
            }
        }
        if constexpr (SB > 0) if (threadIdx.x % 128 == 0) bulk_wait(); // the last slabs written before the block ends
    }
#undef FULL_BAR
#undef EMPTY_BAR
#endif
}

// ------------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------------
static PFN_cuTensorMapEncodeTiled_v12000 get_encode_fn() {
    static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
    if (!fn) {
        void *p = nullptr;
        cudaDriverEntryPointQueryResult q;
        // cudaGetDriverEntryPoint (no version) is deprecated in CUDA 13 (-Wdeprecated warning); the ByVersion
        // form asks for the ABI of cuTensorMapEncodeTiled as introduced in CUDA 12.0.
        cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
        if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !p) { cudaGetLastError(); return nullptr; } // gpu_init falls back
        fn = (PFN_cuTensorMapEncodeTiled_v12000)p;
    }
    return fn;
}

// rows x K bf16 matrix, row stride ld elements; box = BK (K) x box_rows, 128B swizzle, OOB -> zero.
static cudaError_t make_tmap(CUtensorMap *map, const __nv_bfloat16 *ptr, long ld, int rows, int K, int box_rows) {
    PFN_cuTensorMapEncodeTiled_v12000 enc = get_encode_fn();
    if (!enc) return cudaErrorNotSupported;
    cuuint64_t gdim[2] = {(cuuint64_t)K, (cuuint64_t)rows};
    cuuint64_t gstride[1] = {(cuuint64_t)ld * sizeof(__nv_bfloat16)};
    cuuint32_t box[2] = {(cuuint32_t)BK, (cuuint32_t)box_rows};
    cuuint32_t estride[2] = {1, 1};
    CUresult r = enc(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)ptr, gdim, gstride, box, estride,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "peft: gemm_wgmma: cuTensorMapEncodeTiled failed (CUresult %d) rows=%d K=%d ld=%ld box_rows=%d ptr=%p\n",
                (int)r, rows, K, ld, box_rows, (const void *)ptr);
        return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}


// C's map for the epilogue's TMA stores: M x N of fp32 (esz 4) or bf16 (esz 2), rows of ldc, boxes of
// 64 rows x 128 bytes, 128B swizzle (the layout store_tile_tma writes). Needs c 16-byte aligned, ldc esz a
// multiple of 16.
static cudaError_t make_tmap_c(CUtensorMap *map, void *c, long ldc, int M, int N, int esz) {
    PFN_cuTensorMapEncodeTiled_v12000 enc = get_encode_fn();
    if (!enc) return cudaErrorNotSupported;
    cuuint64_t gdim[2] = {(cuuint64_t)N, (cuuint64_t)M};
    cuuint64_t gstride[1] = {(cuuint64_t)ldc * esz};
    cuuint32_t box[2] = {(cuuint32_t)(128 / esz), 64};
    cuuint32_t estride[2] = {1, 1};
    CUresult r = enc(map, esz == 4 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, c, gdim, gstride, box, estride,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "peft: gemm_wgmma: cuTensorMapEncodeTiled failed for C (CUresult %d) M=%d N=%d ldc=%ld esz=%d ptr=%p\n", (int)r, M, N, ldc, esz, c);
        return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

// one instance of the kernel: its shared-memory limit raised on the first launch
template <int BN, int STAGES, int TB, int SB>
static cudaError_t launch_wgmma(int grid, cudaStream_t stream, const CUtensorMap &ta, const CUtensorMap &tb, const CUtensorMap &tc, const CUtensorMap &ta2,
                                const CUtensorMap &tb2, float *c, long ldc, int M, int N, int K, int accumulate, int k2) {
    static bool attr_set = false;
    if (!attr_set) {
        cudaError_t e = cudaFuncSetAttribute(gemm_wgmma_kernel<BN, STAGES, TB, SB>, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg<BN, STAGES, SB>::SMEM_BYTES);
        if (e != cudaSuccess) return e;
        attr_set = true;
    }
    gemm_wgmma_kernel<BN, STAGES, TB, SB><<<grid, NTHREADS, Cfg<BN, STAGES, SB>::SMEM_BYTES, stream>>>(ta, tb, tc, ta2, tb2, c, ldc, M, N, K, accumulate, k2);
    return cudaGetLastError();
}

// Returns cudaSuccess or the first error (argument check, tensor-map encode, attribute, launch).
// max_ctas > 0 caps the persistent grid (testing the multi-tile-per-CTA path); 0 = one CTA per SM.
// tb: b is B itself (K x N, rows of ldb), MN-major; else B^T (N x K). accumulate: 0 C = AB^T, 1 C += AB^T,
// 2 C = AB^T with C bf16. SB > 0: the epilogue through SB bytes of shared memory per consumer warpgroup
// and TMA stores, where C is 16-byte aligned with 16-byte rows (else straight stores). a2: C also gets
// A2 B2^T (or A2 B2 when tb), A2 (M, K2 <= 64) and B2 bf16 like A and B, in one more step over K
template <int BN, int STAGES, int SB = 0>
cudaError_t gemm_wgmma_t(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M, int N,
                         int K, int accumulate, cudaStream_t stream, int max_ctas = 0, int tb = 0,
                         const __nv_bfloat16 *a2 = nullptr, long lda2 = 0, const __nv_bfloat16 *b2 = nullptr, long ldb2 = 0, int K2 = 0) {
    if (M <= 0 || N <= 0) return cudaSuccess;
    const int k2 = a2 && K2 > 0;
    if (k2 && (K2 > BK || K <= 0 || lda2 % 8 || ldb2 % 8 || lda2 < K2 || ldb2 < (tb ? N : K2) || ((uintptr_t)a2 & 15) || ((uintptr_t)b2 & 15))) {
        fprintf(stderr, "peft: gemm_wgmma: bad second product (K=%d K2=%d lda2=%ld ldb2=%ld a2=%p b2=%p)\n", K, K2, lda2, ldb2, (const void *)a2, (const void *)b2);
        return cudaErrorInvalidValue;
    }
    if (K <= 0) {  // empty sum: C = 0 (or unchanged when accumulating)
        if (accumulate == 1) return cudaSuccess;
        size_t esz = accumulate == 2 ? 2 : sizeof(float);
        return cudaMemset2DAsync(c, (size_t)ldc * esz, 0, (size_t)N * esz, (size_t)M, stream);
    }
    if (lda % 8 || ldb % 8 || lda < K || ldb < (tb ? N : K) || ldc < N || ((uintptr_t)a & 15) || ((uintptr_t)b & 15) ||
        ((uintptr_t)c & 3)) {
        fprintf(stderr, "peft: gemm_wgmma: bad arguments (lda=%ld ldb=%ld ldc=%ld K=%d N=%d a=%p b=%p c=%p)\n", lda, ldb, ldc, K, N,
                (const void *)a, (const void *)b, (void *)c);
        return cudaErrorInvalidValue;
    }
    CUtensorMap ta, tmb, tmc, ta2, tmb2;
    cudaError_t e = make_tmap(&ta, a, lda, M, K, BM);
    if (e != cudaSuccess) return e;
    e = tb ? make_tmap(&tmb, b, ldb, K, N, BK) : make_tmap(&tmb, b, ldb, N, K, BN); // MN-major: boxes of 64 columns x BK rows
    if (e != cudaSuccess) return e;
    if (k2) {
        if ((e = make_tmap(&ta2, a2, lda2, M, K2, BM)) != cudaSuccess) return e;
        if ((e = tb ? make_tmap(&tmb2, b2, ldb2, K2, N, BK) : make_tmap(&tmb2, b2, ldb2, N, K2, BN)) != cudaSuccess) return e;
    } else {
        ta2 = ta;
        tmb2 = tmb;
    }
    const int esz = accumulate == 2 ? 2 : 4;
    const int staged = SB > 0 && ((uintptr_t)c & 15) == 0 && (ldc * esz) % 16 == 0;
    if (staged && (e = make_tmap_c(&tmc, c, ldc, M, N, esz)) != cudaSuccess) return e;
    if (!staged) memset(&tmc, 0, sizeof tmc);
    const long tiles = (long)((M + BM - 1) / BM) * ((N + BN - 1) / BN);
    int grid = ::num_sms; // read off the device by gpu_init
    if (max_ctas > 0 && max_ctas < grid) grid = max_ctas;
    if (tiles < grid) grid = (int)tiles;
    if (staged) return tb ? launch_wgmma<BN, STAGES, 1, SB>(grid, stream, ta, tmb, tmc, ta2, tmb2, c, ldc, M, N, K, accumulate, k2)
                          : launch_wgmma<BN, STAGES, 0, SB>(grid, stream, ta, tmb, tmc, ta2, tmb2, c, ldc, M, N, K, accumulate, k2);
    return tb ? launch_wgmma<BN, STAGES, 1, 0>(grid, stream, ta, tmb, tmc, ta2, tmb2, c, ldc, M, N, K, accumulate, k2)
              : launch_wgmma<BN, STAGES, 0, 0>(grid, stream, ta, tmb, tmc, ta2, tmb2, c, ldc, M, N, K, accumulate, k2);
}
}  // namespace wgk

// c (M,N) (+)= the sum of the S partial products at partial (S, M, N), added in order s = 0..S-1
__global__ void splitk_reduce_kernel(float *c, long ldc, const float *partial, int S, int M, int N, int accumulate) {
    FOR_EACH(e, (size_t)M * N) {
        int i = (int)(e / N), j = (int)(e % N);
        float s = 0;
        for (int z = 0; z < S; z++) s += partial[(size_t)z * M * N + e];
        c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + s;
    }
}
static void *splitk_scratch;
static size_t splitk_cap;

// LoRA's narrow products, in fp32 on the CUDA cores (they move bytes, not FLOPs):
// K <= 16 (t = u B^T, dx += du A: a rank-r update of a wide C): a thread per element of C, r FMAs
__global__ void gemm_small_k_kernel(float *c, long ldc, const float *a, long rsa, long csa, const float *b, long rsb, long csb, int M, int N, int K, int accumulate) {
    FOR_EACH(e, (size_t)M * N) {
        int i = (int)(e / N), j = (int)(e % N);
        float s = 0;
        for (int k = 0; k < K; k++) s += a[i * rsa + k * csa] * b[k * rsb + j * csb];
        c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + s;
    }
}
// 4 values of C (float, or bf16 activations) at p, and back (vec: one 16- or 8-byte access)
__device__ __forceinline__ void ld4(float *v, const float *p, int vec) {
    if (vec) { float4 t = *(const float4 *)p; v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w; } else for (int q = 0; q < 4; q++) v[q] = p[q];
}
__device__ __forceinline__ void ld4(float *v, const __nv_bfloat16 *p, int vec) {
    if (vec) { uint2 u = *(const uint2 *)p; __nv_bfloat162 h0 = *(__nv_bfloat162 *)&u.x, h1 = *(__nv_bfloat162 *)&u.y; v[0] = __low2float(h0); v[1] = __high2float(h0); v[2] = __low2float(h1); v[3] = __high2float(h1); }
    else for (int q = 0; q < 4; q++) v[q] = __bfloat162float(p[q]);
}
__device__ __forceinline__ void st4(float *p, const float *v, int vec) {
    if (vec) *(float4 *)p = make_float4(v[0], v[1], v[2], v[3]); else for (int q = 0; q < 4; q++) p[q] = v[q];
}
__device__ __forceinline__ void st4(__nv_bfloat16 *p, const float *v, int vec) {
    if (vec) { __nv_bfloat162 h[2] = { __floats2bfloat162_rn(v[0], v[1]), __floats2bfloat162_rn(v[2], v[3]) }; *(uint2 *)p = *(uint2 *)h; }
    else for (int q = 0; q < 4; q++) p[q] = __float2bfloat16(v[q]);
}
// N <= 16 with A's rows contiguous (u = x A^T, du = dy B): a warp per RW rows of C. K goes in chunks of 128,
// software-pipelined: while a chunk is multiplied, each lane's 4 consecutive k of its RW rows (16 bytes a
// row) and its share of B's next chunk are already on their way into registers; B's chunk goes through
// shared memory as Bs[j][k] (read back 16 bytes a lane, no bank conflicts). RW x N partial sums per lane,
// added across the warp at the end. Split over K when the rows alone give too few warps to keep enough loads
// in flight: block row z = blockIdx.y takes k in [z kchunk, (z+1) kchunk) and writes its partial sums to
// c + z zstride (summed after, in order, by splitk_reduce_strided_kernel).
#define SMALL_N 16
#define SN_KC 128
template <int NN, int RW, typename AT> // A: floats, or bf16 activations (x)
__global__ void __launch_bounds__(256) gemm_small_n_kernel(float *__restrict__ c, long ldc, const AT *__restrict__ a, long rsa, const float *__restrict__ b, long rsb, long csb,
                                                           int M, int N, int K, int accumulate, int vec, int kchunk, long zstride) {
    __shared__ __align__(16) float Bs[NN][SN_KC];
    { int k0 = blockIdx.y * kchunk; a += k0; b += (long)k0 * rsb; c += blockIdx.y * zstride; K = min(K - k0, kchunk); }
    constexpr int BE = NN * SN_KC / 256; // B's values per thread per chunk
    int i0 = (blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * RW, lane = threadIdx.x % 32;
    float s[RW][NN], x[RW][4], bn[BE];
    #pragma unroll
    for (int r = 0; r < RW; r++)
        #pragma unroll
        for (int j = 0; j < NN; j++) s[r][j] = 0;
    auto load = [&](int k0) { // chunk k0's x (this lane's) and B (this thread's share) into registers
        int k = k0 + 4 * lane;
        #pragma unroll
        for (int r = 0; r < RW; r++) {
            const AT *ar = a + (long)(i0 + r) * rsa + k;
            if (vec && i0 + r < M && k + 3 < K) ld4(x[r], ar, 1);
            else
                #pragma unroll
                for (int q = 0; q < 4; q++) x[r][q] = i0 + r < M && k + q < K ? to_f(ar[q]) : 0.0f;
        }
        #pragma unroll
        for (int q = 0; q < BE; q++) {
            int e = threadIdx.x + 256 * q, j = e / SN_KC, kk = e % SN_KC;
            bn[q] = j < N && k0 + kk < K ? __ldg(b + (long)(k0 + kk) * rsb + (long)j * csb) : 0.0f;
        }
    };
    load(0);
    for (int k0 = 0; k0 < K; k0 += SN_KC) {
        __syncthreads(); // the previous chunk's Bs is read
        #pragma unroll
        for (int q = 0; q < BE; q++) { int e = threadIdx.x + 256 * q; Bs[e / SN_KC][e % SN_KC] = bn[q]; }
        float xc[RW][4];
        #pragma unroll
        for (int r = 0; r < RW; r++)
            #pragma unroll
            for (int q = 0; q < 4; q++) xc[r][q] = x[r][q];
        if (k0 + SN_KC < K) load(k0 + SN_KC);
        __syncthreads();
        #pragma unroll
        for (int j = 0; j < NN; j++) {
            float4 bv = *(const float4 *)&Bs[j][4 * lane];
            #pragma unroll
            for (int r = 0; r < RW; r++) s[r][j] = fmaf(xc[r][3], bv.w, fmaf(xc[r][2], bv.z, fmaf(xc[r][1], bv.y, fmaf(xc[r][0], bv.x, s[r][j]))));
        }
    }
    #pragma unroll
    for (int r = 0; r < RW; r++)
        #pragma unroll
        for (int j = 0; j < NN; j++) {
            float v = warp_sum(s[r][j]);
            int i = i0 + r;
            if (j < N && i < M && lane == j) c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + v;
        }
}
// K <= 16 and M large (LoRA's t = u B^T, dx += du A): C (M,N) (+)= scale A B. A thread owns 4 consecutive columns
// of C and keeps their 4 x K values of B in registers; a block takes a run of rows, each row's K values of A
// read by all its threads at once (one broadcast load), C read and written 16 bytes at a time when it allows
#define NARROW_K 16
template <int KK, typename CT>
__global__ void __launch_bounds__(256) gemm_narrow_k_kernel(CT *__restrict__ c, long ldc, const float *__restrict__ a, long rsa, long csa, const float *__restrict__ b, long rsb, long csb,
                                                           int M, int N, int K, int accumulate, int rows, int vec, float scale) {
    extern __shared__ float As[]; // the block's rows of A, [rows][KK]: one load for all, then broadcast reads
    int j = 4 * (blockIdx.x * blockDim.x + threadIdx.x), i0 = blockIdx.y * rows, i1 = min(M, i0 + rows);
    for (int e = threadIdx.x; e < rows * KK; e += blockDim.x) {
        int i = i0 + e / KK, k = e % KK;
        As[e] = i < M && k < K ? a[(long)i * rsa + (long)k * csa] : 0.0f;
    }
    __syncthreads();
    if (j >= N) return;
    float bv[KK][4];
    #pragma unroll
    for (int k = 0; k < KK; k++)
        #pragma unroll
        for (int q = 0; q < 4; q++) bv[k][q] = k < K && j + q < N ? b[(long)k * rsb + (long)(j + q) * csb] : 0.0f;
    #pragma unroll 4
    for (int i = i0; i < i1; i++) {
        float o[4] = { 0, 0, 0, 0 };
        const float *ar = As + (i - i0) * KK;
        #pragma unroll
        for (int k = 0; k < KK; k++)
            #pragma unroll
            for (int q = 0; q < 4; q++) o[q] = fmaf(ar[k], bv[k][q], o[q]); // zeros past K
        CT *cr = c + (long)i * ldc + j;
        if (vec || j + 3 < N) {
            float v[4] = { 0, 0, 0, 0 };
            if (accumulate) ld4(v, cr, vec);
            for (int q = 0; q < 4; q++) v[q] += scale * o[q];
            st4(cr, v, vec);
        } else
            for (int q = 0; q < 4 && j + q < N; q++) cr[q] = (float)(accumulate ? (float)cr[q] : 0.0f) + scale * o[q];
    }
}
// M <= 16 with B's rows contiguous (dA = du^T x: r x in, summed over all tokens; and dB = dy^T u as its
// transpose): a thread per column j of C reads B's row k coalesced and keeps M running sums; A's
// values for a run of k sit in shared memory. K is split over blockIdx.y in chunks of kchunk, each
// chunk's C written apart (c + blockIdx.y * zstride) and summed in order after. C(i,j) = c[i*rsc + j*csc].
#define SMALL_M 16
// A few rows of A (generation: M <= GEMV_M) against B^T's rows (a weight W, rows contiguous in K):
// C (M,N) (+)= A W^T. A block of 8 warps takes 8/S rows j of W, S warps a row (S = 1..8: more warps for
// small N), their S*32 lanes r taking 8 consecutive k at a time, k = 8 r + 256 S u: W streamed past L1
// in 16-byte loads (8 values of its bf16 copy w16, or two float4), GEMV_U of them in flight a lane before
// the first is used; A's rows read through L1 (in bf16 mode rounded to bf16, as every bf16 product's).
// K's last K % 8 (or all of it when rows are not 16-byte aligned: vec 0) one value at a time. Each warp's
// sums are reduced with shuffles, the S warps of a row through shared memory in order.
#define GEMV_M 8
#define GEMV_U 4
__device__ __forceinline__ float bf16r(float x) { return __bfloat162float(__float2bfloat16(x)); } // x rounded to bf16
// 8 weights at p (16-byte aligned), loaded past L1 (load) and widened to floats later (get), so that
// several loads are in flight before the first value is needed
template <typename WT> struct W8;
template <> struct W8<__nv_bfloat16> {
    uint4 u;
    __device__ __forceinline__ void load(const __nv_bfloat16 *p) { u = __ldcs((const uint4 *)p); }
    __device__ __forceinline__ void get(float *t) const { widen8(t, u); }
};
template <> struct W8<float> {
    float4 a, b;
    __device__ __forceinline__ void load(const float *p) { a = __ldcs((const float4 *)p); b = __ldcs((const float4 *)p + 1); }
    __device__ __forceinline__ void get(float *t) const { t[0] = a.x; t[1] = a.y; t[2] = a.z; t[3] = a.w; t[4] = b.x; t[5] = b.y; t[6] = b.z; t[7] = b.w; }
};
// 8 floats at p (16-byte aligned) through the read-only cache
__device__ __forceinline__ void ldg8(float *t, const float *p) {
    float4 a = __ldg((const float4 *)p), b = __ldg((const float4 *)p + 1);
    t[0] = a.x; t[1] = a.y; t[2] = a.z; t[3] = a.w; t[4] = b.x; t[5] = b.y; t[6] = b.z; t[7] = b.w;
}
__device__ __forceinline__ float dot8(const float *x, const float *y) {
    return ((x[0] * y[0] + x[1] * y[1]) + (x[2] * y[2] + x[3] * y[3])) + ((x[4] * y[4] + x[5] * y[5]) + (x[6] * y[6] + x[7] * y[7]));
}
template <int M, typename WT>
__global__ void __launch_bounds__(256) gemv_kernel(float *c, long ldc, const float *a, long rsa, const WT *w, long ldw, int N, int K, int S, int accumulate, int vec) {
    constexpr bool b16 = std::is_same<WT, __nv_bfloat16>::value;
    __shared__ float part[8][M];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, j = blockIdx.x * (8 / S) + warp / S, r = (warp % S) * 32 + lane, step = 256 * S;
    float acc[M];
    #pragma unroll
    for (int m = 0; m < M; m++) acc[m] = 0;
    if (j < N) {
        const WT *wr = w + (long)j * ldw;
        int K8 = vec ? K / 8 * 8 : 0; // [0, K8) by 16-byte loads
        for (int k0 = 8 * r; k0 < K8; k0 += GEMV_U * step) {
            W8<WT> v[GEMV_U];
            #pragma unroll
            for (int u = 0; u < GEMV_U; u++) if (k0 + u * step < K8) v[u].load(wr + k0 + u * step);
            #pragma unroll
            for (int u = 0; u < GEMV_U; u++) {
                int k = k0 + u * step;
                if (k < K8) {
                    float t[8], x[8];
                    v[u].get(t);
                    #pragma unroll
                    for (int m = 0; m < M; m++) {
                        ldg8(x, a + (long)m * rsa + k);
                        if (b16) for (int e = 0; e < 8; e++) x[e] = bf16r(x[e]);
                        acc[m] += dot8(x, t);
                    }
                }
            }
        }
        for (int k = K8 + r; k < K; k += 32 * S) {
            float v = to_f(wr[k]);
            #pragma unroll
            for (int m = 0; m < M; m++) acc[m] += (b16 ? bf16r(a[(long)m * rsa + k]) : a[(long)m * rsa + k]) * v;
        }
    }
    #pragma unroll
    for (int m = 0; m < M; m++) {
        float v = warp_sum(acc[m]);
        if (lane == 0) part[warp][m] = v;
    }
    __syncthreads();
    if (j < N && warp % S == 0 && lane < M) {
        float v = 0;
        for (int s = 0; s < S; s++) v += part[warp + s][lane];
        c[(long)lane * ldc + j] = (accumulate ? c[(long)lane * ldc + j] : 0.0f) + v;
    }
}
// M from 1 to 8 as a template argument F(M) (the rows' sums in registers)
#define SWITCH_1_8(n, F) switch (n) { case 1: F(1); break; case 2: F(2); break; case 3: F(3); break; case 4: F(4); break; \
                                      case 5: F(5); break; case 6: F(6); break; case 7: F(7); break; default: F(8); }
// S warps a row: the fewest (1, 2, 4, 8) that make 2 blocks an SM, each warp still a full pass over K or more
static int warps_per_row(int N, int K, int per_pass) {
    int S = 1;
    while (S < 8 && (long)N * S < 16L * num_sms && (long)per_pass * 2 * S <= K) S *= 2;
    return S;
}
template <typename WT> static void gemv_launch(float *c, long ldc, const float *a, long rsa, const WT *w, long ldw, int M, int N, int K, int accumulate, int vec) {
    int S = warps_per_row(N, K, 256);
#define GEMV(m) gemv_kernel<m, WT><<<(unsigned)((N + 8 / S - 1) / (8 / S)), 256>>>(c, ldc, a, rsa, w, ldw, N, K, S, accumulate, vec)
    SWITCH_1_8(M, GEMV);
#undef GEMV
    LAUNCHED("gemv_kernel");
}
#define SM_KT 64
// a thread owns 4 consecutive columns j (16-byte loads of B's rows when vec) and keeps M x 4 running sums
template <int MM, typename BE> // B: floats, or bf16 activations (x in dA = du^T x)
__global__ void __launch_bounds__(256) gemm_small_m_kernel(float *__restrict__ c, long rsc, long csc, const float *__restrict__ a, long rsa, long csa, const BE *__restrict__ b, long rsb,
                                                           int M, int N, int K, int accumulate, int kchunk, long zstride, int vec) {
    __shared__ __align__(16) float As[SM_KT][MM];
    int k0 = blockIdx.y * kchunk, k1 = min(K, k0 + kchunk), j = 4 * (blockIdx.x * blockDim.x + threadIdx.x);
    c += blockIdx.y * zstride;
    float s[MM][4];
    #pragma unroll
    for (int i = 0; i < MM; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0;
    for (int kt = k0; kt < k1; kt += SM_KT) {
        int kn = min(SM_KT, k1 - kt);
        __syncthreads();
        for (int e = threadIdx.x; e < SM_KT * MM; e += blockDim.x) {
            int kk = e / MM, i = e % MM;
            As[kk][i] = (kk < kn && i < M) ? a[i * rsa + (long)(kt + kk) * csa] : 0.0f;
        }
        __syncthreads();
        if (j < N) {
            #pragma unroll 8
            for (int kk = 0; kk < kn; kk++) { // 8 rows of B in flight
                const BE *br = b + (long)(kt + kk) * rsb + j;
                float bt[4];
                if (vec) ld4(bt, br, 1);
                else for (int q = 0; q < 4; q++) bt[q] = j + q < N ? to_f(br[q]) : 0.0f;
                float4 bv = make_float4(bt[0], bt[1], bt[2], bt[3]);
                #pragma unroll
                for (int i = 0; i < MM; i += 4) {
                    float4 av = *(const float4 *)&As[kk][i];
                    float ai[4] = { av.x, av.y, av.z, av.w };
                    #pragma unroll
                    for (int u = 0; u < 4; u++) {
                        s[i + u][0] = fmaf(ai[u], bv.x, s[i + u][0]); s[i + u][1] = fmaf(ai[u], bv.y, s[i + u][1]);
                        s[i + u][2] = fmaf(ai[u], bv.z, s[i + u][2]); s[i + u][3] = fmaf(ai[u], bv.w, s[i + u][3]);
                    }
                }
            }
        }
    }
    #pragma unroll
    for (int i = 0; i < MM; i++)
        #pragma unroll
        for (int q = 0; q < 4; q++)
            if (i < M && j + q < N) { float *p = c + i * rsc + (long)(j + q) * csc; *p = (accumulate ? *p : 0.0f) + s[i][q]; }
}
// c (M,N) at (rsc, csc) (+)= the S partial products at partial (S, M, N), added in order s = 0..S-1
__global__ void splitk_reduce_strided_kernel(float *c, long rsc, long csc, const float *partial, int S, int M, int N, int accumulate) {
    FOR_EACH(e, (size_t)M * N) {
        int i = (int)(e / N), j = (int)(e % N);
        float s = 0;
        for (int z = 0; z < S; z++) s += partial[(size_t)z * M * N + e];
        float *p = c + i * rsc + j * csc;
        *p = (accumulate ? *p : 0.0f) + s;
    }
}
template <typename BE>
static void gemm_small_m(float *c, long rsc, long csc, const float *a, long rsa, long csa, const BE *b, long rsb, int M, int N, int K, int accumulate) {
    int bx = (N + 1023) / 1024, S = 2 * num_sms / bx; // 256 threads of 4 columns
    if (S > K / 64) S = K / 64;
    if (S < 1) S = 1;
    int kchunk = (K + S - 1) / S;
    kchunk = (kchunk + SM_KT - 1) / SM_KT * SM_KT;
    S = (K + kchunk - 1) / kchunk;
    float *cc = c;
    long r = rsc, q = csc, zstride = 0;
    if (S > 1) { cc = (float *)scratch_reserve(&splitk_scratch, &splitk_cap, (size_t)S * M * N * sizeof(float)); r = N; q = 1; zstride = (long)M * N; }
    dim3 g(bx, S);
    int acc = S > 1 ? 0 : accumulate;
    int vec = ((uintptr_t)b & (4 * sizeof(BE) - 1)) == 0 && rsb % 4 == 0 && N % 4 == 0;
    if (M <= 4) gemm_small_m_kernel<4, BE><<<g, 256>>>(cc, r, q, a, rsa, csa, b, rsb, M, N, K, acc, kchunk, zstride, vec);
    else if (M <= 8) gemm_small_m_kernel<8, BE><<<g, 256>>>(cc, r, q, a, rsa, csa, b, rsb, M, N, K, acc, kchunk, zstride, vec);
    else gemm_small_m_kernel<16, BE><<<g, 256>>>(cc, r, q, a, rsa, csa, b, rsb, M, N, K, acc, kchunk, zstride, vec);
    LAUNCHED("gemm_small_m_kernel");
    if (S > 1) { splitk_reduce_strided_kernel<<<blocks_for((size_t)M * N, 256), 256>>>(c, rsc, csc, cc, S, M, N, accumulate); LAUNCHED("splitk_reduce_kernel"); }
}

// C (M,N) (+)= scale A B with K <= NARROW_K, M and N >= 64: gemm_narrow_k_kernel, about 4 blocks per SM
// (CT: float, or bf16 activations)
template <typename CT>
static void narrow_k(CT *c, long ldc, const float *a, long rsa, long csa, const float *b, long rsb, long csb, int M, int N, int K, int accumulate, float scale) {
    int vec = ((uintptr_t)c & (4 * sizeof(CT) - 1)) == 0 && ldc % 4 == 0 && N % 4 == 0;
    int bx = (N + 1023) / 1024, rows = (int)(((long)M * bx + 4L * num_sms - 1) / (4L * num_sms));
    if (rows < 16) rows = 16;
    dim3 g(bx, (M + rows - 1) / rows);
    if (K <= 8) gemm_narrow_k_kernel<8, CT><<<g, 256, rows * 8 * sizeof(float)>>>(c, ldc, a, rsa, csa, b, rsb, csb, M, N, K, accumulate, rows, vec, scale);
    else gemm_narrow_k_kernel<16, CT><<<g, 256, rows * 16 * sizeof(float)>>>(c, ldc, a, rsa, csa, b, rsb, csb, M, N, K, accumulate, rows, vec, scale);
    LAUNCHED("gemm_narrow_k_kernel");
}
// C (M,N) between bf16 activations and fp32 scratch: o(i, j) = x(i, j) with rows of ldo and ldx
__global__ void widen_kernel(float *o, long ldo, const __nv_bfloat16 *x, long ldx, int M, int N) {
    FOR_EACH(e, (size_t)M * N) { size_t i = e / N, j = e % N; o[i * ldo + j] = __bfloat162float(x[i * ldx + j]); }
}
__global__ void round_rows_kernel(__nv_bfloat16 *o, long ldo, const float *x, long ldx, int M, int N) {
    FOR_EACH(e, (size_t)M * N) { size_t i = e / N, j = e % N; o[i * ldo + j] = __float2bfloat16(x[i * ldx + j]); }
}
static void *c16_scratch;
static size_t c16_cap;
// fp32 values of a bf16-only weight for the kernels that read floats (the GEMM's rarer paths, DoRA's norm):
// the n values from p, converted into scratch
__global__ void bf16_to_f32_kernel(float *out, const __nv_bfloat16 *p, size_t n) { FOR_EACH(i, n) out[i] = __bfloat162float(p[i]); }
static void *w32_scratch;
static size_t w32_cap;
// and of bf16 activations for the kernels that read floats: n values from p into scratch slot s (0, 1)
static void *a32_scratch[2];
static size_t a32_cap[2];
static const float *act_f32(int s, const float *p, size_t n) {
    float *f = (float *)scratch_reserve(&a32_scratch[s], &a32_cap[s], n * sizeof(float));
    wrote(f, n * sizeof(float));
    widen_kernel<<<blocks_for(n, 256), 256>>>(f, (long)n, act16(p), (long)n, 1, (int)n);
    LAUNCHED("widen_kernel");
    return f;
}
static const float *weight_f32(const Mirror *m, const float *p, size_t n) {
    float *f = (float *)scratch_reserve(&w32_scratch, &w32_cap, n * sizeof(float));
    wrote(f, n * sizeof(float));
    bf16_to_f32_kernel<<<blocks_for(n, 256), 256>>>(f, piece16(m, p), n);
    LAUNCHED("bf16_to_f32_kernel");
    return f;
}
// b16: B given as bf16, B^T (N, K) with rows of ldb16 (the quantized weights, dequantized): only for M, N >= BT in bf16
// a rank-r product added in the same GEMM (the Hopper path only): C += s A2 B2, A2 (M, K2 <= 64) with rows of
// rsa (K2 contiguous), B2(k, j) = b[k rsb + j csb]: LoRA's u B^T in the forward, du A in dinp
struct Extra { const float *a; long rsa; const float *b; long rsb, csb; int K; float s; };
__global__ void scale_round_kernel(__nv_bfloat16 *q, long ldq, const float *a, long rsa, float s, int M, int K) {
    FOR_EACH(e, (size_t)M * K) { size_t i = e / K, k = e % K; q[i * ldq + k] = __float2bfloat16(s * a[i * rsa + k]); }
}
// gemm() below takes the Hopper GEMM for C (M,N) (+)= A B (K) with rows-contiguous operands
static int wgmma_takes(int M, int N, int K) {
    return wgmma_gemm && large_gemm && bf16_matmuls && M >= BT && N >= BT && !(K <= NARROW_K && narrow_gemm);
}
static void gemm(float *c, long ldc, const float *a, long rsa, long csa, const float *b, long rsb, long csb, int M, int N, int K, int accumulate,
                 const __nv_bfloat16 *b16 = NULL, long ldb16 = 0, const Extra *x2 = NULL) {
    if (M <= 0 || N <= 0) return;
    copies_next_kernel();
    // the path: rank-r products (fp32: memory-bound, the tensor cores would not help), the bf16 tensor-core
    // GEMM, a few rows against a weight (generation), or the SIMT kernels below
    int narrow = K <= NARROW_K && narrow_gemm;
    int large = !narrow && bf16_matmuls && M >= BT && N >= BT && (csa == 1 || rsa == 1) && (csb == 1 || rsb == 1) && large_gemm;
    int gemv = !narrow && !large && M <= GEMV_M && csa == 1 && rsb == 1 && narrow_gemm;
    __nv_bfloat16 *c16 = act16(c); // C is bf16 activations: the Hopper GEMM stores them, the other paths go through fp32
    size_t cbytes = ((size_t)(M - 1) * ldc + N) * (c16 ? sizeof(__nv_bfloat16) : sizeof(float));
    if (accumulate && known_zero(c, cbytes)) accumulate = 0; // adding to zeros: no need to read them
    if (c16 && !(large && wgmma_gemm && !accumulate)) {
        float *cs = (float *)scratch_reserve(&c16_scratch, &c16_cap, (size_t)M * N * sizeof(float));
        if (accumulate) { widen_kernel<<<blocks_for((size_t)M * N, 256), 256>>>(cs, N, c16, ldc, M, N); LAUNCHED("widen_kernel"); }
        gemm(cs, N, a, rsa, csa, b, rsb, csb, M, N, K, accumulate, b16, ldb16, x2);
        wrote(c16, ((size_t)(M - 1) * ldc + N) * sizeof(__nv_bfloat16));
        round_rows_kernel<<<blocks_for((size_t)M * N, 256), 256>>>(c16, ldc, cs, N, M, N);
        LAUNCHED("round_rows_kernel");
        return;
    }
    wrote(c, cbytes);
    if (x2 && !(large && wgmma_gemm && K > 0)) { fprintf(stderr, "peft: internal error: a rank-r product off the Hopper GEMM\n"); exit(1); }
    if (K <= 0) { // C = 0 (or unchanged)
        if (!accumulate) for (int i = 0; i < M; i++) CK(cudaMemset(c + i * ldc, 0, (size_t)N * sizeof(float)));
        return;
    }
    prof_flops = 2.0 * M * N * K;
    const Mirror *bm = bf16_piece(b); // a bf16-only weight: the bf16 GEMMs and the GEMV read it as it is, the others get floats
    if (bm && !large && !gemv) b = weight_f32(bm, b, (size_t)(K - 1) * rsb + (size_t)(N - 1) * csb + 1);
    if (narrow && (act16(a) || act16(b))) { // bf16 activations as rank-r operands: floats first
        if (act16(a)) a = act_f32(0, a, (size_t)(M - 1) * rsa + (size_t)(K - 1) * csa + 1);
        if (act16(b)) b = act_f32(1, b, (size_t)(K - 1) * rsb + (size_t)(N - 1) * csb + 1);
    }
    if (narrow) {
        if (M < 64 || N < 64) { // tiny: a thread per element
            gemm_small_k_kernel<<<blocks_for((size_t)M * N, 256), 256>>>(c, ldc, a, rsa, csa, b, rsb, csb, M, N, K, accumulate);
            LAUNCHED("gemm_small_k_kernel");
            return;
        }
        narrow_k(c, ldc, a, rsa, csa, b, rsb, csb, M, N, K, accumulate, 1.0f);
        return;
    }
    if (large && wgmma_gemm) {
        // A with K contiguous (A (M,K)); B with K contiguous (B^T (N,K)), or with N contiguous read as it is
        // (MN-major: B (K,N), the weight W of dinp = dout W, no transposed copy)
        long lda, ldb;
        int tb = !b16 && csb == 1 && rsb != 1 && wgmma_tb;
        const __nv_bfloat16 *a16 = operand_copy(0, a, csa == 1 ? rsa : csa, M, K, csa != 1, &lda);
        const __nv_bfloat16 *bb = b16 ? b16 : tb ? operand_copy(1, b, rsb, K, N, 0, &ldb) : operand_copy(1, b, rsb == 1 ? csb : rsb, N, K, rsb != 1, &ldb);
        if (b16) ldb = ldb16;
        const __nv_bfloat16 *a2 = NULL, *b2 = NULL;
        long lda2 = 0, ldb2 = 0;
        int K2 = x2 ? x2->K : 0;
        if (x2) { // A2 rounded with its scale into slot 2, B2 copied (kept) like B
            lda2 = (K2 + 7) / 8 * 8;
            __nv_bfloat16 *q = (__nv_bfloat16 *)scratch_reserve(&tc_scratch[2], &tc_cap[2], (size_t)M * lda2 * sizeof(__nv_bfloat16));
            scale_round_kernel<<<blocks_for((size_t)M * K2, 256), 256>>>(q, lda2, x2->a, x2->rsa, x2->s, M, K2);
            LAUNCHED("scale_round_kernel");
            a2 = q;
            b2 = tb ? operand_copy(3, x2->b, x2->rsb, K2, N, 0, &ldb2) : operand_copy(3, x2->b, x2->rsb == 1 ? x2->csb : x2->rsb, N, K2, x2->rsb != 1, &ldb2);
        }
        prof_flops = 2.0 * M * N * (K + K2);
        int acc = c16 ? 2 : accumulate;
        // tiles 128 wide where 256 would leave SMs idle (the k and v projections of GQA: N = 256 is 64 tiles on 132 SMs)
        int narrow_n = narrow_tiles && (long)((M + wgk::BM - 1) / wgk::BM) * ((N + 255) / 256) < num_sms;
        cudaError_t e = wgmma_epi == 1 && narrow_n ? wgk::gemm_wgmma_t<128, 6, 16384>(c, ldc, a16, lda, bb, ldb, M, N, K, acc, 0, 0, tb, a2, lda2, b2, ldb2, K2)
                      : wgmma_epi == 1 ? wgk::gemm_wgmma_t<256, 4, 16384>(c, ldc, a16, lda, bb, ldb, M, N, K, acc, 0, 0, tb, a2, lda2, b2, ldb2, K2)
                      : wgmma_epi == 2 ? wgk::gemm_wgmma_t<256, 3, 32768>(c, ldc, a16, lda, bb, ldb, M, N, K, acc, 0, 0, tb, a2, lda2, b2, ldb2, K2)
                                       : wgk::gemm_wgmma_t<256, 4>(c, ldc, a16, lda, bb, ldb, M, N, K, acc, 0, 0, tb, a2, lda2, b2, ldb2, K2);
        CK(e);
        LAUNCHED(profile ? shape_name(x2 ? "gemm_wgmma+lora" : "gemm_wgmma", M, N, K, accumulate) : "gemm_wgmma_kernel");
        return;
    }
    if (large) { // operands to bf16 first, then the cp.async kernel
        long lda, ldb;
        const __nv_bfloat16 *a16 = csa == 1 ? operand_copy(0, a, rsa, M, K, 0, &lda) : operand_copy(0, a, csa, K, M, 0, &lda);
        const __nv_bfloat16 *bb = b16 ? b16 : rsb == 1 ? operand_copy(1, b, csb, N, K, 0, &ldb) : operand_copy(1, b, rsb, K, N, 0, &ldb);
        if (b16) { ldb = ldb16; rsb = 1; } // given K-major
        prof_flops = 2.0 * M * N * K;
        if (csa == 1 && rsb == 1) launch_tc_shape<true, true>(c, ldc, a16, lda, bb, ldb, M, N, K, accumulate);
        else if (csa == 1) launch_tc_shape<true, false>(c, ldc, a16, lda, bb, ldb, M, N, K, accumulate);
        else if (rsb == 1) launch_tc_shape<false, true>(c, ldc, a16, lda, bb, ldb, M, N, K, accumulate);
        else launch_tc_shape<false, false>(c, ldc, a16, lda, bb, ldb, M, N, K, accumulate);
        LAUNCHED("gemm_tc_kernel");
        return;
    }
    if (gemv && act16(a)) a = act_f32(0, a, (size_t)(M - 1) * rsa + (size_t)(K - 1) * csa + 1);
    if (gemv) { // generation: x W^T, a few rows
        const __nv_bfloat16 *w16 = NULL;
        long ldw = csb;
        if (bf16_matmuls || bm) w16 = operand_copy(1, b, csb, N, K, 0, &ldw); // the weight's bf16 copy (kept), or the bf16-only weight
        int vec = ((uintptr_t)a & 15) == 0 && rsa % 4 == 0 && (w16 ? ((uintptr_t)w16 & 15) == 0 && ldw % 8 == 0 : ((uintptr_t)b & 15) == 0 && csb % 4 == 0);
        if (w16) gemv_launch(c, ldc, a, rsa, w16, ldw, M, N, K, accumulate, vec);
        else gemv_launch(c, ldc, a, rsa, b, csb, M, N, K, accumulate, vec);
        return;
    }
    const __nv_bfloat16 *a16 = act16(a), *b16a = act16(b); // bf16 activations: gemm_small_n reads them as A, gemm_small_m as B, the rest get floats
    if (N <= SMALL_N && csa == 1 && M >= 64 && narrow_gemm && !b16a) {
        int vec = ((uintptr_t)a & (a16 ? 7 : 15)) == 0 && rsa % 4 == 0, rows = N <= 8 ? 32 : 16, bm = (M + rows - 1) / rows;
        // split over K up to about 4 blocks per SM (2 run at a time: 128 registers), in chunks of 2 x SN_KC or more
        int S = bm >= 3 * num_sms ? 1 : (4 * num_sms + bm - 1) / bm, kchunk = K;
        if (S > K / (2 * SN_KC)) S = K / (2 * SN_KC);
        if (S < 1) S = 1;
        if (S > 1) { kchunk = ((K + S - 1) / S + SN_KC - 1) / SN_KC * SN_KC; S = (K + kchunk - 1) / kchunk; }
        float *cc = c;
        long ldcc = ldc, zs = 0;
        int acc = accumulate;
        if (S > 1) { cc = (float *)scratch_reserve(&splitk_scratch, &splitk_cap, (size_t)S * M * N * sizeof(float)); ldcc = N; zs = (long)M * N; acc = 0; }
        dim3 g(bm, S);
        if (a16 && N <= 8) gemm_small_n_kernel<8, 4><<<g, 256>>>(cc, ldcc, a16, rsa, b, rsb, csb, M, N, K, acc, vec, kchunk, zs);
        else if (a16) gemm_small_n_kernel<16, 2><<<g, 256>>>(cc, ldcc, a16, rsa, b, rsb, csb, M, N, K, acc, vec, kchunk, zs);
        else if (N <= 8) gemm_small_n_kernel<8, 4><<<g, 256>>>(cc, ldcc, a, rsa, b, rsb, csb, M, N, K, acc, vec, kchunk, zs);
        else gemm_small_n_kernel<16, 2><<<g, 256>>>(cc, ldcc, a, rsa, b, rsb, csb, M, N, K, acc, vec, kchunk, zs);
        LAUNCHED("gemm_small_n_kernel");
        if (S > 1) { splitk_reduce_strided_kernel<<<blocks_for((size_t)M * N, 256), 256>>>(c, ldc, 1, cc, S, M, N, accumulate); LAUNCHED("splitk_reduce_kernel"); }
        return;
    }
    if (M <= SMALL_M && csb == 1 && narrow_gemm && !a16) { // dA
        if (b16a) gemm_small_m(c, ldc, 1, a, rsa, csa, b16a, rsb, M, N, K, accumulate); else gemm_small_m(c, ldc, 1, a, rsa, csa, b, rsb, M, N, K, accumulate);
        return;
    }
    if (a16) a = act_f32(0, a, (size_t)(M - 1) * rsa + (size_t)(K - 1) * csa + 1);
    if (b16a) b = act_f32(1, b, (size_t)(K - 1) * rsb + (size_t)(N - 1) * csb + 1);
    if (N <= SMALL_M && rsa == 1 && narrow_gemm) { gemm_small_m(c, 1, ldc, b, csb, rsb, a, csa, N, M, K, accumulate); return; } // dB: C^T = B^T A^T
    // few output tiles and a long K (LoRA's dA = du^T x, dB = dy^T u: r x in and out x r over all tokens):
    // split K over S blocks per tile so that the GPU is full; the partial products are summed in order
    int tiles = ((N + GM - 1) / GM) * ((M + GM - 1) / GM), S = 1;
    if (tiles < num_sms && K >= 2048) {
        S = 2 * num_sms / tiles;
        if (S > K / 512) S = K / 512;
        if (S > 64) S = 64;
        if (S < 1) S = 1;
    }
    int kchunk = (K + S - 1) / S;
    kchunk = (kchunk + 31) / 32 * 32;
    S = (K + kchunk - 1) / kchunk;
    float *cc = c;
    long ldcc = ldc, zstride = 0;
    int acc = accumulate;
    if (S > 1) {
        cc = (float *)scratch_reserve(&splitk_scratch, &splitk_cap, (size_t)S * M * N * sizeof(float));
        ldcc = N; zstride = (long)M * N; acc = 0;
    }
    dim3 grid((N + GM - 1) / GM, (M + GM - 1) / GM, S);
    if (bf16_matmuls) { gemm_bf16_kernel<<<grid, 128>>>(cc, ldcc, a, rsa, csa, b, rsb, csb, M, N, K, acc, kchunk, zstride); LAUNCHED("gemm_bf16_kernel"); }
    else { gemm_f32_kernel<<<grid, 256>>>(cc, ldcc, a, rsa, csa, b, rsb, csb, M, N, K, acc, kchunk, zstride); LAUNCHED("gemm_f32_kernel"); }
    if (S > 1) { splitk_reduce_kernel<<<blocks_for((size_t)M * N, 256), 256>>>(c, ldc, cc, S, M, N, accumulate); LAUNCHED("splitk_reduce_kernel"); }
}

// out (N,OC) = inp (N,C) W^T
extern "C" void gpu_matmul_forward(float *out, const float *inp, const float *weight, int N, int C, int OC) {
    gemm(DO(out), OC, DA(inp), C, 1, DW(weight), 1, C, N, OC, C, 0);
}
// dinp (N,C) += dout (N,OC) W;  dweight (OC,C) += dout^T inp
extern "C" void gpu_matmul_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight, int N, int C, int OC) {
    if (dinp) gemm(DO(dinp), C, DA(dout), OC, 1, DW(weight), C, 1, N, C, OC, 1); // dinp may be bf16 activations (dh)
    if (dweight) gemm(D(dweight), C, DA(dout), 1, OC, DA(inp), C, 1, OC, C, N, 1);
}
// out = inp W^T + s u B^T (u (N,r), B (OC,r)): on the Hopper GEMM one product with u B^T as a last step over K
// (PEFT_CUDA_LORA=apart: the product, then gpu_lora_up_add's pass over out, as on the other paths)
extern "C" void gpu_lora_up_add(float *out, const float *u, const float *B, float s, int N, int r, int OC); // below
extern "C" void gpu_matmul_lora_forward(float *out, const float *inp, const float *weight, const float *u, const float *B, float s, int N, int C, int OC, int r) {
    if (!lora_fused || r > wgk::BK || !wgmma_takes(N, OC, C)) { gpu_matmul_forward(out, inp, weight, N, C, OC); gpu_lora_up_add(out, u, B, s, N, r, OC); return; }
    Extra x2 = { D(u), r, D(B), 1, r, r, s };
    gemm(DO(out), OC, DA(inp), C, 1, DW(weight), 1, C, N, OC, C, 0, NULL, 0, &x2);
}
// dinp += dout W + du A (du (N,r), A (r,C)), dweight += dout^T inp: du A a last step over K of dinp's GEMM
extern "C" void gpu_matmul_lora_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight, const float *du, const float *A, int N, int C, int OC, int r) {
    if (!lora_fused || r > wgk::BK || !wgmma_takes(N, C, OC)) {
        gpu_matmul_backward(dinp, dweight, dout, inp, weight, N, C, OC);
        gpu_matmul_backward(dinp, NULL, du, NULL, A, N, C, r);
        return;
    }
    Extra x2 = { D(du), r, D(A), C, 1, r, 1.0f };
    gemm(DO(dinp), C, DA(dout), OC, 1, DW(weight), C, 1, N, C, OC, 1, NULL, 0, &x2);
    if (dweight) gemm(D(dweight), C, DA(dout), 1, OC, DA(inp), C, 1, OC, C, N, 1);
}

// ----------------------------------------------------------------------------
// quantized weights: int8, int4 and NF4 blocks (peft.c's formats), dequantized on the fly

__constant__ float nf4_code_c[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f };
__constant__ float dyn_code_c[256]; // bitsandbytes' dynamic map, for double-quantized absmax
static int dyn_code_loaded;

typedef struct { int type, bs; const uint8_t *q; const float *scale; const uint16_t *scale16; const uint8_t *qabsmax; const float *absmax2; float offset; const uint16_t *hscale, *hzero; } QDev;
static QDev qdev(GPU_QARGS) {
    if (qabsmax && !dyn_code_loaded) { CK(cudaMemcpyToSymbol(dyn_code_c, code256, 256 * sizeof(float))); dyn_code_loaded = 1; }
    QDev t = { qtype, bs, D(q), D(scale), D(scale16), D(qabsmax), D(absmax2), offset, D(hscale), D(hzero) };
    return t;
}
// the scale of block b, and for HQQ its zero z (code: bitsandbytes' dynamic map, for double-quantized absmax)
__device__ __forceinline__ float qscale(const QDev &t, size_t b, float *z, const float *code) {
    *z = 0;
    if (t.hscale) { *z = __half2float(__ushort_as_half(t.hzero[b])); return __half2float(__ushort_as_half(t.hscale[b])); } // HQQ: fp16 scale and zero per group
    if (t.scale16) return __uint_as_float((uint32_t)t.scale16[b] << 16);
    if (t.qabsmax) return code[t.qabsmax[b]] * t.absmax2[b / DQ_BLOCK] + t.offset;
    return t.scale[b];
}
// the weight of code q (a byte, or a nibble of the 4-bit types) with its block's scale s and zero z
__device__ __forceinline__ float qcode(int type, uint32_t q, float s, float z, const float *nf4) {
    switch (type) {
    case QT_INT8: return (float)(int8_t)q * s;
    case QT_INT4: return ((float)q - 8.0f) * s;
    case QT_NF4: return nf4[q] * s;
    default: return ((float)q - z) * s; // HQQ: (q - z) * s
    }
}
__host__ __device__ __forceinline__ int qbits8(int type) { return type == QT_INT8 || type == QT_HQQ8; }
// the 8 weights of one block in 4 bytes of nibbles (lo) or 8 bytes (lo, hi): the type's switch taken once
__device__ __forceinline__ void qdecode8(float *w, uint32_t lo, uint32_t hi, int type, float s, float z, const float *nf4) {
#define QDEC(T) for (int e = 0; e < 8; e++) w[e] = qcode(T, qbits8(T) ? ((e < 4 ? lo : hi) >> 8 * (e % 4)) & 255 : (lo >> (8 * (e / 2) + (e & 1 ? 0 : 4))) & 15, s, z, nf4)
    switch (type) {
    case QT_INT8: QDEC(QT_INT8); break;
    case QT_INT4: QDEC(QT_INT4); break;
    case QT_NF4: QDEC(QT_NF4); break;
    case QT_HQQ8: QDEC(QT_HQQ8); break;
    default: QDEC(QT_HQQ4);
    }
#undef QDEC
}
// element i of the flattened matrix (4-bit types: element 2j in byte j's high nibble)
__device__ __forceinline__ float qvalue(const QDev &t, size_t i) {
    float z, s = qscale(t, i / t.bs, &z, dyn_code_c);
    return qcode(t.type, qbits8(t.type) ? t.q[i] : (t.q[i >> 1] >> (i & 1 ? 0 : 4)) & 15, s, z, nf4_code_c);
}
__global__ void dequantize_kernel(float *out, QDev t, size_t i0, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) out[i] = qvalue(t, i0 + i);
}
// The quantized matmuls. A few rows of input (generation: N <= QDIRECT_N) read the blocks directly, a warp
// per output; more rows dequantize the whole (OC,C) matrix and run the GEMM: into its bf16 operand (in
// the layout the GEMM reads: W for out = x W^T, W^T for dinp += dout W) for the bf16 tensor-core GEMM,
// into fp32 scratch otherwise.
#define QDIRECT_N 8
// out[n][o] = sum_c inp[n][c] W[o][c], W's values read from their blocks one at a time: a warp per output
// (the plain form, for rows and blocks that qmatvec16_kernel cannot take)
template <int N> __global__ void qmatvec_kernel(float *out, const float *inp, QDev t, int C, int OC) {
    int o = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (o >= OC) return;
    float acc[N];
    #pragma unroll
    for (int n = 0; n < N; n++) acc[n] = 0;
    for (int c = lane; c < C; c += 32) {
        float w = qvalue(t, (size_t)o * C + c);
        #pragma unroll
        for (int n = 0; n < N; n++) acc[n] += inp[(size_t)n * C + c] * w;
    }
    #pragma unroll
    for (int n = 0; n < N; n++) {
        float v = warp_sum(acc[n]);
        if (lane == 0) out[(size_t)n * OC + o] = v;
    }
}
// The same with 16 bytes of codes a lane at a time (32 weights of the 4-bit types, 16 of the 8-bit ones;
// C a multiple of that), QMV_U loads in flight a lane, streamed past L1, and one scale per 8 weights
// (blocks of a multiple of 8; bsh = log2 of a power-of-two block size, else -1). S warps an output as in
// gemv_kernel, lanes r of a row at c = E r + 32 E S u. The code tables in shared memory (lanes look up
// different entries, which constant memory would serialize).
#define QMV_U 2
template <int N, bool B8> __global__ void __launch_bounds__(256) qmatvec16_kernel(float *out, const float *inp, QDev t, int C, int OC, int S, int bsh) {
    __shared__ float nf4[16], code[256], part[8][N];
    if (threadIdx.x < 16) nf4[threadIdx.x] = nf4_code_c[threadIdx.x];
    if (t.qabsmax) code[threadIdx.x] = dyn_code_c[threadIdx.x]; // blockDim.x = 256
    __syncthreads();
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, o = blockIdx.x * (8 / S) + warp / S, r = (warp % S) * 32 + lane;
    constexpr int E = B8 ? 16 : 32;
    int step = 32 * E * S;
    float acc[N];
    #pragma unroll
    for (int n = 0; n < N; n++) acc[n] = 0;
    if (o < OC) {
        for (int c0 = E * r; c0 < C; c0 += QMV_U * step) {
            uint4 v[QMV_U];
            #pragma unroll
            for (int u = 0; u < QMV_U; u++) {
                size_t i = (size_t)o * C + c0 + u * step;
                if (c0 + u * step < C) v[u] = __ldcs((const uint4 *)(t.q + (B8 ? i : i / 2)));
            }
            #pragma unroll
            for (int u = 0; u < QMV_U; u++) {
                int c = c0 + u * step;
                if (c >= C) continue;
                uint32_t word[4] = { v[u].x, v[u].y, v[u].z, v[u].w };
                size_t i = (size_t)o * C + c, b = bsh >= 0 ? i >> bsh : i / t.bs;
                int ib = (int)(i - b * t.bs); // the chunk's offset in its block
                #pragma unroll
                for (int g = 0; g < E / 8; g++) { // 8 weights: 4 bytes of nibbles, or 8 bytes
                    float z, s = qscale(t, b + (bsh >= 0 ? (ib + 8 * g) >> bsh : (ib + 8 * g) / t.bs), &z, code), wv[8], x[8];
                    qdecode8(wv, B8 ? word[(2 * g) & 3] : word[g & 3], word[(2 * g + 1) & 3], t.type, s, z, nf4);
                    #pragma unroll
                    for (int n = 0; n < N; n++) { ldg8(x, inp + (size_t)n * C + c + 8 * g); acc[n] += dot8(x, wv); }
                }
            }
        }
    }
    #pragma unroll
    for (int n = 0; n < N; n++) {
        float v = warp_sum(acc[n]);
        if (lane == 0) part[warp][n] = v;
    }
    __syncthreads();
    if (o < OC && warp % S == 0 && lane < N) {
        float v = 0;
        for (int s = 0; s < S; s++) v += part[warp + s][lane];
        out[(size_t)lane * OC + o] = v;
    }
}
static void qmatvec(float *out, const float *inp, const QDev &t, int N, int C, int OC) {
    int E = qbits8(t.type) ? 16 : 32;
    if (C % E == 0 && t.bs % 8 == 0 && ((uintptr_t)t.q & 15) == 0 && ((uintptr_t)inp & 15) == 0) {
        int S = warps_per_row(OC, C, 32 * E), bsh = -1;
        for (int l = 3; l < 31; l++) if (t.bs == 1 << l) bsh = l;
#define QMV(n) if (E == 16) qmatvec16_kernel<n, true><<<(unsigned)((OC + 8 / S - 1) / (8 / S)), 256>>>(out, inp, t, C, OC, S, bsh); \
               else qmatvec16_kernel<n, false><<<(unsigned)((OC + 8 / S - 1) / (8 / S)), 256>>>(out, inp, t, C, OC, S, bsh)
        SWITCH_1_8(N, QMV);
#undef QMV
        LAUNCHED("qmatvec16_kernel");
        return;
    }
#define QMV(n) qmatvec_kernel<n><<<(OC + 7) / 8, 256>>>(out, inp, t, C, OC)
    SWITCH_1_8(N, QMV);
#undef QMV
    LAUNCHED("qmatvec_kernel");
}
// q (OC, ld) = W in bf16, zeros for c in [C, ld)
__global__ void dequantize_bf16_kernel(__nv_bfloat16 *q, long ld, QDev t, int C, int OC) {
    FOR_EACH(i, (size_t)OC * ld) {
        int o = (int)(i / ld), c = (int)(i % ld);
        q[i] = __float2bfloat16(c < C ? qvalue(t, (size_t)o * C + c) : 0.0f);
    }
}
// q (C, ld) = W^T in bf16, zeros for o in [OC, ld): 32 x 32 tiles through shared memory
__global__ void dequantize_bf16_t_kernel(__nv_bfloat16 *q, long ld, QDev t, int C, int OC) {
    __shared__ float s[32][33];
    int c0 = blockIdx.x * 32, o0 = blockIdx.y * 32, tx = threadIdx.x % 32, ty = threadIdx.x / 32;
    for (int r = ty; r < 32; r += 8) { int o = o0 + r, c = c0 + tx; s[r][tx] = o < OC && c < C ? qvalue(t, (size_t)o * C + c) : 0.0f; }
    __syncthreads();
    for (int r = ty; r < 32; r += 8) { int c = c0 + r, o = o0 + tx; if (c < C && o < ld) q[(long)c * ld + o] = __float2bfloat16(s[tx][r]); }
}
static void *qscratch;
static size_t qscratch_cap;
static float *dequantize_matrix(const QDev &t, int C, int OC) {
    size_t n = (size_t)C * OC;
    float *w = (float *)scratch_reserve(&qscratch, &qscratch_cap, n * sizeof(float));
    wrote(w, n * sizeof(float));
    dequantize_kernel<<<blocks_for(n, 256), 256>>>(w, t, 0, n);
    LAUNCHED("dequantize_kernel");
    return w;
}
// W (transposed: W^T) as the bf16 GEMM's B operand, rows of *ld
static const __nv_bfloat16 *dequantize_operand(const QDev &t, int C, int OC, int transposed, long *ld) {
    int rows = transposed ? C : OC, len = transposed ? OC : C;
    *ld = (len + 7) / 8 * 8;
    __nv_bfloat16 *q = (__nv_bfloat16 *)scratch_reserve(&qscratch, &qscratch_cap, (size_t)rows * *ld * sizeof(__nv_bfloat16));
    wrote(q, (size_t)rows * *ld * sizeof(__nv_bfloat16));
    if (!transposed) { dequantize_bf16_kernel<<<blocks_for((size_t)rows * *ld, 256), 256>>>(q, *ld, t, C, OC); LAUNCHED("dequantize_bf16_kernel"); }
    else {
        dim3 g((C + 31) / 32, (unsigned)((*ld + 31) / 32));
        dequantize_bf16_t_kernel<<<g, 256>>>(q, *ld, t, C, OC);
        LAUNCHED("dequantize_bf16_t_kernel");
    }
    return q;
}
static int large_bf16(int M, int N) { return bf16_matmuls && large_gemm && M >= BT && N >= BT; } // gemm's tensor-core path
extern "C" void gpu_qmatmul_forward(float *out, const float *inp, GPU_QARGS, int N, int C, int OC) {
    QDev t = qdev(QARGS_NAMES);
    if (N <= QDIRECT_N && !act16(out) && !act16(inp)) {
        wrote(D(out), (size_t)N * OC * sizeof(float));
        qmatvec(D(out), D(inp), t, N, C, OC);
        return;
    }
    if (large_bf16(N, OC)) {
        long ld;
        const __nv_bfloat16 *w16 = dequantize_operand(t, C, OC, 0, &ld);
        gemm(DO(out), OC, DA(inp), C, 1, NULL, 1, C, N, OC, C, 0, w16, ld);
        return;
    }
    float *w = dequantize_matrix(t, C, OC);
    gemm(DO(out), OC, DA(inp), C, 1, w, 1, C, N, OC, C, 0);
}
extern "C" void gpu_qmatmul_backward(float *dinp, const float *dout, GPU_QARGS, int N, int C, int OC) {
    QDev t = qdev(QARGS_NAMES);
    if (large_bf16(N, C)) {
        long ld;
        const __nv_bfloat16 *w16 = dequantize_operand(t, C, OC, 1, &ld);
        gemm(DO(dinp), C, DA(dout), OC, 1, NULL, C, 1, N, C, OC, 1, w16, ld);
        return;
    }
    float *w = dequantize_matrix(t, C, OC);
    gemm(DO(dinp), C, DA(dout), OC, 1, w, C, 1, N, C, OC, 1);
}
__global__ void encoder_q_kernel(float *out, const int *tokens, QDev t, int N, int C) {
    size_t n = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = qvalue(t, (size_t)tokens[i / C] * C + i % C);
}
extern "C" void gpu_encoder_forward_q(float *out, const int *tokens, GPU_QARGS, int N, int C) {
    QDev t = qdev(QARGS_NAMES);
    wrote(D(out), (size_t)N * C * sizeof(float));
    encoder_q_kernel<<<blocks_for((size_t)N * C, 256), 256>>>(D(out), D(tokens), t, N, C);
    LAUNCHED("encoder_q_kernel");
}

// ----------------------------------------------------------------------------
// elementwise kernels (grid-stride loops)


// peft.c's hash_uniform: the same dropout mask as the CPU draws
__device__ __forceinline__ float hash_uniform(uint64_t seed, uint64_t i) {
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}
template <typename IT> // inp: floats, or bf16 activations
__global__ void dropout_kernel(float *xd, float *mask, const IT *inp, size_t n, float p, float keep, uint64_t seed, int new_mask) {
    FOR_EACH(i, n) {
        if (new_mask) mask[i] = hash_uniform(seed, i) < p ? 0.0f : keep;
        xd[i] = to_f(inp[i]) * mask[i];
    }
}
extern "C" void gpu_dropout_forward(float *xd, float *mask, const float *inp, size_t n, float p, uint64_t seed, int new_mask) {
    wrote(D(xd), n * sizeof(float));
    if (new_mask) wrote(D(mask), n * sizeof(float));
    if (act16(inp)) dropout_kernel<<<blocks_for(n, 256), 256>>>(D(xd), D(mask), (const __nv_bfloat16 *)act16(inp), n, p, (float)(1.0 / (1.0 - p)), seed, new_mask);
    else dropout_kernel<<<blocks_for(n, 256), 256>>>(D(xd), D(mask), D(inp), n, p, (float)(1.0 / (1.0 - p)), seed, new_mask);
    LAUNCHED("dropout_kernel");
}
__global__ void add_scaled_kernel(float *out, const float *x, float s, size_t n) { FOR_EACH(i, n) out[i] += s * x[i]; }
__global__ void scale_copy_kernel(float *out, const float *x, float s, size_t n) { FOR_EACH(i, n) out[i] = s * x[i]; }
__global__ void add_masked_kernel(float *out, const float *x, const float *mask, size_t n) { FOR_EACH(i, n) out[i] += x[i] * mask[i]; }
__global__ void residual_kernel(float *out, const float *a, const float *b, size_t n) { FOR_EACH(i, n) out[i] = a[i] + b[i]; }
extern "C" void gpu_add_scaled(float *out, const float *x, float s, size_t n) { wrote(D(out), n * sizeof(float)); add_scaled_kernel<<<blocks_for(n, 256), 256>>>(D(out), D(x), s, n); LAUNCHED("add_scaled_kernel"); }
// out (N,OC) += s u B^T in one pass over out (u (N,r), B (OC,r)); else the product into scratch, then the add
static void *lora_scratch_t;
static size_t lora_scratch_cap;
__global__ void add_scaled_bf16_kernel(__nv_bfloat16 *out, const float *x, float s, size_t n) { FOR_EACH(i, n) out[i] = __float2bfloat16(__bfloat162float(out[i]) + s * x[i]); }
extern "C" void gpu_lora_up_add(float *out, const float *u, const float *B, float s, int N, int r, int OC) {
    __nv_bfloat16 *o16 = act16(out); // out may be bf16 activations (gate, up)
    if (r <= NARROW_K && N >= 64 && OC >= 64 && narrow_gemm) {
        prof_flops = 2.0 * N * OC * r;
        if (o16) { wrote(o16, (size_t)N * OC * sizeof(*o16)); narrow_k(o16, OC, D(u), r, 1, D(B), 1, r, N, OC, r, 1, s); return; }
        float *o = D(out);
        wrote(o, (size_t)N * OC * sizeof(float));
        narrow_k(o, OC, D(u), r, 1, D(B), 1, r, N, OC, r, 1, s);
        return;
    }
    float *t = (float *)scratch_reserve(&lora_scratch_t, &lora_scratch_cap, (size_t)N * OC * sizeof(float));
    gemm(t, OC, D(u), r, 1, D(B), 1, r, N, OC, r, 0);
    if (!o16) { gpu_add_scaled(out, t, s, (size_t)N * OC); return; }
    wrote(o16, (size_t)N * OC * sizeof(*o16));
    add_scaled_bf16_kernel<<<blocks_for((size_t)N * OC, 256), 256>>>(o16, t, s, (size_t)N * OC);
    LAUNCHED("add_scaled_bf16_kernel");
}
extern "C" void gpu_scale_copy(float *out, const float *x, float s, size_t n) { wrote(D(out), n * sizeof(float)); scale_copy_kernel<<<blocks_for(n, 256), 256>>>(D(out), D(x), s, n); LAUNCHED("scale_copy_kernel"); }
extern "C" void gpu_add_masked(float *out, const float *x, const float *mask, size_t n) { wrote(D(out), n * sizeof(float)); add_masked_kernel<<<blocks_for(n, 256), 256>>>(D(out), D(x), D(mask), n); LAUNCHED("add_masked_kernel"); }
extern "C" void gpu_residual_forward(float *out, const float *a, const float *b, size_t n) { wrote(D(out), n * sizeof(float)); residual_kernel<<<blocks_for(n, 256), 256>>>(D(out), D(a), D(b), n); LAUNCHED("residual_kernel"); }

// four values a thread: float4 loads and stores when every pointer is 16-byte aligned (vec)
__device__ __forceinline__ void load4(float *v, const float *p, size_t i, size_t n, int vec) {
    if (vec && i + 3 < n) { float4 t = *(const float4 *)(p + i); v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w; }
    else for (int k = 0; k < 4; k++) v[k] = i + k < n ? p[i + k] : 0.0f;
}
__device__ __forceinline__ void store4(float *p, const float *v, size_t i, size_t n, int vec) {
    if (vec && i + 3 < n) *(float4 *)(p + i) = make_float4(v[0], v[1], v[2], v[3]);
    else for (int k = 0; k < 4; k++) if (i + k < n) p[i + k] = v[k];
}
// and the bf16 copy (shadow) when there is one (n a multiple of 8)
__device__ __forceinline__ void store4_bf16(__nv_bfloat16 *q, const float *v, size_t i, size_t n = ~(size_t)0) {
    if (!q) return;
    if (i + 3 >= n) { for (int k = 0; i + k < n; k++) q[i + k] = __float2bfloat16(v[k]); return; } // the tail (bf16 activations of any length)
    __nv_bfloat162 h[2] = { __floats2bfloat162_rn(v[0], v[1]), __floats2bfloat162_rn(v[2], v[3]) };
    *(uint2 *)(q + i) = *(uint2 *)h;
}
static int aligned16(const void *const *p, int n) { for (int i = 0; i < n; i++) if ((uintptr_t)p[i] & 15) return 0; return 1; }

// The MLP's gated activation, out = act(g) * u;  dg += dout * u * act'(g);  du += dout * act(g), with act
// SwiGLU's silu(g) = g sig(g), act' = sig(g) (1 + g (1 - sig(g))), or GeGLU's gelu_tanh(g) = g/2 (1 + th),
// th = tanh(k (g + 0.044715 g^3)), k = sqrt(2/pi), act' = (1 + th)/2 + g/2 (1 - th^2) k (1 + 3 * 0.044715 g^2)
__device__ __forceinline__ void load4(float *v, const __nv_bfloat16 *p, size_t i, size_t n, int vec) { // (bf16 activations)
    if (vec && i + 3 < n) { uint2 t = *(const uint2 *)(p + i); __nv_bfloat162 h0 = *(__nv_bfloat162 *)&t.x, h1 = *(__nv_bfloat162 *)&t.y; v[0] = __low2float(h0); v[1] = __high2float(h0); v[2] = __low2float(h1); v[3] = __high2float(h1); }
    else for (int k = 0; k < 4; k++) v[k] = i + k < n ? __bfloat162float(p[i + k]) : 0.0f;
}
#define GELU_K 0.7978845608028654f
// act(g) and, when d, act'(g) into *d (GELU: 0 silu, 1 gelu_tanh)
template <int GELU> __device__ __forceinline__ float glu_act(float g, float *d) {
    if (GELU) {
        float th = tanhf(GELU_K * (g + 0.044715f * g * g * g));
        if (d) *d = 0.5f * (1.0f + th) + 0.5f * g * (1.0f - th * th) * GELU_K * (1.0f + 3.0f * 0.044715f * g * g);
        return 0.5f * g * (1.0f + th);
    }
    float sg = 1.0f / (1.0f + expf(-g));
    if (d) *d = sg * (1.0f + g * (1.0f - sg));
    return g * sg;
}
template <int GELU, typename GT> // g and u: float, or bf16 activations; out NULL: the result in bf16 only (o16: h kept in bf16)
__global__ void glu_forward_kernel(float *out, __nv_bfloat16 *o16, const GT *g, const GT *u, size_t n, int vec) {
    FOR_EACH(e, (n + 3) / 4) {
        float gv[4], uv[4], ov[4];
        load4(gv, g, 4 * e, n, vec); load4(uv, u, 4 * e, n, vec);
        for (int k = 0; k < 4; k++) ov[k] = glu_act<GELU>(gv[k], NULL) * uv[k];
        if (out) store4(out, ov, 4 * e, n, vec);
        store4_bf16(o16, ov, 4 * e, n);
    }
}
// zero: dg and du hold zeros (not read); dg, du NULL: the results in bf16 only (dg16, du16: kept in bf16);
// dout (h's gradient) floats or kept in bf16
template <int GELU, typename GT, typename DT>
__global__ void glu_backward_kernel(float *dg, float *du, __nv_bfloat16 *dg16, __nv_bfloat16 *du16, const DT *dout, const GT *g, const GT *u, size_t n, int vec, int zero) {
    FOR_EACH(e, (n + 3) / 4) {
        size_t i = 4 * e;
        float gv[4], uv[4], dv[4], dgv[4] = { 0, 0, 0, 0 }, duv[4] = { 0, 0, 0, 0 };
        load4(gv, g, i, n, vec); load4(uv, u, i, n, vec); load4(dv, dout, i, n, vec);
        if (!zero && dg) { load4(dgv, dg, i, n, vec); load4(duv, du, i, n, vec); }
        else if (!zero) { load4(dgv, dg16, i, n, vec); load4(duv, du16, i, n, vec); }
        for (int k = 0; k < 4; k++) {
            float d, a = glu_act<GELU>(gv[k], &d);
            dgv[k] += dv[k] * uv[k] * d;
            duv[k] += dv[k] * a;
        }
        if (dg) { store4(dg, dgv, i, n, vec); store4(du, duv, i, n, vec); }
        store4_bf16(dg16, dgv, i, n); store4_bf16(du16, duv, i, n);
    }
}
// g and u are both bf16 activations or both floats
static int gu16(const float *g, const float *u) {
    int a = act16(g) != NULL, b = act16(u) != NULL;
    if (a != b) { fprintf(stderr, "peft: internal error: the MLP's g and u differ in type\n"); exit(1); }
    return a;
}
template <int GELU> static void glu_forward(float *out, const float *g, const float *u, size_t n) {
    __nv_bfloat16 *h16 = act16(out); // h kept in bf16
    float *o = h16 ? NULL : D(out);
    if (h16) wrote(h16, n * sizeof(*h16)); else wrote(o, n * sizeof(float));
    __nv_bfloat16 *o16 = h16 ? h16 : shadow(o, n);
    if (gu16(g, u)) {
        const void *p[3] = { h16 ? (const void *)h16 : o, g, u };
        glu_forward_kernel<GELU><<<blocks_for((n + 3) / 4, 256), 256>>>(o, o16, act16(g), act16(u), n, aligned16(p, 3) && n % 4 == 0);
    } else {
        const void *p[3] = { h16 ? (const void *)h16 : o, D(g), D(u) };
        glu_forward_kernel<GELU><<<blocks_for((n + 3) / 4, 256), 256>>>(o, o16, D(g), D(u), n, aligned16(p, 3) && n % 4 == 0);
    }
    LAUNCHED(GELU ? "glu_forward_kernel (GeGLU)" : "glu_forward_kernel (SwiGLU)");
}
template <int GELU> static void glu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, size_t n) {
    if (!act16(dg) != !act16(du)) { fprintf(stderr, "peft: internal error: the MLP's dg and du differ in type\n"); exit(1); }
    int out16 = act16(dg) != NULL; // dg, du kept in bf16
    float *a = out16 ? NULL : D(dg), *b = out16 ? NULL : D(du);
    size_t ob = n * (out16 ? 2 : 4);
    int zero = known_zero(out16 ? (void *)dg : a, ob) && known_zero(out16 ? (void *)du : b, ob);
    if (out16) { wrote(dg, ob); wrote(du, ob); } else { wrote(a, ob); wrote(b, ob); }
    __nv_bfloat16 *a16 = out16 ? act16(dg) : shadow(a, n), *b16 = out16 ? act16(du) : shadow(b, n);
    const void *pa = out16 ? (const void *)a16 : a, *pb = out16 ? (const void *)b16 : b;
    const void *pd = act16(dout) ? (const void *)act16(dout) : (const void *)D(dout), *pg = act16(g) ? (const void *)g : (const void *)D(g), *pu = act16(u) ? (const void *)u : (const void *)D(u);
    const void *p[5] = { pa, pb, pd, pg, pu };
    int vec = aligned16(p, 5) && n % 4 == 0;
    unsigned nb = blocks_for((n + 3) / 4, 256);
    if (gu16(g, u) && act16(dout)) glu_backward_kernel<GELU><<<nb, 256>>>(a, b, a16, b16, act16(dout), act16(g), act16(u), n, vec, zero);
    else if (gu16(g, u)) glu_backward_kernel<GELU><<<nb, 256>>>(a, b, a16, b16, D(dout), act16(g), act16(u), n, vec, zero);
    else if (act16(dout)) glu_backward_kernel<GELU><<<nb, 256>>>(a, b, a16, b16, act16(dout), D(g), D(u), n, vec, zero);
    else glu_backward_kernel<GELU><<<nb, 256>>>(a, b, a16, b16, D(dout), D(g), D(u), n, vec, zero);
    LAUNCHED(GELU ? "glu_backward_kernel (GeGLU)" : "glu_backward_kernel (SwiGLU)");
}
extern "C" void gpu_swiglu_forward(float *out, const float *g, const float *u, size_t n) { glu_forward<0>(out, g, u, n); }
extern "C" void gpu_swiglu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, size_t n) { glu_backward<0>(dg, du, dout, g, u, n); }
extern "C" void gpu_geglu_forward(float *out, const float *g, const float *u, size_t n) { glu_forward<1>(out, g, u, n); }
extern "C" void gpu_geglu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, size_t n) { glu_backward<1>(dg, du, dout, g, u, n); }

// A linear layer's bias (Qwen2's q, k, v): out (N,OC) += b (OC); out floats or bf16 activations, each value
// rounded once. db (OC) += the column sums of dout (N,OC): a thread per column, rows in order (as the CPU)
template <typename OT> __global__ void bias_forward_kernel(OT *out, const float *b, int N, int OC) {
    FOR_EACH(e, (size_t)N * OC) out[e] = to_f(out[e]) + b[e % OC];
}
__global__ void bias_backward_kernel(float *db, const float *dout, int N, int OC) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) return;
    float acc = 0;
    for (int n = 0; n < N; n++) acc += dout[(size_t)n * OC + o];
    db[o] += acc;
}
extern "C" void gpu_bias_forward(float *out, const float *b, int N, int OC) {
    size_t n = (size_t)N * OC;
    if (__nv_bfloat16 *o16 = act16(out)) { wrote(o16, n * sizeof(*o16)); bias_forward_kernel<<<blocks_for(n, 256), 256>>>(o16, D(b), N, OC); }
    else {
        float *o = D(out);
        wrote(o, n * sizeof(float));
        bias_forward_kernel<<<blocks_for(n, 256), 256>>>(o, D(b), N, OC);
    }
    LAUNCHED("bias_forward_kernel");
}
extern "C" void gpu_bias_backward(float *db, const float *dout, int N, int OC) {
    wrote(D(db), (size_t)OC * sizeof(float));
    if (act16(dout)) { fprintf(stderr, "peft: internal error: a bias gradient from bf16 activations\n"); exit(1); }
    bias_backward_kernel<<<(OC + 127) / 128, 128>>>(D(db), D(dout), N, OC);
    LAUNCHED("bias_backward_kernel");
}

// soft-capping (Gemma 2's final logits): out = c tanh(x / c), th = tanh(x / c) kept for the backward (or NULL);
// the backward scales d in place: d *= 1 - th^2. out may be inp
__global__ void softcap_forward_kernel(float *out, float *th, const float *inp, float cap, size_t n) {
    FOR_EACH(i, n) { float t = tanhf(inp[i] / cap); if (th) th[i] = t; out[i] = cap * t; }
}
__global__ void softcap_backward_kernel(float *d, const float *th, size_t n) { FOR_EACH(i, n) d[i] *= 1.0f - th[i] * th[i]; }
extern "C" void gpu_softcap_forward(float *out, float *th, const float *inp, float cap, size_t n) {
    wrote(D(out), n * sizeof(float));
    if (th) wrote(D(th), n * sizeof(float));
    softcap_forward_kernel<<<blocks_for(n, 256), 256>>>(D(out), th ? D(th) : NULL, D(inp), cap, n);
    LAUNCHED("softcap_forward_kernel");
}
extern "C" void gpu_softcap_backward(float *d, const float *th, size_t n) {
    wrote(D(d), n * sizeof(float));
    softcap_backward_kernel<<<blocks_for(n, 256), 256>>>(D(d), D(th), n);
    LAUNCHED("softcap_backward_kernel");
}

// AdamW (PyTorch's): p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= step * m / (sqrt(v) * rbc2 + eps)
__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float lrwd, float b1, float b2, float eps, float step, float rbc2) {
    FOR_EACH(i, n) {
        float gi = g[i];
        p[i] -= lrwd * p[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        p[i] -= step * m[i] / (sqrtf(v[i]) * rbc2 + eps);
    }
}
extern "C" void gpu_adamw(float *params, const float *grads, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd, float step, float rbc2) {
    wrote(D(params), n * sizeof(float)); wrote(D(m), n * sizeof(float)); wrote(D(v), n * sizeof(float));
    adamw_kernel<<<blocks_for(n, 256), 256>>>(D(params), D(grads), D(m), D(v), n, (float)(lr * wd), beta1, beta2, eps, step, rbc2);
    LAUNCHED("adamw_kernel");
}

extern "C" void gpu_zero(void *p, size_t bytes) {
    if (!bytes) return;
    if (act16(p)) bytes /= 2; // bf16 activations: bytes / 4 values
    char *d = act16(p) ? (char *)p : (char *)D(p);
    wrote(d, bytes);
    CK(cudaMemset(d, 0, bytes));
    if (nzeroed == 16) memmove(zeroed, zeroed + 1, 15 * sizeof zeroed[0]), nzeroed--; // the oldest goes
    zeroed[nzeroed].lo = d; zeroed[nzeroed].hi = d + bytes; nzeroed++;
}

// sum of x (or of x^2) in double: 256 blocks of partial sums over fixed slices, then one block; the
// same order every time
#define SUM_BLOCKS 256
__global__ void partial_sums_kernel(double *partial, const float *x, size_t n, int squares) {
    __shared__ double sh[32];
    double s = 0;
    FOR_EACH(i, n) { double v = x[i]; s += squares ? v * v : v; }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
__global__ void final_sum_kernel(double *out, const double *partial, int n) {
    __shared__ double sh[32];
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) *out = s;
}
static void *sum_scratch;
static size_t sum_scratch_cap;
static double sum_of(const float *x, size_t n, int squares) {
    if (!n) return 0;
    double *partial = (double *)scratch_reserve(&sum_scratch, &sum_scratch_cap, (SUM_BLOCKS + 1) * sizeof(double)), r;
    partial_sums_kernel<<<SUM_BLOCKS, 256>>>(partial, D(x), n, squares);
    LAUNCHED("partial_sums_kernel");
    final_sum_kernel<<<1, 256>>>(partial + SUM_BLOCKS, partial, SUM_BLOCKS);
    LAUNCHED("final_sum_kernel");
    CK(cudaMemcpy(&r, partial + SUM_BLOCKS, sizeof(double), cudaMemcpyDeviceToHost));
    return r;
}
extern "C" double gpu_sum(const float *x, size_t n) { return sum_of(x, n, 0); }
extern "C" double gpu_sumsq(const float *x, size_t n) { return sum_of(x, n, 1); }

// ----------------------------------------------------------------------------
// embedding, RMSNorm, RoPE

__global__ void encoder_forward_kernel(float *out, const int *tokens, const float *embed, int N, int C) {
    FOR_EACH(i, (size_t)N * C) out[i] = embed[(size_t)tokens[i / C] * C + i % C];
}
// dembed[token] += dout: one thread per column walks the rows in order (no atomics: deterministic)
__global__ void encoder_backward_kernel(float *dembed, const float *dout, const int *tokens, int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int n = 0; n < N; n++) dembed[(size_t)tokens[n] * C + c] += dout[(size_t)n * C + c];
}
extern "C" void gpu_encoder_forward(float *out, const int *tokens, const float *embed, int N, int C) {
    wrote(D(out), (size_t)N * C * sizeof(float));
    encoder_forward_kernel<<<blocks_for((size_t)N * C, 256), 256>>>(D(out), D(tokens), D(embed), N, C);
    LAUNCHED("encoder_forward_kernel");
}
extern "C" void gpu_encoder_backward(float *dembed, const float *dout, const int *tokens, int N, int C) {
    wrote(D(dembed), SIZE_MAX - (uintptr_t)D(dembed)); // rows up to the largest token id: everything from dembed on
    encoder_backward_kernel<<<(C + 127) / 128, 128>>>(D(dembed), D(dout), D(tokens), N, C);
    LAUNCHED("encoder_backward_kernel");
}

// RMSNorm, a warp per row (float4 loads when vec: C a multiple of 4, rows 16-byte aligned):
// y = x * rstd * (woff + w), rstd = 1/sqrt(mean(x^2) + eps); woff: 0, or Gemma's 1; o16: y's bf16 copy, or NULL
// (out NULL: y in bf16 only, into o16: the bf16 activations xn)
__global__ void rmsnorm_forward_kernel(float *out, __nv_bfloat16 *o16, float *rstd, const float *inp, const float *w, int N, int C, float eps, float woff, int vec) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C;
    float *y = out ? out + (size_t)row * C : NULL, ss = 0;
    if (vec) for (int c = 4 * lane; c < C; c += 128) { float4 v = *(const float4 *)(x + c); ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w; }
    else for (int c = lane; c < C; c += 32) ss += x[c] * x[c];
    float r = rsqrtf(warp_sum(ss) / C + eps);
    if (vec) for (int c = 4 * lane; c < C; c += 128) {
        float4 v = *(const float4 *)(x + c), g = *(const float4 *)(w + c);
        float o[4] = { v.x * r * (woff + g.x), v.y * r * (woff + g.y), v.z * r * (woff + g.z), v.w * r * (woff + g.w) };
        if (y) *(float4 *)(y + c) = make_float4(o[0], o[1], o[2], o[3]);
        if (o16) store4_bf16(o16 + (size_t)row * C, o, c);
    }
    else for (int c = lane; c < C; c += 32) {
        float o = x[c] * r * (woff + w[c]);
        if (y) y[c] = o;
        if (o16) o16[(size_t)row * C + c] = __float2bfloat16(o);
    }
    if (rstd && lane == 0) rstd[row] = r;
}
// with w' = woff + w: dx += rstd * (w'*dy) - rstd^3/C * x * sum(w'*dy*x), a warp per row; d16: dx's bf16 copy, or NULL
__global__ void rmsnorm_backward_dx_kernel(float *dinp, __nv_bfloat16 *d16, const float *dout, const float *inp, const float *w, const float *rstd, int N, int C, float woff, int vec) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    size_t off = (size_t)row * C;
    const float *x = inp + off, *dy = dout + off;
    float *dx = dinp + off, r = rstd[row], dot = 0;
    if (vec) for (int c = 4 * lane; c < C; c += 128) {
        float4 a = *(const float4 *)(w + c), b = *(const float4 *)(dy + c), v = *(const float4 *)(x + c);
        a = make_float4(woff + a.x, woff + a.y, woff + a.z, woff + a.w);
        dot += a.x * b.x * v.x + a.y * b.y * v.y + a.z * b.z * v.z + a.w * b.w * v.w;
    }
    else for (int c = lane; c < C; c += 32) dot += (woff + w[c]) * dy[c] * x[c];
    float k = warp_sum(dot) * r * r * r / C;
    if (vec) for (int c = 4 * lane; c < C; c += 128) {
        float4 a = *(const float4 *)(w + c), b = *(const float4 *)(dy + c), v = *(const float4 *)(x + c), o = *(const float4 *)(dx + c);
        a = make_float4(woff + a.x, woff + a.y, woff + a.z, woff + a.w);
        float e[4] = { o.x + r * a.x * b.x - k * v.x, o.y + r * a.y * b.y - k * v.y, o.z + r * a.z * b.z - k * v.z, o.w + r * a.w * b.w - k * v.w };
        *(float4 *)(dx + c) = make_float4(e[0], e[1], e[2], e[3]);
        if (d16) store4_bf16(d16 + off, e, c);
    }
    else for (int c = lane; c < C; c += 32) {
        dx[c] += r * (woff + w[c]) * dy[c] - k * x[c];
        if (d16) d16[off + c] = __float2bfloat16(dx[c]);
    }
}
// The same two with a block per row and the row in registers, read once (the warp-per-row kernels read it
// twice, the second time mostly from DRAM): thread t holds the float4 chunks t, t + 256, .. (NV of them;
// C % 4 == 0, C <= 1024 NV, every pointer 16-byte aligned)
template <int NV>
__global__ void __launch_bounds__(256) rmsnorm_forward_row_kernel(float *out, __nv_bfloat16 *o16, float *rstd, const float *inp, const float *w, int N, int C, float eps, float woff) {
    __shared__ float part[32];
    size_t off = (size_t)blockIdx.x * C;
    const float4 *x = (const float4 *)(inp + off);
    float4 v[NV];
    float ss = 0;
    #pragma unroll
    for (int j = 0; j < NV; j++) {
        int c = threadIdx.x + 256 * j;
        v[j] = 4 * c < C ? x[c] : make_float4(0, 0, 0, 0);
        ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
    }
    float r = rsqrtf(block_sum(ss, part) / C + eps);
    #pragma unroll
    for (int j = 0; j < NV; j++) {
        int c = threadIdx.x + 256 * j;
        if (4 * c >= C) break;
        float4 g = ((const float4 *)w)[c];
        float o[4] = { v[j].x * r * (woff + g.x), v[j].y * r * (woff + g.y), v[j].z * r * (woff + g.z), v[j].w * r * (woff + g.w) };
        if (out) ((float4 *)(out + off))[c] = make_float4(o[0], o[1], o[2], o[3]);
        if (o16) store4_bf16(o16 + off, o, 4 * c);
    }
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
}
template <int NV>
__global__ void __launch_bounds__(256) rmsnorm_backward_dx_row_kernel(float *dinp, __nv_bfloat16 *d16, const float *dout, const float *inp, const float *w, const float *rstd, int N, int C, float woff) {
    __shared__ float part[32];
    size_t off = (size_t)blockIdx.x * C;
    const float4 *x = (const float4 *)(inp + off), *dy = (const float4 *)(dout + off), *w4 = (const float4 *)w;
    float4 *dx = (float4 *)(dinp + off);
    float4 v[NV], b[NV];
    float r = rstd[blockIdx.x], dot = 0;
    #pragma unroll
    for (int j = 0; j < NV; j++) {
        int c = threadIdx.x + 256 * j;
        v[j] = b[j] = make_float4(0, 0, 0, 0);
        if (4 * c >= C) continue;
        float4 a = w4[c];
        v[j] = x[c]; b[j] = dy[c];
        b[j] = make_float4((woff + a.x) * b[j].x, (woff + a.y) * b[j].y, (woff + a.z) * b[j].z, (woff + a.w) * b[j].w); // w'*dy
        dot += b[j].x * v[j].x + b[j].y * v[j].y + b[j].z * v[j].z + b[j].w * v[j].w;
    }
    float k = block_sum(dot, part) * r * r * r / C;
    #pragma unroll
    for (int j = 0; j < NV; j++) {
        int c = threadIdx.x + 256 * j;
        if (4 * c >= C) break;
        float4 o = dx[c];
        float e[4] = { o.x + r * b[j].x - k * v[j].x, o.y + r * b[j].y - k * v[j].y, o.z + r * b[j].z - k * v[j].z, o.w + r * b[j].w - k * v[j].w };
        dx[c] = make_float4(e[0], e[1], e[2], e[3]);
        if (d16) store4_bf16(d16 + off, e, 4 * c);
    }
}
// the row kernels' NV for C (0: the warp-per-row kernels)
static int rms_nv(int C, int vec) { return !vec ? 0 : C <= 1024 ? 1 : C <= 2048 ? 2 : C <= 4096 ? 4 : 0; }
#define RMS_ROW(kernel, nv, N, ...) do { \
    if (nv == 1) kernel<1><<<N, 256>>>(__VA_ARGS__); else if (nv == 2) kernel<2><<<N, 256>>>(__VA_ARGS__); else kernel<4><<<N, 256>>>(__VA_ARGS__); } while (0)
// dw += sum_n dy * x * rstd: one thread per column, rows in order
__global__ void rmsnorm_backward_dw_kernel(float *dw, const float *dout, const float *inp, const float *rstd, int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0;
    for (int n = 0; n < N; n++) acc += dout[(size_t)n * C + c] * inp[(size_t)n * C + c] * rstd[n];
    dw[c] += acc;
}
extern "C" void gpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps, float woff) {
    __nv_bfloat16 *o16 = act16(out);
    if (o16) { // the normed x kept in bf16 (xn)
        wrote(o16, (size_t)N * C * sizeof(*o16));
        if (rstd) wrote(D(rstd), (size_t)N * sizeof(float));
        const void *p[3] = { o16, D(inp), D(weight) };
        int vec = C % 4 == 0 && aligned16(p, 3), nv = rms_nv(C, vec);
        if (nv) { RMS_ROW(rmsnorm_forward_row_kernel, nv, N, NULL, o16, D(rstd), D(inp), D(weight), N, C, eps, woff); LAUNCHED("rmsnorm_forward_row_kernel"); return; }
        rmsnorm_forward_kernel<<<(N + 7) / 8, 256>>>(NULL, o16, D(rstd), D(inp), D(weight), N, C, eps, woff, vec);
        LAUNCHED("rmsnorm_forward_kernel");
        return;
    }
    float *o = D(out);
    wrote(o, (size_t)N * C * sizeof(float));
    if (rstd) wrote(D(rstd), (size_t)N * sizeof(float));
    const void *p[3] = { o, D(inp), D(weight) };
    int vec = C % 4 == 0 && aligned16(p, 3), nv = rms_nv(C, vec);
    __nv_bfloat16 *s16 = shadow(o, (size_t)N * C);
    if (nv) { RMS_ROW(rmsnorm_forward_row_kernel, nv, N, o, s16, D(rstd), D(inp), D(weight), N, C, eps, woff); LAUNCHED("rmsnorm_forward_row_kernel"); return; }
    rmsnorm_forward_kernel<<<(N + 7) / 8, 256>>>(o, s16, D(rstd), D(inp), D(weight), N, C, eps, woff, vec);
    LAUNCHED("rmsnorm_forward_kernel");
}
extern "C" void gpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight, const float *rstd, int N, int C, float woff) {
    float *dx = D(dinp);
    wrote(dx, (size_t)N * C * sizeof(float));
    const void *p[4] = { dx, D(dout), D(inp), D(weight) };
    int vec = C % 4 == 0 && aligned16(p, 4), nv = rms_nv(C, vec);
    __nv_bfloat16 *s16 = shadow(dx, (size_t)N * C);
    if (nv) { RMS_ROW(rmsnorm_backward_dx_row_kernel, nv, N, dx, s16, D(dout), D(inp), D(weight), D(rstd), N, C, woff); LAUNCHED("rmsnorm_backward_dx_row_kernel"); }
    else { rmsnorm_backward_dx_kernel<<<(N + 7) / 8, 256>>>(dx, s16, D(dout), D(inp), D(weight), D(rstd), N, C, woff, vec); LAUNCHED("rmsnorm_backward_dx_kernel"); }
    if (dweight) {
        wrote(D(dweight), (size_t)C * sizeof(float)); rmsnorm_backward_dw_kernel<<<(C + 127) / 128, 128>>>(D(dweight), D(dout), D(inp), D(rstd), N, C); LAUNCHED("rmsnorm_backward_dw_kernel"); }
}

// RoPE, rotate-half pairs (i, i + HS/2) of x (B,T,NH,HS) at positions pos0 + t; dir -1 rotates back (the backward)
// x: floats (with the bf16 copy x16 when there is one), or bf16 activations (q, k) rotated in place
template <typename XT>
__global__ void rope_kernel(XT *x, __nv_bfloat16 *x16, const float *cs, const float *sn, int B, int T, int NH, int HS, int pos0, float dir) {
    int half = HS / 2;
    FOR_EACH(e, (size_t)B * T * NH * half) {
        int i = (int)(e % half);
        size_t row = e / half; // (b, t, h)
        int t = (int)(row / NH % T);
        XT *v = x + row * HS;
        float c = cs[(size_t)(pos0 + t) * half + i], s = dir * sn[(size_t)(pos0 + t) * half + i];
        float a = to_f(v[i]), b = to_f(v[i + half]), ra = a * c - b * s, rb = b * c + a * s;
        v[i] = ra;
        v[i + half] = rb;
        if (x16) { x16[row * HS + i] = __float2bfloat16(ra); x16[row * HS + i + half] = __float2bfloat16(rb); }
    }
}
extern "C" void gpu_rope_forward(float *x, const float *cos_t, const float *sin_t, int B, int T, int NH, int HS, int pos0) {
    size_t n = (size_t)B * T * NH * HS;
    __nv_bfloat16 *x16 = act16(x);
    if (x16) {
        wrote(x16, n * sizeof(*x16));
        rope_kernel<<<blocks_for(n / 2, 256), 256>>>(x16, (__nv_bfloat16 *)NULL, D(cos_t), D(sin_t), B, T, NH, HS, pos0, 1.0f);
        LAUNCHED("rope_kernel");
        return;
    }
    float *xd = D(x);
    wrote(xd, n * sizeof(float));
    rope_kernel<<<blocks_for(n / 2, 256), 256>>>(xd, shadow(xd, n), D(cos_t), D(sin_t), B, T, NH, HS, pos0, 1.0f);
    LAUNCHED("rope_kernel");
}
extern "C" void gpu_rope_backward(float *dx, const float *cos_t, const float *sin_t, int B, int T, int NH, int HS) {
    size_t n = (size_t)B * T * NH * HS;
    float *xd = D(dx);
    wrote(xd, n * sizeof(float));
    rope_kernel<<<blocks_for(n / 2, 256), 256>>>(xd, shadow(xd, n), D(cos_t), D(sin_t), B, T, NH, HS, 0, -1.0f);
    LAUNCHED("rope_kernel");
}

// ----------------------------------------------------------------------------
// causal grouped-query attention, flash style: no T x T matrix in device memory. q, out (B,T,NH,HS),
// k, v (B,T,KVH,HS); query head h reads k/v head h / (NH/KVH). The mode (peft.c's AttnMode): the score
// s = scale q.k (1/sqrt(HS), or Gemma's query_pre_attn_scalar^-0.5), soft-capped to cap tanh(s/cap) when
// cap > 0 (Gemma 2: the backward multiplies dS by 1 - tanh^2), and a sliding window: query t sees keys
// t - window < s <= t (window 0: all s <= t); tiles wholly outside it are skipped.
// Forward: a warp per query row streams the keys in tiles of 32 (one key per lane for the scores,
// the head dimensions spread over the lanes for the output), keeping the running max m and sum l of
// the online softmax; it stores the row's log-sum-exp lse = m + log(l) for the backward.
// Backward (no atomics, so deterministic): D_t = dO_t . O_t; then one kernel for dQ (a warp per query
// row, over its keys) and one for dK, dV (a warp per key row, over its queries in every head of the
// group), both recomputing P = exp(S - lse) and dS = P (dP - D) scale, dP = dO V^T.
#define ATT_TILE 32
#define ATT_ROWS 8   // warps (rows) per block
#define ATT_MAXJ 8   // head dimensions per lane: HS <= 256
// The kernels are compiled for HS = 64 and 128 (and 8, 16, 32), where the loops unroll and the rows are
// read in 16-byte vectors (rows padded to HS + 4 floats: lanes reading different rows then hit
// different banks), and for any other HS (HST 0, rows padded to HS + 1).
template <int HST> __device__ __forceinline__ float dot_row(const float *x, const float *y, int HS) {
    float s = 0;
    if constexpr (HST && HST % 4 == 0) {
        #pragma unroll
        for (int i = 0; i < HST; i += 4) {
            float4 a = *(const float4 *)(x + i), b = *(const float4 *)(y + i);
            s += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
        }
    } else {
        for (int i = 0; i < HS; i++) s += x[i] * y[i];
    }
    return s;
}
#define ATT_PAD(HS, HST) ((HST) && (HST) % 4 == 0 ? (HS) + 4 : (HS) + 1)
// the scaled score of a raw dot product, soft-capped when cap > 0
__device__ __forceinline__ float att_score(float dot, float scale, float cap) { return cap > 0 ? cap * tanhf(dot * scale / cap) : dot * scale; }
// the first key query t sees, and the first tile (of ATT_TILE keys) a block whose first row is t0 reads
__host__ __device__ __forceinline__ int att_lo(int t, int window) { return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0; }

// rows r0 .. r0 + ATT_TILE - 1 of two head slices, x[((b*T + t) * stride + off + i] (and y), into the
// padded shared tiles xs, ys (rows of hp floats); zeros past T
__device__ __forceinline__ void att_load_rows(float *xs, float *ys, const float *x, const float *y, int b, int T, int r0, size_t stride, size_t off, int HS, int hp) {
    for (int e = threadIdx.x; e < ATT_TILE * HS; e += blockDim.x) {
        int r = e / HS, i = e % HS, t = r0 + r;
        size_t g = ((size_t)b * T + t) * stride + off + i;
        xs[r * hp + i] = t < T ? x[g] : 0.0f;
        ys[r * hp + i] = t < T ? y[g] : 0.0f;
    }
}
template <int HST>
__global__ void attention_forward_kernel(float *out, float *lse, const float *q, const float *k, const float *v, int T, int NH, int KVH, int hs, float scale, float cap, int window) {
    extern __shared__ __align__(16) float sm[];
    const int HS = HST ? HST : hs, hp = ATT_PAD(HS, HST);
    float *Ks = sm, *Vs = Ks + ATT_TILE * hp, *Qs = Vs + ATT_TILE * hp;
    int b = blockIdx.z, h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int t = blockIdx.x * ATT_ROWS + warp, kh = h / (NH / KVH);
    int t_last = min(T - 1, (int)(blockIdx.x * ATT_ROWS + ATT_ROWS - 1));
    size_t qs = (size_t)NH * HS, ks = (size_t)KVH * HS;
    float *qw = Qs + warp * HS;
    if (t < T) for (int i = lane; i < HS; i += 32) qw[i] = q[((size_t)b * T + t) * qs + (size_t)h * HS + i];
    float m = -INFINITY, l = 0, o[ATT_MAXJ];
    #pragma unroll
    for (int j = 0; j < ATT_MAXJ; j++) o[j] = 0;
    int lo = att_lo(t, window); // (every tile read holds a key lo <= s <= t of the rows that use it: the max is finite)
    for (int s0 = att_lo(blockIdx.x * ATT_ROWS, window) / ATT_TILE * ATT_TILE; s0 <= t_last; s0 += ATT_TILE) {
        __syncthreads();
        att_load_rows(Ks, Vs, k, v, b, T, s0, ks, (size_t)kh * HS, HS, hp);
        __syncthreads();
        if (t >= T || s0 > t || s0 + ATT_TILE <= lo) continue;
        int s = s0 + lane;
        float sc = s <= t && s >= lo ? att_score(dot_row<HST>(qw, Ks + lane * hp, HS), scale, cap) : -INFINITY;
        float m_new = fmaxf(m, warp_max(sc));
        float p = s <= t && s >= lo ? expf(sc - m_new) : 0.0f, corr = expf(m - m_new);
        l = l * corr + warp_sum(p);
        #pragma unroll
        for (int j = 0; j < ATT_MAXJ; j++) o[j] *= corr;
        for (int r = 0; r < ATT_TILE && s0 + r <= t; r++) {
            float pr = __shfl_sync(0xffffffffu, p, r);
            #pragma unroll
            for (int j = 0; j < ATT_MAXJ; j++) { int i = lane + 32 * j; if (i < HS) o[j] += pr * Vs[r * hp + i]; }
        }
        m = m_new;
    }
    if (t >= T) return;
    float inv = 1.0f / l;
    #pragma unroll
    for (int j = 0; j < ATT_MAXJ; j++) { int i = lane + 32 * j; if (i < HS) out[((size_t)b * T + t) * qs + (size_t)h * HS + i] = o[j] * inv; }
    if (lane == 0) lse[((size_t)b * NH + h) * T + t] = m + logf(l);
}
// ----------------------------------------------------------------------------
// the same attention on the tensor cores (--dtype bf16, head sizes 64, 96 (Phi-3) and 128), FlashAttention-2 style
// with mma.sync m16n8k16: Q, K, V, dO, P and dS rounded to bf16; scores, the softmax state and every
// accumulation in fp32. A block has 4 warps and 64 rows (queries for the forward and dQ, keys for
// dK/dV), 16 per warp; the other side comes in tiles of 64 rows, copied from bf16 copies of q, k, v
// and dO (made first) into shared memory by cp.async, two buffers deep so that the next tile's copy
// overlaps this one's math (rows padded by 16 bytes so that ldmatrix is free of bank conflicts). Scores, P and the outputs stay
// in registers: a score fragment (C of one mma) is already the A operand of the next product once
// rounded to bf16. The backward: D = rowsum(dO o O); dK, dV (recomputing S, dP), which also store dS' in
// bf16 (the causal tiles); then dQ = scale dS' K from the stored tiles. Deterministic: no atomics; with GQA,
// dK and dV of each query head go to scratch and are summed over the group in a fixed order.
#define TCR 64 // rows per block and per tile
#ifndef DKV_MIN_BLOCKS
#define DKV_MIN_BLOCKS 4 // blocks per SM that attention_backward_dkv_tc_kernel<64> is built for (at most 128 registers: 0.467 -> 0.417 ms against 3)
#endif
// start copying rows [r0, r0 + 64) of a bf16 head slice, x[((b*T + t) * stride + off + d], into s[64][HS + 8]
// by cp.async, 16 bytes a thread at a time (zeros past T)
template <int HS> __device__ __forceinline__ void tc_copy_rows(__nv_bfloat16 *s, const __nv_bfloat16 *x, int b, int T, int r0, long stride, long off) {
    for (int e = threadIdx.x; e < TCR * HS / 8; e += blockDim.x) {
        int r = e / (HS / 8), d = (e % (HS / 8)) * 8, t = r0 + r;
        bool ok = t < T;
        const __nv_bfloat16 *src = ok ? x + ((long)b * T + t) * stride + off + d : x;
        unsigned dst = (unsigned)__cvta_generic_to_shared(s + r * (HS + 8) + d);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0));
    }
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_wait_all_but_last() { asm volatile("cp.async.wait_group 1;\n" ::); }
// d (16x8, fp32) += a (16x16, bf16, row-major) b (16x8, bf16, "col"): the fragment layouts are PTX's.
// Lane l holds rows g = l/4 and g+8, columns 2(l%4) and 2(l%4)+1 of d (d[0..1] row g, d[2..3] row g+8)
__device__ __forceinline__ void mma16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void ldsm_x4(uint32_t *r, const __nv_bfloat16 *p) {
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t *r, const __nv_bfloat16 *p) {
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&h;
}
// MB row blocks of 16 a warp (the forward: MB = 2, so each fragment ldmatrix gives feeds MB products):
// s[MB][NT][4] (MB x 16 x 8NT) += columns [kk, kk+16) of the row blocks (A fragments af[mb]) times those of
// b^T, b NT*8 rows of a [.][HS+8] tile
template <int HS, int NT, int MB> __device__ __forceinline__ void mma_scores_k(float (*s)[NT][4], const uint32_t (*af)[4], const __nv_bfloat16 *b, int kk) {
    constexpr int LD = HS + 8;
    int lane = threadIdx.x % 32;
    #pragma unroll
    for (int j = 0; j < NT; j += 2) {
        uint32_t bf[4]; // n-tiles j and j+1, k halves 0 and 1
        ldsm_x4(bf, b + (j * 8 + (lane / 16) * 8 + lane % 8) * LD + kk + ((lane / 8) % 2) * 8);
        #pragma unroll
        for (int mb = 0; mb < MB; mb++) { mma16816(s[mb][j], af[mb], bf[0], bf[1]); mma16816(s[mb][j + 1], af[mb], bf[2], bf[3]); }
    }
}
// s[NT][4] (16 x 8NT) = a b^T: a the warp's 16 rows of a [.][HS+8] tile, b NT*8 rows of another
template <int HS, int NT> __device__ __forceinline__ void mma_scores(float (*s)[NT][4], const __nv_bfloat16 *a, const __nv_bfloat16 *b) {
    constexpr int LD = HS + 8;
    int lane = threadIdx.x % 32;
    #pragma unroll
    for (int j = 0; j < NT; j++) (*s)[j][0] = (*s)[j][1] = (*s)[j][2] = (*s)[j][3] = 0.0f;
    #pragma unroll
    for (int kk = 0; kk < HS; kk += 16) {
        uint32_t af[4];
        ldsm_x4(af, a + (lane % 16) * LD + kk + (lane / 16) * 8);
        mma_scores_k<HS, NT, 1>(s, &af, b, kk);
    }
}
// o[MB][HS/8][4] (MB x 16 x HS) += p[MB] (16 x 16KC each, as A fragments) times rows [0, 16KC) of a [.][HS+8] tile v
template <int HS, int KC, int MB> __device__ __forceinline__ void mma_pv(float (*o)[HS / 8][4], const uint32_t (*p)[KC][4], const __nv_bfloat16 *v) {
    constexpr int LD = HS + 8;
    int lane = threadIdx.x % 32;
    #pragma unroll
    for (int c = 0; c < KC; c++)
        #pragma unroll
        for (int d = 0; d < HS / 8; d += 2) {
            uint32_t bf[4]; // rows (k) 16c.. of v, columns (n) 8d..8d+15: transposed
            ldsm_x4_t(bf, v + (c * 16 + ((lane / 8) % 2) * 8 + lane % 8) * LD + d * 8 + (lane / 16) * 8);
            #pragma unroll
            for (int mb = 0; mb < MB; mb++) { mma16816(o[mb][d], p[mb][c], bf[0], bf[1]); mma16816(o[mb][d + 1], p[mb][c], bf[2], bf[3]); }
        }
}
// n-tiles 2c and 2c+1 of a score fragment, rounded, as the A fragment of k-chunk c
__device__ __forceinline__ void frag_to_a(uint32_t *a, const float *s0, const float *s1) {
    a[0] = pack_bf16(s0[0], s0[1]); a[1] = pack_bf16(s0[2], s0[3]);
    a[2] = pack_bf16(s1[0], s1[1]); a[3] = pack_bf16(s1[2], s1[3]);
}
#define LOG2E 1.4426950408889634f
// 2^x on the special-function unit in one instruction (exp2f adds a range fix for denormal results; P and its
// products are rounded to bf16 anyway). 2^-inf = 0
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// a score fragment of NT n-tiles, its column 0 at key c0 (lane's columns c0 + 8j + {0,1}) and its rows at
// row[0], row[1]: -inf where the key comes after the row (causal)
template <int NT> __device__ __forceinline__ void mask_after(float (*s)[4], int c0, const int *row) {
    #pragma unroll
    for (int j = 0; j < NT; j++)
        #pragma unroll
        for (int e = 0; e < 4; e++)
            if (c0 + j * 8 + (e & 1) > row[e / 2]) s[j][e] = -INFINITY;
}
// -inf where the key is at or before row - window (outside the sliding window)
template <int NT> __device__ __forceinline__ void mask_window(float (*s)[4], int c0, const int *row, int window) {
    #pragma unroll
    for (int j = 0; j < NT; j++)
        #pragma unroll
        for (int e = 0; e < 4; e++)
            if (c0 + j * 8 + (e & 1) <= row[e / 2] - window) s[j][e] = -INFINITY;
}
// the same for a transposed fragment (rows are keys, columns queries): -inf where the query comes window or more after the key
template <int NT> __device__ __forceinline__ void mask_window_t(float (*s)[4], int c0, const int *key, int window) {
    #pragma unroll
    for (int j = 0; j < NT; j++)
        #pragma unroll
        for (int e = 0; e < 4; e++)
            if (c0 + j * 8 + (e & 1) >= key[e / 2] + window) s[j][e] = -INFINITY;
}
// soft-capping of a fragment of raw dot products: s -> cap tanh(s scale / cap)
template <int NT> __device__ __forceinline__ void cap_scores(float (*s)[4], float scale, float cap) {
    #pragma unroll
    for (int j = 0; j < NT; j++)
        #pragma unroll
        for (int e = 0; e < 4; e++) s[j][e] = cap * tanhf(s[j][e] * (scale / cap));
}
// the same for a transposed fragment (rows are keys, columns queries): -inf where the query comes before the key
template <int NT> __device__ __forceinline__ void mask_before(float (*s)[4], int c0, const int *key) {
    #pragma unroll
    for (int j = 0; j < NT; j++)
        #pragma unroll
        for (int e = 0; e < 4; e++)
            if (c0 + j * 8 + (e & 1) < key[e / 2]) s[j][e] = -INFINITY;
}

// A block has 4 warps and 64 MB query rows, a warp 16 MB of them (MB row blocks of 16: each fragment of K and V
// read from shared memory feeds MB products). Keys come in tiles of 64 (K and V, two buffers deep). The warp's Q
// rows stay in registers as A fragments when HS MB <= 128 (Q passes through shared memory once, in the place of
// the second K, V tiles: 4 tiles of shared memory a block); else (HS 128, MB 2: 128 more registers would not fit)
// Q stays in shared memory, read a fragment at a time (4 + MB tiles).
// The blocks of the tensor-core kernels: (head, tile, batch row), the head fastest. Blocks go out in the order of
// their linear index, so every head's longest block (most tiles of the causal triangle) runs before any shorter
// one of its batch row: no long block is left to start at the end of the grid (the forward's SMs were idle 18% of
// the time with the tile fastest), while the row's K and V (16 MB at Llama-2-7B's shape) stay in L2
static inline dim3 attention_grid(int NH, int ntiles, int B) { return dim3(NH, ntiles, B); }
#define QREGS(HS, MB) ((HS) * (MB) <= 128)
// AM: a soft-cap or a window may be on (else Llama's plain attention, compiled without them: no more registers)
template <int HS, int MB, typename OT, bool AM> // out: floats, or bf16 activations (the attention output kept in bf16)
__global__ void __launch_bounds__(128, MB == 1 ? (HS >= 96 ? 3 : 4) : 2) attention_forward_tc_kernel(OT *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                                                    int T, int NH, int KVH, float scale, float cap, int window) {
    if constexpr (!AM) { cap = 0; window = 0; }
    constexpr int LD = HS + 8, R = TCR * MB, WR = 16 * MB; // rows a block, a warp
    constexpr bool QR = QREGS(HS, MB);
    extern __shared__ __align__(128) unsigned char sm8[];
    __nv_bfloat16 *KV = (__nv_bfloat16 *)sm8, *Qs = KV + (QR ? 2 : 4) * TCR * LD; // K, V tiles twice: [K0][V0][K1][V1]; Q after them or at K1
    int nqt = (T + R - 1) / R, qt = nqt - 1 - blockIdx.y; // the longest rows first (see attention_grid)
    int b = blockIdx.z, h = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c2 = 2 * (lane % 4);
    int kh = h / (NH / KVH), q0 = qt * R, w0 = q0 + warp * WR, last = min(q0 + R, T) - 1, nkt = last / TCR + 1, row[MB][2];
    int kt0 = window > 0 && q0 - window + 1 > 0 ? (q0 - window + 1) / TCR : 0; // the first key tile inside the block's windows
    long qs = (long)NH * HS, ks = (long)KVH * HS;
    float sl2 = cap > 0 ? LOG2E : scale * LOG2E, m[MB][2], l[MB][2], o[MB][HS / 8][4]; // (capped scores come scaled)
    #pragma unroll
    for (int mb = 0; mb < MB; mb++) {
        row[mb][0] = w0 + 16 * mb + g; row[mb][1] = row[mb][0] + 8;
        m[mb][0] = m[mb][1] = -INFINITY; l[mb][0] = l[mb][1] = 0.0f;
        #pragma unroll
        for (int d = 0; d < HS / 8; d++) o[mb][d][0] = o[mb][d][1] = o[mb][d][2] = o[mb][d][3] = 0.0f;
    }
    for (int r = 0; r < MB; r++) tc_copy_rows<HS>(Qs + r * TCR * LD, q, b, T, q0 + r * TCR, qs, (long)h * HS);
    tc_copy_rows<HS>(KV, k, b, T, kt0 * TCR, ks, (long)kh * HS);
    tc_copy_rows<HS>(KV + TCR * LD, v, b, T, kt0 * TCR, ks, (long)kh * HS);
    cp_commit();
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();
    uint32_t qf[QR ? MB : 1][QR ? HS / 16 : 1][4]; // the warp's Q rows, row block mb's columns 16c..16c+15 in qf[mb][c]
    if constexpr (QR) {
        #pragma unroll
        for (int mb = 0; mb < MB; mb++)
            #pragma unroll
            for (int c = 0; c < HS / 16; c++) ldsm_x4(qf[mb][c], Qs + (warp * WR + 16 * mb + lane % 16) * LD + c * 16 + (lane / 16) * 8);
        __syncthreads(); // Q's place is free for the second K, V tiles
    }
    for (int kt = kt0; kt < nkt; kt++) {
        int k0 = kt * TCR;
        const __nv_bfloat16 *Ks = KV + 2 * ((kt - kt0) & 1) * TCR * LD, *Vs = Ks + TCR * LD;
        if (kt + 1 < nkt) { // the next tile's copy overlaps this one's work
            __nv_bfloat16 *Kn = KV + 2 * ((kt + 1 - kt0) & 1) * TCR * LD;
            tc_copy_rows<HS>(Kn, k, b, T, k0 + TCR, ks, (long)kh * HS);
            tc_copy_rows<HS>(Kn + TCR * LD, v, b, T, k0 + TCR, ks, (long)kh * HS);
        }
        cp_commit();
        cp_wait_all_but_last();
        __syncthreads();
        if (k0 <= w0 + WR - 1 && (window == 0 || k0 + TCR - 1 > w0 - window)) { // else every key of the tile comes after the warp's rows (or before their windows)
            float s[MB][8][4];
            #pragma unroll
            for (int mb = 0; mb < MB; mb++)
                #pragma unroll
                for (int j = 0; j < 8; j++) s[mb][j][0] = s[mb][j][1] = s[mb][j][2] = s[mb][j][3] = 0.0f;
            #pragma unroll
            for (int kk = 0; kk < HS; kk += 16) {
                uint32_t af[MB][4]; // the row blocks' columns kk..kk+15 of Q
                #pragma unroll
                for (int mb = 0; mb < MB; mb++) {
                    if constexpr (QR) for (int e = 0; e < 4; e++) af[mb][e] = qf[mb][kk / 16][e];
                    else ldsm_x4(af[mb], Qs + (warp * WR + 16 * mb + lane % 16) * LD + kk + (lane / 16) * 8);
                }
                mma_scores_k<HS, 8, MB>(s, af, Ks, kk);
            }
            uint32_t p[MB][4][4];
            #pragma unroll
            for (int mb = 0; mb < MB; mb++) {
                if (cap > 0) cap_scores<8>(s[mb], scale, cap);
                if (k0 + TCR > q0) mask_after<8>(s[mb], k0 + c2, row[mb]); // the tiles on the block's diagonal (and past T)
                if (window > 0 && k0 < q0 + R - window) mask_window<8>(s[mb], k0 + c2, row[mb], window); // the tiles at the windows' start
                float mx[2] = { -INFINITY, -INFINITY };
                #pragma unroll
                for (int j = 0; j < 8; j++)
                    #pragma unroll
                    for (int e = 0; e < 4; e++) mx[e / 2] = fmaxf(mx[e / 2], s[mb][j][e]);
                #pragma unroll
                for (int i = 0; i < 2; i++) { // the new running max in log2 units (finite without a window: tile 0 holds key 0 <= row, and it comes first;
                                    // with one, -inf while a row has seen only keys before its window)
                    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                    mx[i] = fmaxf(m[mb][i], fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2)) * sl2);
                    float cr = AM && mx[i] == -INFINITY ? 1.0f : ex2(m[mb][i] - mx[i]);
                    l[mb][i] *= cr;
                    m[mb][i] = mx[i];
                    #pragma unroll
                    for (int d = 0; d < HS / 8; d++) { o[mb][d][2 * i] *= cr; o[mb][d][2 * i + 1] *= cr; }
                }
                #pragma unroll
                for (int j = 0; j < 8; j++)
                    #pragma unroll
                    for (int e = 0; e < 4; e++) { // P = 2^(S scale log2(e) - m) (0 where masked, also while m is -inf)
                        float mu = AM && m[mb][e / 2] == -INFINITY ? 0.0f : m[mb][e / 2];
                        s[mb][j][e] = ex2(fmaf(s[mb][j][e], sl2, -mu)); l[mb][e / 2] += s[mb][j][e];
                    }
                #pragma unroll
                for (int c = 0; c < 4; c++) frag_to_a(p[mb][c], s[mb][2 * c], s[mb][2 * c + 1]);
            }
            mma_pv<HS, 4, MB>(o, p, Vs);
        }
        __syncthreads(); // every warp is done with this buffer before it is refilled
    }
    #pragma unroll
    for (int mb = 0; mb < MB; mb++)
        #pragma unroll
        for (int i = 0; i < 2; i++) {
            l[mb][i] += __shfl_xor_sync(0xffffffffu, l[mb][i], 1);
            l[mb][i] += __shfl_xor_sync(0xffffffffu, l[mb][i], 2);
            if (row[mb][i] >= T) continue;
            float inv = 1.0f / l[mb][i];
            OT *orow = out + ((long)b * T + row[mb][i]) * qs + (long)h * HS + c2;
            #pragma unroll
            for (int d = 0; d < HS / 8; d++) {
                if constexpr (std::is_same<OT, float>::value) *(float2 *)(orow + d * 8) = make_float2(o[mb][d][2 * i] * inv, o[mb][d][2 * i + 1] * inv);
                else *(__nv_bfloat162 *)(orow + d * 8) = __floats2bfloat162_rn(o[mb][d][2 * i] * inv, o[mb][d][2 * i + 1] * inv);
            }
            if (c2 == 0) lse[((long)b * NH + h) * T + row[mb][i]] = m[mb][i] / LOG2E + logf(l[mb][i]);
        }
}

// dS' tiles in memory (the scratch ds): one of 64 x 64 per batch row b, head h, query tile i and key tile j <= i
// (the causal lower triangle), in that order; a tile is 16 blocks of 16 x 16, [query block][key block], and a
// block is dS'^T's A fragment of m16n8k16 as the warp of attention_backward_dkv_tc_kernel holds it (lane l's four
// registers, 16 bytes at 16l): 512 contiguous bytes a warp, out and back. ds_tile: the tile's first uint4
__device__ __forceinline__ long ds_tile(int b, int h, int i, int j, int NH, int nqt) {
    return (((long)b * NH + h) * (nqt * (nqt + 1) / 2) + i * (i + 1) / 2 + j) * (TCR * TCR / 8);
}
// D = rowsum(dO o O) into Dt (B,NH,T), from the bf16 dO that dP = dO V^T takes (so that D = rowsum(P o dP), the
// identity dS' = P (dP - D) rests on) and O (fp32 or kept in bf16). dO and O are rows of HS values, row
// r = (b T + t) NH + h at r HS: a block reads 64 consecutive rows, HS/8 lanes a row (8 values each), a warp's
// 16 rows loaded before any is summed
__device__ __forceinline__ void ld8(float *v, const __nv_bfloat16 *p) {
    uint4 u = *(const uint4 *)p;
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
    #pragma unroll
    for (int i = 0; i < 4; i++) { v[2 * i] = __low2float(h[i]); v[2 * i + 1] = __high2float(h[i]); }
}
__device__ __forceinline__ void ld8(float *v, const float *p) { ld4(v, p, 1); ld4(v + 4, p + 4, 1); }
template <int HS, typename OT>
__global__ void __launch_bounds__(128) attention_backward_d_kernel(float *Dt, const __nv_bfloat16 *dout, const OT *out, long rows, int T, int NH) {
    // lanes with values (HS/8), lanes a row (a power of 2: HS 96 has 12 of 16 busy), rows a pass, passes
    constexpr int L = HS / 8, LP = L <= 8 ? 8 : 16, RP = 32 / LP, P = 16 / RP;
    static_assert(HS == 64 || HS == 96 || HS == 128, "attention_backward_d_kernel: HS 64, 96 or 128");
    int lane = threadIdx.x % 32;
    long r0 = (long)blockIdx.x * TCR + (threadIdx.x / 32) * 16 + lane / LP, c = (lane % LP) * 8;
    bool busy = lane % LP < L;
    float x[P][8], y[P][8];
    #pragma unroll
    for (int i = 0; i < P; i++) {
        long r = r0 + i * RP;
        if (r < rows && busy) { ld8(x[i], dout + r * HS + c); ld8(y[i], out + r * HS + c); }
        else for (int e = 0; e < 8; e++) x[i][e] = y[i][e] = 0.0f;
    }
    long bt = r0 / NH;
    int h = (int)(r0 - bt * NH), b = (int)(bt / T), t = (int)(bt - (long)b * T); // row r0's head, position, batch row
    #pragma unroll
    for (int i = 0; i < P; i++) {
        float d = 0.0f;
        #pragma unroll
        for (int e = 0; e < 8; e++) d = fmaf(x[i][e], y[i][e], d);
        #pragma unroll
        for (int o = LP / 2; o > 0; o /= 2) d += __shfl_xor_sync(0xffffffffu, d, o);
        if (r0 + i * RP < rows && lane % LP == 0) Dt[((long)b * NH + h) * T + t] = d;
        for (h += RP; h >= NH; h -= NH) if (++t == T) { t = 0; b++; } // the next pass's row
    }
}

// dV = P^T dO and dK = scale dS'^T Q for a block of 64 key rows and one query head h, over the query tiles
// from the keys' on (queries in chunks of 32), dS' = P (dP - D), P = exp(S scale - lse), dP = dO V^T.
// dS', rounded to bf16 as dK's product takes it, is stored for attention_backward_dq_tc_kernel (see ds_tile).
// With G = NH/KVH = 1 the block adds to dk, dv. With GQA and cluster = 1 (Hopper) the G blocks of the group's
// heads form a cluster: each leaves its dK, dV tile in its shared memory, and block j of the cluster adds up
// rows [64j/G, 64(j+1)/G) of the G tiles, in head order, reading the others' through distributed shared memory.
// Else (cluster = 0) the block writes its head's share to dk, dv as scratch (B,T,NH,HS), summed over the group
// by attention_group_sum_kernel in the same order
template <int HS, bool AM> // AM: as the forward's
__global__ void __launch_bounds__(128, HS == 64 ? DKV_MIN_BLOCKS : 1) attention_backward_dkv_tc_kernel(float *dk, float *dv, uint4 *ds, const __nv_bfloat16 *dout, const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                                                        const float *lse, const float *Dt, int T, int NH, int KVH, float scale, float cap, int window, int cluster, int add) {
    if constexpr (!AM) { cap = 0; window = 0; }
    constexpr int LD = HS + 8;
    extern __shared__ __align__(128) unsigned char sm8[];
    __nv_bfloat16 *Ks = (__nv_bfloat16 *)sm8, *Vs = Ks + TCR * LD; // then [Q0][dO0][Q1][dO1], then lse and D of each
    float *LD0 = (float *)(Ks + 6 * TCR * LD);
    int b = blockIdx.z, h = blockIdx.x, kt = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c2 = 2 * (lane % 4), G = NH / KVH;
    int kh = h / G, k0 = kt * TCR, nqt = (T + TCR - 1) / TCR, key[2] = { k0 + warp * 16 + g, k0 + warp * 16 + g + 8 };
    int qend = window > 0 ? min(nqt, (k0 + TCR + window - 2) / TCR + 1) : nqt; // the query tiles that see a key of this tile: kt..qend-1
    long qs = (long)NH * HS, ks = (long)KVH * HS;
    float sl2 = cap > 0 ? LOG2E : scale * LOG2E, adk[HS / 8][4], adv[HS / 8][4];
    #pragma unroll
    for (int d = 0; d < HS / 8; d++) adk[d][0] = adk[d][1] = adk[d][2] = adk[d][3] = adv[d][0] = adv[d][1] = adv[d][2] = adv[d][3] = 0.0f;
    tc_copy_rows<HS>(Ks, k, b, T, k0, ks, (long)kh * HS);
    tc_copy_rows<HS>(Vs, v, b, T, k0, ks, (long)kh * HS);
    for (int qt = kt; qt < qend; qt++) {
        int q0 = qt * TCR, buf = (qt - kt) & 1;
        for (int n = qt == kt ? 0 : 1; n < 2 && qt + n < qend; n++) { // this tile (first pass only), then the next
            int bn = (buf + n) & 1, t0 = q0 + n * TCR;
            tc_copy_rows<HS>(Ks + (2 + 2 * bn) * TCR * LD, q, b, T, t0, qs, (long)h * HS);
            tc_copy_rows<HS>(Ks + (3 + 2 * bn) * TCR * LD, dout, b, T, t0, qs, (long)h * HS);
            for (int e = threadIdx.x; e < 2 * TCR; e += blockDim.x) { // lse, then D, by cp.async; queries past T: 0 (their Q and dO rows are 0 too: P^T dO and dS' add 0)
                int t = t0 + e % TCR;
                const float *src = (e < TCR ? lse : Dt) + ((long)b * NH + h) * T + (t < T ? t : 0);
                unsigned dst = (unsigned)__cvta_generic_to_shared(LD0 + bn * 2 * TCR + e);
                asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(t < T ? 4 : 0));
            }
            cp_commit();
        }
        if (qt + 1 < qend) cp_wait_all_but_last(); else asm volatile("cp.async.wait_group 0;\n" ::);
        __syncthreads();
        const __nv_bfloat16 *Qs = Ks + (2 + 2 * buf) * TCR * LD, *dOs = Qs + TCR * LD;
        const float *Ls = LD0 + buf * 2 * TCR, *Ds = Ls + TCR;
        unsigned dst = (unsigned)ds_tile(b, h, qt, kt, NH, nqt) + warp * 32 + lane; // block (0, warp) of tile (qt, kt); 32 bits: fewer registers
        #pragma unroll
        for (int qc = 0; qc < TCR; qc += 32) {
            float s[4][4], dp[4][4], l2[4][2]; // S^T and dP^T: 16 keys x 32 queries; lse in log2 units
            mma_scores<HS, 4>(&s, Ks + warp * 16 * LD, Qs + qc * LD);
            mma_scores<HS, 4>(&dp, Vs + warp * 16 * LD, dOs + qc * LD);
            if (cap > 0) cap_scores<4>(s, scale, cap);
            if (qt == kt) mask_before<4>(s, q0 + qc + c2, key); // the diagonal tile: queries before the key
            if (window > 0 && q0 + qc + 31 >= k0 + window) mask_window_t<4>(s, q0 + qc + c2, key, window); // queries past the keys' windows
            #pragma unroll
            for (int j = 0; j < 4; j++) { l2[j][0] = Ls[qc + j * 8 + c2] * LOG2E; l2[j][1] = Ls[qc + j * 8 + c2 + 1] * LOG2E; }
            #pragma unroll
            for (int j = 0; j < 4; j++)
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    int c = qc + j * 8 + c2 + (e & 1);
                    float sc = s[j][e];
                    s[j][e] = ex2(fmaf(sc, sl2, -l2[j][e & 1]));
                    dp[j][e] = s[j][e] * (dp[j][e] - Ds[c]);
                    if (cap > 0 && s[j][e] > 0.0f) dp[j][e] *= 1.0f - (sc / cap) * (sc / cap); // through cap tanh(s/cap): dS' times 1 - tanh^2
                }
            uint32_t pa[2][4], da[2][4];
            frag_to_a(pa[0], s[0], s[1]); frag_to_a(pa[1], s[2], s[3]);
            frag_to_a(da[0], dp[0], dp[1]); frag_to_a(da[1], dp[2], dp[3]);
            ds[dst + qc / 16 * 128] = make_uint4(da[0][0], da[0][1], da[0][2], da[0][3]); // query blocks qc/16 and qc/16 + 1
            ds[dst + qc / 16 * 128 + 128] = make_uint4(da[1][0], da[1][1], da[1][2], da[1][3]);
            mma_pv<HS, 2, 1>(&adv, &pa, dOs + qc * LD);
            mma_pv<HS, 2, 1>(&adk, &da, Qs + qc * LD);
        }
        __syncthreads();
    }
    #pragma unroll
    for (int d = 0; d < HS / 8; d++) { adk[d][0] *= scale; adk[d][1] *= scale; adk[d][2] *= scale; adk[d][3] *= scale; }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (cluster) {
        cooperative_groups::cluster_group cl = cooperative_groups::this_cluster();
        float *part = (float *)sm8; // [dK, dV][64 rows][HS]: the tiles are free (the loop ended with a barrier)
        #pragma unroll
        for (int i = 0; i < 2; i++)
            #pragma unroll
            for (int d = 0; d < HS / 8; d++) {
                int r = warp * 16 + g + 8 * i;
                *(float2 *)(part + r * HS + d * 8 + c2) = make_float2(adk[d][2 * i], adk[d][2 * i + 1]);
                *(float2 *)(part + (TCR + r) * HS + d * 8 + c2) = make_float2(adv[d][2 * i], adv[d][2 * i + 1]);
            }
        cl.sync();
        int n = (int)cl.num_blocks(), me = (int)cl.block_rank(), r0 = me * TCR / n, nr = (me + 1) * TCR / n - r0;
        for (int e = threadIdx.x; e < 2 * nr * HS; e += blockDim.x) {
            int w = e / (nr * HS), r = r0 + e % (nr * HS) / HS, d = e % HS, off = (w * TCR + r) * HS + d;
            float sum = 0.0f;
            for (int j = 0; j < n; j++) sum += cl.map_shared_rank(part, j)[off];
            if (k0 + r < T) { float *o = (w ? dv : dk) + ((long)b * T + k0 + r) * ks + (long)kh * HS + d; *o = add ? *o + sum : sum; }
        }
        cl.sync(); // the others' tiles stay until every block has read them
        return;
    }
#endif
    #pragma unroll
    for (int i = 0; i < 2; i++) {
        if (key[i] >= T) continue;
        if (G == 1) { // pairs of floats: 4 lanes fill a 32-byte sector
            float *rk = dk + ((long)b * T + key[i]) * ks + (long)kh * HS + c2, *rv = dv + ((long)b * T + key[i]) * ks + (long)kh * HS + c2;
            #pragma unroll
            for (int d = 0; d < HS / 8; d++) {
                float2 ok = make_float2(adk[d][2 * i], adk[d][2 * i + 1]), ov = make_float2(adv[d][2 * i], adv[d][2 * i + 1]);
                if (add) { float2 x = *(float2 *)(rk + d * 8), y = *(float2 *)(rv + d * 8); ok.x += x.x; ok.y += x.y; ov.x += y.x; ov.y += y.y; }
                *(float2 *)(rk + d * 8) = ok; *(float2 *)(rv + d * 8) = ov;
            }
        } else { // dk, dv are the scratch (B,T,NH,HS) here
            float *rk = dk + ((long)b * T + key[i]) * qs + (long)h * HS + c2, *rv = dv + ((long)b * T + key[i]) * qs + (long)h * HS + c2;
            #pragma unroll
            for (int d = 0; d < HS / 8; d++) { *(float2 *)(rk + d * 8) = make_float2(adk[d][2 * i], adk[d][2 * i + 1]); *(float2 *)(rv + d * 8) = make_float2(adv[d][2 * i], adv[d][2 * i + 1]); }
        }
    }
}
// dk[b,t,kh,:] += sum over j < G of part[b,t,kh*G + j,:], in order (part (B,T,NH,HS): the heads of a group are adjacent)
__global__ void attention_group_sum_kernel(float *dk, const float *part, size_t n, int G, int HS) {
    FOR_EACH(e, n) { // e = (b*T + t) * KVH*HS + kh*HS + d
        size_t bt_kh = e / HS, d = e % HS;
        const float *p = part + bt_kh * G * HS + d;
        float s = 0;
        for (int j = 0; j < G; j++) s += p[(size_t)j * HS];
        dk[e] += s;
    }
}
// start copying a dS' tile (see ds_tile) into shared memory by cp.async
__device__ __forceinline__ void copy_ds_tile(uint4 *s, const uint4 *src) {
    for (int e = threadIdx.x; e < TCR * TCR / 8; e += blockDim.x) {
        unsigned dst = (unsigned)__cvta_generic_to_shared(s + e);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src + e));
    }
}
// an 8 x 8 bf16 matrix of a warp's fragment (lane l: row l/4, columns 2(l%4) and 2(l%4)+1), transposed
__device__ __forceinline__ uint32_t movm_t(uint32_t x) {
    uint32_t y;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
    return y;
}
// dQ = scale sum over the key tiles j <= i of dS'_ij K_j, in order, for a block of 64 query rows (tile i): the dS'
// tiles that attention_backward_dkv_tc_kernel stored and the K tiles, copied by cp.async two tiles deep. A stored
// block holds the fragment of dS'^T (keys x queries): its four 8 x 8 matrices transposed, the middle two swapped,
// are the A fragment of dS' (queries x keys)
template <int HS>
__global__ void __launch_bounds__(128) attention_backward_dq_tc_kernel(float *dq, const uint4 *ds, const __nv_bfloat16 *k, int T, int NH, int KVH, float scale, int window, int add) {
    constexpr int LD = HS + 8, TB = TCR * TCR / 8; // uint4s of a dS' tile
    extern __shared__ __align__(128) unsigned char sm8[];
    __nv_bfloat16 *Ks = (__nv_bfloat16 *)sm8; // [K0][K1], then [dS'0][dS'1]
    uint4 *dSs = (uint4 *)(Ks + 2 * TCR * LD);
    int nqt = (T + TCR - 1) / TCR, qt = nqt - 1 - blockIdx.y; // the longest rows first (see attention_grid)
    int b = blockIdx.z, h = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c2 = 2 * (lane % 4);
    int kh = h / (NH / KVH), row[2] = { qt * TCR + warp * 16 + g, qt * TCR + warp * 16 + g + 8 };
    long qs = (long)NH * HS, ks = (long)KVH * HS;
    const uint4 *src = ds + ds_tile(b, h, qt, 0, NH, nqt); // tiles (qt, 0..qt) are adjacent
    float acc[HS / 8][4];
    #pragma unroll
    for (int d = 0; d < HS / 8; d++) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.0f;
    int kt0 = window > 0 && qt * TCR - window + 1 > 0 ? (qt * TCR - window + 1) / TCR : 0; // the first key tile inside the windows (the same tile pairs as attention_backward_dkv_tc_kernel's)
    tc_copy_rows<HS>(Ks, k, b, T, kt0 * TCR, ks, (long)kh * HS);
    copy_ds_tile(dSs, src + (long)kt0 * TB);
    cp_commit();
    for (int kt = kt0; kt <= qt; kt++) {
        int buf = (kt - kt0) & 1;
        if (kt < qt) { // the next tile's copy overlaps this one's work
            tc_copy_rows<HS>(Ks + (buf ^ 1) * TCR * LD, k, b, T, (kt + 1) * TCR, ks, (long)kh * HS);
            copy_ds_tile(dSs + (buf ^ 1) * TB, src + (long)(kt + 1) * TB);
        }
        cp_commit();
        cp_wait_all_but_last();
        __syncthreads();
        uint32_t a[4][4]; // dS' of the warp's 16 queries, keys 16c..16c+15 of the tile
        #pragma unroll
        for (int c = 0; c < 4; c++) {
            uint4 x = dSs[buf * TB + (warp * 4 + c) * 32 + lane];
            a[c][0] = movm_t(x.x); a[c][1] = movm_t(x.z); a[c][2] = movm_t(x.y); a[c][3] = movm_t(x.w);
        }
        mma_pv<HS, 4, 1>(&acc, &a, Ks + buf * TCR * LD);
        __syncthreads(); // every warp is done with this buffer before it is refilled
    }
    #pragma unroll
    for (int i = 0; i < 2; i++) {
        if (row[i] >= T) continue;
        float *r = dq + ((long)b * T + row[i]) * qs + (long)h * HS + c2;
        #pragma unroll
        for (int d = 0; d < HS / 8; d++) {
            float2 o = make_float2(scale * acc[d][2 * i], scale * acc[d][2 * i + 1]);
            if (add) { float2 x = *(float2 *)(r + d * 8); o.x += x.x; o.y += x.y; }
            *(float2 *)(r + d * 8) = o;
        }
    }
}

// the tensor-core path applies: bf16, HS 64 or 128, every operand 16-byte aligned
// q, k, v (and the output) in bf16 (act16) for the fp32 attention kernels: widened into scratch (slots 0-3)
static void *att_w32[4];
static size_t att_w32_cap[4];
static const float *att_f32(int slot, const float *x, size_t n) {
    __nv_bfloat16 *x16 = act16(x);
    if (!x16) return D(x);
    float *f = (float *)scratch_reserve(&att_w32[slot], &att_w32_cap[slot], n * sizeof(float));
    wrote(f, n * sizeof(float));
    widen_kernel<<<blocks_for(n, 256), 256>>>(f, (long)n, x16, (long)n, 1, (int)n);
    LAUNCHED("widen_kernel");
    return f;
}
// the dK/dV kernel's shared memory (6 tiles, lse and D) is the largest the tensor-core attention asks for
// (105 KB at HS 128: more than a consumer GPU's 99; those run the fp32 kernels)
static int tc_attention_ok(int HS, const void *const *ptrs, int n) {
    return bf16_matmuls && tc_attention && (HS == 64 || HS == 96 || HS == 128) && aligned16(ptrs, n) && 6 * (size_t)TCR * (HS + 8) * 2 + 4 * TCR * sizeof(float) <= smem_optin;
}
// the kernels read bf16 copies of q, k, v (and dO), made first (rows of n values, n a multiple of 8):
// the GEMM's copies (RoPE wrote q's and k's), or with PEFT_CUDA_COPIES=0 made here
static void *att16_scratch;
static size_t att16_cap;
static const __nv_bfloat16 *att_bf16(const float *x, size_t rows, int n, size_t at) {
    long ld;
    if (act16(x)) return act16(x); // q, k, v kept in bf16
    if (copies_on) return operand_copy(0, x, n, (int)rows, n, 0, &ld);
    __nv_bfloat16 *q = (__nv_bfloat16 *)att16_scratch + at;
    to_bf16_kernel<<<blocks_for(rows * (n / 8), 256), 256>>>(q, n, x, n, (int)rows, n);
    LAUNCHED("to_bf16_kernel");
    return q;
}
// Mode: attention's score scale, soft-cap and window (see the fp32 kernels)
struct Mode { float scale, cap; int window; };
template <int HS, int MB, bool AM, typename OT> static void attention_forward_tc_launch(OT *out, float *lse, const __nv_bfloat16 *q16, const __nv_bfloat16 *k16, const __nv_bfloat16 *v16,
                                                                                   int B, int T, int NH, int KVH, Mode md) {
    size_t smem = (QREGS(HS, MB) ? 4 : 4 + MB) * (size_t)TCR * (HS + 8) * 2;
    static bool set = false; // the limit is the same every call: raise it once
    if (!set) { CK(cudaFuncSetAttribute(attention_forward_tc_kernel<HS, MB, OT, AM>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem)); set = true; }
    dim3 grid = attention_grid(NH, (T + TCR * MB - 1) / (TCR * MB), B);
    attention_forward_tc_kernel<HS, MB, OT, AM><<<grid, 128, smem>>>(out, lse, q16, k16, v16, T, NH, KVH, md.scale, md.cap, md.window);
    LAUNCHED("attention_forward_tc_kernel");
}
template <int HS, bool AM> static void attention_forward_tc(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int NH, int KVH, Mode md) {
    size_t nq = (size_t)B * T * NH * HS, nk = (size_t)B * T * KVH * HS;
    copies_next_kernel();
    if (!copies_on) scratch_reserve(&att16_scratch, &att16_cap, (nq + 2 * nk) * sizeof(__nv_bfloat16));
    const __nv_bfloat16 *q16 = att_bf16(q, (size_t)B * T, NH * HS, 0), *k16 = att_bf16(k, (size_t)B * T, KVH * HS, nq), *v16 = att_bf16(v, (size_t)B * T, KVH * HS, nq + nk);
    if (act16(out)) { // the output kept in bf16
        if (att_rows == 128) attention_forward_tc_launch<HS, 2, AM>(act16(out), lse, q16, k16, v16, B, T, NH, KVH, md);
        else attention_forward_tc_launch<HS, 1, AM>(act16(out), lse, q16, k16, v16, B, T, NH, KVH, md);
    } else {
        if (att_rows == 128) attention_forward_tc_launch<HS, 2, AM>(out, lse, q16, k16, v16, B, T, NH, KVH, md);
        else attention_forward_tc_launch<HS, 1, AM>(out, lse, q16, k16, v16, B, T, NH, KVH, md);
    }
}
static void *att_scratch, *att_ds_scratch;
static size_t att_scratch_cap, att_ds_cap;
// D = rowsum(dO o O); dK, dV, storing dS'; then dQ from the stored dS'
// add: dq, dk, dv += the gradients (else they are written: the memory held zeros)
template <int HS, bool AM> static void attention_backward_tc(float *dq, float *dk, float *dv, float *Dt, const float *dout, const float *q, const float *k, const float *v,
                                                    const float *out, const float *lse, int B, int T, int NH, int KVH, int add_q, int add_kv, Mode md) {
    float scale = md.scale;
    size_t tile = (size_t)TCR * (HS + 8) * 2, ds_bytes = (size_t)TCR * TCR * sizeof(__nv_bfloat16);
    int G = NH / KVH, cluster = G > 1 && G <= 8 && cluster_ok; // a group's heads in one cluster (at most 8: the portable size)
    int nqt = (T + TCR - 1) / TCR;
    size_t nq = (size_t)B * T * NH * HS, nk = (size_t)B * T * KVH * HS;
    copies_next_kernel();
    if (!copies_on) scratch_reserve(&att16_scratch, &att16_cap, (2 * nq + 2 * nk) * sizeof(__nv_bfloat16));
    size_t ntiles = (size_t)B * NH * (nqt * (nqt + 1) / 2); // the causal tiles of dS'
    if (ntiles * ds_bytes > ((size_t)1 << 36)) { fprintf(stderr, "peft: attention's dS' scratch of %.1f GiB is over its limit of 64 GiB (B*T too large)\n", ntiles * ds_bytes / 1073741824.0); exit(1); }
    uint4 *ds = (uint4 *)scratch_reserve(&att_ds_scratch, &att_ds_cap, ntiles * ds_bytes);
    const __nv_bfloat16 *q16 = att_bf16(q, (size_t)B * T, NH * HS, 0), *do16 = att_bf16(dout, (size_t)B * T, NH * HS, nq);
    const __nv_bfloat16 *k16 = att_bf16(k, (size_t)B * T, KVH * HS, 2 * nq), *v16 = att_bf16(v, (size_t)B * T, KVH * HS, 2 * nq + nk);
    size_t smem_q = 2 * tile + 2 * ds_bytes, smem_kv = 6 * tile + 4 * TCR * sizeof(float);
    static bool set = false;
    if (!set) {
        CK(cudaFuncSetAttribute(attention_backward_dq_tc_kernel<HS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_q));
        CK(cudaFuncSetAttribute(attention_backward_dkv_tc_kernel<HS, AM>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_kv));
        set = true;
    }
    dim3 grid = attention_grid(NH, nqt, B);
    long rows = (long)B * T * NH;
    unsigned dblocks = (unsigned)((rows + TCR - 1) / TCR);
    if (act16(out)) attention_backward_d_kernel<HS><<<dblocks, 128>>>(Dt, do16, (const __nv_bfloat16 *)act16(out), rows, T, NH);
    else attention_backward_d_kernel<HS><<<dblocks, 128>>>(Dt, do16, out, rows, T, NH);
    LAUNCHED("attention_backward_d_kernel");
    float *pk = dk, *pv = dv;
    if (G > 1 && !cluster) { pk = (float *)scratch_reserve(&att_scratch, &att_scratch_cap, 2 * nq * sizeof(float)); pv = pk + nq; }
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[1];
    cfg.gridDim = grid;
    cfg.blockDim = dim3(128);
    cfg.dynamicSmemBytes = smem_kv;
    if (cluster) {
        at[0].id = cudaLaunchAttributeClusterDimension;
        at[0].val.clusterDim.x = G; at[0].val.clusterDim.y = 1; at[0].val.clusterDim.z = 1;
        cfg.attrs = at;
        cfg.numAttrs = 1;
    }
    CK(cudaLaunchKernelEx(&cfg, attention_backward_dkv_tc_kernel<HS, AM>, pk, pv, ds, (const __nv_bfloat16 *)do16, q16, k16, v16, lse, (const float *)Dt, T, NH, KVH, scale, md.cap, md.window, cluster, add_kv));
    LAUNCHED("attention_backward_dkv_tc_kernel");
    if (G > 1 && !cluster) {
        attention_group_sum_kernel<<<blocks_for(nk, 256), 256>>>(dk, pk, nk, G, HS); // (dk += : zeros or not)
        attention_group_sum_kernel<<<blocks_for(nk, 256), 256>>>(dv, pv, nk, G, HS);
        LAUNCHED("attention_group_sum_kernel");
    }
    attention_backward_dq_tc_kernel<HS><<<grid, 128, smem_q>>>(dq, (const uint4 *)ds, k16, T, NH, KVH, scale, md.window, add_q);
    LAUNCHED("attention_backward_dq_tc_kernel");
}

template <int HST> static void attention_forward_launch(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int NH, int KVH, int HS, Mode md) {
    size_t smem = (size_t)(2 * ATT_TILE * ATT_PAD(HS, HST) + ATT_ROWS * HS) * sizeof(float);
    CK(cudaFuncSetAttribute(attention_forward_kernel<HST>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((T + ATT_ROWS - 1) / ATT_ROWS, NH, B);
    attention_forward_kernel<HST><<<grid, 32 * ATT_ROWS, smem>>>(out, lse, q, k, v, T, NH, KVH, HS, md.scale, md.cap, md.window);
    LAUNCHED("attention_forward_kernel");
}
// Attention through the GEMMs, for head sizes over the tensor-core kernels' 128 (Gemma's 256) with bf16
// matmuls: a batch row and head at a time, S = Q K^T (T x T, fp32 scratch), P = softmax(score(S)) in its
// place, O = P V; the backward recomputes S, then dP = dO V^T, P and dS = P o (dP - D) score'(S) in place of
// S and dP, dV += P^T dO, dQ += dS K, dK += dS^T Q. Every product on the tensor cores (twice the causal
// FLOPs: the masked half is computed too), the T x T scratch once.
static int gemm_attention_ok(int HS) { return bf16_matmuls && tc_attention && large_gemm && HS > 128 && HS % 8 == 0; }
// row t of S (one head): keys s in [att_lo(t), t] get P = exp(x - m) / l, x = score(S), m = max x, l = sum
// exp(x - m), the rest 0; lse[t] = m + log l (as the flash kernels store it)
__global__ void attention_softmax_rows_kernel(float *s, float *lse, int T, float scale, float cap, int window) {
    __shared__ float sh[32];
    int t = blockIdx.x, lo = att_lo(t, window);
    float *row = s + (size_t)t * T, mx = -INFINITY, sum = 0;
    for (int j = lo + threadIdx.x; j <= t; j += blockDim.x) mx = fmaxf(mx, att_score(row[j], scale, cap));
    mx = block_max(mx, sh);
    for (int j = lo + threadIdx.x; j <= t; j += blockDim.x) sum += expf(att_score(row[j], scale, cap) - mx);
    sum = block_sum(sum, sh);
    for (int j = threadIdx.x; j < T; j += blockDim.x) row[j] = j >= lo && j <= t ? expf(att_score(row[j], scale, cap) - mx) / sum : 0.0f;
    if (threadIdx.x == 0) lse[t] = mx + logf(sum);
}
// the backward's row t in place: S -> P = exp(score(S) - lse), dP -> dS = P (dP - D) dscore/ddot, where
// dscore/ddot = scale (1 - (x / cap)^2) with a soft-cap x = cap tanh(dot scale / cap), else scale
__global__ void attention_probs_grad_kernel(float *s, float *dp, const float *lse, const float *Dt, int T, float scale, float cap, int window) {
    int t = blockIdx.x, lo = att_lo(t, window);
    float L = lse[t], Dr = Dt[t], *srow = s + (size_t)t * T, *drow = dp + (size_t)t * T;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float p = 0, ds = 0;
        if (j >= lo && j <= t) {
            float x = att_score(srow[j], scale, cap);
            p = expf(x - L);
            ds = p * (drow[j] - Dr) * (cap > 0 ? scale * (1 - (x / cap) * (x / cap)) : scale);
        }
        srow[j] = p; drow[j] = ds;
    }
}
static void *attg_s, *attg_dp;
static size_t attg_s_cap, attg_dp_cap;
// o (fp32, B T NH HS), lse (B NH T) from fp32 q, k, v
static void attention_forward_gemm(float *o, float *lse, const float *q, const float *k, const float *v, int B, int T, int NH, int KVH, int HS, Mode md) {
    float *S = (float *)scratch_reserve(&attg_s, &attg_s_cap, (size_t)T * T * sizeof(float));
    long qs = (long)NH * HS, ks = (long)KVH * HS;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *qh = q + (size_t)b * T * qs + (size_t)h * HS, *kh = k + (size_t)b * T * ks + (size_t)(h / (NH / KVH)) * HS, *vh = v + (kh - k);
            gemm(S, T, qh, qs, 1, kh, 1, ks, T, T, HS, 0); // S = Q K^T
            wrote(S, (size_t)T * T * sizeof(float));
            attention_softmax_rows_kernel<<<T, 256>>>(S, lse + ((size_t)b * NH + h) * T, T, md.scale, md.cap, md.window);
            LAUNCHED("attention_softmax_rows_kernel");
            gemm(o + (size_t)b * T * qs + (size_t)h * HS, qs, S, T, 1, vh, ks, 1, T, HS, T, 0); // O = P V
        }
}
// dq (+)= (add_q), dk, dv (+)= (add_kv); Dt = rowsum(dO o O) (B NH T), fp32 operands
static void attention_backward_gemm(float *dq, float *dk, float *dv, const float *Dt, const float *dout, const float *q, const float *k, const float *v,
                                    const float *lse, int B, int T, int NH, int KVH, int HS, int add_q, int add_kv, Mode md) {
    float *S = (float *)scratch_reserve(&attg_s, &attg_s_cap, (size_t)T * T * sizeof(float)), *dP = (float *)scratch_reserve(&attg_dp, &attg_dp_cap, (size_t)T * T * sizeof(float));
    long qs = (long)NH * HS, ks = (long)KVH * HS;
    int G = NH / KVH;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            size_t qo = (size_t)b * T * qs + (size_t)h * HS, ko = (size_t)b * T * ks + (size_t)(h / G) * HS;
            int acc_kv = h % G ? 1 : add_kv; // a group's first head writes (or adds to) dK and dV, the others add
            gemm(S, T, q + qo, qs, 1, k + ko, 1, ks, T, T, HS, 0);     // S = Q K^T
            gemm(dP, T, dout + qo, qs, 1, v + ko, 1, ks, T, T, HS, 0); // dP = dO V^T
            wrote(S, (size_t)T * T * sizeof(float)); wrote(dP, (size_t)T * T * sizeof(float));
            size_t r = ((size_t)b * NH + h) * T;
            attention_probs_grad_kernel<<<T, 256>>>(S, dP, lse + r, Dt + r, T, md.scale, md.cap, md.window);
            LAUNCHED("attention_probs_grad_kernel");
            gemm(dv + ko, ks, S, 1, T, dout + qo, qs, 1, T, HS, T, acc_kv); // dV += P^T dO
            gemm(dq + qo, qs, dP, T, 1, k + ko, ks, 1, T, HS, T, add_q);   // dQ += dS K
            gemm(dk + ko, ks, dP, 1, T, q + qo, qs, 1, T, HS, T, acc_kv);  // dK += dS^T Q
        }
}

// head sizes: the tensor cores take 64, 96 and 128 (bf16), and over 128 (Gemma's 256) through the GEMMs; every
// other size up to 256 runs the fp32 kernels (unrolled for 8, 16, 32, 64, 96, 128 and 256), also in bf16 mode
// (q, k, v widened to fp32 first)
extern "C" void gpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int NH, int KVH, int HS, float scale, float cap, int window) {
    if (HS > 32 * ATT_MAXJ) { fprintf(stderr, "peft: head_dim %d is over the GPU attention's limit of %d\n", HS, 32 * ATT_MAXJ); exit(1); }
    Mode md = { scale, cap, window };
    size_t nq = (size_t)B * T * NH * HS;
    float *o = DO(out), *l = D(lse); // out: floats, or kept in bf16
    __nv_bfloat16 *o16 = act16(out);
    const float *qd = DA(q), *kd = DA(k), *vd = DA(v);
    wrote(o, nq * (o16 ? sizeof(*o16) : sizeof(float))); wrote(l, (size_t)B * NH * T * sizeof(float));
    const void *ptrs[5] = { o, l, qd, kd, vd };
    if (tc_attention_ok(HS, ptrs, 5)) {
        int am = cap > 0 || window > 0;
#define ATT_FWD_TC(hs) do { if (am) attention_forward_tc<hs, true>(o, l, qd, kd, vd, B, T, NH, KVH, md); else attention_forward_tc<hs, false>(o, l, qd, kd, vd, B, T, NH, KVH, md); } while (0)
        if (HS == 64) ATT_FWD_TC(64); else if (HS == 96) ATT_FWD_TC(96); else ATT_FWD_TC(128);
#undef ATT_FWD_TC
        return;
    }
    qd = att_f32(0, q, nq); kd = att_f32(1, k, (size_t)B * T * KVH * HS); vd = att_f32(2, v, (size_t)B * T * KVH * HS);
    if (o16) o = (float *)scratch_reserve(&att_w32[3], &att_w32_cap[3], nq * sizeof(float)); // the fp32 kernels' output, rounded after
    if (gemm_attention_ok(HS)) attention_forward_gemm(o, l, qd, kd, vd, B, T, NH, KVH, HS, md);
    else switch (HS) {
    case 8: attention_forward_launch<8>(o, l, qd, kd, vd, B, T, NH, KVH, HS, md); break;
    case 16: attention_forward_launch<16>(o, l, qd, kd, vd, B, T, NH, KVH, HS, md); break;
    case 32: attention_forward_launch<32>(o, l, qd, kd, vd, B, T, NH, KVH, HS, md); break;
    case 64: attention_forward_launch<64>(o, l, qd, kd, vd, B, T, NH, KVH, HS, md); break;
    case 96: attention_forward_launch<96>(o, l, qd, kd, vd, B, T, NH, KVH, HS, md); break;
    case 128: attention_forward_launch<128>(o, l, qd, kd, vd, B, T, NH, KVH, HS, md); break;
    case 256: attention_forward_launch<256>(o, l, qd, kd, vd, B, T, NH, KVH, HS, md); break;
    default: attention_forward_launch<0>(o, l, qd, kd, vd, B, T, NH, KVH, HS, md);
    }
    if (o16) { round_rows_kernel<<<blocks_for(nq, 256), 256>>>(o16, (long)nq, o, (long)nq, 1, (int)nq); LAUNCHED("round_rows_kernel"); }
}

// D[b,h,t] = dO_t . O_t, a warp per row
__global__ void attention_rowdot_kernel(float *Dt, const float *dout, const float *out, int B, int T, int NH, int HS) {
    size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32; // (b, t, h)
    int lane = threadIdx.x % 32;
    if (row >= (size_t)B * T * NH) return;
    float s = 0;
    for (int i = lane; i < HS; i += 32) s += dout[row * HS + i] * out[row * HS + i];
    s = warp_sum(s);
    int h = (int)(row % NH), t = (int)(row / NH % T), b = (int)(row / NH / T);
    if (lane == 0) Dt[((size_t)b * NH + h) * T + t] = s;
}
// dQ: a warp per query row t of head h; lane r of a tile takes key s0 + r
template <int HST>
__global__ void attention_backward_dq_kernel(float *dq, const float *dout, const float *q, const float *k, const float *v, const float *lse, const float *Dt,
                                             int T, int NH, int KVH, int hs, float scale, float cap, int window) {
    extern __shared__ __align__(16) float sm[];
    const int HS = HST ? HST : hs, hp = ATT_PAD(HS, HST);
    float *Ks = sm, *Vs = Ks + ATT_TILE * hp, *Qs = Vs + ATT_TILE * hp, *dOs = Qs + ATT_ROWS * HS;
    int b = blockIdx.z, h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int t = blockIdx.x * ATT_ROWS + warp, kh = h / (NH / KVH);
    int t_last = min(T - 1, (int)(blockIdx.x * ATT_ROWS + ATT_ROWS - 1));
    size_t qs = (size_t)NH * HS, ks = (size_t)KVH * HS;
    float *qw = Qs + warp * HS, *dow = dOs + warp * HS;
    float L = 0, Dr = 0;
    if (t < T) {
        for (int i = lane; i < HS; i += 32) {
            qw[i] = q[((size_t)b * T + t) * qs + (size_t)h * HS + i];
            dow[i] = dout[((size_t)b * T + t) * qs + (size_t)h * HS + i];
        }
        L = lse[((size_t)b * NH + h) * T + t]; Dr = Dt[((size_t)b * NH + h) * T + t];
    }
    float acc[ATT_MAXJ];
    #pragma unroll
    for (int j = 0; j < ATT_MAXJ; j++) acc[j] = 0;
    int lo = att_lo(t, window);
    for (int s0 = att_lo(blockIdx.x * ATT_ROWS, window) / ATT_TILE * ATT_TILE; s0 <= t_last; s0 += ATT_TILE) {
        __syncthreads();
        att_load_rows(Ks, Vs, k, v, b, T, s0, ks, (size_t)kh * HS, HS, hp);
        __syncthreads();
        if (t >= T || s0 > t || s0 + ATT_TILE <= lo) continue;
        int s = s0 + lane;
        float ds = 0;
        if (s <= t && s >= lo) { // dS = P (dP - D) scale, times 1 - tanh^2 through the cap
            float sc = att_score(dot_row<HST>(qw, Ks + lane * hp, HS), scale, cap), p = expf(sc - L);
            ds = p * (dot_row<HST>(dow, Vs + lane * hp, HS) - Dr) * scale;
            if (cap > 0) ds *= 1.0f - (sc / cap) * (sc / cap);
        }
        for (int r = 0; r < ATT_TILE && s0 + r <= t; r++) {
            float dr = __shfl_sync(0xffffffffu, ds, r);
            #pragma unroll
            for (int j = 0; j < ATT_MAXJ; j++) { int i = lane + 32 * j; if (i < HS) acc[j] += dr * Ks[r * hp + i]; }
        }
    }
    if (t >= T) return;
    #pragma unroll
    for (int j = 0; j < ATT_MAXJ; j++) { int i = lane + 32 * j; if (i < HS) dq[((size_t)b * T + t) * qs + (size_t)h * HS + i] += acc[j]; }
}
// dK, dV: a warp per key row s of k/v head kh; over the heads of its group and the query tiles from s on
template <int HST>
__global__ void attention_backward_dkv_kernel(float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v, const float *lse, const float *Dt,
                                              int T, int NH, int KVH, int hs, float scale, float cap, int window) {
    extern __shared__ __align__(16) float sm[];
    const int HS = HST ? HST : hs, hp = ATT_PAD(HS, HST);
    float *Qt = sm, *dOt = Qt + ATT_TILE * hp, *Kw = dOt + ATT_TILE * hp, *Vw = Kw + ATT_ROWS * HS, *Lt = Vw + ATT_ROWS * HS, *Dtt = Lt + ATT_TILE;
    int b = blockIdx.z, kh = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32, G = NH / KVH;
    int s = blockIdx.x * ATT_ROWS + warp, s_first = blockIdx.x * ATT_ROWS;
    size_t qs = (size_t)NH * HS, ks = (size_t)KVH * HS;
    float *kw = Kw + warp * HS, *vw = Vw + warp * HS;
    if (s < T) for (int i = lane; i < HS; i += 32) { kw[i] = k[((size_t)b * T + s) * ks + (size_t)kh * HS + i]; vw[i] = v[((size_t)b * T + s) * ks + (size_t)kh * HS + i]; }
    float ak[ATT_MAXJ], av[ATT_MAXJ];
    #pragma unroll
    for (int j = 0; j < ATT_MAXJ; j++) ak[j] = av[j] = 0;
    int t_end = window > 0 ? min(T, s_first + ATT_ROWS - 1 + window) : T; // (the last query the block's keys are seen by) + 1
    for (int h = kh * G; h < (kh + 1) * G; h++)
        for (int t0 = s_first; t0 < t_end; t0 += ATT_TILE) {
            __syncthreads();
            att_load_rows(Qt, dOt, q, dout, b, T, t0, qs, (size_t)h * HS, HS, hp);
            for (int r = threadIdx.x; r < ATT_TILE; r += blockDim.x) {
                int t = t0 + r;
                Lt[r] = t < T ? lse[((size_t)b * NH + h) * T + t] : 0.0f;
                Dtt[r] = t < T ? Dt[((size_t)b * NH + h) * T + t] : 0.0f;
            }
            __syncthreads();
            if (s >= T || t0 + ATT_TILE - 1 < s || (window > 0 && t0 >= s + window)) continue;
            int t = t0 + lane;
            float p = 0, ds = 0;
            if (t >= s && t < T && (window == 0 || t < s + window)) {
                float sc = att_score(dot_row<HST>(Qt + lane * hp, kw, HS), scale, cap);
                p = expf(sc - Lt[lane]);
                ds = p * (dot_row<HST>(dOt + lane * hp, vw, HS) - Dtt[lane]) * scale;
                if (cap > 0) ds *= 1.0f - (sc / cap) * (sc / cap);
            }
            for (int r = 0; r < ATT_TILE && t0 + r < T; r++) {
                float pr = __shfl_sync(0xffffffffu, p, r), dr = __shfl_sync(0xffffffffu, ds, r);
                #pragma unroll
                for (int j = 0; j < ATT_MAXJ; j++) {
                    int i = lane + 32 * j;
                    if (i < HS) { av[j] += pr * dOt[r * hp + i]; ak[j] += dr * Qt[r * hp + i]; }
                }
            }
        }
    if (s >= T) return;
    #pragma unroll
    for (int j = 0; j < ATT_MAXJ; j++) {
        int i = lane + 32 * j;
        if (i < HS) { dk[((size_t)b * T + s) * ks + (size_t)kh * HS + i] += ak[j]; dv[((size_t)b * T + s) * ks + (size_t)kh * HS + i] += av[j]; }
    }
}
template <int HST> static void attention_backward_launch(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *q, const float *k, const float *v,
                                                         const float *lse, int B, int T, int NH, int KVH, int HS, Mode md) {
    int hp = ATT_PAD(HS, HST);
    size_t smem_q = (size_t)(2 * ATT_TILE * hp + 2 * ATT_ROWS * HS) * sizeof(float);
    CK(cudaFuncSetAttribute(attention_backward_dq_kernel<HST>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_q));
    dim3 gq((T + ATT_ROWS - 1) / ATT_ROWS, NH, B);
    attention_backward_dq_kernel<HST><<<gq, 32 * ATT_ROWS, smem_q>>>(D(dq), D(dout), D(q), D(k), D(v), D(lse), D(scratch), T, NH, KVH, HS, md.scale, md.cap, md.window);
    LAUNCHED("attention_backward_dq_kernel");
    size_t smem_kv = (size_t)(2 * ATT_TILE * hp + 2 * ATT_ROWS * HS + 2 * ATT_TILE) * sizeof(float);
    CK(cudaFuncSetAttribute(attention_backward_dkv_kernel<HST>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_kv));
    dim3 gkv((T + ATT_ROWS - 1) / ATT_ROWS, KVH, B);
    attention_backward_dkv_kernel<HST><<<gkv, 32 * ATT_ROWS, smem_kv>>>(D(dk), D(dv), D(dout), D(q), D(k), D(v), D(lse), D(scratch), T, NH, KVH, HS, md.scale, md.cap, md.window);
    LAUNCHED("attention_backward_dkv_kernel");
}
extern "C" void gpu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *q, const float *k, const float *v, const float *out,
                                       const float *lse, int B, int T, int NH, int KVH, int HS, float scale, float cap, int window) {
    if (HS > 32 * ATT_MAXJ) { fprintf(stderr, "peft: head_dim %d is over the GPU attention's limit of %d\n", HS, 32 * ATT_MAXJ); exit(1); }
    Mode md = { scale, cap, window };
    size_t rows = (size_t)B * T * NH, kvb = (size_t)B * T * KVH * HS * sizeof(float);
    int add_q = !known_zero(D(dq), rows * HS * sizeof(float)), add_kv = !known_zero(D(dk), kvb) || !known_zero(D(dv), kvb);
    wrote(D(dq), rows * HS * sizeof(float)); wrote(D(dk), kvb); wrote(D(dv), kvb);
    wrote(D(scratch), rows * sizeof(float));
    const void *ptrs[10] = { D(dq), D(dk), D(dv), D(dout), DA(q), DA(k), DA(v), D(lse), D(scratch), DA(out) };
    if (tc_attention_ok(HS, ptrs, 10)) {
#define ATT_BWD_TC(hs, am) attention_backward_tc<hs, am>(D(dq), D(dk), D(dv), D(scratch), D(dout), DA(q), DA(k), DA(v), DA(out), D(lse), B, T, NH, KVH, add_q, add_kv, md)
        int am = cap > 0 || window > 0;
        if (HS == 64 && am) ATT_BWD_TC(64, true); else if (HS == 64) ATT_BWD_TC(64, false); else if (HS == 96 && am) ATT_BWD_TC(96, true);
        else if (HS == 96) ATT_BWD_TC(96, false); else if (am) ATT_BWD_TC(128, true); else ATT_BWD_TC(128, false);
#undef ATT_BWD_TC
        return;
    }
    out = att_f32(3, out, rows * HS);
    q = att_f32(0, q, rows * HS); k = att_f32(1, k, (size_t)B * T * KVH * HS); v = att_f32(2, v, (size_t)B * T * KVH * HS);
    attention_rowdot_kernel<<<(unsigned)((rows + 7) / 8), 256>>>(D(scratch), D(dout), D(out), B, T, NH, HS);
    LAUNCHED("attention_rowdot_kernel");
    if (gemm_attention_ok(HS)) { attention_backward_gemm(D(dq), D(dk), D(dv), D(scratch), D(dout), q, k, v, D(lse), B, T, NH, KVH, HS, add_q, add_kv, md); return; }
    switch (HS) {
    case 8: attention_backward_launch<8>(dq, dk, dv, scratch, dout, q, k, v, lse, B, T, NH, KVH, HS, md); break;
    case 16: attention_backward_launch<16>(dq, dk, dv, scratch, dout, q, k, v, lse, B, T, NH, KVH, HS, md); break;
    case 32: attention_backward_launch<32>(dq, dk, dv, scratch, dout, q, k, v, lse, B, T, NH, KVH, HS, md); break;
    case 64: attention_backward_launch<64>(dq, dk, dv, scratch, dout, q, k, v, lse, B, T, NH, KVH, HS, md); break;
    case 96: attention_backward_launch<96>(dq, dk, dv, scratch, dout, q, k, v, lse, B, T, NH, KVH, HS, md); break;
    case 128: attention_backward_launch<128>(dq, dk, dv, scratch, dout, q, k, v, lse, B, T, NH, KVH, HS, md); break;
    case 256: attention_backward_launch<256>(dq, dk, dv, scratch, dout, q, k, v, lse, B, T, NH, KVH, HS, md); break;
    default: attention_backward_launch<0>(dq, dk, dv, scratch, dout, q, k, v, lse, B, T, NH, KVH, HS, md);
    }
}

// generation: one query per head against the KV cache (positions t0..pos; t0 > 0 with a window), the n
// positions in S runs of `run`: block (h, s) takes head h's s-th run. The scores a warp per 4 positions,
// lanes across HS (coalesced), into att; softmax's max m and sum l over the run; then o = sum_t e^(a_t - m) v_t
// with the warps over positions and lanes across HS (AD_HS at a time), the warps' sums added through
// shared memory. S = 1: out = o / l; else (m, l, o) go to part (NH, S, HS + 2) for the combine below
// (flash-decoding). att (NH, pos+1): scratch, left holding e^(a_t - m) of each run.
// Shared memory: q (HS), then each warp's o (nw, HS).
#define AD_THREADS 256
#define AD_HS 256
__global__ void __launch_bounds__(AD_THREADS) attention_decode_kernel(float *out, float *part, float *att, const float *q, const float *kc, const float *vc, int pos, int NH, int KVH, int HS,
                                                                      float scale, float cap, int window, int run) {
    extern __shared__ float qo[];
    __shared__ float sh[32];
    int h = blockIdx.x, s = blockIdx.y, S = gridDim.y, KD = KVH * HS, t0 = att_lo(pos, window), n = pos + 1 - t0;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32, b0 = s * run, b1 = min(n, b0 + run);
    float *a = att + (size_t)h * (pos + 1), *qs = qo, *os = qo + HS; // a[t]: position t0 + t
    const float *kh = kc + (size_t)t0 * KD + (size_t)(h / (NH / KVH)) * HS, *vh = vc + (size_t)t0 * KD + (size_t)(h / (NH / KVH)) * HS;
    for (int i = threadIdx.x; i < HS; i += blockDim.x) qs[i] = q[(size_t)h * HS + i];
    __syncthreads();
    for (int t = b0 + 4 * warp; t < b1; t += 4 * nw) { // a_t = score(q . k_t)
        float d[4] = { 0, 0, 0, 0 };
        for (int i = lane; i < HS; i += 32) {
            float qi = qs[i];
            #pragma unroll
            for (int p = 0; p < 4; p++) if (t + p < b1) d[p] += qi * kh[(size_t)(t + p) * KD + i];
        }
        #pragma unroll
        for (int p = 0; p < 4; p++) {
            float v = warp_sum(d[p]);
            if (lane == 0 && t + p < b1) a[t + p] = att_score(v, scale, cap);
        }
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int t = b0 + threadIdx.x; t < b1; t += blockDim.x) mx = fmaxf(mx, a[t]);
    mx = block_max(mx, sh);
    float sum = 0;
    for (int t = b0 + threadIdx.x; t < b1; t += blockDim.x) { float e = expf(a[t] - mx); a[t] = e; sum += e; }
    sum = block_sum(sum, sh);
    __syncthreads(); // every a[t] written
    for (int i0 = 0; i0 < HS; i0 += AD_HS) { // o (this warp's positions) = sum_t a[t] v_t
        float o[AD_HS / 32];
        #pragma unroll
        for (int k = 0; k < AD_HS / 32; k++) o[k] = 0;
        #pragma unroll 4
        for (int t = b0 + warp; t < b1; t += nw) {
            float p = a[t];
            const float *vt = vh + (size_t)t * KD + i0 + lane;
            #pragma unroll
            for (int k = 0; k < AD_HS / 32; k++) if (i0 + lane + 32 * k < HS) o[k] += p * vt[32 * k];
        }
        #pragma unroll
        for (int k = 0; k < AD_HS / 32; k++) if (i0 + lane + 32 * k < HS) os[warp * HS + i0 + lane + 32 * k] = o[k];
    }
    __syncthreads();
    float *ps = part + ((size_t)h * S + s) * (HS + 2);
    for (int i = threadIdx.x; i < HS; i += blockDim.x) {
        float v = 0;
        for (int w = 0; w < nw; w++) v += os[w * HS + i];
        if (S == 1) out[(size_t)h * HS + i] = v / sum;
        else ps[2 + i] = v;
    }
    if (S > 1 && threadIdx.x == 0) { ps[0] = mx; ps[1] = sum; }
}
// out_h = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s, M = max_s m_s: the runs put together, a block per head
__global__ void attention_decode_combine_kernel(float *out, const float *part, int HS, int S) {
    const float *p = part + (size_t)blockIdx.x * S * (HS + 2);
    float M = -INFINITY, l = 0;
    for (int s = 0; s < S; s++) M = fmaxf(M, p[(size_t)s * (HS + 2)]);
    for (int s = 0; s < S; s++) l += expf(p[(size_t)s * (HS + 2)] - M) * p[(size_t)s * (HS + 2) + 1];
    for (int i = threadIdx.x; i < HS; i += blockDim.x) {
        float v = 0;
        for (int s = 0; s < S; s++) v += expf(p[(size_t)s * (HS + 2)] - M) * p[(size_t)s * (HS + 2) + 2 + i];
        out[(size_t)blockIdx.x * HS + i] = v / l;
    }
}
static void *ad_scratch;
static size_t ad_cap;
extern "C" void gpu_attention_decode(float *out, float *att, const float *q, const float *kc, const float *vc, int pos, int NH, int KVH, int HS, float scale, float cap, int window) {
    wrote(D(out), (size_t)NH * HS * sizeof(float)); wrote(D(att), (size_t)NH * (pos + 1) * sizeof(float));
    // runs of 64 positions or more (a head's few blocks would leave most SMs idle), at most about 2 blocks an SM
    int n = pos + 1 - att_lo(pos, window), S = (n + 63) / 64, most = (2 * num_sms + NH - 1) / NH;
    if (S > most) S = most;
    int run = (n + S - 1) / S;
    S = (n + run - 1) / run;
    float *part = NULL;
    if (S > 1) {
        part = (float *)scratch_reserve(&ad_scratch, &ad_cap, (size_t)NH * S * (HS + 2) * sizeof(float));
        wrote(part, (size_t)NH * S * (HS + 2) * sizeof(float));
    }
    size_t smem = (size_t)(1 + AD_THREADS / 32) * HS * sizeof(float);
    attention_decode_kernel<<<dim3(NH, S), AD_THREADS, smem>>>(D(out), part, D(att), D(q), D(kc), D(vc), pos, NH, KVH, HS, scale, cap, window, run);
    LAUNCHED("attention_decode_kernel");
    if (S == 1) return;
    attention_decode_combine_kernel<<<NH, 128>>>(D(out), part, HS, S);
    LAUNCHED("attention_decode_combine_kernel");
}

// ----------------------------------------------------------------------------
// LoRA and DoRA

// wnorm[o] = || W[o,:] + scale * B[o,:] A ||, a block per row, in double as on the CPU
__global__ void dora_weight_norm_kernel(float *wnorm, const float *W, const float *A, const float *Bm, float scale, int r, int in) {
    __shared__ double sh[32];
    int o = blockIdx.x;
    double ss = 0;
    for (int x = threadIdx.x; x < in; x += blockDim.x) {
        double v = W[(size_t)o * in + x];
        for (int k = 0; k < r; k++) v += (double)scale * Bm[(size_t)o * r + k] * A[(size_t)k * in + x];
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    if (threadIdx.x == 0) wnorm[o] = (float)sqrt(ss);
}
extern "C" void gpu_dora_weight_norm(float *wnorm, const float *W, const float *A, const float *B, float scale, int r, int in, int out) {
    const Mirror *m = bf16_piece(W);
    const float *w = m ? weight_f32(m, W, (size_t)in * out) : D(W);
    wrote(D(wnorm), (size_t)out * sizeof(float));
    dora_weight_norm_kernel<<<out, 256>>>(D(wnorm), w, D(A), D(B), scale, r, in);
    LAUNCHED("dora_weight_norm_kernel");
}
// QDoRA: the same norm with W dequantized (the whole matrix, in the quantized matmuls' scratch)
extern "C" void gpu_dora_weight_norm_q(float *wnorm, GPU_QARGS, const float *A, const float *B, float lora_scale, int r, int in, int out) {
    float *w = dequantize_matrix(qdev(QARGS_NAMES), in, out);
    wrote(D(wnorm), (size_t)out * sizeof(float));
    dora_weight_norm_kernel<<<out, 256>>>(D(wnorm), w, D(A), D(B), lora_scale, r, in);
    LAUNCHED("dora_weight_norm_kernel");
}
// out += (g - 1) * base + g * s * t, g = mag / wnorm per column
__global__ void dora_forward_kernel(float *out, const float *base, const float *t, const float *mag, const float *wnorm, float s, int N, int OC) {
    FOR_EACH(i, (size_t)N * OC) { int o = (int)(i % OC); float g = mag[o] / wnorm[o]; out[i] += (g - 1) * base[i] + g * s * t[i]; }
}
extern "C" void gpu_dora_forward(float *out, const float *base, const float *t, const float *mag, const float *wnorm, float s, int N, int OC) {
    __nv_bfloat16 *o16 = act16(out);
    if (o16) { // bf16 activations (gate, up): through fp32 scratch
        float *o = (float *)scratch_reserve(&c16_scratch, &c16_cap, (size_t)N * OC * sizeof(float));
        widen_kernel<<<blocks_for((size_t)N * OC, 256), 256>>>(o, OC, o16, OC, N, OC);
        LAUNCHED("widen_kernel");
        dora_forward_kernel<<<blocks_for((size_t)N * OC, 256), 256>>>(o, base == out ? o : D(base), D(t), D(mag), D(wnorm), s, N, OC);
        LAUNCHED("dora_forward_kernel");
        wrote(o16, (size_t)N * OC * sizeof(*o16));
        round_rows_kernel<<<blocks_for((size_t)N * OC, 256), 256>>>(o16, OC, o, OC, N, OC);
        LAUNCHED("round_rows_kernel");
        return;
    }
    wrote(D(out), (size_t)N * OC * sizeof(float));
    dora_forward_kernel<<<blocks_for((size_t)N * OC, 256), 256>>>(D(out), D(base), D(t), D(mag), D(wnorm), s, N, OC);
    LAUNCHED("dora_forward_kernel");
}
// dmag[o] += sum_n dout * (z + s t) / wnorm: a thread per column, rows in order, in double
__global__ void dora_dmag_kernel(float *dmag, const float *dout, const float *z, const float *t, const float *wnorm, float s, int N, int OC) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) return;
    double acc = 0;
    for (int n = 0; n < N; n++) { size_t i = (size_t)n * OC + o; acc += (double)dout[i] * (z[i] + s * t[i]); }
    dmag[o] += (float)(acc / wnorm[o]);
}
// t = dout * g, z = dout * (g - 1)
__global__ void dora_split_kernel(float *t, float *z, const float *dout, const float *mag, const float *wnorm, int N, int OC) {
    FOR_EACH(i, (size_t)N * OC) { int o = (int)(i % OC); float g = mag[o] / wnorm[o]; t[i] = dout[i] * g; z[i] = dout[i] * (g - 1); }
}
extern "C" void gpu_dora_backward(float *dmag, float *t, float *z, const float *dout, const float *mag, const float *wnorm, float s, int N, int OC) {
    if (dmag) wrote(D(dmag), (size_t)OC * sizeof(float));
    wrote(D(t), (size_t)N * OC * sizeof(float)); wrote(D(z), (size_t)N * OC * sizeof(float));
    if (dmag) { dora_dmag_kernel<<<(OC + 127) / 128, 128>>>(D(dmag), D(dout), D(z), D(t), D(wnorm), s, N, OC); LAUNCHED("dora_dmag_kernel"); }
    dora_split_kernel<<<blocks_for((size_t)N * OC, 256), 256>>>(D(t), D(z), D(dout), D(mag), D(wnorm), N, OC);
    LAUNCHED("dora_split_kernel");
}

// ----------------------------------------------------------------------------
// cross-entropy: probs = softmax(logits) in place, losses[n] = -log probs[n][target] (0 where target < 0);
// a block per row
// a block per row: one read for the max m and the sum s of exp(x - m) together (each thread keeps its own
// pair, rescaling s when its max grows; the block combines the pairs), then one pass p = exp(x - m) / s;
// 16-byte loads and stores when vec (V a multiple of 4, rows aligned)
__global__ void crossentropy_forward_kernel(float *losses, float *probs, const int *targets, int V, int vec) {
    __shared__ float sh[32];
    float *p = probs + (size_t)blockIdx.x * V;
    float m = -INFINITY, s = 0.0f;
    if (vec)
        for (int i = threadIdx.x; i < V / 4; i += blockDim.x) {
            float4 x = ((const float4 *)p)[i];
            float mx = fmaxf(fmaxf(x.x, x.y), fmaxf(x.z, x.w));
            if (mx > m) { s *= expf(m - mx); m = mx; }
            s += expf(x.x - m) + expf(x.y - m) + expf(x.z - m) + expf(x.w - m);
        }
    else
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            float x = p[i];
            if (x > m) { s *= expf(m - x); m = x; }
            s += expf(x - m);
        }
    float mx = block_max(m, sh);
    float sum = block_sum(m == -INFINITY ? 0.0f : s * expf(m - mx), sh);
    float inv = 1.0f / sum;
    if (vec)
        for (int i = threadIdx.x; i < V / 4; i += blockDim.x) {
            float4 x = ((const float4 *)p)[i];
            ((float4 *)p)[i] = make_float4(expf(x.x - mx) * inv, expf(x.y - mx) * inv, expf(x.z - mx) * inv, expf(x.w - mx) * inv);
        }
    else
        for (int i = threadIdx.x; i < V; i += blockDim.x) p[i] = expf(p[i] - mx) * inv;
    __syncthreads(); // p[t] was normalized by another thread
    if (threadIdx.x == 0) {
        int t = targets[blockIdx.x];
        losses[blockIdx.x] = t >= 0 ? -(float)log(fmax((double)p[t], 1e-300)) : 0.0f;
    }
}
// dlogits = (probs - onehot(target)) * dloss, in place; rows with target < 0 get 0. Blocks over rows, each
// row scaled 16 bytes at a time when vec, then its target's entry less dloss
__global__ void crossentropy_backward_kernel(float *d, const int *targets, float dloss, int N, int V, int vec) {
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        int t = targets[n];
        float *r = d + (size_t)n * V, f = t < 0 ? 0.0f : dloss;
        if (vec)
            for (int i = threadIdx.x; i < V / 4; i += blockDim.x) { float4 x = ((float4 *)r)[i]; ((float4 *)r)[i] = make_float4(x.x * f, x.y * f, x.z * f, x.w * f); }
        else
            for (int i = threadIdx.x; i < V; i += blockDim.x) r[i] *= f;
        __syncthreads(); // r[t] was scaled by another thread
        if (threadIdx.x == 0 && t >= 0) r[t] -= dloss;
    }
}
extern "C" void gpu_crossentropy_forward(float *losses, float *probs, const int *targets, int N, int V) {
    float *p = D(probs);
    wrote(D(losses), (size_t)N * sizeof(float)); wrote(p, (size_t)N * V * sizeof(float));
    crossentropy_forward_kernel<<<N, 512>>>(D(losses), p, D(targets), V, V % 4 == 0 && ((uintptr_t)p & 15) == 0);
    LAUNCHED("crossentropy_forward_kernel");
}
extern "C" void gpu_crossentropy_backward(float *dlogits, const int *targets, float dloss, int N, int V) {
    float *d = D(dlogits);
    wrote(d, (size_t)N * V * sizeof(float));
    crossentropy_backward_kernel<<<N < 8 * num_sms ? N : 8 * num_sms, 256>>>(d, D(targets), dloss, N, V, V % 4 == 0 && ((uintptr_t)d & 15) == 0);
    LAUNCHED("crossentropy_backward_kernel");
}

// the scratch above, at the end of a command
extern "C" void gpu_release(void) {
    if (profile) prof_flush();
    if (profile && nprof) {
        double total = 0;
        for (int i = 0; i < nprof; i++) total += prof[i].secs;
        fprintf(stderr, "GPU profile (PEFT_CUDA_PROFILE: CUDA events between kernels): %.3f s\n", total);
        for (int i = 0; i < nprof; i++) {
            fprintf(stderr, "  %-32s %8ld calls %9.4f s %5.1f%%", prof[i].name, prof[i].calls, prof[i].secs, 100 * prof[i].secs / total);
            if (prof[i].flops > 0) fprintf(stderr, "  %.1f TFLOP/s", prof[i].flops / prof[i].secs * 1e-12);
            fprintf(stderr, "\n");
        }
        nprof = 0;
    }
    void **bufs[22] = { &qscratch, &sum_scratch, &splitk_scratch, &tc_scratch[0], &tc_scratch[1], &tc_scratch[2], &tc_scratch[3], &att_scratch, &att_ds_scratch, &att16_scratch, &lora_scratch_t, &w32_scratch, &c16_scratch,
                        &a32_scratch[0], &a32_scratch[1], &att_w32[0], &att_w32[1], &att_w32[2], &att_w32[3], &attg_s, &attg_dp, NULL };
    size_t *caps[22] = { &qscratch_cap, &sum_scratch_cap, &splitk_cap, &tc_cap[0], &tc_cap[1], &tc_cap[2], &tc_cap[3], &att_scratch_cap, &att_ds_cap, &att16_cap, &lora_scratch_cap, &w32_cap, &c16_cap,
                         &a32_cap[0], &a32_cap[1], &att_w32_cap[0], &att_w32_cap[1], &att_w32_cap[2], &att_w32_cap[3], &attg_s_cap, &attg_dp_cap, NULL };
    for (int i = 0; bufs[i]; i++) { gpu_free(*bufs[i]); *bufs[i] = NULL; *caps[i] = 0; }
    forget_all();
    gpu_free(check_count);
    check_count = NULL;
}

// ----------------------------------------------------------------------------
// several GPUs (make CUDA=1 NCCL=1): one process per GPU; NCCL sums over the ranks. Rank 0 listens on
// MASTER_ADDR:MASTER_PORT, the others connect and are handed NCCL's id. The sockets then stay open as
// a watch: a rank that fails sends 'E' (its error line is printed), one that finishes sends 'D'; a
// socket that closes without either is a rank that died. Either way every rank ends, with one line
// from the rank that saw it first, and exit status 1. Rank 0 relays: it holds a socket to each other.

#ifdef PEFT_NCCL
#include <nccl.h>
#include <stdarg.h>
#include <pthread.h>
#include <poll.h>
#include <unistd.h>
#include <errno.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netdb.h>

static double now_sec(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }
static ncclComm_t nccl_comm;
static int dist_me, dist_n;             // rank, world size
static int *peer_fd;                    // rank 0: the socket of rank k at [k]; the others: rank 0's at [0]
static FILE *dist_err;                  // where this rank's error lines go
static volatile int local_done, all_done;
static double *host_sum_buf;            // device room for gpu_dist_sum_host
static pthread_t watcher;

static void dist_die(const char *fmt, ...) { // an error of this rank: one line, then exit (the atexit hook tells the others)
    va_list ap;
    va_start(ap, fmt);
    if (dist_me) fprintf(dist_err, "peft: rank %d: ", dist_me); else fprintf(dist_err, "peft: ");
    vfprintf(dist_err, fmt, ap);
    fprintf(dist_err, "\n");
    va_end(ap);
    fflush(dist_err);
    exit(1);
}
// PEFT_NCCL_FAIL=R:N: rank R's Nth NCCL call fails as a lost peer would make it fail (tests)
static long nk_calls, nk_fail_at;
static ncclResult_t nk_injected(void) { return nk_fail_at && ++nk_calls == nk_fail_at ? ncclSystemError : ncclSuccess; }
#define NK(call) do { ncclResult_t r_ = nk_injected(); if (r_ == ncclSuccess) r_ = (call); \
    if (r_ != ncclSuccess) dist_die("NCCL: %s (%s)%s", ncclGetErrorString(r_), #call, nk_fail_at && nk_calls == nk_fail_at ? ", injected by PEFT_NCCL_FAIL" : ""); } while (0)

static int send_all(int fd, const void *buf, size_t n) {
    const char *p = (const char *)buf;
    while (n) { ssize_t k = send(fd, p, n, MSG_NOSIGNAL); if (k < 0 && errno == EINTR) continue; if (k <= 0) return -1; p += k; n -= (size_t)k; }
    return 0;
}
static int recv_all(int fd, void *buf, size_t n, int timeout_ms) {
    char *p = (char *)buf;
    while (n) {
        struct pollfd pf = { fd, POLLIN, 0 };
        int r = poll(&pf, 1, timeout_ms);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        ssize_t k = recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k; n -= (size_t)k;
    }
    return 0;
}
static void tell(int fd, char msg) { if (fd >= 0) send_all(fd, &msg, 1); }
static void tell_all(char msg) { for (int k = 0; k < (dist_me ? 1 : dist_n); k++) tell(peer_fd[k], msg); }
// the watch, in its own thread: ends this process when another rank failed or died
static void *watch(void *arg) {
    (void)arg;
    int n = dist_me ? 1 : dist_n;
    int *done = (int *)calloc((size_t)n, sizeof(int));
    struct pollfd *pf = (struct pollfd *)calloc((size_t)n, sizeof(struct pollfd));
    for (;;) {
        int open_fds = 0;
        for (int k = 0; k < n; k++) { pf[k].fd = done[k] ? -1 : peer_fd[k]; pf[k].events = POLLIN; pf[k].revents = 0; open_fds += pf[k].fd >= 0; }
        if (dist_me == 0 && local_done && !open_fds) { tell_all('A'); all_done = 1; break; } // everyone finished
        if (poll(pf, (nfds_t)n, 100) <= 0) continue;
        for (int k = 0; k < n; k++) {
            if (pf[k].fd < 0 || !pf[k].revents) continue;
            char msg = 0;
            ssize_t got = recv(pf[k].fd, &msg, 1, 0);
            if (got < 0 && errno == EINTR) continue;
            if (got == 1 && msg == 'D') { done[k] = 1; continue; }             // rank k finished
            if (got == 1 && msg == 'A') { all_done = 1; free(done); free(pf); return NULL; } // (ranks > 0) all finished
            int from = dist_me ? 0 : k;
            if (got != 1 || msg != 'E') { // a closed socket: that rank ended without a word
                if (dist_me) fprintf(dist_err, "peft: rank %d: ", dist_me); else fprintf(dist_err, "peft: ");
                fprintf(dist_err, "rank %d ended without finishing (killed, or its host went away); stopping all %d ranks\n", from, dist_n);
                fflush(dist_err);
            }
            if (dist_me == 0) for (int j = 1; j < dist_n; j++) if (j != k) tell(peer_fd[j], 'E');
            _exit(1);  // no atexit: the others are told already, and the main thread may be inside NCCL
        }
    }
    free(done); free(pf);
    return NULL;
}
static void dist_atexit(void) { if (!all_done) tell_all('E'); } // exit() before the end: an error line was printed

extern "C" int gpu_dist_init(int rank, int world, const char *addr, int port, FILE *errf, char *err, size_t errlen) {
    dist_me = rank; dist_n = world; dist_err = errf;
    const char *ts = getenv("PEFT_DIST_TIMEOUT");
    int timeout_ms = (ts && atoi(ts) > 0 ? atoi(ts) : 300) * 1000;
    peer_fd = (int *)malloc((size_t)world * sizeof(int));
    for (int k = 0; k < world; k++) peer_fd[k] = -1;
    ncclUniqueId id;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    if (rank == 0) {
        NK(ncclGetUniqueId(&id));
        struct addrinfo hints, *ai = NULL;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_INET; hints.ai_socktype = SOCK_STREAM; hints.ai_flags = AI_PASSIVE;
        if (getaddrinfo(NULL, portstr, &hints, &ai)) { snprintf(err, errlen, "cannot listen on port %d", port); return -1; }
        int ls = socket(ai->ai_family, ai->ai_socktype, 0), one = 1;
        setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ls < 0 || bind(ls, ai->ai_addr, ai->ai_addrlen) || listen(ls, world)) {
            snprintf(err, errlen, "rank 0 cannot listen on port %d: %s (MASTER_PORT chooses another)", port, strerror(errno));
            freeaddrinfo(ai); return -1;
        }
        freeaddrinfo(ai);
        for (int got = 1; got < world;) {
            struct pollfd pf = { ls, POLLIN, 0 };
            if (poll(&pf, 1, timeout_ms) <= 0) { snprintf(err, errlen, "%d of %d ranks met on port %d within %d s (PEFT_DIST_TIMEOUT)", got, world, port, timeout_ms / 1000); close(ls); return -1; }
            int fd = accept(ls, NULL, NULL);
            if (fd < 0) continue;
            int hello[3]; // 'peft', its rank, its world size
            if (recv_all(fd, hello, sizeof(hello), timeout_ms) || hello[0] != 0x74666570) { close(fd); continue; } // not one of ours
            if (hello[2] != world || hello[1] < 1 || hello[1] >= world || peer_fd[hello[1]] >= 0) {
                snprintf(err, errlen, "a process came with rank %d of %d; this run has ranks 0..%d, each once", hello[1], hello[2], world - 1);
                close(fd); close(ls); return -1;
            }
            peer_fd[hello[1]] = fd; got++;
        }
        close(ls);
        for (int k = 1; k < world; k++) if (send_all(peer_fd[k], &id, sizeof(id))) { snprintf(err, errlen, "rank %d went away during the rendezvous", k); return -1; }
    } else {
        struct addrinfo hints, *ai = NULL;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_INET; hints.ai_socktype = SOCK_STREAM;
        if (getaddrinfo(addr, portstr, &hints, &ai)) { snprintf(err, errlen, "MASTER_ADDR %s: unknown host", addr); return -1; }
        double t0 = now_sec();
        int fd = -1;
        while (fd < 0) { // rank 0 may not listen yet
            fd = socket(ai->ai_family, ai->ai_socktype, 0);
            if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
            if (fd >= 0) close(fd);
            fd = -1;
            if (now_sec() - t0 > timeout_ms / 1000.0) { snprintf(err, errlen, "rank 0 did not answer at %s:%d within %d s (PEFT_DIST_TIMEOUT)", addr, port, timeout_ms / 1000); freeaddrinfo(ai); return -1; }
            usleep(100000);
        }
        freeaddrinfo(ai);
        int hello[3] = { 0x74666570, rank, world };
        if (send_all(fd, hello, sizeof(hello)) || recv_all(fd, &id, sizeof(id), timeout_ms)) { snprintf(err, errlen, "rank 0 at %s:%d closed the rendezvous (see its error)", addr, port); close(fd); return -1; }
        peer_fd[0] = fd;
    }
    for (int k = 0; k < world; k++) if (peer_fd[k] >= 0) { int one = 1; setsockopt(peer_fd[k], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); }
    atexit(dist_atexit);
    if (pthread_create(&watcher, NULL, watch, NULL)) { snprintf(err, errlen, "cannot start the watch thread"); return -1; }
    const char *inject = getenv("PEFT_NCCL_FAIL");
    int fail_rank;
    long fail_n;
    if (inject && sscanf(inject, "%d:%ld", &fail_rank, &fail_n) == 2 && fail_rank == rank && fail_n > 0) nk_fail_at = fail_n;
    NK(ncclCommInitRank(&nccl_comm, world, id, rank));
    CK(cudaMalloc(&host_sum_buf, 64 * sizeof(double)));
    int v = 0;
    ncclGetVersion(&v);
    fprintf(stderr, "data parallel: %d ranks (one GPU each), NCCL %d.%d.%d; gradients summed every step\n", world, v / 10000, v / 100 % 100, v % 100);
    return 0;
}
extern "C" void gpu_dist_sum(float *x, size_t n) {
    if (!n) return;
    wrote(D(x), n * sizeof(float));
    NK(ncclAllReduce(D(x), D(x), n, ncclFloat32, ncclSum, nccl_comm, 0)); // on the stream of the kernels
}
extern "C" void gpu_dist_sum_host(double *v, int n) {
    if (n > 64) dist_die("gpu_dist_sum_host: %d numbers (at most 64)", n);
    CK(cudaMemcpy(host_sum_buf, v, (size_t)n * sizeof(double), cudaMemcpyHostToDevice));
    NK(ncclAllReduce(host_sum_buf, host_sum_buf, (size_t)n, ncclFloat64, ncclSum, nccl_comm, 0));
    CK(cudaMemcpy(v, host_sum_buf, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost));
}
// --shard: slot = the ranks' chunks side by side, rank r's from mine (in place when mine is slot + r*chunk), on stream s.
// The gathers and the gradients' all-reduce share the one communicator; every rank issues them in the same order.
static int shard_gather(void *slot, const void *mine, size_t chunk, cudaStream_t s) {
    if (dist_n < 2) return 0;
    NK(ncclAllGather(mine, slot, chunk, ncclUint8, nccl_comm, s));
    return 1;
}
extern "C" void gpu_dist_finish(int ok) {
    if (!ok) return; // the atexit hook says so
    CK(cudaDeviceSynchronize());
    if (dist_me) tell(peer_fd[0], 'D'); else local_done = 1;
    while (!all_done) usleep(1000); // the watch sees everyone's 'D' (rank 0), or rank 0's 'A'
    pthread_join(watcher, NULL);
    ncclCommDestroy(nccl_comm);
    for (int k = 0; k < dist_n; k++) if (peer_fd[k] >= 0) close(peer_fd[k]);
}
#endif
#ifndef PEFT_NCCL
static int shard_gather(void *slot, const void *mine, size_t chunk, cudaStream_t s) { (void)slot; (void)mine; (void)chunk; (void)s; return 0; } // one rank: its chunk is the layer
#endif
