"""Django settings: settings.dist.py, then the optional local_settings.py overrides."""

from split_settings.tools import include, optional

include("settings.dist.py", optional("local_settings.py"))
