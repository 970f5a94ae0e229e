"""Layer sweeps (paper Figs. 11, 14) and step breakdowns (Figs. 12-13) on the GPU.

Layers: the VGG conv 512->512, 3x3, pad 1, 28x28, batch 64; the VGG linear 4096x4096 at batch
64; BERT's FFN matrices at 8,192 tokens (768->3072, 3072->768). Implementations, side by side:
  ours-dense      cupyprune dense path (im2col of all taps + one GEMM)
  ours-group      cupyprune group-wise path (im2col of the kept taps only + one smaller GEMM)
  paper-group     the paper's Algorithm 1: full im2col, gather the kept columns, GEMM
  csr             cupyprune CSR path (cuSPARSE SpMM on the im2col matrix; fp32 only)
  torch-dense     PyTorch F.conv2d / F.linear on the masked dense weight (cuDNN benchmark mode)
Each cell also records the relative error against torch's float32 output of the masked weight.
"""
import os
import tempfile

import numpy as np

from cupyprune import load
from cupyprune.format import write_model_file

from .precisions import torch_dtype
from .timing import captured, free_gpu_memory, rel_err, time_gpu

CONV = dict(name="conv512", N=64, C=512, H=28, W=28, K=512, k=3)
LINEARS = [dict(name="fc4096", M=64, fin=4096, fout=4096),
           dict(name="bert-ffn1", M=8192, fin=768, fout=3072),
           dict(name="bert-ffn2", M=8192, fin=3072, fout=768)]


def _group_mask(rng, shape, keep):
    """A group-wise mask: the same kept taps (conv) / input features (linear) for every output."""
    per_output = shape[1:]
    n = int(np.prod(per_output))
    kept = rng.permutation(n)[: max(1, int(round(keep * n)))]
    m = np.zeros(n, dtype=np.float32)
    m[kept] = 1
    return np.broadcast_to(m.reshape(per_output), shape).astype(np.float32)


def _layer_file(tmp, op, weight, mask, attrs):
    path = os.path.join(tmp, f"{op}.safetensors")
    if op == "conv2d":
        spec = [{"name": "x", "shape": [None] + list(weight.shape[1:2]) + [None, None],
                 "dtype": "float32", "layout": "NCHW", "kind": "image"}]
    else:
        spec = [{"name": "x", "shape": [None, weight.shape[1]], "dtype": "float32",
                 "kind": "features"}]
    graph = {"inputs": ["x"], "outputs": ["y"], "nodes": [
        {"name": "layer", "op": op, "inputs": ["x"], "outputs": ["y"],
         "params": {"weight": "layer.weight"}, "attrs": attrs}]}
    write_model_file(path, {"layer.weight": weight, "layer.weight.mask": mask}, graph, spec,
                     pruning={"layer.weight": {"pattern": "group"}}, exporter="paper_bench")
    return path


def _torch_setup(torch, precision):
    torch.backends.cudnn.benchmark = True
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def _layer_op(path, impl, precision):
    model = load(path, device="gpu", path_choice=impl, precision=precision, cuda_graph=False)
    return model.steps[0].op


def _cells_for(store, layer, fns, ref, precision, keep, x_for_graph_ok=True):
    """Time each (impl, fn) eagerly and, where capturable, replayed from a CUDA graph."""
    out = []
    for impl, fn, capturable in fns:
        for graph in ((False, True) if capturable else (False,)):
            cell = {"layer": layer, "impl": impl, "precision": precision, "keep": keep,
                    "graph": graph}
            if store.has("layers", cell):
                continue
            y = fn()
            cell["rel_err"] = rel_err(y, ref)
            timed = captured(fn) if graph else fn
            cell.update(time_gpu(timed, repeat=10 if impl == "csr" else 20))
            if graph:
                timed.release()
            store.add("layers", cell)
            out.append(cell)
    return out


def _torch_cell(store, layer, fn, ref, precision, keep, to_nhwc=False):
    """PyTorch's dense layer (eager) as one cell -> [cell] or [] when the store has it."""
    cell = {"layer": layer, "impl": "torch-dense", "precision": precision, "keep": keep,
            "graph": False}
    if store.has("layers", cell):
        return []
    y = fn()
    y = (y.permute(0, 2, 3, 1) if to_nhwc else y).float().cpu().numpy()
    cell["rel_err"] = float(np.abs(y - ref).max() / np.abs(ref).max())
    cell.update(time_gpu(fn))
    store.add("layers", cell)
    return [cell]


def _report(cells, progress):
    free_gpu_memory()
    for cell in cells:
        progress(f"{cell['layer']} {cell['precision']} keep {cell['keep']:.2f} "
                 f"{cell['impl']:12s} graph={cell['graph']!s:5s} {cell['median_ms']:.3f} ms  "
                 f"err {cell['rel_err']:.1e}")


def conv_sweep(store, keeps, precisions, progress=print):
    import cupy
    import torch
    import torch.nn.functional as F
    from cupyprune.ops.im2col import im2col_cupy

    c = CONV
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c["K"], c["C"], c["k"], c["k"])) * 0.05).astype(np.float32)
    x_nchw = rng.standard_normal((c["N"], c["C"], c["H"], c["W"])).astype(np.float32)
    attrs = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in precisions:
            _torch_setup(torch, precision)
            tdt = torch_dtype(precision)
            for keep in keeps:
                mask = _group_mask(rng, w.shape, keep)
                path = _layer_file(tmp, "conv2d", w, mask, attrs)
                wt = torch.from_numpy(w * mask).cuda()
                xt = torch.from_numpy(x_nchw).cuda()
                ref = F.conv2d(xt.double(), wt.double(), padding=1).permute(0, 2, 3, 1).cpu().numpy()
                xt_p, wt_p = xt.to(tdt), wt.to(tdt)
                if precision == "fp16":
                    xt_p = xt_p.contiguous(memory_format=torch.channels_last)
                    wt_p = wt_p.contiguous(memory_format=torch.channels_last)
                dt = np.float16 if precision == "fp16" else np.float32
                x = cupy.asarray(x_nchw.transpose(0, 2, 3, 1), dtype=dt)   # (N, H, W, C)
                dense = _layer_op(path, "dense", precision)
                group = _layer_op(path, "group", precision)
                geometry = dense.geometry
                kept = group.path.input_rows

                def paper():                            # Algorithm 1: im2col, gather, GEMM
                    cols = im2col_cupy(x, dense.taps, geometry)        # (M, R)
                    return group.path(cols[:, kept])                  # (M, T) @ (T, K)

                def torch_dense():
                    return F.conv2d(xt_p, wt_p, padding=1)

                fns = [("ours-dense", lambda: dense(x), True),
                       ("ours-group", lambda: group(x), True),
                       ("paper-group", paper, True)]
                if precision == "fp32":
                    csr = _layer_op(path, "csr", precision)
                    fns.append(("csr", lambda: csr(x), False))
                cells = _cells_for(store, c["name"], fns, ref, precision, keep)
                cells += _torch_cell(store, c["name"], torch_dense, ref, precision, keep,
                                     to_nhwc=True)
                del dense, group, fns
                _report(cells, progress)


def linear_sweep(store, keeps, precisions, progress=print):
    import cupy
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in LINEARS:
            w = (rng.standard_normal((spec["fout"], spec["fin"])) / np.sqrt(spec["fin"])) \
                .astype(np.float32)
            x_host = rng.standard_normal((spec["M"], spec["fin"])).astype(np.float32)
            for precision in precisions:
                _torch_setup(torch, precision)
                tdt = torch_dtype(precision)
                dt = np.float16 if precision == "fp16" else np.float32
                x = cupy.asarray(x_host, dtype=dt)
                for keep in keeps:
                    mask = _group_mask(rng, w.shape, keep)
                    path = _layer_file(tmp, "linear", w, mask, {})
                    wt = torch.from_numpy(w * mask).cuda()
                    xt = torch.from_numpy(x_host).cuda()
                    ref = F.linear(xt.double(), wt.double()).cpu().numpy()
                    xt_p, wt_p = xt.to(tdt), wt.to(tdt)
                    dense = _layer_op(path, "dense", precision)
                    group = _layer_op(path, "group", precision)
                    fns = [("ours-dense", lambda: dense(x), True),
                           ("ours-group", lambda: group(x), True)]
                    if precision == "fp32":
                        csr = _layer_op(path, "csr", precision)
                        fns.append(("csr", lambda: csr(x), False))
                    cells = _cells_for(store, spec["name"], fns, ref, precision, keep)
                    cells += _torch_cell(store, spec["name"], lambda: F.linear(xt_p, wt_p),
                                         ref, precision, keep)
                    del dense, group, fns
                    _report(cells, progress)
