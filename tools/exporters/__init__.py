"""Exporters: a trained PyTorch state dict -> a cupyprune model file (docs/FORMAT.md).

cnn.py builds the graph of the torchvision-named CNNs (tools/archs); hf.py that of the Hugging
Face transformers. Both describe their graph through graph_builder.GraphBuilder and raise
errors.ExportError for every input they cannot use."""
from .errors import ExportError

__all__ = ["ExportError"]
