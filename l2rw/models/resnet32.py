import torch
import torch.nn.functional as F
from torch import nn

from l2rw.models.heads import NORMED_HEAD, make_head
from l2rw.run.options import whole


class BasicBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut_pad = channels_out - channels_in
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # option A of He et al.: subsample and zero-pad channels, so the shortcut has no parameters
        shortcut = x[:, :, :: self.stride, :: self.stride]
        if self.shortcut_pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.shortcut_pad))
        return F.relu(out + shortcut)


class ResNet32(nn.Module):
    """The CIFAR ResNet-32 of He et al. 2016: 3 stages x 5 basic blocks, 16/32/64 channels,
    about 0.46M parameters, BatchNorm. `penultimate` gives the 64 globally pooled channels that
    `head` maps to class scores."""

    def __init__(
        self, image_shape: tuple[int, int, int], num_classes: int,
        blocks_per_stage: whole(1, note=" (6n+2 layers: 5 gives ResNet-32)",
                                doc="basic blocks in each of the three stages (16, 32 and 64 channels)") = 5,
        normed_head: NORMED_HEAD = False,
    ):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(image_shape[0], 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers, channels = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, width, stride))
                channels = width
        self.stages = nn.Sequential(*layers)
        self.head = make_head(64, num_classes, normed_head)
        for module in self.modules():
            if isinstance(module, nn.Conv2d) or type(module) is nn.Linear:  # NormedLinear keeps its own init
                nn.init.kaiming_normal_(module.weight)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))
