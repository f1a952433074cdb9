"""The five datasets (``vitlib.data.DATASETS``) on synthetic copies of their official layouts
(tests/layouts.py): reading, class names, the model that follows the dataset, training that
learns, resume, evaluation by class name, and clear errors for a wrong layout."""

from __future__ import annotations

import pickle
import shutil
import signal
import typing

import pytest
import torch
from helpers import TINY, assert_same_tensors, tiny_argv
from layouts import (
    COLOURS,
    LEARNED,
    tiny_imagenet_wnids,
    write_cifar100,
    write_cinic10,
    write_svhn,
    write_tiny_imagenet,
)

from vitlib import evaluate
from vitlib.augment import TrainAugment, flip_crop, sample_flip_crop
from vitlib.checkpoint import load_checkpoint
from vitlib.config import TrainConfig, model_options, preset_config, validate
from vitlib.data import CLASSES, DATASETS, class_names, load_dataset
from vitlib.model import create_model
from vitlib.train import main, train

OTHERS = ["CIFAR-100", "SVHN", "CINIC-10", "Tiny-ImageNet"]  # CIFAR-10: tests/test_data.py


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One folder holding a synthetic copy of each layout, as $VITLIB_DATA would."""
    root = tmp_path_factory.mktemp("datasets")
    write_cifar100(root)
    write_svhn(root)
    write_cinic10(root, CLASSES)
    write_tiny_imagenet(root)
    return root


def test_the_registry_is_what_the_command_line_offers():
    assert list(DATASETS) == ["CIFAR-10", *OTHERS]
    assert typing.get_args(typing.get_type_hints(TrainConfig)["dataset"]) == tuple(DATASETS)
    # What each holds in memory as uint8, all splits (docs/datasets.md states these).
    gigabytes = {name: round(sum(d.sizes.values()) * 3 * d.size**2 / 1e9, 2) for name, d in DATASETS.items()}
    assert gigabytes == {"CIFAR-10": 0.18, "CIFAR-100": 0.18, "SVHN": 0.31, "CINIC-10": 0.83,
                         "Tiny-ImageNet": 1.35}  # fmt: skip
    assert [d.name for d in DATASETS.values() if not d.flips] == ["SVHN"]


@pytest.mark.parametrize("name", OTHERS)
def test_reading_gives_images_labels_and_names_as_the_layout_has_them(data_root, name):
    dataset = DATASETS[name]
    for split in dataset.sizes:
        images, labels = load_dataset(name, data_root, split)
        size = dataset.size
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, size, size)
        assert labels.dtype == torch.int64 and len(labels) == len(images)
        assert 0 <= labels.min() and labels.max() < dataset.num_classes
        # the square in the class's colour (JPEG: approximately) is where the label says
        colours = torch.from_numpy(COLOURS).int()
        for image, label in list(zip(images, labels))[:20]:
            if label < LEARNED:
                pixels = image.flatten(1).T.int()  # (H*W, 3)
                near = (pixels - colours[label]).abs().max(dim=1).values <= 12
                assert near.sum() >= (size * 3 // 8) ** 2 / 2
        first, _ = load_dataset(name, data_root, split, limit=LEARNED)
        assert torch.equal(first, images[:LEARNED])
    names = class_names(name, data_root)
    assert len(names) == dataset.num_classes
    expected = {"CIFAR-100": tuple(f"class_{k:02d}" for k in range(100)),
                "SVHN": tuple("0123456789"), "CINIC-10": CLASSES,
                "Tiny-ImageNet": tuple(f"thing {w[-3:]}" for w in sorted(tiny_imagenet_wnids()))}  # fmt: skip
    assert names == expected[name]


def test_class_folders_are_interleaved_so_that_a_limit_keeps_every_class(data_root):
    _, labels = load_dataset("CINIC-10", data_root, "test", limit=20)
    assert labels.tolist() == list(range(10)) * 2
    _, labels = load_dataset("Tiny-ImageNet", data_root, "train", limit=200)
    assert sorted(labels.tolist()) == list(range(200))  # every class's first image


def test_svhn_digit_zero_is_label_zero(data_root):
    from scipy.io import loadmat

    _, labels = load_dataset("SVHN", data_root, "test")
    stored = loadmat(data_root / "svhn" / "test_32x32.mat")["y"].reshape(-1)
    assert (labels[stored == 10] == 0).all() and (labels[stored != 10] == torch.from_numpy(
        stored[stored != 10]).long()).all()  # fmt: skip


def test_the_dataset_folder_itself_is_accepted(data_root):
    for name in OTHERS:
        folder = data_root / DATASETS[name].folder
        assert torch.equal(load_dataset(name, folder, "test")[1],
                           load_dataset(name, data_root, "test")[1])  # fmt: skip


def test_the_model_follows_the_dataset():
    """Classes from the dataset; 64x64 images get patches twice as large, so the grid, and with
    it the relative position tables, stay as each model was built."""
    for model, grid in (("vit_cifar10_small", (8, 8)), ("vit_cifar10_patch2_input32", (16, 16))):
        config = preset_config("cpu-quick", model=model, dataset="Tiny-ImageNet")
        built = create_model(model, **model_options(config))
        assert built.config.grid == grid and built.config.num_classes == 200
        assert built(torch.zeros(2, 3, 64, 64)).shape == (2, 200)
    config = preset_config("cpu-quick", dataset="CIFAR-100", model_overrides={"depth": 1})
    assert model_options(config) == {"num_classes": 100, "depth": 1}
    assert model_options(preset_config("cpu-quick")) == {"num_classes": 10}  # CIFAR-10 as before


def test_no_mirror_images_for_digits():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    flip, top, left = sample_flip_crop(64, torch.Generator().manual_seed(5))
    assert flip.any()
    augmented = TrainAugment("flip-crop", flips=False)(images, torch.Generator().manual_seed(5))
    assert torch.equal(augmented, flip_crop(images, flip & False, top, left).float() / 255)


def test_a_mirror_test_time_augmentation_is_refused_for_digits(data_root):
    config = preset_config("cpu-quick", dataset="SVHN", datapath=str(data_root), tta=True)
    with pytest.raises(ValueError, match="tta=True is out of range: False: a mirrored image"):
        validate(config)


def _tiny(name, data_root, out, **overrides):
    settings = {**TINY, "train_limit": None, "test_limit": None, "augment": "flip-crop",
                "mix": "none", "epochs": 4}  # fmt: skip
    return preset_config("cpu-quick", **{**settings, "dataset": name, "datapath": str(data_root),
                                         "out": str(out), **overrides})  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", OTHERS)
def test_train_learns_resumes_and_evaluates_by_class_name(data_root, tmp_path, name, capsys):
    whole = train(_tiny(name, data_root, tmp_path / "whole"))
    assert whole["test_acc"] >= 0.6, whole["history"]  # 10 learnable classes: chance is 0.1

    def stop_before_step_9(run, images, labels):
        if run.progress.step + 1 == 9:
            signal.raise_signal(signal.SIGTERM)

    assert train(_tiny(name, data_root, tmp_path / "cut"), on_batch=stop_before_step_9)["interrupted"]
    resumed = train(_tiny(name, data_root, tmp_path / "cut", resume=True))
    numbers = [[(e["step"], e["train_loss"], e["test_acc"]) for e in r["history"]]
               for r in (resumed, whole)]  # fmt: skip
    assert numbers[0] == numbers[1]
    assert_same_tensors(load_checkpoint(tmp_path / "cut" / "last.pt")["model"],
                        load_checkpoint(tmp_path / "whole" / "last.pt")["model"])  # fmt: skip
    assert load_checkpoint(tmp_path / "whole" / "last.pt")["config"]["dataset"] == name

    assert evaluate.main([str(tmp_path / "whole" / "last.pt"), "--datapath", str(data_root)]) == 0
    report = capsys.readouterr().out
    assert f"{name}: 80 test images" in report
    for class_name in class_names(name, data_root)[:LEARNED]:
        assert f"{class_name}  " in report
    other = "CIFAR-10" if name != "CIFAR-10" else "SVHN"
    assert evaluate.main([str(tmp_path / "whole" / "last.pt"), "--dataset", other]) == 1
    assert f"was trained on {name}, not {other}" in capsys.readouterr().err
    # the command line: python -m vitlib.train --dataset NAME --datapath DIR --preset cpu-quick ...
    assert main(tiny_argv(tmp_path / "cli", data_root, "--dataset", name)) == 0
    assert f"{name}: 96 train / 32 test images" in capsys.readouterr().out


@pytest.mark.slow
def test_cinic10_validates_on_its_own_valid_split(data_root, tmp_path):
    result = train(_tiny("CINIC-10", data_root, tmp_path / "run", val_split=40, epochs=1))
    assert "val_acc" in result and len(result["history"]) == 1
    assert result["step"] == 240 // 16  # the training set stays whole: 240 images in 16s


def _copy(data_root, tmp_path, name):
    folder = tmp_path / DATASETS[name].folder
    shutil.copytree(data_root / DATASETS[name].folder, folder)
    return folder


@pytest.mark.parametrize(
    "name, damage, error, message",
    [
        ("CINIC-10", lambda f: shutil.rmtree(f / "test"), FileNotFoundError,
         r"CINIC-10: .*cinic-10/test is missing\. Expected the official layout cinic-10/\{train"),
        ("CINIC-10", lambda f: (f / "test" / "zebra").mkdir(), ValueError,
         r"\['zebra'\] are not CINIC-10 classes"),
        ("CINIC-10", lambda f: next((f / "test" / "cat").glob("*.png")).write_bytes(b"\x89PNG no"),
         ValueError, r"cifar10-test-\d+\.png: not a 32x32 image"),
        ("Tiny-ImageNet", lambda f: (f / "wnids.txt").write_text("n01\nn02\n"), ValueError,
         "wnids.txt: expected 200 WordNet ids, found 2"),
        ("Tiny-ImageNet", lambda f: (f / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn7\n"),
         ValueError, r"val_annotations\.txt: 1 lines without a label of wnids\.txt"),
        ("SVHN", lambda f: (f / "test_32x32.mat").write_bytes(b"MATLAB 5.0 nothing"), ValueError,
         r"test_32x32\.mat: not an SVHN \.mat file"),
        ("CIFAR-100", lambda f: (f / "test").write_bytes(pickle.dumps({b"data": 1})), ValueError,
         r"cifar-100-python/test: b'data' should be a uint8 array"),
    ],
)  # fmt: skip
def test_a_damaged_layout_is_named_with_the_layout_expected(data_root, tmp_path, name, damage,
                                                           error, message):  # fmt: skip
    damage(_copy(data_root, tmp_path, name))
    with pytest.raises(error, match=message):
        load_dataset(name, tmp_path, "test")


def test_a_folder_in_another_layout_is_refused_naming_the_layout(data_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CIFAR-100: .*meta is missing|CIFAR-100: .*test "
                       "is missing"):  # fmt: skip
        load_dataset("CIFAR-100", data_root / "svhn", "test")
    with pytest.raises(ValueError, match=r"split='valid': SVHN has the splits \['train', 'test'\]"):
        load_dataset("SVHN", data_root, "valid")
    with pytest.raises(ValueError, match="unknown dataset 'MNIST'"):
        load_dataset("MNIST", data_root)
