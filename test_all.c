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
static void skip(const char *name, const char *why) { printf("SKIP %s: %s\n", name, why); fflush(stdout); n_skip++; }

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
static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir, name); }
static int have(const char *path) { return file_exists(path) || dir_exists(path); }
static void write_bytes(const char *path, const void *p, size_t n) { FILE *f = fopen(path, "wb"); if (!f) { perror(path); exit(1); } fwrite(p, 1, n, f); fclose(f); }

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
    if (dn) memcpy(b + 8 + hl, data, dn);
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
    memcpy(bytes, huge, sizeof(huge));
    write_bytes(path, bytes, n);
    expect_model_error(".bin with absurd dims", path, "implausibly large");
    int32_t neg[7] = { 64, -5, 5, 8, 4, 512, 512 };
    memcpy(bytes, neg, sizeof(neg));
    write_bytes(path, bytes, n);
    expect_model_error(".bin with a negative dim", path, "non-positive");
    int32_t gqa[7] = { 64, 172, 5, 8, 3, 512, 512 };
    memcpy(bytes, gqa, sizeof(gqa));
    write_bytes(path, bytes, n);
    expect_model_error(".bin with n_heads not a multiple of n_kv_heads", path, "multiple");
    unsigned char v9[256] = { 0x32, 0x34, 0x6b, 0x61, 9 };
    write_bytes(path, v9, sizeof(v9));
    expect_model_error(".bin with version 9", path, "version 9");
    memcpy(bytes, h, sizeof(h));
    float nan = NAN;
    memcpy(bytes + 28 + 4 * 100, &nan, 4);
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
        RunState s; runstate_alloc(&s, &m.config);
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
            RunState s2; runstate_alloc(&s2, &m.config);
            double e = 0;
            for (int pos = 0; pos < 64; pos++) {
                floatX *lg = forward_token(&net, &s2, seq[pos], pos);
                for (int i = 0; i < m.config.vocab_size; i++) e = fmax(e, fabs((double)lg[i] - a.logits[(size_t)pos * m.config.vocab_size + i]));
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
    double worst = 0; int ngrads = 0; char worst_name[256] = "";
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
            worst_l = fmax(worst_l, fabs(l - rl[step]) / rl[step]);
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
            for (size_t i = 0; i < mm.num_parameters; i++) { worst_w = fmax(worst_w, fabs((double)mm.params_memory[i] - orig[i])); maxw = fmax(maxw, fabs((double)orig[i])); }
            snprintf(label, sizeof(label), "%s: unmerge restores the weights (%s)", name, bases[v]);
            check(worst_w <= 4 * FLT_EPSILON * maxw, label, "max abs change %.2e (weights up to %.2f; fp32 rounding is %.1e)", worst_w, maxw, FLT_EPSILON * maxw);
        }
        free(lg); free(orig); lora_free(&lo2); free(lc2.layers); model_free(&mm);
    }
    free(rmerged);
    free(got); free(ids); free(tg); free(rloss); free(rlog);
    acts_free(&a); net_free(&net); lora_free(&lo); free(lc.layers); model_free(&m);
}

static void run_fp32_tests(void) {
    test_json();
    test_safetensors();
    test_hostile_models();
    test_reference_logits();
    test_generation();
    test_peft_reference("qv_r4");
    test_peft_reference("all_r8_rslora");
    test_peft_reference("qkvo_r4_dora");
}

// run the fp64 finite-difference binary and fold its counts into ours
static void run_fp64_suite(void) {
    const char *bin = getenv("PEFT_FP64_TEST");
    if (!bin) bin = "./test_all_fp64";
    if (!file_exists(bin)) { check(0, "fp64 gradient-check suite", "%s not built (make test builds it)", bin); return; }
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s 2>&1", bin);
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
