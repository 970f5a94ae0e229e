"""Step breakdown of the group-wise layers (paper Figs. 12-13), each step timed on its own.

conv (paper s1..s4): im2col of all taps, gather of the kept columns, GEMM, reshape of (M, K) to
NCHW; and ours: im2col of the kept taps only (s1+s2 in one pass), GEMM, no reshape (the output
is already the next layer's NHWC input). linear (s1, s2): gather of kept features (the runtime's
kernel, and CuPy's fancy indexing beside it), GEMM."""
import numpy as np

from .layers import CONV, LINEARS
from .timing import time_gpu


def _kept(rng, n, keep):
    return np.sort(rng.permutation(n)[: int(round(keep * n))]).astype(np.int32)


def conv_steps(store, keeps, precisions, progress=print):
    import cupy
    from cupyprune.gpu.gemm import Matmul
    from cupyprune.gpu.cuda_source import values_per_pack
    from cupyprune.ops.im2col import TapTable, im2col_cupy

    c = CONV
    rng = np.random.default_rng(2)
    R = c["k"] * c["k"] * c["C"]
    geometry = (c["k"], c["k"], (1, 1), (1, 1), (1, 1))
    for precision in precisions:
        dt = np.float16 if precision == "fp16" else np.float32
        matmul = Matmul(cupy, tf32=precision == "tf32")
        x = cupy.asarray(rng.standard_normal((c["N"], c["H"], c["W"], c["C"])), dtype=dt)
        vec = values_per_pack(np.dtype(dt).itemsize)                      # as the runtime
        all_taps = TapTable(np.arange(R), geometry, c["C"], pad_to=vec)
        for keep in keeps:
            kept_host = _kept(rng, R, keep)
            kept = cupy.asarray(kept_host)
            kept_taps = TapTable(kept_host, geometry, c["C"], pad_to=vec)
            w = cupy.asarray(rng.standard_normal((kept.size, c["K"])), dtype=dt)
            full = im2col_cupy(x, all_taps, geometry)
            gathered = full[:, kept]
            y = matmul(gathered, w)
            steps = {
                "s1-im2col-full": lambda: im2col_cupy(x, all_taps, geometry),
                "s2-gather": lambda: full[:, kept],
                "s3-gemm": lambda: matmul(gathered, w),
                "s4-reshape-nchw": lambda: cupy.ascontiguousarray(
                    y.reshape(c["N"], c["H"], c["W"], c["K"]).transpose(0, 3, 1, 2)),
                "ours-im2col-kept": lambda: im2col_cupy(x, kept_taps, geometry),
            }
            _record(store, c["name"], steps, precision, keep, progress)


def linear_steps(store, keeps, precisions, progress=print):
    import cupy
    from cupyprune.gpu.gather import gather_columns
    from cupyprune.gpu.gemm import Matmul

    rng = np.random.default_rng(3)
    for spec in LINEARS[:2]:
        for precision in precisions:
            dt = np.float16 if precision == "fp16" else np.float32
            matmul = Matmul(cupy, tf32=precision == "tf32")
            x = cupy.asarray(rng.standard_normal((spec["M"], spec["fin"])), dtype=dt)
            for keep in keeps:
                kept = cupy.asarray(_kept(rng, spec["fin"], keep))
                w = cupy.asarray(rng.standard_normal((kept.size, spec["fout"])), dtype=dt)
                xk = x[:, kept]
                steps = {"s1-gather": lambda: gather_columns(x, kept),        # the runtime's
                         "s1-gather-cupy": lambda: x[:, kept],                # fancy indexing
                         "s2-gemm": lambda: matmul(xk, w)}
                _record(store, spec["name"], steps, precision, keep, progress)


def _record(store, layer, steps, precision, keep, progress):
    for step, fn in steps.items():
        cell = {"layer": layer, "step": step, "precision": precision, "keep": keep}
        if store.has("steps", cell):
            continue
        cell.update(time_gpu(fn))
        store.add("steps", cell)
        progress(f"{layer} {precision} keep {keep:.2f} {step:18s} {cell['median_ms']:.3f} ms")
