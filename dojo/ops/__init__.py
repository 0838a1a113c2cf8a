"""The service layer: the one place that talks to the Celery brokers and workers.

Rooms: `brokers` (the broker registry, bounded connections, one class per transport),
`fleet` (the mailbox, the status document and its cache, seen workers, processes),
`controls` (purge, pause/resume, revoke/terminate, retry, recurring-task actions, the audit
trail), `observe` (alerts, history, readiness, metrics), `read_models` (the queues table,
break down, task search, stored-result counts), `limits` (concurrency slots), and
`redaction` (every secret masked). Everything here takes and returns plain values and typed
objects, reads Django settings when called (never at import) and bounds every broker call
by ``settings.CELERY_BROKER_TIMEOUT``. It never imports the web layers (api_v2,
celery_panel) nor the worker side (dojo.worker).
"""
