"""The ``hopfield`` family and model: MATLAB newhop's construction checked against a literal
transcription of newhop.m with SciPy's expm, stored patterns as fixed points, an energy that never
increases under the newhop update, the report's Q1 answers, the Hebbian 2-cycle, and the family's
running metrics on the Q1 patterns and on scikit-learn's digits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from sweeplab.datasets.base import DatasetError, load_dataset
from sweeplab.kit.loop import build_family

#: the tests run on the CPU whatever the machine has (build_family defaults to CUDA where there is one)
CPU = torch.device("cpu")
from sweeplab.models.hopfield import (HopfieldNetwork, attractor_table, hebbian_weights, newhop_weights,
                                      noisy_probes, random_starts, symmetric_starts)


def matlab_newhop(t: np.ndarray, h: float = 0.15, tau: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's newhop (solvehop2) transcribed line by line: patterns as the columns of ``t``."""
    s, q = t.shape
    y = t[:, :q - 1] - t[:, [q - 1]]
    u, sv, _ = np.linalg.svd(y)
    k = int(np.linalg.matrix_rank(y))
    tp = sum((np.outer(u[:, i], u[:, i]) for i in range(k)), np.zeros((s, s)))
    tm = sum((np.outer(u[:, i], u[:, i]) for i in range(k, s)), np.zeros((s, s)))
    t_tau = tp - tau * tm
    i_tau = t[:, q - 1] - t_tau @ t[:, q - 1]
    c1, c2 = math.exp(h) - 1, -(math.exp(-tau * h) - 1) / tau
    w = scipy.linalg.expm(h * t_tau)
    d = np.diag([c1] * k + [c2] * (s - k))
    return w, u @ d @ u.T @ i_tau


def random_patterns(q: int, n: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.where(np.random.default_rng(seed).random((q, n)) < 0.5, -1.0, 1.0))


@pytest.mark.parametrize("q,n", [(3, 2), (3, 3), (4, 12), (7, 30), (2, 5)])
def test_newhop_equals_matlabs_construction_with_scipy_expm(q, n):
    pats = random_patterns(q, n, seed=q * 100 + n)
    w, b = newhop_weights(pats)
    w_ref, b_ref = matlab_newhop(pats.numpy().T)
    np.testing.assert_allclose(w.numpy(), w_ref, atol=1e-12)
    np.testing.assert_allclose(b.numpy(), b_ref, atol=1e-12)
    assert torch.allclose(w, w.T) and bool((torch.linalg.eigvalsh(w) > 0).all())


def test_newhop_q1_is_the_specs_diagonal_network():
    w, b = newhop_weights(torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]))
    assert torch.allclose(w, math.exp(0.15) * torch.eye(2, dtype=torch.float64), atol=1e-14)
    assert float(b.abs().max()) < 1e-14 and abs(math.exp(0.15) - 1.1618) < 1e-4


@pytest.mark.parametrize("q,n", [(1, 6), (3, 3), (5, 20), (10, 64)])
def test_newhop_stores_every_pattern_as_a_fixed_point(q, n):
    pats = random_patterns(q, n, seed=q + n)
    net = HopfieldNetwork(pats, "newhop")
    out = net.run(pats, max_steps=5)
    assert bool(out.converged.all()) and out.steps.tolist() == [0] * q
    assert torch.equal(net.match(out.final), torch.arange(q))
    assert torch.allclose(out.final, pats, atol=1e-12)


def test_newhop_energy_never_increases_from_random_or_noisy_starts():
    pats = random_patterns(6, 40, seed=1)
    net = HopfieldNetwork(pats, "newhop")
    gen = torch.Generator().manual_seed(0)
    noisy, _ = noisy_probes(pats, 30, 2.0, "gaussian", gen)
    for starts in (random_starts(300, 40, gen), noisy):
        out = net.run(starts, max_steps=60, keep_energies=True)
        e = out.energies[1:]  # from the first state inside [-1, 1]^N
        assert float((e[1:] - e[:-1]).max()) <= 1e-9 * float(e.abs().max())
        assert not bool(out.energy_rose.any())
        assert float((out.energies[-1] - out.energies[1]).max()) < 0  # and it does fall


def test_hebbian_stores_orthogonal_patterns_and_can_cycle():
    hadamard = torch.from_numpy(scipy.linalg.hadamard(8).astype(np.float64))[:4]
    net = HopfieldNetwork(hadamard, "hebbian")
    w, b = hebbian_weights(hadamard)
    assert torch.allclose(w, (hadamard.T @ hadamard / 8).fill_diagonal_(0)) and float(b.abs().max()) == 0
    out = net.run(hadamard, max_steps=5)
    assert out.steps.tolist() == [0] * 4 and bool(out.converged.all())
    # W = [[0, .5], [.5, 0]]: [1, -1] and [-1, 1] swap for ever under synchronous updates
    pair = HopfieldNetwork(torch.tensor([[1.0, 1.0]]), "hebbian")
    cyc = pair.run(torch.tensor([[1.0, -1.0]]), max_steps=7)
    assert not bool(cyc.converged[0]) and int(cyc.steps[0]) == 7 and cyc.final.tolist() == [[-1.0, 1.0]]
    # Hebbian W is not positive semi-definite: a synchronous sign update can raise the classic energy
    pats = torch.tensor([[-1.0, -1, 1, -1, -1, 1], [-1, 1, 1, -1, -1, -1], [1, -1, 1, -1, -1, -1]])
    net = HopfieldNetwork(pats, "hebbian")
    start = torch.tensor([[-1.0, -1, -1, -1, 1, 1]], dtype=torch.float64)
    out = net.run(start, max_steps=20, keep_energies=True)
    classic = [float(-0.5 * x @ net.weights @ x) for x in (start[0], net.step(start)[0])]
    assert classic[1] > classic[0] and float(out.energies[1, 0]) == pytest.approx(classic[1])
    assert bool(out.energy_rose[0])


def test_q1_attractors_iterations_and_the_spurious_corner():
    net = HopfieldNetwork(torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]), "newhop")
    # x_k = clip(e^{0.15 k} x_0): |0.5| saturates after ceil(ln 2 / 0.15) = 5 updates
    assert net.run(torch.tensor([[0.5, -0.9]])).steps.tolist() == [5]
    table = attractor_table(net, symmetric_starts(2))
    kinds = {tuple(r["state"]): r["kind"] for r in table}
    assert len(table) == 9 and all(r["mean_steps"] == 0 for r in table)  # all nine points are fixed
    assert kinds[(-1.0, 1.0)] == "spurious corner" and kinds[(0.0, 0.0)] == "spurious non-corner"
    assert sorted(k for k, v in kinds.items() if v == "target") == [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0)]
    starts = random_starts(4000, 2, torch.Generator().manual_seed(0))
    steps = net.run(starts, max_steps=200).steps.double()
    expected = torch.ceil(torch.log(1 / starts.abs().min(-1).values) / 0.15).clamp_min(0)
    assert torch.equal(steps, expected) and 9.5 < float(steps.mean()) < 11.5  # spec: 10.6, report: 10.0


def family(config: dict, dataset: str, **options):
    data = load_dataset(dataset, options=options)
    return build_family("hopfield", config, data, device=CPU)


def test_family_on_q1_symmetric_starts_finds_six_spurious_fixed_points():
    fam = family({"starts": "symmetric", "probe_batches": 2}, "hopfield_patterns", patterns="q1")
    first = fam.train_iteration(0)
    second = fam.train_iteration(1)
    assert first == {**second, "probes_seen": 9.0}
    assert second["test_attractors"] == 9 and second["test_spurious_attractors"] == 6
    assert second["test_target_fraction"] == pytest.approx(3 / 9) and second["test_iterations"] == 0
    assert second["test_unconverged_fraction"] == 0 and second["test_energy_rise_fraction"] == 0
    assert second["probes_seen"] == 18 and fam.extra_results() == {"num_neurons": 2.0, "num_patterns": 3.0}


def test_family_retrieves_digit_prototypes_and_noise_hurts_newhop_but_hebbian_fails():
    clean = family({"noise_level": 0.0, "probes_per_pattern": 2}, "digits").train_iteration(0)
    assert clean["test_retrieval_accuracy"] == 1.0 and clean["test_iterations"] == 0
    assert clean["test_spurious_attractors"] == 0 and clean["test_attractors"] == 10
    accs = [family({"noise_level": s, "probes_per_pattern": 30}, "digits").train_iteration(0)["test_retrieval_accuracy"]
            for s in (1.0, 4.0, 10.0)]
    assert accs[0] > accs[1] > accs[2] and accs[0] > 0.95
    hebb = family({"rule": "hebbian", "noise_level": 0.0, "probes_per_pattern": 1}, "digits").train_iteration(0)
    assert hebb["test_retrieval_accuracy"] < 1.0  # correlated digits are not Hebbian fixed points


def test_prototypes_are_each_class_first_training_sample_binarised():
    from sweeplab.families.hopfield import stored_patterns

    data = load_dataset("digits")
    fam = build_family("hopfield", {}, data, device=CPU)
    for c in (0, 7):
        first = data.x_train[np.flatnonzero(data.y_train == c)[0]].reshape(-1) / 255.0
        assert fam.net.patterns[c].tolist() == np.where(first > 0.5, 1.0, -1.0).tolist()
    mean = stored_patterns(data, fam.Config(prototype="mean"))
    assert mean.shape == (10, 64) and not np.array_equal(mean, fam.net.patterns.numpy())


def test_bad_patterns_and_starts_are_refused_with_the_field_named():
    with pytest.raises(DatasetError, match="data.options.patterns"):
        load_dataset("hopfield_patterns", options={"patterns": [[1, 0], [1, 1]]})
    with pytest.raises(DatasetError, match="q1, q2"):
        load_dataset("hopfield_patterns", options={"patterns": "q9"})
    with pytest.raises(ValueError, match="starts: symmetric"):
        family({"starts": "symmetric"}, "digits")
    from sweeplab.families.hopfield import HopfieldFamily

    with pytest.raises(ValueError, match="noise_level"):
        HopfieldFamily.Config(noise="flip", noise_level=2.0)
