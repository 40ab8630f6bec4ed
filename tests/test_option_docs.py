"""scripts/option_docs.py: the docs' option tables are the ones the declarations give, every
option has its doc and a row, and a stale, missing or unknown table fails the check in one line."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.scripts import SCRIPTS, load_script

option_docs = load_script("option_docs")
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def docs(tmp_path):
    """A copy of docs/'s pages, to plant faults in."""
    for page in DOCS.glob("*.md"):
        shutil.copy(page, tmp_path / page.name)
    return tmp_path


def check(folder: Path, capsys) -> tuple[int, list[str]]:
    code = option_docs.main(["--check", "--docs", str(folder)])
    return code, capsys.readouterr().err.splitlines()


def test_the_docs_tables_are_the_ones_the_declarations_give(capsys):
    assert check(DOCS, capsys) == (0, [])


def test_every_option_has_its_doc_and_a_row_in_a_table():
    pages = [page.read_text() for page in DOCS.glob("*.md")]
    assert option_docs.unlisted(pages) == []


@pytest.mark.parametrize("page, key, table", [
    ("methods.md", "method.mix", "method=l2rw"),
    ("methods.md", "loss.q", "loss=focal,logit_adjusted,ldam,gce,sce,elr"),  # a table with a column of choices
    ("datasets.md", "noise.rate", "noise"),
])
def test_a_stale_row_fails_the_check_in_one_line_naming_it(docs, capsys, page, key, table):
    path = docs / page
    row = next(line for line in path.read_text().splitlines() if f"`{key}` | `" in line)
    path.write_text(path.read_text().replace(row, row.replace(" | a finite number", " | a number")))
    code, lines = check(docs, capsys)
    assert code == 1
    assert lines == [f"{page}: the `<!-- options: {table} -->` table is stale at the row of `{key}`; "
                     "run `python scripts/option_docs.py` to rewrite it"]


def test_rewriting_brings_a_stale_table_back(docs, capsys):
    page = docs / "datasets.md"
    page.write_text(page.read_text().replace("| `dataset.image_size` | `64` |", "| `dataset.image_size` | `128` |"))
    assert check(docs, capsys)[0] == 1
    assert option_docs.main(["--docs", str(docs)]) == 0
    assert page.read_text() == (DOCS / "datasets.md").read_text()


def test_an_option_in_no_table_fails_the_check(docs, capsys):
    page = docs / "tracking.md"
    page.write_text(page.read_text().replace("<!-- options: logger=tensorboard,mlflow -->", "<!-- options: logger=mlflow -->"))
    code, lines = check(docs, capsys)
    assert code == 1
    assert "logger.tensorboard.subdir of logger=tensorboard is in no docs table; add it to an `<!-- options: ... -->` table" in lines


def test_an_option_without_its_doc_fails_the_check(monkeypatch, capsys):
    declared = option_docs.doc_of
    monkeypatch.setattr(option_docs, "doc_of", lambda field: "" if "6n+2 layers" in field.description else declared(field))
    option_docs.rows_of.cache_clear()  # rows made with the declared docs
    try:
        code, lines = check(DOCS, capsys)
    finally:
        option_docs.rows_of.cache_clear()
    assert code == 1
    assert "model.blocks_per_stage of model=resnet32 has no doc= in its annotation; say there what it does" in lines


def test_a_table_naming_no_options_fails_the_check(docs, capsys):
    page = docs / "methods.md"
    page.write_text(page.read_text().replace("<!-- options: method=l2rw -->", "<!-- options: method=l2rv -->"))
    code, lines = check(docs, capsys)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("methods.md: `<!-- options: method=l2rv -->` names no table")


@pytest.mark.parametrize("value, node, words", [
    (0.9, "", "`0.9`"),
    (None, "", "`null`"),
    ([256, 256], "", "`[256,256]`"),
    ("${dataset.meta_per_class}", "meta", "`dataset.meta_per_class`"),
    ("${.root}", "dataset", "`dataset.root`"),
    ("${oc.select:dataset.tuned.${method.name}.${loss.name}.lr,${oc.select:dataset.tuned.${method.name}.lr,0.1}}", "",
     "`dataset.tuned.<method>.<loss>.lr`, else `dataset.tuned.<method>.lr`, else `0.1`"),
    ("${oc.env:L2RW_DATA,'~/.cache/l2rw'}/ham10000", "dataset", "`$L2RW_DATA/ham10000`, else `~/.cache/l2rw/ham10000`"),
    ("${mwnet_variant:${noise.kind}}", "method", "from `noise.kind`"),
])
def test_a_default_is_shown_in_words(value, node, words):
    assert option_docs.shown(value, node) == words


def test_a_cell_escapes_markdown_outside_code():
    assert option_docs._cell("w*loss | e < `a*b|c`") == r"w\*loss \| e \< `a*b|c`"


@pytest.mark.slow
def test_the_command_line_check_exits_1_on_a_stale_table(docs):
    page = docs / "methods.md"
    page.write_text(page.read_text().replace("| `hardware.compile` | `false` |", "| `hardware.compile` | `true` |"))
    done = subprocess.run([sys.executable, str(SCRIPTS / "option_docs.py"), "--check", "--docs", str(docs)],
                          capture_output=True, text=True, cwd=DOCS.parent)
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["methods.md: the `<!-- options: hardware -->` table is stale at the row of "
                                        "`hardware.compile`; run `python scripts/option_docs.py` to rewrite it"]
