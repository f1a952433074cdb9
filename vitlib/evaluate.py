"""Test-set evaluation: accuracy, per-class accuracy, confusion matrix, optional flip TTA.

From a notebook::

    model, state = load_model("runs/reference/best.pt")
    images, labels = load_cifar10(split="test")
    result = evaluate_model(model, images, labels)          # dict of tensors and floats
    per_class_accuracy(result["confusion"])                 # (10,)

From a shell: ``python -m vitlib.evaluate runs/reference/best.pt [--datapath DIR] [--tta]``, or
``python -m vitlib.evaluate --pretrained cpu-quick`` for a model shipped with vitlib.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import compare_with_model, load_checkpoint
from .data import CLASSES, load_cifar10
from .hardware import autocast
from .model import RelViT, create_model
from .pretrained import list_pretrained, load_pretrained


@contextlib.contextmanager
def eval_mode(model: nn.Module, *, no_grad: bool = True) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` runs the block with every module of ``model`` in eval mode
    (dropout off, BatchNorm on its running statistics) and, by default, under
    ``torch.no_grad()``; on exit each module gets back its own previous ``training`` flag.
    ``no_grad=False`` leaves autograd as it is (e.g. to count the FLOPs autograd-enabled
    kernels run). Yields ``model``."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield model
    finally:
        for module, training in flags:
            module.training = training


def load_model(checkpoint: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model saved in a checkpoint, in eval mode on ``device``.

    Uses the EMA weights when the checkpoint has them (``state["ema"]``), else ``state["model"]``.
    Returns (model, checkpoint state)."""
    state = load_checkpoint(checkpoint, map_location=device)
    model = create_model(state["model_name"], **state["model_config"])
    problems = compare_with_model(state, model)
    if problems:
        raise ValueError(f"{checkpoint} does not match its own model config: {problems}")
    model.load_state_dict(state.get("ema") or state["model"])
    return model.to(device).eval(), state


def predict(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 500,
    tta: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits float32 (N, classes) for uint8 images (N, 3, 32, 32) (any device; batches are moved
    to the model's device). ``tta`` averages the logits of the image and its mirror image."""
    device = next(model.parameters()).device
    outputs = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device).float().div_(255)
            with autocast(device, autocast_dtype):
                logits = model(x).float()
                if tta:
                    logits = (logits + model(x.flip(-1)).float()) / 2
            outputs.append(logits)
    return torch.cat(outputs)


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """int64 (K, K): entry [t, p] counts images of true class t predicted as p."""
    flat = labels.to(predictions.device) * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes).cpu()


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """float (K,): the diagonal over the row sums (NaN for a class with no test images)."""
    return confusion.diag().double() / confusion.sum(dim=1).double()


def evaluate_model(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 500,
    tta: bool = False,
    label_smoothing: float = 0.0,
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """Evaluate on uint8 images (N, 3, 32, 32) and labels (N,).

    Returns {"accuracy": float, "loss": float (cross-entropy with ``label_smoothing``; the
    reference run logged its test loss with 0.1), "logits": (N, K), "predictions": (N,),
    "confusion": (K, K) int64}."""
    logits = predict(model, images, batch_size, tta, autocast_dtype)
    labels = labels.to(logits.device)
    predictions = logits.argmax(dim=1)
    return {
        "accuracy": (predictions == labels).double().mean().item(),
        "loss": F.cross_entropy(logits, labels, label_smoothing=label_smoothing).item(),
        "logits": logits,
        "predictions": predictions,
        "confusion": confusion_matrix(predictions, labels, logits.shape[1]),
    }


def attention_maps(model: RelViT, image: torch.Tensor) -> torch.Tensor:
    """Attention probabilities of every block for one uint8 image (3, H, W), in eval mode:
    float32 (blocks, heads, N_q, N_k) on the CPU; each row sums to 1."""
    inputs = []
    hooks = [
        block.attn.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
        for block in model.blocks
    ]
    device = next(model.parameters()).device
    with eval_mode(model):
        try:
            model(image[None].to(device).float().div(255))
        finally:
            for hook in hooks:
                hook.remove()
        maps = [
            block.attn.attention_map(x)[0] for block, x in zip(model.blocks, inputs, strict=True)
        ]
    return torch.stack(maps).float().cpu()


def format_report(result: dict, classes: tuple[str, ...] = CLASSES) -> str:
    """Accuracy, per-class accuracy and the confusion matrix as plain text."""
    confusion = result["confusion"]
    width = max(len(c) for c in classes)
    lines = [f"test accuracy: {100 * result['accuracy']:.2f}%  (loss {result['loss']:.4f})", ""]
    lines += [
        f"{c:>{width}}  {100 * a:6.2f}%"
        for c, a in zip(classes, per_class_accuracy(confusion).tolist(), strict=True)
    ]
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    lines.append(" " * width + "".join(f"{c[:5]:>7}" for c in classes))
    lines += [
        f"{c:>{width}}" + "".join(f"{v:7d}" for v in row)
        for c, row in zip(classes, confusion.tolist(), strict=True)
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m vitlib.evaluate``."""
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.evaluate",
        description="Evaluate a vitlib checkpoint or shipped model on the CIFAR-10 test set.",
        allow_abbrev=False,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("checkpoint", nargs="?", help="a last.pt or best.pt written by vitlib.train")
    which.add_argument(
        "--pretrained",
        metavar="NAME",
        help=f"a model shipped with vitlib instead of a checkpoint: {list_pretrained()}",
    )
    parser.add_argument(
        "--datapath",
        "--data",
        default=None,
        help="folder holding cifar-10-batches-py/ (default: $VITLIB_DATA)",
    )
    parser.add_argument(
        "--tta", action="store_true", help="average with horizontally flipped images"
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda, ... (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        "--batch_size",
        type=int,
        default=500,
        help="evaluation batch (default: %(default)s)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="evaluate on the first N test images only"
    )
    return parser


def _model_and_source(args: argparse.Namespace) -> tuple[RelViT, str]:
    """The model the command line names (a shipped one or a checkpoint's) and a line saying
    what it is."""
    if args.pretrained:
        model = load_pretrained(args.pretrained, args.device)
        info = model.pretrained_info
        recorded = info["test_acc_tta" if args.tta else "test_acc"]
        return model, (
            f"pretrained {args.pretrained!r}: {info['model']}, {info['epochs']} epochs, "
            f"recorded {100 * recorded:.2f}%"
        )
    model, state = load_model(args.checkpoint, args.device)
    return model, (
        f"{args.checkpoint}: {state.get('model_name', '?')}, epoch "
        f"{state.get('epoch', '?')}, {'EMA' if state.get('ema') else 'model'} weights"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model, source = _model_and_source(args)
        images, labels = load_cifar10(args.datapath, "test", limit=args.limit)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result = evaluate_model(model, images, labels, batch_size=args.batch_size, tta=args.tta)
    print(f"{source}; {len(labels):,} test images{', flip TTA' if args.tta else ''}")
    print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
