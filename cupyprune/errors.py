"""The library's one exception family. The CLI turns each into a one-line message and exit code 2."""


class CupyPruneError(Exception):
    """Base class: a problem the user can fix (bad file, bad input, bad option)."""


class ModelFileError(CupyPruneError):
    """The model file is unreadable, malformed or inconsistent."""


class InputError(CupyPruneError):
    """An input array does not fit the model's input spec."""


class DeviceError(CupyPruneError):
    """The requested device or precision is not available here."""


class OutOfMemoryError(CupyPruneError):
    """A model or a batch needs more host or GPU memory than is free (checked before anything
    is allocated; an allocation that fails anyway is turned into this too)."""


class SettingError(CupyPruneError):
    """An environment setting holds a value the runtime does not know."""
