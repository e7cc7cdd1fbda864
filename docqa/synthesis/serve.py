"""Start a real OpenAI-compatible server, ``transformers serve``, for as long as a ``with`` block runs.

So that the ``openai`` synthesis backend can be run (and benchmarked) against a local model with no
other server installed. What the server (transformers 5.23) does, found by trying it:

- The model given on the command line is loaded at startup and the server is pinned to it: a request
  must name exactly that string as ``model`` (or none); any other name gets HTTP 400. Replies name it
  ``<model>@main``.
- ``/health`` answers 200 once the model is loaded (about 5-7 s for a tiny model on 2 CPU cores).
- Without ``--continuous-batching`` requests are generated one at a time on a single inference
  thread, so N concurrent requests take as long as N sequential ones. With it (works on CPU too),
  concurrent requests are batched: 8 took about a quarter of the sequential time, 32 about a seventh.
  Continuous batching takes its sampling settings (temperature, top_p) from the *first* request it
  serves, for all later ones.
- ``GET /v1/models`` answers 500 when no hub cache folder exists (it scans the cache): use
  ``/health`` to know the server is up.
- Prompts longer than the model's context are not refused; the model just writes past it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from docqa.child_processes import die_with_parent

HEALTH_POLL_S = 0.25
HEALTH_REQUEST_TIMEOUT_S = 2.0
STOP_GRACE_S = 10.0
LOG_TAIL_CHARS = 3000
# The transformers CLI asks PyPI for a newer version once a day (up to 2 s); a pipeline needs no hint.
QUIET_ENV = {"HF_HUB_DISABLE_UPDATE_CHECK": "1"}


@dataclass(frozen=True)
class ServedModel:
    """A running server: send OpenAI chat-completions to ``base_url`` naming ``model``."""

    base_url: str
    model: str
    log_path: Path
    process: subprocess.Popen


def free_port(host: str) -> int:
    """A port free on ``host`` now (another process could still take it before the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def serve_command(model: str, host: str, port: int, device: str, extra_args: Sequence[str]) -> list[str]:
    """``transformers serve`` run by this interpreter, so that it uses this environment's transformers."""
    cli = [sys.executable, "-m", "transformers.cli.transformers", "serve", model]
    return [*cli, "--host", host, "--port", str(port), "--device", device, *extra_args]


def log_tail(log_path: Path) -> str:
    text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
    return text[-LOG_TAIL_CHARS:] or "(the log is empty)"


def wait_until_healthy(process: subprocess.Popen, health_url: str, log_path: Path, timeout_s: float) -> None:
    """Return once ``health_url`` answers 200; raise with the log's tail if the server dies or is late."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"transformers serve exited with code {process.returncode} before answering {health_url}; "
                f"check the model path or id and that fastapi and uvicorn are installed. "
                f"Its log ({log_path}) ends with:\n{log_tail(log_path)}"
            )
        if _answers_ok(health_url):
            return
        time.sleep(HEALTH_POLL_S)
    raise TimeoutError(
        f"transformers serve did not answer {health_url} within {timeout_s:g}s; a big model may need a "
        f"larger startup_timeout_s. Its log ({log_path}) ends with:\n{log_tail(log_path)}"
    )


def _answers_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=HEALTH_REQUEST_TIMEOUT_S).status_code == 200
    except httpx.TransportError:  # not listening yet: the server is still loading the model
        return False


def stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Terminate the server; kill it if it has not exited after ``grace_s``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def transformers_serve(
    model: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    device: str = "auto",
    startup_timeout_s: float = 120,
    extra_args: Sequence[str] = (),
) -> Iterator[ServedModel]:
    """Run ``transformers serve <model>`` until the block exits; yield where and how to reach it.

    ``model`` is a local folder or a hub id (the environment, ``HF_HUB_OFFLINE`` included, is passed on
    as it is). ``port=None`` picks a free one. ``extra_args`` go to the CLI as they are, e.g.
    ``["--continuous-batching"]`` to serve concurrent requests together. The server's output goes to a
    log file in a new temporary folder, left in place for reading after the block (``log_path``).
    """
    port = port if port is not None else free_port(host)
    log_path = Path(tempfile.mkdtemp(prefix="docqa-serve-")) / "transformers-serve.log"
    command = serve_command(model, host, port, device, extra_args)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**QUIET_ENV, **os.environ},
            preexec_fn=die_with_parent,  # a killed docqa leaves no server
        )
    try:
        wait_until_healthy(process, f"http://{host}:{port}/health", log_path, startup_timeout_s)
        yield ServedModel(
            base_url=f"http://{host}:{port}/v1", model=model, log_path=log_path, process=process
        )
    finally:
        stop(process)
