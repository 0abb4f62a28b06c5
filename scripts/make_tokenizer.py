"""Build the small, offline tokenizer and processor files that live in data/tokenizer/.

The real Qwen3-Omni tokenizer has 151,643 byte-level BPE tokens plus a block of special tokens
(`<|im_start|>`, `<|image_pad|>`, `<|audio_pad|>`, ...). Our tiny and demo models have a vocabulary
of only 2048, and nothing may be downloaded, so this script trains a tokenizer of the *same kind*
on a few KB of English text that ships with the repository (data/tokenizer/corpus.txt):

  * the same pipeline as Qwen2/Qwen3: NFC normaliser, Qwen2's split regex, byte-level BPE;
  * 1920 regular tokens (ids 0..1919, the 256 byte symbols included);
  * Qwen3-Omni's 33 added tokens (real ids 151643..151675) appended from id 1920 in the real order,
    so every added id is the real id minus 149723 (e.g. <|im_start|> is 151644 in Qwen3-Omni, 1921 here).

Next to tokenizer.json it writes what `transformers.Qwen3OmniMoeProcessor.from_pretrained` reads
(tokenizer_config.json, chat_template.jinja, preprocessor_config.json; like the real checkpoint there is
no video_preprocessor_config.json, the video processor reads preprocessor_config.json) and
token_ids.json, the ids our model configs need.

Every run writes the same bytes: the corpus is fixed, BPE training is deterministic, and JSON is
written with a fixed layout. tests/test_tokenizer.py checks that.

Usage:  python scripts/make_tokenizer.py [--out DIR]      (default: data/tokenizer/)
"""

import argparse
import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "tokenizer" / "corpus.txt"

REGULAR_VOCAB_SIZE = 1920  # ids 0..1919; special tokens follow, all below the model vocab_size of 2048
REAL_ID_OFFSET = 151643 - REGULAR_VOCAB_SIZE  # real Qwen3-Omni id = our id + 149723

# Qwen2's pre-tokenizer regex: contractions, letter runs (with one leading non-letter), single digits,
# punctuation runs, newlines and spaces. Digits are split one by one, as in Qwen.
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# The added tokens of Qwen3-Omni in their real order (real ids 151643..151675). The second field says
# whether the token is "special" (skipped by decode(skip_special_tokens=True)); as in Qwen3, the tool and
# think markers are plain added tokens so that they stay visible in decoded text.
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
    ("<|audio_start|>", True),
    ("<|audio_end|>", True),
    ("<tts_pad>", True),
    ("<tts_text_bos>", True),
    ("<tts_text_eod>", True),
    ("<tts_text_bos_single>", True),
    ("<|audio_pad|>", True),
]

# Role words follow <|im_start|> with no space before them, so they must be single tokens without the
# leading-space marker "Ġ": the model configs store their ids (system_token_id, ...).
ROLE_WORDS = ["system", "user", "assistant"]

# Names the processor reads from the tokenizer (processor.audio_token, processor.image_token_id, ...).
MULTIMODAL_TOKEN_NAMES = {
    "audio_token": "<|audio_pad|>",
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
}

# Config field name -> token, for data/tokenizer/token_ids.json.
CONFIG_TOKEN_FIELDS = {
    "im_start_token_id": "<|im_start|>",
    "im_end_token_id": "<|im_end|>",
    "system_token_id": "system",
    "user_token_id": "user",
    "assistant_token_id": "assistant",
    "tts_pad_token_id": "<tts_pad>",
    "tts_bos_token_id": "<tts_text_bos>",
    "tts_eos_token_id": "<tts_text_eod>",
    "audio_token_id": "<|audio_pad|>",
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "audio_start_token_id": "<|audio_start|>",
    "audio_end_token_id": "<|audio_end|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "endoftext_token_id": "<|endoftext|>",
}

# Qwen3-Omni's chat template, reconstructed (its published chat_template.json is not available offline):
# the branches of Qwen3's published template (Qwen/Qwen3-8B tokenizer_config.json: the tools preamble,
# <tool_call> / <tool_response> turns, <think> kept only after the last user query, enable_thinking=False
# closing an empty <think> block in the generation prompt), where list-valued message contents are
# rendered part by part and every image / video / audio part becomes one placeholder that the processor
# later repeats once per encoder output token. omni_ref/processor/chat.py documents each branch.
CHAT_TEMPLATE = """\
{%- macro render_content(content) %}
    {%- if content is string %}
        {{- content }}
    {%- elif content is not none %}
        {%- for item in content %}
            {%- if item.type == 'image' or 'image' in item or 'image_url' in item %}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' }}
            {%- elif item.type == 'audio' or 'audio' in item or 'audio_url' in item %}
                {{- '<|audio_start|><|audio_pad|><|audio_end|>' }}
            {%- elif item.type == 'video' or 'video' in item %}
                {{- '<|vision_start|><|video_pad|><|vision_end|>' }}
            {%- elif item.type == 'text' %}
                {{- item.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
{%- endmacro %}
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- render_content(messages[0].content) + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + render_content(messages[0].content) + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- set content = render_content(message.content) %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- elif '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}
            {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

# Audio features and image patches exactly as in Qwen3-Omni-30B-A3B's preprocessor_config.json:
# Whisper-style log-mel (128 bins, 25 ms window, 10 ms hop, 16 kHz, up to 300 s), and Qwen2-VL-style
# patches of 16x16 pixels x 2 frames, merged 2x2 into one token, pixels normalised with mean = std = 0.5.
AUDIO_SETTINGS = {
    "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 128,
    "sampling_rate": 16000,
    "hop_length": 160,
    "n_fft": 400,
    "chunk_length": 300,
    "n_samples": 4800000,
    "nb_max_frames": 30000,
    "padding_side": "right",
    "padding_value": 0.0,
    "dither": 0.0,
    "return_attention_mask": True,
}
VISION_SETTINGS = {
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "min_pixels": 3136,  # 56 x 56
    "max_pixels": 12845056,  # 3584 x 3584
}


def train_bpe(corpus: Path) -> Tokenizer:
    """Train the byte-level BPE on the corpus, with Qwen2's normaliser, splitter and decoder."""
    tokenizer = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                                     fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        # the regex above already split the text, so ByteLevel only maps bytes to printable symbols
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=REGULAR_VOCAB_SIZE,
        min_frequency=0,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text can be encoded
        special_tokens=[],  # added afterwards, so that they get the ids right after the regular vocab
    )
    tokenizer.train([str(corpus)], trainer)
    if tokenizer.get_vocab_size() != REGULAR_VOCAB_SIZE:
        raise SystemExit(f"BPE stopped at {tokenizer.get_vocab_size()} tokens: the corpus is too small")
    for word in ROLE_WORDS:
        pieces = tokenizer.encode(word).tokens
        if pieces != [word]:
            # The corpus contains chat transcripts with each role word at the start of a line, so BPE
            # learns them; if an edit of the corpus breaks this, add more such lines.
            raise SystemExit(f"role word {word!r} is not one token but {pieces}: extend the corpus")
    return tokenizer


def add_qwen_tokens(tokenizer: Tokenizer) -> None:
    """Append the added tokens one by one, so that they get ids 1920, 1921, ... in the real order."""
    for content, special in ADDED_TOKENS:
        token = AddedToken(content, special=special, normalized=False)
        if special:
            tokenizer.add_special_tokens([token])
        else:
            tokenizer.add_tokens([token])
        assert tokenizer.token_to_id(content) == tokenizer.get_vocab_size() - 1


def tokenizer_config(tokenizer: Tokenizer) -> dict:
    """The HF-side settings: class, named special tokens and the added-token table.

    transformers' Qwen2Tokenizer takes only the vocab and merges from tokenizer.json, rebuilds the
    normaliser / splitter / decoder itself, and re-creates the added tokens from `added_tokens_decoder`,
    so that table must list every added token with its id.
    """
    added_tokens_decoder = {
        str(tokenizer.token_to_id(content)): {
            "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": special,
        }
        for content, special in ADDED_TOKENS
    }
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "processor_class": "Qwen3OmniMoeProcessor",
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        **MULTIMODAL_TOKEN_NAMES,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 65536,  # the Thinker's max_position_embeddings
        "split_special_tokens": False,
    }


def token_ids(tokenizer: Tokenizer) -> dict:
    ids = {}
    for field, token in CONFIG_TOKEN_FIELDS.items():
        ids[field] = tokenizer.token_to_id(token)
        assert ids[field] is not None and tokenizer.encode(token).ids == [ids[field]], token
    ids["vocab_size_used"] = tokenizer.get_vocab_size()
    return ids


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "tokenizer")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = train_bpe(CORPUS)
    add_qwen_tokens(tokenizer)

    tokenizer.save(str(out / "tokenizer.json"), pretty=True)
    write_json(out / "tokenizer_config.json", tokenizer_config(tokenizer))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    write_json(out / "preprocessor_config.json", {
        "processor_class": "Qwen3OmniMoeProcessor",
        "image_processor_type": "Qwen2VLImageProcessor",
        **AUDIO_SETTINGS,
        **VISION_SETTINGS,
    })
    ids = token_ids(tokenizer)
    write_json(out / "token_ids.json", ids)
    print(f"wrote {out}: {ids['vocab_size_used']} tokens, im_start={ids['im_start_token_id']}, "
          f"audio_pad={ids['audio_token_id']} (real id = ours + {REAL_ID_OFFSET})")


if __name__ == "__main__":
    main()
