"""What a running sweep prints: one status line every few seconds instead of Ray Tune's
per-trial tables (Ray's token-authentication warning and its TensorBoard hint are silenced by
the runner before Ray starts: ``sweeplab.runner.run._quiet_ray_console``).

Verbosity (``run_sweep``/``resume_sweep``'s ``verbose``, the CLI's ``-q``/``-v``):

====  ==============  ==================================================================
 0    ``-q``          nothing while it runs (the CLI then prints only the final summary)
 1    default         :class:`SweepProgress` status lines; Ray Tune's output off
 2    ``-v``          status lines and Ray Tune's per-trial tables (its verbosity 1)
 3    ``-vv``         ... and Ray Tune's table after every result (its verbosity 2)
====  ==============  ==================================================================

A status line reads::

    [1m05s] 23/60 done: 15 completed, 6 stopped early, 1 errored, 1 diverged | 2 running | best val_accuracy=0.979 trial_bd71bc09 lr=0.0233,norm=batch | ~2m40s left

Lines are spaced by the elapsed time: every 5 s during the first minute, then every
elapsed/12 (so a sweep's log grows with the logarithm of its length), at most every 5 minutes;
on a terminal the line is also refreshed in place every 2 s. The counts use the results
package's own statuses (:func:`sweeplab.results.sweep.trial_status`), so they agree with the
final table.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any, Iterable, TextIO

from ray.tune import Callback

#: verbosity of the default output (status lines, no Ray Tune tables)
DEFAULT_VERBOSITY = 1
#: bounds of the spacing of committed status lines, seconds
MIN_EVERY, MAX_EVERY = 5.0, 300.0
#: refresh period of the in-place line on a terminal, seconds
LIVE_EVERY = 2.0
#: the status columns, in the order printed (``stopped`` is ASHA's early stop)
COUNTED = ("completed", "stopped", "error", "diverged", "cancelled")
_LABELS = {"completed": "completed", "stopped": "stopped early", "error": "errored", "diverged": "diverged",
           "cancelled": "cancelled"}


#: the user's own choice of Ray's console engine, restored for ``-v``
_USER_AIR_OUTPUT = os.environ.get("RAY_AIR_NEW_OUTPUT")


def ray_verbosity(verbose: int) -> int:
    """Ray Tune's ``RunConfig.verbose`` for a sweeplab verbosity (table in the module docstring)."""
    return max(0, min(2, int(verbose) - 1))


def ray_output(verbose: int) -> int:
    """Choose Ray Tune's console engine for a sweeplab verbosity and return Ray's verbosity.
    Ray's default engine prints its experiment box and a results hint even at verbosity 0;
    its legacy one prints nothing there, so a run without Ray's tables switches to it
    (``RAY_AIR_NEW_OUTPUT=0``, read when the ``Tuner`` runs); ``-v`` gets the default engine's
    per-trial tables (or whatever the user's own ``RAY_AIR_NEW_OUTPUT`` says)."""
    ray_verbose = ray_verbosity(verbose)
    if ray_verbose == 0:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    elif _USER_AIR_OUTPUT is None:
        os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
    else:
        os.environ["RAY_AIR_NEW_OUTPUT"] = _USER_AIR_OUTPUT
    return ray_verbose


class CompactTrialErrors(logging.Filter):
    """A filter on Ray Tune's controller logger: "Trial task failed for trial X" keeps one line,
    the exception's own last line, instead of a traceback of some 40 lines per failure (the
    traceback stays in the trial folder's ``error.txt``; ``-v`` prints it)."""

    LOGGER = "ray.tune.execution.tune_controller"

    def filter(self, record: logging.LogRecord) -> bool:
        """Shorten a trial-failure record in place; let every record through."""
        if record.exc_info and str(record.msg).startswith("Trial task failed"):
            lines = [line for line in str(record.exc_info[1]).splitlines() if line.strip()]
            cause = lines[-1].strip() if lines else type(record.exc_info[1]).__name__
            record.msg = f"{record.getMessage()}: {cause} (traceback: error.txt in its folder; -v prints it)"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


#: the one filter installed while a sweep with compact errors runs
_COMPACT = CompactTrialErrors()


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta_seconds(elapsed: float, total: int, finished: int, partial: float) -> float | None:
    """Time left, assuming the rest goes as fast as what was done so far: ``elapsed`` times
    (trials left / trials done), where running trials count with the share of their iteration
    budget they have run (``partial``, summed over them). ``None`` before anything is done."""
    done = finished + partial
    if done <= 0 or total <= 0:
        return None
    return max(0.0, elapsed * (total - done) / done)


class SweepProgress(Callback):
    """Ray Tune callback printing the sweep's status line (see the module docstring).

    Args:
        name: the sweep's name (first line).
        metric, mode: the objective and its direction (``"min"``/``"max"``); several objectives
            show the best of each.
        varied: the hyperparameters shown with the best trial (:func:`sweeplab.tensorboard.run_name_keys`).
        family: the registered family name, for each trial's iteration budget.
        max_t: ASHA's or HyperBand's ``max_t`` (caps budgets), else ``None``.
        time_budget_s: ``search.time_budget_s`` (seconds), which caps the time-left estimate.
        default_budget: iterations of a trial whose config the family cannot read.
        stream: where lines go (default ``sys.stdout`` at print time).
        compact_errors: one line per trial failure instead of Ray's traceback
            (:class:`CompactTrialErrors`, while the sweep runs).
    """

    def __init__(self, name: str, metric: str | list[str], mode: str | list[str], varied: Iterable[str],
                 family: str, max_t: int | None = None, default_budget: int = 1,
                 time_budget_s: float | None = None, stream: TextIO | None = None, compact_errors: bool = True) -> None:
        self.name = name
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        self.modes = [mode] if isinstance(mode, str) else list(mode)
        self.varied = list(varied)
        self.family, self.max_t, self.default_budget = family, max_t, default_budget
        self.time_budget_s = time_budget_s
        self.compact_errors = compact_errors
        self.stream = stream
        self._budgets: dict[str, int] = {}
        self._reset()

    def _reset(self) -> None:
        self.total = 0
        self.start = time.monotonic()
        self._last_line = self._last_live = 0.0
        self._live_pending = False
        # trials seen live in this session, and those Ray ended (done, stopped early, errored):
        # when an interrupted sweep ends, Ray marks its live trials TERMINATED without ending them
        self._active: set[str] = set()
        self._ended: set[str] = set()

    # -- Ray Tune hooks ---------------------------------------------------------------------------
    def setup(self, stop: Any = None, num_samples: Any = None, total_num_samples: Any = None, **info: Any) -> None:
        """Called by Ray before the first trial: the total and the start time."""
        self._reset()
        if self.compact_errors:
            logging.getLogger(CompactTrialErrors.LOGGER).addFilter(_COMPACT)
        self._last_line = self.start  # the first status line after MIN_EVERY
        self.total = int(total_num_samples or 0)
        self._write(f"sweep {self.name}: {self.total} trials; a status line every few seconds "
                    "(-v: Ray Tune's trial tables too, -q: none)")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Print (or refresh) the status line when it is due."""
        self._active.update(t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR"))
        now = time.monotonic()
        elapsed = now - self.start
        every = min(MAX_EVERY, max(MIN_EVERY, elapsed / 12))
        if now - self._last_line >= every:
            self._last_line = self._last_live = now
            self._write(self.status_line(trials, elapsed))
        elif self._is_tty() and now - self._last_live >= LIVE_EVERY:
            self._last_live = now
            self._write(self.status_line(trials, elapsed), live=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Ray ended ``trial`` normally (its budget, or a scheduler's stop)."""
        self._ended.add(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """``trial`` failed for good."""
        self._ended.add(trial.trial_id)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """The last status line; for an interrupted sweep, that its best is provisional."""
        logging.getLogger(CompactTrialErrors.LOGGER).removeFilter(_COMPACT)
        cut = (self._active - self._ended) | {t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")}
        elapsed = time.monotonic() - self.start
        line = self.status_line(trials, elapsed, cut)
        unfinished = len(cut)
        unstarted = max(0, self.total - len(trials))
        if (unfinished or unstarted) and self.time_budget_s is not None and elapsed >= self.time_budget_s:
            line += (f"\ntime budget reached (search.time_budget_s = {format_seconds(self.time_budget_s)}): "
                     f"{unfinished} trial{'s' * (unfinished != 1)} cut, {unstarted} never started; the best "
                     "above is the best within the budget (sweeplab resume continues the sweep)")
        elif unfinished or unstarted:
            line += (f"\ninterrupted: {unfinished + unstarted} of {self.total} trials unfinished, so the best "
                     "above is provisional (sweeplab resume continues the sweep)")
        self._write(line)

    # -- the line ---------------------------------------------------------------------------------
    def status_line(self, trials: Iterable[Any], elapsed: float, cut: Iterable[str] = ()) -> str:
        """The status line of ``trials`` (Ray ``Trial`` objects or anything with ``trial_id``,
        ``status``, ``config`` and ``last_result``) after ``elapsed`` seconds; the ids in ``cut``
        were interrupted (counted as unfinished, whatever their status says)."""
        from sweeplab.results.sweep import trial_status

        counts = dict.fromkeys(COUNTED, 0)
        running, partial, cut = 0, 0.0, set(cut)
        usable = []
        for t in trials:
            last = t.last_result or {}
            budget = self.budget(t)
            status = "unfinished" if t.trial_id in cut else trial_status(t.status, last, budget)
            if status in counts:
                counts[status] += 1
            elif t.status in ("RUNNING", "PAUSED") and t.trial_id not in cut:
                running += 1
                partial += min(1.0, float(last.get("training_iteration", 0) or 0) / max(budget, 1))
            if status not in ("diverged", "error", "cancelled"):
                usable.append(t)
        finished = sum(counts.values())
        parts = [f"[{format_seconds(elapsed)}] {finished}/{self.total} done"]
        detail = ", ".join(f"{n} {_LABELS[s]}" for s, n in counts.items() if n)
        if detail:
            parts[0] += f": {detail}"
        parts.append(f"{running} running" + (f", {len(cut)} unfinished" if cut else ""))
        parts.append(self._best(usable))
        eta = eta_seconds(elapsed, self.total, finished, partial)
        if finished < self.total:
            capped = self.time_budget_s is not None and (eta is None or eta > self.time_budget_s - elapsed)
            if capped:
                parts.append(f"~{format_seconds(max(0.0, self.time_budget_s - elapsed))} left (time budget)")
            else:
                parts.append(f"~{format_seconds(eta)} left" if eta is not None else "time left: after the first trial")
        return " | ".join(p for p in parts if p)

    def _best(self, trials: list) -> str:
        """``best <metric>=<value> <trial run name>`` (one objective) or the best value of each
        objective (several); empty before any result."""
        from sweeplab.tensorboard import run_name

        out = []
        for metric, mode in zip(self.metrics, self.modes):
            scored = [(float(t.last_result[metric]), t) for t in trials
                      if _finite((t.last_result or {}).get(metric))]
            if not scored:
                continue
            value, best = (max if mode == "max" else min)(scored, key=lambda vt: vt[0])
            if len(self.metrics) == 1:
                return f"best {metric}={value:.4g} {run_name(best.trial_id, best.config, self.varied)}"
            out.append(f"{metric}={value:.4g}")
        return f"best {', '.join(out)}" if out else ""

    def budget(self, trial: Any) -> int:
        """Iterations ``trial`` runs when nothing stops it (as :meth:`sweeplab.results.Sweep.trial_budget`)."""
        if trial.trial_id not in self._budgets:
            from sweeplab.kit.family import get_family
            from sweeplab.kit.loop import trial_config

            try:
                fam = get_family(self.family)
                budget = int(fam.num_iterations_of(trial_config(fam, dict(trial.config))))
            except (ValueError, TypeError, AttributeError, KeyError):
                budget = self.default_budget
            self._budgets[trial.trial_id] = min(budget, self.max_t) if self.max_t else budget
        return self._budgets[trial.trial_id]

    # -- output -----------------------------------------------------------------------------------
    def _is_tty(self) -> bool:
        stream = self.stream or sys.stdout
        return bool(getattr(stream, "isatty", lambda: False)())

    def _write(self, text: str, live: bool = False) -> None:
        """A committed line, or on a terminal (``live``) the same line rewritten in place."""
        stream = self.stream or sys.stdout
        if live:
            stream.write("\r\x1b[K" + text)
            self._live_pending = True
        else:
            stream.write(("\r\x1b[K" if self._live_pending else "") + text + "\n")
            self._live_pending = False
        stream.flush()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def progress_callbacks(spec: Any, verbose: int) -> list[Callback]:
    """``[SweepProgress]`` for verbosity 1 or more, else ``[]``.

    Args:
        spec: the sweep's validated :class:`~sweeplab.spec.JobSpec`.
        verbose: sweeplab's verbosity (module docstring).
    """
    if verbose < 1:
        return []
    from sweeplab.tensorboard import run_name_keys

    sched = spec.scheduler
    max_t = sched.max_t if sched.type in ("asha", "hyperband") else None
    if spec.multi_objective:
        metric: Any = spec.objectives()
        mode: Any = spec.resolved_modes()
    else:
        metric, mode = spec.metric, spec.resolved_mode()
    return [SweepProgress(spec.name, metric, mode, run_name_keys(spec), spec.trainable, max_t=max_t,
                          default_budget=spec.max_iterations(), time_budget_s=spec.search.time_budget_s,
                          compact_errors=verbose < 2)]

