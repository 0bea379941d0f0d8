"""Index a v1 app: one folder per function, each with a function.json, and host.json at the root.

What the Functions host and the Python worker do, and this module repeats:

- The host reads every ``<app>/<Folder>/function.json``; the folder name is the function name (letters,
  digits, ``_`` and ``-``, starting with a letter). ``scriptFile`` is relative to the folder; without
  it the folder's only file, or else its ``__init__.py``, is the script. ``entryPoint`` defaults to
  ``main``. Binding types are compared ignoring case.
- The worker imports the script as a submodule of the namespace package ``__app__``, whose path is the
  app directory: ``<Folder>/__init__.py`` is module ``__app__.<Folder>``, ``<Folder>/run.py`` is
  ``__app__.<Folder>.run``. That is what makes relative imports such as ``from ..shared_code import x``
  work; the app directory is also on ``sys.path``, so ``import shared_code`` works too.
- Each binding name (except ``$return``) must be a parameter of the entry point and each parameter a
  binding, or the function is not loaded. An output binding's parameter receives a ``func.Out``
  whose value is read after the call; a ``$return`` output takes the return value.
- Orchestrators and entities are ``df.Orchestrator.create(fn)`` / ``df.Entity.create(fn)`` handles,
  called with the context JSON; activities receive their input decoded from JSON under the trigger
  binding's name; HTTP functions receive a ``func.HttpRequest`` under the trigger binding's name and
  the durable client binding JSON (``durableClient``, or the legacy ``orchestrationClient``) under its
  name, and answer through the ``http`` output binding, ``$return`` or named.

Bindings durable_ext cannot serve (Twilio, SendGrid, queues, blobs, ...) are reported with one warning
per function at load; their parameters get a ``func.Out`` whose value is discarded, or None for inputs.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import azure.functions as func

from durable_ext.app_loader.importing import first_line, import_error, tracked_import
from durable_ext.app_loader.registry import (
    ALL_HTTP_METHODS,
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

FUNCTION_JSON = "function.json"
APP_PACKAGE = "__app__"
"""The namespace package the Python worker imports v1 functions under."""
DEFAULT_SCRIPT = "__init__.py"
DEFAULT_ENTRY_POINT = "main"
RETURN_BINDING = "$return"
HTTP_OUTPUT = "http"

_DIRECTION = {"in": "input", "out": "output"}

_FUNCTION_NAME = re.compile(r"[a-z][a-z0-9_\-]{0,127}", re.IGNORECASE)
"""The Functions host's rule for function names (``Utility.IsValidFunctionName``)."""

T = TypeVar("T")


def function_folders(app_dir: Path) -> list[Path]:
    """The folders of ``app_dir`` that hold a function.json, sorted by name."""
    return sorted(p.parent for p in app_dir.glob(f"*/{FUNCTION_JSON}") if not p.parent.name.startswith("."))


def index_v1_app(app_dir: Path, only: Collection[str] | None = None) -> FunctionRegistry:
    """Import every function folder of ``app_dir`` (those named in ``only``, any case, if given) under
    ``__app__`` afresh and index it."""
    wanted = None if only is None else {name.lower() for name in only}
    folders = [f for f in function_folders(app_dir) if wanted is None or f.name.lower() in wanted]
    specs = [_read_spec(folder, app_dir) for folder in folders]
    entry_points: list[Callable[..., Any]] = []
    with tracked_import(app_dir) as owned:
        _install_app_package(app_dir, owned)
        for spec in specs:
            entry_points.append(_import_entry_point(spec, app_dir, owned))
    functions = tuple(_register(spec, entry) for spec, entry in zip(specs, entry_points, strict=True))
    return FunctionRegistry(functions, programming_model="v1")


# --- function.json ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Binding:
    name: str
    type: str
    direction: str
    """``in`` or ``out`` (lower case)."""
    settings: Mapping[str, Any]
    """The whole binding object of function.json."""

    @property
    def is_trigger(self) -> bool:
        return self.type.lower().endswith("trigger")


@dataclass(frozen=True)
class _FunctionSpec:
    name: str
    folder: Path
    function_json: Path
    script: Path
    entry_point: str
    bindings: tuple[_Binding, ...]
    trigger: _Binding


def _read_spec(folder: Path, app_dir: Path) -> _FunctionSpec:
    path = folder / FUNCTION_JSON
    name = folder.name
    if not _FUNCTION_NAME.fullmatch(name):
        raise AppLoadError(f"{path}: '{name}' is not a valid function name (letters, digits, _ and -)")
    config = read_function_json(path)
    raw_bindings = config.get("bindings")
    if not isinstance(raw_bindings, list) or not raw_bindings:
        raise AppLoadError(f'{path}: at least one binding must be declared in "bindings"')
    bindings = tuple(_binding(raw, path) for raw in raw_bindings)
    triggers = [b for b in bindings if b.is_trigger]
    if len(triggers) != 1:
        found = ", ".join(b.type for b in triggers) or "none"
        raise AppLoadError(f"{path}: a function needs exactly one trigger binding (found: {found})")
    if config.get("disabled") not in (None, False):
        logger.warning(
            '%s: "disabled" in function.json is ignored by Functions 2.x and later; set the app setting'
            " AzureWebJobs.%s.Disabled to true instead",
            path,
            name,
        )
    entry_point = config.get("entryPoint") or DEFAULT_ENTRY_POINT
    if not isinstance(entry_point, str):
        raise AppLoadError(f'{path}: "entryPoint" must be a string')
    script = script_file(folder, config.get("scriptFile"), path, app_dir)
    return _FunctionSpec(name, folder, path, script, entry_point, bindings, triggers[0])


def read_function_json(path: Path) -> dict[str, Any]:
    """The JSON object in the function.json at ``path`` (AppLoadError when it is not one)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AppLoadError(f"{path}: cannot read it as JSON: {first_line(exc)}") from None
    if not isinstance(config, dict):
        raise AppLoadError(f"{path}: must hold a JSON object")
    return config


def _binding(raw: object, path: Path) -> _Binding:
    if not isinstance(raw, dict):
        raise AppLoadError(f"{path}: every binding must be a JSON object")
    name, kind = raw.get("name"), raw.get("type")
    if not isinstance(name, str) or not name or not isinstance(kind, str) or not kind:
        raise AppLoadError(f'{path}: every binding needs a "name" and a "type" (got {json.dumps(raw)})')
    direction = str(raw.get("direction", "in")).lower()
    if direction not in ("in", "out"):
        # The Python worker: '"inout" bindings are not supported'.
        raise AppLoadError(f"{path}: binding {name!r} has direction {direction!r}; only in and out work")
    if name == RETURN_BINDING and direction != "out":
        raise AppLoadError(f'{path}: "$return" binding must have direction set to "out"')
    return _Binding(name, kind, direction, raw)


def script_file(folder: Path, declared: object, path: Path, app_dir: Path) -> Path:
    """The script of the function in ``folder``, as the host finds it from ``scriptFile`` (or its absence).

    ``path`` is the function.json, for messages; AppLoadError when the script is missing, not a .py
    file, or outside ``app_dir``.
    """
    if declared is not None and not isinstance(declared, str):
        raise AppLoadError(f'{path}: "scriptFile" must be a string')
    if declared:
        script = (folder / declared).resolve()
        if not script.is_file():
            raise AppLoadError(
                f"{path}: the 'scriptFile' property is set to a file that does not exist ({declared})"
            )
    else:
        files = [p for p in folder.iterdir() if p.is_file() and p.name.lower() != FUNCTION_JSON]
        script = files[0] if len(files) == 1 else folder / DEFAULT_SCRIPT
        if not script.is_file():
            raise AppLoadError(f'{path}: no "scriptFile" and no {DEFAULT_SCRIPT} in {folder}')
    if script.suffix != ".py":
        raise AppLoadError(f"{path}: cannot load function {folder.name}: invalid Python filename {script}")
    if not script.is_relative_to(app_dir):
        raise AppLoadError(f"{path}: script path {script} is not inside the app directory {app_dir}")
    return script


# --- importing --------------------------------------------------------------------------------------


def _install_app_package(app_dir: Path, owned: set[str]) -> None:
    """A fresh ``__app__`` namespace package over ``app_dir`` (another app's is dropped)."""
    for name in [n for n in sys.modules if n == APP_PACKAGE or n.startswith(f"{APP_PACKAGE}.")]:
        del sys.modules[name]
    spec = importlib.machinery.ModuleSpec(APP_PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(app_dir)]
    sys.modules[APP_PACKAGE] = importlib.util.module_from_spec(spec)
    owned.add(APP_PACKAGE)


def _module_name(spec: _FunctionSpec, app_dir: Path) -> str:
    parts = [APP_PACKAGE, *spec.script.relative_to(app_dir).parts[:-1]]
    if spec.script.stem.lower() != "__init__":
        parts.append(spec.script.stem)
    return ".".join(parts)


def _import_entry_point(spec: _FunctionSpec, app_dir: Path, owned: set[str]) -> Callable[..., Any]:
    module_name = _module_name(spec, app_dir)
    before = set(sys.modules)
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        raise import_error(exc, app_dir, spec.script) from None
    finally:
        owned.update(n for n in set(sys.modules) - before if n.startswith(f"{APP_PACKAGE}."))
    entry = getattr(module, spec.entry_point, None)
    if entry is None or not callable(entry):
        relative = spec.script.relative_to(app_dir)
        raise AppLoadError(
            f"cannot load function {spec.name}: function {spec.entry_point}() is not present in {relative}"
        )
    return entry  # type: ignore[no-any-return]


# --- indexing ---------------------------------------------------------------------------------------


def _register(spec: _FunctionSpec, entry: Callable[..., Any]) -> RegisteredFunction:
    _check_parameters(spec, entry)
    kind = kind_of_trigger(spec.trigger.type)
    client = next((b.name for b in spec.bindings if is_durable_client(b.type) and b.direction == "in"), None)
    _warn_unserved_bindings(spec, kind, client)
    is_async = inspect.iscoroutinefunction(entry)
    if kind in (FunctionKind.ORCHESTRATOR, FunctionKind.ENTITY):
        # df's handle takes the context JSON positionally, as for v2 apps.
        invoke = entry
    else:
        invoke = _Invocation(spec, entry, kind).wrapper(is_async)
    if kind is FunctionKind.OTHER:
        logger.warning(
            "Function %s has a %s trigger, which durable_ext does not run", spec.name, spec.trigger.type
        )
    return RegisteredFunction(
        name=spec.name,
        kind=kind,
        trigger_param=spec.trigger.name,
        callable=invoke,
        is_async=is_async,
        http=_http_route(spec, client) if kind is FunctionKind.HTTP else None,
        trigger_type=spec.trigger.type,
        function_name=spec.name,
        bindings=tuple(
            BindingInfo(b.type, b.direction, b.name)
            for b in sorted(spec.bindings, key=lambda b: not b.is_trigger)
        ),
    )


def _check_parameters(spec: _FunctionSpec, entry: Callable[..., Any]) -> None:
    """The Python worker's check: the entry point's parameters are exactly the binding names."""
    try:
        params = set(inspect.signature(entry).parameters)
    except (TypeError, ValueError):
        return  # a builtin or C callable: the call itself will tell
    bound = {b.name for b in spec.bindings if b.name != RETURN_BINDING}
    problem = ""
    if "context" in params and "context" not in bound:
        problem = "its 'context' parameter (func.Context) is not supplied by durable_ext; remove it"
    elif params - bound:
        problem = (
            f"the following parameters are declared in Python but not in function.json: {params - bound!r}"
        )
    elif bound - params:
        problem = (
            f"the following parameters are declared in function.json but not in Python: {bound - params!r}"
        )
    if problem:
        raise AppLoadError(f"cannot load the {spec.name} function ({spec.function_json}): {problem}")


def _served(binding: _Binding, kind: FunctionKind, client: str | None) -> bool:
    if binding.is_trigger or (binding.name == client and kind is FunctionKind.HTTP):
        return True
    return kind is FunctionKind.HTTP and binding.direction == "out" and binding.type.lower() == HTTP_OUTPUT


def _warn_unserved_bindings(spec: _FunctionSpec, kind: FunctionKind, client: str | None) -> None:
    if kind is FunctionKind.OTHER:
        return  # not run at all, which the trigger warning says
    unserved = [b for b in spec.bindings if not _served(b, kind, client)]
    if not unserved:
        return
    described = ", ".join(f"{b.type} {_DIRECTION[b.direction]} '{b.name}'" for b in unserved)
    logger.warning(
        "Function %s: durable_ext cannot serve its %s binding(s): what the function sets on an output is"
        " discarded and an input is None; they work in Azure only",
        spec.name,
        described,
    )


def _http_route(spec: _FunctionSpec, client: str | None) -> HttpRoute:
    settings = spec.trigger.settings
    methods = settings.get("methods")
    if methods is not None and (
        not isinstance(methods, list) or not all(isinstance(m, str) for m in methods)
    ):
        raise AppLoadError(f'{spec.function_json}: "methods" must be a list of HTTP method names')
    route = settings.get("route")
    if route is not None and not isinstance(route, str):
        raise AppLoadError(f'{spec.function_json}: "route" must be a string')
    auth_level = str(settings.get("authLevel") or "function").lower()
    if auth_level not in ("anonymous", "function", "admin"):
        raise AppLoadError(
            f'{spec.function_json}: "authLevel" must be anonymous, function or admin, not {auth_level!r}'
        )
    return HttpRoute(
        route=route or spec.name,
        methods=tuple(m.upper() for m in methods) if methods else ALL_HTTP_METHODS,
        auth_level=auth_level,
        request_param=spec.trigger.name,
        durable_client_param=client,
    )


# --- invocation -------------------------------------------------------------------------------------


class _Out(func.Out[T], Generic[T]):
    """The value an output binding parameter is given, as the Python worker's ``Out``."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        """Set the output value."""
        self._value = val

    def get(self) -> T:
        """The output value (None when the function set none)."""
        return self._value  # type: ignore[return-value]


class _Invocation:
    """Calls a v1 activity or HTTP function with every binding parameter it declares."""

    def __init__(self, spec: _FunctionSpec, entry: Callable[..., Any], kind: FunctionKind) -> None:
        self._spec = spec
        self._entry = entry
        outputs = [b for b in spec.bindings if b.direction == "out" and b.name != RETURN_BINDING]
        self._out_params = [b.name for b in outputs]
        self._in_params = [b.name for b in spec.bindings if b.direction == "in"]
        http_out = [b.name for b in outputs if b.type.lower() == HTTP_OUTPUT]
        # A named http output binding answers the request; otherwise the return value does.
        self._response_param = http_out[0] if kind is FunctionKind.HTTP and http_out else None

    def wrapper(self, is_async: bool) -> Callable[..., Any]:
        """A callable taking the trigger (and durable client) keyword arguments, sync or async as the
        entry point."""
        if is_async:

            async def call_async(**supplied: Any) -> Any:
                arguments, outs = self._arguments(supplied)
                return self._result(await self._entry(**arguments), outs)

            return call_async

        def call(**supplied: Any) -> Any:
            arguments, outs = self._arguments(supplied)
            return self._result(self._entry(**arguments), outs)

        return call

    def _arguments(self, supplied: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, _Out[Any]]]:
        outs: dict[str, _Out[Any]] = {name: _Out() for name in self._out_params}
        arguments: dict[str, Any] = {name: supplied.get(name) for name in self._in_params}
        arguments.update(outs)
        return arguments, outs

    def _result(self, returned: Any, outs: Mapping[str, _Out[Any]]) -> Any:
        if self._response_param is None:
            return returned
        response = outs[self._response_param].get()
        if response is None:
            raise RuntimeError(
                f"Functions.{self._spec.name} did not set its http output binding '{self._response_param}'"
            )
        return response
