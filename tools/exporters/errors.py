"""The exporters' one exception: a problem with the user's input (checkpoint, options, --out).

tools/export.py prints it as one line `error: ...` and exits with code 2; anything else that
escapes is a bug in the exporter and keeps its traceback."""


class ExportError(Exception):
    """A checkpoint, option or output path the exporter cannot use; the message names it."""
