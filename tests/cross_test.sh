#!/usr/bin/env bash
# make cross-test: build peft, test_all and test_all_fp64 with Debian's cross compilers and run the
# suite under qemu-user, one target after the other. Targets: aarch64 (NEON kernels), armhf (32-bit
# ARM, hard float), i386 (32-bit x86), s390x (big-endian). Usage:
#   tests/cross_test.sh [TARGET...]          (default: all four)
# Needs: apt-get install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf gcc-i686-linux-gnu gcc-s390x-linux-gnu qemu-user
# Binaries go to cross/<target>/; each target's suite log to cross/<target>/test.log; the last lines
# printed are one summary line per target. Exit status: non-zero if any target failed.
set -u
cd "$(dirname "$0")/.."
targets=${*:-aarch64 armhf i386 s390x}
NICE=${CROSS_NICE:-nice -n 10}
CFLAGS_CROSS=${CFLAGS_CROSS:--O2}
summary=""
status=0
for t in $targets; do
  case $t in
    aarch64) triple=aarch64-linux-gnu;   qemu=qemu-aarch64; extra="" ;;
    armhf)   triple=arm-linux-gnueabihf; qemu=qemu-arm;     extra="" ;;
    # SSE2 arithmetic, as every x86 CPU since 2003 and every 32-bit x86 distribution worth targeting
    # has: x87 keeps floats in 80 bits, so the same C gives other roundings than every other target
    i386)    triple=i686-linux-gnu;      qemu=qemu-i386;    extra="-msse2 -mfpmath=sse" ;;
    # float arithmetic in float: GCC for s390 in ISO C mode evaluates float expressions in double
    # (FLT_EVAL_METHOD 1, as glibc's float_t there), which rounds differently from every other target
    s390x)   triple=s390x-linux-gnu;     qemu=qemu-s390x;   extra="-fexcess-precision=fast" ;;
    *) echo "cross-test: unknown target $t (aarch64, armhf, i386, s390x)"; exit 2 ;;
  esac
  cc=$triple-gcc
  if ! command -v "$cc" >/dev/null || ! command -v "$qemu" >/dev/null; then
    echo "cross-test: $t needs $cc and $qemu (apt-get install gcc-$triple qemu-user)"
    summary="$summary$t: not run ($cc or $qemu missing)\n"; status=1; continue
  fi
  out=cross/$t
  mkdir -p "$out"
  flags="$CFLAGS_CROSS -std=c99 -Wall -Wextra -Werror -fopenmp $extra"
  echo "== $t: $cc $flags"
  t0=$(date +%s)
  if ! { $NICE $cc $flags peft.c -o "$out/peft" -lm &&
         $NICE $cc $flags test_all.c -o "$out/test_all" -lm &&
         $NICE $cc $flags -DPEFT_FP64 test_all.c -o "$out/test_all_fp64" -lm &&
         $NICE $cc ${flags/-fopenmp/-Wno-unknown-pragmas} -DPEFT_INFER -DPEFT_ARENA=16777216 peft.c -o "$out/peft_infer_arena" -lm; }; then
    summary="$summary$t: build failed\n"; status=1; continue
  fi
  t1=$(date +%s)
  # the suite runs from the repository root (it reads ./tokenizer.bin, tests/ and ../shared);
  # test_all starts peft and test_all_fp64 through PEFT_EXEC
  export QEMU_LD_PREFIX=/usr/$triple
  # ... and its libraries from there too. The cross ld.so reads the host's /etc/ld.so.cache, which on
  # a machine with libc6-i386 names /usr/lib32/libc.so.6: another glibc build than the cross ld.so
  # (Debian 12: 2.36-9+deb12u14 vs 2.36-8cross1). With that pair every fork() child spins in libc
  # forever and a program that ran 2 threads never exits; with the cross libc both work.
  # QEMU_SET_ENV puts the search path in the emulated programs' environment only (and the qemu
  # processes they start inherit it)
  export QEMU_SET_ENV=LD_LIBRARY_PATH=/usr/$triple/lib
  # OpenMP threads that spin at barriers crawl under an emulator on a shared machine (docs/PERFORMANCE.md, "Busy machines")
  export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
  # CPU seconds of the suite and everything it starts (what it would take on one free core)
  TIMEFORMAT="%U %S"
  cpu=$( { time PEFT_EMULATED=$qemu PEFT_EXEC="$NICE $qemu" PEFT_BIN="$out/peft" PEFT_FP64_TEST="$out/test_all_fp64" PEFT_INFER_BIN="$out/peft_infer_arena" \
             $NICE $qemu "$out/test_all" > "$out/test.log" 2>&1; echo "rc $?" > "$out/rc"; } 2>&1 )
  rc=$(sed 's/rc //' "$out/rc")
  cpu=$(echo "$cpu" | awk '{printf "%.0f", $1 + $2}')
  unset QEMU_LD_PREFIX QEMU_SET_ENV
  t2=$(date +%s)
  grep -E "^(FAIL|SKIP)" "$out/test.log"
  line=$(tail -n 1 "$out/test.log")
  summary="$summary$t: $line (exit $rc; build $((t1 - t0)) s, suite $((t2 - t1)) s wall, $cpu s CPU)\n"
  [ $rc -eq 0 ] || status=1
  if [ $t = s390x ]; then # files written on big-endian s390x load on this machine and the reverse
    tests/cross_endian.sh | tee cross/endian.log
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    line=$(tail -n 1 cross/endian.log)
    summary="$summary$line\n"
  fi
done
echo "== cross-test summary"
printf "$summary"
exit $status
