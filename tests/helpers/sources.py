"""Synthetic dataset sources for split tests: every image is unique and encodes its own index."""
import torch

from l2rw.data import LabeledImages, Source

# dataset=digits with indexed_source's images in its place: 4 classes of 60, 10 test images each
INDEXED = ["dataset.source._target_=tests.helpers.sources.indexed_source", "dataset.test_per_class=10"]


def indexed_source(num_classes: int = 4, per_class: int = 60, with_test: bool = False) -> Source:
    n = num_classes * per_class
    index = torch.arange(n)
    images = torch.stack([index % 256, index // 256], dim=1).to(torch.uint8).view(n, 1, 2, 1)
    labels = index % num_classes
    test = LabeledImages(images[:num_classes].clone(), labels[:num_classes].clone()) if with_test else None
    return Source(LabeledImages(images, labels), test, [f"class{c}" for c in range(num_classes)])


def image_ids(images: torch.Tensor) -> set[int]:
    """The id each image carries in its first two pixels (low byte, high byte), as the sources and
    miniatures here write it."""
    flat = images.view(len(images), -1).long()
    return set((flat[:, 0] + 256 * flat[:, 1]).tolist())
