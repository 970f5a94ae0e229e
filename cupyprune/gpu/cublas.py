"""cuBLAS called directly through ctypes.

Why not CuPy's matmul: CuPy 14 refuses any cuBLAS call during CUDA stream capture
(`NotImplementedError: calling cuBLAS API during stream capture is currently unsupported`),
which rules out replaying a whole forward pass as one CUDA graph.
cuBLAS itself supports capture once a workspace is set, so we call it ourselves, on the library
CuPy already loaded, with our own handle.
"""
import ctypes
import threading

_lib = None
_handles = {}
_lock = threading.Lock()

# cudaDataType_t / cublasComputeType_t / cublasOperation_t values from cublas_api.h
CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF = 0, 2, 14
COMPUTE_32F, COMPUTE_32F_FAST_TF32 = 68, 77
OP_N, OP_T = 0, 1
GEMM_DEFAULT = -1
WORKSPACE_BYTES = 32 * 1024 * 1024


class CublasError(RuntimeError):
    pass


def loaded_library_path(prefix="libcublas.so"):
    """The library CuPy loaded in this process whose file name starts with `prefix` (read from
    /proc/self/maps): libcublas.so, or libcublasLt.so, which libcublas loads."""
    import cupy
    a = cupy.ones((2, 2), dtype=cupy.float32)
    (a @ a).sum().item()                            # makes CuPy load cuBLAS
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if path.rsplit("/", 1)[-1].startswith(prefix):
                return path
    raise CublasError(f"{prefix} is not loaded in this process")


def library():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(loaded_library_path())
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.cublasSetStream_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.cublasSetWorkspace_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.cublasGemmEx.argtypes = [p, i, i, i, i, i, p, p, i, i, p, i, i, p, p, i, i, i, i]
        lib.cublasGemmStridedBatchedEx.argtypes = [
            p, i, i, i, i, i, p, p, i, i, ctypes.c_longlong, p, i, i, ctypes.c_longlong,
            p, p, i, i, ctypes.c_longlong, i, i, i]
        lib.cublasGemmBatchedEx.argtypes = [p, i, i, i, i, i, p, p, i, i, p, i, i, p, p, i, i,
                                            i, i, i]
        _lib = lib
    return _lib


def check(status, what):
    if status != 0:
        raise CublasError(f"{what} failed with cuBLAS status {status}")


class Handle:
    """One cuBLAS handle per (device, stream), with its own workspace (needed under capture)."""

    def __init__(self, stream_ptr):
        import cupy
        lib = library()
        self.stream_ptr = stream_ptr
        self.ptr = ctypes.c_void_p()
        check(lib.cublasCreate_v2(ctypes.byref(self.ptr)), "cublasCreate")
        check(lib.cublasSetStream_v2(self.ptr, ctypes.c_void_p(stream_ptr)), "cublasSetStream")
        self.workspace = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)
        check(lib.cublasSetWorkspace_v2(self.ptr, ctypes.c_void_p(self.workspace.data.ptr),
                                        WORKSPACE_BYTES), "cublasSetWorkspace")


def handle_for_current_stream():
    import cupy
    stream = cupy.cuda.get_current_stream()
    key = (cupy.cuda.runtime.getDevice(), stream.ptr)
    with _lock:
        h = _handles.get(key)
        if h is None:
            h = _handles[key] = Handle(stream.ptr)
    return h
