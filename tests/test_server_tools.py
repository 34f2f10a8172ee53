"""OpenAI's tools on the course's server, driven by the official ``openai`` client over real HTTP."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from openai import OpenAI

from llmsforme.server import MODEL_ID, start_server

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Compute an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "number"},
                "op": {"type": "string", "enum": ["+", "-", "*", "/"]},
                "b": {"type": "number"},
            },
            "required": ["a", "op", "b"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup_capital",
        "description": "The capital city of a country.",
        "parameters": {
            "type": "object",
            "properties": {"country": {"type": "string", "enum": ["France", "Japan", "Peru"]}},
            "required": ["country"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [CALCULATOR, LOOKUP]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
QUESTION = [{"role": "user", "content": "What is 12 times 7?"}]


@pytest.fixture(scope="module")
def client(course_model):
    with start_server(*course_model) as server:
        yield OpenAI(base_url=server.base_url, api_key="x", _strict_response_validation=True, max_retries=0)


def create(client, messages=QUESTION, **options):
    options.setdefault("max_tokens", 50)
    options.setdefault("tools", TOOLS)
    return client.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0, **options)


def check_call(call, names=tuple(SCHEMAS)):
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in names
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_and_named_tool_choice_give_valid_tool_calls(client):
    required = create(client, tool_choice="required").choices[0]
    assert required.finish_reason == "tool_calls" and required.message.content is None
    assert len(required.message.tool_calls) == 1
    check_call(required.message.tool_calls[0])
    named = create(client, tool_choice={"type": "function", "function": {"name": "lookup_capital"}}).choices[0]
    assert named.finish_reason == "tool_calls"
    check_call(named.message.tool_calls[0], ("lookup_capital",))


def test_none_gives_text_and_a_tool_result_comes_back(client):
    none = create(client, tool_choice="none", max_tokens=12).choices[0]
    assert none.message.tool_calls is None and none.message.content
    call = create(client, tool_choice="required").choices[0].message.tool_calls[0]
    conversation = [*QUESTION, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                    {"role": "tool", "tool_call_id": call.id, "content": "84"}]
    answer = create(client, conversation, tool_choice="none", max_tokens=16).choices[0]
    assert answer.message.content and answer.finish_reason in ("stop", "length")


def test_streamed_tool_calls_accumulate_in_the_clients_helper(client):
    plain = create(client, tool_choice="required").choices[0].message.tool_calls[0]
    with client.chat.completions.stream(model=MODEL_ID, messages=QUESTION, tools=TOOLS, tool_choice="required",
                                        temperature=0, max_tokens=50) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in events
    # The arguments arrive as they are written, in several deltas, as OpenAI streams them.
    assert events.count("tool_calls.function.arguments.delta") > 2, events
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    streamed = choice.message.tool_calls[0]
    assert (streamed.function.name, streamed.function.arguments) == (plain.function.name, plain.function.arguments)


BAD = [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "format": "uri"}}}}}]},
     "tools", "'format' at #/properties/x"),
    ({"tool_choice": {"type": "function", "function": {"name": "launch_rockets"}}}, "tool_choice", "launch_rockets"),
    ({"tool_choice": "sometimes"}, "tool_choice", "sometimes"),
    ({"response_format": {"type": "json_object"}}, "response_format", "together"),
]


@pytest.mark.parametrize(("options", "param", "words"), BAD, ids=[p for _, p, _ in BAD])
def test_bad_tool_requests_are_400_naming_the_problem(client, options, param, words):
    with pytest.raises(openai.BadRequestError) as caught:
        create(client, **{"tools": TOOLS, **options})
    assert caught.value.body["param"] == param and words in caught.value.body["message"], caught.value.body
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL_ID, messages=QUESTION, tool_choice="auto")
    assert caught.value.body["param"] == "tool_choice"
    assert create(client, tool_choice="none", max_tokens=1).usage.completion_tokens == 1


@pytest.mark.parametrize("size", [1, 2, 5, 13, 1000])
def test_streamed_arguments_add_up_whatever_the_pieces(size):
    from llmsforme.server.openai_api import ToolCallStream

    calls = [("calculator", '{"a": 12, "op": "*", "b": 7}'), ("lookup_capital", '{"country": "Pe}ru"}')]
    text = "\n".join(f'<tool_call>{{"name": "{name}", "arguments": {arguments}}}</tool_call>' for name, arguments in calls)
    stream = ToolCallStream()
    deltas = [d for start in range(0, len(text), size) for d in stream.add(text[start:start + size])]
    got: dict[int, list[str]] = {}
    for delta in deltas:
        [call] = delta["tool_calls"]
        if "id" in call:
            assert call["index"] == len(got) and call["function"]["arguments"] == ""
            got[call["index"]] = [call["function"]["name"], ""]
        else:
            got[call["index"]][1] += call["function"]["arguments"]
    assert [tuple(v) for v in got.values()] == calls and stream.finish_reason("stop") == "tool_calls"


def test_a_call_sent_back_must_name_a_tool_and_match_its_parameters(client):
    def history(name, arguments):
        call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
        return [*QUESTION, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "84"}]

    for messages, words in [
        (history("launch_rockets", "{}"), "calls 'launch_rockets', which is not one of the tools"),
        (history("calculator", '{"a": "twelve", "op": "*", "b": 7}'),
         "arguments['a'] do not match the parameters of 'calculator'"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            create(client, messages)
        assert caught.value.body["param"] == "messages" and words in caught.value.body["message"], caught.value.body
    assert create(client, history("calculator", '{"a": 12, "op": "*", "b": 7}'), max_tokens=1).choices
