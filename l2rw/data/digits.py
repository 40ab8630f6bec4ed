import torch

from l2rw.data.splits import LabeledImages, Source


def load_digits() -> Source:
    """scikit-learn's 1,797 8x8 digits, pixel values 0..16 rescaled to uint8 0..255."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images * (255.0 / 16.0)).round().to(torch.uint8)
    return Source(
        pool=LabeledImages(images.unsqueeze(1), torch.from_numpy(bunch.target).long()),
        test=None,
        class_names=[str(c) for c in bunch.target_names],
        provenance={"data_source": "sklearn.datasets.load_digits"},  # bundled with scikit-learn
    )
