"""Which cuBLAS GEMM: for the FFN and conv shapes of the layer sweeps, the time of every algorithm
cuBLASLt's heuristic offers (up to 8) beside its first choice and cublasGemmEx's default.

    python tools/lt_algos.py --out bench/results/h100/experiments/lt-algos.json

Row-major Y (M, N) = X (M, K) @ W (K, N), K the kept rows of a group-wise layer; random
operands; medians of 30 CUDA-event timings of single eager launches after 5 warm-up calls (so a
figure includes the call's host time while the GPU waits: a lead, not a graph-replay result;
docs/DESIGN_NOTES.md, "Which cuBLAS GEMM (measured, not changed)"). Needs a CUDA GPU and CuPy.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import (ResultRows, gpu_or_say, parse_or_exit, parse_out_only,  # noqa: E402
                     run_tool)

CANDIDATES = 8
SHAPES = ([("ffn1", 8192, k, 3072) for k in (768, 384, 192, 96)]         # (layer, M, K, N)
          + [("ffn2", 8192, k, 768) for k in (3072, 1536, 768, 384)]
          + [("conv512", 50176, k, 512) for k in (4608, 2304, 1152)])        # 28x28, batch 64


def parse_args(argv):
    return parse_out_only("tools/lt_algos.py", __doc__.split("\n")[0],
                          "results JSON, a list of rows in ms (written once every shape is "
                          "timed; lt_all in the heuristic's order)", argv)


def median_ms(cupy, fn):
    from cupyprune.timing import time_calls
    return float(np.median(time_calls(fn, cupy, warmup=5, repeat=30)))


def time_shape(cupy, layer, M, K, N, dtype):
    from cupyprune.gpu import cublas, cublaslt
    from cupyprune.gpu.gemm import data_type, gemm_into
    x = cupy.random.standard_normal((M, K), dtype=np.float32).astype(dtype)
    w = cupy.random.standard_normal((K, N), dtype=np.float32).astype(dtype)
    out = cupy.empty((M, N), dtype)
    handle = cublas.handle_for_current_stream()
    gemm_ex = median_ms(cupy, lambda: gemm_into(x, w, out))
    plan = cublaslt._Plan(N, M, K, data_type(dtype), cublas.COMPUTE_32F,
                          cublaslt.EPILOGUE_DEFAULT, False)      # column-major: W^T X^T
    lt = []
    for candidate in plan.heuristic(CANDIDATES):       # the runtime takes the first
        lt.append(median_ms(cupy, lambda: plan.launch(candidate, w, x, None, out, handle)))
    lt = [round(t, 4) for t in lt]
    return {"layer": layer, "dtype": np.dtype(dtype).name, "M": M, "K": K, "N": N,
            "gemmex": round(gemm_ex, 4), "lt_first": lt[0] if lt else None,
            "lt_best": min(lt) if lt else None, "lt_all": lt}


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    if not gpu_or_say("lt_algos"):
        return 2
    import cupy
    rows = ResultRows()
    for dtype in (np.float16, np.float32):
        for layer, M, K, N in SHAPES:
            rows.add(time_shape(cupy, layer, M, K, N, dtype))
    rows.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
