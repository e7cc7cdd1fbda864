"""Servers docqa starts die with it: a parent killed with kill -9 takes its child along."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import psutil
import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("tied", [True, False])
def test_a_child_started_with_die_with_parent_dies_when_its_parent_is_killed(tied):
    parent_code = textwrap.dedent(f"""
        import subprocess, sys, time
        from docqa.child_processes import die_with_parent
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                 preexec_fn=die_with_parent if {tied} else None)
        print(child.pid, flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    try:
        child.wait(timeout=10 if tied else 2)
        died = True
    except psutil.TimeoutExpired:
        died = False
        child.kill()
    assert died is tied  # untied, the child outlives its killed parent: what docqa's servers used to do
