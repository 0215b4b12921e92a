"""Where the project keeps its working files and finds the shared development data.

- The working folder (``MOCAP2TO3_HOME``, default ``./work``) holds prepared stores,
  training runs, archives written by default, and Prefect's state (``PREFECT_HOME``).
- The shared data folder (``MOCAP2TO3_SHARED_DATA``, default ``../shared/data`` beside the
  repository) holds third-party motion capture for development. It may be absent (a user's
  fresh clone); everything that needs it reports that and skips.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def work_dir() -> Path:
    """The project's working folder (created on first use)."""
    path = Path(os.environ.get("MOCAP2TO3_HOME", Path.cwd() / "work")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_data_dir() -> Path:
    """The shared development data folder; it may not exist."""
    env = os.environ.get("MOCAP2TO3_SHARED_DATA")
    if env:
        return Path(env).resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def configure_prefect_environment() -> None:
    """Point Prefect at the working folder and turn telemetry off.

    Must run before Prefect is imported: Prefect reads ``PREFECT_HOME`` when it loads its
    settings. Values the user already set are kept.
    """
    home = Path(os.environ.get("MOCAP2TO3_HOME", Path.cwd() / "work")).resolve()
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    # Prefect creates its home without parents and fails quietly if they are missing.
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary local server Prefect starts per process needs a few seconds; allow
    # for a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
