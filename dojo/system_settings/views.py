"""The System Settings page: the editable settings and the Celery panel.

The page itself makes no broker call; its JavaScript loads the Celery status from
the API after the page is shown.
"""

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin, UserPassesTestMixin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from dojo.models import SystemSettings
from dojo.ops.brokers.queues import configured_queues
from dojo.ops.durations import UNITS
from dojo.system_settings.forms import SystemSettingsForm


class SuperuserRequiredMixin(LoginRequiredMixin, UserPassesTestMixin):
    """Anonymous users go to the login page; signed-in users who are not superusers get 403."""

    def test_func(self) -> bool:
        return self.request.user.is_superuser


class SystemSettingsView(SuperuserRequiredMixin, View):
    template_name = "dojo/system_settings.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        form = SystemSettingsForm(instance=SystemSettings.load())
        return self._render(request, form)

    def post(self, request: HttpRequest) -> HttpResponse:
        form = SystemSettingsForm(request.POST, instance=SystemSettings.load())
        if form.is_valid():
            form.save()
            messages.success(request, "Settings saved.")
            return redirect("system_settings")
        return self._render(request, form, status=400)

    def _render(self, request: HttpRequest, form: SystemSettingsForm, status: int = 200) -> HttpResponse:
        context = {"form": form, "celery_queue": configured_queues()[0], "duration_units": UNITS}
        return render(request, self.template_name, context, status=status)
