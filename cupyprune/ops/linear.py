"""linear (paper formula (3)): x (..., in) @ F (in, out) + bias. Group-wise: gather the kept input
features, one smaller GEMM (paper Algorithm 2)."""
from ..errors import InputError
from ..gpu.gather import gather_columns
from .epilogue import check_residual
from .prunable import LAYER_PARAMS, LayerShape, PrunableOp, checked_weight_shape
from ..layout import LOGICAL
from .registry import elements, need_rank, register, shape_error


def _linear_f(w):
    return w.T                                    # (out, in) -> F (in, out)


@register("linear")
class Linear(PrunableOp):
    layout = LOGICAL
    bf16_native = True                 # gather, cuBLAS, our epilogue kernel
    attrs = {}
    params = LAYER_PARAMS

    weight_to_f = staticmethod(_linear_f)

    @staticmethod
    def layer_shape(node, weight_shape):
        out_features, in_features = checked_weight_shape(node, weight_shape, ("out", "in"))
        return LayerShape(in_features, out_features, whole_features=True)

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.layer = ctx.weight_plan(node, Linear)             # checks the weight's shape
        w = ctx.host_param(node, "weight")                     # (out, in)
        bias = ctx.host_param(node, "bias", required=False)
        if bias is not None and bias.shape != (w.shape[0],):
            shape_error(node, f"bias has shape {bias.shape}, expected ({w.shape[0]},)")
        self.path = self.layer.build(_linear_f(w), ctx)        # F (in, out)
        self.epilogue = ctx.epilogue(node, self.layer.kept_bias(bias))
        # the widths computed: fewer than the model's where a load-time pass compacted
        self.in_features, self.out_features = self.layer.computed_widths()

    def __call__(self, x, residual=None):
        if x.shape[-1] != self.in_features:
            raise InputError(f"layer {self.node.name!r} expects {self.in_features} input "
                             f"features, got {x.shape[-1]}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)                   # (M, in)
        if self.path.input_rows is not None:
            x2 = gather_columns(x2, self.path.input_rows)      # (M, T): kept features only
        check_residual(self.node, residual, (*lead, self.out_features))
        y = self.epilogue.after(self.path, x2, residual)       # (M, out)
        return y.reshape(*lead, self.out_features)

    @property
    def capturable(self):
        return self.path.capturable

    @staticmethod
    def infer_shape(node, params, x):
        out_features, in_features = need_rank(node, params["weight"], 2, "weight")
        if not x or x[-1] != in_features:
            raise InputError(f"layer {node.name!r} expects {in_features} input features, got "
                             f"{x[-1] if x else 'a scalar'}")
        return (*x[:-1], out_features)

    @staticmethod
    def workspace(node, params, x):
        # the gathered kept features at most, and the NumPy epilogue's temporaries (a GELU's
        # quotient, erf and products) of three outputs' size
        return elements(x) + 3 * elements(Linear.infer_shape(node, params, x))

    def describe(self):
        """The model's widths (F's shape), not the computed ones a load-time pass narrowed."""
        R, K = self.layer.fmask.shape                          # F (in, out)
        return self.layer.describe(f"{R}->{K}")
