// JSON (RFC 8259) parser. Oracle: a parsed value, written back and parsed again, is the same value.
#include "fuzz.h"

static void json_write(StrBuf *b, const Json *j) {
    switch (j->type) {
        case JSON_NULL: sb_puts(b, "null"); break;
        case JSON_TRUE: sb_puts(b, "true"); break;
        case JSON_FALSE: sb_puts(b, "false"); break;
        case JSON_NUMBER: sb_printf(b, "%.17g", j->num); break;
        case JSON_STRING: sb_json_string(b, j->str); break;
        default:
            sb_puts(b, j->type == JSON_ARRAY ? "[" : "{");
            for (int i = 0; i < j->n; i++) {
                if (i) sb_puts(b, ",");
                if (j->type == JSON_OBJECT) { sb_json_string(b, j->keys[i]); sb_puts(b, ":"); }
                json_write(b, &j->items[i]);
            }
            sb_puts(b, j->type == JSON_ARRAY ? "]" : "}");
    }
}
static int has_nul(const Json *j) { // sb_json_string stops at a NUL inside a string: skip the oracle then
    if (j->type == JSON_STRING) return memchr(j->str, 0, j->len) != NULL;
    for (int i = 0; (j->type == JSON_ARRAY || j->type == JSON_OBJECT) && i < j->n; i++) if (has_nul(&j->items[i])) return 1;
    return 0;
}
static int json_same(const Json *a, const Json *b) {
    if (a->type != b->type) return 0;
    if (a->type == JSON_NUMBER) return a->num == b->num;
    if (a->type == JSON_STRING) return a->len == b->len && !memcmp(a->str, b->str, a->len);
    if (a->type != JSON_ARRAY && a->type != JSON_OBJECT) return 1;
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++) {
        if (a->type == JSON_OBJECT && strcmp(a->keys[i], b->keys[i])) return 0;
        if (!json_same(&a->items[i], &b->items[i])) return 0;
    }
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) { (void)argc; (void)argv; fuzz_init_common(); return 0; }
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Json *j = json_parse((const char *)data, size, "fuzz.json");
    if (!j) { if (!peft_errbuf[0]) abort(); return 0; }
    if (!has_nul(j)) {
        StrBuf b = { 0 };
        json_write(&b, j);
        Json *k = json_parse(b.s, b.n, "rewritten.json");
        if (!k || !json_same(j, k)) { fprintf(stderr, "round trip changed the value: %s\n", b.s); abort(); }
        json_free(k);
        free(b.s);
    }
    json_free(j);
    return 0;
}
