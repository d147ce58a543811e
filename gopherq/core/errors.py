"""The GoPherQ exception hierarchy: one root, a few children, each with a reason the user can act on."""

from __future__ import annotations

from typing import Any


class GoPherQError(Exception):
    """Root of every error GoPherQ raises on purpose."""


class ConfigError(GoPherQError):
    """The settings (file, environment or flags) are invalid; the CLI exits with status 2."""


class PluginError(GoPherQError):
    """A plugin could not be loaded or registered something invalid; start-up stops."""


class BrokerUnavailable(GoPherQError):
    """Redis cannot be reached (or the embedded server cannot be started)."""


class TaskRejected(GoPherQError):
    """A task cannot be accepted: it is dead-lettered by a worker, or refused by the client before Redis.

    `reason` is one of the dead-letter reason codes (`parse_error`, `schema_invalid`, `unknown_type`,
    `too_large`, ...); the message names what is wrong.
    """

    def __init__(self, reason: str, message: str, *, task_id: str | None = None, task_type: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        #: The producer's id and type when the bytes parsed as an object that has them: the dead letter, the
        #: result record and the events keep them, so the producer can still look its task up.
        self.task_id = task_id
        self.task_type = task_type


class TaskFailure(GoPherQError):
    """Raised by an executor to report a failed attempt with a reason code and details.

    The worker retries it (with backoff, or after `delay` seconds when given) until the task's attempts
    or deadline run out. Raise `PermanentFailure` instead when another attempt cannot help.
    """

    retryable = True

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        delay: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.delay = delay
        self.details = details or {}


class RetryTask(TaskFailure):
    """Ask for another attempt, optionally after `delay` seconds (e.g. from a Retry-After header)."""

    def __init__(
        self,
        message: str = "retry requested",
        *,
        reason: str = "retry",
        delay: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason, message, delay=delay, details=details)


class PermanentFailure(TaskFailure):
    """Fail the task now, without retrying: it goes to the dead-letter queue with reason `non_retryable`."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        reason: str = "failed",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(reason, message, details=details)


class NotFound(GoPherQError):
    """An operator action names a queue, task or dead letter that does not exist (a typo): the CLI exits 1, the API
    answers 404, nothing is changed."""
