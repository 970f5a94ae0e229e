"""The paper's conv layer through one implicit-GEMM tile configuration, for a profiler run.

The layer: 512->512 channels, 3x3, 28x28, batch 64, fp16; a few calls of the one kernel, so
Nsight Compute can profile it alone:

    ncu --kernel-name regex:implicit_conv --launch-skip 2 --launch-count 1 \
        --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
        --section Occupancy --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
        --section LaunchStats \
        python tools/implicit_conv_ncu.py --keep 1.0 --tile wg256x128x64s4 --plan kept

The layer's mask is drawn as tools/implicit_conv_bench.py draws it (random group-wise, seed 0),
so a profile matches a row of that tool's results. Needs a CUDA GPU and CuPy.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from oneline import (OneLineParser, UsageError, gpu_or_say, parse_or_exit,  # noqa: E402
                     positive_int, run_tool)

N, C, K, KERNEL, H = 64, 512, 512, 3, 28              # the paper's conv, stride 1, padding 1


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {text!r}")
    return value


def parse_args(argv):
    from cupyprune.ops import conv_implicit
    ap = OneLineParser(prog="tools/implicit_conv_ncu.py", description=__doc__.split("\n")[0])
    ap.add_argument("--keep", type=_fraction, default=1.0,
                    help="kept fraction of the layer's rows (default 1.0)")
    ap.add_argument("--tile", required=True, help="tile configuration, e.g. wg256x128x64s4 "
                    "(known: " + ", ".join(conv_implicit.TILE_BY_NAME) + ")")
    ap.add_argument("--plan", default="kept", choices=sorted(conv_implicit.PLANS),
                    help="row plan (default kept)")
    ap.add_argument("--calls", type=positive_int, default=3, help="kernel calls (default 3)")
    args = ap.parse_args(argv)
    if args.tile not in conv_implicit.TILE_BY_NAME:
        raise UsageError(f"unknown tile {args.tile!r}; known: "
                         + ", ".join(conv_implicit.TILE_BY_NAME))
    return args


def main(argv=None):
    args = parse_or_exit(parse_args, argv)
    if not gpu_or_say("implicit_conv_ncu"):
        return 2
    import cupy
    from benchlib.layers import _group_mask, _layer_file
    from cupyprune import load
    from cupyprune.ops import conv_implicit
    os.environ[conv_implicit.MODE_ENV] = "auto"              # the layer gets its candidates
    config = conv_implicit.TILE_BY_NAME[args.tile]
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((K, C, KERNEL, KERNEL)) / np.sqrt(C * KERNEL ** 2)).astype(
        np.float32)
    mask = _group_mask(rng, w.shape, args.keep) if args.keep < 1 else np.ones_like(w)
    attrs = {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}
    with tempfile.TemporaryDirectory() as tmp:
        op = load(_layer_file(tmp, "conv2d", w, mask, attrs), device="gpu", precision="fp16",
                  cuda_graph=False).steps[0].op
        return _run(cupy, conv_implicit, op.implicit, config, args)


def _run(cupy, conv_implicit, implicit, config, args):
    """The kernel's calls, or one line why this tile and plan cannot run the layer."""
    if implicit is None or config not in conv_implicit.tiles("fp16"):
        print(f"error: {args.tile} does not run fp16 on this GPU", file=sys.stderr)
        return 2
    if args.plan not in implicit.plan_names:
        print(f"error: plan {args.plan!r} is the same as another for this layer; its plans: "
              + ", ".join(implicit.plan_names), file=sys.stderr)
        return 2
    x = cupy.random.standard_normal((N, H, H, C), dtype=cupy.float32).astype(cupy.float16)
    if not implicit.fits(x.shape, N * H * H, args.plan, config):
        print(f"error: {args.tile} does not run the {args.plan!r} plan of this layer (a wide "
              "tile runs all-vector plans only)", file=sys.stderr)
        return 2
    for _ in range(args.calls):
        implicit.run(x, None, (H, H), args.plan, config)
    cupy.cuda.Device().synchronize()
    print(f"ran {args.tile} with the {args.plan!r} plan at {args.keep:g} kept, {args.calls} calls")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
