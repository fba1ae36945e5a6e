// gemm_wgmma.cu -- Hopper (sm_90a) bf16 GEMM for peft.c:  C (fp32, MxN, ldc) [+]= A (bf16, MxK, lda) * B (bf16, NxK, ldb)^T
//
// Design: TMA (cp.async.bulk.tensor.2d, 128B swizzle) -> STAGES-deep smem ring with full/empty mbarriers ->
// 2 consumer warpgroups doing wgmma.mma_async m64nBNk16 (fp32 accumulators in registers) -> direct fp32
// global stores with bounds checks. 384 threads: warpgroup 0 = producer (one elected thread issues TMA),
// warpgroups 1,2 = consumers (rows 0-63 and 64-127 of the 128 x BN tile). Persistent grid (one CTA per SM),
// tiles handed out in a grouped order for L2 reuse.
//
// Build (release):  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -Wall,-Wextra -o gemm_wgmma gemm_wgmma.cu
// Debug timeouts :  add -DDEBUG_TIMEOUT  (bounded mbarrier spins that report which barrier hung, then trap)
// cuBLAS compare :  add -DWITH_CUBLAS -lcublasLt -lcublas
// Kernel-only use:  add -DGEMM_WGMMA_NO_MAIN (drops the test program)
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda.h>          // CUtensorMap & enums (types only; libcuda is not linked)
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

namespace wgk {

constexpr int BM = 128;          // rows of C per CTA tile (2 consumer warpgroups x 64)
constexpr int BK = 64;           // K elements per stage = 128 bytes of bf16 = one 128B swizzle row
constexpr int NTHREADS = 384;    // 3 warpgroups
constexpr int GROUP_M = 16;      // tile-order grouping (in M tiles) for L2 reuse
constexpr int PRODUCER_REGS = 40;
constexpr int CONSUMER_REGS = 232;   // 128*40 + 256*232 = 64512 <= 65536

template <int BN, int STAGES>
struct Cfg {
    static_assert(BN == 128 || BN == 256, "BN must be 128 or 256 (TMA box rows <= 256)");
    static constexpr int A_BYTES = BM * BK * 2;               // 16 KB
    static constexpr int B_BYTES = BN * BK * 2;               // 16 or 32 KB
    static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;     // expect_tx per stage
    static constexpr int BAR_BYTES = 2 * STAGES * 8;
    static constexpr int SMEM_BYTES = 1024 /*alignment slack*/ + STAGES * STAGE_BYTES + BAR_BYTES;
    static_assert(SMEM_BYTES <= 227 * 1024, "too much shared memory");
};

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

#ifdef DEBUG_TIMEOUT
// Host-mapped record of the first timeout (read by the host after the trap, since device printf output may
// be lost when the context dies). Layout: [0]=flag(1) [1]=kind [2]=stage [3]=parity [4]=blockIdx [5]=threadIdx
// [6]=tile [7]=ktile
__device__ volatile unsigned int *g_dbg_record = nullptr;
__device__ __forceinline__ uint64_t globaltimer_ns() {
    uint64_t t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}
// No device printf: any function call (vprintf) in this kernel makes ptxas serialize all wgmma instructions
// (C7510) and, when it sat in the consumer path, drop setmaxnreg (C7507) -- the debug build would then test a
// different instruction schedule. Instead the first timing-out thread writes this host-mapped record and traps;
// the host prints it when the launch reports the error (see dump_debug_record()).
__device__ __forceinline__ void record_timeout(int kind, int stage, uint32_t parity, int tile, int kt) {
    volatile unsigned int *r = g_dbg_record;
    if (r && atomicCAS((unsigned int *)r, 0u, 1u) == 0u) {
        r[1] = kind; r[2] = stage; r[3] = parity; r[4] = blockIdx.x; r[5] = threadIdx.x; r[6] = tile; r[7] = kt;
        __threadfence_system();
    }
}
#endif

// kind: 0 = full barrier (consumer waits for TMA data), 1 = empty barrier (producer waits for consumers)
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity, int kind, int stage, int tile, int kt) {
#ifdef DEBUG_TIMEOUT
    if (mbar_try_wait(bar, parity)) return;
    const uint64_t t0 = globaltimer_ns();
    while (!mbar_try_wait(bar, parity)) {
        if (globaltimer_ns() - t0 > 4000000000ull) {  // 4 s
            record_timeout(kind, stage, parity, tile, kt);
#ifdef DEBUG_TIMEOUT_PRINTF  // optional: device printf too (makes ptxas serialize wgmma, C7510)
            printf("DEBUG_TIMEOUT: block %d thread %d: %s barrier stage %d parity %u (tile %d, ktile %d) timed out\n",
                   blockIdx.x, threadIdx.x, kind == 0 ? "FULL" : "EMPTY", stage, parity, tile, kt);
#endif
            __trap();
        }
    }
#else
    (void)kind; (void)stage; (void)tile; (void)kt;
    while (!mbar_try_wait(bar, parity)) {}
#endif
}

// 2-D TMA tile load: box (BK x rows) at coordinates (k0 = inner/K, r0 = row) into smem, completing on mbarrier.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap *map, int k0, int r0, uint32_t bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
        ::"r"(dst), "l"((uint64_t)map), "r"(k0), "r"(r0), "r"(bar)
        : "memory");
}
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

// wgmma m64n128k16, bf16 x bf16 -> fp32, A and B from shared memory (K-major both), D += A*B^T.
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
        "%64, %65, 1, 1, 1, 0, 0;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db)
        : "memory");
}

// wgmma m64n256k16, bf16 x bf16 -> fp32, A and B from shared memory (K-major both), D += A*B^T.
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
        "%128, %129, 1, 1, 1, 0, 0;\n"
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
        : "l"(da), "l"(db)
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

template <int BN>
__device__ __forceinline__ void wgmma_tile(float (&d)[BN / 2], uint64_t da, uint64_t db);
template <>
__device__ __forceinline__ void wgmma_tile<128>(float (&d)[64], uint64_t da, uint64_t db) { wgmma_m64n128k16(d, da, db); }
template <>
__device__ __forceinline__ void wgmma_tile<256>(float (&d)[128], uint64_t da, uint64_t db) { wgmma_m64n256k16(d, da, db); }

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
__device__ __forceinline__ void store2(float *__restrict__ C, long ldc, int M, int N, int row, int col, float v0, float v1,
                                       int accumulate) {
    if (row >= M || col >= N) return;
    float *p = C + (long)row * ldc + col;
    if (col + 1 < N && ((reinterpret_cast<uintptr_t>(p) & 7) == 0)) {
        float2 v = make_float2(v0, v1);
        if (accumulate) {
            const float2 o = *reinterpret_cast<const float2 *>(p);
            v.x += o.x;
            v.y += o.y;
        }
        *reinterpret_cast<float2 *>(p) = v;
    } else {
        if (accumulate) v0 += p[0];
        p[0] = v0;
        if (col + 1 < N) {
            if (accumulate) v1 += p[1];
            p[1] = v1;
        }
    }
}

template <int BN, int STAGES>
__global__ void __launch_bounds__(NTHREADS, 1)
gemm_wgmma_kernel(const __grid_constant__ CUtensorMap tmA, const __grid_constant__ CUtensorMap tmB, float *__restrict__ C,
                  long ldc, int M, int N, int K, int accumulate) {
    using cfg = Cfg<BN, STAGES>;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    // Align the tile area to 1024 bytes (128B-swizzle atom = 8 rows x 128 B; descriptor base offset stays 0).
    const uint32_t raw = smem_u32(smem_raw);
    const uint32_t base = (raw + 1023u) & ~1023u;
    const uint32_t sA0 = base;                                  // STAGES x [128 rows x 128 B]
    const uint32_t sB0 = base + STAGES * cfg::A_BYTES;          // STAGES x [BN rows x 128 B]
    const uint32_t bar0 = base + STAGES * cfg::STAGE_BYTES;     // full[STAGES], then empty[STAGES]
#define FULL_BAR(s) (bar0 + 8u * (uint32_t)(s))
#define EMPTY_BAR(s) (bar0 + 8u * (uint32_t)(STAGES + (s)))

    const int tiles_m = (M + BM - 1) / BM;
    const int tiles_n = (N + BN - 1) / BN;
    const int num_tiles = tiles_m * tiles_n;
    const int k_tiles = (K + BK - 1) / BK;

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
            int stage = 0;
            uint32_t phase = 0;
            for (int t = blockIdx.x; t < num_tiles; t += gridDim.x) {
                int tm, tn;
                tile_coords(t, tiles_m, tiles_n, tm, tn);
                for (int kt = 0; kt < k_tiles; ++kt) {
                    // First pass over the ring: waiting on parity 1 of a fresh barrier returns at once.
                    mbar_wait(EMPTY_BAR(stage), phase ^ 1u, 1, stage, t, kt);
                    mbar_arrive_expect_tx(FULL_BAR(stage), (uint32_t)cfg::STAGE_BYTES);
                    // Full box bytes are always delivered (out-of-bounds parts are zero-filled and counted).
                    tma_load_2d(sA0 + stage * cfg::A_BYTES, &tmA, kt * BK, tm * BM, FULL_BAR(stage));
                    tma_load_2d(sB0 + stage * cfg::B_BYTES, &tmB, kt * BK, tn * BN, FULL_BAR(stage));
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
                mbar_wait(FULL_BAR(stage), phase, 0, stage, t, kt);
                const uint64_t da = make_desc_sw128(sA0 + stage * cfg::A_BYTES + cw * 64 * 128);
                const uint64_t db = make_desc_sw128(sB0 + stage * cfg::B_BYTES);
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < BK / 16; ++kk) wgmma_tile<BN>(d, da + 2 * kk, db + 2 * kk);  // +32 B per k16
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
            const int row0 = tm * BM + cw * 64 + warp * 16 + lane / 4;
            const int col0 = tn * BN + 2 * (lane % 4);
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) {
                store2(C, ldc, M, N, row0, col0 + 8 * j, d[4 * j + 0], d[4 * j + 1], accumulate);
                store2(C, ldc, M, N, row0 + 8, col0 + 8 * j, d[4 * j + 2], d[4 * j + 3], accumulate);
            }
        }
    }
#undef FULL_BAR
#undef EMPTY_BAR
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
        if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !p) {
            fprintf(stderr, "gemm_wgmma: cannot get cuTensorMapEncodeTiled (err %s, query result %d)\n",
                    cudaGetErrorString(e), (int)q);
            return nullptr;
        }
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
        fprintf(stderr, "gemm_wgmma: cuTensorMapEncodeTiled failed (CUresult %d) rows=%d K=%d ld=%ld box_rows=%d ptr=%p\n",
                (int)r, rows, K, ld, box_rows, (const void *)ptr);
        return cudaErrorInvalidValue;
    }
    return cudaSuccess;
}

static int num_sms() {
    static int n = 0;
    if (!n) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = 132;
    }
    return n;
}

// Returns cudaSuccess or the first error (argument check, tensor-map encode, attribute, launch).
// max_ctas > 0 caps the persistent grid (testing the multi-tile-per-CTA path); 0 = one CTA per SM.
template <int BN, int STAGES>
cudaError_t gemm_wgmma_t(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M, int N,
                         int K, int accumulate, cudaStream_t stream, int max_ctas = 0) {
    using cfg = Cfg<BN, STAGES>;
    if (M <= 0 || N <= 0) return cudaSuccess;
    if (K <= 0) {  // empty sum: C = 0 (or unchanged when accumulating)
        if (accumulate) return cudaSuccess;
        return cudaMemset2DAsync(c, (size_t)ldc * sizeof(float), 0, (size_t)N * sizeof(float), (size_t)M, stream);
    }
    if (lda % 8 || ldb % 8 || lda < K || ldb < K || ldc < N || ((uintptr_t)a & 15) || ((uintptr_t)b & 15) ||
        ((uintptr_t)c & 3)) {
        fprintf(stderr, "gemm_wgmma: bad arguments (lda=%ld ldb=%ld ldc=%ld K=%d N=%d a=%p b=%p c=%p)\n", lda, ldb, ldc, K, N,
                (const void *)a, (const void *)b, (void *)c);
        return cudaErrorInvalidValue;
    }
    CUtensorMap ta, tb;
    cudaError_t e = make_tmap(&ta, a, lda, M, K, BM);
    if (e != cudaSuccess) return e;
    e = make_tmap(&tb, b, ldb, N, K, BN);
    if (e != cudaSuccess) return e;
    static bool attr_set = false;  // one per template instance
    if (!attr_set) {
        e = cudaFuncSetAttribute(gemm_wgmma_kernel<BN, STAGES>, cudaFuncAttributeMaxDynamicSharedMemorySize, cfg::SMEM_BYTES);
        if (e != cudaSuccess) return e;
        attr_set = true;
    }
    const long tiles = (long)((M + BM - 1) / BM) * ((N + BN - 1) / BN);
    int grid = num_sms();
    if (max_ctas > 0 && max_ctas < grid) grid = max_ctas;
    if (tiles < grid) grid = (int)tiles;
    gemm_wgmma_kernel<BN, STAGES><<<grid, NTHREADS, cfg::SMEM_BYTES, stream>>>(ta, tb, c, ldc, M, N, K, accumulate);
    return cudaGetLastError();
}

}  // namespace wgk

// Public entry point (the signature peft_cuda.cu expects). BN = 256 variant; errors are fatal.
void gemm_wgmma(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M, int N, int K,
                int accumulate, cudaStream_t stream) {
    cudaError_t e = wgk::gemm_wgmma_t<256, 4>(c, ldc, a, lda, b, ldb, M, N, K, accumulate, stream);
    if (e != cudaSuccess) {
        fprintf(stderr, "gemm_wgmma failed: %s (M=%d N=%d K=%d)\n", cudaGetErrorString(e), M, N, K);
        exit(1);
    }
}

// =================================================================================================
// Test program
// =================================================================================================
#ifndef GEMM_WGMMA_NO_MAIN
#include <vector>
#include <algorithm>
#include <string>
#ifdef WITH_CUBLAS
#include <cublas_v2.h>
#endif

#ifdef DEBUG_TIMEOUT
static unsigned int *h_dbg = nullptr;
static void dump_debug_record() {
    if (h_dbg && h_dbg[0]) {
        fprintf(stdout, "DEBUG_TIMEOUT record: %s barrier, stage %u, waited parity %u, block %u, thread %u, tile %d, ktile %d\n",
                h_dbg[1] == 0 ? "FULL (consumer waiting for TMA data)" : "EMPTY (producer waiting for consumers)", h_dbg[2],
                h_dbg[3], h_dbg[4], h_dbg[5], (int)h_dbg[6], (int)h_dbg[7]);
    }
}
#else
static void dump_debug_record() {}
#endif

static const char *g_ctx = "";  // what the program was doing (printed on a CUDA error)
#define CK(x)                                                                                                     \
    do {                                                                                                          \
        cudaError_t e_ = (x);                                                                                     \
        if (e_ != cudaSuccess) {                                                                                  \
            printf("CUDA ERROR at %s:%d in [%s]: %s -> %s (%d)\n", __FILE__, __LINE__, g_ctx, #x, cudaGetErrorString(e_), \
                   (int)e_);                                                                                      \
            dump_debug_record();                                                                                  \
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
    float acc = 0.f;
    for (int k0 = 0; k0 < K; k0 += 16) {
        const int ar = blockIdx.y * 16 + ty, br = blockIdx.x * 16 + ty;
        sa[ty][tx] = (ar < M && k0 + tx < K) ? __bfloat162float(a[(long)ar * lda + k0 + tx]) : 0.f;
        sb[ty][tx] = (br < N && k0 + tx < K) ? __bfloat162float(b[(long)br * ldb + k0 + tx]) : 0.f;
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 16; ++kk) acc = fmaf(sa[ty][kk], sb[tx][kk], acc);
        __syncthreads();
    }
    if (row < M && col < N) {
        float *p = c + (long)row * ldc + col;
        *p = accumulate ? *p + acc : acc;
    }
}
static void ref_gemm(float *c, long ldc, const __nv_bfloat16 *a, long lda, const __nv_bfloat16 *b, long ldb, int M, int N, int K,
                     int acc) {
    dim3 g((N + 15) / 16, (M + 15) / 16), blk(16, 16);
    ref_gemm_kernel<<<g, blk>>>(c, ldc, a, lda, b, ldb, M, N, K, acc);
    CK(cudaGetLastError());
}

static int grid_for(long n) { long g = (n + 255) / 256; return (int)std::min(g, 132L * 32); }
static void fill_bf16(__nv_bfloat16 *p, long rows, long cols, long ld, unsigned long long seed) {
    fill_bf16_kernel<<<grid_for(rows * ld), 256>>>(p, rows, cols, ld, seed);
    CK(cudaGetLastError());
}
static void fill_f32(float *p, long n, unsigned long long seed, int poison) {
    fill_f32_kernel<<<grid_for(n), 256>>>(p, n, seed, poison);
    CK(cudaGetLastError());
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
struct Variant {
    const char *name;
    GemmFn fn;
    int bn;
};
static Variant variants[] = {
    {"wgmma_bn256_s4", wgk::gemm_wgmma_t<256, 4>, 256},
    {"wgmma_bn128_s6", wgk::gemm_wgmma_t<128, 6>, 128},
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
    CK(cudaMalloc(&a, (size_t)s.M * s.lda * 2));
    CK(cudaMalloc(&b, (size_t)s.N * s.ldb * 2));
    CK(cudaMalloc(&cbuf, (size_t)csz * 4));
    CK(cudaMalloc(&rbuf, (size_t)csz * 4));
    float *c = cbuf + s.coff, *r = rbuf + s.coff;
    if (s.probe < 0) {
        fill_bf16(a, s.M, s.K, s.lda, seed * 3 + 1);
        fill_bf16(b, s.N, s.K, s.ldb, seed * 3 + 2);
    } else {
        fill_probe_kernel<<<grid_for((long)s.M * s.lda), 256>>>(a, s.M, s.K, s.lda, s.probe == 0);
        CK(cudaGetLastError());
        fill_probe_kernel<<<grid_for((long)s.N * s.ldb), 256>>>(b, s.N, s.K, s.ldb, s.probe == 1);
        CK(cudaGetLastError());
    }
    // reference
    fill_f32(rbuf, csz, seed * 3 + 3, !s.acc);
    ref_gemm(r, s.ldc, a, s.lda, b, s.ldb, s.M, s.N, s.K, s.acc);
    CK(cudaDeviceSynchronize());
    std::vector<float> hr((size_t)s.M * s.ldc), hc((size_t)s.M * s.ldc);
    CK(cudaMemcpy(hr.data(), r, hr.size() * 4, cudaMemcpyDeviceToHost));
    for (int v = 0; v < NVAR; ++v) {
        fill_f32(cbuf, csz, seed * 3 + 3, !s.acc);  // same initial C as the reference (poison NaN or random)
        CK(cudaDeviceSynchronize());
        CK(variants[v].fn(c, s.ldc, a, s.lda, b, s.ldb, s.M, s.N, s.K, s.acc, 0, s.max_ctas));
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(hc.data(), c, hc.size() * 4, cudaMemcpyDeviceToHost));
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
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(hc.data(), c, hc.size() * 4, cudaMemcpyDeviceToHost));
        CmpResult cr = compare("cublas", hc.data(), hr.data(), s.M, s.N, s.ldc, 256, -1);
        printf("%s %-16s %s  max_rel_err=%.3g  (cuBLAS vs reference: checks the reference)\n", cr.pass ? "pass" : "MISMATCH",
               "cublas", desc, cr.max_err);
        if (!cr.pass) n_cub_fail++;
    }
#endif
    CK(cudaFree(a));
    CK(cudaFree(b));
    CK(cudaFree(cbuf));
    CK(cudaFree(rbuf));
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

// ---- speed ----
static float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}
template <class F>
static float time_ms(F &&launch, int warm = 5, int reps = 20) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < warm; ++i) launch();
    CK(cudaDeviceSynchronize());
    std::vector<float> t;
    for (int i = 0; i < reps; ++i) {
        CK(cudaEventRecord(e0));
        launch();
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms);
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return median(t);
}

static void speed() {
    printf("== speed (median of 20 after 5 warm-ups, cudaEvent per run; TFLOP/s = 2MNK/t) ==\n");
    const int shapes[][3] = {{8192, 2048, 2048}, {8192, 5632, 2048}, {8192, 2048, 5632}, {8192, 32000, 2048},
                             {4096, 4096, 4096}, {4096, 11008, 4096}, {4096, 4096, 11008}};
    const int NS = sizeof(shapes) / sizeof(shapes[0]);
    std::vector<std::vector<double>> tf(NS, std::vector<double>(NVAR + 1, 0));
    std::vector<double> chk(NS, 0);
    for (int si = 0; si < NS; ++si) {
        const int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        char desc[128];
        snprintf(desc, sizeof desc, "speed M=%d N=%d K=%d", M, N, K);
        g_ctx = desc;
        __nv_bfloat16 *a, *b;
        float *c, *r;
        CK(cudaMalloc(&a, (size_t)M * K * 2));
        CK(cudaMalloc(&b, (size_t)N * K * 2));
        CK(cudaMalloc(&c, (size_t)M * N * 4));
        CK(cudaMalloc(&r, (size_t)M * N * 4));
        fill_bf16(a, M, K, K, 777 + si);
        fill_bf16(b, N, K, K, 999 + si);
        ref_gemm(r, N, a, K, b, K, M, N, K, 0);
        CK(cudaDeviceSynchronize());
        std::vector<float> hr((size_t)M * N), hc((size_t)M * N);
        CK(cudaMemcpy(hr.data(), r, hr.size() * 4, cudaMemcpyDeviceToHost));
        const double flops = 2.0 * M * N * (double)K;
        for (int v = 0; v < NVAR; ++v) {
            fill_f32(c, (long)M * N, 0, 1);
            float ms = time_ms([&] { CK(variants[v].fn(c, N, a, K, b, K, M, N, K, 0, 0, 0)); });
            CK(cudaDeviceSynchronize());
            CK(cudaMemcpy(hc.data(), c, hc.size() * 4, cudaMemcpyDeviceToHost));
            CmpResult cr = compare(variants[v].name, hc.data(), hr.data(), M, N, N, variants[v].bn, -1);
            tf[si][v] = flops / (ms * 1e-3) / 1e12;
            printf("%-16s M=%5d N=%5d K=%5d  %8.3f ms  %7.1f TFLOP/s  check vs ref: %s (max_rel_err %.3g)\n", variants[v].name, M, N, K, ms,
                   tf[si][v], cr.pass ? "ok" : "WRONG", cr.max_err);
            if (!cr.pass) n_fail++;
            fflush(stdout);
        }
#ifdef WITH_CUBLAS
        {
            float ms = time_ms([&] { cublas_gemm(c, N, a, K, b, K, M, N, K, 0); });
            CK(cudaDeviceSynchronize());
            tf[si][NVAR] = flops / (ms * 1e-3) / 1e12;
            printf("%-16s M=%5d N=%5d K=%5d  %8.3f ms  %7.1f TFLOP/s\n", "cublasGemmEx", M, N, K, ms, tf[si][NVAR]);
        }
#endif
        CK(cudaFree(a));
        CK(cudaFree(b));
        CK(cudaFree(c));
        CK(cudaFree(r));
    }
    printf("\n== summary (TFLOP/s) ==\n%-20s", "M x N x K");
    for (int v = 0; v < NVAR; ++v) printf(" %16s", variants[v].name);
#ifdef WITH_CUBLAS
    printf(" %14s", "cublas");
    for (int v = 0; v < NVAR; ++v) printf("  %s/cublas", variants[v].bn == 256 ? "bn256" : "bn128");
#endif
    printf("\n");
    for (int si = 0; si < NS; ++si) {
        char sh[64];
        snprintf(sh, sizeof sh, "%dx%dx%d", shapes[si][0], shapes[si][1], shapes[si][2]);
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
    CK(cudaSetDevice(dev));
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, dev));
    int rt = 0, drv = 0;
    CK(cudaRuntimeGetVersion(&rt));
    CK(cudaDriverGetVersion(&drv));
    printf("device: %s, cc %d.%d, %d SMs, smem/block optin %zu, L2 %d MB; runtime %d driver %d%s%s\n", p.name, p.major, p.minor,
           p.multiProcessorCount, p.sharedMemPerBlockOptin, p.l2CacheSize >> 20, rt, drv,
#ifdef DEBUG_TIMEOUT
           " [DEBUG_TIMEOUT build]",
#else
           "",
#endif
#ifdef WITH_CUBLAS
           " [WITH_CUBLAS]"
#else
           ""
#endif
    );
    if (p.major != 9) printf("WARNING: this kernel needs sm_90a (Hopper); the launches will fail on cc %d.%d\n", p.major, p.minor);
    {
        cudaFuncAttributes fa;
        CK(cudaFuncGetAttributes(&fa, wgk::gemm_wgmma_kernel<256, 4>));
        printf("kernel bn256_s4: %d regs, %zu B local, dyn smem %d\n", fa.numRegs, fa.localSizeBytes, wgk::Cfg<256, 4>::SMEM_BYTES);
        CK(cudaFuncGetAttributes(&fa, wgk::gemm_wgmma_kernel<128, 6>));
        printf("kernel bn128_s6: %d regs, %zu B local, dyn smem %d\n", fa.numRegs, fa.localSizeBytes, wgk::Cfg<128, 6>::SMEM_BYTES);
    }
#ifdef DEBUG_TIMEOUT
    {
        CK(cudaHostAlloc(&h_dbg, 64, cudaHostAllocMapped));
        memset(h_dbg, 0, 64);
        unsigned int *d_dbg = nullptr;
        CK(cudaHostGetDevicePointer(&d_dbg, h_dbg, 0));
        CK(cudaMemcpyToSymbol(wgk::g_dbg_record, &d_dbg, sizeof(d_dbg)));
    }
#endif
#ifdef WITH_CUBLAS
    CKB(cublasCreate(&g_cublas));
#endif
    if (mode == "all" || mode == "correct") correctness();
    if (mode == "all" || mode == "speed") speed();
    printf("RESULT: %s (%d wgmma checks failed)\n", n_fail ? "FAIL" : "OK", n_fail);
    return n_fail ? 1 : 0;
}
#endif  // GEMM_WGMMA_NO_MAIN
