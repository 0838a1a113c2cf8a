"""A stored result whose args, kwargs, result, meta or traceback is an odd literal or odd text
answers 200 on every page and API answer that shows it (issue "every request answers", item 5).

Hypothesis (fixed seed, bounded examples, every odd text once as an explicit example) writes
TaskResult rows shaped like django-celery-results' (argsrepr text JSON-encoded, or the raw column
text), then a superuser and a staff user without django_celery_results.view_taskresult fetch the
task list, the task's page, the admin's TaskResult pages and the API's task search and history.
Each example runs in a savepoint that is rolled back, so no fixture is shared across examples.

`{[1]: 2}` (TypeError in literal_eval) was already caught. Before this change the test failed with
500s: on the task's page for `{(1, 2): 3}` and `{1: 'a', 'b': 2}` (json.dumps of the parsed value),
for a hex literal past Python's int-str limit and a JSON-escaped lone surrogate (UTF-8 encoding of
the page), and on both pages for JSON nested past the recursion limit and for a meta whose
delivery_info is not an object.
"""

import json
from dataclasses import dataclass

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django_celery_results.models import TaskResult
from hypothesis import example, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from dojo.ops.literals import SHOWN_CHARS
from dojo.permissions import TASK_DATA_HIDDEN
from unittests.conftest import make_user

TRACEBACK_MARKER = "odd-traceback-3f9a"
TASK_ID = "odd-stored-value"
# What Django's technical 500 page and its plain one show; a page that answers never does.
ERROR_PAGE_MARKS = ("Exception Value:", "Server Error (500)", "Request Method:")

ODD_TEXTS = [
    "{[1]: 2}",
    "{(1, 2): 3}",
    "{1: 'a', 'b': 2}",
    "{None: 1, 2: 3, (1,): 4}",
    "1e999",
    "-1e999",
    "[1e999, -1e999, 1e999 - 1e999]",
    "1j",
    "[1j, -2.5j, (1+2j)]",
    "{1, 2}",
    "set()",
    "b'\\xff'",
    "[b'\\xff\\x00', b'']",
    "[" * 200 + "]" * 200,
    "[" * 199 + "1" + "]" * 199,
    "{'k': " * 150 + "1" + "}" * 150,
    "9" * 4300,
    "9" * 5000,
    "-" + "9" * 5000,
    "10**5000",
    "0x" + "f" * 5000,
    "[0x" + "f" * 5000 + "]",
    "{'big': 0x" + "f" * 5000 + "}",
    "Ellipsis",
    "...",
    "[...]",
    "None",
    "[None]",
    "[[",
    "]]",
    "{'a': [1, 2",
    "'unterminated",
    "(1, 2",
    "'\\ud800'",
    "['\\udc80', '\\ud83d']",
    "{'\\udfff': 1}",
    "'\\x00'",
    "'a\\x00b'",
    '"\\ud800"',
    '["\\udc00", {"k": "\\ud800"}]',
    '{"a": true, "b": null, "c": NaN}',
    "[Infinity, -Infinity, NaN]",
    '"\\u0000"',
    '{"delivery": {"x": [1, {"y": false}]}}',
    "[" * 5000 + "]" * 5000,
    *("[" * depth + "]" * depth for depth in (201, 900, 950, 980, 990, 995)),
    '{"a":' * 3000 + "1" + "}" * 3000,
    "<object object at 0x7f0000000000>",
    "Decimal('1.5')",
    "__import__('os').system('false')",
    "\\xff\\xfe not utf-8",
    "x" * 200_000,
    "'" + "x" * 200_000 + "'",
    "()",
    "{}",
    "''",
    '""',
    "",
]
# Text the database cannot hold as such (lone surrogates; NUL on PostgreSQL) is stored JSON-escaped.
SURROGATES = st.characters(categories=["Cs"])
RANDOM_TEXT = st.text(st.one_of(st.characters(), SURROGATES), max_size=300)

LITERAL_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(),
    st.text(st.one_of(st.characters(), SURROGATES), max_size=20),
    st.binary(max_size=20),
    st.just(Ellipsis),
)
HASHABLE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5), st.tuples(st.integers())
)
LITERALS = st.recursive(
    LITERAL_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.sets(HASHABLE, max_size=4),
        st.dictionaries(HASHABLE, inner, max_size=4),
    ),
    max_leaves=20,
)
TEXTS = st.one_of(st.sampled_from(ODD_TEXTS), RANDOM_TEXT, LITERALS.map(repr))
ODD_METAS = [
    None,
    "{}",
    "not json",
    '{"delivery_info": [1]}',
    '{"delivery_info": "x", "queue": null}',
    '{"queue": [1, 2], "retries": "many"}',
    '{"backend": ["x"], "retries": {"a": 1}}',
    '{"children": [], "delivery_info": {"routing_key": ["q"]}}',
    "[1, 2]",
    '"a string"',
    "[" * 5000 + "]" * 5000,
]
STATES = ["SUCCESS", "FAILURE", "RETRY", "STARTED"]


def stored(text: str | None, how: str) -> str | None:
    """The column text: JSON-encoded as django-celery-results stores argsrepr, or the text as is."""
    if text is None:
        return None
    raw_ok = how == "raw" and not any("\ud800" <= char <= "\udfff" for char in text)
    if raw_ok and not (connection.vendor == "postgresql" and "\x00" in text):
        return text
    return json.dumps(text)


COLUMNS = st.builds(stored, st.one_of(st.none(), TEXTS), st.sampled_from(["json", "raw"]))


@dataclass(frozen=True)
class Users:
    superuser: Client
    staff: Client
    superuser_api: APIClient
    staff_api: APIClient


def text_of(response) -> str:
    assert response.status_code == 200, (response.status_code, response.content[:2000])
    text = response.content.decode()
    for mark in ERROR_PAGE_MARKS:
        assert mark not in text, f"{response.request['PATH_INFO']} shows an error page"
    return text


@pytest.mark.django_db
def test_odd_stored_values_never_break_a_page(filesystem_only, settings, monkeypatch):
    settings.CELERY_RESULT_BACKEND = "django-db"
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"celery": "100000/min", "celery_controls": "100000/min"})
    root, staff = make_user("root", superuser=True), make_user("staff", staff=True)
    users = Users(Client(), Client(), APIClient(), APIClient())
    users.superuser.force_login(root)
    users.staff.force_login(staff)
    users.superuser_api.force_authenticate(root)
    users.staff_api.force_authenticate(staff)
    pages = {
        "tasks": reverse("celery_panel:tasks"),
        "failures": reverse("celery_panel:tasks") + "?filter=failure",
        "task_detail": reverse("celery_panel:task_detail", args=[TASK_ID]),
        "admin_changelist": reverse("admin:django_celery_results_taskresult_changelist"),
    }
    api = {"search": reverse("celery_tasks"), "history": reverse("celery_history")}

    @seed(20261202)
    @hypothesis_settings(max_examples=60, deadline=None, database=None)
    @given(
        args=COLUMNS,
        kwargs=COLUMNS,
        result=COLUMNS,
        meta=st.sampled_from(ODD_METAS),
        status=st.sampled_from(STATES),
        traceback=st.one_of(st.none(), RANDOM_TEXT.map(lambda text: stored(text, "raw"))),
    )
    def check(args, kwargs, result, meta, status, traceback) -> None:
        with transaction.atomic():
            row = TaskResult.objects.create(
                task_id=TASK_ID,
                task_name="dojo.tasks.add",
                status=status,
                task_args=args,
                task_kwargs=kwargs,
                result=result,
                meta=meta,
                traceback=None if traceback is None else f"{TRACEBACK_MARKER}\n{traceback}",
            )
            admin_change = reverse("admin:django_celery_results_taskresult_change", args=[row.pk])
            seen = {name: text_of(users.superuser.get(url)) for name, url in pages.items()}
            text_of(users.superuser.get(admin_change))
            found = json.loads(text_of(users.superuser_api.get(api["search"], {"name": "dojo.tasks.add"})))
            assert [(item["id"], item["args"], item["kwargs"]) for item in found["results"]] == [
                (TASK_ID, args, kwargs)
            ]
            text_of(users.superuser_api.get(api["search"], {"arg": "x", "state": status}))
            text_of(users.superuser_api.get(api["history"]))
            assert TASK_ID in seen["tasks"] and 'id="task-args"' in seen["task_detail"]
            if traceback is not None:
                assert TRACEBACK_MARKER in seen["task_detail"]

            for name in ("tasks", "task_detail"):
                hidden = text_of(users.staff.get(pages[name]))
                assert TASK_DATA_HIDDEN in hidden and TASK_ID in hidden
                assert 'id="task-args"' not in hidden and "<th>Args</th>" not in hidden
                assert TRACEBACK_MARKER not in hidden
            for url in api.values():
                assert users.staff_api.get(url).status_code == 403
            transaction.set_rollback(True)

    # Every odd text once in each shape, besides what Hypothesis draws.
    for number, text in enumerate(ODD_TEXTS):
        check = example(
            args=stored(text, "json"),
            kwargs=stored(text, "raw"),
            result=stored(text, ("json", "raw")[number % 2]),
            meta=ODD_METAS[number % len(ODD_METAS)],
            status=STATES[number % len(STATES)],
            traceback=stored(text, "raw"),
        )(check)
    check()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("column", "shown"),
    [
        (json.dumps("{(1, 2): 3}"), "{(1, 2): 3}"),  # a literal JSON cannot write: its repr
        (json.dumps("{1: 'a', 'b': 2}"), "{1: &#x27;a&#x27;, &#x27;b&#x27;: 2}"),
        (json.dumps("0x" + "f" * 5000), "0x" + "f" * 5000),  # a JSON string: itself
        (json.dumps("[0x" + "f" * 20_000 + "]"), "[0x" + "f" * (SHOWN_CHARS - 4) + "…"),  # the stored text, cut
        ('"\\ud800"', "&quot;\\ud800&quot;"),  # a lone surrogate: the stored JSON text
        (json.dumps("['\\ud800']"), "[\n  &quot;\\ud800&quot;\n]"),  # JSON escapes it
        ("[" * 300 + "]" * 300, "[" * 300 + "]" * 300),  # deeper than MAX_DEPTH: the text
    ],
)
def test_a_value_a_page_cannot_show_is_shown_as_its_text(column, shown, filesystem_only):
    TaskResult.objects.create(task_id=TASK_ID, task_name="dojo.tasks.add", status="SUCCESS", task_args=column)
    client = Client()
    client.force_login(make_user("root", superuser=True))
    page = text_of(client.get(reverse("celery_panel:task_detail", args=[TASK_ID])))
    assert f'<pre class="payload" id="task-args">{shown}</pre>' in page
