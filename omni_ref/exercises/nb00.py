"""Exercises of notebook 00 (overview): the active parameters of an MoE block, counting them from a config, and
the memory a text-only deployment needs."""
from __future__ import annotations

import functools

import torch

from . import call, exercise, number

# The real Thinker's MoE block (presets.config("real").thinker_config.text_config): a router and 128 SwiGLU
# experts (gate, up, down projections, no biases), 8 of which run for each token.
HIDDEN, MOE_INTER, EXPERTS, TOP_K = 2048, 768, 128, 8
EXPERT = 3 * HIDDEN * MOE_INTER
ROUTER = HIDDEN * EXPERTS


# ---- 00.1 predict: parameters one token uses in one MoE block of the real Thinker --------------------------------

def _active_right():
    return TOP_K * EXPERT + ROUTER


@exercise("00.1", "One MoE block of the real Thinker: hidden 2048, 128 experts of moe_intermediate_size 768 "
          "(SwiGLU: gate, up and down projections, no biases), top-8 routing, a router 2048 -> 128. How many of "
          "its parameters does one token use?",
          right=_active_right, wrong=lambda: EXPERTS * EXPERT + ROUTER,
          praise="8 x 3 x 2048 x 768 + 2048 x 128 = 38,010,880 of the block's 604,241,920 (6.3 %): the router runs "
                 "for every token, then only its 8 experts do. Over 48 layers, plus attention and the embedding "
                 "table, that is how 30.5 B stored parameters become 3.35 B active ones.")
def _active(answer):
    value = number(answer)
    want = _active_right()
    if value == want:
        return None
    if value == EXPERTS * EXPERT + ROUTER or value == EXPERTS * EXPERT:
        return "that is every parameter the block stores; a token is sent to only top-k of the experts"
    if value == TOP_K * EXPERT:
        return "close: the router also runs for every token, to choose the experts"
    if value in (TOP_K * 2 * HIDDEN * MOE_INTER + ROUTER, TOP_K * 2 * HIDDEN * MOE_INTER):
        return "a SwiGLU expert has three matrices, not two: gate_proj, up_proj and down_proj"
    if value in (EXPERT + ROUTER, EXPERT):
        return "that is one expert; with top-8 routing each token runs eight"
    return ("count one expert (three hidden x moe_intermediate_size matrices), multiply by the experts a token "
            "is routed to, and add the router that chooses them")


# ---- 00.2 implement: total and active parameters of an MoE block, from a config ----------------------------------

def _moe_right():
    def moe_block_params(c):
        expert = 3 * c.hidden_size * c.moe_intermediate_size             # gate, up, down
        shared = getattr(c, "shared_expert_intermediate_size", 0)
        always = c.hidden_size * c.num_experts                           # the router
        if shared:
            always += 3 * c.hidden_size * shared + c.hidden_size         # shared expert and its sigmoid gate
        return c.num_experts * expert + always, c.num_experts_per_tok * expert + always
    return moe_block_params


def _moe_wrong():
    def moe_block_params(c):                                             # forgets the Talker's shared expert
        expert = 3 * c.hidden_size * c.moe_intermediate_size
        always = c.hidden_size * c.num_experts
        return c.num_experts * expert + always, c.num_experts_per_tok * expert + always
    return moe_block_params


@functools.lru_cache(maxsize=1)
def _moe_cases():
    """(name, text config, (total, active) as omni_ref counts them on the block itself, built on meta)."""
    from .. import presets
    from ..moe import moe_for
    from ..tools.latency import count_params
    cases = []
    for preset in ("real", "demo"):
        cfg = presets.config(preset)
        for part, c in (("Thinker", cfg.thinker_config.text_config), ("Talker", cfg.talker_config.text_config)):
            with torch.device("meta"):
                block = moe_for(c, 0)
            cases.append((f"the {preset} {part}", c, count_params(block)))
    return cases


@exercise("00.2", "Write moe_block_params(c) -> (total, active): the parameters one MoE block of a text config c "
          "stores, and those one token uses (c.hidden_size, c.moe_intermediate_size, c.num_experts, "
          "c.num_experts_per_tok; the Talker's config also has c.shared_expert_intermediate_size).",
          right=_moe_right, wrong=_moe_wrong,
          praise="the same counts as omni_ref's latency.count_params on the blocks themselves, for the real and "
                 "demo Thinker and Talker: routed experts count k/E, the router and the Talker's shared expert "
                 "(with its one-output sigmoid gate) run for every token.")
def _moe(fn):
    for name, c, want in _moe_cases():
        got = call(fn, c)
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            return f"return a pair (total, active); for {name} you returned {got!r}"
        got = tuple(int(number(x)) for x in got)
        if got == want:
            continue
        shared = getattr(c, "shared_expert_intermediate_size", 0)
        if shared and got == (want[0] - 3 * c.hidden_size * shared - c.hidden_size,
                              want[1] - 3 * c.hidden_size * shared - c.hidden_size):
            return (f"{name}: the Talker's block also has a shared expert (a SwiGLU of "
                    f"shared_expert_intermediate_size) and its gate (hidden -> 1), which every token runs")
        if got[0] != want[0]:
            return f"{name}: total {got[0]:,} should be {want[0]:,}; count every expert, the router and any shared expert"
        return f"{name}: active {got[1]:,} should be {want[1]:,}; a token runs num_experts_per_tok experts"
    return None


# ---- 00.3 predict: bf16 weights of a text-only deployment ------------------------------------------------------

# Module sizes of the real model (latency.module_sizes, equal to the report's Table 1 rebuilt exactly).
AUT, VISION, THINKER_LM, ALL = 647_927_168, 538_631_408, 30_532_646_912, 35_259_818_545


def _text_only_right():
    return 2 * (AUT + VISION + THINKER_LM) / 1e9


@exercise("00.3", "Text answers need only the Thinker: the AuT (647,927,168 parameters), the vision encoder "
          "(538,631,408) and the Thinker LM (30,532,646,912). How many GB (1e9 bytes) do its weights take in bf16?",
          right=_text_only_right, wrong=lambda: 2 * ALL / 1e9,
          praise="2 bytes x 31,719,205,488 = 63.4 GB: leaving out the Talker, the MTP and Code2Wav saves 7.1 GB of "
                 "weights. The encoders stay, because the Thinker still has to hear and see. Every expert must be "
                 "in memory even though a token uses 1/16 of them: the router may pick any.")
def _text_only(answer):
    value = number(answer)
    want = _text_only_right()
    if abs(value - want) <= 0.01 * want:
        return None
    if abs(value - 2 * ALL / 1e9) <= 0.01 * want:
        return "that counts every module; text answers need neither the Talker, its MTP nor Code2Wav"
    if abs(value - 2 * THINKER_LM / 1e9) <= 0.005 * want:
        return "the encoders are part of the Thinker too: it cannot read speech or images without them"
    if abs(value - want * 2) <= 0.01 * want * 2:
        return "bf16 is 2 bytes per parameter, not 4"
    if abs(value - want / 2) <= 0.01 * want / 2:
        return "bytes, not parameters: bf16 stores each parameter in 2 bytes"
    if value < want / 5:
        return ("memory holds every stored parameter, not the active ones: the router can send the next token "
                "to any expert")
    return "add the three modules' parameters and multiply by the bytes of one bf16 number; give GB = 1e9 bytes"
