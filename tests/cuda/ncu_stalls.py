"""tests/cuda/ncu_stalls.py RAW.csv [METRIC ...]: from `ncu -i REP --page raw --csv`, each kernel's top stall
reasons (warps stalled per issued instruction, largest first) and the named metrics (default: tensor pipe
and issue activity, shared-memory bank conflicts)."""
import csv
import sys

DEFAULT = ("sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
           "smsp__issue_active.avg.pct_of_peak_sustained_active",
           "l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum")
rows = list(csv.reader(open(sys.argv[1])))
hdr, data = rows[0], rows[2:]
pre, post = "smsp__average_warps_issue_stalled_", "_per_issue_active.ratio"
for r in data:
    st = sorted(((float(r[i].replace(",", "")), h[len(pre):-len(post)]) for i, h in enumerate(hdr)
                 if h.startswith(pre) and h.endswith(post) and r[i] not in ("", "n/a")), reverse=True)
    print(r[hdr.index("Kernel Name")][:60], " | ".join(f"{h} {v:.2f}" for v, h in st[:8]))
    for key in sys.argv[2:] or DEFAULT:
        if key in hdr:
            print("   ", key, r[hdr.index(key)])
