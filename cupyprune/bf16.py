"""float <-> bfloat16 bits (uint16 arrays, precision.BF16), on the host and on the GPU.

Rounding is to nearest, ties to even, as torch's float32 -> bfloat16 cast; NaN stays NaN (a
quiet one) and values past bfloat16's largest finite round to infinity. A bf16 value is the top
half of the float32 with the same bits, so the way back is exact.
"""
import numpy as np

from .precision import is_bf16

_TO_BITS = "bf16_t t; store_f(&t, x); y = t.bits;"        # the kernels' own rounding
_FROM_BITS = "y = to_f(bf16_t{h});"
_KERNELS = {}


def _kernel(name):
    if name not in _KERNELS:
        import cupy
        from .gpu.cuda_source import BF16_SOURCE
        _KERNELS["to_bits"] = cupy.ElementwiseKernel(
            "float32 x", "uint16 y", _TO_BITS, "cupyprune_float_to_bf16", preamble=BF16_SOURCE)
        _KERNELS["from_bits"] = cupy.ElementwiseKernel(
            "uint16 h", "float32 y", _FROM_BITS, "cupyprune_bf16_to_float", preamble=BF16_SOURCE)
    return _KERNELS[name]


def to_bits_host(a):
    """NumPy floats -> uint16 bfloat16 bits, same shape."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return np.where(nan, (u >> 16) | 0x40, rounded).astype(np.uint16)


def from_bits_host(bits):
    """NumPy uint16 bfloat16 bits -> float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_bits(a, out=None):
    """CuPy floats (any layout) -> uint16 bits, one kernel; into `out` when given (a C-ordered
    array of a's shape), else a new array."""
    import cupy
    a = a.astype(cupy.float32, copy=False)
    return _kernel("to_bits")(a) if out is None else _kernel("to_bits")(a, out)


def from_bits(bits):
    """CuPy uint16 bits -> a new float32 array, one kernel."""
    return _kernel("from_bits")(bits)


def to_storage(xp, host_array, dtype):
    """A host array -> a C-contiguous array of the run's storage dtype on `xp`'s device: a cast,
    or for bf16 the rounded bits."""
    host = np.ascontiguousarray(host_array)
    if is_bf16(dtype):
        host = to_bits_host(host)
    return xp.asarray(host, dtype=dtype)


def kernel_sources():
    """(name, CUDA source): the two elementwise operations in one raw kernel, for an NVRTC
    check (CuPy wraps the same strings in its own loop, after the same BF16_SOURCE)."""
    name = "cupyprune_bf16_operations"
    yield name, (
        f'extern "C" __global__ void {name}(const float* xs, unsigned short* ys,\n'
        f'        const unsigned short* hs, float* fs) {{\n'
        f'    int i = threadIdx.x;\n'
        f'    {{ float x = xs[i]; unsigned short& y = ys[i]; {_TO_BITS} }}\n'
        f'    {{ unsigned short h = hs[i]; float& y = fs[i]; {_FROM_BITS} }}\n'
        f'}}\n')
