"""dojo.ops.redaction: broker URLs, free text and argument previews never show a secret."""

import pytest

from dojo.ops.redaction import mask_url, redact


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
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_redact_removes_the_broker_password(settings):
    settings.CELERY_BROKER_URL = "redis://:hunter2@redis:6379/0"
    assert redact("Error connecting with hunter2 to redis") == "Error connecting with **** to redis"
    settings.CELERY_BROKER_URL = "amqp://guest:p%40ss@rabbit//"
    assert redact("login p@ss refused, p%40ss") == "login **** refused, ****"
