"""Write a benchmark's section of docs/benchmarks.md, between its own markers, leaving the rest; and merge
its throughput figures into docqa/data/throughputs.json, which `docqa estimate` reads."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
THROUGHPUTS = BENCHMARKS.parent.parent / "docqa" / "data" / "throughputs.json"  # shipped in the package
THROUGHPUTS_ABOUT = (
    "Throughputs the benchmarks in bench/ measured, read by `docqa estimate`. Each benchmark merges its "
    "figures in by key when it runs; docs/benchmarks.md holds the full tables."
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, commit {commit or 'unknown'}"


def write_section(name: str, body: str) -> None:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    stamp = f"_Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}._\n\n"
    section = f"{start}\n{stamp}{body.strip()}\n{end}"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else f"{text.rstrip()}\n\n{section}\n"
    BENCHMARKS.write_text(text)


def command_line(script: str) -> str:
    """How this benchmark was started, for its records: ``python bench/x.py --its --arguments``."""
    return shlex.join(["python", script, *sys.argv[1:]])


def record_figures(section: str, command: str, figures: dict[str, dict], device: str | None = None) -> None:
    """Merge ``figures`` (key -> the fields of ``docqa.estimate.Figure`` but the stamp) into
    docqa/data/throughputs.json, each stamped with its section, the time, the machine and the command.
    Plain JSON, so that a bare GPU machine without docqa's dependencies can record too; `docqa estimate`
    validates the file when it reads it."""
    stamp = {
        "device": device or machine(),
        "source": f"docs/benchmarks.md, section bench:{section}",
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "command": command,
    }
    data = json.loads(THROUGHPUTS.read_text()) if THROUGHPUTS.exists() else {"figures": {}}
    data["about"] = THROUGHPUTS_ABOUT
    data["figures"].update({key: {**stamp, **figure} for key, figure in figures.items()})
    THROUGHPUTS.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def docqa_run(
    workspace: Path, docs: Path, recipe: str, overrides: list[str], quiet: bool = False
) -> tuple[float, dict]:
    """One `docqa run` as a subprocess (imports and Prefect's local server included): its wall seconds
    and its report. ``quiet`` hides its terminal output."""
    command = [sys.executable, "-m", "docqa.cli", "run", "--workspace", str(workspace), "--docs", str(docs),
               "--recipe", recipe]  # fmt: skip
    for override in overrides:
        command += ["--set", override]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL if quiet else None)
    seconds = time.perf_counter() - started
    return seconds, json.loads((workspace / "reports" / "latest.json").read_text())
