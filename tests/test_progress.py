"""The live status line of a running sweep: its counts, best and time left from a synthetic
sequence of trial results (no Ray), how often it prints, and what `sweeplab run` prints in all
at each verbosity (a tiny real sweep: line-count bounds, no Ray token warning, no Ray
TensorBoard hint, no per-checkpoint lines)."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sweeplab.cli import build_parser, main
from sweeplab.runner import progress
from sweeplab.runner.progress import SweepProgress, eta_seconds, format_seconds, ray_verbosity

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FakeTrial:
    """What the callback reads of a Ray ``Trial``."""
    trial_id: str
    status: str
    config: dict = field(default_factory=dict)
    last_result: dict = field(default_factory=dict)


def cnn_progress(mode: str = "max", total: int = 10) -> SweepProgress:
    cb = SweepProgress("demo", "val_accuracy", mode, ["lr", "norm"], "cnn_classifier")
    cb.total = total
    return cb


def result(it: int, acc: float, diverged: int = 0) -> dict:
    return {"training_iteration": it, "val_accuracy": acc, "diverged": diverged}


def trials_midway() -> list[FakeTrial]:
    cfg = {"epochs": 8, "lr": 0.003, "norm": "batch"}
    return [
        FakeTrial("a", "TERMINATED", cfg, result(8, 0.90)),                           # full budget
        FakeTrial("b", "TERMINATED", cfg, result(2, 0.70)),                           # ASHA stopped it
        FakeTrial("c", "ERROR", cfg, result(3, 0.99)),                                # errored: never best
        FakeTrial("d", "TERMINATED", cfg, result(5, math.nan, diverged=1)),           # diverged
        FakeTrial("e", "RUNNING", {**cfg, "lr": 0.0232519}, result(4, 0.95)),         # half its budget
        FakeTrial("f", "PENDING", cfg, {}),
    ]


def test_status_line_counts_best_and_time_left():
    line = cnn_progress().status_line(trials_midway(), elapsed=100.0)
    # 4 of 10 ended; e has run 4 of its 8 epochs: done 4.5, left 100 s * 5.5 / 4.5 = 122 s
    assert line == ("[1m40s] 4/10 done: 1 completed, 1 stopped early, 1 errored, 1 diverged | 1 running | "
                    "best val_accuracy=0.95 trial_e lr=0.0233,norm=batch | ~2m02s left")


def test_a_time_budget_caps_the_time_left():
    cb = SweepProgress("demo", "val_accuracy", "max", ["lr", "norm"], "cnn_classifier", time_budget_s=150)
    cb.total = 10
    # the trials' own pace says ~2m02s (above); search.time_budget_s stops the sweep 50 s from now
    assert cb.status_line(trials_midway(), elapsed=100.0).endswith("| ~50s left (time budget)")
    assert cb.status_line([], 3).endswith("| ~2m27s left (time budget)")  # before any trial ends, too
    cb.time_budget_s = 1000
    assert cb.status_line(trials_midway(), elapsed=100.0).endswith("| ~2m02s left")


def test_best_follows_the_mode_and_budgets_follow_the_trials_config():
    trials = trials_midway()
    assert "best val_accuracy=0.7 trial_b lr=3e-3,norm=batch" in cnn_progress("min").status_line(trials, 10)
    # a searched epochs: 2 of 2 epochs is a completed trial, not one stopped early
    short = FakeTrial("g", "TERMINATED", {"epochs": 2}, result(2, 0.5))
    assert "1/10 done: 1 completed | 0 running" in cnn_progress().status_line([short], 10)
    # ASHA's max_t caps the budget as the results package does
    capped = SweepProgress("demo", "val_accuracy", "max", [], "cnn_classifier", max_t=2)
    capped.total = 1
    assert capped.status_line([FakeTrial("h", "TERMINATED", {"epochs": 8}, result(2, 0.5))], 10).startswith(
        "[10s] 1/1 done: 1 completed | 0 running | best val_accuracy=0.5 trial_h")


def test_several_objectives_show_the_best_of_each():
    cb = SweepProgress("mo", ["val_accuracy", "num_params"], ["max", "min"], [], "cnn_classifier")
    cb.total = 2
    trials = [FakeTrial("a", "TERMINATED", {"epochs": 1}, {**result(1, 0.9), "num_params": 500}),
              FakeTrial("b", "TERMINATED", {"epochs": 1}, {**result(1, 0.8), "num_params": 100})]
    assert "best val_accuracy=0.9, num_params=100" in cb.status_line(trials, 5)


def test_time_formats_and_estimates():
    assert [format_seconds(s) for s in (0, 42.4, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]
    assert eta_seconds(60, total=10, finished=0, partial=0) is None
    assert eta_seconds(60, total=10, finished=5, partial=0) == 60
    assert eta_seconds(60, total=4, finished=2, partial=1.0) == pytest.approx(20)
    assert [ray_verbosity(v) for v in (0, 1, 2, 3, 4)] == [0, 0, 1, 2, 2]
    assert "time left: after the first trial" in cnn_progress().status_line([], 3)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def lines_over(seconds: float, monkeypatch, capsys, tty: bool = False) -> list[str]:
    """The lines the callback commits when Ray steps every 0.5 s for ``seconds``."""
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty, raising=False)
    cb = cnn_progress()
    cb.setup(total_num_samples=60)
    trials = trials_midway()
    while clock.now < seconds:
        clock.now += 0.5
        cb.on_step_end(0, trials)
    return capsys.readouterr().out.split("\n")


def test_lines_thin_out_as_the_sweep_grows(monkeypatch, capsys):
    first_minute = lines_over(60, monkeypatch, capsys)
    assert first_minute[0].startswith("sweep demo: 60 trials") and len(first_minute) - 2 == 12  # every 5 s
    four_minutes = len(lines_over(240, monkeypatch, capsys)) - 2
    an_hour = len(lines_over(3600, monkeypatch, capsys)) - 2
    # after the first minute a line once elapsed/12 has passed since the last one: the times
    # grow by 12/11 each line, so ln(T / 60 s) / ln(12/11) more lines
    assert four_minutes == pytest.approx(12 + math.log(4) / math.log(12 / 11), abs=1.5)
    assert an_hour == pytest.approx(12 + math.log(60) / math.log(12 / 11), abs=1.5)


def test_a_terminal_gets_the_line_refreshed_in_place(monkeypatch, capsys):
    out = "\n".join(lines_over(20, monkeypatch, capsys, tty=True))
    assert out.count("\r\x1b[K") >= 5 and out.count("\n") == 5  # refreshed every 2 s, committed every 5 s


def test_an_interrupted_sweep_says_its_best_is_provisional(capsys):
    cb = cnn_progress()
    cb.on_experiment_end(trials_midway())
    out = capsys.readouterr().out
    assert "interrupted: 6 of 10 trials unfinished" in out and "provisional" in out
    cb.total = 4
    cb.on_experiment_end(trials_midway()[:4])
    assert "provisional" not in capsys.readouterr().out
    # Ctrl-C: Ray marks the running trial TERMINATED at cleanup without ending it (no
    # on_trial_complete): still unfinished, not "stopped early"
    trials = trials_midway()[:5]
    cb.total = 5
    cb.on_step_end(0, trials)
    for t in trials[:4]:
        cb.on_trial_complete(0, trials, t)
    trials[4].status = "TERMINATED"
    cb.on_experiment_end(trials)
    out = capsys.readouterr().out
    assert "4/5 done: 1 completed, 1 stopped early, 1 errored, 1 diverged | 0 running, 1 unfinished" in out
    assert "interrupted: 1 of 5 trials unfinished, so the best above is provisional" in out


def test_a_sweep_stopped_by_its_time_budget_says_so_not_interrupted(capsys):
    cb = SweepProgress("demo", "val_accuracy", "max", [], "cnn_classifier", time_budget_s=60)
    cb.total = 10
    cb.start -= 61  # the budget has passed: Ray cut the running trial, 4 never started
    cb.on_experiment_end(trials_midway())
    out = capsys.readouterr().out
    assert "time budget reached (search.time_budget_s = 1m00s): 2 trials cut, 4 never started" in out
    assert "interrupted" not in out and "provisional" not in out
    cb.on_experiment_end(trials_midway()[:5])  # one trial cut: no plural
    assert "1 trial cut, 5 never started" in capsys.readouterr().out


def test_a_trial_failure_is_one_line_without_ray_traceback():
    import logging

    try:
        raise RuntimeError("worker traceback line 1\n  File loop.py, line 9\nValueError: lr must be positive")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(progress.CompactTrialErrors.LOGGER, logging.ERROR, "tune_controller.py", 1,
                               "Trial task failed for trial %s", ("trial_ab12",), exc_info)
    assert progress.CompactTrialErrors().filter(record)
    text = logging.Formatter().format(record)
    assert text == ("Trial task failed for trial trial_ab12: ValueError: lr must be positive "
                    "(traceback: error.txt in its folder; -v prints it)")
    other = logging.LogRecord("x", logging.ERROR, "f.py", 1, "something else", None, exc_info)
    assert progress.CompactTrialErrors().filter(other) and other.exc_info is exc_info  # left alone


def test_run_and_resume_take_v_and_q():
    p = build_parser()
    for cmd in (["run", "job.yaml"], ["resume", "sweeps/x"]):
        assert (p.parse_args(cmd).verbose, p.parse_args(cmd).quiet) == (0, False)
        assert p.parse_args(cmd + ["-vv"]).verbose == 2
        assert p.parse_args(cmd + ["-q"]).quiet and p.parse_args(cmd + ["--quiet"]).quiet
        with pytest.raises(SystemExit):
            p.parse_args(cmd + ["-q", "-v"])


TINY = {
    "name": "tiny",
    "trainable": "cnn_classifier",
    "data": {"name": "digits", "val_fraction": 0.2},
    "train": {"epochs": 2, "batch_size": 64, "filters": 4, "n_blocks": 1, "threads": 1},
    "search": {"sampler": "random", "seed": 0, "num_samples": 3, "max_concurrent": 2,
               "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}},
    "scheduler": {"type": "none"},
    "metric": "val_accuracy",
    "checkpoint": {"every": 1, "keep": 1},
}


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("job") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.parametrize("flag", ["-q", "-v"])
def test_quiet_and_verbose_runs(ray_session, storage, tiny_job, capsys, flag):
    assert main(["run", str(tiny_job), "--storage-path", str(storage), flag]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    status_lines = [line for line in lines if line.startswith("[") and " done" in line]
    if flag == "-q":  # only the final summary: table (3 trials), status, best config, hints
        assert not status_lines and lines[1].startswith("## tiny: 3 trials")
        assert len(lines) <= 30, out
    else:  # Ray Tune's per-trial tables besides the status lines
        assert status_lines and "Trial status" in out and "started with configuration" in out
        assert "To visualize your results with TensorBoard" not in out  # Ray's hint into its staging folder
        assert len(lines) > 60, out


def test_an_interrupted_default_run_prints_a_short_log_without_rays_noise(ray_session, tiny_job, tmp_path):
    """A fresh `sweeplab run` in its own process with its own local Ray, as a user runs it, and
    Ctrl-C once the first status line is out: Ray's noise is gone, the best is provisional, and a
    resume of it gets this session's loggers and verbosity."""
    job = yaml.safe_load(tiny_job.read_text())
    job["train"]["epochs"] = 300  # ~10 s a trial: still running at the first status line
    job["search"]["max_concurrent"] = 1
    job["checkpoint"] = {"every": 100, "keep": 1}
    long_job = tmp_path / "long.yaml"
    long_job.write_text(yaml.safe_dump(job))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "TUNE_DISABLE_SIGINT_HANDLER")}
    env["PYTHONPATH"] = str(ROOT / "lib")
    proc = subprocess.Popen([sys.executable, "-m", "sweeplab.cli", "run", str(long_job), "--storage-path",
                             str(tmp_path), "--num-cpus", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("[") and " done" in line:
                proc.send_signal(signal.SIGINT)  # Ctrl-C
                break
        lines += proc.communicate(timeout=120)[0].splitlines()
    finally:
        proc.kill()
    out = "\n".join(lines)
    assert proc.returncode == 1, out  # unfinished trials
    assert "Token authentication" not in out  # auth stays on (Ray's default), without the warning
    assert "driver_artifacts" not in out and "/tmp/ray/session" not in out  # no hint into Ray's staging
    assert "Checkpoint successfully created" not in out and "Trial status" not in out
    assert f"tensorboard --logdir {tmp_path / 'tiny'}" in out  # sweeplab's own hint
    assert any(line.startswith("sweep tiny: 3 trials; a status line every few seconds") for line in lines[:3])
    assert "trials unfinished, so the best above is provisional" in out
    assert "stopped early" not in out  # the trial Ctrl-C cut short is unfinished
    assert "## best trial by max val_accuracy (provisional: " in out
    assert len(lines) <= 45, out
    print(out)  # shown with -s: the output a user sees

    from sweeplab.runner.run import _restored_output, make_trainable
    from sweeplab.runner.folder import read_job
    from sweeplab.runner.data import prepare_data
    from sweeplab.tensorboard import TrialTensorBoard
    from ray import tune

    spec = read_job(str(tmp_path / "tiny"))
    tuner = tune.Tuner.restore(str(tmp_path / "tiny"), make_trainable(spec, prepare_data(spec)),
                               resume_unfinished=True)
    for verbose, ray_verbose, kinds in ((0, 0, {"CSVLoggerCallback", "JsonLoggerCallback", "TrialTensorBoard"}),
                                        (2, 1, {"CSVLoggerCallback", "JsonLoggerCallback", "TrialTensorBoard",
                                                "SweepProgress"})):
        _restored_output(tuner, spec, verbose)
        config = tuner._local_tuner.get_run_config()
        assert {type(c).__name__ for c in config.callbacks} == kinds and config.verbose == ray_verbose
    assert any(isinstance(c, TrialTensorBoard) for c in config.callbacks)
