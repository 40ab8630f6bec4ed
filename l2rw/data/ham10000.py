"""HAM10000 (Tschandl et al. 2018): 10,015 dermatoscopic images of 7,470 skin lesions, 7 diagnoses.

Read as the Harvard Dataverse and Kaggle ship it: `HAM10000_metadata.csv` (lesion_id, image_id,
dx; other columns are ignored) and `<image_id>.jpg` in any folders under `root`, names matched
case-insensitively. When the ISIC 2018 Task 3 test set is under `root` too
(`ISIC2018_Task3_Test_GroundTruth.csv` and its images) it is the test split.

The metadata become a manifest (path, label, split, lesion as group) that the decoder and cache
every image dataset shares (l2rw/data/images.py) turn into tensors, as for dataset=folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from l2rw.data.images import (
    CACHE_DIR,
    CACHE_PROGRESS,
    IMAGE_SIZE,
    SKIP_UNREADABLE,
    WORKERS,
    Decoding,
    cache_folder,
    labelled_source,
    read_table,
)
from l2rw.data.splits import Source
from l2rw.errors import UserError
from l2rw.run.options import filesystem_path

# The dx codes in a fixed order: class indices, confusion matrices and recalls follow it.
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
METADATA = "HAM10000_metadata.csv"
ISIC_TEST_TRUTH = "ISIC2018_Task3_Test_GroundTruth.csv"
DOWNLOAD_FIX = "is it the file from the download?"


def load_ham10000(
    root: filesystem_path(doc="the folder holding `HAM10000_metadata.csv` and the images in any layout, and the ISIC "
                              "2018 test set when you have it; ~ is expanded"),
    image_size: IMAGE_SIZE,
    cache_dir: CACHE_DIR = None,
    workers: WORKERS = 0,
    skip_unreadable: SKIP_UNREADABLE = False,
    progress: CACHE_PROGRESS = True,
) -> Source:
    """The HAM10000 pool (grouped by lesion) and, when present, the ISIC 2018 test set."""
    root_path = Path(root).expanduser()
    decoding = Decoding(image_size, "rgb", cache_folder(cache_dir, "ham10000", root_path), cache_name="ham10000",
                        title="HAM10000", workers=workers, skip_unreadable=skip_unreadable, progress=progress)
    files = index_files(root_path)
    metadata = read_metadata(files, root_path)
    truth_path = files.get(ISIC_TEST_TRUTH.lower())
    isic_test = read_isic_test(truth_path) if truth_path else None
    labelled = pd.concat([metadata.assign(split="train", group=metadata.lesion_id),
                          None if isic_test is None else isic_test.assign(split="test", group=None)])
    manifest = labelled.assign(path=find_images(list(labelled.image_id), files, root_path))[
        ["path", "label", "split", "group"]].reset_index(drop=True)
    tables = [path for path in (files[METADATA.lower()], truth_path) if path]
    return labelled_source(manifest, CLASSES, decoding, root_path, tables, unit="lesion",
                           provenance={"data_source": str(root_path.resolve())})


def index_files(root: Path) -> dict[str, Path]:
    """Every file under `root` by lower-case name. Where a name repeats (Kaggle's copy ships each
    image folder twice) the first path in sorted order wins, so the choice is reproducible."""
    if not root.is_dir():
        raise UserError(
            f"dataset.root={root} is not a folder; download HAM10000 (Harvard Dataverse or Kaggle), "
            "unpack it and set dataset.root (or L2RW_DATA) to where it is"
        )
    files: dict[str, Path] = {}
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            files.setdefault(name.lower(), Path(folder) / name)
    return files


def read_metadata(files: dict[str, Path], root: Path) -> pd.DataFrame:
    """lesion_id, image_id and dx of each image, plus `label` (index into CLASSES)."""
    path = files.get(METADATA.lower())
    if path is None:
        raise UserError(
            f"no {METADATA} under dataset.root={root}; set dataset.root to the folder that holds "
            "the HAM10000 metadata CSV and image folders"
        )
    table = read_table(path, ["lesion_id", "image_id", "dx"], DOWNLOAD_FIX)
    table["dx"] = table.dx.str.strip().str.lower()
    unknown = table[~table.dx.isin(CLASSES)]
    if len(unknown):
        raise UserError(
            f"{path}: unknown dx code {unknown.dx.iloc[0]!r} (image {unknown.image_id.iloc[0]}, "
            f"{len(unknown)} row(s) in all); HAM10000's codes are {', '.join(CLASSES)}"
        )
    diagnoses_per_lesion = table.groupby("lesion_id").dx.nunique()
    if diagnoses_per_lesion.max() > 1:
        lesion = diagnoses_per_lesion.idxmax()
        raise UserError(f"{path}: lesion {lesion} has images with different dx codes; fix its rows")
    table["label"] = table.dx.map(CLASSES.index)
    return table


def read_isic_test(path: Path) -> pd.DataFrame:
    """The ISIC 2018 Task 3 ground truth: one-hot columns MEL, NV, ... -> image_id, label."""
    columns = [name.upper() for name in CLASSES]
    table = read_table(path, ["image", *columns], DOWNLOAD_FIX)
    one_hot = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy()  # not a number: NaN, not one-hot
    not_one_hot = np.flatnonzero((one_hot == 1).sum(1) != 1)
    if len(not_one_hot):
        raise UserError(f"{path}: row of image {table.image.iloc[not_one_hot[0]]} is not one-hot over {columns}")
    return pd.DataFrame({"image_id": table.image, "label": one_hot.argmax(1)})


def find_images(image_ids: list[str], files: dict[str, Path], root: Path) -> list[Path]:
    """`<image_id>.jpg` (or .jpeg, any case) for each id, wherever it is under `root`."""
    paths = [files.get(f"{image_id.lower()}.jpg") or files.get(f"{image_id.lower()}.jpeg") for image_id in image_ids]
    missing = [image_id for image_id, path in zip(image_ids, paths) if path is None]
    if missing:
        raise UserError(
            f"image {missing[0]}.jpg is not under dataset.root={root} ({len(missing)} of {len(image_ids)} "
            "images are missing); unpack every image folder of the download there"
        )
    return paths
