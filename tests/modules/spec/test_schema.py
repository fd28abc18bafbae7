"""The module-group spec: each validation error names what is wrong; matching and round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modules.errors import SpecError
from modules.spec.schema import dump_spec, load_spec, parse_spec, resolve_callable

BASE = {
    "name": "demo",
    "model": "torch.nn:Linear",
    "data": "pkg.data:splits",
    "evaluate": "pkg.eval:evaluate",
    "model_args": {"in_features": 3, "out_features": 2},
    "groups": {
        "backbone": ["backbone."],
        "heads": ["heads.emotion", "heads.bentham.*"],
        "wrapper_a": ["wrap*.a"],
    },
    "couplings": [{"name": "A", "groups": ["backbone", "heads"]}],
    "group_metrics": {"heads": [{"metric": "emotion_f1", "mode": "max"}]},
}


def _with(**changes: object) -> dict:
    return {**BASE, **changes}


def test_valid_spec_and_matching_rules() -> None:
    spec = parse_spec(BASE)
    assert spec.group_of("backbone.layer.0.weight") == "backbone"
    assert spec.group_of("heads.emotion.weight") == "heads"  # plain name: itself or a dotted child
    assert spec.group_of("heads.emotion") == "heads"
    assert spec.group_of("heads.bentham.fc.bias") == "heads"  # glob
    assert spec.group_of("wrapper.a") == "wrapper_a"
    assert spec.coupling_of("heads").name == "A" and spec.coupling_of("wrapper_a") is None
    assert [m.metric for m in spec.judging_metrics("heads")] == ["emotion_f1"]
    assert spec.judging_metrics("backbone") == []
    assert spec.objective.metric == "loss" and spec.objective.mode == "min"
    assert spec.assign_groups(["heads.emotion.w", "backbone.x", "wrapZ.a"]) == {
        "backbone": ["backbone.x"],
        "heads": ["heads.emotion.w"],
        "wrapper_a": ["wrapZ.a"],
    }


def test_plain_prefix_does_not_match_a_longer_name() -> None:
    spec = parse_spec(BASE)
    with pytest.raises(SpecError, match="'heads.emotional.weight' matches no group"):
        spec.group_of("heads.emotional.weight")


@pytest.mark.parametrize("field", ["model", "data", "evaluate", "batches"])
@pytest.mark.parametrize("value", ["pkg.module.function", "pkg:", "1pkg:f", "pkg:f:g"])
def test_bad_callable_path(field: str, value: str) -> None:
    with pytest.raises(SpecError, match="package.module:function") as caught:
        parse_spec(_with(**{field: value}), "my.yaml")
    message = str(caught.value)
    assert "my.yaml" in message and f"{field}:" in message and repr(value) in message
    assert "package.module:function" in message


def test_unknown_coupling_group() -> None:
    with pytest.raises(SpecError, match=r"couplings\[0\] names unknown group 'neck'; known groups"):
        parse_spec(_with(couplings=[{"groups": ["backbone", "neck"]}]))


def test_group_in_two_couplings() -> None:
    couplings = [{"groups": ["backbone"]}, {"groups": ["heads", "backbone"]}]
    with pytest.raises(SpecError, match=r"'backbone' is in couplings\[0\] and couplings\[1\]"):
        parse_spec(_with(couplings=couplings))


def test_unknown_group_in_group_metrics() -> None:
    with pytest.raises(SpecError, match="group_metrics names unknown group 'neck'"):
        parse_spec(_with(group_metrics={"neck": [{"metric": "f1", "mode": "max"}]}))


def test_key_matching_no_group_names_key_and_patterns() -> None:
    with pytest.raises(SpecError, match="'decoder.weight' matches no group") as caught:
        parse_spec(BASE).group_of("decoder.weight")
    message = str(caught.value)
    assert "'decoder.weight' matches no group" in message
    assert "backbone." in message and "heads.bentham.*" in message


def test_key_matching_two_groups_names_key_groups_and_patterns() -> None:
    groups = {"backbone": ["backbone."], "norms": ["*.norm.*"]}
    spec = parse_spec(_with(groups=groups, couplings=[], group_metrics={}))
    with pytest.raises(SpecError, match="'backbone.norm.weight' matches more than one group") as caught:
        spec.group_of("backbone.norm.weight")
    message = str(caught.value)
    assert "'backbone.norm.weight' matches more than one group" in message
    assert "'backbone': ['backbone.']" in message and "'norms': ['*.norm.*']" in message
    assert "disjoint" in message


def test_assign_groups_reports_every_bad_key_at_once() -> None:
    with pytest.raises(SpecError, match="match no group") as caught:
        parse_spec(BASE).assign_groups(["backbone.w", "x.weight", "y.bias"])
    assert "'x.weight'" in str(caught.value) and "'y.bias'" in str(caught.value)


@pytest.mark.parametrize(
    ("groups", "pattern"),
    [({}, "at least one group"), ({"model": ["a."]}, "reserved name 'model'"), ({"bad name": ["a."]}, "not allowed"), ({"g": []}, "has no parameter patterns")],
    ids=["none", "reserved", "bad-name", "no-patterns"],
)
def test_bad_groups(groups: dict, pattern: str) -> None:
    with pytest.raises(SpecError, match=pattern):
        parse_spec(_with(groups=groups))


def test_unknown_field_and_bad_objective_mode() -> None:
    with pytest.raises(SpecError, match="grups"):
        parse_spec(_with(grups={}))
    with pytest.raises(SpecError, match="objective.mode"):
        parse_spec(_with(objective={"metric": "loss", "mode": "lowest"}))


def test_not_a_mapping() -> None:
    with pytest.raises(SpecError, match="x.yaml: the spec must be a YAML mapping, got list"):
        parse_spec([1, 2], "x.yaml")


def test_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"spec file .*absent.yaml does not exist; pass the path"):
        load_spec(tmp_path / "absent.yaml")


def test_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: demo\ngroups: {backbone: [backbone.\n")
    with pytest.raises(SpecError, match="broken.yaml is not valid YAML"):
        load_spec(path)


def test_invalid_spec_in_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sweetspot.yaml"
    path.write_text(yaml.safe_dump(_with(model="nocolon")))
    with pytest.raises(SpecError, match=r"sweetspot.yaml is not a valid sweetspot spec:\n  model: .*'nocolon'"):
        load_spec(path)


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    spec = parse_spec(BASE)
    path = tmp_path / "sweetspot.yaml"
    path.write_text(dump_spec(spec))
    assert load_spec(path) == spec


def test_resolve_callable_and_its_errors() -> None:
    import torch

    assert resolve_callable("torch.nn:Linear") is torch.nn.Linear
    assert parse_spec(BASE).build_model().in_features == 3
    with pytest.raises(SpecError, match="cannot import module 'no_such_pkg_xyz'"):
        resolve_callable("no_such_pkg_xyz:f", "model")
    with pytest.raises(SpecError, match="module 'torch.nn' has no attribute 'Nope'"):
        resolve_callable("torch.nn:Nope", "model")
    with pytest.raises(SpecError, match="is not callable"):
        resolve_callable("math:pi", "data")


def test_missing_batches_callable_says_how_to_add_it() -> None:
    with pytest.raises(SpecError, match="no 'batches' callable"):
        parse_spec(BASE).batch_iterator()


def test_keys_matching_no_group_come_in_one_message_with_a_typo_hint() -> None:
    spec = parse_spec(_with(groups={"backbone": ["backbon."], "heads": ["heads."]}, couplings=[], group_metrics={}))
    keys = [f"backbone.{i}.weight" for i in range(12)] + ["heads.w"]
    with pytest.raises(SpecError, match=r"\(12 keys\) match no group") as caught:
        spec.assign_groups(keys)
    message = str(caught.value)
    assert message.count("\n") == 0  # one problem, one line, not twelve
    assert "'backbone.0.weight'" in message and "and 4 more" in message and "(12 keys) match no group" in message
    assert "keys start with 'backbone' but the pattern is 'backbon.'" in message


def test_unknown_spec_key_lists_the_allowed_keys_and_the_likely_one() -> None:
    data = _with()
    data["group_metric"] = data.pop("group_metrics")
    with pytest.raises(SpecError, match="unknown key 'group_metric'; did you mean 'group_metrics'") as caught:
        parse_spec(data, "my.yaml")
    message = str(caught.value)
    assert "my.yaml" in message and "unknown key 'group_metric'; did you mean 'group_metrics'?" in message
    assert "'couplings'" in message  # the allowed keys are listed


def test_unknown_nested_key_lists_that_mappings_keys() -> None:
    with pytest.raises(SpecError, match=r"unknown key 'direction'.*allowed keys: \['metric', 'mode'\]"):
        parse_spec(_with(objective={"metric": "loss", "direction": "min"}))
