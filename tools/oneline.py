"""argparse for the tools' command lines, with the project's rule for bad input: one line
`error: ...` on stderr (no usage block) and exit code 2. Also argparse types for seeds and
counts, so that a bad value is refused before any work starts."""
import argparse
import json
import os
import sys

from cupyprune.atomic import Terminated, atomic_path, probe_directory, terminate_by_exception

SEED_LIMIT = 2 ** 32          # NumPy and scikit-learn take seeds in [0, 2**32)


class UsageError(Exception):
    """A bad option or option value: one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """Raises UsageError where argparse would print its usage block and exit."""

    def error(self, message):
        raise UsageError(message)


def parse_or_exit(parse, argv):
    """parse(argv) -> its result; a UsageError is printed as `error: ...` and exits with 2."""
    try:
        return parse(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _int(text, what, low, high=None):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value >= high):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def seed(text):
    return _int(text, f"an integer in [0, {SEED_LIMIT})", 0, SEED_LIMIT)


def non_negative_int(text):
    return _int(text, "a non-negative integer", 0)


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def positive_int(text):
    return _int(text, "a positive integer", 1)


def check_out(path):
    """Refuse an --out file that cannot be written, before any (slow) work starts."""
    if not path:
        raise UsageError("--out: empty path")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"--out {path} is a directory")
    if not os.path.isdir(directory):
        raise UsageError(f"--out {path}: directory {directory} does not exist")
    if not can_create_in(directory):
        raise UsageError(f"--out {path}: directory {directory} is not writable")


def parse_out_only(prog, description, out_help, argv):
    """The command line of a GPU measuring tool whose one option is --out (required, checked
    writable) -> its parsed arguments."""
    ap = OneLineParser(prog=prog, description=description)
    ap.add_argument("--out", help=out_help)
    return parse_with_out(ap, argv)


def parse_with_out(ap, argv):
    """ap's parsed arguments, its --out option required and checked writable."""
    args = ap.parse_args(argv)
    if not args.out:
        raise UsageError("--out is required (the results file)")
    check_out(args.out)
    return args


class ResultRows:
    """A GPU measuring tool's result rows: each printed as one JSON line when made (progress,
    and what a run killed at its time limit leaves in its log), all written at the end."""

    def __init__(self):
        self.rows = []

    def add(self, row):
        print(json.dumps(row), flush=True)
        self.rows.append(row)

    def write(self, path):
        """-> `path` as a JSON list, whole or not at all; says so."""
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                json.dump(self.rows, f, indent=1)
        print(f"wrote {path}")


def can_create_in(directory):
    """Whether a file can be made in `directory` (tried for real)."""
    try:
        probe_directory(directory)
        return True
    except OSError:
        return False


def gpu_or_say(tool):
    """True where CuPy sees a CUDA GPU; else prints `error: TOOL needs CuPy and a CUDA GPU` (the
    caller then exits with 2)."""
    try:
        from cupyprune.backend import gpu_available
        if gpu_available():
            return True
    except ImportError:
        pass
    print(f"error: {tool} needs CuPy and a CUDA GPU", file=sys.stderr)
    return False


def run_tool(main):
    """A tool's main() -> its exit code, with Ctrl-C and SIGTERM as one line (`error:
    interrupted`, exit 130; `error: terminated`, exit 143) instead of a traceback or a silent
    death: the tools write through atomic_path, whose cleanup then runs, so nothing
    half-written is left."""
    terminate_by_exception()
    try:
        return main()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("error: terminated", file=sys.stderr)
        return 143
