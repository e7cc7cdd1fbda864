"""The LLM API key: read from the environment only, and removed from every text docqa writes.

The key never enters settings (so never Prefect parameters or MLflow params); :func:`redact` is applied
to server replies and error reasons, to the run report, to MLflow params and tags and to Prefect
artifacts, in case a server, a URL or a user put it somewhere it does not belong.
"""

from __future__ import annotations

import os

API_KEY_ENV = "DOCQA_LLM_API_KEY"
MASK = "***"


def api_key() -> str | None:
    return os.environ.get(API_KEY_ENV) or None


def redact(text: str) -> str:
    key = api_key()
    return text.replace(key, MASK) if key else text
