"""exit_now: the command's exit code and output, its exit handlers run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.core.config import PROJECT_ROOT


@pytest.mark.parametrize(("code", "returncode", "stderr"),
                         [("3", 3, ""), ("None", 0, ""), ("'no such user'", 1, "no such user\n")])
def test_exit_now_keeps_the_code_the_output_and_the_exit_handlers(code: str, returncode: int, stderr: str) -> None:
    script = ("import atexit\nfrom pipeline.core.process import exit_now\n"
              "atexit.register(lambda: print('handler ran'))\nprint('output', end=' ')\n"
              f"exit_now({code})\nprint('never')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (returncode, "output handler ran\n", stderr)
