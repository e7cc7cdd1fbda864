"""ROUGE-1/2/L as an `evaluate` metric module kept in the repository.

`evaluate.load("rouge")` fetches its script from the Hugging Face Hub and fails offline; this module
loads from a local path instead. It is built on `rouge_score`, with a tokenizer that keeps non-ASCII
words (rouge_score's default drops them: "läuft" becomes "l", "uft"), and it reports the plain mean
F-measure over examples (deterministic; rouge_score's bootstrap aggregator resamples).
"""

import re

import datasets
import evaluate
from nltk.stem import porter
from rouge_score import rouge_scorer

_WORD = re.compile(r"\w+", re.UNICODE)
_MIN_STEM_LENGTH = 4  # rouge_score stems only tokens longer than 3 characters

_DESCRIPTION = "ROUGE-1, ROUGE-2 and ROUGE-L F-measures, Unicode-aware tokenization, mean over examples."
_KWARGS = """
predictions: list of generated texts. references: list of reference texts.
rouge_types: subset of ["rouge1", "rouge2", "rougeL"]. use_stemmer: Porter-stem ASCII words.
Returns: {rouge_type: mean F-measure in [0, 1]}.
"""


class UnicodeWordTokenizer:
    def __init__(self, use_stemmer: bool):
        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        if self._stemmer is None:
            return words
        return [self._stemmer.stem(w) if len(w) >= _MIN_STEM_LENGTH and w.isascii() else w for w in words]


class DocqaRouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004.",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, rouge_types=("rouge1", "rouge2", "rougeL"), use_stemmer=True):
        scorer = rouge_scorer.RougeScorer(list(rouge_types), tokenizer=UnicodeWordTokenizer(use_stemmer))
        totals = dict.fromkeys(rouge_types, 0.0)
        for prediction, reference in zip(predictions, references, strict=True):
            for rouge_type, score in scorer.score(reference, prediction).items():
                totals[rouge_type] += score.fmeasure
        count = max(len(predictions), 1)
        return {rouge_type: total / count for rouge_type, total in totals.items()}
