"""The six pipeline stages (and the base model) as Prefect tasks.

Each task adds only caching and naming around a plain function of ``docqa.stages``. The stage
modules are imported inside the task bodies: they pull in torch, transformers and datasets, and a
fully cached run, which never calls them, should start in seconds.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from docqa.hashing import FileFingerprint
from docqa.jobs import PretrainJob, SFTJob
from docqa.launch import run_job
from docqa.outputs import (
    PRETRAIN_ADAPTER,
    SFT_ADAPTER,
    AugmentOutput,
    BaseModelRef,
    ChunkOutput,
    EvalOutput,
    IngestOutput,
    SynthesizeOutput,
    TrainOutput,
)
from docqa.settings import (
    AugmentSettings,
    ChunkSettings,
    EvaluateSettings,
    IngestSettings,
    ModelSettings,
    PretrainSettings,
    SFTSettings,
    SourceSettings,
    SplitSettings,
    SynthesizeSettings,
)
from docqa.workspace import cache_root
from tasks.caching import content_policy, forward_logs, inputs_digest

TRAINING_CODE = ("docqa.training", "docqa.modeling", "docqa.outputs", "docqa.launch", "docqa.jobs")
CHECKPOINT_ONLY_SETTINGS = {"save_steps", "save_total_limit"}  # where to save, not what is trained


def checkpoint_dir(stage_root: Path, settings: PretrainSettings | SFTSettings, **inputs) -> Path:
    """Where a training stage keeps its checkpoints: the same folder for the same inputs and training
    settings, so that a run after a kill finds them again (the code's digest is left out on purpose:
    a fix made after a crash should not throw the checkpoints away)."""
    key = inputs_digest(
        {**inputs, "settings": settings.model_dump(mode="json", exclude=CHECKPOINT_ONLY_SETTINGS)}
    )
    return stage_root / "checkpoints" / key[:16]


@task(name="base-model", cache_policy=NO_CACHE)
def base_model_task(settings: ModelSettings) -> tuple[BaseModelRef, bool]:
    """Resolve the base model: a folder, hub id or GGUF file, or the embedded model (prepared once)."""
    from docqa.bases import resolve_base

    logger = get_run_logger()
    return resolve_base(settings, progress=lambda message: logger.info("base model: %s", message))


@task(name="fetch-documents", cache_policy=NO_CACHE)
def fetch_documents_task(location: str | None, settings: SourceSettings, extensions: list[str]) -> Path:
    """A local folder of the documents: a local folder as it is; a remote location (any fsspec URL) and
    arXiv ids downloaded into the docqa cache, once per content."""
    from docqa.sources import canonical_location, materialize_documents

    if location is not None and Path(location).is_dir():
        location = canonical_location(location)
    return materialize_documents(location, settings, cache_root() / "sources", extensions)


@task(
    name="ingest",
    cache_policy=content_policy("docqa.stages.ingest", "docqa.text_cleaning"),
    persist_result=True,
)
def ingest_task(files: list[FileFingerprint], workspace: str, settings: IngestSettings) -> IngestOutput:
    """Extract and clean text, one document at a time; unreadable files are recorded with a reason."""
    from docqa.stages.ingest import ingest_documents

    root = Path(workspace) / "ingest"
    paths, digests = [Path(f.path) for f in files], [f.sha256 for f in files]
    with forward_logs():
        return ingest_documents(paths, root, root / "store", settings, digests)


@task(name="chunk", cache_policy=content_policy("docqa.stages.chunk", "docqa.split"), persist_result=True)
def chunk_task(
    ingest: IngestOutput,
    tokenizer_path: str,
    tokenizer_digest: str,
    workspace: str,
    settings: ChunkSettings,
    split: SplitSettings,
) -> ChunkOutput:
    """Token-sized chunks with page spans, deduplicated, split by document."""
    from docqa.modeling import load_tokenizer
    from docqa.stages.chunk import chunk_documents

    root = Path(workspace) / "chunk"
    tokenizer = load_tokenizer(tokenizer_path)
    with forward_logs():
        return chunk_documents(
            Path(ingest.path), tokenizer, tokenizer_digest, root, root / "store", settings, split
        )


@task(
    name="synthesize",
    cache_policy=content_policy("docqa.stages.synthesize", "docqa.synthesis"),
    persist_result=True,
)
def synthesize_task(chunks: ChunkOutput, workspace: str, settings: SynthesizeSettings) -> SynthesizeOutput:
    """Question–answer pairs per chunk; only chunks missing from the per-chunk store reach the backend."""
    from docqa.outputs import chunks_file
    from docqa.stages.synthesize import synthesize_qa

    root = Path(workspace) / "synthesize"
    with forward_logs():
        return synthesize_qa(chunks_file(Path(chunks.path)), root, root / "store", settings)


@task(
    name="augment",
    cache_policy=content_policy("docqa.stages.augment", "docqa.augmentation", "docqa.synthesis"),
    persist_result=True,
)
def augment_task(
    chunks: ChunkOutput,
    qa: SynthesizeOutput,
    workspace: str,
    settings: AugmentSettings,
    synthesize: SynthesizeSettings,
) -> AugmentOutput:
    """Rewrites of every pretrained chunk (and the SFT pairs as text) for pretraining; stored per chunk."""
    from docqa.stages.augment import augment

    root = Path(workspace) / "augment"
    with forward_logs():
        return augment(Path(chunks.path), Path(qa.path), root, root / "store", settings, synthesize)


@task(
    name="pretrain",
    cache_policy=content_policy(
        "docqa.stages.pretrain", "docqa.stages.augment", "docqa.prompting", *TRAINING_CODE
    ),
    persist_result=True,
)
def pretrain_task(
    chunks: ChunkOutput,
    augmented: AugmentOutput | None,
    base: BaseModelRef,
    model: ModelSettings,
    settings: PretrainSettings,
    workspace: str,
    mlflow_uri: str | None = None,
    mlflow_run_id: str | None = None,
    mixed_in_digest: str | None = None,
) -> TrainOutput:
    """QLoRA domain-adaptive pretraining on the training documents' chunks and their augmentation.

    ``mixed_in_digest``: of the general-text file mixed in, so that a changed file trains again."""
    root = Path(workspace) / "pretrain"
    job = PretrainJob(
        chunks=chunks.path,
        augmented=augmented.path if augmented is not None else None,
        base=base,
        model=model,
        settings=settings,
        out_root=str(root),
        checkpoint_dir=str(checkpoint_dir(root, settings, chunks=chunks, augmented=augmented, base=base,
                                          model=model)),
    )  # fmt: skip
    with forward_logs():
        return run_job(job, mlflow_uri, mlflow_run_id)


@task(
    name="sft",
    cache_policy=content_policy("docqa.stages.sft", "docqa.prompting", *TRAINING_CODE),
    persist_result=True,
)
def sft_task(
    qa: SynthesizeOutput,
    pretrained: TrainOutput,
    base: BaseModelRef,
    model: ModelSettings,
    settings: SFTSettings,
    workspace: str,
    mlflow_uri: str | None = None,
    mlflow_run_id: str | None = None,
    mixed_in_digest: str | None = None,
) -> TrainOutput:
    """SFT with TRL on the training Q&A, stacked on the pretraining adapter, loss on answers only.

    ``mixed_in_digest``: of the instruction file mixed in, so that a changed file trains again."""
    root = Path(workspace) / "sft"
    job = SFTJob(
        qa=qa.path,
        pretrain_adapter=pretrained.adapter_path,
        base=base,
        model=model,
        settings=settings,
        out_root=str(root),
        checkpoint_dir=str(
            checkpoint_dir(root, settings, qa=qa, pretrained=pretrained, base=base, model=model)
        ),
    )
    with forward_logs():
        return run_job(job, mlflow_uri, mlflow_run_id)


@task(
    name="evaluate",
    cache_policy=content_policy(
        "docqa.stages.evaluate", "docqa.prompting", "docqa.modeling", "docqa.outputs", "docqa.metrics",
        "docqa.figures", "docqa.answer_metrics",
    ),
    persist_result=True,
)  # fmt: skip
def evaluate_task(
    chunks: ChunkOutput,
    qa: SynthesizeOutput,
    pretrained: TrainOutput,
    tuned: TrainOutput,
    base: BaseModelRef,
    model: ModelSettings,
    settings: EvaluateSettings,
    workspace: str,
    judge: SynthesizeSettings | None = None,
) -> EvalOutput:
    """Knowledge, memorisation and control questions for the base, pretrained and final models."""
    from docqa.stages.evaluate import evaluate_models

    with forward_logs():
        return evaluate_models(
            Path(chunks.path),
            Path(qa.path),
            Path(pretrained.adapter_path),
            Path(tuned.adapter_path),
            base,
            model,
            settings,
            Path(workspace) / "evaluate",
            judge,
        )


@task(name="rescore-champion", cache_policy=NO_CACHE)
def rescore_champion_task(
    chunks: ChunkOutput,
    qa: SynthesizeOutput,
    champion: str,
    settings: EvaluateSettings,
    workspace: str,
) -> EvalOutput:
    """The champion's model (a package folder) scored on *this* run's questions, so the gate compares
    figures measured on the same questions."""
    from docqa.package import package_base, read_manifest
    from docqa.stages.evaluate import evaluate_models

    folder = Path(champion)
    manifest = read_manifest(folder)
    with forward_logs():
        return evaluate_models(
            Path(chunks.path),
            Path(qa.path),
            folder / "adapters" / PRETRAIN_ADAPTER,
            folder / "adapters" / SFT_ADAPTER,
            package_base(folder, manifest),
            manifest.model,
            settings.model_copy(update={"llm_judge": False}),
            Path(workspace) / "evaluate-champion",
        )
