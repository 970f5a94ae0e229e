"""Reduced precisions on the GPU against PyTorch's float64 output of the same masked model.

Tolerances (docs/BENCHMARKS.md, "Precision"): max|out - ref| / max|ref|
  fp32 <= 1e-5, tf32 <= 1e-2, fp16 <= 3e-2 (fp16 storage, fp32 accumulation),
  bf16 <= 5e-2 (bfloat16 storage, fp32 accumulation; outputs come back as float32),
and the top-1 class agrees for at least 90% of the inputs in tf32, fp16 and bf16."""
import os

import numpy as np
import pytest
import torch

import cupyprune
from conftest import he_scaled, rel_err, spin

TOLERANCE = {"fp32": 1e-5, "tf32": 1e-2, "fp16": 3e-2, "bf16": 5e-2}
MIN_ARGMAX_AGREEMENT = 0.9


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    from archs import build
    from checkpoint import reparametrize
    from exporters.cnn import export_cnn
    from cupyprune.export.pruning.masks import default_prunable_keys, prune_state_dict
    seed = int.from_bytes(os.urandom(4), "little")        # fresh weights, reproducible
    print(f"torch seed {seed}")
    torch.manual_seed(seed)
    model = build("resnet18", 10, "cifar").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    masks = prune_state_dict(sd, default_prunable_keys(sd), "group", 0.5)
    sd = he_scaled(sd, masks)             # logits that vary with the image, well above the tol.
    export = reparametrize(sd, masks)
    path = tmp_path_factory.mktemp("prec") / "resnet18.safetensors"
    export_cnn("resnet18", export, str(path), variant="cifar", num_classes=10, image_size=32)
    model.load_state_dict({k: sd[k] * masks[k] if k in masks else v for k, v in sd.items()})
    return path, model.double()


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_resnet18_precision(rng, resnet_file, precision, cuda_graph):
    import cupy
    path, ref_model = resnet_file
    xs = [rng.standard_normal((32, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    with torch.no_grad():
        refs = [ref_model(torch.from_numpy(x).double()).numpy() for x in xs]
    # a tolerance means something only if the logits move by more than it across inputs
    assert np.ptp(refs[0], axis=0).max() > 3 * TOLERANCE["fp16"] * np.abs(refs[0]).max()
    model = cupyprune.load(path, device="gpu", precision=precision, cuda_graph=cuda_graph)
    assert (model.graph_runner is not None) == cuda_graph
    for x, ref in zip(xs, refs):           # the second call replays the graph on a fresh input
        out = model(cupy.asarray(x))
        assert out.dtype == (np.float16 if precision == "fp16" else np.float32)
        assert rel_err(out, ref) <= TOLERANCE[precision]
        agree = float((cupy.asnumpy(out).argmax(-1) == ref.argmax(-1)).mean())
        assert agree >= (1.0 if precision == "fp32" else MIN_ARGMAX_AGREEMENT)
    if cuda_graph:
        assert model.graph_runner.failed is None


@pytest.mark.gpu
def test_graph_replay_takes_every_input_form(rng, resnet_file):
    """The static input buffer is refilled from NumPy (float32 and float64), contiguous CuPy and
    a strided CuPy view; each replay's output is a copy, untouched by the next replay."""
    import cupy
    path, ref_model = resnet_file
    model = cupyprune.load(path, device="gpu", precision="fp32", cuda_graph=True)
    xs = [rng.standard_normal((4, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    with torch.no_grad():
        refs = [ref_model(torch.from_numpy(x).double()).numpy() for x in xs]
    nhwc = cupy.asarray(np.ascontiguousarray(xs[3].transpose(0, 2, 3, 1)))
    forms = [xs[0], xs[1].astype(np.float64), cupy.asarray(xs[2]), nhwc.transpose(0, 3, 1, 2)]
    assert not forms[3].flags.c_contiguous
    outs = [model(x) for x in forms for _ in range(2)][1::2]      # capture, then replay each
    assert model.graph_runner.failed is None
    assert len(model.graph_runner.captured) == 2                  # float32 and float64 inputs
    for out, ref in zip(outs, refs):
        assert rel_err(out, ref) <= TOLERANCE["fp32"]
    assert np.abs(refs[0] - refs[1]).max() > 100 * TOLERANCE["fp32"] * np.abs(refs[0]).max()


@pytest.mark.gpu
def test_graph_replays_on_the_callers_streams_in_order(rng, resnet_file):
    """A replay runs on the caller's stream. Two models (two graphs, sharing the capture
    stream's cuBLAS workspace) called on two streams, each input written on its stream behind
    a long spin: each call must see its own input, and the call on the second stream must wait
    for the replay queued on the first, so it cannot finish while the first stream spins."""
    import time
    import cupy
    path, ref_model = resnet_file
    first, second = (cupyprune.load(path, device="gpu", precision="fp32", cuda_graph=True)
                     for _ in range(2))
    xs = [rng.standard_normal((4, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    with torch.no_grad():
        refs = [ref_model(torch.from_numpy(x).double()).numpy() for x in xs]
    sources = [cupy.asarray(x) for x in xs]
    first(sources[1] * 1)                                  # capture both, compiling the
    second(sources[0].copy())                              # kernels used after the spin
    streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(2)]
    spin(1000)
    cupy.cuda.Device().synchronize()
    with streams[0]:
        spin()
        late = sources[0] * 1                              # written once the spin ends
        out_first = first(late)
    with streams[1]:
        out_second = second(sources[1].copy())
    time.sleep(0.01)
    assert not streams[0].done                             # still spinning: the check means it
    assert not streams[1].done                             # behind the first stream's replay
    for stream in streams:
        stream.synchronize()
    assert rel_err(out_first, refs[0]) <= TOLERANCE["fp32"]
    assert rel_err(out_second, refs[1]) <= TOLERANCE["fp32"]
    assert first.graph_runner.failed is None and second.graph_runner.failed is None


def test_reduced_precision_needs_gpu(resnet_file):
    with pytest.raises(cupyprune.DeviceError, match="needs the GPU"):
        cupyprune.load(resnet_file[0], device="cpu", precision="fp16")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
def test_bert_precision_with_graph_replay(rng, tmp_path, precision):
    """BERT's ids are range-checked at binding, so the whole model replays as one CUDA graph."""
    import cupy
    from test_parity_transformers import bert_inputs, hf_bert, hf_logits
    config, hf, path = hf_bert(rng, tmp_path, masked=True)
    draws = [bert_inputs(rng, config, batch=8, seq=24) for _ in range(2)]
    refs = [hf_logits(hf.double(), d).numpy() for d in draws]
    # the replay must see its own inputs: fresh ids and padding move the logits far
    assert np.abs(refs[0] - refs[1]).max() > 3 * TOLERANCE["fp16"] * np.abs(refs[0]).max()
    model = cupyprune.load(path, device="gpu", precision=precision)
    assert model.graph_runner is not None
    for draw, ref in zip(draws, refs):                    # capture, then replay on fresh inputs
        out = model(**{k: cupy.asarray(v) for k, v in draw.items()})
        assert rel_err(out, ref) <= TOLERANCE[precision]
    assert model.graph_runner.failed is None
    inputs = draws[0]
    for where, value in (((0, 0), config.vocab_size), ((-1, -1), -3)):
        bad = dict(inputs, input_ids=inputs["input_ids"].copy())
        bad["input_ids"][where] = value
        with pytest.raises(cupyprune.InputError, match=f"token id {value} is outside"):
            model(**bad)                                           # NumPy ids: checked on the host
        with pytest.raises(cupyprune.InputError, match=f"token id {value} is outside"):
            model(**{k: cupy.asarray(v) for k, v in bad.items()})  # CuPy ids: on the device
