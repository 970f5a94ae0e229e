"""Row-major GEMM for both backends: `matmul(x, w)` = x @ w.

NumPy: plain `@`. CuPy: cublasGemmEx through our own binding (cublas.py), so that precision
(fp32, TF32 tensor cores, fp16/bf16 with fp32 accumulation) is chosen per model, and the call
can be captured in a CUDA graph.

Row-major Y (M, N) = X (M, K) @ W (K, N) is column-major Y^T = W^T X^T: cuBLAS gets W as its
A operand (N x K, ld N) and X as B (K x M, ld K), with no transposes.
"""
import ctypes
import os

import numpy as np

from ..precision import BF16
from . import cublas, cublaslt

# CUPYPRUNE_CUBLASLT=0 runs every GEMM's epilogue as its own kernel (for side-by-side timing)
FUSED_EPILOGUE_ENV = "CUPYPRUNE_CUBLASLT"
_ALIGN = 16                          # bytes: cuBLASLt's algorithms assume aligned operands

_DTYPES = {np.dtype(np.float32): cublas.CUDA_R_32F, np.dtype(np.float16): cublas.CUDA_R_16F,
           BF16: cublas.CUDA_R_16BF}            # bf16 runs hold bfloat16 bits in uint16 arrays


def data_type(dtype):
    try:
        return _DTYPES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"no cuBLAS data type for {np.dtype(dtype)}") from None


def _compute_type(dt, tf32):
    """fp32 data on TF32 tensor cores when asked; everything else accumulates in fp32."""
    if tf32 and dt == cublas.CUDA_R_32F:
        return cublas.COMPUTE_32F_FAST_TF32
    return cublas.COMPUTE_32F


_ONE = ctypes.c_float(1.0)
_ZERO = ctypes.c_float(0.0)


def _begin(dtype, tf32):
    """What every GEMM call here needs: (cuBLAS library, handle of the current stream, data type
    of dtype, compute type)."""
    dt = data_type(dtype)
    return (cublas.library(), cublas.handle_for_current_stream().ptr, dt,
            _compute_type(dt, tf32))


def _ptr(a):
    return ctypes.c_void_p(a.data.ptr)


def gemm_into(x, w, out, tf32=False):
    """out (M, N) = x (M, K) @ w (K, N); all C-contiguous CuPy arrays of one dtype."""
    M, K = x.shape
    N = w.shape[1]
    lib, h, dt, compute = _begin(x.dtype, tf32)
    status = lib.cublasGemmEx(
        h, cublas.OP_N, cublas.OP_N, N, M, K, ctypes.byref(_ONE), _ptr(w), dt, N, _ptr(x), dt, K,
        ctypes.byref(_ZERO), _ptr(out), dt, N, compute, cublas.GEMM_DEFAULT)
    cublas.check(status, f"cublasGemmEx ({M}x{K} @ {K}x{N})")
    return out


def batched_gemm_into(a, b, out, tf32=False):
    """out (B, M, N) = a (B, M, K) @ b (B, K, N), C-contiguous CuPy arrays of one dtype."""
    B, M, K = a.shape
    N = b.shape[2]
    lib, h, dt, compute = _begin(a.dtype, tf32)
    status = lib.cublasGemmStridedBatchedEx(
        h, cublas.OP_N, cublas.OP_N, N, M, K, ctypes.byref(_ONE), _ptr(b), dt, N, K * N,
        _ptr(a), dt, K, M * K, ctypes.byref(_ZERO), _ptr(out), dt, N, M * N, B, compute,
        cublas.GEMM_DEFAULT)
    cublas.check(status, f"cublasGemmStridedBatchedEx ({B}x {M}x{K} @ {K}x{N})")
    return out


def pointer_batched_gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, c, ldc, count, dtype,
                         tf32=False):
    """Column-major C_i (m, n) = alpha op(A_i) (m, k) op(B_i) (k, n) for i < count, where a, b, c
    are device addresses of arrays of `count` matrix pointers (cublasGemmBatchedEx): each
    matrix may sit anywhere, with the leading dimensions given. alpha: a Python float."""
    lib, h, dt, compute = _begin(dtype, tf32)
    status = lib.cublasGemmBatchedEx(
        h, transa, transb, m, n, k, ctypes.byref(ctypes.c_float(alpha)), ctypes.c_void_p(a), dt,
        lda, ctypes.c_void_p(b), dt, ldb, ctypes.byref(_ZERO), ctypes.c_void_p(c), dt, ldc,
        count, compute, cublas.GEMM_DEFAULT)
    cublas.check(status, f"cublasGemmBatchedEx ({count}x {m}x{k} @ {k}x{n})")


class Matmul:
    """x @ w on a model's backend and precision; built once per model."""

    def __init__(self, xp, tf32=False):
        self.xp, self.tf32 = xp, tf32

    def __call__(self, x, w):
        """(M, K) @ (K, N) -> (M, N)."""
        if self.xp is np:
            return x @ w
        x = self.xp.ascontiguousarray(x)
        out = self.xp.empty((x.shape[0], w.shape[1]), dtype=x.dtype)
        return gemm_into(x, w, out, self.tf32)

    def fused(self, x, w, bias=None, residual=None, relu=False):
        """relu?(x (M, K) @ w (K, N) + bias (N,) + residual (M, N)) -> (M, N) in one cuBLASLt
        kernel; None where it cannot run so (NumPy, switched off, a misaligned operand, no
        algorithm for the shape): the caller then runs the GEMM and its epilogue apart."""
        if self.xp is np or os.environ.get(FUSED_EPILOGUE_ENV, "1") == "0":
            return None
        x = self.xp.ascontiguousarray(x)
        operands = [a for a in (x, w, bias, residual) if a is not None]
        if any(a.data.ptr % _ALIGN for a in operands):
            return None
        (M, K), N = x.shape, w.shape[1]
        dt = data_type(x.dtype)
        plan = cublaslt.plan(N, M, K, dt, _compute_type(dt, self.tf32), relu,
                             bias is not None, residual is not None)
        if plan is None:
            return None
        out = self.xp.empty((M, N), dtype=x.dtype)
        plan.run(w, x, bias, residual, out, cublas.handle_for_current_stream())
        return out

    def batched(self, a, b):
        """(B, M, K) @ (B, K, N) -> (B, M, N)."""
        if self.xp is np:
            return a @ b
        a, b = self.xp.ascontiguousarray(a), self.xp.ascontiguousarray(b)
        out = self.xp.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=a.dtype)
        return batched_gemm_into(a, b, out, self.tf32)
