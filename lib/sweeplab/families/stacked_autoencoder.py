"""``stacked_autoencoder``: greedy layer-wise autoencoder pretraining, a softmax classifier on the
frozen encoder, then end-to-end fine-tuning (the course report's §3.1 Q2).

Source: ``../shared/specs/ann_course.md`` §4 (b); model
:class:`sweeplab.models.autoencoder.StackedAutoencoder` (Bengio et al. 2007). Hidden widths
default to the spec's proposal [512, 256] (the report gives only the last width). Inputs are
scaled to [0, 1] and flattened.

**Iterations.** One iteration is one epoch of whichever phase is running, so ASHA's budget means
the same in every trial; the phases run in order and the total is fixed by the config:

1. pretraining, ``pretrain_epochs`` epochs per encoder layer (per-element MSE of the layer's
   autoencoder on the frozen codes below it; a fresh optimizer per layer);
2. ``classifier_epochs`` epochs of a softmax layer on the frozen encoder (cross-entropy);
3. ``finetune_epochs`` epochs of the whole encoder and the softmax layer (cross-entropy, ``lr``
   times ``finetune_lr_factor``).

``pretrain: false`` skips phase 1 (the classifier then sits on a frozen *random* encoder before
fine-tuning): the ablation that answers "what is the benefit of pretraining".

**Reported** after every epoch: ``train_loss`` (the running phase's objective over the epoch's
batches: per-element MSE while pretraining, cross-entropy in nats afterwards; ``phase`` says
which), ``phase`` (0 pretraining, 1 classifier, 2 fine-tuning), ``val_accuracy``/``test_accuracy``
and ``val_loss``/``test_loss`` (cross-entropy) of the current classifier (NaN while pretraining:
there is none yet; an ASHA rung reached during pretraining passes every trial),
``val_accuracy_pre_finetune``/``test_accuracy_pre_finetune`` (after the classifier phase; NaN
before), ``num_params`` (encoder and softmax layer). After the last epoch ``test_accuracy`` is the
accuracy after fine-tuning.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from sweeplab.datasets.base import DataBundle
from sweeplab.families.autoencoder import Activation, check_unit_interval, flat_inputs
from sweeplab.kit.evaluation import EvalConfig
from sweeplab.kit.family import FamilyConfig, ModelFamily, register_family
from sweeplab.kit.optim import OptimizerConfig, build_optimizer, count_params
from sweeplab.kit.tensors import batches, shared_tensor
from sweeplab.metrics.classification import correct_count
from sweeplab.metrics.convention import Metric, per_split
from sweeplab.models.autoencoder import StackedAutoencoder

PHASES = ("pretrain", "classifier", "finetune")


@register_family
class StackedAutoencoderFamily(ModelFamily):
    """Stacked autoencoder classifier; see the module docstring."""

    name: ClassVar[str] = "stacked_autoencoder"

    class Config(OptimizerConfig, EvalConfig, FamilyConfig):
        """Hyperparameters of ``stacked_autoencoder``; defaults are the report's baseline (batch 128,
        10/10/10 epochs) with the spec's widths."""

        hidden_dims: list[Annotated[int, Field(ge=1)]] = Field([512, 256], min_length=1,
                                                               description="encoder widths")
        activation: Activation = Field("relu", description="activation of the encoder layers")
        pretrain: bool = Field(True, description="greedy layer-wise pretraining (false: the ablation)")
        pretrain_epochs: int = Field(10, ge=1, description="pretraining epochs per encoder layer")
        classifier_epochs: int = Field(10, ge=1, description="epochs of the softmax layer on the frozen encoder")
        finetune_epochs: int = Field(10, ge=0, description="epochs of end-to-end fine-tuning")
        finetune_lr_factor: float = Field(1.0, gt=0, description="fine-tuning lr = lr x this")
        batch_size: int = Field(128, ge=1, description="training samples per step, every phase")
        eval_batch_size: int = Field(1000, ge=1, description="samples per evaluation batch")

        def schedule(self) -> list[tuple[str, int]]:
            """``(phase, layer)`` of every iteration (layer -1 outside pretraining)."""
            pre = [("pretrain", l) for l in range(len(self.hidden_dims)) for _ in range(self.pretrain_epochs)]
            return [*(pre if self.pretrain else []), *[("classifier", -1)] * self.classifier_epochs,
                    *[("finetune", -1)] * self.finetune_epochs]

    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("train_loss", "min", "ratio", "the running phase's objective over the epoch: per-element MSE "
                                             "while pretraining, cross-entropy (nats) afterwards"),
        Metric("phase", None, "count", "0 pretraining, 1 softmax on the frozen encoder, 2 fine-tuning"),
        *per_split("accuracy", "max", "fraction", "accuracy of the current classifier (NaN while pretraining)"),
        *per_split("loss", "min", "nats", "cross-entropy of the current classifier (NaN while pretraining)"),
        *per_split("accuracy_pre_finetune", "max", "fraction", "accuracy after the classifier phase, "
                   "before fine-tuning (NaN until then)"),
        Metric("num_params", "min", "count", "encoder and softmax parameters (pretraining decoders excluded)"),
    )
    data_tasks: ClassVar[tuple[str, ...]] = ("classification",)
    contract_config: ClassVar[dict[str, Any]] = {"hidden_dims": [8], "pretrain_epochs": 1, "classifier_epochs": 1,
                                                 "finetune_epochs": 0, "batch_size": 16}

    def __init__(self, config: Config, data: DataBundle, device: torch.device) -> None:
        super().__init__(config, data, device)
        self.check_data(data, config)
        cfg = config
        self.model = StackedAutoencoder(int(np.prod(data.sample_shape)), cfg.hidden_dims, data.num_classes,
                                        cfg.activation).to(device)
        self.plan = cfg.schedule()
        self.phase_key: tuple[str, int] | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.pre_finetune: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}

    @classmethod
    def check_data(cls, data: DataBundle, config: FamilyConfig) -> None:
        """Raise ``ValueError`` for data of another task, float inputs outside [0, 1], an empty split,
        or missing labels."""
        super().check_data(data, config)
        check_unit_interval(cls.name, data)
        if (data.y_train < 0).any():
            raise ValueError(f"{cls.name} trains a classifier: dataset {data.name!r} has unlabelled (-1) samples")

    @classmethod
    def num_iterations_of(cls, config: FamilyConfig) -> int:
        """Pretraining (layers x ``pretrain_epochs``, if ``pretrain``) + classifier + fine-tuning epochs."""
        return len(config.schedule())

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """One epoch of the phase the plan gives ``iteration``."""
        phase, layer = self.plan[iteration]
        self._enter(phase, layer)
        self.model.train()
        x_all, y_all = shared_tensor(self.data.x_train), torch.as_tensor(self.data.y_train)
        total, count = 0.0, 0
        for idx in batches(len(x_all), self.config.batch_size, shuffle=True, generator=self.generator):
            x = flat_inputs(x_all[idx], self.device)
            if phase == "pretrain":
                with torch.no_grad():
                    z = self.model.encode(x, upto=layer)
                loss = F.mse_loss(self.model.reconstruct_layer(z, layer), z)
            elif phase == "classifier":
                with torch.no_grad():
                    z = self.model.encode(x)
                loss = F.cross_entropy(self.model.head(z), y_all[idx].to(self.device))
            else:
                loss = F.cross_entropy(self.model(x), y_all[idx].to(self.device))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        return {"train_loss": total / max(count, 1), "phase": float(PHASES.index(phase))}

    def evaluate(self, iteration: int) -> dict[str, float]:
        """Accuracy and cross-entropy of the current classifier on test (and val), the pre-fine-tuning
        accuracies; NaN where they do not exist yet (module docstring)."""
        phase, _ = self.plan[iteration]
        last_of_phase = iteration + 1 == len(self.plan) or self.plan[iteration + 1][0] != phase
        due = (iteration + 1) % self.config.eval_every == 0 or last_of_phase or not self.last_eval
        splits = [("test", self.data.x_test, self.data.y_test)]
        if self.data.x_val is not None and len(self.data.x_val):
            splits.append(("val", self.data.x_val, self.data.y_val))
        if phase == "pretrain":
            self.last_eval = {f"{s}_{q}": math.nan for s, *_ in splits for q in ("accuracy", "loss")}
        elif due:
            self.last_eval = {}
            for split, x, y in splits:
                acc, ce = self._classify(x, y)
                self.last_eval.update({f"{split}_accuracy": acc, f"{split}_loss": ce})
        if phase == "classifier" and last_of_phase:
            self.pre_finetune = {f"{s}_accuracy_pre_finetune": self.last_eval[f"{s}_accuracy"] for s, *_ in splits}
        pre = self.pre_finetune or {f"{s}_accuracy_pre_finetune": math.nan for s, *_ in splits}
        return {**self.last_eval, **pre}

    def state_dict(self) -> dict[str, Any]:
        """Model, the running phase's optimizer, the pre-fine-tuning accuracies and the last metrics."""
        return {"model": self.model.state_dict(),
                "phase_key": None if self.phase_key is None else list(self.phase_key),
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
                "pre_finetune": dict(self.pre_finetune), "last_eval": dict(self.last_eval)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the optimizer of the phase it was saved in)."""
        self.model.load_state_dict(state["model"])
        if state["phase_key"] is not None:
            phase, layer = state["phase_key"]
            self._enter(phase, int(layer))
            self.optimizer.load_state_dict(state["optimizer"])
        self.pre_finetune = {k: float(v) for k, v in state["pre_finetune"].items()}
        self.last_eval = {k: float(v) for k, v in state["last_eval"].items()}

    def extra_results(self) -> dict[str, float]:
        """``num_params``: encoder and softmax layer."""
        return {"num_params": float(count_params(self.model.encoders) + count_params(self.model.head))}

    # -- internals ------------------------------------------------------------------------------
    def _enter(self, phase: str, layer: int) -> None:
        """A fresh optimizer when a phase (or a pretrained layer) starts."""
        if self.phase_key == (phase, layer):
            return
        cfg = self.config
        if phase == "pretrain":
            params = self.model.layer_parameters(layer)
        else:
            params = self.model.classifier_parameters(finetune=phase == "finetune")
        if phase == "finetune":
            cfg = cfg.model_copy(update={"lr": cfg.effective_lr * cfg.finetune_lr_factor})
        self.optimizer = build_optimizer(params, cfg)
        self.phase_key = (phase, layer)

    @torch.no_grad()
    def _classify(self, x_np: np.ndarray, y_np: np.ndarray) -> tuple[float, float]:
        """(accuracy, mean cross-entropy in nats) of the current classifier on one split, eval mode."""
        self.model.eval()
        x_all, y_all = shared_tensor(x_np), torch.as_tensor(y_np)
        correct, ce = 0, 0.0
        for idx in batches(len(x_all), self.config.eval_batch_size, shuffle=False):
            logits = self.model(flat_inputs(x_all[idx], self.device))
            y = y_all[idx].to(self.device)
            correct += int(correct_count(logits, y))
            ce += float(F.cross_entropy(logits, y, reduction="sum"))
        return correct / len(x_all), ce / len(x_all)
