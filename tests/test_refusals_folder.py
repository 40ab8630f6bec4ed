"""dataset=folder on hostile folders: every bad file, link, pipe, name or option ends in one line on
stderr and exit code 2 (or, with dataset.skip_unreadable, a skipped file), and the user's folder
is left byte for byte as it was; the image cache is written only where it is this tool's own.

Each row builds the standard tiny folder (`FOLDER_LAYOUT`), changes it one way (`FOLDER_SETUPS`),
and runs l2rw-train in this process on it.
"""
import contextlib
import os
import signal
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from l2rw.data import images
from l2rw.data.folder import load_folder
from l2rw.data.images import user_cache_dir
from l2rw.errors import UserError
from l2rw.run.identity import config_hash
from tests.helpers.command_line import l2rw_train

FOLDER_SIZE = 8
# every split present, so that the loader says nothing about what it carves
FOLDER_LAYOUT = {"train": {"a": 6, "b": 6}, "trusted": {"a": 2, "b": 2}, "test": {"a": 2, "b": 2}}
NOT_AN_IMAGE = b"\x89PNG not really"


def write_tiny_folder(root: Path) -> None:
    """root/<split>/<class>/<n>.png, one flat grey level per image."""
    level = 10
    for split, classes in FOLDER_LAYOUT.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for n in range(count):
                Image.new("L", (9, 7), level).save(root / split / name / f"{n}.png")
                level += 3


def write_manifest(root: Path) -> None:
    """labels.csv listing root's images, each with its split: the manifest layout of the same images."""
    rows = [f"{path.relative_to(root).as_posix()},{path.parent.name},{path.parts[-3]}"
            for path in sorted(root.glob("*/*/*.png"))]
    (root / "labels.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")


def users_own_cache_named_file(root: Path) -> None:
    write_manifest(root)
    torch.save({"labels": torch.arange(3)}, root / f"labels_{FOLDER_SIZE}px.pt")  # the user's, named like the cache


def fifo_at_the_cache(root: Path) -> None:
    (root / "cache").mkdir()
    os.mkfifo(root / "cache" / f"folder_{FOLDER_SIZE}px.pt")


def fifo_manifest(root: Path) -> None:
    os.mkfifo(root / "labels.csv")


def fifo_named_like_an_image(root: Path) -> None:
    os.mkfifo(root / "train" / "a" / "pipe.png")


def symlink_loop_named_like_an_image(root: Path) -> None:
    os.symlink("loop.png", root / "train" / "a" / "loop.png")


def dangling_symlink(root: Path) -> None:
    os.symlink("gone.png", root / "train" / "a" / "x.png")


def folder_link_back_to_its_class(root: Path) -> None:
    os.symlink(".", root / "train" / "a" / "again")


def unreadable_image(root: Path) -> None:
    (root / "train" / "a" / "0.png").write_bytes(NOT_AN_IMAGE)


def unreadable_image_with_a_newline_in_its_name(root: Path) -> None:
    (root / "train" / "a" / "two\nlines.png").write_bytes(NOT_AN_IMAGE)


def no_trusted_split(root: Path) -> None:
    for path in sorted((root / "trusted").glob("*/*")):
        path.unlink()
    for folder in sorted((root / "trusted").glob("*")):
        folder.rmdir()
    (root / "trusted").rmdir()


def no_class_b_in_test(root: Path) -> None:
    for path in (root / "test" / "b").iterdir():
        path.unlink()
    (root / "test" / "b").rmdir()


def every_split_image_of_b_unreadable(split: str):
    def damage(root: Path) -> None:
        for path in (root / split / "b").iterdir():
            path.write_bytes(NOT_AN_IMAGE)
    return damage


FOLDER_SETUPS = {
    "as built": lambda root: None,
    "the user's labels_8px.pt": users_own_cache_named_file,
    "a FIFO at the cache's path": fifo_at_the_cache,
    "a FIFO as the manifest": fifo_manifest,
    "a FIFO named pipe.png": fifo_named_like_an_image,
    "a symlink loop named loop.png": symlink_loop_named_like_an_image,
    "a dangling x.png symlink": dangling_symlink,
    "a folder link back to its class": folder_link_back_to_its_class,
    "an unreadable image": unreadable_image,
    "a newline in an image's name": unreadable_image_with_a_newline_in_its_name,
    "no trusted/": no_trusted_split,
    "test/ without class b": no_class_b_in_test,
    "every trusted image of b unreadable": every_split_image_of_b_unreadable("trusted"),
    "every test image of b unreadable": every_split_image_of_b_unreadable("test"),
}

# (setup, arguments, a fragment of the one line): refused before any cache is written
FOLDER_CASES = [
    ("the user's labels_8px.pt", ["dataset.manifest=labels.csv", "dataset.cache_dir={root}"],
     f"labels_{FOLDER_SIZE}px.pt is a file l2rw did not write as its image cache, so it is neither read nor replaced; "
     "move it away, or set dataset.cache_dir to another folder"),
    ("a FIFO at the cache's path", ["dataset.cache_dir={root}/cache"],
     f"cache/folder_{FOLDER_SIZE}px.pt is a FIFO, so it is neither read nor replaced"),
    ("a FIFO as the manifest", ["dataset.manifest=labels.csv"], "labels.csv is not a file"),
    ("a FIFO named pipe.png", [], "cannot decode image {root}/train/a/pipe.png (it is a FIFO); replace it"),
    ("a symlink loop named loop.png", [], "cannot decode image {root}/train/a/loop.png (it is unreadable (Too many levels"),
    ("a dangling x.png symlink", [], "cannot decode image {root}/train/a/x.png (it is a dangling symbolic link)"),
    ("a folder link back to its class", [], "{root}/train/a/again leads to {root}/train/a, a folder already read, so its "
                                            "images would count twice (or endlessly); remove that link"),
    ("an unreadable image", [], "cannot decode image {root}/train/a/0.png ("),  # with no progress bar before it
    ("a newline in an image's name", [], "cannot decode image {root}/train/a/two\\nlines.png ("),
    ("as built", ["dataset.image_size=1"], "dataset.image_size=1 must be a whole number in [4, 1024] (pixels)"),
    ("as built", ["dataset.image_size=100000"], "dataset.image_size=100000 must be a whole number in [4, 1024]"),
    ("no trusted/", ["meta.per_class=50"], "class 'a' has 6 images, but meta.per_class=50 + 1 training image need 51"),
    ("test/ without class b", [], "class 'b' has no test images; every class needs at least one there"),
]
# (setup, fragment): with dataset.skip_unreadable=true, refused once the images are decoded
FOLDER_SKIP_CASES = [
    ("every trusted image of b unreadable",
     "class 'b' has no trusted (meta) images left once the unreadable files were skipped"),
    ("every test image of b unreadable", "class 'b' has no test images left once the unreadable files were skipped"),
]


def folder_snapshot(root: Path) -> dict[str, object]:
    """Every entry below root, links and pipes as what they are (never opened), files with their bytes."""
    entries = {}
    for parent, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(parent) / name
            mode = path.lstat().st_mode
            relative = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                entries[relative] = ("link", os.readlink(path))
            elif stat.S_ISREG(mode):
                entries[relative] = path.read_bytes()
            else:
                entries[relative] = stat.S_IFMT(mode)
    return entries


@contextlib.contextmanager
def failing_after(seconds: int):
    """A read that blocks (a FIFO opened as a file) fails the test instead of hanging the suite."""
    def give_up(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def refused_on_folder(tmp_path: Path, setup: str, args: list[str]) -> tuple[Path, str]:
    """Run l2rw-train on the tiny folder changed by `setup`; assert one line, exit code 2, no run
    file and the folder as it was. Returns the folder and the line."""
    root = tmp_path / "data"
    write_tiny_folder(root)
    FOLDER_SETUPS[setup](root)
    before = folder_snapshot(root)
    results, run_dir = tmp_path / "results.csv", tmp_path / "run"
    args = [arg.replace("{root}", str(root)) for arg in args]
    with failing_after(60):
        exit_code, stderr = l2rw_train(
            "dataset=folder", f"dataset.root={root}", f"dataset.image_size={FOLDER_SIZE}", "dataset.workers=1",
            "progress=false", "steps=2", f"results_csv={results}", f"hydra.run.dir={run_dir}", *args,
        )
    assert exit_code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert not results.exists() and not (run_dir / "metrics.csv").exists()
    assert folder_snapshot(root) == before
    return root, lines[0]


@pytest.mark.parametrize("setup, args, fragment", FOLDER_CASES, ids=[f"{case[0]} {' '.join(case[1])}" for case in FOLDER_CASES])
def test_a_hostile_folder_is_one_line_and_exit_code_2_and_nothing_is_written(tmp_path, setup, args, fragment):
    root, line = refused_on_folder(tmp_path, setup, args)
    assert fragment.replace("{root}", str(root)) in line, line
    assert not user_cache_dir("folder", root).exists()  # refused before the cache was built


@pytest.mark.parametrize("setup, fragment", FOLDER_SKIP_CASES, ids=[case[0] for case in FOLDER_SKIP_CASES])
def test_skipping_every_image_of_a_class_in_a_given_split_is_refused(tmp_path, setup, fragment):
    _, line = refused_on_folder(tmp_path, setup, ["dataset.skip_unreadable=true"])
    assert fragment in line, line


def test_the_cache_goes_to_the_user_cache_and_leaves_the_folder_alone(tmp_path):
    write_tiny_folder(tmp_path)
    (tmp_path / f"folder_{FOLDER_SIZE}px.pt").write_bytes(b"the user's")  # named as the cache was in root
    before = folder_snapshot(tmp_path)
    source = load_folder(str(tmp_path), image_size=FOLDER_SIZE, workers=1, progress=False)
    assert len(source.pool) == 12 and folder_snapshot(tmp_path) == before
    cache = user_cache_dir("folder", tmp_path) / f"folder_{FOLDER_SIZE}px.pt"
    assert torch.load(cache, weights_only=True)["made_by"] == images.CACHE_MARK
    assert Path(os.environ["XDG_CACHE_HOME"]) in cache.parents  # the tests' own, never the real home's


def dead_process_id() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def test_a_killed_writers_temporary_is_removed_when_the_cache_is_next_written(tmp_path):
    root, cache_dir = tmp_path / "data", tmp_path / "cache"
    write_tiny_folder(root)
    cache_dir.mkdir()
    cache = cache_dir / f"folder_{FOLDER_SIZE}px.pt"
    killed = cache.with_name(f"{cache.name}.l2rw-{dead_process_id()}.tmp")  # as file_io.atomic_path names it
    users = cache.with_name(f"{cache.name}.123.tmp")  # not named as only this tool names them: kept
    killed.write_bytes(b"half a cache")
    users.write_bytes(b"the user's")
    load_folder(str(root), image_size=FOLDER_SIZE, cache_dir=str(cache_dir), workers=1, progress=False)
    assert sorted(path.name for path in cache_dir.iterdir()) == sorted([cache.name, users.name])


def test_a_cache_with_a_bogus_unreadable_list_is_rebuilt(tmp_path):
    root, cache_dir = tmp_path / "data", tmp_path / "cache"
    write_tiny_folder(root)

    def load():
        return load_folder(str(root), image_size=FOLDER_SIZE, cache_dir=str(cache_dir), workers=1, progress=False)

    first = load()
    cache = cache_dir / f"folder_{FOLDER_SIZE}px.pt"
    cached = torch.load(cache, weights_only=True)
    for bogus in ({999: "gone"}, {-1: "gone"}, {"0": "gone"}, {0: 5}):
        torch.save(cached | {"unreadable": bogus}, cache)
        again = load()
        assert torch.equal(again.pool.images, first.pool.images) and again.skipped_files == []
        assert torch.load(cache, weights_only=True)["unreadable"] == {}


def test_a_skipped_file_with_a_newline_in_its_name_is_listed_on_one_line(tmp_path):
    write_tiny_folder(tmp_path)
    unreadable_image_with_a_newline_in_its_name(tmp_path)
    source = load_folder(str(tmp_path), image_size=FOLDER_SIZE, workers=1, skip_unreadable=True, progress=False)
    assert source.skipped_files == ["train/a/two\\nlines.png"]


def test_a_dangling_symlink_is_skipped_and_listed_with_skip_unreadable(tmp_path):
    write_tiny_folder(tmp_path)
    dangling_symlink(tmp_path)
    source = load_folder(str(tmp_path), image_size=FOLDER_SIZE, workers=1, skip_unreadable=True, progress=False)
    assert source.skipped_files == ["train/a/x.png"] and len(source.pool) == 12


@pytest.mark.parametrize("channels, expected", [("grey", [[0], [128], [255]]), ("rgb", [[0] * 3, [128] * 3, [255] * 3])])
def test_16_bit_grey_pngs_are_scaled_to_8_bits(tmp_path, channels, expected):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0] * 3, [128 * 257] * 3, [65535] * 3], dtype=np.uint16)).save(path)
    assert Image.open(path).mode in ("I", "I;16")  # as PIL opens a 16-bit grey PNG
    pixels = images.decode_image(path, 3, images.PIL_MODES[channels])
    assert pixels[:, 0].tolist() == expected


def test_a_folders_config_hash_follows_its_images_and_not_progress(make_cfg, tmp_path):
    write_tiny_folder(tmp_path)

    def folder_hash(*overrides: str) -> str:
        return config_hash(make_cfg("dataset=folder", f"dataset.root={tmp_path}", *overrides))

    built = folder_hash()
    assert folder_hash("progress=true") == folder_hash("progress=false") == built
    added = tmp_path / "train" / "a" / "extra.png"
    Image.new("L", (9, 7), 200).save(added)
    assert folder_hash() != built
    added.unlink()
    assert folder_hash() == built
    with pytest.raises(UserError, match="is not a folder"):
        folder_hash(f"dataset.root={tmp_path}/nowhere")


def test_a_cache_written_before_the_mark_is_rebuilt_not_refused(tmp_path):
    root, cache_dir = tmp_path / "data", tmp_path / "cache"
    write_tiny_folder(root)
    cache_dir.mkdir()
    cache = cache_dir / f"folder_{FOLDER_SIZE}px.pt"
    torch.save({"key": "a key of an older format", "images": torch.zeros(1, dtype=torch.uint8)}, cache)
    source = load_folder(str(root), image_size=FOLDER_SIZE, cache_dir=str(cache_dir), workers=1, progress=False)
    assert len(source.pool) == 12 and torch.load(cache, weights_only=True)["made_by"] == images.CACHE_MARK
