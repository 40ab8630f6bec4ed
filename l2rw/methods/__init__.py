"""Training methods: how batches are drawn and how each example of a batch is weighted.

One file per method, selected by `conf/method/<name>.yaml` (`_target_`). What the harness needs to
know of a method (whether it draws meta batches, learns a weight per example, keeps state a resume
must restore, computes its weights in several ways) is a capability on its class (`Method`), read
through `catalog()`: benchmarks, reports and checks never recognise a method by its name.
"""
from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

import yaml

from l2rw.run import CONFIG_DIR


@cache
def catalog() -> dict[str, type]:
    """Every option of conf/method/, in name order, and the class its YAML builds (shared: not to
    be changed)."""
    classes = {}
    for path in sorted((Path(CONFIG_DIR) / "method").glob("*.yaml")):
        module, _, name = yaml.safe_load(path.read_text())["_target_"].rpartition(".")
        classes[path.stem] = getattr(importlib.import_module(module), name)
    return classes


def learns_example_weights(name: str) -> bool:
    """Whether the method conf/method/<name>.yaml weighs each example on its own (False for a name
    not there)."""
    return getattr(catalog().get(name), "learns_example_weights", False)
