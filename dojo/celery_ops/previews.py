"""Short previews of task arguments that never show a secret.

A preview is built from Celery's `argsrepr` / `kwargsrepr` headers (reprs, possibly cut by
Celery's saferepr). Values under keys that look secret are masked, structurally when the repr
parses as a Python literal, else with a pattern that also catches a cut repr; every configured
broker password is removed; then the text is truncated.
"""

import ast
import re
from typing import Any

from dojo.celery_ops.connection import MASK, redact

PREVIEW_CHARS = 100
SECRET_WORD = r"pass|pwd|secret|token|key|credential|auth"
SECRET_KEY = re.compile(SECRET_WORD, re.IGNORECASE)
# key: value or key=value where the key looks secret. The value is a quoted string (maybe cut
# short, so the closing quote is optional), a bare token (a number, a name), or anything else
# (a container, an object's repr), masked to the end of the text: the repr may be cut, so where
# such a value ends cannot be told.
SECRET_ITEM = re.compile(
    rf"""(?P<key>(?P<quote>['"]?)[\w.-]*(?:{SECRET_WORD})[\w.-]*(?P=quote)\s*[:=]\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[\w.+-]+(?=\s*[,)}\]]|\s*$)|.*)""",
    re.IGNORECASE | re.DOTALL,
)


def args_preview(argsrepr: object, kwargsrepr: object, limit: int = PREVIEW_CHARS) -> str:
    """`argsrepr kwargsrepr` with secrets masked, at most `limit` characters ("" when absent)."""
    parts = [mask_repr(text) for text in (argsrepr, kwargsrepr) if isinstance(text, str) and text not in ("()", "{}")]
    preview = redact(" ".join(parts))
    return preview if len(preview) <= limit else preview[: limit - 1] + "…"


def mask_repr(text: str) -> str:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return SECRET_ITEM.sub(lambda found: found["key"] + repr(MASK), text)
    return repr(_mask(value))


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: MASK if SECRET_KEY.search(str(key)) else _mask(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask(item) for item in value)
    return value
