"""Preference tuning's loss (DPO and its variants), computed from log-likelihoods that the
training loop gets from its own forwards, so FSDP, DCP resume, SIGTERM checkpoints, gang
restarts and reports work for it as for supervised tuning.

A batch holds B chosen rows then B rejected rows. For each pair, with log π the summed
log-likelihood of a response under the tuned model and log π_ref under the reference (the frozen
base), the implicit reward of a response is β (log π − log π_ref). With
h = (log π_c − log π_ref,c) − (log π_r − log π_ref,r) for chosen c and rejected r:

- sigmoid (Rafailov et al. 2023, eq. 7): −log σ(β h)
- ipo (Azar et al. 2023, eq. 17): (h − 1/(2β))²
- simpo (Meng et al. 2024, eq. 6): −log σ(β/|y_c| log π_c − β/|y_r| log π_r − γ), no reference
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from mentor.api.training import DpoSpec
from mentor_trainer.data import IGNORE

STATS = ("reward_margin", "reward_accuracy", "kl", "response_tokens")


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities, in float32 whatever the logits' precision."""
    return torch.log_softmax(logits.float(), dim=-1)


def sequence_logps(logprobs: torch.Tensor, targets: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's summed log-likelihood of its learned targets, and their count."""
    learned = targets != IGNORE
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * learned).sum(-1), learned.sum(-1)


@torch.no_grad()
def token_kl(logprobs: torch.Tensor, reference: torch.Tensor,
             targets: torch.Tensor) -> torch.Tensor:
    """KL(tuned ‖ reference) of the next-token distributions, summed over the responses'
    positions: exact at each position (over the whole vocabulary), so never negative."""
    per_position = (logprobs.exp() * (logprobs - reference)).sum(-1)
    return (per_position * (targets != IGNORE)).sum()


def pair_losses(policy: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor,
                spec: DpoSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pair's loss and its reward margin (chosen's reward minus rejected's), from the
    [2B] log-likelihoods of the tuned model and of the reference and the responses' lengths."""
    half = policy.size(0) // 2
    if spec.loss == "simpo":
        normalised = spec.beta * policy / lengths.clamp(min=1)
        margin = normalised[:half] - normalised[half:]
        return -F.logsigmoid(margin - spec.target_margin), margin
    ratio = policy - reference
    h = ratio[:half] - ratio[half:]
    if spec.loss == "ipo":
        return (h - 1 / (2 * spec.beta)) ** 2, spec.beta * h
    return -F.logsigmoid(spec.beta * h), spec.beta * h


def batch_loss(policy: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor,
               spec: DpoSpec, kl: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's summed pair loss, and its summed statistics (in STATS' order): reward
    margins, pairs ranked right (a tie counts half, so the reference itself scores 50 %), the
    KL summed over the responses' tokens (when measured: `token_kl`), and those tokens."""
    losses, margin = pair_losses(policy, reference, lengths, spec)
    right = (margin > 0).float() + 0.5 * (margin == 0).float()
    stats = torch.stack([margin.sum(), right.sum(),
                         kl if kl is not None else torch.zeros((), device=policy.device),
                         lengths.sum().float()]).detach()
    return losses.sum(), stats


def summary(stats: torch.Tensor, pairs: float, kl: bool) -> dict[str, float]:
    """Means of the summed statistics: the reward margin and accuracy per pair, and (if it was
    measured) the KL per response token."""
    margin, right, kl_sum, tokens = stats.tolist()
    out = {"reward_margin": margin / max(pairs, 1.0),
           "preference_accuracy": right / max(pairs, 1.0)}
    if kl:
        out["kl"] = kl_sum / max(tokens, 1.0)
    return out
