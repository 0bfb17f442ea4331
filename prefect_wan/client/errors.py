"""Errors raised by prefect-wan, each knowing whether it is worth retrying.

Service errors carry the service's ``code``, ``message`` and ``request_id``; none of them ever
carries the API key.
"""

from __future__ import annotations

from typing import Any, ClassVar


class WanError(Exception):
    """Base class of every error prefect-wan raises on purpose."""

    retryable: ClassVar[bool] = False


class MissingApiKeyError(WanError):
    """No API key in the block and none in ``DASHSCOPE_API_KEY``."""


class PreflightViolation:
    """One broken rule: the field, the offending value and the rule it breaks."""

    __slots__ = ("field", "value", "rule")

    def __init__(self, field: str, value: Any, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule

    def __str__(self) -> str:
        value = self.value
        if isinstance(value, str) and len(value) > 60:
            value = f"{value[:57]}... ({len(self.value)} characters)"
        return f"{self.field}={value!r}: {self.rule}"

    def __repr__(self) -> str:
        return f"PreflightViolation({self})"


class PreflightError(WanError, ValueError):
    """The request breaks one or more of the service's rules; nothing was sent."""

    def __init__(self, violations: list[PreflightViolation]) -> None:
        self.violations = violations
        lines = "\n".join(f"  - {v}" for v in violations)
        super().__init__(f"request refused before sending ({len(violations)} problem(s)):\n{lines}")

    @property
    def fields(self) -> list[str]:
        return [v.field for v in self.violations]


class DashScopeError(WanError):
    """An error answered by DashScope (or met on the way to it)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        request_id: str | None = None,
        status_code: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        self.status_code = status_code
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [f"{self.code}: {self.message}" if self.code else self.message]
        meta = []
        if self.status_code is not None:
            meta.append(f"HTTP {self.status_code}")
        if self.request_id:
            meta.append(f"request_id {self.request_id}")
        if meta:
            parts.append(f"({', '.join(meta)})")
        if self.hint:
            parts.append(f"- {self.hint}")
        return " ".join(parts)

    def __reduce__(self) -> Any:
        # Keep the keyword-only fields when Prefect pickles the exception into a state.
        return (_rebuild_error, (type(self), self.__dict__.copy()))


def _rebuild_error(cls: type[DashScopeError], state: dict[str, Any]) -> DashScopeError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, str(error))
    return error


class RetryableError(DashScopeError):
    """Transient: the same call may succeed later."""

    retryable = True


class ThrottledError(RetryableError):
    """HTTP 429: the account's rate or quota was exceeded."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ServerError(RetryableError):
    """HTTP 5xx: the service failed; the request was not accepted."""


class NetworkError(RetryableError):
    """The connection could not be made or broke during an idempotent call."""


class InvalidParameterError(DashScopeError):
    """HTTP 400 for a malformed or out-of-range request."""


class ContentModerationError(DashScopeError):
    """The input or output was refused by content moderation or IP checks."""


class AuthenticationError(DashScopeError):
    """HTTP 401: missing or wrong key, or a key of another region."""


class AccessDeniedError(DashScopeError):
    """HTTP 403: the key may not use this model, workspace or call style."""


class ModelNotFoundError(DashScopeError):
    """HTTP 404 or ``Model not exist``: wrong model name or region."""


class ArrearsError(DashScopeError):
    """The account is overdue or out of paid quota."""


class UnsupportedOperationError(DashScopeError):
    """The task is not in a state that allows the operation (cancel of a non-PENDING task)."""


class SubmissionOutcomeUnknownError(DashScopeError):
    """The create call was sent but no answer came back: a task may or may not exist.

    Never retried automatically, since a second submission may be a second bill. ``sent_at`` bounds
    the window in which to look for the task with the list API.
    """

    def __init__(
        self, message: str, *, sent_at: str, model: str, candidates: list[str] | None = None, answered: DashScopeError | None = None, **kwargs: Any
    ) -> None:
        self.sent_at = sent_at
        self.model = model
        self.candidates = list(candidates or [])
        self.answered = answered  # the service's own error, when it did answer (a 5xx): ambiguous, not absent
        super().__init__(message, **kwargs)


class TaskError(DashScopeError):
    """A task that ended without a video."""

    def __init__(self, message: str, *, task_id: str, **kwargs: Any) -> None:
        self.task_id = task_id
        super().__init__(message, **kwargs)


class TaskFailedError(TaskError):
    """The task ended FAILED; ``code``/``message`` are the service's."""

    @property
    def worth_resubmitting(self) -> bool:
        # Internal and timeout failures are transient and failed tasks are not billed.
        code = self.code or ""
        return code.startswith("InternalError") or code in _TRANSIENT_CODES


class TaskCanceledError(TaskError):
    """The task was cancelled."""


class VideoMissingError(TaskError):
    """The task SUCCEEDED (and is billed) but its answers carry no ``video_url``. Never resubmitted:
    that would pay again; a later run asks for the same task again."""


class AdoptedTaskMismatchError(TaskError):
    """A task adopted after a lost answer turned out to carry another prompt: it was not ours,
    so ours was never created, and submitting again is safe."""


class TaskExpiredError(TaskError):
    """The task is UNKNOWN: its id expired (24 h) or never existed."""


class PollTimeoutError(TaskError):
    """The task did not finish before the poll deadline; it may still finish remotely."""

    retryable = True


_TRANSIENT_CODES = frozenset({"SystemError", "ModelServiceFailed", "RequestTimeOut", "ModelServingError", "ModelUnavailable"})

_MODERATION_CODES = frozenset({"DataInspectionFailed", "IPInfringementSuspect"})
_ARREARS_CODES = frozenset({"Arrearage", "CommodityNotPurchased", "PrepaidBillOverdue", "PostpaidBillOverdue"})


def error_for(
    status_code: int,
    code: str | None,
    message: str,
    request_id: str | None,
    *,
    retry_after: float | None = None,
    hint: str | None = None,
) -> DashScopeError:
    """Map an HTTP error answer to the matching error class."""
    kwargs: dict[str, Any] = {
        "code": code,
        "request_id": request_id,
        "status_code": status_code,
        "hint": hint,
    }
    code_text = code or ""
    if code_text in _MODERATION_CODES:
        return ContentModerationError(message, **kwargs)
    if code_text in _ARREARS_CODES:
        return ArrearsError(message, **kwargs)
    if status_code == 429:
        if code_text.startswith("Throttling"):
            return ThrottledError(message, retry_after=retry_after, **kwargs)
        return ArrearsError(message, **kwargs)
    if status_code >= 500:
        return ServerError(message, **kwargs)
    if status_code == 401:
        return AuthenticationError(message, **kwargs)
    if status_code == 403:
        return AccessDeniedError(message, **kwargs)
    if status_code == 404 or code_text == "ModelNotFound" or message == "Model not exist.":
        return ModelNotFoundError(message, **kwargs)
    if code_text == "UnsupportedOperation":
        return UnsupportedOperationError(message, **kwargs)
    return InvalidParameterError(message, **kwargs)
