"""Chat: messages, chat templates, the role-injection guard, a chat loop, the training view.

* :func:`validate_messages` checks a conversation against a template's rules;
* :func:`render_chat` and :func:`encode_chat` turn it into prompt text and ids;
* :func:`chat` asks a model for the next reply, :func:`chat_many` for the
  next replies of several conversations, in one batch;
* :func:`training_example` shows which tokens fine-tuning learns from;
* :func:`with_tools` and :func:`tool_call_grammar` give the course model a
  tool-call format: tools in the system turn, replies constrained to text
  or calls.

Taught in: [Message roles](../part-1/message-roles.ipynb),
[Chat templates](../part-1/chat-templates.ipynb).
"""

from .guard import RoleInjectionError, find_special_tokens
from .loop import ChatPrompt, TextStream, chat, chat_many, chat_prompt, detect_template
from .messages import Message, Role, validate_messages
from .registry import TEMPLATES, ChatTemplate, get_template
from .render import render_chat
from .tokens import encode_chat, tokenizer_special_tokens
from .tools import TOOL_MARKERS, check_tools, parse_tool_reply, tool_call_grammar, tools_prompt, with_tools
from .training import training_example, training_html, training_rows

__all__ = [
    "TEMPLATES",
    "TOOL_MARKERS",
    "ChatPrompt",
    "ChatTemplate",
    "Message",
    "Role",
    "RoleInjectionError",
    "TextStream",
    "chat",
    "chat_many",
    "chat_prompt",
    "check_tools",
    "detect_template",
    "encode_chat",
    "find_special_tokens",
    "get_template",
    "parse_tool_reply",
    "render_chat",
    "tokenizer_special_tokens",
    "tool_call_grammar",
    "tools_prompt",
    "training_example",
    "training_html",
    "training_rows",
    "validate_messages",
    "with_tools",
]
