"""Copy as curl: an HTTP task envelope rendered as a shell command (quoted, masked values kept masked, environment
headers as shell expansions), and an edit of a masked envelope getting its stored secrets back."""

from __future__ import annotations

import shlex

from gopherq.core.inspect.editing import editable_view, edited_envelope
from gopherq.core.masking import Masker
from gopherq.plugins.http.command import curl_command


def test_curl_quotes_everything_and_keeps_masks() -> None:
    envelope = {
        "method": "post",
        "url": "https://api.example.com/x?q=1&r='2'",
        "headers": {"Authorization": "********", "X-Note": "it's $HOME `id`", "X-Key": {"env": "API_KEY"}},
        "body": {"order": 1},
        "timeout": 2.5,
        "follow_redirects": True,
    }
    command = curl_command(envelope)
    assert command is not None
    words = shlex.split(command)
    assert words[:3] == ["curl", "--request", "POST"]
    assert "Authorization: ********" in words and "X-Note: it's $HOME `id`" in words
    assert "X-Key: $API_KEY" in words  # expanded by the operator's shell, from their own environment
    assert "Content-Type: application/json" in words and '{"order":1}' in words
    assert words[-1] == "https://api.example.com/x?q=1&r='2'" and "--location" in words and "2.5" in words
    assert curl_command({"method": "GET"}) is None


def test_an_edit_keeps_the_stored_secrets_it_left_masked() -> None:
    masker = Masker()
    stored = {
        "id": "t1",
        "type": "http",
        "attempt": 3,
        "url": "https://user:pw@example.com/a?token=abc",
        "headers": {"Authorization": "Bearer real"},
    }
    shown = editable_view(stored, masker)
    assert "id" not in shown and "attempt" not in shown and shown["headers"]["Authorization"] == "********"
    edited = {**shown, "body": "new"}
    out = edited_envelope(stored, edited, masker)
    assert out["headers"]["Authorization"] == "Bearer real" and out["url"] == stored["url"] and out["body"] == "new"
    changed = edited_envelope(stored, {**shown, "headers": {"Authorization": "Bearer typed"}}, masker)
    assert changed["headers"]["Authorization"] == "Bearer typed"
