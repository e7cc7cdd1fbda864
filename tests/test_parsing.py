"""``parse_reply`` against a fixture set of real-looking model replies (``tests/fixtures/replies``): each
reply must give exactly the pairs a careful reader recovers, and a reason when it gives none."""

from __future__ import annotations

import pytest
from reply_fixtures import Case, load_reply_fixtures, pair_key

from docqa.synthesis import parse_reply

CASES = load_reply_fixtures()
MIN_CASES = 50
REQUIRED_STYLES = {
    # JSON, whole or wrapped
    "plain_json",
    "json_wrapper",
    "fenced_prose",
    "fence_no_lang",
    "extra_fields",
    "numeric_answer",
    "key_case",
    "alt_keys",
    "list_of_strings",
    "two_json_lists",
    "html_entities",
    # near-JSON and cut-off JSON
    "trailing_commas",
    "single_quotes",
    "unquoted_keys",
    "python_literals",
    "smart_quotes",
    "cut_mid_list",
    "cut_mid_string",
    # text layouts
    "question_answer_text",
    "q1_a1",
    "bold_labels",
    "numbered_indented_answer",
    "markdown_headings",
    "split_question",
    "multiline_answer",
    "non_english",
    # nothing, or something to drop
    "duplicate_pairs",
    "degenerate_answer",
    "echo_passage",
    "answers_missing",
    "question_without_answer",
    "refusal",
    "empty",
    # around the reply
    "think_block",
    "unfinished_think",
    "template_leakage",
}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_parse_reply_recovers_exactly_the_expected_pairs(case: Case) -> None:
    pairs, reason = parse_reply(case.reply)
    assert [pair_key(pair) for pair in pairs] == [pair_key(pair) for pair in case.expected]
    if case.expected:
        assert reason is None
    else:
        assert reason, "a reply with no pairs must say why"
        assert case.reason_contains is None or case.reason_contains in reason


def test_the_fixture_set_is_large_and_covers_every_reply_style() -> None:
    assert len(CASES) >= MIN_CASES
    tagged = {tag for case in CASES for tag in case.tags}
    assert tagged >= REQUIRED_STYLES, f"styles without a fixture: {sorted(REQUIRED_STYLES - tagged)}"
    assert sum(bool(case.expected) for case in CASES) >= MIN_CASES // 2
    assert sum(not case.expected for case in CASES) >= 10


def test_the_pairs_come_back_clean() -> None:
    """No field of any returned pair is blank, carries a label, or is a fragment of JSON."""
    for case in CASES:
        for pair in parse_reply(case.reply)[0]:
            for text in (pair.question, pair.answer):
                assert text == text.strip() and text, case.name
                assert not text.lower().startswith(("question:", "answer:", "q:", "a:")), case.name
                assert '"answer"' not in text and '"question"' not in text, case.name
            assert "Answer:" not in pair.question, case.name
