"""The cupyprune model file: one safetensors file (docs/FORMAT.md)."""
from .keys import FORMAT_NAME, FORMAT_VERSION
from .reader import ModelFile, read_model_file
from .writer import write_model_file

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ModelFile", "read_model_file", "write_model_file"]
