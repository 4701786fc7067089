"""Routes as HTTP sees them: trailing slashes (never a redirect), the root page and the readiness probe."""

from __future__ import annotations

import secrets

import httpx
import pytest

from chatsvc.testing import User, media_type

# --- trailing slashes -------------------------------------------------------------------------

async def test_post_users_with_a_trailing_slash_signs_up(client: httpx.AsyncClient) -> None:
    username = f"slash-{secrets.token_hex(4)}"

    created = await client.post("/users/", json={"username": username, "password": "password-1"})
    login = await client.post("/login/", json={"username": username, "password": "password-1"})

    assert created.status_code == 201, created.text
    assert login.status_code == 200, login.text
    assert login.json()["id"] == created.json()["id"]


async def test_messages_with_a_trailing_slash_send_and_list(
    client: httpx.AsyncClient, alice: User, bob: User
) -> None:
    sent = await client.post("/messages/", headers=alice.auth,
                             json={"recipient": bob.id, "content": {"type": "text", "text": "/"}})
    listed = await client.get("/messages/", params={"recipient": bob.id}, headers=bob.auth)

    assert sent.status_code == 201, sent.text
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["messages"]] == [sent.json()["id"]]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/check/"), ("POST", "/users/"), ("POST", "/messages/"), ("GET", "/messages/"),
    ("POST", "/logout/"),
])
async def test_a_trailing_slash_is_never_a_redirect(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert not 300 <= response.status_code < 400, response.headers
    assert "location" not in response.headers
    assert response.status_code not in (404, 405)


# --- the root page and the readiness probe ----------------------------------------------------

async def test_the_root_page_is_html_linking_the_api_description(client: httpx.AsyncClient) -> None:
    response = await client.get("/")

    assert response.status_code == 200
    assert media_type(response) == "text/html"
    assert "/openapi.json" in response.text
    assert "chatsvc" in response.text


async def test_check_answers_exactly_ok_in_plain_text(client: httpx.AsyncClient) -> None:
    response = await client.get("/check")

    assert response.status_code == 200
    assert media_type(response) == "text/plain"
    assert response.content == b"ok"
