#!/usr/bin/env bash
# Everything GPU of a change in one device call: install, the GPU tests, checks, a benchmark.
#   bash tools/gpu_suite.sh [PRESET...]      (results and logs under $OUT)
# The device machine has CuPy, torch, torchvision and transformers, and no network.
set -uo pipefail
OUT=${OUT:-/tmp/cupyprune-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 \
  || { cat "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.txt"
python3 -c "import cupy, torch; print('cupy', cupy.__version__, 'torch', torch.__version__)" >> "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
echo "== GPU tests"
python3 -m pytest -q -m gpu -p no:cacheprovider --maxfail=10 --junitxml="$OUT/junit-gpu.xml" 2>&1 \
  | tee "$OUT/pytest-gpu.log" | tail -25
# the parity errors the tests recorded (every family x pattern x kept x path on this GPU)
python3 tools/junit_figures.py "$OUT/junit-gpu.xml" --out "$OUT/gpu-figures.md"
if [ -f tools/gpu_check_torchvision.py ]; then
  echo "== torchvision checkpoints"
  python3 tools/gpu_check_torchvision.py --out "$OUT/torchvision.json" 2>&1 | tail -15
fi
for preset in "$@"; do
  echo "== paper_bench $preset"
  python3 tools/paper_bench.py --preset "$preset" --out "$OUT/$preset.json" 2>&1 \
    | tee "$OUT/bench-$preset.log" | tail -40
done
