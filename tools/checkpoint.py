"""Read a training checkpoint (CKPT.pt) into NumPy tensors and masks; check it fits an arch.

torch.nn.utils.prune leaves each pruned parameter X as a parameter `X_orig` and a buffer
`X_mask`. They are folded here into the tensor X = X_orig * X_mask and its mask, which the model
file keeps as `X.mask` (docs/FORMAT.md).
"""
import os
import warnings

import torch

from exporters.errors import ExportError

WRAPPERS = ("state_dict", "model")       # training scripts often save {"state_dict": sd, ...}
ORIG, MASK = "_orig", "_mask"            # torch.nn.utils.prune's suffixes
# BatchNorm's step counter: unused at inference and absent from old checkpoints, so not required
OPTIONAL_SUFFIX = ".num_batches_tracked"


def first_line(exc):
    """An exception's message cut to its first non-empty line (torch's can run to pages)."""
    lines = [s for s in str(exc).splitlines() if s.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def _what_it_is(path):
    """What a file that torch.load refused is, where that says more than torch's reason (None
    for a torch.save file): a NumPy array or a text file handed over by mistake."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:2] == b"PK" or head[:1] == b"\x80":   # torch.save's zip, or an old pickle
        return None                                 # torch's own reason says more
    if head[8:9] == b"{":                   # 8-byte header length, then the JSON header
        return "a safetensors file, not a torch.save checkpoint"
    if head[:6] == b"\x93NUMPY":
        return "a NumPy .npy file, not a torch.save checkpoint"
    return "not a torch.save checkpoint"


def load_state_dict(path):
    """CKPT.pt -> {key: torch.Tensor}; a dict holding it under 'state_dict' or 'model' is opened."""
    if not os.path.isfile(path):
        raise ExportError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():     # e.g. quantized tensors' deprecation: stderr stays
            warnings.simplefilter("ignore")  # the one `error: ...` line of the CLIs
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # pickle, zip and weights_only errors alike: the file is unusable
        kind = _what_it_is(path)
        detail = f": {first_line(e)}" if kind is None else f" ({kind})"
        raise ExportError(f"{path}: cannot read the checkpoint{detail}") from None
    for key in WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise ExportError(f"{path}: not a state dict (a dict of tensors, or one under "
                          f"{' or '.join(map(repr, WRAPPERS))})")
    for key, value in obj.items():
        _check_tensor(path, key, value)
    return obj


def _check_tensor(path, key, value):
    """A checkpoint entry must be a dense tensor that holds data (not sparse, meta or quantized)."""
    if not isinstance(value, torch.Tensor):
        raise ExportError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    if value.layout != torch.strided:
        raise ExportError(f"{path}: entry {key!r} is a {value.layout} tensor, not a dense one "
                          f"(call .to_dense() before saving)")
    if value.is_meta:
        raise ExportError(f"{path}: entry {key!r} is a meta tensor: it holds no data")
    if value.is_quantized:
        raise ExportError(f"{path}: entry {key!r} is quantized ({value.dtype}): dequantize it "
                          f"before saving")


def _numpy(t):
    """A tensor -> NumPy; floating point becomes float32 (bfloat16 has no NumPy dtype)."""
    t = t.detach().cpu()
    return (t.to(torch.float32) if t.is_floating_point() else t).contiguous().numpy()


def _fold(key, orig, mask):
    if mask is None:
        raise ExportError(f"{key!r} has no matching {key[:-len(ORIG)] + MASK!r} "
                          f"(a torch.nn.utils.prune re-parametrisation needs both)")
    if orig.shape != mask.shape:
        raise ExportError(f"{key!r} has shape {tuple(orig.shape)} but its mask has shape "
                          f"{tuple(mask.shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ExportError(f"mask {key[:-len(ORIG)] + MASK!r} holds values other than 0 and 1")
    return _numpy(orig * mask), _numpy(mask != 0)


def reparametrize(state_dict, masks):
    """{key: tensor} + {weight key: mask} -> torch.nn.utils.prune naming (`X_orig`, `X_mask`),
    key order kept: the inverse of fold_pruning."""
    out = {}
    for k, v in state_dict.items():
        if k in masks:
            out[k + ORIG] = v
            out[k + MASK] = masks[k]
        else:
            out[k] = v
    return out


def fold_pruning(state):
    """{key: tensor} -> (tensors {key: ndarray}, masks {key: bool ndarray}), in state order."""
    tensors, masks = {}, {}
    for key, value in state.items():
        if key.endswith(MASK) and key[:-len(MASK)] + ORIG in state:
            continue                                   # folded with its X_orig
        if not key.endswith(ORIG):
            tensors[key] = _numpy(value)
            continue
        base = key[:-len(ORIG)]
        if base in state:
            raise ExportError(f"checkpoint holds both {base!r} and {key!r}")
        tensors[base], masks[base] = _fold(key, value, state.get(base + MASK))
    return tensors, masks


def check_keys(tensors, expected, what):
    """expected: {key: shape}, in the arch's order. Raise ExportError naming the first mismatch:
    a key missing or of the wrong shape (in the arch's order), then a key the arch lacks."""
    unexpected = [k for k in tensors if k not in expected]
    hint = f" (and the arch has no key {unexpected[0]!r})" if unexpected else ""
    for key, shape in expected.items():
        if key not in tensors:
            if key.endswith(OPTIONAL_SUFFIX):
                continue
            raise ExportError(f"checkpoint does not fit {what}: missing key {key!r}{hint}")
        got = tuple(tensors[key].shape)
        if got != tuple(shape):
            raise ExportError(f"checkpoint does not fit {what}: {key!r} has shape {got}, "
                              f"expected {tuple(shape)}")
    if unexpected:
        raise ExportError(f"checkpoint does not fit {what}: unexpected key {unexpected[0]!r}")
