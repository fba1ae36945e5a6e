// Hugging Face config.json -> model Config (sizes, GQA, head_dim, rope_theta / rope_scaling / rope_parameters).
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_init_common(); return 0; }
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Json *j = json_parse((const char *)data, size, "config.json");
    if (!j) return 0;
    Config c;
    if (!config_from_hf(&c, j, "config.json")) {
        // what the loaders do next with a valid config
        if (c.dim <= 0 || c.n_heads <= 0 || c.n_heads % c.n_kv_heads) abort();
        volatile double need = model_need_bytes(&c, QT_NONE, 0, 0, 0) + model_need_bytes(&c, QT_NF4, 1, 1, 0);
        (void)need;
        for (int t = 0; t < NUM_TARGETS; t++) { int in, out; target_dims(&c, t, &in, &out); if (in <= 0 || out <= 0) abort(); }
    }
    json_free(j);
    return 0;
}
