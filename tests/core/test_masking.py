"""The one masking function: secret headers anywhere in a structure, URL userinfo and secret query parameters."""

from __future__ import annotations

from gopherq.core.masking import MASK, MAX_URL_NESTING, Masker, plain_url
from gopherq.core.settings import load_settings


def test_secret_headers_are_masked_wherever_they_sit() -> None:
    masker = Masker(headers=["X-Api-Key"])
    data = {
        "headers": {"Authorization": "Bearer abc", "cookie": "sid=c", "X-API-KEY": "k", "Accept": "text/plain"},
        "result": {"headers": {"Set-Cookie": ["a=1", "b=2"], "Content-Type": "text/plain"}},
        "list": [{"Proxy-Authorization": "Basic eA=="}],
    }
    masked = masker.value(data)
    assert masked["headers"] == {"Authorization": MASK, "cookie": MASK, "X-API-KEY": MASK, "Accept": "text/plain"}
    assert masked["result"]["headers"] == {"Set-Cookie": MASK, "Content-Type": "text/plain"}
    assert masked["list"] == [{"Proxy-Authorization": MASK}]
    assert data["headers"]["Authorization"] == "Bearer abc", "the input is not changed"


def test_url_userinfo_and_secret_query_parameters_are_masked() -> None:
    masker = Masker(query_params=["token", "sig"])
    assert (
        masker.url("http://user:pw@127.0.0.1:8/x?token=t&page=2")
        == f"http://user:{MASK}@127.0.0.1:8/x?token={MASK}&page=2"
    )
    assert masker.url("https://tok@example.com/") == f"https://{MASK}@example.com/"
    assert masker.url("https://example.com/a?page=1") == "https://example.com/a?page=1"
    assert masker.url("https://example.com/a?SIG=abc") == f"https://example.com/a?SIG={MASK}"


def test_the_plain_url_shortcut_skips_only_urls_with_nothing_to_mask() -> None:
    """Masker.url returns a plain URL without parsing it: never one the full masking would change."""
    masker = Masker(query_params=["token"])
    plain = ["http://127.0.0.1:8080/r1/42", "https://example.com", "https://example.com:8443/a/b#frag", "HTTP://h/x"]
    other = [
        "http://u:p@h/x",
        "http://h/x?token=t",
        "http://h/cb/https://u:p@i/",
        "http://h/cb/https%3A%2F%2Fu:p@i/",
        "x:y://u:p@h/",
        "h/x://u:p@i/",
        "://h",
        "h+s://u:p@h/",
    ]
    for url in plain:
        assert plain_url(url), url
        assert masker.url(url) == url == masker._url(url, MAX_URL_NESTING)
    for url in other:
        assert not plain_url(url), url
        assert masker.url(url) == masker._url(url, MAX_URL_NESTING)
    assert MASK in masker.url("h/x://u:p@i/") and MASK in masker.url("http://h/cb/https%3A%2F%2Fu:p@i/")


def test_urls_inside_free_text_are_masked() -> None:
    masker = Masker()
    text = "ConnectError: cannot reach 'http://user:hunter2@10.0.0.1:9/x?api_key=zzz' (refused)"
    masked = masker.value({"error": {"message": text}})["error"]["message"]
    assert "hunter2" not in masked and "zzz" not in masked
    assert masked.startswith("ConnectError: cannot reach 'http://user:") and masked.endswith("' (refused)")
    assert masker.text("no url here") == "no url here"


def test_the_masking_table_configures_the_masker() -> None:
    settings = load_settings(None, {"masking": {"headers": ["X-Partner-Secret"], "query_params": ["code"]}})
    masker = Masker.from_settings(settings)
    assert masker.value({"x-partner-secret": "s", "Authorization": "a"}) == {
        "x-partner-secret": MASK,
        "Authorization": MASK,
    }
    assert masker.url("http://h/?code=1&token=2") == f"http://h/?code={MASK}&token=2"
