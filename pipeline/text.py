"""Text hygiene, in one place, applied by the processor before a tweet is scored.

- NUL bytes (U+0000) are removed: PostgreSQL rejects them in `text` columns, and they carry no meaning.
- Lone UTF-16 surrogates (U+D800..U+DFFF, which JSON `\\ud83d` escapes can produce) are replaced by
  U+FFFD, the replacement character: they cannot be encoded as UTF-8 and would fail the DB write.
- Text that is empty (after removing whitespace) or longer than MAX_TEXT_CHARS is rejected with
  InvalidMessage, so it is dead-lettered with that reason rather than stored.
"""

from __future__ import annotations

import re

from pipeline.errors import InvalidMessage

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str, *, max_chars: int) -> str:
    """Return `text` made safe to store, or raise InvalidMessage saying why it cannot be."""
    if not isinstance(text, str):
        raise InvalidMessage(f"text must be a string, got {type(text).__name__}")
    text = _SURROGATE.sub("\ufffd", text.replace("\x00", ""))
    if not text.strip():
        raise InvalidMessage("text is empty")
    if len(text) > max_chars:
        raise InvalidMessage(f"text has {len(text)} characters, over MAX_TEXT_CHARS={max_chars}")
    return text
