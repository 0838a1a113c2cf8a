"""Task and queue pages for names with "/", spaces, unicode or 200 characters (issue 12, item 5).

The panel's URLs used `<str:>`, which stops at "/": such a task's or queue's page was a 404 and
`reverse()` raised NoReverseMatch while rendering a list that linked to it (a 500). The "/" case
failed on that code; the others guard the rest of the name rules.
"""

import pytest
from django.test import Client
from django.urls import reverse
from django_celery_results.models import TaskResult

from unittests.conftest import make_user

ODD_NAMES = ["team/exports", "with space", "ünïcødé-队列", "q" * 200]


@pytest.mark.django_db
@pytest.mark.parametrize("name", ODD_NAMES)
def test_pages_of_odd_names_render(name, filesystem_only, settings):
    settings.CELERY_TASK_QUEUES = {**(settings.CELERY_TASK_QUEUES or {}), name: {}}
    TaskResult.objects.create(task_id=f"id:{name}", task_name="dojo.tasks.add", status="SUCCESS")
    client = Client()
    client.force_login(make_user("root", superuser=True))

    queue = client.get(reverse("celery_panel:queue_detail", args=[name]))
    task = client.get(reverse("celery_panel:task_detail", args=[f"id:{name}"]))
    listing = client.get(reverse("celery_panel:tasks"))
    queues = client.get(reverse("celery_panel:queues"))

    for response in (queue, task, listing, queues):
        assert response.status_code == 200
    assert name in queue.content.decode() and name in task.content.decode()
    assert reverse("celery_panel:task_detail", args=[f"id:{name}"]) in listing.content.decode()
