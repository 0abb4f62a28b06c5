"""The speech path of `model.generate` (return_audio=True) against HF's Qwen3OmniMoeForConditionalGeneration.generate.

HF's generate returns only (text ids, waveform). To compare the stages in between we listen in on HF's own calls
(`hf.hf_speech`): the keyword arguments its generate hands `talker.generate` (the Talker prompt), what that returns
(the codebook-0 ids) and the codes it hands `code2wav.chunked_decode`.

Determinism. With talker_do_sample=False HF's Talker is greedy and it copies do_sample=False onto its code
predictor (Qwen3OmniMoeTalkerForConditionalGeneration._prepare_generation_config), so the whole run is greedy
and needs no seed; we do the same (code_predictor.residual_sampling). Repetition penalty (1.05) and the
suppressed control ids apply in greedy mode too, on both sides. With sampling on, HF draws from torch's global
generator in a fixed order (Thinker tokens, then per frame: code 0, then the 15 residual codes while preparing the
next step); we draw in the same order, so one torch.manual_seed on each side gives equal ids and codes.

Random weights never steer the Talker to codec eos on their own, so runs stop at talker_max_new_tokens: HF then
keeps max_new_tokens - 1 frames (the last code 0 is never fed back through the code predictor), as we do.
Where a test needs a stop, it names a token the free run is known to produce as the eos id.
"""
import pytest
import torch

import omni_ref
from omni_ref import hf, presets
from omni_ref.config import ConfigError
from omni_ref.generate import UnknownSpeakerError, generate_speech, speaker_id_of

DATA = presets.REPO_DIR / "data"
SPEECH, IMAGE = str(DATA / "speech.wav"), str(DATA / "image.png")
GREEDY = dict(thinker_max_new_tokens=6, thinker_do_sample=False, talker_max_new_tokens=10, talker_do_sample=False)


def _messages(parts=(), question="Say hello to the world."):
    return [{"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
            {"role": "user", "content": list(parts) + [{"type": "text", "text": question}]}]


def _inputs(processor, conversation, **kw):
    return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         **kw)


@pytest.fixture(scope="module")
def models_and_processor(tiny_models, tiny_processor):
    """(our whole model, HF's whole model, our Processor) on the tiny checkpoint."""
    return (*tiny_models, tiny_processor)


def _check_equal(ours, want, talker_frames=None):
    """ids equal, Talker prompt within 1e-5, codebook-0 ids and codes equal, wave within 1e-5."""
    kw = want["talker_kwargs"]
    assert torch.equal(ours.text_ids, want["text_ids"])
    torch.testing.assert_close(ours.prompt.inputs_embeds, kw["inputs_embeds"], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.prompt.trailing_text, kw["trailing_text_hidden"], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.prompt.tts_pad_embed.expand_as(kw["tts_pad_embed"]), kw["tts_pad_embed"],
                               atol=1e-5, rtol=0)
    assert torch.equal(ours.prompt.attention_mask, kw["attention_mask"])
    assert torch.equal(ours.prompt.input_ids, kw["talker_input_ids"])
    assert torch.equal(ours.talker.sequences, want["talker_result"].sequences)
    if talker_frames is not None:
        assert ours.talker.codes.shape[-1] == talker_frames
    if isinstance(want["wav"], list):
        assert len(ours.wav) == len(want["wav"])
        for a, b in zip(ours.wav, want["wav"]):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    else:
        assert torch.equal(ours.talker.codes, want["codes"])
        assert ours.wav.shape == want["wav"].shape and ours.wav.dtype == torch.float32
        torch.testing.assert_close(ours.wav, want["wav"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("parts", [(), ({"type": "image", "image": IMAGE},), ({"type": "audio", "audio": SPEECH},)],
                         ids=["text", "image", "audio"])
def test_greedy_speech_equal_hf(models_and_processor, parts):
    """Text prompts take text_projection only; image and audio placeholders go through hidden_projection of
    Thinker layer accept_hidden_layer, and an image also gives the Talker TM-RoPE positions (HF's get_rope_index
    over the user turns with the Talker config's ids). 10 steps without eos -> 9 frames."""
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, _messages(parts))
    want = hf.hf_speech(theirs, **inputs, **GREEDY)
    got = generate_speech(ours, **inputs, **GREEDY)
    _check_equal(got, want, talker_frames=9)
    assert got.wav.shape == (1, 1, 9 * 1920 - 555)       # Code2Wav's causal trim: 555 samples at the start
    media = [s for s in got.prompt.sources if s.startswith("user media")]
    assert len(media) == int(torch.isin(inputs["input_ids"], torch.tensor(
        [ours.config.thinker_config.image_token_id, ours.config.thinker_config.audio_token_id])).sum())
    # the public call returns exactly (text ids, wav), as HF
    text_ids, wav = ours.generate(**inputs, return_audio=True, **GREEDY)
    assert torch.equal(text_ids, want["text_ids"]) and torch.equal(wav, got.wav)


def test_demo_checkpoint_greedy_speech_equal_hf():
    """The notebook's checkpoint: 16 code groups of 2048 codes, 64 Thinker experts, top-6 of 32 Talker experts."""
    ckpt = presets.cached_checkpoint("demo")
    ours, theirs, processor = omni_ref.load(ckpt), hf.load_hf(ckpt), omni_ref.Processor.from_pretrained(ckpt)
    inputs = _inputs(processor, _messages())
    kw = dict(GREEDY, thinker_max_new_tokens=4, talker_max_new_tokens=6)
    want = hf.hf_speech(theirs, **inputs, **kw)
    got = generate_speech(ours, **inputs, **kw)
    _check_equal(got, want, talker_frames=5)
    assert got.talker.codes.shape == (1, 16, 5)


def test_seeded_sampling_speech_equal_hf(models_and_processor):
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, _messages())
    kw = dict(thinker_max_new_tokens=6, thinker_do_sample=True, talker_max_new_tokens=10, talker_do_sample=True)
    for seed in range(2):
        torch.manual_seed(seed)
        want = hf.hf_speech(theirs, **inputs, **kw)
        torch.manual_seed(seed)
        got = generate_speech(ours, **inputs, **kw)
        _check_equal(got, want)                        # sampling may reach codec eos before the step limit


def test_batched_speech_equal_hf(models_and_processor):
    """Two left-padded prompts. Row 0's Thinker and Talker stop early (eos ids taken from a free run), so both
    HF rules for batches act: row 0's trailing text gets tts_eos right after its own eos, and its codes after the
    codec eos are zeroed and its wave cut to its own length. HF returns a list of 1D waves for a batch."""
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, [_messages(), _messages(question="What is the capital of France, and why?")],
                     padding=True)
    assert (inputs["attention_mask"][0] == 0).any()
    T = inputs["input_ids"].shape[1]
    free = generate_speech(ours, **inputs, **GREEDY)
    eos = int(free.text_ids[0, T + 2])
    codec_eos = int(free.talker.sequences[0, 5])
    assert eos not in free.text_ids[1, T:T + 3].tolist()
    kw = dict(GREEDY, thinker_eos_token_id=eos, talker_eos_token_id=codec_eos)
    want = hf.hf_speech(theirs, **inputs, **kw)
    got = generate_speech(ours, **inputs, **kw)
    _check_equal(got, want)
    # row 0 stopped at generated token 2: its trailing entry 2 is tts_eos, the rest tts_pad
    tts_eos = got.prompt.trailing_text[1, -1]
    assert torch.equal(got.prompt.trailing_text[0, 2], tts_eos)
    assert torch.equal(got.prompt.trailing_text[0, 3:], got.prompt.tts_pad_embed[0].expand(
        got.prompt.trailing_text.shape[1] - 3, -1))
    # codes handed to Code2Wav: each row zeroed from its own codec eos on; waves cut to each row's frames
    lengths = [int((row == codec_eos).nonzero()[0]) for row in got.talker.sequences]
    masked = got.talker.codes.clone()
    for row, n in enumerate(lengths):
        masked[row, :, n:] = 0
    assert torch.equal(masked, want["codes"])
    assert lengths[0] != lengths[1] and [w.shape[0] for w in got.wav] == [n * 1920 - 555 for n in lengths]


def _user_chat(question):
    return [{"role": "user", "content": [{"type": "text", "text": question}]}]


STORY = dict(thinker_max_new_tokens=8, talker_max_new_tokens=20, talker_do_sample=False)


def _check_batch_equal(got, want):
    """Codebook-0 ids and the codes handed to Code2Wav equal HF's; one wave per row, same length,
    within 1e-5."""
    assert torch.equal(got.talker.sequences, want["talker_result"].sequences)
    lengths = [len(w) for w in got.wav]
    masked = got.talker.codes.clone()
    for row, n in enumerate(round((k + 555) / 1920) for k in lengths):
        masked[row, :, n:] = 0                                    # HF zeroes codes after codec eos
    assert torch.equal(masked, want["codes"])
    assert lengths == [len(w) for w in want["wav"]]
    for a, b in zip(got.wav, want["wav"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_left_padded_batch_penalty_skips_like_hf(models_and_processor):
    """The issue's case: "Say hello." and a longer story request, left-padded into one batch
    (Thinker 8 tokens, Talker 20, greedy). HF's generate builds the repetition penalty with
    prompt_ignore_length = each row's left-pad count, but its Talker's ids are the generated codes
    only, so row 0 (12 pads in the Talker prompt) leaves its first 12 codes unpenalised. Counting
    them (what we did) parted from HF at step 12: 26,325 samples instead of HF's 35,925."""
    ours, theirs, processor = models_and_processor
    chats = [_user_chat("Say hello."), _user_chat("Tell me a much longer story about a cat now.")]
    inputs = _inputs(processor, chats, padding=True)
    kw = dict(STORY, thinker_eos_token_id=ours.config.im_end_token_id)
    want = hf.hf_speech(theirs, **inputs, **kw)
    got = generate_speech(ours, **inputs, **kw)
    assert torch.equal(got.text_ids, want["text_ids"])
    assert (got.prompt.attention_mask == 0).sum(-1).tolist() == [12, 0]
    _check_batch_equal(got, want)
    assert [len(w) for w in got.wav] == [35925, 35925]
    # the same row alone: no padding, every code counts, and HF agrees with us there too
    alone_inputs = _inputs(processor, chats[:1])
    alone, alone_hf = generate_speech(ours, **alone_inputs, **kw), hf.hf_speech(theirs, **alone_inputs, **kw)
    assert torch.equal(alone.talker.sequences, alone_hf["talker_result"].sequences)
    torch.testing.assert_close(alone.wav, alone_hf["wav"], atol=1e-5, rtol=0)
    assert alone.wav.shape[-1] == 26325
    n = alone.talker.sequences.shape[1]
    parted = (got.talker.sequences[0, :n] != alone.talker.sequences[0]).nonzero().flatten()
    assert int(parted[0]) == 12            # code 117, first chosen at step 6 (< 12), unpenalised in the batch


def test_another_left_padded_batch_equal_hf(models_and_processor):
    """Three rows of different lengths, a system turn, a stronger penalty and an early Thinker eos for
    one row, so that the pad counts differ from the issue's case."""
    ours, theirs, processor = models_and_processor
    chats = [_messages(question="Hi."), _messages(question="Name three colours of the sea at dusk, please."),
             _messages(question="Count to four.")]
    inputs = _inputs(processor, chats, padding=True)
    kw = dict(STORY, talker_max_new_tokens=16, talker_repetition_penalty=1.3,
              thinker_eos_token_id=ours.config.im_end_token_id)
    want = hf.hf_speech(theirs, **inputs, **kw)
    got = generate_speech(ours, **inputs, **kw)
    assert torch.equal(got.text_ids, want["text_ids"])
    pads = (got.prompt.attention_mask == 0).sum(-1)
    assert pads.min() == 0 and len(set(pads.tolist())) == 3
    _check_batch_equal(got, want)


def test_return_audio_default_speaks_when_the_talker_is_loaded(models_and_processor):
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, _messages())
    text_ids, wav = ours.generate(**inputs, **GREEDY)                       # return_audio=None
    want_ids, want_wav = theirs.generate(**inputs, **GREEDY)
    assert torch.equal(text_ids, want_ids)
    torch.testing.assert_close(wav, want_wav, atol=1e-5, rtol=0)
    assert torch.equal(ours.generate(**inputs, generation_mode="text", **GREEDY), want_ids)


def test_speakers_change_only_the_speaker_position(models_and_processor):
    ours, _, processor = models_and_processor
    inputs = _inputs(processor, _messages())
    kc = ours.config.talker_config
    prompts = {name: generate_speech(ours, **inputs, speaker=name, **GREEDY) for name in ("Ethan", "chelsie")}
    assert prompts["Ethan"].speaker_id == kc.speaker_id["ethan"] == speaker_id_of(kc, "ETHAN")
    diff = (prompts["Ethan"].prompt.inputs_embeds - prompts["chelsie"].prompt.inputs_embeds).abs().sum(-1)[0]
    changed = diff.nonzero().flatten().tolist()
    assert changed == [prompts["Ethan"].prompt.sources.index("tts_pad + speaker")]


# ---- bad input -----------------------------------------------------------------------------------------------

def test_unknown_speaker_lists_the_speakers(models_and_processor):
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, _messages())
    with pytest.raises(UnknownSpeakerError, match=r"speaker='Bob' is not in this checkpoint; its speakers are: "
                                                  r"aiden, chelsie, ethan"):
        ours.generate(**inputs, return_audio=True, speaker="Bob", **GREEDY)
    with pytest.raises(NotImplementedError):          # the exception HF raises, so HF-style handlers still work
        theirs.generate(**inputs, return_audio=True, speaker="Bob", **GREEDY)
    with pytest.raises(NotImplementedError):
        ours.generate(**inputs, return_audio=True, speaker="Bob", **GREEDY)


def test_codec_ids_are_checked_before_speaking(models_and_processor, monkeypatch):
    ours, _, processor = models_and_processor
    inputs = _inputs(processor, _messages())
    monkeypatch.setattr(ours.config.talker_config, "codec_bos_id", 5)
    with pytest.raises(ConfigError, match=r"codec_bos_id=5 must be a control id in 128..1151"):
        ours.generate(**inputs, return_audio=True, **GREEDY)


def test_bad_prompts_and_options_get_clear_errors(models_and_processor):
    ours, _, processor = models_and_processor
    inputs = _inputs(processor, _messages())
    ids = inputs["input_ids"]
    free = generate_speech(ours, **inputs, **GREEDY)
    with pytest.raises(ValueError, match=r"speech needs a chat prompt: input_ids of shape \(batch, seq\) with "
                                         r"seq > 0, got \(1, 0\)"):
        ours.generate(input_ids=ids[:, :0], return_audio=True, **GREEDY)
    no_generation_prompt = processor.apply_chat_template(_messages(), tokenize=True, return_dict=True)
    with pytest.raises(ValueError, match=r"does not end with an assistant turn.*add_generation_prompt=True"):
        ours.generate(**no_generation_prompt, return_audio=True, **GREEDY)
    with pytest.raises(ValueError, match=r"the prompt has no user turn"):
        ours.generate(**_inputs(processor, _messages()[:1]), return_audio=True, **GREEDY)
    with pytest.raises(ValueError, match=r"thinker_max_new_tokens=1 must be a whole number >= 2"):
        ours.generate(**inputs, return_audio=True, **dict(GREEDY, thinker_max_new_tokens=1))
    first_token = int(free.text_ids[0, ids.shape[1]])          # as eos id: the Thinker stops at once (HF crashes)
    with pytest.raises(ValueError, match=r"the Thinker generated 1 token\(s\); speech needs at least 2"):
        ours.generate(**inputs, return_audio=True, **dict(GREEDY, thinker_eos_token_id=first_token))
    with pytest.raises(ValueError, match=r"talker_max_new_tokens=1 must be a whole number >= 2"):
        ours.generate(**inputs, return_audio=True, **dict(GREEDY, talker_max_new_tokens=1))
    first_code = int(free.talker.sequences[0, 0])              # as codec eos: no frame at all (HF crashes)
    with pytest.raises(ValueError, match=r"the Talker produced no codec frame \(codec eos came first\)"):
        ours.generate(**inputs, return_audio=True, talker_eos_token_id=first_code, **GREEDY)
    with pytest.raises(TypeError, match="talker_top_n: omni_ref's Talker loop does not know option 'top_n'"):
        ours.generate(**inputs, return_audio=True, talker_top_n=3, **GREEDY)
    with pytest.raises(ValueError, match=r"temperature=0: must be > 0 when sampling"):
        ours.generate(**inputs, return_audio=True, **dict(GREEDY, talker_do_sample=True, talker_temperature=0))


def test_audio_next_to_an_image_is_refused_like_hf(models_and_processor):
    """HF (5.23 and 5.24) cannot place Talker positions for a user turn with audio and an image (its Talker config has no
    audio_config): we stop with a message that says so instead of inventing positions HF never checked."""
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, _messages([{"type": "audio", "audio": SPEECH}, {"type": "image", "image": IMAGE}]))
    with pytest.raises(AttributeError, match="audio_config"):
        theirs.generate(**inputs, return_audio=True, **GREEDY)
    with pytest.raises(NotImplementedError, match=r"audio next to an image or video is not supported: "
                                                  r"transformers' Talker \(5.23 and 5.24\) fails on it as well"):
        ours.generate(**inputs, return_audio=True, **GREEDY)
    assert ours.generate(**inputs, return_audio=False, **GREEDY).shape[0] == 1     # text still works


def test_thinker_only_load_cannot_speak(tiny_dir):
    thinker_only = omni_ref.load(tiny_dir, components=("thinker",))
    with pytest.raises(ValueError, match="return_audio=True needs the Talker and Code2Wav"):
        thinker_only.generate(input_ids=torch.tensor([[1, 2]]), return_audio=True)
