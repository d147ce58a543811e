"""Standard Webhooks signing, shared by the webhook sink and the http executor's signed tasks and callbacks."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 text after the `whsec_` prefix, decoded."""
    text = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ValueError(f"must be '{SECRET_PREFIX}' followed by a base64 key (e.g. {SECRET_PREFIX}" + "MfKQ9r8...)")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>"))."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


__all__ = ["SECRET_PREFIX", "secret_key", "sign"]
