"""The audit trail of Celery controls: one row per action asked for, whatever came of it."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from dojo.models import CeleryAuditLog

Result = CeleryAuditLog.Result


def record_action(
    user: AbstractBaseUser | AnonymousUser | None,
    backend: str,
    action: str,
    target: str,
    result: str,
    counts: dict[str, int] | None = None,
    detail: str = "",
) -> CeleryAuditLog:
    """Write the audit row of `action` on `target`; `result` is one of CeleryAuditLog.Result."""
    authenticated = user is not None and user.is_authenticated
    return CeleryAuditLog.objects.create(
        user=user if authenticated else None,
        username=user.get_username() if authenticated else "",
        backend=backend,
        action=action,
        target=target[:255],
        result=result,
        counts=counts or {},
        detail=detail,
    )
