"""Any timm or torchvision architecture by name: `model=timm model.arch=vit_tiny_patch16_224`,
`model=torchvision model.arch=resnet18`, optionally from pretrained weights in a local file
(`model.pretrained`, safetensors or a state dict, read without running code) and as a linear probe
(`model.freeze=backbone`). Nothing is ever downloaded.

The library's model, its classifier removed, is the backbone; a fresh `nn.Linear` for the data's
classes is the head, so `model(x) == model.head(model.penultimate(x))` as for every l2rw model
(`method.impl=last_layer` uses that split). The input adapts to the data:

- one-channel images go into the three-channel stem of pretrained weights as the sum of its
  filters over the colours (what timm does for `in_chans=1`: the same as feeding the grey image
  to all three), normalised with the weights' mean and std averaged over the colours (where the
  colours' statistics differ, an approximation of normalising each copy by its own);
- images are resized (bilinear) to `model.image_size` inside the model when it is set; the
  architecture is built for that size (a ViT's position embeddings, resampled from pretrained
  weights of another size by timm's own filter).

With pretrained weights the inputs are normalised with the statistics in the weights' config
(timm's `pretrained_cfg`, torchvision's weights' transforms): the model's `input_normalization`,
which `l2rw.training.evaluation.PixelStandardizer` uses instead of the training set's statistics.
"""
from __future__ import annotations

import difflib
import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path

import safetensors
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from l2rw.errors import UserError, shown
from l2rw.run.options import choice, filesystem_path, number, optional, text, whole

ARCH = text("an architecture's name", doc="the library's name for the architecture, as its `list_models()` lists it")
PRETRAINED = optional(filesystem_path(), "for random initial weights",
                      doc="a local weights file for `model.arch`: `.safetensors`, or a PyTorch state dict (`.pt`, `.pth`; "
                          "read with weights_only, so no code in it runs); its classifier is left out (the head is "
                          "new), and the inputs are normalised as the weights' config says. ~ is expanded")
FREEZE = choice("none", "backbone", doc="`backbone`: train the new head only (a linear probe), the backbone in eval mode "
                                        "(BatchNorm's running statistics, no dropout)")
IMAGE_SIZE = optional(whole(1), "for the data's own size",
                      doc="the side the images are resized to inside the model (bilinear), and the size the "
                          "architecture is built for; pretrained weights were mostly trained at 224")
# torchvision architectures with auxiliary classifiers, built without them
AUXILIARY_CLASSIFIERS = ("googlenet", "inception_v3")
# Where an architecture refuses the data's image size, the sizes suggested in its place, smallest first
SIZES_TO_SUGGEST = (32, 64, 128, 224)


class LibraryModel(nn.Module):
    """A library's backbone (classifier removed) and a new linear head, with the input resizing,
    the normalisation its pretrained weights expect and the linear-probe mode."""

    def __init__(self, backbone: nn.Module, num_classes: int, image_shape: tuple[int, int, int], image_size: int | None,
                 frozen: bool, input_normalization: tuple[list[float], list[float]] | None):
        super().__init__()
        self.backbone = backbone
        self.image_size = image_size
        self.frozen_backbone = frozen
        self.input_normalization = input_normalization
        backbone.eval()  # the features' width, from a forward that records nothing and leaves BatchNorm's statistics alone
        with torch.no_grad():
            features = self.penultimate(torch.zeros(2, *image_shape)).shape[1]
        self.head = nn.Linear(features, num_classes)
        if frozen:
            backbone.requires_grad_(False)
        self.train()

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_size is not None and x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))

    def train(self, mode: bool = True) -> LibraryModel:
        super().train(mode)
        if self.frozen_backbone:  # a linear probe: the backbone computes the features it was trained to
            self.backbone.eval()
        return self


def timm_model(
    image_shape: tuple[int, int, int], num_classes: int, arch: ARCH = "resnet18", pretrained: PRETRAINED = None,
    freeze: FREEZE = "none", image_size: IMAGE_SIZE = None,
    drop_rate: number(ge=0, lt=1, doc="dropout before the head, where the architecture has it (timm's `drop_rate`)") = 0.0,
    drop_path_rate: number(ge=0, lt=1, doc="stochastic depth: the largest probability of dropping a residual branch "
                                           "(timm's `drop_path_rate`); 0 for architectures without one") = 0.0,
) -> LibraryModel:
    """A timm architecture (`timm.list_models()`), its classifier replaced by a head for the data's classes."""
    check_known(arch, timm.list_models(), "timm")
    channels = image_shape[0]
    options = {"drop_rate": drop_rate, "drop_path_rate": drop_path_rate}

    def create(size: int) -> nn.Module:
        extra = {name: value for name, value in options.items() if value}
        # timm models take `in_chans`; the three of pretrained weights are folded after loading
        return with_size_option(lambda **size_option: timm.create_model(
            arch, pretrained=False, num_classes=0, in_chans=3 if pretrained else channels, **extra, **size_option), "img_size", size,
            rejected=lambda name: f"model.{name}" if name in options else None)

    def load(backbone: nn.Module, state: dict) -> dict:
        classifiers = backbone.pretrained_cfg.get("classifier") or ()
        state = drop_prefixed(state, (classifiers,) if isinstance(classifiers, str) else classifiers)
        filter_fn = getattr(sys.modules[type(backbone).__module__], "checkpoint_filter_fn", None)
        return filter_fn(state, backbone) if filter_fn else state

    def normalization(backbone: nn.Module) -> tuple[list[float], list[float]]:
        config = backbone.pretrained_cfg
        return list(config.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)), list(config.get("std", timm.data.IMAGENET_DEFAULT_STD))

    return library_model("timm", arch, create, load, normalization, image_shape, num_classes, pretrained, freeze, image_size)


def torchvision_model(
    image_shape: tuple[int, int, int], num_classes: int, arch: ARCH = "resnet18", pretrained: PRETRAINED = None,
    freeze: FREEZE = "none", image_size: IMAGE_SIZE = None,
) -> LibraryModel:
    """A torchvision classification architecture (`torchvision.models.list_models(torchvision.models)`),
    its last linear layer replaced by a head for the data's classes."""
    check_known(arch, torchvision.models.list_models(torchvision.models), "torchvision")

    # their auxiliary classifiers make the training-mode output a tuple: the head takes the main output only
    auxiliary = {"aux_logits": False} if arch in AUXILIARY_CLASSIFIERS else {}

    def create(size: int) -> nn.Module:
        backbone = with_size_option(lambda **size_option: torchvision.models.get_model(arch, weights=None, **auxiliary, **size_option),
                                    "image_size", size, rejected=lambda name: None)
        classifier = last_linear(backbone)
        backbone.set_submodule(classifier, nn.Identity())
        backbone.classifier_name = classifier
        return backbone

    def load(backbone: nn.Module, state: dict) -> dict:
        return drop_prefixed(state, (backbone.classifier_name,))

    def normalization(backbone: nn.Module) -> tuple[list[float], list[float]]:
        transforms = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        return list(transforms.mean), list(transforms.std)

    return library_model("torchvision", arch, create, load, normalization, image_shape, num_classes, pretrained, freeze, image_size)


def library_model(
    library: str, arch: str, create: Callable[[int], nn.Module], load: Callable[[nn.Module, dict], dict],
    normalization: Callable[[nn.Module], tuple[list[float], list[float]]],
    image_shape: tuple[int, int, int], num_classes: int, pretrained: str | None, freeze: str, image_size: int | None,
) -> LibraryModel:
    """The backbone `create(size)` builds, with the `pretrained` weights `load` prepares, the stem
    folded for the data's channels and a head; an architecture that cannot take the images is
    refused in one line with a size it does take."""
    channels, height, _ = image_shape
    choice = f"model={library} model.arch={arch}"
    try:
        backbone = create(image_size or height)
    except SIZE_ERRORS as error:
        raise refused_size(library, arch, create, image_shape, image_size, error) from None
    input_normalization = None
    if pretrained is not None:
        state = read_state_dict(pretrained)
        try:
            state = load(backbone, state)
        except (*SIZE_ERRORS, KeyError, AttributeError) as error:
            raise UserError(f"model.pretrained={shown(pretrained)}: {library}'s checkpoint filter for {arch} cannot read it "
                            f"({first_line(error)}); give weights of this architecture in {library}'s layout") from None
        load_weights(backbone, state, pretrained, choice)
        mean, std = normalization(backbone)
        input_normalization = (mean, std) if channels == 3 else ([sum(mean) / 3], [sum(std) / 3])
    if channels != 3 and (pretrained is not None or library == "torchvision"):
        fold_stem(backbone, channels)
    try:
        return LibraryModel(backbone, num_classes, image_shape, image_size, freeze == "backbone", input_normalization)
    except SIZE_ERRORS as error:
        raise refused_size(library, arch, create, image_shape, image_size, error) from None


# What an architecture raises, building or in a forward, for images of a size it cannot take
SIZE_ERRORS = (RuntimeError, ValueError, AssertionError, IndexError, ZeroDivisionError)


def refused_size(library: str, arch: str, create: Callable[[int], nn.Module], image_shape, image_size: int | None,
                 error: BaseException) -> Exception:
    """One line: the images the architecture refused, why, and the smallest size it takes (an
    error of its own, a UserError or a full memory, stays as it is)."""
    if isinstance(error, UserError) or "can't allocate memory" in str(error):
        return error
    _, height, width = image_shape
    size = f"{image_size}x{image_size}" if image_size else f"{height}x{width}"
    fits = next((s for s in SIZES_TO_SUGGEST if s > (image_size or height) and takes_size(create, s)), None)
    fix = f"set model.image_size={fits} (the images are resized to it inside the model)" if fits else "choose another model.arch"
    return UserError(f"model={library} model.arch={arch} cannot take {size} images ({first_line(error)}); {fix}")


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def takes_size(create: Callable[[int], nn.Module], size: int) -> bool:
    try:
        backbone = create(size).eval()
        stem = next((m.in_channels for m in backbone.modules() if isinstance(m, nn.Conv2d)), 3)
        with torch.no_grad():
            backbone(torch.zeros(1, stem, size, size))
        return True
    except SIZE_ERRORS:
        return False


def check_known(arch: str, known: list[str], library: str) -> None:
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(f"model.arch={arch} is not a {library} architecture; {hint}{library}'s list_models() lists them "
                        f"({len(known)} here)")


def with_size_option(create: Callable[..., nn.Module], option: str, size: int, rejected: Callable[[str], str | None]) -> nn.Module:
    """`create(**{option: size})`, or `create()` for an architecture without that option (a CNN
    takes any size). A keyword the architecture does not take and that a user set (`rejected`
    names its option) is refused."""
    try:
        return create(**{option: size})
    except TypeError as error:
        if unexpected_keyword(error) != option:
            raise not_taken(error, rejected) from None
    try:
        return create()
    except TypeError as error:
        raise not_taken(error, rejected) from None


def unexpected_keyword(error: TypeError) -> str | None:
    """The keyword a constructor refused, as Python ("unexpected keyword argument 'x'") or timm
    ("unexpected keyword argument(s): ['x']") says it."""
    found = re.search(r"unexpected keyword argument(?:\(s\))?:? \[?'(\w+)'", str(error))
    return found[1] if found else None


def not_taken(error: TypeError, rejected: Callable[[str], str | None]) -> Exception:
    keyword = unexpected_keyword(error)
    if keyword is None:
        return error
    return UserError(f"{rejected(keyword) or keyword} does not apply to this architecture; leave it at 0")


def last_linear(model: nn.Module) -> str:
    """The name of the model's last nn.Linear: a torchvision classifier's final layer."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise UserError(f"{type(model).__name__} has no linear classifier to replace; choose another model.arch")
    return names[-1]


def drop_prefixed(state: dict, prefixes) -> dict:
    """The state without the tensors of the modules named `prefixes` (the classifier, replaced by the head)."""
    return {key: value for key, value in state.items() if not any(key.startswith(f"{prefix}.") for prefix in prefixes)}


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file or of a state dict saved by torch.save (possibly under
    "state_dict" or "model", as training scripts save them), read without running code."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"model.pretrained={shown(path)} is not a file; give a .safetensors file or a state dict saved with torch.save")
    try:
        if file.suffix == ".safetensors":
            state = safetensors.torch.load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except (safetensors.SafetensorError, pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, KeyError) as error:
        kind = "safetensors file" if file.suffix == ".safetensors" else "state dict (torch.load with weights_only=True)"
        raise UserError(f"model.pretrained={shown(path)} is not a readable {kind}: {first_line(error)[:200]}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise UserError(f"model.pretrained={shown(path)} holds no state dict (names -> tensors); save the model's "
                        "state_dict() or a .safetensors file")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_weights(backbone: nn.Module, state: dict[str, torch.Tensor], path: str, choice: str) -> None:
    """`state` into `backbone`, every tensor of the backbone from it (BatchNorm's step counts may
    be absent), or one line naming what does not fit."""
    ours = backbone.state_dict()
    for key, value in state.items():
        if key in ours and value.shape != ours[key].shape:
            raise UserError(f"model.pretrained={shown(path)} does not fit {choice}: its {key} is {tuple(value.shape)}, the "
                            f"model's {tuple(ours[key].shape)}; give weights of this architecture"
                            + (", and model.image_size the size they were trained at" if "pos" in key else ""))
    missing = [key for key in ours if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in ours]
    if missing or unexpected:
        what = f"lacks {len(missing)} of the model's tensors (first: {missing[0]})" if missing else \
            f"holds {len(unexpected)} tensors the model has not (first: {unexpected[0]})"
        raise UserError(f"model.pretrained={shown(path)} does not fit {choice}: it {what}; give weights of this architecture")
    backbone.load_state_dict({key: value.to(ours[key].dtype) for key, value in state.items()}, strict=False)


def fold_stem(backbone: nn.Module, channels: int) -> None:
    """The first convolution taking three channels, made to take `channels` (1): its filters summed
    over the colours, so a grey image gives what its copy in all three would."""
    name, stem = next(((name, m) for name, m in backbone.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3),
                      (None, None))
    if stem is None or channels != 1:
        raise UserError(f"{channels}-channel images cannot go into this architecture's stem; use dataset.channels=rgb or grey")
    # a depthwise stem (one group per colour) already has one input channel per filter
    depthwise = stem.groups == 3
    folded = nn.Conv2d(channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, stem.dilation,
                       1 if depthwise else stem.groups, stem.bias is not None, stem.padding_mode)
    with torch.no_grad():
        folded.weight.copy_(stem.weight if depthwise else stem.weight.sum(dim=1, keepdim=True))
        if stem.bias is not None:
            folded.bias.copy_(stem.bias)
    backbone.set_submodule(name, folded)
