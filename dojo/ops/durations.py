"""Durations in words, in one place: the CLI's and the System Settings page's task limits
("12 hours", "1 hour 30 minutes") and the panel's schedules ("every 5 minutes").

The System Settings page's script takes UNITS from the page (json_script), not a copy of its own.
"""

UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def duration_words(seconds: int | None) -> str:
    """`seconds` in words ("12 hours", "1 hour 30 minutes"); "off" for no limit."""
    if not seconds:
        return "off"
    parts = []
    for unit, size in UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    return " ".join(parts)


def every(count: float, unit: str) -> str:
    """ "every minute", "every 5 minutes"."""
    count = int(count) if float(count).is_integer() else count
    return f"every {unit}" if count == 1 else f"every {count} {unit}s"


def interval_words(seconds: float) -> str:
    """An interval in the largest unit that divides it: 300 → "every 5 minutes"."""
    for unit, size in UNITS:
        if seconds >= size and seconds % size == 0:
            return every(seconds // size, unit)
    return every(seconds, "second")
