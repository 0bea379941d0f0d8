"""``check-deploy``: the functions the Functions host will index, the Durable Functions extension, and
whether Azure would run the same task hub as durable_ext."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from durable_ext.app_loader import load_app
from durable_ext.cli import main
from durable_ext.deploy_check import DeployReport, check_deploy, highest_major
from tests.host_support import REPO, sample_app_dir

BUNDLE = {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
APPS = REPO / "tests" / "apps"


def failures(report: DeployReport) -> list[str]:
    return [finding.text for finding in report.findings if not finding.ok]


def deployable_app(tmp_path: Path, host_changes: dict[str, Any] | None = None) -> Path:
    """A copy of the sample app with hubName, partitionCount, the bundle and requirements.txt."""
    app = sample_app_dir(tmp_path, "DeployHub")
    host = json.loads((app / "host.json").read_text())
    host["extensionBundle"] = BUNDLE
    host.update(host_changes or {})
    (app / "host.json").write_text(json.dumps(host))
    (app / "requirements.txt").write_text("azure-functions\nAzure_Functions.Durable==1.7.0  # df\n")
    return app


def test_the_repository_sample_app_is_deployable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "durable_ext", "check-deploy", str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for function in load_app(REPO).functions:
        assert f"\n  {function.function_name}: {function.trigger_type}" in result.stdout
    assert (
        "http_start: httpTrigger [POST] orchestrators/{functionName}; bindings: client (durableClient, in), "
        "req (httpTrigger, in), $return (http, out)"
    ) in result.stdout
    assert "task hub 'DurableExtSample', as in host.json" in result.stdout
    assert result.stdout.rstrip().endswith("on the same task hub, and back.")


NO_BUNDLE = "host.json has no extensionBundle and there is no extensions.csproj"
NO_HUB = "hubName is not set in host.json"
NO_REQUIREMENTS = "no requirements.txt"


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("engine_app", [NO_BUNDLE, NO_HUB, NO_REQUIREMENTS]),
        ("entity_app", [NO_BUNDLE, NO_HUB, NO_REQUIREMENTS]),
        ("http_app", [NO_BUNDLE, NO_HUB, NO_REQUIREMENTS]),
        ("http_call_app", [NO_BUNDLE, NO_HUB, NO_REQUIREMENTS]),
        ("replay_app", [NO_BUNDLE, NO_HUB, NO_REQUIREMENTS]),
        ("version_app", [NO_BUNDLE, NO_HUB, NO_REQUIREMENTS]),
        ("v1_app", [NO_BUNDLE, NO_REQUIREMENTS]),
    ],
)
def test_the_test_apps_report_what_they_lack(app: str, expected: list[str]) -> None:
    report = check_deploy(APPS / app, environ={})
    assert report.registry is not None and report.registry.functions
    found = failures(report)
    assert len(found) == len(expected) and all(
        text.startswith(e) for text, e in zip(found, expected, strict=True)
    )
    assert not report.deployable


def test_v1_app_lists_function_json_bindings() -> None:
    lines = check_deploy(APPS / "v1_app", environ={}).lines()
    assert (
        "  SendNotice: activityTrigger; bindings: phoneNumber (activityTrigger, in), message (twilioSms, out)"
        in lines
    )
    assert any(
        line.startswith("  QueueWorker: queueTrigger;") and "runs in Azure only" in line for line in lines
    )


@pytest.mark.parametrize(
    ("bundle", "detail"),
    [
        ({**BUNDLE, "version": "[3.3.0, 4.0.0)"}, "resolves to bundle 3.x, whose Durable Functions 2.x"),
        ({**BUNDLE, "version": "[2.*, 3.0.0)"}, "resolves to bundle 2.x"),
        ({**BUNDLE, "version": "four"}, "is not a version range"),
        (
            {"id": "Microsoft.Azure.Functions.ExtensionBundle.Workflows", "version": "[1.*, 2.0.0)"},
            "is not Micro",
        ),
        ("[4.*, 5.0.0)", "must be an object"),
    ],
)
def test_a_bundle_without_durable_functions_3_is_refused(tmp_path: Path, bundle: object, detail: str) -> None:
    report = check_deploy(deployable_app(tmp_path, {"extensionBundle": bundle}), environ={})
    (failure,) = failures(report)
    assert detail in failure


RANGES = [("[4.*, 5.0.0)", 4), ("[4.0.0, 5.0.0)", 4), ("[3.3.0, 4.0.0)", 3), ("[4.0.0, 4.5.0)", 4)]
RANGES += [("4.0.0", None), ("[4.0.0, )", None), ("[4.2.0]", 4), ("(, 5.0.0]", 5), ("[1.*, 2.1.0)", 2)]


@pytest.mark.parametrize(("version_range", "highest"), RANGES)
def test_highest_major(version_range: str, highest: int | None) -> None:
    assert highest_major(version_range) == highest


@pytest.mark.parametrize(
    ("version", "ok"),
    [("3.0.0", True), ("3.*", True), ("2.13.7", False), ("", False), ("$(DfVersion)", False)],
)
def test_extensions_csproj(tmp_path: Path, version: str, ok: bool) -> None:
    app = deployable_app(tmp_path)
    host = json.loads((app / "host.json").read_text())
    del host["extensionBundle"]
    (app / "host.json").write_text(json.dumps(host))
    (app / "extensions.csproj").write_text(
        '<Project Sdk="Microsoft.NET.Sdk"><ItemGroup>'
        f'<PackageReference Include="Microsoft.Azure.WebJobs.Extensions.DurableTask" Version="{version}" />'
        "</ItemGroup></Project>"
    )
    report = check_deploy(app, environ={})
    assert report.deployable is ok, failures(report)


def test_settings_that_stay_behind_are_findings(tmp_path: Path) -> None:
    app = deployable_app(tmp_path)
    assert check_deploy(app, environ={}).deployable
    prefix = "AzureFunctionsJobHost__extensions__durableTask__"
    (app / "local.settings.json").write_text(json.dumps({"Values": {f"{prefix}hubName": "LocalOnly"}}))
    environ = {f"{prefix}storageProvider__partitionCount": "3"}
    hub, partitions = failures(check_deploy(app, environ=environ))
    assert hub.startswith("hubName is LocalOnly here but DeployHub in host.json: local.settings.json or the")
    assert partitions.startswith("partitionCount is 3 here but 2 in host.json")


def test_hub_name_from_an_app_setting_is_a_note(tmp_path: Path) -> None:
    app = deployable_app(tmp_path)
    host = json.loads((app / "host.json").read_text())
    host["extensions"]["durableTask"]["hubName"] = "%HUB_NAME%"
    (app / "host.json").write_text(json.dumps(host))
    report = check_deploy(app, environ={"HUB_NAME": "FromSetting"})
    assert report.deployable
    assert (
        "  ok    hubName '%HUB_NAME%' is resolved from app settings: 'FromSetting' here; give"
        in "\n".join(report.lines())
    )


def test_requirements_must_name_the_durable_package(tmp_path: Path) -> None:
    app = deployable_app(tmp_path)
    (app / "requirements.txt").write_text("# azure-functions-durable\n-r base.txt\nazure-functions\n")
    (failure,) = failures(check_deploy(app, environ={}))
    assert failure.startswith("requirements.txt does not list azure-functions-durable")


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = deployable_app(tmp_path)
    assert main(["check-deploy", str(app)]) == 0
    (app / "function_app.py").write_text("raise RuntimeError('broken at import')\n")
    assert main(["check-deploy", str(app)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  indexing the app:" in out and "Not deployable as it is: 1 check(s) failed." in out
    assert main(["check-deploy", str(tmp_path / "missing")]) == 1
    assert "does not exist or is not a directory" in capsys.readouterr().err
