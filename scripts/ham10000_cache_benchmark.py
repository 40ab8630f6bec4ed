"""Time the HAM10000 image cache on a synthetic copy of the dataset's size.

    python scripts/ham10000_cache_benchmark.py                        # 10,015 images -> 64 px
    python scripts/ham10000_cache_benchmark.py --images 500 --size 128 --workers 1

Writes textured 600x450 JPEGs (about 190 KB each, close to HAM10000's files, since decoding time
grows with the coded size) and a metadata CSV with HAM10000's class shares into a temporary
folder, builds the cache, loads it again, prints both times and their ratio, then deletes it all.
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from l2rw.data.ham10000 import CLASSES, load_ham10000

# images per dx code in HAM10000 (10,015 in all)
HAM10000_COUNTS = {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}
WIDTH, HEIGHT = 600, 450


def textures(count: int, rng: np.random.Generator, base: tuple[int, int, int]) -> list[Image.Image]:
    """Noisy flat-colour images: noise sets the JPEG's coded size, and so the decoding time."""
    return [
        Image.fromarray((np.array(base) + rng.normal(0, 24, (HEIGHT, WIDTH, 3))).clip(0, 255).astype(np.uint8))
        for _ in range(count)
    ]


def write_synthetic_ham10000(root: Path, images: int, rng: np.random.Generator) -> None:
    """`images` JPEGs over two folders, about 4 images per 3 lesions, and HAM10000_metadata.csv."""
    skins, lesions = textures(8, rng, (200, 150, 140)), textures(8, rng, (120, 70, 60))
    counts = {dx: max(1, round(n * images / 10015)) for dx, n in HAM10000_COUNTS.items()}
    rows = []
    for dx in CLASSES:
        for i in range(counts[dx]):
            rows.append({"lesion_id": f"HAM_{dx}_{i * 3 // 4}", "image_id": f"ISIC_{len(rows):07d}", "dx": dx})
    for folder in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        (root / folder).mkdir(parents=True)
    for i, row in enumerate(rows):
        mask = Image.new("L", (WIDTH, HEIGHT))
        x, y, rx, ry = rng.integers(200, 400), rng.integers(150, 300), rng.integers(60, 180), rng.integers(50, 140)
        ImageDraw.Draw(mask).ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)
        image = Image.composite(lesions[i % 8], skins[(i // 8) % 8], mask)
        image.save(root / f"HAM10000_images_part_{1 + i % 2}" / f"{row['image_id']}.jpg", quality=95)
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)


def seconds(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10015)
    parser.add_argument("--size", type=int, default=64, help="dataset.image_size")
    parser.add_argument("--workers", type=int, default=0, help="dataset.workers (0 = every core)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="synthetic_ham10000_") as folder:
        root = Path(folder)
        generated = seconds(lambda: write_synthetic_ham10000(root, args.images, np.random.default_rng(0)))
        megabytes = sum(p.stat().st_size for p in root.rglob("*.jpg")) / 2**20
        print(f"generated {args.images} JPEGs ({megabytes:.0f} MB) in {generated:.1f} s", flush=True)

        def load() -> None:
            load_ham10000(str(root), args.size, str(root), args.workers)

        built, reloaded = seconds(load), seconds(load)
        cache_mb = sum(p.stat().st_size for p in root.glob("*.pt")) / 2**20
        print(f"cache build at {args.size} px (workers={args.workers}): {built:.1f} s; cache file {cache_mb:.0f} MB")
        print(f"rerun, cache hit: {reloaded:.2f} s; build / rerun = {built / reloaded:.0f}x")


if __name__ == "__main__":
    main()
