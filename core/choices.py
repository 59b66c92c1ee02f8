"""A closed set of option names, said once: `Choice`, a StrEnum whose `parse` names the valid values
when a value is not one of them. Members are str, so configs keep plain JSON values."""

from __future__ import annotations

import enum
from typing import Self


class Choice(enum.StrEnum):
    """Subclass with one member per option; `parse` is the one check at the edge."""

    @classmethod
    def parse(cls, value: object, name: str | None = None) -> Self:
        """The member whose value is `value`; ValueError naming `name` (default: the class), the bad
        value and the valid ones otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown {name or cls.__name__} {value!r}; valid: {', '.join(cls)}") from None
