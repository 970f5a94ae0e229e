"""The CLI on a tiny model: infer's outputs equal torch's, inspect's table, the Python API."""
import numpy as np
import pytest
from click.testing import CliRunner

import cupyprune
from conftest import rel_err
from cupyprune.cli.main import cli
from tiny_models import torch_reference, write_tiny


@pytest.fixture
def tiny(rng, tmp_path):
    p = tmp_path / "tiny.safetensors"
    tensors = write_tiny(p, rng, labels=["ant", "bee", "cat", "dog", "eel"])
    return p, tensors


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", ["auto", "dense", "group", "csr"])
def test_infer_output_matches_torch(rng, tmp_path, tiny, path):
    p, tensors = tiny
    x = rng.standard_normal((3, 3, 9, 9)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = invoke("infer", p, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy",
                 "--device", "cpu", "--path", path, "--top-k", "2")
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (3, 5) and y.dtype == np.float32
    assert rel_err(y, torch_reference(tensors, x)) <= 1e-5
    assert "latency:" in out and "top-2" in out
    labels = ["ant", "bee", "cat", "dog", "eel"]
    ranked = np.argsort(-torch_reference(tensors, x), axis=1)           # classes, best first
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [r[1] for r in rows] == [labels[i] for i in ranked[:, 0]]    # the predicted column
    # top-2 column: "label prob | label prob"
    assert [(r[2], r[5]) for r in rows] == [(labels[a], labels[b]) for a, b in ranked[:, :2]]


def test_infer_without_input_uses_sample(tiny, tmp_path):
    from cupyprune.inputs import sample_inputs
    from cupyprune.format import read_model_file
    p, tensors = tiny
    outs = []
    for i in range(2):
        out = invoke("infer", p, "--device", "cpu", "--batch", "2",
                     "--output", tmp_path / f"{i}.npy")
        assert "2 deterministic synthetic inputs" in out
        outs.append(np.load(tmp_path / f"{i}.npy"))
    assert np.array_equal(outs[0], outs[1])                              # deterministic
    x = sample_inputs(read_model_file(str(p)).input_spec, 2)["image"]
    assert np.ptp(x) > 0
    assert rel_err(outs[0], torch_reference(tensors, x)) <= 1e-5


def test_inspect_table(tiny):
    out = invoke("inspect", tiny[0])
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("c ", "fc "))}
    assert "group" in rows["c"] and "+bn" in rows["c"] and "+relu" in rows["c"]
    assert rows["fc"].split()[-1] == "dense"
    assert "prunable parameters: 376" in out


def test_inspect_forced_csr(tiny):
    out = invoke("inspect", tiny[0], "--path", "csr", "--all-ops")
    assert "max_pool2d" in out
    row = next(line for line in out.splitlines() if line.startswith("c "))
    assert row.split()[-1] == "csr"


def test_python_api(rng, tiny):
    p, tensors = tiny
    model = cupyprune.load(p, device="cpu")
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    y = model(x)
    assert isinstance(y, np.ndarray) and y.shape == (2, 5)
    assert rel_err(y, torch_reference(tensors, x)) <= 1e-5
    assert rel_err(model(image=x), y) == 0.0


@pytest.mark.gpu
def test_python_api_gpu(rng, tiny):
    import cupy
    p, tensors = tiny
    model = cupyprune.load(p, device="gpu")
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    y = model(cupy.asarray(x))
    assert isinstance(y, cupy.ndarray)
    assert rel_err(y, torch_reference(tensors, x)) <= 1e-5


@pytest.fixture(scope="module")
def bert_file(tmp_path_factory):
    import torch
    import transformers
    from exporters.hf import export_hf
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, max_position_embeddings=32, num_labels=3,
                                  hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, attn_implementation="eager")
    model = transformers.BertForSequenceClassification(cfg).eval()
    tmp = tmp_path_factory.mktemp("bert")
    cfg.to_json_file(tmp / "config.json")
    export_hf("bert", model.state_dict(), str(tmp / "config.json"), str(tmp / "bert.safetensors"))
    return tmp / "bert.safetensors", model


def test_bert_cli_inputs(rng, tmp_path, bert_file):
    """--input ids.npy (types and mask defaulted) and .npz by name give HF's logits."""
    import torch
    path, hf = bert_file
    ids = rng.integers(0, 100, size=(3, 10))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    np.save(tmp_path / "ids.npy", ids)
    np.savez(tmp_path / "all.npz", input_ids=ids, attention_mask=mask)
    for given, attention in (("ids.npy", np.ones_like(ids)), ("all.npz", mask)):
        invoke("infer", path, "--input", tmp_path / given, "--output", tmp_path / "y.npy",
               "--device", "cpu")
        with torch.no_grad():
            ref = hf(input_ids=torch.from_numpy(ids),
                     attention_mask=torch.from_numpy(attention)).logits.numpy()
        assert rel_err(np.load(tmp_path / "y.npy"), ref) <= 1e-4


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_members_that_fit_only_one_at_a_time(monkeypatch, rng, tmp_path, bert_file, save):
    """np.load reads every member whole: a .npz whose members fit one by one but not together
    is refused from their headers, before any is read; with the memory, the same file runs."""
    from types import SimpleNamespace

    from cupyprune import memory
    from cupyprune.cli import load_input
    from test_bad_input import assert_one_line_error, run_cli
    path, _ = bert_file
    ids = rng.integers(0, 100, size=(3, 10))
    x = tmp_path / "all.npz"
    save(x, input_ids=ids, attention_mask=np.ones_like(ids))
    monkeypatch.setattr(load_input, "memory", SimpleNamespace(         # the --input check's
        available_host_bytes=lambda: 2 * ids.nbytes - 1, size_text=memory.size_text))
    assert_one_line_error(run_cli("infer", path, "--input", x, "--device", "cpu"),
                          f"--input {x}: its arrays do not fit in memory")
    monkeypatch.undo()
    result = run_cli("infer", path, "--input", x, "--device", "cpu")
    assert result.exit_code == 0, result.output


def test_bert_inspect(bert_file):
    out = invoke("inspect", bert_file[0])
    assert "bert.encoder.layer.0.attention.self.query" in out
    assert "prunable parameters" in out
    out = invoke("inspect", bert_file[0], "--all-ops")
    assert "self_attention" in out and "4 heads" in out


def test_bert_bad_token_id(tmp_path, bert_file):
    ids = np.full((1, 5), 7)
    ids[0, 2] = 150
    np.save(tmp_path / "bad.npy", ids)
    result = CliRunner().invoke(cli, ["infer", str(bert_file[0]), "--input",
                                      str(tmp_path / "bad.npy")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "token id 150 is outside [0, 100)" in result.output


def test_batch_norm_after_activation_is_not_folded_across_it(rng, tmp_path):
    """conv -> relu -> batch_norm: the ReLU fuses into the conv, the BN must then run on its own
    (folding it into the conv's weights would move it before the ReLU)."""
    import torch
    import torch.nn.functional as F
    from cupyprune.format import write_model_file
    t = {"c.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
         "bn.weight": rng.standard_normal(4).astype(np.float32),
         "bn.bias": rng.standard_normal(4).astype(np.float32),
         "bn.running_mean": rng.standard_normal(4).astype(np.float32),
         "bn.running_var": (rng.random(4) + 0.5).astype(np.float32)}
    bn = {r: f"bn.{r}" for r in ("weight", "bias", "running_mean", "running_var")}
    graph = {"inputs": ["image"], "outputs": ["y"], "nodes": [
        {"name": "c", "op": "conv2d", "inputs": ["image"], "outputs": ["t0"],
         "params": {"weight": "c.weight"}, "attrs": {"padding": [1, 1]}},
        {"name": "r", "op": "relu", "inputs": ["t0"], "outputs": ["t1"]},
        {"name": "bn", "op": "batch_norm", "inputs": ["t1"], "outputs": ["y"], "params": bn}]}
    spec = [{"name": "image", "shape": [None, 3, 6, 6], "dtype": "float32", "kind": "image"}]
    path = tmp_path / "crb.safetensors"
    write_model_file(str(path), t, graph, spec)
    model = cupyprune.load(path, device="cpu")
    assert model.fused == {"c": "relu"} and model.folded == {}
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    T = {k: torch.from_numpy(v) for k, v in t.items()}
    ref = F.batch_norm(F.relu(F.conv2d(torch.from_numpy(x), T["c.weight"], padding=1)),
                       T["bn.running_mean"], T["bn.running_var"], T["bn.weight"], T["bn.bias"])
    assert rel_err(model(x), ref.numpy()) <= 1e-5


def test_readme_first_command_on_the_shipped_model(monkeypatch):
    """`cupyprune infer weights/digits_group50.safetensors`: the shipped samples, their true
    labels beside the predictions, and the accuracy line, all against torch's forward of the
    file's tensors (test_digits.torch_reference, float64, written with torch.nn.functional)."""
    from safetensors.numpy import load_file
    from test_digits import MODEL, SAMPLE_IMAGES, SAMPLE_LABELS, torch_reference as digits_ref
    monkeypatch.setenv("CUPYPRUNE_DEVICE", "cpu")
    out = invoke("infer", MODEL)
    t = load_file(MODEL)
    truth, want = t[SAMPLE_LABELS], digits_ref(t, t[SAMPLE_IMAGES]).argmax(1)
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [(int(r[1]), int(r[2])) for r in rows] == list(zip(truth.tolist(), want.tolist()))
    right = int((want == truth).sum())
    assert f"accuracy on these inputs: {right}/{len(truth)} " in out
    assert "device:  cpu (NumPy)" in out


def test_image_npz_input_and_block_path(rng, tmp_path, tiny):
    """An image .npz by input name, on the block path (runs dense where the pattern is not
    block-wise): same logits as torch."""
    p, tensors = tiny
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.savez(tmp_path / "x.npz", image=x)
    out = invoke("infer", p, "--input", tmp_path / "x.npz", "--output", tmp_path / "y.npy",
                 "--device", "cpu", "--path", "block")
    assert rel_err(np.load(tmp_path / "y.npy"), torch_reference(tensors, x)) <= 1e-5
    assert "path block" in out


def test_bench_default_paths_and_csv_equal_json(rng, tmp_path, tiny):
    import csv
    import json
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    invoke("bench", tiny[0], "--device", "cpu", "--batch", "2", "--repeat", "2",
           "--json", out_json, "--csv", out_csv)
    cells = json.loads(out_json.read_text())["cells"]
    assert sorted(c["path"] for c in cells) == ["auto", "dense"]       # the defaults
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == len(cells) == 2
    for row, cell in zip(rows, cells):
        assert float(row["median_ms"]) == pytest.approx(cell["median_ms"])
        assert row["path"] == cell["path"]


def test_inspect_columns(tiny):
    """Output shape (batch 1, NCHW), parameters and kept % of the group-masked conv."""
    p, tensors = tiny
    out = invoke("inspect", p)
    row = next(line for line in out.splitlines() if line.startswith("c ")).split()
    mask = tensors["c.weight.mask"]
    assert f"{int(mask.size):,}" in row
    assert f"{100 * mask.mean():.1f}" in row
    assert any(cell.startswith("1x") and cell.count("x") == 3 for cell in row)


def test_default_top_k_fits_a_two_class_model(rng, tmp_path):
    """The default top-3 shows both classes of a 2-class model (BERT on QQP has 2); an explicit
    --top-k above the class count is a one-line error."""
    from tiny_models import tiny_tensors
    t = tiny_tensors(rng)
    t["fc.weight"], t["fc.bias"] = t["fc.weight"][:2], t["fc.bias"][:2]
    p = tmp_path / "two.safetensors"
    write_tiny(p, rng, tensors=t)
    x = rng.standard_normal((3, 3, 9, 9)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = invoke("infer", p, "--input", tmp_path / "x.npy", "--device", "cpu")
    assert "top-2 (softmax)" in out
    ranked = np.argsort(-torch_reference(t, x), axis=1)
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [(int(r[2]), int(r[5])) for r in rows] == [tuple(r) for r in ranked[:, :2].tolist()]
    result = CliRunner().invoke(cli, ["infer", str(p), "--device", "cpu", "--top-k", "3"])
    assert result.exit_code == 2 and "--top-k 3: the model has only 2 classes" in result.output
