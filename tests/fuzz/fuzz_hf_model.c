// A Hugging Face folder: config.json + model.safetensors -> a loaded model (input: config, FUZZ_SEP, safetensors).
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_init_common(); return 0; }
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *a, *b;
    size_t an, bn;
    fuzz_split(data, size, &a, &an, &b, &bn);
    char dir[512], p[600];
    fuzz_path(dir, sizeof(dir), "hf");
    mkdir(dir, 0700);
    snprintf(p, sizeof(p), "%s/config.json", dir); fuzz_write(p, a, an);
    snprintf(p, sizeof(p), "%s/model.safetensors", dir); fuzz_write(p, b, bn);
    Model m;
    if (!model_load(&m, dir)) model_free(&m);
    return 0;
}
