"""Team mode for real: Streamlit's OpenID Connect login against a local OpenID provider
(oidc-provider-mock), in headless Chromium. Rita logs in as a reviewer, decides a photo, may not
train, load a server folder or export, and logs out; Ada logs in as an admin, sees Rita's decision
under Rita's name in the history, undoes it (the undo under her own name) and may train and
export. Eve's provider says her email is not verified: she is refused, sees why, and may log out. Rita
and Sam work one shared queue at once and never see the same photo; Ada reads their effort on
the Team page. Screenshots land in `test-artifacts/` (login-*.png, team.png)."""

from __future__ import annotations

import os
import time

import pytest

from core.access.roles import ACCESS_ENV, DATA_ROOTS_ENV
from core.data.catalogue import load_catalogue
from core.labels.store import LabelStore
from core.workspace import workspace_dir
from dashboard.text import unlinked

from browser_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, dashboard_server, free_port, require_browser, wait_idle
from conftest import tiny_run_workspace

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ADA, RITA, SAM = "ada@example.com", "rita@example.com", "sam@example.com"
NAMES = {ADA: "Ada Admin", RITA: "Rita Reviewer", SAM: "Sam Second"}
EVE = "eve@example.com"  # her provider has not verified her address: were it verified, she would be a reviewer


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A dashboard in team mode (secrets with [auth] pointing at a local OpenID provider, an access
    file) on a workspace with one finished tiny run of its own (not conftest's shared one: Rita's and
    Ada's decisions go into its database); yields (its URL, the demo catalogue)."""
    require_browser()
    oidc = pytest.importorskip("oidc_provider_mock", reason="oidc-provider-mock is not installed")
    users = [oidc.User(sub=email, claims={"email": email, "email_verified": True, "name": name})
             for email, name in NAMES.items()]
    users.append(oidc.User(sub=EVE, claims={"email": EVE, "email_verified": False, "name": "Eve"}))
    with tiny_run_workspace(tmp_path_factory, seed=7) as (record, demo, home), \
            oidc.run_server_in_thread(user_claims=users) as provider:
        port = free_port()
        secrets = home / "secrets.toml"
        secrets.write_text(
            "[auth]\n"
            f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
            'cookie_secret = "a long random test secret, never used outside this test"\n'
            'client_id = "fashion-tagger"\nclient_secret = "any: the mock takes every client"\n'
            f'server_metadata_url = "http://localhost:{provider.server_port}/.well-known/openid-configuration"\n')
        access = home / "access.toml"
        access.write_text(f'admin = ["{ADA}"]\nreviewer = ["@example.com"]\n')
        env = {**os.environ, "HF_HUB_OFFLINE": "1", ACCESS_ENV: str(access)}
        env.pop(DATA_ROOTS_ENV, None)
        with dashboard_server(env, port, ("--secrets.files", str(secrets))) as url:
            yield url, load_catalogue(demo)


@pytest.fixture(scope="module")
def browser(team):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def log_in(browser, url: str, email: str):
    """A fresh browser context, logged in as `email` through the provider's page; returns its page."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name=email).click()  # the provider's "Authenticate predefined users"
    page.get_by_text(unlinked(f"{NAMES[email]} ({email})")).first.wait_for()
    wait_idle(page)
    return page


def go_to(page, url: str, path: str, heading: str) -> None:
    page.goto(f"{url}/{path}")
    page.get_by_role("heading", name=heading, exact=True).wait_for()
    wait_idle(page)


def upload(page, photo) -> None:
    page.locator('input[type="file"]').set_input_files(str(photo))
    page.get_by_text("of 1 reviewed").first.wait_for()
    wait_idle(page)


def open_history(page) -> None:
    page.get_by_text("History of this item").click()
    page.get_by_text("Undo a decision").wait_for()
    wait_idle(page)


def test_a_reviewer_and_an_admin_log_in_and_do_what_their_roles_allow(team, browser):
    url, catalogue = team
    photo = catalogue.image_path(int(catalogue.frame["id"].iloc[0]))

    page = browser.new_context().new_page()  # before logging in: the login screen, nothing else
    page.goto(url)
    page.get_by_role("button", name="Log in").wait_for()
    assert page.get_by_text("Dataset").count() == 0
    page.screenshot(path=str(ARTIFACTS / "login-screen.png"))
    page.context.close()

    rita = log_in(browser, url, RITA)
    rita.get_by_text(unlinked("Team mode: you are Rita Reviewer (rita@example.com), reviewer.")).wait_for()
    assert rita.get_by_label("Your name").count() == 0  # the login names her: nothing to type
    assert rita.get_by_role("button", name="Open folder").count() == 0  # opening folders is for admins
    go_to(rita, url, "train", "Train")
    assert rita.get_by_role("button", name="Start training").is_disabled()
    go_to(rita, url, "review", "Review")
    assert rita.get_by_text("…or a folder of photos on this machine").count() == 0
    upload(rita, photo)
    rita.get_by_role("button", name="Save & next").click()
    rita.get_by_text("1 of 1 reviewed").wait_for()
    wait_idle(rita)
    open_history(rita)
    rita.screenshot(path=str(ARTIFACTS / "login-reviewer.png"), full_page=True)
    rita.get_by_role("tab", name="Export").click()
    rita.get_by_text("Exporting the corrected catalogue is for admins; you are a reviewer.").wait_for()
    rita.get_by_role("button", name="Log out").click()
    rita.get_by_role("button", name="End session").click()  # the provider's end of the session
    rita.get_by_role("button", name="Log in").wait_for()  # back on the login screen
    rita.context.close()
    history = LabelStore(workspace=workspace_dir()).log_frame(catalogue.root)
    assert set(history["reviewer"]) == {RITA}

    ada = log_in(browser, url, ADA)
    ada.get_by_text(unlinked("Team mode: you are Ada Admin (ada@example.com), admin.")).wait_for()
    assert ada.get_by_role("button", name="Open folder").count() == 1
    go_to(ada, url, "train", "Train")
    assert ada.get_by_role("button", name="Start training").is_enabled()
    go_to(ada, url, "review", "Review")
    upload(ada, photo)
    open_history(ada)
    # The history grid draws on a canvas; the undo choice under it names whose decision it is.
    undo_choice = ada.get_by_role("combobox", name="Undo a decision")
    assert f"{RITA} · review" in undo_choice.input_value()
    ada.get_by_role("button", name="Undo it").click()
    ada.get_by_text("0 of 1 reviewed").wait_for()
    wait_idle(ada)
    ada.screenshot(path=str(ARTIFACTS / "login-admin.png"), full_page=True)
    history = LabelStore(workspace=workspace_dir()).log_frame(catalogue.root)
    assert history["reviewer"].tolist() == [RITA] * (len(history) // 2) + [ADA] * (len(history) // 2)
    assert set(history[history["reviewer"] == ADA]["kind"]) == {"undo"}
    ada.get_by_role("tab", name="Export").click()
    ada.get_by_role("textbox", name="Export the corrected catalogue to").wait_for()
    ada.context.close()


def test_a_login_whose_email_is_not_verified_is_refused(team, browser):
    url, _ = team
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name=EVE).click()
    page.get_by_text(unlinked(f"your login provider says your email address {EVE} is not verified")).wait_for()
    wait_idle(page)
    assert page.get_by_text("Team mode: you are").count() == 0 and page.get_by_text("Dataset").count() == 0
    assert page.get_by_text("Traceback").count() == 0
    page.screenshot(path=str(ARTIFACTS / "login-unverified.png"))
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="End session").click()
    page.get_by_role("button", name="Log in").wait_for()
    page.context.close()


def test_two_reviewers_share_a_queue_without_collisions_and_the_lead_reads_their_effort(team, browser):
    import re

    from core.access.roles import Actor, Role
    from core.labels.leases import holders

    url, catalogue = team
    store = LabelStore(workspace=workspace_dir())
    before = store.log_frame(catalogue.root)["seq"].max()  # what the tests before decided
    for product_id in catalogue.frame["id"].iloc[1:5]:  # four new photos, in the dataset before anyone opens it
        store.add_image(catalogue.root, catalogue.image_path(int(product_id)).read_bytes() + b"\0",
                        f"new-{product_id}.jpg", Actor(ADA, Role.ADMIN))
    pages = {}
    for email in (RITA, SAM):
        page = log_in(browser, url, email)
        go_to(page, url, "review", "Review")
        queue_button = page.get_by_role("button", name=re.compile(r"Queue the \d+ new photos added to this dataset"))
        if not queue_button.is_visible():  # a queue kept from before: its sources are folded under its title
            page.get_by_text(re.compile("^Queue: ")).first.click()
        queue_button.click()
        page.get_by_text("reviewed").first.wait_for()
        wait_idle(page)
        pages[email] = page
    queue = [item.item for item in store.dataset_items(catalogue.root) if item.kind == "external"]
    held = holders(store, queue)
    # One photo each, never the same one (nor the photo Ada, the test before, still holds: it was
    # open on her screen when her window closed, and her hold runs out after LEASE_SECONDS).
    assert sorted(who for who in held.values() if who != ADA) == [RITA, SAM]
    for email in (RITA, SAM):
        pages[email].get_by_role("button", name="Save & next").click()
        wait_idle(pages[email])
        pages[email].screenshot(path=str(ARTIFACTS / f"login-shared-queue-{email.split('@')[0]}.png"), full_page=True)
    for _ in range(60):  # the saves land as their reruns finish
        decided = store.log_frame(catalogue.root)
        decided = decided[(decided["field"] == "status") & decided["reviewer"].isin([RITA, SAM])
                          & (decided["seq"] > before)]
        if set(decided["reviewer"]) == {RITA, SAM}:
            break
        time.sleep(0.5)
    assert set(decided["reviewer"]) == {RITA, SAM} and decided["product_id"].is_unique  # nobody decided one twice
    for page in pages.values():
        page.context.close()

    ada = log_in(browser, url, ADA)
    go_to(ada, url, "team", "Team")
    ada.get_by_text("Effort per reviewer and day").wait_for()
    wait_idle(ada)
    ada.screenshot(path=str(ARTIFACTS / "team.png"), full_page=True)
    assert ada.get_by_text("Traceback").count() == 0
    ada.context.close()
