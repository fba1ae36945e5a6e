// tests/fuzz/fuzz_all.c: every target in one libFuzzer binary (one build instead of eleven); the name it is
// run as picks the target: tests/fuzz/bin/fuzz_json is a link to fuzz_all, and so on (or PEFT_FUZZ_TARGET=json).
#include "fuzz.h"

#define LLVMFuzzerInitialize fuzz_json_init
#define LLVMFuzzerTestOneInput fuzz_json_one
int fuzz_json_init(int *argc, char ***argv);
int fuzz_json_one(const uint8_t *data, size_t size);
#include "fuzz_json.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize fuzz_safetensors_init
#define LLVMFuzzerTestOneInput fuzz_safetensors_one
int fuzz_safetensors_init(int *argc, char ***argv);
int fuzz_safetensors_one(const uint8_t *data, size_t size);
#include "fuzz_safetensors.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize fuzz_hf_config_init
#define LLVMFuzzerTestOneInput fuzz_hf_config_one
int fuzz_hf_config_init(int *argc, char ***argv);
int fuzz_hf_config_one(const uint8_t *data, size_t size);
#include "fuzz_hf_config.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize fuzz_hf_model_init
#define LLVMFuzzerTestOneInput fuzz_hf_model_one
int fuzz_hf_model_init(int *argc, char ***argv);
int fuzz_hf_model_one(const uint8_t *data, size_t size);
#include "fuzz_hf_model.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize fuzz_tokenizer_json_init
#define LLVMFuzzerTestOneInput fuzz_tokenizer_json_one
int fuzz_tokenizer_json_init(int *argc, char ***argv);
int fuzz_tokenizer_json_one(const uint8_t *data, size_t size);
#include "fuzz_tokenizer_json.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize fuzz_tokenizer_bin_init
#define LLVMFuzzerTestOneInput fuzz_tokenizer_bin_one
int fuzz_tokenizer_bin_init(int *argc, char ***argv);
int fuzz_tokenizer_bin_one(const uint8_t *data, size_t size);
#include "fuzz_tokenizer_bin.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize fuzz_llama2c_bin_init
#define LLVMFuzzerTestOneInput fuzz_llama2c_bin_one
int fuzz_llama2c_bin_init(int *argc, char ***argv);
int fuzz_llama2c_bin_one(const uint8_t *data, size_t size);
#include "fuzz_llama2c_bin.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize fuzz_adapter_init
#define LLVMFuzzerTestOneInput fuzz_adapter_one
int fuzz_adapter_init(int *argc, char ***argv);
int fuzz_adapter_one(const uint8_t *data, size_t size);
#include "fuzz_adapter.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize fuzz_trainer_state_init
#define LLVMFuzzerTestOneInput fuzz_trainer_state_one
int fuzz_trainer_state_init(int *argc, char ***argv);
int fuzz_trainer_state_one(const uint8_t *data, size_t size);
#include "fuzz_trainer_state.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize fuzz_text_init
#define LLVMFuzzerTestOneInput fuzz_text_one
int fuzz_text_init(int *argc, char ***argv);
int fuzz_text_one(const uint8_t *data, size_t size);
#include "fuzz_text.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize fuzz_instruct_init
#define LLVMFuzzerTestOneInput fuzz_instruct_one
int fuzz_instruct_init(int *argc, char ***argv);
int fuzz_instruct_one(const uint8_t *data, size_t size);
#include "fuzz_instruct.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

typedef struct { const char *name; int (*init)(int *, char ***); int (*one)(const uint8_t *, size_t); } FuzzTarget;
static const FuzzTarget fuzz_targets[] = {
    { "json", fuzz_json_init, fuzz_json_one },
    { "safetensors", fuzz_safetensors_init, fuzz_safetensors_one },
    { "hf_config", fuzz_hf_config_init, fuzz_hf_config_one },
    { "hf_model", fuzz_hf_model_init, fuzz_hf_model_one },
    { "tokenizer_json", fuzz_tokenizer_json_init, fuzz_tokenizer_json_one },
    { "tokenizer_bin", fuzz_tokenizer_bin_init, fuzz_tokenizer_bin_one },
    { "llama2c_bin", fuzz_llama2c_bin_init, fuzz_llama2c_bin_one },
    { "adapter", fuzz_adapter_init, fuzz_adapter_one },
    { "trainer_state", fuzz_trainer_state_init, fuzz_trainer_state_one },
    { "text", fuzz_text_init, fuzz_text_one },
    { "instruct", fuzz_instruct_init, fuzz_instruct_one },
};
static const FuzzTarget *fuzz_target;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *name = getenv("PEFT_FUZZ_TARGET"), *self = (*argv)[0], *slash = strrchr(self, '/');
    if (!name) name = slash ? slash + 1 : self;
    if (!strncmp(name, "fuzz_", 5)) name += 5;
    for (size_t i = 0; i < sizeof(fuzz_targets) / sizeof(fuzz_targets[0]); i++) if (!strcmp(name, fuzz_targets[i].name)) fuzz_target = &fuzz_targets[i];
    if (!fuzz_target) { fprintf(stderr, "fuzz_all: run as fuzz_<target> or with PEFT_FUZZ_TARGET=<target>; '%s' is none of them\n", name); exit(1); }
    return fuzz_target->init(argc, argv);
}
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_target->one(data, size); }
