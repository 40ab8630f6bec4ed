"""Training-batch augmentation as tensor ops on the whole uint8 batch, on whatever device it
lives on (as in airbench), instead of per-image PIL transforms in DataLoader workers."""
import torch
import torch.nn.functional as F

CROP_PADDING = 4  # the standard CIFAR recipe (He et al. 2016): pad 4 pixels, crop back to the original size


def random_crop_and_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image: a random crop of its zero-padded self, mirrored left-right with probability 1/2.

    The draws come from `generator` (a CPU generator: the training run's), so runs are reproducible
    on any device."""
    n = len(images)
    offsets = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return crop_and_flip(images, offsets.to(images.device), flips.to(images.device), CROP_PADDING)


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Image i cropped from its `padding`-zero-padded version at (row, column) `offsets[i]`, then
    mirrored when `flips[i]`. One gather does all: each crop's pixels are an index grid into the
    flattened padded image, its columns reversed for mirrored images (5x faster on CPU than
    indexing with four index tensors)."""
    n, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, :1] + torch.arange(height, device=images.device)  # (n, height)
    columns = offsets[:, 1:] + torch.arange(width, device=images.device)  # (n, width)
    columns = torch.where(flips[:, None], columns.flip(1), columns)
    pixels = rows[:, :, None] * padded.shape[-1] + columns[:, None, :]  # (n, height, width)
    pixels = pixels.view(n, 1, height * width).expand(n, channels, height * width)
    return padded.flatten(2).gather(2, pixels).view(n, channels, height, width)
