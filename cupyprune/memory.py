"""Will a model, or a batch, fit in memory? Checked from shapes alone (footprint.py) before
anything is allocated. NumPy's large allocations succeed lazily on Linux, so a CPU run that
does not fit is not a MemoryError but a process killed by the kernel's out-of-memory killer
without a word; a GPU model too large fails halfway through its load. A load checks the
weights and the activations of one input (`check_fits`, the one function for load, infer,
inspect, bench and a server); a run checks its batch's activations against what is then free
(`check_batch_fits`, `check_call_fits`). Above what is free: an OutOfMemoryError naming the
need and what is free."""
import os

import numpy as np

from .errors import InputError, OutOfMemoryError
from .footprint import activation_bytes, footprint
from .ops import OPS


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


def available_device_bytes():
    """Bytes the current GPU can still give: the driver's free memory plus what CuPy's pool
    holds unused; None where CuPy cannot say."""
    try:
        import cupy
        free, _ = cupy.cuda.runtime.memGetInfo()
        return int(free) + int(cupy.get_default_memory_pool().free_bytes())
    except Exception:                       # no CuPy, no driver: the GPU path is refused anyway
        return None


def available_bytes(device):
    return available_device_bytes() if device == "gpu" else available_host_bytes()


def size_text(n):
    """Bytes -> a short text in GiB, MiB, KiB or bytes, for messages."""
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _where(device):
    return "on the GPU" if device == "gpu" else "in host memory"


def _refuse_above(need, device, what, detail=""):
    free = available_bytes(device)
    if free is not None and need > free:
        raise OutOfMemoryError(f"{what} needs about {size_text(need)} {_where(device)}"
                               f"{detail}, {size_text(free)} free")


def check_fits(model_file, batch=1, device="cpu", precision="fp32", input_shapes=None):
    """Will `model_file` (a path or a read ModelFile) load and run a batch of `batch` inputs
    (of the input spec's sample shapes, or `input_shapes`: name -> shape) on `device` ('cpu' or
    'gpu')? An OutOfMemoryError if its weights and the pass's peak activations need more than
    is free there (and, for the GPU, the load's host staging more than the host has). Returns
    the Footprint."""
    from .format import ModelFile, read_model_file
    from .graph import check_tensors, parse_graph
    from .inputs import check_input_spec
    if not isinstance(model_file, ModelFile):
        model_file = read_model_file(model_file)
    graph = parse_graph(model_file.graph, OPS)
    check_input_spec(model_file.input_spec, graph.inputs)
    check_tensors(graph, model_file.tensors, OPS)
    return check_graph_fits(graph, model_file, batch, device, precision, input_shapes)


def check_graph_fits(graph, model_file, batch, device, precision, input_shapes=None):
    """check_fits for a graph already parsed (the engine's load)."""
    from .inputs import sample_shapes
    from .precision import PRECISIONS
    itemsize = PRECISIONS[precision].itemsize
    shapes = input_shapes or sample_shapes(model_file.input_spec, batch)
    try:
        need = footprint(graph, OPS, model_file.tensors, shapes, itemsize)
    except InputError:      # the spec's sample shapes do not suit the graph: each call checks
        need = footprint(graph, OPS, model_file.tensors, {}, itemsize, activations=False)
    name = repr(os.path.basename(model_file.path)) if model_file.path else "the model"
    inputs = f"{batch} input{'s' if batch != 1 else ''}"
    parts = {"weights": need.weights, f"activations of {inputs}": need.activations,
             "conversion while loading": need.staging}
    if device == "gpu":
        _refuse_above(need.staging, "cpu", name, " (conversion while loading)")
        del parts["conversion while loading"]
    detail = " (" + ", ".join(f"{k} {size_text(v)}" for k, v in parts.items()) + ")"
    _refuse_above(sum(parts.values()), device, name, detail)
    return need


def _batch_of(shapes, b):
    return {name: (b, *shape[1:]) for name, shape in shapes.items()}


def _with_defaults(model, input_shapes):
    """The inputs a caller may leave out (token types, attention mask: inputs.default_input)
    take the first input's shape, as the engine gives them."""
    first = input_shapes.get(model.graph.inputs[0])
    return {name: input_shapes.get(name, first) for name in model.graph.inputs}


def estimate(model, input_shapes):
    """A loaded model, its inputs' shapes (name -> shape, batch first) -> (activation bytes a
    pass needs whatever the batch, bytes per input), from the shapes at batches 1 and 2; None
    where an op of the graph has no shape function."""
    input_shapes = _with_defaults(model, input_shapes)

    def at(b):
        return activation_bytes(model.graph, OPS, model.file.tensors,
                                _batch_of(input_shapes, b), np.dtype(model.dtype).itemsize)
    one, two = at(1), at(2)
    if one is None:
        return None
    per_input = max(two - one, 1)
    return max(one - per_input, 0), per_input


def check_batch_fits(model, inputs_of, batch, what):
    """An OutOfMemoryError, prefixed `what`, when a batch of `batch` inputs (inputs_of(b): a
    batch of b of them) would need more memory than is free on the model's device (its
    weights are loaded already)."""
    available = available_bytes(model.device)
    if available is None:
        return
    shapes = {name: np.shape(v) for name, v in inputs_of(1).items()}
    estimated = estimate(model, shapes)
    if estimated is None:                   # an op with no shape function: cannot tell
        return
    fixed, per_input = estimated
    need = fixed + per_input * batch
    if need > available:
        fit = max(1, (available - fixed) // per_input)
        raise OutOfMemoryError(f"{what}: does not fit in memory: about {size_text(need)} "
                               f"{_where(model.device)} ({size_text(per_input)} an input), "
                               f"{size_text(available)} available; at most about {fit} inputs "
                               f"fit at once")


def check_call_fits(model, input_shapes):
    """A call's inputs (name -> shape) -> an OutOfMemoryError when its activations would need
    more memory than is free on the model's device."""
    need = activation_bytes(model.graph, OPS, model.file.tensors,
                            _with_defaults(model, input_shapes), np.dtype(model.dtype).itemsize)
    if need is None:                        # an op with no shape function: cannot tell
        return
    batch = next(iter(input_shapes.values()))[0]
    _refuse_above(need, model.device, f"a batch of {batch}")
