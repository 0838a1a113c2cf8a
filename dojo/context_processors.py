from django.http import HttpRequest

from dojo.models import SystemSettings


def system_settings(request: HttpRequest) -> dict:
    """Expose the system settings row to every template as `system_settings`."""
    return {"system_settings": SystemSettings.load()}
