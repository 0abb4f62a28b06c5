"""Configs as plain dataclasses, read from and written to a Hugging Face ``config.json``.

Mirrors ``transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe`` (Qwen3OmniMoeConfig and
its sub-configs). Field names are HF's, so a ``config.json`` written by ``save_pretrained`` reads
straight in and what we write reads straight back into HF. What we add is validation: a value that
cannot build a working model (more experts per token than experts, heads that do not divide the
width, a rotary split that does not cover the head) is refused here, with the field named, instead
of failing later deep inside a matmul.

The tree (Qwen3-Omni Technical Report, arXiv 2509.17765, section 2: Thinker-Talker architecture):

    OmniConfig
      thinker_config: ThinkerConfig      audio_config (AuT), vision_config,
                                         text_config (MoE decoder)
      talker_config:  TalkerConfig       text_config (MoE decoder + shared expert),
                                         code_predictor_config (MTP)
      code2wav_config: Code2WavConfig    codec vocoder

The three decoder configs share their fields through two base classes: `_DecoderConfig` (what
every Qwen3 decoder has) and `_MoEDecoderConfig` (the experts of the Thinker and the Talker).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .layers import ACTIVATIONS

# Keys every HF config.json carries for HF's own bookkeeping. They say nothing about the
# architecture, so we accept and drop them. Any other key we do not know is refused (strict=True):
# a typo such as "num_expert" would otherwise be silently ignored and the model built with the
# default.
HF_BOOKKEEPING_KEYS = frozenset({
    "_name_or_path", "architectures", "chunk_size_feed_forward", "dtype", "torch_dtype",
    "id2label", "label2id", "is_encoder_decoder", "output_hidden_states", "output_attentions",
    "problem_type", "return_dict", "transformers_version", "model_type", "use_return_dict",
    "_attn_implementation_autoset", "tokenizer_class", "prefix", "task_specific_params",
    "finetuning_task", "pruned_heads", "tf_legacy_loss", "torchscript", "use_bfloat16",
    "add_cross_attention", "cross_attention_hidden_size", "decoder_start_token_id",
    "sep_token_id", "tie_encoder_decoder", "is_decoder",
})


class ConfigError(ValueError):
    """A config value that cannot describe a working Qwen3-Omni model (the message names it)."""


def read_json_object(path: str, error: type, what: str) -> dict:
    """A JSON file that must hold one object -> that dict; anything else raises `error` naming the
    file."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = ""
        if isinstance(e, json.JSONDecodeError):
            where = f" (line {e.lineno}, column {e.colno}: {e.msg})"
        raise error(f"{path} is not valid JSON{where}. It should hold {what} as one JSON object; "
                    f"was the file cut short or edited by hand? Restore it from the original "
                    f"checkpoint.") from None
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or e}); it should hold {what}.") from None
    if not isinstance(d, dict):
        raise error(f"{path} holds a JSON {type(d).__name__}, but it should hold {what} as one "
                    f"JSON object {{...}}.")
    return d


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


def _check_activation(value: str, name: str, where: str) -> None:
    _check(value in ACTIVATIONS, where, f"{name}={value!r} is not one of {tuple(ACTIVATIONS)}")


@dataclass
class _HFConfig:
    """Shared read/write logic. Subclasses declare HF's fields and may name nested sub-configs."""

    model_type: ClassVar[str] = ""
    sub_configs: ClassVar[dict[str, type]] = {}
    # HF sometimes renames a field on the way out (attribute_map); we accept both names when
    # reading.
    aliases: ClassVar[dict[str, str]] = {}
    # Keys that Qwen-family config.json files carry (older classes, HF's own test configs) but that
    # no Qwen3-Omni class reads: accepted and dropped, so they neither fail a strict read nor
    # pretend to mean something.
    ignored_keys: ClassVar[frozenset] = frozenset()

    @classmethod
    def from_dict(cls, d: dict[str, Any], strict: bool = True, where: str | None = None,
                  _nested: bool = False):
        where = where or cls.__name__
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs, unknown = {}, []
        for key, value in d.items():
            key = cls.aliases.get(key, key)
            if key in cls.sub_configs:
                sub = cls.sub_configs[key]
                kwargs[key] = value if isinstance(value, sub) else sub.from_dict(
                    {} if value is None else value, strict=strict, where=f"{where}.{key}",
                    _nested=True)
            elif key in names:
                kwargs[key] = value
            elif key not in HF_BOOKKEEPING_KEYS and key not in cls.ignored_keys:
                unknown.append(key)
        if unknown and strict:
            raise ConfigError(
                f"{where}: unknown key(s) {sorted(unknown)}. Check the spelling against HF's "
                f"{cls.__name__} fields, or pass strict=False to ignore them.")
        for key, sub in cls.sub_configs.items():
            kwargs.setdefault(key, sub())
        check_field_values(cls, kwargs, where)
        cfg = cls(**kwargs)
        if not _nested:   # the outermost call validates the whole tree once
            cfg.validate(where)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, _HFConfig) else _plain(value)
        if self.model_type:
            out["model_type"] = self.model_type
        return out

    def validate(self, where: str) -> None:  # extended where there is something to check
        for key in self.sub_configs:
            getattr(self, key).validate(f"{where}.{key}")

    def replace(self, **changes):
        """A copy with some fields changed, validated again."""
        new = dataclasses.replace(self, **changes)
        new.validate(type(self).__name__)
        return new


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---- the values read: each one's type and range, checked before anything uses them -------------
# A config.json is typed by hand or by other tools; a value of the wrong type ("rms_norm_eps":
# "1e-6") or out of range (a negative width) would otherwise load and fail much later, deep inside
# a forward pass. The type is the one the dataclass declares.

# Integer fields that may be 0 (the rest of the sizes and counts must be at least 1).
MAY_BE_ZERO = frozenset({"shared_expert_intermediate_size", "accept_hidden_layer",
                         "max_window_layers"})
SIZE_PARTS = ("size", "dim", "d_model", "layers", "heads", "num_", "depth", "window", "positions",
              "position_embeddings", "channels", "chunksize", "step", "groups", "quantizers",
              "per_tok", "per_second", "per_chunk", "n_window", "experts")
ROPE_TYPES = {"rope_type": str, "type": str, "rope_theta": float, "mrope_section": list[int],
              "interleaved": bool, "mrope_interleaved": bool}


@functools.lru_cache(maxsize=None)
def _field_types(cls) -> dict[str, Any]:
    """Field name -> declared type (annotations are strings under `from __future__ import
    annotations`, so they are resolved here)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if f.name not in cls.sub_configs}


def _fits(value, hint) -> bool:
    """Whether a JSON value is of the declared type. bool is not an int here, and a float must be
    finite."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    if hint is list or origin is list:
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value if args)
    if hint is dict or origin is dict:
        return isinstance(value, dict) and (not args or all(
            _fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items()))
    return isinstance(value, hint)


def _type_words(hint) -> str:
    """A declared type in words, as a config.json author would write it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_words(a) for a in args)
    if hint is type(None):
        return "null"

    def bare(h) -> str:   # "an integer" -> "integer"
        return _type_words(h).replace('an ', '').replace('a ', '')

    if origin is list:
        return f"a list of {bare(args[0])}s"
    if origin is dict:
        return f"an object of {bare(args[0])} -> {bare(args[1])}"
    words = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
             dict: "an object", list: "a list", Any: "anything"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    kinds = {int: "an integer", float: "a number with a decimal point", str: "a string",
             list: "a list", tuple: "a list", dict: "an object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _fix(value, hint) -> str:
    """What to write instead, when it is obvious."""
    if isinstance(value, str) and value in ("true", "false") and _fits(value == "true", hint):
        return f": write {value} without quotes"
    if isinstance(value, str):
        for as_type in (int, float):
            try:
                number = as_type(value)
            except ValueError:
                continue
            if _fits(number, hint):
                return f": write {number!r} without quotes"
    if isinstance(value, float) and math.isfinite(value) and _fits(round(value), hint):
        example = f", e.g. {round(value)}" if value == round(value) else ""
        return ": it must be a whole number" + example
    if not isinstance(value, (list, tuple)) and _fits([value], hint):
        return f": write it as a list, [{json.dumps(value)}]"
    if _fits({"name": 1}, hint) and not isinstance(value, dict):
        return ': write it as an object, {"name": id, ...}'
    return ""


def _range_problem(name: str, value) -> str | None:
    """A value of the right type that still cannot describe a model (a width of 0, a negative
    id, ...)."""
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, dict):
        if name == "speaker_id":
            bad = {k: v for k, v in value.items() if v < 0}
            return f"speaker ids must be >= 0, got {bad}" if bad else None
        return None
    if isinstance(value, (list, tuple)):
        low = 1 if name in ("upsample_rates", "upsampling_ratios") else 0
        bad = [v for v in value if isinstance(v, (int, float)) and v < low]
        return f"has entries below {low}: {bad}" if bad else None
    if name.endswith("_id") or name in MAY_BE_ZERO or name.startswith("mlp_only"):
        return None if value >= 0 else "must be >= 0"
    if "dropout" in name:
        return None if 0 <= value < 1 else "must be a probability in [0, 1)"
    if name.endswith("eps"):
        return None if value > 0 else "must be > 0 (it keeps a division away from zero)"
    if name in ("initializer_range", "router_aux_loss_coef"):
        return None if value >= 0 else "must be >= 0"
    is_size = any(part in name for part in SIZE_PARTS) or name == "vocab_size"
    if isinstance(value, int) and is_size:
        return None if value >= 1 else "must be >= 1 (a size or a count)"
    return None


def check_field_values(cls, values: dict[str, Any], where: str) -> None:
    """Refuse a value that does not fit its field's declared type or range, naming the field and
    the fix. Runs where a dataclass is built from a config dictionary (`_HFConfig.from_dict`),
    before any check uses it."""
    types_ = _field_types(cls)
    for name, value in values.items():
        if name not in types_:
            continue
        hint = types_[name]
        if not _fits(value, hint):
            raise ConfigError(f"{where}: {name}={value!r:.80} is {_kind(value)}, but {name} must "
                              f"be {_type_words(hint)}{_fix(value, hint)}")
        if name == "rope_parameters" and value is not None:
            _check_rope_values(value, where)
            continue
        problem = _range_problem(name, value)
        if problem:
            raise ConfigError(f"{where}: {name}={value!r:.80} {problem}")


def _check_rope_values(rope: dict, where: str) -> None:
    """The typed entries of HF's `rope_parameters` dict, and the ranges of theta and the split."""
    for key, key_type in ROPE_TYPES.items():
        if key in rope and not _fits(rope[key], key_type):
            raise ConfigError(f"{where}: rope_parameters.{key}={rope[key]!r:.80} is "
                              f"{_kind(rope[key])}, but it must be {_type_words(key_type)}"
                              f"{_fix(rope[key], key_type)}")
    theta = rope.get("rope_theta", 1.0)
    if theta <= 0:
        raise ConfigError(f"{where}: rope_parameters.rope_theta={theta!r} must be > 0 (the base "
                          f"of the rotary frequencies)")
    bad = [v for v in rope.get("mrope_section") or [] if v < 0]
    if bad:
        raise ConfigError(f"{where}: rope_parameters.mrope_section entries must be >= 0, "
                          f"got {bad}")


class _Rotary:
    """For configs with HF's `rope_parameters` dict: its rope_theta, or the class's HF default.

    HF fills a missing rope_theta with the config class's `default_theta`: 1e6 for the Thinker's
    text config, the library-wide 1e4 for every other class (the presets and the release always
    name it)."""

    default_rope_theta: ClassVar[float] = 10_000.0

    @property
    def rope_theta(self) -> float:
        return (self.rope_parameters or {}).get("rope_theta", self.default_rope_theta)


# -------------------------------------------------------------------------------------------------
# The decoders: Thinker text, Talker text, MTP code predictor


@dataclass
class _DecoderConfig(_Rotary, _HFConfig):
    """The fields every Qwen3 decoder config declares, with the defaults HF's three classes share.

    Each subclass adds its sizes (vocab_size, hidden_size, intermediate_size, num_hidden_layers,
    num_attention_heads, num_key_value_heads), whose defaults differ from class to class."""

    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    tie_word_embeddings: bool = False
    rope_parameters: dict | None = None
    attention_bias: bool = False
    sliding_window: int | None = None
    attention_dropout: float = 0.0
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    @property
    def resolved_head_dim(self) -> int:
        """HF falls back to hidden_size // num_attention_heads when head_dim is absent. The real
        Thinker sets it explicitly (128) and it is NOT hidden_size / heads (2048 / 32 = 64):
        attention is wider than the stream."""
        if self.head_dim is not None:
            return self.head_dim
        return self.hidden_size // self.num_attention_heads

    def validate(self, where: str) -> None:
        super().validate(where)
        heads, kv_heads = self.num_attention_heads, self.num_key_value_heads
        _check(heads > 0 and kv_heads > 0, where, "head counts must be positive")
        _check(heads % kv_heads == 0, where,
               f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads} "
               f"(grouped-query attention shares each K/V head among a whole number of query "
               f"heads)")
        _check(self.head_dim is None or (self.head_dim > 0 and self.head_dim % 2 == 0), where,
               f"head_dim={self.head_dim} must be a positive even number (rotary embedding "
               f"rotates pairs)")
        _check_activation(self.hidden_act, "hidden_act", where)
        rope = self.rope_parameters or {}
        _check(rope.get("rope_type", "default") == "default", where,
               f"rope_parameters.rope_type={rope.get('rope_type')!r}: only 'default' rotary is "
               f"used by Qwen3-Omni")
        section = rope.get("mrope_section")
        if section is not None:
            half = self.resolved_head_dim // 2
            _check(len(section) == 3 and sum(section) == half, where,
                   f"rope_parameters.mrope_section={list(section)} must have 3 entries (time, "
                   f"height, width) summing to head_dim // 2 = {half}")


@dataclass
class _MoEDecoderConfig(_DecoderConfig):
    """The mixture-of-experts fields the Thinker's and the Talker's decoders share.

    Each subclass adds moe_intermediate_size, norm_topk_prob and shared_expert_intermediate_size,
    whose defaults differ."""

    decoder_sparse_step: int = 1
    num_experts_per_tok: int = 8
    num_experts: int = 128
    output_router_logits: bool = False
    router_aux_loss_coef: float = 0.001
    mlp_only_layers: list[int] = field(default_factory=list)

    def is_moe_layer(self, i: int) -> bool:
        """HF's rule: layer i is sparse unless in mlp_only_layers, every decoder_sparse_step-th."""
        return i not in self.mlp_only_layers and (i + 1) % self.decoder_sparse_step == 0

    def validate(self, where: str) -> None:
        super().validate(where)
        n, k, layers = self.num_experts, self.num_experts_per_tok, self.num_hidden_layers
        _check(n > 0, where, "num_experts must be positive")
        _check(0 < k <= n, where,
               f"num_experts_per_tok={k} must be between 1 and num_experts={n}")
        _check(self.decoder_sparse_step >= 1, where, "decoder_sparse_step must be >= 1")
        bad = [i for i in self.mlp_only_layers if not 0 <= i < layers]
        _check(not bad, where, f"mlp_only_layers {bad} are outside 0..{layers - 1}")


# -------------------------------------------------------------------------------------------------
# Thinker


@dataclass
class AudioEncoderConfig(_HFConfig):
    """AuT audio encoder (HF Qwen3OmniMoeAudioEncoderConfig; report section 2.2)."""

    model_type: ClassVar[str] = "qwen3_omni_moe_audio_encoder"
    aliases: ClassVar[dict[str, str]] = {"num_hidden_layers": "encoder_layers",
                                         "hidden_size": "d_model",
                                         "num_attention_heads": "encoder_attention_heads",
                                         "intermediate_size": "encoder_ffn_dim"}
    num_mel_bins: int = 128
    encoder_layers: int = 32
    encoder_attention_heads: int = 20
    encoder_ffn_dim: int = 5120
    d_model: int = 1280
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_function: str = "gelu"
    activation_dropout: float = 0.0
    scale_embedding: bool = False
    initializer_range: float = 0.02
    max_source_positions: int = 1500
    n_window: int = 50              # a conv chunk is 2 * n_window mel frames (1 s)
    output_dim: int = 3584          # = the Thinker's hidden size
    n_window_infer: int = 800       # attention window in mel frames (8 s)
    conv_chunksize: int = 500
    downsample_hidden_size: int = 480

    def validate(self, where: str) -> None:
        super().validate(where)
        heads = self.encoder_attention_heads
        _check(self.d_model % heads == 0, where,
               f"d_model={self.d_model} is not divisible by encoder_attention_heads={heads}")
        _check(self.d_model % 2 == 0, where,
               f"d_model={self.d_model} must be even (sinusoidal positions)")
        _check_activation(self.activation_function, "activation_function", where)
        chunk = 2 * self.n_window
        _check(self.n_window_infer % chunk == 0, where,
               f"n_window_infer={self.n_window_infer} must be a multiple of 2 * n_window = "
               f"{chunk}")

    @property
    def freq_after_convs(self) -> int:
        """Mel bins left after three stride-2 convolutions (128 -> 64 -> 32 -> 16)."""
        f = self.num_mel_bins
        for _ in range(3):
            f = (f + 1) // 2
        return f


@dataclass
class VisionEncoderConfig(_Rotary, _HFConfig):
    """Vision tower (HF Qwen3OmniMoeVisionEncoderConfig; SigLIP2-style ViT with deepstack)."""

    model_type: ClassVar[str] = "qwen3_omni_moe_vision_encoder"
    ignored_keys: ClassVar[frozenset] = frozenset({"embed_dim", "mlp_ratio"})   # Qwen2-VL's names
    aliases: ClassVar[dict[str, str]] = {"num_attention_heads": "num_heads",
                                         "num_hidden_layers": "depth"}
    depth: int = 27
    hidden_size: int = 1152
    hidden_act: str = "gelu_pytorch_tanh"
    intermediate_size: int = 4304
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 16
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    out_hidden_size: int = 3584
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: list[int] = field(default_factory=lambda: [8, 16, 24])
    initializer_range: float = 0.02
    rope_parameters: dict | None = None
    # Present in the published config.json; kept so a round trip loses nothing. Not used by the
    # model code.
    spatial_patch_size: int | None = None
    image_size: int | None = None
    apply_vit_abs_pos_embed: bool | None = None
    tokens_per_second: int | None = None

    def validate(self, where: str) -> None:
        super().validate(where)
        _check(self.hidden_size % self.num_heads == 0, where,
               f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        _check((self.hidden_size // self.num_heads) % 4 == 0, where,
               f"the head dim hidden_size / num_heads = {self.hidden_size // self.num_heads} "
               f"must be a multiple of 4 (2D rotary splits it between rows and columns)")
        side = round(self.num_position_embeddings ** 0.5)
        _check(side * side == self.num_position_embeddings, where,
               f"num_position_embeddings={self.num_position_embeddings} must be a square number "
               f"(a side x side grid of learned positions that is interpolated to each image)")
        bad = [i for i in self.deepstack_visual_indexes if not 0 <= i < self.depth]
        _check(not bad, where, f"deepstack_visual_indexes {bad} are outside 0..{self.depth - 1}")
        _check_activation(self.hidden_act, "hidden_act", where)


@dataclass
class TextConfig(_MoEDecoderConfig):
    """The Thinker's MoE text decoder (HF Qwen3OmniMoeTextConfig)."""

    model_type: ClassVar[str] = "qwen3_omni_moe_text"
    default_rope_theta: ClassVar[float] = 1_000_000.0   # HF's Qwen3OmniMoeTextConfig.default_theta
    # use_qk_norm is in the published config.json, but no HF class reads it: Qwen3 attention always
    # normalises its query and key heads (layers.Attention), so we drop it rather than pretend.
    ignored_keys: ClassVar[frozenset] = frozenset({"max_window_layers", "use_sliding_window",
                                                   "use_qk_norm"})
    vocab_size: int = 3584
    hidden_size: int = 2048
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    moe_intermediate_size: int = 768
    norm_topk_prob: bool = True
    shared_expert_intermediate_size: int = 0   # in the published config; the Thinker has none

    def validate(self, where: str) -> None:
        super().validate(where)
        _check(self.shared_expert_intermediate_size == 0, where,
               "the Thinker has no shared expert: shared_expert_intermediate_size must be 0")


@dataclass
class ThinkerConfig(_HFConfig):
    """HF Qwen3OmniMoeThinkerConfig: the encoders, the text decoder, the multimodal token ids."""

    model_type: ClassVar[str] = "qwen3_omni_moe_thinker"
    sub_configs: ClassVar[dict[str, type]] = {"audio_config": AudioEncoderConfig,
                                              "vision_config": VisionEncoderConfig,
                                              "text_config": TextConfig}
    audio_config: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    vision_config: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    text_config: TextConfig = field(default_factory=TextConfig)
    position_id_per_seconds: int = 25
    seconds_per_chunk: int | None = None
    audio_start_token_id: int = 151647
    audio_end_token_id: int | None = None
    user_token_id: int = 872
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    audio_token_id: int = 151646
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int | None = None
    vision_end_token_id: int | None = None

    @property
    def spatial_merge_size(self) -> int:
        """The vision tower's merge size, under the name the Talker's config gives it, so that
        rope.multimodal_position_ids reads either config the same way."""
        return self.vision_config.spatial_merge_size

    def validate(self, where: str) -> None:
        super().validate(where)
        h = self.text_config.hidden_size
        _check(self.audio_config.output_dim == h, where,
               f"audio_config.output_dim={self.audio_config.output_dim} must equal "
               f"text_config.hidden_size={h} (audio tokens are written into the text embedding "
               f"stream)")
        _check(self.vision_config.out_hidden_size == h, where,
               f"vision_config.out_hidden_size={self.vision_config.out_hidden_size} must equal "
               f"text_config.hidden_size={h}")
        n_deep = len(self.vision_config.deepstack_visual_indexes)
        n_layers = self.text_config.num_hidden_layers
        _check(n_deep <= n_layers, where,
               f"{n_deep} deepstack features need at least {n_deep} text layers, have {n_layers}")
        vocab = self.text_config.vocab_size
        for name in ("audio_token_id", "image_token_id", "video_token_id", "audio_start_token_id"):
            _check(0 <= getattr(self, name) < vocab, where,
                   f"{name}={getattr(self, name)} is outside the vocabulary (vocab_size={vocab})")


# -------------------------------------------------------------------------------------------------
# Talker


@dataclass
class TalkerTextConfig(_MoEDecoderConfig):
    """The Talker's MoE decoder (HF Qwen3OmniMoeTalkerTextConfig), with a shared expert."""

    model_type: ClassVar[str] = "qwen3_omni_moe_talker_text"
    ignored_keys: ClassVar[frozenset] = frozenset({"max_window_layers", "use_sliding_window"})
    aliases: ClassVar[dict[str, str]] = {"num_local_experts": "num_experts"}  # HF writes both
    vocab_size: int = 3072
    hidden_size: int = 1024
    intermediate_size: int = 2048   # width of the Thinker->Talker projection MLPs, not an expert's
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    moe_intermediate_size: int = 384
    norm_topk_prob: bool = False
    shared_expert_intermediate_size: int = 768

    def validate(self, where: str) -> None:
        super().validate(where)
        _check(self.shared_expert_intermediate_size > 0, where,
               "the Talker's MoE blocks carry a shared expert: shared_expert_intermediate_size "
               "must be > 0")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["num_local_experts"] = out["num_experts"]   # the name HF's attribute_map reads
        return out


@dataclass
class CodePredictorConfig(_DecoderConfig):
    """The MTP code predictor (HF Qwen3OmniMoeTalkerCodePredictorConfig): a small dense decoder."""

    model_type: ClassVar[str] = "qwen3_omni_moe_talker_code_predictor"
    vocab_size: int = 2048
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 5
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int | None = 128
    max_window_layers: int = 28
    layer_types: list[str] | None = None
    num_code_groups: int = 32

    def validate(self, where: str) -> None:
        super().validate(where)
        _check(self.sliding_window is None, where,
               "the code predictor uses full attention: sliding_window must be null")
        _check(self.head_dim is not None, where,
               "head_dim must be an integer here (HF's code predictor config requires it; it has "
               "no hidden_size / heads fallback)")
        _check(self.num_code_groups >= 2, where,
               "num_code_groups must be >= 2 (codebook 0 plus residuals)")


@dataclass
class TalkerConfig(_HFConfig):
    """HF Qwen3OmniMoeTalkerConfig: the codec decoder, the MTP module and the codec control ids."""

    model_type: ClassVar[str] = "qwen3_omni_moe_talker"
    sub_configs: ClassVar[dict[str, type]] = {"text_config": TalkerTextConfig,
                                              "code_predictor_config": CodePredictorConfig}
    text_config: TalkerTextConfig = field(default_factory=TalkerTextConfig)
    code_predictor_config: CodePredictorConfig = field(default_factory=CodePredictorConfig)
    num_code_groups: int = 32
    thinker_hidden_size: int = 2048
    codec_eos_token_id: int = 4198
    accept_hidden_layer: int = 18
    codec_nothink_id: int = 4203
    codec_think_bos_id: int = 4204
    codec_think_eos_id: int = 4205
    codec_pad_id: int = 4196
    codec_bos_id: int = 4197
    audio_token_id: int = 151646
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    position_id_per_seconds: int = 25
    audio_start_token_id: int = 151669
    audio_end_token_id: int | None = None
    speaker_id: dict[str, int] | None = None
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    spatial_merge_size: int = 2   # read by HF's Talker for its position ids; not in HF's dataclass
    seconds_per_chunk: int | None = None

    def validate(self, where: str) -> None:
        super().validate(where)
        groups = self.code_predictor_config.num_code_groups
        _check(self.num_code_groups == groups, where,
               f"num_code_groups={self.num_code_groups} differs from "
               f"code_predictor_config.num_code_groups={groups}")

    def check_codec_ids(self, where: str = "talker_config") -> None:
        """Rules HF's speech generation relies on, checked before generating speech (not at load:
        a checkpoint used for text only, like HF's own tiny test configs, need not follow them)."""
        vocab, codebook = self.text_config.vocab_size, self.code_predictor_config.vocab_size
        _check(vocab - 1024 == codebook, where,
               f"talker vocab_size={vocab} must be codebook size ({codebook}) + 1024 control ids: "
               f"HF's generate suppresses ids vocab-1024..vocab-1 so that only real codes are "
               f"sampled")
        names = ("codec_pad_id", "codec_bos_id", "codec_eos_token_id", "codec_nothink_id",
                 "codec_think_bos_id", "codec_think_eos_id")
        ids = {name: getattr(self, name) for name in names}
        ids.update({f"speaker_id[{k!r}]": v for k, v in (self.speaker_id or {}).items()})
        for name, value in ids.items():
            _check(codebook <= value < vocab, where,
                   f"{name}={value} must be a control id in {codebook}..{vocab - 1} (above the "
                   f"codebook)")


# -------------------------------------------------------------------------------------------------
# Code2Wav


@dataclass
class Code2WavConfig(_Rotary, _HFConfig):
    """Codec vocoder (HF Qwen3OmniMoeCode2WavConfig; report section 2.5)."""

    model_type: ClassVar[str] = ""   # HF writes no model_type for this sub-config
    codebook_size: int = 2048
    hidden_size: int = 1024
    max_position_embeddings: int = 8000
    rope_parameters: dict | None = None
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    attention_bias: bool = False
    sliding_window: int = 72
    intermediate_size: int = 3072
    hidden_act: str = "silu"
    layer_scale_initial_scale: float = 0.01
    rms_norm_eps: float = 1e-5
    num_hidden_layers: int = 8
    num_quantizers: int = 16
    upsample_rates: list[int] = field(default_factory=lambda: [8, 5, 4, 3])
    upsampling_ratios: list[int] = field(default_factory=lambda: [2, 2])
    decoder_dim: int = 1536
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    # In the published config; describe the codec's encoder side, which is not part of this
    # checkpoint.
    num_semantic_quantizers: int | None = None
    semantic_codebook_size: int | None = None
    codebook_dim: int | None = None
    vector_quantization_hidden_dimension: int | None = None

    @property
    def samples_per_frame(self) -> int:
        """Waveform samples per codec frame: all upsamplings multiplied (2*2*8*5*4*3 = 1920)."""
        n = 1
        for r in list(self.upsampling_ratios) + list(self.upsample_rates):
            n *= r
        return n

    def validate(self, where: str) -> None:
        super().validate(where)
        heads = self.num_attention_heads
        _check(self.hidden_size % heads == 0, where,
               f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={heads}")
        _check(heads % self.num_key_value_heads == 0, where,
               "num_attention_heads must be a multiple of num_key_value_heads")
        _check_activation(self.hidden_act, "hidden_act", where)
        k = 2 ** len(self.upsample_rates)
        _check(self.decoder_dim % k == 0, where,
               f"decoder_dim={self.decoder_dim} must be divisible by 2**len(upsample_rates) = "
               f"{k}: each decoder block halves the channels")


# -------------------------------------------------------------------------------------------------
# The whole model


@dataclass
class OmniConfig(_HFConfig):
    """HF Qwen3OmniMoeConfig: Thinker + Talker + Code2Wav, and the chat ids the Talker needs."""

    model_type: ClassVar[str] = "qwen3_omni_moe"
    sub_configs: ClassVar[dict[str, type]] = {"thinker_config": ThinkerConfig,
                                              "talker_config": TalkerConfig,
                                              "code2wav_config": Code2WavConfig}
    thinker_config: ThinkerConfig = field(default_factory=ThinkerConfig)
    talker_config: TalkerConfig = field(default_factory=TalkerConfig)
    code2wav_config: Code2WavConfig = field(default_factory=Code2WavConfig)
    enable_audio_output: bool = True
    im_start_token_id: int = 151644
    im_end_token_id: int = 151645
    tts_pad_token_id: int = 151671
    tts_bos_token_id: int = 151672
    tts_eos_token_id: int = 151673
    system_token_id: int = 8948
    user_token_id: int = 872
    assistant_token_id: int = 77091
    initializer_range: float | None = None
    tie_word_embeddings: bool = False

    @property
    def described_components(self) -> tuple[str, ...]:
        """The components HF builds from this config: all three, or the Thinker alone when
        enable_audio_output is false (HF then builds, saves and loads no Talker and no Code2Wav)."""
        return ("thinker", "talker", "code2wav") if self.enable_audio_output else ("thinker",)

    def validate(self, where: str = "OmniConfig", components=None) -> None:
        """Check the components that are built, and the ties between them; default: those
        `described_components` names.

        A Thinker-only config (enable_audio_output false, as Qwen3-Omni-30B-A3B-Thinking and
        -Captioner are published) still carries a talker_config and a code2wav_config; HF's
        save_pretrained writes its class defaults there when none is given (thinker_hidden_size
        2048, accept_hidden_layer 18, 32 code groups against Code2Wav's 16 quantizers), which fit
        no small Thinker. They describe nothing that is built, so they are not checked."""
        components = self.described_components if components is None else tuple(components)
        for name in components:
            getattr(self, f"{name}_config").validate(f"{where}.{name}_config")
        talker, thinker, c2w = self.talker_config, self.thinker_config, self.code2wav_config
        if "talker" in components:      # the Talker reads the Thinker's states and embeddings
            thinker_width, thinker_layers = (thinker.text_config.hidden_size,
                                             thinker.text_config.num_hidden_layers)
            _check(talker.thinker_hidden_size == thinker_width, where,
                   f"talker_config.thinker_hidden_size={talker.thinker_hidden_size} must equal "
                   f"thinker_config.text_config.hidden_size={thinker_width}")
            _check(0 <= talker.accept_hidden_layer <= thinker_layers, where,
                   f"talker_config.accept_hidden_layer={talker.accept_hidden_layer} must be a "
                   f"Thinker layer index 0..{thinker_layers}")
            # the chat ids that find the turns of the Talker's prompt, and the tts_* ids whose
            # Thinker embeddings it reads
            vocab = thinker.text_config.vocab_size
            for name in ("im_start_token_id", "im_end_token_id", "tts_pad_token_id",
                         "tts_bos_token_id", "tts_eos_token_id", "system_token_id",
                         "user_token_id", "assistant_token_id"):
                _check(0 <= getattr(self, name) < vocab, where,
                       f"{name}={getattr(self, name)} is outside the Thinker vocabulary "
                       f"(vocab_size={vocab})")
        if "talker" in components and "code2wav" in components:   # Code2Wav decodes its codes
            _check(c2w.num_quantizers == talker.num_code_groups, where,
                   f"code2wav_config.num_quantizers={c2w.num_quantizers} must equal "
                   f"talker_config.num_code_groups={talker.num_code_groups}: every codec frame "
                   "carries one code per group")
            codebook = talker.code_predictor_config.vocab_size
            _check(c2w.codebook_size == codebook, where,
                   f"code2wav_config.codebook_size={c2w.codebook_size} must equal the code "
                   f"predictor's vocab_size={codebook}")

    # -- files ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], strict: bool = True, where: str | None = None,
                  components=None) -> "OmniConfig":
        """Read, then validate the components that will be built (see `validate`)."""
        cfg = super().from_dict(d, strict=strict, where=where, _nested=True)   # not checked yet
        cfg.validate(where or cls.__name__, components)
        return cfg

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, strict: bool = True,
                       components=None) -> "OmniConfig":
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"no config.json at {path}. Point omni_ref at a checkpoint directory written by "
                "HF save_pretrained or by omni_ref.presets.write_checkpoint(name, out_dir).")
        d = read_json_object(path, ConfigError, "the checkpoint's configuration")
        if d.get("model_type", "qwen3_omni_moe") != "qwen3_omni_moe":
            raise ConfigError(f"{path}: model_type={d.get('model_type')!r}; omni_ref reads only "
                              f"'qwen3_omni_moe'")
        return cls.from_dict(d, strict=strict, where=path, components=components)

    def to_hf_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        d["architectures"] = ["Qwen3OmniMoeForConditionalGeneration"]
        if d["initializer_range"] is None:
            d.pop("initializer_range")
        return d

    def save(self, out_dir: str | os.PathLike) -> str:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(os.fspath(out_dir), "config.json")
        with open(path, "w") as f:
            json.dump(self.to_hf_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
        return path
