"""The throughputs file: the figures the benchmarks in bench/ measured, which the estimate scales.

The file ships inside the package (``docqa/data/throughputs.json``), so a wheel or a Docker image finds it;
each benchmark merges its figures in by key when it runs (``bench.report.record_figures``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

DEFAULT_THROUGHPUTS = Path(__file__).resolve().parent.parent / "data" / "throughputs.json"

MEASURE = {
    "ingest": "python bench/ingest_scaling.py",
    "chunk": "python bench/pipeline_cache.py",
    "extractive": "python bench/pipeline_cache.py",
    "openai": "python bench/synthesis_concurrency.py --base-url {base_url} --model {model} --concurrency {n}",
    "transformers": "serve the model (vLLM, `transformers serve`) and run "
    "python bench/synthesis_concurrency.py --base-url URL --model NAME",
    "train-cpu": "python bench/sft_packing.py",
    "train-gpu": "python bench/gpu_qlora.py on a GPU machine (its docstring gives the set-up)",
    "generate": "python bench/generation_batching.py on the target device (it measures the bootstrap base)",
}

Device = Literal["cpu", "gpu"]
Metric = Literal[
    "pages_per_s",
    "chunks_per_s",
    "requests_per_s",
    "tokens_per_s",
    "questions_per_s",
    "acceptance_rate",
    "tokens_per_example",
    "run_seconds",
    "parallel_efficiency",
]
UNITS: dict[str, str] = {
    "pages_per_s": "pages/s",
    "chunks_per_s": "chunks/s",
    "requests_per_s": "requests/s",
    "tokens_per_s": "tokens/s",
    "questions_per_s": "answers/s",
    "acceptance_rate": "accepted pairs per requested pair",
    "tokens_per_example": "tokens per example",
    "run_seconds": "s per run",
    "parallel_efficiency": "of linear speed-up",
}


# --- the throughput file ------------------------------------------------------------------------------


class Figure(BaseModel):
    """One measured figure, as a benchmark recorded it."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["ingest", "chunk", "synthesize", "train", "generate", "sft", "pipeline"]
    metric: Metric
    value: float
    device_kind: Literal["cpu", "gpu", "server"]
    device: str  # the machine, in words
    model: str  # what ran: a base, a served model, a test double
    parameters: int | None = None  # of that model, when it is one
    backend: str | None = None  # synthesis backend
    conditions: dict[str, Any] = {}  # batch size, lengths, concurrency, ... as measured
    note: str = ""
    source: str  # where the figure is published
    date: str
    command: str


class ThroughputFile(BaseModel):
    """docqa/data/throughputs.json: each benchmark merges its figures in by key
    (``bench.report.record_figures``)."""

    model_config = ConfigDict(extra="forbid")

    about: str
    figures: dict[str, Figure]


def load_figures(path: Path) -> tuple[dict[str, Figure], str | None]:
    """The figures in ``path``, and why there are none when the file is missing (a bad file raises)."""
    if not path.is_file():
        return {}, f"{path} does not exist"
    return ThroughputFile.model_validate_json(path.read_text(encoding="utf-8")).figures, None


def candidates(figures: dict[str, Figure], **wanted: Any) -> list[tuple[str, Figure]]:
    """The figures whose fields equal ``wanted``, with their keys."""
    return [(k, f) for k, f in figures.items() if all(getattr(f, n) == v for n, v in wanted.items())]
