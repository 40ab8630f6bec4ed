"""L2RW example weights in a plain PyTorch loop: your model, your loss, any optimizer.

    python examples/own_training_loop.py

scikit-learn's 8x8 digits, classes 5-9 cut to 1/20 of their training images; a small MLP with
BatchNorm, label-smoothed cross-entropy and Adam. It trains once with uniform weights and once
with L2RW weights from a meta set of 5 clean images per class, and prints balanced test accuracy.
"""
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from l2rw import example_weights

MINORITY = range(5, 10)


def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none", label_smoothing=0.1)  # one loss per example


def imbalanced_splits(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
    """Per class: 5 meta images, 60 test images, the rest for training (1/20 of it for MINORITY)."""
    train, meta, test = [], [], []
    for c in range(10):
        index = (y == c).nonzero().squeeze(1)
        index = index[torch.randperm(len(index), generator=generator)]
        rest = index[65:]
        train.append(rest[: len(rest) // 20] if c in MINORITY else rest)
        meta.append(index[:5])
        test.append(index[5:65])
    return [(x[i], y[i]) for i in map(torch.cat, (train, meta, test))]


def fit(train, meta, reweight: bool, steps: int = 200) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    (x, y), (meta_x, meta_y) = train, meta
    for _ in range(steps):
        batch = torch.randint(len(y), (64,))
        if reweight:
            weights, losses = example_weights(model, x[batch], y[batch], meta_x, meta_y, loss_fn=loss_fn)
            if weights.sum() == 0:
                continue  # no example's gradient agrees with the meta gradient: skip the step
        else:
            losses = loss_fn(model(x[batch]), y[batch])
            weights = torch.full_like(losses, 1 / len(losses))
        optimizer.zero_grad()
        (weights * losses).sum().backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def recalls(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    predicted = model(x).argmax(1)
    return torch.stack([(predicted[y == c] == c).float().mean() for c in range(10)])


def main() -> None:
    digits = load_digits()
    x, y = torch.tensor(digits.data, dtype=torch.float32) / 16, torch.tensor(digits.target)
    train, meta, test = imbalanced_splits(x, y, torch.Generator().manual_seed(0))
    print(f"training images per class: {torch.bincount(train[1], minlength=10).tolist()}")
    for name, reweight in (("uniform", False), ("l2rw", True)):
        recall = recalls(fit(train, meta, reweight), *test)
        print(f"{name:>7} weights: balanced accuracy {recall.mean():.3f}, "
              f"mean recall of classes 5-9 {recall[list(MINORITY)].mean():.3f}")


if __name__ == "__main__":
    main()
