"""Configuration: one pydantic model per stage, loaded from YAML with ``--set key=value`` overrides.

Defaults are the paper's values (Truong, Dang, Ye, Nguyen and Mei, "Image-based Vehicle
Re-identification Model with Adaptive Attention Modules and Metadata Re-ranking", AI City Challenge
2020 Track 2, arXiv:2007.01818) unless a field's docstring says otherwise. YAML presets
(``src/vreid/configs/``) only override. Unknown keys and wrongly typed values raise
:class:`~vreid.core.errors.ConfigError` naming the key and what is allowed.

Each stage owns its section class below; add fields there (with a docstring) rather than reading
ad-hoc dictionaries.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vreid.core.artefacts import write_text_atomic
from vreid.core.errors import ConfigError
from vreid.core.formats import DatasetFormat

_AUTO_REFUSED = (
    "'auto' is no longer accepted (it fell back silently to random weights when nothing was "
    "cached); say imagenet (torchvision's weights, downloaded into the torch hub cache on first "
    "use) or null (random initialisation)"
)


AmpMode = Literal["off", "bf16", "fp16"]
"""Mixed precision of a training: off, or autocast to bf16/fp16 (fp16 on CUDA only)."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )


# --------------------------------------------------------------------------------------------
# data (issue 2)


class DataConfig(Section):
    root: Path | None = None
    """Root of the main re-id dataset (train / query / gallery). ``None``: the built-in synthetic set."""
    format: Literal["auto"] | DatasetFormat = "auto"
    """Dataset format of ``root``; ``auto`` detects it from the files present."""
    sim_root: Path | None = None
    """Root of the synthetic pre-training dataset (AIC simulation layout); ``None`` skips pre-training."""
    vehicleid_test_size: Literal[800, 1600, 2400] = 800
    """VehicleID only: which test list (``test_list_<n>.txt``) gives the query/gallery split."""
    vehicleid_draw: int = Field(0, ge=0, le=9)
    """VehicleID only: which of the 10 seeded gallery draws to use (results average all 10)."""
    vehicleid_seed: int = 0
    """VehicleID only: seed of the gallery draws."""
    veriwild_test_size: Literal[3000, 5000, 10000] = 3000
    """VERI-Wild only: the test set (``train_test_split/test_<n>.txt`` gallery and
    ``test_<n>_query.txt`` queries): 3000 small, 5000 medium, 10000 large."""
    folder_csv: Path | None = None
    """Folder layout only: per-image CSV of camera/track/colour/type (default ``root/labels.csv``)."""
    follow_links: bool = False
    """Read images reached through symbolic links that leave the dataset root (an image, split or
    identity folder linked elsewhere); ``False`` refuses them naming the link and its target."""


# --------------------------------------------------------------------------------------------
# synth (issue 3)
class SynthConfig(Section):
    preset: str = "demo"
    """Size preset of the generated data: tiny, demo, aic20-scale."""
    seed: int = 0
    """Seed: the same seed gives a byte-identical dataset."""
    ids: int | None = Field(None, ge=4)
    """Real identities (train + test); ``None``: the preset's number."""
    cameras: int | None = Field(None, ge=2)
    """Real cameras; ``None``: the preset's number."""
    size: tuple[Annotated[int, Field(ge=32, le=2048)], Annotated[int, Field(ge=32, le=2048)]] = (
        256,
        256,
    )
    """Image (width, height) in pixels, each from 32 to 2048."""


# --------------------------------------------------------------------------------------------
# crop (issue 7)
class CropConfig(Section):
    enabled: bool = False
    """Crop every image with a detector before training and testing (paper section 3.2.1)."""
    detector: str | None = None
    """torchvision detector architecture (``vreid.models.detectors.detector_names()``); ``None``: the one
    stored in a ``vreid train-detector`` checkpoint given as ``weights``, else
    ``fasterrcnn_mobilenet_v3_large_fpn`` (the paper's Mask R-CNN is ``maskrcnn_resnet50_fpn_v2``,
    several times slower on CPU)."""
    weights: Path | None = None
    """Detector weights file (torchvision COCO file or ``vreid train-detector`` checkpoint).
    ``None``: torchvision's COCO weights of ``detector`` (the paper used COCO weights), read from
    the torch hub cache (``torch.hub.get_dir()/checkpoints``) or downloaded there with a progress
    bar and torchvision's hash check on first use; offline (``VREID_OFFLINE=1`` or no network) a
    missing file is an error naming the cache path and the URL, and suggesting
    ``vreid train-detector``."""
    margin: float = Field(0.05, ge=0.0, le=1.0)
    """Margin added around the chosen box on each side, as a fraction of its width/height."""
    min_score: float = Field(0.5, ge=0.0, le=1.0)
    """Vehicle detections less confident than this are ignored (no detection: image kept whole)."""
    batch_size: int = Field(8, ge=1)
    """Images per detector call."""
    sets: list[Literal["real", "simulation", "attributes"]] = ["real", "simulation", "attributes"]
    """Which of the pipeline's datasets to crop: the real one (``data.root``), the synthetic
    pre-training set (``data.sim_root``) and the attribute model's set. The paper crops the real
    train/query/test images only; rendered simulation images (AIC's VehicleX set) are tight
    already, and cropping their 192k images would only cost time."""


class DetectorConfig(Section):
    """Training of the cropping detector on true boxes (``vreid train-detector``): the offline
    substitute for torchvision's COCO weights."""

    architecture: str = "fasterrcnn_mobilenet_v3_large_320_fpn"
    """torchvision detector architecture trained (random initialisation, classes background and
    vehicle)."""
    epochs: int = Field(10, ge=1)
    """Passes over the training images."""
    batch_size: int = Field(8, ge=1)
    """Images per step."""
    lr: float = Field(1e-3, gt=0)
    """AdamW learning rate (warm-up, then cosine decay to 0)."""
    weight_decay: float = Field(1e-4, ge=0)
    """AdamW weight decay."""
    max_images: int | None = Field(None, ge=1)
    """Use at most this many training images (the first in file order); ``None``: all."""
    max_minutes: float | None = Field(None, gt=0)
    """Stop after this many minutes and save what was learnt (the cosine decay ends there)."""
    image_size: int | None = Field(None, ge=32)
    """Detector input size (shorter side) for training and later cropping; ``None``: torchvision's."""
    seed: int = 0
    """Seed of initialisation and sampling."""
    amp: AmpMode = "off"
    """Mixed precision on CUDA (bf16/fp16); on CPU only bf16 is honoured."""


# --------------------------------------------------------------------------------------------
# model (issue 5)
class ModelConfig(Section):
    name: str = "glamor"
    """Model name in the registry: glamor, counter_glamor, resnet50, resnext101_32x8d."""
    backbone: str | dict[str, str | None] | None = None
    """Trunk: ``None`` = the model's own (resnet50 for GLAMOR, as the paper; the named network for
    a baseline), or another torchvision ResNet (resnet18, resnet34) for CPU work. A mapping
    ``{model name: trunk}`` gives each model of ``pipeline.models`` its own (the ``paper-bench``
    preset: GLAMOR and the plain baseline on resnet18, a ResNeXt baseline on its own trunk);
    models it does not list keep their own trunk."""
    pretrained: str | dict[str, str | None] | None = None
    """Trunk weights. ``null`` (default): random initialisation, as the paper trains GLAMOR.
    ``imagenet``: torchvision's ImageNet weights of the trunk (``<Arch>_Weights.IMAGENET1K_V1``;
    ``IMAGENET1K_V2`` or a full name such as ``ResNet50_Weights.IMAGENET1K_V2`` picks another
    member), read from the torch hub cache (``$TORCH_HOME/hub/checkpoints``) and downloaded there,
    with a progress bar and torchvision's hash check, the first time; offline
    (``VREID_OFFLINE=1`` or no network) a missing file is an error naming the cache path and the
    URL to fetch it from, never a fall-back to random weights. An ``http(s)://`` URL: the same for
    any file. Anything else: the path of a weights file. A mapping ``{model name: value}`` gives
    each model of ``pipeline.models`` its own value (the ``aic20`` preset: ``{resnet50: imagenet,
    resnext101_32x8d: imagenet}``, the paper's ImageNet baselines); models it does not list start
    from random weights. ``auto`` is refused (it used to fall back to random weights)."""
    last_stride: Literal[1, 2] = 1
    """Stride of the last stage (1 doubles the final feature map, usual in re-id)."""
    eval_features: Literal["neck", "pre_neck"] = "neck"
    """Retrieval features: after the BN neck (default) or the pooled features before it."""
    image_size: tuple[int, int] = (128, 256)
    """Input (height, width); the paper uses 128×256 because vehicles are wider than tall."""

    @field_validator("pretrained")
    @classmethod
    def _no_auto(cls, value: Any) -> Any:
        values = value.values() if isinstance(value, dict) else [value]
        if any(isinstance(v, str) and v.strip().lower() == "auto" for v in values):
            raise ValueError(_AUTO_REFUSED)
        return value

    def backbone_for(self, name: str | None = None) -> str | None:
        """The trunk of model ``name`` (default: ``self.name``): the mapping's entry for it
        (``None``, the model's own trunk, when not listed), or the single value every model
        shares."""
        value = self.backbone
        if isinstance(value, dict):
            value = value.get(name if name is not None else self.name)
        return value

    def pretrained_for(self, name: str | None = None) -> str | None:
        """The ``pretrained`` value of model ``name`` (default: ``self.name``): the mapping's entry
        for it (``None`` when not listed), or the single value every model shares."""
        value = self.pretrained
        if isinstance(value, dict):
            value = value.get(name if name is not None else self.name)
        return str(value) if value is not None else None


# --------------------------------------------------------------------------------------------
# train (issue 5)
class AugmentConfig(Section):
    """Training augmentation (paper section 4; ``vreid.data.transforms.build_transforms``)."""

    enlarge_p: float = Field(0.5, ge=0, le=1)
    """Probability of enlarging the image by ``enlarge_factor`` and cropping it back at random."""
    enlarge_factor: float = Field(1.125, ge=1)
    """Enlargement before the random crop."""
    flip_p: float = Field(0.5, ge=0, le=1)
    """Probability of a horizontal flip."""
    brightness: float = Field(0.2, ge=0)
    """Colour-jitter brightness strength (factor drawn in [1 − b, 1 + b])."""
    contrast: float = Field(0.15, ge=0)
    """Colour-jitter contrast strength."""
    pca_std: float = Field(0.1, ge=0)
    """σ of AlexNet-style PCA colour noise."""
    pca_p: float = Field(0.5, ge=0, le=1)
    """Probability of PCA colour noise."""
    erasing_p: float = Field(0.5, ge=0, le=1)
    """Probability of random erasing."""
    erasing_area: tuple[float, float] = (0.02, 0.4)
    """Range of the erased fraction of the image."""
    erasing_min_aspect: float = Field(0.3, gt=0, le=1)
    """Smallest aspect ratio of the erased rectangle (the largest is its inverse)."""


class TrainConfig(Section):
    epochs: int = Field(25, ge=1)
    """Epochs (paper: ~25 on synthetic data, then ~25 on real data)."""
    lr: float = Field(2e-4, gt=0)
    """Adam learning rate (paper: 0.0002)."""
    weight_decay: float = Field(5e-4, ge=0)
    """Adam weight decay."""
    step_size: int = Field(10, ge=1)
    """Epochs between learning-rate decays (paper: every 10 epochs)."""
    gamma: float = Field(0.2, gt=0)
    """Learning-rate decay factor (paper: 0.2)."""
    p: int = Field(8, ge=2)
    """Identities per batch (PK sampler)."""
    k: int = Field(4, ge=1)
    """Images per identity per batch (PK sampler)."""
    margin: float = 0.3
    """Batch-hard triplet margin (paper: 0.3)."""
    triplet_weight: float = 10.0
    """Weight of the triplet loss (paper: 10:1 triplet to softmax)."""
    ce_weight: float = 1.0
    """Weight of the label-smoothed cross-entropy."""
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    """Label-smoothing epsilon."""
    soft_margin: bool = False
    """Soft-margin triplet loss log(1 + exp(d_ap − d_an)) instead of the hinge with ``margin``."""
    augment: AugmentConfig = AugmentConfig()
    """Training augmentation."""
    amp: AmpMode = "off"
    """Mixed precision on CUDA (bf16/fp16); on CPU only bf16 is honoured."""
    seed: int = 0
    """Seed for sampling, augmentation and initialisation."""
    # -- training loop (vreid.engine.reid); keep these at the end of the class --
    eval_every: int = Field(5, ge=0)
    """Evaluate mAP/CMC on query/gallery every N epochs (and after the last); 0 disables."""
    val_fraction: float = Field(0.0, ge=0, lt=1)
    """Share of the training identities held out as a validation set (seeded by ``seed``): the
    evaluation during training and the choice of ``best.pt`` then use them (per identity and
    camera, the first image a query and the others the gallery; same-camera matches ignored)
    instead of the dataset's query/gallery, so the test split never picks the model; their ids go
    to ``val_ids.txt``. 0: evaluate on query/gallery, the field's common practice."""
    checkpoint_every: int = Field(0, ge=0)
    """Also keep ``checkpoints/epoch_XXX.pt`` every N epochs; 0 keeps only ``last.pt``/``best.pt``."""
    max_iters_per_epoch: int | None = Field(None, ge=1)
    """Cap on iterations per epoch (tests, demo, quick looks); ``None``: one pass of the PK sampler."""
    num_workers: int = Field(2, ge=0)
    """DataLoader worker processes per training process."""
    batch_size_eval: int = Field(64, ge=1)
    """Batch size of feature extraction during evaluation."""
    channels_last: bool = False
    """Use the channels-last memory format (faster convolutions with AMP on recent GPUs)."""
    eval_flip: bool = False
    """Average the features of each image and its mirror image when evaluating."""


# --------------------------------------------------------------------------------------------
# attributes (issue 6)
class AttributeConfig(Section):
    backbone: str = "resnext101_32x8d"
    """torchvision backbone of the attribute model (paper: ResNeXt101 32×8d)."""
    image_size: tuple[int, int] = (224, 224)
    """Input (height, width) of the attribute model (paper: 224×224)."""
    data_root: Path | None = None
    """Dataset with colour/type labels (AIC simulation layout or VeRi-776); ``None``: ``data.sim_root``."""
    format: str = "auto"
    """Format of ``data_root`` (see ``data.format``)."""
    pretrained: str | None = "imagenet"
    """Trunk weights. ``imagenet`` (default, the paper): torchvision's ImageNet weights of
    ``backbone`` (``IMAGENET1K_V1``), read from the torch hub cache (``$TORCH_HOME/hub/
    checkpoints``) or downloaded there with a progress bar and torchvision's hash check on first
    use; offline (``VREID_OFFLINE=1`` or no network) a missing file is an error naming the cache
    path and the URL to fetch it from on another machine. ``null``: random initialisation (the
    ``demo`` and ``tiny`` presets, which must run offline). A torchvision weights name
    (``IMAGENET1K_V2``), a URL or a weights file path work as in ``model.pretrained``. ``auto`` is
    refused: it used to fall back silently to training from scratch when nothing was cached."""
    last_stride: Literal[1, 2] = 1
    """Stride of the trunk's last stage (1 as the team's re-id models; 2 = torchvision's)."""
    embed_dim: int = Field(512, ge=1)
    """Width of each attribute head's embedding layer (the penultimate features used for re-ranking)."""

    @field_validator("pretrained")
    @classmethod
    def _no_auto(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            raise ValueError(_AUTO_REFUSED)
        return value

    holdout_fraction: float = Field(0.2, ge=0, lt=1)
    """Fraction of the labelled identities held out of both steps to measure colour/type accuracy."""
    seed: int = 0
    """Seed of the held-out split, sampling and initialisation."""
    reid: bool = True
    """Run step 1 (re-id training, triplet + softmax) before the attribute fine-tuning."""
    reid_epochs: int = Field(55, ge=1)
    """Step 1 epochs (paper: 55)."""
    reid_lr: float = Field(3e-4, gt=0)
    """Step 1 Adam learning rate (paper: 0.0003); the other step-1 keys come from ``train``."""
    reid_step_size: int = Field(20, ge=1)
    """Step 1: epochs between learning-rate decays (paper: every 20 epochs)."""
    reid_gamma: float = Field(0.3, gt=0)
    """Step 1 learning-rate decay factor (paper: 0.3)."""
    epochs: int = Field(40, ge=1)
    """Step 2 (softmax-only fine-tuning of the colour and type heads) epochs (not in the paper)."""
    lr: float = Field(2e-3, gt=0)
    """Step 2 learning rate (paper: 0.002)."""
    step_size: int = Field(20, ge=1)
    """Step 2: epochs between learning-rate decays (paper: every 20 epochs)."""
    gamma: float = Field(0.5, gt=0)
    """Step 2 learning-rate decay factor (paper: 0.5)."""
    optimizer: Literal["sgd", "adam"] = "sgd"
    """Step 2 optimiser (not in the paper): SGD with momentum 0.9, or Adam."""
    weight_decay: float = Field(5e-4, ge=0)
    """Step 2 weight decay."""
    batch_size: int = Field(32, ge=2)
    """Step 2 batch size (images, shuffled)."""
    finetune_backbone: bool = True
    """Step 2 also updates the backbone (False: only the two heads learn)."""
    class_balance: bool = False
    """Weight each head's cross-entropy by the inverse frequency of its classes among the training
    images (a rare type counts as much as the majority one); ``false`` (default): the paper's
    plain softmax."""
    augment: Literal["reid", "light"] = "reid"
    """Step 2 augmentation: ``reid`` = the re-id training's (paper: crop, flip, colour jitter, PCA
    colour noise, random erasing); ``light`` = crop and flip only (no colour changes, no erasing)."""


# --------------------------------------------------------------------------------------------
# retrieval (issue 4)
class RetrievalConfig(Section):
    rerank: bool = True
    """Apply k-reciprocal re-ranking."""
    k1: int = Field(20, ge=1)
    """k1 of k-reciprocal re-ranking."""
    k2: int = Field(6, ge=1)
    """k2 (query expansion) of k-reciprocal re-ranking."""
    lambda_value: float = Field(0.3, ge=0, le=1)
    """Weight of the original distance in the final re-ranked distance."""
    gamma_type: float = Field(0.2, ge=0)
    """Weight of the type-feature distance in the metadata-aware original distance."""
    gamma_colour: float = Field(0.1, ge=0)
    """Weight of the colour-feature distance in the metadata-aware original distance."""
    track_average: bool = True
    """Replace each distance by the mean over the gallery image's track (when some gallery image
    has a track; images without one keep their own distance)."""
    protocol: Literal["aic", "veri", "all"] = "aic"
    """Evaluation protocol: aic (mAP@``top``), veri (same id and camera removed), all (full length)."""
    ensemble_weights: list[float] | None = None
    """Weights of the models' distance matrices in the ensemble, in the order given (the feature
    directories of ``vreid rank``, the checkpoints of ``vreid search``, ``pipeline.ensemble``);
    ``None``: equal weights (paper: GLAMOR and Counter GLAMOR 1:1)."""

    @field_validator("ensemble_weights")
    @classmethod
    def _weights_positive(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (any(w < 0 for w in value) or sum(value) <= 0):
            raise ValueError(f"weights must be ≥ 0 with a positive sum, got {value}")
        return value

    top: int = Field(100, ge=1)
    """Gallery images per query in ranked lists and ``track2.txt``, and the depth of the AIC mAP
    and of the CMC curve in the metrics (AIC: 100)."""


class TuneConfig(Section):
    """Post-processing tuned on validation identities (``vreid tune``, the pipeline's ``tune``
    stage): each retrieval setting below takes the grid value that scores best on identities held
    out of the training split (``train.val_fraction``), never on the test split."""

    enabled: bool = False
    """Run the ``tune`` stage and use its chosen values in the retrieval chain (needs
    ``train.val_fraction > 0``)."""
    metric: Literal["mAP", "mINP"] = "mAP"
    """What the search maximises on the validation identities."""
    protocol: Literal["veri", "all"] = "veri"
    """Validation protocol (``veri``: a query's same-camera images are not counted)."""
    gamma_type: list[Annotated[float, Field(ge=0)]] = [0.0, 0.1, 0.2, 0.4]
    """Values of ``retrieval.gamma_type`` tried."""
    gamma_colour: list[Annotated[float, Field(ge=0)]] = [0.0, 0.05, 0.1, 0.2]
    """Values of ``retrieval.gamma_colour`` tried."""
    k1: list[Annotated[int, Field(ge=1)]] = [10, 20, 30]
    """Values of ``retrieval.k1`` tried."""
    k2: list[Annotated[int, Field(ge=1)]] = [3, 6, 10]
    """Values of ``retrieval.k2`` tried."""
    lambda_value: list[Annotated[float, Field(ge=0, le=1)]] = [0.1, 0.3, 0.5]
    """Values of ``retrieval.lambda_value`` tried."""
    ensemble_weights: list[list[Annotated[float, Field(ge=0)]]] = [[1, 1], [2, 1], [1, 2]]
    """Values of ``retrieval.ensemble_weights`` tried (those with one weight per member)."""


# --------------------------------------------------------------------------------------------
# report (issue 8)
class ReportConfig(Section):
    num_rank_lists: int = Field(8, ge=0)
    """Sample queries shown with their top-10 in the report (half best, half worst)."""


# --------------------------------------------------------------------------------------------
# pipeline (issue 8)
class PipelineConfig(Section):
    name: str = "run"
    """Run name: the run directory is ``runs/<name>``. Informational: no result depends on it."""
    models: list[str] = ["glamor", "counter_glamor"]
    """Embedding models trained, each a row of the results table (add resnet50 /
    resnext101_32x8d for the paper's baselines)."""
    ensemble: list[str] = ["glamor", "counter_glamor"]
    """Models whose distance matrices are averaged (paper: GLAMOR and Counter GLAMOR), in the order
    of ``retrieval.ensemble_weights``; each must also be listed in ``models``."""
    pretrain: bool = True
    """Pre-train each model on synthetic data (``data.sim_root``, or the generated simulation split
    when ``data.root`` is null) before fine-tuning on the real training split (paper: yes)."""
    pretrain_epochs: int | None = Field(None, ge=1)
    """Epochs of synthetic pre-training; ``None``: ``train.epochs``."""
    finetune: bool = True
    """Fine-tune on the real training split (from the pre-trained checkpoint when there is one)."""
    checkpoint: Literal["last", "best"] = "last"
    """Which checkpoint of each model's last phase gives the retrieval features: ``last`` (the
    schedule decides; paper) or ``best`` (best validation mAP: needs ``train.val_fraction > 0``
    and ``train.eval_every > 0``, so that the test split never chooses the model)."""
    attributes: bool = True
    """Train the colour/type model and use its features as re-ranking metadata."""
    untrained_baseline: bool = True
    """Add a row for the first ensemble model with random weights (what training buys)."""
    colour_histogram_baseline: bool = True
    """Add a row for HSV colour-histogram retrieval (the floor of the table)."""
    synth_dir: Path | None = None
    """Where the built-in synthetic data is generated (reused when present) when ``data.root`` is
    null; ``None``: ``<run_dir>/synth``."""


# --------------------------------------------------------------------------------------------
# runtime: what the machine does, not what is computed
class RuntimeConfig(Section):
    device: str = "auto"
    """The one device of every stage (training, feature extraction, cropping, re-ranking):
    ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``. Resolved once, at the
    entry; under ``torchrun`` each process takes LOCAL_RANK's GPU. Informational for cache keys:
    results do not depend on it beyond float rounding."""


INFORMATIONAL_KEYS = frozenset({"runtime.device", "pipeline.name"})
"""Config keys no result depends on (their docstrings say so): left out of a results key and of
the report's comparison of runs."""


class Config(Section):
    """The whole configuration of a run."""

    runtime: RuntimeConfig = RuntimeConfig()
    data: DataConfig = DataConfig()
    synth: SynthConfig = SynthConfig()
    crop: CropConfig = CropConfig()
    detector: DetectorConfig = DetectorConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    attributes: AttributeConfig = AttributeConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    tune: TuneConfig = TuneConfig()
    report: ReportConfig = ReportConfig()
    pipeline: PipelineConfig = PipelineConfig()


# --------------------------------------------------------------------------------------------
# presets


def list_presets() -> dict[str, Path]:
    """The built-in presets shipped in the package: ``{name: path}``."""
    folder = Path(__file__).parents[1] / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_config(name_or_path: str | os.PathLike[str]) -> Path:
    """A YAML path as given, or the built-in preset of that name (``demo``, ``tiny``, ``aic20`` …)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        raise ConfigError(f"{p}: config file not found")
    presets = list_presets()
    if str(name_or_path) in presets:
        return presets[str(name_or_path)]
    raise ConfigError(
        f"{name_or_path}: no such config file or preset; presets: {', '.join(presets)}"
    )


# --------------------------------------------------------------------------------------------
# loading, overrides, saving


def _allowed_keys(model: type[BaseModel], path: list[str]) -> list[str]:
    """Names of the fields allowed at ``path`` inside ``model`` (for error messages)."""
    current: Any = model
    for part in path:
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            current = ann
        else:
            return []
    return sorted(current.model_fields) if isinstance(current, type) else []


def _format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        key = ".".join(loc)
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            where = ".".join(loc[:-1]) or "the top level"
            lines.append(f"unknown key '{key}'; allowed in {where}: {', '.join(allowed)}")
        else:
            lines.append(f"'{key}': {e['msg']} (got {e.get('input')!r})")
    return f"{source}: " + "; ".join(lines)


def _set_nested(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """Parse one ``section.key=value`` override; the value is read as YAML (``3``, ``[1, 2]``, ``null``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def config_from_dict(tree: dict[str, Any], *, source: str = "config") -> Config:
    """Validate a nested dictionary into a :class:`Config`."""
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, Config, source)) from None


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last
    silently, so ``lr: 1e-3`` … ``lr: 5`` would train with 5 without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice in one mapping (first on line {seen[key] + 1})",
                    key_node.start_mark,
                )
            if isinstance(key, str | int | float | bool):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: typing.Sequence[str] = (),
    *,
    values: typing.Mapping[str, Any] | None = None,
) -> Config:
    """Load a YAML config or built-in preset (or the defaults when ``path`` is None), then apply
    ``values`` (``{dotted key: value}``, what CLI flags set; ``None`` values are skipped) and the
    ``--set`` ``overrides`` (dotted keys: ``train.lr=1e-4``, ``pipeline.models=[glamor]``).

    The one way every command and the Python API read settings: flags are shorthands for config
    keys, and the defaults live in the section classes above, nowhere else.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = resolve_config(path)
        source = str(p)
        try:
            loaded = yaml.load(p.read_text(encoding="utf-8"), Loader=_StrictLoader)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{p}:{where}: not valid YAML: {problem}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        tree = loaded
    given = {k: v for k, v in (values or {}).items() if v is not None}
    for key, value in given.items():
        _set_nested(tree, key, value.as_posix() if isinstance(value, Path) else value)
    for item in overrides:
        key, value = parse_override(item)
        _set_nested(tree, key, value)
    if given:
        source += " with " + " ".join(f"{k}={v}" for k, v in given.items())
    if overrides:
        source += " with --set " + " ".join(overrides)
    return config_from_dict(tree, source=source)


def flat_keys(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: value}`` of a nested config dict (a ``model_dump`` or a loaded YAML)."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flat_keys(v, f"{prefix}{k}."))
    return out


def config_to_yaml(config: BaseModel) -> str:
    """The resolved config as YAML text (paths and tuples as plain strings and lists)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: BaseModel, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config to ``path`` atomically (every run saves the config that made it)."""

    return write_text_atomic(path, config_to_yaml(config))
