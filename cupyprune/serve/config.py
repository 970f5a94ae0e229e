"""What a server serves and how: model files by name, load options and batching limits. One
record for the uvicorn server and every Ray replica, so both serve the same app."""
import os
import re
from dataclasses import dataclass, field

from ..errors import InputError

MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")   # goes into URLs: /v2/models/{name}


@dataclass
class ServeConfig:
    models: dict = field(default_factory=dict)     # model name -> model file path
    device: str = None                             # None: $CUPYPRUNE_DEVICE, else auto
    precision: str = "fp32"
    path_choice: str = "auto"
    cuda_graph: object = "auto"
    max_batch: int = 32              # rows per model call
    max_delay_ms: float = 2.0        # how long the first request of a batch waits for others
    max_queue: int = 256             # requests waiting per model; beyond: 503
    max_body_bytes: int = 64 << 20   # a request body over this: 400

    def load_options(self):
        return {"device": self.device, "precision": self.precision,
                "path_choice": self.path_choice, "cuda_graph": self.cuda_graph}


def parse_models(args):
    """MODEL arguments (PATH, or NAME=PATH) -> {name: path}; a name defaults to the file's
    stem. InputError for a missing file, a name unfit for a URL, or a name given twice."""
    models = {}
    for arg in args:
        name, sep, path = arg.partition("=")
        if not sep or os.path.exists(arg) or not MODEL_NAME.match(name):
            name, path = os.path.splitext(os.path.basename(arg))[0], arg
        if not os.path.isfile(path):
            raise InputError(f"model {path}: no such file")
        if not MODEL_NAME.match(name):
            raise InputError(f"model {path}: its name {name!r} may hold only letters, digits, "
                             f"'_', '.' and '-' (give one as NAME={path})")
        if name in models:
            raise InputError(f"two models are named {name!r} ({models[name]} and {path}): give "
                             f"one another name as NAME=PATH")
        models[name] = path
    if not models:
        raise InputError("no model to serve")
    return models
