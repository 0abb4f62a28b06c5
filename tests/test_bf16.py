"""bfloat16: omni_ref and HF, both loaded in bf16 from one checkpoint, agree within what bf16 allows.

The tolerance, and why. bf16 keeps 8 significant bits, so one rounding moves a value by at most u = 2^-8 of
its size. Two implementations that round at the same places but add up an fp32 intermediate in another order
can land on the two sides of a rounding boundary: that element then differs by one unit in the last place,
2u of its size. Each later layer carries such a difference on (with these weights a layer's gain is about 1)
and may add one of its own, so after a path of N rounding stages (layers, encoder blocks, convolutions) the
outputs differ by at most about

    tol = N * 2u * scale,     scale = max |fp32 output|

N is counted from the config for each path (`_depth_*`). The same bound serves as the sanity check between
our own bf16 and fp32 runs: there every operation rounds, each stage by at most u, and the errors of N
stages add up to at most N u (the factor 2 is spare).

Measured on the tiny preset (torch 2.14.1, transformers 5.23.0, one thread), max |difference|:

    path                              N    tol       ours vs HF (bf16)   ours bf16 vs fp32
    Thinker, text                      4   2.0e-2    0                   5.2e-3
    Thinker, audio + image + video    12   6.7e-2    1.4e-2              2.2e-2
    Talker                             4   1.3e-2    0                   2.3e-3
    Code2Wav (full and chunked)       37   1.4e-3    0                   3.3e-5

Ours and HF do the same bf16 arithmetic in the same order almost everywhere, hence the zeros (audio alone and
image alone give 0 too). Video is the exception: HF resamples the learned vision positions as a weighted sum of
four table rows, we with F.interpolate; in fp32 the two differ by 1e-7, and a few entries then round to
different bf16 values.

Greedy tokens. If |ours - HF| <= tol for every logit, a step whose top-1 logit leads the runner-up by more than
2 tol picks the same token on both sides. So the tests walk the generation in order (text tokens; then per
frame code 0 and the residual codes) and require equal tokens up to the first step whose margin is 2 tol or
less; from there on the two runs may part. Each test also requires that at least one step is decided, so it
always checks something. Random tiny weights give near-ties (bf16 logits a few ulps apart): of the 43 steps of
the tiny speech run only the first 2 are decided by their margins (all 43 agree nonetheless). The trained toy
Thinker's margins (4 to 15, against 2 tol = 3.4) decide every step of its image, audio and video answers.
"""
import pytest
import torch

import omni_ref
from omni_ref import hf, presets, toy_tasks
from omni_ref.generate import generate_speech
from omni_ref.talker import suppressed_ids

U = 2.0 ** -8                                    # bf16's unit roundoff: 8 significant bits
DATA = presets.REPO_DIR / "data"
MEDIA = [{"type": "audio", "audio": str(DATA / "speech.wav")}, {"type": "image", "image": str(DATA / "image.png")},
         {"type": "video", "video": str(DATA / "video")}]


def _tol(depth: int, reference: torch.Tensor) -> float:
    return depth * 2 * U * reference.abs().max().item()


def _depth_thinker(cfg, media: bool) -> int:
    """Rounding stages of a Thinker pass: embeddings, text layers, final norm + lm_head; with media, the longer
    encoder in front (audio: 3 convolutions + conv_out + layers + 2 projections; vision: patch embedding +
    blocks + merger)."""
    t = cfg.thinker_config
    depth = 1 + t.text_config.num_hidden_layers + 1
    if media:
        depth += max(4 + t.audio_config.encoder_layers + 2, 1 + t.vision_config.depth + 1)
    return depth


def _depth_talker(cfg) -> int:
    return 1 + cfg.talker_config.text_config.num_hidden_layers + 1


def _depth_code2wav(code2wav) -> int:
    """Pre-transformer layers + final norm, and every convolution of the upsampler and the decoder."""
    convs = sum(isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) for m in code2wav.modules())
    return 1 + code2wav.config.num_hidden_layers + 1 + convs


@pytest.fixture(scope="module")
def runs(tiny_dir):
    """{dtype: (ours, HF's)} on the tiny checkpoint, fp32 and bf16, and our processor."""
    models = {dt: (omni_ref.load(tiny_dir, dtype=dt), hf.load_hf(tiny_dir, dtype=dt))
              for dt in (torch.float32, torch.bfloat16)}
    return models, omni_ref.Processor.from_pretrained(tiny_dir)


def _inputs(processor, parts=(), question="What is in this?"):
    messages = [{"role": "user", "content": list(parts) + [{"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         fps=2.0)


def _max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def test_loaded_in_bf16_like_hf(runs):
    """Every parameter bf16 on both sides; the one buffer (audio positions) fp32 on both, as HF keeps it."""
    models, _ = runs
    ours, theirs = models[torch.bfloat16]
    assert {p.dtype for p in ours.parameters()} == {p.dtype for p in theirs.parameters()} == {torch.bfloat16}
    assert {b.dtype for b in ours.buffers() if b.is_floating_point()} == {torch.float32}
    assert theirs.thinker.model.audio_tower.positional_embedding.positional_embedding.dtype == torch.float32


@pytest.mark.parametrize("media", [False, True], ids=["text", "audio+image+video"])
def test_thinker_logits_bf16_equal_hf(runs, media):
    models, processor = runs
    inputs = _inputs(processor, MEDIA if media else ())
    with torch.no_grad():
        reference = models[torch.float32][0].thinker(**inputs).logits
        ours, theirs = (m.thinker(**inputs).logits for m in models[torch.bfloat16])
    assert ours.dtype == theirs.dtype == torch.bfloat16
    tol = _tol(_depth_thinker(models[torch.float32][0].config, media), reference)
    assert _max_diff(ours, theirs) <= tol
    assert 0 < _max_diff(ours, reference) <= tol          # bf16 really ran, and stayed close to fp32


def test_talker_logits_bf16_equal_hf(runs):
    models, _ = runs
    width = models[torch.float32][0].config.talker_config.text_config.hidden_size
    x = torch.randn(2, 9, width, generator=torch.Generator().manual_seed(0)) * 0.5
    with torch.no_grad():
        reference = models[torch.float32][0].talker(inputs_embeds=x).logits
        ours = models[torch.bfloat16][0].talker(inputs_embeds=x.bfloat16()).logits
        theirs = models[torch.bfloat16][1].talker(inputs_embeds=x.bfloat16(), use_cache=False).logits
    tol = _tol(_depth_talker(models[torch.float32][0].config), reference)
    assert _max_diff(ours, theirs) <= tol
    assert 0 < _max_diff(ours, reference) <= tol


def test_code2wav_bf16_equal_hf(runs):
    models, _ = runs
    codes = torch.randint(0, 128, (2, 4, 12), generator=torch.Generator().manual_seed(0))
    ours32 = models[torch.float32][0].code2wav
    ours, theirs = models[torch.bfloat16][0].code2wav, models[torch.bfloat16][1].code2wav
    with torch.no_grad():
        reference = ours32(codes)
        tol = _tol(_depth_code2wav(ours32), reference)
        assert _max_diff(ours(codes), theirs(codes)) <= tol
        assert 0 < _max_diff(ours(codes), reference) <= tol
        chunked = ours.chunked_decode(codes, chunk_size=5, left_context_size=2)
        assert _max_diff(chunked, theirs.chunked_decode(codes, chunk_size=5, left_context_size=2)) <= tol


def _margin(scores: torch.Tensor) -> float:
    """How far the top-1 score of one step (1, V) leads the runner-up."""
    top = scores.float().topk(2, dim=-1).values                     # (1, 2)
    return (top[0, 0] - top[0, 1]).item()


def test_greedy_text_and_speech_bf16_equal_hf_where_the_margins_decide(runs):
    """One greedy speech run on each side (repetition penalty off, so each choice is the argmax of the logits,
    suppressed control ids aside). The steps in generation order: the Thinker's text tokens (margins from HF's
    own step logits), then per frame code 0 (our Talker's step logits) and the residual codes (our code
    predictor's). A stage's depth adds to those before it: the Talker reads the Thinker's states, the code
    predictor the Talker's. Each stage's scale is the largest |logit| of its steps."""
    models, processor = runs
    (ours, theirs), cfg = models[torch.bfloat16], models[torch.float32][0].config
    inputs = _inputs(processor, question="Say hello to the world.")
    T = inputs["input_ids"].shape[1]
    kw = dict(thinker_max_new_tokens=6, thinker_do_sample=False, talker_max_new_tokens=10, talker_do_sample=False,
              talker_repetition_penalty=1.0)
    want = hf.hf_speech(theirs, **inputs, **kw)
    got = generate_speech(ours, **inputs, **kw, talker_output_logits=True)
    with torch.no_grad(), hf.quiet():
        hf_text = theirs.thinker.generate(**inputs, max_new_tokens=6, do_sample=False, output_logits=True,
                                          return_dict_in_generate=True)
    assert torch.equal(hf_text.sequences, want["text_ids"])        # the same text HF's speech run made

    depth = _depth_thinker(cfg, media=False)
    tol = _tol(depth, torch.cat(hf_text.logits))
    steps = [(_margin(s), got.text_ids[0, T + i].item(), want["text_ids"][0, T + i].item(), tol)
             for i, s in enumerate(hf_text.logits)]
    depth += _depth_talker(cfg)
    talker_tol = _tol(depth, torch.cat(got.talker.logits))
    depth += 1 + cfg.talker_config.code_predictor_config.num_hidden_layers + 1
    predictor_tol = _tol(depth, torch.cat([h for frame in got.talker.residual_logits for h in frame]))
    blocked = torch.zeros(cfg.talker_config.text_config.vocab_size, dtype=torch.bool)
    blocked[suppressed_ids(cfg.talker_config)] = True
    seq, want_seq = got.talker.sequences[0], want["talker_result"].sequences[0]
    for f, scores in enumerate(got.talker.logits):
        steps.append((_margin(scores.masked_fill(blocked, float("-inf"))), seq[f].item(), want_seq[f].item(),
                      talker_tol))
        if f < got.talker.codes.shape[-1]:           # the last code 0 is never completed into a frame
            for h, head in enumerate(got.talker.residual_logits[f]):
                steps.append((_margin(head), got.talker.codes[0, h + 1, f].item(),
                              want["codes"][0, h + 1, f].item(), predictor_tol))

    decided = next((i for i, (margin, _, _, tol) in enumerate(steps) if margin <= 2 * tol), len(steps))
    assert decided >= 1, "no step is decided by its margin: the comparison would check nothing"
    assert [s[1] for s in steps[:decided]] == [s[2] for s in steps[:decided]]
    if decided == len(steps):                     # every step decided: the whole output must agree
        assert torch.equal(got.talker.codes, want["codes"])
        assert _max_diff(got.wav, want["wav"]) <= _tol(_depth_code2wav(ours.code2wav), want["wav"])


@pytest.fixture(scope="module")
def toy_thinkers():
    """(ours, HF's) bf16 Thinkers of the trained toy checkpoint, and our processor: learned weights give the
    confident next-token margins that random ones lack."""
    ckpt = presets.cached_checkpoint("toy")
    return (omni_ref.load(ckpt, dtype=torch.bfloat16, components=("thinker",)),
            hf.load_hf(ckpt, dtype=torch.bfloat16), omni_ref.Processor.from_pretrained(ckpt))


@pytest.mark.parametrize("task", toy_tasks.TASKS)
def test_toy_answers_bf16_equal_hf_where_the_margins_decide(toy_thinkers, task):
    """The toy Thinker answering an image / audio / video question greedily in bf16: HF's step logits give each
    step's margin; tokens must agree up to the first step that the margin does not decide."""
    ours, theirs, processor = toy_thinkers
    inputs = toy_tasks.prompts(processor, toy_tasks.samples(task, 1, seed=123))
    eos = ours.config.im_end_token_id
    got = ours.generate(**inputs, return_audio=False, thinker_max_new_tokens=3, thinker_eos_token_id=eos)
    with torch.no_grad(), hf.quiet():
        want = theirs.thinker.generate(**inputs, max_new_tokens=3, do_sample=False, eos_token_id=eos,
                                       output_logits=True, return_dict_in_generate=True)
    T = inputs["input_ids"].shape[1]
    tol = _tol(_depth_thinker(ours.config, media=True), torch.cat(want.logits))
    margins = [_margin(s) for s in want.logits]
    decided = next((i for i, m in enumerate(margins) if m <= 2 * tol), len(margins))
    assert decided >= 1, f"margins {margins} vs 2 tol = {2 * tol:.3f}: nothing decided"
    assert got[0, T:T + decided].tolist() == want.sequences[0, T:T + decided].tolist()
