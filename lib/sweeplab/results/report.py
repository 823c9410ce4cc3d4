"""``sweeplab report PATH [PATH ...] --out report.html``: one self-contained HTML file.

Everything is inside the file (figures as base64 PNG ``data:`` URIs, the stylesheet and the one
small script inline; no network, no external file), so it opens offline and can be mailed or
attached. Per sweep: the hypothesis verdicts (first, colour-coded), the results table (mean ± std
per group where the job has repeats or variants, plus every trial), the Pareto front of a
multi-objective job, learning curves, Optuna's parameter importances and parallel coordinates,
the family's media of the best trial (TensorBoard image grids such as VAE samples), the
reproducibility record and the resolved job.
"""
from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd
import yaml

if TYPE_CHECKING:
    from sweeplab.results.sweep import Sweep

#: background colours of the verdict cells (also what the browser test looks for)
VERDICT_COLOURS = {"supported": "#b7e4c7", "refuted": "#f4b6b6", "inconclusive": "#fbe7a1"}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em}table{border-collapse:collapse;font-size:.85em;margin:.5em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}th{background:#f0f0f0;
cursor:pointer}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;
font-size:.8em}img{max-width:100%;border:1px solid #eee}.note{color:#666;font-size:.85em}
.claims li{margin:.2em 0}nav li{margin:.1em 0}
""" + "".join(f"td.v-{k}{{background:{c};font-weight:600}}" for k, c in VERDICT_COLOURS.items())

# Sorts a table by a clicked header (numbers as numbers); marks the page ready for the browser test.
_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){
var table=th.closest('table'),body=table.tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th);
var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';var rows=Array.prototype.slice.call(body.rows);
rows.sort(function(a,b){var x=a.cells[i].textContent,y=b.cells[i].textContent,p=parseFloat(x),q=parseFloat(y);
var c=(!isNaN(p)&&!isNaN(q))?p-q:x.localeCompare(y);return asc?c:-c;});rows.forEach(function(r){body.appendChild(r);});
});});
document.body.setAttribute('data-ready','1');
"""


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _img(path: Path, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{_png(path)}">'


def _table(frame: pd.DataFrame, cls: str = "sortable") -> str:
    return frame.to_html(index=False, classes=cls, border=0, na_rep="", escape=True)


def _verdicts_html(sweep: Sweep) -> str:
    from sweeplab.results.verdicts import render_verdicts

    if not sweep.spec.hypotheses:
        return '<p class="note">The job states no hypotheses (docs/verdicts.md says how to add them).</p>'
    frame = sweep.verdicts()
    text = render_verdicts(frame, "html")
    for verdict in VERDICT_COLOURS:  # colour the verdict cells
        text = text.replace(f"<td>{verdict}</td>", f'<td class="v-{verdict}">{verdict}</td>')
    text = text.replace('class="dataframe"', 'class="dataframe sortable verdicts"', 1)
    claims = "".join(f"<li><b>{html.escape(str(i))}</b>: {html.escape(str(c))}</li>"
                     for i, c in zip(frame["id"], frame["claim"]))
    return (text + f'<ul class="claims">{claims}</ul><p class="note">p_holm: one-sided p-value of the claim '
            "(TOST for ≈), Holm-adjusted across the job's hypotheses; p_holm_against: the same against it; "
            "ci: bootstrap interval of mean A − mean B; seeds_needed: seeds a group for power 0.8 at the "
            "observed difference.</p>")


def _results_html(sweep: Sweep) -> str:
    from sweeplab.results.tables import grouped_frame, mixed_budget_note, trial_frame

    parts = []
    if sweep.spec.repeats > 1 or sweep.spec.search.variants:
        summ = sweep.summary(group_by=sweep.default_group_by())
        parts.append(f"<h3>Mean ± std per {', '.join(sweep.default_group_by())}</h3>"
                     + _table(grouped_frame(summ, 4)))
        note = mixed_budget_note(summ.attrs)
        if note:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
    trials = trial_frame(sweep, None, 4, None)
    parts.append(f"<details{' open' if not parts else ''}><summary>Every trial ({len(trials)})</summary>"
                 f"{_table(trials)}</details>")
    return "".join(parts)


def _pareto_html(sweep: Sweep, tmp: Path) -> str:
    if not sweep.spec.multi_objective:
        return ""
    import matplotlib.pyplot as plt

    from sweeplab.results.sweep import SweepError

    metrics = sweep.spec.objectives()
    try:
        front = sweep.pareto_front()
    except SweepError as exc:
        return f'<h3>Pareto front</h3><p class="note">{html.escape(str(exc))}</p>'
    df = sweep.dataframe()
    done = df[df["status"] == "completed"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(done[metrics[1]], done[metrics[0]], c="#999", label="completed trials")
    ordered = front.sort_values(metrics[1])
    ax.plot(ordered[metrics[1]], ordered[metrics[0]], "o-", c="#c0392b", label="Pareto front")
    ax.set_xlabel(f"{metrics[1]} ({sweep.metric_mode(metrics[1])})")
    ax.set_ylabel(f"{metrics[0]} ({sweep.metric_mode(metrics[0])})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(tmp / "pareto.png", dpi=100)
    plt.close(fig)
    cols = ["trial_id", *sweep.param_names, *metrics]
    return ("<h3>Pareto front</h3>" + _img(tmp / "pareto.png", "Pareto front")
            + _table(front[[c for c in cols if c in front]]))


def _figures_html(sweep: Sweep, tmp: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from sweeplab.results import plots

    parts = ["<h3>Learning curves</h3>" + _img(plots.plot_curves(sweep, tmp / "curves.png", sweep.metric),
                                               "learning curves")]
    if sweep.spec.search.space:
        try:
            for path in plots.plot_study(sweep, tmp, sweep.metric, None):
                title = {"importances.png": "Parameter importances (fANOVA)",
                         "parallel.png": "Parallel coordinates", "slice.png": "Slices"}.get(path.name, path.name)
                parts.append(f"<h3>{title}</h3>" + _img(path, title))
        except Exception as exc:  # noqa: BLE001 - a figure Optuna cannot draw must not lose the report
            parts.append(f'<p class="note">Optuna figures unavailable: {html.escape(str(exc))}</p>')
    return "".join(parts)


def media_images(sweep: Sweep, trial_id: str) -> dict[str, bytes]:
    """The last image of each TensorBoard image tag a trial wrote (the family's media, e.g.
    VAE reconstructions and prior samples), as PNG bytes by tag; empty when it wrote none."""
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    df = sweep.dataframe().set_index("trial_id")
    if trial_id not in df.index:
        return {}
    trial_dir = Path(sweep.path) / Path(str(df.loc[trial_id, "path"])).name
    out: dict[str, bytes] = {}
    for events in sorted(trial_dir.glob("events.out.tfevents.*.media")):
        acc = EventAccumulator(str(events), size_guidance={IMAGES: 0})
        acc.Reload()
        for tag in acc.Tags().get("images", []):
            out[tag] = acc.Images(tag)[-1].encoded_image_string
    return out


def _media_html(sweep: Sweep, tmp: Path) -> str:
    try:  # the best trial by the (first) objective
        best = sweep.best_trial()
    except Exception:  # noqa: BLE001
        return ""
    images = media_images(sweep, str(best["trial_id"]))
    if not images:
        return ""
    parts = [f"<h3>Media of the best trial ({html.escape(str(best['trial_id']))}, {sweep.mode} "
             f"{html.escape(sweep.metric)})</h3>"]
    for tag, png in images.items():
        path = tmp / f"media_{len(parts)}.png"
        path.write_bytes(png)
        parts.append(f"<h4>{html.escape(tag)}</h4>" + _img(path, tag))
    return "".join(parts)


def _record_html(sweep: Sweep) -> str:
    from sweeplab.runner.record import format_record

    job = yaml.safe_dump(sweep.spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    return (f"<h3>Reproducibility record</h3><pre>{html.escape(format_record(sweep.record(), sweep.path))}</pre>"
            f"<details><summary>The job</summary><pre>{html.escape(job)}</pre></details>")


def sweep_section(sweep: Sweep, anchor: str) -> str:
    """One sweep's part of the report (see the module's docstring), as HTML."""
    df = sweep.dataframe()
    counts = ", ".join(f"{v} {k}" for k, v in df["status"].value_counts().items()) if not df.empty else "none"
    objective = ", ".join(f"{x} {m}" for m, x in zip(sweep.spec.objectives(), sweep.spec.resolved_modes()))
    head = (f'<section id="{anchor}"><h2>{html.escape(sweep.spec.name or "sweep")}</h2>'
            f"<p>{html.escape(sweep.spec.description)}</p><p>family <code>{html.escape(sweep.spec.trainable)}"
            f"</code>, data <code>{html.escape(sweep.spec.data.name)}</code>, objective {html.escape(objective)}, "
            f"{len(df)} trials ({html.escape(counts)}); folder <code>{html.escape(str(sweep.path))}</code></p>")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        body = ("<h3>Hypotheses</h3>" + _verdicts_html(sweep) + "<h3>Results</h3>" + _results_html(sweep)
                + _pareto_html(sweep, tmp) + _figures_html(sweep, tmp) + _media_html(sweep, tmp)
                + _record_html(sweep))
    return head + body + "</section>"


def render_report(sweeps: Sequence[Sweep], title: str | None = None) -> str:
    """The whole report of ``sweeps`` as one HTML document (a contents list when several)."""
    title = title or "sweeplab report: " + ", ".join(s.spec.name or "sweep" for s in sweeps)
    anchors = [f"sweep-{i}" for i in range(len(sweeps))]
    nav = ""
    if len(sweeps) > 1:
        nav = "<nav><ol>" + "".join(f'<li><a href="#{a}">{html.escape(s.spec.name or a)}</a></li>'
                                    for s, a in zip(sweeps, anchors)) + "</ol></nav>"
    sections = "".join(sweep_section(s, a) for s, a in zip(sweeps, anchors))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f"<body><h1>{html.escape(title)}</h1>{nav}{sections}<script>{_JS}</script></body></html>")


def write_report(sweeps: Sequence[Sweep], out: str | Path, title: str | None = None) -> Path:
    """Write :func:`render_report` to ``out`` (parents created); returns the path.

    Raises:
        SweepError: no sweeps given.
    """
    from sweeplab.results.sweep import SweepError

    if not sweeps:
        raise SweepError("report: give at least one sweep")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(sweeps, title), encoding="utf-8")
    return path

