#!/usr/bin/env bash
# GPU check for the first machine with a GPU (issue 18 item 4): under 8 minutes on one GPU.
#
#   bash bench/gpu_check.sh                    # generated data (nothing to download)
#   bash bench/gpu_check.sh --root /path/data  # real data: FashionMNIST/raw, cifar10 (or cifar-10-batches-py), MNIST/raw
#   bash bench/gpu_check.sh --dry-run          # CPU only: checks the script's own logic, skips the GPU parts
#
# 1. the CNN (cnn_classifier) on Fashion-MNIST as a sweeplab sweep with resources.gpu: 0.25 and 4
#    concurrent trials, nvidia-smi polled meanwhile: the GPU each trial saw (trial pid -> GPU), trials
#    packed per GPU, peak GPU memory of each trial process;
# 2. the CNN, the DERP-VAE (`vae`, lambda_ks > 0) and the conjugated mixture model
#    (`variational_mnist`) for a few hundred steps each through the shared loop (kit.loop.run_trial,
#    whose train_seconds time the iterations), on the GPU with and without amp (families with
#    supports_amp; variational_mnist has no mixed-precision path and refuses amp) and on the CPU:
#    samples/s on each, the speed-up, peak GPU memory (torch.cuda.max_memory_allocated).
# Fails loudly (exit 1, a line starting "gpu_check: FAIL") on anything wrong: a trial not on a GPU,
# trials not packed 4 to a GPU, a run that diverged or reported a non-finite metric, no throughput.
# Exit 2: bad arguments or data. Without a GPU it runs as a dry run: the CPU path of every family
# for a few steps (tiny configs), the job validated, the nvidia-smi parser checked on a canned
# sample, the same table printed with the GPU columns skipped.
# Installs nothing beyond the README's command (`pip install -e .`, only if sweeplab is missing).
set -euo pipefail

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_check: FAIL: $*" >&2; exit 1; }
bad() { echo "gpu_check: error: $*" >&2; exit 2; }

DRY=0; ROOT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --root) [[ $# -ge 2 ]] || bad "--root needs a folder"; ROOT="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) bad "unknown argument '$1' (use --dry-run, --root DIR)" ;;
  esac
done
[[ -z "$ROOT" || -d "$ROOT" ]] || bad "--root '$ROOT' is not a folder; give the folder holding FashionMNIST/raw, MNIST/raw, cifar10"

cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import sweeplab" 2>/dev/null; then
  echo "sweeplab is not installed: running the README's command: pip install -e ."
  "$PY" -m pip install -e . || die "pip install -e . failed"
fi

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [[ "$DRY" == 0 && "$GPUS" == 0 ]]; then
  echo "gpu_check: torch sees no GPU here: running as a DRY RUN (CPU paths only, GPU parts skipped)"
  DRY=1
fi
[[ "$DRY" == 1 ]] && GPUS=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export SWEEPLAB_CACHE_DIR="$WORK/cache"   # the VAE's reference classifier: not in ~/.cache
HELPER="$WORK/gpu_check_helper.py"
cat > "$HELPER" <<'PY'
"""The Python side of bench/gpu_check.sh (written out by it; see its header)."""
import csv, json, math, os, struct, sys, time
from pathlib import Path

import numpy as np

FAMILIES = ("cnn_classifier", "vae", "variational_mnist")
# full-size configs: a few hundred steps on the GPU (CPU runs take an eighth of the data / steps)
FULL = {
    "cnn_classifier": {"epochs": 3, "batch_size": 128, "n_blocks": 4, "filters": 32, "norm": "batch"},
    "vae": {"epochs": 3, "batch_size": 128, "arch": "mlp", "hidden_dim": 256, "latent_dim": 16,
            "lambda_ks": 1.0, "num_probes": 5, "n_samples": 200},
    "variational_mnist": {"steps": 300, "steps_per_iteration": 100, "batch_size": 512, "n_latent": 128,
                          "n_clusters": 30, "mc_samples": 10, "eval_limit": 1000, "r2_samples": 1000},
}
SHAPES = {"cnn_classifier": ("fashion_mnist", (1, 28, 28)), "vae": ("cifar10", (3, 32, 32)),
          "variational_mnist": ("mnist", (1, 28, 28))}


def fail(msg):
    print(f"gpu_check: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def write_idx(folder, prefix, images, labels):
    """IDX files as torchvision's MNIST/FashionMNIST read them from ROOT/<Set>/raw."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


def generated(shape, n, seed, k=10):
    """uint8 images [n, *shape] with a class-dependent mean (learnable) and int64 labels [n]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.uniform(40, 215, size=(k, *shape))
    x = np.clip(centres[y] + rng.normal(0, 40, size=(n, *shape)), 0, 255).astype(np.uint8)
    return x, y.astype(np.int64)


def make_data(root):
    """Fashion-MNIST-shaped IDX files under root/FashionMNIST/raw (12,000 train, 2,000 test)."""
    for prefix, n, seed in (("train", 12000, 0), ("t10k", 2000, 1)):
        x, y = generated((28, 28), n, seed)
        write_idx(Path(root) / "FashionMNIST" / "raw", prefix, x, y)


def bundle(family, root, fraction, tiny):
    """The family's data: real (root) or generated, its train split cut to ``fraction``."""
    from sweeplab.datasets.base import DataBundle, load_dataset

    name, shape = SHAPES[family]
    if tiny:
        x, y = generated(shape, 96, 2, k=3)
        return DataBundle(name, x[:64], y[:64], x[64:], y[64:], num_classes=3)
    if root:
        b = load_dataset(name, root)
        return b.subset(min(1.0, 12000 * fraction / len(b.x_train)), min(1.0, 2000 / len(b.x_test)))
    x, y = generated(shape, int(12000 * fraction) + 2000, 3)
    return DataBundle(name, x[2000:], y[2000:], x[:2000], y[:2000], num_classes=10)


def run_family(family, device, amp, root, tiny):
    """One family through the shared loop with Ray Tune's report captured; prints a JSON line."""
    import torch
    from ray import tune

    from sweeplab.kit.family import get_family
    from sweeplab.kit.loop import run_trial

    fam = get_family(family)
    cpu = device == "cpu"
    config = dict(fam.contract_config) if tiny else dict(FULL[family])
    if cpu and not tiny and family == "variational_mnist":
        config.update(steps=24, steps_per_iteration=8)
    config.update(amp=amp, seed=0, threads=1 if cpu else None)
    data = bundle(family, root, 0.125 if cpu else 1.0, tiny)
    results = []
    tune.report = lambda metrics, checkpoint=None: results.append(dict(metrics))
    tune.get_checkpoint = lambda: None
    if not cpu:
        torch.cuda.reset_peak_memory_stats()
    run_trial(config, data=data, family=family, settings={"cpus": 1})
    cfg = fam.Config.model_validate(config)
    if family == "variational_mnist":
        per_iter = cfg.steps_per_iteration * cfg.batch_size
    else:
        n = len(data.x_train)
        per_iter = n - n % cfg.batch_size if getattr(cfg, "drop_last", False) and n >= cfg.batch_size else n
    seconds = [r["train_seconds"] for r in results]
    timed = seconds[-1] - seconds[0] if len(seconds) > 1 else seconds[0]  # the first iteration warms up
    iters = max(1, len(seconds) - 1)
    print("RUN " + json.dumps({
        "family": family, "amp": amp, "device": results[-1]["device"], "iterations": len(results),
        "diverged": max(r["diverged"] for r in results),
        "nonfinite": sorted(k for r in results for k, v in r.items() if isinstance(v, float) and not math.isfinite(v)),
        "samples_per_s": per_iter * iters / timed if timed > 0 else 0.0,
        "gpu": torch.cuda.get_device_name() if not cpu else "-",
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if not cpu else None}), flush=True)


def parse_smi(path):
    """nvidia-smi --query-compute-apps=timestamp,pid,gpu_uuid,used_memory CSV polls ->
    {pid: (gpu_uuid, peak MiB)} and the most trial processes seen at once on each GPU."""
    by_pid, per_poll = {}, {}
    with open(path) as fh:
        for row in csv.reader(fh):
            if len(row) < 4 or not row[1].strip().isdigit():
                continue
            stamp, pid, gpu, mem = (c.strip() for c in row[:4])
            mib = float(mem.split()[0]) if mem[:1].isdigit() else 0.0
            old = by_pid.get(int(pid), (gpu, 0.0))
            by_pid[int(pid)] = (gpu, max(old[1], mib))
            per_poll.setdefault((stamp, gpu), set()).add(int(pid))
    packed = {}
    for (_, gpu), pids in per_poll.items():
        packed[gpu] = max(packed.get(gpu, 0), len(pids))
    return by_pid, packed


def check_packing(trials, by_pid, packed, want=4):
    """Each trial's GPU (by its result's pid) and the packing; fails on a trial off the GPU or
    fewer than ``want`` trials sharing one GPU. ``trials``: [{trial_id, pid, device}]."""
    for t in trials:
        gpu, mib = by_pid.get(t["pid"], ("none", 0.0))
        print(f"  trial {t['trial_id']}: pid {t['pid']}, device {t['device']}, GPU {gpu}, peak {mib:.0f} MiB")
        if t["device"] != "cuda" or gpu == "none":
            fail(f"trial {t['trial_id']} ran on {t['device']} / GPU {gpu}: resources.gpu 0.25 must put it on a GPU")
    for gpu, n in packed.items():
        print(f"  GPU {gpu}: {n} trial processes at once")
    if max(packed.values(), default=0) < want:
        fail(f"trials were not packed {want} to a GPU (most at once: {max(packed.values(), default=0)})")


def selftest_smi():
    """The parser and the packing check on a canned nvidia-smi sample (dry run)."""
    path = Path(os.environ["WORK"]) / "canned_smi.csv"
    rows = [f"2026/12/01 10:00:0{s}.000, {pid}, GPU-aaaa, {100 * pid} MiB" for s in range(2) for pid in (11, 12, 13, 14)]
    path.write_text("timestamp, pid, gpu_uuid, used_gpu_memory [MiB]\n" + "\n".join(rows) + "\n")
    by_pid, packed = parse_smi(path)
    assert packed == {"GPU-aaaa": 4} and by_pid[14] == ("GPU-aaaa", 1400.0), (packed, by_pid)
    check_packing([{"trial_id": f"t{p}", "pid": p, "device": "cuda"} for p in (11, 12, 13, 14)], by_pid, packed)
    print("nvidia-smi parser self-test: 4 trials packed on 1 GPU: OK")


def sweep_report(sweep_dir, smi_path):
    """The CNN sweep's trials (last result.json line each) against the nvidia-smi polls."""
    trials = []
    for result in sorted(Path(sweep_dir).glob("trial_*/result.json")):
        lines = result.read_text().strip().splitlines()
        if not lines:
            fail(f"{result}: no results: the trial never reported")
        last = json.loads(lines[-1])
        trials.append({"trial_id": last["trial_id"], "pid": int(last["pid"]), "device": last["device"]})
    if len(trials) != 4:
        fail(f"the CNN sweep ran {len(trials)} trials, not 4")
    check_packing(trials, *parse_smi(smi_path))


def table(path, dry):
    """The RUN lines of ``path`` as one table; fails on a diverged, non-finite or idle run."""
    runs = [json.loads(l[4:]) for l in Path(path).read_text().splitlines() if l.startswith("RUN ")]
    cpu = {(r["family"]): r for r in runs if r["device"] == "cpu"}
    print("| family | amp | device | GPU | samples/s | CPU samples/s | GPU / CPU | peak GPU MiB |")
    print("|:--|:--|:--|:--|--:|--:|--:|--:|")
    for r in runs:
        if r["diverged"] or r["nonfinite"] or r["samples_per_s"] <= 0:
            fail(f"{r['family']} amp={r['amp']} on {r['device']}: diverged={r['diverged']}, non-finite "
                 f"{r['nonfinite']}, {r['samples_per_s']:.1f} samples/s")
        if r["device"] == "cpu" and not dry:
            continue
        base = cpu.get(r["family"], {}).get("samples_per_s")
        gpu_col = "skipped (dry run)" if dry else r["gpu"]
        ratio = "-" if dry or not base else f"{r['samples_per_s'] / base:.1f}x"
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        print(f"| {r['family']} | {r['amp']} | {r['device']} | {gpu_col} | {r['samples_per_s']:,.0f} | "
              f"{base or 0:,.0f} | {ratio} | {peak} |")
    missing = set(FAMILIES) - {r["family"] for r in runs}
    if missing:
        fail(f"no run of {sorted(missing)}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make-data":
        make_data(args[0])
    elif cmd == "run":
        for family in args[0].split(","):
            run_family(family, args[1], args[2] == "true", args[3] or None, args[4] == "tiny")
    elif cmd == "supports-amp":
        from sweeplab.kit.family import get_family
        print(" ".join("true" if get_family(f).supports_amp else "false" for f in args))
    elif cmd == "selftest-smi":
        selftest_smi()
    elif cmd == "sweep-report":
        sweep_report(args[0], args[1])
    elif cmd == "table":
        table(args[0], args[1] == "1")
PY
export WORK

DATA="$ROOT"
if [[ -z "$DATA" ]]; then
  DATA="$WORK/data"; "$PY" "$HELPER" make-data "$DATA"
  echo "data: generated Fashion-MNIST-shaped IDX files (12,000 train / 2,000 test) in $DATA"
fi
JOB="$WORK/gpu_cnn.yaml"
cat > "$JOB" <<EOF
name: gpu_check_cnn
trainable: cnn_classifier
data: {name: fashion_mnist, root: $DATA, train_fraction: $([[ -n "$ROOT" ]] && echo 0.2 || echo 1.0)}
train: {epochs: 2, batch_size: 128, n_blocks: 4, filters: 32, norm: batch, threads: 1}
search: {sampler: random, seed: 0, num_samples: 4, max_concurrent: 4, space: {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}}
metric: test_accuracy
scheduler: {type: none}
resources: {cpu: $("$PY" -c "import os; print(max(0.25, min(1, (os.cpu_count() or 1) / 4)))"), gpu: 0.25}
checkpoint: {every: 2, keep: 1}
EOF
sweeplab validate "$JOB" >/dev/null || die "the CNN job with resources.gpu 0.25 does not validate"
echo "job with resources.gpu: 0.25, 4 concurrent trials: validates"

if [[ "$DRY" == 1 ]]; then
  echo "GPU part 1 (CNN sweep, 4 trials at 0.25 GPU, nvidia-smi) SKIPPED: dry run, no GPU"
  "$PY" "$HELPER" selftest-smi
else
  echo "== 1. CNN sweep: 4 trials at resources.gpu 0.25 on $GPUS GPU(s)"
  nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader || die "nvidia-smi does not run"
  nvidia-smi --query-compute-apps=timestamp,pid,gpu_uuid,used_memory --format=csv -lms 500 > "$WORK/smi.csv" &
  SMI=$!
  timeout 300 sweeplab run "$JOB" --storage-path "$WORK/sweeps" --quiet > "$WORK/sweep.log" 2>&1 \
    || { kill "$SMI"; tail -20 "$WORK/sweep.log"; die "the CNN sweep failed (log above)"; }
  kill "$SMI" || true
  "$PY" "$HELPER" sweep-report "$WORK/sweeps/gpu_check_cnn" "$WORK/smi.csv"
fi

echo "== 2. samples/s of each family through the shared loop"
RUNS="$WORK/runs.txt"; : > "$RUNS"
SIZE=full; [[ "$DRY" == 1 ]] && SIZE=tiny
FAMS="cnn_classifier vae variational_mnist"
read -r -a AMPS <<< "$("$PY" "$HELPER" supports-amp $FAMS)"
CUDA_VISIBLE_DEVICES="" "$PY" "$HELPER" run "${FAMS// /,}" cpu false "$ROOT" "$SIZE" | grep '^RUN ' >> "$RUNS" \
  || die "a family failed on the CPU"
i=0
for fam in $FAMS; do
  AMP=${AMPS[$i]}; i=$((i + 1))
  if [[ "$AMP" == false ]]; then echo "$fam: amp refused by the family (no mixed-precision path): float32 only"; fi
  if [[ "$DRY" == 1 ]]; then
    echo "$fam on the GPU (float32$([[ "$AMP" == true ]] && echo ' and amp')) SKIPPED: dry run"
    continue
  fi
  for amp in false $([[ "$AMP" == true ]] && echo true); do
    "$PY" "$HELPER" run "$fam" cuda "$amp" "$ROOT" "$SIZE" | grep '^RUN ' >> "$RUNS" || die "$fam amp=$amp on the GPU failed"
    grep -q "\"family\": \"$fam\", \"amp\": $amp, \"device\": \"cuda\"" "$RUNS" || die "$fam amp=$amp did not run on cuda"
  done
done
if [[ "$DRY" == 1 ]]; then  # the table's own checks must refuse a broken run
  sed -n '1s/"diverged": 0/"diverged": 1/p' "$RUNS" > "$WORK/broken.txt"
  if "$PY" "$HELPER" table "$WORK/broken.txt" 1 > /dev/null 2>&1; then die "the table accepted a diverged run"; fi
  echo "table self-test: a diverged run is refused: OK"
fi
"$PY" "$HELPER" table "$RUNS" "$DRY"
echo "gpu_check: OK$([[ "$DRY" == 1 ]] && echo ' (dry run: GPU parts skipped)')"
