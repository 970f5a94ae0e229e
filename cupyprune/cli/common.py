"""What every command shares: the error boundary, shared options, atomic .npy output."""
import functools
import os
import sys
import warnings

import click
import numpy as np

from ..atomic import Terminated, atomic_path, probe_directory
from ..backend import DEVICES
from ..precision import PRECISIONS
from ..errors import CupyPruneError, InputError
from ..paths import PATH_CHOICES


def one_line_errors(fn):
    """The library's own errors become `error: ...` on stderr and exit code 2; warnings one line."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = fn(*args, **kwargs)
            except CupyPruneError as e:
                _echo_warnings(caught)
                click.echo(f"error: {one_line(str(e))}", err=True)
                sys.exit(2)
            except MemoryError as e:                # a batch or input too large for this machine
                _echo_warnings(caught)
                click.echo(f"error: out of memory{f': {e}' if str(e) else ''} (try a smaller "
                           f"batch)", err=True)
                sys.exit(2)
            except KeyboardInterrupt:
                click.echo("error: interrupted", err=True)
                sys.exit(130)
            except Terminated:
                click.echo("error: terminated", err=True)
                sys.exit(143)
            except BrokenPipeError:         # `| head`: the reader has all it wanted
                _detach_stdout()
                sys.exit(141)
            except OSError as e:            # stdout unwritable (a full disk, /dev/full)
                _detach_stdout()
                click.echo(f"error: cannot write the output: {e.strerror or e}", err=True)
                sys.exit(2)
        _echo_warnings(caught)
        return result
    return wrapper


def one_line(text):
    """A message on one line whatever it quotes (a path or name holding a newline)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _detach_stdout():
    """Point stdout at /dev/null, so that the interpreter's last flush of the broken stream
    prints nothing more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):   # no real file descriptor (an in-memory stream)
        pass
    finally:
        os.close(devnull)


def _echo_warnings(caught):
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)


def device_choice(default="auto"):
    """The --device option; None stands for $CUPYPRUNE_DEVICE, else `default`."""
    return click.option(
        "--device", type=click.Choice(DEVICES), default=None,
        help="Where to run: gpu (CuPy), cpu (NumPy) or auto (GPU when usable). "
             f"Default: $CUPYPRUNE_DEVICE, else {default}.")


device_option = device_choice()
path_option = click.option(
    "--path", "path_choice", type=click.Choice(PATH_CHOICES), default="auto", show_default=True,
    help="Execution path for pruned layers; a forced path runs where it applies, other layers "
         "run dense.")
precision_option = click.option(
    "--precision", type=click.Choice(tuple(PRECISIONS)), default="fp32", show_default=True,
    help="Arithmetic precision: fp32; tf32 (fp32 storage, TF32 tensor-core GEMMs), fp16 and "
         "bf16 (16-bit storage, fp32 accumulation; bf16 outputs are written as float32) need "
         "the GPU.")
graph_option = click.option(
    "--cuda-graph/--no-cuda-graph", "cuda_graph", default=None,
    help="Replay the forward pass as one CUDA graph (GPU). Default: on where every layer "
         "allows it (not with the CSR path).")


def check_not_the_model(path, option, model_paths):
    """An output that is one of the model files (under any name: a link, another path) would
    replace it."""
    for model in model_paths:
        try:
            same = os.path.samefile(path, model)
        except OSError:                     # one of them does not exist (yet)
            continue
        if same:
            raise InputError(f"{option} {path} is the model file {model}: it would be replaced")


def check_writable(path, option="--output", suffix=None):
    """Fail before any work when `option`'s file cannot be written: an empty path, a directory,
    a pipe or device (the atomic rename would replace it), a missing or unwritable directory, or
    (with `suffix`) a name that does not end in it."""
    if path == "":
        raise InputError(f"{option}: empty path")
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise InputError(f"{option} {path}: is a directory")
    if os.path.exists(path) and not os.path.isfile(path):
        raise InputError(f"{option} {path}: not a regular file (a pipe or device?)")
    if suffix and not path.endswith(suffix):
        raise InputError(f"{option} {path}: must end in {suffix}")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise InputError(f"{option} {path}: {directory} is a file, not a directory")
    if not os.path.isdir(directory):
        raise InputError(f"{option} {path}: directory {directory} does not exist")
    _probe_directory(path, option, directory)


def _probe_directory(path, option, directory):
    """Create and remove a temporary file where the output will go: os.access says yes to root
    on a read-only mount or in /proc, where the real write would fail only after all the work."""
    try:
        probe_directory(directory)
    except OSError as e:
        raise InputError(f"{option} {path}: not writable ({e.strerror or e})") from None


def _save_atomic(path, write):
    """write(f) into a temporary file beside path, renamed over it only when complete."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            write(f)
    except OSError as e:                        # disk full, or the directory went away
        raise InputError(f"{path}: cannot write ({e.strerror or e})") from None


def save_npy_atomic(path, array):
    _save_atomic(path, lambda f: np.save(f, array))


def save_text_atomic(path, text):
    _save_atomic(path, lambda f: f.write(text.encode()))


def format_table(headers, rows, align=None):
    """A plain text table; align: string of 'l'/'r' per column."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" * len(headers)

    def line(r):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(r, widths, align)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])
