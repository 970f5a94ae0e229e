"""tools/kernel_profile.py: the side-by-side table of two trees' kernels (largest difference
first, a kernel one tree lacks counted as zero there, per-pass totals), and one-line errors."""
import os
import subprocess
import sys

from serve_helpers import DIGITS, ROOT

TOOL = os.path.join(ROOT, "tools", "kernel_profile.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import kernel_profile  # noqa: E402


def _profile(median_ms, **kernels):
    return {"median_ms": median_ms, "graph": True,
            "kernels": {k: {"launches": n, "us": us} for k, (n, us) in kernels.items()}}


def test_table_puts_the_largest_difference_first():
    results = {"old": _profile(0.5, gemm=(2, 10.0), copy=(1, 3.0)),
               "new": _profile(0.6, gemm=(2, 12.0), softmax=(3, 9.0))}
    lines = kernel_profile.table(results)
    rows = [line.split() for line in lines[1:4]]
    # softmax (9 us, new only), copy (3 us, old only), gemm (2 us apart)
    assert [r[-1] for r in rows] == ["softmax", "copy", "gemm"]
    assert rows[0][:4] == ["0.0", "0.0", "3.0", "9.0"]
    assert rows[1][:4] == ["1.0", "3.0", "0.0", "0.0"]
    assert lines[4] == ("old: 3 kernels, 13.0 us of kernels per pass, median pass 500.0 us "
                        "(graph True)")
    assert lines[5].startswith("new: 5 kernels, 21.0 us of kernels per pass, median pass 600.0")


def _run(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_a_tree_without_the_package_is_one_line(tmp_path):
    done = _run(DIGITS, "--tree", f"x={tmp_path}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --tree 'x={tmp_path}': expected NAME=DIR with DIR/cupyprune"]


def test_a_bad_graph_choice_is_one_line():
    done = _run(DIGITS, "--tree", f"a={ROOT}", "--graph", "sometimes")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "--graph" in lines[0], done.stderr
