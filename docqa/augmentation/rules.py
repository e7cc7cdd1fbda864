"""Offline knowledge augmentation: rewrites of a chunk made by rules, not by a language model.

A fact read once, in one phrasing, is memorised but cannot be recalled for a question (Allen-Zhu & Li,
*Physics of Language Models 3.1*): pretraining must see it in diverse forms. Without an LLM, docqa makes
them from the chunk's own prose sentences (``docqa.synthesis.extractive.prose_sentences``), so every
rewrite states only what the chunk states, in the chunk's words, but in a new order and context:

- ``shuffled``: the chunk's sentences and non-prose lines in a seeded random order;
- ``facts``: one statement per line under the document's title ("Facts from …:");
- ``entities``: notes that gather, per term the chunk talks about (a statement's subject, a quoted or
  emphasised name), every sentence that mentions it (EntiGraph's entity-centred view, without a graph);
- ``rephrased``: each sentence reworded where a rule applies: a leading condition or adverbial phrase
  moved to the end ("If C, M." → "M, if C."), "X is used to V" ↔ "X serves to V", attributed
  ("<title> says that …") where the sentence begins with a determiner.

Each version of a kind takes its own seed, so two ``shuffled`` versions differ. Bump ``RULES_VERSION``
whenever a rule changes: it is part of the per-chunk store key.
"""

from __future__ import annotations

import random
import re

from docqa.synthesis.extractive import BAD_FIRST_WORDS, prose_segments, prose_sentences, split_sentences

RULES_VERSION = "augment-rules-v1"
RULE_KINDS = ("shuffled", "facts", "entities", "rephrased")
MAX_TERM_WORDS = 6
MIN_TERM_CHARS = 3
ATTRIBUTED_SHARE = 0.5  # of the sentences no rule rewords: attributed to the title
MAX_LEADING_WORDS = 14  # a longer leading clause is the sentence's substance, not its frame

_QUOTED = re.compile(r"[\"“*]([^\"“”*\n]{3,60})[\"”*]")
_SUBJECT = re.compile(
    r"^(?:(?:The|A|An|Every|Each|All|Any) )?(?P<term>[^,;:()]+?) "
    r"(?:is|are|was|were|has|have|can|cannot|must|may|should|will|does|do|returns|yields|raises|contains|"
    r"means|refers|consists|defines|determines|provides|produces|creates|indicates|becomes)\b"
)
_LEADING = re.compile(
    r"^(?P<lead>(?:If|When|Whenever|Unless|While|Once|Although|Because|Since|After|Before|In|On|For|With|"
    r"Without|By|During|Under|At|As|From|Within|Outside|Inside)\b[^,;:]{3,}?), (?P<rest>[A-Za-z\"“*].+)$"
)
_USED_TO = re.compile(r"^(?P<subj>.+?) (?P<be>is|are) used to (?P<rest>.+)$")
_SERVES_TO = re.compile(r"^(?P<subj>.+?) (?P<verb>serves|serve) to (?P<rest>.+)$")
_DETERMINERS = ("The ", "A ", "An ", "Every ", "Each ", "All ", "Any ")


def units(text: str) -> list[str]:
    """The chunk as sentences (prose) and lines (code, grammar, headings), in reading order."""
    found: list[str] = []
    segments = {segment for _, segment in prose_segments(text)}
    for line in text.splitlines():
        joined = " ".join(line.split())
        if joined and not any(joined in segment for segment in segments):
            found.append(joined)
    for segment in segments:
        found.extend(split_sentences(segment))
    order = {unit: text.find(unit.split(" ", 1)[0]) for unit in found}
    return sorted(dict.fromkeys(found), key=lambda unit: order[unit])


def shuffled(text: str, title: str, seed: int) -> str:
    """The chunk's units in a random order (seeded), prose joined into paragraphs of three."""
    parts = units(text)
    random.Random(seed).shuffle(parts)
    return "\n".join(" ".join(parts[i : i + 3]) for i in range(0, len(parts), 3))


def facts(text: str, title: str, seed: int) -> str:
    """One statement per line under the title, in a random order from the second version on."""
    sentences = [_with_term(s.text, s.term) for s in prose_sentences(text)]
    if seed:
        random.Random(seed).shuffle(sentences)
    if not sentences:
        return ""
    head = f"Facts from {title}:" if title else "Facts:"
    return "\n".join([head, *(f"- {sentence}" for sentence in sentences)])


def entities(text: str, title: str, seed: int) -> str:
    """Per term, the sentences that mention it: "About <term> (<title>): …"; terms in a seeded order."""
    sentences = [_with_term(s.text, s.term) for s in prose_sentences(text)]
    notes: dict[str, list[str]] = {}
    quoted = {match.group(1) for sentence in sentences for match in _QUOTED.finditer(sentence)}
    for term in terms(sentences):
        # a quoted name ("with") is mentioned where it is quoted, not wherever the word occurs
        pattern = rf"[\"“*]{re.escape(term)}[\"”*]" if term in quoted else rf"(?<!\w){re.escape(term)}(?!\w)"
        mention = re.compile(pattern, re.IGNORECASE)
        mentions = [s for s in sentences if mention.search(s)]
        if mentions:
            notes[term] = mentions
    if not notes:
        return ""
    order = list(notes)
    random.Random(seed).shuffle(order)
    where = f" ({title})" if title else ""
    return "\n".join(f"About {term}{where}: {' '.join(notes[term])}" for term in order)


def rephrased(text: str, title: str, seed: int) -> str:
    """Each prose sentence reworded where a rule applies, attributed to the title where it reads well."""
    rng = random.Random(seed)
    out = []
    for sentence in prose_sentences(text):
        reworded = reword(sentence.text)
        if (
            reworded == sentence.text
            and title
            and sentence.text.startswith(_DETERMINERS)
            and rng.random() < ATTRIBUTED_SHARE
        ):
            reworded = f"{title} says that {sentence.text[0].lower()}{sentence.text[1:]}"
        out.append(_with_term(reworded, sentence.term))
    return " ".join(out)


def reword(sentence: str) -> str:
    """A leading condition or phrase moved to the end, or "used to" ↔ "serves to"; else the sentence."""
    body, end = sentence[:-1], sentence[-1]
    leading = _LEADING.match(body)
    if leading and len(leading["lead"].split()) <= MAX_LEADING_WORDS:
        rest = leading["rest"]
        lead = leading["lead"]
        return f"{rest[0].upper()}{rest[1:]}, {lead[0].lower()}{lead[1:]}{end}"
    used = _USED_TO.match(body)
    if used:
        verb = "serves" if used["be"] == "is" else "serve"
        return f"{used['subj']} {verb} to {used['rest']}{end}"
    serves = _SERVES_TO.match(body)
    if serves:
        be = "is" if serves["verb"] == "serves" else "are"
        return f"{serves['subj']} {be} used to {serves['rest']}{end}"
    return sentence


def terms(sentences: list[str]) -> list[str]:
    """What the sentences talk about: subjects, and quoted or emphasised names, in first-seen order."""
    found: dict[str, str] = {}
    for sentence in sentences:
        subject = _SUBJECT.match(sentence)
        if subject and subject["term"].split()[0].casefold() not in BAD_FIRST_WORDS:
            found.setdefault(subject["term"].casefold(), subject["term"])
        for quoted in _QUOTED.finditer(sentence):  # a quoted name may be any word ("with", "if")
            found.setdefault(quoted.group(1).casefold(), quoted.group(1))
    return [t for t in found.values() if len(t) >= MIN_TERM_CHARS and len(t.split()) <= MAX_TERM_WORDS]


def _with_term(sentence: str, term: str | None) -> str:
    """API reference prose names its signature, which the sentence alone leaves implicit."""
    return f"{term}: {sentence}" if term and term not in sentence else sentence


MAKERS = {"shuffled": shuffled, "facts": facts, "entities": entities, "rephrased": rephrased}


def rewrite(kind: str, text: str, title: str, seed: int) -> str:
    """The ``kind`` rewrite of one chunk (empty when the kind finds nothing to say in it)."""
    if kind not in MAKERS:
        raise ValueError(f"no rule makes {kind!r} rewrites; the rules make {', '.join(RULE_KINDS)}")
    return MAKERS[kind](text, title, seed).strip()
