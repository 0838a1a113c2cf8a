"""Request fields whose schema is exactly what they accept."""

from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from rest_framework import serializers

# DRF refuses NUL in every CharField; as a RegexValidator the schema says so too (a `pattern`). It
# does not match "": drf-spectacular documents a blank-allowing field as oneOf this or "", and DRF
# takes an allowed "" without running validators.
NO_NUL = RegexValidator(r"^[^\x00]+$", ProhibitNullCharactersValidator.message)
# A name holds at least one character that is not white space (DRF trims it: "\r" would read as a
# blank name) and no NUL; one pattern, so the schema says both.
NAME = RegexValidator(r"^[^\x00]*[^\s\x00][^\x00]*$", "A name needs a character that is not white space, and no NUL.")


class TextField(serializers.CharField):
    """A CharField whose schema says it refuses NUL."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.validators = [NO_NUL, *(v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator))]


class NameField(TextField):
    """A non-blank JSON string without NUL (a queue, task or key name): DRF's CharField would also
    take 0 or true and turn them into "0" and "True", which the schema's `type: string` does not allow."""

    def __init__(self, **kwargs) -> None:
        super().__init__(min_length=1, **kwargs)
        self.validators = [NAME if validator is NO_NUL else validator for validator in self.validators]

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
