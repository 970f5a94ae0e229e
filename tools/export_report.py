"""Markdown tables of the exported zoo on the GPU (tools/gpu_export_check.py's JSON) and of an
A/B run of `cupyprune bench` (tools/ab_bench.sh's JSON files).

    python tools/export_report.py bench/results/h100/export --out docs/EXPORTED_MODELS.md
"""
import argparse
import glob
import json
import os

from export_zoo import HF, TORCHVISION

AB_BEFORE = "5217a28"       # the runtime before the generic exporter's changes (the A/B's old)

HEADER = """# Exported models on the GPU

Every model of the generic exporter's test list (tools/export_zoo.py: torchvision and Hugging
Face modules with random weights), group-wise pruned to 50% on every conv and linear but the stem
and the classifier, exported with `cupyprune.export`, and run on the GPU in fp32 and fp16 against
PyTorch fp32 on the same weights and inputs (batch 8). PyTorch's fp32 reference on the GPU uses
TF32 in cuDNN's convolutions (PyTorch's default), which accounts for most of the fp32 column's
error on the CNNs; on the CPU every model matches within 1e-4 (tests/test_export_generic.py).
Latencies: medians of CUDA-event timings; ours replays a CUDA graph where every op allows it.

Made by `python tools/gpu_export_check.py --pruned-only --out export-zoo.json` on {device};
this page by `python tools/export_report.py bench/results/h100/export --out docs/EXPORTED_MODELS.md`.

"""


SLOW = """
Where traced models were slow in this run: the grouped convolutions of ResNeXt-50 and RegNetY
(not depthwise: several channels per group) ran as an einsum per kernel tap, outside a CUDA graph
(65 and 53 ms); they now run as one batched GEMM per tap. Attention in traced graphs
(torchvision's ViT-B/16, the Hugging Face models) ran as generic matmul and softmax ops; a traced
`scaled_dot_product_attention` now takes the GPU's self-attention (fused kernel or in-place
GEMMs, ops/sdpa.py). Adaptive pooling to a size that does not divide the input made its pooling
matrices on the host, which a CUDA graph cannot capture (now made on the device). Sigmoid, SiLU,
hardswish, hardsigmoid and ReLU6 after a conv now run in its epilogue. None of these changes has
been timed on the GPU yet: the rows above are from before them.
"""


def zoo_table(rows):
    out = ["| model | precision | max rel. error vs PyTorch fp32 | top-1 agreement | ours (ms) "
           "| PyTorch eager fp16 (ms) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | - | failed: {r['error']} | | | |")
            continue
        out.append(f"| {r['model']} | {r['precision']} | {r['rel_err']:.1e} | "
                   f"{100 * r['top1_agree']:.0f}% | {r['ours_ms']:.3f} | "
                   f"{r['torch_eager_fp16_ms']:.3f} |")
    return "\n".join(out)


def ab_table(files):
    """{(model, path): {version: [medians]}} as a table, old and new side by side."""
    cells = {}
    for path in files:
        version = os.path.basename(path).split("-")[1]               # ab-old-1.json -> old
        for cell in json.load(open(path))["cells"]:
            key = (cell["model"], cell["path"])
            cells.setdefault(key, {}).setdefault(version, []).append(cell["median_ms"])
    out = ["| model file | path | before (ms) | after (ms) |", "|---|---|---|---|"]
    for (model, path), v in sorted(cells.items()):
        show = {k: " / ".join(f"{t:.3f}" for t in v.get(k, [])) or "-" for k in ("old", "new")}
        out.append(f"| {model} | {path} | {show['old']} | {show['new']} |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    zoo = json.load(open(os.path.join(args.folder, "export-zoo.json")))
    text = HEADER.format(device=zoo["device"]) + zoo_table(zoo["rows"]) + "\n" + SLOW
    missing = sorted((set(TORCHVISION) | {f"hf-{k}" for k in HF})
                     - {r["model"] for r in zoo["rows"]})
    if missing:
        text += (f"\nIn the test list but not run on the GPU yet (CPU only, within 1e-4): "
                 f"{', '.join(missing)}.\n")
    ab = sorted(glob.glob(os.path.join(args.folder, "ab-*.json")))
    text += "\n## The paper's models before and after the generic exporter's runtime changes\n\n"
    if ab:
        text += ("The same model files (tools/paper_model_files.py, group-wise 50%), fp16, "
                 "batch 16, timed by `cupyprune bench` with the runtime before the change "
                 f"(`git archive {AB_BEFORE} cupyprune`) and after it, alternated in one run on "
                 "the same GPU: `bash tools/ab_bench.sh OLD_TREE MODELS OUT 16`. Each cell lists "
                 "the medians of the runs of that version.\n\n" + ab_table(ab) + "\n")
    else:
        text += ("Not measured yet. To measure: the model files of "
                 "`python tools/paper_model_files.py --dir MODELS`, the runtime before the change "
                 f"from `git archive {AB_BEFORE} cupyprune | tar -x -C OLD_TREE`, then "
                 "`bash tools/ab_bench.sh OLD_TREE MODELS OUT 16` on the GPU, its ab-*.json "
                 "files copied beside export-zoo.json and this page regenerated.\n")
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
