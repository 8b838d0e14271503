"""Structured-config schemas: every YAML under conf/ validates against one of these.

Each group's YAML names its schema first in its defaults list (``/schema/<group>/<name>@_here_``),
so a misspelt key or a value of the wrong type fails at composition with the key's full name,
before anything is built. Schemas live in their own ``schema/`` groups so that they never show
up as options of the groups they describe.
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class RecordsConfig:
    """What every data source shares: where the JSONL lives and how records become labels."""

    _target_: str = MISSING
    root: str = MISSING
    train_jsonl: str = "train.jsonl"
    val_jsonl: Optional[str] = "val.jsonl"
    label_field: str = "fashion_style"
    on_bad_record: str = "error"
    drop_quality: List[str] = field(default_factory=lambda: ["Low"])
    keep_unknown: bool = False
    start_index: int = 0
    val_fraction: float = 0.1
    split_seed: int = 0


@dataclass
class LocalDataConfig(RecordsConfig):
    _target_: str = "charfeat.data.sources.local.LocalData"
    image_dir: str = "images"


@dataclass
class SampleDataConfig(LocalDataConfig):
    _target_: str = "charfeat.data.sources.sample.SampleData"
    num_classes: int = 8
    train_per_class: int = 30
    val_per_class: int = 10
    image_size: int = 96
    seed: int = 0


@dataclass
class FolderDataConfig:
    _target_: str = "charfeat.data.sources.folder.FolderData"
    root: str = MISSING
    image_dir: str = "."


@dataclass
class S3StoreConfig:
    """Where image objects live and how they are fetched; credentials never appear here."""

    bucket: str = MISSING
    prefix: str = ""
    region: Optional[str] = "us-east-1"
    endpoint_url: Optional[str] = None
    profile: Optional[str] = None
    retry_mode: str = "standard"
    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_workers: int = 16
    prefetch: int = 64
    cache_dir: Optional[str] = None


@dataclass
class S3DataConfig(RecordsConfig, S3StoreConfig):
    _target_: str = "charfeat.data.sources.s3.S3Data"
    root: str = "."
    val_prefix: Optional[str] = None


@dataclass
class S3PrefixDataConfig(S3StoreConfig):
    _target_: str = "charfeat.data.sources.s3_prefix.S3PrefixData"


@dataclass
class PKSamplerConfig:
    _target_: str = "charfeat.data.sampler.PKBatchSampler"
    _partial_: bool = True
    p: int = 8
    k: int = 4
    batches_per_epoch: Optional[int] = None


@dataclass
class BackboneConfig:
    _target_: str = "charfeat.models.backbone.model.Qwen3VLBackbone"
    name_or_path: str = MISSING
    revision: Optional[str] = None
    prompt: str = "Describe this person's appearance."
    text: str = "none"
    pooling: str = "mean"
    layer: int = -1
    train: str = "frozen"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = MISSING
    dtype: str = "float32"
    min_pixels: Optional[int] = None
    max_pixels: Optional[int] = None
    attn_implementation: Optional[str] = "sdpa"
    gradient_checkpointing: bool = False
    feature_cache: Optional[str] = None
    build_tiny: bool = False


@dataclass
class HeadConfig:
    _target_: str = "charfeat.models.head.ProjectionHead"
    _partial_: bool = True
    hidden_dim: Optional[int] = 512
    out_dim: int = 128
    dropout: float = 0.1
    input_norm: str = "batch"


@dataclass
class TripletLossConfig:
    _target_: str = "charfeat.models.losses.TripletLoss"
    margin: float = 0.2
    miner: str = "semihard"
    distance: str = "cosine"


@dataclass
class MinedLossConfig:
    _target_: str = "charfeat.models.losses.MinedLoss"
    loss: Any = MISSING
    miner: Any = None


@dataclass
class ArcFaceConfig:
    _target_: str = "charfeat.models.losses.ArcFaceLoss"
    _partial_: bool = True
    margin: float = 28.6
    scale: float = 64.0
    lr: float = 1e-2


@dataclass
class AdamWConfig:
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 1e-4


@dataclass
class TrainerConfig:
    epochs: int = 10
    seed: int = 0
    device: str = "auto"
    embed_batch_size: int = 32
    plots: bool = True
    max_steps: Optional[int] = None
    warmup_fraction: float = 0.05
    schedule: str = "cosine"
    grad_clip: Optional[float] = 1.0
    accumulate: int = 1
    precision: str = "auto"
    monitor: str = "mean_average_precision_at_r"
    patience: Optional[int] = None


@dataclass
class WandbConfig:
    _target_: str = "charfeat.tracking.WandbTracker"
    project: str = "charfeat"
    entity: Optional[str] = None
    mode: str = "offline"
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    cache_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrainConfig:
    """The run's top level: group nodes carry their own schemas, run knobs live here."""

    data: Any = MISSING
    sampler: Any = MISSING
    backbone: Any = MISSING
    head: Any = MISSING
    loss: Any = MISSING
    optim: Any = MISSING
    trainer: Any = MISSING
    logger: Any = None
    paths: Any = MISSING
    task_name: str = "train"
    ckpt_path: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    optimized_metric: str = "mean_average_precision_at_r"


@dataclass
class EmbedConfig:
    """`python -m charfeat.embed`: a saved model's embeddings of one split, with ids and labels."""

    data: Any = None  # None: the data config saved in the checkpoint
    paths: Any = MISSING
    checkpoint: str = MISSING
    split: str = "val"
    device: str = "auto"
    batch_size: Optional[int] = None  # None: the checkpoint's trainer.embed_batch_size
    task_name: str = "embed"


@dataclass
class EvaluateConfig(EmbedConfig):
    """`python -m charfeat.evaluate`: a saved model's metrics and plots on one split."""

    plots: bool = True
    task_name: str = "evaluate"


@dataclass
class S3QueryConfig:
    region: Optional[str] = "us-east-1"
    endpoint_url: Optional[str] = None
    profile: Optional[str] = None


@dataclass
class SearchConfig:
    """`python -m charfeat.search`: the items of an embed output most similar to one image."""

    paths: Any = MISSING
    checkpoint: str = MISSING
    index: str = MISSING
    query: str = MISSING
    k: int = 5
    s3: S3QueryConfig = field(default_factory=S3QueryConfig)
    device: str = "auto"
    task_name: str = "search"


SCHEMAS = {
    (None, "train_schema"): TrainConfig,
    (None, "evaluate_schema"): EvaluateConfig,
    (None, "embed_schema"): EmbedConfig,
    (None, "search_schema"): SearchConfig,
    ("schema/data", "sample"): SampleDataConfig,
    ("schema/data", "local"): LocalDataConfig,
    ("schema/data", "s3"): S3DataConfig,
    ("schema/data", "folder"): FolderDataConfig,
    ("schema/data", "s3_prefix"): S3PrefixDataConfig,
    ("schema/sampler", "pk"): PKSamplerConfig,
    ("schema/backbone", "backbone"): BackboneConfig,
    ("schema/head", "head"): HeadConfig,
    ("schema/loss", "triplet"): TripletLossConfig,
    ("schema/loss", "mined"): MinedLossConfig,
    ("schema/loss", "arcface"): ArcFaceConfig,
    ("schema/optim", "adamw"): AdamWConfig,
    ("schema/trainer", "trainer"): TrainerConfig,
    ("schema/logger", "wandb"): WandbConfig,
    ("schema/paths", "paths"): PathsConfig,
}


def register_configs() -> None:
    """Put every schema in Hydra's ConfigStore; call before composing."""
    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node)
