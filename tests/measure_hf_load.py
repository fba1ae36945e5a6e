#!/usr/bin/env python3
"""Load time and peak memory of `peft` loading a Hugging Face folder with --quant, against the disk's
sequential read speed measured in the same run (Linux; standard library only).

    python3 tests/make_random_hf.py /tmp/rand7b                       # 13.5 GB, Llama-2-7B shape, bf16
    python3 tests/measure_hf_load.py /tmp/rand7b -z tokenizer.bin [--quant nf4 int8 none]

Before each read the folder's pages are dropped from the page cache (posix_fadvise DONTNEED, after a
sync), so the disk is read cold each time. The disk speed is a plain sequential read of the shards in
16 MB blocks. Each load is `/usr/bin/time -v ./peft generate FOLDER -z TOK -n 0 --quant T` (loads the
model and the tokenizer, generates nothing); peak RSS is time's "Maximum resident set size" and the
weights are what peft reports holding ("weights in memory").
"""
import argparse
import glob
import os
import re
import subprocess
import time


def evict(files):
    os.sync()
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def read_speed(files):
    evict(files)
    buf = bytearray(16 << 20)
    total, t0 = 0, time.time()
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                total += n
    dt = time.time() - t0
    return total, dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("-z", default="tokenizer.bin")
    ap.add_argument("--quant", nargs="+", default=["nf4", "int8", "none"])
    ap.add_argument("--peft", default="./peft")
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.folder, "*.safetensors")))
    total, dt = read_speed(files)
    disk = total / dt
    print(f"disk: sequential read of {total / 1e9:.2f} GB in {dt:.1f} s = {disk / 1e9:.2f} GB/s (cold)", flush=True)
    for q in a.quant:
        evict(files)
        cmd = ["/usr/bin/time", "-v", a.peft, "generate", a.folder, "-z", a.z, "-n", "0", "--quant", q]
        r = subprocess.run(cmd, capture_output=True, text=True)
        err = r.stderr
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) * 1024
        el = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", err)
        secs = (int(el.group(1) or 0) * 3600) + int(el.group(2)) * 60 + float(el.group(3))
        w = re.search(r"weights in memory ([\d.]+) MiB", err)
        line = [l for l in err.splitlines() if l.startswith("peft:")]
        if r.returncode != 0:
            print(f"--quant {q}: exit {r.returncode} after {secs:.1f} s, peak RSS {rss / 2**30:.2f} GiB: {line[0] if line else err.strip()[:300]}", flush=True)
            continue
        wb = float(w.group(1)) * 2**20 if w else float("nan")
        print(f"--quant {q}: loaded in {secs:.1f} s = {total / secs / 1e9:.2f} GB/s of safetensors "
              f"({100 * total / secs / disk:.0f}% of the disk's {disk / 1e9:.2f} GB/s); peak RSS {rss / 2**30:.2f} GiB, "
              f"weights {wb / 2**30:.2f} GiB, peak/weights {rss / wb:.3f}", flush=True)


if __name__ == "__main__":
    main()
