[ -e ../shared ] || ln -sfn "$PWD/.carry/shared" ../shared
( make CUDA=1 -j16 peft test_all ) > $OUT/build.log 2>&1 || { tail -20 $OUT/build.log; exit 1; }
grep -i warning $OUT/build.log | head -3
TOK=../shared/tokenizers/llama2/tokenizer.bin; D=../shared/data/tinyshakespeare.txt
python3 -c "
import sys; sys.path.insert(0,'bench'); from bench_cuda import model_folder; model_folder('TinyLlama-1.1B'); model_folder('stories110M')" 2>&1 | tail -1
for tc in 32,32 64,32 32,64 64,64; do
  echo "== PEFT_CUDA_TC=$tc"
  PEFT_CUDA_TC=$tc ./test_all --cuda 2>&1 | grep -E "cuda matmul|passed" | cut -c1-200
  for row in "TinyLlama-1.1B 8 q_proj,v_proj" "stories110M 16 all-linear"; do set -- $row
    PEFT_CUDA_TC=$tc ./peft train bench/cache/$1-hf-bf16 $D -z $TOK -b $2 -T 1024 --targets $3 -r 8 --alpha 16 --steps 8 --val-frac 0 --device cuda --bench -o /tmp/p_$1 2>&1 | grep "^bench" | cut -c1-120
    PEFT_CUDA_TC=$tc PEFT_CUDA_PROFILE=1 ./peft train bench/cache/$1-hf-bf16 $D -z $TOK -b $2 -T 1024 --targets $3 -r 8 --alpha 16 --steps 3 --val-frac 0 --device cuda -o /tmp/p_$1 2>&1 | grep -E "gemm_tc|to_bf16"
  done
done
