"""Where CIFAR-10 time goes: the input pipeline alone, then one optimizer step of sgd and of
l2rw on ResNet-32, through the same code the trainer runs. Random uint8 images stand in for
CIFAR-10 (neither cost depends on the pixel values).

    python scripts/bench_cifar10.py                  # CPU, batch 100 (l2rw installed from this checkout)
    python scripts/bench_cifar10.py --device cuda

Measured (OMP_NUM_THREADS=1, --steps 5): docs/performance.md
"""
import argparse
import time

import torch
from hydra import compose, initialize_config_dir

from l2rw.data import LabeledImages
from l2rw.data.augment import random_crop_and_flip
from l2rw.methods.base import Method
from l2rw.methods.l2rw import L2RW
from l2rw.models.resnet32 import ResNet32
from l2rw.train import CONFIG_DIR, place_model
from l2rw.training_loop import PixelStandardizer


def timed(function, repeats: int, device: torch.device) -> tuple[float, float]:
    """(wall, CPU) seconds per call, after one warm-up call. On a shared machine the wall time
    includes waiting for a core; the CPU time of this process does not."""
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per method")
    args = parser.parse_args()
    device = torch.device(args.device)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        hardware = compose("config", overrides=[f"hardware={device.type}"]).hardware  # its layout too
    generator = torch.Generator().manual_seed(0)
    train = LabeledImages(
        torch.randint(0, 256, (10_000, 3, 32, 32), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (10_000,), generator=generator),
    ).to(device)
    standardize = PixelStandardizer(train.images)
    meta = LabeledImages(standardize(train.images[:100]), train.labels[:100])

    methods = {"sgd": Method(), "l2rw": L2RW(meta_batch_size=100)}
    for method in methods.values():
        method.setup(train, meta, 10, generator)
    batches = {name: method.batches(args.batch_size) for name, method in methods.items()}

    def next_batch(name: str):
        """What the trainer does before the model sees a batch."""
        index = next(batches[name]).to(device)
        return standardize(random_crop_and_flip(train.images[index], generator)), train.labels[index], index

    wall, cpu = timed(lambda: next_batch("sgd"), 200, device)
    print(f"input pipeline (index, crop+flip, normalise): {args.batch_size / wall:,.0f} images/s "
          f"({args.batch_size / cpu:,.0f} per CPU second)")

    per_step = {}
    for name, method in methods.items():
        torch.manual_seed(0)
        model = place_model(ResNet32((3, 32, 32), 10), hardware, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

        def step():
            x, y, index = next_batch(name)
            loss = method.step_loss(model, x, y, index, lr=0.1).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        per_step[name], cpu = timed(step, args.steps, device)
        print(f"{name}: {per_step[name]:.3f} s/step, {cpu:.3f} CPU s/step (ResNet-32, batch {args.batch_size}, {device})")
    print(f"l2rw / sgd: {per_step['l2rw'] / per_step['sgd']:.2f}x  (torch threads: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
