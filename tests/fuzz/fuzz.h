// tests/fuzz/fuzz.h: shared by the libFuzzer targets (one parser each, fuzz_<name>.c).
// Each target includes peft.c whole (as test_all.c does) and feeds the input to one loader
// through a file in a private temporary folder, since the loaders read files.
// Build: make fuzz (clang -fsanitize=fuzzer,address,undefined); see tests/fuzz/README.md.
#define PEFT_NO_MAIN
#include "../../peft.c"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char fuzz_dir[256];

// the folder (made once; removed at exit) and a file in it
static const char *fuzz_path(char *buf, size_t n, const char *name) {
    if (!fuzz_dir[0]) {
        snprintf(fuzz_dir, sizeof(fuzz_dir), "/tmp/peft_fuzz_%d", (int)getpid());
        mkdir(fuzz_dir, 0700);
    }
    snprintf(buf, n, "%s/%s", fuzz_dir, name);
    return buf;
}
static void fuzz_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "fuzz: cannot write %s\n", path); abort(); }
    if (n && fwrite(data, 1, n, f) != n) abort();
    fclose(f);
}

// Inputs made of two files (adapter: adapter_config.json + adapter_model.safetensors, ...) are
// the first file, the separator, then the second; no separator: all of it is the second file.
#define FUZZ_SEP "\n--peft-fuzz-next-file--\n"
static void fuzz_split(const uint8_t *data, size_t size, const uint8_t **a, size_t *an, const uint8_t **b, size_t *bn) {
    size_t sl = sizeof(FUZZ_SEP) - 1;
    for (size_t i = 0; i + sl <= size; i++)
        if (data[i] == '\n' && !memcmp(data + i, FUZZ_SEP, sl)) { *a = data; *an = i; *b = data + i + sl; *bn = size - i - sl; return; }
    *a = data; *an = 0; *b = data; *bn = size;
}

// The sanitizers make allocations slow and large ones fatal (-rss_limit_mb): the memory check
// refuses models above 256 MiB, which is what a loader must do on a smaller machine anyway.
static void fuzz_init_common(void) { setenv("PEFT_MEM_LIMIT", "256M", 1); }
