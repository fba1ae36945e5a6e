// tests/fuzz/fuzz.h: shared by the libFuzzer targets (one parser each, fuzz_<name>.c).
// Each target includes peft.c whole (as test_all.c does) and feeds the input to one loader
// through a file in a private temporary folder, since the loaders read files.
// Build: make fuzz (clang -fsanitize=fuzzer,address,undefined); see tests/fuzz/README.md.
#ifndef PEFT_FUZZ_H
#define PEFT_FUZZ_H
#define PEFT_NO_MAIN
#include "../../peft.c"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char fuzz_dir[256];

static void fuzz_rm(const char *path, int depth) { // the folder and what it holds (two levels deep at most)
    DIR *d = depth < 2 ? opendir(path) : NULL;
    struct dirent *e;
    char p[1024];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
        if (dir_exists(p)) fuzz_rm(p, depth + 1); else remove(p);
    }
    if (d) closedir(d);
    rmdir(path);
}
static void fuzz_cleanup(void) { if (fuzz_dir[0]) fuzz_rm(fuzz_dir, 0); }

// the folder (made once; removed at exit) and a file in it
static const char *fuzz_path(char *buf, size_t n, const char *name) {
    if (!fuzz_dir[0]) {
        const char *tmp = getenv("TMPDIR"); // a tmpfs (TMPDIR=/dev/shm) keeps the file-reading targets off the disk
        snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/peft_fuzz_%d", tmp && *tmp ? tmp : "/tmp", (int)getpid());
        mkdir(fuzz_dir, 0700);
        atexit(fuzz_cleanup);
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

// tokenizer targets: encode and decode a few strings with a loaded tokenizer
static const char *fuzz_texts[] = { "Hello world", "Once upon a time, there was a little girl named Lily.\n\n", "  x  123 4567 it's I'll ",
                                    ("\xc3\xbcnic\xc3\xb6" "de \xf0\x9f\x99\x82 \xe2\x96\x81"), "<s> </s> <|endoftext|> <unk>", "\x80\xff\xc3\x28 \xed\xa0\x80",
                                    ("C\xcc\xa7" "a e\xcc\x81\xcc\xa3 \xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab \xea\xb0\x80\xcc\x88 the-final--countdown [CLS] my name  <start_of_turn>"), "" };
static void fuzz_exercise_tokenizer(const Tokenizer *t) {
    int ids[512];
    char out[256];
    for (size_t k = 0; k < sizeof(fuzz_texts) / sizeof(fuzz_texts[0]); k++) {
        int n = tokenizer_encode(t, fuzz_texts[k], strlen(fuzz_texts[k]), 1, 1, ids, 512);
        for (int i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= t->vocab_size) abort();
            tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], out, sizeof(out));
        }
    }
    for (int id = -1; id <= t->vocab_size && id < 2048; id++) tokenizer_decode(t, id - 1, id, out, sizeof(out));
}
#endif
