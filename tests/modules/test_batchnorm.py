"""update_bn: recomputes BatchNorm statistics exactly and changes nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from modules.batchnorm import has_batchnorm, update_bn
from modules.errors import CombineError
from modules.rundir import RunDir
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
    assert changed == {"encoder.1.running_mean", "encoder.1.running_var", "encoder.1.num_batches_tracked"}
    # by hand: momentum None gives the plain average over the 4 equal batches of each batch's
    # mean and unbiased variance of the first Linear's outputs
    with torch.no_grad():
        pre = train[0] @ before["encoder.0.weight"].T + before["encoder.0.bias"]
    chunks = pre.split(64)
    hand_mean = sum(c.mean(0) for c in chunks) / 4
    hand_var = sum(c.var(0, unbiased=True) for c in chunks) / 4
    torch.testing.assert_close(after["encoder.1.running_mean"], hand_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after["encoder.1.running_var"], hand_var, rtol=1e-5, atol=1e-6)
    assert int(after["encoder.1.num_batches_tracked"]) == 4
    # modes and momenta restored
    assert not model.training and not model.encoder[1].training
    assert model.encoder[1].momentum == 0.1


def test_no_batchnorm_is_a_no_op_and_empty_batches_are_an_error() -> None:
    plain = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    assert not has_batchnorm(plain)
    assert update_bn(plain, []) == 0
    with pytest.raises(CombineError, match="no batches"):
        update_bn(_tiny.build_model(), [], source="split 'train'")
