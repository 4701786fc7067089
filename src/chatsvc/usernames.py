r"""Usernames under PRECIS (RFC 8265) and confusable skeletons (Unicode TR39).

A username is one or more parts separated by single spaces (RFC 8265 §3.5), each valid under the
`UsernameCasePreserved` profile: no control, format (zero-width, bidi override) or unassigned
characters, width-mapped (fullwidth `\uff42\uff4f\uff42` is `bob`). Three forms of one name:

- the display name: the parts under `UsernameCasePreserved` (what is stored and shown);
- the key: the parts under `UsernameCaseMapped` (`Alice`, `alice` and fullwidth
  `\uff21\uff2c\uff29\uff23\uff25` are one account);
- the skeleton: TR39's skeleton of the key, equal for look-alikes (Cyrillic `\u043e` and Latin
  `o`), so that nobody can pose as `paypal` with `\u0440\u0430ypal` (Cyrillic er and a).

Accounts made before these rules (sql/0004) keep their old key, NFC then case-folded
(`legacy_key`), so each keeps logging in with the exact name it signed up with.
"""

from __future__ import annotations

import functools
import unicodedata
from importlib import resources

import precis_i18n

MAX_CHARS = 64
_SPACE = " "
_PRESERVED = precis_i18n.get_profile("UsernameCasePreserved")
_MAPPED = precis_i18n.get_profile("UsernameCaseMapped")


class InvalidUsername(ValueError):
    """The name breaks the rule; the message says how, for a person."""


def display_name(raw: str) -> str:
    """The name as stored and shown, or InvalidUsername."""
    name = _SPACE.join(_enforce(_PRESERVED, part) for part in _parts(raw))
    if not 1 <= len(name) <= MAX_CHARS:
        raise InvalidUsername(f"expected 1 to {MAX_CHARS} characters")
    return name


def account_key(raw: str) -> str:
    """The form accounts are told apart by (sign-up, login, look-up), or InvalidUsername."""
    return _SPACE.join(_enforce(_MAPPED, part) for part in _parts(raw))


def login_key(raw: str) -> str | None:
    """`account_key`, or None for a name the rule refuses (it may still be an old account's)."""
    try:
        return account_key(raw)
    except InvalidUsername:
        return None


def legacy_key(raw: str) -> str:
    """The key of accounts made before the PRECIS rule: NFC, then case-folded."""
    return unicodedata.normalize("NFC", raw).casefold()


def skeleton(key: str) -> str:
    """TR39's skeleton, case-insensitively: some prototypes are capitals (`0` looks like `O`), so
    the skeleton is lower-cased and taken again, and `b0b` and `bob` meet."""
    return _tr39_skeleton(_tr39_skeleton(key).lower())


def _tr39_skeleton(text: str) -> str:
    """NFD, every character replaced by its prototype, NFD again (UTS #39, section 4)."""
    table = _prototypes()
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFD", "".join(table.get(char, char) for char in decomposed))


def skeleton_of_account(username: str, stored_key: str) -> str:
    """The skeleton of an existing account: of its PRECIS key when its name has one, else of its key."""
    return skeleton(login_key(username) or stored_key)


def _parts(raw: str) -> list[str]:
    if not raw:
        raise InvalidUsername(f"expected 1 to {MAX_CHARS} characters")
    parts = raw.split(_SPACE)
    if any(not part for part in parts):
        raise InvalidUsername("spaces only between parts of the name, one at a time "
                              "(no leading, trailing or double space)")
    return parts


def _enforce(profile: precis_i18n.profile.Profile, part: str) -> str:
    try:
        return str(profile.enforce(part))
    except UnicodeEncodeError as error:
        character = error.object[error.start]
        raise InvalidUsername(f"the character U+{ord(character):04X} is not allowed "
                              f"({_reason(error.reason)})") from None


def _reason(reason: str) -> str:
    """precis-i18n's reason ("DISALLOWED/precis_ignorable_properties") for a person."""
    kind = reason.rsplit("/", 1)[-1]
    return {
        "spaces": "spaces separate parts of the name, one at a time",
        "precis_ignorable_properties": "an invisible or formatting character",
        "controls": "a control character",
        "unassigned": "an unassigned code point",
        "has_compat": "a compatibility character; use its plain form",
        "symbols": "a symbol",
        "punctuation": "punctuation of this kind",
        "empty": "an empty part",
        "bidi_rule": "mixes right-to-left and left-to-right text",
    }.get(kind, kind.replace("_", " "))


@functools.cache
def _prototypes() -> dict[str, str]:
    """Unicode's confusables.txt (data/confusables.txt): each source character's prototype."""
    text = resources.files("chatsvc").joinpath("data/confusables.txt").read_text(encoding="utf-8-sig")
    table = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) < 2 or not fields[0].strip():
            continue
        source = chr(int(fields[0].strip(), 16))
        table[source] = "".join(chr(int(code, 16)) for code in fields[1].split())
    return table
