"""l2rw.run.hardware and the hardware.* options: the device, the model's memory layout, and a bf16 run that
trains. (L2RW's weights under bf16 and torch.compile: test_reweight_precision.py.)"""
import pandas as pd
import pytest
import torch

from l2rw.errors import UserError
from l2rw.run.hardware import resolve_device
from l2rw.run.train import train


@pytest.mark.slow
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
    from l2rw.models.resnet32 import ResNet32
    from l2rw.run.hardware import place_model

    hardware = make_cfg(f"hardware.channels_last={channels_last}").hardware
    model = place_model(ResNet32((3, 8, 8), num_classes=10, blocks_per_stage=1), hardware, torch.device("cpu"))
    conv_weights = [p for p in model.parameters() if p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) == channels_last for p in conv_weights)
    logits = model(torch.randn(5, 3, 8, 8))  # NCHW inputs are accepted either way
    assert logits.shape == (5, 10)


def test_cpu_resolves_and_cuda_fails_clearly_without_a_gpu(make_cfg):
    assert resolve_device(make_cfg("hardware=cpu").hardware.device) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="hardware=cpu"):
            resolve_device(make_cfg("hardware=cuda").hardware.device)


@pytest.mark.parametrize("device, message", [("cpu:99", "names a CPU by number"), ("tpu", "is unknown")])
def test_a_device_that_does_not_exist_is_refused(device, message):
    with pytest.raises(UserError, match=message):
        resolve_device(device)
