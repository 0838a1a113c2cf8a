"""dojo.ops.redaction: broker URLs, free text and argument previews never show a secret."""

import pytest

from dojo.ops.redaction import args_preview, mask_url, redact


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:hunter2@redis:6379/0", "redis://:****@redis:6379/0"),
        ("redis://default:hunter2@redis:6379/0", "redis://default:****@redis:6379/0"),
        ("amqp://guest:p%40ss@rabbit:5672//", "amqp://guest:****@rabbit:5672//"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("filesystem://localhost/", "filesystem://localhost/"),
        ("sqs://?access_key=AK&secret_key=SK", "sqs://?access_key=****&secret_key=****"),
        ("redis://:a@one:6379/0;redis://:b@two:6379/0", "redis://:****@one:6379/0;redis://:****@two:6379/0"),
        ("redis://:pw@[::1:6379/0", "****"),
        ("rediss://Tk3nUserAbc123xyz789@host:6380/0", "rediss://****@host:6380/0"),  # a token as the user
        ("amqp://guest@rabbit//", "amqp://guest@rabbit//"),  # a login name is not a secret
        ("redis://host/0?access_token=abc&db=1", "redis://host/0?access_token=****&db=1"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_redact_removes_the_broker_password(settings):
    settings.CELERY_BROKER_URL = "redis://:hunter2@redis:6379/0"
    assert redact("Error connecting with hunter2 to redis") == "Error connecting with **** to redis"
    settings.CELERY_BROKER_URL = "amqp://guest:p%40ss@rabbit//"
    assert redact("login p@ss refused, p%40ss") == "login **** refused, ****"


@pytest.mark.parametrize(
    ("argsrepr", "preview"),
    [
        ("('ghp_a1B2c3D4e5F6g7H8i9J0k1L2', 'plain')", "('****', 'plain')"),
        ("('eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlMTIz',)", "('****',)"),
        ("('redis://:pw@h/0', 7)", "('redis://:****@h/0', 7)"),
        ("('AKIAIOSFODNN7EXAMPLE', <object at 0x1>", "('****', <object at 0x1>"),  # cut short, not a literal
    ],
)
def test_positional_credentials_are_masked_by_their_shape(argsrepr, preview):
    """Positional arguments have no key to tell a secret by; credentials in a known shape are masked."""
    assert args_preview(argsrepr, None) == preview
