"""The model files the serving measurements load: ResNet-18 at 224x224 (ImageNet variant, 1000
classes) and BERT-base (2 classes), each dense and group-wise pruned to 50% kept, with random
weights (latency only; accuracy is docs/ACCURACY.md's), built with the benchmark's own model
builders and exporters (tools/benchlib) and written once into a folder."""
import os
import tempfile

# name, family, arch, variant, image size (or sequence), classes: as benchlib.models.PRESETS
MODELS = (("resnet18-224", "cnn", "resnet18", "imagenet", 224, 1000),
          ("bert-base", "bert", "bert", {}, 128, 2))
KEEP = 0.5
LABELS = ("dense", "group50")


def model_paths(folder, models=MODELS):
    """-> the files, dense then pruned per model, in the order they are measured."""
    return [os.path.join(folder, f"{m[0]}-{label}.safetensors") for m in models
            for label in LABELS]


def make_models(folder, models=MODELS, keep=KEEP, progress=print):
    """Write each model's dense and group-wise files into `folder` (those there already are
    kept) -> their paths (model_paths)."""
    import torch
    from benchlib.models import _export, _masked_state, _torch_model
    for name, family, arch, variant, size, classes in models:
        paths = model_paths(folder, [(name,)])
        if all(os.path.exists(p) for p in paths):
            continue
        progress(f"building {name} (dense, group-wise {keep:.0%} kept)")
        torch.manual_seed(0)
        module, config = _torch_model(family, arch, variant, size, classes)
        dense = {k: v.detach().clone() for k, v in module.state_dict().items()}
        _, pruned = _masked_state(dense, "group", keep)
        with tempfile.TemporaryDirectory() as tmp:
            for path, state in zip(paths, (dense, pruned)):
                if not os.path.exists(path):
                    _export(family, arch, variant, size, classes, state, config, path, tmp)
    return model_paths(folder, models)
