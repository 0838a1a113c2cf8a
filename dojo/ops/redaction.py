"""Every secret masked, in one place: what pages, API answers, log lines and the CLI show.

One rule says which keys hold secrets (`is_secret_key`); it masks settings and options
(`mask`), URL passwords, usernames that look like tokens and secret query parameters
(`mask_url`), task argument previews (`args_preview`: values under secret keys, and positional
values that look like credentials, `mask_text`), and `redact` removes every configured
broker's secrets from free text such as an exception message or a log line.

The key rule: a key is secret when one of its words (split on non-letters and camelCase) is
a secret word (password, secret, token, auth, signature, cookie, ...: the words of Django's
SafeExceptionReporterFilter that fit key names), contains one (dbpassword, accesstoken), or when
its last word is "key" (api_key, secret_access_key) except a routing or binding key.
"""

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from django.conf import settings

from dojo.ops.literals import NotALiteral, parse_literal

MASK = "****"
PREVIEW_CHARS = 100
SECRET_WORDS = frozenset(
    {
        *("pass", "pwd", "passphrase", "apikey", "auth", "authorization", "credential", "credentials"),
        *("secret", "token", "signature", "cookie", "sessionid"),
    }
)
SECRET_STEMS = ("password", "passwd", "secret", "token", "credential")  # inside a longer word too
HARMLESS_KEY_WORDS = frozenset({"routing", "binding"})  # routing_key, binding_key: part of the topology
# A URL's user without a password is a login name (guest, default) or a token (rediss://TOKEN@host).
LOGIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,15}")
# Credentials that need no key to be recognised: a JWT, well-known token prefixes (GitHub, Slack,
# Stripe, AWS access keys), a private key block.
TOKEN_SHAPE = re.compile(
    r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}|(?:ghp|gho|ghs|github_pat|xox[abpr]|sk_live|rk_live)_?[\w-]{10,}"
    r"|AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
# key: value or key=value, in a repr that may be cut short. The value is a quoted string (maybe
# cut, so the closing quote is optional), a bare token (a number, a name), or anything else (a
# container, an object's repr), taken to the end of the text: where a cut value ends cannot be told.
KEY_ITEM = re.compile(
    r"""(?P<key>(?P<quote>['"]?)(?P<name>[\w.-]+)(?P=quote)\s*[:=]\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[\w.+-]+(?=\s*[,)}\]]|\s*$)|.*)""",
    re.DOTALL,
)


def _words(key: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower())


def is_secret_key(key: str) -> bool:
    """True for keys that name a secret: see the module docstring for the rule."""
    words = _words(key)
    if any(word in SECRET_WORDS or any(stem in word for stem in SECRET_STEMS) for word in words):
        return True
    return bool(words) and words[-1] == "key" and not (len(words) > 1 and words[-2] in HARMLESS_KEY_WORDS)


def mask(value: Any, key: str = "") -> Any:
    """`value` with secrets masked at any depth: values under secret keys, and URL passwords."""
    if key and is_secret_key(key) and value not in (None, "", {}, []):
        return MASK
    if isinstance(value, dict):
        return {k: mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_url(url: str) -> str:
    """Return `url` with any password (userinfo or secret query parameter) replaced by ``****``.

    Handles kombu's failover lists (``url1;url2``).
    """
    return ";".join(_mask_one(part) for part in url.split(";"))


def _mask_one(url: str) -> str:
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return MASK  # unparseable: show nothing rather than risk a secret
    query_secret = any(is_secret_key(key) for key, _ in parse_qsl(parts.query))
    user_is_token = bool(username) and password is None and not LOGIN_NAME.fullmatch(unquote(username))
    if not password and not query_secret and not user_is_token:
        return url
    netloc = parts.netloc
    userinfo, _, hostinfo = netloc.rpartition("@")
    if password:
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostinfo}"
    elif user_is_token:
        netloc = f"{MASK}@{hostinfo}"
    query = parts.query
    if query_secret:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if is_secret_key(k) else v) for k, v in pairs], safe="*")
    masked = f"{parts.scheme}://{netloc}{parts.path}"
    return masked + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def redact(text: str) -> str:
    """Remove every configured broker's secrets (passwords, token usernames, secret query values)
    from `text` (an exception message, a log line, say)."""
    for secret in _broker_secrets():
        text = text.replace(secret, MASK)
    return text


def mask_text(text: str) -> str:
    """A string with no key to tell by: a URL with its secrets masked, a credential in a
    well-known token shape masked whole, anything else as it is."""
    if "://" in text:
        return mask_url(text)
    return MASK if TOKEN_SHAPE.search(text) else text


def _broker_secrets() -> set[str]:
    secrets = set()
    for part in ";".join(_configured_broker_urls()).split(";"):
        try:
            parts = urlsplit(part)
            password, username = parts.password, parts.username
        except ValueError:
            continue
        found = [password] if password else []
        if username and password is None and not LOGIN_NAME.fullmatch(unquote(username)):
            found.append(username)
        found += [value for key, value in parse_qsl(parts.query) if is_secret_key(key) and value]
        secrets.update(item for secret in found for item in (secret, unquote(secret)))
    return secrets


def _configured_broker_urls() -> list[str]:
    """Every broker URL of the settings (the registry, dojo.ops.brokers.registry, builds on this
    module, so it reads them itself)."""
    extra = settings.CELERY_BACKENDS or {}
    return [settings.CELERY_BROKER_URL, *(spec["broker_url"] for spec in extra.values())]


def args_preview(argsrepr: object, kwargsrepr: object, limit: int = PREVIEW_CHARS) -> str:
    """`argsrepr kwargsrepr` with secrets masked, at most `limit` characters ("" when absent).

    Celery's reprs (possibly cut by saferepr) are masked structurally when they parse as a
    literal, else by pattern, which also catches a cut repr; then broker passwords are removed.
    """
    parts = [mask_repr(text) for text in (argsrepr, kwargsrepr) if isinstance(text, str) and text not in ("()", "{}")]
    preview = redact(" ".join(parts))
    return preview if len(preview) <= limit else preview[: limit - 1] + "…"


def mask_repr(text: str) -> str:
    try:
        value = parse_literal(text)
    except NotALiteral:
        return TOKEN_SHAPE.sub(MASK, KEY_ITEM.sub(_mask_item, text))
    return repr(_mask_values(value))


def _mask_item(found: re.Match) -> str:
    if not is_secret_key(found["name"]):
        return found["key"] + (KEY_ITEM.sub(_mask_item, found["value"]) if found["value"] else "")
    return found["key"] + repr(MASK)


def _mask_values(value: Any) -> Any:
    """Like `mask`, for a decoded repr: masks values under secret keys and values that look like
    credentials (positional arguments have no key), keeps types."""
    if isinstance(value, dict):
        return {key: MASK if is_secret_key(str(key)) else _mask_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask_values(item) for item in value)
    return mask_text(value) if isinstance(value, str) else value
