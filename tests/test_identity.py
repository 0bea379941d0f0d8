"""Identity-based storage connections: settings as the Functions host reads them, and a real token flow
(azure-identity's ManagedIdentityCredential → a local App Service identity endpoint → bearer tokens →
Azurite over HTTPS in OAuth mode)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from durable_ext.config import StorageConnection
from durable_ext.errors import ConfigError
from durable_ext.host.azurite import Azurite, AzuriteTls
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.identity import (
    REFRESH_MARGIN_SECONDS,
    STORAGE_SCOPE,
    BearerToken,
    StorageTokenCredential,
)
from tests.host_support import REPO, free_port, sample_app_dir, start_command
from tests.identity_support import IdentityEndpoint, identity_endpoint, self_signed_tls

TIMEOUT = 90.0
CLIENT_ID = "5f1c6a1e-0000-4000-8000-00000000c1d0"


def identity(**settings: str) -> StorageAccount:
    """The account of an identity-based ``AzureWebJobsStorage`` with these settings."""
    lowered = {key.lower(): value for key, value in settings.items()}
    return StorageAccount.from_connection(StorageConnection("AzureWebJobsStorage", identity=lowered))


def test_account_name_makes_the_public_endpoints() -> None:
    account = identity(accountName="myacct")
    assert (account.blob_endpoint, account.queue_endpoint, account.table_endpoint) == (
        "https://myacct.blob.core.windows.net",
        "https://myacct.queue.core.windows.net",
        "https://myacct.table.core.windows.net",
    )
    assert account.account_key is None and account.sas_token is None
    assert account.describe().endswith("with DefaultAzureCredential")


def test_service_uris_override_the_account_name() -> None:
    account = identity(accountName="myacct", queueServiceUri="https://q.example.net/")
    assert account.queue_endpoint == "https://q.example.net"
    assert account.table_endpoint == "https://myacct.table.core.windows.net"
    only_uris = identity(
        blobServiceUri="https://127.0.0.1:1/devstoreaccount1",
        queueServiceUri="https://127.0.0.1:2/devstoreaccount1",
        tableServiceUri="https://127.0.0.1:3/devstoreaccount1",
    )
    assert only_uris.account_name == "devstoreaccount1"


async def test_credential_kinds() -> None:
    managed = identity(accountName="myacct", credential="ManagedIdentity", clientId=CLIENT_ID)
    assert managed.describe().endswith(f"with ManagedIdentityCredential (client ID {CLIENT_ID})")
    credential = managed.credential()
    assert isinstance(credential, StorageTokenCredential)
    assert isinstance(credential.inner, ManagedIdentityCredential)
    await credential.close()
    system = identity(accountName="myacct", credential="managedidentity")
    assert system.describe().endswith("with ManagedIdentityCredential (system-assigned)")
    default = identity(accountName="myacct", clientId=CLIENT_ID).credential()
    assert isinstance(default, StorageTokenCredential) and isinstance(default.inner, DefaultAzureCredential)
    await default.close()
    secret = identity(accountName="myacct", tenantId="t", clientId="c", clientSecret="s")
    assert secret.describe().endswith("with ClientSecretCredential (tenant t, client ID c)")


@pytest.mark.parametrize(
    ("settings", "detail"),
    [
        (
            {"credential": "managedidentity"},
            "set AzureWebJobsStorage__accountName, or AzureWebJobsStorage__blob",
        ),
        ({"accountName": "My_Account"}, "is not a storage account name"),
        ({"accountName": "acct", "queueServiceUri": "http://127.0.0.1:10001/a"}, "must be an https:// URI"),
        ({"accountName": "acct", "credential": "workloadidentity"}, "'workloadidentity' is not supported"),
        ({"accountName": "acct", "clientSecret": "s"}, "also needs AzureWebJobsStorage__tenantid"),
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, str], detail: str) -> None:
    with pytest.raises(ConfigError, match=detail):
        identity(**settings)


class _IssuingCredential:
    """An async token credential that issues numbered tokens expiring ``lifetime`` s after issue."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.issued = 0

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        assert scopes == (STORAGE_SCOPE,)
        await asyncio.sleep(0)  # let the other waiters pile up, as a network round trip does
        self.issued += 1
        return AccessToken(f"token-{self.issued}", int(time.time() + self.lifetime))

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> _IssuingCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        """Nothing to release."""


async def test_bearer_token_is_fetched_once_and_refreshed_before_expiry() -> None:
    fresh = _IssuingCredential(lifetime=3600)
    bearer = BearerToken(fresh)
    headers = await asyncio.gather(*(bearer.header() for _ in range(20)))
    assert set(headers) == {"Bearer token-1"} and fresh.issued == 1
    # A token inside the refresh margin is replaced by the next request, once.
    expiring = _IssuingCredential(lifetime=REFRESH_MARGIN_SECONDS + 1)
    bearer = BearerToken(expiring)
    assert await bearer.header() == "Bearer token-1"
    deadline = time.monotonic() + 10
    while (header := await bearer.header()) == "Bearer token-1":
        assert time.monotonic() < deadline, "the token was not refreshed"
        await asyncio.sleep(0.05)
    assert header == "Bearer token-2"


# --- the real token flow: Azurite over HTTPS with OAuth, a managed identity endpoint, real processes --------


@pytest.fixture(scope="module")
def azurite_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Azurite, AzuriteTls]]:
    """Azurite serving HTTPS with a certificate made here, accepting bearer tokens (``--oauth basic``)."""
    tls = self_signed_tls(tmp_path_factory.mktemp("tls"))
    with Azurite(tls=tls) as instance:
        yield instance, tls


def identity_env(
    azurite: Azurite, tls: AzuriteTls, endpoint: IdentityEndpoint, **extra: str
) -> dict[str, str]:
    """A host's environment: an identity-based AzureWebJobsStorage on ``azurite`` (no key anywhere),
    the managed identity endpoint, and the test certificate trusted."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AzureWebJobsStorage")}
    ports = azurite.ports
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "SSL_CERT_FILE": str(tls.cert),
            "AzureWebJobsStorage__blobServiceUri": f"https://127.0.0.1:{ports.blob}/devstoreaccount1",
            "AzureWebJobsStorage__queueServiceUri": f"https://127.0.0.1:{ports.queue}/devstoreaccount1",
            "AzureWebJobsStorage__tableServiceUri": f"https://127.0.0.1:{ports.table}/devstoreaccount1",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": CLIENT_ID,
            **endpoint.environment(),
            **extra,
        }
    )
    return env


def wait_for_line(log: Path, process: subprocess.Popen[str], marker: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while marker not in log.read_text():
        assert process.poll() is None, f"the host exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{marker!r} not printed in time:\n{log.read_text()}"
        time.sleep(0.1)


def test_orchestration_runs_over_a_managed_identity(
    tmp_path: Path, azurite_tls: tuple[Azurite, AzuriteTls]
) -> None:
    azurite, tls = azurite_tls
    app = sample_app_dir(tmp_path, "Ident" + uuid.uuid4().hex[:8])
    port = free_port()
    log = tmp_path / "host.log"
    with identity_endpoint() as endpoint, log.open("w") as output:
        env = identity_env(azurite, tls, endpoint)
        process = subprocess.Popen(
            start_command(app, port), stdout=output, stderr=subprocess.STDOUT, text=True, env=env
        )
        try:
            wait_for_line(log, process, "Host ready")
            assert f"with ManagedIdentityCredential (client ID {CLIENT_ID})" in log.read_text()
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                started = http.post("/api/orchestrators/hello_sequence")
                assert started.status_code == 202, started.text
                status_url = started.json()["statusQueryGetUri"]
                deadline = time.monotonic() + TIMEOUT
                while (status := http.get(status_url).json())["runtimeStatus"] != "Completed":
                    assert status["runtimeStatus"] in ("Pending", "Running"), status
                    assert time.monotonic() < deadline, status
                    time.sleep(0.1)
            assert status["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
            # Every token came from the managed identity, for storage, for the configured client ID.
            assert endpoint.requests
            assert {(r["resource"], r["client_id"]) for r in endpoint.requests} == {
                ("https://storage.azure.com", CLIENT_ID)
            }
        finally:
            process.terminate()
            assert process.wait(timeout=60) == 0, log.read_text()[-4000:]


def run_start(env: dict[str, str], app: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        start_command(app), env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


@pytest.mark.parametrize(
    ("case", "detail"),
    [
        ("unknown credential", "AzureWebJobsStorage__credential 'cli' is not supported"),
        ("no table service", "set AzureWebJobsStorage__accountName, or AzureWebJobsStorage__tableServiceUri"),
        ("plain http", "AzureWebJobsStorage__queueServiceUri 'http://"),
        (
            "wrong identity header",
            "cannot get a token for Azure Storage while trying to create the task hub: "
            f"ManagedIdentityCredential (client ID {CLIENT_ID}) failed: Unexpected response",
        ),
        (
            "token for another audience",
            "refused the credentials while trying to create the task hub (HTTP 403)",
        ),
    ],
)
def test_bad_identity_settings_fail_at_start_with_a_clear_error(
    tmp_path: Path, azurite_tls: tuple[Azurite, AzuriteTls], case: str, detail: str
) -> None:
    azurite, tls = azurite_tls
    app = sample_app_dir(tmp_path, "Bad" + uuid.uuid4().hex[:8])
    audience = "https://vault.azure.net" if case == "token for another audience" else None
    with identity_endpoint(**({"audience": audience} if audience else {})) as endpoint:
        env = identity_env(azurite, tls, endpoint)
        if case == "unknown credential":
            env["AzureWebJobsStorage__credential"] = "cli"
        elif case == "plain http":
            env["AzureWebJobsStorage__queueServiceUri"] = (
                f"http://127.0.0.1:{azurite.ports.queue}/devstoreaccount1"
            )
        elif case == "wrong identity header":
            env["IDENTITY_HEADER"] = "not-the-secret"
        elif case == "no table service":
            del env["AzureWebJobsStorage__tableServiceUri"]
        result = run_start(env, app)
    assert result.returncode == 1, result.stdout + result.stderr
    assert detail in result.stderr and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert "Host ready" not in result.stdout
