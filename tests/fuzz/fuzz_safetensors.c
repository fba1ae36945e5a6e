// safetensors: header length, JSON header, tensor table (dtype, shape, offsets, overlaps), tensor reads.
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_init_common(); return 0; }
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_write(fuzz_path(path, sizeof(path), "t.safetensors"), data, size);
    SafeTensors st;
    if (st_open(&st, path)) return 0;
    for (int i = 0; i < st.n; i++) {
        STTensor *t = &st.t[i];
        if (st_find(&st, t->name) == NULL) abort();
        if (t->numel > (1u << 20)) continue;
        if (t->dtype == DT_F32 || t->dtype == DT_F16 || t->dtype == DT_BF16 || t->dtype == DT_F64) {
            floatX *x = (floatX *)malloc_check(t->numel * sizeof(floatX));
            st_read_floatX(&st, t, x, NULL);
            free(x);
        } else {
            void *raw = malloc_check(t->end - t->begin);
            st_read_raw(&st, t, raw);
            free(raw);
        }
    }
    st_close(&st);
    return 0;
}
