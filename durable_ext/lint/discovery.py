"""Finding orchestrator functions statically, without importing the app.

- **v2**: every function decorated with ``<anything>.orchestration_trigger(...)``: the ``df.DFApp``
  itself or a ``df.Blueprint`` (the decorator is recognised by its name, so ``bp`` may be imported
  from another module).
- **v1**: every ``function.json`` with an ``orchestrationTrigger`` binding names a script (found as the
  host finds it, :func:`durable_ext.app_loader.v1.script_file`) and an entry point (default ``main``);
  the orchestrator is the function passed to ``df.Orchestrator.create`` in ``<entry point> = ...``, or
  the entry point itself when it is a ``def``.

Directories are searched recursively, skipping hidden directories, ``__pycache__``, ``node_modules``
and virtual environments (directories with a ``pyvenv.cfg``).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from durable_ext.app_loader.registry import FunctionKind, kind_of_trigger
from durable_ext.app_loader.v1 import DEFAULT_ENTRY_POINT, FUNCTION_JSON, read_function_json, script_file
from durable_ext.errors import AppLoadError
from durable_ext.lint.names import FunctionNode

TRIGGER_DECORATOR = "orchestration_trigger"
"""The decorator method of ``df.DFApp`` and ``df.Blueprint`` that makes a function an orchestrator."""

_SKIPPED_DIRECTORIES = frozenset({"__pycache__", "node_modules", "site-packages"})


@dataclass(frozen=True)
class V1Orchestrator:
    """A v1 orchestrator as its function.json declares it."""

    function_json: Path
    script: Path
    entry_point: str


class DiscoveryError(Exception):
    """A function.json that cannot be read or names no usable script."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def walk_files(root: Path) -> Iterator[Path]:
    """Every file under ``root``, sorted, outside hidden, cache and virtual-environment directories."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not _skipped(Path(directory, d)))
        for name in sorted(files):
            yield Path(directory, name)


def _skipped(directory: Path) -> bool:
    name = directory.name
    return name.startswith(".") or name in _SKIPPED_DIRECTORIES or (directory / "pyvenv.cfg").is_file()


def is_function_json(path: Path) -> bool:
    """Whether ``path`` is named as the function.json of a v1 function folder."""
    return path.name.lower() == FUNCTION_JSON


def v1_orchestrator(function_json: Path) -> V1Orchestrator | None:
    """The orchestrator ``function_json`` declares, or None when its trigger is not an orchestration.

    Raises :class:`DiscoveryError` when the file is not a JSON object or its script cannot be found.
    """
    folder = function_json.parent.resolve()
    try:
        config = read_function_json(function_json)
        bindings = config.get("bindings")
        if not isinstance(bindings, list) or not any(_is_orchestration_trigger(b) for b in bindings):
            return None
        script = script_file(folder, config.get("scriptFile"), function_json, folder.parent)
    except AppLoadError as exc:
        raise DiscoveryError(function_json, str(exc).removeprefix(f"{function_json}: ")) from None
    entry_point = config.get("entryPoint") or DEFAULT_ENTRY_POINT
    return V1Orchestrator(function_json, script.resolve(), str(entry_point))


def _is_orchestration_trigger(binding: object) -> bool:
    kind = binding.get("type") if isinstance(binding, dict) else None
    return isinstance(kind, str) and kind_of_trigger(kind) is FunctionKind.ORCHESTRATOR


def decorated_orchestrators(tree: ast.Module) -> list[FunctionNode]:
    """The functions of ``tree`` decorated with ``<app or blueprint>.orchestration_trigger``."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(_is_trigger_decorator(d) for d in node.decorator_list)
    ]


def _is_trigger_decorator(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == TRIGGER_DECORATOR


def entry_point_orchestrator(tree: ast.Module, entry_point: str) -> FunctionNode | None:
    """The function a v1 script's ``entry_point`` runs: ``main = df.Orchestrator.create(fn)`` gives ``fn``."""
    functions = {s.name: s for s in tree.body if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)}
    for statement in tree.body:
        created = _created_orchestrator(statement, entry_point)
        if created is not None:
            return functions.get(created)
    return functions.get(entry_point)


def _created_orchestrator(statement: ast.stmt, entry_point: str) -> str | None:
    """``fn`` when ``statement`` is ``<entry_point> = <...>.Orchestrator.create(fn)``."""
    if not isinstance(statement, ast.Assign | ast.AnnAssign) or statement.value is None:
        return None
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
    if not any(isinstance(t, ast.Name) and t.id == entry_point for t in targets):
        return None
    call = statement.value
    if not (
        isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "create"
    ):
        return None
    owner = call.func.value
    owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
    argument = call.args[0] if call.args else None
    if owner_name == "Orchestrator" and isinstance(argument, ast.Name):
        return argument.id
    return None
