"""Reading Celery's argument representations back as values, without running any code.

Workers send `argsrepr`/`kwargsrepr` (Python reprs, possibly cut short by saferepr), and
django-celery-results stores them; the previews, the task pages and retry all read them here.
"""

import ast
from typing import Any

# What ast.literal_eval raises on text that is not a literal (or is too deep or too large).
LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)


class NotALiteral(ValueError):
    """The text is not a Python literal (a cut repr, an object's repr, code)."""


def parse_literal(text: str) -> Any:
    """The value `text` is the literal of; NotALiteral otherwise."""
    try:
        return ast.literal_eval(text)
    except LITERAL_ERRORS as exc:
        raise NotALiteral(f"{text[:100]!r} is not a literal") from exc


def literal_or_text(value: Any) -> Any:
    """A repr string as its value when it is a literal; anything else unchanged."""
    if isinstance(value, str):
        try:
            return parse_literal(value)
        except NotALiteral:
            return value
    return value
