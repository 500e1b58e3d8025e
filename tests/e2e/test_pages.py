"""The site in a real browser: the pages load and look right, and a broadcaster can create a
stream and see its key exactly once. Screenshots go to test-artifacts/e2e/.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _no_console_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def test_home_page(onair_server: object, page: Page) -> None:
    errors = _no_console_errors(page)
    response = page.goto("/")

    assert response is not None
    assert response.ok
    expect(page).to_have_title("Live now · OnAir")
    expect(page.get_by_role("heading", name="Live now")).to_be_visible()
    expect(page.get_by_text("Nobody is live right now.")).to_be_visible()
    # The stylesheet loaded: the header is dark, not the browser's default white.
    header_bg = page.locator(".site-header").evaluate("el => getComputedStyle(el).backgroundColor")
    assert header_bg == "rgb(17, 19, 24)"
    _shot(page, "home")
    assert errors == []


def test_admin_login_page(onair_server: object, page: Page) -> None:
    page.goto("/admin/")

    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))
    expect(page.locator("#id_username")).to_be_visible()
    expect(page.locator("#site-name")).to_contain_text("OnAir administration")
    _shot(page, "admin-login")


def test_api_docs(onair_server: object, page: Page) -> None:
    page.goto("/api/docs/")

    # Swagger UI renders the schema client-side: wait for the operations to appear.
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("OnAir API")
    expect(
        page.locator(".opblock-summary-path", has_text="/api/v1/streams/{slug}/start/")
    ).to_be_visible()
    _shot(page, "api-docs")


def test_staff_admin_shows_streams(logged_in_page: Page, onair_server: object) -> None:
    page = logged_in_page
    page.goto("/admin/broadcast/stream/")

    expect(page.locator("#result_list")).to_contain_text("OnAir demo")
    _shot(page, "admin-streams")


def test_create_stream_and_see_the_key_once(
    onair_server: object, page: Page, login: Callable[[Page, str, str], None]
) -> None:
    server = onair_server
    server.create_user("eve", "a-long-pass-phrase")  # type: ignore[attr-defined]
    errors = _no_console_errors(page)
    login(page, "eve", "a-long-pass-phrase")
    expect(page.get_by_text("No streams yet.")).to_be_visible()

    page.fill("#id_title", "Eve's first show")
    page.fill("#id_description", "Testing the waters")
    page.select_option("#id_visibility", "unlisted")
    page.click("text=Create stream")

    reveal = page.locator("#new-key")
    expect(reveal).to_contain_text("this is the only time it is shown")
    secret = page.locator("#new-key-secret").inner_text()
    assert re.fullmatch(r"sk_[A-Za-z0-9_-]{40,}", secret)
    row = page.locator("tr", has_text="Eve's first show")
    expect(row).to_contain_text("Idle")
    expect(row.locator(".masked-key")).to_have_text(secret[:8] + "…")
    _shot(page, "my-streams-new-key")

    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)
    assert secret not in page.content()
    expect(page.locator("tr", has_text="Eve's first show")).to_be_visible()

    # A new key asks first: declined, nothing changes.
    new_key = page.locator("tr", has_text="Eve's first show").get_by_role("button", name="New key")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    new_key.click()
    expect(page.locator("#new-key")).to_have_count(0)
    assert asked
    assert "stops working at once" in asked[0]

    # Accepted: shown once too, and different.
    page.once("dialog", lambda dialog: dialog.accept())
    new_key.click()
    rotated = page.locator("#new-key-secret").inner_text()
    assert rotated != secret
    expect(page.locator(".message.success")).to_contain_text("the old one no longer works")
    _shot(page, "my-streams-rotated")
    assert errors == []


def test_invalid_form_shows_field_errors(logged_in_page: Page) -> None:
    page = logged_in_page
    page.click("text=Create stream")

    expect(page.locator(".field.has-error .error")).to_have_text("This field is required.")
    _shot(page, "my-streams-invalid")
