"""The host-memory check before a CPU run (cupyprune/memory.py): a batch that would not fit is a
one-line error before anything is allocated or written, instead of the out-of-memory killer."""
import tracemalloc

import numpy as np
import pytest

from cupyprune import load, memory
from cupyprune.inputs import sample_inputs, sample_shapes
from test_bad_input import assert_one_line_error, run_cli
from tiny_models import write_tiny


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


@pytest.mark.parametrize("batch", [7, 40])
def test_shapes_predict_a_batch(tiny, batch):
    """The estimate from shapes alone (weights aside) is within 25% below and 50% above the peak
    that the batch's own pass allocates, as tracemalloc measures it."""
    model = load(str(tiny), device="cpu")
    spec = model.file.input_spec
    fixed, per_input = memory.estimate(model, sample_shapes(spec, 1))
    x = sample_inputs(spec, batch)
    model(**x)                                   # the per-shape check runs once, untraced
    tracemalloc.start()
    try:
        model(**x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    measured = peak + sum(v.nbytes for v in x.values())
    assert 0.75 <= (fixed + per_input * batch) / measured <= 1.5, (fixed, per_input, measured)


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
    monkeypatch.setattr(memory, "available_host_bytes", lambda: x.nbytes - 1)
    assert_one_line_error(run_cli("infer", tiny, "--device", "cpu", "--input", path),
                          f"--input {path}: its arrays do not fit in memory")
