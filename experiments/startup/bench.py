"""How long a user waits for `--help`, and for the error of a hub model that cannot be reached.

    python experiments/startup/bench.py [--repeats 5] [--base 84dcb06]

Runs each command ``--repeats`` times, interleaved (so machine load drifts over all of them alike),
and prints the median wall time of each and the ratios to ``python -c pass`` and to Hydra's own help
of the same config. ``--base REV`` also times that git revision's ``charfeat`` (unpacked as the
wheel lays it out and put first on PYTHONPATH) in the same loop, for a before/after ratio. Every
command runs with an empty Hugging Face cache; the "hub" is a local port that refuses connections,
or one that accepts them and never answers.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


BASE_COMMANDS = ("train --help", "qwen3_vl_2b, hub refuses")  # the others are new, or take minutes there


def commands(refused: str, silent: str, empty_dir: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name -> (arguments after `python`, extra environment)."""
    offline_run = ["-m", "charfeat.train", "backbone=qwen3_vl_2b", "logger=none"]
    return {
        "python -c pass": (["-c", "pass"], {}),
        "import torch": (["-c", "import torch"], {}),
        "train --help": (["-m", "charfeat.train", "--help"], {}),
        "train --help (Hydra's own)": (["-m", "charfeat.train", "--help", "--config-dir", empty_dir], {}),
        "evaluate --help": (["-m", "charfeat.evaluate", "--help"], {}),
        "embed --help": (["-m", "charfeat.embed", "--help"], {}),
        "search --help": (["-m", "charfeat.search", "--help"], {}),
        "download --help": (["-m", "charfeat.download", "--help"], {}),
        "qwen3_vl_2b, hub refuses": (offline_run, {"HF_ENDPOINT": refused}),
        "qwen3_vl_2b, hub silent": (offline_run, {"HF_ENDPOINT": silent}),
        "qwen3_vl_2b, HF_HUB_OFFLINE=1": (offline_run, {"HF_HUB_OFFLINE": "1"}),
    }


def run(args: list[str], env: dict[str, str], cwd: Path, pythonpath: str | None) -> tuple[float, int]:
    full_env = {**os.environ, "WANDB_MODE": "offline", "HF_HOME": str(cwd / "hf-home"), **env}
    if "HF_HUB_OFFLINE" not in env:
        full_env.pop("HF_HUB_OFFLINE", None)
    if pythonpath:
        full_env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, timeout=600)
    return time.perf_counter() - start, result.returncode


def unpack(revision: str, into: Path) -> str:
    """``revision``'s charfeat package with its conf/ inside (the wheel's layout) under ``into``; the dir."""
    repo = Path(__file__).resolve().parents[2]
    archive = subprocess.run(["git", "archive", revision, "charfeat", "conf"], cwd=repo, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "conf").rename(into / "charfeat" / "conf")
    return str(into)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base", help="a git revision to time alongside, e.g. 84dcb06")
    args = parser.parse_args()
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts into the backlog, never answers
    endpoints = (f"http://127.0.0.1:{refused.getsockname()[1]}", f"http://127.0.0.1:{silent.getsockname()[1]}")
    times: dict[tuple[str, str], list[float]] = {}
    codes: dict[tuple[str, str], int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "empty").mkdir()
        (Path(tmp) / "base").mkdir()
        variants = {"this": None, **({"base": unpack(args.base, Path(tmp) / "base")} if args.base else {})}
        for _ in range(args.repeats):
            for name, (argv, env) in commands(*endpoints, str(Path(tmp) / "empty")).items():
                for variant, pythonpath in variants.items():
                    if variant == "base" and name not in BASE_COMMANDS:
                        continue
                    seconds, code = run(argv, env, Path(tmp), pythonpath)
                    times.setdefault((name, variant), []).append(seconds)
                    codes[(name, variant)] = code
    median = {key: statistics.median(values) for key, values in times.items()}
    floor, hydra_help = median[("python -c pass", "this")], median[("train --help (Hydra's own)", "this")]
    print(f"{'command':<32} {'checkout':<8} {'median s':>8} {'min s':>6} {'max s':>6} {'exit':>4}  "
          f"{'/ pass':>7} {'/ Hydra help':>12}")
    for (name, variant), value in median.items():
        values = times[(name, variant)]
        print(f"{name:<32} {variant:<8} {value:8.2f} {min(values):6.2f} {max(values):6.2f} "
              f"{codes[(name, variant)]:>4}  {value / floor:7.1f} {value / hydra_help:12.2f}")
    if args.base:
        for name in BASE_COMMANDS:
            print(f"{name}: this / base = {median[(name, 'this')] / median[(name, 'base')]:.2f}")


if __name__ == "__main__":
    main()
