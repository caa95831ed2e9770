#!/usr/bin/env bash
# The GPU speed-up of the headline build measured on this host, beside its GFLOPs ratio, its
# structural limit and the paper estimate of docs/performance.md (`vitexport doctor`'s
# "gpu speed" step: baseline and reduced model interleaved on the GPU, the median of the
# per-round ratios with p25-p75).
#
#   scripts/gpu_check.sh [OUT]          # default OUT: vitexport-out/gpu-check
#
# Measures the headline (`--method expedite --hw 24x24` on the default model) at batch 1 and
# batch 64. SEGMENTER_L=1 also measures Segmenter-L 640 (`--preset segmenter-ade20k`, random
# weights; its build takes minutes and about 6 GB of memory). VITEXPORT overrides the command
# (e.g. VITEXPORT="python -m exporter.cli"). Needs an NVIDIA GPU with onnxruntime-gpu or
# TensorRT installed; prints one RESULT line per setting and exits 1 when any setting could
# not be measured. The builds and doctor reports stay under OUT.
set -uo pipefail

out="${1:-vitexport-out/gpu-check}"
vx=(${VITEXPORT:-vitexport})
mkdir -p "$out"

if ! gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1) \
    || [ -z "$gpu" ]; then
    echo "SKIP no NVIDIA GPU here (nvidia-smi found none): nothing to measure"
    exit 1
fi
echo "INFO GPU: $gpu"
echo "INFO load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"

status=0
measure() {  # NAME BUILD-FLAGS...: build into OUT/NAME, run doctor on it, print its gpu speed
    local name=$1
    shift
    local folder="$out/$name"
    echo "INFO $name: vitexport build $* ..."
    if ! "${vx[@]}" build "$@" --no-bench --force --out "$folder" >"$out/$name.build.log" 2>&1; then
        echo "FAIL $name: build failed (see $out/$name.build.log)"
        status=1
        return
    fi
    "${vx[@]}" doctor "$folder" --report-dir "$out/$name.doctor" --force \
        >"$out/$name.doctor.log" 2>&1
    local line
    line=$(grep -E '^[a-z]+ +gpu speed:' "$out/$name.doctor.log" || true)
    if [[ "$line" == done* ]]; then
        echo "RESULT $name: ${line#*gpu speed: }"
    else
        echo "FAIL $name: ${line:-no gpu speed line} (see $out/$name.doctor.log)"
        status=1
    fi
}

measure headline --method expedite --hw 24x24
measure headline-batch64 --method expedite --hw 24x24 --batch 64
if [ "${SEGMENTER_L:-0}" = 1 ]; then
    measure segmenter-large-640 --preset segmenter-ade20k
fi
echo "INFO load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
exit $status
