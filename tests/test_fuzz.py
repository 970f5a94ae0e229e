"""Fuzzing the loader (hypothesis, bounded: about 20 s in all on a 2-core machine): random
values for every op's attributes, random graph fields, random header entries. Whatever the
file, either the model loads and runs on sample inputs, or the error is a CupyPruneError whose
message is one line; never another exception, a hang, or an allocation beyond memory."""
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cupyprune
from cupyprune.format import write_model_file
from cupyprune.inputs import sample_inputs
from cupyprune.ops import OPS
from fuzz_models import MODELS

# CUPYPRUNE_FUZZ_EXAMPLES=2000 for a longer local search
FUZZ = settings(max_examples=int(os.environ.get("CUPYPRUNE_FUZZ_EXAMPLES", 60)), deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# JSON values a hostile or careless exporter could write: small and enormous integers, every
# kind of float, strings, nulls, lists of them
SCALARS = (st.none() | st.booleans() | st.integers(-3, 12) | st.integers(2 ** 31 - 2, 2 ** 64)
           | st.integers(-(2 ** 64), -(2 ** 31)) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=4))
VALUES = SCALARS | st.lists(SCALARS, max_size=4)


def loads_and_runs_or_refuses(path):
    """The property: load and a batch of 2 sample inputs succeed, or a one-line
    CupyPruneError."""
    try:
        model = cupyprune.load(str(path), device="cpu")
        model(**sample_inputs(model.file.input_spec, 2))
    except cupyprune.CupyPruneError as e:
        assert "\n" not in str(e) and str(e), repr(e)


def _write(path, model, rng, edit):
    tensors, graph, spec = MODELS[model](rng)
    edit(tensors, graph, spec)
    write_model_file(str(path), tensors, graph, spec)


@pytest.mark.parametrize("model", sorted(MODELS))
@FUZZ
@given(data=st.data())
def test_fuzz_op_attributes(tmp_path, model, data):
    """Each node's attributes: its schema's names (and a stray one), each given random
    values."""
    rng = np.random.default_rng(0)
    tensors, graph, _ = MODELS[model](rng)
    node = data.draw(st.integers(0, len(graph["nodes"]) - 1), "node")
    names = sorted(OPS[graph["nodes"][node]["op"]].attrs) + ["bogus"]
    attrs = data.draw(st.dictionaries(st.sampled_from(names), VALUES, max_size=3), "attrs")

    def edit(tensors, graph, spec):
        graph["nodes"][node].setdefault("attrs", {}).update(attrs)
    _write(tmp_path / "a.safetensors", model, rng, edit)
    loads_and_runs_or_refuses(tmp_path / "a.safetensors")


NODE_FIELDS = ("name", "op", "inputs", "outputs", "params", "attrs")


@FUZZ
@given(data=st.data())
def test_fuzz_graph_json(tmp_path, data):
    """A node's field, the graph's inputs/outputs or the input spec replaced by a random value,
    or by a value taken from elsewhere in the graph (names and ops that exist)."""
    rng = np.random.default_rng(0)
    model = data.draw(st.sampled_from(sorted(MODELS)), "model")
    _, graph, spec = MODELS[model](rng)
    known = [n["name"] for n in graph["nodes"]] + graph["inputs"]
    plausible = (VALUES | st.sampled_from(known) | st.lists(st.sampled_from(known), max_size=4)
                 | st.sampled_from(sorted(OPS)) | st.dictionaries(st.text(max_size=6),
                                                                   st.sampled_from(known)))
    where = data.draw(st.sampled_from(["node", "graph", "spec"]), "where")
    value = data.draw(plausible, "value")
    node = data.draw(st.integers(0, len(graph["nodes"]) - 1), "node")
    field = data.draw(st.sampled_from(NODE_FIELDS if where == "node" else
                                      ("inputs", "outputs", "nodes") if where == "graph" else
                                      ("shape", "kind", "dtype", "vocab_size", "max_length",
                                       "name")), "field")

    def edit(tensors, graph, spec):
        target = graph["nodes"][node] if where == "node" else graph if where == "graph" \
            else spec[0]
        target[field] = value
    _write(tmp_path / "g.safetensors", model, rng, edit)
    loads_and_runs_or_refuses(tmp_path / "g.safetensors")


def _header_and_data(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


@FUZZ
@given(data=st.data())
def test_fuzz_safetensors_header(tmp_path, data):
    """One tensor's dtype, shape or offsets, or one metadata value, replaced by a random value;
    or the data section cut short."""
    rng = np.random.default_rng(0)
    model = data.draw(st.sampled_from(sorted(MODELS)), "model")
    path = tmp_path / "h.safetensors"
    _write(path, model, rng, lambda *a: None)
    header, blob = _header_and_data(path)
    key = data.draw(st.sampled_from(sorted(header)), "key")
    if key == "__metadata__":
        meta_key = data.draw(st.sampled_from(sorted(header[key]) + ["pruning", "labels"]))
        header[key][meta_key] = data.draw(VALUES.map(json.dumps) | st.text(max_size=8))
    else:
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]), "field")
        ints = st.lists(st.integers(0, 40) | st.integers(2 ** 31, 2 ** 64), max_size=4)
        header[key][field] = data.draw(VALUES | ints
                                       | st.sampled_from(["F16", "F64", "I64", "U8", "BOOL"]),
                                       "value")
    cut = data.draw(st.integers(0, 16), "cut")
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + blob[:len(blob) - cut])
    loads_and_runs_or_refuses(path)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_fuzz_models_are_valid(tmp_path, model):
    """The starting points load and run, so the fuzz tests start from models that work."""
    rng = np.random.default_rng(0)
    _write(tmp_path / "m.safetensors", model, rng, lambda *a: None)
    m = cupyprune.load(str(tmp_path / "m.safetensors"), device="cpu")
    out = m(**sample_inputs(m.file.input_spec, 2))
    assert out.shape[0] == 2 and np.isfinite(out).all()
