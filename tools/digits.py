"""The shipped real model: a small VGG-style CNN on scikit-learn's 8x8 handwritten digits.

scikit-learn ships the 1,797 images, so training, pruning and evaluating need no download.
Shared by tools/make_digits_model.py (the file in weights/) and tools/accuracy_table.py
(docs/ACCURACY.md). Legend: N batch, 1 channel, 8x8 pixels, 10 classes.
"""
import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import cupyprune
from cupyprune.format import write_model_file
from cupyprune.format.keys import SAMPLE_INPUT_PREFIX, SAMPLE_LABELS
from exporters.cnn import emit_sequential
from exporters.graph_builder import GraphBuilder

SEED = 0
# fixed, so that a run repeats bit for bit on any machine; one, because the model is tiny and a
# second thread only adds OpenMP barriers, which stall for seconds when the cores are shared
# (measured: 10 epochs in 1.4 s on 1 thread, 4.5-18 s on 2 threads of 2 busy cores)
NUM_THREADS = 1
TEST_FRACTION = 0.2      # of all images
VAL_FRACTION = 0.25      # of the rest: train/val/test = 60/20/20
BATCH = 64
LR = 3e-3                # Adam, dense training
FINETUNE_LR = 1e-3       # Adam, fine-tuning a pruned model
INPUT_NAME = "image"
LABELS = [str(d) for d in range(10)]


@dataclass
class Digits:
    """The fixed split, normalised with the training split's statistics. x: (N, 1, 8, 8)."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float
    seed: int

    def sizes(self):
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def load_data(seed=SEED):
    """load_digits, stratified 60/20/20 split drawn with `seed`, pixels scaled 0..16 -> [0, 1]
    and then standardised with the training split's mean and std (one channel)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    x = raw.images.astype(np.float32) / 16.0                     # (1797, 8, 8)
    y = raw.target.astype(np.int64)
    rest, test = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION, stratify=y,
                                  random_state=seed)
    train, val = train_test_split(rest, test_size=VAL_FRACTION, stratify=y[rest],
                                  random_state=seed)
    mean, std = float(x[train].mean()), float(x[train].std())

    def part(idx):
        xs = (x[idx] - mean) / std
        return torch.from_numpy(xs[:, None]), torch.from_numpy(y[idx])   # (n, 1, 8, 8), (n,)

    (xa, ya), (xv, yv), (xt, yt) = part(train), part(val), part(test)
    return Digits(xa, ya, xv, yv, xt, yt, mean, std, seed)


class DigitsCNN(nn.Module):
    """conv-BN-ReLU x2, max-pool, conv-BN-ReLU x2, max-pool, flatten (64 x 2 x 2), MLP.
    Channel counts are multiples of 4 so that every pruned layer's F divides into 4x4 blocks
    and runs of 4 (vector N:4)."""

    def __init__(self):
        super().__init__()

        def conv(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                    nn.ReLU()]

        self.features = nn.Sequential(*conv(1, 16), *conv(16, 32), nn.MaxPool2d(2),   # 8 -> 4
                                      *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2))   # 4 -> 2
        self.classifier = nn.Sequential(nn.Linear(64 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)                   # (N, 64, 2, 2) -> (N, 256)
        return self.classifier(x)                                # -> (N, 10)


def build_model(seed=SEED):
    torch.manual_seed(seed)
    return DigitsCNN()


@contextlib.contextmanager
def deterministic(seed):
    """Seeded, deterministic kernels and a fixed thread count; the previous settings come back."""
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)


def apply_masks(model, masks):
    """weight *= mask for every masked parameter (masks: state-dict key -> 0/1 tensor)."""
    with torch.no_grad():
        for key, mask in masks.items():
            model.get_parameter(key).mul_(mask)


def train(model, data, epochs, seed, masks=None, lr=LR):
    """Adam on the training split. With masks, pruned weights are put back to zero after every
    step, so fine-tuning a pruned model keeps its pattern."""
    with deterministic(seed):
        order = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        if masks:
            apply_masks(model, masks)
        model.train()
        n = len(data.y_train)
        for _ in range(epochs):
            perm = torch.randperm(n, generator=order)
            for start in range(0, n, BATCH):
                idx = perm[start:start + BATCH]
                loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if masks:
                    apply_masks(model, masks)
    model.eval()
    return model


def evaluate_torch(model, x, y):
    """Top-1 accuracy (a fraction) of the torch model in eval mode."""
    model.eval()
    with torch.no_grad():
        return int((model(x).argmax(1) == y).sum()) / len(y)


def evaluate_runtime(model, x, y, batch=256):
    """Top-1 accuracy (a fraction) of a loaded cupyprune model (or a model file, loaded for the
    CPU) on torch tensors x (N, 1, 8, 8), y (N,), in batches."""
    if not isinstance(model, cupyprune.Model):
        model = cupyprune.load(model, device="cpu")
    x = x.numpy()
    preds = np.concatenate([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return int((preds == y.numpy()).sum()) / len(y)


def kept_fraction(masks, state_dict, keys):
    """Kept weights / all weights over `keys` (an unmasked key counts as fully kept)."""
    kept = sum(int(masks[k].sum()) if k in masks else state_dict[k].numel() for k in keys)
    return kept / sum(state_dict[k].numel() for k in keys)


def weight_keys(model):
    """Every conv and linear weight, in graph order."""
    return [f"{name}.weight" for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))]


# -- export --------------------------------------------------------------------------------------
def export_digits(model, masks, out_path, pattern, sample_images, sample_labels, *, mean, std,
                  exporter="tools/digits.py", description=""):
    """Write a cupyprune model file: the graph (BN as batch_norm nodes, folded by the runtime),
    masked weights with their `<w>.mask`, `pattern` declared for every masked weight, and real
    sample images (normalised, NCHW) with their true labels.

    pattern: GraphBuilder's text ('group', 'element', 'vector:2:4', 'block:4x4'), or None for a
    dense model."""
    tensors = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    bool_masks = {k: m.detach().cpu().numpy() != 0 for k, m in masks.items()}
    for key, m in bool_masks.items():
        tensors[key] = tensors[key] * m                       # pruned weights stored as zeros
    b = GraphBuilder(tensors, bool_masks, inputs=[INPUT_NAME])
    x = emit_sequential(b, "features", model.features, INPUT_NAME)   # (N, 64, 2, 2)
    x = b.add_node("flatten", "flatten", x, attrs={"start_dim": 1})  # -> (N, 256)
    logits = emit_sequential(b, "classifier", model.classifier, x)   # -> (N, 10)
    file_tensors = b.file_tensors()
    # GraphBuilder.write knows no sample tensors, so the file is written here from its parts
    file_tensors[SAMPLE_INPUT_PREFIX + INPUT_NAME] = np.asarray(sample_images, dtype=np.float32)
    file_tensors[SAMPLE_LABELS] = np.asarray(sample_labels, dtype=np.int64)
    input_spec = [{"name": INPUT_NAME, "shape": [None, 1, 8, 8], "dtype": "float32",
                   "layout": "NCHW", "kind": "image",
                   "normalization": {"mean": [mean], "std": [std]}}]
    write_model_file(out_path, file_tensors, b.graph({"logits": logits}), input_spec,
                     pruning=b.pruning(pattern), labels=LABELS, exporter=exporter,
                     description=description, compact=True)
