/*
peft.c: parameter-efficient fine-tuning (LoRA) of Llama-family models in one C file.

Read it top to bottom:
  utilities -> JSON -> safetensors -> quantization (int8/int4/nf4 blocks, quantized matmuls) ->
  model config and weights -> tokenizer ->
  layers (each *_forward followed by its *_backward) -> model forward/backward ->
  LoRA and adapters -> data and training -> sampling and generation -> CLI main.

Conventions (llm.c's): outputs first, then inputs, then sizes (B, T, C, OC, NH, HS, V).
Backward functions accumulate (+=) into gradient buffers; the caller zeroes once per step.
Internally q/k projection rows are kept in Hugging Face's rotate-half RoPE layout; llama2.c
files (interleaved RoPE pairs) are permuted on load and un-permuted on save.

A quantized base (--quant, or a quantized .bin) holds its linear layers as QTensor blocks that the
matmuls read directly; it is frozen (QLoRA); LoRA weights, gradients and optimizer state stay fp32.

Build with -DPEFT_FP64 to run every tensor in double precision (used by the gradient checks).
Only libc, libm and optionally OpenMP.
*/
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#define _FILE_OFFSET_BITS 64 // 32-bit machines: files over 2 GiB, 64-bit off_t for fseeko/ftello
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE      // Linux: madvise(MADV_HUGEPAGE) for the weights (advise_huge_pages)
#endif
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdarg.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <float.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/resource.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include <unistd.h>
#include <dirent.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#endif
// PEFT_INFER: the inference-only build (make PEFT_INFER=1, for embedded ports): loading, adapters
// (applied or merged) and generation; no training, eval, dump or quantize, no OpenMP. The backward
// functions stay in the source beside their forwards: nothing calls them, so the compiler drops them.
#ifdef PEFT_INFER
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

#ifdef PEFT_FP64
typedef double floatX;      // every parameter, activation and gradient
#define EXPX exp
#define LOGX log
#define SQRTX sqrt
#else
typedef float floatX;
#define EXPX expf
#define LOGX logf
#define SQRTX sqrtf
#endif

// ----------------------------------------------------------------------------
// utilities: errors, checked allocation and I/O, RNG, time

// Loaders never exit: they return -1 and leave one line in peft_errbuf ("<file>: <what is wrong>").
// The CLI prints it as "peft: <file>: <what is wrong>" and exits with status 1.
static char peft_errbuf[1024];
static int set_error(const char *file, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(peft_errbuf, sizeof(peft_errbuf), "%s: %s", file ? file : "(input)", msg);
    return -1;
}

// error lines go to err_out: stderr, or (the ranks > 0 of a data-parallel run, whose stderr is
// quiet) a copy of it, with the rank named
static FILE *err_out;
static int err_rank = -1;
static void fatal(const char *fmt, ...) {
    FILE *f = err_out ? err_out : stderr;
    va_list ap;
    va_start(ap, fmt);
    if (err_rank > 0) fprintf(f, "peft: rank %d: ", err_rank); else fprintf(f, "peft: ");
    vfprintf(f, fmt, ap);
    fprintf(f, "\n");
    va_end(ap);
    fflush(f);
    exit(1);
}
// print the last loader error and exit
static void fatal_error(void) { fatal("%s", peft_errbuf); }

#if defined(__GNUC__)
#define MAYBE_UNUSED __attribute__((unused)) // the reference kernels, when only the tests call them
#else
#define MAYBE_UNUSED
#endif

static int mul_ok(size_t a, size_t b, size_t *out);

// Memory: every allocation in this file goes through peft_mem(p, size, zero) (realloc's contract: p
// NULL allocates, size 0 frees; zero: a new block of zeros, as calloc gives, whose untouched pages
// cost no memory), so a port can put peft.c on memory of its own. By default it is the C
// library's heap. -DPEFT_ARENA=BYTES serves everything from one static array instead (no malloc at
// all: first fit, a freed block merges with free neighbours); -DPEFT_HEAP_STATS counts the peak
// (the inference-only build does, and `generate` reports it). With either, free() below is
// peft_mem(p, 0, 0), so pointers from this file must not go to the C library's free.
#if defined(PEFT_ARENA) || defined(PEFT_HEAP_STATS)
#define PEFT_OWN_HEAP 1
// a block: a header of 16 bytes (its size including the header, and whether it is in use), then
// the payload, 16-byte aligned
typedef struct { size_t size, used; } HeapBlock;
#define HEAP_HDR ((sizeof(HeapBlock) + 15) & ~(size_t)15)
static size_t heap_live, heap_peak; // payload bytes in use now and at most
#ifdef PEFT_ARENA
static union { long double ld; void *p; long long ll; unsigned char b[(PEFT_ARENA) + 16]; } heap_arena;
static size_t heap_top, heap_top_peak; // bytes of the arena carved into blocks: now, at most
static void *heap_alloc(size_t need) {
    unsigned char *base = (unsigned char *)(((uintptr_t)heap_arena.b + 15) & ~(uintptr_t)15);
    size_t cap = (PEFT_ARENA); // base is within 15 bytes of the array's start, which has 16 to spare
    for (size_t off = 0; off < heap_top;) { // first fit among freed blocks
        HeapBlock *b = (HeapBlock *)(base + off);
        if (!b->used && b->size >= need) {
            if (b->size - need >= HEAP_HDR + 64) { // split
                HeapBlock *rest = (HeapBlock *)(base + off + need);
                rest->size = b->size - need; rest->used = 0;
                b->size = need;
            }
            b->used = 1;
            return b;
        }
        off += b->size;
    }
    if (need > cap - heap_top) return NULL;
    HeapBlock *b = (HeapBlock *)(base + heap_top);
    b->size = need; b->used = 1;
    heap_top += need;
    if (heap_top > heap_top_peak) heap_top_peak = heap_top;
    return b;
}
static void heap_release(HeapBlock *b) {
    unsigned char *base = (unsigned char *)(((uintptr_t)heap_arena.b + 15) & ~(uintptr_t)15);
    b->used = 0;
    // merge runs of free blocks, and give a free tail back to the top
    size_t off = 0, last_used_end = 0;
    while (off < heap_top) {
        HeapBlock *x = (HeapBlock *)(base + off);
        if (!x->used) while (off + x->size < heap_top && !((HeapBlock *)(base + off + x->size))->used) x->size += ((HeapBlock *)(base + off + x->size))->size;
        else last_used_end = off + x->size;
        off += x->size;
    }
    heap_top = last_used_end;
}
#else
static void *heap_alloc(size_t need) {
    HeapBlock *b = (HeapBlock *)malloc(need);
    if (b) { b->size = need; b->used = 1; }
    return b;
}
static void heap_release(HeapBlock *b) { free(b); }
#endif
static void *peft_mem(void *p, size_t size, int zero) {
    HeapBlock *old = p ? (HeapBlock *)((unsigned char *)p - HEAP_HDR) : NULL;
    size_t have = old ? old->size - HEAP_HDR : 0;
    if (size == 0) { if (old) { heap_live -= have; heap_release(old); } return NULL; }
    if (size > SIZE_MAX - 2 * HEAP_HDR) return NULL;
    size_t need = (size + HEAP_HDR + 15) & ~(size_t)15;
    if (old && need <= old->size) return p;
    HeapBlock *b = (HeapBlock *)heap_alloc(need); // (an arena block may be larger than asked: not split)
    if (!b) return NULL;
    heap_live += b->size - HEAP_HDR;
    if (heap_live > heap_peak) heap_peak = heap_live;
    void *q = (unsigned char *)b + HEAP_HDR;
    if (old) { memcpy(q, p, have < size ? have : size); heap_live -= have; heap_release(old); }
    else if (zero) memset(q, 0, size);
    return q;
}
#define free(p) peft_mem((p), 0, 0)
#else
static void *peft_mem(void *p, size_t size, int zero) {
    if (size == 0) { free(p); return NULL; }
    return !p && zero ? calloc(1, size) : realloc(p, size);
}
#endif

static void *malloc_check_(size_t size, const char *file, int line) {
    void *p = peft_mem(NULL, size ? size : 1, 0);
    if (!p) fatal("out of memory allocating %zu bytes (%s:%d)", size, file, line);
    return p;
}
static void *calloc_check_(size_t n, size_t size, const char *file, int line) {
    size_t bytes;
    void *p = mul_ok(n ? n : 1, size ? size : 1, &bytes) ? peft_mem(NULL, bytes, 1) : NULL;
    if (!p) fatal("out of memory allocating %zu x %zu bytes (%s:%d)", n, size, file, line);
    return p;
}
static void *realloc_check_(void *ptr, size_t size, const char *file, int line) {
    void *p = peft_mem(ptr, size ? size : 1, 0);
    if (!p) fatal("out of memory allocating %zu bytes (%s:%d)", size, file, line);
    return p;
}
// size bytes at a 64-byte boundary, never freed (buffers that live as long as the process)
MAYBE_UNUSED static void *malloc_aligned64(size_t size) {
    unsigned char *p = (unsigned char *)malloc_check_(size + 64, __FILE__, __LINE__);
    return p + (64 - ((uintptr_t)p & 63));
}
// Weights that generation streams through once per token: on Linux, transparent huge pages (THP's
// "madvise" mode) for the whole pages inside [p, p + bytes), so that reading them takes far fewer TLB
// misses; a no-op elsewhere, for small buffers and on the counted heap of the inference-only build.
static void advise_huge_pages(void *p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE) && !defined(PEFT_OWN_HEAP)
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a = ((uintptr_t)p + page - 1) & ~(page - 1), e = ((uintptr_t)p + bytes) & ~(page - 1);
    if (bytes >= ((size_t)4 << 20) && e > a) madvise((void *)a, (size_t)(e - a), MADV_HUGEPAGE);
#else
    (void)p; (void)bytes;
#endif
}
// the whole pages inside [p, p + bytes) go back to the system (read again: zeros), their address range
// stays (--shard's loading keeps only a rank's part of each tensor); and no huge pages there, or khugepaged
// would refill them around a part's pages; a no-op off Linux
static void release_pages(void *p, size_t bytes) {
#if defined(__linux__) && defined(MADV_DONTNEED) && defined(MADV_NOHUGEPAGE) && !defined(PEFT_OWN_HEAP)
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a = ((uintptr_t)p + page - 1) & ~(page - 1), e = ((uintptr_t)p + bytes) & ~(page - 1);
    if (e > a) { madvise((void *)a, (size_t)(e - a), MADV_NOHUGEPAGE); madvise((void *)a, (size_t)(e - a), MADV_DONTNEED); }
#else
    (void)p; (void)bytes;
#endif
}
#define malloc_check(size) malloc_check_(size, __FILE__, __LINE__)
#define calloc_check(n, size) calloc_check_(n, size, __FILE__, __LINE__)
#define realloc_check(p, size) realloc_check_(p, size, __FILE__, __LINE__)

static char *strdup_check(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)malloc_check(n);
    memcpy(d, s, n);
    return d;
}

// a * b without overflow (returns -1 on overflow); sizes in this file are size_t
static int mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}
// 32-bit machines: size_t holds 4 GiB and one object at most PTRDIFF_MAX (2 GiB) bytes, so a product
// of model dimensions can wrap. Every size is planned first in double (exact to 2^53) and checked
// here, at the entry points (model config, activations, KV cache, file offsets): after that, the
// size_t products below them cannot overflow.
static int bytes_fit(double bytes) { return bytes >= 0 && bytes <= (double)PTRDIFF_MAX; }
static const char *machine_bits(void) { return sizeof(size_t) == 4 ? "32-bit" : sizeof(size_t) == 8 ? "64-bit" : "this"; }

// Byte order. Every file format here is little-endian; on a big-endian host (s390x, PowerPC) the
// readers and writers convert at the I/O point with these helpers, which do nothing on little-endian
// hosts. In memory everything is in host order.
static int host_big_endian(void) { const uint16_t one = 1; unsigned char b; memcpy(&b, &one, 1); return b == 0; }
// reverse the bytes of each of n elements of es bytes (1, 2, 4 or 8) in place: little-endian <-> host
static void le_swap(void *p, size_t es, size_t n) {
    if (!host_big_endian() || es < 2) return;
    unsigned char *b = (unsigned char *)p;
    for (size_t i = 0; i < n; i++, b += es)
        for (size_t j = 0; j < es / 2; j++) { unsigned char t = b[j]; b[j] = b[es - 1 - j]; b[es - 1 - j] = t; }
}
// fread of n little-endian elements of es bytes, converted to host order; returns how many were read
static size_t fread_le(void *dst, size_t es, size_t n, FILE *f) {
    size_t got = fread(dst, es, n, f);
    le_swap(dst, es, got);
    return got;
}
// Loading reads many GB from the page cache, which one thread copies at a few GB/s: bytes at offset off
// of fd into dst by all threads, in pieces of READ_PIECE (pread each; the file's position is untouched).
// 0, or -1 when a read fails or the file ends first.
#define READ_PIECE ((size_t)4 << 20)
static int pread_all(int fd, void *dst, size_t bytes, off_t off) {
    long n = (long)((bytes + READ_PIECE - 1) / READ_PIECE);
    int bad = 0;
    #pragma omp parallel for schedule(dynamic) reduction(|:bad) if (n > 1)
    for (long i = 0; i < n; i++) {
        size_t at = (size_t)i * READ_PIECE, want = bytes - at < READ_PIECE ? bytes - at : READ_PIECE, got = 0;
        while (got < want && !bad) {
            ssize_t r = pread(fd, (char *)dst + at + got, want - got, off + (off_t)(at + got));
            if (r <= 0) bad = 1; else got += (size_t)r;
        }
    }
    return bad ? -1 : 0;
}
// fread of bytes (0 when short): large reads through pread_all from f's position, which moves past them
static int fread_all(void *dst, size_t bytes, FILE *f) {
    if (bytes < 2 * READ_PIECE) return fread(dst, 1, bytes, f) == bytes ? 0 : -1;
    off_t pos = ftello(f);
    if (pos < 0 || pread_all(fileno(f), dst, bytes, pos) || fseeko(f, pos + (off_t)bytes, SEEK_SET)) return -1;
    return 0;
}

// Read a whole file into memory (NUL-terminated); pipes work too. Returns NULL and sets the error on failure.
static char *read_file(const char *path, size_t *len_out, size_t max_len) {
    FILE *f = fopen(path, "rb");
    if (!f) { set_error(path, "cannot open: %s", strerror(errno)); return NULL; }
    size_t cap = 1 << 16, n = 0;
    char *buf = (char *)malloc_check(cap + 1);
    for (;;) {
        if (n == cap) {
            if (cap > max_len) { fclose(f); free(buf); set_error(path, "file too large (limit %zu bytes)", max_len); return NULL; }
            cap *= 2;
            buf = (char *)realloc_check(buf, cap + 1);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); set_error(path, "read failed (is it a folder?)"); return NULL; }
    if (n > max_len) { free(buf); set_error(path, "file too large (%zu bytes, limit %zu)", n, max_len); return NULL; }
    buf[n] = 0;
    if (len_out) *len_out = n;
    return buf;
}

static int file_exists(const char *path) { struct stat st; return stat(path, &st) == 0 && S_ISREG(st.st_mode); }
static int dir_exists(const char *path) { struct stat st; return stat(path, &st) == 0 && S_ISDIR(st.st_mode); }

static void path_join(char *out, size_t n, const char *dir, const char *name) {
    size_t dl = strlen(dir), nl = strlen(name);
    int slash = !(dl && dir[dl - 1] == '/');
    if (dl + (size_t)slash + nl + 1 > n) fatal("path too long: %s/%s", dir, name);
    memcpy(out, dir, dl);
    if (slash) out[dl] = '/';
    memcpy(out + dl + slash, name, nl + 1);
}

// Atomic writes: write to "<path>.tmp.<pid>", fsync-free fclose, then rename over path.
typedef struct { FILE *f; char tmp[4096]; char path[4096]; int failed, err; } AtomicFile;
static int atomic_open(AtomicFile *af, const char *path) {
    memset(af, 0, sizeof(*af));
    snprintf(af->path, sizeof(af->path), "%s", path);
    snprintf(af->tmp, sizeof(af->tmp), "%s.tmp.%d", path, (int)getpid());
    af->f = fopen(af->tmp, "wb");
    if (!af->f) return set_error(path, "cannot write: %s", strerror(errno));
    return 0;
}
static void atomic_write(AtomicFile *af, const void *p, size_t n) {
    if (!af->failed && n && fwrite(p, 1, n, af->f) != n) { af->failed = 1; af->err = errno; }
}
// n host-order elements of es bytes, written little-endian (a converted copy on big-endian hosts)
static void atomic_write_le(AtomicFile *af, const void *p, size_t es, size_t n) {
    if (!host_big_endian() || es < 2) { atomic_write(af, p, es * n); return; }
    unsigned char buf[4096];
    const unsigned char *src = (const unsigned char *)p;
    for (size_t i = 0, per = sizeof(buf) / es; i < n; i += per) {
        size_t k = n - i < per ? n - i : per;
        memcpy(buf, src + i * es, k * es);
        le_swap(buf, es, k);
        atomic_write(af, buf, k * es);
    }
}
static int atomic_commit(AtomicFile *af) {
    int bad = af->failed | ferror(af->f), err = af->err;
    if (fclose(af->f) != 0) { bad = 1; if (!err) err = errno; }
    if (bad) { remove(af->tmp); return set_error(af->path, "write failed: %s (the previous file, if any, is left as it was)", err ? strerror(err) : "I/O error"); }
    if (rename(af->tmp, af->path) != 0) { remove(af->tmp); return set_error(af->path, "cannot rename into place: %s", strerror(errno)); }
    return 0;
}

// make a directory (and parents); 0 on success
static int mkdir_p(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') { *p = 0; if (!dir_exists(buf) && mkdir(buf, 0755) != 0 && errno != EEXIST) return set_error(path, "cannot create directory: %s", strerror(errno)); *p = '/'; }
    }
    if (!dir_exists(buf) && mkdir(buf, 0755) != 0 && errno != EEXIST) return set_error(path, "cannot create directory: %s", strerror(errno));
    return 0;
}

// xorshift* RNG (llm.c's), state is one uint64
static uint32_t random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}
static float random_f32(uint64_t *state) { return (random_u32(state) >> 8) / 16777216.0f; } // [0,1)
static double random_normal(uint64_t *state) { // Box-Muller
    double u1 = (random_u32(state) + 1.0) / 4294967297.0, u2 = random_u32(state) / 4294967296.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static double time_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double start_sec, load_sec; // main's start; how long the last model load took (the startup line of train)
MAYBE_UNUSED static double gpu_start_sec, mirror_sec; // how long device_start's GPU start and the last net_init (the weights' upload) took
// the most host memory the process has held (resident): Linux's VmHWM, as getrusage's ru_maxrss gives it
static double host_peak_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
#ifdef __APPLE__
    return (double)ru.ru_maxrss; // bytes there
#else
    return (double)ru.ru_maxrss * 1024.0;
#endif
}

// half-precision conversions (round to nearest even when narrowing)
static float bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static uint16_t f32_to_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40); // NaN stays NaN
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) u = sign;
        else { // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            u = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) u = sign | 0x7f800000 | (man << 13);
    else u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f; memcpy(&f, &u, 4); return f;
}
static uint16_t f32_to_f16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffff;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; // may carry into exponent: correct
    return (uint16_t)half;
}

// Memory: a model or a training setup that cannot fit is refused before anything is allocated.
// The budget is the smaller of /proc/meminfo's MemAvailable and the cgroup's memory.max minus
// memory.current (Linux), else the physical memory; PEFT_MEM_LIMIT=BYTES (suffix K, M or G) sets it.
static double mem_available(void) {
    const char *env = getenv("PEFT_MEM_LIMIT");
    if (env && *env) {
        char *end;
        double v = strtod(env, &end);
        if (*end == 'K' || *end == 'k') v *= 1024.0; else if (*end == 'M' || *end == 'm') v *= 1048576.0; else if (*end == 'G' || *end == 'g') v *= 1073741824.0;
        if (v > 0) return v;
    }
    double have = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof(line), f)) if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) { have = kb * 1024.0; break; }
        fclose(f);
    }
    f = fopen("/sys/fs/cgroup/memory.max", "r"); // cgroup v2 limit, "max" when there is none
    if (f) {
        unsigned long long lim, cur;
        if (fscanf(f, "%llu", &lim) == 1) {
            FILE *g = fopen("/sys/fs/cgroup/memory.current", "r");
            if (g && fscanf(g, "%llu", &cur) == 1) { double room = lim > cur ? (double)(lim - cur) : 0; if (have < 0 || room < have) have = room; }
            if (g) fclose(g);
        }
        fclose(f);
    }
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    if (have < 0) { long pages = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGESIZE); if (pages > 0 && ps > 0) have = (double)pages * ps; }
#endif
    return have; // < 0: unknown, no check
}
static void fmt_mem(char *buf, size_t n, double b) {
    const char *unit[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB" };
    int u = 0;
    while (b >= 1024 && u < 5) { b /= 1024; u++; }
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
}
// 0 if `need` bytes fit; else -1 and "<path>: <what> needs X of memory but only Y is available<hint>"
static int mem_check(const char *path, const char *what, double need, const char *hint) {
    double have = mem_available();
    if (have < 0 || need <= have) return 0;
    char n[32], h[32];
    fmt_mem(n, sizeof(n), need); fmt_mem(h, sizeof(h), have);
    const char *env = getenv("PEFT_MEM_LIMIT");
    return set_error(path, "%s needs %s of memory but only %s is available%s%s", what, n, h, env && *env ? " (PEFT_MEM_LIMIT)" : "", hint ? hint : "");
}

// ----------------------------------------------------------------------------
// JSON: a small strict parser (RFC 8259) for config.json, adapter_config.json,
// tokenizer.json and safetensors headers. Depth-limited, no NaN/Infinity, UTF-8 output.

typedef enum { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;
typedef struct Json {
    JsonType type;
    double num;           // JSON_NUMBER
    char *str;            // JSON_STRING (NUL-terminated, may contain NUL: see len)
    size_t len;           // string length in bytes
    int n;                // JSON_ARRAY / JSON_OBJECT: number of items
    struct Json *items;   // the items
    char **keys;          // JSON_OBJECT: item names
} Json;

#define JSON_MAX_DEPTH 128
typedef struct { const char *s, *end; const char *err; size_t errpos; const char *start; } JsonParser;

static int json_fail(JsonParser *p, const char *msg) { if (!p->err) { p->err = msg; p->errpos = (size_t)(p->s - p->start); } return -1; }
static void json_ws(JsonParser *p) { while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++; }

static void json_free_items(Json *j) {
    if (j->type == JSON_STRING) free(j->str);
    if (j->type == JSON_ARRAY || j->type == JSON_OBJECT) {
        for (int i = 0; i < j->n; i++) { json_free_items(&j->items[i]); if (j->keys) free(j->keys[i]); }
        free(j->items); free(j->keys);
    }
}
static void json_free(Json *j) { if (j) { json_free_items(j); free(j); } }

static int json_hex4(JsonParser *p, uint32_t *out) {
    if (p->end - p->s < 4) return json_fail(p, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *p->s++; v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return json_fail(p, "bad \\u escape");
    }
    *out = v; return 0;
}
static int utf8_encode(char *out, uint32_t cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) { out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[2] = (char)(0x80 | (cp & 0x3F)); return 3; }
    out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F)); out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}
// p->s is just past the opening quote
static int json_string(JsonParser *p, char **out, size_t *outlen) {
    const char *q = p->s;
    size_t cap = 0;
    while (q < p->end && *q != '"') { if (*q == '\\') q++; q++; cap++; }
    if (q >= p->end) return json_fail(p, "unterminated string");
    char *buf = (char *)malloc_check(cap * 4 + 1); // every input char yields at most 4 bytes
    size_t n = 0;
    while (*p->s != '"') {
        unsigned char c = (unsigned char)*p->s++;
        if (c < 0x20) { free(buf); return json_fail(p, "control character in string"); }
        if (c != '\\') { buf[n++] = (char)c; continue; }
        char e = *p->s++;
        switch (e) {
            case '"': buf[n++] = '"'; break;
            case '\\': buf[n++] = '\\'; break;
            case '/': buf[n++] = '/'; break;
            case 'b': buf[n++] = '\b'; break;
            case 'f': buf[n++] = '\f'; break;
            case 'n': buf[n++] = '\n'; break;
            case 'r': buf[n++] = '\r'; break;
            case 't': buf[n++] = '\t'; break;
            case 'u': {
                uint32_t cp;
                if (json_hex4(p, &cp)) { free(buf); return -1; }
                if (cp >= 0xD800 && cp <= 0xDBFF) { // surrogate pair
                    uint32_t lo;
                    if (p->end - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u') { free(buf); return json_fail(p, "lone high surrogate"); }
                    p->s += 2;
                    if (json_hex4(p, &lo)) { free(buf); return -1; }
                    if (lo < 0xDC00 || lo > 0xDFFF) { free(buf); return json_fail(p, "bad low surrogate"); }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) { free(buf); return json_fail(p, "lone low surrogate"); }
                n += (size_t)utf8_encode(buf + n, cp);
                break;
            }
            default: free(buf); return json_fail(p, "bad escape in string");
        }
    }
    p->s++; // closing quote
    buf[n] = 0;
    *out = buf; *outlen = n;
    return 0;
}

static int json_value(JsonParser *p, Json *out, int depth);
static int json_container(JsonParser *p, Json *out, int depth, int is_obj) {
    char close = is_obj ? '}' : ']';
    int cap = 0;
    out->type = is_obj ? JSON_OBJECT : JSON_ARRAY;
    p->s++; // opening bracket
    json_ws(p);
    if (p->s < p->end && *p->s == close) { p->s++; return 0; }
    for (;;) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 4;
            out->items = (Json *)realloc_check(out->items, (size_t)cap * sizeof(Json));
            if (is_obj) out->keys = (char **)realloc_check(out->keys, (size_t)cap * sizeof(char *));
        }
        json_ws(p);
        if (is_obj) {
            size_t kl;
            if (p->s >= p->end || *p->s != '"') return json_fail(p, "expected object key");
            p->s++;
            if (json_string(p, &out->keys[out->n], &kl)) return -1;
            json_ws(p);
            if (p->s >= p->end || *p->s != ':') { free(out->keys[out->n]); return json_fail(p, "expected ':'"); }
            p->s++;
        }
        memset(&out->items[out->n], 0, sizeof(Json));
        int rc = json_value(p, &out->items[out->n], depth + 1);
        out->n++; // the item is counted even when it failed, so json_free releases what it holds
        if (rc) return -1;
        json_ws(p);
        if (p->s < p->end && *p->s == ',') { p->s++; continue; }
        if (p->s < p->end && *p->s == close) { p->s++; return 0; }
        return json_fail(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int json_value(JsonParser *p, Json *out, int depth) {
    if (depth > JSON_MAX_DEPTH) return json_fail(p, "nesting too deep");
    json_ws(p);
    if (p->s >= p->end) return json_fail(p, "unexpected end of input");
    char c = *p->s;
    if (c == '{' || c == '[') return json_container(p, out, depth, c == '{');
    if (c == '"') { p->s++; out->type = JSON_STRING; return json_string(p, &out->str, &out->len); }
    if (p->end - p->s >= 4 && !strncmp(p->s, "null", 4)) { p->s += 4; out->type = JSON_NULL; return 0; }
    if (p->end - p->s >= 4 && !strncmp(p->s, "true", 4)) { p->s += 4; out->type = JSON_TRUE; return 0; }
    if (p->end - p->s >= 5 && !strncmp(p->s, "false", 5)) { p->s += 5; out->type = JSON_FALSE; return 0; }
    if (c == '-' || (c >= '0' && c <= '9')) {
        // validate the RFC 8259 number grammar, then convert with strtod
        const char *q = p->s;
        char tmp[64];
        if (*q == '-') q++;
        if (q >= p->end || !isdigit((unsigned char)*q)) return json_fail(p, "bad number");
        if (*q == '0') q++; else while (q < p->end && isdigit((unsigned char)*q)) q++;
        if (q < p->end && *q == '.') { q++; if (q >= p->end || !isdigit((unsigned char)*q)) return json_fail(p, "bad number"); while (q < p->end && isdigit((unsigned char)*q)) q++; }
        if (q < p->end && (*q == 'e' || *q == 'E')) {
            q++; if (q < p->end && (*q == '+' || *q == '-')) q++;
            if (q >= p->end || !isdigit((unsigned char)*q)) return json_fail(p, "bad number");
            while (q < p->end && isdigit((unsigned char)*q)) q++;
        }
        size_t len = (size_t)(q - p->s);
        if (len >= sizeof(tmp)) return json_fail(p, "number too long");
        memcpy(tmp, p->s, len); tmp[len] = 0;
        out->type = JSON_NUMBER;
        out->num = strtod(tmp, NULL);
        if (!isfinite(out->num)) return json_fail(p, "number out of range");
        p->s = q;
        return 0;
    }
    return json_fail(p, "unexpected character (NaN, Infinity and comments are not JSON)");
}

// Parse text[0..len). Returns NULL and sets the error (naming `file`) on failure.
static Json *json_parse(const char *text, size_t len, const char *file) {
    JsonParser p = { text, text + len, NULL, 0, text };
    Json *j = (Json *)calloc_check(1, sizeof(Json));
    int rc = json_value(&p, j, 0);
    if (!rc) { json_ws(&p); if (p.s != p.end) rc = json_fail(&p, "trailing characters after JSON value"); }
    if (rc) { json_free(j); set_error(file, "invalid JSON at byte %zu: %s", p.errpos, p.err); return NULL; }
    return j;
}
static Json *json_load(const char *path) {
    size_t len;
    char *text = read_file(path, &len, (size_t)1 << 30);
    if (!text) return NULL;
    Json *j = json_parse(text, len, path);
    free(text);
    return j;
}

static Json *json_get(const Json *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (int i = 0; i < obj->n; i++) if (!strcmp(obj->keys[i], key)) return &obj->items[i];
    return NULL;
}
static int json_is_num(const Json *j) { return j && j->type == JSON_NUMBER; }
static int json_is_int(const Json *j) { return json_is_num(j) && j->num == floor(j->num) && fabs(j->num) < 9007199254740992.0; }
static const char *json_str(const Json *j) { return (j && j->type == JSON_STRING) ? j->str : NULL; }
static double json_num_or(const Json *obj, const char *key, double def) { Json *v = json_get(obj, key); return json_is_num(v) ? v->num : def; }
static int json_bool_or(const Json *obj, const char *key, int def) {
    Json *v = json_get(obj, key);
    if (v && v->type == JSON_TRUE) return 1;
    if (v && v->type == JSON_FALSE) return 0;
    return def;
}

// A growable string for writing JSON
typedef struct { char *s; size_t n, cap; } StrBuf;
static void sb_putn(StrBuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) { b->cap = (b->n + n + 1) * 2; b->s = (char *)realloc_check(b->s, b->cap); }
    memcpy(b->s + b->n, s, n); b->n += n; b->s[b->n] = 0;
}
static void sb_puts(StrBuf *b, const char *s) { sb_putn(b, s, strlen(s)); }
static void sb_printf(StrBuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap; va_start(ap, fmt); int n = vsnprintf(tmp, sizeof(tmp), fmt, ap); va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof(tmp)) { sb_putn(b, tmp, (size_t)n); return; }
    char *big = (char *)malloc_check((size_t)n + 1);
    va_start(ap, fmt); vsnprintf(big, (size_t)n + 1, fmt, ap); va_end(ap);
    sb_putn(b, big, (size_t)n); free(big);
}
// The shortest decimal that reads back as the same float (what Python's repr does for its doubles), for
// numbers written into JSON configs: 0.1f is "0.1", not "0.100000001"; 1e-5f is "1e-05"; 3.0f is "3.0". Up to 8 at once.
static const char *json_float(float v) {
    static char pool[8][32];
    static int next = 0;
    char *buf = pool[next++ % 8];
    if (!isfinite(v)) { snprintf(buf, 32, "null"); return buf; }
    if (v == floorf(v) && fabsf(v) < 1e15f) { snprintf(buf, 32, "%.1f", (double)v); return buf; } // 10000.0, not 1e+04 (and a float: transformers 5 refuses 3 for a float field)
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, 32, "%.*g", p, (double)v);
        if ((float)strtod(buf, NULL) == v) break;
    }
    return buf;
}
// a number whose field the libraries type as an int when it is one (PEFT's lora_alpha, Gemma's query_pre_attn_scalar): 8, or 0.5
static const char *json_intish(float v) {
    const char *f = json_float(v);
    size_t n = strlen(f);
    return n > 2 && !strcmp(f + n - 2, ".0") ? (((char *)f)[n - 2] = 0, f) : f;
}
static void sb_json_string(StrBuf *b, const char *s) {
    sb_puts(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { char e[2] = { '\\', (char)c }; sb_putn(b, e, 2); }
        else if (c < 0x20) sb_printf(b, "\\u%04x", c);
        else sb_putn(b, (const char *)&c, 1);
    }
    sb_puts(b, "\"");
}

// ----------------------------------------------------------------------------
// safetensors: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data; offsets are relative to the end of the header. Every field is checked.

enum { DT_F32, DT_F16, DT_BF16, DT_F64, DT_I64, DT_I32, DT_I16, DT_I8, DT_U8, DT_BOOL, DT_COUNT };
static const char *dtype_names[DT_COUNT] = { "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL" };
static const size_t dtype_sizes[DT_COUNT] = { 4, 2, 2, 8, 8, 4, 2, 1, 1, 1 };
static int dtype_from_name(const char *s) {
    for (int i = 0; s && i < DT_COUNT; i++) if (!strcmp(s, dtype_names[i])) return i;
    return -1;
}

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (100u << 20)  // 100 MiB, the limit of the reference implementation
typedef struct {
    char *name;
    int dtype, ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    size_t begin, end;    // byte range inside the data section
} STTensor;
typedef struct {
    char path[4096];
    FILE *f;
    size_t data_start;    // 8 + header length
    size_t data_size;     // file size - data_start
    int n;
    STTensor *t;
} SafeTensors;

static int st_cmp_begin(const void *a, const void *b) {
    const STTensor *x = *(const STTensor *const *)a, *y = *(const STTensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

static void st_close(SafeTensors *st) {
    if (st->f) fclose(st->f);
    for (int i = 0; i < st->n; i++) free(st->t[i].name);
    free(st->t);
    memset(st, 0, sizeof(*st));
}

static int st_open(SafeTensors *st, const char *path) {
    memset(st, 0, sizeof(*st));
    snprintf(st->path, sizeof(st->path), "%s", path);
    st->f = fopen(path, "rb");
    if (!st->f) return set_error(path, "cannot open: %s", strerror(errno));
    if (fseeko(st->f, 0, SEEK_END) != 0) { st_close(st); return set_error(path, "cannot seek"); }
    off_t fsize = ftello(st->f);
    rewind(st->f);
    if (fsize < 0 || !bytes_fit((double)fsize)) { st_close(st); return set_error(path, "file of %.4g GB is too large for this %s machine", (double)fsize / 1e9, machine_bits()); }
    unsigned char lenbuf[8];
    if (fsize < 8 || fread(lenbuf, 1, 8, st->f) != 8) { st_close(st); return set_error(path, "truncated safetensors file (no header length)"); }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | lenbuf[i];
    if (hlen > ST_MAX_HEADER) { st_close(st); return set_error(path, "safetensors header length %llu exceeds the %u byte limit", (unsigned long long)hlen, ST_MAX_HEADER); }
    if (hlen > (uint64_t)fsize - 8) { st_close(st); return set_error(path, "safetensors header length %llu runs past the end of the file (%lld bytes)", (unsigned long long)hlen, (long long)fsize); }
    char *hdr = (char *)malloc_check((size_t)hlen + 1);
    if (fread(hdr, 1, (size_t)hlen, st->f) != (size_t)hlen) { free(hdr); st_close(st); return set_error(path, "truncated safetensors header"); }
    hdr[hlen] = 0;
    st->data_start = 8 + (size_t)hlen;
    st->data_size = (size_t)fsize - st->data_start;
    Json *j = json_parse(hdr, (size_t)hlen, path);
    free(hdr);
    if (!j) { char e[1024]; snprintf(e, sizeof(e), "%s", peft_errbuf); st_close(st); snprintf(peft_errbuf, sizeof(peft_errbuf), "%s", e); return -1; }
    int rc = 0;
    if (j->type != JSON_OBJECT) { rc = set_error(path, "safetensors header is not a JSON object"); goto done; }
    st->t = (STTensor *)calloc_check((size_t)j->n, sizeof(STTensor));
    for (int i = 0; i < j->n; i++) {
        const char *name = j->keys[i];
        Json *v = &j->items[i];
        if (!strcmp(name, "__metadata__")) continue;
        STTensor *t = &st->t[st->n];
        Json *dt = json_get(v, "dtype"), *shape = json_get(v, "shape"), *off = json_get(v, "data_offsets");
        if (v->type != JSON_OBJECT || !dt || !shape || !off) { rc = set_error(path, "tensor '%s': header entry needs dtype, shape and data_offsets", name); goto done; }
        t->dtype = dtype_from_name(json_str(dt));
        if (t->dtype < 0) { rc = set_error(path, "tensor '%s': unsupported dtype %s", name, json_str(dt) ? json_str(dt) : "(not a string)"); goto done; }
        if (shape->type != JSON_ARRAY || shape->n > ST_MAX_DIMS) { rc = set_error(path, "tensor '%s': shape must be an array of at most %d dims", name, ST_MAX_DIMS); goto done; }
        t->ndim = shape->n;
        size_t numel = 1;
        for (int d = 0; d < shape->n; d++) {
            Json *s = &shape->items[d];
            if (!json_is_int(s) || s->num < 0) { rc = set_error(path, "tensor '%s': shape entries must be non-negative integers", name); goto done; }
            if (s->num > (double)SIZE_MAX) { rc = set_error(path, "tensor '%s': shape overflows this %s machine's sizes", name, machine_bits()); goto done; }
            t->shape[d] = (int64_t)s->num;
            if (!mul_ok(numel, (size_t)t->shape[d], &numel)) { rc = set_error(path, "tensor '%s': shape overflows", name); goto done; }
        }
        t->numel = numel;
        if (off->type != JSON_ARRAY || off->n != 2 || !json_is_int(&off->items[0]) || !json_is_int(&off->items[1]) || off->items[0].num < 0 || off->items[1].num < off->items[0].num) {
            rc = set_error(path, "tensor '%s': data_offsets must be [begin, end] with 0 <= begin <= end", name); goto done;
        }
        if (off->items[1].num > (double)st->data_size) { rc = set_error(path, "tensor '%s': data_offsets [%.17g, %.17g] run past the end of the file (data section is %zu bytes)", name, off->items[0].num, off->items[1].num, st->data_size); goto done; }
        t->begin = (size_t)off->items[0].num; t->end = (size_t)off->items[1].num;
        if (t->end > st->data_size) { rc = set_error(path, "tensor '%s': data_offsets [%zu, %zu] run past the end of the file (data section is %zu bytes)", name, t->begin, t->end, st->data_size); goto done; }
        size_t nbytes = 0;
        if (!mul_ok(numel, dtype_sizes[t->dtype], &nbytes) || nbytes != t->end - t->begin) { rc = set_error(path, "tensor '%s': shape x dtype is %zu bytes but data_offsets span %zu", name, nbytes, t->end - t->begin); goto done; }
        t->name = strdup_check(name);
        st->n++;
    }
    { // tensors must not overlap
        STTensor **order = (STTensor **)malloc_check((size_t)(st->n ? st->n : 1) * sizeof(STTensor *));
        for (int i = 0; i < st->n; i++) order[i] = &st->t[i];
        qsort(order, (size_t)st->n, sizeof(STTensor *), st_cmp_begin);
        for (int i = 1; i < st->n; i++) {
            if (order[i]->begin < order[i - 1]->end) { rc = set_error(path, "tensors '%s' and '%s' overlap", order[i - 1]->name, order[i]->name); break; }
        }
        free(order);
    }
done:
    json_free(j);
    if (rc) { char e[1024]; snprintf(e, sizeof(e), "%s", peft_errbuf); st_close(st); snprintf(peft_errbuf, sizeof(peft_errbuf), "%s", e); }
    return rc;
}

static STTensor *st_find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->n; i++) if (!strcmp(st->t[i].name, name)) return &st->t[i];
    return NULL;
}

static int st_read_raw(SafeTensors *st, const STTensor *t, void *dst) {
    if (t->end == t->begin) return 0;
    if (fseeko(st->f, (off_t)st->data_start + (off_t)t->begin, SEEK_SET) != 0 || fread(dst, 1, t->end - t->begin, st->f) != t->end - t->begin)
        return set_error(st->path, "tensor '%s': read failed", t->name);
    return 0;
}

// Read a floating tensor into floatX (or, dst16 given, into bf16 instead: f32_to_bf16 of the float value,
// the GPU's rounding), converting from F32/F16/BF16/F64. Rejects NaN/Inf (the first).
// The threads read and convert pieces of 64K values each (pread: the stream's position is untouched).
// Values [e0, e1) only, to dst[e0..e1) (--shard's loading reads a rank's part).
static int st_read_floatX_part(SafeTensors *st, const STTensor *t, floatX *dst, uint16_t *dst16, size_t e0, size_t e1) {
    if (t->dtype != DT_F32 && t->dtype != DT_F16 && t->dtype != DT_BF16 && t->dtype != DT_F64)
        return set_error(st->path, "tensor '%s': dtype %s is not a float type", t->name, dtype_names[t->dtype]);
    if (e1 > t->numel) e1 = t->numel;
    size_t numel = e1 > e0 ? e1 - e0 : 0, chunk = numel < ((size_t)1 << 16) ? numel : (size_t)1 << 16, es = dtype_sizes[t->dtype]; // no 512 KiB buffer for a bias
    long npieces = chunk ? (long)((numel + chunk - 1) / chunk) : 0, bad_read = -1;
    size_t first_bad = SIZE_MAX;
    int fd = fileno(st->f);
    #pragma omp parallel if (npieces > 1)
    {
        unsigned char *buf = (unsigned char *)malloc_check(chunk * es);
        #pragma omp for schedule(dynamic)
        for (long p = 0; p < npieces; p++) {
            size_t i = e0 + (size_t)p * chunk, n = e1 - i < chunk ? e1 - i : chunk, want = n * es, got = 0;
            off_t off = (off_t)(st->data_start + t->begin + i * es);
            while (got < want) {
                ssize_t r = pread(fd, buf + got, want - got, off + (off_t)got);
                if (r <= 0) break;
                got += (size_t)r;
            }
            if (got < want) {
                #pragma omp critical(st_read_bad)
                bad_read = p;
                continue;
            }
            le_swap(buf, es, n);
            for (size_t k = 0; k < n; k++) {
                double v;
                if (t->dtype == DT_F32) { float f; memcpy(&f, buf + 4 * k, 4); v = f; }
                else if (t->dtype == DT_F64) { memcpy(&v, buf + 8 * k, 8); }
                else { uint16_t h; memcpy(&h, buf + 2 * k, 2); v = t->dtype == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h); }
                if (!isfinite(v)) {
                    #pragma omp critical(st_read_bad)
                    if (i + k < first_bad) first_bad = i + k;
                    break;
                }
                if (dst16) dst16[i + k] = f32_to_bf16((float)v); else dst[i + k] = (floatX)v;
            }
        }
        free(buf);
    }
    if (bad_read >= 0) return set_error(st->path, "tensor '%s': read failed", t->name);
    if (first_bad != SIZE_MAX) return set_error(st->path, "tensor '%s': non-finite value at index %zu", t->name, first_bad);
    return 0;
}
static int st_read_floatX(SafeTensors *st, const STTensor *t, floatX *dst, uint16_t *dst16) { return st_read_floatX_part(st, t, dst, dst16, 0, t->numel); }

// check a tensor's shape against what the model expects; ndim dims given as int64
static int st_check_shape(const SafeTensors *st, const STTensor *t, int ndim, const int64_t *shape) {
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (ok) return 0;
    char want[128] = "[", got[128] = "[";
    for (int d = 0; d < ndim; d++) snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%lld", d ? ", " : "", (long long)shape[d]);
    for (int d = 0; d < t->ndim; d++) snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    return set_error(st->path, "tensor '%s': expected shape %s] but found %s]", t->name, want, got);
}

// Writing: each entry is a float tensor (written as dtype F32/F16/BF16) or an int32 tensor.
typedef struct {
    char name[256];
    int dtype;            // on-disk dtype
    int ndim;
    int64_t shape[4];
    const floatX *fdata;  // float source (for F32/F16/BF16)
    const int32_t *idata; // int source (for I32)
} STWrite;

static int st_write_cmp(const void *a, const void *b) { return strcmp(((const STWrite *)a)->name, ((const STWrite *)b)->name); }

static int st_write(const char *path, STWrite *ts, int n, const char *metadata_json) {
    qsort(ts, (size_t)n, sizeof(STWrite), st_write_cmp);
    StrBuf h = { 0 };
    sb_puts(&h, "{");
    if (metadata_json) { sb_puts(&h, "\"__metadata__\":"); sb_puts(&h, metadata_json); }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < ts[i].ndim; d++) numel *= (size_t)ts[i].shape[d];
        size_t nb = numel * dtype_sizes[ts[i].dtype];
        if (i || metadata_json) sb_puts(&h, ",");
        sb_json_string(&h, ts[i].name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_names[ts[i].dtype]);
        for (int d = 0; d < ts[i].ndim; d++) sb_printf(&h, "%s%lld", d ? "," : "", (long long)ts[i].shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
        off += nb;
    }
    sb_puts(&h, "}");
    while (h.n % 8) sb_puts(&h, " "); // pad so the data section is 8-byte aligned
    AtomicFile af;
    if (atomic_open(&af, path)) { free(h.s); return -1; }
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)(((uint64_t)h.n >> (8 * i)) & 0xff);
    atomic_write(&af, lenbuf, 8);
    atomic_write(&af, h.s, h.n);
    free(h.s);
    unsigned char buf[4096 * 4];
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < ts[i].ndim; d++) numel *= (size_t)ts[i].shape[d];
        size_t es = dtype_sizes[ts[i].dtype], per = sizeof(buf) / 4;
        for (size_t j = 0; j < numel; j += per) {
            size_t m = numel - j < per ? numel - j : per;
            for (size_t k = 0; k < m; k++) {
                if (ts[i].dtype == DT_I32) { int32_t v = ts[i].idata[j + k]; memcpy(buf + 4 * k, &v, 4); }
                else if (ts[i].dtype == DT_F32) { float v = (float)ts[i].fdata[j + k]; memcpy(buf + 4 * k, &v, 4); }
                else { uint16_t v = ts[i].dtype == DT_BF16 ? f32_to_bf16((float)ts[i].fdata[j + k]) : f32_to_f16((float)ts[i].fdata[j + k]); memcpy(buf + 2 * k, &v, 2); }
            }
            le_swap(buf, es, m);
            atomic_write(&af, buf, m * es);
        }
    }
    return atomic_commit(&af);
}

// ----------------------------------------------------------------------------
// tensor memory: where the kernels' operands live
// On the CPU, host memory. With a GPU (make CUDA=1, --device cuda) peft_cuda.cu runs the kernels
// below on device memory. Weights, adapters and optimizer state keep their host copy for loading
// and saving and get a device mirror (tensor_mirror): kernels take the host pointer and run on the
// mirror, and host code that reads or writes such a tensor syncs it first (tensor_to_host) or after
// (tensor_to_device). Activations live on the device only (tensor_alloc). Above the kernels, code
// never reads or writes tensor memory itself.
static int gpu_on;   // the kernels run on the GPU (--device cuda)
static int offload_on; // --offload (or --shard): the frozen base's layers streamed into device slots, each ahead of its use
MAYBE_UNUSED static int shard_on, shard_host; // --shard: each rank keeps 1/dist_world of each layer, gathered into the slot; shard_host: that chunk in pinned host memory (--offload too)
#define PLAN_SLOTS 3   // --offload's layers on the GPU at once: the one computing, the one before it, the next (being copied)
// data-parallel training: this process's rank among dist_world, and its GPU on this host (see train)
static int dist_rank = 0;
MAYBE_UNUSED static int dist_world = 1, dist_local = 0; // (the inference-only build has no trainer to read them)
#if defined(PEFT_CUDA) && defined(PEFT_NCCL)
static int dist_nccl; // the ranks have met and NCCL sums over them (the tests shard without it)
#endif
#ifdef PEFT_CUDA
#ifdef PEFT_FP64
#error "PEFT_CUDA works in fp32 (floatX float)"
#endif
// peft_cuda.cu: device memory, the mirrors, and one GPU kernel per kernel function below
int gpu_init(int bf16, int device, char *err, size_t errlen); // GPU number device: 0 (and a "device:" line), or -1 with the reason in err
void *gpu_alloc(size_t bytes);                           // zeroed device memory; NULL when out of memory
void *gpu_alloc_act(size_t n);                           // n activations (see tensor_alloc_act), in bf16 with bf16 matmuls, zeroed
size_t gpu_act_size(void);                               // bytes one value of gpu_alloc_act takes: 2 or 4
void gpu_free(void *p);
int gpu_mirror(void *host, size_t bytes);                // device copy of host[0..bytes), uploaded; -1: out of memory
void gpu_mirror_bf16(const void *host, size_t bytes);    // before gpu_mirror: these bytes are frozen weights only GEMMs read (bf16 matmuls: kept in bf16 only)
void gpu_unmirror(void *host);
void gpu_mirror_skip(const void *host, size_t bytes);    // before gpu_mirror: these bytes are streamed (--offload), not mirrored
void gpu_mirror_bf16_from(const void *host, size_t bytes, const void *src16); // gpu_mirror_bf16 with the values in bf16 already (src16)
int gpu_weights_bf16(void);                              // frozen float weights are kept (and streamed) in bf16
// --offload: a layer's frozen tensors stay in host memory (pinned) and are streamed into device slots
// (at byte off of the layer's slot; src NULL: --shard, the layer comes from its chunks)
int gpu_offload_add(int layer, void *host, size_t bytes, const void *src, size_t dev_bytes, size_t off, int bf16, char *err, size_t errlen);
// --shard: this rank's chunk of layer (chunk_bytes, the same on every rank), kept in device memory (uploaded now) or,
// on_host, at chunk (pinned); the slot is filled by gathering the world ranks' chunks side by side
int gpu_offload_shard(int layer, void *chunk, size_t chunk_bytes, int rank, int world, int on_host, char *err, size_t errlen);
int gpu_offload_ready(int nslots, char *err, size_t errlen); // the slots; -1 with the reason when they do not fit
void gpu_offload_use(int l, int next);                   // kernels from here on read layer l; next is copied meanwhile (-1: none)
void gpu_offload_end(void);
// --offload activations: count tensors of bytes each in host (pinned), slots of them at dev on the GPU
int gpu_xring_init(void *host, void *dev, size_t bytes, int count, int slots, char *err, size_t errlen);
void gpu_xring_write(int i);           // the kernels from here on write tensor i (its slot's last save done first)
void gpu_xring_save(int i);            // the kernels so far wrote tensor i: copy it to the host
void gpu_xring_read(int i, int next);  // the kernels from here on read tensor i (copied in if not there); next meanwhile
void gpu_xring_end(void);
void gpu_sync_mirror(void *host, int to_device);         // copy the whole mirror of host one way
void gpu_copy(void *dst, const void *src, size_t bytes, int to_device); // host buffer <-> tensor
size_t gpu_free_bytes(void);
void gpu_release(void);                                  // the GPU file's own scratch
size_t gpu_peak_bytes(void);                             // the most device memory in use so far (context included)
size_t gpu_peak_alloc_bytes(void);                       // the most bytes peft's own device allocations held at once
// the GPU twin of each kernel function (same arguments, in the same order; a quantized weight as its fields)
#define GPU_QARGS int qtype, int bs, const uint8_t *q, const float *scale, const uint16_t *scale16, const uint8_t *qabsmax, const float *absmax2, float offset, const float *code256, \
                  const uint16_t *hscale, const uint16_t *hzero
void gpu_matmul_forward(float *out, const float *inp, const float *weight, int N, int C, int OC);
void gpu_matmul_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight, int N, int C, int OC);
void gpu_qmatmul_forward(float *out, const float *inp, GPU_QARGS, int N, int C, int OC);
void gpu_qmatmul_backward(float *dinp, const float *dout, GPU_QARGS, int N, int C, int OC);
void gpu_encoder_forward_q(float *out, const int *tokens, GPU_QARGS, int N, int C);
void gpu_dora_weight_norm(float *wnorm, const float *W, const float *A, const float *B, float scale, int r, int in, int out);
void gpu_dora_weight_norm_q(float *wnorm, GPU_QARGS, const float *A, const float *B, float lora_scale, int r, int in, int out);
void gpu_dropout_forward(float *xd, float *mask, const float *inp, size_t n, float p, uint64_t seed, int new_mask);
void gpu_add_scaled(float *out, const float *x, float s, size_t n);
void gpu_lora_up_add(float *out, const float *u, const float *B, float s, int N, int r, int OC);
void gpu_matmul_lora_forward(float *out, const float *inp, const float *weight, const float *u, const float *B, float s, int N, int C, int OC, int r);
void gpu_matmul_lora_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight, const float *du, const float *A, int N, int C, int OC, int r);
void gpu_scale_copy(float *out, const float *x, float s, size_t n);
void gpu_add_masked(float *out, const float *x, const float *mask, size_t n);
void gpu_dora_forward(float *out, const float *base, const float *t, const float *mag, const float *wnorm, float s, int N, int OC);
void gpu_dora_backward(float *dmag, float *t, float *z, const float *dout, const float *mag, const float *wnorm, float s, int N, int OC);
void gpu_encoder_forward(float *out, const int *tokens, const float *embed, int N, int C);
void gpu_encoder_backward(float *dembed, const float *dout, const int *tokens, int N, int C);
void gpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps, float woff);
void gpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight, const float *rstd, int N, int C, float woff);
void gpu_bias_forward(float *out, const float *b, int N, int OC);
void gpu_bias_backward(float *db, const float *dout, int N, int OC);
void gpu_softcap_forward(float *out, float *th, const float *inp, float cap, size_t n);
void gpu_softcap_backward(float *d, const float *th, size_t n);
void gpu_rope_forward(float *x, const float *cos_t, const float *sin_t, int B, int T, int NH, int HS, int pos0);
void gpu_rope_backward(float *dx, const float *cos_t, const float *sin_t, int B, int T, int NH, int HS);
// attention's mode (AttnMode below) as its three numbers: the score scale, the soft-cap (0: none), the window (0: none)
void gpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int NH, int KVH, int HS, float scale, float softcap, int window);
void gpu_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *q, const float *k, const float *v, const float *out, const float *lse,
                            int B, int T, int NH, int KVH, int HS, float scale, float softcap, int window);
void gpu_attention_decode(float *out, float *att, const float *q, const float *kc, const float *vc, int pos, int NH, int KVH, int HS, float scale, float softcap, int window);
void gpu_swiglu_forward(float *out, const float *g, const float *u, size_t n);
void gpu_swiglu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, size_t n);
void gpu_geglu_forward(float *out, const float *g, const float *u, size_t n);
void gpu_geglu_backward(float *dg, float *du, const float *dout, const float *g, const float *u, size_t n);
void gpu_residual_forward(float *out, const float *a, const float *b, size_t n);
void gpu_crossentropy_forward(float *losses, float *probs, const int *targets, int N, int V);
void gpu_crossentropy_backward(float *dlogits, const int *targets, float dloss, int N, int V);
void gpu_zero(void *p, size_t bytes);
double gpu_sum(const float *x, size_t n);
double gpu_sumsq(const float *x, size_t n);
void gpu_adamw(float *params, const float *grads, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd, float step, float rbc2);
// several processes, one GPU each (make CUDA=1 NCCL=1): the rendezvous, and sums over the ranks
int gpu_dist_init(int rank, int world, const char *addr, int port, FILE *errf, char *err, size_t errlen); // 0, or -1 with the reason
void gpu_dist_sum(float *x, size_t n);       // x = the sum of x over the ranks (tensor memory), on every rank
void gpu_dist_sum_host(double *v, int n);    // the same for n host numbers
void gpu_dist_finish(int ok);                // this rank is done (ok) or failed; returns once every rank is done
#define ON_GPU(call) do { if (gpu_on) { call; return; } } while (0)
#else
#define ON_GPU(call) do { } while (0)
#endif

// n zeroed bytes of tensor memory
static void *tensor_alloc(size_t bytes) {
#ifdef PEFT_CUDA
    if (gpu_on) {
        void *p = gpu_alloc(bytes);
        if (!p) fatal("out of GPU memory allocating %.1f MiB (%.1f MiB free); lower -b or -T, or use --checkpoint-activations or --quant nf4",
                      bytes / 1048576.0, gpu_free_bytes() / 1048576.0);
        return p;
    }
#endif
    return calloc_check(bytes, 1);
}
// n activations that only kernels touch (acts_alloc's ACTS_LOWP: the norms' outputs, q, k, v, the attention
// output, gate, up, h; SwiGLU's gradients): on a GPU with bf16 matmuls they are kept in bf16, half the
// memory (host code never reads tensor memory, so how it stores them is the GPU's business)
static floatX *tensor_alloc_act(size_t n) {
#ifdef PEFT_CUDA
    if (gpu_on) {
        void *p = gpu_alloc_act(n);
        if (!p) fatal("out of GPU memory allocating %.1f MiB (%.1f MiB free); lower -b or -T, or use --checkpoint-activations or --quant nf4",
                      n * 2 / 1048576.0, gpu_free_bytes() / 1048576.0);
        return (floatX *)p;
    }
#endif
    return (floatX *)calloc_check(n, sizeof(floatX));
}
// Write every page of fresh host tensor memory now (a zero into its first byte, so it stays zeroed): the
// kernel maps calloc's pages on their first write, a page fault each (costly in a VM), and generation
// would otherwise take those faults inside its timed loop as the KV cache fills. No-op on the GPU.
static void tensor_prefault(void *p, size_t bytes) {
    if (gpu_on) return;
    volatile unsigned char *b = (volatile unsigned char *)p; // volatile: the stores of zeros into calloc's zeros stay
    for (size_t i = 0; i < bytes; i += 4096) b[i] = 0;
}
static void tensor_free(void *p) {
#ifdef PEFT_CUDA
    if (gpu_on) { gpu_free(p); return; }
#endif
    free(p);
}
// give host memory a device mirror (kernels can then take pointers into it); no-op on the CPU
static void tensor_mirror(void *host, size_t bytes) {
#ifdef PEFT_CUDA
    if (gpu_on && host && gpu_mirror(host, bytes))
        fatal("out of GPU memory mirroring %.1f MiB (%.1f MiB free); lower -b or -T, or use --quant nf4", bytes / 1048576.0, gpu_free_bytes() / 1048576.0);
#else
    (void)host; (void)bytes;
#endif
}
static void tensor_unmirror(void *host) {
#ifdef PEFT_CUDA
    if (gpu_on && host) gpu_unmirror(host);
#else
    (void)host;
#endif
}
// after host code wrote a mirrored tensor / before host code reads one
static void tensor_to_device(void *host) {
#ifdef PEFT_CUDA
    if (gpu_on && host) gpu_sync_mirror(host, 1);
#else
    (void)host;
#endif
}
static void tensor_to_host(void *host) {
#ifdef PEFT_CUDA
    if (gpu_on && host) gpu_sync_mirror(host, 0);
#else
    (void)host;
#endif
}
// copy a host buffer into tensor memory, and back
static void tensor_upload(void *dst, const void *src, size_t bytes) {
#ifdef PEFT_CUDA
    if (gpu_on) { gpu_copy(dst, src, bytes, 1); return; }
#endif
    memcpy(dst, src, bytes);
}
static void tensor_download(void *dst, const void *src, size_t bytes) {
#ifdef PEFT_CUDA
    if (gpu_on) { gpu_copy(dst, src, bytes, 0); return; }
#endif
    memcpy(dst, src, bytes);
}

// ----------------------------------------------------------------------------
// quantization: int8, int4 and NF4 blocks with exact reference (de)quantizers
//
// A quantized tensor is a row-major (rows, cols) matrix whose flattened values are cut into blocks of
// bs consecutive weights (blocks may cross rows, as in llama2.c and bitsandbytes), each with one scale:
//   int8 (bs 64): llama2.c's q80: scale = max|w| / 127, q = round(w / scale) in int8, w ~ q * scale
//   int4 (bs 32): scale = max|w| / 7 rounded up to bf16 (stored in 16 bits: 4.5 bits/weight),
//                 q = round(w / scale) in [-7, 7], stored as q + 8 in a nibble
//   nf4  (bs 64): bitsandbytes' NormalFloat4: absmax = max|w|, q = the nearest of the 16 code values
//                 below to w / absmax (bitsandbytes' decision tree, ties go to the lower code),
//                 w ~ nf4_code[q] * absmax
// 4-bit values are packed two per byte, element 2i in the high nibble (bitsandbytes' order).
// NF4 double quantization (bitsandbytes' compress_statistics=True, functional.py quantize_4bit):
//   offset = mean(absmax); the values absmax - offset are quantized blockwise (blocks of 256) with
//   bitsandbytes' signed 8-bit dynamic map (create_dynamic_map) and an fp32 absmax per block:
//   absmax[b] ~ dyn_code[qabsmax[b]] * absmax2[b / 256] + offset.
//   hqq4, hqq8 (bs 64, --group-size): HQQ (Badri & Shaji, "Half-Quadratic Quantization of Large
//                 Machine Learning Models", 2023; mobiusml/hqq), calibration-free affine quantization
//                 with a scale and a zero point per group: q = clamp(round(w / s + z), 0, 2^b - 1),
//                 w ~ (q - z) * s, z fitted by a few half-quadratic proximal iterations (below);
//                 q stored unsigned (4-bit: a nibble, 8-bit: a byte), s and z as fp16 (HQQ's meta dtype)
// The matmuls below read these blocks directly, a row at a time; no float copy of a matrix exists.
enum { QT_NONE, QT_INT8, QT_INT4, QT_NF4, QT_HQQ4, QT_HQQ8, NUM_QTYPES };
static const char *qtype_names[NUM_QTYPES] = { "none", "int8", "int4", "nf4", "hqq4", "hqq8" };
static const int qtype_block[NUM_QTYPES] = { 0, 64, 32, 64, 64, 64 };
static int qtype_hqq(int type) { return type == QT_HQQ4 || type == QT_HQQ8; }
#define DQ_BLOCK 256

typedef struct {
    int type;            // QT_*
    int bs;              // weights per block
    int rows, cols;      // the matrix is (rows, cols); blocks run over the flattened rows*cols values
    size_t n, nblocks;
    uint8_t *q;          // int8: n bytes (as int8_t); int4/nf4: (n+1)/2 bytes
    float *scale;        // (nblocks) int8 scale, nf4 absmax; NULL for int4 and with double quantization
    uint16_t *scale16;   // (nblocks) int4: bf16 scale
    uint16_t *hscale, *hzero; // (nblocks) hqq: fp16 scale s and zero point z
    uint8_t *qabsmax;    // (nblocks) nf4 double quantization: codes of absmax - offset
    float *absmax2;      // (ceil(nblocks/256)) their block absmax
    float offset;        // mean absmax
    void *memory;        // one allocation holding all of the above
    size_t memory_bytes; // its size
} QTensor;

// bitsandbytes' NF4 code book (csrc/kernels.cu dDequantizeNF4, functional.py get_4bit_type("nf4"))
static const float nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f };

static const float int4_code[16] = { -8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7 }; // nibble - 8

// bitsandbytes' dQuantizeNF4 (csrc/kernels.cu): a decision tree on the midpoints between the codes;
// x exactly on a midpoint gets the lower code (every test is '>').
static int nf4_quantize_value(float x) {
    if (x > 0.03979014977812767f) {
        if (x > 0.3893125355243683f) {
            if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15 : 14;
            return x > 0.5016634166240692f ? 13 : 12;
        }
        if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11 : 10;
        return x > 0.1202552504837513f ? 9 : 8;
    }
    if (x > -0.33967943489551544f) {
        if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7 : 6;
        return x > -0.23460740596055984f ? 5 : 4;
    }
    if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3 : 2;
    return x > -0.8480964004993439f ? 1 : 0;
}

// The same decision without branches, for the quantization loop (random weights mispredict the tree):
// the code is the number of midpoints x is above (the tree's '>' tests, so the same ties).
static const float nf4_mid[15] = { -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
    0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f, 0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f };
static inline int nf4_quantize_count(float x) {
    (void)nf4_quantize_value; // (the tree above is the reference the tests hold this to)
    int q = 0;
    for (int k = 0; k < 15; k++) q += x > nf4_mid[k];
    return q;
}

// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) (functional.py):
// for i in 0..6 the midpoints of linspace(0.1, 1, 2^i + 1) scaled by 10^(i-6), both signs (254 values),
// then 0 and 1; sorted. Computed here in float from double linspace values (torch's linspace may
// differ in the last bit; this only affects the 8-bit absmax codes of --double-quant).
static void dynamic_map(float code[256]) {
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int items = (1 << i) + 1;
        float p10 = (float)pow(10.0, -6 + i);
        for (int k = 0; k + 1 < items; k++) {
            float b0 = (float)(0.1 + 0.9 * k / (items - 1)), b1 = (float)(0.1 + 0.9 * (k + 1) / (items - 1));
            float mean = (b0 + b1) / 2.0f;
            code[n++] = p10 * mean;
            code[n++] = -p10 * mean;
        }
    }
    code[n++] = 0; code[n++] = 1.0f; // 254 + 2 = 256
    for (int i = 1; i < 256; i++) // insertion sort
        for (int j = i; j > 0 && code[j - 1] > code[j]; j--) { float t = code[j]; code[j] = code[j - 1]; code[j - 1] = t; }
}
static float dyn_code[256];
static int dyn_code_ready;

// bitsandbytes' dQuantize<STOCHASTIC=0> (csrc/kernels.cu): binary search in the sorted code, then the
// nearer neighbour by midpoint
static int dyn_quantize_value(const float *code, float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f, val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) { lower_pivot = pivot; lower = val; pivot += i; }
        else { upper_pivot = pivot; upper = val; pivot -= i; }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) return x > (upper + val) * 0.5f ? upper_pivot : pivot;
    return x < (lower + val) * 0.5f ? lower_pivot : pivot;
}

static size_t qtensor_qbytes(int type, size_t n) { return type == QT_INT8 || type == QT_HQQ8 ? n : (n + 1) / 2; }
static int qtensor_dq(const QTensor *t) { return t->qabsmax != NULL; }

// the one allocation of n values of the type in blocks of bs (memory_bytes): the codes, then the scales
// (dq: the absmax codes and their fp32 absmax per DQ_BLOCK), each part from a 4-byte boundary
static size_t qtensor_memory_bytes(int type, size_t n, int dq, int bs) {
    size_t nb = (n + bs - 1) / bs, qb = (qtensor_qbytes(type, n) + 3) & ~(size_t)3, n2 = (nb + DQ_BLOCK - 1) / DQ_BLOCK;
    return qb + (dq ? ((nb + 3) & ~(size_t)3) + n2 * sizeof(float) : nb * (type == QT_INT4 ? 2 : qtype_hqq(type) ? 4 : sizeof(float)));
}
// allocate a (rows, cols) tensor of the type with blocks of bs; dq: nf4 with double-quantized absmax
static void qtensor_alloc_bs(QTensor *t, int type, int rows, int cols, int dq, int bs) {
    memset(t, 0, sizeof(*t));
    if (dq && !dyn_code_ready) { dynamic_map(dyn_code); dyn_code_ready = 1; }
    t->type = type; t->bs = bs; t->rows = rows; t->cols = cols;
    t->n = (size_t)rows * cols;
    t->nblocks = (t->n + t->bs - 1) / t->bs;
    size_t qb = (qtensor_qbytes(type, t->n) + 3) & ~(size_t)3;
    t->memory_bytes = qtensor_memory_bytes(type, t->n, dq, bs);
    t->memory = malloc_check(t->memory_bytes);
    advise_huge_pages(t->memory, t->memory_bytes);
    t->q = (uint8_t *)t->memory;
    if (dq) { t->qabsmax = t->q + qb; t->absmax2 = (float *)(t->qabsmax + ((t->nblocks + 3) & ~(size_t)3)); }
    else if (type == QT_INT4) t->scale16 = (uint16_t *)(t->q + qb);
    else if (qtype_hqq(type)) { t->hscale = (uint16_t *)(t->q + qb); t->hzero = t->hscale + t->nblocks; }
    else t->scale = (float *)(t->q + qb);
}
static void qtensor_alloc(QTensor *t, int type, int rows, int cols, int dq) { qtensor_alloc_bs(t, type, rows, cols, dq, qtype_block[type]); }
static void qtensor_free(QTensor *t) { free(t->memory); memset(t, 0, sizeof(*t)); }
static size_t qtensor_bytes(const QTensor *t) {
    return qtensor_qbytes(t->type, t->n) + (qtensor_dq(t) ? t->nblocks + (t->nblocks + DQ_BLOCK - 1) / DQ_BLOCK * 4 + 4 : t->nblocks * (t->type == QT_INT4 ? 2 : 4));
}

static size_t qtensor_bytes_of(const QTensor *t) { return t->memory ? qtensor_bytes(t) : 0; }

// the scale of block b (nf4 with double quantization: the dequantized absmax)
static inline float qtensor_scale(const QTensor *t, size_t b) {
    if (t->scale16) return bf16_to_f32(t->scale16[b]);
    if (!t->qabsmax) return t->scale[b];
    return dyn_code[t->qabsmax[b]] * t->absmax2[b / DQ_BLOCK] + t->offset;
}

// quantize w (rows*cols values) into t (allocated). Non-finite input is an error naming what.
// Quantize blocks [b0, b1) of t from w, which holds the values from element b0*bs on (finite; hqq: the
// caller zeroed t->q); absmax[b] receives each block's max |w| (for double quantization).
// Loading quantizes a large matrix this way in chunks, never holding all of it in float.
static void qtensor_quantize_hqq(QTensor *t, const floatX *w, size_t b0, size_t b1);
static void qtensor_quantize_blocks(QTensor *t, const floatX *w, size_t b0, size_t b1, float *absmax) {
    if (qtype_hqq(t->type)) { qtensor_quantize_hqq(t, w, b0, b1); return; }
    w -= b0 * t->bs; // index w by the element number
    // blocks are independent (an even bs keeps each block's nibbles in its own bytes): one thread each
    #pragma omp parallel for schedule(static) if (b1 - b0 >= 256 && t->bs % 2 == 0)
    for (long bl = (long)b0; bl < (long)b1; bl++) {
        size_t b = (size_t)bl;
        size_t i0 = b * t->bs, i1 = i0 + t->bs < t->n ? i0 + t->bs : t->n;
        float amax = 0;
        for (size_t i = i0; i < i1; i++) { float a = fabsf((float)w[i]); if (a > amax) amax = a; }
        absmax[b] = amax;
        if (t->type != QT_INT8) memset(t->q + (i0 + 1) / 2, 0, (i1 + 1) / 2 - (i0 + 1) / 2); // the bytes whose high nibble is in this block
        if (t->type == QT_INT8 || t->type == QT_INT4) {
            float qmax = t->type == QT_INT8 ? 127.0f : 7.0f, scale = amax / qmax;
            if (t->type == QT_INT8) t->scale[b] = scale;
            else { // bf16, rounded up so that 7 * scale >= max|w|
                uint32_t u;
                memcpy(&u, &scale, 4);
                if (u & 0xFFFF) u = (u & 0xFFFF0000u) + 0x10000u;
                t->scale16[b] = (uint16_t)(u >> 16);
                scale = bf16_to_f32(t->scale16[b]);
            }
            for (size_t i = i0; i < i1; i++) {
                float v = scale > 0 ? (float)w[i] / scale : 0; // clamped first: a denormal scale can overflow it
                v = v > qmax ? qmax : v < -qmax ? -qmax : v;
                int q = (int)roundf(v);
                if (t->type == QT_INT8) t->q[i] = (uint8_t)(int8_t)q;
                else t->q[i >> 1] |= (uint8_t)((q + 8) << (i & 1 ? 0 : 4));
            }
        } else {
            // bitsandbytes multiplies by the reciprocal; a denormal absmax (reciprocal overflows) divides
            float inv = amax > 0 ? 1.0f / amax : 0;
            int fin = isfinite(inv);
            if (t->scale) t->scale[b] = amax;
            for (size_t c0 = i0; c0 < i1; c0 += 64) { // the codes of 64 values (a loop the compiler vectorizes), then packed
                size_t c1 = c0 + 64 < i1 ? c0 + 64 : i1;
                unsigned char code[64];
                if (fin) for (size_t i = c0; i < c1; i++) code[i - c0] = (unsigned char)nf4_quantize_count((float)w[i] * inv); // (amax 0: inv 0)
                else for (size_t i = c0; i < c1; i++) code[i - c0] = (unsigned char)nf4_quantize_count((float)w[i] / amax);
                if (c0 % 2 == 0 && c1 % 2 == 0) for (size_t i = c0; i < c1; i += 2) t->q[i >> 1] = (uint8_t)(code[i - c0] << 4 | code[i - c0 + 1]);
                else for (size_t i = c0; i < c1; i++) t->q[i >> 1] |= (uint8_t)(code[i - c0] << (i & 1 ? 0 : 4));
            }
        }
    }
}
// HQQ: per group g, the inverse scale si = (2^b - 1) / (max - min) (at most 2e4) and zero z = -min * si
// (the min-max fit), then HQQ's default optimiser (optimize_weights_proximal: lp_norm p = 0.7,
// beta = 10, kappa = 1.01, 20 iterations, stopping at the first that does not lower the error):
//   q  = clamp(round(w si + z), 0, 2^b - 1)           quantize with the current zero
//   wr = (q - z) / si                                   dequantize
//   we = shrink_p(w - wr, beta)                         sparse error, shrink_p(x) = sign(x) relu(|x| - |x|^(p-1) / beta)
//   z  = mean_g(q - (w - we) si)                        closed-form zero update per group
//   beta *= kappa; err = mean |w - wr| over all the blocks; stop when err does not improve
// (as HQQ's code, the zero update of the last, non-improving iteration is kept). Then s = 1/si and z
// are rounded to fp16 (HQQ keeps them in fp16) and q is computed with the rounded values.
#define HQQ_LP_NORM 0.7f
#define HQQ_BETA 10.0f
#define HQQ_KAPPA 1.01f
#define HQQ_ITERS 20
#define HQQ_SCALE_MAX 2e4f
static inline float hqq_shrink(float x, float beta) {
    float a = fabsf(x);
    if (a == 0) return 0;
    float v = a - powf(a, HQQ_LP_NORM - 1.0f) / beta;
    return v > 0 ? (x > 0 ? v : -v) : 0;
}
static void qtensor_quantize_hqq(QTensor *t, const floatX *w, size_t b0, size_t b1) {
    float qmax = t->type == QT_HQQ4 ? 15.0f : 255.0f;
    size_t nb = b1 - b0;
    float *si = (float *)malloc_check(nb * sizeof(float)), *z = (float *)malloc_check(nb * sizeof(float));
    w -= b0 * t->bs;
    #pragma omp parallel for schedule(static)
    for (long bl = 0; bl < (long)nb; bl++) { // min-max fit
        size_t b = b0 + (size_t)bl, i0 = b * t->bs, i1 = i0 + t->bs < t->n ? i0 + t->bs : t->n;
        float lo = (float)w[i0], hi = (float)w[i0];
        for (size_t i = i0; i < i1; i++) { float v = (float)w[i]; lo = v < lo ? v : lo; hi = v > hi ? v : hi; }
        float s = qmax / (hi - lo); // +inf for a constant group, clamped like HQQ's
        si[bl] = s < HQQ_SCALE_MAX ? s : HQQ_SCALE_MAX;
        z[bl] = -lo * si[bl];
    }
    double best = 1e4;
    float beta = HQQ_BETA;
    size_t n_el = (b1 * t->bs < t->n ? b1 * t->bs : t->n) - b0 * t->bs;
    for (int it = 0; it < HQQ_ITERS; it++) {
        double err = 0;
        #pragma omp parallel for schedule(static) reduction(+:err)
        for (long bl = 0; bl < (long)nb; bl++) {
            size_t b = b0 + (size_t)bl, i0 = b * t->bs, i1 = i0 + t->bs < t->n ? i0 + t->bs : t->n;
            double zsum = 0, e = 0;
            for (size_t i = i0; i < i1; i++) {
                float v = (float)w[i], q = rintf(v * si[bl] + z[bl]);
                q = q < 0 ? 0 : q > qmax ? qmax : q;
                float wr = (q - z[bl]) / si[bl];
                float we = hqq_shrink(v - wr, beta);
                zsum += q - (v - we) * si[bl];
                e += fabsf(v - wr);
            }
            z[bl] = (float)(zsum / (double)(i1 - i0));
            err += e;
        }
        beta *= HQQ_KAPPA;
        err /= (double)n_el;
        if (err < best) best = err; else break;
    }
    #pragma omp parallel for schedule(static)
    for (long bl = 0; bl < (long)nb; bl++) { // fp16 scale and zero; q from the stored values
        size_t b = b0 + (size_t)bl, i0 = b * t->bs, i1 = i0 + t->bs < t->n ? i0 + t->bs : t->n;
        uint16_t hs = f32_to_f16(1.0f / si[bl]), hz = f32_to_f16(z[bl]);
        float s = f16_to_f32(hs), zz = f16_to_f32(hz);
        if (!(s > 0) || !isfinite(s) || !isfinite(zz)) { // out of fp16's range: the symmetric fit instead
            float amax = 0;
            for (size_t i = i0; i < i1; i++) { float a = fabsf((float)w[i]); amax = a > amax ? a : amax; }
            hs = f32_to_f16(2.0f * amax / qmax); hz = f32_to_f16(qmax / 2); s = f16_to_f32(hs); zz = f16_to_f32(hz);
        }
        t->hscale[b] = hs; t->hzero[b] = hz;
        for (size_t i = i0; i < i1; i++) {
            float q = s > 0 ? rintf((float)w[i] / s + zz) : 0;
            q = q < 0 ? 0 : q > qmax ? qmax : q;
            if (t->type == QT_HQQ8) t->q[i] = (uint8_t)q;
            else t->q[i >> 1] |= (uint8_t)((int)q << (i & 1 ? 0 : 4));
        }
    }
    free(si); free(z);
}

// after all blocks: nf4 double quantization of the absmax values
static void qtensor_quantize_absmax(QTensor *t, const float *absmax) {
    if (t->qabsmax) {
        if (!dyn_code_ready) { dynamic_map(dyn_code); dyn_code_ready = 1; }
        double sum = 0;
        for (size_t b = 0; b < t->nblocks; b++) sum += absmax[b];
        t->offset = (float)(sum / (double)t->nblocks);
        for (size_t b2 = 0; b2 * DQ_BLOCK < t->nblocks; b2++) {
            size_t b0 = b2 * DQ_BLOCK, b1 = b0 + DQ_BLOCK < t->nblocks ? b0 + DQ_BLOCK : t->nblocks;
            float amax = 0;
            for (size_t b = b0; b < b1; b++) { float a = fabsf(absmax[b] - t->offset); if (a > amax) amax = a; }
            t->absmax2[b2] = amax;
            float inv = amax > 0 ? 1.0f / amax : 0;
            for (size_t b = b0; b < b1; b++) {
                float x = isfinite(inv) ? (absmax[b] - t->offset) * inv : (absmax[b] - t->offset) / amax;
                t->qabsmax[b] = (uint8_t)dyn_quantize_value(dyn_code, amax > 0 ? x : 0);
            }
        }
    }
}
// quantize w (rows*cols values) into t (allocated). Non-finite input is an error naming what.
// (the checks by all threads: quantize --random llama2-70b checks 69G values)
static int qtensor_quantize(QTensor *t, const floatX *w, const char *path, const char *what) {
    long first = LONG_MAX, big = LONG_MAX, n = (long)t->n;
    double lim = qtype_hqq(t->type) ? 65504.0 * 7.5 / 2 : INFINITY; // hqq's fp16 scales: a group's scale is at most its range / (2^b - 1)
    #pragma omp parallel for schedule(static) reduction(min:first, big) if (n >= 65536)
    for (long i = 0; i < n; i++) {
        if (!isfinite((double)w[i])) { if (i < first) first = i; }
        else if (fabs((double)w[i]) > lim && i < big) big = i;
    }
    if (first < n) return set_error(path, "cannot quantize %s: non-finite value at index %ld", what, first);
    if (big < n) return set_error(path, "cannot quantize %s to %s: |w| = %g at index %ld is beyond the range of its fp16 scales", what, qtype_names[t->type], (double)w[big], big);
    float *absmax = (float *)malloc_check(t->nblocks * sizeof(float));
    if (qtype_hqq(t->type)) memset(t->q, 0, qtensor_qbytes(t->type, t->n));
    qtensor_quantize_blocks(t, w, 0, t->nblocks, absmax);
    qtensor_quantize_absmax(t, absmax);
    free(absmax);
    return 0;
}

// out[0..n) = the dequantized values start..start+n of t
static void qtensor_dequant(float *out, const QTensor *t, size_t start, size_t n) {
    size_t i = start, end = start + n;
    while (i < end) {
        size_t b = i / t->bs, bend = (b + 1) * t->bs < end ? (b + 1) * t->bs : end;
        if (t->hscale) { // hqq: (q - z) * s
            float s = f16_to_f32(t->hscale[b]), z = f16_to_f32(t->hzero[b]);
            if (t->type == QT_HQQ8) { for (; i < bend; i++) *out++ = ((float)t->q[i] - z) * s; continue; }
            for (; i < bend; i++) *out++ = ((float)((t->q[i >> 1] >> (i & 1 ? 0 : 4)) & 15) - z) * s;
            continue;
        }
        float s = qtensor_scale(t, b);
        if (t->type == QT_INT8) { for (; i < bend; i++) *out++ = (float)(int8_t)t->q[i] * s; continue; }
        // 4-bit: a code book of 16 values (int4: -8..7), two values per byte (element 2i high)
        const float *code = t->type == QT_INT4 ? int4_code : nf4_code;
        if ((i & 1) && i < bend) { *out++ = code[t->q[i >> 1] & 15] * s; i++; }
        for (; i + 1 < bend; i += 2) { uint8_t b = t->q[i >> 1]; out[0] = code[b >> 4] * s; out[1] = code[b & 15] * s; out += 2; }
        if (i < bend) { *out++ = code[t->q[i >> 1] >> 4] * s; i++; }
    }
}

// one dequantized weight row per thread
static float *qrow_scratch;
static size_t qrow_cap;
static int num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
static int team_size(void) { // threads of the enclosing parallel region
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}
static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
static float *qrow_reserve(size_t C) {
    size_t need = (size_t)num_threads() * C;
    if (need > qrow_cap) { free(qrow_scratch); qrow_scratch = (float *)malloc_check(need * sizeof(float)); qrow_cap = need; }
    return qrow_scratch;
}

// x . (one row of an int8 tensor): groups of bs run over the flattened tensor, so a row of C values
// starting at flat index `start` may begin and end inside a group (e.g. C = 288, bs = 64).
// sum over the row's pieces of scale[group] * sum(x * q). bs must be a multiple of 8 (llama2.c's is 64).
// The plain loop is the reference; AVX2 and NEON versions follow (the tests compare them).
MAYBE_UNUSED static floatX dot_int8_naive(const floatX *x, const int8_t *q, const float *scale, size_t start, int C, int bs) {
    floatX val = 0;
    for (int i = 0; i < C;) {
        size_t g = (start + (size_t)i) / (size_t)bs;
        int end = (int)((g + 1) * (size_t)bs - start);
        if (end > C) end = C;
        floatX acc[8] = { 0 };
        int c = i;
        for (; c + 8 <= end; c += 8)
            for (int k = 0; k < 8; k++) acc[k] += x[c + k] * (floatX)q[c + k];
        floatX s = (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
        for (; c < end; c++) s += x[c] * (floatX)q[c];
        val += s * scale[g];
        i = end;
    }
    return val;
}
#if !defined(PEFT_FP64) && defined(__AVX2__) && defined(__FMA__)
#define PEFT_DOT_INT8_SIMD 1
static float hsum256(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}
// AVX2: 8 int8 weights widened to floats per step, one FMA each
static floatX dot_int8(const floatX *x, const int8_t *q, const float *scale, size_t start, int C, int bs) {
    __m256 total = _mm256_setzero_ps();
    float tail = 0;
    for (int i = 0; i < C;) {
        size_t g = (start + (size_t)i) / (size_t)bs;
        int end = (int)((g + 1) * (size_t)bs - start);
        if (end > C) end = C;
        __m256 acc = _mm256_setzero_ps();
        int c = i;
        for (; c + 8 <= end; c += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + c)))), acc);
        float t = 0;
        for (; c < end; c++) t += x[c] * (float)q[c];
        total = _mm256_fmadd_ps(acc, _mm256_set1_ps(scale[g]), total);
        tail += t * scale[g];
        i = end;
    }
    return hsum256(total) + tail;
}
#elif !defined(PEFT_FP64) && defined(__aarch64__) && defined(__ARM_NEON)
#define PEFT_DOT_INT8_SIMD 1
// NEON: 8 int8 weights widened (int8 -> int16 -> int32 -> float) into two 4-float vectors per step
static floatX dot_int8(const floatX *x, const int8_t *q, const float *scale, size_t start, int C, int bs) {
    float32x4_t total = vdupq_n_f32(0.0f);
    float tail = 0;
    for (int i = 0; i < C;) {
        size_t g = (start + (size_t)i) / (size_t)bs;
        int end = (int)((g + 1) * (size_t)bs - start);
        if (end > C) end = C;
        float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
        int c = i;
        for (; c + 8 <= end; c += 8) {
            int16x8_t q16 = vmovl_s8(vld1_s8(q + c));
            acc0 = vfmaq_f32(acc0, vld1q_f32(x + c), vcvtq_f32_s32(vmovl_s16(vget_low_s16(q16))));
            acc1 = vfmaq_f32(acc1, vld1q_f32(x + c + 4), vcvtq_f32_s32(vmovl_s16(vget_high_s16(q16))));
        }
        float t = 0;
        for (; c < end; c++) t += x[c] * (float)q[c];
        total = vfmaq_f32(total, vaddq_f32(acc0, acc1), vdupq_n_f32(scale[g]));
        tail += t * scale[g];
        i = end;
    }
    return vaddvq_f32(total) + tail;
}
#else
#define dot_int8 dot_int8_naive
#endif

// out = inp @ W^T with W quantized (OC,C): each thread dequantizes one row of W at a time.
// Generation (N small) with int8 reads the int8 values directly.
// a quantized tensor's fields for the GPU twins
#define QT_FIELDS(w) (w)->type, (w)->bs, (w)->q, (w)->scale, (w)->scale16, (w)->qabsmax, (w)->absmax2, (w)->offset, dyn_code, (w)->hscale, (w)->hzero
static void qmatmul_forward(floatX *out, const floatX *inp, const QTensor *w, int N, int C, int OC) {
    ON_GPU(gpu_qmatmul_forward(out, inp, QT_FIELDS(w), N, C, OC));
    if (w->type == QT_INT8 && w->bs % 8 == 0 && N <= 4) {
        #pragma omp parallel for schedule(static)
        for (int o = 0; o < OC; o++)
            for (int n = 0; n < N; n++)
                out[(size_t)n * OC + o] = dot_int8(inp + (size_t)n * C, (const int8_t *)w->q + (size_t)o * C, w->scale, (size_t)o * C, C, w->bs);
        return;
    }
    float *scratch = qrow_reserve((size_t)C);
    #pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++) {
        float *row = scratch + (size_t)thread_id() * C;
        qtensor_dequant(row, w, (size_t)o * C, (size_t)C);
        for (int n = 0; n < N; n++) {
            const floatX *x = inp + (size_t)n * C;
            floatX acc[8] = { 0 };
            int c = 0;
            for (; c + 8 <= C; c += 8)
                for (int k = 0; k < 8; k++) acc[k] += x[c + k] * row[c + k];
            floatX val = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            for (; c < C; c++) val += x[c] * row[c];
            out[(size_t)n * OC + o] = val;
        }
    }
}
// dinp += dout @ W with W quantized (OC,C): each thread owns a range of rows n and walks the rows of W
static void qmatmul_backward(floatX *dinp, const floatX *dout, const QTensor *w, int N, int C, int OC) {
    ON_GPU(gpu_qmatmul_backward(dinp, dout, QT_FIELDS(w), N, C, OC));
    float *scratch = qrow_reserve((size_t)C);
    #pragma omp parallel
    {
        int nt = 1, tid = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads(); tid = omp_get_thread_num();
#endif
        int n0 = (int)((long)N * tid / nt), n1 = (int)((long)N * (tid + 1) / nt);
        float *row = scratch + (size_t)tid * C;
        for (int o = 0; o < OC && n0 < n1; o++) {
            qtensor_dequant(row, w, (size_t)o * C, (size_t)C);
            for (int n = n0; n < n1; n++) {
                floatX d = dout[(size_t)n * OC + o], *dx = dinp + (size_t)n * C;
                for (int c = 0; c < C; c++) dx[c] += d * row[c];
            }
        }
    }
}

// ----------------------------------------------------------------------------
// model config and weights: llama2.c .bin (legacy, v1 fp32, v2 int8) and Hugging Face folders

typedef struct {
    int dim;          // C, model width
    int hidden_dim;   // H, SwiGLU width
    int n_layers;     // L
    int n_heads;      // NH
    int n_kv_heads;   // KVH, grouped-query attention: NH % KVH == 0
    int head_dim;     // HS
    int vocab_size;   // V
    int seq_len;      // max positions
    int tied;         // classifier shares the token embedding
    float rope_theta;
    float norm_eps;
    int rope_llama3;  // Llama 3 rope_scaling
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    int bos_id, eos_id;
    int pad_id;       // config.json's pad_token_id, written back by merge (-1: none; Phi3Config's default, 32000, would not fit a small vocabulary)
    // model families beyond Llama: switches of the one layer (all 0 for Llama and Mistral)
    int family;           // FAM_*: names, config.json and the tensor layout of the files
    int attn_bias;        // q, k and v have a bias (Qwen2)
    int qk_norm;          // per-head RMSNorm of q and k before RoPE (Qwen3, Gemma 3)
    int norm_offset;      // every RMSNorm scales by (norm_offset + w): 1 for Gemma, 0 otherwise
    int post_norms;       // RMSNorm of the attention and MLP outputs before each residual add (Gemma 2, 3)
    int geglu;            // the MLP's activation is gelu_pytorch_tanh (GeGLU) instead of silu (SwiGLU)
    float embed_scale;    // the embedding output times this (Gemma: sqrt(C) rounded to fp32); 0: none
    float attn_scale;     // attention scores times this; 0: 1/sqrt(HS)
    float attn_softcap;   // scores s -> c tanh(s/c) before the mask and softmax; 0: none
    float final_softcap;  // logits z -> c tanh(z/c); 0: none
    int sliding_window;   // W: a sliding layer's token i attends to j with i - W < j <= i; 0: none
    float rope_local_theta; // RoPE base of the sliding layers (Gemma 3); 0: rope_theta
    float rope_linear;    // rope_scaling "linear": positions divided by this (global layers only with a local base); 0: none
    int rope_longrope;    // rope_scaling "longrope" (Phi-3 128k, Phi-3.5): inv_freq_i / factor_i with the short factors while the
                          // input has at most rope_orig_max_pos positions, the long ones beyond; cos and sin times rope_attn_factor
    float rope_attn_factor;       // longrope: attention_factor, or sqrt(1 + ln(factor) / ln(original_max_position_embeddings))
    float rope_factor_given;      // longrope: rope_scaling's "factor" when it has one (else factor = max_pos / original), 0: none
    int rope_attn_given;          // longrope: rope_scaling gave attention_factor (written back as given)
    float rope_short[256], rope_long[256]; // longrope: (HS/2) short_factor and long_factor
    unsigned char layer_sliding[1024]; // (L) 1: the layer uses the sliding window
} Config;

// Families: each is Llama's layer with some of the switches above on
enum { FAM_LLAMA, FAM_MISTRAL, FAM_QWEN2, FAM_QWEN3, FAM_GEMMA2, FAM_GEMMA3, FAM_PHI3, NUM_FAMILIES };
static const char *family_arch[NUM_FAMILIES] = { "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM" };
static const char *family_type[NUM_FAMILIES] = { "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3" };
// the window of layer l (0: full causal attention)
static int layer_window(const Config *c, int l) { return c->sliding_window > 0 && c->layer_sliding[l] ? c->sliding_window : 0; }

// where a model came from, so that a trained or merged model is written back the same way
enum { FMT_BIN_LEGACY, FMT_BIN_V1, FMT_BIN_V2, FMT_HF, FMT_BIN_Q4 };

// the linear layers of a block (the modules LoRA can target), in PEFT's names
enum { TGT_Q, TGT_K, TGT_V, TGT_O, TGT_GATE, TGT_UP, TGT_DOWN, NUM_TARGETS };
static const char *target_names[NUM_TARGETS] = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" };
static void target_dims(const Config *c, int t, int *in, int *out) {
    int C = c->dim, H = c->hidden_dim, QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    int ins[NUM_TARGETS] = { C, C, C, QD, C, C, H }, outs[NUM_TARGETS] = { QD, KD, KD, C, H, H, C };
    *in = ins[t]; *out = outs[t];
}

#define NUM_PARAM_TENSORS 19
typedef struct {
    floatX *embed;      // (V, C)
    floatX *rms_att;    // (L, C)
    floatX *wq;         // (L, NH*HS, C)  rows in rotate-half RoPE layout
    floatX *wk;         // (L, KVH*HS, C) rows in rotate-half RoPE layout
    floatX *wv;         // (L, KVH*HS, C)
    floatX *wo;         // (L, C, NH*HS)
    floatX *rms_ffn;    // (L, C)
    floatX *w1;         // (L, H, C) gate_proj
    floatX *w2;         // (L, C, H) down_proj
    floatX *w3;         // (L, H, C) up_proj
    floatX *rms_final;  // (C)
    floatX *wcls;       // (V, C); points at embed when tied (no storage of its own)
    // the families' extra tensors, size 0 where the family has none
    floatX *bq;         // (L, NH*HS) attn_bias
    floatX *bk;         // (L, KVH*HS)
    floatX *bv;         // (L, KVH*HS)
    floatX *q_norm;     // (L, HS) qk_norm, in rotate-half order like q's rows
    floatX *k_norm;     // (L, HS)
    floatX *rms_post_att; // (L, C) post_norms: the attention output's RMSNorm
    floatX *rms_post_ffn; // (L, C) post_norms: the MLP output's RMSNorm
} ParameterTensors;
// tensor i of p (ParameterTensors order)
static floatX **param_ptr(ParameterTensors *p, int i) {
    floatX **ptrs[NUM_PARAM_TENSORS] = { &p->embed, &p->rms_att, &p->wq, &p->wk, &p->wv, &p->wo, &p->rms_ffn, &p->w1, &p->w2, &p->w3, &p->rms_final, &p->wcls,
                                         &p->bq, &p->bk, &p->bv, &p->q_norm, &p->k_norm, &p->rms_post_att, &p->rms_post_ffn };
    return ptrs[i];
}
// tensors with one slice per layer (layers the outer dimension)
static int param_per_layer(int i) { return (i >= 1 && i <= 9) || i >= 12; }
// the Hugging Face name of per-layer tensor i in "model.layers.N.<name>" (Phi-3's fused q/k/v and gate/up: see load_hf)
static const char *hf_layer_name(const Config *c, int i) {
    static const char *names[NUM_PARAM_TENSORS] = { NULL, "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
        "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight", NULL, NULL,
        "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias", "self_attn.q_norm.weight", "self_attn.k_norm.weight",
        "post_attention_layernorm.weight", "post_feedforward_layernorm.weight" };
    if (i == 6 && c->post_norms) return "pre_feedforward_layernorm.weight"; // Gemma: post_attention_layernorm is the attention output's norm
    return names[i];
}

static void fill_in_parameter_sizes(size_t *sizes, const Config *c) {
    size_t C = (size_t)c->dim, H = (size_t)c->hidden_dim, L = (size_t)c->n_layers, V = (size_t)c->vocab_size;
    size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    sizes[0] = V * C;   // embed
    sizes[1] = L * C;   // rms_att
    sizes[2] = L * QD * C;
    sizes[3] = L * KD * C;
    sizes[4] = L * KD * C;
    sizes[5] = L * C * QD;
    sizes[6] = L * C;   // rms_ffn
    sizes[7] = L * H * C;
    sizes[8] = L * C * H;
    sizes[9] = L * H * C;
    sizes[10] = C;      // rms_final
    sizes[11] = c->tied ? 0 : V * C;
    sizes[12] = c->attn_bias ? L * QD : 0;
    sizes[13] = sizes[14] = c->attn_bias ? L * KD : 0;
    sizes[15] = sizes[16] = c->qk_norm ? L * (size_t)c->head_dim : 0;
    sizes[17] = sizes[18] = c->post_norms ? L * C : 0;
}

// carve one allocation into the named tensors
static floatX *point_parameters(ParameterTensors *p, floatX *memory, const size_t *sizes, int tied) {
    floatX *it = memory;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) { *param_ptr(p, i) = it; it += sizes[i]; }
    if (tied) p->wcls = p->embed;
    return memory;
}

typedef struct {
    Config config;
    ParameterTensors params;
    size_t param_sizes[NUM_PARAM_TENSORS];
    size_t num_parameters;
    floatX *params_memory;
    int format;          // FMT_*
    int hf_dtype;        // DT_F32/F16/BF16 of the HF folder's weights
    int v2_group_size;   // for FMT_BIN_V2
    char path[4096];
    // quantized models: the tensors below replace the float ones (whose sizes are then 0)
    int quant;           // QT_* of the linear layers' weights; QT_NONE: all float
    int quant_embed;     // the embedding (and an untied classifier) quantized too
    int quant_dq;        // nf4 absmax double-quantized
    int quant_bs;        // block (group) size of the quantized tensors
    QTensor *qw;         // (L, NUM_TARGETS) when quant
    QTensor qembed, qcls;
    unsigned trained;    // bit i: ParameterTensors tensor i is updated by the trainer (the GPU keeps those in fp32)
    uint16_t *w16[NUM_PARAM_TENSORS]; // QuantOpts.keep16: the tensor's values in bf16 as loaded (a Hugging Face folder),
                         // for a GPU that keeps it in bf16 only; its float storage is then never written (nor paged in)
} Model;

// --shard's loading (set before the model loads; world 0: every rank loads everything): see shard_part
static struct { int rank, world; size_t el; } shard_load; // el: a float weight's bytes a value on the device
// --quant, --quant-embeddings, --double-quant, --group-size (hqq; 0: 64); type -1: as the file stores it;
// keep16: bit i, float tensor i is loaded into Model.w16 in bf16 only (see gpu_keep16)
typedef struct { int type, embed, dq, gs; unsigned keep16; } QuantOpts;

// ParameterTensors index of each target's weight, and back
static const int target_param[NUM_TARGETS] = { 2, 3, 4, 5, 7, 9, 8 };
static int param_target(int i) { for (int t = 0; t < NUM_TARGETS; t++) if (target_param[t] == i) return t; return -1; }
static const char *param_names[NUM_PARAM_TENSORS] = { "embed", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final", "wcls",
                                                       "bq", "bk", "bv", "q_norm", "k_norm", "rms_post_att", "rms_post_ffn" };

static void model_alloc(Model *m) {
    fill_in_parameter_sizes(m->param_sizes, &m->config);
    if (m->quant) { // quantized tensors have no float storage
        for (int t = 0; t < NUM_TARGETS; t++) m->param_sizes[target_param[t]] = 0;
        m->qw = (QTensor *)calloc_check((size_t)m->config.n_layers * NUM_TARGETS, sizeof(QTensor));
        if (m->quant_embed) m->param_sizes[0] = m->param_sizes[11] = 0;
    }
    m->num_parameters = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) m->num_parameters += m->param_sizes[i];
    m->params_memory = (floatX *)malloc_check(m->num_parameters * sizeof(floatX));
    advise_huge_pages(m->params_memory, m->num_parameters * sizeof(floatX));
    point_parameters(&m->params, m->params_memory, m->param_sizes, m->config.tied);
}
static void model_free(Model *m) {
    free(m->params_memory); m->params_memory = NULL;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) { free(m->w16[i]); m->w16[i] = NULL; }
    if (m->qw) for (int i = 0; i < m->config.n_layers * NUM_TARGETS; i++) qtensor_free(&m->qw[i]);
    free(m->qw); m->qw = NULL;
    qtensor_free(&m->qembed); qtensor_free(&m->qcls);
}

// bytes held by the quantized tensors
static size_t model_quant_bytes(const Model *m) {
    size_t b = qtensor_bytes_of(&m->qembed) + qtensor_bytes_of(&m->qcls);
    if (m->qw) for (int i = 0; i < m->config.n_layers * NUM_TARGETS; i++) b += qtensor_bytes_of(&m->qw[i]);
    return b;
}

// bytes the weights will take once loaded (float tensors, and the quantized ones in their blocks), for mem_check
// (keep16: QuantOpts.keep16's tensors are held in bf16 only: 2 bytes a value; with --shard's loading,
// shard_load, a rank holds 1/world of the layers' linear weights)
static double model_need_bytes(const Config *c, int quant, int quant_embed, int dq, unsigned keep16) {
    size_t sz[NUM_PARAM_TENSORS];
    fill_in_parameter_sizes(sz, c);
    double b = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        int outer = i == 0 || i == 11;
        if (shard_load.world > 1 && param_target(i) >= 0) sz[i] = (sz[i] + (size_t)shard_load.world - 1) / (size_t)shard_load.world;
        if (quant && (outer ? quant_embed : param_target(i) >= 0)) {
            QTensor q;
            memset(&q, 0, sizeof(q));
            q.type = quant; q.bs = qtype_block[quant]; q.n = sz[i]; q.nblocks = (q.n + q.bs - 1) / q.bs;
            if (dq) q.qabsmax = (uint8_t *)&q; // only marks double quantization for qtensor_bytes
            b += (double)qtensor_bytes(&q);
        } else b += (double)sz[i] * (keep16 >> i & 1 ? sizeof(uint16_t) : sizeof(floatX));
    }
    return b;
}
static int model_mem_check(const Model *m, const char *path, unsigned keep16) {
    const Config *c = &m->config;
    char what[160];
    snprintf(what, sizeof(what), "the model (dim %d, hidden %d, %d layers, vocab %d)", c->dim, c->hidden_dim, c->n_layers, c->vocab_size);
    return mem_check(path, what, model_need_bytes(c, m->quant, m->quant_embed, m->quant_dq, m->quant ? 0 : keep16), m->quant ? NULL : "; a quantized base (--quant nf4) takes about a seventh");
}

// the base weight of a linear layer: a float (out, in) matrix or a quantized one
typedef struct { const floatX *f; const QTensor *q; } Weight;
static Weight layer_weight(const Model *m, int l, int t) {
    Weight w = { NULL, NULL };
    if (m->quant) { w.q = &m->qw[l * NUM_TARGETS + t]; return w; }
    const ParameterTensors *p = &m->params;
    int in, out;
    target_dims(&m->config, t, &in, &out);
    const floatX *base[NUM_TARGETS] = { p->wq, p->wk, p->wv, p->wo, p->w1, p->w3, p->w2 };
    w.f = base[t] + (size_t)l * in * out;
    return w;
}
// the classifier (V, C)
static Weight cls_weight(const Model *m) {
    Weight w = { NULL, NULL };
    if (m->quant && m->quant_embed) w.q = m->config.tied ? &m->qembed : &m->qcls;
    else w.f = m->params.wcls;
    return w;
}

// ----------------------------------------------------------------------------
// a layer's frozen weights as a device slot holds them, and --shard's chunks of it

// A layer's frozen weights as a device slot holds them (--offload, --shard): tensor i of bytes[i] at off[i], each
// at a 256-byte boundary; returns the layer's bytes (the last tensor's end)
#define SLOT_ALIGN 256
static size_t layer_layout(size_t *off, const size_t *bytes, int n) {
    size_t at = 0, end = 0;
    for (int i = 0; i < n; i++) { off[i] = at; end = at + bytes[i]; at = (end + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN; }
    return end;
}
// --shard: rank r of world keeps bytes [r*chunk, (r+1)*chunk) of each layer's slot image, chunk = the layer's
// bytes / world rounded up to SLOT_ALIGN (so the world chunks side by side hold the layer; the last ones padded)
static size_t shard_chunk_bytes(size_t layer_bytes, int world) {
    size_t ch = (layer_bytes + (size_t)world - 1) / (size_t)world;
    return (ch + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN;
}
// the part of a tensor (bytes at off in the layer) that rank's chunk holds: its length (0: none), from: where it
// starts in the tensor, at: where in the chunk. A loader reads only these byte ranges of its tensors.
static size_t shard_piece(size_t *from, size_t *at, size_t off, size_t bytes, size_t chunk, int rank) {
    size_t b = (size_t)rank * chunk, e = b + chunk, lo = off > b ? off : b, hi = off + bytes < e ? off + bytes : e;
    if (lo >= hi) return 0;
    *from = lo - off; *at = lo - b;
    return hi - lo;
}
// chunk = rank's chunk_bytes of a layer of n tensors src[i] (bytes[i] at off[i]); the padding zero
MAYBE_UNUSED static void shard_fill(uint8_t *chunk, size_t chunk_bytes, const void *const *src, const size_t *off, const size_t *bytes, int n, int rank) {
    memset(chunk, 0, chunk_bytes);
    for (int i = 0; i < n; i++) {
        size_t from, at, len = shard_piece(&from, &at, off[i], bytes[i], chunk_bytes, rank);
        if (len) memcpy(chunk + at, (const uint8_t *)src[i] + from, len);
    }
}
// the device bytes of each of a layer's frozen linear weights (the quantized blocks as they are; a float
// weight at el bytes a value: bf16 2, or fp32) and their offsets in the slot; returns the layer's bytes
static size_t layer_image(size_t *off, size_t *bytes, const Model *m, size_t el) {
    for (int t = 0; t < NUM_TARGETS; t++) {
        int in, out;
        target_dims(&m->config, t, &in, &out);
        size_t n = (size_t)in * out;
        bytes[t] = m->quant ? qtensor_memory_bytes(m->quant, n, m->quant_dq, m->quant_bs) : n * el;
    }
    return layer_layout(off, bytes, NUM_TARGETS);
}
// --shard's loading (set before the model loads; world 0: load everything): rank of world keeps its chunk
// of each layer. Every tensor still gets its whole address range (the streaming names a tensor by its host
// address), but only the part of it that the rank's chunk holds is resident: float weights read just that
// range of values from a safetensors file; quantized ones (and llama2.c files) are read or quantized whole,
// one at a time (NF4's double quantization takes every block's absmax), and the pages outside the part go
// back to the system. So a rank holds about 1/world of the frozen base in host memory, plus one tensor.
// the host bytes [*a, *a + return) of layer weight t that this rank keeps (0: none of it)
static size_t shard_part(size_t *a, const Model *m, int t) {
    size_t off[NUM_TARGETS], bytes[NUM_TARGETS], from = 0, at;
    size_t chunk = shard_chunk_bytes(layer_image(off, bytes, m, shard_load.el), shard_load.world);
    size_t len = shard_piece(&from, &at, off[t], bytes[t], chunk, shard_load.rank);
    size_t host = m->quant ? 1 : sizeof(floatX), dev = m->quant ? 1 : shard_load.el; // a float's host bytes for its device bytes
    *a = from / dev * host;
    return len / dev * host;
}
// layer l's frozen linear weights as a slot streams them: src[t], bytes[t] of them at off[t] in the slot (the
// quantized blocks as they are; a float weight as its bf16 values, rounded as round_bf16_kernel rounds, into
// h16 when given, else as it is; with --shard's loading only this rank's part of it is rounded), and the host
// tensors the kernels name, host[t] of hbytes[t]; returns the layer's bytes
MAYBE_UNUSED static size_t layer_sources(const void **src, size_t *off, size_t *bytes, void **host, size_t *hbytes, const Model *m, int l, uint16_t *h16) {
    for (int t = 0; t < NUM_TARGETS; t++) {
        Weight w = layer_weight(m, l, t);
        int in, out;
        target_dims(&m->config, t, &in, &out);
        size_t n = (size_t)in * out;
        if (w.q) { host[t] = w.q->memory; hbytes[t] = bytes[t] = w.q->memory_bytes; src[t] = w.q->memory; continue; }
        host[t] = (void *)w.f; hbytes[t] = n * sizeof(floatX);
        if (!h16) { src[t] = w.f; bytes[t] = n * sizeof(floatX); continue; }
        size_t a = 0, k = n; // (--shard: [a, a + k))
        if (shard_load.world) { k = shard_part(&a, m, t) / sizeof(floatX); a /= sizeof(floatX); }
        #pragma omp parallel for schedule(static) if (k >= 65536)
        for (long i = (long)a; i < (long)(a + k); i++) h16[i] = f32_to_bf16((float)w.f[i]); // nearest even
        src[t] = h16; bytes[t] = n * sizeof(uint16_t);
        h16 += n;
    }
    return layer_layout(off, bytes, NUM_TARGETS);
}
// weight pi of layer l is in place: with --shard, the pages of it outside this rank's part go back
static void shard_release(Model *m, int pi, int l) {
    int t = param_target(pi);
    if (!shard_load.world || t < 0) return;
    Weight w = layer_weight(m, l, t);
    int in, out;
    target_dims(&m->config, t, &in, &out);
    uint8_t *p = w.q ? (uint8_t *)w.q->memory : (uint8_t *)w.f;
    size_t n = w.q ? w.q->memory_bytes : (size_t)in * out * sizeof(floatX), a, len = shard_part(&a, m, t);
    if (!len) { release_pages(p, n); return; }
    release_pages(p, a);
    release_pages(p + a + len, n - a - len);
}


// Sanity limits so hostile headers cannot ask for absurd allocations.
static int config_validate(const Config *c, const char *path) {
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 || c->vocab_size <= 0 || c->seq_len <= 0 || c->head_dim <= 0)
        return set_error(path, "config has a non-positive size (dim %d hidden %d layers %d heads %d kv_heads %d vocab %d seq_len %d head_dim %d)",
                         c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len, c->head_dim);
    if (c->dim > 65536 || c->hidden_dim > 262144 || c->n_layers > 1024 || c->n_heads > 1024 || c->vocab_size > 4000000 || c->seq_len > 1048576 || c->head_dim > 1024)
        return set_error(path, "config sizes are implausibly large");
    if (c->n_heads % c->n_kv_heads != 0) return set_error(path, "n_heads %d is not a multiple of n_kv_heads %d", c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2) return set_error(path, "head_dim %d must be even for RoPE", c->head_dim);
    if (!(c->norm_eps > 0) || !(c->rope_theta > 0) || !isfinite(c->norm_eps) || !isfinite(c->rope_theta)) return set_error(path, "rms_norm_eps and rope_theta must be positive and finite");
    // every tensor size (and a file's expected size) is a product of these: the whole fp32 model must
    // fit in memory, so that none of them wraps on a 32-bit machine
    double C = c->dim, H = c->hidden_dim, L = c->n_layers, V = c->vocab_size, QD = (double)c->n_heads * c->head_dim, KD = (double)c->n_kv_heads * c->head_dim;
    double params = 2 * V * C + L * (2 * C + 2 * QD * C + 2 * KD * C + 3 * H * C) + C;
    double bytes = params * (sizeof(floatX) > 4 ? sizeof(floatX) : 4) + (double)c->seq_len * c->head_dim * 4 + 4096;
    if (!bytes_fit(bytes))
        return set_error(path, "the model has %.4g parameters (%.4g GB as fp32): too large for this %s machine (at most %.4g GB in one piece)",
                         params, params * 4 / 1e9, machine_bits(), (double)PTRDIFF_MAX / 1e9);
    return 0;
}

// llama2.c checkpoints pair RoPE dimensions as (2i, 2i+1) ("interleaved"); Hugging Face pairs (i, i+HS/2)
// ("rotate-half"). HF's conversion permutes the rows of each head: hf[i] = meta[2i], hf[i+HS/2] = meta[2i+1].
// w is (n_heads*HS, C). to_hf=1 permutes interleaved -> rotate-half; 0 is the inverse.
static void permute_rope_rows(floatX *w, int n_heads, int HS, int C, int to_hf) {
    floatX *tmp = (floatX *)malloc_check((size_t)HS * C * sizeof(floatX));
    for (int h = 0; h < n_heads; h++) {
        floatX *head = w + (size_t)h * HS * C;
        memcpy(tmp, head, (size_t)HS * C * sizeof(floatX));
        for (int i = 0; i < HS / 2; i++) {
            for (int j = 0; j < 2; j++) {
                int meta = 2 * i + j, hf = j * (HS / 2) + i;
                int dst = to_hf ? hf : meta, src = to_hf ? meta : hf;
                memcpy(head + (size_t)dst * C, tmp + (size_t)src * C, (size_t)C * sizeof(floatX));
            }
        }
    }
    free(tmp);
}
static void model_permute_qk(Model *m, int to_hf) {
    Config *c = &m->config;
    size_t qsz = (size_t)c->n_heads * c->head_dim * c->dim, ksz = (size_t)c->n_kv_heads * c->head_dim * c->dim;
    for (int l = 0; l < c->n_layers; l++) {
        permute_rope_rows(m->params.wq + l * qsz, c->n_heads, c->head_dim, c->dim, to_hf);
        permute_rope_rows(m->params.wk + l * ksz, c->n_kv_heads, c->head_dim, c->dim, to_hf);
    }
}

// read n float32 values from f into dst (as floatX), rejecting NaN/Inf
static int fread_f32(floatX *dst, size_t n, FILE *f, const char *path, const char *what) {
    if (sizeof(floatX) == sizeof(float) && n * sizeof(float) >= 2 * READ_PIECE) { // large: straight into place by all threads
        if (fread_all(dst, n * sizeof(float), f)) return set_error(path, "truncated while reading %s", what);
        le_swap(dst, sizeof(float), n);
        long bad = -1;
        #pragma omp parallel for schedule(static) reduction(max:bad)
        for (long i = 0; i < (long)n; i++) if (!isfinite(dst[i])) bad = i; // (any one of them)
        if (bad >= 0) return set_error(path, "non-finite value in %s at index %ld", what, bad);
        return 0;
    }
    float buf[4096];
    for (size_t i = 0; i < n; i += 4096) {
        size_t k = n - i < 4096 ? n - i : 4096;
        if (fread_le(buf, sizeof(float), k, f) != k) return set_error(path, "truncated while reading %s", what);
        for (size_t j = 0; j < k; j++) {
            if (!isfinite(buf[j])) return set_error(path, "non-finite value in %s at index %zu", what, i + j);
            dst[i + j] = buf[j];
        }
    }
    return 0;
}

#define BIN_MAGIC 0x616b3432u  // "ak42" in little-endian
static void config_defaults(Config *c) { // every other field 0 (the families' switches off)
    memset(c, 0, sizeof(*c));
    c->rope_theta = 10000.0f; c->norm_eps = 1e-5f; c->bos_id = 1; c->eos_id = 2; c->pad_id = -1; c->rope_llama3 = 0;
}

// one matrix as read from a file: tensor i (ParameterTensors order) of layer l (0 for embed/classifier),
// w (rows, cols) in float; interleaved: its q/k rows are in llama2.c's RoPE order (permuted here).
// Quantized tensors are quantized here, one matrix at a time: a quantized model never holds its float weights.
static void param_dims(const Config *c, int i, int *rows, int *cols) {
    if (i == 0 || i == 11) { *rows = c->vocab_size; *cols = c->dim; return; }
    target_dims(c, param_target(i), cols, rows);
}
static int model_put_matrix(Model *m, int i, int l, floatX *w, int interleaved) {
    Config *c = &m->config;
    int rows, cols, t = param_target(i);
    param_dims(c, i, &rows, &cols);
    if (interleaved && (i == 2 || i == 3)) permute_rope_rows(w, i == 2 ? c->n_heads : c->n_kv_heads, c->head_dim, c->dim, 1);
    QTensor *q = t >= 0 ? (m->quant ? &m->qw[l * NUM_TARGETS + t] : NULL) : (m->quant && m->quant_embed ? (i == 0 ? &m->qembed : &m->qcls) : NULL);
    if (!q && m->w16[i]) { // kept in bf16 only (QuantOpts.keep16)
        uint16_t *d = m->w16[i] + (size_t)l * rows * cols;
        for (size_t k = 0; k < (size_t)rows * cols; k++) d[k] = f32_to_bf16((float)w[k]);
        return 0;
    }
    if (!q) {
        floatX *ptrs[NUM_PARAM_TENSORS] = { m->params.embed, m->params.rms_att, m->params.wq, m->params.wk, m->params.wv, m->params.wo, m->params.rms_ffn, m->params.w1, m->params.w2, m->params.w3, m->params.rms_final, m->params.wcls };
        memcpy(ptrs[i] + (size_t)l * rows * cols, w, (size_t)rows * cols * sizeof(floatX));
        shard_release(m, i, l);
        return 0;
    }
    qtensor_alloc_bs(q, m->quant, rows, cols, m->quant_dq, m->quant_bs);
    char what[64];
    snprintf(what, sizeof(what), "%s of layer %d", param_names[i], l);
    int rc = qtensor_quantize(q, w, m->path, what);
    if (!rc && t >= 0) shard_release(m, i, l);
    return rc;
}
// tmp (rows, cols) = matrix i of layer l, float or dequantized, in rotate-half order
static void model_get_matrix(floatX *tmp, const Model *m, int i, int l) {
    const Config *c = &m->config;
    int rows, cols, t = param_target(i);
    param_dims(c, i, &rows, &cols);
    const QTensor *q = t >= 0 ? (m->quant ? &m->qw[l * NUM_TARGETS + t] : NULL) : (m->quant && m->quant_embed ? (i == 11 && !c->tied ? &m->qcls : &m->qembed) : NULL);
    size_t n = (size_t)rows * cols;
    if (q) {
        float buf[4096];
        for (size_t k = 0; k < n; k += 4096) {
            size_t kk = n - k < 4096 ? n - k : 4096;
            qtensor_dequant(buf, q, k, kk);
            for (size_t j = 0; j < kk; j++) tmp[k + j] = buf[j];
        }
        return;
    }
    const floatX *ptrs[NUM_PARAM_TENSORS] = { m->params.embed, m->params.rms_att, m->params.wq, m->params.wk, m->params.wv, m->params.wo, m->params.rms_ffn, m->params.w1, m->params.w2, m->params.w3, m->params.rms_final, m->params.wcls };
    memcpy(tmp, ptrs[i] + (size_t)l * n, n * sizeof(floatX));
}

// permute_rope_rows on a quantized tensor whose rows are whole blocks (a row is moved with its scales)
static void qtensor_permute_rope_rows(QTensor *t, int n_heads, int HS, int to_hf) {
    size_t rb = qtensor_qbytes(t->type, (size_t)t->cols), rs = (size_t)t->cols / t->bs;
    uint8_t *tq = (uint8_t *)malloc_check((size_t)HS * rb);
    float *ts = (float *)malloc_check((size_t)HS * rs * sizeof(float));
    for (int h = 0; h < n_heads; h++) {
        uint8_t *hq = t->q + (size_t)h * HS * rb;
        float *hs = t->scale + (size_t)h * HS * rs;
        memcpy(tq, hq, (size_t)HS * rb); memcpy(ts, hs, (size_t)HS * rs * sizeof(float));
        for (int i = 0; i < HS / 2; i++)
            for (int j = 0; j < 2; j++) {
                int meta = 2 * i + j, hf = j * (HS / 2) + i, dst = to_hf ? hf : meta, src = to_hf ? meta : hf;
                memcpy(hq + (size_t)dst * rb, tq + (size_t)src * rb, rb);
                memcpy(hs + (size_t)dst * rs, ts + (size_t)src * rs, rs * sizeof(float));
            }
    }
    free(tq); free(ts);
}

// the bytes model_alloc and the quantized tensors will take (config, quant, quant_embed, quant_bs set)
static double model_bytes_estimate(const Model *m) {
    size_t sz[NUM_PARAM_TENSORS];
    fill_in_parameter_sizes(sz, &m->config);
    double b = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (shard_load.world > 1 && param_target(i) >= 0) sz[i] = (sz[i] + (size_t)shard_load.world - 1) / (size_t)shard_load.world; // (a rank's part)
        int quantized = m->quant && (param_target(i) >= 0 || ((i == 0 || i == 11) && m->quant_embed));
        if (quantized) b += sz[i] * ((m->quant == QT_INT8 || m->quant == QT_HQQ8 ? 1.0 : 0.5) + (m->quant == QT_INT4 ? 2.0 : 4.0) / m->quant_bs);
        else b += sz[i] * (double)sizeof(floatX);
    }
    return b;
}
// refuse, before allocating, a model whose weights do not fit in the memory the system has available
// (Linux: MemAvailable in /proc/meminfo; elsewhere no check)
static int memory_check(const char *path, double bytes, const char *what) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    double avail = -1;
    while (fgets(line, sizeof(line), f)) { long long kb; if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) avail = kb * 1024.0; }
    fclose(f);
    if (avail > 0 && bytes > avail)
        return set_error(path, "needs %.1f GiB for its %s but %.1f GiB of memory are available (quantize it while loading: --quant nf4|int4|int8|hqq4)", bytes / 1073741824.0, what, avail / 1073741824.0);
    return 0;
}

// read a serialized quantized tensor (layout in the file-format comment of load_bin) into t (allocated)
// a quantized tensor as the file stores it: its codes, then its scales (see load_bin's formats); the bytes
// [a, b) of its memory only (--shard's loading keeps a rank's part: a whole tensor is [0, SIZE_MAX)), read
// by the threads (pread), the stream left past the tensor. Scales read are checked finite.
static int qtensor_read_part(QTensor *t, FILE *f, const char *path, size_t a, size_t b) {
    enum { CODES, F32, F16, BF16 };
    typedef struct { void *dst; size_t bytes; int kind; } QPart;
    size_t nb = t->nblocks, n2 = (nb + DQ_BLOCK - 1) / DQ_BLOCK;
    QPart part[4] = { { t->q, qtensor_qbytes(t->type, t->n), CODES } };
    int np = 1;
    if (t->qabsmax) { part[np++] = (QPart){ t->qabsmax, nb, CODES }; part[np++] = (QPart){ t->absmax2, n2 * 4, F32 }; part[np++] = (QPart){ &t->offset, 4, F32 }; }
    else if (t->hscale) { part[np++] = (QPart){ t->hscale, nb * 2, F16 }; part[np++] = (QPart){ t->hzero, nb * 2, F16 }; }
    else if (t->scale16) part[np++] = (QPart){ t->scale16, nb * 2, BF16 };
    else part[np++] = (QPart){ t->scale, nb * 4, F32 };
    off_t at = ftello(f);
    for (int i = 0; i < np; i++) {
        uint8_t *dst = (uint8_t *)part[i].dst;
        int in_memory = dst != (uint8_t *)&t->offset; // (the offset is a field: always read)
        size_t mo = in_memory ? (size_t)(dst - (uint8_t *)t->memory) : 0; // [lo, hi) of this part is in [a, b)
        size_t lo = in_memory && a > mo ? a - mo : 0, hi = !in_memory ? part[i].bytes : b > mo ? b - mo : 0;
        if (hi > part[i].bytes) hi = part[i].bytes;
        if (lo < hi) {
            size_t es = part[i].kind == CODES ? 1 : part[i].kind == F32 ? 4 : 2;
            if (pread_all(fileno(f), dst + lo, hi - lo, at + (off_t)lo)) return set_error(path, i ? "truncated quantized scales" : "truncated quantized weights");
            le_swap(dst + lo, es, (hi - lo) / es);
            for (size_t k = lo; k < hi && part[i].kind != CODES; k += es) {
                float v;
                if (part[i].kind == F32) memcpy(&v, dst + k, 4);
                else { uint16_t h; memcpy(&h, dst + k, 2); v = part[i].kind == F16 ? f16_to_f32(h) : bf16_to_f32(h); }
                if (!isfinite(v)) return set_error(path, "non-finite quantization %s", in_memory ? (t->hscale ? "scale or zero" : "scale") : "offset");
            }
        }
        at += (off_t)part[i].bytes;
    }
    if (fseeko(f, at, SEEK_SET)) return set_error(path, "truncated quantized scales");
    return 0;
}

// llama2.c checkpoints. Legacy: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size
// (negative: unshared classifier), seq_len), then fp32 tensors. v1: 256-byte header with magic "ak42",
// version 1, the 7 ints and a shared_classifier byte. v2 (llama2.c's int8): like v1 plus int32 group_size
// at byte 37; fp32 norms (rms_att, rms_ffn, rms_final), then embed, wq, wk, wv, wo, w1, w2, w3 (and wcls
// when not shared), each layer's matrix as int8 values then fp32 group scales (w = q * scale).
// peft.c's 4-bit files, version 3 (int4) and 4 (nf4): the v2 header, the block size at byte 37 (32 or 64)
// and a flags byte at 41 (bit 0: nf4 absmax double-quantized, bit 1: embeddings quantized); fp32 norms,
// then embed, wq, wk, wv, wo, w1, w2, w3, (wcls), each layer's matrix as a quantized tensor (fp32 when
// the embeddings are not quantized): (n+1)/2 bytes of nibbles (element 2i high), then nblocks fp32
// scales (int4: max|w|/7; nf4: absmax), or with double quantization nblocks uint8 absmax codes,
// ceil(nblocks/256) fp32 second-level absmax and one fp32 offset. Unlike v1/v2, the q/k rows of
// versions 3 and 4 are stored in rotate-half order (as peft.c keeps them: no requantization on load).
// Version 5 (HQQ): as version 3/4 with the group size at byte 37 (8..4096), flags at 41 (bit 1:
// embeddings quantized) and the bits (4 or 8) at byte 42; each quantized tensor is its codes (4-bit:
// (n+1)/2 bytes of nibbles, element 2i high; 8-bit: n bytes), then nblocks fp16 scales, then nblocks
// fp16 zero points (w = (q - z) * s).
static int load_bin(Model *m, const char *path, const QuantOpts *qo) {
    FILE *f = fopen(path, "rb");
    if (!f) return set_error(path, "cannot open: %s", strerror(errno));
    fseeko(f, 0, SEEK_END);
    off_t fsize = ftello(f);
    rewind(f);
    if (fsize < 0 || !bytes_fit((double)fsize)) { fclose(f); return set_error(path, "file of %.4g GB is too large for this %s machine", (double)fsize / 1e9, machine_bits()); }
    Config *c = &m->config;
    memset(c, 0, sizeof(*c));
    config_defaults(c);
    int32_t h[9] = { 0 };
    uint32_t magic = 0;
    if (fread_le(&magic, 4, 1, f) != 1) { fclose(f); return set_error(path, "truncated header"); }
    int version = 0, gs = 0, flags = 0, hqq_bits = 0;
    size_t header_size;
    if (magic == BIN_MAGIC) {
        unsigned char hdr[256];
        if (fsize < 256 || fread(hdr + 4, 1, 252, f) != 252) { fclose(f); return set_error(path, "truncated version header"); }
        memcpy(&version, hdr + 4, 4); le_swap(&version, 4, 1);
        memcpy(h, hdr + 8, 7 * 4); le_swap(h, 4, 7);
        c->tied = hdr[36];
        if (version >= 2) { memcpy(&gs, hdr + 37, 4); le_swap(&gs, 4, 1); }
        flags = hdr[41];
        hqq_bits = hdr[42];
        if (version < 1 || version > 5) { fclose(f); return set_error(path, "unsupported llama2.c checkpoint version %d (1 and 2 are supported, and peft.c's 3, 4 and 5)", version); }
        if (c->tied > 1) { fclose(f); return set_error(path, "bad shared_classifier flag %d", c->tied); }
        if ((version == 3 || version == 4) && (gs != qtype_block[version == 3 ? QT_INT4 : QT_NF4] || flags > 3 || (version == 3 && (flags & 1)))) { fclose(f); return set_error(path, "bad block size %d or flags %d for version %d", gs, flags, version); }
        if (version == 5 && (gs < 8 || gs > 4096 || (flags & ~2) || (hqq_bits != 4 && hqq_bits != 8))) { fclose(f); return set_error(path, "bad group size %d, flags %d or bits %d for version 5 (hqq)", gs, flags, hqq_bits); }
        header_size = 256;
    } else {
        memcpy(&h[0], &magic, 4);
        if (fread_le(h + 1, 4, 6, f) != 6) { fclose(f); return set_error(path, "truncated header"); }
        header_size = 28;
        if (h[5] == INT32_MIN) { fclose(f); return set_error(path, "bad vocab_size in header"); }
        c->tied = h[5] > 0;
        h[5] = abs(h[5]);
    }
    c->dim = h[0]; c->hidden_dim = h[1]; c->n_layers = h[2]; c->n_heads = h[3]; c->n_kv_heads = h[4]; c->vocab_size = h[5]; c->seq_len = h[6];
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    if (config_validate(c, path)) { fclose(f); return -1; }
    if (c->dim % c->n_heads) { fclose(f); return set_error(path, "dim %d is not a multiple of n_heads %d", c->dim, c->n_heads); }
    m->format = version == 0 ? FMT_BIN_LEGACY : version == 1 ? FMT_BIN_V1 : version == 2 ? FMT_BIN_V2 : FMT_BIN_Q4;
    // the stored quantization, and the one asked for
    int st_type = version == 2 ? QT_INT8 : version == 3 ? QT_INT4 : version == 4 ? QT_NF4 : version == 5 ? (hqq_bits == 4 ? QT_HQQ4 : QT_HQQ8) : QT_NONE;
    int st_embed = version == 2 || (flags & 2), st_dq = flags & 1;
    int as_stored = !qo || qo->type < 0;
    m->quant = as_stored ? st_type : qo->type;
    m->quant_embed = m->quant ? (as_stored ? st_embed : qo->embed) : 0;
    m->quant_dq = m->quant == QT_NF4 ? (as_stored ? st_dq : qo->dq) : 0;
    m->quant_bs = as_stored && version >= 3 ? gs : m->quant ? (qtype_hqq(m->quant) && qo && qo->gs ? qo->gs : qtype_block[m->quant]) : 0;
    size_t sz[NUM_PARAM_TENSORS];
    fill_in_parameter_sizes(sz, c);
    size_t L = (size_t)c->n_layers, HS = (size_t)c->head_dim;
    // expected file size, so that a truncated or padded file is an error and not a silent wrong answer
    size_t weights = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) weights += sz[i];
    size_t norms = sz[1] + sz[6] + sz[10], expect = header_size;
    if (version == 2) {
        if (gs <= 0 || gs > 4096) { fclose(f); return set_error(path, "bad int8 group size %d", gs); }
        // each quantized tensor must be a whole number of groups
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
            if (i == 1 || i == 6 || i == 10) continue;
            size_t per = (i == 0 || i == 11) ? sz[i] : sz[i] / L;
            if (per % (size_t)gs) { fclose(f); return set_error(path, "tensor size %zu is not a multiple of group size %d", per, gs); }
        }
        size_t qn = weights - norms;
        expect += norms * 4 + qn + qn / (size_t)gs * 4;
        m->v2_group_size = gs;
    } else if (version >= 3) {
        expect += norms * 4;
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
            if (i == 1 || i == 6 || i == 10 || !sz[i]) continue;
            int outer = i == 0 || i == 11, rows, cols;
            if (outer && !st_embed) { expect += sz[i] * 4; continue; }
            param_dims(c, i, &rows, &cols);
            QTensor t = { 0 };
            t.type = st_type; t.bs = gs; t.n = (size_t)rows * cols; t.nblocks = (t.n + gs - 1) / gs;
            if (version == 5) t.hscale = (uint16_t *)&t; // only marks hqq for qtensor_bytes
            if (st_dq) t.qabsmax = (uint8_t *)&t; // only marks double quantization for qtensor_bytes
            expect += qtensor_bytes(&t) * (outer ? 1 : L);
        }
    } else {
        expect += weights * 4 + (version == 0 ? (size_t)c->seq_len * HS * 4 : 0); // legacy files carry freq_cis
    }
    if ((size_t)fsize != expect) { fclose(f); return set_error(path, "file is %lld bytes but its header (dim %d, layers %d, vocab %d) implies %zu", (long long)fsize, c->dim, c->n_layers, c->vocab_size, expect); }
    if (model_mem_check(m, path, 0)) { fclose(f); return -1; }
    if (memory_check(path, model_bytes_estimate(m), m->quant ? "weights" : "fp32 weights")) { fclose(f); return -1; }
    model_alloc(m);
    ParameterTensors *p = &m->params;
    fseeko(f, (off_t)header_size, SEEK_SET);
    int rc = 0;
    // the matrices, one layer at a time through tmp (the largest matrix)
    size_t maxm = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) { size_t per = (i == 0 || i == 11) ? sz[i] : sz[i] / L; if (per > maxm) maxm = per; }
    floatX *tmp = (floatX *)malloc_check(maxm * sizeof(floatX)); // untouched (not resident) when tensors load directly
    int8_t *q8 = NULL;
    floatX *s8 = NULL;
    // file order of the tensors (norms are read straight into place)
    int order_legacy[12] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 }, order_v1[12] = { 1, 6, 10, 0, 2, 3, 4, 5, 7, 8, 9, 11 };
    const int *order = version == 0 ? order_legacy : order_v1;
    for (int k = 0; k < 12 && !rc; k++) { // (llama2.c files hold the first 12 tensors only)
        int i = order[k];
        if (i == 11 && c->tied) continue;
        if (version == 0 && i == 11) fseeko(f, (off_t)c->seq_len * (off_t)HS * 4, SEEK_CUR); // skip freq_cis_real and freq_cis_imag
        floatX *ptrs[NUM_PARAM_TENSORS] = { p->embed, p->rms_att, p->wq, p->wk, p->wv, p->wo, p->rms_ffn, p->w1, p->w2, p->w3, p->rms_final, p->wcls };
        if (i == 1 || i == 6 || i == 10) { rc = fread_f32(ptrs[i], sz[i], f, path, param_names[i]); continue; }
        int outer = i == 0 || i == 11;
        size_t count = outer ? 1 : L, per = sz[i] / count;
        for (size_t l = 0; l < count && !rc; shard_release(m, i, (int)l++)) { // (--shard: each layer's tensor, once in place, keeps its part)
            QTensor *qd = outer ? (m->quant_embed ? (i == 0 ? &m->qembed : &m->qcls) : NULL) : (m->quant ? &m->qw[l * NUM_TARGETS + param_target(i)] : NULL);
            size_t chunk = (size_t)qtype_block[m->quant ? m->quant : 1] * 4096;
            // (not hqq: its optimiser stops on the error of the whole matrix, so it sees the whole matrix)
            if (qd && i != 2 && i != 3 && per > chunk && !qtype_hqq(m->quant) && (version <= 1 || (version >= 3 && outer && !st_embed))) {
                // a large fp32 matrix that needs no RoPE permutation: quantized in chunks of whole blocks
                int rows, cols;
                param_dims(c, i, &rows, &cols);
                qtensor_alloc(qd, m->quant, rows, cols, m->quant_dq);
                memset(qd->q, 0, qtensor_qbytes(qd->type, qd->n));
                float *absmax = (float *)malloc_check(qd->nblocks * sizeof(float));
                for (size_t j = 0; j < per && !rc; j += chunk) {
                    size_t k = per - j < chunk ? per - j : chunk;
                    if (!(rc = fread_f32(tmp, k, f, path, param_names[i]))) qtensor_quantize_blocks(qd, tmp, j / qd->bs, (j + k + qd->bs - 1) / qd->bs, absmax);
                }
                if (!rc) qtensor_quantize_absmax(qd, absmax);
                free(absmax);
                continue;
            }
            if (!qd && (version <= 1 || (version >= 3 && outer && !st_embed))) { // fp32 kept fp32: read into place
                floatX *dst = ptrs[i] + l * per;
                if ((rc = fread_f32(dst, per, f, path, param_names[i]))) break;
                if (version <= 1 && (i == 2 || i == 3)) permute_rope_rows(dst, i == 2 ? c->n_heads : c->n_kv_heads, c->head_dim, c->dim, 1);
                continue;
            }
            if (version <= 1 || (version >= 3 && outer && !st_embed)) {
                if ((rc = fread_f32(tmp, per, f, path, param_names[i]))) break;
            } else if (version == 2 && m->quant == QT_INT8 && gs == qtype_block[QT_INT8] && (!outer || m->quant_embed) && (c->dim % gs == 0 || (i != 2 && i != 3))) {
                // int8 kept as int8: read straight into the tensor (q/k rows permuted with their scales)
                int rows, cols;
                param_dims(c, i, &rows, &cols);
                QTensor *t = outer ? (i == 0 ? &m->qembed : &m->qcls) : &m->qw[l * NUM_TARGETS + param_target(i)];
                qtensor_alloc(t, QT_INT8, rows, cols, 0);
                if (fread_all(t->q, per, f) || fread_le(t->scale, 4, t->nblocks, f) != t->nblocks) { rc = set_error(path, "truncated int8 weights"); break; }
                for (size_t b = 0; b < t->nblocks; b++) if (!isfinite(t->scale[b])) { rc = set_error(path, "non-finite value in int8 scales of %s", param_names[i]); break; }
                if (!rc && (i == 2 || i == 3)) qtensor_permute_rope_rows(t, i == 2 ? c->n_heads : c->n_kv_heads, c->head_dim, 1);
                continue;
            } else if (version == 2) {
                q8 = (int8_t *)realloc_check(q8, per);
                s8 = (floatX *)realloc_check(s8, per / (size_t)gs * sizeof(floatX));
                if (fread(q8, 1, per, f) != per) { rc = set_error(path, "truncated int8 weights"); break; }
                if ((rc = fread_f32(s8, per / (size_t)gs, f, path, "int8 scales"))) break;
                for (size_t j = 0; j < per; j++) tmp[j] = q8[j] * s8[j / (size_t)gs];
            } else { // versions 3, 4, 5: read the tensor; keep it when it is what was asked for
                int rows, cols;
                param_dims(c, i, &rows, &cols);
                QTensor t;
                qtensor_alloc_bs(&t, st_type, rows, cols, st_dq, gs);
                QTensor *dst = outer ? (m->quant_embed ? (i == 0 ? &m->qembed : &m->qcls) : NULL) : (m->quant ? &m->qw[l * NUM_TARGETS + param_target(i)] : NULL);
                int as_stored = dst && m->quant == st_type && m->quant_dq == st_dq && m->quant_bs == gs;
                size_t a = 0, len = SIZE_MAX - 1; // (--shard: a layer's tensor kept as stored reads only this rank's part)
                if (as_stored && !outer && shard_load.world) len = shard_part(&a, m, param_target(i));
                if ((rc = qtensor_read_part(&t, f, path, a, a + len))) { qtensor_free(&t); break; }
                if (as_stored) { *dst = t; continue; }
                float buf[4096];
                for (size_t j = 0; j < per; j += 4096) {
                    size_t kk = per - j < 4096 ? per - j : 4096;
                    qtensor_dequant(buf, &t, j, kk);
                    for (size_t x = 0; x < kk; x++) tmp[j + x] = buf[x];
                }
                qtensor_free(&t);
            }
            rc = model_put_matrix(m, i, (int)l, tmp, version <= 2);
        }
    }
    free(q8); free(s8); free(tmp);
    fclose(f);
    if (rc) model_free(m);
    return rc;
}

// Hugging Face folder: config.json + model.safetensors or shards listed in model.safetensors.index.json
// a rope_scaling / rope_parameters object: default, llama3, linear or (Phi-3) longrope; anything else is refused.
// j: the whole config (longrope's original_max_position_embeddings is there in transformers 4 files)
static int rope_scaling_from_hf(Config *c, const Json *scaling, const Json *j, const char *path) {
    const char *type = json_str(json_get(scaling, "rope_type"));
    if (!type) type = json_str(json_get(scaling, "type"));
    double prf = json_num_or(scaling, "partial_rotary_factor", 1.0); // (transformers 5 keeps it in rope_parameters)
    if (prf != 1.0) return set_error(path, "partial_rotary_factor %g: partial RoPE is not supported", prf);
    if (!type || !strcmp(type, "default")) return 0; // plain RoPE
    if (!strcmp(type, "llama3")) {
        c->rope_llama3 = 1;
        c->rope_factor = (float)json_num_or(scaling, "factor", 8.0);
        c->rope_low_freq_factor = (float)json_num_or(scaling, "low_freq_factor", 1.0);
        c->rope_high_freq_factor = (float)json_num_or(scaling, "high_freq_factor", 4.0);
        double omp = json_num_or(scaling, "original_max_position_embeddings", 8192); // checked before the cast: (int)1e300 is undefined
        c->rope_orig_max_pos = omp >= 1 && omp <= INT_MAX ? (int)omp : 0;
        if (!(c->rope_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor) || c->rope_orig_max_pos <= 0 ||
            !isfinite(c->rope_factor) || !isfinite(c->rope_low_freq_factor) || !isfinite(c->rope_high_freq_factor))
            return set_error(path, "bad llama3 rope_scaling values");
        return 0;
    }
    if (!strcmp(type, "linear")) {
        double f = json_num_or(scaling, "factor", 0);
        if (!(f >= 1) || !isfinite(f)) return set_error(path, "rope_scaling linear needs a factor >= 1");
        c->rope_linear = (float)f;
        return 0;
    }
    if (!strcmp(type, "longrope")) { // transformers' _compute_longrope_parameters
        if (c->family != FAM_PHI3) return set_error(path, "rope_scaling longrope is supported for Phi3ForCausalLM only, not %s", family_arch[c->family]);
        int half = c->head_dim / 2;
        if (half > 256) return set_error(path, "rope_scaling longrope: head_dim %d is more than 512", c->head_dim);
        const char *names[2] = { "short_factor", "long_factor" };
        float *dst[2] = { c->rope_short, c->rope_long };
        for (int k = 0; k < 2; k++) {
            const Json *f = json_get(scaling, names[k]);
            if (!f || f->type != JSON_ARRAY || f->n != half) return set_error(path, "rope_scaling longrope: %s must list head_dim / 2 = %d numbers", names[k], half);
            for (int i = 0; i < half; i++) {
                if (!json_is_num(&f->items[i]) || !(f->items[i].num > 0) || !isfinite((float)f->items[i].num)) return set_error(path, "rope_scaling longrope: %s[%d] must be a positive number", names[k], i);
                dst[k][i] = (float)f->items[i].num; // transformers: a float32 tensor
            }
        }
        double omp = json_num_or(scaling, "original_max_position_embeddings", json_num_or(j, "original_max_position_embeddings", 0));
        if (!(omp >= 2 && omp <= INT_MAX)) return set_error(path, "rope_scaling longrope needs original_max_position_embeddings (an integer >= 2)");
        c->rope_orig_max_pos = (int)omp;
        double factor = json_num_or(scaling, "factor", 0), af = json_num_or(scaling, "attention_factor", 0);
        if (json_get(scaling, "factor") && json_get(scaling, "factor")->type != JSON_NULL && !(factor > 0 && isfinite(factor))) return set_error(path, "rope_scaling longrope: factor must be positive");
        if (json_get(scaling, "attention_factor") && json_get(scaling, "attention_factor")->type != JSON_NULL && !(af > 0 && isfinite(af))) return set_error(path, "rope_scaling longrope: attention_factor must be positive");
        c->rope_factor_given = (float)factor;
        if (!(factor > 0)) factor = (double)c->seq_len / c->rope_orig_max_pos; // Phi-3: max_position_embeddings / original
        c->rope_attn_given = af > 0;
        if (!(af > 0)) af = factor <= 1 ? 1.0 : sqrt(1 + log(factor) / log((double)c->rope_orig_max_pos));
        c->rope_attn_factor = (float)af;
        c->rope_longrope = 1;
        return 0;
    }
    return set_error(path, "unsupported rope scaling type '%s' (default, linear, llama3 and, for Phi-3, longrope are supported)", type);
}

// layer_types (transformers 5, and 4.5x): "sliding_attention" / "full_attention" per layer into c->layer_sliding;
// 1 if the field is there, 0 if not, -1 on a bad value
static int layer_types_from_hf(Config *c, const Json *j, const char *path) {
    const Json *lt = json_get(j, "layer_types");
    if (!lt || lt->type == JSON_NULL) return 0;
    if (lt->type != JSON_ARRAY || lt->n != c->n_layers) return set_error(path, "layer_types must list one type for each of the %d layers", c->n_layers);
    for (int i = 0; i < lt->n; i++) {
        const char *t = json_str(&lt->items[i]);
        if (t && !strcmp(t, "sliding_attention")) c->layer_sliding[i] = 1;
        else if (t && !strcmp(t, "full_attention")) c->layer_sliding[i] = 0;
        else return set_error(path, "layer_types[%d] is '%s' (sliding_attention and full_attention are supported)", i, t ? t : "not a string");
    }
    return 1;
}

// Hugging Face config.json of a family (transformers 4.4x and 5.x field spellings) into c
static int config_from_hf(Config *c, const Json *j, const char *path) {
    memset(c, 0, sizeof(*c));
    config_defaults(c);
    if (!j || j->type != JSON_OBJECT) return set_error(path, "config.json is not a JSON object");
    Json *arch = json_get(j, "architectures");
    int fam = -1;
    if (arch && arch->type == JSON_ARRAY) {
        for (int i = 0; i < arch->n && fam < 0; i++) {
            const char *a = json_str(&arch->items[i]);
            for (int f = 0; a && f < NUM_FAMILIES; f++) if (!strcmp(a, family_arch[f])) fam = f;
        }
        const char *a0 = arch->n ? (json_str(&arch->items[0]) ? json_str(&arch->items[0]) : "?") : "[]";
        if (fam < 0 && !strcmp(a0, "Gemma3ForConditionalGeneration"))
            return set_error(path, "architecture Gemma3ForConditionalGeneration: the multimodal Gemma 3 (vision tower, text_config) is not supported; its text model Gemma3ForCausalLM is");
        if (fam < 0) return set_error(path, "unsupported architecture %s (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM)", a0);
    } else {
        const char *mt = json_str(json_get(j, "model_type"));
        for (int f = 0; mt && f < NUM_FAMILIES; f++) if (!strcmp(mt, family_type[f])) fam = f;
        if (fam < 0) return set_error(path, "unsupported model: no architectures list and model_type '%s' (supported: llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3)", mt ? mt : "missing");
    }
    c->family = fam;
    int gemma = fam == FAM_GEMMA2 || fam == FAM_GEMMA3;
    const char *int_keys[] = { "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size" };
    int *int_dst[] = { &c->dim, &c->hidden_dim, &c->n_layers, &c->n_heads, &c->vocab_size };
    for (int i = 0; i < 5; i++) {
        Json *v = json_get(j, int_keys[i]);
        if (!json_is_int(v) || v->num <= 0 || v->num > INT_MAX) return set_error(path, "config needs a positive integer '%s'", int_keys[i]);
        *int_dst[i] = (int)v->num;
    }
    if (c->n_layers > (int)sizeof(c->layer_sliding)) return set_error(path, "num_hidden_layers %d is more than %d", c->n_layers, (int)sizeof(c->layer_sliding));
    Json *v = json_get(j, "num_key_value_heads");
    c->n_kv_heads = (json_is_int(v) && v->num > 0 && v->num <= INT_MAX) ? (int)v->num : c->n_heads;
    if (v && v->type != JSON_NULL && !json_is_int(v)) return set_error(path, "num_key_value_heads must be an integer");
    v = json_get(j, "head_dim");
    c->head_dim = (json_is_int(v) && v->num > 0 && v->num <= 4096) ? (int)v->num : c->dim / c->n_heads;
    v = json_get(j, "max_position_embeddings");
    c->seq_len = (json_is_int(v) && v->num > 0 && v->num <= 1048576) ? (int)v->num : 2048;
    c->norm_eps = (float)json_num_or(j, "rms_norm_eps", 1e-6);
    // transformers' defaults of tie_word_embeddings: True for Gemma, False for the others
    c->tied = json_bool_or(j, "tie_word_embeddings", gemma);
    // the MLP's activation: silu (SwiGLU), or gelu_pytorch_tanh (GeGLU) for Gemma (hidden_activation; older files hidden_act)
    const char *act = json_str(json_get(j, gemma ? "hidden_activation" : "hidden_act"));
    if (!act && gemma) act = json_str(json_get(j, "hidden_act"));
    if (gemma) {
        if (act && strcmp(act, "gelu_pytorch_tanh")) return set_error(path, "unsupported hidden_activation '%s' for %s (only gelu_pytorch_tanh)", act, family_arch[fam]);
        c->geglu = 1;
    } else if (act && strcmp(act, "silu")) return set_error(path, "unsupported hidden_act '%s' (only silu)", act);
    // biases: Qwen2 has them on q, k and v always; elsewhere attention_bias (which also puts one on o_proj) is refused
    c->attn_bias = fam == FAM_QWEN2;
    if (json_bool_or(j, "attention_bias", 0) || json_bool_or(j, "mlp_bias", 0)) return set_error(path, "attention_bias/mlp_bias are not supported for %s", family_arch[fam]);
    c->qk_norm = fam == FAM_QWEN3 || fam == FAM_GEMMA3;
    if (gemma) {
        c->norm_offset = 1; c->post_norms = 1;
        c->embed_scale = (float)sqrt((double)c->dim); // transformers: torch.tensor(hidden_size ** 0.5, dtype)
        double qs = json_num_or(j, "query_pre_attn_scalar", c->head_dim);
        if (!(qs > 0) || !isfinite(qs)) return set_error(path, "query_pre_attn_scalar must be positive");
        c->attn_scale = (float)pow(qs, -0.5);
        const char *caps[2] = { "attn_logit_softcapping", "final_logit_softcapping" };
        float *cdst[2] = { &c->attn_softcap, &c->final_softcap };
        for (int i = 0; i < 2; i++) {
            Json *cv = json_get(j, caps[i]);
            if (!cv || cv->type == JSON_NULL) continue;
            if (!json_is_num(cv) || !(cv->num > 0) || !isfinite((float)cv->num)) return set_error(path, "%s must be a positive number or null", caps[i]);
            *cdst[i] = (float)cv->num;
        }
    } else {
        const char *gonly[] = { "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping" };
        for (int i = 0; i < 3; i++) { Json *gv = json_get(j, gonly[i]); if (gv && gv->type != JSON_NULL) return set_error(path, "%s is set, which %s does not have", gonly[i], family_arch[fam]); }
    }
    if (json_bool_or(j, "use_bidirectional_attention", 0)) return set_error(path, "use_bidirectional_attention is true: attention that is not causal is not supported");
    if (fam == FAM_PHI3) {
        double prf = json_num_or(j, "partial_rotary_factor", 1.0);
        if (prf != 1.0) return set_error(path, "partial_rotary_factor %g: partial RoPE is not supported", prf);
    }
    // sliding window: Mistral and Phi-3 on every layer; Qwen2/3 only with use_sliding_window (layers from max_window_layers);
    // Gemma 2 on even layers, Gemma 3 all but every sliding_window_pattern-th, unless layer_types says
    v = json_get(j, "sliding_window");
    int window = json_is_int(v) && v->num > 0 ? (v->num < INT_MAX ? (int)v->num : INT_MAX) : 0;
    if (v && v->type != JSON_NULL && !json_is_int(v)) return set_error(path, "sliding_window must be an integer or null");
    if ((fam == FAM_QWEN2 || fam == FAM_QWEN3) && !json_bool_or(j, "use_sliding_window", 0)) window = 0;
    if (fam == FAM_LLAMA) window = 0;
    if (window) {
        int lt = layer_types_from_hf(c, j, path);
        if (lt < 0) return -1;
        int pattern = (int)json_num_or(j, "sliding_window_pattern", 6), mwl = (int)json_num_or(j, "max_window_layers", 0);
        if (fam == FAM_GEMMA3 && !lt && pattern < 1) return set_error(path, "sliding_window_pattern must be positive");
        for (int l = 0; l < c->n_layers && !lt; l++)
            c->layer_sliding[l] = fam == FAM_GEMMA2 ? l % 2 == 0 : fam == FAM_GEMMA3 ? (l + 1) % pattern != 0 : (fam == FAM_QWEN2 || fam == FAM_QWEN3) ? l >= mwl : 1;
        c->sliding_window = window;
    }
    // rope: transformers 4 writes rope_theta + rope_scaling; transformers 5 writes rope_parameters {rope_theta, rope_type, ...},
    // for Gemma 3 one per layer type {"full_attention": {...}, "sliding_attention": {...}}
    Json *rp = json_get(j, "rope_parameters"), *rs = json_get(j, "rope_scaling");
    if (rs && rs->type != JSON_OBJECT && rs->type != JSON_NULL) return set_error(path, "rope_scaling must be an object or null");
    if (rp && rp->type != JSON_OBJECT && rp->type != JSON_NULL) return set_error(path, "rope_parameters must be an object or null");
    Json *rp_full = json_get(rp, "full_attention"), *rp_slide = json_get(rp, "sliding_attention");
    if (rp_full && rp_full->type == JSON_OBJECT) rp = rp_full;
    c->rope_theta = (float)json_num_or(j, "rope_theta", json_num_or(rp, "rope_theta", fam == FAM_GEMMA3 ? 1e6 : 10000.0));
    if (fam == FAM_GEMMA3) {
        c->rope_local_theta = (float)json_num_or(j, "rope_local_base_freq", json_num_or(rp_slide, "rope_theta", 10000.0));
        if (!(c->rope_local_theta > 0) || !isfinite(c->rope_local_theta)) return set_error(path, "rope_local_base_freq must be positive");
        if (rp_slide && rp_slide->type == JSON_OBJECT) {
            const char *st = json_str(json_get(rp_slide, "rope_type"));
            if (st && strcmp(st, "default")) return set_error(path, "rope_parameters.sliding_attention has rope_type '%s' (only default is supported)", st);
        }
    } else if (json_get(j, "rope_local_base_freq")) return set_error(path, "rope_local_base_freq is set, which %s does not have", family_arch[fam]);
    Json *scaling = (rs && rs->type == JSON_OBJECT) ? rs : (rp && rp->type == JSON_OBJECT) ? rp : NULL;
    if (scaling && rope_scaling_from_hf(c, scaling, j, path)) return -1;
    Json *b = json_get(j, "bos_token_id"), *e = json_get(j, "eos_token_id");
    if (json_is_int(b) && fabs(b->num) <= INT_MAX) c->bos_id = (int)b->num;
    if (json_is_int(e) && fabs(e->num) <= INT_MAX) c->eos_id = (int)e->num;
    Json *pad = json_get(j, "pad_token_id");
    if (json_is_int(pad) && pad->num >= 0 && pad->num < c->vocab_size) c->pad_id = (int)pad->num;
    else if (e && e->type == JSON_ARRAY && e->n > 0 && json_is_int(&e->items[0]) && fabs(e->items[0].num) <= INT_MAX) c->eos_id = (int)e->items[0].num;
    if (c->sliding_window >= c->seq_len) { c->sliding_window = 0; memset(c->layer_sliding, 0, sizeof(c->layer_sliding)); } // never shorter than the input
    return config_validate(c, path);
}

// find a tensor among the shards, check its shape (d1 == 0: a vector) and read values [e0, e1) of it
static int hf_read_part(Model *m, SafeTensors *st, int nfiles, const char *dir, const char *name, floatX *dst, uint16_t *dst16, int64_t d0, int64_t d1, size_t e0, size_t e1) {
    STTensor *t = NULL;
    int i;
    for (i = 0; i < nfiles && !(t = st_find(&st[i], name)); i++) {}
    if (!t) return set_error(dir, "missing tensor '%s'", name);
    int64_t shape[2] = { d0, d1 };
    if (st_check_shape(&st[i], t, d1 ? 2 : 1, shape) || st_read_floatX_part(&st[i], t, dst, dst16, e0, e1)) return -1;
    if (m->hf_dtype < 0 && d1) m->hf_dtype = t->dtype; // the folder's dtype, for writing it back alike
    return 0;
}
static int hf_read(Model *m, SafeTensors *st, int nfiles, const char *dir, const char *name, floatX *dst, uint16_t *dst16, int64_t d0, int64_t d1) {
    return hf_read_part(m, st, nfiles, dir, name, dst, dst16, d0, d1, 0, SIZE_MAX);
}

// Low-memory loading: a matrix that is quantized is read and quantized in chunks of whole blocks
// (1M values: a few MB of raw and float data), converted and quantized by all threads, so the
// float matrix never exists; peak memory is the quantized model plus one chunk. (HQQ quantizes
// whole matrices: its optimiser stops on the error of the whole matrix.)
static int hf_read_quantized(Model *m, SafeTensors *st, int nfiles, const char *dir, const char *name, int pi, int l, int64_t d0, int64_t d1) {
    STTensor *t = NULL;
    int fi;
    for (fi = 0; fi < nfiles && !(t = st_find(&st[fi], name)); fi++) {}
    if (!t) return set_error(dir, "missing tensor '%s'", name);
    int64_t shape[2] = { d0, d1 };
    if (st_check_shape(&st[fi], t, 2, shape)) return -1;
    if (m->hf_dtype < 0) m->hf_dtype = t->dtype;
    if (qtype_hqq(m->quant) || (t->dtype != DT_F32 && t->dtype != DT_F16 && t->dtype != DT_BF16)) { // whole matrix
        floatX *w = (floatX *)malloc_check((size_t)(d0 * d1) * sizeof(floatX));
        int rc = st_read_floatX(&st[fi], t, w, NULL);
        if (!rc) rc = model_put_matrix(m, pi, l, w, 0);
        free(w);
        return rc;
    }
    int target = param_target(pi);
    QTensor *q = target >= 0 ? &m->qw[l * NUM_TARGETS + target] : (pi == 0 ? &m->qembed : &m->qcls);
    qtensor_alloc_bs(q, m->quant, (int)d0, (int)d1, m->quant_dq, m->quant_bs);
    size_t es = dtype_sizes[t->dtype], chunk = (size_t)q->bs * 16384, n = q->n;
    float *absmax = (float *)malloc_check(q->nblocks * sizeof(float));
    int fd = fileno(st[fi].f), rc = 0, bad_read = 0;
    long nchunks = (long)((n + chunk - 1) / chunk);
    size_t first_bad = SIZE_MAX;
    // each thread reads, converts and quantizes whole chunks (qtensor_quantize_blocks' own loop runs on it alone)
    #pragma omp parallel if (nchunks > 1)
    {
        unsigned char *raw = (unsigned char *)malloc_check(chunk * es);
        floatX *w = (floatX *)malloc_check(chunk * sizeof(floatX));
        #pragma omp for schedule(dynamic)
        for (long ci = 0; ci < nchunks; ci++) {
            size_t start = (size_t)ci * chunk, k = n - start < chunk ? n - start : chunk, want = k * es, got = 0;
            off_t off = (off_t)(st[fi].data_start + t->begin + start * es);
            while (got < want) {
                ssize_t r = pread(fd, raw + got, want - got, off + (off_t)got);
                if (r <= 0) break;
                got += (size_t)r;
            }
            if (got < want) {
                #pragma omp atomic write
                bad_read = 1;
                continue;
            }
            size_t bad = SIZE_MAX;
            for (size_t i = 0; i < k; i++) {
                float v;
                if (es == 4) { memcpy(&v, raw + 4 * i, 4); le_swap(&v, 4, 1); } // little-endian in the file
                else { uint16_t h; memcpy(&h, raw + 2 * i, 2); le_swap(&h, 2, 1); v = t->dtype == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h); }
                if (!isfinite(v)) { bad = start + i; break; }
                w[i] = (floatX)v;
            }
            if (bad != SIZE_MAX) {
                #pragma omp critical(hf_read_bad)
                if (bad < first_bad) first_bad = bad;
                continue;
            }
            qtensor_quantize_blocks(q, w, start / q->bs, (start + k + q->bs - 1) / q->bs, absmax);
        }
        free(raw); free(w);
    }
    if (bad_read) rc = set_error(st[fi].path, "tensor '%s': read failed", name);
    else if (first_bad != SIZE_MAX) rc = set_error(st[fi].path, "tensor '%s': non-finite value at index %zu", name, first_bad);
    if (!rc) qtensor_quantize_absmax(q, absmax);
    free(absmax);
    return rc;
}

static int load_hf(Model *m, const char *dir, const QuantOpts *qo) {
    char path[4096], cpath[4096];
    path_join(cpath, sizeof(cpath), dir, "config.json");
    Json *cj = json_load(cpath);
    if (!cj) return -1;
    int rc = config_from_hf(&m->config, cj, cpath);
    json_free(cj);
    if (rc) return -1;
    Config *c = &m->config;
    // the shards: either one model.safetensors or the files of the index's weight_map
    int nfiles = 0;
    char **files = NULL;
    path_join(path, sizeof(path), dir, "model.safetensors.index.json");
    if (file_exists(path)) {
        Json *idx = json_load(path);
        if (!idx) return -1;
        Json *wm = json_get(idx, "weight_map");
        if (!wm || wm->type != JSON_OBJECT) { json_free(idx); return set_error(path, "index has no weight_map object"); }
        files = (char **)calloc_check((size_t)wm->n + 1, sizeof(char *));
        for (int i = 0; i < wm->n; i++) {
            const char *fn = json_str(&wm->items[i]);
            if (!fn || strchr(fn, '/') || !strcmp(fn, "..")) { for (int k = 0; k < nfiles; k++) free(files[k]); free(files); json_free(idx); return set_error(path, "bad shard file name for '%s'", wm->keys[i]); }
            int seen = 0;
            for (int k = 0; k < nfiles; k++) if (!strcmp(files[k], fn)) seen = 1;
            if (!seen) files[nfiles++] = strdup_check(fn);
        }
        json_free(idx);
    } else {
        files = (char **)calloc_check(1, sizeof(char *));
        files[nfiles++] = strdup_check("model.safetensors");
    }
    SafeTensors *st = (SafeTensors *)calloc_check((size_t)nfiles, sizeof(SafeTensors));
    rc = 0;
    int opened = 0;
    for (int i = 0; i < nfiles && !rc; i++) {
        path_join(path, sizeof(path), dir, files[i]);
        rc = st_open(&st[i], path);
        if (!rc) opened++;
    }
    m->format = FMT_HF;
    m->quant = qo && qo->type > 0 ? qo->type : QT_NONE;
    m->quant_embed = m->quant ? qo->embed : 0;
    m->quant_dq = m->quant == QT_NF4 ? qo->dq : 0;
    m->quant_bs = m->quant ? (qtype_hqq(m->quant) && qo->gs ? qo->gs : qtype_block[m->quant]) : 0;
    if (!rc) rc = model_mem_check(m, dir, qo ? qo->keep16 : 0); // before allocating
    if (!rc) {
        model_alloc(m);
        for (int i = 0; i < NUM_PARAM_TENSORS && qo && !m->quant; i++) // bf16 only (written by the reading threads)
            if ((qo->keep16 >> i & 1) && param_target(i) >= 0 && m->param_sizes[i]) {
                m->w16[i] = (uint16_t *)malloc_check(m->param_sizes[i] * sizeof(uint16_t));
                advise_huge_pages(m->w16[i], m->param_sizes[i] * sizeof(uint16_t));
            }
        floatX *tmp = NULL;
        int qe = m->quant && m->quant_embed;
        ParameterTensors *p = &m->params;
        int64_t C = c->dim, H = c->hidden_dim, V = c->vocab_size, QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
        m->hf_dtype = -1;
        if (qe) rc = hf_read_quantized(m, st, nfiles, dir, "model.embed_tokens.weight", 0, 0, V, C);
        else rc = hf_read(m, st, nfiles, dir, "model.embed_tokens.weight", p->embed, NULL, V, C);
        size_t fsz[NUM_PARAM_TENSORS]; // the tensors the family has (a quantized model's matrices have no float storage)
        fill_in_parameter_sizes(fsz, c);
        for (int l = 0; l < c->n_layers && !rc; l++) {
            for (int pi = 1; pi < NUM_PARAM_TENSORS && !rc; pi++) {
                if (!param_per_layer(pi) || !fsz[pi]) continue;
                char name[160];
                int rows, cols, t = param_target(pi);
                if (t < 0) { // a vector: a norm or a bias
                    size_t per = m->param_sizes[pi] / (size_t)c->n_layers;
                    snprintf(name, sizeof(name), "model.layers.%d.%s", l, hf_layer_name(c, pi));
                    rc = hf_read(m, st, nfiles, dir, name, *param_ptr(p, pi) + l * per, NULL, (int64_t)per, 0);
                    continue;
                }
                param_dims(c, pi, &rows, &cols);
                if (c->family == FAM_PHI3 && (t == TGT_Q || t == TGT_K || t == TGT_V || t == TGT_GATE || t == TGT_UP)) {
                    // Phi-3: qkv_proj (QD+2KD, C) = [q; k; v] and gate_up_proj (2H, C) = [gate; up], split here
                    if (t != TGT_Q && t != TGT_GATE) continue;
                    int qkv = t == TGT_Q, parts[3] = { qkv ? 2 : 7, qkv ? 3 : 9, 4 };
                    int64_t fr = qkv ? QD + 2 * KD : 2 * H;
                    snprintf(name, sizeof(name), "model.layers.%d.%s", l, qkv ? "self_attn.qkv_proj.weight" : "mlp.gate_up_proj.weight");
                    floatX *fused = (floatX *)malloc_check((size_t)(fr * C) * sizeof(floatX));
                    rc = hf_read(m, st, nfiles, dir, name, fused, NULL, fr, C);
                    size_t off = 0;
                    for (int k = 0; k < (qkv ? 3 : 2) && !rc; k++) {
                        int r2, c2;
                        param_dims(c, parts[k], &r2, &c2);
                        rc = model_put_matrix(m, parts[k], l, fused + off, 0);
                        off += (size_t)r2 * c2;
                    }
                    free(fused);
                    continue;
                }
                snprintf(name, sizeof(name), "model.layers.%d.%s", l, hf_layer_name(c, pi));
                size_t a = 0, n = (size_t)rows * cols; // (--shard: only this rank's part of a float weight, [a, a + n) values)
                if (!m->quant && shard_load.world) { n = shard_part(&a, m, t) / sizeof(floatX); a /= sizeof(floatX); }
                if (m->quant) rc = hf_read_quantized(m, st, nfiles, dir, name, pi, l, rows, cols);
                else rc = hf_read_part(m, st, nfiles, dir, name, *param_ptr(p, pi) + (size_t)l * rows * cols, m->w16[pi] ? m->w16[pi] + (size_t)l * rows * cols : NULL, rows, cols, a, a + n);
                if (!rc) shard_release(m, pi, l); // (the rest of a huge page the part touched)
            }
        }
        if (!rc) rc = hf_read(m, st, nfiles, dir, "model.norm.weight", p->rms_final, NULL, C, 0);
        if (!rc && !c->tied && qe) rc = hf_read_quantized(m, st, nfiles, dir, "lm_head.weight", 11, 0, V, C);
        else if (!rc && !c->tied) rc = hf_read(m, st, nfiles, dir, "lm_head.weight", p->wcls, NULL, V, C);
        free(tmp);
        if (rc) model_free(m);
    }
    for (int i = 0; i < opened; i++) st_close(&st[i]);
    free(st);
    for (int i = 0; i < nfiles; i++) free(files[i]);
    free(files);
    return rc;
}

// MODEL is a llama2.c .bin file or a Hugging Face folder
// qo: quantize the base while loading (NULL or type -1: as stored; QT_NONE: float)
static int model_load_q(Model *m, const char *path, const QuantOpts *qo) {
    memset(m, 0, sizeof(*m));
    snprintf(m->path, sizeof(m->path), "%s", path);
    if (dir_exists(path)) return load_hf(m, path, qo);
    if (!file_exists(path)) return set_error(path, "no such file or folder");
    return load_bin(m, path, qo);
}
static int model_load(Model *m, const char *path) { return model_load_q(m, path, NULL); }

// Writing models: llama2.c v1 (or legacy) .bin with q/k rows back in interleaved order, or a
// Hugging Face folder (config.json + model.safetensors in dtype). Both written atomically.
static void write_f32s(AtomicFile *af, const floatX *x, size_t n) {
    float buf[4096];
    for (size_t i = 0; i < n; i += 4096) {
        size_t k = n - i < 4096 ? n - i : 4096;
        for (size_t j = 0; j < k; j++) buf[j] = (float)x[i + j];
        atomic_write_le(af, buf, sizeof(float), k);
    }
}
static int model_save_bin(Model *m, const char *path, int legacy) {
    Config *c = &m->config;
    if (c->family > FAM_MISTRAL) return set_error(path, "llama2.c .bin files hold Llama models; a %s is written as a Hugging Face folder", family_arch[c->family]);
    ParameterTensors *p = &m->params;
    size_t *sz = m->param_sizes;
    AtomicFile af;
    if (atomic_open(&af, path)) return -1;
    model_permute_qk(m, 0); // to llama2.c's interleaved RoPE layout for writing
    if (legacy) {
        int32_t h[7] = { c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->tied ? c->vocab_size : -c->vocab_size, c->seq_len };
        atomic_write_le(&af, h, 4, 7);
        floatX *order[10] = { p->embed, p->rms_att, p->wq, p->wk, p->wv, p->wo, p->rms_ffn, p->w1, p->w2, p->w3 };
        size_t osz[10] = { sz[0], sz[1], sz[2], sz[3], sz[4], sz[5], sz[6], sz[7], sz[8], sz[9] };
        for (int i = 0; i < 10; i++) write_f32s(&af, order[i], osz[i]);
        write_f32s(&af, p->rms_final, sz[10]);
        // freq_cis_real/imag in llama2.c's interleaved convention (unused by readers, kept for the format)
        int half = c->head_dim / 2;
        floatX *fc = (floatX *)malloc_check((size_t)c->seq_len * half * 2 * sizeof(floatX));
        for (int pass = 0; pass < 2; pass++) {
            for (int t = 0; t < c->seq_len; t++)
                for (int i = 0; i < half; i++) {
                    double f = 1.0 / pow((double)c->rope_theta, (2.0 * i) / c->head_dim);
                    fc[(size_t)t * half + i] = (floatX)(pass ? sin(t * f) : cos(t * f));
                }
            write_f32s(&af, fc, (size_t)c->seq_len * half);
        }
        free(fc);
    } else {
        unsigned char hdr[256] = { 0 };
        uint32_t magic = BIN_MAGIC; int32_t version = 1;
        int32_t h[7] = { c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len };
        memcpy(hdr, &magic, 4); memcpy(hdr + 4, &version, 4); memcpy(hdr + 8, h, sizeof(h));
        le_swap(hdr, 4, 9); // magic, version, the 7 ints
        hdr[36] = (unsigned char)c->tied;
        atomic_write(&af, hdr, 256);
        floatX *order[11] = { p->rms_att, p->rms_ffn, p->rms_final, p->embed, p->wq, p->wk, p->wv, p->wo, p->w1, p->w2, p->w3 };
        size_t osz[11] = { sz[1], sz[6], sz[10], sz[0], sz[2], sz[3], sz[4], sz[5], sz[7], sz[8], sz[9] };
        for (int i = 0; i < 11; i++) write_f32s(&af, order[i], osz[i]);
    }
    if (!c->tied) write_f32s(&af, p->wcls, sz[11]);
    model_permute_qk(m, 1);
    return atomic_commit(&af);
}

static int model_save_hf(Model *m, const char *dir, int dtype) {
    Config *c = &m->config;
    ParameterTensors *p = &m->params;
    if (mkdir_p(dir)) return -1;
    int64_t C = c->dim, H = c->hidden_dim, V = c->vocab_size, QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    int n = 0, cap = NUM_PARAM_TENSORS * c->n_layers + 3, phi3 = c->family == FAM_PHI3;
    STWrite *ts = (STWrite *)calloc_check((size_t)cap, sizeof(STWrite));
    // Phi-3's fused matrices, put together again: qkv_proj [q; k; v] and gate_up_proj [gate; up] of every layer
    floatX *fqkv = phi3 ? (floatX *)malloc_check((size_t)(c->n_layers * (QD + 2 * KD) * C) * sizeof(floatX)) : NULL;
    floatX *fgu = phi3 ? (floatX *)malloc_check((size_t)(c->n_layers * 2 * H * C) * sizeof(floatX)) : NULL;
    #define ADD_T(nm, ptr, d0, d1) do { STWrite *w_ = &ts[n++]; snprintf(w_->name, sizeof(w_->name), "%s", nm); w_->dtype = dtype; w_->fdata = ptr; \
        w_->ndim = (d1) ? 2 : 1; w_->shape[0] = d0; w_->shape[1] = d1; } while (0)
    ADD_T("model.embed_tokens.weight", p->embed, V, C);
    for (int l = 0; l < c->n_layers; l++) {
        for (int pi = 1; pi < NUM_PARAM_TENSORS; pi++) {
            if (!param_per_layer(pi) || !m->param_sizes[pi]) continue;
            char name[160];
            int t = param_target(pi), rows, cols;
            size_t per = m->param_sizes[pi] / (size_t)c->n_layers;
            const floatX *src = *param_ptr(p, pi) + (size_t)l * per;
            if (phi3 && (t == TGT_Q || t == TGT_K || t == TGT_V || t == TGT_GATE || t == TGT_UP)) {
                int qkv = t == TGT_Q || t == TGT_K || t == TGT_V;
                floatX *dst = qkv ? fqkv + (size_t)(l * (QD + 2 * KD) * C) + (t == TGT_Q ? 0 : t == TGT_K ? (size_t)(QD * C) : (size_t)((QD + KD) * C))
                                  : fgu + (size_t)(l * 2 * H * C) + (t == TGT_GATE ? 0 : (size_t)(H * C));
                memcpy(dst, src, per * sizeof(floatX));
                if (t == TGT_Q || t == TGT_GATE) {
                    snprintf(name, sizeof(name), "model.layers.%d.%s", l, qkv ? "self_attn.qkv_proj.weight" : "mlp.gate_up_proj.weight");
                    ADD_T(name, qkv ? fqkv + (size_t)(l * (QD + 2 * KD) * C) : fgu + (size_t)(l * 2 * H * C), qkv ? QD + 2 * KD : 2 * H, C);
                }
                continue;
            }
            snprintf(name, sizeof(name), "model.layers.%d.%s", l, hf_layer_name(c, pi));
            if (t < 0) { ADD_T(name, src, (int64_t)per, 0); continue; }
            param_dims(c, pi, &rows, &cols);
            ADD_T(name, src, rows, cols);
        }
    }
    ADD_T("model.norm.weight", p->rms_final, C, 0);
    if (!c->tied) ADD_T("lm_head.weight", p->wcls, V, C);
    #undef ADD_T
    char path[4096];
    path_join(path, sizeof(path), dir, "model.safetensors");
    int rc = st_write(path, ts, n, "{\"format\":\"pt\"}");
    free(ts); free(fqkv); free(fgu);
    if (rc) return -1;
    StrBuf b = { 0 };
    int fam = c->family, gemma = fam == FAM_GEMMA2 || fam == FAM_GEMMA3;
    sb_printf(&b, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n  \"%s\": \"%s\",\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
                  "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n  \"vocab_size\": %d,\n"
                  "  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %s,\n  \"rope_theta\": %s,\n  \"tie_word_embeddings\": %s,\n"
                  "  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n  \"torch_dtype\": \"%s\"",
              family_arch[fam], family_type[fam], gemma ? "hidden_activation" : "hidden_act", c->geglu ? "gelu_pytorch_tanh" : "silu",
              c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->seq_len, json_float(c->norm_eps), json_float(c->rope_theta),
              c->tied ? "true" : "false", c->bos_id, c->eos_id, dtype == DT_BF16 ? "bfloat16" : dtype == DT_F16 ? "float16" : "float32");
    if (c->pad_id >= 0) sb_printf(&b, ",\n  \"pad_token_id\": %d", c->pad_id);
    if (fam != FAM_QWEN2 && fam != FAM_PHI3) sb_puts(&b, ",\n  \"attention_bias\": false");
    if (fam == FAM_LLAMA || fam == FAM_MISTRAL) sb_puts(&b, ",\n  \"mlp_bias\": false");
    if (gemma) {
        double qs = 1.0 / ((double)c->attn_scale * c->attn_scale); // query_pre_attn_scalar, exact for the integers it holds
        sb_printf(&b, ",\n  \"query_pre_attn_scalar\": %s", json_intish((float)(fabs(qs - floor(qs + 0.5)) < 1e-3 ? floor(qs + 0.5) : qs)));
        sb_printf(&b, ",\n  \"attn_logit_softcapping\": %s", c->attn_softcap > 0 ? json_float(c->attn_softcap) : "null");
        sb_printf(&b, ",\n  \"final_logit_softcapping\": %s", c->final_softcap > 0 ? json_float(c->final_softcap) : "null");
    }
    if (fam == FAM_GEMMA3) sb_printf(&b, ",\n  \"rope_local_base_freq\": %s", json_float(c->rope_local_theta));
    if (fam == FAM_QWEN2 || fam == FAM_QWEN3) sb_printf(&b, ",\n  \"use_sliding_window\": %s", c->sliding_window ? "true" : "false");
    if (fam != FAM_LLAMA) {
        if (c->sliding_window) sb_printf(&b, ",\n  \"sliding_window\": %d", c->sliding_window); else sb_puts(&b, ",\n  \"sliding_window\": null");
    }
    if (c->sliding_window) { // which layers, explicitly (transformers 4.5x and 5 read layer_types)
        sb_puts(&b, ",\n  \"layer_types\": [");
        for (int l = 0; l < c->n_layers; l++) sb_printf(&b, "%s\"%s\"", l ? ", " : "", c->layer_sliding[l] ? "sliding_attention" : "full_attention");
        sb_puts(&b, "]");
        if (fam == FAM_QWEN2 || fam == FAM_QWEN3) { int mwl = 0; while (mwl < c->n_layers && !c->layer_sliding[mwl]) mwl++; sb_printf(&b, ",\n  \"max_window_layers\": %d", mwl); }
    }
    if (c->rope_llama3)
        sb_printf(&b, ",\n  \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": %s, \"low_freq_factor\": %s, \"high_freq_factor\": %s, \"original_max_position_embeddings\": %d}",
                  json_float(c->rope_factor), json_float(c->rope_low_freq_factor), json_float(c->rope_high_freq_factor), c->rope_orig_max_pos);
    else if (c->rope_linear > 0) sb_printf(&b, ",\n  \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": %s}", json_float(c->rope_linear));
    else if (c->rope_longrope) { // as Phi-3's files have it (transformers 4.4x's Phi3Config wants exactly these three fields)
        sb_printf(&b, ",\n  \"original_max_position_embeddings\": %d,\n  \"rope_scaling\": {\"type\": \"longrope\"", c->rope_orig_max_pos);
        for (int k = 0; k < 2; k++) {
            sb_printf(&b, ", \"%s\": [", k ? "long_factor" : "short_factor");
            for (int i = 0; i < c->head_dim / 2; i++) sb_printf(&b, "%s%s", i ? ", " : "", json_float(k ? c->rope_long[i] : c->rope_short[i]));
            sb_puts(&b, "]");
        }
        if (c->rope_factor_given > 0) sb_printf(&b, ", \"factor\": %s", json_float(c->rope_factor_given));
        if (c->rope_attn_given) sb_printf(&b, ", \"attention_factor\": %s", json_float(c->rope_attn_factor));
        sb_puts(&b, "}");
    }
    else if (fam == FAM_PHI3) sb_puts(&b, ",\n  \"rope_scaling\": null");
    sb_puts(&b, "\n}\n");
    path_join(path, sizeof(path), dir, "config.json");
    AtomicFile af;
    if (atomic_open(&af, path)) { free(b.s); return -1; }
    atomic_write(&af, b.s, b.n);
    free(b.s);
    return atomic_commit(&af);
}

// write the model the way it came: .bin (v1; legacy stays legacy) or a Hugging Face folder
static int model_save(Model *m, const char *path, int dtype) {
    if (m->format == FMT_HF) return model_save_hf(m, path, dtype >= 0 ? dtype : m->hf_dtype);
    return model_save_bin(m, path, m->format == FMT_BIN_LEGACY);
}

// Quantized .bin files (format in load_bin's comment): int8 as llama2.c version 2 (group 64, everything
// but the norms quantized, q/k rows interleaved), int4/nf4 as peft.c versions 3/4. Works from a float or
// a quantized model, one matrix at a time; a tensor already in the wanted format is written as it is.
static void qtensor_write(AtomicFile *af, const QTensor *t) {
    atomic_write(af, t->q, qtensor_qbytes(t->type, t->n));
    if (t->qabsmax) {
        atomic_write(af, t->qabsmax, t->nblocks);
        atomic_write_le(af, t->absmax2, sizeof(float), (t->nblocks + DQ_BLOCK - 1) / DQ_BLOCK);
        atomic_write_le(af, &t->offset, sizeof(float), 1);
    } else if (t->hscale) { atomic_write_le(af, t->hscale, 2, t->nblocks); atomic_write_le(af, t->hzero, 2, t->nblocks); }
    else if (t->scale16) atomic_write_le(af, t->scale16, 2, t->nblocks);
    else atomic_write_le(af, t->scale, sizeof(float), t->nblocks);
}
// quantize --random: a matrix of a model that exists only as its shapes: values uniform in +-sqrt(3) 0.02
// (std 0.02, Llama's initializer), each from a hash of (seed, tensor i, layer l, index): the threads fill
// any part of it independently (splitmix64's finalizer)
static void random_matrix(floatX *w, size_t n, uint64_t seed, int i, int l) {
    uint64_t key = seed * 0xD1B54A32D192ED03ull + ((uint64_t)i << 48) + ((uint64_t)l << 32);
    #pragma omp parallel for schedule(static) if (n >= 65536)
    for (long k = 0; k < (long)n; k++) {
        uint64_t z = key + (uint64_t)k * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull; z = (z ^ (z >> 27)) * 0x94D049BB133111EBull; z ^= z >> 31;
        w[k] = (floatX)(((double)(z >> 40) / 16777216.0 * 2 - 1) * 0.034641016151377546);
    }
}
// bs: the hqq group size (0: 64); the other formats have fixed blocks. random_seed != 0: m holds only its
// config, and the file gets random matrices (random_matrix) and norms of ones (quantize --random)
static int model_save_quant(Model *m, const char *path, int type, int embed, int dq, int bs, uint64_t random_seed) {
    Config *c = &m->config;
    if (c->family > FAM_MISTRAL) return set_error(path, "quantized .bin files hold Llama models; quantize a %s while loading instead (--quant)", family_arch[c->family]);
    ParameterTensors *p = &m->params;
    size_t sz[NUM_PARAM_TENSORS];
    fill_in_parameter_sizes(sz, c);
    if (type == QT_INT8) embed = 1; // llama2.c's version 2 quantizes the embeddings too
    if (type != QT_NF4) dq = 0;
    AtomicFile af;
    if (atomic_open(&af, path)) return -1;
    unsigned char hdr[256] = { 0 };
    if (!qtype_hqq(type) || bs <= 0) bs = qtype_block[type];
    uint32_t magic = BIN_MAGIC; int32_t version = type == QT_INT8 ? 2 : type == QT_INT4 ? 3 : type == QT_NF4 ? 4 : 5, gs = bs;
    int32_t h[7] = { c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len };
    memcpy(hdr, &magic, 4); memcpy(hdr + 4, &version, 4); memcpy(hdr + 8, h, sizeof(h));
    le_swap(hdr, 4, 9); // magic, version, the 7 ints
    hdr[36] = (unsigned char)c->tied;
    le_swap(&gs, 4, 1);
    memcpy(hdr + 37, &gs, 4);
    if (type != QT_INT8) hdr[41] = (unsigned char)((dq ? 1 : 0) | (embed ? 2 : 0));
    if (qtype_hqq(type)) hdr[42] = type == QT_HQQ4 ? 4 : 8;
    atomic_write(&af, hdr, 256);
    size_t maxm = sz[1];
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) { size_t per = (i == 0 || i == 11) ? sz[i] : sz[i] / (size_t)c->n_layers; if (per > maxm) maxm = per; }
    floatX *tmp = (floatX *)malloc_check(maxm * sizeof(floatX));
    if (random_seed) for (size_t k = 0; k < sz[1]; k++) tmp[k] = 1;
    write_f32s(&af, random_seed ? tmp : p->rms_att, sz[1]);
    write_f32s(&af, random_seed ? tmp : p->rms_ffn, sz[6]);
    write_f32s(&af, random_seed ? tmp : p->rms_final, sz[10]);
    int order[9] = { 0, 2, 3, 4, 5, 7, 8, 9, 11 }, rc = 0;
    for (int k = 0; k < 9 && !rc; k++) {
        int i = order[k], outer = i == 0 || i == 11, rows, cols;
        if (i == 11 && c->tied) continue;
        param_dims(c, i, &rows, &cols);
        for (int l = 0; l < (outer ? 1 : c->n_layers) && !rc; l++) {
            const QTensor *have = outer ? (m->quant_embed ? (i == 0 ? &m->qembed : &m->qcls) : NULL) : (m->quant ? &m->qw[l * NUM_TARGETS + param_target(i)] : NULL);
            if (type != QT_INT8 && have && have->type == type && have->bs == bs && (have->qabsmax != NULL) == dq && (!outer || embed)) { qtensor_write(&af, have); continue; }
            if (random_seed) random_matrix(tmp, (size_t)rows * cols, random_seed, i, l); else model_get_matrix(tmp, m, i, l);
            if (outer && !embed) { write_f32s(&af, tmp, (size_t)rows * cols); continue; }
            if (type == QT_INT8 && (i == 2 || i == 3)) permute_rope_rows(tmp, i == 2 ? c->n_heads : c->n_kv_heads, c->head_dim, c->dim, 0);
            QTensor t;
            qtensor_alloc_bs(&t, type, rows, cols, dq, bs);
            char what[64];
            snprintf(what, sizeof(what), "%s of layer %d", param_names[i], l);
            if (!(rc = qtensor_quantize(&t, tmp, path, what))) {
                if (type == QT_INT8) { atomic_write(&af, t.q, t.n); atomic_write_le(&af, t.scale, sizeof(float), t.nblocks); }
                else qtensor_write(&af, &t);
            }
            qtensor_free(&t);
        }
    }
    free(tmp);
    if (rc) { fclose(af.f); remove(af.tmp); return -1; }
    return atomic_commit(&af);
}

// ----------------------------------------------------------------------------
// tokenizer: llama2.c tokenizer.bin and Hugging Face tokenizer.json (BPE models)
//
// Three flavours share one BPE merge loop:
//   llama2.c tokenizer.bin (a sentencepiece export): int32 max_token_length, then for each id
//     float32 score, int32 length, the piece's bytes. Encoding is run.c's: a dummy prefix " ",
//     each UTF-8 character as a piece (else its bytes as <0xNN> pieces), then repeatedly merge
//     the adjacent pair whose concatenation is a piece with the highest score, leftmost on ties.
//   tokenizer.json, sentencepiece-style (Llama 2, Mistral, TinyLlama): spaces become "▁" (the
//     normalizer Prepend + Replace, or the pre-tokenizer Metaspace), characters not in the vocab
//     fall back to <0xNN> pieces, pairs merge by rank (their order in model.merges).
//   tokenizer.json, byte-level (GPT-2, Llama 3, Qwen2/3, SmolLM): the text is split by GPT-2's or
//     Llama 3's regex (matched by hand below, no regex engine), each byte becomes a printable
//     character (GPT-2's bytes_to_unicode), then pairs merge by rank within each piece.
//   A tokenizer.json's normalizer (NFC, NFD, Replace, Prepend, Strip) and pre-tokenizer (Split on a
//     string or those regexes with any behavior, Metaspace, ByteLevel, Digits) run as in Hugging Face's
//     tokenizers; a step, pattern or decoder peft.c does not have is an error naming it.
// The merge loop keeps the symbols in a doubly linked list and the candidate pairs in a heap:
// O(n log n) instead of run.c's rescan after every merge, with the same result. When no merge can
// cross the start of a run of spaces (checked on load), sentencepiece-style text is merged word by
// word, which is again the same result, in a tenth of the time and memory.
// Added tokens (<s>, <|eot_id|>, <start_of_turn>, ...) written in the text are found as Hugging Face's
// AddedVocabulary finds them: leftmost, longest first, those not "normalized" in the raw text, then
// the others in the normalized text between, with their lstrip/rstrip/single_word flags; the text
// between them goes through the normalizer, pre-tokenizer and model. A tokenizer.bin's added tokens
// (train --new-special-tokens) are matched in the raw text; other text is all text, like sentencepiece.

#define TOK_MAX_VOCAB (1 << 24)
#define TOK_MAX_STEPS 16
#define TOK_MAX_TEXT ((size_t)1 << 28)  // bytes of text one tokenizer_encode call takes

enum { TOK_LLAMA2C, TOK_SENTENCEPIECE, TOK_BYTELEVEL };        // Tokenizer.kind
enum { PIECE_TEXT, PIECE_BYTE, PIECE_CONTROL, PIECE_ADDED };    // how a piece decodes: text, one raw
                                                                // byte <0xNN>, nothing, verbatim
enum { STEP_PREPEND, STEP_REPLACE, STEP_NFC, STEP_NFD, STEP_STRIP,                  // normalizers
       STEP_METASPACE, STEP_SPLIT, STEP_DIGITS, STEP_BYTELEVEL };                    // pre-tokenizers
enum { PAT_GPT2, PAT_LLAMA3, PAT_QWEN2, PAT_STRING };            // the patterns of STEP_SPLIT: a regex, or the string a
enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS }; // Split's behavior

// one normalizer or pre-tokenizer step of a tokenizer.json
typedef struct {
    int op;       // STEP_*
    char *a, *b;  // PREPEND: a; REPLACE: a -> b; METASPACE: a is the replacement ("▁"); SPLIT: a is a PAT_STRING
    int x, y, z;  // METASPACE: x = prepend (0 never, 1 always, 2 first), y = split; STRIP: x = left, y = right;
                  // SPLIT: x = PAT_*, y = SPLIT_*, z = invert; DIGITS: x = individual_digits;
                  // BYTELEVEL: x = add_prefix_space, y = use_regex
} TokStep;

typedef struct { int left, right, id; float prio; } TokMerge;  // (left, right) -> id; left < 0: empty slot

// added tokens (<|im_start|>, <start_of_turn>, ...) found in the text before the model sees it, as
// Hugging Face's AddedVocabulary finds them: leftmost, longest first (its Aho-Corasick
// LeftmostLongest), then the flags
enum { ADDED_LSTRIP = 1, ADDED_RSTRIP = 2, ADDED_SINGLE_WORD = 4 };
typedef struct {
    int n, cap;
    int *id, *len, *flags;        // (n) each token's id, byte length, ADDED_* flags
    char **text;                  // (n) its text: the content, or for normalized tokens the content normalized
    int *slot;                    // hash table text -> index, -1 = empty slot
    size_t mask;
    unsigned char *has_len;       // (max_len + 1) 1 where some token has this many bytes
    int max_len;
    unsigned char first[256];     // 1 where some token starts with this byte
} TokAddedSet;

typedef struct Tokenizer {
    int kind;                     // TOK_*
    int vocab_size;               // ids are 0..vocab_size-1
    int bos_id, eos_id, unk_id;   // -1 if none
    char **pieces;                // (vocab_size) the bytes of each piece, NUL-terminated; NULL: unused id
    int *piece_len;               // (vocab_size)
    unsigned char *attr;          // (vocab_size) PIECE_*
    char *arena;                  // storage of all pieces
    int *lookup;                  // hash table piece -> id over the model's vocabulary, -1 = empty slot
    size_t lookup_mask;
    TokMerge *merges;             // hash table of merges; prio: higher merges first (score, or -rank)
    size_t merge_mask;
    int byte_id[256];             // the byte fallback piece <0xNN> of each byte, -1 if none
    int char_id[256];             // byte-level: the one-character piece of each byte, -1 if none
    int byte_fallback, fuse_unk, ignore_merges;
    int strip_space;              // decode drops the leading space of the first piece (the dummy prefix)
    int split_words;              // sentencepiece-style: merges never cross the start of a run of spaces,
                                  // so long text is merged word by word (same result, less time and memory)
    TokStep norm[TOK_MAX_STEPS];  // normalizer steps, in order
    int n_norm;
    TokStep pre[TOK_MAX_STEPS];   // pre-tokenizer steps, in order
    int n_pre;
    TokAddedSet added[2];         // the added tokens matched in the raw text [0] and in the normalized text [1]
    char *path;                   // the file, for error messages
} Tokenizer;

// Unicode classes of the pre-tokenizer regexes: \p{L}, \p{N}, \s

// generated by tests/gen_unicode_tables.py from Unicode 15.0.0: inclusive code point ranges lo,hi
// \p{L} (Lu Ll Lt Lm Lo): 659 ranges
static const uint32_t unicode_letter_ranges[] = {
    0x41,0x5A, 0x61,0x7A, 0xAA,0xAA, 0xB5,0xB5, 0xBA,0xBA, 0xC0,0xD6, 0xD8,0xF6, 0xF8,0x2C1,
    0x2C6,0x2D1, 0x2E0,0x2E4, 0x2EC,0x2EC, 0x2EE,0x2EE, 0x370,0x374, 0x376,0x377, 0x37A,0x37D, 0x37F,0x37F,
    0x386,0x386, 0x388,0x38A, 0x38C,0x38C, 0x38E,0x3A1, 0x3A3,0x3F5, 0x3F7,0x481, 0x48A,0x52F, 0x531,0x556,
    0x559,0x559, 0x560,0x588, 0x5D0,0x5EA, 0x5EF,0x5F2, 0x620,0x64A, 0x66E,0x66F, 0x671,0x6D3, 0x6D5,0x6D5,
    0x6E5,0x6E6, 0x6EE,0x6EF, 0x6FA,0x6FC, 0x6FF,0x6FF, 0x710,0x710, 0x712,0x72F, 0x74D,0x7A5, 0x7B1,0x7B1,
    0x7CA,0x7EA, 0x7F4,0x7F5, 0x7FA,0x7FA, 0x800,0x815, 0x81A,0x81A, 0x824,0x824, 0x828,0x828, 0x840,0x858,
    0x860,0x86A, 0x870,0x887, 0x889,0x88E, 0x8A0,0x8C9, 0x904,0x939, 0x93D,0x93D, 0x950,0x950, 0x958,0x961,
    0x971,0x980, 0x985,0x98C, 0x98F,0x990, 0x993,0x9A8, 0x9AA,0x9B0, 0x9B2,0x9B2, 0x9B6,0x9B9, 0x9BD,0x9BD,
    0x9CE,0x9CE, 0x9DC,0x9DD, 0x9DF,0x9E1, 0x9F0,0x9F1, 0x9FC,0x9FC, 0xA05,0xA0A, 0xA0F,0xA10, 0xA13,0xA28,
    0xA2A,0xA30, 0xA32,0xA33, 0xA35,0xA36, 0xA38,0xA39, 0xA59,0xA5C, 0xA5E,0xA5E, 0xA72,0xA74, 0xA85,0xA8D,
    0xA8F,0xA91, 0xA93,0xAA8, 0xAAA,0xAB0, 0xAB2,0xAB3, 0xAB5,0xAB9, 0xABD,0xABD, 0xAD0,0xAD0, 0xAE0,0xAE1,
    0xAF9,0xAF9, 0xB05,0xB0C, 0xB0F,0xB10, 0xB13,0xB28, 0xB2A,0xB30, 0xB32,0xB33, 0xB35,0xB39, 0xB3D,0xB3D,
    0xB5C,0xB5D, 0xB5F,0xB61, 0xB71,0xB71, 0xB83,0xB83, 0xB85,0xB8A, 0xB8E,0xB90, 0xB92,0xB95, 0xB99,0xB9A,
    0xB9C,0xB9C, 0xB9E,0xB9F, 0xBA3,0xBA4, 0xBA8,0xBAA, 0xBAE,0xBB9, 0xBD0,0xBD0, 0xC05,0xC0C, 0xC0E,0xC10,
    0xC12,0xC28, 0xC2A,0xC39, 0xC3D,0xC3D, 0xC58,0xC5A, 0xC5D,0xC5D, 0xC60,0xC61, 0xC80,0xC80, 0xC85,0xC8C,
    0xC8E,0xC90, 0xC92,0xCA8, 0xCAA,0xCB3, 0xCB5,0xCB9, 0xCBD,0xCBD, 0xCDD,0xCDE, 0xCE0,0xCE1, 0xCF1,0xCF2,
    0xD04,0xD0C, 0xD0E,0xD10, 0xD12,0xD3A, 0xD3D,0xD3D, 0xD4E,0xD4E, 0xD54,0xD56, 0xD5F,0xD61, 0xD7A,0xD7F,
    0xD85,0xD96, 0xD9A,0xDB1, 0xDB3,0xDBB, 0xDBD,0xDBD, 0xDC0,0xDC6, 0xE01,0xE30, 0xE32,0xE33, 0xE40,0xE46,
    0xE81,0xE82, 0xE84,0xE84, 0xE86,0xE8A, 0xE8C,0xEA3, 0xEA5,0xEA5, 0xEA7,0xEB0, 0xEB2,0xEB3, 0xEBD,0xEBD,
    0xEC0,0xEC4, 0xEC6,0xEC6, 0xEDC,0xEDF, 0xF00,0xF00, 0xF40,0xF47, 0xF49,0xF6C, 0xF88,0xF8C, 0x1000,0x102A,
    0x103F,0x103F, 0x1050,0x1055, 0x105A,0x105D, 0x1061,0x1061, 0x1065,0x1066, 0x106E,0x1070, 0x1075,0x1081, 0x108E,0x108E,
    0x10A0,0x10C5, 0x10C7,0x10C7, 0x10CD,0x10CD, 0x10D0,0x10FA, 0x10FC,0x1248, 0x124A,0x124D, 0x1250,0x1256, 0x1258,0x1258,
    0x125A,0x125D, 0x1260,0x1288, 0x128A,0x128D, 0x1290,0x12B0, 0x12B2,0x12B5, 0x12B8,0x12BE, 0x12C0,0x12C0, 0x12C2,0x12C5,
    0x12C8,0x12D6, 0x12D8,0x1310, 0x1312,0x1315, 0x1318,0x135A, 0x1380,0x138F, 0x13A0,0x13F5, 0x13F8,0x13FD, 0x1401,0x166C,
    0x166F,0x167F, 0x1681,0x169A, 0x16A0,0x16EA, 0x16F1,0x16F8, 0x1700,0x1711, 0x171F,0x1731, 0x1740,0x1751, 0x1760,0x176C,
    0x176E,0x1770, 0x1780,0x17B3, 0x17D7,0x17D7, 0x17DC,0x17DC, 0x1820,0x1878, 0x1880,0x1884, 0x1887,0x18A8, 0x18AA,0x18AA,
    0x18B0,0x18F5, 0x1900,0x191E, 0x1950,0x196D, 0x1970,0x1974, 0x1980,0x19AB, 0x19B0,0x19C9, 0x1A00,0x1A16, 0x1A20,0x1A54,
    0x1AA7,0x1AA7, 0x1B05,0x1B33, 0x1B45,0x1B4C, 0x1B83,0x1BA0, 0x1BAE,0x1BAF, 0x1BBA,0x1BE5, 0x1C00,0x1C23, 0x1C4D,0x1C4F,
    0x1C5A,0x1C7D, 0x1C80,0x1C88, 0x1C90,0x1CBA, 0x1CBD,0x1CBF, 0x1CE9,0x1CEC, 0x1CEE,0x1CF3, 0x1CF5,0x1CF6, 0x1CFA,0x1CFA,
    0x1D00,0x1DBF, 0x1E00,0x1F15, 0x1F18,0x1F1D, 0x1F20,0x1F45, 0x1F48,0x1F4D, 0x1F50,0x1F57, 0x1F59,0x1F59, 0x1F5B,0x1F5B,
    0x1F5D,0x1F5D, 0x1F5F,0x1F7D, 0x1F80,0x1FB4, 0x1FB6,0x1FBC, 0x1FBE,0x1FBE, 0x1FC2,0x1FC4, 0x1FC6,0x1FCC, 0x1FD0,0x1FD3,
    0x1FD6,0x1FDB, 0x1FE0,0x1FEC, 0x1FF2,0x1FF4, 0x1FF6,0x1FFC, 0x2071,0x2071, 0x207F,0x207F, 0x2090,0x209C, 0x2102,0x2102,
    0x2107,0x2107, 0x210A,0x2113, 0x2115,0x2115, 0x2119,0x211D, 0x2124,0x2124, 0x2126,0x2126, 0x2128,0x2128, 0x212A,0x212D,
    0x212F,0x2139, 0x213C,0x213F, 0x2145,0x2149, 0x214E,0x214E, 0x2183,0x2184, 0x2C00,0x2CE4, 0x2CEB,0x2CEE, 0x2CF2,0x2CF3,
    0x2D00,0x2D25, 0x2D27,0x2D27, 0x2D2D,0x2D2D, 0x2D30,0x2D67, 0x2D6F,0x2D6F, 0x2D80,0x2D96, 0x2DA0,0x2DA6, 0x2DA8,0x2DAE,
    0x2DB0,0x2DB6, 0x2DB8,0x2DBE, 0x2DC0,0x2DC6, 0x2DC8,0x2DCE, 0x2DD0,0x2DD6, 0x2DD8,0x2DDE, 0x2E2F,0x2E2F, 0x3005,0x3006,
    0x3031,0x3035, 0x303B,0x303C, 0x3041,0x3096, 0x309D,0x309F, 0x30A1,0x30FA, 0x30FC,0x30FF, 0x3105,0x312F, 0x3131,0x318E,
    0x31A0,0x31BF, 0x31F0,0x31FF, 0x3400,0x4DBF, 0x4E00,0xA48C, 0xA4D0,0xA4FD, 0xA500,0xA60C, 0xA610,0xA61F, 0xA62A,0xA62B,
    0xA640,0xA66E, 0xA67F,0xA69D, 0xA6A0,0xA6E5, 0xA717,0xA71F, 0xA722,0xA788, 0xA78B,0xA7CA, 0xA7D0,0xA7D1, 0xA7D3,0xA7D3,
    0xA7D5,0xA7D9, 0xA7F2,0xA801, 0xA803,0xA805, 0xA807,0xA80A, 0xA80C,0xA822, 0xA840,0xA873, 0xA882,0xA8B3, 0xA8F2,0xA8F7,
    0xA8FB,0xA8FB, 0xA8FD,0xA8FE, 0xA90A,0xA925, 0xA930,0xA946, 0xA960,0xA97C, 0xA984,0xA9B2, 0xA9CF,0xA9CF, 0xA9E0,0xA9E4,
    0xA9E6,0xA9EF, 0xA9FA,0xA9FE, 0xAA00,0xAA28, 0xAA40,0xAA42, 0xAA44,0xAA4B, 0xAA60,0xAA76, 0xAA7A,0xAA7A, 0xAA7E,0xAAAF,
    0xAAB1,0xAAB1, 0xAAB5,0xAAB6, 0xAAB9,0xAABD, 0xAAC0,0xAAC0, 0xAAC2,0xAAC2, 0xAADB,0xAADD, 0xAAE0,0xAAEA, 0xAAF2,0xAAF4,
    0xAB01,0xAB06, 0xAB09,0xAB0E, 0xAB11,0xAB16, 0xAB20,0xAB26, 0xAB28,0xAB2E, 0xAB30,0xAB5A, 0xAB5C,0xAB69, 0xAB70,0xABE2,
    0xAC00,0xD7A3, 0xD7B0,0xD7C6, 0xD7CB,0xD7FB, 0xF900,0xFA6D, 0xFA70,0xFAD9, 0xFB00,0xFB06, 0xFB13,0xFB17, 0xFB1D,0xFB1D,
    0xFB1F,0xFB28, 0xFB2A,0xFB36, 0xFB38,0xFB3C, 0xFB3E,0xFB3E, 0xFB40,0xFB41, 0xFB43,0xFB44, 0xFB46,0xFBB1, 0xFBD3,0xFD3D,
    0xFD50,0xFD8F, 0xFD92,0xFDC7, 0xFDF0,0xFDFB, 0xFE70,0xFE74, 0xFE76,0xFEFC, 0xFF21,0xFF3A, 0xFF41,0xFF5A, 0xFF66,0xFFBE,
    0xFFC2,0xFFC7, 0xFFCA,0xFFCF, 0xFFD2,0xFFD7, 0xFFDA,0xFFDC, 0x10000,0x1000B, 0x1000D,0x10026, 0x10028,0x1003A, 0x1003C,0x1003D,
    0x1003F,0x1004D, 0x10050,0x1005D, 0x10080,0x100FA, 0x10280,0x1029C, 0x102A0,0x102D0, 0x10300,0x1031F, 0x1032D,0x10340, 0x10342,0x10349,
    0x10350,0x10375, 0x10380,0x1039D, 0x103A0,0x103C3, 0x103C8,0x103CF, 0x10400,0x1049D, 0x104B0,0x104D3, 0x104D8,0x104FB, 0x10500,0x10527,
    0x10530,0x10563, 0x10570,0x1057A, 0x1057C,0x1058A, 0x1058C,0x10592, 0x10594,0x10595, 0x10597,0x105A1, 0x105A3,0x105B1, 0x105B3,0x105B9,
    0x105BB,0x105BC, 0x10600,0x10736, 0x10740,0x10755, 0x10760,0x10767, 0x10780,0x10785, 0x10787,0x107B0, 0x107B2,0x107BA, 0x10800,0x10805,
    0x10808,0x10808, 0x1080A,0x10835, 0x10837,0x10838, 0x1083C,0x1083C, 0x1083F,0x10855, 0x10860,0x10876, 0x10880,0x1089E, 0x108E0,0x108F2,
    0x108F4,0x108F5, 0x10900,0x10915, 0x10920,0x10939, 0x10980,0x109B7, 0x109BE,0x109BF, 0x10A00,0x10A00, 0x10A10,0x10A13, 0x10A15,0x10A17,
    0x10A19,0x10A35, 0x10A60,0x10A7C, 0x10A80,0x10A9C, 0x10AC0,0x10AC7, 0x10AC9,0x10AE4, 0x10B00,0x10B35, 0x10B40,0x10B55, 0x10B60,0x10B72,
    0x10B80,0x10B91, 0x10C00,0x10C48, 0x10C80,0x10CB2, 0x10CC0,0x10CF2, 0x10D00,0x10D23, 0x10E80,0x10EA9, 0x10EB0,0x10EB1, 0x10F00,0x10F1C,
    0x10F27,0x10F27, 0x10F30,0x10F45, 0x10F70,0x10F81, 0x10FB0,0x10FC4, 0x10FE0,0x10FF6, 0x11003,0x11037, 0x11071,0x11072, 0x11075,0x11075,
    0x11083,0x110AF, 0x110D0,0x110E8, 0x11103,0x11126, 0x11144,0x11144, 0x11147,0x11147, 0x11150,0x11172, 0x11176,0x11176, 0x11183,0x111B2,
    0x111C1,0x111C4, 0x111DA,0x111DA, 0x111DC,0x111DC, 0x11200,0x11211, 0x11213,0x1122B, 0x1123F,0x11240, 0x11280,0x11286, 0x11288,0x11288,
    0x1128A,0x1128D, 0x1128F,0x1129D, 0x1129F,0x112A8, 0x112B0,0x112DE, 0x11305,0x1130C, 0x1130F,0x11310, 0x11313,0x11328, 0x1132A,0x11330,
    0x11332,0x11333, 0x11335,0x11339, 0x1133D,0x1133D, 0x11350,0x11350, 0x1135D,0x11361, 0x11400,0x11434, 0x11447,0x1144A, 0x1145F,0x11461,
    0x11480,0x114AF, 0x114C4,0x114C5, 0x114C7,0x114C7, 0x11580,0x115AE, 0x115D8,0x115DB, 0x11600,0x1162F, 0x11644,0x11644, 0x11680,0x116AA,
    0x116B8,0x116B8, 0x11700,0x1171A, 0x11740,0x11746, 0x11800,0x1182B, 0x118A0,0x118DF, 0x118FF,0x11906, 0x11909,0x11909, 0x1190C,0x11913,
    0x11915,0x11916, 0x11918,0x1192F, 0x1193F,0x1193F, 0x11941,0x11941, 0x119A0,0x119A7, 0x119AA,0x119D0, 0x119E1,0x119E1, 0x119E3,0x119E3,
    0x11A00,0x11A00, 0x11A0B,0x11A32, 0x11A3A,0x11A3A, 0x11A50,0x11A50, 0x11A5C,0x11A89, 0x11A9D,0x11A9D, 0x11AB0,0x11AF8, 0x11C00,0x11C08,
    0x11C0A,0x11C2E, 0x11C40,0x11C40, 0x11C72,0x11C8F, 0x11D00,0x11D06, 0x11D08,0x11D09, 0x11D0B,0x11D30, 0x11D46,0x11D46, 0x11D60,0x11D65,
    0x11D67,0x11D68, 0x11D6A,0x11D89, 0x11D98,0x11D98, 0x11EE0,0x11EF2, 0x11F02,0x11F02, 0x11F04,0x11F10, 0x11F12,0x11F33, 0x11FB0,0x11FB0,
    0x12000,0x12399, 0x12480,0x12543, 0x12F90,0x12FF0, 0x13000,0x1342F, 0x13441,0x13446, 0x14400,0x14646, 0x16800,0x16A38, 0x16A40,0x16A5E,
    0x16A70,0x16ABE, 0x16AD0,0x16AED, 0x16B00,0x16B2F, 0x16B40,0x16B43, 0x16B63,0x16B77, 0x16B7D,0x16B8F, 0x16E40,0x16E7F, 0x16F00,0x16F4A,
    0x16F50,0x16F50, 0x16F93,0x16F9F, 0x16FE0,0x16FE1, 0x16FE3,0x16FE3, 0x17000,0x187F7, 0x18800,0x18CD5, 0x18D00,0x18D08, 0x1AFF0,0x1AFF3,
    0x1AFF5,0x1AFFB, 0x1AFFD,0x1AFFE, 0x1B000,0x1B122, 0x1B132,0x1B132, 0x1B150,0x1B152, 0x1B155,0x1B155, 0x1B164,0x1B167, 0x1B170,0x1B2FB,
    0x1BC00,0x1BC6A, 0x1BC70,0x1BC7C, 0x1BC80,0x1BC88, 0x1BC90,0x1BC99, 0x1D400,0x1D454, 0x1D456,0x1D49C, 0x1D49E,0x1D49F, 0x1D4A2,0x1D4A2,
    0x1D4A5,0x1D4A6, 0x1D4A9,0x1D4AC, 0x1D4AE,0x1D4B9, 0x1D4BB,0x1D4BB, 0x1D4BD,0x1D4C3, 0x1D4C5,0x1D505, 0x1D507,0x1D50A, 0x1D50D,0x1D514,
    0x1D516,0x1D51C, 0x1D51E,0x1D539, 0x1D53B,0x1D53E, 0x1D540,0x1D544, 0x1D546,0x1D546, 0x1D54A,0x1D550, 0x1D552,0x1D6A5, 0x1D6A8,0x1D6C0,
    0x1D6C2,0x1D6DA, 0x1D6DC,0x1D6FA, 0x1D6FC,0x1D714, 0x1D716,0x1D734, 0x1D736,0x1D74E, 0x1D750,0x1D76E, 0x1D770,0x1D788, 0x1D78A,0x1D7A8,
    0x1D7AA,0x1D7C2, 0x1D7C4,0x1D7CB, 0x1DF00,0x1DF1E, 0x1DF25,0x1DF2A, 0x1E030,0x1E06D, 0x1E100,0x1E12C, 0x1E137,0x1E13D, 0x1E14E,0x1E14E,
    0x1E290,0x1E2AD, 0x1E2C0,0x1E2EB, 0x1E4D0,0x1E4EB, 0x1E7E0,0x1E7E6, 0x1E7E8,0x1E7EB, 0x1E7ED,0x1E7EE, 0x1E7F0,0x1E7FE, 0x1E800,0x1E8C4,
    0x1E900,0x1E943, 0x1E94B,0x1E94B, 0x1EE00,0x1EE03, 0x1EE05,0x1EE1F, 0x1EE21,0x1EE22, 0x1EE24,0x1EE24, 0x1EE27,0x1EE27, 0x1EE29,0x1EE32,
    0x1EE34,0x1EE37, 0x1EE39,0x1EE39, 0x1EE3B,0x1EE3B, 0x1EE42,0x1EE42, 0x1EE47,0x1EE47, 0x1EE49,0x1EE49, 0x1EE4B,0x1EE4B, 0x1EE4D,0x1EE4F,
    0x1EE51,0x1EE52, 0x1EE54,0x1EE54, 0x1EE57,0x1EE57, 0x1EE59,0x1EE59, 0x1EE5B,0x1EE5B, 0x1EE5D,0x1EE5D, 0x1EE5F,0x1EE5F, 0x1EE61,0x1EE62,
    0x1EE64,0x1EE64, 0x1EE67,0x1EE6A, 0x1EE6C,0x1EE72, 0x1EE74,0x1EE77, 0x1EE79,0x1EE7C, 0x1EE7E,0x1EE7E, 0x1EE80,0x1EE89, 0x1EE8B,0x1EE9B,
    0x1EEA1,0x1EEA3, 0x1EEA5,0x1EEA9, 0x1EEAB,0x1EEBB, 0x20000,0x2A6DF, 0x2A700,0x2B739, 0x2B740,0x2B81D, 0x2B820,0x2CEA1, 0x2CEB0,0x2EBE0,
    0x2F800,0x2FA1D, 0x30000,0x3134A, 0x31350,0x323AF,
};
// \p{N} (Nd Nl No): 137 ranges
static const uint32_t unicode_number_ranges[] = {
    0x30,0x39, 0xB2,0xB3, 0xB9,0xB9, 0xBC,0xBE, 0x660,0x669, 0x6F0,0x6F9, 0x7C0,0x7C9, 0x966,0x96F,
    0x9E6,0x9EF, 0x9F4,0x9F9, 0xA66,0xA6F, 0xAE6,0xAEF, 0xB66,0xB6F, 0xB72,0xB77, 0xBE6,0xBF2, 0xC66,0xC6F,
    0xC78,0xC7E, 0xCE6,0xCEF, 0xD58,0xD5E, 0xD66,0xD78, 0xDE6,0xDEF, 0xE50,0xE59, 0xED0,0xED9, 0xF20,0xF33,
    0x1040,0x1049, 0x1090,0x1099, 0x1369,0x137C, 0x16EE,0x16F0, 0x17E0,0x17E9, 0x17F0,0x17F9, 0x1810,0x1819, 0x1946,0x194F,
    0x19D0,0x19DA, 0x1A80,0x1A89, 0x1A90,0x1A99, 0x1B50,0x1B59, 0x1BB0,0x1BB9, 0x1C40,0x1C49, 0x1C50,0x1C59, 0x2070,0x2070,
    0x2074,0x2079, 0x2080,0x2089, 0x2150,0x2182, 0x2185,0x2189, 0x2460,0x249B, 0x24EA,0x24FF, 0x2776,0x2793, 0x2CFD,0x2CFD,
    0x3007,0x3007, 0x3021,0x3029, 0x3038,0x303A, 0x3192,0x3195, 0x3220,0x3229, 0x3248,0x324F, 0x3251,0x325F, 0x3280,0x3289,
    0x32B1,0x32BF, 0xA620,0xA629, 0xA6E6,0xA6EF, 0xA830,0xA835, 0xA8D0,0xA8D9, 0xA900,0xA909, 0xA9D0,0xA9D9, 0xA9F0,0xA9F9,
    0xAA50,0xAA59, 0xABF0,0xABF9, 0xFF10,0xFF19, 0x10107,0x10133, 0x10140,0x10178, 0x1018A,0x1018B, 0x102E1,0x102FB, 0x10320,0x10323,
    0x10341,0x10341, 0x1034A,0x1034A, 0x103D1,0x103D5, 0x104A0,0x104A9, 0x10858,0x1085F, 0x10879,0x1087F, 0x108A7,0x108AF, 0x108FB,0x108FF,
    0x10916,0x1091B, 0x109BC,0x109BD, 0x109C0,0x109CF, 0x109D2,0x109FF, 0x10A40,0x10A48, 0x10A7D,0x10A7E, 0x10A9D,0x10A9F, 0x10AEB,0x10AEF,
    0x10B58,0x10B5F, 0x10B78,0x10B7F, 0x10BA9,0x10BAF, 0x10CFA,0x10CFF, 0x10D30,0x10D39, 0x10E60,0x10E7E, 0x10F1D,0x10F26, 0x10F51,0x10F54,
    0x10FC5,0x10FCB, 0x11052,0x1106F, 0x110F0,0x110F9, 0x11136,0x1113F, 0x111D0,0x111D9, 0x111E1,0x111F4, 0x112F0,0x112F9, 0x11450,0x11459,
    0x114D0,0x114D9, 0x11650,0x11659, 0x116C0,0x116C9, 0x11730,0x1173B, 0x118E0,0x118F2, 0x11950,0x11959, 0x11C50,0x11C6C, 0x11D50,0x11D59,
    0x11DA0,0x11DA9, 0x11F50,0x11F59, 0x11FC0,0x11FD4, 0x12400,0x1246E, 0x16A60,0x16A69, 0x16AC0,0x16AC9, 0x16B50,0x16B59, 0x16B5B,0x16B61,
    0x16E80,0x16E96, 0x1D2C0,0x1D2D3, 0x1D2E0,0x1D2F3, 0x1D360,0x1D378, 0x1D7CE,0x1D7FF, 0x1E140,0x1E149, 0x1E2F0,0x1E2F9, 0x1E4F0,0x1E4F9,
    0x1E8C7,0x1E8CF, 0x1E950,0x1E959, 0x1EC71,0x1ECAB, 0x1ECAD,0x1ECAF, 0x1ECB1,0x1ECB4, 0x1ED01,0x1ED2D, 0x1ED2F,0x1ED3D, 0x1F100,0x1F10C,
    0x1FBF0,0x1FBF9,
};
// \s (White_Space): 10 ranges
static const uint32_t unicode_space_ranges[] = {
    0x9,0xD, 0x20,0x20, 0x85,0x85, 0xA0,0xA0, 0x1680,0x1680, 0x2000,0x200A, 0x2028,0x2029, 0x202F,0x202F,
    0x205F,0x205F, 0x3000,0x3000,
};

enum { UC_LETTER = 1, UC_NUMBER = 2, UC_SPACE = 4 };
#define UC_INVALID 0xFFFFFFFFu  // a byte that is not valid UTF-8: in no class

static int in_ranges(const uint32_t *r, size_t nr, uint32_t cp) { // r holds nr sorted lo,hi pairs
    size_t lo = 0, hi = nr;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[2 * mid]) hi = mid;
        else if (cp > r[2 * mid + 1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}
static int unicode_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return UC_LETTER;
        if (cp >= '0' && cp <= '9') return UC_NUMBER;
        return (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) ? UC_SPACE : 0;
    }
    if (cp == UC_INVALID) return 0;
#define UC_IN(table) in_ranges(table, sizeof(table) / sizeof(table[0]) / 2, cp)
    return (UC_IN(unicode_letter_ranges) ? UC_LETTER : 0) | (UC_IN(unicode_number_ranges) ? UC_NUMBER : 0) |
           (UC_IN(unicode_space_ranges) ? UC_SPACE : 0);
#undef UC_IN
}

// Decode the UTF-8 character at s[0..n), n >= 1; returns its length. A byte that does not start a
// valid, complete, shortest-form sequence is a character of its own with *cp = UC_INVALID.
static size_t utf8_decode(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    size_t len = u[0] < 0x80 ? 1 : u[0] < 0xC2 ? 0 : u[0] < 0xE0 ? 2 : u[0] < 0xF0 ? 3 : u[0] < 0xF5 ? 4 : 0;
    *cp = UC_INVALID;
    if (len == 1) { *cp = u[0]; return 1; }
    if (len == 0 || len > n) return 1;
    uint32_t c = u[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((u[i] & 0xC0) != 0x80) return 1;
        c = (c << 6) | (u[i] & 0x3F);
    }
    // overlong forms, surrogates and values past U+10FFFF are invalid
    if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10FFFF)) || (c >= 0xD800 && c <= 0xDFFF)) return 1;
    *cp = c;
    return len;
}
static int class_at(const char *s, size_t n, size_t i, size_t *len) { // class and length of the char at s[i]
    uint32_t cp;
    *len = utf8_decode(s + i, n - i, &cp);
    return unicode_class(cp);
}

// GPT-2's bytes_to_unicode: the printable Latin-1 bytes stand for themselves, the other 68 bytes
// (0-32, 127-160, 173), in order, for U+0100..U+0143, so that every byte is a visible character.
static uint32_t byte_to_unicode(unsigned char b) {
    if (b <= 32) return 256 + b;
    if (b >= 127 && b <= 160) return 256 + 33 + (b - 127);
    if (b == 173) return 256 + 67;
    return b;
}
static int unicode_to_byte(uint32_t cp) { // the inverse; -1 for a character outside the table
    if (cp >= 256 + 68) return -1;
    if (cp >= 256) { uint32_t k = cp - 256; return (int)(k <= 32 ? k : k <= 66 ? k - 33 + 127 : 173); }
    if (cp <= 32 || (cp >= 127 && cp <= 160) || cp == 173) return -1;
    return (int)cp;
}

// ----------------------------------------------------------------------------
// tokenizer: Unicode normalization (the NFC and NFD normalizers of tokenizer.json), UAX #15:
// decompose every character canonically (again until none decomposes; Hangul syllables by
// arithmetic), put each run of combining marks in canonical order (stable sort by class), then
// for NFC compose: each character with the last starter before it if no character in between has
// the same or a higher class, by the primary composites (and Hangul L+V, LV+T).

// generated by tests/gen_unicode_tables.py --nfc from Unicode 15.0.0's UnicodeData.txt, DerivedNormalizationProps.txt
// and DerivedAge.txt: the characters of Unicode 9.0 (Hugging Face tokenizers' NFC: unicode-normalization-alignments
// 0.1.12, Unicode 9.0.0); a newer character has class 0 and no decomposition
#define UNICODE_NORM_AGE 9.0
// nonzero canonical combining classes: 333 ranges lo,hi,class
static const uint32_t unicode_ccc[] = {
    0x300,0x314,230, 0x315,0x315,232, 0x316,0x319,220, 0x31A,0x31A,232, 0x31B,0x31B,216, 0x31C,0x320,220, 0x321,0x322,202, 0x323,0x326,220,
    0x327,0x328,202, 0x329,0x333,220, 0x334,0x338,1, 0x339,0x33C,220, 0x33D,0x344,230, 0x345,0x345,240, 0x346,0x346,230, 0x347,0x349,220,
    0x34A,0x34C,230, 0x34D,0x34E,220, 0x350,0x352,230, 0x353,0x356,220, 0x357,0x357,230, 0x358,0x358,232, 0x359,0x35A,220, 0x35B,0x35B,230,
    0x35C,0x35C,233, 0x35D,0x35E,234, 0x35F,0x35F,233, 0x360,0x361,234, 0x362,0x362,233, 0x363,0x36F,230, 0x483,0x487,230, 0x591,0x591,220,
    0x592,0x595,230, 0x596,0x596,220, 0x597,0x599,230, 0x59A,0x59A,222, 0x59B,0x59B,220, 0x59C,0x5A1,230, 0x5A2,0x5A7,220, 0x5A8,0x5A9,230,
    0x5AA,0x5AA,220, 0x5AB,0x5AC,230, 0x5AD,0x5AD,222, 0x5AE,0x5AE,228, 0x5AF,0x5AF,230, 0x5B0,0x5B0,10, 0x5B1,0x5B1,11, 0x5B2,0x5B2,12,
    0x5B3,0x5B3,13, 0x5B4,0x5B4,14, 0x5B5,0x5B5,15, 0x5B6,0x5B6,16, 0x5B7,0x5B7,17, 0x5B8,0x5B8,18, 0x5B9,0x5BA,19, 0x5BB,0x5BB,20,
    0x5BC,0x5BC,21, 0x5BD,0x5BD,22, 0x5BF,0x5BF,23, 0x5C1,0x5C1,24, 0x5C2,0x5C2,25, 0x5C4,0x5C4,230, 0x5C5,0x5C5,220, 0x5C7,0x5C7,18,
    0x610,0x617,230, 0x618,0x618,30, 0x619,0x619,31, 0x61A,0x61A,32, 0x64B,0x64B,27, 0x64C,0x64C,28, 0x64D,0x64D,29, 0x64E,0x64E,30,
    0x64F,0x64F,31, 0x650,0x650,32, 0x651,0x651,33, 0x652,0x652,34, 0x653,0x654,230, 0x655,0x656,220, 0x657,0x65B,230, 0x65C,0x65C,220,
    0x65D,0x65E,230, 0x65F,0x65F,220, 0x670,0x670,35, 0x6D6,0x6DC,230, 0x6DF,0x6E2,230, 0x6E3,0x6E3,220, 0x6E4,0x6E4,230, 0x6E7,0x6E8,230,
    0x6EA,0x6EA,220, 0x6EB,0x6EC,230, 0x6ED,0x6ED,220, 0x711,0x711,36, 0x730,0x730,230, 0x731,0x731,220, 0x732,0x733,230, 0x734,0x734,220,
    0x735,0x736,230, 0x737,0x739,220, 0x73A,0x73A,230, 0x73B,0x73C,220, 0x73D,0x73D,230, 0x73E,0x73E,220, 0x73F,0x741,230, 0x742,0x742,220,
    0x743,0x743,230, 0x744,0x744,220, 0x745,0x745,230, 0x746,0x746,220, 0x747,0x747,230, 0x748,0x748,220, 0x749,0x74A,230, 0x7EB,0x7F1,230,
    0x7F2,0x7F2,220, 0x7F3,0x7F3,230, 0x816,0x819,230, 0x81B,0x823,230, 0x825,0x827,230, 0x829,0x82D,230, 0x859,0x85B,220, 0x8D4,0x8E1,230,
    0x8E3,0x8E3,220, 0x8E4,0x8E5,230, 0x8E6,0x8E6,220, 0x8E7,0x8E8,230, 0x8E9,0x8E9,220, 0x8EA,0x8EC,230, 0x8ED,0x8EF,220, 0x8F0,0x8F0,27,
    0x8F1,0x8F1,28, 0x8F2,0x8F2,29, 0x8F3,0x8F5,230, 0x8F6,0x8F6,220, 0x8F7,0x8F8,230, 0x8F9,0x8FA,220, 0x8FB,0x8FF,230, 0x93C,0x93C,7,
    0x94D,0x94D,9, 0x951,0x951,230, 0x952,0x952,220, 0x953,0x954,230, 0x9BC,0x9BC,7, 0x9CD,0x9CD,9, 0xA3C,0xA3C,7, 0xA4D,0xA4D,9,
    0xABC,0xABC,7, 0xACD,0xACD,9, 0xB3C,0xB3C,7, 0xB4D,0xB4D,9, 0xBCD,0xBCD,9, 0xC4D,0xC4D,9, 0xC55,0xC55,84, 0xC56,0xC56,91,
    0xCBC,0xCBC,7, 0xCCD,0xCCD,9, 0xD4D,0xD4D,9, 0xDCA,0xDCA,9, 0xE38,0xE39,103, 0xE3A,0xE3A,9, 0xE48,0xE4B,107, 0xEB8,0xEB9,118,
    0xEC8,0xECB,122, 0xF18,0xF19,220, 0xF35,0xF35,220, 0xF37,0xF37,220, 0xF39,0xF39,216, 0xF71,0xF71,129, 0xF72,0xF72,130, 0xF74,0xF74,132,
    0xF7A,0xF7D,130, 0xF80,0xF80,130, 0xF82,0xF83,230, 0xF84,0xF84,9, 0xF86,0xF87,230, 0xFC6,0xFC6,220, 0x1037,0x1037,7, 0x1039,0x103A,9,
    0x108D,0x108D,220, 0x135D,0x135F,230, 0x1714,0x1714,9, 0x1734,0x1734,9, 0x17D2,0x17D2,9, 0x17DD,0x17DD,230, 0x18A9,0x18A9,228, 0x1939,0x1939,222,
    0x193A,0x193A,230, 0x193B,0x193B,220, 0x1A17,0x1A17,230, 0x1A18,0x1A18,220, 0x1A60,0x1A60,9, 0x1A75,0x1A7C,230, 0x1A7F,0x1A7F,220, 0x1AB0,0x1AB4,230,
    0x1AB5,0x1ABA,220, 0x1ABB,0x1ABC,230, 0x1ABD,0x1ABD,220, 0x1B34,0x1B34,7, 0x1B44,0x1B44,9, 0x1B6B,0x1B6B,230, 0x1B6C,0x1B6C,220, 0x1B6D,0x1B73,230,
    0x1BAA,0x1BAB,9, 0x1BE6,0x1BE6,7, 0x1BF2,0x1BF3,9, 0x1C37,0x1C37,7, 0x1CD0,0x1CD2,230, 0x1CD4,0x1CD4,1, 0x1CD5,0x1CD9,220, 0x1CDA,0x1CDB,230,
    0x1CDC,0x1CDF,220, 0x1CE0,0x1CE0,230, 0x1CE2,0x1CE8,1, 0x1CED,0x1CED,220, 0x1CF4,0x1CF4,230, 0x1CF8,0x1CF9,230, 0x1DC0,0x1DC1,230, 0x1DC2,0x1DC2,220,
    0x1DC3,0x1DC9,230, 0x1DCA,0x1DCA,220, 0x1DCB,0x1DCC,230, 0x1DCD,0x1DCD,234, 0x1DCE,0x1DCE,214, 0x1DCF,0x1DCF,220, 0x1DD0,0x1DD0,202, 0x1DD1,0x1DF5,230,
    0x1DFB,0x1DFB,230, 0x1DFC,0x1DFC,233, 0x1DFD,0x1DFD,220, 0x1DFE,0x1DFE,230, 0x1DFF,0x1DFF,220, 0x20D0,0x20D1,230, 0x20D2,0x20D3,1, 0x20D4,0x20D7,230,
    0x20D8,0x20DA,1, 0x20DB,0x20DC,230, 0x20E1,0x20E1,230, 0x20E5,0x20E6,1, 0x20E7,0x20E7,230, 0x20E8,0x20E8,220, 0x20E9,0x20E9,230, 0x20EA,0x20EB,1,
    0x20EC,0x20EF,220, 0x20F0,0x20F0,230, 0x2CEF,0x2CF1,230, 0x2D7F,0x2D7F,9, 0x2DE0,0x2DFF,230, 0x302A,0x302A,218, 0x302B,0x302B,228, 0x302C,0x302C,232,
    0x302D,0x302D,222, 0x302E,0x302F,224, 0x3099,0x309A,8, 0xA66F,0xA66F,230, 0xA674,0xA67D,230, 0xA69E,0xA69F,230, 0xA6F0,0xA6F1,230, 0xA806,0xA806,9,
    0xA8C4,0xA8C4,9, 0xA8E0,0xA8F1,230, 0xA92B,0xA92D,220, 0xA953,0xA953,9, 0xA9B3,0xA9B3,7, 0xA9C0,0xA9C0,9, 0xAAB0,0xAAB0,230, 0xAAB2,0xAAB3,230,
    0xAAB4,0xAAB4,220, 0xAAB7,0xAAB8,230, 0xAABE,0xAABF,230, 0xAAC1,0xAAC1,230, 0xAAF6,0xAAF6,9, 0xABED,0xABED,9, 0xFB1E,0xFB1E,26, 0xFE20,0xFE26,230,
    0xFE27,0xFE2D,220, 0xFE2E,0xFE2F,230, 0x101FD,0x101FD,220, 0x102E0,0x102E0,220, 0x10376,0x1037A,230, 0x10A0D,0x10A0D,220, 0x10A0F,0x10A0F,230, 0x10A38,0x10A38,230,
    0x10A39,0x10A39,1, 0x10A3A,0x10A3A,220, 0x10A3F,0x10A3F,9, 0x10AE5,0x10AE5,230, 0x10AE6,0x10AE6,220, 0x11046,0x11046,9, 0x1107F,0x1107F,9, 0x110B9,0x110B9,9,
    0x110BA,0x110BA,7, 0x11100,0x11102,230, 0x11133,0x11134,9, 0x11173,0x11173,7, 0x111C0,0x111C0,9, 0x111CA,0x111CA,7, 0x11235,0x11235,9, 0x11236,0x11236,7,
    0x112E9,0x112E9,7, 0x112EA,0x112EA,9, 0x1133C,0x1133C,7, 0x1134D,0x1134D,9, 0x11366,0x1136C,230, 0x11370,0x11374,230, 0x11442,0x11442,9, 0x11446,0x11446,7,
    0x114C2,0x114C2,9, 0x114C3,0x114C3,7, 0x115BF,0x115BF,9, 0x115C0,0x115C0,7, 0x1163F,0x1163F,9, 0x116B6,0x116B6,9, 0x116B7,0x116B7,7, 0x1172B,0x1172B,9,
    0x11C3F,0x11C3F,9, 0x16AF0,0x16AF4,1, 0x16B30,0x16B36,230, 0x1BC9E,0x1BC9E,1, 0x1D165,0x1D166,216, 0x1D167,0x1D169,1, 0x1D16D,0x1D16D,226, 0x1D16E,0x1D172,216,
    0x1D17B,0x1D182,220, 0x1D185,0x1D189,230, 0x1D18A,0x1D18B,220, 0x1D1AA,0x1D1AD,230, 0x1D242,0x1D244,230, 0x1E000,0x1E006,230, 0x1E008,0x1E018,230, 0x1E01B,0x1E021,230,
    0x1E023,0x1E024,230, 0x1E026,0x1E02A,230, 0x1E8D0,0x1E8D6,220, 0x1E944,0x1E949,230, 0x1E94A,0x1E94A,7,
};
// canonical decompositions: 2060 entries cp,first,second (second 0: a singleton)
static const uint32_t unicode_decomp[] = {
    0xC0,0x41,0x300, 0xC1,0x41,0x301, 0xC2,0x41,0x302, 0xC3,0x41,0x303, 0xC4,0x41,0x308, 0xC5,0x41,0x30A,
    0xC7,0x43,0x327, 0xC8,0x45,0x300, 0xC9,0x45,0x301, 0xCA,0x45,0x302, 0xCB,0x45,0x308, 0xCC,0x49,0x300,
    0xCD,0x49,0x301, 0xCE,0x49,0x302, 0xCF,0x49,0x308, 0xD1,0x4E,0x303, 0xD2,0x4F,0x300, 0xD3,0x4F,0x301,
    0xD4,0x4F,0x302, 0xD5,0x4F,0x303, 0xD6,0x4F,0x308, 0xD9,0x55,0x300, 0xDA,0x55,0x301, 0xDB,0x55,0x302,
    0xDC,0x55,0x308, 0xDD,0x59,0x301, 0xE0,0x61,0x300, 0xE1,0x61,0x301, 0xE2,0x61,0x302, 0xE3,0x61,0x303,
    0xE4,0x61,0x308, 0xE5,0x61,0x30A, 0xE7,0x63,0x327, 0xE8,0x65,0x300, 0xE9,0x65,0x301, 0xEA,0x65,0x302,
    0xEB,0x65,0x308, 0xEC,0x69,0x300, 0xED,0x69,0x301, 0xEE,0x69,0x302, 0xEF,0x69,0x308, 0xF1,0x6E,0x303,
    0xF2,0x6F,0x300, 0xF3,0x6F,0x301, 0xF4,0x6F,0x302, 0xF5,0x6F,0x303, 0xF6,0x6F,0x308, 0xF9,0x75,0x300,
    0xFA,0x75,0x301, 0xFB,0x75,0x302, 0xFC,0x75,0x308, 0xFD,0x79,0x301, 0xFF,0x79,0x308, 0x100,0x41,0x304,
    0x101,0x61,0x304, 0x102,0x41,0x306, 0x103,0x61,0x306, 0x104,0x41,0x328, 0x105,0x61,0x328, 0x106,0x43,0x301,
    0x107,0x63,0x301, 0x108,0x43,0x302, 0x109,0x63,0x302, 0x10A,0x43,0x307, 0x10B,0x63,0x307, 0x10C,0x43,0x30C,
    0x10D,0x63,0x30C, 0x10E,0x44,0x30C, 0x10F,0x64,0x30C, 0x112,0x45,0x304, 0x113,0x65,0x304, 0x114,0x45,0x306,
    0x115,0x65,0x306, 0x116,0x45,0x307, 0x117,0x65,0x307, 0x118,0x45,0x328, 0x119,0x65,0x328, 0x11A,0x45,0x30C,
    0x11B,0x65,0x30C, 0x11C,0x47,0x302, 0x11D,0x67,0x302, 0x11E,0x47,0x306, 0x11F,0x67,0x306, 0x120,0x47,0x307,
    0x121,0x67,0x307, 0x122,0x47,0x327, 0x123,0x67,0x327, 0x124,0x48,0x302, 0x125,0x68,0x302, 0x128,0x49,0x303,
    0x129,0x69,0x303, 0x12A,0x49,0x304, 0x12B,0x69,0x304, 0x12C,0x49,0x306, 0x12D,0x69,0x306, 0x12E,0x49,0x328,
    0x12F,0x69,0x328, 0x130,0x49,0x307, 0x134,0x4A,0x302, 0x135,0x6A,0x302, 0x136,0x4B,0x327, 0x137,0x6B,0x327,
    0x139,0x4C,0x301, 0x13A,0x6C,0x301, 0x13B,0x4C,0x327, 0x13C,0x6C,0x327, 0x13D,0x4C,0x30C, 0x13E,0x6C,0x30C,
    0x143,0x4E,0x301, 0x144,0x6E,0x301, 0x145,0x4E,0x327, 0x146,0x6E,0x327, 0x147,0x4E,0x30C, 0x148,0x6E,0x30C,
    0x14C,0x4F,0x304, 0x14D,0x6F,0x304, 0x14E,0x4F,0x306, 0x14F,0x6F,0x306, 0x150,0x4F,0x30B, 0x151,0x6F,0x30B,
    0x154,0x52,0x301, 0x155,0x72,0x301, 0x156,0x52,0x327, 0x157,0x72,0x327, 0x158,0x52,0x30C, 0x159,0x72,0x30C,
    0x15A,0x53,0x301, 0x15B,0x73,0x301, 0x15C,0x53,0x302, 0x15D,0x73,0x302, 0x15E,0x53,0x327, 0x15F,0x73,0x327,
    0x160,0x53,0x30C, 0x161,0x73,0x30C, 0x162,0x54,0x327, 0x163,0x74,0x327, 0x164,0x54,0x30C, 0x165,0x74,0x30C,
    0x168,0x55,0x303, 0x169,0x75,0x303, 0x16A,0x55,0x304, 0x16B,0x75,0x304, 0x16C,0x55,0x306, 0x16D,0x75,0x306,
    0x16E,0x55,0x30A, 0x16F,0x75,0x30A, 0x170,0x55,0x30B, 0x171,0x75,0x30B, 0x172,0x55,0x328, 0x173,0x75,0x328,
    0x174,0x57,0x302, 0x175,0x77,0x302, 0x176,0x59,0x302, 0x177,0x79,0x302, 0x178,0x59,0x308, 0x179,0x5A,0x301,
    0x17A,0x7A,0x301, 0x17B,0x5A,0x307, 0x17C,0x7A,0x307, 0x17D,0x5A,0x30C, 0x17E,0x7A,0x30C, 0x1A0,0x4F,0x31B,
    0x1A1,0x6F,0x31B, 0x1AF,0x55,0x31B, 0x1B0,0x75,0x31B, 0x1CD,0x41,0x30C, 0x1CE,0x61,0x30C, 0x1CF,0x49,0x30C,
    0x1D0,0x69,0x30C, 0x1D1,0x4F,0x30C, 0x1D2,0x6F,0x30C, 0x1D3,0x55,0x30C, 0x1D4,0x75,0x30C, 0x1D5,0xDC,0x304,
    0x1D6,0xFC,0x304, 0x1D7,0xDC,0x301, 0x1D8,0xFC,0x301, 0x1D9,0xDC,0x30C, 0x1DA,0xFC,0x30C, 0x1DB,0xDC,0x300,
    0x1DC,0xFC,0x300, 0x1DE,0xC4,0x304, 0x1DF,0xE4,0x304, 0x1E0,0x226,0x304, 0x1E1,0x227,0x304, 0x1E2,0xC6,0x304,
    0x1E3,0xE6,0x304, 0x1E6,0x47,0x30C, 0x1E7,0x67,0x30C, 0x1E8,0x4B,0x30C, 0x1E9,0x6B,0x30C, 0x1EA,0x4F,0x328,
    0x1EB,0x6F,0x328, 0x1EC,0x1EA,0x304, 0x1ED,0x1EB,0x304, 0x1EE,0x1B7,0x30C, 0x1EF,0x292,0x30C, 0x1F0,0x6A,0x30C,
    0x1F4,0x47,0x301, 0x1F5,0x67,0x301, 0x1F8,0x4E,0x300, 0x1F9,0x6E,0x300, 0x1FA,0xC5,0x301, 0x1FB,0xE5,0x301,
    0x1FC,0xC6,0x301, 0x1FD,0xE6,0x301, 0x1FE,0xD8,0x301, 0x1FF,0xF8,0x301, 0x200,0x41,0x30F, 0x201,0x61,0x30F,
    0x202,0x41,0x311, 0x203,0x61,0x311, 0x204,0x45,0x30F, 0x205,0x65,0x30F, 0x206,0x45,0x311, 0x207,0x65,0x311,
    0x208,0x49,0x30F, 0x209,0x69,0x30F, 0x20A,0x49,0x311, 0x20B,0x69,0x311, 0x20C,0x4F,0x30F, 0x20D,0x6F,0x30F,
    0x20E,0x4F,0x311, 0x20F,0x6F,0x311, 0x210,0x52,0x30F, 0x211,0x72,0x30F, 0x212,0x52,0x311, 0x213,0x72,0x311,
    0x214,0x55,0x30F, 0x215,0x75,0x30F, 0x216,0x55,0x311, 0x217,0x75,0x311, 0x218,0x53,0x326, 0x219,0x73,0x326,
    0x21A,0x54,0x326, 0x21B,0x74,0x326, 0x21E,0x48,0x30C, 0x21F,0x68,0x30C, 0x226,0x41,0x307, 0x227,0x61,0x307,
    0x228,0x45,0x327, 0x229,0x65,0x327, 0x22A,0xD6,0x304, 0x22B,0xF6,0x304, 0x22C,0xD5,0x304, 0x22D,0xF5,0x304,
    0x22E,0x4F,0x307, 0x22F,0x6F,0x307, 0x230,0x22E,0x304, 0x231,0x22F,0x304, 0x232,0x59,0x304, 0x233,0x79,0x304,
    0x340,0x300,0x0, 0x341,0x301,0x0, 0x343,0x313,0x0, 0x344,0x308,0x301, 0x374,0x2B9,0x0, 0x37E,0x3B,0x0,
    0x385,0xA8,0x301, 0x386,0x391,0x301, 0x387,0xB7,0x0, 0x388,0x395,0x301, 0x389,0x397,0x301, 0x38A,0x399,0x301,
    0x38C,0x39F,0x301, 0x38E,0x3A5,0x301, 0x38F,0x3A9,0x301, 0x390,0x3CA,0x301, 0x3AA,0x399,0x308, 0x3AB,0x3A5,0x308,
    0x3AC,0x3B1,0x301, 0x3AD,0x3B5,0x301, 0x3AE,0x3B7,0x301, 0x3AF,0x3B9,0x301, 0x3B0,0x3CB,0x301, 0x3CA,0x3B9,0x308,
    0x3CB,0x3C5,0x308, 0x3CC,0x3BF,0x301, 0x3CD,0x3C5,0x301, 0x3CE,0x3C9,0x301, 0x3D3,0x3D2,0x301, 0x3D4,0x3D2,0x308,
    0x400,0x415,0x300, 0x401,0x415,0x308, 0x403,0x413,0x301, 0x407,0x406,0x308, 0x40C,0x41A,0x301, 0x40D,0x418,0x300,
    0x40E,0x423,0x306, 0x419,0x418,0x306, 0x439,0x438,0x306, 0x450,0x435,0x300, 0x451,0x435,0x308, 0x453,0x433,0x301,
    0x457,0x456,0x308, 0x45C,0x43A,0x301, 0x45D,0x438,0x300, 0x45E,0x443,0x306, 0x476,0x474,0x30F, 0x477,0x475,0x30F,
    0x4C1,0x416,0x306, 0x4C2,0x436,0x306, 0x4D0,0x410,0x306, 0x4D1,0x430,0x306, 0x4D2,0x410,0x308, 0x4D3,0x430,0x308,
    0x4D6,0x415,0x306, 0x4D7,0x435,0x306, 0x4DA,0x4D8,0x308, 0x4DB,0x4D9,0x308, 0x4DC,0x416,0x308, 0x4DD,0x436,0x308,
    0x4DE,0x417,0x308, 0x4DF,0x437,0x308, 0x4E2,0x418,0x304, 0x4E3,0x438,0x304, 0x4E4,0x418,0x308, 0x4E5,0x438,0x308,
    0x4E6,0x41E,0x308, 0x4E7,0x43E,0x308, 0x4EA,0x4E8,0x308, 0x4EB,0x4E9,0x308, 0x4EC,0x42D,0x308, 0x4ED,0x44D,0x308,
    0x4EE,0x423,0x304, 0x4EF,0x443,0x304, 0x4F0,0x423,0x308, 0x4F1,0x443,0x308, 0x4F2,0x423,0x30B, 0x4F3,0x443,0x30B,
    0x4F4,0x427,0x308, 0x4F5,0x447,0x308, 0x4F8,0x42B,0x308, 0x4F9,0x44B,0x308, 0x622,0x627,0x653, 0x623,0x627,0x654,
    0x624,0x648,0x654, 0x625,0x627,0x655, 0x626,0x64A,0x654, 0x6C0,0x6D5,0x654, 0x6C2,0x6C1,0x654, 0x6D3,0x6D2,0x654,
    0x929,0x928,0x93C, 0x931,0x930,0x93C, 0x934,0x933,0x93C, 0x958,0x915,0x93C, 0x959,0x916,0x93C, 0x95A,0x917,0x93C,
    0x95B,0x91C,0x93C, 0x95C,0x921,0x93C, 0x95D,0x922,0x93C, 0x95E,0x92B,0x93C, 0x95F,0x92F,0x93C, 0x9CB,0x9C7,0x9BE,
    0x9CC,0x9C7,0x9D7, 0x9DC,0x9A1,0x9BC, 0x9DD,0x9A2,0x9BC, 0x9DF,0x9AF,0x9BC, 0xA33,0xA32,0xA3C, 0xA36,0xA38,0xA3C,
    0xA59,0xA16,0xA3C, 0xA5A,0xA17,0xA3C, 0xA5B,0xA1C,0xA3C, 0xA5E,0xA2B,0xA3C, 0xB48,0xB47,0xB56, 0xB4B,0xB47,0xB3E,
    0xB4C,0xB47,0xB57, 0xB5C,0xB21,0xB3C, 0xB5D,0xB22,0xB3C, 0xB94,0xB92,0xBD7, 0xBCA,0xBC6,0xBBE, 0xBCB,0xBC7,0xBBE,
    0xBCC,0xBC6,0xBD7, 0xC48,0xC46,0xC56, 0xCC0,0xCBF,0xCD5, 0xCC7,0xCC6,0xCD5, 0xCC8,0xCC6,0xCD6, 0xCCA,0xCC6,0xCC2,
    0xCCB,0xCCA,0xCD5, 0xD4A,0xD46,0xD3E, 0xD4B,0xD47,0xD3E, 0xD4C,0xD46,0xD57, 0xDDA,0xDD9,0xDCA, 0xDDC,0xDD9,0xDCF,
    0xDDD,0xDDC,0xDCA, 0xDDE,0xDD9,0xDDF, 0xF43,0xF42,0xFB7, 0xF4D,0xF4C,0xFB7, 0xF52,0xF51,0xFB7, 0xF57,0xF56,0xFB7,
    0xF5C,0xF5B,0xFB7, 0xF69,0xF40,0xFB5, 0xF73,0xF71,0xF72, 0xF75,0xF71,0xF74, 0xF76,0xFB2,0xF80, 0xF78,0xFB3,0xF80,
    0xF81,0xF71,0xF80, 0xF93,0xF92,0xFB7, 0xF9D,0xF9C,0xFB7, 0xFA2,0xFA1,0xFB7, 0xFA7,0xFA6,0xFB7, 0xFAC,0xFAB,0xFB7,
    0xFB9,0xF90,0xFB5, 0x1026,0x1025,0x102E, 0x1B06,0x1B05,0x1B35, 0x1B08,0x1B07,0x1B35, 0x1B0A,0x1B09,0x1B35, 0x1B0C,0x1B0B,0x1B35,
    0x1B0E,0x1B0D,0x1B35, 0x1B12,0x1B11,0x1B35, 0x1B3B,0x1B3A,0x1B35, 0x1B3D,0x1B3C,0x1B35, 0x1B40,0x1B3E,0x1B35, 0x1B41,0x1B3F,0x1B35,
    0x1B43,0x1B42,0x1B35, 0x1E00,0x41,0x325, 0x1E01,0x61,0x325, 0x1E02,0x42,0x307, 0x1E03,0x62,0x307, 0x1E04,0x42,0x323,
    0x1E05,0x62,0x323, 0x1E06,0x42,0x331, 0x1E07,0x62,0x331, 0x1E08,0xC7,0x301, 0x1E09,0xE7,0x301, 0x1E0A,0x44,0x307,
    0x1E0B,0x64,0x307, 0x1E0C,0x44,0x323, 0x1E0D,0x64,0x323, 0x1E0E,0x44,0x331, 0x1E0F,0x64,0x331, 0x1E10,0x44,0x327,
    0x1E11,0x64,0x327, 0x1E12,0x44,0x32D, 0x1E13,0x64,0x32D, 0x1E14,0x112,0x300, 0x1E15,0x113,0x300, 0x1E16,0x112,0x301,
    0x1E17,0x113,0x301, 0x1E18,0x45,0x32D, 0x1E19,0x65,0x32D, 0x1E1A,0x45,0x330, 0x1E1B,0x65,0x330, 0x1E1C,0x228,0x306,
    0x1E1D,0x229,0x306, 0x1E1E,0x46,0x307, 0x1E1F,0x66,0x307, 0x1E20,0x47,0x304, 0x1E21,0x67,0x304, 0x1E22,0x48,0x307,
    0x1E23,0x68,0x307, 0x1E24,0x48,0x323, 0x1E25,0x68,0x323, 0x1E26,0x48,0x308, 0x1E27,0x68,0x308, 0x1E28,0x48,0x327,
    0x1E29,0x68,0x327, 0x1E2A,0x48,0x32E, 0x1E2B,0x68,0x32E, 0x1E2C,0x49,0x330, 0x1E2D,0x69,0x330, 0x1E2E,0xCF,0x301,
    0x1E2F,0xEF,0x301, 0x1E30,0x4B,0x301, 0x1E31,0x6B,0x301, 0x1E32,0x4B,0x323, 0x1E33,0x6B,0x323, 0x1E34,0x4B,0x331,
    0x1E35,0x6B,0x331, 0x1E36,0x4C,0x323, 0x1E37,0x6C,0x323, 0x1E38,0x1E36,0x304, 0x1E39,0x1E37,0x304, 0x1E3A,0x4C,0x331,
    0x1E3B,0x6C,0x331, 0x1E3C,0x4C,0x32D, 0x1E3D,0x6C,0x32D, 0x1E3E,0x4D,0x301, 0x1E3F,0x6D,0x301, 0x1E40,0x4D,0x307,
    0x1E41,0x6D,0x307, 0x1E42,0x4D,0x323, 0x1E43,0x6D,0x323, 0x1E44,0x4E,0x307, 0x1E45,0x6E,0x307, 0x1E46,0x4E,0x323,
    0x1E47,0x6E,0x323, 0x1E48,0x4E,0x331, 0x1E49,0x6E,0x331, 0x1E4A,0x4E,0x32D, 0x1E4B,0x6E,0x32D, 0x1E4C,0xD5,0x301,
    0x1E4D,0xF5,0x301, 0x1E4E,0xD5,0x308, 0x1E4F,0xF5,0x308, 0x1E50,0x14C,0x300, 0x1E51,0x14D,0x300, 0x1E52,0x14C,0x301,
    0x1E53,0x14D,0x301, 0x1E54,0x50,0x301, 0x1E55,0x70,0x301, 0x1E56,0x50,0x307, 0x1E57,0x70,0x307, 0x1E58,0x52,0x307,
    0x1E59,0x72,0x307, 0x1E5A,0x52,0x323, 0x1E5B,0x72,0x323, 0x1E5C,0x1E5A,0x304, 0x1E5D,0x1E5B,0x304, 0x1E5E,0x52,0x331,
    0x1E5F,0x72,0x331, 0x1E60,0x53,0x307, 0x1E61,0x73,0x307, 0x1E62,0x53,0x323, 0x1E63,0x73,0x323, 0x1E64,0x15A,0x307,
    0x1E65,0x15B,0x307, 0x1E66,0x160,0x307, 0x1E67,0x161,0x307, 0x1E68,0x1E62,0x307, 0x1E69,0x1E63,0x307, 0x1E6A,0x54,0x307,
    0x1E6B,0x74,0x307, 0x1E6C,0x54,0x323, 0x1E6D,0x74,0x323, 0x1E6E,0x54,0x331, 0x1E6F,0x74,0x331, 0x1E70,0x54,0x32D,
    0x1E71,0x74,0x32D, 0x1E72,0x55,0x324, 0x1E73,0x75,0x324, 0x1E74,0x55,0x330, 0x1E75,0x75,0x330, 0x1E76,0x55,0x32D,
    0x1E77,0x75,0x32D, 0x1E78,0x168,0x301, 0x1E79,0x169,0x301, 0x1E7A,0x16A,0x308, 0x1E7B,0x16B,0x308, 0x1E7C,0x56,0x303,
    0x1E7D,0x76,0x303, 0x1E7E,0x56,0x323, 0x1E7F,0x76,0x323, 0x1E80,0x57,0x300, 0x1E81,0x77,0x300, 0x1E82,0x57,0x301,
    0x1E83,0x77,0x301, 0x1E84,0x57,0x308, 0x1E85,0x77,0x308, 0x1E86,0x57,0x307, 0x1E87,0x77,0x307, 0x1E88,0x57,0x323,
    0x1E89,0x77,0x323, 0x1E8A,0x58,0x307, 0x1E8B,0x78,0x307, 0x1E8C,0x58,0x308, 0x1E8D,0x78,0x308, 0x1E8E,0x59,0x307,
    0x1E8F,0x79,0x307, 0x1E90,0x5A,0x302, 0x1E91,0x7A,0x302, 0x1E92,0x5A,0x323, 0x1E93,0x7A,0x323, 0x1E94,0x5A,0x331,
    0x1E95,0x7A,0x331, 0x1E96,0x68,0x331, 0x1E97,0x74,0x308, 0x1E98,0x77,0x30A, 0x1E99,0x79,0x30A, 0x1E9B,0x17F,0x307,
    0x1EA0,0x41,0x323, 0x1EA1,0x61,0x323, 0x1EA2,0x41,0x309, 0x1EA3,0x61,0x309, 0x1EA4,0xC2,0x301, 0x1EA5,0xE2,0x301,
    0x1EA6,0xC2,0x300, 0x1EA7,0xE2,0x300, 0x1EA8,0xC2,0x309, 0x1EA9,0xE2,0x309, 0x1EAA,0xC2,0x303, 0x1EAB,0xE2,0x303,
    0x1EAC,0x1EA0,0x302, 0x1EAD,0x1EA1,0x302, 0x1EAE,0x102,0x301, 0x1EAF,0x103,0x301, 0x1EB0,0x102,0x300, 0x1EB1,0x103,0x300,
    0x1EB2,0x102,0x309, 0x1EB3,0x103,0x309, 0x1EB4,0x102,0x303, 0x1EB5,0x103,0x303, 0x1EB6,0x1EA0,0x306, 0x1EB7,0x1EA1,0x306,
    0x1EB8,0x45,0x323, 0x1EB9,0x65,0x323, 0x1EBA,0x45,0x309, 0x1EBB,0x65,0x309, 0x1EBC,0x45,0x303, 0x1EBD,0x65,0x303,
    0x1EBE,0xCA,0x301, 0x1EBF,0xEA,0x301, 0x1EC0,0xCA,0x300, 0x1EC1,0xEA,0x300, 0x1EC2,0xCA,0x309, 0x1EC3,0xEA,0x309,
    0x1EC4,0xCA,0x303, 0x1EC5,0xEA,0x303, 0x1EC6,0x1EB8,0x302, 0x1EC7,0x1EB9,0x302, 0x1EC8,0x49,0x309, 0x1EC9,0x69,0x309,
    0x1ECA,0x49,0x323, 0x1ECB,0x69,0x323, 0x1ECC,0x4F,0x323, 0x1ECD,0x6F,0x323, 0x1ECE,0x4F,0x309, 0x1ECF,0x6F,0x309,
    0x1ED0,0xD4,0x301, 0x1ED1,0xF4,0x301, 0x1ED2,0xD4,0x300, 0x1ED3,0xF4,0x300, 0x1ED4,0xD4,0x309, 0x1ED5,0xF4,0x309,
    0x1ED6,0xD4,0x303, 0x1ED7,0xF4,0x303, 0x1ED8,0x1ECC,0x302, 0x1ED9,0x1ECD,0x302, 0x1EDA,0x1A0,0x301, 0x1EDB,0x1A1,0x301,
    0x1EDC,0x1A0,0x300, 0x1EDD,0x1A1,0x300, 0x1EDE,0x1A0,0x309, 0x1EDF,0x1A1,0x309, 0x1EE0,0x1A0,0x303, 0x1EE1,0x1A1,0x303,
    0x1EE2,0x1A0,0x323, 0x1EE3,0x1A1,0x323, 0x1EE4,0x55,0x323, 0x1EE5,0x75,0x323, 0x1EE6,0x55,0x309, 0x1EE7,0x75,0x309,
    0x1EE8,0x1AF,0x301, 0x1EE9,0x1B0,0x301, 0x1EEA,0x1AF,0x300, 0x1EEB,0x1B0,0x300, 0x1EEC,0x1AF,0x309, 0x1EED,0x1B0,0x309,
    0x1EEE,0x1AF,0x303, 0x1EEF,0x1B0,0x303, 0x1EF0,0x1AF,0x323, 0x1EF1,0x1B0,0x323, 0x1EF2,0x59,0x300, 0x1EF3,0x79,0x300,
    0x1EF4,0x59,0x323, 0x1EF5,0x79,0x323, 0x1EF6,0x59,0x309, 0x1EF7,0x79,0x309, 0x1EF8,0x59,0x303, 0x1EF9,0x79,0x303,
    0x1F00,0x3B1,0x313, 0x1F01,0x3B1,0x314, 0x1F02,0x1F00,0x300, 0x1F03,0x1F01,0x300, 0x1F04,0x1F00,0x301, 0x1F05,0x1F01,0x301,
    0x1F06,0x1F00,0x342, 0x1F07,0x1F01,0x342, 0x1F08,0x391,0x313, 0x1F09,0x391,0x314, 0x1F0A,0x1F08,0x300, 0x1F0B,0x1F09,0x300,
    0x1F0C,0x1F08,0x301, 0x1F0D,0x1F09,0x301, 0x1F0E,0x1F08,0x342, 0x1F0F,0x1F09,0x342, 0x1F10,0x3B5,0x313, 0x1F11,0x3B5,0x314,
    0x1F12,0x1F10,0x300, 0x1F13,0x1F11,0x300, 0x1F14,0x1F10,0x301, 0x1F15,0x1F11,0x301, 0x1F18,0x395,0x313, 0x1F19,0x395,0x314,
    0x1F1A,0x1F18,0x300, 0x1F1B,0x1F19,0x300, 0x1F1C,0x1F18,0x301, 0x1F1D,0x1F19,0x301, 0x1F20,0x3B7,0x313, 0x1F21,0x3B7,0x314,
    0x1F22,0x1F20,0x300, 0x1F23,0x1F21,0x300, 0x1F24,0x1F20,0x301, 0x1F25,0x1F21,0x301, 0x1F26,0x1F20,0x342, 0x1F27,0x1F21,0x342,
    0x1F28,0x397,0x313, 0x1F29,0x397,0x314, 0x1F2A,0x1F28,0x300, 0x1F2B,0x1F29,0x300, 0x1F2C,0x1F28,0x301, 0x1F2D,0x1F29,0x301,
    0x1F2E,0x1F28,0x342, 0x1F2F,0x1F29,0x342, 0x1F30,0x3B9,0x313, 0x1F31,0x3B9,0x314, 0x1F32,0x1F30,0x300, 0x1F33,0x1F31,0x300,
    0x1F34,0x1F30,0x301, 0x1F35,0x1F31,0x301, 0x1F36,0x1F30,0x342, 0x1F37,0x1F31,0x342, 0x1F38,0x399,0x313, 0x1F39,0x399,0x314,
    0x1F3A,0x1F38,0x300, 0x1F3B,0x1F39,0x300, 0x1F3C,0x1F38,0x301, 0x1F3D,0x1F39,0x301, 0x1F3E,0x1F38,0x342, 0x1F3F,0x1F39,0x342,
    0x1F40,0x3BF,0x313, 0x1F41,0x3BF,0x314, 0x1F42,0x1F40,0x300, 0x1F43,0x1F41,0x300, 0x1F44,0x1F40,0x301, 0x1F45,0x1F41,0x301,
    0x1F48,0x39F,0x313, 0x1F49,0x39F,0x314, 0x1F4A,0x1F48,0x300, 0x1F4B,0x1F49,0x300, 0x1F4C,0x1F48,0x301, 0x1F4D,0x1F49,0x301,
    0x1F50,0x3C5,0x313, 0x1F51,0x3C5,0x314, 0x1F52,0x1F50,0x300, 0x1F53,0x1F51,0x300, 0x1F54,0x1F50,0x301, 0x1F55,0x1F51,0x301,
    0x1F56,0x1F50,0x342, 0x1F57,0x1F51,0x342, 0x1F59,0x3A5,0x314, 0x1F5B,0x1F59,0x300, 0x1F5D,0x1F59,0x301, 0x1F5F,0x1F59,0x342,
    0x1F60,0x3C9,0x313, 0x1F61,0x3C9,0x314, 0x1F62,0x1F60,0x300, 0x1F63,0x1F61,0x300, 0x1F64,0x1F60,0x301, 0x1F65,0x1F61,0x301,
    0x1F66,0x1F60,0x342, 0x1F67,0x1F61,0x342, 0x1F68,0x3A9,0x313, 0x1F69,0x3A9,0x314, 0x1F6A,0x1F68,0x300, 0x1F6B,0x1F69,0x300,
    0x1F6C,0x1F68,0x301, 0x1F6D,0x1F69,0x301, 0x1F6E,0x1F68,0x342, 0x1F6F,0x1F69,0x342, 0x1F70,0x3B1,0x300, 0x1F71,0x3AC,0x0,
    0x1F72,0x3B5,0x300, 0x1F73,0x3AD,0x0, 0x1F74,0x3B7,0x300, 0x1F75,0x3AE,0x0, 0x1F76,0x3B9,0x300, 0x1F77,0x3AF,0x0,
    0x1F78,0x3BF,0x300, 0x1F79,0x3CC,0x0, 0x1F7A,0x3C5,0x300, 0x1F7B,0x3CD,0x0, 0x1F7C,0x3C9,0x300, 0x1F7D,0x3CE,0x0,
    0x1F80,0x1F00,0x345, 0x1F81,0x1F01,0x345, 0x1F82,0x1F02,0x345, 0x1F83,0x1F03,0x345, 0x1F84,0x1F04,0x345, 0x1F85,0x1F05,0x345,
    0x1F86,0x1F06,0x345, 0x1F87,0x1F07,0x345, 0x1F88,0x1F08,0x345, 0x1F89,0x1F09,0x345, 0x1F8A,0x1F0A,0x345, 0x1F8B,0x1F0B,0x345,
    0x1F8C,0x1F0C,0x345, 0x1F8D,0x1F0D,0x345, 0x1F8E,0x1F0E,0x345, 0x1F8F,0x1F0F,0x345, 0x1F90,0x1F20,0x345, 0x1F91,0x1F21,0x345,
    0x1F92,0x1F22,0x345, 0x1F93,0x1F23,0x345, 0x1F94,0x1F24,0x345, 0x1F95,0x1F25,0x345, 0x1F96,0x1F26,0x345, 0x1F97,0x1F27,0x345,
    0x1F98,0x1F28,0x345, 0x1F99,0x1F29,0x345, 0x1F9A,0x1F2A,0x345, 0x1F9B,0x1F2B,0x345, 0x1F9C,0x1F2C,0x345, 0x1F9D,0x1F2D,0x345,
    0x1F9E,0x1F2E,0x345, 0x1F9F,0x1F2F,0x345, 0x1FA0,0x1F60,0x345, 0x1FA1,0x1F61,0x345, 0x1FA2,0x1F62,0x345, 0x1FA3,0x1F63,0x345,
    0x1FA4,0x1F64,0x345, 0x1FA5,0x1F65,0x345, 0x1FA6,0x1F66,0x345, 0x1FA7,0x1F67,0x345, 0x1FA8,0x1F68,0x345, 0x1FA9,0x1F69,0x345,
    0x1FAA,0x1F6A,0x345, 0x1FAB,0x1F6B,0x345, 0x1FAC,0x1F6C,0x345, 0x1FAD,0x1F6D,0x345, 0x1FAE,0x1F6E,0x345, 0x1FAF,0x1F6F,0x345,
    0x1FB0,0x3B1,0x306, 0x1FB1,0x3B1,0x304, 0x1FB2,0x1F70,0x345, 0x1FB3,0x3B1,0x345, 0x1FB4,0x3AC,0x345, 0x1FB6,0x3B1,0x342,
    0x1FB7,0x1FB6,0x345, 0x1FB8,0x391,0x306, 0x1FB9,0x391,0x304, 0x1FBA,0x391,0x300, 0x1FBB,0x386,0x0, 0x1FBC,0x391,0x345,
    0x1FBE,0x3B9,0x0, 0x1FC1,0xA8,0x342, 0x1FC2,0x1F74,0x345, 0x1FC3,0x3B7,0x345, 0x1FC4,0x3AE,0x345, 0x1FC6,0x3B7,0x342,
    0x1FC7,0x1FC6,0x345, 0x1FC8,0x395,0x300, 0x1FC9,0x388,0x0, 0x1FCA,0x397,0x300, 0x1FCB,0x389,0x0, 0x1FCC,0x397,0x345,
    0x1FCD,0x1FBF,0x300, 0x1FCE,0x1FBF,0x301, 0x1FCF,0x1FBF,0x342, 0x1FD0,0x3B9,0x306, 0x1FD1,0x3B9,0x304, 0x1FD2,0x3CA,0x300,
    0x1FD3,0x390,0x0, 0x1FD6,0x3B9,0x342, 0x1FD7,0x3CA,0x342, 0x1FD8,0x399,0x306, 0x1FD9,0x399,0x304, 0x1FDA,0x399,0x300,
    0x1FDB,0x38A,0x0, 0x1FDD,0x1FFE,0x300, 0x1FDE,0x1FFE,0x301, 0x1FDF,0x1FFE,0x342, 0x1FE0,0x3C5,0x306, 0x1FE1,0x3C5,0x304,
    0x1FE2,0x3CB,0x300, 0x1FE3,0x3B0,0x0, 0x1FE4,0x3C1,0x313, 0x1FE5,0x3C1,0x314, 0x1FE6,0x3C5,0x342, 0x1FE7,0x3CB,0x342,
    0x1FE8,0x3A5,0x306, 0x1FE9,0x3A5,0x304, 0x1FEA,0x3A5,0x300, 0x1FEB,0x38E,0x0, 0x1FEC,0x3A1,0x314, 0x1FED,0xA8,0x300,
    0x1FEE,0x385,0x0, 0x1FEF,0x60,0x0, 0x1FF2,0x1F7C,0x345, 0x1FF3,0x3C9,0x345, 0x1FF4,0x3CE,0x345, 0x1FF6,0x3C9,0x342,
    0x1FF7,0x1FF6,0x345, 0x1FF8,0x39F,0x300, 0x1FF9,0x38C,0x0, 0x1FFA,0x3A9,0x300, 0x1FFB,0x38F,0x0, 0x1FFC,0x3A9,0x345,
    0x1FFD,0xB4,0x0, 0x2000,0x2002,0x0, 0x2001,0x2003,0x0, 0x2126,0x3A9,0x0, 0x212A,0x4B,0x0, 0x212B,0xC5,0x0,
    0x219A,0x2190,0x338, 0x219B,0x2192,0x338, 0x21AE,0x2194,0x338, 0x21CD,0x21D0,0x338, 0x21CE,0x21D4,0x338, 0x21CF,0x21D2,0x338,
    0x2204,0x2203,0x338, 0x2209,0x2208,0x338, 0x220C,0x220B,0x338, 0x2224,0x2223,0x338, 0x2226,0x2225,0x338, 0x2241,0x223C,0x338,
    0x2244,0x2243,0x338, 0x2247,0x2245,0x338, 0x2249,0x2248,0x338, 0x2260,0x3D,0x338, 0x2262,0x2261,0x338, 0x226D,0x224D,0x338,
    0x226E,0x3C,0x338, 0x226F,0x3E,0x338, 0x2270,0x2264,0x338, 0x2271,0x2265,0x338, 0x2274,0x2272,0x338, 0x2275,0x2273,0x338,
    0x2278,0x2276,0x338, 0x2279,0x2277,0x338, 0x2280,0x227A,0x338, 0x2281,0x227B,0x338, 0x2284,0x2282,0x338, 0x2285,0x2283,0x338,
    0x2288,0x2286,0x338, 0x2289,0x2287,0x338, 0x22AC,0x22A2,0x338, 0x22AD,0x22A8,0x338, 0x22AE,0x22A9,0x338, 0x22AF,0x22AB,0x338,
    0x22E0,0x227C,0x338, 0x22E1,0x227D,0x338, 0x22E2,0x2291,0x338, 0x22E3,0x2292,0x338, 0x22EA,0x22B2,0x338, 0x22EB,0x22B3,0x338,
    0x22EC,0x22B4,0x338, 0x22ED,0x22B5,0x338, 0x2329,0x3008,0x0, 0x232A,0x3009,0x0, 0x2ADC,0x2ADD,0x338, 0x304C,0x304B,0x3099,
    0x304E,0x304D,0x3099, 0x3050,0x304F,0x3099, 0x3052,0x3051,0x3099, 0x3054,0x3053,0x3099, 0x3056,0x3055,0x3099, 0x3058,0x3057,0x3099,
    0x305A,0x3059,0x3099, 0x305C,0x305B,0x3099, 0x305E,0x305D,0x3099, 0x3060,0x305F,0x3099, 0x3062,0x3061,0x3099, 0x3065,0x3064,0x3099,
    0x3067,0x3066,0x3099, 0x3069,0x3068,0x3099, 0x3070,0x306F,0x3099, 0x3071,0x306F,0x309A, 0x3073,0x3072,0x3099, 0x3074,0x3072,0x309A,
    0x3076,0x3075,0x3099, 0x3077,0x3075,0x309A, 0x3079,0x3078,0x3099, 0x307A,0x3078,0x309A, 0x307C,0x307B,0x3099, 0x307D,0x307B,0x309A,
    0x3094,0x3046,0x3099, 0x309E,0x309D,0x3099, 0x30AC,0x30AB,0x3099, 0x30AE,0x30AD,0x3099, 0x30B0,0x30AF,0x3099, 0x30B2,0x30B1,0x3099,
    0x30B4,0x30B3,0x3099, 0x30B6,0x30B5,0x3099, 0x30B8,0x30B7,0x3099, 0x30BA,0x30B9,0x3099, 0x30BC,0x30BB,0x3099, 0x30BE,0x30BD,0x3099,
    0x30C0,0x30BF,0x3099, 0x30C2,0x30C1,0x3099, 0x30C5,0x30C4,0x3099, 0x30C7,0x30C6,0x3099, 0x30C9,0x30C8,0x3099, 0x30D0,0x30CF,0x3099,
    0x30D1,0x30CF,0x309A, 0x30D3,0x30D2,0x3099, 0x30D4,0x30D2,0x309A, 0x30D6,0x30D5,0x3099, 0x30D7,0x30D5,0x309A, 0x30D9,0x30D8,0x3099,
    0x30DA,0x30D8,0x309A, 0x30DC,0x30DB,0x3099, 0x30DD,0x30DB,0x309A, 0x30F4,0x30A6,0x3099, 0x30F7,0x30EF,0x3099, 0x30F8,0x30F0,0x3099,
    0x30F9,0x30F1,0x3099, 0x30FA,0x30F2,0x3099, 0x30FE,0x30FD,0x3099, 0xF900,0x8C48,0x0, 0xF901,0x66F4,0x0, 0xF902,0x8ECA,0x0,
    0xF903,0x8CC8,0x0, 0xF904,0x6ED1,0x0, 0xF905,0x4E32,0x0, 0xF906,0x53E5,0x0, 0xF907,0x9F9C,0x0, 0xF908,0x9F9C,0x0,
    0xF909,0x5951,0x0, 0xF90A,0x91D1,0x0, 0xF90B,0x5587,0x0, 0xF90C,0x5948,0x0, 0xF90D,0x61F6,0x0, 0xF90E,0x7669,0x0,
    0xF90F,0x7F85,0x0, 0xF910,0x863F,0x0, 0xF911,0x87BA,0x0, 0xF912,0x88F8,0x0, 0xF913,0x908F,0x0, 0xF914,0x6A02,0x0,
    0xF915,0x6D1B,0x0, 0xF916,0x70D9,0x0, 0xF917,0x73DE,0x0, 0xF918,0x843D,0x0, 0xF919,0x916A,0x0, 0xF91A,0x99F1,0x0,
    0xF91B,0x4E82,0x0, 0xF91C,0x5375,0x0, 0xF91D,0x6B04,0x0, 0xF91E,0x721B,0x0, 0xF91F,0x862D,0x0, 0xF920,0x9E1E,0x0,
    0xF921,0x5D50,0x0, 0xF922,0x6FEB,0x0, 0xF923,0x85CD,0x0, 0xF924,0x8964,0x0, 0xF925,0x62C9,0x0, 0xF926,0x81D8,0x0,
    0xF927,0x881F,0x0, 0xF928,0x5ECA,0x0, 0xF929,0x6717,0x0, 0xF92A,0x6D6A,0x0, 0xF92B,0x72FC,0x0, 0xF92C,0x90CE,0x0,
    0xF92D,0x4F86,0x0, 0xF92E,0x51B7,0x0, 0xF92F,0x52DE,0x0, 0xF930,0x64C4,0x0, 0xF931,0x6AD3,0x0, 0xF932,0x7210,0x0,
    0xF933,0x76E7,0x0, 0xF934,0x8001,0x0, 0xF935,0x8606,0x0, 0xF936,0x865C,0x0, 0xF937,0x8DEF,0x0, 0xF938,0x9732,0x0,
    0xF939,0x9B6F,0x0, 0xF93A,0x9DFA,0x0, 0xF93B,0x788C,0x0, 0xF93C,0x797F,0x0, 0xF93D,0x7DA0,0x0, 0xF93E,0x83C9,0x0,
    0xF93F,0x9304,0x0, 0xF940,0x9E7F,0x0, 0xF941,0x8AD6,0x0, 0xF942,0x58DF,0x0, 0xF943,0x5F04,0x0, 0xF944,0x7C60,0x0,
    0xF945,0x807E,0x0, 0xF946,0x7262,0x0, 0xF947,0x78CA,0x0, 0xF948,0x8CC2,0x0, 0xF949,0x96F7,0x0, 0xF94A,0x58D8,0x0,
    0xF94B,0x5C62,0x0, 0xF94C,0x6A13,0x0, 0xF94D,0x6DDA,0x0, 0xF94E,0x6F0F,0x0, 0xF94F,0x7D2F,0x0, 0xF950,0x7E37,0x0,
    0xF951,0x964B,0x0, 0xF952,0x52D2,0x0, 0xF953,0x808B,0x0, 0xF954,0x51DC,0x0, 0xF955,0x51CC,0x0, 0xF956,0x7A1C,0x0,
    0xF957,0x7DBE,0x0, 0xF958,0x83F1,0x0, 0xF959,0x9675,0x0, 0xF95A,0x8B80,0x0, 0xF95B,0x62CF,0x0, 0xF95C,0x6A02,0x0,
    0xF95D,0x8AFE,0x0, 0xF95E,0x4E39,0x0, 0xF95F,0x5BE7,0x0, 0xF960,0x6012,0x0, 0xF961,0x7387,0x0, 0xF962,0x7570,0x0,
    0xF963,0x5317,0x0, 0xF964,0x78FB,0x0, 0xF965,0x4FBF,0x0, 0xF966,0x5FA9,0x0, 0xF967,0x4E0D,0x0, 0xF968,0x6CCC,0x0,
    0xF969,0x6578,0x0, 0xF96A,0x7D22,0x0, 0xF96B,0x53C3,0x0, 0xF96C,0x585E,0x0, 0xF96D,0x7701,0x0, 0xF96E,0x8449,0x0,
    0xF96F,0x8AAA,0x0, 0xF970,0x6BBA,0x0, 0xF971,0x8FB0,0x0, 0xF972,0x6C88,0x0, 0xF973,0x62FE,0x0, 0xF974,0x82E5,0x0,
    0xF975,0x63A0,0x0, 0xF976,0x7565,0x0, 0xF977,0x4EAE,0x0, 0xF978,0x5169,0x0, 0xF979,0x51C9,0x0, 0xF97A,0x6881,0x0,
    0xF97B,0x7CE7,0x0, 0xF97C,0x826F,0x0, 0xF97D,0x8AD2,0x0, 0xF97E,0x91CF,0x0, 0xF97F,0x52F5,0x0, 0xF980,0x5442,0x0,
    0xF981,0x5973,0x0, 0xF982,0x5EEC,0x0, 0xF983,0x65C5,0x0, 0xF984,0x6FFE,0x0, 0xF985,0x792A,0x0, 0xF986,0x95AD,0x0,
    0xF987,0x9A6A,0x0, 0xF988,0x9E97,0x0, 0xF989,0x9ECE,0x0, 0xF98A,0x529B,0x0, 0xF98B,0x66C6,0x0, 0xF98C,0x6B77,0x0,
    0xF98D,0x8F62,0x0, 0xF98E,0x5E74,0x0, 0xF98F,0x6190,0x0, 0xF990,0x6200,0x0, 0xF991,0x649A,0x0, 0xF992,0x6F23,0x0,
    0xF993,0x7149,0x0, 0xF994,0x7489,0x0, 0xF995,0x79CA,0x0, 0xF996,0x7DF4,0x0, 0xF997,0x806F,0x0, 0xF998,0x8F26,0x0,
    0xF999,0x84EE,0x0, 0xF99A,0x9023,0x0, 0xF99B,0x934A,0x0, 0xF99C,0x5217,0x0, 0xF99D,0x52A3,0x0, 0xF99E,0x54BD,0x0,
    0xF99F,0x70C8,0x0, 0xF9A0,0x88C2,0x0, 0xF9A1,0x8AAA,0x0, 0xF9A2,0x5EC9,0x0, 0xF9A3,0x5FF5,0x0, 0xF9A4,0x637B,0x0,
    0xF9A5,0x6BAE,0x0, 0xF9A6,0x7C3E,0x0, 0xF9A7,0x7375,0x0, 0xF9A8,0x4EE4,0x0, 0xF9A9,0x56F9,0x0, 0xF9AA,0x5BE7,0x0,
    0xF9AB,0x5DBA,0x0, 0xF9AC,0x601C,0x0, 0xF9AD,0x73B2,0x0, 0xF9AE,0x7469,0x0, 0xF9AF,0x7F9A,0x0, 0xF9B0,0x8046,0x0,
    0xF9B1,0x9234,0x0, 0xF9B2,0x96F6,0x0, 0xF9B3,0x9748,0x0, 0xF9B4,0x9818,0x0, 0xF9B5,0x4F8B,0x0, 0xF9B6,0x79AE,0x0,
    0xF9B7,0x91B4,0x0, 0xF9B8,0x96B8,0x0, 0xF9B9,0x60E1,0x0, 0xF9BA,0x4E86,0x0, 0xF9BB,0x50DA,0x0, 0xF9BC,0x5BEE,0x0,
    0xF9BD,0x5C3F,0x0, 0xF9BE,0x6599,0x0, 0xF9BF,0x6A02,0x0, 0xF9C0,0x71CE,0x0, 0xF9C1,0x7642,0x0, 0xF9C2,0x84FC,0x0,
    0xF9C3,0x907C,0x0, 0xF9C4,0x9F8D,0x0, 0xF9C5,0x6688,0x0, 0xF9C6,0x962E,0x0, 0xF9C7,0x5289,0x0, 0xF9C8,0x677B,0x0,
    0xF9C9,0x67F3,0x0, 0xF9CA,0x6D41,0x0, 0xF9CB,0x6E9C,0x0, 0xF9CC,0x7409,0x0, 0xF9CD,0x7559,0x0, 0xF9CE,0x786B,0x0,
    0xF9CF,0x7D10,0x0, 0xF9D0,0x985E,0x0, 0xF9D1,0x516D,0x0, 0xF9D2,0x622E,0x0, 0xF9D3,0x9678,0x0, 0xF9D4,0x502B,0x0,
    0xF9D5,0x5D19,0x0, 0xF9D6,0x6DEA,0x0, 0xF9D7,0x8F2A,0x0, 0xF9D8,0x5F8B,0x0, 0xF9D9,0x6144,0x0, 0xF9DA,0x6817,0x0,
    0xF9DB,0x7387,0x0, 0xF9DC,0x9686,0x0, 0xF9DD,0x5229,0x0, 0xF9DE,0x540F,0x0, 0xF9DF,0x5C65,0x0, 0xF9E0,0x6613,0x0,
    0xF9E1,0x674E,0x0, 0xF9E2,0x68A8,0x0, 0xF9E3,0x6CE5,0x0, 0xF9E4,0x7406,0x0, 0xF9E5,0x75E2,0x0, 0xF9E6,0x7F79,0x0,
    0xF9E7,0x88CF,0x0, 0xF9E8,0x88E1,0x0, 0xF9E9,0x91CC,0x0, 0xF9EA,0x96E2,0x0, 0xF9EB,0x533F,0x0, 0xF9EC,0x6EBA,0x0,
    0xF9ED,0x541D,0x0, 0xF9EE,0x71D0,0x0, 0xF9EF,0x7498,0x0, 0xF9F0,0x85FA,0x0, 0xF9F1,0x96A3,0x0, 0xF9F2,0x9C57,0x0,
    0xF9F3,0x9E9F,0x0, 0xF9F4,0x6797,0x0, 0xF9F5,0x6DCB,0x0, 0xF9F6,0x81E8,0x0, 0xF9F7,0x7ACB,0x0, 0xF9F8,0x7B20,0x0,
    0xF9F9,0x7C92,0x0, 0xF9FA,0x72C0,0x0, 0xF9FB,0x7099,0x0, 0xF9FC,0x8B58,0x0, 0xF9FD,0x4EC0,0x0, 0xF9FE,0x8336,0x0,
    0xF9FF,0x523A,0x0, 0xFA00,0x5207,0x0, 0xFA01,0x5EA6,0x0, 0xFA02,0x62D3,0x0, 0xFA03,0x7CD6,0x0, 0xFA04,0x5B85,0x0,
    0xFA05,0x6D1E,0x0, 0xFA06,0x66B4,0x0, 0xFA07,0x8F3B,0x0, 0xFA08,0x884C,0x0, 0xFA09,0x964D,0x0, 0xFA0A,0x898B,0x0,
    0xFA0B,0x5ED3,0x0, 0xFA0C,0x5140,0x0, 0xFA0D,0x55C0,0x0, 0xFA10,0x585A,0x0, 0xFA12,0x6674,0x0, 0xFA15,0x51DE,0x0,
    0xFA16,0x732A,0x0, 0xFA17,0x76CA,0x0, 0xFA18,0x793C,0x0, 0xFA19,0x795E,0x0, 0xFA1A,0x7965,0x0, 0xFA1B,0x798F,0x0,
    0xFA1C,0x9756,0x0, 0xFA1D,0x7CBE,0x0, 0xFA1E,0x7FBD,0x0, 0xFA20,0x8612,0x0, 0xFA22,0x8AF8,0x0, 0xFA25,0x9038,0x0,
    0xFA26,0x90FD,0x0, 0xFA2A,0x98EF,0x0, 0xFA2B,0x98FC,0x0, 0xFA2C,0x9928,0x0, 0xFA2D,0x9DB4,0x0, 0xFA2E,0x90DE,0x0,
    0xFA2F,0x96B7,0x0, 0xFA30,0x4FAE,0x0, 0xFA31,0x50E7,0x0, 0xFA32,0x514D,0x0, 0xFA33,0x52C9,0x0, 0xFA34,0x52E4,0x0,
    0xFA35,0x5351,0x0, 0xFA36,0x559D,0x0, 0xFA37,0x5606,0x0, 0xFA38,0x5668,0x0, 0xFA39,0x5840,0x0, 0xFA3A,0x58A8,0x0,
    0xFA3B,0x5C64,0x0, 0xFA3C,0x5C6E,0x0, 0xFA3D,0x6094,0x0, 0xFA3E,0x6168,0x0, 0xFA3F,0x618E,0x0, 0xFA40,0x61F2,0x0,
    0xFA41,0x654F,0x0, 0xFA42,0x65E2,0x0, 0xFA43,0x6691,0x0, 0xFA44,0x6885,0x0, 0xFA45,0x6D77,0x0, 0xFA46,0x6E1A,0x0,
    0xFA47,0x6F22,0x0, 0xFA48,0x716E,0x0, 0xFA49,0x722B,0x0, 0xFA4A,0x7422,0x0, 0xFA4B,0x7891,0x0, 0xFA4C,0x793E,0x0,
    0xFA4D,0x7949,0x0, 0xFA4E,0x7948,0x0, 0xFA4F,0x7950,0x0, 0xFA50,0x7956,0x0, 0xFA51,0x795D,0x0, 0xFA52,0x798D,0x0,
    0xFA53,0x798E,0x0, 0xFA54,0x7A40,0x0, 0xFA55,0x7A81,0x0, 0xFA56,0x7BC0,0x0, 0xFA57,0x7DF4,0x0, 0xFA58,0x7E09,0x0,
    0xFA59,0x7E41,0x0, 0xFA5A,0x7F72,0x0, 0xFA5B,0x8005,0x0, 0xFA5C,0x81ED,0x0, 0xFA5D,0x8279,0x0, 0xFA5E,0x8279,0x0,
    0xFA5F,0x8457,0x0, 0xFA60,0x8910,0x0, 0xFA61,0x8996,0x0, 0xFA62,0x8B01,0x0, 0xFA63,0x8B39,0x0, 0xFA64,0x8CD3,0x0,
    0xFA65,0x8D08,0x0, 0xFA66,0x8FB6,0x0, 0xFA67,0x9038,0x0, 0xFA68,0x96E3,0x0, 0xFA69,0x97FF,0x0, 0xFA6A,0x983B,0x0,
    0xFA6B,0x6075,0x0, 0xFA6C,0x242EE,0x0, 0xFA6D,0x8218,0x0, 0xFA70,0x4E26,0x0, 0xFA71,0x51B5,0x0, 0xFA72,0x5168,0x0,
    0xFA73,0x4F80,0x0, 0xFA74,0x5145,0x0, 0xFA75,0x5180,0x0, 0xFA76,0x52C7,0x0, 0xFA77,0x52FA,0x0, 0xFA78,0x559D,0x0,
    0xFA79,0x5555,0x0, 0xFA7A,0x5599,0x0, 0xFA7B,0x55E2,0x0, 0xFA7C,0x585A,0x0, 0xFA7D,0x58B3,0x0, 0xFA7E,0x5944,0x0,
    0xFA7F,0x5954,0x0, 0xFA80,0x5A62,0x0, 0xFA81,0x5B28,0x0, 0xFA82,0x5ED2,0x0, 0xFA83,0x5ED9,0x0, 0xFA84,0x5F69,0x0,
    0xFA85,0x5FAD,0x0, 0xFA86,0x60D8,0x0, 0xFA87,0x614E,0x0, 0xFA88,0x6108,0x0, 0xFA89,0x618E,0x0, 0xFA8A,0x6160,0x0,
    0xFA8B,0x61F2,0x0, 0xFA8C,0x6234,0x0, 0xFA8D,0x63C4,0x0, 0xFA8E,0x641C,0x0, 0xFA8F,0x6452,0x0, 0xFA90,0x6556,0x0,
    0xFA91,0x6674,0x0, 0xFA92,0x6717,0x0, 0xFA93,0x671B,0x0, 0xFA94,0x6756,0x0, 0xFA95,0x6B79,0x0, 0xFA96,0x6BBA,0x0,
    0xFA97,0x6D41,0x0, 0xFA98,0x6EDB,0x0, 0xFA99,0x6ECB,0x0, 0xFA9A,0x6F22,0x0, 0xFA9B,0x701E,0x0, 0xFA9C,0x716E,0x0,
    0xFA9D,0x77A7,0x0, 0xFA9E,0x7235,0x0, 0xFA9F,0x72AF,0x0, 0xFAA0,0x732A,0x0, 0xFAA1,0x7471,0x0, 0xFAA2,0x7506,0x0,
    0xFAA3,0x753B,0x0, 0xFAA4,0x761D,0x0, 0xFAA5,0x761F,0x0, 0xFAA6,0x76CA,0x0, 0xFAA7,0x76DB,0x0, 0xFAA8,0x76F4,0x0,
    0xFAA9,0x774A,0x0, 0xFAAA,0x7740,0x0, 0xFAAB,0x78CC,0x0, 0xFAAC,0x7AB1,0x0, 0xFAAD,0x7BC0,0x0, 0xFAAE,0x7C7B,0x0,
    0xFAAF,0x7D5B,0x0, 0xFAB0,0x7DF4,0x0, 0xFAB1,0x7F3E,0x0, 0xFAB2,0x8005,0x0, 0xFAB3,0x8352,0x0, 0xFAB4,0x83EF,0x0,
    0xFAB5,0x8779,0x0, 0xFAB6,0x8941,0x0, 0xFAB7,0x8986,0x0, 0xFAB8,0x8996,0x0, 0xFAB9,0x8ABF,0x0, 0xFABA,0x8AF8,0x0,
    0xFABB,0x8ACB,0x0, 0xFABC,0x8B01,0x0, 0xFABD,0x8AFE,0x0, 0xFABE,0x8AED,0x0, 0xFABF,0x8B39,0x0, 0xFAC0,0x8B8A,0x0,
    0xFAC1,0x8D08,0x0, 0xFAC2,0x8F38,0x0, 0xFAC3,0x9072,0x0, 0xFAC4,0x9199,0x0, 0xFAC5,0x9276,0x0, 0xFAC6,0x967C,0x0,
    0xFAC7,0x96E3,0x0, 0xFAC8,0x9756,0x0, 0xFAC9,0x97DB,0x0, 0xFACA,0x97FF,0x0, 0xFACB,0x980B,0x0, 0xFACC,0x983B,0x0,
    0xFACD,0x9B12,0x0, 0xFACE,0x9F9C,0x0, 0xFACF,0x2284A,0x0, 0xFAD0,0x22844,0x0, 0xFAD1,0x233D5,0x0, 0xFAD2,0x3B9D,0x0,
    0xFAD3,0x4018,0x0, 0xFAD4,0x4039,0x0, 0xFAD5,0x25249,0x0, 0xFAD6,0x25CD0,0x0, 0xFAD7,0x27ED3,0x0, 0xFAD8,0x9F43,0x0,
    0xFAD9,0x9F8E,0x0, 0xFB1D,0x5D9,0x5B4, 0xFB1F,0x5F2,0x5B7, 0xFB2A,0x5E9,0x5C1, 0xFB2B,0x5E9,0x5C2, 0xFB2C,0xFB49,0x5C1,
    0xFB2D,0xFB49,0x5C2, 0xFB2E,0x5D0,0x5B7, 0xFB2F,0x5D0,0x5B8, 0xFB30,0x5D0,0x5BC, 0xFB31,0x5D1,0x5BC, 0xFB32,0x5D2,0x5BC,
    0xFB33,0x5D3,0x5BC, 0xFB34,0x5D4,0x5BC, 0xFB35,0x5D5,0x5BC, 0xFB36,0x5D6,0x5BC, 0xFB38,0x5D8,0x5BC, 0xFB39,0x5D9,0x5BC,
    0xFB3A,0x5DA,0x5BC, 0xFB3B,0x5DB,0x5BC, 0xFB3C,0x5DC,0x5BC, 0xFB3E,0x5DE,0x5BC, 0xFB40,0x5E0,0x5BC, 0xFB41,0x5E1,0x5BC,
    0xFB43,0x5E3,0x5BC, 0xFB44,0x5E4,0x5BC, 0xFB46,0x5E6,0x5BC, 0xFB47,0x5E7,0x5BC, 0xFB48,0x5E8,0x5BC, 0xFB49,0x5E9,0x5BC,
    0xFB4A,0x5EA,0x5BC, 0xFB4B,0x5D5,0x5B9, 0xFB4C,0x5D1,0x5BF, 0xFB4D,0x5DB,0x5BF, 0xFB4E,0x5E4,0x5BF, 0x1109A,0x11099,0x110BA,
    0x1109C,0x1109B,0x110BA, 0x110AB,0x110A5,0x110BA, 0x1112E,0x11131,0x11127, 0x1112F,0x11132,0x11127, 0x1134B,0x11347,0x1133E, 0x1134C,0x11347,0x11357,
    0x114BB,0x114B9,0x114BA, 0x114BC,0x114B9,0x114B0, 0x114BE,0x114B9,0x114BD, 0x115BA,0x115B8,0x115AF, 0x115BB,0x115B9,0x115AF, 0x1D15E,0x1D157,0x1D165,
    0x1D15F,0x1D158,0x1D165, 0x1D160,0x1D15F,0x1D16E, 0x1D161,0x1D15F,0x1D16F, 0x1D162,0x1D15F,0x1D170, 0x1D163,0x1D15F,0x1D171, 0x1D164,0x1D15F,0x1D172,
    0x1D1BB,0x1D1B9,0x1D165, 0x1D1BC,0x1D1BA,0x1D165, 0x1D1BD,0x1D1BB,0x1D16E, 0x1D1BE,0x1D1BC,0x1D16E, 0x1D1BF,0x1D1BB,0x1D16F, 0x1D1C0,0x1D1BC,0x1D16F,
    0x2F800,0x4E3D,0x0, 0x2F801,0x4E38,0x0, 0x2F802,0x4E41,0x0, 0x2F803,0x20122,0x0, 0x2F804,0x4F60,0x0, 0x2F805,0x4FAE,0x0,
    0x2F806,0x4FBB,0x0, 0x2F807,0x5002,0x0, 0x2F808,0x507A,0x0, 0x2F809,0x5099,0x0, 0x2F80A,0x50E7,0x0, 0x2F80B,0x50CF,0x0,
    0x2F80C,0x349E,0x0, 0x2F80D,0x2063A,0x0, 0x2F80E,0x514D,0x0, 0x2F80F,0x5154,0x0, 0x2F810,0x5164,0x0, 0x2F811,0x5177,0x0,
    0x2F812,0x2051C,0x0, 0x2F813,0x34B9,0x0, 0x2F814,0x5167,0x0, 0x2F815,0x518D,0x0, 0x2F816,0x2054B,0x0, 0x2F817,0x5197,0x0,
    0x2F818,0x51A4,0x0, 0x2F819,0x4ECC,0x0, 0x2F81A,0x51AC,0x0, 0x2F81B,0x51B5,0x0, 0x2F81C,0x291DF,0x0, 0x2F81D,0x51F5,0x0,
    0x2F81E,0x5203,0x0, 0x2F81F,0x34DF,0x0, 0x2F820,0x523B,0x0, 0x2F821,0x5246,0x0, 0x2F822,0x5272,0x0, 0x2F823,0x5277,0x0,
    0x2F824,0x3515,0x0, 0x2F825,0x52C7,0x0, 0x2F826,0x52C9,0x0, 0x2F827,0x52E4,0x0, 0x2F828,0x52FA,0x0, 0x2F829,0x5305,0x0,
    0x2F82A,0x5306,0x0, 0x2F82B,0x5317,0x0, 0x2F82C,0x5349,0x0, 0x2F82D,0x5351,0x0, 0x2F82E,0x535A,0x0, 0x2F82F,0x5373,0x0,
    0x2F830,0x537D,0x0, 0x2F831,0x537F,0x0, 0x2F832,0x537F,0x0, 0x2F833,0x537F,0x0, 0x2F834,0x20A2C,0x0, 0x2F835,0x7070,0x0,
    0x2F836,0x53CA,0x0, 0x2F837,0x53DF,0x0, 0x2F838,0x20B63,0x0, 0x2F839,0x53EB,0x0, 0x2F83A,0x53F1,0x0, 0x2F83B,0x5406,0x0,
    0x2F83C,0x549E,0x0, 0x2F83D,0x5438,0x0, 0x2F83E,0x5448,0x0, 0x2F83F,0x5468,0x0, 0x2F840,0x54A2,0x0, 0x2F841,0x54F6,0x0,
    0x2F842,0x5510,0x0, 0x2F843,0x5553,0x0, 0x2F844,0x5563,0x0, 0x2F845,0x5584,0x0, 0x2F846,0x5584,0x0, 0x2F847,0x5599,0x0,
    0x2F848,0x55AB,0x0, 0x2F849,0x55B3,0x0, 0x2F84A,0x55C2,0x0, 0x2F84B,0x5716,0x0, 0x2F84C,0x5606,0x0, 0x2F84D,0x5717,0x0,
    0x2F84E,0x5651,0x0, 0x2F84F,0x5674,0x0, 0x2F850,0x5207,0x0, 0x2F851,0x58EE,0x0, 0x2F852,0x57CE,0x0, 0x2F853,0x57F4,0x0,
    0x2F854,0x580D,0x0, 0x2F855,0x578B,0x0, 0x2F856,0x5832,0x0, 0x2F857,0x5831,0x0, 0x2F858,0x58AC,0x0, 0x2F859,0x214E4,0x0,
    0x2F85A,0x58F2,0x0, 0x2F85B,0x58F7,0x0, 0x2F85C,0x5906,0x0, 0x2F85D,0x591A,0x0, 0x2F85E,0x5922,0x0, 0x2F85F,0x5962,0x0,
    0x2F860,0x216A8,0x0, 0x2F861,0x216EA,0x0, 0x2F862,0x59EC,0x0, 0x2F863,0x5A1B,0x0, 0x2F864,0x5A27,0x0, 0x2F865,0x59D8,0x0,
    0x2F866,0x5A66,0x0, 0x2F867,0x36EE,0x0, 0x2F868,0x36FC,0x0, 0x2F869,0x5B08,0x0, 0x2F86A,0x5B3E,0x0, 0x2F86B,0x5B3E,0x0,
    0x2F86C,0x219C8,0x0, 0x2F86D,0x5BC3,0x0, 0x2F86E,0x5BD8,0x0, 0x2F86F,0x5BE7,0x0, 0x2F870,0x5BF3,0x0, 0x2F871,0x21B18,0x0,
    0x2F872,0x5BFF,0x0, 0x2F873,0x5C06,0x0, 0x2F874,0x5F53,0x0, 0x2F875,0x5C22,0x0, 0x2F876,0x3781,0x0, 0x2F877,0x5C60,0x0,
    0x2F878,0x5C6E,0x0, 0x2F879,0x5CC0,0x0, 0x2F87A,0x5C8D,0x0, 0x2F87B,0x21DE4,0x0, 0x2F87C,0x5D43,0x0, 0x2F87D,0x21DE6,0x0,
    0x2F87E,0x5D6E,0x0, 0x2F87F,0x5D6B,0x0, 0x2F880,0x5D7C,0x0, 0x2F881,0x5DE1,0x0, 0x2F882,0x5DE2,0x0, 0x2F883,0x382F,0x0,
    0x2F884,0x5DFD,0x0, 0x2F885,0x5E28,0x0, 0x2F886,0x5E3D,0x0, 0x2F887,0x5E69,0x0, 0x2F888,0x3862,0x0, 0x2F889,0x22183,0x0,
    0x2F88A,0x387C,0x0, 0x2F88B,0x5EB0,0x0, 0x2F88C,0x5EB3,0x0, 0x2F88D,0x5EB6,0x0, 0x2F88E,0x5ECA,0x0, 0x2F88F,0x2A392,0x0,
    0x2F890,0x5EFE,0x0, 0x2F891,0x22331,0x0, 0x2F892,0x22331,0x0, 0x2F893,0x8201,0x0, 0x2F894,0x5F22,0x0, 0x2F895,0x5F22,0x0,
    0x2F896,0x38C7,0x0, 0x2F897,0x232B8,0x0, 0x2F898,0x261DA,0x0, 0x2F899,0x5F62,0x0, 0x2F89A,0x5F6B,0x0, 0x2F89B,0x38E3,0x0,
    0x2F89C,0x5F9A,0x0, 0x2F89D,0x5FCD,0x0, 0x2F89E,0x5FD7,0x0, 0x2F89F,0x5FF9,0x0, 0x2F8A0,0x6081,0x0, 0x2F8A1,0x393A,0x0,
    0x2F8A2,0x391C,0x0, 0x2F8A3,0x6094,0x0, 0x2F8A4,0x226D4,0x0, 0x2F8A5,0x60C7,0x0, 0x2F8A6,0x6148,0x0, 0x2F8A7,0x614C,0x0,
    0x2F8A8,0x614E,0x0, 0x2F8A9,0x614C,0x0, 0x2F8AA,0x617A,0x0, 0x2F8AB,0x618E,0x0, 0x2F8AC,0x61B2,0x0, 0x2F8AD,0x61A4,0x0,
    0x2F8AE,0x61AF,0x0, 0x2F8AF,0x61DE,0x0, 0x2F8B0,0x61F2,0x0, 0x2F8B1,0x61F6,0x0, 0x2F8B2,0x6210,0x0, 0x2F8B3,0x621B,0x0,
    0x2F8B4,0x625D,0x0, 0x2F8B5,0x62B1,0x0, 0x2F8B6,0x62D4,0x0, 0x2F8B7,0x6350,0x0, 0x2F8B8,0x22B0C,0x0, 0x2F8B9,0x633D,0x0,
    0x2F8BA,0x62FC,0x0, 0x2F8BB,0x6368,0x0, 0x2F8BC,0x6383,0x0, 0x2F8BD,0x63E4,0x0, 0x2F8BE,0x22BF1,0x0, 0x2F8BF,0x6422,0x0,
    0x2F8C0,0x63C5,0x0, 0x2F8C1,0x63A9,0x0, 0x2F8C2,0x3A2E,0x0, 0x2F8C3,0x6469,0x0, 0x2F8C4,0x647E,0x0, 0x2F8C5,0x649D,0x0,
    0x2F8C6,0x6477,0x0, 0x2F8C7,0x3A6C,0x0, 0x2F8C8,0x654F,0x0, 0x2F8C9,0x656C,0x0, 0x2F8CA,0x2300A,0x0, 0x2F8CB,0x65E3,0x0,
    0x2F8CC,0x66F8,0x0, 0x2F8CD,0x6649,0x0, 0x2F8CE,0x3B19,0x0, 0x2F8CF,0x6691,0x0, 0x2F8D0,0x3B08,0x0, 0x2F8D1,0x3AE4,0x0,
    0x2F8D2,0x5192,0x0, 0x2F8D3,0x5195,0x0, 0x2F8D4,0x6700,0x0, 0x2F8D5,0x669C,0x0, 0x2F8D6,0x80AD,0x0, 0x2F8D7,0x43D9,0x0,
    0x2F8D8,0x6717,0x0, 0x2F8D9,0x671B,0x0, 0x2F8DA,0x6721,0x0, 0x2F8DB,0x675E,0x0, 0x2F8DC,0x6753,0x0, 0x2F8DD,0x233C3,0x0,
    0x2F8DE,0x3B49,0x0, 0x2F8DF,0x67FA,0x0, 0x2F8E0,0x6785,0x0, 0x2F8E1,0x6852,0x0, 0x2F8E2,0x6885,0x0, 0x2F8E3,0x2346D,0x0,
    0x2F8E4,0x688E,0x0, 0x2F8E5,0x681F,0x0, 0x2F8E6,0x6914,0x0, 0x2F8E7,0x3B9D,0x0, 0x2F8E8,0x6942,0x0, 0x2F8E9,0x69A3,0x0,
    0x2F8EA,0x69EA,0x0, 0x2F8EB,0x6AA8,0x0, 0x2F8EC,0x236A3,0x0, 0x2F8ED,0x6ADB,0x0, 0x2F8EE,0x3C18,0x0, 0x2F8EF,0x6B21,0x0,
    0x2F8F0,0x238A7,0x0, 0x2F8F1,0x6B54,0x0, 0x2F8F2,0x3C4E,0x0, 0x2F8F3,0x6B72,0x0, 0x2F8F4,0x6B9F,0x0, 0x2F8F5,0x6BBA,0x0,
    0x2F8F6,0x6BBB,0x0, 0x2F8F7,0x23A8D,0x0, 0x2F8F8,0x21D0B,0x0, 0x2F8F9,0x23AFA,0x0, 0x2F8FA,0x6C4E,0x0, 0x2F8FB,0x23CBC,0x0,
    0x2F8FC,0x6CBF,0x0, 0x2F8FD,0x6CCD,0x0, 0x2F8FE,0x6C67,0x0, 0x2F8FF,0x6D16,0x0, 0x2F900,0x6D3E,0x0, 0x2F901,0x6D77,0x0,
    0x2F902,0x6D41,0x0, 0x2F903,0x6D69,0x0, 0x2F904,0x6D78,0x0, 0x2F905,0x6D85,0x0, 0x2F906,0x23D1E,0x0, 0x2F907,0x6D34,0x0,
    0x2F908,0x6E2F,0x0, 0x2F909,0x6E6E,0x0, 0x2F90A,0x3D33,0x0, 0x2F90B,0x6ECB,0x0, 0x2F90C,0x6EC7,0x0, 0x2F90D,0x23ED1,0x0,
    0x2F90E,0x6DF9,0x0, 0x2F90F,0x6F6E,0x0, 0x2F910,0x23F5E,0x0, 0x2F911,0x23F8E,0x0, 0x2F912,0x6FC6,0x0, 0x2F913,0x7039,0x0,
    0x2F914,0x701E,0x0, 0x2F915,0x701B,0x0, 0x2F916,0x3D96,0x0, 0x2F917,0x704A,0x0, 0x2F918,0x707D,0x0, 0x2F919,0x7077,0x0,
    0x2F91A,0x70AD,0x0, 0x2F91B,0x20525,0x0, 0x2F91C,0x7145,0x0, 0x2F91D,0x24263,0x0, 0x2F91E,0x719C,0x0, 0x2F91F,0x243AB,0x0,
    0x2F920,0x7228,0x0, 0x2F921,0x7235,0x0, 0x2F922,0x7250,0x0, 0x2F923,0x24608,0x0, 0x2F924,0x7280,0x0, 0x2F925,0x7295,0x0,
    0x2F926,0x24735,0x0, 0x2F927,0x24814,0x0, 0x2F928,0x737A,0x0, 0x2F929,0x738B,0x0, 0x2F92A,0x3EAC,0x0, 0x2F92B,0x73A5,0x0,
    0x2F92C,0x3EB8,0x0, 0x2F92D,0x3EB8,0x0, 0x2F92E,0x7447,0x0, 0x2F92F,0x745C,0x0, 0x2F930,0x7471,0x0, 0x2F931,0x7485,0x0,
    0x2F932,0x74CA,0x0, 0x2F933,0x3F1B,0x0, 0x2F934,0x7524,0x0, 0x2F935,0x24C36,0x0, 0x2F936,0x753E,0x0, 0x2F937,0x24C92,0x0,
    0x2F938,0x7570,0x0, 0x2F939,0x2219F,0x0, 0x2F93A,0x7610,0x0, 0x2F93B,0x24FA1,0x0, 0x2F93C,0x24FB8,0x0, 0x2F93D,0x25044,0x0,
    0x2F93E,0x3FFC,0x0, 0x2F93F,0x4008,0x0, 0x2F940,0x76F4,0x0, 0x2F941,0x250F3,0x0, 0x2F942,0x250F2,0x0, 0x2F943,0x25119,0x0,
    0x2F944,0x25133,0x0, 0x2F945,0x771E,0x0, 0x2F946,0x771F,0x0, 0x2F947,0x771F,0x0, 0x2F948,0x774A,0x0, 0x2F949,0x4039,0x0,
    0x2F94A,0x778B,0x0, 0x2F94B,0x4046,0x0, 0x2F94C,0x4096,0x0, 0x2F94D,0x2541D,0x0, 0x2F94E,0x784E,0x0, 0x2F94F,0x788C,0x0,
    0x2F950,0x78CC,0x0, 0x2F951,0x40E3,0x0, 0x2F952,0x25626,0x0, 0x2F953,0x7956,0x0, 0x2F954,0x2569A,0x0, 0x2F955,0x256C5,0x0,
    0x2F956,0x798F,0x0, 0x2F957,0x79EB,0x0, 0x2F958,0x412F,0x0, 0x2F959,0x7A40,0x0, 0x2F95A,0x7A4A,0x0, 0x2F95B,0x7A4F,0x0,
    0x2F95C,0x2597C,0x0, 0x2F95D,0x25AA7,0x0, 0x2F95E,0x25AA7,0x0, 0x2F95F,0x7AEE,0x0, 0x2F960,0x4202,0x0, 0x2F961,0x25BAB,0x0,
    0x2F962,0x7BC6,0x0, 0x2F963,0x7BC9,0x0, 0x2F964,0x4227,0x0, 0x2F965,0x25C80,0x0, 0x2F966,0x7CD2,0x0, 0x2F967,0x42A0,0x0,
    0x2F968,0x7CE8,0x0, 0x2F969,0x7CE3,0x0, 0x2F96A,0x7D00,0x0, 0x2F96B,0x25F86,0x0, 0x2F96C,0x7D63,0x0, 0x2F96D,0x4301,0x0,
    0x2F96E,0x7DC7,0x0, 0x2F96F,0x7E02,0x0, 0x2F970,0x7E45,0x0, 0x2F971,0x4334,0x0, 0x2F972,0x26228,0x0, 0x2F973,0x26247,0x0,
    0x2F974,0x4359,0x0, 0x2F975,0x262D9,0x0, 0x2F976,0x7F7A,0x0, 0x2F977,0x2633E,0x0, 0x2F978,0x7F95,0x0, 0x2F979,0x7FFA,0x0,
    0x2F97A,0x8005,0x0, 0x2F97B,0x264DA,0x0, 0x2F97C,0x26523,0x0, 0x2F97D,0x8060,0x0, 0x2F97E,0x265A8,0x0, 0x2F97F,0x8070,0x0,
    0x2F980,0x2335F,0x0, 0x2F981,0x43D5,0x0, 0x2F982,0x80B2,0x0, 0x2F983,0x8103,0x0, 0x2F984,0x440B,0x0, 0x2F985,0x813E,0x0,
    0x2F986,0x5AB5,0x0, 0x2F987,0x267A7,0x0, 0x2F988,0x267B5,0x0, 0x2F989,0x23393,0x0, 0x2F98A,0x2339C,0x0, 0x2F98B,0x8201,0x0,
    0x2F98C,0x8204,0x0, 0x2F98D,0x8F9E,0x0, 0x2F98E,0x446B,0x0, 0x2F98F,0x8291,0x0, 0x2F990,0x828B,0x0, 0x2F991,0x829D,0x0,
    0x2F992,0x52B3,0x0, 0x2F993,0x82B1,0x0, 0x2F994,0x82B3,0x0, 0x2F995,0x82BD,0x0, 0x2F996,0x82E6,0x0, 0x2F997,0x26B3C,0x0,
    0x2F998,0x82E5,0x0, 0x2F999,0x831D,0x0, 0x2F99A,0x8363,0x0, 0x2F99B,0x83AD,0x0, 0x2F99C,0x8323,0x0, 0x2F99D,0x83BD,0x0,
    0x2F99E,0x83E7,0x0, 0x2F99F,0x8457,0x0, 0x2F9A0,0x8353,0x0, 0x2F9A1,0x83CA,0x0, 0x2F9A2,0x83CC,0x0, 0x2F9A3,0x83DC,0x0,
    0x2F9A4,0x26C36,0x0, 0x2F9A5,0x26D6B,0x0, 0x2F9A6,0x26CD5,0x0, 0x2F9A7,0x452B,0x0, 0x2F9A8,0x84F1,0x0, 0x2F9A9,0x84F3,0x0,
    0x2F9AA,0x8516,0x0, 0x2F9AB,0x273CA,0x0, 0x2F9AC,0x8564,0x0, 0x2F9AD,0x26F2C,0x0, 0x2F9AE,0x455D,0x0, 0x2F9AF,0x4561,0x0,
    0x2F9B0,0x26FB1,0x0, 0x2F9B1,0x270D2,0x0, 0x2F9B2,0x456B,0x0, 0x2F9B3,0x8650,0x0, 0x2F9B4,0x865C,0x0, 0x2F9B5,0x8667,0x0,
    0x2F9B6,0x8669,0x0, 0x2F9B7,0x86A9,0x0, 0x2F9B8,0x8688,0x0, 0x2F9B9,0x870E,0x0, 0x2F9BA,0x86E2,0x0, 0x2F9BB,0x8779,0x0,
    0x2F9BC,0x8728,0x0, 0x2F9BD,0x876B,0x0, 0x2F9BE,0x8786,0x0, 0x2F9BF,0x45D7,0x0, 0x2F9C0,0x87E1,0x0, 0x2F9C1,0x8801,0x0,
    0x2F9C2,0x45F9,0x0, 0x2F9C3,0x8860,0x0, 0x2F9C4,0x8863,0x0, 0x2F9C5,0x27667,0x0, 0x2F9C6,0x88D7,0x0, 0x2F9C7,0x88DE,0x0,
    0x2F9C8,0x4635,0x0, 0x2F9C9,0x88FA,0x0, 0x2F9CA,0x34BB,0x0, 0x2F9CB,0x278AE,0x0, 0x2F9CC,0x27966,0x0, 0x2F9CD,0x46BE,0x0,
    0x2F9CE,0x46C7,0x0, 0x2F9CF,0x8AA0,0x0, 0x2F9D0,0x8AED,0x0, 0x2F9D1,0x8B8A,0x0, 0x2F9D2,0x8C55,0x0, 0x2F9D3,0x27CA8,0x0,
    0x2F9D4,0x8CAB,0x0, 0x2F9D5,0x8CC1,0x0, 0x2F9D6,0x8D1B,0x0, 0x2F9D7,0x8D77,0x0, 0x2F9D8,0x27F2F,0x0, 0x2F9D9,0x20804,0x0,
    0x2F9DA,0x8DCB,0x0, 0x2F9DB,0x8DBC,0x0, 0x2F9DC,0x8DF0,0x0, 0x2F9DD,0x208DE,0x0, 0x2F9DE,0x8ED4,0x0, 0x2F9DF,0x8F38,0x0,
    0x2F9E0,0x285D2,0x0, 0x2F9E1,0x285ED,0x0, 0x2F9E2,0x9094,0x0, 0x2F9E3,0x90F1,0x0, 0x2F9E4,0x9111,0x0, 0x2F9E5,0x2872E,0x0,
    0x2F9E6,0x911B,0x0, 0x2F9E7,0x9238,0x0, 0x2F9E8,0x92D7,0x0, 0x2F9E9,0x92D8,0x0, 0x2F9EA,0x927C,0x0, 0x2F9EB,0x93F9,0x0,
    0x2F9EC,0x9415,0x0, 0x2F9ED,0x28BFA,0x0, 0x2F9EE,0x958B,0x0, 0x2F9EF,0x4995,0x0, 0x2F9F0,0x95B7,0x0, 0x2F9F1,0x28D77,0x0,
    0x2F9F2,0x49E6,0x0, 0x2F9F3,0x96C3,0x0, 0x2F9F4,0x5DB2,0x0, 0x2F9F5,0x9723,0x0, 0x2F9F6,0x29145,0x0, 0x2F9F7,0x2921A,0x0,
    0x2F9F8,0x4A6E,0x0, 0x2F9F9,0x4A76,0x0, 0x2F9FA,0x97E0,0x0, 0x2F9FB,0x2940A,0x0, 0x2F9FC,0x4AB2,0x0, 0x2F9FD,0x29496,0x0,
    0x2F9FE,0x980B,0x0, 0x2F9FF,0x980B,0x0, 0x2FA00,0x9829,0x0, 0x2FA01,0x295B6,0x0, 0x2FA02,0x98E2,0x0, 0x2FA03,0x4B33,0x0,
    0x2FA04,0x9929,0x0, 0x2FA05,0x99A7,0x0, 0x2FA06,0x99C2,0x0, 0x2FA07,0x99FE,0x0, 0x2FA08,0x4BCE,0x0, 0x2FA09,0x29B30,0x0,
    0x2FA0A,0x9B12,0x0, 0x2FA0B,0x9C40,0x0, 0x2FA0C,0x9CFD,0x0, 0x2FA0D,0x4CCE,0x0, 0x2FA0E,0x4CED,0x0, 0x2FA0F,0x9D67,0x0,
    0x2FA10,0x2A0CE,0x0, 0x2FA11,0x4CF8,0x0, 0x2FA12,0x2A105,0x0, 0x2FA13,0x2A20E,0x0, 0x2FA14,0x2A291,0x0, 0x2FA15,0x9EBB,0x0,
    0x2FA16,0x4D56,0x0, 0x2FA17,0x9EF9,0x0, 0x2FA18,0x9EFE,0x0, 0x2FA19,0x9F05,0x0, 0x2FA1A,0x9F0F,0x0, 0x2FA1B,0x9F16,0x0,
    0x2FA1C,0x9F3B,0x0, 0x2FA1D,0x2A600,0x0,
};
// primary composites: 940 entries first,second,cp sorted by (first, second)
static const uint32_t unicode_comp[] = {
    0x3C,0x338,0x226E, 0x3D,0x338,0x2260, 0x3E,0x338,0x226F, 0x41,0x300,0xC0, 0x41,0x301,0xC1, 0x41,0x302,0xC2,
    0x41,0x303,0xC3, 0x41,0x304,0x100, 0x41,0x306,0x102, 0x41,0x307,0x226, 0x41,0x308,0xC4, 0x41,0x309,0x1EA2,
    0x41,0x30A,0xC5, 0x41,0x30C,0x1CD, 0x41,0x30F,0x200, 0x41,0x311,0x202, 0x41,0x323,0x1EA0, 0x41,0x325,0x1E00,
    0x41,0x328,0x104, 0x42,0x307,0x1E02, 0x42,0x323,0x1E04, 0x42,0x331,0x1E06, 0x43,0x301,0x106, 0x43,0x302,0x108,
    0x43,0x307,0x10A, 0x43,0x30C,0x10C, 0x43,0x327,0xC7, 0x44,0x307,0x1E0A, 0x44,0x30C,0x10E, 0x44,0x323,0x1E0C,
    0x44,0x327,0x1E10, 0x44,0x32D,0x1E12, 0x44,0x331,0x1E0E, 0x45,0x300,0xC8, 0x45,0x301,0xC9, 0x45,0x302,0xCA,
    0x45,0x303,0x1EBC, 0x45,0x304,0x112, 0x45,0x306,0x114, 0x45,0x307,0x116, 0x45,0x308,0xCB, 0x45,0x309,0x1EBA,
    0x45,0x30C,0x11A, 0x45,0x30F,0x204, 0x45,0x311,0x206, 0x45,0x323,0x1EB8, 0x45,0x327,0x228, 0x45,0x328,0x118,
    0x45,0x32D,0x1E18, 0x45,0x330,0x1E1A, 0x46,0x307,0x1E1E, 0x47,0x301,0x1F4, 0x47,0x302,0x11C, 0x47,0x304,0x1E20,
    0x47,0x306,0x11E, 0x47,0x307,0x120, 0x47,0x30C,0x1E6, 0x47,0x327,0x122, 0x48,0x302,0x124, 0x48,0x307,0x1E22,
    0x48,0x308,0x1E26, 0x48,0x30C,0x21E, 0x48,0x323,0x1E24, 0x48,0x327,0x1E28, 0x48,0x32E,0x1E2A, 0x49,0x300,0xCC,
    0x49,0x301,0xCD, 0x49,0x302,0xCE, 0x49,0x303,0x128, 0x49,0x304,0x12A, 0x49,0x306,0x12C, 0x49,0x307,0x130,
    0x49,0x308,0xCF, 0x49,0x309,0x1EC8, 0x49,0x30C,0x1CF, 0x49,0x30F,0x208, 0x49,0x311,0x20A, 0x49,0x323,0x1ECA,
    0x49,0x328,0x12E, 0x49,0x330,0x1E2C, 0x4A,0x302,0x134, 0x4B,0x301,0x1E30, 0x4B,0x30C,0x1E8, 0x4B,0x323,0x1E32,
    0x4B,0x327,0x136, 0x4B,0x331,0x1E34, 0x4C,0x301,0x139, 0x4C,0x30C,0x13D, 0x4C,0x323,0x1E36, 0x4C,0x327,0x13B,
    0x4C,0x32D,0x1E3C, 0x4C,0x331,0x1E3A, 0x4D,0x301,0x1E3E, 0x4D,0x307,0x1E40, 0x4D,0x323,0x1E42, 0x4E,0x300,0x1F8,
    0x4E,0x301,0x143, 0x4E,0x303,0xD1, 0x4E,0x307,0x1E44, 0x4E,0x30C,0x147, 0x4E,0x323,0x1E46, 0x4E,0x327,0x145,
    0x4E,0x32D,0x1E4A, 0x4E,0x331,0x1E48, 0x4F,0x300,0xD2, 0x4F,0x301,0xD3, 0x4F,0x302,0xD4, 0x4F,0x303,0xD5,
    0x4F,0x304,0x14C, 0x4F,0x306,0x14E, 0x4F,0x307,0x22E, 0x4F,0x308,0xD6, 0x4F,0x309,0x1ECE, 0x4F,0x30B,0x150,
    0x4F,0x30C,0x1D1, 0x4F,0x30F,0x20C, 0x4F,0x311,0x20E, 0x4F,0x31B,0x1A0, 0x4F,0x323,0x1ECC, 0x4F,0x328,0x1EA,
    0x50,0x301,0x1E54, 0x50,0x307,0x1E56, 0x52,0x301,0x154, 0x52,0x307,0x1E58, 0x52,0x30C,0x158, 0x52,0x30F,0x210,
    0x52,0x311,0x212, 0x52,0x323,0x1E5A, 0x52,0x327,0x156, 0x52,0x331,0x1E5E, 0x53,0x301,0x15A, 0x53,0x302,0x15C,
    0x53,0x307,0x1E60, 0x53,0x30C,0x160, 0x53,0x323,0x1E62, 0x53,0x326,0x218, 0x53,0x327,0x15E, 0x54,0x307,0x1E6A,
    0x54,0x30C,0x164, 0x54,0x323,0x1E6C, 0x54,0x326,0x21A, 0x54,0x327,0x162, 0x54,0x32D,0x1E70, 0x54,0x331,0x1E6E,
    0x55,0x300,0xD9, 0x55,0x301,0xDA, 0x55,0x302,0xDB, 0x55,0x303,0x168, 0x55,0x304,0x16A, 0x55,0x306,0x16C,
    0x55,0x308,0xDC, 0x55,0x309,0x1EE6, 0x55,0x30A,0x16E, 0x55,0x30B,0x170, 0x55,0x30C,0x1D3, 0x55,0x30F,0x214,
    0x55,0x311,0x216, 0x55,0x31B,0x1AF, 0x55,0x323,0x1EE4, 0x55,0x324,0x1E72, 0x55,0x328,0x172, 0x55,0x32D,0x1E76,
    0x55,0x330,0x1E74, 0x56,0x303,0x1E7C, 0x56,0x323,0x1E7E, 0x57,0x300,0x1E80, 0x57,0x301,0x1E82, 0x57,0x302,0x174,
    0x57,0x307,0x1E86, 0x57,0x308,0x1E84, 0x57,0x323,0x1E88, 0x58,0x307,0x1E8A, 0x58,0x308,0x1E8C, 0x59,0x300,0x1EF2,
    0x59,0x301,0xDD, 0x59,0x302,0x176, 0x59,0x303,0x1EF8, 0x59,0x304,0x232, 0x59,0x307,0x1E8E, 0x59,0x308,0x178,
    0x59,0x309,0x1EF6, 0x59,0x323,0x1EF4, 0x5A,0x301,0x179, 0x5A,0x302,0x1E90, 0x5A,0x307,0x17B, 0x5A,0x30C,0x17D,
    0x5A,0x323,0x1E92, 0x5A,0x331,0x1E94, 0x61,0x300,0xE0, 0x61,0x301,0xE1, 0x61,0x302,0xE2, 0x61,0x303,0xE3,
    0x61,0x304,0x101, 0x61,0x306,0x103, 0x61,0x307,0x227, 0x61,0x308,0xE4, 0x61,0x309,0x1EA3, 0x61,0x30A,0xE5,
    0x61,0x30C,0x1CE, 0x61,0x30F,0x201, 0x61,0x311,0x203, 0x61,0x323,0x1EA1, 0x61,0x325,0x1E01, 0x61,0x328,0x105,
    0x62,0x307,0x1E03, 0x62,0x323,0x1E05, 0x62,0x331,0x1E07, 0x63,0x301,0x107, 0x63,0x302,0x109, 0x63,0x307,0x10B,
    0x63,0x30C,0x10D, 0x63,0x327,0xE7, 0x64,0x307,0x1E0B, 0x64,0x30C,0x10F, 0x64,0x323,0x1E0D, 0x64,0x327,0x1E11,
    0x64,0x32D,0x1E13, 0x64,0x331,0x1E0F, 0x65,0x300,0xE8, 0x65,0x301,0xE9, 0x65,0x302,0xEA, 0x65,0x303,0x1EBD,
    0x65,0x304,0x113, 0x65,0x306,0x115, 0x65,0x307,0x117, 0x65,0x308,0xEB, 0x65,0x309,0x1EBB, 0x65,0x30C,0x11B,
    0x65,0x30F,0x205, 0x65,0x311,0x207, 0x65,0x323,0x1EB9, 0x65,0x327,0x229, 0x65,0x328,0x119, 0x65,0x32D,0x1E19,
    0x65,0x330,0x1E1B, 0x66,0x307,0x1E1F, 0x67,0x301,0x1F5, 0x67,0x302,0x11D, 0x67,0x304,0x1E21, 0x67,0x306,0x11F,
    0x67,0x307,0x121, 0x67,0x30C,0x1E7, 0x67,0x327,0x123, 0x68,0x302,0x125, 0x68,0x307,0x1E23, 0x68,0x308,0x1E27,
    0x68,0x30C,0x21F, 0x68,0x323,0x1E25, 0x68,0x327,0x1E29, 0x68,0x32E,0x1E2B, 0x68,0x331,0x1E96, 0x69,0x300,0xEC,
    0x69,0x301,0xED, 0x69,0x302,0xEE, 0x69,0x303,0x129, 0x69,0x304,0x12B, 0x69,0x306,0x12D, 0x69,0x308,0xEF,
    0x69,0x309,0x1EC9, 0x69,0x30C,0x1D0, 0x69,0x30F,0x209, 0x69,0x311,0x20B, 0x69,0x323,0x1ECB, 0x69,0x328,0x12F,
    0x69,0x330,0x1E2D, 0x6A,0x302,0x135, 0x6A,0x30C,0x1F0, 0x6B,0x301,0x1E31, 0x6B,0x30C,0x1E9, 0x6B,0x323,0x1E33,
    0x6B,0x327,0x137, 0x6B,0x331,0x1E35, 0x6C,0x301,0x13A, 0x6C,0x30C,0x13E, 0x6C,0x323,0x1E37, 0x6C,0x327,0x13C,
    0x6C,0x32D,0x1E3D, 0x6C,0x331,0x1E3B, 0x6D,0x301,0x1E3F, 0x6D,0x307,0x1E41, 0x6D,0x323,0x1E43, 0x6E,0x300,0x1F9,
    0x6E,0x301,0x144, 0x6E,0x303,0xF1, 0x6E,0x307,0x1E45, 0x6E,0x30C,0x148, 0x6E,0x323,0x1E47, 0x6E,0x327,0x146,
    0x6E,0x32D,0x1E4B, 0x6E,0x331,0x1E49, 0x6F,0x300,0xF2, 0x6F,0x301,0xF3, 0x6F,0x302,0xF4, 0x6F,0x303,0xF5,
    0x6F,0x304,0x14D, 0x6F,0x306,0x14F, 0x6F,0x307,0x22F, 0x6F,0x308,0xF6, 0x6F,0x309,0x1ECF, 0x6F,0x30B,0x151,
    0x6F,0x30C,0x1D2, 0x6F,0x30F,0x20D, 0x6F,0x311,0x20F, 0x6F,0x31B,0x1A1, 0x6F,0x323,0x1ECD, 0x6F,0x328,0x1EB,
    0x70,0x301,0x1E55, 0x70,0x307,0x1E57, 0x72,0x301,0x155, 0x72,0x307,0x1E59, 0x72,0x30C,0x159, 0x72,0x30F,0x211,
    0x72,0x311,0x213, 0x72,0x323,0x1E5B, 0x72,0x327,0x157, 0x72,0x331,0x1E5F, 0x73,0x301,0x15B, 0x73,0x302,0x15D,
    0x73,0x307,0x1E61, 0x73,0x30C,0x161, 0x73,0x323,0x1E63, 0x73,0x326,0x219, 0x73,0x327,0x15F, 0x74,0x307,0x1E6B,
    0x74,0x308,0x1E97, 0x74,0x30C,0x165, 0x74,0x323,0x1E6D, 0x74,0x326,0x21B, 0x74,0x327,0x163, 0x74,0x32D,0x1E71,
    0x74,0x331,0x1E6F, 0x75,0x300,0xF9, 0x75,0x301,0xFA, 0x75,0x302,0xFB, 0x75,0x303,0x169, 0x75,0x304,0x16B,
    0x75,0x306,0x16D, 0x75,0x308,0xFC, 0x75,0x309,0x1EE7, 0x75,0x30A,0x16F, 0x75,0x30B,0x171, 0x75,0x30C,0x1D4,
    0x75,0x30F,0x215, 0x75,0x311,0x217, 0x75,0x31B,0x1B0, 0x75,0x323,0x1EE5, 0x75,0x324,0x1E73, 0x75,0x328,0x173,
    0x75,0x32D,0x1E77, 0x75,0x330,0x1E75, 0x76,0x303,0x1E7D, 0x76,0x323,0x1E7F, 0x77,0x300,0x1E81, 0x77,0x301,0x1E83,
    0x77,0x302,0x175, 0x77,0x307,0x1E87, 0x77,0x308,0x1E85, 0x77,0x30A,0x1E98, 0x77,0x323,0x1E89, 0x78,0x307,0x1E8B,
    0x78,0x308,0x1E8D, 0x79,0x300,0x1EF3, 0x79,0x301,0xFD, 0x79,0x302,0x177, 0x79,0x303,0x1EF9, 0x79,0x304,0x233,
    0x79,0x307,0x1E8F, 0x79,0x308,0xFF, 0x79,0x309,0x1EF7, 0x79,0x30A,0x1E99, 0x79,0x323,0x1EF5, 0x7A,0x301,0x17A,
    0x7A,0x302,0x1E91, 0x7A,0x307,0x17C, 0x7A,0x30C,0x17E, 0x7A,0x323,0x1E93, 0x7A,0x331,0x1E95, 0xA8,0x300,0x1FED,
    0xA8,0x301,0x385, 0xA8,0x342,0x1FC1, 0xC2,0x300,0x1EA6, 0xC2,0x301,0x1EA4, 0xC2,0x303,0x1EAA, 0xC2,0x309,0x1EA8,
    0xC4,0x304,0x1DE, 0xC5,0x301,0x1FA, 0xC6,0x301,0x1FC, 0xC6,0x304,0x1E2, 0xC7,0x301,0x1E08, 0xCA,0x300,0x1EC0,
    0xCA,0x301,0x1EBE, 0xCA,0x303,0x1EC4, 0xCA,0x309,0x1EC2, 0xCF,0x301,0x1E2E, 0xD4,0x300,0x1ED2, 0xD4,0x301,0x1ED0,
    0xD4,0x303,0x1ED6, 0xD4,0x309,0x1ED4, 0xD5,0x301,0x1E4C, 0xD5,0x304,0x22C, 0xD5,0x308,0x1E4E, 0xD6,0x304,0x22A,
    0xD8,0x301,0x1FE, 0xDC,0x300,0x1DB, 0xDC,0x301,0x1D7, 0xDC,0x304,0x1D5, 0xDC,0x30C,0x1D9, 0xE2,0x300,0x1EA7,
    0xE2,0x301,0x1EA5, 0xE2,0x303,0x1EAB, 0xE2,0x309,0x1EA9, 0xE4,0x304,0x1DF, 0xE5,0x301,0x1FB, 0xE6,0x301,0x1FD,
    0xE6,0x304,0x1E3, 0xE7,0x301,0x1E09, 0xEA,0x300,0x1EC1, 0xEA,0x301,0x1EBF, 0xEA,0x303,0x1EC5, 0xEA,0x309,0x1EC3,
    0xEF,0x301,0x1E2F, 0xF4,0x300,0x1ED3, 0xF4,0x301,0x1ED1, 0xF4,0x303,0x1ED7, 0xF4,0x309,0x1ED5, 0xF5,0x301,0x1E4D,
    0xF5,0x304,0x22D, 0xF5,0x308,0x1E4F, 0xF6,0x304,0x22B, 0xF8,0x301,0x1FF, 0xFC,0x300,0x1DC, 0xFC,0x301,0x1D8,
    0xFC,0x304,0x1D6, 0xFC,0x30C,0x1DA, 0x102,0x300,0x1EB0, 0x102,0x301,0x1EAE, 0x102,0x303,0x1EB4, 0x102,0x309,0x1EB2,
    0x103,0x300,0x1EB1, 0x103,0x301,0x1EAF, 0x103,0x303,0x1EB5, 0x103,0x309,0x1EB3, 0x112,0x300,0x1E14, 0x112,0x301,0x1E16,
    0x113,0x300,0x1E15, 0x113,0x301,0x1E17, 0x14C,0x300,0x1E50, 0x14C,0x301,0x1E52, 0x14D,0x300,0x1E51, 0x14D,0x301,0x1E53,
    0x15A,0x307,0x1E64, 0x15B,0x307,0x1E65, 0x160,0x307,0x1E66, 0x161,0x307,0x1E67, 0x168,0x301,0x1E78, 0x169,0x301,0x1E79,
    0x16A,0x308,0x1E7A, 0x16B,0x308,0x1E7B, 0x17F,0x307,0x1E9B, 0x1A0,0x300,0x1EDC, 0x1A0,0x301,0x1EDA, 0x1A0,0x303,0x1EE0,
    0x1A0,0x309,0x1EDE, 0x1A0,0x323,0x1EE2, 0x1A1,0x300,0x1EDD, 0x1A1,0x301,0x1EDB, 0x1A1,0x303,0x1EE1, 0x1A1,0x309,0x1EDF,
    0x1A1,0x323,0x1EE3, 0x1AF,0x300,0x1EEA, 0x1AF,0x301,0x1EE8, 0x1AF,0x303,0x1EEE, 0x1AF,0x309,0x1EEC, 0x1AF,0x323,0x1EF0,
    0x1B0,0x300,0x1EEB, 0x1B0,0x301,0x1EE9, 0x1B0,0x303,0x1EEF, 0x1B0,0x309,0x1EED, 0x1B0,0x323,0x1EF1, 0x1B7,0x30C,0x1EE,
    0x1EA,0x304,0x1EC, 0x1EB,0x304,0x1ED, 0x226,0x304,0x1E0, 0x227,0x304,0x1E1, 0x228,0x306,0x1E1C, 0x229,0x306,0x1E1D,
    0x22E,0x304,0x230, 0x22F,0x304,0x231, 0x292,0x30C,0x1EF, 0x391,0x300,0x1FBA, 0x391,0x301,0x386, 0x391,0x304,0x1FB9,
    0x391,0x306,0x1FB8, 0x391,0x313,0x1F08, 0x391,0x314,0x1F09, 0x391,0x345,0x1FBC, 0x395,0x300,0x1FC8, 0x395,0x301,0x388,
    0x395,0x313,0x1F18, 0x395,0x314,0x1F19, 0x397,0x300,0x1FCA, 0x397,0x301,0x389, 0x397,0x313,0x1F28, 0x397,0x314,0x1F29,
    0x397,0x345,0x1FCC, 0x399,0x300,0x1FDA, 0x399,0x301,0x38A, 0x399,0x304,0x1FD9, 0x399,0x306,0x1FD8, 0x399,0x308,0x3AA,
    0x399,0x313,0x1F38, 0x399,0x314,0x1F39, 0x39F,0x300,0x1FF8, 0x39F,0x301,0x38C, 0x39F,0x313,0x1F48, 0x39F,0x314,0x1F49,
    0x3A1,0x314,0x1FEC, 0x3A5,0x300,0x1FEA, 0x3A5,0x301,0x38E, 0x3A5,0x304,0x1FE9, 0x3A5,0x306,0x1FE8, 0x3A5,0x308,0x3AB,
    0x3A5,0x314,0x1F59, 0x3A9,0x300,0x1FFA, 0x3A9,0x301,0x38F, 0x3A9,0x313,0x1F68, 0x3A9,0x314,0x1F69, 0x3A9,0x345,0x1FFC,
    0x3AC,0x345,0x1FB4, 0x3AE,0x345,0x1FC4, 0x3B1,0x300,0x1F70, 0x3B1,0x301,0x3AC, 0x3B1,0x304,0x1FB1, 0x3B1,0x306,0x1FB0,
    0x3B1,0x313,0x1F00, 0x3B1,0x314,0x1F01, 0x3B1,0x342,0x1FB6, 0x3B1,0x345,0x1FB3, 0x3B5,0x300,0x1F72, 0x3B5,0x301,0x3AD,
    0x3B5,0x313,0x1F10, 0x3B5,0x314,0x1F11, 0x3B7,0x300,0x1F74, 0x3B7,0x301,0x3AE, 0x3B7,0x313,0x1F20, 0x3B7,0x314,0x1F21,
    0x3B7,0x342,0x1FC6, 0x3B7,0x345,0x1FC3, 0x3B9,0x300,0x1F76, 0x3B9,0x301,0x3AF, 0x3B9,0x304,0x1FD1, 0x3B9,0x306,0x1FD0,
    0x3B9,0x308,0x3CA, 0x3B9,0x313,0x1F30, 0x3B9,0x314,0x1F31, 0x3B9,0x342,0x1FD6, 0x3BF,0x300,0x1F78, 0x3BF,0x301,0x3CC,
    0x3BF,0x313,0x1F40, 0x3BF,0x314,0x1F41, 0x3C1,0x313,0x1FE4, 0x3C1,0x314,0x1FE5, 0x3C5,0x300,0x1F7A, 0x3C5,0x301,0x3CD,
    0x3C5,0x304,0x1FE1, 0x3C5,0x306,0x1FE0, 0x3C5,0x308,0x3CB, 0x3C5,0x313,0x1F50, 0x3C5,0x314,0x1F51, 0x3C5,0x342,0x1FE6,
    0x3C9,0x300,0x1F7C, 0x3C9,0x301,0x3CE, 0x3C9,0x313,0x1F60, 0x3C9,0x314,0x1F61, 0x3C9,0x342,0x1FF6, 0x3C9,0x345,0x1FF3,
    0x3CA,0x300,0x1FD2, 0x3CA,0x301,0x390, 0x3CA,0x342,0x1FD7, 0x3CB,0x300,0x1FE2, 0x3CB,0x301,0x3B0, 0x3CB,0x342,0x1FE7,
    0x3CE,0x345,0x1FF4, 0x3D2,0x301,0x3D3, 0x3D2,0x308,0x3D4, 0x406,0x308,0x407, 0x410,0x306,0x4D0, 0x410,0x308,0x4D2,
    0x413,0x301,0x403, 0x415,0x300,0x400, 0x415,0x306,0x4D6, 0x415,0x308,0x401, 0x416,0x306,0x4C1, 0x416,0x308,0x4DC,
    0x417,0x308,0x4DE, 0x418,0x300,0x40D, 0x418,0x304,0x4E2, 0x418,0x306,0x419, 0x418,0x308,0x4E4, 0x41A,0x301,0x40C,
    0x41E,0x308,0x4E6, 0x423,0x304,0x4EE, 0x423,0x306,0x40E, 0x423,0x308,0x4F0, 0x423,0x30B,0x4F2, 0x427,0x308,0x4F4,
    0x42B,0x308,0x4F8, 0x42D,0x308,0x4EC, 0x430,0x306,0x4D1, 0x430,0x308,0x4D3, 0x433,0x301,0x453, 0x435,0x300,0x450,
    0x435,0x306,0x4D7, 0x435,0x308,0x451, 0x436,0x306,0x4C2, 0x436,0x308,0x4DD, 0x437,0x308,0x4DF, 0x438,0x300,0x45D,
    0x438,0x304,0x4E3, 0x438,0x306,0x439, 0x438,0x308,0x4E5, 0x43A,0x301,0x45C, 0x43E,0x308,0x4E7, 0x443,0x304,0x4EF,
    0x443,0x306,0x45E, 0x443,0x308,0x4F1, 0x443,0x30B,0x4F3, 0x447,0x308,0x4F5, 0x44B,0x308,0x4F9, 0x44D,0x308,0x4ED,
    0x456,0x308,0x457, 0x474,0x30F,0x476, 0x475,0x30F,0x477, 0x4D8,0x308,0x4DA, 0x4D9,0x308,0x4DB, 0x4E8,0x308,0x4EA,
    0x4E9,0x308,0x4EB, 0x627,0x653,0x622, 0x627,0x654,0x623, 0x627,0x655,0x625, 0x648,0x654,0x624, 0x64A,0x654,0x626,
    0x6C1,0x654,0x6C2, 0x6D2,0x654,0x6D3, 0x6D5,0x654,0x6C0, 0x928,0x93C,0x929, 0x930,0x93C,0x931, 0x933,0x93C,0x934,
    0x9C7,0x9BE,0x9CB, 0x9C7,0x9D7,0x9CC, 0xB47,0xB3E,0xB4B, 0xB47,0xB56,0xB48, 0xB47,0xB57,0xB4C, 0xB92,0xBD7,0xB94,
    0xBC6,0xBBE,0xBCA, 0xBC6,0xBD7,0xBCC, 0xBC7,0xBBE,0xBCB, 0xC46,0xC56,0xC48, 0xCBF,0xCD5,0xCC0, 0xCC6,0xCC2,0xCCA,
    0xCC6,0xCD5,0xCC7, 0xCC6,0xCD6,0xCC8, 0xCCA,0xCD5,0xCCB, 0xD46,0xD3E,0xD4A, 0xD46,0xD57,0xD4C, 0xD47,0xD3E,0xD4B,
    0xDD9,0xDCA,0xDDA, 0xDD9,0xDCF,0xDDC, 0xDD9,0xDDF,0xDDE, 0xDDC,0xDCA,0xDDD, 0x1025,0x102E,0x1026, 0x1B05,0x1B35,0x1B06,
    0x1B07,0x1B35,0x1B08, 0x1B09,0x1B35,0x1B0A, 0x1B0B,0x1B35,0x1B0C, 0x1B0D,0x1B35,0x1B0E, 0x1B11,0x1B35,0x1B12, 0x1B3A,0x1B35,0x1B3B,
    0x1B3C,0x1B35,0x1B3D, 0x1B3E,0x1B35,0x1B40, 0x1B3F,0x1B35,0x1B41, 0x1B42,0x1B35,0x1B43, 0x1E36,0x304,0x1E38, 0x1E37,0x304,0x1E39,
    0x1E5A,0x304,0x1E5C, 0x1E5B,0x304,0x1E5D, 0x1E62,0x307,0x1E68, 0x1E63,0x307,0x1E69, 0x1EA0,0x302,0x1EAC, 0x1EA0,0x306,0x1EB6,
    0x1EA1,0x302,0x1EAD, 0x1EA1,0x306,0x1EB7, 0x1EB8,0x302,0x1EC6, 0x1EB9,0x302,0x1EC7, 0x1ECC,0x302,0x1ED8, 0x1ECD,0x302,0x1ED9,
    0x1F00,0x300,0x1F02, 0x1F00,0x301,0x1F04, 0x1F00,0x342,0x1F06, 0x1F00,0x345,0x1F80, 0x1F01,0x300,0x1F03, 0x1F01,0x301,0x1F05,
    0x1F01,0x342,0x1F07, 0x1F01,0x345,0x1F81, 0x1F02,0x345,0x1F82, 0x1F03,0x345,0x1F83, 0x1F04,0x345,0x1F84, 0x1F05,0x345,0x1F85,
    0x1F06,0x345,0x1F86, 0x1F07,0x345,0x1F87, 0x1F08,0x300,0x1F0A, 0x1F08,0x301,0x1F0C, 0x1F08,0x342,0x1F0E, 0x1F08,0x345,0x1F88,
    0x1F09,0x300,0x1F0B, 0x1F09,0x301,0x1F0D, 0x1F09,0x342,0x1F0F, 0x1F09,0x345,0x1F89, 0x1F0A,0x345,0x1F8A, 0x1F0B,0x345,0x1F8B,
    0x1F0C,0x345,0x1F8C, 0x1F0D,0x345,0x1F8D, 0x1F0E,0x345,0x1F8E, 0x1F0F,0x345,0x1F8F, 0x1F10,0x300,0x1F12, 0x1F10,0x301,0x1F14,
    0x1F11,0x300,0x1F13, 0x1F11,0x301,0x1F15, 0x1F18,0x300,0x1F1A, 0x1F18,0x301,0x1F1C, 0x1F19,0x300,0x1F1B, 0x1F19,0x301,0x1F1D,
    0x1F20,0x300,0x1F22, 0x1F20,0x301,0x1F24, 0x1F20,0x342,0x1F26, 0x1F20,0x345,0x1F90, 0x1F21,0x300,0x1F23, 0x1F21,0x301,0x1F25,
    0x1F21,0x342,0x1F27, 0x1F21,0x345,0x1F91, 0x1F22,0x345,0x1F92, 0x1F23,0x345,0x1F93, 0x1F24,0x345,0x1F94, 0x1F25,0x345,0x1F95,
    0x1F26,0x345,0x1F96, 0x1F27,0x345,0x1F97, 0x1F28,0x300,0x1F2A, 0x1F28,0x301,0x1F2C, 0x1F28,0x342,0x1F2E, 0x1F28,0x345,0x1F98,
    0x1F29,0x300,0x1F2B, 0x1F29,0x301,0x1F2D, 0x1F29,0x342,0x1F2F, 0x1F29,0x345,0x1F99, 0x1F2A,0x345,0x1F9A, 0x1F2B,0x345,0x1F9B,
    0x1F2C,0x345,0x1F9C, 0x1F2D,0x345,0x1F9D, 0x1F2E,0x345,0x1F9E, 0x1F2F,0x345,0x1F9F, 0x1F30,0x300,0x1F32, 0x1F30,0x301,0x1F34,
    0x1F30,0x342,0x1F36, 0x1F31,0x300,0x1F33, 0x1F31,0x301,0x1F35, 0x1F31,0x342,0x1F37, 0x1F38,0x300,0x1F3A, 0x1F38,0x301,0x1F3C,
    0x1F38,0x342,0x1F3E, 0x1F39,0x300,0x1F3B, 0x1F39,0x301,0x1F3D, 0x1F39,0x342,0x1F3F, 0x1F40,0x300,0x1F42, 0x1F40,0x301,0x1F44,
    0x1F41,0x300,0x1F43, 0x1F41,0x301,0x1F45, 0x1F48,0x300,0x1F4A, 0x1F48,0x301,0x1F4C, 0x1F49,0x300,0x1F4B, 0x1F49,0x301,0x1F4D,
    0x1F50,0x300,0x1F52, 0x1F50,0x301,0x1F54, 0x1F50,0x342,0x1F56, 0x1F51,0x300,0x1F53, 0x1F51,0x301,0x1F55, 0x1F51,0x342,0x1F57,
    0x1F59,0x300,0x1F5B, 0x1F59,0x301,0x1F5D, 0x1F59,0x342,0x1F5F, 0x1F60,0x300,0x1F62, 0x1F60,0x301,0x1F64, 0x1F60,0x342,0x1F66,
    0x1F60,0x345,0x1FA0, 0x1F61,0x300,0x1F63, 0x1F61,0x301,0x1F65, 0x1F61,0x342,0x1F67, 0x1F61,0x345,0x1FA1, 0x1F62,0x345,0x1FA2,
    0x1F63,0x345,0x1FA3, 0x1F64,0x345,0x1FA4, 0x1F65,0x345,0x1FA5, 0x1F66,0x345,0x1FA6, 0x1F67,0x345,0x1FA7, 0x1F68,0x300,0x1F6A,
    0x1F68,0x301,0x1F6C, 0x1F68,0x342,0x1F6E, 0x1F68,0x345,0x1FA8, 0x1F69,0x300,0x1F6B, 0x1F69,0x301,0x1F6D, 0x1F69,0x342,0x1F6F,
    0x1F69,0x345,0x1FA9, 0x1F6A,0x345,0x1FAA, 0x1F6B,0x345,0x1FAB, 0x1F6C,0x345,0x1FAC, 0x1F6D,0x345,0x1FAD, 0x1F6E,0x345,0x1FAE,
    0x1F6F,0x345,0x1FAF, 0x1F70,0x345,0x1FB2, 0x1F74,0x345,0x1FC2, 0x1F7C,0x345,0x1FF2, 0x1FB6,0x345,0x1FB7, 0x1FBF,0x300,0x1FCD,
    0x1FBF,0x301,0x1FCE, 0x1FBF,0x342,0x1FCF, 0x1FC6,0x345,0x1FC7, 0x1FF6,0x345,0x1FF7, 0x1FFE,0x300,0x1FDD, 0x1FFE,0x301,0x1FDE,
    0x1FFE,0x342,0x1FDF, 0x2190,0x338,0x219A, 0x2192,0x338,0x219B, 0x2194,0x338,0x21AE, 0x21D0,0x338,0x21CD, 0x21D2,0x338,0x21CF,
    0x21D4,0x338,0x21CE, 0x2203,0x338,0x2204, 0x2208,0x338,0x2209, 0x220B,0x338,0x220C, 0x2223,0x338,0x2224, 0x2225,0x338,0x2226,
    0x223C,0x338,0x2241, 0x2243,0x338,0x2244, 0x2245,0x338,0x2247, 0x2248,0x338,0x2249, 0x224D,0x338,0x226D, 0x2261,0x338,0x2262,
    0x2264,0x338,0x2270, 0x2265,0x338,0x2271, 0x2272,0x338,0x2274, 0x2273,0x338,0x2275, 0x2276,0x338,0x2278, 0x2277,0x338,0x2279,
    0x227A,0x338,0x2280, 0x227B,0x338,0x2281, 0x227C,0x338,0x22E0, 0x227D,0x338,0x22E1, 0x2282,0x338,0x2284, 0x2283,0x338,0x2285,
    0x2286,0x338,0x2288, 0x2287,0x338,0x2289, 0x2291,0x338,0x22E2, 0x2292,0x338,0x22E3, 0x22A2,0x338,0x22AC, 0x22A8,0x338,0x22AD,
    0x22A9,0x338,0x22AE, 0x22AB,0x338,0x22AF, 0x22B2,0x338,0x22EA, 0x22B3,0x338,0x22EB, 0x22B4,0x338,0x22EC, 0x22B5,0x338,0x22ED,
    0x3046,0x3099,0x3094, 0x304B,0x3099,0x304C, 0x304D,0x3099,0x304E, 0x304F,0x3099,0x3050, 0x3051,0x3099,0x3052, 0x3053,0x3099,0x3054,
    0x3055,0x3099,0x3056, 0x3057,0x3099,0x3058, 0x3059,0x3099,0x305A, 0x305B,0x3099,0x305C, 0x305D,0x3099,0x305E, 0x305F,0x3099,0x3060,
    0x3061,0x3099,0x3062, 0x3064,0x3099,0x3065, 0x3066,0x3099,0x3067, 0x3068,0x3099,0x3069, 0x306F,0x3099,0x3070, 0x306F,0x309A,0x3071,
    0x3072,0x3099,0x3073, 0x3072,0x309A,0x3074, 0x3075,0x3099,0x3076, 0x3075,0x309A,0x3077, 0x3078,0x3099,0x3079, 0x3078,0x309A,0x307A,
    0x307B,0x3099,0x307C, 0x307B,0x309A,0x307D, 0x309D,0x3099,0x309E, 0x30A6,0x3099,0x30F4, 0x30AB,0x3099,0x30AC, 0x30AD,0x3099,0x30AE,
    0x30AF,0x3099,0x30B0, 0x30B1,0x3099,0x30B2, 0x30B3,0x3099,0x30B4, 0x30B5,0x3099,0x30B6, 0x30B7,0x3099,0x30B8, 0x30B9,0x3099,0x30BA,
    0x30BB,0x3099,0x30BC, 0x30BD,0x3099,0x30BE, 0x30BF,0x3099,0x30C0, 0x30C1,0x3099,0x30C2, 0x30C4,0x3099,0x30C5, 0x30C6,0x3099,0x30C7,
    0x30C8,0x3099,0x30C9, 0x30CF,0x3099,0x30D0, 0x30CF,0x309A,0x30D1, 0x30D2,0x3099,0x30D3, 0x30D2,0x309A,0x30D4, 0x30D5,0x3099,0x30D6,
    0x30D5,0x309A,0x30D7, 0x30D8,0x3099,0x30D9, 0x30D8,0x309A,0x30DA, 0x30DB,0x3099,0x30DC, 0x30DB,0x309A,0x30DD, 0x30EF,0x3099,0x30F7,
    0x30F0,0x3099,0x30F8, 0x30F1,0x3099,0x30F9, 0x30F2,0x3099,0x30FA, 0x30FD,0x3099,0x30FE, 0x11099,0x110BA,0x1109A, 0x1109B,0x110BA,0x1109C,
    0x110A5,0x110BA,0x110AB, 0x11131,0x11127,0x1112E, 0x11132,0x11127,0x1112F, 0x11347,0x1133E,0x1134B, 0x11347,0x11357,0x1134C, 0x114B9,0x114B0,0x114BC,
    0x114B9,0x114BA,0x114BB, 0x114B9,0x114BD,0x114BE, 0x115B8,0x115AF,0x115BA, 0x115B9,0x115AF,0x115BB,
};

enum { HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7, HANGUL_NL = 19, HANGUL_NV = 21, HANGUL_NT = 28,
       HANGUL_NS = HANGUL_NL * HANGUL_NV * HANGUL_NT };
#define NFC_RAW_BYTE 0x110000u  // + b: a byte of invalid UTF-8, kept as it is (class 0, never composed)

static int unicode_ccc_of(uint32_t cp) {
    if (cp < 0x300) return 0;
    size_t lo = 0, hi = sizeof(unicode_ccc) / sizeof(unicode_ccc[0]) / 3;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < unicode_ccc[3 * mid]) hi = mid;
        else if (cp > unicode_ccc[3 * mid + 1]) lo = mid + 1;
        else return (int)unicode_ccc[3 * mid + 2];
    }
    return 0;
}
// the entry of table t (n triples) whose first (and, if two, second) value is key; NULL if none
static const uint32_t *unicode_find3(const uint32_t *t, size_t n, uint32_t k1, uint32_t k2, int two) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *e = t + 3 * mid;
        if (k1 < e[0] || (k1 == e[0] && two && k2 < e[1])) hi = mid;
        else if (k1 > e[0] || (two && k2 > e[1])) lo = mid + 1;
        else return e;
    }
    return NULL;
}
// append the full canonical decomposition of cp to buf[*n..]
static void unicode_decompose(uint32_t cp, uint32_t **buf, size_t *n, size_t *cap) {
    if (*n + 4 > *cap) { *cap = 2 * *cap + 64; *buf = (uint32_t *)realloc_check(*buf, *cap * sizeof(uint32_t)); }
    if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_NS) {
        uint32_t s = cp - HANGUL_S;
        (*buf)[(*n)++] = HANGUL_L + s / (HANGUL_NV * HANGUL_NT);
        (*buf)[(*n)++] = HANGUL_V + s % (HANGUL_NV * HANGUL_NT) / HANGUL_NT;
        if (s % HANGUL_NT) (*buf)[(*n)++] = HANGUL_T + s % HANGUL_NT;
        return;
    }
    const uint32_t *e = cp >= 0xC0 && cp < NFC_RAW_BYTE ? unicode_find3(unicode_decomp, sizeof(unicode_decomp) / sizeof(unicode_decomp[0]) / 3, cp, 0, 0) : NULL;
    if (!e) { (*buf)[(*n)++] = cp; return; }
    unicode_decompose(e[1], buf, n, cap);
    if (e[2]) unicode_decompose(e[2], buf, n, cap);
}
static uint32_t unicode_compose(uint32_t a, uint32_t b) { // the primary composite of a + b, or 0
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_NL && b >= HANGUL_V && b < HANGUL_V + HANGUL_NV)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_NV + (b - HANGUL_V)) * HANGUL_NT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_NS && (a - HANGUL_S) % HANGUL_NT == 0 && b > HANGUL_T && b < HANGUL_T + HANGUL_NT)
        return a + (b - HANGUL_T);
    const uint32_t *e = b >= 0x300 && b < NFC_RAW_BYTE ? unicode_find3(unicode_comp, sizeof(unicode_comp) / sizeof(unicode_comp[0]) / 3, a, b, 1) : NULL;
    return e ? e[2] : 0;
}
// NFC (compose = 1) or NFD of s[0..n), appended to out. No character below U+0300 is ever the
// second of a composite or has a nonzero class, so the text is normalized in stretches that start
// at such a character; a stretch of one character below U+0300 (for NFD: below U+00C0, the first
// that decomposes) is left as it is.
static void unicode_normalize(StrBuf *out, const char *s, size_t n, int compose) {
    uint32_t *buf = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_decode(s + i, n - i, &cp), end = i + len;
        if ((compose ? cp < 0x300 : cp < 0xC0) && (end == n || (unsigned char)s[end] < 0xCC)) { sb_putn(out, s + i, len); i = end; continue; }
        size_t m = 0;
        for (;;) { // decompose the stretch s[i..end)
            unicode_decompose(cp == UC_INVALID ? NFC_RAW_BYTE + (unsigned char)s[end - len] : cp, &buf, &m, &cap);
            if (end == n) break;
            len = utf8_decode(s + end, n - end, &cp);
            if (cp < 0x300) break;
            end += len;
        }
        for (size_t k = 1; k < m; k++) { // canonical order: insertion sort of each run of nonzero classes
            int c = unicode_ccc_of(buf[k]);
            for (size_t j = k; c && j > 0 && unicode_ccc_of(buf[j - 1]) > c; j--) { uint32_t x = buf[j]; buf[j] = buf[j - 1]; buf[j - 1] = x; }
        }
        if (compose) {
            size_t starter = unicode_ccc_of(buf[0]) ? SIZE_MAX : 0, k = 1; // SIZE_MAX: no starter yet
            int last = unicode_ccc_of(buf[0]);
            for (size_t j = 1; j < m; j++) {
                int c = unicode_ccc_of(buf[j]);
                uint32_t x = starter != SIZE_MAX && (last < c || last == 0) ? unicode_compose(buf[starter], buf[j]) : 0;
                if (x) { buf[starter] = x; continue; }
                if (c == 0) starter = k;
                last = c;
                buf[k++] = buf[j];
            }
            m = k;
        }
        for (size_t k = 0; k < m; k++) {
            char ch[4];
            if (buf[k] >= NFC_RAW_BYTE) { ch[0] = (char)(buf[k] - NFC_RAW_BYTE); sb_putn(out, ch, 1); }
            else sb_putn(out, ch, (size_t)utf8_encode(ch, buf[k]));
        }
        i = end;
    }
    free(buf);
}

// ----------------------------------------------------------------------------
// tokenizer: the pre-tokenizer regexes, matched by hand. Each returns the length of the match at s[i]
// (>= 1: the patterns match every character), trying the alternatives in order as a
// backtracking regex engine (Oniguruma, used by Hugging Face) does.

// 's|'t|'re|'ve|'m|'ll|'d after the apostrophe at s[i-1]; with ignore_case also their capitals
// (and U+017F LONG S, which case-folds to s). Returns the length after the apostrophe, or 0.
static size_t match_contraction(const char *s, size_t n, size_t i, int ignore_case) {
    static const char *const suffixes[] = { "s", "t", "re", "ve", "m", "ll", "d" };
    for (int k = 0; k < 7; k++) {
        size_t len = strlen(suffixes[k]), j = 0;
        while (j < len && i + j < n && (s[i + j] == suffixes[k][j] || (ignore_case && s[i + j] == suffixes[k][j] - 32))) j++;
        if (j == len) return len;
    }
    if (ignore_case && n - i >= 2 && (unsigned char)s[i] == 0xC5 && (unsigned char)s[i + 1] == 0xBF) return 2;
    return 0;
}

// the length of the run of characters at s[i..n) whose class is in `want` (want == 0: in no class)
static size_t match_run(const char *s, size_t n, size_t i, int want, size_t max_chars) {
    size_t j = i, len;
    for (size_t count = 0; j < n && count < max_chars; count++) {
        int c = class_at(s, n, j, &len);
        if (want ? !(c & want) : c != 0) break;
        j += len;
    }
    return j - i;
}

// at a \s character: \s*[\r\n]+ (only if newline_rule) | \s+(?!\S) | \s+
static size_t match_spaces(const char *s, size_t n, size_t i, int newline_rule) {
    size_t j = i, last = i, len, after_newline = 0;
    while (j < n && (class_at(s, n, j, &len) & UC_SPACE)) {
        if (s[j] == '\r' || s[j] == '\n') after_newline = j + 1;
        last = j;
        j += len;
    }
    if (newline_rule && after_newline) return after_newline - i; // \s* backs off to the last newline
    if (j == n || last == i) return j - i;                       // \s+ (at the end of the text: (?!\S) holds)
    return last - i;                                             // \s+(?!\S): leave one space to the next word
}

// Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// Qwen2: the same with \p{N} in place of \p{N}{1,3} (max_digits 1)
static size_t match_llama3(const char *s, size_t n, size_t i, size_t max_digits) {
    size_t len, len2, m;
    int c = class_at(s, n, i, &len);
    if (s[i] == '\'' && (m = match_contraction(s, n, i + 1, 1))) return 1 + m;
    if (c & UC_LETTER) return match_run(s, n, i, UC_LETTER, SIZE_MAX);
    if (s[i] != '\r' && s[i] != '\n' && !(c & UC_NUMBER) && i + len < n && (class_at(s, n, i + len, &len2) & UC_LETTER))
        return len + match_run(s, n, i + len, UC_LETTER, SIZE_MAX);
    if (c & UC_NUMBER) return match_run(s, n, i, UC_NUMBER, max_digits);
    size_t j = i + (s[i] == ' ');
    if ((m = match_run(s, n, j, 0, SIZE_MAX)) > 0) {
        for (j += m; j < n && (s[j] == '\r' || s[j] == '\n'); j++) {}
        return j - i;
    }
    return match_spaces(s, n, i, 1);
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
static size_t match_gpt2(const char *s, size_t n, size_t i) {
    size_t len, m;
    if (s[i] == '\'' && (m = match_contraction(s, n, i + 1, 0))) return 1 + m;
    size_t j = i + (s[i] == ' ');
    if (j < n) {
        int c = class_at(s, n, j, &len);
        if (c & UC_LETTER) return j - i + match_run(s, n, j, UC_LETTER, SIZE_MAX);
        if (c & UC_NUMBER) return j - i + match_run(s, n, j, UC_NUMBER, SIZE_MAX);
        if (c == 0) return j - i + match_run(s, n, j, 0, SIZE_MAX);
    }
    return match_spaces(s, n, i, 0);
}

static size_t pretok_match(int pattern, const char *s, size_t n, size_t i) {
    if (pattern == PAT_GPT2) return match_gpt2(s, n, i);
    return match_llama3(s, n, i, pattern == PAT_LLAMA3 ? 3 : 1);
}

// ----------------------------------------------------------------------------
// tokenizer: vocabulary and merge tables

static uint32_t tok_hash(const char *s, size_t n) { // FNV-1a
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 16777619u; }
    return h;
}
static int tok_lookup(const Tokenizer *t, const char *s, size_t n) { // id of the piece s[0..n), or -1
    for (size_t i = tok_hash(s, n) & t->lookup_mask;; i = (i + 1) & t->lookup_mask) {
        int id = t->lookup[i];
        if (id < 0) return -1;
        if ((size_t)t->piece_len[id] == n && memcmp(t->pieces[id], s, n) == 0) return id;
    }
}
static void tok_lookup_insert(Tokenizer *t, int id) { // a duplicate piece keeps its first id
    if (tok_lookup(t, t->pieces[id], (size_t)t->piece_len[id]) >= 0) return;
    size_t i = tok_hash(t->pieces[id], (size_t)t->piece_len[id]) & t->lookup_mask;
    while (t->lookup[i] >= 0) i = (i + 1) & t->lookup_mask;
    t->lookup[i] = id;
}

static size_t tok_pair_hash(int left, int right) {
    uint64_t k = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) * 0x9E3779B97F4A7C15ull;
    return (size_t)(k >> 32);
}
static const TokMerge *tok_merge_find(const Tokenizer *t, int left, int right) {
    for (size_t i = tok_pair_hash(left, right) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const TokMerge *m = &t->merges[i];
        if (m->left < 0) return NULL;
        if (m->left == left && m->right == right) return m;
    }
}
// Build the merge table from list[0..n); a pair listed twice keeps its last entry (as HF does).
static void tok_build_merges(Tokenizer *t, const TokMerge *list, int n) {
    size_t size = 16;
    while (size < 2 * (size_t)n) size *= 2;
    t->merges = (TokMerge *)malloc_check(size * sizeof(TokMerge));
    for (size_t i = 0; i < size; i++) t->merges[i].left = -1;
    t->merge_mask = size - 1;
    for (int k = 0; k < n; k++) {
        size_t i = tok_pair_hash(list[k].left, list[k].right) & t->merge_mask;
        while (t->merges[i].left >= 0 && !(t->merges[i].left == list[k].left && t->merges[i].right == list[k].right))
            i = (i + 1) & t->merge_mask;
        t->merges[i] = list[k];
    }
}

// 1 if text may be cut before every run of spaces (" " in tokenizer.bin, "▁" in tokenizer.json) and
// merged word by word: no merge result has a space right after another character, so no merge
// crosses such a cut, and the space is a piece of its own (never an unknown piece fused across).
static int tok_words_independent(const Tokenizer *t, const char *space) {
    size_t sl = strlen(space);
    if (tok_lookup(t, space, sl) < 0) return 0;
    for (size_t i = 0; i <= t->merge_mask; i++) {
        const TokMerge *m = &t->merges[i];
        if (m->left < 0) continue;
        const char *p = t->pieces[m->id];
        for (size_t k = 1; k + sl <= (size_t)t->piece_len[m->id]; k++)
            if (!memcmp(p + k, space, sl) && !(k >= sl && !memcmp(p + k - sl, space, sl))) return 0;
    }
    return 1;
}

// Allocate the per-id arrays and the piece storage; every id starts unused.
static void tok_alloc(Tokenizer *t, int vocab_size, size_t arena_bytes) {
    t->vocab_size = vocab_size;
    t->pieces = (char **)calloc_check((size_t)vocab_size, sizeof(char *));
    t->piece_len = (int *)calloc_check((size_t)vocab_size, sizeof(int));
    t->attr = (unsigned char *)calloc_check((size_t)vocab_size, 1);
    t->arena = (char *)malloc_check(arena_bytes);
    size_t size = 16;
    while (size < 2 * (size_t)vocab_size) size *= 2;
    t->lookup = (int *)malloc_check(size * sizeof(int));
    for (size_t i = 0; i < size; i++) t->lookup[i] = -1;
    t->lookup_mask = size - 1;
}
static void tok_set_piece(Tokenizer *t, int id, const char *s, size_t n, size_t *arena_used) {
    t->pieces[id] = t->arena + *arena_used;
    memcpy(t->pieces[id], s, n);
    t->pieces[id][n] = 0;
    t->piece_len[id] = (int)n;
    *arena_used += n + 1;
}
// the byte fallback pieces "<0x00>".."<0xFF>" (uppercase hex, as sentencepiece writes them)
static void tok_find_byte_pieces(Tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof(name), "<0x%02X>", b);
        t->byte_id[b] = tok_lookup(t, name, 6);
        if (t->byte_id[b] >= 0) t->attr[t->byte_id[b]] = PIECE_BYTE;
    }
}

// the added token sets: tokens are appended, then added_set_index builds the lookup
static void added_set_add(TokAddedSet *a, int id, const char *s, size_t n, int flags) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 16;
        a->id = (int *)realloc_check(a->id, (size_t)a->cap * sizeof(int));
        a->len = (int *)realloc_check(a->len, (size_t)a->cap * sizeof(int));
        a->flags = (int *)realloc_check(a->flags, (size_t)a->cap * sizeof(int));
        a->text = (char **)realloc_check(a->text, (size_t)a->cap * sizeof(char *));
    }
    a->text[a->n] = (char *)malloc_check(n + 1);
    memcpy(a->text[a->n], s, n);
    a->text[a->n][n] = 0;
    a->id[a->n] = id; a->len[a->n] = (int)n; a->flags[a->n] = flags;
    a->n++;
}
static int added_set_find(const TokAddedSet *a, const char *s, size_t n, uint32_t hash) { // index of the token s[0..n) (hash: its tok_hash), or -1
    if (!a->slot) return -1;
    for (size_t i = hash & a->mask;; i = (i + 1) & a->mask) {
        int k = a->slot[i];
        if (k < 0) return -1;
        if ((size_t)a->len[k] == n && !memcmp(a->text[k], s, n)) return k;
    }
}
// a text listed twice keeps its last entry (as HF's map of added tokens does)
static void added_set_index(TokAddedSet *a) {
    size_t size = 16;
    while (size < 2 * (size_t)a->n) size *= 2;
    a->slot = (int *)malloc_check(size * sizeof(int));
    for (size_t i = 0; i < size; i++) a->slot[i] = -1;
    a->mask = size - 1;
    for (int k = 0; k < a->n; k++) if (a->len[k] > a->max_len) a->max_len = a->len[k];
    a->has_len = (unsigned char *)calloc_check((size_t)a->max_len + 1, 1);
    for (int k = 0; k < a->n; k++) {
        size_t n = (size_t)a->len[k], i = tok_hash(a->text[k], n) & a->mask; // (the hash match_added computes)
        while (a->slot[i] >= 0 && !((size_t)a->len[a->slot[i]] == n && !memcmp(a->text[a->slot[i]], a->text[k], n))) i = (i + 1) & a->mask;
        a->slot[i] = k;
        a->first[(unsigned char)a->text[k][0]] = 1;
        a->has_len[a->len[k]] = 1;
    }
}
static void added_set_free(TokAddedSet *a) {
    for (int k = 0; k < a->n; k++) free(a->text[k]);
    free(a->id); free(a->len); free(a->flags); free(a->text); free(a->slot); free(a->has_len);
    memset(a, 0, sizeof(*a));
}

static void tokenizer_free(Tokenizer *t) {
    free(t->pieces); free(t->piece_len); free(t->attr); free(t->arena);
    free(t->lookup); free(t->merges); free(t->path);
    added_set_free(&t->added[0]); added_set_free(&t->added[1]);
    for (int i = 0; i < t->n_norm; i++) { free(t->norm[i].a); free(t->norm[i].b); }
    for (int i = 0; i < t->n_pre; i++) { free(t->pre[i].a); free(t->pre[i].b); }
    memset(t, 0, sizeof(*t));
}

// ----------------------------------------------------------------------------
// tokenizer: loading llama2.c's tokenizer.bin

#define TOK_ADDED_SCORE -1e30f
static int tokenizer_load_bin(Tokenizer *t, const char *path, int model_vocab_size) {
    size_t size;
    char *buf = read_file(path, &size, (size_t)1 << 30);
    if (!buf) return -1;
    int32_t max_len;
    if (size < 4) { free(buf); return set_error(path, "too short for a llama2.c tokenizer.bin (%zu bytes)", size); }
    memcpy(&max_len, buf, 4); le_swap(&max_len, 4, 1);
    if (max_len <= 0 || max_len > (1 << 20)) { free(buf); return set_error(path, "max_token_length %d is not in 1..%d", (int)max_len, 1 << 20); }
    // first pass: count and check the entries (float score, int32 length, bytes) up to the end of the file
    int count = 0;
    for (size_t off = 4; off < size; count++) {
        float score;
        int32_t len;
        if (size - off < 8) { free(buf); return set_error(path, "piece %d: truncated (%zu bytes left, need 8 for score and length)", count, size - off); }
        memcpy(&score, buf + off, 4); le_swap(&score, 4, 1);
        memcpy(&len, buf + off + 4, 4); le_swap(&len, 4, 1);
        if (!isfinite(score)) { free(buf); return set_error(path, "piece %d: score is not finite", count); }
        if (len < 0 || len > max_len) { free(buf); return set_error(path, "piece %d: length %d is not in 0..max_token_length (%d)", count, (int)len, (int)max_len); }
        if ((size_t)len > size - off - 8) { free(buf); return set_error(path, "piece %d: its %d bytes run past the end of the file", count, (int)len); }
        if (count >= TOK_MAX_VOCAB) { free(buf); return set_error(path, "more than %d pieces", TOK_MAX_VOCAB); }
        off += 8 + (size_t)len;
    }
    if (count == 0) { free(buf); return set_error(path, "no pieces"); }
    if (model_vocab_size > 0 && count > model_vocab_size) {
        free(buf);
        return set_error(path, "has %d pieces but the model's vocabulary has %d", count, model_vocab_size);
    }
    t->kind = TOK_LLAMA2C;
    tok_alloc(t, count, size);
    float *scores = (float *)malloc_check((size_t)count * sizeof(float));
    size_t off = 4, used = 0;
    for (int id = 0; id < count; id++) {
        int32_t len;
        memcpy(&scores[id], buf + off, 4); le_swap(&scores[id], 4, 1);
        memcpy(&len, buf + off + 4, 4); le_swap(&len, 4, 1);
        tok_set_piece(t, id, buf + off + 8, (size_t)len, &used);
        off += 8 + (size_t)len;
        const char *p = t->pieces[id];
        if (!strcmp(p, "<unk>") || !strcmp(p, "\n<s>\n") || !strcmp(p, "\n</s>\n")) t->attr[id] = PIECE_CONTROL;
        tok_lookup_insert(t, id);
    }
    free(buf);
    // special tokens added by peft.c (train --new-special-tokens) carry the score TOK_ADDED_SCORE: they are
    // matched whole in the text, like a tokenizer.json's added special tokens, and never merged
    for (int id = 0; id < count; id++)
        if (scores[id] <= TOK_ADDED_SCORE && t->piece_len[id] > 0) {
            t->attr[id] = PIECE_CONTROL;
            added_set_add(&t->added[0], id, t->pieces[id], (size_t)t->piece_len[id], 0);
        }
    added_set_index(&t->added[0]);
    tok_find_byte_pieces(t);
    t->unk_id = tok_lookup(t, "<unk>", 5);
    t->bos_id = tok_lookup(t, "\n<s>\n", 5);
    t->eos_id = tok_lookup(t, "\n</s>\n", 6);
    if (t->bos_id < 0 && count > 2) t->bos_id = 1; // llama2.c's fixed ids
    if (t->eos_id < 0 && count > 2) t->eos_id = 2;
    t->strip_space = 1;
    // The merges run.c can make: every split of a piece into two pieces. Control and byte pieces are
    // never merge results (sentencepiece's rule; run.c could merge the text "<0x0A>" into a newline),
    // and run.c's best score starts at -1e10, so a pair scored at or below that never merges.
    int n = 0, cap = 1024;
    TokMerge *list = (TokMerge *)malloc_check((size_t)cap * sizeof(TokMerge));
    for (int id = 0; id < count; id++) {
        if (t->attr[id] != PIECE_TEXT || scores[id] <= -1e10f) continue;
        for (int k = 1; k < t->piece_len[id]; k++) {
            int left = tok_lookup(t, t->pieces[id], (size_t)k);
            int right = tok_lookup(t, t->pieces[id] + k, (size_t)(t->piece_len[id] - k));
            if (left < 0 || right < 0) continue;
            if (n == cap) { cap *= 2; list = (TokMerge *)realloc_check(list, (size_t)cap * sizeof(TokMerge)); }
            TokMerge m = { left, right, id, scores[id] };
            list[n++] = m;
        }
    }
    tok_build_merges(t, list, n);
    free(list);
    free(scores);
    t->split_words = tok_words_independent(t, " ");
    return 0;
}

// ----------------------------------------------------------------------------
// tokenizer: loading a Hugging Face tokenizer.json

static int tok_add_step(Tokenizer *t, int is_norm, const char *path, int op, const char *a, const char *b, int x, int y, int z) {
    TokStep *steps = is_norm ? t->norm : t->pre;
    int *n = is_norm ? &t->n_norm : &t->n_pre;
    if (*n == TOK_MAX_STEPS) return set_error(path, "more than %d %s steps", TOK_MAX_STEPS, is_norm ? "normalizer" : "pre-tokenizer");
    TokStep s = { op, a ? strdup_check(a) : NULL, b ? strdup_check(b) : NULL, x, y, z };
    steps[(*n)++] = s;
    return 0;
}

// the exact pattern strings of the Split pre-tokenizers we implement
static const char *const tok_pattern_llama3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const tok_pattern_qwen2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const tok_pattern_gpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// normalizer: null, Sequence, Prepend, Replace (a String pattern), NFC, NFD, Strip
static int tok_parse_normalizer(Tokenizer *t, const Json *j, const char *path) {
    if (!j || j->type == JSON_NULL) return 0;
    const char *type = json_str(json_get(j, "type"));
    if (!type) return set_error(path, "normalizer has no \"type\"");
    if (!strcmp(type, "Sequence")) {
        const Json *list = json_get(j, "normalizers");
        if (!list || list->type != JSON_ARRAY) return set_error(path, "Sequence normalizer needs a \"normalizers\" array");
        for (int i = 0; i < list->n; i++) if (tok_parse_normalizer(t, &list->items[i], path)) return -1;
        return 0;
    }
    if (!strcmp(type, "Prepend")) {
        const char *p = json_str(json_get(j, "prepend"));
        if (!p) return set_error(path, "Prepend normalizer needs a \"prepend\" string");
        return tok_add_step(t, 1, path, STEP_PREPEND, p, NULL, 0, 0, 0);
    }
    if (!strcmp(type, "Replace")) {
        const Json *pattern = json_get(j, "pattern");
        const char *pat = json_str(json_get(pattern, "String")), *content = json_str(json_get(j, "content"));
        if (json_get(pattern, "Regex")) return set_error(path, "unsupported normalizer Replace pattern Regex \"%.60s\" (only a String pattern)", json_str(json_get(pattern, "Regex")) ? json_str(json_get(pattern, "Regex")) : "");
        if (!pat || !*pat || !content) return set_error(path, "unsupported normalizer Replace (only a non-empty \"String\" pattern and a \"content\" string)");
        return tok_add_step(t, 1, path, STEP_REPLACE, pat, content, 0, 0, 0);
    }
    if (!strcmp(type, "NFC") || !strcmp(type, "NFD")) return tok_add_step(t, 1, path, type[2] == 'C' ? STEP_NFC : STEP_NFD, NULL, NULL, 0, 0, 0);
    if (!strcmp(type, "Strip"))
        return tok_add_step(t, 1, path, STEP_STRIP, NULL, NULL, json_bool_or(j, "strip_left", 1), json_bool_or(j, "strip_right", 1), 0);
    return set_error(path, "unsupported normalizer \"%s\" (peft.c has NFC, NFD, Replace, Prepend, Strip, Sequence)", type);
}

// the character that ends at s[i] (i >= 1): its length; a stray byte is one invalid character
static size_t utf8_decode_before(const char *s, size_t i, uint32_t *cp) {
    size_t b = i - 1;
    while (b > 0 && i - b < 4 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
    if (utf8_decode(s + b, i - b, cp) == i - b) return i - b;
    return utf8_decode(s + i - 1, 1, cp);
}

// the normalizer's steps on s[0..n), into out (tmp: scratch)
static void tok_normalize(const Tokenizer *t, const char *s, size_t n, StrBuf *out, StrBuf *tmp) {
    out->n = 0;
    sb_putn(out, s, n);
    for (int i = 0; i < t->n_norm; i++) {
        const TokStep *st = &t->norm[i];
        tmp->n = 0;
        sb_putn(tmp, "", 0);
        if (st->op == STEP_PREPEND) {
            if (out->n == 0) continue;
            sb_puts(tmp, st->a);
            sb_putn(tmp, out->s, out->n);
        } else if (st->op == STEP_REPLACE) { // every occurrence, left to right
            size_t pl = strlen(st->a);
            for (size_t j = 0; j < out->n;) {
                size_t k = j + 1; // (a stretch without the pattern's first byte at once)
                if (out->n - j >= pl && !memcmp(out->s + j, st->a, pl)) { sb_puts(tmp, st->b); j += pl; continue; }
                while (k < out->n && out->s[k] != st->a[0]) k++;
                sb_putn(tmp, out->s + j, k - j);
                j = k;
            }
        } else if (st->op == STEP_STRIP) { // White_Space off the left (x) and the right (y) end
            size_t b = 0, e = out->n, len;
            uint32_t cp;
            while (st->x && b < e && (class_at(out->s, e, b, &len) & UC_SPACE)) b += len;
            while (st->y && e > b && (len = utf8_decode_before(out->s, e, &cp)) <= e - b && (unicode_class(cp) & UC_SPACE)) e -= len;
            sb_putn(tmp, out->s + b, e - b);
        } else { // STEP_NFC, STEP_NFD
            unicode_normalize(tmp, out->s, out->n, st->op == STEP_NFC);
        }
        StrBuf swap = *out; *out = *tmp; *tmp = swap;
    }
}

// pre-tokenizer: null, Sequence, Metaspace, ByteLevel, Split (a String, or the Llama 3, Qwen2 or GPT-2 regex), Digits
static int tok_parse_pretokenizer(Tokenizer *t, const Json *j, const char *path) {
    if (!j || j->type == JSON_NULL) return 0;
    const char *type = json_str(json_get(j, "type"));
    if (!type) return set_error(path, "pre_tokenizer has no \"type\"");
    if (!strcmp(type, "Sequence")) {
        const Json *list = json_get(j, "pretokenizers");
        if (!list || list->type != JSON_ARRAY) return set_error(path, "Sequence pre-tokenizer needs a \"pretokenizers\" array");
        for (int i = 0; i < list->n; i++) if (tok_parse_pretokenizer(t, &list->items[i], path)) return -1;
        return 0;
    }
    if (!strcmp(type, "Metaspace")) {
        const Json *r = json_get(j, "replacement");
        const char *repl = r ? json_str(r) : "\xE2\x96\x81", *scheme = json_str(json_get(j, "prepend_scheme"));
        if (!repl || !*repl) return set_error(path, "Metaspace pre-tokenizer needs a non-empty \"replacement\" string");
        int prepend = json_bool_or(j, "add_prefix_space", 1); // files before prepend_scheme existed
        if (scheme) {
            if (!strcmp(scheme, "never")) prepend = 0;
            else if (!strcmp(scheme, "always")) prepend = 1;
            else if (!strcmp(scheme, "first")) prepend = 2;
            else return set_error(path, "Metaspace prepend_scheme \"%s\" is not never, always or first", scheme);
        }
        return tok_add_step(t, 0, path, STEP_METASPACE, repl, NULL, prepend, json_bool_or(j, "split", 1), 0);
    }
    if (!strcmp(type, "ByteLevel"))
        return tok_add_step(t, 0, path, STEP_BYTELEVEL, NULL, NULL, json_bool_or(j, "add_prefix_space", 1), json_bool_or(j, "use_regex", 1), 0);
    if (!strcmp(type, "Digits"))
        return tok_add_step(t, 0, path, STEP_DIGITS, NULL, NULL, json_bool_or(j, "individual_digits", 0), 0, 0);
    if (!strcmp(type, "Split")) {
        static const char *const behaviors[] = { "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous" }; // SPLIT_*
        const Json *pat = json_get(j, "pattern");
        const char *re = json_str(json_get(pat, "Regex")), *str = json_str(json_get(pat, "String")), *behavior = json_str(json_get(j, "behavior"));
        int b = -1;
        for (int k = 0; k < 5; k++) if (behavior && !strcmp(behavior, behaviors[k])) b = k;
        if (b < 0) return set_error(path, "unsupported pre_tokenizer Split behavior \"%s\" (Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)", behavior ? behavior : "(none)");
        if (str && !*str) return set_error(path, "unsupported pre_tokenizer Split pattern: an empty String");
        int pattern = str ? PAT_STRING : !re ? -1 : !strcmp(re, tok_pattern_llama3) ? PAT_LLAMA3 : !strcmp(re, tok_pattern_qwen2) ? PAT_QWEN2 :
                      !strcmp(re, tok_pattern_gpt2) ? PAT_GPT2 : -1;
        if (pattern < 0 && re) return set_error(path, "unsupported pre_tokenizer Split pattern Regex \"%.60s\" (only a String, or the Llama 3, Qwen2 and GPT-2 regexes)", re);
        if (pattern < 0) return set_error(path, "unsupported pre_tokenizer Split pattern (a {\"String\": ...} or {\"Regex\": ...} object)");
        return tok_add_step(t, 0, path, STEP_SPLIT, str, NULL, pattern, b, json_bool_or(j, "invert", 0));
    }
    return set_error(path, "unsupported pre_tokenizer \"%s\" (peft.c has Split, ByteLevel, Metaspace, Digits, Sequence)", type);
}

// decoder: tokenizer_decode does the decoders of byte-level files (ByteLevel) and of sentencepiece-style
// ones ("▁" back to a space, <0xNN> pieces to bytes, the prepended space dropped): anything else is an error
static int tok_check_decoder(const Json *j, const char *path) {
    if (!j || j->type == JSON_NULL) return 0;
    const char *type = json_str(json_get(j, "type"));
    if (!type) return set_error(path, "decoder has no \"type\"");
    if (!strcmp(type, "Sequence")) {
        const Json *list = json_get(j, "decoders");
        if (!list || list->type != JSON_ARRAY) return set_error(path, "Sequence decoder needs a \"decoders\" array");
        for (int i = 0; i < list->n; i++) if (tok_check_decoder(&list->items[i], path)) return -1;
        return 0;
    }
    if (!strcmp(type, "ByteLevel") || !strcmp(type, "Metaspace") || !strcmp(type, "ByteFallback") || !strcmp(type, "Fuse")) return 0;
    const char *pat = json_str(json_get(json_get(j, "pattern"), "String")), *content = json_str(json_get(j, "content"));
    if (!strcmp(type, "Replace") && pat && content && !strcmp(pat, "\xE2\x96\x81") && !strcmp(content, " ")) return 0;
    if (!strcmp(type, "Strip") && content && !strcmp(content, " ") && json_num_or(j, "start", 0) <= 1 && json_num_or(j, "stop", 0) == 0) return 0;
    return set_error(path, "unsupported decoder \"%s\" (peft.c decodes ByteLevel, Metaspace, and Replace \"\xE2\x96\x81\" -> \" \", ByteFallback, Fuse, Strip of one leading space)", type);
}

// A merge is "left right" (one space) or ["left", "right"]; returns 0 and the two pieces.
static int tok_merge_strings(const Json *m, const char **a, size_t *alen, const char **b, size_t *blen) {
    if (m->type == JSON_ARRAY && m->n == 2 && m->items[0].type == JSON_STRING && m->items[1].type == JSON_STRING) {
        *a = m->items[0].str; *alen = m->items[0].len; *b = m->items[1].str; *blen = m->items[1].len;
        return 0;
    }
    if (m->type != JSON_STRING) return -1;
    const char *sp = memchr(m->str, ' ', m->len);
    if (!sp || memchr(sp + 1, ' ', m->len - (size_t)(sp + 1 - m->str))) return -1;
    *a = m->str; *alen = (size_t)(sp - m->str); *b = sp + 1; *blen = m->len - *alen - 1;
    return 0;
}

// id of an added token with this content, or -1
static int tok_find_added(const Tokenizer *t, const char *content) {
    for (int s = 0; s < 2; s++)
        for (int i = 0; content && i < t->added[s].n; i++) if (!strcmp(t->pieces[t->added[s].id[i]], content)) return t->added[s].id[i];
    return -1;
}

// bos/eos: tokenizer_config.json beside the file if it names them, else the token the
// post-processor puts first, else the usual names of added tokens
static int tok_bos_eos(Tokenizer *t, const Json *root, const char *path) {
    const Json *post = json_get(root, "post_processor");
    const Json *procs = json_get(post, "processors");
    for (int i = -1; i < (procs && procs->type == JSON_ARRAY ? procs->n : 0) && t->bos_id < 0; i++) {
        const Json *p = i < 0 ? post : &procs->items[i];
        const Json *single = json_get(p, "single");
        if (!single || single->type != JSON_ARRAY || single->n == 0) continue;
        const char *name = json_str(json_get(json_get(&single->items[0], "SpecialToken"), "id"));
        const Json *ids = json_get(json_get(json_get(p, "special_tokens"), name ? name : ""), "ids");
        if (ids && ids->type == JSON_ARRAY && ids->n > 0 && json_is_int(&ids->items[0]) && ids->items[0].num >= 0 && ids->items[0].num < t->vocab_size)
            t->bos_id = (int)ids->items[0].num;
    }
    if (t->bos_id < 0) t->bos_id = tok_find_added(t, "<s>");
    if (t->bos_id < 0) t->bos_id = tok_find_added(t, "<|begin_of_text|>");
    static const char *const eos_names[] = { "</s>", "<|end_of_text|>", "<|endoftext|>" };
    for (int i = 0; i < 3 && t->eos_id < 0; i++) t->eos_id = tok_find_added(t, eos_names[i]);

    char cfg[4096];
    const char *slash = strrchr(path, '/');
    snprintf(cfg, sizeof(cfg), "%.*stokenizer_config.json", slash ? (int)(slash - path + 1) : 0, path);
    if (!file_exists(cfg)) return 0;
    Json *c = json_load(cfg);
    if (!c) return -1;
    const char *keys[2] = { "bos_token", "eos_token" };
    int *ids[2] = { &t->bos_id, &t->eos_id };
    for (int k = 0; k < 2; k++) {
        const Json *v = json_get(c, keys[k]);
        if (v && v->type == JSON_OBJECT) v = json_get(v, "content");
        if (v && v->type == JSON_NULL) *ids[k] = -1;
        const char *s = json_str(v);
        int id = s ? tok_find_added(t, s) : -1;
        if (s && id < 0) id = tok_lookup(t, s, strlen(s));
        if (id >= 0) *ids[k] = id;
    }
    json_free(c);
    return 0;
}

static int tok_from_json(Tokenizer *t, const Json *root, const char *path, int model_vocab_size) {
    const Json *model = json_get(root, "model");
    if (!model || model->type != JSON_OBJECT) return set_error(path, "no \"model\" object (not a Hugging Face tokenizer.json?)");
    const char *type = json_str(json_get(model, "type"));
    const Json *vocab = json_get(model, "vocab"), *merges = json_get(model, "merges"), *added = json_get(root, "added_tokens");
    if (type ? strcmp(type, "BPE") != 0 : !merges) return set_error(path, "model type \"%s\" is not supported (only BPE)", type ? type : "(none)");
    if (!vocab || vocab->type != JSON_OBJECT) return set_error(path, "model.vocab must be an object {piece: id}");
    if (!merges || merges->type != JSON_ARRAY) return set_error(path, "model.merges must be an array");
    if (added && added->type != JSON_ARRAY && added->type != JSON_NULL) return set_error(path, "added_tokens must be an array");
    const Json *dropout = json_get(model, "dropout");
    if (dropout && dropout->type != JSON_NULL && !(json_is_num(dropout) && dropout->num == 0)) return set_error(path, "BPE dropout is not supported");
    const char *affix[2] = { "continuing_subword_prefix", "end_of_word_suffix" };
    for (int i = 0; i < 2; i++) {
        const Json *v = json_get(model, affix[i]);
        if (v && v->type != JSON_NULL && !(v->type == JSON_STRING && v->len == 0)) return set_error(path, "BPE %s is not supported", affix[i]);
    }
    // ids: model.vocab, then added_tokens (which may repeat vocab entries)
    int max_id = -1;
    size_t arena = 0;
    for (int i = 0; i < vocab->n; i++) {
        const Json *v = &vocab->items[i];
        if (!json_is_int(v) || v->num < 0 || v->num >= TOK_MAX_VOCAB) return set_error(path, "model.vocab[\"%s\"]: id must be an integer in 0..%d", vocab->keys[i], TOK_MAX_VOCAB - 1);
        if ((int)v->num > max_id) max_id = (int)v->num;
        arena += strlen(vocab->keys[i]) + 1;
    }
    for (int i = 0; added && i < added->n; i++) {
        const Json *id = json_get(&added->items[i], "id"), *content = json_get(&added->items[i], "content");
        if (!json_is_int(id) || id->num < 0 || id->num >= TOK_MAX_VOCAB || !content || content->type != JSON_STRING || content->len == 0)
            return set_error(path, "added_tokens[%d] needs an integer \"id\" in 0..%d and a non-empty \"content\" string", i, TOK_MAX_VOCAB - 1);
        if ((int)id->num > max_id) max_id = (int)id->num;
        arena += content->len + 1;
    }
    if (max_id < 0) return set_error(path, "empty vocabulary");
    if (model_vocab_size > 0 && max_id + 1 > model_vocab_size)
        return set_error(path, "has ids up to %d but the model's vocabulary has %d", max_id, model_vocab_size);
    tok_alloc(t, max_id + 1, arena);
    size_t used = 0;
    for (int i = 0; i < vocab->n; i++) {
        int id = (int)vocab->items[i].num;
        if (t->pieces[id]) return set_error(path, "id %d appears twice in model.vocab", id);
        tok_set_piece(t, id, vocab->keys[i], strlen(vocab->keys[i]), &used);
        tok_lookup_insert(t, id);
    }
    if (tok_parse_normalizer(t, json_get(root, "normalizer"), path) || tok_parse_pretokenizer(t, json_get(root, "pre_tokenizer"), path) ||
        tok_check_decoder(json_get(root, "decoder"), path)) return -1;
    // added tokens: those with "normalized" are found in the normalized text, by their content normalized
    StrBuf norm = { 0 }, tmp = { 0 };
    for (int i = 0; added && i < added->n; i++) {
        const Json *a = &added->items[i], *content = json_get(a, "content");
        int id = (int)json_get(a, "id")->num, special = json_bool_or(a, "special", 0);
        int flags = (json_bool_or(a, "lstrip", 0) ? ADDED_LSTRIP : 0) | (json_bool_or(a, "rstrip", 0) ? ADDED_RSTRIP : 0) |
                    (json_bool_or(a, "single_word", 0) ? ADDED_SINGLE_WORD : 0);
        if (!t->pieces[id]) { tok_set_piece(t, id, content->str, content->len, &used); t->attr[id] = special ? PIECE_CONTROL : PIECE_ADDED; }
        else if ((size_t)t->piece_len[id] != content->len || memcmp(t->pieces[id], content->str, content->len)) {
            free(norm.s); free(tmp.s);
            return set_error(path, "added_tokens[%d] \"%s\" has id %d, which is \"%s\" in model.vocab", i, content->str, id, t->pieces[id]);
        } else if (special) t->attr[id] = PIECE_CONTROL;
        if (json_bool_or(a, "normalized", !special)) {
            tok_normalize(t, content->str, content->len, &norm, &tmp);
            if (norm.n) added_set_add(&t->added[1], id, norm.s, norm.n, flags);
        } else {
            added_set_add(&t->added[0], id, content->str, content->len, flags);
        }
    }
    free(norm.s); free(tmp.s);
    added_set_index(&t->added[0]);
    added_set_index(&t->added[1]);
    // byte-level if a ByteLevel pre-tokenizer maps bytes to characters; otherwise sentencepiece-style,
    // where decoding drops the space that encoding prepends (Prepend normalizer, Metaspace)
    t->kind = TOK_SENTENCEPIECE;
    for (int i = 0; i < t->n_pre; i++) if (t->pre[i].op == STEP_BYTELEVEL) t->kind = TOK_BYTELEVEL;
    for (int i = 0; i < t->n_norm; i++) if (t->norm[i].op == STEP_PREPEND) t->strip_space = 1;
    for (int i = 0; i < t->n_pre; i++) if (t->pre[i].op == STEP_METASPACE && t->pre[i].x) t->strip_space = 1;
    if (t->kind == TOK_BYTELEVEL) t->strip_space = 0;
    t->byte_fallback = json_bool_or(model, "byte_fallback", 0);
    t->fuse_unk = json_bool_or(model, "fuse_unk", 0);
    t->ignore_merges = json_bool_or(model, "ignore_merges", 0);
    const Json *unk = json_get(model, "unk_token");
    t->unk_id = t->bos_id = t->eos_id = -1;
    if (unk && unk->type != JSON_NULL) {
        if (unk->type != JSON_STRING || (t->unk_id = tok_lookup(t, unk->str, unk->len)) < 0) return set_error(path, "model.unk_token is not in the vocabulary");
    }
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    if (t->kind == TOK_SENTENCEPIECE) tok_find_byte_pieces(t);
    for (int b = 0; b < 256; b++) {
        char ch[4];
        t->char_id[b] = tok_lookup(t, ch, (size_t)utf8_encode(ch, byte_to_unicode((unsigned char)b)));
    }
    // merges by rank: the i-th merge has priority -i (exact in a float below 2^24)
    if (merges->n >= TOK_MAX_VOCAB) return set_error(path, "more than %d merges", TOK_MAX_VOCAB);
    TokMerge *list = (TokMerge *)malloc_check((size_t)merges->n * sizeof(TokMerge));
    char *both = NULL;
    size_t both_cap = 0;
    int rc = 0;
    for (int i = 0; i < merges->n && !rc; i++) {
        const char *a, *b;
        size_t alen, blen;
        if (tok_merge_strings(&merges->items[i], &a, &alen, &b, &blen)) { rc = set_error(path, "model.merges[%d] is not \"left right\" or [\"left\", \"right\"]", i); break; }
        if (alen + blen + 1 > both_cap) { both_cap = 2 * (alen + blen + 1); both = (char *)realloc_check(both, both_cap); }
        memcpy(both, a, alen); memcpy(both + alen, b, blen); both[alen + blen] = 0;
        TokMerge m = { tok_lookup(t, a, alen), tok_lookup(t, b, blen), tok_lookup(t, both, alen + blen), -(float)i };
        if (m.left < 0 || m.right < 0 || m.id < 0)
            rc = set_error(path, "model.merges[%d]: \"%.*s\" is not in the vocabulary", i, (int)(m.left < 0 ? alen : m.right < 0 ? blen : alen + blen), m.left < 0 ? a : m.right < 0 ? b : both);
        list[i] = m;
    }
    if (!rc) tok_build_merges(t, list, merges->n);
    free(list); free(both);
    if (rc) return rc;
    t->split_words = t->kind == TOK_SENTENCEPIECE && tok_words_independent(t, "\xE2\x96\x81");
    return tok_bos_eos(t, root, path);
}

// Load a llama2.c tokenizer.bin or a Hugging Face tokenizer.json (chosen by the name's extension,
// else by a leading '{'); a folder means its tokenizer.json, else its tokenizer.bin. With
// model_vocab_size > 0, every id must be below it (a model may pad its vocabulary, so fewer is fine).
static int tokenizer_load(Tokenizer *t, const char *path, int model_vocab_size) {
    char file[4096];
    memset(t, 0, sizeof(*t));
    snprintf(file, sizeof(file), "%s", path);
    if (dir_exists(path)) {
        path_join(file, sizeof(file), path, "tokenizer.json");
        if (!file_exists(file)) path_join(file, sizeof(file), path, "tokenizer.bin");
    }
    size_t n = strlen(file);
    int json = n >= 5 && !strcmp(file + n - 5, ".json");
    if (!json && !(n >= 4 && !strcmp(file + n - 4, ".bin"))) {
        FILE *f = fopen(file, "rb");
        if (!f) return set_error(file, "cannot open: %s", strerror(errno));
        json = fgetc(f) == '{';
        fclose(f);
    }
    int rc;
    if (json) {
        Json *root = json_load(file);
        if (!root) return -1;
        rc = tok_from_json(t, root, file, model_vocab_size);
        json_free(root);
    } else {
        rc = tokenizer_load_bin(t, file, model_vocab_size);
    }
    if (rc) { tokenizer_free(t); return -1; }
    t->path = strdup_check(file);
    return 0;
}

// ----------------------------------------------------------------------------
// tokenizer: encoding

typedef struct { float prio; int pos, left, right, id; } TokPair; // candidate: merge the symbol at pos (= left) with its right neighbour (= right) into id
typedef struct { StrBuf text; size_t *end; int n, cap; } TokPieces; // piece i is text.s[end[i-1] .. end[i])
typedef struct {
    int *ids, *prev, *next;   // (cap) symbols of the word being merged, a doubly linked list
    TokPair *heap;            // (3 * cap) candidate pairs
    int cap;
    StrBuf norm, tmp;         // normalized text, scratch
    TokPieces pa, pb;         // pre-tokenizer pieces, before and after a step
} TokWork;
typedef struct { int *out; int n, cap; } TokOut; // counts every token, stores the first cap

static void tok_emit(TokOut *o, int id) { if (o->n < o->cap) o->out[o->n] = id; o->n++; }

static void tok_work_reserve(TokWork *w, size_t n) { // n <= TOK_MAX_TEXT + 1
    if (n <= (size_t)w->cap) return;
    w->cap = (int)n;
    w->ids = (int *)realloc_check(w->ids, n * sizeof(int));
    w->prev = (int *)realloc_check(w->prev, n * sizeof(int));
    w->next = (int *)realloc_check(w->next, n * sizeof(int));
    w->heap = (TokPair *)realloc_check(w->heap, 3 * n * sizeof(TokPair));
}
static void tok_work_free(TokWork *w) {
    free(w->ids); free(w->prev); free(w->next); free(w->heap);
    free(w->norm.s); free(w->tmp.s); free(w->pa.text.s); free(w->pa.end); free(w->pb.text.s); free(w->pb.end);
}

// the heap's order: higher priority first, then the leftmost position
static int tok_pair_before(const TokPair *a, const TokPair *b) { return a->prio > b->prio || (a->prio == b->prio && a->pos < b->pos); }
static void tok_heap_push(TokPair *h, int *n, TokPair p) {
    int i = (*n)++;
    for (; i > 0 && tok_pair_before(&p, &h[(i - 1) / 2]); i = (i - 1) / 2) h[i] = h[(i - 1) / 2];
    h[i] = p;
}
static TokPair tok_heap_pop(TokPair *h, int *n) {
    TokPair top = h[0], last = h[--*n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && tok_pair_before(&h[c + 1], &h[c])) c++;
        if (!tok_pair_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}
static void tok_push_pair(const Tokenizer *t, TokWork *w, int *nh, int pos, int left, int right) {
    const TokMerge *m = tok_merge_find(t, left, right);
    if (m) { TokPair p = { m->prio, pos, left, right, m->id }; tok_heap_push(w->heap, nh, p); }
}

// BPE: merge the adjacent pair of symbols w->ids[0..n) with the highest priority, leftmost on
// ties, until no pair merges. Returns the new count. A heap entry is stale once either of its
// symbols has changed (the left one merged or removed, or a new right neighbour): skip it.
static int bpe_merge_heap(const Tokenizer *t, TokWork *w, int n) {
    int *ids = w->ids, *prev = w->prev, *next = w->next, nh = 0;
    if (n < 2) return n;
    for (int i = 0; i < n; i++) { prev[i] = i - 1; next[i] = i + 1 < n ? i + 1 : -1; }
    for (int i = 0; i + 1 < n; i++) tok_push_pair(t, w, &nh, i, ids[i], ids[i + 1]);
    while (nh > 0) {
        TokPair p = tok_heap_pop(w->heap, &nh);
        int pos = p.pos, r = next[pos];
        if (ids[pos] != p.left || r < 0 || ids[r] != p.right) continue;
        ids[pos] = p.id;                    // the left symbol becomes the merged one,
        ids[r] = -1;                        // the right one leaves the list
        next[pos] = next[r];
        if (next[r] >= 0) prev[next[r]] = pos;
        if (prev[pos] >= 0) tok_push_pair(t, w, &nh, prev[pos], ids[prev[pos]], p.id);
        if (next[pos] >= 0) tok_push_pair(t, w, &nh, pos, p.id, ids[next[pos]]);
    }
    int m = 0;
    for (int i = 0; i >= 0; i = next[i]) ids[m++] = ids[i]; // symbol 0 is never removed
    return m;
}

// The same merges the obvious way (run.c's loop): rescan all pairs after every merge. O(n^2);
// kept as the reference that bpe_merge is tested against.
static int bpe_merge_naive(const Tokenizer *t, int *ids, int n) {
    for (;;) {
        int best = -1;
        const TokMerge *best_m = NULL;
        for (int i = 0; i + 1 < n; i++) {
            const TokMerge *m = tok_merge_find(t, ids[i], ids[i + 1]);
            if (m && (!best_m || m->prio > best_m->prio)) { best = i; best_m = m; }
        }
        if (best < 0) return n;
        ids[best] = best_m->id;
        memmove(ids + best + 1, ids + best + 2, (size_t)(n - best - 2) * sizeof(int));
        n--;
    }
}
// short words (most pre-tokenized pieces) merge faster the obvious way
static int bpe_merge(const Tokenizer *t, TokWork *w, int n) { return n <= 16 ? bpe_merge_naive(t, w->ids, n) : bpe_merge_heap(t, w, n); }

// a character that is not a piece becomes its byte pieces (or the unknown piece)
static int tok_add_char(const Tokenizer *t, int *ids, int n, const char *s, size_t len) {
    int id = tok_lookup(t, s, len);
    if (id >= 0) { ids[n++] = id; return n; }
    for (size_t i = 0; i < len; i++) {
        id = t->byte_id[(unsigned char)s[i]] >= 0 ? t->byte_id[(unsigned char)s[i]] : t->unk_id;
        if (id >= 0) ids[n++] = id;
    }
    return n;
}

// llama2.c's symbols before merging: the dummy prefix " " if asked, then characters grouped as
// run.c does (a byte and up to 3 continuation bytes after it; invalid UTF-8 falls back to bytes).
// ids has room for len + 1; returns the count.
static int llama2c_symbols(const Tokenizer *t, const char *text, size_t len, int dummy_prefix, int *ids) {
    int n = dummy_prefix ? tok_add_char(t, ids, 0, " ", 1) : 0;
    for (size_t i = 0, k; i < len; i += k) {
        for (k = 1; k < 4 && i + k < len && ((unsigned char)text[i + k] & 0xC0) == 0x80; k++) {}
        n = tok_add_char(t, ids, n, text + i, k);
    }
    return n;
}
// the end of the word starting at s[0]: before the next space that follows a non-space
// (the whole text unless split_words)
static size_t tok_word_end(const Tokenizer *t, const char *s, size_t n, const char *space, size_t sl) {
    if (!t->split_words) return n;
    for (size_t i = 1; i + sl <= n; i++)
        if (!memcmp(s + i, space, sl) && !(i >= sl && !memcmp(s + i - sl, space, sl))) return i;
    return n;
}
// first: the text starts the input (the dummy prefix space goes before it; not after an added token)
static void encode_llama2c(const Tokenizer *t, const char *text, size_t len, int first, TokWork *w, TokOut *o) {
    for (size_t start = 0, end; start < len; start = end) {
        end = start + tok_word_end(t, text + start, len - start, " ", 1);
        tok_work_reserve(w, end - start + 1);
        int n = bpe_merge(t, w, llama2c_symbols(t, text + start, end - start, start == 0 && first, w->ids));
        for (int i = 0; i < n; i++) tok_emit(o, w->ids[i]);
    }
}

// Hugging Face's BPE model on s[0..n): its characters (byte-level: its bytes, as their printable
// characters) as pieces; one missing from the vocab becomes byte pieces if byte_fallback, else
// the unknown piece (consecutive ones fused if fuse_unk), else nothing; then merges by rank.
static void bpe_chars(const Tokenizer *t, const char *s, size_t n, TokWork *w, TokOut *o) {
    int byte_level = t->kind == TOK_BYTELEVEL;
    tok_work_reserve(w, n + 1);
    int m = 0, unk_pending = 0;
    for (size_t i = 0, k; i < n; i += k) {
        uint32_t cp;
        int id;
        if (byte_level) { k = 1; id = t->char_id[(unsigned char)s[i]]; }
        else { k = utf8_decode(s + i, n - i, &cp); id = tok_lookup(t, s + i, k); }
        int all_bytes = t->byte_fallback;
        for (size_t b = 0; b < k && all_bytes; b++) all_bytes = t->byte_id[(unsigned char)s[i + b]] >= 0;
        if (id >= 0) {
            if (unk_pending) { w->ids[m++] = t->unk_id; unk_pending = 0; }
            w->ids[m++] = id;
        } else if (all_bytes) { // (a pending unknown piece stays pending here, as in HF)
            for (size_t b = 0; b < k; b++) w->ids[m++] = t->byte_id[(unsigned char)s[i + b]];
        } else if (t->unk_id >= 0) {
            if (unk_pending && !t->fuse_unk) w->ids[m++] = t->unk_id;
            unk_pending = 1;
        }
    }
    if (unk_pending) w->ids[m++] = t->unk_id;
    m = bpe_merge(t, w, m);
    for (int i = 0; i < m; i++) tok_emit(o, w->ids[i]);
}
// one pre-tokenized piece: with ignore_merges a piece that is in the vocab is one token
static void bpe_word(const Tokenizer *t, const char *s, size_t n, TokWork *w, TokOut *o) {
    if (t->ignore_merges) {
        const char *key = s;
        size_t klen = n;
        if (t->kind == TOK_BYTELEVEL) {
            w->tmp.n = 0;
            for (size_t i = 0; i < n; i++) { char ch[4]; sb_putn(&w->tmp, ch, (size_t)utf8_encode(ch, byte_to_unicode((unsigned char)s[i]))); }
            key = w->tmp.s; klen = w->tmp.n;
        }
        int id = tok_lookup(t, key, klen);
        if (id >= 0) { tok_emit(o, id); return; }
    }
    for (size_t start = 0, end; start < n; start = end) {
        end = start + tok_word_end(t, s + start, n - start, "\xE2\x96\x81", 3);
        bpe_chars(t, s + start, end - start, w, o);
    }
}

static void pieces_put(TokPieces *p, const char *s, size_t n) { sb_putn(&p->text, s, n); }
static void pieces_cut(TokPieces *p) { // end the current piece (pieces are never empty)
    if (p->text.n == (p->n ? p->end[p->n - 1] : 0)) return;
    if (p->n == p->cap) { p->cap = p->cap ? 2 * p->cap : 64; p->end = (size_t *)realloc_check(p->end, (size_t)p->cap * sizeof(size_t)); }
    p->end[p->n++] = p->text.n;
}

// Split: the text as stretches that alternately match the pattern or not (the regexes match
// everywhere, so theirs are all matches, one after another); invert swaps the two. Each stretch is
// a piece, except as the behavior says (HF's NormalizedString::split): Removed drops the matches,
// MergedWithPrevious / MergedWithNext join a match to the stretch before / after it when that one
// does not match, Contiguous joins neighbouring stretches that both match or both do not.
static void split_piece(int pattern, const char *str, int behavior, int invert, const char *s, size_t n, TokPieces *out) {
    size_t sl = str ? strlen(str) : 0;
    int prev = -1; // the stretch before: 1 a match, 0 not, -1 none
    for (size_t j = 0, m; j < n; j += m) {
        int match = 1;
        if (pattern != PAT_STRING) m = pretok_match(pattern, s, n, j);
        else if (n - j >= sl && !memcmp(s + j, str, sl)) m = sl;
        else { // up to the next occurrence
            for (m = 1; j + m < n && !(n - j - m >= sl && !memcmp(s + j + m, str, sl)); m++) {}
            match = 0;
        }
        match ^= invert;
        int join = prev >= 0 && ((behavior == SPLIT_CONTIGUOUS && match == prev) || (behavior == SPLIT_MERGED_PREV && match && !prev) ||
                                 (behavior == SPLIT_MERGED_NEXT && prev && !match));
        if (!join) pieces_cut(out);
        if (!(behavior == SPLIT_REMOVED && match)) pieces_put(out, s + j, m);
        prev = match;
    }
}

// one pre-tokenizer step: every piece of `in` becomes one or more pieces of `out`;
// at_start: in's first piece starts the text (Metaspace's prepend_scheme "first")
static void pretok_step(const TokStep *st, const TokPieces *in, TokPieces *out, StrBuf *tmp, int at_start) {
    out->text.n = 0;
    out->n = 0;
    for (int i = 0; i < in->n; i++) {
        size_t begin = i ? in->end[i - 1] : 0, n = in->end[i] - begin, len;
        const char *s = in->text.s + begin;
        if (st->op == STEP_METASPACE) {
            // spaces become the replacement, which is prepended unless there; split before each one
            size_t rl = strlen(st->a);
            int starts = s[0] == ' ' || (n >= rl && !memcmp(s, st->a, rl));
            if (!starts && (st->x == 1 || (st->x == 2 && at_start && i == 0))) pieces_put(out, st->a, rl);
            for (size_t j = 0; j < n; j++) {
                int is_repl = s[j] == ' ' || (n - j >= rl && !memcmp(s + j, st->a, rl));
                if (is_repl && st->y) pieces_cut(out);
                if (s[j] == ' ') pieces_put(out, st->a, rl);
                else if (is_repl) { pieces_put(out, s + j, rl); j += rl - 1; }
                else pieces_put(out, s + j, 1);
            }
        } else if (st->op == STEP_SPLIT || st->op == STEP_BYTELEVEL) {
            if (st->op == STEP_BYTELEVEL && st->x && s[0] != ' ') { // add_prefix_space
                tmp->n = 0;
                sb_putn(tmp, " ", 1);
                sb_putn(tmp, s, n);
                s = tmp->s; n = tmp->n;
            }
            if (st->op == STEP_BYTELEVEL && !st->y) pieces_put(out, s, n);
            else if (st->op == STEP_BYTELEVEL) split_piece(PAT_GPT2, NULL, SPLIT_ISOLATED, 0, s, n, out);
            else split_piece(st->x, st->a, st->y, st->z, s, n, out);
        } else if (st->op == STEP_DIGITS) {
            // numeric characters split off: each alone (individual_digits) or as runs
            int prev_num = 0;
            for (size_t j = 0; j < n; j += len) {
                int num = (class_at(s, n, j, &len) & UC_NUMBER) != 0;
                if (num != prev_num || (num && st->x)) pieces_cut(out);
                pieces_put(out, s + j, len);
                prev_num = num;
            }
        }
        pieces_cut(out);
    }
}

// pre-tokenizer and model on a stretch of normalized text without added tokens
static void encode_normalized(const Tokenizer *t, const char *s, size_t n, int at_start, TokWork *w, TokOut *o) {
    w->pa.text.n = 0;
    w->pa.n = 0;
    pieces_put(&w->pa, s, n);
    pieces_cut(&w->pa);
    for (int i = 0; i < t->n_pre; i++) {
        pretok_step(&t->pre[i], &w->pa, &w->pb, &w->tmp, at_start);
        TokPieces swap = w->pa; w->pa = w->pb; w->pb = swap;
    }
    for (int i = 0; i < w->pa.n; i++) {
        size_t begin = i ? w->pa.end[i - 1] : 0;
        bpe_word(t, w->pa.text.s + begin, w->pa.end[i] - begin, w, o);
    }
}

// the longest added token of set a at s[i..n): its index, or -1 (tok_hash of each prefix, one byte more at a time)
static int match_added(const TokAddedSet *a, const char *s, size_t n, size_t i) {
    if (!a->first[(unsigned char)s[i]]) return -1;
    uint32_t h = 2166136261u;
    int best = -1;
    for (size_t len = 1; len <= (size_t)a->max_len && len <= n - i; len++) {
        h = (h ^ (unsigned char)s[i + len - 1]) * 16777619u;
        int j = a->has_len[len] ? added_set_find(a, s + i, len, h) : -1;
        if (j >= 0) best = j;
    }
    return best;
}
// \w next to a single_word token: a letter, a number or '_' (Rust's \w, which HF uses, also has the
// marks, the other connector punctuation and the joiners, and of the numbers only Nd and Nl)
static int is_word_char(uint32_t cp) { return cp == '_' || (unicode_class(cp) & (UC_LETTER | UC_NUMBER)); }

typedef void (*TokTextFn)(const Tokenizer *t, const char *s, size_t n, int at_start, TokWork *w, TokOut *o);
// The added tokens of set a in s[0..n), as HF's AddedVocabulary::find_matches finds them: each
// match (leftmost, longest; the search goes on after it) is dropped if single_word and a word
// character touches it, takes the whitespace before it if lstrip (not past the previous token)
// and after it if rstrip. Emits the tokens, and the text between them through text().
static void encode_added(const Tokenizer *t, const TokAddedSet *a, const char *s, size_t n, int at_start, TokWork *w, TokOut *o, TokTextFn text) {
    size_t off = 0, len; // off: the end of the previous token
    uint32_t cp;
    for (size_t i = 0; a->n && i < n;) {
        int k = match_added(a, s, n, i);
        if (k < 0) { i++; continue; }
        size_t start = i, stop = i + (size_t)a->len[k];
        i = stop;
        if ((a->flags[k] & ADDED_SINGLE_WORD) && ((start > 0 && (utf8_decode_before(s, start, &cp), is_word_char(cp))) ||
                                                  (stop < n && (utf8_decode(s + stop, n - stop, &cp), is_word_char(cp))))) continue;
        while ((a->flags[k] & ADDED_LSTRIP) && start > off && (len = utf8_decode_before(s, start, &cp)) <= start - off && (unicode_class(cp) & UC_SPACE)) start -= len;
        while ((a->flags[k] & ADDED_RSTRIP) && stop < n && (class_at(s, n, stop, &len) & UC_SPACE)) stop += len;
        if (start > off) text(t, s + off, start - off, at_start && off == 0, w, o);
        tok_emit(o, a->id[k]);
        off = stop;
    }
    if (off < n) text(t, s + off, n - off, at_start && off == 0, w, o);
}

// normalizer on a stretch of the raw text between the added tokens found in it; then the added
// tokens of the normalized text, and the pre-tokenizer and model between them
static void encode_segment(const Tokenizer *t, const char *s, size_t n, int at_start, TokWork *w, TokOut *o) {
    tok_normalize(t, s, n, &w->norm, &w->tmp);
    encode_added(t, &t->added[1], w->norm.s, w->norm.n, at_start, w, o, encode_normalized);
}

// Encode text[0..len) (any bytes) into tokens[0..max_tokens), with bos/eos ids around it if asked
// (and the tokenizer has them). Returns the count, or -1 if more than max_tokens are needed.
static int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int bos, int eos, int *tokens, int max_tokens) {
    TokOut o = { tokens, 0, max_tokens > 0 ? max_tokens : 0 };
    TokWork w;
    if (len > TOK_MAX_TEXT) return set_error(t->path, "text of %zu bytes is too long to encode at once (limit %zu)", len, TOK_MAX_TEXT);
    memset(&w, 0, sizeof(w));
    if (bos && t->bos_id >= 0) tok_emit(&o, t->bos_id);
    // added tokens (a tokenizer.bin's: train --new-special-tokens) are found in the raw text first
    encode_added(t, &t->added[0], text, len, 1, &w, &o, t->kind == TOK_LLAMA2C ? encode_llama2c : encode_segment);
    if (eos && t->eos_id >= 0) tok_emit(&o, t->eos_id);
    tok_work_free(&w);
    if (o.n > o.cap) return set_error(t->path, "the text needs %d tokens, more than max_tokens = %d", o.n, max_tokens);
    return o.n;
}

// ----------------------------------------------------------------------------
// tokenizer: decoding

// The bytes of `token` as text, NUL-terminated in out[0..cap); returns how many (the piece is cut
// short if cap is too small). sentencepiece-style: "▁" is a space, <0xNN> is that raw byte, and
// the first piece after BOS (or at the start, prev_token < 0) loses its leading space, the dummy
// prefix, as in llama2.c. Byte-level: each character maps back to its byte. Control tokens
// (<s>, <|eot_id|>) and unused ids decode to nothing, other added tokens to their text.
static int tokenizer_decode(const Tokenizer *t, int prev_token, int token, char *out, int cap) {
    int n = 0;
    if (cap <= 0) return 0;
    out[0] = 0;
    if (token < 0 || token >= t->vocab_size || !t->pieces[token] || t->attr[token] == PIECE_CONTROL) return 0;
    const char *p = t->pieces[token];
    size_t len = (size_t)t->piece_len[token];
    if (t->attr[token] == PIECE_BYTE) {
        if (cap > 1) out[n++] = (char)strtol(p + 3, NULL, 16);
    } else if (t->attr[token] == PIECE_ADDED || t->kind == TOK_LLAMA2C) {
        for (size_t i = 0; i < len && n < cap - 1; i++) out[n++] = p[i];
    } else if (t->kind == TOK_SENTENCEPIECE) {
        for (size_t i = 0; i < len && n < cap - 1; i++) {
            if (len - i >= 3 && !memcmp(p + i, "\xE2\x96\x81", 3)) { out[n++] = ' '; i += 2; }
            else out[n++] = p[i];
        }
    } else { // byte-level
        for (size_t i = 0, k; i < len && n < cap - 1; i += k) {
            uint32_t cp;
            k = utf8_decode(p + i, len - i, &cp);
            int b = unicode_to_byte(cp);
            if (b >= 0) out[n++] = (char)b;
            else for (size_t j = 0; j < k && n < cap - 1; j++) out[n++] = p[i + j];
        }
    }
    if (t->strip_space && t->attr[token] == PIECE_TEXT && (prev_token < 0 || prev_token == t->bos_id) && n > 0 && out[0] == ' ') {
        memmove(out, out + 1, (size_t)n - 1);
        n--;
    }
    out[n] = 0;
    return n;
}

// ----------------------------------------------------------------------------
// layers: each *_forward is followed by its *_backward. N = B*T rows.
// These few functions are the whole numerical core; a GPU file can replace them.

// SIMD: fp32 vectors of VLEN floats (AVX-512: 16, AVX2+FMA: 8, aarch64 NEON: 4). Without one, or with PEFT_FP64,
// PEFT_SIMD stays undefined and every kernel below is its plain loop.
#if !defined(PEFT_FP64) && defined(__AVX512F__)
#define PEFT_SIMD 1
#define VLEN 16
#define SIMD_NAME "AVX-512"
typedef __m512 vfloat;
#define v_zero() _mm512_setzero_ps()
#define v_set1(x) _mm512_set1_ps(x)
#define v_load(p) _mm512_loadu_ps(p)
#define v_store(p, v) _mm512_storeu_ps(p, v)
#define v_fma(a, b, c) _mm512_fmadd_ps(a, b, c)   // a*b + c, one rounding
#define v_add(a, b) _mm512_add_ps(a, b)
#define v_sub(a, b) _mm512_sub_ps(a, b)
#define v_mul(a, b) _mm512_mul_ps(a, b)
#define v_div(a, b) _mm512_div_ps(a, b)
#define v_max(a, b) _mm512_max_ps(a, b)
#define v_sum(v) _mm512_reduce_add_ps(v)
#define v_hmax(v) _mm512_reduce_max_ps(v)
// e^x: x = n ln2 + r, |r| <= ln2/2, e^r by Cephes' degree-7 polynomial, times 2^n by scalef
// (which also gives the right 0 and inf far out); within 2 ulp of expf
static inline vfloat v_exp(vfloat x) {
    x = _mm512_max_ps(_mm512_min_ps(x, v_set1(88.72f)), v_set1(-104.0f));
    vfloat n = _mm512_roundscale_ps(v_mul(x, v_set1(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vfloat r = _mm512_fnmadd_ps(n, v_set1(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, v_set1(-2.12194440e-4f), r);
    vfloat p = v_fma(v_set1(1.9875691500e-4f), r, v_set1(1.3981999507e-3f));
    p = v_fma(p, r, v_set1(8.3334519073e-3f)); p = v_fma(p, r, v_set1(4.1665795894e-2f));
    p = v_fma(p, r, v_set1(1.6666665459e-1f)); p = v_fma(p, r, v_set1(5.0000001201e-1f));
    p = v_fma(p, v_mul(r, r), v_add(r, v_set1(1.0f)));
    return _mm512_scalef_ps(p, n);
}
#elif !defined(PEFT_FP64) && defined(__AVX2__) && defined(__FMA__)
#define PEFT_SIMD 1
#define VLEN 8
#define SIMD_NAME "AVX2+FMA"
typedef __m256 vfloat;
#define v_zero() _mm256_setzero_ps()
#define v_set1(x) _mm256_set1_ps(x)
#define v_load(p) _mm256_loadu_ps(p)
#define v_store(p, v) _mm256_storeu_ps(p, v)
#define v_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define v_add(a, b) _mm256_add_ps(a, b)
#define v_sub(a, b) _mm256_sub_ps(a, b)
#define v_mul(a, b) _mm256_mul_ps(a, b)
#define v_div(a, b) _mm256_div_ps(a, b)
#define v_max(a, b) _mm256_max_ps(a, b)
static inline float v_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
static inline float v_hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}
// e^x as in the AVX-512 version, with 2^n built in the exponent bits: x is clamped to [-87.3, 88.3]
// (so e^x >= 1.2e-38 rather than 0 far left of zero)
static inline vfloat v_exp(vfloat x) {
    x = _mm256_max_ps(_mm256_min_ps(x, v_set1(88.3f)), v_set1(-87.3f));
    vfloat n = _mm256_round_ps(v_mul(x, v_set1(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vfloat r = _mm256_fnmadd_ps(n, v_set1(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, v_set1(-2.12194440e-4f), r);
    vfloat p = v_fma(v_set1(1.9875691500e-4f), r, v_set1(1.3981999507e-3f));
    p = v_fma(p, r, v_set1(8.3334519073e-3f)); p = v_fma(p, r, v_set1(4.1665795894e-2f));
    p = v_fma(p, r, v_set1(1.6666665459e-1f)); p = v_fma(p, r, v_set1(5.0000001201e-1f));
    p = v_fma(p, v_mul(r, r), v_add(r, v_set1(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return v_mul(p, _mm256_castsi256_ps(e));
}
#elif !defined(PEFT_FP64) && defined(__aarch64__) && defined(__ARM_NEON)
// aarch64: NEON is part of the base architecture, 4 floats per vector (the GEMM tile is 6 x 8)
#define PEFT_SIMD 1
#define VLEN 4
#define SIMD_NAME "NEON"
typedef float32x4_t vfloat;
#define v_zero() vdupq_n_f32(0.0f)
#define v_set1(x) vdupq_n_f32(x)
#define v_load(p) vld1q_f32(p)
#define v_store(p, v) vst1q_f32(p, v)
#define v_fma(a, b, c) vfmaq_f32(c, a, b)   // a*b + c, one rounding
#define v_add(a, b) vaddq_f32(a, b)
#define v_sub(a, b) vsubq_f32(a, b)
#define v_mul(a, b) vmulq_f32(a, b)
#define v_div(a, b) vdivq_f32(a, b)
#define v_max(a, b) vmaxq_f32(a, b)
#define v_sum(v) vaddvq_f32(v)
#define v_hmax(v) vmaxvq_f32(v)
// e^x as in the AVX2 version (same clamp, reduction and polynomial; 2^n in the exponent bits)
static inline vfloat v_exp(vfloat x) {
    x = vmaxq_f32(vminq_f32(x, v_set1(88.3f)), v_set1(-87.3f));
    vfloat n = vrndnq_f32(v_mul(x, v_set1(1.44269504f)));
    vfloat r = vfmsq_f32(x, n, v_set1(0.693359375f));  // x - n*c, one rounding
    r = vfmsq_f32(r, n, v_set1(-2.12194440e-4f));
    vfloat p = v_fma(v_set1(1.9875691500e-4f), r, v_set1(1.3981999507e-3f));
    p = v_fma(p, r, v_set1(8.3334519073e-3f)); p = v_fma(p, r, v_set1(4.1665795894e-2f));
    p = v_fma(p, r, v_set1(1.6666665459e-1f)); p = v_fma(p, r, v_set1(5.0000001201e-1f));
    p = v_fma(p, v_mul(r, r), v_add(r, v_set1(1.0f)));
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
    return v_mul(p, vreinterpretq_f32_s32(e));
}
#endif

#ifdef PEFT_SIMD
// Row helpers for the softmaxes. The last n % VLEN elements go through a padded vector, so every
// element sees the same arithmetic.
static float row_max(const float *x, int n) {
    vfloat m = v_set1(-INFINITY);
    int i = 0;
    for (; i + VLEN <= n; i += VLEN) m = v_max(m, v_load(x + i));
    float r = v_hmax(m);
    for (; i < n; i++) if (x[i] > r) r = x[i];
    return r;
}
// x[i] = exp(a * x[i] - b) for i < n; returns the sum
static double row_exp(float *x, int n, float a, float b) {
    vfloat s0 = v_zero(), s1 = v_zero(), va = v_set1(a), vb = v_set1(b);
    int i = 0;
    for (; i + 2 * VLEN <= n; i += 2 * VLEN) {
        vfloat e0 = v_exp(v_sub(v_mul(va, v_load(x + i)), vb)), e1 = v_exp(v_sub(v_mul(va, v_load(x + i + VLEN)), vb));
        v_store(x + i, e0); v_store(x + i + VLEN, e1);
        s0 = v_add(s0, e0); s1 = v_add(s1, e1);
    }
    double sum = v_sum(v_add(s0, s1));
    for (; i < n; i += VLEN) {
        float buf[VLEN];
        int k = n - i < VLEN ? n - i : VLEN;
        for (int j = 0; j < VLEN; j++) buf[j] = j < k ? x[i + j] : 0;
        v_store(buf, v_exp(v_sub(v_mul(va, v_load(buf)), vb)));
        for (int j = 0; j < k; j++) { x[i + j] = buf[j]; sum += buf[j]; }
    }
    return sum;
}
static void row_scale(float *x, int n, float s) {
    int i = 0;
    for (; i + VLEN <= n; i += VLEN) v_store(x + i, v_mul(v_load(x + i), v_set1(s)));
    for (; i < n; i++) x[i] *= s;
}
#endif

// whole-tensor helpers: x = 0; sum of x; acc + sum of x^2 (serial, in order: results do not depend
// on the thread count); x *= s
static void tensor_zero(floatX *x, size_t n) {
    ON_GPU(gpu_zero(x, n * sizeof(floatX)));
    memset(x, 0, n * sizeof(floatX));
}
static double tensor_sum(const floatX *x, size_t n) {
#ifdef PEFT_CUDA
    if (gpu_on) return gpu_sum(x, n);
#endif
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s;
}
static double tensor_sumsq(const floatX *x, size_t n, double acc) {
#ifdef PEFT_CUDA
    if (gpu_on) return acc + gpu_sumsq(x, n);
#endif
    for (size_t i = 0; i < n; i++) acc += (double)x[i] * x[i];
    return acc;
}
static void tensor_scale(floatX *x, floatX s, size_t n) {
    ON_GPU(gpu_scale_copy(x, x, s, n));
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

// Loops with less work than this (multiply-adds or elements) run on one thread: a parallel region
// costs microseconds, and much more when another process holds a core (generation has many small ones).
// SERIAL(work): such a loop runs outside OpenMP: a parallel region whose if() is false still costs ~1.2 us
// (libgomp sets up a team of one), 30 of them per token in generation.
#define PAR_MIN_WORK 100000L
#define SERIAL(work) ((work) < PAR_MIN_WORK || num_threads() == 1)

#if defined(__GNUC__)
#define MAYBE_UNUSED __attribute__((unused)) // the reference kernels, when only the tests call them
#else
#define MAYBE_UNUSED
#endif

// out = inp @ W^T: inp is (N,C), weight is (OC,C), out is (N,OC). The reference loop; the fast
// matmul_forward below falls back to it under PEFT_FP64 and on builds without SIMD (PORTABLE=1).
MAYBE_UNUSED static void matmul_forward_naive(floatX *out, const floatX *inp, const floatX *weight, int N, int C, int OC) {
    #pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < OC; o++) {
            const floatX *x = inp + (size_t)n * C, *w = weight + (size_t)o * C;
            floatX acc[8] = { 0 }; // 8 independent sums let the compiler vectorise the dot product
            int c = 0;
            for (; c + 8 <= C; c += 8)
                for (int k = 0; k < 8; k++) acc[k] += x[c + k] * w[c + k];
            floatX val = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            for (; c < C; c++) val += x[c] * w[c];
            out[(size_t)n * OC + o] = val;
        }
    }
}
// dinp += dout @ W (N,C); dweight += dout^T @ inp (OC,C). Either output may be NULL.
MAYBE_UNUSED static void matmul_backward_naive(floatX *dinp, floatX *dweight, const floatX *dout, const floatX *inp, const floatX *weight, int N, int C, int OC) {
    if (dinp) {
        #pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            floatX *dx = dinp + (size_t)n * C;
            const floatX *dy = dout + (size_t)n * OC;
            for (int o = 0; o < OC; o++) {
                floatX d = dy[o];
                const floatX *w = weight + (size_t)o * C;
                for (int c = 0; c < C; c++) dx[c] += d * w[c];
            }
        }
    }
    if (dweight) {
        #pragma omp parallel for schedule(static)
        for (int o = 0; o < OC; o++) {
            floatX *dw = dweight + (size_t)o * C;
            for (int n = 0; n < N; n++) {
                floatX d = dout[(size_t)n * OC + o];
                const floatX *x = inp + (size_t)n * C;
                for (int c = 0; c < C; c++) dw[c] += d * x[c];
            }
        }
    }
}

// Timing of the matmuls for `peft train --bench`: FLOPs (2 per multiply-add) and seconds inside them.
static struct { int on; double flops, secs; } mm_stats;

#ifdef PEFT_SIMD
// The fast matmuls are one GEMM, C (M,N) (+)= A (M,K) @ B (K,N), with A(i,k) = a[i*rsa + k*csa] and
// B(k,j) = b[k*rsb + j*csb], so that W and W^T, dout and dout^T need no copies. BLIS's scheme:
// K is cut into blocks of at most GEMM_KC and N into blocks of GEMM_NC; each KC x NC block of B is
// packed into panels of GEMM_NR columns (contiguous per k, zero padded) that stay in L2; each
// GEMM_MR-row slice of A is packed (k-major) into L1; a micro-kernel keeps an MR x NR tile of C in
// registers (12 vectors) for the whole K block. Threads split the rows of C.
// Every C element is the same chain of fused multiply-adds over k = 0, 1, ..., K-1 wherever its tile
// lies and whatever the thread count, so results are bit-identical for any number of threads.
#define GEMM_MR 6
#define GEMM_NR (2 * VLEN)
#define GEMM_KC 384  // K block: an A slice (MR x KC) stays in L1
#define GEMM_NC 512  // N block: the packed B block (KC x NC) stays in L2
#define GEMM_MB 256  // A is packed once per K block, GEMM_MB * MR rows at a time
typedef struct { float *a, *b; } GemmBuffers;
static GemmBuffers *gemm_buf; // one per thread, allocated on first use
static int gemm_nbuf;

// c (MR,NR) with row stride ldc (+)= ap (packed: MR floats per k) @ bp (packed: NR floats per k)
static inline void gemm_kernel(int kc, const float *ap, const float *bp, float *c, size_t ldc, int load_c) {
    vfloat acc[GEMM_MR][2];
    for (int i = 0; i < GEMM_MR; i++) {
        acc[i][0] = load_c ? v_load(c + i * ldc) : v_zero();
        acc[i][1] = load_c ? v_load(c + i * ldc + VLEN) : v_zero();
    }
    for (int k = 0; k < kc; k++, ap += GEMM_MR, bp += GEMM_NR) {
        vfloat b0 = v_load(bp), b1 = v_load(bp + VLEN);
        for (int i = 0; i < GEMM_MR; i++) {
            vfloat a = v_set1(ap[i]);
            acc[i][0] = v_fma(a, b0, acc[i][0]);
            acc[i][1] = v_fma(a, b1, acc[i][1]);
        }
    }
    for (int i = 0; i < GEMM_MR; i++) { v_store(c + i * ldc, acc[i][0]); v_store(c + i * ldc + VLEN, acc[i][1]); }
}

static void gemm_reserve(void) {
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = omp_get_max_threads();
#endif
    if (nthreads <= gemm_nbuf) return;
    gemm_buf = (GemmBuffers *)realloc_check(gemm_buf, (size_t)nthreads * sizeof(GemmBuffers));
    for (int t = gemm_nbuf; t < nthreads; t++) {
        gemm_buf[t].b = (float *)malloc_aligned64((size_t)GEMM_KC * GEMM_NC * sizeof(float));
        gemm_buf[t].a = (float *)malloc_aligned64((size_t)GEMM_MB * GEMM_MR * GEMM_KC * sizeof(float));
    }
    gemm_nbuf = nthreads;
}
static GemmBuffers *gemm_thread_buffers(void) {
#ifdef _OPENMP
    return &gemm_buf[omp_get_thread_num()];
#else
    return &gemm_buf[0];
#endif
}

// One thread's share of the GEMM: row blocks [mb_lo, mb_hi) (of MR rows) and panels [p_lo, p_hi)
// (of NR columns) of C.
static void gemm_part(GemmBuffers *buf, float *c, size_t ldc, const float *a, size_t rsa, size_t csa, const float *b, size_t rsb, size_t csb,
                      int M, int N, int K, int accumulate, int mb_lo, int mb_hi, int p_lo, int p_hi) {
    float tile[GEMM_MR * GEMM_NR];
    int j_lo = p_lo * GEMM_NR, j_hi = p_hi * GEMM_NR < N ? p_hi * GEMM_NR : N;
    if (mb_lo >= mb_hi || j_lo >= j_hi) return;
    if (K <= 0) { // C = 0 (or unchanged)
        for (int i = mb_lo * GEMM_MR; i < M && i < mb_hi * GEMM_MR && !accumulate; i++) memset(c + (size_t)i * ldc + j_lo, 0, (size_t)(j_hi - j_lo) * sizeof(float));
        return;
    }
    int nkb = (K + GEMM_KC - 1) / GEMM_KC, KC = (K + nkb - 1) / nkb; // equal K blocks
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = K - k0 < KC ? K - k0 : KC, load_c = accumulate || k0 > 0;
        for (int m0 = mb_lo; m0 < mb_hi; m0 += GEMM_MB) {
            int m1 = mb_hi - m0 < GEMM_MB ? mb_hi : m0 + GEMM_MB;
            // pack A[rows of m0..m1, k0:k0+kc] into MR-row slices, k-major, zero padded
            for (int mb = m0; mb < m1; mb++) {
                float *ap = buf->a + (size_t)(mb - m0) * GEMM_MR * kc;
                int i0 = mb * GEMM_MR, mr = M - i0 < GEMM_MR ? M - i0 : GEMM_MR;
                for (int k = 0; k < kc; k++)
                    for (int i = 0; i < GEMM_MR; i++)
                        ap[k * GEMM_MR + i] = i < mr ? a[(size_t)(i0 + i) * rsa + (size_t)(k0 + k) * csa] : 0;
            }
            for (int j0 = j_lo; j0 < j_hi; j0 += GEMM_NC) {
                int nc = j_hi - j0 < GEMM_NC ? j_hi - j0 : GEMM_NC, npanels = (nc + GEMM_NR - 1) / GEMM_NR;
                // pack B[k0:k0+kc, j0:j0+nc] into panels bp[p][k][0..NR), zero padded
                for (int p = 0; p < npanels; p++) {
                    float *bp = buf->b + (size_t)p * kc * GEMM_NR;
                    int jn = nc - p * GEMM_NR < GEMM_NR ? nc - p * GEMM_NR : GEMM_NR;
                    const float *src = b + (size_t)k0 * rsb + (size_t)(j0 + p * GEMM_NR) * csb;
                    if (csb == 1) {
                        for (int k = 0; k < kc; k++)
                            for (int j = 0; j < GEMM_NR; j++) bp[(size_t)k * GEMM_NR + j] = j < jn ? src[(size_t)k * rsb + j] : 0;
                    } else {
                        for (int j = 0; j < GEMM_NR; j++)
                            for (int k = 0; k < kc; k++) bp[(size_t)k * GEMM_NR + j] = j < jn ? src[(size_t)k * rsb + (size_t)j * csb] : 0;
                    }
                }
                // each A slice against every panel
                for (int mb = m0; mb < m1; mb++) {
                    const float *ap = buf->a + (size_t)(mb - m0) * GEMM_MR * kc;
                    int i0 = mb * GEMM_MR, mr = M - i0 < GEMM_MR ? M - i0 : GEMM_MR;
                    for (int p = 0; p < npanels; p++) {
                        const float *bp = buf->b + (size_t)p * kc * GEMM_NR;
                        int jn = nc - p * GEMM_NR < GEMM_NR ? nc - p * GEMM_NR : GEMM_NR;
                        float *ct = c + (size_t)i0 * ldc + j0 + p * GEMM_NR;
                        if (mr == GEMM_MR && jn == GEMM_NR) { gemm_kernel(kc, ap, bp, ct, ldc, load_c); continue; }
                        // an edge tile goes through a full-size copy, so its arithmetic is the same
                        for (int i = 0; i < GEMM_MR; i++)
                            for (int j = 0; j < GEMM_NR; j++) tile[i * GEMM_NR + j] = (load_c && i < mr && j < jn) ? ct[(size_t)i * ldc + j] : 0;
                        gemm_kernel(kc, ap, bp, tile, GEMM_NR, 1);
                        for (int i = 0; i < mr; i++) memcpy(ct + (size_t)i * ldc, tile + i * GEMM_NR, (size_t)jn * sizeof(float));
                    }
                }
            }
        }
    }
}
// the whole GEMM on one thread (callers that are parallel already)
MAYBE_UNUSED static void gemm_serial(float *c, size_t ldc, const float *a, size_t rsa, size_t csa, const float *b, size_t rsb, size_t csb, int M, int N, int K, int accumulate) {
    if (M > 0 && N > 0)
        gemm_part(gemm_thread_buffers(), c, ldc, a, rsa, csa, b, rsb, csb, M, N, K, accumulate, 0, (M + GEMM_MR - 1) / GEMM_MR, 0, (N + GEMM_NR - 1) / GEMM_NR);
}
// Threads split C into row or column bands, whichever makes each pack less of the other operand
// again, and each packs its own slices: no barrier inside, which keeps the speed when another
// process takes a core (a shared pack needs two barriers per block).
static void gemm(float *c, size_t ldc, const float *a, size_t rsa, size_t csa, const float *b, size_t rsb, size_t csb,
                 int M, int N, int K, int accumulate) {
    if (M <= 0 || N <= 0) return;
    gemm_reserve();
    int mblocks = (M + GEMM_MR - 1) / GEMM_MR, panels = (N + GEMM_NR - 1) / GEMM_NR;
    int by_cols = N > M && panels >= 4; // column bands: every thread packs all of A (the smaller) and a share of B
    #pragma omp parallel
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(); nth = omp_get_num_threads();
#endif
        if (by_cols) gemm_part(&gemm_buf[tid], c, ldc, a, rsa, csa, b, rsb, csb, M, N, K, accumulate, 0, mblocks,
                               (int)((long)panels * tid / nth), (int)((long)panels * (tid + 1) / nth));
        else gemm_part(&gemm_buf[tid], c, ldc, a, rsa, csa, b, rsb, csb, M, N, K, accumulate,
                       (int)((long)mblocks * tid / nth), (int)((long)mblocks * (tid + 1) / nth), 0, panels);
    }
}

// out (N,OC) = inp (N,C) W^T for a few rows (generation): a dot product per output, 4 rows of W at once
static void gemv_rows(float *out, const float *inp, const float *weight, int N, int C, int OC) {
    #pragma omp parallel for schedule(static) if ((long)N * C * OC >= PAR_MIN_WORK)
    for (int o0 = 0; o0 < OC; o0 += 4) {
        int no = OC - o0 < 4 ? OC - o0 : 4;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;
            for (int q = 0; q < no; q++) {
                const float *w = weight + (size_t)(o0 + q) * C;
                vfloat acc0 = v_zero(), acc1 = v_zero();
                int c = 0;
                for (; c + 2 * VLEN <= C; c += 2 * VLEN) {
                    acc0 = v_fma(v_load(x + c), v_load(w + c), acc0);
                    acc1 = v_fma(v_load(x + c + VLEN), v_load(w + c + VLEN), acc1);
                }
                float val = v_sum(v_add(acc0, acc1));
                for (; c < C; c++) val += x[c] * w[c];
                out[(size_t)n * OC + o0 + q] = val;
            }
        }
    }
}
#endif

// out = inp @ W^T: inp is (N,C), weight is (OC,C), out is (N,OC)
static void matmul_forward(floatX *out, const floatX *inp, const floatX *weight, int N, int C, int OC) {
    ON_GPU(gpu_matmul_forward(out, inp, weight, N, C, OC));
    double t0 = mm_stats.on ? time_sec() : 0;
#ifdef PEFT_SIMD
    if (N < GEMM_MR) gemv_rows(out, inp, weight, N, C, OC);
    else gemm(out, (size_t)OC, inp, (size_t)C, 1, weight, 1, (size_t)C, N, OC, C, 0);
#else
    matmul_forward_naive(out, inp, weight, N, C, OC);
#endif
    if (mm_stats.on) { mm_stats.secs += time_sec() - t0; mm_stats.flops += 2.0 * N * C * OC; }
}
// dinp += dout @ W (N,C); dweight += dout^T @ inp (OC,C). Either output may be NULL.
static void matmul_backward(floatX *dinp, floatX *dweight, const floatX *dout, const floatX *inp, const floatX *weight, int N, int C, int OC) {
    ON_GPU(gpu_matmul_backward(dinp, dweight, dout, inp, weight, N, C, OC));
    double t0 = mm_stats.on ? time_sec() : 0;
#ifdef PEFT_SIMD
    if (dinp) gemm(dinp, (size_t)C, dout, (size_t)OC, 1, weight, (size_t)C, 1, N, C, OC, 1);
    if (dweight) gemm(dweight, (size_t)C, dout, 1, (size_t)OC, inp, (size_t)C, 1, OC, C, N, 1);
#else
    matmul_backward_naive(dinp, dweight, dout, inp, weight, N, C, OC);
#endif
    if (mm_stats.on) { mm_stats.secs += time_sec() - t0; mm_stats.flops += 2.0 * N * C * OC * ((dinp != NULL) + (dweight != NULL)); }
}

// Generation: one token (N = 1) reads every weight once, so memory bandwidth is the limit (int8 weights:
// the integer dot products below). matvec_forward computes the outputs of several weights that read the
// same input (q, k and v; gate and up) in one parallel loop over all their rows: one fork of the threads
// serves them all and the threads split the rows evenly. CPU only: linears_forward (below the LoRA
// layers) calls it when the kernels run on the CPU, and linear_forward per weight on the GPU.

// out[o] = w[o,:] . x for rows o0 <= o < o1 of w (OC,C). The plain loop is the reference (8 partial sums
// per row, like matmul_forward_naive).
MAYBE_UNUSED static void matvec_rows_naive(floatX *out, const floatX *x, const floatX *w, int C, int o0, int o1) {
    for (int o = o0; o < o1; o++) {
        const floatX *wr = w + (size_t)o * C;
        floatX acc[8] = { 0 };
        int c = 0;
        for (; c + 8 <= C; c += 8)
            for (int k = 0; k < 8; k++) acc[k] += x[c + k] * wr[c + k];
        floatX val = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; c < C; c++) val += x[c] * wr[c];
        out[o] = val;
    }
}
// Software prefetch PREFETCH_AHEAD bytes ahead of the rows being read (the int8 kernel below; a prefetch
// past the end of a matrix is harmless: a prefetch never faults).
#define PREFETCH_AHEAD 16384
#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
#else
#define PREFETCH(p) ((void)(p))
#endif
// The SIMD version: one row at a time, front to back, in 4 vector sums, and no software prefetch: each
// thread reads its rows as one sequential stream, the pattern the hardware prefetchers follow best (and
// bench/bandwidth.c's plain read). Reading 4 rows at once (4 interleaved streams 4*C bytes apart) or a
// prefetch ahead of the rows measured 15-25% slower on Zen 2 (docs/PERFORMANCE_CPU.md).
#ifdef PEFT_SIMD
#define MATVEC_KERNEL SIMD_NAME ", one row at a time"
static void matvec_rows(float *out, const float *x, const float *w, int C, int o0, int o1) {
    for (int o = o0; o < o1; o++) {
        const float *wr = w + (size_t)o * C;
        vfloat a0 = v_zero(), a1 = v_zero(), a2 = v_zero(), a3 = v_zero();
        int c = 0;
        for (; c + 4 * VLEN <= C; c += 4 * VLEN) {
            a0 = v_fma(v_load(x + c), v_load(wr + c), a0);
            a1 = v_fma(v_load(x + c + VLEN), v_load(wr + c + VLEN), a1);
            a2 = v_fma(v_load(x + c + 2 * VLEN), v_load(wr + c + 2 * VLEN), a2);
            a3 = v_fma(v_load(x + c + 3 * VLEN), v_load(wr + c + 3 * VLEN), a3);
        }
        for (; c + VLEN <= C; c += VLEN) a0 = v_fma(v_load(x + c), v_load(wr + c), a0);
        float val = v_sum(v_add(v_add(a0, a1), v_add(a2, a3)));
        for (; c < C; c++) val += x[c] * wr[c];
        out[o] = val;
    }
}
#else
#define MATVEC_KERNEL "plain loop"
#define matvec_rows matvec_rows_naive
#endif

// int8 activations for the int8 weights: x (C) is cut into groups of QX_GS and each group quantized as
// llama2.c's runq.c does: xs = max|x| / 127, xq = round(x / xs) in [-127, 127]. A weight block (bs, a
// multiple of QX_GS) then holds whole groups of every row when C is a multiple of QX_GS, and
// w . x = sum over the groups s of scale[block of s] * xs[s] * (q . xq over s), the last factor in int32.
#define QX_GS 32
static void quantize_act(int8_t *xq, float *xs, const floatX *x, int C) {
    for (int s = 0; s < C / QX_GS; s++) {
        const floatX *v = x + (size_t)s * QX_GS;
        float amax = 0;
        for (int i = 0; i < QX_GS; i++) { float a = fabsf((float)v[i]); if (a > amax) amax = a; }
        float scale = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0;
        xs[s] = scale;
        for (int i = 0; i < QX_GS; i++) { // round half away from zero (roundf), without the libm call
            float t = (float)v[i] * inv;
            int q = (int)t;
            q += (t - (float)q >= 0.5f) - ((float)q - t >= 0.5f);
            xq[(size_t)s * QX_GS + i] = (int8_t)q;
        }
    }
}
// the int8 weights' rows that can take int8 activations
static int qmatvec_ok(const QTensor *w, int C) { return w->type == QT_INT8 && w->scale && w->bs % QX_GS == 0 && C % QX_GS == 0; }

// One input's int8 activations as the kernels read them: xq (C) and xs (C/QX_GS) from quantize_act, and per
// lane of 4 values (one int32 of the dot product instructions, C/4 lanes) the group's scale ls and
// lc = -128 * (the lane's sum of xq), the correction of VNNI's unsigned operand (see qmatvec_rows).
typedef struct { int8_t *xq; float *xs, *ls; int32_t *lc; int cap; } QAct;
static void qact_prepare(QAct *a, const floatX *x, int C) {
    if (C > a->cap) {
        free(a->xq); free(a->xs); free(a->ls); free(a->lc);
        a->xq = (int8_t *)malloc_check((size_t)C);
        a->xs = (float *)malloc_check((size_t)C / QX_GS * sizeof(float));
        a->ls = (float *)malloc_check((size_t)C / 4 * sizeof(float));
        a->lc = (int32_t *)malloc_check((size_t)C / 4 * sizeof(int32_t));
        a->cap = C;
    }
    quantize_act(a->xq, a->xs, x, C);
    for (int j = 0; j < C / 4; j++) {
        a->ls[j] = a->xs[j * 4 / QX_GS];
        a->lc[j] = -128 * (a->xq[4 * j] + a->xq[4 * j + 1] + a->xq[4 * j + 2] + a->xq[4 * j + 3]);
    }
}

// out[o] = w[o,:] . x for rows o0 <= o < o1 of the int8 tensor w (OC,C), x given as its int8 activations.
// The plain loop is the reference; the SIMD versions below compute the same int32 sums per group.
MAYBE_UNUSED static void qmatvec_rows_naive(floatX *out, const QAct *a, const QTensor *w, int C, int o0, int o1) {
    const int8_t *q = (const int8_t *)w->q;
    for (int o = o0; o < o1; o++) {
        size_t start = (size_t)o * C;
        floatX val = 0;
        for (int s = 0; s < C / QX_GS; s++) {
            const int8_t *qw = q + start + (size_t)s * QX_GS, *qx = a->xq + (size_t)s * QX_GS;
            int32_t isum = 0;
            for (int i = 0; i < QX_GS; i++) isum += (int32_t)qw[i] * qx[i];
            val += (floatX)isum * (w->scale[(start + (size_t)s * QX_GS) / (size_t)w->bs] * a->xs[s]);
        }
        out[o] = val;
    }
}
// The SIMD versions: a group of 32 int8 products summed into 8 int32 lanes of 4, then each lane's sum times
// its float scale (weight block scale * ls) added into float lanes, summed at the end of the row.
// VNNI's vpdpbusd multiplies unsigned by signed bytes and adds 4 neighbouring products into an int32: the
// weights become unsigned by q + 128 (a xor of the sign bit), and since (q + 128) . xq = q . xq + 128 * sum(xq),
// the accumulator starts at lc = -128 * sum(xq) per lane (qact_prepare): the sum is exact, one instruction
// per 32 (AVX-VNNI) or 64 (AVX-512 VNNI) bytes. AVX2 without VNNI: maddubs (unsigned x signed pairs into int16,
// |q| * sign(xq, q) so that 2 * 127 * 127 fits) and madd the pairs of pairs; the same int32 lanes.
#if !defined(PEFT_FP64) && defined(__AVX2__) && defined(__FMA__)
#define PEFT_QMATVEC_SIMD 1
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define PEFT_QMATVEC_VNNI 1
#define QMATVEC_KERNEL "AVX-512 VNNI, 4 rows at a time"
static inline __m256i dot_group(const int8_t *q, const int8_t *xq, const int32_t *lc) {
    __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)q), _mm256_set1_epi8((char)0x80));
    return _mm256_dpbusd_epi32(_mm256_loadu_si256((const __m256i *)lc), u, _mm256_loadu_si256((const __m256i *)xq));
}
#elif defined(__AVXVNNI__)
#define PEFT_QMATVEC_VNNI 1
#define QMATVEC_KERNEL "AVX-VNNI, 4 rows at a time"
static inline __m256i dot_group(const int8_t *q, const int8_t *xq, const int32_t *lc) {
    __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)q), _mm256_set1_epi8((char)0x80));
    return _mm256_dpbusd_avx_epi32(_mm256_loadu_si256((const __m256i *)lc), u, _mm256_loadu_si256((const __m256i *)xq));
}
#else
#define QMATVEC_KERNEL "AVX2 (maddubs), 4 rows at a time"
static inline __m256i dot_group(const int8_t *q, const int8_t *xq, const int32_t *lc) {
    __m256i w = _mm256_loadu_si256((const __m256i *)q), x = _mm256_loadu_si256((const __m256i *)xq);
    (void)lc;
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1));
}
#endif
#if defined(PEFT_QMATVEC_VNNI) && defined(__AVX512F__) && defined(__AVX512VNNI__)
#define PEFT_QMATVEC_512 1
// two groups of one weight block, 64 bytes, in one 512-bit vpdpbusd
static inline __m512i dot_group2(const int8_t *q, const int8_t *xq, const int32_t *lc) {
    __m512i u = _mm512_xor_si512(_mm512_loadu_si512((const void *)q), _mm512_set1_epi8((char)0x80));
    return _mm512_dpbusd_epi32(_mm512_loadu_si512((const void *)lc), u, _mm512_loadu_si512((const void *)xq));
}
static inline __m512 scale2(const float *sa, const float *sb) { // [*sa x 8, *sb x 8]: the scales of two groups
    return _mm512_mask_broadcastss_ps(_mm512_set1_ps(*sa), 0xFF00, _mm_load_ss(sb));
}
static inline __m256 add_halves(__m512 v) { return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))); }
#endif
// Four rows at a time against one load of the activations, in float lanes that are summed at the end;
// the scale of each row's group s is scale[(G + s) >> shift], G the row's first group in the flattened
// tensor (a block holds 2^shift groups; other block sizes take the plain loop, as do the last rows).
static void qmatvec_rows(floatX *out, const QAct *a, const QTensor *w, int C, int o0, int o1) {
    const int8_t *xq = a->xq;
    const int32_t *lc = a->lc;
    const float *ls = a->ls, *sc = w->scale;
    int ns = C / QX_GS, shift = 0;
    while ((QX_GS << shift) < w->bs) shift++;
    if ((QX_GS << shift) != w->bs) { qmatvec_rows_naive(out, a, w, C, o0, o1); return; }
    int o = o0;
    for (; o + 4 <= o1; o += 4) {
        const int8_t *q0 = (const int8_t *)w->q + (size_t)o * C, *q1 = q0 + C, *q2 = q1 + C, *q3 = q2 + C;
        size_t G0 = (size_t)o * C / QX_GS, G1 = G0 + ns, G2 = G1 + ns, G3 = G2 + ns;
        __m256 b0 = _mm256_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
        int s = 0;
#ifdef PEFT_QMATVEC_512
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (; s + 2 <= ns; s += 2) { // groups s and s+1: 64 bytes of each row
            int i = s * QX_GS;
            PREFETCH(q0 + i + PREFETCH_AHEAD); PREFETCH(q1 + i + PREFETCH_AHEAD); PREFETCH(q2 + i + PREFETCH_AHEAD); PREFETCH(q3 + i + PREFETCH_AHEAD);
            __m512 lv = _mm512_loadu_ps(ls + i / 4);
            a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_group2(q0 + i, xq + i, lc + i / 4)), _mm512_mul_ps(lv, scale2(sc + ((G0 + s) >> shift), sc + ((G0 + s + 1) >> shift))), a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_group2(q1 + i, xq + i, lc + i / 4)), _mm512_mul_ps(lv, scale2(sc + ((G1 + s) >> shift), sc + ((G1 + s + 1) >> shift))), a1);
            a2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_group2(q2 + i, xq + i, lc + i / 4)), _mm512_mul_ps(lv, scale2(sc + ((G2 + s) >> shift), sc + ((G2 + s + 1) >> shift))), a2);
            a3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_group2(q3 + i, xq + i, lc + i / 4)), _mm512_mul_ps(lv, scale2(sc + ((G3 + s) >> shift), sc + ((G3 + s + 1) >> shift))), a3);
        }
        b0 = add_halves(a0); b1 = add_halves(a1); b2 = add_halves(a2); b3 = add_halves(a3);
#endif
        for (; s < ns; s++) { // one group: 32 bytes of each row
            int i = s * QX_GS;
            PREFETCH(q0 + i + PREFETCH_AHEAD); PREFETCH(q1 + i + PREFETCH_AHEAD); PREFETCH(q2 + i + PREFETCH_AHEAD); PREFETCH(q3 + i + PREFETCH_AHEAD);
            __m256 lv = _mm256_loadu_ps(ls + i / 4);
            b0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_group(q0 + i, xq + i, lc + i / 4)), _mm256_mul_ps(lv, _mm256_set1_ps(sc[(G0 + s) >> shift])), b0);
            b1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_group(q1 + i, xq + i, lc + i / 4)), _mm256_mul_ps(lv, _mm256_set1_ps(sc[(G1 + s) >> shift])), b1);
            b2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_group(q2 + i, xq + i, lc + i / 4)), _mm256_mul_ps(lv, _mm256_set1_ps(sc[(G2 + s) >> shift])), b2);
            b3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_group(q3 + i, xq + i, lc + i / 4)), _mm256_mul_ps(lv, _mm256_set1_ps(sc[(G3 + s) >> shift])), b3);
        }
        __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(b0, b1), _mm256_hadd_ps(b2, b3)); // lanes 0-3 and 4-7: halves of the 4 sums
        _mm_storeu_ps(out + o, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
    }
    if (o < o1) qmatvec_rows_naive(out, a, w, C, o, o1);
}
#else
#define QMATVEC_KERNEL "plain loop"
#define qmatvec_rows qmatvec_rows_naive
#endif

// scratch for the int8 activations of the inputs (a row each)
static QAct *qacts;
static int nqacts;
// rows of 16 in matvec_forward's blocks; MATVEC_PAR_MIN: the multiply-adds (float weights: 4 bytes each,
// read from memory) from which a matvec runs on the threads: 32K of them take ~4 us on one core,
// where a parallel region costs 1-3 us (PAR_MIN_WORK, 100K, counts multiply-adds on cached data)
#define MATVEC_RB 16
#define MATVEC_PAR_MIN 32768L
// block b of matvec_forward's blocks: nb[j] blocks of MATVEC_RB rows for weight j, one weight after another
// (x's int8 activations in qa)
static void matvec_block(floatX *const *outs, const floatX *x, const QAct *qa, const Weight *ws, const int *OCs, const int *nb, int b, int C) {
    int j = 0, r = b;
    while (r >= nb[j]) r -= nb[j++];
    int o0 = r * MATVEC_RB, o1 = o0 + MATVEC_RB < OCs[j] ? o0 + MATVEC_RB : OCs[j];
    if (ws[j].q) qmatvec_rows(outs[j], qa, ws[j].q, C, o0, o1);
    else matvec_rows(outs[j], x, ws[j].f, C, o0, o1);
}
// block b for each of the N inputs x (N,C) in turn (outs[j] (N,OC_j)): the block's weights are read from
// memory once and from the cache N-1 times; each input's outputs are the ones it gets alone
static void matvec_block_rows(floatX *const *outs, const floatX *x, const Weight *ws, const int *OCs, const int *nb, int nw, int b, int N, int C) {
    for (int n = 0; n < N; n++) {
        floatX *o[4];
        for (int j = 0; j < nw; j++) o[j] = outs[j] + (size_t)n * OCs[j];
        matvec_block(o, x + (size_t)n * C, &qacts[n], ws, OCs, nb, b, C);
    }
}
// out_j = x W_j^T for the nw (<= 4) weights W_j (OC_j, C) of N inputs x (N, C) (generation: N = 1, or the
// sequences of a batch), in one parallel loop over blocks of 16 rows of all of them (static: each thread
// reads one contiguous stretch; a dynamic schedule measured slower here, its loop end costs more when
// another process holds a core); a row's result depends neither on the thread that computes it nor on N.
// Float weights, int8 weights with int8 activations (when qmatvec_ok), or any other quantized weight
// through qmatmul_forward (whose rows do not depend on N either; int8 in runs of 4, its dot_int8 path). One
// thread, or less work than MATVEC_PAR_MIN: a plain loop, outside OpenMP (whose region costs ~1.2 us even
// with one thread).
static void matvec_forward_n(floatX *const *outs, const floatX *x, const Weight *ws, const int *OCs, int nw, int N, int C) {
    int nb[4] = { 0 }, total = 0, quant = 0;
    for (int j = 0; j < nw; j++) {
        if (ws[j].q && !qmatvec_ok(ws[j].q, C)) {
            int run = ws[j].q->type == QT_INT8 && ws[j].q->bs % 8 == 0 ? 4 : N;
            for (int n = 0; n < N; n += run) qmatmul_forward(outs[j] + (size_t)n * OCs[j], x + (size_t)n * C, ws[j].q, N - n < run ? N - n : run, C, OCs[j]);
            continue;
        }
        nb[j] = (OCs[j] + MATVEC_RB - 1) / MATVEC_RB; total += nb[j]; quant |= ws[j].q != NULL;
    }
    if (N > nqacts) { qacts = (QAct *)realloc_check(qacts, (size_t)N * sizeof(QAct)); memset(qacts + nqacts, 0, (size_t)(N - nqacts) * sizeof(QAct)); nqacts = N; }
    if (quant) for (int n = 0; n < N; n++) qact_prepare(&qacts[n], x + (size_t)n * C, C);
    if ((long)total * MATVEC_RB * C * N < MATVEC_PAR_MIN || num_threads() == 1) {
        for (int b = 0; b < total; b++) matvec_block_rows(outs, x, ws, OCs, nb, nw, b, N, C);
        return;
    }
    #pragma omp parallel for schedule(static)
    for (int b = 0; b < total; b++) matvec_block_rows(outs, x, ws, OCs, nb, nw, b, N, C);
}
MAYBE_UNUSED static void matvec_forward(floatX *const *outs, const floatX *x, const Weight *ws, const int *OCs, int nw, int C) { matvec_forward_n(outs, x, ws, OCs, nw, 1, C); }
// matvec_forward's loop inside a parallel region (forward_token_team): every thread calls it, with its own
// copy of x and of its int8 activations qa (the same values); the weights are float or qmatvec_ok int8.
// The loop's end is a barrier.
static void matvec_team(floatX *const *outs, const floatX *x, const QAct *qa, const Weight *ws, const int *OCs, int nw, int C) {
    int nb[4] = { 0 }, total = 0;
    for (int j = 0; j < nw; j++) { nb[j] = (OCs[j] + MATVEC_RB - 1) / MATVEC_RB; total += nb[j]; }
    #pragma omp for schedule(static)
    for (int b = 0; b < total; b++) matvec_block(outs, x, qa, ws, OCs, nb, b, C);
}
// rows o0 <= o < o1 of out = x W^T, o0 a multiple of MATVEC_RB: matvec_forward's blocks, on this thread
static void matvec_span(floatX *out, const floatX *x, const QAct *qa, Weight w, int C, int o0, int o1) {
    for (int o = o0; o < o1; o += MATVEC_RB) {
        int e = o + MATVEC_RB < o1 ? o + MATVEC_RB : o1;
        if (w.q) qmatvec_rows(out, qa, w.q, C, o, e);
        else matvec_rows(out, x, w.f, C, o, e);
    }
}

// LoRA on a linear layer: y = x W^T + scale * dropout(x) A^T B^T.
// DoRA (PEFT's use_dora): y = x W^T + (g - 1) * (xd W^T) + g * scale * xd A^T B^T, g = mag / ||W + scale B A||
// per output row, with xd = dropout(x); the norm is treated as a constant in the backward, as PEFT does.
typedef struct {
    int r;            // rank; 0 means no adapter on this module
    int in, out;      // x is (N,in), y is (N,out)
    float scale;      // lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA
    floatX *A;        // (r, in)
    floatX *B;        // (out, r)
    floatX *mag;      // (out) DoRA magnitude; NULL for plain LoRA
    floatX *dA, *dB, *dmag; // gradients, NULL when frozen
    floatX *wnorm;    // (out) DoRA: ||W + scale B A|| per row, from the last forward
    int wnorm_fixed;  // tests: keep wnorm as it is (to check the gradient that treats it as constant)
    floatX *u;        // (N, r) = dropout(x) A^T, kept for the backward
    floatX *mask;     // (N, in) dropout mask, 0 or 1/(1-p); NULL without dropout
    int mask_shared;  // a fused module's part: mask is the lead's, drawn when the lead ran (never drawn here)
} LoraModule;

// scratch shared by all LoRA modules (the ops run one after another), each (N * largest dim)
typedef struct { floatX *xd, *dxd, *t, *z, *du; size_t cap; int gpu; } LoraScratch;
static LoraScratch lora_scratch;
static void lora_scratch_reserve(size_t n) {
    if (n <= lora_scratch.cap && lora_scratch.gpu == gpu_on) return;
    floatX **b[5] = { &lora_scratch.xd, &lora_scratch.dxd, &lora_scratch.t, &lora_scratch.z, &lora_scratch.du };
    int on = gpu_on;
    gpu_on = lora_scratch.gpu; // free them where they were made (the tests switch devices)
    for (int i = 0; i < 5; i++) tensor_free(*b[i]);
    gpu_on = on;
    for (int i = 0; i < 5; i++) *b[i] = (floatX *)tensor_alloc(n * sizeof(floatX));
    lora_scratch.cap = n;
    lora_scratch.gpu = gpu_on;
}

// DoRA: wnorm[o] = || W[o,:] + scale * B[o,:] A ||
static void dora_weight_norm(floatX *wnorm, const floatX *W, const LoraModule *lm) {
    ON_GPU(gpu_dora_weight_norm(wnorm, W, lm->A, lm->B, lm->scale, lm->r, lm->in, lm->out));
    #pragma omp parallel for schedule(static)
    for (int o = 0; o < lm->out; o++) {
        double ss = 0;
        for (int x = 0; x < lm->in; x++) {
            double v = W[(size_t)o * lm->in + x];
            for (int k = 0; k < lm->r; k++) v += (double)lm->scale * lm->B[(size_t)o * lm->r + k] * lm->A[(size_t)k * lm->in + x];
            ss += v * v;
        }
        wnorm[o] = (floatX)sqrt(ss);
    }
}

// a uniform number in [0,1) from (seed, i) alone (splitmix64's finaliser, top 24 bits), so that any
// element of a dropout mask can be drawn anywhere, in any order: on CPU threads and on the GPU alike
static inline float hash_uniform(uint64_t seed, uint64_t i) {
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}
// dropout: new_mask draws mask[i] = 0 with probability p, else 1/(1-p); then xd = inp * mask. All (n)
static void dropout_forward(floatX *xd, floatX *mask, const floatX *inp, size_t n, float p, uint64_t seed, int new_mask) {
    ON_GPU(gpu_dropout_forward(xd, mask, inp, n, p, seed, new_mask));
    floatX keep = (floatX)(1.0 / (1.0 - p));
    if (new_mask) for (size_t i = 0; i < n; i++) mask[i] = hash_uniform(seed, i) < p ? 0 : keep;
    for (size_t i = 0; i < n; i++) xd[i] = inp[i] * mask[i];
}
// out += s * x;  out = s * x;  out += x * mask. All (n)
static void add_scaled(floatX *out, const floatX *x, floatX s, size_t n) {
    ON_GPU(gpu_add_scaled(out, x, s, n));
    for (size_t i = 0; i < n; i++) out[i] += s * x[i];
}
static void scale_copy(floatX *out, const floatX *x, floatX s, size_t n) {
    ON_GPU(gpu_scale_copy(out, x, s, n));
    for (size_t i = 0; i < n; i++) out[i] = s * x[i];
}
static void add_masked(floatX *out, const floatX *x, const floatX *mask, size_t n) {
    ON_GPU(gpu_add_masked(out, x, mask, n));
    for (size_t i = 0; i < n; i++) out[i] += x[i] * mask[i];
}
// DoRA's output: out += (g - 1) * base + g * s * t, g = mag / wnorm per output o. out, base, t (N,OC);
// base may be out itself
static void dora_forward(floatX *out, const floatX *base, const floatX *t, const floatX *mag, const floatX *wnorm, floatX s, int N, int OC) {
    ON_GPU(gpu_dora_forward(out, base, t, mag, wnorm, s, N, OC));
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            size_t i = (size_t)n * OC + o;
            floatX g = mag[o] / wnorm[o];
            out[i] += (g - 1) * base[i] + g * s * t[i];
        }
}
// dmag += sum_n dout * (z + s t) / wnorm (when dmag), with z = xd W^T and t = u B^T; then
// t = dout * g (the LoRA path's gradient) and z = dout * (g - 1) (the (g-1) xd W^T path's)
static void dora_backward(floatX *dmag, floatX *t, floatX *z, const floatX *dout, const floatX *mag, const floatX *wnorm, floatX s, int N, int OC) {
    ON_GPU(gpu_dora_backward(dmag, t, z, dout, mag, wnorm, s, N, OC));
    if (dmag) {
        #pragma omp parallel for schedule(static)
        for (int o = 0; o < OC; o++) {
            double acc = 0;
            for (int n = 0; n < N; n++) { size_t i = (size_t)n * OC + o; acc += (double)dout[i] * (z[i] + s * t[i]); }
            dmag[o] += (floatX)(acc / wnorm[o]);
        }
    }
    for (size_t i = 0, nout = (size_t)N * OC; i < nout; i++) {
        floatX g = mag[i % OC] / wnorm[i % OC];
        t[i] = dout[i] * g;
        z[i] = dout[i] * (g - 1);
    }
}
// QDoRA: the same norm on a quantized base, each row of W dequantized in turn (no float copy of W)
static void dora_weight_norm_q(floatX *wnorm, const QTensor *W, const LoraModule *lm) {
    ON_GPU(gpu_dora_weight_norm_q(wnorm, QT_FIELDS(W), lm->A, lm->B, lm->scale, lm->r, lm->in, lm->out));
    float *scratch = qrow_reserve((size_t)lm->in);
    #pragma omp parallel for schedule(static)
    for (int o = 0; o < lm->out; o++) {
        float *row = scratch + (size_t)thread_id() * lm->in;
        qtensor_dequant(row, W, (size_t)o * lm->in, (size_t)lm->in);
        double ss = 0;
        for (int x = 0; x < lm->in; x++) {
            double v = row[x];
            for (int k = 0; k < lm->r; k++) v += (double)lm->scale * lm->B[(size_t)o * lm->r + k] * lm->A[(size_t)k * lm->in + x];
            ss += v * v;
        }
        wnorm[o] = (floatX)sqrt(ss);
    }
}
static void dora_weight_norm_w(floatX *wnorm, Weight W, const LoraModule *lm) {
    if (W.q) dora_weight_norm_q(wnorm, W.q, lm);
    else dora_weight_norm(wnorm, W.f, lm);
}
// out = inp W^T and dinp += dout W for a float or quantized base weight (the DoRA terms)
static void weight_matmul_forward(floatX *out, const floatX *inp, Weight W, int N, int C, int OC) {
    if (W.q) qmatmul_forward(out, inp, W.q, N, C, OC);
    else matmul_forward(out, inp, W.f, N, C, OC);
}
static void weight_matmul_backward_inp(floatX *dinp, const floatX *dout, Weight W, int N, int C, int OC) {
    if (W.q) qmatmul_backward(dinp, dout, W.q, N, C, OC);
    else matmul_backward(dinp, NULL, dout, NULL, W.f, N, C, OC);
}

// out (N,OC) += s u B^T: LoRA's up-projection added to the base output (u (N,r), B (OC,r)). t (N,OC) is
// scratch for u B^T on the CPU; the GPU does it in one pass over out, without t
static void lora_up_add(floatX *out, floatX *t, const floatX *u, const floatX *B, floatX s, int N, int r, int OC) {
    ON_GPU(gpu_lora_up_add(out, u, B, s, N, r, OC));
    matmul_forward(t, u, B, N, r, OC);
    add_scaled(out, t, s, (size_t)N * OC);
}
// out = inp W^T + s u B^T: the base product and LoRA's up-projection (u (N,r), B (OC,r)); the GPU adds u B^T
// as one more step over K of the base GEMM (no pass over out). t (N,OC) is scratch on the CPU
static void matmul_lora_forward(floatX *out, floatX *t, const floatX *inp, const floatX *W, const floatX *u, const floatX *B, floatX s, int N, int C, int OC, int r) {
    ON_GPU(gpu_matmul_lora_forward(out, inp, W, u, B, s, N, C, OC, r));
    matmul_forward(out, inp, W, N, C, OC);
    lora_up_add(out, t, u, B, s, N, r, OC);
}
// dinp += dout W + du A (du (N,r) holds scale * dout B, A (r,C)), dweight += dout^T inp: the GPU adds du A as
// one more step over K of the base GEMM
static void matmul_lora_backward(floatX *dinp, floatX *dweight, const floatX *dout, const floatX *inp, const floatX *W, const floatX *du, const floatX *A, int N, int C, int OC, int r) {
    ON_GPU(gpu_matmul_lora_backward(dinp, dweight, dout, inp, W, du, A, N, C, OC, r));
    matmul_backward(dinp, dweight, dout, inp, W, N, C, OC);
    matmul_backward(dinp, NULL, du, NULL, A, N, C, r);
}
// LoRA's down-projection: u = xd A^T (N, r), xd = dropout(inp) (new_mask: a fresh mask, else lm->mask's)
static const floatX *lora_down(LoraModule *lm, const floatX *inp, int N, float dropout, int new_mask, uint64_t *rng) {
    const floatX *x = inp;
    if (lm->mask) {
        uint64_t seed = 0;
        if (lm->mask_shared) new_mask = 0; // the lead drew it for this same input
        if (new_mask) { seed = random_u32(rng); seed = seed << 32 | random_u32(rng); }
        // data parallel: this rank's rows are rows dist_rank*N.. of the whole batch, so its mask is
        // elements i + dist_rank*N*in of the whole batch's: hash_uniform(seed, i + o) = hash_uniform(seed + o*K, i)
        seed += (uint64_t)dist_rank * N * lm->in * 0x9E3779B97F4A7C15ull;
        dropout_forward(lora_scratch.xd, lm->mask, inp, (size_t)N * lm->in, dropout, seed, new_mask);
        x = lora_scratch.xd;
    }
    matmul_forward(lm->u, x, lm->A, N, lm->in, lm->r);            // u = xd A^T    (N, r)
    return x;
}
// out (which holds x W^T) += the adapter's part. inp is (N,in), out is (N,out), W is (out,in).
// new_mask: draw a fresh dropout mask (training); otherwise reuse lm->mask (recompute) when present.
static void lora_forward(floatX *out, const floatX *inp, Weight W, LoraModule *lm, int N, float dropout, int new_mask, uint64_t *rng) {
    const floatX *x = lora_down(lm, inp, N, dropout, new_mask, rng);
    floatX s = (floatX)lm->scale;
    if (!lm->mag) { lora_up_add(out, lora_scratch.t, lm->u, lm->B, s, N, lm->r, lm->out); return; } // out += s u B^T
    matmul_forward(lora_scratch.t, lm->u, lm->B, N, lm->r, lm->out); // t = u B^T  (N, out)
    if (!lm->wnorm_fixed) dora_weight_norm_w(lm->wnorm, W, lm);
    const floatX *base = out; // xd W^T: the base output itself without dropout
    if (lm->mask) { weight_matmul_forward(lora_scratch.z, x, W, N, lm->in, lm->out); base = lora_scratch.z; }
    dora_forward(out, base, lora_scratch.t, lm->mag, lm->wnorm, s, N, lm->out);
}
// LoRA: dB += scale * dout^T u; du = scale * dout B; dA += du^T xd; dinp += (du A) * mask.
// DoRA: dmag += sum_n dout * (xd W^T + scale u B^T) / wnorm; the LoRA path sees dout * g, and
// dinp also gets ((g - 1) * dout) W through the dropout mask.
static void lora_backward(floatX *dinp, const floatX *dout, const floatX *inp, Weight W, LoraModule *lm, int N) {
    size_t nr = (size_t)N * lm->r, nin = (size_t)N * lm->in;
    floatX s = (floatX)lm->scale;
    const floatX *x = inp, *dy = dout;
    if (lm->mask) { dropout_forward(lora_scratch.xd, lm->mask, inp, nin, 0, 0, 0); x = lora_scratch.xd; }
    if (lm->mag) {
        weight_matmul_forward(lora_scratch.z, x, W, N, lm->in, lm->out); // z = xd W^T
        matmul_forward(lora_scratch.t, lm->u, lm->B, N, lm->r, lm->out); // t = u B^T
        dora_backward(lm->dmag, lora_scratch.t, lora_scratch.z, dout, lm->mag, lm->wnorm, s, N, lm->out);
        dy = lora_scratch.t;
    }
    floatX *du = lora_scratch.du; // (N, r)
    if (lm->dB) { // dB (out, r) += dy^T (scale u), with du holding scale * u for the moment
        scale_copy(du, lm->u, s, nr);
        matmul_backward(NULL, lm->dB, dy, du, NULL, N, lm->r, lm->out);
    }
    tensor_zero(du, nr);
    matmul_backward(du, NULL, dy, NULL, lm->B, N, lm->r, lm->out);   // du = dy B
    scale_copy(du, du, s, nr);
    if (lm->dA) matmul_backward(NULL, lm->dA, du, x, NULL, N, lm->in, lm->r); // dA += du^T xd
    if (!dinp) return;
    floatX *dx = dinp;
    if (lm->mask) { dx = lora_scratch.dxd; tensor_zero(dx, nin); }
    matmul_backward(dx, NULL, du, NULL, lm->A, N, lm->in, lm->r);          // dxd += du A
    if (lm->mag) weight_matmul_backward_inp(dx, lora_scratch.z, W, N, lm->in, lm->out); // dxd += ((g-1) dy) W
    if (lm->mask) add_masked(dinp, dx, lm->mask, nin);
}

// the kernels' scratch, freed when a command is done (rc passes through)
static int kernels_done(int rc) {
    floatX **b[5] = { &lora_scratch.xd, &lora_scratch.dxd, &lora_scratch.t, &lora_scratch.z, &lora_scratch.du };
    int on = gpu_on;
    gpu_on = lora_scratch.gpu;
    for (int i = 0; i < 5; i++) { tensor_free(*b[i]); *b[i] = NULL; }
    gpu_on = on;
    lora_scratch.cap = 0;
#ifdef PEFT_CUDA
    if (gpu_on) gpu_release();
#endif
    return rc;
}

// a linear layer with an optional LoRA: out = inp W^T (+ LoRA)
// The base weight is float or quantized (then frozen: no dweight; QDoRA reads W a dequantized row at a time).
static void linear_forward(floatX *out, const floatX *inp, Weight w, LoraModule *lm, int N, int C, int OC, float dropout, int new_mask, uint64_t *rng) {
    if (lm && lm->r && !lm->mag && !w.q) { // LoRA on a float weight: u first, then both products in one (on the GPU)
        lora_down(lm, inp, N, dropout, new_mask, rng);
        matmul_lora_forward(out, lora_scratch.t, inp, w.f, lm->u, lm->B, (floatX)lm->scale, N, C, OC, lm->r);
        return;
    }
    if (w.q) qmatmul_forward(out, inp, w.q, N, C, OC);
    else matmul_forward(out, inp, w.f, N, C, OC);
    if (lm && lm->r) lora_forward(out, inp, w, lm, N, dropout, new_mask, rng);
}
static void linear_backward(floatX *dinp, floatX *dweight, const floatX *dout, const floatX *inp, Weight w, LoraModule *lm, int N, int C, int OC) {
    if (dinp && lm && lm->r && !lm->mag && !lm->mask && !w.q) { // LoRA on a float weight without dropout: dB, du, dA
        lora_backward(NULL, dout, inp, w, lm, N);                // first, then dinp += dout W + du A in one product
        matmul_lora_backward(dinp, dweight, dout, inp, w.f, lora_scratch.du, lm->A, N, C, OC, lm->r);
        return;
    }
    if (w.q) { if (dinp) qmatmul_backward(dinp, dout, w.q, N, C, OC); }
    else matmul_backward(dinp, dweight, dout, inp, w.f, N, C, OC);
    if (lm && lm->r) lora_backward(dinp, dout, inp, w, lm, N);
}

// several linear layers that read the same input (q, k and v; gate and up): out_j = inp W_j^T (+ LoRA), for
// N independent tokens (generation: one token, or one of each sequence of a batch), each row computed
// exactly as alone (N = 1). CPU: matvec_forward over all N rows (each weight read once a step),
// then each adapter a row at a time (a DoRA norm computed once: it depends on the weights only). GPU: the
// products in runs of DECODE_GPU_ROWS rows, the count up to which the GEMV and the quantized matvec
// (peft_cuda.cu's GEMV_M and QDIRECT_N) compute each row by itself.
#define DECODE_GPU_ROWS 8
static void linears_forward(floatX *const *outs, const floatX *inp, const Weight *ws, LoraModule *const *lms, const int *OCs, int nw, int N, int C) {
    if (gpu_on) {
        for (int n0 = 0; n0 < N; n0 += DECODE_GPU_ROWS)
            for (int j = 0; j < nw; j++)
                linear_forward(outs[j] + (size_t)n0 * OCs[j], inp + (size_t)n0 * C, ws[j], lms[j], N - n0 < DECODE_GPU_ROWS ? N - n0 : DECODE_GPU_ROWS, C, OCs[j], 0, 0, NULL);
        return;
    }
    matvec_forward_n(outs, inp, ws, OCs, nw, N, C);
    for (int j = 0; j < nw; j++) {
        LoraModule *lm = lms[j];
        if (!lm || !lm->r) continue;
        int fixed = lm->wnorm_fixed;
        for (int n = 0; n < N; n++) {
            lora_forward(outs[j] + (size_t)n * OCs[j], inp + (size_t)n * C, ws[j], lm, 1, 0, 0, NULL);
            if (lm->mag) lm->wnorm_fixed = 1;
        }
        lm->wnorm_fixed = fixed;
    }
}

// out = embed[tokens]: out is (N,C)
static void encoder_forward(floatX *out, const int *tokens, const floatX *embed, int N, int C) {
    ON_GPU(gpu_encoder_forward(out, tokens, embed, N, C));
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * C, embed + (size_t)tokens[n] * C, (size_t)C * sizeof(floatX));
}
// out = the dequantized embedding rows of tokens, from a quantized (V,C) table: out is (N,C)
static void encoder_forward_q(floatX *out, const int *tokens, const QTensor *embed, int N, int C) {
    ON_GPU(gpu_encoder_forward_q(out, tokens, QT_FIELDS(embed), N, C));
    float buf[1024];
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c += 1024) {
            int k = C - c < 1024 ? C - c : 1024;
            qtensor_dequant(buf, embed, (size_t)tokens[n] * C + c, (size_t)k);
            for (int j = 0; j < k; j++) out[(size_t)n * C + c + j] = buf[j];
        }
}
// dembed[token] += dout
static void encoder_backward(floatX *dembed, const floatX *dout, const int *tokens, int N, int C) {
    ON_GPU(gpu_encoder_backward(dembed, dout, tokens, N, C));
    for (int n = 0; n < N; n++) {
        floatX *d = dembed + (size_t)tokens[n] * C;
        for (int c = 0; c < C; c++) d[c] += dout[(size_t)n * C + c];
    }
}

// RMSNorm: y = x * rstd * (woff + w), rstd = 1/sqrt(mean(x^2) + eps). inp, out (N,C); rstd (N).
// woff is the family's norm offset: 0 (Llama), 1 (Gemma's (1 + w), in fp32 as transformers computes it).
static void rmsnorm_row(floatX *y, floatX *rstd, const floatX *x, const floatX *weight, int C, float eps, float woff) {
    double ss = 0;
    for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
    floatX r = (floatX)(1.0 / sqrt(ss / C + eps));
    if (woff != 0) for (int c = 0; c < C; c++) y[c] = x[c] * r * (woff + weight[c]);
    else for (int c = 0; c < C; c++) y[c] = x[c] * r * weight[c];
    if (rstd) *rstd = r;
}
static void rmsnorm_forward(floatX *out, floatX *rstd, const floatX *inp, const floatX *weight, int N, int C, float eps, float woff) {
    ON_GPU(gpu_rmsnorm_forward(out, rstd, inp, weight, N, C, eps, woff));
    if (SERIAL((long)N * C)) { for (int n = 0; n < N; n++) rmsnorm_row(out + (size_t)n * C, rstd ? rstd + n : NULL, inp + (size_t)n * C, weight, C, eps, woff); return; }
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) rmsnorm_row(out + (size_t)n * C, rstd ? rstd + n : NULL, inp + (size_t)n * C, weight, C, eps, woff);
}
// with w' = woff + w: dx += rstd * (w'*dy) - rstd^3/C * x * sum(w'*dy*x);  dw += sum_n dy * x * rstd
static void rmsnorm_backward(floatX *dinp, floatX *dweight, const floatX *dout, const floatX *inp, const floatX *weight, const floatX *rstd, int N, int C, float woff) {
    ON_GPU(gpu_rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C, woff));
    #pragma omp parallel for schedule(static) if ((long)N * C >= PAR_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const floatX *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
        floatX *dx = dinp + (size_t)n * C, r = rstd[n];
        double dot = 0;
        for (int c = 0; c < C; c++) dot += (double)(woff + weight[c]) * dy[c] * x[c];
        floatX k = (floatX)(dot * r * r * r / C);
        for (int c = 0; c < C; c++) dx[c] += r * (woff + weight[c]) * dy[c] - k * x[c];
    }
    if (dweight) {
        for (int n = 0; n < N; n++) {
            const floatX *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
            for (int c = 0; c < C; c++) dweight[c] += dy[c] * x[c] * rstd[n];
        }
    }
}

// bias: out (N,OC) += b (OC); db += sum_n dout (the backward of a bias)
static void bias_forward(floatX *out, const floatX *b, int N, int OC) {
    ON_GPU(gpu_bias_forward(out, b, N, OC));
    for (int n = 0; n < N; n++) for (int o = 0; o < OC; o++) out[(size_t)n * OC + o] += b[o];
}
static void bias_backward(floatX *db, const floatX *dout, int N, int OC) {
    ON_GPU(gpu_bias_backward(db, dout, N, OC));
    for (int n = 0; n < N; n++) for (int o = 0; o < OC; o++) db[o] += dout[(size_t)n * OC + o];
}

// soft-capping (Gemma 2): out = c tanh(x / c), th keeps tanh(x / c) for the backward (may be NULL);
// the backward scales the gradient in place: dx = dy (1 - th^2). n elements, out may be inp.
static void softcap_forward(floatX *out, floatX *th, const floatX *inp, float cap, size_t n) {
    ON_GPU(gpu_softcap_forward(out, th, inp, cap, n));
    for (size_t i = 0; i < n; i++) { floatX t = (floatX)tanh((double)(inp[i] / cap)); if (th) th[i] = t; out[i] = cap * t; }
}
static void softcap_backward(floatX *d, const floatX *th, size_t n) {
    ON_GPU(gpu_softcap_backward(d, th, n));
    for (size_t i = 0; i < n; i++) d[i] *= 1 - th[i] * th[i];
}

// RoPE, rotate-half pairing (i, i+HS/2): x' = x*cos + rotate_half(x)*sin, at positions t = 0..T-1 of each row.
// x is (B,T,NH,HS), rotated in place; cos/sin are (max_pos, HS/2). pos0 offsets the positions.
// one position's NH heads (NH*HS) at the angles cs, sn (HS/2)
static void rope_row(floatX *x, const floatX *cs, const floatX *sn, int NH, int HS) {
    int half = HS / 2;
    for (int h = 0; h < NH; h++) {
        floatX *v = x + (size_t)h * HS;
        for (int i = 0; i < half; i++) {
            floatX a = v[i], c = v[i + half];
            v[i] = a * cs[i] - c * sn[i];
            v[i + half] = c * cs[i] + a * sn[i];
        }
    }
}
static void rope_forward(floatX *x, const floatX *cos_t, const floatX *sin_t, int B, int T, int NH, int HS, int pos0) {
    ON_GPU(gpu_rope_forward(x, cos_t, sin_t, B, T, NH, HS, pos0));
    size_t half = (size_t)HS / 2, row = (size_t)NH * HS;
    if (SERIAL((long)B * T * NH * HS)) {
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) rope_row(x + ((size_t)b * T + t) * row, cos_t + (pos0 + t) * half, sin_t + (pos0 + t) * half, NH, HS);
        return;
    }
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) rope_row(x + ((size_t)b * T + t) * row, cos_t + (pos0 + t) * half, sin_t + (pos0 + t) * half, NH, HS);
}
// the rotation is orthogonal, so the backward rotates the gradient by -angle, in place
static void rope_backward(floatX *dx, const floatX *cos_t, const floatX *sin_t, int B, int T, int NH, int HS) {
    ON_GPU(gpu_rope_backward(dx, cos_t, sin_t, B, T, NH, HS));
    int half = HS / 2;
    #pragma omp parallel for collapse(2) schedule(static) if ((long)B * T * NH * HS >= PAR_MIN_WORK)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const floatX *cs = cos_t + (size_t)t * half, *sn = sin_t + (size_t)t * half;
            for (int h = 0; h < NH; h++) {
                floatX *v = dx + (((size_t)b * T + t) * NH + h) * HS;
                for (int i = 0; i < half; i++) {
                    floatX a = v[i], c = v[i + half];
                    v[i] = a * cs[i] + c * sn[i];
                    v[i + half] = c * cs[i] - a * sn[i];
                }
            }
        }
}

// What a layer's attention does beyond softmax(q k^T / sqrt(HS)) v under the causal mask: the score scale
// (Gemma's query_pre_attn_scalar^-0.5), soft-capping s -> c tanh(s/c) of the scaled scores (Gemma 2), and a
// sliding window: query t attends to keys s with t - window < s <= t (transformers' sliding_window_overlay).
typedef struct { float scale, softcap; int window; } AttnMode;
static AttnMode attn_default(int HS) { AttnMode m = { (float)(1.0 / sqrt((double)HS)), 0, 0 }; return m; }
// the first key that query t sees
static inline int attn_first(AttnMode m, int t) { return m.window > 0 && t - m.window + 1 > 0 ? t - m.window + 1 : 0; }
// the scaled (and capped) score of a raw dot product; th: tanh(s/c) for the backward, where capping
static inline floatX attn_score(AttnMode m, floatX dot, floatX *th) {
    floatX s = dot * (floatX)m.scale;
    if (m.softcap > 0) { floatX t = (floatX)tanh((double)(s / (floatX)m.softcap)); if (th) *th = t; return (floatX)m.softcap * t; }
    return s;
}

// Causal grouped-query attention. q is (B,T,NH,HS), k and v are (B,T,KVH,HS), out is (B,T,NH,HS),
// att (B,NH,T,T) keeps the softmax probabilities for the backward (entries s > t stay unused, and those
// outside the window are 0); attc (B,NH,T,T), only with soft-capping, keeps tanh(s/c) of each score.
// Query head h reads key/value head h / (NH/KVH). The reference loops, one query row at a time;
// the SIMD build uses the GEMM-based attention_forward/attention_backward below.
MAYBE_UNUSED static void attention_forward_naive(floatX *out, floatX *att, floatX *attc, const floatX *q, const floatX *k, const floatX *v, int B, int T, int NH, int KVH, int HS, AttnMode am) {
    int G = NH / KVH;
    size_t qs = (size_t)NH * HS, ks = (size_t)KVH * HS;
    #pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const floatX *qt = q + ((size_t)b * T + t) * qs + (size_t)h * HS;
                floatX *p = att + (((size_t)b * NH + h) * T + t) * T;
                floatX *pc = attc ? attc + (((size_t)b * NH + h) * T + t) * T : NULL;
                int kh = h / G, s0 = attn_first(am, t);
                floatX maxv = -INFINITY;
                for (int s = 0; s < s0; s++) p[s] = 0;
                for (int s = s0; s <= t; s++) {
                    const floatX *ks_ = k + ((size_t)b * T + s) * ks + (size_t)kh * HS;
                    floatX dot = 0;
                    for (int i = 0; i < HS; i++) dot += qt[i] * ks_[i];
                    p[s] = attn_score(am, dot, pc ? pc + s : NULL);
                    if (p[s] > maxv) maxv = p[s];
                }
                floatX sum = 0;
                for (int s = s0; s <= t; s++) { p[s] = EXPX(p[s] - maxv); sum += p[s]; }
                floatX inv = 1 / sum;
                for (int s = s0; s <= t; s++) p[s] *= inv;
                floatX *o = out + ((size_t)b * T + t) * qs + (size_t)h * HS;
                for (int i = 0; i < HS; i++) o[i] = 0;
                for (int s = s0; s <= t; s++) {
                    const floatX *vs = v + ((size_t)b * T + s) * ks + (size_t)kh * HS;
                    for (int i = 0; i < HS; i++) o[i] += p[s] * vs[i];
                }
            }
}
// dp_s = dout_t . v_s;  dv_s += p_s dout_t;  dscore_s = p_s (dp_s - sum_j p_j dp_j) (1 - th_s^2 with soft-capping);
// dq_t += scale * sum_s dscore_s k_s;  dk_s += scale * dscore_s q_t. Keys outside the window have p_s = 0.
// Parallel over (b, kv head) so that the heads sharing a k/v head never race. scratch is (B*NH*T) here,
// (B*KVH*T*T) for the fast version.
MAYBE_UNUSED static void attention_backward_naive(floatX *dq, floatX *dk, floatX *dv, floatX *scratch, const floatX *dout, const floatX *q, const floatX *k, const floatX *v, const floatX *att,
                                     const floatX *attc, int B, int T, int NH, int KVH, int HS, AttnMode am) {
    int G = NH / KVH;
    floatX scale = (floatX)am.scale;
    size_t qs = (size_t)NH * HS, ks = (size_t)KVH * HS;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < KVH; kh++)
            for (int h = kh * G; h < (kh + 1) * G; h++) {
                floatX *dp = scratch + ((size_t)b * NH + h) * T;
                for (int t = 0; t < T; t++) {
                    const floatX *p = att + (((size_t)b * NH + h) * T + t) * T;
                    const floatX *pc = attc ? attc + (((size_t)b * NH + h) * T + t) * T : NULL;
                    const floatX *dot = dout + ((size_t)b * T + t) * qs + (size_t)h * HS;
                    const floatX *qt = q + ((size_t)b * T + t) * qs + (size_t)h * HS;
                    floatX *dqt = dq + ((size_t)b * T + t) * qs + (size_t)h * HS;
                    floatX sum = 0;
                    for (int s = 0; s <= t; s++) {
                        const floatX *vs = v + ((size_t)b * T + s) * ks + (size_t)kh * HS;
                        floatX *dvs = dv + ((size_t)b * T + s) * ks + (size_t)kh * HS;
                        floatX d = 0;
                        for (int i = 0; i < HS; i++) { d += dot[i] * vs[i]; dvs[i] += p[s] * dot[i]; }
                        dp[s] = d;
                        sum += p[s] * d;
                    }
                    for (int s = 0; s <= t; s++) {
                        floatX ds = p[s] * (dp[s] - sum) * scale;
                        if (pc) ds *= 1 - pc[s] * pc[s];
                        const floatX *kss = k + ((size_t)b * T + s) * ks + (size_t)kh * HS;
                        floatX *dks = dk + ((size_t)b * T + s) * ks + (size_t)kh * HS;
                        for (int i = 0; i < HS; i++) { dqt[i] += ds * kss[i]; dks[i] += ds * qt[i]; }
                    }
                }
            }
}

// The public attention_forward/attention_backward at the end choose: the GPU's flash attention
// (att then holds only the log-sum-exp of each row, (B,NH,T), and the backward recomputes P from it),
// the GEMM-based versions (SIMD builds) or the reference loops.
#ifdef PEFT_SIMD
// Per (b, h): S = Q K^T, P = softmax(S / sqrt(HS)) row by row, O = P V, as GEMMs on one thread each
// (threads split the (b, h) pairs). Causal: query rows go in chunks of ATT_RC, and a chunk that
// ends at row t1 needs keys 0..t1 only. P's upper triangle (s > t) is stored as zeros.
#define ATT_RC 48
static void attention_forward_gemm(floatX *out, floatX *att, floatX *attc, const floatX *q, const floatX *k, const floatX *v, int B, int T, int NH, int KVH, int HS, AttnMode am) {
    int G = NH / KVH, plain = am.softcap == 0 && am.window == 0;
    float scale = am.scale;
    size_t qs = (size_t)NH * HS, ks = (size_t)KVH * HS;
    gemm_reserve();
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *qb = q + (size_t)b * T * qs + (size_t)h * HS;
            const float *kb = k + (size_t)b * T * ks + (size_t)(h / G) * HS, *vb = v + (size_t)b * T * ks + (size_t)(h / G) * HS;
            float *p = att + ((size_t)b * NH + h) * T * T, *ob = out + (size_t)b * T * qs + (size_t)h * HS;
            for (int t0 = 0; t0 < T; t0 += ATT_RC) {
                int rows = T - t0 < ATT_RC ? T - t0 : ATT_RC, keys = t0 + rows;
                gemm_serial(p + (size_t)t0 * T, (size_t)T, qb + (size_t)t0 * qs, qs, 1, kb, 1, ks, rows, keys, HS, 0); // S = Q K^T
                for (int t = t0; t < keys; t++) {
                    float *pt = p + (size_t)t * T;
                    if (plain) {
                        float mx = row_max(pt, t + 1);
                        double sum = row_exp(pt, t + 1, scale, scale * mx);
                        row_scale(pt, t + 1, (float)(1.0 / sum));
                    } else { // the window's keys s0..t, their scores scaled and capped first
                        int s0 = attn_first(am, t);
                        float *pc = attc ? attc + ((size_t)b * NH + h) * T * T + (size_t)t * T : NULL;
                        for (int s = s0; s <= t; s++) pt[s] = attn_score(am, pt[s], pc ? pc + s : NULL);
                        float mx = row_max(pt + s0, t + 1 - s0);
                        double sum = row_exp(pt + s0, t + 1 - s0, 1.0f, mx);
                        row_scale(pt + s0, t + 1 - s0, (float)(1.0 / sum));
                        memset(pt, 0, (size_t)s0 * sizeof(float));
                    }
                    memset(pt + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
                }
                gemm_serial(ob + (size_t)t0 * qs, qs, p + (size_t)t0 * T, (size_t)T, 1, vb, ks, 1, rows, HS, keys, 0); // O = P V
            }
        }
}
// dP = dO V^T; dS = P * (dP - rowsum(P * dP)) / sqrt(HS); dQ += dS K; dK += dS^T Q; dV += P^T dO.
// Threads split the (b, kv head) pairs so that heads sharing a k/v head never race. scratch holds
// dP and then dS: (B*KVH*T*T) floats.
static void attention_backward_gemm(floatX *dq, floatX *dk, floatX *dv, floatX *scratch, const floatX *dout, const floatX *q, const floatX *k, const floatX *v, const floatX *att,
                                    const floatX *attc, int B, int T, int NH, int KVH, int HS, AttnMode am) {
    int G = NH / KVH;
    float scale = am.scale;
    size_t qs = (size_t)NH * HS, ks = (size_t)KVH * HS;
    gemm_reserve();
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < KVH; kh++) {
            const float *kb = k + (size_t)b * T * ks + (size_t)kh * HS, *vb = v + (size_t)b * T * ks + (size_t)kh * HS;
            float *dkb = dk + (size_t)b * T * ks + (size_t)kh * HS, *dvb = dv + (size_t)b * T * ks + (size_t)kh * HS;
            float *ds = scratch + ((size_t)b * KVH + kh) * T * T;
            for (int h = kh * G; h < (kh + 1) * G; h++) {
                const float *p = att + ((size_t)b * NH + h) * T * T;
                const float *qb = q + (size_t)b * T * qs + (size_t)h * HS, *dob = dout + (size_t)b * T * qs + (size_t)h * HS;
                float *dqb = dq + (size_t)b * T * qs + (size_t)h * HS;
                for (int t0 = 0; t0 < T; t0 += ATT_RC) {
                    int rows = T - t0 < ATT_RC ? T - t0 : ATT_RC, keys = t0 + rows;
                    gemm_serial(ds + (size_t)t0 * T, (size_t)T, dob + (size_t)t0 * qs, qs, 1, vb, 1, ks, rows, keys, HS, 0); // dP = dO V^T
                    for (int t = t0; t < keys; t++) {
                        const float *pt = p + (size_t)t * T;
                        float *dt = ds + (size_t)t * T;
                        vfloat acc = v_zero();
                        int s = 0;
                        for (; s + VLEN <= t + 1; s += VLEN) acc = v_fma(v_load(pt + s), v_load(dt + s), acc);
                        float sum = v_sum(acc);
                        for (; s <= t; s++) sum += pt[s] * dt[s];
                        for (s = 0; s + VLEN <= t + 1; s += VLEN)
                            v_store(dt + s, v_mul(v_mul(v_load(pt + s), v_sub(v_load(dt + s), v_set1(sum))), v_set1(scale)));
                        for (; s <= t; s++) dt[s] = pt[s] * (dt[s] - sum) * scale;
                        if (attc) { // soft-capping: times d(c tanh(s/c))/ds = 1 - tanh^2
                            const float *pc = attc + ((size_t)b * NH + h) * T * T + (size_t)t * T;
                            for (s = attn_first(am, t); s <= t; s++) dt[s] *= 1 - pc[s] * pc[s];
                        }
                        memset(dt + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
                    }
                    gemm_serial(dqb + (size_t)t0 * qs, qs, ds + (size_t)t0 * T, (size_t)T, 1, kb, ks, 1, rows, HS, keys, 1); // dQ += dS K
                }
                for (int s0 = 0; s0 < T; s0 += ATT_RC) { // key rows s0.. get queries t >= s0 only
                    int rows = T - s0 < ATT_RC ? T - s0 : ATT_RC;
                    size_t off = (size_t)s0 * T + s0;
                    gemm_serial(dvb + (size_t)s0 * ks, ks, p + off, 1, (size_t)T, dob + (size_t)s0 * qs, qs, 1, rows, HS, T - s0, 1); // dV += P^T dO
                    gemm_serial(dkb + (size_t)s0 * ks, ks, ds + off, 1, (size_t)T, qb + (size_t)s0 * qs, qs, 1, rows, HS, T - s0, 1); // dK += dS^T Q
                }
            }
        }
}
#endif
// attention_forward_m with the layer's AttnMode (attc: tanh of the capped scores, only with soft-capping);
// attention_forward: Llama's plain causal attention
static void attention_forward_m(floatX *out, floatX *att, floatX *attc, const floatX *q, const floatX *k, const floatX *v, int B, int T, int NH, int KVH, int HS, AttnMode am) {
    ON_GPU(gpu_attention_forward(out, att, q, k, v, B, T, NH, KVH, HS, am.scale, am.softcap, am.window));
    if (am.softcap <= 0) attc = NULL;
#ifdef PEFT_SIMD
    attention_forward_gemm(out, att, attc, q, k, v, B, T, NH, KVH, HS, am);
#else
    attention_forward_naive(out, att, attc, q, k, v, B, T, NH, KVH, HS, am);
#endif
}
MAYBE_UNUSED static void attention_forward(floatX *out, floatX *att, const floatX *q, const floatX *k, const floatX *v, int B, int T, int NH, int KVH, int HS) {
    attention_forward_m(out, att, NULL, q, k, v, B, T, NH, KVH, HS, attn_default(HS));
}
// out is the forward's output (the GPU's backward needs rowsum(dout * out))
static void attention_backward_m(floatX *dq, floatX *dk, floatX *dv, floatX *scratch, const floatX *dout, const floatX *q, const floatX *k, const floatX *v,
                                 const floatX *out, const floatX *att, const floatX *attc, int B, int T, int NH, int KVH, int HS, AttnMode am) {
    ON_GPU(gpu_attention_backward(dq, dk, dv, scratch, dout, q, k, v, out, att, B, T, NH, KVH, HS, am.scale, am.softcap, am.window));
    (void)out;
    if (am.softcap <= 0) attc = NULL;
#ifdef PEFT_SIMD
    attention_backward_gemm(dq, dk, dv, scratch, dout, q, k, v, att, attc, B, T, NH, KVH, HS, am);
#else
    attention_backward_naive(dq, dk, dv, scratch, dout, q, k, v, att, attc, B, T, NH, KVH, HS, am);
#endif
}
MAYBE_UNUSED static void attention_backward(floatX *dq, floatX *dk, floatX *dv, floatX *scratch, const floatX *dout, const floatX *q, const floatX *k, const floatX *v,
                               const floatX *out, const floatX *att, int B, int T, int NH, int KVH, int HS) {
    attention_backward_m(dq, dk, dv, scratch, dout, q, k, v, out, att, NULL, B, T, NH, KVH, HS, attn_default(HS));
}
// One query (generation at position pos) against the KV cache kc, vc (pos+1, KVH*HS): out (NH*HS);
// att (NH, >= pos+1) scratch. attention_heads: heads h0 <= h < h1 of it. The cache is read a position at
// a time (the keys of all these heads at t sit side by side in one row of kc, and the values in vc), so
// that it streams through contiguous memory: a head at a time would read HS floats out of every KVH*HS.
// a[t] = softmax_t(scale * q_h . k_t) per head, then out_h = sum_t a[t] v_t. The keys are prefetched
// ATT_AHEAD positions ahead, the values of position t while its keys are read.
#define ATT_AHEAD 8
// With a window only the positions t0..pos of the cache are read; with soft-capping the scores are capped first.
static void attention_heads(floatX *out, floatX *att, const floatX *q, const floatX *kc, const floatX *vc, int h0, int h1, int pos, int npos, int NH, int KVH, int HS, AttnMode am) {
    int G = NH / KVH, KD = KVH * HS, g0 = h0 / G, g1 = (h1 - 1) / G + 1; // KV heads g0 <= g < g1, query heads g*G.. of each
    int t0 = attn_first(am, pos), n = pos + 1 - t0, plain = am.softcap == 0;
    floatX scale = plain ? (floatX)am.scale : 1; // (capped scores are scaled as they are capped)
    for (int t = t0; t <= pos; t++) {
        const floatX *kt = kc + (size_t)t * KD;
        for (size_t i = (size_t)g0 * HS; i < (size_t)g1 * HS; i += 64 / sizeof(floatX)) { // a cache line at a time
            PREFETCH(kt + (size_t)ATT_AHEAD * KD + i);
            PREFETCH(vc + (size_t)t * KD + i);
        }
        for (int g = g0; g < g1; g++)
            for (int h = g * G > h0 ? g * G : h0; h < (g + 1) * G && h < h1; h++) {
                const floatX *qh = q + (size_t)h * HS, *kh = kt + (size_t)g * HS;
                floatX dot = 0;
#ifdef PEFT_SIMD
                vfloat acc = v_zero();
                int i = 0;
                for (; i + VLEN <= HS; i += VLEN) acc = v_fma(v_load(qh + i), v_load(kh + i), acc);
                dot = v_sum(acc);
                for (; i < HS; i++) dot += qh[i] * kh[i];
#else
                for (int i = 0; i < HS; i++) dot += qh[i] * kh[i];
#endif
                att[(size_t)h * npos + t] = plain ? dot : attn_score(am, dot, NULL);
            }
    }
    for (int h = h0; h < h1; h++) { // the softmax, each a[t] divided by the sum
        floatX *a = att + (size_t)h * npos + t0, sum = 0;
#ifdef PEFT_SIMD
        float maxv = row_max(a, n);
        sum = (float)row_exp(a, n, scale, scale * maxv); // a[t] = exp(scale * (a[t] - maxv))
#else
        floatX maxv = -INFINITY;
        for (int t = 0; t < n; t++) { a[t] *= scale; if (a[t] > maxv) maxv = a[t]; }
        for (int t = 0; t < n; t++) { a[t] = EXPX(a[t] - maxv); sum += a[t]; }
#endif
        for (int t = 0; t < n; t++) a[t] /= sum;
    }
    // out_h = sum_t a[t] v_t, four positions per pass over out_h (one load and store of it per four)
    for (size_t i = (size_t)h0 * HS; i < (size_t)h1 * HS; i++) out[i] = 0;
    for (int t = t0; t <= pos; t += 4) {
        int nt = pos + 1 - t < 4 ? pos + 1 - t : 4;
        for (int g = g0; g < g1; g++) {
            const floatX *v0 = vc + (size_t)t * KD + (size_t)g * HS, *v1 = v0 + KD, *v2 = v1 + KD, *v3 = v2 + KD;
            for (int h = g * G > h0 ? g * G : h0; h < (g + 1) * G && h < h1; h++) {
                const floatX *a = att + (size_t)h * npos + t;
                floatX *o = out + (size_t)h * HS;
                int i = 0;
                if (nt < 4) { // the last positions, one at a time
                    for (int j = 0; j < nt; j++)
                        for (i = 0; i < HS; i++) o[i] += a[j] * v0[(size_t)j * KD + i];
                    continue;
                }
#ifdef PEFT_SIMD
                vfloat a0 = v_set1(a[0]), a1 = v_set1(a[1]), a2 = v_set1(a[2]), a3 = v_set1(a[3]);
                for (; i + VLEN <= HS; i += VLEN) {
                    vfloat acc = v_fma(a0, v_load(v0 + i), v_load(o + i));
                    acc = v_fma(a1, v_load(v1 + i), acc);
                    acc = v_fma(a2, v_load(v2 + i), acc);
                    v_store(o + i, v_fma(a3, v_load(v3 + i), acc));
                }
#endif
                for (; i < HS; i++) o[i] = (((o[i] + a[0] * v0[i]) + a[1] * v1[i]) + a[2] * v2[i]) + a[3] * v3[i];
            }
        }
    }
}
// The heads in one contiguous range per thread once the cache is long enough (stories15M from ~35
// positions); a head's result does not depend on the range it falls in.
static void attention_decode_m(floatX *out, floatX *att, const floatX *q, const floatX *kc, const floatX *vc, int pos, int npos, int NH, int KVH, int HS, AttnMode am) {
    ON_GPU(gpu_attention_decode(out, att, q, kc, vc, pos, NH, KVH, HS, am.scale, am.softcap, am.window));
    int parts = SERIAL(10L * NH * (pos + 1) * HS) ? 1 : (num_threads() < NH ? num_threads() : NH);
    #pragma omp parallel for schedule(static) if (parts > 1)
    for (int p = 0; p < parts; p++) attention_heads(out, att, q, kc, vc, NH * p / parts, NH * (p + 1) / parts, pos, npos, NH, KVH, HS, am);
}
MAYBE_UNUSED static void attention_decode(floatX *out, floatX *att, const floatX *q, const floatX *kc, const floatX *vc, int pos, int npos, int NH, int KVH, int HS) {
    attention_decode_m(out, att, q, kc, vc, pos, npos, NH, KVH, HS, attn_default(HS));
}

// SwiGLU: out = silu(g) * u, silu(g) = g * sigmoid(g). All (N,H). swiglu_span: n elements; the threads take
// spans of SWIGLU_SPAN (a multiple of every VLEN), so each element takes the same path (vector or scalar tail)
// on any number of threads.
#define SWIGLU_SPAN 4096
static void swiglu_span(floatX *out, const floatX *g, const floatX *u, size_t n) {
    size_t i = 0;
#ifdef PEFT_SIMD
    for (; i + VLEN <= n; i += VLEN) {
        vfloat gi = v_load(g + i), sg = v_div(v_set1(1.0f), v_add(v_set1(1.0f), v_exp(v_sub(v_zero(), gi))));
        v_store(out + i, v_mul(v_mul(gi, sg), v_load(u + i)));
    }
    for (; i < n; i++) out[i] = g[i] / (1 + EXPX(-g[i])) * u[i];
#else
    for (; i < n; i++) {
        floatX sg = 1 / (1 + EXPX(-g[i]));
        out[i] = g[i] * sg * u[i];
    }
#endif
}
static void swiglu_forward(floatX *out, const floatX *g, const floatX *u, size_t n) {
    ON_GPU(gpu_swiglu_forward(out, g, u, n));
    if (SERIAL((long)n)) { swiglu_span(out, g, u, n); return; }
    long spans = (long)((n + SWIGLU_SPAN - 1) / SWIGLU_SPAN);
    #pragma omp parallel for schedule(static)
    for (long j = 0; j < spans; j++) {
        size_t i = (size_t)j * SWIGLU_SPAN;
        swiglu_span(out + i, g + i, u + i, n - i < SWIGLU_SPAN ? n - i : SWIGLU_SPAN);
    }
}
// dg += dout * u * sig(g) * (1 + g (1 - sig(g)));  du += dout * silu(g)
static void swiglu_backward(floatX *dg, floatX *du, const floatX *dout, const floatX *g, const floatX *u, size_t n) {
    ON_GPU(gpu_swiglu_backward(dg, du, dout, g, u, n));
#ifdef PEFT_SIMD
    long nv = (long)(n / VLEN);
    #pragma omp parallel for schedule(static) if ((long)n >= PAR_MIN_WORK)
    for (long j = 0; j < nv; j++) {
        size_t i = (size_t)j * VLEN;
        vfloat one = v_set1(1.0f), gi = v_load(g + i), d = v_load(dout + i);
        vfloat sg = v_div(one, v_add(one, v_exp(v_sub(v_zero(), gi))));
        v_store(dg + i, v_fma(v_mul(v_mul(d, v_load(u + i)), sg), v_fma(gi, v_sub(one, sg), one), v_load(dg + i)));
        v_store(du + i, v_fma(v_mul(d, gi), sg, v_load(du + i)));
    }
    for (size_t i = (size_t)nv * VLEN; i < n; i++) {
        floatX sg = 1 / (1 + EXPX(-g[i]));
        dg[i] += dout[i] * u[i] * sg * (1 + g[i] * (1 - sg));
        du[i] += dout[i] * g[i] * sg;
    }
#else
    #pragma omp parallel for schedule(static) if ((long)n >= PAR_MIN_WORK)
    for (long i = 0; i < (long)n; i++) {
        floatX sg = 1 / (1 + EXPX(-g[i]));
        dg[i] += dout[i] * u[i] * sg * (1 + g[i] * (1 - sg));
        du[i] += dout[i] * g[i] * sg;
    }
#endif
}

// GeGLU (Gemma): out = gelu_tanh(g) * u, gelu_tanh(g) = g/2 (1 + tanh(k (g + 0.044715 g^3))), k = sqrt(2/pi)
// (PyTorch's gelu(approximate="tanh"), transformers' gelu_pytorch_tanh). All (N,H).
#define GELU_K 0.7978845608028654
static void geglu_forward(floatX *out, const floatX *g, const floatX *u, size_t n) {
    ON_GPU(gpu_geglu_forward(out, g, u, n));
    #pragma omp parallel for schedule(static) if ((long)n >= PAR_MIN_WORK)
    for (long i = 0; i < (long)n; i++) {
        floatX x = g[i], th = (floatX)tanh((double)((floatX)GELU_K * (x + (floatX)0.044715 * x * x * x)));
        out[i] = (floatX)0.5 * x * (1 + th) * u[i];
    }
}
// gelu_tanh'(g) = (1 + th)/2 + g/2 (1 - th^2) k (1 + 3 * 0.044715 g^2);  dg += dout * u * gelu_tanh'(g);  du += dout * gelu_tanh(g)
static void geglu_backward(floatX *dg, floatX *du, const floatX *dout, const floatX *g, const floatX *u, size_t n) {
    ON_GPU(gpu_geglu_backward(dg, du, dout, g, u, n));
    #pragma omp parallel for schedule(static) if ((long)n >= PAR_MIN_WORK)
    for (long i = 0; i < (long)n; i++) {
        double x = g[i], th = tanh(GELU_K * (x + 0.044715 * x * x * x));
        double d = 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * GELU_K * (1 + 3 * 0.044715 * x * x);
        dg[i] += (floatX)(dout[i] * u[i] * d);
        du[i] += (floatX)(dout[i] * 0.5 * x * (1 + th));
    }
}
// the MLP's gate activation times up: SwiGLU or GeGLU
static void glu_forward(floatX *out, const floatX *g, const floatX *u, size_t n, int geglu) {
    if (geglu) geglu_forward(out, g, u, n); else swiglu_forward(out, g, u, n);
}
static void glu_backward(floatX *dg, floatX *du, const floatX *dout, const floatX *g, const floatX *u, size_t n, int geglu) {
    if (geglu) geglu_backward(dg, du, dout, g, u, n); else swiglu_backward(dg, du, dout, g, u, n);
}

// out = a + b (the backward of a residual is the identity: the gradient flows to both)
static void residual_forward(floatX *out, const floatX *a, const floatX *b, size_t n) {
    ON_GPU(gpu_residual_forward(out, a, b, n));
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// Cross-entropy: probs = softmax(logits) in place; losses[n] = -log probs[n][target].
// Targets < 0 (Hugging Face's -100) are ignored (loss 0).
static void crossentropy_forward(floatX *losses, floatX *probs, const int *targets, int N, int V) {
    ON_GPU(gpu_crossentropy_forward(losses, probs, targets, N, V));
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        floatX *p = probs + (size_t)n * V;
#ifdef PEFT_SIMD
        float maxv = row_max(p, V);
        double sum = row_exp(p, V, 1.0f, maxv);
        row_scale(p, V, (float)(1.0 / sum));
#else
        floatX maxv = p[0];
        for (int i = 1; i < V; i++) if (p[i] > maxv) maxv = p[i];
        double sum = 0;
        for (int i = 0; i < V; i++) { p[i] = EXPX(p[i] - maxv); sum += p[i]; }
        floatX inv = (floatX)(1.0 / sum);
        for (int i = 0; i < V; i++) p[i] *= inv;
#endif
        int t = targets ? targets[n] : -1;
        if (t >= 0) losses[n] = (floatX)(-log((double)p[t] > 1e-300 ? (double)p[t] : 1e-300));
        else losses[n] = 0;
    }
}
// dlogits = (probs - onehot(target)) * dloss, computed in place over probs
static void crossentropy_backward(floatX *dlogits, const int *targets, floatX dloss, int N, int V) {
    ON_GPU(gpu_crossentropy_backward(dlogits, targets, dloss, N, V));
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        floatX *d = dlogits + (size_t)n * V;
        int t = targets[n];
        if (t < 0) { memset(d, 0, (size_t)V * sizeof(floatX)); continue; }
        for (int i = 0; i < V; i++) d[i] *= dloss;
        d[t] -= dloss;
    }
}

// ----------------------------------------------------------------------------
// model forward and backward over a batch (B,T), and the single-token path with a KV cache

// the LoRA modules of a model: one per (layer, target), rank 0 where there is none
typedef struct {
    int n_layers;
    LoraModule *mods;    // (L, NUM_TARGETS)
    floatX *params;      // every A and B, one allocation
    floatX *grads;       // same layout; NULL when not training
    size_t num_params;
    float dropout;       // on the LoRA branch input, training only
    int training;        // draw dropout masks
    uint64_t rng;        // dropout RNG
    int dora;            // modules carry DoRA magnitudes
    floatX *wnorm_memory, *act_memory;
    floatX *embed;       // (V,C) modules_to_save: a full replacement of embed_tokens, or NULL
    floatX *lm_head;     // (V,C) modules_to_save: a full replacement of lm_head, or NULL
    floatX *dembed, *dlm_head; // their gradients when they are trained (train --modules-to-save), else NULL
    int mts_rows, mts_cols;    // (V, C) of embed / lm_head
    int fused;           // Phi-3: k and v share q's A (PEFT's one qkv_proj LoRA), up shares gate's (gate_up_proj)
} Lora;
static LoraModule *lora_mod(const Lora *lo, int l, int t) { return (lo && lo->mods && lo->mods[l * NUM_TARGETS + t].r) ? &lo->mods[l * NUM_TARGETS + t] : NULL; }
// does any layer below l have an adapter with gradients? (if not, the backward can stop at layer l)
static int lora_trainable_below(const Lora *lo, int l) {
    if (lo->dembed) return 1; // a trained embedding needs the gradient down to the input
    for (int k = 0; k < l && k < lo->n_layers; k++)
        for (int t = 0; t < NUM_TARGETS; t++) {
            const LoraModule *m = &lo->mods[k * NUM_TARGETS + t];
            if (m->r && (m->dA || m->dB || m->dmag)) return 1;
        }
    return 0;
}

// the activations of one layer, kept for the backward
typedef struct {
    floatX *xn1, *rstd1;   // (N,C), (N): attention RMSNorm output and 1/rms
    floatX *q, *k, *v;     // (N,NH*HS), (N,KVH*HS) x2: after RoPE (q, k)
    floatX *att;           // (B,NH,T,T) softmax probabilities
    floatX *ao;            // (N,NH*HS) attention output, before o_proj
    floatX *xmid;          // (N,C) residual stream after attention
    floatX *xn2, *rstd2;   // (N,C), (N): MLP RMSNorm
    floatX *g, *u, *h;     // (N,H): gate, up, silu(gate)*up
    // the families' switches (size 0 where off)
    floatX *qp, *kp;       // qk_norm: q and k before their per-head RMSNorm (N,NH*HS), (N,KVH*HS)
    floatX *rstdq, *rstdk; // (N*NH), (N*KVH) their 1/rms
    floatX *attc;          // attn_softcap on the CPU: (B,NH,T,T) tanh(s/c) of the scores (the GPU recomputes them)
    floatX *ao2, *rstd3;   // post_norms: o_proj's output (N,C) and its norm's 1/rms (N)
    floatX *fo, *rstd4;    // post_norms: down_proj's output (N,C) and its norm's 1/rms (N)
} LayerActs;
// LayerActs' buffers in memory order; bit ACT_x of a keep mask (acts_keep) stands for buffer x
enum { ACT_XN1, ACT_RSTD1, ACT_Q, ACT_K, ACT_V, ACT_ATT, ACT_AO, ACT_XMID, ACT_XN2, ACT_RSTD2, ACT_G, ACT_U, ACT_H,
       ACT_QP, ACT_KP, ACT_RSTDQ, ACT_RSTDK, ACT_ATTC, ACT_AO2, ACT_RSTD3, ACT_FO, ACT_RSTD4, NUM_LAYER_ACTS };
enum { ACTS_KEEP_ALL = (1 << NUM_LAYER_ACTS) - 1 };

// Which of a layer's activations the backward reads (a mask of ACT_ bits); the others are written by
// every layer's forward into one shared buffer and never read after it. adapter_targets: the modules
// (bits TGT_) that carry an adapter in some layer; weight_grads: some layer's weights have gradients.
// A linear layer's backward reads its input only for the weight gradient (dW += dy^T x) and for its
// adapter (dA += du^T xd, the dropout mask applied to x again, DoRA's xd W^T); dx += dy W needs no input.
// So h (the input of down_proj), xn2 (of gate and up) and xn1 (of q, k and v) are needed only there; the
// RMSNorms' backward reads their input (x, xmid) and rstd, not their output. Every other buffer is read
// always: q, k, v and att by attention, g and u by SwiGLU, xmid by the MLP's RMSNorm, and ao (o_proj's
// input) by the GPU's attention backward (rowsum(dO * O)). One mask serves every layer: a buffer one
// layer needs is kept for all (full and freeze training, with weight gradients, keep everything).
static unsigned acts_keep(unsigned adapter_targets, int weight_grads) {
    if (weight_grads) return ACTS_KEEP_ALL;
    unsigned keep = ACTS_KEEP_ALL & ~(1u << ACT_XN1 | 1u << ACT_XN2 | 1u << ACT_H);
    if (adapter_targets & (1u << TGT_Q | 1u << TGT_K | 1u << TGT_V)) keep |= 1u << ACT_XN1;
    if (adapter_targets & (1u << TGT_GATE | 1u << TGT_UP)) keep |= 1u << ACT_XN2;
    if (adapter_targets & 1u << TGT_DOWN) keep |= 1u << ACT_H;
    return keep;
}
// the modules (bits TGT_) that carry an adapter in some layer
static unsigned lora_targets(const Lora *lo) {
    unsigned t = 0;
    for (int i = 0; lo && i < lo->n_layers * NUM_TARGETS; i++) if (lo->mods[i].r) t |= 1u << (i % NUM_TARGETS);
    return t;
}

typedef struct {
    int B, T, checkpoint;  // checkpoint: keep only each layer's input, recompute the rest in the backward
    int logit_rows;        // rows of logits at a time: N, or logit_chunk_rows (the classifier in row chunks)
    unsigned keep;         // the LayerActs each layer keeps for the backward (acts_keep; all with checkpoint)
    unsigned own;          // the LayerActs in allocations of their own (tensor_alloc_act: bf16 on a GPU): kept ones
                           // per set, the others one shared by all layers
    floatX **own_mem;      // those allocations (n_own of them)
    int n_own;
    floatX *x;             // (L+1, N, C): input of every layer; x[L] feeds the final norm (act_x: the one of layer l)
    int xslots;            // --offload activations: x holds xslots of them, the L+1 live in xhost (pinned)
    floatX *xhost;         // (L+1, N, C) then
    floatX *layer_memory;  // L (or 1 with checkpointing) sets of the kept LayerActs, then one set of the others
    LayerActs *layers;     // (L)
    floatX *xf, *rstdf;    // (N,C), (N) final norm
    floatX *logits;        // (logit_rows,V); holds probabilities after the loss, then dlogits in the backward
    floatX *losses;        // (N)
    int *inputs, *targets; // (N)
    int count;             // number of counted targets
    // gradient buffers for activations, reused layer by layer
    floatX *dx, *dxn, *dq, *dk, *dv, *dao, *dg, *du, *dh, *dscratch;
    floatX *dqp, *dkp;     // qk_norm: the gradients of q and k before their norms (N,NH*HS), (N,KVH*HS)
    floatX *capf;          // final_softcap: (logit_rows,V) tanh(z/c) of the logits, for the backward
    size_t bytes;
    struct Net *net;       // the last peft_forward's (the chunked classifier computes its logits from xf)
} Activations;

// the elements of each LayerActs buffer, in double (the planner's sums must not wrap on 32-bit machines)
// (gpu: as the GPU allocates them)
static void layer_act_sizes(double *s, const Config *c, int B, int T, int gpu) {
    double N = (double)B * T, C = c->dim, H = c->hidden_dim, QD = (double)c->n_heads * c->head_dim, KD = (double)c->n_kv_heads * c->head_dim;
    double att = (double)B * c->n_heads * T * (gpu ? 1 : T); // the GPU's flash attention keeps one log-sum-exp per row
    double qk = c->qk_norm, pn = c->post_norms, cap = c->attn_softcap > 0 && !gpu; // (the GPU recomputes tanh(s/c) in the backward)
    double sz[NUM_LAYER_ACTS] = { N * C, N, N * QD, N * KD, N * KD, att, N * QD, N * C, N * C, N, N * H, N * H, N * H,
                                  qk * N * QD, qk * N * KD, qk * N * c->n_heads, qk * N * c->n_kv_heads, cap * att, pn * N * C, pn * N, pn * N * C, pn * N };
    memcpy(s, sz, sizeof(sz));
}
static floatX **layer_act_ptr(LayerActs *la, int i) {
    floatX **p[NUM_LAYER_ACTS] = { &la->xn1, &la->rstd1, &la->q, &la->k, &la->v, &la->att, &la->ao, &la->xmid, &la->xn2, &la->rstd2, &la->g, &la->u, &la->h,
                                   &la->qp, &la->kp, &la->rstdq, &la->rstdk, &la->attc, &la->ao2, &la->rstd3, &la->fo, &la->rstd4 };
    return p[i];
}
// kept buffers from mem, the others from shared (those in own are allocated apart)
static void point_layer_acts(LayerActs *la, floatX *mem, floatX *shared, const size_t *s, unsigned keep, unsigned own) {
    for (int i = 0; i < NUM_LAYER_ACTS; i++) {
        if (own >> i & 1) continue;
        if (keep >> i & 1) { *layer_act_ptr(la, i) = mem; mem += s[i]; }
        else { *layer_act_ptr(la, i) = shared; shared += s[i]; }
    }
}
// The activations that only the matmuls, LoRA's adds, attention and the RMSNorm and SwiGLU forwards write,
// and that only matmuls, RoPE, attention, SwiGLU and the dropout read: the norms' outputs, q, k, v, the
// attention output, gate, up and h.
// On a GPU they take tensor_alloc_act's memory (bf16 with bf16 matmuls: half the bytes, as PyTorch's bf16
// activations). act_value_bytes: what one value takes there.
#define ACTS_LOWP (1u << ACT_XN1 | 1u << ACT_Q | 1u << ACT_K | 1u << ACT_V | 1u << ACT_AO | 1u << ACT_XN2 | 1u << ACT_G | 1u << ACT_U | 1u << ACT_H)
static unsigned acts_own(void) { return gpu_on ? ACTS_LOWP : 0; }
// SwiGLU's gradients dg, du: into tensor_alloc_act's memory too when no adapter on gate or up reads them
// (only the matmuls dxn += dg W1 + du W3 do; an adapter's backward reads them as floats)
static int acts_dgu_own(unsigned keep) { return gpu_on && !(keep >> ACT_XN2 & 1); }
// and h's gradient dh when no adapter on down writes it (only down's dinp product does, SwiGLU's backward reads it)
static int acts_dh_own(unsigned keep) { return gpu_on && !(keep >> ACT_H & 1); }
static double act_value_bytes(void) {
#ifdef PEFT_CUDA
    if (gpu_on) return (double)gpu_act_size();
#endif
    return sizeof(floatX);
}

static floatX *alloc_floats(size_t n, size_t *bytes) { *bytes += n * sizeof(floatX); return (floatX *)tensor_alloc(n * sizeof(floatX)); }

// The classifier and the cross-entropy run logit_chunk_rows (LOSS_ROWS) rows at a time when a batch has
// more rows: the N x V logits are never held (a 128K vocabulary makes them the largest activation: 2 GB
// at B 2, T 2048). Training's backward computes each chunk's logits again (one more classifier product),
// then its dlogits, dX and dW. Evaluation needs the loss only: one set of layer activations serves
// every layer, and there are no gradient buffers.
#define LOSS_ROWS 512
static int logit_chunk_rows = LOSS_ROWS; // (the tests lower it to compare chunks with the whole logits)
static int logit_rows_of(double N) { return N > logit_chunk_rows ? logit_chunk_rows : (int)N; }
// bytes acts_alloc will take for a batch of B x T keeping the LayerActs of keep (acts_keep) per layer
// (planned in double: see bytes_fit). The training memory checks use it too.
// acts_plan_bytes_on: the same for a GPU (gpu 1, vbytes: act_value_bytes there) or the CPU (gpu 0), whichever runs
static double acts_plan_bytes_on(const Config *c, int B, int T, int checkpoint, int loss_only, unsigned keep, int gpu, double vbytes) {
    double N = (double)B * T, C = c->dim, H = c->hidden_dim, V = c->vocab_size, L = c->n_layers;
    double QD = (double)c->n_heads * c->head_dim, KD = (double)c->n_kv_heads * c->head_dim;
    double s[NUM_LAYER_ACTS], kept = 0, shared = 0, own = 0, sets = checkpoint || loss_only ? 1 : L;
    layer_act_sizes(s, c, B, T, gpu);
    unsigned o = gpu ? ACTS_LOWP : 0; // acts_own
    int all = checkpoint || loss_only;
    for (int i = 0; i < NUM_LAYER_ACTS; i++) {
        double n = keep >> i & 1 || all ? sets * s[i] : s[i]; // kept per set, or one shared
        if (o >> i & 1) own += n; else if (keep >> i & 1 || all) kept += s[i]; else shared += s[i];
    }
    double floats = (L + 1) * N * C + sets * kept + shared + N * C + N + N; // x, layers, xf, rstdf, losses
    floats += logit_rows_of(N) * V; // the logits of a chunk of rows
    if (!loss_only) floats += N * (2 * C + 2 * QD + 2 * KD) + s[ACT_ATT]; // dx dxn dq dao dk dv; dscratch
    if (!loss_only) floats += (c->qk_norm ? N * (QD + KD) : 0) + (c->final_softcap > 0 ? logit_rows_of(N) * V : 0); // dqp dkp; capf
    if (!loss_only && gpu && !(keep >> ACT_XN2 & 1)) own += 2 * N * H; // dg, du (acts_dgu_own)
    else if (!loss_only) floats += 2 * N * H;
    if (!loss_only && gpu && !(keep >> ACT_H & 1)) own += N * H; // dh (acts_dh_own)
    else if (!loss_only) floats += N * H;
    return floats * sizeof(floatX) + own * vbytes + 2 * N * sizeof(int);
}
static double acts_plan_bytes(const Config *c, int B, int T, int checkpoint, int loss_only, unsigned keep) {
    return acts_plan_bytes_on(c, B, T, checkpoint, loss_only, keep, gpu_on, act_value_bytes());
}
// keep: the LayerActs kept per layer for the backward (acts_keep; ACTS_KEEP_ALL keeps every one); the
// others are one set shared by all layers. With checkpointing or loss_only there is one set anyway.
// xslots: --offload activations (acts_offload_x): x holds that many layer inputs, not L+1
static void acts_alloc_x(Activations *a, const Config *c, int B, int T, int checkpoint, int loss_only, unsigned keep, int xslots) {
    double need = acts_plan_bytes(c, B, T, checkpoint, loss_only, keep);
    if (!bytes_fit(need)) fatal("a batch of %d x %d tokens needs %.4g GB of activations: too large for this %s machine", B, T, need / 1e9, machine_bits());
    memset(a, 0, sizeof(*a));
    a->B = B; a->T = T; a->checkpoint = checkpoint || loss_only;
    a->xslots = xslots;
    unsigned keep_asked = keep;
    if (a->checkpoint) keep = ACTS_KEEP_ALL; // one set: the backward recomputes each layer's before reading them
    a->keep = keep;
    a->own = acts_own();
    floatX *own_shared[NUM_LAYER_ACTS] = { 0 };
    size_t N = (size_t)B * T, C = (size_t)c->dim, H = (size_t)c->hidden_dim, V = (size_t)c->vocab_size, L = (size_t)c->n_layers;
    size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    double sd[NUM_LAYER_ACTS];
    size_t s[NUM_LAYER_ACTS], kept = 0, shared = 0;
    layer_act_sizes(sd, c, B, T, gpu_on);
    for (int i = 0; i < NUM_LAYER_ACTS; i++) {
        s[i] = (size_t)sd[i];
        if (a->own >> i & 1) continue;
        if (keep >> i & 1) kept += s[i]; else shared += s[i];
    }
    size_t nsets = a->checkpoint ? 1 : L;
    a->x = alloc_floats((xslots ? (size_t)xslots : L + 1) * N * C, &a->bytes);
    a->layer_memory = alloc_floats(nsets * kept + shared, &a->bytes);
    a->layers = (LayerActs *)calloc_check(L, sizeof(LayerActs));
    a->own_mem = (floatX **)calloc_check(L * NUM_LAYER_ACTS, sizeof(floatX *));
    for (size_t l = 0; l < L; l++) {
        LayerActs *la = &a->layers[l];
        point_layer_acts(la, a->layer_memory + (a->checkpoint ? 0 : l * kept), a->layer_memory + nsets * kept, s, keep, a->own);
        for (int i = 0; i < NUM_LAYER_ACTS; i++) {
            if (!(a->own >> i & 1)) continue;
            int per = (keep >> i & 1) && l < nsets; // a set of its own, or layer 0's / the shared one
            if (!per && (keep >> i & 1)) { *layer_act_ptr(la, i) = *layer_act_ptr(&a->layers[0], i); continue; } // one set (checkpointing)
            if (!per && own_shared[i]) { *layer_act_ptr(la, i) = own_shared[i]; continue; }
            floatX *m = tensor_alloc_act(s[i]);
            a->own_mem[a->n_own++] = m;
            a->bytes += (size_t)(s[i] * act_value_bytes());
            *layer_act_ptr(la, i) = m;
            if (!per) own_shared[i] = m;
        }
    }
    a->xf = alloc_floats(N * C, &a->bytes);
    a->rstdf = alloc_floats(N, &a->bytes);
    a->logit_rows = logit_rows_of((double)N);
    a->logits = alloc_floats((size_t)a->logit_rows * V, &a->bytes);
    a->losses = alloc_floats(N, &a->bytes);
    a->inputs = (int *)tensor_alloc(N * sizeof(int));
    a->targets = (int *)tensor_alloc(N * sizeof(int));
    a->bytes += 2 * N * sizeof(int);
    if (loss_only) return;
    a->dx = alloc_floats(N * C, &a->bytes);
    a->dxn = alloc_floats(N * C, &a->bytes);
    a->dq = alloc_floats(N * QD, &a->bytes);
    a->dk = alloc_floats(N * KD, &a->bytes);
    a->dv = alloc_floats(N * KD, &a->bytes);
    a->dao = alloc_floats(N * QD, &a->bytes);
    if (acts_dgu_own(keep_asked)) {
        a->dg = tensor_alloc_act(N * H);
        a->du = tensor_alloc_act(N * H);
        a->bytes += (size_t)(2 * N * H * act_value_bytes());
    } else {
        a->dg = alloc_floats(N * H, &a->bytes);
        a->du = alloc_floats(N * H, &a->bytes);
    }
    if (acts_dh_own(keep_asked)) {
        a->dh = tensor_alloc_act(N * H);
        a->bytes += (size_t)(N * H * act_value_bytes());
    } else a->dh = alloc_floats(N * H, &a->bytes);
    a->dscratch = alloc_floats((size_t)B * c->n_heads * T * (gpu_on ? 1 : T), &a->bytes); // attention_backward's dP / dS (GPU: rowsum(dO * O))
    if (c->qk_norm) { a->dqp = alloc_floats(N * QD, &a->bytes); a->dkp = alloc_floats(N * KD, &a->bytes); }
    if (c->final_softcap > 0) a->capf = alloc_floats((size_t)a->logit_rows * V, &a->bytes);
}
static void acts_alloc(Activations *a, const Config *c, int B, int T, int checkpoint, int loss_only, unsigned keep) { acts_alloc_x(a, c, B, T, checkpoint, loss_only, keep, 0); }
// the input of layer l (N, C); with --offload activations in its slot (l mod xslots)
static floatX *act_x(const Activations *a, int l, int C) { return a->x + (size_t)(a->xslots ? l % a->xslots : l) * a->B * a->T * C; }
// --offload activations: the checkpoints (the layer inputs) in pinned host memory, a->xslots (acts_alloc_x's)
// on the GPU
static void acts_offload_x(Activations *a, const Config *c) {
#ifdef PEFT_CUDA
    size_t NC = (size_t)a->B * a->T * c->dim, L = (size_t)c->n_layers;
    char err[256];
    if (!a->checkpoint) fatal("--offload activations keeps the checkpoints in host memory: it needs --checkpoint-activations");
    a->xhost = (floatX *)malloc_check((L + 1) * NC * sizeof(floatX));
    if (gpu_xring_init(a->xhost, a->x, NC * sizeof(floatX), (int)L + 1, a->xslots, err, sizeof(err))) fatal("--offload activations: %s", err);
#else
    (void)a; (void)c;
#endif
}
// --offload activations: around the kernels that write, and before those that read, layer input l
static void act_x_write(const Activations *a, int l) {
#ifdef PEFT_CUDA
    if (a->xslots) gpu_xring_write(l);
#else
    (void)a; (void)l;
#endif
}
static void act_x_save(const Activations *a, int l) {
#ifdef PEFT_CUDA
    if (a->xslots) gpu_xring_save(l);
#else
    (void)a; (void)l;
#endif
}
static void act_x_read(const Activations *a, int l, int next) {
#ifdef PEFT_CUDA
    if (a->xslots) gpu_xring_read(l, next);
#else
    (void)a; (void)l; (void)next;
#endif
}
static void acts_free(Activations *a) {
#ifdef PEFT_CUDA
    if (a->xslots) gpu_xring_end();
#endif
    free(a->xhost);
    floatX *ptrs[] = { a->x, a->layer_memory, a->xf, a->rstdf, a->logits, a->losses, a->dx, a->dxn, a->dq, a->dk, a->dv, a->dao, a->dg, a->du, a->dh, a->dscratch, a->dqp, a->dkp, a->capf };
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) tensor_free(ptrs[i]);
    for (int i = 0; i < a->n_own; i++) tensor_free(a->own_mem[i]);
    free(a->own_mem);
    free(a->layers); tensor_free(a->inputs); tensor_free(a->targets);
    memset(a, 0, sizeof(*a));
}

// RoPE tables (max_pos, HS/2), computed in double. Llama 3 scaling stretches the low frequencies; longrope
// divides frequency i by its short (or, long_table, long) factor and scales cos and sin by the attention factor.
static void rope_tables(floatX **cos_out, floatX **sin_out, const Config *c, int long_table) {
    int half = c->head_dim / 2;
    floatX *cs = (floatX *)malloc_check((size_t)c->seq_len * half * sizeof(floatX));
    floatX *sn = (floatX *)malloc_check((size_t)c->seq_len * half * sizeof(floatX));
    for (int i = 0; i < half; i++) {
        double inv_freq = 1.0 / pow((double)c->rope_theta, (2.0 * i) / c->head_dim);
        if (c->rope_linear > 0) inv_freq /= c->rope_linear; // rope_scaling "linear": position / factor
        if (c->rope_llama3) {
            double low_wl = c->rope_orig_max_pos / c->rope_low_freq_factor, high_wl = c->rope_orig_max_pos / c->rope_high_freq_factor;
            double wl = 2 * 3.14159265358979323846 / inv_freq;
            if (wl > low_wl) inv_freq /= c->rope_factor;
            else if (wl >= high_wl) {
                double smooth = (c->rope_orig_max_pos / wl - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
                inv_freq = (1 - smooth) * inv_freq / c->rope_factor + smooth * inv_freq;
            }
        }
        double mscale = 1;
        if (c->rope_longrope) { inv_freq /= long_table ? c->rope_long[i] : c->rope_short[i]; mscale = c->rope_attn_factor; }
        for (int p = 0; p < c->seq_len; p++) {
            cs[(size_t)p * half + i] = (floatX)(cos(p * inv_freq) * mscale);
            sn[(size_t)p * half + i] = (floatX)(sin(p * inv_freq) * mscale);
        }
    }
    *cos_out = cs; *sin_out = sn;
}

typedef struct Net {
    Model *model;
    Lora *lora;              // may be NULL
    floatX *rope_cos, *rope_sin;
    uint16_t *stream16;      // --offload of a float base: its linear weights in bf16 (host), streamed from there
    uint8_t *shard;          // --shard --offload: this rank's chunk of each layer (host, pinned), copied up and gathered
    floatX *rope_cos_local, *rope_sin_local; // rope_local_theta: the sliding layers' tables (Gemma 3), else NULL
    floatX *rope_cos_long, *rope_sin_long;   // longrope: the long factors' tables (rope_cos/sin hold the short ones), else NULL
} Net;
// the kernels from here on read layer l's frozen weights; next's may be copied meanwhile (--offload; -1: none)
static void layer_use(int l, int next) {
#ifdef PEFT_CUDA
    if (offload_on) gpu_offload_use(l, next);
#else
    (void)l; (void)next;
#endif
}
// longrope: a sequence of npos positions uses the long factors when npos > original_max_position_embeddings, at
// every position (transformers: max(position_ids) + 1 > original picks long_inv_freq for the whole forward)
static int rope_long(const Config *c, int npos) { return c->rope_longrope && npos > c->rope_orig_max_pos; }
// the RoPE tables of layer l (long_table: rope_long's choice)
static void net_rope(const Net *net, int l, int long_table, const floatX **cs, const floatX **sn) {
    int local = net->rope_cos_local && layer_window(&net->model->config, l);
    *cs = local ? net->rope_cos_local : long_table && net->rope_cos_long ? net->rope_cos_long : net->rope_cos;
    *sn = local ? net->rope_sin_local : long_table && net->rope_sin_long ? net->rope_sin_long : net->rope_sin;
}
// the attention of layer l over npos positions (a window that holds them all is full causal attention)
static AttnMode layer_attn(const Config *c, int l, int npos) {
    AttnMode m = attn_default(c->head_dim);
    if (c->attn_scale > 0) m.scale = c->attn_scale;
    m.softcap = c->attn_softcap;
    m.window = layer_window(c, l) < npos ? layer_window(c, l) : 0;
    return m;
}

// embeddings and classifier: the model's, or an adapter's modules_to_save replacement
static Weight net_cls(const Net *net) {
    if (net->lora && net->lora->lm_head) { Weight w = { net->lora->lm_head, NULL }; return w; }
    return cls_weight(net->model);
}

// One decoder layer, every family: x' = xmid + post(MLP(norm(xmid))), xmid = x + post(attn(norm(x))), where
// post is an RMSNorm with post_norms (Gemma) and the identity otherwise; q, k, v get their biases (attn_bias)
// and q, k their per-head RMSNorm (qk_norm) before RoPE; the MLP is SwiGLU or GeGLU.
static void layer_forward(Net *net, Activations *a, int l, const floatX *x, int new_mask) {
    Config *c = &net->model->config;
    ParameterTensors *p = &net->model->params;
    LayerActs *la = &a->layers[l];
    int B = a->B, T = a->T, N = B * T, C = c->dim, H = c->hidden_dim, NH = c->n_heads, KVH = c->n_kv_heads, HS = c->head_dim;
    int QD = NH * HS, KD = KVH * HS;
    float wo = (float)c->norm_offset;
    Lora *lo = net->lora;
    float p_drop = lo ? lo->dropout : 0;
    uint64_t *rng = lo ? &lo->rng : NULL;
    const floatX *cs, *sn;
    net_rope(net, l, rope_long(c, T), &cs, &sn);
    rmsnorm_forward(la->xn1, la->rstd1, x, p->rms_att + (size_t)l * C, N, C, c->norm_eps, wo);
    floatX *q = c->qk_norm ? la->qp : la->q, *k = c->qk_norm ? la->kp : la->k; // the projections' outputs
    linear_forward(q, la->xn1, layer_weight(net->model, l, TGT_Q), lora_mod(lo, l, TGT_Q), N, C, QD, p_drop, new_mask, rng);
    linear_forward(k, la->xn1, layer_weight(net->model, l, TGT_K), lora_mod(lo, l, TGT_K), N, C, KD, p_drop, new_mask, rng);
    linear_forward(la->v, la->xn1, layer_weight(net->model, l, TGT_V), lora_mod(lo, l, TGT_V), N, C, KD, p_drop, new_mask, rng);
    if (c->attn_bias) {
        bias_forward(q, p->bq + (size_t)l * QD, N, QD);
        bias_forward(k, p->bk + (size_t)l * KD, N, KD);
        bias_forward(la->v, p->bv + (size_t)l * KD, N, KD);
    }
    if (c->qk_norm) { // each head's HS values as a row
        rmsnorm_forward(la->q, la->rstdq, la->qp, p->q_norm + (size_t)l * HS, N * NH, HS, c->norm_eps, wo);
        rmsnorm_forward(la->k, la->rstdk, la->kp, p->k_norm + (size_t)l * HS, N * KVH, HS, c->norm_eps, wo);
    }
    rope_forward(la->q, cs, sn, B, T, NH, HS, 0);
    rope_forward(la->k, cs, sn, B, T, KVH, HS, 0);
    attention_forward_m(la->ao, la->att, la->attc, la->q, la->k, la->v, B, T, NH, KVH, HS, layer_attn(c, l, T));
    floatX *ao = c->post_norms ? la->ao2 : la->xmid;
    linear_forward(ao, la->ao, layer_weight(net->model, l, TGT_O), lora_mod(lo, l, TGT_O), N, QD, C, p_drop, new_mask, rng);
    if (c->post_norms) rmsnorm_forward(la->xmid, la->rstd3, la->ao2, p->rms_post_att + (size_t)l * C, N, C, c->norm_eps, wo);
    residual_forward(la->xmid, la->xmid, x, (size_t)N * C);                     // xmid = x + attn
    rmsnorm_forward(la->xn2, la->rstd2, la->xmid, p->rms_ffn + (size_t)l * C, N, C, c->norm_eps, wo);
    linear_forward(la->g, la->xn2, layer_weight(net->model, l, TGT_GATE), lora_mod(lo, l, TGT_GATE), N, C, H, p_drop, new_mask, rng);
    linear_forward(la->u, la->xn2, layer_weight(net->model, l, TGT_UP), lora_mod(lo, l, TGT_UP), N, C, H, p_drop, new_mask, rng);
    glu_forward(la->h, la->g, la->u, (size_t)N * H, c->geglu);
    floatX *xout = act_x(a, l + 1, C), *fo = c->post_norms ? la->fo : xout;
    linear_forward(fo, la->h, layer_weight(net->model, l, TGT_DOWN), lora_mod(lo, l, TGT_DOWN), N, H, C, p_drop, new_mask, rng);
    if (c->post_norms) rmsnorm_forward(xout, la->rstd4, la->fo, p->rms_post_ffn + (size_t)l * C, N, C, c->norm_eps, wo);
    residual_forward(xout, xout, la->xmid, (size_t)N * C);                      // x' = xmid + mlp
}

// a->dx holds dL/d(output of layer l); on return it holds dL/d(input of layer l), unless need_dx is 0
// (nothing below the layer is trainable: the q/k/v input gradient is skipped, a->dx is left as it is).
// g: weight gradients (NULL: no weight of this layer is trainable)
static void layer_backward(Net *net, Activations *a, int l, const floatX *x, ParameterTensors *g, int need_dx) {
    Config *c = &net->model->config;
    ParameterTensors *p = &net->model->params;
    LayerActs *la = &a->layers[l];
    int B = a->B, T = a->T, N = B * T, C = c->dim, H = c->hidden_dim, NH = c->n_heads, KVH = c->n_kv_heads, HS = c->head_dim;
    int QD = NH * HS, KD = KVH * HS;
    float wo = (float)c->norm_offset;
    Lora *lo = net->lora;
    size_t lC = (size_t)l * C;
    const floatX *cs, *sn;
    net_rope(net, l, rope_long(c, T), &cs, &sn);
    // x' = xmid + post(h W2^T): with post_norms dL/d(h W2^T) goes through dxn first
    const floatX *dfo = a->dx;
    if (c->post_norms) {
        tensor_zero(a->dxn, (size_t)N * C);
        rmsnorm_backward(a->dxn, g ? g->rms_post_ffn + lC : NULL, a->dx, la->fo, p->rms_post_ffn + lC, la->rstd4, N, C, wo);
        dfo = a->dxn;
    }
    tensor_zero(a->dh, (size_t)N * H);
    linear_backward(a->dh, g ? g->w2 + lC * H : NULL, dfo, la->h, layer_weight(net->model, l, TGT_DOWN), lora_mod(lo, l, TGT_DOWN), N, H, C);
    tensor_zero(a->dg, (size_t)N * H);
    tensor_zero(a->du, (size_t)N * H);
    glu_backward(a->dg, a->du, a->dh, la->g, la->u, (size_t)N * H, c->geglu);
    tensor_zero(a->dxn, (size_t)N * C);
    linear_backward(a->dxn, g ? g->w1 + lC * H : NULL, a->dg, la->xn2, layer_weight(net->model, l, TGT_GATE), lora_mod(lo, l, TGT_GATE), N, C, H);
    linear_backward(a->dxn, g ? g->w3 + lC * H : NULL, a->du, la->xn2, layer_weight(net->model, l, TGT_UP), lora_mod(lo, l, TGT_UP), N, C, H);
    rmsnorm_backward(a->dx, g ? g->rms_ffn + lC : NULL, a->dxn, la->xmid, p->rms_ffn + lC, la->rstd2, N, C, wo); // dx is now dL/dxmid
    // xmid = x + post(ao Wo^T)
    const floatX *dao2 = a->dx;
    if (c->post_norms) {
        tensor_zero(a->dxn, (size_t)N * C);
        rmsnorm_backward(a->dxn, g ? g->rms_post_att + lC : NULL, a->dx, la->ao2, p->rms_post_att + lC, la->rstd3, N, C, wo);
        dao2 = a->dxn;
    }
    tensor_zero(a->dao, (size_t)N * QD);
    linear_backward(a->dao, g ? g->wo + lC * QD : NULL, dao2, la->ao, layer_weight(net->model, l, TGT_O), lora_mod(lo, l, TGT_O), N, QD, C);
    tensor_zero(a->dq, (size_t)N * QD);
    tensor_zero(a->dk, (size_t)N * KD);
    tensor_zero(a->dv, (size_t)N * KD);
    attention_backward_m(a->dq, a->dk, a->dv, a->dscratch, a->dao, la->q, la->k, la->v, la->ao, la->att, la->attc, B, T, NH, KVH, HS, layer_attn(c, l, T));
    rope_backward(a->dq, cs, sn, B, T, NH, HS);
    rope_backward(a->dk, cs, sn, B, T, KVH, HS);
    floatX *dq = a->dq, *dk = a->dk; // dL/d(the projections' outputs)
    if (c->qk_norm) {
        tensor_zero(a->dqp, (size_t)N * QD);
        tensor_zero(a->dkp, (size_t)N * KD);
        rmsnorm_backward(a->dqp, g ? g->q_norm + (size_t)l * HS : NULL, a->dq, la->qp, p->q_norm + (size_t)l * HS, la->rstdq, N * NH, HS, wo);
        rmsnorm_backward(a->dkp, g ? g->k_norm + (size_t)l * HS : NULL, a->dk, la->kp, p->k_norm + (size_t)l * HS, la->rstdk, N * KVH, HS, wo);
        dq = a->dqp; dk = a->dkp;
    }
    if (c->attn_bias && g) {
        bias_backward(g->bq + (size_t)l * QD, dq, N, QD);
        bias_backward(g->bk + (size_t)l * KD, dk, N, KD);
        bias_backward(g->bv + (size_t)l * KD, a->dv, N, KD);
    }
    floatX *dxn = need_dx || g ? a->dxn : NULL; // NULL: only the adapters' gradients (PyTorch's autograd prunes the same)
    if (dxn) tensor_zero(dxn, (size_t)N * C);
    linear_backward(dxn, g ? g->wq + (size_t)l * QD * C : NULL, dq, la->xn1, layer_weight(net->model, l, TGT_Q), lora_mod(lo, l, TGT_Q), N, C, QD);
    linear_backward(dxn, g ? g->wk + (size_t)l * KD * C : NULL, dk, la->xn1, layer_weight(net->model, l, TGT_K), lora_mod(lo, l, TGT_K), N, C, KD);
    linear_backward(dxn, g ? g->wv + (size_t)l * KD * C : NULL, a->dv, la->xn1, layer_weight(net->model, l, TGT_V), lora_mod(lo, l, TGT_V), N, C, KD);
    if (dxn) rmsnorm_backward(a->dx, g ? g->rms_att + lC : NULL, dxn, x, p->rms_att + lC, la->rstd1, N, C, wo); // dx is now dL/dx
}

// the classifier on rows r0 <= n < r0 + rows (<= a->logit_rows) of the final norm's output: a->logits
// (rows,V); capf: soft-capping's tanh kept for the backward (NULL: not kept)
static void classifier_forward(Net *net, Activations *a, floatX *capf, int r0, int rows) {
    const Config *c = &net->model->config;
    int C = c->dim, V = c->vocab_size;
    linear_forward(a->logits, a->xf + (size_t)r0 * C, net_cls(net), NULL, rows, C, V, 0, 0, NULL);
    if (c->final_softcap > 0) softcap_forward(a->logits, capf, a->logits, c->final_softcap, (size_t)rows * V);
}
// Forward over inputs (B,T): a->logits holds the logits (N,V) when they fit at once (a->logit_rows == N);
// else the loss computes them a chunk of rows at a time.
static void peft_forward(Net *net, Activations *a, const int *inputs) {
    Config *c = &net->model->config;
    ParameterTensors *p = &net->model->params;
    int N = a->B * a->T, C = c->dim;
    a->net = net;
    tensor_upload(a->inputs, inputs, (size_t)N * sizeof(int));
    int new_mask = net->lora && net->lora->training && net->lora->dropout > 0;
    act_x_write(a, 0);
    if (net->lora && net->lora->embed) encoder_forward(a->x, a->inputs, net->lora->embed, N, C); // modules_to_save
    else if (net->model->quant && net->model->quant_embed) encoder_forward_q(a->x, a->inputs, &net->model->qembed, N, C);
    else encoder_forward(a->x, a->inputs, p->embed, N, C);
    if (c->embed_scale > 0) tensor_scale(a->x, (floatX)c->embed_scale, (size_t)N * C); // Gemma: x * sqrt(C)
    act_x_save(a, 0);
    for (int l = 0; l < c->n_layers; l++) {
        layer_use(l, l + 1 < c->n_layers ? l + 1 : -1);
        act_x_write(a, l + 1);
        layer_forward(net, a, l, act_x(a, l, C), new_mask);
        act_x_save(a, l + 1);
    }
    rmsnorm_forward(a->xf, a->rstdf, act_x(a, c->n_layers, C), p->rms_final, N, C, c->norm_eps, (float)c->norm_offset);
    if (a->logit_rows == N) classifier_forward(net, a, a->capf, 0, N); // (else: peft_loss, peft_backward)
}
// the targets (N) to tensor memory, and a->count = the counted ones (target >= 0)
static void loss_targets(Activations *a, const int *targets) {
    int N = a->B * a->T;
    tensor_upload(a->targets, targets, (size_t)N * sizeof(int));
    a->count = 0;
    for (int n = 0; n < N; n++) a->count += targets[n] >= 0;
}
// the mean of a->losses over the counted targets (the others hold 0)
static double mean_loss(Activations *a) { return a->count ? tensor_sum(a->losses, (size_t)a->B * a->T) / a->count : 0; }
// Mean cross-entropy of the last forward's logits against targets (N), the losses (N) in a->losses;
// a->logits then holds the probabilities (of the last chunk of rows, when the classifier runs in chunks).
static double peft_loss(Activations *a, const Config *c, const int *targets) {
    int N = a->B * a->T, V = c->vocab_size;
    loss_targets(a, targets);
    for (int r0 = 0; r0 < N; r0 += a->logit_rows) {
        int rows = N - r0 < a->logit_rows ? N - r0 : a->logit_rows;
        if (a->logit_rows < N) classifier_forward(a->net, a, NULL, r0, rows);
        crossentropy_forward(a->losses + r0, a->logits, a->targets + r0, rows, V);
    }
    return mean_loss(a);
}

// The forward and the loss of an evaluation batch. The losses (N) are then in a->losses.
static double peft_eval_loss(Net *net, Activations *a, const int *inputs, const int *targets) {
    peft_forward(net, a, inputs);
    return peft_loss(a, &net->model->config, targets);
}

// Backward of the mean loss of the last peft_forward (which must have had targets).
// LoRA gradients go to the modules' dA/dB; weight gradients to g (NULL: none) for layers >= g_layer_from,
// and to the embedding/classifier/final norm when g_outer.
static void peft_backward(Net *net, Activations *a, ParameterTensors *g, int g_layer_from, int g_outer) {
    Config *c = &net->model->config;
    ParameterTensors *p = &net->model->params;
    int N = a->B * a->T, C = c->dim, V = c->vocab_size, L = c->n_layers;
    unsigned need = acts_keep(lora_targets(net->lora), g && g_layer_from < L); // what the layers' backward reads
    if (need & ~a->keep) fatal("peft_backward: the activations keep LayerActs 0x%x per layer, this backward reads 0x%x (acts_alloc's keep: acts_keep)", a->keep, need);
    floatX dloss = a->count ? (floatX)(1.0 / a->count) : 0;
    tensor_zero(a->dxn, (size_t)N * C);
    for (int r0 = 0; r0 < N; r0 += a->logit_rows) { // the classifier a chunk of rows at a time (or all N at once)
        int rows = N - r0 < a->logit_rows ? N - r0 : a->logit_rows;
        if (a->logit_rows < N) { // this chunk's probabilities again (the losses are the same values)
            classifier_forward(net, a, a->capf, r0, rows);
            crossentropy_forward(a->losses + r0, a->logits, a->targets + r0, rows, V);
        }
        crossentropy_backward(a->logits, a->targets + r0, dloss, rows, V);   // logits now hold dlogits
        if (c->final_softcap > 0) softcap_backward(a->logits, a->capf, (size_t)rows * V);
        linear_backward(a->dxn + (size_t)r0 * C, g && g_outer ? g->wcls : (net->lora ? net->lora->dlm_head : NULL), a->logits, a->xf + (size_t)r0 * C, net_cls(net), NULL, rows, C, V);
    }
    tensor_zero(a->dx, (size_t)N * C);
    rmsnorm_backward(a->dx, g && g_outer ? g->rms_final : NULL, a->dxn, act_x(a, L, C), p->rms_final, a->rstdf, N, C, (float)c->norm_offset);
    for (int l = L - 1; l >= 0; l--) {
        const floatX *x = act_x(a, l, C);
        layer_use(l, l - 1);
        act_x_read(a, l, l - 1);
        if (a->checkpoint) layer_forward(net, a, l, x, 0); // recompute this layer's activations (same dropout masks)
        int below = (g && g_outer) || (g && l > g_layer_from) || (net->lora && lora_trainable_below(net->lora, l));
        layer_backward(net, a, l, x, (g && l >= g_layer_from) ? g : NULL, below);
    }
    if (c->embed_scale > 0 && ((g && g_outer) || (net->lora && net->lora->dembed))) tensor_scale(a->dx, (floatX)c->embed_scale, (size_t)N * C);
    if (g && g_outer) encoder_backward(g->embed, a->dx, a->inputs, N, C);
    if (net->lora && net->lora->dembed) encoder_backward(net->lora->dembed, a->dx, a->inputs, N, C); // modules_to_save
}

// Generation: one token at position pos, with a KV cache. Uses the same layers with N = 1. Batched
// generation (generate -f --batch): nb slots, each a sequence with its own KV cache and position; a step
// feeds N <= nb of them one token each, and every row's arithmetic is the one-token path's (forward_tokens).
typedef struct {
    floatX *x, *xn, *q, *k, *v, *ao, *g, *u, *h, *att, *logits, *rstd; // (nb, ...) a row per token of a step
    floatX *key_cache, *value_cache;   // (nb, L, npos, KVH*HS): slot b's cache at b * L * npos * KVH*HS
    int *token;                        // (nb) the input tokens, in tensor memory
    floatX *logits_host;               // (nb, V) the logits, copied out for sampling
    int npos, nb;                      // positions each cache holds; slots
    int team;                          // forward_token_team's threads (0: none), and their own copies of
    floatX *tx, *txn, *th;             // x (team, C), xn (team, max(C, QD)) and h (team, H), host memory
    QAct *tqa;                         // (team) the int8 activations of each thread's xn or h
    int *hist;                         // (nb, npos) each slot's token at each position (longrope: its cache is recomputed from them)
    int *rope_long;                    // (nb) longrope: the slot's cache holds keys rotated with the long factors
    int refilling;                     // longrope: forward_token is recomputing the cache with the other table
} RunState;

// npos: the positions generation will use (at most seq_len); the KV caches hold only those. nb: slots.
static void runstate_alloc_n(RunState *s, const Config *c, int npos, int nb) {
    s->npos = npos < c->seq_len ? (npos > 0 ? npos : 1) : c->seq_len;
    s->nb = nb;
    double kv = 2.0 * nb * c->n_layers * s->npos * c->n_kv_heads * c->head_dim * sizeof(floatX);
    if (!bytes_fit(kv)) fatal("%d KV caches of %d positions need %.4g GB: too large for this %s machine", nb, s->npos, kv / 1e9, machine_bits());
    size_t C = (size_t)c->dim, H = (size_t)c->hidden_dim, QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    size_t D = C > QD ? C : QD, f = sizeof(floatX), B = (size_t)nb, cache = B * c->n_layers * s->npos * KD * f;
    s->x = (floatX *)tensor_alloc(B * C * f);
    s->xn = (floatX *)tensor_alloc(B * D * f);
    s->q = (floatX *)tensor_alloc(B * QD * f);
    s->k = (floatX *)tensor_alloc(B * KD * f);
    s->v = (floatX *)tensor_alloc(B * KD * f);
    s->ao = (floatX *)tensor_alloc(B * QD * f);
    s->g = (floatX *)tensor_alloc(B * H * f);
    s->u = (floatX *)tensor_alloc(B * H * f);
    s->h = (floatX *)tensor_alloc(B * H * f);
    s->att = (floatX *)tensor_alloc(B * c->n_heads * s->npos * f);
    s->logits = (floatX *)tensor_alloc(B * c->vocab_size * f);
    s->rstd = (floatX *)tensor_alloc(B * f);
    s->key_cache = (floatX *)tensor_alloc(cache);
    s->value_cache = (floatX *)tensor_alloc(cache);
    tensor_prefault(s->key_cache, cache);
    tensor_prefault(s->value_cache, cache);
    s->token = (int *)tensor_alloc(B * sizeof(int));
    s->hist = (int *)calloc_check(B * s->npos, sizeof(int));
    s->rope_long = (int *)calloc_check(B, sizeof(int));
    s->refilling = 0;
    s->logits_host = (floatX *)calloc_check(B * c->vocab_size, f);
    s->team = num_threads() > 1 ? num_threads() : 0;
    s->tx = s->txn = s->th = NULL; s->tqa = NULL;
    if (s->team) {
        s->tx = (floatX *)calloc_check((size_t)s->team * C, f);
        s->txn = (floatX *)calloc_check((size_t)s->team * D, f);
        s->th = (floatX *)calloc_check((size_t)s->team * H, f);
        s->tqa = (QAct *)calloc_check((size_t)s->team, sizeof(QAct));
    }
}
static void runstate_alloc(RunState *s, const Config *c, int npos) { runstate_alloc_n(s, c, npos, 1); }
static void runstate_free(RunState *s) {
    floatX *ptrs[] = { s->x, s->xn, s->q, s->k, s->v, s->ao, s->g, s->u, s->h, s->att, s->logits, s->rstd, s->key_cache, s->value_cache };
    for (size_t i = 0; i < sizeof(ptrs) / sizeof(ptrs[0]); i++) tensor_free(ptrs[i]);
    tensor_free(s->token);
    free(s->hist); free(s->rope_long);
    free(s->logits_host);
    for (int t = 0; t < s->team; t++) { free(s->tqa[t].xq); free(s->tqa[t].xs); free(s->tqa[t].ls); free(s->tqa[t].lc); }
    free(s->tx); free(s->txn); free(s->th); free(s->tqa);
}

// forward_token on nt threads in one parallel region (a fork and join per token, not five per layer). Each
// thread keeps its own copy of x, of xn (RMSNorm), of h (SwiGLU) and of their int8 activations, computed
// from the same values (a few hundred floats), so the threads meet only where a step reads every thread's
// rows: after the attention, wo, gate/up and down (a barrier each, 4 per layer). Thread p < parts =
// min(threads, KVH) takes the KV heads g0 <= g < g1 = KVH (p+1) / parts: their rows of q, k and v (whole blocks
// of matvec_forward: HS % MATVEC_RB == 0), their RoPE, and the attention of their G query heads, none of
// which reads another thread's rows (the cache of these heads was written by this thread or before a join).
// Every output is computed by the same code on the same inputs as in forward_token: the same bits.
static int team_ok(const Net *net, const RunState *s, int nt) {
    const Config *c = &net->model->config;
    int C = c->dim, QD = c->n_heads * c->head_dim, H = c->hidden_dim;
    if (gpu_on || net->lora || nt < 2 || nt > s->team || c->head_dim % MATVEC_RB || (long)QD * C < MATVEC_PAR_MIN) return 0;
    if (c->attn_bias || c->qk_norm || c->norm_offset || c->post_norms || c->geglu || c->embed_scale > 0 || c->attn_scale > 0 ||
        c->attn_softcap > 0 || c->final_softcap > 0 || c->rope_local_theta > 0) return 0; // the families' switches: forward_token (a window is fine)
    for (int l = 0; l < c->n_layers; l++)
        for (int t = 0; t < NUM_TARGETS; t++) {
            Weight w = layer_weight(net->model, l, t);
            if (w.q && !qmatvec_ok(w.q, t == TGT_O ? QD : t == TGT_DOWN ? H : C)) return 0;
        }
    Weight w = net_cls(net);
    return !w.q || qmatvec_ok(w.q, C);
}
static void forward_token_team(Net *net, RunState *s, int token, int pos, int nt) {
    Config *c = &net->model->config;
    ParameterTensors *p = &net->model->params;
    int C = c->dim, H = c->hidden_dim, NH = c->n_heads, KVH = c->n_kv_heads, HS = c->head_dim, QD = NH * HS, KD = KVH * HS, G = NH / KVH;
    int D = C > QD ? C : QD, V = c->vocab_size;
    (void)nt; // without OpenMP (team_ok is then false)
    #pragma omp parallel num_threads(nt)
    {
        int tid = thread_id(), parts = team_size() < KVH ? team_size() : KVH; // the team OpenMP gave (<= nt)
        floatX *x = s->tx + (size_t)tid * C, *xn = s->txn + (size_t)tid * D, *h = s->th + (size_t)tid * H;
        QAct *qa = &s->tqa[tid];
        int quant = net->model->quant != 0;
        if (net->model->quant && net->model->quant_embed) encoder_forward_q(x, &token, &net->model->qembed, 1, C);
        else encoder_forward(x, &token, p->embed, 1, C);
        for (int l = 0; l < c->n_layers; l++) {
            floatX *kc = s->key_cache + ((size_t)l * s->npos) * KD, *vc = s->value_cache + ((size_t)l * s->npos) * KD;
            floatX *kp = kc + (size_t)pos * KD, *vp = vc + (size_t)pos * KD;
            const floatX *cs, *sn;
            net_rope(net, l, s->rope_long[0], &cs, &sn);
            cs += (size_t)pos * (HS / 2); sn += (size_t)pos * (HS / 2);
            rmsnorm_row(xn, NULL, x, p->rms_att + (size_t)l * C, C, c->norm_eps, 0);
            if (quant) qact_prepare(qa, xn, C);
            if (tid < parts) { // this thread's KV heads: q, k, v, RoPE, attention
                int g0 = KVH * tid / parts, g1 = KVH * (tid + 1) / parts;
                matvec_span(s->q, xn, qa, layer_weight(net->model, l, TGT_Q), C, g0 * G * HS, g1 * G * HS);
                matvec_span(kp, xn, qa, layer_weight(net->model, l, TGT_K), C, g0 * HS, g1 * HS);
                matvec_span(vp, xn, qa, layer_weight(net->model, l, TGT_V), C, g0 * HS, g1 * HS);
                rope_row(s->q + (size_t)g0 * G * HS, cs, sn, (g1 - g0) * G, HS);
                rope_row(kp + (size_t)g0 * HS, cs, sn, g1 - g0, HS);
                attention_heads(s->ao, s->att, s->q, kc, vc, g0 * G, g1 * G, pos, s->npos, NH, KVH, HS, layer_attn(c, l, pos + 1));
            }
            #pragma omp barrier
            Weight wo = layer_weight(net->model, l, TGT_O), wd = layer_weight(net->model, l, TGT_DOWN);
            if (quant) qact_prepare(qa, s->ao, QD);
            matvec_team(&s->xn, s->ao, qa, &wo, &C, 1, QD);                 // s->xn: the shared output
            for (int i = 0; i < C; i++) x[i] += s->xn[i];                   // residual
            rmsnorm_row(xn, NULL, x, p->rms_ffn + (size_t)l * C, C, c->norm_eps, 0);
            if (quant) qact_prepare(qa, xn, C);
            floatX *gu[2] = { s->g, s->u };
            Weight wgu[2] = { layer_weight(net->model, l, TGT_GATE), layer_weight(net->model, l, TGT_UP) };
            int ogu[2] = { H, H };
            matvec_team(gu, xn, qa, wgu, ogu, 2, C);
            swiglu_span(h, s->g, s->u, (size_t)H);
            if (quant) qact_prepare(qa, h, H);
            matvec_team(&s->xn, h, qa, &wd, &C, 1, H);
            for (int i = 0; i < C; i++) x[i] += s->xn[i];
        }
        rmsnorm_row(xn, NULL, x, p->rms_final, C, c->norm_eps, 0);
        Weight wcls = net_cls(net);
        if (wcls.q) qact_prepare(qa, xn, C);
        matvec_team(&s->logits, xn, qa, &wcls, &V, 1, C);
    }
}

// The logits (host memory, (N, V)) of N tokens, row n: tokens[n] at position pos[n] of the sequence in
// slot slots[n] (its KV cache). Each row is computed exactly as it would be alone (N = 1): the linear layers
// through linears_forward, the position-dependent steps (RoPE, the cache, attention) a row at a time.
static floatX *forward_tokens(Net *net, RunState *s, const int *tokens, const int *slots, const int *pos, int N) {
    Config *c = &net->model->config;
    ParameterTensors *p = &net->model->params;
    int C = c->dim, H = c->hidden_dim, NH = c->n_heads, KVH = c->n_kv_heads, HS = c->head_dim, QD = NH * HS, KD = KVH * HS, V = c->vocab_size;
    Lora *lo = net->lora;
    for (int n = 0; n < N; n++) { // longrope: pos + 1 positions switch a sequence's table for all of them, so the cache of
        int *hist = s->hist + (size_t)slots[n] * s->npos, want = rope_long(c, pos[n] + 1); // its positions < pos is
        hist[pos[n]] = tokens[n];                                                            // recomputed with it
        if (s->refilling || want == s->rope_long[slots[n]]) continue;                     // (transformers' Phi-3
        s->rope_long[slots[n]] = want;                                                      // generate drops its cache there)
        s->refilling = 1;
        for (int k = 0; k < pos[n]; k++) forward_tokens(net, s, hist + k, slots + n, &k, 1);
        s->refilling = 0;
    }
    if (N == 1 && slots[0] == 0 && team_ok(net, s, num_threads())) {
        forward_token_team(net, s, tokens[0], pos[0], num_threads());
        return memcpy(s->logits_host, s->logits, (size_t)V * sizeof(floatX));
    }
    size_t per_slot = (size_t)c->n_layers * s->npos * KD; // a slot's cache
    tensor_upload(s->token, tokens, (size_t)N * sizeof(int));
    if (net->lora && net->lora->embed) encoder_forward(s->x, s->token, net->lora->embed, N, C);
    else if (net->model->quant && net->model->quant_embed) encoder_forward_q(s->x, s->token, &net->model->qembed, N, C);
    else encoder_forward(s->x, s->token, p->embed, N, C);
    if (c->embed_scale > 0) tensor_scale(s->x, (floatX)c->embed_scale, (size_t)N * C);
    float wn = (float)c->norm_offset;
    for (int l = 0; l < c->n_layers; l++) {
        const floatX *cs, *sn;
        layer_use(l, (l + 1) % c->n_layers); // --offload: after the last layer, the next token's first
        // one token: k and v straight into its cache; several: into s->k, s->v, then a row into each cache
        floatX *kc0 = s->key_cache + (size_t)slots[0] * per_slot + (size_t)l * s->npos * KD, *vc0 = s->value_cache + (size_t)slots[0] * per_slot + (size_t)l * s->npos * KD;
        floatX *kp = N == 1 ? kc0 + (size_t)pos[0] * KD : s->k, *vp = N == 1 ? vc0 + (size_t)pos[0] * KD : s->v;
        rmsnorm_forward(s->xn, s->rstd, s->x, p->rms_att + (size_t)l * C, N, C, c->norm_eps, wn);
        floatX *qkv[3] = { s->q, kp, vp };
        Weight wqkv[3] = { layer_weight(net->model, l, TGT_Q), layer_weight(net->model, l, TGT_K), layer_weight(net->model, l, TGT_V) };
        LoraModule *lqkv[3] = { lora_mod(lo, l, TGT_Q), lora_mod(lo, l, TGT_K), lora_mod(lo, l, TGT_V) };
        int oqkv[3] = { QD, KD, KD };
        linears_forward(qkv, s->xn, wqkv, lqkv, oqkv, 3, N, C);                    // q, k, v in one pass
        if (c->attn_bias) {
            bias_forward(s->q, p->bq + (size_t)l * QD, N, QD);
            bias_forward(kp, p->bk + (size_t)l * KD, N, KD);
            bias_forward(vp, p->bv + (size_t)l * KD, N, KD);
        }
        if (c->qk_norm) { // in place, a head at a time
            rmsnorm_forward(s->q, NULL, s->q, p->q_norm + (size_t)l * HS, N * NH, HS, c->norm_eps, wn);
            rmsnorm_forward(kp, NULL, kp, p->k_norm + (size_t)l * HS, N * KVH, HS, c->norm_eps, wn);
        }
        for (int n = 0; n < N; n++) {
            floatX *kc = s->key_cache + (size_t)slots[n] * per_slot + (size_t)l * s->npos * KD, *vc = s->value_cache + (size_t)slots[n] * per_slot + (size_t)l * s->npos * KD;
            net_rope(net, l, s->rope_long[slots[n]], &cs, &sn);
            rope_forward(s->q + (size_t)n * QD, cs, sn, 1, 1, NH, HS, pos[n]);
            rope_forward(kp + (size_t)n * KD, cs, sn, 1, 1, KVH, HS, pos[n]);
            if (N > 1) { // the row into its cache (x * 1: the same values)
                scale_copy(kc + (size_t)pos[n] * KD, kp + (size_t)n * KD, 1, (size_t)KD);
                scale_copy(vc + (size_t)pos[n] * KD, vp + (size_t)n * KD, 1, (size_t)KD);
            }
            if (N == 1 || gpu_on) attention_decode_m(s->ao + (size_t)n * QD, s->att + (size_t)n * NH * s->npos, s->q + (size_t)n * QD, kc, vc, pos[n], s->npos, NH, KVH, HS, layer_attn(c, l, pos[n] + 1));
        }
        if (N > 1 && !gpu_on) { // the CPU: a thread per sequence's heads (a head's result does not depend on the range it falls in)
            #pragma omp parallel for schedule(dynamic)
            for (int n = 0; n < N; n++) {
                size_t at = (size_t)slots[n] * per_slot + (size_t)l * s->npos * KD;
                attention_heads(s->ao + (size_t)n * QD, s->att + (size_t)n * NH * s->npos, s->q + (size_t)n * QD, s->key_cache + at, s->value_cache + at, 0, NH, pos[n], s->npos, NH, KVH, HS, layer_attn(c, l, pos[n] + 1));
            }
        }
        Weight wo = layer_weight(net->model, l, TGT_O), wd = layer_weight(net->model, l, TGT_DOWN);
        LoraModule *lmo = lora_mod(lo, l, TGT_O), *lmd = lora_mod(lo, l, TGT_DOWN);
        linears_forward(&s->xn, s->ao, &wo, &lmo, &C, 1, N, QD);
        if (c->post_norms) rmsnorm_forward(s->xn, NULL, s->xn, p->rms_post_att + (size_t)l * C, N, C, c->norm_eps, wn);
        residual_forward(s->x, s->x, s->xn, (size_t)N * C);
        rmsnorm_forward(s->xn, s->rstd, s->x, p->rms_ffn + (size_t)l * C, N, C, c->norm_eps, wn);
        floatX *gu[2] = { s->g, s->u };
        Weight wgu[2] = { layer_weight(net->model, l, TGT_GATE), layer_weight(net->model, l, TGT_UP) };
        LoraModule *lgu[2] = { lora_mod(lo, l, TGT_GATE), lora_mod(lo, l, TGT_UP) };
        int ogu[2] = { H, H };
        linears_forward(gu, s->xn, wgu, lgu, ogu, 2, N, C);                       // gate and up in one pass
        glu_forward(s->h, s->g, s->u, (size_t)N * H, c->geglu);
        linears_forward(&s->xn, s->h, &wd, &lmd, &C, 1, N, H);
        if (c->post_norms) rmsnorm_forward(s->xn, NULL, s->xn, p->rms_post_ffn + (size_t)l * C, N, C, c->norm_eps, wn);
        residual_forward(s->x, s->x, s->xn, (size_t)N * C);
    }
    rmsnorm_forward(s->xn, s->rstd, s->x, p->rms_final, N, C, c->norm_eps, wn);
    Weight wcls = net_cls(net);
    LoraModule *none = NULL;
    linears_forward(&s->logits, s->xn, &wcls, &none, &V, 1, N, C);
    if (c->final_softcap > 0) softcap_forward(s->logits, NULL, s->logits, c->final_softcap, (size_t)N * V);
    tensor_download(s->logits_host, s->logits, (size_t)N * V * sizeof(floatX));
    return s->logits_host;
}
// the logits (host memory) of token at position pos (the sequence of slot 0)
static floatX *forward_token(Net *net, RunState *s, int token, int pos) {
    int slot = 0;
    return forward_tokens(net, s, &token, &slot, &pos, 1);
}

// the tensors of a model and its adapter that the kernels read, mirrored on the GPU (no-op on the CPU).
// --offload: the linear layers' weights are streamed instead (net_offload), so they are left out here.
static void model_mirror(Model *m, int on) {
#ifdef PEFT_CUDA
    // the linear layers' weights and an untied classifier are read only by matmuls: unless trained, the
    // GPU may keep them in bf16 only (with bf16 matmuls, which round them to bf16 anyway)
    // (rounded to bf16 here by all threads, so that half the bytes cross the bus and no kernel converts them)
    uint16_t *h16[NUM_PARAM_TENSORS] = { 0 };
    for (int i = 2; on && gpu_on && i < NUM_PARAM_TENSORS; i++) {
        if (m->w16[i] && (m->trained >> i & 1)) fatal("internal error: %s was loaded in bf16 only (gpu_keep16) but is trained", param_names[i]);
        if (!(param_target(i) >= 0 || i == 11) || (m->trained >> i & 1) || !m->param_sizes[i]) continue;
        const floatX *w = *param_ptr(&m->params, i);
        long n = (long)m->param_sizes[i];
        if (m->w16[i] && (offload_on || !gpu_weights_bf16())) fatal("internal error: %s was loaded in bf16 only (gpu_keep16) for a run that reads its floats", param_names[i]);
        if (offload_on && param_target(i) >= 0) { gpu_mirror_skip(w, (size_t)n * sizeof(floatX)); continue; }
        if (!gpu_weights_bf16()) continue; // (gpu_mirror_bf16 would do nothing)
        if (m->w16[i]) { gpu_mirror_bf16_from(w, (size_t)n * sizeof(floatX), m->w16[i]); continue; } // loaded in bf16
        h16[i] = (uint16_t *)malloc_check((size_t)n * sizeof(uint16_t));
        #pragma omp parallel for schedule(static)
        for (long k = 0; k < n; k++) h16[i][k] = f32_to_bf16((float)w[k]); // round_bf16_kernel's rounding (nearest even)
        gpu_mirror_bf16_from(w, (size_t)n * sizeof(floatX), h16[i]);
    }
#endif
    if (on) tensor_mirror(m->params_memory, m->num_parameters * sizeof(floatX)); else tensor_unmirror(m->params_memory);
#ifdef PEFT_CUDA
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) free(h16[i]);
#endif
    QTensor *qs[2] = { &m->qembed, &m->qcls };
    int nq = m->quant && !offload_on ? m->config.n_layers * NUM_TARGETS : 0;
    for (int i = 0; i < nq + 2; i++) {
        QTensor *q = i < nq ? &m->qw[i] : qs[i - nq];
        if (!q->memory) continue;
        if (on) tensor_mirror(q->memory, q->memory_bytes); else tensor_unmirror(q->memory);
    }
}
// --offload: each layer's frozen linear weights registered for streaming (pinned in host memory), and
// PLAN_SLOTS device slots; the quantized blocks as they are, float weights as the bf16 values the
// resident run keeps (or fp32 with --dtype fp32). --shard: the same bytes (layer_image's), of which this
// rank keeps its chunk of each layer (in device memory, or pinned host memory with --offload; net->shard
// holds them on the host) and the slot is filled by gathering every rank's; the host tensors' pages go
// back once the chunk holds their part (nothing on the host reads them after). A failure: one line,
// before training starts.
static void net_offload(Net *net) {
#ifdef PEFT_CUDA
    Model *m = net->model;
    const Config *c = &m->config;
    char err[256];
    int bf16 = gpu_weights_bf16(), world = shard_on ? dist_world : 1;
    const char *flag = shard_on ? "--shard" : "--offload";
    size_t per_layer = 0, chunk = 0, image_off[NUM_TARGETS], image[NUM_TARGETS];
    for (int t = 0; t < NUM_TARGETS; t++) { int in, out; target_dims(c, t, &in, &out); per_layer += (size_t)in * out; }
    // the bytes each tensor streams (the device's), and with --shard the chunk of every layer (the loader's, if it sharded)
    if (shard_on) { // (the model keeps only these parts from here on, however it was loaded)
        shard_load.rank = dist_rank; shard_load.world = world; shard_load.el = bf16 ? sizeof(uint16_t) : sizeof(floatX);
        chunk = shard_chunk_bytes(layer_image(image_off, image, m, shard_load.el), world);
    }
    if (shard_on) net->shard = (uint8_t *)malloc_check((shard_host ? (size_t)c->n_layers : 1) * chunk); // each layer's (kept in host memory), or one at a time (uploaded)
    // a float base's bf16 values: every layer's (--offload streams from them), or one layer's at a time (--shard keeps chunks)
    if (!m->quant && bf16) net->stream16 = (uint16_t *)malloc_check((shard_on ? 1 : (size_t)c->n_layers) * per_layer * sizeof(uint16_t));
    for (int l = 0; l < c->n_layers; l++) {
        uint16_t *h16 = net->stream16 ? net->stream16 + (shard_on ? 0 : (size_t)l * per_layer) : NULL;
        const void *src[NUM_TARGETS];
        void *host[NUM_TARGETS];
        size_t off[NUM_TARGETS], bytes[NUM_TARGETS], hbytes[NUM_TARGETS];
        layer_sources(src, off, bytes, host, hbytes, m, l, h16);
        for (int t = 0; t < NUM_TARGETS; t++)
            if (gpu_offload_add(l, host[t], hbytes[t], shard_on ? NULL : src[t], bytes[t], off[t], !m->quant && h16, err, sizeof(err))) fatal("%s: %s", flag, err);
        if (!shard_on) continue;
        if (memcmp(off, image_off, sizeof(off)) || memcmp(bytes, image, sizeof(bytes))) fatal("internal error: layer %d's tensors are not the layout --shard's chunks assume", l);
        uint8_t *mine = net->shard + (shard_host ? (size_t)l * chunk : 0);
        shard_fill(mine, chunk, src, off, bytes, NUM_TARGETS, dist_rank);
        for (int t = 0; t < NUM_TARGETS; t++) release_pages(host[t], hbytes[t]); // the chunk holds this rank's part now
        if (gpu_offload_shard(l, mine, chunk, dist_rank, world, shard_host, err, sizeof(err))) fatal("--shard: %s; lower -b or -T, or a smaller --gpu-memory plan", err);
    }
    if (shard_on) fprintf(stderr, "shard: rank %d of %d keeps %.2f MiB of each layer's frozen weights (a chunk of its %d-way split) in %s memory; "
                          "each layer is gathered into one of %d buffers before it runs\n", dist_rank, world, chunk / 1048576.0, world, shard_host ? "pinned host" : "GPU", PLAN_SLOTS);
    if (shard_on && !shard_host) { free(net->shard); net->shard = NULL; } // uploaded: the device holds them
    if (gpu_offload_ready(PLAN_SLOTS, err, sizeof(err))) fatal("%s: %s; lower -b or -T, or a smaller --gpu-memory plan", flag, err);
#else
    (void)net;
#endif
}
static void lora_mirror(Lora *lo, const Config *c, int on) {
    if (!lo) return;
    floatX *ps[6] = { lo->params, lo->grads, lo->embed, lo->lm_head, lo->dembed, lo->dlm_head };
    size_t vc = (size_t)c->vocab_size * c->dim, ns[6] = { lo->num_params, lo->num_params, vc, vc, vc, vc };
    for (int i = 0; i < 6; i++) {
        if (!ps[i]) continue;
        if (on) tensor_mirror(ps[i], ns[i] * sizeof(floatX)); else tensor_unmirror(ps[i]);
    }
}
// adapter tensors written or read by host code (loading, saving, resuming)
static void lora_to_device(Lora *lo) { if (lo) { tensor_to_device(lo->params); tensor_to_device(lo->embed); tensor_to_device(lo->lm_head); } }
static void lora_to_host(Lora *lo) { if (lo) { tensor_to_host(lo->params); tensor_to_host(lo->grads); tensor_to_host(lo->embed); tensor_to_host(lo->lm_head); } }

static void net_init(Net *net, Model *m, Lora *lo) {
    net->model = m; net->lora = lo; net->stream16 = NULL; net->shard = NULL;
    rope_tables(&net->rope_cos, &net->rope_sin, &m->config, 0);
    size_t nrope = (size_t)m->config.seq_len * (m->config.head_dim / 2) * sizeof(floatX);
    tensor_mirror(net->rope_cos, nrope); tensor_mirror(net->rope_sin, nrope);
    net->rope_cos_local = net->rope_sin_local = net->rope_cos_long = net->rope_sin_long = NULL;
    if (m->config.rope_longrope) {
        rope_tables(&net->rope_cos_long, &net->rope_sin_long, &m->config, 1);
        tensor_mirror(net->rope_cos_long, nrope); tensor_mirror(net->rope_sin_long, nrope);
    }
    if (m->config.rope_local_theta > 0) { // plain RoPE at the local base
        Config lc = m->config;
        lc.rope_theta = lc.rope_local_theta; lc.rope_linear = 0; lc.rope_llama3 = 0;
        rope_tables(&net->rope_cos_local, &net->rope_sin_local, &lc, 0);
        tensor_mirror(net->rope_cos_local, nrope); tensor_mirror(net->rope_sin_local, nrope);
    }
    model_mirror(m, 1);
    if (offload_on) net_offload(net);
    lora_mirror(lo, &m->config, 1);
}
static void net_free(Net *net) {
#ifdef PEFT_CUDA
    if (offload_on) gpu_offload_end();
#endif
    free(net->stream16); net->stream16 = NULL;
    free(net->shard); net->shard = NULL;
    lora_mirror(net->lora, &net->model->config, 0);
    model_mirror(net->model, 0);
    tensor_unmirror(net->rope_cos); tensor_unmirror(net->rope_sin);
    free(net->rope_cos); free(net->rope_sin);
    if (net->rope_cos_local) { tensor_unmirror(net->rope_cos_local); tensor_unmirror(net->rope_sin_local); }
    free(net->rope_cos_local); free(net->rope_sin_local);
    if (net->rope_cos_long) { tensor_unmirror(net->rope_cos_long); tensor_unmirror(net->rope_sin_long); }
    free(net->rope_cos_long); free(net->rope_sin_long);
}

// ----------------------------------------------------------------------------
// regular expressions: PEFT's target_modules given as one string is a Python regex that must match a module's
// whole name (re.fullmatch, e.g. "model.layers.0.self_attn.q_proj"). This is a small backtracking matcher for
// the part of Python's syntax such patterns use: literals, ., [classes] with ranges and negation, \d \w \s (and
// \D \W \S) and escaped characters, groups (...) and (?:...) with |, lookahead (?=...) (?!...), the quantifiers
// * + ? {m} {m,} {m,n} (greedy; a lazy ? suffix is accepted and matches the same for fullmatch), ^ and $.

enum { RX_CHAR, RX_ANY, RX_CLASS, RX_GROUP, RX_BOL, RX_EOL, RX_AHEAD, RX_NAHEAD };
typedef struct RxNode RxNode;
typedef struct { RxNode *items; int n; } RxSeq;
struct RxNode {
    int kind, min, max;           // max < 0: unbounded
    unsigned char set[32];        // RX_CHAR (one bit) and RX_CLASS: the bytes that match
    RxSeq *alts; int nalts;       // RX_GROUP / RX_AHEAD / RX_NAHEAD: alternatives
};
typedef struct { const char *p; const char *err; } RxParser;

static void rx_set(unsigned char *set, int c) { set[c >> 3] |= (unsigned char)(1 << (c & 7)); }
static int rx_has(const unsigned char *set, int c) { return set[c >> 3] >> (c & 7) & 1; }
static void rx_escape_class(unsigned char *set, int e) { // \d \w \s and their negations into set; 0 if e is none of them
    unsigned char tmp[32];
    memset(tmp, 0, sizeof(tmp));
    int lower = tolower(e);
    for (int c = 0; c < 256; c++)
        if ((lower == 'd' && isdigit(c)) || (lower == 'w' && (isalnum(c) || c == '_')) || (lower == 's' && (c == ' ' || (c >= 9 && c <= 13)))) rx_set(tmp, c);
    for (int i = 0; i < 32; i++) set[i] |= e == lower ? tmp[i] : (unsigned char)~tmp[i];
}
static int rx_escape_char(int e) { return e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'f' ? '\f' : e == 'v' ? '\v' : e; }
static void rx_free_seq(RxSeq *s);
static void rx_free_node(RxNode *n) { for (int i = 0; i < n->nalts; i++) rx_free_seq(&n->alts[i]); free(n->alts); }
static void rx_free_seq(RxSeq *s) { for (int i = 0; i < s->n; i++) rx_free_node(&s->items[i]); free(s->items); s->items = NULL; s->n = 0; }

static int rx_parse_alts(RxParser *ps, RxNode *group);
static int rx_parse_seq(RxParser *ps, RxSeq *seq) {
    int cap = 0;
    seq->items = NULL; seq->n = 0;
    while (*ps->p && *ps->p != '|' && *ps->p != ')') {
        RxNode nd;
        memset(&nd, 0, sizeof(nd));
        nd.min = nd.max = 1;
        char c = *ps->p++;
        if (c == '.') { nd.kind = RX_ANY; }
        else if (c == '^') nd.kind = RX_BOL;
        else if (c == '$') nd.kind = RX_EOL;
        else if (c == '\\') {
            if (!*ps->p) { ps->err = "pattern ends with a backslash"; return -1; }
            int e = (unsigned char)*ps->p++;
            if (strchr("dDwWsS", e)) { nd.kind = RX_CLASS; rx_escape_class(nd.set, e); }
            else if (isalnum(e) && !strchr("ntrfv", e)) { ps->err = "unsupported escape (backreferences and \\b are not supported)"; return -1; }
            else { nd.kind = RX_CHAR; rx_set(nd.set, rx_escape_char(e)); }
        } else if (c == '[') {
            nd.kind = RX_CLASS;
            int neg = *ps->p == '^';
            if (neg) ps->p++;
            int first = 1;
            while (*ps->p && (*ps->p != ']' || first)) {
                int lo = (unsigned char)*ps->p++;
                first = 0;
                if (lo == '\\') {
                    if (!*ps->p) break;
                    int e = (unsigned char)*ps->p++;
                    if (strchr("dDwWsS", e)) { rx_escape_class(nd.set, e); continue; }
                    lo = rx_escape_char(e);
                }
                int hi = lo;
                if (ps->p[0] == '-' && ps->p[1] && ps->p[1] != ']') {
                    ps->p++;
                    hi = (unsigned char)*ps->p++;
                    if (hi == '\\' && *ps->p) hi = rx_escape_char((unsigned char)*ps->p++);
                    if (hi < lo) { ps->err = "bad character range"; return -1; }
                }
                for (int k = lo; k <= hi; k++) rx_set(nd.set, k);
            }
            if (*ps->p != ']') { ps->err = "unterminated [class]"; return -1; }
            ps->p++;
            if (neg) for (int i = 0; i < 32; i++) nd.set[i] = (unsigned char)~nd.set[i];
        } else if (c == '(') {
            nd.kind = RX_GROUP;
            if (ps->p[0] == '?') {
                if (ps->p[1] == ':') nd.kind = RX_GROUP;
                else if (ps->p[1] == '=') nd.kind = RX_AHEAD;
                else if (ps->p[1] == '!') nd.kind = RX_NAHEAD;
                else { ps->err = "unsupported (?...) group"; return -1; }
                ps->p += 2;
            }
            if (rx_parse_alts(ps, &nd)) { rx_free_node(&nd); return -1; }
            if (*ps->p != ')') { rx_free_node(&nd); ps->err = "missing )"; return -1; }
            ps->p++;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') { ps->err = "nothing to repeat"; return -1; }
        else { nd.kind = RX_CHAR; rx_set(nd.set, (unsigned char)c); }
        // a quantifier
        if (nd.kind != RX_BOL && nd.kind != RX_EOL && nd.kind != RX_AHEAD && nd.kind != RX_NAHEAD) {
            if (*ps->p == '*') { nd.min = 0; nd.max = -1; ps->p++; }
            else if (*ps->p == '+') { nd.min = 1; nd.max = -1; ps->p++; }
            else if (*ps->p == '?') { nd.min = 0; nd.max = 1; ps->p++; }
            else if (*ps->p == '{' && isdigit((unsigned char)ps->p[1])) {
                char *end;
                long a = strtol(ps->p + 1, &end, 10), b = a;
                if (*end == ',') { if (end[1] == '}') { b = -1; end++; } else b = strtol(end + 1, &end, 10); }
                if (*end != '}' || a > 1000 || b > 1000 || (b >= 0 && b < a)) { rx_free_node(&nd); ps->err = "bad {m,n}"; return -1; }
                nd.min = (int)a; nd.max = (int)b; ps->p = end + 1;
            }
            if (nd.min != 1 || nd.max != 1) { if (*ps->p == '?') ps->p++; } // lazy: same set of full matches
        }
        if (seq->n == cap) { cap = cap ? 2 * cap : 8; seq->items = (RxNode *)realloc_check(seq->items, (size_t)cap * sizeof(RxNode)); }
        seq->items[seq->n++] = nd;
    }
    return 0;
}
static int rx_parse_alts(RxParser *ps, RxNode *group) {
    for (;;) {
        group->alts = (RxSeq *)realloc_check(group->alts, (size_t)(group->nalts + 1) * sizeof(RxSeq));
        if (rx_parse_seq(ps, &group->alts[group->nalts++])) return -1;
        if (*ps->p != '|') return 0;
        ps->p++;
    }
}

// continuations: after a sequence ends, go on with the rest of the enclosing one, or repeat a group again
typedef struct RxCont { int kind; const RxSeq *seq; int idx; const RxNode *node; int count; size_t start; const struct RxCont *next; } RxCont;
enum { RXK_SEQ, RXK_REP, RXK_END, RXK_ACCEPT };
typedef struct { const char *s; size_t n; long steps; } RxText;

static int rx_match(RxText *t, const RxSeq *seq, int idx, size_t pos, const RxCont *k);
static int rx_cont(RxText *t, size_t pos, const RxCont *k);
static int rx_group_once(RxText *t, const RxNode *nd, size_t pos, const RxCont *k) {
    for (int a = 0; a < nd->nalts; a++) if (rx_match(t, &nd->alts[a], 0, pos, k)) return 1;
    return 0;
}
static int rx_rep(RxText *t, const RxNode *nd, int count, size_t start, size_t pos, const RxCont *k) {
    // greedy: one more iteration first (never an empty one beyond the minimum), else continue
    if ((nd->max < 0 || count < nd->max) && (count < nd->min || pos != start || count == 0)) {
        RxCont again = { RXK_REP, NULL, 0, nd, count + 1, pos, k };
        if (rx_group_once(t, nd, pos, &again)) return 1;
    }
    return count >= nd->min && rx_cont(t, pos, k);
}
static int rx_cont(RxText *t, size_t pos, const RxCont *k) {
    if (k->kind == RXK_END) return pos == t->n;
    if (k->kind == RXK_ACCEPT) return 1;
    if (k->kind == RXK_SEQ) return rx_match(t, k->seq, k->idx, pos, k->next);
    return rx_rep(t, k->node, k->count, k->start, pos, k->next);
}
static int rx_match(RxText *t, const RxSeq *seq, int idx, size_t pos, const RxCont *k) {
    if (++t->steps > 1000000) return 0; // a pathological pattern: give up (no match)
    if (idx == seq->n) return rx_cont(t, pos, k);
    const RxNode *nd = &seq->items[idx];
    RxCont rest = { RXK_SEQ, seq, idx + 1, NULL, 0, 0, k };
    switch (nd->kind) {
    case RX_BOL: return pos == 0 && rx_match(t, seq, idx + 1, pos, k);
    case RX_EOL: return (pos == t->n || (pos + 1 == t->n && t->s[pos] == '\n')) && rx_match(t, seq, idx + 1, pos, k);
    case RX_AHEAD: case RX_NAHEAD: {
        RxCont acc = { RXK_ACCEPT, NULL, 0, NULL, 0, 0, NULL };
        int m = rx_group_once(t, nd, pos, &acc);
        return m == (nd->kind == RX_AHEAD) && rx_match(t, seq, idx + 1, pos, k);
    }
    case RX_GROUP: return rx_rep(t, nd, 0, pos, pos, &rest);
    default: { // one character: count how many repeat, then back off (greedy)
        size_t most = 0;
        while ((nd->max < 0 || (int)most < nd->max) && pos + most < t->n) {
            unsigned char c = (unsigned char)t->s[pos + most];
            if (nd->kind == RX_ANY ? c == '\n' : !rx_has(nd->set, c)) break;
            most++;
        }
        for (long m = (long)most; m >= nd->min; m--) if (rx_match(t, seq, idx + 1, pos + (size_t)m, k)) return 1;
        return 0;
    }
    }
}

// re.fullmatch(pattern, text): 1 match, 0 no match, -1 bad pattern (message in err)
static int regex_fullmatch(const char *pattern, const char *text, const char **err) {
    RxParser ps = { pattern, NULL };
    RxNode top;
    memset(&top, 0, sizeof(top));
    top.kind = RX_GROUP; top.min = top.max = 1;
    int rc = rx_parse_alts(&ps, &top);
    if (!rc && *ps.p) { ps.err = "unbalanced )"; rc = -1; }
    if (rc) { rx_free_node(&top); if (err) *err = ps.err; return -1; }
    RxText t = { text, strlen(text), 0 };
    RxCont end = { RXK_END, NULL, 0, NULL, 0, 0, NULL };
    int m = rx_group_once(&t, &top, 0, &end);
    rx_free_node(&top);
    return m;
}

// ----------------------------------------------------------------------------
// LoRA: injection, initialisation, and adapters in Hugging Face PEFT's format
// (adapter_config.json + adapter_model.safetensors, keys
//  base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight (r, in) and .lora_B.weight (out, r))

typedef struct {
    int r;                 // rank
    float alpha;           // lora_alpha
    int rslora;            // scale alpha/sqrt(r) instead of alpha/r
    float dropout;
    unsigned targets;      // bit t set: inject into target_names[t]
    unsigned char *layers; // (L) 1 = inject into this layer; NULL = all layers
    int init_gaussian;     // A ~ N(0, 1/r) instead of kaiming-uniform(a=sqrt(5))
    int dora;              // DoRA (use_dora)
    uint64_t seed;
    char target_regex[512]; // target_modules as one regex string (PEFT: re.fullmatch on the module name); "" = none
} LoraConfig;

static const char *target_block(int t) { return t <= TGT_O ? "self_attn" : "mlp"; }

// Phi-3's fused modules: PEFT puts ONE LoRA on qkv_proj (A (r, C), B (QD+2KD, r) whose rows span q, k and v) and
// one on gate_up_proj ([gate; up]). peft.c keeps q, k and v apart (and gate and up) as modules that share the
// first one's A (and dA: the gradient of the one A sums the three parts') and whose B rows follow each other in
// memory, so that [B_q; B_k; B_v] is PEFT's B as it is. fused_lead(t): the module whose A t uses.
static int lora_fused(const Config *c) { return c->family == FAM_PHI3; }
static int fused_lead(int fused, int t) { return !fused ? t : (t == TGT_K || t == TGT_V) ? TGT_Q : t == TGT_UP ? TGT_GATE : t; }
// PEFT's name of module t (NULL: a part of a fused module, which has no name of its own)
static const char *lora_name(int fused, int t) {
    static const char *f[NUM_TARGETS] = { "qkv_proj", NULL, NULL, "o_proj", "gate_up_proj", NULL, "down_proj" };
    return fused ? f[t] : target_names[t];
}
// the rows of B that module t's PEFT tensor holds: its own, or the whole fused module's
static int lora_out_rows(const Lora *lo, int l, int t) {
    int out = lo->mods[l * NUM_TARGETS + t].out;
    for (int k = t + 1; lo->fused && k < NUM_TARGETS && fused_lead(1, k) == t && k != t; k++) out += lo->mods[l * NUM_TARGETS + k].out;
    return out;
}

// Lay out the modules with ranks[l*NUM_TARGETS+t] (0 = none) and scales; allocate params (and grads if training).
static void lora_alloc(Lora *lo, const Config *c, const int *ranks, const float *scales, int dora, int training) {
    memset(lo, 0, sizeof(*lo));
    lo->n_layers = c->n_layers;
    lo->dora = dora;
    lo->fused = lora_fused(c);
    for (int i = 0; lo->fused && i < c->n_layers * NUM_TARGETS; i++) {
        int lead = i - i % NUM_TARGETS + fused_lead(1, i % NUM_TARGETS);
        if (ranks[i] != ranks[lead]) fatal("internal: a part of a fused module has rank %d, its module %d", ranks[i], ranks[lead]);
    }
    lo->mods = (LoraModule *)calloc_check((size_t)c->n_layers * NUM_TARGETS, sizeof(LoraModule));
    double plan = 0; // 32-bit machines: the sums below must not wrap (see bytes_fit)
    for (int i = 0; i < c->n_layers * NUM_TARGETS; i++) {
        int in, out;
        target_dims(c, i % NUM_TARGETS, &in, &out);
        plan += (double)ranks[i] * (in + out) + out;
    }
    if (!bytes_fit(plan * sizeof(floatX) * (training ? 4 : 1)))
        fatal("the adapters need %.4g GB: too large for this %s machine", plan * sizeof(floatX) * (training ? 4 : 1) / 1e9, machine_bits());
    size_t total = 0, nout = 0;
    for (int i = 0; i < c->n_layers * NUM_TARGETS; i++) {
        LoraModule *m = &lo->mods[i];
        target_dims(c, i % NUM_TARGETS, &m->in, &m->out);
        m->r = ranks[i];
        m->scale = scales[i];
        if (!m->r) continue;
        int shared = fused_lead(lo->fused, i % NUM_TARGETS) != i % NUM_TARGETS; // A is the lead's
        total += (size_t)m->r * ((shared ? 0 : m->in) + m->out) + (dora ? (size_t)m->out : 0);
        nout += (size_t)m->out;
    }
    lo->num_params = total;
    lo->params = (floatX *)calloc_check(total, sizeof(floatX));
    if (training) lo->grads = (floatX *)calloc_check(total, sizeof(floatX));
    if (dora) lo->wnorm_memory = (floatX *)tensor_alloc(nout * sizeof(floatX));
    // per module A, B, magnitude; a fused module's parts after its lead: one A, then every part's B, then every
    // part's magnitude, so that PEFT's fused B [B_q; B_k; B_v] and magnitude [m_q; m_k; m_v] lie as the file has them
    size_t off = 0, woff = 0;
    for (int i = 0; i < c->n_layers * NUM_TARGETS; i++) {
        LoraModule *m = &lo->mods[i];
        int t = i % NUM_TARGETS, parts = 1;
        if (!m->r || fused_lead(lo->fused, t) != t) continue; // (a part: laid out with its lead)
        while (lo->fused && t + parts < NUM_TARGETS && fused_lead(1, t + parts) == t) parts++;
        m->A = lo->params + off;
        if (training) m->dA = lo->grads + off;
        off += (size_t)m->r * m->in;
        for (int k = 0; k < parts; k++) {
            LoraModule *pm = m + k;
            pm->A = m->A; pm->dA = m->dA;
            pm->B = lo->params + off;
            if (training) pm->dB = lo->grads + off;
            off += (size_t)pm->r * pm->out;
        }
        for (int k = 0; dora && k < parts; k++) {
            LoraModule *pm = m + k;
            pm->mag = lo->params + off;
            if (training) pm->dmag = lo->grads + off;
            off += (size_t)pm->out;
            pm->wnorm = lo->wnorm_memory + woff;
            woff += (size_t)pm->out;
        }
    }
}

// activation buffers for N rows (u, and dropout masks when training with dropout)
static void lora_alloc_acts(Lora *lo, int N) {
    size_t total = 0, maxdim = 0;
    for (int i = 0; i < lo->n_layers * NUM_TARGETS; i++) {
        LoraModule *m = &lo->mods[i];
        if (!m->r) continue;
        int shared = fused_lead(lo->fused, i % NUM_TARGETS) != i % NUM_TARGETS; // its mask is the lead's
        total += (size_t)N * m->r + (lo->dropout > 0 && !shared ? (size_t)N * m->in : 0);
        size_t d = (size_t)(m->in > m->out ? m->in : m->out);
        if (d > maxdim) maxdim = d;
    }
    tensor_free(lo->act_memory);
    lo->act_memory = (floatX *)tensor_alloc(total * sizeof(floatX));
    size_t off = 0;
    for (int i = 0; i < lo->n_layers * NUM_TARGETS; i++) {
        LoraModule *m = &lo->mods[i];
        if (!m->r) continue;
        int lead = i - i % NUM_TARGETS + fused_lead(lo->fused, i % NUM_TARGETS);
        m->u = lo->act_memory + off; off += (size_t)N * m->r;
        m->mask_shared = lead != i; // PEFT drops the fused module's input once: the parts use the lead's mask
        if (lo->dropout > 0 && lead != i) m->mask = lo->mods[lead].mask;
        else if (lo->dropout > 0) { m->mask = lo->act_memory + off; off += (size_t)N * m->in; }
        else m->mask = NULL;
    }
    lora_scratch_reserve((size_t)N * maxdim);
}
static void lora_free(Lora *lo) {
    if (!lo) return;
    free(lo->mods); free(lo->params); free(lo->grads); tensor_free(lo->wnorm_memory); tensor_free(lo->act_memory); free(lo->embed); free(lo->lm_head); free(lo->dembed); free(lo->dlm_head);
    memset(lo, 0, sizeof(*lo));
}
// an adapter freed: its GPU mirror first (a later allocation may reuse the host address the mirror is keyed by)
static void lora_release(Lora *lo, const Config *c) { lora_mirror(lo, c, 0); lora_free(lo); }

static float lora_scale(float alpha, int r, int rslora) { return rslora ? alpha / sqrtf((float)r) : alpha / (float)r; }

// the base weight (out, in) that module t of layer l adapts
static floatX *model_weight(Model *model, int l, int t) {
    Config *c = &model->config;
    ParameterTensors *p = &model->params;
    size_t C = (size_t)c->dim, H = (size_t)c->hidden_dim, QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    floatX *W[NUM_TARGETS] = { p->wq + l * QD * C, p->wk + l * KD * C, p->wv + l * KD * C, p->wo + l * C * QD, p->w1 + l * H * C, p->w3 + l * H * C, p->w2 + l * C * H };
    return W[t];
}

// DoRA's magnitude starts as the row norms of the (merged) weight, so that a new adapter changes nothing
static void lora_init_dora(Lora *lo, Model *model) {
    for (int i = 0; i < lo->n_layers * NUM_TARGETS; i++) {
        LoraModule *m = &lo->mods[i];
        if (!m->r || !m->mag) continue;
        layer_use(i / NUM_TARGETS, -1);
        dora_weight_norm_w(m->mag, layer_weight(model, i / NUM_TARGETS, i % NUM_TARGETS), m);
    }
}

// New adapter: A kaiming-uniform with a=sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)) (PEFT's default), B = 0.
// target_modules as a regex: does it match the whole name of layer l's module t (as PEFT names it)?
static int lora_regex_selects(const char *regex, int fused, int l, int t) {
    char name[128];
    snprintf(name, sizeof(name), "model.layers.%d.%s.%s", l, target_block(t), lora_name(fused, fused_lead(fused, t)));
    return regex_fullmatch(regex, name, NULL) == 1;
}
static int lora_create(Lora *lo, const Config *c, const LoraConfig *lc, int training) {
    int n = c->n_layers * NUM_TARGETS;
    int *ranks = (int *)calloc_check((size_t)n, sizeof(int));
    float *scales = (float *)calloc_check((size_t)n, sizeof(float));
    for (int l = 0; l < c->n_layers; l++)
        for (int t = 0; t < NUM_TARGETS; t++)
            if (lc->target_regex[0] ? lora_regex_selects(lc->target_regex, lora_fused(c), l, t) : ((lc->targets >> fused_lead(lora_fused(c), t) & 1) && (!lc->layers || lc->layers[l]))) {
                ranks[l * NUM_TARGETS + t] = lc->r;
                scales[l * NUM_TARGETS + t] = lora_scale(lc->alpha, lc->r, lc->rslora);
            }
    lora_alloc(lo, c, ranks, scales, lc->dora, training);
    free(ranks); free(scales);
    lo->dropout = lc->dropout;
    lo->rng = lc->seed ^ 0x9E3779B97F4A7C15ull;
    uint64_t rng = lc->seed * 0x2545F4914F6CDD1Dull + 1;
    for (int i = 0; i < n; i++) {
        LoraModule *m = &lo->mods[i];
        for (size_t k = 0; k < (size_t)m->r * m->in; k++)
            m->A[k] = lc->init_gaussian ? (floatX)(random_normal(&rng) / m->r) : (floatX)((2 * random_f32(&rng) - 1) / sqrt((double)m->in));
    }
    return 0;
}

static void lora_key(char *buf, size_t n, int fused, int l, int t, const char *ab, const char *prefix) {
    snprintf(buf, n, "%s%smodel.layers.%d.%s.%s.lora_%s.weight", prefix ? prefix : "", "base_model.model.", l, target_block(t), lora_name(fused, t), ab);
}

// adapter_config.json as PEFT writes it (the fields PEFT 0.21 reads; the rest take PEFT's defaults)
static char *lora_config_json(const Lora *lo, const LoraConfig *lc, const char *base_model) {
    StrBuf b = { 0 };
    sb_puts(&b, "{\n  \"alpha_pattern\": {},\n  \"auto_mapping\": null,\n  \"base_model_name_or_path\": ");
    if (base_model) sb_json_string(&b, base_model); else sb_puts(&b, "null");
    sb_puts(&b, ",\n  \"bias\": \"none\",\n  \"fan_in_fan_out\": false,\n  \"inference_mode\": true,\n  \"init_lora_weights\": true,\n");
    // layers_to_transform: the layers that carry modules, when not all of them
    int all = 1;
    for (int l = 0; l < lo->n_layers; l++) {
        int any = 0;
        for (int t = 0; t < NUM_TARGETS; t++) any |= lo->mods[l * NUM_TARGETS + t].r > 0;
        if (!any) all = 0;
    }
    if (all || lc->target_regex[0]) sb_puts(&b, "  \"layers_to_transform\": null,\n"); // (PEFT ignores it for a regex)
    else {
        sb_puts(&b, "  \"layers_to_transform\": [");
        int first = 1;
        for (int l = 0; l < lo->n_layers; l++) {
            int any = 0;
            for (int t = 0; t < NUM_TARGETS; t++) any |= lo->mods[l * NUM_TARGETS + t].r > 0;
            if (any) { sb_printf(&b, "%s%d", first ? "" : ", ", l); first = 0; }
        }
        sb_puts(&b, "],\n  \"layers_pattern\": \"layers\",\n");
    }
    sb_printf(&b, "  \"lora_alpha\": %s,\n  \"lora_dropout\": %s,\n  \"modules_to_save\": %s,\n  \"peft_type\": \"LORA\",\n  \"r\": %d,\n  \"rank_pattern\": {},\n  \"revision\": null,\n  \"target_modules\": [",
              json_intish(lc->alpha), json_float(lc->dropout), lo->embed && lo->lm_head ? "[\"embed_tokens\", \"lm_head\"]" : lo->embed ? "[\"embed_tokens\"]" : lo->lm_head ? "[\"lm_head\"]" : "null", lc->r);
    int first = 1;
    if (lc->target_regex[0]) { b.n -= 1; b.s[b.n] = 0; sb_json_string(&b, lc->target_regex); } // a string: PEFT's regex form
    else for (int t = 0; t < NUM_TARGETS; t++) if ((lc->targets >> t & 1) && lora_name(lo->fused, t)) { sb_printf(&b, "%s\"%s\"", first ? "" : ", ", lora_name(lo->fused, t)); first = 0; }
    sb_printf(&b, "%s,\n  \"task_type\": \"CAUSAL_LM\",\n  \"use_dora\": %s,\n  \"use_rslora\": %s\n}\n", lc->target_regex[0] ? "" : "]", lo->dora ? "true" : "false", lc->rslora ? "true" : "false");
    return b.s;
}

// Write OUTDIR/adapter_model.safetensors and OUTDIR/adapter_config.json (each atomically).
static int lora_save(const Lora *lo, const LoraConfig *lc, const char *dir, const char *base_model) {
    if (mkdir_p(dir)) return -1;
    int n = 0;
    STWrite *ts = (STWrite *)calloc_check((size_t)lo->n_layers * NUM_TARGETS * 3 + 2, sizeof(STWrite));
    for (int l = 0; l < lo->n_layers; l++)
        for (int t = 0; t < NUM_TARGETS; t++) {
            LoraModule *m = &lo->mods[l * NUM_TARGETS + t];
            if (!m->r || !lora_name(lo->fused, t)) continue; // (a fused module's parts are in its first's tensors)
            STWrite *a = &ts[n++], *bw = &ts[n++];
            lora_key(a->name, sizeof(a->name), lo->fused, l, t, "A", NULL);
            a->dtype = DT_F32; a->ndim = 2; a->shape[0] = m->r; a->shape[1] = m->in; a->fdata = m->A;
            lora_key(bw->name, sizeof(bw->name), lo->fused, l, t, "B", NULL);
            bw->dtype = DT_F32; bw->ndim = 2; bw->shape[0] = lora_out_rows(lo, l, t); bw->shape[1] = m->r; bw->fdata = m->B;
            if (m->mag) {
                STWrite *mw = &ts[n++];
                snprintf(mw->name, sizeof(mw->name), "base_model.model.model.layers.%d.%s.%s.lora_magnitude_vector", l, target_block(t), lora_name(lo->fused, t));
                mw->dtype = DT_F32; mw->ndim = 1; mw->shape[0] = lora_out_rows(lo, l, t); mw->fdata = m->mag;
            }
        }
    for (int which = 0; which < 2; which++) { // modules_to_save: full weights under PEFT's saved names
        floatX *w = which ? lo->lm_head : lo->embed;
        if (!w) continue;
        STWrite *e = &ts[n++];
        snprintf(e->name, sizeof(e->name), "%s", which ? "base_model.model.lm_head.weight" : "base_model.model.model.embed_tokens.weight");
        e->dtype = DT_F32; e->ndim = 2; e->shape[0] = lo->mts_rows; e->shape[1] = lo->mts_cols; e->fdata = w;
    }
    char path[4096];
    path_join(path, sizeof(path), dir, "adapter_model.safetensors");
    int rc = st_write(path, ts, n, "{\"format\":\"pt\"}");
    free(ts);
    if (rc) return -1;
    char *cfg = lora_config_json(lo, lc, base_model);
    path_join(path, sizeof(path), dir, "adapter_config.json");
    AtomicFile af;
    if (atomic_open(&af, path)) { free(cfg); return -1; }
    atomic_write(&af, cfg, strlen(cfg));
    free(cfg);
    return atomic_commit(&af);
}

// does PEFT's pattern key (from rank_pattern / alpha_pattern) select module `name`?
// PEFT matches keys as a regex "(.*\.)?key$"; plain keys (the common case) are matched as that suffix.
static int peft_key_matches(const char *key, const char *name) {
    size_t kl = strlen(key), nl = strlen(name);
    if (kl > nl) return 0;
    if (strcmp(name + nl - kl, key)) return 0;
    return kl == nl || name[nl - kl - 1] == '.';
}

// modules_to_save weights as PEFT saves them: "base_model.model.model.embed_tokens.weight" (1) or
// "base_model.model.lm_head.weight" (2), possibly with a "modules_to_save.<adapter>." segment; else 0
static int saved_module_key(const char *key) {
    const char *names[2] = { "embed_tokens", "lm_head" };
    for (int i = 0; i < 2; i++) {
        const char *p = strstr(key, names[i]);
        if (!p || (p != key && p[-1] != '.')) continue;
        p += strlen(names[i]);
        if (!strcmp(p, ".weight")) return i + 1;
        if (!strncmp(p, ".modules_to_save.", 17)) { const char *w = strchr(p + 17, '.'); if (w && !strcmp(w, ".weight")) return i + 1; }
    }
    return 0;
}

// Parse "...layers.<l>.<block>.<target>.lora_<A|B>[.<adapter>].weight" (ab = A or B) or
// "....lora_magnitude_vector[.<adapter>][.weight]" (ab = M, DoRA); returns 0 and fills l, t, ab.
static int parse_lora_key(const char *key, int fused, int *l, int *t, char *ab) {
    const char *p = strstr(key, "layers.");
    if (!p) return -1;
    p += 7;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || *end != '.' || v < 0 || v > 100000) return -1;
    *l = (int)v;
    p = end + 1;
    for (int i = 0; i < NUM_TARGETS; i++) {
        const char *nm = lora_name(fused, i);
        if (!nm) continue;
        size_t bl = strlen(target_block(i)), tl = strlen(nm);
        if (!strncmp(p, target_block(i), bl) && p[bl] == '.' && !strncmp(p + bl + 1, nm, tl) && p[bl + 1 + tl] == '.') {
            const char *q = p + bl + 1 + tl + 1;
            if (!strncmp(q, "lora_magnitude_vector", 21) && (q[21] == 0 || q[21] == '.')) {
                // DoRA magnitude: "...lora_magnitude_vector" [".<adapter>"] [".weight"]
                *ab = 'M';
                q += 21;
                if (*q == '.') { q++; const char *dot = strchr(q, '.'); if (dot && strcmp(dot, ".weight")) return -1; if (!*q) return -1; }
                *t = i;
                return 0;
            }
            if (strncmp(q, "lora_", 5) || (q[5] != 'A' && q[5] != 'B') || q[6] != '.') return -1;
            *ab = q[5];
            q += 7;
            const char *w = strstr(q, "weight");
            if (!w || strcmp(w, "weight")) return -1; // ".weight" or ".<adapter>.weight"
            *t = i;
            return 0;
        }
    }
    return -1;
}

// adapter_config.json fields that older or newer PEFT versions write: unknown ones are ignored, as PEFT
// ignores them (enable_lora of PEFT <= 0.2, fields of versions after 0.21); known ones that change the
// model are refused unless they hold their default. target_modules naming no Llama module means an
// adapter for another architecture (GPT-2's c_attn, ...), which PEFT refuses too.
static int lora_config_check(const Json *j, const Config *c, const char *cpath) {
    const char *base = json_str(json_get(j, "base_model_name_or_path"));
    const Json *tm = json_get(j, "target_modules");
    int fused = lora_fused(c);
    if (tm && tm->type == JSON_ARRAY) {
        for (int i = 0; i < tm->n; i++) {
            const char *s = json_str(&tm->items[i]);
            int known = s && !strcmp(s, "all-linear");
            for (int t = 0; s && t < NUM_TARGETS && !known; t++) known = lora_name(fused, t) && !strcmp(s, lora_name(fused, t));
            if (known || (s && (!strcmp(s, "embed_tokens") || !strcmp(s, "lm_head")))) continue;
            return set_error(cpath, "target_modules lists '%s', which %s models do not have: an adapter for another architecture%s%s%s (its modules are %s)",
                             s ? s : "(not a string)", c->family == FAM_LLAMA ? "Llama" : family_arch[c->family], base ? " (base_model_name_or_path \"" : "", base ? base : "", base ? "\")" : "",
                             fused ? "qkv_proj o_proj gate_up_proj down_proj" : "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj");
        }
    } else if (tm && tm->type != JSON_STRING && tm->type != JSON_NULL) return set_error(cpath, "target_modules must be a list, a string or null");
    // settings that change what the adapter computes: accepted at their defaults only
    const char *nonnull[] = { "layer_replication", "trainable_token_indices", "target_parameters", "alora_invocation_tokens" };
    const char *why[] = { "duplicates base layers (PEFT's layer_replication)", "trains single token embeddings", "adapts nn.Parameter weights (MoE experts)", "is an activated LoRA (aLoRA)" };
    for (int i = 0; i < 4; i++) {
        const Json *v = json_get(j, nonnull[i]);
        if (v && v->type != JSON_NULL && !((v->type == JSON_ARRAY || v->type == JSON_OBJECT) && v->n == 0))
            return set_error(cpath, "%s is set: the adapter %s, which peft.c does not support", nonnull[i], why[i]);
    }
    if (json_bool_or(j, "use_qalora", 0)) return set_error(cpath, "use_qalora is true: a QALoRA adapter for a GPTQ-quantized base, which peft.c does not support");
    if (json_bool_or(j, "lora_bias", 0)) return set_error(cpath, "lora_bias is true: the adapter has a bias on lora_B, which peft.c does not support");
    return 0;
}

// PEFT's key prefix for a LlamaForCausalLM: "base_model.model." (the PeftModel wrapper) + "model." (the
// LlamaModel inside). 0 if key has it before "layers."; else -1 and an error naming what is wrong:
// PEFT itself loads none of such weights (it warns "Found missing adapter keys") and runs the base model.
static int lora_key_prefix_check(const char *key, const char *wpath) {
    const char *want = "base_model.model.model.", *p = strstr(key, "layers.");
    size_t n = p ? (size_t)(p - key) : 0, wl = strlen(want);
    if (p && n == wl && !strncmp(key, want, wl)) return 0;
    const char *what = p && n + 6 == wl && !strncmp(key, "base_model.model.", 17) ? "lacks the 'model.' segment (an adapter of a LlamaModel, or a tool that dropped it)"
                     : p && n > wl && !strncmp(key, want, wl) ? "has an extra segment before 'layers.' (an adapter saved from a wrapped model)"
                     : "does not start with 'base_model.model.model.layers.'";
    return set_error(wpath, "tensor '%s' %s; a LlamaForCausalLM adapter's keys are 'base_model.model.model.layers.N...'. PEFT would load none of these weights (it warns \"Found missing adapter keys\") and run the base model unchanged", key, what);
}

// Load a PEFT LoRA adapter folder for model config c. lc receives the adapter's settings.
static int lora_load(Lora *lo, LoraConfig *lc, const Config *c, const char *dir, int training) {
    char cpath[4096], wpath[4096];
    path_join(cpath, sizeof(cpath), dir, "adapter_config.json");
    path_join(wpath, sizeof(wpath), dir, "adapter_model.safetensors");
    if (!dir_exists(dir)) return set_error(dir, "adapter folder not found");
    if (!file_exists(wpath)) {
        char bpath[4096];
        path_join(bpath, sizeof(bpath), dir, "adapter_model.bin");
        if (file_exists(bpath)) return set_error(bpath, "pickled adapters are not supported; convert to adapter_model.safetensors");
        return set_error(wpath, "missing adapter weights");
    }
    Json *j = json_load(cpath);
    if (!j) return -1;
    int rc = 0;
    memset(lc, 0, sizeof(*lc));
    const char *pt = json_str(json_get(j, "peft_type"));
    Json *jr = json_get(j, "r"), *ja = json_get(j, "lora_alpha");
    const char *bias = json_str(json_get(j, "bias"));
    Json *rp = json_get(j, "rank_pattern"), *ap = json_get(j, "alpha_pattern"), *lt = json_get(j, "layers_to_transform"), *mts = json_get(j, "modules_to_save");
    if (j->type != JSON_OBJECT) { rc = set_error(cpath, "not a JSON object"); goto done; }
    if (!pt || strcmp(pt, "LORA")) { rc = set_error(cpath, "peft_type is %s, only LORA is supported", pt ? pt : "missing"); goto done; }
    if (!json_is_int(jr) || jr->num < 1 || jr->num > 65536) { rc = set_error(cpath, "'r' must be a positive integer"); goto done; }
    if (!json_is_num(ja) || !isfinite((float)ja->num)) { rc = set_error(cpath, "'lora_alpha' must be a number (in float range)"); goto done; }
    if (bias && strcmp(bias, "none")) { rc = set_error(cpath, "bias '%s' is not supported (only \"none\")", bias); goto done; }
    if ((rc = lora_config_check(j, c, cpath))) goto done;
    if (json_bool_or(j, "fan_in_fan_out", 0)) { rc = set_error(cpath, "fan_in_fan_out=true is not supported for Llama linear layers"); goto done; }
    lc->dora = json_bool_or(j, "use_dora", 0);
    {   // target_modules as one string other than "all-linear": a regex on the whole module name (PEFT's re.fullmatch)
        Json *tm = json_get(j, "target_modules");
        const char *rerr = NULL;
        if (tm && tm->type == JSON_STRING && strcmp(tm->str, "all-linear")) {
            if (tm->len >= sizeof(lc->target_regex) || strlen(tm->str) != tm->len) { rc = set_error(cpath, "target_modules regex is too long (or holds a NUL)"); goto done; }
            if (regex_fullmatch(tm->str, "", &rerr) < 0) { rc = set_error(cpath, "target_modules '%s': %s", tm->str, rerr); goto done; }
            memcpy(lc->target_regex, tm->str, tm->len + 1);
        }
    }
    int save_embed = 0, save_head = 0; // modules_to_save: full replacement weights
    if (mts && mts->type == JSON_ARRAY) {
        for (int i = 0; i < mts->n; i++) {
            const char *s = json_str(&mts->items[i]);
            if (s && !strcmp(s, "embed_tokens")) save_embed = 1;
            else if (s && !strcmp(s, "lm_head")) save_head = 1;
            else { rc = set_error(cpath, "modules_to_save entry '%s' is not supported (embed_tokens and lm_head are)", s ? s : "?"); goto done; }
        }
    } else if (mts && mts->type != JSON_NULL) { rc = set_error(cpath, "modules_to_save must be a list or null"); goto done; }
    lc->r = (int)jr->num;
    lc->alpha = (float)ja->num;
    lc->rslora = json_bool_or(j, "use_rslora", 0);
    lc->dropout = (float)json_num_or(j, "lora_dropout", 0);
    if (lc->dropout < 0 || lc->dropout >= 1) { rc = set_error(cpath, "lora_dropout must be in [0, 1)"); goto done; }
    if (lt && lt->type != JSON_NULL) {
        lc->layers = (unsigned char *)calloc_check((size_t)c->n_layers, 1);
        if (json_is_int(lt) && lt->num >= 0 && lt->num < c->n_layers) lc->layers[(int)lt->num] = 1;
        else if (lt->type == JSON_ARRAY) {
            for (int i = 0; i < lt->n; i++) {
                if (!json_is_int(&lt->items[i]) || lt->items[i].num < 0 || lt->items[i].num >= c->n_layers) { rc = set_error(cpath, "layers_to_transform entry out of range (model has %d layers)", c->n_layers); goto done; }
                lc->layers[(int)lt->items[i].num] = 1;
            }
        } else { rc = set_error(cpath, "bad layers_to_transform"); goto done; }
    }
    {
        SafeTensors st;
        if (st_open(&st, wpath)) { rc = -1; goto done; }
        int n = c->n_layers * NUM_TARGETS;
        int *ranks = (int *)calloc_check((size_t)n, sizeof(int));
        float *scales = (float *)calloc_check((size_t)n, sizeof(float));
        unsigned char *seen = (unsigned char *)calloc_check((size_t)n * 3, 1);
        // ranks from the tensors themselves, checked against the config
        for (int i = 0; i < st.n && !rc; i++) {
            int l, t; char ab;
            if (st.t[i].numel == 0) { // ZeRO-3 partitions each weight; a save without gathering writes shape [0]
                char sh[160] = "";
                for (int d = 0; d < st.t[i].ndim; d++) snprintf(sh + strlen(sh), sizeof(sh) - strlen(sh), "%s%lld", d ? ", " : "", (long long)st.t[i].shape[d]);
                rc = set_error(wpath, "tensor '%s' is empty (shape [%s]): saved from a DeepSpeed ZeRO-3 run without gathering the weights (save with stage3_gather_16bit_weights_on_model_save, or gather them before save_pretrained)", st.t[i].name, sh);
                break;
            }
            int which = saved_module_key(st.t[i].name);
            if (which) {
                if ((which == 1 && !save_embed) || (which == 2 && !save_head)) { rc = set_error(wpath, "tensor '%s' is not listed in modules_to_save", st.t[i].name); break; }
                continue;
            }
            if (parse_lora_key(st.t[i].name, lora_fused(c), &l, &t, &ab)) {
                int l2, t2; char ab2;
                if (!parse_lora_key(st.t[i].name, !lora_fused(c), &l2, &t2, &ab2)) // the other naming: an adapter of another family
                    rc = set_error(wpath, "tensor '%s' adapts %s, which %s does not have (its modules are %s)", st.t[i].name, lora_name(!lora_fused(c), t2), family_arch[c->family],
                                   lora_fused(c) ? "qkv_proj o_proj gate_up_proj down_proj" : "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj");
                else rc = set_error(wpath, "unexpected tensor '%s' (not a LoRA A/B weight of a %s layer)", st.t[i].name, family_arch[c->family]);
                break;
            }
            if ((rc = lora_key_prefix_check(st.t[i].name, wpath))) break;
            if (l >= c->n_layers) { rc = set_error(wpath, "tensor '%s' is for layer %d but the model has %d layers", st.t[i].name, l, c->n_layers); break; }
            if (lc->target_regex[0] && !lora_regex_selects(lc->target_regex, lora_fused(c), l, t)) {
                rc = set_error(wpath, "tensor '%s': target_modules '%s' does not match model.layers.%d.%s.%s", st.t[i].name, lc->target_regex, l, target_block(t), lora_name(lora_fused(c), t)); break;
            }
            int slot = (l * NUM_TARGETS + t) * 3 + (ab == 'A' ? 0 : ab == 'B' ? 1 : 2);
            if (seen[slot]++) { rc = set_error(wpath, "tensor '%s' appears twice (with and without an adapter name?)", st.t[i].name); break; }
            if (ab == 'M') {
                if (!lc->dora) { rc = set_error(wpath, "tensor '%s' is a DoRA magnitude but adapter_config.json has use_dora false", st.t[i].name); break; }
                continue;
            }
            if (st.t[i].ndim != 2) { rc = set_error(wpath, "tensor '%s' must be 2-D", st.t[i].name); break; }
            int r = (int)(ab == 'A' ? st.t[i].shape[0] : st.t[i].shape[1]);
            if (r <= 0) { rc = set_error(wpath, "tensor '%s' has rank 0", st.t[i].name); break; }
            if (ranks[l * NUM_TARGETS + t] && ranks[l * NUM_TARGETS + t] != r) { rc = set_error(wpath, "lora_A and lora_B of layer %d %s disagree on the rank", l, target_names[t]); break; }
            ranks[l * NUM_TARGETS + t] = r;
            lc->targets |= 1u << t;
        }
        for (int i = 0; lora_fused(c) && i < n; i++) { // a fused module's parts: its rank, its A
            int lead = i - i % NUM_TARGETS + fused_lead(1, i % NUM_TARGETS);
            if (lead != i) { ranks[i] = ranks[lead]; if (ranks[i]) lc->targets |= 1u << (i % NUM_TARGETS); }
        }
        for (int i = 0; i < n && !rc; i++) {
            if (!ranks[i]) continue;
            int l = i / NUM_TARGETS, t = i % NUM_TARGETS;
            char mname[128];
            snprintf(mname, sizeof(mname), "model.layers.%d.%s.%s", l, target_block(t), lora_name(lora_fused(c), fused_lead(lora_fused(c), t)));
            int want_r = lc->r;
            float alpha = lc->alpha;
            for (int k = 0; rp && rp->type == JSON_OBJECT && k < rp->n; k++) if (peft_key_matches(rp->keys[k], mname) && json_is_int(&rp->items[k])) want_r = fabs(rp->items[k].num) <= 65536 ? (int)rp->items[k].num : -1;
            for (int k = 0; ap && ap->type == JSON_OBJECT && k < ap->n; k++) if (peft_key_matches(ap->keys[k], mname) && json_is_num(&ap->items[k])) alpha = (float)ap->items[k].num;
            if (ranks[i] != want_r) { rc = set_error(wpath, "layer %d %s has rank %d but adapter_config.json says r=%d", l, target_names[t], ranks[i], want_r); break; }
            if (lc->dora && !seen[(i - t + fused_lead(lora_fused(c), t)) * 3 + 2]) { rc = set_error(wpath, "layer %d %s has no lora_magnitude_vector but use_dora is true", l, target_names[t]); break; }
            if (lc->layers && !lc->layers[l]) { rc = set_error(wpath, "layer %d has LoRA weights but is not in layers_to_transform", l); break; }
            scales[i] = lora_scale(alpha, ranks[i], lc->rslora);
        }
        if (!rc) {
            lora_alloc(lo, c, ranks, scales, lc->dora, training);
            lo->dropout = lc->dropout;
            for (int i = 0; i < n && !rc; i++) {
                LoraModule *m = &lo->mods[i];
                int l = i / NUM_TARGETS, t = i % NUM_TARGETS;
                if (!m->r || !lora_name(lo->fused, t)) continue; // (a fused module's parts are read with its first)
                for (int ab = 0; ab < (lc->dora ? 3 : 2) && !rc; ab++) {
                    // the key with or without an adapter-name segment
                    const char want = "ABM"[ab];
                    STTensor *tt = NULL;
                    for (int k = 0; k < st.n && !tt; k++) {
                        int kl, kt; char kab;
                        if (!parse_lora_key(st.t[k].name, lo->fused, &kl, &kt, &kab) && kl == l && kt == t && kab == want) tt = &st.t[k];
                    }
                    if (!tt) { rc = set_error(wpath, "layer %d %s has lora_%c but no lora_%c", l, target_names[t], ab ? 'A' : 'B', ab ? 'B' : 'A'); break; }
                    int64_t shape[2] = { ab == 0 ? m->r : lora_out_rows(lo, l, t), ab == 0 ? m->in : m->r };
                    if (st_check_shape(&st, tt, ab == 2 ? 1 : 2, shape) || st_read_floatX(&st, tt, ab == 0 ? m->A : ab == 1 ? m->B : m->mag, NULL)) rc = -1;
                }
            }
            // modules_to_save: the replacement weights, (V, C) each
            for (int which = 1; which <= 2 && !rc; which++) {
                if ((which == 1 && !save_embed) || (which == 2 && !save_head)) continue;
                STTensor *tt = NULL;
                for (int k = 0; k < st.n && !tt; k++) if (saved_module_key(st.t[k].name) == which) tt = &st.t[k];
                if (!tt) { rc = set_error(wpath, "modules_to_save lists %s but the file has no such weight", which == 1 ? "embed_tokens" : "lm_head"); break; }
                int64_t shape[2] = { c->vocab_size, c->dim };
                if (tt->ndim == 2 && tt->shape[1] == c->dim && tt->shape[0] != c->vocab_size) {
                    rc = set_error(wpath, "'%s' is [%lld, %d]: the adapter was trained on a base whose vocabulary was resized to %lld tokens, but this model has %d "
                                   "(resize the base's embeddings to %lld first, as PEFT needs too, or use the merged model)", tt->name, (long long)tt->shape[0], c->dim, (long long)tt->shape[0], c->vocab_size, (long long)tt->shape[0]);
                    break;
                }
                floatX *w = (floatX *)malloc_check((size_t)c->vocab_size * c->dim * sizeof(floatX));
                if (which == 1) lo->embed = w; else lo->lm_head = w;
                lo->mts_rows = c->vocab_size; lo->mts_cols = c->dim;
                if (st_check_shape(&st, tt, 2, shape) || st_read_floatX(&st, tt, w, NULL)) rc = -1;
            }
            if (rc) lora_free(lo);
        }
        free(ranks); free(scales); free(seen);
        st_close(&st);
    }
done:
    json_free(j);
    if (rc) { free(lc->layers); lc->layers = NULL; }
    return rc;
}

// Several adapters at once: the exact weighted sum of their deltas, sum_i w_i * s_i * B_i A_i, as one
// LoRA of rank sum_i r_i with A = [w_i s_i A_i] stacked and B = [B_i] side by side, scale 1.
// (PEFT's add_weighted_adapter with combination_type="cat" builds the same thing.)
static void lora_combine(Lora *out, Lora *const *ins, const float *w, int n, const Config *c) {
    int nm = c->n_layers * NUM_TARGETS;
    int *ranks = (int *)calloc_check((size_t)nm, sizeof(int));
    float *scales = (float *)calloc_check((size_t)nm, sizeof(float));
    for (int i = 0; i < nm; i++) {
        for (int k = 0; k < n; k++) ranks[i] += ins[k]->mods[i].r;
        scales[i] = 1;
    }
    lora_alloc(out, c, ranks, scales, 0, 0);
    for (int i = 0; i < nm; i++) {
        LoraModule *m = &out->mods[i];
        int r0 = 0;
        for (int k = 0; k < n; k++) {
            LoraModule *s = &ins[k]->mods[i];
            for (int j = 0; j < s->r; j++)
                for (int x = 0; x < s->in; x++) m->A[(size_t)(r0 + j) * m->in + x] = (floatX)(w[k] * s->scale) * s->A[(size_t)j * s->in + x];
            for (int o = 0; o < s->out; o++)
                for (int j = 0; j < s->r; j++) m->B[(size_t)o * m->r + r0 + j] = s->B[(size_t)o * s->r + j];
            r0 += s->r;
        }
    }
    free(ranks); free(scales);
}

// Merge into the base weights: W' = W + scale * B A; DoRA: W' = mag / ||W + scale B A|| * (W + scale B A) per row.
// Unmerge (sign -1) subtracts the LoRA delta again (plain LoRA only: DoRA keeps the original weights instead).
static void lora_merge(Model *model, const Lora *lo, int sign) {
    for (int l = 0; l < lo->n_layers; l++)
        for (int t = 0; t < NUM_TARGETS; t++) {
            LoraModule *m = &lo->mods[l * NUM_TARGETS + t];
            if (!m->r) continue;
            floatX *w = model_weight(model, l, t), s = (floatX)(sign * m->scale);
            floatX *norm = m->mag ? (floatX *)malloc_check((size_t)m->out * sizeof(floatX)) : NULL;
            if (norm) dora_weight_norm(norm, w, m);
            #pragma omp parallel for schedule(static)
            for (int o = 0; o < m->out; o++) {
                floatX *row = w + (size_t)o * m->in;
                for (int k = 0; k < m->r; k++) {
                    floatX b = s * m->B[(size_t)o * m->r + k];
                    for (int x = 0; x < m->in; x++) row[x] += b * m->A[(size_t)k * m->in + x];
                }
                if (norm) { floatX g = m->mag[o] / norm[o]; for (int x = 0; x < m->in; x++) row[x] *= g; }
            }
            free(norm);
        }
}

// ----------------------------------------------------------------------------
// instruction data: LLaMA-Factory's alpaca and sharegpt datasets, chat templates, prompt masking
//
// A row becomes a conversation: an optional system message, then user/assistant turns that alternate and end
// with the assistant. alpaca: {"instruction", "input", "output", "system"?, "history"?: [[prompt, response], ...]},
// the user turn being instruction + "\n" + input (LLaMA-Factory's AlpacaDatasetConverter); sharegpt:
// {"conversations": [{"from": "human"|"gpt"|"system", "value"}], "system"?} or {"messages": [{"role": "user"|
// "assistant"|"system", "content"}]}. A file is a JSON array of rows or JSONL (one row per line).
// The conversation is rendered by a model's chat template, exactly as transformers' apply_chat_template renders
// it (tests/make_chat_fixtures.py holds the real template strings and checks the renders). The render is a list
// of parts: text, or the BOS / EOS token (whose strings bos_token / eos_token the template wrote); each part is
// prompt or response. Text between BOS/EOS is tokenized as one string (as a tokenizer does with the whole
// render); a token is a response token when its first byte lies in a response part. The loss counts the
// response tokens only (--train-on-prompt: all). Each example ends with the template's end of turn (EOS, or
// <|eot_id|> / <|im_end|>). Truncation to --cutoff-len is LLaMA-Factory's infer_seqlen, turn by turn.

enum { DATA_TEXT, DATA_ALPACA, DATA_SHAREGPT };
enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT };
typedef struct { int role; const char *s; size_t n; } ChatMsg;

// A chat template is one row of a table: what the model's jinja template writes around each message.
// Per role (system, user, assistant): pre + content + post; a reply (assistant) is then closed by the EOS
// token if eos_reply, then post2. tests/make_chat_fixtures.py renders the real templates (the models'
// tokenizer_config.json) and test_all checks that every render of this table equals transformers'.
enum { SYS_TURN, SYS_INST, SYS_PREFIX, SYS_BARE, SYS_NONE };  // ChatTemplate.system
enum { BOS_NONE, BOS_START, BOS_USER };                        // ChatTemplate.bos_at
typedef struct {
    const char *name, *bos, *eos;   // bos_token / eos_token as the model's tokenizer names them (NULL: none)
    const char *eot;                // the token that ends a reply: chat stops when the model writes it
    int bos_at;                     // BOS once at the start, or before every user turn (Llama 2)
    int system;                     // a turn of its own; Llama 2's <<SYS>> block inside the first user turn;
                                    // prefixed to the first user turn (Gemma); bare text first (alpaca); none
    const char *sys_default;        // the system text of a conversation that has none (NULL: nothing)
    const char *pre[3], *post[3];   // per role (ROLE_*): the text before and after the content
    const char *post2;              // a reply: after its EOS token
    int eos_reply;                  // the EOS token closes each reply
    int strip;                      // content.strip()'d (Llama 2: with the <<SYS>> block in front)
    int alternate;                  // raise_exception unless the turns alternate user/assistant
    const char *gen;                // the text add_generation_prompt appends
    int eos_end;                    // eos_token closes a render without a generation prompt (Phi-3)
    int think;                      // Qwen3: <think> blocks, kept only in the replies after the last user turn
} ChatTemplate;

enum { TPL_ALPACA, TPL_LLAMA2, TPL_LLAMA3, TPL_MISTRAL, TPL_CHATML, TPL_VICUNA, TPL_QWEN, TPL_QWEN3, TPL_GEMMA, TPL_PHI3, NUM_TEMPLATES };
#define CHATML_ROLES { "<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n" }, { "<|im_end|>\n", "<|im_end|>\n", "<|im_end|>\n" }
#define L3_HEADER(role) "<|start_header_id|>" role "<|end_header_id|>\n\n"
static const ChatTemplate templates[NUM_TEMPLATES] = {
    // LLaMA-Factory's alpaca and vicuna, as its Template._get_jinja_template writes them for the tokenizer
    { "alpaca", "<s>", "</s>", "</s>", BOS_NONE, SYS_BARE,
      "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n",
      { "", "### Instruction:\n", "" }, { "", "\n\n### Response:\n", "" }, "\n\n", 1, 0, 0, "", 0, 0 },
    // Llama-2-chat: <s>[INST] <<SYS>>\nS\n<</SYS>>\n\nQ [/INST] A </s>
    { "llama2", "<s>", "</s>", "</s>", BOS_USER, SYS_INST, NULL,
      { "<<SYS>>\n", "[INST] ", " " }, { "\n<</SYS>>\n\n", " [/INST]", " " }, "", 1, 1, 1, "", 0, 0 },
    // Meta-Llama-3-Instruct (and the Llama 3.1 tokenizer's file): a header per message, content trimmed
    { "llama3", "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>", BOS_START, SYS_TURN, NULL,
      { L3_HEADER("system"), L3_HEADER("user"), L3_HEADER("assistant") }, { "<|eot_id|>", "<|eot_id|>", "<|eot_id|>" }, "", 0, 1, 0,
      L3_HEADER("assistant"), 0, 0 },
    // Mistral-7B-Instruct-v0.1 / Mixtral-8x7B-Instruct-v0.1: no system role
    { "mistral", "<s>", "</s>", "</s>", BOS_START, SYS_NONE, NULL,
      { "", "[INST] ", "" }, { "", " [/INST]", "" }, "", 1, 0, 1, "", 0, 0 },
    // ChatML (OpenHermes-2.5): <|im_start|>role\ncontent<|im_end|>\n
    { "chatml", "<s>", "<|im_end|>", "<|im_end|>", BOS_NONE, SYS_TURN, NULL, CHATML_ROLES, "", 0, 0, 0, "<|im_start|>assistant\n", 0, 0 },
    { "vicuna", "<s>", "</s>", "</s>", BOS_NONE, SYS_BARE,
      "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
      { "", "USER: ", "" }, { "", " ASSISTANT:", "" }, "", 1, 0, 0, "", 0, 0 },
    // Qwen2.5-Instruct: ChatML with a default system line
    { "qwen", NULL, "<|im_end|>", "<|im_end|>", BOS_NONE, SYS_TURN, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
      CHATML_ROLES, "", 0, 0, 0, "<|im_start|>assistant\n", 0, 0 },
    // Qwen3: ChatML; the replies after the last user turn carry <think>reasoning</think> (empty if none)
    { "qwen3", NULL, "<|im_end|>", "<|im_end|>", BOS_NONE, SYS_TURN, NULL, CHATML_ROLES, "", 0, 0, 0, "<|im_start|>assistant\n", 0, 1 },
    // Gemma 3 (and 2, whose template refuses a system message): role "model", the system text before the first user turn's
    { "gemma", "<bos>", "<end_of_turn>", "<end_of_turn>", BOS_START, SYS_PREFIX, NULL,
      { "", "<start_of_turn>user\n", "<start_of_turn>model\n" }, { "\n\n", "<end_of_turn>\n", "<end_of_turn>\n" }, "", 0, 1, 1,
      "<start_of_turn>model\n", 0, 0 },
    // Phi-3-mini-instruct: <|user|>\nQ<|end|>\n<|assistant|>\nA<|end|>\n, then eos_token
    { "phi3", "<s>", "<|endoftext|>", "<|end|>", BOS_NONE, SYS_TURN, NULL,
      { "<|system|>\n", "<|user|>\n", "<|assistant|>\n" }, { "<|end|>\n", "<|end|>\n", "<|end|>\n" }, "", 0, 0, 0, "<|assistant|>\n", 1, 0 },
};
#undef CHATML_ROLES
#undef L3_HEADER
// the template named `name`, or -1
static int template_find(const char *name) {
    for (int k = 0; k < NUM_TEMPLATES; k++) if (!strcmp(name, templates[k].name)) return k;
    return -1;
}
#define TEMPLATE_LIST "alpaca | llama2 | llama3 | mistral | chatml | vicuna | qwen | qwen3 | gemma | phi3"

enum { PART_TEXT, PART_BOS, PART_EOS };
typedef struct { int kind, response; size_t off, len; } ChatPart;  // text[off..off+len) (specials: their string)
typedef struct { StrBuf text; ChatPart *parts; int n, cap; } ChatRender;

static void cr_add(ChatRender *r, int kind, int response, const char *s, size_t n) {
    if (n == 0 && kind == PART_TEXT) return;
    if (r->n == r->cap) { r->cap = r->cap ? 2 * r->cap : 16; r->parts = (ChatPart *)realloc_check(r->parts, (size_t)r->cap * sizeof(ChatPart)); }
    ChatPart *p = &r->parts[r->n++];
    p->kind = kind; p->response = response; p->off = r->text.n; p->len = n;
    sb_putn(&r->text, s, n);
}
static void cr_text(ChatRender *r, int response, const char *s) { cr_add(r, PART_TEXT, response, s, strlen(s)); }
static void cr_free(ChatRender *r) { free(r->text.s); free(r->parts); memset(r, 0, sizeof(*r)); }

// Python's str.strip() (jinja's .strip() and |trim): the whitespace characters at both ends
static size_t py_space_at(const char *s, size_t n, size_t i) { // length of the whitespace character at s[i], or 0
    unsigned char c = (unsigned char)s[i];
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
    if (c < 0x80) return 0;
    uint32_t cp;
    size_t k = utf8_decode(s + i, n - i, &cp);
    int ws = cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
             cp == 0x202f || cp == 0x205f || cp == 0x3000;
    return ws ? k : 0;
}
static void py_strip(const char **s, size_t *n) {
    size_t k;
    while (*n && (k = py_space_at(*s, *n, 0)) > 0) { *s += k; *n -= k; }
    for (;;) { // the last character: step back over UTF-8 continuation bytes
        if (!*n) break;
        size_t i = *n - 1;
        while (i > 0 && ((unsigned char)(*s)[i] & 0xC0) == 0x80 && *n - i < 4) i--;
        if ((k = py_space_at(*s, *n, i)) == 0 || i + k != *n) break;
        *n = i;
    }
}

// Qwen3's split of a reply "<think>R</think>C": C after the last </think> (leading newlines dropped), R
// between the last <think> and the first </think> (newlines at both ends dropped). No </think>: C = all, R = "".
static const char *find_bytes(const char *s, size_t n, const char *pat) { // the first pat in s[0..n), or NULL
    size_t k = strlen(pat);
    for (size_t i = 0; i + k <= n; i++) if (!memcmp(s + i, pat, k)) return s + i;
    return NULL;
}
static void think_split(const char *s, size_t n, const char **c, size_t *cn, const char **r, size_t *rn) {
    *c = s; *cn = n; *r = s; *rn = 0;
    const char *first = find_bytes(s, n, "</think>");
    if (!first) return;
    const char *last = first;
    for (const char *p; (p = find_bytes(last + 8, (size_t)(s + n - last - 8), "</think>")) != NULL;) last = p;
    *c = last + 8; *cn = (size_t)(s + n - *c);
    while (*cn && **c == '\n') { (*c)++; (*cn)--; }
    size_t k = (size_t)(first - s);
    while (k && s[k - 1] == '\n') k--;
    const char *open = s;
    for (const char *p = s; (p = find_bytes(p, (size_t)(s + k - p), "<think>")) != NULL; p += 7) open = p + 7;
    *r = open; *rn = (size_t)(s + k - open);
    while (*rn && **r == '\n') { (*r)++; (*rn)--; }
    while (*rn && (*r)[*rn - 1] == '\n') (*rn)--;
}

// Render msgs[0..n) with template tpl, as transformers' apply_chat_template(messages, add_generation_prompt=gen)
// renders the model's own template (gen 2: and enable_thinking=False). Returns 0, or -1 with the template's
// raise_exception message in err.
static int chat_render(ChatRender *r, int tpl, const ChatMsg *msgs, int n, int gen, char *err, size_t errn) {
    const ChatTemplate *T = &templates[tpl];
    memset(r, 0, sizeof(*r));
    const char *sys = NULL;
    size_t nsys = 0;
    int first = 0;  // the first message of the turns (after a system message the template takes out)
    if (n > 0 && msgs[0].role == ROLE_SYSTEM && T->system != SYS_NONE) { sys = msgs[0].s; nsys = msgs[0].n; first = 1; }
    else if (T->sys_default) { sys = T->sys_default; nsys = strlen(sys); }
    int last_query = n - 1;  // Qwen3: the last user turn (one that is not a <tool_response>)
    for (int i = n - 1; i >= 0; i--) {
        const ChatMsg *m = &msgs[i];
        int tool = m->n >= 31 && !memcmp(m->s, "<tool_response>", 15) && !memcmp(m->s + m->n - 16, "</tool_response>", 16);
        if (m->role == ROLE_USER && !tool) { last_query = i; break; }
    }
    if (T->bos_at == BOS_START) cr_add(r, PART_BOS, 0, T->bos, strlen(T->bos));
    if (sys && T->system == SYS_BARE) cr_add(r, PART_TEXT, 0, sys, nsys);
    if (sys && T->system == SYS_TURN) {
        const char *c = sys;
        size_t cn = nsys;
        if (T->strip) py_strip(&c, &cn);
        cr_text(r, 0, T->pre[ROLE_SYSTEM]); cr_add(r, PART_TEXT, 0, c, cn); cr_text(r, 0, T->post[ROLE_SYSTEM]);
    }
    for (int i = first; i < n; i++) {
        const ChatMsg *m = &msgs[i];
        int resp = m->role == ROLE_ASSISTANT;
        if (T->alternate && (m->role == ROLE_USER) != ((i - first) % 2 == 0)) {
            snprintf(err, errn, "Conversation roles must alternate user/assistant/user/assistant/...");
            cr_free(r); return -1;
        }
        if (m->role == ROLE_SYSTEM && T->system == SYS_NONE) { snprintf(err, errn, "Only user and assistant roles are supported!"); cr_free(r); return -1; }
        if (m->role == ROLE_SYSTEM) continue; // (a system message only comes first)
        StrBuf content = { 0 };  // Llama 2: the <<SYS>> block and the message, stripped together
        if (i == first && sys && T->system == SYS_INST) { sb_puts(&content, T->pre[ROLE_SYSTEM]); sb_putn(&content, sys, nsys); sb_puts(&content, T->post[ROLE_SYSTEM]); }
        sb_putn(&content, m->s, m->n);
        const char *c = content.s ? content.s : "";
        size_t cn = content.n;
        if (T->strip) py_strip(&c, &cn);
        if (m->role == ROLE_USER && T->bos_at == BOS_USER) cr_add(r, PART_BOS, 0, T->bos, strlen(T->bos));
        cr_text(r, resp && strcmp(T->pre[m->role], T->gen), T->pre[m->role]); // a reply's opening is the model's to write
                                                                                // unless the generation prompt writes it (Llama 2's " ")
        if (i == first && sys && T->system == SYS_PREFIX) { cr_add(r, PART_TEXT, 0, sys, nsys); cr_text(r, 0, T->post[ROLE_SYSTEM]); }
        if (T->think && resp) {
            const char *rs;
            size_t rn;
            think_split(c, cn, &c, &cn, &rs, &rn);
            if (i > last_query && (i == n - 1 || rn)) {
                while (cn && *c == '\n') { c++; cn--; }
                cr_text(r, 1, "<think>\n"); cr_add(r, PART_TEXT, 1, rs, rn); cr_text(r, 1, "\n</think>\n\n");
            }
        }
        cr_add(r, PART_TEXT, resp, c, cn);
        cr_text(r, resp, T->post[m->role]);
        if (resp && T->eos_reply) { cr_add(r, PART_EOS, 1, T->eos, strlen(T->eos)); cr_text(r, 1, T->post2); }
        free(content.s);
    }
    if (gen) cr_text(r, 0, T->gen);
    if (gen == 2 && T->think) cr_text(r, 0, "<think>\n\n</think>\n\n"); // Qwen3 with enable_thinking=False
    if (!gen && T->eos_end) cr_add(r, PART_EOS, 0, T->eos, strlen(T->eos));
    return 0;
}

// DIR/peft_chat.json {"template": NAME}: the chat template an adapter (or a trained model) was trained
// with, so that chat uses it by default. peft.c's own file: PEFT reads adapter_config.json only.
static int chat_template_save(const char *dir, int tpl) {
    char path[4096], text[256];
    path_join(path, sizeof(path), dir, "peft_chat.json");
    snprintf(text, sizeof(text), "{\"template\": \"%s\"}\n", templates[tpl].name);
    AtomicFile af;
    if (atomic_open(&af, path)) return -1;
    atomic_write(&af, text, strlen(text));
    return atomic_commit(&af);
}
// the template recorded in dir, -1 if there is no peft_chat.json, -2 (error set) if it is bad
static int chat_template_load(const char *dir) {
    char path[4096];
    path_join(path, sizeof(path), dir, "peft_chat.json");
    if (!file_exists(path)) return -1;
    Json *j = json_load(path);
    if (!j) return -2;
    const char *name = json_str(json_get(j, "template"));
    int tpl = name ? template_find(name) : -1;
    if (tpl < 0) set_error(path, "\"template\" must be one of " TEMPLATE_LIST);
    json_free(j);
    return tpl < 0 ? -2 : tpl;
}

// how many bytes of the encoded text token q of ids[] stands for: an added token (<|im_start|>, ...) its own
// string, any other the bytes it decodes to (the first piece without the dummy prefix)
static size_t chat_token_bytes(const Tokenizer *t, const int *ids, int q, char *buf, int bufn) {
    if (t->attr[ids[q]] == PIECE_CONTROL || t->attr[ids[q]] == PIECE_ADDED) return (size_t)t->piece_len[ids[q]]; // added tokens
    return (size_t)tokenizer_decode(t, q ? ids[q - 1] : -1, ids[q], buf, bufn);
}
// Token ids of a render: text runs between BOS/EOS parts encoded as one string each; resp[i] = 1 for response tokens.
// Returns the count, or -1 (error set).
static int chat_tokenize(const Tokenizer *t, const ChatRender *r, int **ids_out, unsigned char **resp_out) {
    size_t cap = r->text.n + 2 * (size_t)r->n + 16;
    int *ids = (int *)malloc_check(cap * sizeof(int));
    unsigned char *resp = (unsigned char *)malloc_check(cap);
    int n = 0;
    char buf[512];
    for (int i = 0; i < r->n;) {
        const ChatPart *p = &r->parts[i];
        if (p->kind != PART_TEXT) {
            int id = p->kind == PART_BOS ? t->bos_id : t->eos_id;
            if (id >= 0) { ids[n] = id; resp[n++] = (unsigned char)p->response; }
            i++;
            continue;
        }
        int j = i;
        while (j < r->n && r->parts[j].kind == PART_TEXT) j++;
        size_t off = p->off, len = r->parts[j - 1].off + r->parts[j - 1].len - off;
        int k = tokenizer_encode(t, r->text.s + off, len, 0, 0, ids + n, (int)(cap - (size_t)n));
        if (k < 0) { free(ids); free(resp); return -1; }
        // each token's first byte, from the bytes its piece spells (the first piece may carry the dummy prefix)
        size_t pos = 0, total = 0;
        for (int q = 0; q < k; q++) total += chat_token_bytes(t, ids + n, q, buf, sizeof(buf));
        if (total == len) {
            int part = i;
            for (int q = 0; q < k; q++) {
                while (part < j - 1 && pos >= r->parts[part].off + r->parts[part].len - off) part++;
                resp[n + q] = (unsigned char)r->parts[part].response;
                pos += chat_token_bytes(t, ids + n, q, buf, sizeof(buf));
            }
            n += k;
        } else { // the pieces do not spell the text (unknown pieces, a lossy normalizer): encode part by part
            for (int q = i; q < j; q++) {
                const ChatPart *pq = &r->parts[q];
                k = tokenizer_encode(t, r->text.s + pq->off, pq->len, 0, 0, ids + n, (int)(cap - (size_t)n));
                if (k < 0) { free(ids); free(resp); return -1; }
                memset(resp + n, pq->response, (size_t)k);
                n += k;
            }
        }
        i = j;
    }
    *ids_out = ids; *resp_out = resp;
    return n;
}

// LLaMA-Factory's infer_seqlen: how much of a (source, target) turn fits in cutoff tokens
static void infer_seqlen(int *src, int *tgt, int cutoff) {
    int max_target;
    if (*tgt * 2 < cutoff) max_target = cutoff;
    else if (*src * 2 < cutoff) max_target = cutoff - *src;
    else max_target = (int)(cutoff * ((double)*tgt / (double)(*src + *tgt)));
    int new_tgt = *tgt < max_target ? *tgt : max_target;
    int max_src = cutoff - new_tgt > 0 ? cutoff - new_tgt : 0;
    *src = *src < max_src ? *src : max_src;
    *tgt = new_tgt;
}
// Truncate ids/resp in place to cutoff tokens, turn by turn (a turn: prompt tokens then response tokens).
static int truncate_turns(int *ids, unsigned char *resp, int n, int cutoff) {
    int out = 0, total = 0;
    for (int i = 0; i < n;) {
        int s0 = i;
        while (i < n && !resp[i]) i++;
        int t0 = i;
        while (i < n && resp[i]) i++;
        if (total >= cutoff) break;
        int src = t0 - s0, tgt = i - t0;
        infer_seqlen(&src, &tgt, cutoff - total);
        memmove(ids + out, ids + s0, (size_t)src * sizeof(int)); memmove(resp + out, resp + s0, (size_t)src);
        out += src;
        memmove(ids + out, ids + t0, (size_t)tgt * sizeof(int)); memmove(resp + out, resp + t0, (size_t)tgt);
        out += tgt;
        total += src + tgt;
    }
    return out;
}

// Examples back to back: example e is tokens[start[e] .. start[e+1]); train[i] = 1 if token i is a target
typedef struct {
    int *tokens;
    unsigned char *train;
    int *start;
    int count, n, max_len;
    int truncated;           // examples cut by --cutoff-len
    long response_tokens;
} Examples;
static void examples_free(Examples *ex) { free(ex->tokens); free(ex->train); free(ex->start); memset(ex, 0, sizeof(*ex)); }

// first byte offset that is not valid UTF-8 (overlong, surrogates and > U+10FFFF are invalid), or n
static size_t utf8_invalid_at(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t k = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!k || i + k > n) return i;
        for (size_t j = 1; j < k; j++) if ((s[i + j] & 0xC0) != 0x80) return i;
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] >= 0xA0) || (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] >= 0x90)) return i;
        i += k;
    }
    return n;
}
static void warn_if_not_utf8(const char *path, const char *text, size_t len) {
    size_t bad = utf8_invalid_at((const unsigned char *)text, len);
    if (bad < len) fprintf(stderr, "peft: warning: %s: not valid UTF-8: first bad byte 0x%02X at offset %zu (the tokenizer reads the bytes as they are)\n",
                           path, (unsigned char)text[bad], bad);
}

// a string field of a row (NULL if absent); -1 when present but not a string
static int row_string(const Json *row, const char *key, const char **s, size_t *n) {
    const Json *v = json_get(row, key);
    *s = NULL; *n = 0;
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_STRING) return -1;
    *s = v->str; *n = v->len;
    return 0;
}

#define ROW_ERR(...) do { snprintf(err, errn, __VA_ARGS__); return -1; } while (0)
// one row -> messages (pointing into the row); the concatenated alpaca user turns go to scratch
static int row_messages(const Json *row, int format, ChatMsg **msgs, int *nmsg, StrBuf *scratch, char *err, size_t errn) {
    if (!row || row->type != JSON_OBJECT) ROW_ERR("a row must be a JSON object");
    int cap = 8, n = 0;
    ChatMsg *m = (ChatMsg *)malloc_check((size_t)cap * sizeof(ChatMsg));
#define PUSH(r, str, len) do { if (n == cap) { cap *= 2; m = (ChatMsg *)realloc_check(m, (size_t)cap * sizeof(ChatMsg)); } m[n].role = (r); m[n].s = (str); m[n].n = (len); n++; } while (0)
#define FAIL(...) do { free(m); ROW_ERR(__VA_ARGS__); } while (0)
    const char *sys, *s1, *s2;
    size_t nsys, n1, n2;
    if (row_string(row, "system", &sys, &nsys)) FAIL("\"system\" must be a string");
    if (sys && nsys) PUSH(ROLE_SYSTEM, sys, nsys);
    if (format == DATA_ALPACA) {
        const Json *h = json_get(row, "history");
        if (h && h->type != JSON_NULL) {
            if (h->type != JSON_ARRAY) FAIL("\"history\" must be a list of [prompt, response] pairs");
            for (int i = 0; i < h->n; i++) {
                const Json *pr = &h->items[i];
                if (pr->type != JSON_ARRAY || pr->n != 2 || pr->items[0].type != JSON_STRING || pr->items[1].type != JSON_STRING)
                    FAIL("\"history\" item %d is not a [prompt, response] pair of strings", i);
                PUSH(ROLE_USER, pr->items[0].str, pr->items[0].len);
                PUSH(ROLE_ASSISTANT, pr->items[1].str, pr->items[1].len);
            }
        }
        if (row_string(row, "instruction", &s1, &n1)) FAIL("\"instruction\" must be a string");
        if (row_string(row, "input", &s2, &n2)) FAIL("\"input\" must be a string");
        if ((!s1 || !n1) && (!s2 || !n2)) FAIL("alpaca row needs a non-empty \"instruction\" (or \"input\")");
        // LLaMA-Factory: the user turn is "\n".join of the non-empty instruction and input
        size_t at = scratch->n;
        if (s1 && n1) sb_putn(scratch, s1, n1);
        if (s1 && n1 && s2 && n2) sb_puts(scratch, "\n");
        if (s2 && n2) sb_putn(scratch, s2, n2);
        PUSH(ROLE_USER, scratch->s + at, scratch->n - at); // scratch grows no more for this row
        if (row_string(row, "output", &s1, &n1)) FAIL("\"output\" must be a string");
        if (!s1) FAIL("alpaca row needs an \"output\" string");
        PUSH(ROLE_ASSISTANT, s1, n1);
    } else {
        const Json *conv = json_get(row, "conversations");
        const char *rk = "from", *ck = "value", *user = "human", *asst = "gpt", *field = "conversations";
        if (!conv) { conv = json_get(row, "messages"); rk = "role"; ck = "content"; user = "user"; asst = "assistant"; field = "messages"; }
        if (!conv || conv->type != JSON_ARRAY) FAIL("sharegpt row needs a \"conversations\" (from/value) or \"messages\" (role/content) list");
        for (int i = 0; i < conv->n; i++) {
            const Json *turn = &conv->items[i];
            const char *role, *content;
            size_t rl, cl;
            if (turn->type != JSON_OBJECT || row_string(turn, rk, &role, &rl) || !role || row_string(turn, ck, &content, &cl) || !content)
                FAIL("\"%s\" item %d needs string \"%s\" and \"%s\"", field, i, rk, ck);
            if (!strcmp(role, "system")) {
                if (i != 0) FAIL("\"%s\" item %d: a system turn may only come first", field, i);
                if (n) FAIL("both a \"system\" field and a system turn");
                if (cl) PUSH(ROLE_SYSTEM, content, cl);
                continue;
            }
            int r = !strcmp(role, user) ? ROLE_USER : !strcmp(role, asst) ? ROLE_ASSISTANT : -1;
            if (r < 0) FAIL("\"%s\" item %d: role '%s' is not %s, %s or system", field, i, role, user, asst);
            int k = n - (n && m[0].role == ROLE_SYSTEM); // turns so far
            if ((r == ROLE_USER) != (k % 2 == 0)) FAIL("\"%s\" item %d is '%s': turns must alternate %s/%s, starting with %s", field, i, role, user, asst, user);
            PUSH(r, content, cl);
        }
        int k = n - (n && m[0].role == ROLE_SYSTEM);
        if (k == 0 || k % 2) FAIL("\"%s\" must end with an %s turn (it has %d turns)", field, asst, k);
    }
#undef PUSH
#undef FAIL
    *msgs = m; *nmsg = n;
    return 0;
}
#undef ROW_ERR

// "FILE:LINE: message"
static int set_error_at(const char *path, size_t line, const char *fmt, const char *msg) {
    char fl[4200];
    snprintf(fl, sizeof(fl), "%s:%zu", path, line);
    return set_error(fl, fmt, msg);
}

// Read an alpaca or sharegpt file (a JSON array of rows, or JSONL) into examples. A bad row is an error
// "FILE:LINE: ..." and nothing is returned.
static int load_examples(Examples *ex, const char *path, int format, int tpl, const Tokenizer *t, int cutoff, int train_on_prompt) {
    memset(ex, 0, sizeof(*ex));
    size_t len;
    char *text = read_file(path, &len, (size_t)1 << 31);
    if (!text) return -1;
    warn_if_not_utf8(path, text, len);
    // the rows: [begin, end) byte ranges of each top-level element (array) or non-blank line (JSONL)
    size_t nrows = 0, rcap = 64, *rb = (size_t *)malloc_check(rcap * sizeof(size_t)), *re = (size_t *)malloc_check(rcap * sizeof(size_t));
    size_t i = 0;
    while (i < len && isspace((unsigned char)text[i])) i++;
    int rc = 0;
    char err[600] = "";
    if (i < len && text[i] == '[') {
        Json *all = json_parse(text, len, path); // syntax first, for its error message (with the line)
        if (!all) {
            size_t at = 0, line = 1;
            char msg[sizeof(peft_errbuf)];
            snprintf(msg, sizeof(msg), "%s", peft_errbuf + strlen(path) + 2);
            if (sscanf(msg, "invalid JSON at byte %zu", &at) == 1) for (size_t k = 0; k < at && k < len; k++) line += text[k] == '\n';
            rc = set_error_at(path, line, "%s", msg);
        }
        json_free(all);
        int depth = 0, in_str = 0;
        size_t begin = 0;
        for (size_t k = i + 1; !rc && k < len; k++) {
            char c = text[k];
            if (in_str) { if (c == '\\') k++; else if (c == '"') in_str = 0; continue; }
            if (c == '"') { in_str = 1; if (depth == 0 && !begin) begin = k; continue; }
            if (depth == 0 && (c == ',' || c == ']')) {
                if (begin) { if (nrows == rcap) { rcap *= 2; rb = (size_t *)realloc_check(rb, rcap * sizeof(size_t)); re = (size_t *)realloc_check(re, rcap * sizeof(size_t)); } rb[nrows] = begin; re[nrows++] = k; }
                begin = 0;
                if (c == ']') break;
                continue;
            }
            if (c == '{' || c == '[') { if (depth == 0 && !begin) begin = k; depth++; }
            else if (c == '}' || c == ']') depth--;
            else if (depth == 0 && !begin && !isspace((unsigned char)c)) begin = k;
        }
    } else {
        for (size_t k = 0; k < len;) {
            size_t e = k;
            while (e < len && text[e] != '\n') e++;
            size_t b = k;
            while (b < e && isspace((unsigned char)text[b])) b++;
            if (b < e) { if (nrows == rcap) { rcap *= 2; rb = (size_t *)realloc_check(rb, rcap * sizeof(size_t)); re = (size_t *)realloc_check(re, rcap * sizeof(size_t)); } rb[nrows] = b; re[nrows++] = e; }
            k = e + 1;
        }
    }
    if (!rc && nrows == 0) rc = set_error(path, "no rows (expected a JSON array of objects, or one JSON object per line)");
    size_t tcap = 1 << 16, ecap = nrows + 1;
    ex->tokens = (int *)malloc_check(tcap * sizeof(int));
    ex->train = (unsigned char *)malloc_check(tcap);
    ex->start = (int *)malloc_check(ecap * sizeof(int));
    size_t line = 1, at = 0;
    for (size_t r = 0; !rc && r < nrows; r++) {
        for (; at < rb[r]; at++) line += text[at] == '\n';
        Json *row = json_parse(text + rb[r], re[r] - rb[r], path);
        if (!row) { // JSONL: the parser's message, with the line
            char msg[sizeof(peft_errbuf)];
            snprintf(msg, sizeof(msg), "%s", peft_errbuf + strlen(path) + 2);
            rc = set_error_at(path, line, "%s", msg);
            break;
        }
        ChatMsg *msgs = NULL;
        int nmsg = 0;
        StrBuf scratch = { 0 };
        ChatRender cr;
        memset(&cr, 0, sizeof(cr));
        int *ids = NULL;
        unsigned char *resp = NULL;
        int n = -1;
        if (row_messages(row, format, &msgs, &nmsg, &scratch, err, sizeof(err))) rc = -1;
        else if (chat_render(&cr, tpl, msgs, nmsg, 0, err, sizeof(err))) { rc = -1; char m2[600]; snprintf(m2, sizeof(m2), "template %s: %.500s", templates[tpl].name, err); snprintf(err, sizeof(err), "%s", m2); }
        else if ((n = chat_tokenize(t, &cr, &ids, &resp)) < 0) { rc = -1; snprintf(err, sizeof(err), "%.500s", peft_errbuf); }
        if (rc) { set_error_at(path, line, "%s", err); }
        else {
            if (cutoff > 0 && n > cutoff) { n = truncate_turns(ids, resp, n, cutoff); ex->truncated++; }
            if ((size_t)ex->n + (size_t)n > tcap) {
                while ((size_t)ex->n + (size_t)n > tcap) tcap *= 2;
                ex->tokens = (int *)realloc_check(ex->tokens, tcap * sizeof(int));
                ex->train = (unsigned char *)realloc_check(ex->train, tcap);
            }
            if ((size_t)ex->n + (size_t)n > INT_MAX / 2) rc = set_error(path, "too many tokens");
            else {
                ex->start[ex->count++] = ex->n;
                for (int q = 0; q < n; q++) {
                    if (ids[q] < 0) ids[q] = 0;
                    ex->tokens[ex->n + q] = ids[q];
                    ex->train[ex->n + q] = (unsigned char)(train_on_prompt || resp[q]);
                    ex->response_tokens += resp[q];
                }
                ex->n += n;
                if (n > ex->max_len) ex->max_len = n;
            }
        }
        free(ids); free(resp); cr_free(&cr); free(msgs); free(scratch.s);
        json_free(row);
    }
    free(rb); free(re); free(text);
    if (rc) { examples_free(ex); return -1; }
    ex->start[ex->count] = ex->n;
    return 0;
}

// One batch row per example, right-padded: inputs are the example's tokens (padding: 0), targets the next
// token where it is trained, else -100. Causal attention never looks right, so the padding changes nothing
// for the real tokens: the loss and gradients are those of each example alone, at positions 0.. as in inference.
static void examples_fill_row(const Examples *ex, int e, int *inp, int *tgt, int T) {
    int s = ex->start[e], L = ex->start[e + 1] - s;
    for (int t = 0; t < T; t++) {
        inp[t] = t < L ? ex->tokens[s + t] : 0;
        tgt[t] = t + 1 < L && ex->train[s + t + 1] ? ex->tokens[s + t + 1] : -100;
    }
}

// ----------------------------------------------------------------------------
// New special tokens (LLaMA-Factory's --new-special-tokens with resize_vocab): the tokens are added to
// the tokenizer (ids from its size on), the embedding and classifier grow to the new vocabulary with
// the new rows set to the mean of the existing rows, training updates those rows (besides the LoRA
// weights), and the adapter saves the grown embed_tokens and lm_head as modules_to_save, which PEFT
// loads onto a base resized with transformers' resize_token_embeddings.

// grow the vocabulary to V2 rows; new rows of the embedding (and an untied classifier) = the mean row
static int model_resize_vocab(Model *m, int V2) {
    Config *c = &m->config;
    int V = c->vocab_size;
    if (V2 <= V) return 0;
    if (m->quant && m->quant_embed) return set_error(m->path, "cannot grow quantized embeddings (load without --quant-embeddings)");
    if (V2 > 4000000) return set_error(m->path, "vocabulary of %d is too large", V2);
    Model e = *m;
    e.config.vocab_size = V2;
    e.qw = NULL;
    model_alloc(&e);
    if (m->quant) { free(e.qw); e.qw = m->qw; }
    ParameterTensors *p = &m->params, *q = &e.params;
    size_t C = (size_t)c->dim;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (!m->param_sizes[i] || m->w16[i]) continue; // (a bf16-only tensor's floats were never written: none to copy)
        const floatX *src = *param_ptr(p, i);
        floatX *dst = *param_ptr(q, i);
        memcpy(dst, src, m->param_sizes[i] * sizeof(floatX));
        if (i == 0 || i == 11) {
            for (size_t x = 0; x < C; x++) {
                double mean = 0;
                for (int v = 0; v < V; v++) mean += src[(size_t)v * C + x];
                mean /= V;
                for (int v = V; v < V2; v++) dst[(size_t)v * C + x] = (floatX)mean;
            }
        }
    }
    free(m->params_memory);
    *m = e;
    return 0;
}

// Write the tokenizer at src with n new special tokens (ids first_id...) into dir, in src's format:
// a tokenizer.json gets them in "added_tokens" (special, not normalized); a llama2.c tokenizer.bin gets
// them appended with the score TOK_ADDED_SCORE. out: the path written.
static int tokenizer_write_added(const char *src, const char *dir, char **toks, int n, int first_id, char *out, size_t outn) {
    size_t len;
    char *text = read_file(src, &len, (size_t)1 << 30);
    if (!text) return -1;
    int is_json = len > 0 && text[0] != 0 && strstr(src, ".json") != NULL;
    if (mkdir_p(dir)) { free(text); return -1; }
    path_join(out, outn, dir, is_json ? "tokenizer.json" : "tokenizer.bin");
    AtomicFile af;
    if (atomic_open(&af, out)) { free(text); return -1; }
    if (is_json) {
        StrBuf add = { 0 };
        for (int k = 0; k < n; k++) {
            sb_printf(&add, "%s\n    {\"id\": %d, \"content\": ", k ? "," : "", first_id + k);
            sb_json_string(&add, toks[k]);
            sb_puts(&add, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}");
        }
        // after the '[' of the top-level "added_tokens" (or a new key after the opening '{')
        char *key = strstr(text, "\"added_tokens\"");
        char *at = key ? key + 14 : NULL;
        while (at && (*at == ' ' || *at == '\n' || *at == '\r' || *at == '\t' || *at == ':')) at++;
        if (at && *at == '[') {
            char *q = at + 1;
            while (*q == ' ' || *q == '\n' || *q == '\r' || *q == '\t') q++;
            atomic_write(&af, text, (size_t)(at + 1 - text));
            atomic_write(&af, add.s, add.n);
            if (*q != ']') atomic_write(&af, ",", 1);
            atomic_write(&af, at + 1, len - (size_t)(at + 1 - text));
        } else {
            char *brace = strchr(text, '{');
            if (!brace) { free(add.s); free(text); fclose(af.f); remove(af.tmp); return set_error(src, "not a JSON object"); }
            atomic_write(&af, text, (size_t)(brace + 1 - text));
            atomic_write(&af, "\n  \"added_tokens\": [", 19);
            atomic_write(&af, add.s, add.n);
            atomic_write(&af, "],", 2);
            atomic_write(&af, brace + 1, len - (size_t)(brace + 1 - text));
        }
        free(add.s);
    } else {
        int32_t max_len; // little-endian in the file, as every number there (big-endian hosts swap)
        memcpy(&max_len, text, 4);
        le_swap(&max_len, 4, 1);
        for (int k = 0; k < n; k++) if ((int32_t)strlen(toks[k]) > max_len) max_len = (int32_t)strlen(toks[k]);
        atomic_write_le(&af, &max_len, 4, 1);
        atomic_write(&af, text + 4, len - 4);
        for (int k = 0; k < n; k++) {
            float score = TOK_ADDED_SCORE;
            int32_t l = (int32_t)strlen(toks[k]);
            atomic_write_le(&af, &score, 4, 1); atomic_write_le(&af, &l, 4, 1); atomic_write(&af, toks[k], (size_t)l);
        }
    }
    free(text);
    return atomic_commit(&af);
}

// the vocabulary of an adapter's modules_to_save weights (rows of embed_tokens / lm_head), 0 if none
static int adapter_vocab_size(const char *dir) {
    char path[4096];
    path_join(path, sizeof(path), dir, "adapter_model.safetensors");
    SafeTensors st;
    if (!file_exists(path) || st_open(&st, path)) return 0;
    int v = 0;
    for (int k = 0; k < st.n; k++) if (saved_module_key(st.t[k].name) && st.t[k].ndim == 2 && st.t[k].shape[0] > v && st.t[k].shape[0] <= 4000000) v = (int)st.t[k].shape[0];
    st_close(&st);
    return v;
}
// adapters trained with new tokens: grow the base to their vocabulary, and take their tokenizer
// (tokenizer.json or tokenizer.bin beside the adapter) unless -z gave one. dirs: adapter folders.
static void adapters_prepare_vocab(Model *m, const char *const *dirs, int n, const char **zpath, char *zbuf, size_t zn) {
    for (int k = 0; k < n; k++) {
        int v = adapter_vocab_size(dirs[k]);
        if (v > m->config.vocab_size) {
            fprintf(stderr, "%s: vocabulary %d (new tokens): the base grows from %d\n", dirs[k], v, m->config.vocab_size);
            if (model_resize_vocab(m, v)) fatal_error();
        }
        if (v > 0 && !*zpath) { // an adapter with its own embeddings: the tokenizer saved beside it
            const char *names[2] = { "tokenizer.json", "tokenizer.bin" };
            for (int j = 0; j < 2 && !*zpath; j++) { path_join(zbuf, zn, dirs[k], names[j]); if (file_exists(zbuf)) *zpath = zbuf; }
        }
    }
}

// ----------------------------------------------------------------------------
// LLaMA Pro block expansion (Wu et al. 2024; LLaMA-Factory's scripts/llama_pro.py): L layers and N new
// blocks (L % N == 0, split = L / N): after every split-th original layer insert a copy of it whose
// o_proj and down_proj are zero, so the new block adds nothing to the residual stream and the expanded
// model computes the same logits. Layer ids in the expanded model: the new blocks are those l with
// (l + 1) % (split + 1) == 0. Training then updates only them (--finetuning-type llama-pro).
#define MAX_EXPAND 128
static int llama_pro_is_new(int l, int L_expanded, int n_expand) {
    int stride = L_expanded / n_expand;
    return (l + 1) % stride == 0;
}
static int model_expand_llama_pro(Model *m, int n_expand) {
    Config *c = &m->config;
    int L = c->n_layers;
    if (m->quant) return set_error(m->path, "LLaMA Pro needs a float model (--quant none)");
    if (c->family > FAM_MISTRAL) return set_error(m->path, "LLaMA Pro block expansion is for Llama and Mistral models, not %s", family_arch[c->family]);
    if (n_expand < 1 || n_expand > MAX_EXPAND || L % n_expand) return set_error(m->path, "--expand %d must divide the model's %d layers (at most %d)", n_expand, L, MAX_EXPAND);
    Model e = *m;
    e.config.n_layers = L + n_expand;
    e.qw = NULL;
    model_alloc(&e);
    ParameterTensors *p = &m->params, *q = &e.params;
    floatX *src[NUM_PARAM_TENSORS], *dst[NUM_PARAM_TENSORS];
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) { src[i] = *param_ptr(p, i); dst[i] = *param_ptr(q, i); }
    int split = L / n_expand;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        if (!m->param_sizes[i]) continue;
        if (i < 1 || i > 9) { memcpy(dst[i], src[i], m->param_sizes[i] * sizeof(floatX)); continue; }
        size_t per = m->param_sizes[i] / (size_t)L;
        int k = 0;
        for (int l = 0; l < L; l++) {
            memcpy(dst[i] + per * k++, src[i] + per * l, per * sizeof(floatX));
            if ((l + 1) % split == 0) { // the inserted copy; its output projections are zero
                if (i == 5 || i == 8) memset(dst[i] + per * k, 0, per * sizeof(floatX));
                else memcpy(dst[i] + per * k, src[i] + per * l, per * sizeof(floatX));
                k++;
            }
        }
    }
    free(m->params_memory);
    *m = e;
    return 0;
}

// ----------------------------------------------------------------------------
// data and training: tokenized text, AdamW, the training loop, checkpoints, evaluation
#ifndef PEFT_INFER

// Data parallel: dist_world processes, one GPU each, started by mpirun (OpenMPI's OMPI_COMM_WORLD_*)
// or with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Every rank
// holds the whole model and draws the same seeded stream of batches; rank r trains rows [r*B, (r+1)*B)
// of each batch of dist_world*B rows, and NCCL sums the gradients, so that dist_world GPUs with batch B
// take the steps one GPU takes with batch dist_world*B. Rank 0 alone prints and writes.
static int env_int(const char *name, int dflt, int lo, int hi) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) fatal("%s=%s: not an integer in [%d, %d]", name, v, lo, hi);
    return (int)x;
}
static void dist_from_env(void) {
    int torch = getenv("WORLD_SIZE") != NULL;
    dist_world = env_int(torch ? "WORLD_SIZE" : "OMPI_COMM_WORLD_SIZE", 1, 1, 65536);
    dist_rank = env_int(torch ? "RANK" : "OMPI_COMM_WORLD_RANK", 0, 0, dist_world - 1);
    dist_local = env_int(torch ? "LOCAL_RANK" : "OMPI_COMM_WORLD_LOCAL_RANK", dist_world > 1 ? -1 : 0, 0, 1023);
    if (dist_local < 0) fatal("%s is set but not %s: each process needs its GPU", torch ? "WORLD_SIZE" : "OMPI_COMM_WORLD_SIZE", torch ? "LOCAL_RANK" : "OMPI_COMM_WORLD_LOCAL_RANK");
    err_rank = dist_world > 1 ? dist_rank : -1;
    if (dist_world > 1 && dist_rank > 0) { // ranks > 0 print their error lines only (err_out, a copy of stderr)
        int fd = dup(2);
        err_out = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (err_out && !freopen("/dev/null", "w", stderr)) fatal("cannot quiet rank %d's stderr", dist_rank);
    }
}
// after device_start: meet the other ranks (rank 0 listens on MASTER_ADDR:MASTER_PORT)
static void dist_connect(void) {
    if (dist_world == 1) return;
#if defined(PEFT_CUDA) && defined(PEFT_NCCL)
    if (!gpu_on) fatal("%d processes (WORLD_SIZE): each trains on a GPU, and this one has none (no CUDA GPU, or --device cpu)", dist_world);
    const char *addr = getenv("MASTER_ADDR");
    int local_all = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 0, 0, 65536) == dist_world;
    if (!addr || !*addr) {
        if (getenv("WORLD_SIZE") && !local_all) fatal("WORLD_SIZE=%d needs MASTER_ADDR (the host of rank 0)", dist_world);
        if (!getenv("WORLD_SIZE") && !local_all) fatal("mpirun over several hosts needs MASTER_ADDR (the host of rank 0), e.g. mpirun -x MASTER_ADDR=node0");
        addr = "127.0.0.1";
    }
    // torchrun's agent keeps its own store on MASTER_PORT: peft meets on the next port
    int port = env_int("MASTER_PORT", 29500, 1, 65535) + (getenv("TORCHELASTIC_RUN_ID") ? 1 : 0);
    char err[512];
    if (gpu_dist_init(dist_rank, dist_world, addr, port, err_out ? err_out : stderr, err, sizeof(err))) fatal("%s", err);
    dist_nccl = 1;
#else
    fatal("WORLD_SIZE %d: this peft was built without NCCL; several processes need make CUDA=1 NCCL=1", dist_world);
#endif
}
// x = the sum of x over the ranks (tensor memory; every rank gets the same sum)
static void dist_sum(floatX *x, size_t n) {
    if (dist_world == 1) return;
#if defined(PEFT_CUDA) && defined(PEFT_NCCL)
    if (dist_nccl) gpu_dist_sum(x, n);
#else
    (void)x; (void)n;
#endif
}
// the same for a few numbers on the host
static void dist_sum_host(double *v, int n) {
    if (dist_world == 1) return;
#if defined(PEFT_CUDA) && defined(PEFT_NCCL)
    if (dist_nccl) gpu_dist_sum_host(v, n);
#else
    (void)v; (void)n;
#endif
}
// the end of training on this rank: ok, or failed (its error is printed); returns once all are done
static void dist_finish(int ok) {
    if (dist_world == 1) return;
#if defined(PEFT_CUDA) && defined(PEFT_NCCL)
    if (dist_nccl) gpu_dist_finish(ok);
#else
    (void)ok;
#endif
}

// Tokenize a UTF-8 text file: documents are separated by blank lines, each starts with BOS.
static int *tokenize_file(const Tokenizer *tok, const char *path, int *n_out) {
    size_t len;
    char *text = read_file(path, &len, (size_t)1 << 31);
    if (!text) return NULL;
    if (len == 0) { free(text); set_error(path, "data file is empty"); return NULL; }
    size_t cap = len + 16, n = 0;
    int *tokens = (int *)malloc_check(cap * sizeof(int));
    int *buf = (int *)malloc_check((len + 3) * sizeof(int));
    size_t start = 0;
    while (start < len) {
        // a document ends at a blank line ("\n\n", allowing "\r\n") or at the end of the text
        size_t end = start;
        while (end < len) {
            if (text[end] == '\n') {
                size_t k = end + 1;
                while (k < len && (text[k] == '\r' || text[k] == ' ' || text[k] == '\t')) k++;
                if (k < len && text[k] == '\n') break;
            }
            end++;
        }
        size_t dl = end - start;
        int only_space = 1;
        for (size_t k = start; k < end; k++) if (!isspace((unsigned char)text[k])) { only_space = 0; break; }
        if (!only_space) {
            int cnt = tokenizer_encode(tok, text + start, dl, 1, 0, buf, (int)(dl + 3));
            if (cnt < 0) { free(text); free(tokens); free(buf); return NULL; }
            if (n + (size_t)cnt > cap) { cap = (n + (size_t)cnt) * 2; tokens = (int *)realloc_check(tokens, cap * sizeof(int)); }
            memcpy(tokens + n, buf, (size_t)cnt * sizeof(int));
            n += (size_t)cnt;
        }
        start = end;
        while (start < len && isspace((unsigned char)text[start])) start++; // skip the blank lines
    }
    free(text); free(buf);
    if (n == 0) { free(tokens); set_error(path, "data file has no text"); return NULL; }
    if (n > INT_MAX) { free(tokens); set_error(path, "data file too large"); return NULL; }
    *n_out = (int)n;
    return tokens;
}

// AdamW (PyTorch's): p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
static void adamw_update(floatX *params, const floatX *grads, floatX *m, floatX *v, size_t n, int t, float lr, float beta1, float beta2, float eps, float wd) {
    double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t);
    floatX step = (floatX)(lr / bc1), rbc2 = (floatX)(1.0 / sqrt(bc2));
    ON_GPU(gpu_adamw(params, grads, m, v, n, lr, beta1, beta2, eps, wd, step, rbc2));
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) {
        floatX g = grads[i];
        params[i] -= (floatX)(lr * wd) * params[i];
        m[i] = beta1 * m[i] + (1 - beta1) * g;
        v[i] = beta2 * v[i] + (1 - beta2) * g * g;
        params[i] -= step * m[i] / (SQRTX(v[i]) * rbc2 + eps);
    }
}

// The trainable parameters as contiguous segments (param, grad): LoRA's one block, or model tensors
// (LLaMA Pro: the 9 per-layer tensors of each inserted block).
typedef struct { floatX *p, *g; size_t n; } Segment;
typedef struct {
    Segment seg[NUM_PARAM_TENSORS + 1 + 9 * MAX_EXPAND];
    int nseg;
    size_t total;
    floatX *m, *v;   // AdamW moments, (total) each, in segment order
} Trainable;

enum { TUNE_LORA, TUNE_FREEZE, TUNE_FULL, TUNE_LLAMA_PRO };
static const char *tune_names[] = { "lora", "freeze", "full", "llama-pro" };

// freeze: the last n_train layers' weights; full: every weight.
static void trainable_init(Trainable *tr, Model *m, ParameterTensors *g, Lora *lo, int mode, int layer_from) {
    memset(tr, 0, sizeof(*tr));
    if (mode == TUNE_LORA) {
        tr->seg[0].p = lo->params; tr->seg[0].g = lo->grads; tr->seg[0].n = lo->num_params; tr->nseg = 1;
    } else {
        int L = m->config.n_layers;
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
            size_t n = m->param_sizes[i];
            if (!n) continue;
            if (mode == TUNE_FREEZE && !param_per_layer(i)) continue;
            size_t off = (mode == TUNE_FREEZE) ? n / (size_t)L * (size_t)layer_from : 0; // layers are the outer dimension
            tr->seg[tr->nseg].p = *param_ptr(&m->params, i) + off; tr->seg[tr->nseg].g = *param_ptr(g, i) + off; tr->seg[tr->nseg].n = n - off;
            tr->nseg++;
        }
    }
    for (int i = 0; i < tr->nseg; i++) tr->total += tr->seg[i].n;
    tr->m = (floatX *)calloc_check(tr->total, sizeof(floatX));
    tr->v = (floatX *)calloc_check(tr->total, sizeof(floatX));
    tensor_mirror(tr->m, tr->total * sizeof(floatX)); // saved and restored by checkpoints
    tensor_mirror(tr->v, tr->total * sizeof(floatX));
}
// LLaMA Pro: the per-layer tensors (norms and the seven matrices) of the layers with train[l] set
static void trainable_init_layers(Trainable *tr, Model *m, ParameterTensors *g, const int *train) {
    memset(tr, 0, sizeof(*tr));
    floatX *pp[NUM_PARAM_TENSORS] = { m->params.embed, m->params.rms_att, m->params.wq, m->params.wk, m->params.wv, m->params.wo, m->params.rms_ffn, m->params.w1, m->params.w2, m->params.w3, m->params.rms_final, m->params.wcls };
    floatX *gp[NUM_PARAM_TENSORS] = { g->embed, g->rms_att, g->wq, g->wk, g->wv, g->wo, g->rms_ffn, g->w1, g->w2, g->w3, g->rms_final, g->wcls };
    int L = m->config.n_layers;
    for (int l = 0; l < L; l++) {
        if (!train[l]) continue;
        for (int i = 1; i <= 9; i++) {
            size_t per = m->param_sizes[i] / (size_t)L;
            if (tr->nseg == (int)(sizeof(tr->seg) / sizeof(tr->seg[0]))) fatal("too many trainable layers");
            tr->seg[tr->nseg].p = pp[i] + per * l; tr->seg[tr->nseg].g = gp[i] + per * l; tr->seg[tr->nseg].n = per;
            tr->nseg++;
        }
    }
    for (int i = 0; i < tr->nseg; i++) tr->total += tr->seg[i].n;
    tr->m = (floatX *)calloc_check(tr->total, sizeof(floatX));
    tr->v = (floatX *)calloc_check(tr->total, sizeof(floatX));
    tensor_mirror(tr->m, tr->total * sizeof(floatX));
    tensor_mirror(tr->v, tr->total * sizeof(floatX));
}
static void trainable_free(Trainable *tr) { tensor_unmirror(tr->m); tensor_unmirror(tr->v); free(tr->m); free(tr->v); }
// one more trainable tensor (LoRA's modules_to_save; new special tokens' rows), with zeroed AdamW moments
static void trainable_add(Trainable *tr, floatX *p, floatX *g, size_t n) {
    if (tr->nseg == (int)(sizeof(tr->seg) / sizeof(tr->seg[0]))) fatal("too many trainable segments");
    tr->seg[tr->nseg].p = p; tr->seg[tr->nseg].g = g; tr->seg[tr->nseg].n = n; tr->nseg++;
    tensor_unmirror(tr->m); tensor_unmirror(tr->v);
    tr->m = (floatX *)realloc_check(tr->m, (tr->total + n) * sizeof(floatX));
    tr->v = (floatX *)realloc_check(tr->v, (tr->total + n) * sizeof(floatX));
    memset(tr->m + tr->total, 0, n * sizeof(floatX)); memset(tr->v + tr->total, 0, n * sizeof(floatX));
    tr->total += n;
    tensor_mirror(tr->m, tr->total * sizeof(floatX));
    tensor_mirror(tr->v, tr->total * sizeof(floatX));
}
// modules_to_save (PEFT's, LLaMA-Factory's additional_target): full copies of embed_tokens / lm_head in the
// adapter, trained with it; with tied embeddings each copy is its own weight, as PEFT's wrappers make them
static int lora_setup_mts(Lora *lo, const Model *m, int mts, const char *path) {
    const Config *c = &m->config;
    size_t n = (size_t)c->vocab_size * c->dim;
    if ((mts || lo->embed || lo->lm_head) && m->quant && m->quant_embed) return set_error(path, "modules_to_save needs float embeddings (drop --quant-embeddings)");
    if ((mts & 1) && !lo->embed) { lo->embed = (floatX *)malloc_check(n * sizeof(floatX)); memcpy(lo->embed, m->params.embed, n * sizeof(floatX)); }
    if ((mts & 2) && !lo->lm_head) { lo->lm_head = (floatX *)malloc_check(n * sizeof(floatX)); memcpy(lo->lm_head, m->params.wcls, n * sizeof(floatX)); }
    lo->mts_rows = c->vocab_size; lo->mts_cols = c->dim;
    if (lo->embed) lo->dembed = (floatX *)calloc_check(n, sizeof(floatX));
    if (lo->lm_head) lo->dlm_head = (floatX *)calloc_check(n, sizeof(floatX));
    return 0;
}
static void trainable_zero_grad(Trainable *tr) { for (int i = 0; i < tr->nseg; i++) tensor_zero(tr->seg[i].g, tr->seg[i].n); }
static double trainable_grad_norm(Trainable *tr) {
    double s = 0;
    for (int i = 0; i < tr->nseg; i++) s = tensor_sumsq(tr->seg[i].g, tr->seg[i].n, s);
    return sqrt(s);
}
static void trainable_scale_grad(Trainable *tr, double f) { for (int i = 0; i < tr->nseg; i++) tensor_scale(tr->seg[i].g, (floatX)f, tr->seg[i].n); }
static void trainable_update(Trainable *tr, int t, float lr, float wd) {
    size_t off = 0;
    for (int i = 0; i < tr->nseg; i++) {
        adamw_update(tr->seg[i].p, tr->seg[i].g, tr->m + off, tr->v + off, tr->seg[i].n, t, lr, 0.9f, 0.999f, 1e-8f, wd);
        off += tr->seg[i].n;
    }
}

// learning rate at step (0-based): linear warmup, then cosine or linear decay to 0, or constant
enum { SCHED_COSINE, SCHED_LINEAR, SCHED_CONSTANT };
static float lr_at(int step, int total, int warmup, float lr, int schedule) {
    if (step < warmup) return lr * (step + 1) / (float)warmup;
    if (schedule == SCHED_CONSTANT || total <= warmup) return lr;
    double progress = (double)(step - warmup) / (double)(total - warmup);
    if (schedule == SCHED_LINEAR) return (float)(lr * (1.0 - progress));
    return (float)(lr * 0.5 * (1.0 + cos(3.14159265358979323846 * progress)));
}

// mean next-token loss over tokens in non-overlapping windows of T (the last one partial),
// B windows at a time; returns the loss and the number of predicted tokens. max_windows <= 0: all.
static double evaluate(Net *net, Activations *a, const int *tokens, int n, int max_windows, long *count_out) {
    int B = a->B, T = a->T;
    int *inp = (int *)malloc_check((size_t)B * T * sizeof(int)), *tgt = (int *)malloc_check((size_t)B * T * sizeof(int));
    double sum = 0;
    long count = 0;
    int windows = 0;
    int saved_training = net->lora ? net->lora->training : 0;
    if (net->lora) net->lora->training = 0;
    // masks off: evaluation has no dropout
    LoraModule *mods = net->lora ? net->lora->mods : NULL;
    floatX **masks = NULL;
    if (mods) {
        masks = (floatX **)malloc_check((size_t)net->lora->n_layers * NUM_TARGETS * sizeof(floatX *));
        for (int i = 0; i < net->lora->n_layers * NUM_TARGETS; i++) { masks[i] = mods[i].mask; mods[i].mask = NULL; }
    }
    for (int pos = 0; pos + 1 < n && (max_windows <= 0 || windows < max_windows);) {
        for (int r = 0; r < dist_world; r++) // dist_world*B windows; this rank's are rows [dist_rank*B, +B)
            for (int b = 0; b < B; b++) {
                for (int t = 0; r == dist_rank && t < T; t++) {
                    int i = pos + t;
                    inp[b * T + t] = i < n ? tokens[i] : 0;
                    tgt[b * T + t] = i + 1 < n ? tokens[i + 1] : -100;
                }
                if (pos + 1 < n) windows++;
                pos += T;
            }
        peft_eval_loss(net, a, inp, tgt);
        sum += tensor_sum(a->losses, (size_t)B * T); // 0 where tgt < 0
        count += a->count;
    }
    if (mods) { for (int i = 0; i < net->lora->n_layers * NUM_TARGETS; i++) mods[i].mask = masks[i]; free(masks); }
    if (net->lora) net->lora->training = saved_training;
    free(inp); free(tgt);
    if (dist_world > 1) { double v[2] = { sum, (double)count }; dist_sum_host(v, 2); sum = v[0]; count = (long)v[1]; }
    *count_out = count;
    return count ? sum / count : 0;
}

// mean loss over the trained tokens of held-out examples, B examples (rows) at a time; max_rows <= 0: all
static double evaluate_examples(Net *net, Activations *a, const Examples *ex, int max_rows, long *count_out) {
    int B = a->B, T = a->T;
    int *inp = (int *)malloc_check((size_t)B * T * sizeof(int)), *tgt = (int *)malloc_check((size_t)B * T * sizeof(int));
    double sum = 0;
    long count = 0;
    int saved_training = net->lora ? net->lora->training : 0;
    if (net->lora) net->lora->training = 0;
    LoraModule *mods = net->lora ? net->lora->mods : NULL;
    floatX **masks = NULL;
    if (mods) { // no dropout
        masks = (floatX **)malloc_check((size_t)net->lora->n_layers * NUM_TARGETS * sizeof(floatX *));
        for (int i = 0; i < net->lora->n_layers * NUM_TARGETS; i++) { masks[i] = mods[i].mask; mods[i].mask = NULL; }
    }
    int rows = max_rows > 0 && max_rows < ex->count ? max_rows : ex->count;
    for (int e0 = 0; e0 < rows; e0 += B * dist_world) { // this rank's rows: [e0 + dist_rank*B, +B)
        for (int b = 0; b < B; b++) {
            int e = e0 + dist_rank * B + b;
            if (e < rows) examples_fill_row(ex, e, inp + b * T, tgt + b * T, T);
            else for (int t = 0; t < T; t++) { inp[b * T + t] = 0; tgt[b * T + t] = -100; }
        }
        peft_eval_loss(net, a, inp, tgt);
        sum += tensor_sum(a->losses, (size_t)B * T); // 0 where tgt < 0 (losses are tensor memory: on the GPU too)
        count += a->count;
    }
    if (mods) { for (int i = 0; i < net->lora->n_layers * NUM_TARGETS; i++) mods[i].mask = masks[i]; free(masks); }
    if (net->lora) net->lora->training = saved_training;
    free(inp); free(tgt);
    if (dist_world > 1) { double v[2] = { sum, (double)count }; dist_sum_host(v, 2); sum = v[0]; count = (long)v[1]; }
    *count_out = count;
    return count ? sum / count : 0;
}

// a step's rows: dist_world*B draws from the seeded data stream (a random window of T+1 tokens, or a
// random example), of which this rank keeps rows [dist_rank*B, (dist_rank+1)*B); ex NULL: text
static void train_batch(int *inp, int *tgt, int B, int T, uint64_t *data_rng, const int *tokens, int ntrain, const Examples *ex) {
    for (int r = 0; r < dist_world; r++)
        for (int b = 0; b < B; b++) {
            uint32_t x = random_u32(data_rng);
            if (r != dist_rank) continue;
            if (ex) { examples_fill_row(ex, (int)(x % (uint32_t)ex->count), inp + b * T, tgt + b * T, T); continue; }
            int start = (int)(x % (uint32_t)(ntrain - T));
            for (int t = 0; t < T; t++) { inp[b * T + t] = tokens[start + t]; tgt[b * T + t] = tokens[start + t + 1]; }
        }
}
// the gradients summed over the ranks
static void trainable_sum_ranks(Trainable *tr) { for (int i = 0; i < tr->nseg; i++) dist_sum(tr->seg[i].g, tr->seg[i].n); }

static volatile sig_atomic_t stop_requested = 0;
static void on_sigint(int sig) { (void)sig; stop_requested = 1; }

enum { OFFLOAD_WEIGHTS = 1, OFFLOAD_ACTS = 2 }; // TrainArgs.offload's bits: --offload, --offload activations-only, both: --offload activations
typedef struct {
    const char *model_path, *data_path, *tok_path, *outdir, *val_path, *resume, *resume_adapter;
    int mode, B, T, steps, warmup, grad_accum, eval_every, save_every, eval_batches, schedule, freeze_layers, checkpoint_acts, log_every, bench;
    double gpu_memory;   // --gpu-memory: the device budget in bytes the plan fits (0: none)
    int plan_only;       // --plan-only: print the plan and stop
    int offload;         // OFFLOAD_WEIGHTS: the frozen base in host memory, streamed to the GPU a layer ahead; OFFLOAD_ACTS: the checkpoints
    int shard;           // --shard: each rank keeps 1/world of every layer's frozen weights, gathered before the layer runs
    int plan_world;      // --world N (with --plan-only): plan for N processes (0: WORLD_SIZE's)
    int format, tpl, cutoff_len, train_on_prompt;   // instruction data (DATA_ALPACA / DATA_SHAREGPT): template, truncation
    int mts;                                         // modules_to_save: bit 0 embed_tokens, bit 1 lm_head (fully trained)
    int expand;          // LLaMA Pro: blocks inserted (the model is already expanded when train() runs)
    const char *new_tokens; // --new-special-tokens "a,b": added before train() runs
    int nst_first, nst_count; // their ids: nst_first .. nst_first + nst_count - 1 (rows trained)
    char nst_tok[4096];  // the tokenizer with the new tokens, written into outdir
    float epochs, lr, wd, clip, val_frac;
    LoraConfig lc;
    uint64_t seed;
} TrainArgs;

// instruction data: load the examples, hold out the last val_frac of them (or read --val), pick T
static int train_load_examples(TrainArgs *ta, const Config *c, const Tokenizer *tok, Examples *ex, Examples *vex) {
    int cutoff = ta->cutoff_len ? ta->cutoff_len : (ta->T ? ta->T : c->seq_len) + 1;
    if (load_examples(ex, ta->data_path, ta->format, ta->tpl, tok, cutoff, ta->train_on_prompt)) return -1;
    memset(vex, 0, sizeof(*vex));
    if (ta->val_path) {
        if (load_examples(vex, ta->val_path, ta->format, ta->tpl, tok, cutoff, ta->train_on_prompt)) { examples_free(ex); return -1; }
    } else if (ta->val_frac > 0 && ex->count >= 2) { // the last val_frac of the examples (at least one each side)
        int nv = (int)(ex->count * (double)ta->val_frac);
        if (nv >= 1 && nv < ex->count) {
            int first = ex->count - nv, s0 = ex->start[first], nt = ex->n - s0;
            vex->tokens = (int *)malloc_check((size_t)nt * sizeof(int));
            vex->train = (unsigned char *)malloc_check((size_t)nt + 1);
            vex->start = (int *)malloc_check((size_t)(nv + 1) * sizeof(int));
            memcpy(vex->tokens, ex->tokens + s0, (size_t)nt * sizeof(int));
            memcpy(vex->train, ex->train + s0, (size_t)nt);
            for (int e = 0; e <= nv; e++) vex->start[e] = ex->start[first + e] - s0;
            vex->count = nv; vex->n = nt;
            for (int e = 0; e < nv; e++) if (vex->start[e + 1] - vex->start[e] > vex->max_len) vex->max_len = vex->start[e + 1] - vex->start[e];
            ex->count = first; ex->n = s0;
        }
    }
    for (int k = 0; k < 2; k++) {
        const Examples *x = k ? vex : ex;
        for (int i = 0; i < x->n; i++) if (x->tokens[i] >= c->vocab_size) {
            int id = x->tokens[i];
            examples_free(ex); examples_free(vex);
            return set_error(k && ta->val_path ? ta->val_path : ta->data_path, "token id %d from the tokenizer exceeds the model's vocabulary (%d): wrong tokenizer?", id, c->vocab_size);
        }
    }
    if (!ta->T) { // the longest example (after truncation) sets the row length
        int longest = ex->max_len > vex->max_len ? ex->max_len : vex->max_len;
        ta->T = longest - 1 < 1 ? 1 : longest - 1;
        if (ta->T > c->seq_len) ta->T = c->seq_len;
    }
    long trained = 0;
    for (int e = 0; e < ex->count; e++) for (int i = ex->start[e] + 1; i < ex->start[e + 1]; i++) trained += ex->train[i]; // targets
    fprintf(stderr, "data: %s, template %s: %d training examples (%d tokens, %ld trained on%s), %d held out; %d truncated to --cutoff-len %d; "
                    "one example per row, right-padded to T = %d\n",
            ta->format == DATA_ALPACA ? "alpaca" : "sharegpt", templates[ta->tpl].name, ex->count, ex->n, trained, ta->train_on_prompt ? ", prompts included" : ": responses only",
            vex->count, ex->truncated + vex->truncated, cutoff, ta->T);
    return 0;
}

// trainer_state.json + optimizer.safetensors: everything needed to continue bit-for-bit
static int save_trainer_state(const char *dir, const TrainArgs *ta, Trainable *tr, int step, uint64_t data_rng, uint64_t dropout_rng) {
    if (mkdir_p(dir)) return -1;
    tensor_to_host(tr->m); tensor_to_host(tr->v);
    char path[4096];
    STWrite ts[2];
    memset(ts, 0, sizeof(ts));
    snprintf(ts[0].name, sizeof(ts[0].name), "adamw.m"); ts[0].dtype = DT_F32; ts[0].ndim = 1; ts[0].shape[0] = (int64_t)tr->total; ts[0].fdata = tr->m;
    snprintf(ts[1].name, sizeof(ts[1].name), "adamw.v"); ts[1].dtype = DT_F32; ts[1].ndim = 1; ts[1].shape[0] = (int64_t)tr->total; ts[1].fdata = tr->v;
    path_join(path, sizeof(path), dir, "optimizer.safetensors");
    if (st_write(path, ts, 2, "{\"format\":\"pt\"}")) return -1;
    StrBuf b = { 0 };
    sb_printf(&b, "{\n  \"step\": %d,\n  \"data_rng\": \"%llu\",\n  \"dropout_rng\": \"%llu\",\n  \"mode\": \"%s\",\n  \"batch_size\": %d,\n  \"seq_len\": %d,\n  \"grad_accum\": %d,\n  \"trainable\": %zu",
              step, (unsigned long long)data_rng, (unsigned long long)dropout_rng, tune_names[ta->mode], ta->B, ta->T, ta->grad_accum, tr->total);
    if (dist_world > 1) sb_printf(&b, ",\n  \"world_size\": %d", dist_world); // data parallel: processes (batch_size is each one's)
    sb_printf(&b, "\n}\n");
    path_join(path, sizeof(path), dir, "trainer_state.json");
    AtomicFile af;
    if (atomic_open(&af, path)) { free(b.s); return -1; }
    atomic_write(&af, b.s, b.n);
    free(b.s);
    return atomic_commit(&af);
}

static int load_trainer_state(const char *dir, const TrainArgs *ta, Trainable *tr, int *step, uint64_t *data_rng, uint64_t *dropout_rng) {
    char path[4096];
    path_join(path, sizeof(path), dir, "trainer_state.json");
    Json *j = json_load(path);
    if (!j) return -1;
    int rc = 0;
    const char *dr = json_str(json_get(j, "data_rng")), *pr = json_str(json_get(j, "dropout_rng")), *mode = json_str(json_get(j, "mode"));
    Json *js = json_get(j, "step");
    if (!json_is_int(js) || js->num < 0 || js->num > INT_MAX || !dr || !pr || !mode) rc = set_error(path, "missing step, data_rng, dropout_rng or mode");
    else if (strcmp(mode, tune_names[ta->mode]) || json_num_or(j, "batch_size", -1) != ta->B || json_num_or(j, "seq_len", -1) != ta->T ||
             json_num_or(j, "grad_accum", -1) != ta->grad_accum || json_num_or(j, "trainable", -1) != (double)tr->total || json_num_or(j, "world_size", 1) != dist_world)
        rc = set_error(path, "checkpoint was made with different settings (mode %s, batch %g, seq_len %g, grad_accum %g, %g trainable values, %g processes); resume with the same ones",
                       mode, json_num_or(j, "batch_size", -1), json_num_or(j, "seq_len", -1), json_num_or(j, "grad_accum", -1), json_num_or(j, "trainable", -1), json_num_or(j, "world_size", 1));
    else {
        *step = (int)js->num;
        *data_rng = strtoull(dr, NULL, 10);
        *dropout_rng = strtoull(pr, NULL, 10);
    }
    json_free(j);
    if (rc) return -1;
    SafeTensors st;
    path_join(path, sizeof(path), dir, "optimizer.safetensors");
    if (st_open(&st, path)) return -1;
    STTensor *tm = st_find(&st, "adamw.m"), *tv = st_find(&st, "adamw.v");
    int64_t shape[1] = { (int64_t)tr->total };
    if (!tm || !tv) rc = set_error(path, "missing adamw.m / adamw.v");
    else if (st_check_shape(&st, tm, 1, shape) || st_check_shape(&st, tv, 1, shape) || st_read_floatX(&st, tm, tr->m, NULL) || st_read_floatX(&st, tv, tr->v, NULL)) rc = -1;
    st_close(&st);
    tensor_to_device(tr->m); tensor_to_device(tr->v);
    return rc;
}

// save the trained result: the adapter (lora) or the model (freeze/full), into dir
static int save_weights(const TrainArgs *ta, Model *m, Lora *lo, const char *dir) {
    if (ta->mode == TUNE_LORA && ta->nst_count) { // the grown embedding and classifier as modules_to_save, the tokenizer beside
        lora_to_host(lo);
        tensor_to_host(m->params_memory);
        lo->embed = m->params.embed; lo->lm_head = m->config.tied ? m->params.embed : m->params.wcls;
        lo->mts_rows = m->config.vocab_size; lo->mts_cols = m->config.dim;
        int rc = lora_save(lo, &ta->lc, dir, ta->model_path);
        lo->embed = lo->lm_head = NULL;
        char dst[4096];
        const char *base = strrchr(ta->nst_tok, '/');
        path_join(dst, sizeof(dst), dir, base ? base + 1 : ta->nst_tok);
        if (!rc && strcmp(dst, ta->nst_tok)) {
            size_t n;
            char *data = read_file(ta->nst_tok, &n, (size_t)1 << 30);
            AtomicFile af;
            if (!data || atomic_open(&af, dst)) rc = -1;
            else { atomic_write(&af, data, n); rc = atomic_commit(&af); }
            free(data);
        }
        return rc;
    }
    if (ta->mode == TUNE_LORA) { lora_to_host(lo); return lora_save(lo, &ta->lc, dir, ta->model_path); }
    if (mkdir_p(dir)) return -1;
    tensor_to_host(m->params_memory);
    if (m->format == FMT_HF) return model_save(m, dir, -1);
    char path[4096];
    path_join(path, sizeof(path), dir, "model.bin");
    return model_save(m, path, -1);
}
// ... with the chat template of instruction data beside it (peft_chat.json)
static int save_result(const TrainArgs *ta, Model *m, Lora *lo, const char *dir) {
    if (save_weights(ta, m, lo, dir)) return -1;
    return ta->format != DATA_TEXT ? chat_template_save(dir, ta->tpl) : 0;
}
static int save_checkpoint(const TrainArgs *ta, Model *m, Lora *lo, Trainable *tr, const char *dir, int step, uint64_t data_rng) {
    if (save_result(ta, m, lo, dir)) return -1;
    return save_trainer_state(dir, ta, tr, step, data_rng, lo ? lo->rng : 0);
}

// A checkpoint folder appears whole or not at all, even under kill -9 or a full disk: it is written as
// "<dir>.tmp.<pid>" and renamed into place; a failed write removes the temporary folder.
static void remove_folder(const char *dir) { // the files in dir (checkpoints hold no subfolders), then dir
    DIR *d = opendir(dir);
    if (!d) { remove(dir); return; }
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        remove(p);
    }
    closedir(d);
    rmdir(dir);
}
static int save_checkpoint_atomic(const TrainArgs *ta, Model *m, Lora *lo, Trainable *tr, const char *dir, int step, uint64_t data_rng) {
    char tmp[4200], old[4200], err[1024];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", dir, (int)getpid());
    snprintf(old, sizeof(old), "%s.old.%d", dir, (int)getpid());
    remove_folder(tmp);
    if (save_checkpoint(ta, m, lo, tr, tmp, step, data_rng)) { // the error names the checkpoint, not the temporary folder
        size_t tl = strlen(tmp);
        snprintf(err, sizeof(err), "%s", peft_errbuf);
        remove_folder(tmp);
        if (!strncmp(err, tmp, tl)) set_error(dir, "%s", err + tl + (err[tl] == '/' || err[tl] == ':' ? 1 : 0) + (err[tl] == ':'));
        else snprintf(peft_errbuf, sizeof(peft_errbuf), "%s", err);
        return -1;
    }
    int had = dir_exists(dir); // a checkpoint of the same step from an earlier run: replaced
    if (had && rename(dir, old) != 0) { remove_folder(tmp); return set_error(dir, "cannot replace the existing checkpoint: %s", strerror(errno)); }
    if (rename(tmp, dir) != 0) { int e = errno; remove_folder(tmp); if (had) rename(old, dir); return set_error(dir, "cannot rename the checkpoint into place: %s", strerror(e)); }
    if (had) remove_folder(old);
    return 0;
}
// Temporary files and folders ("<name>.tmp.<pid>", "<name>.old.<pid>") that a killed run left in dir
static void remove_stale_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        const char *t = strstr(e->d_name, ".tmp.");
        if (!t) t = strstr(e->d_name, ".old.");
        if (!t || !t[5]) continue;
        char *end;
        long pid = strtol(t + 5, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; // its writer still runs
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (dir_exists(p)) remove_folder(p); else remove(p);
    }
    closedir(d);
}

static void fmt_time(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) { snprintf(buf, n, "?"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%dh%02dm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%dm%02ds", t / 60, t % 60);
    else snprintf(buf, n, "%ds", t);
}
static void fmt_bytes(char *buf, size_t n, double b) {
    if (b >= 1 << 30) snprintf(buf, n, "%.2f GiB", b / (1 << 30));
    else if (b >= 1 << 20) snprintf(buf, n, "%.1f MiB", b / (1 << 20));
    else snprintf(buf, n, "%.1f KiB", b / 1024);
}

static int cmp_double(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
static double median(double *v, int n) { qsort(v, (size_t)n, sizeof(double), cmp_double); return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]); }
// --bench: medians over the steps after the first (warm-up) one or two; one line, for bench/bench.py
static void bench_report(double *step_s, double *mm_s, double *mm_flops, int n, int tokens_per_step) {
    int warm = n >= 4 ? 2 : 1, k = n - warm, threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    double s = median(step_s + warm, k), ms = median(mm_s + warm, k), mf = median(mm_flops + warm, k);
#ifdef PEFT_CUDA
    if (gpu_on) { // the matmuls run asynchronously: only whole steps are timed
        fprintf(stderr, "bench: cuda | steps %d after %d warm-up | median step %.4f s | %.1f tok/s | GPU memory peak %.2f GiB (allocations %.2f GiB)\n",
                k, warm, s, tokens_per_step / s, gpu_peak_bytes() / 1073741824.0, gpu_peak_alloc_bytes() / 1073741824.0);
        return;
    }
#endif
    fprintf(stderr, "bench: threads %d | steps %d after %d warm-up | median step %.4f s | %.1f tok/s | "
                    "matmul %.3f GFLOP/step in %.4f s = %.1f GFLOP/s (%.1f GFLOP/s over the whole step)\n",
            threads, k, warm, s, tokens_per_step / s, mf * 1e-9, ms, mf * 1e-9 / ms, mf * 1e-9 / s);
}

#ifdef PEFT_CUDA
// the GPU memory plan's parts: evaluation gets its own activations; AdamW keeps two moments
static int val_fits_eval(const TrainArgs *ta) { return ta->val_path || ta->val_frac > 0; }
static double tr_bytes(const Model *m, const Lora *lo, int mode) { return (double)(mode == TUNE_LORA ? lo->num_params : m->num_parameters) * sizeof(floatX); }
#endif
// OUT/loss.svg: training loss (per step) and held-out loss (per validation) against the step, with the learning
// rate on a second axis. Plain SVG 1.1 (lines, polylines, text), written atomically; any browser shows it.
typedef struct { double *step_loss, *lr, *val_loss; int *val_step; int n, nval; } LossCurve;
static double nice_step(double range, int ticks) { // 1, 2 or 5 times a power of ten, about range/ticks
    double raw = range / ticks, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}
static int write_loss_svg(const char *path, const LossCurve *lc, int total_steps, const char *title) {
    const double W = 800, H = 480, x0 = 70, x1 = 720, y0 = 50, y1 = 420;
    double lo = INFINITY, hi = -INFINITY, lrmax = 0;
    for (int i = 0; i < lc->n; i++) { if (lc->step_loss[i] < lo) lo = lc->step_loss[i]; if (lc->step_loss[i] > hi) hi = lc->step_loss[i]; if (lc->lr[i] > lrmax) lrmax = lc->lr[i]; }
    for (int i = 0; i < lc->nval; i++) { if (lc->val_loss[i] < lo) lo = lc->val_loss[i]; if (lc->val_loss[i] > hi) hi = lc->val_loss[i]; }
    if (!(lo <= hi)) { lo = 0; hi = 1; }
    if (hi - lo < 1e-6) { lo -= 0.5; hi += 0.5; }
    double ys = nice_step(hi - lo, 6);
    lo = floor(lo / ys) * ys; hi = ceil(hi / ys) * ys;
    int xmax = total_steps > 0 ? total_steps : 1;
    double xs = nice_step(xmax, 8);
    if (lrmax <= 0) lrmax = 1;
    double ls = nice_step(lrmax, 5), lrtop = ceil(lrmax / ls) * ls;
#define SX(v) (x0 + (x1 - x0) * (double)(v) / xmax)
#define SY(v) (y1 - (y1 - y0) * ((v) - lo) / (hi - lo))
#define SL(v) (y1 - (y1 - y0) * (v) / lrtop)
    StrBuf b = { 0 };
    sb_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    sb_printf(&b, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n", W, H);
    sb_puts(&b, "<text x=\"400\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">");
    for (const char *q = title; *q; q++) { if (*q == '<') sb_puts(&b, "&lt;"); else if (*q == '&') sb_puts(&b, "&amp;"); else if (*q == '>') sb_puts(&b, "&gt;"); else sb_putn(&b, q, 1); }
    sb_puts(&b, "</text>\n");
    for (double v = lo; v <= hi + ys * 1e-6; v += ys) { // loss grid and ticks (left)
        sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", x0, SY(v), x1, SY(v));
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n", x0 - 6, SY(v) + 4, v);
    }
    for (double v = 0; v <= xmax + xs * 1e-6; v += xs) {
        sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", SX(v), y0, SX(v), y1);
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", SX(v), y1 + 18, v);
    }
    for (double v = 0; v <= lrtop + ls * 1e-6; v += ls) sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#2ca02c\">%.2g</text>\n", x1 + 6, SL(v) + 4, v);
    sb_printf(&b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333333\"/>\n", x0, y0, x1 - x0, y1 - y0);
    sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", (x0 + x1) / 2, H - 20);
    sb_printf(&b, "<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">loss</text>\n", (y0 + y1) / 2, (y0 + y1) / 2);
    sb_printf(&b, "<text x=\"785\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#2ca02c\" transform=\"rotate(90 785 %.1f)\">learning rate</text>\n", (y0 + y1) / 2, (y0 + y1) / 2);
    // curves: at most ~1000 points each (means over buckets of steps)
    int bucket = lc->n > 1000 ? (lc->n + 999) / 1000 : 1;
    for (int curve = 0; curve < 2; curve++) {
        sb_printf(&b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" points=\"", curve ? "#2ca02c" : "#1f77b4", curve ? "1" : "1.5");
        for (int i = 0; i < lc->n; i += bucket) {
            double sum = 0, st = 0;
            int k = 0;
            for (; k < bucket && i + k < lc->n; k++) { sum += curve ? lc->lr[i + k] : lc->step_loss[i + k]; st += i + k + 1; }
            sb_printf(&b, "%.1f,%.1f ", SX(st / k), curve ? SL(sum / k) : SY(sum / k));
        }
        sb_puts(&b, "\"/>\n");
    }
    if (lc->nval) {
        sb_puts(&b, "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"");
        for (int i = 0; i < lc->nval; i++) sb_printf(&b, "%.1f,%.1f ", SX(lc->val_step[i]), SY(lc->val_loss[i]));
        sb_puts(&b, "\"/>\n");
        for (int i = 0; i < lc->nval; i++) sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n", SX(lc->val_step[i]), SY(lc->val_loss[i]));
    }
    // legend
    const char *names[3] = { "train loss", "held-out loss", "learning rate (right axis)" }, *cols[3] = { "#1f77b4", "#d62728", "#2ca02c" };
    for (int i = 0; i < 3; i++) {
        double ly = y0 + 16 + 18 * i;
        sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n", x1 - 190, ly, x1 - 165, ly, cols[i]);
        sb_printf(&b, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", x1 - 160, ly + 4, names[i]);
    }
    sb_puts(&b, "</svg>\n");
#undef SX
#undef SY
#undef SL
    AtomicFile af;
    if (atomic_open(&af, path)) { free(b.s); return -1; }
    atomic_write(&af, b.s, b.n);
    free(b.s);
    return atomic_commit(&af);
}

static void note_tokenizer(void); // CLI: names the tokenizer found beside the model
// The layer activations training keeps per layer (acts_keep): all with weight gradients (every mode but
// LoRA); with LoRA those its modules read, from the adapter (lo) once it exists, before that from
// --targets (a resumed adapter's modules are not known before it loads: all, an upper bound).
static unsigned train_acts_keep(const TrainArgs *ta, const Lora *lo) {
    if (ta->mode != TUNE_LORA) return acts_keep(0, 1);
    if (lo) return acts_keep(lora_targets(lo), 0);
    return ta->resume_adapter ? ACTS_KEEP_ALL : acts_keep(ta->lc.targets, 0);
}
// ----------------------------------------------------------------------------
// GPU memory plan (--gpu-memory SIZE): the fastest configuration whose device memory fits the budget.
// From fastest to slowest: the frozen base resident and every layer's activations kept; resident with
// checkpointed activations (only each layer's input kept, the layer recomputed in the backward); the
// base in host memory, streamed into PLAN_SLOTS device buffers a layer ahead of its use (checkpointed);
// and the checkpoints (the layer inputs) in host memory too, PLAN_SLOTS of them on the device.
// With N processes (WORLD_SIZE, or --world N with --plan-only) three sharded configurations come between
// (--shard: a GPU keeps 1/N of each layer and PLAN_SLOTS whole layers gathered): activations kept,
// checkpointed, and checkpointed in host memory; and the offloaded ones shard too (a rank's host memory
// holds its 1/N: the same device bytes). A pure function of the shapes (no GPU needed), so that the CPU
// tests check its decisions.
enum { PLAN_RESIDENT, PLAN_CHECKPOINT, PLAN_SHARD, PLAN_SHARD_CKPT, PLAN_SHARD_ACTS, PLAN_OFFLOAD, PLAN_OFFLOAD_ACTS, NUM_PLANS };
static const char *plan_names[NUM_PLANS] = { "resident", "resident, checkpointed activations", "sharded weights",
                                             "sharded weights, checkpointed activations", "sharded weights, offloaded activations",
                                             "offloaded weights, checkpointed activations", "offloaded weights and activations" };
// each configuration's flags: base (0 resident, 1 sharded, 2 offloaded), activations (0 kept, 1 checkpointed, 2 in host memory)
static const struct { int base, acts; } plan_modes[NUM_PLANS] = { { 0, 0 }, { 0, 1 }, { 1, 0 }, { 1, 1 }, { 1, 2 }, { 2, 1 }, { 2, 2 } };
#define PLAN_WORK ((double)(1 << 30)) // the CUDA context and the kernels' own scratch (bf16 operand copies): an allowance
typedef struct {
    Config c;
    int quant, quant_embed, quant_dq, quant_bs; // the base's storage (QT_NONE: float weights)
    int weight_bytes;                           // a frozen float weight on the device: 2 (bf16 matmuls) or 4 (--dtype fp32)
    int act_bytes;                              // a low-precision activation there (gpu_act_size): 2 or 4
    int B, T, with_eval;                        // batch; with_eval: a validation set (evaluation's own activations)
    int world;                                  // processes (GPUs): the sharded configurations split the base over them
    unsigned targets;                           // LoRA: bit t adapts target t in lora_layers layers
    int lora_layers, r, dora, dropout;          // dropout: p > 0 (a mask per row is kept)
} PlanShape;
// device bytes of one configuration: base (the layers' weights: all; 1/world of them and PLAN_SLOTS whole; PLAN_SLOTS),
// other weights (embedding, norms, classifier, RoPE tables), activations, LoRA (weights, gradients, AdamW
// moments, per-row buffers, scratch), work (PLAN_WORK and the dequantized operand of a quantized base)
typedef struct { double base, other, acts, lora, work, total; } PlanBytes;
typedef struct { PlanBytes p[NUM_PLANS]; int choice; double smallest; } GpuPlan; // choice -1: none fits; total INFINITY: not a configuration (one process: no sharding)
// a frozen (rows x cols) matrix on the device
static double plan_matrix_bytes(const PlanShape *ps, int quantized, double n) {
    return quantized ? (double)qtensor_memory_bytes(ps->quant, (size_t)n, ps->quant == QT_NF4 && ps->quant_dq, ps->quant_bs) : n * ps->weight_bytes;
}
static void gpu_plan(GpuPlan *gp, const PlanShape *ps, double budget) {
    const Config *c = &ps->c;
    double N = (double)ps->B * ps->T, C = c->dim, V = c->vocab_size, L = c->n_layers, layer = 0, maxmat = 0, lora = 0, rows = 0, maxdim = 0;
    for (int t = 0; t < NUM_TARGETS; t++) {
        int in, out;
        target_dims(c, t, &in, &out);
        layer += plan_matrix_bytes(ps, ps->quant != QT_NONE, (double)in * out);
        if ((double)in * out > maxmat) maxmat = (double)in * out;
        if (!(ps->targets >> t & 1)) continue;
        lora += (double)ps->r * (in + out) + (ps->dora ? out : 0);          // A, B (, magnitude)
        rows += N * (ps->r + (ps->dropout ? in : 0)) + (ps->dora ? out : 0); // u (, mask) per row (, wnorm)
        if (in > maxdim) maxdim = in;
        if (out > maxdim) maxdim = out;
    }
    int qe = ps->quant != QT_NONE && ps->quant_embed;
    double other = (qe ? plan_matrix_bytes(ps, 1, V * C) : V * C * sizeof(floatX))             // the embedding (fp32, gathered rows)
                 + (c->tied ? 0 : plan_matrix_bytes(ps, qe, V * C))                              // an untied classifier
                 + (2 * L * C + C) * sizeof(floatX) + 2.0 * c->seq_len * (c->head_dim / 2) * sizeof(floatX); // norms, RoPE
    double lora_bytes = (ps->lora_layers * (4 * lora + rows) + 5 * N * maxdim) * sizeof(floatX); // params, grads, m, v; rows; scratch
    double work = PLAN_WORK + (ps->quant != QT_NONE ? maxmat * ps->weight_bytes : 0);
    unsigned keep = acts_keep(ps->targets, 0);
    double eval = ps->with_eval ? acts_plan_bytes_on(c, ps->B, ps->T, 0, 1, ACTS_KEEP_ALL, 1, ps->act_bytes) : 0;
    double full = acts_plan_bytes_on(c, ps->B, ps->T, 0, 0, keep, 1, ps->act_bytes) + eval;
    double ckpt = acts_plan_bytes_on(c, ps->B, ps->T, 1, 0, keep, 1, ps->act_bytes) + eval;
    double slots = L < PLAN_SLOTS ? L : PLAN_SLOTS, inputs = L + 1 < PLAN_SLOTS ? L + 1 : PLAN_SLOTS;
    double acts[3] = { full, ckpt, ckpt - (L + 1 - inputs) * N * C * sizeof(floatX) }; // kept, checkpointed, in host memory (the L+1 layer inputs (N,C))
    double world = ps->world > 1 ? ps->world : 1, base[3] = { L * layer, L * layer / world + slots * layer, slots * layer }; // resident, sharded, offloaded
    gp->choice = -1;
    gp->smallest = INFINITY;
    for (int k = 0; k < NUM_PLANS; k++) {
        PlanBytes *p = &gp->p[k];
        p->base = base[plan_modes[k].base];
        p->other = other; p->acts = acts[plan_modes[k].acts]; p->lora = lora_bytes; p->work = work;
        p->total = plan_modes[k].base == 1 && world < 2 ? INFINITY : p->base + p->other + p->acts + p->lora + p->work;
        if (gp->choice < 0 && p->total <= budget) gp->choice = k;
        if (p->total < gp->smallest) gp->smallest = p->total;
    }
}
// the plan's lines on stderr: each configuration's bytes, the choice and why
static void gpu_plan_print(const GpuPlan *gp, double budget, int world) {
    char b[32], t[32];
    fmt_bytes(b, sizeof(b), budget);
    fprintf(stderr, "GPU memory plan for a budget of %s%s:\n", b, world > 1 ? " per GPU" : "");
    for (int k = 0; k < NUM_PLANS; k++) {
        const PlanBytes *p = &gp->p[k];
        if (isinf(p->total)) continue; // (sharding, with one process)
        char w[32], o[32], a[32], l[32], x[32];
        fmt_bytes(t, sizeof(t), p->total); fmt_bytes(w, sizeof(w), p->base); fmt_bytes(o, sizeof(o), p->other);
        fmt_bytes(a, sizeof(a), p->acts); fmt_bytes(l, sizeof(l), p->lora); fmt_bytes(x, sizeof(x), p->work);
        fprintf(stderr, "  %c %-44s %10s (layers %s, other weights %s, activations %s, LoRA %s, work %s)%s\n", k == gp->choice ? '*' : ' ', plan_names[k], t, w, o, a, l, x,
                p->total <= budget ? "" : ": does not fit");
    }
    if (gp->choice >= 0) fprintf(stderr, "plan: %s%s, the fastest that fits%s\n", plan_names[gp->choice], world > 1 && plan_modes[gp->choice].base ? (plan_modes[gp->choice].base == 1 ? " (--shard)" : " (--shard --offload: each rank's host memory holds its 1/N)") : "",
                                 gp->choice ? " (the faster ones do not)" : "");
    if (world > 1) fprintf(stderr, "plan: for %d processes (1/%d of the frozen base a GPU where sharded)\n", world, world);
}
// the budget's argument: bytes, or a number with K, M, G or T (powers of 1024; "22G", "22GiB", "22GB")
static double parse_size(const char *flag, const char *v) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    const char *units = "KMGT", *u = *end ? strchr(units, toupper((unsigned char)*end)) : NULL;
    if (u) {
        x *= pow(1024.0, (double)(u - units + 1));
        end++;
        if (!strcmp(end, "iB") || !strcmp(end, "B")) end += strlen(end);
    }
    if (errno || end == v || *end || !(x >= 1 && x <= 1e18)) fatal("%s: '%s' is not a size (bytes, or a number with K, M, G or T, e.g. 22G)", flag, v);
    return x;
}

// What training will allocate beyond the loaded model: activations (acts_alloc's buffers, twice with a
// validation set), the trainable parameters' gradients and AdamW moments, LoRA's per-row buffers.
static int train_mem_check(const TrainArgs *ta, const Model *m, int with_eval) {
    const Config *c = &m->config;
    double train_acts = acts_plan_bytes(c, ta->B, ta->T, ta->checkpoint_acts, 0, train_acts_keep(ta, NULL));
    double N = (double)ta->B * ta->T, acts = train_acts + (with_eval ? acts_plan_bytes(c, ta->B, ta->T, 0, 1, ACTS_KEEP_ALL) : 0), trainable = 0, extra = 0;
    if (!bytes_fit(train_acts)) // first: the address space (32-bit machines)
        return set_error(ta->model_path, "a batch of %d x %d tokens needs %.4g GB of activations: too large for this %s machine", ta->B, ta->T,
                         train_acts / 1e9, machine_bits());
    if (gpu_on) acts = 0; // activations live in GPU memory (checked against the GPU's free memory in train)
    if (ta->mode == TUNE_LORA) { // params, grads, m, v; u (and the dropout mask) per row; the scratch rows
        double maxdim = c->hidden_dim > c->dim ? c->hidden_dim : c->dim;
        for (int t = 0; t < NUM_TARGETS; t++) {
            if (!(ta->lc.targets >> t & 1)) continue;
            int in, out;
            target_dims(c, t, &in, &out);
            double r = ta->resume_adapter ? 64 : ta->lc.r; // a resumed adapter's rank is known once loaded; 64 bounds the usual ones
            trainable += c->n_layers * (r * (in + out) + (ta->lc.dora ? out : 0));
            extra += c->n_layers * N * (r + (ta->lc.dropout > 0 ? in : 0));
        }
        extra += 5 * N * maxdim;
        trainable *= 4;
    } else trainable = (double)m->num_parameters * 3; // gradients of every weight, moments of the trained ones
    char what[256], a[32], t[32];
    fmt_mem(a, sizeof(a), acts);
    fmt_mem(t, sizeof(t), (trainable + extra) * sizeof(floatX));
    snprintf(what, sizeof(what), "training with batch %d x %d tokens (activations %s%s, trainable state %s)", ta->B, ta->T, a, with_eval ? " with validation" : "", t);
    return mem_check(ta->model_path, what, acts + (trainable + extra) * sizeof(floatX), ta->checkpoint_acts ? "; lower -b or -T" : "; lower -b or -T, or add --checkpoint-activations");
}

static int train(TrainArgs *ta, Model *m, Tokenizer *tok) {
    Config *c = &m->config;
    // data: instruction examples, or text
    Examples ex, vex;
    memset(&ex, 0, sizeof(ex)); memset(&vex, 0, sizeof(vex));
    int is_ex = ta->format != DATA_TEXT;
    if (is_ex && train_load_examples(ta, c, tok, &ex, &vex)) return -1;
    int B = ta->B, T = ta->T, N = B * T;
    int ntok = 0;
    int *tokens = NULL;
    if (!is_ex) {
        size_t dlen;
        char *dtext = read_file(ta->data_path, &dlen, (size_t)1 << 31);
        if (dtext) warn_if_not_utf8(ta->data_path, dtext, dlen);
        free(dtext);
        tokens = tokenize_file(tok, ta->data_path, &ntok);
        if (!tokens) return -1;
    }
    int *val = NULL, nval = 0, ntrain = ntok;
    if (is_ex) { ntrain = ex.n; nval = vex.n; }
    else if (ta->val_path) {
        val = tokenize_file(tok, ta->val_path, &nval);
        if (!val) { free(tokens); return -1; }
    } else if (ta->val_frac > 0) {
        nval = (int)(ntok * (double)ta->val_frac);
        if (nval < T + 1) nval = 0; // too little to hold out a window: train on everything
        ntrain = ntok - nval;
        val = nval ? tokens + ntrain : NULL;
    }
    for (int i = 0; i < ntok; i++)
        if (tokens[i] >= c->vocab_size) {
            int id = tokens[i];
            free(tokens);
            if (ta->val_path) free(val);
            return set_error(ta->data_path, "token id %d from the tokenizer exceeds the model's vocabulary (%d): wrong tokenizer?", id, c->vocab_size);
        }
    if (!is_ex && ntrain < T + 1) { free(tokens); if (ta->val_path) free(val); return set_error(ta->data_path, "data is shorter than one window: %d tokens, need at least T+1 = %d (lower -T)", ntrain, T + 1); }
    int steps = ta->steps;
    if (steps <= 0) {
        double per_step = (double)N * ta->grad_accum * dist_world;
        steps = (int)ceil(ta->epochs * ntrain / per_step);
        if (is_ex) steps = (int)ceil(ta->epochs * ex.count / ((double)B * ta->grad_accum * dist_world)); // epochs of examples
        if (steps < 1) steps = 1;
    }
    if (ta->warmup < 0) ta->warmup = steps / 20;                          // 5% of the steps
    if (ta->eval_every <= 0) ta->eval_every = steps >= 10 ? steps / 10 : 1; // about 10 validations
    if (ta->log_every <= 0) ta->log_every = steps <= 200 ? 1 : steps / 100;
    if (train_mem_check(ta, m, val && nval >= 2)) { free(tokens); if (ta->val_path) free(val); return -1; }
    // model, adapter, trainable set
    Lora lora, *lo = NULL;
    floatX *gmem = NULL;
    ParameterTensors g;
    memset(&g, 0, sizeof(g));
    int layer_from = c->n_layers;
    if (ta->mode == TUNE_LORA) {
        if (ta->resume_adapter) {
            LoraConfig lc;
            if (lora_load(&lora, &lc, c, ta->resume_adapter, 1)) { free(tokens); return -1; }
            lc.dropout = ta->lc.dropout;
            lc.seed = ta->lc.seed;
            ta->lc = lc;
            lora.dropout = lc.dropout;
            lora.rng = lc.seed ^ 0x9E3779B97F4A7C15ull;
        } else {
            lora_create(&lora, c, &ta->lc, 1);
        }
        lo = &lora;
        lora_alloc_acts(lo, N);
        lo->training = 1;
    } else {
        gmem = (floatX *)tensor_alloc(m->num_parameters * sizeof(floatX));
        point_parameters(&g, gmem, m->param_sizes, c->tied);
        layer_from = ta->mode == TUNE_FULL ? 0 : c->n_layers - ta->freeze_layers;
    }
    if (lo && lora_setup_mts(lo, m, ta->mts, ta->model_path)) return -1;
    m->trained = ta->mode != TUNE_LORA ? ~0u : ta->nst_count ? (1u << 0 | 1u << 11) : 0; // new tokens: rows of embed and wcls
    Net net;
    if (ta->offload || ta->shard) {
        const char *flag = ta->shard ? "--shard" : "--offload";
        if (!gpu_on) fatal("%s streams the frozen base to a GPU; this run is on the CPU (--device cuda)", flag);
        if (ta->mode != TUNE_LORA || m->trained) fatal("%s streams a frozen base: it needs LoRA training without --new-special-tokens", flag);
        offload_on = ta->shard || (ta->offload & OFFLOAD_WEIGHTS);
        shard_on = ta->shard; shard_host = ta->shard && (ta->offload & OFFLOAD_WEIGHTS);
    }
    double t_mirror = time_sec();
    net_init(&net, m, lo);
    mirror_sec = time_sec() - t_mirror;
    if (lo && ta->lc.dora && !ta->resume_adapter) lora_init_dora(lo, m);
#ifdef PEFT_CUDA
    if (gpu_on) { // what the activations will need, against what is free, before taking any of it (--offload activations: PLAN_SLOTS layer inputs)
        double xs = ta->offload & OFFLOAD_ACTS ? ((double)c->n_layers + 1 - PLAN_SLOTS) * N * c->dim * sizeof(floatX) : 0;
        double need = acts_plan_bytes(c, B, T, ta->checkpoint_acts, 0, train_acts_keep(ta, lo)) - (xs > 0 ? xs : 0) + (val_fits_eval(ta) ? acts_plan_bytes(c, B, T, 0, 1, ACTS_KEEP_ALL) : 0) + 2.0 * tr_bytes(m, lo, ta->mode),
               have = (double)gpu_free_bytes();
        if (need > have) fatal("out of GPU memory: training needs %.2f GiB more for activations and optimizer state (batch %d x %d%s), %.2f GiB are free; "
                               "lower -b or -T, or use --checkpoint-activations, --eval-batches or --quant nf4", need / 1073741824.0, B, T,
                               ta->checkpoint_acts ? ", checkpointed" : "", have / 1073741824.0);
    }
#endif
    Trainable tr;
    if (ta->mode == TUNE_LLAMA_PRO) { // only the inserted blocks; gradients flow from the first of them up
        int *train_l = (int *)calloc_check((size_t)c->n_layers, sizeof(int));
        for (int l = 0; l < c->n_layers; l++) train_l[l] = llama_pro_is_new(l, c->n_layers, ta->expand);
        layer_from = c->n_layers / ta->expand - 1;
        trainable_init_layers(&tr, m, &g, train_l);
        free(train_l);
    } else trainable_init(&tr, m, &g, lo, ta->mode, layer_from);
    if (lo && lo->embed) trainable_add(&tr, lo->embed, lo->dembed, (size_t)c->vocab_size * c->dim);
    if (lo && lo->lm_head) trainable_add(&tr, lo->lm_head, lo->dlm_head, (size_t)c->vocab_size * c->dim);
    ParameterTensors gn; // new special tokens: gradients of the embedding/classifier (only their new rows train)
    memset(&gn, 0, sizeof(gn));
    floatX *gn_mem = NULL;
    if (ta->nst_count) {
        size_t VC = (size_t)c->vocab_size * c->dim, C = (size_t)c->dim, R = (size_t)ta->nst_count * C, f = (size_t)ta->nst_first * C;
        gn_mem = (floatX *)tensor_alloc((VC * (c->tied ? 1 : 2) + C) * sizeof(floatX));
        gn.embed = gn_mem; gn.wcls = c->tied ? gn_mem : gn_mem + VC; gn.rms_final = gn_mem + VC * (c->tied ? 1 : 2);
        trainable_add(&tr, m->params.embed + f, gn.embed + f, R);
        if (!c->tied) trainable_add(&tr, m->params.wcls + f, gn.wcls + f, R);
    }
    Activations a;
    acts_alloc_x(&a, c, B, T, ta->checkpoint_acts, 0, train_acts_keep(ta, lo), ta->offload & OFFLOAD_ACTS ? (c->n_layers + 1 < PLAN_SLOTS ? c->n_layers + 1 : PLAN_SLOTS) : 0);
    if (ta->offload & OFFLOAD_ACTS) acts_offload_x(&a, c);
    uint64_t data_rng = ta->seed * 0x9E3779B97F4A7C15ull + 12345;
    int step0 = 0;
    if (ta->resume) {
        if (ta->mode == TUNE_LORA) {
            LoraConfig lc2; Lora l2;
            if (lora_load(&l2, &lc2, c, ta->resume, 0)) return -1;
            if (l2.num_params != lora.num_params) return set_error(ta->resume, "checkpoint adapter does not match the requested LoRA setup");
            memcpy(lora.params, l2.params, lora.num_params * sizeof(floatX));
            if ((l2.embed != NULL) != (lora.embed != NULL) || (l2.lm_head != NULL) != (lora.lm_head != NULL)) return set_error(ta->resume, "checkpoint's modules_to_save differ from the requested ones");
            if (l2.embed) memcpy(lora.embed, l2.embed, (size_t)c->vocab_size * c->dim * sizeof(floatX));
            if (l2.lm_head) memcpy(lora.lm_head, l2.lm_head, (size_t)c->vocab_size * c->dim * sizeof(floatX));
            lora_to_device(&lora);
            lora_free(&l2); free(lc2.layers);
        } else {
            Model m2;
            char path[4096];
            if (m->format == FMT_HF) snprintf(path, sizeof(path), "%s", ta->resume); else path_join(path, sizeof(path), ta->resume, "model.bin");
            if (model_load(&m2, path)) return -1;
            if (m2.num_parameters != m->num_parameters) return set_error(ta->resume, "checkpoint model does not match");
            memcpy(m->params_memory, m2.params_memory, m->num_parameters * sizeof(floatX));
            tensor_to_device(m->params_memory);
            model_free(&m2);
        }
        uint64_t drop_rng = 0;
        if (load_trainer_state(ta->resume, ta, &tr, &step0, &data_rng, &drop_rng)) return -1;
        if (lo) lo->rng = drop_rng;
        fprintf(stderr, "resumed from %s at step %d\n", ta->resume, step0);
    }
    // the output folder first, so that an unwritable one fails before any work
    char path[4096];
    FILE *log = NULL;
    int writes = dist_rank == 0; // data parallel: rank 0 alone writes (and its log is the only one)
    if (writes && mkdir_p(ta->outdir) == 0) {
        remove_stale_temps(ta->outdir);
        path_join(path, sizeof(path), ta->outdir, "log.jsonl");
        log = fopen(path, ta->resume ? "ab" : "wb");
        if (!log) set_error(path, "cannot write: %s", strerror(errno));
    }
    if (!log && writes) { // nothing was trained: free what was set up
        acts_free(&a); trainable_free(&tr); net_free(&net); tensor_free(gmem); tensor_free(gn_mem);
        if (lo) lora_free(lo);
        free(tokens);
        if (ta->val_path) free(val);
        examples_free(&ex); examples_free(&vex);
        return -1;
    }
    // the memory plan
    {
        char w[32], ac[32], gr[32], op[32], lw[32];
        fmt_bytes(w, sizeof(w), (double)m->num_parameters * sizeof(floatX) + (double)model_quant_bytes(m));
        fmt_bytes(ac, sizeof(ac), (double)a.bytes);
        fmt_bytes(gr, sizeof(gr), (double)(ta->mode == TUNE_LORA ? lora.num_params : m->num_parameters) * sizeof(floatX));
        fmt_bytes(op, sizeof(op), (double)tr.total * 2 * sizeof(floatX));
        fmt_bytes(lw, sizeof(lw), lo ? (double)lora.num_params * sizeof(floatX) : 0);
        note_tokenizer();
        fprintf(stderr, "model: %s (dim %d, %d layers, %d heads / %d kv, vocab %d), %.2fM parameters\n", ta->model_path, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, m->num_parameters / 1e6);
        fprintf(stderr, "tuning: %s, %zu trainable parameters (%.3f%% of the model)\n", tune_names[ta->mode], tr.total, 100.0 * tr.total / (double)m->num_parameters);
        fprintf(stderr, "data: %d train tokens, %d validation tokens; batch %d x %d x accum %d", ntrain, nval, B, T, ta->grad_accum);
        if (dist_world > 1) fprintf(stderr, " x %d GPUs", dist_world);
        fprintf(stderr, " = %ld %s/step; %d steps\n", (long)(is_ex ? B : N) * ta->grad_accum * dist_world, is_ex ? "examples" : "tokens", steps);
        fprintf(stderr, "memory: weights %s, LoRA %s, activations %s%s, gradients %s, AdamW state %s\n", w, lw, ac, ta->checkpoint_acts ? " (checkpointed)" : "", gr, op);
    }
    signal(SIGINT, on_sigint);
    Activations eval_a;
    int have_eval = is_ex ? vex.count > 0 : (val && nval >= 2);
    if (have_eval) acts_alloc(&eval_a, c, B, T, 0, 1, ACTS_KEEP_ALL);
    int *inp = (int *)malloc_check((size_t)N * sizeof(int)), *tgt = (int *)malloc_check((size_t)N * sizeof(int));
    double t_start = time_sec(), first_loss = -1, last_loss = -1, last_val = -1, first_val = -1;
    if (have_eval && step0 == 0) { // where the held-out loss starts
        long cnt;
        first_val = is_ex ? evaluate_examples(&net, &eval_a, &vex, ta->eval_batches * B * dist_world, &cnt) : evaluate(&net, &eval_a, val, nval, ta->eval_batches * B * dist_world, &cnt);
        fprintf(stderr, "step %5d/%d | val %.4f (before training, %ld tokens)\n", 0, steps, first_val, cnt);
        if (log) fprintf(log, "{\"step\": 0, \"loss\": null, \"val_loss\": %.6f, \"lr\": 0, \"grad_norm\": null, \"tokens_per_s\": null, \"elapsed_s\": 0}\n", first_val);
        t_start = time_sec();
    }
    long tokens_done = 0;
    int rc = 0, step;
    LossCurve curve = { 0 };
    curve.step_loss = (double *)calloc_check((size_t)steps + 1, sizeof(double));
    curve.lr = (double *)calloc_check((size_t)steps + 1, sizeof(double));
    curve.val_loss = (double *)calloc_check((size_t)steps + 2, sizeof(double));
    curve.val_step = (int *)calloc_check((size_t)steps + 2, sizeof(int));
    char svg_path[4096], svg_title[512];
    path_join(svg_path, sizeof(svg_path), ta->outdir, "loss.svg");
    snprintf(svg_title, sizeof(svg_title), "peft.c: %.200s on %.200s", ta->model_path, ta->data_path);
    if (first_val >= 0) { curve.val_step[0] = 0; curve.val_loss[0] = first_val; curve.nval = 1; }
    double *step_s = (double *)calloc_check((size_t)(steps - step0) + 1, sizeof(double)), *step_mm_s = NULL, *step_mm_flops = NULL;
    if (ta->bench) {
        step_mm_s = (double *)calloc_check((size_t)(steps - step0) + 1, sizeof(double));
        step_mm_flops = (double *)calloc_check((size_t)(steps - step0) + 1, sizeof(double));
    }
    for (step = step0; step < steps; step++) {
        double t0 = time_sec();
        mm_stats.on = ta->bench; mm_stats.flops = mm_stats.secs = 0;
        trainable_zero_grad(&tr);
        double loss = 0;
        for (int micro = 0; micro < ta->grad_accum; micro++) {
            train_batch(inp, tgt, B, T, &data_rng, tokens, ntrain, is_ex ? &ex : NULL);
            peft_forward(&net, &a, inp);
            double l = peft_loss(&a, c, tgt);
            if (dist_world > 1) { // the mean over every rank's targets: each rank's backward then scales by 1/(their count)
                double v[2] = { l * a.count, (double)a.count };
                dist_sum_host(v, 2);
                a.count = (int)v[1];
                l = v[1] ? v[0] / v[1] : 0;
            }
            loss += l / ta->grad_accum;
            if (ta->nst_count) peft_backward(&net, &a, &gn, c->n_layers, 1); // LoRA + the embedding/classifier gradients
            else peft_backward(&net, &a, lo ? NULL : &g, layer_from, ta->mode == TUNE_FULL);
        }
        trainable_sum_ranks(&tr); // NCCL: the whole batch's gradient on every rank
        if (ta->grad_accum > 1) trainable_scale_grad(&tr, 1.0 / ta->grad_accum);
        double gnorm = trainable_grad_norm(&tr);
        if (ta->clip > 0 && gnorm > ta->clip) trainable_scale_grad(&tr, ta->clip / gnorm);
        float lr = lr_at(step, steps, ta->warmup, ta->lr, ta->schedule);
        trainable_update(&tr, step + 1, lr, ta->wd);
        double dt = time_sec() - t0;
        mm_stats.on = 0;
        step_s[step - step0] = dt;
        if (ta->bench) { step_mm_s[step - step0] = mm_stats.secs; step_mm_flops[step - step0] = mm_stats.flops; }
        tokens_done += (long)N * ta->grad_accum * dist_world;
        if (dist_world > 1) { double st = stop_requested; dist_sum_host(&st, 1); stop_requested = st > 0; } // all stop at the same step
        if (first_loss < 0) { // one line for benches: start to the end of the first step, and the host memory peak so far
            first_loss = loss;
            fprintf(stderr, "startup: first step done %.2f s after the start (model load %.2f s, step %.2f s), host memory peak %.3f GiB", time_sec() - start_sec, load_sec, dt, host_peak_bytes() / 1073741824.0);
            if (gpu_on) fprintf(stderr, "; GPU start %.2f s, weights to the GPU %.2f s", gpu_start_sec, mirror_sec);
            fprintf(stderr, "\n");
        }
        last_loss = loss;
        int last = step == steps - 1;
        double vloss = -1;
        if (have_eval && ta->eval_every > 0 && ((step + 1) % ta->eval_every == 0 || last)) {
            long cnt;
            vloss = is_ex ? evaluate_examples(&net, &eval_a, &vex, ta->eval_batches * B * dist_world, &cnt) : evaluate(&net, &eval_a, val, nval, ta->eval_batches * B * dist_world, &cnt);
            last_val = vloss;
        }
        double elapsed = time_sec() - t_start, eta = elapsed / (step + 1 - step0) * (steps - step - 1);
        char eta_s[32];
        fmt_time(eta_s, sizeof(eta_s), eta);
        if ((step + 1) % ta->log_every == 0 || last || vloss >= 0 || step == step0) {
            fprintf(stderr, "step %5d/%d | loss %.4f", step + 1, steps, loss);
            if (vloss >= 0) fprintf(stderr, " | val %.4f", vloss);
            fprintf(stderr, " | lr %.2e | grad norm %.3f | %.0f tok/s | ETA %s\n", lr, gnorm, (double)N * ta->grad_accum * dist_world / dt, eta_s);
        }
        curve.step_loss[curve.n] = loss; curve.lr[curve.n] = lr; curve.n++;
        if (vloss >= 0) { curve.val_step[curve.nval] = step + 1; curve.val_loss[curve.nval++] = vloss; }
        if (writes && (vloss >= 0 || last) && write_loss_svg(svg_path, &curve, steps, svg_title)) { rc = -1; break; } // refreshed at each validation
        char vbuf[32];
        if (vloss >= 0) snprintf(vbuf, sizeof(vbuf), "%.6f", vloss); else snprintf(vbuf, sizeof(vbuf), "null");
        if (log) {
            fprintf(log, "{\"step\": %d, \"loss\": %.6f, \"val_loss\": %s, \"lr\": %.6g, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f, \"elapsed_s\": %.3f}\n",
                    step + 1, loss, vbuf, lr, gnorm, (double)N * ta->grad_accum * dist_world / dt, elapsed);
            fflush(log);
        }
        if ((ta->save_every > 0 && (step + 1) % ta->save_every == 0 && !last) || stop_requested) {
            char ck[4096], name[64];
            snprintf(name, sizeof(name), "checkpoint-%d", step + 1);
            path_join(ck, sizeof(ck), ta->outdir, name);
            if (writes && save_checkpoint_atomic(ta, m, lo, &tr, ck, step + 1, data_rng)) { rc = -1; break; }
            fprintf(stderr, "saved checkpoint %s\n", ck);
            if (stop_requested) { fprintf(stderr, "interrupted: resume with --resume %s\n", ck); step++; break; }
        }
    }
    if (!rc) {
        if (writes && (save_result(ta, m, lo, ta->outdir) || save_trainer_state(ta->outdir, ta, &tr, step, data_rng, lo ? lo->rng : 0))) rc = -1;
        else {
            char el[32];
            fmt_time(el, sizeof(el), time_sec() - t_start);
            fprintf(stderr, "done: %d steps in %s, %.0f tok/s; train loss %.4f -> %.4f", step - step0, el, tokens_done / (time_sec() - t_start), first_loss, last_loss);
            if (last_val >= 0 && first_val >= 0) fprintf(stderr, "; val loss %.4f -> %.4f", first_val, last_val);
            else if (last_val >= 0) fprintf(stderr, "; final val loss %.4f", last_val);
            fprintf(stderr, "\nwrote %s to %s\n", ta->mode == TUNE_LORA ? "adapter_config.json + adapter_model.safetensors" : "the trained model", ta->outdir);
        }
    }
    if (ta->bench && step - step0 >= 2) bench_report(step_s, step_mm_s, step_mm_flops, step - step0, N * ta->grad_accum * dist_world);
    free(step_s); free(step_mm_s); free(step_mm_flops);
    free(curve.step_loss); free(curve.lr); free(curve.val_loss); free(curve.val_step);
    if (log) fclose(log);
    free(inp); free(tgt);
    if (have_eval) acts_free(&eval_a);
    acts_free(&a); trainable_free(&tr); net_free(&net); tensor_free(gmem); tensor_free(gn_mem);
    if (lo) lora_free(lo);
    free(tokens);
    if (ta->val_path) free(val);
    examples_free(&ex); examples_free(&vex);
    if (!rc) dist_finish(1); // rank 0 has written the adapter: the others may end
    return rc;
}

#endif // PEFT_INFER

// ----------------------------------------------------------------------------
// sampling and generation

// xorshift-based sampler state, llama2.c's
typedef struct { int index; float prob; } ProbIndex;
MAYBE_UNUSED static int sample_argmax_naive(const floatX *logits, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    return best;
}
#ifdef PEFT_SIMD
// the largest value in vectors (x86's max keeps its second operand when the first is NaN: NaNs are skipped,
// as the plain loop skips them), then the first index holding it; the plain loop decides when logits[0] or
// the maximum is NaN (NEON's max keeps NaNs)
static int sample_argmax(const floatX *logits, int n) {
    vfloat mv = v_set1(-INFINITY);
    int i = 0;
    for (; i + VLEN <= n; i += VLEN) mv = v_max(v_load(logits + i), mv);
    float m = v_hmax(mv);
    for (; i < n; i++) if (logits[i] > m) m = logits[i];
    if (m == m && logits[0] == logits[0])
        for (i = 0; i < n; i++) if (logits[i] == m) return i;
    return sample_argmax_naive(logits, n);
}
#else
#define sample_argmax sample_argmax_naive
#endif
static int cmp_probindex(const void *a, const void *b) {
    float x = ((const ProbIndex *)a)->prob, y = ((const ProbIndex *)b)->prob;
    return x > y ? -1 : x < y;
}
// softmax(logits / temperature), then top-p (nucleus) sampling; coin in [0,1)
static int sample(const floatX *logits, int n, float temperature, float topp, float coin, float *probs, ProbIndex *pi) {
    if (temperature <= 0) return sample_argmax(logits, n);
    float maxv = (float)logits[0];
    for (int i = 1; i < n; i++) if ((float)logits[i] > maxv) maxv = (float)logits[i];
    double sum = 0;
    for (int i = 0; i < n; i++) { probs[i] = expf(((float)logits[i] - maxv) / temperature); sum += probs[i]; }
    for (int i = 0; i < n; i++) probs[i] = (float)(probs[i] / sum);
    if (topp <= 0 || topp >= 1) {
        float cdf = 0;
        for (int i = 0; i < n; i++) { cdf += probs[i]; if (coin < cdf) return i; }
        return n - 1;
    }
    // keep the smallest set of tokens whose probability reaches topp; cut the tail cheaply first
    int n0 = 0;
    float cutoff = (1.0f - topp) / (n - 1);
    for (int i = 0; i < n; i++) if (probs[i] >= cutoff) { pi[n0].index = i; pi[n0].prob = probs[i]; n0++; }
    qsort(pi, (size_t)n0, sizeof(ProbIndex), cmp_probindex);
    float cum = 0;
    int last = n0 - 1;
    for (int i = 0; i < n0; i++) { cum += pi[i].prob; if (cum > topp) { last = i; break; } }
    float r = coin * cum, cdf = 0;
    for (int i = 0; i <= last; i++) { cdf += pi[i].prob; if (r < cdf) return pi[i].index; }
    return pi[last].index;
}

// ----------------------------------------------------------------------------
// CLI

static int st_read_ints(SafeTensors *st, const STTensor *t, int *dst) {
    if (t->dtype != DT_I32 && t->dtype != DT_I64) return set_error(st->path, "tensor '%s' must be I32 or I64, not %s", t->name, dtype_names[t->dtype]);
    unsigned char *raw = (unsigned char *)malloc_check(t->end - t->begin);
    if (st_read_raw(st, t, raw)) { free(raw); return -1; }
    le_swap(raw, dtype_sizes[t->dtype], t->numel);
    for (size_t i = 0; i < t->numel; i++) {
        int64_t v;
        if (t->dtype == DT_I32) { int32_t x; memcpy(&x, raw + 4 * i, 4); v = x; } else memcpy(&v, raw + 8 * i, 8);
        if (v < INT_MIN || v > INT_MAX) { free(raw); return set_error(st->path, "tensor '%s': value out of range", t->name); }
        dst[i] = (int)v;
    }
    free(raw);
    return 0;
}

// load -a adapters onto a model (one for now; several adapters come with the adapters work)
static void load_model_or_die(Model *m, const char *path) { if (model_load(m, path)) fatal_error(); }



// The tokenizer: -z PATH; else beside the model: a folder's tokenizer.json (or tokenizer.bin), a .bin file's
// neighbours tokenizer.bin, tokenizer.json or tok<vocab>.bin (llama2.c's name: tok512.bin for stories260K);
// else ./tokenizer.bin. The one picked is named on stderr.
static void find_tokenizer(char *path, size_t n, const char *zpath, const char *model_path, const Config *c) {
    if (zpath) { snprintf(path, n, "%s", zpath); return; }
    char dir[4096], name[64];
    if (dir_exists(model_path)) snprintf(dir, sizeof(dir), "%s", model_path);
    else {
        snprintf(dir, sizeof(dir), "%s", model_path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0; else snprintf(dir, sizeof(dir), ".");
    }
    snprintf(name, sizeof(name), "tok%d.bin", c->vocab_size);
    const char *names[3] = { "tokenizer.json", "tokenizer.bin", name };
    if (!dir_exists(model_path)) { names[0] = "tokenizer.bin"; names[1] = "tokenizer.json"; }
    for (int i = 0; i < 3; i++) {
        path_join(path, n, dir, names[i]);
        if (file_exists(path)) return;
    }
    snprintf(path, n, "tokenizer.bin");
}
static char tokenizer_picked[4096]; // the tokenizer found without -z, named once the command has loaded everything
static void load_tokenizer_or_die(Tokenizer *tok, const char *zpath, const char *model_path, const Config *c) {
    char path[4096];
    find_tokenizer(path, sizeof(path), zpath, model_path, c);
    if (!file_exists(path)) fatal("%s: tokenizer not found (give one with -z, or put tokenizer.bin / tok%d.bin beside the model)", path, c->vocab_size);
    if (tokenizer_load(tok, path, c->vocab_size)) fatal_error();
    if (!zpath) snprintf(tokenizer_picked, sizeof(tokenizer_picked), "%s", path);
}
static void note_tokenizer(void) {
    if (tokenizer_picked[0]) fprintf(stderr, "tokenizer: %s%s\n", tokenizer_picked, strcmp(tokenizer_picked, "tokenizer.bin") ? " (beside the model)" : " (./tokenizer.bin)");
    tokenizer_picked[0] = 0;
}

// the value after flag argv[*i]; a missing value is an error
static const char *next_arg(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) fatal("flag %s needs a value", argv[*i]);
    return argv[++*i];
}

// --quant T, --quant-embeddings, --double-quant (generate, eval, dump, train, quantize)
#define QUANT_HELP "  --quant T     quantize the frozen base while loading: int8 | int4 | nf4 | hqq4 | hqq8 | none (default: as the file stores it)\n" \
                   "  --quant-embeddings  with --quant: quantize the embedding and classifier too (default: fp32)\n" \
                   "  --double-quant      with --quant nf4: double-quantize the block absmax values (bitsandbytes')\n" \
                   "  --group-size N      with --quant hqq4|hqq8: weights per scale/zero group (default 64)\n"
static int parse_int(const char *flag, const char *v, int lo, int hi);
static int parse_quant_flag(int argc, char **argv, int *i, QuantOpts *qo) {
    if (!strcmp(argv[*i], "--quant-embeddings")) { qo->embed = 1; return 1; }
    if (!strcmp(argv[*i], "--double-quant")) { qo->dq = 1; return 1; }
    if (!strcmp(argv[*i], "--group-size")) { qo->gs = parse_int("--group-size", next_arg(argc, argv, i), 8, 4096); return 1; }
    if (strcmp(argv[*i], "--quant")) return 0;
    const char *v = next_arg(argc, argv, i);
    qo->type = -2;
    for (int t = 0; t < NUM_QTYPES; t++) if (!strcmp(v, qtype_names[t])) qo->type = t;
    if (qo->type == -2) fatal("--quant: '%s' is not int8, int4, nf4, hqq4, hqq8 or none", v);
    return 1;
}
static void load_model_q_or_die(Model *m, const char *path, const QuantOpts *qo) {
    if ((qo->embed || qo->dq) && qo->type < 0) fatal("--quant-embeddings and --double-quant need --quant");
    if (qo->dq && qo->type != QT_NF4) fatal("--double-quant applies to --quant nf4");
    if (qo->gs && !qtype_hqq(qo->type)) fatal("--group-size applies to --quant hqq4 and hqq8 (the other formats have fixed blocks)");
    double t0 = time_sec();
    if (model_load_q(m, path, qo)) fatal_error();
    load_sec = time_sec() - t0;
}
// "base: nf4 weights (double-quantized absmax), embeddings fp32" for the stderr reports; "" for float models
static const char *quant_desc(const Model *m) {
    static char buf[256];
    buf[0] = 0;
    char grp[32] = "";
    if (m->quant && qtype_hqq(m->quant)) snprintf(grp, sizeof(grp), " (group %d)", m->quant_bs);
    if (m->quant) snprintf(buf, sizeof(buf), "base: %s weights%s%s, embeddings %s; weights in memory %.1f MiB (%.1f MiB quantized + %.1f MiB float)\n", qtype_names[m->quant], m->quant_dq ? " (double-quantized absmax)" : "", grp, m->quant_embed ? "quantized" : "fp32",
                           (model_quant_bytes(m) + m->num_parameters * sizeof(floatX)) / 1048576.0, model_quant_bytes(m) / 1048576.0, m->num_parameters * sizeof(floatX) / 1048576.0);
    return buf;
}

// --device cpu|cuda and --dtype fp32|bf16 (train, generate, chat, eval, dump)
#define DEVICE_HELP "  --device D    cpu | cuda (default: $PEFT_DEVICE, else cuda when built with `make CUDA=1` and a GPU is present, else cpu)\n" \
                    "  --dtype T     GPU matmul precision: bf16 (operands rounded to bf16, fp32 accumulation; the GPU default) | fp32 (exact)\n"
#define OFFLOAD_HELP "  --offload     GPU: keep the base's linear weights in pinned host memory and copy each layer to the GPU a\n" \
                     "                layer ahead of its use, as train --offload does (3 layers on the GPU at once; same results)\n"
// device -1 default, 0 cpu, 1 cuda; dtype -1 default, 0 fp32, 1 bf16; offload: --offload (not train's: it parses its own)
typedef struct { int device, dtype, offload; } DeviceOpts;
static int parse_device_flag(int argc, char **argv, int *i, DeviceOpts *d) {
    if (!strcmp(argv[*i], "--device")) {
        const char *v = next_arg(argc, argv, i);
        if (!strcmp(v, "cpu")) d->device = 0;
        else if (!strcmp(v, "cuda") || !strcmp(v, "gpu")) d->device = 1;
        else fatal("--device: '%s' is not cpu or cuda", v);
        return 1;
    }
    if (!strcmp(argv[*i], "--dtype")) {
        const char *v = next_arg(argc, argv, i);
        if (!strcmp(v, "fp32") || !strcmp(v, "f32")) d->dtype = 0;
        else if (!strcmp(v, "bf16")) d->dtype = 1;
        else fatal("--dtype: '%s' is not fp32 or bf16", v);
        return 1;
    }
    return 0;
}
// choose where the kernels run, before anything is allocated
static void device_start(const DeviceOpts *dopts) {
    DeviceOpts dd = *dopts, *d = &dd;
    const char *env = getenv("PEFT_DEVICE"); // the default of --device
    if (d->device < 0 && env && *env) d->device = !strcmp(env, "cpu") ? 0 : !strcmp(env, "cuda") ? 1 : -1;
#ifdef PEFT_CUDA
    if (d->device != 0) {
        char err[512];
        double t0 = time_sec();
        int rc = gpu_init(d->dtype != 0, dist_local, err, sizeof(err));
        gpu_start_sec = time_sec() - t0;
        if (rc == 0) gpu_on = 1; // bf16 matmuls unless --dtype fp32
        else if (d->device == 1) fatal("--device cuda: %s (--device cpu runs on the CPU)", err);
        else fprintf(stderr, "note: %s; running on the CPU\n", err);
    }
#else
    if (d->device == 1) fatal("--device cuda: this peft was built without CUDA (build with make CUDA=1)");
#endif
    if (!gpu_on && d->dtype == 1) fatal("--dtype bf16 needs the GPU (--device cuda); the CPU computes in fp32");
    if (d->offload && !gpu_on) fatal("--offload streams the frozen base to a GPU; this run is on the CPU (--device cuda)");
    offload_on = d->offload; // net_init registers the layers for streaming
}
// QuantOpts.keep16 for a run whose linear layers stay frozen and resident (not streamed): on a GPU with bf16
// matmuls they are loaded straight into bf16 (Model.w16) and uploaded from there; their floats are never made
// (a 7B bf16 folder: 13.5 GB of host memory, not 25 + 13.5, and no rounding pass). 0 on the CPU.
// --shard (LoRA on the GPU): the loader keeps only this rank's chunk of each layer's frozen weights (shard_load)
static void shard_load_set(int shard) {
#ifdef PEFT_CUDA
    if (!shard || !gpu_on) return;
    shard_load.rank = dist_rank; shard_load.world = dist_world; shard_load.el = gpu_weights_bf16() ? sizeof(uint16_t) : sizeof(floatX);
#else
    (void)shard;
#endif
}
static unsigned gpu_keep16(int frozen_resident) {
    unsigned mask = 0;
#ifdef PEFT_CUDA
    for (int t = 0; t < NUM_TARGETS && gpu_on && gpu_weights_bf16() && frozen_resident; t++) mask |= 1u << target_param[t];
#else
    (void)frozen_resident;
#endif
    return mask;
}

static int parse_int(const char *flag, const char *v, int lo, int hi) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) fatal("%s: '%s' is not an integer in [%d, %d]", flag, v, lo, hi);
    return (int)x;
}
static float parse_float(const char *flag, const char *v, double lo, double hi) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) fatal("%s: '%s' is not a number in [%g, %g]", flag, v, lo, hi);
    return (float)x;
}

// -a DIR: one adapter (several adapters at once come with the adapters work)
static void load_adapter_or_die(Lora *lo, const char *dir, const Config *c) {
    LoraConfig lc;
    if (lora_load(lo, &lc, c, dir, 0)) fatal_error();
    free(lc.layers);
    lo->dropout = 0;
}

// ADAPTER or ADAPTER:WEIGHT (the weight after the last ':' if it parses as a number)
static const char *split_adapter_weight(const char *arg, char *dir, size_t n, float *w) {
    snprintf(dir, n, "%s", arg);
    *w = 1;
    char *colon = strrchr(dir, ':');
    if (colon) {
        char *end;
        double v = strtod(colon + 1, &end);
        if (end != colon + 1 && !*end && isfinite(v)) { *w = (float)v; *colon = 0; }
    }
    return dir;
}

#define MAX_ADAPTERS 16
// load every -a ADAPTER[:W] and combine them into one exact weighted delta (no combining for one at weight 1)
static void load_adapters_or_die(Lora *out, int n, char **args, const Config *c) {
    if (n == 1) {
        char dir[4096]; float w;
        split_adapter_weight(args[0], dir, sizeof(dir), &w);
        load_adapter_or_die(out, dir, c);
        if (w != 1 && out->dora) fatal("%s: a DoRA adapter cannot be weighted", dir);
        if (w != 1) for (int i = 0; i < c->n_layers * NUM_TARGETS; i++) out->mods[i].scale *= w;
        return;
    }
    Lora *los = (Lora *)calloc_check((size_t)n, sizeof(Lora));
    Lora *ptrs[MAX_ADAPTERS] = { 0 };
    float ws[MAX_ADAPTERS] = { 0 };
    for (int k = 0; k < n; k++) {
        char dir[4096];
        split_adapter_weight(args[k], dir, sizeof(dir), &ws[k]);
        load_adapter_or_die(&los[k], dir, c);
        if (los[k].dora) fatal("%s: DoRA adapters cannot be combined with others (their magnitudes do not add)", dir);
        if (los[k].embed || los[k].lm_head) fatal("%s: adapters with modules_to_save cannot be combined with others", dir);
        ptrs[k] = &los[k];
    }
    lora_combine(out, ptrs, ws, n, c);
    for (int k = 0; k < n; k++) lora_free(&los[k]);
    free(los);
}

// -a DIR[:W], repeatable
static void push_adapter(char **adapters, int *na, const char *arg) {
    if (*na == MAX_ADAPTERS) fatal("at most %d adapters", MAX_ADAPTERS);
    adapters[(*na)++] = (char *)arg;
}
// adapters trained with --new-special-tokens: grow the base to their vocabulary and use their
// tokenizer when -z is not given. args: "DIR[:W]" (named: "[NAME=]DIR")
static void adapters_vocab_or_die(Model *m, char **args, int na, int named, const char **zpath, char *zbuf, size_t zn) {
    char dirs[MAX_ADAPTERS][4096];
    const char *ptrs[MAX_ADAPTERS] = { 0 };
    for (int k = 0; k < na; k++) {
        float w;
        const char *eq = named ? strchr(args[k], '=') : NULL;
        if (named) snprintf(dirs[k], sizeof(dirs[k]), "%s", eq ? eq + 1 : args[k]);
        else split_adapter_weight(args[k], dirs[k], sizeof(dirs[k]), &w);
        ptrs[k] = dirs[k];
    }
    adapters_prepare_vocab(m, ptrs, na, zpath, zbuf, zn);
}

// The chat template: --template NAME (tname; "none": no template), else the peft_chat.json that train
// --template wrote beside the first of dirs[0..nd) that has one, else in the model's folder; -1: none.
// tfrom: where it came from.
static int find_chat_template(const char *tname, const char *const *dirs, int nd, const char *model_path, char *tfrom, size_t tn) {
    int tpl = -1;
    snprintf(tfrom, tn, "--template");
    if (tname && strcmp(tname, "none") && (tpl = template_find(tname)) < 0) fatal("--template: '%s' is not " TEMPLATE_LIST " or none", tname);
    for (int k = 0; !tname && tpl < 0 && k <= nd; k++) { // (k == nd: the model's folder)
        const char *dir = k == nd ? model_path : dirs[k];
        if (k == nd && (!dir || !dir_exists(dir))) break;
        if ((tpl = chat_template_load(dir)) == -2) fatal_error();
        if (tpl >= 0) path_join(tfrom, tn, dir, "peft_chat.json");
    }
    return tpl;
}
// the token that ends a reply in template T (besides EOS), or -1
static int template_eot(const Tokenizer *tok, const ChatTemplate *T) {
    if (!T) return -1;
    int eot = tok_find_added(tok, T->eot);
    return eot >= 0 ? eot : tok_lookup(tok, T->eot, strlen(T->eot));
}

// ---- generate
static void error_usage_generate(void) {
    fprintf(stderr, "Usage: peft generate MODEL [options]\n"
                    "  Prints the prompt and its continuation on stdout; speed on stderr.\n"
                    "  MODEL         llama2.c .bin file or Hugging Face model folder\n"
                    "  -z PATH       tokenizer.bin or tokenizer.json (default: beside the model: a folder's tokenizer.json,\n"
                    "                a .bin's tokenizer.bin / tokenizer.json / tok<vocab>.bin; else ./tokenizer.bin)\n"
                    "  -a DIR[:W]    PEFT LoRA adapter to apply, weight W (default 1); repeat to sum several (default: none)\n"
                    "  -p TEXT       prompt (default: empty, start from BOS)\n"
                    "  -n N          tokens to generate (default 256, capped by the model's max positions)\n"
                    "  -t T          temperature, 0 = greedy (default 1.0)\n"
                    "  --top-p P     nucleus sampling threshold (default 0.9; 1 = off)\n"
                    "  -s SEED       random seed (default: time)\n"
                    "  -f FILE       generate for every prompt of FILE (JSONL, a line each): {\"prompt\": TEXT} (raw text, as -p)\n"
                    "                or {\"messages\": [{\"role\": \"user\", \"content\": TEXT}, ...]} (rendered with the chat template\n"
                    "                and its generation prompt, as peft chat renders it; the reply ends at its end of turn), and\n"
                    "                optionally \"max_tokens\" (default -n) and \"id\" (a string or integer, copied to the output).\n"
                    "                Writes a JSON line per prompt, in input order: {\"index\", \"id\", \"completion\", \"tokens\",\n"
                    "                \"finish\": \"stop\" | \"length\"}. Each prompt's output is the one it gets alone (greedy: generate -p\n"
                    "                TEXT -t 0; sampled: generate -p TEXT -s SEED+index)\n"
                    "  --batch N     with -f: decode N sequences together, each weight read once per step for all (default 8)\n"
                    "  -o FILE       with -f: write the lines to FILE (atomically, once all are done; default: stdout)\n"
                    "  --template NAME  with -f: the chat template of \"messages\": " TEMPLATE_LIST " | none (default: the\n"
                    "                first adapter's peft_chat.json, else MODEL's folder's, as peft chat)\n"
                    QUANT_HELP DEVICE_HELP OFFLOAD_HELP);
    exit(1);
}
static void print_piece(const char *p, int n) {
    // print only printable text and whitespace (llama2.c's safe_printf), byte pieces as they come
    if (n == 1 && !(isprint((unsigned char)p[0]) || isspace((unsigned char)p[0]))) return;
    fwrite(p, 1, (size_t)n, stdout);
}
// ---- generate -f: a file of prompts, decoded --batch N sequences at a time
// A prompt of the file: its token ids (np), its budget of new tokens, whether a chat template rendered it
// (then the template's end of turn ends the reply too), and its "id" as JSON text (NULL: none)
typedef struct { int *toks, np, max_tokens, chat; char *id; } GenPrompt;
typedef struct { int index, pos, token, generated, limit, done; uint64_t rng; StrBuf text; } GenSeq; // a slot's sequence

// "messages": [{"role": "system" | "user" | "assistant", "content": TEXT}, ...] -> msgs (pointing into j)
static int gen_messages(const Json *j, ChatMsg **msgs, int *n, char *err, size_t errn) {
    static const char *roles[3] = { "system", "user", "assistant" };
    if (j->type != JSON_ARRAY || !j->n) { snprintf(err, errn, "\"messages\" must be a non-empty list of {\"role\", \"content\"} objects"); return -1; }
    *msgs = (ChatMsg *)malloc_check((size_t)j->n * sizeof(ChatMsg));
    *n = j->n;
    for (int i = 0; i < j->n; i++) {
        const Json *m = &j->items[i], *role = json_get(m, "role"), *content = json_get(m, "content");
        int r = -1;
        for (int k = 0; k < 3 && json_str(role); k++) if (!strcmp(role->str, roles[k])) r = k;
        if (m->type != JSON_OBJECT || m->n != 2 || r < 0 || !json_str(content)) {
            snprintf(err, errn, "\"messages\" item %d must be {\"role\": \"system\" | \"user\" | \"assistant\", \"content\": TEXT}", i);
            free(*msgs); *msgs = NULL;
            return -1;
        }
        (*msgs)[i].role = r; (*msgs)[i].s = content->str; (*msgs)[i].n = content->len;
    }
    return 0;
}
// one line (a JSON object) -> p; -1 with the problem in err
static int gen_prompt_line(GenPrompt *p, const char *line, size_t len, const Tokenizer *tok, int tpl, int steps, int seq_len, char *err, size_t errn) {
    memset(p, 0, sizeof(*p));
    Json *j = json_parse(line, len, "");
    if (!j) { snprintf(err, errn, "%s", peft_errbuf + 2); return -1; } // (json_parse's "<file>: " prefix, file "")
#define BAD(...) do { snprintf(err, errn, __VA_ARGS__); json_free(j); free(p->toks); free(p->id); return -1; } while (0)
    if (j->type != JSON_OBJECT) BAD("a line must be a JSON object with \"prompt\" or \"messages\"");
    for (int i = 0; i < j->n; i++)
        if (strcmp(j->keys[i], "prompt") && strcmp(j->keys[i], "messages") && strcmp(j->keys[i], "max_tokens") && strcmp(j->keys[i], "id"))
            BAD("unknown key \"%s\" (the keys are prompt, messages, max_tokens, id)", j->keys[i]);
    const Json *pr = json_get(j, "prompt"), *msgs = json_get(j, "messages"), *mt = json_get(j, "max_tokens"), *id = json_get(j, "id");
    if (!pr == !msgs) BAD("a line needs one of \"prompt\" (text) and \"messages\" (a chat), not %s", pr ? "both" : "neither");
    p->max_tokens = steps;
    if (mt) {
        if (!json_is_int(mt) || mt->num < 0 || mt->num > (1 << 30)) BAD("\"max_tokens\" must be an integer >= 0");
        p->max_tokens = (int)mt->num;
    }
    if (id) {
        StrBuf b = { 0 };
        if (json_str(id) && strlen(id->str) == id->len) sb_json_string(&b, id->str);
        else if (json_is_int(id)) sb_printf(&b, "%.0f", id->num);
        else BAD("\"id\" must be a string or an integer");
        p->id = b.s;
    }
    if (pr) {
        if (!json_str(pr)) BAD("\"prompt\" must be a string");
        p->toks = (int *)malloc_check((pr->len + 3) * sizeof(int));
        p->np = tokenizer_encode(tok, pr->str, pr->len, 1, 0, p->toks, (int)pr->len + 3); // as generate -p
        if (p->np < 1) BAD("%s", peft_errbuf);
    } else {
        if (tpl < 0) BAD("\"messages\" needs a chat template (--template NAME, or an adapter trained with --template)");
        ChatMsg *m = NULL;
        int nm = 0;
        if (gen_messages(msgs, &m, &nm, err, errn)) { json_free(j); free(p->id); return -1; }
        ChatRender cr;
        char terr[300];
        unsigned char *resp = NULL;
        int rc = chat_render(&cr, tpl, m, nm, 1, terr, sizeof(terr)); // with the generation prompt
        free(m);
        if (rc) BAD("template %s: %s", templates[tpl].name, terr);
        p->np = chat_tokenize(tok, &cr, &p->toks, &resp);
        cr_free(&cr); free(resp);
        if (p->np < 0) BAD("%s", peft_errbuf);
        if (p->np == 0) BAD("the chat renders to no tokens");
        p->chat = 1;
    }
    if (p->np >= seq_len) BAD("the prompt is %d tokens but the model allows %d positions", p->np, seq_len);
#undef BAD
    json_free(j);
    return 0;
}
// Every line of path (blank lines skipped), all read before any is generated: a bad line is one error
// "FILE:LINE: problem"
static int gen_read_prompts(GenPrompt **out, int *count, const char *path, const Tokenizer *tok, int tpl, int steps, int seq_len) {
    size_t len;
    char *text = read_file(path, &len, (size_t)1 << 31);
    if (!text) return -1;
    int n = 0, cap = 16;
    GenPrompt *ps = (GenPrompt *)malloc_check((size_t)cap * sizeof(GenPrompt));
    size_t line = 0;
    char err[sizeof(peft_errbuf) + 64];
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        line++;
        size_t b = i, t = e;
        while (b < t && isspace((unsigned char)text[b])) b++;
        while (t > b && isspace((unsigned char)text[t - 1])) t--;
        i = e + 1;
        if (b == t) continue;
        if (n == cap) { cap *= 2; ps = (GenPrompt *)realloc_check(ps, (size_t)cap * sizeof(GenPrompt)); }
        if (gen_prompt_line(&ps[n], text + b, t - b, tok, tpl, steps, seq_len, err, sizeof(err))) {
            for (int k = 0; k < n; k++) { free(ps[k].toks); free(ps[k].id); }
            free(ps); free(text);
            return set_error_at(path, line, "%s", err);
        }
        n++;
    }
    free(text);
    if (!n) { free(ps); return set_error(path, "no prompts (one JSON object a line: {\"prompt\": TEXT} or {\"messages\": [...]})"); }
    *out = ps; *count = n;
    return 0;
}
// text += the decoded piece as generate prints it (print_piece: a lone byte only if printable or space)
static void gen_piece(StrBuf *text, const char *p, int n) {
    if (n == 1 && !(isprint((unsigned char)p[0]) || isspace((unsigned char)p[0]))) return;
    sb_putn(text, p, (size_t)n);
}
// Decode the prompts ps[0..count) batch at a time: each step feeds every running sequence one token at
// its own position (a prompt's tokens one by one, as generate reads -p, then the sampled ones); a sequence
// ends at EOS (or the template's end of turn), at its max_tokens or at the model's last position, and its
// slot takes the next prompt. Each prompt samples from its own random stream, so the output does not
// depend on the batch: greedy or sampled, prompt i's tokens are those generate -p gives it alone (with
// -s seed + i). out[i] gets the line of prompt i.
static void gen_batch(StrBuf *out, Net *net, const Tokenizer *tok, GenPrompt *ps, int count, int batch, float temperature, float topp, uint64_t seed, int eot) {
    const Config *c = &net->model->config;
    int V = c->vocab_size, npos = 1;
    for (int i = 0; i < count; i++) {
        long need = (long)ps[i].np + ps[i].max_tokens;
        if (need > npos) npos = need < c->seq_len ? (int)need : c->seq_len;
    }
    if (batch > count) batch = count;
    RunState s;
    runstate_alloc_n(&s, c, npos, batch);
    GenSeq *seq = (GenSeq *)calloc_check((size_t)batch, sizeof(GenSeq));
    int *tokens = (int *)malloc_check((size_t)batch * sizeof(int)), *slots = (int *)malloc_check((size_t)batch * sizeof(int)), *pos = (int *)malloc_check((size_t)batch * sizeof(int));
    float *probs = (float *)malloc_check((size_t)V * sizeof(float));
    ProbIndex *pi = (ProbIndex *)malloc_check((size_t)V * sizeof(ProbIndex));
    int bos = tok->bos_id >= 0 ? tok->bos_id : c->bos_id, eos = tok->eos_id >= 0 ? tok->eos_id : c->eos_id;
    int next_prompt = 0, finished = 0;
    long fed = 0, generated = 0;
    char piece[256];
    for (int b = 0; b < batch; b++) seq[b].done = 1;
    double t0 = time_sec();
    while (finished < count) {
        int N = 0;
        for (int b = 0; b < batch; b++) {
            GenSeq *q = &seq[b];
            while (q->done && next_prompt < count) { // the slot's next prompt
                GenPrompt *p = &ps[next_prompt];
                free(q->text.s);
                memset(q, 0, sizeof(*q));
                q->index = next_prompt++;
                q->token = p->toks[0];
                q->limit = p->np + p->max_tokens < c->seq_len ? p->np + p->max_tokens : c->seq_len;
                q->rng = seed + (uint64_t)q->index; // generate -p's with -s seed + index
                if (!q->rng) q->rng = 1;
                if (p->max_tokens == 0) { // nothing to generate: its line now
                    sb_printf(&out[q->index], "{\"index\": %d%s%s, \"completion\": \"\", \"tokens\": 0, \"finish\": \"length\"}\n", q->index, p->id ? ", \"id\": " : "", p->id ? p->id : "");
                    q->done = 1;
                    finished++;
                }
            }
            if (seq[b].done) continue;
            tokens[N] = seq[b].token; slots[N] = b; pos[N] = seq[b].pos; N++;
        }
        if (!N) break;
        floatX *logits = forward_tokens(net, &s, tokens, slots, pos, N);
        fed += N;
        for (int n = 0; n < N; n++) {
            GenSeq *q = &seq[slots[n]];
            GenPrompt *p = &ps[q->index];
            int next, stop = 0;
            if (q->pos + 1 < p->np) next = p->toks[q->pos + 1]; // still reading the prompt
            else {
                next = sample(logits + (size_t)n * V, V, temperature, topp, random_f32(&q->rng), probs, pi);
                q->generated++; generated++;
                stop = next == eos || next == bos || (p->chat && next == eot);
                if (!stop) gen_piece(&q->text, piece, tokenizer_decode(tok, q->token, next, piece, (int)sizeof(piece)));
            }
            q->token = next;
            q->pos++;
            if (!stop && q->pos < q->limit - 1) continue;
            // the line: index, id, the completion (invalid UTF-8 as U+FFFD), tokens sampled, why it ended
            StrBuf *o = &out[q->index], fixed = { 0 };
            const unsigned char *t = (const unsigned char *)(q->text.s ? q->text.s : "");
            size_t tn = q->text.n;
            for (size_t k = 0; k < tn;) {
                size_t bad = k + utf8_invalid_at(t + k, tn - k);
                sb_putn(&fixed, (const char *)t + k, bad - k);
                if (bad < tn) sb_puts(&fixed, "\xEF\xBF\xBD");
                k = bad + 1;
            }
            sb_printf(o, "{\"index\": %d%s%s, \"completion\": ", q->index, p->id ? ", \"id\": " : "", p->id ? p->id : "");
            sb_json_string(o, fixed.s ? fixed.s : "");
            sb_printf(o, ", \"tokens\": %d, \"finish\": \"%s\"}\n", q->generated, stop ? "stop" : "length");
            free(fixed.s);
            q->done = 1;
            finished++;
        }
    }
    double dt = time_sec() - t0;
    fprintf(stderr, "generated %d completions, batch %d: %ld tokens sampled, %ld fed (prompts included) in %.2f s: %.1f tok/s sampled, %.1f tok/s fed\n",
            count, batch, generated, fed, dt, dt > 0 ? generated / dt : 0, dt > 0 ? fed / dt : 0);
    for (int b = 0; b < batch; b++) free(seq[b].text.s);
    free(seq); free(tokens); free(slots); free(pos); free(probs); free(pi);
    runstate_free(&s);
}
static int cmd_generate(int argc, char **argv) {
    const char *model_path = NULL, *zpath = NULL, *prompt = "", *file = NULL, *out_path = NULL, *tname = NULL;
    char *adapters[MAX_ADAPTERS];
    int na = 0, steps = 256, batch = 0, have_prompt = 0;
    float temperature = 1.0f, topp = 0.9f;
    uint64_t seed = (uint64_t)time(NULL);
    QuantOpts qo = { -1, 0, 0, 0, 0 };
    DeviceOpts dev = { -1, -1, 0 };
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) error_usage_generate();
        else if (parse_quant_flag(argc, argv, &i, &qo)) {}
        else if (parse_device_flag(argc, argv, &i, &dev)) {}
        else if (!strcmp(argv[i], "--offload")) dev.offload = 1;
        else if (argv[i][0] != '-') { if (model_path) fatal("unexpected argument '%s'", argv[i]); model_path = argv[i]; }
        else if (!strcmp(argv[i], "-z")) zpath = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "-a")) push_adapter(adapters, &na, next_arg(argc, argv, &i));
        else if (!strcmp(argv[i], "-p")) { prompt = next_arg(argc, argv, &i); have_prompt = 1; }
        else if (!strcmp(argv[i], "-n")) steps = parse_int("-n", next_arg(argc, argv, &i), 0, 1 << 30);
        else if (!strcmp(argv[i], "-t")) temperature = parse_float("-t", next_arg(argc, argv, &i), 0, 100);
        else if (!strcmp(argv[i], "--top-p")) topp = parse_float("--top-p", next_arg(argc, argv, &i), 0, 1);
        else if (!strcmp(argv[i], "-s")) seed = (uint64_t)parse_int("-s", next_arg(argc, argv, &i), 0, INT_MAX);
        else if (!strcmp(argv[i], "-f")) file = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "-o")) out_path = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "--template")) tname = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "--batch")) batch = parse_int("--batch", next_arg(argc, argv, &i), 1, 4096);
        else fatal("unknown flag '%s' for generate (see peft generate --help)", argv[i]);
    }
    if (!model_path) error_usage_generate();
    if (file && have_prompt) fatal("-p and -f: give one (a prompt, or a file of them)");
    if (!file && (out_path || tname || batch)) fatal("-o, --batch and --template go with -f FILE");
    Model m;
    device_start(&dev);
    qo.keep16 = gpu_keep16(!offload_on);
    load_model_q_or_die(&m, model_path, &qo);
    Config *c = &m.config;
    char zbuf[4096];
    adapters_vocab_or_die(&m, adapters, na, 0, &zpath, zbuf, sizeof(zbuf));
    Tokenizer tok;
    load_tokenizer_or_die(&tok, zpath, model_path, c);
    Lora lora, *lo = NULL;
    if (!batch) batch = 8;
    if (na) { load_adapters_or_die(&lora, na, adapters, c); lo = &lora; lora_alloc_acts(lo, file ? batch : 1); }
    if (file) { // the prompts first (every line checked), then the model's work; the output once all are done
        char tfrom[4200], dirs[MAX_ADAPTERS][4096];
        const char *dp[MAX_ADAPTERS];
        for (int k = 0; k < na; k++) { float w; dp[k] = split_adapter_weight(adapters[k], dirs[k], sizeof(dirs[k]), &w); }
        int tpl = find_chat_template(tname, dp, na, model_path, tfrom, sizeof(tfrom)), count = 0;
        GenPrompt *ps = NULL;
        if (gen_read_prompts(&ps, &count, file, &tok, tpl, steps, c->seq_len)) fatal_error();
        Net net;
        net_init(&net, &m, lo);
        note_tokenizer();
        fprintf(stderr, "%s%d prompts from %s%s%s%s\n", quant_desc(&m), count, file, tpl >= 0 ? ", template " : "", tpl >= 0 ? templates[tpl].name : "", tpl >= 0 ? (tname ? "" : " (from peft_chat.json)") : "");
        StrBuf *lines = (StrBuf *)calloc_check((size_t)count, sizeof(StrBuf));
        gen_batch(lines, &net, &tok, ps, count, batch, temperature, topp, seed, template_eot(&tok, tpl >= 0 ? &templates[tpl] : NULL));
        int rc = 0;
        if (out_path) {
            AtomicFile af;
            if (atomic_open(&af, out_path)) rc = -1;
            for (int i = 0; !rc && i < count; i++) atomic_write(&af, lines[i].s, lines[i].n);
            if (!rc && atomic_commit(&af)) rc = -1;
        } else
            for (int i = 0; i < count; i++) fwrite(lines[i].s, 1, lines[i].n, stdout);
        for (int i = 0; i < count; i++) { free(lines[i].s); free(ps[i].toks); free(ps[i].id); }
        free(lines); free(ps);
        net_free(&net); lora_free(lo); tokenizer_free(&tok); model_free(&m);
        if (rc) fatal_error();
        if (out_path) fprintf(stderr, "wrote %s\n", out_path);
        return 0;
    }
    Net net;
    net_init(&net, &m, lo);
    note_tokenizer();
    RunState s;
    size_t plen = strlen(prompt);
    int *ptoks = (int *)malloc_check((plen + 3) * sizeof(int));
    int np = tokenizer_encode(&tok, prompt, plen, 1, 0, ptoks, (int)plen + 3);
    if (np < 1) fatal_error();
    int bos = tok.bos_id >= 0 ? tok.bos_id : c->bos_id, eos = tok.eos_id >= 0 ? tok.eos_id : c->eos_id;
    int total = np + steps < c->seq_len ? np + steps : c->seq_len;
    runstate_alloc(&s, c, total); // the KV cache for the positions used, not all seq_len
    if (np >= c->seq_len) fatal("prompt is %d tokens but the model allows %d positions", np, c->seq_len);
    float *probs = (float *)malloc_check((size_t)c->vocab_size * sizeof(float));
    ProbIndex *pi = (ProbIndex *)malloc_check((size_t)c->vocab_size * sizeof(ProbIndex));
    uint64_t rng = seed ? seed : 1;
    int token = ptoks[0], next, generated = 0, timed = 0;
    char piece[256];
    double t0 = 0;
    for (int pos = 0; pos < total - 1 || (pos == 0 && total == 1); pos++) {
        if (pos == total - 1) break;
        floatX *logits = forward_token(&net, &s, token, pos);
        if (pos > 0) timed++; // the steps after the first, prompt included, are timed (as llama2.c counts)
        if (pos + 1 < np) next = ptoks[pos + 1]; // still reading the prompt
        else {
            next = sample(logits, c->vocab_size, temperature, topp, random_f32(&rng), probs, pi);
            generated++;
        }
        if (next == eos || (next == bos && pos + 1 >= np)) break;
        int n = tokenizer_decode(&tok, token, next, piece, (int)sizeof(piece));
        print_piece(piece, n);
        fflush(stdout);
        token = next;
        if (t0 == 0) t0 = time_sec(); // time from the first step on, as llama2.c does
    }
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "%s", quant_desc(&m));
    if (timed > 0 && generated > 0) fprintf(stderr, "achieved tok/s: %.1f (%d tokens)\n", timed / (time_sec() - t0), generated);
#ifdef PEFT_OWN_HEAP
    fprintf(stderr, "heap: peak %zu bytes (%.1f KiB) allocated at once", heap_peak, heap_peak / 1024.0);
#ifdef PEFT_ARENA
    fprintf(stderr, "; arena high-water mark %zu of %zu bytes", heap_top_peak, (size_t)(PEFT_ARENA));
#endif
    fprintf(stderr, "\n");
#endif
    free(probs); free(pi); free(ptoks);
    runstate_free(&s); net_free(&net); lora_free(lo); tokenizer_free(&tok); model_free(&m);
    return 0;
}

// ---- chat
static void error_usage_chat(void) {
    fprintf(stderr, "Usage: peft chat MODEL [options] < script   (or interactively)\n"
                    "  Reads one user turn per line from stdin (a line ending in \\ goes on to the next: a newline in the\n"
                    "  turn), streams the reply to stdout (tok/s on stderr). The base is loaded once; adapters are switched\n"
                    "  or mixed without reloading it, and the conversation's KV cache is kept across turns (recomputed\n"
                    "  from the first token that changed, and for the new adapter on a switch).\n"
                    "  -a [NAME=]DIR PEFT adapter, repeatable (NAME: default the folder's name); the first is active\n"
                    "  -z PATH       tokenizer (default as for generate)\n"
                    "  --template NAME  chat template: " TEMPLATE_LIST " | none\n"
                    "                (default: the template the adapter was trained with, which train --template records\n"
                    "                in peft_chat.json: the first -a that has one, else MODEL's folder; else none).\n"
                    "                Each turn the whole conversation is rendered as the model's tokenizer_config.json\n"
                    "                renders it (transformers' apply_chat_template) with\n"
                    "                add_generation_prompt, and a reply ends at the template's end-of-turn token.\n"
                    "                none: turns are plain text (a later turn starts on a new line), so the first reply\n"
                    "                equals `peft generate -a DIR -p TEXT` with the same seed.\n"
                    "  --system TEXT the system message (default: the template's own, if it has one)\n"
                    "  --no-think    qwen3: enable_thinking=False (an empty <think></think> opens each reply)\n"
                    "  --dry-run     run no model: stdin alternates user turns and canned replies, and each user turn\n"
                    "                prints the token ids the model would be fed by then (the whole conversation), one\n"
                    "                line of ids; MODEL may be left out when -z names the tokenizer\n"
                    "  -n N          at most N tokens per reply (default 256)\n"
                    "  -t T          temperature, 0 = greedy (default 1.0)\n"
                    "  --top-p P     nucleus sampling threshold (default 0.9)\n"
                    "  -s SEED       random seed (default: time)\n"
                    QUANT_HELP DEVICE_HELP OFFLOAD_HELP
                    "  On the GPU every -a adapter is kept there (a switch uploads nothing); a /mix is built on the host\n"
                    "  and uploaded once.\n"
                    "Commands: /adapter NAME (or none), /adapters, /mix A:0.7,B:0.3, /reset, /quit\n");
    exit(1);
}
// One turn from stdin: a line, and the next ones while a line ends in a backslash (joined by newlines).
// Returns 0 at the end of the input.
static int chat_read_turn(StrBuf *turn, char **line, size_t *cap) {
    turn->n = 0;
    for (;;) {
        ssize_t len = getline(line, cap, stdin);
        if (len < 0) return turn->n > 0;
        while (len > 0 && ((*line)[len - 1] == '\n' || (*line)[len - 1] == '\r')) (*line)[--len] = 0;
        int more = len > 0 && (*line)[len - 1] == '\\';
        sb_putn(turn, *line, (size_t)(len - more));
        if (!more) break;
        sb_puts(turn, "\n");
    }
    if (!turn->s) sb_puts(turn, "");
    return 1;
}
static void chat_push(ChatMsg **msgs, int *n, int *cap, int role, const char *s, size_t len) {
    if (*n == *cap) { *cap = *cap ? 2 * *cap : 8; *msgs = (ChatMsg *)realloc_check(*msgs, (size_t)*cap * sizeof(ChatMsg)); }
    char *copy = (char *)malloc_check(len + 1);
    memcpy(copy, s, len); copy[len] = 0;
    (*msgs)[*n].role = role; (*msgs)[*n].s = copy; (*msgs)[*n].n = len;
    (*n)++;
}
static void chat_pop(ChatMsg *msgs, int *n, int keep) { while (*n > keep) free((char *)msgs[--*n].s); }
typedef struct { char name[128]; Lora lora; } ChatAdapter;
static int cmd_chat(int argc, char **argv) {
    const char *model_path = NULL, *zpath = NULL, *tname = NULL, *system = NULL;
    char *specs[MAX_ADAPTERS];
    int na = 0, steps = 256, dry_run = 0, no_think = 0;
    float temperature = 1.0f, topp = 0.9f;
    uint64_t seed = (uint64_t)time(NULL);
    QuantOpts qo = { -1, 0, 0, 0, 0 };
    DeviceOpts dev = { -1, -1, 0 };
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) error_usage_chat();
        else if (parse_quant_flag(argc, argv, &i, &qo)) {}
        else if (parse_device_flag(argc, argv, &i, &dev)) {}
        else if (!strcmp(argv[i], "--offload")) dev.offload = 1;
        else if (argv[i][0] != '-') { if (model_path) fatal("unexpected argument '%s'", argv[i]); model_path = argv[i]; }
        else if (!strcmp(argv[i], "-z")) zpath = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "-a")) push_adapter(specs, &na, next_arg(argc, argv, &i));
        else if (!strcmp(argv[i], "--template")) tname = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "--system")) system = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "--dry-run")) dry_run = 1;
        else if (!strcmp(argv[i], "--no-think")) no_think = 1;
        else if (!strcmp(argv[i], "-n")) steps = parse_int("-n", next_arg(argc, argv, &i), 1, 1 << 30);
        else if (!strcmp(argv[i], "-t")) temperature = parse_float("-t", next_arg(argc, argv, &i), 0, 100);
        else if (!strcmp(argv[i], "--top-p")) topp = parse_float("--top-p", next_arg(argc, argv, &i), 0, 1);
        else if (!strcmp(argv[i], "-s")) seed = (uint64_t)parse_int("-s", next_arg(argc, argv, &i), 0, INT_MAX);
        else fatal("unknown flag '%s' for chat (see peft chat --help)", argv[i]);
    }
    if (!model_path && !(dry_run && zpath)) error_usage_chat();
    // the template: --template, else the first adapter's (or the model folder's) peft_chat.json
    char tfrom[4200];
    const char *tdirs[MAX_ADAPTERS];
    for (int k = 0; k < na; k++) tdirs[k] = strchr(specs[k], '=') ? strchr(specs[k], '=') + 1 : specs[k];
    int tpl = find_chat_template(tname, tdirs, na, model_path, tfrom, sizeof(tfrom));
    const ChatTemplate *T = tpl >= 0 ? &templates[tpl] : NULL;
    if (system && !T) fatal("--system needs a chat template (--template NAME)");
    if (system && T->system == SYS_NONE) fatal("--system: the %s template has no system role", T->name);
    if (no_think && (!T || !T->think)) fatal("--no-think applies to the qwen3 template");
    Model m;
    Config *c = NULL;
    Tokenizer tok;
    ChatAdapter *ads = (ChatAdapter *)calloc_check((size_t)(na ? na : 1), sizeof(ChatAdapter));
    device_start(&dev);
    qo.keep16 = gpu_keep16(!offload_on);
    if (model_path) {
        load_model_q_or_die(&m, model_path, &qo);
        c = &m.config;
        char zbuf[4096];
        adapters_vocab_or_die(&m, specs, na, 1, &zpath, zbuf, sizeof(zbuf));
        load_tokenizer_or_die(&tok, zpath, model_path, c);
    } else if (tokenizer_load(&tok, zpath, 0)) fatal_error();
    for (int k = 0; k < na && model_path; k++) { // NAME=DIR or DIR (named after its last path component)
        const char *eq = strchr(specs[k], '='), *dir = eq ? eq + 1 : specs[k];
        if (eq) snprintf(ads[k].name, sizeof(ads[k].name), "%.*s", (int)(eq - specs[k] < 127 ? eq - specs[k] : 127), specs[k]);
        else {
            char tmp[4096];
            snprintf(tmp, sizeof(tmp), "%s", dir);
            size_t n = strlen(tmp);
            while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
            const char *base = strrchr(tmp, '/');
            snprintf(ads[k].name, sizeof(ads[k].name), "%.127s", base ? base + 1 : tmp);
        }
        if (!ads[k].name[0] || !strcmp(ads[k].name, "none")) fatal("-a %s: bad adapter name", specs[k]);
        for (int j = 0; j < k; j++) if (!strcmp(ads[j].name, ads[k].name)) fatal("-a %s: adapter name '%s' given twice (use NAME=DIR)", specs[k], ads[k].name);
        load_adapter_or_die(&ads[k].lora, dir, c);
        lora_alloc_acts(&ads[k].lora, 1);
    }
    Lora mix;
    int have_mix = 0;
    Net net;
    RunState s;
    int npos = 1 << 30, vocab = tok.vocab_size;
    if (model_path) {
        net_init(&net, &m, na ? &ads[0].lora : NULL);
        for (int k = 1; k < na; k++) lora_mirror(&ads[k].lora, c, 1); // every adapter on the GPU: a switch moves a pointer
        runstate_alloc(&s, c, c->seq_len);
        npos = s.npos; vocab = c->vocab_size;
    }
    char active[512];
    snprintf(active, sizeof(active), "%s", na ? ads[0].name : "none");
    int ntok = 0, last = -1, hcap = 1024;                          // tokens fed (= next position); a sampled token not fed yet
    int *hist = (int *)malloc_check((size_t)hcap * sizeof(int));   // the tokens fed, to rebuild the cache on a switch
    float *probs = (float *)malloc_check((size_t)vocab * sizeof(float));
    ProbIndex *pi = (ProbIndex *)malloc_check((size_t)vocab * sizeof(ProbIndex));
    int bos = tok.bos_id >= 0 ? tok.bos_id : c ? c->bos_id : -1, eos = tok.eos_id >= 0 ? tok.eos_id : c ? c->eos_id : -1;
    int eot = template_eot(&tok, T);                               // the end of a reply, besides EOS
    ChatMsg *msgs = NULL;                                          // the conversation (template mode)
    int nmsg = 0, mcap = 0, nsys = 0;
    if (system) chat_push(&msgs, &nmsg, &mcap, ROLE_SYSTEM, system, strlen(system));
    nsys = nmsg;
    uint64_t rng = seed ? seed : 1;
    int tty = isatty(0);
    fprintf(stderr, "%schat: %s, adapter %s, template %s%s%s%s; /adapter NAME, /adapters, /mix A:0.7,B:0.3, /reset, /quit\n", model_path ? quant_desc(&m) : "",
            model_path ? model_path : zpath, active, T ? T->name : "none", T ? " (" : "", T ? tfrom : "", T ? ")" : "");
    if (dry_run) fprintf(stderr, "[dry run: no model; stdin alternates user turns and canned replies; each user turn prints the ids fed]\n");
    char *line = NULL;
    size_t cap = 0;
    StrBuf turn = { 0 }, reply = { 0 }, text = { 0 };
    char piece[256];
    for (;;) {
        if (tty) { fprintf(stderr, "> "); fflush(stderr); }
        if (!chat_read_turn(&turn, &line, &cap)) break;
        if (!turn.n) continue;
        if (turn.s[0] == '/' && !dry_run) {
            char *arg = strchr(turn.s, ' ');
            if (arg) { *arg++ = 0; while (*arg == ' ') arg++; }
            Lora *next = NULL;
            int switched = 0;
            if (!strcmp(turn.s, "/quit") || !strcmp(turn.s, "/exit")) break;
            else if (!strcmp(turn.s, "/reset")) { ntok = 0; last = -1; rng = seed ? seed : 1; chat_pop(msgs, &nmsg, nsys); fprintf(stderr, "[reset: conversation cleared, seed %llu]\n", (unsigned long long)seed); continue; }
            else if (!strcmp(turn.s, "/adapters")) {
                fprintf(stderr, "[adapters:%s", na ? "" : " (none loaded)");
                for (int k = 0; k < na; k++) fprintf(stderr, " %s%s", ads[k].name, !strcmp(active, ads[k].name) ? "*" : "");
                fprintf(stderr, "; active: %s]\n", active);
                continue;
            } else if (!strcmp(turn.s, "/adapter")) {
                int k = -1;
                for (int j = 0; j < na && arg; j++) if (!strcmp(ads[j].name, arg)) k = j;
                if (!arg || (k < 0 && strcmp(arg, "none"))) { fprintf(stderr, "[no adapter '%s'; /adapters lists them]\n", arg ? arg : ""); continue; }
                next = k >= 0 ? &ads[k].lora : NULL;
                snprintf(active, sizeof(active), "%s", k >= 0 ? ads[k].name : "none");
                switched = 1;
            } else if (!strcmp(turn.s, "/mix")) { // A:0.7,B:0.3: the exact weighted sum of the adapters' deltas
                Lora *ins[MAX_ADAPTERS];
                float ws[MAX_ADAPTERS];
                int n = 0, bad = 0;
                char spec[512];
                snprintf(spec, sizeof(spec), "%s", arg ? arg : "");
                for (char *t = strtok(spec, ","); t && !bad; t = strtok(NULL, ",")) {
                    char *colon = strrchr(t, ':'), *end = NULL;
                    double w = colon ? strtod(colon + 1, &end) : 1;
                    if (colon) *colon = 0;
                    int k = -1;
                    for (int j = 0; j < na; j++) if (!strcmp(ads[j].name, t)) k = j;
                    if (k < 0 || (colon && (end == colon + 1 || *end || !isfinite(w))) || n == MAX_ADAPTERS) { fprintf(stderr, "[/mix: bad entry '%s' (NAME:WEIGHT, names from /adapters)]\n", t); bad = 1; break; }
                    if (ads[k].lora.dora || ads[k].lora.embed || ads[k].lora.lm_head) { fprintf(stderr, "[/mix: %s is DoRA or has modules_to_save; those cannot be mixed]\n", t); bad = 1; break; }
                    ins[n] = &ads[k].lora; ws[n++] = (float)w;
                }
                if (bad || !n) { if (!n && !bad) fprintf(stderr, "[/mix A:0.7,B:0.3]\n"); continue; }
                if (have_mix) lora_release(&mix, c);
                lora_combine(&mix, ins, ws, n, c);
                lora_alloc_acts(&mix, 1);
                lora_mirror(&mix, c, 1);
                have_mix = 1;
                next = &mix;
                snprintf(active, sizeof(active), "mix %s", arg);
                switched = 1;
            } else { fprintf(stderr, "[unknown command %s: /adapter NAME, /adapters, /mix A:0.7,B:0.3, /reset, /quit]\n", turn.s); continue; }
            if (switched) { // same base, another delta: rebuild the cache of the conversation so far
                net.lora = next;
                for (int k = 0; k < ntok; k++) forward_token(&net, &s, hist[k], k);
                fprintf(stderr, "[adapter: %s%s]\n", active, ntok ? " (conversation re-read)" : "");
            }
            continue;
        }
        // a user turn: the tokens of the whole conversation (a template renders it afresh; plain text: the
        // tokens fed so far, the pending token and the turn's), fed from the first one the cache lacks
        int *toks = NULL, nt;
        if (T) {
            chat_push(&msgs, &nmsg, &mcap, ROLE_USER, turn.s, turn.n);
            ChatRender cr;
            char err[300];
            unsigned char *resp = NULL;
            if (chat_render(&cr, tpl, msgs, nmsg, no_think ? 2 : 1, err, sizeof(err))) fatal("template %s: %s", T->name, err);
            nt = chat_tokenize(&tok, &cr, &toks, &resp);
            cr_free(&cr); free(resp);
            if (nt < 0) fatal_error();
        } else {
            int first = ntok == 0 && last < 0;
            toks = (int *)malloc_check(((size_t)ntok + turn.n + 8) * sizeof(int));
            memcpy(toks, hist, (size_t)ntok * sizeof(int));
            nt = ntok;
            if (last >= 0) toks[nt++] = last;
            text.n = 0;  // the turn, on a new line after the first
            if (!first) sb_puts(&text, "\n");
            sb_putn(&text, turn.s, turn.n);
            int ne = tokenizer_encode(&tok, text.s, text.n, first, 0, toks + nt, (int)turn.n + 7);
            if (ne < 0) fatal_error();
            nt += ne;
        }
        if (dry_run) {
            for (int k = 0; k < nt; k++) printf("%s%d", k ? " " : "", toks[k]);
            printf("\n");
            fflush(stdout);
            free(toks);
            if (!chat_read_turn(&reply, &line, &cap)) break;  // the canned reply
            if (T) chat_push(&msgs, &nmsg, &mcap, ROLE_ASSISTANT, reply.s, reply.n);
            else { // plain text: its tokens as the tokenizer encodes them, fed after the turn
                if (hcap < nt + (int)reply.n + 2) { hcap = nt + (int)reply.n + 2; hist = (int *)realloc_check(hist, (size_t)hcap * sizeof(int)); }
                int ne = tokenizer_encode(&tok, reply.s, reply.n, 0, 0, hist + nt, (int)reply.n + 2);
                if (ne < 0) fatal_error();
                ntok = nt + ne; last = -1;
            }
            continue;
        }
        if (nt == 0) { free(toks); continue; }
        if (nt >= npos) { fprintf(stderr, "[context full (%d positions): /reset to start again]\n", npos); free(toks); if (T) chat_pop(msgs, &nmsg, nmsg - 1); continue; }
        if (nt > hcap) { hcap = nt > 2 * hcap ? nt : 2 * hcap; hist = (int *)realloc_check(hist, (size_t)hcap * sizeof(int)); }
        int same = 0;
        while (same < ntok && same < nt && hist[same] == toks[same]) same++;
        if (same == nt) same--;  // the last token is fed again for its logits
        floatX *logits = NULL;
        for (int k = same; k < nt; k++) { hist[k] = toks[k]; logits = forward_token(&net, &s, toks[k], k); }
        ntok = nt;
        int prev = toks[nt - 1], generated = 0;
        last = -1;
        free(toks);
        reply.n = 0;
        double t0 = time_sec();
        while (generated < steps && ntok < npos) {
            int next = sample(logits, c->vocab_size, temperature, topp, random_f32(&rng), probs, pi);
            generated++;
            if (next == eos || next == bos || next == eot) break;
            int n = tokenizer_decode(&tok, prev, next, piece, (int)sizeof(piece));
            print_piece(piece, n);
            sb_putn(&reply, piece, (size_t)n);
            fflush(stdout);
            if (generated == steps || ntok + 1 >= npos) { last = next; break; } // fed at the next turn
            if (ntok == hcap) { hcap *= 2; hist = (int *)realloc_check(hist, (size_t)hcap * sizeof(int)); }
            hist[ntok] = next;
            logits = forward_token(&net, &s, next, ntok);
            ntok++;
            prev = next;
        }
        printf("\n");
        fflush(stdout);
        if (T) { chat_push(&msgs, &nmsg, &mcap, ROLE_ASSISTANT, reply.s ? reply.s : "", reply.n); last = -1; }
        double dt = time_sec() - t0;
        fprintf(stderr, "[%d tokens, %.1f tok/s, %d/%d positions]\n", generated, dt > 0 ? generated / dt : 0, ntok + (last >= 0), npos);
    }
    chat_pop(msgs, &nmsg, 0);
    free(msgs); free(line); free(turn.s); free(reply.s); free(text.s); free(hist); free(probs); free(pi);
    if (model_path) { runstate_free(&s); net_free(&net); }
    if (have_mix) lora_release(&mix, c);
    for (int k = 0; k < na && model_path; k++) lora_release(&ads[k].lora, c);
    free(ads);
    tokenizer_free(&tok);
    if (model_path) model_free(&m);
    return 0;
}

#ifndef PEFT_INFER
// ---- eval
static void error_usage_eval(void) {
    fprintf(stderr, "Usage: peft eval MODEL DATA [options]\n"
                    "  Mean next-token loss over the whole text in non-overlapping windows; last line:\n"
                    "  loss <L> perplexity <P> tokens <N>\n"
                    "  -z PATH       tokenizer (default as for generate)\n"
                    "  -a DIR[:W]    PEFT LoRA adapter, weight W; repeat to sum several (default: none)\n"
                    "  -T N          window length (default: min(256, the model's max positions))\n"
                    "  -b N          windows per batch (default 4)\n"
                    QUANT_HELP DEVICE_HELP OFFLOAD_HELP);
    exit(1);
}
static int cmd_eval(int argc, char **argv) {
    const char *model_path = NULL, *data = NULL, *zpath = NULL;
    char *adapters[MAX_ADAPTERS];
    int na = 0, T = 0, B = 4;
    QuantOpts qo = { -1, 0, 0, 0, 0 };
    DeviceOpts dev = { -1, -1, 0 };
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) error_usage_eval();
        else if (parse_quant_flag(argc, argv, &i, &qo)) {}
        else if (parse_device_flag(argc, argv, &i, &dev)) {}
        else if (!strcmp(argv[i], "--offload")) dev.offload = 1;
        else if (argv[i][0] != '-') { if (!model_path) model_path = argv[i]; else if (!data) data = argv[i]; else fatal("unexpected argument '%s'", argv[i]); }
        else if (!strcmp(argv[i], "-z")) zpath = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "-a")) push_adapter(adapters, &na, next_arg(argc, argv, &i));
        else if (!strcmp(argv[i], "-T")) T = parse_int("-T", next_arg(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(argv[i], "-b")) B = parse_int("-b", next_arg(argc, argv, &i), 1, 4096);
        else fatal("unknown flag '%s' for eval (see peft eval --help)", argv[i]);
    }
    if (!model_path || !data) error_usage_eval();
    Model m;
    device_start(&dev);
    qo.keep16 = gpu_keep16(!offload_on);
    load_model_q_or_die(&m, model_path, &qo);
    Config *c = &m.config;
    if (!T) T = c->seq_len < 256 ? c->seq_len : 256;
    if (T > c->seq_len) fatal("-T %d exceeds the model's %d positions", T, c->seq_len);
    char zbuf[4096];
    adapters_vocab_or_die(&m, adapters, na, 0, &zpath, zbuf, sizeof(zbuf));
    if ((double)B * T > INT_MAX) fatal("-b %d x -T %d is too many tokens per batch", B, T);
    Tokenizer tok;
    load_tokenizer_or_die(&tok, zpath, model_path, c);
    int n;
    int *tokens = tokenize_file(&tok, data, &n);
    if (!tokens) fatal_error();
    for (int i = 0; i < n; i++) if (tokens[i] >= c->vocab_size) fatal("%s: token id %d exceeds the model's vocabulary (%d): wrong tokenizer?", data, tokens[i], c->vocab_size);
    if (n < 2) fatal("%s: need at least 2 tokens to evaluate", data);
    Lora lora, *lo = NULL;
    if (na) { load_adapters_or_die(&lora, na, adapters, c); lo = &lora; lora_alloc_acts(lo, B * T); }
    note_tokenizer();
    Net net;
    net_init(&net, &m, lo);
    Activations a;
    acts_alloc(&a, c, B, T, 0, 1, ACTS_KEEP_ALL);
    long count;
    double t0 = time_sec();
    double loss = evaluate(&net, &a, tokens, n, 0, &count);
    fprintf(stderr, "%sevaluated %ld tokens in %.1fs\n", quant_desc(&m), count, time_sec() - t0);
    printf("loss %.6f perplexity %.4f tokens %ld\n", loss, exp(loss), count);
    free(tokens);
    acts_free(&a); net_free(&net); lora_free(lo); tokenizer_free(&tok); model_free(&m);
    return 0;
}

static void error_usage_dump(void) {
    fprintf(stderr, "Usage: peft dump MODEL -i IN.safetensors -o OUT.safetensors [options]\n"
                    "  Reads input_ids [B,T] (and optional targets [B,T]) and writes logits [B,T,V] fp32;\n"
                    "  with targets also loss [1], and with an adapter grad.<PEFT key> of every adapter tensor.\n"
                    "  -i FILE      input safetensors (required)\n"
                    "  -o FILE      output safetensors (required)\n"
                    "  -a DIR[:W]   PEFT LoRA adapter folder to apply (default: none); repeat to sum several\n"
                    "               (gradients are written for a single unweighted adapter)\n"
                    QUANT_HELP DEVICE_HELP OFFLOAD_HELP);
    exit(1);
}

static int cmd_dump(int argc, char **argv) {
    const char *model_path = NULL, *in = NULL, *out = NULL;
    char *adapters[MAX_ADAPTERS];
    int na = 0;
    QuantOpts qo = { -1, 0, 0, 0, 0 };
    DeviceOpts dev = { -1, -1, 0 };
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) error_usage_dump();
        else if (parse_quant_flag(argc, argv, &i, &qo)) {}
        else if (parse_device_flag(argc, argv, &i, &dev)) {}
        else if (!strcmp(argv[i], "--offload")) dev.offload = 1;
        else if (argv[i][0] != '-') { if (model_path) fatal("unexpected argument '%s'", argv[i]); model_path = argv[i]; }
        else if (!strcmp(argv[i], "-i")) in = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "-o")) out = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "-a")) push_adapter(adapters, &na, next_arg(argc, argv, &i));
        else fatal("unknown flag '%s' for dump (see peft dump --help)", argv[i]);
    }
    if (!model_path || !in || !out) error_usage_dump();
    Model m;
    device_start(&dev);
    qo.keep16 = gpu_keep16(!offload_on);
    load_model_q_or_die(&m, model_path, &qo);
    Config *c = &m.config;
    const char *znone = NULL;
    char zbuf[4096];
    adapters_vocab_or_die(&m, adapters, na, 0, &znone, zbuf, sizeof(zbuf));
    SafeTensors st;
    if (st_open(&st, in)) fatal_error();
    STTensor *ti = st_find(&st, "input_ids"), *tt = st_find(&st, "targets");
    if (!ti) fatal("%s: no 'input_ids' tensor", in);
    if (ti->ndim != 2 || ti->shape[0] < 1 || ti->shape[1] < 1) fatal("%s: input_ids must be [B,T]", in);
    int B = (int)ti->shape[0], T = (int)ti->shape[1], N = B * T;
    if (ti->shape[0] > 4096 || ti->shape[1] > c->seq_len) fatal("%s: input_ids is [%d,%d] but the model allows at most %d positions", in, B, T, c->seq_len);
    int *inputs = (int *)malloc_check((size_t)N * sizeof(int)), *targets = NULL;
    if (st_read_ints(&st, ti, inputs)) fatal_error();
    for (int i = 0; i < N; i++) if (inputs[i] < 0 || inputs[i] >= c->vocab_size) fatal("%s: input_ids[%d] = %d is outside the vocabulary (%d)", in, i, inputs[i], c->vocab_size);
    if (tt) {
        if (tt->ndim != 2 || tt->shape[0] != B || tt->shape[1] != T) fatal("%s: targets must have the shape of input_ids [%d,%d]", in, B, T);
        targets = (int *)malloc_check((size_t)N * sizeof(int));
        if (st_read_ints(&st, tt, targets)) fatal_error();
        for (int i = 0; i < N; i++) if (targets[i] >= c->vocab_size || (targets[i] < 0 && targets[i] != -100)) fatal("%s: targets[%d] = %d is outside the vocabulary", in, i, targets[i]);
    }
    st_close(&st);
    Lora lora, *lo = NULL;
    LoraConfig lc;
    if (na == 1 && !strchr(adapters[0], ':')) { // one adapter: also its gradients
        if (lora_load(&lora, &lc, c, adapters[0], targets != NULL)) fatal_error();
        free(lc.layers);
        lo = &lora;
        lo->dropout = 0; // dump is evaluation: no dropout
        lora_alloc_acts(lo, N);
    } else if (na) { // several (or weighted): their summed delta, no gradients
        load_adapters_or_die(&lora, na, adapters, c);
        lo = &lora;
        lora_alloc_acts(lo, N);
    }
    Net net;
    net_init(&net, &m, lo);
    Activations a;
    acts_alloc(&a, c, B, T, 0, 0, acts_keep(lora_targets(lo), 0)); // the adapter's gradients only
    peft_forward(&net, &a, inputs);
    size_t nl = (size_t)N * c->vocab_size;
    floatX *logits = (floatX *)malloc_check(nl * sizeof(floatX));
    for (int r0 = 0; r0 < N; r0 += a.logit_rows) { // (a chunk of rows at a time when they do not fit at once)
        int rows = N - r0 < a.logit_rows ? N - r0 : a.logit_rows;
        if (a.logit_rows < N) classifier_forward(&net, &a, NULL, r0, rows);
        tensor_download(logits + (size_t)r0 * c->vocab_size, a.logits, (size_t)rows * c->vocab_size * sizeof(floatX));
    }
    floatX loss = 0;
    int nt = 0;
    STWrite *ts = (STWrite *)calloc_check(2 + (lo ? (size_t)lo->n_layers * NUM_TARGETS * 3 : 0), sizeof(STWrite));
    snprintf(ts[nt].name, sizeof(ts[nt].name), "logits");
    ts[nt].dtype = DT_F32; ts[nt].ndim = 3; ts[nt].shape[0] = B; ts[nt].shape[1] = T; ts[nt].shape[2] = c->vocab_size; ts[nt].fdata = logits; nt++;
    if (targets) {
        loss = peft_loss(&a, c, targets);
        snprintf(ts[nt].name, sizeof(ts[nt].name), "loss");
        ts[nt].dtype = DT_F32; ts[nt].ndim = 1; ts[nt].shape[0] = 1; ts[nt].fdata = &loss; nt++;
        if (lo && lo->grads) {
            peft_backward(&net, &a, NULL, c->n_layers, 0);
            lora_to_host(lo);
            for (int l = 0; l < lo->n_layers; l++)
                for (int t = 0; t < NUM_TARGETS; t++) {
                    LoraModule *lm = &lo->mods[l * NUM_TARGETS + t];
                    if (!lm->r || !lora_name(lo->fused, t)) continue;
                    for (int ab = 0; ab < 2; ab++) {
                        char key[200];
                        lora_key(key, sizeof(key), lo->fused, l, t, ab ? "B" : "A", NULL);
                        snprintf(ts[nt].name, sizeof(ts[nt].name), "grad.%s", key);
                        ts[nt].dtype = DT_F32; ts[nt].ndim = 2;
                        ts[nt].shape[0] = ab ? lora_out_rows(lo, l, t) : lm->r; ts[nt].shape[1] = ab ? lm->r : lm->in;
                        ts[nt].fdata = ab ? lm->dB : lm->dA; nt++;
                    }
                    if (lm->mag) { // PEFT names the magnitude's gradient after its nn.Parameter: ...lora_magnitude_vector.weight
                        snprintf(ts[nt].name, sizeof(ts[nt].name), "grad.base_model.model.model.layers.%d.%s.%s.lora_magnitude_vector.weight", l, target_block(t), lora_name(lo->fused, t));
                        ts[nt].dtype = DT_F32; ts[nt].ndim = 1; ts[nt].shape[0] = lora_out_rows(lo, l, t); ts[nt].fdata = lm->dmag; nt++;
                    }
                }
        }
    }
    if (st_write(out, ts, nt, "{\"format\":\"pt\"}")) fatal_error();
    fprintf(stderr, "wrote %s: logits [%d,%d,%d]%s", out, B, T, c->vocab_size, targets ? "" : "\n");
    if (targets) fprintf(stderr, ", loss %.6f%s\n", (double)loss, lo && lo->grads ? ", adapter gradients" : "");
    free(ts); free(logits); free(inputs); free(targets);
    acts_free(&a); net_free(&net); lora_free(lo); model_free(&m);
    return 0;
}

// ---- train
static void error_usage_train(void) {
    fprintf(stderr, "Usage: peft train MODEL DATA [options]\n"
                    "  Fine-tunes MODEL on DATA (UTF-8 text; blank lines separate documents, each gets BOS; or --format).\n"
                    "  Writes OUTDIR/adapter_config.json + adapter_model.safetensors (PEFT's format), log.jsonl.\n"
                    "  -z PATH                   tokenizer (default as for generate)\n"
                    "  --format F                text | alpaca | sharegpt (LLaMA-Factory's JSON / JSONL datasets) (default text)\n"
                    "  --template NAME           chat template for alpaca/sharegpt data (default alpaca): " TEMPLATE_LIST "\n"
                    "                            (as the models' tokenizer_config.json render it); prompts are masked out of the\n"
                    "                            loss, one example per row; the adapter folder records it (peft_chat.json) for chat\n"
                    "  --train-on-prompt         instruction data: train on the prompt tokens too\n"
                    "  --cutoff-len N            instruction data: truncate examples to N tokens as LLaMA-Factory does (default T+1)\n"
                    "  -o DIR                    output folder (default out)\n"
                    "  --finetuning-type T       lora | freeze | full | llama-pro (default lora)\n"
                    "  --freeze-trainable-layers N  freeze: train the last N layers (default 2)\n"
                    "  --new-special-tokens A,B  add special tokens: tokenizer written beside the adapter, embedding and\n"
                    "                            classifier grown (new rows = mean row) and those rows trained (saved as\n"
                    "                            modules_to_save embed_tokens/lm_head); LoRA only\n"
                    "  --expand N                llama-pro: insert N blocks (copies with zero o_proj/down_proj after every\n"
                    "                            L/N-th layer, so the logits do not change), train only them, write the model\n"
                    "  -r N                      LoRA rank (default 8)\n"
                    "  --alpha A                 lora_alpha (default 8, PEFT's); scale = alpha/r\n"
                    "  --rslora                  scale = alpha/sqrt(r)\n"
                    "  --dora                    DoRA: learn a magnitude per output row too (PEFT's use_dora)\n"
                    "  --dropout P               LoRA dropout on the branch input (default 0)\n"
                    "  --targets LIST            q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all-linear (default q_proj,v_proj;\n"
                    "                            Phi-3: qkv_proj,o_proj,gate_up_proj,down_proj, default qkv_proj),\n"
                    "                            or a regex on whole module names as PEFT takes a string, e.g. '.*\\.(1|3)\\.self_attn\\.(q|v)_proj'\n"
                    "  --layers LIST             layers to adapt, e.g. 0,1,4-7 (default all)\n"
                    "  --init I                  kaiming | gaussian (default kaiming: PEFT's)\n"
                    "  --modules-to-save LIST    embed_tokens,lm_head: also train full copies of these, saved in the adapter\n"
                    "                            (PEFT's modules_to_save; LLaMA-Factory's --additional_target, also accepted)\n"
                    "  -b N                      batch size (default 8)\n"
                    "  -T N                      sequence length (default min(256, max positions); instruction data: the longest example)\n"
                    "  --steps N                 optimizer steps (default: --epochs worth)\n"
                    "  --epochs E                passes over the training tokens (default 1)\n"
                    "  --lr LR                   peak learning rate (default 1e-3)\n"
                    "  --warmup N                linear warmup steps (default 5%% of steps)\n"
                    "  --schedule S              cosine | linear | constant (default cosine)\n"
                    "  --weight-decay W          AdamW decoupled weight decay (default 0)\n"
                    "  --clip NORM               clip the global gradient norm, 0 = off (default 1.0)\n"
                    "  --grad-accum K            micro-batches per step (default 1)\n"
                    "  --val-frac F              hold out the last F of the tokens (default 0.05)\n"
                    "  --val FILE                validation text instead of --val-frac\n"
                    "  --eval-every N            validate every N steps (default: 10 times per run)\n"
                    "  --eval-batches N          batches per validation, 0 = all (default 16)\n"
                    "  --save-every N            checkpoint every N steps into OUTDIR/checkpoint-N (default 0: end only)\n"
                    "  --resume DIR              continue from a checkpoint folder, bit-for-bit\n"
                    "  --resume-adapter DIR      start from an existing PEFT adapter (PEFT's is_trainable=True)\n"
                    "  --checkpoint-activations  recompute layer activations in the backward (less memory)\n"
                    "  --gpu-memory SIZE         plan to a GPU memory budget (e.g. 22G, 6G): the fastest of resident; checkpointed\n"
                    "                            activations; (several processes) sharded weights (--shard); offloaded weights\n"
                    "                            (--offload) that fits, printed with why; refused with the smallest budget that works\n"
                    "                            when none does (LoRA; the budget is per GPU)\n"
                    "  --plan-only               print the --gpu-memory plan and stop (no GPU needed)\n"
                    "  --offload                 GPU: keep the frozen base in pinned host memory and stream each layer's weights\n"
                    "                            to the GPU a layer ahead of its use (3 layers there at once): the resident run's\n"
                    "                            arithmetic, bit for bit (LoRA; --gpu-memory chooses it when the base does not fit)\n"
                    "  --offload activations     also keep the checkpointed activations (each layer's input) in pinned host memory,\n"
                    "                            3 on the GPU, copied out in the forward and back a layer ahead in the backward\n"
                    "  --offload activations-only  the checkpointed activations in host memory, the base where it is (resident, --shard)\n"
                    "  --shard                   GPU, several processes: each keeps 1/N of every layer's frozen weights (quantized blocks\n"
                    "                            or bf16) and all-gathers a layer into one of 3 buffers a layer ahead of its use; with\n"
                    "                            --offload its 1/N stays in pinned host memory. LoRA stays replicated; the same results\n"
                    "                            as without it, bit for bit (one process: a copy of its one chunk). --gpu-memory plans it;\n"
                    "                            given, each rank also loads only its 1/N into host memory\n"
                    "  --world N                 with --plan-only: plan for N processes (the sharded configurations; default WORLD_SIZE)\n"
                    "  --log-every N             print every N steps (default: about 100 lines per run)\n"
                    "  --bench                   at the end, print the median step time and tokens/s after warm-up and\n"
                    "                            the FLOPs and time inside the matmuls (make bench uses it)\n"
                    "  -s SEED                   random seed (default 1337)\n"
                    "  A setup that does not fit in the available memory is refused before it allocates\n"
                    "  (environment PEFT_MEM_LIMIT=BYTES[K|M|G] sets the budget). Checkpoint folders appear whole\n"
                    "  or not at all (written as CHECKPOINT.tmp.PID, then renamed), even under kill -9 or a full disk.\n"
                    "  QLoRA (LoRA on a quantized frozen base; LoRA weights, gradients and AdamW stay fp32):\n"
                    QUANT_HELP DEVICE_HELP
                    "Several GPUs (a build with make CUDA=1 NCCL=1): one process per GPU, each with batch -b, the same as\n"
                    "one GPU with batch -b x processes; NCCL sums the gradients; rank 0 prints and writes.\n"
                    "  mpirun -np 2 ./peft train MODEL DATA ...             (OpenMPI; several hosts: -x MASTER_ADDR=HOST0)\n"
                    "  torchrun --nproc-per-node 2 --no-python ./peft train MODEL DATA ...\n"
                    "  or by hand: RANK, WORLD_SIZE, LOCAL_RANK (the GPU), MASTER_ADDR, MASTER_PORT (default 29500;\n"
                    "  under torchrun peft meets on MASTER_PORT+1). PEFT_DIST_TIMEOUT=S: seconds to wait for the others (300).\n");
    exit(1);
}
// --targets: all-linear, a comma list of module names, or a regex on whole module names (PEFT's string form),
// recognised by its regex characters; a regex goes to lc->target_regex and the mask is 0
#define TARGETS_FUSED (1u << 30) // --targets named qkv_proj or gate_up_proj
#define TARGETS_SPLIT (1u << 29) // --targets named one of q/k/v/gate/up_proj
static unsigned parse_targets(const char *s, LoraConfig *lc) {
    if (!strcmp(s, "all-linear")) return (1u << NUM_TARGETS) - 1;
    if (strpbrk(s, ".*+?[](){}|\\^$")) {
        const char *err = NULL;
        if (strlen(s) >= sizeof(lc->target_regex)) fatal("--targets: regex too long");
        if (regex_fullmatch(s, "", &err) < 0) fatal("--targets: '%s' is not a regex peft.c reads: %s", s, err);
        snprintf(lc->target_regex, sizeof(lc->target_regex), "%s", s);
        return 0;
    }
    unsigned mask = 0;
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *tkn = strtok(buf, ","); tkn; tkn = strtok(NULL, ",")) {
        int found = -1;
        for (int t = 0; t < NUM_TARGETS; t++) if (!strcmp(tkn, target_names[t])) found = t;
        // Phi-3's fused modules: all their parts, marked (TARGETS_FUSED) so that the family can be checked once it is known
        if (!strcmp(tkn, "qkv_proj")) { mask |= 1u << TGT_Q | 1u << TGT_K | 1u << TGT_V | TARGETS_FUSED; continue; }
        if (!strcmp(tkn, "gate_up_proj")) { mask |= 1u << TGT_GATE | 1u << TGT_UP | TARGETS_FUSED; continue; }
        if (found < 0) fatal("--targets: unknown module '%s' (known: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj; Phi-3: qkv_proj o_proj gate_up_proj down_proj; or all-linear)", tkn);
        mask |= 1u << found | TARGETS_SPLIT * (found == TGT_Q || found == TGT_K || found == TGT_V || found == TGT_GATE || found == TGT_UP);
    }
    if (!mask) fatal("--targets: empty list");
    return mask;
}
static unsigned char *parse_layers(const char *s, int L) {
    unsigned char *layers = (unsigned char *)calloc_check((size_t)L, 1);
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *tkn = strtok(buf, ","); tkn; tkn = strtok(NULL, ",")) {
        int a, b;
        char extra;
        if (sscanf(tkn, "%d-%d%c", &a, &b, &extra) == 2) {}
        else if (sscanf(tkn, "%d%c", &a, &extra) == 1) b = a;
        else fatal("--layers: bad entry '%s'", tkn);
        if (a < 0 || b >= L || a > b) fatal("--layers: '%s' is outside the model's layers 0-%d", tkn, L - 1);
        for (int l = a; l <= b; l++) layers[l] = 1;
    }
    return layers;
}
// --gpu-memory: plan the run to the budget; the choice sets --checkpoint-activations and --offload.
// bf16: the GPU's bf16 matmuls (frozen float weights and low-precision activations in 2 bytes)
static void train_plan(TrainArgs *ta, const Model *m, int bf16) {
    PlanShape ps;
    memset(&ps, 0, sizeof(ps));
    ps.c = m->config;
    ps.quant = m->quant; ps.quant_embed = m->quant_embed; ps.quant_dq = m->quant_dq; ps.quant_bs = m->quant_bs ? m->quant_bs : qtype_block[m->quant];
    ps.weight_bytes = ps.act_bytes = bf16 ? 2 : 4;
    ps.B = ta->B; ps.T = ta->T; ps.with_eval = ta->val_path || ta->val_frac > 0;
    ps.world = ta->plan_world ? ta->plan_world : dist_world;
    ps.targets = ta->lc.targets; ps.r = ta->resume_adapter ? 64 : ta->lc.r; ps.dora = ta->lc.dora; ps.dropout = ta->lc.dropout > 0;
    if (ta->resume_adapter) ps.targets = (1u << NUM_TARGETS) - 1; // known once loaded: all modules at rank 64 bound the usual ones
    for (int l = 0; l < m->config.n_layers; l++) ps.lora_layers += !ta->lc.layers || ta->lc.layers[l];
    GpuPlan gp;
    gpu_plan(&gp, &ps, ta->gpu_memory);
    gpu_plan_print(&gp, ta->gpu_memory, ps.world);
    char b[32], need[32];
    fmt_bytes(b, sizeof(b), ta->gpu_memory);
    if (gp.choice < 0) {
        fmt_bytes(need, sizeof(need), gp.smallest);
        fatal("%s: --gpu-memory %s: no configuration fits (batch %d x %d); the smallest needs %s (--gpu-memory %.1fG), or lower -b or -T", ta->model_path, b, ta->B, ta->T, need,
              ceil(gp.smallest / 107374182.4) / 10);
    }
    int base = plan_modes[gp.choice].base, acts = plan_modes[gp.choice].acts;
    if (acts) ta->checkpoint_acts = 1;
    ta->offload |= (base == 2 ? OFFLOAD_WEIGHTS : 0) | (acts == 2 ? OFFLOAD_ACTS : 0);
    ta->shard |= base == 1 || (base == 2 && ps.world > 1); // several processes: offloaded weights sharded too (a rank's host holds 1/N)
}
static int cmd_train(int argc, char **argv) {
    TrainArgs ta;
    memset(&ta, 0, sizeof(ta));
    ta.outdir = "out"; ta.mode = TUNE_LORA; ta.B = 8; ta.grad_accum = 1; ta.epochs = 1; ta.lr = 1e-3f; ta.warmup = -1; ta.clip = 1.0f;
    ta.val_frac = 0.05f; ta.eval_batches = 16; ta.schedule = SCHED_COSINE; ta.freeze_layers = 2; ta.seed = 1337;
    ta.lc.r = 8; ta.lc.alpha = 8; ta.lc.targets = (1u << TGT_Q) | (1u << TGT_V);
    const char *layers = NULL;
    int alpha_set = 0, template_set = 0;
    QuantOpts qo = { -1, 0, 0, 0, 0 };
    DeviceOpts dev = { -1, -1, 0 };
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) error_usage_train();
        else if (parse_quant_flag(argc, argv, &i, &qo)) {}
        else if (parse_device_flag(argc, argv, &i, &dev)) {}
        else if (f[0] != '-') { if (!ta.model_path) ta.model_path = f; else if (!ta.data_path) ta.data_path = f; else fatal("unexpected argument '%s'", f); }
        else if (!strcmp(f, "--rslora")) ta.lc.rslora = 1;
        else if (!strcmp(f, "--dora")) ta.lc.dora = 1;
        else if (!strcmp(f, "--checkpoint-activations")) ta.checkpoint_acts = 1;
        else if (!strcmp(f, "--gpu-memory")) ta.gpu_memory = parse_size(f, next_arg(argc, argv, &i));
        else if (!strcmp(f, "--plan-only")) ta.plan_only = 1;
        else if (!strcmp(f, "--offload")) {
            ta.offload = OFFLOAD_WEIGHTS;
            if (i + 1 < argc && !strcmp(argv[i + 1], "activations")) { ta.offload = OFFLOAD_WEIGHTS | OFFLOAD_ACTS; ta.checkpoint_acts = 1; i++; }
            else if (i + 1 < argc && !strcmp(argv[i + 1], "activations-only")) { ta.offload = OFFLOAD_ACTS; ta.checkpoint_acts = 1; i++; }
        }
        else if (!strcmp(f, "--shard")) ta.shard = 1;
        else if (!strcmp(f, "--world")) ta.plan_world = parse_int(f, next_arg(argc, argv, &i), 1, 65536);
        else if (!strcmp(f, "--bench")) ta.bench = 1;
        else if (!strcmp(f, "--train-on-prompt")) ta.train_on_prompt = 1;
        else if (!strcmp(f, "--format")) {
            const char *v = next_arg(argc, argv, &i);
            if (!strcmp(v, "text")) ta.format = DATA_TEXT; else if (!strcmp(v, "alpaca")) ta.format = DATA_ALPACA; else if (!strcmp(v, "sharegpt")) ta.format = DATA_SHAREGPT;
            else fatal("--format: '%s' is not text, alpaca or sharegpt", v);
        }
        else if (!strcmp(f, "--template")) {
            const char *v = next_arg(argc, argv, &i);
            if ((ta.tpl = template_find(v)) < 0) fatal("--template: '%s' is not " TEMPLATE_LIST, v);
            template_set = 1;
        }
        else if (!strcmp(f, "--cutoff-len")) ta.cutoff_len = parse_int(f, next_arg(argc, argv, &i), 2, 1 << 24);
        else if (!strcmp(f, "--modules-to-save") || !strcmp(f, "--additional-target")) {
            char buf[256];
            snprintf(buf, sizeof(buf), "%s", next_arg(argc, argv, &i));
            for (char *tkn = strtok(buf, ","); tkn; tkn = strtok(NULL, ","))
                if (!strcmp(tkn, "embed_tokens")) ta.mts |= 1; else if (!strcmp(tkn, "lm_head")) ta.mts |= 2;
                else fatal("%s: '%s' is not embed_tokens or lm_head", f, tkn);
        }
        else if (!strcmp(f, "-z")) ta.tok_path = next_arg(argc, argv, &i);
        else if (!strcmp(f, "-o")) ta.outdir = next_arg(argc, argv, &i);
        else if (!strcmp(f, "--finetuning-type")) {
            const char *v = next_arg(argc, argv, &i);
            if (!strcmp(v, "lora")) ta.mode = TUNE_LORA; else if (!strcmp(v, "freeze")) ta.mode = TUNE_FREEZE; else if (!strcmp(v, "full")) ta.mode = TUNE_FULL;
            else if (!strcmp(v, "llama-pro")) ta.mode = TUNE_LLAMA_PRO;
            else fatal("--finetuning-type: '%s' is not lora, freeze, full or llama-pro", v);
        }
        else if (!strcmp(f, "--expand")) ta.expand = parse_int(f, next_arg(argc, argv, &i), 1, MAX_EXPAND);
        else if (!strcmp(f, "--new-special-tokens")) ta.new_tokens = next_arg(argc, argv, &i);
        else if (!strcmp(f, "--freeze-trainable-layers")) ta.freeze_layers = parse_int(f, next_arg(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(f, "-r")) ta.lc.r = parse_int(f, next_arg(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(f, "--alpha")) { ta.lc.alpha = parse_float(f, next_arg(argc, argv, &i), 1e-6, 1e6); alpha_set = 1; }
        else if (!strcmp(f, "--dropout")) ta.lc.dropout = parse_float(f, next_arg(argc, argv, &i), 0, 0.999);
        else if (!strcmp(f, "--targets")) { ta.lc.target_regex[0] = 0; ta.lc.targets = parse_targets(next_arg(argc, argv, &i), &ta.lc); }
        else if (!strcmp(f, "--layers")) layers = next_arg(argc, argv, &i);
        else if (!strcmp(f, "--init")) {
            const char *v = next_arg(argc, argv, &i);
            if (!strcmp(v, "kaiming")) ta.lc.init_gaussian = 0; else if (!strcmp(v, "gaussian")) ta.lc.init_gaussian = 1;
            else fatal("--init: '%s' is not kaiming or gaussian", v);
        }
        else if (!strcmp(f, "-b")) ta.B = parse_int(f, next_arg(argc, argv, &i), 1, 4096);
        else if (!strcmp(f, "-T")) ta.T = parse_int(f, next_arg(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(f, "--steps")) ta.steps = parse_int(f, next_arg(argc, argv, &i), 1, INT_MAX);
        else if (!strcmp(f, "--epochs")) ta.epochs = parse_float(f, next_arg(argc, argv, &i), 1e-6, 1e6);
        else if (!strcmp(f, "--lr")) ta.lr = parse_float(f, next_arg(argc, argv, &i), 0, 10);
        else if (!strcmp(f, "--warmup")) ta.warmup = parse_int(f, next_arg(argc, argv, &i), 0, INT_MAX);
        else if (!strcmp(f, "--schedule")) {
            const char *v = next_arg(argc, argv, &i);
            if (!strcmp(v, "cosine")) ta.schedule = SCHED_COSINE; else if (!strcmp(v, "linear")) ta.schedule = SCHED_LINEAR; else if (!strcmp(v, "constant")) ta.schedule = SCHED_CONSTANT;
            else fatal("--schedule: '%s' is not cosine, linear or constant", v);
        }
        else if (!strcmp(f, "--weight-decay")) ta.wd = parse_float(f, next_arg(argc, argv, &i), 0, 10);
        else if (!strcmp(f, "--clip")) ta.clip = parse_float(f, next_arg(argc, argv, &i), 0, 1e9);
        else if (!strcmp(f, "--grad-accum")) ta.grad_accum = parse_int(f, next_arg(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(f, "--val-frac")) ta.val_frac = parse_float(f, next_arg(argc, argv, &i), 0, 0.9);
        else if (!strcmp(f, "--val")) ta.val_path = next_arg(argc, argv, &i);
        else if (!strcmp(f, "--eval-every")) ta.eval_every = parse_int(f, next_arg(argc, argv, &i), 0, INT_MAX);
        else if (!strcmp(f, "--eval-batches")) ta.eval_batches = parse_int(f, next_arg(argc, argv, &i), 0, INT_MAX);
        else if (!strcmp(f, "--save-every")) ta.save_every = parse_int(f, next_arg(argc, argv, &i), 0, INT_MAX);
        else if (!strcmp(f, "--resume")) ta.resume = next_arg(argc, argv, &i);
        else if (!strcmp(f, "--resume-adapter")) ta.resume_adapter = next_arg(argc, argv, &i);
        else if (!strcmp(f, "--log-every")) ta.log_every = parse_int(f, next_arg(argc, argv, &i), 1, INT_MAX);
        else if (!strcmp(f, "-s")) ta.seed = (uint64_t)parse_int(f, next_arg(argc, argv, &i), 0, INT_MAX);
        else fatal("unknown flag '%s' for train (see peft train --help)", f);
    }
    (void)alpha_set;
    if (!ta.model_path || !ta.data_path) error_usage_train();
    Model m;
    if (ta.plan_only && !ta.gpu_memory) fatal("--plan-only prints the plan for --gpu-memory SIZE: give the budget");
    if (ta.plan_world && !ta.plan_only) fatal("--world N plans for N processes with --plan-only; a run has the processes its launcher started (WORLD_SIZE)");
    if (ta.gpu_memory && ta.mode != TUNE_LORA) fatal("--gpu-memory plans LoRA training (a frozen base); --finetuning-type %s trains the weights it would stream", tune_names[ta.mode]);
    dist_from_env();  // several processes: mpirun, or torchrun's variables
    if (!ta.plan_only) device_start(&dev); // the plan alone needs no GPU
    dist_connect();
    qo.keep16 = gpu_keep16(ta.mode == TUNE_LORA && !ta.gpu_memory && !ta.shard && !(ta.offload & OFFLOAD_WEIGHTS)); // (a --gpu-memory plan may stream them)
    shard_load_set(ta.shard && ta.mode == TUNE_LORA); // (a plan's --shard, chosen after the load, shards once the model is in)
    load_model_q_or_die(&m, ta.model_path, &qo);
    Config *c = &m.config;
    if (m.quant && ta.mode != TUNE_LORA) fatal("%s: a quantized base is frozen: --finetuning-type %s needs a float model (--quant none)", ta.model_path, tune_names[ta.mode]);
    if ((ta.mode == TUNE_LLAMA_PRO) != (ta.expand > 0)) fatal("--finetuning-type llama-pro and --expand N go together");
    if (ta.mode == TUNE_LLAMA_PRO) {
        if (ta.resume) fatal("--resume is not supported with --finetuning-type llama-pro (train from the expanded model written to -o with --finetuning-type freeze instead)");
        int L0 = m.config.n_layers;
        if (model_expand_llama_pro(&m, ta.expand)) fatal_error();
        fprintf(stderr, "LLaMA Pro: %d layers + %d inserted blocks (o_proj, down_proj zero) = %d; training the inserted blocks only\n", L0, ta.expand, m.config.n_layers);
    }
    if (ta.mts && ta.mode != TUNE_LORA) fatal("--modules-to-save applies to LoRA (--finetuning-type full trains the embeddings already)");
    fprintf(stderr, "%s", quant_desc(&m));
    if (ta.format == DATA_TEXT && (template_set || ta.cutoff_len || ta.train_on_prompt)) fatal("--template, --cutoff-len and --train-on-prompt apply to --format alpaca or sharegpt");
    if (ta.format == DATA_TEXT && !ta.T) ta.T = c->seq_len < 256 ? c->seq_len : 256;
    if (ta.T > c->seq_len) fatal("-T %d exceeds the model's %d positions", ta.T, c->seq_len);
    // instruction data: one example per row of T positions, so an example holds at most T+1 tokens
    if (ta.format != DATA_TEXT && ta.cutoff_len && ta.cutoff_len > (ta.T ? ta.T : c->seq_len) + 1)
        fatal("--cutoff-len %d needs rows of %d positions, more than %s %d", ta.cutoff_len, ta.cutoff_len - 1, ta.T ? "-T" : "the model's", ta.T ? ta.T : c->seq_len);
    if ((double)ta.B * ta.T * ta.grad_accum > INT_MAX) fatal("-b %d x -T %d (x %d accumulation steps) is too many tokens per step", ta.B, ta.T, ta.grad_accum);
    if (ta.mode == TUNE_FREEZE && ta.freeze_layers > c->n_layers) fatal("--freeze-trainable-layers %d exceeds the model's %d layers", ta.freeze_layers, c->n_layers);
    if (ta.mode == TUNE_LORA && !ta.resume_adapter) {
        if (ta.lc.targets & (lora_fused(c) ? TARGETS_SPLIT : TARGETS_FUSED))
            fatal("--targets: %s's modules are %s", family_arch[c->family], lora_fused(c) ? "qkv_proj o_proj gate_up_proj down_proj" : "q_proj k_proj v_proj o_proj gate_proj up_proj down_proj");
        ta.lc.targets &= (1u << NUM_TARGETS) - 1;
        for (int t = 0; t < NUM_TARGETS; t++) {
            int in, out;
            target_dims(c, t, &in, &out);
            if ((ta.lc.targets >> t & 1) && ta.lc.r > (in < out ? in : out))
                fatal("-r %d is larger than the %s layer allows (%d x %d)", ta.lc.r, target_names[t], out, in);
        }
        if (layers) ta.lc.layers = parse_layers(layers, c->n_layers);
        if (ta.lc.target_regex[0]) {
            if (layers) fatal("--layers does not apply to a --targets regex (PEFT ignores layers_to_transform for one); put the layers in the regex");
            int any = 0;
            for (int l = 0; l < c->n_layers; l++) for (int t = 0; t < NUM_TARGETS; t++) if (lora_regex_selects(ta.lc.target_regex, lora_fused(c), l, t)) { any = 1; ta.lc.targets |= 1u << t; }
            if (!any) fatal("--targets '%s' matches no module (names are like model.layers.0.self_attn.q_proj, model.layers.0.mlp.up_proj)", ta.lc.target_regex);
        }
    }
    if (ta.gpu_memory) {
        if (!ta.T) fatal("--gpu-memory plans for the rows' length: give -T with --format %s", ta.format == DATA_ALPACA ? "alpaca" : "sharegpt");
        train_plan(&ta, &m, dev.dtype != 0);
        if (ta.plan_only) { model_free(&m); free(ta.lc.layers); return 0; }
    }
    ta.lc.seed = ta.seed;
    Tokenizer tok;
    load_tokenizer_or_die(&tok, ta.tok_path, ta.model_path, c);
    if (ta.new_tokens) { // add the tokens, write the tokenizer beside the adapter, grow the embedding/classifier
        if (ta.mode != TUNE_LORA) fatal("--new-special-tokens needs --finetuning-type lora (the adapter saves the grown embed_tokens and lm_head)");
        if (ta.resume || ta.resume_adapter) fatal("--new-special-tokens cannot be combined with --resume/--resume-adapter");
        char *list = strdup_check(ta.new_tokens), *toks[256];
        int n = 0;
        for (char *t = strtok(list, ","); t; t = strtok(NULL, ",")) {
            while (*t == ' ') t++;
            size_t l = strlen(t);
            while (l && t[l - 1] == ' ') t[--l] = 0;
            if (!l) continue;
            if (n == 256) fatal("--new-special-tokens: at most 256 tokens");
            int id = tok_lookup(&tok, t, l);
            if (id < 0) id = tok_find_added(&tok, t);
            if (id >= 0) fatal("--new-special-tokens: '%s' is already in %s (id %d)", t, tok.path, id);
            for (int k = 0; k < n; k++) if (!strcmp(toks[k], t)) fatal("--new-special-tokens: '%s' given twice", t);
            toks[n++] = t;
        }
        if (!n) fatal("--new-special-tokens: no tokens in '%s'", ta.new_tokens);
        int first = tok.vocab_size, V0 = c->vocab_size;
        if (tokenizer_write_added(tok.path, ta.outdir, toks, n, first, ta.nst_tok, sizeof(ta.nst_tok))) fatal_error();
        if (first + n > c->vocab_size && model_resize_vocab(&m, first + n)) fatal_error();
        tokenizer_free(&tok);
        if (tokenizer_load(&tok, ta.nst_tok, c->vocab_size)) fatal_error();
        for (int k = 0; k < n; k++) if (tok_find_added(&tok, toks[k]) != first + k) fatal("%s: new token '%s' did not load as id %d", ta.nst_tok, toks[k], first + k);
        ta.nst_first = first; ta.nst_count = n;
        fprintf(stderr, "new special tokens: %d (ids %d..%d), vocabulary %d -> %d (new rows = the mean row, trained); tokenizer: %s\n", n, first, first + n - 1, V0, c->vocab_size, ta.nst_tok);
        free(list);
    }
    // resolve the defaults that depend on the step count inside train() via steps; warmup/eval/log here
    int rc = train(&ta, &m, &tok);
    free(ta.lc.layers);
    tokenizer_free(&tok);
    model_free(&m);
    if (rc) fatal_error();
    return 0;
}

#endif // PEFT_INFER
// ---- tokenize
static void error_usage_tokenize(void) {
    fprintf(stderr, "Usage: peft tokenize [-z TOKENIZER | MODEL] [TEXT | -f FILE | -] [options]\n"
                    "  Prints the token ids of TEXT (or of FILE, or of standard input with -), like llama.cpp's llama-tokenize.\n"
                    "  -z PATH       tokenizer.bin or tokenizer.json (or give MODEL: its tokenizer is found as for generate)\n"
                    "  -f FILE       read the text from FILE\n"
                    "  --pieces      one line per token: id -> 'piece'\n"
                    "  --json        print {\"ids\": [...]} (with --pieces: {\"ids\": [...], \"pieces\": [...]})\n"
                    "  --bos, --eos  add the tokenizer's BOS / EOS id (default: neither)\n"
                    "  --decode      the input is ids ([1, 2, 3], 1 2 3 or 1,2,3); prints the text they decode to\n");
    exit(1);
}
// vocabulary size of a model from its header or config.json, without loading the weights; -1 if unknown
static int model_vocab_probe(const char *path) {
    if (dir_exists(path)) {
        char file[4096];
        path_join(file, sizeof(file), path, "config.json");
        Json *j = json_load(file);
        if (!j) return -1;
        Json *tc = json_get(j, "text_config");
        int v = (int)json_num_or(json_get(j, "vocab_size") ? j : (tc ? tc : j), "vocab_size", -1);
        json_free(j);
        return v;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int32_t h[8];
    size_t got = fread_le(h, sizeof(int32_t), 8, f); // little-endian in the file
    fclose(f);
    if (got != 8) return -1;
    int v = (uint32_t)h[0] == BIN_MAGIC ? h[7] : h[5];
    return v < 0 ? -v : v;
}
// a piece for display: printable bytes as they are, others as \xNN (and \n, \t, \r)
static void print_escaped(FILE *f, const char *p, int n) {
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\n') fputs("\\n", f); else if (c == '\t') fputs("\\t", f); else if (c == '\r') fputs("\\r", f);
        else if (c == '\\') fputs("\\\\", f); else if (c < 0x20 || c == 0x7f) fprintf(f, "\\x%02x", c);
        else fputc(c, f);
    }
}
static int cmd_tokenize(int argc, char **argv) {
    const char *zpath = NULL, *file = NULL, *pos[2] = { NULL, NULL };
    int npos = 0, pieces = 0, json = 0, bos = 0, eos = 0, decode = 0;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) error_usage_tokenize();
        else if (!strcmp(f, "-z")) zpath = next_arg(argc, argv, &i);
        else if (!strcmp(f, "-f")) file = next_arg(argc, argv, &i);
        else if (!strcmp(f, "--pieces")) pieces = 1;
        else if (!strcmp(f, "--json")) json = 1;
        else if (!strcmp(f, "--bos")) bos = 1;
        else if (!strcmp(f, "--eos")) eos = 1;
        else if (!strcmp(f, "--decode")) decode = 1;
        else if (f[0] != '-' || !strcmp(f, "-")) { if (npos == 2) fatal("unexpected argument '%s'", f); pos[npos++] = f; }
        else fatal("unknown flag '%s' for tokenize (see peft tokenize --help)", f);
    }
    // -z TOK [TEXT] or MODEL [TEXT]
    const char *model = NULL, *text_arg = NULL;
    if (zpath) { if (npos > 1) fatal("unexpected argument '%s'", pos[1]); text_arg = pos[0]; }
    else { model = pos[0]; text_arg = pos[1]; }
    if (!zpath && !model) error_usage_tokenize();
    if ((text_arg != NULL) + (file != NULL) != 1) fatal("tokenize needs exactly one of TEXT, -f FILE or - (standard input)");
    Tokenizer tok;
    if (zpath) { if (tokenizer_load(&tok, zpath, 0)) fatal_error(); }
    else {
        Config c;
        memset(&c, 0, sizeof(c));
        c.vocab_size = model_vocab_probe(model);
        if (c.vocab_size <= 0) fatal("%s: cannot read the vocabulary size (not a llama2.c .bin or a folder with config.json)", model);
        load_tokenizer_or_die(&tok, NULL, model, &c);
    }
    size_t len;
    char *text;
    if (file || !strcmp(text_arg, "-")) {
        const char *path = file ? file : "/dev/stdin";
        text = read_file(path, &len, TOK_MAX_TEXT);
        if (!text) { tokenizer_free(&tok); fatal_error(); }
    } else { len = strlen(text_arg); text = strdup_check(text_arg); }
    int n, cap = 0, *ids = NULL;
    if (decode) { // ids separated by spaces, commas, brackets
        cap = 16; n = 0;
        ids = (int *)malloc_check((size_t)cap * sizeof(int));
        for (char *p = text; *p;) {
            if (isspace((unsigned char)*p) || *p == ',' || *p == '[' || *p == ']') { p++; continue; }
            char *end;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (end == p || errno || v < 0 || v >= tok.vocab_size) {
                char bad[24];
                snprintf(bad, sizeof(bad), "%.*s", (int)strcspn(p, " \t\r\n,[]"), p);
                fatal("%s: '%s' is not a token id of this tokenizer (0..%d)", file ? file : "ids", bad, tok.vocab_size - 1);
            }
            if (n == cap) { cap *= 2; ids = (int *)realloc_check(ids, (size_t)cap * sizeof(int)); }
            ids[n++] = (int)v;
            p = end;
        }
    } else {
        cap = (int)(len < (size_t)INT_MAX / 2 - 8 ? len + 3 : (size_t)INT_MAX / 2);
        ids = (int *)malloc_check((size_t)cap * sizeof(int));
        n = tokenizer_encode(&tok, text, len, bos, eos, ids, cap);
        if (n < 0) { free(text); free(ids); tokenizer_free(&tok); fatal_error(); }
    }
    char buf[1024];
    if (decode) {
        for (int i = 0; i < n; i++) {
            int k = tokenizer_decode(&tok, i ? ids[i - 1] : -1, ids[i], buf, sizeof(buf));
            fwrite(buf, 1, (size_t)k, stdout);
        }
        if (n && !json) fputc('\n', stdout);
    } else if (json) {
        StrBuf b = { 0 };
        sb_puts(&b, "{\"ids\": [");
        for (int i = 0; i < n; i++) sb_printf(&b, "%s%d", i ? ", " : "", ids[i]);
        sb_puts(&b, "]");
        if (pieces) {
            sb_puts(&b, ", \"pieces\": [");
            for (int i = 0; i < n; i++) {
                if (i) sb_puts(&b, ", ");
                char *pc = strdup_check(tok.pieces[ids[i]] ? tok.pieces[ids[i]] : "");
                sb_json_string(&b, pc);
                free(pc);
            }
            sb_puts(&b, "]");
        }
        sb_puts(&b, "}\n");
        fputs(b.s, stdout);
        free(b.s);
    } else if (pieces) {
        for (int i = 0; i < n; i++) {
            printf("%6d -> '", ids[i]);
            if (tok.pieces[ids[i]]) print_escaped(stdout, tok.pieces[ids[i]], tok.piece_len[ids[i]]);
            printf("'\n");
        }
    } else {
        printf("[");
        for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
        printf("]\n");
    }
    free(text); free(ids);
    tokenizer_free(&tok);
    note_tokenizer();
    return 0;
}

// ---- export-gguf
// llama.cpp's LoRA adapter file, as its convert_lora_to_gguf.py writes it: GGUF v3 with general.architecture
// "llama", general.type "adapter", adapter.type "lora", adapter.lora.alpha (float32) and the base model's llama.*
// hyperparameters; per adapted weight the tensors blk.N.<attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|
// ffn_down>.weight.lora_a (PEFT's A, [r, in]: ggml ne = {in, r}) and .lora_b (B, [out, r]: ne = {r, out}), F32.
// llama.cpp keeps Meta's interleaved RoPE layout, so the rows of q/k's lora_b are permuted back from
// rotate-half (its LlamaModel.permute; the inverse of transformers' conversion). llama.cpp scales by
// alpha / r with one alpha per file: rsLoRA (alpha / sqrt(r)) and rank_pattern / alpha_pattern scales are
// written as alpha = scale * r of the first module, and other modules' B are multiplied by their scale ratio.
// Phi-3 (llama.cpp's "phi3", tensor_mapping.py): qkv_proj is blk.N.attn_qkv and gate_up_proj is blk.N.ffn_up
// ([gate; up], which llama.cpp's SwiGLU splits in halves), each one A and the fused B as PEFT has them. The
// longrope factors stay out: llama.cpp reads them from the base model's file (rope_factors_long/short), and its
// adapter loader refuses any tensor but .lora_a / .lora_b / *_norm.weight.
static const char *gguf_module_names[NUM_TARGETS] = { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down" };
static const char *gguf_module_name(int fused, int t) { return fused && t == TGT_Q ? "attn_qkv" : fused && t == TGT_GATE ? "ffn_up" : gguf_module_names[t]; }
enum { GGUF_U32 = 4, GGUF_F32 = 6, GGUF_STRING = 8 };
// GGUF is little-endian: every number goes through gguf_num (a no-op on little-endian hosts)
static void gguf_num(StrBuf *b, const void *p, size_t es) { unsigned char t[8]; memcpy(t, p, es); le_swap(t, es, 1); sb_putn(b, (const char *)t, es); }
static void gguf_str(StrBuf *b, const char *s) { uint64_t n = strlen(s); gguf_num(b, &n, 8); sb_putn(b, s, (size_t)n); }
static void gguf_kv_str(StrBuf *b, const char *k, const char *v) { uint32_t t = GGUF_STRING; gguf_str(b, k); gguf_num(b, &t, 4); gguf_str(b, v); }
static void gguf_kv_u32(StrBuf *b, const char *k, uint32_t v) { uint32_t t = GGUF_U32; gguf_str(b, k); gguf_num(b, &t, 4); gguf_num(b, &v, 4); }
static void gguf_kv_f32(StrBuf *b, const char *k, float v) { uint32_t t = GGUF_F32; gguf_str(b, k); gguf_num(b, &t, 4); gguf_num(b, &v, 4); }

static int export_gguf(const Lora *lo, const LoraConfig *lc, const Config *c, const char *name, const char *out) {
    if (lo->dora) return set_error(out, "DoRA adapters have no llama.cpp form (its LoRA is W + scale B A)");
    if (lo->embed || lo->lm_head) return set_error(out, "modules_to_save (full embed_tokens / lm_head) have no llama.cpp LoRA form; merge them instead");
    // llama.cpp's architecture names; Llama and Mistral use its "llama" graph with interleaved RoPE rows,
    // the others NEOX (rotate-half) RoPE, as peft.c and transformers keep them
    const char *gguf_arch[NUM_FAMILIES] = { "llama", "llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3" };
    const char *ga = gguf_arch[c->family];
    int interleaved = c->family == FAM_LLAMA || c->family == FAM_MISTRAL;
    char key[96];
    #define GKEY(k) (snprintf(key, sizeof(key), "%s.%s", ga, k), key)
    int L = c->n_layers, ntensors = 0;
    double alpha = -1;
    for (int i = 0; i < L * NUM_TARGETS; i++)
        if (lo->mods[i].r && lora_name(lo->fused, i % NUM_TARGETS)) { if (alpha < 0) alpha = (double)lo->mods[i].scale * lo->mods[i].r; ntensors += 2; }
    if (!ntensors) return set_error(out, "the adapter has no LoRA modules");
    (void)lc;
    // header and key/values
    StrBuf h = { 0 };
    uint32_t version = 3;
    uint64_t nt = (uint64_t)ntensors, nkv = 15 + (c->rope_longrope ? 2 : 0);
    sb_putn(&h, "GGUF", 4); gguf_num(&h, &version, 4); gguf_num(&h, &nt, 8); gguf_num(&h, &nkv, 8);
    gguf_kv_str(&h, "general.architecture", ga);
    gguf_kv_str(&h, "general.type", "adapter");
    gguf_kv_str(&h, "general.name", name);
    gguf_kv_u32(&h, "general.file_type", 0); // all F32
    gguf_kv_str(&h, "adapter.type", "lora");
    gguf_kv_f32(&h, "adapter.lora.alpha", (float)alpha);
    gguf_kv_u32(&h, GKEY("block_count"), (uint32_t)L);
    gguf_kv_u32(&h, GKEY("context_length"), (uint32_t)c->seq_len);
    gguf_kv_u32(&h, GKEY("embedding_length"), (uint32_t)c->dim);
    gguf_kv_u32(&h, GKEY("feed_forward_length"), (uint32_t)c->hidden_dim);
    gguf_kv_u32(&h, GKEY("attention.head_count"), (uint32_t)c->n_heads);
    gguf_kv_u32(&h, GKEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    gguf_kv_f32(&h, GKEY("rope.freq_base"), c->rope_theta);
    gguf_kv_f32(&h, GKEY("attention.layer_norm_rms_epsilon"), c->norm_eps);
    gguf_kv_u32(&h, GKEY("rope.dimension_count"), (uint32_t)c->head_dim);
    if (c->rope_longrope) { // as convert_hf_to_gguf.py's Phi3MiniModel writes them
        gguf_kv_u32(&h, GKEY("rope.scaling.original_context_length"), (uint32_t)c->rope_orig_max_pos);
        gguf_kv_f32(&h, GKEY("rope.scaling.attn_factor"), c->rope_attn_factor);
    }
    #undef GKEY
    // tensor infos: offsets into the data section, each aligned to 32 bytes (general.alignment's default)
    uint64_t off = 0;
    for (int l = 0; l < L; l++) for (int t = 0; t < NUM_TARGETS; t++) {
        const LoraModule *md = &lo->mods[l * NUM_TARGETS + t];
        if (!md->r || !lora_name(lo->fused, t)) continue; // (a fused module's parts are in its first's B)
        for (int ab = 0; ab < 2; ab++) {
            char tname[96];
            snprintf(tname, sizeof(tname), "blk.%d.%s.weight.lora_%c", l, gguf_module_name(lo->fused, t), ab ? 'b' : 'a');
            uint32_t nd = 2, type = 0;
            uint64_t ne[2] = { (uint64_t)(ab ? md->r : md->in), (uint64_t)(ab ? lora_out_rows(lo, l, t) : md->r) };
            gguf_str(&h, tname); gguf_num(&h, &nd, 4); gguf_num(&h, &ne[0], 8); gguf_num(&h, &ne[1], 8); gguf_num(&h, &type, 4); gguf_num(&h, &off, 8);
            off += (ne[0] * ne[1] * 4 + 31) / 32 * 32;
        }
    }
    static const char zeros[32] = { 0 };
    AtomicFile af;
    if (atomic_open(&af, out)) { free(h.s); return -1; }
    atomic_write(&af, h.s, h.n);
    atomic_write(&af, zeros, (32 - h.n % 32) % 32);
    free(h.s);
    for (int l = 0; l < L; l++) for (int t = 0; t < NUM_TARGETS; t++) {
        const LoraModule *md = &lo->mods[l * NUM_TARGETS + t];
        if (!md->r || !lora_name(lo->fused, t)) continue;
        size_t na = (size_t)md->r * md->in, nb = (size_t)lora_out_rows(lo, l, t) * md->r; // (fused: every part's B rows)
        float *buf = (float *)malloc_check((na > nb ? na : nb) * sizeof(float));
        for (size_t i = 0; i < na; i++) buf[i] = (float)md->A[i];
        atomic_write_le(&af, buf, 4, na);
        atomic_write(&af, zeros, (32 - na * 4 % 32) % 32);
        double ratio = (double)md->scale * md->r / alpha;  // 1 unless the scales differ between modules
        floatX *Bp = (floatX *)malloc_check(nb * sizeof(floatX));
        memcpy(Bp, md->B, nb * sizeof(floatX));
        if (interleaved && (t == TGT_Q || t == TGT_K)) permute_rope_rows(Bp, t == TGT_Q ? c->n_heads : c->n_kv_heads, c->head_dim, md->r, 0);
        for (size_t i = 0; i < nb; i++) buf[i] = fabs(ratio - 1) < 1e-6 ? (float)Bp[i] : (float)(Bp[i] * ratio);
        atomic_write_le(&af, buf, 4, nb);
        atomic_write(&af, zeros, (32 - nb * 4 % 32) % 32);
        free(Bp); free(buf);
    }
    return atomic_commit(&af);
}

static void error_usage_export_gguf(void) {
    fprintf(stderr, "Usage: peft export-gguf ADAPTER -o OUT.gguf [-m MODEL]\n"
                    "  Writes a PEFT LoRA adapter as a llama.cpp LoRA adapter (GGUF v3, as convert_lora_to_gguf.py does):\n"
                    "  llama-cli -m model.gguf --lora OUT.gguf\n"
                    "  -o FILE       output .gguf file; required\n"
                    "  -m MODEL      the base model (.bin or folder), for its shapes (default: adapter_config.json's\n"
                    "                base_model_name_or_path when that is a local path)\n");
    exit(1);
}
static int cmd_export_gguf(int argc, char **argv) {
    const char *adapter = NULL, *out = NULL, *model_path = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) error_usage_export_gguf();
        else if (!strcmp(argv[i], "-o")) out = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "-m")) model_path = next_arg(argc, argv, &i);
        else if (argv[i][0] != '-' && !adapter) adapter = argv[i];
        else fatal("unexpected argument '%s' for export-gguf (see peft export-gguf --help)", argv[i]);
    }
    if (!adapter || !out) error_usage_export_gguf();
    char cpath[4096], base[4096] = "";
    path_join(cpath, sizeof(cpath), adapter, "adapter_config.json");
    if (!model_path) {
        Json *j = json_load(cpath);
        if (!j) fatal_error();
        const char *b = json_str(json_get(j, "base_model_name_or_path"));
        if (b) snprintf(base, sizeof(base), "%s", b);
        json_free(j);
        if (!base[0] || !(file_exists(base) || dir_exists(base))) fatal("%s: base model '%s' is not a local path; give the base model with -m", cpath, base);
        model_path = base;
    }
    Model m;
    load_model_or_die(&m, model_path);
    Lora lo;
    LoraConfig lc;
    if (lora_load(&lo, &lc, &m.config, adapter, 0)) fatal_error();
    const char *name = strrchr(adapter, '/');
    name = name && name[1] ? name + 1 : adapter;
    int rc = export_gguf(&lo, &lc, &m.config, name, out);
    lora_free(&lo); free(lc.layers);
    model_free(&m);
    if (rc) fatal_error();
    fprintf(stderr, "wrote %s (llama.cpp LoRA adapter, GGUF v3, F32)\n", out);
    return 0;
}

// ---- merge
static void error_usage_merge(void) {
    fprintf(stderr, "Usage: peft merge MODEL ADAPTER[:WEIGHT]... -o OUT [--dtype f32|f16|bf16]\n"
                    "  Writes W' = W + sum_i weight_i * scale_i * B_i A_i for every adapted layer, in MODEL's format:\n"
                    "  a .bin file (llama2.c v1, or legacy for a legacy input) or a Hugging Face folder.\n"
                    "  -o OUT        output file (.bin input) or folder (Hugging Face input); required\n"
                    "  --dtype D     dtype of a written folder (default: the input folder's); for a quantized .bin\n"
                    "                (int8 v2, int4/nf4): --dtype f32 writes a float v1 .bin instead of requantizing\n");
    exit(1);
}

static void copy_file_if_exists(const char *src_dir, const char *dst_dir, const char *name) {
    char src[4096], dst[4096];
    path_join(src, sizeof(src), src_dir, name);
    path_join(dst, sizeof(dst), dst_dir, name);
    size_t n;
    if (!file_exists(src)) return;
    char *data = read_file(src, &n, (size_t)1 << 30);
    if (!data) return;
    AtomicFile af;
    if (!atomic_open(&af, dst)) { atomic_write(&af, data, n); if (atomic_commit(&af)) fatal_error(); }
    free(data);
}

static int cmd_merge(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL;
    char *adapters[MAX_ADAPTERS];
    int na = 0, dtype = -1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) error_usage_merge();
        else if (argv[i][0] != '-') {
            if (!model_path) model_path = argv[i];
            else push_adapter(adapters, &na, argv[i]);
        }
        else if (!strcmp(argv[i], "-o")) out = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "-a")) push_adapter(adapters, &na, next_arg(argc, argv, &i));
        else if (!strcmp(argv[i], "--dtype")) {
            const char *v = next_arg(argc, argv, &i);
            dtype = !strcmp(v, "f32") ? DT_F32 : !strcmp(v, "f16") ? DT_F16 : !strcmp(v, "bf16") ? DT_BF16 : -2;
            if (dtype == -2) fatal("--dtype: '%s' is not f32, f16 or bf16", v);
        }
        else fatal("unknown flag '%s' for merge (see peft merge --help)", argv[i]);
    }
    if (!model_path || !out || !na) error_usage_merge();
    Model m;
    QuantOpts as_float = { QT_NONE, 0, 0, 0, 0 };
    if (model_load_q(&m, model_path, &as_float)) fatal_error(); // a quantized base is dequantized to merge
    int requant = m.format == FMT_BIN_V2 || m.format == FMT_BIN_Q4 ? -1 : 0, rq_type = 0, rq_embed = 0, rq_dq = 0, rq_bs = 0;
    if (requant) { // the stored quantization, to write the merged model the same way
        Model q;
        if (model_load(&q, model_path)) fatal_error();
        rq_type = q.quant; rq_embed = q.quant_embed; rq_dq = q.quant_dq; rq_bs = q.quant_bs;
        model_free(&q);
        requant = dtype < 0;
        if (dtype >= 0) m.format = FMT_BIN_V1;
    }
    if (m.format != FMT_HF && dtype >= 0 && dtype != DT_F32) fatal("--dtype %s applies to Hugging Face folders; .bin files are written in fp32", dtype_names[dtype]);
    const char *ztok = NULL;
    char zbuf[4096];
    adapters_vocab_or_die(&m, adapters, na, 0, &ztok, zbuf, sizeof(zbuf));
    Lora lo;
    load_adapters_or_die(&lo, na, adapters, &m.config);
    lora_merge(&m, &lo, 1);
    if (lo.embed || lo.lm_head) { // modules_to_save: the adapter's full weights replace the model's
        size_t nb = (size_t)m.config.vocab_size * m.config.dim * sizeof(floatX);
        int same = lo.embed && lo.lm_head && !memcmp(lo.embed, lo.lm_head, nb); // new tokens on a tied base: one matrix
        if (m.config.tied && !same) fatal("%s: modules_to_save cannot be merged into a model with tied embeddings", adapters[0]);
        if (same && m.config.tied) { free(lo.lm_head); lo.lm_head = NULL; }
        size_t n = (size_t)m.config.vocab_size * m.config.dim * sizeof(floatX);
        if (lo.embed) memcpy(m.params.embed, lo.embed, n);
        if (lo.lm_head) memcpy(m.params.wcls, lo.lm_head, n);
    }
    int rc;
    if (m.format == FMT_HF) {
        rc = model_save_hf(&m, out, dtype >= 0 ? dtype : m.hf_dtype);
        const char *extra[] = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "generation_config.json" };
        if (!rc) for (size_t k = 0; k < sizeof(extra) / sizeof(extra[0]); k++) copy_file_if_exists(model_path, out, extra[k]);
        if (!rc && ztok) { // new tokens: the adapter's tokenizer.json replaces the base's
            char d[4096];
            snprintf(d, sizeof(d), "%s", ztok);
            char *slash = strrchr(d, '/');
            if (slash) { *slash = 0; copy_file_if_exists(d, out, slash + 1); }
        }
    } else if (requant) rc = model_save_quant(&m, out, rq_type, rq_embed, rq_dq, rq_bs, 0);
    else rc = model_save_bin(&m, out, m.format == FMT_BIN_LEGACY);
    if (rc) fatal_error();
    if (requant) fprintf(stderr, "%s is %s-quantized: dequantized, merged and requantized to %s (--dtype f32 writes a float model)\n", model_path, qtype_names[rq_type], qtype_names[rq_type]);
    else if (m.format == FMT_BIN_V1 && dtype >= 0) fprintf(stderr, "%s is quantized: dequantized and merged; written as a float model (--dtype)\n", model_path);
    fprintf(stderr, "merged %d adapter%s into %s -> %s (%s)\n", na, na > 1 ? "s" : "", model_path, out, requant ? qtype_names[rq_type] :
            m.format == FMT_HF ? dtype_names[dtype >= 0 ? dtype : m.hf_dtype] : m.format == FMT_BIN_LEGACY ? "llama2.c legacy .bin" : "llama2.c v1 .bin");
    lora_free(&lo); model_free(&m);
    return 0;
}

// ---- info
static int cmd_info(int argc, char **argv) {
    if (argc != 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        fprintf(stderr, "Usage: peft info PATH\n  What a model (.bin or folder), adapter folder or .safetensors file holds; for a model,\n"
                        "  also the CPU kernels this build's generation uses (fp32 and int8 matvec).\n");
        exit(1);
    }
    const char *path = argv[0];
    char p2[4096];
    path_join(p2, sizeof(p2), path, "adapter_config.json");
    if (dir_exists(path) && file_exists(p2)) {
        Json *j = json_load(p2);
        if (!j) fatal_error();
        Json *tm = json_get(j, "target_modules");
        printf("adapter %s: peft_type %s, r %g, lora_alpha %g, use_rslora %s, use_dora %s, dropout %g\n", path, json_str(json_get(j, "peft_type")) ? json_str(json_get(j, "peft_type")) : "?",
               json_num_or(j, "r", 0), json_num_or(j, "lora_alpha", 0), json_bool_or(j, "use_rslora", 0) ? "true" : "false", json_bool_or(j, "use_dora", 0) ? "true" : "false", json_num_or(j, "lora_dropout", 0));
        printf("target_modules:");
        if (tm && tm->type == JSON_ARRAY) for (int i = 0; i < tm->n; i++) printf(" %s", json_str(&tm->items[i]) ? json_str(&tm->items[i]) : "?");
        else if (json_str(tm)) printf(" %s", json_str(tm));
        printf("\n");
        json_free(j);
        path_join(p2, sizeof(p2), path, "adapter_model.safetensors");
        path = p2;
    } else if (dir_exists(path) || (file_exists(path) && !strstr(path, ".safetensors"))) {
        Model m;
        load_model_or_die(&m, path);
        Config *c = &m.config;
        const char *fmt[] = { "llama2.c legacy .bin", "llama2.c v1 .bin (fp32)", "llama2.c v2 .bin (int8 groups of 64)", "Hugging Face folder", "peft.c 4-bit .bin" };
        printf("model %s: %s%s%s\n", path, fmt[m.format], m.format == FMT_HF ? ", weights " : "", m.format == FMT_HF ? dtype_names[m.hf_dtype] : "");
        if (m.quant) printf("quantized: %s linear weights%s, embeddings %s\n", qtype_names[m.quant], m.quant_dq ? " (double-quantized absmax)" : "", m.quant_embed ? qtype_names[m.quant] : "fp32");
        printf("family %s%s%s%s%s%s%s%s\n", family_arch[c->family], c->attn_bias ? ", q/k/v biases" : "", c->qk_norm ? ", q/k norms" : "", c->norm_offset ? ", (1 + w) norms" : "",
               c->post_norms ? ", post-attention/MLP norms" : "", c->geglu ? ", GeGLU" : "", c->attn_softcap > 0 || c->final_softcap > 0 ? ", soft-capping" : "", c->family == FAM_PHI3 ? ", fused qkv_proj/gate_up_proj" : "");
        if (c->sliding_window) {
            int ns = 0;
            for (int l = 0; l < c->n_layers; l++) ns += c->layer_sliding[l];
            printf("sliding window %d on %d of %d layers%s\n", c->sliding_window, ns, c->n_layers, c->rope_local_theta > 0 ? " (their RoPE base: rope_local_base_freq)" : "");
        }
        printf("dim %d, hidden %d, layers %d, heads %d, kv heads %d, head_dim %d, vocab %d, max positions %d, rope_theta %g%s, rms_norm_eps %g, tied classifier %s\n",
               c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->seq_len, c->rope_theta, c->rope_llama3 ? " (llama3 scaling)" : c->rope_linear > 0 ? " (linear scaling)" : c->rope_longrope ? " (longrope scaling)" : "", c->norm_eps, c->tied ? "yes" : "no");
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
            if (!m.param_sizes[i]) continue;
            char tn[64];
            const char *hn = param_per_layer(i) ? hf_layer_name(c, i) : i == 0 ? "embed_tokens.weight" : i == 10 ? "norm.weight" : "lm_head.weight";
            snprintf(tn, sizeof(tn), "%s", hn);
            if (strlen(tn) > 7 && !strcmp(tn + strlen(tn) - 7, ".weight")) tn[strlen(tn) - 7] = 0;
            printf("  %-34s %12zu\n", tn, m.param_sizes[i]);
        }
        size_t nq = 0;
        if (m.quant) {
            size_t per[NUM_TARGETS] = { 0 };
            for (int i = 0; i < m.config.n_layers * NUM_TARGETS; i++) per[i % NUM_TARGETS] += m.qw[i].n;
            for (int t = 0; t < NUM_TARGETS; t++) { printf("  %-26s %12zu %s\n", target_names[t], per[t], qtype_names[m.quant]); nq += per[t]; }
            if (m.quant_embed) { printf("  %-26s %12zu %s\n", "embed_tokens", m.qembed.n, qtype_names[m.quant]); nq += m.qembed.n + m.qcls.n; }
            if (m.quant_embed && m.qcls.n) printf("  %-26s %12zu %s\n", "lm_head", m.qcls.n, qtype_names[m.quant]);
            printf("quantized weights: %.2f MB\n", model_quant_bytes(&m) / 1e6);
        }
        printf("parameters: %zu (%.2fM)\n", m.num_parameters + nq, (m.num_parameters + nq) / 1e6);
        printf("generation kernels (this build, CPU): fp32 matvec %s; int8 matvec %s\n", MATVEC_KERNEL, QMATVEC_KERNEL);
        model_free(&m);
        return 0;
    }
    SafeTensors st;
    if (st_open(&st, path)) fatal_error();
    size_t total = 0;
    printf("%s: %d tensors\n", path, st.n);
    for (int i = 0; i < st.n; i++) {
        STTensor *t = &st.t[i];
        printf("  %-72s %-4s [", t->name, dtype_names[t->dtype]);
        for (int d = 0; d < t->ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
        printf("]\n");
        total += t->numel;
    }
    printf("parameters: %zu\n", total);
    st_close(&st);
    return 0;
}

#ifndef PEFT_INFER
// ---- quantize
static void error_usage_quantize(void) {
    fprintf(stderr, "Usage: peft quantize MODEL -o OUT --quant int8|int4|nf4|hqq4|hqq8 [options]\n"
                    "       peft quantize --random SHAPE -o OUT --quant T [-s SEED]   (a random model, for benchmarks)\n"
                    "  Writes a quantized model file that every command loads directly: int8 as a llama2.c version 2\n"
                    "  .bin (groups of 64, embeddings included), int4/nf4 as peft.c version 3/4 .bin, hqq4/hqq8 as\n"
                    "  peft.c version 5. MODEL is read and quantized one matrix at a time (a float copy of the model\n"
                    "  never exists).\n"
                    "  -o OUT        output .bin (required)\n"
                    "  --quant T     int8 | int4 | nf4 | hqq4 | hqq8 (required)\n"
                    "  --quant-embeddings  int4/nf4/hqq: quantize the embedding and classifier too (default: fp32)\n"
                    "  --double-quant      nf4: double-quantize the block absmax values (bitsandbytes')\n"
                    "  --group-size N      hqq: weights per scale/zero group (default 64)\n"
                    "  --random SHAPE      no MODEL: write a model of random weights (uniform, std 0.02; norms 1) straight into\n"
                    "                      the quantized file, one matrix at a time: llama2-7b | llama2-13b | llama2-70b, or\n"
                    "                      dim=D,hidden=H,layers=L,heads=NH[,kv_heads=KVH][,vocab=V][,seq_len=S] (untied)\n"
                    "  -s SEED             --random's seed (default 1337)\n");
    exit(1);
}
// quantize --random: llama2-7b | llama2-13b | llama2-70b, or dim=,hidden=,layers=,heads=,kv_heads=,vocab=,seq_len=
// (kv_heads defaults to heads, vocab to 32000, seq_len to 4096); head_dim = dim / heads; classifier untied
static void parse_shape(Config *c, const char *s) {
    memset(c, 0, sizeof(*c));
    config_defaults(c);
    c->vocab_size = 32000; c->seq_len = 4096;
    if (!strcmp(s, "llama2-7b")) { c->dim = 4096; c->hidden_dim = 11008; c->n_layers = 32; c->n_heads = c->n_kv_heads = 32; }
    else if (!strcmp(s, "llama2-13b")) { c->dim = 5120; c->hidden_dim = 13824; c->n_layers = 40; c->n_heads = c->n_kv_heads = 40; }
    else if (!strcmp(s, "llama2-70b")) { c->dim = 8192; c->hidden_dim = 28672; c->n_layers = 80; c->n_heads = 64; c->n_kv_heads = 8; }
    else {
        char buf[512];
        snprintf(buf, sizeof(buf), "%s", s);
        for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
            char *eq = strchr(t, '=');
            if (!eq) fatal("--random: '%s' is not name=value (or llama2-7b, llama2-13b, llama2-70b)", t);
            *eq = 0;
            const char *names[7] = { "dim", "hidden", "layers", "heads", "kv_heads", "vocab", "seq_len" };
            int *vals[7] = { &c->dim, &c->hidden_dim, &c->n_layers, &c->n_heads, &c->n_kv_heads, &c->vocab_size, &c->seq_len }, k = 0;
            while (k < 7 && strcmp(t, names[k])) k++;
            if (k == 7) fatal("--random: unknown '%s' (dim, hidden, layers, heads, kv_heads, vocab, seq_len)", t);
            *vals[k] = parse_int("--random", eq + 1, 1, 1 << 20);
        }
        if (!c->n_kv_heads) c->n_kv_heads = c->n_heads;
    }
    if (!c->dim || !c->hidden_dim || !c->n_layers || !c->n_heads || c->dim % c->n_heads || c->n_heads % c->n_kv_heads || (c->dim / c->n_heads) % 2)
        fatal("--random '%s': needs dim, hidden, layers and heads, with dim a multiple of heads (an even head size) and heads of kv_heads", s);
    c->head_dim = c->dim / c->n_heads;
    c->tied = 0;
}
static int cmd_quantize(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *random = NULL;
    uint64_t seed = 1337;
    QuantOpts qo = { -1, 0, 0, 0, 0 };
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) error_usage_quantize();
        else if (!strcmp(argv[i], "--random")) random = next_arg(argc, argv, &i);
        else if (!strcmp(argv[i], "-s")) seed = (uint64_t)parse_int("-s", next_arg(argc, argv, &i), 1, INT_MAX);
        else if (parse_quant_flag(argc, argv, &i, &qo)) {}
        else if (argv[i][0] != '-') { if (model_path) fatal("unexpected argument '%s'", argv[i]); model_path = argv[i]; }
        else if (!strcmp(argv[i], "-o")) out = next_arg(argc, argv, &i);
        else fatal("unknown flag '%s' for quantize (see peft quantize --help)", argv[i]);
    }
    if ((!model_path == !random) || !out || qo.type < 0) error_usage_quantize();
    if (qo.type == QT_NONE) fatal("--quant none: nothing to quantize (merge --dtype f32 writes float models)");
    if (qo.type == QT_INT8) qo.embed = 1;
    Model m;
    double t_load = time_sec();
    if (random) { // the shapes alone: nothing is loaded, each matrix is made, quantized and written in turn
        memset(&m, 0, sizeof(m));
        parse_shape(&m.config, random);
        m.quant_bs = qo.gs > 0 ? qo.gs : qtype_block[qo.type];
        fprintf(stderr, "random model: dim %d, hidden %d, %d layers, %d heads / %d kv, vocab %d, %d positions (seed %llu)\n", m.config.dim, m.config.hidden_dim, m.config.n_layers,
                m.config.n_heads, m.config.n_kv_heads, m.config.vocab_size, m.config.seq_len, (unsigned long long)seed);
    } else load_model_q_or_die(&m, model_path, &qo);
    t_load = time_sec() - t_load;
    double t0 = time_sec();
    if (model_save_quant(&m, out, qo.type, qo.embed, qo.dq, m.quant_bs, random ? seed : 0)) fatal_error();
    char hq[64] = "";
    if (qtype_hqq(qo.type)) snprintf(hq, sizeof(hq), "peft.c v5 %s (group %d)", qtype_names[qo.type], m.quant_bs);
    fprintf(stderr, "wrote %s: %s%s, %s\n", out, qo.type == QT_INT8 ? "llama2.c v2 int8" : qo.type == QT_INT4 ? "peft.c v3 int4" : qo.type == QT_NF4 ? "peft.c v4 nf4" : hq,
            qo.dq ? " (double-quantized absmax)" : "", qo.embed ? "embeddings quantized" : "embeddings fp32");
    fprintf(stderr, "quantization time: load %.2f s, write %.2f s\n", t_load, time_sec() - t0);
    model_free(&m);
    return 0;
}

#endif // PEFT_INFER

static void error_usage(void) {
#ifdef PEFT_INFER
    fprintf(stderr, "peft.c (inference-only build): Llama-family models with PEFT LoRA adapters in one C file\n"
                    "Usage: peft <command> [args]   (peft <command> --help lists its flags)\n"
                    "  generate MODEL [-p PROMPT]     sample text (with -a ADAPTER[:W]...)\n"
                    "  merge MODEL ADAPTER... -o OUT  merge adapters into the weights\n"
                    "  info PATH                      what a model, adapter or .safetensors file holds\n"
                    "MODEL is a llama2.c .bin file or a Hugging Face folder (config.json + safetensors).\n");
#else
    fprintf(stderr, "peft.c: LoRA fine-tuning of Llama-family models in one C file\n"
                    "Usage: peft <command> [args]   (peft <command> --help lists its flags)\n"
                    "  train MODEL DATA [-o OUT]      fine-tune (LoRA, DoRA, freeze, full); writes a PEFT adapter\n"
                    "  generate MODEL [-p PROMPT]     sample text (with -a ADAPTER[:W]...)\n"
                    "  chat MODEL [-a NAME=DIR]...    interactive chat; /adapter, /adapters, /mix, /reset, /quit\n"
                    "  eval MODEL DATA                loss and perplexity over a text\n"
                    "  dump MODEL -i IN -o OUT        logits/loss/gradients for given ids (regression use)\n"
                    "  merge MODEL ADAPTER... -o OUT  merge adapters into the weights\n"
                    "  quantize MODEL -o OUT --quant T  write an int8 (llama2.c v2), int4, nf4, hqq4 or hqq8 model file\n"
                    "  info PATH                      what a model, adapter or .safetensors file holds\n"
                    "  tokenize [-z TOK | MODEL] TEXT the token ids of a text (--pieces, --json, --decode)\n"
                    "  export-gguf ADAPTER -o OUT     write a LoRA adapter for llama.cpp (GGUF)\n"
                    "MODEL is a llama2.c .bin file or a Hugging Face folder (config.json + safetensors).\n");
#endif
    exit(1);
}

// test_all.c includes this file with PEFT_NO_MAIN and calls the CLI as peft_main
#ifdef PEFT_NO_MAIN
int peft_main(int argc, char **argv);
int peft_main(int argc, char **argv) {
#else
int main(int argc, char **argv) {
#endif
    start_sec = time_sec();
#ifdef SIGXFSZ
    signal(SIGXFSZ, SIG_IGN); // past a file size limit (ulimit -f) a write fails (EFBIG) and is reported, not fatal
#endif
    if (argc < 2) error_usage();
    const char *cmd = argv[1];
    if (!strcmp(cmd, "generate")) return kernels_done(cmd_generate(argc - 2, argv + 2));
    if (!strcmp(cmd, "chat")) return kernels_done(cmd_chat(argc - 2, argv + 2));
    if (!strcmp(cmd, "merge")) return cmd_merge(argc - 2, argv + 2);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 2, argv + 2);
#ifndef PEFT_INFER
    if (!strcmp(cmd, "train")) return kernels_done(cmd_train(argc - 2, argv + 2));
    if (!strcmp(cmd, "eval")) return kernels_done(cmd_eval(argc - 2, argv + 2));
    if (!strcmp(cmd, "dump")) return kernels_done(cmd_dump(argc - 2, argv + 2));
    if (!strcmp(cmd, "quantize")) return cmd_quantize(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "export-gguf")) return cmd_export_gguf(argc - 2, argv + 2);
#else
    if (!strcmp(cmd, "train") || !strcmp(cmd, "eval") || !strcmp(cmd, "dump") || !strcmp(cmd, "quantize") || !strcmp(cmd, "tokenize") || !strcmp(cmd, "export-gguf"))
        fatal("'%s' is not in this inference-only build (PEFT_INFER); build peft with plain make", cmd);
#endif
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) error_usage();
    fatal("unknown command '%s' (see peft --help)", cmd);
    return 1;
}
