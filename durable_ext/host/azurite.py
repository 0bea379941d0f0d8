"""Find, install, start and stop Azurite, the Azure Storage emulator that durable_ext runs on locally.

Azurite is a Node.js program. The project pins its version in ``package.json``; :func:`find_azurite`
locates (and on first use installs) that version, and :class:`Azurite` runs one emulator process with
the blob, queue and table services on chosen or automatically picked ports.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import http.client
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from durable_ext.errors import AzuriteError
from durable_ext.storage.account import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

logger = logging.getLogger(__name__)

AZURITE_VERSION = "3.35.0"
"""The Azurite version durable_ext installs; must match ``package.json`` (a test checks that)."""

ENV_EXECUTABLE = "DURABLE_EXT_AZURITE"
"""Environment variable naming the Azurite executable to use instead of searching for one."""


@dataclass(frozen=True)
class AzuritePorts:
    """The TCP ports of Azurite's three services."""

    blob: int
    queue: int
    table: int


@dataclass(frozen=True)
class AzuriteTls:
    """Azurite over HTTPS with this PEM certificate and key, accepting bearer tokens when ``oauth``.

    Azurite's basic OAuth checks a token's lifetime, issuer (``https://sts.windows.net/...``) and
    audience (``https://storage.azure.com``), not its signature: enough to exercise a real token flow.
    """

    cert: Path
    key: Path
    oauth: bool = True


DEFAULT_PORTS = AzuritePorts(blob=10000, queue=10001, table=10002)
"""The ports Azurite and the Azure tools use when nobody says otherwise."""

_REPO_DIR = Path(__file__).resolve().parents[2]
_PORT_ATTEMPTS = 3
_POLL_INTERVAL = 0.1
_TAIL_LINES = 30
_TAIL_BYTES = 16_384
HEARTBEAT_SECONDS = 10.0
"""How often a running npm install reports that it is still at work."""
_NPM_MISSING = "Node.js 20+ and npm are required to run Azurite; install them from https://nodejs.org"


def _url_host(host: str) -> str:
    """``host`` as it must appear in a URL (IPv6 literals need brackets)."""
    return f"[{host}]" if ":" in host else host


def _client_host(host: str) -> str:
    """The address a client should dial to reach a server listening on ``host``."""
    # A wildcard bind address is reachable through loopback, and is not a valid endpoint in a URL.
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def dev_connection_string(
    host: str = "127.0.0.1", ports: AzuritePorts = DEFAULT_PORTS, scheme: str = "http"
) -> str:
    """Return the connection string of the Azurite development account on ``host`` and ``ports``."""
    base = f"{scheme}://{_url_host(host)}"
    return (
        f"DefaultEndpointsProtocol={scheme};"
        f"AccountName={DEV_ACCOUNT_NAME};"
        f"AccountKey={DEV_ACCOUNT_KEY};"
        f"BlobEndpoint={base}:{ports.blob}/{DEV_ACCOUNT_NAME};"
        f"QueueEndpoint={base}:{ports.queue}/{DEV_ACCOUNT_NAME};"
        f"TableEndpoint={base}:{ports.table}/{DEV_ACCOUNT_NAME};"
    )


# --- locating and installing the executable ------------------------------------------------------------


def _bin_in(prefix: Path) -> Path:
    """Where npm puts the azurite executable when it installs into ``prefix``."""
    return prefix / "node_modules" / ".bin" / "azurite"


def _cache_root() -> Path:
    """durable_ext's per-user cache directory."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "durable_ext"


def _cache_prefix() -> Path:
    """The npm prefix that holds the cached, pinned Azurite."""
    return _cache_root() / f"azurite-{AZURITE_VERSION}"


def _repo_has_manifest() -> bool:
    """Whether durable_ext runs from a source checkout that pins Azurite in package.json."""
    return (_REPO_DIR / "package.json").is_file()


def _is_executable(path: Path) -> bool:
    """Whether ``path`` is an existing file this process may execute."""
    return path.is_file() and os.access(path, os.X_OK)


def _search() -> Path | None:
    """The first Azurite executable found, in the documented search order, or None."""
    candidates = [_bin_in(Path.cwd())]
    if _repo_has_manifest():
        candidates.append(_bin_in(_REPO_DIR))
    candidates.append(_bin_in(_cache_prefix()))
    for candidate in candidates:
        if _is_executable(candidate):
            return candidate
    on_path = shutil.which("azurite")
    return Path(on_path) if on_path else None


def _print_progress(line: str) -> None:
    """Default progress reporter: one line to stderr, so stdout stays clean for callers' output."""
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _install_lock(progress: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive lock that serialises Azurite installs across processes (e.g. pytest workers)."""
    lock_path = _cache_root() / "azurite-install.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("Waiting for another process to finish installing Azurite...")
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@contextlib.contextmanager
def _heartbeat(progress: Callable[[str], None]) -> Iterator[None]:
    """Report every :data:`HEARTBEAT_SECONDS` that npm is still at work, until the block ends.

    npm prints nothing while it downloads when its output is not a terminal, so without this a first
    run looks stuck for as long as the download takes.
    """
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            progress(f"Still installing Azurite ({time.monotonic() - started:.0f} s)...")

    thread = threading.Thread(target=beat, name="azurite-install-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _run_npm(args: list[str], cwd: Path, progress: Callable[[str], None]) -> None:
    """Run npm with ``args`` in ``cwd``, streaming its output to ``progress``; AzuriteError if it fails."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise AzuriteError(_NPM_MISSING)
    command = [npm, *args]
    logger.info("Running %s in %s", " ".join(command), cwd)
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    env = {**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false"}
    try:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise AzuriteError(f"{_NPM_MISSING} (could not run {npm}: {exc})") from exc
    assert process.stdout is not None  # guaranteed by stdout=PIPE
    with process, _heartbeat(progress):
        # Reading until EOF keeps the pipe drained, so npm can never block on a full pipe.
        for raw_line in process.stdout:
            line = raw_line.rstrip()
            if line:
                tail.append(line)
                progress(line)
    if process.returncode != 0:
        output = "\n".join(tail) or "(no output)"
        raise AzuriteError(
            f"npm {' '.join(args)} failed with exit code {process.returncode} in {cwd}:\n{output}"
        )


def _install_into_cache(prefix: Path, progress: Callable[[str], None]) -> Path:
    """Install the pinned Azurite with npm into ``prefix`` and return its executable."""
    prefix.mkdir(parents=True, exist_ok=True)
    progress(f"Installing Azurite {AZURITE_VERSION} with npm into {prefix} (first run only)...")
    _run_npm(
        ["install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"azurite@{AZURITE_VERSION}"],
        cwd=prefix,
        progress=progress,
    )
    return _checked_install(_bin_in(prefix))


def _install_into_repo(progress: Callable[[str], None]) -> Path:
    """Install the checkout's locked node_modules with ``npm ci`` and return the azurite executable."""
    progress(f"Installing Azurite {AZURITE_VERSION} with npm (first run only)...")
    _run_npm(["ci", "--no-audit", "--no-fund"], cwd=_REPO_DIR, progress=progress)
    return _checked_install(_bin_in(_REPO_DIR))


def _checked_install(executable: Path) -> Path:
    """Return ``executable`` if npm really produced it; AzuriteError otherwise."""
    if not _is_executable(executable):
        raise AzuriteError(f"npm finished but {executable} does not exist or is not executable")
    logger.info("Installed Azurite %s at %s", AZURITE_VERSION, executable)
    return executable


def find_azurite(install: bool = True, progress: Callable[[str], None] | None = None) -> Path:
    """Return the path of the azurite executable, installing the pinned version with npm if needed.

    Search order: the ``DURABLE_EXT_AZURITE`` environment variable; ``node_modules/.bin/azurite`` in the
    current directory; the same in the source checkout containing durable_ext (when it has a
    ``package.json``); the per-user cache (``$XDG_CACHE_HOME/durable_ext/azurite-<version>``, default
    ``~/.cache``); ``azurite`` on ``PATH``.

    When nothing is found and ``install`` is true, the checkout's ``package-lock.json`` is installed with
    ``npm ci``, or, outside a checkout, ``azurite@AZURITE_VERSION`` is installed into the cache. ``progress``
    receives human-readable progress lines (default: printed to stderr). Concurrent callers are
    serialised by a file lock, so only one of them installs.

    Raises:
        AzuriteError: the environment variable names a missing file, nothing was found and ``install`` is
            false, Node.js/npm are missing, or npm failed.
    """
    explicit = os.environ.get(ENV_EXECUTABLE)
    if explicit:
        path = Path(explicit).expanduser()
        # An explicit choice that is broken should be reported, not silently replaced by another Azurite.
        if not _is_executable(path):
            raise AzuriteError(f"{ENV_EXECUTABLE}={explicit} is not an executable file")
        return path

    found = _search()
    if found is not None:
        return found
    if not install:
        raise AzuriteError(
            f"Azurite not found; run `npm ci` in the durable_ext checkout, set {ENV_EXECUTABLE}, "
            "or call find_azurite(install=True)"
        )

    report = progress or _print_progress
    with _install_lock(report):
        # Another process may have finished installing while this one waited for the lock.
        found = _search()
        if found is not None:
            return found
        if _repo_has_manifest() and (_REPO_DIR / "package-lock.json").is_file():
            return _install_into_repo(report)
        return _install_into_cache(_cache_prefix(), report)


# --- ports ---------------------------------------------------------------------------------------------


def _family(host: str) -> socket.AddressFamily:
    """The socket family for binding to ``host``."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _pick_free_ports(host: str) -> AzuritePorts:
    """Three distinct ports on ``host`` that are free right now (the OS picks them)."""
    with contextlib.ExitStack() as stack:
        # All three sockets stay bound until all are picked, so the OS cannot hand out one port twice.
        sockets = [
            stack.enter_context(socket.create_server((host, 0), family=_family(host))) for _ in range(3)
        ]
        blob, queue, table = (sock.getsockname()[1] for sock in sockets)
    return AzuritePorts(blob=blob, queue=queue, table=table)


def _port_in_use(host: str, port: int) -> bool:
    """Whether some process already listens on ``host``:``port``."""
    try:
        # create_server sets SO_REUSEADDR, so lingering TIME_WAIT connections don't count as "in use".
        with socket.create_server((host, port), family=_family(host)):
            return False
    except OSError as exc:
        # Other bind problems (e.g. an address not on this machine) are for Azurite itself to report.
        return exc.errno == errno.EADDRINUSE


def _http_answers(host: str, port: int, timeout: float, https: bool = False) -> bool:
    """Whether an HTTP(S) server answers on ``host``:``port`` (any status code counts)."""
    connection: http.client.HTTPConnection
    if https:
        # Only whether it answers matters here; the clients check the certificate.
        unverified = ssl._create_unverified_context()
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=unverified)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True


def ports_answer(host: str, ports: AzuritePorts, timeout: float = 0.5, *, https: bool = False) -> bool:
    """Return whether HTTP(S) servers answer on all three of ``ports`` (any status code counts)."""
    return all(_http_answers(host, port, timeout, https) for port in (ports.blob, ports.queue, ports.table))


# --- the process ---------------------------------------------------------------------------------------


class _PortInUseError(AzuriteError):
    """Startup failed because a port was taken; with auto-picked ports, retrying on new ones helps."""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid``, if it still exists."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _read_tail(path: Path) -> str:
    """The last lines of the log file at ``path``."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - _TAIL_BYTES))
            data = log.read()
    except OSError:
        return "(no output)"
    lines = data.decode(errors="replace").splitlines()[-_TAIL_LINES:]
    return "\n".join(lines) or "(no output)"


class Azurite:
    """A running Azurite process (blob, queue, table)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        ports: AzuritePorts | None = None,
        location: Path | None = None,
        executable: Path | None = None,
        debug_log: Path | None = None,
        tls: AzuriteTls | None = None,
    ) -> None:
        """Describe an Azurite instance; nothing runs until :meth:`start`.

        Args:
            host: address all three services listen on.
            ports: the services' ports; None picks three free ports (and new ones if startup loses a
                race for them).
            location: directory for on-disk persistence; None keeps all data in memory.
            executable: the azurite executable; None uses :func:`find_azurite` (which may install it).
            debug_log: file for Azurite's debug log; None disables it.
            tls: serve HTTPS (and accept bearer tokens) with this certificate; None: plain HTTP.
        """
        self._host = host
        self._auto_ports = ports is None
        self._ports = ports if ports is not None else _pick_free_ports(host)
        self._location = location
        self._executable = executable
        self._debug_log = debug_log
        self._tls = tls
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def ports(self) -> AzuritePorts:
        """The ports of the blob, queue and table services."""
        return self._ports

    @property
    def connection_string(self) -> str:
        """A connection string for this instance's development account."""
        scheme = "https" if self._tls is not None else "http"
        return dev_connection_string(_client_host(self._host), self._ports, scheme)

    @property
    def running(self) -> bool:
        """Whether the Azurite process has been started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code of a process that has exited on its own; None while running or never started."""
        return self._process.poll() if self._process is not None else None

    @property
    def location(self) -> Path | None:
        """The data directory; None for in-memory persistence."""
        return self._location

    def start(self, timeout: float = 60.0) -> None:
        """Launch Azurite and wait until all three services answer HTTP.

        Raises:
            AzuriteError: already running, a port is in use, the process exited early, or the services
                did not answer within ``timeout`` seconds. The message includes Azurite's last output.
        """
        if self.running:
            raise AzuriteError("Azurite is already running")
        # A previous process that died on its own still holds a log file; release it first.
        self.stop()
        executable = self._executable or find_azurite()
        deadline = time.monotonic() + timeout
        attempts = _PORT_ATTEMPTS if self._auto_ports else 1
        for attempt in range(1, attempts + 1):
            try:
                self._launch_and_wait(executable, deadline, timeout)
            except _PortInUseError as exc:
                if attempt == attempts:
                    raise
                logger.info("Azurite lost a port race (%s); retrying on new ports", exc)
                self._ports = _pick_free_ports(self._host)
            else:
                atexit.register(self.stop)
                return

    def _command(self, executable: Path) -> list[str]:
        """The command line that launches Azurite with this instance's settings."""
        command = [
            str(executable),
            *("--blobHost", self._host, "--blobPort", str(self._ports.blob)),
            *("--queueHost", self._host, "--queuePort", str(self._ports.queue)),
            *("--tableHost", self._host, "--tablePort", str(self._ports.table)),
            "--disableTelemetry",
            # The Azure SDKs may speak a newer API version than this Azurite knows; the subset
            # durable_ext uses works regardless.
            "--skipApiVersionCheck",
            # Without it Azurite rejects headers and parameters it does not implement, which real Azure
            # Storage accepts; those rejections would be emulator artefacts, not bugs to catch.
            "--loose",
            "--silent",
        ]
        if self._location is None:
            command.append("--inMemoryPersistence")
        else:
            command += ["--location", str(self._location)]
        if self._debug_log is not None:
            command += ["--debug", str(self._debug_log)]
        if self._tls is not None:
            command += ["--cert", str(self._tls.cert), "--key", str(self._tls.key)]
            if self._tls.oauth:
                command += ["--oauth", "basic"]
        return command

    def _launch_and_wait(self, executable: Path, deadline: float, timeout: float) -> None:
        """One startup attempt on the current ports; on failure nothing is left running."""
        services = (("blob", self._ports.blob), ("queue", self._ports.queue), ("table", self._ports.table))
        # Checking first matters when the port belongs to another Azurite: it would answer our
        # readiness probe and make this instance look started before it fails.
        for service, port in services:
            if _port_in_use(self._host, port):
                raise _PortInUseError(
                    f"Cannot start Azurite: {service} port {port} on {self._host} is already in use"
                )
        if self._location is not None:
            self._location.mkdir(parents=True, exist_ok=True)
        if self._debug_log is not None:
            self._debug_log.parent.mkdir(parents=True, exist_ok=True)

        command = self._command(executable)
        fd, log_name = tempfile.mkstemp(prefix="azurite-", suffix=".log")
        os.close(fd)
        self._log_path = Path(log_name)
        logger.debug("Starting %s", " ".join(command))
        try:
            # A file, not a pipe: nobody reads Azurite's output while it runs, and a full pipe would
            # block it. Append mode keeps the child's writes at the end while we read the tail.
            with self._log_path.open("ab") as log:
                # Its own session/process group, so stop() reaches node and anything it spawns.
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            self.stop()
            raise AzuriteError(f"Cannot run {executable}: {exc}") from exc

        process = self._process
        probe_host = _client_host(self._host)
        while True:
            returncode = process.poll()
            if returncode is not None:
                tail = self.log_tail()
                self.stop()
                message = f"Azurite exited with code {returncode} during startup ({self._ports}):\n{tail}"
                if "EADDRINUSE" in tail:
                    raise _PortInUseError(f"A port is already in use. {message}")
                raise AzuriteError(message)
            if ports_answer(probe_host, self._ports, https=self._tls is not None):
                logger.info("Azurite is listening on %s (%s)", self._host, self._ports)
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = self.log_tail()
                self.stop()
                raise AzuriteError(
                    f"Azurite did not answer on {self._host} ({self._ports}) within {timeout:g}s:\n{tail}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                # Waiting on the process doubles as the poll interval and notices an early exit at once.
                process.wait(timeout=min(_POLL_INTERVAL, remaining))

    def log_tail(self) -> str:
        """The last lines Azurite printed (until the next :meth:`start` or :meth:`stop`)."""
        return _read_tail(self._log_path) if self._log_path is not None else "(no output)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Azurite: SIGTERM to its process group, then SIGKILL after ``timeout`` seconds.

        Safe to call more than once and on an instance that never started.

        Raises:
            AzuriteError: the process survived SIGKILL.
        """
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        try:
            # A reaped leader's pid might be reused, so only signal a process that has not been reaped.
            if process is not None and process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("Azurite ignored SIGTERM for %gs; killing it", timeout)
                    _signal_group(process.pid, signal.SIGKILL)
                    try:
                        process.wait(timeout=timeout)
                    except subprocess.TimeoutExpired as exc:
                        raise AzuriteError(f"Azurite (pid {process.pid}) survived SIGKILL") from exc
        finally:
            if self._log_path is not None:
                self._log_path.unlink(missing_ok=True)
                self._log_path = None

    def __enter__(self) -> Azurite:
        """Start Azurite (unless already running) and return it."""
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop Azurite."""
        self.stop()
