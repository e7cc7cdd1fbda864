"""`docqa estimate`: counts from the documents, times from measured throughputs only, nothing heavy loaded."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_BOOTSTRAP, write_topic_documents
from pdf_factory import write_empty_file, write_image_only_pdf, write_report_pdf, write_text_file
from rich.console import Console

import bench.report
from bench import gpu_qlora
from docqa.estimate import (
    CHARS_PER_TEXT_PAGE,
    DEFAULT_THROUGHPUTS,
    KNOWN_ARCHITECTURES,
    Estimate,
    estimate,
    llama_parameters,
    load_figures,
    print_estimate,
)
from docqa.settings import load_recipe

GPU_STAGES = ("pretrain", "sft", "evaluate · answers", "evaluate · perplexity")
REPO = Path(__file__).resolve().parent.parent


def tiny_cpu_with_test_base(*overrides: str):
    """The tiny-cpu recipe on the test session's bootstrap base (built by the tiny_base fixture)."""
    bootstrap = [f"model.bootstrap.{key}={value}" for key, value in TINY_BOOTSTRAP.model_dump().items()]
    return load_recipe("tiny-cpu", ["model.embedded=tiny-bootstrap", *bootstrap, *overrides])


def row(result: Estimate, stage: str):
    return next(r for r in result.rows if r.stage == stage)


def without_gpu_figures(folder: Path) -> Path:
    """The shipped throughputs, less any GPU figure (so the test holds after the GPU bench has run)."""
    data = json.loads(DEFAULT_THROUGHPUTS.read_text())
    data["figures"] = {k: f for k, f in data["figures"].items() if f["device_kind"] != "gpu"}
    path = folder / "throughputs.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def report_pdfs(tmp_path) -> Path:
    docs = tmp_path / "pdfs"
    docs.mkdir()
    for pages in (1, 3, 7, 13):
        write_report_pdf(docs / f"report-{pages}.pdf", pages=pages, title=f"Report {pages}")
    return docs


def test_shipped_throughputs_are_valid_and_cite_benchmark_sections():
    figures, missing = load_figures(DEFAULT_THROUGHPUTS)
    assert missing is None and figures
    sections = (REPO / "docs" / "benchmarks.md").read_text()
    for key, figure in figures.items():
        assert figure.command.startswith("python bench/"), key
        if figure.source.startswith("docs/benchmarks.md"):
            section = figure.source.split("section ", 1)[1].split(" ", 1)[0]
            assert f"<!-- {section} -->" in sections, f"{key} cites {section}, which docs/benchmarks.md lacks"


def test_the_wheel_carries_the_throughputs_the_estimate_reads(tmp_path):
    """A wheel or a Docker image has no docs/ folder: the figures must travel inside the package."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True)  # fmt: skip
    (wheel,) = tmp_path.glob("docqa-*.whl")
    shipped = zipfile.ZipFile(wheel).read("docqa/data/throughputs.json")
    assert DEFAULT_THROUGHPUTS.is_relative_to(REPO / "docqa") and shipped == DEFAULT_THROUGHPUTS.read_bytes()


def test_page_counts_are_the_real_pages(report_pdfs, tmp_path):
    write_text_file(report_pdfs / "notes.txt", "A line of plain notes about the widgets.\n" * 200)
    result = estimate(report_pdfs, load_recipe("tiny-cpu"))
    pages = {d.name: d.pages for d in result.documents}
    assert pages == {
        "report-1.pdf": 1,
        "report-3.pdf": 3,
        "report-7.pdf": 7,
        "report-13.pdf": 13,
        "notes.txt": math.ceil(len("A line of plain notes about the widgets.\n" * 200) / CHARS_PER_TEXT_PAGE),
    }
    assert next(d for d in result.documents if d.name == "report-13.pdf").pages_read < 13  # sampled
    assert result.work.pages == sum(pages.values())


def test_chunk_estimate_is_near_what_the_chunker_makes(tmp_path, tiny_base):
    from docqa.modeling import load_tokenizer
    from docqa.stages.chunk import chunk_document
    from docqa.stages.ingest import extract_document, list_documents

    docs = write_topic_documents(tmp_path / "docs")
    for pages in (3, 12):
        write_report_pdf(docs / f"report-{pages}.pdf", pages=pages)
    recipe = tiny_cpu_with_test_base()
    result = estimate(docs, recipe)
    assert result.tokenizer_used, result.token_method
    tokenizer = load_tokenizer(tiny_base.path)
    real = sum(
        len(chunk_document(extract_document(path, recipe.ingest), tokenizer, recipe.chunk)[0])
        for path in list_documents(docs, recipe.ingest)
    )
    assert 0.6 * real <= result.work.chunks <= 1.4 * real, (result.work.chunks, real)


def test_split_follows_the_chunk_stage_rule(tmp_path, tiny_base):
    from docqa.modeling import load_tokenizer
    from docqa.outputs import read_document_chunks, read_documents
    from docqa.stages.chunk import chunk_documents
    from docqa.stages.ingest import ingest_documents, list_documents

    docs = write_topic_documents(tmp_path / "docs")
    write_report_pdf(docs / "report.pdf", pages=2)
    for seed in (0, 7):
        recipe = tiny_cpu_with_test_base(f"split.seed={seed}", "split.eval_fraction=0.3")
        surveyed = {d.name: d.split for d in estimate(docs, recipe).documents}
        ingested = ingest_documents(
            list_documents(docs, recipe.ingest),
            tmp_path / f"i{seed}",
            tmp_path / f"i{seed}" / "s",
            recipe.ingest,
        )
        tokenizer, out = load_tokenizer(tiny_base.path), tmp_path / f"c{seed}"
        chunks = chunk_documents(
            Path(ingested.path),
            tokenizer,
            tiny_base.tokenizer_digest,
            out,
            out / "s",
            recipe.chunk,
            recipe.split,
        )
        sides = read_document_chunks(Path(chunks.path))
        chunked = {d.name: sides[d.doc_id]["split"] for d in read_documents(Path(ingested.path))}
        assert surveyed == chunked


def test_without_a_tokenizer_the_count_is_labelled_an_approximation(report_pdfs):
    recipe = load_recipe("tiny-cpu", ["model.bootstrap.seed=999"])  # a base nobody built
    result = estimate(report_pdfs, recipe)
    assert not result.tokenizer_used
    assert "APPROXIMATION" in result.token_method
    assert result.work.chunks > 0


def test_gpu_stages_are_unknown_without_a_gpu_figure(report_pdfs, tmp_path):
    result = estimate(report_pdfs, load_recipe("llama-2-7b-qlora"), without_gpu_figures(tmp_path))
    assert result.device == "gpu"
    assert result.parameters == llama_parameters(KNOWN_ARCHITECTURES["meta-llama/Llama-2-7b-hf"])
    for stage in GPU_STAGES:
        assert row(result, stage).seconds is None
        assert "bench/" in row(result, stage).unknown
    assert "bench/gpu_qlora.py" in row(result, "pretrain").unknown
    synthesize = row(result, "synthesize")
    assert synthesize.seconds is None and "--model meta-llama/Llama-2-13b-chat-hf" in synthesize.unknown
    assert result.total_seconds is None and result.gpu_hours is None


def test_a_measured_gpu_figure_gives_times_and_gpu_hours(report_pdfs, tmp_path, monkeypatch):
    """The GPU bench's own figure writer, into a test file: measured for 7B, scaled (labelled) for 8B."""
    path = without_gpu_figures(tmp_path)
    monkeypatch.setattr(bench.report, "THROUGHPUTS", path)
    args = argparse.Namespace(
        smoke=False,
        examples=None,
        max_length=None,
        warmup_steps=None,
        cache_dir=str(tmp_path),
        batch_size=8,
        rank=64,
    )
    ours = {
        "tokens_per_s": 3000.0,
        "device": "NVIDIA H100 80GB HBM3",
        "cuda": "12.4",
        "quantized": "4-bit NF4",
        "attn": "sdpa",
        "liger": "on",
        "micro_batch": 8,
        "pad_fraction": 0.0,
        "peak_gib": 21.0,
    }
    runs = {"baseline": {"name": "baseline", "error": "out of GPU memory"}, "ours": ours}
    bench.report.record_figures(
        "gpu_qlora", "python bench/gpu_qlora.py", gpu_qlora.figures(args, runs), "H100"
    )

    seven = estimate(report_pdfs, load_recipe("llama-2-7b-qlora"), path)
    pretrain = row(seven, "pretrain")
    assert pretrain.seconds == pytest.approx(seven.work.pretrain_tokens / 3000.0)
    assert pretrain.gpu_hours == pytest.approx(pretrain.seconds / 3600)
    assert pretrain.source.startswith("measured") and "train.gpu.llama-2-7b-shape.ours" in pretrain.source
    assert row(seven, "sft").seconds == pytest.approx(seven.work.sft_tokens / 3000.0)
    assert row(seven, "evaluate · perplexity").seconds == pytest.approx(seven.work.scored_tokens / 9000.0)
    assert row(seven, "evaluate · answers").seconds is None  # no generation figure on a GPU

    eight = estimate(report_pdfs, load_recipe("llama-3-8b-qlora"), path)
    scaled = row(eight, "pretrain")
    factor = gpu_qlora.parameter_count(gpu_qlora.LLAMA2_7B) / eight.parameters
    assert scaled.throughput == pytest.approx(3000.0 * factor)
    assert "scaled" in scaled.source and "6·N" in scaled.source


def test_synthesis_requests_follow_pairs_per_chunk(report_pdfs):
    judged = ["synthesize.judge=true"]
    five = estimate(report_pdfs, load_recipe("llama-2-7b-qlora", [*judged, "synthesize.pairs_per_chunk=5"]))
    ten = estimate(report_pdfs, load_recipe("llama-2-7b-qlora", [*judged, "synthesize.pairs_per_chunk=10"]))
    assert five.work.chunks == ten.work.chunks > 0
    assert ten.work.pairs_requested == 2 * five.work.pairs_requested
    assert abs(ten.work.judge_requests - 2 * five.work.judge_requests) <= 1
    assert row(ten, "synthesize · judge").quantity == ten.work.judge_requests
    assert row(ten, "synthesize").quantity == five.work.chunks  # one generation request a chunk
    assert abs(ten.work.qa_train - 2 * five.work.qa_train) <= 1


def test_unreadable_and_duplicate_documents_are_reported_not_counted(report_pdfs):
    shutil.copy(report_pdfs / "report-3.pdf", report_pdfs / "copy-of-3.pdf")
    write_empty_file(report_pdfs / "empty.pdf")
    write_image_only_pdf(report_pdfs / "scan.pdf")
    result = estimate(report_pdfs, load_recipe("tiny-cpu"))
    by_name = {d.name: d for d in result.documents}
    assert by_name["empty.pdf"].problem and by_name["scan.pdf"].problem
    assert by_name["report-3.pdf"].duplicate_of == "copy-of-3.pdf"  # files are read in name order
    assert by_name["report-3.pdf"].split is None and by_name["copy-of-3.pdf"].split is not None
    assert result.work.pages == 1 + 3 + 7 + 13
    assert any("scan.pdf" in note for note in result.notes)


def test_a_missing_throughputs_file_leaves_every_time_unknown(report_pdfs, tmp_path):
    result = estimate(report_pdfs, load_recipe("tiny-cpu"), tmp_path / "none.json")
    assert all(r.seconds is None and "none.json" in r.unknown for r in result.rows)
    assert result.work.acceptance_source.startswith("ASSUMED")


def test_printed_estimate_names_unknowns_and_sources(report_pdfs, tmp_path):
    console = Console(record=True, width=200)
    print_estimate(
        report_pdfs,
        load_recipe("llama-2-7b-qlora"),
        throughputs=without_gpu_figures(tmp_path),
        console=console,
    )
    text = console.export_text()
    assert "unknown" in text and "bench/gpu_qlora.py" in text and "APPROXIMATION" in text


def test_parameter_counts_match_the_published_sizes():
    assert llama_parameters(KNOWN_ARCHITECTURES["meta-llama/Llama-2-7b-hf"]) == gpu_qlora.parameter_count(
        gpu_qlora.LLAMA2_7B
    )
    billions = {name: llama_parameters(shape) / 1e9 for name, shape in KNOWN_ARCHITECTURES.items()}
    assert billions["meta-llama/Llama-2-7b-hf"] == pytest.approx(6.74, abs=0.01)
    assert billions["meta-llama/Llama-2-13b-hf"] == pytest.approx(13.02, abs=0.01)
    assert billions["meta-llama/Meta-Llama-3-8B"] == pytest.approx(8.03, abs=0.01)


def test_estimating_loads_no_model_library(report_pdfs):
    code = (
        "import sys; from pathlib import Path; from docqa.estimate import estimate; "
        "from docqa.settings import load_recipe; "
        f"estimate(Path({str(report_pdfs)!r}), load_recipe('llama-2-7b-qlora')); "
        f"estimate(Path({str(report_pdfs)!r}), load_recipe('tiny-cpu')); "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'bitsandbytes', 'datasets') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_every_shipped_recipe_estimates(report_pdfs):
    from docqa.settings import RECIPES_DIR

    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        result = estimate(report_pdfs, load_recipe(path))
        assert result.work.chunks > 0, path.stem
        assert all((r.seconds is None) == (r.unknown is not None) for r in result.rows), path.stem


def test_ingest_time_follows_the_recipes_processes(report_pdfs, tmp_path):
    """The one-process rate × processes × the measured efficiency; never more processes than documents."""
    path = without_gpu_figures(tmp_path)
    data = json.loads(path.read_text())
    stamp = {
        "device_kind": "cpu",
        "device": "test",
        "model": "pypdf",
        "source": "test",
        "command": "python bench/x",
    }
    data["figures"] = {k: f for k, f in data["figures"].items() if f["stage"] != "ingest"}
    data["figures"]["ingest.cpu.one-process"] = {
        **stamp, "stage": "ingest", "metric": "pages_per_s", "value": 10.0, "conditions": {"processes": 1},
        "date": "2026-01-01 00:00 UTC",
    }  # fmt: skip
    path.write_text(json.dumps(data))
    pages = 1 + 3 + 7 + 13

    one = row(estimate(report_pdfs, load_recipe("tiny-cpu", ["ingest.workers=1"]), path), "ingest")
    assert one.throughput == 10.0 and one.seconds == pytest.approx(pages / 10.0)
    linear = row(estimate(report_pdfs, load_recipe("tiny-cpu", ["ingest.workers=3"]), path), "ingest")
    assert linear.throughput == 30.0 and "linear speed-up assumed" in linear.source

    data["figures"]["ingest.cpu.parallel-efficiency"] = {
        **stamp, "stage": "ingest", "metric": "parallel_efficiency", "value": 0.5,
        "conditions": {"processes": 2}, "date": "2026-01-01 00:00 UTC",
    }  # fmt: skip
    path.write_text(json.dumps(data))
    capped = row(estimate(report_pdfs, load_recipe("tiny-cpu", ["ingest.workers=16"]), path), "ingest")
    assert capped.throughput == pytest.approx(10.0 * 4 * 0.5)  # 4 documents: 4 processes at most
    assert "ingest.cpu.parallel-efficiency" in capped.source


def test_augmented_pretraining_tokens_are_near_what_the_augment_stage_makes(prepared, tiny_base, tmp_path):
    """The estimate's rewrite and pair tokens against the augment stage's real output on the same chunks."""
    import pandas as pd

    from docqa.estimate import augmented_tokens
    from docqa.modeling import load_tokenizer, token_stream
    from docqa.outputs import qa_file, read_chunks
    from docqa.split import PRETRAIN_SIDES
    from docqa.stages.augment import augment, read_augmented

    recipe = tiny_cpu_with_test_base(
        "augment.kinds=[facts, entities]", "augment.versions_per_chunk=2", "augment.mix_qa=true"
    )
    chunks, qa = Path(prepared["chunks"].path), Path(prepared["qa"].path)
    out = augment(chunks, qa, tmp_path / "a", tmp_path / "s", recipe.augment, prepared["recipe"].synthesize)
    tokenizer = load_tokenizer(tiny_base.path)
    rewrites, pairs = read_augmented(Path(out.path), tokenizer, recipe.model)
    real_rewrites, real_pairs = len(token_stream(tokenizer, rewrites)), len(token_stream(tokenizer, pairs))
    trained = list(read_chunks(chunks, PRETRAIN_SIDES)["text"])
    train_tokens = len(token_stream(tokenizer, trained)) - len(trained)
    qa_train = len(pd.read_parquet(qa_file(qa, "train")))
    example = real_pairs / qa_train - 1  # the pairs' real length: this checks the rewrites' shares
    estimated = augmented_tokens(train_tokens, len(trained), qa_train, example, recipe)
    # The shares are the sample corpus's prose; the test topics' short sentences give about half as much.
    assert 0.8 * real_rewrites <= estimated - real_pairs <= 2.5 * real_rewrites, (estimated, real_rewrites)
    plain = load_recipe(
        "tiny-cpu", ["augment.versions_per_chunk=0", "augment.kinds=[]", "augment.mix_qa=false"]
    )
    assert augmented_tokens(train_tokens, len(trained), qa_train, example, plain) == 0


def test_distilled_replay_costs_more_pretraining_work_than_token_replay(report_pdfs):
    tokens = estimate(
        report_pdfs, tiny_cpu_with_test_base("pretrain.general_mix_ratio=0.25", "pretrain.replay_loss=tokens")
    ).work
    distill = estimate(
        report_pdfs,
        tiny_cpu_with_test_base("pretrain.general_mix_ratio=0.25", "pretrain.replay_loss=distill"),
    ).work
    assert distill.pretrain_blocks == tokens.pretrain_blocks
    assert tokens.pretrain_tokens < distill.pretrain_tokens < 1.2 * tokens.pretrain_tokens


def test_sft_general_kl_adds_a_general_block_per_step(report_pdfs):
    plain = estimate(report_pdfs, tiny_cpu_with_test_base("sft.general_kl_weight=0")).work
    kept = estimate(report_pdfs, tiny_cpu_with_test_base("sft.general_kl_weight=1")).work
    assert kept.sft_steps == plain.sft_steps
    recipe = tiny_cpu_with_test_base()
    extra = plain.sft_steps * recipe.sft.gradient_accumulation_steps * recipe.sft.max_seq_length
    assert kept.sft_tokens - plain.sft_tokens >= extra
