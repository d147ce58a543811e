"""The OpenAPI 3.1 description of the `/v1` API (served at /v1/openapi.json; a test checks it and the routes agree)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_CREATED = {"$ref": "#/components/schemas/Created"}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: What the server's middlewares answer on any route, as plain text (see web/security.py and web/app.py).
_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_EVERY_ROUTE = {
    "401": {"description": "authentication required (Authorization: Bearer <token>)", "content": _TEXT},
    "421": {"description": "without a token the server answers loopback host names only", "content": _TEXT},
}
_REDIS_DOWN = {
    "503": {"description": "Redis cannot be reached now; the same request can be sent again", "content": _TEXT}
}


def _errors(*codes: int, redis: bool = True) -> dict[str, Any]:
    """The JSON error answers `codes` of a route, the middlewares' 401 and 421, and their 503 when Redis is down
    (`redis`: the route reads Redis)."""
    meaning = {
        400: 'a body that is not JSON or not a task object / {"tasks": [...]}, an invalid queue name, or a bad query'
        " parameter",
        404: "unknown task (or its result expired)",
        409: "the task has already ended",
        413: "the body is over api.max_body_bytes, or the batch over api.max_batch",
        415: "the body is not application/json",
        422: "a task fails validation (the message names the field)",
        503: (
            "Redis failed the call. reason 'unavailable' (with Retry-After): no command reached Redis, nothing was "
            "created, send the same request again. reason 'outcome_unknown': the call was sent but not confirmed "
            "(e.g. Redis timed out), so the tasks may or may not exist; resend_safe is true (with Retry-After) when "
            "every task has its own id, making a resend safe within api.idempotency_window, and false otherwise "
            "(a resend may create tasks twice); ids names the tasks"
        ),
    }
    answers = {**_EVERY_ROUTE, **(_REDIS_DOWN if redis else {})}
    answers.update({str(code): _answer(meaning[code], _ERROR) for code in codes})
    return answers


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
_KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 200}}
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
                    **_errors(400, 413, 415, 422, 503),
                },
            }
        },
        "/v1/queues": {
            "get": {
                "operationId": "listQueues",
                "summary": "Every queue that has anything: counts, latency, orphaned tasks and totals of each",
                "responses": {"200": _answer("the queues", {"type": "object"}), **_errors()},
            }
        },
        "/v1/queues/{queue}": {
            "get": {
                "operationId": "getQueue",
                "summary": "A queue's counts, latency (overall and per priority level), orphaned tasks and totals",
                "parameters": [_QUEUE],
                "responses": {"200": _answer("the queue", {"type": "object"}), **_errors(400)},
            }
        },
        "/v1/tasks/{task_id}": {
            "get": {
                "operationId": "getTask",
                "summary": "A task's state, envelope, result and recent events (secrets masked)",
                "description": "Each stored field is bounded: a text to 16 KiB, a field (envelope, result, dead "
                "letter) to 64 KiB, an event to 8 KiB; `truncated` maps the path of each cut to the full size "
                '(`{"bytes": n}` or `{"items": n}`). A dead letter\'s stored bytes are served whole by '
                "GET /v1/queues/{queue}/dead/{entry_id}/raw.",
                "parameters": [_TASK_ID, _QUEUE_QUERY, _EVENTS],
                "responses": {"200": _answer("the task", {"type": "object"}), **_errors(400, 404)},
            },
            "delete": {
                "operationId": "cancelTask",
                "summary": "Cancel a task that has not started",
                "parameters": [_TASK_ID, _QUEUE_QUERY],
                "responses": {
                    "200": _answer("cancelled", {"type": "object"}),
                    "202": _answer("cancellation requested: a worker records it", {"type": "object"}),
                    **_errors(400, 409),
                },
            },
        },
        "/v1/queues/{queue}/dead/{entry_id}/raw": {
            "get": {
                "operationId": "getDeadLetterRaw",
                "summary": "A dead letter's stored bytes (secrets masked), as a download",
                "description": "What GET /v1/tasks/{task_id} shows of them is cut (its `truncated` says where); "
                "this is what is stored: at most worker.max_payload_bytes, or the first 4 KiB of a task that was "
                "larger (its dead letter has `raw_size` and `raw_sha256` of the whole).",
                "parameters": [
                    _QUEUE,
                    {"name": "entry_id", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "the bytes, as an attachment",
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    **_errors(400, 404),
                },
            }
        },
        "/v1/queues/{queue}/keys": {
            "get": {
                "operationId": "listFairKeys",
                "summary": "The queue's fair keys, most backlogged first: backlog, running, weight, limits",
                "parameters": [
                    _QUEUE,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                    },
                ],
                "responses": {"200": _answer("the keys", {"type": "object"}), **_errors(400)},
            }
        },
        "/v1/queues/{queue}/keys/{key}": {
            "get": {
                "operationId": "getFairKey",
                "summary": "One fair key: backlog, running, weight, limits, why it is set aside, oldest wait",
                "parameters": [_QUEUE, _KEY],
                "responses": {"200": _answer("the key", {"type": "object"}), **_errors(400)},
            },
            "put": {
                "operationId": "setFairKey",
                "summary": "Change a fair key's weight and limits from now on (fields left out stay as they are)",
                "parameters": [_QUEUE, _KEY],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeySettings"}}},
                },
                "responses": {"200": _answer("what applies now", {"type": "object"}), **_errors(400)},
            },
            "delete": {
                "operationId": "resetFairKey",
                "summary": "Forget a fair key's run-time settings: the [fair] rules apply again",
                "parameters": [_QUEUE, _KEY],
                "responses": {"200": _answer("what applies now", {"type": "object"}), **_errors(400)},
            },
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "responses": {"200": _answer("OpenAPI 3.1", {"type": "object"}), **_errors(redis=False)},
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "KeySettings": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "weight": {"type": "number", "exclusiveMinimum": 0},
                    "concurrency": {"type": "integer", "minimum": 0, "description": "0: no limit"},
                    "rate": {"type": ["string", "number", "null"], "description": '"5/s", "300/m", "10/h"; 0: none'},
                    "burst": {"type": "integer", "minimum": 1},
                    "ordered": {"type": "boolean"},
                    "paused": {"type": "boolean"},
                },
            },
            "Task": {
                "type": "object",
                "description": "A task envelope, as in the README's task format (http: method, url, headers, ...)",
                "properties": {
                    "id": {"type": "string", "maxLength": 200},
                    "type": {"type": "string", "default": "http"},
                    "max_attempts": {"type": "integer", "minimum": 1},
                    "timeout": {"type": "number"},
                    "eta": {"type": "number"},
                    "fair_key": {"type": "string", "maxLength": 200},
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
                            "resend_safe": {"type": "boolean"},
                            "ids": {"type": "array", "items": {"type": "string"}},
                        },
                    }
                },
            },
        },
    },
}
