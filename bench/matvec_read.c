// bench/matvec_read.c: which read pattern and which memory let generation's fp32 matvec reach the memory
// bandwidth (issue 33; docs/PERFORMANCE_CPU.md). It reads a llama2.c legacy .bin (bench/cache/stories15M_legacy.bin)
// the way one token of generation does (per layer wq, wk, wv, wo, w1, w3, w2, then the classifier: every
// weight once) with each of these kernels on each of these copies of the weights:
//   kernels  4row+pf  4 rows at a time against one load of x, software prefetch 16 KiB ahead (peft.c before issue 33)
//            4row     the same without the prefetch
//            1row+pf  one row at a time in 4 vector sums, prefetch 16 KiB ahead
//            1row     one row at a time in 4 vector sums (peft.c's matvec_rows since issue 33)
//            plain    one row at a time, one sum, the compiler's vectorization (what llama2.c's matmul is)
//   memory   file     the file mmap()ed read-only (the page cache, as run.c reads it)
//            thp      read() into anonymous memory advised MADV_HUGEPAGE (as peft.c loads it)
//            4k       read() into anonymous memory advised MADV_NOHUGEPAGE
//            thp64    as thp, the weights 64-byte aligned (in the others they start 28 bytes into a page, as in the file)
// in rounds, every (kernel, memory) pair once a round in turn, so the host's drifts hit all alike; a pair's
// time in a round is the fastest of TOKENS sweeps (the one least disturbed by other processes), timed on
// the thread's CPU clock on one thread (on a busy machine wall time would count the waits for a core; the
// other processes still share the caches and the memory) and by the wall clock on more. Rows split over the threads as matvec_forward does
// (blocks of 16 rows, a static schedule). Prints GB/s per pair: the median over rounds and the range.
//   cc -O3 -march=native -fopenmp -std=c99 bench/matvec_read.c -o bench/cache/matvec_read -lm
//   OMP_NUM_THREADS=1 taskset -c 0 bench/cache/matvec_read bench/cache/stories15M_legacy.bin [ROUNDS] [TOKENS]
#define PEFT_NO_MAIN
#include "../peft.c"
#include <fcntl.h>

#ifndef PEFT_SIMD
int main(void) { printf("matvec_read: built without SIMD (needs AVX2+FMA, AVX-512 or NEON)\n"); return 0; }
#else
#define AHEAD 16384
typedef void (*Kernel)(float *out, const float *x, const float *w, int C, int o0, int o1);
static void rows4(float *out, const float *x, const float *w, int C, int o0, int o1, int pf) {
    int o = o0;
    for (; o + 4 <= o1; o += 4) {
        const float *w0 = w + (size_t)o * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
        vfloat a0 = v_zero(), a1 = v_zero(), a2 = v_zero(), a3 = v_zero();
        int c = 0;
        for (; c + VLEN <= C; c += VLEN) {
            if (pf) { const char *p = (const char *)(w0 + c) + AHEAD; PREFETCH(p); PREFETCH(p + (size_t)C * 4); PREFETCH(p + (size_t)C * 8); PREFETCH(p + (size_t)C * 12); }
            vfloat xv = v_load(x + c);
            a0 = v_fma(xv, v_load(w0 + c), a0); a1 = v_fma(xv, v_load(w1 + c), a1);
            a2 = v_fma(xv, v_load(w2 + c), a2); a3 = v_fma(xv, v_load(w3 + c), a3);
        }
        float s0 = v_sum(a0), s1 = v_sum(a1), s2 = v_sum(a2), s3 = v_sum(a3);
        for (; c < C; c++) { s0 += x[c] * w0[c]; s1 += x[c] * w1[c]; s2 += x[c] * w2[c]; s3 += x[c] * w3[c]; }
        out[o] = s0; out[o + 1] = s1; out[o + 2] = s2; out[o + 3] = s3;
    }
    if (o < o1) matvec_rows_naive(out, x, w, C, o, o1);
}
static void rows4_pf(float *out, const float *x, const float *w, int C, int o0, int o1) { rows4(out, x, w, C, o0, o1, 1); }
static void rows4_nopf(float *out, const float *x, const float *w, int C, int o0, int o1) { rows4(out, x, w, C, o0, o1, 0); }
static void row1_pf(float *out, const float *x, const float *w, int C, int o0, int o1) {
    for (int o = o0; o < o1; o++) {
        const float *wr = w + (size_t)o * C;
        vfloat a0 = v_zero(), a1 = v_zero(), a2 = v_zero(), a3 = v_zero();
        int c = 0;
        for (; c + 4 * VLEN <= C; c += 4 * VLEN) {
            for (int b = 0; b < 4 * VLEN * 4; b += 64) PREFETCH((const char *)(wr + c) + AHEAD + b); // each cache line of the step
            a0 = v_fma(v_load(x + c), v_load(wr + c), a0); a1 = v_fma(v_load(x + c + VLEN), v_load(wr + c + VLEN), a1);
            a2 = v_fma(v_load(x + c + 2 * VLEN), v_load(wr + c + 2 * VLEN), a2); a3 = v_fma(v_load(x + c + 3 * VLEN), v_load(wr + c + 3 * VLEN), a3);
        }
        for (; c + VLEN <= C; c += VLEN) a0 = v_fma(v_load(x + c), v_load(wr + c), a0);
        float val = v_sum(v_add(v_add(a0, a1), v_add(a2, a3)));
        for (; c < C; c++) val += x[c] * wr[c];
        out[o] = val;
    }
}
static void plain(float *out, const float *x, const float *w, int C, int o0, int o1) {
    for (int o = o0; o < o1; o++) {
        const float *wr = w + (size_t)o * C;
        float val = 0;
        #pragma omp simd reduction(+:val)
        for (int c = 0; c < C; c++) val += wr[c] * x[c];
        out[o] = val;
    }
}
static const char *knames[] = { "4row+pf", "4row", "1row+pf", "1row", "plain" };
static Kernel kernels[] = { rows4_pf, rows4_nopf, row1_pf, matvec_rows, plain };
#define NK 5
static const char *mnames[] = { "file", "thp", "4k", "thp64" };
#define NM 4

static void matvec(Kernel k, float *out, const float *x, const float *w, int C, int OC) {
    int nb = (OC + 15) / 16;
    if (num_threads() == 1) { k(out, x, w, C, 0, OC); return; }
    #pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++) k(out, x, w, C, b * 16, b * 16 + 16 < OC ? b * 16 + 16 : OC);
}
// the seconds of a sweep: the thread's CPU time on one thread, else the wall clock
static double sweep_clock(void) {
    if (num_threads() > 1) return time_sec();
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static int cmp_d(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: matvec_read LEGACY.bin [ROUNDS] [TOKENS]\n"); return 1; }
    int rounds = argc > 2 ? atoi(argv[2]) : 9, tokens = argc > 3 ? atoi(argv[3]) : 9;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 1; }
    off_t fsize = lseek(fd, 0, SEEK_END);
    int hdr[7];
    if (fsize < 28 || pread(fd, hdr, 28, 0) != 28) { fprintf(stderr, "%s: short file\n", argv[1]); return 1; }
    int C = hdr[0], H = hdr[1], L = hdr[2], V = abs(hdr[5]), S = hdr[6], HS = C / hdr[3];
    size_t C2 = (size_t)C * C, HC = (size_t)H * C, need = 28 + 4 * ((size_t)V * C * (hdr[5] < 0 ? 2 : 1) + (size_t)L * (4 * C2 + 3 * HC + 2 * C) + C + (size_t)S * HS);
    if (hdr[3] != hdr[4] || (size_t)fsize != need) { fprintf(stderr, "%s: not a legacy .bin with n_kv_heads == n_heads (%lld bytes, expected %zu)\n", argv[1], (long long)fsize, need); return 1; }
    char *base[NM];
    base[0] = mmap(NULL, (size_t)fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    for (int m = 1; m < NM; m++) {
        size_t page = 2 << 20; // 2 MiB aligned, so that THP can map all of it
        char *p = mmap(NULL, (size_t)fsize + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { perror("mmap"); return 1; }
        p = (char *)(((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1));
        madvise(p, (size_t)fsize + page / 2, m == 2 ? MADV_NOHUGEPAGE : MADV_HUGEPAGE);
        if (m == 3) p += 64 - 28; // the weights (after the 28-byte header) at a cache line
        if (pread(fd, p, (size_t)fsize, 0) != fsize) { perror("read"); return 1; }
        base[m] = p;
    }
    float *x = (float *)malloc_check((size_t)(H > C ? H : C) * sizeof(float)), *y = (float *)malloc_check((size_t)(V > H ? V : H) * sizeof(float));
    for (int i = 0; i < (H > C ? H : C); i++) x[i] = 0.01f * (float)(i % 7);
    double bytes = 4.0 * ((double)L * (4.0 * C2 + 3.0 * HC) + (double)V * C);
    double *gbs = (double *)malloc_check(sizeof(double) * NK * NM * rounds), *t = (double *)malloc_check(sizeof(double) * tokens);
    for (int r = 0; r < rounds; r++)
        for (int km = 0; km < NK * NM; km++) {
            Kernel k = kernels[km / NM];
            const float *f = (const float *)(base[km % NM] + 28), *embed = f;
            f += (size_t)V * C + (size_t)L * C;
            const float *wq = f, *wk = wq + L * C2, *wv = wk + L * C2, *wo = wv + L * C2;
            const float *w1 = wo + L * C2 + (size_t)L * C, *w2 = w1 + L * HC, *w3 = w2 + L * HC;
            const float *wcls = hdr[5] > 0 ? embed : w3 + L * HC + C + (size_t)S * HS;
            for (int i = -1; i < tokens; i++) { // i = -1: a warm-up sweep
                double t0 = sweep_clock();
                for (int l = 0; l < L; l++) {
                    matvec(k, y, x, wq + l * C2, C, C); matvec(k, y, x, wk + l * C2, C, C); matvec(k, y, x, wv + l * C2, C, C);
                    matvec(k, y, x, wo + l * C2, C, C); matvec(k, y, x, w1 + l * HC, C, H); matvec(k, y, x, w3 + l * HC, C, H);
                    matvec(k, y, x, w2 + l * HC, H, C);
                }
                matvec(k, y, x, wcls, C, V);
                if (i >= 0) t[i] = sweep_clock() - t0;
            }
            qsort(t, (size_t)tokens, sizeof(double), cmp_d);
            gbs[km * rounds + r] = bytes / t[0] / 1e9;
        }
    printf("matvec_read: %s, %.1f MB a token, %d thread(s), %s vectors of %d floats; GB/s of the fastest of %d sweeps (%s time), median of %d rounds [range]\n",
           argv[1], bytes / 1e6, num_threads(), SIMD_NAME, VLEN, tokens, num_threads() > 1 ? "wall" : "CPU", rounds);
    printf("%-8s", "kernel");
    for (int m = 0; m < NM; m++) printf(" %22s", mnames[m]);
    printf("\n");
    for (int k = 0; k < NK; k++) {
        printf("%-8s", knames[k]);
        for (int m = 0; m < NM; m++) {
            double *g = gbs + (k * NM + m) * rounds;
            qsort(g, (size_t)rounds, sizeof(double), cmp_d);
            printf("      %5.1f [%5.1f-%5.1f]", g[rounds / 2], g[0], g[rounds - 1]);
        }
        printf("\n");
    }
    return 0;
}
#endif
