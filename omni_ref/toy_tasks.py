"""Three synthetic tasks, one per modality, that the toy checkpoint is trained on (issue 11).

Each sample is one user turn, the media part then the question, and a one-word answer followed by <|im_end|>:

    colour   an RGB image: white background, one filled square or circle in red, green, blue or yellow (each
             channel jittered by up to 20), width and height 64-160 px each, the shape 30-70 % of the shorter side,
             anywhere inside.                                   "What colour is the shape?"      red | green | blue | yellow
    beeps    16 kHz mono audio: 0.1-0.5 s of silence, 1-4 sine beeps (300-1000 Hz, 0.15-0.3 s, amplitude 0.2-0.8)
             with 0.15-0.4 s gaps, 0.1-0.5 s of trailing silence, Gaussian noise of std 0.01.
                                                                "How many beeps?"                one | two | three | four
    motion   a video (T, S, S, 3) uint8, T in {4, 6, 8}, S in 64-128: white, one black disc of radius 6-12 px moving
             4-10 px per frame left, right, up or down, staying inside.
                                                                "Which way does the ball move?"  left | right | up | down

Everything is drawn from a numpy Generator, so a seed fixes every sample. `batch` turns samples into model inputs
through `Processor.apply_chat_template` (the prompt exactly as generation sees it) with the answer's tokens
appended and labelled; every other label is -100, so the loss is on the answer only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TASKS = ("colour", "beeps", "motion")
ANSWERS = {"colour": ("red", "green", "blue", "yellow"),
           "beeps": ("one", "two", "three", "four"),
           "motion": ("left", "right", "up", "down")}
QUESTIONS = {"colour": "What colour is the shape?", "beeps": "How many beeps?",
             "motion": "Which way does the ball move?"}
COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 220), "yellow": (230, 200, 20)}
RATE = 16_000
# HF's processor scales every video up to at least 128 tokens per frame pair (384 x 384 px for a square one),
# whatever its size: a 64 px toy video would become mostly interpolated pixels at 36x the compute. The toy tasks
# pass the image limits for videos too, so a video keeps its own size, rounded to whole 32 px merge blocks; the
# images are unaffected (these are the image processor's own defaults). Pass the same to ask the toy model.
MEDIA_LIMITS = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280}


@dataclass
class Sample:
    task: str
    media: np.ndarray          # image (H, W, 3) uint8 | audio (samples,) float32 | video (T, S, S, 3) uint8
    answer: str

    def messages(self) -> list[dict]:
        kind = {"colour": "image", "beeps": "audio", "motion": "video"}[self.task]
        return [{"role": "user", "content": [{"type": kind, kind: self.media},
                                             {"type": "text", "text": QUESTIONS[self.task]}]}]


def colour_sample(rng: np.random.Generator) -> Sample:
    answer = ANSWERS["colour"][rng.integers(4)]
    h, w = (int(v) for v in rng.integers(64, 161, size=2))
    rgb = np.clip(np.array(COLOURS[answer]) + rng.integers(-20, 21, size=3), 0, 255).astype(np.uint8)
    side = int(round(rng.uniform(0.3, 0.7) * min(h, w)))                 # square side = circle diameter
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    image = np.full((h, w, 3), 255, np.uint8)
    if rng.integers(2):                                                  # circle inscribed in the box
        yy, xx = np.mgrid[:h, :w]
        c, r = (side - 1) / 2, side / 2
        inside = (yy - top - c) ** 2 + (xx - left - c) ** 2 <= r ** 2
    else:
        inside = np.zeros((h, w), bool)
        inside[top:top + side, left:left + side] = True
    image[inside] = rgb
    return Sample("colour", image, answer)


def beeps_sample(rng: np.random.Generator) -> Sample:
    n = int(rng.integers(1, 5))
    parts = [np.zeros(int(rng.uniform(0.1, 0.5) * RATE))]
    for i in range(n):
        if i:
            parts.append(np.zeros(int(rng.uniform(0.15, 0.4) * RATE)))
        t = np.arange(int(rng.uniform(0.15, 0.3) * RATE)) / RATE
        parts.append(rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * rng.uniform(300, 1000) * t))
    parts.append(np.zeros(int(rng.uniform(0.1, 0.5) * RATE)))
    wave = np.concatenate(parts)
    wave = wave + rng.normal(0, 0.01, wave.size)
    return Sample("beeps", wave.astype(np.float32), ANSWERS["beeps"][n - 1])


def motion_sample(rng: np.random.Generator) -> Sample:
    answer = ANSWERS["motion"][rng.integers(4)]
    frames = int(rng.choice([4, 6, 8]))
    size = int(rng.integers(64, 129))
    radius = int(rng.integers(6, 13))
    room = size - 1 - 2 * radius                                         # travel the centre has inside the frame
    speed = int(rng.integers(4, min(10, room // (frames - 1)) + 1))     # >= 4 always fits: 39 // 7 = 5 at worst
    travel = speed * (frames - 1)
    along = radius + int(rng.integers(0, room - travel + 1))            # start on the moving axis
    across = radius + int(rng.integers(0, room + 1))                     # fixed on the other axis
    step = {"left": -speed, "right": speed, "up": -speed, "down": speed}[answer]
    if step < 0:
        along += travel                                                  # start at the far end, move back
    yy, xx = np.mgrid[:size, :size]
    video = np.full((frames, size, size, 3), 255, np.uint8)
    for f in range(frames):
        c = along + step * f
        cy, cx = (across, c) if answer in ("left", "right") else (c, across)
        video[f][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = 0
    return Sample("motion", video, answer)


MAKERS = {"colour": colour_sample, "beeps": beeps_sample, "motion": motion_sample}


def stream(task: str, seed: int):
    """An endless stream of samples of one task, the same on every machine for a seed."""
    rng = np.random.default_rng([seed, TASKS.index(task)])
    while True:
        yield MAKERS[task](rng)


def samples(task: str, n: int, seed: int) -> list[Sample]:
    """The first n samples of stream(task, seed)."""
    it = stream(task, seed)
    return [next(it) for _ in range(n)]


def answer_ids(processor, answer: str) -> list[int]:
    """The tokens the model must write: the word, then <|im_end|>."""
    im_end = processor.tokenizer.token_to_id("<|im_end|>")
    return processor.tokenizer.encode(answer, add_special_tokens=False).ids + [im_end]


def prompts(processor, batch: list[Sample]) -> dict:
    """The generation prompts of a batch (left-padded), exactly as generate receives them."""
    return processor.apply_chat_template([s.messages() for s in batch], add_generation_prompt=True,
                                         tokenize=True, return_dict=True, processor_kwargs=dict(MEDIA_LIMITS))


def batch(processor, batch: list[Sample]) -> tuple[dict, torch.Tensor]:
    """Training inputs and labels: each prompt followed by its answer tokens.

    The prompts come left-padded from the processor; answers of different lengths are padded on the right
    (attention 0, label -100), where causal attention keeps them out of every real token's view."""
    inputs = prompts(processor, batch)
    answers = [answer_ids(processor, s.answer) for s in batch]
    width = max(map(len, answers))
    pad = processor.pad_token_id
    tail = torch.tensor([a + [pad] * (width - len(a)) for a in answers])
    tail_mask = torch.tensor([[1] * len(a) + [0] * (width - len(a)) for a in answers])
    T = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], tail], 1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], tail_mask], 1)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, T:] = torch.where(tail_mask.bool(), tail, -100)
    return inputs, labels


def object_tokens(sample: Sample, grid=None, tokens: int | None = None, merge: int = 2) -> torch.Tensor:
    """Which of a sample's media tokens cover what the answer is about, for attention figures.

    colour: the shape, per merged image token: bool (h/merge, w/merge) for the patch grid (1, h, w).
    motion: the ball in either frame of a token's frame pair: bool (t, h/merge, w/merge) for the grid (t, h, w).
    beeps:  a beep, per audio token: bool (tokens,), tokens spread evenly over the clip (each is 80 ms; the
            encoder's per-second chunking shifts them by less than one token).
    A token counts when any of its pixels (or samples) belongs to the object."""
    if sample.task == "beeps":
        loud = torch.from_numpy(np.abs(sample.media) > 0.1).float()                  # inside a beep
        edges = torch.linspace(0, len(loud), tokens + 1).long()
        return torch.stack([loud[a:b].amax() for a, b in zip(edges[:-1], edges[1:])]) > 0
    t, h, w = (int(v) for v in torch.as_tensor(grid).reshape(-1)[:3])
    if sample.task == "colour":
        masks = torch.from_numpy((sample.media != 255).any(-1))[None].float()       # (1, H, W) shape pixels
    else:
        dark = torch.from_numpy(sample.media[..., 0] < 128).float()                 # (T, S, S) ball pixels
        masks = dark.reshape(t, -1, *dark.shape[1:]).amax(1)                         # (t, S, S) per frame pair
    cover = torch.nn.functional.interpolate(masks[:, None], size=(h // merge, w // merge), mode="area")[:, 0]
    hit = cover > 0
    return hit[0] if sample.task == "colour" else hit

