"""Issue 15's hardening, driven over HTTP against ``python -m durable_ext start``: bounded waits, a
prompt Ctrl+C, one body limit, keys that do not leak through anonymous functions, one key rule, strong
keys, a routePrefix that cannot hide the functions, byte-bounded list pages, and a secret RPC path.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from durable_ext.client import MAX_QUERY_PAGE_BYTES
from durable_ext.config import load_config
from durable_ext.errors import ConfigError
from durable_ext.host.guard import MAX_BODY_BYTES
from durable_ext.host.local import SHUTDOWN_GRACE_SECONDS
from tests.host_support import (
    REPO,
    RunningHost,
    free_port,
    host_env,
    running_host,
    sample_app_dir,
    start_command,
    start_process,
)

TIMEOUT = 60.0
API = "/runtime/webhooks/durabletask"
KEY = secrets.token_urlsafe(24)
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, azurite_connection_string: str) -> Iterator[RunningHost]:
    """One keyed host for the module, logging at INFO (-v): the sample app plus a function-level function."""
    root = tmp_path_factory.mktemp("limits")
    app = sample_app_dir(
        root, "Limits" + uuid.uuid4().hex[:8], extra_blueprints=[REPO / "tests" / "apps" / "keyed_echo.py"]
    )
    (app / "local.settings.json").write_text(json.dumps({"Values": {"DURABLE_EXT_SYSTEM_KEY": KEY}}))
    with running_host(app, azurite_connection_string, root / "host.log", global_args=["-v"]) as running:
        yield running


@pytest.fixture(scope="module")
def http(host: RunningHost) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=host.base_url, timeout=TIMEOUT) as client:
        yield client


def _until(http: httpx.Client, url: str, status: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        response = http.get(url, headers={"x-functions-key": KEY})
        if response.status_code in (200, 202) and response.json()["runtimeStatus"] == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} never reached {status}")


# ---- item 5: bounded waits, prompt shutdown -------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "timeout=1e308&pollingInterval=1",
        "timeout=3601&pollingInterval=1",
        "timeout=inf&pollingInterval=1",
        "timeout=nan&pollingInterval=1",
        "timeout=-1&pollingInterval=1",
        "timeout=10&pollingInterval=1e308",
        "timeout=10&pollingInterval=0",
    ],
)
def test_unbounded_waits_are_400_at_once(http: httpx.Client, query: str) -> None:
    response = http.post(f"{API}/orchestrators/hello_sequence?{query}&code={KEY}", timeout=10)
    assert response.status_code == 400, response.text


def test_a_bounded_wait_answers_with_the_output(http: httpx.Client) -> None:
    response = http.post(f"{API}/orchestrators/hello_sequence?timeout=30&pollingInterval=0.1&code={KEY}")
    assert response.status_code == 200, response.text
    assert response.json() == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_is_prompt_with_a_long_wait_in_progress(
    tmp_path: Path, azurite_connection_string: str, signum: signal.Signals
) -> None:
    app = sample_app_dir(tmp_path, "Stop" + uuid.uuid4().hex[:8])
    port = free_port()
    process = start_process(app, azurite_connection_string, port, output=tmp_path / "host.log")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_ready(process, tmp_path / "host.log")
        instance = f"waiting-{uuid.uuid4().hex[:8]}"
        # approval_workflow waits an hour for an event that never comes; the request waits as long.
        waiter = threading.Thread(
            target=_post_quietly,
            args=(
                f"{base}{API}/orchestrators/approval_workflow/{instance}?timeout=3600&pollingInterval=1",
                b'{"timeout_seconds": 3600}',
            ),
        )
        waiter.start()
        with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
            _until(http, f"{API}/instances/{instance}", "Running")
        stopped_at = time.monotonic()
        process.send_signal(signum)
        assert process.wait(timeout=SHUTDOWN_GRACE_SECONDS + 20) == 0
        assert time.monotonic() - stopped_at < SHUTDOWN_GRACE_SECONDS + 10
        waiter.join(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for_ready(process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while "Host ready" not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def _post_quietly(url: str, body: bytes) -> None:
    """POST and ignore the outcome: the host is stopped while the request waits."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=TIMEOUT)


# ---- item 8: one body limit, sample starter answers 4xx on bad JSON ------------------------------------


def _raw_post(base_url: str, path: str, headers: dict[str, str], chunks: Iterable[bytes]) -> tuple[int, bool]:
    """POST by hand, so the body may be larger than the server reads: (status, whether all was sent).

    Sending stops as soon as the server answers (or closes the connection).
    """
    origin = urlsplit(base_url)
    assert origin.hostname is not None and origin.port is not None
    head = f"POST {path} HTTP/1.1\r\nHost: {origin.netloc}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection((origin.hostname, origin.port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode())
        sent_all = True
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                sent_all = False
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                sent_all = False
                break
        status_line = sock.makefile("rb").readline()
    return int(status_line.split()[1]), sent_all


def _chunked(total: int, size: int = MIB) -> Iterator[bytes]:
    for _ in range(total // size):
        yield f"{size:x}\r\n".encode() + b"x" * size + b"\r\n"
    yield b"0\r\n\r\n"


@pytest.mark.parametrize("path", ["/api/orchestrators/hello_sequence", f"{API}/orchestrators/hello_sequence"])
def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(
    host: RunningHost, http: httpx.Client, path: str
) -> None:
    headers = {
        "content-type": "application/json",
        "content-length": str(MAX_BODY_BYTES + 1),
        "x-functions-key": KEY,
    }
    # Only 1 KiB of the declared body is ever sent: an answer proves the server did not wait for it.
    status, _ = _raw_post(host.base_url, path, headers, [b"[" * 1024])
    assert status == 413
    assert http.get("/runtime/webhooks/durabletask/instances/nobody", params={"code": KEY}).status_code == 404


@pytest.mark.parametrize("path", ["/api/orchestrators/hello_sequence", f"{API}/orchestrators/hello_sequence"])
def test_a_streamed_body_over_the_limit_is_413_without_reading_the_rest(
    host: RunningHost, http: httpx.Client, path: str
) -> None:
    headers = {"content-type": "application/json", "transfer-encoding": "chunked", "x-functions-key": KEY}
    status, sent_all = _raw_post(host.base_url, path, headers, _chunked(4 * MAX_BODY_BYTES))
    assert (status, sent_all) == (413, False)
    assert http.get("/runtime/webhooks/durabletask/instances/nobody", params={"code": KEY}).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"NaN",
        b"[Infinity]",
        b'{"x": -Infinity}',
        b"1e999",
        b"\xff\xfe",
        b"[" * 100_000,
        b"[" * 65 + b"]" * 65,
        b"1" * 5000,
    ],
)
def test_the_sample_starter_answers_400_to_any_bad_json(http: httpx.Client, body: bytes) -> None:
    response = http.post("/api/orchestrators/hello_sequence", content=body)
    assert response.status_code == 400, response.text


# ---- item 9: keys in check-status URLs -----------------------------------------------------------------


def test_an_anonymous_caller_gets_urls_without_the_key(http: httpx.Client) -> None:
    started = http.post("/api/orchestrators/hello_sequence")
    assert started.status_code == 202, started.text
    assert KEY not in started.text and "code=" not in started.text
    assert http.get(started.json()["statusQueryGetUri"]).status_code == 401
    assert http.get(started.json()["statusQueryGetUri"], params={"code": KEY}).status_code in (200, 202)


@pytest.mark.parametrize("how", ["query", "header"])
def test_a_caller_that_presented_the_key_gets_it_back(http: httpx.Client, how: str) -> None:
    credentials = {"params": {"code": KEY}} if how == "query" else {"headers": {"x-functions-key": KEY}}
    started = http.post("/api/orchestrators/hello_sequence", **credentials)  # type: ignore[arg-type]
    assert started.status_code == 202, started.text
    urls = started.json()
    assert all(f"code={KEY}" in url for name, url in urls.items() if name != "id")
    assert http.get(urls["statusQueryGetUri"]).status_code in (200, 202)


def test_a_wrong_key_to_an_anonymous_function_embeds_nothing(http: httpx.Client) -> None:
    started = http.post("/api/orchestrators/hello_sequence", params={"code": "not-the-key"})
    assert started.status_code == 202, started.text
    assert "code=" not in started.text


# ---- item 10: one key rule, strong keys, routePrefix, page bytes, secret RPC path ----------------------


@pytest.mark.parametrize("path", [f"{API}/instances/nobody", "/api/keyed/echo"])
@pytest.mark.parametrize(
    ("code", "header", "allowed"),
    [
        (KEY, None, True),
        (None, KEY, True),
        (KEY, KEY, True),
        (None, None, False),
        ("wrong", KEY, False),
        (KEY, "wrong", False),
        ("", KEY, False),
    ],
)
def test_one_key_rule_for_the_api_and_functions(
    http: httpx.Client, path: str, code: str | None, header: str | None, allowed: bool
) -> None:
    params = {"code": code} if code is not None else {}
    headers = {"x-functions-key": header} if header is not None else {}
    response = http.get(path, params=params, headers=headers)
    assert (response.status_code != 401) is allowed, response.text


@pytest.mark.parametrize(
    ("key", "host", "message"),
    [
        ("   ", "127.0.0.1", "whitespace"),
        (" " + KEY, "127.0.0.1", "whitespace"),
        ("   ", "0.0.0.0", "whitespace"),
        ("x", "0.0.0.0", "at least 16"),
        ("fifteen-chars-x", "0.0.0.0", "at least 16"),
    ],
)
def test_weak_or_blank_keys_are_refused_at_start(
    tmp_path: Path, azurite_connection_string: str, key: str, host: str, message: str
) -> None:
    app = sample_app_dir(tmp_path, "Weak" + uuid.uuid4().hex[:8])
    result = _start_and_exit(app, azurite_connection_string, {"DURABLE_EXT_SYSTEM_KEY": key}, "--host", host)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "DURABLE_EXT_SYSTEM_KEY" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def _start_and_exit(
    app: Path, connection_string: str, settings: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``start`` expecting it to refuse: it must exit on its own (a timeout fails the test)."""
    env = host_env(connection_string, settings)
    command = [*start_command(app), *args]
    return subprocess.run(command, capture_output=True, check=False, text=True, env=env, timeout=60)


@pytest.mark.parametrize(
    "prefix",
    ["runtime/webhooks/durabletask", "/Runtime/Webhooks/DurableTask/", "runtime/webhooks/durabletask/x"],
)
def test_a_route_prefix_under_the_management_api_is_refused(tmp_path: Path, prefix: str) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": prefix}}}))
    with pytest.raises(ConfigError, match=r"routePrefix.*management API"):
        load_config(tmp_path, environ={})


def test_route_prefixes_beside_the_management_api_are_fine(tmp_path: Path) -> None:
    for prefix in ("", "api", "runtime/webhooks", "runtime/webhooks/durabletasks"):
        (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": prefix}}}))
        assert load_config(tmp_path, environ={}).route_prefix == prefix


def test_start_refuses_a_route_prefix_under_the_management_api(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    app = sample_app_dir(tmp_path, "Prefix" + uuid.uuid4().hex[:8])
    host_json = json.loads((app / "host.json").read_text())
    host_json["extensions"]["http"] = {"routePrefix": "runtime/webhooks/durabletask"}
    (app / "host.json").write_text(json.dumps(host_json))
    result = _start_and_exit(app, azurite_connection_string, {})
    assert result.returncode == 1
    assert "extensions.http.routePrefix" in result.stderr and "management API" in result.stderr


def test_list_pages_are_bounded_in_bytes_and_resume_exactly(http: httpx.Client) -> None:
    prefix = f"big-{uuid.uuid4().hex[:8]}-"
    payload = json.dumps("x" * (3 * MIB))
    for index in range(5):
        started = http.post(f"{API}/orchestrators/hello_sequence/{prefix}{index}?code={KEY}", content=payload)
        assert started.status_code == 202, started.text

    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        headers = {"x-ms-continuation-token": token} if token else {}
        page = http.get(f"{API}/instances", params={"instanceIdPrefix": prefix, "code": KEY}, headers=headers)
        assert page.status_code == 200, page.text
        assert len(page.content) <= MAX_QUERY_PAGE_BYTES
        seen += [item["instanceId"] for item in page.json()]
        pages += 1
        token = page.headers.get("x-ms-continuation-token")
        if not token:
            break
    assert sorted(seen) == [f"{prefix}{index}" for index in range(5)]
    assert pages >= 3
    without_inputs = http.get(
        f"{API}/instances", params={"instanceIdPrefix": prefix, "showInput": "false", "code": KEY}
    )
    assert len(without_inputs.json()) == 5


def test_the_secret_rpc_path_never_reaches_the_log(host: RunningHost, http: httpx.Client) -> None:
    started = http.post("/api/orchestrators/hello_sequence")
    assert started.status_code == 202
    # A status read and an unknown route through the df client's private mount, then the log.
    unknown = http.post("/api/orchestrators/no_such_orchestrator")
    assert unknown.status_code >= 400
    _until(http, started.json()["statusQueryGetUri"], "Completed")
    output = host.output()
    assert f"{API}/orchestrators/hello_sequence -> 202" in output, "the -v log shows the calls"
    assert "/rpc/" not in output
