"""Ending a command's process."""

from __future__ import annotations

import atexit
import os
import sys


def exit_now(code: int | str | None) -> None:
    """End the process with `code` (as `sys.exit` reads it) after the interpreter's exit handlers, without C++
    static destructors: those can abort a finished command (std::terminate, exit 134) while Arrow's thread pools
    are torn down after a Parquet read (apache/arrow#34314; about 1 run in 20 here, pyarrow 25 and 26), after its
    output was written. The exit code must be the command's."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
