"""The offline tokenizer and processor files in data/tokenizer/ (built by scripts/make_tokenizer.py).

Checks that the committed files are reproducible, that HF transformers and the `tokenizers` library read
them identically, that HF's Qwen3OmniMoeProcessor loads them offline and expands the placeholders, and
that the ids in token_ids.json are the tokens they claim to be.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below must work without a network

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = REPO / "data" / "tokenizer"
INPUT_ONLY = {"corpus.txt"}  # read by the script, not written by it
NOT_FOR_CHECKPOINTS = {"corpus.txt", "token_ids.json"}  # presets copy every other file into checkpoints
MODEL_VOCAB_SIZE = 2048

# Real Qwen3-Omni ids of some added tokens; ours must keep their order and spacing.
REAL_IDS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656,
    "<think>": 151667, "</think>": 151668, "<|audio_start|>": 151669, "<|audio_end|>": 151670,
    "<tts_pad>": 151671, "<tts_text_bos>": 151672, "<tts_text_eod>": 151673, "<|audio_pad|>": 151675,
}

TOKEN_OF_FIELD = {
    "im_start_token_id": "<|im_start|>", "im_end_token_id": "<|im_end|>",
    "system_token_id": "system", "user_token_id": "user", "assistant_token_id": "assistant",
    "tts_pad_token_id": "<tts_pad>", "tts_bos_token_id": "<tts_text_bos>", "tts_eos_token_id": "<tts_text_eod>",
    "audio_token_id": "<|audio_pad|>", "image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
    "audio_start_token_id": "<|audio_start|>", "audio_end_token_id": "<|audio_end|>",
    "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>",
    "endoftext_token_id": "<|endoftext|>",
}

SENTENCES = [
    "The assistant listens to the audio and describes the picture.",
    "Numbers like 16000 and 3.14 are split digit by digit; isn't that neat?",
    "  Leading spaces,\ttabs\nand new lines\r\n\nstay exactly as they were.  ",
    "Unicode survives too: café, naïve, 東京, emoji 🎧, and an NFC-normal é.",
    "user\nsystem\nassistant",
]

MESSAGES = [
    {"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
    {"role": "user", "content": [
        {"type": "text", "text": "Look and listen."},
        {"type": "image"},
        {"type": "audio"},
        {"type": "text", "text": "What is there?"},
    ]},
]
EXPECTED_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nLook and listen."
    "<|vision_start|><|image_pad|><|vision_end|><|audio_start|><|audio_pad|><|audio_end|>"
    "What is there?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def token_ids() -> dict:
    return json.loads((TOKENIZER_DIR / "token_ids.json").read_text())


def backend() -> Tokenizer:
    return Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))


def checkpoint_like_dir(tmp_path: Path) -> Path:
    """The files as presets copy them next to a model's config.json."""
    out = tmp_path / "ckpt"
    out.mkdir()
    for f in TOKENIZER_DIR.iterdir():
        if f.name not in NOT_FOR_CHECKPOINTS:
            shutil.copy(f, out / f.name)
    return out


def test_script_reproduces_committed_files(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_tokenizer.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    committed = sorted(f.name for f in TOKENIZER_DIR.iterdir() if f.name not in INPUT_ONLY)
    assert sorted(f.name for f in tmp_path.iterdir()) == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (TOKENIZER_DIR / name).read_bytes(), name


def test_vocab_layout_and_token_ids():
    tok, ids = backend(), token_ids()
    assert ids["vocab_size_used"] == tok.get_vocab_size() == 1953 <= MODEL_VOCAB_SIZE
    # the 256 byte symbols are all in the regular vocab, and added tokens start right after it
    regular = {t: i for t, i in tok.get_vocab(with_added_tokens=False).items()}
    assert len(regular) == 1920 and sorted(regular.values()) == list(range(1920))
    assert all(chr(c) in regular for c in range(ord("!"), ord("~") + 1))
    assert min(tok.get_added_tokens_decoder()) == 1920
    # same order and spacing as the real Qwen3-Omni ids
    for content, real_id in REAL_IDS.items():
        assert tok.token_to_id(content) + 149723 == real_id, content
    # every config id decodes to its token, and encodes back to exactly that one id
    assert set(ids) == set(TOKEN_OF_FIELD) | {"vocab_size_used"}
    for field, content in TOKEN_OF_FIELD.items():
        assert 0 <= ids[field] < MODEL_VOCAB_SIZE, field
        assert tok.id_to_token(ids[field]) == content, field
        assert tok.decode([ids[field]], skip_special_tokens=False) == content, field
        assert tok.encode(content).ids == [ids[field]], field
    # the role words come right after <|im_start|> without a space, so they must be single tokens
    for role in ("system", "user", "assistant"):
        assert tok.encode(role).ids == [ids[f"{role}_token_id"]]
        assert ids[f"{role}_token_id"] < 1920  # a learned word, not an added token
    assert tok.encode("<|im_start|>user\n").ids == [ids["im_start_token_id"], ids["user_token_id"], 198]


def test_hf_tokenizer_matches_tokenizers_library():
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tok = backend()
    assert type(hf).__name__ == "Qwen2Tokenizer"
    assert (hf.eos_token, hf.pad_token, hf.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert len(hf) == tok.get_vocab_size()

    prompt = hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt == EXPECTED_PROMPT
    for text in SENTENCES + [prompt]:
        ids = hf(text)["input_ids"]
        assert ids == tok.encode(text).ids, text
        assert hf.decode(ids) == text == tok.decode(ids, skip_special_tokens=False)
    # byte-level BPE never needs an unknown token: a rare word falls back to smaller pieces
    assert len(tok.encode(" Zyzzyva").ids) > 1
    # special tokens are dropped on request, the <think> markers are plain added tokens and stay
    assert hf.decode(hf("<|im_start|>assistant\n<think>\n</think>\nHi<|im_end|>")["input_ids"],
                     skip_special_tokens=True) == "assistant\n<think>\n</think>\nHi"


def test_hf_processor_loads_offline_and_expands_placeholders(tmp_path):
    from PIL import Image
    from transformers import Qwen3OmniMoeProcessor

    ids = token_ids()
    processor = Qwen3OmniMoeProcessor.from_pretrained(checkpoint_like_dir(tmp_path))
    assert (processor.audio_token_id, processor.image_token_id, processor.video_token_id) == (
        ids["audio_token_id"], ids["image_token_id"], ids["video_token_id"])
    assert (processor.audio_bos_token, processor.vision_eos_token) == ("<|audio_start|>", "<|vision_end|>")
    fe, ip, vp = processor.feature_extractor, processor.image_processor, processor.video_processor
    assert (fe.feature_size, fe.sampling_rate, fe.hop_length, fe.n_fft, fe.chunk_length) == (128, 16000, 160, 400, 300)
    assert (ip.patch_size, ip.temporal_patch_size, ip.merge_size, list(ip.image_mean)) == (16, 2, 2, [0.5] * 3)
    assert (vp.patch_size, vp.temporal_patch_size, vp.merge_size, list(vp.image_std)) == (16, 2, 2, [0.5] * 3)

    assert processor.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == EXPECTED_PROMPT

    t = np.arange(16000) / 16000
    sine = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # 1 s at 16 kHz
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))  # 64x48
    messages = json.loads(json.dumps(MESSAGES))
    messages[1]["content"][1]["image"] = image
    messages[1]["content"][2]["audio"] = sine
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=True,
                                        return_tensors="np")
    input_ids = out["input_ids"][0].tolist()
    # audio: 100 mel frames (10 ms hop) -> three stride-2 convolutions 100 -> 50 -> 25 -> 13 tokens
    assert out["input_features"].shape == (1, 128, 100)
    assert input_ids.count(ids["audio_token_id"]) == 13
    # image: 64x48 is resized to 64x64 (multiples of 32) -> 4x4 patches of 16 px -> 2x2 merge -> 4 tokens
    assert out["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert input_ids.count(ids["image_token_id"]) == 4
    # the expanded ids are the plain prompt with the placeholders repeated, tokenized the same way
    expanded = EXPECTED_PROMPT.replace("<|image_pad|>", "<|image_pad|>" * 4)
    expanded = expanded.replace("<|audio_pad|>", "<|audio_pad|>" * 13)
    assert input_ids == backend().encode(expanded).ids
