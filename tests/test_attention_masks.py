"""What the load-time walk (cupyprune/attention_masks.py) proves of a traced attention mask: the
mask Hugging Face transformers 5.x builds in the graph of an encoder (padding & q_idx >= 0 & True,
expanded to (N, 1, T, S)) pads keys only; a ViT's (q_idx >= 0, expanded) is always true; a mask
that varies over queries (causal) or that the walk cannot follow is neither."""
import pytest

from cupyprune.attention_masks import KEY_PADDING, NONE, Fact, attention_mask_kinds, mask_kind
from cupyprune.errors import InputError, ModelFileError
from cupyprune.footprint import footprint
from cupyprune.graph import parse_graph
from cupyprune.ops import OPS

SHAPES = {"attention_mask": (2, 5), "x": (2, 4, 5, 8)}       # (N, S); (N, H, T, dh)


def value_ranks(graph, ops, tensors, input_shapes):
    """value name -> rank of every tensor value, as the load's memory check infers them
    (footprint.Footprint.ranks: empty where the shapes cannot be inferred)."""
    try:
        return footprint(graph, ops, tensors, input_shapes, 1).ranks
    except (InputError, ModelFileError, KeyError):      # KeyError: an input without a shape
        return {}


def node(name, op, inputs, **attrs):
    return {"name": name, "op": op, "inputs": inputs, "outputs": [name], "attrs": attrs}


def index_arange(name, size, shape, start=0):
    """arange(size) + 0, unsqueezed to `shape` (None: the arange's place)."""
    return [node(f"{name}.arange", "arange", [size] * (1 if start is not None else 2),
                 start=start or 0, step=1,
                 symbolic=[0, 1] if start is None else [1]),
            node(f"{name}.add", "broadcast_add", [f"{name}.arange"], scalar=0.0),
            node(name, "reshape", [f"{name}.add", size], shape=shape)]


def hf_mask_graph(q_term=None, padding=True):
    """The graph of HF's sdpa mask (masking_utils.sdpa_mask without vmap) feeding an sdpa.
    q_term: nodes ending in 'q_term', the (1, 1, T, 1) factor; default q_idx >= 0."""
    nodes = [node("N", "sym_size", ["attention_mask"], dim=0),
             node("S", "sym_size", ["attention_mask"], dim=1)]
    if start_sym := (q_term == "symbolic start"):
        q_term = None
    nodes += index_arange("q_idx", "S", [1, 1, None, 1], start=None if start_sym else 0)
    nodes += q_term or [node("q_term", "ge", ["q_idx"], scalar=0.0)]
    nodes += [node("ones", "full", [], shape=[], value=1.0, dtype="bool"),
              node("and_1", "logical_and", ["ones", "q_term"])]
    mask = "and_1"
    if padding:
        nodes += index_arange("b_idx", "N", [None, 1, 1, 1])
        nodes += index_arange("kv_idx", "S", [1, 1, 1, None])
        nodes += [node("to", "cast", ["attention_mask"], dtype="bool"),
                  node("padding", "index", ["to", "b_idx", "kv_idx"], axes=[0, 1]),
                  node("and_2", "logical_and", ["and_1", "padding"])]
        mask = "and_2"
    nodes += [node("mask", "expand", [mask, "N", "S", "S"], shape=[None, -1, None, None]),
              node("sdpa", "scaled_dot_product_attention", ["x", "x", "x", "mask"])]
    return parse_graph({"inputs": ["x", "attention_mask"], "outputs": ["sdpa"],
                        "nodes": nodes}, OPS)


def kind_of(graph):
    return attention_mask_kinds(graph, value_ranks(graph, OPS, {}, SHAPES))["sdpa"]


def test_hf_encoder_mask_pads_keys_only():
    assert kind_of(hf_mask_graph()) == KEY_PADDING


def test_vit_mask_is_always_true():
    assert kind_of(hf_mask_graph(padding=False)) == NONE


@pytest.mark.parametrize("q_term", [
    index_arange("kv_c", "S", [1, 1, 1, None])
    + [node("q_term", "le", ["kv_c", "q_idx"])],                           # causal: kv <= q
    [node("q_term", "ge", ["q_idx"], scalar=1.0)],                         # false on row 0
    [node("q_term", "gt", ["q_idx"], scalar=0.0)],
    [node("q_term", "ge", ["q_idx"], scalar=0.0, scalar_first=True)],      # 0 >= q_idx
    [node("q_neg", "neg", ["q_idx"]), node("q_term", "ge", ["q_neg"], scalar=0.0)],
    "symbolic start",                                                       # arange(start, S)
], ids=["causal", "ge1", "gt0", "scalar-first", "negated", "symbolic-start"])
def test_masks_varying_over_queries_are_not_key_padding(q_term):
    assert kind_of(hf_mask_graph(q_term=q_term)) is None


def test_unknown_producer_proves_nothing():
    graph = parse_graph({"inputs": ["x", "attention_mask"], "outputs": ["sdpa"], "nodes": [
        node("m4", "reshape", ["attention_mask"], shape=[2, 1, 1, 5]),
        node("mask", "cumsum", ["m4"], dim=2),
        node("sdpa", "scaled_dot_product_attention", ["x", "x", "x", "mask"])]}, OPS)
    assert kind_of(graph) is None
    graph = parse_graph({"inputs": ["x", "attention_mask"], "outputs": ["sdpa"], "nodes": [
        node("m4", "reshape", ["attention_mask"], shape=[2, 1, 1, 5]),     # size 1: constant
        node("sdpa", "scaled_dot_product_attention", ["x", "x", "x", "m4"])]}, OPS)
    assert kind_of(graph) == KEY_PADDING


def test_float_full_is_never_true():
    assert mask_kind(Fact(4, frozenset(range(4)), true=False)) == KEY_PADDING
    graph = parse_graph({"inputs": ["x"], "outputs": ["sdpa"], "nodes": [
        node("mask", "full", [], shape=[1, 1, 5, 5], value=1.0, dtype="float"),
        node("sdpa", "scaled_dot_product_attention", ["x", "x", "x", "mask"])]}, OPS)
    assert attention_mask_kinds(graph, value_ranks(graph, OPS, {}, {"x": SHAPES["x"]})) == \
        {"sdpa": KEY_PADDING}                        # constant everywhere, not "true"


def test_no_ranks_no_kinds():
    graph = hf_mask_graph()
    assert value_ranks(graph, OPS, {}, {"x": (2, 4, 5, 8)}) == {}   # the mask input missing


@pytest.mark.parametrize("kind, want", [("distilbert", KEY_PADDING), ("vit", NONE)])
def test_exported_hugging_face_masks(kind, want, tmp_path, rng):
    """The masks transformers really traces: every sdpa node of the file gets the kind."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import cupyprune
    from cupyprune.export import export_module
    from cupyprune.export.sources import hf_source
    from cupyprune.inputs import sample_inputs
    from export_zoo import hf_model
    _, folder = hf_model(kind, int(rng.integers(1 << 30)))
    source = hf_source(folder)
    path = str(tmp_path / f"{kind}.safetensors")
    export_module(source.module, source.example_inputs, path, max_length=source.max_length)
    model = cupyprune.load(path, device="cpu")
    model.run(**sample_inputs(model.file.input_spec, 2))
    ops = [s.op for s in model.steps if s.node.op == "scaled_dot_product_attention"]
    assert ops and all(op.mask_kind == want for op in ops)
    assert all(op.describe()["attention"] == "generic" for op in ops)     # the CPU's path
