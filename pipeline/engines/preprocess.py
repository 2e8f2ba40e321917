"""Tweet preprocessing the cardiffnlp Twitter models were trained with (their model card's rule).

The model card replaces every whitespace-separated token that starts with `@` (and is longer than
the `@` alone) by `@user`, and every token that starts with `http` by `http`: the training tweets
were anonymised that way, so unseen handles and links would otherwise be noise to the model.

The card splits on single spaces only; here any whitespace separates tokens and is kept as it was,
so `"hi\\n@bob"` becomes `"hi\\n@user"` instead of being left alone.
"""

from __future__ import annotations

import re

_MENTION = re.compile(r"(?<!\S)@\S+")
_LINK = re.compile(r"(?<!\S)http\S*")


def preprocess(text: str) -> str:
    """`text` with user mentions as `@user` and links as `http`, as the model card asks."""
    return _LINK.sub("http", _MENTION.sub("@user", text))
