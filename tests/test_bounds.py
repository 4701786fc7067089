"""Every bound of docs/API.md and the configuration, at the bound and one past it, through the real app.

Most bounds are tested beside the feature they bound; this file holds only the missing ones.
Where each bound is tested ("at": the bound itself, "past": one past it):

- body size, CHATSVC_MAX_BODY_BYTES
    at:   test_body_limits.py::test_a_body_of_exactly_the_limit_is_accepted,
          test_body_limits.py::test_a_body_of_exactly_the_limit_is_not_413_on_sign_up
    past: test_body_limits.py::test_a_body_over_the_limit_is_413_and_closes_the_connection
- text length, CHATSVC_MAX_TEXT_CHARS
    both: test_message_validation.py::test_text_of_exactly_the_limit_is_accepted_and_one_more_is_rejected
- URL length 2048
    at:   test_message_validation.py::test_boundary_content_is_accepted_and_stored_as_sent[url-2048]
    past: test_message_validation.py::test_invalid_content_is_rejected_naming_the_field[url-2049]
- username length 64 at sign-up
    at:   test_users.py::test_a_64_character_username_is_accepted
    past: test_users.py::test_a_username_of_0_or_more_than_64_characters_is_rejected[65-ascii]
- password length 8 and 1024 at sign-up
    at:   test_users.py::test_passwords_of_8_to_1024_characters_are_accepted[8, 1024]
    past: test_users.py::test_passwords_outside_8_to_1024_characters_are_rejected[7, 1025]
- username 256 and password 1024 at login (looser than sign-up, for the original's accounts)
    at:   test_bounds.py::test_login_fields_at_their_bound_are_checked_not_refused
    past: test_bounds.py::test_login_fields_past_their_bound_are_400
- page size 1000
    at:   test_message_listing.py::test_a_limit_of_1000_is_allowed
    past: test_message_listing.py::test_out_of_range_parameters_are_rejected_naming_them[limit-1001]
- Idempotency-Key length 255
    at:   test_message_idempotency.py::test_a_key_of_visible_ascii_up_to_255_chars_is_accepted
    past: test_message_idempotency.py::test_an_invalid_idempotency_key_is_rejected[256-chars]
- X-Request-ID length 128
    at:   test_request_id.py::test_a_request_id_of_128_characters_is_echoed
    past: test_request_id.py::test_an_insane_request_id_is_replaced[129-chars]
- image width and height 32767
    at:   test_message_validation.py::test_boundary_content_is_accepted_and_stored_as_sent[size-32767]
    past: test_message_validation.py::test_invalid_content_is_rejected_naming_the_field[width-32768,
          height-32768]
- ids up to 2**63 - 1: recipient and start
    at:   test_message_sending.py::test_an_unknown_recipient_is_not_found_and_stores_nothing,
          test_message_listing.py::test_an_unknown_recipient_yields_an_empty_list,
          test_message_listing.py::test_a_start_past_the_newest_message_is_an_empty_last_page
    past: test_message_validation.py::test_a_bad_recipient_is_rejected[2**63],
          test_message_listing.py::test_out_of_range_parameters_are_rejected_naming_them[start-2**63]
- ids up to 2**63 - 1: sender
    at:   test_bounds.py::test_the_largest_sender_id_is_checked_not_refused
    past: test_bounds.py::test_a_sender_id_past_the_largest_is_400
- header count, CHATSVC_MAX_HEADERS (the app's default; a live server's in live/test_limits.py)
    at:   test_bounds.py::test_exactly_the_maximum_number_of_headers_is_served
    past: test_bounds.py::test_one_header_too_many_is_431
- header bytes, CHATSVC_MAX_HEADER_BYTES (enforced by hypercorn, so live only)
    at:   live/test_limits.py::test_headers_just_under_the_byte_limit_are_served
    past: live/test_limits.py::test_headers_over_the_byte_limit_are_refused
- token length 256
    both: test_tokens.py::test_the_token_is_read_from_either_form_of_the_header
- idle timeout, CHATSVC_SESSION_IDLE_TIMEOUT
    both: test_session_lifetime.py::test_an_idle_session_is_401_and_stays_dead
- profile length 1 to 60 s
    at:   test_debug.py (seconds=1 and seconds=60)
    past: test_debug.py::test_a_profile_length_outside_1_to_60_seconds_is_refused
"""

from __future__ import annotations

import httpx
import pytest

from chatsvc.config import Settings
from chatsvc.schemas import MAX_ID, PASSWORD_MAX_CHARS, USERNAME_MAX_CHARS
from chatsvc.testing import User, assert_error

LOGIN_USERNAME_MAX_CHARS = 4 * USERNAME_MAX_CHARS


# --- header count -----------------------------------------------------------------------------

def request_with_headers(client: httpx.AsyncClient, count: int, method: str, path: str,
                         headers: dict[str, str] | None = None, **kwargs: object) -> httpx.Request:
    """`method path` carrying exactly `count` headers in all, httpx's own included."""
    headers = dict(headers or {})
    base = len(client.build_request(method, path, headers=headers, **kwargs).headers.raw)
    headers.update({f"X-Filler-{n}": "v" for n in range(count - base)})
    request = client.build_request(method, path, headers=headers, **kwargs)
    assert len(request.headers.raw) == count
    return request


def route_with_headers(client: httpx.AsyncClient, count: int, route: str, alice: User) -> httpx.Request:
    """`GET /check`, or `POST /messages` of a message to alice, carrying exactly `count` headers."""
    method, path = route.split()
    body = {"recipient": alice.id, "content": {"type": "text", "text": "many headers"}}
    kwargs = {"headers": alice.auth, "json": body} if method == "POST" else {}
    return request_with_headers(client, count, method, path, **kwargs)


@pytest.mark.parametrize("route", ["GET /check", "POST /messages"])
async def test_exactly_the_maximum_number_of_headers_is_served(
    client: httpx.AsyncClient, settings: Settings, alice: User, route: str
) -> None:
    response = await client.send(route_with_headers(client, settings.max_headers, route, alice))

    assert response.status_code == (201 if route.startswith("POST") else 200), response.text


@pytest.mark.parametrize("route", ["GET /check", "POST /messages"])
async def test_one_header_too_many_is_431(
    client: httpx.AsyncClient, settings: Settings, alice: User, route: str
) -> None:
    response = await client.send(route_with_headers(client, settings.max_headers + 1, route, alice))

    assert str(settings.max_headers) in assert_error(response, 431, "headers_too_large")
    assert response.headers["connection"] == "close"


# --- login fields -----------------------------------------------------------------------------

async def test_login_fields_at_their_bound_are_checked_not_refused(client: httpx.AsyncClient) -> None:
    """Login has looser rules than sign-up (old accounts): the longest values reach the password check."""
    response = await client.post("/login", json={"username": "u" * LOGIN_USERNAME_MAX_CHARS,
                                                  "password": "p" * PASSWORD_MAX_CHARS})

    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize(("field", "body"), [
    pytest.param("username", {"username": "u" * (LOGIN_USERNAME_MAX_CHARS + 1), "password": "password"},
                 id="username-257"),
    pytest.param("password", {"username": "someone", "password": "p" * (PASSWORD_MAX_CHARS + 1)},
                 id="password-1025"),
])
async def test_login_fields_past_their_bound_are_400(client: httpx.AsyncClient, field: str,
                                                     body: dict[str, str]) -> None:
    message = assert_error(await client.post("/login", json=body), 400, "invalid_request")

    assert message.startswith(f"{field}: "), message


# --- the largest id as a sender ---------------------------------------------------------------

async def test_the_largest_sender_id_is_checked_not_refused(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.post("/messages", headers=alice.auth, json={
        "sender": MAX_ID, "recipient": alice.id, "content": {"type": "text", "text": "hi"}})

    assert_error(response, 403, "forbidden")


async def test_a_sender_id_past_the_largest_is_400(client: httpx.AsyncClient, alice: User) -> None:
    response = await client.post("/messages", headers=alice.auth, json={
        "sender": MAX_ID + 1, "recipient": alice.id, "content": {"type": "text", "text": "hi"}})

    assert assert_error(response, 400, "invalid_request").startswith("sender: ")
