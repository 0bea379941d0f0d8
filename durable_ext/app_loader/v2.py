"""Index a v2 app: import function_app.py and index what its app object declares.

This is the step the Azure Functions Python worker calls "function indexing". :func:`index_v2_app`
imports ``function_app.py`` from the app directory, takes the module-level app object (``df.DFApp`` or
``func.FunctionApp``; blueprints are already merged into it by ``app.register_functions(bp)``) and
builds a :class:`FunctionRegistry`: every function with its kind, its Durable Functions name, the
parameter name its trigger value is passed under, the callable to invoke and, for HTTP triggers, the
route.

Facts about the installed ``azure-functions`` / ``azure-functions-durable`` packages this relies on:

- ``df.DFApp`` derives from ``func.FunctionRegister``, not from ``func.FunctionApp``, so the app object
  is found by ``isinstance(obj, func.FunctionRegister)`` (which is also what the Python worker does).
- ``FunctionRegister.get_functions()`` remembers the names it has seen on the app and reports every
  function as a duplicate on a second call; :func:`registry_of` resets that memo first.
- With ``@app.durable_client_input`` the callable is df's async middleware, which turns the client JSON
  string into a ``DurableOrchestrationClient`` and then *awaits* the user function: such HTTP functions
  are always async, and a sync user function fails when called (in Azure too).
- An explicit name in the trigger decorator (``orchestration=``, ``activity=``, ``entity_name=``) is the
  name Durable Functions knows the function by (the .NET extension's priority: trigger attribute, then
  function name); ``get_function_name()`` stays the Python function's name (or ``@app.function_name``).
  df itself uses the Python function's name when an orchestrator passes a function object instead of a
  string to ``call_activity`` and friends, so such apps only work without explicit names, in Azure too.
"""

from __future__ import annotations

import enum
import hashlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
from azure.functions.decorators.core import Binding, BindingDirection

from durable_ext.app_loader.importing import first_line, import_error, module_paths, tracked_import
from durable_ext.app_loader.registry import (
    ALL_HTTP_METHODS,
    DURABLE_KINDS,
    BindingInfo,
    FunctionKind,
    FunctionRegistry,
    HttpRoute,
    RegisteredFunction,
    is_durable_client,
    kind_of_trigger,
)
from durable_ext.errors import AppLoadError

logger = logging.getLogger(__name__)

SCRIPT_FILE = "function_app.py"
"""The file the Python v2 programming model indexes (``azure.functions`` calls it SCRIPT_FILE_NAME)."""

MODULE_NAME = "function_app"
"""The module name ``function_app.py`` is imported as, as the Python worker does."""

# The key of the trigger's dict repr holding an explicit Durable Functions name.
_EXPLICIT_NAME_KEY: dict[FunctionKind, str] = {
    FunctionKind.ORCHESTRATOR: "orchestration",
    FunctionKind.ACTIVITY: "activity",
    FunctionKind.ENTITY: "entityName",
}


def index_v2_app(app_dir: Path, script_file: str = SCRIPT_FILE) -> FunctionRegistry:
    """Import ``app_dir/script_file`` (which must exist) afresh and index its app object.

    The script runs as module ``function_app``, or under a name unique to the directory when another
    directory's ``function_app`` is already imported.
    """
    script = app_dir / script_file
    module = _import_script(app_dir, script)
    return registry_of(_find_app(module, script))


def registry_of(app: func.FunctionRegister) -> FunctionRegistry:
    """Index the functions of an app object (``df.DFApp``, ``func.FunctionApp``, ...).

    Raises :class:`AppLoadError` when the library rejects a function (e.g. two functions with the same
    name, a function without a trigger) or two durable functions share a name.
    """
    # get_functions() keeps the names it has seen in functions_bindings and reports every function
    # as a duplicate when called a second time; start from a clean slate so indexing is repeatable.
    app.functions_bindings = None
    try:
        functions = app.get_functions()
    except ValueError as exc:
        raise AppLoadError(f"the app's functions are invalid: {first_line(exc)}") from None
    return FunctionRegistry(tuple(_register(function) for function in functions))


def _register(function: func.Function) -> RegisteredFunction:
    function_name = function.get_function_name()
    trigger = function.get_trigger()
    if not function_name or trigger is None:  # build() has checked both; keep mypy and readers sure
        raise AppLoadError(f"function {function_name!r} has no name or no trigger")
    trigger_repr: dict[str, Any] = trigger.get_dict_repr()
    trigger_type = str(trigger.type)
    kind = kind_of_trigger(trigger_type)
    explicit = trigger_repr.get(_EXPLICIT_NAME_KEY[kind]) if kind in DURABLE_KINDS else None
    user_function = function.get_user_function()
    http = _http_route(function_name, trigger.name, trigger_repr, function.get_bindings())
    if kind is FunctionKind.HTTP:
        _warn_sync_client_function(function_name, user_function)
    elif kind is FunctionKind.OTHER:
        logger.warning(
            "Function %s has a %s trigger, which durable_ext does not run", function_name, trigger_type
        )
    return RegisteredFunction(
        name=str(explicit) if explicit else function_name,
        kind=kind,
        trigger_param=trigger.name,
        callable=user_function,
        is_async=inspect.iscoroutinefunction(user_function),
        http=http if kind is FunctionKind.HTTP else None,
        trigger_type=trigger_type,
        function_name=function_name,
        bindings=tuple(_binding_info(binding) for binding in function.get_bindings()),
    )


def _binding_info(binding: Binding) -> BindingInfo:
    # The direction property is BindingDirection's value (IN = 0); its name is function.json's word.
    direction = BindingDirection(binding.direction).name.lower()
    return BindingInfo(str(binding.type), direction, binding.name)


def _http_route(
    function_name: str, trigger_param: str, trigger_repr: Mapping[str, Any], bindings: Iterable[Binding]
) -> HttpRoute:
    methods = trigger_repr.get("methods")
    auth_level = trigger_repr.get("authLevel")
    client = next((b.name for b in bindings if is_durable_client(str(b.type))), None)
    return HttpRoute(
        # build() already defaults the route to the function name; repeat it for apps built otherwise.
        route=str(trigger_repr.get("route") or function_name),
        methods=tuple(_enum_text(m).upper() for m in methods) if methods else ALL_HTTP_METHODS,
        auth_level=_enum_text(auth_level).lower() if auth_level is not None else "function",
        request_param=trigger_param,
        durable_client_param=client,
    )


def _enum_text(value: object) -> str:
    # The dict repr holds func.AuthLevel / func.HttpMethod members, whose str() is the member *name*.
    return str(value.value if isinstance(value, enum.Enum) else value)


def _warn_sync_client_function(function_name: str, user_function: Callable[..., Any]) -> None:
    # df's durable-client middleware keeps the user's function as `client_function` and awaits it.
    inner = getattr(user_function, "client_function", None)
    if inner is not None and not inspect.iscoroutinefunction(inner):
        logger.warning(
            "HTTP function %s uses a durable client but is not async: azure-functions-durable awaits it,"
            " so every call will fail; declare it with `async def`",
            function_name,
        )


def _find_app(module: ModuleType, script: Path) -> func.FunctionRegister:
    apps: list[func.FunctionRegister] = []
    names: list[str] = []
    for name, value in vars(module).items():
        # FunctionRegister, not FunctionApp: df.DFApp derives from FunctionRegister only. Blueprints
        # derive from neither. The same object under two names is one app.
        if isinstance(value, func.FunctionRegister) and not any(value is app for app in apps):
            apps.append(value)
            names.append(name)
    if not apps:
        raise AppLoadError(
            f"{script} defines no function app: add `app = df.DFApp()` (or `app = func.FunctionApp()`)"
            " at module level and register your blueprints on it"
        )
    if len(apps) > 1:
        raise AppLoadError(
            f"{script} defines {len(apps)} function apps ({', '.join(names)}): keep one and register"
            " blueprints on it"
        )
    return apps[0]


# --- importing --------------------------------------------------------------------------------------


def _import_script(app_dir: Path, script: Path) -> ModuleType:
    module_name = _module_name_for(app_dir, script)
    spec = importlib.util.spec_from_file_location(module_name, script)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot import {script}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    try:
        # function_app itself stays when another directory loads: that app gets a unique module name.
        with tracked_import(app_dir, keep=frozenset({MODULE_NAME})) as owned:
            owned.add(module_name)
            # Registered before it runs, as `import` does, so the app's modules can import it back.
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        raise import_error(exc, app_dir, script) from None
    logger.debug("Imported %s as module %s", script, module_name)
    return module


def _module_name_for(app_dir: Path, script: Path) -> str:
    existing = sys.modules.get(MODULE_NAME)
    if existing is None or module_paths(existing) == [script]:
        return MODULE_NAME
    digest = hashlib.sha1(str(app_dir).encode(), usedforsecurity=False).hexdigest()[:12]
    unique = f"{MODULE_NAME}_{digest}"
    logger.debug("%s is taken by %s; importing %s as %s", MODULE_NAME, existing, script, unique)
    return unique
