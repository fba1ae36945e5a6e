// A training checkpoint's trainer_state.json, FUZZ_SEP, optimizer.safetensors (AdamW moments), as --resume reads them.
// The settings compared against (batch, seq_len, grad_accum, trainable count) come from the input when
// they are small, so that the reader gets past the comparison and reads the moments.
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_init_common(); return 0; }
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *a, *b;
    size_t an, bn;
    fuzz_split(data, size, &a, &an, &b, &bn);
    char dir[512], p[600];
    fuzz_path(dir, sizeof(dir), "ckpt");
    mkdir(dir, 0700);
    snprintf(p, sizeof(p), "%s/trainer_state.json", dir); fuzz_write(p, a, an);
    snprintf(p, sizeof(p), "%s/optimizer.safetensors", dir); fuzz_write(p, b, bn);
    TrainArgs ta;
    memset(&ta, 0, sizeof(ta));
    ta.mode = TUNE_LORA; ta.B = 2; ta.T = 32; ta.grad_accum = 1;
    size_t total = 64;
    Json *j = json_parse((const char *)a, an, "trainer_state.json");
    if (j) {
        double v = json_num_or(j, "batch_size", 2); if (v >= 1 && v <= 64) ta.B = (int)v;
        v = json_num_or(j, "seq_len", 32); if (v >= 1 && v <= 4096) ta.T = (int)v;
        v = json_num_or(j, "grad_accum", 1); if (v >= 1 && v <= 64) ta.grad_accum = (int)v;
        v = json_num_or(j, "trainable", 64); if (v >= 1 && v <= (1 << 20)) total = (size_t)v;
        json_free(j);
    }
    Trainable tr;
    memset(&tr, 0, sizeof(tr));
    tr.total = total;
    tr.m = (floatX *)calloc_check(total, sizeof(floatX));
    tr.v = (floatX *)calloc_check(total, sizeof(floatX));
    int step; uint64_t drng, prng;
    load_trainer_state(dir, &ta, &tr, &step, &drng, &prng);
    free(tr.m); free(tr.v);
    return 0;
}
