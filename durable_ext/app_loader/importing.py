"""Importing a user's app: which modules are the app's own, importing them afresh, and import errors.

``sys.modules`` and ``sys.path`` are process-wide; :data:`import_lock` keeps one load at a time so the
bookkeeping here stays consistent. The app directory goes first on ``sys.path`` (the app's own
packages import from there, as under the Python worker), and the modules a previous load of the same
directory imported are imported afresh.
"""

from __future__ import annotations

import importlib
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from durable_ext.errors import AppLoadError

import_lock = threading.Lock()
"""Held while an app is imported (sys.modules and sys.path are process-wide)."""

# App directory -> names of the app's own modules its last load imported. A later load of the same
# directory drops them (fresh import); a load of another directory drops those it would otherwise
# pick up instead of its own (same top-level name).
_app_modules: dict[Path, set[str]] = {}

_PACKAGE_DIR = Path(__file__).resolve().parents[2]


@contextmanager
def tracked_import(app_dir: Path, keep: frozenset[str] = frozenset()) -> Iterator[set[str]]:
    """Prepare ``sys.path`` and ``sys.modules`` for importing the app in ``app_dir``, and remember the
    modules imported inside the block as the app's own.

    Yields a set the caller adds module names to that belong to the app although they live under no
    file of their own name (e.g. ``__app__.MyFunction``). When the block raises, every module it
    imported is dropped again, so that the next attempt runs the user's code afresh. Top-level names
    in ``keep`` are never dropped on behalf of another directory (see :func:`_forget_modules`).
    """
    _forget_modules(app_dir, keep)
    _put_first_on_path(app_dir)
    # The path finders cache directory listings; an app written moments ago may not be in them yet.
    importlib.invalidate_caches()
    before = set(sys.modules)
    extra: set[str] = set()
    try:
        yield extra
    except BaseException:
        for name in _new_app_modules(before, app_dir) | extra:
            sys.modules.pop(name, None)
        raise
    _app_modules[app_dir] = _new_app_modules(before, app_dir) | extra


def module_paths(module: ModuleType) -> list[Path]:
    """The files (or, for a namespace package, the directories) a module was imported from."""
    file = getattr(module, "__file__", None)
    if file:
        return [Path(file).resolve()]
    # Namespace packages have no __file__, only __path__.
    return [Path(p).resolve() for p in getattr(module, "__path__", [])]


def _forget_modules(app_dir: Path, keep: frozenset[str]) -> None:
    for loaded_dir, names in list(_app_modules.items()):
        if loaded_dir == app_dir:
            dropped = set(names)
            del _app_modules[loaded_dir]
        else:
            dropped = {n for n in names if n.partition(".")[0] not in keep and _shadows(n, app_dir)}
            names.difference_update(dropped)
        for name in dropped:
            sys.modules.pop(name, None)


def _shadows(module_name: str, app_dir: Path) -> bool:
    top = module_name.partition(".")[0]
    return (app_dir / f"{top}.py").is_file() or (app_dir / top).is_dir()


def _put_first_on_path(app_dir: Path) -> None:
    entry = str(app_dir)
    while entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)


def _new_app_modules(before: set[str], app_dir: Path) -> set[str]:
    """The modules imported since ``before`` that are the app's own (a file or package in app_dir)."""
    owned: set[str] = set()
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        top = name.partition(".")[0]
        if module is None:
            continue
        for path in module_paths(module):
            # The first path component under app_dir must be the module's own top-level name, so that
            # e.g. packages installed in app_dir/.venv are not taken for the app's modules.
            parts = _relative_parts(path, app_dir)
            if parts and parts[0] in (top, f"{top}.py"):
                owned.add(name)
                break
    return owned


def _relative_parts(path: Path, directory: Path) -> tuple[str, ...]:
    try:
        return path.relative_to(directory).parts
    except ValueError:
        return ()


# --- import errors ----------------------------------------------------------------------------------


def import_error(exc: BaseException, app_dir: Path, script: Path) -> AppLoadError:
    """The one-line error (and the user's traceback) for ``script`` raising ``exc`` while imported."""
    report = traceback.TracebackException.from_exception(exc)
    _keep_user_frames(report, app_dir, set())
    if isinstance(exc, SyntaxError) and exc.filename:
        # A syntax error has no frame in the user's file: the location is part of the exception.
        location = f"{exc.filename}:{exc.lineno}"
        detail = exc.msg
    else:
        innermost = report.stack[-1] if report.stack else None
        location = f"{innermost.filename}:{innermost.lineno}" if innermost else str(script)
        detail = first_line(exc)
    message = f"importing {script} failed: {type(exc).__name__}"
    if detail:
        message += f": {detail}"
    return AppLoadError(f"{message} ({location})", user_traceback="".join(report.format()))


def _keep_user_frames(report: traceback.TracebackException, app_dir: Path, seen: set[int]) -> None:
    # Import machinery and durable_ext frames are noise to the user; so are chained exceptions' ones.
    if id(report) in seen:
        return
    seen.add(id(report))
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if _is_user_file(frame.filename, app_dir)]
    )
    for chained in (report.__cause__, report.__context__):
        if chained is not None:
            _keep_user_frames(chained, app_dir, seen)


def _is_user_file(filename: str, app_dir: Path) -> bool:
    path = Path(filename).resolve()
    parts = _relative_parts(path, app_dir)
    if not parts or parts[0].startswith("."):  # outside the app, or e.g. its .venv
        return False
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    # durable_ext itself may live inside the app directory (as in this repository).
    return not _relative_parts(path, _PACKAGE_DIR)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" for none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
