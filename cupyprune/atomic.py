"""Files that appear whole or not at all: every writer of the project (model files, the CLI's
outputs, the tools' checkpoints) writes a temporary file beside the target and renames it over
the target once complete, so a failed run never leaves a partial file."""
import contextlib
import os
import signal
import tempfile


@contextlib.contextmanager
def atomic_path(path, prefix=".cupyprune-"):
    """Yield a temporary path in path's folder; on a clean exit it becomes `path` (with the
    permissions of a normal new file: mkstemp makes 0600), else it is removed.
    OSError from creating it (folder missing or not writable) reaches the caller."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def probe_directory(directory):
    """Make and remove a temporary file in `directory`: OSError where no file can be made.
    Tried for real because os.access answers yes to root whatever the mode, and in /proc."""
    with tempfile.TemporaryFile(dir=directory):
        pass


class Terminated(BaseException):
    """SIGTERM (a `timeout`, a scheduler), raised in the main thread like KeyboardInterrupt: the
    writers' cleanup runs on the way out instead of the process vanishing mid-write."""


def _raise_terminated(signum, frame):
    raise Terminated()


def terminate_by_exception():
    """From now on SIGTERM raises Terminated in the main thread (a command-line entry point
    calls this; a library must leave the host program's signals alone)."""
    signal.signal(signal.SIGTERM, _raise_terminated)
