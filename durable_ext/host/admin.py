"""The Functions host's admin routes that tools and test fixtures call: host status, ping, functions.

What the Functions host answers (``HostController`` and ``FunctionsController``, with the
``HostStatus`` and ``FunctionMetadataResponse`` models), reproduced for the local host:

- ``GET /admin/host/status``: ``{"id", "state": "Running", "version", "versionDetails",
  "platformVersion", "instanceId", "computerName", "processUptime", "functionAppContentEditingState"}``.
  The id is the host's local default (sanitized machine name, ``-``, a stable hash of the app
  directory; lower case, at most 32 characters) unless the ``AzureFunctionsWebHost__hostid`` setting
  names one. ``version`` is durable_ext's. The three platform fields are the values of
  ``WEBSITE_PLATFORM_VERSION``, ``WEBSITE_INSTANCE_ID`` and ``COMPUTERNAME``, empty strings locally, as
  in the host. The routes are served once the host is ready, so the state is always ``Running``.
- ``GET|POST /admin/host/ping``: 200 with no body and no key, for load balancers.
- ``GET /admin/functions``: every function of the app, sorted by name ignoring case, also those
  ``--functions`` leaves out (the host lists them without its allow list too), each as
  ``FunctionMetadataResponse``: ``name``, the ``/admin/vfs`` links of the script, ``href``,
  ``invoke_url_template`` (lower case, as the host makes it; HTTP functions only), ``language``,
  ``config`` (name, entryPoint, scriptFile, language, functionDirectory, bindings) and the flags.
- ``GET /admin/functions/{name}``: one of them (404 without a body when there is none).

Keys: the host requires the master key on these routes (``AdminAuthLevel``); Core Tools lets every
request through unless started with ``--enableAuth``. Here: the system key when one is configured,
nothing otherwise (401 with no body without it, as the host). Ping is anonymous in both.

Two choices where the host's answer could not be reproduced: URLs use the request's scheme and host
(the host's list uses ``https://`` + ``WEBSITE_HOSTNAME``, which under Core Tools gives https URLs of an
http server), and ``config.bindings`` is rebuilt from the function registry, so binding properties
other than the trigger's name, type, direction, route, methods, authLevel and Durable Functions name
are not listed.
"""

from __future__ import annotations

import platform
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from durable_ext.app_loader import SCRIPT_FILE, FunctionKind, FunctionRegistry, RegisteredFunction
from durable_ext.host.guard import presents_key

HOST_ID_SETTING = "AzureFunctionsWebHost__hostid"
"""App setting that overrides the host id (``AzureFunctionsWebHost:hostid`` in .NET configuration)."""

MAX_HOST_ID_LENGTH = 32
"""The host truncates host ids to this length."""

_STARTED = time.monotonic()
# Loaded as the command line starts the host, so this is the process uptime to within its imports.

_EXPLICIT_NAME_KEY = {
    FunctionKind.ORCHESTRATOR: "orchestration",
    FunctionKind.ACTIVITY: "activity",
    FunctionKind.ENTITY: "entityName",
}


@dataclass(frozen=True)
class AdminContext:
    """What the admin routes report on: the app, its settings and the key guarding them."""

    registry: FunctionRegistry
    """Every function of the app (before any ``--functions`` filter)."""
    app_dir: Path
    route_prefix: str
    settings: Mapping[str, str]
    system_key: str | None


Answer = Callable[[AdminContext, Request], Response]
"""Answers one admin request about the app in the context."""


def admin_routes(context: AdminContext) -> list[BaseRoute]:
    """The ``/admin/...`` routes of the Functions host, for the app in ``context``."""

    def guarded(answer: Answer) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            key = context.system_key
            if key is not None and not presents_key(request, key):
                return Response(status_code=401)
            return answer(context, request)

        return endpoint

    return [
        Route("/admin/host/status", guarded(_host_status), methods=["GET"]),
        Route("/admin/host/ping", _ping, methods=["GET", "POST"]),
        Route("/admin/functions", guarded(_list_functions), methods=["GET"]),
        Route("/admin/functions/{name}", guarded(_get_function), methods=["GET"]),
    ]


async def _ping(request: Request) -> Response:
    return Response(status_code=200, headers={"Cache-Control": "no-store, no-cache"})


def host_id(app_dir: Path, settings: Mapping[str, str]) -> str:
    """The host id: the ``AzureFunctionsWebHost__hostid`` setting, else the host's local default."""
    configured = _setting(settings, HOST_ID_SETTING)
    if configured is not None:
        return configured
    machine = "".join(ch for ch in socket.gethostname() if ch.isalnum())
    default = f"{machine}-{abs(stable_hash(str(app_dir)))}"
    return default[:MAX_HOST_ID_LENGTH].lower().rstrip("-")


def stable_hash(text: str) -> int:
    """The host's ``Utility.GetStableHash``: 23, then ``hash * 31 + c`` per UTF-16 unit, in 32-bit ints."""
    value = 23
    units = text.encode("utf-16-le")
    for index in range(0, len(units), 2):
        value = (value * 31 + int.from_bytes(units[index : index + 2], "little")) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _setting(settings: Mapping[str, str], name: str) -> str | None:
    # .NET configuration: "__" and ":" separate sections, names ignore case.
    wanted = {name.lower(), name.lower().replace("__", ":")}
    return next((value for key, value in settings.items() if key.lower() in wanted), None)


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``; None if it is not installed (as when durable_ext runs
    from a source tree that was never pip-installed)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _host_status(context: AdminContext, request: Request) -> Response:
    settings = context.settings
    # "Unknown" is what the host reports when an assembly has no file version.
    df_version = installed_version("azure-functions-durable") or "Unknown"
    version = installed_version("durable-ext") or "Unknown"
    python = platform.python_version()
    status = {
        "id": host_id(context.app_dir, settings),
        "state": "Running",
        "version": version,
        "versionDetails": (f"{version} (durable_ext; azure-functions-durable {df_version}; Python {python})"),
        "platformVersion": _setting(settings, "WEBSITE_PLATFORM_VERSION") or "",
        "instanceId": _setting(settings, "WEBSITE_INSTANCE_ID") or "",
        "computerName": _setting(settings, "COMPUTERNAME") or "",
        "processUptime": int((time.monotonic() - _STARTED) * 1000),
        "functionAppContentEditingState": "Unknown",
    }
    return JSONResponse(status)


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _list_functions(context: AdminContext, request: Request) -> Response:
    functions = sorted(context.registry.functions, key=lambda function: function.function_name.lower())
    return JSONResponse([_metadata(context, function, _origin(request)) for function in functions])


def _get_function(context: AdminContext, request: Request) -> Response:
    wanted = str(request.path_params["name"]).lower()
    for function in context.registry.functions:
        if function.function_name.lower() == wanted:
            return JSONResponse(_metadata(context, function, _origin(request)))
    return Response(status_code=404)


def _vfs_url(base_url: str, path: Path) -> str:
    # The host's VirtualFileSystem.FilePathToVfsUri on Linux: the absolute path under /admin/vfs/.
    return f"{base_url}/admin/vfs/{str(path).strip('/')}"


def _metadata(context: AdminContext, function: RegisteredFunction, base_url: str) -> dict[str, Any]:
    name = function.function_name
    return {
        "name": name,
        "script_root_path_href": None,  # a function folder exists only in the v1 model
        "script_href": _vfs_url(base_url, context.app_dir / SCRIPT_FILE),
        "config_href": None,
        "test_data_href": None,
        "href": f"{base_url}/admin/functions/{name}",
        "invoke_url_template": _invoke_url_template(context, function, base_url),
        "language": "python",
        "config": {
            "name": name,
            "entryPoint": "",
            "scriptFile": SCRIPT_FILE,
            "language": "python",
            "functionDirectory": str(context.app_dir),
            "bindings": _bindings(function),
        },
        "files": None,
        "test_data": None,
        "isDisabled": False,
        "isDirect": False,
        "isProxy": False,
    }


def _invoke_url_template(context: AdminContext, function: RegisteredFunction, base_url: str) -> str | None:
    if function.http is None:
        return None
    url = base_url.rstrip("/")
    prefix = context.route_prefix.rstrip("/")
    if prefix:
        url += f"/{prefix}"
    # The loader gives a route-less HTTP function its name as route, as the host does.
    url += f"/{function.http.route}"
    return url.lower()  # the host lower-cases the whole template


def _bindings(function: RegisteredFunction) -> list[dict[str, Any]]:
    trigger: dict[str, Any] = {
        "direction": "IN",
        "type": function.trigger_type,
        "name": function.trigger_param,
    }
    explicit = _EXPLICIT_NAME_KEY.get(function.kind)
    if explicit is not None and function.name != function.function_name:
        trigger[explicit] = function.name
    bindings = [trigger]
    http = function.http
    if http is not None:
        trigger.update(methods=list(http.methods), authLevel=http.auth_level.upper(), route=http.route)
        if http.durable_client_param is not None:
            bindings.insert(
                0, {"direction": "IN", "type": "durableClient", "name": http.durable_client_param}
            )
        bindings.append({"direction": "OUT", "type": "http", "name": "$return"})
    return bindings
