"""Tests of durable_ext.app_loader: importing function_app.py and indexing its functions.

No storage is involved: the sample app at the repository root and small apps written to tmp_path are
imported and their registries inspected.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from durable_ext.app_loader import (
    ALL_HTTP_METHODS,
    FunctionKind,
    FunctionRegistry,
    RegisteredFunction,
    load_app,
    registry_of,
)
from durable_ext.errors import AppLoadError, DurableExtError

REPO_DIR = Path(__file__).resolve().parents[1]

# azure-functions 1.26 advises (once per process) passing expected_type to get_input(); the sample app
# keeps the plain, documented get_input() call.
pytestmark = pytest.mark.filterwarnings("ignore:azure.functions df_loads was called:DeprecationWarning")

HEADER = """\
import azure.durable_functions as df
import azure.functions as func

"""


@pytest.fixture(autouse=True)
def _restore_import_state(tmp_path: Path) -> Iterator[None]:
    """Undo what loading apps from tmp_path does to sys.path and sys.modules."""
    saved_path = list(sys.path)
    yield
    sys.path[:] = saved_path
    root = tmp_path.resolve()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(root):
            del sys.modules[name]


def write_app(directory: Path, source: str, **extra_files: str) -> Path:
    """Write function_app.py (HEADER + source) and other modules (name -> source) into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "function_app.py").write_text(HEADER + textwrap.dedent(source))
    for name, text in extra_files.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def must_get(registry: FunctionRegistry, name: str, kind: FunctionKind) -> RegisteredFunction:
    function = registry.get(name, kind)
    assert function is not None, f"{kind.value} {name} not found"
    return function


def orchestrator_context(name: str, orchestration_input: object = None) -> str:
    """The smallest context JSON df's orchestrator wrapper accepts for a first episode."""
    now = "2024-01-01T00:00:00.000000Z"
    encoded_input = json.dumps(orchestration_input)
    history = [
        {"EventType": 12, "EventId": -1, "IsPlayed": False, "Timestamp": now},
        {
            "EventType": 0,
            "EventId": -1,
            "IsPlayed": False,
            "Timestamp": now,
            "Name": name,
            "Input": encoded_input,
            "Version": "",
            "OrchestrationInstance": {"InstanceId": "i1", "ExecutionId": "e1"},
        },
    ]
    return json.dumps(
        {
            "history": history,
            "instanceId": "i1",
            "isReplaying": False,
            "parentInstanceId": None,
            "input": encoded_input,
            "upperSchemaVersion": 2,
        }
    )


# --- the sample app ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> FunctionRegistry:
    """The registry of the sample app at the repository root."""
    saved_path = list(sys.path)
    try:
        return load_app(REPO_DIR)
    finally:
        sys.path[:] = saved_path


def test_sample_app_orchestrators_and_activities(sample: FunctionRegistry) -> None:
    assert {f.name for f in sample.orchestrators} == {
        "hello_sequence",
        "fan_out_fan_in",
        "approval_workflow",
        "monitor",
        "parent_with_sub_orchestration",
        "retry_example",
        "counter_orchestrator",
    }
    assert {f.name for f in sample.activities} == {
        "say_hello",
        "get_work_items",
        "process_item",
        "check_status",
        "flaky_activity",
    }
    for function in sample.orchestrators:
        assert function.trigger_type == "orchestrationTrigger"
        assert function.trigger_param == "context"
        assert not function.is_async
        assert function.http is None
    say_hello = must_get(sample, "say_hello", FunctionKind.ACTIVITY)
    assert say_hello.trigger_param == "name"
    assert say_hello.callable(**{say_hello.trigger_param: "Tokyo"}) == "Hello Tokyo!"
    assert must_get(sample, "check_status", FunctionKind.ACTIVITY).is_async


def test_sample_app_lookup_ignores_case_and_kinds_are_separate(sample: FunctionRegistry) -> None:
    assert must_get(sample, "Hello_Sequence", FunctionKind.ORCHESTRATOR).name == "hello_sequence"
    assert sample.get("say_hello", FunctionKind.ORCHESTRATOR) is None
    assert sample.get("nope", FunctionKind.ACTIVITY) is None
    any_kind = sample.get("SAY_HELLO")
    assert any_kind is not None
    assert any_kind.kind is FunctionKind.ACTIVITY


def test_sample_app_entity_is_found_by_dfs_lower_cased_name(sample: FunctionRegistry) -> None:
    # df registers the entity under its function name, "counter"; the orchestrator addresses it as
    # df.EntityId("Counter", key), whose ID "@counter@key" carries the lower-cased name.
    assert [f.name for f in sample.entities] == ["counter"]
    counter = must_get(sample, "counter", FunctionKind.ENTITY)
    assert must_get(sample, "Counter", FunctionKind.ENTITY) is counter
    assert counter.trigger_type == "entityTrigger"


def test_sample_app_http_starter(sample: FunctionRegistry) -> None:
    (starter,) = sample.http_functions
    assert starter.name == starter.function_name == "http_start"
    assert starter.trigger_type == "httpTrigger"
    assert starter.http is not None
    assert starter.http.route == "orchestrators/{functionName}"
    assert starter.http.methods == ("POST",)
    assert starter.http.auth_level == "anonymous"
    assert starter.http.request_param == "req"
    assert starter.http.durable_client_param == "client"
    # df's durable-client middleware is async whatever the user wrote.
    assert starter.is_async


def test_orchestrator_callable_takes_the_context_json(sample: FunctionRegistry) -> None:
    orchestrator = must_get(sample, "hello_sequence", FunctionKind.ORCHESTRATOR)
    state = json.loads(orchestrator.callable(orchestrator_context("hello_sequence")))
    assert state["isDone"] is False
    assert state["actions"] == [[{"actionType": 0, "functionName": "say_hello", "input": '"Tokyo"'}]]


@pytest.mark.parametrize(
    ("name", "orchestration_input", "first_action"),
    [
        ("hello_sequence", None, {"actionType": 0, "functionName": "say_hello"}),
        ("fan_out_fan_in", 3, {"actionType": 0, "functionName": "get_work_items", "input": "3"}),
        ("approval_workflow", {"timeout_seconds": 10}, {"actionType": 11}),  # WhenAny(event, timer)
        ("monitor", {"checks": 2, "interval_seconds": 1}, {"actionType": 0, "functionName": "check_status"}),
        ("parent_with_sub_orchestration", None, {"actionType": 2, "functionName": "hello_sequence"}),
        ("retry_example", None, {"actionType": 12}),  # a retried call is wrapped in a WhenAll
        ("counter_orchestrator", "k", {"actionType": 7, "instanceId": "@counter@k", "operation": "add"}),
    ],
)
def test_every_sample_orchestrator_schedules_its_first_step(
    sample: FunctionRegistry, name: str, orchestration_input: object, first_action: dict[str, object]
) -> None:
    orchestrator = must_get(sample, name, FunctionKind.ORCHESTRATOR)
    state = json.loads(orchestrator.callable(orchestrator_context(name, orchestration_input)))
    assert state["isDone"] is False
    (action,) = state["actions"][0]
    assert {key: action.get(key) for key in first_action} == first_action


def test_sample_counter_entity_runs_a_batch(sample: FunctionRegistry) -> None:
    counter = must_get(sample, "counter", FunctionKind.ENTITY)
    batch = {
        "self": {"name": "counter", "key": "k"},
        "state": None,
        "exists": False,
        "batch": [
            # Operation inputs are double-encoded JSON (see the protocol notes).
            {"name": "add", "input": json.dumps(json.dumps(5)), "isSignal": True},
            {"name": "get", "input": None, "isSignal": False},
        ],
    }
    result = json.loads(counter.callable(json.dumps(batch)))
    assert result["entityState"] == "5"
    assert [r["result"] for r in result["results"]] == ["null", "5"]


def test_loading_the_same_dir_again_imports_it_afresh() -> None:
    first = load_app(REPO_DIR)
    second = load_app(REPO_DIR)
    assert [f.name for f in first.functions] == [f.name for f in second.functions]
    first_fn = must_get(first, "say_hello", FunctionKind.ACTIVITY).callable
    second_fn = must_get(second, "say_hello", FunctionKind.ACTIVITY).callable
    assert first_fn is not second_fn
    assert sys.path[0] == str(REPO_DIR)


# --- errors -----------------------------------------------------------------------------------------


def test_missing_function_app(tmp_path: Path) -> None:
    with pytest.raises(AppLoadError) as caught:
        load_app(tmp_path)
    message = str(caught.value)
    assert message == (
        f"no function_app.py and no function folders (with function.json) in {tmp_path.resolve()}:"
        " run from your app's directory or pass --app-dir"
    )
    assert isinstance(caught.value, DurableExtError)
    assert caught.value.user_traceback == ""


def test_syntax_error(tmp_path: Path) -> None:
    write_app(tmp_path, "app = df.DFApp()\ndef broken(:\n    pass\n")
    with pytest.raises(AppLoadError) as caught:
        load_app(tmp_path)
    script = tmp_path.resolve() / "function_app.py"
    message = str(caught.value)
    assert "SyntaxError" in message
    assert f"{script}:5" in message  # HEADER is three lines, then line 4 `app = ...`, line 5 the error
    assert "\n" not in message
    assert str(script) in caught.value.user_traceback
    assert "SyntaxError" in caught.value.user_traceback
    assert caught.value.__suppress_context__


def test_exception_at_import_reports_the_user_file_and_line(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        """\
        import settings_for_exc_test

        app = df.DFApp()
        """,
        **{"settings_for_exc_test.py": '"""Settings."""\n\nLIMIT = 1 // 0\n'},
    )
    with pytest.raises(AppLoadError) as caught:
        load_app(tmp_path)
    app_dir = tmp_path.resolve()
    message = str(caught.value)
    assert "ZeroDivisionError: integer division or modulo by zero" in message
    assert f"{app_dir / 'settings_for_exc_test.py'}:3" in message
    user_tb = caught.value.user_traceback
    assert user_tb.startswith("Traceback (most recent call last):")
    assert f'File "{app_dir / "function_app.py"}", line 4' in user_tb
    assert f'File "{app_dir / "settings_for_exc_test.py"}", line 3' in user_tb
    assert "LIMIT = 1 // 0" in user_tb
    # Only the user's frames: no import machinery, no durable_ext.
    assert "importlib" not in user_tb
    assert "app_loader" not in user_tb
    # Nothing half-imported stays behind, so fixing the code and loading again works.
    assert "settings_for_exc_test" not in sys.modules
    (tmp_path / "settings_for_exc_test.py").write_text('"""Settings, fixed."""\n\nLIMIT = 1\n')
    assert load_app(tmp_path).functions == ()


def test_sys_exit_at_import_is_a_load_error(tmp_path: Path) -> None:
    write_app(tmp_path, "import sys\n\nsys.exit(3)\n")
    with pytest.raises(AppLoadError, match=r"SystemExit: 3 \(.*function_app.py:6\)"):
        load_app(tmp_path)


def test_no_app_object(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        """\
        bp = df.Blueprint()


        @bp.activity_trigger(input_name="x")
        def act(x):
            return x
        """,
    )
    with pytest.raises(AppLoadError, match=r"defines no function app: add `app = df\.DFApp"):
        load_app(tmp_path)


def test_more_than_one_app_object(tmp_path: Path) -> None:
    write_app(tmp_path, "app = df.DFApp()\nsame_app = app\nother = func.FunctionApp()\n")
    with pytest.raises(AppLoadError, match=r"defines 2 function apps \(app, other\)"):
        load_app(tmp_path)


def test_two_functions_with_the_same_name(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        """\
        app = df.DFApp()
        bp = df.Blueprint()


        @app.activity_trigger(input_name="x")
        def act(x):
            return x


        @bp.activity_trigger(input_name="x")
        def act(x):
            return x


        app.register_functions(bp)
        """,
    )
    with pytest.raises(AppLoadError, match="Function act does not have a unique function name"):
        load_app(tmp_path)


def test_two_orchestrators_whose_names_differ_only_in_case(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        """\
        app = df.DFApp()


        @app.orchestration_trigger(context_name="context", orchestration="Flow")
        def first(context):
            return 1


        @app.orchestration_trigger(context_name="context", orchestration="flow")
        def second(context):
            return 2
        """,
    )
    with pytest.raises(
        AppLoadError, match=r"two orchestrator functions are named 'flow'.*'first' and 'second'"
    ):
        load_app(tmp_path)


# --- what is read from the decorators ---------------------------------------------------------------


def test_async_activity_is_detected(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        """\
        app = df.DFApp()


        @app.activity_trigger(input_name="payload")
        async def slow(payload: int) -> int:
            return payload + 1


        @app.activity_trigger(input_name="payload")
        def fast(payload: int) -> int:
            return payload + 1
        """,
    )
    registry = load_app(tmp_path)
    slow = must_get(registry, "slow", FunctionKind.ACTIVITY)
    assert slow.is_async
    assert slow.trigger_param == "payload"
    assert asyncio.run(slow.callable(payload=1)) == 2
    assert not must_get(registry, "fast", FunctionKind.ACTIVITY).is_async


def test_explicit_names_from_decorator_arguments(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        """\
        app = df.DFApp()


        @app.orchestration_trigger(context_name="context", orchestration="MyName")
        def orch(context):
            result = yield context.call_activity("MyActivity", 1)
            return result


        @app.activity_trigger(input_name="value", activity="MyActivity")
        def act(value):
            return value


        @app.entity_trigger(context_name="context", entity_name="MyEntity")
        def ent(context):
            context.set_state(1)


        @app.function_name("renamed")
        @app.route(route="go")
        def handler(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse("ok")
        """,
    )
    registry = load_app(tmp_path)
    orch = must_get(registry, "myname", FunctionKind.ORCHESTRATOR)
    assert (orch.name, orch.function_name) == ("MyName", "orch")
    assert registry.get("orch", FunctionKind.ORCHESTRATOR) is None
    act = must_get(registry, "MyActivity", FunctionKind.ACTIVITY)
    assert (act.name, act.function_name) == ("MyActivity", "act")
    ent = must_get(registry, "myentity", FunctionKind.ENTITY)
    assert (ent.name, ent.function_name) == ("MyEntity", "ent")
    handler = must_get(registry, "renamed", FunctionKind.HTTP)
    assert handler.function_name == "renamed"
    assert handler.http is not None
    assert handler.http.route == "go"


def test_orchestrator_context_must_be_passed_positionally(tmp_path: Path) -> None:
    # df's wrapper names its parameter `context` whatever context_name says.
    write_app(
        tmp_path,
        """\
        app = df.DFApp()


        @app.orchestration_trigger(context_name="ctx")
        def orch(ctx):
            result = yield ctx.call_activity("act", 1)
            return result
        """,
    )
    orch = must_get(load_app(tmp_path), "orch", FunctionKind.ORCHESTRATOR)
    assert orch.trigger_param == "ctx"
    context = orchestrator_context("orch")
    assert json.loads(orch.callable(context))["actions"][0][0]["functionName"] == "act"
    with pytest.raises(TypeError):
        orch.callable(**{orch.trigger_param: context})


def test_http_defaults_and_other_triggers(tmp_path: Path) -> None:
    write_app(
        tmp_path,
        """\
        app = df.DFApp()  # default auth level: FUNCTION


        @app.route()
        def plain(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse("ok")


        @app.route(route="admin/{id}", methods=["get", func.HttpMethod.DELETE], auth_level="ADMIN",
                   trigger_arg_name="request")
        def admin(request: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse("ok")


        @app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer")
        def tick(timer: func.TimerRequest) -> None:
            pass
        """,
    )
    registry = load_app(tmp_path)
    plain = must_get(registry, "plain", FunctionKind.HTTP)
    assert plain.http is not None
    assert plain.http.route == "plain"
    assert plain.http.methods == ALL_HTTP_METHODS
    assert plain.http.auth_level == "function"
    assert plain.http.durable_client_param is None
    assert not plain.is_async
    admin = must_get(registry, "admin", FunctionKind.HTTP)
    assert admin.http is not None
    assert admin.http.methods == ("GET", "DELETE")
    assert admin.http.auth_level == "admin"
    assert admin.http.request_param == admin.trigger_param == "request"
    tick = must_get(registry, "tick", FunctionKind.OTHER)
    assert tick.trigger_type == "timerTrigger"
    assert tick.http is None


def test_from_app_can_index_the_same_app_twice(tmp_path: Path) -> None:
    # FunctionRegister.get_functions() alone reports every function as a duplicate the second time.
    write_app(
        tmp_path,
        """\
        app = df.DFApp()


        @app.activity_trigger(input_name="x")
        def act(x):
            return x
        """,
    )
    act = must_get(load_app(tmp_path), "act", FunctionKind.ACTIVITY)
    app = sys.modules[act.callable.__module__].app
    assert registry_of(app) == registry_of(app)


# --- several apps in one process --------------------------------------------------------------------


def _app_with_helper(directory: Path, greeting: str) -> Path:
    return write_app(
        directory,
        """\
        import helpers

        app = df.DFApp()


        @app.activity_trigger(input_name="name")
        def greet(name: str) -> str:
            return helpers.greet(name)
        """,
        **{"helpers.py": f"def greet(name):\n    return '{greeting} ' + name\n"},
    )


def test_two_app_dirs_do_not_clash(tmp_path: Path) -> None:
    first = load_app(_app_with_helper(tmp_path / "first", "Hello"))
    second = load_app(_app_with_helper(tmp_path / "second", "Bonjour"))
    first_greet = must_get(first, "greet", FunctionKind.ACTIVITY)
    second_greet = must_get(second, "greet", FunctionKind.ACTIVITY)
    assert first_greet.callable(name="Ada") == "Hello Ada"
    assert second_greet.callable(name="Ada") == "Bonjour Ada"
    # A function_app already imported from elsewhere keeps its name; the other app gets its own.
    first_module = first_greet.callable.__module__
    second_module = second_greet.callable.__module__
    assert first_module != second_module
    assert second_module.startswith("function_app_")
    assert sys.modules[first_module].__file__ == str(tmp_path.resolve() / "first" / "function_app.py")
    assert sys.modules[second_module].__file__ == str(tmp_path.resolve() / "second" / "function_app.py")
    # And back: loading the first directory again finds its own helpers, not the second's.
    again = load_app(tmp_path / "first")
    assert must_get(again, "greet", FunctionKind.ACTIVITY).callable(name="Ada") == "Hello Ada"


def test_sample_app_and_a_tmp_app_in_one_process(tmp_path: Path, sample: FunctionRegistry) -> None:
    other = load_app(_app_with_helper(tmp_path, "Hi"))
    assert [f.name for f in other.functions] == ["greet"]
    assert len(sample.orchestrators) == 7
    assert must_get(sample, "say_hello", FunctionKind.ACTIVITY).callable(name="Oslo") == "Hello Oslo!"
