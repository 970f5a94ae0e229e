"""The generic graph executor: a model file compiled for one device, precision and path."""
import warnings
from dataclasses import dataclass, replace

import numpy as np

from . import backend, bf16, memory, passes
from .attention_masks import mark_attention_masks
from .layout import NHWC, LOGICAL, plan_layouts
from .errors import DeviceError, InputError, ModelFileError, OutOfMemoryError
from .format import read_model_file
from .graph import check_tensors, parse_graph
from .inputs import (FEATURES, IMAGE, IdRangeCheck, check_input, check_input_spec,
                     check_sample_labels, default_input)
from .gpu.gemm import Matmul
from .ops import OPS, LoadContext
from .ops.activation import activation_name
from .ops.float_boundary import FloatBoundary, needs_boundary
from .plan import plan_load
from .precision import PRECISIONS, check_precision, is_bf16


# how NumPy's ValueError for an array larger than any memory begins
TOO_BIG = ("array is too big", "Maximum allowed size exceeded")


@dataclass
class Step:
    node: object
    op: object
    inputs: list         # value names the op is called with: the node's, then a fused residual


def _warn_non_finite(tensors):
    for key, arr in tensors.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            warnings.warn(f"tensor {key!r} holds NaN or Inf values; outputs may be NaN",
                          stacklevel=3)


class Model:
    """`model = cupyprune.load(path)`, then `logits = model(x)` on NumPy or CuPy arrays."""

    def __init__(self, model_file, device="auto", path="auto", precision="fp32",
                 cuda_graph="auto"):
        self.file = model_file
        self.device = backend.resolve_device(device)
        check_precision(precision, self.device)
        self.precision, self.dtype = precision, PRECISIONS[precision]
        self.xp = backend.array_module(self.device)
        self.graph = parse_graph(model_file.graph, OPS)
        check_input_spec(model_file.input_spec, self.graph.inputs)
        check_tensors(self.graph, model_file.tensors, OPS)
        need = memory.check_graph_fits(self.graph, model_file, 1, self.device, precision)
        check_sample_labels(model_file, need.outputs.get(self.graph.outputs[0]))
        _warn_non_finite(model_file.tensors)
        # plan -> passes -> lower: every decision is made on the plan, then each op is built once
        self.plan = plan_load(self.graph, OPS, model_file.tensors, model_file.pruning, path,
                              activation_name)
        _check_pruning_names(model_file, self.plan)
        passes.run(self.plan, self.device, path, precision)
        folding = self.plan.folding
        self.alias = self.plan.alias
        self.folded = {conv: bn.name for conv, bn in folding.bn.items()}
        self.fused = folding.activation
        self.residual, self.post = folding.residual, folding.post
        self.input_spec = {s["name"]: s for s in model_file.input_spec}
        self.labels = model_file.labels
        mark_attention_masks(self.plan, need.ranks)   # traced attention's masks
        self._mark_checked_ids()
        self.steps = self._lower(path)
        self._release = self._plan_release()
        self._tags, self._adapters = plan_layouts(self.xp, self.steps, {
            name: NHWC if self.input_spec[name].get("kind", IMAGE) == IMAGE else LOGICAL
            for name in self.graph.inputs}, self.alias)
        self.graph_runner = self._graph_runner(cuda_graph)
        self._fitting_shapes = set()     # input shapes whose activations were found to fit

    def _lower(self, path):
        """The plan -> Steps: each op built once from its plan entry."""
        ctx = LoadContext(xp=self.xp, dtype=self.dtype, tensors=self.file.tensors,
                          pruning=self.file.pruning, path=path,
                          plans={s.name: s for s in self.plan.steps},
                          matmul=Matmul(self.xp, tf32=self.precision == "tf32"))
        return [Step(s.node, _build_op(s.node, ctx), s.inputs) for s in self.plan.steps]

    def _mark_checked_ids(self):
        """Lookups of graph inputs whose spec bounds the ids within the table are checked at
        binding (inputs.IdRangeCheck), so the op needs no host sync and can be captured. Marked
        on the plan (LayerPlan.ids_checked), which the op reads when it is built."""
        for step in self.plan.steps:
            if not hasattr(step.op_class, "checked_upstream"):
                continue
            ids = step.node.inputs[-1]
            spec = self.input_spec.get(ids)
            rows = (self.file.tensors[step.node.params["weight"]].shape or (0,))[0]
            if spec is not None and spec.get("vocab_size") is not None \
                    and spec["vocab_size"] <= rows:
                step.ids_checked = True

    def _plan_release(self):
        """For each step, the values no later step reads: dropped once it has run, so a forward
        pass holds only live activations (and a captured graph's pool only as much)."""
        keep = {self.alias.get(v, v) for v in self.graph.outputs}
        last = {}
        for i, step in enumerate(self.steps):
            for v in step.inputs:
                last[self.alias.get(v, v)] = i
        release = [[] for _ in self.steps]
        for value, i in last.items():
            if value not in keep:
                release[i].append(value)
        return release

    def _graph_runner(self, cuda_graph):
        """CUDA-graph replay on the GPU when every op can be captured ('auto'), or on demand."""
        if cuda_graph not in ("auto", True, False):
            raise DeviceError(f"cuda_graph must be 'auto', True or False, not {cuda_graph!r}")
        if cuda_graph is True and self.device != "gpu":
            raise DeviceError(f"CUDA graph replay needs the GPU (device is {self.device})")
        if self.device != "gpu" or cuda_graph is False:
            return None
        blocking = [s.node.name for s in self.steps if not getattr(s.op, "capturable", True)]
        if blocking:
            if cuda_graph is True:
                raise DeviceError(f"layer {blocking[0]!r} cannot run inside a CUDA graph "
                                  f"(its path is not capturable)")
            return None
        from .gpu.graph import CudaGraphRunner
        return CudaGraphRunner(self._forward)

    # -- inputs -------------------------------------------------------------------------------
    def _bind(self, args, kwargs):
        """Call arguments -> (env: name -> checked array, IdRangeCheck to finish before the
        outputs are handed back)."""
        names = self.graph.inputs
        if len(args) > len(names):
            raise InputError(f"model takes {len(names)} inputs ({', '.join(names)}), "
                             f"got {len(args)}")
        bound = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                raise InputError(f"unknown input {k!r}: the model's inputs are {', '.join(names)}")
            bound[k] = v
        if names[0] not in bound:
            raise InputError(f"input {names[0]!r} is required")
        env = {}
        for name in names:
            spec = self.input_spec[name]
            if name not in bound:
                env[name] = default_input(spec, env[names[0]], self.xp)
            else:
                env[name] = check_input(spec, bound[name])
        ids = IdRangeCheck([(self.input_spec[name], env[name]) for name in bound])
        return env, ids

    def _prepare(self, env):
        """Checked inputs (NumPy or CuPy, as the caller gave them) -> device arrays in the
        graph's layouts. Runs inside the captured graph, so a replay launches no extra kernel."""
        prepared = {}
        for name, arr in env.items():
            kind = self.input_spec[name].get("kind", IMAGE)
            arr = self.xp.asarray(arr)
            if kind == IMAGE:                                   # (N, C, H, W) -> (N, H, W, C)
                n, c, h, w = arr.shape
                nhwc = self.xp.empty((n, h, w, c), dtype=self.dtype)
                if is_bf16(self.dtype):                          # round and transpose: one pass
                    bf16.to_bits(arr.transpose(0, 2, 3, 1), nhwc)
                else:
                    nhwc[...] = arr.transpose(0, 2, 3, 1)       # cast and transpose: one pass
                arr = nhwc
            elif kind == FEATURES:
                arr = bf16.to_bits(arr) if is_bf16(self.dtype) else \
                    arr.astype(self.dtype, copy=False)
            elif is_bf16(arr.dtype) and is_bf16(self.dtype):     # uint16 ids or mask: never
                arr = arr.astype(np.int32)                       # taken for bf16 bits
            prepared[name] = arr
        return prepared

    # -- run ----------------------------------------------------------------------------------
    def run(self, *args, trace=None, **kwargs):
        """Outputs by name. `trace`, a list, receives (step, output shape in NCHW terms)."""
        env, ids = self._bind(args, kwargs)
        self._check_fits(env)
        try:
            if self.graph_runner is not None and trace is None:
                outputs = self.graph_runner(env, after_launch=ids.start)   # counts beside it
            else:
                ids.start()
                outputs = self._forward(env, trace)
            ids.finish()            # waits for the id counts only, the pass being queued already
            return {name: self._to_user(value, self._tags.get(self.alias.get(name, name)))
                    for name, value in outputs.items()}
        except MemoryError as e:    # NumPy's, or CuPy's OutOfMemoryError (a MemoryError)
            raise self._out_of_memory(env, e) from None
        except ValueError as e:     # NumPy: an array of more bytes than an address space holds
            if not str(e).startswith(TOO_BIG):
                raise
            raise self._out_of_memory(env, e) from None

    def _out_of_memory(self, env, e):
        where = " on the GPU" if self.device == "gpu" else ""
        return out_of_memory(f"{where} running a batch of {len(env[self.graph.inputs[0]])}", e)

    def _check_fits(self, env):
        """On the CPU, once per input shapes: the activations must fit in the memory free now
        (Linux would kill the process instead of NumPy raising). CuPy raises on the GPU."""
        if self.device != "cpu":
            return
        shapes = tuple((name, tuple(arr.shape)) for name, arr in env.items())
        if shapes not in self._fitting_shapes:
            memory.check_call_fits(self, dict(shapes))
            self._fitting_shapes.add(shapes)

    def _to_user(self, value, tag=NHWC):
        """An output in the runtime's layout and storage -> NCHW (4-D) in the run's dtype, or
        float32 for bf16 (its values exactly: no array library here has a bfloat16 dtype)."""
        if is_bf16(value.dtype):
            value = bf16.from_bits(value)
        return _to_nchw(self.xp, value) if tag == NHWC else value

    def _forward(self, env, trace=None):
        """Every step, in order, on bound inputs -> graph outputs (internal layouts)."""
        env = self._prepare(env)
        for step, adapt, release in zip(self.steps, self._adapters, self._release):
            self.current_step = step.node.name      # names the layer where a capture fails
            args = [env[self.alias.get(v, v)] for v in step.inputs]
            outs = step.op(*(args if adapt is None else adapt(args)))
            if len(step.node.outputs) == 1:
                outs = (outs,)
            for name, value in zip(step.node.outputs, outs):
                env[name] = value
            for name in release:                      # no later step reads it
                env.pop(name, None)
            if trace is not None:
                trace.append((step, _logical_shape(outs[0], self._tags.get(
                    step.node.outputs[0]))))
        return {name: env[self.alias.get(name, name)] for name in self.graph.outputs}

    def __call__(self, *args, **kwargs):
        outputs = self.run(*args, **kwargs)
        return outputs[self.graph.outputs[0]] if len(outputs) == 1 else outputs

    def layers(self):
        return [s for s in self.steps if s.op.prunable]


def _build_op(node, ctx):
    """node -> its op for ctx's backend and precision (bf16: float32 inside a FloatBoundary
    where the op computes with CuPy arithmetic)."""
    op_class = OPS[node.op]
    if needs_boundary(op_class, ctx.dtype):
        return FloatBoundary(op_class(node, replace(ctx, dtype=np.float32)))
    return op_class(node, ctx)


def _check_pruning_names(model_file, plan):
    """Every pruning declaration names the weight of a conv or linear layer: one that names
    anything else would be ignored, and the pattern the user declared never checked."""
    prunable = {s.node.params["weight"] for s in plan.layers()}
    for key in model_file.pruning:
        if key not in prunable:
            raise ModelFileError(f"{model_file.path}: metadata 'pruning' declares {key!r}, "
                                 f"which is not the weight of a conv or linear layer")


def out_of_memory(doing, e):
    """A MemoryError (NumPy's, CuPy's) -> the project's OutOfMemoryError, on one line."""
    return OutOfMemoryError(f"out of memory{doing}: "
                            f"{str(e).splitlines()[0] if str(e) else 'no detail'}")


def _logical_shape(a, tag=NHWC):
    s = tuple(getattr(a, "shape", ()))
    return (s[0], s[3], s[1], s[2]) if len(s) == 4 and tag == NHWC else s


def _to_nchw(xp, a):
    return xp.ascontiguousarray(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else a


def load(path, device="auto", path_choice="auto", precision="fp32", cuda_graph="auto"):
    """Load a model file for inference.

    device: 'auto' | 'gpu' | 'cpu'; path_choice: 'auto' or a path name (paths.PATH_CHOICES);
    precision: 'fp32' | 'tf32' | 'fp16' | 'bf16' (bf16 outputs come back as float32);
    cuda_graph: replay the forward as one CUDA graph on the
    GPU ('auto': when every layer's path allows it)."""
    model_file = read_model_file(path)
    try:
        return Model(model_file, device=device, path=path_choice, precision=precision,
                     cuda_graph=cuda_graph)
    except MemoryError as e:     # an allocation the shape check did not foresee (CuPy's too)
        raise out_of_memory(f" loading {model_file.path!r}", e) from None
