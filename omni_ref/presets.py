"""Ready-made configs and random-weight checkpoints that run offline on a laptop CPU.

    tiny   seconds-fast, for tests. Every mechanism of the real model is present (MoE with top-k, shared expert,
           deepstack, interleaved 3-axis rotary, 1920 samples per codec frame), at toy widths.
    demo   for notebooks: keeps the real model's ratios where they are cheap (16 code groups of 2048 codes,
           1920 samples per frame at 24 kHz, 128 mel bins, patch 16, merge 2, 64 experts with top-8), a few
           layers each.
    toy    a small Thinker trained on three synthetic tasks (image colour, beep count, ball direction) by
           `python -m omni_ref.train_toy`; its weights are committed in data/toy/, so `write_checkpoint("toy", d)`
           needs no training. The Talker and Code2Wav stay random (seeded): the toy model answers in text.
    real   Qwen3-Omni-30B-A3B-Instruct's published config (35,259,818,545 parameters). Build it on the meta
           device only (`torch.device("meta")`): 70 GB of bf16 weights do not fit a laptop.

The tiny and demo token ids come from our offline tokenizer (data/tokenizer/token_ids.json), so the configs and
the tokenizer cannot disagree; the real preset keeps Qwen's ids (151644 for <|im_start|>, ...).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path

import torch

from .checkpoint import save
from .config import OmniConfig
from .model import Qwen3Omni, init_random_weights

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
TOKENIZER_DIR = REPO_DIR / "data" / "tokenizer"
TOY_DIR = REPO_DIR / "data" / "toy"                    # the trained toy Thinker and its training log
REAL_CONFIG = PACKAGE_DIR / "real_config.json"
# Files of data/tokenizer/ that are for building the tokenizer, not part of a checkpoint directory.
NOT_CHECKPOINT_FILES = {"corpus.txt", "token_ids.json"}
PRESETS = ("tiny", "demo", "toy", "real")


def token_ids() -> dict[str, int]:
    path = TOKENIZER_DIR / "token_ids.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python scripts/make_tokenizer.py` to rebuild the "
                                f"offline tokenizer.")
    return json.loads(path.read_text())


def _rope(head_dim: int, theta: float = 1_000_000.0, multimodal: bool = True) -> dict:
    """Rotary settings. Multimodal (TM-RoPE) splits head_dim/2 frequency pairs between time, height and width
    in the real model's proportions 24:20:20, interleaved across the head."""
    if not multimodal:
        return {"rope_type": "default", "rope_theta": theta}
    half = head_dim // 2
    h = w = half * 20 // 64
    return {"rope_type": "default", "rope_theta": theta, "mrope_section": [half - h - w, h, w],
            "interleaved": True, "mrope_interleaved": True}


def _small(*, text: dict, audio: dict, vision: dict, talker_text: dict, predictor: dict, code2wav: dict,
           codebook: int, groups: int, accept_layer: int) -> dict:
    """A full config dict at small widths, with the token and codec ids wired consistently."""
    ids = token_ids()
    thinker_h = text["hidden_size"]
    # Codec control ids sit above the codebook at the real model's offsets (pad = codebook + 100, ...), and the
    # Talker vocabulary is codebook + 1024, the rule HF's generate relies on (config.TalkerConfig.check_codec_ids).
    codec = {"codec_pad_id": codebook + 100, "codec_bos_id": codebook + 101, "codec_eos_token_id": codebook + 102,
             "codec_nothink_id": codebook + 107, "codec_think_bos_id": codebook + 108,
             "codec_think_eos_id": codebook + 109,
             "speaker_id": {"chelsie": codebook + 253, "ethan": codebook + 254, "aiden": codebook + 255}}
    media = {k: ids[k] for k in ("audio_token_id", "image_token_id", "video_token_id", "audio_start_token_id",
                                 "audio_end_token_id", "vision_start_token_id", "vision_end_token_id")}
    return {
        "thinker_config": {
            "text_config": {"vocab_size": 2048, "rms_norm_eps": 1e-6, "norm_topk_prob": True,
                            "max_position_embeddings": 8192, "decoder_sparse_step": 1, **text},
            "audio_config": {"num_mel_bins": 128, "n_window": 50, "n_window_infer": 800, "conv_chunksize": 500,
                             "max_source_positions": 1500, "output_dim": thinker_h, **audio},
            "vision_config": {"patch_size": 16, "temporal_patch_size": 2, "spatial_merge_size": 2,
                              "in_channels": 3, "out_hidden_size": thinker_h, "hidden_act": "gelu_pytorch_tanh",
                              **vision},
            "position_id_per_seconds": 13, "seconds_per_chunk": 2, "user_token_id": ids["user_token_id"],
            **media,
        },
        "talker_config": {
            "text_config": {"vocab_size": codebook + 1024, "rms_norm_eps": 1e-6, "norm_topk_prob": True,
                            "max_position_embeddings": 8192, **talker_text},
            "code_predictor_config": {"vocab_size": codebook, "num_code_groups": groups, "rms_norm_eps": 1e-6,
                                      "max_position_embeddings": 8192, **predictor},
            "num_code_groups": groups, "thinker_hidden_size": thinker_h, "accept_hidden_layer": accept_layer,
            "spatial_merge_size": 2, "position_id_per_seconds": 13, "seconds_per_chunk": 2, **codec,
            **{k: v for k, v in media.items() if k != "vision_end_token_id"},
        },
        "code2wav_config": {"codebook_size": codebook, "num_quantizers": groups, "upsample_rates": [8, 5, 4, 3],
                            "upsampling_ratios": [2, 2], "sliding_window": 72, "max_position_embeddings": 8000,
                            "rms_norm_eps": 1e-5, "layer_scale_initial_scale": 0.01,
                            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, **code2wav},
        **{k: ids[k] for k in ("im_start_token_id", "im_end_token_id", "tts_pad_token_id", "tts_bos_token_id",
                               "tts_eos_token_id", "system_token_id", "user_token_id", "assistant_token_id")},
    }


# The tiny preset's Talker, MTP and Code2Wav, reused (random) by the toy preset.
_TINY_SPEECH = dict(
    talker_text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=8, rope_parameters=_rope(8), num_experts=8,
                     num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=32),
    predictor=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=8, rope_parameters=_rope(8, multimodal=False)),
    code2wav=dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=4, intermediate_size=64,
                  num_hidden_layers=1, decoder_dim=32),
    codebook=128, groups=4, accept_layer=1)


def _tiny() -> dict:
    return _small(
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, rope_parameters=_rope(16), num_experts=8,
                  num_experts_per_tok=2, moe_intermediate_size=32),
        audio=dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                   downsample_hidden_size=16),
        vision=dict(depth=3, hidden_size=32, num_heads=2, intermediate_size=64, num_position_embeddings=256,
                    deepstack_visual_indexes=[1, 2]),
        **_TINY_SPEECH)


def _demo() -> dict:
    return _small(
        text=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=32, rope_parameters=_rope(32), num_experts=64,
                  num_experts_per_tok=8, moe_intermediate_size=64),
        audio=dict(d_model=128, encoder_layers=4, encoder_attention_heads=4, encoder_ffn_dim=512,
                   downsample_hidden_size=64),
        vision=dict(depth=4, hidden_size=128, num_heads=4, intermediate_size=512, num_position_embeddings=2304,
                    deepstack_visual_indexes=[1, 2, 3]),
        talker_text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=32, rope_parameters=_rope(32), num_experts=32,
                         num_experts_per_tok=6, moe_intermediate_size=64, shared_expert_intermediate_size=128),
        predictor=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=32, rope_parameters=_rope(32, multimodal=False)),
        code2wav=dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=4, intermediate_size=384,
                      num_hidden_layers=2, decoder_dim=256),
        codebook=2048, groups=16, accept_layer=2)


def _toy() -> dict:
    """The toy Thinker: big enough to learn the three tasks of toy_tasks.py in minutes on a CPU, small enough
    that its fp32 weights are a few MB. MoE with 8 experts, top-2, in every layer, so routing is real; the
    audio and vision towers are kept (they have to learn to hear beeps and see colour and motion). The
    load-balancing coefficient is 0.01, ten times the released model's 0.001: with 8 experts and short
    training runs the weaker push does not keep the experts in use (notebook 08 measures both)."""
    d = _small(
        text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, rope_parameters=_rope(32), num_experts=8,
                  num_experts_per_tok=2, moe_intermediate_size=128, router_aux_loss_coef=0.01),
        audio=dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                   downsample_hidden_size=32),
        vision=dict(depth=2, hidden_size=128, num_heads=4, intermediate_size=256, num_position_embeddings=256,
                    deepstack_visual_indexes=[1]),
        **{k: v for k, v in _TINY_SPEECH.items()})
    return d


def config_dict(name: str) -> dict:
    """The preset's config.json content (before defaults are filled in)."""
    if name == "tiny":
        return _tiny()
    if name == "demo":
        return _demo()
    if name == "toy":
        return _toy()
    if name == "real":
        return json.loads(REAL_CONFIG.read_text())
    raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")


def config(name: str) -> OmniConfig:
    return OmniConfig.from_dict(config_dict(name), where=f"preset {name!r}")


def build_meta(name_or_config="real", components=("thinker", "talker", "code2wav")) -> Qwen3Omni:
    """The module tree with shapes but no storage: for counting parameters and bytes of any size of model."""
    cfg = config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.device("meta"):
        return Qwen3Omni(cfg, components)


def write_checkpoint(name: str, out_dir, seed: int = 0) -> str:
    """Write a preset checkpoint in HF format, plus the offline tokenizer and processor files.

    tiny / demo: random weights. toy: the trained Thinker of data/toy/thinker.safetensors (`make toy` made it),
    with a random (seeded) Talker and Code2Wav. The same (name, seed) gives the same bytes on every machine.
    The directory loads with
    `omni_ref.load(out_dir)`, HF `Qwen3OmniMoeForConditionalGeneration.from_pretrained(out_dir)` and
    `Qwen3OmniMoeProcessor.from_pretrained(out_dir)`, all without network.
    """
    if name == "real":
        raise ValueError("the real preset has 35B parameters: build it with build_meta('real') for counting, "
                         "and load the published weights with omni_ref.load(path) if you have them")
    cfg = config(name)
    with torch.random.fork_rng(devices=[]):   # the modules' default init draws from the global generator:
        model = Qwen3Omni(cfg)                # leave the caller's random stream where it was
    init_random_weights(model, seed)
    if name == "toy":
        load_toy_thinker(model.thinker)
    out_dir = os.fspath(out_dir)
    save(model, out_dir)
    copy_tokenizer_files(out_dir)
    return out_dir


def toy_weights_path() -> Path:
    path = TOY_DIR / "thinker.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: it is committed with the repository; to retrain it, run "
                                f"`make toy` (python -m omni_ref.train_toy, about 15 minutes on 2 cores).")
    return path


def load_toy_thinker(thinker, path=None) -> None:
    """Fill a toy-config Thinker with the trained weights (default: the committed data/toy/thinker.safetensors)."""
    from safetensors.torch import load_file
    thinker.load_state_dict(load_file(os.fspath(path or toy_weights_path())), strict=True)


def copy_tokenizer_files(out_dir) -> None:
    for src in sorted(TOKENIZER_DIR.iterdir()):
        if src.is_file() and src.name not in NOT_CHECKPOINT_FILES:
            shutil.copyfile(src, os.path.join(out_dir, src.name))


def cached_checkpoint(name: str, seed: int = 0, root=None) -> str:
    """Path to a preset checkpoint, written on first use under `root` (default: .cache/ in the repo, or
    $OMNI_REF_CACHE). The folder name carries a hash of everything that shapes its bytes, so a changed preset or
    init is written afresh instead of silently reused."""
    root = Path(root or os.environ.get("OMNI_REF_CACHE", REPO_DIR / ".cache"))
    recipe = json.dumps(config_dict(name), sort_keys=True) + inspect.getsource(init_random_weights)
    recipe += "".join(f"{n}{tuple(p.shape)}" for n, p in build_meta(name).named_parameters())   # the module tree
    for f in sorted(TOKENIZER_DIR.glob("*")):
        recipe += f.read_text() if f.suffix in (".json", ".jinja") else ""
    if name == "toy":                                   # the trained weights shape its bytes too
        recipe += hashlib.sha256(toy_weights_path().read_bytes()).hexdigest()
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:10]
    out = root / f"{name}-seed{seed}-{digest}"
    if not (out / "config.json").is_file():
        tmp = root / f".{out.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        write_checkpoint(name, tmp, seed)
        try:
            os.replace(tmp, out)            # atomic: a parallel writer that lost the race leaves no half folder
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return os.fspath(out)
