"""HAM10000 (Tschandl et al. 2018): 10,015 dermatoscopic images of 7,470 skin lesions, 7 diagnoses.

Read as the Harvard Dataverse and Kaggle ship it: `HAM10000_metadata.csv` (lesion_id, image_id,
dx; other columns are ignored) and `<image_id>.jpg` in any folders under `root`, names matched
case-insensitively. When the ISIC 2018 Task 3 test set is under `root` too
(`ISIC2018_Task3_Test_GroundTruth.csv` and its images) it is the test split.

Decoding 10k 600x450 JPEGs takes a while, so images are decoded once into one uint8 tensor and
cached; the cache key covers every source file's name, size and modification time, and the size.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from l2rw.data.splits import LabeledImages, Source
from l2rw.errors import UserError, is_whole
from l2rw.file_io import atomic_path
from l2rw.machine import usable_cores

# The dx codes in a fixed order: class indices, confusion matrices and recalls follow it.
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
METADATA = "HAM10000_metadata.csv"
ISIC_TEST_TRUTH = "ISIC2018_Task3_Test_GroundTruth.csv"
CACHE_FORMAT = 1  # part of the cache key: bump when decoding changes so old caches are rebuilt


def load_ham10000(root: str, image_size: int, cache_dir: str, workers: int = 0) -> Source:
    """The HAM10000 pool (grouped by lesion) and, when present, the ISIC 2018 test set."""
    if not (is_whole(image_size) and image_size >= 1):
        raise UserError(f"dataset.image_size={image_size} must be a whole number of pixels >= 1")
    if not (is_whole(workers) and workers >= 0):
        raise UserError(f"dataset.workers={workers} must be a whole number >= 0 (0: every available core)")
    root_path = Path(root).expanduser()
    files = index_files(root_path)
    metadata = read_metadata(files, root_path)
    truth_path = files.get(ISIC_TEST_TRUTH.lower())
    isic_test = read_isic_test(truth_path) if truth_path else None
    labelled = pd.concat([metadata, isic_test])  # pool rows, then test rows (a missing test set is dropped)
    images = cached_images(
        find_images(list(labelled.image_id), files, root_path),
        [path for path in (files[METADATA.lower()], truth_path) if path],
        image_size, Path(cache_dir).expanduser(), workers or usable_cores(),
    )
    labels = torch.tensor(labelled.label.to_numpy())
    pool_size = len(metadata)
    pool = LabeledImages(images[:pool_size], labels[:pool_size])
    test = None if isic_test is None else LabeledImages(images[pool_size:], labels[pool_size:])
    groups = torch.from_numpy(pd.factorize(metadata.lesion_id)[0]).long()
    return Source(pool, test, list(CLASSES), groups=groups, unit="lesion")


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
    table = read_csv(path, ["lesion_id", "image_id", "dx"])
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
    table = read_csv(path, ["image", *columns])
    one_hot = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy()  # not a number: NaN, not one-hot
    not_one_hot = np.flatnonzero((one_hot == 1).sum(1) != 1)
    if len(not_one_hot):
        raise UserError(f"{path}: row of image {table.image.iloc[not_one_hot[0]]} is not one-hot over {columns}")
    return pd.DataFrame({"image_id": table.image, "label": one_hot.argmax(1)})


def read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    missing = [name for name in required if name not in table.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; is it the file from the download?")
    if table.empty:
        raise UserError(f"{path} has a header but no rows; is it the file from the download?")
    return table


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


def cached_images(paths: list[Path], tables: list[Path], size: int, cache_dir: Path, workers: int) -> torch.Tensor:
    """uint8 (N, 3, size, size) images of `paths`, from the cache when its key still matches."""
    key = cache_key([*tables, *paths], size)
    cache = cache_dir / f"ham10000_{size}px.pt"
    if (cached := read_cache(cache, key, (len(paths), 3, size, size))) is not None:
        return cached
    images = torch.from_numpy(decode_all(paths, size, workers)).permute(0, 3, 1, 2).contiguous()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as partial_file:  # a concurrent run never reads half a cache
            torch.save({"key": key, "images": images}, partial_file)
    except OSError as error:
        raise UserError(f"cannot write the image cache to dataset.cache_dir={cache_dir}: {error}") from None
    return images


def read_cache(cache: Path, key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The images cached under `key`; None when the cache is missing, stale or damaged: it is our
    own file, so it is rebuilt rather than refused."""
    try:
        cached = torch.load(cache, weights_only=True)
    except Exception:  # noqa: BLE001  missing, or damaged in any of zip's, pickle's or torch's ways
        return None
    images = cached.get("images") if isinstance(cached, dict) and cached.get("key") == key else None
    fits = isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.shape == shape
    return images if fits else None


def cache_key(paths: list[Path], size: int) -> str:
    """Names (not folders: moving the dataset keeps the cache), sizes and mtimes, in order."""
    digest = hashlib.sha256(f"format {CACHE_FORMAT} size {size}\n".encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def decode_all(paths: list[Path], size: int, workers: int) -> np.ndarray:
    """(N, size, size, 3) uint8, decoded by `workers` processes (forked: they need no torch), with a
    progress bar whatever `progress` says: this is the one slow step of a first run."""
    images = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    decode = partial(decode_image, size=size)
    pool = ProcessPoolExecutor(workers, mp_context=get_context("fork")) if workers > 1 else nullcontext()
    with pool:
        decoded = pool.map(decode, paths, chunksize=64) if workers > 1 else map(decode, paths)
        for i, image in enumerate(tqdm(decoded, total=len(paths), desc=f"caching HAM10000 at {size}px")):
            images[i] = image
    return images


def decode_image(path: Path, size: int) -> np.ndarray:
    """Centre square crop resized to size x size RGB. The crop keeps the lesion's proportions
    (HAM10000 images are 4:3); `draft` lets libjpeg decode at 1/2, 1/4 or 1/8 scale directly,
    several times faster than decoding 600x450 pixels and then shrinking them."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))
            image = image.convert("RGB")
            width, height = image.size
            side = min(width, height)
            box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
            return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))
    except (OSError, SyntaxError, ValueError) as error:
        raise UserError(f"cannot decode image {path} ({error}); replace it with an intact copy") from None
