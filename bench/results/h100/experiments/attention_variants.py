"""Experiment of docs/DESIGN_NOTES.md, "The fused attention's staging: cp.async, ldmatrix.trans, a
bias row": the fused attention kernel timed at ViT's, BERT-base's and an odd shape
(tools/attention_layouts.time_cell: 12 calls in a CUDA graph), by variant, with its error against
float64 torch.

    python bench/results/h100/experiments/attention_variants.py LABEL OUT.json

Run from the repository root, once with the code before the change first on PYTHONPATH
(`head`), once with the change (`new`). The change had a module switch `ASYNC` (cp.async staging
of keys and values, or plain 16-byte loads and stores; both with ldmatrix.trans for the values
and the mask as a shared bias row); the kept code has cp.async only, so on it this times the
one kernel there is, labelled `LABEL-head`."""
import json
import sys

import cupy
import numpy as np

sys.path.insert(0, "tools")
from attention_layouts import time_cell  # noqa: E402
from cupyprune.gpu import fused_attention as fa  # noqa: E402

label = sys.argv[1]
variants = [("async", True), ("sync", False)] if hasattr(fa, "ASYNC") else [("head", None)]
rows = []
for name, flag in variants:
    if flag is not None:
        fa.ASYNC = flag
    fa._KERNELS.clear()
    for precision in ("fp16", "bf16"):
        for shape in (("vit", 64, 65, 12, 64, False), ("bert", 64, 128, 12, 64, True),
                      ("odd", 64, 33, 4, 32, True)):
            rng = np.random.default_rng(0)
            r = time_cell(cupy, rng, *shape, precision, "fused")
            r["variant"] = f"{label}-{name}"
            print(r["variant"], precision, shape[0], r["ms"], "%.1e" % r["rel_err"], flush=True)
            rows.append(r)
json.dump(rows, open(sys.argv[2], "w"), indent=1)
