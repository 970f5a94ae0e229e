"""Operator registry: graph op name -> class built once per node at load time.

An op class is constructed with (node, ctx), where ctx is a LoadContext. It fetches its params
through ctx (already on the device, in the run precision) and is then called with the input
arrays of the node. 4-D activations are kept channels-last (N, H, W, C) inside the runtime, so
that a conv's GEMM output (N*OH*OW, K) is the next layer's input without a transpose; the engine
converts at the graph's edges, and every 4-D op here reads and writes NHWC.
"""
from dataclasses import dataclass, field

import numpy as np

from ..bf16 import to_storage
from ..errors import ModelFileError
from ..plan import LayerPlan

OPS = {}


def register(name):
    def deco(cls):
        OPS[name] = cls
        cls.op_name = name
        return cls
    return deco


@dataclass
class LoadContext:
    """What ops need at load: the backend, the run dtype, the file's tensors and pruning info,
    and the load plan's entry of each node (plan.py: what folds into it, its weight's plan)."""
    xp: object                  # numpy or cupy
    dtype: object               # run dtype of activations and weights
    tensors: dict               # key -> NumPy array (host)
    pruning: dict               # param key -> {"pattern": ..., ...}
    path: str = "auto"          # requested execution path for prunable layers
    plans: dict = field(default_factory=dict)   # node name -> plan.LayerPlan
    matmul: object = None       # gpu.gemm.Matmul: x @ w at the model's precision

    def __post_init__(self):
        if self.matmul is None:
            from ..gpu.gemm import Matmul
            self.matmul = Matmul(self.xp)

    def plan_of(self, node):
        """The node's LayerPlan; a node built outside a load plan (a test's) folds nothing."""
        plan = self.plans.get(node.name)
        return plan if plan is not None else LayerPlan(node, inputs=list(node.inputs))

    def weight_plan(self, node, op_class):
        """A prunable layer's PrunableWeight: the plan's, as passes left it, or planned here."""
        weight = self.plan_of(node).weight
        if weight is None:
            weight = op_class.plan_weight(node, self.tensors, self.pruning, self.path)
        return weight

    def host_param(self, node, role, required=True, dtype=None):
        """A parameter as a host NumPy array in float64 (for load-time folding) or `dtype`."""
        key = node.params.get(role)
        if key is None:
            if required:
                raise ModelFileError(f"node {node.name!r} ({node.op}) needs param {role!r}")
            return None
        arr = self.tensors[key]
        return arr.astype(dtype or np.float64)

    def epilogue(self, node, bias):
        """The fused epilogue of a conv/linear node: bias (host array or None) and what folds."""
        from .epilogue import Epilogue
        plan = self.plan_of(node)
        return Epilogue(self.xp, None if bias is None else self.device(bias),
                        plan.activation, plan.residual is not None, plan.post)

    def device(self, host_array):
        """A host array -> the backend's array in the run's storage dtype (bf16: its bits)."""
        return to_storage(self.xp, host_array, self.dtype)


class Op:
    """Base: a node compiled for one device. Subclasses set `prunable`, declare their `attrs`
    and `params` (ops/schema.py: checked when the graph is parsed) and implement __call__."""
    prunable = False
    op_name = ""
    attrs = None            # name -> schema.Attr; every registered op declares it
    params = None           # role -> schema.Param; every registered op declares it
    bf16_native = False     # reads and writes bf16 bits itself (else ops/float_boundary.py)

    def __init__(self, node, ctx):
        self.node = node
        self.xp = ctx.xp

    def describe(self):
        """Fields for `cupyprune inspect`; prunable ops add pattern, kept %, path."""
        return {}

    # Shapes alone (footprint.py, before anything is allocated): `infer_shape(node, params,
    # *input_shapes)` -> the output's shape, in logical PyTorch shapes (images NCHW), params by
    # role; `same_shape` for elementwise ops. A graph that cannot fit together is a
    # ModelFileError (shape_error); a size that depends on the input (an image too small for a
    # kernel) an InputError. An op without one leaves its graph's activations unestimated.
    infer_shape = None

    @staticmethod
    def workspace(node, params, *inputs):
        """-> elements of the temporaries the op holds at its peak, beside its inputs and
        output."""
        return 0


def same_shape(node, params, x, *others):
    """infer_shape of an elementwise op: its first input's shape."""
    return x


def need_rank(node, shape, rank, what="input"):
    """A shape of `rank` dimensions (the op unpacks it), or a ModelFileError."""
    if len(shape) != rank:
        shape_error(node, f"its {what} has shape {tuple(shape)}: expected {rank} dimensions")
    return shape


def elements(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def shape_error(node, what):
    raise ModelFileError(f"node {node.name!r} ({node.op}): {what}")
