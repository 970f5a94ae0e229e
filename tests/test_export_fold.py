"""Constant folding at export (cupyprune/export/fold.py): calls that read no graph input are run
once with torch and written as tensors, in-place ones on the functionalised program; the written
file, run with NumPy on fresh inputs, equals the module."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cupyprune  # noqa: E402
from cupyprune.export import export_module  # noqa: E402
from cupyprune.format import read_model_file  # noqa: E402


class RegionMask(torch.nn.Module):
    """Swin's pattern: a mask built in place, region by region, from zeros shaped like nothing
    the input decides (new_zeros reads only the input's dtype), then added to the scores."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 6)

    def forward(self, x):                                          # x (N, 6, 6)
        mask = x.new_zeros((6, 6))
        count = 0
        for rows in (slice(0, 2), slice(2, None)):
            for cols in (slice(0, 3), slice(3, None)):
                mask[rows, cols] = count
                count += 1
        mask = (mask.unsqueeze(0) - mask.unsqueeze(1)).sum(0)      # (6, 6)
        mask = mask.masked_fill(mask != 0, -10.0)
        return torch.softmax(self.proj(x) + mask, dim=-1)


class BufferTable(torch.nn.Module):
    """A table computed from a buffer (no input): folded; the input's own arithmetic is not."""

    def __init__(self):
        super().__init__()
        self.register_buffer("index", torch.tensor([[2, 0], [1, 3]]))
        self.table = torch.nn.Parameter(torch.randn(4, 5))

    def forward(self, x):                                          # x (N, 2, 2, 5)
        bias = self.table[self.index].permute(2, 0, 1)             # (5, 2, 2)
        return x * 2 + bias.permute(1, 2, 0)


@pytest.mark.parametrize("module_cls,shape", [(RegionMask, (1, 6, 6)), (BufferTable, (1, 2, 2, 5))])
def test_folded_module_equals_torch(module_cls, shape, tmp_path, rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = module_cls().eval()
    path = str(tmp_path / "m.safetensors")
    export_module(module, torch.randn(*shape), path)
    graph = read_model_file(path).graph
    ops = {n["op"] for n in graph["nodes"]}
    assert "constant" in ops                                       # the folded value, as a tensor
    x = rng.standard_normal((3,) + shape[1:]).astype(np.float32)   # a batch the trace never saw
    with torch.no_grad():
        want = module(torch.from_numpy(x)).double().numpy()
    got = cupyprune.load(path, device="cpu")(x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_only_calls_free_of_inputs_are_folded(tmp_path, rng):
    """BufferTable's x * 2 and the add stay in the graph; the gather from the buffer does not."""
    path = str(tmp_path / "m.safetensors")
    export_module(BufferTable().eval(), torch.randn(1, 2, 2, 5), path)
    graph = read_model_file(path).graph
    ops = [n["op"] for n in graph["nodes"]]
    assert "index" not in ops and "mul" in ops, ops


def test_functionalised_only_where_an_in_place_call_has_no_converter():
    from cupyprune.export.mutation import functional
    from cupyprune.export.lower import CONVERTERS
    from cupyprune.export.trace import trace
    program = trace(BufferTable().eval(), {"x": torch.randn(1, 2, 2, 5)})
    assert functional(program, CONVERTERS) is program
    program = trace(RegionMask().eval(), {"x": torch.randn(1, 6, 6)})
    targets = {str(n.target) for n in functional(program, CONVERTERS).graph.nodes}
    assert "aten.fill_.Tensor" in {str(n.target) for n in program.graph.nodes}
    assert not any(t.endswith("_.Tensor") for t in targets)


class InPlace(torch.nn.Module):
    """An in-place activation whose result is what later calls read (torch.export hands them
    the in-place call's output), beside a value computed before it."""

    def __init__(self, view_before=False):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.view_before = view_before

    def forward(self, x):                                          # x (N, 4)
        a = self.fc(x)
        before = a[:, :2] if self.view_before else a * 2           # a view sees the write
        a.sigmoid_()
        return before * 3 if self.view_before else a + before


def test_in_place_calls_export_as_their_functional_forms(tmp_path, rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = InPlace().eval()
    path = str(tmp_path / "m.safetensors")
    export_module(module, torch.randn(1, 4), path)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).double().numpy()
    got = cupyprune.load(path, device="cpu")(x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("no_verify", [False, True])
def test_a_view_read_after_an_in_place_write_sees_the_write(tmp_path, rng, no_verify):
    """The runtime's values do not alias: where a view taken before an in-place call is read
    after it, the program is functionalised first, so the file gives the module's output even
    unverified."""
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = InPlace(view_before=True).eval()
    path = str(tmp_path / "m.safetensors")
    export_module(module, torch.randn(1, 4), path, verify=not no_verify)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).double().numpy()
    got = cupyprune.load(path, device="cpu")(x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


class BaseReadAfterViewWrite(torch.nn.Module):
    def forward(self, x):                                          # x (N, 4)
        a = x * 2
        a[:, :2].sigmoid_()                                        # writes a through a view
        return a * 3


def test_a_base_read_after_a_write_through_its_view_is_functionalised():
    from cupyprune.export.lower import CONVERTERS
    from cupyprune.export.mutation import functional
    from cupyprune.export.trace import trace
    program = trace(BaseReadAfterViewWrite(), {"x": torch.randn(2, 4)})
    assert "aten.sigmoid_.default" in CONVERTERS
    targets = {str(n.target) for n in functional(program, CONVERTERS).graph.nodes}
    assert "aten.sigmoid_.default" not in targets and "aten.sigmoid.default" in targets


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_in_place_activations_keep_the_traced_graph(name):
    """torchvision's ReLU(inplace=True) and ReLU6(inplace=True): later calls read the in-place
    call's output only, so nothing is functionalised."""
    torchvision = pytest.importorskip("torchvision")
    from cupyprune.export.lower import CONVERTERS
    from cupyprune.export.mutation import functional
    from cupyprune.export.trace import trace
    program = trace(getattr(torchvision.models, name)(weights=None).eval(),
                    {"x": torch.randn(1, 3, 32, 32)})
    assert any(str(n.target).endswith("_.default") for n in program.graph.nodes)
    assert functional(program, CONVERTERS) is program
