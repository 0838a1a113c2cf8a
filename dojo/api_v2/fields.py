"""Request fields whose schema is exactly what they accept."""

from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from rest_framework import serializers

# DRF refuses NUL in every CharField; as a RegexValidator the schema says so too (a `pattern`). It
# does not match "": drf-spectacular documents a blank-allowing field as oneOf this or "", and DRF
# takes an allowed "" without running validators.
NO_NUL = RegexValidator(r"^[^\x00]+$", ProhibitNullCharactersValidator.message)
# The characters DRF's trim (str.strip) removes, spelled out: a schema's `\s` (ECMAScript) differs from
# Python's (it leaves out \x1c-\x1f and \x85 and adds \ufeff).
STRIPPED = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A name holds at least one character DRF does not trim ("\r" alone would read as a blank name) and
# no NUL; one pattern, so the schema says both.
NAME = RegexValidator(
    rf"^[^\x00]*[^{STRIPPED}\x00][^\x00]*$", "A name needs a character that is not white space, and no NUL."
)


class TextField(serializers.CharField):
    """A CharField whose schema says it refuses NUL."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.validators = [NO_NUL, *(v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator))]

    def to_internal_value(self, data: object) -> str:
        # maxLength counts what was sent, as the schema does (DRF would count it once trimmed).
        if isinstance(data, str) and self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


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
