"""l2rw.data.images: the decoded-image cache is read as tensors only; a file at its path that is
not one this tool wrote (damaged, or crafted to run code when unpickled) is never executed, and
is refused rather than replaced."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from l2rw.data import images
from l2rw.errors import UserError

SIZE = 4


def leave_marker(path: str) -> None:
    Path(path).touch()


class RunsCodeWhenUnpickled:
    """What a crafted cache holds: unpickling it calls `leave_marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return leave_marker, (str(self.marker),)


def test_a_cache_crafted_to_run_code_is_never_executed_nor_replaced(tmp_path):
    paths = []
    for grey in (40, 200):
        paths.append(tmp_path / f"{grey}.png")
        Image.new("L", (7, 5), grey).save(paths[-1])
    decoding = images.Decoding(image_size=SIZE, channels="grey", cache_dir=tmp_path / "cache", cache_name="t", title="t", workers=1)
    decoded = images.cached_images(paths, [], tmp_path, decoding)
    assert [int(image.float().mean()) for image in decoded.images] == [40, 200]
    marker = tmp_path / "unpickled"
    # the right key and the mark, so that a loader unpickling arbitrary objects would take the cache as current
    torch.save({"made_by": images.CACHE_MARK, "key": decoded.key, "images": RunsCodeWhenUnpickled(marker),
                "unreadable": {}}, decoding.cache_file)
    crafted = decoding.cache_file.read_bytes()

    with pytest.raises(UserError, match="is a file l2rw did not write as its image cache"):
        images.cached_images(paths, [], tmp_path, decoding)

    assert not marker.exists()
    assert decoding.cache_file.read_bytes() == crafted
