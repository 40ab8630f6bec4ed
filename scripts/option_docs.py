"""The docs' option tables, written from the options' declarations.

    python scripts/option_docs.py           # rewrite every table
    python scripts/option_docs.py --check   # rewrite nothing; exit 1 with a one-line hint when a table is stale

A table sits in a page of docs/ between `<!-- options: WHAT -->` and `<!-- /options -->`; WHAT says
which options it lists:
- `config`: the top-level keys of conf/config.yaml (`TopLevel` of l2rw/run/config_schema.py, with
  `meta.*`; `noise.*` have their own table);
- `noise`, `hardware`, `dataset`: the keys of `Noise`, `Hardware` and `Dataset` there (a
  default that differs between the files of conf/hardware/ or conf/dataset/ is shown for each);
- `GROUP=CHOICE,...`: the options of what conf/GROUP/CHOICE.yaml builds (its `_target_`; a
  dataset's `source._target_`, its loader), GROUP one of method, loss, model, dataset, logger.

A row holds the key as the command line sets it, its default as the YAML sets it (an
interpolation in words), what a value must be (the type's description, which the config
schema's error messages say too) and what the option does (its annotation's `doc=`). Both
modes also fail when an option has no `doc=`, or no table lists it.
"""
from __future__ import annotations

import argparse
import itertools
import re
import sys
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from l2rw.run import CONFIG_DIR
from l2rw.run.config_schema import Dataset, Hardware, Noise, Options, TopLevel, as_typed, constructor_options
from l2rw.run.options import description, doc_of

DOCS = Path(__file__).resolve().parents[1] / "docs"
REGENERATE = "python scripts/option_docs.py"
TABLE = re.compile(r"(?P<opening><!-- options: (?P<what>[^>]*?) -->\n)(?P<table>.*?)(?P<closing><!-- /options -->)", re.DOTALL)
BUILT_GROUPS = ("method", "loss", "model", "dataset", "logger")
UNSET = "unset"
# A path built on an environment variable, e.g. ${oc.env:L2RW_DATA,'~/.cache/l2rw'}/ham10000
ENV_IN_TEXT = re.compile(r"(?P<before>[^$]*)\$\{oc\.env:(?P<variable>\w+),(?P<default>[^}]*)\}(?P<after>[^$]*)")


@dataclass(frozen=True)
class Row:
    choices: tuple[str, ...]  # the choices of a group whose option this is; () for a key of every run
    key: str
    default: str
    value: str
    doc: str


def conf(group: str, choice: str) -> dict:
    """conf/<group>/<choice>.yaml (conf/config.yaml for group ""), interpolations as written."""
    return OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / group / f"{choice}.yaml"), resolve=False) or {}


def choices_of(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


# --- defaults in words ---

def shown(value, node: str = "") -> str:
    """A default as the docs show it: a literal in backticks, an interpolation in words (a
    relative one read from `node`, the dotted key of the YAML node holding it)."""
    if isinstance(value, str) and (environment := ENV_IN_TEXT.fullmatch(value)):
        before, after = environment["before"], environment["after"]
        return f"`{before}${environment['variable']}{after}`, else `{before}{yaml.safe_load(environment['default'])}{after}`"
    if isinstance(value, str) and value.startswith("${") and _closing_brace(value, 1) == len(value) - 1:
        return _interpolation(value[2:-1], node)
    return f"`{as_typed(value)}`"


def _closing_brace(text: str, opening: int) -> int:
    depth = 0
    for position in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return position
    return -1


def _interpolation(inner: str, node: str) -> str:
    resolver, colon, arguments = inner.partition(":")
    if not colon:
        return f"`{_key(inner, node)}`"
    parts = _arguments(arguments)
    if resolver == "oc.select":
        return f"`{_key(parts[0], node)}`, else {shown(_argument(parts[1]), node)}"
    # a resolver of l2rw's own: the option's doc says what it gives
    return "from " + ", ".join(shown(_argument(part), node) for part in parts)


def _arguments(text: str) -> list[str]:
    """A resolver's arguments: `text` split at the commas outside nested interpolations."""
    parts, depth, start = [], 0, 0
    for position, character in enumerate(text):
        depth += {"{": 1, "}": -1}.get(character, 0)
        if character == "," and depth == 0:
            parts.append(text[start:position])
            start = position + 1
    return [*parts, text[start:]]


def _argument(text: str):
    return text if text.startswith("${") else yaml.safe_load(text)


def _key(key: str, node: str) -> str:
    """An interpolated key as an absolute dotted key, with `<group>` for `${group.name}`."""
    key = re.sub(r"\$\{(\w+)\.name\}", r"<\1>", key)
    dots = len(key) - len(key.lstrip("."))
    if not dots:
        return key
    parents = node.split(".") if node else []
    return ".".join([*parents[: len(parents) - dots + 1], key[dots:]])


def summary(defaults: dict[str, str]) -> str:
    """One default for several files: the most common one (the first file's on a tie), then the
    others with their files."""
    counts = Counter(defaults.values())
    common = max(counts, key=lambda default: counts[default])  # max keeps the first of equal counts
    others: dict[str, list[str]] = {}
    for choice, default in defaults.items():
        if default != common:
            others.setdefault(default, []).append(choice)
    if not others:
        return common
    return f"{common} ({'; '.join(', '.join(choices) + ': ' + default for default, choices in others.items())})"


# --- rows ---

def schema_rows(schema: type[Options], configs: dict[str, dict], node: str, leave_out: tuple[str, ...] = ()) -> list[Row]:
    """A row per key of `schema` (a nested group's keys in its place), with its default in each of
    `configs`, the YAML nodes at the dotted key `node`."""
    rows = []
    for name, field in schema.model_fields.items():
        if name in ("name", *leave_out):  # a choice's name is set by choosing it
            continue
        key = f"{node}.{name}" if node else name
        if isinstance(field.annotation, type) and issubclass(field.annotation, Options):
            rows += schema_rows(field.annotation, {choice: values.get(name) or {} for choice, values in configs.items()}, key)
            continue
        defaults = {choice: shown(values[name], node) if name in values else UNSET for choice, values in configs.items()}
        rows.append(Row((), key, summary(defaults), field.description or description(field.annotation), doc_of(field)))
    return rows


def constructor_rows(group: str, choice: str) -> list[Row]:
    """A row per option of what conf/<group>/<choice>.yaml builds, with its default there (else the
    signature's)."""
    config = conf(group, choice)
    if group == "logger":  # a logger's node is under `logger`, where its YAML names the root (`@package _global_`) or not
        found = _node_with_target(config.get("logger", config), "logger")
        if found is None:  # a logger choice that adds nothing to the CSV files
            return []
        node, values = found
    elif group == "dataset":
        node, values = "dataset.source", config["source"]
    else:
        node, values = group, config
    rows = []
    for name, field in constructor_options(values["_target_"], group).model_fields.items():
        # a dataset's key that its YAML passes on to the loader through `source` is set as dataset.<key>
        holder, held = ("dataset", config) if group == "dataset" and name in config else (node, values)
        if name in held:
            default = shown(held[name], holder)
        else:
            default = "required" if field.is_required() else shown(field.default)
        rows.append(Row((choice,), f"{holder}.{name}", default, field.description or description(field.annotation), doc_of(field)))
    return rows


def _node_with_target(config: dict, node: str) -> tuple[str, dict] | None:
    """The first node below `config`, itself at the dotted key `node`, that holds a `_target_`
    (hydra's own nodes aside), and its dotted key."""
    for name, values in config.items():
        if isinstance(values, dict) and name != "hydra":
            key = f"{node}.{name}"
            found = (key, values) if "_target_" in values else _node_with_target(values, key)
            if found is not None:
                return found
    return None


@cache
def rows_of(what: str) -> tuple[Row, ...]:
    """The rows of the table `<!-- options: what -->`; ValueError when `what` names no table."""
    if what in ("config", "noise"):
        config = conf("", "config")
        if what == "noise":
            return tuple(schema_rows(Noise, {"config": config["noise"]}, "noise"))
        return tuple(schema_rows(TopLevel, {"config": config}, "", leave_out=("noise",)))
    if what in ("hardware", "dataset"):
        schema = Hardware if what == "hardware" else Dataset
        return tuple(schema_rows(schema, {choice: conf(what, choice) for choice in choices_of(what)}, what))
    group, _, choices = what.partition("=")
    if group not in BUILT_GROUPS or not choices or not set(choices.split(",")) <= set(choices_of(group)):
        raise ValueError(f"`<!-- options: {what} -->` names no table: use config, noise, hardware, dataset or "
                         f"GROUP=CHOICE,... with GROUP one of {', '.join(BUILT_GROUPS)} and CHOICE from conf/GROUP/")
    return merged([row for choice in choices.split(",") for row in constructor_rows(group, choice)])


def merged(rows: list[Row]) -> tuple[Row, ...]:
    """Rows that differ only in their choice, as one row naming each of those choices."""
    by_content: dict[tuple, Row] = {}
    for row in rows:
        content = (row.key, row.default, row.value, row.doc)
        earlier = by_content.get(content)
        by_content[content] = Row(earlier.choices + row.choices, *content) if earlier else row
    return tuple(by_content.values())


def every_row() -> list[Row]:
    """A row per option a run can be given: what the tables must list between them."""
    rows = [*rows_of("config"), *rows_of("noise"), *rows_of("hardware"), *rows_of("dataset")]
    return rows + [row for group in BUILT_GROUPS for choice in choices_of(group) for row in constructor_rows(group, choice)]


# --- tables ---

def markdown(what: str) -> str:
    """The table `<!-- options: what -->`, a column naming the choices when it lists several."""
    group, _, choices = what.partition("=")
    by_choice = "," in choices
    lines = [[f"`{group}=`"] * by_choice + ["key", "default", "value", "meaning"]]
    for row in rows_of(what):
        choice = [", ".join(f"`{choice}`" for choice in row.choices)] * by_choice
        lines.append(choice + [f"`{row.key}`", row.default, _cell(row.value), _cell(row.doc)])
    table = [f"| {' | '.join(cells)} |" for cells in lines]
    table.insert(1, "|" + "---|" * len(lines[0]))
    return "\n" + "\n".join(table) + "\n\n"


def _cell(text: str) -> str:
    """`text` as a table cell shows it: markdown's |, *, ~ and < escaped outside `code`."""
    pieces = text.split("`")
    pieces[::2] = [re.sub(r"([|*~<])", r"\\\1", piece) for piece in pieces[::2]]
    return "`".join(pieces)


def rewritten(page: str) -> str:
    """`page` with every table written anew."""
    return TABLE.sub(lambda table: table["opening"] + markdown(table["what"]) + table["closing"], page)


def staleness(page: str) -> str | None:
    """Where `page`'s first stale table first differs from what the declarations give, or None."""
    for table in TABLE.finditer(page):
        fresh = markdown(table["what"])
        if table["table"] != fresh:
            pairs = itertools.zip_longest(table["table"].splitlines(), fresh.splitlines(), fillvalue="")
            line = next(new or old for old, new in pairs if old != new)
            key_column = 1 if "," in table["what"].partition("=")[2] else 0
            where = f"the row of {line[2:].split(' | ')[key_column]}" if line.startswith("| `") else "its layout"
            return f"the `<!-- options: {table['what']} -->` table is stale at {where}"
    return None


def unlisted(pages: list[str]) -> list[str]:
    """Each option without a doc, or without a row in any table of `pages`."""
    listed = {(row.choices, row.key) for page in pages for table in TABLE.finditer(page) for row in rows_of(table["what"])}
    problems = []
    for row in every_row():
        where = f"{row.key} of {row.key.split('.')[0]}={row.choices[0]}" if row.choices else row.key
        if not row.doc:
            problems.append(f"{where} has no doc= in its annotation; say there what it does")
        if not any(key == row.key and set(row.choices) <= set(choices) for choices, key in listed):
            problems.append(f"{where} is in no docs table; add it to an `<!-- options: ... -->` table")
    return problems


def unknown_tables(page: str) -> list[str]:
    """Why each table of `page` that names no options does not."""
    unknown = []
    for table in TABLE.finditer(page):
        try:
            rows_of(table["what"])
        except ValueError as error:
            unknown.append(str(error))
    return unknown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 when a table is stale")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the folder of the pages (default: docs/)")
    arguments = parser.parse_args(argv)
    pages = {path: path.read_text() for path in sorted(arguments.docs.glob("*.md"))}
    problems = [f"{path.name}: {unknown}" for path, page in pages.items() for unknown in unknown_tables(page)]
    if not problems:
        stale = []
        for path, page in pages.items():
            if arguments.check:
                stale += [f"{path.name}: {where}"] if (where := staleness(page)) else []
            elif (new := rewritten(page)) != page:
                path.write_text(new)
        if stale:
            more = f" (and {len(stale) - 1} more pages)" if len(stale) > 1 else ""
            problems.append(f"{stale[0]}{more}; run `{REGENERATE}` to rewrite it")
        problems += unlisted(list(pages.values()))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
