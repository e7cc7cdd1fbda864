"""What a person sees before approving a synthesized dataset: a sample of pairs, coverage and rejections.

Plain Markdown built from a published synthesis folder, shown as a Prefect artifact while the flow run
is paused (see ``flows/pipeline.py``); the API key is redacted from it like from every other artifact.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from docqa.outputs import QA_SPLITS as SPLITS
from docqa.outputs import qa_file
from docqa.secrets import redact
from docqa.workspace import read_json

CELL_CHARS = 240
SAMPLE_SEED = 0


def review_sample(qa_path: Path, n: int, seed: int = SAMPLE_SEED) -> list[dict]:
    """``n`` pairs drawn evenly from both splits (fixed seed), each with its lineage."""
    rows = []
    for split in SPLITS:
        rows += pd.read_parquet(qa_file(qa_path, split)).to_dict("records")
    return random.Random(seed).sample(rows, min(n, len(rows)))


def review_markdown(qa_path: Path, n: int) -> str:
    summary = read_json(Path(qa_path) / "summary.json")
    contamination = summary["contamination"]
    contaminated = contamination["eval_pairs_removed"] + contamination["knowledge_pairs_removed"]
    lines = [
        "## Synthesized dataset awaiting review",
        "",
        f"**{summary['qa_train']}** training, **{summary['qa_knowledge']}** knowledge-question and "
        f"**{summary['qa_eval']}** held-out-document pairs from "
        f"**{summary['chunks']}** chunks ({summary['identity'].get('backend')}, "
        f"model {summary['identity'].get('model')}). Approve to start training; reject to stop here.",
        "",
        "| chunk state | chunks |",
        "|---|---|",
        *(f"| {state} | {n_chunks} |" for state, n_chunks in summary["chunk_states"].items()),
        "",
        "| rejected because | pairs |",
        "|---|---|",
        *(f"| {reason} | {count} |" for reason, count in summary["rejected_by_reason"].items()),
        f"| removed as contaminated held-out pairs | {contaminated} |",
        "",
        "| document | split | chunks | chunks with pairs | pairs |",
        "|---|---|---|---|---|",
        *(
            f"| {markdown_cell(doc['doc_title'] or doc_id)} | {doc['split']} | {doc['chunks']} | "
            f"{doc['chunks_with_pairs']} | {doc['pairs']} |"
            for doc_id, doc in summary["per_document"].items()
        ),
        "",
        f"### {n} sample pairs",
        "",
        "| question | answer | document, pages | split |",
        "|---|---|---|---|",
    ]
    for row in review_sample(Path(qa_path), n):
        source = (
            f"{markdown_cell(row['doc_title'] or row['doc_id'])}, p. {row['page_start']}–{row['page_end']}"
        )
        cells = (markdown_cell(row["question"]), markdown_cell(row["answer"]), source, row["split"])
        lines.append("| " + " | ".join(cells) + " |")
    return redact("\n".join(lines))


def markdown_cell(text: str, limit: int = CELL_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters, with its pipes escaped for a Markdown table."""
    return " ".join(str(text).split())[:limit].replace("|", "\\|")
