"""A GPU machine's checks in one command and one markdown report (sized for under 5 minutes on one GPU).

    python scripts/device_check.py                        # hardware=cuda; writes outputs/device_check.md
    python scripts/device_check.py --device cpu --quick   # the same checks, small, on CPU (a test runs it)

Each check is a row of the report (--out): name, ok / FAILED / skipped, detail and seconds. The
report is rewritten after every row, so a run cut short keeps what it did; the exit code is 1
when any check failed.

- data: whether Fashion-MNIST's files are present (then it is trained on too, in float32;
  --quick: LeNet with sgd only);
- train: `l2rw.run.train.train` on composed configs, dataset=digits, every method (sgd,
  weighted_sampler, class_balanced, l2rw with each method.impl) on LeNet and ResNet-32, in
  float32 and with hardware.amp=bf16 hardware.compile=true (--quick: float32 only, ResNet-32
  with one block per stage, smaller batches);
- weights: each method.impl's weights for one batch on the device against the CPU's, same
  model and batches, float32 with TF32 convolutions off;
- checkpoint: an l2rw run on the device saves a checkpoint at its midpoint; resumed from it into
  a freshly built model, optimizer and method, it ends with an uninterrupted run's parameters;
- bench: scripts/bench_step.py's table of seconds per step on the device.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from l2rw import example_weights, reweight
from l2rw.data import build_splits
from l2rw.errors import UserError
from l2rw.models import build_model
from l2rw.run import CONFIG_DIR

# every method of conf/method/, once per way it computes its weights: each trains on the device and is timed
from l2rw.run.bench import (
    DIGITS_SHAPE,
    METHODS,
    NUM_CLASSES,
    TABLE_COLUMNS,
    Comparison,
    Run,
    compare_methods,
    compose_config,
    machine,
    markdown_table,
)
from l2rw.run.instantiation import build
from l2rw.run.train import train
from l2rw.training.checkpoint import Checkpoint
from l2rw.training.optimization import make_scheduler


@dataclass(frozen=True)
class Sizes:
    steps: int                      # even: the checkpoint check saves at the midpoint
    batch: int
    meta_batch: int
    resnet32: list[str]             # overrides that come with model=resnet32
    variants: dict[str, list[str]]  # label -> hardware overrides; the first is also Fashion-MNIST's
    fashion_models: list[str]       # what trains on Fashion-MNIST, when its files are present
    fashion_methods: list[str]
    bench_models: list[str]
    bench_repeats: int
    bench_steps: int

    @property
    def models(self) -> dict[str, list[str]]:
        return {"lenet": ["model=lenet"], "resnet32": ["model=resnet32", *self.resnet32]}


FULL = Sizes(
    steps=4, batch=100, meta_batch=100, resnet32=[],
    variants={"float32": [], "bf16, compiled": ["hardware.amp=bf16", "hardware.compile=true"]},
    fashion_models=["lenet", "resnet32"], fashion_methods=list(METHODS),
    bench_models=["lenet", "resnet32"], bench_repeats=3, bench_steps=5,
)
QUICK = Sizes(
    steps=4, batch=20, meta_batch=10, resnet32=["model.blocks_per_stage=1"], variants={"float32": []},
    fashion_models=["lenet"], fashion_methods=["sgd"],
    bench_models=["lenet"], bench_repeats=1, bench_steps=1,
)


class Skipped(Exception):
    """A check that cannot run here, for a reason that is not a failure (missing optional data)."""


class Report:
    """The rows so far, written as markdown after each one."""

    def __init__(self, path: Path, title: str):
        self.path, self.title = path, title
        self.rows: list[tuple[str, str, str]] = []
        self.sections: list[str] = []

    def check(self, name: str, run: Callable[[], str]) -> bool:
        """Run one check: its detail when it returns, FAILED with the error when it raises."""
        started = time.perf_counter()
        try:
            status, detail = "ok", run()
        except Skipped as reason:
            status, detail = "skipped", str(reason)
        except Exception as error:  # noqa: BLE001  whatever broke is this check's result; the traceback goes to stderr
            traceback.print_exc()
            status, detail = "FAILED", f"{type(error).__name__}: {error}"
        detail = f"{detail} ({time.perf_counter() - started:.1f} s)".replace("|", "/").replace("\n", " ")
        self.rows.append((name, status, detail))
        print(f"{status:>7}  {name}: {detail}", flush=True)
        self.write()
        return status == "ok"

    @property
    def failed(self) -> bool:
        return any(status == "FAILED" for _, status, _ in self.rows)

    def write(self) -> None:
        lines = [f"# {self.title}", "", "| check | status | detail |", "|---|---|---|"]
        lines += [f"| {name} | {status} | {detail} |" for name, status, detail in self.rows]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join([*lines, *self.sections]) + "\n")


def run_overrides(device: str, sizes: Sizes, workdir: Path) -> list[str]:
    """What every training check shares: the device, the sizes, outputs under `workdir`."""
    return [
        f"hardware={device}", f"steps={sizes.steps}", f"eval_every={sizes.steps}", f"batch_size={sizes.batch}",
        f"results_csv={workdir / 'results.csv'}", "progress=false", "skip_done=false", "checkpoint_every=0",
    ]


def method_overrides(label: str, sizes: Sizes) -> list[str]:
    return [override.format(meta_batch=sizes.meta_batch) for override in METHODS[label]]


def training_runs(dataset: str, variants: dict[str, list[str]], models: list[str], methods: list[str]) -> list[tuple]:
    """(dataset, variant, its hardware overrides, model, method) for every combination."""
    return [
        (dataset, variant, hardware, model, method)
        for variant, hardware in variants.items() for model in models for method in methods
    ]


def fashion_mnist_present(common: list[str]) -> str:
    if not (Path(CONFIG_DIR) / "dataset" / "fashion_mnist.yaml").is_file():
        raise Skipped("no conf/dataset/fashion_mnist.yaml")
    try:
        splits = build_splits(compose_config([*common, "dataset=fashion_mnist"]))
    except UserError as missing:
        raise Skipped(f"not trained on: {missing}") from None
    return f"{len(splits.train)} training images"


def train_run(overrides: list[str], run_dir: Path) -> str:
    cfg = compose_config(overrides)
    row = train(cfg, run_dir)
    if row["status"] != "ok":
        raise RuntimeError(f"the run ended with status {row['status']}")
    return (f"{cfg.steps} steps, {row['skipped_steps']} skipped, {row['seconds_per_step']:.4f} s/step after warm-up, "
            f"balanced accuracy {row['balanced_accuracy']:.3f}")


@contextlib.contextmanager
def ieee_float32_convolutions():
    """cuDNN runs float32 convolutions in TF32 by default, which rounds to 10 bits of mantissa."""
    saved = torch.backends.cudnn.conv.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.backends.cudnn.conv.fp32_precision = saved


def weights_against_cpu(model_overrides: list[str], impl: str, device: torch.device, sizes: Sizes) -> str:
    torch.manual_seed(0)
    model = build_model(compose_config(model_overrides).model, DIGITS_SHAPE, NUM_CLASSES)
    generator = torch.Generator().manual_seed(0)
    x, meta_x = (torch.randn(n, *DIGITS_SHAPE, generator=generator) for n in (sizes.batch, sizes.meta_batch))
    y = torch.randint(0, NUM_CLASSES, (sizes.batch,), generator=generator)
    meta_y = torch.arange(sizes.meta_batch) % NUM_CLASSES
    expected = example_weights(copy.deepcopy(model), x, y, meta_x, meta_y, impl=impl).weights
    with ieee_float32_convolutions():
        on_device = copy.deepcopy(model).to(device)
        got = example_weights(on_device, x.to(device), y.to(device), meta_x.to(device), meta_y.to(device), impl=impl)
    difference = (got.weights.cpu() - expected).abs().max().item()
    tolerance = 1e-4 * expected.max().item()  # float32 sums in another order, relative to the largest weight
    detail = (f"largest difference {difference:.1e} (tolerance {tolerance:.1e}), largest weight {expected.max():.4f}, "
              f"{int((expected > 0).sum())} of {len(expected)} examples weighted")
    if not difference <= tolerance:
        raise AssertionError(detail)
    return detail


def train_to_the_end(overrides: list[str], sizes: Sizes, run_dir: Path, checkpoint: Checkpoint | None) -> dict:
    """Parameters and buffers after `fit` on random digits-shaped data, resuming from `checkpoint` when it exists."""
    run = Run.on_random_data(overrides, DIGITS_SHAPE, 10 * sizes.batch, sizes.meta_batch)
    run_dir.mkdir(parents=True, exist_ok=True)
    scheduler = make_scheduler(run.optimizer, run.cfg.schedule, run.cfg.steps)
    run.fit(build(run.cfg.method), run.cfg.steps, scheduler, run_dir / "metrics.csv", checkpoint)
    return {name: value.detach().cpu() for name, value in run.model.state_dict().items()}


def checkpoint_resumes(common: list[str], sizes: Sizes, workdir: Path) -> str:
    """update_every=2: the step after the checkpoint reuses remembered weights, so the method's
    state must come back too, not only the model's and the optimizer's."""
    overrides = [*common, *sizes.models["resnet32"], *method_overrides("l2rw fwd", sizes), "method.update_every=2",
                 "momentum=0.9", "lr=0.01"]
    uninterrupted = train_to_the_end(overrides, sizes, workdir / "uninterrupted", None)
    checkpoint = Checkpoint(workdir / "checkpointed", every=sizes.steps // 2, config_hash="device-check")
    train_to_the_end(overrides, sizes, checkpoint.path.parent, checkpoint)  # saves at the midpoint, goes on to the end
    saved_step = torch.load(checkpoint.path, map_location="cpu", weights_only=False)["loop"]["step"]
    resumed = train_to_the_end(overrides, sizes, checkpoint.path.parent, checkpoint)  # the second half again
    difference = max((resumed[k].double() - v.double()).abs().max().item() for k, v in uninterrupted.items())
    detail = (f"saved at step {saved_step} of {sizes.steps}; the resumed run's largest difference from the "
              f"uninterrupted one {difference:.1e}")
    # a GPU's reductions may differ in the last bits between runs
    if saved_step != sizes.steps // 2 or not difference <= 1e-5:
        raise AssertionError(detail)
    return detail


def bench_table(report: Report, device: str, sizes: Sizes, workdir: Path) -> str:
    comparison = Comparison(
        methods=list(METHODS), batch=sizes.batch, meta_batch=sizes.meta_batch, hardware=device,
        rounds=sizes.bench_repeats, steps=sizes.bench_steps,
    )
    rows = [row for model in sizes.bench_models for row in compare_methods(model, comparison, workdir)]
    report.sections += [
        "", "## Seconds per step (scripts/bench_step.py)", "",
        comparison.caption(),
        "", markdown_table(rows, TABLE_COLUMNS),
    ]
    return f"{len(rows)} rows, table below"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="small models, batches and steps; float32 only")
    parser.add_argument("--out", type=Path, default=Path("outputs/device_check.md"))
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    title = f"Device check: {machine()}, torch {torch.__version__}{', quick' if args.quick else ''}"
    report = Report(args.out, title)
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        common = run_overrides(args.device, sizes, workdir)
        runs = training_runs("digits", sizes.variants, list(sizes.models), list(METHODS))
        if report.check("data fashion_mnist", lambda: fashion_mnist_present(common)):
            first_variant = dict(list(sizes.variants.items())[:1])
            runs += training_runs("fashion_mnist", first_variant, sizes.fashion_models, sizes.fashion_methods)
        for dataset, variant, hardware, model, label in runs:
            name = f"train {dataset} {model} {label} {variant}"
            overrides = [*common, f"dataset={dataset}", *sizes.models[model], *method_overrides(label, sizes), *hardware]
            report.check(name, lambda: train_run(overrides, workdir / name.replace(" ", "_")))
        for model, model_overrides in sizes.models.items():
            for impl in reweight.IMPLEMENTATIONS:
                report.check(
                    f"weights {model} {impl} {args.device} = cpu",
                    lambda: weights_against_cpu(model_overrides, impl, torch.device(args.device), sizes),
                )
        report.check(f"checkpoint saved and resumed on {args.device}", lambda: checkpoint_resumes(common, sizes, workdir))
        report.check(f"bench {args.device}", lambda: bench_table(report, args.device, sizes, workdir))
    print(f"written: {args.out}")
    raise SystemExit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
