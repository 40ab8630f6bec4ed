"""l2rw.data.images: the decoded-image cache is read as tensors only; a cache file that is not
one (damaged, or crafted to run code when unpickled) is decoded again, never executed."""
from pathlib import Path

import torch
from PIL import Image

from l2rw.data import images

SIZE = 4


def leave_marker(path: str) -> None:
    Path(path).touch()


class RunsCodeWhenUnpickled:
    """What a crafted cache holds: unpickling it calls `leave_marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return leave_marker, (str(self.marker),)


def test_a_cache_crafted_to_run_code_is_never_executed_and_is_rebuilt(tmp_path):
    paths = []
    for grey in (40, 200):
        paths.append(tmp_path / f"{grey}.png")
        Image.new("L", (7, 5), grey).save(paths[-1])
    decoding = images.Decoding(image_size=SIZE, channels="grey", cache_dir=tmp_path / "cache", cache_name="t", title="t", workers=1)
    decoded = images.cached_images(paths, [], tmp_path, decoding)
    marker = tmp_path / "unpickled"
    # the right key, so that a loader unpickling arbitrary objects would take the cache as current
    torch.save({"key": decoded.key, "images": RunsCodeWhenUnpickled(marker), "unreadable": {}}, decoding.cache_file)

    rebuilt = images.cached_images(paths, [], tmp_path, decoding)

    assert not marker.exists()
    assert torch.equal(rebuilt.images, decoded.images)
    assert [int(image.float().mean()) for image in rebuilt.images] == [40, 200]
    assert torch.equal(torch.load(decoding.cache_file, weights_only=True)["images"], decoded.images)  # the cache is whole again
