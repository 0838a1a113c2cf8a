from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from dojo.api_v2.analytics import (
    CeleryFailureGroupsView,
    CeleryTaskAnalyticsView,
    CeleryTaskDetailAnalyticsView,
    CeleryThroughputView,
)
from dojo.api_v2.bulk import CeleryBulkCancelView, CeleryBulkOperationView, CeleryBulkPreviewView, CeleryBulkView
from dojo.api_v2.controls import (
    CeleryQueuePauseView,
    CeleryQueuePurgeTaskView,
    CeleryQueuePurgeView,
    CeleryQueueResumeView,
    CeleryTaskApplyView,
    CeleryTaskRetryView,
    CeleryTaskRevokeManyView,
    CeleryTaskRevokeView,
    CeleryTaskTerminateView,
)
from dojo.api_v2.detections import CeleryDetectionsView, CeleryLostTaskRetryView
from dojo.api_v2.health import HealthLiveView, HealthReadyView
from dojo.api_v2.periodic import PeriodicTaskEnabledView, PeriodicTaskRunView
from dojo.api_v2.processes import CeleryProcessesView
from dojo.api_v2.queues import CeleryQueueBreakdownView, CeleryQueuesView
from dojo.api_v2.semaphores import CelerySemaphoresView
from dojo.api_v2.views import (
    CeleryHistoryView,
    CeleryStatusView,
    CeleryTaskSearchView,
)

urlpatterns = [
    path("celery/status/", CeleryStatusView.as_view(), name="celery_status"),
    path("celery/queue/purge/", CeleryQueuePurgeView.as_view(), name="celery_queue_purge"),
    path("celery/queue/purge-task/", CeleryQueuePurgeTaskView.as_view(), name="celery_queue_purge_task"),
    path("celery/queues/pause/", CeleryQueuePauseView.as_view(), name="celery_queue_pause"),
    path("celery/queues/resume/", CeleryQueueResumeView.as_view(), name="celery_queue_resume"),
    path("celery/tasks/apply/", CeleryTaskApplyView.as_view(), name="celery_task_apply"),
    path("celery/tasks/retry/", CeleryTaskRetryView.as_view(), name="celery_task_retry"),
    path("celery/tasks/revoke/", CeleryTaskRevokeView.as_view(), name="celery_task_revoke"),
    path("celery/tasks/revoke-many/", CeleryTaskRevokeManyView.as_view(), name="celery_task_revoke_many"),
    path("celery/tasks/terminate/", CeleryTaskTerminateView.as_view(), name="celery_task_terminate"),
    path("celery/bulk/", CeleryBulkView.as_view(), name="celery_bulk"),
    path("celery/bulk/preview/", CeleryBulkPreviewView.as_view(), name="celery_bulk_preview"),
    # Any text (newlines and slashes too): an id that is not a number is the API's JSON 404, not
    # Django's page (cancel/ first).
    re_path(
        r"^celery/bulk/(?P<operation_id>[\s\S]+)/cancel/$", CeleryBulkCancelView.as_view(), name="celery_bulk_cancel"
    ),
    re_path(
        r"^celery/bulk/(?P<operation_id>[\s\S]+)/$", CeleryBulkOperationView.as_view(), name="celery_bulk_operation"
    ),
    path("celery/queues/", CeleryQueuesView.as_view(), name="celery_queues"),
    path("celery/queues/breakdown/", CeleryQueueBreakdownView.as_view(), name="celery_queue_breakdown"),
    path("celery/processes/", CeleryProcessesView.as_view(), name="celery_processes"),
    path("celery/semaphores/", CelerySemaphoresView.as_view(), name="celery_semaphores"),
    path("celery/tasks/", CeleryTaskSearchView.as_view(), name="celery_tasks"),
    path("celery/history/", CeleryHistoryView.as_view(), name="celery_history"),
    path("celery/periodic-tasks/run/", PeriodicTaskRunView.as_view(), name="celery_periodic_run"),
    path("celery/periodic-tasks/enabled/", PeriodicTaskEnabledView.as_view(), name="celery_periodic_enabled"),
    path("celery/analytics/tasks/", CeleryTaskAnalyticsView.as_view(), name="celery_analytics_tasks"),
    path("celery/analytics/task/", CeleryTaskDetailAnalyticsView.as_view(), name="celery_analytics_task"),
    path("celery/analytics/failures/", CeleryFailureGroupsView.as_view(), name="celery_analytics_failures"),
    path("celery/analytics/throughput/", CeleryThroughputView.as_view(), name="celery_analytics_throughput"),
    path("celery/analytics/detections/", CeleryDetectionsView.as_view(), name="celery_detections"),
    path(
        "celery/analytics/detections/lost-tasks/retry/",
        CeleryLostTaskRetryView.as_view(),
        name="celery_lost_task_retry",
    ),
    path("celery/health/live/", HealthLiveView.as_view(), name="celery_health_live"),
    path("celery/health/ready/", HealthReadyView.as_view(), name="celery_health_ready"),
    path("oa3/schema/", SpectacularAPIView.as_view(), name="schema_oa3"),
    path("oa3/swagger-ui/", SpectacularSwaggerView.as_view(url_name="schema_oa3"), name="swagger-ui_oa3"),
]
