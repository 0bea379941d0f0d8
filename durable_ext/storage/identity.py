"""Identity-based storage connections: the settings the Functions host reads, and their credentials.

An app setting prefix such as ``AzureWebJobsStorage`` defines an identity-based connection with
settings under ``<prefix>__``:

- ``accountName``: the account, whose services are ``https://<name>.<service>.core.windows.net``;
- ``blobServiceUri`` / ``queueServiceUri`` / ``tableServiceUri``: a service's URI, overriding the one
  made from ``accountName`` (durable_ext needs all three services);
- ``credential``: ``managedidentity`` for a managed identity (``clientId`` picks a user-assigned one);
- ``tenantId`` + ``clientId`` + ``clientSecret``: an app registration (service principal);
- none of these: ``DefaultAzureCredential`` (environment, workload identity, managed identity, the
  Azure CLI, ...), as the host uses when it runs outside Azure.

Tokens are requested for the scope ``https://storage.azure.com/.default``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential

from durable_ext.errors import ConfigError

logger = logging.getLogger(__name__)

STORAGE_SCOPE = "https://storage.azure.com/.default"
"""The scope of every storage token (the audience Azure Storage accepts for all accounts)."""
SERVICES = ("blob", "queue", "table")
MANAGED_IDENTITY = "managedidentity"
"""The one ``credential`` value the host names (any other is refused)."""
REFRESH_MARGIN_SECONDS = 300
"""A cached token is replaced this long before it expires (azure-core's bearer policy does the same)."""

_ACCOUNT_NAME_RE = re.compile(r"[a-z0-9]{3,24}")
_KNOWN_KEYS = frozenset(
    {"accountname", "credential", "clientid", "tenantid", "clientsecret"}
    | {f"{service}serviceuri" for service in SERVICES}
)


@dataclass(frozen=True)
class IdentityConnection:
    """An identity-based connection: the three service URIs and how to get a token."""

    name: str
    """The setting prefix it was read from (for messages)."""
    blob_endpoint: str
    queue_endpoint: str
    table_endpoint: str
    account_name: str | None
    """The ``accountName`` setting; None when the service URIs alone name the account (the
    :class:`~durable_ext.storage.account.StorageAccount` reads it from them)."""
    credential_kind: str
    """``managedidentity``, ``clientsecret`` or ``default``."""
    client_id: str | None = None
    tenant_id: str | None = None
    client_secret: str | None = None

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, str]) -> IdentityConnection:
        """Read ``settings`` (the ``<name>__*`` settings, keys lower-cased); ConfigError names what is
        wrong."""
        for key in sorted(set(settings) - _KNOWN_KEYS):
            logger.warning("identity-based connection %s: setting %s__%s is not used", name, name, key)
        account = settings.get("accountname")
        if account is not None and not _ACCOUNT_NAME_RE.fullmatch(account):
            raise ConfigError(
                f"{name}__accountName {account!r} is not a storage account name (3-24 lower-case letters "
                "and digits)"
            )
        endpoints = {service: _endpoint(name, service, settings, account) for service in SERVICES}
        kind, client_id = _credential_kind(name, settings)
        return cls(
            name=name,
            blob_endpoint=endpoints["blob"],
            queue_endpoint=endpoints["queue"],
            table_endpoint=endpoints["table"],
            account_name=account,
            credential_kind=kind,
            client_id=client_id,
            tenant_id=settings.get("tenantid"),
            client_secret=settings.get("clientsecret"),
        )

    def describe_credential(self) -> str:
        """Which credential this connection uses, for messages (never includes secrets)."""
        if self.credential_kind == MANAGED_IDENTITY:
            which = f"client ID {self.client_id}" if self.client_id else "system-assigned"
            return f"ManagedIdentityCredential ({which})"
        if self.credential_kind == "clientsecret":
            return f"ClientSecretCredential (tenant {self.tenant_id}, client ID {self.client_id})"
        return "DefaultAzureCredential"

    def new_credential(self) -> StorageTokenCredential:
        """A new async credential of the configured kind; the caller closes it."""
        credential: AsyncTokenCredential
        if self.credential_kind == MANAGED_IDENTITY:
            credential = ManagedIdentityCredential(client_id=self.client_id)
        elif self.credential_kind == "clientsecret":
            assert self.tenant_id and self.client_id and self.client_secret
            credential = ClientSecretCredential(self.tenant_id, self.client_id, self.client_secret)
        else:
            credential = DefaultAzureCredential(managed_identity_client_id=self.client_id)
        return StorageTokenCredential(credential, self.describe_credential())


class TokenUnavailableError(ClientAuthenticationError):
    """The identity's credential could not get a storage token: no request reached storage."""


class StorageTokenCredential:
    """An identity's credential whose failures are :class:`TokenUnavailableError`, naming the credential.

    Storage answers a refused token with an authentication error too; this is how the two are told
    apart (the fix differs: the identity's set-up here, its role assignments there).
    """

    def __init__(self, credential: AsyncTokenCredential, description: str) -> None:
        self.inner = credential
        self._description = description

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """A token from the wrapped credential; TokenUnavailableError if it cannot get one."""
        try:
            return await self.inner.get_token(
                *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
            )
        except ClientAuthenticationError as exc:
            reason = (exc.message or type(exc).__name__).strip().splitlines()[0]
            raise TokenUnavailableError(message=f"{self._description} failed: {reason}") from exc

    async def close(self) -> None:
        """Close the wrapped credential's transport."""
        await self.inner.close()

    async def __aenter__(self) -> StorageTokenCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()


def _endpoint(name: str, service: str, settings: Mapping[str, str], account: str | None) -> str:
    """A service's URI: ``<service>ServiceUri`` if set, else made from the account name."""
    explicit = settings.get(f"{service}serviceuri")
    if explicit is None:
        if account is None:
            raise ConfigError(
                f"identity-based connection {name}: set {name}__accountName, or {name}__{service}ServiceUri "
                "(durable_ext uses the blob, queue and table services)"
            )
        return f"https://{account}.{service}.core.windows.net"
    parts = urlsplit(explicit)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        # Tokens are secrets: the SDKs refuse to send them over plain HTTP, and so does durable_ext.
        raise ConfigError(
            f"{name}__{service}ServiceUri {explicit!r} must be an https:// URI with a host and no query"
        )
    return explicit.rstrip("/")


def _credential_kind(name: str, settings: Mapping[str, str]) -> tuple[str, str | None]:
    """The credential kind the settings ask for, and the client ID it uses."""
    credential = settings.get("credential")
    client_id = settings.get("clientid")
    if credential is not None:
        if credential.lower() != MANAGED_IDENTITY:
            raise ConfigError(
                f"{name}__credential {credential!r} is not supported: use {MANAGED_IDENTITY!r} (with "
                f"{name}__clientId for a user-assigned identity), or leave it out for DefaultAzureCredential"
            )
        return MANAGED_IDENTITY, client_id
    secret_keys = ("tenantid", "clientid", "clientsecret")
    present = [key for key in secret_keys if settings.get(key)]
    if "clientsecret" in present or "tenantid" in present:
        if len(present) != len(secret_keys):
            missing = ", ".join(f"{name}__{key}" for key in secret_keys if key not in present)
            raise ConfigError(f"identity-based connection {name} with a client secret also needs {missing}")
        return "clientsecret", client_id
    return "default", client_id


class BearerToken:
    """The ``Authorization`` header for storage requests, from a token cached until shortly before it
    expires.

    Concurrent requests that find no fresh token wait for the one request that fetches it.
    """

    def __init__(self, credential: AsyncTokenCredential) -> None:
        self._credential = credential
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()

    async def header(self) -> str:
        """``Bearer <token>``, fetching a new token when there is none or it is about to expire."""
        token = self._token
        if token is None or _expiring(token):
            async with self._lock:
                token = self._token
                if token is None or _expiring(token):
                    token = await self._credential.get_token(STORAGE_SCOPE)
                    self._token = token
                    logger.debug("storage token refreshed; expires at %d", token.expires_on)
        return f"Bearer {token.token}"


def _expiring(token: AccessToken) -> bool:
    return token.expires_on - time.time() < REFRESH_MARGIN_SECONDS
