"""What the names in one module refer to, statically: imports with their aliases, module-level bindings.

``import time as t`` makes ``t.sleep`` resolve to ``time.sleep``; ``from datetime import datetime as
dt`` makes ``dt.now`` resolve to ``datetime.datetime.now``. A name bound nowhere (neither imported nor
assigned in the module or the function) resolves to ``builtins.<name>``, so ``open`` is
``builtins.open`` unless the module defines its own. Relative imports (``from .x import y``) name the
app's own modules and resolve to nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Set

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
"""A ``def`` or ``async def`` statement."""


class ModuleNames:
    """The imports, module-level names and top-level functions of one parsed module."""

    def __init__(self, tree: ast.Module) -> None:
        self.imports: dict[str, str] = {}
        """Local name -> the dotted name it was imported as, from every import in the module."""
        self.assigned: set[str] = set()
        """Names assigned at module level: the module's global state."""
        self.bound: set[str] = set()
        """Every name bound at module level (assigned, imported, ``def``, ``class``)."""
        self.functions: dict[str, FunctionNode] = {}
        """Top-level functions by name: the helpers an orchestrator may call."""
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                self._add_import(node)
        for statement in _module_statements(tree.body):
            self._add_statement(statement)

    def _add_import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if isinstance(node, ast.Import):
                local = alias.asname or alias.name.split(".")[0]
                self.imports[local] = alias.name if alias.asname else local
            elif node.level == 0 and node.module and alias.name != "*":
                self.imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def _add_statement(self, statement: ast.stmt) -> None:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            self.functions[statement.name] = statement
            self.bound.add(statement.name)
        elif isinstance(statement, ast.ClassDef):
            self.bound.add(statement.name)
        elif isinstance(statement, ast.Import | ast.ImportFrom):
            self.bound.update((a.asname or a.name).split(".")[0] for a in statement.names)
        elif isinstance(statement, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            self.assigned.update(names)
            self.bound.update(names)

    def qualified_name(self, node: ast.expr, local: Set[str]) -> str | None:
        """The dotted name ``node`` refers to (``time.sleep``), or None when it is not a module's name.

        ``local`` holds the names the enclosing function binds itself; they shadow everything else.
        """
        if isinstance(node, ast.Name):
            if node.id in local:
                return None
            if node.id in self.imports:
                return self.imports[node.id]
            return None if node.id in self.bound else f"builtins.{node.id}"
        if isinstance(node, ast.Attribute):
            base = self.qualified_name(node.value, local)
            return None if base is None else f"{base}.{node.attr}"
        return None

    def is_module_state(self, name: str, local: Set[str]) -> bool:
        """Whether ``name``, used in a function binding ``local``, is a module-level variable."""
        return name in self.assigned and name not in local


def _module_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The module's statements, including those under ``if``/``try``/``with``, not inside defs."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.If | ast.Try | ast.With):
            for block in ("body", "orelse", "finalbody"):
                yield from _module_statements(getattr(statement, block, []))
            for handler in getattr(statement, "handlers", []):
                yield from _module_statements(handler.body)


def local_names(function: FunctionNode) -> set[str]:
    """The names ``function`` binds itself (parameters, assignments, nested defs), minus its globals.

    Imports inside the function are not counted: they resolve through :class:`ModuleNames`.
    """
    declared_global = global_names(function)
    bound: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node is not function:
            bound.add(node.name)
    return bound - declared_global


def global_names(function: FunctionNode) -> set[str]:
    """The names ``function`` declares ``global``."""
    return {name for node in ast.walk(function) if isinstance(node, ast.Global) for name in node.names}
