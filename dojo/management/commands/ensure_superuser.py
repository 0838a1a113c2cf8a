import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the superuser if it does not exist. The password comes from DD_ADMIN_PASSWORD, "
        "or is generated and printed once."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options) -> None:
        users = get_user_model().objects
        if users.filter(username=username).exists():
            self.stdout.write(f"Superuser {username!r} exists; its password is unchanged.")
            return
        password = os.environ.get("DD_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.create_superuser(username=username, email="", password=password)
        if "DD_ADMIN_PASSWORD" in os.environ:
            self.stdout.write(f"Created superuser {username!r} with the password from DD_ADMIN_PASSWORD.")
        else:
            self.stdout.write(f"Created superuser {username!r} with password: {password}")
