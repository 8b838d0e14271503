"""The sweep report (charfeat.sweeps, and the charfeat.report command) on hand-made sweep dirs:
every job listed (failed ones too), CSV/markdown/HTML, and matplotlib's SVG charts with one line
per value of the other swept key."""

import base64
import csv
import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from charfeat.sweeps.callback import ReportCallback
from charfeat.sweeps.chart_process import ChartProcess
from charfeat.sweeps.charts import MAX_LINES, chart_figure, chart_svg
from charfeat.sweeps.jobs import collect_jobs
from charfeat.sweeps.report import write_report

MAP = "mean_average_precision_at_r"
SVG = "{http://www.w3.org/2000/svg}"

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
        svg = ET.parse(sweep / f"report_mean_average_precision_at_r_vs_{key}.svg").getroot()
        assert svg.tag == f"{SVG}svg"
        tooltips = {t.text for t in svg.iter(f"{SVG}title")}  # one per point: the failed job has none
        assert tooltips == {f"job {name}: loss.margin={margin} head={head}: {MAP} {value}" for name, margin, head, value
                            in (("0", "0.1", "mlp", "0.4000"), ("1", "0.3", "mlp", "0.5500"),
                                ("10", "0.3", "linear", "0.5000"))}

    page = (sweep / "report.html").read_text()
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in page
    assert page.count("<svg") == 2 and page.count('<tr class="failed"') == 1
    assert "No plots." in page and "src=\"http" not in page and "<link" not in page  # self-contained


def points(ax) -> list[tuple[float, float]]:
    return sorted(tuple(float(v) for v in c.get_offsets()[0]) for c in ax.collections)


def lines(ax) -> dict[str, list[tuple[float, float]]]:
    return {line.get_label(): [(float(x), round(float(y), 6)) for x, y in zip(*line.get_data())]
            for line in ax.lines}


def test_numeric_values_are_placed_by_value_and_categories_evenly(sweep):
    jobs = collect_jobs(sweep)
    (numeric,) = chart_figure(jobs, "loss.margin", MAP)[0].axes
    assert points(numeric) == [(0.1, 0.40), (0.3, 0.50), (0.3, 0.55)] and numeric.get_xscale() == "linear"
    assert any(0.1 < tick < 0.3 for tick in numeric.get_xticks())  # ticks between the values
    (categorical,) = chart_figure(jobs, "head", MAP)[0].axes
    assert [t.get_text() for t in categorical.get_xticklabels()] == ["linear", "mlp"]
    assert points(categorical) == [(0.0, 0.50), (1.0, 0.40), (1.0, 0.55)]


def test_two_keys_draw_one_line_per_value_of_the_other_key_with_a_legend(sweep):
    jobs = collect_jobs(sweep)
    (ax,) = chart_figure(jobs, "loss.margin", MAP)[0].axes
    assert lines(ax) == {"linear": [(0.3, 0.50)], "mlp": [(0.1, 0.40), (0.3, 0.55)]}  # job 2 failed
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "head" and [t.get_text() for t in legend.get_texts()] == ["linear", "mlp"]
    (ax,) = chart_figure(jobs, "head", MAP)[0].axes
    assert lines(ax) == {"0.1": [(1.0, 0.40)], "0.3": [(0.0, 0.50), (1.0, 0.55)]}
    assert ax.get_legend().get_title().get_text() == "loss.margin"
    assert ax.get_title() == f"trained {MAP} vs head"

    svg = ET.fromstring(chart_svg(jobs, "head", MAP))
    (legend,) = [g for g in svg.iter(f"{SVG}g") if g.get("id") == "legend_1"]
    assert [t.text for t in legend.iter(f"{SVG}text")] == ["loss.margin", "0.1", "0.3"]


def test_one_swept_key_draws_one_line_through_the_means(tmp_path):
    for name, margin, value in (("0", "0.2", 0.4), ("1", "0.2", 0.6), ("2", "0.05", 0.3), ("3", "1", None)):
        make_job(tmp_path, name, [f"loss.margin={margin}"], value)
    (ax,) = chart_figure(collect_jobs(tmp_path), "loss.margin", MAP)[0].axes
    assert [line.get_label().startswith("_") for line in ax.lines] == [True]  # no legend entry
    assert ax.get_legend() is None and lines(ax).popitem()[1] == [(0.05, 0.3), (0.2, 0.5)]


@pytest.fixture
def three_key_sweep(tmp_path):
    """head: 2 values, loss.margin: 3, optim.lr: 4 (two decades apart and more: a log axis)."""
    n = 0
    for head_i, head in enumerate(("mlp", "linear")):
        for margin_i, margin in enumerate(("0.1", "0.2", "0.3")):
            for lr_i, lr in enumerate(("1e-5", "1e-4", "1e-3", "1e-2")):
                make_job(tmp_path, str(n), [f"head={head}", f"loss.margin={margin}", f"optim.lr={lr}"],
                         0.1 * head_i + 0.01 * margin_i + 0.001 * lr_i)
                n += 1
    return tmp_path


def test_three_keys_draw_lines_per_value_of_the_key_with_fewest_values_and_average_the_rest(three_key_sweep):
    jobs = collect_jobs(three_key_sweep)
    (ax,) = chart_figure(jobs, "optim.lr", MAP)[0].axes
    assert ax.get_legend().get_title().get_text() == "head" and ax.get_xscale() == "log"
    assert lines(ax) == {"linear": [(1e-5, 0.11), (1e-4, 0.111), (1e-3, 0.112), (1e-2, 0.113)],
                         "mlp": [(1e-5, 0.01), (1e-4, 0.011), (1e-3, 0.012), (1e-2, 0.013)]}  # means over margins
    assert ax.get_title().endswith("each line: mean over loss.margin") and len(points(ax)) == 24
    (ax,) = chart_figure(jobs, "head", MAP)[0].axes
    assert ax.get_legend().get_title().get_text() == "loss.margin" and list(lines(ax)) == ["0.1", "0.2", "0.3"]
    assert ax.get_title().endswith("each line: mean over optim.lr")


def test_a_key_with_too_many_values_is_averaged_over_not_split(tmp_path):
    for n in range(MAX_LINES + 1):  # as an Optuna study samples them: every value new
        make_job(tmp_path, str(n), [f"optim.lr={0.001 * (n + 1)}", f"loss.margin={0.1 + 0.01 * n}"], 0.5)
    (ax,) = chart_figure(collect_jobs(tmp_path), "loss.margin", MAP)[0].axes
    assert len(ax.lines) == 1 and ax.get_legend() is None
    assert ax.get_title().endswith("line: mean over optim.lr")


def test_rewriting_a_report_gives_the_same_svg_files(sweep):
    write_report(sweep)
    first = {p.name: p.read_bytes() for p in sweep.glob("*.svg")}
    write_report(sweep)
    assert {p.name: p.read_bytes() for p in sweep.glob("*.svg")} == first and len(first) == 2
    assert all(b"<dc:date>" not in svg for svg in first.values())


def test_report_files_land_in_the_sweep_dir_as_the_readme_names_them(sweep):
    before = {p.name for p in sweep.iterdir()}
    write_report(sweep, metric="r_precision")
    assert {p.name for p in sweep.iterdir()} - before == {
        "report.csv", "report.md", "report.html",
        "report_r_precision_vs_loss.margin.svg", "report_r_precision_vs_head.svg"}
    page = (sweep / "report.html").read_text()
    for svg in sweep.glob("*.svg"):  # inline, without the XML prolog
        document = svg.read_text()
        assert document.startswith("<?xml") and document[document.index("<svg"):] in page
    assert "<?xml" not in page


def test_the_command_imports_neither_torch_nor_matplotlib_until_it_draws():
    code = ("import sys, charfeat.report, charfeat.sweeps.callback; "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


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


def test_charts_from_the_helper_process_are_the_ones_this_process_draws(sweep):
    """The callback's helper (chart_process.py) draws each chart as chart_svg would, byte for byte."""
    write_report(sweep)
    own = {p.name: p.read_bytes() for p in sweep.glob("*.svg")}
    for svg in sweep.glob("*.svg"):
        svg.unlink()
    helper = ChartProcess.start()
    jobs = collect_jobs(sweep)
    assert helper.draw(jobs, ["head"], MAP) == [chart_svg(jobs, "head", MAP)]
    assert helper.process.returncode == 0  # one request, then it exits
    helper = ChartProcess.start()
    write_report(sweep, chart_process=helper)
    assert {p.name: p.read_bytes() for p in sweep.glob("*.svg")} == own and len(own) == 2
    assert helper.process.returncode == 0


def test_a_dead_or_garbling_helper_process_leaves_the_charts_to_the_report(sweep):
    write_report(sweep)
    own = {p.name: p.read_bytes() for p in sweep.glob("*.svg")}
    helper = ChartProcess.start()
    helper.process.kill()
    helper.process.wait()
    write_report(sweep, chart_process=helper)
    assert {p.name: p.read_bytes() for p in sweep.glob("*.svg")} == own and helper.process.stdout.closed
    garbling = ChartProcess(subprocess.Popen([sys.executable, "-c", "print('not a pickle')"], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE))
    assert garbling.draw(collect_jobs(sweep), ["head"], MAP) is None
    write_report(sweep, chart_process=garbling)
    assert {p.name: p.read_bytes() for p in sweep.glob("*.svg")} == own


def test_the_callback_starts_the_helper_for_train_sweeps_and_ends_it_with_the_multirun(sweep, capsys):
    import pickle

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "optimized_metric": "r_precision"})
    callback = ReportCallback()
    callback.on_multirun_start(config=config)
    helper = callback.chart_process
    assert helper is not None and helper.process.poll() is None
    assert "chart_process" not in pickle.loads(pickle.dumps(callback)).__dict__  # submitit pickles callbacks
    callback.on_multirun_end(config=config)
    assert helper.process.returncode == 0 and callback.chart_process is None
    assert "Sweep results" in capsys.readouterr().out and (sweep / "report_r_precision_vs_head.svg").is_file()

    embed = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})  # no optimized_metric: no helper
    callback.on_multirun_start(config=embed)
    assert callback.chart_process is None


def test_a_helper_the_multirun_never_asks_exits_on_its_own():
    """A multirun that failed before its end closes the helper's input (by exiting): it leaves quietly."""
    helper = ChartProcess.start()
    helper.process.stdin.close()
    assert helper.process.wait(timeout=60) == 0 and helper.process.stdout.read() == b""
    helper.close()


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


def test_a_sweep_whose_jobs_all_failed_gets_its_files_and_empty_charts(tmp_path):
    for name, margin in (("0", "0.1"), ("1", "0.2")):
        make_job(tmp_path, name, [f"loss.margin={margin}"], None)
    write_report(tmp_path)
    svg = (tmp_path / "report_mean_average_precision_at_r_vs_loss.margin.svg").read_text()
    assert f"no job has {MAP}" in svg and "<title>" not in svg
    assert (tmp_path / "report.html").read_text().count('<tr class="failed"') == 2


def job_with_queries(sweep: Path, name: str, margin: str, hits: "np.ndarray", ids: list[str]):
    """A job whose trained precision@1 is the mean of ``hits`` over ``ids``, with its interval and
    per_query.npz as a training run writes them."""
    from charfeat.evaluation.bootstrap import intervals
    from charfeat.evaluation.per_query import write_per_query

    job = make_job(sweep, name, [f"loss.margin={margin}"], None)
    low, high = intervals({"p": hits}, 1000, 0)["p"]
    (job / "metrics.json").write_text(json.dumps({"trained": {"precision_at_1": float(hits.mean())},
                                                  "trained_ci95": {"precision_at_1": [low, high]}}))
    write_per_query(job / "per_query.npz", ids, {"trained": {"precision_at_1": hits}})
    return job


def test_jobs_not_distinguishable_from_the_best_are_marked_by_a_paired_bootstrap(tmp_path):
    """300 queries. Job 1 is best; job 0 differs from it on 2 queries (a tie); job 2 is right on 20
    fewer queries: its interval overlaps the best's, but on the same queries it is worse; job 3 was
    scored on other queries and cannot be paired."""
    import numpy as np

    rng = np.random.default_rng(0)
    best = (rng.random(300) < 0.6).astype(float)
    ids = [f"q{i}" for i in range(300)]
    near, worse = best.copy(), best.copy()
    near[np.flatnonzero(best == 1)[:2]] = 0
    worse[np.flatnonzero(best == 1)[:20]] = 0
    job_with_queries(tmp_path, "0", "0.1", near, ids)
    job_with_queries(tmp_path, "1", "0.2", best, ids)
    job_with_queries(tmp_path, "2", "0.3", worse, ids)
    job_with_queries(tmp_path, "3", "0.4", best[::-1].copy(), ids[::-1])
    jobs = collect_jobs(tmp_path)
    assert jobs[2].interval("precision_at_1")[1] > jobs[1].interval("precision_at_1")[0]  # overlapping

    text = write_report(tmp_path, metric="precision_at_1")
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert "not distinguishable" in lines["0"] and "best" in lines["1"] and "worse" in lines["2"]
    assert "other queries" in lines["3"]
    assert f"{best.mean():.4f} ±" in lines["1"]  # the value with half its interval
    assert text.splitlines()[0].split()[:4] == ["job", "status", "vs", "best"]
    page = (tmp_path / "report.html").read_text()
    assert page.count('<tr class="tied"') == 1 and "paired bootstrap" in page
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert float(rows[1]["trained/precision_at_1_ci95_low"]) < best.mean() < float(rows[1]["trained/precision_at_1_ci95_high"])
