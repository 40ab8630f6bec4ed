"""l2rw.hardware and the hardware.* options: the model's memory layout, and a bf16 run that trains.
(L2RW's weights under bf16 and torch.compile: test_reweight_precision.py.)"""
import pandas as pd
import pytest
import torch

from l2rw.train import train


def test_bf16_autocast_run_trains_and_records_impl_and_its_step_times(make_cfg, tmp_path, optimizer_steps):
    row = train(make_cfg("method=l2rw", "hardware.amp=bf16", "steps=4", "eval_every=4"), tmp_path / "run")
    assert row["status"] == "ok" and row["skipped_steps"] < 4
    assert list(optimizer_steps.values()) == [4 - row["skipped_steps"]]
    written = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert written["method.impl"] == "fwd"
    assert written["hardware.amp"] == "bf16" and str(written["hardware.channels_last"]) == "True"
    # the steady steps (after L2RW's one warm-up step) and the warm-up fit inside the run's wall time
    assert 0 < written.seconds_per_step * (4 - 1) + written.warmup_seconds <= written.wall_seconds


@pytest.mark.parametrize("channels_last", [True, False])
def test_place_model_uses_the_configured_layout(make_cfg, channels_last):
    from l2rw.hardware import place_model
    from l2rw.models.resnet32 import ResNet32

    hardware = make_cfg(f"hardware.channels_last={channels_last}").hardware
    model = place_model(ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1), hardware, torch.device("cpu"))
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) == channels_last for p in conv_weights)
    logits = model(torch.randn(5, 3, 8, 8))  # NCHW inputs are accepted either way
    assert logits.shape == (5, 10)
