# peft.c: `make` builds ./peft (optimised, OpenMP when the compiler has it) and tokenizer.bin;
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
SAN = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

.PHONY: all test debug clean tokenizer bench infer cross-test
ifeq ($(PEFT_INFER),1)
all: peft_infer
else
all: peft tokenizer
endif

# rebuild when the flags change (e.g. after make PORTABLE=1)
.cflags: FORCE
	@echo '$(CC) $(CFLAGS) $(OMP)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(OMP)' > $@
FORCE:

peft: peft.c .cflags
	$(CC) $(CFLAGS) $(OMP) peft.c -o peft $(LDLIBS)

# tokenizer.bin from the Llama 2 sentencepiece model, with export.py (standard library only)
tokenizer: tokenizer.bin
tokenizer.bin: export.py
	@if [ -f "$(TOKENIZER_MODEL)" ]; then \
		$(PYTHON) export.py tokenizer "$(TOKENIZER_MODEL)" -o tokenizer.bin; \
	else \
		echo "note: no Llama 2 tokenizer.model at $(TOKENIZER_MODEL); tokenizer.bin not built."; \
		echo "      get it from meta-llama/Llama-2-7b-hf (tokenizer.model) and run: make TOKENIZER_MODEL=path/to/tokenizer.model"; \
	fi

test_all: test_all.c peft.c .cflags
	$(CC) $(CFLAGS) $(OMP) test_all.c -o test_all $(LDLIBS)
test_all_fp64: test_all.c peft.c .cflags
	$(CC) $(CFLAGS) $(OMP) -DPEFT_FP64 test_all.c -o test_all_fp64 $(LDLIBS)

# the inference-only build on a fixed 16 MiB arena, for the suite
peft_infer_arena: peft.c
	$(CC) $(INFER_OPT) -std=c99 -Wall -Wextra -Wno-unknown-pragmas -DPEFT_INFER -DPEFT_ARENA=16777216 peft.c -o peft_infer_arena -lm

# the suite: test_all runs ./test_all_fp64 (finite differences in double), ./peft (CLI tests) and ./peft_infer_arena
test: peft tokenizer test_all test_all_fp64 peft_infer_arena
	./test_all

# AddressSanitizer + UndefinedBehaviorSanitizer build of everything, then the suite
# (separate binaries, so the fast ones stay as they are)
debug: tokenizer
	$(CC) $(SAN) -std=c99 -Wall -Wextra -Wno-unknown-pragmas peft.c -o peft_debug $(LDLIBS)
	$(CC) $(SAN) -std=c99 -Wall -Wextra -Wno-unknown-pragmas test_all.c -o test_all_debug $(LDLIBS)
	$(CC) $(SAN) -std=c99 -Wall -Wextra -Wno-unknown-pragmas -DPEFT_FP64 test_all.c -o test_all_fp64_debug $(LDLIBS)
	$(CC) $(SAN) -std=c99 -Wall -Wextra -Wno-unknown-pragmas -DPEFT_INFER -DPEFT_ARENA=16777216 peft.c -o peft_infer_debug $(LDLIBS)
	ASAN_OPTIONS=detect_leaks=1 PEFT_BIN=./peft_debug PEFT_FP64_TEST=./test_all_fp64_debug PEFT_INFER_BIN=./peft_infer_debug ./test_all_debug

# speed: peft.c vs PyTorch on the same LoRA step, matmul throughput vs the sgemm peak, generation
# (random-weight models of llama2.c's shapes in bench/cache/; see bench/bench.py and PERF.md)
bench: peft tokenizer
	$(PYTHON) bench/bench.py

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
	rm -f peft peft_infer peft_infer_arena peft_infer_debug test_all test_all_fp64 peft_debug test_all_debug test_all_fp64_debug .cflags .cflags_infer
	rm -rf cross
