"""The web client's way in and out, in a real browser against a real server.

Sign-up and login with every refusal said in words, "stay signed in", logging out without a
trace, markup in a name shown as text, the keyboard alone, an accessibility scan, and /docs.
"""

from __future__ import annotations

import asyncio
import re
import secrets

import httpx
import pytest
from playwright.async_api import expect

from chatsvc.testing import QUIET_LOGS, ServerProcess
from tests.live.browser import People, Person, api_user, serious_accessibility_violations

# Login and sign-up are limited per address; each person has an address of their own
# (X-Forwarded-For, trusted from the loopback), so only the test that wants the limit meets it.
AUTH_BURST = 4
WEB_SERVER_SETTINGS = {
    "CHATSVC_TRUSTED_PROXIES": "127.0.0.1/32",
    "CHATSVC_AUTH_RATE": "1",
    "CHATSVC_AUTH_BURST": str(AUTH_BURST),
    "CHATSVC_DRAIN_DELAY": "0",
    **QUIET_LOGS,
}


@pytest.fixture
def server(web_server: ServerProcess) -> ServerProcess:
    return web_server


@pytest.fixture
async def person(people: People) -> Person:
    """Someone who has just opened the client."""
    return await people.arrive()


def new_name(prefix: str = "user") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def test_sign_up_opens_the_chat_and_log_out_leaves_nothing_behind(
    person: Person, server: ServerProcess
) -> None:
    name = new_name("ada")
    await person.sign_up(name)
    await expect(person.page.locator("#me-name")).to_have_text(name)
    stored = await person.storage()
    assert len(stored["session"]) == 1 and stored["local"] == {}
    token = await person.stored_token()

    await person.log_out()

    assert await person.storage() == {"session": {}, "local": {}}
    assert name not in await person.page.locator("body").inner_text()
    # The token is revoked on the server too, not just forgotten here.
    async with httpx.AsyncClient(base_url=server.url) as client:
        revoked = await client.post("/logout", headers={"Authorization": f"Bearer {token}"})
    assert revoked.status_code == 401


async def test_stay_signed_in_keeps_the_session_for_a_new_tab_and_only_then(
    person: Person, server: ServerProcess
) -> None:
    user = await api_user(server)

    await person.log_in(user.username, user.password)
    this_tab_only = await person.context.new_page()
    await this_tab_only.goto("/")
    await expect(this_tab_only.get_by_role("button", name="Log in")).to_be_visible()
    await this_tab_only.close()
    await person.log_out()

    await person.log_in(user.username, user.password, stay=True)
    stored = await person.storage()
    assert stored["session"] == {} and len(stored["local"]) == 1
    new_tab = await person.context.new_page()
    await new_tab.goto("/")
    await expect(new_tab.get_by_role("button", name="Log out", exact=True)).to_be_visible()
    await new_tab.close()

    await person.log_out()
    assert await person.storage() == {"session": {}, "local": {}}


async def test_a_taken_name_and_a_wrong_password_are_said_in_words(
    person: Person, server: ServerProcess
) -> None:
    user = await api_user(server)

    await person.fill_credentials(user.username.upper(), "another password")
    await person.page.get_by_role("button", name="Sign up").click()
    await expect(person.auth_error()).to_have_text("That name is taken. Choose another one.")

    await person.fill_credentials(user.username, "not the password")
    await person.page.get_by_role("button", name="Log in").click()
    await expect(person.auth_error()).to_have_text("Wrong username or password.")

    await person.fill_credentials(new_name(), "short")
    await person.page.get_by_role("button", name="Sign up").click()
    await expect(person.auth_error()).to_have_text("Choose a password of at least 8 characters.")


async def test_being_rate_limited_is_said_with_the_wait(person: Person, server: ServerProcess) -> None:
    # Spend this person's bucket from their address, then try once more from the page.
    async with httpx.AsyncClient(base_url=server.url, headers={"X-Forwarded-For": person.address}) as client:
        for _ in range(AUTH_BURST):
            await client.post("/login", json={"username": "nobody-here", "password": "whatever1"})

    await person.fill_credentials("nobody-here", "whatever1")
    await person.page.get_by_role("button", name="Log in").click()

    await expect(person.auth_error()).to_have_text(
        re.compile(r"^Too many attempts\. Try again in \d+ seconds?\.$"))


async def test_markup_in_a_name_is_shown_as_text_and_never_runs(person: Person) -> None:
    name = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'[:64]
    await person.sign_up(name)

    await expect(person.page.locator("#me-name")).to_have_text(name)
    assert await person.page.evaluate("() => window.pwned") is None
    assert await person.page.locator("#me-name img, #me-name script").count() == 0


async def test_the_keyboard_alone_signs_up(person: Person) -> None:
    name = new_name("keys")
    page = person.page
    await expect(page.get_by_role("textbox", name="Username")).to_be_focused()
    await page.keyboard.type(name)
    await page.keyboard.press("Tab")
    await page.keyboard.type("correct horse")
    # Tab past "Stay signed in" and "Log in" to "Sign up".
    for _ in range(3):
        await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Sign up")).to_be_focused()
    await page.keyboard.press("Enter")

    await person.expect_signed_in()
    await expect(page.locator("#me-name")).to_have_text(name)


async def test_the_server_being_away_is_said_in_words(person: Person, server: ServerProcess) -> None:
    user = await api_user(server)
    await asyncio.to_thread(server.stop)
    try:
        await person.fill_credentials(user.username, user.password)
        await person.page.get_by_role("button", name="Log in").click()
        await expect(person.auth_error()).to_have_text(
            "The server cannot be reached. Check your connection and try again.")
    finally:
        await asyncio.to_thread(server.start)

    await person.page.get_by_role("button", name="Log in").click()
    await person.expect_signed_in()


async def test_no_serious_accessibility_violation_signed_out_or_in(person: Person) -> None:
    assert await serious_accessibility_violations(person.page) == []
    await person.screenshot("signed-out-desktop")
    await person.sign_up(new_name("axe"))
    assert await serious_accessibility_violations(person.page) == []


async def test_docs_renders_the_api_description_from_the_package(person: Person) -> None:
    requested: list[str] = []
    person.page.on("request", lambda request: requested.append(request.url))

    await person.page.goto("/docs")

    await expect(person.page.get_by_role("heading", name="chatsvc")).to_be_visible()
    await expect(person.page.get_by_text("/messages/stream").first).to_be_visible()
    assert requested and all(url.startswith(person.server.url) for url in requested), requested
    await person.screenshot("docs")
