"""The pipeline: a generic stage engine (:mod:`.engine`: declared config keys, cached artefacts,
manifests, resume) and the paper's stages on it (:mod:`.stages`)."""

from vreid.workflows.pipeline.engine import RunContext, Stage, run_stages
from vreid.workflows.pipeline.stages import (
    COLOUR_HISTOGRAM,
    UNTRAINED,
    PipelineContext,
    build_stages,
    crop_inputs,
    ensemble_members,
    ensure_synthetic_data,
    final_checkpoint,
    run_pipeline,
    stage_data,
)

__all__ = [
    "COLOUR_HISTOGRAM",
    "UNTRAINED",
    "PipelineContext",
    "RunContext",
    "Stage",
    "build_stages",
    "crop_inputs",
    "ensemble_members",
    "ensure_synthetic_data",
    "final_checkpoint",
    "run_pipeline",
    "run_stages",
    "stage_data",
]
