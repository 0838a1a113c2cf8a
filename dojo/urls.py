from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from dojo.api_v2.metrics import MetricsView
from dojo.system_settings.views import SystemSettingsView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="system_settings"), name="home"),
    path("system_settings", SystemSettingsView.as_view(), name="system_settings"),
    path("login", auth_views.LoginView.as_view(), name="login"),
    path("logout", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/celery/", include("dojo.celery_panel.urls")),
    path("admin/", admin.site.urls),
    path("api/v2/", include("dojo.api_v2.urls")),
    path("metrics", MetricsView.as_view(), name="metrics"),
]
