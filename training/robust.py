"""GAN-robust training (Sriram et al. 2018, "Robust speech recognition using generative
adversarial networks"): the encoder is the generator; a critic on frame embeddings tells the
clean view's embeddings from the corrupted view's; the encoder learns to make them alike.

Per training step, for a batch of paired views (training.data.dataset: "features" corrupted,
"clean_features" the same utterance clean, frame for frame):
- the clean view is encoded without gradient in eval mode (no dropout): the target;
- L1: mean |e_corrupted - e_clean| over valid frames and dimensions;
- WGAN-GP (Gulrajani et al. 2017): `critic_steps` critic updates on sampled frames, loss
  D(e_corrupted) - D(e_clean) + gp_weight * (||grad D(mix)|| - 1)^2, then the encoder's term
  -D(e_corrupted) with the critic frozen.
The critic is training-only: it is kept out of the Lightning module's registered submodules
(so neither DDP nor the checkpoint nor the bundle holds it), has its own Adam, and under DDP
its gradients are averaged across ranks by hand so every rank's critic stays identical.
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import RobustConfig


class Critic(nn.Module):
    """(N, D) frame embeddings -> (N,) scores. No normalisation layers: the gradient penalty is
    per sample, which batch norm would break."""

    def __init__(self, d_model: int, dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, dim), nn.LeakyReLU(0.2),
                                 nn.Linear(dim, dim), nn.LeakyReLU(0.2), nn.Linear(dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor) -> torch.Tensor:
    """mean over samples of (||d critic / d x at x = eps real + (1 - eps) fake||_2 - 1)^2;
    real, fake (N, D), eps (N, 1) in [0, 1]."""
    mix = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return ((grad.norm(dim=1) - 1) ** 2).mean()


def critic_loss(critic: nn.Module, clean: torch.Tensor, noisy: torch.Tensor, gp_weight: float,
                eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(WGAN-GP critic loss, the Wasserstein estimate D(clean) - D(noisy))."""
    w = critic(clean).mean() - critic(noisy).mean()
    return -w + gp_weight * gradient_penalty(critic, clean, noisy, eps), w.detach()


def valid_frames(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B,) lengths -> (B, frames) bool mask of the frames inside each utterance."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


class RobustObjective:
    def __init__(self, cfg: RobustConfig, d_model: int, seed: int = 0):
        self.cfg = cfg
        self.critic: Critic | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.gen = torch.Generator().manual_seed(seed)
        if cfg.gan_weight > 0:
            self.critic = Critic(d_model, cfg.critic_dim)
            self.opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr,
                                        betas=(0.5, 0.9))

    def to(self, device: torch.device) -> RobustObjective:
        if self.critic is not None:
            self.critic.to(device)
        return self

    def _sample(self, n: int, device: torch.device) -> torch.Tensor:
        k = min(n, self.cfg.critic_frames)
        return torch.randperm(n, generator=self.gen)[:k].to(device)

    def _critic_update(self, clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        assert self.critic is not None and self.opt is not None
        w = torch.zeros(())
        for _ in range(self.cfg.critic_steps):
            idx = self._sample(clean.shape[0], clean.device)
            eps = torch.rand(idx.numel(), 1, generator=self.gen).to(clean.device)
            loss, w = critic_loss(self.critic, clean[idx], noisy[idx], self.cfg.gp_weight, eps)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            _average_across_ranks(self.critic)
            self.opt.step()
        return w

    def __call__(self, enc_noisy: torch.Tensor, enc_clean: torch.Tensor,
                 lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """enc_noisy (B, T', D) with gradient, enc_clean (B, T', D) without, lengths (B,) ->
        (the weighted robust loss for the encoder, values to log)."""
        c = self.cfg
        mask = valid_frames(lengths, enc_noisy.shape[1])
        noisy, clean = enc_noisy[mask].float(), enc_clean[mask].float().detach()  # (N, D)
        l1 = (noisy - clean).abs().mean()
        logs = {"robust_l1": float(l1.detach())}
        total = c.l1_weight * l1
        if self.critic is not None:
            with torch.autocast(noisy.device.type, enabled=False), torch.enable_grad():
                logs["critic_w"] = float(self._critic_update(clean, noisy.detach()))
                for p in self.critic.parameters():
                    p.requires_grad_(False)
                adv = -self.critic(noisy[self._sample(noisy.shape[0], noisy.device)]).mean()
                for p in self.critic.parameters():
                    p.requires_grad_(True)
            logs["robust_adv"] = float(adv.detach())
            total = total + c.gan_weight * adv
        return total, logs


def _average_across_ranks(module: nn.Module) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world
