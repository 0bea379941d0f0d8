"""Rows of the ``{Hub}Partitions`` table: one lease per control queue.

See docs/storage-protocol.md §1.3 (the rows) and §6.2 (the protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from durable_ext.wire import as_utc


@dataclass
class PartitionLease:
    """A table partition lease: who owns a control queue, who wants it, and until when."""

    partition_id: str
    """The control queue name, e.g. ``myhub-control-00`` (the row's RowKey)."""
    current_owner: str | None = None
    next_owner: str | None = None
    owned_since: datetime | None = None
    last_renewal: datetime | None = None
    expires_at: datetime | None = None
    is_draining: bool = False
    etag: str | None = None

    def to_entity(self) -> dict[str, Any]:
        """Table form; absent owners and times are omitted, as a fresh row has only the keys."""
        entity: dict[str, Any] = {
            "PartitionKey": "",
            "RowKey": self.partition_id,
            "CurrentOwner": self.current_owner,
            "NextOwner": self.next_owner,
            "OwnedSince": self.owned_since,
            "LastRenewal": self.last_renewal,
            "ExpiresAt": self.expires_at,
            "IsDraining": self.is_draining,
        }
        return {k: v for k, v in entity.items() if v is not None}

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> PartitionLease:
        """Read a row written by us or by DT.AS."""
        metadata = getattr(entity, "metadata", {}) or {}
        return cls(
            partition_id=entity["RowKey"],
            current_owner=entity.get("CurrentOwner") or None,
            next_owner=entity.get("NextOwner") or None,
            owned_since=as_utc(entity.get("OwnedSince")),
            last_renewal=as_utc(entity.get("LastRenewal")),
            expires_at=as_utc(entity.get("ExpiresAt")),
            is_draining=bool(entity.get("IsDraining", False)),
            etag=metadata.get("etag"),
        )

    def is_expired(self, now: datetime) -> bool:
        """True when nobody holds the lease any more (never claimed, or not renewed in time)."""
        return self.expires_at is None or now >= self.expires_at

    def is_claimable_by(self, worker_id: str, now: datetime) -> bool:
        """The claim rule of docs/storage-protocol.md §6.2: the row is free, its lease has expired, or it was
        released to ``worker_id``."""
        is_free = self.current_owner is None and self.next_owner is None
        is_released_to_me = self.current_owner is None and self.next_owner == worker_id
        return is_free or is_released_to_me or self.is_expired(now)

    def claim(self, worker_id: str, now: datetime, duration: timedelta) -> None:
        """Become the owner: a fresh claim clears any steal and drain in progress."""
        self.current_owner = worker_id
        self.next_owner = None
        self.owned_since = now
        self.last_renewal = now
        self.expires_at = now + duration
        self.is_draining = False

    def renew(self, now: datetime, interval: timedelta) -> None:
        """Extend the owner's lease to ``now + interval``."""
        self.last_renewal = now
        self.expires_at = now + interval

    def release(self) -> None:
        """Give the row up; ``next_owner`` stays so that the stealer (if any) claims it next."""
        self.current_owner = None
        self.is_draining = False
