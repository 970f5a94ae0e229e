"""The dynamic batcher without HTTP: requests queued together run as one padded call and get
their own rows back; a full queue refuses at once; a bad request fails alone; stopping answers
everything queued."""
import threading

import numpy as np
import pytest

pytest.importorskip("starlette")
import cupyprune  # noqa: E402
from cupyprune.errors import InputError  # noqa: E402
from cupyprune.serve.batcher import DynamicBatcher, Overloaded, Stopped  # noqa: E402
from cupyprune.serve.buckets import bucket_for, bucket_sizes  # noqa: E402
from serve_helpers import DIGITS, images  # noqa: E402

WAIT_S = 30


class GatedRun:
    """A model call that records each batch and holds the first one until `release()`."""

    def __init__(self, run):
        self.run, self.sizes = run, []
        self.entered, self.gate = threading.Event(), threading.Event()

    def __call__(self, inputs):
        self.sizes.append(len(next(iter(inputs.values()))))
        self.entered.set()
        assert self.gate.wait(WAIT_S)
        return self.run(inputs)

    def release(self):
        self.gate.set()


def test_bucket_sizes():
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(8) == [1, 2, 4, 8]
    assert bucket_sizes(24) == [1, 2, 4, 8, 16, 24]
    assert [bucket_for(r, 24) for r in (1, 2, 3, 5, 9, 17, 24)] == [1, 2, 4, 8, 16, 24, 24]


@pytest.fixture(scope="module")
def digits():
    return cupyprune.load(DIGITS, device="cpu")


def _run_model(model):
    return lambda inputs: {"logits": model(**inputs)}


def test_queued_requests_run_as_one_padded_batch(digits, rng):
    run = GatedRun(_run_model(digits))
    batcher = DynamicBatcher("digits", run, max_batch=8, max_delay_s=0.0, max_queue=16,
                             pad_to_buckets=True)
    batcher.start()
    try:
        xs = [images(rng, rows) for rows in (1, 2, 1, 2)]
        futures = [batcher.submit({"image": xs[0]}, 1)]
        assert run.entered.wait(WAIT_S)              # the first call holds the worker
        futures += [batcher.submit({"image": x}, len(x)) for x in xs[1:]]
        assert batcher.depth() == 3
        run.release()
        outs = [f.result(WAIT_S)["logits"] for f in futures]
    finally:
        batcher.stop(WAIT_S)
    assert run.sizes == [1, 8]                       # 5 rows padded to the bucket of 8
    for x, out in zip(xs, outs):
        ref = digits(x)                              # the same model, unbatched
        assert out.shape == ref.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_different_shapes_never_share_a_call(rng):
    seen = []

    def run(inputs):
        seen.append(inputs["x"].shape)
        return {"y": inputs["x"].sum(axis=1)}

    gated = GatedRun(run)
    batcher = DynamicBatcher("m", gated, max_batch=16, max_delay_s=0.0, max_queue=16)
    batcher.start()
    try:
        xs = [rng.standard_normal((1, n)) for n in (3, 3, 5, 5, 3)]
        futures = [batcher.submit({"x": xs[0]}, 1)]
        assert gated.entered.wait(WAIT_S)
        futures += [batcher.submit({"x": x}, 1) for x in xs[1:]]
        gated.release()
        outs = [f.result(WAIT_S)["y"] for f in futures]
    finally:
        batcher.stop(WAIT_S)
    assert seen == [(1, 3), (1, 3), (2, 5), (1, 3)]  # the first mismatch ends a batch
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(out, x.sum(axis=1))


def test_a_bad_request_fails_alone(rng):
    """A library error from a batched call: each request is rerun alone, so only the one at
    fault fails."""
    def run(inputs):
        if (inputs["x"] < 0).any():
            raise InputError("negative value")
        return {"y": inputs["x"] * 2.0}

    gated = GatedRun(run)
    batcher = DynamicBatcher("m", gated, max_batch=8, max_delay_s=0.0, max_queue=8)
    batcher.start()
    try:
        xs = [rng.random((1, 4)) + 0.1 for _ in range(4)]
        xs[2] = -xs[2]
        futures = [batcher.submit({"x": xs[0]}, 1)]
        assert gated.entered.wait(WAIT_S)
        futures += [batcher.submit({"x": x}, 1) for x in xs[1:]]
        gated.release()
        with pytest.raises(InputError, match="negative"):
            futures[2].result(WAIT_S)
        for i in (0, 1, 3):
            np.testing.assert_array_equal(futures[i].result(WAIT_S)["y"], xs[i] * 2.0)
    finally:
        batcher.stop(WAIT_S)


def test_internal_error_fails_its_batch_and_the_worker_goes_on(rng):
    calls = []

    def run(inputs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("device fell over")
        return {"y": inputs["x"] + 1.0}

    batcher = DynamicBatcher("m", run, max_batch=4, max_delay_s=0.0, max_queue=4)
    batcher.start()
    try:
        x = rng.random((2, 3))
        with pytest.raises(RuntimeError, match="fell over"):
            batcher.submit({"x": x}, 2).result(WAIT_S)
        np.testing.assert_array_equal(batcher.submit({"x": x}, 2).result(WAIT_S)["y"], x + 1.0)
    finally:
        batcher.stop(WAIT_S)


def test_full_queue_refuses_at_once_and_stop_drains(rng):
    gated = GatedRun(lambda inputs: {"y": inputs["x"] * 3.0})
    batcher = DynamicBatcher("m", gated, max_batch=1, max_delay_s=0.0, max_queue=3)
    batcher.start()
    xs = [rng.random((1, 2)) for _ in range(4)]
    first = batcher.submit({"x": xs[0]}, 1)
    assert gated.entered.wait(WAIT_S)
    queued = [batcher.submit({"x": x}, 1) for x in xs[1:]]
    with pytest.raises(Overloaded, match="3 requests are queued"):
        batcher.submit({"x": xs[0]}, 1)
    stopper = threading.Thread(target=batcher.stop, args=(WAIT_S,))
    stopper.start()                                  # stopping: new requests are refused...
    while not batcher._stopping.is_set():
        pass
    with pytest.raises(Stopped):
        batcher.submit({"x": xs[0]}, 1)
    gated.release()                                  # ...and the queued ones answered
    stopper.join(WAIT_S)
    assert not stopper.is_alive()
    for x, f in zip(xs, [first] + queued):
        np.testing.assert_array_equal(f.result(0)["y"], x * 3.0)


def test_assemble_pads_with_the_last_row_into_reused_buffers(monkeypatch, rng):
    """Rows gathered into staging buffers that are reused from batch to batch (pinned memory on
    the GPU; here ctypes buffers stand in for it), padded with copies of the last row."""
    import ctypes
    import sys
    import types
    from cupyprune.serve.batcher import Job, assemble
    from cupyprune.serve.staging import PinnedStaging
    allocations = []

    def alloc_pinned_memory(nbytes):
        allocations.append(nbytes)
        memory = ctypes.create_string_buffer(nbytes)
        return types.SimpleNamespace(ptr=ctypes.addressof(memory), memory=memory)

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(
        alloc_pinned_memory=alloc_pinned_memory))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    staging = PinnedStaging()
    for sizes, bucket in (((1, 2), 4), ((3, 2, 2), 8), ((1,), 2)):
        jobs = [Job({"x": rng.standard_normal((n, 5)).astype(np.float32),
                     "ids": rng.integers(0, 9, size=(n, 3))}, n, None) for n in sizes]
        batch = assemble(jobs, bucket, staging)
        for name in ("x", "ids"):
            rows = np.concatenate([job.inputs[name] for job in jobs])
            want = np.concatenate([rows, np.repeat(rows[-1:], bucket - len(rows), axis=0)])
            assert batch[name].shape == want.shape and batch[name].dtype == want.dtype
            np.testing.assert_array_equal(batch[name], want)
    # grown for the batch of 8, reused for the smaller one after it
    assert allocations == [4 * 5 * 4, 4 * 3 * 8, 8 * 5 * 4, 8 * 3 * 8]
    lone = Job({"x": rng.standard_normal((2, 5))}, 2, None)
    assert assemble([lone], 2, staging)["x"] is lone.inputs["x"]     # nothing to gather
