"""Retries only on I/O: a flaky disk or network is worth another try, a bug or bad data not."""

from __future__ import annotations

from typing import Any


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry when the run failed with an ``OSError``."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            error = state.result(raise_on_failure=False)
        except Exception:  # the state holds no readable result: do not retry blindly
            return False
    return isinstance(error, OSError)


IO_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": 5,
    "retry_condition_fn": retry_on_io_error,
}
