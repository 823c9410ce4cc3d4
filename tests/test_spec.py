"""Job-spec validation: good specs load, every bad one fails with a message naming the field."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweeplab.cli import main
from sweeplab.runner import build_scheduler, build_search
from sweeplab.spec import SpecError, load_spec, validate_spec

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "name": "t",
    "trainable": "cnn_classifier",
    "data": {"name": "digits"},
    "train": {"epochs": 3, "batch_size": 32},
    "search": {
        "sampler": "tpe",
        "num_samples": 4,
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "n_blocks": {"type": "int", "low": 1, "high": 3},
            "optimizer": {"type": "categorical", "values": ["adam", "sgd"]},
            "momentum": {"type": "float", "low": 0.5, "high": 0.95, "when": {"optimizer": "sgd"}},
        },
    },
    "metric": "test_accuracy",
    "scheduler": {"type": "asha", "grace_period": 1},
}


def mutate(path: str, value, base=None):
    raw = copy.deepcopy(base or BASE)
    node = raw
    parts = path.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    if value is DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return raw


DELETE = object()

# (description, raw spec, fragments that must all appear in the error)
BAD = [
    ("unknown top-level key", mutate("trainabel", "x"), ["trainabel", "unknown field"]),
    ("missing trainable", mutate("trainable", DELETE), ["trainable", "required"]),
    ("missing metric", mutate("metric", DELETE), ["metric", "required"]),
    ("unknown trainable", mutate("trainable", "resnet9000"), ["trainable", "resnet9000", "cnn_classifier"]),
    ("unknown dataset", mutate("data.name", "imagenet"), ["data.name", "imagenet", "digits"]),
    ("missing data root", mutate("data", {"name": "mnist", "root": "/nonexistent/xyz"}),
     ["data.root", "/nonexistent/xyz", "materialize.sh"]),
    ("root required", mutate("data", {"name": "mnist"}), ["data.root", "mnist"]),
    ("bad fraction", mutate("data.train_fraction", 1.5), ["data.train_fraction", "1.5"]),
    ("zero fraction", mutate("data.test_fraction", 0), ["data.test_fraction"]),
    ("val fraction 1", mutate("data.val_fraction", 1.0), ["data.val_fraction"]),
    ("unknown hyperparameter in train", mutate("train.epochz", 3), ["train.epochz", "epochs"]),
    ("wrong type in train", mutate("train.epochs", "many"), ["epochs", "many"]),
    ("out of range in train", mutate("train.dropout", 1.5), ["dropout", "1.5"]),
    ("bad categorical value in train", mutate("train.norm", "weird"), ["norm", "weird"]),
    ("unknown hyperparameter in space", mutate("search.space.widthh", {"type": "int", "low": 1, "high": 2}),
     ["search.space.widthh"]),
    ("param both fixed and searched", mutate("train.lr", 0.1), ["search.space.lr", "train.lr"]),
    ("inverted range", mutate("search.space.lr", {"type": "float", "low": 1.0, "high": 0.1}),
     ["search.space.lr", "inverted", "swap"]),
    ("empty range", mutate("search.space.n_blocks", {"type": "int", "low": 2, "high": 2}),
     ["search.space.n_blocks", "empty range"]),
    ("log with nonpositive low", mutate("search.space.lr", {"type": "float", "low": 0.0, "high": 1.0, "log": True}),
     ["search.space.lr", "log", "low > 0"]),
    ("missing param type", mutate("search.space.lr", {"low": 0.1, "high": 1.0}), ["search.space.lr", "type"]),
    ("unknown param type", mutate("search.space.lr", {"type": "gaussian", "low": 0.1, "high": 1.0}),
     ["search.space.lr", "float, int, categorical"]),
    ("empty categorical", mutate("search.space.optimizer", {"type": "categorical", "values": []}),
     ["search.space.optimizer", "values"]),
    ("categorical value the family rejects", mutate("search.space.norm",
                                                    {"type": "categorical", "values": ["batch", "weird"]}),
     ["search.space.norm", "weird"]),
    ("when cycle", mutate("search.space.optimizer.when", {"momentum": 0.9}), ["cycle"]),
    ("range the family rejects", mutate("search.space.n_blocks", {"type": "int", "low": 0, "high": 3}),
     ["search.space.n_blocks", "n_blocks"]),
    ("when names unknown param", mutate("search.space.momentum.when", {"optimiser": "sgd"}),
     ["search.space.momentum.when", "optimiser"]),
    ("when value not a choice", mutate("search.space.momentum.when", {"optimizer": "lion"}),
     ["momentum.when", "lion"]),
    ("unknown sampler", mutate("search.sampler", "bohb"), ["search.sampler", "bohb"]),
    ("zero samples", mutate("search.num_samples", 0), ["search.num_samples"]),
    ("grid with float range", mutate("search.sampler", "grid"), ["search.space.lr", "grid"]),
    ("sampler without a space", mutate("search.space", {}), ["search.space", "'tpe'", "sampler: grid"]),
    ("variants without grid", mutate("search.variants", [{"name": "a", "lr": 0.1}]), ["variants", "grid"]),
    ("metric the family does not report", mutate("metric", "nmi"), ["metric", "nmi", "test_accuracy"]),
    ("bad mode", mutate("mode", "maximise"), ["mode", "maximise"]),
    ("unknown scheduler", mutate("scheduler.type", "pbt"), ["scheduler.type", "pbt"]),
    ("grace period above max_t", mutate("scheduler", {"type": "asha", "max_t": 2, "grace_period": 5}),
     ["grace_period", "max_t"]),
    ("reduction factor 1", mutate("scheduler.reduction_factor", 1), ["scheduler.reduction_factor"]),
    ("negative cpu", mutate("resources.cpu", -1), ["resources.cpu"]),
    ("repeats with ASHA", mutate("repeats", 3), ["repeats", "ASHA", "type: none"]),
    ("zero repeats", mutate("repeats", 0), ["repeats"]),
    ("bad checkpoint every", mutate("checkpoint.every", 0), ["checkpoint.every"]),
    ("bad name", mutate("name", "my sweep/1"), ["name"]),
]


@pytest.mark.parametrize("desc,raw,fragments", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_message_names_the_field(desc, raw, fragments):
    with pytest.raises(SpecError) as err:
        validate_spec(raw, source="job.yaml")
    msg = str(err.value)
    assert msg.startswith("job.yaml: "), msg
    for frag in fragments:
        assert frag in msg, f"{desc}: {frag!r} not in {msg!r}"
    assert "Traceback" not in msg


def test_good_spec_loads_with_defaults():
    spec = validate_spec(copy.deepcopy(BASE))
    assert spec.resolved_mode() == "max"
    assert spec.max_iterations() == 3  # the family's epochs
    assert spec.total_trials() == 4
    assert spec.family().name == "cnn_classifier"


def test_overrides_and_file_loading(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(BASE))
    spec = load_spec(job, ["search.num_samples=7", "train.epochs=2", "search.space.lr.high=0.5",
                           "data.options={}"])
    assert spec.search.num_samples == 7 and spec.train["epochs"] == 2
    assert spec.search.space["lr"].high == 0.5
    with pytest.raises(SpecError, match="train.epochs"):
        load_spec(job, ["train.epochs=zero"])
    with pytest.raises(SpecError, match="dotted.field=value"):
        load_spec(job, ["train.epochs"])
    with pytest.raises(SpecError, match="not a mapping"):
        load_spec(job, ["metric.x=1"])


def test_malformed_yaml_names_line(tmp_path):
    job = tmp_path / "bad.yaml"
    job.write_text("trainable: cnn_classifier\ndata: {name: digits\nmetric: x\n")
    with pytest.raises(SpecError, match=r"bad.yaml: malformed YAML at line \d+"):
        load_spec(job)
    job.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(job)
    with pytest.raises(SpecError, match="no such job file"):
        load_spec(tmp_path / "missing.yaml")


def test_yaml_is_never_evaluated(tmp_path):
    job = tmp_path / "evil.yaml"
    job.write_text("trainable: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SpecError, match="malformed YAML"):
        load_spec(job)
    assert not (tmp_path / "pwned").exists()


def test_grid_points_respect_conditions_and_variants():
    raw = mutate("search", {
        "sampler": "grid",
        "space": {
            "optimizer": {"type": "categorical", "values": ["adam", "sgd"]},
            "momentum": {"type": "categorical", "values": [0.5, 0.9], "when": {"optimizer": "sgd"}},
            "n_blocks": {"type": "int", "low": 1, "high": 3, "step": 2},
        },
        "variants": [{"name": "narrow", "filters": 8}, {"name": "wide", "filters": 32}],
    })
    spec = validate_spec(raw)
    points = spec.search.grid_points()
    # (adam + sgd×2 momenta) × 2 block counts × 2 variants
    assert len(points) == 3 * 2 * 2
    assert all("momentum" not in p for p in points if p["optimizer"] == "adam")
    assert {p["variant"] for p in points} == {"narrow", "wide"}
    assert {p["filters"] for p in points if p["variant"] == "wide"} == {32}
    spec = validate_spec({**raw, "repeats": 3, "scheduler": {"type": "none"}})
    assert spec.total_trials() == 12 * 3


@pytest.mark.parametrize("job", sorted(p.name for p in (REPO / "tune_jobs").glob("*.yaml")))
def test_shipped_jobs_validate(job):
    # the data roots of the real-data jobs need not exist here: check everything else
    spec = load_spec(REPO / "tune_jobs" / job, check_data=False)
    assert spec.total_trials() >= 1
    # what the runner builds from it before Ray starts: the searcher and the scheduler
    _, n_trials = build_search(spec)
    assert n_trials == spec.total_trials()
    build_scheduler(spec)


def test_cli_validate_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(BASE))
    assert main(["validate", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate("search.space.lr.low", 5.0)))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sweeplab: error:") and "search.space.lr" in err


def test_cli_is_a_console_script_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainable: nope\ndata: {name: digits}\nmetric: x\n")
    out = subprocess.run([sys.executable, "-m", "sweeplab.cli", "validate", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "unknown trainable 'nope'" in out.stderr
    assert "Traceback" not in out.stderr


def _imports_after(argv: list[str]) -> set[str]:
    """Top-level modules the CLI has imported after running ``argv`` in a fresh interpreter."""
    code = ("import sys\nfrom sweeplab.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
            "    pass\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    return set(out.stdout.split())


def test_help_imports_no_torch_and_validate_no_ray():
    assert {"torch", "ray", "torchvision", "sklearn", "pandas"}.isdisjoint(_imports_after(["--help"]))
    validated = _imports_after(["validate", str(REPO / "tune_jobs" / "quickstart.yaml")])
    assert "sweeplab" in validated and {"ray", "torchvision", "optuna"}.isdisjoint(validated)


def test_an_objective_without_a_natural_direction_needs_a_mode():
    with pytest.raises(SpecError, match="metric: 'current_lr'.*set mode|mode: min or mode: max"):
        validate_spec({**BASE, "metric": "current_lr"})
    assert validate_spec({**BASE, "metric": "current_lr", "mode": "min"}).resolved_mode() == "min"
    assert validate_spec(BASE).resolved_mode() == "max"  # val_accuracy's declared mode


def test_amp_is_refused_where_a_family_has_no_mixed_precision_path():
    var = {"trainable": "variational_mnist", "data": {"name": "digits"}, "metric": "test_nmi",
           "train": {"steps": 10, "steps_per_iteration": 5}}
    with pytest.raises(SpecError, match="train.amp: variational_mnist has no mixed-precision path"):
        validate_spec({**var, "train": {**var["train"], "amp": True}})
    searched = {**var, "search": {"sampler": "grid", "space": {"amp": {"type": "categorical", "values": [False, True]}}}}
    with pytest.raises(SpecError, match="mixed-precision"):
        validate_spec(searched)
    validate_spec(var)
    validate_spec({**BASE, "train": {**BASE["train"], "amp": True}})  # the CNN has one


def test_a_job_written_before_the_metric_convention_still_loads(caplog):
    old = {"trainable": "vae", "data": {"name": "digits"}, "metric": "ks_eval", "train": {"epochs": 1}}
    spec = validate_spec(old, source="old_sweep/sweeplab_job.yaml")
    assert spec.metric == "test_ks_eval" and spec.resolved_mode() == "min"
    assert "now named 'test_ks_eval'" in caplog.text
