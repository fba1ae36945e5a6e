# peft.c: `make` builds ./peft (optimised, OpenMP when the compiler has it) and checks tokenizer.bin;
# `make test` runs the suite; `make debug` builds and runs it under ASan+UBSan; `make bench` measures speed.
# `make PEFT_INFER=1` builds ./peft_infer, the inference-only build; `make cross-test` runs the suite
# on aarch64, armhf, i386 and s390x under qemu (see tests/cross_test.sh).
CC ?= cc
PYTHON ?= python3
TOKENIZER_MODEL ?= ../shared/tokenizers/llama2/tokenizer.model

# OpenMP if the compiler supports it; PORTABLE=1 builds plain C99 without OpenMP or -march=native
HAVE_OPENMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo 1)
ifeq ($(PORTABLE),1)
  OPT = -O2
  OMP = -Wno-unknown-pragmas
else
  OPT = -O3 -march=native
  ifeq ($(HAVE_OPENMP),1)
    OMP = -fopenmp
  else
    OMP = -Wno-unknown-pragmas
  endif
endif
CFLAGS ?= $(OPT) -std=c99 -Wall -Wextra
LDLIBS = -lm

# CUDA=1: the kernels also run on an NVIDIA GPU (peft_cuda.cu, CUDA runtime only; sm_80 and newer,
# with Hopper's own machine code). `make test-cuda` builds that way and runs the suite with the GPU tests.
NVCC ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90
NVCCFLAGS ?= -O3 -std=c++17 $(CUDA_ARCH) -Xcompiler -Wall,-Wextra
ifeq ($(CUDA),1)
  GPU_DEFS = -DPEFT_CUDA
  GPU_OBJ = peft_cuda.o
  LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lstdc++
endif
# NCCL=1 (with CUDA=1): data-parallel training over several GPUs. NCCL_HOME holds include/nccl.h and
# lib/libnccl.so*: a system NCCL (/usr), or the one PyTorch's pip wheels ship (found with python3).
ifeq ($(NCCL),1)
  NCCL_HOME ?= $(shell $(PYTHON) -c "import nvidia.nccl as n; print(list(n.__path__)[0])" 2>/dev/null || echo /usr)
  GPU_DEFS += -DPEFT_NCCL
  NCCL_INC = -I$(NCCL_HOME)/include
  LDLIBS += -L$(NCCL_HOME)/lib -Wl,-rpath,$(NCCL_HOME)/lib $(if $(wildcard $(NCCL_HOME)/lib/libnccl.so),-lnccl,-l:libnccl.so.2) -lpthread
endif
SAN = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

.PHONY: all test test-cuda check-cuda profile-cuda test-multi-gpu bench-multi-gpu debug debug-build clean tokenizer bench bench-cuda bench-big fuzz fuzz-build fuzz-replay fuzz-seeds infer cross-test
ifeq ($(PEFT_INFER),1)
all: peft_infer
else
all: peft tokenizer
endif

# rebuild when the flags change (e.g. after make PORTABLE=1)
.cflags: FORCE
	@echo '$(CC) $(CFLAGS) $(OMP) $(GPU_DEFS)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(OMP) $(GPU_DEFS)' > $@
FORCE:

peft: peft.c $(GPU_OBJ) .cflags
	$(CC) $(CFLAGS) $(OMP) $(GPU_DEFS) peft.c $(GPU_OBJ) -o peft $(LDLIBS)

peft_cuda.o: peft_cuda.cu .cflags
	$(NVCC) $(NVCCFLAGS) $(filter -DPEFT_NCCL,$(GPU_DEFS)) $(NCCL_INC) -c peft_cuda.cu -o peft_cuda.o

# tokenizer.bin (llama2.c's Llama 2 tokenizer) is committed. Where the sentencepiece tokenizer.model is found,
# make rebuilds it with export.py (standard library only) and stops if the result differs from the committed file.
tokenizer: .tokenizer-checked
.tokenizer-checked: export.py $(wildcard tokenizer.bin) $(wildcard $(TOKENIZER_MODEL))
	@if [ -f "$(TOKENIZER_MODEL)" ]; then \
		$(PYTHON) export.py tokenizer "$(TOKENIZER_MODEL)" -o tokenizer.bin.new || exit 1; \
		if [ ! -f tokenizer.bin ]; then mv tokenizer.bin.new tokenizer.bin; \
		elif cmp -s tokenizer.bin.new tokenizer.bin; then rm -f tokenizer.bin.new; echo "tokenizer.bin: rebuilt from $(TOKENIZER_MODEL), identical"; \
		else echo "tokenizer.bin differs from the one export.py builds from $(TOKENIZER_MODEL) (see tokenizer.bin.new)"; exit 1; fi; \
	elif [ ! -f tokenizer.bin ]; then \
		echo "no tokenizer.bin and no Llama 2 tokenizer.model at $(TOKENIZER_MODEL): git checkout tokenizer.bin, or make TOKENIZER_MODEL=path"; exit 1; \
	fi
	@touch $@

test_all: test_all.c peft.c $(GPU_OBJ) .cflags
	$(CC) $(CFLAGS) $(OMP) $(GPU_DEFS) test_all.c $(GPU_OBJ) -o test_all $(LDLIBS)
test_all_fp64: test_all.c peft.c .cflags
	$(CC) $(CFLAGS) $(OMP) -DPEFT_FP64 test_all.c -o test_all_fp64 $(LDLIBS)

# the inference-only build on a fixed 16 MiB arena, for the suite
peft_infer_arena: peft.c
	$(CC) $(INFER_OPT) -std=c99 -Wall -Wextra -Wno-unknown-pragmas -DPEFT_INFER -DPEFT_ARENA=16777216 peft.c -o peft_infer_arena -lm

# the suite: test_all runs ./test_all_fp64 (finite differences in double), ./peft (CLI tests) and ./peft_infer_arena
test: peft tokenizer test_all test_all_fp64 peft_infer_arena
	./test_all

# the suite built with CUDA=1: every test above on the CPU, then the GPU's (SKIP without a GPU)
test-cuda:
	$(MAKE) CUDA=1 test

# every GPU check (tests/cuda/check.sh: the build, the suite, compute-sanitizer memcheck and racecheck, the kept bf16
# copies, GPU against CPU; CHECK_CUDA="sweep interop" for the other parts), and the profiles (tests/cuda/profile.sh
# PART: kernels, rows VAR=VAL..., attention, ncu REGEX); docs/TESTING.md says what each checks
CHECK_CUDA ?=
PROFILE_CUDA ?= kernels
check-cuda:
	bash tests/cuda/check.sh $(CHECK_CUDA)
profile-cuda:
	$(MAKE) CUDA=1 peft
	bash tests/cuda/profile.sh $(PROFILE_CUDA)

# AddressSanitizer + UndefinedBehaviorSanitizer build of everything, then the suite
# (separate binaries, so the fast ones stay as they are; one target each, so make -j builds them side by side)
SAN_CC = $(CC) $(SAN) -std=c99 -Wall -Wextra -Wno-unknown-pragmas
.cflags_debug: FORCE
	@echo '$(SAN_CC) $(LDLIBS)' | cmp -s - $@ || echo '$(SAN_CC) $(LDLIBS)' > $@
peft_debug: peft.c .cflags_debug
	$(SAN_CC) peft.c -o peft_debug $(LDLIBS)
test_all_debug: test_all.c peft.c .cflags_debug
	$(SAN_CC) test_all.c -o test_all_debug $(LDLIBS)
test_all_fp64_debug: test_all.c peft.c .cflags_debug
	$(SAN_CC) -DPEFT_FP64 test_all.c -o test_all_fp64_debug $(LDLIBS)
peft_infer_debug: peft.c .cflags_debug
	$(SAN_CC) -DPEFT_INFER -DPEFT_ARENA=16777216 peft.c -o peft_infer_debug $(LDLIBS)
debug-build: peft_debug test_all_debug test_all_fp64_debug peft_infer_debug
debug: tokenizer debug-build
	ASAN_OPTIONS=detect_leaks=1 PEFT_README_BLOCKS=0 PEFT_BIN=./peft_debug PEFT_FP64_TEST=./test_all_fp64_debug PEFT_INFER_BIN=./peft_infer_debug PEFT_KILL9_TRIALS=6 ./test_all_debug

# speed: peft.c vs PyTorch on the same LoRA step, matmul throughput vs the sgemm peak, generation
# (random-weight models of llama2.c's shapes in bench/cache/; see bench/bench.py and docs/PERFORMANCE.md)
bench: peft tokenizer
	$(PYTHON) bench/bench.py

# GPU speed: peft.c (built with CUDA=1) vs transformers + PEFT eager and torch.compile on the same GPU
# (bench/bench_cuda.py): the three training rows, MFU, attention, QLoRA NF4 7B and generation in one run
# (the 7B rows want a GPU of 40 GB or more; BENCH_CUDA_ARGS="" for the two small rows, eager only),
# then the Hopper GEMM against cuBLAS on the Llama layer shapes (bench/gemm_wgmma/run.sh; SKIP elsewhere)
BENCH_CUDA_ARGS ?= --compile --rows stories110M,TinyLlama-1.1B,Llama-2-7B --qlora-7b --gen-rows TinyLlama-1.1B,Llama-2-7B
bench-cuda:
	$(MAKE) CUDA=1 peft
	$(PYTHON) bench/bench_cuda.py $(BENCH_CUDA_ARGS)
	bash bench/gemm_wgmma/run.sh

# big models on small GPUs (issue 29; bench/bench_big.sh, docs/OFFLOAD.md): time to the first step of a 7B bf16
# folder against transformers + PEFT, the 7B NF4 --gpu-memory 6G and 70B NF4 --gpu-memory 22G runs against resident;
# BENCH_BIG_PARTS picks the parts (load 7b 70b), one device call each when time is short
BENCH_BIG_PARTS ?= load 7b 70b
bench-big:
	$(MAKE) CUDA=1 peft
	bash bench/bench_big.sh $(BENCH_BIG_PARTS)

# several GPUs on one host (make CUDA=1 NCCL=1): the data-parallel tests (tests/cuda/multi_gpu.sh: 2 GPUs
# against 1, mpirun, torchrun, resume, kill -9, --shard) and the scaling benchmark against PyTorch DDP + PEFT,
# then the 70B NF4 --shard run on 2 GPUs against 1 GPU offloaded (bench/bench_big.sh 70b-shard; BENCH_SHARD=0 skips it)
BENCH_SHARD ?= 1
test-multi-gpu:
	bash tests/cuda/multi_gpu.sh
bench-multi-gpu:
	$(MAKE) CUDA=1 NCCL=1 peft
	$(PYTHON) bench/bench_multi_gpu.py
	if [ "$(BENCH_SHARD)" = 1 ]; then bash bench/bench_big.sh 70b-shard; fi

# libFuzzer targets, one per parser (tests/fuzz/fuzz_*.c; clang with -fsanitize=fuzzer,address,undefined).
# make fuzz: each target fuzzes for FUZZ_SECONDS over its committed corpus (+ tests/fuzz/seeds/ when
# made by make fuzz-seeds); new inputs go to tests/fuzz/work/ (not committed). make fuzz-replay runs the
# committed corpus and regression inputs through the sanitized targets once, without fuzzing (CI does).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = json safetensors hf_config hf_model tokenizer_json tokenizer_bin llama2c_bin adapter trainer_state text instruct
FUZZ_FLAGS = -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=c99 -Wall -Wextra -Wno-unused-function -Wno-unknown-pragmas
# one binary holds every target (one build); tests/fuzz/bin/fuzz_<target> are links to it
tests/fuzz/bin/fuzz_all: tests/fuzz/fuzz_all.c $(wildcard tests/fuzz/fuzz_*.c) tests/fuzz/fuzz.h peft.c
	@mkdir -p tests/fuzz/bin
	$(FUZZ_CC) $(FUZZ_FLAGS) tests/fuzz/fuzz_all.c -o $@ -lm
	@for t in $(FUZZ_TARGETS); do ln -sf fuzz_all tests/fuzz/bin/fuzz_$$t; done
fuzz-build: tests/fuzz/bin/fuzz_all
fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p tests/fuzz/work/$$t tests/fuzz/corpus/$$t; \
		seeds=""; [ -d tests/fuzz/seeds/$$t ] && seeds=tests/fuzz/seeds/$$t; \
		echo "== fuzz_$$t for $(FUZZ_SECONDS) s (log: tests/fuzz/work/$$t.log)"; \
		ASAN_OPTIONS=detect_leaks=1 ./tests/fuzz/bin/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=1 -rss_limit_mb=2048 -max_len=1048576 \
			-print_final_stats=1 -artifact_prefix=tests/fuzz/work/$$t- tests/fuzz/work/$$t tests/fuzz/corpus/$$t $$seeds > tests/fuzz/work/$$t.log 2>&1; rc=$$?; \
		grep -E "^#[0-9]+" tests/fuzz/work/$$t.log | tail -1; \
		if [ $$rc -ne 0 ]; then grep -E "ERROR|SUMMARY|Test unit written" tests/fuzz/work/$$t.log | head -5; echo "fuzz_$$t: FAILED"; exit 1; fi; \
	done
fuzz-replay: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
		dirs=tests/fuzz/corpus/$$t; [ -d tests/fuzz/regressions/$$t ] && dirs="$$dirs tests/fuzz/regressions/$$t"; \
		n=$$(find $$dirs -type f | wc -l); \
		ASAN_OPTIONS=detect_leaks=1 ./tests/fuzz/bin/fuzz_$$t -runs=0 -timeout=1 -rss_limit_mb=2048 $$dirs > tests/fuzz/bin/replay_$$t.log 2>&1 \
			&& echo "fuzz-replay $$t: $$n inputs clean ($$(grep -oE 'cov: [0-9]+ ft: [0-9]+' tests/fuzz/bin/replay_$$t.log | tail -1))" || { tail -30 tests/fuzz/bin/replay_$$t.log; echo "fuzz-replay $$t: FAILED"; exit 1; }; \
	done
# tests/fuzz/seeds/: real files of the project and ../shared, and tiny generated models and checkpoints
fuzz-seeds: peft
	$(PYTHON) tests/fuzz/make_seeds.py

# inference-only build for embedded ports: loading, adapters (apply, merge), generation; no training,
# no OpenMP, no -march=native. PEFT_ARENA=BYTES serves all memory from one static array (no malloc);
# otherwise the heap is counted and `generate` prints its peak. Cross: make PEFT_INFER=1 CC=aarch64-linux-gnu-gcc
INFER_OPT ?= -O2
ifdef PEFT_ARENA
  INFER_MEM = -DPEFT_ARENA=$(PEFT_ARENA)
else
  INFER_MEM = -DPEFT_HEAP_STATS
endif
INFER_FLAGS = $(INFER_OPT) -std=c99 -Wall -Wextra -Wno-unknown-pragmas -DPEFT_INFER $(INFER_MEM)
infer: peft_infer
.cflags_infer: FORCE
	@echo '$(CC) $(INFER_FLAGS)' | cmp -s - $@ || echo '$(CC) $(INFER_FLAGS)' > $@
peft_infer: peft.c .cflags_infer
	$(CC) $(INFER_FLAGS) peft.c -o peft_infer -lm

# cross builds with Debian's cross compilers and the suite under qemu-user, then the cross-endian
# check (files written on s390x load on x86-64 and the reverse); CROSS_TARGETS="aarch64 s390x" for a subset
CROSS_TARGETS ?= aarch64 armhf i386 s390x
cross-test: peft tokenizer
	tests/cross_test.sh $(CROSS_TARGETS)

clean:
	rm -f peft peft_infer peft_infer_arena peft_infer_debug test_all test_all_fp64 peft_debug test_all_debug test_all_fp64_debug peft_cuda.o .cflags .cflags_infer .cflags_debug .tokenizer-checked
	rm -rf cross tests/fuzz/bin
