#!/usr/bin/env bash
# tests/fuzz/fuzz_many.sh: every fuzz target for S seconds on J cores, then one line per target:
# executions, coverage (cov = edges, ft = features), CPU-seconds, crashes (with the artifact paths).
#
#   tests/fuzz/fuzz_many.sh -j J -s S [-b BIN] [-t "json text ..."] [-w WORK] [-n NICE] [-T SECS] [-M]
#
# J <= number of targets: the targets run one process each, J at a time (a queue), each for S seconds.
# J > number of targets: all run at once, each with libFuzzer's -fork=K (K = J / targets, the rest of J
# spread over the first ones), so that J cores are busy for S seconds.
# A single process that stops on a crash, hang (-timeout, default 1 s) or leak is started again for the rest
# of its S seconds (at most 20 times); fork mode carries on by itself (-ignore_crashes/-ignore_timeouts/-ignore_ooms).
#
# The binary (-b, default tests/fuzz/bin/fuzz_all, built by make fuzz-build) may have been built on
# another machine: the target is picked with PEFT_FUZZ_TARGET, so no links are needed. Runs from the
# repository root (the targets read tests/*/tokenizer.json and tokenizer.bin from there). Inputs: the
# committed tests/fuzz/corpus/<t>/ and, when present, tests/fuzz/seeds/<t>/ (make fuzz-seeds); new inputs go
# to WORK/<t>/ (default tests/fuzz/work), logs to WORK/<t>.log, crash files to WORK/artifacts/<t>-*.
# -M: afterwards rebuild tests/fuzz/corpus/<t>/ minimized (-merge=1) from itself and WORK/<t>/, inputs cut to
# 32 KiB (hf_model: 128 KiB) as the committed corpus is.
# -n: nice level (default 19); -T: seconds per input that count as a hang (default 1); a timeout input is
# run again alone at the end and counts only if it still takes that long. Needs bash 4.3 (wait -n).
set -u

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
J=1 S=60 BIN=tests/fuzz/bin/fuzz_all TARGETS="" WORK="" NICE=19 MERGE=0 TIMEOUT=1 MAXLEN=1048576 RSS=2048
while getopts "j:s:b:t:w:n:T:Mh" o; do
    case $o in
    j) J=$OPTARG ;; s) S=$OPTARG ;; b) BIN=$OPTARG ;; t) TARGETS=$OPTARG ;; w) WORK=$OPTARG ;; n) NICE=$OPTARG ;;
    T) TIMEOUT=$OPTARG ;; M) MERGE=1 ;; h) usage 0 ;; *) usage ;;
    esac
done
case "$J$S" in *[!0-9]*) echo "fuzz_many: -j and -s take whole numbers" >&2; exit 2 ;; esac
if [ "$J" -lt 1 ] || [ "$S" -lt 1 ]; then echo "fuzz_many: -j and -s must be at least 1" >&2; exit 2; fi

# absolute paths before moving to the repository root
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
[ -n "$WORK" ] && case $WORK in /*) ;; *) WORK=$PWD/$WORK ;; esac
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
[ -n "$WORK" ] || WORK=$ROOT/tests/fuzz/work
[ -x "$BIN" ] || { echo "fuzz_many: no fuzz binary at $BIN (make fuzz-build, or -b PATH)" >&2; exit 2; }
if [ -z "$TARGETS" ]; then # the Makefile's list
    TARGETS=$(sed -n 's/^FUZZ_TARGETS *= *//p' Makefile)
    [ -n "$TARGETS" ] || TARGETS=$(ls tests/fuzz/corpus)
fi
read -r -a T_ARR <<< "$TARGETS"
N=${#T_ARR[@]}
mkdir -p "$WORK/artifacts"

# fork workers per target (0: a plain process)
declare -A FORK
for ((i = 0; i < N; i++)); do
    if [ "$J" -gt "$N" ]; then FORK[${T_ARR[$i]}]=$((J / N + (i < J % N ? 1 : 0))); else FORK[${T_ARR[$i]}]=0; fi
done

run_target() { # target: fuzz for S seconds (restarting a plain process after a crash), then write WORK/<t>.times
    local t=$1 k=${FORK[$1]} dirs log=$WORK/$1.log end left rc runs=0
    mkdir -p "$WORK/$t" "tests/fuzz/corpus/$t"
    dirs="$WORK/$t tests/fuzz/corpus/$t"
    [ -d "tests/fuzz/seeds/$t" ] && dirs="$dirs tests/fuzz/seeds/$t"
    : > "$log"
    end=$(($(date +%s) + S))
    (
        while left=$((end - $(date +%s))); [ "$left" -ge 1 ] && [ "$runs" -lt 20 ]; do
            runs=$((runs + 1))
            echo "== fuzz_many: $t run $runs, $left s, fork=$k" >> "$log"
            # shellcheck disable=SC2086
            if [ "$k" -gt 0 ]; then
                PEFT_FUZZ_TARGET=$t ASAN_OPTIONS=detect_leaks=1 nice -n "$NICE" "$BIN" -fork="$k" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
                    -max_total_time="$left" -timeout="$TIMEOUT" -rss_limit_mb="$RSS" -max_len="$MAXLEN" -print_final_stats=1 \
                    -artifact_prefix="$WORK/artifacts/$t-" $dirs >> "$log" 2>&1
            else
                PEFT_FUZZ_TARGET=$t ASAN_OPTIONS=detect_leaks=1 nice -n "$NICE" "$BIN" \
                    -max_total_time="$left" -timeout="$TIMEOUT" -rss_limit_mb="$RSS" -max_len="$MAXLEN" -print_final_stats=1 \
                    -artifact_prefix="$WORK/artifacts/$t-" $dirs >> "$log" 2>&1
            fi
            rc=$?
            echo "== fuzz_many: $t run $runs exit $rc" >> "$log"
            [ "$rc" -eq 0 ] && break
            [ "$k" -gt 0 ] && break
        done
        times > "$WORK/$t.times" # second line: user and system time of the fuzzer processes (and their fork workers)
    )
}

started=$(date +%s)
: > "$WORK/.fuzz_many_start" # artifacts newer than this one are this run's
slots=$J; [ "$J" -gt "$N" ] && slots=$N
echo "fuzz_many: $N targets, $S s each, $J core(s) ($([ "$J" -gt "$N" ] && echo "all at once with -fork" || echo "$slots at a time")); binary $BIN; logs in $WORK"
running=0
for t in "${T_ARR[@]}"; do
    if [ "$running" -ge "$slots" ]; then wait -n; running=$((running - 1)); fi
    run_target "$t" &
    running=$((running + 1))
done
wait

secs() { # "1m2.500s" -> 62.500
    awk -v s="$1" 'BEGIN { m = 0; if (match(s, /^[0-9]+m/)) { m = substr(s, 1, RLENGTH - 1); s = substr(s, RLENGTH + 1) } sub(/s$/, "", s); printf "%.1f", m * 60 + s }'
}
printf '%-15s %12s %16s %9s  %s\n' target executions "cov / ft" "CPU s" crashes
total_exec=0 total_cpu=0 total_crash=0
for t in "${T_ARR[@]}"; do
    log=$WORK/$t.log
    # executions: the sum of each run's final stats, or fork mode's last "#N: cov:" line
    ex=$(awk -F': ' '/^stat::number_of_executed_units/ { s += $2; n++ } END { if (n) print s }' "$log")
    [ -n "$ex" ] || ex=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    [ -n "$ex" ] || ex=0
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 | awk '{ print $2 " / " $4 }')
    cpu=0
    if [ -f "$WORK/$t.times" ]; then
        read -r u s < <(sed -n 2p "$WORK/$t.times")
        cpu=$(awk -v a="$(secs "$u")" -v b="$(secs "$s")" 'BEGIN { printf "%.1f", a + b }')
    fi
    arts=$(find "$WORK/artifacts" -maxdepth 1 -type f -name "$t-*" -newer "$WORK/.fuzz_many_start" | sort)
    nc=0; [ -n "$arts" ] && nc=$(printf '%s\n' "$arts" | wc -l)
    printf '%-15s %12s %16s %9s  %s\n' "$t" "$ex" "${cov:-?}" "$cpu" "$nc $(printf '%s' "$arts" | tr '\n' ' ')"
    total_exec=$((total_exec + ex)); total_crash=$((total_crash + nc))
    total_cpu=$(awk -v a="$total_cpu" -v b="$cpu" 'BEGIN { printf "%.1f", a + b }')
done
printf '%-15s %12s %16s %9s  %s\n' total "$total_exec" "" "$total_cpu" "$total_crash"
[ "$J" -gt "$N" ] && echo "fuzz_many: (fork mode: libFuzzer's fork lines give features for both cov and ft; make fuzz-replay prints the edges)"
echo "fuzz_many: $(($(date +%s) - started)) s wall"

if [ "$MERGE" = 1 ]; then
    for t in "${T_ARR[@]}"; do
        m=$WORK/merge_$t
        rm -rf "$m"; mkdir -p "$m"
        cap=32768; [ "$t" = hf_model ] && cap=131072 # inputs cut to 32 KiB (a model: 128 KiB), as the committed corpus is
        if PEFT_FUZZ_TARGET=$t nice -n "$NICE" "$BIN" -merge=1 -timeout="$TIMEOUT" -rss_limit_mb="$RSS" -max_len="$cap" "$m" "tests/fuzz/corpus/$t" "$WORK/$t" > "$WORK/merge_$t.log" 2>&1; then
            before=$(find "tests/fuzz/corpus/$t" -type f | wc -l)
            rm -rf "tests/fuzz/corpus/$t" && mv "$m" "tests/fuzz/corpus/$t"
            echo "fuzz_many: corpus/$t: $before -> $(find "tests/fuzz/corpus/$t" -type f | wc -l) files ($(grep -oE '[0-9]+ new coverage edges' "$WORK/merge_$t.log" | tail -1))"
        else
            echo "fuzz_many: merging $t failed (corpus left as it was): $WORK/merge_$t.log"; rm -rf "$m"
        fi
    done
fi
# a timeout on a loaded machine may be the machine (nice 19 under other work): each timeout input is
# run again alone, 3 times, with the same limit; only one that still takes over -T seconds counts
real_bad=0
for a in $(find "$WORK/artifacts" -maxdepth 1 -type f -newer "$WORK/.fuzz_many_start" | sort); do
    t=$(basename "$a"); kind=${t#*-}; kind=${kind%%-*}; t=${t%%-*}
    if [ "$kind" = timeout ]; then
        ok=1 ms=""
        for i in 1 2 3; do
            out=$(PEFT_FUZZ_TARGET=$t ASAN_OPTIONS=detect_leaks=1 "$BIN" -timeout="$TIMEOUT" -rss_limit_mb="$RSS" "$a" 2>&1) || ok=0
            ms="$ms $(printf '%s\n' "$out" | grep -oE 'in [0-9]+ ms' | grep -oE '[0-9]+')"
        done
        if [ "$ok" = 1 ]; then echo "fuzz_many: $a: not a hang alone (ms of 3 runs:$ms; the machine was busy)"; continue; fi
    fi
    echo "fuzz_many: $a: $kind, reproduced"; real_bad=$((real_bad + 1))
done
[ "$real_bad" -eq 0 ]
