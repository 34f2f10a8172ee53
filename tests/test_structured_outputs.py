"""Structured outputs on the course's server: OpenAI's ``response_format`` and Ollama's ``format``.

The official ``openai`` and ``ollama`` clients talk to a real server over
HTTP. The course model (135M) cannot be trusted to write JSON by itself:
the same prompts without the constraint are measured too, and reported.
"""

from __future__ import annotations

import json
from enum import Enum

import httpx2 as httpx
import jsonschema
import ollama
import openai
import pydantic
import pytest
from openai import OpenAI

from llmsforme.server import MODEL_ID, start_server

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z ]{1,24}$"},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]},
        "hobbies": {"type": "array", "items": {"type": "string", "enum": ["chess", "music", "running"]},
                    "maxItems": 3},
    },
    "required": ["name", "age", "city", "hobbies"],
    "additionalProperties": False,
}
PROMPTS = [
    "Describe a person as JSON with name, age, city and hobbies.",
    "Invent a character for a story. Give their name, age, city and hobbies in JSON.",
    "What is the capital of France? Answer in JSON.",
]


def ask(prompt):
    return [{"role": "user", "content": prompt}]


@pytest.fixture(scope="module")
def server(course_model):
    with start_server(*course_model) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server.base_url, api_key="x", _strict_response_validation=True, max_retries=0)


def create(client, messages, **options):
    options.setdefault("max_tokens", 60)
    return client.chat.completions.create(model=MODEL_ID, messages=messages, **options)


def parses(text, schema=None):
    try:
        value = json.loads(text)
    except ValueError:
        return False
    if schema is None:
        return isinstance(value, dict)
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True


def person_format(strict=True):
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": strict}}


# --- OpenAI's response_format -------------------------------------------------------------


def test_json_object_replies_parse_where_plain_replies_do_not(client):
    # Not PROMPTS[0]: with four keys asked, the model fills "hobbies" with
    # nested lists until max_tokens: valid so far, but never finished.
    prompts = ["Describe a person as JSON with name, age and city.", PROMPTS[2]]
    plain = [create(client, ask(p), temperature=0).choices[0].message.content for p in prompts]
    constrained = [create(client, ask(p), temperature=0, response_format={"type": "json_object"}) for p in prompts]
    assert all(parses(r.choices[0].message.content) for r in constrained), [r.choices[0].message.content for r in constrained]
    assert all(r.choices[0].finish_reason == "stop" for r in constrained)
    # Measured: without the constraint, 1 reply of the 2 is JSON; the other
    # wraps it in prose and a Markdown fence.
    assert [parses(text) for text in plain] == [False, True], plain


@pytest.mark.parametrize(("prompt", "options"), [(PROMPTS[0], {"temperature": 0}),
                                                 (PROMPTS[1], {"temperature": 1.0, "seed": 3})])
def test_json_schema_replies_validate(client, prompt, options):
    reply = create(client, ask(prompt), response_format=person_format(), **options).choices[0]
    assert reply.finish_reason == "stop"
    assert parses(reply.message.content, PERSON), reply.message.content
    # Unconstrained, the same request does not validate (0 of 2 in this test).
    plain = create(client, ask(prompt), **options).choices[0].message.content
    assert not parses(plain, PERSON), plain


def test_a_streamed_json_schema_reply_concatenates_to_the_plain_one(client):
    options = {"temperature": 0.8, "seed": 5, "response_format": person_format()}
    plain = create(client, ask(PROMPTS[0]), **options).choices[0].message.content
    pieces = [c.choices[0].delta.content or "" for c in create(client, ask(PROMPTS[0]), stream=True, **options)
              if c.choices]
    assert len(pieces) > 5
    assert "".join(pieces) == plain and parses(plain, PERSON)


class Colour(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Pet(pydantic.BaseModel):
    species: str
    colour: Colour


class Owner(pydantic.BaseModel):
    name: str
    age: int
    pet: Pet


def test_parse_returns_the_pydantic_object(client):
    completion = client.chat.completions.parse(
        model=MODEL_ID, messages=ask("Describe a pet owner and their pet."), temperature=0, max_tokens=80,
        response_format=Owner,
    )
    message = completion.choices[0].message
    assert isinstance(message.parsed, Owner), message.content
    assert message.parsed == Owner.model_validate_json(message.content)
    with client.chat.completions.stream(
        model=MODEL_ID, messages=ask("Describe a pet owner and their pet."), temperature=0, max_tokens=80,
        response_format=Owner,
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == message.parsed


def test_a_schema_is_compiled_once(server, client):
    schema = {**PERSON, "properties": {**PERSON["properties"], "nickname": {"type": "string", "enum": ["Al", "Bo"]}},
              "required": [*PERSON["required"], "nickname"]}
    form = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema, "strict": True}}
    create(client, ask(PROMPTS[2]), temperature=0, max_tokens=2, response_format=form)
    compiled = server.engine.json_constraint(schema)
    create(client, ask(PROMPTS[2]), temperature=0, max_tokens=2, response_format=form)
    assert server.engine.json_constraint(json.loads(json.dumps(schema))) is compiled


def strict_object(**properties):
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


BAD_SCHEMAS = [
    (strict_object(tags={"type": "object", "patternProperties": {"^x": {"type": "string"}}}),
     "patternProperties", "#/properties/tags"),
    (strict_object(site={"type": "string", "format": "uri"}), "format", "#/properties/site"),
    (strict_object(code={"type": "string", "minLength": 3}), "minLength", "#/properties/code"),
    (strict_object(other={"$ref": "https://example.com/other.json"}), "$ref", "#/properties/other"),
    (strict_object(items={"type": "array", "items": {"type": "integer"}, "uniqueItems": True}),
     "uniqueItems", "#/properties/items"),
    (strict_object(x={"oneOf": [{"type": "string"}, {"type": "integer"}]}), "oneOf", "#/properties/x"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, "additionalProperties", "#"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}, "required", "#"),
    ({"type": "array", "items": {"type": "string"}}, "type", "#"),
]


@pytest.mark.parametrize(("schema", "keyword", "path"), BAD_SCHEMAS, ids=[k for _, k, _ in BAD_SCHEMAS])
def test_a_schema_outside_strict_mode_is_400_naming_the_keyword(client, schema, keyword, path):
    form = {"type": "json_schema", "json_schema": {"name": "bad", "schema": schema, "strict": True}}
    with pytest.raises(openai.BadRequestError) as caught:
        create(client, ask("Hi"), response_format=form)
    error = caught.value.body
    assert error["type"] == "invalid_request_error" and error["param"] == "response_format"
    assert f"{keyword!r} at {path} " in error["message"] and "'bad'" in error["message"], error["message"]


def test_bad_response_formats_are_400_and_the_server_keeps_serving(client):
    for form, param in [
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"name": "has space", "schema": PERSON}}, "response_format.json_schema.name"),
        ({"type": "json_object", "json_schema": {"name": "p", "schema": PERSON}}, "response_format"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            create(client, ask("Hi"), response_format=form)
        assert caught.value.body["param"] == param, caught.value.body
    assert create(client, ask("Hi"), temperature=0, max_tokens=2).usage.completion_tokens == 2
    # text is plain text: the same reply as no response_format at all
    assert (create(client, ask("Hi"), temperature=0, max_tokens=8, response_format={"type": "text"}).choices[0].message.content
            == create(client, ask("Hi"), temperature=0, max_tokens=8).choices[0].message.content)


# --- Ollama's format ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ollama_client(server):
    return ollama.Client(host=server.base_url.removesuffix("/v1"))


class City(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")  # "additionalProperties": false

    name: str
    country: str
    population: int = pydantic.Field(ge=0, le=100_000_000)


GREEDY = {"temperature": 0, "num_predict": 60}


def test_ollama_format_json_and_schema(ollama_client):
    messages = ask("Describe a person as JSON with name, age and city.")
    reply = ollama_client.chat(model=MODEL_ID, messages=messages, format="json", options=GREEDY)
    assert reply.done_reason == "stop" and parses(reply.message.content), reply.message.content
    schema = City.model_json_schema()  # Ollama's documented way (not strict: no "required" rule)
    city_messages = ask("Tell me about Paris as JSON.")
    reply = ollama_client.chat(model=MODEL_ID, messages=city_messages, format=schema, options=GREEDY)
    assert reply.done_reason == "stop", reply.message.content
    city = City.model_validate_json(reply.message.content)
    assert parses(reply.message.content, schema) and city.name
    streamed = "".join(part.message.content for part in ollama_client.chat(
        model=MODEL_ID, messages=city_messages, format=schema, options=GREEDY, stream=True))
    assert streamed == reply.message.content
    generated = ollama_client.generate(model=MODEL_ID, prompt="Tell me about Paris as JSON.", format=schema,
                                       options=GREEDY)
    assert generated.response == reply.message.content


def test_ollama_bad_formats_get_ollamas_error(server, ollama_client):
    for form, words in [
        ({"type": "object", "properties": {"a": {"type": "object", "patternProperties": {"x": {}}}}},
         "'patternProperties' at #/properties/a"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "'$ref' at #/properties/a"),
    ]:
        with pytest.raises(ollama.ResponseError) as caught:
            ollama_client.chat(model=MODEL_ID, messages=ask("Hi"), format=form)
        assert caught.value.status_code == 400 and words in caught.value.error, caught.value.error
    # A string other than "json": the client refuses it, so send it by hand.
    response = httpx.post(server.base_url.removesuffix("/v1") + "/api/chat",
                          json={"model": MODEL_ID, "messages": ask("Hi"), "format": "yaml"})
    assert response.status_code == 400 and "format" in response.json()["error"]
    assert ollama_client.chat(model=MODEL_ID, messages=ask("Hi"), options={"temperature": 0, "num_predict": 1}).done
