"""The pytest plugin of durable_ext (entry point ``pytest11``, loaded wherever the package is installed).

Fixtures:

- ``durable_host``: a :class:`~durable_ext.testing.HostClient` (blocking methods, for plain test
  functions) of a :class:`~durable_ext.testing.DurableTestHost` running the app under test on a fresh
  task hub, deleted after the test.
- ``durable_host_async``: the same as an :class:`~durable_ext.testing.AsyncHostClient`, for ``async``
  tests (needs pytest-asyncio).
- ``durable_app_dir``: the app under test: the rootdir, or the directory named by the test's
  ``@pytest.mark.durable_app("path")`` (relative paths are relative to the rootdir).
- ``durable_time_skipping``: whether the test host skips time: True for a test marked
  ``@pytest.mark.durable_time_skipping`` (durable timers fire as soon as nothing else can run while
  the client waits, see :class:`~durable_ext.testing.DurableTestHost`).
- ``durable_connection_string`` (session): the storage of every test host: ``AzureWebJobsStorage`` or
  one Azurite shared by the session (see :func:`~durable_ext.testing.default_connection_string`).
  Override it in a ``conftest.py`` to use storage of your own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from durable_ext.testing_host import AsyncHostClient, DurableTestHost, HostClient, default_connection_string

MARKER = "durable_app"
TIME_SKIPPING_MARKER = "durable_time_skipping"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``durable_app`` and ``durable_time_skipping`` markers."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(path): run the durable_host fixture for the app in path (relative to the rootdir)",
    )
    config.addinivalue_line(
        "markers",
        f"{TIME_SKIPPING_MARKER}: the durable_host fixture fires durable timers as soon as nothing else "
        "can run while it waits, skipping the time in between",
    )


@pytest.fixture(scope="session")
def durable_connection_string() -> str:
    """The storage connection string every test host of the session uses."""
    return default_connection_string()


@pytest.fixture
def durable_app_dir(request: pytest.FixtureRequest) -> Path:
    """The directory of the app under test."""
    marker = request.node.get_closest_marker(MARKER)
    root = request.config.rootpath
    if marker is None:
        return root
    if len(marker.args) != 1 or not isinstance(marker.args[0], str | Path):
        raise pytest.UsageError(f'@pytest.mark.{MARKER} takes one path: @pytest.mark.{MARKER}("path/to/app")')
    return root / marker.args[0]


@pytest.fixture
def durable_time_skipping(request: pytest.FixtureRequest) -> bool:
    """Whether the test's host skips time (the test is marked ``durable_time_skipping``)."""
    marker = request.node.get_closest_marker(TIME_SKIPPING_MARKER)
    if marker is not None and (marker.args or marker.kwargs):
        raise pytest.UsageError(f"@pytest.mark.{TIME_SKIPPING_MARKER} takes no arguments")
    return marker is not None


@pytest.fixture
def durable_host(
    durable_app_dir: Path, durable_connection_string: str, durable_time_skipping: bool
) -> Iterator[HostClient]:
    """A test host for the app under test, with blocking client methods."""
    host = DurableTestHost(
        durable_app_dir, connection_string=durable_connection_string, time_skipping=durable_time_skipping
    )
    with host as client:
        yield client


async def _durable_host_async(
    durable_app_dir: Path, durable_connection_string: str, durable_time_skipping: bool
) -> AsyncIterator[AsyncHostClient]:
    """A test host for the app under test on the test's event loop, with ``async`` client methods."""
    host = DurableTestHost(
        durable_app_dir, connection_string=durable_connection_string, time_skipping=durable_time_skipping
    )
    async with host as client:
        yield client


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - async tests need pytest-asyncio anyway
    pass
else:
    durable_host_async = pytest_asyncio.fixture(_durable_host_async, name="durable_host_async")
