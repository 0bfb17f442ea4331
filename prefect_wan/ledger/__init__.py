"""The project's persistent shared state: submission records written before every create, the
submit locks (file and Redis), atomic replacement and process liveness.

Imports only ``client``: blocks configure it, tasks and flows use it.
"""

from prefect_wan.ledger.journal import (
    AttemptState,
    JournalError,
    SubmissionAttempt,
    SubmissionJournal,
    SubmissionRecord,
)
from prefect_wan.ledger.keys import submission_key
from prefect_wan.ledger.locks import SubmitLockManager, default_lock_manager

__all__ = [
    "AttemptState",
    "JournalError",
    "SubmissionAttempt",
    "SubmissionJournal",
    "SubmissionRecord",
    "SubmitLockManager",
    "default_lock_manager",
    "submission_key",
]
