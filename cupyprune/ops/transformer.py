"""Transformer ops (ViT, BERT): embeddings, layer norm, multi-head self-attention.

Legend: N batch, T tokens, D hidden size, V vocabulary (rows of an embedding table),
P positions in the position table, H heads, dh = D / H head size, h w patch grid.
Token values are (N, T, D); a ViT patch conv's output arrives channels-last (N, h, w, D).
"""
import math

import numpy as np

from ..errors import InputError
from ..inputs import check_ids
from ..precision import lowest
from ..layout import LOGICAL
from .registry import Op, elements, need_rank, register, same_shape, shape_error
from .schema import EXTENT, Bool, Float, Int, Param


def softmax(xp, x):
    """Softmax over the last axis; the row max is subtracted first so that large logits (or the
    additive mask's dtype-min) never overflow exp."""
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _check_tokens(node, ids, x):
    if tuple(ids.shape) != tuple(x.shape[:2]):
        raise InputError(f"{node.name!r}: token type ids have shape {tuple(ids.shape)}, but the "
                         f"token ids have shape {tuple(x.shape[:2])}")


@register("layer_norm")
class LayerNorm(Op):
    layout = LOGICAL
    bf16_native = True                 # one kernel of ours (gpu/rowwise.py)
    # F.layer_norm takes any eps, but one <= 0 divides by zero or takes a root of a negative:
    # NaN logits
    attrs = {"eps": Float(default=1e-5, above=0)}
    params = {"weight": Param(), "bias": Param()}

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.weight = ctx.device(ctx.host_param(node, "weight"))      # (D,)
        self.bias = ctx.device(ctx.host_param(node, "bias"))          # (D,)
        self.eps = node.attrs["eps"]

    @staticmethod
    def infer_shape(node, params, x):
        D = need_rank(node, params["weight"], 1, "weight")[0]
        if not x or x[-1] != D:
            raise InputError(f"layer {node.name!r} normalises {D} features, got "
                             f"{x[-1] if x else 'a scalar'}")
        return x

    @staticmethod
    def workspace(node, params, x):
        return 2 * elements(x)                   # NumPy: the centred values and their squares

    def __call__(self, x):
        if x.shape[-1] != self.weight.shape[0]:
            raise InputError(f"layer {self.node.name!r} normalises {self.weight.shape[0]} "
                             f"features, got {x.shape[-1]}")
        if self.xp is not np:                                         # one fused kernel
            from ..gpu.rowwise import layer_norm
            return layer_norm(x, self.weight, self.bias, self.eps)
        mean = x.mean(axis=-1, keepdims=True)                         # (..., 1)
        centred = x - mean
        var = (centred * centred).mean(axis=-1, keepdims=True)        # (..., 1), biased
        return centred / self.xp.sqrt(var + self.eps) * self.weight + self.bias


class _Table(Op):
    """An op holding one (rows, D) table under param `weight`."""
    attrs = {}
    params = {"weight": Param()}

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        w = ctx.host_param(node, "weight")
        if w.ndim != 2:
            shape_error(node, f"weight must be 2-D (rows, D), got shape {w.shape}")
        self.table = ctx.device(w)                                    # (V or P, D)


class _IdTable(_Table):
    """A table looked up by integer ids. The ids are range-checked once, at input binding,
    against the input spec's vocab_size (inputs.IdRangeCheck; the engine marks the load plan's
    entry `ids_checked` when that bound fits this table): then the op is capturable in a CUDA
    graph. Otherwise it checks them itself, which needs a host sync, and runs eagerly."""
    layout = LOGICAL
    checked_upstream = False

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.checked_upstream = ctx.plan_of(node).ids_checked

    @property
    def capturable(self):
        return self.checked_upstream


@register("embedding")
class Embedding(_IdTable):
    """`positions_in_spec`: the ids are positions computed inside the graph (a traced model's
    position ids), below the input spec's max_length, which the exporter checked fits the
    table; they need no check of their own."""
    bf16_native = True                 # a lookup: moves values
    attrs = {"positions_in_spec": Bool(default=False)}

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.checked_upstream = self.checked_upstream or node.attrs["positions_in_spec"]

    @staticmethod
    def infer_shape(node, params, ids):
        return (*ids, need_rank(node, params["weight"], 2, "weight")[1])    # (N, T, D)

    def __call__(self, ids):
        if not self.checked_upstream:
            check_ids(ids, self.table.shape[0], "token id", "tokens in its vocabulary")
        return self.table[ids]                                        # (N, T) -> (N, T, D)


@register("position_embedding")
class PositionEmbedding(_Table):
    infer_shape = staticmethod(same_shape)

    def __call__(self, x):
        T, P = x.shape[1], self.table.shape[0]
        if T > P:
            raise InputError(f"sequence of {T} tokens is longer than the {P} positions the "
                             f"model was trained for ({self.node.name!r})")
        return x + self.table[:T]                                     # (N, T, D) + (T, D)


@register("token_type_embedding")
class TokenTypeEmbedding(_IdTable):
    infer_shape = staticmethod(same_shape)

    @staticmethod
    def workspace(node, params, x, token_type_ids):
        return elements(x)                       # the rows looked up, before the add

    def __call__(self, x, token_type_ids):
        _check_tokens(self.node, token_type_ids, x)
        if not self.checked_upstream:
            check_ids(token_type_ids, self.table.shape[0], "token type id", "token types")
        return x + self.table[token_type_ids]                         # (N, T, D)


@register("patches_to_tokens")
class PatchesToTokens(Op):
    bf16_native = True                 # only moves values
    attrs, params = {}, {}

    @staticmethod
    def infer_shape(node, params, x):
        N, D, h, w = need_rank(node, x, 4)
        return N, h * w, D

    def __call__(self, x):
        N, h, w, D = x.shape                   # channels-last conv output: no transpose needed
        return x.reshape(N, h * w, D)          # (N, h, w, D) -> (N, h*w, D), row-major patches


def _sequence_param(node, ctx, role, tokens=None):
    """A (1, T, D) param on the device: a class token (T = 1) or a position table."""
    w = ctx.host_param(node, role)
    if w.ndim != 3 or w.shape[0] != 1 or tokens not in (None, w.shape[1]):
        shape_error(node, f"{role} must have shape (1, {tokens or 'T'}, D), got {w.shape}")
    return ctx.device(w)


@register("prepend_token")
class PrependToken(Op):
    layout = LOGICAL
    bf16_native = True                 # only moves values
    attrs = {}
    params = {"token": Param()}

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.token = _sequence_param(node, ctx, "token", tokens=1)   # (1, 1, D)

    @staticmethod
    def infer_shape(node, params, x):
        N, T, D = need_rank(node, x, 3)
        return N, T + 1, D

    def __call__(self, x):
        N, _, D = x.shape
        first = self.xp.broadcast_to(self.token, (N, 1, D))           # (N, 1, D)
        return self.xp.concatenate([first, x], axis=1)                # (N, 1+T, D)


@register("add_param")
class AddParam(Op):
    layout = LOGICAL
    attrs = {}
    params = {"weight": Param()}
    infer_shape = staticmethod(same_shape)

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.weight = _sequence_param(node, ctx, "weight")           # (1, T', D)

    def __call__(self, x):
        T, Tp = x.shape[1], self.weight.shape[1]
        if T != Tp:
            raise InputError(f"the input gives {T} tokens but {self.node.name!r} holds {Tp}: "
                             f"the image size does not fit the model's position table")
        return x + self.weight                                        # (N, T, D)


@register("self_attention")
class SelfAttention(Op):
    layout = LOGICAL
    bf16_native = True                 # cuBLAS and our softmax kernel (gpu/attention.py)
    attrs = {"num_heads": Int(min=1, max=EXTENT)}     # dividing D: checked where D is known
    params = {}

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.heads = node.attrs["num_heads"]
        self.dtype = np.dtype(ctx.dtype)
        self.bmm = ctx.matmul.batched              # the model's GEMM precision; capturable
        self.tf32 = ctx.matmul.tf32

    @staticmethod
    def infer_shape(node, params, q, k, v, attention_mask=None):
        N, T, D = need_rank(node, q, 3)
        if D % node.attrs["num_heads"]:
            shape_error(node, f"hidden size {D} is not divisible by {node.attrs['num_heads']} "
                              f"heads")
        return q

    @staticmethod
    def workspace(node, params, q, k, v, attention_mask=None):
        N, T, D = q
        # scores, their exponentials, probabilities; q, k, v split by head, the merged output
        return 3 * N * node.attrs["num_heads"] * T * T + 4 * N * T * D

    def _split(self, x):
        N, T, D = x.shape
        x = x.reshape(N, T, self.heads, D // self.heads)             # (N, T, H, dh)
        x = x.transpose(0, 2, 1, 3)                                   # (N, H, T, dh)
        return self.xp.ascontiguousarray(x).reshape(N * self.heads, T, -1)   # (N*H, T, dh)

    @staticmethod
    def _check_mask(mask, N, T):
        if mask is not None and tuple(mask.shape) != (N, T):
            raise InputError(f"attention mask has shape {tuple(mask.shape)}, but the token ids "
                             f"have shape {(N, T)}")

    def _mask_bias(self, mask, N, T):
        """HF's extended mask: (1 - mask) * dtype min on padded keys -> (N, 1, 1, T)."""
        keep = mask.astype(self.dtype)
        return ((1 - keep) * lowest(self.dtype)).reshape(N, 1, 1, T)

    def __call__(self, q, k, v, attention_mask=None):
        N, T, D = q.shape
        H = self.heads
        if D % H:
            shape_error(self.node, f"hidden size {D} is not divisible by {H} heads")
        self._check_mask(attention_mask, N, T)
        if self.xp is not np:            # heads read in place, one fused softmax (gpu/attention)
            from ..gpu.attention import self_attention
            c = self.xp.ascontiguousarray
            return self_attention(c(q), c(k), c(v), H, attention_mask, self.tf32)
        q, k, v = self._split(q), self._split(k), self._split(v)     # (N*H, T, dh) each
        scores = self.bmm(q, k.transpose(0, 2, 1))                   # (N*H, T, dh) @ (N*H, dh, T)
        scores *= 1.0 / math.sqrt(D // H)                             # (N*H, T, T)
        if attention_mask is not None:
            scores = scores.reshape(N, H, T, T)
            scores += self._mask_bias(attention_mask, N, T)           # + (N, 1, 1, T)
        probs = softmax(self.xp, scores).reshape(N * H, T, T)
        out = self.bmm(probs, v)                                      # (N*H, T, T) @ (N*H, T, dh)
        out = out.reshape(N, H, T, D // H).transpose(0, 2, 1, 3)      # (N, T, H, dh)
        return self.xp.ascontiguousarray(out).reshape(N, T, D)        # heads merged: (N, T, D)

    def describe(self):
        return {"detail": f"{self.heads} heads"}


@register("select_token")
class SelectToken(Op):
    layout = LOGICAL
    bf16_native = True                 # only moves values
    attrs = {"index": Int(default=0, min=-EXTENT, max=EXTENT)}   # negative: from the end
    params = {}

    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        self.index = node.attrs["index"]

    @staticmethod
    def infer_shape(node, params, x):
        N, T, D = need_rank(node, x, 3)
        if not -T <= node.attrs["index"] < T:
            raise InputError(f"{node.name!r} selects token {node.attrs['index']} of a sequence "
                             f"of {T}")
        return N, D

    def __call__(self, x):
        if not -x.shape[1] <= self.index < x.shape[1]:
            raise InputError(f"{self.node.name!r} selects token {self.index} of a sequence of "
                             f"{x.shape[1]}")
        return self.xp.ascontiguousarray(x[:, self.index])            # (N, T, D) -> (N, D)
