"""Import of seed-layout checkpoint folders: bit-exact copies, safe loading, every bad input."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from modules.errors import CheckpointImportError, SpecError, UnsafeCheckpointError
from modules.importing.importer import import_checkpoints
from modules.rundir.run_dir import RunDir
from modules.spec.schema import load_spec, parse_spec
from rayjobs import import_run
from tests.modules.importing.test_checkpoint_io import pickle_calls

SPEC_DATA = {
    "name": "tiny",
    "model": "tests.modules.importing.test_importer:TinyNet",
    "groups": {"backbone": ["backbone."], "head": ["head."], "embed": ["embed*"]},
}


class TinyNet(nn.Module):
    """A small model with a BatchNorm (int64 buffer), an fp16 and a bf16 buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.embed.register_buffer("half_table", torch.linspace(-1.0, 1.0, 8).to(torch.float16))
        self.backbone = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 3)
        self.head.register_buffer("scale", torch.linspace(0.1, 2.0, 3).to(torch.bfloat16))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.embed(tokens))) * self.head.scale.float()


def _train_states(epochs: list[int]) -> dict[int, tuple[dict[str, torch.Tensor], dict]]:
    """Train TinyNet for real and return (state dict, optimizer state) after each listed epoch."""
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    tokens = torch.randint(0, 10, (32,))
    target = torch.randn(32, 3)
    out = {}
    for epoch in range(1, max(epochs) + 1):
        loss = ((model(tokens) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.head.scale.add_(0.125)
            model.embed.half_table.mul_(-1.5)
        if epoch in epochs:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            out[epoch] = (state, optimizer.state_dict())
    return out


def write_seed_run(folder: Path, epochs: list[int] | None = None, metrics: str | None = None) -> dict[int, dict[str, torch.Tensor]]:
    """Write checkpoint_epoch_<N>.pt files in the seed's layouts; return what was saved."""
    epochs = epochs or [2, 4, 6, 8]
    folder.mkdir(parents=True, exist_ok=True)
    saved = {}
    layouts = ["plain", "model_state_dict", "state_dict", "model"]
    for index, (epoch, (state, optim)) in enumerate(_train_states(epochs).items()):
        layout = layouts[index % len(layouts)]
        payload = state if layout == "plain" else {layout: state, "optimizer_state_dict": optim, "epoch": epoch}
        torch.save(payload, folder / f"checkpoint_epoch_{epoch}.pt")
        saved[epoch] = state
    if metrics is not None:
        (folder / ("metrics.csv" if metrics.startswith("epoch") else "metrics.jsonl")).write_text(metrics)
    return saved


def _spec(tmp_path: Path):
    return parse_spec(SPEC_DATA, "test spec")


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (NaN-safe, unlike torch.equal on the values)."""
    as_bytes = [t.contiguous().reshape(-1).view(torch.uint8) for t in (a, b)]
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(*as_bytes)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f"{out.name}.partial-*"))


def test_import_is_bit_exact_for_plain_and_wrapped_checkpoints(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    saved = write_seed_run(source)
    before = _digests(source)
    out = tmp_path / "run"
    report = import_checkpoints(source, _spec(tmp_path), out, progress=False)

    assert report.epochs == [2, 4, 6, 8] and report.skipped == []
    run = RunDir(out)
    assert run.epochs == [2, 4, 6, 8]
    assert run.groups == ["backbone", "head", "embed"]
    assert set(run.group_keys("backbone")) == {k for k in saved[2] if k.startswith("backbone.")}
    assert "backbone.1.num_batches_tracked" in run.group_keys("backbone")
    for epoch, state in saved.items():
        stored = run.state_dict(epoch)
        assert sorted(stored) == sorted(state)
        for key, tensor in state.items():
            assert _same_bits(stored[key], tensor), (epoch, key)
        assert run.epoch_entry(epoch).source == f"checkpoint_epoch_{epoch}.pt"
    assert run.read_group(6, "head")["head.scale"].dtype == torch.bfloat16
    assert run.read_group(6, "embed")["embed.half_table"].dtype == torch.float16
    assert run.read_group(6, "backbone")["backbone.1.num_batches_tracked"].item() == 6
    assert not torch.equal(saved[2]["head.weight"], saved[8]["head.weight"])
    assert run.verify() == []
    assert load_spec(run.spec_path()) == _spec(tmp_path)
    assert _digests(source) == before, "the import modified its input files"
    assert not list(tmp_path.glob("run.partial-*"))


def test_safetensors_checkpoints_import_and_mix_with_pt(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    saved = write_seed_run(source, epochs=[1, 2])
    (source / "checkpoint_epoch_2.pt").unlink()
    save_file(saved[2], source / "checkpoint_epoch_2.safetensors")
    run = RunDir(import_checkpoints(source, _spec(tmp_path), tmp_path / "run", progress=False).out)
    assert run.epoch_entry(2).source == "checkpoint_epoch_2.safetensors"
    for key, tensor in saved[2].items():
        assert _same_bits(run.state_dict(2)[key], tensor), key


def test_import_into_existing_empty_folder(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1])
    out = tmp_path / "run"
    out.mkdir()
    import_checkpoints(source, _spec(tmp_path), out, progress=False)
    assert RunDir(out).epochs == [1]


def test_metrics_csv_becomes_long_form_and_problems_are_reported(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    csv = (
        "epoch,loss,head/acc,backbone/grad_norm,unknown/x\n"
        "1,0.9,0.5,1.5,7\n"
        "2,0.8,oops,1.25,\n"
        "3,,0.75,1.0,9\n"
    )
    write_seed_run(source, epochs=[2], metrics=csv)
    out = tmp_path / "run"
    report = import_checkpoints(source, _spec(tmp_path), out, progress=False)

    frame = RunDir(out).metrics()
    got = {(int(r.epoch), r.group, r.metric): r.value for r in frame.itertuples()}
    expected = {
        (1, "model", "loss"): 0.9, (2, "model", "loss"): 0.8, (3, "model", "loss"): math.nan,
        (1, "head", "acc"): 0.5, (2, "head", "acc"): math.nan, (3, "head", "acc"): 0.75,
        (1, "backbone", "grad_norm"): 1.5, (2, "backbone", "grad_norm"): 1.25, (3, "backbone", "grad_norm"): 1.0,
        (1, "model", "unknown/x"): 7.0, (2, "model", "unknown/x"): math.nan, (3, "model", "unknown/x"): 9.0,
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert (math.isnan(got[key]) and math.isnan(value)) or got[key] == value, key
    problems = {(p.column, p.kind): p for p in report.metric_problems}
    assert set(problems) == {("head/acc", "non-numeric"), ("loss", "missing"), ("unknown/x", "missing")}
    assert problems["head/acc", "non-numeric"].epochs == [2]
    assert problems["head/acc", "non-numeric"].examples == ["oops"]
    assert problems["loss", "missing"].epochs == [3]
    assert "metrics.csv" in problems["loss", "missing"].file
    assert "head/acc" in report.summary() and "oops" in report.summary()
    # rows for epochs 1 and 3 have no checkpoint (only epoch 2 was saved): said once
    assert report.metric_epochs_without_checkpoint == [1, 3]
    assert report.summary().count("without a checkpoint") == 1
    assert "rows for 2 epochs without a checkpoint (1, 3) are stored but not analysed" in report.summary()
    assert report.metric_near_groups == []  # 'unknown' is like no group


def test_metrics_column_with_a_misspelt_group_is_reported(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    csv = "epoch,backbon/grad_norm,val/loss,head/acc,heads/x\n2,1.5,0.5,0.25,1\n4,1.25,0.4,0.5,2\n"
    write_seed_run(source, epochs=[2, 4], metrics=csv)
    report = import_checkpoints(source, _spec(tmp_path), tmp_path / "run", progress=False)
    # 'backbon' and 'heads' are near misses of groups; 'val' is like no group and stays a model metric
    assert report.metric_near_groups == [("backbon/grad_norm", "backbone"), ("heads/x", "head")]
    summary = report.summary()
    assert "column 'backbon/grad_norm': 'backbon' is not a group of the spec but looks like group 'backbone'" in summary
    assert "Rename the column to 'backbone/grad_norm'" in summary
    assert "val/loss" not in summary and "without a checkpoint" not in summary
    frame = RunDir(tmp_path / "run").metrics()
    stored = {(r.group, r.metric) for r in frame.itertuples()}
    assert stored == {("model", "backbon/grad_norm"), ("model", "val/loss"), ("head", "acc"), ("model", "heads/x")}


def test_metrics_jsonl_with_null_and_text(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    lines = [
        {"epoch": 2, "val_loss": 0.5, "embed/norm": 3},
        {"epoch": 4, "val_loss": None, "embed/norm": "high"},
        {"epoch": 6, "embed/norm": 2.5},
    ]
    write_seed_run(source, epochs=[2], metrics="\n".join(json.dumps(x) for x in lines) + "\n")
    report = import_checkpoints(source, _spec(tmp_path), tmp_path / "run", progress=False)
    frame = RunDir(tmp_path / "run").metrics()
    norm = frame[(frame.group == "embed") & (frame.metric == "norm")].set_index("epoch")["value"]
    assert norm[2] == 3.0 and math.isnan(norm[4]) and norm[6] == 2.5
    kinds = {(p.column, p.kind): p.epochs for p in report.metric_problems}
    assert kinds == {("val_loss", "missing"): [4, 6], ("embed/norm", "non-numeric"): [4]}


def test_crafted_checkpoint_is_refused_and_its_code_never_runs(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1, 2])
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model_state_dict": {"w": torch.ones(2)}, "extra": Payload()}, source / "checkpoint_epoch_2.pt")
    out = tmp_path / "run"
    with pytest.raises(UnsafeCheckpointError, match="checkpoint_epoch_2.pt") as caught:
        import_checkpoints(source, _spec(tmp_path), out, progress=False)
    assert "GLOBAL io.open" in str(caught.value)
    assert not marker.exists()
    _assert_nothing_written(out)
    with pytest.raises(UnsafeCheckpointError, match=r"checkpoint_epoch_2\.pt.*GLOBAL io\.open"):  # not skipped as bad
        import_checkpoints(source, _spec(tmp_path), out, skip_bad=True, progress=False)
    assert not marker.exists()
    # The file really is live: an unsafe load would call open (read without unpickling).
    assert "io open" in pickle_calls(source / "checkpoint_epoch_2.pt")


def test_truncated_file_is_an_error_or_skipped_with_skip_bad(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1, 2, 3])
    bad = source / "checkpoint_epoch_2.pt"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    out = tmp_path / "run"
    with pytest.raises(CheckpointImportError, match="checkpoint_epoch_2.pt.*--skip-bad"):
        import_checkpoints(source, _spec(tmp_path), out, progress=False)
    _assert_nothing_written(out)

    report = import_checkpoints(source, _spec(tmp_path), out, skip_bad=True, progress=False)
    assert report.epochs == [1, 3]
    assert [Path(s.path).name for s in report.skipped] == ["checkpoint_epoch_2.pt"]
    assert "truncated or corrupt" in report.skipped[0].reason
    # the listing of skipped files does not advise --skip-bad, which was passed
    assert "--skip-bad" not in report.skipped[0].reason and "--skip-bad" not in report.summary()
    assert report.summary().count("skipped") == 1
    assert RunDir(out).epochs == [1, 3]


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 100], ids=["empty", "garbage"])
def test_corrupt_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1])
    (source / "checkpoint_epoch_5.pt").write_bytes(content)
    out = tmp_path / "run"
    with pytest.raises(CheckpointImportError, match="checkpoint_epoch_5.pt is truncated or corrupt") as caught:
        import_checkpoints(source, _spec(tmp_path), out, progress=False)
    assert not isinstance(caught.value, UnsafeCheckpointError)
    _assert_nothing_written(out)


def test_all_files_bad_with_skip_bad_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    source.mkdir()
    (source / "checkpoint_epoch_1.pt").write_bytes(b"")
    with pytest.raises(CheckpointImportError, match="no readable checkpoint"):
        import_checkpoints(source, _spec(tmp_path), tmp_path / "run", skip_bad=True, progress=False)
    _assert_nothing_written(tmp_path / "run")


def test_missing_directory_and_no_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(CheckpointImportError, match="nowhere is not a folder"):
        import_checkpoints(tmp_path / "nowhere", _spec(tmp_path), out, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a checkpoint")
    (empty / "model_epoch_1.pt").write_bytes(b"x")
    with pytest.raises(CheckpointImportError, match="holds no checkpoints in a layout sweetspot reads") as caught:
        import_checkpoints(empty, _spec(tmp_path), out, progress=False)
    message = str(caught.value)
    assert "holds no checkpoints in a layout sweetspot reads. It looked for:" in message
    for line in ("seed: checkpoint_epoch_<N>.pt", "hf-trainer: checkpoint-<step>/", "lightning: epoch=<e>-step=<s>.ckpt",
                 "dcp: one subfolder per checkpoint", "pattern: files matching --pattern"):
        assert f"\n  {line}" in message
    assert "It found files ['model_epoch_1.pt', 'notes.txt']" in message
    assert "PEFT adapters" in message and "DeepSpeed ZeRO" in message
    _assert_nothing_written(out)


def test_keys_missing_from_one_epoch_name_epoch_keys_and_reference(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    saved = write_seed_run(source, epochs=[2, 4, 6])
    state = dict(saved[4])
    del state["head.bias"]
    torch.save(state, source / "checkpoint_epoch_4.pt")
    out = tmp_path / "run"
    with pytest.raises(CheckpointImportError, match=r"checkpoint_epoch_4\.pt \(epoch 4\) lacks 1 keys") as caught:
        import_checkpoints(source, _spec(tmp_path), out, progress=False)
    message = str(caught.value)
    assert "checkpoint_epoch_4.pt (epoch 4) lacks 1 keys ['head.bias']" in message
    assert "checkpoint_epoch_2.pt (epoch 2, the reference)" in message
    _assert_nothing_written(out)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t[:, :8].contiguous(), "[3, 8] float32 but [3, 16] float32"),
        (lambda t: t.double(), "[3, 16] float64 but [3, 16] float32"),
    ],
    ids=["shape", "dtype"],
)
def test_shape_or_dtype_change_between_epochs(tmp_path: Path, change, expected: str) -> None:
    source = tmp_path / "seed"
    saved = write_seed_run(source, epochs=[2, 4])
    state = dict(saved[4])
    state["head.weight"] = change(state["head.weight"])
    torch.save(state, source / "checkpoint_epoch_4.pt")
    out = tmp_path / "run"
    with pytest.raises(CheckpointImportError, match="checkpoint_epoch_4.pt") as caught:
        import_checkpoints(source, _spec(tmp_path), out, progress=False)
    assert f"key 'head.weight' is {expected}" in str(caught.value)
    _assert_nothing_written(out)


def test_key_matching_no_group_is_a_spec_error(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1])
    spec = parse_spec({**SPEC_DATA, "groups": {"backbone": ["backbone."], "embed": ["embed."]}})
    out = tmp_path / "run"
    with pytest.raises(SpecError, match=r"checkpoint_epoch_1.pt: 'head.weight', 'head.bias', 'head.scale' \(3 keys\) match no group"):
        import_checkpoints(source, spec, out, progress=False)
    _assert_nothing_written(out)


def test_spec_group_matching_no_key_is_a_spec_error(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1])
    spec = parse_spec({**SPEC_DATA, "groups": {**SPEC_DATA["groups"], "decoder": ["decoder."]}})
    with pytest.raises(SpecError, match=r"\['decoder'\] match no key"):
        import_checkpoints(source, spec, tmp_path / "run", progress=False)
    _assert_nothing_written(tmp_path / "run")


@pytest.mark.parametrize(
    ("other", "pattern"),
    [("checkpoint_epoch_04.pt", "checkpoint_epoch_04.pt"), ("checkpoint_epoch_4.safetensors", "checkpoint_epoch_4.safetensors")],
    ids=["zero-padded", "pt-and-safetensors"],
)
def test_duplicate_epochs_are_an_error(tmp_path: Path, other: str, pattern: str) -> None:
    source = tmp_path / "seed"
    saved = write_seed_run(source, epochs=[2, 4])
    if other.endswith(".safetensors"):
        save_file(saved[4], source / other)
    else:
        torch.save(saved[4], source / other)
    out = tmp_path / "run"
    with pytest.raises(CheckpointImportError, match="same epoch") as caught:
        import_checkpoints(source, _spec(tmp_path), out, progress=False)
    assert "epoch 4" in str(caught.value) and pattern in str(caught.value) and "checkpoint_epoch_4.pt" in str(caught.value)
    _assert_nothing_written(out)


def test_out_that_is_not_empty_is_refused_and_kept(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1])
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointImportError, match="already exists and is not an empty folder"):
        import_checkpoints(source, _spec(tmp_path), out, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("loss\n0.5\n", "no 'epoch' column"),
        ("epoch,loss\n1,0.5\n1,0.4\n", r"more than one row for epochs \[1\]"),
        ("epoch,loss\nfirst,0.5\n", "epoch 'first' is not a non-negative whole number"),
        ("epoch,loss,model/loss\n1,0.5,0.5\n", "both give metric 'loss'"),
    ],
    ids=["no-epoch", "duplicate-rows", "bad-epoch", "same-metric-twice"],
)
def test_bad_metrics_file_is_an_error_naming_it(tmp_path: Path, text: str, pattern: str) -> None:
    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1])
    (source / "metrics.csv").write_text(text)
    with pytest.raises(CheckpointImportError, match=pattern) as caught:
        import_checkpoints(source, _spec(tmp_path), tmp_path / "run", progress=False)
    assert "metrics.csv" in str(caught.value)
    _assert_nothing_written(tmp_path / "run")


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1], metrics='{"epoch": 1, "loss": 0.5}\n{"epoch": 2, loss}\n')
    with pytest.raises(CheckpointImportError, match="metrics.jsonl line 2 is not valid JSON"):
        import_checkpoints(source, _spec(tmp_path), tmp_path / "run", progress=False)
    _assert_nothing_written(tmp_path / "run")


def _write_spec_yaml(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "sweetspot.yaml"
    path.write_text(yaml.safe_dump(SPEC_DATA))
    return path


def test_cli_imports_and_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1, 2], metrics="epoch,loss\n1,0.5\n2,x\n")
    (source / "checkpoint_epoch_3.pt").write_bytes(b"PK\x03\x04broken")
    spec = _write_spec_yaml(tmp_path)
    out = tmp_path / "run"
    assert import_run.main(["--from", str(source), "--spec", str(spec), "--out", str(out), "--quiet"]) == 2
    assert "checkpoint_epoch_3.pt" in capsys.readouterr().err
    _assert_nothing_written(out)

    code = import_run.main(["--from", str(source), "--spec", str(spec), "--out", str(out), "--skip-bad", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "imported 2 epochs [1, 2]" in printed
    assert "skipped" in printed and "checkpoint_epoch_3.pt" in printed and "--skip-bad" not in printed
    assert "'loss' has non-numeric values at epochs [2]" in printed
    assert RunDir(out).epochs == [1, 2]


def test_cli_missing_spec_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1])
    code = import_run.main(["--from", str(source), "--spec", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")])
    assert code == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


def test_legacy_format_checkpoint_is_re_read_and_bit_exact(tmp_path: Path) -> None:
    source = tmp_path / "seed"
    saved = write_seed_run(source, epochs=[1, 2])
    torch.save({"state_dict": saved[2], "epoch": 2}, source / "checkpoint_epoch_2.pt", _use_new_zipfile_serialization=False)
    run = RunDir(import_checkpoints(source, _spec(tmp_path), tmp_path / "run", progress=False).out)
    for epoch in (1, 2):
        stored = run.state_dict(epoch)
        assert all(_same_bits(stored[k], t) for k, t in saved[epoch].items()), epoch


def test_on_the_fly_import_advises_moving_a_bad_file_out(tmp_path: Path) -> None:
    from modules.importing.importer import open_run

    source = tmp_path / "seed"
    write_seed_run(source, epochs=[1, 2])
    (source / "checkpoint_epoch_3.pt").write_bytes(b"")
    with pytest.raises(CheckpointImportError, match="checkpoint_epoch_3.pt is truncated or corrupt") as caught:
        open_run(source, _spec(tmp_path), tmp_path / "scratch", progress=False)
    text = str(caught.value)
    assert "checkpoint_epoch_3.pt is truncated or corrupt" in text
    assert f"restore it from a backup, or move it out of {source}" in text
    assert "pass --skip-bad" not in text  # analyze and evaluate have no --skip-bad
