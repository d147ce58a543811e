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
        403: "the credentials are a viewer's (web.viewer_token): read-only, nothing was changed",
        404: "unknown queue, task, dead letter, destination or schedule (or its result expired); nothing was changed",
        409: "the task has already ended or is not waiting, or a schedule's unique task is still queued or running",
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

_PAGING = [
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
]
_DEAD_FILTER = [
    {"name": "reason", "in": "query", "schema": {"type": "string"}, "description": "dead-letter reason code"},
    {"name": "host", "in": "query", "schema": {"type": "string"}, "description": "host of the task's URL"},
    {"name": "status", "in": "query", "schema": {"type": "integer"}, "description": "the last error's status code"},
    {"name": "text", "in": "query", "schema": {"type": "string"}, "description": "text in the error (any case)"},
    {"name": "older_than", "in": "query", "schema": {"type": "string"}, "description": "e.g. 90s, 15m, 2h, 1d"},
    {"name": "newer_than", "in": "query", "schema": {"type": "string"}, "description": "e.g. 90s, 15m, 2h, 1d"},
]
_CURSOR = {"name": "cursor", "in": "query", "schema": {"type": "number"}, "description": "an answer's next_cursor"}
_ENTRY_ID = {"name": "entry_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _dead_action(operation: str, verb: str) -> dict[str, Any]:
    return {
        "operationId": operation,
        "summary": f"{verb} dead letters by id, or those matching a filter in one bounded window (audited)",
        "parameters": [_QUEUE],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "ids": {"type": "array", "items": {"type": "string"}, "maxItems": 1000},
                            "filter": {"type": "object"},
                            "cursor": {"type": "number"},
                        },
                    }
                }
            },
        },
        "responses": {
            "200": _answer("what was done (`next_cursor`: the next window, null at the end)", {"type": "object"}),
            **_errors(400, 403, 413, 415),
        },
    }


def _pause(operation: str, summary: str) -> dict[str, Any]:
    return {
        "operationId": operation,
        "summary": f"{summary} (audited)",
        "parameters": [_QUEUE],
        "responses": {"200": _answer("done", {"type": "object"}), **_errors(400, 403, 404)},
    }


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "GoPherQ enqueue API",
        "version": "1",
        "description": "Enqueue, look up and cancel GoPherQ tasks over HTTP, and operate queues (lists, why a task "
        "waits, dead letters by filter, requeue, delete, edit, pause). Creation is idempotent by task id. A viewer "
        "token (web.viewer_token) reads everything and gets 403 for every change.",
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
                    **_errors(400, 403, 413, 415, 422, 503),
                },
            },
            "get": {
                "operationId": "listTasks",
                "summary": "A page of the queue's ready, delayed (or retrying, scheduled, held) or running tasks",
                "description": "Each delayed task says why it waits (`waiting`: retrying, scheduled or held; `held`: "
                "the limit, flow key and end of a hold; `last_error`). retrying/scheduled/held are found among the "
                "10,000 soonest due. ready: every level in turn, most urgent first; within a level the tasks without "
                "a fair key, then each fair key's (next turn first, then parked keys), each line naming its "
                "`fair_key`; `total` is the queue's ready count; `next_cursor` (a string) goes on at a bounded cost "
                "however many fair keys there are.",
                "parameters": [
                    _QUEUE,
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {
                            "type": "string",
                            "enum": ["ready", "delayed", "retrying", "scheduled", "held", "running"],
                            "default": "ready",
                        },
                    },
                    *_PAGING,
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string", "maxLength": 2048},
                        "description": "state=ready only: a ready page's next_cursor (offset is then ignored)",
                    },
                ],
                "responses": {"200": _answer("a page", {"$ref": "#/components/schemas/Page"}), **_errors(400)},
            },
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
                "summary": "A task's state, whereabouts, envelope, call, result and recent events (secrets masked)",
                "description": "`where` is the live task's whereabouts record, parsed (`place`: ready, delayed or "
                "running, with its level, reason, due time, worker and token: see docs/operations.md), null once it "
                "has ended; `call` what it called, as its executor describes it (masked). "
                "Each stored field is bounded: a text to 16 KiB, a field (envelope, result, dead "
                "letter) to 64 KiB, an event to 8 KiB; `truncated` maps the path of each cut to the full size "
                '(`{"bytes": n}` or `{"items": n}`). A dead letter\'s stored bytes are served whole by '
                "GET /v1/queues/{queue}/dead/{entry_id}/raw.",
                "parameters": [_TASK_ID, _QUEUE_QUERY, _EVENTS],
                "responses": {"200": _answer("the task", {"type": "object"}), **_errors(400, 404)},
            },
            "delete": {
                "operationId": "cancelTask",
                "summary": "Cancel a task (audited: an operator.action event names the token's role)",
                "parameters": [_TASK_ID, _QUEUE_QUERY],
                "responses": {
                    "200": _answer("cancelled", {"type": "object"}),
                    "202": _answer("cancellation requested: a worker records it", {"type": "object"}),
                    **_errors(400, 403, 404, 409),
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
        "/v1/tasks/{task_id}/explain": {
            "get": {
                "operationId": "explainTask",
                "summary": "The one thing the task waits for",
                "description": "`waiting_for`: paused, no_worker, backlog, retrying, scheduled, held, due, running, "
                "orphaned, dead, succeeded or cancelled; `message`: one sentence; `details`: the facts (times in Unix "
                "seconds).",
                "parameters": [_TASK_ID, _QUEUE_QUERY],
                "responses": {"200": _answer("the explanation", {"type": "object"}), **_errors(400, 404)},
            }
        },
        "/v1/queues/{queue}/dead": {
            "get": {
                "operationId": "listDeadLetters",
                "summary": "Dead letters, newest first; with a filter, the matches in one bounded window",
                "description": "A filtered answer looks at up to 1,000 dead letters from `cursor` and gives "
                "`next_cursor` to go on (absent at the end).",
                "parameters": [_QUEUE, *_PAGING, *_DEAD_FILTER, _CURSOR],
                "responses": {"200": _answer("a page", {"$ref": "#/components/schemas/Page"}), **_errors(400)},
            }
        },
        "/v1/queues/{queue}/dead/requeue": {"post": _dead_action("requeueDeadLetters", "Requeue")},
        "/v1/queues/{queue}/dead/delete": {"post": _dead_action("deleteDeadLetters", "Delete")},
        "/v1/queues/{queue}/dead/{entry_id}/command": {
            "get": {
                "operationId": "getDeadLetterCommand",
                "summary": "The dead task as a command line (an HTTP task: curl), secrets masked",
                "parameters": [_QUEUE, _ENTRY_ID],
                "responses": {"200": _answer("the command", {"type": "object"}), **_errors(400, 404)},
            }
        },
        "/v1/queues/{queue}/dead/{entry_id}/editable": {
            "get": {
                "operationId": "getDeadLetterEditable",
                "summary": "The dead task to edit: masked, without the id and the fields GoPherQ keeps",
                "parameters": [_QUEUE, _ENTRY_ID],
                "responses": {"200": _answer('{"task": {...}}', {"type": "object"}), **_errors(400, 404)},
            }
        },
        "/v1/queues/{queue}/dead/{entry_id}/edit": {
            "post": {
                "operationId": "editDeadLetter",
                "summary": "Enqueue an edit of a dead task as a new task; the dead letter is kept",
                "description": "Values left as GET .../editable showed them (masked) keep their stored value.",
                "parameters": [_QUEUE, _ENTRY_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object", "required": ["task"]}}},
                },
                "responses": {
                    "201": _answer("enqueued", {"type": "object"}),
                    **_errors(400, 403, 404, 413, 415, 422),
                },
            }
        },
        "/v1/queues/{queue}/pause": {"post": _pause("pauseQueue", "Pause a queue: workers stop claiming from it")},
        "/v1/queues/{queue}/resume": {"post": _pause("resumeQueue", "Resume a paused queue")},
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
                "responses": {"200": _answer("what applies now", {"type": "object"}), **_errors(400, 403)},
            },
            "delete": {
                "operationId": "resetFairKey",
                "summary": "Forget a fair key's run-time settings: the [fair] rules apply again",
                "parameters": [_QUEUE, _KEY],
                "responses": {"200": _answer("what applies now", {"type": "object"}), **_errors(400, 403)},
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
            "Page": {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": {"type": "object"}},
                    "total": {"type": "integer"},
                    "offset": {"type": "integer"},
                    "limit": {"type": "integer"},
                    "next_cursor": {"type": ["number", "string"]},
                },
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


def _with_flows() -> None:
    """Merge the `/v1/flows` routes' part (web/openapi_flows.py, kept apart to keep this module short)."""
    from gopherq.web.openapi_flows import FLOW_PATHS

    OPENAPI["paths"].update(FLOW_PATHS)


_with_flows()
