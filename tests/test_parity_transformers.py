"""Golden tests: real Hugging Face BERT and ViT classifiers (random weights, built offline from
configs), group-wise pruned with torch.nn.utils.prune or not, exported with tools/exporters/hf.py
and run by cupyprune; logits must match the HF module's. Then the exporter's own errors."""
import re

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as prune
from transformers import (BertConfig, BertForSequenceClassification, ViTConfig,
                          ViTForImageClassification)

import cupyprune
from cupyprune.paths.group import ALIGN_ROWS
from conftest import devices, rel_err, spin
from cupyprune.errors import InputError
from exporters.errors import ExportError
from exporters.hf import export_hf

TOL = 1e-4                                     # fp32 logits, relative to max |logit|
PATHS = ("dense", "group")

SMALL_BERT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=256, vocab_size=500, max_position_embeddings=40,
                  num_labels=3)
BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, vocab_size=30522, max_position_embeddings=512)
SMALL_VIT_32 = dict(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=128, num_labels=10)
SMALL_VIT_224 = dict(image_size=224, patch_size=16, hidden_size=96, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=192, num_labels=5)
VIT_BASE = dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12,
                num_attention_heads=12, intermediate_size=3072, num_labels=1000)


def seed_torch(rng):
    torch.manual_seed(int(rng.integers(2**31)))


def group_masks(model):
    """A random group-wise mask on every linear layer: ~50% of its input features kept."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            keep = torch.rand(module.in_features) < 0.5
            keep[torch.randint(module.in_features, (1,))] = True
            prune.custom_from_mask(module, "weight", keep.expand_as(module.weight).float())


def build(cls, config, masked, tmp_path):
    """HF module in eval mode, exported -> (module, model file path)."""
    model = cls(config).eval()
    if masked:
        group_masks(model)
    arch = config.model_type
    config.to_json_file(tmp_path / "config.json")
    out = str(tmp_path / f"{arch}.safetensors")
    export_hf(arch, model.state_dict(), str(tmp_path / "config.json"), out)
    return model, out


def bert_inputs(rng, config, batch, seq):
    ids = rng.integers(0, config.vocab_size, size=(batch, seq))
    types = np.zeros((batch, seq), dtype=np.int64)
    types[:, seq // 2:] = 1                                    # two segments
    mask = np.ones((batch, seq), dtype=np.int64)
    for b in range(0, batch, 2):                               # every other row padded
        mask[b, seq - int(rng.integers(1, seq // 2)):] = 0
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def hf_logits(hf, inputs):
    with torch.no_grad():
        return hf(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits


def hf_bert(rng, tmp_path, masked=True, **cfg):
    """An HF BERT classifier (SMALL_BERT, updated by cfg), group-pruned unless masked=False,
    exported -> (config, module, model file)."""
    seed_torch(rng)
    config = BertConfig(**{**SMALL_BERT, **cfg}, attn_implementation="eager")
    return (config, *build(BertForSequenceClassification, config, masked, tmp_path))


def check_parity(path, dev, ref, inputs, **load):
    ref = ref.detach().numpy()
    errs = {}
    for choice in PATHS:
        model = cupyprune.load(path, device=dev, path_choice=choice, **load)
        out = model(**inputs)
        assert out.shape == ref.shape and out.dtype == np.float32
        errs[choice] = rel_err(out, ref)
        print(f"{choice}: rel_err {errs[choice]:.2e}")
        assert errs[choice] <= TOL, f"path {choice}: rel_err {errs[choice]:.2e}"
        assert (cupyprune.backend.to_numpy(out).argmax(1) == ref.argmax(1)).all()
    return errs


def run_bert(dev, rng, tmp_path, masked, batch, seq, **cfg):
    config, hf, path = hf_bert(rng, tmp_path, masked, **cfg)
    inputs = bert_inputs(rng, config, batch, seq)
    return check_parity(path, dev, hf_logits(hf, inputs), inputs)


def run_vit(dev, rng, tmp_path, masked, batch, **cfg):
    seed_torch(rng)
    config = ViTConfig(**cfg, attn_implementation="eager")
    hf, path = build(ViTForImageClassification, config, masked, tmp_path)
    x = rng.standard_normal((batch, 3, config.image_size, config.image_size)).astype(np.float32)
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(x)).logits
    return check_parity(path, dev, ref, {"pixel_values": x})


# -- parity -------------------------------------------------------------------------------------

@pytest.mark.parametrize("masked", [False, True], ids=["dense", "group-pruned"])
@pytest.mark.parametrize("dev", devices())
def test_small_bert(dev, masked, rng, tmp_path):
    run_bert(dev, rng, tmp_path, masked, batch=4, seq=24)


@pytest.mark.parametrize("act", ["gelu_new", "silu", "swish", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("dev", devices())
def test_small_bert_hidden_act(dev, act, rng, tmp_path):
    """Each hidden_act the hand-written exporter maps (exporters/hf.ACTIVATIONS) gives HF's
    logits, in the FFN's fused epilogue."""
    run_bert(dev, rng, tmp_path, True, batch=3, seq=16, hidden_act=act)


@pytest.mark.slow
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "group-pruned"])
@pytest.mark.parametrize("dev", devices())
def test_bert_base(dev, masked, rng, tmp_path):
    run_bert(dev, rng, tmp_path, masked, batch=2, seq=32, **BERT_BASE)


@pytest.mark.parametrize("cfg", [SMALL_VIT_32, SMALL_VIT_224], ids=["32px", "224px"])
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "group-pruned"])
@pytest.mark.parametrize("dev", devices())
def test_small_vit(dev, masked, cfg, rng, tmp_path):
    run_vit(dev, rng, tmp_path, masked, batch=3, **cfg)


@pytest.mark.slow
@pytest.mark.parametrize("dev", devices())
def test_vit_base_224(dev, rng, tmp_path):
    run_vit(dev, rng, tmp_path, True, batch=2, **VIT_BASE)


@pytest.mark.parametrize("dev", devices())
def test_bert_optional_inputs_default_like_hf(dev, rng, tmp_path):
    """token_type_ids and attention_mask left out: zeros and ones, as HF assumes."""
    config, hf, path = hf_bert(rng, tmp_path)
    inputs = {"input_ids": rng.integers(0, config.vocab_size, size=(3, 10))}
    check_parity(path, dev, hf_logits(hf, inputs), inputs)


# -- the producer-compaction pass (cupyprune/passes.py) ---------------------------------------

@pytest.mark.parametrize("dev", devices())
def test_pruned_ffn_outputs_are_not_computed(dev, rng, tmp_path):
    config, hf, path = hf_bert(rng, tmp_path)
    model = cupyprune.load(path, device=dev, path_choice="group")
    notes = {s.node.name: s.op.describe().get("note", "") for s in model.layers()}
    for i in range(config.num_hidden_layers):
        layer = f"bert.encoder.layer.{i}"
        fc1, fc2 = f"{layer}.intermediate.dense", f"{layer}.output.dense"
        kept = int(hf.bert.encoder.layer[i].output.dense.weight_mask[0].sum())
        kept = -(-kept // ALIGN_ROWS) * ALIGN_ROWS     # the GEMM's rows are aligned to 8
        assert notes[fc1] == f"outputs compacted: {kept}/{config.intermediate_size} computed"
        assert notes[fc2] == "input pre-compacted (no gather)"
        assert model.steps[[s.node.name for s in model.steps].index(fc1)].op.out_features == kept
    assert notes["bert.pooler.dense"].startswith("outputs compacted")
    assert notes["classifier"] == "input pre-compacted (no gather)"
    assert not notes["bert.encoder.layer.0.attention.self.value"]      # attention is no ew op
    inputs = bert_inputs(rng, config, 3, 16)
    ref = hf_logits(hf, inputs).numpy()
    dense = cupyprune.load(path, device=dev, path_choice="dense")     # no compaction there
    out = model(**inputs)
    assert rel_err(out, ref) <= TOL
    assert rel_err(out, cupyprune.backend.to_numpy(dense(**inputs))) <= 1e-5


# -- bad inputs, through the model ------------------------------------------------------------

@pytest.fixture(scope="module")
def small_bert(tmp_path_factory):
    """(HF module, model file) of an unpruned small BERT."""
    torch.manual_seed(0)
    config = BertConfig(**SMALL_BERT, attn_implementation="eager")
    return build(BertForSequenceClassification, config, False, tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def small_bert_file(small_bert):
    return small_bert[1]


@pytest.fixture(scope="module")
def small_vit_file(tmp_path_factory):
    torch.manual_seed(0)
    config = ViTConfig(**SMALL_VIT_32, attn_implementation="eager")
    return build(ViTForImageClassification, config, False, tmp_path_factory.mktemp("vit"))[1]


@pytest.mark.parametrize("dev", devices())
def test_token_id_outside_vocabulary(dev, small_bert_file):
    model = cupyprune.load(small_bert_file, device=dev)
    ids = np.zeros((2, 8), dtype=np.int64)
    ids[1, 3] = SMALL_BERT["vocab_size"]
    with pytest.raises(InputError, match=r"token id 500 is outside \[0, 500\).*500 tokens"):
        model(ids)


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [True, False])
def test_device_ids_outside_their_tables(rng, small_bert, cuda_graph):
    """Ids handed over on the GPU are counted there and the count read after the forward pass
    is queued: a bad id must still raise before any output comes back, and leave the model (and
    its captured graph) giving the right outputs for the next good call."""
    import cupy
    hf, path = small_bert
    model = cupyprune.load(path, device="gpu", cuda_graph=cuda_graph)
    vocab = SMALL_BERT["vocab_size"]
    good = rng.integers(0, vocab, size=(3, 9))
    types = rng.integers(0, 2, size=(3, 9))
    want = cupy.asnumpy(model(good, token_type_ids=types))         # host ids: checked on the host
    ref = hf_logits(hf, {"input_ids": good, "token_type_ids": types}).numpy()
    assert rel_err(want, ref) <= TOL
    bad = good.copy()
    bad[2, 4] = -3
    with pytest.raises(InputError, match=r"token id -3 is outside \[0, 500\)"):
        model(cupy.asarray(bad), token_type_ids=cupy.asarray(types))
    bad_types = types.copy()
    bad_types[0, 8] = 2
    with pytest.raises(InputError, match=r"token type id 2 is outside \[0, 2\)"):
        model(cupy.asarray(good), token_type_ids=cupy.asarray(bad_types))
    got = cupy.asnumpy(model(cupy.asarray(good), token_type_ids=cupy.asarray(types)))
    assert np.array_equal(got, want)


@pytest.mark.gpu
def test_device_ids_written_late_on_the_callers_stream(rng, small_bert):
    """With graph replay the ids are counted on a side stream, queued after the launch: it must
    wait for the caller's stream, or it reads ids a queued kernel has not written yet. Here the
    bad id is written behind a kernel that spins for about 0.1 s."""
    import cupy
    hf, path = small_bert
    model = cupyprune.load(path, device="gpu", cuda_graph=True)
    vocab = SMALL_BERT["vocab_size"]
    good = cupy.asarray(rng.integers(0, vocab, size=(2, 7)))
    model(good)                                                    # capture
    stream = cupy.cuda.Stream(non_blocking=True)
    for bad_value, expect in ((vocab + 4, vocab + 4), (-2, -2)):
        ids = good.copy()
        ids[0, 0] = bad_value                                      # compiled before the spin
        ids[0, 0] = good[0, 0]
        spin(1000)
        cupy.cuda.Device().synchronize()
        with stream:
            spin()
            ids[1, 5] = bad_value
            assert not stream.done                                 # the write is still queued
            with pytest.raises(InputError, match=rf"token id {expect} is outside \[0, {vocab}\)"):
                model(ids)
        stream.synchronize()
    with stream:
        got = cupy.asnumpy(model(good))                            # and the replay still right
    stream.synchronize()
    assert rel_err(got, hf_logits(hf, {"input_ids": cupy.asnumpy(good)}).numpy()) <= TOL


@pytest.mark.parametrize("dev", devices())
def test_sequence_longer_than_positions(dev, small_bert_file):
    model = cupyprune.load(small_bert_file, device=dev)
    with pytest.raises(InputError, match=r"sequence of 41 tokens is longer than the 40 positions"):
        model(np.zeros((1, 41), dtype=np.int64))


@pytest.mark.parametrize("dev", devices())
def test_attention_mask_of_wrong_shape(dev, small_bert_file):
    model = cupyprune.load(small_bert_file, device=dev)
    ids = np.zeros((2, 8), dtype=np.int64)
    with pytest.raises(InputError, match=r"attention mask has shape \(2, 6\).*\(2, 8\)"):
        model(ids, attention_mask=np.ones((2, 6), dtype=np.int64))
    if model.graph_runner is not None:      # a bad first call leaves graph replay on
        assert model.graph_runner.failed is None
        model(ids, attention_mask=np.ones((2, 8), dtype=np.int64))
        assert model.graph_runner.failed is None and len(model.graph_runner.captured) == 1


@pytest.mark.parametrize("dev", devices())
@pytest.mark.parametrize("value", [-1, 2])
def test_attention_mask_of_other_values_than_0_and_1(dev, small_bert_file, value):
    model = cupyprune.load(small_bert_file, device=dev)
    mask = np.ones((2, 8), dtype=np.int64)
    mask[1, 5] = value
    with pytest.raises(InputError, match=rf"attention mask value {value} is neither 0"):
        model(np.zeros((2, 8), dtype=np.int64), attention_mask=mask)


@pytest.mark.parametrize("dev", devices())
def test_vit_image_of_wrong_size(dev, small_vit_file):
    model = cupyprune.load(small_vit_file, device=dev)
    with pytest.raises(InputError, match=r"\(1, 3, 48, 48\), expected \(N, 3, 32, 32\)"):
        model(np.zeros((1, 3, 48, 48), dtype=np.float32))


# -- the exporter -------------------------------------------------------------------------------

def hub_keys(state):
    """transformers 5 ViT module keys -> the Hub checkpoints' (transformers 4) keys."""
    renames = [(r"^vit\.layers\.(\d+)\.", r"vit.encoder.layer.\1."),
               (r"attention\.([qkv])_proj", lambda m: "attention.attention." +
                {"q": "query", "k": "key", "v": "value"}[m.group(1)]),
               (r"attention\.o_proj", "attention.output.dense"),
               (r"mlp\.fc1", "intermediate.dense"), (r"mlp\.fc2", "output.dense")]
    out = {}
    for key, value in state.items():
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


@pytest.mark.parametrize("dev", devices())
def test_vit_hub_key_layout(dev, rng, tmp_path):
    seed_torch(rng)
    config = ViTConfig(**SMALL_VIT_32, attn_implementation="eager")
    hf = ViTForImageClassification(config).eval()
    group_masks(hf)
    state = hub_keys(hf.state_dict())
    assert "vit.encoder.layer.1.attention.attention.query.weight_orig" in state
    config.to_json_file(tmp_path / "config.json")
    out = str(tmp_path / "vit.safetensors")
    export_hf("vit", state, str(tmp_path / "config.json"), out)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(x)).logits
    check_parity(out, dev, ref, {"pixel_values": x})
    model = cupyprune.load(out, device=dev)
    assert "vit.encoder.layer.0.output.dense" in {s.node.name for s in model.layers()}


def test_export_labels_and_spec(rng, tmp_path):
    _, _, path = hf_bert(rng, tmp_path, False, id2label={0: "neg", 1: "neutral", 2: "pos"})
    model = cupyprune.load(path, device="cpu")
    assert model.labels == ["neg", "neutral", "pos"]
    spec = model.input_spec["input_ids"]
    assert (spec["kind"], spec["vocab_size"], spec["max_length"]) == ("token_ids", 500, 40)
    assert model.graph.inputs == ["input_ids", "token_type_ids", "attention_mask"]
    assert not any(n.op == "dropout" for n in model.graph.nodes)


def _bert_state(tmp_path, **cfg):
    torch.manual_seed(0)
    config = BertConfig(**{**SMALL_BERT, **cfg})
    config.to_json_file(tmp_path / "config.json")
    return BertForSequenceClassification(config).state_dict(), str(tmp_path / "config.json")


def test_export_key_mismatch_names_the_key(tmp_path):
    state, cfg = _bert_state(tmp_path)
    bad = dict(state)
    del bad["bert.encoder.layer.1.output.dense.bias"]
    with pytest.raises(ExportError, match=r"missing key 'bert\.encoder\.layer\.1\.output\.dense"
                                          r"\.bias'"):
        export_hf("bert", bad, cfg, str(tmp_path / "m.safetensors"))
    bad = {**state, "bert.encoder.layer.0.intermediate.dense.weight": torch.zeros(100, 64)}
    with pytest.raises(ExportError, match=r"'bert\.encoder\.layer\.0\.intermediate\.dense\."
                                          r"weight' has shape \(100, 64\), expected \(256, 64\)"):
        export_hf("bert", bad, cfg, str(tmp_path / "m.safetensors"))
    with pytest.raises(ExportError, match=r"unexpected key 'bert\.extra'"):
        export_hf("bert", {**state, "bert.extra": torch.zeros(1)}, cfg,
                  str(tmp_path / "m.safetensors"))
    assert not (tmp_path / "m.safetensors").exists()


def test_export_config_mismatch(tmp_path):
    state, _ = _bert_state(tmp_path)
    _, cfg = _bert_state(tmp_path, num_hidden_layers=3)
    with pytest.raises(ExportError, match=r"missing key 'bert\.encoder\.layer\.2\."):
        export_hf("bert", state, cfg, str(tmp_path / "m.safetensors"))
    with pytest.raises(ExportError, match=r"model_type is 'bert', not 'vit'"):
        export_hf("vit", state, cfg, str(tmp_path / "m.safetensors"))
    with pytest.raises(ExportError, match=r"--num-classes 7 does not match the config's 3"):
        export_hf("bert", state, cfg, str(tmp_path / "m.safetensors"), num_classes=7)


def test_export_cli_with_prune_checkpoint(rng, tmp_path):
    """tools/export.py reads a torch.save'd state dict holding weight_orig + weight_mask."""
    from export import main
    seed_torch(rng)
    config = BertConfig(**SMALL_BERT, attn_implementation="eager")
    hf = BertForSequenceClassification(config).eval()
    group_masks(hf)
    torch.save(hf.state_dict(), tmp_path / "ckpt.pt")
    config.to_json_file(tmp_path / "config.json")
    out = tmp_path / "bert.safetensors"
    assert main(["--arch", "bert", "--checkpoint", str(tmp_path / "ckpt.pt"), "--config",
                 str(tmp_path / "config.json"), "--out", str(out), "--pattern", "group"]) == 0
    model = cupyprune.load(str(out), device="cpu")
    assert {s.op.describe()["pattern"] for s in model.layers()} == {"group"}
    inputs = bert_inputs(rng, config, 2, 12)
    assert rel_err(model(**inputs), hf_logits(hf, inputs).numpy()) <= TOL
