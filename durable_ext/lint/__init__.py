"""``python -m durable_ext lint``: static replay-safety checks on orchestrator functions.

The app is never imported: orchestrators are found in the source (:mod:`.discovery`) and each is
checked with :mod:`ast` against the rules in :mod:`.rules` (``DX100``...). Calls to functions defined
at the top level of the same module are followed one level deep: a helper's own calls to further
helpers are not. ``# durable: noqa`` on a line silences every finding on it, ``# durable: noqa DX100``
(or ``DX100, DX101``) only those codes. Findings read as ruff prints them::

    orchestrators/report.py:12:16: DX100 `datetime.datetime.now` reads the clock, ...

Public entry: :func:`lint_paths`, returning a :class:`LintResult` of :class:`Finding` s.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from durable_ext.app_loader.v1 import FUNCTION_JSON
from durable_ext.lint.discovery import (
    TRIGGER_DECORATOR,
    DiscoveryError,
    decorated_orchestrators,
    entry_point_orchestrator,
    is_function_json,
    v1_orchestrator,
    walk_files,
)
from durable_ext.lint.names import FunctionNode, ModuleNames
from durable_ext.lint.rules import RULES, RULES_BY_CODE, UNREADABLE, OrchestratorChecker, Rule

__all__ = ["RULES", "Finding", "LintPathError", "LintResult", "Rule", "lint_paths"]

_NOQA = re.compile(r"#\s*durable:\s*noqa\b(?::?\s*(?P<codes>[A-Z]+\d+(?:[\s,]+[A-Z]+\d+)*))?", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class Finding:
    """One problem at one place; sorts by path, line, column and code."""

    path: str
    """The file, relative to the directory paths are shown relative to when it is inside it."""
    line: int
    """1-based."""
    column: int
    """1-based, as ruff counts."""
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.code} {self.message}"


@dataclass(frozen=True)
class LintResult:
    """What :func:`lint_paths` found."""

    findings: tuple[Finding, ...]
    """Sorted, without the ones silenced by ``# durable: noqa``."""
    orchestrators: int
    """How many orchestrator functions were checked."""
    warnings: tuple[str, ...] = ()
    """Orchestrators declared but not found in the source (v1 entry points written unusually)."""


class LintPathError(ValueError):
    """A path given to :func:`lint_paths` does not exist."""


def lint_paths(paths: Sequence[Path], *, relative_to: Path | None = None) -> LintResult:
    """Check every orchestrator in ``paths`` (files or directories, searched recursively).

    A ``.py`` file is searched for decorated (v2) orchestrators and, when a function.json sits next to
    it, for that v1 function's orchestrator; a function.json for its orchestrator. Paths are shown
    relative to ``relative_to`` (default: the current directory) when they are inside it. Raises
    :class:`LintPathError` when a path does not exist.
    """
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise LintPathError(f"no such file or directory: {', '.join(missing)}")
    linter = _Linter((relative_to or Path.cwd()).resolve())
    for path in paths:
        linter.add(path)
    return linter.run()


@dataclass
class _Source:
    """One parsed Python file."""

    path: Path
    lines: list[str]
    tree: ast.Module
    names: ModuleNames


@dataclass
class _Linter:
    """Collects the files to check from the paths given, then checks each orchestrator in them."""

    base: Path
    findings: dict[tuple[str, int, int, str], Finding] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    python_files: set[Path] = field(default_factory=set)
    entry_points: dict[Path, set[str]] = field(default_factory=dict)
    orchestrators: int = 0

    def add(self, path: Path) -> None:
        if path.is_dir():
            for file in walk_files(path):
                self._add_file(file, explicit=False)
        else:
            self._add_file(path, explicit=True)

    def _add_file(self, path: Path, *, explicit: bool) -> None:
        if is_function_json(path):
            self._add_v1(path)
        elif path.suffix == ".py":
            self.python_files.add(path.resolve())
            if explicit and (path.parent / FUNCTION_JSON).is_file():
                self._add_v1(path.parent / FUNCTION_JSON)

    def _add_v1(self, function_json: Path) -> None:
        try:
            declared = v1_orchestrator(function_json)
        except DiscoveryError as exc:
            self._add(Finding(self._shown(exc.path), 1, 1, UNREADABLE, exc.message))
            return
        if declared is not None:
            self.entry_points.setdefault(declared.script, set()).add(declared.entry_point)

    def run(self) -> LintResult:
        for path in sorted(self.python_files | set(self.entry_points)):
            self._lint_file(path, sorted(self.entry_points.get(path, ())))
        return LintResult(tuple(sorted(self.findings.values())), self.orchestrators, tuple(self.warnings))

    def _lint_file(self, path: Path, entry_points: list[str]) -> None:
        source = self._parse(path, required=bool(entry_points))
        if source is None:
            return
        functions = decorated_orchestrators(source.tree)
        for entry_point in entry_points:
            function = entry_point_orchestrator(source.tree, entry_point)
            if function is None:
                self.warnings.append(
                    f"{self._shown(path)}: no `{entry_point} = df.Orchestrator.create(<function>)` "
                    "with a function defined in this file; not checked"
                )
            elif function not in functions:
                functions.append(function)
        for function in functions:
            self.orchestrators += 1
            self._check(source, function)

    def _parse(self, path: Path, *, required: bool) -> _Source | None:
        """The parsed file, or None when it declares no orchestrator or cannot be parsed (a finding)."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            self._add(Finding(self._shown(path), 1, 1, UNREADABLE, f"cannot be read: {exc}"))
            return None
        if not required and TRIGGER_DECORATOR not in text:
            return None
        try:
            tree = ast.parse(text, filename=str(path))
        except SyntaxError as exc:
            line, column = exc.lineno or 1, exc.offset or 1
            self._add(Finding(self._shown(path), line, column, UNREADABLE, f"SyntaxError: {exc.msg}"))
            return None
        return _Source(path, text.splitlines(), tree, ModuleNames(tree))

    def _check(self, source: _Source, orchestrator: FunctionNode) -> None:
        """Check ``orchestrator``, then (one level deep) the module's functions it calls."""
        if isinstance(orchestrator, ast.AsyncFunctionDef):
            self._report(source, orchestrator, "DX110", f"`async def {orchestrator.name}`", "")
        helpers = self._check_function(source, orchestrator, "")
        for name in dict.fromkeys(helpers):
            helper = source.names.functions[name]
            if helper is not orchestrator:
                note = f" (in `{name}`, called from orchestrator `{orchestrator.name}`)"
                self._check_function(source, helper, note)

    def _check_function(self, source: _Source, function: FunctionNode, note: str) -> Iterable[str]:
        def report(node: ast.AST, code: str, subject: str) -> None:
            self._report(source, node, code, subject, note)

        checker = OrchestratorChecker(function, source.names, report)
        checker.check()
        return checker.helpers

    def _report(self, source: _Source, node: ast.AST, code: str, subject: str, note: str) -> None:
        line, column = getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1
        if _silenced(source.lines[line - 1] if line <= len(source.lines) else "", code):
            return
        message = RULES_BY_CODE[code].message(subject) + note
        self._add(Finding(self._shown(source.path), line, column, code, message))

    def _add(self, finding: Finding) -> None:
        # A helper called from two orchestrators is reported once.
        self.findings.setdefault((finding.path, finding.line, finding.column, finding.code), finding)

    def _shown(self, path: Path) -> str:
        resolved = path.resolve()
        return str(resolved.relative_to(self.base)) if resolved.is_relative_to(self.base) else str(path)


def _silenced(line: str, code: str) -> bool:
    """Whether ``line`` carries a ``# durable: noqa`` comment covering ``code``."""
    match = _NOQA.search(line)
    if match is None:
        return False
    codes = match.group("codes")
    return codes is None or code.upper() in {c.upper() for c in re.split(r"[\s,]+", codes)}
