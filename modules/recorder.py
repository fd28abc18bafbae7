"""Record a plain PyTorch training loop into a run directory (seed phase 1).

Usage::

    recorder = Recorder("runs/x", spec, model, optimizer, every=2, val_split=splits["val"])
    for epoch in range(1, epochs + 1):
        for batch in loader:
            loss = ...; loss.backward(); recorder.after_backward(); optimizer.step()
            recorder.add_train_loss(loss.item(), len(batch))
        recorder.end_epoch(epoch)

Every ``every`` epochs it stores each group's state and the metrics named in the README.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from modules.combine.batchnorm import call_model
from modules.errors import SpecError
from modules.rundir.run_dir import RunDir, RunLocation, RunWriter
from modules.scalars import as_scalar
from modules.spec.schema import MODEL_GROUP, Spec, dump_spec

NAN = float("nan")
ACTIVATIONS = (nn.ReLU, nn.GELU)


def confusion_stability(current: torch.Tensor, previous: torch.Tensor | None) -> float:
    """1 - mean over rows of the total-variation distance between row-normalised matrices."""
    if previous is None or previous.shape != current.shape:
        return NAN
    a, b = current.double(), previous.double()
    sums_a, sums_b = a.sum(1, keepdim=True), b.sum(1, keepdim=True)
    rows = (sums_a.squeeze(1) > 0) & (sums_b.squeeze(1) > 0)
    if not bool(rows.any()):
        return NAN
    distance = 0.5 * (a[rows] / sums_a[rows] - b[rows] / sums_b[rows]).abs().sum(1)
    return float(1.0 - distance.mean())


def module_group(spec: Spec, module_name: str, keys: list[str]) -> str | None:
    """The group of a module: by its name as a key prefix, else by the parameters under it."""
    try:
        return spec.group_of(f"{module_name}.weight")
    except SpecError:
        pass
    prefix = module_name
    while prefix:
        under = [k for k in keys if k.startswith(prefix + ".")]
        if under:
            return spec.group_of(under[0])
        prefix = prefix.rpartition(".")[0]
    return None


def _feeds_from_conv(parent: nn.Module) -> bool:
    """Units are channels (dim 1) after convolutions, features (last dim) after Linear layers.

    An activation's output of shape (batch, seq, features) from a transformer block has its units
    last; (batch, channels, length) from a Conv1d has them at dim 1. The parent tells which.
    """
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in parent.children())


def dead_fractions(
    model: nn.Module, spec: Spec, inputs: Any, groups: list[str]
) -> dict[str, float]:
    """Per group: fraction of ReLU/GELU units whose output is <= 0 for every example (and position)."""
    keys = list(model.state_dict().keys())
    dead: dict[str, torch.Tensor] = {}
    owners: dict[str, str] = {}
    handles = []

    def hook_for(name: str, channels_first: bool) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> None:
            unit_dim = 1 if channels_first else -1
            if output.dim() < 2:
                units = output.reshape(1, -1)
            else:
                units = output.movedim(unit_dim, 0).reshape(output.shape[unit_dim], -1)
            never = (units <= 0).all(dim=1).cpu()
            dead[name] = dead[name] & never if name in dead and dead[name].shape == never.shape else never

        return hook

    modules = dict(model.named_modules())
    for name, module in modules.items():
        if isinstance(module, ACTIVATIONS):
            group = module_group(spec, name, keys)
            if group is not None:
                owners[name] = group
                parent = modules[name.rpartition(".")[0]]
                handles.append(module.register_forward_hook(hook_for(name, _feeds_from_conv(parent))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            call_model(model, inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    totals = {g: [0, 0] for g in groups}
    for name, mask in dead.items():
        totals[owners[name]][0] += int(mask.sum())
        totals[owners[name]][1] += mask.numel()
    return {g: (d / n if n else NAN) for g, (d, n) in totals.items()}


@contextlib.contextmanager
def preserved_modes(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval mode after the block: user code (an ``evaluate`` that
    calls ``model.eval()``) must not leave the training loop running in eval mode."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def update_ratio(current: Mapping[str, torch.Tensor], previous: Mapping[str, torch.Tensor]) -> float:
    """||theta_t - theta_prev|| / ||theta_prev|| over the floating tensors of one group."""
    diff_sq, prev_sq = 0.0, 0.0
    for key, now in current.items():
        if not now.is_floating_point() or key not in previous:
            continue
        before = previous[key].to(torch.float64)
        diff_sq += float(((now.detach().to("cpu", torch.float64) - before) ** 2).sum())
        prev_sq += float((before**2).sum())
    if prev_sq == 0.0:
        return NAN
    return math.sqrt(diff_sq) / math.sqrt(prev_sq)


def _given_rows(epoch: int, metrics: Mapping[str, Any]) -> list[tuple[int, str, str, float]]:
    """Rows of the scalar values in ``metrics``; tensors of more than one value are left out."""
    return [
        (epoch, MODEL_GROUP, str(name), number)
        for name, value in metrics.items()
        if (number := as_scalar(value)) is not None
    ]


class Recorder:
    """Saves each group's state and the training/validation metrics every ``every`` epochs."""

    def __init__(
        self,
        run_path: RunLocation,
        spec: Spec,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        every: int = 2,
        evaluate: Callable[[nn.Module, Any], dict[str, Any]] | None = None,
        val_split: Any = None,
        dead_inputs: Any = None,
        validate: bool = True,
    ) -> None:
        """``dead_inputs``: the batch for dead-unit detection; default the first val batch of ``spec.batches``.

        ``validate=False``: the training framework evaluates (the HF Trainer, Lightning); its metrics are
        passed to ``end_epoch(metrics=...)`` or ``record_metrics`` and the spec needs no data or evaluate.
        """
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise SpecError(f"Recorder every={every!r} is invalid; save every k >= 1 epochs")
        self.spec, self.model, self.optimizer, self.every = spec, model, optimizer, every
        self.group_keys = spec.assign_groups(model.state_dict().keys())
        self.writer = RunWriter.create(run_path, spec.name, self.group_keys)
        self.writer.write_spec_text(dump_spec(spec))
        #: The run's local folder (None for a run on object storage) and where it lives (path or URI).
        self.path = self.writer.store.local_path
        self.location = self.writer.store.location
        self.validate = validate
        self.evaluate = evaluate if evaluate is not None or not validate else spec.evaluator()
        self.val_split = val_split if val_split is not None or not validate else spec.load_data(("val",))["val"]
        self.groups = list(self.group_keys)
        self.dead_inputs = dead_inputs
        self._params_by_group: dict[str, list[nn.Parameter]] = {g: [] for g in self.groups}
        for name, param in model.named_parameters():
            self._params_by_group[spec.group_of(name)].append(param)
        self._previous_confusions: dict[str, torch.Tensor] = {}
        self._reset_epoch()

    def discard_epoch(self) -> None:
        """Forget the gradient norms and losses gathered since the last ``end_epoch`` (an epoch a
        framework callback does not save)."""
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self._steps = 0
        self._grad_sum = {g: 0.0 for g in self.groups}
        self._ratio_sum = {g: 0.0 for g in self.groups}
        self._loss_sum, self._loss_count = 0.0, 0

    # -- during the epoch ------------------------------------------------------------------

    def after_backward(self) -> None:
        """Accumulate per-group and global gradient norms of this step (call after backward)."""
        sums = []
        for params in self._params_by_group.values():
            grads = [p.grad.detach() for p in params if p.grad is not None]
            # stays on the device: one host sync per step (the .tolist()), not one per group
            sums.append(torch.stack([g.double().pow(2).sum() for g in grads]).sum() if grads else None)
        device = next((t.device for t in sums if t is not None), torch.device("cpu"))
        stacked = torch.stack([t if t is not None else torch.zeros((), dtype=torch.float64, device=device) for t in sums])
        squares = dict(zip(self._params_by_group, stacked.tolist()))
        total = math.sqrt(sum(squares.values()))
        for group, square in squares.items():
            norm = math.sqrt(square)
            self._grad_sum[group] += norm
            self._ratio_sum[group] += norm / total if total > 0 else 0.0
        self._steps += 1

    def add_train_loss(self, loss: float, n: int = 1) -> None:
        """Add a batch's mean training loss over ``n`` examples."""
        self._loss_sum += float(loss) * n
        self._loss_count += n

    # -- end of epoch ----------------------------------------------------------------------

    def end_epoch(self, epoch: int, metrics: Mapping[str, Any] | None = None) -> bool:
        """Close ``epoch`` (1-based); on multiples of ``every`` save states and metrics. True if saved.

        ``metrics``: whole-model figures computed elsewhere (a framework's ``eval_loss``), stored under
        their own names."""
        if epoch % self.every != 0:
            self._reset_epoch()
            return False
        rows: list[tuple[int, str, str, float]] = []
        if self.validate:
            rows += self._validation_rows(epoch)
        train_loss = self._loss_sum / self._loss_count if self._loss_count else NAN
        rows.append((epoch, MODEL_GROUP, "train_loss", train_loss))
        for index, param_group in enumerate(self.optimizer.param_groups):
            rows.append((epoch, MODEL_GROUP, f"lr_{index}", float(param_group["lr"])))
        dead = self._dead_fractions()
        state = self.model.state_dict()
        states = {g: {k: state[k].detach().cpu() for k in keys} for g, keys in self.group_keys.items()}
        previous_epoch = self.writer.epochs[-1] if self.writer.epochs else None
        reader = RunDir(self.writer.store) if previous_epoch is not None else None
        for group in self.groups:
            steps = self._steps
            rows.append((epoch, group, "grad_norm", self._grad_sum[group] / steps if steps else NAN))
            rows.append((epoch, group, "grad_norm_ratio", self._ratio_sum[group] / steps if steps else NAN))
            ratio = NAN
            if reader is not None:
                ratio = update_ratio(states[group], reader.read_group(previous_epoch, group))
            rows.append((epoch, group, "update_ratio", ratio))
            rows.append((epoch, group, "dead_fraction", dead.get(group, NAN)))
        self.writer.write_epoch(epoch, states, source="recorder")
        del states, state
        self.writer.add_metrics(rows + _given_rows(epoch, metrics or {}))
        self._reset_epoch()
        return True

    def record_metrics(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Add whole-model figures for an epoch already saved (a framework that evaluates after the
        epoch's end hook); a later value of a metric replaces an earlier one."""
        if epoch not in self.writer.epochs:
            raise SpecError(f"Recorder.record_metrics: epoch {epoch} was not saved; recorded epochs: {self.writer.epochs}")
        self.writer.add_metrics(_given_rows(epoch, metrics))

    def _validation_rows(self, epoch: int) -> list[tuple[int, str, str, float]]:
        rows = []
        with preserved_modes(self.model):
            results = self.evaluate(self.model, self.val_split)
        for name, value in results.items():
            number = as_scalar(value)
            if number is not None:
                rows.append((epoch, MODEL_GROUP, f"val_{name}", number))
            elif isinstance(value, torch.Tensor) and value.dim() == 2 and name.endswith("_confusion"):
                current = value.detach().cpu()
                stability = confusion_stability(current, self._previous_confusions.get(name))
                self._previous_confusions[name] = current
                rows.append((epoch, MODEL_GROUP, f"val_{name}_stability", stability))
        return rows

    def _dead_fractions(self) -> dict[str, float]:
        first = self.dead_inputs
        if first is None and self.spec.batches is not None and self.val_split is not None:
            first = next(iter(self.spec.batch_iterator()(self.val_split)), None)
        if first is None:
            return {}
        return dead_fractions(self.model, self.spec, first, self.groups)  # call_model moves it to the device
