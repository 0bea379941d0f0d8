"""``check-deploy``: would this app, deployed to Azure Functions as it is, run there on the same task hub?

It indexes the app as the Python worker does (:func:`durable_ext.app_loader.load_app`) and lists the
functions and bindings the Functions host will see, then checks what decides whether instances started
under durable_ext continue in Azure (and back):

- host.json loads the Durable Functions extension: an ``extensionBundle`` whose range reaches bundle
  4.x, or an ``extensions.csproj`` referencing Microsoft.Azure.WebJobs.Extensions.DurableTask 3.x.
  Older ones carry Durable Functions 2.x, whose workers lease partitions through blobs, not through
  the Partitions table that durable_ext (and Durable Functions 3.x) use: both would run the same
  partition at once.
- the task hub is the same: ``hubName`` set in host.json (in Azure an unset one is the app's name),
  and neither it nor ``partitionCount`` changed by ``AzureFunctionsJobHost__…`` overrides in
  local.settings.json or this environment, which are not deployed; the storage provider is Azure
  Storage (durable_ext refuses others on load).
- ``requirements.txt`` lists azure-functions-durable, which the remote build installs.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from durable_ext.app_loader import FunctionKind, FunctionRegistry, RegisteredFunction, load_app
from durable_ext.config import HOST_JSON, OVERRIDE_PREFIX, HostConfig, get_ci, load_config, read_host_json
from durable_ext.errors import AppLoadError, ConfigError

logger = logging.getLogger(__name__)

BUNDLE_ID = "Microsoft.Azure.Functions.ExtensionBundle"
"""The extension bundle (and, with ``.Preview``, its preview channel) that carries Durable Functions."""
MIN_BUNDLE_MAJOR = 4
"""Bundles 4.x carry Durable Functions 3.x (table partition management, as durable_ext)."""
DURABLE_PACKAGE = "Microsoft.Azure.WebJobs.Extensions.DurableTask"
MIN_DURABLE_MAJOR = 3
REQUIRED_PACKAGE = "azure-functions-durable"
EXTENSIONS_CSPROJ = "extensions.csproj"
_VERSION_RANGE_RE = re.compile(r"([\[(])\s*([^,\s]*)\s*(,\s*([^\])\s]*))?\s*([\])])")
_OVERRIDE_PREFIX = OVERRIDE_PREFIX.lower()
_REQUIREMENT_NAME_RE = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Finding:
    """One check's verdict."""

    ok: bool
    text: str


@dataclass
class DeployReport:
    """What the Functions host will see of an app, and whether it can take over its task hub."""

    app_dir: Path
    registry: FunctionRegistry | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def deployable(self) -> bool:
        """True when every check passed."""
        return all(finding.ok for finding in self.findings)

    def add(self, ok: bool, text: str) -> None:
        """Record a check's verdict."""
        self.findings.append(Finding(ok, text))

    def lines(self) -> list[str]:
        """The report as console lines."""
        lines = [f"App: {self.app_dir}"]
        if self.registry is not None:
            lines.append(
                f"Functions the Functions host will index ({self.registry.programming_model} programming "
                f"model, {len(self.registry.functions)}):"
            )
            lines += [f"  {_describe(function)}" for function in self.registry.functions]
        lines.append("Checks:")
        lines += [f"  {'ok  ' if f.ok else 'FAIL'}  {f.text}" for f in self.findings]
        if self.deployable:
            lines.append(
                "Deployable: deploy this directory to Azure Functions; instances started here continue "
                "there on the same task hub, and back."
            )
        else:
            failed = sum(not f.ok for f in self.findings)
            lines.append(f"Not deployable as it is: {failed} check(s) failed.")
        return lines


def check_deploy(app_dir: Path, environ: Mapping[str, str] | None = None) -> DeployReport:
    """Index the app in ``app_dir`` and run every check (``environ``: this machine's environment)."""
    report = DeployReport(app_dir.expanduser().resolve())
    try:
        local = load_config(report.app_dir, environ)
        # Azure's view: host.json, with app settings (assumed the same there) but without the host.json
        # overrides among them, which local.settings.json or this machine's environment may hold.
        settings = {k: v for k, v in local.settings.items() if not k.lower().startswith(_OVERRIDE_PREFIX)}
        azure = load_config(report.app_dir, environ=settings, local_settings=False)
    except ConfigError as exc:
        report.add(False, f"configuration: {exc}")
        return report
    try:
        report.registry = load_app(report.app_dir, settings=local.settings)
    except AppLoadError as exc:
        report.add(False, f"indexing the app: {exc}")
    host = read_host_json(report.app_dir) or {}
    _check_extension(report, host)
    _check_hub(report, host, local, azure)
    _check_requirements(report)
    return report


def _describe(function: RegisteredFunction) -> str:
    """One function as a line: name, trigger, route, bindings."""
    bindings = ", ".join(f"{b.name} ({b.type}, {b.direction})" for b in function.bindings)
    line = f"{function.function_name}: {function.trigger_type}"
    if function.http is not None:
        line += f" [{','.join(function.http.methods)}] {function.http.route}"
    line += f"; bindings: {bindings}"
    if function.kind is FunctionKind.OTHER:
        line += " (runs in Azure only: durable_ext does not run this trigger)"
    if function.disabled:
        line += " (disabled by an app setting here)"
    return line


# --- the Durable Functions extension -------------------------------------------------------------------


def _check_extension(report: DeployReport, host: Mapping[str, object]) -> None:
    bundle = get_ci(host, "extensionBundle")
    if bundle is not None:
        report.add(*_bundle_verdict(bundle))
        return
    csproj = report.app_dir / EXTENSIONS_CSPROJ
    if csproj.is_file():
        report.add(*_csproj_verdict(csproj))
        return
    report.add(
        False,
        f"{HOST_JSON} has no extensionBundle and there is no {EXTENSIONS_CSPROJ}: Azure Functions would not "
        f'load Durable Functions; add "extensionBundle": {{"id": "{BUNDLE_ID}", "version": "[4.*, 5.0.0)"}}',
    )


def _bundle_verdict(bundle: object) -> tuple[bool, str]:
    if not isinstance(bundle, Mapping):
        return False, f"extensionBundle in {HOST_JSON} must be an object with id and version"
    bundle_id, version = str(bundle.get("id", "")), str(bundle.get("version", ""))
    if bundle_id.lower() not in (BUNDLE_ID.lower(), f"{BUNDLE_ID}.Preview".lower()):
        return False, f"extensionBundle id {bundle_id!r} is not {BUNDLE_ID}, which carries Durable Functions"
    try:
        highest = highest_major(version)
    except ValueError:
        return False, f"extensionBundle version {version!r} is not a version range such as [4.*, 5.0.0)"
    if highest is not None and highest < MIN_BUNDLE_MAJOR:
        return False, (
            f"extensionBundle {version} resolves to bundle {highest}.x, whose Durable Functions 2.x leases "
            "partitions through blobs, not the Partitions table durable_ext uses: use [4.*, 5.0.0)"
        )
    return (
        True,
        f"extension bundle {bundle_id} {version} includes Durable Functions (bundle 4.x: extension 3.x)",
    )


def highest_major(version_range: str) -> int | None:
    """The highest major version a NuGet version range allows (None: unbounded); ValueError when the
    text is not a range. ``[4.*, 5.0.0)`` → 4, ``[3.3.0, 4.0.0)`` → 3, ``4.0.0`` (a minimum) → None."""
    text = version_range.strip()
    match = _VERSION_RANGE_RE.fullmatch(text)
    if match is None:
        _major(text)  # a bare version is a minimum
        return None
    opening, low, comma, high, closing = match.groups()
    if comma is None:  # "[4.0.0]": exactly that version
        if (opening, closing) != ("[", "]"):
            raise ValueError(f"not a version range: {version_range!r}")
        return _major(low)
    if not high:
        return None
    major = _major(high)
    # An exclusive bound at x.0.0 allows nothing of major x.
    if closing == ")" and all(part in ("0", "*") for part in high.split(".")[1:]):
        return major - 1
    return major


def _major(version: str) -> int:
    head = version.split(".", maxsplit=1)[0]
    if not head.isdigit():
        raise ValueError(f"not a version: {version!r}")
    return int(head)


def _csproj_verdict(csproj: Path) -> tuple[bool, str]:
    try:
        root = ET.parse(csproj).getroot()
    except (OSError, ET.ParseError) as exc:
        return False, f"{csproj}: cannot read it as XML: {exc}"
    for reference in root.iter():
        if reference.tag.split("}")[-1] != "PackageReference":
            continue
        if reference.get("Include", "").lower() != DURABLE_PACKAGE.lower():
            continue
        version = reference.get("Version", "")
        try:
            major = _major(version)
        except ValueError:
            major = 0
        if major < MIN_DURABLE_MAJOR:
            return False, (
                f"{EXTENSIONS_CSPROJ} references {DURABLE_PACKAGE} {version or '(no version)'}: use 3.x, "
                "whose workers share partitions through the Partitions table as durable_ext does"
            )
        return True, f"{EXTENSIONS_CSPROJ} references {DURABLE_PACKAGE} {version}"
    return (
        False,
        f"{EXTENSIONS_CSPROJ} does not reference {DURABLE_PACKAGE}: Azure Functions would not load it",
    )


# --- the task hub ---------------------------------------------------------------------------------------


def _check_hub(
    report: DeployReport, host: Mapping[str, object], local: HostConfig, azure: HostConfig
) -> None:
    here, there = local.durable_task, azure.durable_task
    written = _host_hub_name(host)
    if not written:
        report.add(
            False,
            f"hubName is not set in {HOST_JSON}: in Azure the task hub is named after the function app "
            f'(WEBSITE_SITE_NAME), here it is {here.hub_name!r}; set "hubName": "{here.hub_name}"',
        )
    elif "%" in written:
        report.add(
            True,
            f"hubName {written!r} is resolved from app settings: {here.hub_name!r} here; give those settings "
            "the same values in Azure",
        )
    elif here.hub_name != there.hub_name:
        report.add(False, _overridden("hubName", here.hub_name, there.hub_name))
    else:
        report.add(True, f"task hub {here.hub_name!r}, as in {HOST_JSON}")
    partitions_here = here.storage_provider.partition_count
    partitions_there = there.storage_provider.partition_count
    if partitions_here != partitions_there:
        report.add(False, _overridden("partitionCount", str(partitions_here), str(partitions_there)))
    else:
        report.add(True, f"{partitions_here} partitions, as in {HOST_JSON}")
    connection = here.storage_provider.connection_name
    report.add(
        True,
        f"Azure Storage provider on the connection {connection!r}: give the app setting (a connection "
        f"string, or {connection}__accountName for an identity) the storage account used here",
    )


def _host_hub_name(host: Mapping[str, object]) -> str:
    """``extensions.durableTask.hubName`` as written in host.json (keys in any case), or ''."""
    node: object = host
    for key in ("extensions", "durableTask", "hubName"):
        if not isinstance(node, Mapping):
            return ""
        node = get_ci(node, key)
    return node if isinstance(node, str) else ""


def _overridden(key: str, here: str, there: str) -> str:
    return (
        f"{key} is {here} here but {there} in {HOST_JSON}: local.settings.json or the environment "
        "override it, and neither is deployed; put the value in host.json (or the same app setting in Azure)"
    )


# --- the Python packages ---------------------------------------------------------------------------------


def _check_requirements(report: DeployReport) -> None:
    path = report.app_dir / "requirements.txt"
    if not path.is_file():
        report.add(False, f"no requirements.txt: the remote build would not install {REQUIRED_PACKAGE}")
        return
    names = set()
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        match = _REQUIREMENT_NAME_RE.match(line)
        if match and not line.lstrip().startswith(("#", "-")):
            names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    if REQUIRED_PACKAGE in names:
        report.add(True, f"requirements.txt lists {REQUIRED_PACKAGE}")
    else:
        report.add(
            False, f"requirements.txt does not list {REQUIRED_PACKAGE}: the remote build would not install it"
        )
