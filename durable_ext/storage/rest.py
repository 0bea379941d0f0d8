"""A thin Azure Queues REST client for the engine's hot path: put, get, delete and update messages.

The azure-storage-queue SDK spends about a millisecond of CPU on each request (pipeline policies,
generated (de)serializers); the benchmarks showed it to be the largest cost of an orchestration step.
This client sends the same REST requests (same API version, headers and XML bodies, Shared Key, SAS or
bearer token authentication) straight through aiohttp at about a fifth of that cost. Queue creation,
deletion and the other management calls stay on the SDK.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import hmac
import json
import logging
import random
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape

import aiohttp
import yarl
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableEntity
from azure.data.tables._deserialize import _convert_to_entity
from azure.data.tables._serialize import _add_entity_properties, _parameter_filter_substitution

from durable_ext.storage.account import StorageAccount, StorageCredential, use_environment_settings
from durable_ext.storage.connections import storage_connector
from durable_ext.storage.identity import BearerToken, StorageTokenCredential
from durable_ext.storage.outage import OUTAGE_STATUSES, storage_health

logger = logging.getLogger(__name__)

API_VERSION = "2026-10-06"
"""The Queue service version azure-storage-queue 12.18 sends; the requests here match its own."""
RETRIES = 3
"""Retries of a request after a connection error, a timeout or a transient status (as the SDK is set)."""
_RETRY_STATUSES = frozenset({408, 500, 502, 503, 504})
_BACKOFF = 0.2
_BACKOFF_MAX = 2.0
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=60)
"""Bounds on connecting and on waiting for the answer, not on the whole request: a request may wait for
a free connection of the pool for as long as the requests before it take (10,000 starts issued at once
queue there for minutes on a slow storage), as the SDKs' transports let it."""
_MINIMAL_METADATA = "application/json;odata=minimalmetadata"
_QUEUE_HEADERS = {"x-ms-version": API_VERSION}
TABLE_API_VERSION = "2019-02-02"
"""The Table service version azure-data-tables 12.7 sends."""
_TABLE_HEADERS = {
    "x-ms-version": TABLE_API_VERSION,
    "DataServiceVersion": "3.0",
    "MaxDataServiceVersion": "3.0;NetFx",
    "Accept": "application/json",
}


@dataclass(frozen=True)
class QueueMessageInfo:
    """A message as the service describes it after a put or a get."""

    message_id: str
    pop_receipt: str
    inserted_on: datetime | None
    next_visible_on: datetime | None
    dequeue_count: int = 0
    content: str = ""


class SharedKeySigner:
    """Signs requests with the account key (the Blob, Queue and File services' Shared Key scheme)."""

    def __init__(self, account_name: str, account_key: str) -> None:
        self._account = account_name
        self._key = base64.b64decode(account_key)

    def authorization(self, method: str, url: str, headers: Mapping[str, str]) -> str:
        """The ``Authorization`` header value for a request with these (final) headers."""
        parts = urlsplit(url)
        canonical_headers = "".join(
            f"{name}:{value}\n"
            for name, value in sorted((k.lower(), v.strip()) for k, v in headers.items())
            if name.startswith("x-ms-")
        )
        resource = f"/{self._account}{parts.path}"
        if parts.query:
            params: dict[str, list[str]] = {}
            for pair in parts.query.split("&"):
                name, _, value = pair.partition("=")
                params.setdefault(unquote(name).lower(), []).append(unquote(value))
            resource += "".join(f"\n{name}:{','.join(sorted(params[name]))}" for name in sorted(params))
        length = headers.get("Content-Length", "")
        string_to_sign = "\n".join(
            [
                method,
                "",  # Content-Encoding
                "",  # Content-Language
                "" if length == "0" else length,
                "",  # Content-MD5
                headers.get("Content-Type", ""),
                "",  # Date (x-ms-date is signed instead)
                "",  # If-Modified-Since
                "",  # If-Match
                "",  # If-None-Match
                "",  # If-Unmodified-Since
                "",  # Range
            ]
        )
        return self._sign(f"{string_to_sign}\n{canonical_headers}{resource}")

    def table_authorization(self, method: str, url: str, headers: Mapping[str, str]) -> str:
        """The ``Authorization`` header value of a Table service request (its own Shared Key scheme)."""
        parts = urlsplit(url)
        comp = next((p[5:] for p in parts.query.split("&") if p.startswith("comp=")), None)
        resource = f"/{self._account}{parts.path}" + (f"?comp={comp}" if comp is not None else "")
        content_type = headers.get("Content-Type", "")
        return self._sign(f"{method}\n\n{content_type}\n{headers['x-ms-date']}\n{resource}")

    def _sign(self, string_to_sign: str) -> str:
        digest = hmac.new(self._key, string_to_sign.encode(), hashlib.sha256).digest()
        return f"SharedKey {self._account}:{base64.b64encode(digest).decode()}"


class QueueRestClient:
    """The data-path operations of one queue over one shared aiohttp session."""

    def __init__(self, account: StorageAccount, queue_name: str, session: HttpSession) -> None:
        self.queue_name = queue_name
        self._url = f"{account.queue_endpoint}/{queue_name}"
        self._session = session

    async def put(self, content: str, visibility_timeout: int) -> QueueMessageInfo:
        """Put Message with a TTL of -1 (never expires) and the given initial invisibility (s)."""
        body = (
            "<?xml version='1.0' encoding='utf-8'?>\n"
            f"<QueueMessage><MessageText>{escape(content)}</MessageText></QueueMessage>"
        ).encode()
        query = "messagettl=-1"
        if visibility_timeout:
            query = f"visibilitytimeout={visibility_timeout}&{query}"
        response = await self._session.request(
            "POST", f"{self._url}/messages?{query}", body, "application/xml; charset=utf-8"
        )
        response.expect(201, f"put a message on queue {self.queue_name}")
        (message,) = _parse_messages(response.text)
        return message

    async def get(self, count: int, visibility_timeout: int) -> list[QueueMessageInfo]:
        """Get Messages: up to ``count`` (1-32), each made invisible for ``visibility_timeout`` s."""
        response = await self._session.request(
            "GET", f"{self._url}/messages?numofmessages={count}&visibilitytimeout={visibility_timeout}"
        )
        response.expect(200, f"get messages from queue {self.queue_name}")
        return _parse_messages(response.text)

    async def delete(self, message_id: str, pop_receipt: str) -> None:
        """Delete Message; ResourceNotFoundError when it is gone, HttpResponseError 400
        ``PopReceiptMismatch`` when it was dequeued again since ``pop_receipt``."""
        response = await self._session.request("DELETE", self._message_url(message_id, pop_receipt))
        response.expect(204, f"delete a message from queue {self.queue_name}")

    async def update_visibility(self, message_id: str, pop_receipt: str, visibility_timeout: int) -> str:
        """Update Message without new content: make it visible after ``visibility_timeout`` s.

        Returns the new pop receipt; ResourceNotFoundError when the message is gone.
        """
        url = f"{self._message_url(message_id, pop_receipt)}&visibilitytimeout={visibility_timeout}"
        response = await self._session.request("PUT", url)
        response.expect(204, f"update a message in queue {self.queue_name}")
        return response.headers.get("x-ms-popreceipt", "")

    async def peek(self) -> QueueMessageInfo | None:
        """Peek Messages: the first visible message, left as it is (no pop receipt), or None."""
        response = await self._session.request("GET", f"{self._url}/messages?peekonly=true&numofmessages=1")
        response.expect(200, f"peek at queue {self.queue_name}")
        return next(iter(_parse_messages(response.text)), None)

    async def approximate_count(self) -> int:
        """Get Queue Metadata's approximate message count."""
        response = await self._session.request("GET", f"{self._url}?comp=metadata")
        response.expect(200, f"read the metadata of queue {self.queue_name}")
        return int(response.headers.get("x-ms-approximate-messages-count", "0"))

    def _message_url(self, message_id: str, pop_receipt: str) -> str:
        return f"{self._url}/messages/{quote(message_id, safe='')}?popreceipt={quote(pop_receipt, safe='')}"


class WriteKind(enum.Enum):
    """The entity writes a transaction here can hold (what the checkpoint needs)."""

    INSERT = "insert"
    """Insert Entity: fails with 409 if the row exists."""
    UPSERT_REPLACE = "upsert_replace"
    """Insert Or Replace Entity."""
    MERGE = "merge"
    """Merge Entity (with an ETag: only if unchanged, else 412; without: Insert Or Merge)."""


@dataclass(frozen=True)
class EntityWrite:
    """One write of a :meth:`TableRestClient.submit_transaction`."""

    kind: WriteKind
    entity: Mapping[str, Any]
    """The entity with its PartitionKey and RowKey, values as the tables SDK takes them."""
    etag: str | None = None


class TableRestClient:
    """The hot requests to one table: entity-group transactions, single writes and point reads.

    azure-data-tables builds and parses ``$batch`` bodies with the ``email`` package, which took two
    thirds of the engine's CPU under load. The requests here are the SDK's own, byte for byte in
    their structure: the same multipart layout, inner requests, headers and entity JSON (made, and
    read back, by the SDK's own converters).
    """

    def __init__(self, account: StorageAccount, table_name: str, session: HttpSession) -> None:
        self.table_name = table_name
        self._endpoint = account.table_endpoint
        self._session = session

    def _entity_url(self, entity: Mapping[str, Any]) -> str:
        keys = (quote(str(entity[k]).replace("'", "''"), safe="") for k in ("PartitionKey", "RowKey"))
        partition_key, row_key = keys
        return f"{self._endpoint}/{self.table_name}(PartitionKey='{partition_key}',RowKey='{row_key}')"

    def _request_line(self, write: EntityWrite) -> tuple[str, str, dict[str, str]]:
        if write.kind is WriteKind.INSERT:
            return "POST", f"{self._endpoint}/{self.table_name}", {"Accept": _MINIMAL_METADATA}
        headers = {"If-Match": write.etag} if write.etag is not None else {}
        method = "PUT" if write.kind is WriteKind.UPSERT_REPLACE else "PATCH"
        return method, self._entity_url(write.entity), headers

    async def submit_transaction(self, writes: Sequence[EntityWrite]) -> list[str]:
        """Apply ``writes`` (one partition, at most 100) atomically; returns their new ETags in order.

        A write that fails fails them all: HttpResponseError with that write's status (409 for an
        insert of an existing row, 412 for a changed ETag, 404 for a merge of a missing row).
        """
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        date = formatdate(usegmt=True)
        parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
        for index, write in enumerate(writes):
            method, url, extra = self._request_line(write)
            body = json.dumps(_add_entity_properties(write.entity))
            headers = {
                "Content-Type": "application/json",
                "Content-Length": str(len(body.encode())),
                "x-ms-version": TABLE_API_VERSION,
                "DataServiceVersion": "3.0",
                "Accept": "application/json",
                **extra,
                "x-ms-date": date,
                "Date": date,
            }
            head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            parts.append(
                f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
                f"Content-ID: {index}\r\n\r\n{method} {url} HTTP/1.1\r\n{head}\r\n{body}\r\n"
            )
        parts.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n")
        response = await self._session.request(
            "POST",
            f"{self._endpoint}/$batch",
            "".join(parts).encode(),
            f"multipart/mixed; boundary={batch}",
            table=True,
        )
        action = f"write a transaction to table {self.table_name}"
        response.expect(202, action)
        etags = []
        for answer in _batch_parts(response.text):
            answer.expect(201 if answer.status == 201 else 204, action)
            etags.append(answer.headers.get("etag", ""))
        if len(etags) != len(writes):
            raise HttpResponseError(
                message=f"table {self.table_name}: {len(etags)} answers to a transaction of {len(writes)}"
            )
        return etags

    async def get(self, partition_key: str, row_key: str) -> TableEntity | None:
        """Query Entity by its keys, typed as the SDK's ``get_entity`` types it; None if absent."""
        response = await self._session.request(
            "GET",
            self._entity_url({"PartitionKey": partition_key, "RowKey": row_key}),
            table=True,
            headers={"Accept": _MINIMAL_METADATA},
        )
        if response.status == 404:
            return None
        response.expect(200, f"read a row of table {self.table_name}")
        entity: TableEntity = _convert_to_entity(json.loads(response.text))  # type: ignore[no-untyped-call]
        return entity

    async def query(
        self,
        query_filter: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        select: Sequence[str] | None = None,
        results_per_page: int | None = None,
    ) -> AsyncIterator[TableEntity]:
        """Query Entities as the SDK's ``query_entities`` does (same filter substitution, rows typed
        by its converter), page by page.

        The SDK's generated deserializer walks every property of every row before its converter runs:
        reading the 2,004 rows of a 500-activity history took 295 ms, 160 ms of it in that walk
        (benchmarks' ``dashboard`` scenario, 2026-12-06).
        """
        query = {"$filter": _parameter_filter_substitution(dict(parameters or {}), query_filter)}
        if select is not None:
            query["$select"] = ",".join(select)
        if results_per_page is not None:
            query["$top"] = str(results_per_page)
        following: dict[str, str] = {}
        while True:
            arguments = "&".join(f"{k}={quote(v, safe='')}" for k, v in {**query, **following}.items())
            response = await self._session.request(
                "GET",
                f"{self._endpoint}/{self.table_name}()?{arguments}",
                table=True,
                headers={"Accept": _MINIMAL_METADATA},
            )
            response.expect(200, f"query table {self.table_name}")
            for row in json.loads(response.text)["value"]:
                yield _convert_to_entity(row)  # type: ignore[no-untyped-call]
            following = _continuation(response.headers)
            if not following:
                return

    async def merge(self, entity: Mapping[str, Any], etag: str | None = None) -> str:
        """Merge Entity with If-Match ``etag``, or Insert Or Merge without; returns the new ETag.

        ResourceNotFoundError for a missing row and HttpResponseError (412) for a changed ETag.
        """
        headers = {"If-Match": etag} if etag is not None else {}
        return await self._write("PATCH", self._entity_url(entity), entity, headers, "merge a row of")

    async def insert(self, entity: Mapping[str, Any]) -> str:
        """Insert Entity; returns its ETag. HttpResponseError (409) if the row exists."""
        url = f"{self._endpoint}/{self.table_name}"
        return await self._write("POST", url, entity, {"Prefer": "return-no-content"}, "insert a row into")

    async def replace(self, entity: Mapping[str, Any], etag: str) -> str:
        """Update Entity (replace) with If-Match ``etag``; returns the new ETag.

        ResourceNotFoundError for a missing row and HttpResponseError (412) for a changed ETag.
        """
        return await self._write(
            "PUT", self._entity_url(entity), entity, {"If-Match": etag}, "replace a row of"
        )

    async def _write(
        self, method: str, url: str, entity: Mapping[str, Any], headers: dict[str, str], action: str
    ) -> str:
        """Send one entity; every write answers 204 (an insert because it asks for no content)."""
        response = await self._session.request(
            method,
            url,
            json.dumps(_add_entity_properties(entity)).encode(),
            "application/json",
            table=True,
            headers=headers or None,
        )
        response.expect(204, f"{action} table {self.table_name}")
        return response.headers.get("ETag", "")


def _continuation(headers: Mapping[str, str]) -> dict[str, str]:
    """The query arguments that ask for a query's next page; empty after the last page."""
    keys = {
        "NextPartitionKey": "x-ms-continuation-NextPartitionKey",
        "NextRowKey": "x-ms-continuation-NextRowKey",
    }
    return {argument: headers[header] for argument, header in keys.items() if header in headers}


def _batch_parts(text: str) -> list[RestResponse]:
    """Status, headers and body of each answer in a ``$batch`` response (one changeset)."""
    found = re.search(r"boundary=(changesetresponse_[^\s;]+)", text)
    if found is None:
        raise HttpResponseError(message="table transaction response has no changeset")
    answers = []
    for chunk in text.split(f"--{found.group(1)}")[1:]:
        if chunk.startswith("--"):
            break
        _, _, http = chunk.partition("\r\n\r\n")
        head, _, body = http.partition("\r\n\r\n")
        status_line, *header_lines = head.split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        answers.append(RestResponse(int(status_line.split()[1]), headers, body.strip()))
    return answers


@dataclass(frozen=True)
class RestResponse:
    """Status, headers and body text of one answered request."""

    status: int
    headers: Mapping[str, str]
    text: str

    def expect(self, status: int, action: str) -> None:
        """Raise the azure-core error the SDK would raise unless the answer has ``status``."""
        if self.status == status:
            return
        code = self.headers.get("x-ms-error-code") or _error_code(self.text)
        message = f"cannot {action}: HTTP {self.status} {code or ''}".rstrip()
        error: HttpResponseError
        if self.status == 404:
            error = ResourceNotFoundError(message=message)
        elif self.status == 403:
            error = ClientAuthenticationError(message=message)
        else:
            error = HttpResponseError(message=message)
        error.status_code = self.status
        error.error_code = code  # type: ignore[attr-defined]  # as the storage SDKs' errors carry it
        raise error


class HttpSession:
    """One aiohttp session per task hub: authentication, retries, and the hook that counts requests.

    Requests are signed with the account key, carry the SAS, or carry a bearer token of ``credential``
    (an identity-based connection's; required for one). The session is opened on first use (it needs
    the running event loop) and closed by :meth:`close`.
    """

    def __init__(
        self,
        account: StorageAccount,
        trace_configs: list[aiohttp.TraceConfig] | None = None,
        *,
        credential: StorageCredential | None = None,
    ) -> None:
        self._signer = (
            SharedKeySigner(account.account_name, account.account_key) if account.account_key else None
        )
        self._bearer: BearerToken | None = None
        if account.identity is not None:
            if not isinstance(credential, StorageTokenCredential):
                raise TypeError("an identity-based account needs its token credential")
            self._bearer = BearerToken(credential)
        self._sas = account.sas_token
        self._storage = account.describe()
        self._trace_configs = trace_configs or []
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No automatic Content-Type: it is a signed header, so only what is set here may go out.
            self._session = aiohttp.ClientSession(
                timeout=_TIMEOUT,
                trace_configs=self._trace_configs,
                skip_auto_headers=("Content-Type",),
                trust_env=use_environment_settings(),
                connector=storage_connector(),
            )
        return self._session

    async def authenticate(self) -> None:
        """Get the bearer token now, if requests carry one: a credential that cannot get one fails at
        once with TokenUnavailableError (the storage SDKs would retry it for a minute first)."""
        if self._bearer is not None:
            await self._bearer.header()

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str,
        body: bytes = b"",
        content_type: str | None = None,
        *,
        table: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> RestResponse:
        """Send a request (retrying transient failures); returns status, headers and body text.

        ``url`` must be percent-encoded already: it is sent, and signed, exactly as given. ``table``
        selects the Table service's version headers and signing scheme.
        """
        if self._sas is not None:
            url += ("&" if "?" in url else "?") + self._sas
        target = yarl.URL(url, encoded=True)
        for attempt in range(RETRIES + 1):
            sent = dict(_TABLE_HEADERS if table else _QUEUE_HEADERS)
            sent["x-ms-date"] = formatdate(usegmt=True)
            sent["Content-Length"] = str(len(body))
            if content_type is not None:
                sent["Content-Type"] = content_type
            if headers:
                sent.update(headers)
            if self._signer is not None:
                sign = self._signer.table_authorization if table else self._signer.authorization
                sent["Authorization"] = sign(method, url, sent)
            elif self._bearer is not None:
                sent["Authorization"] = await self._bearer.header()
            try:
                async with self._client().request(method, target, data=body or None, headers=sent) as answer:
                    text = await answer.text()
                    if answer.status not in OUTAGE_STATUSES:
                        # Any other answer proves storage is there: ends an outage the loops reported.
                        storage_health.succeeded(self._storage)
                    if answer.status not in _RETRY_STATUSES or attempt == RETRIES:
                        return RestResponse(answer.status, answer.headers, text)
                    failure = f"HTTP {answer.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == RETRIES:
                    raise HttpResponseError(message=f"{method} {_redacted(url)} failed: {exc}") from exc
                failure = f"{type(exc).__name__}: {exc}"
            delay = min(_BACKOFF * 2**attempt, _BACKOFF_MAX) * random.uniform(0.8, 1.2)
            logger.info("%s %s: %s; retrying in %.2f s", method, _redacted(url), failure, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the last attempt returns or raises


def _redacted(url: str) -> str:
    """``url`` without its query (pop receipts and SAS signatures are secrets)."""
    return url.split("?", 1)[0]


def _error_code(text: str) -> str | None:
    """The error code of a Queue (XML) or Table (JSON) error body."""
    if text.lstrip().startswith("{"):
        try:
            error = json.loads(text).get("odata.error", {})
        except ValueError:
            return None
        return str(error.get("code")) if isinstance(error, dict) and error.get("code") else None
    try:
        return ET.fromstring(text).findtext("Code")
    except ET.ParseError:
        return None


def _parse_messages(text: str) -> list[QueueMessageInfo]:
    root = ET.fromstring(text)
    return [
        QueueMessageInfo(
            message_id=item.findtext("MessageId") or "",
            pop_receipt=item.findtext("PopReceipt") or "",
            inserted_on=_http_date(item.findtext("InsertionTime")),
            next_visible_on=_http_date(item.findtext("TimeNextVisible")),
            dequeue_count=int(item.findtext("DequeueCount") or 0),
            content=item.findtext("MessageText") or "",
        )
        for item in root.iter("QueueMessage")
    ]


def _http_date(text: str | None) -> datetime | None:
    return parsedate_to_datetime(text) if text else None
