"""The command-line tools (tools/prune.py, export.py, make_digits_model.py, accuracy_table.py, and
the benchmark's paper_bench.py, bench_report.py, junit_figures.py, lt_algos.py,
attention_layouts.py, csr_memory_probe.py, implicit_conv_bench.py, conv_models_bench.py,
implicit_conv_ncu.py) on bad input: exactly one line `error: ...` on stderr, exit code 2, no
traceback, and nothing left in the output directory. Cases tests/test_patterns.py and
tests/test_parity_cnn.py already run are not repeated here. Each case is a fresh interpreter
(about 1.5 s: torch's import); the checkpoints are a CIFAR ResNet-18 and a 2-layer BERT of
hidden size 32."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from conftest import HAS_GPU, ROOT, TOOLS

PROC_DIR = "/proc"                 # a directory no file can be made in, even by root


# -- fixtures and helpers ----------------------------------------------------------------------
def _bert():
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, vocab_size=100)
    return config, BertForSequenceClassification(config).state_dict()


QUERY = "bert.encoder.layer.0.attention.self.query.weight"      # a prunable weight


def _quantized(t):
    with warnings.catch_warnings():                 # quantized tensors are deprecated in torch
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(t, 0.1, 0, torch.qint8)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """{name: path} of the inputs, in a directory of their own."""
    from archs import build
    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    torch.save(build("resnet18", 10, "cifar").state_dict(), d / "resnet18.pt")
    config, sd = _bert()
    torch.save(sd, d / "bert.pt")
    config.to_json_file(d / "bert.json")
    variants = {
        "sparse": lambda t: t.to_sparse(),
        "meta": lambda t: torch.empty(t.shape, device="meta"),
        "quantized": _quantized,
        "nan": lambda t: torch.full_like(t, float("nan")),
    }
    for name, change in variants.items():
        torch.save({**sd, QUERY: change(sd[QUERY])}, d / f"bert_{name}.pt")
    torch.save([torch.zeros(2)], d / "list.pt")
    torch.save(torch.zeros(2, 2), d / "tensor.pt")
    (d / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 50)
    (d / "bad.json").write_text("{not json")
    (d / "list.json").write_text("[1, 2]")
    np.save(d / "array.npy", np.ones(3, np.float32))
    inputs = {p.name.replace(".pt", "").replace(".", "_"): str(p) for p in d.iterdir()}
    return {**inputs, "dir": str(d)}


def run_tool(tool, *args):
    return subprocess.run([sys.executable, os.path.join(TOOLS, tool), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc, text, out_dir):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert text in lines[0], lines[0]
    if out_dir is not None:
        assert os.listdir(out_dir) == [], os.listdir(out_dir)     # no output, no temporary file


def fill(args, ckpts, out_dir):
    """<NAME> (an input: bert, bert_json, ...) and <out> in the arguments -> paths."""
    names = {**{f"<{k}>": v for k, v in ckpts.items()}, "<out>": str(out_dir)}
    for name, path in names.items():
        args = [a.replace(name, path) for a in args]
    return args


def with_defaults(defaults, args):
    """The case's arguments, after each default option the case does not give itself."""
    return [a for k, v in defaults.items() if k not in args for a in (k, v)] + list(args)


# -- tools/prune.py ----------------------------------------------------------------------------
PRUNE = {"--arch": "bert", "--checkpoint": "<bert>", "--pattern": "group", "--out": "<out>/p.pt"}
RESNET = ["--arch", "resnet18", "--checkpoint", "<resnet18>"]


@pytest.mark.parametrize("args,text", [
    # the list, beyond tests/test_patterns.py's cases
    (["--pattern", "group", "--keep=-0.5"], "keep must be a fraction in (0, 1], got -0.5"),
    (["--pattern", "group", "--keep", "nan"], "keep must be a fraction in (0, 1], got nan"),
    (["--pattern", "group", "--keep", "inf"], "keep must be a fraction in (0, 1], got inf"),
    (["--pattern", "group", "--keep", "abc"], "argument --keep: invalid float value: 'abc'"),
    (["--pattern", "vector:0:4"], "N of N:M must be a positive integer, got 0"),
    (["--pattern", "vector:2:0"], "vector size m must be a positive integer, got 0"),
    (["--pattern", "vector:2:-4"], "vector size m must be a positive integer, got -4"),
    (["--pattern", "vector", "--vector-size", "0"], "vector size m must be a positive integer"),
    (["--pattern", "block:0x4"], "block shape must be two positive integers"),
    (["--pattern", "block:3x3"],
     f"layer '{QUERY}': block 3x3 does not divide its F matrix (32x32)"),
    (["--pattern", "vector:2:3"], f"layer '{QUERY}': vector size 3"),
    (["--pattern", "vector:2:4", "--scope", "global"],
     "scope 'global' does not apply to the vector pattern"),
    # checkpoints that are no state dict
    (["--pattern", "group", "--checkpoint", "<dir>"], "no such checkpoint file"),
    (["--pattern", "group", "--checkpoint", "<garbage>"],
     "cannot read the checkpoint (not a torch.save checkpoint)"),
    (["--pattern", "group", "--checkpoint", "<array_npy>"],
     "cannot read the checkpoint (a NumPy .npy file, not a torch.save checkpoint)"),
    (["--pattern", "group", "--checkpoint", "<list>"], "list.pt: not a state dict"),
    (["--pattern", "group", "--checkpoint", "<tensor>"], "tensor.pt: not a state dict"),
    # the config of a .safetensors output
    (["--pattern", "group", "--config", "<dir>/none.json", "--out", "<out>/p.safetensors"],
     "none.json: cannot read the config"),
    (["--pattern", "group", "--config", "<bad_json>", "--out", "<out>/p.safetensors"],
     "bad.json: not a JSON config"),
    (["--pattern", "group", "--config", "<list_json>", "--out", "<out>/p.safetensors"],
     "list.json: not a JSON config object"),
    # --out and --layers
    (["--pattern", "group", "--out", "<out>/p.npz"], "must end in .pt, .pth or .safetensors"),
    (["--pattern", "group", "--out", "<out>"], "must end in .pt, .pth or .safetensors"),
    (["--pattern", "group", "--out", "<out>/no-dir/p.pt"], "does not exist"),
    (["--pattern", "group", "--layers", "[a-"], "is not a valid regular expression"),
    (["--pattern", "group", "--layers", "classifier"], "matches none of the 13 prunable"),
])
def test_prune_bad_input(args, text, ckpts, tmp_path):
    proc = run_tool("prune.py", *fill(with_defaults(PRUNE, args), ckpts, tmp_path))
    assert_one_line_error(proc, text, tmp_path)


# gaps found in the audit, each fixed in tools/
@pytest.mark.parametrize("args,text", [
    # a CNN's --num-classes of 0 fell back silently to the default, a negative one crashed
    (RESNET + ["--num-classes", "0"], "argument --num-classes: must be a positive integer"),
    (RESNET + ["--num-classes", "-3"], "argument --num-classes: must be a positive integer"),
    # vit/bert checkpoints were not checked at all for a .pt output
    (["--arch", "bert", "--checkpoint", "<resnet18>"],
     "does not fit BertForSequenceClassification (key names; give --config to check shapes "
     "too): missing key 'bert.embeddings.word_embeddings.weight' (and the arch has no key "
     "'conv1.weight')"),
    (["--arch", "vit", "--checkpoint", "<bert>"],
     "missing key 'vit.embeddings.patch_embeddings.projection.weight'"),
    # ... and with --config only after pruning, so that a pruning error could hide the key
    (["--arch", "bert", "--checkpoint", "<resnet18>", "--config", "<bert_json>",
      "--pattern", "block:3x3", "--out", "<out>/p.safetensors"],
     "missing key 'bert.embeddings.word_embeddings.weight'"),
    # --variant was silently ignored for vit/bert
    (["--variant", "imagenet"], "--variant is for the CNNs, not bert"),
    # tensors that are not dense data crashed in the conversion to NumPy
    (["--arch", "bert", "--checkpoint", "<bert_sparse>"],
     f"entry '{QUERY}' is a torch.sparse_coo tensor, not a dense one"),
    (["--arch", "bert", "--checkpoint", "<bert_meta>"], f"entry '{QUERY}' is a meta tensor"),
    (["--arch", "bert", "--checkpoint", "<bert_quantized>"],
     f"entry '{QUERY}' is quantized (torch.qint8)"),
    # NaN weights were ranked as the largest and pruned into a NaN model
    (["--arch", "bert", "--checkpoint", "<bert_nan>"],
     f"layer '{QUERY}': 1024 of its 1024 weights are NaN or Inf"),
])
def test_prune_gaps(args, text, ckpts, tmp_path):
    proc = run_tool("prune.py", *fill(with_defaults(PRUNE, args), ckpts, tmp_path))
    assert_one_line_error(proc, text, tmp_path)


def test_prune_save_failure_leaves_nothing(tmp_path, monkeypatch):
    """A write that fails half way (disk full: torch raises RuntimeError) is a UsageError and
    removes its temporary file; it used to escape with a traceback."""
    import prune

    def failing_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0\nmore")
    monkeypatch.setattr(prune.torch, "save", failing_save)
    with pytest.raises(prune.UsageError, match=r"cannot write .*p\.pt: PytorchStreamWriter"):
        prune.save_atomic({"w": torch.zeros(2)}, str(tmp_path / "p.pt"))
    assert os.listdir(tmp_path) == []
    with pytest.raises(prune.UsageError, match="cannot write"):
        prune.save_atomic({"w": torch.zeros(2)}, str(tmp_path / "no-dir" / "p.pt"))


@pytest.mark.parametrize("pattern", ["element", "block", "group"])
def test_prune_global_scope_works_for_every_other_pattern(pattern, ckpts, tmp_path):
    """The positive side of --scope global (vector is refused above): a complete output."""
    args = with_defaults(PRUNE, ["--pattern", pattern, "--scope", "global", "--keep", "0.5"])
    proc = run_tool("prune.py", *fill(args, ckpts, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(tmp_path) == ["p.pt"]
    masks = {k: v for k, v in torch.load(tmp_path / "p.pt").items() if k.endswith("_mask")}
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert len(masks) == 13 and abs(kept - 0.5) < 0.05


# -- tools/export.py ---------------------------------------------------------------------------
EXPORT = {"--arch": "bert", "--checkpoint": "<bert>", "--config": "<bert_json>",
          "--out": "<out>/m.safetensors"}


@pytest.mark.parametrize("args,text", [
    # a model file named anything was written
    (["--out", "<out>/m.pt"], "a model file must end in .safetensors"),
    (["--out", "<out>/m"], "a model file must end in .safetensors"),
    # --variant was silently ignored for vit/bert
    (["--variant", "cifar"], "--variant is for the CNNs, not bert"),
    # tensors that are not dense data crashed in the conversion to NumPy
    (["--checkpoint", "<bert_sparse>"], "is a torch.sparse_coo tensor, not a dense one"),
    (["--checkpoint", "<bert_meta>"], "is a meta tensor: it holds no data"),
    (["--checkpoint", "<bert_quantized>"], "is quantized (torch.qint8)"),
    # not gaps, but on the audit's list and not yet run anywhere
    (["--checkpoint", "<list>"], "list.pt: not a state dict"),
    (["--checkpoint", "<tensor>"], "tensor.pt: not a state dict"),
    (["--checkpoint", "<dir>"], "no such checkpoint file"),
    (["--config", "<bad_json>"], "bad.json: not a JSON config"),
    (["--config", "<list_json>"], "list.json: not a JSON config object"),
    (["--arch", "vit"], "model_type is 'bert', not 'vit'"),
])
def test_export_bad_input(args, text, ckpts, tmp_path):
    proc = run_tool("export.py", *fill(with_defaults(EXPORT, args), ckpts, tmp_path))
    assert_one_line_error(proc, text, tmp_path)


@pytest.mark.skipif(not os.path.isdir(PROC_DIR), reason="needs Linux's /proc")
@pytest.mark.parametrize("tool,defaults,out", [("prune.py", PRUNE, "p.pt"),
                                               ("export.py", EXPORT, "m.safetensors")])
def test_out_where_no_file_can_be_made(tool, defaults, out, ckpts, tmp_path):
    """os.access says yes to root: the check tries for real (it used to end in a traceback)."""
    args = with_defaults(defaults, ["--out", f"{PROC_DIR}/{out}"])
    proc = run_tool(tool, *fill(args, ckpts, tmp_path))
    assert_one_line_error(proc, f"directory {PROC_DIR} is not writable", None)


# -- tools/make_digits_model.py, tools/accuracy_table.py ----------------------------------------
# argparse printed a usage block and `prog: error: ...`; bad seeds and epochs, and an --out that
# could not be written, failed only after the training (a traceback), or not at all
@pytest.mark.parametrize("args,text", [
    (["--keep", "0"], "--keep 0.0: the kept fraction must lie in (0, 1]"),
    (["--keep", "nan"], "--keep nan: the kept fraction must lie in (0, 1]"),
    (["--keep", "abc"], "argument --keep: invalid float value: 'abc'"),
    (["--seed", "-1"], "argument --seed: must be an integer in [0, 4294967296)"),
    (["--epochs", "-1"], "argument --epochs: must be a non-negative integer"),
    (["--finetune-epochs", "x"], "argument --finetune-epochs: must be a non-negative integer"),
    (["--out", "<out>/m.pt"], "a model file must end in .safetensors"),
    (["--out", "<out>/no-dir/m.safetensors"], "does not exist"),
    (["--out", "<out>/d.safetensors"], "d.safetensors is a directory"),
    (["--out", "<out>/m.safetensors", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_make_digits_model_bad_input(args, text, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if "<out>/d.safetensors" in args:
        (out_dir / "d.safetensors").mkdir()
    argv = fill(args if "--out" in args else args + ["--out", "<out>/m.safetensors"], {}, out_dir)
    proc = run_tool("make_digits_model.py", *argv)
    assert_one_line_error(proc, text, None)
    assert os.listdir(out_dir) == (["d.safetensors"] if "d.safetensors" in text else [])


@pytest.mark.parametrize("args,text", [
    (["--quick"], "--quick needs --out-dir"),
    (["--quick", "--out-dir", "<out>", "--keep", "0.1"], "kept fractions must lie in [0.25, 1]"),
    (["--quick", "--out-dir", "<out>", "--seeds", "-1"], "argument --seeds: must be an integer"),
    (["--quick", "--out-dir", "<out>", "--split-seed", str(2 ** 32)],
     "argument --split-seed: must be an integer in [0, 4294967296)"),
    (["--quick", "--out-dir", "<out>", "--epochs", "-2"], "must be a non-negative integer"),
    (["--quick", "--out-dir", "<out>", "--patterns", "stripes"], "invalid choice: 'stripes'"),
    (["--quick", "--out-dir", "<out>/file.txt"], "file.txt is not a directory"),
    (["--quick", "--out-dir", "<out>/file.txt/sub"], "file.txt is not a directory"),
])
def test_accuracy_table_bad_input(args, text, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    proc = run_tool("accuracy_table.py", *fill(args, {}, tmp_path))
    assert_one_line_error(proc, text, None)
    assert os.listdir(tmp_path) == ["file.txt"]


@pytest.mark.skipif(not os.path.isdir(PROC_DIR), reason="needs Linux's /proc")
@pytest.mark.parametrize("tool,args", [
    ("make_digits_model.py", ["--out", f"{PROC_DIR}/m.safetensors"]),
    ("accuracy_table.py", ["--quick", "--out-dir", f"{PROC_DIR}/acc"]),
])
def test_digits_tools_refuse_an_unwritable_output_before_training(tool, args):
    assert_one_line_error(run_tool(tool, *args), f"directory {PROC_DIR} is not writable", None)


# -- the benchmark and its report tools (tools/paper_bench.py, bench_report.py, junit_figures.py)
RESULTS_SCHEMA = "cupyprune.paper_bench/1"


@pytest.fixture
def bench_inputs(tmp_path):
    """Inputs the benchmark tools must refuse, in a folder of their own."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "text.json").write_text("{not json")
    (d / "other.json").write_text('{"schema": "something else", "sections": {}}')
    for name, sections in (("unknown", {"nope": []}), ("nolist", {"models": {}}),
                           ("nofield", {"compile": [{"model": "m"}]}),
                           ("textms", {"layers": [{"layer": "l", "median_ms": "fast"}]})):
        (d / f"{name}.json").write_text(json.dumps({"schema": RESULTS_SCHEMA,
                                                    "sections": sections}))
    (d / "listenv.json").write_text(json.dumps({"schema": RESULTS_SCHEMA, "environment": [1],
                                                "sections": {}}))
    (d / "bad.xml").write_text("<testsuite")
    return {"in": str(d)}


PB, LT, AL, CM = ("paper_bench.py", "lt_algos.py", "attention_layouts.py",
                  "csr_memory_probe.py")
IC, CB, NC = "implicit_conv_bench.py", "conv_models_bench.py", "implicit_conv_ncu.py"


@pytest.mark.parametrize("tool,args,text", [
    (PB, ["--preset", "nope", "--out", "<out>/r.json"], "invalid choice: 'nope'"),
    (PB, ["--preset", "cnn"], "--out is required"),
    (PB, ["--out", "<out>/r.json"], "--preset is required"),
    (PB, ["--preset", "cnn", "--out", "<out>/no-dir/r.json"], "does not exist"),
    (PB, ["--preset", "cnn", "--out", "<in>/text.json"], "text.json is not JSON"),
    (PB, ["--preset", "cnn", "--out", "<in>/other.json"],
     "is not a cupyprune.paper_bench/1 results"),
    (PB, ["--preset", "cnn", "--precisions", "bf16", "--out", "<out>/r.json"],
     "--precisions: bf16 not in fp32, fp16"),
    (PB, ["--preset", "compile", "--precisions", "fp8", "--out", "<out>/r.json"],
     "--precisions: fp8 not in fp32, fp16, bf16"),
    (PB, ["--preset", "convs", "--precisions", "bf16", "--out", "<out>/r.json"],
     "--precisions: bf16 not in fp32, tf32, fp16"),
    (PB, ["--preset", "convs", "--keeps", "0.33", "--out", "<out>/r.json"],
     "--keeps: 0.33 not in 0.1, 0.2, 0.25"),
    (PB, ["--preset", "cnn", "--keeps", "0.5", "--out", "<out>/r.json"],
     "--keeps is for the layer presets"),
    (PB, ["--preset", "cnn", "--patterns", "grp", "--out", "<out>/r.json"],
     "--patterns: grp not in"),
    (PB, ["--preset", "layers", "--model", "vgg", "--out", "<out>/r.json"],
     "--model is for the model presets"),
    (PB, ["--preset", "cnn", "--model", "vgg", "--out", "<out>/r.json"], "--model: vgg not in"),
    (PB, ["--preset", "cnn", "--max-minutes", "0", "--out", "<out>/r.json"],
     "argument --max-minutes: must be a positive number, got '0'"),
    (PB, ["--merge", "<in>/missing.json", "--out", "<out>/m.json"], "cannot read"),
    (PB, ["--merge", "<in>/unknown.json", "--out", "<out>/m.json"], "unknown section 'nope'"),
    (PB, ["--merge", "<in>/nolist.json", "--out", "<out>/m.json"], "'models' must be a list"),
    (LT, [], "--out is required"),
    (LT, ["--out", "<out>/no-dir/r.json"], "does not exist"),
    (LT, ["--out", "<out>"], "is a directory"),
    (LT, ["--out", "r.json", "--keep", "1"], "unrecognized arguments: --keep 1"),
    (AL, [], "--out is required"),
    (AL, ["--out", "<out>/no-dir/r.json"], "does not exist"),
    (AL, ["--out", "<out>"], "is a directory"),
    (CM, [], "--out is required"),
    (CM, ["--out", "<out>/no-dir/r.json"], "does not exist"),
    (IC, [], "--out is required"),
    (IC, ["--out", "<out>"], "is a directory"),
    (IC, ["--out", "<out>/r.json", "--precision", "fp8"], "invalid choice: 'fp8'"),
    (CB, [], "--out is required"),
    (CB, ["--out", "<out>/no-dir/r.json"], "does not exist"),
    (CB, ["--out", "<out>/r.json", "--models", "alexnet@224x32"], "unknown arch 'alexnet'"),
    (CB, ["--out", "<out>/r.json", "--models", "resnet18@224"], "is not ARCH@SIZExBATCH"),
    (CB, ["--out", "<out>/r.json", "--models", "resnet18@16x8"], "needs a size of at least 32"),
    (CB, ["--out", "<out>/r.json", "--keeps", "0.5,1"], "is not a list of fractions in (0, 1)"),
    (CB, ["--out", "<out>/r.json", "--max-minutes", "-1"],
     "argument --max-minutes: must be a positive number, got '-1'"),
])
def test_bench_tools_bad_input(tool, args, text, bench_inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(run_tool(tool, *fill(args, bench_inputs, out)), text, out)


@pytest.mark.parametrize("args,text", [
    ([], "the following arguments are required: --tile"),
    (["--tile", "nope"], "unknown tile 'nope'; known: 128x128x32s3w8"),
    (["--tile", "wg256x128x64s4", "--keep", "2"], "--keep: must be a fraction in (0, 1]"),
    (["--tile", "wg256x128x64s4", "--plan", "most"], "invalid choice: 'most'"),
    (["--tile", "wg256x128x64s4", "--calls", "0"], "--calls"),
])
def test_profiler_target_bad_input(args, text, tmp_path):
    assert_one_line_error(run_tool(NC, *args), text, tmp_path)


@pytest.mark.skipif(HAS_GPU, reason="on a GPU machine it would run")
def test_profiler_target_without_a_gpu_is_one_line(tmp_path):
    assert_one_line_error(run_tool(NC, "--tile", "wg256x128x64s4"),
                          "implicit_conv_ncu needs CuPy and a CUDA GPU", tmp_path)


@pytest.mark.skipif(HAS_GPU, reason="on a GPU machine they would run")
@pytest.mark.parametrize("tool,args", [(PB, ["--preset", "quick"]), (LT, []), (AL, []), (CM, []),
                                       (IC, []), (CB, [])])
def test_bench_tools_without_a_gpu_are_one_line(tool, args, tmp_path):
    proc = run_tool(tool, *args, "--out", tmp_path / "r.json")
    assert_one_line_error(proc, f"{tool[:-3]} needs CuPy and a CUDA GPU", tmp_path)


@pytest.mark.parametrize("args,text", [
    (["<in>/missing.json"], "cannot read"),
    (["<in>/text.json"], "is not JSON"),
    (["<in>/unknown.json"], "unknown section 'nope'"),
    (["<in>/nofield.json"], "a results cell lacks the field"),
    (["<in>/textms.json"], "section 'layers': median_ms is 'fast', not a number"),
    (["<in>/listenv.json"], "'environment' must be a JSON object"),
    (["<in>/nolist.json", "--out", "<out>/no-dir/r.md"], "does not exist"),
    (["<in>/nolist.json", "--out", "<out>"], "is a directory"),
    (["--out", "<out>/r.md"], "the following arguments are required: results"),
    (["<in>/nolist.json", "--out", "<out>/r.md", "--plots", "<in>/text.json"],
     "text.json is a file: it names the folder for the plots"),
])
def test_bench_report_bad_input(args, text, bench_inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    argv = fill(args if "--out" in args else args + ["--out", "<out>/r.md"], bench_inputs, out)
    assert_one_line_error(run_tool("bench_report.py", *argv), text, out)


@pytest.mark.parametrize("args,text", [
    (["<in>/missing.xml"], "missing.xml: No such file"),
    (["<in>/bad.xml"], "bad.xml is not junit XML"),
    (["<in>/bad.xml", "--out", "<out>/no-dir/f.md"], "does not exist"),
    (["<in>/bad.xml", "--out", ""], "--out: empty path"),
    ([], "the following arguments are required: junit"),
])
def test_junit_figures_bad_input(args, text, bench_inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(run_tool("junit_figures.py", *fill(args, bench_inputs, out)), text, out)
