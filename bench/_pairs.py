"""Interleaved side-by-side measurements, shared by the ``bench/`` scripts.

A benchmark that runs side A to the end and then side B measures the machine's drift as much as
the code: on a shared 2-CPU machine two such runs of the same script read 0.67 and 1.12. Here the
two sides alternate, pair by pair, and the figure is the **median of the per-pair ratios** A/B,
with its spread (min, quartiles, max); the order inside a pair alternates (A B, B A, A B, ...) so
that a steady drift favours neither side. The machine's load average (``os.getloadavg``) is read
before and after, and every figure is printed beside its target.

Each script also prints one ``BENCH {json}`` line per figure (name, value, target, spread,
load) for bench/README.md's table.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from typing import Callable, Sequence


def load() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (runnable processes; 2.0 fills this 2-CPU machine)."""
    return os.getloadavg()


@dataclasses.dataclass(frozen=True)
class Target:
    """A figure's target: ``value <= bound`` (``op="<="``) or ``value >= bound`` (``op=">="``).

    ``bound`` is ``None`` for a figure shown for information only.
    """

    op: str
    bound: float | None
    unit: str = ""

    def met(self, value: float) -> bool | None:
        """True/False against the bound; None when there is no bound."""
        if self.bound is None:
            return None
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def __str__(self) -> str:
        return "none (information)" if self.bound is None else f"{self.op} {self.bound:g}{self.unit}"


@dataclasses.dataclass
class Pairs:
    """The per-pair measurements of two sides (seconds or any other measure, one a pair)."""

    a: list[float] = dataclasses.field(default_factory=list)
    b: list[float] = dataclasses.field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def ratios(self) -> list[float]:
        """``a[i] / b[i]`` for every pair."""
        return [x / y for x, y in zip(self.a, self.b)]


def spread(values: Sequence[float]) -> dict[str, float]:
    """``median``, ``min``, ``q1``, ``q3``, ``max`` of ``values`` (quartiles by
    :func:`statistics.quantiles`, inclusive method; equal to the median for fewer than 2 values).

    Raises:
        ValueError: no values.
    """
    if not values:
        raise ValueError("no measurements")
    v = sorted(values)
    q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else (v[0], v[0], v[0])
    return {"median": statistics.median(v), "min": v[0], "q1": q1, "q3": q3, "max": v[-1]}


def interleave(side_a: Callable[[int], float], side_b: Callable[[int], float], pairs: int,
               warmup: int = 0, log: Callable[[str], None] | None = print) -> Pairs:
    """Run ``side_a`` and ``side_b`` alternately, ``pairs`` times each, after ``warmup`` unmeasured
    pairs; the order flips every pair (A B, B A, ...).

    Args:
        side_a, side_b: called with the pair's index (0-based, negative for warm-up); each
            returns its own measure (seconds of the part it times, or a rate).
        pairs: measured pairs (>= 1).
        warmup: pairs run first and thrown away (imports, caches, allocators).
        log: where a line per pair goes (None: silent).

    Returns:
        The :class:`Pairs`, with the load average read before the first and after the last.
    """
    for i in range(-warmup, 0):
        side_a(i), side_b(i)
    out = Pairs(load_before=load())
    for i in range(pairs):
        if i % 2 == 0:
            a = side_a(i)
            b = side_b(i)
        else:
            b = side_b(i)
            a = side_a(i)
        out.a.append(a)
        out.b.append(b)
        if log:
            log(f"  pair {i + 1}/{pairs}: A {a:.4g}  B {b:.4g}  A/B {a / b:.3f}  (load {load()[0]:.2f})")
    out.load_after = load()
    return out


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of ``fn()`` (``time.perf_counter``)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def report(name: str, values: Sequence[float], target: Target, *, what: str = "",
           load_before: tuple[float, float, float] | None = None,
           load_after: tuple[float, float, float] | None = None, **extra: object) -> dict:
    """Print a figure (median and spread of ``values``) beside its target, and its ``BENCH`` line.

    Args:
        name: the figure's name, e.g. ``"sweep / bare, s per epoch"``.
        values: the per-pair ratios (or repeated measurements) the figure summarises.
        target: its :class:`Target`.
        what: one line saying what was measured.
        load_before, load_after: load averages around the measurement (default: now).
        extra: more facts to keep in the ``BENCH`` line (sizes, seconds of each side ...).

    Returns:
        The dict printed on the ``BENCH`` line.
    """
    s = spread(values)
    now = load()
    before, after = load_before or now, load_after or now
    verdict = {True: "MET", False: "MISSED", None: "-"}[target.met(s["median"])]
    print(f"\n{name}: median {s['median']:.3f} over {len(values)} (min {s['min']:.3f}, quartiles "
          f"{s['q1']:.3f}-{s['q3']:.3f}, max {s['max']:.3f})   target {target}   {verdict}")
    if what:
        print(f"  {what}")
    print(f"  load average (1/5/15 min) before {before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f}, "
          f"after {after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f}; {os.cpu_count()} CPUs")
    record = {"figure": name, **{k: round(v, 4) for k, v in s.items()}, "n": len(values),
              "target": str(target), "verdict": verdict, "load_before": round(before[0], 2),
              "load_after": round(after[0], 2), **extra}
    print("BENCH " + json.dumps(record, default=str), flush=True)
    return record
