"""Which attention layout: the runtime's self-attention (cupyprune/gpu/attention.py) timed in each
of its score/key layouts, for the models' attention shapes, in graph replay.

    python tools/attention_layouts.py --out FILE.json

(committed: bench/results/h100/experiments/attention-layouts-fused.json).

Layouts (attention.LAYOUTS): `unpadded` (scores (B, T, T), heads read in place), `padded_kv`
(k and v copied per head into (B, ld, dh) with zero rows, score rows ld long, so every GEMM
extent is a multiple of 16 bytes) and `fused` (one tensor-core kernel, gpu/fused_attention.py;
fp32 runs it as padded_kv). experiments/attention-layouts.json, from before the fused kernel,
also has `padded_scores` (score rows padded, k and v read in place): it lost at every shape and
was removed; experiments/attention-layouts-fused.json has the three layouts, and
experiments/attention-layouts-chunked.json also the fused kernel's other block shapes (`warps`:
warps of 16 query rows a block; null is the default). Per cell: the
median of 20 CUDA-event timings of a captured graph of 12 calls (one ViT/BERT-base pass of
attention), after 3 warm-up replays, and the relative error of one call against float64
PyTorch on fresh random inputs. Needs a CUDA GPU and CuPy.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import (ResultRows, gpu_or_say, parse_or_exit, parse_out_only,  # noqa: E402
                     run_tool)

CALLS = 12                                                 # attention layers per pass
SHAPES = [("vit", 64, 65, 12, 64, False), ("bert", 64, 128, 12, 64, True),
          ("odd", 64, 33, 4, 32, True)]                    # (name, N, T, heads, dh, masked)
PRECISIONS = ("fp32", "fp16", "bf16")


def parse_args(argv):
    return parse_out_only("tools/attention_layouts.py", __doc__.split("\n")[0],
                          "results JSON, a list of rows in ms (written at the end)", argv)


def other_block_warps(T):
    """Fused block shapes beside the default (`warps` null in the rows): a block per (sample,
    head), and blocks of two and four warps."""
    from cupyprune.gpu.fused_attention import block_warps
    tp = -(-T // 16) * 16
    return sorted({tp // 16, 2, 4} - {block_warps(tp)})


def reference(q, k, v, heads, mask):
    """float64 torch: (N, T, D) each -> (N, T, D)."""
    import torch
    N, T, D = q.shape
    dh = D // heads
    split = lambda a: torch.from_numpy(a).reshape(N, T, heads, dh).transpose(1, 2)  # noqa: E731
    s = split(q) @ split(k).transpose(-1, -2) / np.sqrt(dh)
    if mask is not None:
        s = s.masked_fill(torch.from_numpy(mask == 0)[:, None, None, :], -1e30)
    return (torch.softmax(s, -1) @ split(v)).transpose(1, 2).reshape(N, T, D).numpy()


def stored(cupy, values, precision):
    """float64 host values -> (what the kernel sees as float64, the device array)."""
    from cupyprune import bf16
    if precision == "bf16":
        bits = bf16.to_bits_host(values)
        return bf16.from_bits_host(bits).astype(np.float64), cupy.asarray(bits)
    cast = values.astype(np.float32 if precision == "fp32" else np.float16)
    return cast.astype(np.float64), cupy.asarray(cast)


def time_cell(cupy, rng, name, N, T, heads, dh, masked, precision, layout, warps=None):
    from cupyprune import bf16
    from cupyprune.gpu.attention import self_attention
    from cupyprune.gpu.fused_attention import fused_self_attention
    from cupyprune.gpu.graph import capture_stream
    from cupyprune.timing import summary, time_calls
    D = heads * dh
    (q, dq), (k, dk), (v, dv) = (stored(cupy, rng.standard_normal((N, T, D)), precision)
                                 for _ in range(3))
    mask = None
    if masked:
        mask = np.ones((N, T), dtype=np.int64)
        mask[N // 2:, T * 3 // 4:] = 0                  # half the batch padded, as BERT's bench
    dmask = None if mask is None else cupy.asarray(mask)

    def call():
        if warps:                                        # a fused block shape not the default
            return fused_self_attention(dq, dk, dv, heads, dmask, warps=warps)
        return self_attention(dq, dk, dv, heads, dmask, layout=layout)
    stream = capture_stream()
    with stream:
        out = call()
        got = cupy.asnumpy(out)
        got = bf16.from_bits_host(got) if got.dtype == np.uint16 else got.astype(np.float64)
        ref = reference(q, k, v, heads, mask)
        err = float(np.abs(got - ref).max() / np.abs(ref).max())
        stream.synchronize()
        stream.begin_capture()
        for _ in range(CALLS):
            call()
        graph = stream.end_capture()
        times = time_calls(lambda: graph.launch(stream), cupy, warmup=3, repeat=20)
    return {"shape": name, "N": N, "T": T, "heads": heads, "dh": dh, "masked": masked,
            "precision": precision, "layout": layout, "warps": warps, "calls": CALLS,
            "ms": round(summary(times)["median_ms"], 4), "rel_err": err}


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    if not gpu_or_say("attention_layouts"):
        return 2
    import cupy
    from cupyprune.gpu.attention import LAYOUTS
    rng = np.random.default_rng(0)
    rows = ResultRows()
    for precision in PRECISIONS:
        for shape in SHAPES:
            cells = [(layout, None) for layout in LAYOUTS]
            if precision != "fp32":
                cells += [("fused", w) for w in other_block_warps(shape[2])]
            for layout, warps in cells:
                rows.add(time_cell(cupy, rng, *shape, precision, layout, warps))
    rows.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
