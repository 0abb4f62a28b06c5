"""The chat template, branch by branch: each rendering is written out here as the published Qwen3 /
Qwen3-Omni behaviour gives it (omni_ref/processor/chat.py names the sources), and HF's
Qwen3OmniMoeProcessor, reading the same checkpoint file, must render exactly the same string.

    system turn, tools preamble, tool calls, tool responses, multi-step tool use, <think> kept or
    dropped (last_query_index), enable_thinking unset / True / False, add_generation_prompt,
    media placeholders in every role, batches; and the inputs the template would silently accept
    but we refuse.
"""
from pathlib import Path

import pytest

from omni_ref import hf
from omni_ref.processor import Processor, ProcessorError

IM = "<|im_start|>"
END = "<|im_end|>\n"
GEN = IM + "assistant\n"
NO_THINK = "<think>\n\n</think>\n\n"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
AUDIO = "<|audio_start|><|audio_pad|><|audio_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather <now>, café",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
PREAMBLE = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
# json.dumps with its default separators, non-ASCII and "<" kept as they are
WEATHER_JSON = ('{"type": "function", "function": {"name": "get_weather", "description": "Weather <now>, café", '
                '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, '
                '"required": ["city"]}}}')
TIME_JSON = '{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}'
CALL_FORMAT = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
               "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
               "<args-json-object>}\n</tool_call>")


@pytest.fixture(scope="module")
def procs(tiny_dir):
    return Processor.from_pretrained(tiny_dir), hf.load_hf_processor(tiny_dir)


def render(procs, messages, **kw):
    """Our prompt, after checking that HF renders the same string."""
    ours, theirs = procs
    mine = ours.apply_chat_template(messages, **kw)
    with hf.quiet():
        assert mine == theirs.apply_chat_template(messages, **kw)
    return mine


def user(text):
    return {"role": "user", "content": text}


def call(name, arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


# ---- where the template lives ------------------------------------------------------------------

def test_both_read_the_checkpoints_template_file(procs, tiny_dir):
    ours, theirs = procs
    text = (Path(tiny_dir) / "chat_template.jinja").read_text(encoding="utf-8")
    assert ours.chat_template == theirs.chat_template == text
    assert "enable_thinking" in text and "last_query_index" in text


# ---- system turn and generation prompt ---------------------------------------------------------

def test_system_turn_and_generation_prompt(procs):
    messages = [{"role": "system", "content": "Be brief."}, user("Hi")]
    assert render(procs, messages) == f"{IM}system\nBe brief.{END}{IM}user\nHi{END}"
    assert render(procs, messages, add_generation_prompt=True) == f"{IM}system\nBe brief.{END}{IM}user\nHi{END}{GEN}"
    # a system message that is not first is an ordinary turn
    later = [user("Hi"), {"role": "system", "content": "Now in French."}, user("Salut")]
    assert render(procs, later) == f"{IM}user\nHi{END}{IM}system\nNow in French.{END}{IM}user\nSalut{END}"


@pytest.mark.parametrize("enable_thinking, tail", [(None, ""), (True, ""), (False, NO_THINK)],
                         ids=["unset", "true", "false"])
def test_enable_thinking(procs, enable_thinking, tail):
    """False closes an empty <think> block after the generation prompt; unset and True leave the
    thinking to the model. Without a generation prompt the switch changes nothing."""
    kw = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    messages = [user("Hi")]
    assert render(procs, messages, add_generation_prompt=True, **kw) == f"{IM}user\nHi{END}{GEN}{tail}"
    assert render(procs, messages, **kw) == f"{IM}user\nHi{END}"


# ---- tools ---------------------------------------------------------------------------------------

def test_tools_preamble_in_the_system_turn(procs):
    with_system = [{"role": "system", "content": "Be brief."}, user("Weather in Paris?")]
    want = (f"{IM}system\nBe brief.\n\n{PREAMBLE}\n{WEATHER_JSON}\n{TIME_JSON}{CALL_FORMAT}{END}"
            f"{IM}user\nWeather in Paris?{END}{GEN}")
    assert render(procs, with_system, tools=[WEATHER, TIME], add_generation_prompt=True) == want
    # without a system message the preamble opens a system turn of its own
    want = f"{IM}system\n{PREAMBLE}\n{WEATHER_JSON}{CALL_FORMAT}{END}{IM}user\nWeather in Paris?{END}"
    assert render(procs, with_system[1:], tools=[WEATHER]) == want
    # a system message given as parts, and an empty tools list (no preamble at all)
    parts = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, user("Hi")]
    assert render(procs, parts, tools=[TIME]).startswith(f"{IM}system\nBe brief.\n\n{PREAMBLE}\n{TIME_JSON}")
    assert render(procs, parts, tools=[]) == f"{IM}system\nBe brief.{END}{IM}user\nHi{END}"


def test_tool_calls_in_assistant_turns(procs):
    messages = [user("Weather and time in Paris?"),
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    call("get_weather", {"city": "Paris"}), call("get_time", '{"tz": "CET"}')]},
                {"role": "tool", "content": "Sunny, 21 C"}, {"role": "tool", "content": "14:05"},
                {"role": "assistant", "content": "", "tool_calls": [{"name": "get_time", "arguments": {}}]}]
    want = (f"{IM}user\nWeather and time in Paris?{END}"
            f"{IM}assistant\nLet me check.\n<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": "
            f"{{\"city\": \"Paris\"}}}}\n</tool_call>\n<tool_call>\n{{\"name\": \"get_time\", \"arguments\": "
            f"{{\"tz\": \"CET\"}}}}\n</tool_call>{END}"
            f"{IM}user\n<tool_response>\nSunny, 21 C\n</tool_response>\n<tool_response>\n14:05\n</tool_response>{END}"
            # the last message, after the last user query: it gets an (empty) think block
            f"{IM}assistant\n<think>\n\n</think>\n\n<tool_call>\n{{\"name\": \"get_time\", \"arguments\": {{}}}}\n"
            f"</tool_call>{END}")
    assert render(procs, messages, tools=[WEATHER, TIME]).endswith(want)


def test_multi_step_tool_use_keeps_the_reasoning_of_the_current_query(procs):
    """Tool responses are not user queries: the reasoning of every assistant step since the last
    real question is kept, the reasoning of the turn before it is dropped."""
    messages = [user("First question?"),
                {"role": "assistant", "content": "Old answer.", "reasoning_content": "old thoughts"},
                user("Weather in Paris?"),
                {"role": "assistant", "content": "", "reasoning_content": "I need the weather.",
                 "tool_calls": [call("get_weather", {"city": "Paris"})]},
                {"role": "tool", "content": "Sunny"},
                {"role": "assistant", "content": "<think>\nSunny means nice.\n</think>\n\nIt is sunny."}]
    want = (f"{IM}user\nFirst question?{END}{IM}assistant\nOld answer.{END}"
            f"{IM}user\nWeather in Paris?{END}"
            f"{IM}assistant\n<think>\nI need the weather.\n</think>\n\n<tool_call>\n{{\"name\": \"get_weather\", "
            f"\"arguments\": {{\"city\": \"Paris\"}}}}\n</tool_call>{END}"
            f"{IM}user\n<tool_response>\nSunny\n</tool_response>{END}"
            f"{IM}assistant\n<think>\nSunny means nice.\n</think>\n\nIt is sunny.{END}")
    assert render(procs, messages, tools=[WEATHER]).endswith(want)
    # a user message written as a <tool_response> string is no query either
    typed = messages[:4] + [user("<tool_response>\nSunny\n</tool_response>")] + messages[5:]
    assert render(procs, typed).endswith(want)


# ---- reasoning in the history -------------------------------------------------------------------

def test_reasoning_before_the_last_query_is_dropped(procs):
    messages = [user("A?"), {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nA."},
                user("B?"), {"role": "assistant", "content": "B.", "reasoning_content": "\nthinking B\n"}]
    want = (f"{IM}user\nA?{END}{IM}assistant\nA.{END}"
            f"{IM}user\nB?{END}{IM}assistant\n<think>\nthinking B\n</think>\n\nB.{END}")
    assert render(procs, messages) == want
    # with a question after it, B's reasoning goes too; an answer with no reasoning after the last
    # query gets an empty think block only when it is the last message
    more = messages + [user("C?")]
    assert render(procs, more, add_generation_prompt=True, enable_thinking=False) == (
        f"{IM}user\nA?{END}{IM}assistant\nA.{END}{IM}user\nB?{END}{IM}assistant\nB.{END}"
        f"{IM}user\nC?{END}{GEN}{NO_THINK}")
    assert render(procs, [user("Q"), {"role": "assistant", "content": "R."}]) == (
        f"{IM}user\nQ{END}{IM}assistant\n<think>\n\n</think>\n\nR.{END}")
    # the other keys HF reads reasoning from
    for key in ("reasoning", "thinking"):
        assert render(procs, [user("Q"), {"role": "assistant", "content": "R.", key: "r"}]).endswith(
            f"{IM}assistant\n<think>\nr\n</think>\n\nR.{END}")


def test_only_string_user_turns_count_as_queries(procs):
    """Qwen3-Omni's template: last_query_index looks for a user message whose content is a string,
    so after a user turn written as parts the reasoning of the answer is dropped (and with no
    string user turn at all, only the last message may keep it)."""
    parts_last = [user("A?"), {"role": "assistant", "content": "A.", "reasoning_content": "ra"},
                  {"role": "user", "content": [{"type": "text", "text": "B?"}]},
                  {"role": "assistant", "content": "B.", "reasoning_content": "rb"}]
    assert render(procs, parts_last) == (f"{IM}user\nA?{END}{IM}assistant\n<think>\nra\n</think>\n\nA.{END}"
                                         f"{IM}user\nB?{END}{IM}assistant\n<think>\nrb\n</think>\n\nB.{END}")
    all_parts = [{"role": "user", "content": [{"type": "text", "text": "B?"}]},
                 {"role": "assistant", "content": [{"type": "text", "text": "<think>rb</think>B."}]}]
    assert render(procs, all_parts) == f"{IM}user\nB?{END}{IM}assistant\nB.{END}"


# ---- media -----------------------------------------------------------------------------------------

def test_media_placeholders_in_every_role(procs):
    messages = [{"role": "system", "content": [{"type": "text", "text": "Look: "}, {"type": "image"}]},
                {"role": "user", "content": [{"type": "audio", "audio": "a.wav"}, {"type": "video", "video": "v"},
                                             {"type": "image_url", "image_url": {"url": "x.png"}},
                                             {"type": "text", "text": "What?"}]},
                {"role": "assistant", "content": "", "tool_calls": [call("get_time", {})]},
                {"role": "tool", "content": [{"type": "text", "text": "see "}, {"type": "image", "image": "p.png"}]}]
    want = (f"{IM}system\nLook: {IMAGE}{END}{IM}user\n{AUDIO}{VIDEO}{IMAGE}What?{END}"
            f"{IM}assistant\n<tool_call>\n{{\"name\": \"get_time\", \"arguments\": {{}}}}\n</tool_call>{END}"
            f"{IM}user\n<tool_response>\nsee {IMAGE}\n</tool_response>{END}{GEN}{NO_THINK}")
    assert render(procs, messages, add_generation_prompt=True, enable_thinking=False) == want
    with_tools = render(procs, messages, tools=[TIME])
    assert with_tools.startswith(f"{IM}system\nLook: {IMAGE}\n\n{PREAMBLE}")


def test_batch_renders_each_conversation(procs):
    batch = [[user("Hi")], [{"role": "system", "content": "S"}, user("Yo")]]
    assert render(procs, batch, add_generation_prompt=True, enable_thinking=False) == [
        f"{IM}user\nHi{END}{GEN}{NO_THINK}", f"{IM}system\nS{END}{IM}user\nYo{END}{GEN}{NO_THINK}"]


def test_tokenized_prompt_equal_hf(procs):
    """The think block and the tool tags are plain text to the tokenizer: same ids as HF."""
    ours, theirs = procs
    messages = [user("Weather?"), {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {})]},
                {"role": "tool", "content": "Sunny"}]
    kw = dict(tools=[WEATHER], add_generation_prompt=True, enable_thinking=False, tokenize=True, return_dict=True)
    a = ours.apply_chat_template(messages, **kw)
    with hf.quiet():
        b = theirs.apply_chat_template(messages, return_tensors="pt", **kw)
    assert list(a) == list(b) and all((a[k] == b[k]).all() for k in a)


# ---- refused ---------------------------------------------------------------------------------------

def test_bad_template_inputs_get_clear_errors(procs):
    ours, _ = procs
    with pytest.raises(ProcessorError, match=r"message 1 has role 'bot'; the chat template writes only the roles "
                                             r"system, user, assistant, tool"):
        ours.apply_chat_template([user("Hi"), {"role": "bot", "content": "Hello"}])
    with pytest.raises(ProcessorError, match=r"message 1 is a tool response, but no assistant message with "
                                             r"tool_calls comes before it"):
        ours.apply_chat_template([user("Hi"), {"role": "tool", "content": "42"}])
    with pytest.raises(ProcessorError, match=r"message 2 is a tool response"):
        ours.apply_chat_template([user("Hi"), {"role": "assistant", "content": "No call."},
                                  {"role": "tool", "content": "42"}])
    with pytest.raises(TypeError, match=r"tools=.* must be a list of dicts"):
        ours.apply_chat_template([user("Hi")], tools=WEATHER)
    with pytest.raises(TypeError, match=r"tools=.* must be a list of dicts"):
        ours.apply_chat_template([user("Hi")], tools=["get_weather"])
    with pytest.raises(TypeError, match=r"enable_thinking=0 must be True, False or None"):
        ours.apply_chat_template([user("Hi")], add_generation_prompt=True, enable_thinking=0)
    # responses to one call may follow each other
    two = [user("Hi"), {"role": "assistant", "content": "", "tool_calls": [call("a", {}), call("b", {})]},
           {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}]
    assert ours.apply_chat_template(two).count("<tool_response>") == 2
