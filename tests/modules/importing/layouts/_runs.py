"""Real tiny training runs written by the real libraries (nothing downloaded), for the layout and
callback tests: the HF ``Trainer`` on a BERT built from a config, Lightning's ``Trainer`` with its
CSVLogger, and ``torch.distributed.checkpoint.save``."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from modules.spec.schema import Spec, parse_spec

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BERT_SPEC = {
    "name": "bert-tiny",
    "model": "tests.modules.importing.layouts._runs:build_bert",
    "groups": {
        "embeddings": ["bert.embeddings."], "encoder": ["bert.encoder."], "pooler": ["bert.pooler."],
        "classifier": ["classifier."],
    },
}
MLP_SPEC = {
    "name": "mlp",
    "model": "tests.modules.importing.layouts._runs:Mlp",
    "groups": {"encoder": ["encoder."], "head": ["head."]},
}


def bert_spec() -> Spec:
    return parse_spec(BERT_SPEC, "bert spec")


def mlp_spec() -> Spec:
    return parse_spec(MLP_SPEC, "mlp spec")


def build_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=2,
    )
    return BertForSequenceClassification(config)


class Tokens(torch.utils.data.Dataset):
    """Token sequences labelled by whether their first token is in the upper half of the vocabulary."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 40, (n, 8), generator=generator)
        self.y = (self.x[:, 0] >= 20).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def train_bert(out: Path, epochs: int = 5, callbacks: list | None = None, **overrides) -> Path:
    """Train the tiny BERT with the HF Trainer, saving and evaluating every epoch (2 steps each)."""
    from transformers import Trainer, TrainingArguments

    settings = {
        "output_dir": str(out), "num_train_epochs": epochs, "per_device_train_batch_size": 16,
        "eval_strategy": "epoch", "save_strategy": "epoch", "logging_strategy": "epoch", "report_to": [],
        "use_cpu": True, "disable_tqdm": True, "seed": 0, "learning_rate": 1e-3,
    }
    settings.update(overrides)
    trainer = Trainer(
        model=build_bert(), args=TrainingArguments(**settings), train_dataset=Tokens(32, 0),
        eval_dataset=Tokens(16, 1), callbacks=callbacks,
    )
    trainer.train()
    return out


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)).squeeze(1)


def regression_loaders():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    y = x.sum(1) + 0.1 * torch.randn(64, generator=generator)
    data = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(data, batch_size=16), torch.utils.data.DataLoader(data, batch_size=32)


def lightning_module():
    import lightning as L

    class LitMlp(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters({"lr": 0.05})
            torch.manual_seed(0)
            self.model = Mlp()

        def training_step(self, batch, index):
            x, y = batch
            loss = (self.model(x) - y).pow(2).mean()
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, index):
            x, y = batch
            self.log("val_loss", (self.model(x) - y).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return LitMlp()


def train_lightning(root: Path, epochs: int = 5, callbacks: list | None = None, checkpoints: bool = True) -> Path:
    """Fit the MLP with Lightning's Trainer, CSVLogger and a ModelCheckpoint keeping every epoch."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    train, val = regression_loaders()
    every = [ModelCheckpoint(save_top_k=-1, save_last=True)] if checkpoints else []
    trainer = L.Trainer(
        max_epochs=epochs, default_root_dir=root, logger=CSVLogger(root), callbacks=every + (callbacks or []),
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, accelerator="cpu",
        enable_checkpointing=checkpoints,
    )
    trainer.fit(lightning_module(), train, val)
    return root


def write_dcp_run(root: Path, steps=(10, 20, 30)) -> dict[int, dict[str, torch.Tensor]]:
    """Train the MLP with Adam and ``dcp.save`` model and optimizer at each step; return the model states."""
    import torch.distributed.checkpoint as dcp

    torch.manual_seed(0)
    model = Mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train, _ = regression_loaders()
    saved, step = {}, 0
    while step < max(steps):
        for x, y in train:
            loss = (model(x) - y).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step in steps:
                dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=root / f"step-{step}")
                saved[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return saved


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    def raw(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous().reshape(-1).view(torch.uint8)

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(raw(a), raw(b))
