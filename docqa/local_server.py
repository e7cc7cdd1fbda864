"""The local Prefect server ``docqa run`` uses when no ``PREFECT_API_URL`` is set.

It is Prefect's own server, started the way Prefect starts its ephemeral one (uvicorn on
``prefect.server.api.server:create_app``, UI off, the database in ``PREFECT_HOME``), with two differences:
it is given as long as ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` says to migrate a new
database, and on Linux it is tied to the process that started it (``PR_SET_PDEATHSIG``), so a ``docqa``
killed with ``kill -9`` leaves no server behind. Prefect's ephemeral server stops only through an
``atexit`` hook, which a killed process never runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from docqa.child_processes import die_with_parent
from docqa.synthesis.serve import free_port, stop

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
POLL_S = 0.2
STOP_WAIT_S = 10
DRAIN_WAIT_S = 10


class LocalServerError(RuntimeError):
    """The local Prefect server did not start; the message says what to do."""


def server_command(port: int) -> list[str]:
    # found, not imported: Prefect reads PREFECT_API_URL once, on import, and it is not set yet
    prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent
    return [
        sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent),
        "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip


@contextlib.contextmanager
def local_prefect_server(log_path: Path) -> Iterator[str]:
    """Start the server, wait until it answers, point ``PREFECT_API_URL`` at it; stop it afterwards."""
    timeout_s = float(os.environ.get(STARTUP_TIMEOUT_ENV, "20"))
    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            server_command(port), env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
    try:
        _wait_until_healthy(url, process, timeout_s, log_path)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        _drain_prefect_clients()
        os.environ.pop("PREFECT_API_URL", None)
        stop(process, STOP_WAIT_S)


def _drain_prefect_clients() -> None:
    """Send the logs and events still queued in this process while the server is up: a log worker left
    with work retries a stopped server for over a minute before the process may exit."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=DRAIN_WAIT_S)
    EventsWorker.drain_all(timeout=DRAIN_WAIT_S)


def _wait_until_healthy(url: str, process: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LocalServerError(
                    f"the local Prefect server exited with code {process.returncode} while starting; "
                    f"its log: {log_path}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{url}/health").status_code == 200:
                    return
            time.sleep(POLL_S)
    raise LocalServerError(
        f"the local Prefect server did not answer within {timeout_s:g} s (its log: {log_path}). Run again "
        f"with a longer wait (export {STARTUP_TIMEOUT_ENV}=600), or start a server once (prefect server "
        "start) and point docqa at it (export PREFECT_API_URL=http://127.0.0.1:4200/api)."
    )
