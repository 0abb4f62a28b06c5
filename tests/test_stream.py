"""`model.stream` (stream.py): the Thinker, the Talker with its MTP, and Code2Wav interleaved.

Joined, the events must be `generate`'s result: the "text" ids its new ids, the "audio" samples its
waveform within 1e-5 (the answer tokens' text projections are computed one at a time when streaming
and all at once in generate, so they differ at rounding level; everything else runs in the same
shapes). Against HF the same holds, through HF's generate (which returns audio only at the end).

Random weights never reach eos on their own: the Thinker stops at thinker_max_new_tokens (its last
token is never fed back, tts_eos stands in for it), the Talker at talker_max_new_tokens. Where a
test needs the Thinker to stop at eos, it names a token the free run produces.
"""
import pytest
import torch

import omni_ref
from omni_ref import hf, presets, stream as stream_module
from omni_ref.generate import generate_speech
from omni_ref.stream import StreamEvent

DATA = presets.REPO_DIR / "data"
SPEECH, IMAGE, VIDEO = str(DATA / "speech.wav"), str(DATA / "image.png"), str(DATA / "video")
GREEDY = dict(thinker_max_new_tokens=6, thinker_do_sample=False, talker_max_new_tokens=8, talker_do_sample=False)


def _messages(parts=(), question="Say hello to the world."):
    return [{"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
            {"role": "user", "content": list(parts) + [{"type": "text", "text": question}]}]


def _inputs(processor, parts=(), **kw):
    return processor.apply_chat_template(_messages(parts), add_generation_prompt=True, tokenize=True,
                                         return_dict=True, fps=2.0, **kw)


def _joined(events):
    """(text ids (n,), wav (samples,), kinds) of a list of events, checking what every stream must hold."""
    assert all(isinstance(e, StreamEvent) and e.row == 0 for e in events)
    times = [e.time_s for e in events]
    assert times == sorted(times) and times[0] >= 0                     # non-decreasing, from the call
    text = [e.ids for e in events if e.kind == "text"]
    audio = [e.wav for e in events if e.kind == "audio"]
    assert len(text) + len(audio) == len(events)
    assert all(t.dtype == torch.int64 and t.ndim == 1 for t in text)
    assert all(w.dtype == torch.float32 and w.ndim == 1 and w.numel() > 0 for w in audio)
    return torch.cat(text), torch.cat(audio), [e.kind for e in events]


def _check_equal(events, text_ids, wav, prompt_length):
    """Joined events == a generate result (text ids (1, T + n), wav (1, 1, samples))."""
    ids, samples, _ = _joined(events)
    assert torch.equal(ids, text_ids[0, prompt_length:])
    assert samples.shape == wav.reshape(-1).shape
    torch.testing.assert_close(samples, wav.reshape(-1), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def models_and_processor(tiny_models, tiny_processor):
    return (*tiny_models, tiny_processor)


# ---- joined events == generate == HF ----------------------------------------------------------------------

@pytest.mark.parametrize("parts, chunk", [
    (({"type": "audio", "audio": SPEECH},), 1),
    (({"type": "image", "image": IMAGE},), 4),
    (({"type": "video", "video": VIDEO},), 1000)], ids=["audio-1", "image-4", "video-1000"])
def test_greedy_stream_equal_generate_and_hf(models_and_processor, parts, chunk):
    """Media placeholders reach the Talker's prompt through the prefill's states (hidden_projection), an image or
    video also sets its TM-RoPE positions; audio_chunk_frames 1 (a packet per frame), 4 (the default) and more
    than the answer has (one packet at the end)."""
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, parts)
    T = inputs["input_ids"].shape[1]
    events = list(ours.stream(**inputs, audio_chunk_frames=chunk, **GREEDY))
    text_ids, wav = ours.generate(**inputs, return_audio=True, **GREEDY)
    _check_equal(events, text_ids, wav, T)
    want = hf.hf_speech(theirs, **inputs, **GREEDY)
    _check_equal(events, want["text_ids"], want["wav"], T)
    frames = GREEDY["talker_max_new_tokens"] - 1
    n_audio = sum(e.kind == "audio" for e in events)
    assert n_audio >= 1 and (chunk != 1 or n_audio >= frames) and (chunk < frames or n_audio == 1)


def test_demo_checkpoint_stream_equal_generate_and_hf():
    """The notebooks' checkpoint: 16 code groups, the demo's widths."""
    ckpt = presets.cached_checkpoint("demo")
    ours, theirs, processor = omni_ref.load(ckpt), hf.load_hf(ckpt), omni_ref.Processor.from_pretrained(ckpt)
    inputs = _inputs(processor)
    kw = dict(GREEDY, thinker_max_new_tokens=5, talker_max_new_tokens=6)
    events = list(ours.stream(**inputs, audio_chunk_frames=2, **kw))
    want = hf.hf_speech(theirs, **inputs, **kw)
    _check_equal(events, want["text_ids"], want["wav"], inputs["input_ids"].shape[1])
    _check_equal(events, *ours.generate(**inputs, return_audio=True, **kw), inputs["input_ids"].shape[1])


def test_seeded_sampling_equal_generate_with_a_generator_per_stage(models_and_processor):
    """Interleaving changes the order of the draws; one generator per stage makes each stage's draws those of
    generate with the same seeds."""
    ours, _, processor = models_and_processor
    inputs = _inputs(processor)
    kw = dict(thinker_max_new_tokens=6, thinker_do_sample=True, talker_max_new_tokens=8, talker_do_sample=True)
    runs = []
    for seed in (0, 2):                                     # (seed 1's Talker draws codec eos first)
        def gens():
            return dict(thinker_generator=torch.Generator().manual_seed(seed),
                        talker_generator=torch.Generator().manual_seed(100 + seed))
        events = list(ours.stream(**inputs, **kw, **gens()))
        _check_equal(events, *ours.generate(**inputs, return_audio=True, **kw, **gens()), inputs["input_ids"].shape[1])
        runs.append(_joined(events)[0])
    assert not torch.equal(runs[0], runs[1])                # the seed matters: the test could fail


def test_seeded_talker_sampling_equal_hf(models_and_processor):
    """HF samples from torch's global generator; with a greedy Thinker only its Talker draws, so a generator with
    the same seed gives the Talker (and its MTP) the same draws."""
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor, ({"type": "audio", "audio": SPEECH},))
    kw = dict(GREEDY, talker_do_sample=True)
    torch.manual_seed(7)
    want = hf.hf_speech(theirs, **inputs, **kw)
    events = list(ours.stream(**inputs, talker_generator=torch.Generator().manual_seed(7), **kw))
    _check_equal(events, want["text_ids"], want["wav"], inputs["input_ids"].shape[1])


@pytest.fixture
def streamed_prompts(monkeypatch):
    """The Talker prompts the streams of a test build (a list, one per stream), seen by wrapping build_prompt."""
    prompts, build_prompt = [], stream_module.build_prompt

    def spy(*args, **kwargs):
        prompts.append(build_prompt(*args, **kwargs))
        return prompts[-1]
    monkeypatch.setattr(stream_module, "build_prompt", spy)
    return prompts


def test_speakers_reach_the_streamed_prompt(models_and_processor, streamed_prompts):
    """Random weights may speak both voices with the same codes, so look at the Talker's prompt itself: the
    stream's equals generate's, and the two speakers' differ at the speaker position only."""
    ours, _, processor = models_and_processor
    inputs = _inputs(processor)
    prompts = streamed_prompts
    embeds = {}
    for speaker in ("Ethan", "chelsie"):
        events = list(ours.stream(**inputs, speaker=speaker, **GREEDY))
        want = generate_speech(ours, **inputs, speaker=speaker, **GREEDY)
        _check_equal(events, want.text_ids, want.wav, inputs["input_ids"].shape[1])
        torch.testing.assert_close(prompts[-1].inputs_embeds, want.prompt.inputs_embeds, atol=1e-6, rtol=0)
        embeds[speaker] = prompts[-1].inputs_embeds
    changed = (embeds["Ethan"] - embeds["chelsie"]).abs().sum(-1)[0].nonzero().flatten().tolist()
    assert changed == [want.prompt.sources.index("tts_pad + speaker")]


def test_thinker_stopping_at_eos_equal_hf(models_and_processor, streamed_prompts):
    """The Thinker stops at an eos it generates (token 3): tts_eos takes that token's place in the trailing text,
    tts_pad follows, and the Talker goes on speaking past the text's end. The trailing text the stream wrote
    entry by entry is build_prompt's."""
    ours, theirs, processor = models_and_processor
    inputs = _inputs(processor)
    T = inputs["input_ids"].shape[1]
    free = generate_speech(ours, **inputs, **GREEDY)
    eos = int(free.text_ids[0, T + 3])
    assert eos not in free.text_ids[0, T:T + 3].tolist()
    kw = dict(GREEDY, thinker_eos_token_id=eos)
    events = list(ours.stream(**inputs, audio_chunk_frames=1, **kw))
    want = hf.hf_speech(theirs, **inputs, **kw)
    _check_equal(events, want["text_ids"], want["wav"], T)
    assert want["text_ids"].shape[1] == T + 4
    streamed, full = streamed_prompts[-1], generate_speech(ours, **inputs, **kw).prompt
    assert streamed.text_complete and streamed.trailing_text.shape == full.trailing_text.shape
    assert full.trailing_text.shape[1] == 3                        # tokens 1, 2, then tts_eos for token 3
    torch.testing.assert_close(streamed.trailing_text, full.trailing_text, atol=1e-6, rtol=0)
    assert torch.equal(streamed.trailing_text[:, -1:], full.tts_eos_embed)
    assert torch.equal(streamed.text_at(5), full.tts_pad_embed)


# ---- the schedule ---------------------------------------------------------------------------------------

def test_schedule_speech_starts_while_the_thinker_writes(models_and_processor):
    """The scheduling rule (Code2WavStream returns every final sample at once): tokens 0 and 1 (the
    Talker's prompt ends with token 0, its first step adds token 1), then per frame its audio and the token the
    next Talker step adds, until the Thinker's last token; the rest of the frames after it."""
    ours, _, processor = models_and_processor
    inputs = _inputs(processor)
    kw = dict(GREEDY, thinker_max_new_tokens=8, talker_max_new_tokens=12)
    events = list(ours.stream(**inputs, audio_chunk_frames=1, **kw))
    n, frames = 8, 11
    _, _, kinds = _joined(events)
    assert kinds == ["text"] * 2 + ["audio", "text"] * (n - 2) + ["audio"] * (frames - (n - 2))
    first_audio = kinds.index("audio")
    assert first_audio < len(kinds) - 1 - kinds[::-1].index("text")     # audio before the last text
    assert events[first_audio].wav.numel() == 1920 - 555                # one frame's samples
    # with 4 frames a packet the first audio still comes while the Thinker writes
    kinds4 = _joined(list(ours.stream(**inputs, audio_chunk_frames=4, **kw)))[2]
    assert kinds4.index("audio") < len(kinds4) - 1 - kinds4[::-1].index("text")


# ---- bad input --------------------------------------------------------------------------------------------

def test_bad_requests_are_refused_before_the_first_event(models_and_processor, tiny_dir):
    ours, _, processor = models_and_processor
    inputs = _inputs(processor)
    for bad in (0, -1, 2.5, "4"):
        with pytest.raises(ValueError, match=rf"audio_chunk_frames={bad!r} must be a whole number >= 1"):
            ours.stream(**inputs, audio_chunk_frames=bad, **GREEDY)
    two = _inputs(processor)
    two = {k: torch.cat([v, v]) if k in ("input_ids", "attention_mask") else v for k, v in two.items()}
    with pytest.raises(ValueError, match=r"stream takes one prompt \(input_ids of batch 1\), got a batch of 2: "
                                         r"call model.stream once per prompt, or model.generate"):
        ours.stream(**two, **GREEDY)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"thinker_generator and talker_generator are the same torch.Generator.*"
                                         r"give each stage its own"):
        ours.stream(**inputs, **dict(GREEDY, thinker_do_sample=True, talker_do_sample=True),
                    thinker_generator=g, talker_generator=g)
    # one generator is fine when only one stage samples: the other draws nothing
    kw = dict(GREEDY, talker_do_sample=True)
    events = list(ours.stream(**inputs, **kw, thinker_generator=g, talker_generator=g))
    want = ours.generate(**inputs, return_audio=True, **kw, talker_generator=torch.Generator().manual_seed(0))
    _check_equal(events, *want, inputs["input_ids"].shape[1])
    thinker_only = omni_ref.load(tiny_dir, components=("thinker",))
    with pytest.raises(ValueError, match=r"stream \(it speaks\) needs the Talker and Code2Wav.*return_audio=False"):
        thinker_only.stream(**inputs, **GREEDY)
    with pytest.raises(ValueError, match=r"thinker_max_new_tokens=1 must be a whole number >= 2"):
        ours.stream(**inputs, **dict(GREEDY, thinker_max_new_tokens=1))
    with pytest.raises(TypeError, match="talker_top_n: omni_ref's Talker loop does not know option 'top_n'"):
        ours.stream(**inputs, talker_top_n=3, **GREEDY)
    with pytest.raises(ValueError, match=r"stream speaks .* return_audio=False has no stream"):
        ours.stream(**inputs, return_audio=False, **GREEDY)
    assert [ev.kind for ev in ours.stream(**inputs, return_audio=True, **GREEDY)][:2] == ["text", "text"]


def test_errors_found_while_streaming_are_generates(models_and_processor):
    """What only the run can tell: the Thinker stopping at token 0, the Talker at its first code."""
    ours, _, processor = models_and_processor
    inputs = _inputs(processor)
    T = inputs["input_ids"].shape[1]
    free = generate_speech(ours, **inputs, **GREEDY)
    with pytest.raises(ValueError, match=r"the Thinker generated 1 token\(s\); speech needs at least 2"):
        list(ours.stream(**inputs, **dict(GREEDY, thinker_eos_token_id=int(free.text_ids[0, T]))))
    with pytest.raises(ValueError, match=r"the Talker produced no codec frame \(codec eos came first\)"):
        list(ours.stream(**inputs, talker_eos_token_id=int(free.talker.sequences[0, 0]), **GREEDY))
