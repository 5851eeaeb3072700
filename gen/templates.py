"""Prompt templates (``gen/prompts/*.yaml``) and the chat-template choice.

A prompt template is a small YAML file with ``name``, ``source`` (the paper/repository it comes
from), ``system`` and ``user`` messages; ``user`` holds placeholders such as ``{text}`` or
``{prefix}``/``{suffix}``, all substituted in one pass over the template (the document text may
contain braces, or the literal text ``{suffix}``: inserted text is never scanned again). The sha256 of the file's bytes identifies the prompt in every row and
manifest, so an edited prompt can never be silently mixed into an existing pool.

When the generator's tokenizer has no ``chat_template`` (a model trained on raw text by
``train/``), the messages are rendered with ``gen/prompts/plain_chat.jinja``: the contents as
plain text separated by blank lines, no role tags. Which one was used is recorded as
:class:`ChatTemplateInfo` in the pool manifest.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from megadocs.errors import UserError

__all__ = [
    "PROMPTS_DIR", "DEFAULT_TEMPLATES", "FIELDS", "DEFAULT_MAX_NEW_TOKENS", "PromptTemplate", "ChatTemplateInfo",
    "load_template", "chat_template_for",
]

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
# kind -> default template file
DEFAULT_TEMPLATES = {"rephrase": "rephrase_wikipedia.yaml", "thoughts": "latent_thoughts.yaml"}
# kind -> placeholders its template must contain
FIELDS = {"rephrase": ("text",), "thoughts": ("prefix", "suffix")}
DEFAULT_MAX_NEW_TOKENS = {"rephrase": 1024, "thoughts": 512, "sample": 1024}
"""kind -> ``--max-new-tokens`` when not given (paper.md: 1024 for a rephrase, 512 for a thought)."""
PLAIN_CHAT_TEMPLATE = PROMPTS_DIR / "plain_chat.jinja"


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded prompt template; ``sha256`` is the hash of the file's bytes."""

    name: str
    source: str
    system: str | None
    user: str
    path: str
    sha256: str

    def messages(self, **fields: str) -> list[dict[str, str]]:
        """The chat messages with each ``{field}`` replaced by its value, in one pass: a value that
        itself contains ``{suffix}`` (a document quoting a template) is inserted verbatim."""
        if fields:
            pattern = re.compile("|".join(re.escape("{" + key + "}") for key in fields))
            user = pattern.sub(lambda match: fields[match.group(0)[1:-1]], self.user)
        else:
            user = self.user
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return messages + [{"role": "user", "content": user}]

    def describe(self) -> dict:
        return {"name": self.name, "file": self.path, "sha256": self.sha256, "source": self.source}


@dataclass(frozen=True)
class ChatTemplateInfo:
    """Which chat template renders the messages: the tokenizer's own or the plain-text fallback.

    ``template`` is the Jinja text to pass to the engine (None: the tokenizer's own).
    """

    kind: str  # "tokenizer" | "plain-text-fallback"
    sha256: str
    template: str | None

    def describe(self) -> dict:
        return {"kind": self.kind, "sha256": self.sha256,
                **({"file": str(PLAIN_CHAT_TEMPLATE)} if self.template is not None else {})}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_template(kind: str, path: str | Path | None = None) -> PromptTemplate:
    """Load the template for ``kind`` (``rephrase``/``thoughts``) from ``path`` or the default.

    Raises:
        UserError: the file is missing, is not a mapping with a ``user`` string, or lacks one of
            the placeholders ``kind`` needs.
    """
    path = Path(path) if path is not None else PROMPTS_DIR / DEFAULT_TEMPLATES[kind]
    if not path.is_file():
        raise UserError(f"{path}: prompt template not found (expected a YAML file with 'user')")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML in prompt template ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("user"), str):
        raise UserError(f"{path}: user: expected a string prompt with placeholders, got {data!r:.60}")
    for field in FIELDS[kind]:
        count = data["user"].count("{" + field + "}")
        if count != 1:
            raise UserError(f"{path}: user: expected the placeholder {{{field}}} exactly once for "
                            f"{kind}, found it {count} times")
    return PromptTemplate(
        name=str(data.get("name") or path.stem),
        source=str(data.get("source") or "unknown"),
        system=data.get("system") or None,
        user=data["user"],
        path=str(path),
        sha256=_sha256(raw),
    )


def chat_template_for(tokenizer) -> ChatTemplateInfo:
    """The tokenizer's own chat template when it has one, else the plain-text fallback."""
    own = getattr(tokenizer, "chat_template", None)
    if own:
        text = own if isinstance(own, str) else repr(own)
        return ChatTemplateInfo("tokenizer", _sha256(text.encode()), None)
    text = PLAIN_CHAT_TEMPLATE.read_text()
    return ChatTemplateInfo("plain-text-fallback", _sha256(text.encode()), text)
