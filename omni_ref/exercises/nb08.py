"""Exercises of notebook 08 (training a toy): AdamW's first step, the loss on the answer tokens, and how much a
token's modality tells about its experts."""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from . import call, exercise, number

# ---- 08.1 predict: how far AdamW's first step moves a parameter -------------------------------------------------

LR, GRAD = 3e-3, 4e-4


@exercise("08.1", f"On the first step AdamW (lr = {LR}, betas = (0.9, 0.98)) sees a gradient g = {GRAD} for one "
          "weight. Ignoring weight decay and eps, by how much does the step change that weight (a size, > 0)?",
          right=lambda: LR, wrong=lambda: LR * GRAD,
          praise="lr exactly: after bias correction m_hat = g and v_hat = g^2, so the step is lr * g / |g|, the "
                 "gradient's sign times lr, whatever its size. Every weight with a gradient moves by lr on step "
                 "one, which is why warm-up starts the learning rate small.")
def _first_step(answer):
    value = abs(number(answer))
    if math.isclose(value, LR, rel_tol=1e-3):
        return None
    if math.isclose(value, LR * GRAD, rel_tol=1e-3):
        return "that is plain SGD (lr * g); AdamW divides the (bias-corrected) first moment by the root of the second"
    if math.isclose(value, LR * 0.1 / math.sqrt(0.02), rel_tol=1e-3) or math.isclose(value, LR * 0.1, rel_tol=1e-3):
        return "remember the bias correction: m and v are divided by 1 - beta^t, which is 1 - beta on step one"
    return "write m_1 and v_1 after one update, correct both for their zero start, and take m_hat / sqrt(v_hat)"


# ---- 08.2 implement: cross-entropy on the answer tokens only ---------------------------------------------------

def _loss_right():
    def answer_loss(logits, labels):
        targets = labels[:, 1:]                                   # position t predicts token t + 1
        scores = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
        return F.cross_entropy(scores, targets.reshape(-1), ignore_index=-100)
    return answer_loss


def _loss_wrong():
    def answer_loss(logits, labels):                              # forgets the shift: predicts the token itself
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    return answer_loss


@functools.lru_cache(maxsize=1)
def _loss_cases():
    g = torch.Generator().manual_seed(8)
    cases = []
    for B, T, V in ((2, 7, 11), (3, 12, 40)):
        logits = torch.randn(B, T, V, generator=g) * 3
        labels = torch.full((B, T), -100)
        for b in range(B):                                        # a short answer at the end of each row
            n = 2 + b
            labels[b, T - n:] = torch.randint(0, V, (n,), generator=g)
        cases.append((logits, labels))
    return cases


@exercise("08.2", "Write answer_loss(logits, labels): logits (B, T, V), labels (B, T) with -100 where no loss is "
          "taken -> the mean cross-entropy over the labelled tokens, as HF's causal-LM loss computes it.",
          right=_loss_right, wrong=_loss_wrong,
          praise="the logits at position t score the token at t + 1, so the labels shift left by one; -100 drops "
                 "the prompt and the padding; the mean runs over labelled tokens only. The same as "
                 "omni_ref.thinker.causal_lm_loss and HF's ForCausalLMLoss.")
def _loss(fn):
    from ..thinker import causal_lm_loss
    for logits, labels in _loss_cases():
        got = torch.as_tensor(call(fn, logits.clone(), labels.clone())).float()
        if got.numel() != 1:
            return "return one number: the mean over all labelled tokens of the batch"
        want = causal_lm_loss(logits, labels)
        if torch.isclose(got.reshape(()), want, rtol=1e-5, atol=1e-6):
            continue
        unshifted = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        if torch.isclose(got.reshape(()), unshifted, rtol=1e-5, atol=1e-6):
            return "which token do the logits at position t predict? The labels must line up with that"
        return "take the mean over the labelled tokens only (ignore_index=-100), after lining labels up with logits"
    return None


# ---- 08.3 implement: mutual information between modality and expert ---------------------------------------------

def _mi_right():
    def mutual_information(modality, experts, num_modalities, num_experts):
        k = experts.shape[1]
        pairs = modality.repeat_interleave(k) * num_experts + experts.reshape(-1)    # one draw per choice
        joint = torch.bincount(pairs, minlength=num_modalities * num_experts).double()
        p = (joint / joint.sum()).reshape(num_modalities, num_experts)
        outer = p.sum(1, keepdim=True) * p.sum(0, keepdim=True)
        nz = p > 0
        return (p[nz] * torch.log2(p[nz] / outer[nz])).sum()
    return mutual_information


def _mi_wrong():
    right = _mi_right()

    def mutual_information(modality, experts, num_modalities, num_experts):   # natural log: nats, not bits
        return right(modality, experts, num_modalities, num_experts) * math.log(2)
    return mutual_information


@functools.lru_cache(maxsize=1)
def _mi_cases():
    g = torch.Generator().manual_seed(9)
    modality = torch.randint(0, 3, (200,), generator=g)
    noisy = torch.stack([torch.randperm(8, generator=g)[:2] for _ in range(200)])      # unrelated to modality
    owned = torch.stack([modality * 2, modality * 2 + 1], 1)                            # two experts each
    mixed = torch.where(torch.rand(200, 1, generator=g) < 0.5, owned, noisy)
    return [(modality, e) for e in (noisy, owned, mixed)]


def _mi_reference(modality, experts, M, E):
    from ..tools.plots import information_bits
    joint = torch.zeros(M, E)
    joint.index_put_((modality.repeat_interleave(experts.shape[1]), experts.reshape(-1)),
                     torch.ones(experts.numel()), accumulate=True)
    return information_bits(joint)


@exercise("08.3", "Write mutual_information(modality, experts, num_modalities, num_experts): modality (N,) ids, "
          "experts (N, k) the chosen experts -> I(modality; expert) in bits, each of a token's k choices one draw.",
          right=_mi_right, wrong=_mi_wrong,
          praise="the joint shares p(m, e) from counts, the product of their marginals, and sum p log2(p / (p_m "
                 "p_e)): 0 when experts ignore the modality, log2(3) = 1.58 bits here when each modality owns "
                 "its experts. plots.modality_expert_information computes the same per layer.")
def _mi(fn):
    for modality, experts in _mi_cases():
        got = float(torch.as_tensor(call(fn, modality.clone(), experts.clone(), 3, 8)))
        want = float(_mi_reference(modality, experts, 3, 8))
        if abs(got - want) <= 1e-4:
            continue
        if want > 0 and abs(got - want * math.log(2)) <= 1e-4:
            return "the units: bits need log base 2 (torch.log2), the natural log gives nats"
        if got < -1e-6:
            return "mutual information is never negative: check p(m, e) / (p(m) p(e)) inside the log"
        return "count (modality, expert) pairs over all N * k choices, normalise to p(m, e), then compare with p(m) p(e)"
    return None
