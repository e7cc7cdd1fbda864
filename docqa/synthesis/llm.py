"""Q&A from a chat model: the prompt, the reading of its reply, and the optional LLM judge.

:class:`LLMBackend` is the synthesis :class:`~docqa.synthesis.base.Backend` for every chat client (an
OpenAI-compatible server or a local ``transformers`` model): it asks for ``pairs_per_chunk`` pairs as a
JSON list and reads whatever came back with :func:`~docqa.synthesis.parsing.parse_reply`. A reply with
no readable pair is kept as ``unparsed`` with its reason; a request that got no reply is ``failed``.

The judge (``synthesize.judge``) is the seed documents' curation step: the same model scores each pair
from 1 to 5 for being answerable from the passage, correct and self-contained.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import json_repair
from lingua import IsoCode639_1, Language
from pydantic import BaseModel

from docqa.settings import SynthesizeSettings
from docqa.synthesis.base import ChatClient, ChatReply, ChatRequest, ChunkRequest, ChunkResult
from docqa.synthesis.parsing import parse_reply

PROMPT_VERSION = "qa-json-v2"
JUDGE_PROMPT_VERSION = "judge-1to5-v1"

SYSTEM_PROMPT = (
    "You write question-answer pairs that teach the content of technical documents. You reply with JSON only."
)
USER_PROMPT = """Document: {title}

Passage:
\"\"\"
{text}
\"\"\"

Write exactly {n} question-answer pairs about this passage, in {language}.
- Every question must be answerable solely from the passage.
- Every question must be self-contained: name its subject explicitly, and never mention \
"the passage", "the text", "the document" or "the author".
- Every answer states the fact from the passage in at most {max_words} words.
- Do not repeat a question.

Reply with a JSON list only, no other text:
[{{"question": "...", "answer": "..."}}]"""

JUDGE_SYSTEM_PROMPT = "You grade training data for a question-answering model. You reply with JSON only."
JUDGE_PROMPT = """Passage:
\"\"\"
{text}
\"\"\"

Question: {question}
Answer: {answer}

Score this question-answer pair from 1 (useless) to 5 (excellent):
- 5: the question names its subject and can be understood without the passage, and the answer is \
correct and complete according to the passage.
- 3: answerable and correct, but vague or incomplete.
- 1: wrong, unsupported by the passage, or meaningless without it.

Reply with JSON only: {{"score": <1-5>, "reason": "<one sentence>"}}"""
_SCORE = re.compile(r"\b([1-5])\b")


def language_name(code: str) -> str:
    """``"en"`` → ``"English"``: the name the prompt asks for."""
    try:
        language = Language.from_iso_code_639_1(IsoCode639_1.from_str(code))
    except ValueError as err:
        raise ValueError(f"synthesize.language {code!r} is not an ISO 639-1 code lingua knows") from err
    return language.name.title()


def qa_messages(request: ChunkRequest, settings: SynthesizeSettings) -> list[dict[str, str]]:
    user = USER_PROMPT.format(
        title=request.doc_title or "(untitled)",
        text=request.text,
        n=settings.pairs_per_chunk,
        language=language_name(settings.language),
        max_words=settings.max_answer_words,
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


class LLMBackend:
    """Chunks in, :class:`ChunkResult` out, through any :class:`ChatClient`."""

    def __init__(self, client: ChatClient, settings: SynthesizeSettings) -> None:
        self.client = client
        self.settings = settings

    def identity(self) -> dict[str, str]:
        return {"backend": self.settings.backend, **self.client.identity(), "prompt_version": PROMPT_VERSION}

    def generate(self, requests: list[ChunkRequest]) -> Iterator[ChunkResult]:
        chats = [ChatRequest(request_id=r.chunk_id, messages=qa_messages(r, self.settings)) for r in requests]
        for reply in self.client.complete(chats):
            yield self._result(reply)

    def _result(self, reply: ChatReply) -> ChunkResult:
        common = {"chunk_id": reply.request_id, "attempts": reply.attempts, "latency_s": reply.latency_s}
        if reply.status == "failed":
            return ChunkResult(status="failed", pairs=[], reason=reply.reason, raw_reply=None, **common)
        content = reply.content or ""
        pairs, reason = parse_reply(content)
        if reason is not None and reply.finish_reason == "length":
            reason += f" (reply cut off at max_tokens={self.settings.max_tokens})"
        status = "ok" if pairs else "unparsed"
        return ChunkResult(status=status, pairs=pairs, reason=reason, raw_reply=content, **common)


# --- judge --------------------------------------------------------------------------------------


class JudgeItem(BaseModel):
    item_id: str
    question: str
    answer: str
    passage: str


class JudgeVerdict(BaseModel):
    """``score`` 1–5 when the judge's reply held one; None with ``reason`` when it did not or failed."""

    item_id: str
    score: int | None
    reason: str | None
    raw_reply: str | None
    failed: bool  # no reply at all: not stored, asked again next run


def judge_messages(item: JudgeItem) -> list[dict[str, str]]:
    user = JUDGE_PROMPT.format(text=item.passage, question=item.question, answer=item.answer)
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def judge_pairs(client: ChatClient, items: list[JudgeItem]) -> Iterator[JudgeVerdict]:
    """One verdict per item, as the replies arrive."""
    chats = [ChatRequest(request_id=item.item_id, messages=judge_messages(item)) for item in items]
    for reply in client.complete(chats):
        if reply.status == "failed":
            yield JudgeVerdict(
                item_id=reply.request_id, score=None, reason=reply.reason, raw_reply=None, failed=True
            )
            continue
        score, reason = read_score(reply.content or "")
        yield JudgeVerdict(
            item_id=reply.request_id, score=score, reason=reason, raw_reply=reply.content, failed=False
        )


def read_score(content: str) -> tuple[int | None, str | None]:
    """The 1–5 score of a judge reply (JSON ``score``, else a lone digit), and the reason when none."""
    value = json_repair.loads(content) if "{" in content else None
    if isinstance(value, dict) and str(value.get("score", "")).strip() in {"1", "2", "3", "4", "5"}:
        return int(str(value["score"]).strip()), None
    digits = set(_SCORE.findall(content))
    if len(digits) == 1:
        return int(digits.pop()), None
    return None, "judge reply held no single score from 1 to 5"
