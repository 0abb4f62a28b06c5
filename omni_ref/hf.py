"""The Hugging Face twin: the only omni_ref module that imports transformers.

Parity in this project means: the same checkpoint directory loaded by HF (fp32, eager attention)
and by omni_ref gives equal tokens and codes and tensors within 1e-5. This module loads the HF side
and offers the helpers that tests and notebooks share to compare the two.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import os
import tempfile
import warnings

import torch
from safetensors import safe_open
import transformers
from transformers import (Qwen3OmniMoeConfig, Qwen3OmniMoeForConditionalGeneration,
                          Qwen3OmniMoeProcessor)
from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as hf_modeling
from transformers.utils import logging as hf_logging

from .checkpoint import _weight_map
from .config import OmniConfig
from .model import init_random_weights
from .presets import config_dict
from .tools import debug


@contextlib.contextmanager
def quiet():
    """Silence HF's notices for the calls inside the block, then put transformers' settings back as
    they were.

    Every function of this module runs under it (importing the module changes nothing
    process-wide); wrap your own direct calls on an HF object in `with hf.quiet():` for the same
    effect. What it hides:
    - HF warns that it does not know the multimodal rotary keys (mrope_section, interleaved) of a
      default rope; they are read by the Qwen3-Omni code itself, so the warning is noise for our
      purposes;
    - progress bars (loading and writing weights);
    - HF's generate notes that the Talker's repetition penalty skips its (embeddings-only) prompt:
      that is HF's behaviour, which we reproduce, not news to the user.
    """
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore",
                                    message="Passing `repetition_penalty` with `inputs_embeds`")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# ---- the KV cache keyword: `past_key_values` up to transformers 5.23, `cache` from 5.24 ----------

def _cache_keyword() -> str:
    """The name HF's decoders give their KV cache, read once from the Thinker decoder's signature.

    transformers 5.24 renamed `past_key_values` to `cache` in this model's forwards and outputs;
    the old name still works there but warns (a FutureWarning on the way in, a logged notice on
    the way out). Asking the signature, rather than the version number, keeps the helpers below
    right on both sides of the rename, which `make compat V=5.23.0` needs."""
    forward = hf_modeling.Qwen3OmniMoeThinkerTextModel.forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


CACHE_KEYWORD = _cache_keyword()


def cache_kwargs(cache) -> dict:
    """{keyword: cache} for a direct call on an HF decoder: `theirs(..., **hf.cache_kwargs(c))`."""
    return {CACHE_KEYWORD: cache}


def new_cache(config):
    """An empty HF KV cache (DynamicCache) for a decoder config, to pass with `cache_kwargs`."""
    return transformers.DynamicCache(config=config)


def output_cache(out):
    """The KV cache an HF output carries (`out.cache` from 5.24, `out.past_key_values` before)."""
    return getattr(out, CACHE_KEYWORD)


def version() -> str:
    """The transformers version this process imported (the pin, or the one `make compat` tries)."""
    return transformers.__version__


@quiet()
def hf_config(config: OmniConfig) -> Qwen3OmniMoeConfig:
    """Our config -> HF's, through the same config.json dictionary both sides read."""
    return Qwen3OmniMoeConfig(**config.to_hf_dict())


@quiet()
def load_hf(checkpoint_dir, dtype: torch.dtype = torch.float32, attn_implementation: str = "eager",
            experts_implementation: str | None = None) -> Qwen3OmniMoeForConditionalGeneration:
    """HF's model for `checkpoint_dir`, eager attention, refusing any missing or unexpected weight:
    a model with a randomly initialised tensor would make every parity check meaningless.

    attn_implementation / experts_implementation go to HF's from_pretrained (None: HF's default,
    grouped_mm experts); bench.py measures HF's default path with "sdpa" and None."""
    model, info = Qwen3OmniMoeForConditionalGeneration.from_pretrained(
        os.fspath(checkpoint_dir), dtype=dtype, attn_implementation=attn_implementation,
        experts_implementation=experts_implementation, output_loading_info=True)
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
    problems = {k: sorted(v) for k, v in info.items() if v and k in kinds}
    if problems:
        raise RuntimeError(f"HF could not load {checkpoint_dir} cleanly: {problems}")
    return model.eval()


@quiet()
def load_hf_processor(checkpoint_dir) -> Qwen3OmniMoeProcessor:
    return Qwen3OmniMoeProcessor.from_pretrained(os.fspath(checkpoint_dir))


@quiet()
def checkpoint_tensors(checkpoint_dir) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory by its file key (single file or shards)."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    out = {}
    weight_map = _weight_map(checkpoint_dir)
    for fname in sorted(set(weight_map.values())):
        with safe_open(os.path.join(checkpoint_dir, fname), "pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


@quiet()
def hf_checkpoint_tensors(model: Qwen3OmniMoeForConditionalGeneration) -> dict[str, torch.Tensor]:
    """What HF's model would write as a checkpoint (its own save_pretrained and key conversion)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return checkpoint_tensors(tmp)


def compare_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Differences between two {key: tensor} dicts, one line each; empty when they are equal."""
    diffs = [f"only in first: {k}" for k in sorted(set(a) - set(b))]
    diffs += [f"only in second: {k}" for k in sorted(set(b) - set(a))]
    for k in sorted(set(a) & set(b)):
        if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype:
            diffs.append(f"{k}: {tuple(a[k].shape)} {a[k].dtype} vs {tuple(b[k].shape)} "
                         f"{b[k].dtype}")
        elif not torch.equal(a[k], b[k]):
            diffs.append(f"{k}: max |diff| "
                         f"{(a[k].double() - b[k].double()).abs().max().item():.3g}")
    return diffs


# ---- HF's own tiny Thinker test configuration, and the HF side of the per-layer diff report ----

# The Thinker config of HF's test suite, value for value: transformers tests/models/qwen3_omni_moe/
# test_modeling_qwen3_omni_moe.py, Qwen3OmniMoeThinkerForConditionalGenerationTester (read at
# commit 007173730df7). HF tests only a Thinker; `write_hf_test_checkpoint` wraps it in a full
# config.
HF_TEST_THINKER_CONFIG = {
    "text_config": {
        "rope_parameters": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default",
                            "interleaved": True},
        "vocab_size": 99, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
        "max_position_embeddings": 1024, "rms_norm_eps": 1e-06, "use_cache": True,
        "tie_word_embeddings": False, "rope_theta": 1000000.0, "use_sliding_window": False,
        "sliding_window": 50, "max_window_layers": 3, "attention_dropout": 0.0, "pad_token_id": 0,
        "initializer_range": 0.02, "moe_intermediate_size": 32, "num_experts_per_tok": 2,
        "num_experts": 8, "decoder_sparse_step": 1,
    },
    "audio_config": {"d_model": 32, "encoder_attention_heads": 4, "encoder_ffn_dim": 32,
                     "encoder_layers": 2, "num_mel_bins": 20, "max_source_positions": 1500,
                     "initializer_range": 0.02, "downsample_hidden_size": 32, "n_window": 50,
                     "output_dim": 32, "n_window_infer": 100},
    "vision_config": {"depth": 2, "embed_dim": 32, "hidden_act": "quick_gelu", "hidden_size": 32,
                      "out_hidden_size": 32, "intermediate_size": 24, "mlp_ratio": 4,
                      "num_heads": 4, "patch_size": 16, "spatial_merge_size": 1,
                      "temporal_patch_size": 2, "initializer_range": 0.02,
                      "deepstack_visual_indexes": [1]},
    "audio_token_id": 1, "image_token_id": 2, "video_token_id": 3, "position_id_per_seconds": 13,
    "seconds_per_chunk": 2, "audio_start_token_id": 4, "audio_end_token_id": 5, "user_token_id": 6,
    "vision_start_token_id": 7, "vision_end_token_id": 8, "initializer_range": 0.02,
}


@quiet()
def write_hf_test_checkpoint(out_dir, seed: int = 0) -> str:
    """A checkpoint of HF's test Thinker, written by HF's save_pretrained (Thinker weights only).

    Around HF's Thinker config we add what a full Qwen3OmniMoeConfig needs and HF's test leaves at
    defaults that do not fit a 99-token vocabulary: enable_audio_output=False (no Talker is built
    or saved; the tiny preset's Talker config, re-pointed at a 32-wide Thinker, keeps our config
    validation whole) and chat ids inside the vocabulary. Weights: HF's init, then omni_ref's
    seeded init over the Thinker so that norm weights are not all ones. HF's test config carries
    keys that no Qwen3-Omni class reads (text_config max_window_layers / use_sliding_window,
    vision_config embed_dim / mlp_ratio); config.py ignores them.
    """
    tiny = config_dict("tiny")
    talker = copy.deepcopy(tiny["talker_config"])
    talker["thinker_hidden_size"] = HF_TEST_THINKER_CONFIG["text_config"]["hidden_size"]
    cfg = Qwen3OmniMoeConfig(
        thinker_config=copy.deepcopy(HF_TEST_THINKER_CONFIG), talker_config=talker,
        code2wav_config=tiny["code2wav_config"], enable_audio_output=False,
        im_start_token_id=90, im_end_token_id=91, system_token_id=92, user_token_id=6,
        assistant_token_id=93, tts_pad_token_id=94, tts_bos_token_id=95, tts_eos_token_id=96)
    # HF's init draws from the global generator: seed it for this build, then restore it
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3OmniMoeForConditionalGeneration(cfg)
    init_random_weights(model.thinker, seed=seed)
    model.save_pretrained(os.fspath(out_dir))
    return os.fspath(out_dir)


def _hf_thinker(model):
    return model.thinker if hasattr(model, "thinker") else model


@quiet()
@torch.no_grad()
def hf_thinker_trace(model, **inputs) -> dict:
    """HF's per-layer record in debug.thinker_trace's format: hidden_states (HF layout), experts
    per layer (recomputed from HF's router logits exactly as its router does: softmax in fp32, then
    top-k) and logits."""
    thinker = _hf_thinker(model)
    out = thinker(**inputs, output_hidden_states=True, output_router_logits=True, use_cache=False)
    text = thinker.config.text_config
    router_logits = iter(out.router_logits)
    experts = []
    for layer in thinker.model.language_model.layers:
        if hasattr(layer.mlp, "gate"):
            probs = torch.softmax(next(router_logits), dim=-1, dtype=torch.float32)
            experts.append(torch.topk(probs, text.num_experts_per_tok, dim=-1).indices)
        else:
            experts.append(None)
    return {"hidden_states": [h.detach() for h in out.hidden_states], "experts": experts,
            "logits": out.logits.detach()}


@quiet()
def thinker_layer_report(ours, theirs, atol: float = 1e-5, **inputs) -> list[str]:
    """The per-layer diff report (debug.layer_diff_report) of our Thinker against HF's on the same
    inputs. ours, theirs: the Thinker or the whole model of each side."""
    ours = ours.thinker if hasattr(ours, "thinker") else ours
    return debug.layer_diff_report(debug.thinker_trace(ours, **inputs),
                                   hf_thinker_trace(theirs, **inputs), atol)


@quiet()
def hf_speech(model, **kwargs) -> dict:
    """HF's generate(return_audio=True), plus what it passed between its stages.

    HF returns only the text ids and the waveform; to compare codec codes and the Talker's prompt
    we listen in on the two calls generate makes between stages: `talker.generate(**kw)` (kw holds
    the Talker prompt, `inputs_embeds`) and `code2wav.chunked_decode(codes, ...)`. Returns
    {"text_ids", "wav", "talker_kwargs", "talker_result", "codes"}."""
    seen = {}
    talker_generate, chunked_decode = model.talker.generate, model.code2wav.chunked_decode

    def talker_spy(**kw):
        seen["talker_kwargs"] = kw
        seen["talker_result"] = talker_generate(**kw)
        return seen["talker_result"]

    def code2wav_spy(codes, **kw):
        seen["codes"] = codes.clone()
        return chunked_decode(codes, **kw)

    model.talker.generate, model.code2wav.chunked_decode = talker_spy, code2wav_spy
    try:
        seen["text_ids"], seen["wav"] = model.generate(return_audio=True, **kwargs)
    finally:
        del model.talker.generate, model.code2wav.chunked_decode     # back to the class methods
    return seen
