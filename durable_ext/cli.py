"""The ``durable-ext`` / ``python -m durable_ext`` command line.

This module only parses arguments and prints results; the work happens in
:class:`~durable_ext.storage.taskhub.TaskHub` and :class:`~durable_ext.host.azurite.Azurite`.

Top-level subcommands live in a registry (:data:`COMMANDS`): a function decorated with
:func:`command` receives the subcommand's parser, adds its arguments and sets ``handler`` (a
:data:`Handler`) with ``parser.set_defaults``.  :func:`main` runs the chosen handler and turns every
:class:`~durable_ext.errors.DurableExtError` into one ``error: <message>`` line and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from durable_ext import console
from durable_ext.config import (
    DEFAULT_CONNECTION_NAME,
    DEV_STORAGE_CONNECTION,
    HOST_JSON,
    LOCAL_SETTINGS_JSON,
    HostConfig,
    HostStartSettings,
    load_config,
    load_host_start_settings,
    load_log_levels,
)
from durable_ext.dashboard.command import DashboardCommandOptions, DashboardServer
from durable_ext.deploy_check import check_deploy
from durable_ext.doctor import Finding, diagnose, repair
from durable_ext.errors import AppLoadError, ConfigError, DurableExtError, ReplayMismatchError
from durable_ext.history_file import export_history, read_history_file
from durable_ext.history_replay import HistoryReplayer
from durable_ext.host.azurite import DEFAULT_PORTS, Azurite, AzuritePorts
from durable_ext.host.cors import CorsPolicy, cors_policy
from durable_ext.host.local import DEFAULT_GRACE_PERIOD, LocalHost, LocalHostOptions
from durable_ext.lint import LintPathError, lint_paths
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import ResourceInfo, TaskHub, TaskHubInfo

logger = logging.getLogger(__name__)

PROG = "python -m durable_ext"
"""How the command is invoked, for usage lines and hints."""

EXIT_OK = 0
"""Success."""
EXIT_ERROR = 1
"""A durable_ext error (bad configuration, unreachable storage, ...) or a missing task hub."""
EXIT_USAGE = 2
"""Bad command line, or a destructive command refused for lack of confirmation."""
EXIT_DRAIN_TIMEOUT = 3
"""``start`` or ``worker`` stopped before in-flight work finished: the grace period ran out."""
EXIT_INTERRUPTED = 130
"""Interrupted with Ctrl-C (128 + SIGINT) while doing something other than running Azurite."""
EXIT_SIGNAL_BASE = 128
"""``start`` or ``worker`` got a second SIGINT or SIGTERM while draining and stopped at once: the exit
code is this plus the signal's number (130 for SIGINT, 143 for SIGTERM), as for a process that signal
ended."""

Handler = Callable[[argparse.Namespace], int]
"""Runs one subcommand with the parsed arguments and returns the exit code."""

Configure = Callable[[argparse.ArgumentParser], None]
"""Adds a subcommand's arguments to its parser and sets its ``handler`` default."""

DEFAULT_HTTP_PORT = 7071
"""The port ``start`` listens on by default, as ``func start``."""
DEFAULT_HTTP_ADDRESS = "127.0.0.1"
"""The address ``start`` listens on by default (func start's 0.0.0.0 would need a system key here)."""
DEFAULT_WORKER_ADMIN_PORT = 7072
"""The port ``worker`` serves its probes on by default: the one next to the Functions host's."""
GRACE_PERIOD_VARIABLE = "DURABLE_EXT_GRACE_PERIOD"
"""Environment variable with the drain grace period in seconds, when ``--grace-period`` is not given."""

HOST_COMMANDS = frozenset({"start", "worker"})
"""The commands that run the app, with its console."""

_AZURITE_POLL_SECONDS = 0.5
_MAX_PORT = 65535


@dataclass(frozen=True)
class Command:
    """A registered top-level subcommand."""

    name: str
    summary: str
    configure: Configure


COMMANDS: dict[str, Command] = {}
"""Top-level subcommands by name, in registration order (the order ``--help`` lists them)."""


def command(name: str, summary: str) -> Callable[[Configure], Configure]:
    """Register the decorated function as the configurator of top-level subcommand ``name``."""

    def register(configure: Configure) -> Configure:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is already registered")
        COMMANDS[name] = Command(name, summary, configure)
        return configure

    return register


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run Azure Durable Functions Python apps without the .NET host.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: -v for durable_ext's engine detail, -vv for debug including the Azure SDK's requests",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for entry in COMMANDS.values():
        sub = subparsers.add_parser(entry.name, help=entry.summary, description=entry.summary)
        # Also after the command, where `func start --verbose` has it; counted with the global one.
        sub.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=0,
            dest="command_verbose",
            help="same as before COMMAND",
        )
        entry.configure(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return _exit_code(exc.code)
    args.verbosity = args.verbose + args.command_verbose
    if args.command not in HOST_COMMANDS:  # they set up the console from host.json (durable_ext.console)
        _configure_logging(args.verbosity)
    handler: Handler = args.handler
    try:
        return handler(args)
    except DurableExtError as exc:
        logger.debug("%s failed", args.command, exc_info=True)
        if isinstance(exc, AppLoadError) and exc.user_traceback:
            # The user's own traceback first, as func start shows it, then the one-line summary.
            print(exc.user_traceback, file=sys.stderr, end="")
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def add_app_dir_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--app-dir DIR`` (default: the current directory) to ``parser``."""
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=Path(),
        metavar="DIR",
        help="the Functions app directory with host.json and local.settings.json (default: the current one)",
    )


def load_app_config(app_dir: Path) -> HostConfig:
    """Load the configuration of the app in ``app_dir``: host.json, local.settings.json, environment."""
    directory = app_dir.expanduser().resolve()
    if not directory.is_dir():
        raise ConfigError(f"app directory {directory} does not exist or is not a directory")
    config = load_config(directory)
    if not (directory / HOST_JSON).is_file():
        logger.warning(
            "%s has no %s; using default settings (task hub %r)",
            directory,
            HOST_JSON,
            config.durable_task.hub_name,
        )
    return config


# --- init -----------------------------------------------------------------------------------------------

# What `func init --worker-runtime python` writes, except that AzureWebJobsStorage points at Azurite
# (func leaves it empty): every Durable Functions app needs storage, and `start` starts Azurite for it.
INIT_FILES: dict[str, dict[str, Any]] = {
    HOST_JSON: {
        "version": "2.0",
        "logging": {
            "applicationInsights": {"samplingSettings": {"isEnabled": True, "excludedTypes": "Request"}}
        },
        "extensionBundle": {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"},
    },
    LOCAL_SETTINGS_JSON: {
        "IsEncrypted": False,
        "Values": {"FUNCTIONS_WORKER_RUNTIME": "python", DEFAULT_CONNECTION_NAME: DEV_STORAGE_CONNECTION},
    },
}
"""The files ``init`` writes, by name, with their JSON content."""


@command("init", "write a minimal host.json and local.settings.json (existing files are kept)")
def _configure_init(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=Path(),
        metavar="DIR",
        help="the directory to write them to, created if missing (default: the current one)",
    )
    parser.set_defaults(handler=_run_init)


def _run_init(args: argparse.Namespace) -> int:
    directory: Path = args.app_dir
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create app directory {directory}: {exc.strerror}") from None
    for name, content in INIT_FILES.items():
        path = directory / name
        try:
            # "x": never overwrite, even a file that appeared since the last look.
            with path.open("x", encoding="utf-8") as file:
                file.write(json.dumps(content, indent=2) + "\n")
        except FileExistsError:
            print(f"{path} already exists. Skipped!")
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
        else:
            print(f"Writing {path}")
    return EXIT_OK


# --- hub ------------------------------------------------------------------------------------------------


@command("hub", "create, delete or inspect the task hub of a Functions app")
def _configure_hub(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="hub_command", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create",
        help="create the task hub's tables, queues and containers",
        description="Create the task hub named in host.json (idempotent: existing resources are kept).",
    )
    add_app_dir_argument(create)
    create.set_defaults(handler=_hub_create)

    delete = actions.add_parser(
        "delete",
        help="delete the task hub's tables, queues and containers",
        description="Delete every resource of the task hub, including all orchestration history.",
    )
    add_app_dir_argument(delete)
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=_hub_delete)

    info = actions.add_parser(
        "info",
        help="show the task hub's resources and partition leases",
        description="Show the task hub's resources and partition leases; exit 1 if the hub does not exist.",
    )
    add_app_dir_argument(info)
    info.add_argument("--json", action="store_true", help="print the information as JSON")
    info.set_defaults(handler=_hub_info)


def _open_hub(config: HostConfig, connection_string: str | None = None) -> TaskHub:
    """A TaskHub for the app's hub (on ``connection_string`` rather than the app's connection, when
    given); call inside the event loop (the SDK clients bind to it)."""
    if connection_string is not None:
        account = StorageAccount.from_connection_string(connection_string)
    else:
        account = StorageAccount.from_connection(config.storage_connection())
    options = config.durable_task
    return TaskHub(account, options.hub_name, options.storage_provider.partition_count)


def _hub_create(args: argparse.Namespace) -> int:
    config = load_app_config(args.app_dir)

    async def run() -> tuple[TaskHubInfo, TaskHubInfo, str]:
        async with _open_hub(config) as hub:
            before = await hub.info()
            await hub.create()
            return before, await hub.info(), hub.names.large_messages_container

    before, after, lazy_container = asyncio.run(run())
    existed = {(r.kind, r.name) for r in before.resources if r.exists}
    created = [r for r in after.resources if r.exists and (r.kind, r.name) not in existed]
    if created:
        print(f"Created task hub {after.hub!r} ({after.partition_count} partitions) in {after.account}:")
    else:
        print(f"Task hub {after.hub!r} already exists in {after.account}; nothing to create:")
    rows = []
    for resource in after.resources:
        if not resource.exists:
            state = "created on first use" if resource.name == lazy_container else "missing"
        else:
            state = "already existed" if (resource.kind, resource.name) in existed else "created"
        rows.append([resource.kind, resource.name, state])
    _print_table(["KIND", "NAME", "STATE"], rows)
    return EXIT_OK if after.exists else EXIT_ERROR


def _hub_delete(args: argparse.Namespace) -> int:
    config = load_app_config(args.app_dir)
    hub_name = config.durable_task.hub_name
    if not args.yes:
        if not _stdin_is_tty():
            print(
                f"error: refusing to delete task hub {hub_name!r} without confirmation: stdin is not a "
                "terminal; pass --yes to delete it",
                file=sys.stderr,
            )
            return EXIT_USAGE
        account = StorageAccount.from_connection(config.storage_connection())
        if not _confirm(
            f"Delete task hub {hub_name!r} in {account.describe()}, with all its orchestration history, "
            "instances and queued messages? [y/N] "
        ):
            print("Aborted; nothing was deleted.", file=sys.stderr)
            return EXIT_ERROR

    async def run() -> TaskHubInfo:
        async with _open_hub(config) as hub:
            before = await hub.info()
            await hub.delete()
            return before

    before = asyncio.run(run())
    existing = [r for r in before.resources if r.exists]
    if existing:
        print(f"Deleted task hub {before.hub!r} from {before.account}:")
        _print_table(["KIND", "NAME"], [[r.kind, r.name] for r in existing])
    else:
        print(f"Task hub {before.hub!r} does not exist in {before.account}; nothing to delete.")
    return EXIT_OK


def _hub_info(args: argparse.Namespace) -> int:
    config = load_app_config(args.app_dir)

    async def run() -> tuple[TaskHubInfo, str]:
        async with _open_hub(config) as hub:
            return await hub.info(), hub.names.partitions_table

    info, partitions_table = asyncio.run(run())
    if args.json:
        print(json.dumps(info_to_json(info), indent=2))
    else:
        _print_info(info, partitions_table)
    if info.exists:
        return EXIT_OK
    core = [r for r in info.resources if r.kind in ("table", "queue")]
    missing = [r.name for r in core if not r.exists]
    problem = "does not exist" if len(missing) == len(core) else f"is missing {', '.join(missing)}"
    app_dir = "" if args.app_dir == Path() else f" --app-dir {args.app_dir}"
    print(
        f"hint: task hub {info.hub!r} {problem}; create it with `{PROG} hub create{app_dir}`", file=sys.stderr
    )
    return EXIT_ERROR


def info_to_json(info: TaskHubInfo) -> dict[str, Any]:
    """The JSON form of ``info`` printed by ``hub info --json`` (times are ISO 8601 strings)."""
    return {
        "hub": info.hub,
        "account": info.account,
        "partition_count": info.partition_count,
        "exists": info.exists,
        "resources": [
            {"kind": r.kind, "name": r.name, "exists": r.exists, "message_count": r.message_count}
            for r in info.resources
        ],
        "partitions": [
            {
                "partition_id": p.partition_id,
                "current_owner": p.current_owner,
                "next_owner": p.next_owner,
                "owned_since": _iso(p.owned_since),
                "last_renewal": _iso(p.last_renewal),
                "expires_at": _iso(p.expires_at),
                "is_draining": p.is_draining,
            }
            for p in info.partitions
        ],
    }


def _print_info(info: TaskHubInfo, partitions_table: str) -> None:
    present = sum(r.exists for r in info.resources if r.kind in ("table", "queue"))
    state = "exists" if info.exists else ("incomplete" if present else "missing")
    print(f"Task hub:        {info.hub}")
    print(f"Account:         {info.account}")
    print(f"Partition count: {info.partition_count}")
    print(f"State:           {state}")
    print()
    print("Resources:")
    _print_table(["KIND", "NAME", "STATE", "MESSAGES"], [_resource_row(r) for r in info.resources])
    print()
    print(f"Partitions ({partitions_table}):")
    if not info.partitions:
        print("  (no rows)")
        return
    _print_table(
        ["PARTITION", "OWNER", "NEXT OWNER", "EXPIRES AT", "DRAINING"],
        [
            [
                p.partition_id,
                p.current_owner or "-",
                p.next_owner or "-",
                _text_time(p.expires_at),
                "yes" if p.is_draining else "no",
            ]
            for p in info.partitions
        ],
    )


def _resource_row(resource: ResourceInfo) -> list[str]:
    count = "-" if resource.message_count is None else str(resource.message_count)
    return [resource.kind, resource.name, "exists" if resource.exists else "missing", count]


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print left-aligned columns, indented by two spaces."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _text_time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _stdin_is_tty() -> bool:
    stdin = sys.stdin
    try:
        return stdin is not None and stdin.isatty()
    except ValueError:  # closed stream
        return False


def _confirm(prompt: str) -> bool:
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


# --- azurite --------------------------------------------------------------------------------------------


@command("azurite", "run the Azurite storage emulator in the foreground until Ctrl-C")
def _configure_azurite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--location",
        type=Path,
        metavar="DIR",
        help="keep Azurite's data in DIR (default: in memory, lost when Azurite stops)",
    )
    parser.add_argument(
        "--port-base",
        type=_port_base,
        default=DEFAULT_PORTS.blob,
        metavar="N",
        help=f"blob port; queue and table use N+1 and N+2 (default: {DEFAULT_PORTS.blob})",
    )
    parser.set_defaults(handler=_run_azurite)


def _port_base(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= _MAX_PORT - 2:
        raise argparse.ArgumentTypeError(f"must be between 1 and {_MAX_PORT - 2}, got {port}")
    return port


def _ports_from(base: int) -> AzuritePorts:
    return AzuritePorts(blob=base, queue=base + 1, table=base + 2)


def _run_azurite(args: argparse.Namespace) -> int:
    location: Path | None = args.location.expanduser().resolve() if args.location is not None else None
    azurite = Azurite(ports=_ports_from(args.port_base), location=location)
    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Without this a plain `kill` would end Python without stopping Azurite, which runs in its own session.
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        azurite.start()
        try:
            storage = f"data in {location}" if location is not None else "in memory"
            ports = azurite.ports
            print(
                f"Azurite is running on 127.0.0.1 (blob {ports.blob}, queue {ports.queue}, "
                f"table {ports.table}; {storage}). Press Ctrl-C to stop.",
                flush=True,
            )
            print("Connection string (set it as AzureWebJobsStorage):", flush=True)
            print(azurite.connection_string, flush=True)
            while not stop.wait(_AZURITE_POLL_SECONDS):
                if not azurite.running:
                    print("error: Azurite exited unexpectedly", file=sys.stderr)
                    return EXIT_ERROR
        except KeyboardInterrupt:
            pass
        finally:
            azurite.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("Azurite stopped.", file=sys.stderr)
    return EXIT_OK


# --- helpers --------------------------------------------------------------------------------------------


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The Azure SDK logs every HTTP request and response at INFO; show that only with -vv.
    logging.getLogger("azure").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)


def _exit_code(code: str | int | None) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_ERROR


# --- start ----------------------------------------------------------------------------------------------


@command("start", "run a Functions app locally (our stand-in for `func start`)")
def _configure_start(parser: argparse.ArgumentParser) -> None:
    add_app_dir_argument(parser)
    parser.add_argument(
        "-p",
        "--port",
        type=_port_base,
        metavar="PORT",
        help=f"HTTP port (default: Host.LocalHttpPort in local.settings.json, else {DEFAULT_HTTP_PORT})",
    )
    parser.add_argument(
        "--host",
        metavar="ADDRESS",
        help=f"address to listen on (default: Host.LocalHttpAddress in local.settings.json, else "
        f"{DEFAULT_HTTP_ADDRESS}); anything but loopback requires a DURABLE_EXT_SYSTEM_KEY of 16+ characters",
    )
    parser.add_argument(
        "--cors",
        metavar="ORIGINS",
        help="comma-separated origins allowed to call the host from a browser, or * for any (default: "
        "Host.CORS in local.settings.json, else none)",
    )
    parser.add_argument(
        "--cors-credentials",
        action="store_true",
        help="allow cross-origin requests with cookies and the Authorization header (also "
        "Host.CORSCredentials in local.settings.json)",
    )
    parser.add_argument(
        "--functions",
        nargs="+",
        metavar="NAME",
        help="load and serve only these functions (default: host.json's functions, else all)",
    )
    parser.add_argument(
        "--azurite-in-memory",
        action="store_true",
        help="when Azurite is started by the host, keep its data in memory instead of .durable_ext/azurite",
    )
    parser.add_argument(
        "--azurite-port",
        type=_port_base,
        default=DEFAULT_PORTS.blob,
        metavar="N",
        help="blob port of the Azurite that UseDevelopmentStorage=true means (and that the host starts "
        f"when nothing answers there); queue and table use N+1 and N+2 (default: {DEFAULT_PORTS.blob})",
    )
    parser.add_argument(
        "--admin-port",
        type=_port_base,
        metavar="N",
        help="also serve the probes (/healthz, /readyz), /metrics and /scale on port N "
        "(default: only on the HTTP port)",
    )
    add_grace_period_argument(parser)
    parser.set_defaults(handler=_run_start)


def add_grace_period_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--grace-period SECONDS`` to ``parser``."""
    parser.add_argument(
        "--grace-period",
        type=_seconds,
        metavar="SECONDS",
        help="on SIGTERM or Ctrl+C, how long in-flight episodes and activities may take to finish before "
        f"the process exits anyway with code {EXIT_DRAIN_TIMEOUT} (default: ${GRACE_PERIOD_VARIABLE}, "
        f"else {DEFAULT_GRACE_PERIOD.total_seconds():.0f})",
    )


def _grace_period(args: argparse.Namespace) -> timedelta:
    if args.grace_period is not None:
        return timedelta(seconds=args.grace_period)
    text = os.environ.get(GRACE_PERIOD_VARIABLE)
    if text is None:
        return DEFAULT_GRACE_PERIOD
    try:
        return timedelta(seconds=_seconds(text))
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{GRACE_PERIOD_VARIABLE}: {exc}") from None


def _run_start(args: argparse.Namespace) -> int:
    grace_period = _grace_period(args)
    app_dir = args.app_dir.expanduser().resolve()
    console.install(console.LogLevels(load_log_levels(app_dir), args.verbosity))
    # Core Tools' precedence: a flag wins over the Host section of local.settings.json.
    defaults = load_host_start_settings(app_dir)
    options = LocalHostOptions(
        app_dir=args.app_dir,
        port=args.port or defaults.local_http_port or DEFAULT_HTTP_PORT,
        host=args.host or defaults.local_http_address or DEFAULT_HTTP_ADDRESS,
        azurite_in_memory=args.azurite_in_memory,
        azurite_ports=_ports_from(args.azurite_port),
        output=lambda line: print(line, flush=True),
        cors=_cors(args, defaults),
        functions=None if args.functions is None else tuple(args.functions),
        admin_port=args.admin_port,
        grace_period=grace_period,
    )
    return _run_host(options, "Host")


def _run_host(options: LocalHostOptions, role: str) -> int:
    """Run ``start`` or ``worker`` until SIGINT or SIGTERM; exit once the engine has drained."""
    host = LocalHost(options)

    async def serve() -> None:
        stop = asyncio.Event()
        signalled: list[signal.Signals] = []

        def on_signal(signum: signal.Signals) -> None:
            # The first signal drains; one more means the operator will not wait for the drain.
            if signalled:
                host.stop()  # the Azurite it started, if any, which os._exit would leave running
                line = f"{role} stopped at once ({signum.name} during the drain): in-flight work cut short."
                _exit_now(line, EXIT_SIGNAL_BASE + signum)
            signalled.append(signum)
            stop.set()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        if not await host.run(stop):
            _exit_now(f"{role} stopped before in-flight work finished.", EXIT_DRAIN_TIMEOUT)

    asyncio.run(serve())
    print(f"{role} stopped.", flush=True)
    return EXIT_OK


def _exit_now(line: str, code: int) -> None:
    """End the process without waiting for the threads of activities still running (as an ordinary
    exit would)."""
    print(line, flush=True)
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


# --- worker ---------------------------------------------------------------------------------------------


@command("worker", "run the app's orchestrations, activities and entities only (no HTTP functions)")
def _configure_worker(parser: argparse.ArgumentParser) -> None:
    add_app_dir_argument(parser)
    parser.add_argument(
        "--admin-port",
        type=_port_base,
        default=DEFAULT_WORKER_ADMIN_PORT,
        metavar="N",
        help="port of the probes /healthz and /readyz, /metrics and /scale "
        f"(default: {DEFAULT_WORKER_ADMIN_PORT})",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HTTP_ADDRESS,
        metavar="ADDRESS",
        help=f"address the probes listen on (default: {DEFAULT_HTTP_ADDRESS}; 0.0.0.0 in a container, "
        "which needs no key: nothing but the probes is served)",
    )
    add_grace_period_argument(parser)
    parser.set_defaults(handler=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    grace_period = _grace_period(args)
    app_dir = args.app_dir.expanduser().resolve()
    console.install(console.LogLevels(load_log_levels(app_dir), args.verbosity))
    options = LocalHostOptions(
        app_dir=args.app_dir,
        port=args.admin_port,
        host=args.host,
        output=lambda line: print(line, flush=True),
        worker=True,
        grace_period=grace_period,
    )
    return _run_host(options, "Worker")


# --- dashboard ------------------------------------------------------------------------------------------


@command("dashboard", "serve the dashboard for task hubs without running an app")
def _configure_dashboard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hub",
        action="append",
        default=[],
        metavar="NAME",
        help="a task hub to show (repeatable; default: every hub found on the accounts)",
    )
    parser.add_argument(
        "--connection",
        action="append",
        default=[],
        metavar="STR",
        help="a storage connection string, or the name of the setting holding one (repeatable; default: "
        f"{DEFAULT_CONNECTION_NAME}); settings are the environment and ./local.settings.json",
    )
    parser.add_argument(
        "-p",
        "--port",
        type=_port_base,
        default=DEFAULT_HTTP_PORT,
        metavar="PORT",
        help=f"HTTP port (default: {DEFAULT_HTTP_PORT})",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HTTP_ADDRESS,
        metavar="ADDRESS",
        help=f"address to listen on (default: {DEFAULT_HTTP_ADDRESS}); anything but loopback requires a "
        "DURABLE_EXT_SYSTEM_KEY of 16+ characters",
    )
    parser.add_argument(
        "--azurite-port",
        type=_port_base,
        default=DEFAULT_PORTS.blob,
        metavar="N",
        help="blob port of the Azurite that UseDevelopmentStorage=true means (started when nothing "
        f"answers there); queue and table use N+1 and N+2 (default: {DEFAULT_PORTS.blob})",
    )
    parser.set_defaults(handler=_run_dashboard)


def _run_dashboard(args: argparse.Namespace) -> int:
    options = DashboardCommandOptions(
        hubs=tuple(args.hub),
        connections=tuple(args.connection) or (DEFAULT_CONNECTION_NAME,),
        port=args.port,
        host=args.host,
        azurite_ports=_ports_from(args.azurite_port),
        output=lambda line: print(line, flush=True),
    )
    server = DashboardServer(options)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await server.run(stop)

    asyncio.run(serve())
    print("Dashboard stopped.", flush=True)
    return EXIT_OK


def _cors(args: argparse.Namespace, defaults: HostStartSettings) -> CorsPolicy | None:
    credentials = args.cors_credentials or defaults.cors_credentials
    if args.cors is not None:
        return cors_policy(args.cors, credentials, source="--cors")
    source = f"Host.CORS in {args.app_dir / LOCAL_SETTINGS_JSON}"
    return cors_policy(defaults.cors or "", credentials, source=source if defaults.cors else "--cors")


# --- doctor ---------------------------------------------------------------------------------------------


@command("doctor", "find (and with --fix repair) History/Instances inconsistencies in the task hub")
def _configure_doctor(parser: argparse.ArgumentParser) -> None:
    add_app_dir_argument(parser)
    parser.add_argument(
        "--fix", action="store_true", help="repair what can be repaired (reported-only findings stay)"
    )
    parser.add_argument(
        "--grace",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="how long a Pending instance or a queued message may wait before it counts (default: 600)",
    )
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.set_defaults(handler=_run_doctor)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return seconds


def _run_doctor(args: argparse.Namespace) -> int:
    """Exit 0 when the hub is clean (or every finding was fixed), 1 when findings remain."""
    config = load_app_config(args.app_dir)

    async def run() -> tuple[str, list[Finding], list[Finding]]:
        async with _open_hub(config) as hub:
            await hub.require_exists()
            findings = await diagnose(hub, pending_grace=timedelta(seconds=args.grace))
            fixed = await repair(hub, findings) if args.fix else []
            return hub.names.hub, findings, fixed

    hub_name, findings, fixed = asyncio.run(run())
    remaining = [f for f in findings if f not in fixed]
    if args.json:
        print(
            json.dumps(
                {
                    "hub": hub_name,
                    "findings": [
                        {
                            "kind": f.kind.value,
                            "instance_id": f.instance_id,
                            "execution_id": f.execution_id,
                            "detail": f.detail,
                            "fixable": f.fixable,
                            "fixed": f in fixed,
                        }
                        for f in findings
                    ],
                },
                indent=2,
            )
        )
    else:
        for finding in findings:
            state = "fixed" if finding in fixed else "fixable" if finding.fixable else "report only"
            print(f"{finding.kind.value} {finding.instance_id} [{state}]: {finding.detail}")
        fixable = sum(f.fixable for f in findings)
        summary = f"Task hub {hub_name!r}: {len(findings)} finding(s), {fixable} fixable"
        if args.fix:
            summary += f", {len(fixed)} fixed"
        elif fixable:
            summary += f"; run `{PROG} doctor --fix` to repair them"
        print(summary + ".")
    return EXIT_OK if not remaining else EXIT_ERROR


# --- lint -----------------------------------------------------------------------------------------------


@command("lint", "check orchestrator functions for code that breaks replay (no import of the app)")
def _configure_lint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[Path()],
        metavar="PATH",
        help="app directories or files to check (default: the current directory); directories are "
        "searched recursively for v2 orchestrators and v1 function.json folders",
    )
    parser.set_defaults(handler=_run_lint)


def _run_lint(args: argparse.Namespace) -> int:
    """Print the findings as ruff does; exit 1 when there are any, 0 when clean, 2 for a bad path."""
    try:
        result = lint_paths(args.paths)
    except LintPathError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not result.orchestrators and not result.findings:
        print(
            f"warning: no orchestrator functions found in {', '.join(map(str, args.paths))}", file=sys.stderr
        )
    for finding in result.findings:
        print(finding)
    count = len(result.findings)
    print(f"Found {count} error{'s' if count != 1 else ''}." if count else "All checks passed!")
    return EXIT_ERROR if count else EXIT_OK


# --- history, replay ------------------------------------------------------------------------------------


@command("history", "export an orchestration's recorded history as JSON (for replay tests)")
def _configure_history(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="history_command", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export",
        help="write an instance's current execution as a history file",
        description="Write the history of an instance's current execution (large payloads read from their "
        "blobs) as a durable_ext history file (JSON), for `replay`.",
    )
    export.add_argument("instance_id", metavar="INSTANCE_ID")
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE (default: stdout)")
    add_app_dir_argument(export)
    export.add_argument(
        "--task-hub", metavar="NAME", help="read this task hub rather than the app's (host.json hubName)"
    )
    export.add_argument(
        "--connection",
        metavar="SETTING|STRING",
        help="the app setting holding the storage connection string, or the connection string itself "
        "(default: the app's storage connection)",
    )
    export.set_defaults(handler=_history_export)


def _history_export(args: argparse.Namespace) -> int:
    config = load_app_config(args.app_dir)
    options = config.durable_task
    connection: str | None = args.connection
    literal = connection if connection is not None and "=" in connection else None
    if connection is not None and literal is None:
        options = dataclasses.replace(
            options,
            storage_provider=dataclasses.replace(options.storage_provider, connection_name=connection),
        )
    if args.task_hub is not None:
        options = dataclasses.replace(options, hub_name=args.task_hub)
    config = dataclasses.replace(config, durable_task=options)

    async def run() -> str:
        async with _open_hub(config, literal) as hub:
            await hub.require_exists()
            history = await export_history(hub, args.instance_id)
            return history.dumps()

    text = asyncio.run(run())
    if args.output is None:
        print(text, end="")
        return EXIT_OK
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {args.output}: {exc.strerror}") from None
    print(f"Wrote the history of instance {args.instance_id!r} to {args.output}", file=sys.stderr)
    return EXIT_OK


@command("replay", "replay recorded histories against the app's orchestrators; exit 1 on any difference")
def _configure_replay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="history files (`history export`)"
    )
    add_app_dir_argument(parser)
    parser.set_defaults(handler=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:
    """Exit 0 when every history replays cleanly, 1 when one differs or cannot be read."""
    replayer = HistoryReplayer(args.app_dir)
    failed = 0
    for path in args.files:
        try:
            history = read_history_file(path)
            replayer.replay(history)
        except ReplayMismatchError as exc:
            failed += 1
            print(f"FAIL {path}: {exc}")
        except DurableExtError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
        else:
            print(f"ok   {path}: {history.name!r}, {len(history.events)} events")
    total = len(args.files)
    print(f"{total - failed} of {total} histories replay cleanly.")
    return EXIT_ERROR if failed else EXIT_OK


@command("check-deploy", "check that the app, deployed to Azure Functions as it is, continues this task hub")
def _configure_check_deploy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "app_dir",
        nargs="?",
        type=Path,
        default=Path(),
        metavar="APP_DIR",
        help="the Functions app directory (default: the current one)",
    )
    parser.set_defaults(handler=_run_check_deploy)


def _run_check_deploy(args: argparse.Namespace) -> int:
    directory: Path = args.app_dir
    if not directory.is_dir():
        raise ConfigError(f"app directory {directory} does not exist or is not a directory")
    report = check_deploy(directory)
    print("\n".join(report.lines()))
    return EXIT_OK if report.deployable else EXIT_ERROR
