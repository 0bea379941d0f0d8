"""The OpenAPI 3.0 description of the management API, served at ``{MANAGEMENT_PREFIX}/openapi.json``.

It describes the routes of :mod:`durable_ext.host.api` as Durable Functions documents them (its "HTTP
API reference"), with durable_ext's additions marked as such. Tools such as schemathesis, Swagger UI
or client generators read it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from durable_ext.client import MAX_INSTANCE_ID_LENGTH

_STATUSES = ["Pending", "Running", "Completed", "ContinuedAsNew", "Failed", "Terminated", "Suspended"]

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "ExceptionMessage": {"type": "string"}},
    "required": ["error"],
}
_ANY_JSON: dict[str, Any] = {"description": "Any JSON value.", "nullable": True}
_STATUS = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "nullable": True},
        "instanceId": {"type": "string"},
        "runtimeStatus": {"type": "string", "enum": _STATUSES, "nullable": True},
        "input": _ANY_JSON,
        "customStatus": _ANY_JSON,
        "output": _ANY_JSON,
        "createdTime": {"type": "string", "nullable": True},
        "lastUpdatedTime": {"type": "string", "nullable": True},
        "historyEvents": {"type": "array", "items": {"type": "object"}, "nullable": True},
    },
    "required": ["instanceId", "runtimeStatus"],
}
_CHECK_STATUS = {
    "type": "object",
    "properties": {
        name: {"type": "string"}
        for name in (
            "id",
            "statusQueryGetUri",
            "sendEventPostUri",
            "terminatePostUri",
            "rewindPostUri",
            "purgeHistoryDeleteUri",
            "restartPostUri",
            "suspendPostUri",
            "resumePostUri",
        )
    },
    "required": ["id", "statusQueryGetUri"],
}
_ENTITY = {
    "type": "object",
    "properties": {
        "entityId": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
        },
        "lastOperationTime": {"type": "string", "nullable": True},
        "state": _ANY_JSON,
    },
}
_PURGED = {
    "type": "object",
    "properties": {"instancesDeleted": {"type": "integer"}},
    "required": ["instancesDeleted"],
}


def _package_version() -> str:
    try:
        return version("durable-ext")
    except PackageNotFoundError:  # run from a source tree that was never pip-installed
        return "0+unknown"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, _ref("Error"))


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


_INSTANCE_ID = {
    **_path("instanceId", "The orchestration instance ID: no '/', '\\', '#', '?' or control characters."),
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_INSTANCE_ID_LENGTH,
        "pattern": "^[^@/\\\\#?\\u0000-\\u001f\\u007f-\\u009f][^/\\\\#?\\u0000-\\u001f\\u007f-\\u009f]*$",
    },
}
_REASON = _query("reason", {"type": "string"}, "Why; recorded in history and, for terminate, the output.")
_TIME = {"type": "string", "format": "date-time"}
_COMMON = [
    _query("taskHub", {"type": "string"}, "Task hub name; must be the host's hub if given."),
    _query("connection", {"type": "string"}, "Accepted for compatibility; the host uses its own storage."),
]
_PAGE_HEADER = {
    "name": "x-ms-continuation-token",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The token from the previous page's response header.",
}
_PAGED_HEADERS = {
    "x-ms-continuation-token": {"schema": {"type": "string"}, "description": "Next page, if any."}
}
_JSON_BODY = {
    "required": False,
    "content": {"application/json": {"schema": _ANY_JSON}},
    "description": "A JSON value (optional).",
}
_COMMON_ERRORS = {
    "400": _error("Invalid instance ID, parameter or JSON."),
    "401": _error("The system key is missing or wrong."),
}


def _operation(
    summary: str,
    responses: dict[str, Any],
    parameters: list[dict[str, Any]] | None = None,
    *,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [*(parameters or []), *_COMMON],
        "responses": {**responses, **_COMMON_ERRORS},
    }
    if body is not None:
        operation["requestBody"] = body
    return operation


def _instance_operation(verb: str, effect: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "post": _operation(
            f"{verb} an orchestration instance",
            {
                "202": {"description": effect},
                "404": _error("No such instance."),
                "409": _error("The instance is not in a state that allows this."),
                "410": _error("The instance has ended (for rewind: it did not fail)."),
                **(extra or {}),
            },
            [_INSTANCE_ID, _REASON],
        )
    }


def openapi_document(management_prefix: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of the management API mounted at ``management_prefix``."""
    start_responses = {
        "202": _json("Started; poll statusQueryGetUri.", _ref("CheckStatus")),
        "200": _json("Completed within the wait (with timeout and pollingInterval): the output.", _ANY_JSON),
        "409": _error("An instance with this ID is still running."),
        "413": _error("The input is too large."),
        "501": _error("Orchestration versions are not supported."),
    }
    wait = [
        _query("timeout", {"type": "number", "minimum": 0}, "Seconds to wait for completion."),
        _query("pollingInterval", {"type": "number", "minimum": 0}, "Seconds between status checks."),
    ]
    status_flags = [
        _query(name, {"type": "boolean"}, description)
        for name, description in (
            ("showHistory", "Include the execution history."),
            ("showHistoryOutput", "Include activity outputs in the history."),
            ("showInput", "Include the input (default true)."),
            ("returnInternalServerErrorOnFailure", "Answer 500 instead of 200 for a Failed instance."),
        )
    ]
    list_filters = [
        _query("createdTimeFrom", _TIME, "Created at or after."),
        _query("createdTimeTo", _TIME, "Created at or before."),
        _query(
            "runtimeStatus",
            {"type": "array", "items": {"type": "string", "enum": _STATUSES}},
            "Statuses, comma-separated.",
        ),
        _query("instanceIdPrefix", {"type": "string"}, "Instance IDs starting with this."),
        _query("top", {"type": "integer", "minimum": 1}, "Page size."),
        _query("showInput", {"type": "boolean"}, "Include inputs (default true)."),
        _PAGE_HEADER,
    ]
    entity_filters = [
        _query("fetchState", {"type": "boolean"}, "Include each entity's state."),
        _query("lastOperationTimeFrom", _TIME, "Last operation at or after."),
        _query("lastOperationTimeTo", _TIME, "Last operation at or before."),
        _query("top", {"type": "integer", "minimum": 1}, "Page size."),
        _PAGE_HEADER,
    ]
    entity_path = [_path("entityName", "The entity function's name."), _path("entityKey", "The entity key.")]
    entity_list = {
        "get": _operation(
            "List entities",
            {
                "200": {
                    **_json("One page of entities.", {"type": "array", "items": _ref("Entity")}),
                    "headers": _PAGED_HEADERS,
                }
            },
            entity_filters,
        )
    }
    start = _operation(
        "Start an orchestration",
        start_responses,
        [_path("functionName", "The orchestrator function's name."), *wait],
        body=_JSON_BODY,
    )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Durable Functions management API (durable_ext)",
            "version": _package_version(),
            "description": "Durable Functions' HTTP API for orchestrations and entities.",
        },
        "servers": [{"url": management_prefix}],
        "components": {
            "schemas": {
                "Error": _ERROR,
                "Status": _STATUS,
                "CheckStatus": _CHECK_STATUS,
                "Entity": _ENTITY,
                "Purged": _PURGED,
            },
            "securitySchemes": {
                "code": {"type": "apiKey", "in": "query", "name": "code"},
                "functionsKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
            },
        },
        "security": [{}, {"code": []}, {"functionsKey": []}],
        "paths": {
            "/orchestrators/{functionName}": {"post": start},
            "/orchestrators/{functionName}/{instanceId}": {
                "post": {**start, "parameters": [_INSTANCE_ID, *start["parameters"]]}
            },
            "/instances": {
                "get": _operation(
                    "List orchestration instances",
                    {
                        "200": {
                            **_json("One page of instances.", {"type": "array", "items": _ref("Status")}),
                            "headers": _PAGED_HEADERS,
                        }
                    },
                    list_filters,
                ),
                "delete": _operation(
                    "Purge ended instances by filter",
                    {"200": _json("Purged.", _ref("Purged")), "404": _error("Nothing matched.")},
                    [
                        {
                            **_query("createdTimeFrom", _TIME, "Created at or after (required)."),
                            "required": True,
                        },
                        _query("createdTimeTo", _TIME, "Created at or before."),
                        _query(
                            "runtimeStatus",
                            {"type": "array", "items": {"type": "string", "enum": _STATUSES}},
                            "Ended statuses to purge (default: all ended ones).",
                        ),
                    ],
                ),
            },
            "/instances/{instanceId}": {
                "get": _operation(
                    "Get an instance's status",
                    {
                        "200": _json("The instance has ended.", _ref("Status")),
                        "202": _json("The instance is pending, running or suspended.", _ref("Status")),
                        "404": _error("No such instance."),
                        "500": _json(
                            "Failed (only with returnInternalServerErrorOnFailure).", _ref("Status")
                        ),
                    },
                    [_INSTANCE_ID, *status_flags],
                ),
                "delete": _operation(
                    "Purge one instance's history and status",
                    {
                        "200": _json("Purged.", _ref("Purged")),
                        "404": _error("No such instance."),
                        "412": _error("The instance has not ended."),
                    },
                    [_INSTANCE_ID],
                ),
            },
            "/instances/{instanceId}/raiseEvent/{eventName}": {
                "post": _operation(
                    "Raise an external event",
                    {
                        "202": {"description": "Sent."},
                        "404": _error("No such instance."),
                        "410": _error("The instance has ended."),
                        "413": _error("The event data is too large."),
                    },
                    [_INSTANCE_ID, _path("eventName", "The event's name.")],
                    body=_JSON_BODY,
                )
            },
            "/instances/{instanceId}/terminate": _instance_operation("Terminate", "Termination sent."),
            "/instances/{instanceId}/suspend": _instance_operation("Suspend", "Suspension sent."),
            "/instances/{instanceId}/resume": _instance_operation("Resume", "Resumption sent."),
            "/instances/{instanceId}/rewind": _instance_operation("Rewind a failed", "Rewind sent."),
            "/instances/{instanceId}/restart": {
                "post": _operation(
                    "Restart an instance with its original input",
                    {
                        "202": _json("Restarted; check-status of the new instance.", _ref("CheckStatus")),
                        "404": _error("No such instance."),
                        "409": _error("Restarting under the same ID while it still runs."),
                    },
                    [
                        _INSTANCE_ID,
                        _query(
                            "restartWithNewInstanceId", {"type": "boolean"}, "Use a new ID (default true)."
                        ),
                        *wait,
                    ],
                )
            },
            "/entities": entity_list,
            "/entities/{entityName}": {
                "get": {
                    **entity_list["get"],
                    "parameters": [entity_path[0], *entity_list["get"]["parameters"]],
                }
            },
            "/entities/{entityName}/{entityKey}": {
                "get": _operation(
                    "Read an entity's state",
                    {"200": _json("The state.", _ANY_JSON), "404": _error("The entity does not exist.")},
                    entity_path,
                ),
                "post": _operation(
                    "Signal an entity operation",
                    {"202": {"description": "Signalled."}, "413": _error("The input is too large.")},
                    [*entity_path, _query("op", {"type": "string"}, "The operation's name.")],
                    body=_JSON_BODY,
                ),
                "delete": _operation(
                    "Signal the entity's delete operation",
                    {"202": {"description": "Signalled."}},
                    entity_path,
                ),
            },
            "/entities/clean": {
                "post": _operation(
                    "Remove empty entities (durable_ext's addition)",
                    {
                        "200": _json(
                            "How many were removed.",
                            {
                                "type": "object",
                                "properties": {"numberOfEmptyEntitiesRemoved": {"type": "integer"}},
                            },
                        )
                    },
                    [_query("minIdleSeconds", {"type": "number", "minimum": 0}, "Idle at least this long.")],
                )
            },
        },
    }
