"""Export the torchvision-named CNNs of tools/archs (VGG-16, VGG-16-BN, ResNet-18) to a model file.

The graph follows the reference module: each layer becomes one node named by its module path,
with its attrs read from the module itself, so the PyTorch reference and the graph cannot
disagree. Dropout is the identity at inference and emits no node; each BatchNorm is its own
node, which the runtime folds into the conv before it at load.
"""
import torch
from torch import nn

from archs import ARCHS, VARIANTS, build
from checkpoint import OPTIONAL_SUFFIX, check_keys, first_line, fold_pruning

from .errors import ExportError
from .graph_builder import GraphBuilder

NORMALIZATION = {
    "imagenet": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    # per-channel mean and standard deviation of the CIFAR-10 training images
    "cifar": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]},
}
DEFAULTS = {"cifar": {"image_size": 32, "num_classes": 10},
            "imagenet": {"image_size": 224, "num_classes": 1000}}
INPUT = "image"


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _conv(b, name, m, x):
    if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise ExportError(f"{name}: only convs with groups=1 and numeric zero padding export")
    params = {"weight": f"{name}.weight"}
    if m.bias is not None:
        params["bias"] = f"{name}.bias"
    return b.add_node(name, "conv2d", x, params, {"stride": _pair(m.stride),
                                                  "padding": _pair(m.padding),
                                                  "dilation": _pair(m.dilation)})


def _batch_norm(b, name, m, x):
    params = {role: f"{name}.{role}" for role in ("weight", "bias", "running_mean", "running_var")}
    return b.add_node(name, "batch_norm", x, params, {"eps": m.eps})


def _linear(b, name, m, x):
    params = {"weight": f"{name}.weight"}
    if m.bias is not None:
        params["bias"] = f"{name}.bias"
    return b.add_node(name, "linear", x, params)


def _max_pool(b, name, m, x):
    if m.ceil_mode or _pair(m.dilation) != [1, 1]:
        raise ExportError(f"{name}: only max-pools with ceil_mode=False and dilation 1 export")
    return b.add_node(name, "max_pool2d", x, attrs={"kernel": _pair(m.kernel_size),
                                                    "stride": _pair(m.stride),
                                                    "padding": _pair(m.padding)})


CONVERTERS = {
    nn.Conv2d: _conv,
    nn.BatchNorm2d: _batch_norm,
    nn.Linear: _linear,
    nn.ReLU: lambda b, name, m, x: b.add_node(name, "relu", x),
    nn.MaxPool2d: _max_pool,
    nn.AdaptiveAvgPool2d: lambda b, name, m, x: b.add_node(
        name, "adaptive_avg_pool2d", x, attrs={"output_size": _pair(m.output_size)}),
    nn.Dropout: lambda b, name, m, x: x,
    nn.Identity: lambda b, name, m, x: x,
}


def emit(b, name, module, x):
    """One module -> its node (or none); returns the output value."""
    convert = CONVERTERS.get(type(module))
    if convert is None:
        raise ExportError(f"{name}: no graph op for {type(module).__name__}")
    return convert(b, name, module, x)


def emit_sequential(b, prefix, seq, x):
    for child, module in seq.named_children():
        x = emit(b, f"{prefix}.{child}", module, x)
    return x


def _vgg(b, model, x):
    x = emit_sequential(b, "features", model.features, x)   # (N, 512, S/32, S/32)
    x = emit(b, "avgpool", model.avgpool, x)                 # -> (N, 512, 7, 7) or (N, 512, 1, 1)
    x = b.add_node("flatten", "flatten", x, attrs={"start_dim": 1})   # -> (N, 25088) or (N, 512)
    return emit_sequential(b, "classifier", model.classifier, x)


def _basic_block(b, name, block, x):
    y = emit(b, f"{name}.conv1", block.conv1, x)
    y = emit(b, f"{name}.bn1", block.bn1, y)
    y = b.add_node(f"{name}.relu1", "relu", y)
    y = emit(b, f"{name}.conv2", block.conv2, y)
    y = emit(b, f"{name}.bn2", block.bn2, y)
    if block.downsample is not None:
        x = emit_sequential(b, f"{name}.downsample", block.downsample, x)
    y = b.add_node(f"{name}.add", "add", [y, x])
    return b.add_node(f"{name}.relu2", "relu", y)


def _resnet(b, model, x):
    for part in ("conv1", "bn1", "relu", "maxpool"):
        x = emit(b, part, getattr(model, part), x)
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(model, layer)):
            x = _basic_block(b, f"{layer}.{i}", block, x)
    x = emit(b, "avgpool", model.avgpool, x)                 # (N, 512, h, w) -> (N, 512, 1, 1)
    x = b.add_node("flatten", "flatten", x, attrs={"start_dim": 1})   # -> (N, 512)
    return emit(b, "fc", model.fc, x)


GRAPHS = {"vgg16": _vgg, "vgg16_bn": _vgg, "resnet18": _resnet}


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExportError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_image_size(model, arch, size):
    """Run the module on the meta device (shapes only) to refuse an image it cannot take."""
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, size, size, device="meta"))
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"image size {size} is too small for {arch}: {first_line(e)}") from None


def export_cnn(arch, state_dict, out, variant="cifar", num_classes=None, image_size=None,
               labels=None, pattern=None):
    """state_dict: {key: torch.Tensor}, torch.nn.utils.prune re-parametrisations included.
    labels: a list of class names or None; pattern: a --pattern text or None (inferred)."""
    if arch not in ARCHS:
        raise ExportError(f"unknown CNN arch {arch!r}: choose one of {', '.join(ARCHS)}")
    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    defaults = DEFAULTS[variant]
    num_classes = _positive("--num-classes", defaults["num_classes"] if num_classes is None
                            else num_classes)
    image_size = _positive("--image-size", defaults["image_size"] if image_size is None
                           else image_size)
    if labels is not None and len(labels) != num_classes:
        raise ExportError(f"{len(labels)} labels given for {num_classes} classes")
    with torch.device("meta"):
        model = build(arch, num_classes, variant).eval()
    _check_image_size(model, arch, image_size)
    tensors, masks = fold_pruning(state_dict)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_keys(tensors, expected, f"{arch} ({variant}, {num_classes} classes)")

    b = GraphBuilder(tensors, masks, inputs=[INPUT])
    logits = GRAPHS[arch](b, model, INPUT)
    left = [k for k in b.unused() if not k.endswith(OPTIONAL_SUFFIX)]
    if left:
        raise ExportError(f"{arch}: the graph does not use tensor {left[0]!r}")
    spec = {"name": INPUT, "shape": [None, 3, image_size, image_size], "dtype": "float32",
            "layout": "NCHW", "normalization": NORMALIZATION[variant], "kind": "image"}
    b.write(out, {"logits": logits}, [spec], pattern=pattern, labels=labels,
            exporter=f"tools/export.py {arch} {variant}")
