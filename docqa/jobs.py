"""One typed job per training stage: its inputs, its settings and where its output goes, with one ``run``.

The Prefect task builds the job, and runs it in its own process or hands it, as JSON, to the launcher
(``docqa.launch``: torchrun or accelerate, one process per device), where every rank validates it back
and calls the same ``run``. The stage flows of the GPU pool run the same tasks. A setting therefore
travels one way: recipe → the stage's settings model → the job → the stage function → the trainer's
arguments (``docqa.training.trainer_arguments``) and ``LoraConfig`` (``docqa.modeling.lora_config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field

from docqa.outputs import BaseModelRef, TrainOutput
from docqa.settings import ModelSettings, PretrainSettings, SFTSettings

if TYPE_CHECKING:  # the training code imports torch: a job is built where torch need not be loaded
    from docqa.training import StepLogger


class _Job(BaseModel):
    base: BaseModelRef
    model: ModelSettings
    out_root: str = Field(description="the stage's folder in the workspace; the output is published there")
    checkpoint_dir: str | None = Field(None, description="where checkpoints go and a resumed run finds them")

    @property
    def checkpoints(self) -> Path | None:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else None


class PretrainJob(_Job):
    """Domain-adaptive pretraining: the ``pretrain`` adapter on the chunks and their augmentation."""

    stage: Literal["pretrain"] = "pretrain"
    chunks: str = Field(description="the chunk stage's output folder")
    augmented: str | None = Field(None, description="the augment stage's output folder, if any")
    settings: PretrainSettings

    def run(self, on_log: StepLogger | None = None) -> TrainOutput:
        from docqa.stages.pretrain import pretrain

        augmented = Path(self.augmented) if self.augmented else None
        return pretrain(Path(self.chunks), self.base, self.model, self.settings, Path(self.out_root), on_log,
                        self.checkpoints, augmented)  # fmt: skip


class SFTJob(_Job):
    """SFT: the ``sft`` adapter on the training Q&A, stacked on the frozen pretraining adapter."""

    stage: Literal["sft"] = "sft"
    qa: str = Field(description="the synthesize stage's output folder")
    pretrain_adapter: str = Field(description="the pretraining adapter's folder")
    settings: SFTSettings

    def run(self, on_log: StepLogger | None = None) -> TrainOutput:
        from docqa.stages.sft import sft

        return sft(Path(self.qa), Path(self.pretrain_adapter), self.base, self.model, self.settings,
                   Path(self.out_root), on_log, self.checkpoints)  # fmt: skip


TrainingJob = Annotated[PretrainJob | SFTJob, Field(discriminator="stage")]
