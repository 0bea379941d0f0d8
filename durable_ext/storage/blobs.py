"""Large payloads in ``{hub}-largemessages``: gzip-compressed UTF-8 blobs.

See docs/storage-protocol.md §3.5 (table values) and §4.3 (queue messages).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobProperties
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from durable_ext.errors import MessageFormatError
from durable_ext.storage.account import StorageAccount

logger = logging.getLogger(__name__)

# .NET's CompressionLevel.Optimal is zlib's default level, not the maximum.
_GZIP_LEVEL = 6


class LargeMessageStore:
    """Uploads, downloads and deletes the hub's large-message blobs.

    The container is created lazily on the first upload, as DT.AS does, so a hub that never sees a
    large payload has no such container.
    """

    def __init__(self, account: StorageAccount, blob_service: BlobServiceClient, container_name: str) -> None:
        self._account = account
        self._container: ContainerClient = blob_service.get_container_client(container_name)
        self.container_name = container_name

    async def upload(self, blob_name: str, text: str) -> None:
        """Store ``text`` gzip-compressed as ``blob_name`` (overwriting)."""
        data = gzip.compress(text.encode("utf-8"), compresslevel=_GZIP_LEVEL)
        blob = self._container.get_blob_client(blob_name)
        try:
            await blob.upload_blob(data, overwrite=True)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                await self._container.create_container()
            await blob.upload_blob(data, overwrite=True)

    async def download(self, blob_name: str) -> str:
        """Read and decompress a blob written by :meth:`upload` (or by DT.AS)."""
        try:
            stream = await self._container.get_blob_client(blob_name).download_blob()
            data = await stream.readall()
        except ResourceNotFoundError as exc:
            raise MessageFormatError(
                f"large-message blob {self.container_name}/{blob_name} does not exist"
            ) from exc
        try:
            return gzip.decompress(data).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MessageFormatError(f"large-message blob {blob_name} is not gzip-compressed UTF-8") from exc

    def url(self, blob_name: str) -> str:
        """The absolute URL that the Instances table stores for an offloaded value."""
        return self._account.blob_url(self.container_name, blob_name)

    def blob_name_from_url(self, url: str) -> str | None:
        """The blob name inside this hub's container, or None if ``url`` points elsewhere."""
        path = unquote(urlsplit(url).path)
        marker = f"/{self.container_name}/"
        index = path.find(marker)
        return path[index + len(marker) :] if index >= 0 else None

    async def delete(self, blob_name: str) -> None:
        """Delete one blob; a missing blob is not an error."""
        with contextlib.suppress(ResourceNotFoundError):
            await self._container.delete_blob(blob_name)

    async def list(self, prefix: str) -> list[BlobProperties]:
        """Every blob whose name starts with ``prefix`` (none if the container does not exist)."""
        try:
            return [item async for item in self._container.list_blobs(name_starts_with=prefix)]
        except ResourceNotFoundError:
            return []
