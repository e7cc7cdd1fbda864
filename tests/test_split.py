"""The split rules: by content hash and seed, stable as items are added, never empty on a side that can
be filled, and no control for a corpus too small to hold a document out."""

from __future__ import annotations

import pytest

from docqa.settings import SplitSettings
from docqa.split import chunk_sides, document_sides, hold_out, score


def docs(n: int) -> list[tuple[str, str]]:
    return [(f"doc{i}.pdf", f"{i:064x}") for i in range(n)]


def test_the_hash_rule_holds_out_about_the_fraction_and_is_stable_as_documents_are_added():
    settings = SplitSettings(eval_fraction=0.3, seed=3)
    many = document_sides(docs(400), settings)
    assert 0.22 < sum(side == "eval" for side in many.values()) / 400 < 0.38
    fewer = document_sides(docs(200), settings)
    assert {sha: many[sha] for sha in fewer} == fewer  # 200 more documents moved none of the first 200


def test_the_seed_changes_the_split_and_globs_force_documents_out():
    assert document_sides(docs(50), SplitSettings(seed=1)) != document_sides(docs(50), SplitSettings(seed=2))
    forced = document_sides(docs(10), SplitSettings(eval_fraction=0.01, eval_documents=["doc3.*"]))
    assert [sha for sha, side in forced.items() if side == "eval"] == [f"{3:064x}"]


def test_one_document_has_no_control_and_a_larger_minimum_keeps_more_documents_in_training():
    assert document_sides(docs(1), SplitSettings()) == {f"{0:064x}": "train"}
    three = document_sides(docs(3), SplitSettings(min_documents_for_control=4))
    assert set(three.values()) == {"train"}


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_small_corpora_get_exactly_the_fallbacks_they_need(n):
    for fraction in (1e-9, 0.2, 0.999999):
        sides = document_sides(docs(n), SplitSettings(eval_fraction=fraction))
        assert "train" in sides.values() and "eval" in sides.values()
    none_by_rule = document_sides(docs(n), SplitSettings(eval_fraction=1e-9))
    scores = {sha: score(SplitSettings(), "document", sha) for _, sha in docs(n)}
    assert [sha for sha, side in none_by_rule.items() if side == "eval"] == [min(scores, key=scores.get)]


def test_hold_out_leaves_a_forced_only_corpus_held_out_and_a_single_key_alone():
    assert hold_out({"a": 0.9, "b": 0.8}, 0.5, forced=["a", "b"]) == {"a", "b"}
    assert hold_out({"a": 0.1}, 0.5) == set()


def test_knowledge_chunks_are_their_own_draw_and_stable():
    ids = [f"chunk{i}" for i in range(300)]
    settings = SplitSettings(knowledge_fraction=0.25)
    sides = chunk_sides(ids, settings)
    assert 0.18 < sum(side == "knowledge" for side in sides.values()) / 300 < 0.32
    assert {c: sides[c] for c in ids[:100]} == chunk_sides(ids[:100], settings)
    two = chunk_sides(["a", "b"], SplitSettings(knowledge_fraction=1e-9))
    assert sorted(two.values()) == ["knowledge", "train"]
    assert chunk_sides(["only"], settings) == {"only": "train"}  # a single chunk is SFT's data
