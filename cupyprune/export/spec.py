"""The file's input spec, from the example inputs and the traced graph (docs/FORMAT.md)."""
from ..inputs import ATTENTION_MASK, FEATURES, IMAGE, TOKEN_IDS, TOKEN_TYPE_IDS

TOKEN_KINDS = {"input_ids": TOKEN_IDS, "token_type_ids": TOKEN_TYPE_IDS,
               "attention_mask": ATTENTION_MASK}


def input_spec(named_inputs, graph, tensors, max_length=None, normalization=None):
    """{name: example tensor} -> one spec entry per graph input. An integer input read by an
    `embedding` node gets that table's rows as its vocab_size."""
    tables = {n["inputs"][0]: tensors[n["params"]["weight"]].shape[0]
              for n in graph["nodes"] if n["op"] == "embedding"}
    spec = []
    for name in graph["inputs"]:
        t = named_inputs[name]
        shape = [None] + list(t.shape[1:])
        if t.is_floating_point():
            entry = {"name": name, "shape": shape, "dtype": "float32",
                     "kind": IMAGE if t.dim() == 4 else FEATURES}
            if t.dim() == 4:
                entry["layout"] = "NCHW"
                if normalization:
                    entry["normalization"] = normalization
        else:
            kind = TOKEN_KINDS.get(name, TOKEN_IDS if name in tables else ATTENTION_MASK)
            entry = {"name": name, "shape": [None] * t.dim(), "dtype": "int64", "kind": kind}
            if name in tables:
                entry["vocab_size"] = int(tables[name])
            if kind == TOKEN_IDS and max_length:
                entry["max_length"] = int(max_length)
        spec.append(entry)
    _mark_positions(graph, tensors, max_length)
    return spec


def _mark_positions(graph, tensors, max_length):
    """An embedding whose ids are computed in the graph (position ids) and whose table covers
    max_length rows needs no id check at run time (ops/transformer.py, Embedding)."""
    inputs = set(graph["inputs"])
    for node in graph["nodes"]:
        if node["op"] == "embedding" and node["inputs"][0] not in inputs and max_length \
                and tensors[node["params"]["weight"]].shape[0] >= max_length:
            node["attrs"]["positions_in_spec"] = True
