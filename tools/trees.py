"""Running probe code under another runtime tree (an older `cupyprune` package beside this
checkout), for the tools that compare two versions of the runtime side by side.

Each probe is a fresh `python3 -P` process with PYTHONPATH=TREE: `-P` keeps the working
directory off sys.path, so that ./cupyprune cannot shadow the tree's package. A probe prints
one JSON line last; its failure is one line naming the tree."""
import json
import os
import subprocess
import sys

from oneline import OneLineParser, UsageError, check_out


class TreeRunFailed(Exception):
    """A probe ended with an error in one tree: one line, exit code 2."""


def tree_parser(prog, description, verb):
    """A parser taking a model file and repeatable --tree NAME=DIR options ("a runtime tree to
    VERB"); the tool adds its own options, then parse_tree_args."""
    p = OneLineParser(prog=prog, description=description)
    p.add_argument("model")
    p.add_argument("--tree", action="append", required=True, metavar="NAME=DIR",
                   help=f"a runtime tree to {verb} (repeatable)")
    return p


def parse_tree_args(p, argv, out_help):
    """Add --out, parse argv -> args with .trees [(name, dir)]; the output path checked."""
    p.add_argument("--out", help=out_help)
    args = p.parse_args(argv)
    args.trees = runtime_trees(args.tree)
    if args.out is not None:
        check_out(args.out)
    return args


def runtime_trees(items):
    """--tree NAME=DIR values -> [(name, dir)]; UsageError for one without DIR/cupyprune."""
    trees = []
    for item in items:
        name, sep, tree = item.partition("=")
        if not sep or not os.path.isdir(os.path.join(tree, "cupyprune")):
            raise UsageError(f"--tree {item!r}: expected NAME=DIR with DIR/cupyprune")
        trees.append((name, tree))
    return trees


def run_in_tree(tree, probe, args, timeout, failure):
    """Run `probe` (Python source) with `args` under `tree` -> its last stdout line as JSON.
    TreeRunFailed "TREE: FAILURE: LAST STDERR LINE" where it exits non-zero."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    done = subprocess.run([sys.executable, "-P", "-c", probe, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TreeRunFailed(f"{tree}: {failure}: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])
