"""Checks on untrusted input, shared by the request models and the HTTP edge.

Everything here refuses with a ``ValueError`` whose message says what is wrong, so
pydantic reports it under the field's name (a 422 over HTTP). Nothing here looks
at settings: allow-lists of recipients are checked at the edge, where they are.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: most ``notify`` entries one task may carry
MAX_NOTIFY = 5
#: most tags one task may carry, and the longest tag
MAX_TAGS, MAX_TAG_LENGTH = 20, 64
#: deepest nesting of lists and objects in parameters (and any JSON body)
MAX_DEPTH = 32

# RFC 5322 dot-atom local part (no quoted strings, no comments); an LDH domain
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_SEPARATORS = "\u2028\u2029\u0085"


def has_control(text: str) -> bool:
    """True if ``text`` holds a C0/C1 control, a line or paragraph separator."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 or c in _SEPARATORS for c in text)


def has_lone_surrogate(text: str) -> bool:
    """True if ``text`` cannot be encoded as UTF-8 (a lone surrogate from ``\\ud800``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_text(text: str, what: str = "text") -> str:
    """A single line of printable text (a name, a key), or ValueError."""
    if has_lone_surrogate(text):
        raise ValueError(f"{what} holds a lone surrogate (not valid Unicode text)")
    if has_control(text):
        raise ValueError(f"{what} holds control characters or line separators")
    return text


def normalise_address(entry: str) -> str:
    """An email address in canonical form: no ``mailto:``, the domain lower-cased.

    Raises:
        ValueError: anything but a plain ``local@domain`` address (no display
        names, angle brackets, commas, quotes, spaces, control characters, line
        or paragraph separators, nor more than one address).
    """
    if has_lone_surrogate(entry) or has_control(entry):
        raise ValueError("notify entries are single-line email addresses without control "
                         "characters or line separators")
    address = entry.strip()
    if address[:7].lower() == "mailto:":
        address = address[7:]
    if len(address) > 254:
        raise ValueError("an email address is at most 254 characters")
    local, at, domain = address.rpartition("@")
    if not at or len(local) > 64 or not _LOCAL.fullmatch(local) \
            or not _DOMAIN.fullmatch(domain):
        raise ValueError(f"{entry[:80]!r} is not a plain email address like "
                         "name@example.com (single-line, no display name, no brackets or "
                         "commas)")
    return f"{local}@{domain.lower()}"


def rate_key(address: str) -> str:
    """What per-recipient rate limits count on: case never makes a second recipient."""
    return normalise_address(address).lower()


def check_notify(entries: list[str]) -> list[str]:
    """Normalised, de-duplicated addresses; at most :data:`MAX_NOTIFY`."""
    out: list[str] = []
    for entry in entries:
        address = normalise_address(entry)
        if rate_key(address) not in {rate_key(a) for a in out}:
            out.append(address)
    if len(out) > MAX_NOTIFY:
        raise ValueError(f"at most {MAX_NOTIFY} notify addresses per task, not {len(out)}")
    return out


def check_tags(tags: list[str]) -> list[str]:
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags per task, not {len(tags)}")
    for tag in tags:
        if not tag or len(tag) > MAX_TAG_LENGTH or "," in tag:
            raise ValueError(f"tag {tag[:80]!r} must be 1..{MAX_TAG_LENGTH} characters "
                             "without commas")
        check_text(tag, "a tag")
    return tags


def check_json_tree(value: Any, max_depth: int = MAX_DEPTH) -> Any:
    """``value`` if it is plain JSON data that every store and client can hold.

    Raises:
        ValueError: NaN or an infinity, a lone surrogate in a string or key, a
        non-string key, or nesting deeper than ``max_depth``.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:  # iterative: a hostile depth must not exhaust the interpreter's stack
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str) or has_lone_surrogate(key):
                        raise ValueError("keys must be valid Unicode strings")
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("NaN and infinities are not JSON numbers")
        elif isinstance(item, str) and has_lone_surrogate(item):
            raise ValueError("a string holds a lone surrogate (not valid Unicode text)")
    return value
