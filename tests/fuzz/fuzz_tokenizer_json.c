// Hugging Face tokenizer.json (BPE: vocab, merges, added tokens, normalizers, pre-tokenizers),
// then encode and decode a few strings with it.
#include "fuzz.h"

static const char *texts[] = { "Hello world", "Once upon a time, there was a little girl named Lily.\n\n", "  x  123 4567 it's I'll ",
                               ("\xc3\xbcnic\xc3\xb6" "de \xf0\x9f\x99\x82 \xe2\x96\x81"), "<s> </s> <|endoftext|> <unk>", "\x80\xff\xc3\x28 \xed\xa0\x80", "" };
static void exercise(const Tokenizer *t) {
    int ids[512];
    char out[256];
    for (size_t k = 0; k < sizeof(texts) / sizeof(texts[0]); k++) {
        int n = tokenizer_encode(t, texts[k], strlen(texts[k]), 1, 1, ids, 512);
        for (int i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= t->vocab_size) abort();
            tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], out, sizeof(out));
        }
    }
    for (int id = -1; id <= t->vocab_size && id < 2048; id++) tokenizer_decode(t, id - 1, id, out, sizeof(out));
}

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_init_common(); return 0; }
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_write(fuzz_path(path, sizeof(path), "tokenizer.json"), data, size);
    Tokenizer t;
    if (tokenizer_load(&t, path, 0)) return 0;
    exercise(&t);
    tokenizer_free(&t);
    return 0;
}
