"""update_bn: recomputes BatchNorm statistics exactly and changes nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from modules.combine.batchnorm import has_batchnorm, stale_batchnorm, update_bn
from modules.errors import CombineError
from modules.rundir.run_dir import RunDir
from tests.modules import _tiny


def test_update_bn_recomputes_running_stats_and_nothing_else(tmp_path: Path) -> None:
    run = RunDir(_tiny.record_run(tmp_path / "run", epochs=2))
    model = _tiny.build_model()
    model.load_state_dict(run.state_dict(2))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = _tiny.load_data()["train"]
    seen = update_bn(model, _tiny.batches(train, size=64))
    assert seen == 4
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"encoder.1.running_mean", "encoder.1.running_var"}
    # by hand: momentum None gives the plain average over the 4 equal batches of each batch's
    # mean and unbiased variance of the first Linear's outputs
    with torch.no_grad():
        pre = train[0] @ before["encoder.0.weight"].T + before["encoder.0.bias"]
    chunks = pre.split(64)
    hand_mean = sum(c.mean(0) for c in chunks) / 4
    hand_var = sum(c.var(0, unbiased=True) for c in chunks) / 4
    torch.testing.assert_close(after["encoder.1.running_mean"], hand_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after["encoder.1.running_var"], hand_var, rtol=1e-5, atol=1e-6)
    # the integer buffer keeps the checkpoint's count (taken from the source epoch, not recomputed)
    assert int(after["encoder.1.num_batches_tracked"]) == int(before["encoder.1.num_batches_tracked"]) > 4
    # modes and momenta restored
    assert not model.training and not model.encoder[1].training
    assert model.encoder[1].momentum == 0.1


def test_no_batchnorm_is_a_no_op_and_empty_batches_are_an_error() -> None:
    plain = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    assert not has_batchnorm(plain)
    assert update_bn(plain, []) == 0
    with pytest.raises(CombineError, match="no batches"):
        update_bn(_tiny.build_model(), [], source="split 'train'")


class TwoBN(nn.Module):
    """a (Linear + BN) -> b (Linear + BN) -> head: b's statistics depend on a's weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(self.a(x)))


def _key_groups(model: nn.Module) -> dict[str, str]:
    return {k: k.split(".")[0] for k in model.state_dict()}


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ({"a": (4,), "b": (4,), "head": (4,)}, []),  # one checkpoint: statistics already fit
        ({"a": (4,), "b": (4,), "head": (2,)}, []),  # only the head (after both BNs) crossed
        ({"a": (2,), "b": (4,), "head": (4,)}, ["b.1"]),  # b fed by a from another epoch
        ({"a": (4,), "b": (2,), "head": (2,)}, ["b.1"]),  # b crossed against its upstream a
        ({"a": (2, 4), "b": (2, 4), "head": (2, 4)}, ["a.1", "b.1"]),  # averages
        ({"a": (4,), "b": (2, 4), "head": (4,)}, ["b.1"]),  # only b averaged
    ],
)
def test_stale_batchnorm_only_averaged_or_crossed(sources: dict, expected: list[str]) -> None:
    model = TwoBN()
    assert stale_batchnorm(model, _key_groups(model), sources, torch.randn(5, 4)) == expected


def test_update_bn_of_chosen_layers_leaves_the_others_bit_exact() -> None:
    model = TwoBN()
    with torch.no_grad():  # statistics as a trained checkpoint would hold them
        for layer in (model.a[1], model.b[1]):
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.5, 2)
            layer.num_batches_tracked.fill_(77)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    assert update_bn(model, [x[:32], x[32:]], layers=["b.1"]) == 2
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"b.1.running_mean", "b.1.running_var"}
    # by hand: b's BN input with a's BN in eval mode (its stored statistics), averaged over the 2 batches
    with torch.no_grad():
        pre = [model.b[0](model.a(part)) for part in (x[:32], x[32:])]
    torch.testing.assert_close(after["b.1.running_mean"], sum(p.mean(0) for p in pre) / 2)
    torch.testing.assert_close(after["b.1.running_var"], sum(p.var(0) for p in pre) / 2)
    assert not model.training and model.b[1].momentum == 0.1
