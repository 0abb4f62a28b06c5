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
it. HF's Qwen3OmniMoeProcessor and ours both read the template from the checkpoint directory's
chat_template.jinja (presets.write_checkpoint copies data/tokenizer/, which
scripts/make_tokenizer.py writes), so the two render one and the same text.

Where the template comes from. Qwen3-Omni's published chat_template.json is not in this project's
offline library, so ours is a reconstruction: the branches of Qwen3's published template
(Qwen/Qwen3-8B tokenizer_config.json "chat_template"; read here through a stored copy of the Qwen3
family's tokenizer_config.json, akougkas/warpio-cli warpio-docs/ai-docs/model_cards/qwen3:4b.md),
with Qwen3-Omni's known differences: list-valued contents are rendered part by part with one
placeholder per medium, and only a user turn whose content is a string counts as a query (as
sujitnoronha/audio_reasoning_interspeech docs/THINKING_TAGS_BUG.md shows of the published Omni
template). Branch by branch (tests/test_template.py checks each against a written-out string and
against HF rendering the same file):

    system        messages[0] with role system opens the prompt; a later system message is a turn
    tools         a system turn: the system text (if any) + "\n\n", then "# Tools ... <tools>", one
                  `tojson` line per tool (json.dumps, ", " / ": " separators, non-ASCII kept),
                  "</tools>" and the <tool_call>{"name": ..., "arguments": ...}</tool_call> format
    tool calls    an assistant turn's tool_calls follow its content, each
                  <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call> (a string
                  `arguments` is written as is)
    tool results  consecutive tool messages share one user turn, each in <tool_response> tags
    reasoning     an assistant's reasoning (reasoning_content, or <think>...</think> at the start
                  of its content) is written as <think>\nR\n</think>\n\n only for turns after the
                  last user query (last_query_index: the last user message whose content is a
                  string that is not a <tool_response>), and there only for the last message or a
                  turn with non-empty reasoning; earlier turns keep the answer alone
    generation    add_generation_prompt ends the prompt with "<|im_start|>assistant\n"; with
                  enable_thinking=False it adds the closed block "<think>\n\n</think>\n\n"
                  (unset or True: nothing, the model opens <think> itself)

What the template would silently accept, we refuse: a role other than system / user / assistant /
tool (the template drops it), a tool message without an assistant tool call before it, tools that
are not a list of dicts, enable_thinking that is not a bool.

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
# The roles the template writes; it would leave a message of any other role out without a word.
ROLES = ("system", "user", "assistant", "tool")
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
            _check_role(chat, len(messages), message)
            message = {k: v for k, v in message.items() if v is not None}
            reasoning = next((message[k] for k in REASONING_KEYS if k in message), None)
            if reasoning is not None:   # templates read reasoning_content (gpt-oss ones: thinking)
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
            if isinstance(message.get("content"), list):
                message["content"] = [_from_openai(part) for part in message["content"]]
            messages.append(message)
        out.append(messages)
    return out, batched


def _check_role(chat, m: int, message: dict) -> None:
    """Message m has a role the template writes; a tool response answers an assistant's call."""
    role = message["role"]
    if role not in ROLES:
        raise ProcessorError(f"message {m} has role {role!r:.40}; the chat template writes only "
                             f"the roles {', '.join(ROLES)} (it would drop this message from "
                             f"the prompt without a word). Use one of those.")
    if role != "tool":
        return
    before = m - 1                        # skip the other responses to the same assistant turn
    while before >= 0 and isinstance(chat[before], dict) and chat[before].get("role") == "tool":
        before -= 1
    caller = chat[before] if before >= 0 and isinstance(chat[before], dict) else {}
    if caller.get("role") != "assistant" or not caller.get("tool_calls"):
        raise ProcessorError(f"message {m} is a tool response, but no assistant message with "
                             f"tool_calls comes before it: a tool message answers the call of the "
                             f"assistant turn just before it (its 'tool_calls' list). Add that "
                             f"turn, or send the text as a user message.")


def check_template_options(tools, enable_thinking) -> None:
    """tools: None or a list of JSON-schema dicts (written into the system turn with tojson);
    enable_thinking: None (unset), True or False (False closes an empty <think> block)."""
    if tools is not None and not (isinstance(tools, (list, tuple))
                                  and all(isinstance(t, dict) for t in tools)):
        raise TypeError(f"tools={tools!r:.80} must be a list of dicts, each a function's JSON "
                        f"schema, e.g. [{{'type': 'function', 'function': {{'name': "
                        f"'get_weather', 'parameters': {{...}}}}}}]")
    if enable_thinking is not None and not isinstance(enable_thinking, bool):
        raise TypeError(f"enable_thinking={enable_thinking!r:.40} must be True, False or None: "
                        f"the template closes an empty <think> block only for the value False")


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
    """Render each conversation with the template (special tokens like eos_token, the switch
    enable_thinking: `variables`)."""
    check_template_options(tools, variables.get("enable_thinking"))
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
