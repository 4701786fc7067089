"""msgspec structs for every request and response body; the message content tagged union."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from chatsvc import usernames

MAX_ID = 2**63 - 1

Id = Annotated[int, Meta(ge=1, le=MAX_ID, examples=[1])]
Dimension = Annotated[int, Meta(ge=1, le=32767)]

USERNAME_MAX_CHARS = usernames.MAX_CHARS
# Login compares names under no sign-up rule (accounts made under the original's log in), so only
# a generous bound.
LOGIN_USERNAME_MAX_CHARS = 4 * USERNAME_MAX_CHARS
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 1024
URL_MAX_CHARS = 2048
PAGE_DEFAULT = 100
PAGE_MAX = 1000

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_AUTHORITY = re.compile(r"//([^/?#]*)")

# The rules below that `__post_init__` checks, as JSON Schema patterns for the API document
# (openapi.py) only; the decoder does not use them. ECMA-262's `\s` is not `str.isspace()`, so
# the space characters are spelled out; tests/test_openapi_patterns.py proves each pattern agrees.
_JSON_CONTROL = r"\x00-\x1f\x7f-\x9f"
_JSON_SPACE_OR_CONTROL = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_JSON_SCHEME_CHAR = r"A-Za-z0-9+.\-"
NO_NUL_PATTERN = r"^[^\x00]*$"
USERNAME_PATTERN = rf"^[^{_JSON_SPACE_OR_CONTROL}](?:[^{_JSON_CONTROL}]*[^{_JSON_SPACE_OR_CONTROL}])?$"
# A protocol-relative reference whose authority a browser would take for a host it can reach: a
# name with a dot (IDNA's dots included), a port, user information, an IP literal, a
# percent-encoding, a number (a browser reads `//2130706433` as 127.0.0.1) or localhost. The
# random base64 the original's clients send as URLs (one in 4096 starts with `//`) never matches
# it: a single word with neither dot nor port names no host on the internet.
PROTOCOL_RELATIVE_HOST = (r"//(?:[^/?#]*[.:@\[%\u3002\uff0e\uff61]"
                          r"|(?:[0-9]+|0[Xx][0-9A-Fa-f]*|[Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt])(?:[/?#]|$))")
_PROTOCOL_RELATIVE_HOST = re.compile(PROTOCOL_RELATIVE_HOST)
# No scheme at all, or http(s): a leading run of scheme characters must not end in a colon. No
# backslash anywhere, no protocol-relative reference to a host, no `@` in an http(s) authority.
_JSON_REFUSED = _JSON_SPACE_OR_CONTROL + r"\\"
URL_PATTERN = (rf"^(?!{PROTOCOL_RELATIVE_HOST})"
               rf"(?:[Hh][Tt][Tt][Pp][Ss]?:(?://[^{_JSON_REFUSED}/?#@]*(?:[/?#][^{_JSON_REFUSED}]*)?"
               rf"|(?!//)[^{_JSON_REFUSED}]*)"
               rf"|[A-Za-z][{_JSON_SCHEME_CHAR}]*"
               rf"|[A-Za-z][{_JSON_SCHEME_CHAR}]*[^{_JSON_REFUSED}{_JSON_SCHEME_CHAR}:]"
               rf"[^{_JSON_REFUSED}]*"
               rf"|[^{_JSON_REFUSED}A-Za-z][^{_JSON_REFUSED}]*)$")

Username = Annotated[str, Meta(
    description=f"1 to {USERNAME_MAX_CHARS} characters: parts separated by single spaces, each valid "
                "under the PRECIS UsernameCasePreserved profile (RFC 8265: no control, format or "
                "unassigned characters; fullwidth letters are width-mapped). Compared case-insensitively, "
                "and a name that looks like an existing one (Unicode TR39 confusables) is taken. The "
                "pattern is a necessary condition only.",
    extra_json_schema={"minLength": 1, "maxLength": USERNAME_MAX_CHARS, "pattern": USERNAME_PATTERN})]
Password = Annotated[str, Meta(
    description=f"{PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters, no NUL.",
    extra_json_schema={"minLength": PASSWORD_MIN_CHARS, "maxLength": PASSWORD_MAX_CHARS,
                       "pattern": NO_NUL_PATTERN})]
Url = Annotated[str, Meta(
    description=f"1 to {URL_MAX_CHARS} characters, no whitespace, control characters or "
                "backslashes; a scheme, when present, is http or https; no protocol-relative reference to a "
                "host (`//example.com/…`) "
                "and no user information (`user:password@`). A scheme-less reference is accepted.",
    extra_json_schema={"minLength": 1, "maxLength": URL_MAX_CHARS, "pattern": URL_PATTERN})]
# RFC 3339 in UTC with a `Z`: the text the database formats (queries.messages.TIMESTAMP), passed
# on as it is, so a 201 and every later listing show the same string.
Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time", "pattern": "Z$"})]


class Credentials(Struct):
    """Body of `POST /users`."""

    username: Username
    password: Password

    def __post_init__(self) -> None:
        try:
            self.username = usernames.display_name(self.username)
        except usernames.InvalidUsername as error:
            raise ValueError(f"username: {error}") from None
        check_new_password(self.password, "password")


def check_new_password(password: str, field: str) -> None:
    """ValueError naming `field` when `password` breaks the sign-up rule."""
    if not PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS:
        raise ValueError(f"{field}: expected {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters")
    _refuse_nul(password, field)


class LoginCredentials(Struct):
    """Body of `POST /login`: no sign-up rules, so accounts made under the original's still log in."""

    username: Annotated[str, Meta(min_length=1, max_length=LOGIN_USERNAME_MAX_CHARS,
                                  extra_json_schema={"pattern": NO_NUL_PATTERN})]
    password: Annotated[str, Meta(min_length=1, max_length=PASSWORD_MAX_CHARS,
                                  extra_json_schema={"pattern": NO_NUL_PATTERN})]

    def __post_init__(self) -> None:
        _refuse_nul(self.username, "username")
        _refuse_nul(self.password, "password")


def _refuse_nul(value: str, field: str) -> None:
    # PostgreSQL cannot store NUL in text, and bcrypt cannot hash it: refuse it everywhere.
    if "\x00" in value:
        raise ValueError(f"{field}: NUL characters are not allowed")


def _check_url(url: str) -> None:
    if not 1 <= len(url) <= URL_MAX_CHARS:
        raise ValueError(f"url: expected 1 to {URL_MAX_CHARS} characters")
    if _WHITESPACE_OR_CONTROL.search(url):
        raise ValueError("url: whitespace and control characters are not allowed")
    if "\\" in url:
        raise ValueError("url: backslashes are not allowed")
    if _PROTOCOL_RELATIVE_HOST.match(url):
        raise ValueError("url: a protocol-relative reference to a host (//host) is not allowed; "
                         "give the scheme")
    scheme = _SCHEME.match(url)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        raise ValueError("url: the scheme must be http or https")
    if scheme and (authority := _AUTHORITY.match(url, scheme.end())) and "@" in authority.group(1):
        raise ValueError("url: user information (user:password@) is not allowed")


class Text(Struct, tag="text", tag_field="type", forbid_unknown_fields=True):
    """A text message; its upper length is a setting, checked by the handler."""

    text: Annotated[str, Meta(min_length=1, extra_json_schema={"pattern": NO_NUL_PATTERN})]

    def __post_init__(self) -> None:
        _refuse_nul(self.text, "text")


class Image(Struct, tag="image", tag_field="type", forbid_unknown_fields=True):
    url: Url
    width: Dimension = 64
    height: Dimension = 64

    def __post_init__(self) -> None:
        _check_url(self.url)


class Video(Struct, tag="video", tag_field="type", forbid_unknown_fields=True):
    url: Url
    source: Literal["youtube", "vimeo"]

    def __post_init__(self) -> None:
        _check_url(self.url)


Content = Text | Image | Video
CONTENT_TYPES = ("text", "image", "video")


class NewMessage(Struct):
    """Body of `POST /messages`; unknown top-level fields are ignored, as the original did."""

    recipient: Id
    content: Content
    sender: Id | None = None


class ListingQuery(Struct):
    """Parameters of `GET /messages`, from the query string or a JSON body."""

    recipient: Annotated[Id, Meta(description="The user whose messages are listed.")]
    start: Annotated[int, Meta(ge=0, le=MAX_ID, description="The smallest id listed.")] = 0
    limit: Annotated[int, Meta(ge=0, le=PAGE_MAX, description=(
        f"At most this many messages; 0 means {PAGE_DEFAULT}, as in the original."))] = 0

    @property
    def page_size(self) -> int:
        # The original treated 0 as "use the default"; clients rely on it.
        return self.limit or PAGE_DEFAULT


class UserCreated(Struct):
    id: int


class LoggedIn(Struct):
    id: int
    token: str


class MessageCreated(Struct):
    id: int
    timestamp: Timestamp


class StoredMessage(Struct):
    """One message of a listing or an event, as the database writes it (queries.messages.MESSAGE_JSON)."""

    id: int
    timestamp: Timestamp
    sender: int
    recipient: int
    content: msgspec.Raw


class MessagePage(Struct):
    # The JSON array of StoredMessage the database built, sent without being parsed here.
    messages: Annotated[msgspec.Raw, Meta(extra_json_schema={
        "type": "array", "items": {"$ref": "#/components/schemas/StoredMessage"}})]
    next_start: int | None


CONVERSATION_PAGE_DEFAULT = 50
CONVERSATION_PAGE_MAX = 200
USERS_PER_LOOKUP = 100

PageSize = Annotated[int, Meta(ge=1, le=CONVERSATION_PAGE_MAX, description=(
    f"At most this many items, 1 to {CONVERSATION_PAGE_MAX}."))]


class UserSummary(Struct):
    id: int
    username: str


class Me(Struct):
    id: int
    username: str
    created_at: Timestamp


class UsersQuery(Struct):
    """Parameters of `GET /users`: exactly one of them."""

    username: Annotated[str | None, Meta(description=(
        "The account with this name, compared as login compares it."))] = None
    id: Annotated[Annotated[list[Id], Meta(min_length=1, max_length=USERS_PER_LOOKUP)] | None, Meta(
        description=f"Repeated 1 to {USERS_PER_LOOKUP} times: these accounts, in this order.")] = None


class UserList(Struct):
    users: list[UserSummary]


class ConversationsQuery(Struct):
    """Parameters of `GET /conversations`."""

    before: Annotated[Id | None, Meta(description=(
        "Only conversations whose last message id is smaller: the `next_before` of the previous "
        "page."))] = None
    limit: PageSize = CONVERSATION_PAGE_DEFAULT


class Conversation(Struct):
    peer: UserSummary
    last_message: StoredMessage
    unread: int
    last_read: int | None
    peer_last_read: int | None


class ConversationList(Struct):
    # The JSON array of Conversation the database built, sent without being parsed here.
    conversations: Annotated[msgspec.Raw, Meta(extra_json_schema={
        "type": "array", "items": {"$ref": "#/components/schemas/Conversation"}})]
    next_before: int | None


class ConversationQuery(Struct):
    """Parameters of `GET /conversations/{peer}/messages`: `before` or `after`, or neither."""

    before: Annotated[Id | None, Meta(description=(
        "The newest messages with a smaller id (scrolling back): the `older` of a page."))] = None
    after: Annotated[Annotated[int, Meta(ge=0, le=MAX_ID)] | None, Meta(description=(
        "The oldest messages with a larger id (catching up): the `newer` of a page."))] = None
    limit: PageSize = CONVERSATION_PAGE_DEFAULT


class ConversationPage(Struct):
    # The JSON array of StoredMessage the database built, sent without being parsed here.
    messages: Annotated[msgspec.Raw, Meta(extra_json_schema={
        "type": "array", "items": {"$ref": "#/components/schemas/StoredMessage"}})]
    older: int | None
    newer: int | None


class ReadMarker(Struct):
    """Body of `PUT /conversations/{peer}/read`."""

    last_read: Id


class ReadState(Struct):
    last_read: int
    unread: int


class ReadEvent(Struct):
    """The data of a stream's `read` event."""

    reader: int
    peer: int
    last_read: int


class SessionInfo(Struct):
    id: str
    created_at: Timestamp
    last_seen_at: Timestamp
    expires_at: Timestamp
    user_agent: str | None
    current: bool


class SessionList(Struct):
    sessions: list[SessionInfo]


class PasswordChange(Struct):
    """Body of `PUT /users/me/password`."""

    current_password: Annotated[str, Meta(min_length=1, max_length=PASSWORD_MAX_CHARS,
                                          extra_json_schema={"pattern": NO_NUL_PATTERN})]
    new_password: Password

    def __post_init__(self) -> None:
        _refuse_nul(self.current_password, "current_password")
        check_new_password(self.new_password, "new_password")


class ErrorDetail(Struct):
    code: str
    message: str


class ErrorBody(Struct):
    error: ErrorDetail


encoder = msgspec.json.Encoder()
credentials_decoder = msgspec.json.Decoder(Credentials)
login_decoder = msgspec.json.Decoder(LoginCredentials)
new_message_decoder = msgspec.json.Decoder(NewMessage)
content_decoder = msgspec.json.Decoder(Content)
read_marker_decoder = msgspec.json.Decoder(ReadMarker)
password_change_decoder = msgspec.json.Decoder(PasswordChange)
