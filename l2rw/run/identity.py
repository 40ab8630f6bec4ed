"""A run's identity: the values it reads, and `config_hash` over them.

`config_hash` names result rows (so `skip_done` recognises finished configurations) and sweep
subdirs (so a relaunched or requeued job finds its own checkpoint). Importing `l2rw` registers
the `${config_hash:}` resolver: Hydra resolves `hydra.sweep.subdir` in each job's process (joblib
worker, submitit job) after unpickling the task, which imports this package. The hash resolves
every value the run reads, so the resolvers those values use (`${mwnet_variant:}`) are registered
here too.
"""
from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from l2rw.errors import UserError

# Keys that change where things are written or shown, or how fast, never what is learned.
NOT_HASHED = ("results_csv", "progress", "threads", "checkpoint_every", "skip_done", "logger")


def unread_keys(cfg: DictConfig) -> set[str]:
    """Dotted keys this configuration's run never reads: the parameters of the imbalance profile,
    of the noise kinds and of the lr schedules it does not use, `steps` when `epochs` sets the
    length, the dataset's default of meta.per_class (read as meta.per_class) and its tuned values
    (read as the lr, momentum, weight decay and method options they set,
    so another method's entry does not change this run's identity). They are not validated, not
    hashed and empty in the results row, so a leftover value neither stops a run nor makes it look
    like another one."""
    profile, kind = OmegaConf.select(cfg, "dataset.profile"), OmegaConf.select(cfg, "noise.kind")
    multistep = OmegaConf.select(cfg, "schedule") == "multistep"
    unread = {
        "dataset.meta_per_class": True,
        "dataset.tuned": True,
        "imbalance": profile != "step",
        "dataset.majority_class": profile != "step",
        "imbalance_ratio": profile != "longtail",
        "noise.flip_to": kind != "flip",
        "noise.background_class": kind != "background",
        "steps": OmegaConf.select(cfg, "epochs") is not None,
        "lr_milestones": not multistep,
        "lr_factors": not multistep,
    }
    return {key for key, is_unread in unread.items() if is_unread}


def read_values(cfg: DictConfig, unread: set[str] | frozenset[str] | None = None) -> dict:
    """The resolved config as the run reads it: without `hydra` and the unread keys (`unread`,
    when the caller has them already)."""
    kept = [key for key in cfg if key != "hydra"]
    values = OmegaConf.to_container(OmegaConf.masked_copy(cfg, kept), resolve=True)
    for key in unread_keys(cfg) if unread is None else unread:
        *parents, name = key.split(".")
        group = values
        for parent in parents:
            group = group.get(parent) or {}
        group.pop(name, None)
    return values


def config_hash(cfg: DictConfig) -> str:
    """`hash_values` of what `cfg`'s run reads."""
    return hash_values(read_values(cfg))


def hash_values(values: dict) -> str:
    """16 hex digits of what the run reads (`read_values`, seed included) minus NOT_HASHED, with
    the content of the files a dataset reads where its loader can tell it (`_dataset_identity`):
    two runs that read the same values and data share it, whether a number was written 1 or 1.0."""
    hashed = _without_not_hashed(values)
    if isinstance(hashed.get("dataset"), dict):
        hashed["dataset"] = _dataset_identity(hashed["dataset"])
    return hashlib.sha256(json.dumps(_canonical(hashed), sort_keys=True).encode()).hexdigest()[:16]


def _without_not_hashed(values: dict) -> dict:
    return {key: value for key, value in values.items() if key not in NOT_HASHED}


def _dataset_identity(dataset: dict) -> dict:
    """The dataset's values without the run's NOT_HASHED settings its loader is passed (`progress`),
    and with `content`, the key of the files it reads, when the loader has a `content_key` (the
    user's own folder, whose images change under the same options). Other datasets' values are
    unchanged, and so are their hashes."""
    identity = _without_not_hashed(dataset)
    source = identity.get("source")
    if not isinstance(source, dict):
        return identity
    source = identity["source"] = _without_not_hashed(source)
    from hydra.utils import get_object  # here: `import l2rw` (this module is imported with it) stays without Hydra

    try:
        content_key = getattr(get_object(source["_target_"]), "content_key", None)
    except Exception:  # noqa: BLE001  a _target_ that cannot be imported: l2rw.run.config_schema names it
        return identity
    if content_key is not None:
        identity["content"] = content_key(**{key: value for key, value in source.items() if key != "_target_"})
    return identity


def _canonical(value):
    """`value` with every whole float as an int: lr=1 and lr=1.0 train alike."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _config_hash_resolver(*, _root_: DictConfig) -> str:
    try:
        return config_hash(_root_)
    except UserError:  # data that cannot be identified: the job's own validation refuses it in one line
        return "unidentified"


OmegaConf.register_new_resolver("config_hash", _config_hash_resolver, replace=True)


def _mwnet_variant_resolver(noise_kind: str) -> str:
    """method=mwnet's default `variant`: of the two scripts Shu et al. released, the label-noise
    one under label noise, else the class-imbalance one."""
    return "imbalance" if noise_kind == "none" else "noise"


OmegaConf.register_new_resolver("mwnet_variant", _mwnet_variant_resolver, replace=True)
