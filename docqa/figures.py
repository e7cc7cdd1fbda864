"""What evaluation measures and what the registry's gate decided, as typed models, and the one place
those figures are turned into text, table rows and MLflow metric names (``docs/evaluation.md`` defines
each figure in words).

Three question sets, each answered by the base, by base + pretraining adapter and by the final model
(base + both adapters), with the same greedy decoding:

- ``knowledge`` (the headline): questions about chunks of *training* documents that pretraining read,
  whose Q&A pairs SFT never saw;
- ``memorisation``: a sample of the SFT questions themselves (what the seed project reported);
- ``control``: questions from held-out documents, which no stage trained on; a rise there is style
  (answers in the documents' wording), not knowledge.

``knowledge_gain`` = (final − base on knowledge) − (final − base on control), in strict recall.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

State = Literal["base", "pretrained", "final"]
SetName = Literal["knowledge", "memorisation", "control"]
OpenBook = Literal["oracle", "rag"]
STATES: tuple[State, ...] = ("base", "pretrained", "final")
SETS: tuple[SetName, ...] = ("knowledge", "memorisation", "control")
OPEN_BOOK: tuple[OpenBook, ...] = ("oracle", "rag")
SET_MEANING = {
    "knowledge": "unseen questions about trained documents (chunks pretrained on, Q&A held out of SFT)",
    "memorisation": "SFT's own training questions (memorisation, not knowledge)",
    "control": "questions from held-out documents (never trained on): a rise here is style, not knowledge",
}
OPEN_BOOK_MEANING = {
    "oracle": "the base model given the question's source chunk",
    "rag": "the base model given the top-k training chunks MiniLM retrieves for the question",
}


class RecallSummary(BaseModel):
    recalled: float | None  # share of scored questions whose recall reaches the threshold; None: none scored
    mean_recall: float | None
    scored: int
    unscored: int  # references without a content word to look for


class RougeScores(BaseModel):
    rouge1: float
    rouge2: float
    rougeL: float


class AnswerScores(BaseModel):
    """One model's answers to one question set."""

    strict_recall: RecallSummary  # the reference's content words that are not in the question
    recall: RecallSummary  # every content word of the reference (the earlier definition)
    rouge: RougeScores
    semantic_similarity: float  # MiniLM cosine with the reference, mean
    errors: dict[str, int]  # empty, too_long, repetitive, unrelated


class QuestionSet(BaseModel):
    name: SetName
    questions: int
    answers: dict[State, AnswerScores]

    def recall(self, state: State) -> float | None:
        return self.answers[state].strict_recall.recalled

    def gain(self, state: State = "final") -> float | None:
        """Strict recall of ``state`` minus the base's."""
        return _minus(self.recall(state), self.recall("base"))


class KnowledgeGain(BaseModel):
    """The headline: what training taught about the trained documents, style subtracted."""

    value: float | None  # controlled when a control exists, else the knowledge set's own gain
    controlled: bool
    knowledge: float | None  # final − base on the knowledge set
    control: float | None  # final − base on the control set
    after_pretraining: float | None  # the same figure for base + pretraining adapter
    standard_error: float | None  # of ``value``, from the per-question changes (normal approximation)
    interval_95: tuple[float, float] | None  # value ± 1.96 standard errors
    label: str


class Perplexities(BaseModel):
    """Sliding-window perplexity per model state; ``None``: no such text (no held-out document)."""

    trained_text: dict[State, float]  # training documents' chunks (memorisation of the text)
    heldout_text: dict[State, float] | None  # held-out documents (domain generalisation)
    trained_tokens: int
    heldout_tokens: int


class Forgetting(BaseModel):
    base: float
    pretrained: float
    tuned: float
    ratio: float  # tuned / base
    max_ratio: float
    passed: bool
    source: str
    tokens: int


class EvaluationFigures(BaseModel):
    sets: dict[SetName, QuestionSet]
    omitted: dict[SetName, str]  # a set left out, and why
    knowledge_gain: KnowledgeGain
    open_book: dict[OpenBook, AnswerScores]  # on the knowledge questions
    rag_top_k: int
    rag_recovery: float | None  # the final model's knowledge gain as a share of RAG's
    perplexity: Perplexities
    forgetting: Forgetting
    decontamination: dict[str, int]  # knowledge and control pairs checked and removed (synthesis)
    llm_judge: dict | None = None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


Flags = dict[State, list[float | None]]  # per question: recalled (1.0), not (0.0), unscored (None)


def _paired_changes(flags: Flags) -> list[float]:
    """Per scored question: recalled by the final model minus recalled by the base (-1, 0 or 1)."""
    return [
        f - b for b, f in zip(flags["base"], flags["final"], strict=True) if b is not None and f is not None
    ]


def _variance_of_mean(changes: list[float]) -> float | None:
    if len(changes) < 2:
        return None
    mean = sum(changes) / len(changes)
    return sum((c - mean) ** 2 for c in changes) / (len(changes) - 1) / len(changes)


def knowledge_gain(sets: dict[SetName, QuestionSet], flags: dict[SetName, Flags]) -> KnowledgeGain:
    """``knowledge_gain`` and its parts; ``flags``: per set and state, each question's recall verdict,
    for the standard error (the knowledge and control questions are different questions, so their
    variances add)."""
    knowledge, control = sets.get("knowledge"), sets.get("control")
    k_gain = knowledge.gain() if knowledge else None
    c_gain = control.gain() if control else None
    variances = [_variance_of_mean(_paired_changes(flags[name])) for name in ("knowledge", "control")
                 if name in flags and sets.get(name) is not None]  # fmt: skip
    if control is None:
        value, label = k_gain, "uncontrolled: no held-out document, so style cannot be told from knowledge"
        after = knowledge.gain("pretrained") if knowledge else None
    else:
        value, label = (
            _minus(k_gain, c_gain),
            ("(final − base on knowledge) − (final − base on control), strict recall"),
        )
        after = _minus(knowledge.gain("pretrained") if knowledge else None, control.gain("pretrained"))
    error = None
    if value is not None and variances and None not in variances:
        error = sum(variances) ** 0.5
    return KnowledgeGain(
        value=value,
        controlled=control is not None,
        knowledge=k_gain,
        control=c_gain,
        after_pretraining=after,
        standard_error=error,
        interval_95=(value - 1.96 * error, value + 1.96 * error) if error is not None else None,
        label=label,
    )


def rag_recovery(knowledge: QuestionSet | None, rag: AnswerScores | None) -> float | None:
    """The final model's closed-book gain as a share of RAG's open-book gain over the base; None when
    RAG gains nothing (nothing to recover)."""
    if knowledge is None or rag is None:
        return None
    rag_gain = _minus(rag.strict_recall.recalled, knowledge.recall("base"))
    gain = knowledge.gain()
    if rag_gain is None or gain is None or rag_gain <= 0:
        return None
    return gain / rag_gain


# --- formatting: the one place figures become names, rows and text --------------------------------


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _text(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def metric_values(figures: EvaluationFigures) -> dict[str, float]:
    """Flat MLflow metric names: ``knowledge_gain``, ``recall_knowledge_final``, ``ppl_trained_base``…"""
    metrics: dict[str, float | None] = {
        "knowledge_gain": figures.knowledge_gain.value,
        "knowledge_gain_after_pretraining": figures.knowledge_gain.after_pretraining,
        "knowledge_gain_standard_error": figures.knowledge_gain.standard_error,
        "rag_recovery": figures.rag_recovery,
        "forgetting_ratio": figures.forgetting.ratio,
        "forgetting_passed": float(figures.forgetting.passed),
    }
    for name, question_set in figures.sets.items():
        metrics[f"questions_{name}"] = question_set.questions
        for state, scores in question_set.answers.items():
            metrics.update(_answer_metrics(f"{name}_{state}", scores))
    for name, scores in figures.open_book.items():
        metrics.update(_answer_metrics(f"knowledge_{name}", scores))
    for state, value in figures.perplexity.trained_text.items():
        metrics[f"ppl_trained_{state}"] = value
    for state, value in (figures.perplexity.heldout_text or {}).items():
        metrics[f"ppl_heldout_{state}"] = value
    for state in ("base", "pretrained", "tuned"):
        metrics[f"ppl_general_{state}"] = getattr(figures.forgetting, state)
    if figures.llm_judge is not None:
        metrics.update(
            {f"llm_judge_{s}": figures.llm_judge[s] for s in STATES if figures.llm_judge.get(s) is not None}
        )
    return {key: value for key, value in metrics.items() if value is not None}


def _answer_metrics(prefix: str, scores: AnswerScores) -> dict[str, float | None]:
    return {
        f"recall_{prefix}": scores.strict_recall.recalled,
        f"mean_recall_{prefix}": scores.strict_recall.mean_recall,
        f"lenient_recall_{prefix}": scores.recall.recalled,
        f"rougeL_{prefix}": scores.rouge.rougeL,
        f"similarity_{prefix}": scores.semantic_similarity,
    }


def recall_rows(figures: EvaluationFigures) -> list[dict[str, str]]:
    """One row per question set (and open-book reference): strict and lenient recall per model state."""
    rows = []
    for name in SETS:
        question_set = figures.sets.get(name)
        if question_set is None:
            rows.append(
                {"set": name, "questions": "0", **dict.fromkeys(STATES, "—"), "gain": figures.omitted[name]}
            )
            continue
        row = {"set": name, "questions": str(question_set.questions)}
        for state in STATES:
            scores = question_set.answers[state]
            row[state] = f"{_text(scores.strict_recall.recalled)} ({_text(scores.recall.recalled)})"
        row["gain"] = _text(question_set.gain(), signed=True)
        rows.append(row)
    knowledge = figures.sets.get("knowledge")
    for name, scores in figures.open_book.items():
        rows.append(
            {
                "set": f"knowledge, open book: {name}",
                "questions": str(knowledge.questions if knowledge else 0),
                "base": f"{_text(scores.strict_recall.recalled)} ({_text(scores.recall.recalled)})",
                "pretrained": "",
                "final": "",
                "gain": _text(_minus(scores.strict_recall.recalled, knowledge.recall("base")), signed=True)
                if knowledge
                else "",
            }
        )
    return rows


def headline_lines(figures: EvaluationFigures) -> list[str]:
    """The few lines a person reads first (terminal and Prefect)."""
    gain = figures.knowledge_gain
    lines = [
        f"knowledge_gain {_text(gain.value, signed=True)}{_interval(gain)} ({gain.label}): knowledge set "
        f"{_text(gain.knowledge, signed=True)}, control {_text(gain.control, signed=True)}, after "
        f"pretraining alone {_text(gain.after_pretraining, signed=True)}",
        f"rag_recovery {_text(figures.rag_recovery)} (closed-book gain as a share of RAG's, top-"
        f"{figures.rag_top_k})",
    ]
    ppl = figures.perplexity
    lines.append(
        "perplexity, trained documents: "
        + " → ".join(f"{s} {v:.2f}" for s, v in ppl.trained_text.items())
        + (
            "; held-out documents: " + " → ".join(f"{s} {v:.2f}" for s, v in ppl.heldout_text.items())
            if ppl.heldout_text
            else "; no held-out document"
        )
    )
    forgetting = figures.forgetting
    lines.append(
        f"forgetting (general-text perplexity): base {forgetting.base:.2f} → tuned {forgetting.tuned:.2f}, "
        f"ratio {forgetting.ratio:.3f} (gate ≤ {forgetting.max_ratio}): "
        + ("passed" if forgetting.passed else "FAILED")
    )
    return lines


def _interval(gain: KnowledgeGain) -> str:
    if gain.interval_95 is None:
        return ""
    low, high = gain.interval_95
    return f", 95% interval {low:+.3f} to {high:+.3f}"


class EvaluateKeyFigures(BaseModel):
    """The evaluate stage's key figures in the run table (and a sweep's comparison row)."""

    knowledge_gain: float | None
    knowledge_base: float | None
    knowledge_final: float | None
    control_final: float | None
    memorisation_final: float | None
    rag_recovery: float | None
    forgetting_ratio: float | None
    forgetting_gate: Literal["passed", "FAILED"]


def stage_figures(figures: EvaluationFigures) -> EvaluateKeyFigures:
    """The evaluate stage's key figures in the run table."""
    knowledge = figures.sets.get("knowledge")
    memorisation = figures.sets.get("memorisation")
    control = figures.sets.get("control")
    return EvaluateKeyFigures(
        knowledge_gain=_round(figures.knowledge_gain.value),
        knowledge_base=_round(knowledge.recall("base")) if knowledge else None,
        knowledge_final=_round(knowledge.recall("final")) if knowledge else None,
        control_final=_round(control.recall("final")) if control else None,
        memorisation_final=_round(memorisation.recall("final")) if memorisation else None,
        rag_recovery=_round(figures.rag_recovery),
        forgetting_ratio=_round(figures.forgetting.ratio, 3),
        forgetting_gate="passed" if figures.forgetting.passed else "FAILED",
    )


# --- the registry's gate -------------------------------------------------------------------------


class Verdict(BaseModel):
    alias: Literal["champion", "challenger"]
    reasons: list[str]
    champion_version: str | None  # the champion compared against (None: there was none)
    compared_on: Literal["same-heldout", "rescored", "none"]
    candidate: dict[str, float]
    champion: dict[str, float] | None


class DataDiff(BaseModel):
    """What the new version was trained and evaluated on, against the champion's data."""

    champion_version: str | None
    documents_added: list[str]
    documents_removed: list[str]
    documents_unchanged: int
    qa: dict[str, dict[str, int]]  # split → {"candidate": n, "champion": n}


class RegistryRecord(BaseModel):
    """What registering a run did: the new model version, the alias it got, why, and its data against
    the champion's (the report's ``registry``, and ``registry/promotion-*.json`` in MLflow)."""

    model_name: str
    version: str
    alias: Literal["champion", "challenger"]
    model_uri: str
    verdict: Verdict
    data_diff: DataDiff

    def summary(self) -> str:
        """One line: the version, its alias and the gate's reasons."""
        return f"{self.model_uri} is {self.alias} ({'; '.join(self.verdict.reasons)})"
