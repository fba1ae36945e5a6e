// Hugging Face tokenizer.json (BPE: vocab, merges, added tokens, normalizers, pre-tokenizers),
// then encode and decode a few strings with it.
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_init_common(); return 0; }
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_write(fuzz_path(path, sizeof(path), "tokenizer.json"), data, size);
    Tokenizer t;
    if (tokenizer_load(&t, path, 0)) return 0;
    fuzz_exercise_tokenizer(&t);
    tokenizer_free(&t);
    return 0;
}
