"""One model called from several threads at once (a server's workers, a user's thread pool):
each call gets the answer of its own input.

cuBLASLt keeps a layer's bias pointer in the plan's descriptor, set per call, and layers of one
GEMM shape share a plan: without the plan's lock a call could launch with another layer's (or
another thread's) bias. The CPU test drives the plan's real code against a stand-in library
that records which bias each launch read; the GPU test hammers a model whose layers share one
shape, against float64 NumPy and the single-thread answers."""
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

import cupyprune
from conftest import rel_err
from cupyprune.format import write_model_file
from cupyprune.gpu import cublaslt

THREADS, CALLS = 8, 25


class FakeLt:
    """Stands in for libcublasLt: each descriptor's bias pointer is kept as set, and each
    matmul records (output pointer, the bias pointer its descriptor holds at launch). Setting a
    bias sleeps a little, so that without a lock other threads run between set and launch."""

    def __init__(self):
        self.bias, self.launched, self._next = {}, [], 1000

    def _new(self, ref):
        self._next += 1
        ref._obj.value = self._next
        return 0

    def cublasLtCreate(self, ref):
        return self._new(ref)

    def cublasLtMatmulDescCreate(self, ref, compute, scale):
        return self._new(ref)

    def cublasLtMatrixLayoutCreate(self, ref, dt, rows, cols, ld):
        return self._new(ref)

    def cublasLtMatmulPreferenceCreate(self, ref):
        return self._new(ref)

    def cublasLtMatmulPreferenceSetAttribute(self, pref, attr, value, size):
        return 0

    def cublasLtMatmulPreferenceDestroy(self, pref):
        return 0

    def cublasLtMatmulAlgoGetHeuristic(self, handle, desc, a, b, c, d, pref, count, results,
                                       found):
        found._obj.value = 1                         # results[0]: zeros, state 0 (usable)
        return 0

    def cublasLtMatmulDescSetAttribute(self, desc, attr, value, size):
        if attr == cublaslt.DESC_BIAS_POINTER:
            self.bias[desc.value] = value._obj.value
            time.sleep(0.0002)
        return 0

    def cublasLtMatmul(self, handle, desc, alpha, w, a, x, b, beta, c, cl, out, dl, algo,
                       workspace, workspace_bytes, stream):
        self.launched.append((out.value, self.bias[desc.value]))
        return 0


def _pointer(p):
    return SimpleNamespace(data=SimpleNamespace(ptr=p))


def test_plan_launches_with_its_own_bias_from_many_threads(monkeypatch):
    fake = FakeLt()
    monkeypatch.setattr(cublaslt, "_lib", fake)
    monkeypatch.setattr(cublaslt, "_handle", None)
    monkeypatch.setattr(cublaslt, "_plans", {})
    plan = cublaslt.plan(64, 16, 64, 0, 68, relu=False, has_bias=True, has_c=False)
    handle = SimpleNamespace(workspace=_pointer(1), stream_ptr=0)
    w, x = _pointer(2), _pointer(3)
    start = threading.Barrier(THREADS)

    def calls(t):
        start.wait()
        for i in range(CALLS):
            call = t * CALLS + i
            plan.run(w, x, _pointer(1_000_000 + call), None, _pointer(2_000_000 + call), handle)

    threads = [threading.Thread(target=calls, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.launched) == THREADS * CALLS
    wrong = [(out, bias) for out, bias in fake.launched if bias - 1_000_000 != out - 2_000_000]
    assert not wrong, f"{len(wrong)} launches read another call's bias pointer"


WIDTH, DEPTH, CLASSES = 64, 6, 10


def _same_shape_layers(path, rng):
    """A chain of DEPTH linear+ReLU layers of one (WIDTH, WIDTH) shape, each with its own bias
    (so they share one cuBLASLt plan), then a classifier -> the tensors."""
    tensors, nodes, value = {}, [], "x"
    for i in range(DEPTH + 1):
        out = CLASSES if i == DEPTH else WIDTH
        tensors[f"l{i}.weight"] = (rng.standard_normal((out, WIDTH)) /
                                   np.sqrt(WIDTH / 2)).astype(np.float32)
        tensors[f"l{i}.bias"] = rng.standard_normal(out).astype(np.float32)
        nodes.append({"name": f"l{i}", "op": "linear", "inputs": [value], "outputs": [f"h{i}"],
                      "params": {"weight": f"l{i}.weight", "bias": f"l{i}.bias"}})
        value = f"h{i}"
        if i < DEPTH:
            nodes.append({"name": f"r{i}", "op": "relu", "inputs": [value],
                          "outputs": [f"a{i}"]})
            value = f"a{i}"
    graph = {"inputs": ["x"], "outputs": [value], "nodes": nodes}
    spec = [{"name": "x", "shape": [None, WIDTH], "dtype": "float32", "kind": "features"}]
    write_model_file(str(path), tensors, graph, spec, exporter="tests/test_thread_safety.py")
    return tensors


def _reference(tensors, x):
    """The chain in float64 NumPy."""
    h = x.astype(np.float64)
    for i in range(DEPTH + 1):
        h = h @ tensors[f"l{i}.weight"].astype(np.float64).T + tensors[f"l{i}.bias"]
        if i < DEPTH:
            h = np.maximum(h, 0.0)
    return h


def _hammer(model, xs):
    """Each thread calls the model CALLS times on its own input -> the outputs by thread."""
    outs = [[] for _ in xs]
    start = threading.Barrier(len(xs))

    def calls(t):
        start.wait()
        for _ in range(CALLS):
            outs[t].append(cupyprune.backend.to_numpy(model(xs[t])))

    threads = [threading.Thread(target=calls, args=(t,)) for t in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outs


@pytest.mark.parametrize("dev, cuda_graph", [("cpu", False),
                                             pytest.param("gpu", False, marks=pytest.mark.gpu),
                                             pytest.param("gpu", True, marks=pytest.mark.gpu)])
def test_one_model_from_eight_threads(dev, cuda_graph, rng, tmp_path):
    path = tmp_path / "chain.safetensors"
    tensors = _same_shape_layers(path, rng)
    model = cupyprune.load(str(path), device=dev, cuda_graph=cuda_graph)
    # one batch size for every thread: their calls then share the same plans (keyed by shape)
    xs = [rng.standard_normal((16, WIDTH)).astype(np.float32) for _ in range(THREADS)]
    single = [cupyprune.backend.to_numpy(model(x)) for x in xs]      # one thread, in turn
    outs = _hammer(model, [model.xp.asarray(x) for x in xs])
    for x, alone, calls in zip(xs, single, outs):
        assert rel_err(alone, _reference(tensors, x)) < 1e-5
        for out in calls:
            assert out.shape == alone.shape and out.dtype == np.float32
            np.testing.assert_allclose(out, alone, rtol=1e-6, atol=1e-6 * np.abs(alone).max())
