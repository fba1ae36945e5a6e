#!/usr/bin/env bash
# Builds and runs the wgmma GEMM test on a machine with a Hopper GPU. Run from anywhere: ./run.sh
# Output: build lines (ptxas resource usage), SASS check, debug-timeout correctness run, release correctness+speed
# run (with cuBLAS when it links), and a FINAL SUMMARY at the end.
set -u
cd "$(dirname "$0")"
NVCC=${NVCC:-}
if [ -z "$NVCC" ]; then
  if command -v nvcc >/dev/null 2>&1; then NVCC=$(command -v nvcc); else NVCC=/usr/local/cuda/bin/nvcc; fi
fi
CUDA_BIN=$(dirname "$NVCC")
CUOBJDUMP=$CUDA_BIN/cuobjdump; command -v "$CUOBJDUMP" >/dev/null 2>&1 || CUOBJDUMP=$(command -v cuobjdump || echo cuobjdump)
FLAGS="-O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -Wall,-Wextra"
LOG=$(mktemp -d)
echo "== environment"
"$NVCC" --version | tail -2
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,memory.used --format=csv 2>&1 || true

echo "== build release (ptxas -v)"
if [ -x gemm_wgmma ]; then echo prebuilt > "$LOG/build.txt"; RC_REL=0; else "$NVCC" $FLAGS -Xptxas -v -o gemm_wgmma gemm_wgmma.cu > "$LOG/build.txt" 2>&1; RC_REL=$?; fi
grep -A3 "Compiling entry function.*gemm_wgmma_kernel" "$LOG/build.txt" | grep -v "Compile time"
grep -i -E "warning|error|C75[0-9][0-9]" "$LOG/build.txt"
echo "release build rc=$RC_REL (warnings: $(grep -c -i warning "$LOG/build.txt"))"
[ $RC_REL -ne 0 ] && cat "$LOG/build.txt"

echo "== build debug (-DDEBUG_TIMEOUT)"
if [ -x gemm_wgmma_dbg ]; then : > "$LOG/build_dbg.txt"; RC_DBG=0; else "$NVCC" $FLAGS -DDEBUG_TIMEOUT -o gemm_wgmma_dbg gemm_wgmma.cu > "$LOG/build_dbg.txt" 2>&1; RC_DBG=$?; fi
cat "$LOG/build_dbg.txt"; echo "debug build rc=$RC_DBG"

echo "== build with cuBLAS (-DWITH_CUBLAS)"
RC_CUB=1
[ -x gemm_wgmma_cublas ] && ! ldd gemm_wgmma_cublas | grep -q "not found" && RC_CUB=0
[ $RC_CUB -eq 0 ] || for LIBDIR in "$CUDA_BIN/../lib64" /usr/local/cuda/lib64 \
    $(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null); do
  [ -d "$LIBDIR" ] || continue
  if ls "$LIBDIR"/libcublas.so* >/dev/null 2>&1; then
    # pip wheels ship only libcublas.so.13 (no unversioned link): name the files directly
    LIBS="-lcublasLt -lcublas"
    [ -e "$LIBDIR/libcublas.so" ] || LIBS="-l:$(basename $(ls "$LIBDIR"/libcublasLt.so.* | head -1)) -l:$(basename $(ls "$LIBDIR"/libcublas.so.* | head -1))"
    "$NVCC" $FLAGS -DWITH_CUBLAS -o gemm_wgmma_cublas gemm_wgmma.cu -L"$LIBDIR" -Xlinker -rpath -Xlinker "$LIBDIR" $LIBS > "$LOG/build_cub.txt" 2>&1 && { RC_CUB=0; echo "linked cuBLAS from $LIBDIR"; break; }
    cat "$LOG/build_cub.txt"
  fi
done
echo "cublas build rc=$RC_CUB"

echo "== SASS check (release binary)"
if "$CUOBJDUMP" -sass gemm_wgmma > "$LOG/sass.txt" 2>&1; then
  for f in '_ZN3wgk17gemm_wgmma_kernelILi256ELi4EEEv14CUtensorMap_stS1_Pfliiii' '_ZN3wgk17gemm_wgmma_kernelILi128ELi6EEEv14CUtensorMap_stS1_Pfliiii'; do
    awk -v f="$f" '/Function :/ {on = index($0, f) > 0} on' "$LOG/sass.txt" > "$LOG/k.txt"
    echo "$f: HGMMA=$(grep -c HGMMA "$LOG/k.txt") UTMALDG=$(grep -c UTMALDG "$LOG/k.txt") SYNCS=$(grep -c SYNCS "$LOG/k.txt") USETMAXREG=$(grep -c USETMAXREG "$LOG/k.txt") WARPGROUP=$(grep -c WARPGROUP "$LOG/k.txt") LDL/STL=$(grep -cE 'LDL|STL' "$LOG/k.txt")" | tee -a "$LOG/sasscheck.txt"
    grep -m 2 HGMMA "$LOG/k.txt"
  done
else
  echo "cuobjdump failed:"; head -5 "$LOG/sass.txt"
fi

echo "== correctness, DEBUG_TIMEOUT build"
RC_C=99
if [ $RC_DBG -eq 0 ]; then timeout 60 ./gemm_wgmma_dbg correct 2>&1 | tee "$LOG/dbg.txt"; RC_C=${PIPESTATUS[0]}; fi
echo "debug correctness rc=$RC_C (124 = killed by timeout = hang)"

echo "== correctness + speed, release build"
BIN=./gemm_wgmma; [ $RC_CUB -eq 0 ] && BIN=./gemm_wgmma_cublas
RC_S=99
if [ $RC_REL -eq 0 ]; then timeout 120 $BIN all 2>&1 | tee "$LOG/rel.txt"; RC_S=${PIPESTATUS[0]}; fi
echo "release run ($BIN) rc=$RC_S (124 = killed by timeout = hang)"

echo
echo "================ FINAL SUMMARY ================"
echo "builds: release rc=$RC_REL (warnings $(grep -c -i warning "$LOG/build.txt")), debug rc=$RC_DBG, cublas rc=$RC_CUB"
grep -A3 "Compiling entry function.*gemm_wgmma_kernel" "$LOG/build.txt" | grep -E "registers|stack frame" | sed 's/^/  /'
echo "SASS:"; sed 's/^/  /' "$LOG/sasscheck.txt" 2>/dev/null || echo "  (no SASS check: cuobjdump failed)"
echo "debug-timeout correctness rc=$RC_C: $(grep -h 'wgmma correctness:' "$LOG/dbg.txt" 2>/dev/null)"
grep -h -E "^FAIL|DEBUG_TIMEOUT record|CUDA ERROR" "$LOG/dbg.txt" 2>/dev/null | head -20
echo "release run rc=$RC_S: $(grep -h 'wgmma correctness:' "$LOG/rel.txt" 2>/dev/null)"
grep -h -E "^FAIL|MISMATCH|WRONG|CUDA ERROR|CUBLAS ERROR|cublas-vs-reference" "$LOG/rel.txt" 2>/dev/null | head -20
sed -n '/== summary/,$p' "$LOG/rel.txt" 2>/dev/null
rm -rf "$LOG"
