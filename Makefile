# peft.c: `make` builds ./peft (optimised, OpenMP when the compiler has it) and checks tokenizer.bin;
# `make test` runs the suite; `make debug` builds and runs it under ASan+UBSan; `make bench` measures speed.
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
CUDA_ARCH ?= -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90
NVCCFLAGS ?= -O3 -std=c++17 $(CUDA_ARCH) -Xcompiler -Wall,-Wextra
ifeq ($(CUDA),1)
  GPU_DEFS = -DPEFT_CUDA
  GPU_OBJ = peft_cuda.o
  LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lstdc++
endif
SAN = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

.PHONY: all test test-cuda debug clean tokenizer bench bench-cuda
all: peft tokenizer

# rebuild when the flags change (e.g. after make PORTABLE=1)
.cflags: FORCE
	@echo '$(CC) $(CFLAGS) $(OMP) $(GPU_DEFS)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(OMP) $(GPU_DEFS)' > $@
FORCE:

peft: peft.c $(GPU_OBJ) .cflags
	$(CC) $(CFLAGS) $(OMP) $(GPU_DEFS) peft.c $(GPU_OBJ) -o peft $(LDLIBS)

peft_cuda.o: peft_cuda.cu .cflags
	$(NVCC) $(NVCCFLAGS) -c peft_cuda.cu -o peft_cuda.o

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

# the suite: test_all runs ./test_all_fp64 (finite differences in double) and ./peft (CLI tests)
test: peft tokenizer test_all test_all_fp64
	./test_all

# the suite built with CUDA=1: every test above on the CPU, then the GPU's (SKIP without a GPU)
test-cuda:
	$(MAKE) CUDA=1 test

# AddressSanitizer + UndefinedBehaviorSanitizer build of everything, then the suite
# (separate binaries, so the fast ones stay as they are)
debug: tokenizer
	$(CC) $(SAN) -std=c99 -Wall -Wextra -Wno-unknown-pragmas peft.c -o peft_debug $(LDLIBS)
	$(CC) $(SAN) -std=c99 -Wall -Wextra -Wno-unknown-pragmas test_all.c -o test_all_debug $(LDLIBS)
	$(CC) $(SAN) -std=c99 -Wall -Wextra -Wno-unknown-pragmas -DPEFT_FP64 test_all.c -o test_all_fp64_debug $(LDLIBS)
	ASAN_OPTIONS=detect_leaks=1 PEFT_BIN=./peft_debug PEFT_FP64_TEST=./test_all_fp64_debug ./test_all_debug

# speed: peft.c vs PyTorch on the same LoRA step, matmul throughput vs the sgemm peak, generation
# (random-weight models of llama2.c's shapes in bench/cache/; see bench/bench.py and PERF.md)
bench: peft tokenizer
	$(PYTHON) bench/bench.py

# GPU speed: peft.c (built with CUDA=1) vs transformers + PEFT on the same GPU (bench/bench_cuda.py)
bench-cuda:
	$(MAKE) CUDA=1 peft
	$(PYTHON) bench/bench_cuda.py

clean:
	rm -f peft test_all test_all_fp64 peft_debug test_all_debug test_all_fp64_debug peft_cuda.o .cflags .tokenizer-checked
