#!/usr/bin/env bash
# Builds the plugins' kernels and their harness for this machine's GPU and runs every check:
# the harness (each kernel through its plugin's launcher against the host reference), then
# compute-sanitizer memcheck and racecheck on the smaller cases when compute-sanitizer is there.
# Needs nvcc and a GPU; CMake when present, else one nvcc command builds the same harness.
# TensorRT is not needed (the plugin library is built too when TensorRT_ROOT has its headers).
# One summary line per check; exit 1 when any check failed.
#
#   plugins/tests/run_gpu_checks.sh [BUILD_DIR]     (default: build/gpu-checks)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
plugins="$(dirname "$here")"
build="${1:-build/gpu-checks}"
mkdir -p "$build"
status=0
say() { printf '%-5s %s\n' "$1" "$2"; }

if ! command -v nvcc >/dev/null; then say FAIL "nvcc not on PATH"; exit 1; fi
cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
if [ -z "$cap" ]; then say FAIL "no GPU found by nvidia-smi"; exit 1; fi
say INFO "GPU $gpu (sm_$cap), $(nvcc --version | grep -o 'release [0-9.]*')"

start=$SECONDS
if command -v cmake >/dev/null; then
  if cmake -S "$plugins" -B "$build" -DCMAKE_CUDA_ARCHITECTURES="$cap" >"$build/configure.log" 2>&1 \
     && cmake --build "$build" -j >"$build/build.log" 2>&1; then
    say PASS "build with CMake ($((SECONDS - start)) s)"
  else
    say FAIL "build with CMake: see $build/configure.log and $build/build.log"; exit 1
  fi
  harness="$build/tests/kernel_harness"
else
  harness="$build/kernel_harness"
  if nvcc -std=c++17 -O3 -arch="sm_$cap" -x cu "$here/harness.cpp" "$here/device.cu" \
       "$plugins"/*/*Kernel.cu -o "$harness" >"$build/build.log" 2>&1; then
    say PASS "build with nvcc, no CMake ($((SECONDS - start)) s)"
  else
    say FAIL "build with nvcc: see $build/build.log"; exit 1
  fi
fi

"$harness" --require-gpu >"$build/harness.log" 2>&1
rc=$?
grep -E '^(PASS|FAIL|SKIP|GPU)' "$build/harness.log"
if [ $rc -eq 0 ]; then say PASS "kernel harness: $(tail -1 "$build/harness.log")"
else say FAIL "kernel harness (exit $rc): $(tail -1 "$build/harness.log")"; status=1; fi

sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
for tool in memcheck racecheck; do
  if [ -z "$sanitizer" ]; then say SKIP "$tool: compute-sanitizer not found (it ships with the CUDA toolkit)"; continue; fi
  t=$SECONDS
  if "$sanitizer" --tool "$tool" --error-exitcode 1 "$harness" --quick --require-gpu >"$build/$tool.log" 2>&1; then
    say PASS "$tool on the --quick cases: $(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$build/$tool.log" || echo 'no errors') ($((SECONDS - t)) s)"
  else
    say FAIL "$tool: see $build/$tool.log: $(grep -m1 -E 'SUMMARY' "$build/$tool.log")"; status=1
  fi
done
say INFO "total $((SECONDS - start)) s; logs in $build"
exit $status
