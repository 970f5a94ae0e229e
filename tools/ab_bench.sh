#!/usr/bin/env bash
# A/B of two versions of the runtime on the benchmark's model files, alternated in one run:
#   bash tools/ab_bench.sh OLD_TREE MODELS_DIR OUT_DIR [BATCH]
# OLD_TREE holds an older `cupyprune` package (e.g. `git archive REV cupyprune | tar -x -C DIR`);
# the new one is this checkout. Each version runs `cupyprune bench` on every file, fp16, twice,
# old first. `python3 -P` keeps the working directory off sys.path, so that PYTHONPATH's tree
# is the one imported (with a bare -c, ./cupyprune would shadow the old tree).
set -uo pipefail
old=$1; models=$2; out=$3; batch=${4:-32}
mkdir -p "$out"
for round in 1 2; do
  for version in old new; do
    tree=$PWD; [ "$version" = old ] && tree=$old
    PYTHONPATH=$tree python3 -P -c "from cupyprune.cli.main import cli; cli()" bench "$models"/*.safetensors \
      --precision fp16 --batch "$batch" --repeat 30 --json "$out/ab-$version-$round.json" 2>&1 | tail -12
  done
done
