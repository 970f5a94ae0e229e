"""Write a model file atomically: a temporary file beside the target, renamed when complete."""
import json

import numpy as np

from ..atomic import atomic_path
from . import keys


def write_model_file(path, tensors, graph, input_spec, pruning=None, labels=None,
                     exporter="", description=""):
    """tensors: name -> NumPy array. graph/input_spec/pruning/labels: JSON-able objects."""
    from safetensors.numpy import save_file

    meta = {
        keys.META_FORMAT: keys.FORMAT_NAME,
        keys.META_VERSION: keys.FORMAT_VERSION,
        keys.META_GRAPH: json.dumps(graph),
        keys.META_INPUT_SPEC: json.dumps(input_spec),
        keys.META_PRUNING: json.dumps(pruning or {}),
        keys.META_EXPORTER: exporter,
    }
    if labels is not None:
        meta[keys.META_LABELS] = json.dumps(list(labels))
    if description:
        meta[keys.META_DESCRIPTION] = description
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, tmp, metadata=meta)
