"""Write a model file atomically: a temporary file beside the target, renamed when complete."""
import json

import numpy as np

from ..atomic import atomic_path
from . import keys
from .compact import compact_tensors
from .masks import pack_masks


def write_model_file(path, tensors, graph, input_spec, pruning=None, labels=None,
                     exporter="", description="", compact=False):
    """tensors: name -> NumPy array (weights at full shape, masks as `.mask`).
    graph/input_spec/pruning/labels: JSON-able objects. compact: store group-wise masked
    weights compacted (compact.py) and every other mask bit-packed or implied by the weight's
    zeros (masks.py), so the file is never larger than the dense model's; the file is then
    format version 3 where a mask was packed or the graph holds ops of a traced model, 2 where
    only weights were compacted, else 1."""
    from safetensors.numpy import save_file

    packed = {}
    if compact:
        tensors, packed = pack_masks(compact_tensors(tensors))
    compacted = any(k.endswith(keys.GROUPS_SUFFIX) for k in tensors)
    version = (keys.PACKED_VERSION if packed or _traced(graph) else
               keys.COMPACT_VERSION if compacted else keys.FORMAT_VERSION)
    meta = {
        keys.META_FORMAT: keys.FORMAT_NAME,
        keys.META_VERSION: version,
        keys.META_GRAPH: json.dumps(graph),
        keys.META_INPUT_SPEC: json.dumps(input_spec),
        keys.META_PRUNING: json.dumps(pruning or {}),
        keys.META_EXPORTER: exporter,
    }
    if labels is not None:
        meta[keys.META_LABELS] = json.dumps(list(labels))
    if description:
        meta[keys.META_DESCRIPTION] = description
    if packed:
        meta[keys.META_MASKS] = json.dumps(packed)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, tmp, metadata=meta)


def _traced(graph):
    """A graph with ops beyond versions 1 and 2 (docs/FORMAT.md, operators of traced graphs).
    The graph is written as given: whatever is not a well-formed node is the reader's to refuse."""
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if not isinstance(nodes, list):
        return False
    for n in nodes:
        if not isinstance(n, dict) or not isinstance(n.get("op"), str):
            continue
        attrs = n.get("attrs") if isinstance(n.get("attrs"), dict) else {}
        if n["op"] not in keys.WHOLE_MODEL_OPS or attrs.get("groups", 1) != 1 or \
                n["op"] == "embedding" and attrs:
            return True
    return False
