"""Quality filters: each rejection reason on a realistic bad pair, never on a good one; the real models."""

from __future__ import annotations

from pydoc_data.topics import topics

import pytest

from docqa.settings import SynthesizeSettings
from docqa.synthesis.embedder import Embedder, bundled_model_path, load_embedder
from docqa.synthesis.language import LanguageIdentifier, load_language_identifier
from docqa.synthesis.quality import (
    ANSWER_NOT_IN_CHUNK,
    ANSWER_TOO_LONG,
    ANSWER_TOO_SHORT,
    ANSWER_UNLIKE_CHUNK,
    DUPLICATE_QUESTION,
    NEAR_DUPLICATE_QUESTION,
    QUESTION_REFERS_TO_PASSAGE,
    QUESTION_TOO_LONG,
    QUESTION_TOO_SHORT,
    REJECTION_REASONS,
    REPETITIVE,
    WRONG_LANGUAGE,
    Candidate,
    chunk_shingles,
    near_duplicate_chunks,
    refers_to_passage,
    rejection_reasons,
)

SETTINGS = SynthesizeSettings()  # the defaults: en, overlap 0.5, similarity 0.3, near duplicates 0.8

JOIN = (
    "The os.path.join function joins one or more path components intelligently. The return value is the "
    "concatenation of path and any members of paths with exactly one directory separator following each "
    "non-empty part except the last. If a component is an absolute path, all previous components are "
    "thrown away and joining continues from the absolute path component. On Windows, the drive is not "
    "reset when a rooted path segment is encountered. The function never touches the file system: it only "
    "manipulates strings, so the resulting path need not exist."
)
WATER = (
    "At sea level, the boiling point of water is 100 degrees Celsius. At higher altitudes the air pressure "
    "is lower, so water boils at a lower temperature: in Denver, about 1,600 metres up, the boiling point "
    "of water is roughly 95 degrees Celsius."
)
UNIX = (
    "Unix was first developed in 1969 at Bell Labs by Ken Thompson and Dennis Ritchie. It was rewritten in "
    "the C programming language in 1973, which made the operating system portable to other machines."
)
GOOD = Candidate(
    "What does os.path.join do when a component is an absolute path?",
    "It throws away all previous components and continues joining from the absolute path component.",
    "join",
    JOIN,
)


def pair(question: str, answer: str, chunk: str = JOIN, chunk_id: str = "join") -> Candidate:
    return Candidate(question, answer, chunk_id, chunk)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder()


@pytest.fixture(scope="module")
def language_id() -> LanguageIdentifier:
    return load_language_identifier("en")


def test_reasons_are_fixed_constants_in_check_order():
    assert REJECTION_REASONS[:2] == (QUESTION_TOO_SHORT, ANSWER_TOO_SHORT)
    assert REJECTION_REASONS[-2:] == (DUPLICATE_QUESTION, NEAR_DUPLICATE_QUESTION)
    assert len(set(REJECTION_REASONS)) == len(REJECTION_REASONS) == 11


def test_good_pairs_pass_every_check(embedder, language_id):
    good = [
        GOOD,
        pair(
            "Which characters does os.path.join put between path components?",
            "Exactly one directory separator.",
        ),
        pair("Does the path built by os.path.join have to exist?", "No, it only manipulates strings."),
        pair("What is the boiling point of water at sea level?", "100 degrees Celsius.", WATER, "water"),
        pair(
            "Why does water boil at a lower temperature in Denver?",
            "The air pressure is lower.",
            WATER,
            "water",
        ),
        pair("In which year was Unix first developed?", "In 1969, at Bell Labs.", UNIX, "unix"),
    ]
    assert rejection_reasons(good, SETTINGS, embedder, language_id) == [None] * len(good)


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (pair("Why?", "Because it joins paths."), QUESTION_TOO_SHORT),
        (pair("What does os.path.join return?", "A"), ANSWER_TOO_SHORT),
        (pair("What does os.path.join return " + "when it is given many components " * 12 + "?", "A path."),
         QUESTION_TOO_LONG),
        (pair("What does os.path.join return?", "It returns the joined path. " + "Components matter. " * 45),
         ANSWER_TOO_LONG),
        (pair("According to the passage, what does os.path.join return?", "The concatenation of path."),
         QUESTION_REFERS_TO_PASSAGE),
        (pair("What does os.path.join return?", "It joins the path components. " * 4), REPETITIVE),
        (pair("What does os.path.join return?", "The path path path path path path path path."), REPETITIVE),
        (pair("What does os.path.join do with an absolute path?",
              "It downloads the file from the internet and caches it in the home directory."),
         ANSWER_NOT_IN_CHUNK),
        (pair("What does os.path.join return?", "Yes."), ANSWER_NOT_IN_CHUNK),  # no content word at all
    ],
)  # fmt: skip
def test_each_cheap_reason_on_a_realistic_bad_pair(candidate, reason):
    assert rejection_reasons([candidate], SETTINGS, None, None) == [reason]


def test_answer_unlike_chunk_needs_the_embedder(embedder):
    # Answered from world knowledge; the one content word (1969) happens to be in the chunk.
    off_topic = pair("In which year did Apollo 11 land on the Moon?", "In 1969.", UNIX, "unix")
    assert rejection_reasons([off_topic], SETTINGS, None, None) == [None]
    assert rejection_reasons([off_topic], SETTINGS, embedder, None) == [ANSWER_UNLIKE_CHUNK]


def test_wrong_language_only_when_checked(language_id):
    german = pair(
        "Was macht os.path.join, wenn eine Komponente ein absoluter Pfad ist?",
        "Alle vorherigen Komponenten werden verworfen.",
    )
    assert rejection_reasons([german], SETTINGS, None, language_id) == [WRONG_LANGUAGE]
    # Without a verdict on language, the German answer shares no word with the English chunk.
    assert rejection_reasons([german], SETTINGS, None, None) == [ANSWER_NOT_IN_CHUNK]
    unchecked = SETTINGS.model_copy(update={"check_language": False})
    assert rejection_reasons([german], unchecked, None, language_id) == [ANSWER_NOT_IN_CHUNK]
    target_german = SETTINGS.model_copy(update={"language": "de"})
    assert load_language_identifier("de").language_of(f"{german.question}\n{german.answer}") == "de"
    assert rejection_reasons([GOOD], target_german, None, language_id) == [WRONG_LANGUAGE]


class SpyEmbedder:
    """Records what would be embedded; every pair is "like" its chunk."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def passage_similarities(self, texts: list[str], passages: list[str]) -> list[float]:
        self.calls.append(list(texts))
        return [1.0] * len(texts)


def test_only_pairs_passing_the_cheap_checks_are_embedded_in_one_batch():
    spy = SpyEmbedder()
    candidates = [GOOD, pair("Why?", "No idea."), pair("What does os.path.join do?", "It bakes bread."), GOOD]
    reasons = rejection_reasons(candidates, SETTINGS, spy, None)
    assert reasons == [None, QUESTION_TOO_SHORT, ANSWER_NOT_IN_CHUNK, DUPLICATE_QUESTION]
    assert spy.calls == [[f"{GOOD.question}\n{GOOD.answer}"] * 2]  # duplicates are judged after embedding


def test_first_failing_reason_wins():
    # refers to the passage, repeats itself, and is not supported by the chunk
    bad = pair(
        "According to the passage, what does it return?", "Bananas, bananas, bananas, bananas, bananas."
    )
    assert rejection_reasons([bad], SETTINGS, None, None) == [QUESTION_REFERS_TO_PASSAGE]
    assert rejection_reasons([pair("Why?", bad.answer)], SETTINGS, None, None) == [QUESTION_TOO_SHORT]


def test_duplicates_exact_and_near_earliest_kept_wins():
    water = [
        pair("What is the boiling point of water at sea level?", "100 degrees Celsius.", WATER, "water"),
        pair("what is the boiling point of water at sea level", "It is 100 degrees Celsius.", WATER, "water"),
        pair("What's the boiling point of water at sea level?", "100 degrees Celsius.", WATER, "water"),
        pair("What is the boiling point of water in Denver?", "Roughly 95 degrees Celsius.", WATER, "water"),
        pair(
            "Why does water boil at a lower temperature in Denver?",
            "The air pressure is lower.",
            WATER,
            "water",
        ),
    ]
    assert rejection_reasons(water, SETTINGS, None, None) == [
        None,
        DUPLICATE_QUESTION,
        NEAR_DUPLICATE_QUESTION,
        None,
        None,
    ]


def test_a_rejected_pair_does_not_block_its_duplicate():
    question = "What is the boiling point of water at sea level?"
    first = pair(question, "It is made of cheese.", WATER, "water")  # unsupported
    second = pair(question, "100 degrees Celsius.", WATER, "water")
    assert rejection_reasons([first, second], SETTINGS, None, None) == [ANSWER_NOT_IN_CHUNK, None]


@pytest.mark.parametrize(
    "question",
    [
        "According to the passage, what does os.path.join return?",
        "According to the given text, which separator is used?",
        "What does the author say about absolute paths?",
        "What is the author's view on rooted path segments?",
        "In this excerpt, what happens to the drive on Windows?",
        "What is the main topic of this document?",
        "Which function is mentioned above?",
        "Which behaviour is described in the text?",
        "What does the text say about the drive letter?",
        "What does the passage describe?",
        "Which example is shown in the following section?",
    ],
)
def test_questions_leaning_on_the_passage(question):
    assert refers_to_passage(question)


@pytest.mark.parametrize(
    "question",
    [
        "What does the `text` attribute of an element hold?",
        "What does the text attribute of an element hold?",
        "What is a text file?",
        "Who is the author of PEP 8?",
        "How do you open a text file in read mode?",
        "What does the context manager protocol require?",
        "Which method returns the text content of a node?",
        "What is the document object model?",
        "What happens when the value is above the limit?",
        "What is stored in the section header of an INI file?",
    ],
)
def test_questions_naming_their_subject(question):
    assert not refers_to_passage(question)


def test_embedder_is_the_bundled_minilm(embedder):
    assert (
        bundled_model_path() / "model.safetensors"
    ).stat().st_size > 50_000_000  # real weights, no pointer
    assert embedder.model.get_sentence_embedding_dimension() == 384
    paraphrase, unrelated = embedder.similarities(
        ["How do I join two file paths?", "How do I join two file paths?"],
        ["What is the way to combine two paths into one?", "Bananas are rich in potassium."],
    )
    assert paraphrase > 0.5 > unrelated + 0.3
    assert embedder.similarities([], []) == []


def test_long_chunks_are_judged_by_their_best_window(embedder):
    # ~300 words on `import`, then the `while` statement: the model alone would only see the first part.
    long_chunk = " ".join(topics["import"].split()[:300]) + "\n\n" + topics["while"].strip()
    windows = embedder.windows(long_chunk)
    assert len(windows) >= 2
    assert long_chunk.startswith(windows[0])
    assert long_chunk.endswith(windows[-1])
    pair_text = (
        "How does a while loop run?\nIt executes its suite repeatedly as long as the expression is true."
    )
    truncated = embedder.similarities([pair_text], [long_chunk])[0]
    best = embedder.passage_similarities([pair_text], [long_chunk])[0]
    assert best > truncated + 0.2


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("What is the boiling point of water at sea level?\nIt is 100 degrees Celsius.", "en"),
        ("Wie hoch ist der Siedepunkt von Wasser auf Meereshöhe?\nEr liegt bei 100 Grad Celsius.", "de"),
        (
            "Quel est le point d'ébullition de l'eau au niveau de la mer ?\nIl est de 100 degrés Celsius.",
            "fr",
        ),
    ],
)
def test_language_identified(language_id, text, language):
    assert language_id.language_of(text) == language


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("What does `os.path.join` return?", "A `str`."),
        ("What does os.path.join return?", "The joined path."),
        ("What is the default value of max_retries?", "3."),
        ("Which HTTP status code means Not Found?", "404."),
        ("Who wrote Der Steppenwolf?", "Hermann Hesse."),
        ("What does torch.cuda.is_available() check?", "Whether a CUDA device can be used."),
    ],
)
def test_short_technical_english_is_not_another_language(language_id, question, answer):
    assert language_id.language_of(f"{question}\n{answer}") in ("en", None)


def test_too_little_prose_is_unsure(language_id):
    assert language_id.language_of("`os.path.join(a, b)`\n42") is None


def test_near_duplicate_chunks():
    base = topics["with"]
    edited = base.replace("suite", "block", 1)
    assert edited != base
    chunks = [
        ("a", base),
        ("b", topics["while"]),
        ("c", edited),  # one word changed
        ("d", topics["for"]),
        ("e", base),  # an exact copy
    ]
    assert near_duplicate_chunks(chunks, SETTINGS.chunk_near_duplicate_threshold) == {"c": "a", "e": "a"}


def test_short_chunks_do_not_all_collide():
    short = [("a", "See Table 3."), ("b", "Continued on page 4."), ("c", "Index"), ("d", "see table 3")]
    assert chunk_shingles("Index") == frozenset(["index"])
    assert near_duplicate_chunks(short, 0.9) == {"d": "a"}
    assert near_duplicate_chunks(short, 1.0) == {"d": "a"}  # the settings allow 1.0: exact copies only
    assert near_duplicate_chunks([("empty", ""), ("also-empty", "  ")], 0.9) == {}
