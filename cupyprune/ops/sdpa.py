"""scaled_dot_product_attention of traced graphs: the GPU's self-attention where it applies, else
matmul, softmax, matmul.

On the GPU an encoder's attention (q, k, v (N, H, T, dh) views of their linear layers' outputs,
no mask or one that pads keys only) runs through gpu/attention.py's self_attention, the one the
hand-written transformer op uses: the fused tensor-core kernel (fp16 and bf16, up to 128 tokens)
or batched GEMMs that read the heads in place (ops/sdpa_plan.py decides, gpu/traced_attention.py
runs it). Everything else, and every CPU run, takes the generic code, the reference.

Legend: N batch, H heads, T queries, S keys, dh head size.
"""
import math

import numpy as np

from ..attention_masks import KEY_PADDING, NONE
from ..errors import InputError
from ..precision import BF16, is_bf16
from .registry import elements, register
from .schema import Bool, Float
from .sdpa_plan import FastPlan, plan
from .tensor import Logical
from .transformer import softmax


MASK_WORDS = {NONE: "always true", KEY_PADDING: "key padding"}


@register("scaled_dot_product_attention")
class ScaledDotProductAttention(Logical):
    """F.scaled_dot_product_attention: q (..., T, dh), k and v (..., S, dh), an optional mask
    (bool: True attends; float: added to the scores) broadcast to (..., T, S)."""
    bf16_native = True       # the GPU path reads bf16 bits; the generic code widens them itself
    attrs = {"scale": Float(default=None, above=0), "is_causal": Bool(default=False)}

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        # what the graph proves of the mask (attention_masks.py, on the load plan), if anything
        self.mask_kind = ctx.plan_of(node).mask_kind
        self.tf32 = ctx.matmul.tf32
        self.path = None                 # the last call's: 'fused', 'gemm' or 'generic'
        self.why = ""                    # why the last call ran generic, or its fast path copied

    @staticmethod
    def infer_shape(node, params, q, k, v, mask=None):
        if q[-1] != k[-1] or k[-2] != v[-2]:
            raise InputError(f"node {node.name!r}: q {tuple(q)}, k {tuple(k)} and v "
                             f"{tuple(v)} do not fit")
        return tuple(q[:-1]) + (v[-1],)

    @staticmethod
    def workspace(node, params, q, k, v, mask=None):
        return 3 * elements(q[:-1]) * k[-2]              # scores, their exp, the weights

    def __call__(self, q, k, v, mask=None):
        a = self.node.attrs
        if self.xp is not np:
            how = plan(q, k, v, mask, a["scale"], a["is_causal"], self.mask_kind)
            if isinstance(how, FastPlan):
                from ..gpu.traced_attention import traced_self_attention
                out, self.path = traced_self_attention(how, q, k, v, mask, self.tf32)
                copied = [name for name, c in zip("qkv", how.copies) if c]
                self.why = f"{', '.join(copied)} copied" if copied else ""
                return out                               # (N, H, T, dh)
            self.why = how
        self.path = "generic"
        if is_bf16(self.dtype):                          # widen the bits, round the result
            from ..bf16 import from_bits, to_bits
            wide = [from_bits(x) if x is not None and x.dtype == BF16 else x
                    for x in (q, k, v, mask)]
            return to_bits(self._generic(*wide))
        return self._generic(q, k, v, mask)

    def _generic(self, q, k, v, mask):
        xp = self.xp
        scale = self.node.attrs["scale"] or 1.0 / math.sqrt(q.shape[-1])
        scores = xp.matmul(q, xp.swapaxes(k, -1, -2)) * scale           # (..., T, S)
        if self.node.attrs["is_causal"]:
            T, S = scores.shape[-2:]
            keep = xp.tril(xp.ones((T, S), dtype=bool))
            scores = xp.where(keep, scores, -xp.inf)
        if mask is not None:
            if mask.dtype == bool:
                scores = xp.where(mask, scores, -xp.inf)
            else:
                scores = scores + mask
        return xp.matmul(softmax(xp, scores).astype(v.dtype, copy=False), v)   # (..., T, dh)

    def describe(self):
        """The mask the graph proves (`mask`), the last call's attention path (`attention`)."""
        parts = [f"mask: {MASK_WORDS[self.mask_kind]}"] if self.mask_kind else []
        path = self.path or "not run"
        parts.append(f"attention: {path}" + (f" ({self.why})" if self.why else ""))
        return {"detail": ", ".join(parts), "attention": self.path, "mask": self.mask_kind}
