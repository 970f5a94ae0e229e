#!/usr/bin/env bash
# Disk taken by a serving install: each set of packages in a fresh venv, the size of its
# site-packages less that of an empty venv (pip and setuptools), as JSON lines on stdout.
#   bash tools/install_size.sh > bench/results/install-size.jsonl
# Sets: cupyprune[serve,cuda13] from this checkout (CuPy then uses the CUDA libraries of the
# machine, as on a GPU host with the toolkit or the driver's image); the same with
# cupy-cuda13x[ctk] (CuPy's CUDA libraries as wheels: no toolkit needed); and a torch-based
# server of the same kind (torch 2.11.0, the device image's version, as PyPI ships it with its
# CUDA libraries; torchvision; Starlette on uvicorn).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/empty"
base=$(du -sb "$work"/empty/lib/python3*/site-packages | cut -f1)
measure() {
  local name=$1; shift
  local env=$work/venv
  python3 -m venv "$env"
  local start=$SECONDS
  "$env/bin/pip" install -q "$@" > "$work/pip.log" 2>&1 || { cat "$work/pip.log" >&2; exit 1; }
  local bytes=$(( $(du -sb "$env"/lib/python3*/site-packages | cut -f1) - base ))
  local packages=$("$env/bin/pip" list --format=freeze 2>/dev/null | wc -l)
  printf '{"install": "%s", "bytes": %d, "mib": %d, "packages": %d, "pip_seconds": %d}\n' \
    "$name" "$bytes" $((bytes / 1048576)) "$packages" $((SECONDS - start))
  rm -rf "$env"
}
measure "cupyprune[serve,cuda13]" "$repo[serve,cuda13]"
measure "cupyprune[serve,cuda13] + cupy-cuda13x[ctk]" "$repo[serve,cuda13]" "cupy-cuda13x[ctk]"
measure "torch==2.11.0 torchvision starlette uvicorn[standard]" torch==2.11.0 torchvision \
  starlette "uvicorn[standard]"
