"""Exercises of notebook 05 (Talker and MTP): passes and bits of an answer, the text fed step by step, the next
Talker input, the suppressed control ids."""
from __future__ import annotations

import functools
from types import SimpleNamespace

import torch

from . import call, exercise, number

# ---- 05.1 predict: Talker steps and bits of a 6 s answer -------------------------------------------------------

FRAMES_PER_S = 24000 / 1920            # Code2Wav: 1920 samples per frame at 24 kHz
CODEBOOKS, CODEBOOK_SIZE = 16, 2048    # presets.config("real").talker_config: num_code_groups, codebook entries
SECONDS = 6.0


def _steps_right():
    frames = round(SECONDS * FRAMES_PER_S)
    return (frames + 1, frames * CODEBOOKS * 11)


@exercise("05.1", "A trained Talker speaks a 6.0 s answer and then stops by itself. How many Talker forward "
          "passes (the prefill included) does that take, and how many bits do the answer's codes hold? Answer "
          "(passes, bits).",
          right=_steps_right, wrong=lambda: (75, 75 * CODEBOOKS * 11),
          praise="6 s x 12.5 frames/s = 75 frames; the prefill's logits give code 0 of frame 0 and each later pass "
                 "one more, so 75 passes make the frames and a 76th emits codec eos. 75 x 16 codes x 11 bits "
                 "(2048 = 2^11 entries) = 13,200 bits: 2.2 kbit/s, against 384 kbit/s for the 16-bit 24 kHz "
                 "audio Code2Wav makes of them.")
def _steps(answer):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise TypeError("answer with two numbers: (passes, bits)")
    passes, bits = (number(a) for a in answer)
    want_passes, want_bits = _steps_right()
    frames = want_passes - 1
    if passes == frames:
        return "75 passes make the 75 frames; how does the Talker say that the speech is over?"
    if passes == frames * CODEBOOKS or passes == frames * CODEBOOKS + 1:
        return "the Talker makes only code 0 of each frame; the MTP makes the other 15"
    if passes != want_passes:
        return "frames per second = 24000 samples per second / 1920 samples per frame; one Talker pass per frame"
    if bits == frames * CODEBOOKS * CODEBOOK_SIZE:
        return "a code is an index into a 2048-entry codebook: how many bits does it take to write that index?"
    if bits == frames * 11:
        return "every frame holds one code per codebook"
    if bits != want_bits:
        return "bits = frames x codebooks x log2(entries per codebook)"
    return None


# ---- 05.2 predict: how much text the Talker is fed after its prompt ---------------------------------------------

@exercise("05.2", "The Thinker answers with 20 tokens (the last of them never fed back). How many text vectors "
          "does the Talker receive one per step after its prompt, tts_eos included, before tts_pad takes over?",
          right=lambda: 19, wrong=lambda: 20,
          praise="answer token 1 sits in the prompt (position 8, with codec_bos); tokens 2..19 come one per step, "
                 "then tts_eos: 18 + 1 = 19. Token 20 was generated but never fed back through the Thinker, so "
                 "it has no hidden state to pass on (as in HF).")
def _trailing(answer):
    value = number(answer)
    if value == 19:
        return None
    if value == 20:
        return ("two things to count: the first answer token is already in the Talker's prompt, and the last "
                "generated token never went through the Thinker")
    if value == 18:
        return "after the last answer token comes one more vector that tells the Talker the text has ended"
    if value == 21:
        return "the prompt already holds the first answer token: it is not fed again"
    return "list what build_prompt puts into trailing_text: which answer tokens, and what comes after them"


# ---- 05.3 implement: the next Talker input --------------------------------------------------------------------------

def _next_input_right():
    def next_talker_input(codes, talker_table, mtp_tables, text):
        x = talker_table[codes[0]] + text                         # code 0: the Talker's own table
        for j in range(1, len(codes)):
            x = x + mtp_tables[j - 1][codes[j]]                   # code j: the MTP's table j - 1
        return x
    return next_talker_input


def _next_input_wrong():
    def next_talker_input(codes, talker_table, mtp_tables, text):  # forgets the text side
        return talker_table[codes[0]] + sum(mtp_tables[j - 1][codes[j]] for j in range(1, len(codes)))
    return next_talker_input


@functools.lru_cache(maxsize=1)
def _next_input_cases():
    """A small random Talker (the tiny preset's shapes) and, per case, what Talker.next_input returns."""
    from .. import presets
    from ..code_predictor import residual_sampling
    from ..model import init_random_weights
    from ..talker import Talker
    with torch.random.fork_rng(devices=[]):                       # leave the learner's global RNG alone
        talker = Talker(presets.config("tiny").talker_config).eval()
    init_random_weights(talker, seed=5)
    H = talker.config.text_config.hidden_size
    g = torch.Generator().manual_seed(6)
    cases = []
    with torch.no_grad():
        for code0 in (7, 93):
            hidden, text = torch.randn(1, 1, H, generator=g), torch.randn(1, 1, H, generator=g)
            codes, x, _ = talker.next_input(hidden, torch.tensor([[code0]]), text, residual_sampling(False))
            cases.append((codes[0], text[0, 0], x[0, 0]))
    tables = (talker.model.codec_embedding.weight.detach(),
              [e.weight.detach() for e in talker.code_predictor.model.codec_embedding])
    return tables, cases


@exercise("05.3", "Write next_talker_input(codes, talker_table, mtp_tables, text): codes (N,) one frame's codes, "
          "talker_table (vocab, H) the Talker's codec_embedding weight, mtp_tables the N-1 MTP embedding weights "
          "(code j uses mtp_tables[j - 1]), text (H,) the text-side vector -> the Talker's next input (H,).",
          right=_next_input_right, wrong=_next_input_wrong,
          praise="equal to Talker.next_input: the sum of the frame's N code embeddings, each from its own table, "
                 "plus one text vector. That sum is all the Talker learns of the frame it just spoke.")
def _next_input(fn):
    (talker_table, mtp_tables), cases = _next_input_cases()
    for codes, text, want in cases:
        got = torch.as_tensor(call(fn, codes.clone(), talker_table, mtp_tables, text.clone()))
        if tuple(got.shape) != tuple(want.shape):
            return f"return one vector of the hidden size, shape {tuple(want.shape)}; got {tuple(got.shape)}"
        if torch.allclose(got, want, atol=1e-5):
            continue
        no_text = want - text
        if torch.allclose(got, no_text, atol=1e-5):
            return "the codes are right; the next input also carries the text the Talker should speak next"
        if torch.allclose(got, no_text / len(codes) + text, atol=1e-5) or torch.allclose(got, want / len(codes),
                                                                                           atol=1e-5):
            return "the frame's code embeddings are added up, not averaged"
        same_table = talker_table[codes].sum(0) + text
        if torch.allclose(got, same_table, atol=1e-5):
            return "each codebook has its own table: code 0 the Talker's, code j the MTP's table j - 1"
        return ("add one embedding per code (code 0 from talker_table, code j from mtp_tables[j - 1]) and the "
                "text vector")
    return None


# ---- 05.4 implement: the suppressed control ids -------------------------------------------------------------------

def _suppress_right():
    def suppress_control_ids(logits, codec_eos_id):
        vocab = logits.shape[-1]
        blocked = torch.zeros(vocab, dtype=torch.bool)
        blocked[vocab - 1024:] = True                             # the control ids above the codebook
        blocked[codec_eos_id] = False                             # ... except the one that ends speech
        return logits.masked_fill(blocked, float("-inf"))
    return suppress_control_ids


def _suppress_wrong():
    def suppress_control_ids(logits, codec_eos_id):               # also blocks codec eos: speech never ends
        return torch.cat([logits[..., :-1024], torch.full_like(logits[..., -1024:], float("-inf"))], dim=-1)
    return suppress_control_ids


@functools.lru_cache(maxsize=1)
def _suppress_cases():
    g = torch.Generator().manual_seed(7)
    return [(torch.randn(2, 2048 + 1024, generator=g), 2150),      # the real model's and the demo's layout
            (torch.randn(1, 128 + 1024, generator=g), 230)]        # the tiny preset's codebook of 128


@exercise("05.4", "Write suppress_control_ids(logits, codec_eos_id): logits (B, V) of the Talker (V = codebook "
          "size + 1024) -> the same logits with -inf at every id the Talker may never emit.",
          right=_suppress_right, wrong=_suppress_wrong,
          praise="the same ids as talker.suppressed_ids (HF's suppress_tokens for the Talker): the 1024 control "
                 "ids above the codebook are inputs (bos, pad, think markers, speakers), never outputs, except "
                 "codec eos, which is how the Talker says the speech is over.")
def _suppress(fn):
    from ..talker import suppressed_ids
    for logits, eos in _suppress_cases():
        vocab = logits.shape[-1]
        cfg = SimpleNamespace(text_config=SimpleNamespace(vocab_size=vocab), codec_eos_token_id=eos)
        want = logits.clone()
        want[:, suppressed_ids(cfg)] = float("-inf")
        got = torch.as_tensor(call(fn, logits.clone(), eos))
        if tuple(got.shape) != tuple(logits.shape):
            return f"return logits of the input's shape {tuple(logits.shape)}; got {tuple(got.shape)}"
        blocked, want_blocked = torch.isinf(got) & (got < 0), torch.isinf(want)
        if torch.equal(blocked, want_blocked):
            if not torch.equal(got[~blocked], logits[~blocked]):
                return "the right ids are blocked, but other logits changed: leave them as they are"
            continue
        if blocked[:, eos].all() and torch.equal(blocked | torch.isinf(want), blocked):
            return "one control id must stay possible: how else would the Talker end its speech?"
        if vocab != 3072:
            return ("right for the real layout, not for a codebook of 128: the control ids are the last 1024 of "
                    "the vocabulary, whatever the codebook size")
        return "block the ids vocab - 1024 .. vocab - 1 (the control ids above the codebook), all but one"
    return None
