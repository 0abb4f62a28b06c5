"""The shared decoder pieces (RMSNorm, rotary, GQA attention with QK-norm, SwiGLU, masks, KV cache) against HF.

HF's MTP code predictor is a plain Qwen3 dense decoder with 1D rotary, so running our layers with its weights
and comparing hidden states checks every shared piece at once, before any model-specific code exists."""
import pytest
import torch

import omni_ref
from omni_ref import hf
from omni_ref.code_predictor import CodePredictorModel
from omni_ref.layers import KVCache, causal_mask
from omni_ref.rope import rope_inv_freq, rotary_cos_sin


def _run_ours(model, cfg, x, padding=None, cache=None):
    B, T, _ = x.shape
    past = cache.length if cache is not None else 0
    pos = torch.arange(past, past + T)[None].expand(B, T)
    cos, sin = rotary_cos_sin(pos, rope_inv_freq(cfg.resolved_head_dim, cfg.rope_parameters["rope_theta"]))
    mask = causal_mask(T, past + T, x.dtype, padding=padding)
    for i, layer in enumerate(model.layers):
        x, routing = layer(x, cos, sin, mask, cache, i)
        assert routing is None
    return model.norm(x)


@pytest.fixture(scope="module")
def predictor_models():
    """(the demo code predictor's config, our CodePredictorModel, HF's), sharing seeded weights."""
    cfg = omni_ref.presets.config("demo").talker_config.code_predictor_config
    torch.manual_seed(0)
    theirs = hf.Qwen3OmniMoeForConditionalGeneration(hf.hf_config(omni_ref.presets.config("demo"))).talker \
        .code_predictor.model.eval()
    theirs.config._attn_implementation = "eager"
    ours = CodePredictorModel(cfg)
    omni_ref.model.init_random_weights(ours, seed=3)      # non-trivial norms, then copy into HF
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return cfg, ours.eval(), theirs


def test_decoder_stack_equal_hf(predictor_models):
    cfg, ours, theirs = predictor_models
    x = torch.randn(2, 11, cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = theirs(inputs_embeds=x).last_hidden_state
        got = _run_ours(ours, cfg, x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_left_padding_equal_hf(predictor_models):
    cfg, ours, theirs = predictor_models
    x = torch.randn(2, 9, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    padding = torch.ones(2, 9, dtype=torch.long)
    padding[1, :3] = 0                                    # second row: 3 pad positions on the left
    pos = (padding.cumsum(-1) - 1).clamp_min(0)           # positions count real tokens only
    with torch.no_grad():
        want = theirs(inputs_embeds=x, attention_mask=padding, position_ids=pos).last_hidden_state
        cos, sin = rotary_cos_sin(pos, rope_inv_freq(cfg.resolved_head_dim, cfg.rope_parameters["rope_theta"]))
        h = x
        mask = causal_mask(9, 9, x.dtype, padding=padding)
        for i, layer in enumerate(ours.layers):
            h, _ = layer(h, cos, sin, mask, None, i)
        got = ours.norm(h)
    real = padding.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)


def test_kv_cache_decoding_equals_full_forward(predictor_models):
    cfg, ours, _ = predictor_models
    x = torch.randn(1, 10, cfg.hidden_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = _run_ours(ours, cfg, x)
        cache = KVCache()
        steps = [_run_ours(ours, cfg, x[:, :6], cache=cache)]
        for t in range(6, 10):
            steps.append(_run_ours(ours, cfg, x[:, t:t + 1], cache=cache))
    assert cache.length == 10
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


def test_sliding_window_mask():
    m = causal_mask(5, 5, torch.float32, sliding_window=2)
    visible = (m == 0).int()[0, 0].tolist()
    assert visible == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]


def test_config_accepts_every_activation_layers_has_and_only_those():
    """The config's activation check reads layers.ACTIVATIONS itself: each name there builds a
    config, a name not there is refused with the field named."""
    from omni_ref.config import ConfigError
    from omni_ref.layers import ACTIVATIONS
    cfg = omni_ref.presets.config("tiny").thinker_config.text_config
    for act in ACTIVATIONS:
        assert cfg.replace(hidden_act=act).hidden_act == act
    with pytest.raises(ConfigError, match="hidden_act='swish2' is not one of"):
        cfg.replace(hidden_act="swish2")
