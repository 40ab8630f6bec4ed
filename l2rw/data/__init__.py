"""Datasets: each loader returns a `Source`; `build_splits` turns it into train/meta/test."""
from l2rw.data.splits import LabeledImages, Source, Splits, build_splits

__all__ = ["LabeledImages", "Source", "Splits", "build_splits"]
