"""Find the functions of a user's app: import function_app.py and index what its app object declares.

This is the step the Azure Functions Python worker calls "function indexing". :func:`load_app` imports
``function_app.py`` from the app directory, takes the module-level app object (``df.DFApp`` or
``func.FunctionApp``; blueprints are already merged into it by ``app.register_functions(bp)``) and
builds a :class:`FunctionRegistry`: every function with its kind, its Durable Functions name, the
parameter name its trigger value is passed under, the callable to invoke and, for HTTP triggers, the
route.

Facts about the installed ``azure-functions`` / ``azure-functions-durable`` packages this relies on:

- ``df.DFApp`` derives from ``func.FunctionRegister``, not from ``func.FunctionApp``, so the app object
  is found by ``isinstance(obj, func.FunctionRegister)`` (which is also what the Python worker does).
- ``FunctionRegister.get_functions()`` remembers the names it has seen on the app and reports every
  function as a duplicate on a second call; :meth:`FunctionRegistry.from_app` resets that memo first.
- Orchestrator and entity callables are df's wrappers, ``handle(context)``: call them with the context
  JSON **positionally**. Their parameter is named ``context`` whatever ``context_name`` says, so passing
  the value as keyword :attr:`RegisteredFunction.trigger_param` fails unless that name is ``context``.
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
import importlib
import importlib.util
import inspect
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
from azure.functions.decorators.core import Binding

from durable_ext.errors import AppLoadError

logger = logging.getLogger(__name__)

SCRIPT_FILE = "function_app.py"
"""The file the Python v2 programming model indexes (``azure.functions`` calls it SCRIPT_FILE_NAME)."""

MODULE_NAME = "function_app"
"""The module name ``function_app.py`` is imported as, as the Python worker does."""

ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"
ENTITY_TRIGGER = "entityTrigger"
HTTP_TRIGGER = "httpTrigger"
DURABLE_CLIENT = "durableClient"

ALL_HTTP_METHODS: tuple[str, ...] = ("GET", "POST", "DELETE", "HEAD", "PATCH", "PUT", "OPTIONS")
"""What an HTTP trigger without ``methods`` accepts (the members of ``func.HttpMethod``)."""


class FunctionKind(enum.Enum):
    """What a function is, decided by its trigger binding."""

    ORCHESTRATOR = "orchestrator"
    ACTIVITY = "activity"
    ENTITY = "entity"
    HTTP = "http"
    OTHER = "other"
    """Any other trigger (timer, queue, blob, ...): indexed so it can be reported, but not run."""


_KIND_OF_TRIGGER: dict[str, FunctionKind] = {
    ORCHESTRATION_TRIGGER: FunctionKind.ORCHESTRATOR,
    ACTIVITY_TRIGGER: FunctionKind.ACTIVITY,
    ENTITY_TRIGGER: FunctionKind.ENTITY,
    HTTP_TRIGGER: FunctionKind.HTTP,
}

# The key of the trigger's dict repr holding an explicit Durable Functions name.
_EXPLICIT_NAME_KEY: dict[FunctionKind, str] = {
    FunctionKind.ORCHESTRATOR: "orchestration",
    FunctionKind.ACTIVITY: "activity",
    FunctionKind.ENTITY: "entityName",
}

_DURABLE_KINDS = frozenset(_EXPLICIT_NAME_KEY)


@dataclass(frozen=True)
class HttpRoute:
    """How an HTTP-triggered function is reached."""

    route: str
    """The route template without the route prefix, e.g. ``orchestrators/{functionName}``; the function
    name when the decorator gave none (as the Functions host does)."""
    methods: tuple[str, ...]
    """Upper-case HTTP methods; :data:`ALL_HTTP_METHODS` when the decorator gave none."""
    auth_level: str
    """``anonymous``, ``function`` or ``admin`` (the app's level when the decorator gave none)."""
    request_param: str
    """The parameter the ``func.HttpRequest`` is passed as (the trigger binding's name)."""
    durable_client_param: str | None
    """The parameter the durable client binding JSON string is passed as, or None without one."""


@dataclass(frozen=True)
class RegisteredFunction:
    """One function of the app, with what is needed to invoke it."""

    name: str
    """The name Durable Functions knows the function by: the explicit trigger name when the decorator
    gave one, otherwise :attr:`function_name`. Lookups by this name ignore case."""
    kind: FunctionKind
    trigger_param: str
    """The trigger binding's name: the parameter the trigger value is passed as. Orchestrators and entities
    are the exception: pass their context positionally (see the module docstring)."""
    callable: Callable[..., Any]
    """``Function.get_user_function()``: for orchestrators and entities df's wrapper taking the context
    JSON and returning a JSON string; for activities and HTTP functions the user's function."""
    is_async: bool
    """Whether :attr:`callable` returns a coroutine to await."""
    http: HttpRoute | None
    """The route of an HTTP function; None for every other kind."""
    trigger_type: str
    """The trigger binding's raw type, e.g. ``orchestrationTrigger`` or ``timerTrigger``."""
    function_name: str
    """The Azure Functions function name (``get_function_name()``): Python name or ``@app.function_name``."""


@dataclass(frozen=True)
class FunctionRegistry:
    """The functions of one app, looked up the way Durable Functions resolves names.

    Orchestrator, activity and entity names are compared ignoring case, as the Durable Task extension
    does; that is also what makes entity lookup work, because df lower-cases the entity name in every
    entity ID (``df.EntityId("Counter", "k")`` is ``@counter@k``) while the function may be ``Counter``.
    Each kind is its own namespace: an orchestrator and an activity may share a name.
    """

    functions: tuple[RegisteredFunction, ...]
    _index: Mapping[tuple[FunctionKind, str], RegisteredFunction] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[tuple[FunctionKind, str], RegisteredFunction] = {}
        for function in self.functions:
            key = (function.kind, function.name.lower())
            other = index.get(key)
            if other is None:
                index[key] = function
            elif function.kind in _DURABLE_KINDS:
                # Durable Functions could not tell them apart: refuse rather than pick one silently.
                raise AppLoadError(
                    f"two {function.kind.value} functions are named {function.name!r} (names ignore case):"
                    f" {other.function_name!r} and {function.function_name!r}; rename one"
                )
        # A frozen dataclass can only set its derived fields through object.__setattr__.
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_app(cls, app: func.FunctionRegister) -> FunctionRegistry:
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
            raise AppLoadError(f"the app's functions are invalid: {_first_line(exc)}") from None
        return cls(tuple(_register(function) for function in functions))

    def get(self, name: str, kind: FunctionKind | None = None) -> RegisteredFunction | None:
        """The function called ``name`` (ignoring case) of the given kind, or of any kind when None.

        Pass the kind when resolving a Durable Functions name: kinds are separate namespaces.
        """
        if kind is not None:
            return self._index.get((kind, name.lower()))
        wanted = name.lower()
        return next((f for f in self.functions if f.name.lower() == wanted), None)

    @property
    def orchestrators(self) -> tuple[RegisteredFunction, ...]:
        """The orchestrator functions, in registration order."""
        return self._of_kind(FunctionKind.ORCHESTRATOR)

    @property
    def activities(self) -> tuple[RegisteredFunction, ...]:
        """The activity functions, in registration order."""
        return self._of_kind(FunctionKind.ACTIVITY)

    @property
    def entities(self) -> tuple[RegisteredFunction, ...]:
        """The entity functions, in registration order."""
        return self._of_kind(FunctionKind.ENTITY)

    @property
    def http_functions(self) -> tuple[RegisteredFunction, ...]:
        """The HTTP-triggered functions, in registration order."""
        return self._of_kind(FunctionKind.HTTP)

    def _of_kind(self, kind: FunctionKind) -> tuple[RegisteredFunction, ...]:
        return tuple(f for f in self.functions if f.kind is kind)


def load_app(app_dir: Path, script_file: str = SCRIPT_FILE) -> FunctionRegistry:
    """Import ``app_dir/script_file`` and index its app object.

    ``app_dir`` goes first on ``sys.path`` (the app's own packages, such as ``orchestrators``, import from
    there) and the script is executed afresh as module ``function_app``, or under a name unique to the
    directory when another directory's ``function_app`` is already imported. Modules a previous load
    of the same directory imported are imported afresh too; those of another directory are dropped from
    ``sys.modules`` only where this app has a module of the same name.

    Raises :class:`AppLoadError` when the script is missing, raises while importing (the user's traceback
    is in :attr:`AppLoadError.user_traceback`), defines no app object or more than one, or declares
    invalid or clashing functions.
    """
    app_dir = Path(app_dir).resolve()
    script = app_dir / script_file
    if not script.is_file():
        raise AppLoadError(f"no {script_file} in {app_dir}: run from your app's directory or pass --app-dir")
    with _import_lock:
        module = _import_script(app_dir, script)
    registry = FunctionRegistry.from_app(_find_app(module, script))
    logger.info(
        "Loaded %s: %d orchestrator(s), %d activity(ies), %d entity(ies), %d HTTP function(s)",
        script,
        len(registry.orchestrators),
        len(registry.activities),
        len(registry.entities),
        len(registry.http_functions),
    )
    for function in registry.functions:
        logger.debug("  %s %s (%s)", function.kind.value, function.name, function.trigger_type)
    return registry


# --- indexing ---------------------------------------------------------------------------------------


def _register(function: func.Function) -> RegisteredFunction:
    function_name = function.get_function_name()
    trigger = function.get_trigger()
    if not function_name or trigger is None:  # build() has checked both; keep mypy and readers sure
        raise AppLoadError(f"function {function_name!r} has no name or no trigger")
    trigger_repr: dict[str, Any] = trigger.get_dict_repr()
    trigger_type = str(trigger.type)
    kind = _KIND_OF_TRIGGER.get(trigger_type, FunctionKind.OTHER)
    explicit = trigger_repr.get(_EXPLICIT_NAME_KEY[kind]) if kind in _DURABLE_KINDS else None
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
    )


def _http_route(
    function_name: str, trigger_param: str, trigger_repr: Mapping[str, Any], bindings: Iterable[Binding]
) -> HttpRoute:
    methods = trigger_repr.get("methods")
    auth_level = trigger_repr.get("authLevel")
    client = next((b.name for b in bindings if str(b.type) == DURABLE_CLIENT), None)
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

# sys.modules and sys.path are process-wide; one load at a time keeps the bookkeeping below consistent.
_import_lock = threading.Lock()

# App directory -> names of the app's own modules its last load imported. A later load of the same
# directory drops them (fresh import); a load of another directory drops those it would otherwise
# pick up instead of its own (same top-level name).
_app_modules: dict[Path, set[str]] = {}

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _import_script(app_dir: Path, script: Path) -> ModuleType:
    _forget_modules(app_dir)
    module_name = _module_name_for(app_dir, script)
    _put_first_on_path(app_dir)
    # The path finders cache directory listings; an app written moments ago may not be in them yet.
    importlib.invalidate_caches()

    spec = importlib.util.spec_from_file_location(module_name, script)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot import {script}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    # Registered before it runs, as `import` does, so the app's modules can import it back.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        # Leave nothing half-imported behind: the next attempt must run the user's code again.
        for name in _new_app_modules(before, app_dir) | {module_name}:
            sys.modules.pop(name, None)
        raise _import_error(exc, app_dir, script) from None
    _app_modules[app_dir] = _new_app_modules(before, app_dir) | {module_name}
    logger.debug("Imported %s as module %s", script, module_name)
    return module


def _forget_modules(app_dir: Path) -> None:
    for loaded_dir, names in list(_app_modules.items()):
        if loaded_dir == app_dir:
            dropped = set(names)
            del _app_modules[loaded_dir]
        else:
            # function_app itself stays: this app gets a unique module name instead (see below).
            dropped = {n for n in names if n.partition(".")[0] != MODULE_NAME and _shadows(n, app_dir)}
            names.difference_update(dropped)
        for name in dropped:
            sys.modules.pop(name, None)


def _shadows(module_name: str, app_dir: Path) -> bool:
    top = module_name.partition(".")[0]
    return (app_dir / f"{top}.py").is_file() or (app_dir / top).is_dir()


def _module_name_for(app_dir: Path, script: Path) -> str:
    existing = sys.modules.get(MODULE_NAME)
    if existing is None or _module_paths(existing) == [script]:
        return MODULE_NAME
    digest = hashlib.sha1(str(app_dir).encode(), usedforsecurity=False).hexdigest()[:12]
    unique = f"{MODULE_NAME}_{digest}"
    logger.debug("%s is taken by %s; importing %s as %s", MODULE_NAME, existing, script, unique)
    return unique


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
        for path in _module_paths(module):
            # The first path component under app_dir must be the module's own top-level name, so that
            # e.g. packages installed in app_dir/.venv are not taken for the app's modules.
            parts = _relative_parts(path, app_dir)
            if parts and parts[0] in (top, f"{top}.py"):
                owned.add(name)
                break
    return owned


def _module_paths(module: ModuleType) -> list[Path]:
    file = getattr(module, "__file__", None)
    if file:
        return [Path(file).resolve()]
    # Namespace packages have no __file__, only __path__.
    return [Path(p).resolve() for p in getattr(module, "__path__", [])]


def _relative_parts(path: Path, directory: Path) -> tuple[str, ...]:
    try:
        return path.relative_to(directory).parts
    except ValueError:
        return ()


# --- import errors ----------------------------------------------------------------------------------


def _import_error(exc: BaseException, app_dir: Path, script: Path) -> AppLoadError:
    report = traceback.TracebackException.from_exception(exc)
    _keep_user_frames(report, app_dir, set())
    if isinstance(exc, SyntaxError) and exc.filename:
        # A syntax error has no frame in the user's file: the location is part of the exception.
        location = f"{exc.filename}:{exc.lineno}"
        detail = exc.msg
    else:
        innermost = report.stack[-1] if report.stack else None
        location = f"{innermost.filename}:{innermost.lineno}" if innermost else str(script)
        detail = _first_line(exc)
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
