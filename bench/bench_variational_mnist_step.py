"""The conjugated mixture model's training step, old against new, interleaved (issue 18, item 3).

One process, for each ``--threads`` value: ``--pairs`` rounds of (old step, new step, plain
matmul), each timed on its own, after ``--warmup`` untimed rounds. A step is what the family does
per batch: draw 512 images with replacement, the loss, ``backward``, fused Adam. The old step is
the reference kept in ``tests/test_variational_mnist_step.py`` (the step before the
restructuring; it computes ``log h(x)`` itself, as the family did), the new one
``ConjugatedMixture.loss`` with ``log h(x)`` precomputed (as the family now does); each has its
own copy of the model, initialised alike, and both see the same batches. The matmul is the
step's biggest shape, ``[B, D] @ [D, (K-1)·L]``, for the machine's rate at that moment.

Prints per thread count: the median and min–max of the per-round ratios old/new (target ≥ 1.5),
median ms per step, GFLOP per step (``torch.profiler``'s count of the matmuls; the old step's
count is the work of the mathematics, so "useful GFLOP/s" divides it by each step's time), the
matmul's GFLOP/s and each step's fraction of it, the load average before and after, and how many
new steps fit in ``--minutes``. ``--profile`` also prints the profiler's top ops of both steps;
``--compile`` adds a third side in the same rounds, the new step with ``torch.compile`` on its
elementwise parts (:class:`Compiled`; compilation falls in the warm-up rounds).

    flock /tmp/sweeplab-cpu.lock python bench/bench_variational_mnist_step.py --root /work/data
    python bench/bench_variational_mnist_step.py --random --pairs 5     # no MNIST needed
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from sweeplab.families.variational_mnist import quantise
from sweeplab.models.exponential_family import binomial_log_base_measure
from sweeplab.models.variational_mnist import ConjugatedMixture

TARGET = 1.5
_TEST = Path(__file__).resolve().parents[1] / "tests" / "test_variational_mnist_step.py"


class Compiled:
    """``--compile``: ``torch.compile`` (inductor, CPU) on the new step's two elementwise-heavy
    parts, swapped in around each compiled step only: ψ's ``n Σ softplus(η)`` (one call per
    cluster group, so dynamic shapes) and the posterior's ``σ(u)``, ``Σ softplus(u)`` pass. The
    sampled ``y`` compares uniforms with ``σ(u)``, so last-bit differences of the compiled
    kernels may flip a draw: a speed experiment, not the family's step."""

    def __init__(self) -> None:
        import torch.nn.functional as F

        import sweeplab.models.binomial_mixture as bm
        import sweeplab.models.conjugated_step as cs

        self.bm, self.cs = bm, cs
        self.plain = (bm.binomial_log_partition, cs.posterior_values)
        psi = torch.compile(lambda eta, n: n * F.softplus(eta).sum(-1), dynamic=True)

        @torch.compile(dynamic=False)
        def fused(xw0, xwk, a):
            xw = torch.cat([xw0[:, None], xw0[:, None] + xwk], 1)
            u = xw + a
            return xw, u, torch.sigmoid(u), F.softplus(u).sum(-1)

        def values(xw0, xwk, a):
            if xwk is None:
                return self.plain[1](xw0, xwk, a)
            with torch.no_grad():
                xw, u, sig, sp = fused(xw0.detach(), xwk.detach(), a.detach())
            return {"xw": xw, "u": u, "s": sig, "sp_sum": sp}

        self.compiled = (psi, values)

    def use(self, on: bool) -> None:
        """Swap the compiled parts in (``on``) or restore the plain ones."""
        self.bm.binomial_log_partition, self.cs.posterior_values = self.compiled if on else self.plain


def reference_loss():
    """The old step's loss, imported from the test that keeps it."""
    spec = importlib.util.spec_from_file_location("_vm_step_reference", _TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_loss


def load_counts(args: argparse.Namespace) -> torch.Tensor:
    """``[N, 784]`` uint8 Binomial counts of MNIST's training images (or random images)."""
    if args.random:
        images = np.random.default_rng(0).integers(0, 256, (60000, 1, 28, 28), dtype=np.uint8)
    else:
        from sweeplab.datasets.base import load_dataset
        images = load_dataset("mnist", args.root).x_train
    return torch.from_numpy(quantise(images, 16))


class Stepper:
    """One model, its fused Adam and a step function (``old``: the reference loss, ``new``: the
    model's), drawing batches from the same index stream as its twin."""

    def __init__(self, model: ConjugatedMixture, counts: torch.Tensor, kind: str, args, ref) -> None:
        self.model, self.counts, self.kind, self.args, self.ref = model, counts, kind, args, ref
        self.opt = torch.optim.Adam(model.parameters(), lr=1.5e-3, fused=True)
        self.log_h = torch.cat([binomial_log_base_measure(c, 16) for c in counts.split(8192)])
        self.gen = torch.Generator().manual_seed(1)

    def step(self, idx: torch.Tensor) -> None:
        """One training step on the images ``idx``."""
        x = self.counts[idx].float()
        kw = dict(beta=0.5, n_samples=self.args.samples, prior_samples=1024, generator=self.gen)
        if self.kind == "old":
            loss, _ = self.ref(self.model, x, **kw)
        else:
            loss, _ = self.model.loss(x, log_h=self.log_h[idx], **kw)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def profiled(stepper: Stepper, idx: torch.Tensor, top: int) -> tuple[float, str]:
    """GFLOP of one step (the profiler's matmul count) and the table of its ``top`` ops."""
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        stepper.step(idx)
    events = prof.key_averages()
    gflop = sum(e.flops for e in events) / 1e9
    return gflop, events.table(sort_by="self_cpu_time_total", row_limit=top)


def timed(fn) -> float:
    """Seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(threads: int, old: Stepper, new: Stepper, args) -> None:
    """Interleave old, new and the matmul ``args.pairs`` times at ``threads`` and print."""
    torch.set_num_threads(threads)
    B, D = args.batch, old.counts.shape[1]
    a, w = torch.randn(B, D), torch.randn(D, (args.clusters - 1) * args.latent)
    mm_gflop = 2 * B * D * w.shape[1] / 1e9
    draw = torch.Generator().manual_seed(threads)
    batches = [torch.randint(len(old.counts), (B,), generator=draw) for _ in range(args.warmup + args.pairs)]
    load0 = os.getloadavg()
    t_old, t_new, t_mm, t_comp = [], [], [], []
    for i, idx in enumerate(batches):
        to, tn, tm = timed(lambda: old.step(idx)), timed(lambda: new.step(idx)), timed(lambda: a @ w)
        if args.compiled is not None:  # compiled after plain, restored at once
            args.compiled.use(True)
            tc = timed(lambda: args.comp_stepper.step(idx))
            args.compiled.use(False)
        if i >= args.warmup:
            t_old.append(to), t_new.append(tn), t_mm.append(tm)
            if args.compiled is not None:
                t_comp.append(tc)
    load1 = os.getloadavg()
    g_old, table_old = profiled(old, batches[0], args.top)
    g_new, table_new = profiled(new, batches[0], args.top)
    ratios = sorted(o / n for o, n in zip(t_old, t_new))
    q1, q3 = np.percentile(ratios, [25, 75])
    mo, mn, mm = (statistics.median(t) for t in (t_old, t_new, t_mm))
    rate = mm_gflop / mm
    verdict = "meets" if statistics.median(ratios) >= TARGET else "misses"
    print(f"threads={threads} L={args.latent} K={args.clusters} B={B} S={args.samples} "
          f"({'random' if args.random else 'MNIST'}), {args.pairs} interleaved rounds; "
          f"load {load0[0]:.2f} -> {load1[0]:.2f}")
    print(f"  speed-up old/new: median {statistics.median(ratios):.2f}x (IQR {q1:.2f}-{q3:.2f}, "
          f"min-max {ratios[0]:.2f}-{ratios[-1]:.2f}); target >= {TARGET}x: {verdict}")
    print(f"  old step {1000 * mo:.1f} ms (min {1000 * min(t_old):.1f}), new step {1000 * mn:.1f} ms "
          f"(min {1000 * min(t_new):.1f}); matmul {B}x{D}x{w.shape[1]} {1000 * mm:.1f} ms = {rate:.0f} GFLOP/s")
    print(f"  GFLOP a step: old {g_old:.2f}, new {g_new:.2f}; useful GFLOP/s (old's count / time): "
          f"old {g_old / mo:.0f} ({100 * g_old / mo / rate:.0f} % of the matmul rate), "
          f"new {g_old / mn:.0f} ({100 * g_old / mn / rate:.0f} %; target ~60 %)")
    if t_comp:
        rc = sorted(n / c for n, c in zip(t_new, t_comp))
        print(f"  --compile: new step compiled {1000 * statistics.median(t_comp):.1f} ms; speed-up new/compiled "
              f"median {statistics.median(rc):.3f}x (min-max {rc[0]:.3f}-{rc[-1]:.3f}); old/compiled "
              f"{statistics.median(sorted(o / c for o, c in zip(t_old, t_comp))):.2f}x")
    print(f"  {args.minutes:g} min of one trial = {int(60 * args.minutes / mn):,} new steps "
          f"({int(60 * args.minutes / mo):,} old) at {threads} thread(s)", flush=True)
    if args.profile:
        print(f"  -- old step, top ops at {threads} thread(s) --\n{table_old}\n"
              f"  -- new step, top ops --\n{table_new}", flush=True)


def main() -> None:
    """Parse the arguments; run every thread count."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="/work/data")
    ap.add_argument("--random", action="store_true", help="random images of MNIST's shape")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pairs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--latent", type=int, default=128)
    ap.add_argument("--clusters", type=int, default=30)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=40.0)
    ap.add_argument("--profile", action="store_true", help="print the profiler's top ops of both steps")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--compile", action="store_true",
                    help="also time the new step with torch.compile on its elementwise parts (class Compiled)")
    args = ap.parse_args()
    counts = load_counts(args)
    model = ConjugatedMixture(counts.shape[1], args.latent, args.clusters)
    model.reset_parameters(counts.float().mean(0) / 16, generator=torch.Generator().manual_seed(0))
    ref = reference_loss()
    old = Stepper(model, counts, "old", args, ref)
    new = Stepper(copy.deepcopy(model), counts, "new", args, ref)
    args.compiled = Compiled() if args.compile else None
    args.comp_stepper = Stepper(copy.deepcopy(model), counts, "new", args, ref) if args.compile else None
    for threads in args.threads:
        run(threads, old, new, args)


if __name__ == "__main__":
    main()
