"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against
``python -m durable_ext start`` serving the real dashboard on Azurite (issue 19).

Every wait polls a condition (Playwright's auto-waiting ``expect``) with a deadline; none sleeps.
With DURABLE_EXT_SCREENSHOTS=1 the tests also write the README's screenshots to docs/images/.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from durable_ext.client import TaskHubClient
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub
from tests.browser_support import browser_page, launched_chromium, screenshot
from tests.host_support import (
    REPO,
    RunningHost,
    free_port,
    host_env,
    read_until,
    running_host,
    sample_app_dir,
)

TIMEOUT_S = 90.0
API = "/runtime/webhooks/durabletask"
KEY = secrets.token_urlsafe(24)
EXTRA_APPS = ("dashboard_rewind.py", "dashboard_timeline.py")

expect.set_options(timeout=TIMEOUT_S * 1000)


@pytest.fixture(scope="module")
def hub_name() -> str:
    """The task hub of the module's host."""
    return "Dash" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, azurite_connection_string: str, hub_name: str
) -> Iterator[RunningHost]:
    """One keyed host for the module: the sample app plus an orchestration that fails until rewound and
    one whose activities are short next to its timer."""
    root = tmp_path_factory.mktemp("dashboard")
    extra = [REPO / "tests" / "apps" / name for name in EXTRA_APPS]
    app = sample_app_dir(root, hub_name, extra_blueprints=extra)
    (app / "local.settings.json").write_text(json.dumps({"Values": {"DURABLE_EXT_SYSTEM_KEY": KEY}}))
    with running_host(app, azurite_connection_string, root / "host.log") as running:
        yield running


@pytest.fixture(scope="module")
def http(host: RunningHost) -> Iterator[httpx.Client]:
    """The host's management API, with the key."""
    with httpx.Client(base_url=host.base_url, timeout=TIMEOUT_S, headers={"x-functions-key": KEY}) as client:
        yield client


@pytest.fixture(scope="module")
def hub_id(http: httpx.Client) -> str:
    """The dashboard's ID of the host's task hub."""
    response = http.get("/dashboard/api/hubs")
    assert response.status_code == 200, response.text
    return str(response.json()["hubs"][0]["id"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab that already holds the system key (the key prompt has its own test); the test
    fails if the page's scripts threw."""
    with browser_page(browser, KEY) as tab:
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.set_default_timeout(TIMEOUT_S * 1000)
        yield tab
        assert not errors, f"the page's scripts failed: {errors}"


def start(http: httpx.Client, name: str, instance_id: str, payload: object = None) -> None:
    response = http.post(f"{API}/orchestrators/{name}/{instance_id}", json=payload)
    assert response.status_code == 202, response.text


def wait_for_status(http: httpx.Client, instance_id: str, status: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    seen = None
    while time.monotonic() < deadline:
        response = http.get(f"{API}/instances/{instance_id}")
        seen = (
            response.json().get("runtimeStatus")
            if response.status_code in (200, 202)
            else response.status_code
        )
        if seen == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} is {seen}, not {status}")


def list_url(host: RunningHost, hub: str, **params: str) -> str:
    query = "&".join(f"{name}={quote(value)}" for name, value in params.items())
    return f"{host.base_url}/dashboard/#/{hub}/instances" + (f"?{query}" if query else "")


def detail_url(host: RunningHost, hub: str, instance_id: str) -> str:
    return f"{host.base_url}/dashboard/#/{hub}/instances/{quote(instance_id, safe='')}"


def rows(page: Page) -> list[str]:
    """The instance IDs of the rows shown, in order."""
    return [row.get_attribute("data-instance-id") or "" for row in page.get_by_test_id("instance-row").all()]


def apply_filters(page: Page, **fields: str) -> None:
    """Type the given filter fields (by data-testid), apply, and wait for the list to reload."""
    for testid, value in fields.items():
        page.get_by_test_id(testid).fill(value)
    page.get_by_test_id("apply-filters").click()


def confirm(page: Page, **fields: str) -> None:
    """Fill the confirmation dialog's fields (confirm-NAME) and confirm; wait until it closed."""
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_be_visible()
    for name, value in fields.items():
        dialog.get_by_test_id(f"confirm-{name}").fill(value)
    page.get_by_test_id("confirm").click()
    expect(dialog).to_be_hidden()


def until(page: Page, refresh: Callable[[], None], check: Callable[[], bool], what: str) -> None:
    """Click ``refresh`` until ``check()`` holds (for state no auto-refresh shows), each time waiting
    for the page's next API answer, so the server is asked at the pace it answers."""
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, f"never true: {what}"
        with page.expect_response(lambda response: "/dashboard/api/" in response.url):
            refresh()


# ---- access -----------------------------------------------------------------------------------------


def test_the_key_is_asked_for_and_never_put_in_a_url(
    host: RunningHost, http: httpx.Client, hub_id: str, browser: Browser
) -> None:
    instance_id = f"key-{uuid.uuid4().hex[:8]}"
    start(http, "hello_sequence", instance_id)
    assert httpx.get(f"{host.base_url}/dashboard/api/hubs").status_code == 401
    with browser_page(browser) as tab:
        urls: list[str] = []
        tab.on("request", lambda request: urls.append(request.url))
        tab.goto(list_url(host, hub_id, prefix=instance_id))
        prompt = tab.get_by_test_id("key-prompt")
        expect(prompt).to_be_visible()
        tab.get_by_test_id("key-input").fill("not-the-key")
        tab.get_by_test_id("key-submit").click()
        expect(prompt).to_contain_text("refused")
        tab.get_by_test_id("key-input").fill(KEY)
        tab.get_by_test_id("key-submit").click()
        expect(prompt).to_be_hidden()
        expect(tab.get_by_test_id("instance-row")).to_have_count(1)
        expect(tab.get_by_test_id("instance-row")).to_have_attribute("data-instance-id", instance_id)
    assert urls, "the page made no requests"
    assert not [url for url in urls if KEY in url or "not-the-key" in url]


# ---- instances list ---------------------------------------------------------------------------------


def test_list_filters_pages_counts_and_refreshes(
    host: RunningHost, http: httpx.Client, hub_id: str, page: Page
) -> None:
    prefix = f"list-{uuid.uuid4().hex[:6]}-"
    done = [f"{prefix}done-{n:02d}" for n in range(12)]
    waiting = [f"{prefix}wait-{n:02d}" for n in range(3)]
    for instance_id in done:
        start(http, "hello_sequence", instance_id)
    for instance_id in waiting:
        start(http, "approval_workflow", instance_id, {"timeout_seconds": 3600})
    for instance_id in done:
        wait_for_status(http, instance_id, "Completed")
    for instance_id in waiting:
        wait_for_status(http, instance_id, "Running")

    page.goto(list_url(host, hub_id))
    apply_filters(page, **{"instance-search": prefix})
    expect(page.get_by_test_id("instance-row")).to_have_count(15)
    assert rows(page) == sorted(done + waiting)
    expect(page.get_by_test_id("count-total")).to_have_text("Total 15")
    expect(page.get_by_test_id("count-Completed")).to_have_text("Completed 12")
    expect(page.get_by_test_id("count-Running")).to_have_text("Running 3")
    screenshot(page, "dashboard-instances.png")

    page.get_by_test_id("status-filter").select_option(["Running"])
    apply_filters(page)
    expect(page.get_by_test_id("instance-row")).to_have_count(3)
    assert rows(page) == waiting
    expect(page.get_by_test_id("count-total")).to_have_text("Total 3")

    page.get_by_test_id("status-filter").select_option([])
    apply_filters(page, **{"filter-name": "approval_workflow"})
    expect(page.get_by_test_id("instance-row")).to_have_count(3)
    apply_filters(page, **{"filter-name": "", "filter-custom-status": "waiting for"})
    expect(page.get_by_test_id("instance-row")).to_have_count(3)
    apply_filters(page, **{"filter-custom-status": "", "filter-to": "2001-01-01T00:00:00"})
    expect(page.get_by_test_id("no-instances")).to_be_visible()
    apply_filters(page, **{"filter-from": "2001-01-01T00:00:00", "filter-to": ""})
    expect(page.get_by_test_id("instance-row")).to_have_count(15)

    page.get_by_test_id("order").select_option("desc")
    apply_filters(page)
    expect(page.get_by_test_id("instance-row").first).to_have_attribute("data-instance-id", waiting[-1])
    assert rows(page) == sorted(done + waiting, reverse=True)
    page.get_by_test_id("order").select_option("asc")
    page.get_by_test_id("page-size").select_option("10")
    apply_filters(page, **{"instance-search": f"{prefix}done-"})
    expect(page.get_by_test_id("instance-row")).to_have_count(10)
    assert rows(page) == done[:10]
    page.get_by_test_id("next-page").click()
    expect(page.get_by_test_id("page-number")).to_have_text("Page 2")
    expect(page.get_by_test_id("instance-row")).to_have_count(2)
    assert rows(page) == done[10:]
    page.get_by_test_id("prev-page").click()
    expect(page.get_by_test_id("instance-row")).to_have_count(10)

    # Bad input is answered as the API answers it.
    apply_filters(page, **{"instance-search": "x" * 300})
    expect(page.get_by_test_id("error")).to_contain_text("prefix: String should have at most 256 characters")
    expect(page.get_by_test_id("instance-row")).to_have_count(0)

    # Auto-refresh shows a change made elsewhere without any click.
    apply_filters(page, **{"instance-search": waiting[0]})
    row = page.locator(f'[data-testid="instance-row"][data-instance-id="{waiting[0]}"]')
    expect(row).to_have_attribute("data-status", "Running")
    page.get_by_test_id("auto-refresh").check()
    response = http.post(f"{API}/instances/{waiting[0]}/raiseEvent/Approval", json=True)
    assert response.status_code == 202, response.text
    expect(row).to_have_attribute("data-status", "Completed")


# ---- instance detail --------------------------------------------------------------------------------


def test_detail_shows_history_timeline_payloads_and_relatives(
    host: RunningHost, http: httpx.Client, hub_id: str, page: Page
) -> None:
    parent = f"parent-{uuid.uuid4().hex[:8]}"
    start(http, "parent_with_sub_orchestration", parent)
    wait_for_status(http, parent, "Completed")

    page.goto(detail_url(host, hub_id, parent))
    expect(page.get_by_test_id("detail-instance-id")).to_have_text(parent)
    expect(page.get_by_test_id("summary")).to_have_attribute("data-status", "Completed")
    expect(page.get_by_test_id("summary")).to_contain_text("parent_with_sub_orchestration")
    expect(page.get_by_test_id("duration")).not_to_have_text("—")
    expect(page.get_by_test_id("payload-output")).to_contain_text("Hello Tokyo!")
    history = page.get_by_test_id("history-row")
    expect(history.first).to_be_visible()
    event_types = {row.get_attribute("data-event-type") for row in history.all()}
    assert {
        "ExecutionStarted",
        "SubOrchestrationInstanceCreated",
        "TaskScheduled",
        "ExecutionCompleted",
    } <= event_types
    timeline = page.get_by_test_id("timeline")
    expect(timeline.locator(".vis-item.tl-suborchestration")).to_have_count(1)
    expect(timeline.locator(".vis-item.tl-activity")).to_have_count(1)
    expect(timeline).to_contain_text("say_hello")
    expect(timeline).to_have_attribute("data-fitted", "true")
    expect(timeline.locator(".vis-item.tl-activity")).to_be_in_viewport()
    screenshot(page, "dashboard-detail.png")

    child = page.get_by_test_id("child-link")
    expect(child).to_have_count(1)
    child_id = child.inner_text()
    child.click()
    expect(page.get_by_test_id("detail-instance-id")).to_have_text(child_id)
    expect(page.get_by_test_id("summary")).to_contain_text("hello_sequence")
    expect(page.get_by_test_id("timeline").locator(".vis-item.tl-activity")).to_have_count(3)
    page.get_by_test_id("parent-link").click()
    expect(page.get_by_test_id("detail-instance-id")).to_have_text(parent)
    # A sub-orchestration's bar in the timeline leads to the child too.
    page.get_by_test_id("timeline").locator(".vis-item.tl-suborchestration").click()
    expect(page.get_by_test_id("detail-instance-id")).to_have_text(child_id)


@pytest.mark.parametrize(
    ("orchestration", "activities"),
    # Short activities next to a long timer; an activity that ends just before its orchestration.
    [("short_and_long", 2), ("retry_example", 3)],
)
def test_timeline_labels_are_shown_whole(
    host: RunningHost, http: httpx.Client, hub_id: str, page: Page, *, orchestration: str, activities: int
) -> None:
    instance_id = f"labels-{uuid.uuid4().hex[:8]}"
    start(http, orchestration, instance_id)
    wait_for_status(http, instance_id, "Completed")

    page.goto(detail_url(host, hub_id, instance_id))
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_have_attribute("data-fitted", "true")
    expect(timeline.locator(".vis-item.tl-activity")).to_have_count(activities)
    # A label is cut when a box between it and the timeline's outer frame hides what overflows it and
    # the label reaches past that box (its bar's, or the panel's at the window's edges).
    clipped = timeline.evaluate(
        """(box) => [...box.querySelectorAll('.vis-item-content')].filter((label) => {
          const shown = label.getBoundingClientRect();
          let outer = label.parentElement;
          for (; !outer.classList.contains('vis-timeline'); outer = outer.parentElement) {
            const bounds = outer.getBoundingClientRect();
            const hides = getComputedStyle(outer).overflowX !== 'visible';
            if (hides && (shown.left < bounds.left - 1 || shown.right > bounds.right + 1)) return true;
          }
          return false;
        }).map((label) => label.textContent)"""
    )
    assert clipped == [], f"timeline labels cut by their boxes: {clipped}"


def test_the_page_icon_loads(host: RunningHost, hub_id: str, page: Page) -> None:
    # Without an icon of its own the browser asks the host for /favicon.ico, a 404 logged as an error
    # in the console of every dashboard tab.
    page.goto(list_url(host, hub_id))
    expect(page.get_by_test_id("instance-table")).to_be_visible()
    icon = page.evaluate(
        "document.querySelector('link[rel~=icon]')?.href ?? new URL('/favicon.ico', location.href).href"
    )
    response = httpx.get(icon)
    assert response.status_code == 200, f"{icon}: {response.status_code}"
    assert response.headers["content-type"].startswith("image/"), response.headers["content-type"]


def test_a_large_input_is_fetched_on_demand(
    host: RunningHost, http: httpx.Client, hub_id: str, page: Page
) -> None:
    instance_id = f"big-{uuid.uuid4().hex[:8]}"
    padding = "x" * 100_000
    start(http, "approval_workflow", instance_id, {"timeout_seconds": 3600, "padding": padding})
    wait_for_status(http, instance_id, "Running")
    page.goto(detail_url(host, hub_id, instance_id))
    shown = page.get_by_test_id("payload-input")
    expect(shown).to_have_text("null")
    page.get_by_test_id("load-full-input").click()
    expect(shown).to_contain_text(padding)
    expect(page.get_by_test_id("load-full-input")).to_have_count(0)
    assert json.loads(shown.inner_text()) == {"timeout_seconds": 3600, "padding": padding}
    expect(page.get_by_test_id("payload-customStatus")).to_have_text('"Waiting for approval"')


# ---- actions ----------------------------------------------------------------------------------------


def test_every_action_with_its_confirmation(
    host: RunningHost, http: httpx.Client, hub_id: str, page: Page
) -> None:
    instance_id = f"act-{uuid.uuid4().hex[:8]}"
    start(http, "approval_workflow", instance_id, {"timeout_seconds": 3600})
    wait_for_status(http, instance_id, "Running")
    page.goto(detail_url(host, hub_id, instance_id))
    summary = page.get_by_test_id("summary")
    expect(summary).to_have_attribute("data-status", "Running")
    page.get_by_test_id("auto-refresh").check()

    # Cancelling changes nothing.
    page.get_by_test_id("action-terminate").click()
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("confirm-dialog")).to_be_hidden()
    assert http.get(f"{API}/instances/{instance_id}").json()["runtimeStatus"] == "Running"

    page.get_by_test_id("action-suspend").click()
    confirm(page, reason="paused from the dashboard")
    expect(summary).to_have_attribute("data-status", "Suspended")
    page.get_by_test_id("action-resume").click()
    confirm(page, reason="go on")
    expect(summary).to_have_attribute("data-status", "Running")

    # Bad event data is refused in the dialog, which stays open.
    page.get_by_test_id("action-raise-event").click()
    page.get_by_test_id("confirm-eventName").fill("Approval")
    page.get_by_test_id("confirm-eventData").fill("{not json")
    page.get_by_test_id("confirm").click()
    expect(page.get_by_test_id("confirm-error")).to_contain_text("not valid JSON")
    confirm(page, eventData="true")
    expect(summary).to_have_attribute("data-status", "Completed")
    expect(page.get_by_test_id("payload-output")).to_have_text('"approved"')

    page.get_by_test_id("action-restart").click()
    confirm(page)
    expect(page.get_by_test_id("detail-instance-id")).not_to_have_text(instance_id)
    restarted = page.get_by_test_id("detail-instance-id").inner_text()
    expect(summary).to_have_attribute("data-status", "Running")
    page.get_by_test_id("action-terminate").click()
    confirm(page, reason="enough")
    expect(summary).to_have_attribute("data-status", "Terminated")
    page.get_by_test_id("action-purge").click()
    confirm(page)
    expect(page.get_by_test_id("instance-table")).to_be_visible()
    assert http.get(f"{API}/instances/{restarted}").status_code == 404


def test_rewind_of_a_failed_instance(
    host: RunningHost, http: httpx.Client, hub_id: str, page: Page, tmp_path: Path
) -> None:
    instance_id = f"rewind-{uuid.uuid4().hex[:8]}"
    start(http, "fail_once", instance_id, str(tmp_path / "marker"))
    wait_for_status(http, instance_id, "Failed")
    page.goto(detail_url(host, hub_id, instance_id))
    expect(page.get_by_test_id("failure-message")).to_contain_text("failing on purpose")
    expect(page.get_by_test_id("timeline").locator(".vis-item.tl-failed").first).to_be_visible()
    page.get_by_test_id("auto-refresh").check()
    page.get_by_test_id("action-rewind").click()
    confirm(page, reason="fixed")
    until(
        page,
        lambda: page.get_by_test_id("refresh").click(),
        lambda: page.get_by_test_id("summary").get_attribute("data-status") == "Completed",
        "the rewound instance completed",
    )
    expect(page.get_by_test_id("payload-output")).to_contain_text("succeeded after a rewind")


# ---- bulk -------------------------------------------------------------------------------------------


def test_bulk_terminate_of_50_on_the_filter_then_purge_of_a_selection(
    host: RunningHost, http: httpx.Client, hub_id: str, page: Page
) -> None:
    prefix = f"bulk-{uuid.uuid4().hex[:6]}-"
    ids = [f"{prefix}{n:02d}" for n in range(50)]
    for instance_id in ids:
        start(http, "approval_workflow", instance_id, {"timeout_seconds": 3600})
    page.goto(list_url(host, hub_id, prefix=prefix, top="100"))
    expect(page.get_by_test_id("count-total")).to_have_text("Total 50")
    page.get_by_test_id("bulk-action").select_option("terminate")
    page.get_by_test_id("bulk-limit").fill("50")
    page.get_by_test_id("bulk-filter").click()
    confirm(page, reason="bulk from the dashboard")
    results = page.get_by_test_id("bulk-result")
    expect(results).to_have_count(50)
    expect(page.get_by_test_id("bulk-summary")).to_have_text("Bulk terminate: 50 of 50 succeeded")
    assert sorted(row.get_attribute("data-instance-id") or "" for row in results.all()) == ids
    page.get_by_test_id("auto-refresh").check()
    expect(page.get_by_test_id("count-Terminated")).to_have_text("Terminated 50")

    page.get_by_test_id("auto-refresh").uncheck()
    for instance_id in ids[:2]:
        page.locator(f'[data-instance-id="{instance_id}"] [data-testid="select-instance"]').check()
    page.get_by_test_id("bulk-action").select_option("purge")
    expect(page.get_by_test_id("bulk-selected")).to_have_text("Apply to 2 selected")
    page.get_by_test_id("bulk-selected").click()
    confirm(page)
    expect(page.get_by_test_id("bulk-summary")).to_have_text("Bulk purge: 2 of 2 succeeded")
    expect(page.get_by_test_id("instance-row")).to_have_count(48)
    assert http.get(f"{API}/instances/{ids[0]}").status_code == 404


# ---- entities ---------------------------------------------------------------------------------------


def test_entities_list_signal_and_delete(
    host: RunningHost, http: httpx.Client, hub_id: str, page: Page
) -> None:
    key = f"e{uuid.uuid4().hex[:8]}"
    response = http.post(f"{API}/entities/counter/{key}", params={"op": "add"}, json=5)
    assert response.status_code == 202, response.text
    page.goto(f"{host.base_url}/dashboard/#/{hub_id}/entities?prefix=counter@{key}")
    row = page.get_by_test_id("entity-row")
    apply = page.get_by_test_id("apply-entity-filter")
    until(
        page,
        apply.click,
        lambda: row.count() == 1 and row.get_by_test_id("entity-state").inner_text() == "5",
        "state 5",
    )
    expect(row).to_have_attribute("data-entity-key", key)
    expect(row.get_by_test_id("entity-queued")).to_have_text("0")
    expect(row.get_by_test_id("entity-locked-by")).to_have_text("—")

    row.get_by_test_id("entity-signal").click()
    confirm(page, operation="add", input="2")
    until(page, apply.click, lambda: row.get_by_test_id("entity-state").inner_text() == "7", "state 7")

    row.get_by_test_id("entity-delete").click()
    confirm(page)
    expect(row).to_have_count(0)
    assert http.get(f"{API}/entities/counter/{key}").status_code == 404


# ---- hubs and read-only mode ------------------------------------------------------------------------


def in_own_loop(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``work()`` to completion in a new event loop on another thread: sync Playwright keeps its
    own loop running on this one, where asyncio.run refuses to start."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, work()).result()


@pytest.fixture
def other_hub(azurite_connection_string: str) -> Iterator[str]:
    """A second task hub holding one Pending instance ("other-1"), no worker; deleted afterwards."""
    name = "Other" + uuid.uuid4().hex[:8]
    account = StorageAccount.from_connection_string(azurite_connection_string)

    async def create() -> None:
        async with TaskHub(account, name, partition_count=1) as created:
            await created.create()
            await TaskHubClient(created).start_new("hello_sequence", "other-1")

    async def delete() -> None:
        async with TaskHub(account, name, partition_count=1) as created:
            await created.delete()

    in_own_loop(create)
    yield name
    in_own_loop(delete)


@pytest.fixture
def read_only_dashboard(
    tmp_path: Path, azurite_connection_string: str, hub_name: str, other_hub: str, host: RunningHost
) -> Iterator[str]:
    """``python -m durable_ext dashboard`` for the host's hub and ``other_hub``, read-only, no key."""
    port = free_port()
    env = {**host_env(azurite_connection_string), "DURABLE_EXT_DASHBOARD_READONLY": "1"}
    command = [sys.executable, "-m", "durable_ext", "dashboard", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--hub", hub_name, "--hub", other_hub],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        read_until(process, "Dashboard ready", TIMEOUT_S)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=TIMEOUT_S)


def test_hub_switch_and_read_only_mode(
    read_only_dashboard: str, other_hub: str, http: httpx.Client, browser: Browser
) -> None:
    instance_id = f"ro-{uuid.uuid4().hex[:8]}"
    start(http, "approval_workflow", instance_id, {"timeout_seconds": 3600})
    wait_for_status(http, instance_id, "Running")
    key = f"ro{uuid.uuid4().hex[:8]}"
    assert http.post(f"{API}/entities/counter/{key}", params={"op": "add"}, json=1).status_code == 202

    with browser_page(browser) as tab:
        tab.set_default_timeout(TIMEOUT_S * 1000)
        tab.goto(f"{read_only_dashboard}/dashboard/")
        picker = tab.get_by_test_id("hub-picker")
        expect(picker.locator("option")).to_have_count(2)
        expect(tab.get_by_test_id("read-only")).to_be_visible()
        labels = picker.locator("option").all_inner_texts()
        other = next(index for index, label in enumerate(labels) if label.startswith(other_hub))
        mine = 1 - other

        picker.select_option(index=other)
        expect(tab.get_by_test_id("instance-row")).to_have_count(1)
        expect(tab.get_by_test_id("instance-row")).to_have_attribute("data-instance-id", "other-1")
        picker.select_option(index=mine)
        apply_filters(tab, **{"instance-search": instance_id})
        expect(tab.get_by_test_id("instance-row")).to_have_count(1)
        expect(tab.get_by_test_id("instance-row")).to_have_attribute("data-instance-id", instance_id)
        # Read-only: no selection, no bulk actions, no action buttons, no entity actions.
        expect(tab.get_by_test_id("bulk-bar")).to_have_count(0)
        expect(tab.get_by_test_id("select-instance")).to_have_count(0)
        tab.get_by_test_id("instance-link").click()
        expect(tab.get_by_test_id("summary")).to_have_attribute("data-status", "Running")
        expect(tab.get_by_test_id("history-row").first).to_be_visible()
        expect(tab.locator('[data-testid^="action-"]')).to_have_count(0)
        tab.get_by_test_id("nav-entities").click()
        tab.get_by_test_id("entity-search").fill(f"counter@{key}")
        row = tab.get_by_test_id("entity-row")
        until(tab, tab.get_by_test_id("apply-entity-filter").click, lambda: row.count() == 1, "entity listed")
        expect(row.get_by_test_id("entity-signal")).to_have_count(0)
        expect(row.get_by_test_id("entity-delete")).to_have_count(0)
        # The picker keeps the page: the other hub's entities (none).
        picker.select_option(index=other)
        expect(tab.get_by_test_id("entity-search")).to_have_value("")
        expect(row).to_have_count(0)
