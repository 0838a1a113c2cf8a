from django import forms

from dojo.models import SystemSettings


class SystemSettingsForm(forms.ModelForm):
    class Meta:
        model = SystemSettings
        fields = ["instance_name", "contact_email", "allow_queue_purge", "status_refresh_seconds"]
