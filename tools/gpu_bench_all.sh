#!/usr/bin/env bash
# One device call: the GPU tests, then resumable benchmark presets into bench/results/h100/,
# each given what is left of the call's time (results come back under $OUT).
#   bash tools/gpu_bench_all.sh MINUTES PRESET...      e.g. 9 deploy transformer cnn
set -uo pipefail
OUT=${OUT:-/tmp/cupyprune-out}
mkdir -p "$OUT"
end=$(python3 -c "import time; print(time.time() + ${1:?minutes} * 60)"); shift
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 \
  || { cat "$OUT/install.log"; exit 1; }
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  python3 -m pytest -q -m gpu -p no:cacheprovider --maxfail=10 --junitxml="$OUT/junit-gpu.xml" 2>&1 \
    | tee "$OUT/pytest-gpu.log" | grep -v "^\.\.\.\." | tail -6
  # the parity errors the tests recorded (every family x pattern x kept x path on this GPU)
  python3 tools/junit_figures.py "$OUT/junit-gpu.xml" --out "$OUT/gpu-figures.md"
fi
for preset in "$@"; do
  file=bench/results/h100/$preset.json
  left=$(python3 -c "import time; print(round(max(0.0, ($end - time.time()) / 60 - 0.5), 2))")
  echo "== $preset ($left min left)"
  python3 tools/paper_bench.py --preset "$preset" --out "$file" --max-minutes "$left" 2>&1 \
    | grep -v "Warning\|warn" | tail -${TAIL:-12}
  cp "$file" "$OUT/"
done
