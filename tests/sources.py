"""Synthetic dataset sources for split tests: every image is unique and encodes its own index."""
import torch

from l2rw.data import LabeledImages, Source


def indexed_source(num_classes: int = 4, per_class: int = 60, with_test: bool = False) -> Source:
    n = num_classes * per_class
    index = torch.arange(n)
    images = torch.stack([index % 256, index // 256], dim=1).to(torch.uint8).view(n, 1, 2, 1)
    labels = index % num_classes
    test = LabeledImages(images[:num_classes].clone(), labels[:num_classes].clone()) if with_test else None
    return Source(LabeledImages(images, labels), test, [f"class{c}" for c in range(num_classes)])


def image_ids(images: torch.Tensor) -> set[int]:
    flat = images.view(len(images), -1).long()
    return set((flat[:, 0] + 256 * flat[:, 1]).tolist())
