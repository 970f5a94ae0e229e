"""What follows a GEMM, fused: y = post(act(y + bias) + residual), in place, one pass (one
kernel on the GPU).

An activation node with epilogue forms (ops/activation.py) that directly follows a conv2d or
linear (as its only reader), a residual add of that output, and an activation after the add, are
folded into the layer at load (folding.plan_folding), so the GEMM output is read and written once
instead of up to three times, and as many launches disappear.
"""
import numpy as np

from ..errors import InputError
from ..gpu.cuda_source import (STORAGE_TYPES, compile_kernel, storage_type, type_bytes,
                               type_tag)
from .activation import EPILOGUE_FORMS

_GPU_KERNELS = {}


def _numpy_activation(name, y):
    """y (a NumPy float array) <- the epilogue form `name` of y, in place."""
    return EPILOGUE_FORMS[name].numpy(y)


_EPILOGUE_SOURCE = r"""
#define ACT(v) (%(act)s)
#define POST(v) (%(post)s)
struct __align__(%(pack_bytes)d) Pack { %(T)s v[%(pack)d]; };
// y (rows, cols) <- POST(ACT(y + bias) + res), %(pack)d columns per thread; a thread keeps its
// bias values and walks rows gridDim.y apart.
extern "C" __global__ void %(name)s(%(T)s* y, const %(T)s* bias, const %(T)s* res,
                                    long long rows, int packs_per_row) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= packs_per_row) return;
    float b[%(pack)d];
    Pack bp;
    if (%(has_bias)d) bp = ((const Pack*)bias)[p];
    #pragma unroll
    for (int k = 0; k < %(pack)d; ++k) b[k] = %(has_bias)d ? to_f(bp.v[k]) : 0.f;
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        size_t i = (size_t)r * packs_per_row + p;
        Pack yp = ((Pack*)y)[i], rp;
        if (%(has_res)d) rp = ((const Pack*)res)[i];
        #pragma unroll
        for (int k = 0; k < %(pack)d; ++k) {
            float v = to_f(yp.v[k]) + b[k];
            v = ACT(v);
            if (%(has_res)d) v += to_f(rp.v[k]);
            v = POST(v);
            store_f(&yp.v[k], v);
        }
        ((Pack*)y)[i] = yp;
    }
}
"""
_THREADS = 128
_TARGET_THREADS = 1 << 18            # enough resident threads to keep an H100's memory busy


def _pack(arrays, cols):
    """Columns per thread: 4 when every row and pointer allows aligned 4-element accesses."""
    itemsize = arrays[0].dtype.itemsize
    if cols % 4 == 0 and all(a.data.ptr % (4 * itemsize) == 0 for a in arrays):
        return 4
    return 1


def _epilogue_source(T, pack, activation, post, has_bias, has_res):
    name = "cupyprune_epilogue_{}_{}{}{}_{}{}".format(
        activation, post, "_bias" if has_bias else "", "_res" if has_res else "",
        type_tag(T), pack)
    return name, _EPILOGUE_SOURCE % {
        "act": EPILOGUE_FORMS[activation].cuda, "post": EPILOGUE_FORMS[post].cuda, "T": T,
        "pack": pack, "pack_bytes": pack * type_bytes(T), "name": name,
        "has_bias": int(has_bias), "has_res": int(has_res)}


def kernel_sources():
    """(name, CUDA source) of a spread of this module's kernels (for an NVRTC check): every
    activation in each slot, each storage type and pack width."""
    for T in STORAGE_TYPES:
        for pack in (1, 4):
            for act in EPILOGUE_FORMS:
                yield _epilogue_source(T, pack, act, "none", True, False)
                yield _epilogue_source(T, pack, "none", act, False, True)


def _gpu_epilogue(y, bias, residual, activation, post):
    """y (rows, cols) in place on the GPU: one kernel launch."""
    rows, cols = y.shape
    arrays = [a for a in (y, bias, residual) if a is not None]
    pack = _pack(arrays, cols)
    key = (storage_type(y.dtype), pack, activation, post, bias is not None, residual is not None)
    kernel = compile_kernel(_GPU_KERNELS, key, lambda: _epilogue_source(*key))
    packs = cols // pack
    gx = -(-packs // _THREADS)
    gy = int(min(rows, 65535, max(1, _TARGET_THREADS // (gx * _THREADS))))
    kernel((gx, gy), (_THREADS,), (y, y if bias is None else bias,
                                   y if residual is None else residual,
                                   np.int64(rows), np.int32(packs)))


def check_residual(node, residual, shape):
    """A residual add folded into a layer needs the layer output's shape, as the add would."""
    if residual is not None and tuple(residual.shape) != tuple(shape):
        raise InputError(f"node {node.name!r}: cannot add its output of shape {tuple(shape)} "
                         f"and a residual of shape {tuple(residual.shape)}")


class Epilogue:
    """y (M, N) -> post(act(y + bias) + residual) in place. bias: (N,) device array or None;
    residual (an input of the fused add node) is given per call; post: an activation after
    the add (ResNet's relu after the shortcut sum)."""

    def __init__(self, xp, bias, activation="none", residual=False, post="none"):
        for a in (activation, post):
            if a not in EPILOGUE_FORMS:
                raise ValueError(f"no fused epilogue for activation {a!r}")
        self.xp, self.bias, self.activation = xp, bias, activation
        self.residual, self.post = residual, post

    @property
    def is_identity(self):
        return (self.bias is None and self.activation == "none" and not self.residual
                and self.post == "none")

    @property
    def gemm_relu(self):
        """True/False: the ReLU flag of this epilogue as a GEMM can compute it (bias, then the
        residual, then at most a ReLU: cuBLASLt's relu(A B + C + bias)); None where it cannot
        (NumPy, GELU or tanh, an activation before a residual add)."""
        if self.xp is np or self.is_identity:
            return None
        act = self.post if self.residual else self.activation
        if (self.residual and self.activation != "none") or act not in ("none", "relu"):
            return None
        return act == "relu"

    def after(self, path, x, residual=None):
        """path(x) (M, K) followed by this epilogue: inside the GEMM where the path and the
        epilogue allow (one kernel on the GPU), else the path, then __call__."""
        relu = self.gemm_relu
        if relu is not None:
            if residual is not None:
                residual = self.xp.ascontiguousarray(residual).reshape(x.shape[0], -1)
            y = path.fused(x, self.bias, residual, relu)
            if y is not None:
                return y
        return self(path(x), residual)

    def __call__(self, y, residual=None):
        """y (M, N); residual: any array of M * N values (the add's other input) or None."""
        if self.is_identity:
            return y
        if self.residual:
            residual = self.xp.ascontiguousarray(residual).reshape(y.shape)
        if self.xp is np:
            if self.bias is not None:
                y += self.bias
            _numpy_activation(self.activation, y)
            if residual is not None:
                y += residual
            return _numpy_activation(self.post, y)
        _gpu_epilogue(y, self.bias, residual, self.activation, self.post)
        return y
