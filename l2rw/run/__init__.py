"""Composing and running: the config checked and hashed (config_schema, identity), what a run is
built from (instantiation, hardware, machine), one run end to end (train), and the tools that plan
or time runs without training them (plan, bench)."""
from pathlib import Path

# An absolute path, so the configs are found whatever folder l2rw-train is started from.
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
