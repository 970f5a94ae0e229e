"""Where a batch's rows are gathered on the host before the model copies them to the device.

On the GPU: page-locked (pinned) host memory, one buffer per input, grown to the largest batch
seen and reused, so that a batch's copy to the device is one DMA at full bus speed instead of
a copy through the driver's pageable staging (and the rows are written once, not concatenated
and then padded). Reuse is safe because a model call returns only after its outputs are on
the host, by when the copy of its inputs has finished. On the CPU: a fresh NumPy array each
time (nothing is copied to a device)."""
import ctypes
import math

import numpy as np


def fresh(name, shape, dtype):
    return np.empty(shape, dtype)


class PinnedStaging:
    def __init__(self):
        self._buffers = {}          # input name -> (pinned memory, its bytes)

    def __call__(self, name, shape, dtype):
        """-> a (shape, dtype) NumPy array in this input's pinned buffer."""
        count = math.prod(shape)
        nbytes = count * np.dtype(dtype).itemsize
        memory, size = self._buffers.get(name, (None, 0))
        if size < nbytes:
            import cupy
            memory, size = cupy.cuda.alloc_pinned_memory(nbytes), nbytes
            self._buffers[name] = (memory, size)
        # through ctypes: a writable view of the memory, whatever its buffer interface offers
        view = (ctypes.c_byte * nbytes).from_address(memory.ptr)
        return np.frombuffer(view, dtype, count=count).reshape(shape)
