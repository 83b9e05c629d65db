"""The SDS training loop: sample a camera, render, distil the prior's score, step."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig

from ..guidance.base import Prior
from ..guidance.losses import Loss
from ..guidance.prompts import GuidanceTarget, PromptSettings, prompts_of, targets_for
from ..guidance.schedules import TimestepSchedule
from ..guidance.sds import Condition
from ..rendering.cameras import Cameras, sample_cameras
from ..rendering.rendered import Rendered
from ..choices import SHADING_MODES
from ..rendering.shading import sample_light_directions
from .build import build_loss, view_rules
from .regularizers import TERMS, active_weights
from .representation import Representation


@dataclass
class StepStats:
    step: int
    loss: float
    t: float
    mode: str
    view: str
    samples: int
    fault: str | None = None      # why the step was skipped (a non-finite loss or gradient)
    terms: dict[str, float] = field(default_factory=dict)   # each loss term, unweighted


@dataclass
class Trainer:
    cfg: DictConfig
    scene: Representation
    prior: Prior
    prompt: str
    loss: Loss | None = None          # None: the one ``guidance.loss`` names
    step: int = 0
    lr_scale: float = 1.0             # lowered by each rollback after repeated faults
    _conditions: dict[str, Any] = field(default_factory=dict)
    _injected: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        o = self.cfg.optim
        if self.loss is None:
            self.loss = build_loss(self.cfg)
        # the loss's own parameters (if any) after the scene's: checkpoints store the
        # optimiser by this order
        self.optimizer = torch.optim.Adam(self.scene.param_groups() + self.loss.param_groups(),
                                          betas=(o.beta1, o.beta2), eps=o.eps)
        # each group's rate at the first step and, where it decays, at the last
        self._base_lrs = [(group["lr"], group.get("lr_final"))
                          for group in self.optimizer.param_groups]
        self._named_params = self.scene.named_trainables() + self.loss.named_trainables()
        g = self.cfg.guidance
        self.schedule = TimestepSchedule(g.schedule, g.t_min, g.t_max, g.t_max_end, g.t_min_end,
                                         g.tp_mu, g.tp_sigma, g.anneal_end)
        p = self.cfg.prompt
        self.scene.set_step(self.step)
        self.prompt_settings = PromptSettings(self.prompt, view_rules(self.cfg), p.view_dependent,
                                              p.interpolate, p.perp_neg, p.perp_neg_weight)

    def encode_prompts(self) -> None:
        """Encode every prompt the run can ask for, then let the prior free its text encoder."""
        for prompt in prompts_of(self.prompt_settings):
            self.condition(prompt)
        if self.needs_unconditional:
            self.unconditional()
        self.prior.release_text_encoder()

    @property
    def needs_unconditional(self) -> bool:
        """The loss's decision (SDS: guidance above 1 and Perp-Neg subtract it)."""
        return self.loss.needs_unconditional(self.prompt_settings.perp_neg)

    def condition(self, prompt: str) -> Any:
        if prompt not in self._conditions:
            self._conditions[prompt] = self.prior.condition(prompt)
        return self._conditions[prompt]

    def unconditional(self) -> Any:
        negative = self.cfg.prompt.negative.strip()
        return self.condition(negative) if negative else self.prior.unconditional()

    def targets_for(self, cameras: Cameras) -> list[GuidanceTarget]:
        return targets_for(cameras.azimuth.tolist(), cameras.elevation.tolist(),
                           self.prompt_settings)

    def resolve(self, target: GuidanceTarget) -> Condition:
        positive = self.prior.mix([(self.condition(p), w) for p, w in target.positive])
        negatives = [(self.condition(p), w) for p, w in target.negatives]
        return Condition(positive, self.unconditional() if self.needs_unconditional else None,
                         negatives)

    def _shading_mode(self) -> str:
        s = self.cfg.shading
        if self.step < s.albedo_only_steps:
            return "albedo"
        probs = torch.tensor([s.albedo, s.lambertian, s.textureless])
        return SHADING_MODES[int(torch.multinomial(probs, 1))]

    def train_step(self) -> StepStats:
        cfg = self.cfg
        self.scene.before_step(self.step)
        c = cfg.camera
        cams = sample_cameras(cfg.batch_size, tuple(c.elevation), tuple(c.azimuth),
                              tuple(c.distance), tuple(c.fov), views=c.views_per_sample,
                              relative_distance=c.relative_distance)
        lights = sample_light_directions(cams.positions, cfg.shading.light_jitter)
        mode = self._shading_mode()
        weights = active_weights(cfg.regularizers, self.step)
        out = self.scene.render(cams, cfg.height, cfg.width, mode, lights,
                                with_normals="orientation" in weights)
        # one noise level per object: a multi-view prior denoises its views at one t
        t = self.schedule.sample(self.progress, self.prior.n_train_steps, cfg.batch_size)
        t = t.repeat_interleave(c.views_per_sample)
        targets = self.targets_for(cams)
        loss, terms = self._distil(out, t, targets, cams)
        for name, weight in weights.items():
            term = TERMS[name](out).to(loss.device)
            terms[name] = float(term.detach())
            loss = loss + weight * term
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._inject_fault()
        fault = self._fault(loss)
        if fault is None:
            self.optimizer.step()
        else:       # an update with NaN or Inf would poison the weights and Adam's moments
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if fault is None:
            self.scene.after_step(self.step, self.optimizer)
            self.loss.after_step(self.step)
        self.scene.set_step(self.step)
        self._apply_lrs()
        t_fraction = float(t.float().mean()) / self.prior.n_train_steps
        return StepStats(self.step, float(loss.detach()), t_fraction, mode, targets[0].view,
                         out.n_samples, fault, terms)

    def _distil(self, out: Rendered, t: torch.Tensor, targets: list[GuidanceTarget],
                cams: Cameras) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss's terms over the batch, each averaged over its samples (a camera with its
        own prompt target; for a multi-view prior, each object's K views), and their sum;
        the terms are logged without their ``loss_`` prefix."""
        images = out.rgb.permute(0, 3, 1, 2)
        k = self.prior.views
        sums: dict[str, torch.Tensor] = {}
        for i in range(0, len(targets), k):
            sl = slice(i, i + k)
            cond = self.resolve(targets[i]) if k == 1 else self._stacked(targets[sl])
            for name, term in self.loss.terms(self.prior, images[sl], t[sl], cond,
                                              cams[sl]).items():
                total = sums.get(name, images.new_zeros(()))
                sums[name] = total + term.to(total.device) * k / len(targets)
        if not sums:
            raise ValueError(f"{type(self.loss).__name__} returned no terms")
        terms = list(sums.values())
        loss = terms[0]
        for term in terms[1:]:
            loss = loss + term
        return loss, {name.removeprefix("loss_"): float(v.detach()) for name, v in sums.items()}

    def _stacked(self, targets: list[GuidanceTarget]) -> Condition:
        """One multi-view sample's condition: its views' own, stacked (no Perp-Neg)."""
        conds = [self.resolve(target) for target in targets]
        unconditional = None
        if self.needs_unconditional:
            unconditional = self.prior.stack([c.unconditional for c in conds])
        return Condition(self.prior.stack([c.positive for c in conds]), unconditional)

    def _inject_fault(self) -> None:
        step = self.step + 1
        if step in self.cfg.faults.inject_nan_at and step not in self._injected:
            self._injected.add(step)
            grad = self._named_params[0][1].grad
            if grad is not None:
                grad.view(-1)[0] = float("nan")

    def _fault(self, loss: torch.Tensor) -> str | None:
        """Why this step must not be applied, or None: a non-finite loss or gradient."""
        if not torch.isfinite(loss).all():
            return f"loss is {float(loss.detach())}"
        bad = [name for name, p in self._named_params
               if p.grad is not None and not torch.isfinite(p.grad).all()]
        return f"non-finite gradients in {', '.join(bad)}" if bad else None

    def set_lr_scale(self, scale: float) -> None:
        self.lr_scale = scale
        self._apply_lrs()

    def _apply_lrs(self) -> None:
        """Each group's rate at this step: ``lr * lr_scale``, or where the group names an
        ``lr_final``, ``lr * (lr_final / lr) ** progress * lr_scale`` (3DGS's exponential
        decay of the positions' rate, from ``lr`` at the first step to ``lr_final`` at the
        last)."""
        p = self.progress
        for group, (start, final) in zip(self.optimizer.param_groups, self._base_lrs):
            rate = start if final is None else start * (final / start) ** p
            group["lr"] = rate * self.lr_scale

    def state_dict(self) -> dict:
        """Everything the next step depends on besides the scene: step, optimiser, RNG."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"step": self.step, "optimizer": self.optimizer.state_dict(),
                "lr_scale": self.lr_scale, "rng": rng, "schedule": self.schedule_state(),
                "loss": self.loss.state_dict()}

    def schedule_state(self) -> dict:
        """The timestep schedule where the run stands: a function of step and config, kept
        in checkpoints so that a resume can tell when the code computes it differently."""
        return {"name": self.schedule.name, "progress": self.progress,
                "t_range": list(self.schedule.range_at(self.progress))}

    @property
    def progress(self) -> float:
        """The fraction of the run done, which the timestep schedule follows: 0 at the first
        step, 1 at the last (and after it, where the final checkpoint records it)."""
        return min(self.step / max(self.cfg.steps - 1, 1), 1.0)

    def load_state_dict(self, state: dict, restore_rng: bool = True) -> None:
        self.step = int(state["step"])
        self.scene.set_step(self.step)
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss.load_state_dict(state.get("loss", {}))
        self.set_lr_scale(float(state["lr_scale"]))
        if restore_rng:
            torch.set_rng_state(state["rng"]["torch"])
            cuda = state["rng"].get("cuda")
            if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
