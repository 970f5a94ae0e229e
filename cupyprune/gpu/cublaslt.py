"""cuBLASLt called directly through ctypes: a GEMM whose epilogue adds the bias, a residual and
a ReLU inside the GEMM kernel, so that a conv or linear layer is one kernel instead of two.

Column-major, as cuBLAS: D (m, n) = relu?(alpha A (m, k) B (k, n) + beta C (m, n) + bias (m,)),
with beta = 1 and C = the residual where there is one (the cuBLASLt docs: the bias "is added
before applying the final postprocessing"). Row-major callers swap the operands (gemm.py).

A plan (descriptors and the algorithm the heuristic picks first) is made once per shape and reused,
so a call is one cublasLtMatmul; it runs inside CUDA-graph capture like cublasGemmEx, on the
workspace of the stream's cuBLAS handle (cublas.py). Timing the heuristic's other candidates at the
first call, and plain GEMMs through cuBLASLt, were measured and lost (docs/DESIGN_NOTES.md, "Plain
GEMMs through cuBLASLt, each plan's algorithm timed at its first call").
"""
import ctypes
import threading

from . import cublas

# cublasLtMatmulDescAttributes_t, cublasLtEpilogue_t, cublasLtMatmulPreferenceAttributes_t
DESC_TRANSA, DESC_TRANSB, DESC_EPILOGUE, DESC_BIAS_POINTER = 3, 4, 7, 8
EPILOGUE_DEFAULT, EPILOGUE_RELU, EPILOGUE_BIAS = 1, 2, 4
PREF_MAX_WORKSPACE_BYTES = 1

_ONE = ctypes.c_float(1.0)
_lib = None
_handle = None
_plans = {}


class _HeuristicResult(ctypes.Structure):
    """cublasLtMatmulHeuristicResult_t"""
    _fields_ = [("algo", ctypes.c_uint64 * 8), ("workspace_size", ctypes.c_size_t),
                ("state", ctypes.c_int), ("waves_count", ctypes.c_float),
                ("reserved", ctypes.c_int * 4)]


def library():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(cublas.loaded_library_path("libcublasLt.so"))
        p, i, u64, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_int64
        lib.cublasLtCreate.argtypes = [ctypes.POINTER(p)]
        lib.cublasLtMatmulDescCreate.argtypes = [ctypes.POINTER(p), i, i]
        lib.cublasLtMatmulDescSetAttribute.argtypes = [p, i, p, ctypes.c_size_t]
        lib.cublasLtMatrixLayoutCreate.argtypes = [ctypes.POINTER(p), i, u64, u64, i64]
        lib.cublasLtMatmulPreferenceCreate.argtypes = [ctypes.POINTER(p)]
        lib.cublasLtMatmulPreferenceSetAttribute.argtypes = [p, i, p, ctypes.c_size_t]
        lib.cublasLtMatmulPreferenceDestroy.argtypes = [p]
        lib.cublasLtMatmulAlgoGetHeuristic.argtypes = [
            p, p, p, p, p, p, p, i, ctypes.POINTER(_HeuristicResult), ctypes.POINTER(i)]
        lib.cublasLtMatmul.argtypes = [p, p, p, p, p, p, p, p, p, p, p, p, p, p,
                                       ctypes.c_size_t, p]
        _lib = lib
    return _lib


def _lt_handle():
    global _handle
    if _handle is None:
        h = ctypes.c_void_p()
        cublas.check(library().cublasLtCreate(ctypes.byref(h)), "cublasLtCreate")
        _handle = h
    return _handle


def _set(lib, desc, attr, value):
    cublas.check(lib.cublasLtMatmulDescSetAttribute(desc, attr, ctypes.byref(value),
                                                    ctypes.sizeof(value)),
                 f"cublasLtMatmulDescSetAttribute({attr})")


def _layout(lib, dt, rows, cols):
    layout = ctypes.c_void_p()
    cublas.check(lib.cublasLtMatrixLayoutCreate(ctypes.byref(layout), dt, rows, cols, rows),
                 "cublasLtMatrixLayoutCreate")
    return layout


class _Plan:
    """Descriptors and algorithm of one GEMM shape and epilogue; `algo` is None when the
    heuristic offers nothing for it (the caller then runs GEMM and epilogue apart)."""

    def __init__(self, m, n, k, dt, compute, epilogue, has_c):
        lib = library()
        self.desc = ctypes.c_void_p()
        cublas.check(lib.cublasLtMatmulDescCreate(ctypes.byref(self.desc), compute,
                                                  cublas.CUDA_R_32F), "cublasLtMatmulDescCreate")
        for attr in (DESC_TRANSA, DESC_TRANSB):
            _set(lib, self.desc, attr, ctypes.c_int32(cublas.OP_N))
        _set(lib, self.desc, DESC_EPILOGUE, ctypes.c_uint32(epilogue))
        self.a, self.b = _layout(lib, dt, m, k), _layout(lib, dt, k, n)
        self.d = _layout(lib, dt, m, n)
        self.beta = ctypes.c_float(1.0 if has_c else 0.0)
        # the descriptor holds the bias pointer of the call being launched: a call from another
        # thread must not set its own between this one's set and launch
        self.lock = threading.Lock()
        first = self.heuristic(1)
        self.algo = first[0] if first else None

    def heuristic(self, count):
        """Up to `count` usable algorithms for this plan's shape, the heuristic's order."""
        lib = library()
        pref = ctypes.c_void_p()
        cublas.check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)),
                     "cublasLtMatmulPreferenceCreate")
        try:
            size = ctypes.c_uint64(cublas.WORKSPACE_BYTES)
            cublas.check(lib.cublasLtMatmulPreferenceSetAttribute(
                pref, PREF_MAX_WORKSPACE_BYTES, ctypes.byref(size), ctypes.sizeof(size)),
                "cublasLtMatmulPreferenceSetAttribute")
            results, found = (_HeuristicResult * count)(), ctypes.c_int(0)
            status = lib.cublasLtMatmulAlgoGetHeuristic(
                _lt_handle(), self.desc, self.a, self.b, self.d, self.d, pref, count,
                ctypes.cast(results, ctypes.POINTER(_HeuristicResult)), ctypes.byref(found))
        finally:
            lib.cublasLtMatmulPreferenceDestroy(pref)
        if status != 0:
            return []
        return [r for r in results[:found.value] if r.state == 0]

    def run(self, w, x, bias, c, out, handle):
        """out = the plan's product of w and x (column-major A, B) on `handle`'s stream and
        workspace (a cublas.Handle)."""
        lib = library()
        with self.lock:
            if bias is not None:      # the bias pointer is part of the descriptor: set per call
                _set(lib, self.desc, DESC_BIAS_POINTER, ctypes.c_void_p(bias.data.ptr))
            status = self.launch(self.algo, w, x, c, out, handle)
        cublas.check(status, "cublasLtMatmul")

    def launch(self, algo, w, x, c, out, handle):
        """One cublasLtMatmul with `algo` -> its status (the bias pointer set already)."""
        c_ptr = ctypes.c_void_p((out if c is None else c).data.ptr)
        return library().cublasLtMatmul(
            _lt_handle(), self.desc, ctypes.byref(_ONE), ctypes.c_void_p(w.data.ptr), self.a,
            ctypes.c_void_p(x.data.ptr), self.b, ctypes.byref(self.beta), c_ptr, self.d,
            ctypes.c_void_p(out.data.ptr), self.d, ctypes.byref(algo.algo),
            ctypes.c_void_p(handle.workspace.data.ptr), cublas.WORKSPACE_BYTES,
            ctypes.c_void_p(handle.stream_ptr))


def plan(m, n, k, dt, compute, relu, has_bias, has_c):
    """The cached plan of a shape, or None where cuBLASLt offers no algorithm for it."""
    key = (m, n, k, dt, compute, relu, has_bias, has_c)
    if key not in _plans:
        epilogue = {(False, False): EPILOGUE_DEFAULT, (True, False): EPILOGUE_RELU,
                    (False, True): EPILOGUE_BIAS,
                    (True, True): EPILOGUE_RELU | EPILOGUE_BIAS}[(relu, has_bias)]
        p = _Plan(m, n, k, dt, compute, epilogue, has_c)
        _plans[key] = p if p.algo is not None else None
    return _plans[key]
