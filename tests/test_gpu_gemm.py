"""The GEMM with its epilogue inside (cuBLASLt, gpu/cublaslt.py) against float64 NumPy on fresh
random operands: relu?(x @ w + bias + residual), row-major, fp32 / TF32 / fp16, and the cases
that must fall back to GEMM and epilogue apart."""
import numpy as np
import pytest

from conftest import rel_err

pytestmark = pytest.mark.gpu
TOL = {"fp32": 1e-5, "tf32": 5e-3, "fp16": 3e-3}
DTYPES = {"fp32": np.float32, "tf32": np.float32, "fp16": np.float16}


def _matmul(precision):
    import cupy
    from cupyprune.gpu.gemm import Matmul
    return Matmul(cupy, tf32=precision == "tf32")


@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16"])
@pytest.mark.parametrize("M,K,N", [(64, 72, 40), (37, 24, 16), (512, 768, 3072)])
@pytest.mark.parametrize("bias,residual,relu", [(True, False, False), (True, False, True),
                                                (True, True, False), (True, True, True),
                                                (False, False, True), (False, True, False)])
def test_fused_gemm_matches_float64(rng, precision, M, K, N, bias, residual, relu):
    import cupy
    dt = DTYPES[precision]
    x, w = rng.standard_normal((M, K)).astype(dt), rng.standard_normal((K, N)).astype(dt)
    b = rng.standard_normal(N).astype(dt) if bias else None
    r = rng.standard_normal((M, N)).astype(dt) if residual else None
    pre = x.astype(np.float64) @ w.astype(np.float64) + (b if bias else 0) + (r if residual else 0)
    ref = np.maximum(pre, 0) if relu else pre
    dev = lambda a: None if a is None else cupy.asarray(a)              # noqa: E731
    out = _matmul(precision).fused(dev(x), dev(w), dev(b), dev(r), relu)
    assert out is not None, "cuBLASLt offered no algorithm"
    assert out.shape == (M, N) and out.dtype == dt
    assert rel_err(cupy.asnumpy(out), ref) <= TOL[precision]
    if relu:                                   # the ReLU had something to clip
        assert (pre < 0).any() and float(out.min()) == 0.0


def test_fused_gemm_falls_back_where_it_cannot_run(rng, monkeypatch):
    """A misaligned operand, or CUPYPRUNE_CUBLASLT=0: None, so the caller runs them apart."""
    import cupy
    from cupyprune.gpu.gemm import FUSED_EPILOGUE_ENV
    matmul = _matmul("fp32")
    x = cupy.asarray(rng.standard_normal((9, 5)).astype(np.float32))
    w = cupy.asarray(rng.standard_normal((5, 8)).astype(np.float32))
    bias = cupy.asarray(rng.standard_normal(9).astype(np.float32))[1:]     # 4-byte offset
    assert bias.data.ptr % 16 and matmul.fused(x, w, bias, None, False) is None
    monkeypatch.setenv(FUSED_EPILOGUE_ENV, "0")
    assert matmul.fused(x, w, None, None, True) is None


def test_fused_gemm_replays_in_a_cuda_graph(rng):
    """Captured like cublasGemmEx: a graph replay on new inputs gives the new product."""
    import cupy
    from cupyprune.gpu.graph import capture_stream
    matmul = _matmul("fp16")
    x = cupy.asarray(rng.standard_normal((128, 64)).astype(np.float16))
    w = cupy.asarray(rng.standard_normal((64, 32)).astype(np.float16))
    b = cupy.asarray(rng.standard_normal(32).astype(np.float16))
    stream = capture_stream()
    with stream:
        matmul.fused(x, w, b, None, True)                  # plan made outside the capture
        stream.synchronize()
        stream.begin_capture()
        out = matmul.fused(x, w, b, None, True)
        graph = stream.end_capture()
        x[...] = cupy.asarray(rng.standard_normal((128, 64)).astype(np.float16))
        graph.launch(stream)
        stream.synchronize()
    ref = np.maximum(cupy.asnumpy(x).astype(np.float64) @ cupy.asnumpy(w).astype(np.float64)
                     + cupy.asnumpy(b), 0)
    assert rel_err(cupy.asnumpy(out), ref) <= TOL["fp16"]
