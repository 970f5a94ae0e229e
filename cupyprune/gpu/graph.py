"""Replay a model's whole forward pass as one CUDA graph (per input shape).

At the batch sizes of the paper, eager execution is bound by launching kernels from Python
(docs/BENCHMARKS.md, "Method": PyTorch's eager fp16 times move with the host's CPU). A captured
graph replays every kernel of the forward with one launch.

Memory: the capture runs with a private CuPy memory pool, kept alive with the graph, so the
addresses baked into the graph are never handed to anyone else. Inputs are copied into static
buffers before each replay; outputs are copied out after it.
"""
import threading
import warnings
import weakref
from dataclasses import dataclass

from ..errors import InputError


_CAPTURE_STREAMS = {}
# Calls from several threads take turns: a replay owns its graph's static buffers and its
# runner's events from the copy in to the copy out, and a capture on the shared stream must not
# record another runner's replay (their GPU work is serialized on that stream anyway).
_REPLAY_LOCK = threading.Lock()


def capture_stream():
    """One non-blocking stream per device for every capture and replay: each stream gets its
    own cuBLAS handle and workspace (cublas.py), so fresh streams per graph would leak them."""
    import cupy
    device = cupy.cuda.runtime.getDevice()
    if device not in _CAPTURE_STREAMS:
        _CAPTURE_STREAMS[device] = cupy.cuda.Stream(non_blocking=True)
    return _CAPTURE_STREAMS[device]


@dataclass
class _Captured:
    graph: object
    stream: object
    pool: object
    inputs: dict
    outputs: dict


class CudaGraphRunner:
    def __init__(self, forward):
        """forward: a bound method, env (name -> device array) -> outputs (name -> device array).
        Held weakly, so that a dropped model frees its GPU memory without waiting for the GC."""
        import cupy
        self._forward = weakref.WeakMethod(forward)
        self.captured = {}
        self.failed = None          # the reason capture failed once; then we run eagerly
        # made once: every call records and waits on these
        self._inputs_ready = cupy.cuda.Event(disable_timing=True)
        self._outputs_ready = cupy.cuda.Event(disable_timing=True)

    def forward(self, env):
        return self._forward()(env)

    def __call__(self, env, after_launch=None):
        """env (name -> array) -> outputs (name -> new device array). after_launch(event), if
        given, is called once the replay is queued, with an event recorded where env's arrays
        are ready: host work queued there overlaps the replay (the engine's id range check)."""
        with _REPLAY_LOCK:
            return self._replay(env, after_launch)

    def _replay(self, env, after_launch):
        import cupy
        if self.failed is not None:
            return self.forward(env)
        key = tuple((k, v.shape, v.dtype.str) for k, v in sorted(env.items()))
        entry = self.captured.get(key)
        if entry is None:
            try:
                entry = self.captured[key] = self._capture(env)
            except InputError:       # the caller's inputs, not the graph: the next call captures
                raise
            except Exception as e:   # an op that cannot be captured: run eagerly from now on
                step = getattr(self._forward().__self__, "current_step", None)
                self.failed = f"{type(e).__name__}: {e}"
                at = f" at layer {step!r}" if step else ""
                warnings.warn(f"CUDA graph capture failed{at} ({self.failed}); running eagerly",
                              stacklevel=3)
                return self.forward(env)
        current = cupy.cuda.get_current_stream()
        current.record(self._inputs_ready)
        entry.stream.wait_event(self._inputs_ready)
        with entry.stream:
            for name, buf in entry.inputs.items():
                _copy_into(buf, env[name], entry.stream)
            entry.graph.launch(entry.stream)
            if after_launch is not None:
                after_launch(self._inputs_ready)
            outputs = {k: _copy_of(v, entry.stream) for k, v in entry.outputs.items()}
        entry.stream.record(self._outputs_ready)
        current.wait_event(self._outputs_ready)
        return outputs

    def _capture(self, env):
        import cupy
        stream = capture_stream()
        pool = cupy.cuda.MemoryPool()
        cupy.cuda.get_current_stream().synchronize()
        with cupy.cuda.using_allocator(pool.malloc), stream:
            inputs = {k: cupy.array(v) for k, v in env.items()}   # NumPy or CuPy -> device
            self.forward(inputs)      # warm-up: kernels compiled, cuBLAS handle made, pool filled
            stream.synchronize()
            stream.begin_capture()
            try:
                outputs = self.forward(inputs)
            finally:
                graph = stream.end_capture()
            stream.synchronize()
        return _Captured(graph, stream, pool, inputs, outputs)


def _copy_into(buf, arr, stream):
    """A call's input into the graph's static buffer: one memcpy when the layouts match (no
    CuPy kernel launch, and the runtime's call itself: at batch 1 the host work per call is what
    the caller waits for, and CuPy's pointer copy checks devices and peers first)."""
    import numpy
    if isinstance(arr, numpy.ndarray):
        buf.set(numpy.ascontiguousarray(arr), stream=stream)
    elif arr.flags.c_contiguous:
        _memcpy(buf.data.ptr, arr.data.ptr, arr.nbytes, stream)
    else:
        buf[...] = arr


def _copy_of(arr, stream):
    """A graph output copied out (the next replay overwrites it), by memcpy where contiguous."""
    import cupy
    if not arr.flags.c_contiguous:
        return arr.copy()
    out = cupy.ndarray(arr.shape, arr.dtype)
    _memcpy(out.data.ptr, arr.data.ptr, arr.nbytes, stream)
    return out


def _memcpy(dst, src, nbytes, stream):
    from cupy.cuda import runtime
    runtime.memcpyAsync(dst, src, nbytes, runtime.memcpyDefault, stream.ptr)   # UVA: any device
