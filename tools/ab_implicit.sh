#!/usr/bin/env bash
# A/B of the implicit-GEMM conv on the paper benchmark's CNN files, alternated in one run:
#   bash tools/ab_implicit.sh OUT_DIR [BATCH] [MODELS_DIR]
# Writes the five CNN files (tools/paper_model_files.py) into MODELS_DIR (default
# OUT_DIR/models), then runs `cupyprune bench` on them, fp16, with CUPYPRUNE_IMPLICIT_CONV=off
# and =auto, twice, off first. The tile choices go to one cache directory under OUT_DIR, so the
# first auto round times the candidates (its peak_bytes include that first load) and the second
# reads them, as a deployed model's later loads do.
set -uo pipefail
out=$1; batch=${2:-32}; models=${3:-$out/models}
mkdir -p "$out"
python3 tools/paper_model_files.py --dir "$models" \
  --only vgg16_bn-cifar10,resnet18-cifar10,vgg16_bn-tiny,resnet18-tiny,vgg16-imagenet > /dev/null
export CUPYPRUNE_CACHE_DIR=$out/tunecache
for round in 1 2; do
  for mode in off auto; do
    CUPYPRUNE_IMPLICIT_CONV=$mode cupyprune bench "$models"/*.safetensors --path auto \
      --precision fp16 --batch "$batch" --repeat 30 --json "$out/ab-$mode-$round.json" 2>&1 | tail -8
  done
done
