"""CIFAR-100 (Krizhevsky 2009) from its official python version, `cifar-100-python/`: one training
file, one test file and `meta`, read by CIFAR-10's pickle reader. The 100 fine labels are the
classes; the 20 coarse superclasses are not used."""
from __future__ import annotations

from l2rw.data.cifar10 import CIFAR_DOWNLOAD, CIFAR_ROOT, CifarFormat, load_cifar
from l2rw.data.splits import Source

CIFAR100 = CifarFormat(
    title="CIFAR-100",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    labels_key=b"fine_labels",
    names_key=b"fine_label_names",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
)


def load_cifar100(root: CIFAR_ROOT, download: CIFAR_DOWNLOAD = False) -> Source:
    """The 50,000 official training images (500 per class) as the pool to split, the 10,000 test
    images (100 per class) as `test`."""
    return load_cifar(CIFAR100, root, download)
