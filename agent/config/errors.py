"""Configuration errors: each names the resource and the field it is about.

A control plane gets the text back as the NACK's error_detail, an operator
reads it in /config_dump and in `nodemesh` output, so it has to say which
resource and which field without a stack trace:

    cluster "outbound|6379||redis.default.svc": lb_policy: unsupported policy CLUSTER_PROVIDED
"""

from __future__ import annotations

from typing import Iterable, List


class ConfigError(Exception):
    """One invalid resource (or bootstrap section); the resource keeps its last good version."""

    def __init__(self, type_url: str, resource: str, field: str, reason: str):
        super().__init__(type_url, resource, field, reason)
        self.type_url = type_url
        self.resource = resource
        self.field = field
        self.reason = reason

    @property
    def kind(self) -> str:
        from .resources import type_name  # resources imports this module

        return type_name(self.type_url)

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f'{self.kind} "{self.resource}": {where}{self.reason}'

    def __repr__(self) -> str:
        return f"ConfigError({str(self)!r})"


class ConfigErrors(Exception):
    """Several ConfigErrors at once (a bootstrap is refused with every reason, not the first)."""

    def __init__(self, errors: Iterable[ConfigError]):
        self.errors: List[ConfigError] = list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        count = len(self.errors)
        head = f"{count} configuration error{'s' if count != 1 else ''}"
        return head + "".join(f"\n  {e}" for e in self.errors)


class FieldError(Exception):
    """Raised inside the compilers with a field path relative to the resource;
    compile_resource() adds the resource and type and turns it into a ConfigError."""

    def __init__(self, field: str, reason: str):
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def within(self, prefix: str) -> "FieldError":
        """The same error seen from an enclosing message (prefix.field)."""
        if not prefix:
            return self
        field = f"{prefix}.{self.field}" if self.field and not self.field.startswith("[") \
            else f"{prefix}{self.field}"
        return FieldError(field, self.reason)
