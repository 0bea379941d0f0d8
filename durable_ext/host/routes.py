"""Typed route declarations: one table both serves an HTTP API and generates its OpenAPI document.

An :class:`Endpoint` names its method and path, the pydantic model of its query parameters, its
request body and the replies it can give (status, meaning, the type of the JSON body, headers).
:func:`serve` turns a table of them into Starlette routes that parse the query through the model
before the handler runs (a :class:`~durable_ext.errors.ValidationError` naming the parameter
otherwise), and :func:`openapi_document` turns the same table into an OpenAPI 3.1 document whose
schemas pydantic generates from those types. Nothing is described twice, so the document cannot
drift from what the routes do.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, Union, get_args, get_origin

import pydantic
from pydantic import BaseModel, ConfigDict, TypeAdapter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from durable_ext.errors import ValidationError

REF_TEMPLATE = "#/components/schemas/{model}"

RequestHandler = Callable[[Request], Awaitable[Response]]
"""A Starlette endpoint."""

Handler = Callable[[Request, Any], Awaitable[Response]]
"""``handler(request, query)``, where ``query`` is an instance of the endpoint's :class:`Query` model."""


class Query(BaseModel):
    """Base of every endpoint's query-parameter model; fields are named by their ``alias``.

    A parameter given with a blank value counts as not given (as in Durable Functions), one given
    more than once takes its last value unless its field is a collection, and unknown parameters are
    ignored.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def from_request(cls, request: Request) -> Self:
        """Parse the request's query string; raises ValidationError naming the first bad parameter."""
        data: dict[str, object] = {}
        for name, info in cls.model_fields.items():
            alias = info.alias or name
            values = [value for value in request.query_params.getlist(alias) if value.strip()]
            if values:
                data[alias] = values if _is_collection(info.annotation) else values[-1]
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Self:
        """Parse parameters given by alias (from a query string or a JSON object); ValidationError
        naming the first bad one."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ValidationError(_describe(exc)) from exc


class NoQuery(Query):
    """The query model of an endpoint that reads no parameters of its own."""


@dataclass(frozen=True)
class PathParameter:
    """A ``{name}`` segment of endpoint paths: its type (for the schema) and what it means."""

    annotation: Any
    description: str


@dataclass(frozen=True)
class Body:
    """An endpoint's optional request body: what it means, its type and the media types it reads."""

    description: str
    annotation: Any = Any
    media_types: tuple[str, ...] = ("application/json",)


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: a value of this answer that another operation takes as parameters.

    ``parameters`` maps the other operation's parameter names to runtime expressions such as
    ``$response.body#/id``. Clients (and fuzzers) follow links from a start to the new instance.
    """

    operation_id: str
    parameters: Mapping[str, str]


@dataclass(frozen=True)
class Reply:
    """One status an endpoint answers with: what it means, its JSON body's type, headers and links.

    ``body`` is a type pydantic can describe (a TypedDict, ``list[...]``, ``Any``) or None for an
    empty body; ``headers`` maps response header names to their descriptions; ``links`` names the
    operations that take values of this answer.
    """

    description: str
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    links: Mapping[str, Link] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """One operation of the API: ``method path`` answered by ``handler``.

    ``path`` is the OpenAPI path template. It is also the route's path unless ``served_at`` names
    another template with an ``{operation}`` segment: then one route serves every endpoint declared
    with that template and picks the one whose path holds that segment's value, compared without
    regard to case (Durable Functions reads ``Terminate`` as ``terminate``).
    """

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    replies: Mapping[int, Reply]
    query: type[Query] = NoQuery
    body: Body | None = None
    served_at: str | None = None
    also_with_slash: bool = False
    public: bool = False
    path_parameters: Mapping[str, PathParameter] = field(default_factory=dict)
    """Path parameters this endpoint reads more narrowly than the API's shared description."""


OPERATION_SEGMENT = "{operation}"

Runner = Callable[[Endpoint, Request], Awaitable[Response]]
"""``run(endpoint, request)``: what the API does around every handler (keys, parsing, errors)."""


def serve(
    endpoints: Sequence[Endpoint], run: Runner, *, not_found: Endpoint, any_method: Sequence[str]
) -> list[BaseRoute]:
    """Starlette routes for ``endpoints``, each request answered by ``run`` with its endpoint.

    ``not_found`` answers an ``{operation}`` no endpoint declares and, last, any other path or method.
    """
    routes: list[BaseRoute] = []
    families: dict[tuple[str, str], dict[str, Endpoint]] = {}
    for endpoint in endpoints:
        if endpoint.served_at is not None:
            family = families.setdefault((endpoint.served_at, endpoint.method), {})
            family[_operation_name(endpoint.path, endpoint.served_at)] = endpoint
            continue
        paths = [endpoint.path, f"{endpoint.path}/"] if endpoint.also_with_slash else [endpoint.path]
        routes.extend(Route(path, _bound(run, endpoint), methods=[endpoint.method]) for path in paths)
    for (path, method), family in families.items():
        routes.append(Route(path, _dispatching(run, family, not_found), methods=[method]))
    routes.append(Route(not_found.path, _bound(run, not_found), methods=list(any_method)))
    return routes


def _bound(run: Runner, endpoint: Endpoint) -> RequestHandler:
    async def handle(request: Request) -> Response:
        return await run(endpoint, request)

    return handle


def _dispatching(run: Runner, family: Mapping[str, Endpoint], not_found: Endpoint) -> RequestHandler:
    async def handle(request: Request) -> Response:
        endpoint = family.get(request.path_params["operation"].lower(), not_found)
        return await run(endpoint, request)

    return handle


def _operation_name(path: str, served_at: str) -> str:
    segments = path.split("/")
    template = served_at.split("/")
    if len(segments) != len(template) or OPERATION_SEGMENT not in template:
        raise ValueError(f"{path} cannot be served at {served_at}")
    return segments[template.index(OPERATION_SEGMENT)].lower()


# ---- the OpenAPI document ----------------------------------------------------------------------


@dataclass(frozen=True)
class ApiDescription:
    """What the document says about the API as a whole."""

    title: str
    version: str
    description: str
    server_url: str
    path_parameters: Mapping[str, PathParameter]
    common_replies: Mapping[int, Reply]
    security_schemes: Mapping[str, Mapping[str, str]]
    """Ways to present a key (every one accepted); empty when the API requires none."""
    query_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Schemas that narrow query parameters by name to what this instance of the API accepts."""


def openapi_document(endpoints: Iterable[Endpoint], api: ApiDescription) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints``; every schema is generated by pydantic."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, api, schemas)
    resolved = schemas.resolve(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": api.title, "version": api.version, "description": api.description},
        "servers": [{"url": api.server_url}],
        "paths": resolved,
        "components": {
            "schemas": schemas.definitions,
            "securitySchemes": {name: dict(scheme) for name, scheme in api.security_schemes.items()},
        },
    }


def _operation(endpoint: Endpoint, api: ApiDescription, schemas: _Schemas) -> dict[str, Any]:
    replies = {**api.common_replies, **endpoint.replies}
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "parameters": [
            *(
                _path_parameter(name, {**api.path_parameters, **endpoint.path_parameters}[name], schemas)
                for name in _path_names(endpoint.path)
            ),
            *_query_parameters(endpoint.query, api.query_schemas, schemas),
        ],
        "responses": {str(status): _response(replies[status], schemas) for status in sorted(replies)},
    }
    if api.security_schemes:
        public = endpoint.public
        operation["security"] = [{}] if public else [{name: []} for name in api.security_schemes]
    if endpoint.body is not None:
        schema = schemas.add(endpoint.body.annotation)
        operation["requestBody"] = {
            "required": False,
            "description": endpoint.body.description,
            "content": {media: {"schema": schema} for media in endpoint.body.media_types},
        }
    return operation


def _path_names(path: str) -> list[str]:
    return [segment[1:-1] for segment in path.split("/") if segment.startswith("{") and segment.endswith("}")]


def _path_parameter(name: str, parameter: PathParameter, schemas: _Schemas) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": parameter.description,
        "schema": schemas.add(parameter.annotation),
    }


def _query_parameters(
    model: type[Query], narrowed: Mapping[str, Mapping[str, Any]], schemas: _Schemas
) -> list[dict[str, Any]]:
    schema = model.model_json_schema(by_alias=True, ref_template=REF_TEMPLATE)
    schemas.definitions.update(schema.get("$defs", {}))
    required = set(schema.get("required", ()))
    parameters = []
    for name, property_schema in schema.get("properties", {}).items():
        described = _without_null(property_schema)
        described.pop("title", None)
        description = described.pop("description", "")
        described.update(narrowed.get(name, {}))
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "description": description,
                "schema": described,
            }
        )
    return parameters


def _without_null(schema: Mapping[str, Any]) -> dict[str, Any]:
    """An optional parameter's schema without its ``null`` branch: a query string has no null."""
    described = dict(schema)
    if described.get("default", 0) is None:
        del described["default"]
    branches = [branch for branch in described.pop("anyOf", ()) if branch != {"type": "null"}]
    if len(branches) == 1:
        described.update(branches[0])
    elif branches:
        described["anyOf"] = branches
    return described


def _response(reply: Reply, schemas: _Schemas) -> dict[str, Any]:
    response: dict[str, Any] = {"description": reply.description}
    if reply.body is not None:
        response["content"] = {"application/json": {"schema": schemas.add(reply.body)}}
    if reply.links:
        response["links"] = {
            name: {"operationId": link.operation_id, "parameters": dict(link.parameters)}
            for name, link in reply.links.items()
        }
    if reply.headers:
        response["headers"] = {
            name: {"description": description, "schema": {"type": "string"}}
            for name, description in reply.headers.items()
        }
    return response


class _Schemas:
    """Collects the types the document names, then has pydantic describe them all in one pass.

    ``add`` returns a placeholder that :meth:`resolve` replaces by the type's schema, so that shared
    types (TypedDicts) become one entry under ``components/schemas`` referenced wherever used.
    """

    def __init__(self) -> None:
        self._types: list[Any] = []
        self._resolved: dict[int, dict[str, Any]] | None = None
        self.definitions: dict[str, Any] = {}
        """``components/schemas``: the named types (TypedDicts, enums) the schemas refer to."""

    def add(self, annotation: Any) -> dict[str, Any]:
        for index, known in enumerate(self._types):
            if known == annotation:
                return {_PLACEHOLDER: index}
        self._types.append(annotation)
        return {_PLACEHOLDER: len(self._types) - 1}

    def resolve(self, value: Any) -> Any:
        if self._resolved is None:
            inputs = [(index, "serialization", TypeAdapter(kind)) for index, kind in enumerate(self._types)]
            mapping, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF_TEMPLATE)  # type: ignore[arg-type]
            self._resolved = {key[0]: schema for key, schema in mapping.items()}
            self.definitions.update(definitions.get("$defs", {}))
        return self._substitute(value)

    def _substitute(self, value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {_PLACEHOLDER}:
                assert self._resolved is not None
                return self._resolved[value[_PLACEHOLDER]]
            return {key: self._substitute(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._substitute(item) for item in value]
        return value


_PLACEHOLDER = "x-durable-ext-type"


def _is_collection(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_collection(arg) for arg in get_args(annotation))
    return origin in (list, set, frozenset, tuple)


def _describe(exc: pydantic.ValidationError) -> str:
    """The first error as one sentence: ``query parameter top: must be at least 1, got '0'``."""
    error = exc.errors(include_url=False)[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    location = ".".join(str(part) for part in error["loc"])
    if not location:
        return message
    given = error.get("input")
    suffix = f", got {given!r}" if isinstance(given, str) else ""
    return f"query parameter {location}: {message}{suffix}"
