"""Language identification for synthesized pairs (lingua, a subset of languages): which language a pair
is in, or unsure. Slow to load: callers create it once (:func:`load_language_identifier`) and pass it in."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from lingua import IsoCode639_1, LanguageDetectorBuilder

# Measured on a shared 2-core CPU (lingua 2.1, high-accuracy mode, RSS growth):
#   all 75 languages, lazy: 880 MiB, 8.5 s to load the Latin-script models on first use, ~2 ms a text;
#   the 12 below, preloaded: 190–250 MiB, 1–2 s to build, ~0.4 ms a pair;
#   low-accuracy mode (all languages): 56 MiB, but it is confidently wrong on short English
#   ("Which HTTP status code means Not Found?" → Latin 0.79; "Who proposed the LoRA method?…" → Latin),
#   and question + answer is exactly such a short text, so it is not used.
# The subset holds the languages an LLM drifts into (English above all, Chinese for Qwen-style models,
# the large European languages); the target language is always added. A pair in a language outside it
# is attributed to a neighbour, as a rule with low confidence, and kept: this check trades some recall
# for never rejecting good pairs.
DEFAULT_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "zh", "ja", "ko")
# English pairs of 6–15 words score 0.4–0.95 for English, German/French/Spanish ones 0.9–1.0 for theirs;
# a proper name ("Who wrote Der Steppenwolf? Hermann Hesse.") can tip a short English pair to German at
# ~0.3. Below this the verdict is "unsure" (None), and an unsure pair is kept.
MIN_LANGUAGE_CONFIDENCE = 0.6
MIN_LANGUAGE_WORDS = 3  # prose words left after code is removed; fewer cannot be judged
# Inline code, paths, identifiers and numbers are no language: `os.path.join`, max_retries, config.json,
# torch.cuda.is_available(), camelCase, 404. Removed before identification.
CODE_TOKEN = re.compile(
    r"`[^`]*`"
    r"|\S*\w[._/\\:=()<>\[\]{}#@$]+\w\S*"  # punctuation inside a token
    r"|\S*_\S*"  # snake_case
    r"|\b[a-z]+[A-Z]\w*"  # camelCase
    r"|\S*\d\S*"  # anything with a digit
)
# A word of prose: a run of 2+ letters, or one CJK character (those scripts put no spaces between words).
PROSE_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W\d_]{2,}")


def _iso_code(code: str) -> IsoCode639_1:
    try:
        return IsoCode639_1.from_str(code)
    except ValueError as err:
        raise ValueError(
            f"lingua knows no language with ISO 639-1 code {code!r}; set synthesize.language to one of "
            "its 75 codes (such as 'en', 'de', 'fr') or set synthesize.check_language to false"
        ) from err


def prose_of(text: str) -> str:
    """``text`` without inline code, identifiers, paths and numbers (what language identification reads)."""
    return " ".join(CODE_TOKEN.sub(" ", unicodedata.normalize("NFC", text)).split())


class LanguageIdentifier:
    """lingua's high-accuracy detector over a preloaded subset of languages (see the measurements above)."""

    def __init__(self, languages: Sequence[str] = DEFAULT_LANGUAGES) -> None:
        codes = list(dict.fromkeys(code.lower() for code in languages))
        if len(codes) < 2:
            raise ValueError(f"language identification needs two or more languages to compare, got {codes}")
        self.languages = tuple(codes)
        self._detector = (
            LanguageDetectorBuilder.from_iso_codes_639_1(*map(_iso_code, codes))
            .with_preloaded_language_models()
            .build()
        )

    def language_of(self, text: str) -> str | None:
        """ISO 639-1 code of the text's language, or None when unsure.

        Unsure: fewer than :data:`MIN_LANGUAGE_WORDS` words of prose once code is removed, or the most
        likely language has confidence below :data:`MIN_LANGUAGE_CONFIDENCE`.
        """
        prose = prose_of(text)
        if len(PROSE_WORD.findall(prose)) < MIN_LANGUAGE_WORDS:
            return None
        best = self._detector.compute_language_confidence_values(prose)[0]
        if best.value < MIN_LANGUAGE_CONFIDENCE:
            return None
        return best.language.iso_code_639_1.name.lower()


def load_language_identifier(language: str, others: Sequence[str] = DEFAULT_LANGUAGES) -> LanguageIdentifier:
    """A detector that tells ``language`` (the target) from ``others``."""
    return LanguageIdentifier([language, *others])
