#!/usr/bin/env python3
"""
make bench: peft.c's speed on this machine, next to PyTorch doing the same work, in one table.

  python3 bench/bench.py            # what `make bench` runs (after building ./peft)
  python3 bench/bench.py --quick    # fewer steps, no stories110M: a smoke run

Workloads (random weights of llama2.c's shapes, written once by `export.py random` into
bench/cache/):
  - LoRA training, stories15M shape, B=4 T=256 r=8 on q_proj,v_proj, AdamW: 1 and 2 threads
  - the same with the stories110M shape: 2 threads
  - generation, one stream, stories15M shape, greedy, 256 positions from "Once upon a time": fp32 from
    the model in llama2.c's legacy layout (what run.c reads) and int8 from `peft quantize --quant int8`
    (a llama2.c version 2 file, what runq.c reads); 1 and 2 threads, median of GEN_REPS runs
peft.c is timed by `peft train --bench` (median step time over >= 5 steps after 2 warm-up
steps, and the FLOPs and seconds spent inside its matmuls); PyTorch by bench/torch_lora.py, the
same model and step (PEFT-style LoRA, AdamW on the adapter), median over the same steps.

Generation reads every weight once per token, so its limit is the memory bandwidth: bench/bandwidth.c
(built here into bench/cache/) reads a buffer larger than the caches (1 GiB, or 4x the L3 when that is
larger), plain and with a software prefetch ahead (as peft.c reads its weights); the limit is the best
read / (bytes read per token: every weight, plus the KV cache at the average position). The host's
bandwidth can move between runs and within one, so the fp32 rows measure it (BW_READS reads, same
threads) right before each generation run and after the last: run i's share is its tok/s against the
median of the readings on either side of it, and the row reports the median of the runs' shares (the
readings and each run's tok/s are printed in order). The int8 rows use the median of the readings of
the fp32 row of the same threads. The int8 model (18 MB) can stay in a large L3, so its share may pass
100%; the bar is on fp32 (62 MB). llama2.c's run.c and runq.c are
timed on the same files, same threads, interleaved with peft.c, when PEFT_BENCH_RUNC / PEFT_BENCH_RUNQC
name their binaries (built with llama2.c's `make runomp`: gcc -Ofast -fopenmp -march=native; called as
`run MODEL -z TOK -t 0 -n 256 -i "Once upon a time"`); without them the rows compare with the anchors
measured on the reference machine (issue 14; the top of each range).

The sgemm peak: numpy's matmul at Llama layer shapes when numpy runs on OpenBLAS, else torch.mm
(either BLAS as installed, run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset for that command
only). Without OpenBLAS the matmul share is also given against 190 GFLOP/s (OpenBLAS's 2-thread
sgemm on the reference machine).

PyTorch runs under TORCH_PYTHON (default /usr/bin/python3, Debian's python3-torch). If its BLAS
is the reference (netlib) one and an OpenBLAS libblas.so.3 is found (Debian's openblas-openmp or
openblas-pthread folders, bench/cache/openblas/usr/lib/*/openblas-* from `dpkg -x`, or the folder in
PEFT_BENCH_OPENBLAS), PyTorch runs on that OpenBLAS instead, through LD_LIBRARY_PATH (the
reference BLAS makes PyTorch 10-20x slower, which says nothing about peft.c).

Other processes on the machine skew every number: the 'others' column is the CPU (in cores) that
processes other than the benchmark used while each row ran, read from /proc/stat.

The header names the host by its CPU (vendor, family, model, stepping and model name from /proc/cpuinfo:
"AMD EPYC" under KVM has been Zen 2, Zen 4 and Zen 5, and the kernels' speed against llama2.c differed
between them, issue 33) and the generation kernels this ./peft build uses (`peft info`); a WARNING line
follows the bars for every row where peft.c is slower than what it is compared with (ratio below 1.0x).
"""
import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, "bench", "cache")
SHARED = os.path.join(ROOT, "..", "shared")
OPENBLAS_DIRS = ["/usr/lib/x86_64-linux-gnu/openblas-openmp", "/usr/lib/x86_64-linux-gnu/openblas-pthread",
                 "/usr/lib/aarch64-linux-gnu/openblas-openmp", "/usr/lib/aarch64-linux-gnu/openblas-pthread"]
REF_PEAK = 190.0  # GFLOP/s: OpenBLAS sgemm, 2 threads, on the reference machine (AMD EPYC Zen 4, 2 cores)

def log(msg):
    print(msg, file=sys.stderr, flush=True)

# --- CPU use of other processes while a command runs

def cpu_busy_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait

def run(cmd, env=None, timeout=3600):
    """ run cmd; return (stdout+stderr, seconds, cores used by other processes meanwhile) """
    hz = os.sysconf("SC_CLK_TCK")
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    b0, t0 = cpu_busy_jiffies(), time.time()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT)
    b1, t1 = cpu_busy_jiffies(), time.time()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    others = max(0.0, (b1 - b0) / hz - ours) / max(t1 - t0, 1e-9)
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        log(f"command failed ({p.returncode}): {' '.join(cmd)}\n{out[-2000:]}")
        return None, t1 - t0, others
    return out, t1 - t0, others

def env_with(**kw):
    e = dict(os.environ)
    for k, v in kw.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = str(v)
    return e

# --- inputs

def ensure_model(shape):
    path = os.path.join(CACHE, f"{shape}.bin")
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        log(f"writing {path} (random weights)")
        subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), "random", "--shape", shape, "-o", path + ".tmp"],
                       check=True, stdout=subprocess.DEVNULL)
        os.replace(path + ".tmp", path)
    return path

def ensure_gen_models(m15):
    """ the fp32 model in llama2.c's legacy layout (run.c's) and its int8 version 2 file (runq.c's) """
    legacy, q80 = os.path.join(CACHE, "stories15M_legacy.bin"), os.path.join(CACHE, "stories15M_q80.bin")
    if not os.path.exists(legacy):
        log(f"writing {legacy} (legacy layout)")
        hf = os.path.join(CACHE, "stories15M_hf")
        subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), "bin2hf", m15, "-o", hf], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), "hf2bin", hf, "-o", legacy + ".tmp", "--version", "0"], check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(hf, ignore_errors=True)
        os.replace(legacy + ".tmp", legacy)
    if not os.path.exists(q80) or os.path.getmtime(q80) < os.path.getmtime(os.path.join(ROOT, "peft")):
        subprocess.run([os.path.join(ROOT, "peft"), "quantize", legacy, "-o", q80, "--quant", "int8"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return legacy, q80

def ensure_data():
    """ ~200 KB of text: tinyshakespeare from ../shared when present, else generated words """
    path = os.path.join(CACHE, "data.txt")
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        src = os.path.join(SHARED, "data", "tinyshakespeare.txt")
        if os.path.exists(src):
            with open(src, "rb") as f:
                text = f.read(200000)
        else:
            words = "the a little girl named lily loved to play outside in sun one day big dog came park".split()
            text = " ".join(words[(i * 7919) % len(words)] for i in range(40000)).encode()
        with open(path, "wb") as f:
            f.write(text)
    return path

def find_tokenizer():
    for p in [os.path.join(ROOT, "tokenizer.bin"), os.path.join(SHARED, "tokenizers", "llama2", "tokenizer.bin")]:
        if os.path.exists(p):
            return p
    sys.exit("bench: no 32000-piece tokenizer.bin (make builds it from ../shared/tokenizers/llama2/tokenizer.model)")

# --- peft.c

def peft_train(model, data, tok, threads, steps, warmup):
    cmd = [os.path.join(ROOT, "peft"), "train", model, data, "-z", tok, "-b", "4", "-T", "256", "-r", "8",
           "--targets", "q_proj,v_proj", "--steps", str(steps + warmup), "--val-frac", "0", "--log-every", "100000",
           "-o", os.path.join(CACHE, "out"), "--bench"]
    out, _, others = run(cmd, env_with(OMP_NUM_THREADS=threads))
    m = out and re.search(r"bench: threads (\d+) \| steps (\d+) after (\d+) warm-up \| median step ([\d.]+) s \| ([\d.]+) tok/s \| "
                          r"matmul ([\d.]+) GFLOP/step in ([\d.]+) s = ([\d.]+) GFLOP/s \(([\d.]+) GFLOP/s", out)
    if not m:
        return None
    return dict(tok_s=float(m[5]), step_s=float(m[4]), gflop=float(m[6]), mm_gflops=float(m[8]), step_gflops=float(m[9]), others=others)

PROMPT, POSITIONS, GEN_REPS, BW_READS = "Once upon a time", 256, 5, 4
# llama2.c on the reference machine (AMD EPYC Zen 4, 2 cores), greedy 256 positions: issue 14's ranges
ANCHORS = {("fp32", 1): (350, 367), ("fp32", 2): (525, 555), ("int8", 1): (450, 530), ("int8", 2): (1040, 1067)}

def gen_commands(model, tok, ref_bin):
    """ peft.c's and llama2.c's commands for greedy generation over POSITIONS positions from PROMPT """
    out = subprocess.run([os.path.join(ROOT, "peft"), "tokenize", "-z", tok, "--bos", PROMPT], stdout=subprocess.PIPE).stdout.decode()
    n_prompt = len(re.findall(r"\d+", out)) or 1
    peft = [os.path.join(ROOT, "peft"), "generate", model, "-z", tok, "-p", PROMPT, "-n", str(POSITIONS - n_prompt), "-t", "0", "-s", "1"]
    ref = [ref_bin, model, "-z", tok, "-t", "0", "-n", str(POSITIONS), "-i", PROMPT] if ref_bin else None
    return peft, ref

def tok_s(cmd, threads):
    out, _, others = run(cmd, env_with(OMP_NUM_THREADS=threads))
    m = out and re.search(r"achieved tok/s: ([\d.]+)", out)
    return (float(m[1]) if m else None), others

def generate_pair(model, tok, threads, ref_bin, reps=GEN_REPS, measure_bw=False):
    """ median tok/s of peft.c and of llama2.c's binary (when given), runs interleaved; with measure_bw,
    a read bandwidth reading (GB/s, best of BW_READS) before each run and after the last: bw[i], bw[i+1]
    are either side of peft.c's run i """
    peft, ref = gen_commands(model, tok, ref_bin)
    p, r, oth, bws = [], [], [], []
    for _ in range(reps):
        if measure_bw:
            b, _ = bandwidth(threads, BW_READS)
            bws.append(b["best"] if b else None); oth.append(b["others"] if b else 0)
        v, o = tok_s(peft, threads)
        if v is None:
            return None, None
        p.append(v); oth.append(o)
        if ref:
            v, o = tok_s(ref, threads)
            if v is not None:
                r.append(v); oth.append(o)
    if measure_bw:
        b, _ = bandwidth(threads, BW_READS)
        bws.append(b["best"] if b else None); oth.append(b["others"] if b else 0)
    return dict(tok_s=statistics.median(p), runs=p, bw=bws, others=max(oth)), (dict(tok_s=statistics.median(r), runs=r) if r else None)

# --- memory bandwidth

def bandwidth(threads, reads=10):
    """ best streaming read GB/s of bench/bandwidth.c over `reads` reads of a buffer larger than the caches """
    exe = os.path.join(CACHE, "bandwidth")
    src = os.path.join(ROOT, "bench", "bandwidth.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        cc = os.environ.get("CC", "cc")
        for flags in (["-O3", "-march=native", "-fopenmp"], ["-O3", "-fopenmp"], ["-O3"]):
            if subprocess.run([cc] + flags + ["-std=c99", src, "-o", exe], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                break
        else:
            return None, None
    mib = bandwidth_mib()
    out, _, others = run([exe, str(mib), str(reads)], env_with(OMP_NUM_THREADS=threads))
    m = out and re.search(r"best ([\d.]+) GB/s, median ([\d.]+) GB/s .*best plain ([\d.]+), with prefetch ([\d.]+)", out)
    return (dict(best=float(m[1]), median=float(m[2]), plain=float(m[3]), prefetch=float(m[4]), mib=mib, others=others) if m else None), out

def bandwidth_mib():
    """ MiB that bandwidth() reads: 1 GiB, or 4x the L3 when that is larger, at most a quarter of the RAM """
    try:
        l3 = os.sysconf("SC_LEVEL3_CACHE_SIZE")
    except (ValueError, OSError):
        l3 = 0
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(min(max(1024, 4 * max(l3, 0) / 2**20), ram / 4 / 2**20))

def run_shares(p, nbytes):
    """ run i's tok/s as a share of the limit at the median of the readings either side of it (bw[i], bw[i+1]) """
    bws = p.get("bw") or []
    if len(bws) != len(p["runs"]) + 1 or not all(bws):
        return None
    return [v / (statistics.median(bws[i:i + 2]) * 1e9 / nbytes) for i, v in enumerate(p["runs"])]

def gen_bytes_per_token(model):
    """ bytes generation reads per token: every weight matrix (the classifier too), the norms, and the KV
    cache at the average position; from a llama2.c .bin header (legacy fp32 or version 2 int8) """
    import struct
    with open(model, "rb") as f:
        head = f.read(64)
    magic, version = struct.unpack("<Ii", head[:8])
    if magic == 0x616B3432:
        dim, hidden, L, nh, nkv, vocab, seq = struct.unpack("<7i", head[8:36])
        gs = struct.unpack("<i", head[37:41])[0] if version == 2 else 0
    else:
        dim, hidden, L, nh, nkv, vocab, seq = struct.unpack("<7i", head[:28])
        version, gs = 0, 0
    vocab = abs(vocab)
    hs = dim // nh
    weights = L * (dim * nh * hs + 2 * dim * nkv * hs + nh * hs * dim + 3 * dim * hidden) + vocab * dim
    per = (1 + 4 / gs) if version == 2 else 4.0
    kv = 2 * L * nkv * hs * 4 * (POSITIONS + 1) / 2
    return weights * per + (2 * L + 1) * dim * 4 + kv

# --- PyTorch and the sgemm peak

PROBE = r"""
import sys, json
info = {"torch": None, "numpy": None, "blas": "?"}
try:
    import torch; info["torch"] = torch.__version__
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))
except Exception as e:
    info["torch_error"] = str(e)
try:
    import numpy as np; info["numpy"] = np.__version__
    np.ones((64, 64), dtype=np.float32) @ np.ones((64, 64), dtype=np.float32)
except Exception:
    pass
libs = set()
for line in open("/proc/self/maps"):
    p = line.split()[-1]
    if "blas" in p or "mkl" in p:
        libs.add(p)
import os
real = sorted({os.path.realpath(p) for p in libs})
info["blas_libs"] = real
info["blas"] = "OpenBLAS" if any("openblas" in p for p in real) else ("MKL" if any("mkl" in p for p in real) else
               ("reference BLAS (netlib)" if any("blas" in p for p in real) else "none found"))
print(json.dumps(info))
"""

SGEMM = r"""
import os, sys, time, json
threads, use = int(sys.argv[1]), sys.argv[2]
shapes = [(1024, 288, 768), (1024, 768, 2048), (1024, 2048, 768), (1024, 768, 32000)]
res = {}
if use == "numpy":
    import numpy as np
    mk = lambda m, n: np.random.rand(m, n).astype(np.float32)
    mm = lambda a, b: a @ b
else:
    import torch
    torch.set_num_threads(threads)
    mk = lambda m, n: torch.rand(m, n)
    mm = torch.mm
for (M, K, N) in shapes:
    a, b = mk(M, K), mk(K, N)
    mm(a, b)
    ts = []
    reps = 5 if N < 10000 else 3
    for _ in range(reps):
        t = time.perf_counter(); mm(a, b); ts.append(time.perf_counter() - t)
    res["%dx%dx%d" % (M, K, N)] = 2.0 * M * K * N / min(ts) * 1e-9
print(json.dumps(res))
"""

def torch_python():
    p = os.environ.get("TORCH_PYTHON")
    if p:
        return p
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

def probe(py, env):
    import json
    out, _, _ = run([py, "-c", PROBE], env)
    if not out:
        return None
    try:
        return json.loads(out.strip().splitlines()[-1])
    except ValueError:
        return None

def find_openblas():
    import glob
    local = sorted(glob.glob(os.path.join(CACHE, "openblas", "usr", "lib", "*", "openblas-*")))  # dpkg -x'ed there, see docs/PERFORMANCE.md
    cands = ([os.environ["PEFT_BENCH_OPENBLAS"]] if os.environ.get("PEFT_BENCH_OPENBLAS") else []) + OPENBLAS_DIRS + local
    for d in cands:
        if os.path.exists(os.path.join(d, "libblas.so.3")):
            return d
    return None

def blas_env(openblas_dir, threads=None):
    kw = {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}  # these slow a current OpenBLAS: unset for this command only
    if openblas_dir:
        kw["LD_LIBRARY_PATH"] = openblas_dir + (":" + os.environ["LD_LIBRARY_PATH"] if os.environ.get("LD_LIBRARY_PATH") else "")
    if threads:
        kw.update(OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    return env_with(**kw)

def sgemm_peak(py, use, openblas_dir, threads):
    import json
    out, _, others = run([py, "-c", SGEMM, str(threads), use], blas_env(openblas_dir, threads))
    if not out:
        return None, others
    try:
        return json.loads(out.strip().splitlines()[-1]), others
    except ValueError:
        return None, others

def torch_train(py, openblas_dir, shape, threads, steps, warmup):
    cmd = [py, os.path.join(ROOT, "bench", "torch_lora.py"), "--shape", shape, "-b", "4", "-T", "256", "-r", "8",
           "--threads", str(threads), "--steps", str(steps), "--warmup", str(warmup)]
    out, _, others = run(cmd, blas_env(openblas_dir, threads))
    m = out and re.search(r"median step ([\d.]+) s \| ([\d.]+) tok/s", out)
    return (dict(tok_s=float(m[2]), step_s=float(m[1]), others=others) if m else None)

# --- the table

def cpu_info():
    """ the first CPU's vendor, family, model and model name from /proc/cpuinfo (x86; other fields elsewhere),
    its SIMD, and whether it runs under a hypervisor """
    f = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first CPU only
                k, _, v = line.partition(":")
                f.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    name = f.get("model name") or platform.processor() or platform.machine()
    ident = ", ".join(f"{k} {f[k]}" for k in ("vendor_id", "cpu family", "model", "stepping") if k in f) or \
            ", ".join(f"{k} {f[k]}" for k in ("CPU implementer", "CPU part") if k in f)
    flags = f" {f.get('flags', f.get('Features', ''))} "
    simd = "AVX-512" if " avx512f " in flags else ("AVX2" if " avx2 " in flags else ("NEON" if " asimd " in flags else "no AVX2"))
    if " avx512_vnni " in flags or " avx_vnni " in flags:
        simd += " with VNNI"
    return f"{name} ({ident}{', under a hypervisor' if ' hypervisor ' in flags else ''})", simd

def machine():
    name, simd = cpu_info()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{name}, {os.cpu_count()} cores ({simd}), {mem:.0f} GiB"

def peft_kernels(model):
    """ the generation kernels of this ./peft build, as `peft info` names them """
    out = subprocess.run([os.path.join(ROOT, "peft"), "info", model], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode()
    m = re.search(r"generation kernels \(this build, CPU\): (.*)", out)
    return m[1].strip() if m else "? (peft info did not name them)"

def fmt(x, spec=".0f"):
    return format(x, spec) if isinstance(x, (int, float)) else str(x)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 steps after 1 warm-up, stories15M only (a smoke run)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    ap.add_argument("--gen-only", action="store_true", help="only the bandwidth and generation rows (no training, no PyTorch)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps after warm-up (default 6)")
    a = ap.parse_args()
    steps, warmup = (3, 1) if a.quick else (max(a.steps, 5), 2)
    if not os.path.exists(os.path.join(ROOT, "peft")):
        sys.exit("bench: build ./peft first (make)")
    tok, data = find_tokenizer(), ensure_data()
    m15 = ensure_model("stories15M")
    m110 = None if a.quick or a.gen_only else ensure_model("stories110M")

    # PyTorch and its BLAS
    py = torch_python()
    info = None if a.no_torch or a.gen_only else probe(py, blas_env(None))
    have_torch = bool(info and info.get("torch"))
    have_numpy = bool(info and info.get("numpy"))
    openblas = None
    if info and info["blas"] != "OpenBLAS":
        openblas = find_openblas()
    blas_name = (info or {}).get("blas", "none found")
    if openblas:
        info2 = probe(py, blas_env(openblas))
        if info2 and info2["blas"] == "OpenBLAS":
            blas_name = f"OpenBLAS from {openblas} (the system's libblas.so.3 is {info['blas']})"
        else:
            openblas = None
    torch_blas_fast = "OpenBLAS" in blas_name or "MKL" in blas_name

    # sgemm peak: numpy on OpenBLAS, else torch.mm
    peak, peak_src = {}, None
    if have_numpy and "OpenBLAS" in blas_name:
        peak_src = "numpy " + info["numpy"] + " on OpenBLAS"
        use = "numpy"
    elif have_torch:
        peak_src = f"torch.mm ({blas_name})"
        use = "torch"
    if peak_src:
        for t in (1, 2):
            r, _ = sgemm_peak(py, use, openblas, t)
            peak[t] = max(r.values()) if r else None
            if r:
                log(f"sgemm {t} thread(s), {peak_src}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()) + " GFLOP/s")
    ref2 = peak.get(2) if ("OpenBLAS" in blas_name or "MKL" in blas_name) and peak.get(2) else REF_PEAK
    ref2_src = f"{ref2:.1f} GFLOP/s measured ({peak_src}, 2 threads)" if ref2 != REF_PEAK else \
               f"{REF_PEAK:.0f} GFLOP/s (no OpenBLAS here: OpenBLAS's 2-thread sgemm on the reference machine)"

    rows = []
    work = [] if a.gen_only else [("LoRA train stories15M", "stories15M", m15, 1), ("LoRA train stories15M", "stories15M", m15, 2)]
    if m110:
        work.append(("LoRA train stories110M", "stories110M", m110, 2))
    for label, shape, model, t in work:
        log(f"{label}, {t} thread(s): peft.c ...")
        p = peft_train(model, data, tok, t, steps, warmup)
        tr = None
        if have_torch:
            if shape == "stories110M" and not torch_blas_fast:
                tr = "SKIP (reference BLAS: about 20 min)"
            else:
                log(f"{label}, {t} thread(s): PyTorch ...")
                tr = torch_train(py, openblas, shape, t, steps, warmup) or "failed"
        else:
            tr = "SKIP (no torch)"
        rows.append((label, t, p, tr))
    # generation: peft.c against llama2.c (interleaved runs) or the anchors; fp32 with a bandwidth
    # reading before each run and after the last
    legacy, q80 = ensure_gen_models(m15)
    gen_rows = []
    for kind, model, ref_bin, ref_name in (("fp32", legacy, os.environ.get("PEFT_BENCH_RUNC"), "run.c"),
                                           ("int8", q80, os.environ.get("PEFT_BENCH_RUNQC"), "runq.c")):
        for t in (1, 2):
            log(f"generate stories15M {kind}, {t} thread(s) ...")
            p, r = generate_pair(model, tok, t, ref_bin, measure_bw=(kind == "fp32"))
            gen_rows.append((kind, t, model, ref_name, p, r))
    bw = {}  # the median of the fp32 row's readings, per threads (the int8 rows' limit)
    for kind, t, _, _, p, _ in gen_rows:
        if kind == "fp32" and p and all(p["bw"]):
            bw[t] = statistics.median(p["bw"])

    # print
    cc = subprocess.run(["sh", "-c", "${CC:-cc} --version | head -1"], stdout=subprocess.PIPE).stdout.decode().strip()
    print()
    print(f"machine: {machine()}")
    print(f"peft.c generation kernels: {peft_kernels(legacy)}")
    print(f"peft.c: {cc}, make (-O3 -march=native, OpenMP); steps: median of {steps} after {warmup} warm-up, B=4 T=256 r=8 q_proj,v_proj")
    if have_torch:
        print(f"PyTorch: {info['torch']} under {py}, BLAS: {blas_name}")
    else:
        print(f"PyTorch: not available under {py} ({(info or {}).get('torch_error', 'import failed')})")
    if have_torch and not torch_blas_fast:
        print("note: PyTorch runs on the reference BLAS here; for a meaningful baseline get OpenBLAS (docs/PERFORMANCE.md, PyTorch's BLAS: "
              "apt-get download libopenblas0-openmp; dpkg -x it into bench/cache/openblas) and run again")
    if peak_src:
        print(f"sgemm peak ({peak_src}, best of Llama layer shapes): 1 thread {fmt(peak.get(1), '.1f')}, 2 threads {fmt(peak.get(2), '.1f')} GFLOP/s")
    print(f"matmul share is against {ref2_src}")
    print()
    if rows:
        print("| workload | threads | peft.c tok/s | PyTorch tok/s | ratio | matmul GFLOP/s in matmuls (share) | whole step GFLOP/s | others |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    verdicts, slower = [], []  # slower: rows where peft.c is slower than what it is compared with
    for label, t, p, tr in rows:
        if p is None:
            print(f"| {label} | {t} | failed | | | | | |")
            continue
        ptok = p["tok_s"]
        ttok = tr["tok_s"] if isinstance(tr, dict) else None
        ratio = f"{ptok / ttok:.2f}x" if ttok else ""
        tcol = f"{ttok:.0f}" if ttok else (tr or "")
        oth = max(p["others"], tr["others"] if isinstance(tr, dict) else 0)
        if "mm_gflops" in p:
            ref = ref2 if t == 2 else (peak.get(1) if peak.get(1) and ("OpenBLAS" in blas_name or "MKL" in blas_name) else ref2 / 2)
            share = f"{p['mm_gflops']:.1f} ({100 * p['mm_gflops'] / ref:.0f}% of {ref:.0f})"
            print(f"| {label} | {t} | {ptok:.0f} | {tcol} | {ratio} | {share} | {p['step_gflops']:.1f} | {oth:.2f} |")
            if t == 2:
                verdicts.append((f"{label} matmul >= 70% of {ref:.0f} GFLOP/s (issue 6)", p["mm_gflops"] >= 0.7 * ref, f"{p['mm_gflops']:.1f}"))
            if ttok and ptok < ttok:
                slower.append(f"{label}, {t} thread(s): peft.c {ptok:.0f} tok/s is {ptok / ttok:.2f}x PyTorch's {ttok:.0f}")
            if ttok:  # issue 14's bars: stories15M >= 1.9x on 1 thread, >= 1.8x on 2; stories110M >= 1.7x
                need = (1.9 if t == 1 else 1.8) if "15M" in label else 1.7
                verdicts.append((f"{label} {t} thread(s) >= {need}x PyTorch", ptok / ttok >= need, f"{ptok / ttok:.2f}x"))
        else:
            print(f"| {label} | {t} | {ptok:.1f} | | | | | {oth:.2f} |")
    print()
    for kind, t, model, _, p, _ in gen_rows:  # the fp32 rows' bandwidth readings and runs, in order
        if kind != "fp32" or not p:
            continue
        seq = " ".join(f"[{b:.1f}] {v:.0f}" if b else f"[?] {v:.0f}" for b, v in zip(p["bw"], p["runs"]))
        seq += f" [{p['bw'][-1]:.1f}]" if p["bw"][-1] else " [?]"
        print(f"fp32, {t} thread(s), in order, [read GB/s] tok/s: {seq}")
        shares = run_shares(p, gen_bytes_per_token(model))
        if shares:
            print(f"  each run's share of the limit (its tok/s / (median of the readings either side / {gen_bytes_per_token(model) / 1e6:.1f} MB)): "
                  + " ".join(f"{100 * x:.0f}%" for x in shares) + f"; median {100 * statistics.median(shares):.0f}%")
    print(f"read bandwidth: bench/bandwidth.c, best of {BW_READS} reads of {bandwidth_mib()} MiB per reading, same threads as the run")
    print(f"generation: greedy, {POSITIONS} positions from \"{PROMPT}\", median of {GEN_REPS} runs; llama2.c: "
          + ("run.c/runq.c timed here, interleaved" if os.environ.get("PEFT_BENCH_RUNC") or os.environ.get("PEFT_BENCH_RUNQC")
             else "the anchors of issue 14 (reference machine), compared with the top of each range"))
    print()
    print("| generation stories15M | threads | peft.c tok/s | llama2.c tok/s | ratio | MB read/token | bandwidth limit tok/s (median reading) | share of limit (median of runs) | others |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, t, model, ref_name, p, r in gen_rows:
        if p is None:
            print(f"| {kind} | {t} | failed | | | | | | |")
            continue
        ref = r["tok_s"] if r else ANCHORS[(kind, t)][1]
        refs = f"{ref:.0f} ({ref_name})" if r else f"{ANCHORS[(kind, t)][0]}-{ANCHORS[(kind, t)][1]} ({ref_name}, anchor)"
        need = 1.1 if kind == "fp32" else 1.2
        nbytes = gen_bytes_per_token(model)
        limit = bw[t] * 1e9 / nbytes if bw.get(t) else None
        shares = run_shares(p, nbytes) if kind == "fp32" else None
        share = statistics.median(shares) if shares else (p["tok_s"] / limit if limit else None)
        print(f"| {kind} | {t} | {p['tok_s']:.0f} | {refs} | {p['tok_s'] / ref:.2f}x | {nbytes / 1e6:.1f} | "
              f"{fmt(limit)} | {fmt(100 * share if share else None)}{'%' if share else ''} | {p['others']:.2f} |")
        verdicts.append((f"generate {kind} {t} thread(s) >= {need}x {ref_name}", p["tok_s"] >= need * ref, f"{p['tok_s'] / ref:.2f}x"))
        if p["tok_s"] < ref:
            slower.append(f"generate {kind}, {t} thread(s): peft.c {p['tok_s']:.0f} tok/s is {p['tok_s'] / ref:.2f}x {ref_name}'s {ref:.0f}")
        if kind == "fp32" and share:  # issue 33's bar is 85% of the limit, issue 14's was 90%
            verdicts.append((f"generate fp32 {t} thread(s) >= 85% of the bandwidth limit", share >= 0.85, f"{100 * share:.0f}%"))
    print()
    for what, ok, val in verdicts:
        print(f"bar: {what}: {'met' if ok else 'NOT met'} ({val})")
    for what in slower:
        print(f"WARNING: ratio below 1.0x: {what}")
    worst = max([max(p["others"], tr["others"] if isinstance(tr, dict) else 0) for _, _, p, tr in rows if p] +
                [p["others"] for _, _, _, _, p, _ in gen_rows if p] or [0])
    if worst > 0.2:
        print(f"note: other processes used up to {worst:.2f} cores during this run; the numbers (2 threads above all) are low. "
              "Run again on a quiet machine; OMP_WAIT_POLICY=passive limits the damage on a busy one.")

if __name__ == "__main__":
    main()
