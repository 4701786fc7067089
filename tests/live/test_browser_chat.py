"""Chatting in the web client: two people, two browser contexts, one real `chatsvc serve`.

Live delivery both ways, unread badges and "Seen", history loaded by scrolling up, a server
restart in the middle of a conversation, markup shown as text, media, sessions and the
password, phone width, an accessibility scan, and the screenshots (README's among them).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from collections.abc import Callable

import httpx
import pytest
from playwright.async_api import expect

from chatsvc.testing import NO_RATE_LIMITS, QUIET_LOGS, ServerProcess, User
from tests import PROJECT_ROOT
from tests.live.browser import DESKTOP, PHONE, People, Person, api_user, serious_accessibility_violations

WEB_SERVER_SETTINGS = {**NO_RATE_LIMITS, **QUIET_LOGS, "CHATSVC_DRAIN_DELAY": "0"}
# The picture in the README, rewritten by `make screenshot`.
README_SCREENSHOT = PROJECT_ROOT / "docs" / "web-client.png"


@pytest.fixture
def server(web_server: ServerProcess) -> ServerProcess:
    return web_server


async def send_api(server: ServerProcess, sender: User, recipient: User, text: str) -> int:
    async with httpx.AsyncClient(base_url=server.url, headers=sender.auth) as client:
        created = await client.post("/messages", json={"recipient": recipient.id,
                                                       "content": {"type": "text", "text": text}})
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def shown_ids(person: Person) -> list[int]:
    return [int(value) for value in await person.messages().locator("li.message[data-id]").evaluate_all(
        "items => items.map(item => item.dataset.id)")]


async def shown_texts(person: Person) -> list[str]:
    return await person.messages().locator("li.message .text").all_inner_texts()


async def test_two_people_chat_live_both_ways_with_unread_badges_and_seen(people: People) -> None:
    alice, alice_user = await people()
    bob, bob_user = await people()

    await alice.start_conversation(bob_user.username)
    await alice.send("Hi Bob!")
    await alice.page.get_by_role("textbox", name="Message").fill("Two lines")
    await alice.page.get_by_role("textbox", name="Message").press("Shift+Enter")
    await alice.page.get_by_role("textbox", name="Message").type("in one message")
    await alice.page.get_by_role("button", name="Send").click()

    # Bob, with no conversation open, sees it arrive in his list with two unread.
    entry = bob.conversations().get_by_role("button")
    await expect(entry).to_contain_text(alice_user.username)
    await expect(entry.locator(".badge")).to_have_text("2 unread")
    await expect(entry).to_contain_text("Two lines in one message")

    await bob.conversation_with(alice_user.username).click()
    await expect(bob.messages().locator(".text")).to_have_text(["Hi Bob!", "Two lines\nin one message"])
    await expect(entry.locator(".badge")).to_have_count(0)
    # Alice sees that Bob has read both.
    await expect(alice.messages().locator("li.mine").last.get_by_text("Seen")).to_be_visible()

    await bob.send("Hello Alice")
    await expect(alice.messages().locator("li.theirs .text")).to_have_text(["Hello Alice"])
    await expect(bob.messages().locator("li.mine").last.get_by_text("Seen")).to_be_visible()
    assert await shown_ids(alice) == await shown_ids(bob)
    assert await alice.messages().locator("li.pending").count() == 0


async def test_scrolling_up_loads_older_history_without_a_gap(people: People, server: ServerProcess) -> None:
    carol, dave = await api_user(server), await api_user(server)
    sent = []
    for number in range(130):
        sender, recipient = (carol, dave) if number % 3 else (dave, carol)
        sent.append(await send_api(server, sender, recipient, f"message {number}"))
    person, _ = await people(carol)

    await person.conversation_with(dave.username).click()
    await expect(person.messages().locator("li.message")).to_have_count(50)
    assert await shown_texts(person) == [f"message {n}" for n in range(80, 130)]
    start = person.page.get_by_text("This is the beginning of the conversation.")
    for _ in range(50):  # bounded; each pass gives a slow machine time to answer
        if await start.is_visible():
            break
        await person.messages().evaluate("log => { log.scrollTop = 0; }")
        await person.page.wait_for_timeout(300)

    await expect(start).to_be_visible()
    assert await shown_ids(person) == sent
    assert await shown_texts(person) == [f"message {n}" for n in range(130)]


def crash(server: ServerProcess) -> None:
    """SIGKILL: the streams drop without `event: shutdown`, as when the network goes."""
    server.signal(signal.SIGKILL)
    server.wait(30)
    server.stop()


@pytest.mark.parametrize("stop", [ServerProcess.stop, crash], ids=["drained", "killed"])
async def test_a_server_restart_mid_conversation_loses_and_doubles_nothing(
    people: People, server: ServerProcess, stop: Callable[[ServerProcess], None]
) -> None:
    alice, alice_user = await people()
    bob, bob_user = await people()
    await alice.start_conversation(bob_user.username)
    await alice.send("before the restart")
    await bob.conversation_with(alice_user.username).click()
    await expect(bob.messages().locator(".text")).to_have_text(["before the restart"])

    await asyncio.to_thread(stop, server)
    # Sent while the server is away: shown at once as pending, delivered once it is back.
    await alice.send("while the server is away")
    await expect(alice.messages().locator("li.pending")).to_have_count(1)
    await asyncio.to_thread(server.start)
    # Sent before either stream has come back: replayed by the resume, not lost.
    await send_api(server, bob_user, alice_user, "right after the restart")
    await alice.send("after the restart")

    async with httpx.AsyncClient(base_url=server.url, headers=alice_user.auth) as client:
        for _ in range(50):  # until the retried send has arrived
            listed = (await client.get(f"/conversations/{bob_user.id}/messages")).json()["messages"]
            if len(listed) == 4:
                break
            await asyncio.sleep(0.2)
    stored = [message["content"]["text"] for message in listed]
    assert sorted(stored) == sorted(["before the restart", "while the server is away",
                                     "right after the restart", "after the restart"])
    for person in (alice, bob):
        await expect(person.messages().locator(".text")).to_have_text(stored)
        await expect(person.messages().locator("li.pending")).to_have_count(0)
        assert await shown_ids(person) == [message["id"] for message in listed]


async def test_markup_in_messages_is_shown_as_text_and_never_runs(
    people: People, server: ServerProcess
) -> None:
    alice, alice_user = await people()
    mallory = await api_user(server, '<img src=x onerror="window.pwned=1">')
    payloads = ['<img src=x onerror="window.pwned=2">', "<script>window.pwned=3</script>",
                '"><svg onload="window.pwned=4">', "<a href='javascript:window.pwned=5'>click</a>"]
    for payload in payloads:
        await send_api(server, mallory, alice_user, payload)

    await alice.conversation_with(mallory.username).click()

    await expect(alice.messages().locator(".text")).to_have_text(payloads)
    await expect(alice.page.get_by_role("heading", name=mallory.username)).to_be_visible()
    assert await alice.messages().locator("img, script, svg, a").count() == 0
    assert await alice.page.evaluate("() => window.pwned") is None


async def test_images_and_videos_are_shown_and_their_links_tell_nothing(
    people: People, server: ServerProcess
) -> None:
    alice, alice_user = await people()
    bob = await api_user(server)
    contents = [
        {"type": "image", "url": "https://images.example/cat.png", "width": 320, "height": 200},
        {"type": "video", "url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ", "source": "youtube"},
        {"type": "video", "url": "https://vimeo.com/76979871", "source": "vimeo"},
        {"type": "image", "url": "aGVsbG8gd29ybGQ=", "width": 64, "height": 64},
    ]
    async with httpx.AsyncClient(base_url=server.url, headers=bob.auth) as client:
        for content in contents:
            created = await client.post("/messages", json={"recipient": alice_user.id, "content": content})
            assert created.status_code == 201, created.text

    await alice.conversation_with(bob.username).click()

    image = alice.messages().locator("img")
    await expect(image).to_have_count(1)
    assert (await image.get_attribute("width"), await image.get_attribute("height")) == ("320", "200")
    await expect(alice.messages().get_by_text("Image: aGVsbG8gd29ybGQ=")).to_be_visible()
    for link in await alice.messages().get_by_role("link").all():
        assert await link.get_attribute("rel") == "noopener noreferrer"
        assert await link.get_attribute("target") == "_blank"
    # From the keyboard: a pointer click just after a cross-site frame appears can be routed to
    # that frame while Chromium sets it up, and be lost.
    for shown, play in enumerate(["Play YouTube video here", "Play Vimeo video here"], start=1):
        await alice.messages().get_by_role("button", name=play).press("Enter")
        await expect(alice.messages().locator("iframe")).to_have_count(shown)
    players = [await frame.get_attribute("src") for frame in await alice.messages().locator("iframe").all()]
    assert players == ["https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ",
                       "https://player.vimeo.com/video/76979871?dnt=1"]


async def test_notes_to_self(people: People) -> None:
    alice, _ = await people()
    await alice.page.get_by_role("button", name="New conversation").click()
    await alice.page.get_by_role("button", name="Notes to self").click()
    await alice.send("remember the milk")

    await expect(alice.conversation_with("Notes to self")).to_contain_text("remember the milk")
    await expect(alice.messages().locator("li.mine .text")).to_have_text(["remember the milk"])


async def test_sessions_can_be_seen_and_ended_and_the_password_changed(
    people: People, server: ServerProcess
) -> None:
    alice, user = await people()
    async with httpx.AsyncClient(base_url=server.url) as client:
        other = await client.post("/login", json={"username": user.username, "password": user.password},
                                  headers={"User-Agent": "curl/8.0"})
    other_token = {"Authorization": f"Bearer {other.json()['token']}"}

    await alice.page.get_by_role("button", name="Account").click()
    sessions = alice.page.get_by_role("list", name="Sessions").get_by_role("listitem")
    await expect(sessions).to_have_count(3)  # the browser's, the API user's, and curl's
    await expect(sessions.filter(has_text="This device")).to_have_count(1)
    await sessions.filter(has_text="curl").get_by_role("button", name=re.compile("^End session")).click()
    await expect(sessions).to_have_count(2)
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/users/me", headers=other_token)).status_code == 401

    await alice.page.get_by_label("Current password").fill("not my password")
    await alice.page.get_by_label("New password").fill("a brand new password")
    await alice.page.get_by_role("button", name="Change password").click()
    await expect(alice.page.locator("#password-status")).to_have_text("The current password is wrong.")
    await alice.page.get_by_label("Current password").fill(user.password)
    await alice.page.get_by_role("button", name="Change password").click()
    await expect(alice.page.locator("#password-status")).to_have_text(
        "Password changed. Every other session was logged out.")
    await expect(sessions).to_have_count(1)

    token = await alice.stored_token()
    await alice.page.get_by_role("button", name="Log out everywhere").click()
    await expect(alice.page.get_by_role("button", name="Log in")).to_be_visible()
    assert await alice.storage() == {"session": {}, "local": {}}
    async with httpx.AsyncClient(base_url=server.url) as client:
        revoked = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert revoked.status_code == 401


async def test_phone_width_shows_the_list_or_the_conversation(people: People, server: ServerProcess) -> None:
    phone, user = await people(viewport=PHONE)
    friend = await api_user(server)
    await send_api(server, friend, user, "hello from a phone-sized test")

    await phone.conversation_with(friend.username).click()
    await expect(phone.conversations()).to_be_hidden()
    await expect(phone.messages().locator(".text")).to_have_text(["hello from a phone-sized test"])
    await phone.screenshot("conversation-phone")
    await phone.page.get_by_role("button", name="Back to conversations").click()
    await expect(phone.conversations()).to_be_visible()
    await phone.screenshot("conversations-phone")


async def test_a_conversation_on_screen_has_no_serious_accessibility_violation(
    people: People, server: ServerProcess
) -> None:
    alice, alice_user = await people(await api_user(server, "Alice"), viewport=DESKTOP)
    grace, ken = await api_user(server, "Grace"), await api_user(server, "Ken")
    await send_api(server, ken, alice_user, "Are we still on for Friday?")
    for sender, recipient, text in [
        (grace, alice_user, "Did the deploy go out?"),
        (alice_user, grace, "Yes, 10 minutes ago. Rollout was clean."),
        (grace, alice_user, "Great! Latency looks lower already.\nI'll write it up."),
    ]:
        await send_api(server, sender, recipient, text)
    await alice.conversation_with("Grace").click()
    await alice.send("Thanks, send me the draft when it's ready")
    await expect(alice.messages().locator("li.pending")).to_have_count(0)
    async with httpx.AsyncClient(base_url=server.url, headers=grace.auth) as client:
        newest = (await client.get(f"/conversations/{alice_user.id}/messages")).json()["messages"][-1]
        assert (await client.put(f"/conversations/{alice_user.id}/read",
                                 json={"last_read": newest["id"]})).status_code == 200
    await expect(alice.messages().locator("li.mine").last.get_by_text("Seen")).to_be_visible()

    assert await serious_accessibility_violations(alice.page) == []
    shot = await alice.screenshot("conversation-desktop")
    if os.environ.get("CHATSVC_UPDATE_SCREENSHOT"):
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, README_SCREENSHOT)


def test_the_readme_shows_a_small_screenshot_of_the_client() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()

    assert "docs/web-client.png" in readme
    assert README_SCREENSHOT.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert README_SCREENSHOT.stat().st_size < 200_000


async def test_a_send_whose_answer_is_lost_is_retried_with_its_key_and_stored_once(
    people: People, server: ServerProcess
) -> None:
    alice, alice_user = await people()
    bob = await api_user(server)
    keys: list[str] = []

    async def lose_the_first_answer(route) -> None:
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) == 1:
            await route.fetch()  # the server stores the message; its answer never reaches the page
            await route.abort("connectionreset")
        else:
            await route.continue_()

    await alice.page.route("**/messages", lose_the_first_answer)
    await alice.start_conversation(bob.username)
    await alice.send("exactly once")

    await expect(alice.messages().locator("li.message[data-id]")).to_have_count(1)
    for _ in range(100):  # the retry may come after the stream has already shown the message
        if len(keys) == 2:
            break
        await asyncio.sleep(0.1)
    await expect(alice.messages().locator("li.message")).to_have_count(1)
    async with httpx.AsyncClient(base_url=server.url, headers=alice_user.auth) as client:
        listed = (await client.get(f"/conversations/{bob.id}/messages")).json()["messages"]
    assert [message["content"]["text"] for message in listed] == ["exactly once"]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert await shown_ids(alice) == [listed[0]["id"]]


async def test_an_image_sent_from_the_composer_is_shown_at_its_size(
    people: People, server: ServerProcess
) -> None:
    alice, _ = await people()
    bob = await api_user(server)
    await alice.start_conversation(bob.username)

    await alice.page.get_by_label("Kind of message").select_option("Image")
    await alice.page.get_by_label("Image URL").fill("https://images.example/diagram.png")
    await alice.page.get_by_label("Width").fill("300")
    await alice.page.get_by_label("Height").fill("120")
    await alice.page.get_by_role("button", name="Send").click()

    image = alice.messages().locator("li.message[data-id] img")
    await expect(image).to_have_attribute("src", "https://images.example/diagram.png")
    assert (await image.get_attribute("width"), await image.get_attribute("height")) == ("300", "120")


async def test_the_conversation_list_pages_in_as_it_is_scrolled(
    people: People, server: ServerProcess
) -> None:
    hub = await api_user(server)
    friends = [await api_user(server) for _ in range(35)]
    for friend in friends:
        await send_api(server, friend, hub, f"hi from {friend.username}")
    person, _ = await people(hub)

    items = person.conversations().get_by_role("listitem")
    await expect(items.first).to_contain_text(friends[-1].username)  # most recent first
    for _ in range(50):  # bounded; each pass gives a slow machine time to answer
        if await items.count() == len(friends):
            break
        await person.page.locator(".sidebar").evaluate("list => { list.scrollTop = list.scrollHeight; }")
        await person.page.wait_for_timeout(300)

    await expect(items).to_have_count(len(friends))
    names = [text.split("\n")[0] for text in await items.all_inner_texts()]
    assert names == [friend.username for friend in reversed(friends)]


async def test_the_keyboard_alone_opens_a_conversation_and_sends(
    people: People, server: ServerProcess
) -> None:
    alice, alice_user = await people()
    friend = await api_user(server)
    await send_api(server, friend, alice_user, "write back with the keyboard")
    page = alice.page

    conversation = alice.conversation_with(friend.username)
    for _ in range(10):  # Tab through the header and the list's button to the conversation
        await page.keyboard.press("Tab")
        if await conversation.evaluate("button => button === document.activeElement"):
            break
    await expect(conversation).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    await page.keyboard.type("first line")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("second line")
    await page.keyboard.press("Enter")

    await expect(alice.messages().locator("li.mine[data-id] .text")).to_have_text(["first line\nsecond line"])
    await expect(page.get_by_role("textbox", name="Message")).to_have_value("")
