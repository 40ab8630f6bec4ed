"""The documentation: links that lead somewhere, and a README short enough to be read."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTES = sorted((ROOT / "docs" / "experiments").glob("*.md"))
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *NOTES]
# [text](target) and ![alt](target); a target may be followed by a "title"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # code blocks hold no links
    return [target for target in LINK.findall(text) if not EXTERNAL.match(target)]


def test_the_docs_pages_exist():
    names = {page.name for page in PAGES}
    assert {"datasets.md", "methods.md", "outputs.md", "performance.md", "sweeps.md", "results.md"} <= names


def test_every_experiment_note_is_dated_and_listed_in_results_md():
    """Findings live in dated notes (docs/experiments/YYYY-MM-DD-topic.md); results.md is their index."""
    assert NOTES
    undated = [note.name for note in NOTES if not re.fullmatch(r"\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.md", note.name)]
    assert undated == []
    index = relative_links(ROOT / "docs" / "results.md")
    assert [note.name for note in NOTES if f"experiments/{note.name}" not in index] == []


@pytest.mark.parametrize("note", NOTES, ids=lambda note: note.name)
def test_every_experiment_note_gives_the_commands_that_produced_it(note):
    assert "```bash" in note.read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_names_an_existing_file_without_an_anchor(page):
    links = relative_links(page)
    # headings get reworded as the docs grow; a link to a whole file cannot break that way
    assert [link for link in links if "#" in link] == [], "link to the file, not to a heading"
    broken = [link for link in links if not (page.parent / link).exists()]
    assert broken == [], f"{page.name}: links to missing files"


def test_the_link_pattern_finds_links_and_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('See [a](docs/a.md), ![plot](p.png "title") and [web](https://example.org).\n'
                    "```bash\n[not](a_link.md)\n```\n")
    assert relative_links(page) == ["docs/a.md", "p.png"]


def test_the_readme_stays_short_and_keeps_the_two_set_up_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 260
    # .ci/run runs the second one
    assert "bash scripts/venv.sh l2rw-train --multirun method=sgd,weighted_sampler,l2rw\n" in readme
    assert "bash scripts/venv.sh python -m pytest -q\n" in readme
