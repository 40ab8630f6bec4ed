"""The results CSV keeps one text form per value, whichever append path wrote the row."""
import pandas as pd

from l2rw.results import append_row


def test_a_number_column_new_to_the_file_is_written_as_the_plain_appends_write_it(tmp_path):
    path = tmp_path / "results.csv"
    append_row(path, {"method": "sgd", "lr": 0.1})
    append_row(path, {"method": "l2rw", "lr": 0.1, "method.meta_batch_size": 100})  # rewrites the file
    append_row(path, {"method": "l2rw", "lr": 0.1, "method.meta_batch_size": 100})  # plain append
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert table["method.meta_batch_size"].tolist() == ["", "100", "100"]
    assert table.lr.tolist() == ["0.1", "0.1", "0.1"]


def test_rows_of_methods_with_fewer_columns_append_and_none_is_always_an_empty_field(tmp_path):
    path = tmp_path / "results.csv"
    append_row(path, {"method": "l2rw", "hardware.amp": None, "method.impl": "fwd"})
    append_row(path, {"method": "sgd", "hardware.amp": None})  # columns the file has: appended
    append_row(path, {"method": "sgd", "hardware.amp": None, "noise_rate": 0.2})  # a new column: rewritten
    append_row(path, {"method": "sgd", "hardware.amp": None})
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["method", "hardware.amp", "method.impl", "noise_rate"]
    assert table["hardware.amp"].tolist() == ["", "", "", ""]  # one group in the report, not "" and "None"
    assert table["method.impl"].tolist() == ["fwd", "", "", ""]
    assert table.noise_rate.tolist() == ["", "", "0.2", ""]
