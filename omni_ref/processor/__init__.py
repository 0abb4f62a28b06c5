"""The processor: chat messages with text, pictures, video, sound -> the Thinker's inputs, as HF's.

    media.py         reading files and arrays, and the errors for bad inputs
    audio.py         Whisper log-mel features, and the audio token count rule
    vision.py        smart resize, normalisation, patches; video frame sampling
    placeholders.py  how many pad tokens each medium gets, and sound woven into video
    chat.py          the chat template and the parts of a message
    processor.py     Processor: from_pretrained, apply_chat_template, __call__

HF mirror: transformers' Qwen3OmniMoeProcessor with WhisperFeatureExtractor, Qwen2VLImageProcessor
and Qwen2VLVideoProcessor.
"""
from ..audio_encoder import audio_token_count  # the encoder's own rule: one copy
from .audio import AudioSettings, log_mel, mel_filter_bank
from .media import MediaNotFoundError, ProcessorError, Video, load_audio, load_image, load_video
from .placeholders import interleave_video_audio, vision_token_count
from .processor import Processor
from .vision import VisionSettings, patchify, sample_frame_indices, smart_resize

__all__ = ["Processor", "ProcessorError", "MediaNotFoundError", "Video", "AudioSettings",
           "VisionSettings", "load_audio", "load_image", "load_video", "log_mel",
           "mel_filter_bank", "audio_token_count", "smart_resize", "patchify",
           "sample_frame_indices", "vision_token_count", "interleave_video_audio"]
