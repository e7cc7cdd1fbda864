"""The fixture set of model replies (``tests/fixtures/replies/*.yaml``), shared by the parser's tests and
its recovery benchmark.

Each YAML file holds a list of cases: ``name``, ``style`` (what the model did), ``tags`` (the reply
styles the case covers), ``reply`` (verbatim), ``expected`` (the ``{question, answer}`` pairs a careful
reader recovers; empty when nothing well-formed is there) and optionally ``reason_contains`` (a piece
of the reason ``parse_reply`` gives when it returns no pairs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from docqa.synthesis.base import QAPair

REPLY_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "replies"
CASE_KEYS = {"name", "style", "tags", "reply", "expected", "reason_contains"}


@dataclass(frozen=True)
class Case:
    name: str
    style: str
    tags: tuple[str, ...]
    reply: str
    expected: tuple[QAPair, ...]
    reason_contains: str | None
    source: str  # the fixture file it came from


def normalise(text: str) -> str:
    """Whitespace collapsed: how fields are compared (line breaks in an answer are not content)."""
    return " ".join(text.split())


def pair_key(pair: QAPair) -> tuple[str, str]:
    return normalise(pair.question), normalise(pair.answer)


def _case(entry: dict, source: str) -> Case:
    where = f"{source}: case {entry.get('name', '?')!r}"
    if (
        not isinstance(entry, dict)
        or set(entry) - CASE_KEYS
        or not {"name", "style", "tags", "reply"} <= set(entry)
    ):
        raise ValueError(f"{where}: a case has the keys {sorted(CASE_KEYS)} (reason_contains optional)")
    expected = entry.get("expected") or []
    if any(not isinstance(item, dict) or set(item) != {"question", "answer"} for item in expected):
        raise ValueError(f"{where}: each expected pair has exactly a question and an answer")
    if entry.get("reason_contains") and expected:
        raise ValueError(f"{where}: reason_contains is only for cases that expect no pairs")
    return Case(
        name=entry["name"],
        style=entry["style"],
        tags=tuple(entry["tags"]),
        reply=entry["reply"],
        expected=tuple(QAPair(question=str(i["question"]), answer=str(i["answer"])) for i in expected),
        reason_contains=entry.get("reason_contains"),
        source=source,
    )


def _entries(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as stream:  # a YAML error then names the file
        return yaml.safe_load(stream) or []


def load_reply_fixtures(folder: Path = REPLY_FIXTURES) -> list[Case]:
    """Every case of every ``*.yaml`` file in ``folder``, in file order; names must be unique."""
    cases = [_case(entry, path.name) for path in sorted(folder.glob("*.yaml")) for entry in _entries(path)]
    names = [case.name for case in cases]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"reply fixture names must be unique; repeated: {repeated}")
    return cases
