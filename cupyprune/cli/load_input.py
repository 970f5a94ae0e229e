"""Reading --input files: .npy (the first graph input) or .npz (inputs by name)."""
import os
import zipfile

import numpy as np

from ..errors import InputError


def read_inputs(path, input_names):
    """path -> {input name: NumPy array}; a one-line InputError for anything unreadable."""
    if not os.path.isfile(path):
        raise InputError(f"--input {path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"--input {path}: not a readable .npy/.npz file ({e})") from None
    if isinstance(loaded, np.ndarray):
        return {input_names[0]: loaded}
    with loaded:
        unknown = sorted(set(loaded.files) - set(input_names))
        if unknown:
            raise InputError(f"--input {path}: unknown input {unknown[0]!r}; the model's inputs "
                             f"are {', '.join(input_names)}")
        if input_names[0] not in loaded.files:
            raise InputError(f"--input {path}: missing input {input_names[0]!r}")
        try:
            return {k: loaded[k] for k in loaded.files}
        except ValueError as e:
            raise InputError(f"--input {path}: {e}") from None
