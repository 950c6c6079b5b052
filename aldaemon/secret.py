"""A string that never shows itself.

The API token and the webhook secret travel through config objects, tracebacks and log
contexts; wrapping them means a stray `repr()` or f-string prints `Secret('***')`.
Only `reveal()` gives the value, and only the gateway and the webhook check call it.
"""

from __future__ import annotations

import hmac


class Secret:
    __slots__ = ("_value", "source")

    def __init__(self, value: str, *, source: str = "inline") -> None:
        self._value = value
        self.source = source  # where it came from, safe to show: "token_file /etc/..."

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str) -> bool:
        """Constant-time comparison, for checking a presented secret."""
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))
