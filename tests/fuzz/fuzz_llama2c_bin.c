// llama2.c checkpoints: legacy (7 int32), v1 (fp32), v2 (int8), and peft.c's v3 (int4) and v4 (nf4):
// header, size checks, tensor reads, RoPE permutation, quantization on load. input size % 4 picks
// the quantization asked for: as stored, float, int4, nf4 with double quantization.
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_init_common(); return 0; }
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_write(fuzz_path(path, sizeof(path), "model.bin"), data, size);
    QuantOpts opts[4] = { { -1, 0, 0, 0, 0 }, { QT_NONE, 0, 0, 0, 0 }, { QT_INT4, 0, 0, 0, 0 }, { QT_NF4, 1, 1, 0, 0 } };
    Model m;
    if (!model_load_q(&m, path, &opts[size % 4])) model_free(&m);
    return 0;
}
