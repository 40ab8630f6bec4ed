"""Image files in, one uint8 tensor out, once: the decoder and cache that every dataset of image
files (dataset=folder, HAM10000) shares, and the assembly of a `Source` from a labelled file list.

Decoding thousands of JPEGs takes a while, so the decoded images are saved as one uint8 tensor;
the cache key covers every source file's path (relative to the dataset's folder, so moving the
dataset keeps the cache), size and modification time, the image size and the colour mode.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from l2rw.data.splits import LabeledImages, Source
from l2rw.errors import UserError
from l2rw.file_io import atomic_path
from l2rw.run.machine import usable_cores

CACHE_FORMAT = 2  # part of the cache key: bump when decoding changes so old caches are rebuilt
PIL_MODES = {"rgb": "RGB", "grey": "L"}  # dataset.channels -> the mode images are converted to
SPLITS = ("train", "trusted", "val", "test")  # a manifest's `split` values; train is the pool to split


@dataclass(frozen=True)
class Decoding:
    """How image files become the cached tensor: `image_size` square pixels in `channels`, decoded
    by `workers` processes (0: every available core), cached as `cache_file`."""

    image_size: int
    channels: str
    cache_dir: Path
    cache_name: str
    title: str  # what the progress bar says is being cached
    workers: int = 0
    skip_unreadable: bool = False

    @property
    def cache_file(self) -> Path:
        colour = "" if self.channels == "rgb" else f"_{self.channels}"
        return self.cache_dir / f"{self.cache_name}_{self.image_size}px{colour}.pt"


@dataclass
class DecodedImages:
    images: torch.Tensor  # uint8 (N, C, size, size); zeros where a file was skipped
    key: str
    unreadable: dict[int, str] = field(default_factory=dict)  # position -> why it could not be decoded


def labelled_source(
    table: pd.DataFrame, class_names: list[str], decoding: Decoding, base: Path,
    tables: list[Path], unit: str, provenance: dict[str, str | int],
) -> Source:
    """A Source from one row per image: `path` (a file under `base`), `label` (index into
    `class_names`), `split` (one of SPLITS) and `group` (None: every image its own group).
    `tables` are the files the labels were read from; they are part of the cache key."""
    decoded = cached_images(list(table.path), tables, base, decoding)
    skipped_files = [relative_name(table.path.iloc[i], base) for i in sorted(decoded.unreadable)]
    keep = np.ones(len(table), dtype=bool)
    keep[list(decoded.unreadable)] = False
    images, table = rows_of(decoded.images, np.flatnonzero(keep)), table[keep].reset_index(drop=True)
    labels = torch.tensor(table.label.to_numpy(dtype=np.int64))

    def part(split: str) -> LabeledImages | None:
        rows = np.flatnonzero(table.split.to_numpy() == split)
        return LabeledImages(rows_of(images, rows), labels[rows]) if len(rows) else None

    pool_groups = table.group[table.split == "train"]
    groups = None if pool_groups.isna().all() else torch.from_numpy(pd.factorize(pool_groups)[0]).long()
    return Source(
        pool=part("train"), test=part("test"), class_names=list(class_names), groups=groups, unit=unit,
        meta=part("trusted"), val=part("val"),
        provenance=provenance | {"data_cache_key": decoded.key, "skipped_images": len(skipped_files)},
        skipped_files=skipped_files,
    )


def rows_of(images: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """images[rows]; a view, not a copy, when the rows are consecutive (as the layouts list them),
    since at 224 px a dataset's images take gigabytes."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
        return images[rows[0]:rows[-1] + 1]
    return images[torch.from_numpy(rows)]


def read_table(path: Path, required: list[str], fix: str) -> pd.DataFrame:
    """A CSV of text cells with at least the `required` columns and one row; `fix` ends the
    message when it is not."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    missing = [name for name in required if name not in table.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; {fix}")
    if table.empty:
        raise UserError(f"{path} has a header but no rows; {fix}")
    return table


def cached_images(paths: list[Path], tables: list[Path], base: Path, decoding: Decoding) -> DecodedImages:
    """The decoded `paths`, from the cache when its key still matches. An unreadable file stops
    the run, naming it, unless `decoding.skip_unreadable`; nothing is cached then."""
    key = cache_key([*tables, *paths], base, decoding)
    channels = len(PIL_MODES[decoding.channels])
    decoded = read_cache(decoding.cache_file, key, (len(paths), channels, decoding.image_size, decoding.image_size))
    if decoded is None:
        decoded = DecodedImages(key=key, **decode_all(paths, decoding))
        if not decoded.unreadable or decoding.skip_unreadable:
            write_cache(decoded, decoding)
    if decoded.unreadable and not decoding.skip_unreadable:
        first = min(decoded.unreadable)
        also = f" ({len(decoded.unreadable)} unreadable files in all)" if len(decoded.unreadable) > 1 else ""
        raise UserError(
            f"cannot decode image {paths[first]} ({decoded.unreadable[first]}){also}; replace it with an intact "
            "copy, or set dataset.skip_unreadable=true to leave such files out"
        )
    return decoded


def write_cache(decoded: DecodedImages, decoding: Decoding) -> None:
    try:
        decoding.cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(decoding.cache_file) as partial_file:  # a concurrent run never reads half a cache
            torch.save({"key": decoded.key, "images": decoded.images, "unreadable": decoded.unreadable}, partial_file)
    except OSError as error:
        raise UserError(
            f"cannot write the image cache to dataset.cache_dir={decoding.cache_dir}: {error}; "
            "set dataset.cache_dir to a writable folder"
        ) from None


def read_cache(cache: Path, key: str, shape: tuple[int, ...]) -> DecodedImages | None:
    """The images cached under `key`; None when the cache is missing, stale or damaged: it is our
    own file, so it is rebuilt rather than refused."""
    try:
        cached = torch.load(cache, weights_only=True)
    except Exception:  # noqa: BLE001  missing, or damaged in any of zip's, pickle's or torch's ways
        return None
    if not (isinstance(cached, dict) and cached.get("key") == key):
        return None
    images, unreadable = cached.get("images"), cached.get("unreadable")
    fits = isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.shape == shape
    return DecodedImages(images, key, unreadable) if fits and isinstance(unreadable, dict) else None


def cache_key(paths: list[Path], base: Path, decoding: Decoding) -> str:
    """Paths relative to `base`, sizes and mtimes, in order, with the size and colour mode."""
    digest = hashlib.sha256(f"format {CACHE_FORMAT} size {decoding.image_size} {decoding.channels}\n".encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{relative_name(path, base)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def relative_name(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else path.as_posix()


def decode_all(paths: list[Path], decoding: Decoding) -> dict:
    """`images` (N, C, size, size) uint8 and `unreadable` {position: reason}, decoded by the
    workers (forked: they need no torch), with a progress bar whatever `progress` says: this is
    the one slow step of a first run."""
    size, mode = decoding.image_size, PIL_MODES[decoding.channels]
    images = np.zeros((len(paths), size, size, len(mode)), dtype=np.uint8)
    unreadable = {}
    workers = decoding.workers or usable_cores()
    decode = partial(decode_or_reason, size=size, mode=mode)
    pool = ProcessPoolExecutor(workers, mp_context=get_context("fork")) if workers > 1 else nullcontext()
    with pool:
        decoded = pool.map(decode, paths, chunksize=64) if workers > 1 else map(decode, paths)
        for i, image in enumerate(tqdm(decoded, total=len(paths), desc=f"caching {decoding.title} at {size}px")):
            if isinstance(image, str):
                unreadable[i] = image
            else:
                images[i] = image
    return {"images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), "unreadable": unreadable}


def decode_or_reason(path: Path, size: int, mode: str) -> np.ndarray | str:
    """The decoded image, or why it could not be decoded (a worker returns it rather than raise,
    so that every damaged file is counted)."""
    try:
        return decode_image(path, size, mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return str(error) or type(error).__name__


def decode_image(path: Path, size: int, mode: str = "RGB") -> np.ndarray:
    """Centre square crop resized to size x size, (size, size, channels) in `mode` (RGB or L),
    turned upright as its EXIF orientation says. The crop keeps the object's proportions;
    `draft` lets libjpeg decode at 1/2, 1/4 or 1/8 scale directly, several times faster than
    decoding every pixel and then shrinking them."""
    with Image.open(path) as image:
        image.draft(mode, (size, size))
        image = ImageOps.exif_transpose(image).convert(mode)
        width, height = image.size
        side = min(width, height)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        pixels = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))
    return pixels if pixels.ndim == 3 else pixels[..., None]
