"""The task hubs a dashboard shows, each under an opaque, URL-safe ID."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from durable_ext.client import TaskHubClient
from durable_ext.errors import InstanceNotFoundError

READ_ONLY_SETTING = "DURABLE_EXT_DASHBOARD_READONLY"
"""App setting or environment variable that makes the dashboard refuse every action when truthy."""

_TRUE = frozenset({"1", "true", "yes"})


def read_only_from(settings: Mapping[str, str]) -> bool:
    """Whether :data:`READ_ONLY_SETTING` is set to ``1`` (or true/yes) in ``settings``."""
    return settings.get(READ_ONLY_SETTING, "").strip().lower() in _TRUE


def hub_id(account: str, hub_name: str) -> str:
    """A stable ID for (account, hub): the hub's name and a digest of the account's endpoints.

    Hub names are letters and digits, and the digest is URL-safe base64, so the ID needs no quoting.
    Hub names are case-insensitive, so the ID uses the lower-cased one.
    """
    digest = hashlib.sha256(f"{account}\n{hub_name.lower()}".encode()).digest()
    tag = base64.urlsafe_b64encode(digest[:6]).decode().rstrip("=")
    return f"{hub_name.lower()}-{tag}"


@dataclass(frozen=True)
class DashboardHub:
    """One task hub the dashboard shows: its ID, name, account (for people) and client."""

    id: str
    hub: str
    account: str
    client: TaskHubClient

    @classmethod
    def of(cls, client: TaskHubClient) -> DashboardHub:
        """The dashboard's view of the hub ``client`` works on."""
        account = client.hub.account
        label = f"{account.account_name} ({account.table_endpoint})"
        return cls(hub_id(account.describe(), client.hub.names.hub), client.hub.names.hub, label, client)


class HubSet:
    """The hubs of one dashboard, looked up by ID."""

    def __init__(self, hubs: Iterable[DashboardHub]) -> None:
        self._hubs = {hub.id: hub for hub in hubs}

    def all(self) -> list[DashboardHub]:
        """Every hub, in the order given."""
        return list(self._hubs.values())

    def get(self, hub_id_: str) -> DashboardHub:
        """The hub with this ID; InstanceNotFoundError (404) for an unknown one."""
        hub = self._hubs.get(hub_id_)
        if hub is None:
            raise InstanceNotFoundError(f"no task hub with ID {hub_id_[:100]!r} in this dashboard")
        return hub
