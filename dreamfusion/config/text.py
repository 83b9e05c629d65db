"""Text the user gives (prompts, config strings): what it may contain, and how it is quoted.

A prompt travels into YAML, JSON, log lines, folder names and tokenizers. Characters that
mean nothing in a prompt but break lines or hide text (controls, Unicode line and paragraph
separators, format characters such as bidi overrides and BOMs) are refused, not escaped.
"""
from __future__ import annotations

import json
import unicodedata

from ..errors import UserError

MAX_PROMPT = 500
# Unicode categories a prompt cannot mean: controls (C0, C1, NEL), format characters,
# line and paragraph separators, lone surrogates (argv bytes that were not UTF-8)
_REFUSED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# the two format characters that carry meaning: joiners in Persian, Indic scripts and emoji
_JOINERS = frozenset({"\u200c", "\u200d"})


def bad_character(text: str) -> str | None:
    """A description of the first character ``text`` may not contain, or None."""
    for i, ch in enumerate(text):
        category = unicodedata.category(ch)
        if category in _REFUSED and ch not in _JOINERS:
            name = unicodedata.name(ch, "control character" if category == "Cc" else category)
            if category == "Cs":
                return f"a byte that is not valid UTF-8 text (at character {i + 1})"
            return f"U+{ord(ch):04X} ({name}) at character {i + 1}"
    return None


def check_text(text: str, what: str) -> None:
    """Refuse ``text`` if it holds a character no prompt, path or name can mean."""
    bad = bad_character(text)
    if bad is not None:
        raise UserError(f"{what} contains {bad}; text here may not hold control characters, "
                        f"format characters or line separators")


def check_prompt(prompt: str) -> str:
    """The prompt, stripped; a ``UserError`` for an empty, overlong or unreadable one."""
    text = prompt.strip()
    if not text:
        raise UserError("the prompt is empty")
    if len(text) > MAX_PROMPT:
        raise UserError(f"the prompt is {len(text)} characters long; the limit is {MAX_PROMPT}")
    check_text(text, "the prompt")
    return text


def one_line(text: str) -> str:
    """``text`` with every character that could end or hide a line escaped, for logs and
    error messages (which must stay one line whatever a path or an exception holds)."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


def quote(text: str) -> str:
    """``text`` in double quotes with everything beyond printable ASCII escaped (JSON's
    escapes): safe inside a YAML comment, a log line or a shell-like message."""
    return json.dumps(text, ensure_ascii=True)
