"""l2rw-select on hand-made results CSVs where the best validation choice and the best test choice differ."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from l2rw.results.selection import main

FIXED = {"dataset": "digits", "imbalance": "0.9", "momentum": "0.9", "weight_decay": "0.0005", "batch_size": "100"}


def write_results(path: Path, rows: list[dict]) -> Path:
    """Rows (as l2rw-train writes them: text, with run_id, status and accuracy filled in) to `path`."""
    table = pd.DataFrame([{"run_id": f"r{i}", **FIXED, "status": "ok", **row} for i, row in enumerate(rows)])
    table["accuracy"] = table.balanced_accuracy
    table.astype(str).to_csv(path, index=False)
    return path


def run(method, lr, mix, val, test, status="ok"):
    """One row per seed; `val` and `test` hold each seed's validation and test balanced accuracy."""
    return [{"method": method, "lr": lr, "method.mix": mix, "method.meta_batch_size": "" if method == "sgd" else "100",
             "seed": seed, "status": status, "val_balanced_accuracy": v, "balanced_accuracy": t}
            for seed, (v, t) in enumerate(zip(val, test))]


@pytest.fixture
def results(tmp_path) -> Path:
    """sgd: lr 0.1 is best on validation, lr 0.3 on test. l2rw: (lr 0.1, mix 0.5) has one seed only."""
    return write_results(tmp_path / "results.csv", [
        *run("sgd", "0.1", "", [0.70, 0.72, 0.74], [0.60, 0.62, 0.64]),
        *run("sgd", "0.3", "", [0.60, 0.62, 0.64], [0.80, 0.82, 0.84]),
        *run("sgd", "1.0", "", [""], [""], status="diverged"),  # no scores: left out, not an error
        *run("l2rw", "0.1", "0", [0.78, 0.80, 0.82], [0.70, 0.72, 0.74]),
        *run("l2rw", "0.1", "0.5", [0.90], [0.50]),
        *run("l2rw", "0.3", "0", [0.70, 0.70, 0.70], [0.90, 0.90, 0.90]),
    ])


def test_chooses_on_validation_never_on_test(results, tmp_path, capsys):
    sgd = pd.read_csv(results).query("status == 'ok' and method == 'sgd'")
    assert sgd.groupby("lr").balanced_accuracy.mean().idxmax() == 0.3  # test-set selection would pick 0.3

    main([str(results), "--out", str(tmp_path / "chosen.csv")])
    chosen = pd.read_csv(tmp_path / "chosen.csv", dtype=str, keep_default_na=False)
    # lr, momentum, weight_decay and method.mix (varies within l2rw) are tuned; constant meta_batch_size is not shown
    assert list(chosen.columns) == [
        "method", "lr", "momentum", "weight_decay", "method.mix", "val_balanced_accuracy_mean",
        "val_balanced_accuracy_std", "balanced_accuracy_mean", "balanced_accuracy_std", "seeds", "candidates"]
    assert chosen[["method", "lr", "method.mix", "seeds", "candidates"]].values.tolist() == [
        ["l2rw", "0.1", "0.5", "1", "3"],  # the highest validation mean, from one seed: see the warning
        ["sgd", "0.1", "", "3", "2"],
    ]
    numbers = chosen.set_index("method").drop(columns=["lr", "momentum", "weight_decay", "method.mix"])
    assert numbers.loc["sgd"].astype(float).tolist() == pytest.approx([0.72, 0.02, 0.62, 0.02, 3, 2])
    assert numbers.loc["l2rw", "val_balanced_accuracy_std"] == ""  # one seed: no std

    out, err = capsys.readouterr()
    assert "| sgd | 0.1 | 0.9 | 0.0005 | – | 0.720 ± 0.020 | 0.620 ± 0.020 | 3 | 2 |" in out.splitlines()
    assert "| l2rw | 0.1 | 0.9 | 0.0005 | 0.5 | 0.900 | 0.500 | 1 | 3 |" in out.splitlines()
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: l2rw: candidates have unequal numbers of seeds (lr=0.1, method.mix=0: 3; "
                        "lr=0.1, method.mix=0.5: 1; lr=0.3, method.mix=0: 3); their means are not equally reliable"]


def test_tuned_override_makes_the_other_columns_settings(results, tmp_path, capsys):
    main([str(results), "--tuned", "lr", "--out", str(tmp_path / "chosen.csv")])
    chosen = pd.read_csv(tmp_path / "chosen.csv", dtype=str, keep_default_na=False)
    assert chosen[["method", "method.mix", "lr", "candidates"]].values.tolist() == [
        ["l2rw", "0", "0.1", "2"], ["l2rw", "0.5", "0.1", "1"], ["sgd", "", "0.1", "2"]]
    assert "warning" not in capsys.readouterr().err  # within each setting the candidates have equal seeds


def test_ties_go_to_lower_std_then_to_the_first_in_numeric_order(tmp_path, capsys):
    def row(imbalance, batch_size, seed, val):
        return {"method": "sgd", "imbalance": imbalance, "batch_size": batch_size, "lr": "0.1", "seed": seed,
                "val_balanced_accuracy": val, "balanced_accuracy": 0.5}

    results = write_results(tmp_path / "results.csv", [
        *[row("0.5", "64", s, v) for s, v in enumerate([0.5, 1.0])],  # same mean as 128, larger std
        *[row("0.5", "128", s, v) for s, v in enumerate([0.625, 0.875])],
        row("0.9", "32", 0, 0.75),  # one seed: no std, ranks after equal means with one
        *[row("0.9", b, s, 0.75) for b in ("128", "64") for s in (0, 1)],  # 64 before 128 as numbers, not as text
    ])
    main([str(results), "--tuned", "batch_size", "--out", str(tmp_path / "chosen.csv")])
    chosen = pd.read_csv(tmp_path / "chosen.csv", dtype=str, keep_default_na=False)
    assert chosen[["imbalance", "batch_size", "seeds", "candidates"]].values.tolist() == [
        ["0.5", "128", "2", "2"], ["0.9", "64", "2", "3"]]
    assert "warning: sgd, imbalance=0.9: candidates have unequal numbers of seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_missing_validation_column_exits_2_naming_the_fix(results, tmp_path):
    pd.read_csv(results).drop(columns="val_balanced_accuracy").to_csv(results, index=False)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "l2rw.results.selection", str(results)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error:") and "dataset.val_per_class=N" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--metric", "balanced_accuracy"], "--metric balanced_accuracy: choose on a validation column"),
    (["--tuned", "lr,learning_rate"], "--tuned learning_rate: not a config column"),
    (["--out", "no_such_folder/chosen.csv"], "--out no_such_folder/chosen.csv: cannot write this file"),
])
def test_user_mistakes_exit_2_naming_the_option(results, monkeypatch, capsys, args, message):
    monkeypatch.chdir(results.parent)
    with pytest.raises(SystemExit) as exit_:
        main([str(results), *args])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("a,b\n1,2\n", "lacks the column(s) method, seed, status"),
    ("run_id,method,seed,status,accuracy,balanced_accuracy,val_balanced_accuracy\nr0,sgd,0,ok,0.5,0.5,\n",
     "1 of 1 finished run(s) have no val_balanced_accuracy"),
])
def test_unusable_files_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "results.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exit_:
        main([str(path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error:") and message in err


def test_out_never_overwrites_the_results_or_a_file_it_did_not_write(results, tmp_path, capsys):
    notes, link = tmp_path / "notes.txt", tmp_path / "link.csv"
    notes.write_text("lr 0.1 was best\n")
    link.symlink_to(results)
    (tmp_path / "folder").mkdir()
    before = {path: path.read_bytes() for path in (results, notes)}
    for out, message in [
        (results, f"--out {results} is the results CSV being read"),
        (link, f"--out {link} is the results CSV being read"),
        (notes, f"--out {notes} exists and is not a table l2rw-select wrote"),
        (tmp_path / "folder", f"--out {tmp_path / 'folder'} is not a regular file"),
        (notes / "chosen.csv", f"--out {notes / 'chosen.csv'}: cannot write this file ({notes} is not a folder)"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main([str(results), "--out", str(out)])
        out_text, err = capsys.readouterr()
        assert exit_.value.code == 2 and out_text == "" and err.startswith(f"error: {message}")
        assert len(err.strip().splitlines()) == 1
    assert {path: path.read_bytes() for path in (results, notes)} == before


def test_out_replaces_a_table_it_wrote_before(results, tmp_path, capsys):
    out = tmp_path / "chosen.csv"
    main([str(results), "--out", str(out)])
    main([str(results), "--tuned", "lr", "--out", str(out)])  # a rerun with other options
    assert pd.read_csv(out).candidates.tolist() == [2, 1, 2]
