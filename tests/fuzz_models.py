"""Small valid model files that together use every registered op, for the fuzz tests to break:
a CNN (conv, batch norm, pools, flatten, linear), a ViT-like net (patches, class token,
position table, layer norm, attention) and a BERT-like net (embeddings by ids)."""
import numpy as np

from tiny_models import tiny_graph, tiny_spec, tiny_tensors

D, HEADS, VOCAB, TYPES, POSITIONS = 8, 2, 11, 2, 9


def _node(name, op, inputs, params=None, attrs=None):
    return {"name": name, "op": op, "inputs": inputs, "outputs": [name],
            "params": params or {}, "attrs": attrs or {}}


def _weights(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _encoder(rng, x, tensors):
    """layer norm, q/k/v, attention, residual, GELU, first token, dropout, tanh, classifier."""
    for key in ("ln.weight", "ln.bias"):
        tensors[key] = _weights(rng, D)
    nodes = [_node("ln", "layer_norm", [x], {"weight": "ln.weight", "bias": "ln.bias"},
                   {"eps": 1e-5})]
    for p in ("q", "k", "v"):
        tensors[f"{p}.weight"] = _weights(rng, D, D)
        nodes.append(_node(p, "linear", ["ln"], {"weight": f"{p}.weight"}))
    tensors["out.weight"], tensors["out.bias"] = _weights(rng, 3, D), _weights(rng, 3)
    return nodes + [
        _node("att", "self_attention", ["q", "k", "v"], attrs={"num_heads": HEADS}),
        _node("res", "add", ["att", x]),
        _node("act", "gelu", ["res"], attrs={"approximate": "none"}),
        _node("first", "select_token", ["act"], attrs={"index": 0}),
        _node("drop", "dropout", ["first"]),
        _node("squash", "tanh", ["drop"]),
        _node("out", "linear", ["squash"], {"weight": "out.weight", "bias": "out.bias"})]


def vit_like(rng):
    """image (N, 3, 4, 4) -> 2x2 patches -> 4 tokens + a class token -> logits (N, 3)."""
    t = {"patch.weight": _weights(rng, D, 3, 2, 2), "cls": _weights(rng, 1, 1, D),
         "pos": _weights(rng, 1, 5, D)}
    nodes = [_node("patch", "conv2d", ["image"], {"weight": "patch.weight"},
                   {"stride": [2, 2], "padding": [0, 0], "dilation": [1, 1]}),
             _node("tokens", "patches_to_tokens", ["patch"]),
             _node("cls", "prepend_token", ["tokens"], {"token": "cls"}),
             _node("pos", "add_param", ["cls"], {"weight": "pos"})]
    nodes += _encoder(rng, "pos", t)
    spec = [{"name": "image", "shape": [None, 3, 4, 4], "dtype": "float32", "kind": "image"}]
    return t, {"inputs": ["image"], "outputs": ["out"], "nodes": nodes}, spec


def bert_like(rng):
    """ids (N, T) and token types -> embeddings -> logits (N, 3)."""
    t = {"words": _weights(rng, VOCAB, D), "types": _weights(rng, TYPES, D),
         "positions": _weights(rng, POSITIONS, D)}
    nodes = [_node("embed", "embedding", ["ids"], {"weight": "words"}),
             _node("typed", "token_type_embedding", ["embed", "types"], {"weight": "types"}),
             _node("placed", "position_embedding", ["typed"], {"weight": "positions"})]
    nodes += _encoder(rng, "placed", t)
    ids = {"shape": [None, None], "dtype": "int64"}
    spec = [{"name": "ids", **ids, "kind": "token_ids", "vocab_size": VOCAB,
             "max_length": POSITIONS},
            {"name": "types", **ids, "kind": "token_type_ids", "vocab_size": TYPES}]
    return t, {"inputs": ["ids", "types"], "outputs": ["out"], "nodes": nodes}, spec


def cnn(rng, pool="max_pool2d"):
    """The tiny CNN, its pool a max or an average pool."""
    g = tiny_graph()
    g["nodes"][3]["op"] = pool
    return tiny_tensors(rng), g, tiny_spec()


MODELS = {"cnn": cnn, "cnn_avg": lambda rng: cnn(rng, "avg_pool2d"), "vit": vit_like,
          "bert": bert_like}
