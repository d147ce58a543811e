"""The OpenAPI 3.1 description of the `/v1` API (served at /v1/openapi.json; a test checks it and the routes agree)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_CREATED = {"$ref": "#/components/schemas/Created"}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: 'a body that is not JSON or not a task object / {"tasks": [...]}, or a bad query parameter',
        401: "authentication required (Authorization: Bearer <token>)",
        404: "unknown task (or its result expired)",
        409: "the task has already ended",
        413: "the body is over api.max_body_bytes, or the batch over api.max_batch",
        415: "the body is not application/json",
        422: "a task fails validation (the message names the field)",
        501: "this server cannot cancel tasks",
        503: "Redis cannot take the tasks now (Retry-After): nothing was created; send the same request again",
    }
    return {str(code): _answer(meaning[code], _ERROR) for code in codes}


_QUEUE = {
    "name": "queue",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:\\-]{1,128}$"},
}
_QUEUE_QUERY = {
    "name": "queue",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "default: queue.name",
}
_EVENTS = {
    "name": "events",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 20},
    "description": "how many of the task's latest events to include",
}
_TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "GoPherQ enqueue API",
        "version": "1",
        "description": "Enqueue, look up and cancel GoPherQ tasks over HTTP. Creation is idempotent by task id.",
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/queues/{queue}/tasks": {
            "post": {
                "operationId": "createTasks",
                "summary": "Enqueue one task, or a batch in one Redis round trip",
                "parameters": [_QUEUE],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/Task"},
                                    {
                                        "type": "object",
                                        "required": ["tasks"],
                                        "properties": {
                                            "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}}
                                        },
                                    },
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "201": _answer(
                        "created (a batch: at least one task created)", {"$ref": "#/components/schemas/Created"}
                    ),
                    "200": _answer(
                        "every task id was already created within the idempotency window: nothing enqueued",
                        {"$ref": "#/components/schemas/Created"},
                    ),
                    **_errors(400, 401, 413, 415, 422, 503),
                },
            }
        },
        "/v1/queues": {
            "get": {
                "operationId": "listQueues",
                "summary": "Every queue that has anything: counts, latency, orphaned tasks and totals of each",
                "responses": {"200": _answer("the queues", {"type": "object"}), **_errors(401)},
            }
        },
        "/v1/queues/{queue}": {
            "get": {
                "operationId": "getQueue",
                "summary": "A queue's counts, latency (overall and per priority level), orphaned tasks and totals",
                "parameters": [_QUEUE],
                "responses": {"200": _answer("the queue", {"type": "object"}), **_errors(401)},
            }
        },
        "/v1/tasks/{task_id}": {
            "get": {
                "operationId": "getTask",
                "summary": "A task's state, envelope, result and recent events (secrets masked)",
                "parameters": [_TASK_ID, _QUEUE_QUERY, _EVENTS],
                "responses": {"200": _answer("the task", {"type": "object"}), **_errors(400, 401, 404)},
            },
            "delete": {
                "operationId": "cancelTask",
                "summary": "Cancel a task that has not started",
                "parameters": [_TASK_ID, _QUEUE_QUERY],
                "responses": {
                    "200": _answer("cancelled", {"type": "object"}),
                    "202": _answer("cancellation requested: a worker records it", {"type": "object"}),
                    **_errors(401, 409, 501),
                },
            },
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "responses": {"200": _answer("OpenAPI 3.1", {"type": "object"})},
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Task": {
                "type": "object",
                "description": "A task envelope, as in the README's task format (http: method, url, headers, ...)",
                "properties": {
                    "id": {"type": "string", "maxLength": 200},
                    "type": {"type": "string", "default": "http"},
                    "max_attempts": {"type": "integer", "minimum": 1},
                    "timeout": {"type": "number"},
                    "eta": {"type": "number"},
                    "method": {"type": "string"},
                    "url": {"type": "string"},
                    "headers": {"type": "object"},
                    "body": {},
                },
                "additionalProperties": True,
            },
            "Created": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "created": {"type": ["boolean", "array"]},
                    "ids": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["reason", "message"],
                        "properties": {
                            "reason": {"type": "string"},
                            "message": {"type": "string"},
                            "index": {"type": "integer"},
                        },
                    }
                },
            },
        },
    },
}
