"""The training history of a weights file: every run that led to it, oldest first, and the totals per stage.

Each trainer writes one record per run into the weights' ``psic.training`` metadata and, when it started from
other weights, nests their record under ``continues``, so exported weights carry their whole chain and training
can accumulate across machines (checkpoints do not outlive one). A run's record holds ``steps`` (an int for the
rate-distortion trainer, a list per PSIC stage), ``seconds`` (the same shape; wall clock), ``compute`` (device,
precision, threads) and ``cumulative``: the totals of the chain up to and including it, per stage ``steps``
(None where some run did not record them), ``seconds`` of the timed runs and ``untimed``, the number of runs
that kept no time (so ``seconds`` is then a lower bound).

Records written before ``cumulative`` existed are read too: their stage budgets (``train.minutes``) stand in for
the seconds they do not record, and a chain that names its init weights only by name or SHA-256 is followed through
the registry when those weights are installed.
"""

from __future__ import annotations

from typing import Callable

#: what the totals are counted in: rate-distortion training, the PSIC trainer's stages 1 and 2, and (for VLP
#: weights) contrastive VLP training
STAGES = ("rd", "stage1", "stage2", "vlp")
#: trainers whose runs are one stage with an int ``steps``
SINGLE_STAGE = {"psic_core.train.rd": "rd", "psic_core.vlp.train": "vlp"}


def run_totals(record: dict) -> dict[str, dict]:
    """Steps and seconds of this run alone, per stage (``seconds`` None when the record does not say)."""
    trainer = str(record.get("trainer") or record.get("script") or "")
    if trainer in SINGLE_STAGE:
        seconds = record.get("seconds")
        if seconds is None and record.get("minutes") is not None:  # older VLP records: the budget was spent
            seconds = 60.0 * float(record["minutes"])
        return {SINGLE_STAGE[trainer]: _entry(int(record.get("steps") or 0), seconds)}
    train = record.get("train") or {}
    stages = [int(s) for s in train.get("stages") or []]
    steps = record.get("steps") or [None] * len(stages)  # the earliest PSIC records did not keep their steps
    seconds = record.get("seconds")
    if seconds is None:  # older records: each stage ran until its budget (its max_steps were never reached)
        budgets = train.get("minutes") or []
        seconds = [60.0 * float(m) for m in budgets] if len(budgets) == len(stages) else [None] * len(stages)
    totals: dict[str, dict] = {}
    for stage, count, time in zip(stages, steps, seconds):
        totals = add_totals(totals, {f"stage{stage}": _entry(count, time)})
    return totals


def _entry(steps: int | None, seconds: float | None) -> dict:
    """One stage's totals: ``seconds`` sums the timed runs, ``untimed`` counts the runs that kept no time."""
    return {"steps": steps, "seconds": float(seconds or 0.0), "untimed": int(seconds is None)}


def add_totals(total: dict[str, dict], run: dict[str, dict]) -> dict[str, dict]:
    result = {stage: dict(values) for stage, values in total.items()}
    for stage, values in run.items():
        entry = result.setdefault(stage, _entry(0, 0.0))
        entry["steps"] = None if values["steps"] is None or entry["steps"] is None else entry["steps"] + values["steps"]
        entry["seconds"] = round(entry["seconds"] + values["seconds"], 1)
        entry["untimed"] = entry.get("untimed", 0) + values.get("untimed", 0)
    return {stage: result[stage] for stage in STAGES if stage in result}


def chain(record: dict, lookup: Callable[[dict], dict | None] | None = None) -> list[dict]:
    """The runs that made these weights, oldest first. ``lookup(record)`` returns the training record of the init
    weights a record names without nesting it (legacy records), or None."""
    runs, seen = [], 0
    while record and seen < 100:  # a hostile file could nest deeply; 100 runs is far beyond any real history
        runs.append(record)
        seen += 1
        previous = record.get("continues")
        if not isinstance(previous, dict):
            previous = lookup(record) if lookup and record.get("init") else None
        record = previous if isinstance(previous, dict) else None
    return runs[::-1]


def cumulative(record: dict, lookup: Callable[[dict], dict | None] | None = None) -> dict[str, dict]:
    """Steps and seconds per stage over the whole chain, recomputed from its runs (a stored ``cumulative`` is only
    trusted for the oldest run when the weights it continued are not at hand)."""
    total: dict[str, dict] = {}
    for index, run in enumerate(chain(record, lookup)):
        stored = run.get("cumulative")
        if index == 0 and isinstance(stored, dict) and run.get("init"):
            total = add_totals({}, {stage: _entry(v.get("steps"), v.get("seconds")) | {"untimed": v.get(
                "untimed", int(v.get("seconds") is None))} for stage, v in stored.items() if isinstance(v, dict)})
        else:
            total = add_totals(total, run_totals(run))
    return total


def extend(previous: dict | None, run: dict, lookup: Callable[[dict], dict | None] | None = None) -> dict:
    """The record of a new ``run`` that continued weights whose record is ``previous`` (None for a fresh start)."""
    base = cumulative(previous, lookup) if previous else {}
    record = dict(run)
    if previous:
        record["continues"] = previous
    record["cumulative"] = add_totals(base, run_totals(run))
    return record
