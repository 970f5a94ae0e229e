"""Will a batch fit in host memory? NumPy's large allocations succeed lazily on Linux, so a CPU
run that does not fit is not a MemoryError but a process killed by the kernel's out-of-memory
killer, without a word. The CLI therefore measures forward passes of one and of two inputs first
(their inputs plus the peak of what NumPy allocated, which tracemalloc traces), and refuses a
batch whose estimate, the fixed part plus the per-input part times the batch, exceeds the memory
the system says is available."""
import tracemalloc

import numpy as np

from .errors import InputError


def available_host_bytes(meminfo="/proc/meminfo"):
    """MemAvailable in bytes, or None where the system does not say (not Linux)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024                 # the file says kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_bytes(model, inputs):
    """A CPU model's inputs by name -> bytes: those inputs plus the peak of the forward pass's
    allocations."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        model(**inputs)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not tracing:
            tracemalloc.stop()
    return peak + sum(np.asarray(v).nbytes for v in inputs.values())


def estimate(model, inputs_of):
    """inputs_of(b) -> inputs by name for a batch of b. -> (bytes a pass needs whatever the batch,
    bytes per input), from passes at batches 1 and 2."""
    one, two = peak_bytes(model, inputs_of(1)), peak_bytes(model, inputs_of(2))
    per_input = max(two - one, 1)
    return max(one - per_input, 0), per_input


def check_batch_fits(model, inputs_of, batch, what):
    """An InputError, prefixed `what`, when a batch of `batch` inputs (inputs_of(b): a batch of
    b of them) would need more host memory than is available. CPU models only (on the GPU CuPy
    raises its own out-of-memory error), and only where the system reports its available
    memory."""
    if model.device != "cpu" or batch <= 2:
        return
    available = available_host_bytes()
    if available is None:
        return
    fixed, per_input = estimate(model, inputs_of)
    need = fixed + per_input * batch
    if need > available:
        fit = max(1, (available - fixed) // per_input)
        raise InputError(f"{what}: does not fit in memory: about {size_text(need)} on the "
                         f"CPU ({size_text(per_input)} an input), {size_text(available)} "
                         f"available; at most about {fit} inputs fit at once")


def size_text(n):
    """Bytes -> a short text in GiB, MiB, KiB or bytes, for messages."""
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
