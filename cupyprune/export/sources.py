"""Where a module comes from: torchvision's builders by name, a Hugging Face `save_pretrained`
folder, or any importable factory, each with its example inputs and labels."""
import importlib
import inspect
import json
import os

from .torchlib import ExportError, import_torch
from .trace import first_line

HF_WEIGHTS = "model.safetensors"
SEQUENCE = 16                     # tokens in the example sequence of a text model
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


class Source:
    """A module ready to export: module, example inputs, and what the file should say."""

    def __init__(self, module, example_inputs, labels=None, max_length=None,
                 normalization=None, exporter=""):
        self.module, self.example_inputs, self.labels = module, example_inputs, labels
        self.max_length, self.normalization, self.exporter = max_length, normalization, exporter


def load_checkpoint(module, path):
    """A state dict (safetensors, or a torch.save file read with weights_only) into module;
    a key or shape that does not fit is one line naming it."""
    torch = import_torch()
    if not os.path.isfile(path):
        raise ExportError(f"checkpoint {path!r}: no such file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ExportError(f"checkpoint {path!r} cannot be read: {first_line(e)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ExportError(f"checkpoint {path!r} holds a {type(state).__name__}, not a state dict")
    state = _fold_pruned(state)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}, which the model lacks"
        raise ExportError(f"checkpoint {path!r} does not fit the model: it {what} "
                          f"({len(missing)} missing, {len(extra)} unexpected keys; check the "
                          f"architecture name and its options, e.g. num_classes)")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ExportError(f"checkpoint {path!r} does not fit the model: {k!r} has shape "
                              f"{tuple(v.shape)}, the model's is {tuple(own[k].shape)} (check "
                              f"the architecture name and its options, e.g. num_classes)")
    module.load_state_dict(state)
    return module


def _fold_pruned(state):
    """A state dict saved while torch.nn.utils.prune was applied: weight_orig * weight_mask."""
    out = {}
    for k, v in state.items():
        if k.endswith("_orig") and k[:-5] + "_mask" in state:
            out[k[:-5]] = v * state[k[:-5] + "_mask"]
        elif not (k.endswith("_mask") and k[:-5] + "_orig" in state):
            out[k] = v
    return out


def torchvision_source(name, checkpoint=None, image_size=None, num_classes=None):
    torch = import_torch()
    try:
        import torchvision
    except ImportError:
        raise ExportError("--torchvision needs torchvision: pip install torchvision") from None
    builders = torchvision.models.list_models(module=torchvision.models)
    if name not in builders:
        close = [b for b in builders if b.startswith(name[:4])][:6]
        raise ExportError(f"torchvision has no classification model {name!r}"
                          + (f" (did you mean {', '.join(close)}?)" if close else ""))
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    module = torchvision.models.get_model(name, weights=None, **kwargs)
    if checkpoint:
        load_checkpoint(module, checkpoint)
    size = image_size or _torchvision_image_size(name)
    return Source(module.eval(), torch.randn(1, 3, size, size), labels=None,
                  normalization=IMAGENET_NORMALIZATION, exporter=f"cupyprune export --torchvision {name}")


def _torchvision_image_size(name):
    """The image size a torchvision builder is made for (its weights' crop), else 224."""
    import torchvision
    try:
        weights = torchvision.models.get_model_weights(name)
        crop = list(weights)[0].transforms.keywords.get("crop_size")
        return int(crop[0] if isinstance(crop, (list, tuple)) else crop)
    except Exception:                 # no weights enum, or transforms without a crop size
        return 224


def hf_source(folder):
    """A `save_pretrained` folder: config.json + model.safetensors (never a pickle)."""
    torch = import_torch()
    config_path = os.path.join(folder, "config.json")
    if not os.path.isdir(folder):
        raise ExportError(f"{folder!r} is not a folder")
    if not os.path.isfile(config_path):
        raise ExportError(f"{folder!r} has no config.json: pass the folder that "
                          f"save_pretrained() wrote")
    if not os.path.isfile(os.path.join(folder, HF_WEIGHTS)):
        pickled = os.path.isfile(os.path.join(folder, "pytorch_model.bin"))
        hint = (" (it holds only pytorch_model.bin, a pickle, which is not loaded: re-save "
                "with save_pretrained(..., safe_serialization=True))") if pickled else ""
        raise ExportError(f"{folder!r} has no {HF_WEIGHTS}{hint}")
    try:
        with open(config_path) as f:
            arch = (json.load(f).get("architectures") or [None])[0]
        import transformers
        cls = getattr(transformers, arch or "", None)
        if cls is None:
            raise ExportError(f"config.json names architecture {arch!r}, which transformers "
                              f"does not have")
        module = cls.from_pretrained(folder, use_safetensors=True, attn_implementation="sdpa")
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{folder!r} cannot be loaded by transformers: {first_line(e)}") \
            from None
    module.eval()
    config = module.config
    labels = [config.id2label[i] for i in range(config.num_labels)] \
        if getattr(config, "id2label", None) and len(config.id2label) == config.num_labels \
        else None
    forward = inspect.signature(module.forward).parameters
    if "pixel_values" in forward:
        size = config.image_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        inputs = {"pixel_values": torch.randn(1, config.num_channels, size, size)}
        return Source(module, inputs, labels=labels, exporter=f"cupyprune export --hf ({arch})",
                      normalization={"mean": [0.5] * 3, "std": [0.5] * 3})
    vocab = config.vocab_size
    length = min(SEQUENCE, getattr(config, "max_position_embeddings", SEQUENCE))
    inputs = {"input_ids": torch.randint(0, vocab, (1, length)),
              "attention_mask": torch.ones(1, length, dtype=torch.long)}
    if "token_type_ids" in forward and getattr(config, "type_vocab_size", 0) > 1:
        inputs["token_type_ids"] = torch.zeros(1, length, dtype=torch.long)
    max_length = getattr(config, "max_position_embeddings", None)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        max_length -= config.pad_token_id + 1         # positions start after the padding id
    return Source(module, inputs, labels=labels, max_length=max_length,
                  exporter=f"cupyprune export --hf ({arch})")


def module_source(spec, checkpoint=None, input_shape=None):
    """`pkg.mod:factory` (called with no arguments) -> Source with a random example input."""
    torch = import_torch()
    if ":" not in spec:
        raise ExportError(f"--module {spec!r}: expected 'package.module:factory'")
    mod_name, attr = spec.split(":", 1)
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ExportError(f"--module {spec!r} cannot be imported: {first_line(e)}") from None
    try:
        module = factory()
    except Exception as e:
        raise ExportError(f"--module {spec!r}: the factory raised {first_line(e)}") from None
    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"--module {spec!r} returned a {type(module).__name__}, not a module")
    if checkpoint:
        load_checkpoint(module, checkpoint)
    if not input_shape:
        raise ExportError("--module needs --input-shape, e.g. 1,3,224,224")
    return Source(module.eval(), torch.randn(*input_shape), exporter=f"cupyprune export --module {spec}")
