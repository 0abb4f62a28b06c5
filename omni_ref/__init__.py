"""omni-ref: a readable re-implementation of Qwen3-Omni-MoE that matches Hugging Face transformers.

    import omni_ref
    omni_ref.presets.write_checkpoint("tiny", "ckpt/tiny")
    model = omni_ref.load("ckpt/tiny")
    inputs = omni_ref.Processor.from_pretrained("ckpt/tiny").apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    for event in model.stream(**inputs, thinker_eos_token_id=model.config.im_end_token_id):
        ...   # "text" events (event.ids) and "audio" events (event.wav), as they are made
"""
from . import config, exercises, presets
from .checkpoint import CheckpointError, load, save, verify
from .config import ConfigError, OmniConfig
from .model import Qwen3Omni
from .processor import Processor
from .stream import StreamEvent
from .tools.source import show

__version__ = "0.1.0"
__all__ = ["load", "save", "verify", "presets", "config", "OmniConfig", "Qwen3Omni", "Processor",
           "ConfigError", "CheckpointError", "StreamEvent",
           "show", "exercises"]
