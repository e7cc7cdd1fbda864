"""The trained model as one folder: both adapters, the tokenizer, the recipe, the evaluation report and a
manifest that says how to put them together. Logged to MLflow as the parent run's ``model`` artifact and
registered as a model version, so ``models:/docqa-<name>@champion`` is a complete, loadable model.

Layout (``FORMAT``)::

    docqa_model.json        the manifest (ModelManifest)
    adapters/pretrain/      LoRA of domain-adaptive pretraining   } stacked in this order on the base
    adapters/sft/           LoRA of SFT                            }
    tokenizer/              the tokenizer the adapters were trained with
    base/                   the base weights, when they are the small bootstrap base (else a reference)
    recipe.yaml             every setting of the run
    report.json             the run report once its stages completed (held-out figures, documents, counts)
    documents.json          the documents trained and held out, by content (for data diffs)

Reading needs no torch; :func:`load_packaged_model` imports it when asked for a model.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from docqa.hashing import json_digest
from docqa.outputs import ADAPTER_ORDER, TOKENIZER_FILES, BaseModelRef
from docqa.settings import ModelSettings, Recipe
from docqa.workspace import (
    cache_root,
    new_tmp_dir,
    publish_dir,
    read_json,
    write_json_atomic,
    write_text_atomic,
)

FORMAT = "docqa-model/1"
MANIFEST = "docqa_model.json"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class PackagedDocument(BaseModel):
    path: str
    sha256: str
    split: Literal["train", "eval"] | None
    chunks: int


class ModelManifest(BaseModel):
    format: Literal["docqa-model/1"] = FORMAT
    recipe: str
    base: BaseModelRef  # path "base" = the folder inside the package
    base_packaged: bool
    model: ModelSettings
    adapters: list[str] = list(ADAPTER_ORDER)
    corpus_fingerprint: str
    heldout_digest: str  # the held-out data the metrics were measured on
    metrics: dict[str, float]  # the headline held-out figures (see registry.HEADLINE)
    qa_counts: dict[str, int]


def corpus_fingerprint(documents: list[dict[str, Any]]) -> str:
    """The document set by content: the same PDFs under other names fingerprint the same."""
    return json_digest(sorted(d["sha256"] for d in documents))


def write_package(
    out_root: Path,
    manifest: ModelManifest,
    adapters: dict[str, Path],
    tokenizer_dir: Path | None,
    recipe: Recipe,
    report: dict[str, Any],
) -> Path:
    """Assemble the package in a fresh folder under ``out_root`` (published atomically; content-named)."""
    if list(adapters) != manifest.adapters:
        raise ValueError(f"adapters {list(adapters)} do not match the manifest's order {manifest.adapters}")
    tmp = new_tmp_dir(out_root)
    for name, folder in adapters.items():
        shutil.copytree(folder, tmp / "adapters" / name)
    source = tokenizer_dir if tokenizer_dir is not None else None
    if source is not None:
        (tmp / "tokenizer").mkdir()
        for file in sorted({f for pattern in TOKENIZER_FILES for f in source.glob(pattern)}):
            shutil.copy2(file, tmp / "tokenizer" / file.name)
    if manifest.base_packaged:
        shutil.copytree(Path(manifest.base.path), tmp / "base")
        manifest = manifest.model_copy(update={"base": manifest.base.model_copy(update={"path": "base"})})
    documents = [
        PackagedDocument(path=d["path"], sha256=d["sha256"], split=d["split"], chunks=d["chunks"])
        for d in report["documents"]
        if d["status"] == "ok" and d.get("duplicate_of") is None
    ]
    write_json_atomic(tmp / "documents.json", [d.model_dump() for d in documents])
    write_text_atomic(tmp / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    write_json_atomic(tmp / "report.json", report)
    write_json_atomic(tmp / MANIFEST, manifest)
    digest = json_digest({"manifest": manifest, "adapters": [str(p) for p in adapters.values()]})
    return publish_dir(tmp, out_root / digest[:16])


def read_manifest(folder: Path) -> ModelManifest:
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a docqa model package (no {MANIFEST}); give a folder written by a docqa run "
            "(the MLflow run's `model` artifact), a run id, or models:/<name>@<alias>"
        )
    return ModelManifest.model_validate(read_json(path))


def read_documents(folder: Path) -> list[PackagedDocument]:
    return [PackagedDocument.model_validate(d) for d in read_json(folder / "documents.json")]


def resolve_model(reference: str, tracking_uri: str | None = None) -> Path:
    """A local package folder for ``reference``: a folder as it is; ``models:/name@alias``,
    ``models:/name/version``, ``runs:/id/model`` or a bare MLflow run id downloaded from the tracking
    server (once per registered version or run: the download is kept under the docqa cache, keyed by the
    version's run and artifact location, since versions are numbered per tracking store)."""
    folder = Path(reference)
    if folder.is_dir():
        read_manifest(folder)
        return folder
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    if RUN_ID.match(reference):
        reference = f"runs:/{reference}/model"
    source = reference
    if reference.startswith("models:/"):
        # the version's own artifact location: no global registry URI involved
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        name, version = _registered_version(client, reference)
        source = client.get_model_version_download_uri(name, version)
        # every tracking store numbers its versions from 1: the key names the version's own run and
        # artifacts too, so that another workspace's "v1" is never served from this cache
        origin = client.get_model_version(name, version)
        key = f"{name}-v{version}-{json_digest({'run': origin.run_id, 'source': source})[:12]}"
    elif reference.startswith("runs:/"):
        key = reference.removeprefix("runs:/").replace("/", "-")
    else:
        raise ValueError(
            f"--model {reference!r} is not a folder, a run id, runs:/<id>/model or models:/<name>@<alias>"
        )
    target = cache_root() / "models" / key
    if not (target / MANIFEST).is_file():
        tmp = new_tmp_dir(target.parent)
        download_artifacts(artifact_uri=source, dst_path=str(tmp), tracking_uri=tracking_uri)
        found = [p.parent for p in tmp.rglob(MANIFEST)]
        if len(found) != 1:
            raise FileNotFoundError(f"{reference} holds no docqa model package ({MANIFEST} not found)")
        publish_dir(found[0], target)
        shutil.rmtree(tmp, ignore_errors=True)
    read_manifest(target)
    return target


def _registered_version(client, reference: str) -> tuple[str, str]:
    """(name, version) of ``models:/name@alias`` or ``models:/name/N`` (an alias moves: key by version)."""
    spec = reference.removeprefix("models:/")
    if "@" in spec:
        name, alias = spec.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = spec.partition("/")
        if not version.isdigit():
            raise ValueError(f"{reference}: expected models:/<name>@<alias> or models:/<name>/<version>")
    return name, str(version)


def package_base(folder: Path, manifest: ModelManifest) -> BaseModelRef:
    """The base the package's adapters belong on: its own copy, or the referenced folder / hub id; an
    embedded base not on this machine yet is prepared here (and checked to be the same weights)."""
    if manifest.base_packaged:
        return manifest.base.model_copy(update={"path": str(folder / "base")})
    from docqa.bases import ensure_packaged_base

    return ensure_packaged_base(manifest.base)


def load_packaged_model(folder: Path, for_serving: bool = False):
    """(model, tokenizer, manifest): the base with both adapters stacked and active, as evaluation
    used it. ``for_serving``: the base in full precision and the adapters merged into it (what an
    OpenAI-compatible server loads), instead of 4-bit with stacked adapters."""
    from docqa.modeling import load_adapted_model, load_tokenizer

    manifest = read_manifest(folder)
    base = package_base(folder, manifest)
    tokenizer_dir = folder / "tokenizer"
    settings = manifest.model
    if tokenizer_dir.is_dir():
        tokenizer = load_tokenizer(str(tokenizer_dir))
    else:  # a hub base: its tokenizer at the revision the adapters were trained on
        tokenizer = load_tokenizer(base.path, settings.revision if base.source == "hub" else None)
    if for_serving:
        settings = settings.model_copy(update={"load_in_4bit": False})
    adapters = {name: folder / "adapters" / name for name in manifest.adapters}
    model = load_adapted_model(base, settings, adapters)
    if for_serving:
        model = model.merge_and_unload()
    return model, tokenizer, manifest
