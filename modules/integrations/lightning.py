"""``SweetspotCallback`` for PyTorch Lightning: records a run directory while training.

    from sweetspot.integrations.lightning import SweetspotCallback

    trainer = L.Trainer(max_epochs=30, callbacks=[SweetspotCallback("runs/x", "sweetspot.yaml", module="model")])
    trainer.fit(lit_module, train_loader, val_loader)

At the end of every ``every``-th training epoch (after that epoch's validation) it saves each
group's weights through the ``Recorder`` (gradient norms of every backward pass, update ratios,
dead units, learning rates, the mean training-step loss as ``train_loss``) and every scalar the
module logged (``trainer.callback_metrics``: ``val_loss``, ...) under its logged name. Epochs keep
Lightning's numbering (0 is the first), as in its checkpoint names.
"""

from __future__ import annotations

import os
from typing import Any

try:  # the unified package's namespace first; the standalone pytorch_lightning otherwise
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - only where just pytorch_lightning is installed
    from pytorch_lightning import Callback

from modules.errors import SpecError
from modules.recorder import Recorder
from modules.rundir.run_dir import RunLocation
from modules.rundir.run_spec import SpecLike, as_spec


class SweetspotCallback(Callback):
    """Record each group's weights and the logged metrics every ``every`` epochs into ``run``.

    ``spec`` is a ``Spec`` or a sweetspot.yaml path whose groups name the recorded module's
    parameters; ``module`` records one attribute of the LightningModule (``"model"``: the keys
    then have no ``model.`` prefix, as ``sweetspot import --strip-prefix model.`` gives them);
    ``dead_inputs`` is a batch of model inputs for the dead-unit fraction (default: none measured).
    """

    def __init__(
        self, run: RunLocation | os.PathLike[str], spec: SpecLike, every: int = 1, module: str | None = None,
        dead_inputs: Any = None,
    ) -> None:
        self.run, self.spec, self.every = run, as_spec(spec)[0], every
        self.module, self.dead_inputs = module, dead_inputs
        self.recorder: Recorder | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        model = pl_module
        if self.module is not None:
            model = getattr(pl_module, self.module, None)
            if model is None:
                raise SpecError(
                    f"SweetspotCallback(module={self.module!r}): {type(pl_module).__name__} has no attribute"
                    f" {self.module!r}; name the attribute that holds the model, or None to record the whole module"
                )
        self.recorder = Recorder(
            self.run, self.spec, model, trainer.optimizers[0], every=1, validate=False, dead_inputs=self.dead_inputs
        )

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.recorder is not None:
            self.recorder.after_backward()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if self.recorder is not None and loss is not None:
            self.recorder.add_train_loss(float(loss))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.recorder is None:
            return
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every != 0:
            self.recorder.discard_epoch()
            return
        self.recorder.end_epoch(epoch, dict(trainer.callback_metrics))
