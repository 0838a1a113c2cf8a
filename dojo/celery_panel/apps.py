from django.apps import AppConfig


class CeleryPanelConfig(AppConfig):
    name = "dojo.celery_panel"
    label = "celery_panel"
    verbose_name = "Celery"
