"""Q&A synthesis: reply parsing, the extractive bootstrap, the OpenAI-compatible backend against a real
HTTP server on 127.0.0.1, and the stage's store, accounting and lineage."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from pydoc_data.topics import topics

import pandas as pd
import pytest
from conftest import closed_port_url, openai_settings
from openai_stub import StubServer, chat_response, json_pairs_responder, passage_of

from docqa.secrets import API_KEY_ENV
from docqa.settings import SynthesizeSettings
from docqa.stages.synthesize import (
    QA_COLUMNS,
    SynthesisError,
    decontaminate_rows,
    read_qa,
    store_key,
    synthesize_qa,
)
from docqa.synthesis import ChunkRequest, ChunkResult, QAPair, make_backend
from docqa.synthesis.extractive import NO_MATCH_REASON, ExtractiveBackend, extract_candidates
from docqa.synthesis.llm import PROMPT_VERSION
from docqa.workspace import read_jsonl

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


# --- the synthesize stage -----------------------------------------------------------------------


def stage_paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "synthesize", tmp_path / "synthesize" / "store"


def test_synthesize_accounts_for_every_chunk_and_pair(
    tmp_path: Path, small_chunks: list[dict], checkers
) -> None:
    chunks_path = write_chunks(tmp_path / "chunks" / "chunks.parquet", small_chunks)
    out_root, store = stage_paths(tmp_path)
    output = synthesize_qa(chunks_path, out_root, store, SynthesizeSettings(), checkers=checkers)

    assert output.chunks == len(small_chunks) == output.requests and output.reused == 0
    states = json.loads((Path(output.path) / "summary.json").read_text())["chunk_states"]
    assert sum(states.values()) == output.chunks and states["accepted"] > 0
    assert output.pairs_raw == output.qa_train + output.qa_eval + output.pairs_rejected
    folder = Path(output.path)
    summary = json.loads((folder / "summary.json").read_text())
    assert sum(summary["rejected_by_reason"].values()) == output.pairs_rejected
    assert sum(d["pairs"] for d in summary["per_document"].values()) == output.qa_train + output.qa_eval
    assert len(summary["chunks_without_pairs_ids"]) == output.chunks_without_pairs
    replies = read_jsonl(folder / "raw_replies.jsonl")
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
    tmp_path: Path, small_chunks: list[dict], checkers
) -> None:
    chunks_path = write_chunks(tmp_path / "chunks.parquet", small_chunks)
    out_root, store = stage_paths(tmp_path)
    first = synthesize_qa(chunks_path, out_root, store, SynthesizeSettings(), checkers=checkers)
    second = synthesize_qa(
        chunks_path, out_root, store, SynthesizeSettings(request_timeout_s=5), checkers=checkers
    )
    assert second.requests == 0 and second.reused == second.chunks
    assert (second.digest, second.path) == (first.digest, first.path)
    for changed_settings in (
        SynthesizeSettings(pairs_per_chunk=1),
        SynthesizeSettings(min_question_chars=30),
    ):
        changed = synthesize_qa(chunks_path, out_root, store, changed_settings, checkers=checkers)
        assert changed.requests == changed.chunks and changed.digest != first.digest


def test_extractive_refuses_other_languages() -> None:
    with pytest.raises(ValueError, match="English"):
        make_backend(SynthesizeSettings(language="de"))


def test_synthesize_asks_the_server_only_about_new_chunks(
    tmp_path: Path, small_chunks: list[dict], checkers
) -> None:
    out_root, store = stage_paths(tmp_path)
    extra = topic_chunks(["dict", "specialattrs"])
    with StubServer() as server:
        settings = openai_settings(server.base_url)
        backend = make_backend(settings)
        first = synthesize_qa(
            write_chunks(tmp_path / "a.parquet", small_chunks),
            out_root,
            store,
            settings,
            backend,
            checkers=checkers,
        )
        assert first.requests == len(small_chunks) == len(server.requests)

        stricter = settings.model_copy(update={"min_question_chars": 20, "request_timeout_s": 30})
        again = synthesize_qa(
            write_chunks(tmp_path / "b.parquet", small_chunks),
            out_root,
            store,
            stricter,
            backend,
            checkers=checkers,
        )
        assert again.requests == 0 and len(server.requests) == len(small_chunks)
        assert again.qa_digest == first.qa_digest

        grown = synthesize_qa(
            write_chunks(tmp_path / "c.parquet", small_chunks + extra),
            out_root,
            store,
            settings,
            backend,
            checkers=checkers,
        )
    assert grown.requests == len(extra) == len(server.requests) - len(small_chunks)
    assert sorted(server.passages()[len(small_chunks) :]) == sorted(c["text"] for c in extra)
    assert grown.reused == len(small_chunks) and grown.qa_train > first.qa_train
    rows = read_qa(Path(grown.path), "train")
    assert set(rows["backend"]) == {"openai"} and set(rows["model"]) == {"stub-model"}
    assert set(rows["prompt_version"]) == {PROMPT_VERSION}


def test_failed_chunks_are_not_stored_and_are_retried(
    tmp_path: Path, small_chunks: list[dict], checkers
) -> None:
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
        backend = make_backend(settings)
        first = synthesize_qa(chunks_path, out_root, store, settings, backend, checkers=checkers)
        assert (first.chunks_failed, first.replies_unparsed) == (1, 1) and first.chunks_without_pairs >= 2
        key_dir = store / store_key(backend.identity(), settings)
        assert not (key_dir / f"{small_chunks[1]['chunk_id']}.json").exists()
        assert (key_dir / f"{small_chunks[2]['chunk_id']}.json").exists()
        replies = (Path(first.path) / "raw_replies.jsonl").read_text()
        assert "upstream exploded" in replies and "lorem ipsum" in replies

        served = len(server.requests)
        server.responder = json_pairs_responder
        second = synthesize_qa(chunks_path, out_root, store, settings, backend, checkers=checkers)
    assert second.requests == 1 and len(server.requests) == served + 1
    assert (second.chunks_failed, second.replies_unparsed) == (0, 1)


def test_the_api_key_is_sent_and_never_written(
    tmp_path: Path, small_chunks: list[dict], monkeypatch: pytest.MonkeyPatch, checkers
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
        backend = make_backend(settings)
        output = synthesize_qa(
            write_chunks(tmp_path / "c.parquet", small_chunks),
            out_root,
            store,
            settings,
            backend,
            checkers=checkers,
        )
    assert {r["headers"]["Authorization"] for r in server.requests} == {f"Bearer {secret}"}
    assert output.chunks_failed == 1 and output.replies_unparsed == 1
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


def test_the_stage_filters_pairs_and_counts_rejections(tmp_path: Path, checkers) -> None:
    assert_chunk, with_chunk = topic_chunks(["assert"])[0], topic_chunks(["with"])[0]
    chunks = [{**assert_chunk, "split": "train"}, {**with_chunk, "split": "eval"}]
    good = QAPair(question="What does the assert statement insert?", answer="Debugging assertions.")
    script = {
        chunks[0]["chunk_id"]: [
            good,
            QAPair(question="Why?", answer="Because it is."),
            QAPair(question="What is the assert statement for?", answer="ok " * 100),
            QAPair(question="What does the passage say about assert?", answer="It inserts assertions."),
            QAPair(question="Who designed the assert statement?", answer="Guido van Rossum in Amsterdam."),
            QAPair(question="  what does the ASSERT statement   insert? ", answer="Debugging assertions."),
        ],
        chunks[1]["chunk_id"]: [
            QAPair(
                question="What is the with statement used for?", answer="To wrap the execution of a block."
            ),
            QAPair(question="What is the result of a bare raise?", answer="."),
            QAPair(question="Wozu dient die with-Anweisung in Python?", answer="Sie umschließt einen Block."),
        ],
    }
    out_root, store = stage_paths(tmp_path)
    backend = ScriptedBackend(script)
    output = synthesize_qa(
        write_chunks(tmp_path / "c.parquet", chunks),
        out_root,
        store,
        SynthesizeSettings(),
        backend,
        checkers=checkers,
    )
    summary = json.loads((Path(output.path) / "summary.json").read_text())
    assert summary["rejected_by_reason"] == {
        "answer_not_in_chunk": 1,  # the invented designer
        "answer_too_long": 1,
        "answer_too_short": 1,
        "duplicate_question": 1,
        "question_refers_to_passage": 1,
        "question_too_short": 1,
        "wrong_language": 1,
    }
    assert (output.qa_train, output.qa_eval, output.pairs_raw) == (1, 1, 9)
    accounting = read_jsonl(Path(output.path) / "chunk_accounting.jsonl")
    assert [(r["state"], r["pairs_accepted"], sum(r["rejected"].values())) for r in accounting] == [
        ("accepted", 1, 5),
        ("accepted", 1, 2),
    ]


def test_synthesize_refuses_when_no_chunk_got_a_reply(
    tmp_path: Path, small_chunks: list[dict], checkers
) -> None:
    url = closed_port_url()
    settings = openai_settings(url)
    out_root, store = stage_paths(tmp_path)
    with pytest.raises(SynthesisError, match="no chunk got a reply") as error:
        synthesize_qa(
            write_chunks(tmp_path / "c.parquet", small_chunks[:3]),
            out_root,
            store,
            settings,
            make_backend(settings),
            checkers=checkers,
        )
    assert url in str(error.value) and "synthesize.model" in str(error.value)
    assert not list(store.rglob("*.json"))


def test_synthesize_refuses_to_hand_sft_no_pair_and_keeps_held_out_sides_apart(
    tmp_path: Path, small_chunks: list[dict], checkers
) -> None:
    held_out = [{**c, "split": "knowledge" if i % 2 else "eval"} for i, c in enumerate(small_chunks)]
    out_root, store = stage_paths(tmp_path)
    with pytest.raises(SynthesisError, match="no training Q&A pair") as error:
        synthesize_qa(
            write_chunks(tmp_path / "c.parquet", held_out),
            out_root,
            store,
            SynthesizeSettings(),
            checkers=checkers,
        )
    assert "knowledge_fraction" in str(error.value) and "pairs_per_chunk" in str(error.value)


def test_knowledge_pairs_are_decontaminated_against_sft_pairs_not_against_their_own_chunk() -> None:
    """Knowledge questions ask what pretrained chunks say, so quoting their chunk is the point; sharing an
    SFT pair's wording is contamination. Control questions may share neither."""
    sentence = "the with statement wraps the execution of a block with methods of a context manager"
    chunks = [
        {"chunk_id": "t", "split": "train", "text": "Statements. " + sentence + "."},
        {
            "chunk_id": "k",
            "split": "knowledge",
            "text": "A lambda expression yields an anonymous function object.",
        },
        {"chunk_id": "e", "split": "eval", "text": "A held-out page about loops and their else clauses."},
    ]
    rows = [
        {"split": "train", "question": "What does the with statement do?", "answer": sentence},
        {"split": "knowledge", "question": "What is the with statement for?", "answer": sentence},
        {"split": "knowledge", "question": "What does a lambda expression yield?",
         "answer": "A lambda expression yields an anonymous function object."},
        {"split": "eval", "question": "What does the block do?", "answer": "It " + sentence},
        {"split": "eval", "question": "When does an else clause of a loop run?",
         "answer": "It runs when the loop ends without a break statement being executed."},
    ]  # fmt: skip
    results = decontaminate_rows(rows, chunks, ngram=8)
    assert results["knowledge"].checked == 2 and results["knowledge"].removed_indices == [1]
    assert results["eval"].checked == 2 and results["eval"].removed_indices == [3]
    generated = [("rewrite:0", "Notes: a lambda expression yields an anonymous function object, always.")]
    with_rewrites = decontaminate_rows(rows, chunks, ngram=8, generated=generated)
    assert with_rewrites["knowledge"].removed_indices == [1, 2]  # generated training text counts


def test_knowledge_and_control_pairs_are_published_apart_from_sft_pairs(
    tmp_path: Path, small_chunks: list[dict], checkers
) -> None:
    chunks = [{**c, "split": ("train", "knowledge", "eval")[i % 3]} for i, c in enumerate(small_chunks)]
    out_root, store = stage_paths(tmp_path)
    out = synthesize_qa(
        write_chunks(tmp_path / "c.parquet", chunks), out_root, store, SynthesizeSettings(), checkers=checkers
    )
    split_of = {c["chunk_id"]: c["split"] for c in chunks}
    for split, count in (("train", out.qa_train), ("knowledge", out.qa_knowledge), ("eval", out.qa_eval)):
        rows = read_qa(Path(out.path), split)
        assert len(rows) == count > 0 and {split_of[c] for c in rows["chunk_id"]} == {split}
    report = json.loads((Path(out.path) / "contamination.json").read_text())
    assert report["knowledge"]["pairs_checked"] == out.knowledge_pairs_checked >= out.qa_knowledge
    assert report["eval"]["pairs_checked"] == out.eval_pairs_checked >= out.qa_eval


def test_the_llm_judge_scores_pairs_and_its_verdicts_are_stored(
    tmp_path: Path, small_chunks: list[dict], checkers
) -> None:
    judged_questions: list[str] = []

    def respond(body: dict) -> tuple[int, str]:
        prompt = body["messages"][-1]["content"]
        if "Score this question-answer pair" not in prompt:
            return json_pairs_responder(body)
        question = prompt.split("Question: ", 1)[1].split("\n", 1)[0]
        judged_questions.append(question)
        if "assert" in question.lower():
            return 503, "judge overloaded"  # never answered: judge_failed, asked again next run
        score = 2 if len(judged_questions) % 2 else 5
        return 200, chat_response(json.dumps({"score": score, "reason": "graded"}))

    chunks_path = write_chunks(tmp_path / "chunks.parquet", small_chunks)
    out_root, store = stage_paths(tmp_path)
    with StubServer(respond) as server:
        settings = openai_settings(server.base_url, judge=True, judge_min_score=4)
        first = synthesize_qa(chunks_path, out_root, store, settings, checkers=checkers)
        judge_requests = len(judged_questions)
        rejected = first.rejected_by_reason
        assert rejected["judge_score_low"] > 0 and rejected["judge_failed"] == first.judge_failed > 0
        assert not first.complete  # failed judge requests make the next run try again
        verdicts = read_jsonl(Path(first.path) / "judge_replies.jsonl")
        assert len(verdicts) == len(set(judged_questions)) and {v["score"] for v in verdicts} >= {2, 5, None}

        second = synthesize_qa(chunks_path, out_root, store, settings, checkers=checkers)
    # only the failed verdicts are asked again; the pairs' generation is not repeated
    assert len(judged_questions) - judge_requests == first.judge_failed * settings.max_attempts
    assert second.requests == 0 and second.qa_digest == first.qa_digest
