"""Q&A synthesis: reply parsing, the extractive bootstrap, the OpenAI-compatible backend against a real
HTTP server on 127.0.0.1, and the stage's store, accounting and lineage."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from pydoc_data.topics import topics

import pandas as pd
import pytest
from openai_stub import StubServer, chat_response, json_pairs_responder, passage_of, sentence_pairs

from docqa.settings import SynthesizeSettings
from docqa.stages.synthesize import (
    QA_COLUMNS,
    SynthesisError,
    read_qa,
    store_key,
    synthesize_qa,
)
from docqa.synthesis import ChunkRequest, ChunkResult, QAPair, make_backend, parse_reply
from docqa.synthesis.extractive import NO_MATCH_REASON, ExtractiveBackend, extract_candidates
from docqa.synthesis.openai_backend import API_KEY_ENV, PROMPT_VERSION, OpenAIBackend

FAST_RETRY_S = 0.01
EVAL_TOPICS = {"assert", "class", "lambda", "raise", "with"}

# --- chunks from real prose ---------------------------------------------------------------------


def norm(text: str) -> str:
    return " ".join(text.split())


def topic_chunks(names: list[str], max_chars: int = 900) -> list[dict]:
    """Chunk rows (the chunk stage's columns) from pydoc reference topics, paragraphs up to ``max_chars``.

    Repeated chunks are dropped, as the chunk stage does (some topics share sections).
    """
    rows, seen = [], set()
    for name in names:
        pieces, current = [], ""
        for paragraph in topics[name].split("\n\n"):
            if current and len(current) + len(paragraph) > max_chars:
                pieces.append(current)
                current = ""
            current = f"{current}\n\n{paragraph}" if current else paragraph
        pieces.append(current)
        for index, text in enumerate(pieces):
            chunk_id = hashlib.sha256(norm(text).encode()).hexdigest()[:16]
            if chunk_id in seen:
                continue
            seen.add(chunk_id)
            rows.append(
                {
                    "chunk_id": chunk_id,
                    "doc_id": hashlib.sha256(name.encode()).hexdigest()[:12],
                    "doc_title": f"Python reference: {name}",
                    "page_start": index + 1,
                    "page_end": index + 1,
                    "index": index,
                    "text": text,
                    "n_tokens": len(text.split()),
                    "split": "eval" if name in EVAL_TOPICS else "train",
                }
            )
    return rows


def write_chunks(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


SMALL_TOPICS = ["assert", "with", "exceptions", "truth", "return", "numbers", "lambda", "class"]


@pytest.fixture
def small_chunks() -> list[dict]:
    return topic_chunks(SMALL_TOPICS)


# --- parse_reply --------------------------------------------------------------------------------

P1 = {"question": "What does the assert statement insert?", "answer": "Debugging assertions into a program."}
P2 = {"question": "What is __debug__ under -O?", "answer": "False."}
P3 = {"question": "What does raise without expressions do?", "answer": "It re-raises the active exception."}


def pairs(*items: dict) -> list[QAPair]:
    return [QAPair(**item) for item in items]


PARSE_CASES = {
    "plain_json": (json.dumps([P1, P2]), pairs(P1, P2)),
    "fenced_json": (f"```json\n{json.dumps([P1, P2], indent=2)}\n```", pairs(P1, P2)),
    "fence_without_language": (f"```\n{json.dumps([P3])}\n```\nThat is all.", pairs(P3)),
    "prose_around_json": (
        f"Sure! Here are the pairs you asked for:\n\n{json.dumps([P1, P2])}\n\nLet me know if you need more.",
        pairs(P1, P2),
    ),
    "trailing_commas": (
        '[{"question": "What does the assert statement insert?", '
        '"answer": "Debugging assertions into a program.",},\n'
        ' {"question": "What is __debug__ under -O?", "answer": "False.",},]',
        pairs(P1, P2),
    ),
    "single_quotes": (
        "[{'question': 'What is __debug__ under -O?', 'answer': 'False.'}, "
        "{'question': 'What does raise without expressions do?', "
        "'answer': 'It re-raises the active exception.'}]",
        pairs(P2, P3),
    ),
    "cut_off_mid_answer": (json.dumps([P1, P2, P3])[:-30], pairs(P1, P2)),
    "cut_off_between_items": (json.dumps([P1, P2])[:-1] + ', {"quest', pairs(P1, P2)),
    "wrapped_in_object": (json.dumps({"qa_pairs": [P1, P3]}), pairs(P1, P3)),
    "capitalised_keys": (
        json.dumps([{"Question": P1["question"], "Answer": P1["answer"]}]),
        pairs(P1),
    ),
    "question_answer_text": (
        f"Question: {P1['question']}\nAnswer: {P1['answer']}\n\n"
        f"Question: {P2['question']}\nAnswer: {P2['answer']}",
        pairs(P1, P2),
    ),
    "q1_a1_inline": (
        f"Q1: {P1['question']} A1: {P1['answer']}\nQ2: {P3['question']} A2: {P3['answer']}",
        pairs(P1, P3),
    ),
    "numbered_with_answer_below": (
        f"Here you go:\n\n1. {P1['question']}\n   {P1['answer']}\n\n"
        f"2. {P2['question']}\n   {P2['answer']}\n\n"
        "I hope this helps.",
        pairs(P1, P2),
    ),
    "markdown_bold_labels": (
        f"**Question 1:** {P2['question']}\n**Answer 1:** {P2['answer']}\n\n"
        f"**Question 2:** {P3['question']}\n**Answer 2:** {P3['answer']}",
        pairs(P2, P3),
    ),
    "json_missing_answers": (
        json.dumps([P1, {"question": "What is missing here?"}, {"question": "Empty?", "answer": "  "}, P2]),
        pairs(P1, P2),
    ),
    "text_missing_answers": (
        f"Q1: What is never answered?\nQ2: {P2['question']}\nA2: {P2['answer']}",
        pairs(P2),
    ),
    "echo_of_passage": (
        "Assert statements are a convenient way to insert debugging assertions into a program. "
        "The simple form, "
        '"assert expression", is equivalent to a conditional raise of AssertionError.',
        [],
    ),
    "degenerate_repetition": (
        json.dumps([P1] * 6 + [{"question": "What is X?", "answer": " ".join(["X is X"] * 10)}])[:-3],
        pairs(P1),
    ),
    "empty": ("", []),
    "whitespace": ("  \n\t ", []),
    "json_without_pairs": (json.dumps({"error": "I cannot help with that."}), []),
}


@pytest.mark.parametrize("name", sorted(PARSE_CASES))
def test_parse_reply_recovers_exactly_the_pairs(name: str) -> None:
    reply, expected = PARSE_CASES[name]
    found, reason = parse_reply(reply)
    assert found == expected
    assert (reason is None) == bool(expected)


def test_parse_reply_says_why_nothing_was_read() -> None:
    assert parse_reply("")[1] == "empty reply"
    assert "JSON" in parse_reply('{"error": "no"}')[1]
    assert "Question/Answer" in parse_reply("Just some prose without any pairs.")[1]


# --- extractive bootstrap -----------------------------------------------------------------------


def extract(text: str, **overrides) -> list[QAPair]:
    backend = ExtractiveBackend(SynthesizeSettings(**overrides))
    (result,) = backend.generate([ChunkRequest(chunk_id="c0", text=text, doc_title="t")])
    return result.pairs


def test_extractive_rules_turn_statements_into_self_contained_questions() -> None:
    text = (
        "A suite is a group of statements controlled by a clause.\n"
        'The "with" statement is used to wrap the execution of a block with methods defined by a '
        "context manager.\n"
        'The built-in function "len()" returns the number of items in a mapping.\n'
        'If no expressions are present, "raise" re-raises the exception that is currently being handled.\n'
        "It is a local variable of that block unless declared otherwise.\n"
    )
    questions = [pair.question for pair in extract(text)]
    assert questions == [
        "What is a suite?",
        'What is the "with" statement used for?',
        'What does the built-in function "len()" return?',
        "What happens if no expressions are present?",
    ]


def test_extractive_skips_code_grammar_and_vague_subjects() -> None:
    text = (
        'assert_stmt ::= "assert" expression ["," expression]\n\n'
        "   if __debug__:\n       if not expression: raise AssertionError\n\n"
        "   x = compute(a, b) + [y for y in z]\n\n"
        "This is equivalent to the statement above.\nThey are always evaluated first.\n"
    )
    backend = ExtractiveBackend(SynthesizeSettings())
    (result,) = backend.generate([ChunkRequest(chunk_id="c0", text=text, doc_title="t")])
    assert result.status == "ok"
    assert result.pairs == []
    assert result.reason == NO_MATCH_REASON


def test_extractive_is_deterministic_and_answers_are_spans_of_the_chunk() -> None:
    chunks = topic_chunks(sorted(topics)[:40])
    backend = ExtractiveBackend(SynthesizeSettings())
    requests = [
        ChunkRequest(chunk_id=c["chunk_id"], text=c["text"], doc_title=c["doc_title"]) for c in chunks
    ]
    first = list(backend.generate(requests))
    again = {r.chunk_id: r for r in backend.generate(list(reversed(requests)))}
    assert [r.model_dump(exclude={"latency_s"}) for r in first] == [
        again[r.chunk_id].model_dump(exclude={"latency_s"}) for r in first
    ]
    text_of = {c["chunk_id"]: norm(c["text"]) for c in chunks}
    vague = ("it ", "this ", "that ", "these ", "those ", "they ")
    for result in first:
        assert len(result.pairs) <= 4
        assert len({p.question.lower() for p in result.pairs}) == len(result.pairs)
        for pair in result.pairs:
            assert norm(pair.answer) in text_of[result.chunk_id]
            assert pair.question.endswith("?")
            assert "passage" not in pair.question.lower() and "the text" not in pair.question.lower()
            subject = pair.question.split(" ", 2)[2].lower()
            assert not subject.startswith(vague), pair.question
            assert len(pair.answer.split()) <= 60


def test_extractive_respects_pair_and_length_limits() -> None:
    text = topics["exceptions"] + "\n\n" + topics["truth"]
    assert len(extract(text, pairs_per_chunk=2)) == 2
    assert all(len(p.answer.split()) <= 12 for p in extract(text, max_answer_words=12))
    assert all(len(p.question) >= 40 for p in extract(text, min_question_chars=40))


def test_extractive_yields_pairs_for_most_prose_chunks_of_the_reference_manual() -> None:
    chunks = topic_chunks(sorted(topics))
    settings = SynthesizeSettings()
    counts = [len(extract_candidates(c["text"], settings)) for c in chunks]
    assert sum(counts) / len(chunks) >= 1.0
    assert sum(n > 0 for n in counts) / len(chunks) >= 0.6


# --- OpenAI-compatible backend ------------------------------------------------------------------


def openai_settings(base_url: str, **overrides) -> SynthesizeSettings:
    values = {"backend": "openai", "base_url": base_url, "model": "stub-model", "pairs_per_chunk": 2}
    return SynthesizeSettings(**{**values, **overrides})


def run_backend(server: StubServer, texts: list[str], **overrides) -> list[ChunkResult]:
    backend = OpenAIBackend(openai_settings(server.base_url, **overrides), retry_wait_s=FAST_RETRY_S)
    requests = [
        ChunkRequest(chunk_id=f"c{i}", text=t, doc_title="Python reference") for i, t in enumerate(texts)
    ]
    return list(backend.generate(requests))


TEXT = topics["assert"]


def test_openai_backend_reads_json_replies_and_sends_the_prompt() -> None:
    with StubServer() as server:
        (result,) = run_backend(server, [TEXT], language="German", max_answer_words=40)
    assert result.status == "ok" and result.attempts == 1 and result.reason is None
    assert [p.model_dump() for p in result.pairs] == sentence_pairs(server.requests[0]["body"])
    body = server.requests[0]["body"]
    assert body["model"] == "stub-model" and body["temperature"] == 0.2 and body["max_tokens"] == 1024
    prompt = body["messages"][-1]["content"]
    assert (
        "exactly 2 question-answer pairs" in prompt and "in German" in prompt and "at most 40 words" in prompt
    )
    assert "Python reference" in prompt and passage_of(body) == TEXT
    assert "Authorization" not in server.requests[0]["headers"]


def test_openai_backend_keeps_an_unreadable_reply_as_unparsed() -> None:
    reply = "I am sorry, but I cannot produce questions for this passage."
    with StubServer(lambda body: (200, chat_response(reply))) as server:
        (result,) = run_backend(server, [TEXT])
    assert result.status == "unparsed" and result.pairs == []
    assert result.raw_reply == reply and "no JSON" in result.reason


def test_openai_backend_notes_a_reply_cut_off_at_max_tokens() -> None:
    with StubServer(lambda body: (200, chat_response('[{"question": "What', "length"))) as server:
        (result,) = run_backend(server, [TEXT])
    assert result.status == "unparsed" and "max_tokens=1024" in result.reason


def test_openai_backend_retries_a_server_error() -> None:
    calls = []

    def flaky(body: dict) -> tuple[int, str]:
        calls.append(1)
        return (500, "internal error") if len(calls) == 1 else json_pairs_responder(body)

    with StubServer(flaky) as server:
        (result,) = run_backend(server, [TEXT])
    assert result.status == "ok" and result.attempts == 2 and len(result.pairs) == 2


def test_openai_backend_reports_a_persistent_error_as_failed() -> None:
    with StubServer(lambda body: (503, '{"error": "model is loading, try later"}')) as server:
        (result,) = run_backend(server, [TEXT])
    assert result.status == "failed" and result.attempts == 3 and len(server.requests) == 3
    assert "HTTP 503" in result.reason and "model is loading" in result.reason and result.raw_reply is None


def test_openai_backend_does_not_retry_a_client_error() -> None:
    with StubServer(lambda body: (400, '{"error": "unknown model stub-model"}')) as server:
        (result,) = run_backend(server, [TEXT])
    assert result.status == "failed" and result.attempts == 1 and "unknown model" in result.reason


def test_openai_backend_reports_timeouts_and_refused_connections() -> None:
    def slow(body: dict) -> tuple[int, str]:
        time.sleep(0.5)
        return json_pairs_responder(body)

    with StubServer(slow) as server:
        (result,) = run_backend(server, [TEXT], request_timeout_s=0.1)
    assert result.status == "failed" and result.attempts == 3 and "timeout" in result.reason

    (result,) = run_backend_at(closed_port_url(), [TEXT])
    assert result.status == "failed" and "ConnectError" in result.reason


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def run_backend_at(base_url: str, texts: list[str]) -> list[ChunkResult]:
    backend = OpenAIBackend(openai_settings(base_url), retry_wait_s=FAST_RETRY_S)
    return list(backend.generate([ChunkRequest(chunk_id="c0", text=t, doc_title="t") for t in texts]))


def test_make_backend_picks_the_configured_backend() -> None:
    assert isinstance(make_backend(SynthesizeSettings()), ExtractiveBackend)
    backend = make_backend(openai_settings("http://127.0.0.1:9/v1"))
    assert isinstance(backend, OpenAIBackend)
    assert backend.identity() == {
        "backend": "openai",
        "model": "stub-model",
        "prompt_version": PROMPT_VERSION,
    }


# --- the synthesize stage -----------------------------------------------------------------------


def stage_paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "synthesize", tmp_path / "synthesize" / "store"


def test_synthesize_accounts_for_every_chunk_and_pair(tmp_path: Path, small_chunks: list[dict]) -> None:
    chunks_path = write_chunks(tmp_path / "chunks" / "chunks.parquet", small_chunks)
    out_root, store = stage_paths(tmp_path)
    output = synthesize_qa(chunks_path, out_root, store, SynthesizeSettings())

    assert output.chunks == len(small_chunks) == output.requests and output.reused == 0
    assert output.chunks_ok + output.chunks_unparsed + output.chunks_failed == output.chunks
    assert output.pairs_raw == output.qa_train + output.qa_eval + output.pairs_rejected
    folder = Path(output.path)
    summary = json.loads((folder / "summary.json").read_text())
    assert sum(summary["rejected_by_reason"].values()) == output.pairs_rejected
    assert sum(d["pairs"] for d in summary["per_document"].values()) == output.qa_train + output.qa_eval
    assert len(summary["chunks_without_pairs_ids"]) == output.chunks_without_pairs
    replies = [json.loads(line) for line in (folder / "raw_replies.jsonl").read_text().splitlines()]
    assert len(replies) == output.chunks

    train, held_out = read_qa(folder, "train"), read_qa(folder, "eval")
    assert (len(train), len(held_out)) == (output.qa_train, output.qa_eval)
    assert tuple(train.column_names) == QA_COLUMNS
    split_of = {c["chunk_id"]: c["split"] for c in small_chunks}
    reply_ids = {r["reply_id"] for r in replies}
    for row in [*train, *held_out]:
        assert row["split"] == split_of[row["chunk_id"]]
        assert row["backend"] == "extractive" and row["model"] and row["prompt_version"]
        assert row["doc_title"].startswith("Python reference") and row["page_start"] >= 1
        assert row["reply_id"] in reply_ids
    assert {r["split"] for r in held_out} == {"eval"}


def test_synthesize_reuses_the_store_and_names_output_by_content(
    tmp_path: Path, small_chunks: list[dict]
) -> None:
    chunks_path = write_chunks(tmp_path / "chunks.parquet", small_chunks)
    out_root, store = stage_paths(tmp_path)
    first = synthesize_qa(chunks_path, out_root, store, SynthesizeSettings())
    second = synthesize_qa(chunks_path, out_root, store, SynthesizeSettings(request_timeout_s=5))
    assert second.requests == 0 and second.reused == second.chunks
    assert (second.digest, second.path) == (first.digest, first.path)
    for changed_settings in (
        SynthesizeSettings(pairs_per_chunk=1),
        SynthesizeSettings(min_question_chars=30),
    ):
        changed = synthesize_qa(chunks_path, out_root, store, changed_settings)
        assert changed.requests == changed.chunks and changed.digest != first.digest


def test_extractive_refuses_other_languages() -> None:
    with pytest.raises(ValueError, match="English"):
        make_backend(SynthesizeSettings(language="German"))


def test_synthesize_asks_the_server_only_about_new_chunks(tmp_path: Path, small_chunks: list[dict]) -> None:
    out_root, store = stage_paths(tmp_path)
    extra = topic_chunks(["dict", "specialattrs"])
    with StubServer() as server:
        settings = openai_settings(server.base_url)
        backend = OpenAIBackend(settings, retry_wait_s=FAST_RETRY_S)
        first = synthesize_qa(
            write_chunks(tmp_path / "a.parquet", small_chunks), out_root, store, settings, backend
        )
        assert first.requests == len(small_chunks) == len(server.requests)

        stricter = settings.model_copy(update={"min_question_chars": 20, "request_timeout_s": 30})
        again = synthesize_qa(
            write_chunks(tmp_path / "b.parquet", small_chunks), out_root, store, stricter, backend
        )
        assert (
            again.requests == 0 and len(server.requests) == len(small_chunks) and again.digest == first.digest
        )

        grown = synthesize_qa(
            write_chunks(tmp_path / "c.parquet", small_chunks + extra), out_root, store, settings, backend
        )
    assert grown.requests == len(extra) == len(server.requests) - len(small_chunks)
    assert server.passages()[len(small_chunks) :] == [c["text"] for c in extra]
    assert grown.reused == len(small_chunks) and grown.qa_train > first.qa_train
    rows = read_qa(Path(grown.path), "train")
    assert set(rows["backend"]) == {"openai"} and set(rows["model"]) == {"stub-model"}
    assert set(rows["prompt_version"]) == {PROMPT_VERSION}


def test_failed_chunks_are_not_stored_and_are_retried(tmp_path: Path, small_chunks: list[dict]) -> None:
    chunks_path = write_chunks(tmp_path / "chunks.parquet", small_chunks)
    out_root, store = stage_paths(tmp_path)
    failing, garbled = small_chunks[1]["text"], small_chunks[2]["text"]

    def flaky(body: dict) -> tuple[int, str]:
        if passage_of(body) == failing:
            return 500, "upstream exploded"
        if passage_of(body) == garbled:
            return 200, chat_response("lorem ipsum " * 5)
        return json_pairs_responder(body)

    with StubServer(flaky) as server:
        settings = openai_settings(server.base_url)
        backend = OpenAIBackend(settings, retry_wait_s=FAST_RETRY_S)
        first = synthesize_qa(chunks_path, out_root, store, settings, backend)
        assert (first.chunks_failed, first.chunks_unparsed) == (1, 1)
        assert first.chunks_ok == len(small_chunks) - 2 and first.chunks_without_pairs >= 2
        key_dir = store / store_key(backend.identity(), settings)
        assert not (key_dir / f"{small_chunks[1]['chunk_id']}.json").exists()
        assert (key_dir / f"{small_chunks[2]['chunk_id']}.json").exists()
        replies = (Path(first.path) / "raw_replies.jsonl").read_text()
        assert "upstream exploded" in replies and "lorem ipsum" in replies

        served = len(server.requests)
        server.responder = json_pairs_responder
        second = synthesize_qa(chunks_path, out_root, store, settings, backend)
    assert second.requests == 1 and len(server.requests) == served + 1
    assert (second.chunks_failed, second.chunks_unparsed) == (0, 1)


def test_the_api_key_is_sent_and_never_written(
    tmp_path: Path, small_chunks: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-7f3c9a1e5b"
    monkeypatch.setenv(API_KEY_ENV, secret)

    def echoing(body: dict) -> tuple[int, str]:
        if passage_of(body) == small_chunks[0]["text"]:
            return 401, f"invalid key {secret}"
        if passage_of(body) == small_chunks[1]["text"]:
            return 200, chat_response(f"Your key is {secret}, no pairs today.")
        return json_pairs_responder(body)

    out_root, store = stage_paths(tmp_path)
    with StubServer(echoing) as server:
        settings = openai_settings(server.base_url)
        backend = OpenAIBackend(settings, retry_wait_s=FAST_RETRY_S)
        output = synthesize_qa(
            write_chunks(tmp_path / "c.parquet", small_chunks), out_root, store, settings, backend
        )
    assert {r["headers"]["Authorization"] for r in server.requests} == {f"Bearer {secret}"}
    assert output.chunks_failed == 1 and output.chunks_unparsed == 1
    assert secret not in json.dumps(backend.identity()) and secret not in output.model_dump_json()
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in {".json", ".jsonl"}:
            assert secret not in path.read_text(), path
    for split in ("train", "eval"):
        assert secret not in read_qa(Path(output.path), split).to_pandas().to_json()


class ScriptedBackend:
    """A test double that returns fixed pairs per chunk, to exercise the stage's filters."""

    def __init__(self, pairs_of: dict[str, list[QAPair]]) -> None:
        self.pairs_of = pairs_of
        self.calls = 0

    def identity(self) -> dict[str, str]:
        return {"backend": "scripted", "model": "none", "prompt_version": "test"}

    def generate(self, requests: list[ChunkRequest]) -> Iterator[ChunkResult]:
        for request in requests:
            self.calls += 1
            yield ChunkResult(
                chunk_id=request.chunk_id,
                status="ok",
                pairs=self.pairs_of.get(request.chunk_id, []),
                raw_reply="scripted",
                attempts=1,
                latency_s=0.0,
            )


def test_the_stage_filters_pairs_and_counts_rejections(tmp_path: Path, small_chunks: list[dict]) -> None:
    chunks = [{**small_chunks[0], "split": "train"}, {**small_chunks[1], "split": "eval"}]
    good = QAPair(question="What does the assert statement insert?", answer="Debugging assertions.")
    script = {
        chunks[0]["chunk_id"]: [
            good,
            QAPair(question="Why?", answer="Because it is."),
            QAPair(question="What is the assert statement for?", answer="ok " * 100),
            QAPair(question="What does the passage say about assert?", answer="It inserts assertions."),
        ],
        chunks[1]["chunk_id"]: [
            QAPair(question="  what does the ASSERT statement   insert? ", answer="Assertions."),
            QAPair(question="What is a with statement for?", answer="To wrap a block."),
            QAPair(question="What is the result of a bare raise?", answer="."),
        ],
    }
    out_root, store = stage_paths(tmp_path)
    output = synthesize_qa(
        write_chunks(tmp_path / "c.parquet", chunks),
        out_root,
        store,
        SynthesizeSettings(),
        ScriptedBackend(script),
    )
    summary = json.loads((Path(output.path) / "summary.json").read_text())
    assert summary["rejected_by_reason"] == {
        "answer_too_long": 1,
        "answer_too_short": 1,
        "duplicate_question": 1,
        "question_refers_to_passage": 1,
        "question_too_short": 1,
    }
    assert (output.qa_train, output.qa_eval, output.pairs_raw) == (1, 1, 7)


def test_synthesize_refuses_when_no_chunk_got_a_reply(tmp_path: Path, small_chunks: list[dict]) -> None:
    url = closed_port_url()
    settings = openai_settings(url)
    out_root, store = stage_paths(tmp_path)
    with pytest.raises(SynthesisError, match="could not be reached") as error:
        synthesize_qa(
            write_chunks(tmp_path / "c.parquet", small_chunks[:3]),
            out_root,
            store,
            settings,
            OpenAIBackend(settings, retry_wait_s=FAST_RETRY_S),
        )
    assert url in str(error.value) and "synthesize.model" in str(error.value)
    assert not list(store.rglob("*.json"))


def test_synthesize_refuses_an_empty_split(tmp_path: Path, small_chunks: list[dict]) -> None:
    train_only = [{**c, "split": "train"} for c in small_chunks]
    out_root, store = stage_paths(tmp_path)
    with pytest.raises(SynthesisError, match="0 held-out") as error:
        synthesize_qa(write_chunks(tmp_path / "c.parquet", train_only), out_root, store, SynthesizeSettings())
    assert "eval_fraction" in str(error.value) and "pairs_per_chunk" in str(error.value)
