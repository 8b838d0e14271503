"""Every option of every config group composes, validates against its schema and instantiates."""

import functools
import importlib
import inspect
import sys
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from charfeat.config import SCHEMAS, Choice, Pooling, register_configs

CONF = files("charfeat.conf")
GROUPS = ["data", "sampler", "backbone", "head", "loss", "optim", "trainer", "eval", "logger", "paths"]
OPTIONS = [(group, entry.name.removesuffix(".yaml")) for group in GROUPS
           for entry in sorted(CONF.joinpath(group).iterdir(), key=lambda e: e.name) if entry.name.endswith(".yaml")]
EXPERIMENTS = sorted(e.name.removesuffix(".yaml") for e in CONF.joinpath("experiment").iterdir()
                     if e.name.endswith(".yaml"))


def schema_of(group: str, option: str):
    """The schema a group option's YAML names first in its defaults list."""
    import yaml

    first = yaml.safe_load(CONF.joinpath(group, f"{option}.yaml").read_text())["defaults"][0]
    schema_group, _, name = first.removeprefix("/").removesuffix("@_here_").rpartition("/")
    return SCHEMAS[(schema_group, name)]


def test_every_group_has_options():
    assert {group for group, _ in OPTIONS} == set(GROUPS)
    assert "seed_baseline" in EXPERIMENTS


def instantiate_all(cfg):
    """Build everything but the backbone; the backbone's arguments must fit its constructor."""
    assert hasattr(instantiate(cfg.data), "records")
    batches = instantiate(cfg.sampler)(labels=[i % cfg.sampler.p for i in range(8 * cfg.sampler.p)],
                                       seed=cfg.trainer.seed)
    assert all(len(batch) == cfg.sampler.p * cfg.sampler.k for batch in batches)
    backbone_kwargs = {k: v for k, v in OmegaConf.to_container(cfg.backbone, resolve=True).items()
                       if not k.startswith("_")}
    inspect.signature(get_class(cfg.backbone._target_)).bind(**backbone_kwargs)
    head = instantiate(cfg.head)(in_dim=16)
    out = head.eval()(torch.randn(4, 16))
    assert out.shape == (4, cfg.head.out_dim)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))
    loss_fn = instantiate(cfg.loss)
    if isinstance(loss_fn, functools.partial):  # sized by the run, as train.py does
        loss_fn = loss_fn(num_classes=4, embedding_dim=4)
    loss, _ = loss_fn(torch.nn.functional.normalize(torch.randn(8, 4), dim=-1), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert torch.isfinite(loss)
    assert isinstance(instantiate(cfg.optim)(params=head.parameters()), torch.optim.Optimizer)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(compose_cfg, group, option):
    overrides = [f"{group}={option}"]
    if (group, option) in (("data", "local"), ("data", "folder")):
        overrides.append("data.root=/nonexistent")
    if (group, option) in (("data", "s3"), ("data", "s3_prefix")):
        overrides.append("data.bucket=some-bucket")
    cfg = compose_cfg(*overrides)
    node = cfg[group]
    if node is not None:
        assert OmegaConf.get_type(node) is schema_of(group, option)
    OmegaConf.resolve(cfg)
    instantiate_all(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(compose_cfg, experiment):
    cfg = compose_cfg(f"experiment={experiment}")
    OmegaConf.resolve(cfg)
    instantiate_all(cfg)


def test_seed_baseline_is_the_documented_run(compose_cfg):
    cfg = compose_cfg("experiment=seed_baseline")
    assert cfg.data.bucket == "sometimes-ki-datasets"
    assert cfg.data.prefix == "characters/augmented/generated/"
    assert cfg.backbone.name_or_path == "Qwen/Qwen3-VL-2B-Instruct" and cfg.backbone.train == "frozen"
    assert cfg.head.hidden_dim is not None  # MLP head
    assert (cfg.loss.margin, cfg.loss.miner) == (0.2, "semihard")
    assert (cfg.sampler.p, cfg.sampler.k) == (8, 4)
    assert cfg.optim.lr == pytest.approx(1e-5)
    assert cfg.trainer.epochs == 10


def test_used_by_overrides(compose_cfg):
    cfg = compose_cfg("sampler.p=8", "loss.margin=0.3")
    assert cfg.sampler.p == 8 and cfg.loss.margin == pytest.approx(0.3)
    assert cfg.data._target_.endswith("SampleData") and cfg.backbone.build_random == "tiny"
    assert cfg.logger.mode == "offline"


@pytest.mark.parametrize("size", ["2b", "8b"])
def test_the_embedding_backbones_select_their_own_format(compose_cfg, size):
    cfg = compose_cfg(f"backbone=qwen3_vl_embedding_{size}")
    assert (cfg.backbone.format, cfg.backbone.pooling) == ("embedding", "last")
    assert cfg.backbone.instruction == "Represent the user's input." and cfg.backbone.embed_dim is None
    assert compose_cfg("backbone.embed_dim=64").backbone.embed_dim == 64
    cfg = compose_cfg(f"backbone=qwen3_vl_embedding_{size}", "backbone.embed_dim=1024",
                      "backbone.instruction=Represent the clothing style.")
    assert (cfg.backbone.embed_dim, cfg.backbone.instruction) == (1024, "Represent the clothing style.")


def test_logger_none_disables_tracking(compose_cfg):
    assert compose_cfg("logger=none").logger is None


@pytest.mark.parametrize(("override", "message"), [
    ("loss.margn=0.3", "loss.margn"),
    ("sampler.q=3", "sampler.q"),
    ("loss.margin=abc", "loss.margin"),
    ("sampler.p=many", "sampler.p"),
])
def test_bad_override_fails_naming_the_key(compose_cfg, override, message):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(override)
    text = str(info.value) + str(info.value.__cause__)
    assert message in text


def test_misspelt_key_in_a_yaml_file_is_rejected(compose_cfg, tmp_path):
    """A user's experiment file (found through hydra.searchpath) with a typo fails, naming the key."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "typo.yaml").write_text("# @package _global_\nloss:\n  margn: 0.5\n")
    (tmp_path / "experiment" / "fine.yaml").write_text("# @package _global_\nloss:\n  margin: 0.5\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    assert compose_cfg(searchpath, "experiment=fine").loss.margin == 0.5
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(searchpath, "experiment=typo")
    assert "margn" in str(info.value) + str(info.value.__cause__)


def yamls_with_a_schema():
    """Every YAML under conf/ whose defaults list starts with its schema: a charfeat schema or a Hydra
    plugin's config (hydra/launcher), as (path relative to conf/, ConfigStore path of the schema)."""
    root = Path(str(CONF))
    found = []
    for path in sorted(root.rglob("*.yaml")):
        defaults = OmegaConf.load(path).get("defaults")
        first = defaults[0] if defaults else None
        if isinstance(first, str) and first != "_self_":
            name, group = first.removesuffix("@_here_"), path.parent.relative_to(root).as_posix()
            schema = name[1:] if name.startswith("/") else name if group == "." else f"{group}/{name}"
            found.append((path.relative_to(root).as_posix(), schema))
    return found


def test_every_option_and_primary_config_names_its_schema():
    checked = {path for path, _ in yamls_with_a_schema()}
    assert {f"{group}/{option}.yaml" for group, option in OPTIONS if option != "none"} <= checked
    assert {"train.yaml", "evaluate.yaml", "embed.yaml", "search.yaml", "hydra/launcher/slurm.yaml"} <= checked


@pytest.mark.parametrize(("path", "schema"), yamls_with_a_schema(), ids=[p for p, _ in yamls_with_a_schema()])
def test_yaml_sets_only_what_differs_from_its_schema(path, schema):
    """Each default is stated once: in the schema. A key a YAML sets to the schema's own default
    (or a _target_ the schema already names) is a second statement of it, which could drift."""
    import hydra_plugins.hydra_submitit_launcher.config  # noqa: F401 -- registers the launchers' schemas
    from hydra.core.config_store import ConfigStore

    register_configs()
    defaults = OmegaConf.to_container(ConfigStore.instance().load(f"{schema}.yaml").node, enum_to_str=True)
    values = OmegaConf.to_container(OmegaConf.load(Path(str(CONF)) / path))
    values.pop("defaults")
    assert set(values) <= set(defaults), f"{path}: keys its schema lacks"
    assert not [key for key, value in values.items() if value == defaults[key]], f"{path} restates defaults"


def test_choices_are_typed_as_users_type_them_and_print_plainly():
    for choice in Choice.__subclasses__():
        assert all(member.name == member.value for member in choice), choice
    assert str(Pooling.last) == f"{Pooling.last}" == "%s" % Pooling.last == "last" and f"{Pooling.last:>5}" == " last"
    assert Pooling.last == "last" and {"last": 1}[Pooling.last] == 1


@pytest.mark.parametrize(("overrides", "key", "allowed"), [
    (["backbone.pooling=cls"], "backbone.pooling", "mean, last, vision"),
    (["backbone.format=plain"], "backbone.format", "chat, embedding"),
    (["backbone.train=qlora"], "backbone.train", "frozen, lora, vision, full"),
    (["backbone.text=ocr"], "backbone.text", "none, caption, text_input"),
    (["backbone.dtype=float64"], "backbone.dtype", "float32, bfloat16, float16"),
    (["backbone.attn_implementation=flash"], "backbone.attn_implementation", "sdpa, eager, flash_attention_2"),
    (["data.on_bad_record=ignore"], "data.on_bad_record", "error, skip"),
    (["data.label_field=style"], "data.label_field", "fashion_style, vibe_category, shot_type"),
    (["data=s3", "data.bucket=b", "data.retry_mode=fast"], "data.retry_mode", "standard, adaptive, legacy"),
    (["loss.miner=medium"], "loss.miner", "semihard, hard, all, easy, batch_hard"),
    (["loss.distance=manhattan"], "loss.distance", "cosine, euclidean"),
    (["head.input_norm=layer"], "head.input_norm", "batch, none"),
    (["trainer.precision=fp16"], "trainer.precision", "auto, fp32, bf16"),
    (["trainer.schedule=linear"], "trainer.schedule", "cosine, constant"),
    (["trainer.monitor=loss"], "trainer.monitor", METRICS := "precision_at_1, recall_at_5, recall_at_10, "
                                                                 "mean_average_precision_at_r, r_precision"),
    (["optimized_metric=accuracy"], "optimized_metric", METRICS),
    (["logger.mode=offlne"], "logger.mode", "offline, online, disabled"),
])
def test_bad_choice_fails_at_composition_naming_key_and_allowed_values(compose_cfg, overrides, key, allowed):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(*overrides)
    text = str(info.value) + str(info.value.__cause__)
    assert key in text and f"expected one of [{allowed}]" in text


def test_choices_reach_the_code_as_members_and_leave_it_as_plain_strings(compose_cfg):
    cfg = compose_cfg("backbone.pooling=last", "optimized_metric=precision_at_1")
    assert cfg.backbone.pooling is Pooling.last and f"{cfg.optimized_metric}" == "precision_at_1"
    plain = OmegaConf.to_container(cfg.backbone, resolve=True, enum_to_str=True)  # as checkpoints and W&B get it
    assert type(plain["pooling"]) is str and type(plain["dtype"]) is str


def test_configured_constructors_state_no_defaults():
    """Constructors take what the config gives: no parameter that a schema holds has a default."""
    for schema in SCHEMAS.values():
        target = getattr(schema, "_target_", None)
        if not isinstance(target, str) or not target.startswith("charfeat."):
            continue
        keys = set(OmegaConf.structured(schema)) - {"_target_", "_partial_"}
        for cls in get_class(target).__mro__:
            if "__init__" in vars(cls) and cls.__module__.startswith("charfeat."):
                params = inspect.signature(cls.__init__).parameters.values()
                defaulted = {p.name for p in params if p.default is not inspect.Parameter.empty}
                assert not defaulted & keys, f"{cls.__name__} restates defaults of {sorted(defaulted & keys)}"


def help_groups(command: str, monkeypatch, capsys) -> dict[str, list[str]]:
    """The "Configuration groups" part of ``python -m charfeat.<command> --help``, run in process."""
    monkeypatch.setattr(sys, "argv", [command, "--help"])
    GlobalHydra.instance().clear()
    try:
        with pytest.raises(SystemExit):
            importlib.import_module(f"charfeat.{command}").main()
    finally:
        GlobalHydra.instance().clear()
    text = capsys.readouterr().out
    section = text.split("(group=option)")[1].split("== Config ==")[0]
    return {group: options.split(", ") for group, options in
            (line.split(": ", 1) for line in section.strip().splitlines())}


@pytest.mark.parametrize("command", ["train", *(pytest.param(name, marks=pytest.mark.slow)
                                                 for name in ("evaluate", "embed", "search"))])
def test_help_lists_the_groups_a_user_chooses_and_the_launchers(command, monkeypatch, capsys):
    listed = help_groups(command, monkeypatch, capsys)
    defaults = OmegaConf.to_container(OmegaConf.load(Path(str(CONF)) / f"{command}.yaml").defaults)
    chosen = [next(iter(entry)) for entry in defaults if isinstance(entry, dict)]  # its `group: option` entries
    assert set(listed) == {group for group in chosen if group != "hydra"} | {"hydra/launcher"}
    for group, options in listed.items():
        if group != "hydra/launcher":
            assert options == sorted(p.stem for p in (Path(str(CONF)) / group).glob("*.yaml"))
    assert {"basic", "local", "slurm", "submitit_local", "submitit_slurm"} <= set(listed["hydra/launcher"])
