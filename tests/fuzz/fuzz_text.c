// Training text (documents split at blank lines, each tokenized with BOS) through the committed
// tokenizers; the first byte picks the tokenizer (sentencepiece-style, byte-level, GPT-2),
// the rest is the text file. Tokens are decoded back. Run from the repository root.
#include "fuzz.h"

static Tokenizer toks[3];
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv; fuzz_init_common();
    const char *paths[3] = { "tests/spbpe/tokenizer.json", "tests/bytebpe/tokenizer.json", "tests/gpt2bpe/tokenizer.json" };
    for (int i = 0; i < 3; i++) if (tokenizer_load(&toks[i], paths[i], 0)) { fprintf(stderr, "fuzz_text: %s (run from the repository root)\n", peft_errbuf); exit(1); }
    return 0;
}
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const Tokenizer *t = &toks[data[0] % 3];
    char path[512], out[256];
    fuzz_write(fuzz_path(path, sizeof(path), "data.txt"), data + 1, size - 1);
    int n;
    int *ids = tokenize_file(t, path, &n);
    if (!ids) return 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab_size) abort();
        tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], out, sizeof(out));
    }
    free(ids);
    return 0;
}
