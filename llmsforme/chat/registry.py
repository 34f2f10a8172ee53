"""The chat template families we know: where each template is, and its rules.

A template's Jinja text lives in ``llmsforme/templates/<name>.jinja``; this
registry holds what the text alone does not say: the special tokens a message
must not contain, the token a reply ends with, and which roles may appear in
which order.

Taught in: [Chat templates](../part-1/chat-templates.ipynb).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

__all__ = ["ChatTemplate", "TEMPLATES", "get_template"]


@dataclass(frozen=True)
class ChatTemplate:
    """One family of chat templates and its rules.

    Attributes:
        name: the family (``"chatml"``, ``"llama3"``...), also the file name.
        special_tokens: the strings that delimit turns. A message containing
            one could forge a turn, so by default it is refused.
        end_of_turn: the token that ends a reply; generation stops there.
        alternation: user and assistant turns must alternate, starting with
            user (after an optional system message).
        supports_system: a system message is accepted (first only).
        supports_tool: a ``tool`` message (the result of a tool call) is accepted.
        trims_content: the template strips whitespace around each content.
        default_system_prompt: written when the conversation has no system
            message (``None``: nothing is written).
        published_at: where the format is published.
    """

    name: str
    special_tokens: tuple[str, ...]
    end_of_turn: str
    alternation: bool = False
    supports_system: bool = True
    supports_tool: bool = False
    trims_content: bool = False
    default_system_prompt: str | None = None
    published_at: str = ""

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles a message may have with this template.

        Example:
            >>> get_template("mistral").roles
            ('user', 'assistant')
        """
        optional = (("system",) if self.supports_system else ()) + ("user", "assistant")
        return optional + (("tool",) if self.supports_tool else ())

    @property
    def file(self) -> str:
        """File name of the template, in ``llmsforme/templates/``."""
        return f"{self.name}.jinja"

    @property
    def source(self) -> str:
        """The Jinja text of the template (to show it on a page)."""
        return (files("llmsforme") / "templates" / self.file).read_text(encoding="utf-8")


TEMPLATES: dict[str, ChatTemplate] = {
    template.name: template
    for template in (
        ChatTemplate(
            name="chatml",
            special_tokens=("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
            end_of_turn="<|im_end|>",
            supports_tool=True,
            default_system_prompt="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
            published_at="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct (tokenizer_config.json)",
        ),
        ChatTemplate(
            name="phi3",
            special_tokens=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>", "<s>", "</s>"),
            end_of_turn="<|end|>",
            published_at="https://huggingface.co/microsoft/Phi-3-mini-4k-instruct (Chat Format)",
        ),
        ChatTemplate(
            name="llama3",
            special_tokens=(
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ),
            end_of_turn="<|eot_id|>",
            trims_content=True,
            published_at="https://huggingface.co/meta-llama/Meta-Llama-3-8B-Instruct (tokenizer_config.json)",
        ),
        ChatTemplate(
            name="gemma",
            special_tokens=("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<pad>"),
            end_of_turn="<end_of_turn>",
            alternation=True,
            trims_content=True,
            published_at="https://ai.google.dev/gemma/docs/core/prompt-structure",
        ),
        ChatTemplate(
            name="llama2",
            # [INST] and <<SYS>> are plain text for the tokenizer, which is why
            # Meta's own code refuses them in messages (SPECIAL_TAGS).
            special_tokens=("<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"),
            end_of_turn="</s>",
            alternation=True,
            trims_content=True,
            published_at="https://github.com/meta-llama/llama/blob/main/llama/generation.py (chat_completion)",
        ),
        ChatTemplate(
            name="mistral",
            special_tokens=("<s>", "</s>", "[INST]", "[/INST]"),
            end_of_turn="</s>",
            alternation=True,
            supports_system=False,
            published_at="https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.2 (Instruction format)",
        ),
    )
}


def get_template(template: str | ChatTemplate) -> ChatTemplate:
    """The registered template called ``template`` (a :class:`ChatTemplate` is returned as is).

    Example:
        >>> get_template("chatml").end_of_turn
        '<|im_end|>'
        >>> get_template("vicuna")
        Traceback (most recent call last):
        ...
        ValueError: template must be one of 'chatml', 'phi3', 'llama3', 'gemma', 'llama2', 'mistral', got 'vicuna'

    Taught in: [Chat templates](../part-1/chat-templates.ipynb).
    """
    if isinstance(template, ChatTemplate):
        return template
    names = ", ".join(repr(name) for name in TEMPLATES)
    if not isinstance(template, str):
        raise TypeError(f"template must be a name ({names}) or a ChatTemplate, got {type(template).__name__}")
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {names}, got {template!r}")
    return TEMPLATES[template]
