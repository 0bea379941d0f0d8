"""Tests of durable_ext.host.azurite against real Azurite processes."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from durable_ext.errors import AzuriteError
from durable_ext.host.azurite import (
    AZURITE_VERSION,
    DEFAULT_PORTS,
    DEV_ACCOUNT_KEY,
    Azurite,
    AzuritePorts,
    dev_connection_string,
    find_azurite,
    ports_answer,
)

REPO_DIR = Path(__file__).resolve().parents[1]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def unique_name(prefix: str) -> str:
    """A storage resource name no other test uses (letters and digits only)."""
    return prefix + uuid.uuid4().hex[:12]


def write_script(path: Path, body: str) -> Path:
    """Write an executable shell script standing in for a misbehaving azurite executable."""
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def process_gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (an unreaped zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def test_session_instance_answers(azurite: Azurite, azurite_connection_string: str) -> None:
    assert azurite.running
    assert ports_answer("127.0.0.1", azurite.ports)
    assert azurite_connection_string == dev_connection_string("127.0.0.1", azurite.ports)


def test_second_instance_starts_and_stops(azurite: Azurite) -> None:
    with Azurite() as other:
        own_ports = {other.ports.blob, other.ports.queue, other.ports.table}
        assert len(own_ports) == 3
        assert own_ports.isdisjoint({azurite.ports.blob, azurite.ports.queue, azurite.ports.table})
        assert ports_answer("127.0.0.1", other.ports)
    assert not other.running
    assert wait_until(lambda: not ports_answer("127.0.0.1", other.ports, timeout=0.2))
    other.stop()  # idempotent
    assert ports_answer("127.0.0.1", azurite.ports)


def test_on_disk_data_survives_restart(tmp_path: Path) -> None:
    queue_name = unique_name("persist")
    first = Azurite(location=tmp_path)
    with first:
        service = QueueServiceClient.from_connection_string(first.connection_string)
        service.create_queue(queue_name).send_message("still here")
    assert wait_until(lambda: not ports_answer("127.0.0.1", first.ports, timeout=0.2))
    assert any(tmp_path.iterdir()), "on-disk mode wrote nothing to its location"

    with Azurite(location=tmp_path, ports=first.ports) as second:
        queue = QueueServiceClient.from_connection_string(second.connection_string).get_queue_client(
            queue_name
        )
        assert [message.content for message in queue.peek_messages()] == ["still here"]


def test_in_memory_instance_writes_nothing_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Azurite() as instance:
        QueueServiceClient.from_connection_string(instance.connection_string).create_queue("inmemory")
    assert list(tmp_path.iterdir()) == []


def test_port_in_use_is_reported(azurite: Azurite) -> None:
    clash = Azurite(ports=azurite.ports)
    with pytest.raises(AzuriteError, match=rf"{azurite.ports.blob}.*in use"):
        clash.start(timeout=20)
    assert not clash.running
    assert ports_answer("127.0.0.1", azurite.ports)


def test_early_exit_reports_output(tmp_path: Path) -> None:
    fake = write_script(tmp_path / "azurite", 'echo "boom: cannot start"; exit 3')
    with pytest.raises(AzuriteError, match=r"(?s)code 3.*boom: cannot start"):
        Azurite(executable=fake).start(timeout=20)


def test_start_timeout_kills_the_process_group(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    # The shell stays the group leader and its child must die too.
    fake = write_script(tmp_path / "azurite", f'echo "hanging"; sleep 300 & echo $! > {child_pid}; wait')
    instance = Azurite(executable=fake)
    started = time.monotonic()
    with pytest.raises(AzuriteError, match=r"(?s)did not answer.*hanging"):
        instance.start(timeout=1.5)
    assert time.monotonic() - started < 15
    assert not instance.running
    assert wait_until(child_pid.exists)
    assert wait_until(lambda: process_gone(int(child_pid.read_text())))


def test_dev_connection_string_format() -> None:
    assert dev_connection_string() == (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={DEV_ACCOUNT_KEY};"
        "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
        "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
        "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
    )
    assert AzuritePorts(blob=10000, queue=10001, table=10002) == DEFAULT_PORTS


def test_dev_connection_string_works_with_the_sdks(azurite: Azurite) -> None:
    connection_string = dev_connection_string("127.0.0.1", azurite.ports)
    table_name = unique_name("sdk")
    tables = TableServiceClient.from_connection_string(connection_string)
    tables.create_table(table_name)
    assert table_name in [table.name for table in tables.list_tables()]

    queue_name = unique_name("sdk")
    queues = QueueServiceClient.from_connection_string(connection_string)
    queues.create_queue(queue_name)
    assert queue_name in [queue.name for queue in queues.list_queues()]

    container_name = unique_name("sdk")
    blobs = BlobServiceClient.from_connection_string(connection_string)
    blobs.create_container(container_name)
    assert container_name in [container.name for container in blobs.list_containers()]


def test_version_matches_package_files() -> None:
    package = json.loads((REPO_DIR / "package.json").read_text())
    lock = json.loads((REPO_DIR / "package-lock.json").read_text())
    assert package["devDependencies"]["azurite"] == AZURITE_VERSION
    assert lock["packages"][""]["devDependencies"]["azurite"] == AZURITE_VERSION
    assert lock["packages"]["node_modules/azurite"]["version"] == AZURITE_VERSION


def test_find_azurite_honours_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = write_script(tmp_path / "my-azurite", "exit 0")
    monkeypatch.setenv("DURABLE_EXT_AZURITE", str(fake))
    assert find_azurite(install=False) == fake

    monkeypatch.setenv("DURABLE_EXT_AZURITE", str(tmp_path / "missing"))
    with pytest.raises(AzuriteError, match="DURABLE_EXT_AZURITE"):
        find_azurite(install=False)


def test_find_azurite_finds_an_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURABLE_EXT_AZURITE", raising=False)
    found = find_azurite(install=False)
    assert found.name == "azurite"
    assert os.access(found, os.X_OK)
