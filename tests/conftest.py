"""Shared pytest fixtures for the durable_ext test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from durable_ext.host.azurite import Azurite


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One in-memory Azurite on free ports, shared by the whole test session."""
    with Azurite() as instance:
        yield instance


@pytest.fixture(scope="session")
def azurite_connection_string(azurite: Azurite) -> str:
    """The connection string of the session's Azurite."""
    return azurite.connection_string
