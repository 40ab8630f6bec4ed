"""l2rw-audit: a finished run's training images ranked by how likely their label is wrong, for a person to review.

    l2rw-audit outputs/runs/RUN                  # audit.csv, audit.png, audit.json into the run dir
    l2rw-audit RUN --top 100 --out review        # elsewhere, with a larger contact sheet
    l2rw-audit RUN --cleanlab-folds 5            # and cleanlab's confident learning beside it

The run's training set is rebuilt as l2rw-train built it (`torch.manual_seed(seed)`, then
`build_splits` of its config.yaml), and refused when its labels are not example_weights.csv's.
Three signals per training example, each oriented so that higher is more suspicious:

- low `mean_weight` (example_weights.csv): the method gave the example less than its uniform share;
- high `zero_share` (example_weights.csv): the method zeroed it in many of the steps that used it;
- the final model's disagreement with the label, 1 - p_model(label | image), of model.safetensors.

Examples that no update used (an empty mean_weight) are the least suspicious on the two weight signals.

The score, a fixed rule chosen before any result was seen: the mean of the three signals' rank
percentiles, each an example's rank among the N training examples (1 = least suspicious, ties
given their average rank) divided by N. A method that weighs nothing (plain SGD: every weight 1,
zero_share 0) ties every example on both weight signals, so its score orders the examples as the
model's disagreement alone does.

Writes into --out (default: the run dir): audit.csv (every training example, most suspicious first,
equal scores in the training set's order: its label, the model's prediction, p_predicted and p_label,
mean_weight, zero_share, score, corrupted, and with --cleanlab-folds cleanlab's label quality and
flag), audit.png (the --top first as thumbnails, each titled with its label and the model's
prediction and probability) and audit.json (what is measured below). A file of those names that
l2rw-audit did not write is never overwritten.

Measures, when the run injected label noise (example_weights.csv's `corrupted`), how well each
ranking (the score, and each signal alone) finds the corrupted labels: AUROC (corrupted as positives,
Mann-Whitney's U, a tie counting half) and precision at k = the number corrupted (examples tied at
the k-th place share its remaining places in proportion).

--cleanlab-folds K compares cleanlab's confident learning on the same training set: K models, each
trained as the run was (its model, steps, lr, batch size, lr schedule, seed and device) but with plain
SGD and cross-entropy on the other K-1 of K stratified folds, predict their held-out fold;
cleanlab.filter.find_label_issues flags examples (self-confidence) and cleanlab.rank.get_label_quality_scores
ranks them. Reported: the same AUROC and precision at k, the number flagged, and the cost: the
run's wall seconds (summary.json) against those of the K fold trainings, measured here.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import matplotlib

matplotlib.use("Agg")  # files only: works without a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from sklearn.model_selection import StratifiedKFold

from l2rw.data import Splits, build_splits
from l2rw.errors import UserError, shown
from l2rw.file_io import check_replaceable, write_replacing
from l2rw.methods.base import Method
from l2rw.models import build_model
from l2rw.models.saved import CARD, load_trained
from l2rw.optional import require
from l2rw.results.read import read_text_table
from l2rw.results.run_files import EXAMPLE_WEIGHTS
from l2rw.run.hardware import place_model, resolve_device
from l2rw.run.spec import is_run_config
from l2rw.training.evaluation import PixelStandardizer
from l2rw.training.loop import FitOptions, fit
from l2rw.training.optimization import lr_schedule, make_optimizer, make_scheduler, steps_per_epoch

AUDIT_CSV, AUDIT_PNG, AUDIT_JSON = "audit.csv", "audit.png", "audit.json"
CONFIG = "config.yaml"
RUN_INPUTS = (CONFIG, EXAMPLE_WEIGHTS, CARD)
SIGNALS = ("low_mean_weight", "high_zero_share", "model_disagreement")
SCORE = "score"
CLEANLAB = "cleanlab_label_quality"
SCORE_RULE = "mean over low_mean_weight, high_zero_share and model_disagreement (1 - p_label) of rank / N, ties averaged"
SHEET_COLUMNS = 8
TITLE_CHARACTERS = 14  # of a class name on a thumbnail: longer ones would run into the next
INFERENCE_BATCH = 512


def check_options(top: int, folds: int | None) -> None:
    if top < 1:
        raise UserError(f"--top {top}: the contact sheet needs at least one image; give --top 1 or more (default 64)")
    if folds is not None and folds < 2:
        raise UserError(f"--cleanlab-folds {folds}: cross-validation needs at least 2 folds; give --cleanlab-folds 2 or more")


def check_finished_run(run_dir: Path) -> None:
    for name in RUN_INPUTS:
        if not (run_dir / name).is_file():
            raise UserError(f"{shown(run_dir / name)} does not exist: {shown(run_dir)} is not the run dir of a finished run; "
                            f"give the run dir of one (it holds {', '.join(RUN_INPUTS)})")
    if not is_run_config(run_dir / CONFIG):
        raise UserError(f"{shown(run_dir / CONFIG)} is not the config.yaml of an l2rw run; give the run dir of a finished run")


def read_examples(run_dir: Path) -> pd.DataFrame:
    """example_weights.csv, with mean_weight and zero_share as numbers (NaN: no update used the example) and corrupted as 0/1."""
    path = run_dir / EXAMPLE_WEIGHTS
    try:
        examples = read_text_table(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        raise UserError(f"{shown(path)} cannot be read as a CSV table ({str(error).strip()}); rerun the run") from None
    missing = [c for c in ("class", "corrupted", "mean_weight", "zero_share") if c not in examples.columns]
    if missing or examples.empty:
        problem = f"lacks the column(s) {', '.join(missing)}" if missing else "has no rows"
        raise UserError(f"{shown(path)} {problem}: it is not an example_weights.csv l2rw-train wrote; rerun the run")
    for column in ("mean_weight", "zero_share", "corrupted"):
        numbers = pd.to_numeric(examples[column].where(examples[column] != ""), errors="coerce")
        if (numbers.isna() & (examples[column] != "")).any() or (column == "corrupted" and numbers.isna().any()):
            raise UserError(f"{shown(path)} has a {column} that is not a number: it is damaged; rerun the run")
        examples[column] = numbers
    examples["corrupted"] = examples.corrupted.astype(int)
    return examples


def check_folds(folds: int, examples: pd.DataFrame) -> None:
    """Stratified folds need each class in every fold: K at most the smallest class's examples."""
    counts = examples["class"].value_counts()
    smallest = int(counts.min())
    if folds > smallest:
        fix = f"use --cleanlab-folds {smallest} or fewer" if smallest >= 2 else "leave --cleanlab-folds out"
        raise UserError(f"--cleanlab-folds {folds}: class {shown(counts.idxmin())!r} has only {smallest} training example(s), and "
                        f"each of the {folds} folds needs one of every class; {fix}")


def run_device(cfg: DictConfig, run_dir: Path) -> torch.device:
    """The run's own device: the audit predicts, and the folds train, where the run did."""
    try:
        return resolve_device(cfg.hardware.device)
    except UserError as error:
        raise UserError(f"{shown(run_dir / CONFIG)}: the run trained on hardware.device={cfg.hardware.device}: {error}; "
                        "audit it on a machine that has that device") from None


def rebuild_training_set(run_dir: Path, cfg: DictConfig, examples: pd.DataFrame) -> Splits:
    torch.manual_seed(cfg.seed)  # what l2rw-train draws before build_splits, so the same draw
    splits = build_splits(cfg)
    rebuilt = [splits.class_names[label] for label in splits.train.labels.tolist()]
    recorded = examples["class"].tolist()
    if rebuilt != recorded:
        where = next((i for i, (a, b) in enumerate(zip(rebuilt, recorded)) if a != b), min(len(rebuilt), len(recorded)))
        raise UserError(f"the training set rebuilt from {shown(run_dir / CONFIG)} ({len(rebuilt)} examples) is not the one "
                        f"{shown(run_dir / EXAMPLE_WEIGHTS)} describes ({len(recorded)}; first difference at index {where}): "
                        "the data changed since the run; audit it with the data it trained on")
    return splits


@torch.no_grad()
def class_probabilities(model: torch.nn.Module, images: torch.Tensor, standardize, device: torch.device) -> np.ndarray:
    """Each image's softmax over the classes, in float64: cleanlab wants rows that sum to 1 to its tolerance."""
    model.eval()
    batches = [model(standardize(images[i:i + INFERENCE_BATCH].to(device))).double().softmax(dim=1).cpu()
               for i in range(0, len(images), INFERENCE_BATCH)]
    return torch.cat(batches).numpy()


def suspicion_signals(mean_weight: pd.Series, zero_share: pd.Series, p_label: np.ndarray) -> pd.DataFrame:
    """The three signals, each higher for a more suspicious example; an example no update used
    (NaN weight) is the least suspicious on the two weight signals."""
    return pd.DataFrame({
        "low_mean_weight": (-mean_weight).fillna(-np.inf),
        "high_zero_share": zero_share.fillna(-np.inf),
        "model_disagreement": 1 - p_label,
    })


def combined_score(signals: pd.DataFrame) -> pd.Series:
    """The mean of the signals' rank percentiles (rank / N, ties averaged; 1 = the most suspicious)."""
    return signals.rank(method="average", pct=True).mean(axis=1)


def auroc(suspicion, positives) -> float | None:
    """P(a positive ranks above a negative), a tie counting half: Mann-Whitney's U over the number
    of pairs. None without positives or without negatives."""
    positives = np.asarray(positives, dtype=bool)
    n_positive, n_negative = int(positives.sum()), int((~positives).sum())
    if not n_positive or not n_negative:
        return None
    ranks = pd.Series(np.asarray(suspicion, dtype=float)).rank(method="average").to_numpy()
    return float((ranks[positives].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def precision_at_k(suspicion, positives, k: int) -> float:
    """The share of positives among the k most suspicious; examples tied at the k-th place share
    its remaining places in proportion (what a random order among them gives on average)."""
    suspicion, positives = np.asarray(suspicion, dtype=float), np.asarray(positives, dtype=bool)
    threshold = np.sort(suspicion)[::-1][k - 1]
    above, tied = suspicion > threshold, suspicion == threshold
    hits = positives[above].sum() + (k - above.sum()) * positives[tied].mean()
    return float(hits / k)


def detection(rankings: dict[str, pd.Series], corrupted: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Each ranking's AUROC and precision at k = the number corrupted, at finding the corrupted labels."""
    k = int(corrupted.sum())
    return {name: {"auroc": auroc(suspicion, corrupted), "precision_at_k": precision_at_k(suspicion, corrupted, k)}
            for name, suspicion in rankings.items()}


def ranked_table(examples: pd.DataFrame, probabilities: np.ndarray, labels: np.ndarray, class_names: list[str],
                 score: pd.Series, cleanlab_columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """audit.csv's rows, most suspicious first; equal scores keep the training set's order."""
    predicted = probabilities.argmax(axis=1)
    table = pd.DataFrame({
        "index": np.arange(len(labels)),
        **({"path": examples.path} if "path" in examples.columns else {}),
        "class": examples["class"],
        "predicted": [class_names[c] for c in predicted],
        "p_predicted": probabilities.max(axis=1),
        "p_label": probabilities[np.arange(len(labels)), labels],
        "mean_weight": examples.mean_weight,
        "zero_share": examples.zero_share,
        "score": score,
        "corrupted": examples.corrupted,
        **cleanlab_columns,
    })
    table = table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def contact_sheet(top: pd.DataFrame, images: torch.Tensor, title: str):
    """The `top` rows' images as thumbnails, in rank order, each titled with its rank, training
    index, label and the model's prediction with its probability (red where it is not the label)."""
    columns = min(SHEET_COLUMNS, len(top))
    rows = -(-len(top) // columns)
    # constrained layout keeps the three-line titles and the suptitle clear of the images
    figure, grid = plt.subplots(rows, columns, figsize=(1.7 * columns, 2.0 * rows + 0.5), squeeze=False, layout="constrained")
    for axes in grid.flat:
        axes.axis("off")
    for axes, example in zip(grid.flat, top.to_dict("records")):
        pixels = images[example["index"]].cpu().permute(1, 2, 0).numpy()
        axes.imshow(pixels[..., 0] if pixels.shape[2] == 1 else pixels, cmap="gray", vmin=0, vmax=255)
        axes.set_title(f"#{example['rank']} (index {example['index']})\nlabel {short(example['class'])}\n"
                       f"model {short(example['predicted'])} p={example['p_predicted']:.2f}", fontsize=7,
                       color="black" if example["predicted"] == example["class"] else "tab:red")  # where the model disagrees
    figure.suptitle(title, fontsize=9)
    return figure


def png_bytes(figure) -> bytes:
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120)
    plt.close(figure)
    return png.getvalue()


def short(class_name: str) -> str:
    name = shown(class_name)
    return name if len(name) <= TITLE_CHARACTERS else name[:TITLE_CHARACTERS - 1] + "…"


def out_of_fold_probabilities(cfg: DictConfig, splits: Splits, folds: int, device: torch.device) -> tuple[np.ndarray, float]:
    """Each training example's class probabilities from a model that never trained on it, and the
    seconds the `folds` fold trainings took: each trains as the run did, with plain SGD and
    cross-entropy, on the other folds, then predicts its own."""
    labels = splits.train.labels.cpu().numpy()
    probabilities = np.zeros((len(labels), splits.num_classes))
    # the run's schedule step for step: its epochs counted over the whole training set, as the run counted them
    schedule = lr_schedule(cfg, cfg.steps, steps_per_epoch(len(labels), cfg.batch_size))
    # fit evaluates on the test set at least once, at the end; the folds need no more
    options = replace(FitOptions.from_config(cfg, cfg.steps), eval_every=cfg.steps)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="l2rw-audit-") as scratch:  # fit's metrics.csv: nothing goes into the run dir
        for fold, (trained_on, held_out) in enumerate(splitter.split(labels, labels), start=1):
            rows = torch.as_tensor(trained_on, device=device)
            fold_splits = Splits(train=splits.train.subset(rows), meta=splits.meta, test=splits.test,
                                 class_names=splits.class_names, train_corrupted=splits.train_corrupted[rows])
            torch.manual_seed(cfg.seed)  # each fold's model starts from the run's initial weights
            model = place_model(build_model(cfg.model, splits.image_shape, splits.num_classes), cfg.hardware, device)
            optimizer = make_optimizer(model, cfg)
            fit(model, Method(), fold_splits, optimizer, make_scheduler(optimizer, schedule),
                replace(options, label=f"cleanlab fold {fold}/{folds}"), metrics_csv=Path(scratch) / f"fold{fold}.csv")
            standardize = PixelStandardizer.of(fold_splits.train.images, model)  # the inputs fit trained it on
            held_out_images = splits.train.images[torch.as_tensor(held_out, device=device)]
            probabilities[held_out] = class_probabilities(model, held_out_images, standardize, device)
    return probabilities, time.perf_counter() - started


def cleanlab_comparison(cleanlab: dict[str, ModuleType], cfg: DictConfig, splits: Splits, corrupted: np.ndarray, folds: int,
                         device: torch.device, run_dir: Path) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """cleanlab's confident learning on out-of-fold predictions: audit.json's `cleanlab` entry (less
    the measures of its ranking), its suspicion of each example (minus its label quality), and its
    audit.csv columns."""
    labels = splits.train.labels.cpu().numpy()
    pred_probs, fold_seconds = out_of_fold_probabilities(cfg, splits, folds, device)
    # one process: cleanlab's pool of workers would fork this one, torch threads and all
    flagged = cleanlab["filter"].find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    quality = cleanlab["rank"].get_label_quality_scores(labels, pred_probs)
    is_flagged = np.zeros(len(labels), dtype=int)
    is_flagged[flagged] = 1
    summary = {"folds": folds, "flagged": len(flagged), "flagged_corrupted": int(corrupted[flagged].sum()),
               "fold_training_seconds": fold_seconds, "run_wall_seconds": run_wall_seconds(run_dir)}
    return summary, -quality, {"cleanlab_quality": quality, "cleanlab_flagged": is_flagged}


def run_wall_seconds(run_dir: Path) -> float | None:
    try:
        return float(json.loads((run_dir / "summary.json").read_text())["wall_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def audit(run_dir: Path, out: Path, top: int, folds: int | None) -> tuple[dict, list[Path]]:
    """Rank the run's training examples, measure the rankings, write the outputs; returns audit.json's
    content and the files written. Every refusal comes before anything is written."""
    check_options(top, folds)
    check_finished_run(run_dir)
    cleanlab = None if folds is None else {part: require(f"cleanlab.{part}", "cleanlab", "--cleanlab-folds")
                                           for part in ("filter", "rank")}
    outputs = [out / name for name in (AUDIT_CSV, AUDIT_PNG, AUDIT_JSON)]
    for path in outputs:
        check_replaceable(path, f"--out {shown(out)}: {path.name}", "a file l2rw-audit wrote")
    examples = read_examples(run_dir)
    if folds is not None:
        check_folds(folds, examples)
    cfg = OmegaConf.load(run_dir / CONFIG)
    device = run_device(cfg, run_dir)
    splits = rebuild_training_set(run_dir, cfg, examples).to(device)
    model, card = load_trained(run_dir)

    labels = splits.train.labels.cpu().numpy()
    probabilities = class_probabilities(model.to(device), splits.train.images, card.standardizer(device), device)
    signals = suspicion_signals(examples.mean_weight, examples.zero_share, probabilities[np.arange(len(labels)), labels])
    score = combined_score(signals)
    rankings = {SCORE: score, **{name: signals[name] for name in SIGNALS}}
    corrupted = examples.corrupted.to_numpy().astype(bool)
    findings = {"run_dir": str(run_dir), "examples": len(labels), "corrupted": int(corrupted.sum()), "score_rule": SCORE_RULE}
    cleanlab_columns = {}
    if folds is not None:
        findings["cleanlab"], rankings[CLEANLAB], cleanlab_columns = cleanlab_comparison(cleanlab, cfg, splits, corrupted, folds, device, run_dir)
    findings["rankings"] = detection(rankings, corrupted) if corrupted.any() else None
    table = ranked_table(examples, probabilities, labels, splits.class_names, score, cleanlab_columns)
    write_outputs(outputs, table, splits.train.images, top, findings)
    return findings, outputs


def write_outputs(outputs: list[Path], table: pd.DataFrame, images: torch.Tensor, top: int, findings: dict) -> None:
    csv_path, png_path, json_path = outputs
    try:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {shown(csv_path.parent)}: cannot make this folder ({error.strerror}); choose another path") from None
    write_replacing(csv_path, table.to_csv(index=False, float_format="%.6g", lineterminator="\n").encode())
    shown_top = min(top, len(table))
    title = f"{shown(findings['run_dir'])}: the {shown_top} training images most likely mislabelled (audit.csv ranks all)"
    write_replacing(png_path, png_bytes(contact_sheet(table.head(shown_top), images, title)))
    write_replacing(json_path, (json.dumps(findings, indent=2) + "\n").encode())


def summary_lines(findings: dict) -> list[str]:
    """What the audit measured, for the terminal."""
    lines = [f"{findings['run_dir']}: {findings['examples']} training examples, {findings['corrupted']} with a label the injected noise corrupted"]
    if findings["rankings"] is None:
        lines.append("no injected label noise: nothing to measure the rankings against")
    else:
        lines.append(f"{'ranking':<24} {'AUROC':>6} {'precision@' + str(findings['corrupted']):>14}")
        for name, measured in findings["rankings"].items():
            value = "   n/a" if measured["auroc"] is None else f"{measured['auroc']:6.3f}"
            lines.append(f"{name:<24} {value} {measured['precision_at_k']:14.3f}")
    cleanlab = findings.get("cleanlab")
    if cleanlab:
        lines.append(f"cleanlab flags {cleanlab['flagged']} examples, {cleanlab['flagged_corrupted']} of them corrupted")
        run = cleanlab["run_wall_seconds"]
        ratio = "" if not run else f", {cleanlab['fold_training_seconds'] / run:.1f}x the run's {run:.1f} s"
        lines.append(f"cost: {cleanlab['folds']} fold trainings took {cleanlab['fold_training_seconds']:.1f} s{ratio}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="l2rw-audit", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="the run dir of a finished l2rw-train run")
    parser.add_argument("--top", type=int, default=64, help="images on the contact sheet audit.png (default 64)")
    parser.add_argument("--cleanlab-folds", type=int, metavar="K", help="also run cleanlab's confident learning with K-fold cross-validation")
    parser.add_argument("--out", type=Path, help="output folder (default: the run dir)")
    args = parser.parse_args(argv)
    try:
        findings, written = audit(args.run_dir, args.out or args.run_dir, args.top, args.cleanlab_folds)
    except UserError as error:
        print(f"error: {shown(error)}", file=sys.stderr)
        sys.exit(2)
    for line in summary_lines(findings):
        print(line)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
