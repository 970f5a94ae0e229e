"""The GEMM with its epilogue inside (cuBLASLt, gpu/cublaslt.py) against float64 NumPy on fresh
random operands: relu?(x @ w + bias + residual), row-major, fp32 / TF32 / fp16 / bf16, the plain
GEMM (cublasGemmEx), and the cases that must fall back to GEMM and epilogue apart."""
import numpy as np
import pytest

from conftest import host_values, rel_err, stored

pytestmark = pytest.mark.gpu
TOL = {"fp32": 1e-5, "tf32": 5e-3, "fp16": 3e-3, "bf16": 1e-2}


def _operand(rng, shape, precision):
    """(host values as float64, device array in the precision's storage)."""
    return stored(rng.standard_normal(shape), precision)


def _matmul(precision):
    import cupy
    from cupyprune.gpu.gemm import Matmul
    return Matmul(cupy, tf32=precision == "tf32")


@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
@pytest.mark.parametrize("M,K,N", [(64, 72, 40), (37, 24, 16), (512, 768, 3072)])
@pytest.mark.parametrize("bias,residual,relu", [(True, False, False), (True, False, True),
                                                (True, True, False), (True, True, True),
                                                (False, False, True), (False, True, False),
                                                (False, False, False)])
def test_fused_gemm_matches_float64(rng, precision, M, K, N, bias, residual, relu):
    (x, dx), (w, dw) = _operand(rng, (M, K), precision), _operand(rng, (K, N), precision)
    b, db = _operand(rng, (N,), precision) if bias else (0, None)
    r, dr = _operand(rng, (M, N), precision) if residual else (0, None)
    pre = x @ w + b + r
    ref = np.maximum(pre, 0) if relu else pre
    matmul = _matmul(precision)
    out = matmul.fused(dx, dw, db, dr, relu)
    assert out is not None, "cuBLASLt offered no algorithm"
    assert out.shape == (M, N) and out.dtype == dx.dtype
    assert rel_err(host_values(out), ref) <= TOL[precision]
    if relu:                                   # the ReLU had something to clip
        assert (pre < 0).any() and float(host_values(out).min()) == 0.0
    if not (bias or residual or relu):         # the plain product (cublasGemmEx)
        assert rel_err(host_values(matmul(dx, dw)), ref) <= TOL[precision]


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
