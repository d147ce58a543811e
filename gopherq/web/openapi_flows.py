"""The `/v1/flows` routes' part of the OpenAPI document (web/flows_api.py), merged into OPENAPI by openapi.py."""

from __future__ import annotations

from typing import Any

from gopherq.web.openapi import _ERROR, _QUEUE_QUERY, _answer, _errors

_FLOW_ID = {"name": "flow_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 100}}

_MEMBER = {
    "type": "object",
    "required": ["node", "task"],
    "properties": {
        "node": {"type": "string", "pattern": "^[A-Za-z0-9_:\\-]{1,64}$"},
        "task": {"$ref": "#/components/schemas/Task"},
        "depends_on": {"type": "array", "items": {"type": "string"}},
        "policy": {
            "description": "fail_fast (default), all_settled, ignore_failures or quorum:N",
            "type": "string",
        },
        "open": {"type": "boolean", "description": "an open join: children may be added until it is sealed"},
    },
    "additionalProperties": False,
}

_NODE = {"name": "node", "in": "path", "required": True, "schema": {"type": "string"}}

_CHILD = {
    "type": "object",
    "required": ["node", "task"],
    "properties": {"node": {"type": "string"}, "task": {"$ref": "#/components/schemas/Task"}},
    "additionalProperties": False,
}

FLOW_PATHS: dict[str, Any] = {
    "/v1/flows/{flow_id}/joins/{node}/children": {
        "post": {
            "operationId": "addFlowChildren",
            "summary": "Add children to an open join of a running flow (each is ready at once)",
            "parameters": [_FLOW_ID, _NODE, _QUEUE_QUERY],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["tasks"],
                            "properties": {"tasks": {"type": "array", "items": _CHILD}},
                        }
                    }
                },
            },
            "responses": {
                "200": _answer("how many children were new", {"type": "object"}),
                "409": _answer("the join is not open (sealed, unknown) or the flow is cancelled", _ERROR),
                **_errors(400, 413, 415, 422),
            },
        }
    },
    "/v1/flows/{flow_id}/joins/{node}/seal": {
        "post": {
            "operationId": "sealFlowJoin",
            "summary": "Seal an open join: it runs once its parents are final",
            "parameters": [_FLOW_ID, _NODE, _QUEUE_QUERY],
            "responses": {
                "200": _answer("sealed", {"type": "object"}),
                "409": _answer("the join is not open", _ERROR),
                **_errors(400),
            },
        }
    },
    "/v1/flows": {
        "post": {
            "operationId": "createFlow",
            "summary": "Create a whole flow (a DAG of tasks) in one request, idempotently by flow id",
            "description": "Each member's task is validated as any producer's; its id is <flow id>.<node>. A join "
            "runs when its parents are final, under its policy; see docs/flows.md.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["tasks"],
                            "properties": {
                                "id": {"type": "string", "pattern": "^[A-Za-z0-9_.:\\-]{1,100}$"},
                                "queue": {"type": "string"},
                                "tasks": {"type": "array", "items": _MEMBER},
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": _answer("created", {"type": "object"}),
                "200": _answer("a flow of that id exists: nothing created", {"type": "object"}),
                **_errors(400, 413, 415, 422),
            },
        },
        "get": {
            "operationId": "listFlows",
            "summary": "The queue's open then finished flows, with their states",
            "parameters": [_QUEUE_QUERY],
            "responses": {"200": _answer("the flows", {"type": "object"}), **_errors(400)},
        },
    },
    "/v1/flows/{flow_id}": {
        "get": {
            "operationId": "getFlow",
            "summary": "A flow's state and each member's (node, task id, state, children, policy)",
            "parameters": [_FLOW_ID, _QUEUE_QUERY],
            "responses": {"200": _answer("the flow", {"type": "object"}), **_errors(400, 404)},
        },
        "delete": {
            "operationId": "cancelFlow",
            "summary": "Cancel a flow: members not started never will, running ones are asked to cancel",
            "parameters": [_FLOW_ID, _QUEUE_QUERY],
            "responses": {
                "202": _answer("cancelled", {"type": "object"}),
                "409": _answer("the flow has already ended (succeeded or cancelled)", _ERROR),
                **_errors(400, 404),
            },
        },
    },
}
