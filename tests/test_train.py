"""Training equal to HF (issue 11): the Thinker's loss with its load-balancing term, backward, every gradient.

Both sides get the same tiny checkpoint and the same batch (train mode, fp32, eager attention): row 0 is a user
turn with an audio clip, an image and a video, then the answer; row 1 is a shorter image question, left-padded,
so the padding mask of the load-balancing loss is exercised too. Labels cover the answer tokens only.

The criterion, per parameter tensor: |grad_ours - grad_hf| <= 1e-5 * max(|grad_hf|, 1e-3 * |whole gradient|), norms
over the whole tensor. The floor serves tensors whose gradient is (close to) zero by symmetry, where a relative
criterion would divide rounding noise by nothing.

What used to part the two backward paths: our MoE block handed the load-balancing loss router logits detached
from autograd, so the aux loss was equal in value but trained nothing; HF's loss reaches every router through its
logits (and from there every earlier layer, the towers included). moe.SparseMoE now keeps them attached.
"""
import numpy as np
import pytest
import torch

import omni_ref
from omni_ref import hf, presets

REL, FLOOR = 1e-5, 1e-3


def _media(seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    audio = (0.5 * np.sin(2 * np.pi * 440 * t) * (t > 0.3) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    video = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    return audio, image, video


def _batch(processor):
    """Prompts from the chat template plus appended answers; labels on the answer tokens only."""
    audio, image, video = _media()
    convs = [[{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "image", "image": image},
                                           {"type": "video", "video": video},
                                           {"type": "text", "text": "What is in this?"}]}],
             [{"role": "user", "content": [{"type": "image", "image": image[:64, :64]},
                                           {"type": "text", "text": "Colour?"}]}]]
    inputs = processor.apply_chat_template(convs, add_generation_prompt=True, tokenize=True, return_dict=True)
    im_end = presets.token_ids()["im_end_token_id"]
    answer = torch.tensor([processor.tokenizer.encode("red", add_special_tokens=False).ids + [im_end]] * 2)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], answer], 1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(answer)], 1)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -answer.shape[1]:] = answer
    return inputs, labels


def _hf_name(ours: str) -> str:
    """Our Thinker parameter name -> HF's in-memory name (HF nests the towers and the decoder under .model)."""
    if ours.startswith(("audio_tower.", "visual.")):
        return "model." + ours
    if ours.startswith("model."):
        return "model.language_model." + ours[len("model."):]
    return ours


def _ours_as_hf(grads: dict) -> dict:
    """Our gradients under HF's in-memory names and layout (HF fuses each layer's expert gate and up
    projections into one (E, 2I, H) tensor, gate first)."""
    out = {}
    for name, g in grads.items():
        if name.endswith("experts.up_proj"):
            continue
        if name.endswith("experts.gate_proj"):
            base = name[:-len("gate_proj")]
            out[_hf_name(base + "gate_up_proj")] = torch.cat([g, grads[base + "up_proj"]], dim=1)
        else:
            out[_hf_name(name)] = g
    return out


def _backward(thinker, inputs, labels, which):
    thinker.train()
    thinker.zero_grad(set_to_none=True)
    out = thinker(**inputs, labels=labels, output_router_logits=True, use_cache=False)
    (out.loss if which == "loss" else out.aux_loss).backward()
    grads = {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
             for n, p in thinker.named_parameters()}
    return out.loss.detach(), out.aux_loss.detach(), grads


@pytest.fixture(scope="module")
def sides():
    ckpt = presets.cached_checkpoint("tiny")
    ours = omni_ref.load(ckpt, components=("thinker",)).thinker
    theirs = hf.load_hf(ckpt).thinker
    inputs, labels = _batch(omni_ref.Processor.from_pretrained(ckpt))
    assert (inputs["attention_mask"][1] == 0).any()               # row 1 is left-padded
    return ours, theirs, inputs, labels


def _compare(ours_grads: dict, hf_grads: dict) -> list[str]:
    ours_grads = _ours_as_hf(ours_grads)
    assert set(ours_grads) == set(hf_grads)
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in hf_grads.values()))
    bad = []
    for name, want in hf_grads.items():
        diff = (ours_grads[name].double() - want.double()).norm()
        scale = max(want.double().norm(), FLOOR * total)
        if diff > REL * scale:
            bad.append(f"{name}: |diff| {diff:.3g} vs allowed {REL * scale:.3g}")
    return bad


@pytest.mark.parametrize("which", ["loss", "aux_loss"])
def test_every_gradient_equals_hf(sides, which):
    """The total loss (cross-entropy + coef * aux) and, on its own, the load-balancing loss, which is where the
    two used to part: its gradient must reach the routers."""
    ours, theirs, inputs, labels = sides
    loss, aux, got = _backward(ours, inputs, labels, which)
    hf_loss, hf_aux, want = _backward(theirs, inputs, labels, which)
    assert abs(loss.item() - hf_loss.item()) < 1e-6 and abs(aux.item() - hf_aux.item()) < 1e-6
    assert _compare(got, want) == []
    if which == "aux_loss":   # the routers do get a gradient from it (the bug was a zero one)
        assert all(got[n].norm() > 0 for n in got if n.endswith("mlp.gate.weight"))
