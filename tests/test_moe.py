"""The MoE block against HF: router decisions, grouped expert computation, shared expert, routing statistics,
the load-balancing loss, and the notebook's routing-explorer callback.

Two checkpoints: our tiny preset, and HF's own tiny Thinker test configuration (omni_ref.hf.HF_TEST_THINKER_CONFIG,
copied from transformers' tests/models/qwen3_omni_moe/test_modeling_qwen3_omni_moe.py)."""
import pytest
import torch
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (Qwen3OmniMoeThinkerTextTopKRouter,
                                                                        load_balancing_loss_func)

import omni_ref
from omni_ref import hf
from omni_ref.moe import Experts, expert_usage, explain_token, load_balancing_loss, route


PAIRS = ["tiny_thinker_models", "hf_test_thinker_models"]


def _moe_prompt(random_prompt, vocab, seed=0):
    """Ids over the whole vocabulary, 3 rows of 12, the second left-padded by 4."""
    return random_prompt(vocab, seed=seed, length=12, pads=(0, 4, 0), low=0)


def _thinkers(request, which):
    """(our Thinker, HF's Thinker) of the named model pair."""
    ours, theirs = request.getfixturevalue(which)
    return ours.thinker, theirs.thinker


@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_router_equal_hf(norm_topk_prob):
    cfg = omni_ref.presets.config("tiny").thinker_config.text_config.replace(norm_topk_prob=norm_topk_prob)
    theirs = Qwen3OmniMoeThinkerTextTopKRouter(hf.hf_config(omni_ref.presets.config("tiny")).thinker_config
                                               .text_config)
    theirs.norm_topk_prob = norm_topk_prob
    torch.nn.init.normal_(theirs.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    x = torch.randn(40, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    logits_h, weights_h, experts_h = theirs(x)
    logits = x @ theirs.weight.T
    probs, weights, experts = route(logits, cfg.num_experts_per_tok, norm_topk_prob)
    torch.testing.assert_close(logits, logits_h, atol=1e-6, rtol=0)
    assert torch.equal(experts, experts_h)
    torch.testing.assert_close(weights, weights_h, atol=1e-7, rtol=0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(40), atol=1e-6, rtol=0)
    if norm_topk_prob:
        torch.testing.assert_close(weights.sum(-1), torch.ones(40), atol=1e-6, rtol=0)


@pytest.mark.parametrize("which", PAIRS)
def test_moe_block_and_routing_equal_hf(which, request):
    ours, theirs = _thinkers(request, which)
    cfg = ours.config.text_config
    x = torch.randn(2, 9, cfg.hidden_size, generator=torch.Generator().manual_seed(2))
    for layer_ours, layer_hf in zip(ours.model.layers, theirs.model.language_model.layers):
        with torch.no_grad():
            got, stats = layer_ours.mlp(x)
            want = layer_hf.mlp(x)
            logits_h, weights_h, experts_h = layer_hf.mlp.gate(x.reshape(-1, cfg.hidden_size))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        assert torch.equal(stats.experts.reshape(-1, cfg.num_experts_per_tok), experts_h)
        torch.testing.assert_close(stats.weights.reshape(experts_h.shape), weights_h, atol=1e-6, rtol=0)
        torch.testing.assert_close(stats.router_logits.reshape(logits_h.shape), logits_h, atol=1e-6, rtol=0)


@pytest.mark.parametrize("which", PAIRS)
def test_chosen_experts_equal_hf_for_every_token_and_layer(which, request, random_prompt):
    ours, theirs = _thinkers(request, which)
    ids, mask = _moe_prompt(random_prompt, ours.config.text_config.vocab_size)
    trace = hf.hf_thinker_trace(theirs, input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        out = ours(input_ids=ids, attention_mask=mask)
    assert len(out.routing) == len(trace["experts"]) == ours.config.text_config.num_hidden_layers
    for stats, want in zip(out.routing, trace["experts"]):
        assert torch.equal(stats.experts.reshape(want.shape), want)      # every token, same order


def test_talker_block_with_shared_expert_equal_hf(tiny_models):
    """The Talker's MoE adds a sigmoid-gated shared expert; same module, checked on the tiny
    Talker's weights."""
    ours, theirs = tiny_models[0].talker, tiny_models[1].talker
    x = torch.randn(2, 7, ours.config.text_config.hidden_size, generator=torch.Generator().manual_seed(3))
    for a, b in zip(ours.model.layers, theirs.model.layers):
        with torch.no_grad():
            got, stats = a.mlp(x)
            want = b.mlp(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        assert stats.experts.shape == (2, 7, ours.config.text_config.num_experts_per_tok)


def test_grouped_experts_equal_per_token_definition_and_run_each_expert_once(monkeypatch):
    """The grouped computation equals the textbook sum over each token's k experts, and runs an expert at most
    once per call, only if it received tokens."""
    torch.manual_seed(0)
    E, H, I, N, k = 8, 16, 12, 30, 3
    experts = Experts(E, H, I)
    for p in experts.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(N, H)
    probs = torch.softmax(torch.randn(N, E) * 3, dim=-1)
    probs[:, 5] = 0                                                   # nobody chooses expert 5
    weights, chosen = torch.topk(probs, k, dim=-1)
    calls = []
    original = Experts.expert
    monkeypatch.setattr(Experts, "expert", lambda self, e, h: calls.append(e) or original(self, e, h))
    with torch.no_grad():
        got = experts(x, chosen, weights)
        want = torch.stack([sum(w * original(experts, e, x[n:n + 1])[0] for e, w in
                                zip(chosen[n].tolist(), weights[n])) for n in range(N)])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert calls[:len(set(calls))] == sorted(set(chosen.reshape(-1).tolist()))   # ascending, once each
    assert 5 not in calls


@pytest.mark.parametrize("which", PAIRS)
def test_load_balancing_loss_equal_hf(which, request, random_prompt):
    ours, theirs = _thinkers(request, which)
    cfg = ours.config.text_config
    ids, mask = _moe_prompt(random_prompt, cfg.vocab_size, seed=4)
    with torch.no_grad():
        got = ours(input_ids=ids, attention_mask=mask, output_router_logits=True)
        want = theirs(input_ids=ids, attention_mask=mask, output_router_logits=True)
    torch.testing.assert_close(got.aux_loss, want.aux_loss, atol=1e-6, rtol=0)
    for a, b in zip(got.router_logits, want.router_logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # Without a mask, and fed our RoutingStats instead of HF's layout
    no_mask = load_balancing_loss([r.router_logits for r in got.routing], cfg.num_experts, cfg.num_experts_per_tok)
    ref = load_balancing_loss_func(want.router_logits, cfg.num_experts, cfg.num_experts_per_tok, None)
    torch.testing.assert_close(no_mask, ref, atol=1e-6, rtol=0)


def test_load_balancing_loss_reference_value_and_errors():
    # Uniform router probabilities: the loss is exactly k, however the ties are broken.
    loss = load_balancing_loss([torch.zeros(10, 8)] * 3, num_experts=8, top_k=2)
    assert abs(loss.item() - 2.0) < 1e-6
    with pytest.raises(ValueError, match="attention_mask has 6 positions but the router saw 10 tokens"):
        load_balancing_loss([torch.zeros(10, 8)], 8, 2, attention_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="at least one MoE layer"):
        load_balancing_loss([], 8, 2)


def test_expert_usage_and_explorer_callback(tiny_thinker_models, random_prompt):
    ours = tiny_thinker_models[0].thinker
    cfg = ours.config.text_config
    ids, mask = _moe_prompt(random_prompt, cfg.vocab_size, seed=5)
    with torch.no_grad():
        routing = ours(input_ids=ids, attention_mask=mask).routing
    usage = expert_usage(routing)
    assert usage.shape == (cfg.num_hidden_layers, cfg.num_experts)
    torch.testing.assert_close(usage.sum(-1), torch.full((cfg.num_hidden_layers,), float(cfg.num_experts_per_tok)))
    real = expert_usage(routing, mask)
    assert torch.equal(real[0] * mask.sum(), routing[0].expert_counts(mask).float())

    labels = [f"t{i}" for i in range(ids.shape[1])]
    text = explain_token(routing, layer=1, token=5, labels=labels, batch=2)
    r = routing[1]
    lines = text.splitlines()
    assert lines[0] == f"layer 1, position 5 't5': top-{cfg.num_experts_per_tok} of {cfg.num_experts} experts"
    for line, e, w in zip(lines[1:], r.experts[2, 5].tolist(), r.weights[2, 5].tolist()):
        assert line == f"  expert {e:>3}   weight {w:.3f}   router prob {r.router_probs[2, 5, e].item():.3f}"
    assert len(lines) == cfg.num_experts_per_tok + 2
    with pytest.raises(IndexError, match=r"layer=9: the model has layers 0..1"):
        explain_token(routing, 9, 0)
    with pytest.raises(IndexError, match=r"token=99: the prompt has positions 0..11"):
        explain_token(routing, 0, 99)
