"""The functions of an app as the engine and the host see them, whichever programming model declared them.

Orchestrator, activity and entity names are compared ignoring case, as the Durable Task extension
does; that is also what makes entity lookup work, because df lower-cases the entity name in every
entity ID (``df.EntityId("Counter", "k")`` is ``@counter@k``) while the function may be ``Counter``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from durable_ext.errors import AppLoadError

ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"
ENTITY_TRIGGER = "entityTrigger"
HTTP_TRIGGER = "httpTrigger"
DURABLE_CLIENT = "durableClient"
ORCHESTRATION_CLIENT = "orchestrationClient"
"""The durable client binding's name before Durable Functions 2.0; v1 apps still use it."""

ALL_HTTP_METHODS: tuple[str, ...] = ("GET", "POST", "DELETE", "HEAD", "PATCH", "PUT", "OPTIONS")
"""What an HTTP trigger without ``methods`` accepts (the members of ``func.HttpMethod``)."""


class FunctionKind(enum.Enum):
    """What a function is, decided by its trigger binding."""

    ORCHESTRATOR = "orchestrator"
    ACTIVITY = "activity"
    ENTITY = "entity"
    HTTP = "http"
    OTHER = "other"
    """Any other trigger (timer, queue, blob, ...): indexed so it can be reported, but not run."""


_KIND_OF_TRIGGER: dict[str, FunctionKind] = {
    ORCHESTRATION_TRIGGER.lower(): FunctionKind.ORCHESTRATOR,
    ACTIVITY_TRIGGER.lower(): FunctionKind.ACTIVITY,
    ENTITY_TRIGGER.lower(): FunctionKind.ENTITY,
    HTTP_TRIGGER.lower(): FunctionKind.HTTP,
}

DURABLE_KINDS = frozenset({FunctionKind.ORCHESTRATOR, FunctionKind.ACTIVITY, FunctionKind.ENTITY})


def kind_of_trigger(trigger_type: str) -> FunctionKind:
    """The kind of function a trigger binding type makes (binding types ignore case, as in the host)."""
    return _KIND_OF_TRIGGER.get(trigger_type.lower(), FunctionKind.OTHER)


def is_durable_client(binding_type: str) -> bool:
    """Whether a binding type is the durable client (``durableClient`` or legacy ``orchestrationClient``)."""
    return binding_type.lower() in (DURABLE_CLIENT.lower(), ORCHESTRATION_CLIENT.lower())


@dataclass(frozen=True)
class HttpRoute:
    """How an HTTP-triggered function is reached."""

    route: str
    """The route template without the route prefix, e.g. ``orchestrators/{functionName}``; the function
    name when the decorator gave none (as the Functions host does)."""
    methods: tuple[str, ...]
    """Upper-case HTTP methods; :data:`ALL_HTTP_METHODS` when the decorator gave none."""
    auth_level: str
    """``anonymous``, ``function`` or ``admin`` (the app's level when the decorator gave none)."""
    request_param: str
    """The parameter the ``func.HttpRequest`` is passed as (the trigger binding's name)."""
    durable_client_param: str | None
    """The parameter the durable client binding JSON string is passed as, or None without one."""


@dataclass(frozen=True)
class BindingInfo:
    """One binding of a function as the Functions host reads it (function.json or the v2 indexing)."""

    type: str
    direction: str
    """``in`` or ``out``."""
    name: str


@dataclass(frozen=True)
class RegisteredFunction:
    """One function of the app, with what is needed to invoke it."""

    name: str
    """The name Durable Functions knows the function by: the explicit trigger name when the decorator
    gave one, otherwise :attr:`function_name`. Lookups by this name ignore case."""
    kind: FunctionKind
    trigger_param: str
    """The trigger binding's name: the parameter the trigger value is passed as. Orchestrators and entities
    are the exception: pass their context positionally (see the app_loader package docstring)."""
    callable: Callable[..., Any]
    """For orchestrators and entities df's wrapper taking the context JSON and returning a JSON string;
    for activities and HTTP functions a callable taking the trigger (and durable client) keyword
    arguments: the user's function itself (v2), or the user's function with its other bindings
    supplied (v1)."""
    is_async: bool
    """Whether :attr:`callable` returns a coroutine to await."""
    http: HttpRoute | None
    """The route of an HTTP function; None for every other kind."""
    trigger_type: str
    """The trigger binding's raw type, e.g. ``orchestrationTrigger`` or ``timerTrigger``."""
    function_name: str
    """The Azure Functions function name: Python name or ``@app.function_name`` (v2), folder name (v1)."""
    disabled: bool = False
    """Disabled by the ``AzureWebJobs.<function_name>.Disabled`` app setting (see durable_ext.config)."""
    bindings: tuple[BindingInfo, ...] = ()
    """Every binding, the trigger first, as the host registers them."""


@dataclass(frozen=True)
class FunctionRegistry:
    """The functions of one app, looked up the way Durable Functions resolves names.

    Each kind is its own namespace: an orchestrator and an activity may share a name. Disabled
    functions are in the registry (Durable Functions still knows them: starting a disabled
    orchestrator is accepted, and then fails); :attr:`RegisteredFunction.disabled` says whether to run it.
    """

    functions: tuple[RegisteredFunction, ...]
    programming_model: str = "v2"
    """``v2`` (function_app.py) or ``v1`` (function.json folders)."""
    _index: Mapping[tuple[FunctionKind, str], RegisteredFunction] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[tuple[FunctionKind, str], RegisteredFunction] = {}
        for function in self.functions:
            key = (function.kind, function.name.lower())
            other = index.get(key)
            if other is None:
                index[key] = function
            elif function.kind in DURABLE_KINDS:
                # Durable Functions could not tell them apart: refuse rather than pick one silently.
                raise AppLoadError(
                    f"two {function.kind.value} functions are named {function.name!r} (names ignore case):"
                    f" {other.function_name!r} and {function.function_name!r}; rename one"
                )
        # A frozen dataclass can only set its derived fields through object.__setattr__.
        object.__setattr__(self, "_index", index)

    def get(self, name: str, kind: FunctionKind | None = None) -> RegisteredFunction | None:
        """The function called ``name`` (ignoring case) of the given kind, or of any kind when None.

        Pass the kind when resolving a Durable Functions name: kinds are separate namespaces.
        """
        if kind is not None:
            return self._index.get((kind, name.lower()))
        wanted = name.lower()
        return next((f for f in self.functions if f.name.lower() == wanted), None)

    def runnable(self, name: str, kind: FunctionKind) -> RegisteredFunction | None:
        """Like :meth:`get` with a kind, but None for a disabled function."""
        function = self.get(name, kind)
        return None if function is None or function.disabled else function

    def with_disabled(self, function_names: Container[str]) -> FunctionRegistry:
        """This registry with the functions whose :attr:`~RegisteredFunction.function_name` (lower-cased)
        is in ``function_names`` marked disabled."""
        marked = tuple(
            dataclasses.replace(f, disabled=f.function_name.lower() in function_names) for f in self.functions
        )
        return FunctionRegistry(marked, self.programming_model)

    def names(self, kind: FunctionKind) -> tuple[str, ...]:
        """The Durable Functions names of the functions of ``kind``, disabled ones included."""
        return tuple(f.name for f in self._of_kind(kind))

    @property
    def orchestrators(self) -> tuple[RegisteredFunction, ...]:
        """The orchestrator functions, in registration order."""
        return self._of_kind(FunctionKind.ORCHESTRATOR)

    @property
    def activities(self) -> tuple[RegisteredFunction, ...]:
        """The activity functions, in registration order."""
        return self._of_kind(FunctionKind.ACTIVITY)

    @property
    def entities(self) -> tuple[RegisteredFunction, ...]:
        """The entity functions, in registration order."""
        return self._of_kind(FunctionKind.ENTITY)

    @property
    def http_functions(self) -> tuple[RegisteredFunction, ...]:
        """The HTTP-triggered functions, in registration order."""
        return self._of_kind(FunctionKind.HTTP)

    def _of_kind(self, kind: FunctionKind) -> tuple[RegisteredFunction, ...]:
        return tuple(f for f in self.functions if f.kind is kind)


def invalid_function_message(registry: FunctionRegistry, name: str, kind: FunctionKind) -> str:
    """Durable Functions' text for a name that is no runnable function of ``kind``
    (``GetInvalidOrchestratorFunctionMessage`` and its siblings in the extension)."""
    message = f"The function '{name}' doesn't exist, is disabled, or is not an {kind.value} function."
    known = registry.names(kind)
    if known:
        listed = "', '".join(known)
        return f"{message} Additional info: The following are the known {kind.value} functions: '{listed}'."
    return f"{message} Additional info: No {kind.value} functions are currently registered!"
