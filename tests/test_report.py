"""The sweep report (charfeat.sweeps, and the charfeat.report command) on hand-made sweep dirs:
every job listed (failed ones too), CSV/markdown/HTML/SVG."""

import base64
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from charfeat.sweeps.callback import ReportCallback
from charfeat.sweeps.charts import chart_svg
from charfeat.sweeps.jobs import collect_jobs
from charfeat.sweeps.report import write_report

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def make_job(sweep: Path, name: str, overrides: list[str], map_at_r: float | None, plots: dict | None = None):
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if map_at_r is not None:
        scores = {"precision_at_1": map_at_r + 0.1, "mean_average_precision_at_r": map_at_r, "r_precision": map_at_r}
        metrics = {"trained": {**scores, "per_class_precision_at_1": {"a": 1.0}},  # non-scalars are skipped
                   "untrained": {k: v / 2 for k, v in scores.items()},
                   "chance": {k: 0.125 for k in scores}}
        (job / "metrics.json").write_text(json.dumps(metrics))
    for file_name, data in (plots or {}).items():
        (job / "plots").mkdir(exist_ok=True)
        (job / "plots" / file_name).write_bytes(data)
    return job


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "2026-01-01_00-00-00"
    make_job(sweep, "0", ["loss.margin=0.1", "head=mlp", "trainer.epochs=1"], 0.40, {"tsne.png": PNG})
    make_job(sweep, "1", ["loss.margin=0.3", "head=mlp", "trainer.epochs=1"], 0.55)
    make_job(sweep, "2", ["loss.margin=0.1", "head=linear", "trainer.epochs=1"], None)  # crashed
    make_job(sweep, "10", ["loss.margin=0.3", "head=linear", "trainer.epochs=1"], 0.50)
    (sweep / ".submitit" / "123_0" / ".hydra").mkdir(parents=True)  # submitit's logs are no job
    (sweep / ".submitit" / "123_0" / ".hydra" / "overrides.yaml").write_text("- x=1\n")
    return sweep


def test_jobs_come_in_job_order_and_failed_ones_stay(sweep):
    jobs = collect_jobs(sweep)
    assert [job.name for job in jobs] == ["0", "1", "2", "10"]
    assert [job.status for job in jobs] == ["ok", "ok", "failed", "ok"]
    assert jobs[2].error == "no metrics.json" and jobs[2].overrides["head"] == "linear"
    assert jobs[1].value("mean_average_precision_at_r") == 0.55
    assert [p.name for p in jobs[0].plots] == ["tsne.png"] and jobs[1].plots == []


def test_report_writes_table_csv_markdown_plots_and_html(sweep):
    text = write_report(sweep)
    lines = text.splitlines()
    assert lines[0] == "every job: trainer.epochs=1"  # constant overrides once, not as columns
    assert lines[1].split() == ["job", "status", "loss.margin", "head", "precision_at_1",
                                "mean_average_precision_at_r", "r_precision"]
    assert lines[3].split()[:4] == ["0", "ok", "0.1", "mlp"]
    assert lines[4].split()[:6] == ["1", "ok", "(best)", "0.3", "mlp", "0.6500"]
    assert lines[5].split() == ["2", "failed", "0.1", "linear"]

    rows = list(csv.DictReader(io.StringIO((sweep / "report.csv").read_text())))
    assert [row["job"] for row in rows] == ["0", "1", "2", "10"]
    assert rows[2]["status"] == "failed" and rows[2]["trained/precision_at_1"] == ""
    assert rows[3]["trainer.epochs"] == "1" and float(rows[3]["untrained/mean_average_precision_at_r"]) == 0.25
    assert float(rows[0]["chance/r_precision"]) == 0.125

    markdown = (sweep / "report.md").read_text().splitlines()
    assert markdown[0].startswith("| job | status | loss.margin | head |") and markdown[1].startswith("|---|")
    assert len(markdown) == 2 + 4

    for key in ("loss.margin", "head"):
        svg = (sweep / f"report_mean_average_precision_at_r_vs_{key}.svg").read_text()
        assert svg.startswith("<svg") and svg.count("<circle") == 3  # the failed job has no point

    page = (sweep / "report.html").read_text()
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in page
    assert page.count("<svg") == 2 and page.count('<tr class="failed"') == 1
    assert "No plots." in page and "src=\"http" not in page and "<link" not in page  # self-contained


def test_numeric_values_are_placed_by_value_and_categories_evenly(sweep):
    jobs = collect_jobs(sweep)
    numeric = chart_svg(jobs, "loss.margin", "mean_average_precision_at_r")
    assert ">0.1<" in numeric and ">0.3<" in numeric and ">0.2<" in numeric  # ticks between the values
    categorical = chart_svg(jobs, "head", "mean_average_precision_at_r")
    assert ">linear<" in categorical and ">mlp<" in categorical


def test_metric_choice_and_bad_metric(sweep):
    write_report(sweep, metric="precision_at_1")
    assert (sweep / "report_precision_at_1_vs_head.svg").is_file()
    with pytest.raises(ValueError, match="metric must be one of"):
        write_report(sweep, metric="accuracy")


def test_single_job_sweep_shows_its_overrides_and_draws_no_plot(tmp_path):
    make_job(tmp_path, "0", ["loss.margin=0.2"], 0.5)
    text = write_report(tmp_path)
    assert "loss.margin" in text.splitlines()[0] and "0.2" in text
    assert not list(tmp_path.glob("*.svg"))


def test_cli_prints_the_table_and_rejects_a_dir_without_jobs(sweep, tmp_path):
    result = subprocess.run([sys.executable, "-m", "charfeat.report", str(sweep)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "failed" in result.stdout and "report.html" in result.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "charfeat.report", str(empty)], capture_output=True, text=True)
    assert result.returncode == 2 and "no job dirs" in result.stderr


def test_callback_reports_at_multirun_end(sweep, capsys):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "optimized_metric": "r_precision"})
    ReportCallback().on_multirun_end(config=config)
    out = capsys.readouterr().out
    assert "Sweep results" in out and "(best)" in out
    assert (sweep / "report_r_precision_vs_head.svg").is_file()


def test_callback_never_fails_the_sweep(sweep, capsys):
    (sweep / "0" / "metrics.json").write_text("[1, 2]")
    (sweep / "1" / ".hydra" / "overrides.yaml").write_text("{not: a list}")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    ReportCallback().on_multirun_end(config=config)
    assert "no report" in capsys.readouterr().err


def test_callback_skips_sweeps_of_other_entrypoints(tmp_path, capsys):
    make_job(tmp_path, "0", ["split=val"], None)  # e.g. an embed multirun: no metrics.json anywhere
    ReportCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert capsys.readouterr() == ("", "") and not (tmp_path / "report.csv").exists()
