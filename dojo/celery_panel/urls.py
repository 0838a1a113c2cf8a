from django.contrib import admin
from django.urls import path

from dojo.celery_panel import analytics, apply, bulk, dashboard, scheduled, views

app_name = "celery_panel"

# <path:> for names a user chose: task ids, worker and queue names may hold "/".
urlpatterns = [
    path("tasks/", admin.site.admin_view(views.tasks), name="tasks"),
    path("scheduled/", admin.site.admin_view(scheduled.scheduled), name="scheduled"),
    path("apply/", admin.site.admin_view(apply.apply_page), name="apply_task"),
    path("bulk/", admin.site.admin_view(bulk.bulk_page), name="bulk"),
    path("bulk/<str:operation_id>/", admin.site.admin_view(bulk.bulk_operation), name="bulk_operation"),
    path("tasks/<path:task_id>/", admin.site.admin_view(views.task_detail), name="task_detail"),
    path("workers/", admin.site.admin_view(views.workers), name="workers"),
    path("workers/<path:worker_id>/", admin.site.admin_view(views.worker_detail), name="worker_detail"),
    path("queues/", admin.site.admin_view(views.queues), name="queues"),
    path("queues/<path:queue_name>/", admin.site.admin_view(views.queue_detail), name="queue_detail"),
    path("periodic-tasks/", admin.site.admin_view(views.periodic_tasks), name="periodic_tasks"),
    path("dashboard/", admin.site.admin_view(dashboard.dashboard), name="dashboard"),
    path("analytics/", admin.site.admin_view(analytics.analytics), name="analytics"),
    path("analytics/task/", admin.site.admin_view(analytics.analytics_task), name="analytics_task"),
    path("analytics/failures/", admin.site.admin_view(analytics.analytics_failures), name="analytics_failures"),
    path("", admin.site.admin_view(views.overview), name="overview"),
    path("configuration/", admin.site.admin_view(views.configuration), name="configuration"),
]
