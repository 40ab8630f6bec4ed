"""Evaluation: the scores a model gets on a labelled split, the collapse check, and `Evaluator`,
what the training loop calls every `eval_every` steps."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from l2rw.data import LabeledImages, Splits
from l2rw.training.state import BestEvaluation, LoopState
from l2rw.training.trained_prior import TrainedPrior


class PixelStandardizer:
    """uint8 images -> float, standardised per channel: (pixels / 255 - mean) / std."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean = mean.view(1, -1, 1, 1)
        self.std = std.view(1, -1, 1, 1)

    @classmethod
    def of(cls, train_images: torch.Tensor, model: nn.Module | None = None) -> PixelStandardizer:
        """With the statistics the model's pretrained weights were trained with (its
        `input_normalization`, l2rw.models.library), else with the training set's."""
        normalization = getattr(getattr(model, "_orig_mod", model), "input_normalization", None)
        if normalization is not None:
            return cls(*(torch.tensor(values, device=train_images.device) for values in normalization))
        pixels = train_images.float().div(255).transpose(0, 1).flatten(1)
        return cls(pixels.mean(dim=1), pixels.std(dim=1).clamp(min=1e-3))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float().div(255) - self.mean) / self.std


@dataclass
class Evaluation:
    accuracy: float
    balanced_accuracy: float
    per_class_recall: list[float]
    confusion: torch.Tensor  # (true class, predicted class) counts
    mean_confidence: float = 1.0  # mean over images of the highest softmax probability: 1/K for uniform outputs

    @property
    def top_class(self) -> tuple[int, float]:
        """The most predicted class and its share of all predictions."""
        predicted = self.confusion.sum(0)
        top = int(predicted.argmax())
        return top, predicted[top].item() / max(predicted.sum().item(), 1)


# A model that gives one class this share of its test predictions has collapsed (a healthy model on
# a balanced test set gives each class about 1/K), as has one whose outputs are uniform, whatever
# its argmax says: its mean top softmax probability is within COLLAPSE_UNIFORM_MARGIN of 1/K. The
# outputs themselves are tested, not the loss: a model confidently right on some classes and wrong
# on others can have a loss near ln K too.
COLLAPSE_TOP_SHARE = 0.9
COLLAPSE_UNIFORM_MARGIN = 0.05


def collapse_symptom(evaluation: Evaluation, class_names: list[str]) -> str | None:
    """Why this evaluation looks collapsed, in words; None when it does not."""
    top, share = evaluation.top_class
    uniform = 1 / len(class_names)
    if share >= COLLAPSE_TOP_SHARE and len(class_names) > 1:
        return f"{share:.0%} of test images are predicted as class {class_names[top]!r}"
    if evaluation.mean_confidence <= uniform * (1 + COLLAPSE_UNIFORM_MARGIN):
        return (f"the mean top probability is {evaluation.mean_confidence:.3f}, 1/K = {uniform:.3f}: "
                "the outputs are uniform")
    return None


@torch.no_grad()
def evaluate(
    model: nn.Module, data: LabeledImages, standardize: PixelStandardizer, num_classes: int, adjustment: torch.Tensor | None = None
) -> Evaluation:
    """Accuracy, balanced accuracy (mean per-class recall, ISIC 2018's metric) and the confusion
    matrix; `adjustment` (one value per class) is added to the logits before the argmax."""
    was_training = model.training
    model.eval()
    shift = 0 if adjustment is None else adjustment
    predictions, confidence = [], 0.0
    for i in range(0, len(data), 1000):
        logits = model(standardize(data.images[i : i + 1000])).float()
        predictions.append((logits + shift).argmax(1))
        confidence += logits.softmax(1).amax(1).sum()
    predictions = torch.cat(predictions)
    model.train(was_training)
    confusion = torch.bincount(
        data.labels * num_classes + predictions, minlength=num_classes * num_classes
    ).view(num_classes, num_classes).cpu()
    support = confusion.sum(1)
    recall = confusion.diag().double() / support.clamp(min=1)
    present = support > 0
    return Evaluation(
        accuracy=confusion.diag().sum().item() / max(len(data), 1),
        balanced_accuracy=recall[present].mean().item(),
        per_class_recall=recall.tolist(),
        confusion=confusion,
        mean_confidence=float(confidence) / max(len(data), 1),
    )


def exact_balanced_accuracy(confusion: torch.Tensor) -> Fraction:
    """Balanced accuracy as an exact fraction of the counts. The float mean rounds differently
    depending on which classes are right (29/50 comes out as 0.58 or 0.5800000000000001), so
    equal scores would compare unequal."""
    recalls = [Fraction(correct, support) for correct, support in zip(confusion.diag().tolist(), confusion.sum(1).tolist()) if support]
    return sum(recalls, Fraction(0)) / max(len(recalls), 1)


@torch.no_grad()
def mean_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    loss = F.cross_entropy(model(images), labels).item()
    model.train(was_training)
    return loss


class Evaluator:
    """What the loop calls every `eval_every` steps: test and validation scores (argmax after the
    post-hoc adjustment by the class prior trained on so far, `posthoc_tau`), the meta loss, the
    collapse check and the best-on-validation record in the loop's state. Keeps the last
    evaluations for the run's result."""

    def __init__(self, splits: Splits, standardize: PixelStandardizer, meta: LabeledImages,
                 trained_prior: TrainedPrior, posthoc_tau: float):
        self.splits, self.standardize, self.meta = splits, standardize, meta
        self.trained_prior, self.posthoc_tau = trained_prior, posthoc_tau
        self.test: Evaluation | None = None
        self.val: Evaluation | None = None
        self.new_best = False  # the last evaluation beat the best validation score so far

    def __call__(self, model: nn.Module, step: int, loop: LoopState, warn: Callable[[str], None]) -> dict:
        """Evaluate `model` at `step`; returns the scores of metrics.csv's row. A collapse after a
        healthy evaluation is warned about when it starts (before one, the model may simply not
        have learned yet)."""
        splits = self.splits
        adjustment = self.trained_prior.adjustment(self.posthoc_tau)
        self.test = test = evaluate(model, splits.test, self.standardize, splits.num_classes, adjustment)
        self.val = val = None if splits.val is None else evaluate(model, splits.val, self.standardize, splits.num_classes, adjustment)
        if val is not None:
            best = BestEvaluation(step, val.balanced_accuracy, test.accuracy, test.balanced_accuracy, test.confusion.tolist())
            self.new_best = loop.keep_if_best(best, exact_balanced_accuracy(val.confusion))
        symptom = collapse_symptom(test, splits.class_names)
        if symptom is None:
            loop.collapse_step = None
        elif loop.collapse_step is None:
            loop.collapse_step = step
            if any(not row["collapsed"] for row in loop.metrics):
                warn(f"warning: collapsed at step {step}: {symptom}")
        return {
            "meta_loss": mean_loss(model, self.meta.images, self.meta.labels),
            "accuracy": test.accuracy,
            "balanced_accuracy": test.balanced_accuracy,
            "val_balanced_accuracy": val.balanced_accuracy if val else "",
            "top_class_share": test.top_class[1],
            "collapsed": int(symptom is not None),
        }

    def recall(self) -> dict[str, float]:
        """The last test evaluation's recall per class, as `recall/<class>`."""
        return {f"recall/{name}": r for name, r in zip(self.splits.class_names, self.test.per_class_recall)}
