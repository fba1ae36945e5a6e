#!/usr/bin/env bash
# bench/gemm_wgmma/run.sh: on a Hopper GPU, build the test of peft_cuda.cu's wgmma GEMM (plain and with
# cuBLAS beside it), check its SASS (HGMMA, UTMALDG, no local memory), then run correctness and speed.
# The last lines are the summary table (TFLOP/s, and the ratio to cublasGemmEx when it linked).
set -u
cd "$(dirname "$0")"
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
CUDA_LIB=$(dirname "$NVCC")/../lib64
FLAGS="-O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -Wall,-Wextra"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1
CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1)
if [ "$CC" != "9.0" ]; then echo "SKIP the wgmma GEMM against cuBLAS: it needs a Hopper GPU (compute capability 9.0; found '${CC:-none}')"; exit 0; fi
"$NVCC" $FLAGS -Xptxas -v -o gemm_wgmma gemm_wgmma.cu 2>&1 | grep -A2 "entry function.*gemm_wgmma_kernel" | grep -E "Used|spill"
BIN=./gemm_wgmma
if "$NVCC" $FLAGS -DWITH_CUBLAS -o gemm_wgmma_cublas gemm_wgmma.cu -L"$CUDA_LIB" -Xlinker -rpath -Xlinker "$CUDA_LIB" -lcublasLt -lcublas; then
  BIN=./gemm_wgmma_cublas
else
  echo "(cuBLAS did not link: wgmma alone)"
fi
CUOBJDUMP=$(dirname "$NVCC")/cuobjdump
if "$CUOBJDUMP" -sass gemm_wgmma > sass.txt 2>&1; then
  awk '/Function :/ { on = index($0, "gemm_wgmma_kernel") > 0 } on' sass.txt > k.txt
  echo "SASS of gemm_wgmma_kernel: HGMMA $(grep -c HGMMA k.txt), UTMALDG $(grep -c UTMALDG k.txt), LDL/STL $(grep -cE 'LDL|STL' k.txt)"
  rm -f sass.txt k.txt
fi
timeout 300 $BIN all
