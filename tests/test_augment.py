"""Knowledge augmentation: the offline rewrites say only what their chunk says, rewrites never carry a
held-out question, every planned rewrite is accounted for, the store serves what was made, and the LLM
path (a real HTTP server standing in for an OpenAI-compatible one) keeps failures to retry and removes
echoes of the evaluation's questions."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import openai_settings
from openai_stub import StubServer, chat_response, passage_of
from test_synthesis import SMALL_TOPICS, norm, stage_paths, topic_chunks, write_chunks

from docqa.augmentation.rules import RULE_KINDS, reword, rewrite, terms, units
from docqa.outputs import AUGMENT_TEXTS_FILE, qa_file
from docqa.settings import AugmentSettings, Recipe, SettingsError, SynthesizeSettings, load_recipe
from docqa.stages.augment import augment, planned
from docqa.stages.synthesize import synthesize_qa
from docqa.synthesis.contamination import contaminated_rewrites, words
from docqa.synthesis.extractive import prose_sentences
from docqa.workspace import read_jsonl

ALL_RULES = AugmentSettings(kinds=list(RULE_KINDS), versions_per_chunk=4)


def prose_chunks() -> list[dict]:
    """Chunks of the reference manual with at least three prose statements."""
    return [c for c in topic_chunks(SMALL_TOPICS) if len(prose_sentences(c["text"])) >= 3]


# --- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", RULE_KINDS)
def test_every_rule_rewrite_uses_only_its_chunks_words(kind: str) -> None:
    """No rule invents: each rewrite's words are the chunk's, the title's and the rule's own few."""
    rule_words = {"facts", "from", "about", "says", "that", "serves", "serve", "used", "is", "are"}
    for chunk in prose_chunks():
        text = rewrite(kind, chunk["text"], chunk["doc_title"], seed=3)
        allowed = set(words(chunk["text"])) | set(words(chunk["doc_title"])) | rule_words
        assert set(words(text)) <= allowed, (kind, set(words(text)) - allowed)


def test_facts_list_each_prose_statement_of_the_chunk_once_per_line() -> None:
    chunk = prose_chunks()[0]
    lines = rewrite("facts", chunk["text"], chunk["doc_title"], seed=0).split("\n")
    assert lines[0] == f"Facts from {chunk['doc_title']}:"
    flat = norm(chunk["text"])
    assert len(lines) > 3 and all(line.startswith("- ") and line[2:] in flat for line in lines[1:])


def test_shuffles_keep_every_unit_and_differ_by_seed() -> None:
    chunk = prose_chunks()[1]
    first, second = (rewrite("shuffled", chunk["text"], "", seed) for seed in (1, 2))
    assert first != second
    assert sorted(words(first)) == sorted(words(second)) == sorted(words(" ".join(units(chunk["text"]))))


def test_entity_notes_gather_the_sentences_that_name_each_term() -> None:
    text = (
        'The "with" statement wraps the execution of a block. A context manager provides __enter__ and '
        '__exit__ to go with it. The "with" statement calls __exit__ even when the block raises an exception.'
    )
    assert terms([s.text for s in prose_sentences(text)]) == ["with", "context manager"]
    notes = dict(line.split(": ", 1) for line in rewrite("entities", text, "Compound", seed=0).split("\n"))
    assert set(notes) == {"About with (Compound)", "About context manager (Compound)"}
    assert notes["About with (Compound)"].count("statement") == 2  # both sentences quoting "with"
    assert "wraps" not in notes["About context manager (Compound)"]


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("If the name is unbound, a NameError is raised.", "A NameError is raised, if the name is unbound."),
        ("In a generator function, return ends it early.", "Return ends it early, in a generator function."),
        ("The slash is used to separate fields.", "The slash serves to separate fields."),
        ("A tuple is an immutable sequence.", "A tuple is an immutable sequence."),
    ],
)
def test_reword_moves_leading_conditions_and_swaps_used_to(sentence: str, expected: str) -> None:
    assert reword(sentence) == expected


def test_settings_refuse_kinds_the_rules_cannot_write_and_half_set_options() -> None:
    with pytest.raises(ValueError, match="need backend synthesis"):
        AugmentSettings(kinds=["explained"], versions_per_chunk=1)
    with pytest.raises(ValueError, match="needs kinds"):
        AugmentSettings(versions_per_chunk=2)
    with pytest.raises(SettingsError, match=r"needs synthesize\.backend"):
        load_recipe(
            None, ["augment.backend=synthesis", "augment.kinds=[facts]", "augment.versions_per_chunk=1"]
        )
    with pytest.raises(SettingsError, match=r"pairs_first needs augment\.mix_qa"):
        load_recipe(None, ["pretrain.pairs_first=true", "augment.mix_qa=false"])
    assert [kind for _, kind in planned(ALL_RULES.model_copy(update={"versions_per_chunk": 6}))] == [
        "shuffled", "facts", "entities", "rephrased", "shuffled", "facts",
    ]  # fmt: skip


def test_the_default_recipe_augments_and_mixes_the_sft_pairs_in() -> None:
    recipe = Recipe()
    assert recipe.augment.versions_per_chunk >= 1 and recipe.augment.kinds and recipe.augment.mix_qa


# --- decontamination of rewrites ----------------------------------------------------------------


def test_a_rewrite_that_adds_a_held_out_question_or_answer_wording_is_removed() -> None:
    source = "A watershed is the area of land that drains rain water into one river or lake."
    knowledge = ("knowledge", "What is the area of land that drains into one river called?", source)
    delta = "A delta forms where a river meets the sea and slows down."
    control = ("eval", "What does a delta form at?", delta)
    rewrites = [
        ("quotes-its-chunk", f"Facts:\n- {source}", source),
        ("asks-the-question", f"{knowledge[1]} A watershed.", source),
        ("echoes-control", f"Unlike a watershed: {delta}", source),
        ("short-question", "Notes. What does a delta form at? Never mind.", source),
    ]
    check = contaminated_rewrites(rewrites, [knowledge, control], n=8)
    assert check.removed_indices == [1, 2, 3]
    assert check.by_split == {"knowledge": 1, "eval": 2}
    assert {example["rewrite"] for example in check.examples} == {"asks-the-question", "echoes-control",
                                                                  "short-question"}  # fmt: skip


# --- the stage ----------------------------------------------------------------------------------


def synthesized(tmp_path: Path, checkers, knowledge_share: float = 0.4) -> tuple[Path, Path, list[dict]]:
    """Chunks (some knowledge chunks, some held out) and their extractive Q&A."""
    rows = topic_chunks(SMALL_TOPICS)
    for index, row in enumerate(rows):
        if row["split"] == "train" and index % round(1 / knowledge_share) == 0:
            row["split"] = "knowledge"
    chunks_path = write_chunks(tmp_path / "chunks" / "chunks.parquet", rows)
    out_root, store = stage_paths(tmp_path)
    qa = synthesize_qa(chunks_path, out_root, store, SynthesizeSettings(), checkers=checkers)
    return chunks_path.parent, Path(qa.path), rows


def test_augment_accounts_for_every_planned_rewrite_and_never_mixes_held_out_pairs(
    tmp_path: Path, checkers
) -> None:
    chunks_dir, qa_dir, rows = synthesized(tmp_path, checkers)
    settings = ALL_RULES.model_copy(update={"mix_qa": True})
    output = augment(chunks_dir, qa_dir, tmp_path / "a", tmp_path / "s", settings, SynthesizeSettings())
    pretrained = [r for r in rows if r["split"] in ("train", "knowledge")]
    accounting = read_jsonl(Path(output.path) / "chunk_accounting.jsonl")
    assert sorted(a["chunk_id"] for a in accounting) == sorted(r["chunk_id"] for r in pretrained)
    for record in accounting:
        assert record["planned"] == 4 == record["made"] + record["failed"] + record["empty"]
        assert record["kept"] == record["made"] - record["contaminated"]
    texts = pd.read_parquet(Path(output.path) / AUGMENT_TEXTS_FILE)
    assert output.rewrites_kept == (texts["source"] == "rewrite").sum() > len(pretrained)
    assert set(texts.loc[texts["source"] == "rewrite", "chunk_id"]) <= {r["chunk_id"] for r in pretrained}

    train = pd.read_parquet(qa_file(qa_dir, "train"))
    qa_texts = texts.loc[texts["source"] == "qa", "text"]
    assert output.qa_texts == len(train) == len(qa_texts)
    assert set(qa_texts) == {
        f"Question: {q}\nAnswer: {a}" for q, a in zip(train.question, train.answer, strict=True)
    }
    held_out = pd.concat([pd.read_parquet(qa_file(qa_dir, s)) for s in ("knowledge", "eval")])
    assert len(held_out) and not any(q in text for q in held_out.question for text in texts["text"])


def test_augment_without_rewrites_or_mixing_adds_nothing(tmp_path: Path, checkers) -> None:
    chunks_dir, qa_dir, _ = synthesized(tmp_path, checkers)
    nothing = AugmentSettings()
    output = augment(chunks_dir, qa_dir, tmp_path / "a", tmp_path / "s", nothing, SynthesizeSettings())
    assert (output.rewrites_planned, output.qa_texts) == (0, 0)
    assert pd.read_parquet(Path(output.path) / AUGMENT_TEXTS_FILE).empty


def rewriting_responder(body: dict) -> tuple[int, str]:
    """An LLM that lists the passage's sentences, one per line."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(passage_of(body).split()))
    return 200, chat_response("Here is the rewrite:\n" + "\n".join(sentences))


def test_llm_rewrites_are_stored_failures_retried_and_echoed_questions_removed(
    tmp_path: Path, checkers
) -> None:
    chunks_dir, qa_dir, rows = synthesized(tmp_path, checkers)
    knowledge = pd.read_parquet(qa_file(qa_dir, "knowledge"))
    assert len(knowledge)
    leaked_question = max(knowledge.question, key=len)
    failing = next(r["text"] for r in rows if r["split"] == "train")

    def flaky(body: dict) -> tuple[int, str]:
        if passage_of(body) == failing:
            return 500, "upstream exploded"
        if "one self-contained sentence per line" in body["messages"][-1]["content"]:
            return 200, chat_response(f"{leaked_question} Everyone asks it.")  # a rewrite that leaks
        return rewriting_responder(body)

    kinds = ["shuffled", "facts", "rephrased"]
    settings = AugmentSettings(backend="synthesis", kinds=kinds, versions_per_chunk=3)
    with StubServer(flaky) as server:
        synth = openai_settings(server.base_url)
        first = augment(chunks_dir, qa_dir, tmp_path / "a", tmp_path / "s", settings, synth)
        pretrained = sum(r["split"] in ("train", "knowledge") for r in rows)
        assert first.requests == 2 * pretrained  # shuffled stays a rule
        assert first.rewrites_failed == 2 and not first.complete
        assert first.rewrites_contaminated >= 1  # every facts reply leaked the question; only it is removed
        texts = pd.read_parquet(Path(first.path) / AUGMENT_TEXTS_FILE)
        assert not texts["text"].str.contains(leaked_question, regex=False).any()
        assert not texts["text"].str.startswith("Here is").any()  # the preamble is dropped
        assert set(texts["backend"]) == {"rules", "llm"}
        assert set(texts.loc[texts.backend == "llm", "model"]) == {"stub-model"}

        served = len(server.requests)
        server.responder = rewriting_responder
        second = augment(chunks_dir, qa_dir, tmp_path / "a", tmp_path / "s", settings, synth)
    assert second.requests == 2 and len(server.requests) == served + 2  # only the failed ones again
    assert second.complete and second.rewrites_failed == 0


# --- pretraining reads them ---------------------------------------------------------------------


def test_pretraining_reads_the_rewrites_and_the_sft_pairs_as_sft_shows_them(
    prepared, tiny_base, tmp_path: Path
) -> None:
    from docqa.modeling import load_tokenizer
    from docqa.prompting import generation_prompt
    from docqa.stages.augment import read_augmented
    from docqa.stages.pretrain import pretrain

    recipe, chunks, qa = prepared["recipe"], Path(prepared["chunks"].path), Path(prepared["qa"].path)
    settings = AugmentSettings(kinds=["facts", "entities"], versions_per_chunk=2, mix_qa=True)
    output = augment(chunks, qa, tmp_path / "a", tmp_path / "s", settings, recipe.synthesize)
    tokenizer = load_tokenizer(tiny_base.path)
    rewrites, pairs = read_augmented(output.path, tokenizer, recipe.model)
    assert (len(rewrites), len(pairs)) == (output.rewrites_kept, output.qa_texts) and pairs
    pair = pd.read_parquet(qa_file(qa, "train")).iloc[0]
    prompt = generation_prompt(tokenizer, pair.question, recipe.model)  # what evaluation asks with
    assert sum(text.startswith(prompt + pair.answer) for text in pairs) == 1

    fast = recipe.pretrain.model_copy(update={"max_steps": 2, "eval_steps": 100})
    plain = pretrain(chunks, tiny_base, recipe.model, fast, tmp_path / "plain")
    augmented = pretrain(
        chunks, tiny_base, recipe.model, fast, tmp_path / "aug", augmented_path=Path(output.path)
    )
    assert augmented.train_tokens > 2 * plain.train_tokens  # two rewrites a chunk, and the pairs
    assert Path(augmented.adapter_path, "adapter_model.safetensors").is_file()


def test_pairs_first_puts_the_sft_pairs_blocks_before_the_documents_in_every_epoch(tiny_base) -> None:
    from docqa.modeling import load_tokenizer
    from docqa.stages.pretrain import training_blocks

    recipe = load_recipe(
        "tiny-cpu", ["augment.mix_qa=true", "pretrain.block_size=32", "pretrain.general_mix_ratio=0"]
    )
    tokenizer = load_tokenizer(tiny_base.path)
    documents = [f"Document {i} says that the river {i} drains into lake {i}." * 3 for i in range(20)]
    pairs = [f"PAIR {i}: which lake does river {i} drain into? Lake {i}." for i in range(10)]
    mixed, counts = training_blocks(documents, pairs, tokenizer, recipe.pretrain, recipe.model)
    assert counts == {"pair_blocks": 0, "general_blocks": 0}
    first = recipe.pretrain.model_copy(update={"pairs_first": True})
    ordered, counts = training_blocks(documents, pairs, tokenizer, first, recipe.model)
    assert len(mixed) - 1 <= len(ordered) <= len(mixed) and counts["pair_blocks"] > 0  # two tails cut
    lead = [tokenizer.decode(row) for row in ordered[: counts["pair_blocks"]]["input_ids"]]
    after = [tokenizer.decode(row) for row in ordered[counts["pair_blocks"] :]["input_ids"]]
    assert all("PAIR" in text or "lake" in text.lower() for text in lead)
    assert all("Document" not in text for text in lead) and not any("PAIR" in text for text in after)

    replayed = first.model_copy(update={"general_mix_ratio": 0.25, "replay_loss": "distill"})
    with_replay, counts = training_blocks(documents, pairs, tokenizer, replayed, recipe.model)
    assert counts["general_blocks"] > 0 and sum(with_replay["replay"]) == counts["general_blocks"]
    assert not any(with_replay[: counts["pair_blocks"]]["replay"])  # the pairs still lead, then the rest
    assert with_replay[: counts["pair_blocks"]]["input_ids"] == ordered[: counts["pair_blocks"]]["input_ids"]


@pytest.mark.parametrize("name", ["knowledge-levers", "seed-comparison", "forgetting-mix"])
def test_every_variant_of_the_shipped_sweeps_is_a_valid_recipe(name: str) -> None:
    from docqa.cli import read_sweep

    variants = read_sweep(Path(name))
    assert variants
    for overrides in variants.values():
        load_recipe("smollm2-cpu", overrides)  # raises SettingsError on a variant that cannot run
