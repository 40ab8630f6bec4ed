"""Image cache build time of dataset=folder against HAM10000, on the same generated JPEGs.

    python scripts/image_cache_benchmark.py                        # 10,015 images -> 64 px
    python scripts/image_cache_benchmark.py --images 500 --size 128 --workers 1

What is measured, and how: N textured 600x450 JPEGs (about 190 KB each, close to HAM10000's
files, since decoding time grows with the coded size) are written once into a temporary folder,
with HAM10000's class shares and about 4 images per 3 lesions. The same files are then laid out
twice by hard links: as HAM10000 ships (two image folders and HAM10000_metadata.csv) and as a
dataset=folder class-folder layout (train/<dx>/<image>.jpg). Each layout's cache is built by its
own loader (load_ham10000, load_folder) at the same image size with the same workers, and then
read back from the cache; wall-clock seconds of each, and folder / HAM10000 ratios, are printed
side by side. The files were just written, so both builds read them from the OS page cache.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from l2rw.data.folder import load_folder
from l2rw.data.ham10000 import CLASSES, load_ham10000
from l2rw.run.machine import usable_cores

# images per dx code in HAM10000 (10,015 in all)
HAM10000_COUNTS = {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}
WIDTH, HEIGHT = 600, 450


def textures(count: int, rng: np.random.Generator, base: tuple[int, int, int]) -> list[Image.Image]:
    """Noisy flat-colour images: noise sets the JPEG's coded size, and so the decoding time."""
    return [
        Image.fromarray((np.array(base) + rng.normal(0, 24, (HEIGHT, WIDTH, 3))).clip(0, 255).astype(np.uint8))
        for _ in range(count)
    ]


def write_jpegs(folder: Path, images: int, rng: np.random.Generator) -> pd.DataFrame:
    """`images` JPEGs of lesion-like ellipses on skin-like texture in `folder`, and their
    lesion_id, image_id and dx in HAM10000's class shares."""
    skins, lesions = textures(8, rng, (200, 150, 140)), textures(8, rng, (120, 70, 60))
    counts = {dx: max(1, round(n * images / sum(HAM10000_COUNTS.values()))) for dx, n in HAM10000_COUNTS.items()}
    rows = []
    for dx in CLASSES:
        for i in range(counts[dx]):
            rows.append({"lesion_id": f"HAM_{dx}_{i * 3 // 4}", "image_id": f"ISIC_{len(rows):07d}", "dx": dx})
    folder.mkdir(parents=True)
    for i, row in enumerate(rows):
        mask = Image.new("L", (WIDTH, HEIGHT))
        x, y, rx, ry = rng.integers(200, 400), rng.integers(150, 300), rng.integers(60, 180), rng.integers(50, 140)
        ImageDraw.Draw(mask).ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)
        image = Image.composite(lesions[i % 8], skins[(i // 8) % 8], mask)
        image.save(folder / f"{row['image_id']}.jpg", quality=95)
    return pd.DataFrame(rows)


def lay_out_as_ham10000(jpegs: Path, rows: pd.DataFrame, root: Path) -> None:
    """HAM10000_metadata.csv and the images over two folders, as the download has them."""
    for i, image_id in enumerate(rows.image_id):
        folder = root / f"HAM10000_images_part_{1 + i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        os.link(jpegs / f"{image_id}.jpg", folder / f"{image_id}.jpg")
    rows.to_csv(root / "HAM10000_metadata.csv", index=False)


def lay_out_as_class_folders(jpegs: Path, rows: pd.DataFrame, root: Path) -> None:
    """train/<dx>/<image_id>.jpg: what dataset=folder reads."""
    for image_id, dx in zip(rows.image_id, rows.dx):
        (root / "train" / dx).mkdir(parents=True, exist_ok=True)
        os.link(jpegs / f"{image_id}.jpg", root / "train" / dx / f"{image_id}.jpg")


def timed(action):
    """`action()`'s result and the wall-clock seconds it took."""
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def build_and_reload(load) -> tuple[float, float]:
    """Seconds to build the cache (the first load) and to load from it (the second)."""
    return timed(load)[1], timed(load)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10015)
    parser.add_argument("--size", type=int, default=64, help="dataset.image_size")
    parser.add_argument("--workers", type=int, default=0, help="dataset.workers (0 = every core)")
    args = parser.parse_args()
    workers = args.workers or usable_cores()
    with tempfile.TemporaryDirectory(prefix="image_cache_benchmark_") as temporary:
        base = Path(temporary)
        rows, generated = timed(lambda: write_jpegs(base / "jpegs", args.images, np.random.default_rng(0)))
        megabytes = sum(p.stat().st_size for p in (base / "jpegs").iterdir()) / 2**20
        print(f"generated {len(rows)} 600x450 JPEGs ({megabytes:.0f} MB) in {generated:.1f} s", flush=True)
        lay_out_as_ham10000(base / "jpegs", rows, base / "ham10000")
        lay_out_as_class_folders(base / "jpegs", rows, base / "folder")
        ham = build_and_reload(lambda: load_ham10000(str(base / "ham10000"), args.size, str(base / "ham10000"), workers))
        folder = build_and_reload(lambda: load_folder(str(base / "folder"), image_size=args.size, workers=workers))
    print(f"\ncache of {len(rows)} JPEGs at {args.size} px, workers={workers}, wall-clock seconds:")
    print("| | HAM10000 | dataset=folder | folder / HAM10000 |")
    print("|---|---|---|---|")
    for what, ham_seconds, folder_seconds in [("build", ham[0], folder[0]), ("rerun (cache hit)", ham[1], folder[1])]:
        print(f"| {what} | {ham_seconds:.2f} | {folder_seconds:.2f} | {folder_seconds / ham_seconds:.2f} |")


if __name__ == "__main__":
    main()
