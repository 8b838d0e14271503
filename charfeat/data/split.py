"""A seeded, stratified train/val split for when no validation file is given.

Each class keeps the same share in both splits (a plain random split of a 73 %-majority set
can leave a small class out of validation). The result depends only on the records' ids (or
groups), the fraction and the seed, never on file order.

With ``data.group_field``, whole groups move: every record of a group (the augmented copies of one
picture, or one person's pictures) lands in the same split, and the classes' shares are met as
closely as whole groups allow.
"""

import random
from collections import Counter

from charfeat.data.records import Record


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")


def stratified_split(records: list[Record], val_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(train, val): about ``val_fraction`` of each class to val; a class keeps at least one train record."""
    _check_fraction(val_fraction)
    rng = random.Random(seed)
    val_ids: set[str] = set()
    for label in sorted({r.label for r in records}):
        ids = sorted(r.id for r in records if r.label == label)
        rng.shuffle(ids)
        val_ids.update(ids[:min(len(ids) - 1, round(len(ids) * val_fraction))])
    return [r for r in records if r.id not in val_ids], [r for r in records if r.id in val_ids]


def _keeps_train(group: Counter, totals: Counter, in_val: Counter) -> bool:
    """Every class of the group keeps a train record if the group goes to val."""
    return all(totals[c] - in_val[c] - n >= 1 for c, n in group.items())


def _gain(group: Counter, target: dict, in_val: Counter) -> int:
    """How much closer to its target the val count of the group's classes gets with the group."""
    return sum(abs(target[c] - in_val[c]) - abs(target[c] - in_val[c] - n) for c, n in group.items())


def grouped_split(records: list[Record], val_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(train, val) with every group in one split. Groups are visited in a seeded order; one goes to
    val when that brings the val count of its classes closer to ``val_fraction`` of each class.
    Then a class that should have val records but has none gets its smallest group. No class loses
    its last train record."""
    _check_fraction(val_fraction)
    members: dict[str, list[Record]] = {}
    for record in records:
        members.setdefault(record.group, []).append(record)
    order = sorted(members)
    random.Random(seed).shuffle(order)
    counts = {group: Counter(r.label for r in members[group]) for group in order}
    totals = Counter(r.label for r in records)
    target = {label: round(n * val_fraction) for label, n in totals.items()}
    in_val: Counter = Counter()
    chosen: set[str] = set()
    for group in order:
        if _keeps_train(counts[group], totals, in_val) and _gain(counts[group], target, in_val) > 0:
            chosen.add(group)
            in_val.update(counts[group])
    for label in sorted(c for c in target if target[c] >= 1 and in_val[c] == 0):
        candidates = [g for g in order if label in counts[g] and g not in chosen
                      and _keeps_train(counts[g], totals, in_val)]
        if candidates:
            smallest = min(candidates, key=lambda g: sum(counts[g].values()))
            chosen.add(smallest)
            in_val.update(counts[smallest])
    return [r for r in records if r.group not in chosen], [r for r in records if r.group in chosen]
