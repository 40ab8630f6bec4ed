"""Your own images (`dataset=folder`): a skewed set of labelled images and, optionally, a few that
someone checked by hand, in either layout a user already has:

- torchvision's ImageFolder layout: `root/train/<class>/<image>`, and optionally
  `root/trusted/<class>/` (the meta set, used whole and never trained on), `root/val/<class>/`
  and `root/test/<class>/`;
- a CSV manifest (`manifest`, relative to `root` unless absolute) with columns `path` and
  `label`, optionally `split` (train, trusted, val or test; empty or absent: train) and a group
  column (`group_column`: images of one group never land in two splits); paths are relative to
  the CSV's folder and must stay below it.

Classes are the trusted images' labels when there is a trusted split (every other label must be
one of them), else the training images' labels, in sorted order. What is absent is carved from
the training images as for every dataset: the meta set (`meta.per_class`), the test set
(`dataset.test_per_class`) and the validation set (`dataset.val_per_class`).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from l2rw.data.images import (
    CACHE_DIR,
    CACHE_PROGRESS,
    IMAGE_SIZE,
    SKIP_UNREADABLE,
    SPLITS,
    WORKERS,
    Decoding,
    cache_folder,
    cache_key,
    labelled_source,
    read_table,
)
from l2rw.data.splits import PoolCounts, Source
from l2rw.errors import UserError, shown
from l2rw.run.options import choice, filesystem_path, optional, text

EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")  # what PIL decodes, lower case
LAYOUT_FIX = (
    "arrange the images as train/<class>/<image> (optionally also trusted/, val/ and test/) or list them "
    "in a CSV with columns path,label[,split] and set dataset.manifest to it"
)


@dataclass(frozen=True)
class Listing:
    """The images a folder or manifest names, before any is decoded."""

    images: pd.DataFrame  # path, label (a name), split and group of each image
    tables: list[Path]    # the files the labels were read from (the manifest)
    base: Path            # what the image paths are relative to
    where: str            # the option that names them, for messages
    read: Path            # what the row's data_source names


def load_folder(
    root: filesystem_path(doc="the folder holding `train/<class>/` (and `trusted/`, `val/`, `test/` beside it) or "
                              "the manifest; ~ is expanded"),
    manifest: optional(filesystem_path(), "for the class-folder layout",
                       doc="a CSV with columns `path,label[,split]` (and the group column), relative to root unless "
                           "absolute; its paths are relative to its own folder") = None,
    group_column: optional(text("a column of the manifest"), "for every image its own group",
                           doc="the manifest column whose groups (patient, lesion) stay in one split: carved splits "
                               "take whole groups") = None,
    image_size: IMAGE_SIZE = 32,
    channels: choice("rgb", "grey", doc="the channels images are converted to") = "rgb",
    cache_dir: CACHE_DIR = None,
    workers: WORKERS = 0,
    skip_unreadable: SKIP_UNREADABLE = False,
    progress: CACHE_PROGRESS = True,
) -> Source:
    """The training images as the pool to split; trusted, val and test images, when present,
    as the meta, validation and test sets."""
    listing = list_images(root, manifest, group_column)
    class_names = classes_of(listing.images)
    say_what_is_carved(listing.images, listing.where)
    root_path = Path(root).expanduser()
    decoding = Decoding(
        image_size, channels, cache_folder(cache_dir, "folder", root_path),
        cache_name="folder" if manifest is None else Path(manifest).stem, title=listing.where,
        workers=workers, skip_unreadable=skip_unreadable, progress=progress,
    )
    images = listing.images.assign(label=listing.images.label.map(class_names.index))
    return labelled_source(
        images, class_names, decoding, listing.base, listing.tables, unit=group_column or "image",
        provenance={"data_source": str(listing.read.resolve())},
    )


def content_key(root: str, manifest: str | None = None, group_column: str | None = None, image_size: int = 32,
                channels: str = "rgb", **how_it_is_read) -> str:
    """What identifies the images `load_folder` reads with these options: the key of their cache,
    which changes when an image is added, removed or rewritten. `how_it_is_read` (the cache's
    folder, the workers, skip_unreadable, progress) changes where and how fast, not what."""
    listing = list_images(root, manifest, group_column)
    return cache_key([*listing.tables, *listing.images.path], listing.base, image_size, channels)


def pool_counts(root: str, manifest: str | None = None, group_column: str | None = None, **how_it_is_read) -> PoolCounts:
    """The images per class of each split, before any is decoded. Those that turn out unreadable
    are counted too, and images rather than groups: a check on these counts refuses nothing that
    the decoded images and their groups would allow."""
    images = list_images(root, manifest, group_column).images
    class_names = classes_of(images)

    def per_class(split: str) -> list[int] | None:
        labels = images.label[images.split == split]
        return [int((labels == name).sum()) for name in class_names] if len(labels) else None

    return PoolCounts(per_class("train"), class_names, official_test=per_class("test") is not None,
                      brought_meta=per_class("trusted"), brings_val=per_class("val") is not None)


# What identifies the data (l2rw.run.identity) and what can be checked before the cache is built
# (l2rw.data.splits), worked out from the listing alone
load_folder.content_key = content_key
load_folder.pool_counts = pool_counts


def list_images(root: str, manifest: str | None, group_column: str | None) -> Listing:
    root_path = Path(root).expanduser()
    if manifest is None:
        if group_column is not None:
            raise UserError(f"dataset.group_column={group_column} needs a manifest: set dataset.manifest to a CSV "
                            "with that column, or dataset.group_column=null")
        return Listing(class_folders(root_path), [], root_path, f"dataset.root={shown(root_path)}", root_path)
    read = root_path / Path(manifest).expanduser()  # an absolute manifest leaves root aside
    return Listing(read_manifest(read, group_column), [read], read.parent, f"dataset.manifest={shown(read)}", read)


def class_folders(root: Path) -> pd.DataFrame:
    """path, label, split and group (none) of every image in root/<split>/<class>/, at any depth
    below the class folder, in sorted order. Hidden files (.DS_Store, ._x.jpg) are left out."""
    if not root.is_dir():
        raise UserError(f"dataset.root={shown(root)} is not a folder; set dataset.root to the folder holding train/<class>/")
    if not (root / "train").is_dir():
        raise UserError(f"dataset.root={shown(root)} has no train/ folder; {LAYOUT_FIX}")
    rows = []
    for split in SPLITS:
        split_folder = root / split
        if not split_folder.is_dir():
            continue
        entries = [entry for entry in sorted(split_folder.iterdir()) if not entry.name.startswith(".")]
        stray = next((entry for entry in entries if not entry.is_dir()), None)
        if stray is not None:
            raise UserError(f"{shown(stray)} is not in a class folder; move it into {shown(split_folder)}/<class>/")
        if not entries:
            raise UserError(f"{shown(split_folder)} holds no class folders; {LAYOUT_FIX}")
        for class_folder in entries:
            images = images_below(class_folder)
            if not images:
                raise UserError(f"{shown(class_folder)} holds no images; add images of class {class_folder.name!r} "
                                "or remove the folder")
            rows += [{"path": path, "label": class_folder.name, "split": split, "group": None} for path in images]
    return pd.DataFrame(rows)


def images_below(folder: Path) -> list[Path]:
    """The images at any depth below `folder`, symbolic links to folders followed; a link to a
    folder already read (a loop, or a second way to the same images) is refused: its images would
    count again, endlessly for a loop."""
    paths = []
    read = {_folder_identity(folder): folder}
    for parent, subfolders, names in os.walk(folder, followlinks=True):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in subfolders:
            below = Path(parent) / name
            if (earlier := read.setdefault(_folder_identity(below), below)) is not below:
                raise UserError(f"{shown(below)} leads to {shown(earlier)}, a folder already read, so its images would "
                                "count twice (or endlessly); remove that link")
        paths += [Path(parent) / name for name in sorted(names) if not name.startswith(".")]
    for path in paths:
        check_extension(path, "remove it or convert it")
    return paths


def _folder_identity(folder: Path) -> tuple[int, int]:
    """The device and inode of the folder `folder` is (or leads to)."""
    status = folder.stat()
    return status.st_dev, status.st_ino


def check_extension(path: Path, fix: str) -> None:
    if path.suffix.lower() not in EXTENSIONS:
        raise UserError(f"{shown(path)} is not an image file l2rw reads (extensions: {', '.join(EXTENSIONS)}); {fix}")


def read_manifest(path: Path, group_column: str | None) -> pd.DataFrame:
    """path (resolved against the CSV's folder), label, split and group of each row."""
    if not path.is_file():
        raise UserError(f"dataset.manifest={shown(path)} is not a file; set it to the CSV listing the images "
                        "(relative to dataset.root, or absolute)")
    required = ["path", "label", *([group_column] if group_column else [])]
    table = read_table(path, required, "the manifest needs the columns path,label and optionally split"
                       + (f" and {group_column} (dataset.group_column)" if group_column else ""))
    table = table.apply(lambda column: column.str.strip())
    line = table.index.to_numpy() + 2  # the CSV line of each row, after the header
    for column in required:
        empty = (table[column] == "").to_numpy()
        if empty.any():
            raise UserError(f"{shown(path)} line {line[empty][0]}: the {column} is empty; fill it in or remove the line")
    splits = table["split"].replace("", "train") if "split" in table.columns else pd.Series("train", table.index)
    unknown = (~splits.isin(SPLITS)).to_numpy()
    if unknown.any():
        raise UserError(f"{shown(path)} line {line[unknown][0]}: split {splits[unknown].iloc[0]!r} is not one of "
                        f"{', '.join(SPLITS)}; fix the split column")
    files = [image_path(path, line_number, name) for line_number, name in zip(line, table.path)]
    check_unique(path, files, line)
    listing = pd.DataFrame({"path": files, "label": table.label, "split": splits,
                            "group": table[group_column] if group_column else None})
    if group_column:
        check_groups_in_one_split(path, listing, group_column)
    return listing


def image_path(manifest: Path, line: int, name: str) -> Path:
    """`name`, a path relative to the manifest's folder, as an existing image file below it."""
    base = manifest.parent
    path = Path(os.path.normpath(base / name))
    if not path.is_relative_to(Path(os.path.normpath(base))):
        raise UserError(f"{shown(manifest)} line {line}: path {shown(name)} leads outside the manifest's folder {shown(base)}; "
                        "paths are relative to the CSV and must stay below it (move the CSV up, or the images in)")
    check_extension(path, f"fix line {line} of {shown(manifest)}")
    if not os.path.lexists(path):  # what is there but is no image file (a FIFO, a dangling link) cannot be decoded
        raise UserError(f"{shown(manifest)} line {line}: {shown(path)} does not exist; fix the path (relative to the "
                        "CSV's folder)")
    return path


def check_unique(manifest: Path, files: list[Path], line) -> None:
    first_line: dict[Path, int] = {}
    for number, path in zip(line, files):
        if path in first_line:
            raise UserError(f"{shown(manifest)} lists {shown(path)} twice (lines {first_line[path]} and {number}); list each image once")
        first_line[path] = number


def check_groups_in_one_split(manifest: Path, listing: pd.DataFrame, group_column: str) -> None:
    splits_per_group = listing.groupby("group").split.nunique()
    if splits_per_group.max() > 1:
        group = splits_per_group.idxmax()
        splits = sorted(listing.split[listing.group == group].unique())
        raise UserError(f"{shown(manifest)}: {group_column} {group!r} has images in {' and '.join(splits)}; a group must "
                        "stay in one split, so move them into one")


def classes_of(listing: pd.DataFrame) -> list[str]:
    """The trusted images' labels when there are trusted images, else the training images', sorted;
    every other label must be one of them, and every class needs a training image and, in a given
    val or test split, an image there."""
    defining = "trusted" if (listing.split == "trusted").any() else "train"
    classes = sorted(listing.label[listing.split == defining].unique())
    outside = ~listing.label.isin(classes)
    if outside.any():
        row = listing[outside].iloc[0]
        raise UserError(f"{shown(row.path)}: label {row.label!r} ({row.split}) is not one of {defining}'s classes "
                        f"({', '.join(classes)}); add {defining} images of {row.label!r} or correct the label")
    untrained = sorted(set(classes) - set(listing.label[listing.split == "train"]))
    if untrained:
        raise UserError(f"class {untrained[0]!r} has trusted images but no training images; add training images "
                        "of it or remove its trusted images")
    for split in ("val", "test"):  # a split that lacks a class leaves it out of that split's balanced accuracy
        present = set(listing.label[listing.split == split])
        missing = sorted(set(classes) - present) if present else []
        if missing:
            raise UserError(f"class {missing[0]!r} has no {split} images; every class needs at least one there: add "
                            f"{split} images of {missing[0]!r}, or leave the class out")
    if len(classes) < 2:
        raise UserError(f"the images have one class ({classes[0]!r}); a classifier needs at least 2")
    return classes


def say_what_is_carved(listing: pd.DataFrame, where: str) -> None:
    """One line per split the data does not bring, naming what replaces it."""
    present = set(listing.split)
    if "trusted" not in present:
        print(f"{where} has no trusted images: the meta set is carved from train (meta.per_class per class)",
              file=sys.stderr)
    if "test" not in present:
        print(f"{where} has no test images: a balanced test set is carved from train "
              "(dataset.test_per_class per class)", file=sys.stderr)
