"""The final confusion matrix as a PNG, beside confusion.csv in the run dir."""
from pathlib import Path

import torch
from matplotlib.figure import Figure  # no pyplot: no global backend or GUI, safe in sweeps and tests


def save_confusion_png(path: Path, confusion: torch.Tensor, class_names: list[str], title: str) -> None:
    """Cells coloured by the share of each true class (recall on the diagonal), labelled with counts,
    so rare classes stay readable next to a majority class with thousands of images."""
    counts = confusion.double()
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    k = len(class_names)
    annotated = k <= 20  # 100 classes: 10,000 cell labels take ~20 s to draw and cannot be read
    cell = 0.6 if annotated else 0.15
    figure = Figure(figsize=(1.6 + cell * k, 1.2 + cell * k))
    axes = figure.subplots()
    axes.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    for true in range(k if annotated else 0):
        for predicted in range(k):
            axes.text(
                predicted, true, str(int(counts[true, predicted])), ha="center", va="center", fontsize=8,
                color="white" if shares[true, predicted] > 0.5 else "black",
            )
    axes.set_xticks(range(k), class_names, rotation=45, ha="right")
    axes.set_yticks(range(k), [f"{name} ({share:.0%})" for name, share in zip(class_names, shares.diag())])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true (recall)")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
