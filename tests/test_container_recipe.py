"""The container recipe in deploy/: no Docker engine runs here, so the Dockerfile's steps run in a clean
venv instead — its COPY steps into a fresh directory, its ``pip install`` line, then its CMD against
Azurite until /readyz answers 200 — and the compose and Kubernetes examples are checked for what the
drain and the probes need."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from durable_ext.host.azurite import Azurite
from tests.host_support import REPO, free_port

DEPLOY = REPO / "deploy"
TIMEOUT = 90.0


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile, continuation lines joined."""

    base: str = ""
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    steps: list[tuple[str, str]] = field(default_factory=list)
    """COPY and RUN instructions in order: (instruction, arguments)."""
    cmd: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        parsed = cls()
        logical = ""
        for raw in path.read_text().splitlines():
            if not logical and (not raw.strip() or raw.lstrip().startswith("#")):
                continue
            logical += raw.rstrip().removesuffix("\\") + " "
            if not raw.rstrip().endswith("\\"):
                parsed._take(*logical.strip().split(None, 1))
                logical = ""
        return parsed

    def _take(self, instruction: str, arguments: str) -> None:
        instruction = instruction.upper()
        if instruction == "FROM":
            self.base = arguments
        elif instruction == "WORKDIR":
            self.workdir = arguments
        elif instruction == "ENV":
            self.env.update(pair.split("=", 1) for pair in shlex.split(arguments))
        elif instruction in ("COPY", "RUN"):
            self.steps.append((instruction, arguments))
        elif instruction == "CMD":
            self.cmd = json.loads(arguments)


def ignored(relative: Path, patterns: list[str]) -> bool:
    """Whether a .dockerignore excludes ``relative`` (the patterns this repository's file uses)."""
    text = relative.as_posix()
    return any(
        fnmatch.fnmatch(text, pattern) or fnmatch.fnmatch(relative.name, pattern.removeprefix("**/"))
        for pattern in patterns
    )


def copy_context(source: str, destination: Path, patterns: list[str]) -> None:
    """``COPY source dest`` from the repository (the build context) into the image directory."""
    if source != ".":
        shutil.copy(REPO / source, destination)
        return
    for path in sorted(REPO.iterdir()):
        if ignored(path.relative_to(REPO), patterns):
            continue
        if path.is_dir():
            shutil.copytree(
                path,
                destination / path.name,
                ignore=lambda folder, names: [
                    name for name in names if ignored((Path(folder) / name).relative_to(REPO), patterns)
                ],
            )
        else:
            shutil.copy(path, destination / path.name)


def clean_env(venv: Path, extra: dict[str, str]) -> dict[str, str]:
    """An environment with the venv first on PATH and nothing of this test process's Python set-up."""
    keep = {name: os.environ[name] for name in ("HOME", "LANG", "TMPDIR") if name in os.environ}
    keep.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    return {**keep, "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", **extra}


def test_dockerfile_installs_and_starts_in_a_clean_venv(tmp_path: Path, azurite: Azurite) -> None:
    dockerfile = Dockerfile.parse(DEPLOY / "Dockerfile")
    assert dockerfile.base == f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT)
    app = tmp_path / dockerfile.workdir.lstrip("/")
    app.mkdir(parents=True)
    env = clean_env(venv, dockerfile.env)
    installs = 0
    for instruction, arguments in dockerfile.steps:
        if instruction == "COPY":
            source, destination = arguments.split()
            copy_context(source, app / destination, patterns)
        elif "pip install" in arguments:  # the other RUN lines change the system (useradd)
            subprocess.run(arguments, shell=True, cwd=app, env=env, check=True, timeout=240)
            installs += 1
    assert installs == 1
    assert not (app / "local.settings.json").exists() and not (app / "tests").exists()
    assert (app / "function_app.py").is_file() and (app / "durable_ext").is_dir()

    command = list(dockerfile.cmd)
    # The port a `docker run -p` would map: a free one here, as other tests may be listening on 7072.
    port = free_port()
    command[command.index("--admin-port") + 1] = str(port)
    settings = {
        "AzureWebJobsStorage": azurite.connection_string,
        "AzureFunctionsJobHost__extensions__durableTask__hubName": "Container" + uuid.uuid4().hex[:8],
    }
    log = tmp_path / "worker.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=app, env=env | settings, stdout=output, stderr=subprocess.STDOUT, text=True
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            while not _answers(http, "/readyz"):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            assert http.get("/healthz").json() == {"status": "Healthy"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _answers(http: httpx.Client, path: str) -> bool:
    try:
        return http.get(path).status_code == 200
    except httpx.TransportError:
        return False


def _grace_period(args: list[str]) -> int:
    return int(args[args.index("--grace-period") + 1])


def test_compose_runs_three_workers_beside_azurite() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert services["azurite"]["image"] == "mcr.microsoft.com/azure-storage/azurite"
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 3
    assert worker["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert "BlobEndpoint=http://azurite:10000/" in worker["environment"]["AzureWebJobsStorage"]
    cmd = Dockerfile.parse(DEPLOY / "Dockerfile").cmd
    assert int(worker["stop_grace_period"].removesuffix("s")) > _grace_period(cmd)
    host = services["host"]
    assert host["environment"]["DURABLE_EXT_SYSTEM_KEY"] and "start" in host["command"]


def test_kubernetes_deployment_probes_drain_and_identity() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "workers.yaml").read_text()))
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["terminationGracePeriodSeconds"] > _grace_period(container["args"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = container["args"][container["args"].index("--admin-port") + 1]
    assert container["ports"] == [{"name": "probes", "containerPort": int(port)}]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert "AzureWebJobsStorage__accountName" in env and "AzureWebJobsStorage" not in env
