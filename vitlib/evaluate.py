"""Test-set evaluation (accuracy, per class, confusion matrix, optional flip TTA); from a shell,
``python -m vitlib.evaluate CHECKPOINT|--pretrained NAME [--dataset NAME] [--datapath DIR]``."""

import argparse
import contextlib
import sys
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .checkpoint import compare_with_model, load_checkpoint
from .data import CLASSES, DATASETS, class_names, load_dataset
from .hardware import autocast, resolve_device
from .model import RelViT, create_model
from .pretrained import list_pretrained, load_pretrained


@contextlib.contextmanager
def eval_mode(model: nn.Module, *, no_grad: bool = True) -> Iterator[nn.Module]:
    """``with eval_mode(model):`` eval mode, no grad unless ``no_grad=False``; flags restored."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield model
    finally:
        for module, training in flags:
            module.training = training


def load_model(checkpoint: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode on ``device``, state) of a checkpoint; EMA weights if it has them."""
    state = load_checkpoint(checkpoint, map_location=device)
    model = create_model(state["model_name"], **state["model_config"])
    if problems := compare_with_model(state, model):
        raise ValueError(f"{checkpoint} does not match its own model config: {problems}")
    model.load_state_dict(state.get("ema") or state["model"])
    return model.to(device).eval(), state


def predict(model: nn.Module, images: Tensor, batch_size: int = 500, tta: bool = False,
            autocast_dtype: torch.dtype | None = None) -> Tensor:  # fmt: skip
    """uint8 images (N, 3, 32, 32) -> float32 logits (N, K); ``tta``: mean with the mirror image."""
    device, outputs = next(model.parameters()).device, []
    with eval_mode(model), autocast(device, autocast_dtype):
        for batch in images.split(batch_size):
            x = batch.to(device).float().div_(255)
            logits = model(x).float()
            outputs.append((logits + model(x.flip(-1)).float()) / 2 if tta else logits)
    return torch.cat(outputs)


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """int64 (K, K) on the CPU: entry [t, p] counts images of true class t predicted as p."""
    flat = labels.to(predictions.device) * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes).cpu()


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """float64 (K,): the diagonal over the row sums (NaN for a class with no test images)."""
    return confusion.diag().double() / confusion.sum(dim=1).double()


def evaluate_model(model: nn.Module, images: Tensor, labels: Tensor, *, batch_size: int = 500,
                   tta: bool = False, label_smoothing: float = 0.0,
                   autocast_dtype: torch.dtype | None = None) -> dict:  # fmt: skip
    """uint8 images (N, 3, 32, 32), labels (N,) -> {"accuracy", "loss" (cross-entropy; the reference
    run's log: label smoothing 0.1), "logits" (N, K), "predictions" (N,), "confusion" (K, K)}."""
    logits = predict(model, images, batch_size, tta, autocast_dtype)
    labels, predictions = labels.to(logits.device), logits.argmax(dim=1)
    return {
        "accuracy": (predictions == labels).double().mean().item(),
        "loss": nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing).item(),
        "logits": logits, "predictions": predictions,
        "confusion": confusion_matrix(predictions, labels, logits.shape[1]),
    }  # fmt: skip


def attention_maps(model: RelViT, image: Tensor) -> Tensor:
    """Attention probabilities of every block for one uint8 image (3, H, W), in eval mode:
    float32 (blocks, heads, N_q, N_k) on the CPU; each row sums to 1."""
    maps = []  # (1, heads, N_q, N_k) per block, from its attention input by a pre-hook
    with contextlib.ExitStack() as hooks:  # removed on exit
        for attn in [block.attn for block in model.blocks]:
            hook = attn.register_forward_pre_hook(lambda m, a: maps.append(m.attention_map(*a)))
            hooks.enter_context(hook)
        predict(model, image[None])  # the forward pass that runs the hooks
    return torch.cat(maps).float().cpu()


def format_report(result: dict, names: tuple[str, ...] = CLASSES) -> str:
    """Accuracy, per-class accuracy (classes ``names``) and, for up to 20 classes, the confusion
    matrix of ``evaluate_model`` as plain text."""
    width = max(len(c) for c in names)
    lines = [f"test accuracy: {100 * result['accuracy']:.2f}%  (loss {result['loss']:.4f})", ""]
    per_class = zip(names, per_class_accuracy(result["confusion"]).tolist(), strict=True)
    lines += [f"{c:>{width}}  {100 * a:6.2f}%" for c, a in per_class]
    if len(names) > 20:
        return "\n".join(lines)
    header = " " * width + "".join(f"{c[:5]:>7}" for c in names)
    lines += ["", "confusion matrix (rows: true class, columns: predicted)", header]
    rows = zip(names, result["confusion"].tolist(), strict=True)
    lines += [f"{c:>{width}}" + "".join(f"{v:7d}" for v in row) for c, row in rows]
    return "\n".join(lines)


def _model_and_source(args: argparse.Namespace) -> tuple[RelViT, str, dict]:
    """The command line's model (a shipped one or a checkpoint's), a line on it, its config."""
    if args.pretrained:
        model = load_pretrained(args.pretrained, args.device)
        info, acc = model.pretrained_info, "test_acc_tta" if args.tta else "test_acc"
        about = f"{info['model']}, {info['epochs']} epochs, recorded {100 * info[acc]:.2f}%"
        return model, f"pretrained {args.pretrained!r}: {about}", info["config"]
    model, state = load_model(args.checkpoint, args.device)
    weights = f"epoch {state.get('epoch', '?')}, {'EMA' if state.get('ema') else 'model'} weights"
    return model, f"{args.checkpoint}: {state['model_name']}, {weights}", state["config"]


def main(argv: list[str] | None = None) -> int:
    about = "Evaluate a vitlib checkpoint or shipped model on its dataset's test set."
    parser = argparse.ArgumentParser(prog="python -m vitlib.evaluate", description=about,
                                     allow_abbrev=False)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("checkpoint", nargs="?", help="a last.pt or best.pt written by vitlib.train")
    which.add_argument("--pretrained", metavar="NAME", help=f"a shipped model: {list_pretrained()}")
    add = parser.add_argument
    add("--dataset", choices=list(DATASETS), help="the dataset (default: the one it was trained on)")
    add("--datapath", "--data", help="folder holding the dataset's folder (default: $VITLIB_DATA)")
    add("--tta", action="store_true", help="average with the mirror images")
    add("--device", type=resolve_device, default="auto", help="auto, cpu, cuda:N")
    add("--batch-size", "--batch_size", type=int, default=500, help="batch (default: %(default)s)")
    add("--limit", type=int, help="evaluate on the first N test images only")
    args = parser.parse_args(argv)
    try:
        model, source, config = _model_and_source(args)
        if args.dataset not in (None, dataset := config.get("dataset", "CIFAR-10")):
            raise ValueError(f"{args.checkpoint or args.pretrained} was trained on {dataset}, not "
                             f"{args.dataset}, whose classes differ: drop --dataset")  # fmt: skip
        if args.tta and not DATASETS[dataset].flips:
            raise ValueError(f"--tta averages with mirror images: not on {dataset}")
        images, labels = load_dataset(dataset, args.datapath, "test", limit=args.limit)
        names = class_names(dataset, args.datapath)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result = evaluate_model(model, images, labels, batch_size=args.batch_size, tta=args.tta)
    print(f"{source}; {dataset}: {len(labels):,} test images{', flip TTA' if args.tta else ''}")
    print(format_report(result, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
