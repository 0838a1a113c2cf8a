"""Reading Celery's argument representations back as values, without running any code.

Workers send `argsrepr`/`kwargsrepr` (Python reprs, possibly cut short by saferepr), and
django-celery-results stores them; the previews, the task pages and retry all read them here.
"""

import ast
from typing import Any

# What ast.literal_eval raises on text that is not a literal (or is too deep or too large).
LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)
# Characters of a text shown as it is stored, because it is not a value a page can show.
SHOWN_CHARS = 10_000
# Containers in containers a page shows as a value (Python's parser stops at 200 too).
MAX_DEPTH = 200


class NotALiteral(ValueError):
    """The text is not a Python literal (a cut repr, an object's repr, code)."""


def parse_literal(text: str) -> Any:
    """The value `text` is the literal of; NotALiteral otherwise, also for a value that cannot be
    written back as text (a hex int past Python's int-str limit: its repr raises ValueError)."""
    try:
        value = ast.literal_eval(text)
        repr(value)
    except LITERAL_ERRORS as exc:
        raise NotALiteral(f"{text[:100]!r} is not a literal") from exc
    return value


def showable(value: Any) -> bool:
    """Whether a page can show `value`: nested at most MAX_DEPTH deep (str() of a deeper one may
    meet the recursion limit in a template), its text can be made (no int past the int-str limit)
    and encodes as UTF-8 (no lone surrogate)."""
    if not _nested_within(value, MAX_DEPTH):
        return False
    try:
        str(value).encode("utf-8")
    except (ValueError, RecursionError, MemoryError):  # UnicodeEncodeError is a ValueError
        return False
    return True


def _nested_within(value: Any, depth: int) -> bool:
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            children = item
        else:
            continue
        if level > depth:
            return False
        pending.extend((child, level + 1) for child in children)
    return True


def shown_text(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` as a page shows it: at most `limit` characters, lone surrogates as \\udxxx escapes."""
    cut = text if len(text) <= limit else text[: limit - 1] + "…"
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def literal_or_text(value: Any) -> Any:
    """A repr string as its value when it is a literal a page can show, else as shown_text;
    anything else unchanged."""
    if isinstance(value, str):
        try:
            parsed = parse_literal(value)
        except NotALiteral:
            return shown_text(value)
        return parsed if showable(parsed) else shown_text(value)
    return value
