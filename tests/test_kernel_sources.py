"""Every CUDA kernel the runtime can build compiles with NVRTC, checked without a GPU: NVRTC is
a host library (the nvidia-cuda-nvrtc wheel of the test extra), so a typo in a kernel fails CI
here instead of at a user's first run on a GPU."""
import ctypes
import glob
import os
import site

import pytest

from cupyprune import bf16
from cupyprune.gpu import (attention, checks, cuda_source, fused_attention, gather,
                           implicit_conv, implicit_conv_wgmma, rowwise, spin)
from cupyprune.ops import epilogue, im2col, pool

MODULES = (epilogue, im2col, pool, rowwise, attention, fused_attention, checks, gather, bf16,
           implicit_conv, implicit_conv_wgmma, spin)
ARCH = "--gpu-architecture=compute_90"            # the H100 the benchmarks ran on
# a module built for one target names it (OPTIONS); sm_90a is compiled to machine code, so
# ptxas checks its wgmma instructions too
ARCH_OF = {"implicit_conv_wgmma": implicit_conv_wgmma.OPTIONS[0]}


def _nvrtc():
    roots = site.getsitepackages() + [site.getusersitepackages()]
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "lib", "libnvrtc.so*"))
                           + glob.glob(os.path.join(root, "nvidia", "cuda_nvrtc", "lib",
                                                    "libnvrtc.so*"))):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


NVRTC = _nvrtc()


def _compile(source, name, arch=ARCH):
    """-> (ok, log) for one translation unit."""
    prog = ctypes.c_void_p()
    status = NVRTC.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0,
                                      None, None)
    assert status == 0, f"nvrtcCreateProgram: {status}"
    opts = (ctypes.c_char_p * 1)(arch.encode())
    status = NVRTC.nvrtcCompileProgram(prog, 1, opts)
    size = ctypes.c_size_t()
    NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    NVRTC.nvrtcGetProgramLog(prog, log)
    NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))
    return status == 0, log.value.decode(errors="replace")


SOURCES = [(m.__name__.rsplit(".", 1)[1], name, src)
           for m in MODULES for name, src in m.kernel_sources()]


def test_every_module_offers_kernels():
    assert {m for m, _, _ in SOURCES} == {"epilogue", "im2col", "pool", "rowwise", "attention",
                                          "fused_attention", "checks", "gather", "bf16",
                                          "implicit_conv", "implicit_conv_wgmma", "spin"}
    assert len({name for _, name, _ in SOURCES}) == len(SOURCES)        # names are unique


@pytest.mark.skipif(NVRTC is None, reason="libnvrtc not installed (nvidia-cuda-nvrtc wheel)")
@pytest.mark.parametrize("module,name,source", SOURCES, ids=[n for _, n, _ in SOURCES])
def test_kernel_compiles(module, name, source):
    ok, log = _compile(cuda_source.PRELUDE + source, name + ".cu", ARCH_OF.get(module, ARCH))
    assert ok, log


def test_a_broken_kernel_fails_the_check():
    if NVRTC is None:
        pytest.skip("libnvrtc not installed")
    broken = 'extern "C" __global__ void k(float* y) { *y = -INFINITY; }'
    ok, log = _compile(cuda_source.PRELUDE + broken, "k.cu")
    assert not ok and "INFINITY" in log


def test_sources_are_built_once_per_key(monkeypatch):
    """A launch on the hot path must not rebuild its source: make_source runs on a cache miss
    only, and the compiled kernel gets the shared prelude."""
    import sys
    import types
    built, compiled = [], []
    fake = types.SimpleNamespace(RawKernel=lambda src, name, options=(): compiled.append(
        (src, name, options)) or name)
    monkeypatch.setitem(sys.modules, "cupy", fake)

    def make():
        built.append(1)
        return "k", 'extern "C" __global__ void k() {}'

    cache = {}
    assert [cuda_source.compile_kernel(cache, ("k", 1), make) for _ in range(3)] == ["k"] * 3
    assert len(built) == 1 and len(compiled) == 1
    assert compiled[0][0].startswith(cuda_source.PRELUDE)
    cuda_source.compile_kernel(cache, ("k", 2), make, ("-arch=sm_90a",))
    assert len(built) == 2 and compiled[-1][2] == ("-arch=sm_90a",)      # options passed on
