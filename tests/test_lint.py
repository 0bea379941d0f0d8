"""Tests of ``python -m durable_ext lint`` (durable_ext.lint): each rule with a bad and a good example,
orchestrator discovery in v2 and v1 apps, aliases, helpers, noqa, output and exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from durable_ext.cli import COMMANDS, main
from durable_ext.lint import RULES, Finding, LintPathError, LintResult, lint_paths
from durable_ext.lint.rules import NAME_RULES

REPO_DIR = Path(__file__).resolve().parents[1]

RUFF_LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<code>DX\d{3}) (?P<message>.+)$")

V2_APP = """\
import asyncio
import datetime
import os
import random
import subprocess
import threading
import time
import uuid

import azure.durable_functions as df
import requests

app = df.DFApp()
COUNT = 0
CACHE = []


@app.orchestration_trigger(context_name="context")
{kind} orchestrator(context: df.DurableOrchestrationContext):
{body}


@app.activity_trigger(input_name="name")
def activity(name: str) -> str:
    time.sleep(1)
    return open(name).read() + os.environ["HOME"] + str(random.random())
"""


def write_v2(directory: Path, body: str, *, kind: str = "def") -> Path:
    """A v2 app in ``directory`` whose one orchestrator has ``body`` (dedented) as its body."""
    directory.mkdir(parents=True, exist_ok=True)
    indented = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    (directory / "function_app.py").write_text(V2_APP.format(kind=kind, body=indented))
    return directory


def write_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def write_v1_function(app: Path, name: str, trigger: str, script: str, **settings: str) -> Path:
    """A v1 function folder: function.json with a ``trigger`` binding (plus ``settings``) and a script."""
    folder = app / name
    binding = {"name": "context", "type": trigger, "direction": "in"}
    write_file(folder / "function.json", json.dumps({"bindings": [binding], **settings}))
    write_file(folder / settings.get("scriptFile", "__init__.py"), script)
    return folder


def codes(result: LintResult) -> list[str]:
    return [f.code for f in result.findings]


def lint(*paths: Path) -> LintResult:
    return lint_paths(list(paths), relative_to=paths[0] if paths[0].is_dir() else paths[0].parent)


# --- every rule: a bad and a good example --------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    code: str
    bad: str
    good: str
    kind: str = "def"
    expected: tuple[str, ...] = ()
    """The codes the bad example gives (default: just ``code``)."""


EXAMPLES = [
    Example(
        "DX100",
        "deadline = datetime.datetime.now() + datetime.timedelta(hours=1)\n"
        "yield context.create_timer(deadline)",
        "deadline = context.current_utc_datetime + datetime.timedelta(hours=1)\n"
        "yield context.create_timer(deadline)",
    ),
    Example(
        "DX100",
        "today = datetime.date.today()\nreturn str(today)",
        "return str(context.current_utc_datetime.date())",
    ),
    Example(
        "DX101",
        "started = time.time()\nyield context.call_activity('work', started)",
        "started = context.current_utc_datetime.timestamp()\nyield context.call_activity('work', started)",
    ),
    Example(
        "DX102",
        "time.sleep(5)\nyield context.call_activity('work')",
        "yield context.create_timer(context.current_utc_datetime + datetime.timedelta(seconds=5))",
    ),
    Example(
        "DX103",
        "key = str(uuid.uuid4())\nyield context.call_activity('work', key)",
        "key = str(context.new_uuid())\nyield context.call_activity('work', key)",
    ),
    Example(
        "DX104",
        "roll = random.randint(1, 6)\nyield context.call_activity('work', roll)",
        "roll = yield context.call_activity('roll_die')\nyield context.call_activity('work', roll)",
    ),
    Example(
        "DX105",
        "url = os.environ['URL']\nyield context.call_activity('work', url)",
        "url = context.get_input()['url']\nyield context.call_activity('work', url)",
    ),
    Example(
        "DX105",
        "url = os.getenv('URL')\nyield context.call_activity('work', url)",
        "url = yield context.call_activity('read_setting', 'URL')",
    ),
    Example(
        "DX106",
        "with open('data.txt') as file:\n    data = file.read()\nyield context.call_activity('work', data)",
        "data = yield context.call_activity('read_data')\nyield context.call_activity('work', data)",
    ),
    Example(
        "DX107",
        "answer = requests.get('https://example.com')\nyield context.call_activity('work', answer.text)",
        "answer = yield context.call_http('GET', 'https://example.com')\n"
        "yield context.call_activity('work', answer)",
    ),
    Example(
        "DX108",
        "threading.Thread(target=print).start()\nyield context.call_activity('work')",
        "yield context.task_all([context.call_activity('work', i) for i in range(3)])",
    ),
    Example(
        "DX109",
        "loop = asyncio.new_event_loop()\nyield context.call_activity('work', loop)",
        "timer = context.create_timer(context.current_utc_datetime)\n"
        "yield context.task_any([context.call_activity('work'), timer])",
    ),
    Example("DX110", "return 'done'", "return 'done'", kind="async def"),
    Example(
        "DX111",
        "await asyncio.sleep(0)\nreturn 'done'",
        "yield context.call_activity('work')\nreturn 'done'",
        kind="async def",
        expected=("DX110", "DX111", "DX109"),
    ),
    Example(
        "DX112",
        "subprocess.run(['ls'])\nyield context.call_activity('work')",
        "yield context.call_activity('list_files')",
    ),
    Example(
        "DX113",
        "for city in {'Tokyo', 'Seattle'}:\n    yield context.call_activity('say_hello', city)",
        "for city in sorted({'Tokyo', 'Seattle'}):\n    yield context.call_activity('say_hello', city)",
    ),
    Example(
        "DX113",
        "tasks = [context.call_activity('say_hello', c) for c in set(context.get_input())]\n"
        "yield context.task_all(tasks)",
        "tasks = [context.call_activity('say_hello', c) for c in context.get_input()]\n"
        "yield context.task_all(tasks)",
    ),
    Example(
        "DX114",
        "global COUNT\nCOUNT += 1\nyield context.call_activity('work', COUNT)",
        "count = 0\ncount += 1\nyield context.call_activity('work', count)",
    ),
    Example(
        "DX114",
        "CACHE.append(context.instance_id)\nyield context.call_activity('work')",
        "seen = []\nseen.append(context.instance_id)\nyield context.call_activity('work')",
    ),
]


def test_every_rule_has_examples() -> None:
    assert {e.code for e in EXAMPLES} == {r.code for r in RULES}


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.code}-{i}" for i, e in enumerate(EXAMPLES)])
def test_bad_example_is_flagged(tmp_path: Path, example: Example) -> None:
    result = lint(write_v2(tmp_path, example.bad, kind=example.kind))
    assert sorted(codes(result)) == sorted(example.expected or (example.code,)), result.findings
    assert result.orchestrators == 1


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.code}-{i}" for i, e in enumerate(EXAMPLES)])
def test_good_example_is_clean(tmp_path: Path, example: Example) -> None:
    result = lint(write_v2(tmp_path, example.good))
    assert result.findings == ()
    assert result.orchestrators == 1


def test_messages_say_why_and_what_to_use_instead(tmp_path: Path) -> None:
    body = """\
        now = datetime.datetime.now()
        key = uuid.uuid4()
        time.sleep(1)
        yield context.call_activity('work', [now, key])
    """
    messages = {f.code: f.message for f in lint(write_v2(tmp_path, body)).findings}
    assert "`datetime.datetime.now` reads the clock" in messages["DX100"]
    assert "use `context.current_utc_datetime`" in messages["DX100"]
    assert "use `context.new_uuid()`" in messages["DX103"]
    assert "context.create_timer" in messages["DX102"]


def test_module_state_item_and_attribute_writes(tmp_path: Path) -> None:
    body = """\
        CACHE[0] = 1
        del CACHE[0]
        COUNT.value = 2
        yield context.call_activity('work')
    """
    assert codes(lint(write_v2(tmp_path, body))) == ["DX114", "DX114", "DX114"]


def test_async_with_and_async_for(tmp_path: Path) -> None:
    body = """\
        async with context.lock():
            async for item in context.items():
                pass
        return 'done'
    """
    assert codes(lint(write_v2(tmp_path, body, kind="async def"))) == ["DX110", "DX111", "DX111"]


def test_local_names_shadow_modules_and_builtins(tmp_path: Path) -> None:
    body = """\
        random = context.get_input()
        open = [1, 2]
        CACHE = []
        CACHE.append(random.choice(open))
        yield context.call_activity('work', CACHE)
    """
    assert lint(write_v2(tmp_path, body)).findings == ()


def test_activities_and_plain_functions_are_not_checked(tmp_path: Path) -> None:
    # V2_APP's activity sleeps, reads a file, the environment and random numbers.
    assert lint(write_v2(tmp_path, "yield context.call_activity('activity', 'x')")).findings == ()


# --- imports and aliases --------------------------------------------------------------------------------


def test_aliases_and_from_imports_are_resolved(tmp_path: Path) -> None:
    write_file(
        tmp_path / "function_app.py",
        """\
        import time as t
        import azure.durable_functions as df
        from datetime import datetime as dt
        from os import environ, getenv as env
        from random import choice
        from concurrent.futures import ThreadPoolExecutor
        from urllib import request

        app = df.DFApp()

        @app.orchestration_trigger(context_name="context")
        def orchestrator(context):
            t.sleep(1)
            now = dt.utcnow()
            home = environ.get("HOME") or env("HOME")
            pick = choice([1, 2])
            pool = ThreadPoolExecutor()
            request.urlopen("https://example.com")
            yield context.call_activity("work", [now, home, pick, pool])
        """,
    )
    found = [(f.line, f.code, f.message.split(" ")[0]) for f in lint(tmp_path).findings]
    assert found == [
        (13, "DX102", "`time.sleep`"),
        (14, "DX100", "`datetime.datetime.utcnow`"),
        (15, "DX105", "`os.environ.get`"),
        (15, "DX105", "`os.getenv`"),
        (16, "DX104", "`random.choice`"),
        (17, "DX108", "`concurrent.futures.ThreadPoolExecutor`"),
        (18, "DX107", "`urllib.request.urlopen`"),
    ]


def test_import_inside_the_orchestrator_is_resolved(tmp_path: Path) -> None:
    body = """\
        import secrets
        token = secrets.token_hex()
        yield context.call_activity('work', token)
    """
    assert codes(lint(write_v2(tmp_path, body))) == ["DX104"]


def test_every_flagged_name_belongs_to_a_rule() -> None:
    assert set(NAME_RULES.values()) <= {r.code for r in RULES}


def test_pathlib_and_os_path_file_access(tmp_path: Path) -> None:
    write_file(
        tmp_path / "function_app.py",
        """\
        import os
        from pathlib import Path
        import azure.durable_functions as df

        app = df.DFApp()

        @app.orchestration_trigger(context_name="context")
        def orchestrator(context):
            config = Path("config.json").read_text()
            Path("out.txt").write_bytes(b"x")
            if os.path.exists("flag"):
                pass
            yield context.call_activity("work", config)
        """,
    )
    assert codes(lint(tmp_path)) == ["DX106", "DX106", "DX106"]


# --- discovery --------------------------------------------------------------------------------------------


def test_blueprint_orchestrators_in_a_package_are_found(tmp_path: Path) -> None:
    write_file(tmp_path / "function_app.py", "import azure.durable_functions as df\napp = df.DFApp()\n")
    write_file(
        tmp_path / "orchestrators" / "blueprint.py",
        "import azure.durable_functions as df\nbp = df.Blueprint()\n",
    )
    write_file(
        tmp_path / "orchestrators" / "clock.py",
        """\
        import datetime

        from .blueprint import bp

        @bp.orchestration_trigger(context_name="context", orchestration="Clock")
        def clock(context):
            return datetime.datetime.now().isoformat()
        """,
    )
    result = lint(tmp_path)
    assert result.orchestrators == 1
    assert [(f.path, f.line, f.code) for f in result.findings] == [("orchestrators/clock.py", 7, "DX100")]


V1_ORCHESTRATOR = """\
import time

import azure.durable_functions as df


def orchestrator_function(context: df.DurableOrchestrationContext):
    time.sleep(1)
    result = yield context.call_activity("E1_SayHello", "Tokyo")
    return result


main = df.Orchestrator.create(orchestrator_function)
"""


def test_v1_orchestrator_is_found_through_function_json(tmp_path: Path) -> None:
    write_v1_function(tmp_path, "E1_HelloSequence", "orchestrationTrigger", V1_ORCHESTRATOR)
    write_v1_function(
        tmp_path, "E1_SayHello", "activityTrigger", "import time\ndef main(name):\n    time.sleep(1)\n"
    )
    result = lint(tmp_path)
    assert result.orchestrators == 1
    assert [(f.path, f.line, f.code) for f in result.findings] == [
        ("E1_HelloSequence/__init__.py", 7, "DX102")
    ]


def test_v1_script_file_and_entry_point(tmp_path: Path) -> None:
    script = V1_ORCHESTRATOR.replace("main =", "run =")
    write_v1_function(
        tmp_path, "Orch", "OrchestrationTrigger", script, scriptFile="orch.py", entryPoint="run"
    )
    result = lint(tmp_path)
    assert [(f.path, f.code) for f in result.findings] == [("Orch/orch.py", "DX102")]


def test_v1_good_orchestrator_is_clean(tmp_path: Path) -> None:
    write_v1_function(
        tmp_path, "Orch", "orchestrationTrigger", V1_ORCHESTRATOR.replace("time.sleep(1)", "pass")
    )
    result = lint(tmp_path)
    assert (result.findings, result.orchestrators) == ((), 1)


def test_v1_file_given_directly_is_checked_through_its_function_json(tmp_path: Path) -> None:
    folder = write_v1_function(tmp_path, "Orch", "orchestrationTrigger", V1_ORCHESTRATOR)
    result = lint_paths([folder / "__init__.py"], relative_to=tmp_path)
    assert [(f.path, f.code) for f in result.findings] == [("Orch/__init__.py", "DX102")]


def test_v1_entry_point_that_cannot_be_found_is_a_warning(tmp_path: Path) -> None:
    write_v1_function(tmp_path, "Orch", "orchestrationTrigger", "from .impl import main\n")
    result = lint(tmp_path)
    assert (result.findings, result.orchestrators) == ((), 0)
    assert result.warnings == (
        "Orch/__init__.py: no `main = df.Orchestrator.create(<function>)` with a function defined in this "
        "file; not checked",
    )


def test_broken_function_json_is_a_finding(tmp_path: Path) -> None:
    write_file(tmp_path / "Orch" / "function.json", "{not json")
    binding = {"name": "context", "type": "orchestrationTrigger", "direction": "in"}
    write_file(
        tmp_path / "NoScript" / "function.json", json.dumps({"bindings": [binding], "scriptFile": "x.py"})
    )
    found = [(f.path, f.line, f.code) for f in lint(tmp_path).findings]
    assert found == [("NoScript/function.json", 1, "DX000"), ("Orch/function.json", 1, "DX000")]


def test_syntax_error_is_a_finding(tmp_path: Path) -> None:
    write_file(
        tmp_path / "function_app.py", "@app.orchestration_trigger(context_name='context')\ndef broken(:\n"
    )
    (finding,) = lint(tmp_path).findings
    assert (finding.path, finding.line, finding.code) == ("function_app.py", 2, "DX000")
    assert finding.message.startswith("SyntaxError:")


def test_virtual_environments_and_hidden_directories_are_skipped(tmp_path: Path) -> None:
    write_v2(tmp_path / ".venv" / "lib", "time.sleep(1)\nyield 1")
    write_v2(tmp_path / "env", "time.sleep(1)\nyield 1")
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /usr\n")
    write_v2(tmp_path / "node_modules" / "x", "time.sleep(1)\nyield 1")
    assert lint(tmp_path).orchestrators == 0


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LintPathError, match="no such file or directory"):
        lint_paths([tmp_path / "nope"])


# --- helpers ------------------------------------------------------------------------------------------------


def test_helpers_are_followed_one_level(tmp_path: Path) -> None:
    write_file(
        tmp_path / "function_app.py",
        """\
        import random
        import time
        import azure.durable_functions as df

        app = df.DFApp()

        def pick():
            deeper()
            return random.random()

        def deeper():
            time.sleep(1)

        def steps(context):
            yield context.call_activity("work", pick())

        @app.orchestration_trigger(context_name="context")
        def orchestrator(context):
            yield from steps(context)
            return pick()
        """,
    )
    (finding,) = lint(tmp_path).findings
    assert (finding.line, finding.code) == (9, "DX104")
    assert finding.message.endswith("(in `pick`, called from orchestrator `orchestrator`)")


# --- noqa --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("comment", "remaining"),
    [
        ("# durable: noqa", []),
        ("# durable: noqa DX100", ["DX103"]),
        ("# durable: noqa: DX100, DX103", []),
        ("# durable: noqa DX104", ["DX100", "DX103"]),
        ("# noqa", ["DX100", "DX103"]),
    ],
)
def test_noqa(tmp_path: Path, comment: str, remaining: list[str]) -> None:
    body = (
        f"pair = (datetime.datetime.now(), uuid.uuid4())  {comment}\nyield context.call_activity('w', pair)"
    )
    assert codes(lint(write_v2(tmp_path, body))) == remaining


# --- output and exit codes -------------------------------------------------------------------------------


def test_findings_are_sorted_and_print_as_ruff_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_v2(tmp_path / "b", "time.sleep(1)\nyield 1")
    write_v2(tmp_path / "a", "x = uuid.uuid4()\nnow = datetime.datetime.now()\nyield x")
    result = lint(tmp_path)
    assert [(f.path, f.line) for f in result.findings] == sorted((f.path, f.line) for f in result.findings)
    assert str(result.findings[0]) == (
        "a/function_app.py:20:9: DX103 `uuid.uuid4` returns a different value on every replay; "
        "use `context.new_uuid()`"
    )
    assert Finding("p.py", 3, 7, "DX100", "m") < Finding("p.py", 3, 8, "DX100", "a")
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert main(["lint"]) == 1
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out.splitlines()
    assert all(RUFF_LINE.match(line) for line in out[:-1])
    assert [RUFF_LINE.match(line)["path"] for line in out[:-1]] == [  # type: ignore[index]
        "a/function_app.py",
        "a/function_app.py",
        "b/function_app.py",
    ]
    assert out[-1] == "Found 3 errors."


def test_lint_is_a_registered_command() -> None:
    assert "lint" in COMMANDS


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    python_path = os.pathsep.join(p for p in (str(REPO_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "durable_ext", "lint", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": python_path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_exit_codes_through_python_m(tmp_path: Path) -> None:
    bad = write_v2(tmp_path / "bad", "time.sleep(1)\nyield 1")
    good = write_v2(tmp_path / "good", "yield context.call_activity('work')")

    findings = _run_cli("bad", cwd=tmp_path)
    assert findings.returncode == 1, findings.stderr
    assert findings.stdout.splitlines() == [
        "bad/function_app.py:20:5: DX102 `time.sleep` blocks the orchestrator in memory and waits again on "
        "every replay; use `yield context.create_timer(fire_at)`",
        "Found 1 error.",
    ]

    clean = _run_cli(str(good), cwd=tmp_path)
    assert (clean.returncode, clean.stdout) == (0, "All checks passed!\n")

    missing = _run_cli("nope", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr == "error: no such file or directory: nope\n"
    assert bad.is_dir()


def test_directory_without_orchestrators_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(tmp_path)]) == 0
    assert "no orchestrator functions found" in capsys.readouterr().err


# --- this repository -------------------------------------------------------------------------------------


def test_sample_app_is_clean() -> None:
    result = lint_paths([REPO_DIR / "function_app.py", REPO_DIR / "orchestrators"], relative_to=REPO_DIR)
    assert result.findings == ()
    assert result.orchestrators == 7


@pytest.mark.parametrize(
    "app", sorted(p.name for p in (REPO_DIR / "tests" / "apps").iterdir() if p.name != "__pycache__")
)
def test_test_apps_are_clean(app: str) -> None:
    result = lint_paths([REPO_DIR / "tests" / "apps" / app])
    assert result.findings == ()
    assert result.warnings == ()


def test_pre_commit_hook_is_declared() -> None:
    hooks = (REPO_DIR / ".pre-commit-hooks.yaml").read_text()
    assert "- id: durable-lint" in hooks
    assert "entry: python -m durable_ext lint" in hooks
