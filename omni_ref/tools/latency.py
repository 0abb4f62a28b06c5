"""The analytic model: parameters (total vs active), weight memory and KV-cache size, from a config alone.

Everything here is computed on the meta device or from config numbers, so it works for the real 35B model on a
laptop. The report's Table 1 (module sizes) is the reference these numbers are checked against (notebook 00);
the second half of the module is the latency side, a roofline set beside the report's Table 2 (notebook 07),
for one request and for several served at once (notebook 09).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import OmniConfig
from ..moe import SparseMoE

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


@dataclass
class ModuleSize:
    name: str           # as the report's Table 1 names it
    total: int          # parameters stored
    active: int         # parameters one token actually multiplies with (MoE: only its top-k experts)


def count_params(module: nn.Module) -> tuple[int, int]:
    """(total, active-per-token) parameters. In a SparseMoE block a token runs k of E experts, so the expert
    weights count k/E towards the active figure; everything else (router, shared expert, attention) is used in
    full. Embedding tables count in full too, by the report's convention, though a token reads one row."""
    total = sum(p.numel() for p in module.parameters())
    inactive = 0
    for m in module.modules():
        if isinstance(m, SparseMoE):
            experts = sum(p.numel() for p in m.experts.parameters())
            inactive += experts - experts * m.top_k // m.experts.num_experts
    return total, total - inactive


def module_sizes(model) -> list[ModuleSize]:
    """Table 1's rows for a (meta-device) Qwen3Omni: AuT, vision, Thinker LM, Talker, MTP, Code2Wav."""
    rows = []
    if model.thinker is not None:
        th = model.thinker
        rows.append(ModuleSize("Audio encoder (AuT)", *count_params(th.audio_tower)))
        rows.append(ModuleSize("Vision encoder", *count_params(th.visual)))
        lm = [count_params(th.model), count_params(th.lm_head)]
        rows.append(ModuleSize("Thinker LM", sum(t for t, _ in lm), sum(a for _, a in lm)))
    if model.talker is not None:
        tk = model.talker
        parts = [count_params(m) for name, m in tk.named_children() if name != "code_predictor"]
        rows.append(ModuleSize("Talker", sum(t for t, _ in parts), sum(a for _, a in parts)))
        rows.append(ModuleSize("MTP (code predictor)", *count_params(tk.code_predictor)))
    if model.code2wav is not None:
        rows.append(ModuleSize("Code2Wav", *count_params(model.code2wav)))
    return rows


def weight_bytes(n_params: int, dtype: str = "bf16") -> int:
    return n_params * BYTES[dtype]


# The published checkpoints of Qwen3-Omni-30B-A3B and the components each holds. Instruct speaks;
# Thinking (which reasons step by step before it answers) and Captioner (Instruct fine-tuned to
# describe any audio in detail) are published with enable_audio_output false: a Thinker only,
# answering in text. All three have the same Thinker.
VARIANTS = {"Instruct": ("thinker", "talker", "code2wav"), "Thinking": ("thinker",),
            "Captioner": ("thinker",)}


@dataclass
class VariantSize:
    name: str                       # as published: Qwen3-Omni-30B-A3B-<name>
    components: tuple[str, ...]     # what its checkpoint holds
    kept: int                       # parameters in its checkpoint
    active: int                     # of those, used per token (count_params' rule)
    dropped: int                    # parameters of the whole model it leaves out


def variant_sizes(model) -> list[VariantSize]:
    """One row per published variant (VARIANTS), counted on a whole (meta-device) Qwen3Omni: the
    parameters each checkpoint keeps and those it drops (the Talker, its MTP and Code2Wav). The
    variants share one Thinker config, so one module tree counts them all."""
    if model.components != ("thinker", "talker", "code2wav"):
        raise ValueError(f"variant_sizes counts what a variant drops, so it needs the whole model; "
                         f"got components={model.components}: build it with "
                         f"presets.build_meta(name), every component")
    per = {c: count_params(getattr(model, c)) for c in model.components}
    total = sum(t for t, _ in per.values())
    rows = []
    for name, components in VARIANTS.items():
        kept = sum(per[c][0] for c in components)
        active = sum(per[c][1] for c in components)
        rows.append(VariantSize(name, components, kept, active, total - kept))
    return rows


def kv_bytes_per_token(config: OmniConfig, dtype: str = "bf16") -> dict[str, int]:
    """Bytes of K and V cached per token: layers x 2 (K and V) x kv_heads x head_dim x bytes per value.
    Grouped-query attention is why this is small: the Thinker caches 4 K/V heads for its 32 query heads."""
    out = {}
    for name, c in (("Thinker", config.thinker_config.text_config), ("Talker", config.talker_config.text_config),
                    ("MTP", config.talker_config.code_predictor_config)):
        out[name] = c.num_hidden_layers * 2 * c.num_key_value_heads * c.resolved_head_dim * BYTES[dtype]
    return out


# ---- the latency side: a roofline per stage, against the report's Table 2 ------------------------------------
#
# One decoding step of a transformer multiplies every weight it uses once per token (2 FLOPs per weight: a multiply
# and an add) and must first read those weights from memory. At batch 1 the second cost dominates by far, so a
# step takes about max(compute, weight bytes / bandwidth): the roofline. It is a LOWER bound: it leaves out kernel
# launches, the KV cache, attention over the context, sampling, the CPU side and the other stages sharing the GPU.
# What it does get right is the scaling: a MoE decoder reads only the experts its token is routed to, so its
# decode time follows ACTIVE parameters, while prefill, with many tokens, touches nearly every expert.

@dataclass
class Hardware:
    """Peak numbers of one accelerator. Defaults: NVIDIA H100 SXM, dense bf16 tensor-core peak 989 TFLOP/s and
    HBM3 bandwidth 3.35 TB/s (vendor data sheet). The report does not name its GPU; these are a plausible stand-in."""
    flops: float = 989e12            # FLOP/s
    bandwidth: float = 3.35e12       # bytes/s
    name: str = "H100 SXM (peak bf16, HBM3)"


@dataclass
class DecoderWeights:
    """What one token of a decoder reads: `dense` weights (attention, norms, router, shared expert, output head,
    one embedding row) used by every token, and `experts`, the routed experts of all MoE layers, of which a token
    uses top_k / num_experts. `passes`: forward passes per output token (the MTP runs one per residual codebook)."""
    name: str
    dense: int
    experts: int = 0
    top_k: int = 1
    num_experts: int = 1
    passes: int = 1

    @property
    def active(self) -> int:                 # parameters one pass multiplies with
        return self.dense + self.experts * self.top_k // self.num_experts


def experts_touched(tokens: int, top_k: int, num_experts: int) -> float:
    """Expected fraction of a layer's experts that at least one of `tokens` tokens is routed to, if routing were
    uniform and independent: 1 - (1 - k/E)^T. One token: k/E; a 100-token prompt with 8 of 128: 99.8%."""
    return 1.0 - (1.0 - top_k / num_experts) ** tokens


def decode_seconds(w: DecoderWeights, hw: Hardware = Hardware(), dtype: str = "bf16",
                   batch: int = 1) -> dict[str, float]:
    """Time of one decoding step that makes one token for each of `batch` requests at once
    (continuous batching): passes x max(compute, weight reads). Every request's token multiplies
    its active weights (compute: batch x 2 x active); the weights are read once per step for the
    whole batch, but that read is the dense weights plus every expert SOME token of the batch is
    routed to (experts_touched). One request reads its active weights; six read a third of the
    Thinker's experts."""
    _check_count("batch", batch)
    compute = 2 * w.active * batch / hw.flops
    read = w.active if batch == 1 else \
        w.dense + w.experts * experts_touched(batch, w.top_k, w.num_experts)
    memory = read * BYTES[dtype] / hw.bandwidth
    return {"compute_s": w.passes * compute, "memory_s": w.passes * memory,
            "seconds": w.passes * max(compute, memory)}


def prefill_seconds(w: DecoderWeights, tokens: int, hw: Hardware = Hardware(), dtype: str = "bf16") -> dict:
    """Time to run a `tokens`-long prompt in one pass: every token computes with its active weights, but the
    weights read are the dense ones plus every expert some token of the prompt was routed to. The
    prompts of several requests prefilled together are one pass over all their tokens."""
    compute = 2 * w.active * tokens / hw.flops
    read = w.dense + w.experts * (experts_touched(tokens, w.top_k, w.num_experts) if w.experts else 0.0)
    memory = read * BYTES[dtype] / hw.bandwidth
    return {"compute_s": compute, "memory_s": memory, "seconds": max(compute, memory)}


def codec_seconds_per_frame(flops_per_frame: float, n_params: int, frames_per_call: int = 1,
                            hw: Hardware = Hardware(), dtype: str = "bf16",
                            batch: int = 1) -> float:
    """Code2Wav is a ConvNet: its FLOPs scale with the samples it makes, not with its parameters, so they are
    counted (torch's FlopCounterMode on the meta device), and its weights are read once per call of
    `frames_per_call` frames. With `batch` requests decoded in the same call, each one waits for
    the whole call: batch times the FLOPs, the same weight read."""
    _check_count("batch", batch)
    weights = n_params * BYTES[dtype] / hw.bandwidth / frames_per_call
    return max(batch * flops_per_frame / hw.flops, weights)


def first_packet(preprocess_s, thinker_ttft_s, talker_ttft_s, mtp_s, codec_s) -> float:
    """The report's overall first-packet latency: the plain sum of the stage rows of Table 2."""
    return preprocess_s + thinker_ttft_s + talker_ttft_s + mtp_s + codec_s


def real_time_factor(thinker_token_s, talker_token_s, mtp_s, codec_s, frame_s: float = 0.080) -> float:
    """The report's RTF: (Thinker + Talker time for one token + MTP + codec time per token) / one 80 ms frame."""
    return (thinker_token_s + talker_token_s + mtp_s + codec_s) / frame_s


def decoder_weights(model) -> dict[str, DecoderWeights]:
    """Thinker, Talker and MTP of a (meta-device) Qwen3Omni as DecoderWeights. Embedding tables count one row
    (a token reads one); the Talker's input projections run on the prompt only, so they are left out of a step."""
    def parts(*modules):
        dense = experts = 0
        top_k = num_experts = 1
        for module in modules:
            dense += sum(p.numel() for p in module.parameters())
            for m in module.modules():
                if isinstance(m, SparseMoE):
                    n = sum(p.numel() for p in m.experts.parameters())
                    dense, experts, top_k, num_experts = dense - n, experts + n, m.top_k, m.experts.num_experts
                elif isinstance(m, nn.Embedding):
                    dense -= m.weight.numel() - m.embedding_dim
        return dense, experts, top_k, num_experts

    th, tk, cp = model.thinker, model.talker, model.talker.code_predictor
    body = parts(cp.model.layers, cp.model.norm)[0] + cp.model.codec_embedding[0].embedding_dim
    mtp_passes = len(cp.lm_head)                      # one pass per residual codebook: 15 for 16 codebooks
    return {"Thinker": DecoderWeights("Thinker", *parts(th.model, th.lm_head)),
            "Talker": DecoderWeights("Talker", *parts(tk.model, tk.codec_head)),
            "MTP": DecoderWeights("MTP", body + cp.lm_head[0].weight.numel(), passes=mtp_passes)}


# ---- the report's Table 2 in full, and the roofline's prediction of every column ---------------

TABLE_2_CONCURRENCY = (1, 4, 6)      # the table's columns: requests served at once
TABLE_2_ROWS = ("preprocess_s", "thinker_ttft_s", "talker_ttft_s", "mtp_s", "codec_s",
                "first_packet_s", "thinker_tok_s", "talker_tok_s", "rtf")


def _column(*ms_then_rates):
    """A column as printed (six rows in ms, two in tokens/s, the RTF) -> {row: seconds or rate}."""
    ms, rates = ms_then_rates[:6], ms_then_rates[6:]
    return dict(zip(TABLE_2_ROWS, [m / 1000 for m in ms] + [float(r) for r in rates]))


# Qwen3-Omni Technical Report (arXiv 2509.17765), Table 2: vLLM, torch.compile and CUDA graphs on
# the MTP and the codec decoder. TABLE_2[(input, concurrency)] -> {row: value}, times in seconds,
# rates in tokens/s, as printed. The rows from the MTP down are one figure per column, shared by
# both inputs. Two printed cells disagree with the table's own definitions (tests/test_latency.py):
# 6-concurrent video's rows sum to 2287 ms against a printed 2284, and the RTF formula gives 0.64
# for 6 concurrent against a printed 0.66.
TABLE_2 = {
    ("audio", 1): _column(72, 88, 57, 14, 3, 234, 75, 140, 0.47),
    ("video", 1): _column(160, 160, 210, 14, 3, 547, 75, 140, 0.47),
    ("audio", 4): _column(94, 468, 145, 16, 5, 728, 63, 125, 0.56),
    ("video", 4): _column(180, 866, 450, 16, 5, 1517, 63, 125, 0.56),
    ("audio", 6): _column(100, 673, 376, 18, 5, 1172, 53, 110, 0.66),
    ("video", 6): _column(200, 1330, 734, 18, 5, 2284, 53, 110, 0.66),
}
PAPER_TABLE_2 = TABLE_2[("audio", 1)]      # 1 request, audio input: notebook 07's reference


@dataclass(frozen=True)
class Prompt:
    """What the Thinker reads before its first token, in tokens. The report does not say what its
    requests held, so these are stated assumptions:

    audio (Table 2's audio column): 10 s of speech, 125 AuT tokens (12.5 a second), plus 35 tokens
    of chat template, system prompt and question: 160 tokens.
    video: a 10 s clip with its sound track, so the audio column plus frames: the same 125 audio
    tokens and 35 of text, and the frames at the processor's 2 fps, 20 frames = 10 frame pairs
    (temporal patch 2), each resized from 640 x 360 to 640 x 352 (multiples of 32 px: patch 16,
    merge 2), 20 x 11 = 220 tokens a pair (processor.vision.smart_resize): 2200 video tokens,
    2360 in all. The vision tower runs over the 4 x 2200 patches before the 2 x 2 merge."""
    audio_tokens: int = 125
    video_tokens: int = 0
    text_tokens: int = 35

    @property
    def tokens(self) -> int:
        return self.audio_tokens + self.video_tokens + self.text_tokens


PROMPTS = {"audio": Prompt(), "video": Prompt(video_tokens=10 * 220)}


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: give a whole number of requests, 1 or more")


def paper_preprocess_s(input: str = "audio", concurrency: int = 1) -> float:
    """Table 2's preprocessing row (CPU work: decoding, features, scheduling; no weights to model)
    for `concurrency` requests: the printed cell for 1, 4 and 6, straight lines between them, the
    6-request cell beyond."""
    _check_count("concurrency", concurrency)
    cells = [(c, TABLE_2[(input, c)]["preprocess_s"]) for c in TABLE_2_CONCURRENCY]
    for (c0, t0), (c1, t1) in zip(cells, cells[1:]):
        if concurrency <= c1:
            return t0 + (t1 - t0) * (concurrency - c0) / (c1 - c0)
    return cells[-1][1]


_CODEC_FLOPS: dict[str, float] = {}      # frames and repr(Code2WavConfig) -> FLOPs per frame


def codec_flops_per_frame(code2wav, frames: int = 50) -> float:
    """FLOPs of one frame of a `frames`-long decode of a meta-device Code2Wav, counted by torch's
    FlopCounterMode (shapes only, no memory). Shapes alone decide the count, so it is counted once
    per config (a second or two for the real model)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    key = f"{frames}:{code2wav.config!r}"
    if key not in _CODEC_FLOPS:
        codes = torch.zeros(1, code2wav.config.num_quantizers, frames, dtype=torch.long,
                            device="meta")
        with FlopCounterMode(display=False) as counter:
            code2wav._decode(codes)                                     # (1, 1, samples) on meta
        _CODEC_FLOPS[key] = counter.get_total_flops() / frames
    return _CODEC_FLOPS[key]


def analytic_table_2(model=None, hw: Hardware = Hardware(), dtype: str = "bf16",
                     input: str = "audio", concurrency: int = 1, prompt: Prompt | None = None,
                     codec_frames_per_call: int = 1) -> dict[str, float]:
    """The roofline's Table 2 rows (TABLE_2_ROWS) for `concurrency` requests served at once by the
    real model (built on the meta device) or `model`: one column, TABLE_2[(input, concurrency)],
    predicted. input: "audio" or "video" (PROMPTS[input] unless `prompt` is given).

    Assumptions, each a best case, so every row is a lower bound:
      - the requests arrive together and their prefills run as ONE batched pass over all their
        prompts (prefill_seconds of concurrency x prompt tokens): no request waits for another;
      - the encoders run over every request's media at once (the compute adds up, the weights are
        read once): AuT at 2 FLOPs per parameter per audio token, the vision tower per patch;
      - each decoding step makes one token for every request (decode_seconds(batch=concurrency)):
        weights are read once a step, the experts read being those ANY token of the batch uses;
      - the Talker's prompt is as long as the Thinker's (its user turn holds the same positions);
      - the codec decodes one frame of every request per call (codec_frames_per_call each);
      - nothing else costs time: no kernel launches, no attention over the cache, no sampling, no
        CPU side, no queueing, and the four stages never share the GPU with each other.
    Preprocessing is not a computation with the weights: the paper's row is carried over
    (paper_preprocess_s) so that the overall row can be summed."""
    from .. import presets
    if input not in PROMPTS:
        raise ValueError(f"input={input!r}: Table 2 has the columns {sorted(PROMPTS)}")
    _check_count("concurrency", concurrency)
    prompt = prompt if prompt is not None else PROMPTS[input]
    c = concurrency
    model = model if model is not None else presets.build_meta("real")
    w = decoder_weights(model)

    def encoder(module, units):              # `units` audio tokens or vision patches, all requests
        n = sum(p.numel() for p in module.parameters())
        return max(2 * n * units / hw.flops, n * BYTES[dtype] / hw.bandwidth) if units else 0.0
    encoders = (encoder(model.thinker.audio_tower, c * prompt.audio_tokens)
                + encoder(model.thinker.visual, c * 4 * prompt.video_tokens))
    c2w = model.code2wav
    codec = codec_seconds_per_frame(codec_flops_per_frame(c2w),
                                    sum(p.numel() for p in c2w.parameters()),
                                    codec_frames_per_call, hw, dtype, batch=c)
    thinker_tok = decode_seconds(w["Thinker"], hw, dtype, batch=c)["seconds"]
    talker_tok = decode_seconds(w["Talker"], hw, dtype, batch=c)["seconds"]
    prefill = {name: prefill_seconds(w[name], c * prompt.tokens, hw, dtype)["seconds"]
               for name in ("Thinker", "Talker")}
    rows = {"preprocess_s": paper_preprocess_s(input, c),
            "thinker_ttft_s": encoders + prefill["Thinker"], "talker_ttft_s": prefill["Talker"],
            "mtp_s": decode_seconds(w["MTP"], hw, dtype, batch=c)["seconds"], "codec_s": codec}
    rows["first_packet_s"] = first_packet(*(rows[k] for k in TABLE_2_ROWS[:5]))
    rows["thinker_tok_s"], rows["talker_tok_s"] = 1 / thinker_tok, 1 / talker_tok
    rows["rtf"] = real_time_factor(thinker_tok, talker_tok, rows["mtp_s"], codec)
    return rows
