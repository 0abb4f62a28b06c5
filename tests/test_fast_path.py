"""The fast path (attn_implementation="sdpa", experts_implementation="grouped_mm") computes what the
eager path computes: the same masks (causal, left padding, sliding window, a KV cache), tensors
within 1e-5, the same greedy tokens and codec codes. The eager path is what the parity tests hold
equal to HF, so these tests carry that parity over to the fast path."""
import pytest
import torch

import omni_ref
from omni_ref.generate import generate_speech, thinker_generate
from omni_ref.layers import Attention, KVCache, causal_mask, set_attn_implementation
from omni_ref.moe import Experts, SparseMoE, set_experts_implementation
from omni_ref.rope import rope_inv_freq, rotary_cos_sin

FAST = dict(attn_implementation="sdpa", experts_implementation="grouped_mm")


def _attention(seed=0, heads=4, kv_heads=2, head_dim=8, hidden=16):
    torch.manual_seed(seed)
    attn = Attention(hidden, heads, kv_heads, head_dim)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    return attn


def _both(attn, *args, **kwargs):
    """Eager and fast outputs; without gradients, as in generate, where the fast path is
    Attention.fast_forward (joined q/k/v weights, one QK-norm and one rotation for all heads)."""
    outs = []
    with torch.no_grad():
        for name in ("eager", "sdpa"):
            set_attn_implementation(attn, name)
            outs.append(attn(*args, **kwargs))
    return outs


def _rotary(T, past=0, head_dim=8):
    pos = torch.arange(past, past + T)[None]
    return rotary_cos_sin(pos, rope_inv_freq(head_dim, 10000.0), torch.float32)


@pytest.mark.parametrize("window", [None, 3])
def test_sdpa_equals_eager_with_left_padding_and_sliding_window(window):
    attn = _attention()
    x = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(1))
    padding = torch.ones(2, 7, dtype=torch.long)
    padding[1, :3] = 0                                   # row 1: three left-padding positions
    mask = causal_mask(7, 7, torch.float32, padding=padding, sliding_window=window)
    cos, sin = _rotary(7)
    eager, sdpa = _both(attn, x, cos, sin, mask)
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=0)
    # the padding rows too (fully masked: the same uniform softmax on both paths)
    assert (sdpa[1, :3] - eager[1, :3]).abs().max() <= 1e-5


def test_sdpa_equals_eager_when_decoding_from_a_cache():
    attn = _attention(seed=2)
    x = torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(3))
    outs = {}
    for name in ("eager", "sdpa"):
        set_attn_implementation(attn, name)
        cache = KVCache()
        cos, sin = _rotary(5)
        prefill = attn(x[:, :5], cos, sin, causal_mask(5, 5, torch.float32), cache)
        cos, sin = _rotary(1, past=5)
        step = attn(x[:, 5:], cos, sin, causal_mask(1, 6, torch.float32), cache)
        outs[name] = torch.cat([prefill, step], dim=1)
    torch.testing.assert_close(outs["sdpa"], outs["eager"], atol=1e-5, rtol=0)


def _eager_and_fast(attn, x, cos, sin, mask=None):
    eager, fast = _both(attn, x, cos, sin, mask)
    torch.testing.assert_close(fast, eager, atol=1e-5, rtol=0)
    return fast


def test_fast_forward_joins_the_weights_without_copying_them():
    attn = _attention(seed=4)
    names = [n for n, _ in attn.named_parameters()]
    bytes_before = sum(p.numel() for p in attn.parameters())
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(5))
    cos, sin = _rotary(5)
    _eager_and_fast(attn, x, cos, sin, causal_mask(5, 5, torch.float32))
    weight, bias, norm_weight = attn.joined_weights()
    assert weight.shape == ((4 + 2 * 2) * 8, 16) and bias is None and norm_weight.shape == (6, 8)
    # q, k and v are views of the joined matrix's rows: no second copy, the same parameter names
    for rows, proj in zip(weight.split([32, 16, 16]), (attn.q_proj, attn.k_proj, attn.v_proj)):
        assert proj.weight.data_ptr() == rows.data_ptr() and torch.equal(proj.weight, rows)
    assert [n for n, _ in attn.named_parameters()] == names
    assert sum(p.numel() for p in attn.parameters()) == bytes_before
    assert sorted(attn.state_dict()) == sorted(names)


def test_fast_forward_sees_every_change_to_the_weights():
    attn = _attention(seed=6)
    x = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(7))
    cos, sin = _rotary(4)
    first = _eager_and_fast(attn, x, cos, sin, causal_mask(4, 4, torch.float32))
    with torch.no_grad():
        attn.k_proj.weight.mul_(-2.0)           # in place, through the view
        attn.q_norm.weight.add_(0.5)            # in place, a norm weight (copied, re-copied)
    second = _eager_and_fast(attn, x, cos, sin, causal_mask(4, 4, torch.float32))
    assert (second - first).abs().max() > 0.1
    attn.v_proj.weight = torch.nn.Parameter(torch.randn(16, 16))      # replaced: joined again
    third = _eager_and_fast(attn, x, cos, sin, causal_mask(4, 4, torch.float32))
    assert (third - second).abs().max() > 0.1
    attn.to(torch.float64)                                            # moved: joined again
    x64, cos64, sin64 = x.double(), cos.double(), sin.double()
    _eager_and_fast(attn, x64, cos64, sin64, causal_mask(4, 4, torch.float64))


def test_fast_forward_with_biases_and_without_qk_norm():
    torch.manual_seed(8)
    for qk_norm in (True, False):
        attn = Attention(16, 4, 2, 8, bias=True, qk_norm=qk_norm)
        with torch.no_grad():
            for p in attn.parameters():
                p.normal_(0, 0.3)
        x = torch.randn(2, 3, 16)
        cos, sin = _rotary(3)
        _eager_and_fast(attn, x, cos, sin, causal_mask(3, 3, torch.float32))
        assert attn.joined_weights()[1].shape == (64,)


def test_weights_joined_under_inference_mode_stay_trainable():
    attn = _attention(seed=11)
    set_attn_implementation(attn, "sdpa")
    x = torch.randn(1, 3, 16, generator=torch.Generator().manual_seed(12))
    cos, sin = _rotary(3)
    with torch.inference_mode():
        attn(x, cos, sin, causal_mask(3, 3, torch.float32))
    assert attn.joined_weights()[0].data_ptr() == attn.q_proj.weight.data_ptr()
    assert not any(p.is_inference() for p in attn.parameters())
    attn(x, cos, sin, causal_mask(3, 3, torch.float32)).sum().backward()
    assert all(p.grad is not None for p in attn.parameters())


def test_training_on_the_fast_path_gets_the_eager_gradients():
    """With gradients on, the joined weights (made without them) would train nothing: the fast path
    then projects q, k and v one by one, and only its steps 7-9 are the fused call."""
    grads = {}
    for name in ("eager", "sdpa"):
        attn = _attention(seed=9)
        set_attn_implementation(attn, name)
        x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(10))
        cos, sin = _rotary(5)
        attn(x, cos, sin, causal_mask(5, 5, torch.float32)).square().sum().backward()
        grads[name] = {n: p.grad for n, p in attn.named_parameters()}
    for n, g in grads["eager"].items():
        torch.testing.assert_close(grads["sdpa"][n], g, atol=1e-5, rtol=1e-5)
        assert g.abs().max() > 0


def test_grouped_experts_equal_the_loop():
    torch.manual_seed(0)
    moe = SparseMoE(hidden=16, num_experts=8, top_k=3, expert_intermediate=12, norm_topk_prob=True,
                    shared_intermediate=20)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.3)
    for tokens in (1, 2, 37):                            # decode, a few, a prompt (idle experts)
        x = torch.randn(1, tokens, 16, generator=torch.Generator().manual_seed(tokens))
        set_experts_implementation(moe, "eager")
        eager, stats = moe(x)
        set_experts_implementation(moe, "grouped_mm")
        grouped, grouped_stats = moe(x)
        torch.testing.assert_close(grouped, eager, atol=1e-5, rtol=0)
        assert torch.equal(grouped_stats.experts, stats.experts)


def test_unknown_implementations_are_refused_with_the_choices(tiny_dir):
    with pytest.raises(ValueError, match=r"attn_implementation='flash'.*'eager', 'sdpa'"):
        omni_ref.load(tiny_dir, attn_implementation="flash")
    with pytest.raises(ValueError, match=r"experts_implementation='fast'.*'grouped_mm'"):
        set_experts_implementation(Experts(2, 4, 4), "fast")


@pytest.fixture(scope="module")
def eager_and_fast(tiny_dir):
    return omni_ref.load(tiny_dir), omni_ref.load(tiny_dir, **FAST)


def test_load_sets_every_attention_and_experts_module(eager_and_fast):
    eager, fast = eager_and_fast
    attn = [m for m in fast.modules() if isinstance(m, Attention)]
    experts = [m for m in fast.modules() if isinstance(m, Experts)]
    assert attn and experts          # the Thinker, Talker, MTP and Code2Wav attention; both MoEs
    assert {m.attn_implementation for m in attn} == {"sdpa"}
    assert {m.implementation for m in experts} == {"grouped_mm"}
    encoders = [fast.thinker.audio_tower.layers[0].self_attn, fast.thinker.visual.blocks[0].attn]
    assert [m.attn_implementation for m in encoders] == ["sdpa", "sdpa"]
    assert {m.attn_implementation for m in eager.modules()
            if hasattr(m, "attn_implementation")} == {"eager"}


def test_fast_encoders_equal_eager(eager_and_fast, tiny_processor):
    eager, fast = eager_and_fast
    data = omni_ref.presets.REPO_DIR / "data"
    messages = [{"role": "user", "content": [{"type": "audio", "audio": str(data / "speech.wav")},
                                             {"type": "image", "image": str(data / "image.png")},
                                             {"type": "text", "text": "what is this?"}]}]
    inputs = tiny_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                return_dict=True)
    media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        a, b = (m.thinker.embed(inputs["input_ids"], **media) for m in (eager, fast))
        torch.testing.assert_close(b.inputs_embeds, a.inputs_embeds, atol=1e-5, rtol=0)
        for x, y in zip(b.deepstack, a.deepstack):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
        assert not torch.equal(b.inputs_embeds, eager.thinker.embed(inputs["input_ids"]).inputs_embeds)


def test_fast_thinker_equals_eager(eager_and_fast, random_prompt):
    eager, fast = eager_and_fast
    ids, mask = random_prompt(eager.config.thinker_config.text_config.vocab_size)
    with torch.no_grad():
        a = eager.thinker(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        b = fast.thinker(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=0)
    for x, y in zip(b.hidden_states, a.hidden_states):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    eos = eager.config.im_end_token_id
    ta = thinker_generate(eager.thinker, ids, mask, max_new_tokens=6, eos_token_id=eos)
    tb = thinker_generate(fast.thinker, ids, mask, max_new_tokens=6, eos_token_id=eos)
    assert torch.equal(ta, tb)


def test_fast_speech_gives_the_same_codes_and_wave(eager_and_fast, tiny_processor):
    eager, fast = eager_and_fast
    messages = [{"role": "user", "content": [{"type": "text", "text": "say something"}]}]
    inputs = tiny_processor.apply_chat_template(messages, add_generation_prompt=True,
                                                tokenize=True, return_dict=True)
    opts = dict(thinker_max_new_tokens=5, thinker_eos_token_id=eager.config.im_end_token_id,
                talker_max_new_tokens=8, talker_do_sample=False)
    a = generate_speech(eager, inputs["input_ids"], "Ethan", **opts)
    b = generate_speech(fast, inputs["input_ids"], "Ethan", **opts)
    assert torch.equal(a.text_ids, b.text_ids)
    assert torch.equal(a.talker.codes, b.talker.codes) and a.talker.codes.shape[-1] > 0
    torch.testing.assert_close(b.wav, a.wav, atol=1e-5, rtol=0)
