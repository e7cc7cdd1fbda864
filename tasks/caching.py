"""Cache keys by content: the inputs' digests, the stage's settings and the code that computes it.

Prefect's default policy includes the flow run id, so it never hits across runs (see docs/pitfalls.md). Ours
hashes each task parameter by what it holds: a stage output by its content digest (not its path or
run counters), a settings model by its values, and adds the source of the modules that implement the
stage, so a code change re-runs it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.cache_policies import TASK_SOURCE, CacheKeyFnPolicy, CachePolicy
from prefect.states import State
from pydantic import BaseModel

import docqa
from docqa.hashing import json_digest, sha256_file, tree_digest
from docqa.outputs import BaseModelRef
from docqa.workspace import StageOutput

UNCACHED_PARAMETERS = {"mlflow_uri", "mlflow_run_id"}


def _key_value(value: Any) -> Any:
    if isinstance(value, StageOutput):
        return value.cache_digest
    if isinstance(value, BaseModelRef):
        return value.digest
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_key_value(v) for v in value]
    return value


def inputs_digest(inputs: dict[str, Any]) -> str:
    """Digest of values by content, as the cache keys see them (stage outputs by their digests)."""
    return json_digest({k: _key_value(v) for k, v in inputs.items()})


def module_digest(name: str) -> str:
    """Digest of a module's source, or of every source file of a package."""
    module = importlib.import_module(name)
    if hasattr(module, "__path__"):
        return tree_digest(Path(module.__file__).parent, ("**/*.py",))
    return sha256_file(Path(module.__file__))


def content_policy(*implementation: str) -> CachePolicy:
    """A policy keyed by the task's parameters' content and the named implementation modules."""

    def cache_key(context, parameters: dict[str, Any]) -> str:
        return json_digest(
            {
                "inputs": {k: _key_value(v) for k, v in parameters.items() if k not in UNCACHED_PARAMETERS},
                "code": {name: module_digest(name) for name in implementation},
                "version": docqa.__version__,
            }
        )

    return CacheKeyFnPolicy(cache_key_fn=cache_key) + TASK_SOURCE


class _RunLogHandler(logging.Handler):
    """Hands ``docqa`` records to the task run's logger (terminal, Prefect UI, a worker's log)."""

    def __init__(self, logger) -> None:
        super().__init__(logging.INFO)
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        self.logger.log(record.levelno, record.getMessage())


@contextmanager
def forward_logs() -> Iterator[None]:
    """Inside the block, what the stage code logs to ``docqa`` (progress, notes) reaches this run's log."""
    source = logging.getLogger("docqa")
    handler = _RunLogHandler(get_run_logger())
    level, propagate = source.level, source.propagate
    source.addHandler(handler)
    source.setLevel(logging.INFO)
    source.propagate = False  # the run logger prints it; the root logger would print it twice
    try:
        yield
    finally:
        source.removeHandler(handler)
        source.setLevel(level)
        source.propagate = propagate


def run_cached(task, kwargs: dict[str, Any], logger) -> tuple[State, Any]:
    """Run ``task`` (or take its cached result) and return (state, result or exception).

    A cache hit whose output folder is gone or incomplete (deleted by hand, or a partial synthesis
    that must be retried) runs again instead of handing downstream a path that is not there."""
    state = task(**kwargs, return_state=True)
    output = state.result(raise_on_failure=False)
    if state.name == "Cached" and not (Path(output.path).exists() and output.complete):
        logger.warning("%s: cached output %s is gone or incomplete; running again", task.name, output.path)
        state = task.with_options(refresh_cache=True)(**kwargs, return_state=True)
        output = state.result(raise_on_failure=False)
    return state, output
