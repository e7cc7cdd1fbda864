"""Choosing a measured figure for each stage and scaling it to the recipe's model, or saying why not.

A rate comes from a named measurement, used as measured or scaled by a stated rule (FLOPs per token: 6·N
for training, 2·N for a forward pass, N the parameter count), or it is ``Unknown`` with the reason and the
benchmark command that would measure it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from docqa.estimate.figures import MEASURE, UNITS, Device, Figure, candidates
from docqa.settings import IngestSettings, Recipe
from docqa.stages.ingest import extraction_processes

# --- synthesis, when throughputs.json holds no acceptance figure, and SFT example length ------------------
ASSUMED_ACCEPTANCE = 0.8  # accepted pairs per requested pair
ASSUMED_QUESTION_WORDS = 15
ASSUMED_ANSWER_SHARE = 0.5  # of synthesize.max_answer_words
CHARS_PER_WORD = 6  # English, space included
# --- scaling measurements between model sizes ---------------------------------------------------------
TRAIN_FLOPS_PER_PARAMETER = 6  # forward + backward, per token
FORWARD_FLOPS_PER_PARAMETER = 2
# Beyond a factor of ten in size, fixed per-step costs (Python, kernel launches, 4-bit dequantisation)
# break the proportionality of time to FLOPs: such a scaled figure would be a guess.
MAX_SCALE = 10.0


@dataclass(frozen=True)
class Rate:
    value: float
    unit: str
    label: str  # how the figure was used
    keys: tuple[str, ...]  # the figures it came from


@dataclass(frozen=True)
class Unknown:
    reason: str


@dataclass
class RateBook:
    """The measured figures, and which of them an estimate used."""

    figures: dict[str, Figure]
    missing: str | None  # why there are no figures at all
    used: set[str] = field(default_factory=set)

    def use(self, rate: Rate | Unknown) -> Rate | Unknown:
        if isinstance(rate, Rate):
            self.used.update(rate.keys)
        elif self.missing:
            return Unknown(f"{rate.reason} ({self.missing})")
        return rate


def fmt_count(value: float) -> str:
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _size_ratio(figure: Figure, parameters: int | None) -> float:
    if figure.parameters is None or parameters is None:
        return math.inf
    ratio = figure.parameters / parameters
    return max(ratio, 1 / ratio)


def scaled_rate(
    key: str, figure: Figure, parameters: int | None, flops: int, extra: float = 1.0, extra_label: str = ""
) -> Rate | Unknown:
    """``figure`` as is for a model of its size, else scaled by N_measured / N (time ∝ flops·N·T)."""
    if figure.parameters is None or parameters is None:
        return Unknown(
            f"{key} was measured on {figure.model}; the parameter count needed to compare is unknown"
        )
    factor = figure.parameters / parameters
    if _size_ratio(figure, parameters) > MAX_SCALE:
        return Unknown(
            f"the nearest figure, {key}, was measured at {fmt_count(figure.parameters)} parameters; "
            f"{fmt_count(parameters)} is more than {MAX_SCALE:g}× away, too far to scale"
        )
    value = figure.value * factor * extra
    how = "measured"
    if factor != 1:
        how = (
            f"scaled ×{factor:.3g} from {fmt_count(figure.parameters)} to {fmt_count(parameters)} "
            f"parameters ({flops}·N FLOPs per token)"
        )
    if extra_label:
        how += f"; {extra_label}"
    return Rate(value, UNITS[figure.metric], f"{how}: {key}", (key,))


def training_rate(
    figures: dict[str, Figure], device: Device, parameters: int | None, packing: bool
) -> Rate | Unknown:
    found = candidates(figures, stage="train", metric="tokens_per_s", device_kind=device)
    if not found:
        return Unknown(
            f"no {device.upper()} training throughput in the throughputs file; measure it: "
            f"{MEASURE['train-' + device]}"
        )
    key, figure = min(
        found, key=lambda kf: (_size_ratio(kf[1], parameters), kf[1].conditions.get("packing") != packing)
    )
    caveat = ""
    if figure.conditions.get("packing") != packing:
        caveat = f"measured with packing={figure.conditions.get('packing')}, the stage uses packing={packing}"
    rate = scaled_rate(key, figure, parameters, TRAIN_FLOPS_PER_PARAMETER, extra_label=caveat)
    if isinstance(rate, Unknown):
        return Unknown(f"{rate.reason}; measure it: {MEASURE['train-' + device]}")
    return rate


def generation_rate(
    figures: dict[str, Figure], device: Device, parameters: int | None, batch_size: int, new_tokens: int
) -> Rate | Unknown:
    found = candidates(figures, stage="generate", metric="questions_per_s", device_kind=device)
    if not found:
        return Unknown(
            f"no {device.upper()} generation throughput measured; measure it: {MEASURE['generate']}"
        )
    key, figure = min(
        found,
        key=lambda kf: (
            _size_ratio(kf[1], parameters),
            abs(kf[1].conditions.get("batch_size", 0) - batch_size),
        ),
    )
    measured_tokens = figure.conditions["max_new_tokens"]
    caveats = []
    if measured_tokens != new_tokens:  # decoding dominates: time ∝ new tokens
        caveats.append(
            f"×{measured_tokens / new_tokens:.3g} for {new_tokens} new tokens, not {measured_tokens}"
        )
    if figure.conditions.get("batch_size") != batch_size:
        caveats.append(
            f"measured at batch {figure.conditions.get('batch_size')}, the recipe uses {batch_size}"
        )
    factor = measured_tokens / new_tokens
    rate = scaled_rate(key, figure, parameters, FORWARD_FLOPS_PER_PARAMETER, factor, "; ".join(caveats))
    if isinstance(rate, Unknown):
        return Unknown(f"{rate.reason}; measure it: {MEASURE['generate']}")
    return rate


def scoring_rate(figures: dict[str, Figure], device: Device, parameters: int | None) -> Rate | Unknown:
    """Forward-only tokens/s, from a training figure: 2·N FLOPs per token against 6·N."""
    rate = training_rate(figures, device, parameters, packing=True)
    if isinstance(rate, Unknown):
        return rate
    factor = TRAIN_FLOPS_PER_PARAMETER / FORWARD_FLOPS_PER_PARAMETER
    label = f"training rate ×{factor:g} (a forward pass is 2·N FLOPs per token, training 6·N); {rate.label}"
    return Rate(rate.value * factor, rate.unit, label, rate.keys)


def cpu_stage_rate(
    figures: dict[str, Figure], stage: str, metric: str, measure: str, **wanted: Any
) -> Rate | Unknown:
    """The latest CPU figure of a stage that runs on the CPU whatever the recipe (time ∝ its quantity)."""
    found = candidates(figures, stage=stage, metric=metric, device_kind="cpu", **wanted)
    if not found:
        return Unknown(f"no {stage} throughput measured; measure it: {measure}")
    key, figure = max(found, key=lambda kf: kf[1].date)
    return Rate(figure.value, UNITS[figure.metric], f"measured: {key}", (key,))


def ingest_rate_of(figures: dict[str, Figure], settings: IngestSettings, documents: int) -> Rate | Unknown:
    """Pages/s with the recipe's ``ingest.workers`` processes (0: this machine's cores): the measured
    one-process rate × processes × the measured parallel efficiency (linear when none was measured)."""
    found = candidates(figures, stage="ingest", metric="pages_per_s", device_kind="cpu")
    per_process = [(k, f) for k, f in found if f.conditions.get("processes") == 1]
    if not per_process:  # a whole-stage figure (bench/pipeline_cache.py), one process
        return cpu_stage_rate(figures, "ingest", "pages_per_s", MEASURE["ingest"])
    key, figure = max(per_process, key=lambda kf: kf[1].date)
    processes = extraction_processes(settings, documents)
    if processes == 1:
        return Rate(figure.value, UNITS["pages_per_s"], f"measured: {key}", (key,))
    efficiency = candidates(figures, stage="ingest", metric="parallel_efficiency")
    if not efficiency:
        label = f"measured: {key} × {processes} processes (linear speed-up assumed: not measured)"
        return Rate(figure.value * processes, UNITS["pages_per_s"], label, (key,))
    eff_key, eff = max(efficiency, key=lambda kf: kf[1].date)
    used = min(eff.value, 1.0)  # a noisy run can measure more than linear; never promise that
    label = (
        f"measured: {key} × {processes} processes × {used:.2f} ({eff_key}, at "
        f"{eff.conditions.get('processes')} processes)"
    )
    return Rate(figure.value * processes * used, UNITS["pages_per_s"], label, (key, eff_key))


def synthesis_rate(figures: dict[str, Figure], recipe: Recipe, device: Device) -> Rate | Unknown:
    settings = recipe.synthesize
    if settings.backend == "extractive":
        return cpu_stage_rate(
            figures, "synthesize", "requests_per_s", MEASURE["extractive"], backend="extractive"
        )
    kind = "server" if settings.backend == "openai" else device
    found = candidates(
        figures,
        stage="synthesize",
        metric="requests_per_s",
        backend=settings.backend,
        device_kind=kind,
        model=settings.model,
    )
    if not found:
        command = MEASURE[settings.backend].format(
            base_url=settings.base_url, model=settings.model, n=settings.concurrency
        )
        return Unknown(
            f"no throughput measured for {settings.model} ({settings.backend}); measure it: {command}"
        )
    key, figure = min(
        found, key=lambda kf: abs(kf[1].conditions.get("concurrency", 1) - settings.concurrency)
    )
    label = f"measured: {key}"
    if figure.conditions.get("concurrency") != settings.concurrency:
        label += (
            f"; at {figure.conditions.get('concurrency')} in flight, the recipe sends {settings.concurrency}"
        )
    return Rate(figure.value, UNITS[figure.metric], label, (key,))


def acceptance(figures: dict[str, Figure], recipe: Recipe) -> tuple[float, str, tuple[str, ...]]:
    """Accepted pairs per requested pair: measured with this generator, else with another model of the same
    backend (labelled so), else assumed. Backends differ too much (rules against an LLM) to share figures."""
    settings = recipe.synthesize
    found = candidates(figures, stage="synthesize", metric="acceptance_rate", backend=settings.backend)
    same = [(k, f) for k, f in found if settings.backend == "extractive" or f.model == settings.model]
    if found:
        key, figure = max(same or found, key=lambda kf: kf[1].date)
        how = "measured" if same else f"measured with {figure.model}, not {settings.model}"
        return figure.value, f"{how}: {key} ({figure.date})", (key,)
    reason = f"no {settings.backend} acceptance figure in the throughputs file"
    return ASSUMED_ACCEPTANCE, f"ASSUMED {ASSUMED_ACCEPTANCE:g}: {reason}", ()


def sft_example_tokens(
    figures: dict[str, Figure], recipe: Recipe, parameters: int | None, chars_per_token: float
) -> tuple[float, str, tuple[str, ...]]:
    """Tokens in one SFT example: measured with this generator and a model of this size (so the same
    tokenizer, in practice), else from assumed lengths."""
    for key, figure in candidates(figures, stage="sft", metric="tokens_per_example"):
        if figure.backend == recipe.synthesize.backend and figure.parameters == parameters:
            return figure.value, f"measured: {key} ({figure.date})", (key,)
    words = ASSUMED_QUESTION_WORDS + ASSUMED_ANSWER_SHARE * recipe.synthesize.max_answer_words
    tokens = (words * CHARS_PER_WORD + len(recipe.model.prompt_template)) / chars_per_token
    source = (
        f"ASSUMED {tokens:.0f} tokens: a {ASSUMED_QUESTION_WORDS}-word question, an answer of "
        f"{ASSUMED_ANSWER_SHARE:g} × max_answer_words, the prompt template, {CHARS_PER_WORD} characters a "
        f"word, {chars_per_token:.2f} characters a token"
    )
    return tokens, source, ()


def chunk_rate(figures: dict[str, Figure], recipe: Recipe) -> Rate | Unknown:
    """Chunks/s, corrected for chunk size: tokenising dominates, so time ∝ chunks × chunk_tokens."""
    rate = cpu_stage_rate(figures, "chunk", "chunks_per_s", MEASURE["chunk"])
    if isinstance(rate, Unknown):
        return rate
    measured = figures[rate.keys[0]].conditions["chunk_tokens"]
    factor = measured / recipe.chunk.chunk_tokens
    if factor == 1:
        return rate
    label = f"×{factor:.3g} for {recipe.chunk.chunk_tokens}-token chunks (time ∝ tokens); {rate.label}"
    return Rate(rate.value * factor, rate.unit, label, rate.keys)
