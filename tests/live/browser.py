"""The browser tests' tools: Debian's Chromium under Playwright, people using the web client, artifacts.

Playwright drives the system's `chromium` (the Debian package; Playwright's own browser download
is neither needed nor used). Each browser test module starts one server and one browser; each
person is a browser context of their own (their own storage, as two people on two machines).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from chatsvc.testing import ServerProcess, User, require_program, sign_up_and_log_in
from tests import PROJECT_ROOT

# Screenshots and traces of the browser tests: kept after the run, ignored by git.
ARTIFACTS = PROJECT_ROOT / ".artifacts" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1200, "height": 760}
PHONE = {"width": 390, "height": 760}
PASSWORD = "correct horse"  # of everyone signed up in the browser
# Long enough for a loaded machine running the rest of the suite; never a timing assertion.
WAIT_MS = 15_000
# Every Content-Security-Policy violation on a page, kept where the test can read it.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Debian Chromium, driven by Playwright."""
    executable = require_program("chromium", "chromium")
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


# The documentation networks of RFC 5737, host by host: never the same address twice in a run (a
# random pick repeated one whose bucket a rate-limit test had filled).
_ADDRESSES = itertools.cycle([f"{network}.{host}" for network in ("203.0.113", "198.51.100", "192.0.2")
                              for host in range(1, 255)])


def documentation_address() -> str:
    """An address for `X-Forwarded-For` that no other person of the run has: its own rate-limit bucket."""
    return next(_ADDRESSES)


class Person:
    """Someone using the web client in a browser context of their own."""

    def __init__(self, context: BrowserContext, page: Page, server: ServerProcess, address: str) -> None:
        self.address = address  # the X-Forwarded-For its browser sends
        self.context = context
        self.page = page
        self.server = server
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    @classmethod
    async def arrive(cls, browser: Browser, server: ServerProcess, *, viewport: dict[str, int] = DESKTOP,
                     **options: Any) -> Person:
        """A new person opening the client (from an address of their own, for the rate limiter)."""
        address = documentation_address()
        context = await browser.new_context(viewport=viewport, base_url=server.url,
                                            extra_http_headers={"X-Forwarded-For": address}, **options)
        context.set_default_timeout(WAIT_MS)
        await context.add_init_script(RECORD_VIOLATIONS)
        page = await context.new_page()
        await page.goto("/")
        return cls(context, page, server, address)

    async def leave(self) -> None:
        await self.context.close()

    # ---- signed out ----

    async def fill_credentials(self, username: str, password: str) -> None:
        await self.page.get_by_role("textbox", name="Username").fill(username)
        await self.page.get_by_label("Password", exact=True).fill(password)

    async def sign_up(self, username: str, password: str = PASSWORD) -> None:
        await self.fill_credentials(username, password)
        await self.page.get_by_role("button", name="Sign up").click()
        await self.expect_signed_in()

    async def log_in(self, username: str, password: str, *, stay: bool = False) -> None:
        await self.fill_credentials(username, password)
        if stay:
            await self.page.get_by_label("Stay signed in").check()
        await self.page.get_by_role("button", name="Log in").click()
        await self.expect_signed_in()

    async def expect_signed_in(self) -> None:
        await expect(self.page.get_by_role("button", name="Log out", exact=True)).to_be_visible()
        await expect(self.page.get_by_role("status").filter(has_text="Live")).to_be_visible()

    async def log_out(self) -> None:
        await self.page.get_by_role("button", name="Log out", exact=True).click()
        await expect(self.page.get_by_role("button", name="Log in")).to_be_visible()

    def auth_error(self):
        return self.page.locator("#auth-error")

    # ---- conversations ----

    def conversations(self):
        return self.page.get_by_role("list", name="Conversations")

    def conversation_with(self, name: str):
        return self.conversations().get_by_role("button", name=re.compile("^" + re.escape(name)))

    def messages(self):
        return self.page.get_by_role("log", name="Messages")

    async def start_conversation(self, username: str) -> None:
        await self.page.get_by_role("button", name="New conversation").click()
        await self.page.get_by_role("textbox", name="Username").fill(username)
        await self.page.get_by_role("button", name="Open").click()
        await expect(self.page.get_by_role("heading", name=username)).to_be_visible()

    async def send(self, text: str) -> None:
        await self.page.get_by_role("textbox", name="Message").fill(text)
        await self.page.get_by_role("textbox", name="Message").press("Enter")

    # ---- what the page holds ----

    async def stored_token(self) -> str:
        stored = await self.storage()
        (saved,) = [*stored["session"].values(), *stored["local"].values()]
        return json.loads(saved)["token"]

    async def storage(self) -> dict[str, Any]:
        return await self.page.evaluate(
            "() => ({session: {...sessionStorage}, local: {...localStorage}})")

    async def csp_violations(self) -> list[str]:
        return await self.page.evaluate("() => window.__cspViolations")

    async def screenshot(self, name: str, **options: Any) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), **options)
        return path


class People:
    """The people of one test: each arrives in a browser context of their own; at the end, each
    page is checked for Content-Security-Policy violations and uncaught errors, then closed."""

    def __init__(self, browser: Browser, server: ServerProcess) -> None:
        self.browser = browser
        self.server = server
        self.present: list[Person] = []

    async def arrive(self, **options: Any) -> Person:
        """Someone who has just opened the client, signed out."""
        person = await Person.arrive(self.browser, self.server, **options)
        self.present.append(person)
        return person

    async def __call__(self, user: User | None = None, **options: Any) -> tuple[Person, User]:
        """Someone logged in as `user` (a new one made through the API when not given)."""
        user = user or await api_user(self.server)
        person = await self.arrive(**options)
        await person.log_in(user.username, user.password)
        return person, user

    async def check_and_leave(self) -> None:
        for person in self.present:
            assert await person.csp_violations() == [], person.page.url
            assert person.errors == [], person.page.url
            await person.leave()


async def serious_accessibility_violations(page: Page) -> list[tuple[str, str, str]]:
    """What axe finds on the page that is serious or critical: (rule, impact, what it asks)."""
    from axe_playwright_python.async_playwright import Axe

    results = await Axe().run(page)
    return [(violation["id"], violation["impact"], violation["help"])
            for violation in results.response["violations"] if violation["impact"] in ("serious", "critical")]


async def api_user(server: ServerProcess, username: str | None = None) -> User:
    """A user made through the API, from an address of its own (so no rate-limit bucket fills)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10,
                                 headers={"X-Forwarded-For": documentation_address()}) as client:
        return await sign_up_and_log_in(client, username)
