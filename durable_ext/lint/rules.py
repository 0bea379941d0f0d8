"""The replay-safety rules and the AST visitor that applies them to one orchestrator function.

An orchestrator is replayed from its history again and again, on any worker, long after the events in
it happened; every replay must take the same decisions. Each rule finds code whose result or effect
differs between replays. Most rules are a dotted-name prefix in :data:`NAME_RULES`: any reference to a
name under that prefix (``time.sleep``, ``random.choice``, ``os.environ["X"]``) is a finding, after
imports and aliases are resolved (:mod:`durable_ext.lint.names`). The others are visitor methods.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Set
from dataclasses import dataclass

from durable_ext.lint.names import FunctionNode, ModuleNames, global_names, local_names


@dataclass(frozen=True)
class Rule:
    """One check: its stable code, what goes wrong on replay, and what to write instead."""

    code: str
    """``DX`` and three digits; never reused for another check."""
    name: str
    """A few words for the rule table."""
    why: str
    """Why the flagged code breaks replay (follows the flagged name in the message)."""
    instead: str
    """What to use instead."""

    def message(self, subject: str) -> str:
        """The finding's message about ``subject`` (the flagged name or construct)."""
        return f"{subject} {self.why}; {self.instead}"


_NEW_EVERY_REPLAY = "returns a different value on every replay"
_USE_ACTIVITY = "do it in an activity and pass the result to the orchestrator"

UNREADABLE = "DX000"
"""Not a replay rule: a file that cannot be read or parsed (syntax error, broken function.json)."""

RULES: tuple[Rule, ...] = (
    Rule(
        "DX100",
        "current date or time",
        "reads the clock, which has moved on at every replay",
        "use `context.current_utc_datetime`",
    ),
    Rule("DX101", "clock reading", _NEW_EVERY_REPLAY, "use `context.current_utc_datetime`"),
    Rule(
        "DX102",
        "sleep",
        "blocks the orchestrator in memory and waits again on every replay",
        "use `yield context.create_timer(fire_at)`",
    ),
    Rule("DX103", "random UUID", _NEW_EVERY_REPLAY, "use `context.new_uuid()`"),
    Rule(
        "DX104",
        "random numbers",
        _NEW_EVERY_REPLAY,
        "draw random values in an activity, or derive them from `context.new_uuid()`",
    ),
    Rule(
        "DX105",
        "environment variables",
        "can differ between the workers and deployments that replay the orchestration",
        "read settings in an activity or pass them in the orchestration input",
    ),
    Rule(
        "DX106", "file I/O", "is I/O: it runs again on every replay and its result can change", _USE_ACTIVITY
    ),
    Rule(
        "DX107",
        "network I/O",
        "is I/O: it runs again on every replay and its result can change",
        "use an activity or `context.call_http()`",
    ),
    Rule(
        "DX108",
        "threads",
        "runs work outside the orchestration history, so replays cannot reproduce it",
        "fan out activities with `context.task_all()`",
    ),
    Rule(
        "DX109",
        "asyncio",
        "schedules work outside the orchestration history (orchestrators do not run on an event loop)",
        "yield durable tasks: `context.task_all()`, `context.task_any()`, `context.create_timer()`",
    ),
    Rule(
        "DX110",
        "async orchestrator",
        "returns a coroutine, which Durable Functions cannot drive: orchestrators are generators",
        "write `def` and `yield` durable tasks",
    ),
    Rule(
        "DX111",
        "await in an orchestrator",
        "waits outside the orchestration history, so replays cannot reproduce it",
        "`yield` durable tasks instead",
    ),
    Rule("DX112", "blocking call", "blocks the orchestrator and runs again on every replay", _USE_ACTIVITY),
    Rule(
        "DX113",
        "iterating over a set",
        "visits items in an order that changes between processes (string hashes are randomized)",
        "iterate over a list or `sorted(...)` so tasks are scheduled in the same order on replay",
    ),
    Rule(
        "DX114",
        "module state mutated",
        "changes module state again on every replay and on every worker that replays it",
        "keep state in local variables, the orchestration input and output, or an entity",
    ),
)
"""Every replay rule, by code."""

RULES_BY_CODE: dict[str, Rule] = {rule.code: rule for rule in RULES}

_FLAGGED_NAMES: dict[str, tuple[str, ...]] = {
    "DX100": (
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
    ),
    "DX101": tuple(
        f"time.{name}{suffix}"
        for name in ("time", "monotonic", "perf_counter", "process_time")
        for suffix in ("", "_ns")
    ),
    "DX102": ("time.sleep",),
    "DX103": ("uuid.uuid1", "uuid.uuid4"),
    "DX104": ("random", "secrets", "os.urandom", "os.getrandom"),
    "DX105": ("os.environ", "os.environb", "os.getenv", "os.getenvb", "os.putenv", "os.unsetenv"),
    "DX106": (
        *("builtins.open", "io.open", "shutil", "glob", "tempfile"),
        *(f"os.{f}" for f in ("open", "listdir", "scandir", "walk", "remove", "unlink", "makedirs", "mkdir")),
        *(f"os.{f}" for f in ("rename", "replace", "stat")),
        *(f"os.path.{f}" for f in ("exists", "isfile", "isdir", "getsize", "getmtime")),
    ),
    "DX107": (
        "requests",
        "httpx",
        "aiohttp",
        "urllib.request",
        "urllib3",
        "socket",
        "http.client",
        "smtplib",
    ),
    "DX108": ("threading", "_thread", "concurrent.futures", "multiprocessing"),
    "DX109": ("asyncio",),
    "DX112": ("subprocess", "os.system", "os.popen", "builtins.input"),
}

NAME_RULES: dict[str, str] = {name: code for code, names in _FLAGGED_NAMES.items() for name in names}
"""Dotted-name prefix -> rule: a reference to the name or anything under it (``random.x``) is flagged."""

FILE_METHODS = frozenset({"read_text", "write_text", "read_bytes", "write_bytes"})
"""Methods flagged as file I/O whatever they are called on (``pathlib.Path`` and its kin)."""

MUTATING_METHODS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "remove",
        "pop",
        "popitem",
        "clear",
        "update",
        "add",
        "discard",
        "setdefault",
        "sort",
        "reverse",
        "appendleft",
        "extendleft",
        "popleft",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
    }
)
"""Methods of lists, dicts, sets and deques that change them in place."""

_SET_CONSTRUCTORS = frozenset({"builtins.set", "builtins.frozenset"})


def name_rule(qualified: str) -> str | None:
    """The code of the :data:`NAME_RULES` entry ``qualified`` falls under, if any."""
    parts = qualified.split(".")
    for end in range(len(parts), 0, -1):
        code = NAME_RULES.get(".".join(parts[:end]))
        if code is not None:
            return code
    return None


Report = Callable[[ast.AST, str, str], None]
"""Receives one finding: the node, the rule code, the subject of the message."""


class OrchestratorChecker(ast.NodeVisitor):
    """Applies every rule to the body of one function (an orchestrator, or a helper it calls)."""

    def __init__(self, function: FunctionNode, names: ModuleNames, report: Report) -> None:
        self._function = function
        self._names = names
        self._report = report
        self._local: Set[str] = local_names(function)
        self._globals: Set[str] = global_names(function)
        self.helpers: list[str] = []
        """Top-level functions of the module this function calls, in call order."""

    def check(self) -> None:
        """Visit the function's statements (not its decorators, parameters or annotations)."""
        for statement in self._function.body:
            self.visit(statement)

    # --- names: clocks, randomness, environment, I/O, threads, asyncio, blocking calls --------------------

    def _name_finding(self, node: ast.expr) -> bool:
        qualified = self._names.qualified_name(node, self._local)
        code = None if qualified is None else name_rule(qualified)
        if qualified is not None and code is not None:
            self._report(node, code, f"`{qualified.removeprefix('builtins.')}`")
            return True
        return False

    def visit_Name(self, node: ast.Name) -> None:
        """Flag rule names, and assignments to names declared ``global``."""
        if isinstance(node.ctx, ast.Load):
            self._name_finding(node)
        elif node.id in self._globals:
            self._report(node, "DX114", f"assigning global `{node.id}`")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        """Flag rule names (``time.sleep``) and attribute assignments on module-level names."""
        if isinstance(node.ctx, ast.Store | ast.Del):
            self._module_state_target(node)
        if not self._name_finding(node):
            self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        """Flag item assignments and deletions on module-level names (``CACHE[key] = value``)."""
        if isinstance(node.ctx, ast.Store | ast.Del):
            self._module_state_target(node)
        self.generic_visit(node)

    def _module_state_target(self, node: ast.Attribute | ast.Subscript) -> None:
        target = node.value
        if isinstance(target, ast.Name) and self._names.is_module_state(target.id, self._local):
            self._report(node, "DX114", f"changing module-level `{target.id}`")

    def visit_Call(self, node: ast.Call) -> None:
        """Flag file methods, mutating methods on module-level names; note calls of helpers."""
        func = node.func
        if isinstance(func, ast.Attribute):
            self._method_call(func)
        elif isinstance(func, ast.Name) and func.id in self._names.functions and func.id not in self._local:
            self.helpers.append(func.id)
        self.generic_visit(node)

    def _method_call(self, func: ast.Attribute) -> None:
        if func.attr in FILE_METHODS and self._names.qualified_name(func, self._local) is None:
            self._report(func, "DX106", f"`.{func.attr}()`")
        receiver = func.value
        if (
            func.attr in MUTATING_METHODS
            and isinstance(receiver, ast.Name)
            and self._names.is_module_state(receiver.id, self._local)
        ):
            self._report(func, "DX114", f"`{receiver.id}.{func.attr}()` on module-level `{receiver.id}`")

    # --- async ---------------------------------------------------------------------------------------------

    def visit_Await(self, node: ast.Await) -> None:
        """Flag ``await``."""
        self._report(node, "DX111", "`await`")
        self.generic_visit(node)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        """Flag ``async with``."""
        self._report(node, "DX111", "`async with`")
        self.generic_visit(node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        """Flag ``async for`` (and a set it iterates over)."""
        self._report(node, "DX111", "`async for`")
        self._iteration(node.iter)
        self.generic_visit(node)

    # --- iteration over sets -------------------------------------------------------------------------------

    def visit_For(self, node: ast.For) -> None:
        """Flag ``for`` over a set."""
        self._iteration(node.iter)
        self.generic_visit(node)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        """Flag a comprehension over a set."""
        self._iteration(node.iter)
        self.generic_visit(node)

    def _iteration(self, iterable: ast.expr) -> None:
        if isinstance(iterable, ast.Set | ast.SetComp):
            self._report(iterable, "DX113", "Iterating over a set")
        elif isinstance(iterable, ast.Call):
            qualified = self._names.qualified_name(iterable.func, self._local)
            if qualified is not None and qualified in _SET_CONSTRUCTORS:
                self._report(
                    iterable, "DX113", f"Iterating over `{qualified.removeprefix('builtins.')}(...)`"
                )
