"""Which jobs of a sweep cannot be told apart from the best one: a paired bootstrap on the same queries.

Two jobs scored on the same validation queries (each job's per_query.npz: same ids, same order)
are compared query by query: the mean difference of the metric (job - best) is resampled over the
queries, and a job whose 95 % interval of that difference contains 0 is "not distinguishable" from
the best. This is stricter and more exact than asking whether two intervals overlap: the query-level
noise both jobs share cancels out.
"""

from __future__ import annotations

import numpy as np

from charfeat.evaluation.bootstrap import paired_difference_interval
from charfeat.evaluation.per_query import PER_QUERY, read_per_query
from charfeat.sweeps.jobs import Job, best_job

BEST, TIED, WORSE = "best", "not distinguishable", "worse"


def _trained_values(job: Job, metric: str) -> tuple[np.ndarray, np.ndarray] | str:
    """(query ids, the trained model's per-query values of ``metric``), or why there are none."""
    path = job.dir / PER_QUERY
    if not path.is_file():
        return f"no {PER_QUERY}"
    try:
        ids, values = read_per_query(path)
    except (OSError, ValueError, KeyError) as exc:
        return f"unreadable {PER_QUERY}: {exc}"
    if metric not in values.get("trained", {}):
        return f"{PER_QUERY} has no trained {metric}"
    return ids, values["trained"][metric]


def compare_to_best(jobs: list[Job], metric: str, resamples: int = 1000, seed: int = 0) -> dict[str, str]:
    """{job name: "best" | "not distinguishable" | "worse" | why it could not be compared}, for
    every job with ``metric``; empty when the best job has no per-query results to pair with."""
    best = best_job(jobs, metric)
    if best is None or isinstance(reference := _trained_values(best, metric), str):
        return {}
    ids, best_values = reference
    out = {}
    for job in (job for job in jobs if job.value(metric) is not None):
        if job is best:
            out[job.name] = BEST
            continue
        mine = _trained_values(job, metric)
        if isinstance(mine, str):
            out[job.name] = mine
        elif not np.array_equal(mine[0], ids):
            out[job.name] = "other queries than the best job's"
        else:
            high = paired_difference_interval(mine[1], best_values, resamples, seed)[1]
            out[job.name] = TIED if high >= 0 else WORSE
    return out
