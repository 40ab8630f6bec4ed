"""The trained model a run keeps in its run dir (docs/outputs.md), loaded without pickle:

- `model.safetensors`: the weights after the last step, written when the run finishes;
- `best_model.safetensors`: the weights at the best validation evaluation (runs with a
  validation split), written at each evaluation that beats the best so far;
- `model.json`: what rebuilding either needs: the model's config, the input shape, the class
  names, the input normalisation, and the class prior the run trained on with its `posthoc_tau`
  (the post-hoc adjustment `l2rw-predict --posthoc-tau` applies).

`load_trained(run_dir)` gives the model back, in eval mode, with its card.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from l2rw.errors import UserError, shown
from l2rw.models import build_model
from l2rw.run import CONFIG_DIR
from l2rw.training.evaluation import PixelStandardizer

FINAL = "model.safetensors"
BEST = "best_model.safetensors"
CARD = "model.json"
WHICH = {"final": FINAL, "best": BEST}
MODEL_FILES = (FINAL, BEST, CARD)


@dataclass(frozen=True)
class ModelCard:
    model: dict               # the run's model config, its pretrained weights left out (the saved ones replace them)
    image_shape: list[int]    # channels, height, width of the images the model was trained on
    class_names: list[str]
    mean: list[float]         # per channel, of pixels scaled to [0, 1]: inputs are (pixels - mean) / std
    std: list[float]
    trained_prior: list[float]  # each class's share of the example weights over the run (l2rw.training.trained_prior)
    posthoc_tau: float        # the run's own post-hoc adjustment at evaluation (0: plain argmax)

    @classmethod
    def of_run(cls, model_cfg: DictConfig, image_shape, class_names: list[str], standardize: PixelStandardizer, trained_prior: list[float],
               posthoc_tau: float) -> ModelCard:
        model = OmegaConf.to_container(model_cfg, resolve=True)
        if "pretrained" in model:  # rebuilt from the saved weights: the file it started from may be gone
            model["pretrained"] = False if isinstance(model["pretrained"], bool) else None
        return cls(model, list(image_shape), list(class_names), standardize.mean.flatten().tolist(),
                   standardize.std.flatten().tolist(), list(trained_prior), float(posthoc_tau))


    def standardizer(self, device: torch.device | str = "cpu") -> PixelStandardizer:
        """Training's standardisation of uint8 pixels, with the statistics the run kept here
        rather than ones measured on its training images, which may be gone."""
        return PixelStandardizer(torch.tensor(self.mean, device=device), torch.tensor(self.std, device=device))


def save_weights(model: nn.Module, path: Path, step: int | None = None, trained_prior: list[float] | None = None) -> None:
    """The model's parameters and buffers, replacing `path` at once (a reader never sees half a
    file). The best model records in the file's metadata the step it is of and the class prior
    trained on until then, which its post-hoc adjustment divides out (`load_trained`)."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper's keys carry a prefix
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in model.state_dict().items()}
    # one key: safetensors writes a metadata map in no fixed order, and equal runs must write equal files
    metadata = None if step is None else {"best": json.dumps({"step": step, "trained_prior": trained_prior})}
    partial = path.with_name(f".{path.name}.partial")
    safetensors.torch.save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)


def saved_step(path: Path) -> int | None:
    """The step a best model's file records (None: none recorded)."""
    return best_record(path).get("step")


def best_record(path: Path) -> dict:
    """What a best model's file records: its step and the class prior until then ({}: nothing)."""
    with safetensors.safe_open(str(path), "pt") as file:
        record = (file.metadata() or {}).get("best")
    try:
        record = json.loads(record) if record else {}
    except ValueError:
        raise UserError(f"{shown(path)}'s metadata is not a record l2rw wrote") from None
    return record if isinstance(record, dict) else {}


def forget_models(run_dir: Path) -> None:
    """A run starting afresh in a dir that holds an earlier run's model: that model is not this run's."""
    for name in MODEL_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)


def write_card(run_dir: Path, card: ModelCard) -> None:
    (Path(run_dir) / CARD).write_text(json.dumps(asdict(card), indent=2))


def read_card(run_dir: Path) -> ModelCard:
    path = Path(run_dir) / CARD
    if not path.is_file():
        raise UserError(f"{shown(path)} does not exist: {shown(run_dir)} is not the run dir of a finished run "
                        "(runs keep their model from this version on); give a run dir holding model.json")
    try:
        values = json.loads(path.read_text())
        card = ModelCard(**{f.name: values[f.name] for f in fields(ModelCard)})
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise UserError(f"{shown(path)} is not a model card l2rw wrote ({type(error).__name__}: {error})") from None
    if problem := card_problem(card):
        raise UserError(f"{shown(path)} is not a model card l2rw wrote: {problem}")
    return card


def model_targets() -> set[str]:
    """The `_target_` of each conf/model/ choice: the only code a card may name."""
    return {OmegaConf.load(path)._target_ for path in (Path(CONFIG_DIR) / "model").glob("*.yaml")}


def card_problem(card: ModelCard) -> str | None:
    """Why `card` is not one l2rw wrote; None when it could be. Rebuilding instantiates the card's
    model config, so it may name only a model l2rw has, with plain values for its options."""
    model = card.model
    if not (isinstance(model, dict) and model.get("_target_") in model_targets()):
        return "its model is not one of conf/model/'s"
    plain = (str, int, float, bool, type(None))
    if not all(isinstance(v, plain) or (isinstance(v, list) and all(isinstance(i, plain) for i in v)) for v in model.values()):
        return "its model's options are not plain values"
    shape = card.image_shape
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(n) is int and n > 0 for n in shape)):
        return "its image_shape is not three whole numbers"

    def numbers(values, count: int) -> bool:
        return isinstance(values, list) and len(values) == count and all(type(v) in (int, float) and math.isfinite(v) for v in values)

    if not (numbers(card.mean, shape[0]) and numbers(card.std, shape[0]) and all(s > 0 for s in card.std)):
        return f"its mean and std are not {shape[0]} numbers (std > 0)"
    if not (isinstance(card.class_names, list) and card.class_names and all(isinstance(c, str) for c in card.class_names)):
        return "its class_names are not a list of names"
    if not (numbers(card.trained_prior, len(card.class_names)) and type(card.posthoc_tau) in (int, float)):
        return "its trained_prior or posthoc_tau are not numbers"
    return None


def load_trained(run_dir: Path, which: str = "final") -> tuple[nn.Module, ModelCard]:
    """The run's kept model (`which`: final or best), rebuilt from its card, in eval mode on the CPU."""
    card = read_card(run_dir)
    path = Path(run_dir) / WHICH[which]
    if not path.is_file():
        why = "the run had no validation split, or predates the kept model" if which == "best" else "the run did not finish"
        raise UserError(f"{shown(path)} does not exist ({why}); use the run's "
                        f"{'model.safetensors' if which == 'best' else 'run dir once it has finished'}")
    model = build_model(OmegaConf.create(card.model), tuple(card.image_shape), len(card.class_names))
    try:
        state = safetensors.torch.load_file(str(path))
        record = best_record(path)
    except (OSError, safetensors.SafetensorError) as error:
        raise UserError(f"{shown(path)} is not a readable safetensors file ({error})") from None
    if "trained_prior" in record:  # the best model: its evaluation divided out the prior trained on until then
        card = replace(card, trained_prior=record["trained_prior"])
        if problem := card_problem(card):
            raise UserError(f"{shown(path)} is not a best model l2rw wrote: {problem}")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(f"{shown(path)} does not hold the weights of the model model.json describes: "
                        f"{str(error).splitlines()[0]}") from None
    return model.eval(), card
