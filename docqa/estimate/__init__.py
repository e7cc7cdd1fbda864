"""``docqa estimate``: what a run would process and how long each stage should take, before anything runs.

It reads page counts (pypdf, no text extraction), the text of a few pages of each document, the base
model's ``tokenizer.json`` and ``config.json`` when they are on disk, and the throughputs the benchmarks
measured (``docqa/data/throughputs.json``). It loads no model, trains nothing and sends no request.

Every time shown comes from a named measurement, used as measured or scaled by a stated rule (FLOPs per
token: 6·N for training, 2·N for a forward pass, N the parameter count), or it is ``unknown`` with the
reason and the benchmark command that would measure it. Nothing is invented to fill a gap.

One concern per module: ``figures`` (the throughputs file), ``survey`` (the documents and the model's
size), ``rates`` (choosing and scaling a figure per stage), ``work`` (the work per stage and its time:
the estimate), ``render`` (what the command prints).
"""

from docqa.estimate.figures import DEFAULT_THROUGHPUTS, Figure, ThroughputFile, load_figures
from docqa.estimate.render import print_estimate, render_estimate, summary_lines
from docqa.estimate.survey import (
    CHARS_PER_TEXT_PAGE,
    KNOWN_ARCHITECTURES,
    DocumentEstimate,
    llama_parameters,
    model_size,
)
from docqa.estimate.work import Estimate, augmented_tokens, estimate

__all__ = [
    "CHARS_PER_TEXT_PAGE",
    "DEFAULT_THROUGHPUTS",
    "KNOWN_ARCHITECTURES",
    "DocumentEstimate",
    "Estimate",
    "Figure",
    "ThroughputFile",
    "augmented_tokens",
    "estimate",
    "llama_parameters",
    "load_figures",
    "model_size",
    "print_estimate",
    "render_estimate",
    "summary_lines",
]
