"""Failures found by trying sweeplab as a new user would (issue 17), each reproduced the way a
user meets it: the command line on real files (job files, ``--set`` overrides, data roots,
storage paths, sweep names) and the documentation's examples. Bad input must end in one
``sweeplab: error:`` line naming what is wrong, exit status 2, never a traceback.

(Failures around a run: unreachable storage or cluster, a sweep with errored trials and its exit
status, a pipe closed by its reader, Ctrl-C, are in test_new_user_failures_runs.py.)
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from new_user_cli import GOOD, ROOT, _cli, _error_lines, _job, _refuse_ray


# -- job files ----------------------------------------------------------------------------------
NOT_TEXT = {
    "latin1": yaml.safe_dump(GOOD).encode() + "# réglages de Cécile\n".encode("latin-1"),
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00",
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("kind", sorted(NOT_TEXT))
def test_a_job_file_that_is_not_utf8_text_is_one_line(kind, command, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sweeplab.runner.cluster.init_ray", _refuse_ray)
    job = tmp_path / f"job.{kind}"
    job.write_bytes(NOT_TEXT[kind])
    extra = ["--storage-path", tmp_path / "sweeps"] if command == "run" else []
    code, _, err = _cli([command, job, *extra], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert str(job) in line and "not UTF-8" in line, line
    assert not (tmp_path / "sweeps").exists()


def test_a_utf8_job_file_with_a_byte_order_mark_reads(tmp_path, capsys):
    job = tmp_path / "bom.yaml"
    job.write_bytes("\ufeff".encode() + yaml.safe_dump(GOOD).encode())
    code, out, err = _cli(["validate", job], capsys)
    assert code == 0, err
    assert "OK" in out


def test_a_folder_given_as_job_file_says_so(tmp_path, capsys):
    code, _, err = _cli(["validate", tmp_path], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert str(tmp_path) in line and "folder, not a job file" in line, line


@pytest.mark.parametrize("item", ["train..epochs=3", "train.=3", ".epochs=3"])
def test_an_override_with_an_empty_part_is_refused(item, tmp_path, capsys):
    code, _, err = _cli(["validate", _job(tmp_path), "--set", item], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert item in line and "empty part" in line, line


def test_override_spaces_around_dots_are_ignored(tmp_path, capsys):
    code, out, err = _cli(["validate", _job(tmp_path), "--set", "train. epochs =1"], capsys)
    assert code == 0, err
    assert "max_t=1" in out  # ASHA's max_t is the one epoch


def test_a_list_override_without_brackets_says_how_to_write_a_list(tmp_path, capsys):
    code, _, err = _cli(["validate", _job(tmp_path), "--set", "search.space.norm.values=none,batch"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "search.space.norm.values: Input should be a valid list" in line and "[a, b]" in line, line


def test_override_errors_are_each_reported_under_their_own_field(tmp_path, capsys):
    job = _job(tmp_path)
    code, _, err = _cli(["validate", job, "--set", "train.epochs=abc",
                         "--set", "search.space.norm.values=[none,bogus]"], capsys)
    assert code == 2
    lines = _error_lines(err)
    epochs = [x for x in lines if "train.epochs:" in x]
    norm = [x for x in lines if "search.space.norm:" in x]
    assert len(lines) == 2 and len(epochs) == 1 and len(norm) == 1, lines
    assert "'abc'" in epochs[0] and "bogus" not in epochs[0]
    assert "'bogus'" in norm[0] and "abc" not in norm[0] and "epochs" not in norm[0]


def test_a_bad_variant_is_reported_apart_from_a_bad_fixed_value(tmp_path, capsys):
    raw = copy.deepcopy(GOOD)
    raw["train"]["epochs"] = "abc"
    raw["search"] = {"sampler": "grid", "space": {"norm": {"type": "categorical", "values": ["none", "batch"]}},
                     "variants": [{"name": "wide", "filters": 16}, {"name": "broken", "filters": -1}]}
    code, _, err = _cli(["validate", _job(tmp_path, raw)], capsys)
    assert code == 2
    lines = _error_lines(err)
    assert len(lines) == 2, lines
    assert "train.epochs:" in lines[0] and "'abc'" in lines[0] and "filters" not in lines[0]
    assert "search.variants[1] (broken): filters:" in lines[1] and "epochs" not in lines[1]


def test_a_key_given_twice_is_refused_not_silently_dropped(tmp_path, capsys):
    """PyYAML keeps the last of two ``train:`` blocks: the first block's values would vanish."""
    job = tmp_path / "twice.yaml"
    job.write_text(yaml.safe_dump(GOOD) + "train:\n  epochs: 3\n")
    first = yaml.safe_dump(GOOD).splitlines().index("train:") + 1
    code, _, err = _cli(["validate", job], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert f"duplicate key 'train' (first at line {first})" in line and str(job) in line, line
    from sweeplab.spec.load import read_yaml

    merged = tmp_path / "merged.yaml"  # a YAML merge key, overridden by the mapping's own value, is no duplicate
    merged.write_text("small: &small {batch_size: 64, epochs: 2}\ntrain:\n  <<: *small\n  epochs: 1\n")
    assert read_yaml(merged)["train"] == {"batch_size": 64, "epochs": 1}


def test_a_data_root_that_is_a_file_says_so(tmp_path, capsys):
    root = tmp_path / "mnist.tar.gz"
    root.write_bytes(b"not a folder")
    code, _, err = _cli(["validate", _job(tmp_path), "--set", "data.name=mnist", "--set", f"data.root={root}"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert f"data.root: '{root}' is a file" in line, line


@pytest.mark.parametrize("where", ["through-a-file", "proc"])
def test_a_storage_path_where_no_folder_can_be_made_is_one_line(where, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sweeplab.runner.cluster.init_ray", _refuse_ray)
    if where == "through-a-file":
        (tmp_path / "results.csv").write_text("a,b\n")
        storage, fragment = tmp_path / "results.csv" / "sweeps", f"{tmp_path / 'results.csv'} is a file"
    else:  # no folder can be made in /proc, whoever runs the test (root included)
        storage, fragment = Path("/proc/sweeplab-test"), "cannot create the sweep folder in /proc"
    code, _, err = _cli(["run", _job(tmp_path), "--storage-path", storage], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert line.startswith(f"sweeplab: error: {storage / 'job'}: ") and fragment in line, line
    assert "--storage-path" in line


# -- the documentation's examples ---------------------------------------------------------------
#: A YAML block of docs/job-spec.md that is deliberately not a whole job starts with this line.
PARTIAL = "# partial example"


def _doc_examples() -> list[str]:
    text = (ROOT / "docs" / "job-spec.md").read_text()
    return re.findall(r"^```ya?ml\n(.*?)^```", text, flags=re.M | re.S)


def test_every_job_in_the_job_spec_doc_validates():
    from sweeplab.datasets.base import dataset_names
    from sweeplab.spec import validate_spec

    blocks = _doc_examples()
    whole = [b for b in blocks if not b.lstrip().startswith(PARTIAL)]
    assert len(blocks) >= 2 and whole, "docs/job-spec.md lost its examples"
    for i, block in enumerate(whole):
        raw = yaml.safe_load(block)
        spec = validate_spec(raw, source=f"docs/job-spec.md example {i + 1}", check_data=False)
        assert spec.data.name in dataset_names()  # the data root is the reader's own: not checked



# -- sweep names and paths given as arguments ---------------------------------------------------
def test_table_of_a_job_file_says_it_is_one(tmp_path, capsys):
    job = _job(tmp_path)
    code, _, err = _cli(["table", job, "--storage-path", tmp_path / "sweeps"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert "is a file, not a sweep folder" in line and f"sweeplab run {job}" in line, line


def test_a_job_file_name_with_spaces_gives_a_valid_sweep_name(tmp_path, capsys):
    from sweeplab.spec import load_spec

    job = _job(tmp_path, name="fashion cnn (v2).yaml")
    assert load_spec(job).name == "fashion_cnn_v2_"
    code, out, err = _cli(["validate", job], capsys)
    assert code == 0 and "OK" in out, err


@pytest.mark.parametrize("name", ["runs/lr", ".."])
def test_run_name_that_is_not_one_folder_is_refused_before_anything_runs(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sweeplab.runner.cluster.init_ray", _refuse_ray)
    code, _, err = _cli(["run", _job(tmp_path), "--name", name, "--storage-path", tmp_path / "sweeps"], capsys)
    assert code == 2
    (line,) = _error_lines(err)
    assert f"sweep name {name!r} (--name or name:): one folder name" in line, line
    assert not (tmp_path / "sweeps").exists()
