"""The module-group spec (``sweetspot.yaml``): typed, validated once at the edge."""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from modules.errors import SpecError

_CALLABLE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_GROUP_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_GLOB_CHARS = set("*?[")
#: Metrics about the whole model are stored under this group name in metrics.parquet.
MODEL_GROUP = "model"


def loss_sign(mode: str) -> float:
    """+1 when lower is better (``min``), -1 when higher is: ``loss_sign(mode) * value`` is a loss."""
    return 1.0 if mode == "min" else -1.0


def is_better(a: float, b: float, mode: str) -> bool:
    """Whether objective ``a`` strictly beats ``b`` under ``mode``."""
    return loss_sign(mode) * a < loss_sign(mode) * b


class Objective(BaseModel):
    """The metric a combination is judged by, and whether lower or higher is better."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: str = "loss"
    mode: Literal["min", "max"] = "min"


class JudgingMetric(BaseModel):
    """A recorded metric that judges a group, with its good direction."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: str
    mode: Literal["min", "max"]


class Coupling(BaseModel):
    """Groups that a search must move together (``max_epoch_gap`` 0) or within a gap."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = None
    groups: list[str] = Field(min_length=1)
    max_epoch_gap: int = Field(default=0, ge=0)


class Spec(BaseModel):
    """A validated ``sweetspot.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    model: str
    #: Needed only by the steps that train, recompute BatchNorm or evaluate; import and analyze run without.
    data: str | None = None
    evaluate: str | None = None
    batches: str | None = None
    model_args: dict[str, Any] = Field(default_factory=dict)
    data_args: dict[str, Any] = Field(default_factory=dict)
    objective: Objective = Field(default_factory=Objective)
    groups: dict[str, list[str]]
    couplings: list[Coupling] = Field(default_factory=list)
    group_metrics: dict[str, list[JudgingMetric]] = Field(default_factory=dict)
    #: The folder of the file the spec was read from: its callables are imported from there too.
    _folder: Path | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        """Equal specs say the same; where they were read from does not count."""
        return self.__dict__ == other.__dict__ if isinstance(other, Spec) else NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable mappings inside: unhashable, as before

    @field_validator("model", "data", "evaluate", "batches")
    @classmethod
    def _callable_path(cls, value: str | None) -> str | None:
        if value is not None and not _CALLABLE_RE.match(value):
            raise ValueError(
                f"{value!r} is not a callable path; write it as 'package.module:function'"
            )
        return value

    @field_validator("groups")
    @classmethod
    def _groups_valid(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        if not groups:
            raise ValueError("at least one group is needed")
        for group, patterns in groups.items():
            if group == MODEL_GROUP or not _GROUP_NAME_RE.match(group):
                raise ValueError(
                    f"group name {group!r} is not allowed; use letters, digits, '_', '.', '-'"
                    f" and not the reserved name {MODEL_GROUP!r}"
                )
            if not patterns:
                raise ValueError(f"group {group!r} has no parameter patterns")
        return groups

    @model_validator(mode="after")
    def _references_known_groups(self) -> Spec:
        known = set(self.groups)
        seen: dict[str, int] = {}
        for index, coupling in enumerate(self.couplings):
            for group in coupling.groups:
                if group not in known:
                    raise ValueError(
                        f"couplings[{index}] names unknown group {group!r}; known groups: {sorted(known)}"
                    )
                if group in seen:
                    raise ValueError(
                        f"group {group!r} is in couplings[{seen[group]}] and couplings[{index}];"
                        " a group may be in at most one coupling"
                    )
                seen[group] = index
        for group in self.group_metrics:
            if group not in known:
                raise ValueError(
                    f"group_metrics names unknown group {group!r}; known groups: {sorted(known)}"
                )
        return self

    # -- behaviour -------------------------------------------------------------------------

    def group_of(self, key: str) -> str:
        """Return the one group whose patterns match ``key``; raise SpecError otherwise."""
        matches = [g for g, patterns in self.groups.items() if _matches_any(key, patterns)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise SpecError(
                f"parameter {key!r} matches no group in spec {self.name!r}; add a pattern for it"
                f" to one group (patterns: {self.groups})"
            )
        detail = {g: [p for p in self.groups[g] if _matches(key, p)] for g in matches}
        raise SpecError(
            f"parameter {key!r} matches more than one group in spec {self.name!r}: {detail};"
            " make the patterns disjoint so each key is in exactly one group"
        )

    def assign_groups(self, keys: Iterable[str]) -> dict[str, list[str]]:
        """Map every group to its keys (in the given order); all problems raised in one error."""
        assigned: dict[str, list[str]] = {g: [] for g in self.groups}
        unmatched: list[str] = []
        ambiguous: list[str] = []
        for key in keys:
            matches = [g for g, patterns in self.groups.items() if _matches_any(key, patterns)]
            if len(matches) == 1:
                assigned[matches[0]].append(key)
            elif matches:
                ambiguous.append(key)
            else:
                unmatched.append(key)
        problems = []
        if unmatched:
            shown = ", ".join(repr(k) for k in unmatched[:8]) + (f" and {len(unmatched) - 8} more" if len(unmatched) > 8 else "")
            verb = "matches" if len(unmatched) == 1 else f"({len(unmatched)} keys) match"
            problems.append(
                f"{shown} {verb} no group in spec {self.name!r}; add a pattern for them to one group"
                f" (patterns: {self.groups}){_pattern_hint(unmatched, self.groups)}"
            )
        problems += [self._ambiguity(key) for key in ambiguous[:5]]
        if len(ambiguous) > 5:
            problems.append(f"... and {len(ambiguous) - 5} more keys that match more than one group")
        if problems:
            raise SpecError("\n".join(problems))
        return assigned

    def _ambiguity(self, key: str) -> str:
        matches = [g for g, patterns in self.groups.items() if _matches_any(key, patterns)]
        detail = {g: [p for p in self.groups[g] if _matches(key, p)] for g in matches}
        return (
            f"parameter {key!r} matches more than one group in spec {self.name!r}: {detail};"
            " make the patterns disjoint so each key is in exactly one group"
        )

    def judging_metrics(self, group: str) -> list[JudgingMetric]:
        """Metrics that judge ``group``; empty when the spec names none."""
        return list(self.group_metrics.get(group, []))

    def coupling_of(self, group: str) -> Coupling | None:
        """The coupling ``group`` belongs to, if any."""
        for coupling in self.couplings:
            if group in coupling.groups:
                return coupling
        return None

    def check_callables(self) -> None:
        """Import every callable the spec names, so a wrong path is reported now, with the fix."""
        for role in ("model", "data", "evaluate", "batches"):
            path = getattr(self, role)
            if path is not None:
                self._resolve(path, role)

    def _resolve(self, path: str, role: str) -> Callable[..., Any]:
        return resolve_callable(path, role, [self._folder] if self._folder is not None else [])

    def build_model(self) -> Any:
        """Instantiate the spec's model (``model(**model_args)``); it must be a ``torch.nn.Module``."""
        import torch  # only the steps that build a model need torch here

        model = self._resolve(self.model, "model")(**self.model_args)
        if not isinstance(model, torch.nn.Module):
            raise SpecError(
                f"model callable {self.model!r} of spec {self.name!r} returned {type(model).__name__}, not a"
                " torch.nn.Module; `model:` must name a function (or class) that builds your model"
            )
        return model

    def load_data(self, needed: Sequence[str] = ("train", "val", "test")) -> dict[str, Any]:
        """Call the data callable; it must return a mapping of named splits including ``needed``."""
        if self.data is None:
            raise SpecError(
                f"spec {self.name!r} has no 'data' callable, which this step needs to load the splits; add"
                " `data: package.module:function` returning {'train': ..., 'val': ..., 'test': ...}"
            )
        splits = self._resolve(self.data, "data")(**self.data_args)
        if not isinstance(splits, Mapping):
            raise SpecError(
                f"data callable {self.data!r} returned {type(splits).__name__}, not a mapping of splits;"
                f" return e.g. {{{', '.join(repr(n) + ': ...' for n in needed)}}}"
            )
        missing = [s for s in needed if s not in splits]
        if missing:
            raise SpecError(
                f"data callable {self.data!r} returned splits {sorted(splits)}; this step also needs {missing}"
            )
        return dict(splits)

    def batch_iterator(self) -> Callable[..., Any]:
        """The batches callable: ``batches(split)`` yields model inputs (tensor, tuple or dict)."""
        if self.batches is None:
            raise SpecError(
                f"spec {self.name!r} has no 'batches' callable, which recomputing BatchNorm statistics"
                " needs; add `batches: package.module:function` yielding model inputs for a split"
            )
        return self._resolve(self.batches, "batches")

    def evaluator(self) -> Callable[..., dict[str, Any]]:
        """The evaluate callable: ``evaluate(model, split) -> dict of metrics``."""
        if self.evaluate is None:
            raise SpecError(
                f"spec {self.name!r} has no 'evaluate' callable, which this step needs to score models; add"
                " `evaluate: package.module:function` taking (model, split) and returning a dict of metrics"
            )
        return self._resolve(self.evaluate, "evaluate")


def _pattern_hint(unmatched: list[str], groups: dict[str, list[str]]) -> str:
    """' (did you mean ...)' when an unmatched key's first component is close to a pattern's."""
    patterns = [p for ps in groups.values() for p in ps]
    stems = {p.rstrip(".*").split(".")[0]: p for p in patterns}
    hints = []
    for prefix in dict.fromkeys(k.split(".")[0] for k in unmatched):
        close = difflib.get_close_matches(prefix, list(stems), n=1, cutoff=0.75)
        if close and close[0] != prefix:
            hints.append(f"keys start with {prefix!r} but the pattern is {stems[close[0]]!r}")
    return f"; {'; '.join(hints)}: a typo?" if hints else ""


def _matches(key: str, pattern: str) -> bool:
    if _GLOB_CHARS & set(pattern):
        return fnmatch.fnmatchcase(key, pattern)
    if pattern.endswith("."):
        return key.startswith(pattern)
    return key == pattern or key.startswith(pattern + ".")


def _matches_any(key: str, patterns: list[str]) -> bool:
    return any(_matches(key, p) for p in patterns)


@contextlib.contextmanager
def _on_path(folders: Sequence[str | os.PathLike[str]]) -> Iterator[list[str]]:
    """``folders`` and the current folder first on ``sys.path`` while importing (as ``python -m`` does)."""
    wanted = list(dict.fromkeys([*(str(Path(f).resolve()) for f in folders), os.getcwd()]))
    added = [f for f in wanted if f not in sys.path]
    sys.path[:0] = added
    try:
        yield wanted
    finally:
        for folder in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)


def resolve_callable(
    path: str, role: str = "callable", folders: Sequence[str | os.PathLike[str]] = ()
) -> Callable[..., Any]:
    """Import ``package.module:attr`` and return the attribute; errors say what to fix.

    Modules are looked up in ``folders`` (the spec file's folder) and the current folder first,
    then on the usual ``sys.path``.
    """
    module_name, _, attr_path = path.partition(":")
    with _on_path(folders) as searched:
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as error:
            raise SpecError(
                f"{role} {path!r}: cannot import module {module_name!r} ({error}); check the name, and that"
                f" the module is in {' or '.join(searched)}, installed, or on PYTHONPATH"
            ) from error
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise SpecError(f"{role} {path!r}: module {module_name!r} has no attribute {attr_path!r}")
        target = getattr(target, part)
    if not callable(target):
        raise SpecError(f"{role} {path!r} is not callable")
    return target


def parse_spec(data: Any, source: str = "<spec>") -> Spec:
    """Validate a spec from a mapping; errors list every problem with its location in ``source``."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a YAML mapping, got {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"]) or "(top level)"
            lines.append(f"  {where}: {_explain(item)}")
        raise SpecError(f"{source} is not a valid sweetspot spec:\n" + "\n".join(lines)) from None


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys the spec allows at the mapping that holds ``loc``'s last key."""
    model: type[BaseModel] = Spec
    if len(loc) > 1:
        model = {"objective": Objective, "couplings": Coupling, "group_metrics": JudgingMetric}.get(str(loc[0]), Spec)
    return list(model.model_fields)


def _explain(item: dict) -> str:
    """A pydantic error in words a spec author can act on (unknown keys get the allowed ones)."""
    if item["type"] == "extra_forbidden":
        allowed = _allowed_keys(tuple(item["loc"]))
        key = str(item["loc"][-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {key!r}{guess} (allowed keys: {allowed})"
    if item["type"] == "missing":
        return "this key is required"
    return item["msg"]


def load_spec(path: str | Path) -> Spec:
    """Read and validate ``sweetspot.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist; pass the path of your sweetspot.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SpecError(f"{path} is not valid YAML: {error}") from None
    spec = parse_spec(data, str(path))
    spec._folder = path.resolve().parent
    return spec


def dump_spec(spec: Spec) -> str:
    """The spec as YAML text that ``load_spec`` reads back to an equal spec."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
