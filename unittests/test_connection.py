"""Masking of broker URLs and the filesystem broker clean-up task."""

import os
import time

import pytest
from dojo.tasks import prune_broker_files

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


def test_prune_broker_files_removes_only_stale_control_messages(filesystem_only, settings):
    settings.CELERY_BROKER_URL = filesystem_only.url
    data = filesystem_only.tmp / "broker" / "data"
    old = time.time() - 3600
    stale_reply = data / "1_a.1234.reply.celery.pidbox.msg"
    stale_task = data / "2_b.celery.msg"
    fresh_reply = data / "3_c.1234.reply.celery.pidbox.msg"
    for path in (stale_reply, stale_task, fresh_reply):
        path.write_text("{}")
    os.utime(stale_reply, (old, old))
    os.utime(stale_task, (old, old))

    assert prune_broker_files(max_age_seconds=600) == 1
    assert sorted(p.name for p in data.iterdir()) == [stale_task.name, fresh_reply.name]


def test_prune_broker_files_does_nothing_on_other_brokers(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    assert prune_broker_files() == 0
