"""On the GPU: a model or batch that needs more GPU memory than is free is refused before
anything is allocated, in one line naming the need and what is free (memory.check_fits)."""
import json
import struct

import pytest

from cupyprune import OutOfMemoryError, load, memory
from test_bad_input import assert_one_line_error, run_cli
from test_memory import _padded_conv_file
from tiny_models import write_tiny

WIDTH = 2 ** 14                     # a WIDTH x WIDTH float32 weight: 1 GiB


def _sparse_chain(path, layers):
    """`layers` linear layers of WIDTH x WIDTH float32 weights (1 GiB each), their data a hole
    in a sparse file: a consistent model whose weights exceed any GPU's memory, though each
    layer fits the host to be converted."""
    nodes, tensors, value, offset = [], {}, "x", 0
    for i in range(layers):
        key = f"l{i}.weight"
        nodes.append({"name": f"l{i}", "op": "linear", "inputs": [value],
                      "outputs": [f"l{i}"], "params": {"weight": key}})
        size = WIDTH * WIDTH * 4
        tensors[key] = {"dtype": "F32", "shape": [WIDTH, WIDTH],
                        "data_offsets": [offset, offset + size]}
        value, offset = f"l{i}", offset + size
    graph = {"inputs": ["x"], "outputs": [value], "nodes": nodes}
    spec = [{"name": "x", "shape": [None, WIDTH], "dtype": "float32", "kind": "features"}]
    header = {"__metadata__": {"format": "cupyprune", "format_version": "1",
                               "graph": json.dumps(graph), "input_spec": json.dumps(spec)},
              **tensors}
    blob = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)


@pytest.mark.gpu
def test_weights_larger_than_the_gpu_are_refused(tmp_path):
    """Twice the GPU's total memory in weights (a sparse file, never read): one line, on the
    GPU's figures, from load, infer, inspect and bench; nothing is copied to the device."""
    import cupy
    total = cupy.cuda.runtime.memGetInfo()[1]
    layers = 2 * total // (WIDTH * WIDTH * 4) + 1
    path = tmp_path / "wide.safetensors"
    _sparse_chain(path, layers)
    used_before = cupy.get_default_memory_pool().used_bytes()
    with pytest.raises(OutOfMemoryError, match=r"'wide.safetensors' needs about .* on the GPU "
                                               r"\(weights .*\), .* free"):
        load(str(path), device="gpu")
    assert cupy.get_default_memory_pool().used_bytes() == used_before
    for args in (("infer", path), ("inspect", path), ("bench", path, "--batch", 1)):
        assert_one_line_error(run_cli(*args, "--device", "gpu"), "'wide.safetensors'",
                              "on the GPU", "free")


@pytest.mark.gpu
def test_activations_larger_than_the_gpu_are_refused(rng, tmp_path):
    """A conv padding of 100000: terabytes of activations at batch 1, refused at load."""
    path = tmp_path / "pad.safetensors"
    _padded_conv_file(rng, path, 100_000)
    assert_one_line_error(run_cli("infer", path, "--device", "gpu"), "'pad.safetensors'",
                          "activations of 1 input", "on the GPU", "free")
    with pytest.raises(OutOfMemoryError, match="on the GPU"):
        memory.check_fits(str(path), batch=1, device="gpu")


@pytest.mark.gpu
def test_a_batch_larger_than_the_gpu_is_refused(rng, tmp_path):
    """--batch far beyond the GPU: refused from shapes before the inputs are built."""
    path = tmp_path / "tiny.safetensors"
    write_tiny(path, rng)
    assert_one_line_error(run_cli("infer", path, "--device", "gpu", "--batch", 10 ** 9),
                          "--batch 1000000000: does not fit in memory", "on the GPU")
