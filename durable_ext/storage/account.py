"""Storage account connection strings and the SDK clients built from them."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import aiohttp
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.pipeline.transport import AioHttpTransport
from azure.data.tables.aio import TableServiceClient
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from durable_ext.errors import ConfigError
from durable_ext.storage.connections import PooledTransport
from durable_ext.storage.identity import IdentityConnection, StorageTokenCredential
from durable_ext.storage.requests import ObservingTransport, RequestObserver, observing_trace_configs

if TYPE_CHECKING:
    from durable_ext.config import StorageConnection

logger = logging.getLogger(__name__)

DEV_ACCOUNT_NAME = "devstoreaccount1"
"""The storage account name every Azurite instance serves."""
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""The well-known, public key of :data:`DEV_ACCOUNT_NAME`."""
DEV_HOST = "127.0.0.1"
DEV_PORTS = (10000, 10001, 10002)
"""Azurite's default blob, queue and table ports (``UseDevelopmentStorage=true``)."""


StorageCredential = AzureNamedKeyCredential | AzureSasCredential | StorageTokenCredential
"""What the SDK clients authenticate with: an account key, a SAS, or an identity's token credential."""


@dataclass(frozen=True)
class StorageAccount:
    """The endpoints and credential of one storage account: a connection string's or an identity's.

    Credentials are an account key, a SAS token or an identity (:attr:`identity`); endpoints come from
    ``*Endpoint`` keys, from ``UseDevelopmentStorage=true`` (Azurite's default ports), from the
    account name and suffix, or from an identity-based connection's settings.
    """

    account_name: str
    blob_endpoint: str
    queue_endpoint: str
    table_endpoint: str
    account_key: str | None = None
    sas_token: str | None = None
    development_storage: bool = False
    """True for ``UseDevelopmentStorage=true``: Azurite on its default local ports."""
    identity: IdentityConnection | None = None
    """An identity-based connection: requests carry bearer tokens of the credential it names."""
    observers: tuple[RequestObserver, ...] = field(default=(), compare=False, repr=False)
    """Told about every request the clients built from this account send (``storage.requests``)."""

    @classmethod
    def from_connection(cls, connection: StorageConnection) -> StorageAccount:
        """The account of a connection string or of an identity-based connection's settings."""
        if connection.connection_string is not None:
            return cls.from_connection_string(connection.connection_string)
        identity = IdentityConnection.from_settings(connection.name, connection.identity)
        return cls(
            identity.account_name or _account_from_endpoint(identity.queue_endpoint),
            identity.blob_endpoint,
            identity.queue_endpoint,
            identity.table_endpoint,
            identity=identity,
        )

    @classmethod
    def from_connection_string(cls, connection_string: str) -> StorageAccount:
        """Parse an Azure Storage connection string; raises ConfigError naming what is missing."""
        parts = _parse_pairs(connection_string)
        if parts.get("usedevelopmentstorage", "").lower() == "true":
            proxy = parts.get("developmentstorageproxyuri")
            base = proxy.rstrip("/") if proxy else f"http://{DEV_HOST}"
            blob, queue, table = (f"{base}:{port}/{DEV_ACCOUNT_NAME}" for port in DEV_PORTS)
            return cls(
                DEV_ACCOUNT_NAME, blob, queue, table, account_key=DEV_ACCOUNT_KEY, development_storage=True
            )

        name = parts.get("accountname")
        key = parts.get("accountkey")
        sas = parts.get("sharedaccesssignature")
        if not key and not sas:
            raise ConfigError(
                "storage connection string has neither AccountKey nor SharedAccessSignature (for an "
                "identity, use settings such as <connection>__accountName instead of a connection string)"
            )
        protocol = parts.get("defaultendpointsprotocol", "https")
        suffix = parts.get("endpointsuffix", "core.windows.net")
        endpoints: dict[str, str] = {}
        for service in ("blob", "queue", "table"):
            explicit = parts.get(f"{service}endpoint")
            if explicit:
                endpoints[service] = explicit.rstrip("/")
            elif name:
                endpoints[service] = f"{protocol}://{name}.{service}.{suffix}"
            else:
                raise ConfigError(
                    f"storage connection string has no AccountName and no {service.title()}Endpoint"
                )
        if not name:
            name = _account_from_endpoint(endpoints["blob"])
        return cls(
            account_name=name,
            blob_endpoint=endpoints["blob"],
            queue_endpoint=endpoints["queue"],
            table_endpoint=endpoints["table"],
            account_key=key or None,
            sas_token=sas.lstrip("?") if sas else None,
        )

    def describe(self) -> str:
        """Where the account lives, for messages (never includes secrets)."""
        where = f"{self.account_name} ({self.queue_endpoint}, {self.table_endpoint}, {self.blob_endpoint})"
        if self.identity is not None:
            return f"{where} with {self.identity.describe_credential()}"
        return where

    def credential(self) -> StorageCredential:
        """The SDK credential: the key or SAS, or for an identity a new token credential that the
        caller closes (``await credential.close()``) when it is done with the clients using it."""
        if self.identity is not None:
            return self.identity.new_credential()
        if self.account_key:
            return AzureNamedKeyCredential(self.account_name, self.account_key)
        assert self.sas_token is not None
        return AzureSasCredential(self.sas_token)

    def table_service(
        self, credential: StorageCredential | None = None, **options: Any
    ) -> TableServiceClient:
        """An async Table service client (with :meth:`credential` unless given); the caller closes it."""
        options.setdefault("transport", self.sdk_transport())
        return TableServiceClient(
            endpoint=self.table_endpoint, credential=credential or self.credential(), **options
        )

    def queue_service(
        self, credential: StorageCredential | None = None, **options: Any
    ) -> QueueServiceClient:
        """An async Queue service client (bodies sent as plain text); the caller closes it."""
        options.setdefault("transport", self.sdk_transport())
        return QueueServiceClient(
            account_url=self.queue_endpoint, credential=credential or self.credential(), **options
        )

    def blob_service(self, credential: StorageCredential | None = None, **options: Any) -> BlobServiceClient:
        """An async Blob service client; the caller closes it."""
        options.setdefault("transport", self.sdk_transport())
        return BlobServiceClient(
            account_url=self.blob_endpoint, credential=credential or self.credential(), **options
        )

    def sdk_transport(self) -> AioHttpTransport:
        """The SDK clients' transport: aiohttp, reading proxy settings only when some are set, and
        reporting each request to the :attr:`observers`.

        With environment settings on, aiohttp looks for proxies and a .netrc file on a worker thread
        before every request, which cost the engine a sixth of its CPU under load.
        """
        if self.observers:
            return ObservingTransport(self.observers, use_env_settings=use_environment_settings())
        return PooledTransport(use_env_settings=use_environment_settings())

    def http_trace_configs(self) -> list[aiohttp.TraceConfig]:
        """aiohttp hooks for the requests that bypass the SDKs (see ``storage.rest``): they report
        each request to the :attr:`observers`."""
        return observing_trace_configs(self.observers)

    def observed_by(self, observer: RequestObserver) -> StorageAccount:
        """This account, with ``observer`` told about its requests too."""
        return dataclasses.replace(self, observers=(*self.observers, observer))

    def blob_url(self, container: str, blob_name: str) -> str:
        """The absolute URL of a blob, each path segment escaped like ``Uri.EscapeDataString``."""
        escaped = "/".join(quote(segment, safe="") for segment in blob_name.split("/"))
        return f"{self.blob_endpoint}/{container}/{escaped}"


_ENVIRONMENT_SETTINGS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "WS_PROXY", "WSS_PROXY", "NETRC")


def use_environment_settings() -> bool:
    """Whether HTTP clients should honour proxy (and .netrc) settings: only when any is set."""
    return any(os.environ.get(name) or os.environ.get(name.lower()) for name in _ENVIRONMENT_SETTINGS)


def _parse_pairs(connection_string: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for raw in connection_string.split(";"):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"storage connection string has a malformed part {key!r} (expected Key=Value)")
        parts[key.strip().lower()] = value.strip()
    if not parts:
        raise ConfigError("storage connection string is empty")
    return parts


def _account_from_endpoint(endpoint: str) -> str:
    split = urlsplit(endpoint)
    path = split.path.strip("/")
    # Emulator-style endpoints carry the account as the first path segment.
    if path:
        return path.split("/")[0]
    return (split.hostname or "").split(".")[0]
