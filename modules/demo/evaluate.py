"""Evaluation of the demo model: the objective, per-example losses and every task metric."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modules.demo.data import TASKS, DemoSplit

EVAL_BATCH = 1024


def task_losses(outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-example loss of each task (cross-entropy, MSE, cross-entropy, binary cross-entropy)."""
    return {
        "emotion": F.cross_entropy(outputs["emotion"], labels["emotion"], reduction="none"),
        "bentham": (outputs["bentham"] - labels["bentham"]) ** 2,
        "surd": F.cross_entropy(outputs["surd"], labels["surd"], reduction="none"),
        "regret": F.binary_cross_entropy_with_logits(outputs["regret"], labels["regret"], reduction="none"),
    }


def confusion_matrix(true: torch.Tensor, pred: torch.Tensor, classes: int) -> torch.Tensor:
    """Counts with rows = true class, columns = predicted class (float64)."""
    flat = (true.long() * classes + pred.long()).cpu()
    return torch.bincount(flat, minlength=classes * classes).reshape(classes, classes).double()


def macro_f1(confusion: torch.Tensor) -> float:
    """Mean over all classes of 2TP / (2TP + FP + FN); a class with no true or predicted example scores 0."""
    tp = confusion.diag()
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    denominator = 2 * tp + fp + fn
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.zeros_like(tp))
    return float(f1.mean())


def mutual_information(confusion: torch.Tensor) -> float:
    """Mutual information (nats) of the joint histogram ``confusion``."""
    joint = confusion / confusion.sum()
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    nonzero = joint > 0
    return float((joint[nonzero] * (joint[nonzero] / outer[nonzero]).log()).sum())


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation; NaN when either side is constant."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else float("nan")


@torch.no_grad()
def predict(model: nn.Module, split: DemoSplit) -> dict[str, torch.Tensor]:
    """Model outputs on the whole split (in batches, on the model's device, returned on CPU)."""
    device = next(model.parameters()).device
    chunks: dict[str, list[torch.Tensor]] = {task: [] for task in TASKS}
    for start in range(0, len(split), EVAL_BATCH):
        x = split.x[start : start + EVAL_BATCH].to(device)
        signal = split.signal[start : start + EVAL_BATCH].to(device)
        for task, value in model(x, signal).items():
            chunks[task].append(value.float().cpu())
    return {task: torch.cat(parts) for task, parts in chunks.items()}


def evaluate(model: nn.Module, split: DemoSplit) -> dict[str, Any]:
    """All demo metrics on ``split`` (eval mode, no grad); the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    try:
        outputs = predict(model, split)
    finally:
        model.train(was_training)
    labels = split.labels
    losses = task_losses(outputs, labels)
    per_example = sum(losses[task] for task in TASKS)
    emotion_confusion = confusion_matrix(labels["emotion"], outputs["emotion"].argmax(1), 6)
    surd_confusion = confusion_matrix(labels["surd"], outputs["surd"].argmax(1), 4)
    regret_pred = (outputs["regret"] > 0).float()
    return {
        "loss": float(per_example.mean()),
        "emotion_loss": float(losses["emotion"].mean()),
        "emotion_f1": macro_f1(emotion_confusion),
        "emotion_confusion": emotion_confusion,
        "bentham_loss": float(losses["bentham"].mean()),
        "bentham_rmse": math.sqrt(float(losses["bentham"].mean())),
        "bentham_corr": pearson(outputs["bentham"], labels["bentham"]),
        "surd_loss": float(losses["surd"].mean()),
        "surd_accuracy": float(surd_confusion.diag().sum() / surd_confusion.sum()),
        "surd_mi": mutual_information(surd_confusion),
        "regret_loss": float(losses["regret"].mean()),
        "regret_cf_accuracy": float((regret_pred == labels["regret"]).double().mean()),
        "per_example_losses": per_example.detach(),
    }
