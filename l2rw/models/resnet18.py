from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from l2rw.errors import UserError
from l2rw.run.options import flag

IMAGENET_WEIGHTS = torchvision.models.ResNet18_Weights.IMAGENET1K_V1


class ResNet18(torchvision.models.ResNet):
    """torchvision's ResNet-18, same modules and state_dict keys, split at its last layer:
    `penultimate` gives the 512 pooled channels, `head` is `fc`."""

    def __init__(self, num_classes: int = 1000):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))


def resnet18(
    image_shape: tuple[int, int, int], num_classes: int,
    pretrained: flag(doc="true: start from torchvision's ImageNet weights, read from the local torch hub cache (RGB "
                         "images only); nothing is downloaded, so a run never depends on the network") = False,
) -> nn.Module:
    """torchvision's ResNet-18 with a `num_classes`-way head and a stem for the data's channels."""
    channels = image_shape[0]
    if not pretrained:
        model = ResNet18(num_classes=num_classes)
        if channels != 3:
            model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's
        return model
    if channels != 3:
        raise UserError(f"model.pretrained=true needs RGB images, but the dataset has {channels} channel(s)")
    model = ResNet18()
    model.load_state_dict(torch.load(local_imagenet_weights(), weights_only=True))
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def local_imagenet_weights() -> Path:
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name
    if not path.is_file():
        raise UserError(
            f"model.pretrained=true needs the ImageNet ResNet-18 weights at {path}, and l2rw never downloads; "
            f"fetch {IMAGENET_WEIGHTS.url} into that folder (or set TORCH_HOME to a cache that has it), "
            "or use model.pretrained=false"
        )
    return path
