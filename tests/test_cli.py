"""What a user sees on the command line: a quiet run, one-line user errors, a fast and described --help."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from charfeat.cli import find_user_error, refuse_missing_keys
from charfeat.config import SCHEMAS
from charfeat.console import ConsoleFilter
from charfeat.data.sampler import SamplerConfigError
from charfeat.errors import ConfigError
from charfeat.help import key_descriptions, render_help
from trained_run import run_module

CHATTER = ["faiss", "Could not load library", "ModuleNotFoundError", "Loading weights", "Writing model shards",
           "setup plugin", "\x1b["]


def screen_lines(text: str) -> list[str]:
    """What a terminal keeps of ``text``: of each line overwritten with carriage returns, the last frame."""
    lines = [line.split("\r")[-1] for line in text.split("\n")]
    return [line for line in lines if line.strip()]


# --- user errors -------------------------------------------------------------------------------------------------


def test_user_error_is_found_inside_hydras_instantiate_exception():
    cause = SamplerConfigError("sampler.p=100 but only 8 class(es) ...")
    try:
        try:
            raise cause
        except SamplerConfigError as err:
            raise InstantiationException("Error in call to target 'charfeat.data.sampler.PKBatchSampler'") from err
    except InstantiationException as wrapped:
        assert find_user_error(wrapped) is cause
    assert find_user_error(ValueError("a bug")) is None


def test_unset_required_keys_are_named_together():
    cfg = OmegaConf.create({"data": {"root": "???", "bucket": "???"}, "k": 1})
    with pytest.raises(ConfigError, match=re.escape("data.bucket, data.root are required but not set: add "
                                                    "data.bucket=... data.root=... to the command line")):
        refuse_missing_keys(cfg)
    refuse_missing_keys(OmegaConf.create({"data": {"root": "/d"}}))


def test_console_shows_own_progress_and_everyones_warnings():
    console = ConsoleFilter()

    def shown(name: str, level: int, **extra) -> bool:
        record = logging.LogRecord(name, level, __file__, 1, "message", None, None)
        record.__dict__.update(extra)
        return console.filter(record)

    assert shown("charfeat.training.loop", logging.INFO) and shown("__main__", logging.INFO)
    assert not shown("faiss.loader", logging.INFO) and not shown("optuna.storages", logging.INFO)
    assert not shown("charfeat.cli", logging.DEBUG)
    assert shown("transformers.modeling_utils", logging.WARNING) and shown("py.warnings", logging.WARNING)
    assert not shown("charfeat.cli", logging.ERROR, console=False)  # for the log file only


@pytest.mark.slow
def test_user_errors_print_one_line_and_the_traceback_goes_to_the_log(cache_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        "sampler": (["sampler.p=100"], "error: sampler.p=100 but only 8 class(es) have at least 2 training images"),
        "root": (["data=local"], "error: data.root is required but not set: add data.root=... to the command line"),
        "jsonl": (["data=local", f"data.root={empty}"], f"error: {empty / 'train.jsonl'}: metadata file not found"),
    }
    for name, (args, message) in cases.items():
        result = run_module("charfeat.train", ["logger=none", *args, f"hydra.run.dir={name}"], tmp_path, cache_dir)
        assert result.returncode == 1, name
        assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(message)
        assert "Traceback" not in result.stdout + result.stderr
        log = (tmp_path / name / "train.log").read_text()
        assert message in log and "Traceback (most recent call last)" in log
    result = run_module("charfeat.train", ["logger=none", "sampler.p=100", "hydra.run.dir=full"], tmp_path, cache_dir,
                        env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1 and "Traceback (most recent call last)" in result.stderr
    assert "SamplerConfigError: sampler.p=100" in result.stderr


@pytest.mark.slow
def test_a_hub_model_out_of_reach_fails_in_one_line_without_retries(cache_dir, tmp_path):
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    result = run_module("charfeat.train", ["backbone=qwen3_vl_2b", "logger=none", "hydra.run.dir=run"], tmp_path,
                        cache_dir, env=env)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: backbone.name_or_path=Qwen/Qwen3-VL-2B-Instruct is not in the Hugging Face cache")
    assert "python -m charfeat.download backbone.name_or_path=Qwen/Qwen3-VL-2B-Instruct" in line
    assert "Retrying" not in result.stdout + result.stderr
    assert "classes:" not in result.stdout  # it failed before reading the data


# --- quiet output ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_first_default_run_fits_on_one_screen_and_chatter_goes_to_the_log(cache_dir, tmp_path):
    """As a first run: the tiny model is built (its shards saved) and its features computed."""
    env = {**os.environ, "CHARFEAT_CACHE_DIR": str(cache_dir), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    args = ["trainer.epochs=2", f"backbone.name_or_path={tmp_path / 'tiny'}", "hydra.run.dir=run"]
    result = subprocess.run([sys.executable, "-m", "charfeat.train", *args], cwd=tmp_path, env=env,
                            capture_output=True, timeout=600)  # bytes: text mode would turn \r into \n
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stderr[-3000:]
    terminal = stdout + stderr
    assert [word for word in CHATTER if word in terminal] == []
    screen = screen_lines(stdout) + screen_lines(stderr)
    assert len(screen) <= 24, "\n".join(screen)
    assert len([line for line in screen if re.search(r"\] epoch \d+: precision_at_1", line)]) == 2
    assert "MAP@R" in stdout  # the table
    assert "epoch 2: precision_at_1" in (tmp_path / "run" / "train.log").read_text()
    # a training run no longer imports faiss (the metrics are torch's); search does, and its loader
    # lines go to search.log only: tests/test_cli_evaluate_embed_search.py


@pytest.mark.slow
def test_an_optuna_search_prints_no_plugin_lines_or_colour_codes(cache_dir, tmp_path):
    result = run_module("charfeat.train", ["hparams_search=optuna", "hydra.sweeper.n_trials=1", "trainer.epochs=1",
                                           "logger=none", "trainer.plots=false", "hydra.sweep.dir=sweep"],
                        tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    terminal = result.stdout + result.stderr
    assert [word for word in CHATTER if word in terminal] == []
    assert "Best value" in terminal and "Launching 1 jobs locally" in terminal  # the sweeper's own lines stay


# --- --help ------------------------------------------------------------------------------------------------------

EDITED_MOST = ("data", "sampler", "backbone", "head", "loss", "trainer")


@pytest.mark.parametrize("group", EDITED_MOST)
def test_every_key_of_the_groups_users_edit_most_has_a_meaning(group):
    for (schema_group, name), schema in SCHEMAS.items():
        if schema_group == f"schema/{group}":
            keys = set(OmegaConf.structured(schema)) - {"_target_", "_partial_"}
            meanings = key_descriptions(schema)
            assert {key for key in keys if not meanings.get(key)} == set(), f"{schema.__name__} ({name})"


def test_help_lists_choices_and_each_keys_meaning_in_one_composition(monkeypatch, cache_dir):
    from hydra._internal.hydra import Hydra

    monkeypatch.setattr(Hydra, "format_config_groups", lambda *a, **k: pytest.fail("Hydra's per-group scan"))
    import charfeat.train  # noqa: F401  (its hydra_main registers the command's summary)

    text = render_help("train", ["data=local", "data.root=/d"])
    assert text.startswith("python -m charfeat.train [group=option ...] [key=value ...]\n"
                           "Train and evaluate a style-embedding model")
    assert "\nloss: arcface, infonce, multi_similarity, supcon, triplet\n" in text
    rows = {line.split("#")[0].strip(): line.split("#", 1)[1].strip() for line in text.splitlines() if "  # " in line}
    assert rows["data:"].startswith("data=local: Your own data on disk")
    assert rows["root: /d"].startswith("the JSONL paths")
    assert rows["p: 8"] == "classes per batch"
    assert rows["pooling: mean"].endswith("(mean | last | vision)")
    assert "_partial_" not in text


def test_help_answers_without_loading_torch():
    code = ("import sys, runpy; sys.argv = ['train', '--help'];\ntry: runpy.run_module('charfeat.train', "
            "run_name='__main__')\nexcept SystemExit: pass\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("False")


def test_help_with_a_bad_override_says_so_as_hydra_does(capsys):
    from charfeat.cli import print_help

    with pytest.raises(SystemExit) as exit_:
        print_help("train", ["backbone=nope"])
    assert exit_.value.code == 1
    assert "Could not find 'backbone/nope'" in capsys.readouterr().err


def test_tqdm_disable_turns_every_bar_off(monkeypatch):
    from charfeat.console import progress

    assert not progress(range(3), main=True).disable
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress(range(3), main=True).disable
