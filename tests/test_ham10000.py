"""HAM10000 on a generated miniature copy: loading, lesion-level splits, the cache, bad input, a CLI run.

Every miniature image is one flat grey level, 4 * its row in the metadata CSV, so any split can
be traced back to image ids and lesions after JPEG coding and resizing.
"""
import os
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from l2rw.data import build_splits, images
from l2rw.data.ham10000 import CLASSES, load_ham10000
from l2rw.data.images import user_cache_dir
from l2rw.errors import UserError
from tests.helpers.command_line import run_cli
from tests.helpers.configs import FAST

# lesions per class (nv is the majority, as in HAM10000) and images per lesion, cycled
LESIONS = {"akiec": 5, "bcc": 5, "bkl": 5, "df": 5, "mel": 5, "nv": 9, "vasc": 5}
IMAGES_PER_LESION = [3, 2, 1, 1, 1]
FOLDERS = ["HAM10000_images_part_1", "ham10000_images_part_2"]  # the case differs on purpose
SIZE = 8


def write_jpeg(path, grey: int, size=(30, 20)) -> None:
    Image.new("RGB", size, (grey, grey, grey)).save(path, quality=95)


def metadata_rows() -> list[dict]:
    rows = []
    for dx, lesions in LESIONS.items():
        for lesion in range(lesions):
            for _ in range(IMAGES_PER_LESION[lesion % len(IMAGES_PER_LESION)]):
                rows.append({"lesion_id": f"HAM_{dx}{lesion}", "image_id": f"ISIC_{len(rows):07d}", "dx": dx})
    return rows


@pytest.fixture
def mini_ham(tmp_path):
    """A miniature HAM10000 as downloaded: metadata CSV with extra columns, images in two folders."""
    root = tmp_path / "ham"
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True)
    rows = metadata_rows()
    assert len(rows) * 4 < 256  # grey levels must stay distinct
    for i, row in enumerate(rows):
        suffix = ".JPG" if i % 5 == 0 else ".jpg"
        write_jpeg(root / FOLDERS[i % 2] / f"{row['image_id']}{suffix}", 4 * i)
    extra = {"dx_type": "histo", "age": "50.0", "sex": "male", "localization": "back", "dataset": "vidir_modern"}
    pd.DataFrame([row | extra for row in rows]).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


def ham_cfg(make_cfg, root, *overrides):
    return make_cfg(
        "dataset=ham10000", f"dataset.root={root}", f"dataset.image_size={SIZE}", "dataset.workers=1", *overrides
    )


def row_of(images: torch.Tensor) -> list[int]:
    """Metadata row of each image, read back from its grey level."""
    return (images.float().mean(dim=(1, 2, 3)) / 4).round().long().tolist()


def test_miniature_loads_in_class_order_with_lesion_groups(mini_ham):
    source = load_ham10000(str(mini_ham), SIZE, str(mini_ham), workers=1)
    rows = metadata_rows()
    assert source.class_names == CLASSES and source.test is None and source.unit == "lesion"
    assert source.pool.images.shape == (len(rows), 3, SIZE, SIZE) and source.pool.images.dtype == torch.uint8
    assert row_of(source.pool.images) == list(range(len(rows)))
    assert source.pool.labels.tolist() == [CLASSES.index(r["dx"]) for r in rows]
    lesions = [r["lesion_id"] for r in rows]
    same_lesion = source.groups[:, None] == source.groups[None, :]
    assert same_lesion.tolist() == [[a == b for b in lesions] for a in lesions]


def test_decoding_crops_the_centre_square(tmp_path):
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, 10:30] = 200  # the centre 20x20 square is bright, the sides dark
    Image.fromarray(image).save(tmp_path / "wide.png")
    decoded = images.decode_image(tmp_path / "wide.png", 10)
    assert decoded.shape == (10, 10, 3)
    assert decoded[:, 1:-1].min() == 200 and decoded.min() > 150  # squashing would darken whole columns


@pytest.mark.parametrize("seed, classes", [(0, None), (1, None), (0, ["nv", "df"])])
def test_no_lesion_crosses_splits_and_meta_has_the_requested_lesions(make_cfg, mini_ham, seed, classes):
    selection = [] if classes is None else [f"dataset.classes=[{','.join(str(CLASSES.index(c)) for c in classes)}]"]
    cfg = ham_cfg(make_cfg, mini_ham, "meta.per_class=2", "dataset.test_fraction=0.2", f"seed={seed}", *selection)
    splits = build_splits(cfg)
    classes = classes or CLASSES
    rows = metadata_rows()
    parts = ("train", "meta", "test")
    lesions = {part: {rows[i]["lesion_id"] for i in row_of(getattr(splits, part).images)} for part in parts}
    train, meta, test = lesions["train"], lesions["meta"], lesions["test"]
    assert not (train & meta) and not (train & test) and not (meta & test)
    used = sorted(row_of(torch.cat([splits.train.images, splits.meta.images, splits.test.images])))
    assert used == [i for i, row in enumerate(rows) if row["dx"] in classes]  # profile=natural keeps every image
    for part, per_class in [("meta", 2), ("test", 1)]:  # test: max(1, round(0.2 * 5 lesions)); nv: 2 of 9
        for dx in classes:
            expected = 2 if part == "test" and dx == "nv" else per_class
            assert len({lesion for lesion in lesions[part] if lesion.startswith(f"HAM_{dx}")}) == expected, (part, dx)
    for part in parts:
        images = getattr(splits, part)
        assert images.labels.tolist() == [classes.index(rows[i]["dx"]) for i in row_of(images.images)]


def test_cache_is_reused_and_rebuilt_after_a_file_changes(mini_ham, monkeypatch):
    decoded = []
    real_decode = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda path, *args: decoded.append(path) or real_decode(path, *args))

    def load():
        return load_ham10000(str(mini_ham), SIZE, str(mini_ham / "cache"), workers=1).pool.images

    first = load()
    assert len(decoded) == len(metadata_rows()) and len(list((mini_ham / "cache").iterdir())) == 1
    decoded.clear()
    assert torch.equal(load(), first) and decoded == []  # cache hit: nothing decoded

    changed = mini_ham / FOLDERS[1] / "ISIC_0000001.jpg"
    write_jpeg(changed, 250)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    again = load()
    assert len(decoded) == len(metadata_rows())
    assert row_of(again[1:2]) != row_of(first[1:2]) and torch.equal(again[2:], first[2:])


def test_a_stale_cache_is_rebuilt(mini_ham):
    cache = mini_ham / "cache" / f"ham10000_{SIZE}px.pt"
    cache.parent.mkdir()
    torch.save({"key": "stale", "images": torch.zeros(1)}, cache)
    images = load_ham10000(str(mini_ham), SIZE, str(cache.parent), workers=1).pool.images
    assert row_of(images) == list(range(len(metadata_rows())))
    assert torch.equal(torch.load(cache, weights_only=True)["images"], images)  # written anew


@pytest.mark.parametrize("write", [
    lambda path: path.write_bytes(b"not a cache\n" * 10),
    lambda path: torch.save([1, 2], path),
], ids=["garbage", "list"])
def test_a_file_at_the_cache_path_that_l2rw_did_not_write_is_left_alone(mini_ham, write):
    cache = mini_ham / "cache" / f"ham10000_{SIZE}px.pt"
    cache.parent.mkdir()
    write(cache)
    before = cache.read_bytes()
    with pytest.raises(UserError, match="is a file l2rw did not write as its image cache"):
        load_ham10000(str(mini_ham), SIZE, str(cache.parent), workers=1)
    assert cache.read_bytes() == before


def test_the_cache_defaults_to_the_user_cache_not_the_dataset_folder(mini_ham):
    before = sorted(mini_ham.rglob("*"))
    load_ham10000(str(mini_ham), SIZE, workers=1)
    assert sorted(mini_ham.rglob("*")) == before
    assert (user_cache_dir("ham10000", mini_ham) / f"ham10000_{SIZE}px.pt").is_file()


def test_process_pool_decodes_like_one_process(mini_ham, tmp_path):
    paths = sorted(p for folder in FOLDERS for p in (mini_ham / folder).iterdir())
    def decode(workers):
        return images.decode_all(paths, images.Decoding(SIZE, "rgb", tmp_path, "ham10000", "HAM10000", workers))["images"]

    assert torch.equal(decode(2), decode(1))


def test_isic_test_set_becomes_the_test_split(make_cfg, mini_ham):
    folder = mini_ham / "ISIC2018_Task3_Test_Input"
    folder.mkdir()
    truth = []
    for i, dx in enumerate(CLASSES):
        write_jpeg(folder / f"ISIC_90{i:05d}.jpg", 252)
        truth.append({"image": f"ISIC_90{i:05d}"} | {name.upper(): float(name == dx) for name in CLASSES})
    pd.DataFrame(truth).to_csv(mini_ham / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    splits = build_splits(ham_cfg(make_cfg, mini_ham))
    assert splits.test.labels.tolist() == list(range(7)) and row_of(splits.test.images) == [63] * 7
    assert len(splits.train) + len(splits.meta) == len(metadata_rows())  # no test lesions carved from the pool


@pytest.mark.parametrize("header_only", [False, True], ids=["not-a-number", "header-only"])
def test_a_bad_isic_ground_truth_is_named_in_one_line(mini_ham, header_only):
    columns = ["image", *(name.upper() for name in CLASSES)]
    rows = [[f"ISIC_90{i:05d}", *("1.0" if i == c else "0.0" for c in range(len(CLASSES)))] for i in range(len(CLASSES))]
    rows[3][1 + 3] = "yes"  # image 3's own class: not a number
    path = mini_ham / "ISIC2018_Task3_Test_GroundTruth.csv"
    pd.DataFrame([] if header_only else rows, columns=columns).to_csv(path, index=False)
    with pytest.raises(UserError) as error:
        load_ham10000(str(mini_ham), SIZE, str(mini_ham), workers=1)
    message = str(error.value)
    expected = "has a header but no rows" if header_only else "row of image ISIC_9000003 is not one-hot"
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def corrupt(root, name):
    """Each bad input the loader must name, produced from a valid miniature."""
    metadata = root / "HAM10000_metadata.csv"
    table = pd.read_csv(metadata)
    if name == "missing CSV":
        metadata.unlink()
    elif name == "missing image":
        (root / FOLDERS[1] / "ISIC_0000003.jpg").unlink()
    elif name == "unknown dx":
        table.loc[4, "dx"] = "melanoma"
        table.to_csv(metadata, index=False)
    elif name == "unreadable JPEG":
        (root / FOLDERS[1] / "ISIC_0000003.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    elif name == "too few lesions":
        table[~table.lesion_id.isin(["HAM_df3", "HAM_df4"])].to_csv(metadata, index=False)
    elif name == "header only":
        table.head(0).to_csv(metadata, index=False)


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing CSV", "no HAM10000_metadata.csv under dataset.root="),
        ("missing image", "image ISIC_0000003.jpg is not under dataset.root="),
        ("unknown dx", "unknown dx code 'melanoma' (image ISIC_0000004"),
        ("unreadable JPEG", "cannot decode image "),
        ("too few lesions", "class 'df' has 3 lesions, but meta.per_class=3 + dataset.test_fraction=0.15 (1 lesion)"),
        ("header only", "HAM10000_metadata.csv has a header but no rows"),
    ],
)
def test_bad_input_is_a_user_error_that_names_it(make_cfg, mini_ham, name, message):
    corrupt(mini_ham, name)
    with pytest.raises(UserError, match=re.escape(message)) as error:
        build_splits(ham_cfg(make_cfg, mini_ham))
    if name == "unreadable JPEG":
        assert "ISIC_0000003.jpg" in str(error.value)


@pytest.mark.slow
def test_bad_input_through_the_cli_is_one_line_and_exit_code_2(mini_ham, tmp_path):
    corrupt(mini_ham, "unreadable JPEG")
    done = run_cli("dataset=ham10000", f"dataset.root={mini_ham}", "dataset.workers=1", *FAST, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot decode image ")


@pytest.mark.slow
def test_preset_sweeps_three_methods_end_to_end(mini_ham, tmp_path):
    """+experiment=ham10000 through the CLI, a few steps of each method on the miniature."""
    results = tmp_path / "results.csv"
    done = run_cli(
        "--multirun", "+experiment=ham10000", f"dataset.root={mini_ham}", f"dataset.image_size={SIZE}",
        "dataset.workers=1", "steps=3", "eval_every=3", "batch_size=16", "progress=false",
        f"results_csv={results}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(results)
    assert sorted(rows.method) == ["l2rw", "sgd", "weighted_sampler"]
    assert set(rows.dataset) == {"ham10000"} and set(rows.model) == {"resnet18"} and set(rows.status) == {"ok"}
    assert rows.balanced_accuracy.between(0, 1).all()
    for run_dir in rows.run_dir:
        confusion = pd.read_csv(f"{run_dir}/confusion.csv", index_col=0)
        assert list(confusion.columns) == CLASSES and confusion.to_numpy().sum() > 0
        recall = pd.read_csv(f"{run_dir}/per_class_recall.csv")
        assert list(recall["class"]) == CLASSES
        assert recall.recall.mean() == pytest.approx(rows.set_index("run_dir").balanced_accuracy[run_dir], abs=1e-6)
        assert open(f"{run_dir}/confusion.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_resnet18_pretrained_reads_the_local_hub_cache_only(make_cfg, tmp_path, monkeypatch):
    import torchvision

    from l2rw.models import build_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = make_cfg("model=resnet18", "model.pretrained=true")
    checkpoint = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(UserError, match="model.pretrained=false") as error:
        build_model(cfg.model, (3, 32, 32), num_classes=7)
    assert str(checkpoint) in str(error.value)

    imagenet = torchvision.models.resnet18()  # stands in for the real weights
    checkpoint.parent.mkdir(parents=True)
    torch.save(imagenet.state_dict(), checkpoint)
    model = build_model(cfg.model, (3, 32, 32), num_classes=7)
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(model.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    assert model.fc.out_features == 7 and model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(UserError, match="RGB"):
        build_model(cfg.model, (1, 8, 8), num_classes=7)


@pytest.mark.parametrize(
    "option, message",
    [
        ({"image_size": "abc"}, "dataset.image_size=abc must be a whole number"),
        ({"image_size": 0}, "dataset.image_size=0 must be a whole number"),
        ({"workers": -1}, "dataset.workers=-1 must be a whole number >= 0"),
    ],
)
def test_bad_image_size_or_workers_is_named_alone(make_cfg, tmp_path, option, message):
    """Checked from load_ham10000's signature before anything is read."""
    from l2rw.run.config_schema import check_config

    (key, value), = option.items()
    with pytest.raises(UserError, match=re.escape(message)):
        check_config(ham_cfg(make_cfg, tmp_path, f"dataset.{key}={value}"))
