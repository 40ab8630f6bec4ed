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
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import safetensors
import safetensors.torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from l2rw.errors import UserError, shown
from l2rw.models import build_model

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
    def of_run(cls, model_cfg: DictConfig, image_shape, class_names: list[str], standardize, trained_prior: list[float],
               posthoc_tau: float) -> ModelCard:
        model = OmegaConf.to_container(model_cfg, resolve=True)
        if "pretrained" in model:  # rebuilt from the saved weights: the file it started from may be gone
            model["pretrained"] = False if isinstance(model["pretrained"], bool) else None
        return cls(model, list(image_shape), list(class_names), standardize.mean.flatten().tolist(),
                   standardize.std.flatten().tolist(), list(trained_prior), float(posthoc_tau))


def save_weights(model: nn.Module, path: Path) -> None:
    """The model's parameters and buffers, replacing `path` at once (a reader never sees half a file)."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper's keys carry a prefix
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in model.state_dict().items()}
    partial = path.with_name(f".{path.name}.partial")
    safetensors.torch.save_file(tensors, str(partial))
    os.replace(partial, path)


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
    channels = card.image_shape[0] if isinstance(card.image_shape, list) and len(card.image_shape) == 3 else None
    if not (channels and len(card.mean) == len(card.std) == channels and len(card.trained_prior) == len(card.class_names)):
        raise UserError(f"{shown(path)} is not a model card l2rw wrote: its shapes disagree")
    return card


def load_trained(run_dir: Path, which: str = "final") -> tuple[nn.Module, ModelCard]:
    """The run's kept model (`which`: final or best), rebuilt from its card, in eval mode on the CPU."""
    card = read_card(run_dir)
    path = Path(run_dir) / WHICH[which]
    if not path.is_file():
        why = "the run had no validation split" if which == "best" else "the run did not finish"
        raise UserError(f"{shown(path)} does not exist ({why}); use the run's "
                        f"{'model.safetensors' if which == 'best' else 'run dir once it has finished'}")
    model = build_model(OmegaConf.create(card.model), tuple(card.image_shape), len(card.class_names))
    try:
        state = safetensors.torch.load_file(str(path))
    except (OSError, safetensors.SafetensorError) as error:
        raise UserError(f"{shown(path)} is not a readable safetensors file ({error})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(f"{shown(path)} does not hold the weights of the model model.json describes: "
                        f"{str(error).splitlines()[0]}") from None
    return model.eval(), card
