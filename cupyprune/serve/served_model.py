"""One model as the server sees it: its protocol metadata, the check of a request's inputs
(everything the model would refuse is refused here, before the request joins a batch), and a
batch call that returns NumPy arrays."""
import numpy as np

from ..backend import to_numpy
from ..engine import load
from ..errors import InputError
from ..inputs import (ATTENTION_MASK, TOKEN_IDS, TOKEN_TYPE_IDS, IdRangeCheck, check_input,
                      default_input, sample_inputs)
from ..memory import check_batch_fits
from .buckets import bucket_sizes
from .protocol import datatype_of
from .staging import PinnedStaging, fresh

_TOKEN_KINDS = (TOKEN_IDS, TOKEN_TYPE_IDS, ATTENTION_MASK)    # one (N, T) shape per request


class ServedModel:
    def __init__(self, name, model, max_batch):
        self.name, self.model, self.max_batch = name, model, max_batch
        self.specs = [model.input_spec[n] for n in model.graph.inputs]   # graph order
        # CUDA-graph replay captures one graph per shape: batches are padded to a few sizes
        self.pad_to_buckets = model.graph_runner is not None
        self.staging = PinnedStaging() if model.device == "gpu" else fresh
        check_batch_fits(model, lambda b: sample_inputs(model.file.input_spec, b), max_batch,
                         f"--max-batch {max_batch}")           # the CPU's memory, at start
        self.outputs = self._warm_up()

    def _warm_up(self):
        """Run a sample of one row (and, with graph replay and fixed shapes, one batch per
        bucket, so that no request waits for a capture) -> the outputs' metadata."""
        outputs = self.run(sample_inputs(self.model.file.input_spec, 1))
        fixed = all(d is not None for s in self.specs for d in s["shape"][1:])
        if self.pad_to_buckets and fixed:
            for size in bucket_sizes(self.max_batch)[1:]:
                self.run(sample_inputs(self.model.file.input_spec, size))
        return [{"name": k, "datatype": datatype_of(v.dtype), "shape": [-1, *v.shape[1:]]}
                for k, v in outputs.items()]

    def metadata(self):
        """The protocol's model metadata: inputs and outputs with datatypes and shapes (-1: any
        size)."""
        inputs = [{"name": s["name"], "datatype": datatype_of(s.get("dtype", "float32")),
                   "shape": [-1 if d is None else d for d in s["shape"]]} for s in self.specs]
        return {"name": self.name, "versions": ["1"], "platform": "cupyprune",
                "inputs": inputs, "outputs": self.outputs}

    def check(self, arrays):
        """A request's arrays (name -> NumPy) -> (every graph input, in its spec's dtype, with
        left-out optional inputs filled; rows). InputError for anything the model would refuse."""
        for name in arrays:
            if name not in self.model.input_spec:
                raise InputError(f"unknown input {name!r}: the model's inputs are "
                                 f"{', '.join(s['name'] for s in self.specs)}")
        first = self.specs[0]["name"]
        if first not in arrays:
            raise InputError(f"input {first!r} is required")
        checked = {}
        for spec in self.specs:
            name = spec["name"]
            if name not in arrays:
                checked[name] = default_input(spec, checked[first], np)
                continue
            arr = check_input(spec, arrays[name])
            with np.errstate(over="ignore", invalid="ignore"):   # overflow: refused just below
                arr = arr.astype(spec.get("dtype", "float32"), copy=False)
            if arr.dtype.kind == "f" and not _finite(arr):
                raise InputError(f"input {name!r} holds NaN or Inf values (in "
                                 f"{spec.get('dtype', 'float32')})")
            checked[name] = arr
        rows = self._check_rows(checked)
        IdRangeCheck([(self.model.input_spec[k], v) for k, v in checked.items()])  # host ids
        return checked, rows

    def _check_rows(self, checked):
        """All inputs of one request share their rows, token inputs their (N, T) shape."""
        rows = {k: v.shape[0] for k, v in checked.items()}
        first = self.specs[0]["name"]
        for name, n in rows.items():
            if n != rows[first]:
                raise InputError(f"input {name!r} has {n} rows, input {first!r} has "
                                 f"{rows[first]}")
        tokens = {s["name"]: checked[s["name"]].shape for s in self.specs
                  if s.get("kind") in _TOKEN_KINDS}
        if len(set(tokens.values())) > 1:
            raise InputError("token inputs differ in shape: " + ", ".join(
                f"{k} {tuple(v)}" for k, v in tokens.items()))
        if rows[first] > self.max_batch:
            raise InputError(f"a request of {rows[first]} rows is larger than the server's "
                             f"batch limit ({self.max_batch})")
        return rows[first]

    def run(self, inputs):
        """A batch (name -> NumPy, every input) -> outputs (name -> NumPy), graph order."""
        outputs = self.model.run(**inputs)
        return {k: to_numpy(v) for k, v in outputs.items()}


def _finite(arr):
    """No NaN or Inf in arr: min and max carry any NaN and reach any Inf, and two reductions
    cost less than a boolean array of the input's size."""
    return bool(np.isfinite(arr.min()) and np.isfinite(arr.max()))


def load_models(config):
    """A ServeConfig -> {name: ServedModel}, each loaded and warmed up."""
    return {name: ServedModel(name, load(path, **config.load_options()), config.max_batch)
            for name, path in config.models.items()}
