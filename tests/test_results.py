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
