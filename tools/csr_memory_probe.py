"""Where the CSR path's device memory goes (docs/DESIGN_NOTES.md, "Open"): device memory grew by
about 0.5 GB per VGG-16-BN model loaded on the CSR path in one process.

    python tools/csr_memory_probe.py --out bench/results/h100/experiments/csr-memory.json

Loads VGG-16-BN CIFAR (element-wise 50%, random weights) on the CSR path four times in one
process; after the load, after each of three forward passes, and after the model is dropped
(gc, CuPy's pool emptied) it records CuPy's pool (bytes in use, bytes held) and the device's
used memory (cudaMemGetInfo). Then the same for cupyx.scipy.sparse alone: one CSR matrix times a
dense one, ten times, and a matrix made and dropped ten times. Needs a CUDA GPU, CuPy and torch.
"""
import gc
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import (ResultRows, gpu_or_say, parse_or_exit, parse_out_only,  # noqa: E402
                     run_tool)


def parse_args(argv):
    return parse_out_only("tools/csr_memory_probe.py", __doc__.split("\n")[0],
                          "results JSON (written at the end)", argv)


def snapshot(cupy, label, rows):
    cupy.cuda.Device().synchronize()
    pool = cupy.get_default_memory_pool()
    free, total = cupy.cuda.runtime.memGetInfo()
    rows.add({"step": label, "pool_used_mb": pool.used_bytes() / 2**20,
              "pool_held_mb": pool.total_bytes() / 2**20,
              "device_used_mb": (total - free) / 2**20})


def drop(cupy):
    gc.collect()
    cupy.get_default_memory_pool().free_all_blocks()


def model_file(tmp):
    import torch
    from benchlib.models import _export, _masked_state, _torch_model
    torch.manual_seed(0)
    model, cfg = _torch_model("cnn", "vgg16_bn", "cifar", 32, 10)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _, export_sd = _masked_state(sd, "element", 0.5)
    path = os.path.join(tmp, "m.safetensors")
    _export("cnn", "vgg16_bn", "cifar", 32, 10, export_sd, cfg, path, tmp)
    return path


def probe_models(cupy, path, rows):
    from cupyprune import load
    x = cupy.asarray(np.random.default_rng(0).standard_normal((64, 3, 32, 32)), np.float32)
    snapshot(cupy, "start", rows)
    for i in range(4):
        m = load(path, device="gpu", path_choice="csr")
        snapshot(cupy, f"load {i}", rows)
        for j in range(3):
            m(image=x)
            snapshot(cupy, f"load {i} call {j}", rows)
        del m
        drop(cupy)
        snapshot(cupy, f"load {i} dropped", rows)


def probe_cupyx(cupy, rows):
    import cupyx.scipy.sparse as sp
    import scipy.sparse
    rng = np.random.default_rng(1)
    w = rng.standard_normal((512, 4608)).astype(np.float32)
    w[rng.random(w.shape) < 0.5] = 0
    a = sp.csr_matrix(scipy.sparse.csr_matrix(w))
    b = cupy.asarray(rng.standard_normal((4608, 4096)), np.float32)
    drop(cupy)
    snapshot(cupy, "cupyx start", rows)
    for i in range(10):
        y = a @ b
        del y
        drop(cupy)
        snapshot(cupy, f"cupyx spmm {i}", rows)
    for i in range(10):
        c = sp.csr_matrix(scipy.sparse.csr_matrix(w))
        y = c @ b
        del c, y
        drop(cupy)
        snapshot(cupy, f"cupyx new matrix {i}", rows)


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    if not gpu_or_say("csr_memory_probe"):
        return 2
    import cupy
    rows = ResultRows()
    with tempfile.TemporaryDirectory() as tmp:
        probe_models(cupy, model_file(tmp), rows)
    probe_cupyx(cupy, rows)
    rows.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
