"""Every option's type and range, declared once and checked before a run writes anything.

`check_config(cfg)` raises one UserError, one line naming the field, its value and what it must
be, for the first option that breaks its declaration. Keys the run does not read
(`l2rw.run.identity.unread_keys`) are not checked. What needs the data (a class index against the
number of classes, a count against the images a class has) is checked where the data is.
"""
import copy
import inspect
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from torch import nn

from l2rw.data.noise import NOISE_KINDS
from l2rw.data.splits import PROFILES, Source
from l2rw.errors import UserError
from l2rw.methods.base import Method
from l2rw.run import CONFIG_DIR
from l2rw.run.identity import read_values
from l2rw.run.options import (
    CLASS,
    FLOAT32_MAX,
    FLOAT32_SMALLEST_NORMAL,
    choice,
    description,
    filesystem_path,
    flag,
    list_of,
    number,
    optional,
    text,
    whole,
)
from l2rw.tracking.loggers import RunLogger

SCHEDULES = ("constant", "cosine", "step", "multistep")
AMP_CHOICES = ("bf16",)  # besides null; l2rw.run.hardware.AMP_DTYPES maps each to its dtype
SEED_MAX = 2**63 - 1  # torch.manual_seed takes it, and every CSV reader keeps it an int64
# Constructor parameters the builders fill in from the data, never set in a config
RUNTIME_ARGUMENTS = ("image_shape", "num_classes", "class_counts")
# Groups whose choice is a class or function selected by `_target_` (the dataset's: `source._target_`)
BUILT_GROUPS = {"model": "_target_", "method": "_target_", "loss": "_target_", "dataset": "source._target_"}
# What the `_target_` of each group (the dataset's: source._target_; a logger's: logger.<name>._target_)
# must build, and that in words
BUILT_KINDS = {
    "model": (nn.Module, "a model (a torch.nn.Module)"),
    "method": (Method, "a method (a subclass of l2rw.methods.base.Method)"),
    "loss": (Callable, "a loss (an object called as loss(outputs, targets))"),
    "dataset": (Source, "a dataset's images (l2rw.data.Source, as l2rw.data.digits.load_digits returns)"),
    "logger": (RunLogger, "a logger (a subclass of l2rw.tracking.RunLogger)"),
}


class Options(BaseModel):
    """A group of options: each of the declared type, and no other (a misspelt key is named)."""
    model_config = ConfigDict(strict=True, extra="forbid")


class Meta(Options):
    per_class: whole(1, note=" (clean images per class)",
                     doc="the meta set, clean and balanced, carved from each class's pool before the imbalance profile")
    add_to_train: flag(doc="true: the meta images also join the training set, the control that gives a baseline the "
                           "clean images l2rw learns from (l2rw itself keeps them apart)")


class Noise(Options):
    kind: choice(*NOISE_KINDS, doc="the label noise on the training set, applied after the imbalance profile (meta, "
                                   "validation and test stay clean): `uniform`: a uniformly random other class; `flip`: "
                                   "class c becomes `noise.flip_to`[c]; `background`: `noise.background_class`")
    rate: number(ge=0, le=1, note=" (the probability that a training label is replaced)",
                 doc="must be 0 with `noise.kind=none`; `background` leaves the background class's own examples alone") = None
    flip_to: optional(list_of(CLASS, "a list of target classes, one per class, e.g. [1,2,0]"), "for c -> c+1 mod K",
                      doc="`noise.kind=flip`: each class's target, as original class indices in class order") = None
    background_class: optional(CLASS, "for the first class",
                               doc="`noise.kind=background`: the class noisy labels become (original index)") = None


class TopLevel(Options):
    seed: whole(0, SEED_MAX, doc="seeds the split, the model's initialisation, the batch order and meta sampling")
    imbalance: number(note=" (the majority class's share of the training set)",
                      doc="`dataset.profile=step`: in [1/K, 1) for K classes, 1/K balanced; the other classes share "
                          "the rest equally") = None
    imbalance_ratio: number(ge=1, note=" (n_max / n_min; 1 is balanced)",
                            doc="`dataset.profile=longtail`: class c keeps n_max * ratio^(-c/(K-1)) images") = None
    meta: Meta
    noise: Noise
    steps: whole(1, doc="the run's length in optimizer steps, one batch each; unread when `epochs` is set") = None
    epochs: optional(whole(1), "for a run of `steps` steps",
                     doc="the run's length in passes over the training set after the imbalance profile, "
                         "`len(train) // batch_size` steps each (the row's `steps` holds what they came to)")
    batch_size: whole(1, doc="training examples per step")
    lr: number(gt=0, doc="SGD's learning rate, also the rate of l2rw's and mwnet's look-ahead step")
    momentum: number(ge=0, lt=1, note=" (0: none)", doc="SGD's momentum")
    nesterov: flag(doc="Nesterov momentum")
    weight_decay: number(ge=0, le=1, note=" (0: none)",
                         doc="L2 penalty on every parameter (SGD's weight_decay); above 1 a step at lr 1 would shrink "
                             "each weight past zero")
    schedule: choice(*SCHEDULES, doc="the lr schedule: `constant`; `cosine`: to 0 over the run; `step`: x0.1 at 50% and "
                                     "75% of the steps; `multistep`: lr x `lr_factors[i]` from epoch `lr_milestones[i]` on")
    warmup_epochs: whole(0, note=" (0: no warm-up)",
                         doc="epoch e < `warmup_epochs` trains at lr * (e+1) / `warmup_epochs` whatever the schedule, "
                             "the lr set once per epoch")
    lr_milestones: list_of(whole(1), "a list of epochs >= 1, e.g. [160,180]",
                           doc="`schedule=multistep`: the rising epochs where the lr drops") = None
    lr_factors: list_of(number(gt=0), "a list of lr multipliers, one per milestone, e.g. [0.01,0.0001]",
                        doc="`schedule=multistep`: the base lr's multiplier from each milestone on") = None
    clip_grad_norm: optional(number(gt=0), "for no clipping", doc="the L2 norm each update's gradient is clipped to, "
                                                                  "whatever the method")
    eval_every: whole(1, doc="steps between evaluations on the test (and validation) set, and one at the end; with a "
                             "validation split the row's `best_*` columns hold the test scores of the evaluation with "
                             "the highest validation balanced accuracy")
    posthoc_tau: number(ge=0, le=100, note=" (0: plain argmax; Menon et al. use 1)",
                        doc="post-hoc logit adjustment: evaluations predict argmax(logits - posthoc_tau * log prior), "
                            "the prior being the one the run trained on, each class's share of the example weights with "
                            "every step counted by its lr")
    progress: flag(doc="a progress bar on stderr: the step, the recent training loss, the last balanced accuracy")
    results_csv: filesystem_path(doc="the results table, one row per finished run, relative to where you launch")
    skip_done: flag(doc="a job whose `config_hash` already has a `status=ok` row in `results_csv` exits at once")
    checkpoint_every: whole(0, note=" (0: only when interrupted)",
                            doc="steps between checkpoints in the run dir; a run started in a dir holding one resumes "
                                "from it")
    threads: optional(whole(1, 4096), "for this job's share of the cores",
                      doc="torch's CPU threads per job; a job's share is the cores over joblib's `n_jobs`, or "
                          "submitit's `cpus_per_task`")


class Dataset(Options):
    """The keys `build_splits` reads; a dataset's other keys are its loader's parameters, declared
    in the loader's signature and checked from it."""
    model_config = ConfigDict(extra="allow")
    name: str
    profile: choice(*PROFILES, doc="how the training pool is subsampled: `step`: one majority class (`imbalance`); "
                                   "`longtail`: an exponential decay (`imbalance_ratio`); `natural`: the pool as collected")
    classes: optional(list_of(CLASS, "a list of class indices, e.g. [0,1]"), "for all",
                      doc="the classes kept, original indices, relabelled 0..K'-1 in the order given")
    majority_class: optional(CLASS, "for the first of dataset.classes",
                             doc="the step profile's majority class (original index)") = None
    val_per_class: whole(0, note=" (0: no validation split)",
                         doc="balanced validation images per class (for `l2rw-select`), taken before the imbalance "
                             "profile, disjoint from meta and test")
    train_size: optional(whole(1), "for all the imbalance profile allows",
                         doc="a cap on the training set after the imbalance profile, its proportions kept and at least "
                             "one image per class")
    augment: flag(doc="random crop (padding 4) and horizontal flip of each training batch")
    test_per_class: whole(1, note=" (test images per class)",
                          doc="a balanced test set carved from each class's pool, for data without a test split") = None
    test_fraction: number(gt=0, lt=1, doc="HAM10000 without the ISIC 2018 test set: the share of each class's lesions "
                                          "held out as test (at least one)") = None


class Hardware(Options):
    device: text("a device name, e.g. cpu, cuda or cuda:1",
                 doc="where the model and data live; a machine without CUDA stops with a message")
    amp: optional(choice(*AMP_CHOICES), "for full precision",
                  doc="`bf16`: bfloat16 autocast for the step's forward passes, the weights to bf16 rounding")
    compile: flag(doc="`torch.compile` the model and `fwd`'s weight passes; the first step compiles (counted in "
                      "`warmup_seconds`)")
    channels_last: flag(doc="NHWC layout for convolution weights and activations; false: PyTorch's NCHW (results "
                            "differ in the last digits)")


def check_config(cfg: DictConfig) -> None:
    """`check_values` of the values `cfg`'s run reads."""
    check_values(read_values(cfg))


def check_values(values: dict) -> None:
    """Raise UserError for the first option, in the order declared above, that is of the wrong
    type or out of range, or breaks a rule between options; `values` are what the run reads
    (`l2rw.run.identity.read_values`: unread keys are left out, so never checked). A model's,
    method's and loss's options are the parameters of the constructor its `_target_` names."""
    values = copy.deepcopy(values)
    groups = {group: values.pop(group) for group in ("dataset", "model", "method", "loss", "hardware")}
    loggers = values.pop("logger", None) or {}  # logger=[a,b]: one entry per logger, each built by its _target_
    _check(TopLevel, values, "")
    check_milestones(values)
    check_noise(values["noise"])
    check_dataset_keys(groups["dataset"])
    _check(Dataset, groups["dataset"], "dataset.")
    for group in BUILT_GROUPS:
        check_name(group, groups[group])
    for group in ("model", "method", "loss"):
        options = {key: value for key, value in groups[group].items() if key not in ("name", "_target_")}
        _check(constructor_options(groups[group]["_target_"], group), options, f"{group}.", f" of {group}={groups[group]['name']}")
    source = groups["dataset"]["source"]
    options = {key: value for key, value in source.items() if key != "_target_"}
    # a YAML's source node passes on the dataset's keys of the same names: name those, as the user sets them
    prefix = "dataset." if options.keys() <= groups["dataset"].keys() else "dataset.source."
    _check(constructor_options(source["_target_"], "dataset.source"), options, prefix,
           f" of dataset={groups['dataset']['name']}")
    _check(Hardware, groups["hardware"], "hardware.")
    for name, options in loggers.items():
        _check(constructor_options(options["_target_"], f"logger.{name}"), {k: v for k, v in options.items() if k != "_target_"},
               f"logger.{name}.", f" of logger={name}")


def check_milestones(values: dict) -> None:
    """A multistep schedule's milestones rise, and each has its factor."""
    if values["schedule"] != "multistep":
        return
    milestones, factors = values["lr_milestones"], values["lr_factors"]
    if not milestones or milestones != sorted(set(milestones)):
        raise UserError(f"lr_milestones={as_typed(milestones)} must be rising epochs for schedule=multistep, e.g. [160,180]")
    if len(factors) != len(milestones):
        raise UserError(f"lr_factors={as_typed(factors)} must hold one lr multiplier per milestone of "
                        f"lr_milestones={as_typed(milestones)}, e.g. [0.01,0.0001]")


def check_noise(noise: dict) -> None:
    """A noise rate needs a kind of noise to apply."""
    if noise["kind"] == "none" and noise["rate"]:
        raise UserError(f"noise.rate={as_typed(noise['rate'])} has no effect with noise.kind=none; "
                        "set noise.kind (e.g. noise.kind=uniform) or noise.rate=0")


def check_dataset_keys(dataset: dict) -> None:
    """A dataset's keys are the ones every dataset has (`Dataset`) and its loader's parameters
    (passed on through `source`); any other key is a misspelling."""
    loader = constructor_options(dataset["source"]["_target_"], "dataset.source")
    known = {"source", *Dataset.model_fields, *loader.model_fields}
    for key in dataset:
        if key not in known:
            raise UserError(f"dataset.{key} is not an option of dataset={dataset['name']}; check its spelling "
                            f"(options: {', '.join(sorted(known - {'source'}))})")
        if key in loader.model_fields and key not in dataset["source"]:  # set, but the loader would never see it
            raise UserError(f"dataset.{key} is not passed to the loader: add `{key}: ${{..{key}}}` under `source:` "
                            f"in dataset={dataset['name']}'s YAML")


@cache
def constructor_options(target: str, group: str) -> type[Options]:
    """The options of the class or function `target` names: its parameters (but those the data
    fills in), each of its annotated type, required unless it has a default."""
    try:
        built = get_object(target)
    except Exception:  # noqa: BLE001  Hydra reports a bad import path in several exception types
        raise UserError(f"{group}._target_={target} cannot be imported; check the module and name") from None
    kind, what = BUILT_KINDS[group.partition(".")[0]]
    if not builds(built, kind):
        raise UserError(f"{group}._target_={target} does not build {what}; name a class of that kind, or a function "
                        "annotated to return one")
    signature = inspect.signature(built)
    hints = typing.get_type_hints(built.__init__ if isinstance(built, type) else built, include_extras=True)
    fields = {
        name: (hints.get(name, Any), ... if parameter.default is inspect.Parameter.empty else parameter.default)
        for name, parameter in signature.parameters.items()
        if name not in RUNTIME_ARGUMENTS and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }
    return create_model(f"{getattr(built, '__name__', 'Built')}Options", __base__=Options, **fields)


def builds(built: Any, kind: type) -> bool:
    """Whether calling `built` makes a `kind`: a class of that kind, or a function whose return
    annotation is one (a function without one may return anything, so it is not taken on trust)."""
    if not isinstance(built, type):
        try:
            built = typing.get_type_hints(built).get("return")
        except Exception:  # noqa: BLE001  not a function, or annotations that do not resolve
            return False
        built = typing.get_origin(built) or built
    return isinstance(built, type) and issubclass(built, kind)


def check_name(group: str, values: dict) -> None:
    """A group's `name` goes into run dirs and rows: it must be the choice whose YAML builds
    what `_target_` builds, so a row never names what did not run."""
    target = OmegaConf.select(OmegaConf.create(values), BUILT_GROUPS[group])
    named = choices_building(group, target)
    if named and values["name"] not in named:
        raise UserError(
            f"{group}.name={values['name']} does not name what this run builds ({target}, which is "
            f"{group}={' or '.join(named)}); choose it with {group}=<name> rather than setting {group}.name"
        )


@cache
def choices_building(group: str, target: str) -> tuple[str, ...]:
    """The options of conf/<group>/ whose YAML builds `target`."""
    key = BUILT_GROUPS[group]
    return tuple(
        path.stem for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))
        if OmegaConf.select(OmegaConf.load(path), key) == target
    )


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
    what = info.description or description(info.annotation)
    if error["type"] in ("less_than_equal", "greater_than_equal") and abs(error["ctx"].get("le", error["ctx"].get("ge"))) == FLOAT32_MAX:
        return f"{field}={as_typed(value)} is too large: it must fit a float32 (magnitude at most 3.4e38)"
    if error["type"] == "greater_than_equal" and error["ctx"]["ge"] == FLOAT32_SMALLEST_NORMAL and error["input"] > 0:
        return f"{field}={as_typed(value)} is too small for float32 (0 or a few bits there); it must be at least 1.2e-38"
    if error["type"] == "missing":
        return f"{field} is missing; set it to {what}"
    if error["type"] == "literal_error":
        return f"{field}={as_typed(value)} is unknown; use {what}"
    return f"{field}={as_typed(value)} must be {what}"


def as_typed(value: Any) -> str:
    """A value as it is written on the command line (YAML's null, true, false; lists as [a,b])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return f"[{','.join(map(as_typed, value))}]"
    if isinstance(value, str) and not isinstance(_parsed(value), str):
        return repr(value)  # text that reads as a number, flag, list or null: show that it is text
    return str(value)


def _parsed(text: str) -> Any:
    """What `text` would be if typed unquoted."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
