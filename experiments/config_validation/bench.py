"""How long a bad config value takes to be reported, against the cost of starting charfeat at all.

    python experiments/config_validation/bench.py [--repeats 3]

Each case runs `python -m charfeat.train <bad value> logger=none` as a user does and times it to its
exit; the baseline is `python -c "import charfeat.train"` (interpreter, torch, transformers-free
imports). Prints the median seconds of each and the extra time validation costs over the baseline.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

CASES = ["trainer.grad_clip=-1", "trainer.precision=fp16", "trainer.monitor=loss", "head.dropout=1.5",
         "backbone.layer=99", "trainer.device=cuda"]


def timed(args: list[str], cwd: str) -> tuple[float, str]:
    """Seconds to exit, and the first stderr line naming the key the last argument but one sets."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    key = args[-3].split("=")[0] if len(args) > 3 else "-"
    lines = [line.strip() for line in result.stderr.splitlines() if key in line and "overrides" not in line]
    return elapsed, (lines or [""])[0][:120]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory() as cwd:
        timed(["-m", "charfeat.train", "trainer.epochs=1", "logger=none", "trainer.plots=false"], cwd)  # tiny model built
        baseline = statistics.median(timed(["-c", "import charfeat.train"], cwd)[0] for _ in range(repeats))
        print(f"{'import charfeat.train':<28}{baseline:6.2f} s")
        for case in CASES:
            runs = [timed(["-m", "charfeat.train", case, "logger=none", "hydra.run.dir=out"], cwd) for _ in range(repeats)]
            seconds = statistics.median(t for t, _ in runs)
            print(f"{case:<28}{seconds:6.2f} s  (+{seconds - baseline:.2f} s over the import)  {runs[0][1]}")


if __name__ == "__main__":
    main()
