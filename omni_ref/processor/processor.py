"""The Processor: chat messages with text, pictures, video, sound -> the Thinker's input tensors.

    processor = Processor.from_pretrained(checkpoint_dir)
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=True)
    # input_ids, attention_mask           the prompt, placeholders expanded, batch left-padded
    # pixel_values, image_grid_thw                    pictures as patches (vision.py)
    # pixel_values_videos, video_grid_thw, video_second_per_grid
    # input_features, feature_attention_mask          sound as log-mel frames (audio.py)

Everything is read from the checkpoint directory's own files, as HF reads them: tokenizer.json (run
by the `tokenizers` library), tokenizer_config.json (special tokens), chat_template.jinja,
preprocessor_config.json (audio and vision settings) and, if present, config.json (the audio
encoder's window), so the same code serves the tiny preset and the real Qwen3-Omni-30B-A3B
checkpoint.

HF mirror: Qwen3OmniMoeProcessor (transformers/models/qwen3_omni_moe/processing_qwen3_omni_moe.py)
with its ProcessorMixin / OmniModalProcessorMixin (transformers/processing_utils.py). Outputs equal
HF's called with return_tensors="pt" and padding=True (HF's default, padding=False, cannot make a
tensor of a ragged batch).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from tokenizers import Tokenizer

from . import chat
from ..audio_encoder import audio_token_count  # the encoder's own rule: one copy
from ..config import read_json_object
from .audio import AudioSettings, log_mel
from .media import ProcessorError, check_fps, load_audio, load_image, load_video
from .placeholders import (assign_sound_tracks, check_counts, expand, interleave_video_audio,
                           vision_token_count)
from .vision import VisionSettings, process_image, process_video, sample_frame_indices

# Token names in tokenizer_config.json and their values in every Qwen3-Omni checkpoint (used if a
# file lacks them).
MEDIA_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                "audio_token": "<|audio_pad|>",
                "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
                "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>"}


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    return read_json_object(str(path), ProcessorError, "settings of the checkpoint")


def _token_text(value):
    return value.get("content") if isinstance(value, dict) else value  # AddedToken dict or text


def _as_list(x, is_single) -> list:
    """One input or a (possibly nested, per-sample) list of them -> a flat list."""
    if x is None:
        return []
    if is_single(x):
        return [x]
    return [item for sub in x for item in _as_list(sub, is_single)]


def _is_frame(x) -> bool:
    return hasattr(x, "getbands") or (hasattr(x, "ndim") and x.ndim == 3)


def check_video_metadata(video_metadata, num_videos: int) -> None:
    """video_metadata: one dict per video, its "fps" (if given) a frame rate."""
    if video_metadata is None:
        return
    is_list = isinstance(video_metadata, (list, tuple))
    if not is_list or not all(isinstance(m, dict) for m in video_metadata):
        raise ProcessorError(f"video_metadata={video_metadata!r:.80} must be a list with one dict "
                             f"per video, e.g. [{{'fps': 4}}]")
    if len(video_metadata) > num_videos:
        raise ProcessorError(f"video_metadata has {len(video_metadata)} entries for {num_videos} "
                             f"video(s): give one per video, in the order of the videos.")
    for i, meta in enumerate(video_metadata):
        check_fps(meta.get("fps"), f"video_metadata[{i}]")


class Processor:
    """Qwen3-Omni's processor, read from a checkpoint directory. See the module docstring."""

    def __init__(self, tokenizer: Tokenizer, chat_template: str | None,
                 special_tokens: dict[str, str], audio: AudioSettings, image: VisionSettings,
                 video: VisionSettings, n_window: int = 50,
                 position_id_per_seconds: float = 13.0):
        self.tokenizer, self.chat_template = tokenizer, chat_template
        self.special_tokens = special_tokens   # eos_token, pad_token, image_token, ... -> text
        self.audio_settings, self.image_settings, self.video_settings = audio, image, video
        self.n_window, self.position_id_per_seconds = n_window, position_id_per_seconds
        for name in ("pad_token", *MEDIA_TOKENS):
            if tokenizer.token_to_id(special_tokens[name]) is None:
                raise ProcessorError(f"{name} {special_tokens[name]!r} is not in the tokenizer's "
                                     "vocabulary")
        self.pad_token_id = tokenizer.token_to_id(special_tokens["pad_token"])
        self.image_token = special_tokens["image_token"]
        self.video_token = special_tokens["video_token"]
        self.audio_token = special_tokens["audio_token"]
        self.image_token_id, self.video_token_id, self.audio_token_id = map(
            tokenizer.token_to_id, (self.image_token, self.video_token, self.audio_token))
        self._template = chat.compile_template(chat_template) if chat_template else None

    @classmethod
    def from_pretrained(cls, checkpoint_dir) -> "Processor":
        d = Path(checkpoint_dir)
        if not (d / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{d / 'tokenizer.json'} not found: a checkpoint directory "
                                    "needs the tokenizer and processor files "
                                    "(omni_ref.presets.write_checkpoint copies them there).")
        tok_cfg = _json(d / "tokenizer_config.json")
        # Newer files keep model-specific tokens in a nested dict; older ones at the top level.
        nested = {**tok_cfg.get("extra_special_tokens", {}),
                  **tok_cfg.get("model_specific_special_tokens", {})}
        special = {}
        for name in ("bos_token", "eos_token", "pad_token", "unk_token", *MEDIA_TOKENS):
            value = _token_text(tok_cfg.get(name, nested.get(name, MEDIA_TOKENS.get(name))))
            if value is not None:
                special[name] = value
        special.setdefault("pad_token", "<|endoftext|>")
        if (d / "chat_template.jinja").is_file():
            template = (d / "chat_template.jinja").read_text(encoding="utf-8")
        else:
            template = _json(d / "chat_template.json").get("chat_template",
                                                           tok_cfg.get("chat_template"))
        pre = _json(d / "preprocessor_config.json")
        thinker = _json(d / "config.json").get("thinker_config", {})
        return cls(Tokenizer.from_file(str(d / "tokenizer.json")), template, special,
                   AudioSettings.from_dict(pre), VisionSettings.from_dict(pre),
                   VisionSettings.from_dict({**pre,
                                             **_json(d / "video_preprocessor_config.json")}),
                   n_window=thinker.get("audio_config", {}).get("n_window", 50),
                   position_id_per_seconds=thinker.get("position_id_per_seconds", 13.0))

    # ------------------------------------------------------------------------------- chat messages
    def apply_chat_template(self, conversation, chat_template: str | None = None, tools=None,
                            documents=None, add_generation_prompt: bool = False,
                            tokenize: bool = False, return_dict: bool = False,
                            return_tensors: str = "pt", fps: float | None = None,
                            do_sample_frames: bool | None = None,
                            use_audio_in_video: bool = False, load_audio_from_video: bool = False,
                            processor_kwargs: dict | None = None,
                            sampling_rate: int | None = None, **template_kwargs):
        """Messages (or a batch of conversations) -> the prompt, or with tokenize=True the inputs.

        Like HF: tokenize=False returns the rendered prompt(s); tokenize=True returns input_ids, or
        with return_dict=True the whole dict. fps samples each video at that rate.
        use_audio_in_video weaves each video's own sound track (a frame folder's audio.wav) into
        its tokens. sampling_rate, if given, must be the model's (16 kHz): arrays are never
        resampled, so another rate is refused, as HF refuses it. Other keywords go to the template.
        """
        if chat_template is None:
            template = self._template
        else:
            template = chat.compile_template(chat_template)
        if template is None:
            raise ProcessorError("this checkpoint has no chat template (chat_template.jinja); "
                                 "pass chat_template=...")
        conversations, batched = chat.normalize_conversations(conversation)
        media = [chat.collect_media(c, need_values=tokenize) for c in conversations]
        variables = {k: v for k, v in self.special_tokens.items() if k != "bos_token" or v}
        prompts = chat.render(template, conversations, add_generation_prompt, tools, documents,
                              **{**variables, **template_kwargs})
        if not tokenize:
            return prompts if batched else prompts[0]

        kwargs = dict(processor_kwargs or {})
        kwargs.update(return_tensors=return_tensors,
                      fps=fps if fps is not None else kwargs.get("fps"))
        if sampling_rate is not None:
            kwargs["sampling_rate"] = sampling_rate
        if do_sample_frames is None:   # HF samples frames when a rate is asked for
            do_sample_frames = kwargs.pop("do_sample_frames", kwargs["fps"] is not None)
        with_sound = (use_audio_in_video or load_audio_from_video
                      or kwargs.pop("use_audio_in_video", False))
        images, videos, audio, sources = [], [], [], []
        for kind, value in (item for parts in media for item in parts):
            if kind == "image":
                images.append(value)
            elif kind == "audio":
                audio.append(value)
                sources.append(None)
            else:
                video = load_video(value, self.audio_settings.sampling_rate)
                videos.append(video)
                if with_sound and video.audio is not None:
                    audio.append(video.audio)
                    sources.append(len(videos) - 1)
        out = self(text=prompts, images=images or None, videos=videos or None, audio=audio or None,
                   do_sample_frames=do_sample_frames, use_audio_in_video=with_sound,
                   audio_from_video_indices=sources if with_sound else None, **kwargs)
        return out if return_dict else out["input_ids"]

    # ------------------------------------------------------------------------------ text and media
    def __call__(self, text, images=None, videos=None, audio=None, *, return_tensors: str = "pt",
                 padding: bool = True, fps: float | None = None, do_sample_frames: bool = False,
                 video_metadata: list[dict] | None = None, use_audio_in_video: bool = False,
                 load_audio_from_video: bool = False, audio_from_video_indices: list | None = None,
                 sampling_rate: int | None = None, min_pixels: int | None = None,
                 max_pixels: int | None = None):
        """Prompt text(s) with a placeholder per medium, and the media -> model inputs.

        fps: the rate of the frames the model sees (HF assumes 1 frame per second if not given);
        with do_sample_frames=True, frames are first sampled at that rate from the video's own rate
        (meta.json "fps" or video_metadata). use_audio_in_video: `audio` holds the videos' sound
        tracks (in the order of the placeholders in the text, or as audio_from_video_indices says),
        or, if it has only the standalone sounds, the videos' own tracks are used. min_pixels /
        max_pixels override the picture and video size limits.
        """
        if return_tensors not in ("pt", "np"):
            raise ProcessorError(f"return_tensors={return_tensors!r}: choose 'pt' (torch) or 'np' "
                                 "(numpy)")
        texts = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(t, str) for t in texts):
            raise ProcessorError("text must be a string or a list of strings (the prompts, "
                                 "placeholders included)")
        rate = self.audio_settings.sampling_rate
        if sampling_rate is not None and sampling_rate != rate:
            raise ProcessorError(f"the audio is sampled at {sampling_rate} Hz but the model "
                                 f"expects {rate} Hz: resample it first (e.g. `sox in.wav -r "
                                 f"{rate} out.wav`) and pass sampling_rate={rate}")

        def is_one_image(x):
            return not isinstance(x, (list, tuple))

        def is_one_video(x):         # a list of frames is one video
            return not isinstance(x, (list, tuple)) or all(_is_frame(f) for f in x)

        def is_one_sound(x):         # a list of numbers is one sound
            return not isinstance(x, (list, tuple)) or all(isinstance(s, (int, float)) for s in x)

        images = [load_image(x) for x in _as_list(images, is_one_image)]
        videos = [load_video(v, rate) for v in _as_list(videos, is_one_video)]
        audio = [load_audio(a, rate) for a in _as_list(audio, is_one_sound)]
        check_fps(fps, "the processor's fps argument")
        check_video_metadata(video_metadata, len(videos))
        for i, meta in enumerate(video_metadata or []):   # HF's way to give a frame array's rate
            videos[i] = dataclasses.replace(videos[i], fps=meta.get("fps", videos[i].fps))

        tokens = {"image": self.image_token, "video": self.video_token, "audio": self.audio_token}
        check_counts(texts, tokens, {"image": len(images), "video": len(videos)})
        video_to_slot = [None] * len(videos)   # which entry of `audio` is each video's sound track
        if (use_audio_in_video or load_audio_from_video) and videos:
            audio, video_to_slot = assign_sound_tracks(texts, tokens, [v.audio for v in videos],
                                                       audio, audio_from_video_indices)
        standalone = len(audio) - sum(s is not None for s in video_to_slot)
        check_counts(texts, tokens, {"audio": standalone})

        # Each medium -> its tensors and, per placeholder, the run of pad tokens that replaces it.
        pictures, picture_pads = self._pictures(images, min_pixels, max_pixels)
        sounds, sound_pads, counts = self._sounds(audio, skip=set(video_to_slot))
        films, film_pads = self._films(videos, counts, video_to_slot, fps, do_sample_frames,
                                       min_pixels, max_pixels)
        replacements = {"image": picture_pads, "video": film_pads, "audio": sound_pads}
        ids = [self.tokenizer.encode(t).ids for t in expand(texts, replacements, tokens)]
        data = {**self._pad(ids, padding), **pictures, **films, **sounds}   # HF's order of keys
        return {k: v.numpy() for k, v in data.items()} if return_tensors == "np" else data

    def _pictures(self, images, min_pixels, max_pixels):
        if not images:
            return {}, []
        s = self.image_settings
        patches, grids = zip(*(process_image(im, s, min_pixels, max_pixels) for im in images))
        pads = [self.image_token * vision_token_count(g, s.merge_size) for g in grids]
        return {"pixel_values": torch.cat(patches), "image_grid_thw": torch.tensor(grids)}, pads

    def _sounds(self, audio, skip: set):
        """All sounds -> features, pad runs for the standalone ones (not in `skip`), all counts."""
        if not audio:
            return {}, [], []
        features, mask = log_mel(audio, self.audio_settings)
        counts = [audio_token_count(n, self.n_window) for n in mask.sum(-1).tolist()]
        pads = [self.audio_token * n for i, n in enumerate(counts) if i not in skip]
        return {"input_features": features, "feature_attention_mask": mask}, pads, counts

    def _films(self, videos, audio_counts, video_to_slot, fps, do_sample_frames, min_pixels,
               max_pixels):
        if not videos:
            return {}, []
        s = self.video_settings
        processed = []
        for video in videos:
            frames = video.frames
            if do_sample_frames and fps is not None:
                frames = frames[sample_frame_indices(len(frames), video.fps, fps, s).numpy()]
            processed.append(process_video(frames, s, min_pixels, max_pixels))
        patches, grids = zip(*processed)
        # HF: the seconds each frame pair spans is temporal_patch_size / fps, with fps = 1 when not
        # given
        seconds_per_grid = s.temporal_patch_size / (fps if fps is not None else 1.0)
        pads = [self.video_token * vision_token_count(grid, s.merge_size) if slot is None
                else self._woven(grid, seconds_per_grid, audio_counts[slot])
                for grid, slot in zip(grids, video_to_slot)]
        return {"pixel_values_videos": torch.cat(patches), "video_grid_thw": torch.tensor(grids),
                "video_second_per_grid": torch.tensor([seconds_per_grid] * len(videos))}, pads

    def _woven(self, grid, seconds_per_grid: float, num_audio: int) -> str:
        """A video's placeholder with its sound woven in (placeholders.interleave_video_audio)."""
        order = interleave_video_audio(grid, self.video_settings.merge_size, seconds_per_grid,
                                       self.position_id_per_seconds, num_audio)
        pads = {"video": self.video_token, "audio": self.audio_token}
        return (self.special_tokens["audio_bos_token"] + "".join(pads[k] for k in order)
                + self.special_tokens["audio_eos_token"])

    def _pad(self, ids: list[list[int]], padding: bool) -> dict[str, torch.Tensor]:
        """Left padding: every prompt ends at the last column, where generation continues."""
        longest = max(len(x) for x in ids)
        if not padding and any(len(x) != longest for x in ids):
            raise ProcessorError("the prompts have different lengths; pass padding=True to pad "
                                 "them on the left")
        input_ids = [[self.pad_token_id] * (longest - len(x)) + x for x in ids]
        mask = [[0] * (longest - len(x)) + [1] * len(x) for x in ids]
        return {"input_ids": torch.tensor(input_ids, dtype=torch.long),
                "attention_mask": torch.tensor(mask, dtype=torch.long)}

    # ------------------------------------------------------------------------------------ decoding
    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, batch, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]
