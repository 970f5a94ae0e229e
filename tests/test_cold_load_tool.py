"""tools/cold_load.py: each repeat a fresh process importing the named tree; the record names
the tree each timing imported; a tree that cannot load the file is one line and exit 2."""
import json
import os
import subprocess
import sys

from serve_helpers import DIGITS, ROOT

TOOL = os.path.join(ROOT, "tools", "cold_load.py")


def _run(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_times_each_tree_in_fresh_processes(tmp_path):
    other = tmp_path / "copy"
    other.mkdir()
    os.symlink(os.path.join(ROOT, "cupyprune"), other / "cupyprune")
    out = tmp_path / "cold.json"
    done = _run(DIGITS, "--tree", f"a={ROOT}", "--tree", f"b={other}", "--device", "cpu",
                "--repeat", "2", "--out", out)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert set(record["runs"]) == {"a", "b"} and record["repeat"] == 2
    for name, tree in (("a", ROOT), ("b", str(other))):
        runs = record["runs"][name]
        assert len(runs) == 2
        # the package each process imported lies in its own tree
        assert all(r["file"].startswith(tree) for r in runs), runs
        assert all(0 < r["load_s"] < 60 and r["import_s"] > 0 for r in runs)
        summary = record["summary"][name]
        assert summary["load_s_min"] <= summary["load_s_median"]


def test_a_tree_without_the_package_is_one_line(tmp_path):
    done = _run(DIGITS, "--tree", f"x={tmp_path}", "--device", "cpu")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --tree 'x={tmp_path}': expected NAME=DIR with DIR/cupyprune"]


def test_a_tree_that_cannot_load_is_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    done = _run(bad, "--tree", f"a={ROOT}", "--device", "cpu", "--repeat", "1")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {ROOT}: load failed: ") and "ModelFileError" in lines[0]


def test_a_repeat_below_one_is_one_line(tmp_path):
    done = _run(DIGITS, "--tree", f"a={ROOT}", "--device", "cpu", "--repeat", "0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--repeat" in lines[0], \
        done.stderr
