"""Wall time of one digits sweep with 1 and with 2 joblib workers, in one process run.

    python scripts/sweep_scaling.py                  # 12 jobs: 3 methods x 4 seeds, default steps
    python scripts/sweep_scaling.py steps=200        # extra overrides go to every job

Each sweep writes to its own temporary results CSV and sweep dir, so `skip_done` skips nothing.
Other processes on the machine slow both sweeps: compare the numbers of one run only.

Measured: docs/sweeps.md (on a shared machine pass threads=1).
"""
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

SWEEP = ["method=sgd,weighted_sampler,l2rw", "seed=0,1,2,3", "progress=false"]


def sweep_seconds(workers: int, overrides: list[str], folder: Path) -> float:
    args = [
        "--multirun", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}", *SWEEP, *overrides,
        f"results_csv={folder / 'results.csv'}", f"hydra.sweep.dir={folder / 'sweep'}",
    ]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "l2rw.run.train", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the {workers}-worker sweep failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    rows = pd.read_csv(folder / "results.csv")
    assert len(rows) == 12 and set(rows.status) == {"ok"}, rows[["method", "seed", "status"]]
    return seconds


def main() -> None:
    overrides = sys.argv[1:]
    if {"-h", "--help"} & set(overrides):
        print(__doc__)
        return
    with tempfile.TemporaryDirectory() as temporary:
        seconds = {workers: sweep_seconds(workers, overrides, Path(temporary) / str(workers)) for workers in (1, 2)}
    for workers, value in seconds.items():
        print(f"{workers} joblib worker(s): {value:.1f} s for 12 jobs")
    print(f"speed-up with 2 workers: {seconds[1] / seconds[2]:.2f}x")


if __name__ == "__main__":
    main()
