"""Every option's type and range, declared once and checked before a run writes anything.

`check_config(cfg)` raises one UserError, one line naming the field, its value and what it must
be, for the first option that breaks its declaration. Keys the run does not read
(`l2rw.sweeps.unread_keys`) are not checked. What needs the data (a class index against the
number of classes, a count against the images a class has) is checked where the data is.
"""
from typing import Annotated, Any, Literal

from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from l2rw.data.noise import NOISE_KINDS
from l2rw.errors import UserError
from l2rw.reweight import IMPLEMENTATIONS
from l2rw.sweeps import read_values

SCHEDULES = ("constant", "cosine", "step")
PROFILES = ("step", "longtail", "natural")
AMP_CHOICES = ("bf16",)  # besides null; train.AMP_DTYPES maps each to its dtype
SEED_MAX = 2**63 - 1  # torch.manual_seed takes it, and every CSV reader keeps it an int64


def whole(minimum: int, maximum: int | None = None, note: str = "") -> Any:
    bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    return Annotated[int, Field(strict=True, ge=minimum, le=maximum, description=f"a whole number {bounds}{note}")]


def number(*, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
           note: str = "") -> Any:
    """A finite int or float within the given bounds (YAML's true and false are not numbers)."""
    bounds = [f"{sign} {bound}" for sign, bound in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if bound is not None]
    description = " ".join(["a finite number", " and ".join(bounds)]).rstrip() + note
    return Annotated[float, Field(strict=True, allow_inf_nan=False, gt=gt, ge=ge, lt=lt, le=le, description=description)]


def choice(*options: str) -> Any:
    return Annotated[Literal[options], Field(description=f"one of {', '.join(options)}")]


def optional(kind: Any, null_means: str) -> Any:
    return Annotated[kind | None, Field(description=f"{_description(kind)}, or null {null_means}")]


def list_of(kind: Any, what: str) -> Any:
    return Annotated[list[kind], Field(strict=True, description=what)]


def _description(kind: Any) -> str:
    return next(meta.description for meta in kind.__metadata__ if getattr(meta, "description", None))


FLAG = Annotated[bool, Field(strict=True, description="true or false")]
PATH = Annotated[str, Field(strict=True, description="a path")]
CLASS = whole(0, note=" (a class index)")


class Options(BaseModel):
    """A group of options: each of the declared type, and no other (a misspelt key is named)."""
    model_config = ConfigDict(strict=True, extra="forbid")


class Meta(Options):
    per_class: whole(1, note=" (clean images per class)")
    add_to_train: FLAG


class Noise(Options):
    kind: choice(*NOISE_KINDS)
    rate: number(ge=0, le=1, note=" (the probability that a training label is replaced)") = None
    flip_to: optional(list_of(CLASS, "a list of target classes, one per class, e.g. [1,2,0]"), "for c -> c+1 mod K") = None
    background_class: optional(CLASS, "for the first class") = None


class TopLevel(Options):
    seed: whole(0, SEED_MAX)
    imbalance: number(note=" (the majority class's share of the training set)") = None
    imbalance_ratio: number(ge=1, note=" (n_max / n_min; 1 is balanced)") = None
    meta: Meta
    noise: Noise
    steps: whole(1)
    batch_size: whole(1)
    lr: number(gt=0)
    momentum: number(ge=0, lt=1, note=" (0: none)")
    weight_decay: number(ge=0, note=" (0: none)")
    schedule: choice(*SCHEDULES)
    clip_grad_norm: optional(number(gt=0), "for no clipping")
    eval_every: whole(1)
    progress: FLAG
    results_csv: PATH
    skip_done: FLAG
    checkpoint_every: whole(0, note=" (0: only when interrupted)")
    threads: optional(whole(1), "for this job's share of the cores")


class Dataset(Options):
    """The keys every dataset has; a dataset's own keys are checked when declared here, and
    extra ones are its loader's to check."""
    model_config = ConfigDict(extra="allow")
    name: str
    profile: choice(*PROFILES)
    classes: optional(list_of(CLASS, "a list of class indices, e.g. [0,1]"), "for all")
    majority_class: optional(CLASS, "for the first of dataset.classes") = None
    val_per_class: whole(0, note=" (0: no validation split)")
    train_size: optional(whole(1), "for all the imbalance profile allows")
    augment: FLAG
    download: FLAG = None
    root: PATH = None
    cache_dir: PATH = None
    test_per_class: whole(1, note=" (test images per class)") = None
    test_fraction: number(gt=0, lt=1) = None
    image_size: whole(1, note=" (pixels)") = None
    workers: whole(0, note=" (0: every available core)") = None


class Hardware(Options):
    device: Annotated[str, Field(strict=True, description="a device name, e.g. cpu, cuda or cuda:1")]
    amp: optional(choice(*AMP_CHOICES), "for full precision")
    compile: FLAG
    channels_last: FLAG


class Plain(Options):
    """A model or method without options."""


class MLP(Options):
    hidden: list_of(whole(1), "a list of hidden layer widths, each a whole number >= 1, e.g. [256,256]")


class ResNet18(Options):
    pretrained: FLAG


class ResNet32(Options):
    blocks_per_stage: whole(1, note=" (6n+2 layers: 5 gives ResNet-32)")


class ClassBalanced(Options):
    beta: optional(number(ge=0, lt=1, note=" (Cui et al. use 0.9-0.9999)"), "for 1/n_c")


class L2RW(Options):
    meta_batch_size: whole(1)
    update_every: whole(1, note=" (1: every step)")
    impl: choice(*IMPLEMENTATIONS)
    mix: number(ge=0, le=1, note=" (0: plain L2RW weights)")
    smoothing: number(ge=0, lt=1, note=" (0: each step's own weights)")


# Options of each choice of a config group, by its `name`
MODELS = {"lenet": Plain, "mlp": MLP, "resnet18": ResNet18, "resnet32": ResNet32}
METHODS = {"sgd": Plain, "weighted_sampler": Plain, "class_balanced": ClassBalanced, "l2rw": L2RW}


def check_config(cfg: DictConfig) -> None:
    """Raise UserError for the first option, in the order declared above, that is of the wrong
    type or out of range; keys the run does not read are left alone."""
    values = read_values(cfg)
    groups = {group: values.pop(group) for group in ("dataset", "model", "method", "hardware")}
    _check(TopLevel, values, "")
    _check(Dataset, groups["dataset"], "dataset.")
    for group, schemas in (("model", MODELS), ("method", METHODS)):
        options = {key: value for key, value in groups[group].items() if key not in ("name", "_target_")}
        name = groups[group]["name"]
        if name not in schemas:
            raise UserError(f"{group}={name} has no declared options in l2rw/config_schema.py; add them there")
        _check(schemas[name], options, f"{group}.", f" of {group}={name}")
    _check(Hardware, groups["hardware"], "hardware.")


def _check(schema: type[Options], values: dict, prefix: str, of_choice: str = "") -> None:
    try:
        schema.model_validate(values)
    except ValidationError as invalid:
        raise UserError(_message(schema, invalid.errors()[0], values, prefix, of_choice)) from None


def _message(schema: type[Options], error: dict, values: dict, prefix: str, of_choice: str) -> str:
    """One line: the field as the user writes it, its value, and what it must be."""
    fields, info, value = [], None, values
    for part in error["loc"]:  # field names, then a list position, an undeclared key or a union member
        declared = schema.model_fields.get(part) if schema is not None and isinstance(part, str) else None
        if declared is None:
            break
        info = declared
        fields.append(part)
        value = value.get(part) if isinstance(value, dict) else None
        schema = info.annotation if isinstance(info.annotation, type) and issubclass(info.annotation, Options) else None
    if error["type"] == "extra_forbidden":
        key = prefix + ".".join([*fields, error["loc"][len(fields)]])
        return f"{key} is not an option{of_choice}; check its spelling (options: {', '.join(schema.model_fields) or 'none'})"
    field = prefix + ".".join(fields)
    if error["type"] == "missing":
        return f"{field} is missing; set it to {info.description}"
    if error["type"] == "literal_error":
        return f"{field}={_as_typed(value)} is unknown; use {info.description}"
    return f"{field}={_as_typed(value)} must be {info.description}"


def _as_typed(value: Any) -> str:
    """A value as it is written on the command line (YAML's null, true, false; lists as [a,b])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return f"[{','.join(map(_as_typed, value))}]"
    return str(value)
