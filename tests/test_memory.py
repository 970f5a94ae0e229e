"""The host-memory check before a CPU run (cupyprune/memory.py): a batch that would not fit is a
one-line error before anything is allocated or written, instead of the out-of-memory killer."""
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from cupyprune import CupyPruneError, OutOfMemoryError, load, memory
from cupyprune.cli import load_input
from cupyprune.inputs import sample_inputs, sample_shapes
from test_bad_input import assert_one_line_error, run_cli
from tiny_models import tiny_tensors, write_tiny


@pytest.fixture
def tiny(rng, tmp_path):
    path = tmp_path / "tiny.safetensors"
    write_tiny(path, rng)
    return path


def test_available_memory_is_read_from_meminfo(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   12345678 kB\n")
    assert memory.available_host_bytes(str(f)) == 12345678 * 1024
    f.write_text("MemTotal:       24000000 kB\n")
    assert memory.available_host_bytes(str(f)) is None                  # an older kernel
    assert memory.available_host_bytes(str(tmp_path / "missing")) is None


@pytest.fixture
def tiny_dense(rng, tmp_path):
    """The tiny model unpruned: its conv builds every im2col column, as the estimate assumes
    (for a group-wise conv the estimate is an upper bound, as loose as the pruning is deep)."""
    path = tmp_path / "tiny-dense.safetensors"
    write_tiny(path, rng, tensors=tiny_tensors(rng, group_mask=False))
    return path


@pytest.mark.parametrize("batch", [7, 40])
def test_shapes_predict_a_batch(tiny_dense, batch):
    """The estimate from shapes alone (weights aside) is within 25% below and 50% above the peak
    that the batch's own pass allocates, as tracemalloc measures it."""
    model = load(str(tiny_dense), device="cpu")
    spec = model.file.input_spec
    fixed, per_input = memory.estimate(model, sample_shapes(spec, 1))
    measured = _measured_peak(model, sample_inputs(spec, batch))
    assert 0.75 <= (fixed + per_input * batch) / measured <= 1.5, (fixed, per_input, measured)


def _measured_peak(model, x):
    """Bytes a pass on inputs x allocates at its peak (tracemalloc), its inputs included."""
    model(**x)                                   # the per-shape check runs once, untraced
    tracemalloc.start()
    try:
        model(**x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak + sum(v.nbytes for v in x.values())


def _little_memory(monkeypatch, tiny, shapes_of):
    """Available memory set to hold about 3.5 inputs of the tiny model."""
    model = load(str(tiny), device="cpu")
    fixed, per_input = memory.estimate(model, shapes_of(model.file.input_spec))
    monkeypatch.setattr(memory, "available_host_bytes", lambda: int(fixed + per_input * 3.5))


def test_infer_refuses_a_batch_that_does_not_fit(monkeypatch, tiny, tmp_path):
    _little_memory(monkeypatch, tiny, lambda spec: sample_shapes(spec, 1))
    out = tmp_path / "y.npy"
    assert_one_line_error(run_cli("infer", tiny, "--device", "cpu", "--batch", 50,
                                  "--output", out),
                          "--batch 50: does not fit in memory", "at most about 3 inputs fit")
    assert not out.exists()
    result = run_cli("infer", tiny, "--device", "cpu", "--batch", 3, "--repeat", 1)
    assert result.exit_code == 0, result.output


def test_infer_refuses_an_input_file_that_does_not_fit(monkeypatch, rng, tiny, tmp_path):
    x = rng.standard_normal((20, 3, 9, 9)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    _little_memory(monkeypatch, tiny, lambda spec: {"image": x[:1].shape})
    path = tmp_path / "x.npy"
    assert_one_line_error(run_cli("infer", tiny, "--device", "cpu", "--input", path),
                          f"--input {path}: does not fit in memory", "at most about 3")


def test_bench_refuses_a_batch_that_does_not_fit(monkeypatch, tiny, tmp_path):
    _little_memory(monkeypatch, tiny, lambda spec: sample_shapes(spec, 1))
    json_out = tmp_path / "r.json"
    assert_one_line_error(run_cli("bench", tiny, "--device", "cpu", "--batch", 64, "--json",
                                  json_out), f"--batch 64 for {tiny}: does not fit in memory")
    assert not json_out.exists()


def test_an_input_file_larger_than_memory_is_not_read(monkeypatch, rng, tiny, tmp_path):
    """The .npy header's size against available memory, before np.load reads it whole."""
    x = rng.standard_normal((20, 3, 9, 9)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    monkeypatch.setattr(load_input, "memory", SimpleNamespace(       # the --input check's
        available_host_bytes=lambda: x.nbytes - 1, size_text=memory.size_text))
    assert_one_line_error(run_cli("infer", tiny, "--device", "cpu", "--input", path),
                          f"--input {path}: its arrays do not fit in memory")


# -- sizes from shapes, before anything is allocated -------------------------------------------

def _sparse_model(path, rows):
    """A consistent model file whose linear layer has `rows` x 243 float32 weights, its data a
    hole in a sparse file: nothing is ever written or read, however large."""
    import json
    import struct
    graph = {"inputs": ["image"], "outputs": ["logits"], "nodes": [
        {"name": "f", "op": "flatten", "inputs": ["image"], "outputs": ["x"]},
        {"name": "fc", "op": "linear", "inputs": ["x"], "outputs": ["logits"],
         "params": {"weight": "fc.weight"}}]}
    spec = [{"name": "image", "shape": [None, 3, 9, 9], "dtype": "float32", "kind": "image"}]
    nbytes = rows * 243 * 4
    header = {"__metadata__": {"format": "cupyprune", "format_version": "1",
                               "graph": json.dumps(graph), "input_spec": json.dumps(spec)},
              "fc.weight": {"dtype": "F32", "shape": [rows, 243], "data_offsets": [0, nbytes]}}
    blob = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + nbytes)


def test_weights_larger_than_memory_are_refused_before_reading(tmp_path):
    """A 1 TiB weight (a sparse file): refused from its header's shapes, in one line naming the
    need and what is free, before a byte of it is read."""
    path = tmp_path / "huge.safetensors"
    _sparse_model(path, 2 ** 40 // (243 * 4))
    for command in ("infer", "inspect"):
        assert_one_line_error(run_cli(command, path, "--device", "cpu"), "'huge.safetensors'",
                              "weights 1024.0 GiB", "in host memory", "free")
    assert_one_line_error(run_cli("bench", path, "--device", "cpu", "--batch", 1),
                          "weights 1024.0 GiB")
    with pytest.raises(OutOfMemoryError, match=r"'huge.safetensors' needs about .* GiB in host "
                                               r"memory \(weights 1024.0 GiB, activations"):
        memory.check_fits(str(path), batch=1, device="cpu")
    with pytest.raises(OutOfMemoryError):
        load(str(path), device="cpu")


def test_a_sparse_model_that_fits_runs(rng, tmp_path):
    """The same file small enough: the mapped zeros load and give zero logits."""
    path = tmp_path / "small.safetensors"
    _sparse_model(path, 7)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    assert (load(str(path), device="cpu")(x) == 0).all()


def _padded_conv_file(rng, path, padding):
    from tiny_models import tiny_graph, tiny_tensors
    g = tiny_graph()
    g["nodes"][0]["attrs"]["padding"] = [padding, padding]
    write_tiny(path, rng, tensors=tiny_tensors(rng), graph=g)


def test_activations_larger_than_memory_are_refused_at_load(rng, tmp_path):
    """A conv padding of 100000 makes a (1, 8, 200007, 200007) output and a larger im2col
    matrix at batch 1 (terabytes): refused at load, the memory estimate's passes never run."""
    path = tmp_path / "pad.safetensors"
    _padded_conv_file(rng, path, 100_000)
    for command in ("infer", "inspect"):
        assert_one_line_error(run_cli(command, path, "--device", "cpu"),
                              "'pad.safetensors'", "activations of 1 input", "free")
    with pytest.raises(OutOfMemoryError, match="activations of 1 input"):
        load(str(path), device="cpu")


def test_a_call_too_large_for_memory_raises_the_projects_error(rng, tiny):
    """From Python, a batch whose activations would not fit: OutOfMemoryError (a
    CupyPruneError), never the builtin MemoryError or the out-of-memory killer. The input is a
    broadcast view, so the test allocates nothing large."""
    model = load(str(tiny), device="cpu")
    x = np.broadcast_to(rng.standard_normal((1, 3, 9, 9)).astype(np.float32),
                        (10 ** 8, 3, 9, 9))
    with pytest.raises(OutOfMemoryError, match="a batch of 100000000 needs about"):
        model(x)
    assert isinstance(OutOfMemoryError("x"), CupyPruneError)
    assert not isinstance(OutOfMemoryError("x"), MemoryError)


def test_an_allocation_that_fails_anyway_is_the_projects_error(monkeypatch, rng, tiny):
    model = load(str(tiny), device="cpu")

    def fail(*args):
        raise MemoryError("Unable to allocate 12.0 GiB for an array")
    monkeypatch.setattr(model.steps[0], "op", fail)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    with pytest.raises(OutOfMemoryError, match="out of memory running a batch of 2: Unable"):
        model(x)


def test_a_tensor_numpy_cannot_shape_is_refused_not_a_buffer_error(rng, tmp_path):
    """A zero dimension beside a 2**63 one holds no bytes, but NumPy cannot make the array: a
    ModelFileError, and no BufferError from closing a mapping that arrays still point into."""
    import json
    import struct
    from test_bad_input import valid_header
    header, data = valid_header(rng, tmp_path)
    end = len(data)
    header["odd"] = {"dtype": "F32", "shape": [0, 2 ** 63], "data_offsets": [end, end]}
    blob = json.dumps(header).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    assert_one_line_error(run_cli("infer", path), "tensor 'odd' has shape [0, 9223372036854775808]",
                          "NumPy cannot hold")


def test_an_allocation_that_fails_while_loading_is_the_projects_error(monkeypatch, tiny):
    from cupyprune.ops.conv import Conv2d

    def fail(self, node, ctx):
        raise MemoryError("Unable to allocate 3.0 GiB for an array")
    monkeypatch.setattr(Conv2d, "__init__", fail)
    with pytest.raises(OutOfMemoryError, match="out of memory loading .*tiny.safetensors"):
        load(str(tiny), device="cpu")


@pytest.mark.parametrize("model_name", ["cnn", "cnn_avg", "vit", "bert"])
def test_shapes_inferred_are_the_shapes_a_pass_makes(tmp_path, model_name):
    """Every op's infer_shape against the shapes a real pass produces (the engine's trace), on
    models that use every op."""
    from cupyprune.footprint import activation_bytes
    from cupyprune.ops import OPS
    from fuzz_models import MODELS
    from cupyprune.format import write_model_file
    tensors, graph, spec = MODELS[model_name](np.random.default_rng(0))
    path = tmp_path / "m.safetensors"
    write_model_file(str(path), tensors, graph, spec)
    model = load(str(path), device="cpu")
    inputs = sample_inputs(spec, 3)
    trace = []
    model.run(trace=trace, **inputs)
    inferred = {}
    activation_bytes(model.graph, OPS, model.file.tensors,
                     {k: v.shape for k, v in inputs.items()}, 4, inferred)
    for step, shape in trace:
        assert inferred[step.node.outputs[0]] == tuple(shape), step.node.name
    assert len(trace) >= 5


def test_every_op_can_infer_its_shape():
    """Without an infer_shape, an op leaves its graphs' activations unestimated."""
    from cupyprune.ops import OPS
    assert [name for name, op in OPS.items() if op.infer_shape is None] == []


@pytest.mark.parametrize("model_name", ["vit", "bert"])
def test_shapes_predict_a_transformer_batch(tmp_path, model_name):
    """As for the CNN, on the small transformers: the estimate from shapes within 25% below
    and 50% above the peak a pass of 64 inputs allocates."""
    from cupyprune.format import write_model_file
    from fuzz_models import MODELS
    tensors, graph, spec = MODELS[model_name](np.random.default_rng(0))
    path = tmp_path / "m.safetensors"
    write_model_file(str(path), tensors, graph, spec)
    model = load(str(path), device="cpu")
    fixed, per_input = memory.estimate(model, sample_shapes(spec, 1))
    measured = _measured_peak(model, sample_inputs(spec, 64))
    assert 0.75 <= (fixed + per_input * 64) / measured <= 1.5, (fixed, per_input, measured)
