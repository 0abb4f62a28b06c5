"""Placeholders: the chat template writes one pad token per picture, video or sound; here each
becomes as many pad tokens as the encoder will output vectors, so that the Thinker can overwrite
them one for one.

    image  <|vision_start|><|image_pad|><|vision_end|>  ->  <|image_pad|> x (t * h * w / merge^2)
    video  <|vision_start|><|video_pad|><|vision_end|>  ->  <|video_pad|> x (t * h * w / merge^2)
    audio  <|audio_start|><|audio_pad|><|audio_end|>    ->  <|audio_pad|> x audio_token_count(n)

With `use_audio_in_video`, a video's own sound is woven into its pad tokens in time order, so that
the model reads picture and sound of the same moment next to each other (Qwen3-Omni Technical
Report, arXiv 2509.17765, section 2.4 "TM-RoPE", and figure 3): the video pad becomes

    <|audio_start|> [video tokens of frame pair 0] [audio tokens up to frame pair 1]
                    [video tokens of pair 1] ... <|audio_end|>

inside the <|vision_start|> ... <|vision_end|> the template wrote. Time is counted in rotary
position ids: an audio token is one position (position_id_per_seconds = 13 of them per second), and
frame pair k starts at k * seconds_per_grid * 13. A frame pair goes first when it starts no later
than the next audio token.

HF mirror: Qwen3OmniMoeProcessor.replace_image_token / replace_video_token / replace_audio_token /
replace_video_with_audio_token and ProcessorMixin.get_text_with_replacements.
"""
from __future__ import annotations

import re

from .media import ProcessorError


def vision_token_count(grid: tuple[int, int, int], merge_size: int) -> int:
    """Each merge x merge block of patches becomes one token."""
    t, h, w = grid
    return t * h * w // merge_size ** 2


def interleave_video_audio(grid: tuple[int, int, int], merge_size: int, seconds_per_grid: float,
                           position_id_per_seconds: float, num_audio: int) -> list[str]:
    """The order of a video's tokens ("video") and its sound's ("audio") when woven by time."""
    t, h, w = grid
    per_frame_pair = (h // merge_size) * (w // merge_size)
    video_times = [k * seconds_per_grid * position_id_per_seconds
                   for k in range(t) for _ in range(per_frame_pair)]
    audio_times = range(num_audio)                       # audio token j sits at position j
    order, v, a = [], 0, 0
    while v < len(video_times) and a < len(audio_times):
        if video_times[v] <= audio_times[a]:
            order.append("video")
            v += 1
        else:
            order.append("audio")
            a += 1
    return order + ["video"] * (len(video_times) - v) + ["audio"] * (num_audio - a)


PLACEHOLDERS = {"image": "<|vision_start|><|image_pad|><|vision_end|>",
                "video": "<|vision_start|><|video_pad|><|vision_end|>",
                "audio": "<|audio_start|><|audio_pad|><|audio_end|>"}


def check_counts(texts: list[str], tokens: dict[str, str], given: dict[str, int]) -> None:
    """Every picture / video / sound needs exactly one placeholder in the text, and vice versa."""
    for kind, count in given.items():
        in_text = sum(t.count(tokens[kind]) for t in texts)
        if in_text != count:
            more = "parts" if count > in_text else "placeholders"
            raise ProcessorError(
                f"{count} {kind} input(s) were given but the text has {in_text} {tokens[kind]} "
                f"placeholder(s); there are more {kind} {more}. Each {kind} needs one "
                f"{PLACEHOLDERS[kind]} in the text (apply_chat_template writes one per {kind} "
                f"part): add or remove placeholders, or pass matching {kind} inputs.")


def assign_sound_tracks(texts: list[str], tokens: dict[str, str], own_tracks: list, audio: list,
                        indices=None):
    """With use_audio_in_video: all sounds in reading order ("slots"), and each video's slot.

    `indices` (HF's audio_from_video_indices) says for each slot where its sound comes from: None
    for a standalone sound (one with its own <|audio_pad|>), i for video i. Without it, the order
    is read off the text, where each <|audio_pad|> is a standalone sound and each <|video_pad|> a
    video. `audio` holds either one sound per slot, or only the standalone ones, the videos then
    using `own_tracks` (a frame folder's audio.wav). As in HF, a video without sound keeps plain
    video tokens.
    """
    if indices is None:
        pattern = re.escape(tokens["audio"]) + "|" + re.escape(tokens["video"])
        order = [token for text in texts for token in re.findall(pattern, text)]
        standalone = order.count(tokens["audio"])
        if len(audio) not in (standalone, len(order)):
            raise ProcessorError(
                f"use_audio_in_video: got {len(audio)} sound(s) for {standalone} "
                f"{tokens['audio']} placeholder(s) and {len(order) - standalone} video(s); pass "
                f"one sound per {tokens['audio']} (the videos' own tracks are then used), or one "
                "per placeholder and video in reading order, or say which is which with "
                "audio_from_video_indices.")
        videos = iter(range(len(own_tracks)))
        indices = [None if token == tokens["audio"] else next(videos) for token in order]
    use_own = len(audio) != len(indices)
    if use_own and indices.count(None) != len(audio):
        raise ProcessorError(f"audio_from_video_indices has {indices.count(None)} standalone "
                             f"slot(s) (None) but {len(audio)} sound(s) were given: give one "
                             "sound per slot, or one per None.")
    given, slots, video_to_slot = iter(audio), [], [None] * len(own_tracks)
    for source in indices:
        sound = next(given) if source is None or not use_own else own_tracks[source]
        if sound is None:
            continue
        if source is not None:
            video_to_slot[source] = len(slots)
        slots.append(sound)
    return slots, video_to_slot


def expand(texts: list[str], replacements: dict[str, list[str]],
           tokens: dict[str, str]) -> list[str]:
    """Replace the n-th placeholder of a kind (counted over the batch) by its n-th replacement."""
    used = "|".join(re.escape(tokens[k]) for k in replacements if replacements[k])
    pattern = re.compile(used or r"(?!)")           # (?!) matches nothing: no placeholder to fill
    kind_of = {tokens[k]: k for k in replacements}
    queues = {k: iter(v) for k, v in replacements.items()}
    return [pattern.sub(lambda m: next(queues[kind_of[m.group(0)]]), text) for text in texts]
