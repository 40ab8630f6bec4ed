"""Configs composed from conf/ as `l2rw-train` composes them, and the option lists and override
sets that several test modules share."""
import copy
import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from l2rw.run import CONFIG_DIR

# Small enough for 2 CPU cores, long enough for the assertions to mean something.
FAST = ["steps=20", "eval_every=10", "progress=false"]
# Configurations setting a key the run does not read (l2rw.run.identity.unread_keys): never checked, never hashed
UNREAD_KEY_OVERRIDES = [
    ["imbalance_ratio=0.5"],  # the step profile reads imbalance
    ["dataset.profile=longtail", "imbalance=abc"],
    ["dataset.profile=natural", "dataset.majority_class=abc"],
    ["noise.flip_to=abc"],  # no noise
    ["noise.kind=uniform", "noise.rate=0.2", "noise.background_class=[1]"],
]


def config_options(group: str) -> list[str]:
    """Every option of a config group, as the files in conf/<group>/ define them."""
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def hydra_compose(*overrides: str, hydra_config: bool = False) -> DictConfig:
    """hydra.compose of conf/config.yaml, every time anew."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)


# Composing reads and merges every file of the defaults list, about 0.2 s, and the suite composes
# hundreds of configs that differ in a value or two. What the files give depends only on the
# config group choices, so that part is composed once per choice and handed out as a deep copy;
# the other overrides are applied to the copy by the function compose applies them with, so a
# value, and an override that fails, come out as compose's own (test_composed_configs.py checks it).
_PARSER = OverridesParser.create()
_BY_CHOICES: dict[tuple[str, ...], DictConfig] = {}
_WITH_HYDRA: dict[tuple[str, ...], DictConfig] = {}


def _chooses_a_group(override) -> bool:
    """Whether Hydra reads `override` when it builds the defaults list rather than after composing
    (a config group choice: conf/<group>/ exists). Whatever looks like a group or a package goes to
    compose too, which then composes it or refuses it as it would anyway."""
    key = override.key_or_group
    return override.package is not None or "/" in key or (Path(CONFIG_DIR) / key).is_dir()


def compose_config(*overrides: str, hydra_config: bool = False) -> DictConfig:
    """conf/config.yaml with `overrides`, equal to what hydra.compose returns for them (with the
    hydra node where `hydra_config`), a fresh copy on every call."""
    if hydra_config:  # its hydra node records every override and the working folder: cached whole
        key = (os.getcwd(), *overrides)
        if key not in _WITH_HYDRA:
            _WITH_HYDRA[key] = hydra_compose(*overrides, hydra_config=True)
        return copy.deepcopy(_WITH_HYDRA[key])
    parsed = _PARSER.parse_overrides(list(overrides))
    if any(o.key_or_group.startswith("hydra") or o.is_sweep_override() for o in parsed):
        return hydra_compose(*overrides)  # may change where Hydra looks for files, or is refused by it
    choices = tuple(o.input_line for o in parsed if _chooses_a_group(o))
    if choices not in _BY_CHOICES:
        _BY_CHOICES[choices] = hydra_compose(*choices)
    cfg = copy.deepcopy(_BY_CHOICES[choices])
    ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if not _chooses_a_group(o)], cfg)
    return cfg


def compose_preset(name: str, *overrides: str, hydra_config: bool = False) -> DictConfig:
    """`+experiment=NAME OVERRIDES`."""
    return compose_config(f"+experiment={name}", *overrides, hydra_config=hydra_config)


def swept(name: str) -> dict[str, list[str]]:
    """The values a preset sweeps, per key, as its hydra.sweeper.params list them."""
    params = compose_preset(name, hydra_config=True).hydra.sweeper.params
    return {key: str(values).split(",") for key, values in params.items()}
