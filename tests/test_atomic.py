"""cupyprune.atomic: a written file appears whole, with a normal file's permissions; a failed
write leaves neither the target nor a temporary file."""
import os
import stat

import pytest

from cupyprune.atomic import atomic_path


def test_complete_write_becomes_the_target_with_umask_permissions(tmp_path):
    target = tmp_path / "out.bin"
    old = os.umask(0o022)
    try:
        with atomic_path(str(target)) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and not target.exists()
            with open(tmp, "wb") as f:
                f.write(b"abc")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"abc"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["out.bin"]


def test_failed_write_leaves_nothing_and_keeps_an_old_target(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="half way"):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"new, partial")
            raise ValueError("half way")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_missing_folder_is_an_oserror(tmp_path):
    with pytest.raises(OSError):
        with atomic_path(str(tmp_path / "no" / "out.bin")):
            pass


def test_sigterm_mid_write_leaves_nothing_and_one_line(tmp_path):
    """A tool killed by SIGTERM (`timeout`, a scheduler) while writing: atomic_path's cleanup
    runs, and the tool says so in one line with exit code 143."""
    import subprocess
    import sys
    from conftest import TOOLS
    script = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {TOOLS!r})\n"
        "from oneline import run_tool\n"
        "from cupyprune.atomic import atomic_path\n"
        "def main():\n"
        f"    with atomic_path({str(tmp_path / 'out.bin')!r}) as tmp:\n"
        "        open(tmp, 'wb').write(b'half')\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        open(tmp, 'ab').write(b' and the rest')\n"
        "    return 0\n"
        "sys.exit(run_tool(main))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode, proc.stderr) == (143, "error: terminated\n")
    assert os.listdir(tmp_path) == []
