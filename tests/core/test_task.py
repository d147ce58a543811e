"""The task envelope: the seed's JSON is an HTTP task, ids are assigned and kept, bad fields are named."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gopherq import ErrorInfo, TaskRejected, TaskResult, TaskStatus
from gopherq.core.executor import ExecutorEntry
from gopherq.core.task import RetryBackoff, Task, decode_task, task_from_dict
from gopherq.plugins.http import HttpExecutor, HttpPayload, HttpSettings

SEED = (
    b'{"id":"task001","method":"GET","url":"https://example.com","header":{"X-Custom-Header":"GoPherQTest"},"body":""}'
)


def http_entry() -> ExecutorEntry:
    return ExecutorEntry("http", HttpExecutor(HttpSettings(), concurrency=1), "http")


def test_seed_json_is_an_http_task() -> None:
    task = decode_task(SEED, 1 << 20)
    assert task.id == "task001"
    assert task.type == "http"
    assert not task.id_assigned
    assert task.fields == {
        "method": "GET",
        "url": "https://example.com",
        "header": {"X-Custom-Header": "GoPherQTest"},
        "body": "",
    }
    http_entry().validate(task)
    payload = task.payload
    assert isinstance(payload, HttpPayload)
    assert payload.method == "GET"
    assert payload.headers == {"X-Custom-Header": "GoPherQTest"}


@pytest.mark.parametrize("name", ["header", "headers"])
def test_header_and_headers_are_both_accepted(name: str) -> None:
    task = task_from_dict({"id": "t", "method": "post", "url": "http://127.0.0.1/x", name: {"A": "1"}})
    http_entry().validate(task)
    assert task.payload.headers == {"A": "1"}
    assert task.payload.method == "POST"


def test_a_task_without_id_gets_one_that_survives_encoding() -> None:
    task = decode_task(b'{"method":"GET","url":"http://127.0.0.1/"}', 1 << 20)
    assert task.id_assigned
    assert len(task.id) >= 16
    assert decode_task(b'{"url":"http://127.0.0.1/"}', 1 << 20).id != task.id
    again = decode_task(task.encode(), 1 << 20)
    assert again.id == task.id
    assert not again.id_assigned


def test_two_tasks_without_id_get_different_ids() -> None:
    first = decode_task(b'{"url":"http://127.0.0.1/"}', 1 << 20)
    second = decode_task(b'{"url":"http://127.0.0.1/"}', 1 << 20)
    assert first.id != second.id


def test_integer_id_becomes_a_string() -> None:
    assert task_from_dict({"id": 42, "url": "http://127.0.0.1/"}).id == "42"


def test_round_trip_keeps_every_control_field_and_puts_recoveries_last() -> None:
    task = Task(
        id="abc",
        type="http",
        fields={"method": "GET", "url": "http://127.0.0.1/"},
        queue="q",
        attempt=3,
        max_attempts=7,
        backoff=RetryBackoff(0.5, 9.0),
        timeout=2.5,
        deadline=2_000_000_000.0,
        created_at=1_700_000_000.0,
        recoveries=2,
        last_error={"reason": "timeout", "message": "slow"},
    )
    wire = task.to_wire()
    assert list(wire)[-1] == "recoveries"  # the reaper's Lua raises it in place at the end of the JSON
    back = decode_task(task.encode(), 1 << 20)
    for name in ("id", "type", "fields", "queue", "attempt", "max_attempts", "timeout", "deadline", "recoveries"):
        assert getattr(back, name) == getattr(task, name), name
    assert back.backoff == RetryBackoff(0.5, 9.0)
    assert back.last_error == {"reason": "timeout", "message": "slow"}


def test_deadline_accepts_iso_time_with_zone_and_expires_at_alias() -> None:
    iso = task_from_dict({"id": "t", "url": "u", "deadline": "2030-01-01T00:00:00Z"})
    assert iso.deadline == 1893456000.0
    alias = task_from_dict({"id": "t", "url": "u", "expires_at": 1893456000})
    assert alias.deadline == 1893456000.0
    assert "expires_at" not in alias.fields


@pytest.mark.parametrize(
    ("envelope", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": ["x"]}, "id"),
        ({"type": 5}, "type"),
        ({"queue": 1}, "queue"),
        ({"attempt": 0}, "attempt"),
        ({"attempt": True}, "attempt"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "5s"}, "timeout"),
        ({"deadline": "tomorrow"}, "deadline"),
        ({"deadline": "2030-01-01T00:00:00"}, "deadline"),  # no zone: ambiguous
        ({"backoff": {"min": 5, "max": 1}}, "backoff"),
        ({"backoff": {"low": 1}}, "backoff"),
        ({"last_error": "boom"}, "last_error"),
    ],
)
def test_bad_control_field_is_rejected_naming_it(envelope: dict[str, Any], field: str) -> None:
    with pytest.raises(TaskRejected) as caught:
        task_from_dict({"url": "http://127.0.0.1/", **envelope})
    assert caught.value.reason == "schema_invalid"
    assert f"'{field}'" in caught.value.message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "parse_error"),
        (b"[1, 2]", "schema_invalid"),
        (b'"a string"', "schema_invalid"),
        (b"[" * 2000 + b"]" * 2000, "parse_error"),
        (b'{"url":"' + b"x" * 200 + b'"}', "too_large"),
    ],
)
def test_undecodable_bytes_are_rejected_with_a_dead_letter_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(TaskRejected) as caught:
        decode_task(raw, 100 if reason == "too_large" else 1 << 20)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"method": "GET"}, "url"),
        ({"url": "ftp://127.0.0.1/"}, "url"),
        ({"url": "/relative"}, "url"),
        ({"url": "http://127.0.0.1/", "method": "FETCH"}, "method"),
        ({"url": "http://127.0.0.1/", "headers": {"A": 1}}, "headers"),
        ({"url": "http://127.0.0.1/", "colour": "blue"}, "colour"),
    ],
)
def test_bad_http_payload_is_rejected_naming_the_field(fields: dict[str, Any], named: str) -> None:
    task = task_from_dict({"id": "t", **fields})
    with pytest.raises(TaskRejected) as caught:
        http_entry().validate(task)
    assert caught.value.reason == "schema_invalid"
    assert named in caught.value.message


def test_result_record_round_trips_through_json() -> None:
    record = TaskResult(
        id="t",
        queue="q",
        type="http",
        status=TaskStatus.FAILED,
        attempts=2,
        worker="w",
        started_at=1.0,
        finished_at=2.5,
        duration=1.5,
        result=None,
        error=ErrorInfo("http_status", "HTTP 404", {"status_code": 404}),
        dead_reason="non_retryable",
    )
    back = TaskResult.from_dict(orjson.loads(orjson.dumps(record.to_dict())))
    assert back == record
    assert back.status.final
    assert not TaskStatus.RETRYING.final
