"""The `backend` parameter: blank means the main broker everywhere, unknown is a 400 naming it.

A schema fuzzer found `GET /api/v2/celery/history/?backend=` answering 500 (DRF returns "" for a
blank field without converting it): this test failed on that code.
"""

import pytest
from django.urls import reverse


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["celery_history", "celery_tasks"])
def test_a_blank_backend_is_the_main_broker(api, name, filesystem_only):
    answer = api.get(reverse(name), {"backend": ""})
    assert answer.status_code == 200, answer.content
    unknown = api.get(reverse(name), {"backend": "nope"})
    assert unknown.status_code == 400 and "backend" in unknown.json()
