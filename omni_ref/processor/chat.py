"""Chat messages -> the prompt string, and the media they carry in the placeholders' order.

A conversation is a list of messages {"role": ..., "content": ...}; content is a string or a list
of parts:

    {"type": "text",  "text": "What is in the picture?"}
    {"type": "image", "image": "data/image.png"}   # or a PIL image, a uint8 array; "path" / "url"
    {"type": "video", "video": "data/video"}       # a frame folder, frames array or list of frames
    {"type": "audio", "audio": "data/speech.wav"}  # or a 1-D float array at 16 kHz

The checkpoint's Jinja chat template (chat_template.jinja) turns the conversation into ChatML text
(one line, broken here to fit):

    <|im_start|>user\\nWhat is in the picture?<|vision_start|><|image_pad|><|vision_end|>
    <|im_end|>\\n<|im_start|>assistant\\n

It is rendered the way HF renders it (a sandboxed Jinja environment that trims block whitespace,
with `tojson` and `raise_exception` available), and sees only plain data: a picture object is shown
to it as the string "<Image>", since templates only ask whether a part has a picture, never look at
it.

HF mirror: ProcessorMixin.apply_chat_template, render_jinja_template
(transformers/utils/chat_template_utils.py) and
OmniModalProcessorMixin._multimodal_inputs_from_conversations.
"""
from __future__ import annotations

import json

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .media import ProcessorError

PART_TYPES = ("text", "image", "video", "audio")
# The keys a message's reasoning may come under.
REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")
MEDIA_KEYS = {"image": ("image", "url", "path"), "video": ("video", "url", "path"),
              "audio": ("audio", "url", "path")}


def _raise(message: str):
    raise jinja2.exceptions.TemplateError(message)


def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    # json.dumps without Jinja's HTML escaping, so "<" stays "<" in tool schemas
    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def plain(value):
    """What the template may see: JSON-like data; any other object becomes "<TypeName>"."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return f"<{type(value).__name__}>"


def _from_openai(part):
    if isinstance(part, dict) and part.get("type") == "image_url" and "image_url" in part:
        url = part["image_url"]
        return {"type": "image", "url": url.get("url", "") if isinstance(url, dict) else url}
    return part


def normalize_conversations(conversation) -> tuple[list[list[dict]], bool]:
    """One conversation or a batch of them -> (a list of conversations, whether it was a batch).

    As HF does: keys whose value is None are dropped (a missing key is what templates handle well),
    a message's reasoning is copied to `reasoning_content` whatever its key, and OpenAI-style
    {"type": "image_url", "image_url": {"url": ...}} parts become {"type": "image", "url": ...}.
    """
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise ProcessorError("apply_chat_template needs a list of messages {'role': ..., "
                             "'content': ...} (or a list of such lists for a batch)")
    batched = isinstance(conversation[0], (list, tuple))
    conversations = list(conversation) if batched else [conversation]
    out = []
    for chat in conversations:
        messages = []
        for message in chat:
            if not isinstance(message, dict) or "role" not in message:
                raise ProcessorError("each message must be a dict with 'role' and 'content', got "
                                     f"{message!r:.80}")
            message = {k: v for k, v in message.items() if v is not None}
            reasoning = next((message[k] for k in REASONING_KEYS if k in message), None)
            if reasoning is not None:   # templates read reasoning_content (gpt-oss ones: thinking)
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
            if isinstance(message.get("content"), list):
                message["content"] = [_from_openai(part) for part in message["content"]]
            messages.append(message)
        out.append(messages)
    return out, batched


def collect_media(conversation: list[dict], need_values: bool) -> list[tuple[str, object]]:
    """The media parts of one conversation in reading order as (kind, value); checks part types."""
    found = []
    for m, message in enumerate(conversation):
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, (list, tuple)):
            raise ProcessorError(f"message {m} ({message['role']!r:.40}) has content of type "
                                 f"{type(content).__name__}; write a string, or a list of parts "
                                 f"such as {{'type': 'text', 'text': '...'}}.")
        for p, part in enumerate(content):
            where = f"message {m} ({message['role']}), part {p}"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in PART_TYPES:
                raise ProcessorError(f"{where} has type {kind!r}; the known part types are "
                                     f"{', '.join(PART_TYPES)}. Write it as e.g. {{'type': "
                                     f"'image', 'image': 'photo.png'}}.")
            if kind == "text":
                continue
            value = next((part[k] for k in MEDIA_KEYS[kind] if k in part), None)
            if value is None and need_values:
                article = "an" if kind[0] in "aeiou" else "a"
                raise ProcessorError(f"{where} is {article} {kind} part without the {kind} "
                                     f"itself: write {{'type': '{kind}', '{kind}': <path or "
                                     f"array>}}.")
            found.append((kind, value))
    return found


def render(template: jinja2.Template, conversations: list[list[dict]], add_generation_prompt: bool,
           tools=None, documents=None, **variables) -> list[str]:
    """Render each conversation with the template (special tokens like eos_token: `variables`)."""
    prompts = []
    for i, chat in enumerate(conversations):
        try:
            prompts.append(template.render(
                messages=plain(chat), tools=plain(tools), documents=plain(documents),
                add_generation_prompt=add_generation_prompt, **plain(variables)))
        except (jinja2.exceptions.TemplateError, TypeError, ValueError, AttributeError,
                KeyError) as e:
            raise ProcessorError(f"the chat template cannot render conversation {i}: "
                                 f"{type(e).__name__}: {str(e)[:200]}. Check its messages: each a "
                                 f"dict with a 'role' string and 'content' (a string or a list of "
                                 f"parts).") from None
    return prompts
