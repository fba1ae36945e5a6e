// bench/bandwidth.c: the machine's streaming read bandwidth, the limit of generation (which reads every
// weight once per token). bench/bench.py builds it (cc -O3 -march=native -fopenmp) and runs it on 1 and
// 2 threads (OMP_NUM_THREADS).
//   bandwidth MIB [REPS]   reads a buffer of MIB MiB (choose it larger than the caches) REPS times (default
//                          10), the threads splitting it, every other read with a software prefetch 16 KiB
//                          ahead, and prints the best and the median in GB/s
// The read is an XOR of 64-bit words into independent vector sums: the loop does nothing but load.
#define _POSIX_C_SOURCE 200809L // clock_gettime under -std=c99
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__)
#include <immintrin.h>
#endif

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
// the XOR of a[0..n), n a multiple of 64, in 4 vector sums (or 8 plain ones); with ahead > 0, a software
// prefetch that many bytes ahead of every cache line read (as peft.c's generation does)
#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
#else
#define PREFETCH(p) ((void)(p))
#endif
static uint64_t xor_words(const uint64_t *a, size_t n, size_t ahead) {
#if defined(__AVX512F__)
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 32) {
        if (ahead) { PREFETCH((const char *)(a + i) + ahead); PREFETCH((const char *)(a + i + 8) + ahead); PREFETCH((const char *)(a + i + 16) + ahead); PREFETCH((const char *)(a + i + 24) + ahead); }
        s0 = _mm512_xor_si512(s0, _mm512_loadu_si512(a + i)); s1 = _mm512_xor_si512(s1, _mm512_loadu_si512(a + i + 8));
        s2 = _mm512_xor_si512(s2, _mm512_loadu_si512(a + i + 16)); s3 = _mm512_xor_si512(s3, _mm512_loadu_si512(a + i + 24));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_xor_si512(_mm512_xor_si512(s0, s1), _mm512_xor_si512(s2, s3)));
#elif defined(__AVX2__)
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 16) {
        if (ahead) { PREFETCH((const char *)(a + i) + ahead); PREFETCH((const char *)(a + i + 8) + ahead); }
        s0 = _mm256_xor_si256(s0, _mm256_loadu_si256((const __m256i *)(a + i))); s1 = _mm256_xor_si256(s1, _mm256_loadu_si256((const __m256i *)(a + i + 4)));
        s2 = _mm256_xor_si256(s2, _mm256_loadu_si256((const __m256i *)(a + i + 8))); s3 = _mm256_xor_si256(s3, _mm256_loadu_si256((const __m256i *)(a + i + 12)));
    }
    s0 = _mm256_xor_si256(_mm256_xor_si256(s0, s1), _mm256_xor_si256(s2, s3));
    return (uint64_t)(_mm256_extract_epi64(s0, 0) ^ _mm256_extract_epi64(s0, 1) ^ _mm256_extract_epi64(s0, 2) ^ _mm256_extract_epi64(s0, 3));
#else
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (size_t i = 0; i < n; i += 8) {
        if (ahead) PREFETCH((const char *)(a + i) + ahead);
        s0 ^= a[i]; s1 ^= a[i + 1]; s2 ^= a[i + 2]; s3 ^= a[i + 3]; s4 ^= a[i + 4]; s5 ^= a[i + 5]; s6 ^= a[i + 6]; s7 ^= a[i + 7];
    }
    return s0 ^ s1 ^ s2 ^ s3 ^ s4 ^ s5 ^ s6 ^ s7;
#endif
}
static int cmp_double(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: bandwidth MIB [REPS]\n"); return 1; }
    size_t mib = (size_t)atol(argv[1]), n = mib * 1048576 / sizeof(uint64_t) / 64 * 64;
    int reps = argc > 2 ? atoi(argv[2]) : 10, nthreads = 1;
    if (n == 0 || reps < 1 || reps > 1000) { fprintf(stderr, "bandwidth: bad arguments\n"); return 1; }
    uint64_t *a = NULL, sink = 0;
    if (posix_memalign((void **)&a, 64, n * sizeof(uint64_t))) { fprintf(stderr, "bandwidth: cannot allocate %zu MiB\n", mib); return 1; } // whole cache lines
    double *gbs = (double *)malloc((size_t)reps * sizeof(double));
    for (int r = -1; r < reps; r++) { // r = -1: the threads touch their own part first (page faults, placement)
        double t0 = now();
        #pragma omp parallel reduction(^:sink)
        {
            int tid = 0, nt = 1;
#ifdef _OPENMP
            tid = omp_get_thread_num(); nt = omp_get_num_threads();
#endif
            if (tid == 0) nthreads = nt;
            size_t lo = n * tid / nt / 64 * 64, hi = n * (tid + 1) / nt / 64 * 64;
            if (r < 0) for (size_t i = lo; i < hi; i++) a[i] = i * 0x9E3779B97F4A7C15ull;
            sink ^= xor_words(a + lo, hi - lo, (size_t)(r % 2) * 16384); // odd reads: prefetch 16 KiB ahead
        }
        if (r >= 0) gbs[r] = n * sizeof(uint64_t) / (now() - t0) / 1e9;
    }
    double best_plain = 0, best_pf = 0;
    for (int r = 0; r < reps; r++) { if (r % 2) { if (gbs[r] > best_pf) best_pf = gbs[r]; } else if (gbs[r] > best_plain) best_plain = gbs[r]; }
    qsort(gbs, (size_t)reps, sizeof(double), cmp_double);
    printf("read bandwidth: %zu MiB on %d thread(s): best %.1f GB/s, median %.1f GB/s over %d reads (best plain %.1f, with prefetch %.1f) (%llx)\n",
           mib, nthreads, gbs[reps - 1], gbs[reps / 2], reps, best_plain, best_pf, (unsigned long long)(sink & 1));
    free(a); free(gbs);
    return 0;
}
