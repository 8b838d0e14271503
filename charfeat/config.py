"""Structured-config schemas: the one place where each key's type, default and meaning is stated.

Every YAML under conf/ names its schema first in its defaults list (``/schema/<group>/<name>@_here_``)
and sets only what differs from it, so a misspelt key, a value of the wrong type or a choice
outside its Enum fails at composition with the key's full name (and the allowed values), before
anything is built. Schemas live in their own ``schema/`` groups, so they never show up as options
of the groups they describe, nor in ``--help``. Constructors take what the config gives: they
state no defaults of their own.
"""

import json
import os
import re
from dataclasses import dataclass, field
from enum import Enum, auto
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import II, MISSING, OmegaConf, SI


class Choice(str, Enum):
    """A key with a fixed set of values. Each member is named and valued as users type it
    (``pooling=mean``) and is that plain string everywhere: comparisons, dict keys, ``str()``,
    f-strings and log lines. Configs leave the process as plain strings (``enum_to_str=True``)."""

    @staticmethod
    def _generate_next_value_(name, start, count, last_values):
        return name

    __str__ = str.__str__
    __format__ = str.__format__


class LabelField(Choice):
    fashion_style = auto()
    vibe_category = auto()
    shot_type = auto()


class OnBadRecord(Choice):
    error = auto()  # stop, naming file:line or key
    skip = auto()  # leave out, count, report (log and W&B)


class VerifyImages(Choice):  # how deeply every image is checked before any model is built
    full = auto()  # decode every pixel: a truncated file is found before training, not at step 30
    header = auto()  # parse each header: format, size, data.max_image_pixels, aspect ratio
    none = auto()  # only that each image exists


def _verify_images_default(train: str, on_bad_record: str) -> str:
    """``full`` where an image would otherwise first be decoded mid-training (a trainable backbone)
    or a bad one must be left out before the run starts (``skip``); ``header`` for a frozen backbone
    under ``error``, whose feature extraction decodes every image before the first step anyway."""
    return VerifyImages.header if train == TrainMode.frozen and on_bad_record == OnBadRecord.error else VerifyImages.full


class RetryMode(Choice):  # botocore's retry modes
    standard = auto()
    adaptive = auto()  # with client-side rate limiting
    legacy = auto()


class TextMode(Choice):
    none = auto()
    caption = auto()  # the record's caption
    text_input = auto()  # style, features, vibe and caption, without the label's clause


class InputFormat(Choice):  # how an image (and its record text) is put to the model
    # one user turn [image, record text?, backbone.prompt] and no generation prompt: for the Instruct models
    chat = auto()
    # Qwen3-VL-Embedding's own: a system turn holding backbone.instruction, a user turn [image, record text?],
    # then the generation prompt <|im_start|>assistant\n, whose last token the model was trained to pool
    embedding = auto()


class Pooling(Choice):
    mean = auto()  # attention-masked mean of all real tokens
    last = auto()  # the last real token: Qwen3-VL-Embedding's native mode
    vision = auto()  # mean over the image tokens only


class TrainMode(Choice):
    frozen = auto()  # no gradients, eval mode, features cached on disk
    lora = auto()  # peft adapters on lora_target_modules
    vision = auto()  # the vision tower and its mergers
    full = auto()


class Dtype(Choice):  # torch's names
    float32 = auto()
    bfloat16 = auto()
    float16 = auto()


class AttnImplementation(Choice):  # transformers' names
    sdpa = auto()
    eager = auto()
    flash_attention_2 = auto()


class RandomModel(Choice):  # the random Qwen3-VLs charfeat builds (charfeat.models.backbone.tiny)
    tiny = auto()  # 0.9 M parameters, small images: tests and smoke runs
    small = auto()  # ~20 M parameters, 224x224 images: benchmarks with a realistic extraction cost


class InputNorm(Choice):
    batch = auto()  # BatchNorm1d over the backbone features
    none = auto()  # for multi-process CPU runs that must match a single process (no SyncBatchNorm)


class Miner(Choice):
    semihard = auto()
    hard = auto()
    all = auto()
    easy = auto()
    batch_hard = auto()  # the hardest positive and negative per anchor


class Distance(Choice):
    cosine = auto()
    euclidean = auto()


class Schedule(Choice):  # after the linear warmup
    cosine = auto()
    constant = auto()


class Precision(Choice):
    auto = "auto"  # bf16 autocast on CUDA, fp32 on CPU (where bf16 matmuls are ~40x slower)
    fp32 = "fp32"
    bf16 = "bf16"


class Metric(Choice):  # the scalar retrieval metrics, in the order tables show them
    precision_at_1 = auto()
    recall_at_5 = auto()
    recall_at_10 = auto()
    mean_average_precision_at_r = auto()
    r_precision = auto()


class OnLeak(Choice):  # an item or a group in both splits
    error = auto()  # stop, naming the groups or file pairs
    warn = auto()  # log them as a warning, train anyway


class WandbMode(Choice):
    offline = auto()  # written under the run dir; `wandb sync` uploads it later
    online = auto()  # needs WANDB_API_KEY
    disabled = auto()


class Split(Choice):
    train = auto()
    val = auto()


class EmbedSplit(Choice):
    train = auto()
    val = auto()
    all = auto()  # train, then val (a source without metadata: every image, once)


@dataclass
class ImagesConfig:
    """How every data source decodes images."""

    # larger images are bad records (decompression bombs); 150 MP covers full-resolution phone photos
    max_image_pixels: Optional[int] = 150_000_000
    # input-pipeline processes (fetch, decode, augment, preprocess); null: the cores less one, at most 8
    # (under torchrun, this process's share of the node's cores); 0: all in the training process
    num_workers: Optional[int] = None


@dataclass
class RecordsConfig(ImagesConfig):
    """What every labelled data source shares: where the JSONL lives and how records become labels."""

    _target_: str = MISSING
    root: str = MISSING  # the JSONL paths (and, locally, the images) are relative to it
    train_jsonl: str = "train.jsonl"  # the training split's metadata (relative to root, or absolute)
    val_jsonl: Optional[str] = "val.jsonl"  # null: a seeded stratified split of the training file
    label_field: LabelField = LabelField.fashion_style  # the image_metadata field that is the class
    on_bad_record: OnBadRecord = OnBadRecord.error  # a bad line or image: stop, naming it, or leave it out and report
    drop_quality: List[str] = field(default_factory=lambda: ["Low"])  # visual_quality values left out
    keep_unknown: bool = False  # true: train "Unknown" as a class of its own
    start_index: int = 0  # older files: filename = aug_{start_index + line - 1:05d}.jpg
    val_fraction: float = 0.1  # with val_jsonl null: the share of each class split off
    split_seed: int = 0  # with val_jsonl null: the seed of that split
    # a record key (top level or in image_metadata) shared by everything that must stay in one split,
    # e.g. the source picture of augmented copies, or the person; null: each record on its own
    group_field: Optional[str] = None
    on_leak: OnLeak = OnLeak.error  # a group in both splits, or a near-duplicate image across them
    # near-duplicate images across splits: cosine of their 16x16 colour thumbnails above this; null: no check
    duplicate_threshold: Optional[float] = 0.97
    # the images' thumbnails for that check, by image identity: a new run reads no image it has seen; null: off
    fingerprint_cache: Optional[str] = SI("${paths.cache_dir}/fingerprints")
    # full for a trainable backbone or under on_bad_record=skip, header for a frozen one under error
    verify_images: VerifyImages = SI("${charfeat.verify_images:${oc.select:backbone.train,frozen},${.on_bad_record}}")


@dataclass
class LocalDataConfig(RecordsConfig):
    _target_: str = "charfeat.data.sources.local.LocalData"
    image_dir: str = "images"  # relative to root


@dataclass
class SampleDataConfig(LocalDataConfig):
    """The bundled sample set, generated on first use, one directory per setting of the keys below."""

    _target_: str = "charfeat.data.sources.sample.SampleData"
    root: Optional[str] = None  # must stay null: the set lives under cache_dir (your own data: data=local)
    cache_dir: str = SI("${paths.cache_dir}/sample_data")  # one directory per setting of the keys below
    num_classes: int = 8  # styles generated
    train_per_class: int = 30  # training images per class
    val_per_class: int = 10  # validation images per class
    image_size: int = 96  # pixels per side
    seed: int = 0  # the same seed gives the same images


@dataclass
class FolderDataConfig(ImagesConfig):
    _target_: str = "charfeat.data.sources.folder.FolderData"
    root: str = MISSING  # the folder to embed
    image_dir: str = "."  # relative to root; images anywhere below it


@dataclass
class S3StoreConfig:
    """Where image objects live and how they are fetched; credentials never appear here."""

    bucket: str = MISSING  # the bucket holding the images
    prefix: str = ""  # keys are <prefix><filename>
    region: Optional[str] = "us-east-1"  # the bucket's AWS region
    endpoint_url: Optional[str] = None  # e.g. http://127.0.0.1:9000 for MinIO, R2, Ceph or a test server
    profile: Optional[str] = None  # a named profile from ~/.aws; null: boto3's default chain
    retry_mode: RetryMode = RetryMode.standard  # botocore's retry mode for throttled or failed requests
    max_attempts: int = 5  # requests per object, first try included (botocore's retries and body retries)
    object_deadline_s: float = 60.0  # per object, over all its attempts; then the run fails, naming it
    connect_timeout: float = 5.0  # seconds
    read_timeout: float = 5.0  # seconds without a byte; bounds the listing of a silent endpoint too
    max_workers: int = 16  # concurrent GETs; also the connection-pool size
    prefetch: int = 64  # images fetched ahead of the one being used
    cache_dir: Optional[str] = SI("${paths.cache_dir}/s3")  # ETag-checked disk cache; null: none


@dataclass
class S3DataConfig(RecordsConfig, S3StoreConfig):
    _target_: str = "charfeat.data.sources.s3.S3Data"
    root: str = "."
    val_prefix: Optional[str] = None  # null: same as prefix


@dataclass
class S3PrefixDataConfig(ImagesConfig, S3StoreConfig):
    _target_: str = "charfeat.data.sources.s3_prefix.S3PrefixData"


@dataclass
class PKSamplerConfig:
    _target_: str = "charfeat.data.sampler.PKBatchSampler"
    _partial_: bool = True
    p: int = 8  # classes per batch
    k: int = 4  # images per class; batch size is p*k
    batches_per_epoch: Optional[int] = None  # null: about one pass over the training set


@dataclass
class BackboneConfig:
    """A Qwen3-VL backbone; the defaults are the real models' (``backbone=tiny`` differs)."""

    _target_: str = "charfeat.models.backbone.model.Qwen3VLBackbone"
    name_or_path: str = MISSING  # hub id or local directory
    revision: Optional[str] = None  # hub branch, tag or commit; null = main
    format: InputFormat = InputFormat.chat  # the input's turns: chat (Instruct models) or embedding (Qwen's own)
    prompt: str = "Describe this person's appearance."  # with format=chat: the text after the image in the user turn
    # with format=embedding: the system turn; stripped, a final "." added if it ends without punctuation, as Qwen does
    instruction: str = "Represent the user's input."
    text: TextMode = TextMode.none  # the record's own text beside the image
    pooling: Pooling = Pooling.mean  # how one hidden layer becomes one vector per image
    layer: int = -1  # hidden_states index: -1 = last layer after the final norm, 0 = embeddings
    # Matryoshka: the head takes the pooled feature's first embed_dim values, L2-normalised; null: the whole feature
    # embed_dim is at most the model's hidden size (Qwen3-VL-Embedding is trained for such cuts). With
    # format=embedding the whole feature is L2-normalised too, as Qwen publishes it.
    embed_dim: Optional[int] = None
    train: TrainMode = TrainMode.frozen  # what of the backbone trains
    lora_r: int = 16  # with train=lora: the adapters' rank
    lora_alpha: int = 32  # with train=lora: the adapters' scale is alpha / r
    lora_dropout: float = 0.05  # with train=lora: dropout on the adapters' input
    # with train=lora: the modules that get adapters, a regex on full module names (peft's re.fullmatch)
    # Default: every attention and MLP projection of the language model; short names such as "proj" or
    # "linear_fc1" would also hit the vision patch embedding and the mergers. Add the vision blocks with
    # |visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc(1|2))
    lora_target_modules: str = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    dtype: Dtype = Dtype.bfloat16  # of the weights (use float32 on CPU); embeddings are always float32
    min_pixels: Optional[int] = None  # null: the processor's
    max_pixels: Optional[int] = 200704  # 448*448: 196 LLM tokens per image; null: the processor's
    attn_implementation: Optional[AttnImplementation] = AttnImplementation.sdpa  # transformers' attention kernel
    gradient_checkpointing: bool = False  # recompute activations in backward when training
    feature_cache: Optional[str] = SI("${paths.cache_dir}/features")  # frozen features on disk; null = off
    # padded tokens (rows x longest row) per backbone forward; null: embed_batch_size images, a P×K batch whole
    # Extraction batches hold as many images as fit; a larger training batch runs in chunks (gradient cache).
    max_tokens_per_batch: Optional[int] = None
    # build this random model at name_or_path first if nothing is there; null: name_or_path must exist
    build_random: Optional[RandomModel] = None


@dataclass
class AugmentConfig:
    """Training-image augmentation (charfeat.data.augment), applied in the input pipeline's workers.

    The val split is never augmented. A trainable backbone sees fresh views every epoch; a frozen
    one sees ``views`` views per image, extracted once into the feature cache."""

    _target_: str = "charfeat.data.augment.Augment"
    name: str = "none"  # the preset, for logs and run names
    views: int = 1  # frozen backbone: views per training image in the feature cache; each epoch samples one
    seed: int = 0  # with the epoch (or view) and the image, seeds each view
    crop_scale: Optional[List[float]] = None  # [min, max] share of the area a random crop keeps; null: no crop
    crop_ratio: List[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # the crop's aspect-ratio range
    flip: float = 0.0  # chance of a horizontal flip
    brightness: float = 0.0  # largest relative change, each way
    contrast: float = 0.0  # largest relative change, each way
    saturation: float = 0.0  # largest relative change, each way
    grayscale: float = 0.0  # chance of dropping colour


@dataclass
class HeadConfig:
    _target_: str = "charfeat.models.head.ProjectionHead"
    _partial_: bool = True  # in_dim is the backbone's feature_dim (embed_dim or hidden size), known once built
    hidden_dim: Optional[int] = 512  # null: one Linear layer
    out_dim: int = 128  # the embedding's width
    dropout: float = 0.1  # before the last Linear layer
    input_norm: InputNorm = InputNorm.batch  # on the backbone features, before the first Linear layer


@dataclass
class TripletLossConfig:
    _target_: str = "charfeat.models.losses.TripletLoss"
    margin: float = 0.2  # also the miner's
    miner: Miner = Miner.semihard  # which triplets of the batch the loss sees
    distance: Distance = Distance.cosine  # between embeddings, for the miner and the loss


@dataclass
class MinedLossConfig:
    _target_: str = "charfeat.models.losses.MinedLoss"
    loss: Any = MISSING  # a pytorch-metric-learning loss (its own _target_)
    miner: Any = None  # a pytorch-metric-learning miner, or null: every pair of the batch


@dataclass
class ArcFaceConfig:
    _target_: str = "charfeat.models.losses.ArcFaceLoss"
    _partial_: bool = True  # sized by the run: number of classes, embedding width
    margin: float = 28.6  # degrees
    scale: float = 64.0  # of the logits
    lr: float = 1e-2  # of the class centres, in their own optimizer group


@dataclass
class AdamWConfig:
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 1e-3  # peak learning rate, after the warmup
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay


@dataclass
class TrainerConfig:
    epochs: int = 10  # passes over the training set
    seed: int = 0  # a CPU run is fully deterministic
    device: str = "auto"  # auto | cpu | cuda (this process's GPU: cuda:<LOCAL_RANK>) | cuda:N (one process)
    embed_batch_size: int = 32  # images per backbone forward when extracting features
    plots: bool = True  # plots/tsne.png and plots/neighbours.png of the val embeddings after training
    max_steps: Optional[int] = None  # stop (resumably) after this many steps; null = run all epochs
    warmup_fraction: float = 0.05  # linear warmup over this share of the optimizer steps
    schedule: Schedule = Schedule.cosine  # the learning rate after the warmup
    grad_clip: Optional[float] = 1.0  # max gradient norm; null = no clipping
    accumulate: int = 1  # batches per optimizer step
    precision: Precision = Precision.auto  # autocast dtype of the forward pass
    # picks the best epoch: checkpoints/best.pt, the "trained" metrics, what a sweep optimises
    monitor: Metric = Metric.mean_average_precision_at_r
    patience: Optional[int] = None  # stop after this many evaluations without a better monitor value
    eval_every: int = 1  # evaluate (and keep best.pt) after every this many epochs, and after the last
    # the final evaluation scores every val query against all of val; null: so does each epoch's
    eval_max_queries: Optional[int] = None  # each epoch's evaluation: this many seeded val queries, against all


@dataclass
class EvalConfig:
    """The evaluation that ends a run (and charfeat.evaluate): intervals and suspect labels."""

    bootstrap: int = 1000  # resamples of the queries for each metric's 95 % interval; 0: no intervals
    seed: int = 0  # of the bootstrap's draws
    suspects_k: int = 10  # nearest neighbours whose labels vote on each item's (suspects.jsonl)


@dataclass
class WandbConfig:
    _target_: str = "charfeat.tracking.WandbTracker"
    project: str = "charfeat"  # the W&B project
    entity: Optional[str] = None  # the W&B team or user; null: the API key's default
    mode: WandbMode = WandbMode.offline  # where the run goes
    group: Optional[str] = None  # null: the multirun's sweep dir name groups its jobs
    tags: List[str] = II("tags")  # the run's tags
    # plots with people's photos (neighbours.png) and t-SNE; null: logged offline, not uploaded online
    log_images: Optional[bool] = None


@dataclass
class PathsConfig:
    # built tiny models, the generated sample set, frozen features and S3 images, shared by runs
    cache_dir: str = SI("${oc.env:CHARFEAT_CACHE_DIR,${oc.env:HOME}/.cache/charfeat}")
    output_dir: str = SI("${hydra:runtime.output_dir}")  # everything a run writes goes here


@dataclass
class TrainConfig:
    """The run's top level: group nodes carry their own schemas, run knobs live here."""

    data: Any = MISSING
    sampler: Any = MISSING
    backbone: Any = MISSING
    augment: Any = MISSING
    head: Any = MISSING
    loss: Any = MISSING
    optim: Any = MISSING
    trainer: Any = MISSING
    eval: Any = MISSING
    logger: Any = None
    paths: Any = MISSING
    task_name: str = "train"  # names the output dirs: outputs/<task_name>/...
    # resume from a checkpoint (checkpoints/last.pt of an earlier run); this run's command line wins
    ckpt_path: Optional[str] = None
    tags: List[str] = field(default_factory=list)  # W&B tags of the run
    # the best epoch's validation metric that `main` returns (what a sweeper optimises); one concept
    # with trainer.monitor, which picks that epoch
    optimized_metric: Metric = II("trainer.monitor")


@dataclass
class EmbedConfig:
    """`python -m charfeat.embed`: a saved model's embeddings of one split, with ids and labels."""

    data: Any = None  # None: the data config saved in the checkpoint
    paths: Any = MISSING
    checkpoint: str = MISSING  # a .pt file written by charfeat.train
    split: EmbedSplit = EmbedSplit.all  # the records to embed
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: Optional[int] = None  # images per backbone forward; None: the checkpoint's trainer.embed_batch_size
    task_name: str = "embed"


@dataclass
class EvaluateConfig(EmbedConfig):
    """`python -m charfeat.evaluate`: a saved model's metrics and plots on one split."""

    split: Split = Split.val  # the split to score
    plots: bool = True  # plots/*.png (t-SNE, neighbour grid, confusion heat map), also shown in report.html
    eval: Any = MISSING
    task_name: str = "evaluate"


@dataclass
class S3QueryConfig:
    """For an s3:// query; credentials only from boto3's chain (environment, profile, role)."""

    region: Optional[str] = "us-east-1"
    endpoint_url: Optional[str] = None
    profile: Optional[str] = None


@dataclass
class SearchConfig:
    """`python -m charfeat.search`: the items of an embed output most similar to one image."""

    paths: Any = MISSING
    checkpoint: str = MISSING  # the .pt file the index was embedded with
    index: str = MISSING  # an output dir of charfeat.embed (embeddings.npy + items.jsonl)
    query: str = MISSING  # a local image file, or s3://bucket/key
    k: int = 5
    s3: S3QueryConfig = field(default_factory=S3QueryConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    task_name: str = "search"


@dataclass
class DownloadConfig:
    """`python -m charfeat.download`: a backbone's files fetched ahead, for nodes without the hub."""

    backbone: Any = MISSING
    paths: Any = MISSING
    revision: Optional[str] = None  # branch, tag or commit to fetch; null: backbone.revision (null = main)
    target_dir: Optional[str] = None  # null: the Hugging Face cache (HF_HOME); else a plain directory
    task_name: str = "download"


SCHEMAS = {
    (None, "train_schema"): TrainConfig,
    (None, "evaluate_schema"): EvaluateConfig,
    (None, "embed_schema"): EmbedConfig,
    (None, "search_schema"): SearchConfig,
    (None, "download_schema"): DownloadConfig,
    ("schema/data", "sample"): SampleDataConfig,
    ("schema/data", "local"): LocalDataConfig,
    ("schema/data", "s3"): S3DataConfig,
    ("schema/data", "folder"): FolderDataConfig,
    ("schema/data", "s3_prefix"): S3PrefixDataConfig,
    ("schema/sampler", "pk"): PKSamplerConfig,
    ("schema/backbone", "backbone"): BackboneConfig,
    ("schema/augment", "augment"): AugmentConfig,
    ("schema/head", "head"): HeadConfig,
    ("schema/loss", "triplet"): TripletLossConfig,
    ("schema/loss", "mined"): MinedLossConfig,
    ("schema/loss", "arcface"): ArcFaceConfig,
    ("schema/optim", "adamw"): AdamWConfig,
    ("schema/trainer", "trainer"): TrainerConfig,
    ("schema/eval", "eval"): EvalConfig,
    ("schema/logger", "wandb"): WandbConfig,
    ("schema/paths", "paths"): PathsConfig,
}


OmegaConf.register_new_resolver("charfeat.verify_images", _verify_images_default, replace=True)


def help_groups() -> str:
    """The groups part of ``--help``: each group the run's primary config chooses from (its defaults
    list, so never ``schema/*``) and ``hydra/launcher``, with their options, as Hydra lists them."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    groups = {group for group in HydraConfig.get().runtime.choices if not group.startswith("hydra")}
    repository = GlobalHydra.instance().config_loader().repository  # one search, not a copy per group
    return "".join(f"{group}: {', '.join(sorted(repository.get_group_options(group)))}\n"
                   for group in sorted(groups | {"hydra/launcher"}))


def register_configs() -> None:
    """Put every schema in Hydra's ConfigStore (and the ``--help`` resolver); call before composing."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node)
    OmegaConf.register_new_resolver("charfeat.help_groups", help_groups, replace=True)


def with_schema_defaults(saved: dict, group: str) -> Any:
    """The ``group`` node of a checkpoint's saved config on top of the current schema of its
    ``_target_``, so a checkpoint written before a key existed still builds (the key takes its
    default). The node stays inside the whole saved config, so defaults that refer to the rest of it
    (``${paths.cache_dir}/...``) resolve against the saved run's values."""
    node = saved[group]
    schemas = [schema for schema in SCHEMAS.values() if getattr(schema, "_target_", None) == node.get("_target_")]
    config = OmegaConf.create({key: value for key, value in saved.items() if key != group})
    config[group] = OmegaConf.merge(OmegaConf.structured(schemas[0]), node) if schemas else node
    return config[group]


def build(schema: type, /, **values: Any) -> Any:
    """What composition builds from ``schema`` with ``values`` set: its defaults, each value checked
    (an unknown key, a wrong type or a choice outside its Enum fails, naming the key), instantiated.

    For Python callers without a Hydra config (tests, experiments). A default that refers to
    ``paths`` (``${paths.cache_dir}/...``) resolves against `PathsConfig`'s defaults; one that
    refers to the rest of a run's config must be given a value here. A constructor's own error
    comes out as itself, not wrapped in Hydra's InstantiationException.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    config = OmegaConf.create({"paths": OmegaConf.structured(PathsConfig)})
    config.node = OmegaConf.merge(OmegaConf.structured(schema), values)
    try:
        return instantiate(config.node)
    except InstantiationException as err:
        if err.__cause__ is None:
            raise
        raise err.__cause__ from None


@dataclass(frozen=True)
class Range:
    """A numeric key's allowed values: between ``low`` and ``high`` (open ends excluded), or null."""

    low: Optional[float] = None
    high: Optional[float] = None
    open_low: bool = False
    open_high: bool = False
    nullable: bool = False

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        else:
            text = f"{'>' if self.open_low else '>='} {self.low:g}"
        return text + (" or null" if self.nullable else "")


# What types and Enums cannot state: the ranges of numeric keys, checked by `validate` (a key a run's
# config lacks, such as loss.lr outside ArcFace, is skipped).
RANGES = {
    "trainer.epochs": Range(1),
    "trainer.accumulate": Range(1),
    "trainer.embed_batch_size": Range(1),
    "trainer.max_steps": Range(1, nullable=True),
    "trainer.patience": Range(1, nullable=True),
    "trainer.eval_every": Range(1),
    "trainer.eval_max_queries": Range(1, nullable=True),
    "trainer.grad_clip": Range(0, open_low=True, nullable=True),  # <= 0 would zero or reverse every gradient
    "trainer.warmup_fraction": Range(0, 1),
    "head.out_dim": Range(1),
    "head.hidden_dim": Range(1, nullable=True),
    "head.dropout": Range(0, 1, open_high=True),
    "optim.lr": Range(0, open_low=True),
    "optim.weight_decay": Range(0),
    "backbone.lora_r": Range(1),
    "backbone.lora_alpha": Range(0, open_low=True),
    "backbone.lora_dropout": Range(0, 1, open_high=True),
    "backbone.min_pixels": Range(1, nullable=True),
    "backbone.max_pixels": Range(1, nullable=True),
    "backbone.max_tokens_per_batch": Range(1, nullable=True),
    "data.num_workers": Range(0, nullable=True),
    "augment.views": Range(1),
    "augment.flip": Range(0, 1),
    "augment.grayscale": Range(0, 1),
    "augment.brightness": Range(0, 1, open_high=True),
    "augment.contrast": Range(0, 1, open_high=True),
    "augment.saturation": Range(0, 1, open_high=True),
    "loss.margin": Range(0),
    "loss.scale": Range(0, open_low=True),
    "loss.lr": Range(0, open_low=True),
}


def validate(cfg) -> None:
    """One pass over a composed train config before anything is built: every numeric range and every
    rule across keys, each problem naming its key and what it allows. Reads a model's config.json
    (never its weights) when it is at hand, to check ``backbone.layer`` and the pixel budget."""
    from omegaconf import OmegaConf

    from charfeat.errors import ConfigError

    problems = []
    for key, allowed in RANGES.items():
        node, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, node)
        if parent is not None and leaf in parent and not allowed.allows(parent[leaf]):
            problems.append(f"{key}={parent[leaf]}: must be {allowed}")
    problems += device_problems(str(cfg.trainer.device), "trainer.device")
    problems += backbone_problems(cfg.backbone)
    if problems:
        raise ConfigError("invalid config (nothing was built):\n  " + "\n  ".join(problems))


def device_problems(name: str, key: str) -> list[str]:
    """``auto``, ``cpu``, ``cuda`` (this process's GPU) or ``cuda:N`` (one process), on a machine that has it."""
    if name in ("auto", "cpu"):
        return []
    if not re.fullmatch(r"cuda(:\d+)?", name):
        return [f"{key}={name}: expected auto, cpu, cuda or cuda:N"]
    import torch

    if not torch.cuda.is_available():
        return [f"{key}={name} but torch {torch.__version__} sees no CUDA device; use {key}=auto or cpu"]
    if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
        return [f"{key}={name} but this machine has {torch.cuda.device_count()} CUDA device(s)"]
    if ":" in name and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return [f"{key}={name} would put every torchrun process on one GPU; use {key}=cuda (each process "
                "takes cuda:<LOCAL_RANK>)"]
    return []


def backbone_problems(backbone) -> list[str]:
    """Rules across backbone keys; the layer and pixel budget against the model's own files if at hand."""
    problem = float16_training_problem(backbone.dtype, backbone.train)
    problems = [problem] if problem else []
    if problem := instruction_problem(backbone.format, backbone.instruction):
        problems.append(problem)
    config = model_file(backbone.name_or_path, backbone.revision, "config.json")
    text_config = (config or {}).get("text_config", {})
    layers = text_config.get("num_hidden_layers")
    if layers is not None and not -(layers + 1) <= backbone.layer <= layers:
        problems.append(f"backbone.layer={backbone.layer}: must be in [-{layers + 1}, {layers}] for "
                        f"{backbone.name_or_path} ({layers} layers)")
    if problem := embed_dim_problem(backbone.embed_dim, text_config.get("hidden_size"), backbone.name_or_path):
        problems.append(problem)
    size = processor_pixels(backbone.name_or_path, backbone.revision)
    low = backbone.min_pixels if backbone.min_pixels is not None else size.get("shortest_edge")
    high = backbone.max_pixels if backbone.max_pixels is not None else size.get("longest_edge")
    if low is not None and high is not None and low > high:
        problems.append(f"backbone.min_pixels={low} exceeds backbone.max_pixels={high} (null: the processor's)")
    return problems


def processor_pixels(name_or_path: str, revision: Optional[str]) -> dict:
    """The image processor's own pixel range ({shortest_edge, longest_edge}) from its saved config, if at hand:
    ``preprocessor_config.json`` (hub checkpoints) or ``processor_config.json`` (transformers 5 saves)."""
    pre = model_file(name_or_path, revision, "preprocessor_config.json") or {}
    proc = (model_file(name_or_path, revision, "processor_config.json") or {}).get("image_processor") or {}
    return pre.get("size") or proc.get("size") or {}


def instruction_problem(input_format: str, instruction: str) -> Optional[str]:
    if str(input_format) == InputFormat.embedding and not instruction.strip():
        return ("backbone.instruction is empty: backbone.format=embedding puts it in the system turn; give the task "
                "the embedding serves (default: \"Represent the user's input.\")")
    return None


def embed_dim_problem(embed_dim: Optional[int], hidden_size: Optional[int], name_or_path: str) -> Optional[str]:
    """``backbone.embed_dim``: >= 1 and, where the model's hidden size is known, at most that."""
    if embed_dim is None or (embed_dim >= 1 and (hidden_size is None or embed_dim <= hidden_size)):
        return None
    if hidden_size is None:
        return f"backbone.embed_dim={embed_dim}: must be >= 1 or null (null: the whole feature)"
    return (f"backbone.embed_dim={embed_dim}: must be in [1, {hidden_size}], {hidden_size} being the hidden size "
            f"of {name_or_path} (null: the whole feature)")


def float16_training_problem(dtype: str, train: str) -> Optional[str]:
    if str(dtype) == Dtype.float16 and str(train) != TrainMode.frozen:
        return (f"backbone.dtype=float16 with backbone.train={train}: float16 training needs loss scaling, which "
                "charfeat does not do; use bfloat16 (the trainable parts train in float32 either way)")
    return None


def model_file(name_or_path: str, revision: Optional[str], filename: str) -> Optional[dict]:
    """A model's small JSON file from its local directory or the hub cache; None when it is not at hand
    (the model is not downloaded yet: the backbone checks again once it is loaded)."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        found = path / filename
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(name_or_path), filename, revision=revision)
        except Exception:  # noqa: BLE001 - not a repo id, no cache: nothing to check against
            return None
        found = Path(cached) if isinstance(cached, str) else None
    try:
        return json.loads(found.read_text()) if found is not None and found.is_file() else None
    except (OSError, ValueError):
        return None
