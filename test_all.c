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

typedef struct { floatX *out, *inp; LoraModule *m; int N; } LoraCtx;
static void fd_lora_fwd(void *p) { LoraCtx *c = (LoraCtx *)p; memset(c->out, 0, (size_t)c->N * c->m->out * sizeof(floatX)); lora_forward(c->out, c->inp, c->m, c->N, 0.3f, 0, NULL); }
static void test_fd_lora(int with_dropout) {
    int N = 6, in = 10, out = 9, r = 3;
    LoraModule m = { 0 };
    m.r = r; m.in = in; m.out = out; m.scale = 1.7f;
    m.A = malloc_check(r * in * sizeof(floatX)); m.B = malloc_check(out * r * sizeof(floatX));
    m.dA = calloc_check(r * in, sizeof(floatX)); m.dB = calloc_check(out * r, sizeof(floatX));
    m.u = malloc_check(N * r * sizeof(floatX));
    if (with_dropout) { m.mask = malloc_check(N * in * sizeof(floatX)); for (int i = 0; i < N * in; i++) m.mask[i] = random_f32(&fd_rng) < 0.3f ? 0 : (floatX)(1 / 0.7); }
    lora_scratch_reserve((size_t)N * 16);
    LoraCtx c = { malloc_check(N * out * sizeof(floatX)), malloc_check(N * in * sizeof(floatX)), &m, N };
    floatX *R = malloc_check(N * out * sizeof(floatX)), *dinp = calloc_check(N * in, sizeof(floatX));
    fill_random(m.A, r * in, 1); fill_random(m.B, out * r, 1); fill_random(c.inp, N * in, 1); fill_random(R, N * out, 1);
    fd_lora_fwd(&c);
    lora_backward(dinp, R, c.inp, &m, N);
    FDObjective o = { c.out, (size_t)N * out, R };
    fd_compare(with_dropout ? "fd lora dA (dropout)" : "fd lora dA", m.A, r * in, m.dA, fd_lora_fwd, &c, &o);
    fd_compare(with_dropout ? "fd lora dB (dropout)" : "fd lora dB", m.B, out * r, m.dB, fd_lora_fwd, &c, &o);
    fd_compare(with_dropout ? "fd lora dinp (dropout)" : "fd lora dinp", c.inp, N * in, dinp, fd_lora_fwd, &c, &o);
    free(m.A); free(m.B); free(m.dA); free(m.dB); free(m.u); free(m.mask); free(c.out); free(c.inp); free(R); free(dinp);
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
        lora_create(&lora, c, &lc, 1);
        fill_random(lora.params, lora.num_params, 0.5); // B must not be zero for a meaningful check
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
    test_fd_lora(0);
    test_fd_lora(1);
    test_fd_model("lora", 0, 0);
    test_fd_model("lora dropout", 0, 0);
    test_fd_model("lora", 1, 1);
    test_fd_model("full", 0, 0);
    test_fd_model("full", 1, 0);
    test_fd_model("freeze", 0, 0);
}
#endif // PEFT_FP64

int main(int argc, char **argv) {
    (void)argc; (void)argv;
#ifdef PEFT_FP64
    printf("== finite-difference gradient checks (fp64)\n");
    run_fd_tests();
#else
    printf("== fp32 suite\n");
#endif
    printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
    return n_fail ? 1 : 0;
}
