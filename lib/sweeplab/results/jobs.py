"""Follow-up jobs written from a sweep: the best configuration once (``sweeplab best``), and the
top configurations on fresh seeds (``sweeplab best --top N --repeats K``). Both are YAML-ready
dicts that validate as job files."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from sweeplab.results.sweep import SweepError

if TYPE_CHECKING:
    from sweeplab.results.sweep import Sweep


def best_job(sweep: Sweep, metric: str | None = None, mode: str | None = None) -> dict[str, Any]:
    """A complete job (YAML-ready dict) that re-runs the best config once, no search.

    Raises:
        SweepError: when no trial has a finite value of the metric.
    """
    job = sweep.spec.model_dump(mode="json", exclude_defaults=False)
    job["name"] = f"{sweep.spec.name}-best"
    job["train"] = sweep.best_config(metric, mode)
    job["search"] = {"sampler": "grid", "seed": sweep.spec.search.seed}
    job["scheduler"] = {"type": "none"}
    job["repeats"] = 1
    return job


def _next_seed(sweep: Sweep) -> int:
    """One above the largest seed any trial of the sweep ran with (the job's seed + 1 when no
    trial reported one)."""
    seeds = pd.to_numeric(sweep.dataframe().get("seed", pd.Series(dtype=float)), errors="coerce")
    base_seed = int(sweep.spec.train.get("seed", 0) or 0)
    return int(seeds.max()) + 1 if seeds.notna().any() else base_seed + 1


def confirm_job(sweep: Sweep, top: int = 3, repeats: int = 3, metric: str | None = None,
                mode: str | None = None) -> dict[str, Any]:
    """A job (YAML-ready dict) that reruns the ``top`` best trials' configurations with
    ``repeats`` fresh seeds each: the second stage of a search, before a result is quoted.

    A sweep's best single trial is partly its lucky seed (the winner's curse: the maximum
    of noisy scores overestimates the configuration's mean), so its configurations are rerun
    as named grid variants (``trial_<id>``: the trial's varied hyperparameters), each on
    seeds the sweep never used (from one above its largest seed), without ASHA. ``sweeplab
    table`` then gives each configuration's mean ± std and ``sweeplab compare`` Welch's
    t-tests between them.

    Args:
        top: configurations to rerun (best first; fewer when the sweep has fewer usable trials).
        repeats: seeds per configuration (≥ 1).
        metric, mode: ranking (default: the job's objective).

    Raises:
        SweepError: for ``top`` or ``repeats`` < 1, or when no trial has a finite metric.
    """
    if top < 1 or repeats < 1:
        raise SweepError(f"--top and --repeats must be >= 1 (got {top} and {repeats})")
    rows = sweep.ranked(metric, mode).head(top)
    configs = sweep.trial_configs()
    variants = []
    for trial_id in rows["trial_id"]:
        config = configs[trial_id]
        variants.append({"name": f"trial_{trial_id}",
                         **{p: config[p] for p in sweep.param_names if config.get(p) is not None}})
    spec = sweep.spec
    job = spec.model_dump(mode="json", exclude_defaults=False)
    job["name"] = f"{spec.name}-confirm"
    job["description"] = (f"the {len(variants)} best configurations of {spec.name} by "
                          f"{metric or sweep.metric}, {repeats} fresh seeds each")
    job["train"] = {**spec.train, "seed": _next_seed(sweep)}
    job["search"] = {"sampler": "grid", "seed": spec.search.seed, "variants": variants,
                     "max_concurrent": spec.search.max_concurrent}
    job["scheduler"] = {"type": "none"}
    job["repeats"] = repeats
    return job
