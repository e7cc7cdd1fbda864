"""Servers docqa starts as child processes die with it, even when it is killed (``kill -9``)."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` of a child: receive SIGTERM when the parent dies (Linux; elsewhere nothing). Without
    it a killed ``docqa`` leaves its Prefect or model server running."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
