"""Image files in, one uint8 tensor out, once: the decoder and cache that every dataset of image
files (dataset=folder, HAM10000) shares, and the assembly of a `Source` from a labelled file list.

Decoding thousands of JPEGs takes a while, so the decoded images are saved as one uint8 tensor;
the cache key covers every source file's path (relative to the dataset's folder, so moving the
dataset keeps the cache), size and modification time, the image size and the colour mode. A cache
carries a mark (`CACHE_MARK`): a file at the cache's path without it is the user's, and is refused
rather than replaced.
"""
from __future__ import annotations

import hashlib
import os
import stat
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
from l2rw.errors import UserError, shown
from l2rw.file_io import atomic_path, remove_killed_temporaries
from l2rw.run.machine import usable_cores
from l2rw.run.options import filesystem_path, flag, optional, whole

CACHE_FORMAT = 3  # part of the cache key: bump when decoding changes so old caches are rebuilt
CACHE_MARK = "l2rw image cache"  # the `made_by` of every cache this tool writes
# the fields of the caches written before they carried the mark: without, then with the unreadable files
UNMARKED_CACHE_FIELDS = ({"key", "images"}, {"key", "images", "unreadable"})
FILE_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link",
              stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}  # what a path is when it is not a regular file
# The options of every loader that decodes image files (dataset=folder, HAM10000), declared once.
# Below 4 pixels LeNet's pooling leaves nothing; above 1024 the decoded images outgrow memory.
IMAGE_SIZE = whole(4, 1024, note=" (pixels)", doc="the square side images are centre-cropped and resized to")
CACHE_DIR = optional(filesystem_path(), "for a folder named after root in the user's cache ($XDG_CACHE_HOME/l2rw, "
                     "else ~/.cache/l2rw)",
                     doc="where the decoded images are cached, once per image_size; a file there that l2rw did not "
                         "write is never replaced")
WORKERS = whole(0, note=" (0: every available core)", doc="processes decoding images when the cache is built")
SKIP_UNREADABLE = flag(doc="true: leave out images that cannot be decoded (listed in the run dir's "
                           "`skipped_images.txt`) instead of stopping")
CACHE_PROGRESS = flag(doc="a progress bar while the image cache is built: the run's `progress`, passed on")
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
    progress: bool = True  # a progress bar while the cache is built

    @property
    def cache_file(self) -> Path:
        colour = "" if self.channels == "rgb" else f"_{self.channels}"
        return self.cache_dir / f"{self.cache_name}_{self.image_size}px{colour}.pt"


@dataclass
class DecodedImages:
    images: torch.Tensor  # uint8 (N, C, size, size); zeros where a file was skipped
    key: str
    unreadable: dict[int, str] = field(default_factory=dict)  # position -> why it could not be decoded


def cache_folder(cache_dir: str | None, dataset: str, root: Path) -> Path:
    """The folder `dataset.cache_dir` names, ~ expanded; by default (null) `user_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir else user_cache_dir(dataset, root)


def user_cache_dir(dataset: str, root: Path) -> Path:
    """Where a dataset's decoded images are cached by default: in the user's cache
    ($XDG_CACHE_HOME/l2rw, else ~/.cache/l2rw), not in their folder, under a name that differs
    for each folder."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return cache_home / "l2rw" / dataset / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]


def labelled_source(
    table: pd.DataFrame, class_names: list[str], decoding: Decoding, base: Path,
    tables: list[Path], unit: str, provenance: dict[str, str | int],
) -> Source:
    """A Source from one row per image: `path` (a file under `base`), `label` (index into
    `class_names`), `split` (one of SPLITS) and `group` (None: every image its own group).
    `tables` are the files the labels were read from; they are part of the cache key. Each image
    of the pool and of the trusted split is named as `skipped_files` names the unreadable ones."""
    decoded = cached_images(list(table.path), tables, base, decoding)
    names = [shown(relative_name(path, base)) for path in table.path]
    skipped_files = [names[i] for i in sorted(decoded.unreadable)]
    keep = np.ones(len(table), dtype=bool)
    keep[list(decoded.unreadable)] = False
    images, table = rows_of(decoded.images, np.flatnonzero(keep)), table[keep].reset_index(drop=True)
    names = [name for name, kept in zip(names, keep) if kept]
    labels = torch.tensor(table.label.to_numpy(dtype=np.int64))

    def rows_in(split: str) -> np.ndarray:
        return np.flatnonzero(table.split.to_numpy() == split)

    def part(split: str) -> LabeledImages | None:
        rows = rows_in(split)
        return LabeledImages(rows_of(images, rows), labels[rows]) if len(rows) else None

    def paths(split: str) -> list[str] | None:
        return [names[i] for i in rows_in(split)] or None

    pool_groups = table.group[table.split == "train"]
    groups = None if pool_groups.isna().all() else torch.from_numpy(pd.factorize(pool_groups)[0]).long()
    return Source(
        pool=part("train"), test=part("test"), class_names=list(class_names), groups=groups, unit=unit,
        meta=part("trusted"), val=part("val"),
        provenance=provenance | {"data_cache_key": decoded.key, "skipped_images": len(skipped_files)},
        skipped_files=skipped_files, pool_paths=paths("train"), meta_paths=paths("trusted"),
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
    key = cache_key([*tables, *paths], base, decoding.image_size, decoding.channels)
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
            f"cannot decode image {shown(paths[first])} ({shown(decoded.unreadable[first])}){also}; replace it with an intact "
            "copy, or set dataset.skip_unreadable=true to leave such files out"
        )
    return decoded


def write_cache(decoded: DecodedImages, decoding: Decoding) -> None:
    try:
        decoding.cache_dir.mkdir(parents=True, exist_ok=True)
        remove_killed_temporaries(decoding.cache_file)  # a run killed while it saved left its part behind
        with atomic_path(decoding.cache_file) as partial_file:  # a concurrent run never reads half a cache
            torch.save({"made_by": CACHE_MARK, "key": decoded.key, "images": decoded.images,
                        "unreadable": decoded.unreadable}, partial_file)
    except OSError as error:
        raise UserError(
            f"cannot write the image cache to dataset.cache_dir={decoding.cache_dir}: {error}; "
            "set dataset.cache_dir to a writable folder"
        ) from None


def read_cache(cache: Path, key: str, shape: tuple[int, ...]) -> DecodedImages | None:
    """The images cached under `key`; None when there is no cache yet, or ours is stale or damaged
    inside: it is rebuilt. A file there that this tool did not write is the user's: refused, never
    read as images nor replaced."""
    if not os.path.lexists(cache):
        return None
    kind = not_a_regular_file(cache, follow_symlinks=False)
    if kind is None:
        try:
            cached = torch.load(cache, weights_only=True)
        except Exception:  # noqa: BLE001  not a tensor file in any of zip's, pickle's or torch's ways
            cached = None
        if is_own_cache(cached):
            return own_cache_images(cached, key, shape)
    what = kind or "a file l2rw did not write as its image cache"
    raise UserError(f"{shown(cache)} is {what}, so it is neither read nor replaced; move it away, or set "
                    "dataset.cache_dir to another folder")


def is_own_cache(cached) -> bool:
    """Whether a loaded file is a cache this tool wrote: marked, or holding exactly the fields a
    cache held before the mark."""
    return isinstance(cached, dict) and (cached.get("made_by") == CACHE_MARK or set(cached) in UNMARKED_CACHE_FIELDS)


def own_cache_images(cached: dict, key: str, shape: tuple[int, ...]) -> DecodedImages | None:
    """The images of one of our caches when it holds `key`'s images of `shape` and a list of
    unreadable positions among them; else None (rebuilt)."""
    images, unreadable = cached.get("images"), cached.get("unreadable")
    fits = isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.shape == shape
    if cached.get("key") != key or not fits or not isinstance(unreadable, dict):
        return None
    positions_fit = all(type(i) is int and 0 <= i < shape[0] and isinstance(why, str) for i, why in unreadable.items())
    return DecodedImages(images, key, unreadable) if positions_fit else None


def not_a_regular_file(path: Path, follow_symlinks: bool = True) -> str | None:
    """What `path` is when it is not a regular file, or None. Checked before a file is opened: a
    FIFO would block the read forever."""
    try:
        mode = path.stat(follow_symlinks=follow_symlinks).st_mode
    except FileNotFoundError:
        return "a dangling symbolic link" if path.is_symlink() else "missing"
    except OSError as error:  # a symbolic link loop (ELOOP), a name too long
        return f"unreadable ({error.strerror})"
    return None if stat.S_ISREG(mode) else FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")


def cache_key(paths: list[Path], base: Path, image_size: int, channels: str) -> str:
    """Paths relative to `base`, sizes and mtimes, in order, with the size and colour mode."""
    digest = hashlib.sha256(f"format {CACHE_FORMAT} size {image_size} {channels}\n".encode())
    for path in paths:
        digest.update(f"{relative_name(path, base)} {file_signature(path)}\n".encode())
    return digest.hexdigest()


def file_signature(path: Path) -> str:
    """Size and mtime; for a path that cannot be followed (a dangling link, a link loop), why not:
    decoding it then says so."""
    try:
        status = path.stat()
    except OSError as error:
        return f"unreadable {error.errno}"
    return f"{status.st_size} {status.st_mtime_ns}"


def relative_name(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else path.as_posix()


def decode_all(paths: list[Path], decoding: Decoding) -> dict:
    """`images` (N, C, size, size) uint8 and `unreadable` {position: reason}, decoded by the
    workers (forked: they need no torch), with a progress bar unless `progress=false`."""
    size, mode = decoding.image_size, PIL_MODES[decoding.channels]
    images = np.zeros((len(paths), size, size, len(mode)), dtype=np.uint8)
    unreadable = {}
    workers = decoding.workers or usable_cores()
    decode = partial(decode_or_reason, size=size, mode=mode)
    pool = ProcessPoolExecutor(workers, mp_context=get_context("fork")) if workers > 1 else nullcontext()
    with pool:
        decoded = pool.map(decode, paths, chunksize=64) if workers > 1 else map(decode, paths)
        bar = tqdm(decoded, total=len(paths), desc=f"caching {decoding.title} at {size}px", disable=not decoding.progress)
        for i, image in enumerate(bar):
            if isinstance(image, str):
                unreadable[i] = image
            else:
                images[i] = image
    return {"images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), "unreadable": unreadable}


def decode_or_reason(path: Path, size: int, mode: str) -> np.ndarray | str:
    """The decoded image, or why it could not be decoded (a worker returns it rather than raise,
    so that every damaged file is counted)."""
    kind = not_a_regular_file(path)
    if kind is not None:
        return f"it is {kind}"
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
        image = eight_bit(ImageOps.exif_transpose(image)).convert(mode)
        width, height = image.size
        side = min(width, height)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        pixels = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))
    return pixels if pixels.ndim == 3 else pixels[..., None]


def eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image (PIL's I;16 modes, and I, which 16-bit PNGs open as) scaled to 0..255:
    PIL's convert clips it instead, which turns most pixels white."""
    if image.mode != "I" and not image.mode.startswith("I;16"):
        return image
    pixels = np.asarray(image).astype(np.float64) / 257  # 65535 -> 255
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8), "L")
