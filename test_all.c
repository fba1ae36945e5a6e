// test_all.c: the test suite. Includes peft.c (llm.c's test_gpt2.c pattern) so every function is reachable.
// Built twice by `make test`: test_all (fp32: reference comparisons, formats, CLI, hostile inputs) and
// test_all_fp64 (-DPEFT_FP64: finite-difference gradient checks in double precision). test_all runs
// test_all_fp64 and folds its counts into the last line: "N passed, N failed, N skipped".
#define PEFT_NO_MAIN
#include "peft.c"

static int n_pass, n_fail, n_skip;
static void check(int ok, const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s %s: ", ok ? "PASS" : "FAIL", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (ok) n_pass++; else n_fail++;
}
#ifndef PEFT_FP64
static void skip(const char *name, const char *why) { printf("SKIP %s: %s\n", name, why); fflush(stdout); n_skip++; }
#endif

// max(m, d) with NaN as the worst (fmax would drop a NaN difference; gcc 12 for aarch64 also crashes
// vectorising fmax reductions)
MAYBE_UNUSED static double max_err(double m, double d) { return (d > m || d != d) ? d : m; }
static double rel_err(const double *a, const double *b, size_t n) { // ||a-b|| / ||b||
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) { num += (a[i] - b[i]) * (a[i] - b[i]); den += b[i] * b[i]; }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// ----------------------------------------------------------------------------
// finite-difference gradient checks (fp64 build)
#ifdef PEFT_FP64

static uint64_t fd_rng = 1234;
static void fill_random(floatX *x, size_t n, double scale) { for (size_t i = 0; i < n; i++) x[i] = (2 * random_f32(&fd_rng) - 1) * scale; }

// Checks d(sum(out * R))/d(param) of an op against central differences on every element of param.
typedef void (*fd_fn)(void *ctx);
typedef struct { floatX *out; size_t nout; const floatX *R; } FDObjective;
static double fd_objective(FDObjective *o) { double s = 0; for (size_t i = 0; i < o->nout; i++) s += o->out[i] * o->R[i]; return s; }

static void fd_compare(const char *name, floatX *param, size_t n, const floatX *analytic, fd_fn forward, void *ctx, FDObjective *o) {
    double *num = (double *)malloc_check(n * sizeof(double)), *ana = (double *)malloc_check(n * sizeof(double));
    double h = 1e-6;
    for (size_t i = 0; i < n; i++) {
        floatX save = param[i];
        param[i] = save + h; forward(ctx); double fp = fd_objective(o);
        param[i] = save - h; forward(ctx); double fm = fd_objective(o);
        param[i] = save;
        num[i] = (fp - fm) / (2 * h);
        ana[i] = analytic[i];
    }
    forward(ctx);
    double e = rel_err(ana, num, n);
    check(e <= 1e-4, name, "relative error %.2e over %zu elements (analytic[0] %.6g, numeric[0] %.6g)", e, n, ana[0], num[0]);
    free(num); free(ana);
}

// --- per-op checks
typedef struct { floatX *out, *inp, *w; int N, C, OC; } MatmulCtx;
static void fd_matmul_fwd(void *p) { MatmulCtx *c = (MatmulCtx *)p; matmul_forward(c->out, c->inp, c->w, c->N, c->C, c->OC); }
static void test_fd_matmul(void) {
    int N = 5, C = 11, OC = 7; // C not a multiple of 8: exercises the tail loop
    MatmulCtx c = { calloc_check(N * OC, sizeof(floatX)), malloc_check(N * C * sizeof(floatX)), malloc_check(OC * C * sizeof(floatX)), N, C, OC };
    floatX *R = malloc_check(N * OC * sizeof(floatX)), *dinp = calloc_check(N * C, sizeof(floatX)), *dw = calloc_check(OC * C, sizeof(floatX));
    fill_random(c.inp, N * C, 1); fill_random(c.w, OC * C, 1); fill_random(R, N * OC, 1);
    FDObjective o = { c.out, (size_t)N * OC, R };
    matmul_backward(dinp, dw, R, c.inp, c.w, N, C, OC);
    fd_compare("fd matmul dinp", c.inp, N * C, dinp, fd_matmul_fwd, &c, &o);
    fd_compare("fd matmul dweight", c.w, OC * C, dw, fd_matmul_fwd, &c, &o);
    free(c.out); free(c.inp); free(c.w); free(R); free(dinp); free(dw);
}

typedef struct { floatX *out, *rstd, *inp, *w; int N, C; } NormCtx;
static void fd_norm_fwd(void *p) { NormCtx *c = (NormCtx *)p; rmsnorm_forward(c->out, c->rstd, c->inp, c->w, c->N, c->C, 1e-5f); }
static void test_fd_rmsnorm(void) {
    int N = 4, C = 9;
    NormCtx c = { malloc_check(N * C * sizeof(floatX)), malloc_check(N * sizeof(floatX)), malloc_check(N * C * sizeof(floatX)), malloc_check(C * sizeof(floatX)), N, C };
    floatX *R = malloc_check(N * C * sizeof(floatX)), *dinp = calloc_check(N * C, sizeof(floatX)), *dw = calloc_check(C, sizeof(floatX));
    fill_random(c.inp, N * C, 1); fill_random(c.w, C, 1); fill_random(R, N * C, 1);
    FDObjective o = { c.out, (size_t)N * C, R };
    fd_norm_fwd(&c);
    rmsnorm_backward(dinp, dw, R, c.inp, c.w, c.rstd, N, C);
    fd_compare("fd rmsnorm dinp", c.inp, N * C, dinp, fd_norm_fwd, &c, &o);
    fd_compare("fd rmsnorm dweight", c.w, C, dw, fd_norm_fwd, &c, &o);
    free(c.out); free(c.rstd); free(c.inp); free(c.w); free(R); free(dinp); free(dw);
}

typedef struct { floatX *out, *inp, *cs, *sn; int B, T, NH, HS; } RopeCtx;
static void fd_rope_fwd(void *p) { RopeCtx *c = (RopeCtx *)p; size_t n = (size_t)c->B * c->T * c->NH * c->HS; memcpy(c->out, c->inp, n * sizeof(floatX)); rope_forward(c->out, c->cs, c->sn, c->B, c->T, c->NH, c->HS, 0); }
static void test_fd_rope(void) {
    Config cfg = { 0 };
    cfg.head_dim = 6; cfg.seq_len = 5; cfg.rope_theta = 10000;
    RopeCtx c = { 0 };
    c.B = 2; c.T = 5; c.NH = 3; c.HS = 6;
    size_t n = (size_t)c.B * c.T * c.NH * c.HS;
    rope_tables(&c.cs, &c.sn, &cfg);
    c.out = malloc_check(n * sizeof(floatX)); c.inp = malloc_check(n * sizeof(floatX));
    floatX *R = malloc_check(n * sizeof(floatX)), *d = malloc_check(n * sizeof(floatX));
    fill_random(c.inp, n, 1); fill_random(R, n, 1);
    memcpy(d, R, n * sizeof(floatX));
    rope_backward(d, c.cs, c.sn, c.B, c.T, c.NH, c.HS);
    FDObjective o = { c.out, n, R };
    fd_compare("fd rope", c.inp, n, d, fd_rope_fwd, &c, &o);
    free(c.out); free(c.inp); free(c.cs); free(c.sn); free(R); free(d);
}

typedef struct { floatX *out, *att, *q, *k, *v; int B, T, NH, KVH, HS; } AttCtx;
static void fd_att_fwd(void *p) { AttCtx *c = (AttCtx *)p; attention_forward(c->out, c->att, c->q, c->k, c->v, c->B, c->T, c->NH, c->KVH, c->HS); }
static void test_fd_attention(void) {
    AttCtx c = { 0 };
    c.B = 2; c.T = 5; c.NH = 4; c.KVH = 2; c.HS = 3;
    size_t nq = (size_t)c.B * c.T * c.NH * c.HS, nk = (size_t)c.B * c.T * c.KVH * c.HS;
    c.out = malloc_check(nq * sizeof(floatX)); c.att = calloc_check((size_t)c.B * c.NH * c.T * c.T, sizeof(floatX));
    c.q = malloc_check(nq * sizeof(floatX)); c.k = malloc_check(nk * sizeof(floatX)); c.v = malloc_check(nk * sizeof(floatX));
    floatX *R = malloc_check(nq * sizeof(floatX)), *dq = calloc_check(nq, sizeof(floatX)), *dk = calloc_check(nk, sizeof(floatX)), *dv = calloc_check(nk, sizeof(floatX));
    floatX *scratch = calloc_check((size_t)c.B * c.NH * c.T, sizeof(floatX));
    fill_random(c.q, nq, 1); fill_random(c.k, nk, 1); fill_random(c.v, nk, 1); fill_random(R, nq, 1);
    fd_att_fwd(&c);
    attention_backward(dq, dk, dv, scratch, R, c.q, c.k, c.v, c.att, c.B, c.T, c.NH, c.KVH, c.HS);
    FDObjective o = { c.out, nq, R };
    fd_compare("fd attention dq", c.q, nq, dq, fd_att_fwd, &c, &o);
    fd_compare("fd attention dk (grouped-query)", c.k, nk, dk, fd_att_fwd, &c, &o);
    fd_compare("fd attention dv (grouped-query)", c.v, nk, dv, fd_att_fwd, &c, &o);
    free(c.out); free(c.att); free(c.q); free(c.k); free(c.v); free(R); free(dq); free(dk); free(dv); free(scratch);
}

typedef struct { floatX *out, *g, *u; size_t n; } SwiCtx;
static void fd_swiglu_fwd(void *p) { SwiCtx *c = (SwiCtx *)p; swiglu_forward(c->out, c->g, c->u, c->n); }
static void test_fd_swiglu(void) {
    size_t n = 20;
    SwiCtx c = { malloc_check(n * sizeof(floatX)), malloc_check(n * sizeof(floatX)), malloc_check(n * sizeof(floatX)), n };
    floatX *R = malloc_check(n * sizeof(floatX)), *dg = calloc_check(n, sizeof(floatX)), *du = calloc_check(n, sizeof(floatX));
    fill_random(c.g, n, 3); fill_random(c.u, n, 1); fill_random(R, n, 1);
    swiglu_backward(dg, du, R, c.g, c.u, n);
    FDObjective o = { c.out, n, R };
    fd_compare("fd swiglu dgate", c.g, n, dg, fd_swiglu_fwd, &c, &o);
    fd_compare("fd swiglu dup", c.u, n, du, fd_swiglu_fwd, &c, &o);
    free(c.out); free(c.g); free(c.u); free(R); free(dg); free(du);
}

typedef struct { floatX *logits, *probs, *losses, *meanloss; int *targets; int N, V; } CECtx;
static void fd_ce_fwd(void *p) {
    CECtx *c = (CECtx *)p;
    memcpy(c->probs, c->logits, (size_t)c->N * c->V * sizeof(floatX));
    int cnt = crossentropy_forward(c->losses, c->probs, c->targets, c->N, c->V);
    double s = 0; for (int i = 0; i < c->N; i++) s += c->losses[i];
    *c->meanloss = s / cnt;
}
static void test_fd_crossentropy(void) {
    int N = 4, V = 7, targets[4] = { 3, -100, 0, 6 }; // one ignored position
    floatX meanloss, one = 1;
    CECtx c = { malloc_check(N * V * sizeof(floatX)), malloc_check(N * V * sizeof(floatX)), malloc_check(N * sizeof(floatX)), &meanloss, targets, N, V };
    fill_random(c.logits, N * V, 2);
    fd_ce_fwd(&c);
    crossentropy_backward(c.probs, targets, (floatX)(1.0 / 3), N, V);
    floatX *d = malloc_check(N * V * sizeof(floatX));
    memcpy(d, c.probs, N * V * sizeof(floatX));
    FDObjective o = { &meanloss, 1, &one };
    fd_compare("fd cross-entropy (with an ignored -100 target)", c.logits, N * V, d, fd_ce_fwd, &c, &o);
    free(c.logits); free(c.probs); free(c.losses); free(d);
}

typedef struct { floatX *out, *inp, *W; LoraModule *m; int N; } LoraCtx;
static void fd_lora_fwd(void *p) {
    LoraCtx *c = (LoraCtx *)p;
    matmul_forward(c->out, c->inp, c->W, c->N, c->m->in, c->m->out); // DoRA reads the base output
    lora_forward(c->out, c->inp, c->W, c->m, c->N, 0.3f, 0, NULL);
}
// LoRA (and DoRA with its weight norm held constant, as PEFT's backward treats it), with and without dropout
static void test_fd_lora(int with_dropout, int dora) {
    int N = 6, in = 10, out = 9, r = 3;
    LoraModule m = { 0 };
    m.r = r; m.in = in; m.out = out; m.scale = 1.7f;
    m.A = malloc_check(r * in * sizeof(floatX)); m.B = malloc_check(out * r * sizeof(floatX));
    m.dA = calloc_check(r * in, sizeof(floatX)); m.dB = calloc_check(out * r, sizeof(floatX));
    m.u = malloc_check(N * r * sizeof(floatX));
    floatX *W = malloc_check(out * in * sizeof(floatX));
    fill_random(W, out * in, 1);
    if (with_dropout) { m.mask = malloc_check(N * in * sizeof(floatX)); for (int i = 0; i < N * in; i++) m.mask[i] = random_f32(&fd_rng) < 0.3f ? 0 : (floatX)(1 / 0.7); }
    lora_scratch_reserve((size_t)N * 16);
    LoraCtx c = { malloc_check(N * out * sizeof(floatX)), malloc_check(N * in * sizeof(floatX)), W, &m, N };
    floatX *R = malloc_check(N * out * sizeof(floatX)), *dinp = calloc_check(N * in, sizeof(floatX));
    fill_random(m.A, r * in, 1); fill_random(m.B, out * r, 1); fill_random(c.inp, N * in, 1); fill_random(R, N * out, 1);
    if (dora) {
        m.mag = malloc_check(out * sizeof(floatX)); m.dmag = calloc_check(out, sizeof(floatX)); m.wnorm = malloc_check(out * sizeof(floatX));
        fill_random(m.mag, out, 1);
        for (int o = 0; o < out; o++) m.mag[o] += 2;
        dora_weight_norm(m.wnorm, W, &m);
        m.wnorm_fixed = 1;
    }
    fd_lora_fwd(&c);
    matmul_backward(dinp, NULL, R, c.inp, W, N, in, out); // the base path, as linear_backward does
    lora_backward(dinp, R, c.inp, W, &m, N);
    FDObjective o = { c.out, (size_t)N * out, R };
    char name[128];
    const char *kind = dora ? "dora" : "lora";
    snprintf(name, sizeof(name), "fd %s dA%s", kind, with_dropout ? " (dropout)" : "");
    fd_compare(name, m.A, r * in, m.dA, fd_lora_fwd, &c, &o);
    snprintf(name, sizeof(name), "fd %s dB%s", kind, with_dropout ? " (dropout)" : "");
    fd_compare(name, m.B, out * r, m.dB, fd_lora_fwd, &c, &o);
    snprintf(name, sizeof(name), "fd %s dinp%s", kind, with_dropout ? " (dropout)" : "");
    fd_compare(name, c.inp, N * in, dinp, fd_lora_fwd, &c, &o);
    if (dora) { snprintf(name, sizeof(name), "fd dora dmagnitude%s", with_dropout ? " (dropout)" : ""); fd_compare(name, m.mag, out, m.dmag, fd_lora_fwd, &c, &o); }
    free(m.A); free(m.B); free(m.dA); free(m.dB); free(m.u); free(m.mask); free(m.mag); free(m.dmag); free(m.wnorm);
    free(W); free(c.out); free(c.inp); free(R); free(dinp);
}

// --- whole-model checks on a tiny random model
static void tiny_config(Config *c) {
    memset(c, 0, sizeof(*c));
    config_defaults(c);
    c->dim = 16; c->hidden_dim = 24; c->n_layers = 2; c->n_heads = 4; c->n_kv_heads = 2; c->head_dim = 4;
    c->vocab_size = 13; c->seq_len = 8; c->tied = 0;
}
static void tiny_model(Model *m, int tied) {
    memset(m, 0, sizeof(*m));
    tiny_config(&m->config);
    m->config.tied = tied;
    model_alloc(m);
    fill_random(m->params_memory, m->num_parameters, 0.5);
    for (int i = 0; i < m->config.n_layers * m->config.dim; i++) { m->params.rms_att[i] += 1; m->params.rms_ffn[i] += 1; }
}

typedef struct { Net *net; Activations *a; const int *inputs, *targets; double loss; } ModelCtx;
static floatX *fd_loss_slot;
static void fd_model_fwd(void *p) { ModelCtx *c = (ModelCtx *)p; peft_forward(c->net, c->a, c->inputs); c->loss = peft_loss(c->a, &c->net->model->config, c->targets); if (fd_loss_slot) *fd_loss_slot = (floatX)c->loss; }

static void test_fd_model(const char *mode, int tied, int checkpoint) {
    Model m;
    tiny_model(&m, tied);
    Config *c = &m.config;
    int B = 2, T = 6, N = B * T;
    int inputs[12], targets[12];
    for (int i = 0; i < N; i++) { inputs[i] = (int)(random_u32(&fd_rng) % c->vocab_size); targets[i] = (int)(random_u32(&fd_rng) % c->vocab_size); }
    targets[3] = -100;
    Lora lora, *lo = NULL;
    int is_lora = !strncmp(mode, "lora", 4);
    if (is_lora) {
        LoraConfig lc = { 0 };
        lc.r = 2; lc.alpha = 3; lc.targets = (1u << NUM_TARGETS) - 1; lc.seed = 7;
        lc.dropout = strstr(mode, "dropout") ? 0.25f : 0;
        lc.dora = strstr(mode, "dora") != NULL;
        lora_create(&lora, c, &lc, 1);
        fill_random(lora.params, lora.num_params, 0.5); // B must not be zero for a meaningful check
        if (lc.dora) lora_init_dora(&lora, &m);
        lo = &lora;
        lora_alloc_acts(lo, N);
        lo->training = 1;
    }
    Net net;
    net_init(&net, &m, lo);
    Activations a;
    acts_alloc(&a, c, B, T, checkpoint);
    ModelCtx ctx = { &net, &a, inputs, targets, 0 };
    fd_model_fwd(&ctx);      // with dropout: draws the masks once
    if (lo) lo->training = 0; // later forwards reuse the same masks
    if (lo && lo->dora) for (int i = 0; i < c->n_layers * NUM_TARGETS; i++) lo->mods[i].wnorm_fixed = 1; // PEFT: norm is a constant
    fd_model_fwd(&ctx);
    // gradients
    floatX *gmem = NULL;
    ParameterTensors g;
    int layer_from = c->n_layers, outer = 0;
    if (!is_lora) {
        gmem = calloc_check(m.num_parameters, sizeof(floatX));
        point_parameters(&g, gmem, m.param_sizes, c->tied);
        if (!strcmp(mode, "full")) { layer_from = 0; outer = 1; } else layer_from = c->n_layers - 1; // freeze: last layer only
    }
    peft_backward(&net, &a, is_lora ? NULL : &g, layer_from, outer);
    floatX one = 1, lossx;
    FDObjective o = { &lossx, 1, &one };
    fd_loss_slot = &lossx;
    char name[160];
    if (is_lora) {
        snprintf(name, sizeof(name), "fd model %s%s: every LoRA A and B", mode, checkpoint ? " (checkpointed activations)" : "");
        fd_compare(name, lora.params, lora.num_params, lora.grads, fd_model_fwd, &ctx, &o);
    } else {
        const char *tn[NUM_PARAM_TENSORS] = { "embed", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final", "wcls" };
        floatX *pp[NUM_PARAM_TENSORS] = { m.params.embed, m.params.rms_att, m.params.wq, m.params.wk, m.params.wv, m.params.wo, m.params.rms_ffn, m.params.w1, m.params.w2, m.params.w3, m.params.rms_final, m.params.wcls };
        floatX *gp[NUM_PARAM_TENSORS] = { g.embed, g.rms_att, g.wq, g.wk, g.wv, g.wo, g.rms_ffn, g.w1, g.w2, g.w3, g.rms_final, g.wcls };
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
            if (!m.param_sizes[i]) continue;
            size_t n = m.param_sizes[i], off = 0;
            int per_layer = i >= 1 && i <= 9;
            if (!strcmp(mode, "freeze")) {
                if (!per_layer) { // frozen outer tensors: the gradient must stay exactly zero
                    int zero = 1;
                    for (size_t k = 0; k < n; k++) zero &= gp[i][k] == 0;
                    snprintf(name, sizeof(name), "fd model freeze: frozen %s has no gradient", tn[i]);
                    check(zero, name, "all %zu entries zero", n);
                    continue;
                }
                off = n / c->n_layers * (c->n_layers - 1); n -= off; // the trainable last layer
            }
            snprintf(name, sizeof(name), "fd model %s%s%s: %s", mode, tied ? " tied" : "", checkpoint ? " checkpointed" : "", tn[i]);
            fd_compare(name, pp[i] + off, n, gp[i] + off, fd_model_fwd, &ctx, &o);
        }
    }
    free(gmem);
    acts_free(&a); net_free(&net);
    if (lo) lora_free(lo);
    model_free(&m);
}

static void run_fd_tests(void) {
    test_fd_matmul();
    test_fd_rmsnorm();
    test_fd_rope();
    test_fd_attention();
    test_fd_swiglu();
    test_fd_crossentropy();
    test_fd_lora(0, 0);
    test_fd_lora(1, 0);
    test_fd_lora(0, 1);
    test_fd_lora(1, 1);
    test_fd_model("lora", 0, 0);
    test_fd_model("lora dropout", 0, 0);
    test_fd_model("lora dora", 0, 0);
    test_fd_model("lora dora dropout", 1, 0);
    test_fd_model("lora", 1, 1);
    test_fd_model("full", 0, 0);
    test_fd_model("full", 1, 0);
    test_fd_model("freeze", 0, 0);
}
#endif // PEFT_FP64

// ----------------------------------------------------------------------------
// fp32 tests: formats, hostile inputs, references from PyTorch and PEFT, CLI
#ifndef PEFT_FP64

#define SHARED "../shared"
static char tmpdir[256];
static const char *peft_bin(void) { const char *b = getenv("PEFT_BIN"); return b ? b : "./peft"; }
// PEFT_EXEC runs the binaries through a launcher (make cross-test: "qemu-s390x"); empty by default
static const char *exec_prefix(void) { const char *e = getenv("PEFT_EXEC"); return e ? e : ""; }
static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir, name); }
static int have(const char *path) { return file_exists(path) || dir_exists(path); }
static void write_bytes(const char *path, const void *p, size_t n) { FILE *f = fopen(path, "wb"); if (!f) { perror(path); exit(1); } fwrite(p, 1, n, f); fclose(f); }
// n host values of es bytes stored little-endian at dst (the files' byte order, on any host)
static void put_le(void *dst, const void *src, size_t es, size_t n) { memcpy(dst, src, es * n); le_swap(dst, es, n); }
static void fwrite_le(const void *p, size_t es, size_t n, FILE *f) { unsigned char b[8]; for (size_t i = 0; i < n; i++) { put_le(b, (const unsigned char *)p + i * es, es, 1); fwrite(b, es, 1, f); } }

// a float tensor from a safetensors file (as float), NULL if missing
static float *load_f32(const char *path, const char *name, size_t *n) {
    SafeTensors st;
    if (st_open(&st, path)) return NULL;
    STTensor *t = st_find(&st, name);
    float *out = NULL;
    if (t) {
        floatX *tmp = malloc_check(t->numel * sizeof(floatX));
        if (!st_read_floatX(&st, t, tmp)) { out = malloc_check(t->numel * sizeof(float)); for (size_t i = 0; i < t->numel; i++) out[i] = (float)tmp[i]; *n = t->numel; }
        free(tmp);
    }
    st_close(&st);
    return out;
}
static int *load_ints(const char *path, const char *name, int *B, int *T) {
    SafeTensors st;
    if (st_open(&st, path)) return NULL;
    STTensor *t = st_find(&st, name);
    int *out = NULL;
    if (t && t->ndim == 2) { out = malloc_check(t->numel * sizeof(int)); *B = (int)t->shape[0]; *T = (int)t->shape[1]; if (st_read_ints(&st, t, out)) { free(out); out = NULL; } }
    st_close(&st);
    return out;
}
static double max_abs_diff(const float *a, const float *b, size_t n, size_t *where) {
    double m = 0; *where = 0;
    for (size_t i = 0; i < n; i++) { double d = fabs((double)a[i] - b[i]); if (d > m || d != d) { m = d; *where = i; } }
    return m;
}

// --- fast kernels (SIMD GEMM, GEMM-based attention, vectorised exp) against the reference loops,
// on shapes that are not multiples of the tiles, and the same bits for 1 and 2 threads
static uint64_t kern_rng = 4242;
MAYBE_UNUSED static float *rand_f32(size_t n, float scale) {
    float *x = malloc_check((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (2 * random_f32(&kern_rng) - 1) * scale;
    return x;
}
MAYBE_UNUSED static float *copy_f32(const float *x, size_t n) { float *y = malloc_check((n ? n : 1) * sizeof(float)); memcpy(y, x, n * sizeof(float)); return y; }
// max |a - ref| / max |ref|
MAYBE_UNUSED static double rel_max_diff(const float *a, const float *ref, size_t n) {
    double m = 0, r = 0;
    for (size_t i = 0; i < n; i++) { double d = fabs((double)a[i] - ref[i]); if (d > m || d != d) m = d; if (fabs(ref[i]) > r) r = fabs(ref[i]); }
    return r > 0 ? m / r : m;
}
MAYBE_UNUSED static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}
MAYBE_UNUSED static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static void test_kernels_matmul(void) {
#ifndef PEFT_SIMD
    skip("fast matmul vs reference loops", "this build has no SIMD (PORTABLE=1 or no AVX2): matmul_* are the reference loops");
    return;
#else
    // N, C, OC: 1, 7, 33, 65 and friends (tiles are 6 x 32 or 6 x 16); C = 700 > GEMM_KC (two K blocks),
    // OC = 600 > GEMM_NC (two N blocks); N < 6 takes the dot-product path of the forward
    int dims[][3] = { {1, 7, 33}, {7, 33, 65}, {33, 65, 7}, {65, 1, 33}, {5, 65, 65}, {6, 288, 8}, {13, 700, 37}, {97, 33, 600}, {64, 8, 40} };
    int nd = (int)(sizeof(dims) / sizeof(dims[0])), saved = max_threads();
    double wf = 0, wi = 0, ww = 0;
    int same = 1;
    char where[128] = "";
    for (int d = 0; d < nd; d++) {
        int N = dims[d][0], C = dims[d][1], OC = dims[d][2];
        size_t nx = (size_t)N * C, nw = (size_t)OC * C, ny = (size_t)N * OC;
        float *x = rand_f32(nx, 1), *w = rand_f32(nw, 1), *dy = rand_f32(ny, 1), *dx0 = rand_f32(nx, 1), *dw0 = rand_f32(nw, 1);
        float *y_ref = malloc_check(ny * sizeof(float)), *dx_ref = copy_f32(dx0, nx), *dw_ref = copy_f32(dw0, nw);
        matmul_forward_naive(y_ref, x, w, N, C, OC);
        matmul_backward_naive(dx_ref, dw_ref, dy, x, w, N, C, OC);
        float *y[2], *dx[2], *dw[2];
        for (int t = 0; t < 2; t++) { // 1 thread, then 2
            set_threads(t + 1);
            y[t] = malloc_check(ny * sizeof(float)); dx[t] = copy_f32(dx0, nx); dw[t] = copy_f32(dw0, nw);
            matmul_forward(y[t], x, w, N, C, OC);
            matmul_backward(dx[t], dw[t], dy, x, w, N, C, OC);
        }
        double ef = rel_max_diff(y[0], y_ref, ny), ei = rel_max_diff(dx[0], dx_ref, nx), ew = rel_max_diff(dw[0], dw_ref, nw);
        if (ef > wf) wf = ef;
        if (ei > wi) wi = ei;
        if (ew > ww) ww = ew;
        if (memcmp(y[0], y[1], ny * sizeof(float)) || memcmp(dx[0], dx[1], nx * sizeof(float)) || memcmp(dw[0], dw[1], nw * sizeof(float))) {
            if (same) snprintf(where, sizeof(where), " (first difference at N %d C %d OC %d)", N, C, OC);
            same = 0;
        }
        for (int t = 0; t < 2; t++) { free(y[t]); free(dx[t]); free(dw[t]); }
        free(x); free(w); free(dy); free(dx0); free(dw0); free(y_ref); free(dx_ref); free(dw_ref);
    }
    set_threads(saved);
    check(wf < 1e-5 && wi < 1e-5 && ww < 1e-5, "fast matmul vs reference loops",
          "%d shapes (N, C, OC from 1 to 700), worst relative difference: forward %.2e, dinp %.2e, dweight %.2e", nd, wf, wi, ww);
    check(same, "fast matmul: 1 and 2 threads give the same bits", "forward, dinp and dweight on %d shapes%s", nd, same ? "" : where);
#endif
}

static void test_kernels_attention(void) {
#ifndef PEFT_SIMD
    skip("fast attention vs reference loops", "this build has no SIMD: attention_* are the reference loops");
    return;
#else
    // B, T, NH, KVH, HS: T = 1, 7, 50 and 100 cross the 48-row causal chunks; grouped-query heads
    int dims[][5] = { {1, 1, 1, 1, 5}, {2, 7, 4, 2, 3}, {1, 50, 2, 1, 16}, {2, 100, 3, 3, 48}, {1, 97, 4, 2, 33} };
    int nd = (int)(sizeof(dims) / sizeof(dims[0])), saved = max_threads(), same = 1;
    double wo = 0, wp = 0, wq = 0, wk = 0, wv = 0;
    for (int d = 0; d < nd; d++) {
        int B = dims[d][0], T = dims[d][1], NH = dims[d][2], KVH = dims[d][3], HS = dims[d][4];
        size_t nq = (size_t)B * T * NH * HS, nk = (size_t)B * T * KVH * HS, na = (size_t)B * NH * T * T;
        float *q = rand_f32(nq, 1), *k = rand_f32(nk, 1), *v = rand_f32(nk, 1), *dout = rand_f32(nq, 1);
        float *dq0 = rand_f32(nq, 1), *dk0 = rand_f32(nk, 1), *dv0 = rand_f32(nk, 1);
        float *o_ref = malloc_check(nq * sizeof(float)), *att_ref = calloc_check(na, sizeof(float)), *scr_ref = calloc_check(na, sizeof(float));
        float *dq_ref = copy_f32(dq0, nq), *dk_ref = copy_f32(dk0, nk), *dv_ref = copy_f32(dv0, nk);
        attention_forward_naive(o_ref, att_ref, q, k, v, B, T, NH, KVH, HS);
        attention_backward_naive(dq_ref, dk_ref, dv_ref, scr_ref, dout, q, k, v, att_ref, B, T, NH, KVH, HS);
        float *o[2], *att[2], *dq[2], *dk[2], *dv[2];
        for (int t = 0; t < 2; t++) {
            set_threads(t + 1);
            float *scr = calloc_check(na, sizeof(float));
            o[t] = malloc_check(nq * sizeof(float)); att[t] = calloc_check(na, sizeof(float));
            dq[t] = copy_f32(dq0, nq); dk[t] = copy_f32(dk0, nk); dv[t] = copy_f32(dv0, nk);
            attention_forward(o[t], att[t], q, k, v, B, T, NH, KVH, HS);
            attention_backward(dq[t], dk[t], dv[t], scr, dout, q, k, v, att[t], B, T, NH, KVH, HS);
            free(scr);
        }
        for (size_t r = 0; r < (size_t)B * NH; r++) // the reference leaves s > t unset: compare s <= t
            for (int t = 0; t < T; t++)
                for (int s = 0; s < T; s++) if (s > t) att_ref[(r * T + t) * T + s] = att[0][(r * T + t) * T + s];
        double e;
        if ((e = rel_max_diff(o[0], o_ref, nq)) > wo) wo = e;
        if ((e = rel_max_diff(att[0], att_ref, na)) > wp) wp = e;
        if ((e = rel_max_diff(dq[0], dq_ref, nq)) > wq) wq = e;
        if ((e = rel_max_diff(dk[0], dk_ref, nk)) > wk) wk = e;
        if ((e = rel_max_diff(dv[0], dv_ref, nk)) > wv) wv = e;
        same &= !memcmp(o[0], o[1], nq * sizeof(float)) && !memcmp(att[0], att[1], na * sizeof(float)) && !memcmp(dq[0], dq[1], nq * sizeof(float)) &&
                !memcmp(dk[0], dk[1], nk * sizeof(float)) && !memcmp(dv[0], dv[1], nk * sizeof(float));
        for (int t = 0; t < 2; t++) { free(o[t]); free(att[t]); free(dq[t]); free(dk[t]); free(dv[t]); }
        free(q); free(k); free(v); free(dout); free(dq0); free(dk0); free(dv0);
        free(o_ref); free(att_ref); free(scr_ref); free(dq_ref); free(dk_ref); free(dv_ref);
    }
    set_threads(saved);
    check(wo < 1e-5 && wp < 1e-5 && wq < 1e-5 && wk < 1e-5 && wv < 1e-5, "fast attention vs reference loops",
          "%d shapes (T 1 to 100, grouped-query), worst relative difference: out %.2e, probs %.2e, dq %.2e, dk %.2e, dv %.2e", nd, wo, wp, wq, wk, wv);
    check(same, "fast attention: 1 and 2 threads give the same bits", "out, probs, dq, dk, dv on %d shapes", nd);
#endif
}

// the vectorised exp inside softmax, cross-entropy and SwiGLU, against exp() in double
static void test_kernels_exp(void) {
#ifndef PEFT_SIMD
    skip("vectorised exp", "this build has no SIMD: expf is used");
    return;
#else
    int n = 200003; // odd: the padded tail too
    float *x = malloc_check((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) x[i] = -87.0f + 175.0f * (float)i / (float)(n - 1); // e^x normal in float
    float *e = copy_f32(x, (size_t)n), *e2 = copy_f32(x, (size_t)n);
    row_exp(e, n, 1.0f, 0.0f);
    double sum = row_exp(e2, n, 1.0f, 88.0f), worst = 0, ref_sum = 0; // as softmax uses it: exp(x - max), summed
    int at = 0;
    for (int i = 0; i < n; i++) {
        double r = exp((double)x[i]), rel = fabs(e[i] - r) / r;
        ref_sum += exp((double)x[i] - 88.0);
        if (rel > worst) { worst = rel; at = i; }
    }
    check(worst < 3e-7 && fabs(sum - ref_sum) / ref_sum < 1e-5, "vectorised exp", "%d values in [-87, 88]: worst relative error %.2e at x = %g (float epsilon 1.2e-7), sum within %.1e",
          n, worst, x[at], fabs(sum - ref_sum) / ref_sum);
    // cross-entropy and SwiGLU on odd sizes against double references
    int N = 5, V = 1003;
    float *logits = rand_f32((size_t)N * V, 8), *probs = copy_f32(logits, (size_t)N * V), losses[5];
    int targets[5] = { 0, 17, -100, 1002, 500 };
    int cnt = crossentropy_forward(losses, probs, targets, N, V);
    double wl = 0, wpr = 0;
    for (int r = 0; r < N; r++) {
        const float *l = logits + (size_t)r * V;
        double mx = l[0], s = 0;
        for (int i = 1; i < V; i++) if (l[i] > mx) mx = l[i];
        for (int i = 0; i < V; i++) s += exp(l[i] - mx);
        for (int i = 0; i < V; i++) { double p = exp(l[i] - mx) / s, d = fabs(probs[(size_t)r * V + i] - p) / (p > 1e-30 ? p : 1e-30); if (p > 1e-30 && d > wpr) wpr = d; }
        double loss = targets[r] >= 0 ? -(l[targets[r]] - mx - log(s)) : 0;
        if (fabs(losses[r] - loss) > wl) wl = fabs(losses[r] - loss);
    }
    check(cnt == 4 && wl < 1e-5 && wpr < 1e-5, "cross-entropy (vectorised softmax)", "N %d, V %d: worst |loss error| %.2e, worst relative prob error %.2e, %d counted", N, V, wl, wpr, cnt);
    size_t ns = 1003;
    float *g = rand_f32(ns, 12), *u = rand_f32(ns, 1), *dy = rand_f32(ns, 1), *h = malloc_check(ns * sizeof(float));
    float *dg = calloc_check(ns, sizeof(float)), *du = calloc_check(ns, sizeof(float));
    swiglu_forward(h, g, u, ns);
    swiglu_backward(dg, du, dy, g, u, ns);
    double wh = 0, wd = 0;
    for (size_t i = 0; i < ns; i++) {
        double sg = 1 / (1 + exp(-(double)g[i])), hr = g[i] * sg * u[i];
        double dgr = dy[i] * u[i] * sg * (1 + g[i] * (1 - sg)), dur = dy[i] * g[i] * sg;
        if (fabs(h[i] - hr) > wh) wh = fabs(h[i] - hr);
        if (fabs(dg[i] - dgr) > wd) wd = fabs(dg[i] - dgr);
        if (fabs(du[i] - dur) > wd) wd = fabs(du[i] - dur);
    }
    check(wh < 1e-5 && wd < 1e-5, "SwiGLU (vectorised sigmoid)", "%zu values, g in [-12, 12]: worst |error| forward %.2e, backward %.2e", ns, wh, wd);
    free(x); free(e); free(e2); free(logits); free(probs); free(g); free(u); free(dy); free(h); free(dg); free(du);
#endif
}

// --- JSON
static void test_json(void) {
    const char *good[] = { "{\"a\": [1, 2.5e3, -0.5, true, false, null, \"x\\u00e9\\ud83d\\ude00\"]}", "[]", "\"\"", "0", " {\"k\" : {}} " };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        Json *j = json_parse(good[i], strlen(good[i]), "good.json");
        check(j != NULL, "json parses valid input", "%s", good[i]);
        json_free(j);
    }
    Json *j = json_parse(good[0], strlen(good[0]), "x");
    Json *arr = json_get(j, "a");
    check(arr && arr->n == 7 && arr->items[1].num == 2500 && !strcmp(arr->items[6].str, "x\xc3\xa9\xf0\x9f\x98\x80"), "json values and UTF-16 surrogates", "7 items, \\u escapes decoded to UTF-8");
    json_free(j);
    const char *bad[] = { "{\"a\": NaN}", "{\"a\": Infinity}", "{\"a\": -Infinity}", "{\"a\": 1e999}", "{\"a\": 01}", "{\"a\": 1,}", "[1 2]", "{\"a\"}", "\"abc", "{\"a\": \"\\ud800\"}",
                          "{\"a\": tru}", "[1] x", "{'a': 1}", "\"\\x\"", "", "{\"a\": \"ctl\x01\"}" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        Json *b = json_parse(bad[i], strlen(bad[i]), "bad.json");
        check(b == NULL && strstr(peft_errbuf, "bad.json: invalid JSON"), "json rejects invalid input", "%s -> %s", bad[i], peft_errbuf);
        json_free(b);
    }
    // deep nesting: error, not a stack overflow
    size_t depth = 100000;
    char *deep = malloc_check(depth * 2 + 1);
    for (size_t i = 0; i < depth; i++) { deep[i] = '['; deep[depth * 2 - 1 - i] = ']'; }
    deep[depth * 2] = 0;
    Json *d = json_parse(deep, depth * 2, "deep.json");
    check(d == NULL && strstr(peft_errbuf, "nesting too deep"), "json rejects 100000-deep nesting", "%s", peft_errbuf);
    free(deep);
}

// --- safetensors: a valid file, then >= 20 corruptions of it
static unsigned char *st_bytes(const char *header, const void *data, size_t dn, size_t *n) {
    size_t hl = strlen(header);
    unsigned char *b = malloc_check(8 + hl + dn);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    if (dn) put_le(b + 8 + hl, data, 4, dn / 4); // the tests' data is F32
    *n = 8 + hl + dn;
    return b;
}
static void expect_st_error(const char *label, const unsigned char *bytes, size_t n, const char *want) {
    char path[512];
    tmp_path(path, sizeof(path), "hostile.safetensors");
    write_bytes(path, bytes, n);
    SafeTensors st;
    int rc = st_open(&st, path);
    floatX buf[64];
    if (!rc) { // header accepted: reading the tensor must then fail cleanly (e.g. NaN data)
        rc = st.n > 0 && st.t[0].numel <= 64 ? st_read_floatX(&st, &st.t[0], buf) : 0;
        st_close(&st);
    }
    check(rc == -1 && strstr(peft_errbuf, path) && (!want || strstr(peft_errbuf, want)), "hostile safetensors", "%s -> %s", label, rc ? peft_errbuf : "ACCEPTED");
}
static void test_safetensors(void) {
    float data[6] = { 1, 2, 3, 4, 5, 6 };
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}";
    size_t n;
    unsigned char *good = st_bytes(hdr, data, sizeof(data), &n);
    char path[512];
    tmp_path(path, sizeof(path), "good.safetensors");
    write_bytes(path, good, n);
    SafeTensors st;
    int ok = !st_open(&st, path) && st.n == 2;
    floatX got[4] = { 0 };
    if (ok) { STTensor *t = st_find(&st, "a"); ok = t && !st_read_floatX(&st, t, got) && got[3] == 4; st_close(&st); }
    check(ok, "safetensors reads a valid file", "2 tensors, a[3] = %g", (double)got[3]);
    // truncations at many points
    uint64_t rng = 99;
    for (int k = 0; k < 10; k++) {
        size_t cut = random_u32(&rng) % (n - 1);
        char label[64]; snprintf(label, sizeof(label), "truncated at byte %zu of %zu", cut, n);
        expect_st_error(label, good, cut, NULL);
    }
    // header bytes flipped: structural characters of the JSON
    const char *flips[] = { "{", "\"dtype\"", "[0,16]", ":" };
    for (size_t k = 0; k < sizeof(flips) / sizeof(flips[0]); k++) {
        unsigned char *b = malloc_check(n); memcpy(b, good, n);
        unsigned char *p = (unsigned char *)strstr((char *)b + 8, flips[k]);
        if (p) *p ^= 0x55;
        char label[64]; snprintf(label, sizeof(label), "flipped byte at '%s'", flips[k]);
        expect_st_error(label, b, n, NULL);
        free(b);
    }
    unsigned char *b = malloc_check(n); memcpy(b, good, n);
    for (int i = 0; i < 8; i++) b[i] = 0xff;
    expect_st_error("header length 2^64-1", b, n, "header length");
    b[0] = 0; b[1] = 0; b[2] = 0; b[3] = 0x10; b[4] = b[5] = b[6] = b[7] = 0;
    expect_st_error("header length 256 MiB (> limit, > file)", b, n, "header length");
    free(b);
    struct { const char *label, *header, *want; } cases[] = {
        { "offsets past end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,160]}}", "past the end" },
        { "overlapping tensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", "overlap" },
        { "shape x dtype != byte range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,16]}}", "bytes but data_offsets span" },
        { "unknown dtype", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", "unsupported dtype" },
        { "dtype not a string", "{\"a\":{\"dtype\":7,\"shape\":[2,2],\"data_offsets\":[0,16]}}", "dtype" },
        { "negative dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2,2],\"data_offsets\":[0,16]}}", "non-negative" },
        { "fractional dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5,2],\"data_offsets\":[0,16]}}", "non-negative" },
        { "shape overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,16]}}", "overflow" },
        { "begin > end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]}}", "begin" },
        { "missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2]}}", "needs dtype" },
        { "NaN in JSON numbers", "{\"a\":{\"dtype\":\"F32\",\"shape\":[NaN],\"data_offsets\":[0,16]}}", "invalid JSON" },
        { "Infinity in JSON numbers", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,Infinity]}}", "invalid JSON" },
        { "header not an object", "[1,2,3]", "not a JSON object" },
        { "too many dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,4],\"data_offsets\":[0,16]}}", "at most" },
        { "deeply nested header", NULL, "nesting too deep" },
        { "NaN tensor data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", "non-finite" },
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        float d2[6] = { 1, 2, 3, 4, 5, 6 };
        char *h = (char *)cases[k].header;
        char *deep = NULL;
        if (!h) { // 5000-deep array inside the header
            size_t D = 5000; deep = malloc_check(2 * D + 64);
            strcpy(deep, "{\"a\":");
            size_t p = strlen(deep);
            for (size_t i = 0; i < D; i++) deep[p++] = '[';
            for (size_t i = 0; i < D; i++) deep[p++] = ']';
            strcpy(deep + p, "}");
            h = deep;
        }
        if (strstr(cases[k].label, "NaN tensor")) { uint32_t nan = 0x7fc00000; memcpy(&d2[2], &nan, 4); }
        unsigned char *bytes = st_bytes(h, d2, 16, &n);
        expect_st_error(cases[k].label, bytes, n, cases[k].want);
        free(bytes); free(deep);
    }
    free(good);
}

// --- model files: hostile .bin and HF folders
static void expect_model_error(const char *label, const char *path, const char *want) {
    Model m;
    int rc = model_load(&m, path);
    if (!rc) model_free(&m);
    check(rc == -1 && (!want || strstr(peft_errbuf, want)), "hostile model", "%s -> %s", label, rc ? peft_errbuf : "ACCEPTED");
}
static void test_hostile_models(void) {
    const char *bin = SHARED "/models/stories260K/stories260K.bin";
    if (!have(bin)) { skip("hostile model files", "needs " SHARED "/models/stories260K (run from the repo root beside ../shared)"); return; }
    size_t n;
    char *bytes = read_file(bin, &n, 1 << 30);
    char path[512];
    tmp_path(path, sizeof(path), "bad.bin");
    write_bytes(path, bytes, n / 2);
    expect_model_error("truncated .bin", path, "implies");
    write_bytes(path, bytes, 20);
    expect_model_error(".bin shorter than its header", path, "truncated");
    int32_t h[7];
    memcpy(h, bytes, sizeof(h));
    int32_t huge[7] = { 1 << 30, 1 << 30, 1 << 20, 8, 4, 512, 512 };
    put_le(bytes, huge, 4, 7);
    write_bytes(path, bytes, n);
    expect_model_error(".bin with absurd dims", path, "implausibly large");
    int32_t neg[7] = { 64, -5, 5, 8, 4, 512, 512 };
    put_le(bytes, neg, 4, 7);
    write_bytes(path, bytes, n);
    expect_model_error(".bin with a negative dim", path, "non-positive");
    int32_t gqa[7] = { 64, 172, 5, 8, 3, 512, 512 };
    put_le(bytes, gqa, 4, 7);
    write_bytes(path, bytes, n);
    expect_model_error(".bin with n_heads not a multiple of n_kv_heads", path, "multiple");
    unsigned char v9[256] = { 0x32, 0x34, 0x6b, 0x61, 9 };
    write_bytes(path, v9, sizeof(v9));
    expect_model_error(".bin with version 9", path, "version 9");
    memcpy(bytes, h, sizeof(h));
    float nan = NAN;
    put_le(bytes + 28 + 4 * 100, &nan, 4, 1);
    write_bytes(path, bytes, n);
    expect_model_error(".bin with a NaN weight", path, "non-finite");
    free(bytes);
    expect_model_error("missing file", "/nonexistent/model.bin", "no such file");
    // HF folders
    char dir[512], cfg[600];
    tmp_path(dir, sizeof(dir), "hf_bad");
    mkdir_p(dir);
    path_join(cfg, sizeof(cfg), dir, "config.json");
    remove(cfg);
    expect_model_error("folder without config.json", dir, "cannot open");
    struct { const char *label, *json, *want; } cases[] = {
        { "unknown architecture", "{\"architectures\":[\"GPT2LMHeadModel\"],\"hidden_size\":64}", "unsupported architecture" },
        { "unsupported rope scaling", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":172,\"num_hidden_layers\":5,\"num_attention_heads\":8,\"vocab_size\":512,\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4}}", "rope scaling" },
        { "missing hidden_size", "{\"architectures\":[\"LlamaForCausalLM\"]}", "hidden_size" },
        { "unsupported activation", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":172,\"num_hidden_layers\":5,\"num_attention_heads\":8,\"vocab_size\":512,\"hidden_act\":\"gelu\"}", "hidden_act" },
        { "config with NaN", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":NaN}", "invalid JSON" },
        { "shapes that do not match the config", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"intermediate_size\":170,\"num_hidden_layers\":5,\"num_attention_heads\":8,\"num_key_value_heads\":4,\"vocab_size\":512,\"tie_word_embeddings\":true}", "expected shape" },
    };
    const char *weights = SHARED "/models/stories260K-hf-f32/model.safetensors";
    size_t wn;
    char *w = read_file(weights, &wn, 1 << 30);
    char wpath[600];
    path_join(wpath, sizeof(wpath), dir, "model.safetensors");
    if (w) write_bytes(wpath, w, wn);
    free(w);
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        write_bytes(cfg, cases[k].json, strlen(cases[k].json));
        expect_model_error(cases[k].label, dir, cases[k].want);
    }
}

// --- reference logits: every stories260K variant against transformers' logits_base
static float *dump_logits(Model *m, Lora *lo, const int *ids, int B, int T, double *loss, const int *targets) {
    Net net;
    net_init(&net, m, lo);
    Activations a;
    acts_alloc(&a, &m->config, B, T, 0);
    if (lo) lora_alloc_acts(lo, B * T);
    peft_forward(&net, &a, ids);
    size_t n = (size_t)B * T * m->config.vocab_size;
    float *out = malloc_check(n * sizeof(float));
    for (size_t i = 0; i < n; i++) out[i] = (float)a.logits[i];
    if (loss && targets) *loss = peft_loss(&a, &m->config, targets);
    acts_free(&a); net_free(&net);
    return out;
}
static void test_reference_logits(void) {
    const char *ref = SHARED "/reference/peft/qv_r4/reference.safetensors";
    if (!have(ref)) { skip("reference logits", "needs " SHARED "/reference/peft/qv_r4/reference.safetensors"); return; }
    int B, T;
    int *ids = load_ints(ref, "input_ids", &B, &T);
    size_t nref;
    float *base = load_f32(ref, "logits_base", &nref);
    const char *variants[] = { SHARED "/models/stories260K/stories260K.bin", SHARED "/models/stories260K-hf-f32" };
    for (int v = 0; v < 2; v++) {
        Model m;
        if (model_load(&m, variants[v])) { check(0, "reference logits", "%s: %s", variants[v], peft_errbuf); continue; }
        float *got = dump_logits(&m, NULL, ids, B, T, NULL, NULL);
        size_t where;
        double e = max_abs_diff(got, base, nref, &where);
        char name[256]; snprintf(name, sizeof(name), "logits_base match (%s)", variants[v]);
        check(e <= 1e-4, name, "max abs error %.2e <= 1e-4 (at %zu: got %.6f, transformers %.6f)", e, where, got[where], base[where]);
        free(got); model_free(&m);
    }
    // the bf16 folder and the "f32-sharded" folder (which stores bf16-rounded values as F32): against a
    // PyTorch forward over the same weights (tests/fixtures, made by export.py ref-logits), and against each other
    const char *fx = "tests/fixtures/stories260K_bf16_ref_logits.safetensors";
    size_t nfx;
    float *bref = load_f32(fx, "logits", &nfx);
    int fb, ft;
    int *fids = load_ints(fx, "input_ids", &fb, &ft);
    float *prev = NULL;
    const char *bf[] = { SHARED "/models/stories260K-hf-bf16", SHARED "/models/stories260K-hf-f32-sharded" };
    for (int v = 0; v < 2 && bref && fids; v++) {
        Model m;
        if (model_load(&m, bf[v])) { check(0, "bf16 logits", "%s: %s", bf[v], peft_errbuf); continue; }
        float *got = dump_logits(&m, NULL, fids, fb, ft, NULL, NULL);
        size_t where;
        double e = max_abs_diff(got, bref, nfx, &where);
        char name[256]; snprintf(name, sizeof(name), "PyTorch logits on the same bf16 weights (%s)", bf[v]);
        check(e <= 1e-4, name, "max abs error %.2e <= 1e-4", e);
        float *full = dump_logits(&m, NULL, ids, B, T, NULL, NULL);
        double eb = max_abs_diff(full, base, nref, &where);
        printf("INFO %s vs fp32 logits_base: max abs error %.4f (bf16 rounding of the weights; PyTorch on these weights shows the same 0.118)\n", bf[v], eb);
        if (prev) { double d = max_abs_diff(prev, got, nfx, &where); check(d == 0, "bf16 folder == sharded folder of the same values", "max abs diff %.2e", d); free(prev); }
        prev = got;
        free(full); model_free(&m);
    }
    if (!bref || !fids) check(0, "bf16 reference fixture", "missing %s", fx);
    free(prev); free(bref); free(fids); free(ids); free(base);
}

// --- the KV-cache path equals the batch path; greedy generation matches PyTorch's
static void test_generation(void) {
    const char *fx = "tests/fixtures/stories260K_greedy.json";
    Json *j = json_load(fx);
    if (!j) { check(0, "greedy fixture", "%s", peft_errbuf); return; }
    Json *tk = json_get(j, "tokens");
    const char *models[] = { SHARED "/models/stories260K/stories260K.bin", SHARED "/models/stories260K-hf-f32", SHARED "/models/stories260K-hf-f32-sharded" };
    for (int v = 0; v < 3; v++) {
        Model m;
        if (!have(models[v])) { skip("greedy generation", "needs ../shared models"); continue; }
        if (model_load(&m, models[v])) { check(0, "greedy generation", "%s", peft_errbuf); continue; }
        Net net; net_init(&net, &m, NULL);
        RunState s; runstate_alloc(&s, &m.config, m.config.seq_len);
        int token = 1, first_bad = -1, n = tk->n;
        int *seq = malloc_check((n + 1) * sizeof(int));
        seq[0] = 1;
        for (int pos = 0; pos < n; pos++) {
            floatX *logits = forward_token(&net, &s, token, pos);
            token = sample_argmax(logits, m.config.vocab_size);
            seq[pos + 1] = token;
            if (first_bad < 0 && token != (int)tk->items[pos].num) first_bad = pos;
        }
        char name[256]; snprintf(name, sizeof(name), "greedy 200 tokens == PyTorch reference (%s)", models[v]);
        if (v < 2) check(first_bad < 0, name, first_bad < 0 ? "all %d tokens identical" : "first difference at step %d", first_bad < 0 ? n : first_bad);
        else printf("INFO %s (bf16-rounded weights): greedy %s\n", models[v], first_bad < 0 ? "identical too" : "diverges from the fp32 model, as expected");
        if (v == 0) { // the batch forward over the generated sequence gives the same logits as the KV-cache path
            Activations a; acts_alloc(&a, &m.config, 1, 64, 0);
            peft_forward(&net, &a, seq);
            RunState s2; runstate_alloc(&s2, &m.config, m.config.seq_len);
            double e = 0;
            for (int pos = 0; pos < 64; pos++) {
                floatX *lg = forward_token(&net, &s2, seq[pos], pos);
                for (int i = 0; i < m.config.vocab_size; i++) e = max_err(e, fabs((double)lg[i] - a.logits[(size_t)pos * m.config.vocab_size + i]));
            }
            check(e < 1e-4, "KV-cache path == batch forward", "max abs diff %.2e over 64 positions", e);
            runstate_free(&s2); acts_free(&a);
        }
        free(seq); runstate_free(&s); net_free(&net); model_free(&m);
    }
    json_free(j);
}

// --- PEFT references: loss, every gradient, and 10 AdamW steps from the saved adapter
static void test_peft_reference(const char *name) {
    char dir[512], ref[600];
    snprintf(dir, sizeof(dir), SHARED "/reference/peft/%s", name);
    path_join(ref, sizeof(ref), dir, "reference.safetensors");
    if (!have(ref)) { skip("PEFT reference", "needs " SHARED "/reference/peft"); return; }
    Model m;
    if (model_load(&m, SHARED "/models/stories260K-hf-f32")) { check(0, "PEFT reference", "%s", peft_errbuf); return; }
    Lora lo; LoraConfig lc;
    if (lora_load(&lo, &lc, &m.config, dir, 1)) { check(0, "PEFT adapter loads", "%s", peft_errbuf); model_free(&m); return; }
    int B, T;
    int *ids = load_ints(ref, "input_ids", &B, &T), *tg = load_ints(ref, "targets", &B, &T);
    size_t n;
    float *rloss = load_f32(ref, "loss", &n), *rlog = load_f32(ref, "logits_adapter", &n);
    double loss;
    lora_alloc_acts(&lo, B * T);
    Net net; net_init(&net, &m, &lo);
    Activations a; acts_alloc(&a, &m.config, B, T, 0);
    peft_forward(&net, &a, ids);
    size_t where, nl = (size_t)B * T * m.config.vocab_size;
    float *got = malloc_check(nl * sizeof(float));
    for (size_t i = 0; i < nl; i++) got[i] = (float)a.logits[i];
    double e = max_abs_diff(got, rlog, nl, &where);
    char label[256];
    snprintf(label, sizeof(label), "%s: logits_adapter", name);
    check(e <= 1e-4, label, "max abs error %.2e <= 1e-4", e);
    loss = peft_loss(&a, &m.config, tg);
    snprintf(label, sizeof(label), "%s: loss", name);
    check(fabs(loss - rloss[0]) / rloss[0] <= 1e-5, label, "peft.c %.7f, PEFT %.7f, relative error %.1e <= 1e-5", loss, rloss[0], fabs(loss - rloss[0]) / rloss[0]);
    peft_backward(&net, &a, NULL, m.config.n_layers, 0);
    double worst = 0; int ngrads = 0; char worst_name[320] = "";
    for (int l = 0; l < lo.n_layers; l++)
        for (int t = 0; t < NUM_TARGETS; t++) {
            LoraModule *lm = &lo.mods[l * NUM_TARGETS + t];
            if (!lm->r) continue;
            for (int ab = 0; ab < (lm->mag ? 3 : 2); ab++) {
                char key[256], gk[300];
                lora_key(key, sizeof(key), l, t, ab ? "B" : "A", NULL);
                snprintf(gk, sizeof(gk), "grad.%s", key);
                if (ab == 2) snprintf(gk, sizeof(gk), "grad.base_model.model.model.layers.%d.%s.%s.lora_magnitude_vector.weight", l, target_block(t), target_names[t]);
                size_t gn;
                float *rg = load_f32(ref, gk, &gn);
                if (!rg) { check(0, "PEFT gradient present", "%s missing in reference", gk); continue; }
                double *x = malloc_check(gn * sizeof(double)), *y = malloc_check(gn * sizeof(double));
                floatX *g = ab == 0 ? lm->dA : ab == 1 ? lm->dB : lm->dmag;
                for (size_t i = 0; i < gn; i++) { x[i] = g[i]; y[i] = rg[i]; }
                double r = rel_err(x, y, gn);
                if (r > worst) { worst = r; snprintf(worst_name, sizeof(worst_name), "%s", gk); }
                ngrads++;
                free(x); free(y); free(rg);
            }
        }
    snprintf(label, sizeof(label), "%s: every grad.* (%d tensors)", name, ngrads);
    check(worst <= 1e-4 && ngrads > 0, label, "worst relative error %.2e <= 1e-4 (%s)", worst, worst_name);
    // 10 AdamW steps (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0, no clipping, constant lr) on the same batch
    float *rl = load_f32(ref, "adamw_losses", &n);
    if (rl) {
        Trainable tr;
        trainable_init(&tr, &m, NULL, &lo, TUNE_LORA, 0);
        double worst_l = 0;
        char seq[512] = "";
        for (int step = 0; step < (int)n; step++) {
            trainable_zero_grad(&tr);
            peft_forward(&net, &a, ids);
            double l = peft_loss(&a, &m.config, tg);
            peft_backward(&net, &a, NULL, m.config.n_layers, 0);
            trainable_update(&tr, step + 1, 1e-3f, 0);
            worst_l = max_err(worst_l, fabs(l - rl[step]) / rl[step]);
            if (step == 0 || step == (int)n - 1) snprintf(seq + strlen(seq), sizeof(seq) - strlen(seq), "step %d: %.6f vs %.6f; ", step, l, rl[step]);
        }
        snprintf(label, sizeof(label), "%s: 10 AdamW steps reproduce adamw_losses", name);
        check(worst_l <= 1e-4, label, "%sworst relative error %.2e <= 1e-4", seq, worst_l);
        trainable_free(&tr);
        free(rl);
    }
    // merging: the merged model (HF folder and the llama2.c .bin of the same weights) gives logits_merged
    float *rmerged = load_f32(ref, "logits_merged", &n);
    const char *bases[2] = { SHARED "/models/stories260K-hf-f32", SHARED "/models/stories260K/stories260K.bin" };
    for (int v = 0; v < 2 && rmerged; v++) {
        Model mm;
        Lora lo2; LoraConfig lc2;
        if (model_load(&mm, bases[v]) || lora_load(&lo2, &lc2, &mm.config, dir, 0)) { check(0, "merge", "%s", peft_errbuf); continue; }
        floatX *orig = malloc_check(mm.num_parameters * sizeof(floatX));
        memcpy(orig, mm.params_memory, mm.num_parameters * sizeof(floatX));
        lora_merge(&mm, &lo2, 1);
        float *lg = dump_logits(&mm, NULL, ids, B, T, NULL, NULL);
        double em = max_abs_diff(lg, rmerged, nl, &where);
        snprintf(label, sizeof(label), "%s: merged into %s == logits_merged", name, bases[v]);
        check(em <= 1e-4, label, "max abs error %.2e <= 1e-4", em);
        if (!lo2.dora) { // unmerge restores the weights to fp32 rounding
            lora_merge(&mm, &lo2, -1);
            double worst_w = 0, maxw = 0;
            for (size_t i = 0; i < mm.num_parameters; i++) { worst_w = max_err(worst_w, fabs((double)mm.params_memory[i] - orig[i])); maxw = max_err(maxw, fabs((double)orig[i])); }
            snprintf(label, sizeof(label), "%s: unmerge restores the weights (%s)", name, bases[v]);
            check(worst_w <= 4 * FLT_EPSILON * maxw, label, "max abs change %.2e (weights up to %.2f; fp32 rounding is %.1e)", worst_w, maxw, FLT_EPSILON * maxw);
        }
        free(lg); free(orig); lora_free(&lo2); free(lc2.layers); model_free(&mm);
    }
    free(rmerged);
    free(got); free(ids); free(tg); free(rloss); free(rlog);
    acts_free(&a); net_free(&net); lora_free(&lo); free(lc.layers); model_free(&m);
}

// ----------------------------------------------------------------------------
// tokenizer tests. Paths are relative to the repository root (make test runs there).
// Uses check(ok, name, fmt, ...) and skip(name, why) from the test driver. The tests:
//   test_tokenizer_llama2_reference   test_tokenizer_tok512_roundtrip   test_tokenizer_bytebpe_reference
//   test_tokenizer_spbpe_reference    test_tokenizer_gpt2bpe_reference  test_tokenizer_pretok_patterns
//   test_tokenizer_merge_naive        test_tokenizer_split_words        test_tokenizer_special_and_limits
//   test_tokenizer_hostile            test_tokenizer_fuzz               test_tokenizer_speed

#define TOKTEST_LLAMA2 "../shared/tokenizers/llama2/tokenizer.bin"
#define TOKTEST_LLAMA2_REF "../shared/tokenizers/llama2/llama2-tokenization-reference.json"
#define TOKTEST_TOK512 "../shared/models/stories260K/tok512.bin"
#define TOKTEST_SHAKESPEARE "../shared/data/tinyshakespeare.txt"

// encode into a fresh array (room for any text: at most 3 tokens per byte, plus bos/eos/prefixes)
static int *toktest_encode(const Tokenizer *t, const char *text, size_t len, int bos, int eos, int *n) {
    int cap = (int)(3 * len + 8);
    int *ids = (int *)malloc_check((size_t)cap * sizeof(int));
    *n = tokenizer_encode(t, text, len, bos, eos, ids, cap);
    return ids;
}
// decode a whole sequence the way a generation loop prints it
static char *toktest_decode(const Tokenizer *t, const int *ids, int n, size_t *len) {
    StrBuf b = { 0 };
    char piece[1024];
    sb_putn(&b, "", 0);
    for (int i = 0; i < n; i++) sb_putn(&b, piece, (size_t)tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], piece, sizeof(piece)));
    *len = b.n;
    return b.s;
}
// printable excerpt of a string, for failure messages
static const char *toktest_show(const char *s, size_t n, char *buf, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '\\' && c != 0x7f) buf[k++] = (char)c;
        else k += (size_t)snprintf(buf + k, cap - k, "\\x%02x", c);
    }
    buf[k] = 0;
    return buf;
}
// compare ids with a JSON array; describe the first difference in msg (when msg is still empty)
static int toktest_same(const int *ids, int n, const Json *want, const char *text, size_t len, char *msg, size_t msgsz) {
    int same = want && want->type == JSON_ARRAY && n == want->n, at = 0;
    if (want && want->type == JSON_ARRAY)
        for (at = 0; at < n && at < want->n && ids[at] == (int)want->items[at].num; at++) {}
    same = same && at == n;
    if (!same && !msg[0]) {
        char show[200];
        snprintf(msg, msgsz, "first mismatch: \"%s\" token %d: expected %d, got %d (%d tokens expected, %d got)",
                 toktest_show(text, len, show, sizeof(show)), at, want && at < want->n ? (int)want->items[at].num : -1,
                 at < n ? ids[at] : -1, want ? want->n : -1, n);
    }
    return same;
}

// Every string of a reference file ([{"text", key: [ids]}]) must encode to exactly those ids;
// with roundtrip, decoding them must give the text back.
static void toktest_reference(const char *name, const char *tok_path, const char *ref_path, const char *key, int bos, int roundtrip) {
    if (!file_exists(tok_path) || !file_exists(ref_path)) { skip(name, "fixture missing (tests/ or ../shared/)"); return; }
    Tokenizer t;
    if (tokenizer_load(&t, tok_path, 0)) { check(0, name, "%s", peft_errbuf); return; }
    Json *ref = json_load(ref_path);
    if (!ref || ref->type != JSON_ARRAY) { check(0, name, "%s", ref ? "reference is not an array" : peft_errbuf); json_free(ref); tokenizer_free(&t); return; }
    int same = 0, back = 0, tried_back = 0, total = 0;
    char msg[600] = "", backmsg[400] = "";
    for (int i = 0; i < ref->n; i++) {
        const Json *e = &ref->items[i], *text = json_get(e, "text"), *want = json_get(e, key);
        if (!text || text->type != JSON_STRING || !want) continue;
        total++;
        int n;
        int *ids = toktest_encode(&t, text->str, text->len, bos, 0, &n);
        same += toktest_same(ids, n, want, text->str, text->len, msg, sizeof(msg));
        if (roundtrip && !json_bool_or(e, "special", 0) && !strstr(text->str, "\xE2\x96\x81")) {
            size_t len;
            char *s = toktest_decode(&t, ids, n, &len), show[150], show2[150];
            tried_back++;
            if (len == text->len && !memcmp(s, text->str, len)) back++;
            else if (!backmsg[0]) snprintf(backmsg, sizeof(backmsg), "; decode(\"%s\") gave \"%s\"", toktest_show(text->str, text->len, show, sizeof(show)), toktest_show(s, len, show2, sizeof(show2)));
            free(s);
        }
        free(ids);
    }
    check(total > 0 && same == total && back == tried_back, name, "%s: %d/%d strings give the reference ids (%s)%s%s%s, %d/%d decode back%s",
          tok_path, same, total, key, bos ? " with BOS" : "", msg[0] ? "; " : "", msg, back, tried_back, backmsg);
    json_free(ref);
    tokenizer_free(&t);
}

static void test_tokenizer_llama2_reference(void) {
    toktest_reference("tokenizer_llama2_reference", TOKTEST_LLAMA2, TOKTEST_LLAMA2_REF, "sentencepiece_ids", 0, 1);
}
static void test_tokenizer_bytebpe_reference(void) {
    toktest_reference("tokenizer_bytebpe_reference", "tests/bytebpe/tokenizer.json", "tests/bytebpe/reference.json", "ids", 0, 1);
}
static void test_tokenizer_spbpe_reference(void) {
    toktest_reference("tokenizer_spbpe_reference", "tests/spbpe/tokenizer.json", "tests/spbpe/reference.json", "ids", 0, 1);
    toktest_reference("tokenizer_spbpe_reference_bos", "tests/spbpe/tokenizer.json", "tests/spbpe/reference.json", "ids_bos", 1, 0);
    toktest_reference("tokenizer_spbpe_metaspace_reference", "tests/spbpe/tokenizer_metaspace.json", "tests/spbpe/reference.json", "ids_metaspace", 0, 0);
    toktest_reference("tokenizer_spbpe_metaspace_split_reference", "tests/spbpe/tokenizer_metaspace_split.json", "tests/spbpe/reference.json", "ids_metaspace_split", 0, 0);
}
static void test_tokenizer_gpt2bpe_reference(void) {
    // (add_prefix_space: decoding gives the text with a leading space, so no round trip)
    toktest_reference("tokenizer_gpt2bpe_reference", "tests/gpt2bpe/tokenizer.json", "tests/gpt2bpe/reference.json", "ids", 0, 0);
    // SmolLM's Sequence[Digits, ByteLevel] and a non-special added token
    toktest_reference("tokenizer_gpt2bpe_digits_reference", "tests/gpt2bpe/tokenizer_digits.json", "tests/gpt2bpe/reference.json", "ids_digits", 0, 1);
}

static void test_tokenizer_tok512_roundtrip(void) {
    const char *name = "tokenizer_tok512_roundtrip";
    if (!file_exists(TOKTEST_TOK512)) { skip(name, "needs " TOKTEST_TOK512); return; }
    Tokenizer t;
    if (tokenizer_load(&t, TOKTEST_TOK512, 512)) { check(0, name, "%s", peft_errbuf); return; }
#define TOKTEST_TEXT(s) { s, sizeof(s) - 1 }
    static const struct { const char *s; size_t len; } texts[] = {
        TOKTEST_TEXT("Once upon a time, there was a little girl named Lily."), TOKTEST_TEXT("  two  spaces  "),
        TOKTEST_TEXT("na\xC3\xAFve \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x98\x80"), TOKTEST_TEXT("\xFF\xFE invalid \xC3 utf-8 \x80\x80\x80\x80\x80"),
        TOKTEST_TEXT("tab\there\nnewline\r\n"), TOKTEST_TEXT("a\0b"), TOKTEST_TEXT("") };
#undef TOKTEST_TEXT
    int ok = 0, nt = (int)(sizeof(texts) / sizeof(texts[0]));
    char msg[300] = "";
    for (int i = 0; i < nt; i++) {
        int n;
        size_t len;
        int *ids = toktest_encode(&t, texts[i].s, texts[i].len, 1, 1, &n);
        int framed = n >= 2 && ids[0] == 1 && ids[n - 1] == 2; // BOS ... EOS
        char *s = toktest_decode(&t, ids, n, &len), show[120], show2[120];
        if (framed && len == texts[i].len && !memcmp(s, texts[i].s, len)) ok++;
        else if (!msg[0]) snprintf(msg, sizeof(msg), "; \"%s\" came back as \"%s\"%s", toktest_show(texts[i].s, texts[i].len, show, sizeof(show)),
                                   toktest_show(s, len, show2, sizeof(show2)), framed ? "" : " (not between BOS and EOS)");
        free(s);
        free(ids);
    }
    check(t.vocab_size == 512 && ok == nt, name, "vocab %d, %d/%d strings survive encode (BOS, EOS) and decode%s", t.vocab_size, ok, nt, msg);
    tokenizer_free(&t);
}

// the hand-written regexes against Oniguruma's splits (tests/pretok/reference.json)
static void test_tokenizer_pretok_patterns(void) {
    const char *name = "tokenizer_pretok_patterns", *path = "tests/pretok/reference.json";
    if (!file_exists(path)) { skip(name, "needs tests/pretok/reference.json"); return; }
    Json *ref = json_load(path);
    if (!ref || ref->type != JSON_ARRAY) { check(0, name, "%s", ref ? "not an array" : peft_errbuf); json_free(ref); return; }
    static const char *const keys[3] = { "gpt2", "llama3", "qwen2" }; // indexed by PAT_*
    int same[3] = { 0 }, total = 0;
    char msg[400] = "";
    for (int i = 0; i < ref->n; i++) {
        const Json *text = json_get(&ref->items[i], "text");
        if (!text || text->type != JSON_STRING) continue;
        total++;
        for (int p = 0; p < 3; p++) {
            const Json *want = json_get(&ref->items[i], keys[p]);
            int k = 0, ok = want && want->type == JSON_ARRAY;
            for (size_t j = 0, m; ok && j < text->len; j += m, k++) {
                m = pretok_match(p, text->str, text->len, j);
                ok = k < want->n && want->items[k].len == m && !memcmp(want->items[k].str, text->str + j, m);
            }
            ok = ok && k == want->n;
            same[p] += ok;
            if (!ok && !msg[0]) { char show[160]; snprintf(msg, sizeof(msg), "; first mismatch: %s on \"%s\"", keys[p], toktest_show(text->str, text->len, show, sizeof(show))); }
        }
    }
    check(total > 0 && same[0] == total && same[1] == total && same[2] == total, name,
          "strings split as Hugging Face does: GPT-2 %d/%d, Llama 3 %d/%d, Qwen2 %d/%d%s", same[0], total, same[1], total, same[2], total, msg);
    json_free(ref);
}

// the heap merge loop against the obvious O(n^2) one, on random text and on Shakespeare
static void test_tokenizer_merge_naive(void) {
    const char *name = "tokenizer_merge_naive";
    const char *paths[2] = { file_exists(TOKTEST_LLAMA2) ? TOKTEST_LLAMA2 : TOKTEST_TOK512, "tests/spbpe/tokenizer.json" };
    if (!file_exists(paths[0]) || !file_exists(paths[1]) || !file_exists(TOKTEST_SHAKESPEARE)) { skip(name, "needs a tokenizer.bin, tests/spbpe and tinyshakespeare"); return; }
    size_t shlen;
    char *sh = read_file(TOKTEST_SHAKESPEARE, &shlen, (size_t)1 << 26);
    if (!sh) { check(0, name, "%s", peft_errbuf); return; }
    static const char *const pool[] = { "e", "t", "a", "th", " ", "  ", "\n", "the", "ing", "\xC3\xA9", "\xE6\x9D\xB1", "aaaa", ",", "'", "er", "\xFF", "\xE2\x96\x81" };
    uint64_t rng = 42;
    int runs = 0, same = 0;
    char msg[300] = "";
    for (int f = 0; f < 2; f++) {
        Tokenizer t;
        if (tokenizer_load(&t, paths[f], 0)) { check(0, name, "%s", peft_errbuf); free(sh); return; }
        TokWork w;
        memset(&w, 0, sizeof(w));
        for (int r = 0; r < 300; r++) {
            char text[4096];
            size_t len = 0;
            if (r < 40) { // Shakespeare slices up to 4 KB
                size_t off = random_u32(&rng) % (shlen - sizeof(text)), n = 1 + random_u32(&rng) % (sizeof(text) - 1);
                memcpy(text, sh + off, n); len = n;
            } else {
                for (int k = 1 + (int)(random_u32(&rng) % 200); k > 0; k--) {
                    const char *p = pool[random_u32(&rng) % (sizeof(pool) / sizeof(pool[0]))];
                    memcpy(text + len, p, strlen(p)); len += strlen(p);
                }
            }
            // symbols: llama2.c's, or the sentencepiece-style characters of "▁"-joined text
            tok_work_reserve(&w, 3 * len + 4);
            int n = 0;
            if (t.kind == TOK_LLAMA2C) n = llama2c_symbols(&t, text, len, 1, w.ids);
            else for (size_t i = 0, k; i < len; i += k) { uint32_t cp; k = utf8_decode(text + i, len - i, &cp); n = tok_add_char(&t, w.ids, n, text + i, k); }
            int *copy = (int *)malloc_check((size_t)(n + 1) * sizeof(int));
            memcpy(copy, w.ids, (size_t)n * sizeof(int));
            int a = bpe_merge_heap(&t, &w, n), b = bpe_merge_naive(&t, copy, n);
            runs++;
            if (a == b && !memcmp(w.ids, copy, (size_t)a * sizeof(int))) same++;
            else if (!msg[0]) { char show[120]; snprintf(msg, sizeof(msg), "; %s differs on \"%s\" (%d vs %d tokens)", paths[f], toktest_show(text, len < 60 ? len : 60, show, sizeof(show)), a, b); }
            free(copy);
        }
        tok_work_free(&w);
        tokenizer_free(&t);
    }
    free(sh);
    check(same == runs, name, "heap merges equal the naive rescan on %d/%d texts (score-based %s and rank-based spbpe)%s", same, runs, paths[0], msg);
}

// Merging word by word (split_words) must give what merging the whole text at once gives.
static void test_tokenizer_split_words(void) {
    const char *name = "tokenizer_split_words";
    const char *paths[3] = { TOKTEST_LLAMA2, TOKTEST_TOK512, "tests/spbpe/tokenizer.json" };
    size_t shlen;
    if (!file_exists(TOKTEST_SHAKESPEARE)) { skip(name, "needs " TOKTEST_SHAKESPEARE); return; }
    char *sh = read_file(TOKTEST_SHAKESPEARE, &shlen, (size_t)1 << 26);
    if (!sh) { check(0, name, "%s", peft_errbuf); return; }
    static const char *const pool[] = { "the", " ", "  ", "   ", "\n", "\t", "a", "\xC3\xA9", "\xE6\x9D\xB1", "\xF0\x9F\x98\x80", "\xFF", ".", "\xE2\x96\x81", "<s>" };
    uint64_t rng = 3;
    int tested = 0, same = 0, files = 0;
    char msg[300] = "";
    for (int f = 0; f < 3; f++) {
        Tokenizer t;
        if (!file_exists(paths[f])) continue;
        if (tokenizer_load(&t, paths[f], 0)) { check(0, name, "%s", peft_errbuf); continue; }
        files += t.split_words;
        for (int r = 0; r < 201 && t.split_words; r++) {
            char text[2048];
            size_t len = 0;
            const char *s = text;
            if (r == 200) { s = sh; len = shlen; } // all of Shakespeare
            else for (int k = (int)(random_u32(&rng) % 40); k > 0; k--) {
                const char *p = pool[random_u32(&rng) % (sizeof(pool) / sizeof(pool[0]))];
                memcpy(text + len, p, strlen(p)); len += strlen(p);
            }
            int na, nb;
            int *a = toktest_encode(&t, s, len, 1, 1, &na);
            t.split_words = 0;
            int *b = toktest_encode(&t, s, len, 1, 1, &nb);
            t.split_words = 1;
            tested++;
            if (na == nb && !memcmp(a, b, (size_t)na * sizeof(int))) same++;
            else if (!msg[0]) { char show[120]; snprintf(msg, sizeof(msg), "; %s differs on \"%s\"", paths[f], toktest_show(s, len < 60 ? len : 60, show, sizeof(show))); }
            free(a); free(b);
        }
        tokenizer_free(&t);
    }
    free(sh);
    if (!tested) { skip(name, "no tokenizer with split_words found"); return; }
    check(same == tested, name, "%d tokenizers merge word by word; same tokens as whole-text merging on %d/%d texts (incl. all of Shakespeare)%s", files, same, tested, msg);
}

static void test_tokenizer_special_and_limits(void) {
    const char *name = "tokenizer_special_and_limits";
    if (!file_exists(TOKTEST_TOK512) || !file_exists("tests/bytebpe/tokenizer.json") || !file_exists("tests/spbpe/tokenizer.json") || !file_exists("tests/gpt2bpe/tokenizer.json")) {
        skip(name, "needs tok512.bin and tests/{bytebpe,spbpe,gpt2bpe}");
        return;
    }
    Tokenizer a, b, c, d;
    if (tokenizer_load(&a, TOKTEST_TOK512, 512) || tokenizer_load(&b, "tests/spbpe/tokenizer.json", 800) ||
        tokenizer_load(&c, "tests/bytebpe/tokenizer.json", 1024) || tokenizer_load(&d, "tests/gpt2bpe", 0)) {
        check(0, name, "%s", peft_errbuf);
        return;
    }
    int ok = 1, ids[64], n;
    char out[64], why[200] = "";
#define TOKTEST_EXPECT(cond) do { if (!(cond) && ok) { ok = 0; snprintf(why, sizeof(why), "failed: %s", #cond); } } while (0)
    TOKTEST_EXPECT(a.bos_id == 1 && a.eos_id == 2 && b.bos_id == 1 && b.eos_id == 2);
    TOKTEST_EXPECT(c.bos_id == 1000 && c.eos_id == 1001 && d.bos_id == -1 && d.eos_id == 0);
    // control tokens print nothing; the first piece after BOS loses its dummy-prefix space
    TOKTEST_EXPECT(tokenizer_decode(&a, 0, 1, out, sizeof(out)) == 0 && out[0] == 0);
    TOKTEST_EXPECT(tokenizer_decode(&c, 0, 1000, out, sizeof(out)) == 0);
    n = tokenizer_encode(&a, "Once", 4, 1, 0, ids, 64);
    TOKTEST_EXPECT(n == 2 && tokenizer_decode(&a, 1, ids[1], out, sizeof(out)) == 4 && !strcmp(out, "Once"));
    TOKTEST_EXPECT(n == 2 && tokenizer_decode(&a, 300, ids[1], out, sizeof(out)) == 5 && !strcmp(out, " Once"));
    n = tokenizer_encode(&b, "Once", 4, 1, 1, ids, 64);
    TOKTEST_EXPECT(n >= 3 && ids[0] == 1 && ids[n - 1] == 2 && tokenizer_decode(&b, 1, ids[1], out, sizeof(out)) > 0 && out[0] != ' ');
    // unused ids and ids past the vocabulary print nothing; a small buffer cuts the piece short
    TOKTEST_EXPECT(tokenizer_decode(&a, -1, 512, out, sizeof(out)) == 0 && tokenizer_decode(&a, -1, -3, out, sizeof(out)) == 0);
    n = tokenizer_encode(&c, " the", 4, 0, 0, ids, 64);
    TOKTEST_EXPECT(n == 1 && tokenizer_decode(&c, -1, ids[0], out, 3) == 2 && !strcmp(out, " t"));
    // too small a buffer: -1 and a message naming the file
    TOKTEST_EXPECT(tokenizer_encode(&a, "Once upon a time", 16, 1, 1, ids, 2) == -1 && strstr(peft_errbuf, "max_tokens") && strstr(peft_errbuf, "tok512.bin"));
    TOKTEST_EXPECT(tokenizer_encode(&a, "", 0, 0, 0, ids, 0) == 0 && tokenizer_encode(&a, "", 0, 1, 1, ids, 2) == 2);
    // added tokens written in the text are matched in tokenizer.json files, not in tokenizer.bin
    n = tokenizer_encode(&c, "<|end_of_text|>x<|begin_of_text|>", 33, 0, 0, ids, 64);
    TOKTEST_EXPECT(n == 3 && ids[0] == 1001 && ids[2] == 1000);
    TOKTEST_EXPECT(tokenizer_encode(&a, "<s>", 3, 0, 0, ids, 64) > 1);
    // the model may pad its vocabulary, but not have fewer ids than the tokenizer
    Tokenizer e;
    TOKTEST_EXPECT(tokenizer_load(&e, TOKTEST_TOK512, 511) == -1 && strstr(peft_errbuf, "512"));
    TOKTEST_EXPECT(tokenizer_load(&e, "tests/bytebpe/tokenizer.json", 1001) == -1);
    // tokenizer_config.json beside tokenizer.json names bos/eos (null: none)
    char dir[128], file[256];
    size_t jlen;
    char *json = read_file("tests/bytebpe/tokenizer.json", &jlen, (size_t)1 << 24);
    const char *cfg = "{\"bos_token\": null, \"eos_token\": {\"content\": \"<|begin_of_text|>\", \"special\": true}}";
    snprintf(dir, sizeof(dir), "/tmp/peft_toktest_%d_dir", (int)getpid());
    TOKTEST_EXPECT(json && mkdir_p(dir) == 0);
    if (json) {
        FILE *f;
        path_join(file, sizeof(file), dir, "tokenizer.json");
        if ((f = fopen(file, "wb"))) { fwrite(json, 1, jlen, f); fclose(f); }
        path_join(file, sizeof(file), dir, "tokenizer_config.json");
        if ((f = fopen(file, "wb"))) { fputs(cfg, f); fclose(f); }
        int loaded = tokenizer_load(&e, dir, 0) == 0;
        TOKTEST_EXPECT(loaded && e.bos_id == -1 && e.eos_id == 1000);
        if (loaded) tokenizer_free(&e);
        remove(file);
        path_join(file, sizeof(file), dir, "tokenizer.json");
        remove(file);
        rmdir(dir);
        free(json);
    }
    check(ok, name, "bos/eos ids (also from tokenizer_config.json), decoding of control tokens and the dummy prefix, max_tokens, added tokens in text, vocab size checks%s%s", why[0] ? ": " : "", why);
#undef TOKTEST_EXPECT
    tokenizer_free(&a); tokenizer_free(&b); tokenizer_free(&c); tokenizer_free(&d);
}

// write bytes to a scratch file; returns its path (static buffer)
static const char *toktest_file(const char *suffix, const void *data, size_t n) {
    static char path[256];
    snprintf(path, sizeof(path), "/tmp/peft_toktest_%d%s", (int)getpid(), suffix);
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(data, 1, n, f); fclose(f); }
    return path;
}
static size_t toktest_bin(unsigned char *buf, int32_t max_len, int count, const float *scores, const int32_t *lens, const char *const *pieces) {
    size_t n = 0;
    put_le(buf, &max_len, 4, 1); n += 4;
    for (int i = 0; i < count; i++) {
        put_le(buf + n, &scores[i], 4, 1); put_le(buf + n + 4, &lens[i], 4, 1); n += 8;
        size_t real = strlen(pieces[i]);
        memcpy(buf + n, pieces[i], real); n += real;
    }
    return n;
}

// Broken files: every one is refused with a message naming the file and the problem.
static void test_tokenizer_hostile(void) {
    const char *name = "tokenizer_hostile";
    unsigned char buf[256];
    int refused = 0, cases = 0;
    char msg[600] = "";
    Tokenizer t;
    float sc[3] = { 0, -1, -2 };
    const char *pcs[3] = { "a", "b", "ab" };
    struct { const char *what, *expect; int32_t max_len, len1; float score1; int cut, model_vocab; } bins[] = {
        { "empty file", "too short", 4, 1, -1, -1000, 0 },
        { "no pieces", "no pieces", 4, 1, -1, -1001, 0 },
        { "max_token_length 0", "max_token_length", 0, 1, -1, 0, 0 },
        { "negative max_token_length", "max_token_length", -5, 1, -1, 0, 0 },
        { "negative length", "length -7", 4, -7, -1, 0, 0 },
        { "huge length", "length 2000000000", 4, 2000000000, -1, 0, 0 },
        { "length over max_token_length", "max_token_length", 1, 2, -1, 0, 0 },
        { "truncated header", "truncated", 4, 1, -1, 3, 0 },
        { "bytes past the end", "past the end", 4, 1, -1, 1, 0 },
        { "NaN score", "not finite", 4, 1, NAN, 0, 0 },
        { "more pieces than the model", "model's vocabulary", 4, 1, -1, 0, 2 },
    };
    for (size_t i = 0; i < sizeof(bins) / sizeof(bins[0]); i++) {
        int32_t lens[3] = { 1, 1, 2 };
        float s2[3] = { sc[0], bins[i].score1, sc[2] };
        lens[1] = bins[i].len1;
        size_t n = toktest_bin(buf, bins[i].max_len, 3, s2, lens, pcs);
        if (bins[i].cut == -1000) n = 0;
        else if (bins[i].cut == -1001) n = 4;
        else n -= (size_t)bins[i].cut;
        const char *path = toktest_file(".bin", buf, n);
        cases++;
        int rc = tokenizer_load(&t, path, bins[i].model_vocab);
        if (rc == -1 && strstr(peft_errbuf, path) && strstr(peft_errbuf, bins[i].expect)) refused++;
        else if (!msg[0]) snprintf(msg, sizeof(msg), "; %s: rc %d, \"%.300s\"", bins[i].what, rc, rc ? peft_errbuf : "");
        if (rc == 0) tokenizer_free(&t);
    }
    static const struct { const char *json, *expect; } jsons[] = {
        { "{}", "no \"model\"" },
        { "[1, 2]", "no \"model\"" },
        { "{\"model\": {", "invalid JSON" },
        { "{\"model\": \"BPE\"}", "no \"model\"" },
        { "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", "not supported" },
        { "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", "not supported" },
        { "{\"model\": {\"type\": \"BPE\", \"merges\": []}}", "model.vocab" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": [], \"merges\": []}}", "model.vocab" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", "model.merges" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": {}}}", "model.merges" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"0\"}, \"merges\": []}}", "integer" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}", "integer" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1.5}, \"merges\": []}}", "integer" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999}, \"merges\": []}}", "integer" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", "empty vocabulary" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}", "twice" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]}}", "\"c\" is not in the vocabulary" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", "\"ab\" is not in the vocabulary" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"ab\"]}}", "merges[0]" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\"]]}}", "merges[0]" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [7]}}", "merges[0]" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"dropout\": 0.1}}", "dropout" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"continuing_subword_prefix\": \"##\"}}", "continuing_subword_prefix" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"unk_token\": \"<unk>\"}}", "unk_token" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"added_tokens\": [{\"id\": \"x\", \"content\": \"<s>\"}]}", "added_tokens[0]" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"added_tokens\": [{\"id\": 0, \"content\": \"<s>\"}]}", "added_tokens[0]" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"added_tokens\": {}}", "added_tokens" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"Lowercase\"}}", "unsupported normalizer \"Lowercase\"" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, \"content\": \" \"}}", "Replace" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"normalizers\": []}}", "no \"type\"" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}", "unsupported pre-tokenizer \"Whitespace\"" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"}, \"behavior\": \"Isolated\"}}", "unsupported pre-tokenizer pattern" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": 3}}", "pretokenizers" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"prepend_scheme\": \"sometimes\"}}", "prepend_scheme" },
    };
    for (size_t i = 0; i < sizeof(jsons) / sizeof(jsons[0]); i++) {
        const char *path = toktest_file(".json", jsons[i].json, strlen(jsons[i].json));
        cases++;
        int rc = tokenizer_load(&t, path, 0);
        if (rc == -1 && strstr(peft_errbuf, path) && strstr(peft_errbuf, jsons[i].expect)) refused++;
        else if (!msg[0]) snprintf(msg, sizeof(msg), "; json case %d: rc %d, \"%.300s\" (wanted \"%.100s\")", (int)i, rc, rc ? peft_errbuf : "", jsons[i].expect);
        if (rc == 0) tokenizer_free(&t);
    }
    cases++;
    if (tokenizer_load(&t, "/nonexistent/tokenizer.json", 0) == -1 && strstr(peft_errbuf, "cannot open")) refused++;
    remove(toktest_file(".bin", "", 0));
    remove(toktest_file(".json", "", 0));
    // and a good minimal file works: "ab" merges, "ba" does not
    const char *good = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}}";
    const char *path = toktest_file(".json", good, strlen(good));
    int ids[8], works = tokenizer_load(&t, path, 3) == 0;
    if (works) {
        works = tokenizer_encode(&t, "abba", 4, 1, 1, ids, 8) == 3 && ids[0] == 2 && ids[1] == 1 && ids[2] == 0;
        tokenizer_free(&t);
    }
    remove(path);
    check(refused == cases && works, name, "%d/%d broken tokenizer files refused with the expected message, a minimal good one works: %s%s",
          refused, cases, works ? "yes" : "no", msg);
}

// Corrupted and truncated copies of real files must load or fail cleanly (run it under ASan).
static void test_tokenizer_fuzz(void) {
    const char *name = "tokenizer_fuzz";
    const char *paths[2] = { TOKTEST_TOK512, "tests/spbpe/tokenizer.json" };
    if (!file_exists(paths[0]) || !file_exists(paths[1])) { skip(name, "needs tok512.bin and tests/spbpe/tokenizer.json"); return; }
    uint64_t rng = 7;
    int loads = 0, ok = 0, bad_rc = 0;
    for (int f = 0; f < 2; f++) {
        size_t n;
        char *orig = read_file(paths[f], &n, (size_t)1 << 24);
        if (!orig) { check(0, name, "%s", peft_errbuf); return; }
        char *copy = (char *)malloc_check(n);
        for (int r = 0; r < 300; r++) {
            memcpy(copy, orig, n);
            size_t len = n;
            if (r % 3 == 0) len = random_u32(&rng) % n;                    // truncate
            else for (int k = 0; k < 1 + r % 8; k++) copy[random_u32(&rng) % n] = (char)random_u32(&rng); // flip bytes
            Tokenizer t;
            int rc = tokenizer_load(&t, toktest_file(f ? ".json" : ".bin", copy, len), 0);
            loads++;
            if (rc == 0) {
                int ids[256];
                ok += tokenizer_encode(&t, "Hello, world! \xE6\x9D\xB1 \xFF", 19, 1, 1, ids, 256) >= 0;
                tokenizer_free(&t);
            } else {
                ok += rc == -1 && peft_errbuf[0];
                bad_rc += rc != -1;
            }
        }
        free(copy);
        free(orig);
    }
    remove(toktest_file(".bin", "", 0));
    remove(toktest_file(".json", "", 0));
    check(ok == loads && bad_rc == 0, name, "%d/%d corrupted or truncated files loaded and encoded, or were refused with a message", ok, loads);
}

// Encoding speed on tinyshakespeare (1.1 MB); the bound only catches an O(n^2) regression.
static void test_tokenizer_speed(void) {
    const char *name = "tokenizer_speed";
    const char *paths[4] = { TOKTEST_LLAMA2, "tests/spbpe/tokenizer.json", "tests/bytebpe/tokenizer.json", "tests/gpt2bpe/tokenizer.json" };
    size_t len;
    if (!file_exists(TOKTEST_SHAKESPEARE)) { skip(name, "needs " TOKTEST_SHAKESPEARE); return; }
    char *text = read_file(TOKTEST_SHAKESPEARE, &len, (size_t)1 << 26);
    if (!text) { check(0, name, "%s", peft_errbuf); return; }
    int *ids = (int *)malloc_check((3 * len + 8) * sizeof(int));
    for (int f = 0; f < 4; f++) {
        char what[64];
        snprintf(what, sizeof(what), "%s_%s", name, f == 0 ? "llama2_bin" : f == 1 ? "spbpe" : f == 2 ? "bytebpe" : "gpt2bpe");
        if (!file_exists(paths[f])) { skip(what, "tokenizer missing"); continue; }
        Tokenizer t;
        double t0 = time_sec();
        if (tokenizer_load(&t, paths[f], 0)) { check(0, what, "%s", peft_errbuf); continue; }
        double t1 = time_sec();
        int n = tokenizer_encode(&t, text, len, 1, 0, ids, (int)(3 * len + 8));
        double t2 = time_sec();
        // make cross-test runs the suite under qemu (PEFT_EMULATED set): the time bound does not apply there
        if (getenv("PEFT_EMULATED")) {
            check(n > 0, what, "%s: encode %zu bytes -> %d tokens", paths[f], len, n);
            skip(what, "time bound: running under an emulator (PEFT_EMULATED)");
        } else check(n > 0 && t2 - t1 < 20.0, what, "%s: load %.3f s, encode %zu bytes -> %d tokens in %.3f s (%.1f MB/s)",
                     paths[f], t1 - t0, len, n, t2 - t1, len / 1e6 / (t2 - t1));
        tokenizer_free(&t);
    }
    free(ids);
    free(text);
}

// make builds ./tokenizer.bin from the Llama 2 tokenizer.model with export.py: byte-identical to llama2.c's
static void test_tokenizer_bin_built(void) {
    const char *ref = SHARED "/tokenizers/llama2/tokenizer.bin";
    if (!have(ref)) { skip("tokenizer.bin built by make", "needs " SHARED "/tokenizers/llama2"); return; }
    if (!have("tokenizer.bin")) { check(0, "tokenizer.bin built by make", "./tokenizer.bin missing although %s exists (run make)", SHARED "/tokenizers/llama2/tokenizer.model"); return; }
    size_t n1, n2;
    char *a = read_file("tokenizer.bin", &n1, 1 << 26), *b = read_file(ref, &n2, 1 << 26);
    check(a && b && n1 == n2 && !memcmp(a, b, n1), "tokenizer.bin built by make == llama2.c's", "%zu bytes, byte-identical", n1);
    free(a); free(b);
}

// --- CLI: run ./peft, check exit status and output
static int run_cmd(const char *args, char *err, size_t errn, char *out, size_t outn) {
    char cmd[8192], ef[600], of[600];
    tmp_path(ef, sizeof(ef), "stderr.txt");
    tmp_path(of, sizeof(of), "stdout.txt");
    snprintf(cmd, sizeof(cmd), "%s %s %s >%s 2>%s", exec_prefix(), peft_bin(), args, of, ef);
    int rc = system(cmd);
    size_t n;
    char *e = read_file(ef, &n, 1 << 24), *o = read_file(of, &n, 1 << 24);
    if (err) snprintf(err, errn, "%s", e ? e : "");
    if (out) snprintf(out, outn, "%s", o ? o : "");
    free(e); free(o);
    return rc;
}
static int count_lines(const char *s) { int n = 0; for (; *s; s++) n += *s == '\n'; return n; }

#define STORIES SHARED "/models/stories260K/stories260K.bin"
#define TOK512 SHARED "/models/stories260K/tok512.bin"

// bad input: one line "peft: ...", non-zero exit, and no output folder left behind
static void expect_cli_error(const char *label, const char *args, const char *want, const char *must_not_exist) {
    char err[4096];
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    int ok = rc != 0 && !strncmp(err, "peft: ", 6) && count_lines(err) == 1 && (!want || strstr(err, want));
    if (must_not_exist) ok &= !have(must_not_exist);
    char *nl = strchr(err, '\n'); if (nl) *nl = 0;
    check(ok, "bad input", "%s -> exit %d, \"%s\"%s", label, rc, err, must_not_exist && have(must_not_exist) ? " (but output was written)" : "");
}

static void test_cli(void) {
    if (!file_exists(peft_bin())) { check(0, "CLI tests", "%s not built", peft_bin()); return; }
    // a small random model with the vocabulary of the committed tests/spbpe tokenizer, so these tests need no ../shared
    char STORIES_[600];
    const char *TOK_ = "tests/spbpe/tokenizer.json";
    Tokenizer tk;
    if (tokenizer_load(&tk, TOK_, 0)) { check(0, "CLI tests", "%s", peft_errbuf); return; }
    {
        Model tm;
        memset(&tm, 0, sizeof(tm));
        config_defaults(&tm.config);
        Config *c = &tm.config;
        c->dim = 48; c->hidden_dim = 96; c->n_layers = 3; c->n_heads = 6; c->n_kv_heads = 3; c->head_dim = 8; c->vocab_size = tk.vocab_size; c->seq_len = 128; c->tied = 1;
        tm.format = FMT_BIN_V1;
        model_alloc(&tm);
        uint64_t r = 11;
        for (size_t i = 0; i < tm.num_parameters; i++) tm.params_memory[i] = (floatX)((random_f32(&r) - 0.5f) * 0.2f);
        for (int i = 0; i < c->n_layers * c->dim; i++) { tm.params.rms_att[i] = 1; tm.params.rms_ffn[i] = 1; }
        for (int i = 0; i < c->dim; i++) tm.params.rms_final[i] = 1;
        tmp_path(STORIES_, sizeof(STORIES_), "tiny.bin");
        if (model_save_bin(&tm, STORIES_, 0)) { check(0, "CLI tests", "%s", peft_errbuf); model_free(&tm); tokenizer_free(&tk); return; }
        model_free(&tm);
    }
    tokenizer_free(&tk);
#undef STORIES
#undef TOK512
#define STORIES STORIES_
#define TOK512 TOK_
    char data[600], tiny[600], empty[600], out[600], args[4096], err[4096], o[4096];
    tmp_path(data, sizeof(data), "data.txt");
    tmp_path(tiny, sizeof(tiny), "tiny.txt");
    tmp_path(empty, sizeof(empty), "empty.txt");
    tmp_path(out, sizeof(out), "out_should_not_exist");
    // a few documents of real text (TinyStories style, separated by blank lines)
    const char *text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.\n\n"
                       "One day, a big dog came to the park. The dog was friendly and wanted to play with Lily.\n\n"
                       "Tom had a red ball. He liked to throw it high in the sky. His mom said, \"Be careful, Tom!\"\n\n"
                       "The cat sat on the mat. It was warm and happy. The sun was shining and the birds sang.\n";
    StrBuf big = { 0 };
    for (int i = 0; i < 6; i++) sb_puts(&big, text), sb_puts(&big, "\n");
    write_bytes(data, big.s, big.n);
    free(big.s);
    write_bytes(tiny, "Hi.", 3);
    write_bytes(empty, "", 0);
    // unknown flags and commands
    expect_cli_error("unknown command", "frobnicate", "unknown command", NULL);
    snprintf(args, sizeof(args), "train %s x.txt --frob 1", STORIES);
    expect_cli_error("unknown flag for train", args, "unknown flag", NULL);
    snprintf(args, sizeof(args), "generate %s --frob", STORIES);
    expect_cli_error("unknown flag for generate", args, "unknown flag", NULL);
    // bad training input: a clear error and nothing written
    snprintf(args, sizeof(args), "train %s %s -z %s -o %s", STORIES, empty, TOK512, out);
    expect_cli_error("empty data file", args, "empty", out);
    snprintf(args, sizeof(args), "train %s %s -z %s -o %s -T 64", STORIES, tiny, TOK512, out);
    expect_cli_error("data shorter than one window", args, "shorter than one window", out);
    snprintf(args, sizeof(args), "train %s %s -z %s -o %s -r 0", STORIES, data, TOK512, out);
    expect_cli_error("rank 0", args, "-r", out);
    snprintf(args, sizeof(args), "train %s %s -z %s -o %s -r 100", STORIES, data, TOK512, out); // dim 48
    expect_cli_error("rank larger than the layer", args, "larger than", out);
    snprintf(args, sizeof(args), "train %s %s -z %s -o %s --targets q_proj,foo_proj", STORIES, data, TOK512, out);
    expect_cli_error("unknown target", args, "unknown module 'foo_proj'", out);
    snprintf(args, sizeof(args), "train %s %s -z %s -o /proc/peft_cannot_write_here --steps 2 -T 32 -b 2", STORIES, data, TOK512);
    expect_cli_error("unwritable output folder", args, "/proc/peft_cannot_write_here", NULL);
    snprintf(args, sizeof(args), "train %s %s -z tests/bytebpe/tokenizer.json -o %s", STORIES, data, out);
    expect_cli_error("wrong tokenizer (1002 ids for a model of 800)", args, "vocabulary", out);
    snprintf(args, sizeof(args), "train %s /nonexistent/data.txt -z %s -o %s", STORIES, TOK512, out);
    expect_cli_error("missing data file", args, "/nonexistent/data.txt", out);
    // resume: stop at step 3 of 6, resume, and the final adapter is byte-identical to an uninterrupted run
    char a[600], b[600], fa[700], fb[700];
    tmp_path(a, sizeof(a), "run_a");
    tmp_path(b, sizeof(b), "run_b");
    snprintf(args, sizeof(args), "train %s %s -z %s -o %s --steps 6 --save-every 3 -T 32 -b 2 --dropout 0.1 --targets all-linear --val-frac 0.2 -s 5", STORIES, data, TOK512, a);
    int rc1 = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(args, sizeof(args), "train %s %s -z %s -o %s --steps 6 -T 32 -b 2 --dropout 0.1 --targets all-linear --val-frac 0.2 -s 5 --resume %s/checkpoint-3", STORIES, data, TOK512, b, a);
    int rc2 = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(fa, sizeof(fa), "%s/adapter_model.safetensors", a);
    snprintf(fb, sizeof(fb), "%s/adapter_model.safetensors", b);
    size_t na = 0, nb = 0;
    char *ba = read_file(fa, &na, 1 << 26), *bb = read_file(fb, &nb, 1 << 26);
    check(rc1 == 0 && rc2 == 0 && ba && bb && na == nb && !memcmp(ba, bb, na), "resume is bit-for-bit", "uninterrupted %s (%zu bytes) vs resumed at step 3 %s: %s", fa, na, fb,
          ba && bb && na == nb && !memcmp(ba, bb, na) ? "identical" : err);
    free(ba); free(bb);
    // the same training with 1 and with 2 threads: byte-identical adapters (every kernel sums in a fixed order)
    {
        char t1[600], t2[600], f1[700], f2[700];
        tmp_path(t1, sizeof(t1), "threads_1");
        tmp_path(t2, sizeof(t2), "threads_2");
        const char *saved = getenv("OMP_NUM_THREADS");
        char keep[64] = "";
        if (saved) snprintf(keep, sizeof(keep), "%s", saved);
        setenv("OMP_NUM_THREADS", "1", 1);
        snprintf(args, sizeof(args), "train %s %s -z %s -o %s --steps 3 -T 64 -b 3 --dropout 0.1 --targets all-linear --val-frac 0 -s 7", STORIES, data, TOK512, t1);
        int r1 = run_cmd(args, err, sizeof(err), NULL, 0);
        setenv("OMP_NUM_THREADS", "2", 1);
        snprintf(args, sizeof(args), "train %s %s -z %s -o %s --steps 3 -T 64 -b 3 --dropout 0.1 --targets all-linear --val-frac 0 -s 7", STORIES, data, TOK512, t2);
        int r2 = run_cmd(args, err, sizeof(err), NULL, 0);
        if (saved) setenv("OMP_NUM_THREADS", keep, 1); else unsetenv("OMP_NUM_THREADS");
        snprintf(f1, sizeof(f1), "%s/adapter_model.safetensors", t1);
        snprintf(f2, sizeof(f2), "%s/adapter_model.safetensors", t2);
        size_t n1 = 0, n2 = 0;
        char *x1 = read_file(f1, &n1, 1 << 26), *x2 = read_file(f2, &n2, 1 << 26);
        int same = r1 == 0 && r2 == 0 && x1 && x2 && n1 == n2 && !memcmp(x1, x2, n1);
        check(same, "training with 1 and 2 threads is bit-for-bit the same", "3 steps, all-linear, dropout: %s vs %s %s", f1, f2, same ? "identical" : err);
        free(x1); free(x2);
    }
    // the trained adapter loads back, and save -> load -> save gives the same bytes
    Model m;
    if (!model_load(&m, STORIES)) {
        Lora lo; LoraConfig lc;
        char re[700];
        tmp_path(re, sizeof(re), "resaved");
        int ok = !lora_load(&lo, &lc, &m.config, a, 0) && !lora_save(&lo, &lc, re, NULL);
        char fr[800];
        snprintf(fr, sizeof(fr), "%s/adapter_model.safetensors", re);
        char *x = read_file(fa, &na, 1 << 26), *y = read_file(fr, &nb, 1 << 26);
        check(ok && x && y && na == nb && !memcmp(x, y, na), "adapter load -> save round trip", "%s and %s byte-identical", fa, fr);
        free(x); free(y);
        if (ok) { lora_free(&lo); free(lc.layers); }
        model_free(&m);
    }
    // PEFT's own adapter: load -> save gives the same tensors and an equivalent config
    const char *pdir = SHARED "/reference/peft/all_r8_rslora";
    if (have(pdir) && !model_load(&m, SHARED "/models/stories260K-hf-f32")) {
        Lora lo; LoraConfig lc;
        char re[700];
        tmp_path(re, sizeof(re), "peft_resaved");
        int ok = !lora_load(&lo, &lc, &m.config, pdir, 0) && !lora_save(&lo, &lc, re, NULL);
        SafeTensors s1, s2;
        char f1[700], f2[800];
        snprintf(f1, sizeof(f1), "%s/adapter_model.safetensors", pdir);
        snprintf(f2, sizeof(f2), "%s/adapter_model.safetensors", re);
        int same = ok && !st_open(&s1, f1) && !st_open(&s2, f2) && s1.n == s2.n;
        for (int i = 0; same && i < s1.n; i++) {
            STTensor *t2 = st_find(&s2, s1.t[i].name);
            same = t2 && t2->dtype == s1.t[i].dtype && t2->numel == s1.t[i].numel;
            if (same) {
                char *r1 = malloc_check(s1.t[i].end - s1.t[i].begin), *r2 = malloc_check(t2->end - t2->begin);
                same = !st_read_raw(&s1, &s1.t[i], r1) && !st_read_raw(&s2, t2, r2) && !memcmp(r1, r2, s1.t[i].end - s1.t[i].begin);
                free(r1); free(r2);
            }
        }
        LoraConfig lc2; Lora lo2;
        int eq = same && !lora_load(&lo2, &lc2, &m.config, re, 0) && lc2.r == lc.r && lc2.alpha == lc.alpha && lc2.rslora == lc.rslora && lc2.targets == lc.targets;
        check(eq, "PEFT adapter -> load -> save", "%d tensors byte-equal, config r=%d alpha=%g rslora=%d targets equal", s1.n, lc.r, lc.alpha, lc.rslora);
        if (same) { st_close(&s1); st_close(&s2); }
        if (eq) { lora_free(&lo2); free(lc2.layers); }
        if (ok) { lora_free(&lo); free(lc.layers); }
        model_free(&m);
    }
    // eval prints "loss L perplexity P tokens N" last, and the adapter changes it
    snprintf(args, sizeof(args), "eval %s %s -z %s -T 32", STORIES, data, TOK512);
    int rc = run_cmd(args, err, sizeof(err), o, sizeof(o));
    double l0 = 0, p0 = 0; long n0 = 0;
    int parsed = sscanf(o, "loss %lf perplexity %lf tokens %ld", &l0, &p0, &n0) == 3;
    check(rc == 0 && parsed && fabs(exp(l0) - p0) < 1e-3 * p0 && n0 > 100, "eval output", "%s", o);
    // freeze and full fine-tuning write a model that loads
    char fz[600], fm[700];
    tmp_path(fz, sizeof(fz), "run_freeze");
    snprintf(args, sizeof(args), "train %s %s -z %s -o %s --finetuning-type freeze --freeze-trainable-layers 1 --steps 2 -T 32 -b 2", STORIES, data, TOK512, fz);
    rc = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(fm, sizeof(fm), "%s/model.bin", fz);
    Model mf;
    int lok = !rc && !model_load(&mf, fm);
    if (lok) { Model m0; if (!model_load(&m0, STORIES)) { // only the last layer's weights changed
            size_t L = (size_t)m0.config.n_layers, per = m0.param_sizes[2] / L; int first_same = !memcmp(mf.params.wq, m0.params.wq, per * (L - 1) * sizeof(floatX)), last_diff = memcmp(mf.params.wq + per * (L - 1), m0.params.wq + per * (L - 1), per * sizeof(floatX)) != 0;
            int emb_same = !memcmp(mf.params.embed, m0.params.embed, m0.param_sizes[0] * sizeof(floatX));
            check(first_same && last_diff && emb_same, "freeze trains only the last layer", "layers 0-%zu and embeddings unchanged, layer %zu changed", L - 2, L - 1); model_free(&m0); }
        model_free(&mf); }
    else check(0, "freeze fine-tuning", "%s", err);
#undef STORIES
#undef TOK512
#define STORIES SHARED "/models/stories260K/stories260K.bin"
#define TOK512 SHARED "/models/stories260K/tok512.bin"
}

// --- adapters: hostile files, several adapters, merge/info CLI, training from an adapter
static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

// copy the qv_r4 adapter into dir, with its config replaced (cfg != NULL) and tensors edited by `edit`
typedef void (*TensorEdit)(STWrite *ts, int *n, floatX **bufs);
static int make_adapter(const char *dir, const char *cfg, TensorEdit edit) {
    const char *src = SHARED "/reference/peft/qv_r4";
    char p[700];
    mkdir_p(dir);
    snprintf(p, sizeof(p), "%s/adapter_config.json", src);
    size_t n;
    char *c = read_file(p, &n, 1 << 20);
    if (!c) return -1;
    snprintf(p, sizeof(p), "%s/adapter_config.json", dir);
    write_text(p, cfg ? cfg : c);
    free(c);
    SafeTensors st;
    snprintf(p, sizeof(p), "%s/adapter_model.safetensors", src);
    if (st_open(&st, p)) return -1;
    STWrite ts[64];
    floatX *bufs[64];
    int nt = 0;
    memset(ts, 0, sizeof(ts));
    for (int i = 0; i < st.n && nt < 60; i++) {
        STTensor *t = &st.t[i];
        snprintf(ts[nt].name, sizeof(ts[nt].name), "%s", t->name);
        ts[nt].dtype = DT_F32; ts[nt].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) ts[nt].shape[d] = t->shape[d];
        bufs[nt] = malloc_check((t->numel + 64) * sizeof(floatX));
        st_read_floatX(&st, t, bufs[nt]);
        ts[nt].fdata = bufs[nt];
        nt++;
    }
    st_close(&st);
    if (edit) edit(ts, &nt, bufs);
    snprintf(p, sizeof(p), "%s/adapter_model.safetensors", dir);
    int rc = st_write(p, ts, nt, NULL);
    for (int i = 0; i < nt; i++) free(bufs[i]);
    return rc;
}
static void edit_wrong_shape(STWrite *ts, int *n, floatX **b) { (void)n; (void)b; ts[0].shape[1] = 32; } // lora_A (4,64) -> (4,32): fewer values, fine for writing
static void edit_missing(STWrite *ts, int *n, floatX **b) { (void)ts; free(b[*n - 1]); (*n)--; }   // drop the last tensor (a lora_B)
static void edit_extra(STWrite *ts, int *n, floatX **b) { ts[*n] = ts[0]; b[*n] = malloc_check(4 * 64 * sizeof(floatX)); ts[*n].fdata = b[*n]; memset(b[*n], 0, 4 * 64 * sizeof(floatX)); snprintf(ts[*n].name, sizeof(ts[*n].name), "base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight"); (*n)++; }
static void edit_nan(STWrite *ts, int *n, floatX **b) { (void)ts; (void)n; b[1][3] = NAN; }
static floatX *mts_head; // modules_to_save: a replacement lm_head (512 x 64)
static void edit_add_head(STWrite *ts, int *n, floatX **b) {
    memset(&ts[*n], 0, sizeof(STWrite));
    snprintf(ts[*n].name, sizeof(ts[*n].name), "base_model.model.lm_head.weight");
    ts[*n].dtype = DT_F32; ts[*n].ndim = 2; ts[*n].shape[0] = 512; ts[*n].shape[1] = 64;
    b[*n] = malloc_check(512 * 64 * sizeof(floatX));
    memcpy(b[*n], mts_head, 512 * 64 * sizeof(floatX));
    ts[*n].fdata = b[*n];
    (*n)++;
}
static void edit_rank8(STWrite *ts, int *n, floatX **b) { // both A and B of every module rank 4 -> claim via config r=8 instead
    (void)ts; (void)n; (void)b; }
static void edit_layer99(STWrite *ts, int *n, floatX **b) { (void)n; (void)b; char *p = strstr(ts[0].name, "layers.0."); if (p) { char tmp[256]; snprintf(tmp, sizeof(tmp), "%.*slayers.99.%s", (int)(p - ts[0].name), ts[0].name, p + 9); snprintf(ts[0].name, sizeof(ts[0].name), "%s", tmp); } }

static void expect_adapter_error(const char *label, const char *cfg, TensorEdit edit, const char *want) {
    char dir[600];
    tmp_path(dir, sizeof(dir), "bad_adapter");
    char cmd[700]; snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir); if (system(cmd)) {}
    if (make_adapter(dir, cfg, edit)) { check(0, "hostile adapter", "%s: could not build the fixture: %s", label, peft_errbuf); return; }
    Model m;
    if (model_load(&m, SHARED "/models/stories260K-hf-f32")) return;
    Lora lo; LoraConfig lc;
    int rc = lora_load(&lo, &lc, &m.config, dir, 0);
    if (!rc) { lora_free(&lo); free(lc.layers); }
    check(rc == -1 && (!want || strstr(peft_errbuf, want)), "hostile adapter", "%s -> %s", label, rc ? peft_errbuf : "ACCEPTED");
    model_free(&m);
}

static void test_adapters(void) {
    const char *qv = SHARED "/reference/peft/qv_r4", *all = SHARED "/reference/peft/all_r8_rslora";
    if (!have(qv) || !have(all)) { skip("adapter tests", "need " SHARED "/reference/peft"); return; }
    const char *cfg_ok = "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"target_modules\":[\"q_proj\",\"v_proj\"],\"bias\":\"none\"}";
    {
        char dir[600]; tmp_path(dir, sizeof(dir), "good_adapter");
        make_adapter(dir, cfg_ok, NULL);
        Model m; Lora lo; LoraConfig lc;
        int ok = !model_load(&m, SHARED "/models/stories260K-hf-f32") && !lora_load(&lo, &lc, &m.config, dir, 0);
        check(ok, "adapter rewritten from PEFT's loads (control for the hostile cases)", "%s", ok ? "loads" : peft_errbuf);
        if (ok) { lora_free(&lo); free(lc.layers); model_free(&m); }
    }
    expect_adapter_error("wrong tensor shape", cfg_ok, edit_wrong_shape, "expected shape [4, 64] but found [4, 32]");
    expect_adapter_error("missing tensor", cfg_ok, edit_missing, "but no lora_");
    expect_adapter_error("extra tensor", cfg_ok, edit_extra, "unexpected tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_C.weight'");
    expect_adapter_error("NaN value", cfg_ok, edit_nan, "non-finite");
    expect_adapter_error("rank mismatch between config and tensors", "{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":8,\"target_modules\":[\"q_proj\",\"v_proj\"]}", edit_rank8, "says r=8");
    expect_adapter_error("layer beyond the model", cfg_ok, edit_layer99, "layer 99");
    expect_adapter_error("config JSON error", "{\"peft_type\":\"LORA\",\"r\":4,", NULL, "invalid JSON");
    expect_adapter_error("config with NaN", "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":NaN}", NULL, "invalid JSON");
    expect_adapter_error("not LoRA", "{\"peft_type\":\"IA3\",\"r\":4,\"lora_alpha\":8}", NULL, "only LORA");
    expect_adapter_error("bias all", "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"bias\":\"all\"}", NULL, "bias 'all'");
    expect_adapter_error("fan_in_fan_out", "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"fan_in_fan_out\":true}", NULL, "fan_in_fan_out");
    expect_adapter_error("r missing", "{\"peft_type\":\"LORA\",\"lora_alpha\":8}", NULL, "'r'");
    {
        char dir[600]; tmp_path(dir, sizeof(dir), "pickled");
        mkdir_p(dir);
        char p[700]; snprintf(p, sizeof(p), "%s/adapter_config.json", dir); write_text(p, cfg_ok);
        snprintf(p, sizeof(p), "%s/adapter_model.bin", dir); write_text(p, "PK");
        Model m; Lora lo; LoraConfig lc;
        if (!model_load(&m, SHARED "/models/stories260K-hf-f32")) {
            int rc = lora_load(&lo, &lc, &m.config, dir, 0);
            check(rc == -1 && strstr(peft_errbuf, "pickled"), "hostile adapter", "adapter_model.bin pickle -> %s", peft_errbuf);
            model_free(&m);
        }
    }
    // modules_to_save: an adapter carrying a full lm_head replaces the (tied) classifier, not the embedding
    {
        Model mt;
        if (!model_load(&mt, SHARED "/models/stories260K-hf-f32")) {
            uint64_t r = 9;
            mts_head = malloc_check(512 * 64 * sizeof(floatX));
            for (int i = 0; i < 512 * 64; i++) mts_head[i] = mt.params.embed[i] + (floatX)((random_f32(&r) - 0.5f) * 0.5f);
            char dir[600]; tmp_path(dir, sizeof(dir), "mts_adapter");
            make_adapter(dir, "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"modules_to_save\":[\"lm_head\"]}", edit_add_head);
            Lora la, lq; LoraConfig ka, kq;
            int ok = !lora_load(&la, &ka, &mt.config, dir, 0) && !lora_load(&lq, &kq, &mt.config, SHARED "/reference/peft/qv_r4", 0);
            if (ok) {
                int ids2[32];
                for (int i = 0; i < 32; i++) ids2[i] = (i * 37 + 5) % 512;
                float *got = dump_logits(&mt, &la, ids2, 1, 32, NULL, NULL);
                // reference: the same model untied, its classifier replaced, with the plain qv_r4 adapter
                Model mu = mt;
                mu.config.tied = 0;
                model_alloc(&mu);
                memcpy(mu.params_memory, mt.params_memory, mt.num_parameters * sizeof(floatX));
                memcpy(mu.params.wcls, mts_head, 512 * 64 * sizeof(floatX));
                float *want = dump_logits(&mu, &lq, ids2, 1, 32, NULL, NULL);
                size_t where;
                double e = max_abs_diff(got, want, 32 * 512, &where);
                check(e <= 1e-5, "modules_to_save lm_head replaces the classifier", "max abs diff %.2e vs an untied model with that head", e);
                free(got); free(want); model_free(&mu);
                lora_free(&la); lora_free(&lq); free(ka.layers); free(kq.layers);
            } else check(0, "modules_to_save adapter loads", "%s", peft_errbuf);
            expect_adapter_error("modules_to_save weight not listed in the config", cfg_ok, edit_add_head, "not listed in modules_to_save");
            expect_adapter_error("modules_to_save entry unsupported", "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"modules_to_save\":[\"score\"]}", NULL, "'score' is not supported");
            expect_adapter_error("modules_to_save weight missing", "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"modules_to_save\":[\"embed_tokens\"]}", NULL, "no such weight");
            free(mts_head);
            model_free(&mt);
        }
    }
    // modules_to_save written by real PEFT 0.21 (tests/make_mts_fixture.py): embed_tokens and lm_head replaced
    {
        Model mt;
        size_t nr;
        int fb, ft;
        float *rl = load_f32("tests/mts/reference.safetensors", "logits", &nr);
        int *fid = load_ints("tests/mts/reference.safetensors", "input_ids", &fb, &ft);
        if (rl && fid && !model_load(&mt, SHARED "/models/stories260K-hf-f32")) {
            Model mu = mt; // the fixture's base: stories260K untied, lm_head a copy of the embedding
            mu.config.tied = 0;
            model_alloc(&mu);
            memcpy(mu.params_memory, mt.params_memory, mt.num_parameters * sizeof(floatX));
            memcpy(mu.params.wcls, mt.params.embed, (size_t)512 * 64 * sizeof(floatX));
            Lora la; LoraConfig ka;
            if (!lora_load(&la, &ka, &mu.config, "tests/mts/adapter", 0)) {
                float *got = dump_logits(&mu, &la, fid, fb, ft, NULL, NULL);
                size_t where;
                double e = max_abs_diff(got, rl, nr, &where);
                check(e <= 1e-4 && la.embed && la.lm_head, "PEFT modules_to_save adapter (embed_tokens + lm_head)", "max abs error %.2e vs transformers + PEFT", e);
                free(got); lora_free(&la); free(ka.layers);
            } else check(0, "PEFT modules_to_save adapter loads", "%s", peft_errbuf);
            model_free(&mu); model_free(&mt);
        }
        free(rl); free(fid);
    }
    // alpha_pattern and rank_pattern pick per-module values
    {
        Model mt; Lora la; LoraConfig ka;
        char dir[600]; tmp_path(dir, sizeof(dir), "pattern_adapter");
        make_adapter(dir, "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"alpha_pattern\":{\"model.layers.0.self_attn.q_proj\":16,\"v_proj\":2},\"rank_pattern\":{\"layers.1.self_attn.q_proj\":4}}", NULL);
        int ok = !model_load(&mt, SHARED "/models/stories260K-hf-f32") && !lora_load(&la, &ka, &mt.config, dir, 0);
        check(ok && la.mods[0 * NUM_TARGETS + TGT_Q].scale == 4 && la.mods[1 * NUM_TARGETS + TGT_Q].scale == 2 && la.mods[2 * NUM_TARGETS + TGT_V].scale == 0.5f,
              "alpha_pattern / rank_pattern", "layer 0 q_proj scale 16/4, layer 1 q_proj 8/4, v_proj 2/4%s", ok ? "" : peft_errbuf);
        if (ok) { lora_free(&la); free(ka.layers); model_free(&mt); }
        expect_adapter_error("rank_pattern disagreeing with the tensors", "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"rank_pattern\":{\"layers.1.self_attn.q_proj\":2}}", NULL, "says r=2");
    }
    // two adapters with weights 0.7 and 0.3 == the model with 0.7*s1*B1A1 + 0.3*s2*B2A2 added by plain arithmetic
    Model m, ref;
    if (model_load(&m, SHARED "/models/stories260K-hf-f32") || model_load(&ref, SHARED "/models/stories260K-hf-f32")) return;
    Lora l1, l2, comb; LoraConfig c1, c2;
    if (lora_load(&l1, &c1, &m.config, qv, 0) || lora_load(&l2, &c2, &m.config, all, 0)) { check(0, "two adapters", "%s", peft_errbuf); return; }
    Lora *ins[2] = { &l1, &l2 };
    float ws[2] = { 0.7f, 0.3f };
    lora_combine(&comb, ins, ws, 2, &m.config);
    for (int k = 0; k < 2; k++) {
        Lora *lo = ins[k];
        for (int i = 0; i < lo->n_layers * NUM_TARGETS; i++) {
            LoraModule *md = &lo->mods[i];
            if (!md->r) continue;
            floatX *W = model_weight(&ref, i / NUM_TARGETS, i % NUM_TARGETS);
            for (int o = 0; o < md->out; o++)
                for (int x = 0; x < md->in; x++) {
                    double d = 0;
                    for (int j = 0; j < md->r; j++) d += (double)md->B[(size_t)o * md->r + j] * md->A[(size_t)j * md->in + x];
                    W[(size_t)o * md->in + x] += (floatX)(ws[k] * md->scale * d);
                }
        }
    }
    int B = 2, T = 32, ids[64];
    uint64_t rng = 3;
    for (int i = 0; i < B * T; i++) ids[i] = (int)(random_u32(&rng) % 512);
    float *got = dump_logits(&m, &comb, ids, B, T, NULL, NULL), *want = dump_logits(&ref, NULL, ids, B, T, NULL, NULL);
    float *single = dump_logits(&m, &l1, ids, B, T, NULL, NULL);
    size_t where, nl = (size_t)B * T * m.config.vocab_size;
    double e = max_abs_diff(got, want, nl, &where), e1 = max_abs_diff(single, want, nl, &where);
    check(e <= 1e-4 && e1 > 1e-2, "two adapters 0.7 + 0.3 == arithmetic merge of their scaled deltas", "max abs error %.2e <= 1e-4 (one adapter alone differs by %.2f)", e, e1);
    free(got); free(want); free(single);
    lora_free(&l1); lora_free(&l2); lora_free(&comb); free(c1.layers); free(c2.layers); model_free(&m); model_free(&ref);
    // the CLI: several -a, merge with --dtype bf16, info
    char out[600], args[4096], err[4096], o[8192], mdir[600];
    tmp_path(out, sizeof(out), "two.safetensors");
    tmp_path(mdir, sizeof(mdir), "merged_bf16");
    char in[600];
    tmp_path(in, sizeof(in), "ids.safetensors");
    STWrite iw; memset(&iw, 0, sizeof(iw));
    snprintf(iw.name, sizeof(iw.name), "input_ids"); iw.dtype = DT_I32; iw.ndim = 2; iw.shape[0] = B; iw.shape[1] = T; iw.idata = ids;
    st_write(in, &iw, 1, NULL);
    snprintf(args, sizeof(args), "merge %s/models/stories260K-hf-f32 %s:0.7 %s:0.3 -o %s --dtype bf16", SHARED, qv, all, mdir);
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    Model mb;
    int ok = !rc && !model_load(&mb, mdir);
    check(ok && mb.hf_dtype == DT_BF16, "merge --dtype bf16 writes a loadable BF16 folder", "%s", ok ? "dtype BF16" : err);
    if (ok) model_free(&mb);
    snprintf(args, sizeof(args), "info %s", qv);
    rc = run_cmd(args, err, sizeof(err), o, sizeof(o));
    check(!rc && strstr(o, "r 4") && strstr(o, "q_proj") && strstr(o, "lora_B.weight") && strstr(o, "parameters:"), "info on an adapter", "%.120s...", o);
    snprintf(args, sizeof(args), "info %s/models/stories260K/stories260K.bin", SHARED);
    rc = run_cmd(args, err, sizeof(err), o, sizeof(o));
    check(!rc && strstr(o, "dim 64") && strstr(o, "parameters: 260032"), "info on a model", "%.160s...", o);
    // training from an existing PEFT adapter (is_trainable=True): same keys and config, new values
    if (have(STORIES) && have(TOK512)) {
        char data[600], od[600];
        tmp_path(data, sizeof(data), "data.txt");
        tmp_path(od, sizeof(od), "from_adapter");
        snprintf(args, sizeof(args), "train %s/models/stories260K-hf-f32 %s -z %s -o %s --resume-adapter %s --steps 3 -T 32 -b 2 --val-frac 0", SHARED, data, TOK512, od, qv);
        rc = run_cmd(args, err, sizeof(err), NULL, 0);
        Model mm; Lora a0, a1; LoraConfig k0, k1;
        ok = !rc && !model_load(&mm, STORIES) && !lora_load(&a0, &k0, &mm.config, qv, 0) && !lora_load(&a1, &k1, &mm.config, od, 0);
        int same_shape = ok && a0.num_params == a1.num_params && k0.r == k1.r && k0.alpha == k1.alpha && k0.targets == k1.targets;
        int changed = same_shape && memcmp(a0.params, a1.params, a0.num_params * sizeof(floatX)) != 0;
        check(same_shape && changed, "train --resume-adapter continues a PEFT adapter", "%s", ok ? "same r, alpha, targets; values trained" : err);
        if (ok) { lora_free(&a0); lora_free(&a1); free(k0.layers); free(k1.layers); model_free(&mm); }
    }
}


// llama2.c version-2 checkpoints (int8, groups of 64), written here the way llama2.c's export.py does
// (scale = max|w|/127, q = round(w/scale) over the flattened tensor), read by load_bin
static void q80_write(FILE *f, const floatX *w, size_t n, int gs, floatX *deq) {
    for (size_t g = 0; g < n / gs; g++) {
        double wmax = 0;
        for (int i = 0; i < gs; i++) wmax = max_err(wmax, fabs((double)w[g * gs + i]));
        float scale = (float)(wmax / 127.0);
        for (int i = 0; i < gs; i++) {
            float qf = scale > 0 ? (float)w[g * gs + i] / scale : 0;
            int8_t q = (int8_t)lrintf(qf);
            fwrite(&q, 1, 1, f);
            deq[g * gs + i] = q * scale;
        }
    }
    for (size_t g = 0; g < n / gs; g++) {
        double wmax = 0;
        for (int i = 0; i < gs; i++) wmax = max_err(wmax, fabs((double)w[g * gs + i]));
        float scale = (float)(wmax / 127.0);
        fwrite_le(&scale, 4, 1, f);
    }
}
static void test_bin_v2(void) {
    if (!have(STORIES)) { skip("llama2.c v2 (int8) checkpoint", "needs " STORIES); return; }
    Model m, d;
    if (model_load(&m, STORIES) || model_load(&d, STORIES)) return;
    Config *c = &m.config;
    char path[600];
    tmp_path(path, sizeof(path), "v2.bin");
    FILE *f = fopen(path, "wb");
    unsigned char hdr[256] = { 0 };
    uint32_t magic = 0x616b3432; int32_t version = 2, gs = 64;
    int32_t h[7] = { c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, c->seq_len };
    put_le(hdr, &magic, 4, 1); put_le(hdr + 4, &version, 4, 1); put_le(hdr + 8, h, 4, 7); hdr[36] = 1; put_le(hdr + 37, &gs, 4, 1);
    fwrite(hdr, 1, 256, f);
    model_permute_qk(&m, 0); model_permute_qk(&d, 0); // the file holds llama2.c's interleaved q/k rows
    ParameterTensors *p = &m.params, *q = &d.params;
    size_t *sz = m.param_sizes, L = (size_t)c->n_layers;
    for (size_t i = 0; i < sz[1]; i++) { float v = (float)p->rms_att[i]; fwrite_le(&v, 4, 1, f); }
    for (size_t i = 0; i < sz[6]; i++) { float v = (float)p->rms_ffn[i]; fwrite_le(&v, 4, 1, f); }
    for (size_t i = 0; i < sz[10]; i++) { float v = (float)p->rms_final[i]; fwrite_le(&v, 4, 1, f); }
    q80_write(f, p->embed, sz[0], gs, q->embed);
    floatX *src[7] = { p->wq, p->wk, p->wv, p->wo, p->w1, p->w2, p->w3 }, *dst[7] = { q->wq, q->wk, q->wv, q->wo, q->w1, q->w2, q->w3 };
    size_t tsz[7] = { sz[2], sz[3], sz[4], sz[5], sz[7], sz[8], sz[9] };
    for (int t = 0; t < 7; t++) for (size_t l = 0; l < L; l++) q80_write(f, src[t] + l * tsz[t] / L, tsz[t] / L, gs, dst[t] + l * tsz[t] / L);
    fclose(f);
    model_permute_qk(&d, 1); // d: the expected dequantized model, in peft.c's layout
    Model v;
    int rc = model_load(&v, path);
    // every matrix, dequantized, must equal q*scale as llama2.c computes it (v2 files stay int8 in memory)
    int same = !rc;
    for (int l = 0; same && l < c->n_layers; l++)
        for (int t = 0; same && t < NUM_TARGETS; t++) {
            Weight w = layer_weight(&v, l, t);
            const floatX *want = model_weight(&d, l, t);
            int in, out;
            target_dims(c, t, &in, &out);
            float *row = malloc_check((size_t)in * out * sizeof(float));
            if (w.q) qtensor_dequant(row, w.q, 0, (size_t)in * out);
            for (size_t i = 0; i < (size_t)in * out; i++) same &= (w.q ? row[i] : (float)w.f[i]) == (float)want[i];
            free(row);
        }
    check(same && v.format == FMT_BIN_V2, "llama2.c v2 (int8) checkpoint loads", "%s", rc ? peft_errbuf : same ? "every matrix equals q*scale of llama2.c's q80" : "weights differ");
    if (!rc) {
        model_permute_qk(&m, 1);
        int ids[32];
        for (int i = 0; i < 32; i++) ids[i] = (i * 53 + 7) % 512;
        float *a = dump_logits(&m, NULL, ids, 1, 32, NULL, NULL), *b = dump_logits(&v, NULL, ids, 1, 32, NULL, NULL);
        size_t where;
        printf("INFO v2 int8 vs fp32 logits: max abs diff %.4f\n", max_abs_diff(a, b, 32 * 512, &where));
        free(a); free(b); model_free(&v);
    }
    model_free(&m); model_free(&d);
}

// --- quantization: formats, bounds, bitsandbytes' NF4, quantized matmuls, QLoRA gradients, files
// bitsandbytes' NF4 code values as published in bitsandbytes/functional.py (get_4bit_type "nf4") and
// csrc/kernels.cu (dDequantizeNF4), https://github.com/bitsandbytes-foundation/bitsandbytes
static const float bnb_nf4[16] = { -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f };
// the thresholds of bitsandbytes' dQuantizeNF4 decision tree, in code order
static const float bnb_nf4_mid[15] = { -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
    0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f, 0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f };

static void test_nf4_bitsandbytes(void) {
    int same = !memcmp(nf4_code, bnb_nf4, sizeof(bnb_nf4));
    check(same, "nf4 code book == bitsandbytes'", "16 values bit-identical");
    // every threshold is the float midpoint of its neighbours; on it the lower code wins, just above it the upper
    int bad = 0, badmid = 0;
    for (int i = 0; i < 15; i++) {
        if (nf4_quantize_value(bnb_nf4_mid[i]) != i) bad++;
        if (nf4_quantize_value(nextafterf(bnb_nf4_mid[i], 2.0f)) != i + 1) bad++;
        float mid = (float)(((double)bnb_nf4[i] + bnb_nf4[i + 1]) / 2);
        if (fabsf(mid - bnb_nf4_mid[i]) > 1e-7f) badmid++;
    }
    for (int i = 0; i < 16; i++) if (nf4_quantize_value(bnb_nf4[i]) != i) bad++;
    check(!bad && !badmid, "nf4 ties at the midpoints (bitsandbytes' tree)", "15 midpoints -> lower code, next float -> upper, 16 codes -> themselves; %d wrong, %d thresholds off the midpoint", bad, badmid);
    // nearest-value choice against a brute-force search (ties to the lower code) on 200k values
    uint64_t r = 5;
    int wrong = 0;
    for (int k = 0; k < 200000; k++) {
        float x = 2.2f * random_f32(&r) - 1.1f;
        int best = 0;
        for (int j = 1; j < 16; j++) if (x > bnb_nf4_mid[j - 1]) best = j;
        float d = fabsf(x - bnb_nf4[best]);
        for (int j = 0; j < 16; j++) if (fabsf(x - bnb_nf4[j]) < d) wrong++; // nothing strictly nearer
        if (nf4_quantize_value(x) != best) wrong++;
    }
    check(!wrong, "nf4 nearest value", "200000 random values in [-1.1, 1.1]: %d disagree with brute force", wrong);
    // block math: a block of 64 = 3 * code values: absmax 3, codes exact, element 2i in the high nibble
    QTensor t;
    qtensor_alloc(&t, QT_NF4, 1, 64, 0);
    floatX w[64];
    for (int i = 0; i < 64; i++) w[i] = 3.0f * bnb_nf4[(i * 7) % 16];
    w[5] = 3.0f; // absmax
    qtensor_quantize(&t, w, "test", "block");
    float back[64];
    qtensor_dequant(back, &t, 0, 64);
    int exact = t.scale[0] == 3.0f && (t.q[0] >> 4) == 0 && (t.q[0] & 15) == 7;
    for (int i = 0; i < 64; i++) if (back[i] != (float)w[i]) exact = 0;
    check(exact, "nf4 block math", "absmax %g, first byte 0x%02x (codes 0 then 7), all 64 values exact", t.scale[0], t.q[0]);
    qtensor_free(&t);
    // the dynamic map of double quantization: 256 sorted values, 0 and 1 present, 1e-6 scale smallest
    dynamic_map(dyn_code);
    int sorted = 1, has0 = 0, has1 = 0;
    for (int i = 0; i < 256; i++) { if (i && dyn_code[i] < dyn_code[i - 1]) sorted = 0; has0 |= dyn_code[i] == 0; has1 |= dyn_code[i] == 1.0f; }
    check(sorted && has0 && has1 && fabsf(dyn_code[0] + 0.99296875f) < 1e-6f, "double-quant dynamic map", "256 sorted values in [%.8f, %g], 0 and 1 present", dyn_code[0], dyn_code[255]);
}

// quantize -> dequantize errors within each format's bound on random and adversarial blocks
static void test_quant_bounds(void) {
    const int n = 64 * 40;
    floatX *w = malloc_check(n * sizeof(floatX));
    float *back = malloc_check(n * sizeof(float));
    const char *cases[] = { "random", "zeros", "outlier", "denormals", "mixed scales" };
    for (int type = QT_INT8; type <= QT_NF4; type++)
        for (int dq = 0; dq <= (type == QT_NF4); dq++)
            for (int cs = 0; cs < 5; cs++) {
                uint64_t r = 100 + cs;
                for (int i = 0; i < n; i++) {
                    float g = (random_f32(&r) + random_f32(&r) + random_f32(&r) - 1.5f) * 0.1f;
                    w[i] = cs == 1 ? 0 : cs == 3 ? g * 1e-39f : cs == 4 ? g * powf(10.0f, (float)((i / 64) % 9) - 4) : g;
                }
                if (cs == 2) { w[70] = 1e30f; w[200] = -3e4f; }
                QTensor t;
                qtensor_alloc(&t, type, 40, 64, dq);
                int rc = qtensor_quantize(&t, w, "test", "w");
                qtensor_dequant(back, &t, 0, n);
                double worst = 0; // error / bound
                for (int i = 0; i < n; i++) {
                    size_t b = i / t.bs;
                    float amax = 0;
                    for (size_t j = b * t.bs; j < (b + 1) * t.bs; j++) amax = fmaxf(amax, fabsf((float)w[j]));
                    double bound;
                    if (type == QT_INT8) bound = amax / 127.0 / 2 * (1 + 1e-5) + 1e-44;
                    else if (type == QT_INT4) { // the bf16 scale is rounded up: at most 2^-7 above max|w|/7
                        double s = qtensor_scale(&t, b);
                        bound = s / 2 * (1 + 1e-5) + 1e-44;
                        if (s < amax / 7.0 || (amax / 7.0 >= FLT_MIN && s > amax / 7.0 * (1 + 1.0 / 128))) bound = 0; // (denormals: bf16 keeps fewer bits)
                    }
                    else {
                        // half the widest gap between neighbouring codes (-1 .. -0.6962) times absmax; with double
                        // quantization plus the absmax's own error, scaled
                        double s = qtensor_scale(&t, b);
                        bound = 0.1519036 * fmax(amax, s) * (1 + 1e-5) + fabs(s - amax) + 1e-44;
                    }
                    double e = fabs((double)back[i] - w[i]);
                    if (e / bound > worst) worst = e / bound;
                }
                char name[96];
                snprintf(name, sizeof(name), "%s%s quantize bound: %s", qtype_names[type], dq ? "+dq" : "", cases[cs]);
                check(!rc && worst <= 1.0, name, "worst error %.3f of the bound over %d values", worst, n);
                qtensor_free(&t);
            }
    // non-finite input is an error naming the tensor
    for (int type = QT_INT8; type <= QT_NF4; type++) {
        QTensor t;
        qtensor_alloc(&t, type, 1, 64, 0);
        for (int i = 0; i < 64; i++) w[i] = 0.1f;
        w[9] = NAN;
        int rc1 = qtensor_quantize(&t, w, "m.bin", "wq of layer 0");
        int ok = rc1 && strstr(peft_errbuf, "non-finite") && strstr(peft_errbuf, "wq of layer 0");
        w[9] = INFINITY;
        int rc2 = qtensor_quantize(&t, w, "m.bin", "wq of layer 0");
        check(ok && rc2, "quantize rejects NaN/Inf", "%s: %s", qtype_names[type], peft_errbuf);
        qtensor_free(&t);
    }
    free(w); free(back);
}

// quantized matmuls == float matmuls on the dequantized matrix
static void test_qmatmul(void) {
    int N = 5, C = 96, OC = 40; // C not a multiple of 64: blocks cross rows
    uint64_t r = 9;
    floatX *x = malloc_check((size_t)N * C * sizeof(floatX)), *w = malloc_check((size_t)OC * C * sizeof(floatX)), *wd = malloc_check((size_t)OC * C * sizeof(floatX));
    floatX *y1 = malloc_check((size_t)N * OC * sizeof(floatX)), *y2 = malloc_check((size_t)N * OC * sizeof(floatX)), *dy = malloc_check((size_t)N * OC * sizeof(floatX));
    floatX *dx1 = calloc_check((size_t)N * C, sizeof(floatX)), *dx2 = calloc_check((size_t)N * C, sizeof(floatX));
    float *row = malloc_check((size_t)OC * C * sizeof(float));
    for (int i = 0; i < N * C; i++) x[i] = random_f32(&r) - 0.5f;
    for (int i = 0; i < OC * C; i++) w[i] = random_f32(&r) - 0.5f;
    for (int i = 0; i < N * OC; i++) dy[i] = random_f32(&r) - 0.5f;
    for (int type = QT_INT8; type <= QT_NF4; type++) {
        QTensor t;
        qtensor_alloc(&t, type, OC, C, type == QT_NF4);
        qtensor_quantize(&t, w, "test", "w");
        qtensor_dequant(row, &t, 0, (size_t)OC * C);
        for (int i = 0; i < OC * C; i++) wd[i] = row[i];
        matmul_forward(y1, x, wd, N, C, OC);
        qmatmul_forward(y2, x, &t, N, C, OC);
        memset(dx1, 0, (size_t)N * C * sizeof(floatX)); memset(dx2, 0, (size_t)N * C * sizeof(floatX));
        matmul_backward(dx1, NULL, dy, x, wd, N, C, OC);
        qmatmul_backward(dx2, dy, &t, N, C, OC);
        double e1 = 0, e2 = 0;
        for (int i = 0; i < N * OC; i++) e1 = max_err(e1, fabs((double)y1[i] - y2[i]));
        for (int i = 0; i < N * C; i++) e2 = max_err(e2, fabs((double)dx1[i] - dx2[i]));
        char name[64];
        snprintf(name, sizeof(name), "%s matmul on blocks", qtype_names[type]);
        check(e1 < 1e-5 && e2 < 1e-5, name, "forward max diff %.2e, backward dx max diff %.2e vs float on the dequantized matrix", e1, e2);
        qtensor_free(&t);
    }
    free(x); free(w); free(wd); free(y1); free(y2); free(dy); free(dx1); free(dx2); free(row);
}

// QLoRA: LoRA gradients on a quantized base == those on an fp32 model holding the dequantized weights
static void test_qlora_grads(void) {
    if (!have(STORIES)) { skip("qlora gradients", "no " STORIES); return; }
    for (int type = QT_INT8; type <= QT_NF4; type++) {
        QuantOpts qo = { type, 1, type == QT_NF4 }, fl = { QT_NONE, 0, 0 };
        Model mq, mf;
        if (model_load_q(&mq, STORIES, &qo) || model_load_q(&mf, STORIES, &fl)) { check(0, "qlora gradients", "%s", peft_errbuf); return; }
        // the fp32 reference: every quantized matrix dequantized into the float model
        Config *c = &mf.config;
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
            if (i == 1 || i == 6 || i == 10 || (i == 11 && c->tied)) continue;
            floatX *ptrs[NUM_PARAM_TENSORS] = { mf.params.embed, mf.params.rms_att, mf.params.wq, mf.params.wk, mf.params.wv, mf.params.wo, mf.params.rms_ffn, mf.params.w1, mf.params.w2, mf.params.w3, mf.params.rms_final, mf.params.wcls };
            int outer = i == 0 || i == 11, rows, cols;
            param_dims(c, i, &rows, &cols);
            for (int l = 0; l < (outer ? 1 : c->n_layers); l++) model_get_matrix(ptrs[i] + (size_t)l * rows * cols, &mq, i, l);
        }
        LoraConfig lc = { 0 };
        lc.r = 4; lc.alpha = 8; lc.targets = (1u << NUM_TARGETS) - 1; lc.seed = 3;
        Lora l1, l2;
        lora_create(&l1, c, &lc, 1); lora_create(&l2, c, &lc, 1);
        uint64_t r = 77;
        for (size_t i = 0; i < l1.num_params; i++) l1.params[i] = l2.params[i] = (floatX)((random_f32(&r) - 0.5f) * 0.1f);
        int B = 2, T = 32, N = B * T;
        lora_alloc_acts(&l1, N); lora_alloc_acts(&l2, N);
        int *in = malloc_check((size_t)N * sizeof(int)), *tg = malloc_check((size_t)N * sizeof(int));
        for (int i = 0; i < N; i++) { in[i] = (int)(random_u32(&r) % (uint32_t)c->vocab_size); tg[i] = (int)(random_u32(&r) % (uint32_t)c->vocab_size); }
        Net n1, n2; Activations a1, a2;
        net_init(&n1, &mq, &l1); net_init(&n2, &mf, &l2);
        acts_alloc(&a1, c, B, T, 0); acts_alloc(&a2, c, B, T, 0);
        peft_forward(&n1, &a1, in); double L1 = peft_loss(&a1, c, tg); peft_backward(&n1, &a1, NULL, c->n_layers, 0);
        peft_forward(&n2, &a2, in); double L2 = peft_loss(&a2, c, tg); peft_backward(&n2, &a2, NULL, c->n_layers, 0);
        double num = 0, den = 0;
        for (size_t i = 0; i < l1.num_params; i++) { double d = (double)l1.grads[i] - l2.grads[i]; num += d * d; den += (double)l2.grads[i] * l2.grads[i]; }
        double rel = sqrt(num / den);
        char name[64];
        snprintf(name, sizeof(name), "qlora gradients (%s%s)", qtype_names[type], type == QT_NF4 ? "+dq" : "");
        check(rel <= 1e-4 && fabs(L1 - L2) <= 1e-5 * fabs(L2), name, "loss %.7f vs %.7f on the dequantized fp32 model; LoRA gradients relative error %.2e over %zu (bar 1e-4)", L1, L2, rel, l1.num_params);
        free(in); free(tg);
        acts_free(&a1); acts_free(&a2); net_free(&n1); net_free(&n2); lora_free(&l1); lora_free(&l2); model_free(&mq); model_free(&mf);
    }
}

// files: quantize -> load gives the same weights; int8 is a llama2.c v2 file; hostile 4-bit files
static void test_quant_files(void) {
    if (!have(STORIES)) { skip("quantized files", "no " STORIES); return; }
    for (int type = QT_INT8; type <= QT_NF4; type++)
        for (int emb = 0; emb <= 1; emb++) {
            if (type == QT_INT8 && !emb) continue;
            QuantOpts qo = { type, emb, type == QT_NF4 && emb };
            Model mq, mr;
            char path[600], name[96];
            tmp_path(path, sizeof(path), "q.bin");
            if (model_load_q(&mq, STORIES, &qo) || model_save_quant(&mq, path, type, emb, qo.dq) || model_load(&mr, path)) { check(0, "quantized file", "%s", peft_errbuf); return; }
            Config *c = &mq.config;
            double worst = 0;
            floatX *a = malloc_check((size_t)c->vocab_size * c->dim * sizeof(floatX)), *b = malloc_check((size_t)c->vocab_size * c->dim * sizeof(floatX));
            for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
                if (i == 1 || i == 6 || i == 10 || (i == 11 && c->tied)) continue;
                int outer = i == 0 || i == 11, rows, cols;
                param_dims(c, i, &rows, &cols);
                for (int l = 0; l < (outer ? 1 : c->n_layers); l++) {
                    model_get_matrix(a, &mq, i, l); model_get_matrix(b, &mr, i, l);
                    for (int k = 0; k < rows * cols; k++) worst = max_err(worst, fabs((double)a[k] - b[k]) / (fabs((double)a[k]) + 1e-30));
                }
            }
            snprintf(name, sizeof(name), "%s file round trip%s", qtype_names[type], emb ? " (embeddings quantized)" : "");
            check(mr.quant == type && mr.quant_embed == emb && worst <= 1e-6, name, "loaded as %s, weights max relative difference %.2e (int8: requantized through llama2.c's interleaved q/k order)", qtype_names[mr.quant], worst);
            if (type == QT_INT8) { // llama2.c's reader: v2 dequantized on load (--quant none) == our int8 weights
                QuantOpts fl = { QT_NONE, 0, 0 };
                Model mf;
                if (!model_load_q(&mf, path, &fl)) {
                    double e = 0;
                    for (int l = 0; l < c->n_layers; l++) { model_get_matrix(a, &mr, 2, l); model_get_matrix(b, &mf, 2, l); for (int k = 0; k < c->dim * c->dim; k++) e = max_err(e, fabs((double)a[k] - b[k])); }
                    check(e == 0, "int8 v2 read as llama2.c does", "wq dequantized on load == int8 blocks: max diff %.2e", e);
                    model_free(&mf);
                }
            }
            free(a); free(b);
            model_free(&mq); model_free(&mr);
        }
    // hostile 4-bit files: truncated, bad flags, bad block size, NaN scale
    char path[600];
    tmp_path(path, sizeof(path), "q4.bin");
    QuantOpts qo = { QT_NF4, 0, 0 };
    Model mq;
    if (model_load_q(&mq, STORIES, &qo) || model_save_quant(&mq, path, QT_NF4, 0, 0)) { check(0, "hostile 4-bit files", "%s", peft_errbuf); return; }
    model_free(&mq);
    size_t n;
    char *buf = read_file(path, &n, 1 << 26);
    char bad[600];
    tmp_path(bad, sizeof(bad), "bad4.bin");
    write_bytes(bad, buf, n - 5);
    expect_model_error("truncated nf4 file", bad, "implies");
    char *b2 = malloc_check(n); memcpy(b2, buf, n);
    b2[41] = 9; write_bytes(bad, b2, n);
    expect_model_error("nf4 file with bad flags", bad, "bad block size");
    memcpy(b2, buf, n); b2[37] = 16; write_bytes(bad, b2, n);
    expect_model_error("nf4 file with bad block size", bad, "bad block size");
    // the first scale of wq in layer 0 (after the norms and the fp32 embedding, after wq's nibbles)
    Config c0;
    { Model m0; if (model_load(&m0, STORIES)) return; c0 = m0.config; model_free(&m0); }
    size_t off = 256 + ((size_t)2 * c0.n_layers * c0.dim + c0.dim) * 4 + (size_t)c0.vocab_size * c0.dim * 4 + (size_t)c0.dim * c0.dim / 2;
    memcpy(b2, buf, n); float nanv = NAN; put_le(b2 + off, &nanv, 4, 1); write_bytes(bad, b2, n);
    expect_model_error("nf4 file with a NaN scale", bad, "non-finite");
    free(buf); free(b2);
}

// loading an fp32 .bin quantizes large matrices in chunks: the same bytes as quantizing the whole matrix
static void test_quant_chunked_load(void) {
    Model fm;
    memset(&fm, 0, sizeof(fm));
    config_defaults(&fm.config);
    Config *c = &fm.config;
    c->dim = 64; c->hidden_dim = 4160; c->n_layers = 1; c->n_heads = 4; c->n_kv_heads = 4; c->head_dim = 16; c->vocab_size = 5000; c->seq_len = 16; c->tied = 0;
    fm.format = FMT_BIN_V1;
    model_alloc(&fm);
    uint64_t r = 21;
    for (size_t i = 0; i < fm.num_parameters; i++) fm.params_memory[i] = (floatX)((random_f32(&r) - 0.5f) * 0.2f);
    char path[600];
    tmp_path(path, sizeof(path), "chunked.bin");
    if (model_save_bin(&fm, path, 0)) { check(0, "chunked quantization", "%s", peft_errbuf); model_free(&fm); return; }
    for (int type = QT_INT8; type <= QT_NF4; type++) {
        QuantOpts qo = { type, 1, type == QT_NF4 };
        Model mq;
        if (model_load_q(&mq, path, &qo)) { check(0, "chunked quantization", "%s", peft_errbuf); continue; }
        const floatX *src[3] = { fm.params.embed, fm.params.wcls, fm.params.w1 };
        const QTensor *got[3] = { &mq.qembed, &mq.qcls, &mq.qw[TGT_GATE] };
        int same = 1;
        for (int k = 0; k < 3; k++) {
            QTensor ref;
            qtensor_alloc(&ref, type, got[k]->rows, got[k]->cols, qo.dq);
            qtensor_quantize(&ref, src[k], "ref", "ref");
            const QTensor *g = got[k];
            same &= !memcmp(ref.q, g->q, qtensor_qbytes(type, ref.n)) && ref.offset == g->offset;
            if (qo.dq) same &= !memcmp(ref.qabsmax, g->qabsmax, ref.nblocks) && !memcmp(ref.absmax2, g->absmax2, (ref.nblocks + DQ_BLOCK - 1) / DQ_BLOCK * sizeof(float));
            else if (ref.scale16) same &= !memcmp(ref.scale16, g->scale16, ref.nblocks * 2);
            else same &= !memcmp(ref.scale, g->scale, ref.nblocks * sizeof(float));
            qtensor_free(&ref);
        }
        char name[64];
        snprintf(name, sizeof(name), "%s chunked quantization on load", qtype_names[type]);
        check(same, name, "embedding (320000 values), classifier and a 266240-value w1 read in chunks == quantized whole%s", qo.dq ? " (with double quantization)" : "");
        model_free(&mq);
    }
    model_free(&fm);
}

// CLI: quantize, then eval/generate/merge on the file; --quant flags
static void test_quant_cli(void) {
    if (!have(STORIES) || !have(TOK512)) { skip("quantize CLI", "no stories260K"); return; }
    char q8[600], q4[600], data[600], args[4096], err[4096], out[4096], merged[600], ad[600];
    tmp_path(q8, sizeof(q8), "s_int8.bin"); tmp_path(q4, sizeof(q4), "s_nf4.bin"); tmp_path(data, sizeof(data), "qdata.txt");
    tmp_path(merged, sizeof(merged), "merged_nf4.bin"); tmp_path(ad, sizeof(ad), "qad");
    const char *text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.\n\nOne day, a big dog came to the park. The dog was friendly and wanted to play with Lily.\n";
    write_bytes(data, text, strlen(text));
    snprintf(args, sizeof(args), "quantize %s -o %s --quant int8", STORIES, q8);
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    check(rc == 0 && strstr(err, "llama2.c v2"), "quantize --quant int8", "%s", err);
    snprintf(args, sizeof(args), "quantize %s -o %s --quant nf4 --double-quant", STORIES, q4);
    rc = run_cmd(args, err, sizeof(err), NULL, 0);
    check(rc == 0 && strstr(err, "v4 nf4"), "quantize --quant nf4 --double-quant", "%s", err);
    double loss[3] = { 0 };
    const char *files[3] = { STORIES, q8, q4 };
    for (int k = 0; k < 3; k++) {
        snprintf(args, sizeof(args), "eval %s %s -z %s", files[k], data, TOK512);
        rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
        if (rc == 0) sscanf(out, "loss %lf", &loss[k]);
    }
    check(loss[0] > 0 && fabs(loss[1] - loss[0]) < 0.01 * loss[0] && fabs(loss[2] - loss[0]) < 0.1 * loss[0], "eval on quantized files", "loss fp32 %.4f, int8 file %.4f, nf4 file %.4f", loss[0], loss[1], loss[2]);
    snprintf(args, sizeof(args), "train %s %s -z %s -o %s --steps 2 -b 2 -T 32 --val-frac 0 --quant nf4", STORIES, data, TOK512, ad);
    rc = run_cmd(args, err, sizeof(err), NULL, 0);
    check(rc == 0 && strstr(err, "base: nf4"), "train --quant nf4 (QLoRA)", "exit %d", rc);
    snprintf(args, sizeof(args), "merge %s %s -o %s", q4, ad, merged);
    rc = run_cmd(args, err, sizeof(err), NULL, 0);
    Model mm;
    int ok = rc == 0 && strstr(err, "requantized") && !model_load(&mm, merged);
    check(ok && mm.quant == QT_NF4 && mm.quant_dq, "merge into an nf4 file requantizes", "%s", err);
    if (ok) model_free(&mm);
    snprintf(args, sizeof(args), "generate %s -z %s -n 8 -t 0 --quant int4", STORIES, TOK512);
    rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    check(rc == 0 && strlen(out) > 5, "generate --quant int4", "%s", out);
    expect_cli_error("--quant bogus", "eval x y --quant int3", "is not int8", NULL);
    snprintf(args, sizeof(args), "train %s %s -z %s --quant int8 --finetuning-type full", STORIES, data, TOK512);
    expect_cli_error("--quant with full fine-tuning", args, "frozen", NULL);
    snprintf(args, sizeof(args), "eval %s %s -z %s --quant int4 --double-quant", STORIES, data, TOK512);
    expect_cli_error("--double-quant without nf4", args, "applies to --quant nf4", NULL);
}


// --- ports: byte order, 32-bit sizes, the int8 dot product's SIMD path (make cross-test runs these
// on aarch64, armhf, i386 and big-endian s390x under qemu)

// files are little-endian on every host: the helpers against bytes written out by hand
static void test_byte_order(void) {
    unsigned char b[8] = { 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08 }, w[8];
    uint32_t u; uint16_t h; uint64_t q;
    memcpy(&u, b, 4); le_swap(&u, 4, 1);
    memcpy(&h, b, 2); le_swap(&h, 2, 1);
    memcpy(&q, b, 8); le_swap(&q, 8, 1);
    float one = 1.0f; put_le(w, &one, 4, 1); // IEEE 1.0f = 0x3f800000, stored 00 00 80 3f
    int ok = u == 0x04030201u && h == 0x0201 && q == 0x0807060504030201ull && w[0] == 0 && w[1] == 0 && w[2] == 0x80 && w[3] == 0x3f;
    check(ok, "byte order: little-endian helpers", "host is %s-endian; 01 02 03 04 reads 0x%08x, 1.0f writes %02x %02x %02x %02x",
          host_big_endian() ? "big" : "little", (unsigned)u, w[0], w[1], w[2], w[3]);
    // a v1 .bin header written by model_save_bin: magic 0x616b3432 as bytes 32 34 6b 61 ("24ka"), version 1, dim ...
    if (!have(STORIES)) { skip("byte order: .bin header", "needs " STORIES); return; }
    Model m;
    char path[600];
    tmp_path(path, sizeof(path), "order.bin");
    if (model_load(&m, STORIES)) { check(0, "byte order: .bin header", "%s", peft_errbuf); return; }
    m.format = FMT_BIN_V1;
    int rc = model_save(&m, path, -1);
    size_t n = 0;
    unsigned char *f = rc ? NULL : (unsigned char *)read_file(path, &n, 1 << 26);
    int dim = f ? f[8] | f[9] << 8 | f[10] << 16 | f[11] << 24 : -1;
    float w0 = 0; // rms_att[0], the first weight after the header, from its bytes
    if (f) { uint32_t bits = (uint32_t)f[256] | (uint32_t)f[257] << 8 | (uint32_t)f[258] << 16 | (uint32_t)f[259] << 24; memcpy(&w0, &bits, 4); }
    check(f && !memcmp(f, "24ka", 4) && f[4] == 1 && f[5] == 0 && dim == m.config.dim && w0 == (float)m.params.rms_att[0], "byte order: .bin header",
          "magic bytes '%.4s', version byte %d, dim %d, first weight %g (in memory %g)", f ? (char *)f : "?", f ? f[4] : -1, dim, w0, (double)m.params.rms_att[0]);
    free(f);
    model_free(&m);
}

// 32-bit size_t: a size that would wrap is an error before anything is allocated. The same files are
// errors on 64-bit machines too (the file does not hold what the header says); make cross-test runs
// this on i386 and armhf, where the 32-bit messages are the ones checked.
static void test_sizes_32bit(void) {
    int is32 = sizeof(size_t) == 4;
    char path[600];
    tmp_path(path, sizeof(path), "wrap.bin");
    // v1 header: dim 256, hidden 262144, 1 layer, 1 head, 1 kv head, vocab 3406909, seq 256, tied:
    // 4 GiB + 64 KiB of fp32 weights, which wraps (mod 2^32) to exactly the 64 KiB this file holds
    unsigned char *b = calloc_check(256 + 65536, 1);
    uint32_t magic = 0x616b3432; int32_t version = 1, h[7] = { 256, 262144, 1, 1, 1, 3406909, 256 };
    put_le(b, &magic, 4, 1); put_le(b + 4, &version, 4, 1); put_le(b + 8, h, 4, 7); b[36] = 1;
    write_bytes(path, b, 256 + 65536);
    free(b);
    Config c = { 0 };
    config_defaults(&c);
    c.dim = 256; c.hidden_dim = 262144; c.n_layers = 1; c.n_heads = 1; c.n_kv_heads = 1; c.head_dim = 256; c.vocab_size = 3406909; c.seq_len = 256; c.tied = 1;
    size_t sz[NUM_PARAM_TENSORS], w = 0;
    fill_in_parameter_sizes(sz, &c);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) w += sz[i];
    uint32_t wrapped = (uint32_t)(256 + (uint64_t)w * 4); // what a 32-bit size_t computes without the check
    check(wrapped == 256 + 65536, "32-bit sizes: the wrap case is real", "the header's 256 + 4 x %zu weight bytes wrap to %u = this file's size mod 2^32", w, (unsigned)wrapped);
    expect_model_error(is32 ? ".bin whose size wraps a 32-bit size_t" : ".bin whose size would wrap a 32-bit size_t (64-bit: size mismatch)", path,
                       is32 ? "too large for this 32-bit machine" : "implies");
    // a plausible 70B header: too large for 32-bit, a size mismatch on 64-bit
    int32_t big[7] = { 8192, 28672, 80, 64, 8, 128256, 8192 };
    b = calloc_check(256, 1);
    put_le(b, &magic, 4, 1); put_le(b + 4, &version, 4, 1); put_le(b + 8, big, 4, 7);
    write_bytes(path, b, 256);
    free(b);
    expect_model_error(is32 ? "70B-shaped header on 32-bit" : "70B-shaped header (64-bit: size mismatch)", path, is32 ? "too large for this 32-bit machine" : "implies");
    // safetensors: a dim past 2^32 and a shape whose product passes 2^32
    struct { const char *label, *header, *want32, *want64; } cases[] = {
        { "dim 2^32 + 1", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967297],\"data_offsets\":[0,16]}}", "overflows", "bytes but data_offsets span" },
        { "65536 x 65537 F32", "{\"a\":{\"dtype\":\"F32\",\"shape\":[65536,65537],\"data_offsets\":[0,16]}}", "overflows", "bytes but data_offsets span" },
        { "data_offsets past 2^32", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[4294967296,4294967312]}}", "past the end", "past the end" },
    };
    float d[4] = { 1, 2, 3, 4 };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        size_t n;
        unsigned char *bytes = st_bytes(cases[k].header, d, 16, &n);
        char label[96]; snprintf(label, sizeof(label), "%s (%s)", cases[k].label, is32 ? "32-bit" : "64-bit");
        expect_st_error(label, bytes, n, is32 ? cases[k].want32 : cases[k].want64);
        free(bytes);
    }
    // activations: the plan is an upper bound of what acts_alloc takes (checked on a small batch), and
    // a batch of 4096 x 512 of stories260K's shape needs more than a 32-bit machine can hold
    Config s = { 0 };
    config_defaults(&s);
    s.dim = 64; s.hidden_dim = 172; s.n_layers = 5; s.n_heads = 8; s.n_kv_heads = 4; s.head_dim = 8; s.vocab_size = 512; s.seq_len = 512; s.tied = 1;
    Activations a;
    acts_alloc(&a, &s, 2, 33, 0);
    double plan = acts_plan_bytes(&s, 2, 33, 0), got = (double)a.bytes;
    acts_free(&a);
    double huge = acts_plan_bytes(&s, 4096, 512, 0);
    check(plan >= got && plan <= got * 1.05 + 1024 && huge > (double)INT32_MAX, "32-bit sizes: activation plan",
          "B 2 x T 33: plan %.0f bytes, acts_alloc %.0f; B 4096 x T 512: %.3g GB (> 2 GiB, so refused on 32-bit)", plan, got, huge / 1e9);
    if (is32 && have(STORIES) && have(TOK512)) { // the CLI refuses it with one line instead of a wrapped allocation
        char err[2048], args[4096], data[600], out[600];
        tmp_path(data, sizeof(data), "wrap_data.txt"); tmp_path(out, sizeof(out), "wrap_out");
        StrBuf text = { 0 };
        for (int i = 0; i < 200; i++) sb_puts(&text, "Once upon a time there was a cat. ");
        write_bytes(data, text.s, text.n);
        free(text.s);
        snprintf(args, sizeof(args), "train %s %s -z %s -o %s -b 4096 -T 512 --steps 1 --val-frac 0", STORIES, data, TOK512, out);
        int rc = run_cmd(args, err, sizeof(err), NULL, 0);
        check(rc != 0 && strstr(err, "too large for this 32-bit machine") && !have(out), "32-bit sizes: train -b 4096 -T 512", "exit %d, \"%.*s\"", rc, (int)strcspn(err, "\n"), err);
    }
}

// the int8 dot product of generation (AVX2 / NEON) against its plain loop, rows starting inside
// groups, and qmatmul's int8 path: the same bits with 1 and 2 threads
static void test_dot_int8(void) {
#ifndef PEFT_DOT_INT8_SIMD
    skip("int8 dot product vs plain loop", "this build has no SIMD int8 dot (needs AVX2 or aarch64 NEON): dot_int8 is the plain loop");
#else
    int C = 288, OC = 37, bs = 64, N = 3; // rows of 288 start inside groups of 64
    size_t n = (size_t)OC * C;
    uint64_t r = 77;
    floatX *x = malloc_check((size_t)N * C * sizeof(floatX)), *w = malloc_check(n * sizeof(floatX));
    for (int i = 0; i < N * C; i++) x[i] = 2 * random_f32(&r) - 1;
    for (size_t i = 0; i < n; i++) w[i] = 2 * random_f32(&r) - 1;
    QTensor t;
    qtensor_alloc(&t, QT_INT8, OC, C, 0);
    qtensor_quantize(&t, w, "test", "w");
    double worst = 0;
    for (int o = 0; o < OC; o++)
        for (int k = 0; k < 5; k++) { // whole rows and pieces of odd lengths
            int len = k == 0 ? C : C - 37 * k;
            size_t start = (size_t)o * C + (size_t)(C - len);
            floatX a = dot_int8(x, (const int8_t *)t.q + start, t.scale, start, len, bs), b2 = dot_int8_naive(x, (const int8_t *)t.q + start, t.scale, start, len, bs);
            double e = fabs((double)a - b2) / (fabs((double)b2) > 1 ? fabs((double)b2) : 1);
            if (e > worst) worst = e;
        }
    floatX *y1 = malloc_check((size_t)N * OC * sizeof(floatX)), *y2 = malloc_check((size_t)N * OC * sizeof(floatX));
    int saved = max_threads();
    set_threads(1); qmatmul_forward(y1, x, &t, N, C, OC);
    set_threads(2); qmatmul_forward(y2, x, &t, N, C, OC);
    set_threads(saved);
    check(worst < 1e-5, "int8 dot product vs plain loop", "%d rows x 5 lengths (starts inside groups of %d): worst relative difference %.2e", OC, bs, worst);
    check(!memcmp(y1, y2, (size_t)N * OC * sizeof(floatX)), "int8 generation matmul: 1 and 2 threads give the same bits", "N %d, C %d, OC %d", N, C, OC);
    qtensor_free(&t);
    free(x); free(w); free(y1); free(y2);
#endif
}


// the inference-only build (-DPEFT_INFER) on a fixed arena (-DPEFT_ARENA): make test builds it as
// ./peft_infer_arena (PEFT_INFER_BIN overrides). It generates the same text as ./peft with an adapter,
// reports its peak heap, and refuses training with one line.
static void test_infer_build(void) {
    const char *bin = getenv("PEFT_INFER_BIN") ? getenv("PEFT_INFER_BIN") : "./peft_infer_arena";
    if (!file_exists(bin)) { check(0, "inference-only build", "%s not built (make test builds it)", bin); return; }
    if (!have(STORIES) || !have(TOK512) || !have(SHARED "/reference/peft/qv_r4")) { skip("inference-only build", "needs stories260K and " SHARED "/reference/peft/qv_r4"); return; }
    char args[2048], err1[4096], err2[4096], out1[8192], out2[8192];
    snprintf(args, sizeof(args), "generate %s -z %s -a %s -t 0 -n 120 -p \"Once upon a time\"", STORIES, TOK512, SHARED "/reference/peft/qv_r4");
    int rc1 = run_cmd(args, err1, sizeof(err1), out1, sizeof(out1));
    const char *saved = getenv("PEFT_BIN");
    char keep[600]; snprintf(keep, sizeof(keep), "%s", saved ? saved : "");
    setenv("PEFT_BIN", bin, 1);
    int rc2 = run_cmd(args, err2, sizeof(err2), out2, sizeof(out2));
    char terr[4096];
    snprintf(args, sizeof(args), "train %s x.txt -z %s", STORIES, TOK512);
    int rc3 = run_cmd(args, terr, sizeof(terr), NULL, 0);
    if (saved) setenv("PEFT_BIN", keep, 1); else unsetenv("PEFT_BIN");
    const char *peak = strstr(err2, "heap: peak ");
    check(rc1 == 0 && rc2 == 0 && strlen(out1) > 100 && !strcmp(out1, out2) && peak, "inference-only build: generate with an adapter",
          "%zu bytes of text, identical to ./peft: %s; %.*s", strlen(out2), !strcmp(out1, out2) ? "yes" : "NO", peak ? (int)strcspn(peak, "\n") : 7, peak ? peak : "no heap line");
    check(rc3 != 0 && strstr(terr, "not in this inference-only build") && count_lines(terr) == 1, "inference-only build: no training", "exit %d, \"%.*s\"", rc3, (int)strcspn(terr, "\n"), terr);
}

static void run_fp32_tests(void) {
    test_kernels_matmul();
    test_kernels_attention();
    test_kernels_exp();
    test_json();
    test_tokenizer_llama2_reference();
    test_tokenizer_tok512_roundtrip();
    test_tokenizer_bytebpe_reference();
    test_tokenizer_spbpe_reference();
    test_tokenizer_gpt2bpe_reference();
    test_tokenizer_pretok_patterns();
    test_tokenizer_merge_naive();
    test_tokenizer_split_words();
    test_tokenizer_special_and_limits();
    test_tokenizer_hostile();
    test_tokenizer_fuzz();
    test_tokenizer_speed();
    test_tokenizer_bin_built();
    test_safetensors();
    test_hostile_models();
    test_bin_v2();
    test_reference_logits();
    test_generation();
    test_peft_reference("qv_r4");
    test_peft_reference("all_r8_rslora");
    test_peft_reference("qkvo_r4_dora");
    test_cli();
    test_adapters();
    test_nf4_bitsandbytes();
    test_quant_bounds();
    test_qmatmul();
    test_qlora_grads();
    test_quant_files();
    test_quant_chunked_load();
    test_quant_cli();
    test_byte_order();
    test_sizes_32bit();
    test_dot_int8();
    test_infer_build();
}

// run the fp64 finite-difference binary and fold its counts into ours
static void run_fp64_suite(void) {
    const char *bin = getenv("PEFT_FP64_TEST");
    if (!bin) bin = "./test_all_fp64";
    if (!file_exists(bin)) { check(0, "fp64 gradient-check suite", "%s not built (make test builds it)", bin); return; }
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s %s 2>&1", exec_prefix(), bin);
    FILE *p = popen(cmd, "r");
    if (!p) { check(0, "fp64 gradient-check suite", "cannot run %s", bin); return; }
    char line[1024];
    int pa = -1, fa = -1, sk = 0;
    while (fgets(line, sizeof(line), p)) {
        if (sscanf(line, "%d passed, %d failed, %d skipped", &pa, &fa, &sk) >= 2) continue;
        fputs(line, stdout);
    }
    int rc = pclose(p);
    if (pa < 0) { check(0, "fp64 gradient-check suite", "%s printed no summary (exit %d)", bin, rc); return; }
    n_pass += pa; n_fail += fa; n_skip += sk;
    if (rc != 0 && fa == 0) check(0, "fp64 gradient-check suite", "%s exited with status %d", bin, rc);
}
#endif // !PEFT_FP64

int main(int argc, char **argv) {
    (void)argc; (void)argv;
#ifdef PEFT_FP64
    printf("== finite-difference gradient checks (fp64)\n");
    run_fd_tests();
#else
    char tmpl[] = "/tmp/peft_test_XXXXXX";
    if (!mkdtemp(tmpl)) { perror("mkdtemp"); return 1; }
    snprintf(tmpdir, sizeof(tmpdir), "%s", tmpl);
    printf("== fp32 suite (temporary files in %s)\n", tmpdir);
    run_fp32_tests();
    printf("== finite-difference gradient checks (fp64, ./test_all_fp64)\n");
    run_fp64_suite();
    char cmd[512]; snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
#endif
    printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
    return n_fail ? 1 : 0;
}
