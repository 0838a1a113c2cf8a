from django.apps import AppConfig


class DojoConfig(AppConfig):
    name = "dojo"
    verbose_name = "dojo"
