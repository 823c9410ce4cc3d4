"""Tables of a sweep: per-trial rows, per-group mean ± std, and their rendering (markdown, CSV,
LaTeX, HTML). Functions of a :class:`~sweeplab.results.sweep.Sweep`, which keeps them as the
methods ``summary`` and ``table``."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable

import pandas as pd

from sweeplab.results.sweep import STATUSES, USABLE, SweepError

if TYPE_CHECKING:
    from sweeplab.results.sweep import Sweep

#: Output formats of :func:`table`.
FORMATS = ("markdown", "csv", "latex", "html")


def missing(value: Any) -> bool:
    """None or a float NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def group_labels(column: pd.Series) -> pd.Series:
    """Values as group labels; a missing value (a conditional hyperparameter a trial did not
    sample) becomes ``"n/a"``, so its trials form a group instead of being dropped by groupby."""
    return column.map(lambda v: "n/a" if missing(v) else str(v)).astype(object)


def check_metrics(sweep: Sweep, df: pd.DataFrame, metrics: Iterable[str]) -> list[str]:
    """``metrics`` as a list.

    Raises:
        SweepError: one is not a column of ``df``; the message names the numeric columns there are.
    """
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in df.columns]
    if unknown:
        numeric = [c for c in df.columns if c not in ("seed", "training_iteration")
                   and c not in sweep.param_names and pd.api.types.is_numeric_dtype(df[c])]
        raise SweepError(f"--metrics {', '.join(unknown)}: not reported by the trials of "
                         f"{sweep.path}; choose from {', '.join(numeric)}")
    return metrics


def with_columns(sweep: Sweep, df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """``df`` with a column for each of ``names``: a hyperparameter the sweep held fixed (e.g.
    ``n_latent`` of a seeds-only job) is read from the trials' configs, so sweeps that vary
    different things can be grouped on the same names.

    Raises:
        SweepError: a name is neither a column nor in any trial's config.
    """
    missing_names = [g for g in names if g not in df.columns]
    if not missing_names:
        return df
    configs = sweep.trial_configs()
    df = df.copy()
    for g in missing_names:
        if any(g in c for c in configs.values()):
            df[g] = df["trial_id"].map(lambda i, g=g: configs.get(i, {}).get(g))
    unknown = [g for g in names if g not in df.columns]
    if unknown:
        settings = sorted({k for c in configs.values() for k in c if not k.startswith("_")})
        raise SweepError(f"--group-by {', '.join(unknown)}: not a column or hyperparameter of sweep "
                         f"{sweep.spec.name!r}; choose from "
                         f"{', '.join(c for c in df.columns if c not in ('path',))} or "
                         f"{', '.join(k for k in settings if k not in df.columns)}")
    return df


def summary(sweep: Sweep, group_by: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
            include: Iterable[str] = USABLE, at_iteration: int | None = None) -> pd.DataFrame:
    """Aggregate trials per group: for each metric its mean, std (ddof=1) and n.

    Args:
        group_by: columns to group on (e.g. ``["variant"]`` or hyperparameter names); default:
            ``variant`` for grids with variants, else every varied hyperparameter.
        metrics: metrics to aggregate (default: all the family's metrics).
        include: trial statuses kept (diverged and errored trials are counted separately
            in the ``excluded`` column, never averaged). Under an early-stopping scheduler the
            default mixes budgets (a stopped trial's last value is from a shorter run):
            ``attrs["mixed_budgets"]`` then says so; pass ``["completed"]`` or ``at_iteration``.
        at_iteration: instead, every trial's values at this ``training_iteration`` (trials
            that never reached it are counted as ``excluded``): one budget for every trial.

    Returns:
        A frame indexed by group with columns ``(metric, "mean"|"std"|"n")`` (n is 0 for a
        group without values), ``iterations`` (the budgets averaged: ``"4"`` or ``"1-4"``),
        ``trials`` and ``excluded``; sorted best first when the job's metric is among
        ``metrics``. ``attrs["mixed_budgets"]``: ``(fewest, most)`` iterations when the
        averaged trials ran different numbers of iterations and some of them were cut short
        (stopped early or unfinished), else None (completed trials of variants with different
        budgets each ran their own).

    Raises:
        SweepError: a metric the trials did not report, an unknown group column, or no trial
            reached ``at_iteration``.
    """
    from sweeplab.results.stats import values_at_iteration

    group_by = list(group_by) if group_by else sweep.default_group_by()
    df = with_columns(sweep, sweep.dataframe(), group_by)
    if metrics:
        metrics = check_metrics(sweep, df, metrics)
    else:  # every reported metric that some trial has
        metrics = [m for m in sweep.metric_names if m in df.columns and df[m].notna().any()]
    keyed = df.assign(**{g: group_labels(df[g]) for g in group_by})
    if at_iteration is not None:
        kept = values_at_iteration(sweep, keyed, metrics, at_iteration)
    else:
        kept = keyed[keyed["status"].isin(list(include))]
    counts = keyed.groupby(group_by, sort=False).size()
    out = _metric_stats(kept, group_by, metrics, counts.index)
    iters = pd.to_numeric(kept["training_iteration"], errors="coerce").groupby([kept[g] for g in group_by],
                                                                              sort=False)
    out[("iterations", "")] = [_span(iters.min().get(k), iters.max().get(k)) for k in counts.index]
    out[("trials", "")] = counts
    out[("excluded", "")] = (counts - kept.groupby(group_by, sort=False).size().reindex(counts.index)
                             .fillna(0)).astype(int)
    if sweep.metric in metrics:
        out = out.sort_values((sweep.metric, "mean"), ascending=sweep.mode == "min", na_position="last")
    out.attrs["mixed_budgets"] = _mixed_budgets(kept)
    return out


def _metric_stats(kept: pd.DataFrame, group_by: list[str], metrics: list[str],
                  groups: pd.Index) -> pd.DataFrame:
    """Columns ``(metric, "mean"|"std"|"n")`` of :func:`summary`: each metric's mean, std
    (ddof=1) and count over the rows of ``kept`` in each group, one row per group of ``groups``
    in that order."""
    agg = {}
    for m in metrics:
        values = pd.to_numeric(kept[m], errors="coerce")
        grouped = values.groupby([kept[g] for g in group_by], sort=False)
        agg[(m, "mean")] = grouped.mean()
        agg[(m, "std")] = grouped.std(ddof=1)
        agg[(m, "n")] = grouped.count()
    out = pd.DataFrame(agg).reindex(groups)
    for m in metrics:  # a group whose trials were all excluded has n = 0, not NaN
        out[(m, "n")] = out[(m, "n")].fillna(0).astype(int)
    return out


def _mixed_budgets(kept: pd.DataFrame) -> tuple[int, int] | None:
    """``attrs["mixed_budgets"]`` of :func:`summary`: ``(fewest, most)`` iterations of the
    averaged trials ``kept`` when they differ and some trial was cut short, else None."""
    spans = pd.to_numeric(kept["training_iteration"], errors="coerce").dropna()
    # completed trials each ran their own full budget (grid variants may set different ones):
    # only a stopped or unfinished trial's last values come from a shorter run than planned
    cut_short = (kept["status"] != "completed").any() if "status" in kept else True
    return ((int(spans.min()), int(spans.max()))
            if len(spans) and spans.min() != spans.max() and cut_short else None)


def _span(low: Any, high: Any) -> str:
    """``"4"`` or ``"1-4"`` (iterations), ``""`` for a group without trials."""
    if missing(low) or missing(high):
        return ""
    return f"{int(low)}" if low == high else f"{int(low)}-{int(high)}"


def mixed_budget_note(attrs: dict[str, Any]) -> str:
    """One line saying that a table's means mix budgets and how to avoid it ("" when they don't)."""
    span = attrs.get("mixed_budgets")
    if not span:
        return ""
    return (f"note: these means mix trials stopped at different budgets ({span[0]}-{span[1]} iterations; see "
            "the iterations column); --status completed keeps full-budget trials only, --at-iteration N "
            "scores every trial at N")


def table(sweep: Sweep, group_by: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
          fmt: str = "markdown", digits: int = 4, status: Iterable[str] | None = None,
          at_iteration: int | None = None) -> str:
    """The sweep as a printable table.

    Without ``group_by``: one row per trial (status, varied hyperparameters, seed,
    iterations, metrics). With ``group_by``: one row per group, each metric as
    ``mean ± std`` over the group's trials with ``n`` (the seeds' tables, with statistics);
    when those trials ran different budgets the ``iterations`` column shows the span and a
    markdown table ends with a note saying so.

    Args:
        group_by: columns to aggregate over (see :func:`summary`).
        metrics: metrics shown (default: all the family's metrics).
        fmt: ``markdown`` | ``csv`` | ``latex`` | ``html``; LaTeX escapes ``_``, ``%``, ``&``
            ... and writes ``±`` as ``$\\pm$``, so the table compiles (with ``booktabs``).
        digits: significant digits of the numbers.
        status: trial statuses to show (e.g. ``["completed"]`` to leave out trials ASHA
            stopped at a shorter budget); default: every trial, and in grouped tables the
            completed, stopped and unfinished ones (the rest counted as ``excluded``).
        at_iteration: grouped tables only: every trial's values at this iteration.

    Raises:
        SweepError: unknown format, group column or status.
    """
    if fmt not in FORMATS:
        raise SweepError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    status = list(status) if status else None
    unknown = [s for s in status or [] if s not in STATUSES]
    if unknown:
        raise SweepError(f"--status {', '.join(unknown)}: not a trial status; choose from "
                         f"{', '.join(STATUSES)}")
    if metrics:  # each once; a group's own column is its row label, not a metric to average
        metrics = [m for m in dict.fromkeys(metrics) if m not in (group_by or [])] or None
    note = ""
    if group_by:
        summ = summary(sweep, group_by, metrics, include=status or USABLE, at_iteration=at_iteration)
        frame, note = grouped_frame(summ, digits), mixed_budget_note(summ.attrs)
    else:
        frame = trial_frame(sweep, metrics, digits, status)
    text = render(frame, fmt)
    return text + f"\n\n{note}" if note and fmt == "markdown" else text


def trial_frame(sweep: Sweep, metrics: Iterable[str] | None, digits: int,
                status: list[str] | None) -> pd.DataFrame:
    """The rows of an ungrouped table: the trials of ``status`` (default all), numbers as text
    with ``digits`` significant digits; metrics that no shown trial reported are left out."""
    df = sweep.dataframe()
    if status:
        df = df[df["status"].isin(status)]
    metrics = (check_metrics(sweep, df, metrics) if metrics
               else [m for m in sweep.metric_names if m in df.columns])
    cols = ["trial_id", "status"] + (["variant"] if "variant" in df else []) + \
        [p for p in sweep.param_names if p in df] + ["seed", "training_iteration"] + metrics + \
        [c for c in ("num_params", "train_seconds") if c in df and c not in metrics]
    # a metric that is also an identity column (--metrics seed,...) is shown once, in its place
    frame = df[[c for c in dict.fromkeys(cols) if c in df.columns]].copy()
    frame = frame.drop(columns=[m for m in metrics if m in frame and frame[m].isna().all()])
    for c in frame.columns:
        if pd.api.types.is_float_dtype(frame[c]):
            frame[c] = frame[c].map(lambda v: fmt_number(v, digits))
    return frame


def grouped_frame(summary_frame: pd.DataFrame, digits: int) -> pd.DataFrame:
    """The rows of a grouped table from :func:`summary`: ``mean ± std`` per metric, ``n`` (of
    the first metric) and ``excluded``."""
    out = pd.DataFrame(index=summary_frame.index)
    metrics = [m for m in dict.fromkeys(c[0] for c in summary_frame.columns)
               if m not in ("trials", "excluded", "iterations")]
    for m in metrics:
        out[m] = [plus_minus(mu, sd, digits)
                  for mu, sd in zip(summary_frame[(m, "mean")], summary_frame[(m, "std")])]
    out["n"] = summary_frame[(metrics[0], "n")] if metrics else 0
    if ("iterations", "") in summary_frame:
        out["iterations"] = summary_frame[("iterations", "")]
    out["excluded"] = summary_frame[("excluded", "")]
    return out.reset_index()


def fmt_number(value: Any, digits: int) -> str:
    """A float with ``digits`` significant digits ("" when missing); anything else as ``str``."""
    if missing(value):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def plus_minus(mean: float, std: float, digits: int) -> str:
    """``mean ± std`` (std to 2 significant digits), the mean alone without a std, "" without a mean."""
    if missing(mean):
        return ""
    if missing(std):
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {std:.2g}"


def render(frame: pd.DataFrame, fmt: str) -> str:
    """``frame`` as text in one of :data:`FORMATS`, without the index."""
    if fmt == "markdown":
        return frame.to_markdown(index=False)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "latex":
        return latex(frame)
    return frame.to_html(index=False)


def latex(frame: pd.DataFrame) -> str:
    """``frame`` as a LaTeX ``tabular`` (booktabs rules) that compiles with pdflatex: ``_``,
    ``%``, ``&``, ``#``, ``$`` ... escaped by pandas, ``±`` and ``≈`` written as math."""
    symbols = {"±": ("PLUSMINUSTOKEN", "$\\pm$"), "≈": ("APPROXTOKEN", "$\\approx$")}

    def swap(v: Any) -> Any:
        if isinstance(v, str):
            for sym, (token, _) in symbols.items():
                v = v.replace(sym, token)
        return v

    swapped = frame.rename(columns=swap)
    for c in swapped.columns:
        if not pd.api.types.is_numeric_dtype(swapped[c]):
            swapped[c] = swapped[c].map(swap)
    text = swapped.to_latex(index=False, escape=True)
    for token, math_text in symbols.values():
        text = text.replace(token, math_text)
    return text
