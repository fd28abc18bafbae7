"""Read a ``torch.save`` file's extras without running code: unknown globals become inert placeholders.

Training scripts save more than the state dict: an ``argparse.Namespace`` of hyper-parameters, a
numpy ``best_acc``, a dataclass. torch's weights-only loader refuses the whole file for them. This
unpickler resolves only torch's weights-only allow-list (plus globals the user allows by name);
every other global becomes a ``Skipped`` placeholder class that records its name and arguments,
is never imported, and whose construction runs nothing but this module's code. Globals that can
only mean code execution (``os.system``, ``builtins.eval``, ``io.open``, ...) refuse the file.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch._weights_only_unpickler import _get_allowed_globals

#: Modules and names no checkpoint needs: a file that references one is refused outright.
_CODE_MODULES = frozenset(
    "os posix nt subprocess sys io shutil socket importlib runpy pickle _pickle marshal types code codeop"
    " ctypes multiprocessing pty signal webbrowser tempfile pathlib glob threading asyncio inspect".split()
)
_CODE_BUILTINS = frozenset(
    "eval exec compile open __import__ getattr setattr delattr globals locals vars input breakpoint"
    " memoryview help exit quit".split()
)


class UnsafeGlobal(pickle.UnpicklingError):
    """The pickle references a global that can only be there to run code."""

    def __init__(self, qualname: str) -> None:
        super().__init__(f"GLOBAL {qualname} refused: it can run code")
        self.qualname = qualname


class Skipped:
    """An object whose class (or function) was not loaded; ``qualname`` names it."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Skipped:
        obj = object.__new__(cls)
        obj.__dict__["args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEMS on a dict subclass
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:  # APPENDS on a list subclass
        self.__dict__.setdefault("items", []).append(value)

    def extend(self, values: Iterable[Any]) -> None:
        for value in values:
            self.append(value)

    def __repr__(self) -> str:
        return f"<skipped {self.qualname}>"


def _is_code_global(module: str, name: str) -> bool:
    root = module.split(".")[0]
    return root in _CODE_MODULES or (module == "builtins" and name in _CODE_BUILTINS)


def _make_unpickler(allowed: frozenset[str], skipped: set[str]) -> type[pickle.Unpickler]:
    safe = _get_allowed_globals()
    placeholders: dict[str, type[Skipped]] = {}

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            # Protocol 2 (torch.save's) writes Python 2 names such as __builtin__.eval: map them first.
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            qualname = f"{module}.{name}"
            if qualname in safe:
                return safe[qualname]
            if qualname in allowed:  # the user vouched for it: the real global is imported and used
                return getattr(importlib.import_module(module), name)
            if _is_code_global(module, name):
                raise UnsafeGlobal(qualname)
            skipped.add(qualname)
            if qualname not in placeholders:
                placeholders[qualname] = type(f"Skipped[{qualname}]", (Skipped,), {"qualname": qualname})
            return placeholders[qualname]

    return RestrictedUnpickler


def load_with_placeholders(
    path: str | os.PathLike[str], allow_globals: Iterable[str] = (), mmap: bool = False
) -> tuple[object, list[str]]:
    """``torch.load`` of ``path`` where unknown globals become ``Skipped`` placeholders.

    Returns the loaded object and the sorted names of the globals replaced by placeholders.
    Raises ``UnsafeGlobal`` (a ``pickle.UnpicklingError``) for code-running globals.
    """
    skipped: set[str] = set()
    unpickler = _make_unpickler(frozenset(allow_globals), skipped)

    def load(file: io.BufferedIOBase, **kwargs: Any) -> Any:
        return unpickler(file, **kwargs).load()

    module = SimpleNamespace(__name__="sweetspot_restricted_pickle", Unpickler=unpickler, load=load)
    # weights_only=False only hands torch our pickle module: every global still goes through the
    # restricted find_class above (allow-list, inert placeholders, code refused), never pickle's own.
    obj = torch.load(Path(path), map_location="cpu", weights_only=False, pickle_module=module, mmap=mmap)
    return obj, sorted(skipped)


def load_restricted(file: io.BufferedIOBase, allow_globals: Iterable[str] = ()) -> tuple[object, list[str]]:
    """Unpickle a plain pickle stream (not a ``torch.save`` file) with the same rules as
    ``load_with_placeholders``: torch's allow-list and ``allow_globals`` load, code-running globals
    refuse the stream (``UnsafeGlobal``), every other global becomes an inert ``Skipped``."""
    skipped: set[str] = set()
    obj = _make_unpickler(frozenset(allow_globals), skipped)(file).load()
    return obj, sorted(skipped)
