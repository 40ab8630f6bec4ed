"""scripts/device_check.py: its small CPU run passes every check, and a failing check is a row
that fails the run."""
import pytest

from tests.helpers.scripts import load_script


@pytest.fixture(scope="module")
def device_check():
    return load_script("device_check")


def report_rows(text: str) -> dict[str, str]:
    """check name -> status, from the report's first table."""
    rows = [line.split(" | ") for line in text.split("\n\n")[1].splitlines()[2:]]
    return {name.removeprefix("| "): status for name, status, _ in rows}


@pytest.mark.slow
def test_quick_cpu_run_passes_every_check_and_writes_one_report(device_check, tmp_path):
    out = tmp_path / "report.md"
    with pytest.raises(SystemExit) as exit_:
        device_check.main(["--device", "cpu", "--quick", "--out", str(out)])
    text = out.read_text()
    assert exit_.value.code == 0, text
    rows = report_rows(text)
    assert rows.pop("data fashion_mnist") in ("ok", "skipped")  # trained on only where its files are
    models, impls = ("lenet", "resnet32"), ("fwd", "double_backprop", "last_layer")
    trained = {f"train digits {model} {method} float32" for model in models for method in device_check.METHODS}
    weights = {f"weights {model} {impl} cpu = cpu" for model in models for impl in impls}
    expected = trained | weights | {"checkpoint saved and resumed on cpu", "bench cpu"}
    assert expected <= set(rows) and set(rows.values()) == {"ok"}
    assert {"class_balanced", "l2rw last_layer"} <= set(device_check.METHODS)
    assert "| lenet | 1x8x8 | l2rw last_layer |" in text  # the step benchmark's table


def test_a_check_that_raises_is_a_failed_row_and_a_skipped_one_is_not(device_check, tmp_path):
    report = device_check.Report(tmp_path / "report.md", "title")

    def missing_data():
        raise device_check.Skipped("no files")

    assert report.check("fine", lambda: "all equal")
    assert not report.check("skipped", missing_data) and not report.failed
    assert not report.check("broken", lambda: 1 / 0) and report.failed
    rows = report_rows((tmp_path / "report.md").read_text())
    assert rows == {"fine": "ok", "skipped": "skipped", "broken": "FAILED"}
    assert "ZeroDivisionError: division by zero" in (tmp_path / "report.md").read_text()
