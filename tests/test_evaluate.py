"""Evaluation of a saved checkpoint: numbers, tensors for notebooks, flip TTA, the CLI."""

import pytest
import torch

from vitlib.data import load_cifar10
from vitlib.evaluate import (
    confusion_matrix,
    eval_mode,
    evaluate_model,
    load_model,
    main,
    per_class_accuracy,
    predict,
)
from vitlib.train import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_config):
    out = tmp_path_factory.mktemp("eval") / "run"
    train(tiny_config(out, epochs=1, train_limit=64, batch_size=32))
    return out / "best.pt"


def test_eval_mode_restores_each_modules_flag_and_grad_mode():
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 2), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(2)
    )
    model[2].eval()  # a frozen BatchNorm inside a training model stays frozen afterwards
    with eval_mode(model) as inside:
        assert inside is model and not any(m.training for m in model.modules())
        assert not torch.is_grad_enabled()
    assert [m.training for m in model.modules()] == [True, True, True, False]
    assert torch.is_grad_enabled()
    with eval_mode(model, no_grad=False):
        assert torch.is_grad_enabled() and not model.training
    with pytest.raises(RuntimeError, match="inside"), eval_mode(model):
        raise RuntimeError("inside")
    assert [m.training for m in model.modules()] == [True, True, True, False]


def test_predict_leaves_the_training_flag_as_it_was():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.9), torch.nn.Linear(12, 3))
    images = torch.randint(0, 256, (4, 3, 2, 2), dtype=torch.uint8)
    logits = predict(model, images)
    assert model.training and not logits.requires_grad
    torch.testing.assert_close(logits, model.eval()(images.float() / 255))


def test_confusion_and_per_class_accuracy():
    predictions = torch.tensor([0, 1, 1, 2, 2, 2])
    labels = torch.tensor([0, 1, 2, 2, 2, 0])
    confusion = confusion_matrix(predictions, labels, 3)
    assert confusion.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]
    assert per_class_accuracy(confusion).tolist() == pytest.approx([0.5, 1.0, 2 / 3])


def test_evaluate_model_returns_tensors(checkpoint, cifar_root):
    model, state = load_model(checkpoint)
    images, labels = load_cifar10(cifar_root, "test", limit=100)
    result = evaluate_model(model, images, labels, batch_size=32)
    assert result["logits"].shape == (100, 10) and result["predictions"].shape == (100,)
    assert result["confusion"].sum() == 100
    assert result["accuracy"] == pytest.approx(
        (result["predictions"] == labels).double().mean().item()
    )
    assert result["confusion"].diag().sum().item() == round(100 * result["accuracy"])
    assert state["epoch"] == 1 and not model.training


def test_flip_tta_averages_the_mirror_image(checkpoint, cifar_root):
    model, _ = load_model(checkpoint)
    images, _ = load_cifar10(cifar_root, "test", limit=8)
    plain = predict(model, images)
    mirrored = predict(model, images.flip(-1))
    torch.testing.assert_close(predict(model, images, tta=True), (plain + mirrored) / 2)


def test_cli_prints_report(checkpoint, cifar_root, capsys):
    assert main([str(checkpoint), "--datapath", str(cifar_root), "--limit", "50", "--tta"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "flip TTA" in out and "50 test images" in out
    assert "confusion matrix (rows: true class, columns: predicted)" in out
    assert " airplane " in out.replace("\n", " ")


def test_cli_clear_error_for_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nonsense")
    assert main([str(bad)]) == 1
    assert "bad.pt is not a vitlib checkpoint" in capsys.readouterr().err
