"""`l2rw-train ARGS` as a user types it: in a subprocess, or in this process (Hydra included)."""
import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`l2rw-train ARGS` in a subprocess, as a user would type it."""
    # this checkout's l2rw, whichever copy the venv has installed
    env = os.environ | {"HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "l2rw.run.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def l2rw_train(*args: str) -> tuple[int, str]:
    """`l2rw-train ARGS` in this process: its exit code and what it wrote to stderr."""
    from l2rw.run import train as train_module

    sys_argv = sys.argv
    sys.argv = ["l2rw-train", *args]
    stderr = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            train_module.cli()
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = sys_argv
        GlobalHydra.instance().clear()
    return code, stderr.getvalue()
