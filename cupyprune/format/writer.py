"""Write a model file atomically: a temporary file beside the target, renamed when complete."""
import json
import os
import tempfile

import numpy as np

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
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".cupyprune-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        save_file(arrays, tmp, metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)               # mkstemp makes 0600; a model file is data
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
