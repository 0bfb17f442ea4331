"""The DashScope protocol: wire models, the async client, preflight and errors."""

from prefect_wan.client.catalog import DEFAULT_MODEL, MODELS, ModelFamily, ModelSpec, lookup_model
from prefect_wan.client.client import DashScopeClient
from prefect_wan.client.errors import (
    AccessDeniedError,
    ArrearsError,
    AuthenticationError,
    ContentModerationError,
    DashScopeError,
    InvalidParameterError,
    MissingApiKeyError,
    ModelNotFoundError,
    NetworkError,
    PollTimeoutError,
    PreflightError,
    RetryableError,
    ServerError,
    SubmissionOutcomeUnknownError,
    TaskCanceledError,
    TaskExpiredError,
    TaskFailedError,
    ThrottledError,
    UnsupportedOperationError,
    WanError,
)
from prefect_wan.client.fingerprint import request_fingerprint
from prefect_wan.client.polling import PollSchedule, wait_for_task
from prefect_wan.client.preflight import PreparedRequest, check_request, prepare
from prefect_wan.client.regions import Region
from prefect_wan.client.request import KeyframeVideoRequest
from prefect_wan.client.results import SubmittedTask, VideoResult
from prefect_wan.client.sizing import predict_output_size
from prefect_wan.client.wire import TaskResponse, TaskStatus

__all__ = [
    "AccessDeniedError",
    "ArrearsError",
    "AuthenticationError",
    "ContentModerationError",
    "DEFAULT_MODEL",
    "DashScopeClient",
    "DashScopeError",
    "InvalidParameterError",
    "KeyframeVideoRequest",
    "MODELS",
    "MissingApiKeyError",
    "ModelFamily",
    "ModelNotFoundError",
    "ModelSpec",
    "NetworkError",
    "PollSchedule",
    "PollTimeoutError",
    "PreflightError",
    "PreparedRequest",
    "Region",
    "RetryableError",
    "ServerError",
    "SubmissionOutcomeUnknownError",
    "SubmittedTask",
    "TaskCanceledError",
    "TaskExpiredError",
    "TaskFailedError",
    "TaskResponse",
    "TaskStatus",
    "ThrottledError",
    "UnsupportedOperationError",
    "VideoResult",
    "WanError",
    "check_request",
    "lookup_model",
    "predict_output_size",
    "prepare",
    "request_fingerprint",
    "wait_for_task",
]
