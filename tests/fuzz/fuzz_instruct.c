// Instruction data (LLaMA-Factory's alpaca and sharegpt datasets): two settings bytes, then the data
// file. The file goes through train_load_examples as `train --format alpaca` and again as `--format
// sharegpt` read it (JSON array or JSONL: load_examples tells them apart by the first character): rows to
// messages, the chat template's render, tokenization with prompt masking, --cutoff-len truncation, the
// held-out split, the vocabulary check and the row length T. Then every example is filled into a batch
// row (examples_fill_row), and the results are checked: example bounds, ids inside the vocabulary,
// targets only where the next token is trained, nothing longer than the cutoff.
// Settings byte 0: bits 0-2 template (mod 6), bits 3-4 tokenizer (the committed sentencepiece-style,
// byte-level and GPT-2 tokenizer.json, llama2.c's tokenizer.bin), bit 5 --train-on-prompt, bits 6-7 row
// length (T from the longest example; -T 8; --cutoff-len 5; -T 16 --cutoff-len 12).
// Byte 1: bits 0-1 --val-frac (0, 0.1, 0.34, 0.9), bit 2 a model vocabulary smaller than the tokenizer's,
// bit 3 --val the same file. Run from the repository root.
#include "fuzz.h"

static Tokenizer itoks[4];
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv; fuzz_init_common();
    const char *paths[4] = { "tests/spbpe/tokenizer.json", "tests/bytebpe/tokenizer.json", "tests/gpt2bpe/tokenizer.json", "tokenizer.bin" };
    for (int i = 0; i < 4; i++) if (tokenizer_load(&itoks[i], paths[i], 0)) { fprintf(stderr, "fuzz_instruct: %s (run from the repository root)\n", peft_errbuf); exit(1); }
    return 0;
}

static void check_examples(const Examples *x, const Config *c, int T, int cutoff, int train_on_prompt) {
    if (x->count < 0 || x->n < 0 || (x->count && !x->start)) abort();
    if (!x->count) return;
    if (x->start[0] != 0 || x->start[x->count] != x->n) abort();
    int longest = 0;
    for (int e = 0; e < x->count; e++) {
        int L = x->start[e + 1] - x->start[e];
        if (L < 0 || L > cutoff) abort();
        if (L > longest) longest = L;
    }
    if (longest > x->max_len) abort(); // (the training side keeps the max_len of all examples after the held-out split)
    for (int i = 0; i < x->n; i++) {
        if (x->tokens[i] < 0 || x->tokens[i] >= c->vocab_size) abort();
        if (x->train[i] > 1 || (train_on_prompt && !x->train[i])) abort();
    }
    int *inp = (int *)malloc_check((size_t)T * sizeof(int)), *tgt = (int *)malloc_check((size_t)T * sizeof(int));
    for (int e = 0; e < x->count; e++) {
        examples_fill_row(x, e, inp, tgt, T);
        int s = x->start[e], L = x->start[e + 1] - s;
        for (int t = 0; t < T; t++) {
            if (inp[t] < 0 || inp[t] >= c->vocab_size || (t < L && inp[t] != x->tokens[s + t])) abort();
            int want = t + 1 < L && x->train[s + t + 1] ? x->tokens[s + t + 1] : -100;
            if (tgt[t] != want) abort();
        }
    }
    free(inp); free(tgt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int b0 = data[0], b1 = data[1];
    const Tokenizer *tok = &itoks[(b0 >> 3) & 3];
    char path[512];
    fuzz_write(fuzz_path(path, sizeof(path), "data.json"), data + 2, size - 2);
    Config c;
    memset(&c, 0, sizeof(c));
    config_defaults(&c);
    c.dim = 64; c.hidden_dim = 172; c.n_layers = 2; c.n_heads = 8; c.n_kv_heads = 4; c.head_dim = 8; c.seq_len = 128; c.tied = 1;
    c.vocab_size = b1 & 4 ? tok->vocab_size / 2 : tok->vocab_size;
    static const float fracs[4] = { 0.0f, 0.1f, 0.34f, 0.9f };
    for (int format = DATA_ALPACA; format <= DATA_SHAREGPT; format++) {
        TrainArgs ta;
        memset(&ta, 0, sizeof(ta));
        ta.data_path = path;
        ta.format = format;
        ta.tpl = (b0 & 7) % NUM_TEMPLATES;
        ta.train_on_prompt = (b0 >> 5) & 1;
        switch (b0 >> 6) { // as main() sets them (--cutoff-len at most T + 1)
        case 1: ta.T = 8; break;
        case 2: ta.cutoff_len = 5; break;
        case 3: ta.T = 16; ta.cutoff_len = 12; break;
        default: break;
        }
        ta.val_frac = fracs[b1 & 3];
        if (b1 & 8) ta.val_path = path;
        int cutoff = ta.cutoff_len ? ta.cutoff_len : (ta.T ? ta.T : c.seq_len) + 1;
        Examples ex, vex;
#if defined(__GLIBC__) // peft.c's stderr lines ("data: ...", UTF-8 warnings) muted; sanitizer and libFuzzer reports do not go through stdio's stderr
        FILE *saved = stderr;
        static FILE *devnull;
        if (!devnull) devnull = fopen("/dev/null", "w");
        if (devnull) stderr = devnull;
#endif
        int rc = train_load_examples(&ta, &c, tok, &ex, &vex);
#if defined(__GLIBC__)
        stderr = saved;
#endif
        if (rc) continue;
        if (ta.T < 1 || ta.T > c.seq_len || ex.count < 1) abort();
        check_examples(&ex, &c, ta.T, cutoff, ta.train_on_prompt);
        check_examples(&vex, &c, ta.T, cutoff, ta.train_on_prompt);
        examples_free(&ex); examples_free(&vex);
    }
    return 0;
}
