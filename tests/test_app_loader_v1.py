"""Tests of durable_ext.app_loader.v1: function.json folders indexed as the Functions host and the Python
worker index them.

No storage is involved: tests/apps/v1_app and small apps written to tmp_path are imported and their
registries inspected, and their activity and HTTP callables called directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest

from durable_ext.app_loader import (
    ALL_HTTP_METHODS,
    FunctionKind,
    FunctionRegistry,
    RegisteredFunction,
    load_app,
)
from durable_ext.errors import AppLoadError

V1_APP = Path(__file__).resolve().parent / "apps" / "v1_app"

ACTIVITY = '{"bindings": [{"name": "value", "type": "activityTrigger", "direction": "in"}]}'


@pytest.fixture(autouse=True)
def _restore_import_state() -> Iterator[None]:
    """Undo what loading v1 apps does to sys.path and sys.modules (the __app__ package)."""
    saved_path = list(sys.path)
    yield
    sys.path[:] = saved_path
    for name in [n for n in sys.modules if n == "__app__" or n.startswith("__app__.")]:
        del sys.modules[name]


@pytest.fixture
def registry() -> FunctionRegistry:
    return load_app(V1_APP, settings={})


def must_get(registry: FunctionRegistry, name: str, kind: FunctionKind) -> RegisteredFunction:
    function = registry.get(name, kind)
    assert function is not None, f"{kind.value} {name} not found"
    return function


def function_folder(app: Path, name: str, function_json: str, **files: str) -> Path:
    """Write ``app/name/function.json`` and the given files (default: an __init__.py with main)."""
    folder = app / name
    folder.mkdir(parents=True)
    (folder / "function.json").write_text(function_json)
    for file_name, text in (files or {"__init__.py": "def main(value):\n    return value\n"}).items():
        (folder / file_name).write_text(text)
    return folder


def test_folders_are_functions_of_their_trigger_kind(registry: FunctionRegistry) -> None:
    assert registry.programming_model == "v1"
    assert [f.name for f in registry.orchestrators] == [
        "CounterOrchestration",
        "E1_HelloSequence",
        "E2_FanOut",
        "E4_Notify",
    ]
    assert [f.name for f in registry.activities] == [
        "E1_SayHello",
        "E2_GetWorkItems",
        "E2_Square",
        "SendNotice",
    ]
    assert [f.name for f in registry.entities] == ["Counter"]
    assert [f.name for f in registry.http_functions] == ["HttpStart", "HttpStartNamed"]
    other = must_get(registry, "QueueWorker", FunctionKind.OTHER)
    assert other.trigger_type == "queueTrigger"


def test_http_bindings_name_the_parameters(registry: FunctionRegistry) -> None:
    start = must_get(registry, "HttpStart", FunctionKind.HTTP).http
    assert start is not None
    assert (start.route, start.methods, start.auth_level) == (
        "orchestrators/{functionName}",
        ("POST", "GET"),
        "anonymous",
    )
    # The legacy orchestrationClient binding is the durable client too.
    assert (start.request_param, start.durable_client_param) == ("req", "starter")
    named = must_get(registry, "HttpStartNamed", FunctionKind.HTTP).http
    assert named is not None
    assert (named.request_param, named.durable_client_param, named.auth_level) == (
        "request",
        "client",
        "function",
    )


def test_relative_import_of_shared_code_through_the_app_package(registry: FunctionRegistry) -> None:
    say_hello = must_get(registry, "E1_SayHello", FunctionKind.ACTIVITY)
    assert say_hello.trigger_param == "name"
    assert say_hello.callable(name="Tokyo") == "Hello Tokyo!"
    assert sys.modules["__app__.E1_SayHello"].__file__ == str(V1_APP / "E1_SayHello" / "__init__.py")
    assert "__app__.shared_code.greetings" in sys.modules


def test_script_file_and_entry_point(registry: FunctionRegistry) -> None:
    square = must_get(registry, "E2_Square", FunctionKind.ACTIVITY)
    # ActivityTrigger spelled with a capital A: binding types ignore case, as in the host.
    assert square.trigger_type == "ActivityTrigger"
    assert square.is_async
    assert asyncio.run(square.callable(value=7)) == 49
    assert "__app__.E2_Square.square" in sys.modules


def test_an_unserved_output_binding_gets_an_out_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="durable_ext.app_loader"):
        registry = load_app(V1_APP, settings={})
    notice = must_get(registry, "SendNotice", FunctionKind.ACTIVITY)
    assert notice.callable(phoneNumber="+1555") == "sent to +1555"
    warnings = [r.getMessage() for r in caplog.records if "SendNotice" in r.getMessage()]
    assert warnings == [
        "Function SendNotice: durable_ext cannot serve its twilioSms output 'message' binding(s): what the"
        " function sets on an output is discarded and an input is None; they work in Azure only"
    ]
    assert any("QueueWorker has a queueTrigger trigger" in r.getMessage() for r in caplog.records)


def test_named_http_output_left_unset_is_a_clear_error(tmp_path: Path) -> None:
    function_folder(
        tmp_path,
        "Quiet",
        json.dumps(
            {
                "bindings": [
                    {"name": "req", "type": "httpTrigger", "direction": "in", "authLevel": "anonymous"},
                    {"name": "res", "type": "http", "direction": "out"},
                ]
            }
        ),
        **{"__init__.py": "def main(req, res):\n    return 'ignored'\n"},
    )
    function_folder(
        tmp_path,
        "Answers",
        json.dumps(
            {
                "bindings": [
                    {"name": "req", "type": "httpTrigger", "direction": "in"},
                    {"name": "res", "type": "http", "direction": "out"},
                ]
            }
        ),
        **{"__init__.py": "def main(req, res):\n    res.set('hi ' + req.method)\n    return 'ignored'\n"},
    )
    registry = load_app(tmp_path, settings={})
    request = func.HttpRequest("GET", "http://localhost/api/x", body=b"")
    answers = must_get(registry, "Answers", FunctionKind.HTTP)
    assert answers.callable(req=request) == "hi GET"
    assert answers.http is not None
    assert (answers.http.route, answers.http.methods, answers.http.auth_level) == (
        "Answers",
        ALL_HTTP_METHODS,
        "function",
    )
    quiet = must_get(registry, "Quiet", FunctionKind.HTTP)
    with pytest.raises(RuntimeError, match=r"Functions\.Quiet did not set its http output binding 'res'"):
        quiet.callable(req=request)


def test_orchestrator_and_entity_are_df_handles(registry: FunctionRegistry) -> None:
    orchestrator = must_get(registry, "E1_HelloSequence", FunctionKind.ORCHESTRATOR)
    entity = must_get(registry, "counter", FunctionKind.ENTITY)
    assert orchestrator.callable.__name__ == "handle"
    assert entity.callable.__name__ == "handle"


def test_function_app_py_wins_over_function_folders(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shutil.copytree(V1_APP / "E1_SayHello", tmp_path / "E1_SayHello")
    (tmp_path / "function_app.py").write_text(
        "import azure.durable_functions as df\n\napp = df.DFApp()\n\n"
        "@app.activity_trigger(input_name='x')\ndef only_v2(x):\n    return x\n"
    )
    with caplog.at_level(logging.WARNING, logger="durable_ext.app_loader"):
        registry = load_app(tmp_path, settings={})
    assert [f.name for f in registry.functions] == ["only_v2"]
    assert any("the v2 model wins" in r.getMessage() for r in caplog.records)


BAD_FUNCTIONS: list[tuple[str, str, dict[str, str], str]] = [
    (
        "Extra",
        ACTIVITY,
        {"__init__.py": "def main(value, other):\n    return value\n"},
        "cannot load the Extra function (",
    ),
    (
        "Missing",
        '{"bindings": [{"name": "value", "type": "activityTrigger"}, {"name": "out", "type": "queue",'
        ' "direction": "out"}]}',
        {},
        "the following parameters are declared in function.json but not in Python: {'out'}",
    ),
    ("NoBindings", '{"bindings": []}', {}, "at least one binding must be declared"),
    (
        "TwoTriggers",
        '{"bindings": [{"name": "value", "type": "activityTrigger"}, {"name": "t", "type": "timerTrigger"}]}',
        {},
        "exactly one trigger binding (found: activityTrigger, timerTrigger)",
    ),
    ("BadJson", "{", {}, "cannot read it as JSON"),
    (
        "InOut",
        '{"bindings": [{"name": "value", "type": "activityTrigger", "direction": "inout"}]}',
        {},
        "only in and out work",
    ),
    (
        "NoScript",
        '{"scriptFile": "missing.py", ' + ACTIVITY[1:],
        {},
        "the 'scriptFile' property is set to a file that does not exist (missing.py)",
    ),
    (
        "NoEntry",
        '{"entryPoint": "run", ' + ACTIVITY[1:],
        {},
        "cannot load function NoEntry: function run() is not present in NoEntry/__init__.py",
    ),
    ("9Lives", ACTIVITY, {}, "'9Lives' is not a valid function name"),
    (
        "WithContext",
        ACTIVITY,
        {"__init__.py": "def main(value, context):\n    return value\n"},
        "its 'context' parameter (func.Context) is not supplied by durable_ext",
    ),
]


@pytest.mark.parametrize(
    ("name", "function_json", "files", "expected"), BAD_FUNCTIONS, ids=[b[0] for b in BAD_FUNCTIONS]
)
def test_broken_function_folders_are_clear_errors(
    tmp_path: Path, name: str, function_json: str, files: dict[str, str], expected: str
) -> None:
    function_folder(tmp_path, name, function_json, **files)
    with pytest.raises(AppLoadError) as caught:
        load_app(tmp_path, settings={})
    assert expected in str(caught.value)


def test_an_import_error_names_the_users_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    function_folder(
        tmp_path, "Broken", ACTIVITY, **{"__init__.py": "import json\n\nraise ValueError('boom')\n"}
    )
    with pytest.raises(AppLoadError) as caught:
        load_app(tmp_path, settings={})
    assert "ValueError: boom" in str(caught.value)
    assert f"{tmp_path.resolve() / 'Broken' / '__init__.py'}:3" in str(caught.value)
    assert "__app__.Broken" not in sys.modules


def test_loading_again_imports_afresh(tmp_path: Path) -> None:
    folder = function_folder(
        tmp_path, "Echo", ACTIVITY, **{"__init__.py": "def main(value):\n    return 1\n"}
    )
    assert must_get(load_app(tmp_path, settings={}), "Echo", FunctionKind.ACTIVITY).callable(value=None) == 1
    (folder / "__init__.py").write_text("def main(value):\n    return 2\n")
    assert must_get(load_app(tmp_path, settings={}), "Echo", FunctionKind.ACTIVITY).callable(value=None) == 2


def _disabled_names(registry: FunctionRegistry) -> list[str]:
    return [f.function_name for f in registry.functions if f.disabled]


@pytest.mark.parametrize(
    ("settings", "disabled"),
    [
        ({"AzureWebJobs.E1_SayHello.Disabled": "true"}, ["E1_SayHello"]),
        ({"azurewebjobs.e1_sayhello.disabled": "TRUE"}, ["E1_SayHello"]),
        ({"AzureWebJobs_E2_Square_Disabled": "1"}, ["E2_Square"]),
        ({"AzureWebJobs.Counter.Disabled": "false", "AzureWebJobs.HttpStart.Disabled": "0"}, []),
        ({"AzureWebJobs.Counter.Disabled": "yes"}, []),
    ],
)
def test_disabled_app_settings_as_the_webjobs_sdk_reads_them(
    settings: dict[str, str], disabled: list[str]
) -> None:
    assert _disabled_names(load_app(V1_APP, settings=settings)) == disabled


def test_unclear_or_unknown_disabled_settings_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    settings = {"AzureWebJobs.Counter.Disabled": "yes", "AzureWebJobs.Nope.Disabled": "true"}
    with caplog.at_level(logging.WARNING, logger="durable_ext.app_loader"):
        load_app(V1_APP, settings=settings)
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "App setting AzureWebJobs.Counter.Disabled is 'yes': the Functions host disables a function only"
        ' for "true" or "1", so Counter stays enabled'
    ) in messages
    assert "App setting AzureWebJobs.Nope.Disabled names no function of this app; ignored" in messages


def test_disabled_functions_stay_known_but_not_runnable() -> None:
    registry = load_app(V1_APP, settings={"AzureWebJobs.E1_HelloSequence.Disabled": "true"})
    assert registry.get("e1_hellosequence", FunctionKind.ORCHESTRATOR) is not None
    assert registry.runnable("e1_hellosequence", FunctionKind.ORCHESTRATOR) is None
    assert registry.runnable("E2_FanOut", FunctionKind.ORCHESTRATOR) is not None


def test_an_allow_list_keeps_other_folders_from_being_imported(tmp_path: Path) -> None:
    """As under the Functions host, a folder the allow list leaves out is not loaded, so its broken
    import (here a missing package) does not stop the functions that were asked for."""
    function_folder(tmp_path, "Wanted", ACTIVITY)
    function_folder(tmp_path, "Broken", ACTIVITY, **{"__init__.py": "import not_installed_pkg\n"})
    with pytest.raises(AppLoadError, match="not_installed_pkg"):
        load_app(tmp_path)
    registry = load_app(tmp_path, only=["WANTED"])
    assert [f.function_name for f in registry.functions] == ["Wanted"]
    assert "__app__.Broken" not in sys.modules
