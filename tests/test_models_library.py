"""model=timm and model=torchvision (l2rw/models/library.py): exact forward-mode weights on what
these architectures contain (attention, LayerNorm, GroupNorm, BatchNorm, GELU/SiLU, squeeze-excite,
dropout and stochastic depth), the input adapted to the data, pretrained weights from a file the
test writes, and each bad input refused in one line. Nothing is downloaded: timm's `test_*`
architectures are its own tiny versions of each family."""
import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.func import functional_call

from l2rw.errors import UserError
from l2rw.methods.l2rw import L2RW
from l2rw.methods.mwnet import VARIANTS, WeightNet, mwnet_gradient_double_backprop, mwnet_gradient_fwd
from l2rw.models import build_model
from l2rw.reweight import example_weights, op_without_forward_rule
from l2rw.training.evaluation import PixelStandardizer
from tests.helpers.command_line import l2rw_train
from tests.helpers.configs import compose_config

# (config overrides, image shape): one of each family the weights must go through exactly
ARCHITECTURES = {
    "vit": (["model=timm", "model.arch=test_vit", "model.image_size=32"], (1, 16, 16)),         # attention, LayerNorm, GELU
    "convnext": (["model=timm", "model.arch=test_convnext"], (3, 32, 32)),                     # LayerNorm2d, depthwise convs
    "efficientnet": (["model=timm", "model.arch=test_efficientnet"], (3, 32, 32)),             # BatchNorm, SiLU, squeeze-excite
    "efficientnet_gn": (["model=timm", "model.arch=test_efficientnet_gn"], (3, 32, 32)),       # GroupNorm
    "resnet": (["model=timm", "model.arch=test_resnet"], (1, 32, 32)),                         # BatchNorm, grey into the stem
    "torchvision_shufflenet": (["model=torchvision", "model.arch=shufflenet_v2_x0_5"], (3, 32, 32)),  # channel shuffle
}
CLASSES = 3


def library_model(overrides: list[str], image_shape, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(compose_config(*overrides).model, image_shape, CLASSES).double()


def batch(image_shape, n: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, *image_shape, generator=generator, dtype=torch.float64), torch.randint(CLASSES, (n,), generator=generator)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_fwd_weights_equal_double_backprop_in_float64(name):
    overrides, shape = ARCHITECTURES[name]
    model = library_model(overrides, shape)
    (x, y), (meta_x, meta_y) = batch(shape, 6, 1), batch(shape, 4, 2)
    weights = {impl: example_weights(model, x, y, meta_x, meta_y, impl=impl).weights for impl in ("fwd", "double_backprop")}
    assert weights["fwd"].sum() > 0
    torch.testing.assert_close(weights["fwd"], weights["double_backprop"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["vit", "efficientnet"])
def test_meta_weight_net_gradient_fwd_equals_double_backprop_in_float64(name):
    overrides, shape = ARCHITECTURES[name]
    model = library_model(overrides, shape)
    torch.manual_seed(3)
    weight_net = WeightNet().double()
    (x, y), (meta_x, meta_y) = batch(shape, 6, 1), batch(shape, 4, 2)
    variant = VARIANTS["imbalance"]
    fwd, _ = mwnet_gradient_fwd(model, weight_net, x, y, meta_x, meta_y, 0.1, variant)
    reference, _ = mwnet_gradient_double_backprop(model, weight_net, x, y, meta_x, meta_y, 0.1, variant)
    for ours, theirs in zip(fwd, reference):
        torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["vit", "resnet"])
def test_dropout_and_stochastic_depth_draw_one_mask_for_the_tangent_and_the_update(name):
    """With dropout and stochastic depth on, `fwd`'s weights are the dot products of the meta
    gradient with each example's gradient under the very masks of the forward whose losses the
    update back-propagates: the reference draws the meta forward's masks, then the training
    forward's, from the same seed, and differentiates each example's loss under them."""
    overrides, shape = ARCHITECTURES[name]
    model = library_model([*overrides, "model.drop_rate=0.3", "model.drop_path_rate=0.3"], shape)
    (x, y), (meta_x, meta_y) = batch(shape, 6, 1), batch(shape, 4, 2)
    torch.manual_seed(7)
    weights, losses = example_weights(model, x, y, meta_x, meta_y)

    torch.manual_seed(7)
    params = {name: p for name, p in model.named_parameters()}
    scratch = {name: b.clone() for name, b in model.named_buffers()}
    meta = F.cross_entropy(functional_call(model, (params, scratch), (meta_x,)), meta_y)
    meta_gradient = torch.autograd.grad(meta, list(params.values()))
    reference_losses = F.cross_entropy(model(x), y, reduction="none")
    dots = torch.stack([
        sum((g * m).sum() for g, m in zip(torch.autograd.grad(loss, list(params.values()), retain_graph=True), meta_gradient))
        for loss in reference_losses
    ])
    torch.testing.assert_close(losses, reference_losses)
    torch.testing.assert_close(weights, dots.clamp(min=0) / dots.clamp(min=0).sum())
    torch.manual_seed(8)  # other masks give other weights: the test sees the masks
    assert not torch.allclose(example_weights(model, x, y, meta_x, meta_y).weights, weights)


@pytest.mark.parametrize("name", ["vit", "convnext", "efficientnet", "torchvision_shufflenet"])
def test_a_frozen_backbone_leaves_the_head_alone_so_fwd_equals_last_layer(name):
    """With `model.freeze=backbone` the head holds every trainable parameter: the last-layer
    weights (timm's forward_features/forward_head split, torchvision's last linear layer) are then
    the exact ones."""
    overrides, shape = ARCHITECTURES[name]
    model = library_model([*overrides, "model.freeze=backbone"], shape)
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    assert model.training and not model.backbone.training
    (x, y), (meta_x, meta_y) = batch(shape, 6, 1), batch(shape, 4, 2)
    fwd = example_weights(model, x, y, meta_x, meta_y).weights
    torch.testing.assert_close(example_weights(model, x, y, meta_x, meta_y, impl="last_layer").weights, fwd)


def test_the_model_resizes_its_input_to_model_image_size():
    model = library_model(["model=timm", "model.arch=test_vit", "model.image_size=32"], (1, 16, 16)).eval()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    resized = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model(x), model.head(model.backbone(resized)))
    assert model.backbone.patch_embed.img_size == (32, 32)


def save_backbone(tmp_path, arch: str, suffix: str, wrap: str | None = None, image_size: int | None = None):
    """A timm model's weights (with its own 1000-class classifier, as published files hold them)."""
    torch.manual_seed(11)
    source = timm.create_model(arch, **({"img_size": image_size} if image_size else {}))
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(source.state_dict(), str(path))
    else:
        torch.save({wrap: source.state_dict()} if wrap else source.state_dict(), path)
    return source, path


@pytest.mark.parametrize("suffix, wrap", [(".safetensors", None), (".pth", None), (".pt", "state_dict")])
def test_pretrained_weights_load_from_a_file_with_a_new_head_and_their_normalisation(tmp_path, suffix, wrap):
    source, path = save_backbone(tmp_path, "test_resnet", suffix, wrap)
    model = build_model(compose_config("model=timm", "model.arch=test_resnet", f"model.pretrained={path}").model, (3, 32, 32), CLASSES)
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key])
    assert model.head.out_features == CLASSES
    standardize = PixelStandardizer.of(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), model)
    assert standardize.mean.flatten().tolist() == pytest.approx(list(source.pretrained_cfg["mean"]))
    assert standardize.std.flatten().tolist() == pytest.approx(list(source.pretrained_cfg["std"]))


def test_grey_images_go_into_a_pretrained_stem_as_the_grey_image_in_all_three_colours(tmp_path):
    source, path = save_backbone(tmp_path, "test_resnet", ".safetensors")
    model = build_model(compose_config("model=timm", "model.arch=test_resnet", f"model.pretrained={path}").model, (1, 32, 32), CLASSES)
    source.reset_classifier(0)
    grey = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model.backbone.eval()(grey), source.eval()(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    mean, std = model.input_normalization
    assert mean == pytest.approx([sum(source.pretrained_cfg["mean"]) / 3]) and std == pytest.approx([sum(source.pretrained_cfg["std"]) / 3])


def test_a_vits_position_embeddings_are_resampled_to_the_models_image_size(tmp_path):
    _, path = save_backbone(tmp_path, "test_vit", ".safetensors")  # at its own 160
    model = build_model(compose_config("model=timm", "model.arch=test_vit", "model.image_size=32", f"model.pretrained={path}").model,
                        (3, 32, 32), CLASSES)
    assert model.backbone.pos_embed.shape[1] == 1 + (32 // 16) ** 2


def test_torchvision_weights_load_and_normalise_as_their_transforms_say(tmp_path):
    torch.manual_seed(0)
    import torchvision

    source = torchvision.models.mobilenet_v3_small()
    path = tmp_path / "mobilenet.pth"
    torch.save(source.state_dict(), path)
    model = build_model(compose_config("model=torchvision", "model.arch=mobilenet_v3_small", f"model.pretrained={path}").model,
                        (3, 32, 32), CLASSES)
    torch.testing.assert_close(model.backbone.features[0][0].weight, source.features[0][0].weight)
    assert model.input_normalization == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def write_garbage(tmp_path, name: str):
    path = tmp_path / name
    path.write_bytes(b"not weights at all")
    return path


@pytest.mark.parametrize("overrides, image_shape, says", [
    (["model.arch=resnt18"], (3, 32, 32), "model.arch=resnt18 is not a timm architecture; did you mean resnet18"),
    (["model.arch=convnext_atto"], (1, 8, 8), "cannot take 8x8 images (Calculated padded input size"),
    (["model.arch=test_vit"], (1, 8, 8), "set model.image_size=32"),
    (["model.arch=dla34", "model.drop_path_rate=0.1"], (3, 32, 32), "model.drop_path_rate does not apply to this architecture"),
    (["model.arch=test_resnet", "model.pretrained=/no/such/weights.safetensors"], (3, 32, 32), "is not a file"),
])
def test_bad_models_are_refused_in_one_line(overrides, image_shape, says):
    with pytest.raises(UserError, match=None) as refused:
        build_model(compose_config("model=timm", *overrides).model, image_shape, CLASSES)
    assert says in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("name, says", [
    ("weights.safetensors", "is not a readable safetensors file"),
    ("weights.pth", "is not a readable state dict (torch.load with weights_only=True)"),
])
def test_unreadable_weights_are_refused_in_one_line(tmp_path, name, says):
    path = write_garbage(tmp_path, name)
    with pytest.raises(UserError, match="model.pretrained=") as refused:
        build_model(compose_config("model=timm", "model.arch=test_resnet", f"model.pretrained={path}").model, (3, 32, 32), CLASSES)
    assert says in str(refused.value)


def test_weights_of_another_architecture_are_refused_naming_the_tensor(tmp_path):
    _, resnet_file = save_backbone(tmp_path, "test_resnet", ".safetensors")
    with pytest.raises(UserError, match=r"does not fit model=timm model.arch=test_efficientnet: its \S+ is \(\d+,\), the model's"):
        build_model(compose_config("model=timm", "model.arch=test_efficientnet", f"model.pretrained={resnet_file}").model, (3, 32, 32), CLASSES)
    state = safetensors.torch.load_file(str(resnet_file))
    conv = state.pop("layer1.0.conv1.weight")
    safetensors.torch.save_file(state, str(resnet_file))
    with pytest.raises(UserError, match=r"it lacks 1 of the model's tensors \(first: layer1.0.conv1.weight\)"):
        build_model(compose_config("model=timm", "model.arch=test_resnet", f"model.pretrained={resnet_file}").model, (3, 32, 32), CLASSES)
    safetensors.torch.save_file(state | {"layer1.0.conv1.weight": conv, "extra.weight": conv.clone()}, str(resnet_file))
    with pytest.raises(UserError, match=r"it holds 1 tensors the model has not \(first: extra.weight\)"):
        build_model(compose_config("model=timm", "model.arch=test_resnet", f"model.pretrained={resnet_file}").model, (3, 32, 32), CLASSES)


class SpatialTransform(nn.Module):
    """A model with an op torch has no forward-mode rule for (grid_sample)."""

    def __init__(self, image_shape, num_classes):
        super().__init__()
        self.theta = nn.Parameter(torch.eye(2, 3).unsqueeze(0))
        self.linear = nn.Linear(image_shape[0] * image_shape[1] * image_shape[2], num_classes)

    def forward(self, x):
        grid = F.affine_grid(self.theta.expand(len(x), -1, -1), list(x.shape), align_corners=False)
        return self.linear(F.grid_sample(x, grid, align_corners=False).flatten(1))


def test_an_op_without_a_forward_mode_rule_is_named_before_training():
    model = SpatialTransform((1, 8, 8), CLASSES)
    assert op_without_forward_rule(model, torch.randn(2, 1, 8, 8)) == "grid_sampler_2d"
    assert op_without_forward_rule(library_model(*ARCHITECTURES["vit"]), torch.randn(2, 1, 16, 16, dtype=torch.float64)) is None
    method = L2RW(meta_batch_size=10)
    with pytest.raises(UserError, match="torch has none for grid_sampler_2d; use method.impl=double_backprop or method.impl=last_layer"):
        method.check_model(model, torch.randn(2, 1, 8, 8))
    L2RW(meta_batch_size=10, impl="double_backprop").check_model(model, torch.randn(2, 1, 8, 8))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sgd", "l2rw", "mwnet"])
@pytest.mark.parametrize("arch", ["model.arch=test_vit model.image_size=16", "model.arch=test_resnet"])
def test_timm_models_train_through_the_command_line_on_the_default_data(tmp_path, method, arch):
    code, stderr = l2rw_train("model=timm", *arch.split(), f"method={method}", "steps=4", "eval_every=2", "progress=false",
                              f"hydra.run.dir={tmp_path}/run", f"results_csv={tmp_path}/results.csv")
    assert code == 0, stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").model.arch == arch.split()[0].split("=")[1]


@pytest.mark.slow
@pytest.mark.parametrize("arguments, says", [
    (["model.arch=nosuchnet"], "model.arch=nosuchnet is not a timm architecture"),
    (["model.arch=convnext_atto"], "cannot take 8x8 images"),
    (["model.arch=test_resnet", "model.pretrained=NOFILE"], "model.pretrained=NOFILE is not a file"),
])
def test_bad_models_stop_the_command_line_with_exit_2_writing_nothing(tmp_path, arguments, says):
    code, stderr = l2rw_train("model=timm", *arguments, "method=l2rw", "steps=2", f"hydra.run.dir={tmp_path}/run",
                              f"results_csv={tmp_path}/results.csv")
    assert code == 2 and says in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "run" / "config.yaml").exists()


def test_a_depthwise_stem_folds_for_grey_images_exactly():
    stem = nn.Sequential(nn.Conv2d(3, 6, 3, groups=3, padding=1))
    grey = torch.randn(2, 1, 8, 8)
    in_colour = stem(grey.expand(-1, 3, -1, -1))
    from l2rw.models.library import fold_stem

    fold_stem(stem, 1)
    torch.testing.assert_close(stem(grey), in_colour)


def test_an_architecture_with_auxiliary_classifiers_trains():
    model = library_model(["model=torchvision", "model.arch=googlenet"], (3, 32, 32)).train()
    x, y = batch((3, 32, 32), 4, 1)
    assert model(x).shape == (4, CLASSES)
    assert example_weights(model, x, y, x, y).weights.shape == (4,)
