"""`cupyprune export` from the command line: what a user types, and every refusal as one line
`error: ...`, exit code 2 and no file left."""
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from cupyprune.cli.main import cli  # noqa: E402
from cupyprune.export.torchlib import INSTALL_HINT  # noqa: E402


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def refused(result, out, *words):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in lines[-1], lines[-1]
    assert not out.exists()
    assert not list(out.parent.glob(".cupyprune-*"))        # no temporary file either


def test_imagenet_state_dict_just_works(tmp_path, rng):
    """A torchvision ResNet-18 state dict (ImageNet head) exports by name with no options, and
    infer runs the file."""
    import torchvision
    from export_zoo import randomize
    ckpt = tmp_path / "resnet18.pt"
    torch.save(randomize(torchvision.models.resnet18(), 1).state_dict(), ckpt)
    out = tmp_path / "r18.safetensors"
    result = run("export", "--torchvision", "resnet18", "--checkpoint", ckpt, "--out", out)
    assert result.exit_code == 0, result.output
    assert "max relative error" in result.output
    result = run("infer", out, "--device", "cpu", "--top-k", "1")
    assert result.exit_code == 0, result.output


def test_wrong_checkpoint_names_the_key(tmp_path):
    import torchvision
    ckpt = tmp_path / "ten.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), ckpt)
    out = tmp_path / "m.safetensors"
    refused(run("export", "--torchvision", "resnet18", "--checkpoint", ckpt, "--out", out), out,
            "'fc.weight'", "num_classes")


def test_unknown_torchvision_name(tmp_path):
    out = tmp_path / "m.safetensors"
    refused(run("export", "--torchvision", "resnet19", "--out", out), out, "resnet19",
            "resnet18")


def test_hf_folder_without_config_or_safetensors(tmp_path):
    out = tmp_path / "m.safetensors"
    refused(run("export", "--hf", tmp_path, "--out", out), out, "config.json")
    (tmp_path / "config.json").write_text('{"architectures": ["BertModel"]}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    refused(run("export", "--hf", tmp_path, "--out", out), out, "pytorch_model.bin", "pickle")


def _factory_module(tmp_path, monkeypatch, body):
    (tmp_path / "usermodels.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("usermodels", None)


def test_unsupported_op_names_module_and_op(tmp_path, monkeypatch):
    _factory_module(tmp_path, monkeypatch, """
        import torch
        class Sorter(torch.nn.Module):
            def forward(self, x):
                return torch.sort(x, dim=-1).values
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(8, 8)
                self.block = Sorter()
            def forward(self, x):
                return self.block(self.fc(x))
        def build():
            return Net()
        """)
    out = tmp_path / "m.safetensors"
    refused(run("export", "--module", "usermodels:build", "--input-shape", "2,8", "--out", out),
            out, "block: aten.sort", "not supported")


def test_data_dependent_control_flow(tmp_path, monkeypatch):
    _factory_module(tmp_path, monkeypatch, """
        import torch
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(8, 8)
            def forward(self, x):
                y = self.fc(x)
                if y.sum() > 0:
                    return y * 2
                return y
        def build():
            return Net()
        """)
    out = tmp_path / "m.safetensors"
    refused(run("export", "--module", "usermodels:build", "--input-shape", "2,8", "--out", out),
            out, "torch.export could not trace")


def test_module_export_and_missing_shape(tmp_path, monkeypatch):
    _factory_module(tmp_path, monkeypatch, """
        import torch
        def build():
            return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.SiLU(),
                                       torch.nn.Linear(16, 4), torch.nn.Softmax(dim=-1))
        """)
    out = tmp_path / "m.safetensors"
    refused(run("export", "--module", "usermodels:build", "--out", out), out, "--input-shape")
    result = run("export", "--module", "usermodels:build", "--input-shape", "2,8", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_verification_above_tolerance_leaves_nothing(tmp_path):
    out = tmp_path / "m.safetensors"
    refused(run("export", "--torchvision", "resnet18", "--image-size", "32", "--tolerance",
                "1e-15", "--out", out), out, "verification failed", "--no-verify")


def test_bad_options(tmp_path):
    out = tmp_path / "m.txt"
    refused(run("export", "--torchvision", "resnet18", "--out", out), out, ".safetensors")
    out = tmp_path / "m.safetensors"
    refused(run("export", "--out", out), out, "exactly one of")
    refused(run("export", "--torchvision", "resnet18", "--hf", tmp_path, "--out", out), out,
            "exactly one of")


def test_without_torch_one_line(tmp_path):
    """With torch not importable: one line naming the extra to install."""
    out = tmp_path / "m.safetensors"
    script = ("import sys; sys.modules['torch'] = None; "
              "from cupyprune.cli.main import cli; cli()")
    proc = subprocess.run([sys.executable, "-c", script, "export", "--torchvision", "resnet18",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {INSTALL_HINT}"
    assert not out.exists()


def test_prune_while_exporting(tmp_path, rng):
    """--prune group: the file's pruned layers run compacted, and it still matches the module it
    was verified against (the export's own check); a bad pattern is one line."""
    import cupyprune
    out = tmp_path / "r18.safetensors"
    result = run("export", "--torchvision", "resnet18", "--image-size", "32", "--prune",
                 "group", "--keep", "0.5", "--out", out)
    assert result.exit_code == 0, result.output
    model = cupyprune.load(str(out), device="cpu")
    paths = [s.op.describe()["path"] for s in model.layers()]
    assert paths[0] == "dense" and paths[-1] == "dense"        # stem and classifier
    assert paths.count("group") == len(paths) - 2
    bad = tmp_path / "bad.safetensors"
    refused(run("export", "--torchvision", "resnet18", "--prune", "vec:2", "--out", bad), bad,
            "invalid choice: 'vec:2'")
