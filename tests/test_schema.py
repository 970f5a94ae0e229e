"""Every op's declared attribute and param schema (cupyprune/ops/schema.py), checked when the graph
is parsed: each wrong type and each value PyTorch refuses for the same op is one ModelFileError
line naming the node and the attribute, before any tensor is touched."""
import math

import pytest

from cupyprune.errors import ModelFileError
from cupyprune.graph import _arity, parse_graph
from cupyprune.ops import OPS
from cupyprune.ops.schema import REQUIRED

BIG = 2 ** 63
# op -> (values it reads, params, valid attrs)
VALID = {
    "conv2d": (1, {"weight": "w"}, {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}),
    "linear": (1, {"weight": "w", "bias": "b"}, {}),
    "batch_norm": (1, {r: r for r in ("weight", "bias", "running_mean", "running_var")},
                   {"eps": 1e-5}),
    "max_pool2d": (1, {}, {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1]}),
    "avg_pool2d": (1, {}, {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
                           "count_include_pad": False}),
    "adaptive_avg_pool2d": (1, {}, {"output_size": [2, 2]}),
    "flatten": (1, {}, {"start_dim": 1}),
    "add": (2, {}, {}),
    "dropout": (1, {}, {"p": 0.1}),
    "relu": (1, {}, {}),
    "tanh": (1, {}, {}),
    "gelu": (1, {}, {"approximate": "tanh"}),
    "layer_norm": (1, {"weight": "w", "bias": "b"}, {"eps": 1e-12}),
    "embedding": (1, {"weight": "w"}, {}),
    "position_embedding": (1, {"weight": "w"}, {}),
    "token_type_embedding": (2, {"weight": "w"}, {}),
    "patches_to_tokens": (1, {}, {}),
    "prepend_token": (1, {"token": "t"}, {}),
    "add_param": (1, {"weight": "w"}, {}),
    "self_attention": (3, {}, {"num_heads": 4}),
    "select_token": (1, {}, {"index": 0}),
    # the primitive ops of traced graphs (cupyprune/export)
    "sym_size": (1, {}, {"dim": 0}),
    "int_arith": (2, {}, {"op": "mul"}),
    "reshape": (2, {}, {"shape": [None, -1, 4]}),
    "expand": (1, {}, {"shape": [2, -1]}),
    "permute": (1, {}, {"dims": [1, 0]}),
    "cat": (2, {}, {"dim": 1}),
    "slice": (1, {}, {"dim": 1, "start": 0, "end": 2}),
    "select": (1, {}, {"dim": 1, "index": 0}),
    "index": (2, {}, {"axes": [0]}),
    "mean": (1, {}, {"dims": [1]}),
    "sum": (1, {}, {"dims": [1], "keepdim": True}),
    "cumsum": (1, {}, {"dim": 1}),
    "where": (3, {}, {}),
    "softmax": (1, {}, {"dim": -1}),
    "matmul": (2, {}, {}),
    "scaled_dot_product_attention": (3, {}, {"scale": 0.5}),
    "cast": (1, {}, {"dtype": "float"}),
    "arange": (1, {}, {"symbolic": [1]}),
    "full": (1, {}, {"shape": [None, 3], "value": 1.0, "dtype": "bool"}),
    "constant": (0, {"value": "c"}, {}),
    "pad": (1, {}, {"pads": [1, 1]}),
    "roll": (1, {}, {"shifts": [1], "dims": [0]}),
    "hardtanh": (1, {}, {"min_val": 0.0, "max_val": 6.0}),
    **{op: (1, {}, {}) for op in ("sigmoid", "silu", "hardswish", "hardsigmoid", "exp", "sqrt",
                                  "rsqrt", "neg", "logical_not")},
    **{op: (2, {}, {}) for op in ("broadcast_add", "sub", "mul", "div", "pow", "eq", "ne", "lt",
                                  "le", "gt", "ge", "logical_and", "logical_or", "maximum",
                                  "minimum")},
}
PAIR_BAD = ["2", 1.5, True, None, [1], [1, 2, 3], [1, "2"], [1.0, 1], [True, 1], {"a": 1}, BIG,
            [BIG, 1]]
# op -> [(attr, wrong value)]: every wrong type, and each range PyTorch refuses
BAD = {
    "conv2d": [(a, v) for a in ("stride", "padding", "dilation") for v in PAIR_BAD]
    + [("stride", 0), ("stride", [1, 0]), ("padding", -1), ("padding", [0, -2]),
       ("dilation", 0), ("groups", 0), ("groups", 1.0), ("groups", "1"), ("groups", 1 << 17)],
    "batch_norm": [("eps", v) for v in ("x", -1.0, True, None, [1e-5], math.inf, math.nan,
                                        10 ** 400)],
    "max_pool2d": [(a, v) for a in ("kernel", "stride", "padding") for v in PAIR_BAD]
    + [("kernel", 0), ("kernel", [3, 0]), ("stride", 0), ("stride", [0, 2]), ("padding", -1),
       ("padding", 2), ("padding", [1, 2]), ("dilation", 2), ("ceil_mode", True)],
    "avg_pool2d": [("count_include_pad", v) for v in ("no", 0, 1, None, "true")]
    + [("stride", 0), ("padding", 2), ("kernel", True), ("divisor_override", 2)],
    "adaptive_avg_pool2d": [("output_size", v) for v in PAIR_BAD + [0, [2, 0], [-1, 2]]],
    "flatten": [("start_dim", v) for v in ("x", 1.0, True, None, 9, -9)]
    + [("end_dim", v) for v in ("x", -1.5, 8)],
    "reshape": [("shape", v) for v in ("x", [1.5], [-2], [True], 3)],
    "permute": [("dims", v) for v in ("x", [0.5], [9], None)],
    "cast": [("dtype", v) for v in ("float64", 1, None)],
    "hardtanh": [("min_val", v) for v in ("x", True, math.nan)],
    "int_arith": [("op", v) for v in ("pow", 1)],
    "slice": [("step", v) for v in (0, -1, 1.5)],
    "scaled_dot_product_attention": [("scale", v) for v in (0, -1.0, "x", True)],
    "mul": [("scalar", v) for v in ("x", True, math.inf)],
    "embedding": [("positions_in_spec", v) for v in ("yes", 1)],
    "dropout": [("p", v) for v in (-0.1, 1.5, "x", True, math.nan)],
    "gelu": [("approximate", v) for v in ("bogus", True, None, 0, "None")],
    "layer_norm": [("eps", v) for v in ("x", -1.0, 0, 0.0, True, math.nan, math.inf, None)],
    "self_attention": [("num_heads", v) for v in (1.5, True, "4", 0, -2, None, BIG, [4])],
    "select_token": [("index", v) for v in (1.5, True, "0", None, BIG, -BIG)],
    **{op: [("bogus", 1)] for op in ("linear", "add", "relu", "tanh", "sigmoid", "matmul",
                                     "position_embedding", "token_type_embedding",
                                     "patches_to_tokens", "prepend_token", "add_param")},
}


def derived_example(op):
    """(values it reads, params, attrs) of a node of `op` from its declarations alone, where
    every attribute has a default; None otherwise. It reads the fewest values the op takes
    (what the parser checks). An op VALID does not list (one just added) is checked with this."""
    cls = OPS[op]
    if any(a.default is REQUIRED for a in cls.attrs.values()):
        return None
    return _arity(cls)[0], {role: role for role, p in cls.params.items() if p.required}, {}


EXAMPLES = {op: VALID.get(op) or derived_example(op) for op in OPS}


def graph_of(op, attrs=None, params=None, drop=None):
    n, default_params, default_attrs = EXAMPLES[op]
    attrs = dict(default_attrs if attrs is None else attrs)
    if drop:
        del attrs[drop]
    node = {"name": "layer\nx", "op": op, "inputs": [f"v{i}" for i in range(n)],
            "outputs": ["y"], "params": default_params if params is None else params,
            "attrs": attrs}
    return {"inputs": [f"v{i}" for i in range(max(n, 1))], "outputs": ["y"], "nodes": [node]}


def assert_refused(graph, *fragments):
    with pytest.raises(ModelFileError) as e:
        parse_graph(graph, OPS)
    message = str(e.value)
    assert "\n" not in message, message
    assert "'layer\\nx'" in message, message           # the name quoted, newline escaped
    for frag in fragments:
        assert frag in message, (frag, message)


def test_every_op_declares_its_schema():
    """Every registered op: its schema, and a valid node to check it with (VALID's, or one
    derived from the schema when every attribute has a default)."""
    assert set(VALID) <= set(OPS)
    for name, op in OPS.items():
        assert isinstance(op.attrs, dict) and isinstance(op.params, dict), name
        assert EXAMPLES[name] is not None, f"{name}: give VALID an example node"


@pytest.mark.parametrize("op", sorted(op for op in VALID if derived_example(op)))
def test_derived_example_parses(op, monkeypatch):
    """The derivation EXAMPLES uses for ops VALID leaves out, on the ops it lists."""
    monkeypatch.setitem(EXAMPLES, op, derived_example(op))
    assert parse_graph(graph_of(op), OPS).nodes[0].op == op


@pytest.mark.parametrize("op", sorted(OPS))
def test_valid_attrs_parse(op):
    node = parse_graph(graph_of(op), OPS).nodes[0]
    assert set(node.attrs) == set(OPS[op].attrs)              # defaults filled in


@pytest.mark.parametrize("op, attr, value", [(op, a, v) for op, cases in BAD.items()
                                             for a, v in cases])
def test_wrong_attribute_refused(op, attr, value):
    attrs = dict(VALID[op][2], **{attr: value})
    assert_refused(graph_of(op, attrs), f"({op})", repr(attr))


@pytest.mark.parametrize("op, attr", [("max_pool2d", "kernel"),
                                      ("adaptive_avg_pool2d", "output_size"),
                                      ("self_attention", "num_heads")])
def test_required_attribute_missing(op, attr):
    assert_refused(graph_of(op, drop=attr), f"attribute {attr!r} is missing")


def test_pair_given_as_one_int_and_defaults():
    node = parse_graph(graph_of("max_pool2d", {"kernel": 3}), OPS).nodes[0]
    assert node.attrs == {"kernel": (3, 3), "stride": None, "padding": (0, 0)}
    conv = parse_graph(graph_of("conv2d", {}), OPS).nodes[0]
    assert conv.attrs == {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}


@pytest.mark.parametrize("op, params, fragment", [
    ("conv2d", {}, "needs param 'weight'"),
    ("conv2d", {"weight": "w", "scale": "s"}, "unknown param 'scale'"),
    ("batch_norm", {"weight": "w", "bias": "b", "running_mean": "m"},
     "needs param 'running_var'"),
    ("layer_norm", {"weight": "w"}, "needs param 'bias'"),
    ("relu", {"weight": "w"}, "unknown param 'weight'"),
    ("prepend_token", {"weight": "w"}, "unknown param 'weight'"),
])
def test_param_roles_checked(op, params, fragment):
    assert_refused(graph_of(op, params=params), fragment)


def test_only_conv_and_linear_weights_may_be_pruned():
    conv = parse_graph(graph_of("conv2d", params={"weight": "w", "bias": "b"}), OPS).nodes[0]
    assert conv.prunable == ("w",)
    bn = parse_graph(graph_of("batch_norm"), OPS).nodes[0]
    assert bn.prunable == ()
