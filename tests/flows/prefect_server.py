"""A real ``prefect server`` in a subprocess, for flow tests whose tasks run in other processes.

Prefect's test harness serves the API from a thread of the test process; processes started
by a test (Dask workers, a ``prefect worker``) cannot see it and would each start a
temporary server of their own. :func:`running_prefect_server` starts ``prefect server
start`` on a free local port with its own ``PREFECT_HOME`` and telemetry off, waits until
the API answers, yields its URL (``http://127.0.0.1:<port>/api``) and stops it afterwards.
:func:`use_prefect_api` points this process (Prefect's settings) and the processes started
inside the block (the ``PREFECT_API_URL`` environment variable) at that URL::

    with running_prefect_server(tmp_path / "server") as url, use_prefect_api(url):
        with distributed.LocalCluster(n_workers=2, processes=True) as cluster:
            run_prepare(catalog, dask_address=cluster.scheduler_address)

Import it from a flow test as ``from prefect_server import ...`` (pytest puts
``tests/flows`` on ``sys.path``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Environment of the server process besides ``PREFECT_HOME``: no telemetry, no UI, and
#: no scheduler (tests start their runs themselves).
SERVER_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _prefect_command() -> list[str]:
    # The console script of the interpreter running the tests (the project's venv).
    script = Path(sys.executable).with_name("prefect")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from prefect.cli import app; app()"]


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM the server's process group (uvicorn and its children), then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


@contextmanager
def running_prefect_server(
    home: Path, *, host: str = "127.0.0.1", startup_timeout_s: float = 180.0
) -> Iterator[str]:
    """Run ``prefect server start`` until the block ends; yields the API URL.

    Args:
        home: the server's ``PREFECT_HOME`` (its SQLite database and log go there).
        host: interface to listen on.
        startup_timeout_s: how long to wait for the API to answer (a loaded 2-core machine
            needs 10-30 s).

    Raises:
        RuntimeError: the server exited or did not answer in time; the message holds the
            end of its log.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    api_url = f"http://{host}:{port}/api"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PREFECT_API_URL", "PREFECT_PROFILE")
    }
    env.update(SERVER_ENV, PREFECT_HOME=str(home))
    log_path = home / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*_prefect_command(), "server", "start", "--host", host, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _healthy(api_url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                state = "exited" if process.poll() is not None else "did not answer in time"
                raise RuntimeError(f"prefect server on port {port} {state}; log:\n{tail}")
            time.sleep(0.5)
        yield api_url
    finally:
        _stop(process)


def _drain_prefect_workers() -> None:
    """Send the logs and events queued so far, so that none goes to the wrong server."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    EventsWorker.drain_all()


@contextmanager
def use_prefect_api(api_url: str) -> Iterator[None]:
    """Point Prefect at ``api_url`` in this process and in processes started in the block.

    Sets Prefect's ``PREFECT_API_URL`` setting for this process (over the test harness's) and
    the environment variable that child processes inherit; both are restored afterwards.
    Queued logs and events are sent before and after, so that each reaches the server of
    its own run (and none waits for a server that was stopped).
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _drain_prefect_workers()
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            try:
                yield
            finally:
                _drain_prefect_workers()
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
