// PEFT adapter folder (adapter_config.json, FUZZ_SEP, adapter_model.safetensors) against a tiny model:
// stories260K's config (dim 64, hidden 172, 5 layers, 8 heads / 4 kv, vocab 512), so that the real
// PEFT adapters of ../shared/reference/peft are seeds.
#include "fuzz.h"

static Config cfg;
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv; fuzz_init_common();
    memset(&cfg, 0, sizeof(cfg));
    config_defaults(&cfg);
    cfg.dim = 64; cfg.hidden_dim = 172; cfg.n_layers = 5; cfg.n_heads = 8; cfg.n_kv_heads = 4; cfg.head_dim = 8; cfg.vocab_size = 512; cfg.seq_len = 512; cfg.tied = 1;
    return 0;
}
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *a, *b;
    size_t an, bn;
    fuzz_split(data, size, &a, &an, &b, &bn);
    char dir[512], p[600];
    fuzz_path(dir, sizeof(dir), "adapter");
    mkdir(dir, 0700);
    snprintf(p, sizeof(p), "%s/adapter_config.json", dir); fuzz_write(p, a, an);
    snprintf(p, sizeof(p), "%s/adapter_model.safetensors", dir); fuzz_write(p, b, bn);
    Lora lo;
    LoraConfig lc;
    if (!lora_load(&lo, &lc, &cfg, dir, size & 1)) {
        for (int i = 0; i < cfg.n_layers * NUM_TARGETS; i++) if (lo.mods[i].r < 0 || lo.mods[i].r > 65536) abort();
        lora_free(&lo);
        free(lc.layers);
    }
    return 0;
}
