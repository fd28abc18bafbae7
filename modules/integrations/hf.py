"""``SweetspotCallback`` for the Hugging Face ``Trainer``: records a run directory while training.

    from sweetspot.integrations.hf import SweetspotCallback

    trainer = Trainer(model=model, args=TrainingArguments(..., eval_strategy="epoch"),
                      callbacks=[SweetspotCallback("runs/bert", "sweetspot.yaml", every=1)], ...)
    trainer.train()

At the end of every ``every``-th epoch it saves each group's weights through the ``Recorder``
(gradient norms of every optimizer step, update ratios, dead units, learning rates), and the
Trainer's own figures under the Trainer's names: ``eval_*`` from its evaluation, ``loss`` as
``train_loss`` and ``learning_rate`` (the last values logged up to the epoch's end), the same
names ``sweetspot import`` gives a Trainer's checkpoints.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback

from modules.recorder import Recorder
from modules.rundir.run_dir import RunLocation
from modules.rundir.run_spec import SpecLike, as_spec

#: Evaluation figures that describe the evaluation's speed, not the model.
BOOKKEEPING = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch")
RENAMED = {"loss": "train_loss"}


class SweetspotCallback(TrainerCallback):
    """Record each group's weights and the Trainer's metrics every ``every`` epochs into ``run``.

    ``spec`` is a ``Spec`` or a sweetspot.yaml path (only its groups are used: the Trainer
    evaluates); ``dead_inputs`` is a batch of model inputs (a dict such as ``{"input_ids": ...}``)
    for the dead-unit fraction, default the first evaluation batch without its labels.
    """

    def __init__(self, run: RunLocation | os.PathLike[str], spec: SpecLike, every: int = 1, dead_inputs: Any = None) -> None:
        self.run, self.spec, self.every, self.dead_inputs = run, as_spec(spec)[0], every, dead_inputs
        self.recorder: Recorder | None = None
        self._logged: dict[str, float] = {}
        self._saved: tuple[int, int] | None = None  # (epoch, global step) of the last saved epoch

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs) -> None:
        if not state.is_world_process_zero:
            return
        self.recorder = Recorder(
            self.run, self.spec, model, optimizer, every=self.every, validate=False,
            dead_inputs=self.dead_inputs if self.dead_inputs is not None else _first_inputs(kwargs.get("eval_dataloader")),
        )

    def on_pre_optimizer_step(self, args, state, control, **kwargs) -> None:
        if self.recorder is not None:
            self.recorder.after_backward()

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        values = {RENAMED.get(k, k): v for k, v in (logs or {}).items() if k in ("loss", "learning_rate", "grad_norm")}
        if self.recorder is None or not values:
            return
        if self._saved is not None and self._saved[1] == state.global_step:
            self.recorder.record_metrics(self._saved[0], values)  # logged after the epoch's end hook
        else:
            self._logged.update(values)

    def on_epoch_end(self, args, state, control, **kwargs) -> None:
        if self.recorder is None:
            return
        epoch = round(state.epoch)
        if self.recorder.end_epoch(epoch, self._logged):
            self._saved = (epoch, state.global_step)
        self._logged = {}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs) -> None:
        if self.recorder is None or self._saved is None or self._saved[1] != state.global_step:
            return
        self.recorder.record_metrics(
            self._saved[0], {k: v for k, v in (metrics or {}).items() if k not in BOOKKEEPING}
        )


def _first_inputs(loader: Any) -> Any:
    """The model inputs of the loader's first batch (labels removed), or None."""
    if loader is None:
        return None
    batch = next(iter(loader), None)
    if not isinstance(batch, dict):
        return None
    return {k: v for k, v in batch.items() if k not in ("labels", "label", "label_ids")}
