"""Find the functions of a user's app and index them into a :class:`FunctionRegistry`.

Both Python programming models are supported, as the Functions host and the Python worker index them:

- **v2** (:mod:`.v2`): ``function_app.py`` declares the functions with decorators on a ``df.DFApp`` /
  ``func.FunctionApp``; blueprints are registered on it.
- **v1** (:mod:`.v1`): one folder per function with ``function.json`` and ``__init__.py``, imported
  under the ``__app__`` package; used when there is no ``function_app.py`` (the worker indexes
  ``function_app.py`` first, and the host falls back to function.json folders without it).

Either way, orchestrator and entity callables are df's wrappers, ``handle(context)``: call them with the
context JSON **positionally**. Their parameter is named ``context`` whatever the trigger binding's
name is, so passing the value as keyword :attr:`RegisteredFunction.trigger_param` fails unless that name
is ``context``.

``AzureWebJobs.<FunctionName>.Disabled`` app settings mark functions disabled (see :func:`load_app`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path

from durable_ext.app_loader.importing import import_lock
from durable_ext.app_loader.registry import (
    ALL_HTTP_METHODS,
    FunctionKind,
    FunctionRegistry,
    HttpRoute,
    RegisteredFunction,
    invalid_function_message,
)
from durable_ext.app_loader.v1 import FUNCTION_JSON, function_folders, index_v1_app
from durable_ext.app_loader.v2 import SCRIPT_FILE, index_v2_app, registry_of
from durable_ext.config import disabled_settings
from durable_ext.errors import AppLoadError

__all__ = [
    "ALL_HTTP_METHODS",
    "SCRIPT_FILE",
    "FunctionKind",
    "FunctionRegistry",
    "HttpRoute",
    "RegisteredFunction",
    "function_folders",
    "invalid_function_message",
    "load_app",
    "registry_of",
]

logger = logging.getLogger(__name__)


def load_app(
    app_dir: Path,
    script_file: str = SCRIPT_FILE,
    *,
    settings: Mapping[str, str] | None = None,
    only: Collection[str] | None = None,
) -> FunctionRegistry:
    """Import the app in ``app_dir`` afresh and index its functions.

    ``app_dir/script_file`` makes it a v2 app; without it, the folders holding a function.json make
    it a v1 app. ``app_dir`` goes first on ``sys.path``; modules a previous load of the same directory
    imported are imported afresh too, and those of another directory are dropped from ``sys.modules``
    only where this app has a module of the same name.

    ``settings`` are the app settings (default: the environment, where the Functions host puts them);
    their ``AzureWebJobs.<FunctionName>.Disabled`` entries mark functions disabled. ``only`` is the
    host's allow list (names, any case): a v1 app's other function folders are not imported, as the
    Functions host does not load them; a v2 app is one script, imported whole.

    Raises :class:`AppLoadError` when there is neither a script nor a function folder, when the app
    raises while importing (the user's traceback is in :attr:`AppLoadError.user_traceback`), or when
    it declares invalid or clashing functions.
    """
    app_dir = Path(app_dir).resolve()
    script = app_dir / script_file
    folders = function_folders(app_dir)
    with import_lock:
        if script.is_file():
            if folders:
                logger.warning(
                    "%s has both %s and function folders (%s): the v2 model wins and the %s files are"
                    " ignored, as under the Functions host",
                    app_dir,
                    script_file,
                    ", ".join(f.name for f in folders),
                    FUNCTION_JSON,
                )
            registry = index_v2_app(app_dir, script_file)
        elif folders:
            registry = index_v1_app(app_dir, only)
        else:
            raise AppLoadError(
                f"no {script_file} and no function folders (with {FUNCTION_JSON}) in {app_dir}: run from"
                " your app's directory or pass --app-dir"
            )
    registry = _apply_disabled(registry, os.environ if settings is None else settings)
    _log_loaded(app_dir, registry)
    return registry


def _apply_disabled(registry: FunctionRegistry, settings: Mapping[str, str]) -> FunctionRegistry:
    names = {f.function_name.lower() for f in registry.functions}
    disabled: set[str] = set()
    for entry in disabled_settings(settings):
        if entry.function_name.lower() not in names:
            logger.warning("App setting %s names no function of this app; ignored", entry.setting)
        elif entry.unclear:
            logger.warning(
                'App setting %s is %r: the Functions host disables a function only for "true" or "1",'
                " so %s stays enabled",
                entry.setting,
                entry.value,
                entry.function_name,
            )
        elif entry.disables:
            disabled.add(entry.function_name.lower())
    return registry.with_disabled(disabled) if disabled else registry


def _log_loaded(app_dir: Path, registry: FunctionRegistry) -> None:
    logger.info(
        "Loaded %s (%s programming model): %d orchestrator(s), %d activity(ies), %d entity(ies),"
        " %d HTTP function(s)",
        app_dir,
        registry.programming_model,
        len(registry.orchestrators),
        len(registry.activities),
        len(registry.entities),
        len(registry.http_functions),
    )
    for function in registry.functions:
        state = " (disabled)" if function.disabled else ""
        logger.debug("  %s %s (%s)%s", function.kind.value, function.name, function.trigger_type, state)
