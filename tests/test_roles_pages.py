"""Team mode in AppTest: `[auth]` in the secrets, the login's identity in `at.user`, roles from the
access file. What each role sees and can do on each page, that the name comes from the login (never
typed, never from the address), whose name the history shows, a login without a verified email
refused, and a dataset link outside the allowed folders refused. The real login, through a real
OpenID provider, is test_browser_login."""

from __future__ import annotations

import shutil

import pytest
from streamlit.testing.v1 import AppTest

from core.access.roles import ACCESS_ENV, DATA_ROOTS_ENV
from core.data.catalogue import load_catalogue
from core.labels.store import LabelStore
from core.workspace import workspace_dir

from conftest import REPO, shown, tiny_run_workspace

HOME = str(REPO / "dashboard" / "Home.py")
REVIEW, TRAIN, EXPLORE = "../pages/review.py", "../pages/train.py", "../pages/explore.py"
AUTH = {  # never contacted in AppTest: st.login is not called
    "redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "a test secret",
    "client_id": "fashion-tagger", "client_secret": "unused",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}
ADA, RITA, VIC = "ada@example.com", "rita@example.com", "vic@partner.org"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run on a small demo, and an access file: ada an admin, example.com reviewers.
    The run is its own, not conftest's shared one: the tests write labels into its database."""
    with tiny_run_workspace(tmp_path_factory, seed=6) as (record, demo, home):
        access = home / "team-access.toml"
        access.write_text(f'admin = ["{ADA}"]\nreviewer = ["@example.com"]\n')
        patch = pytest.MonkeyPatch()
        patch.setenv(ACCESS_ENV, str(access))
        patch.delenv(DATA_ROOTS_ENV, raising=False)
        try:
            yield record, load_catalogue(demo), home
        finally:
            patch.undo()


def team_app(email: str | None, page: str | None = None, claims: dict | None = None, **query: str) -> AppTest:
    """The app as `email` sees it after logging in (None: before), their provider's ID token
    holding a verified email unless `claims` says otherwise (a claim None: not sent)."""
    at = AppTest.from_file(HOME, default_timeout=90)
    at.secrets["auth"] = AUTH
    user = {"is_logged_in": True, "email": email, "email_verified": True, "name": email.split("@")[0].title(),
            **(claims or {})} if email else {"is_logged_in": False}
    at.user = {claim: value for claim, value in user.items() if value is not None}
    for name, value in query.items():
        at.query_params[name] = value
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> list[str]:
    return [shown(element.value) for element in elements]


def button(at: AppTest, label: str):
    return next(element for element in at.button if element.label == label)


def keys(elements) -> set[str]:
    return {element.key for element in elements}


def test_nobody_reads_a_page_before_logging_in(run):
    at = team_app(None)
    assert [element.label for element in at.button] == ["Log in"]
    assert texts(at.title) == ["Fashion Tagger"] and not at.metric and not at.sidebar.text_input


def test_a_viewer_reads_and_can_do_nothing_else(run):
    at = team_app(VIC)
    assert texts(at.sidebar.text) == ["Vic (vic@partner.org) · viewer"]
    assert any("Team mode: you are Vic (vic@partner.org), viewer." == text for text in texts(at.caption))
    assert "review.reviewer" not in keys(at.text_input) and "dataset.folder" not in keys(at.text_input)
    assert at.metric  # the dataset's report: reading is what a viewer does
    train = team_app(VIC, TRAIN)
    assert train.button(key="train.start").disabled
    assert "Starting, cancelling and resuming runs is for admins; you are a viewer." in texts(train.caption)
    review = team_app(VIC, REVIEW)
    assert any(text.startswith("You are a viewer: you can read the decisions") for text in texts(review.info))
    assert "review.uploads" not in {element.key for element in review.get("file_uploader")}
    review.session_state["review.section"] = "Export"
    review.run()
    assert "review.export_to" not in keys(review.text_input)
    assert "Exporting the corrected catalogue is for admins; you are a viewer." in texts(review.caption)
    explore = team_app(VIC, EXPLORE)
    explore.session_state["explore.section"] = "Taxonomy"
    explore.run()
    assert explore.button(key="taxonomy_review").disabled


def test_a_reviewer_decides_as_their_login_and_undoes_only_their_own(run):
    record, catalogue, _ = run
    first = int(catalogue.frame["id"].iloc[0])
    photo = (f"{first}.jpg", catalogue.image_path(first).read_bytes(), "image/jpeg")
    # The address cannot name anyone else: the login does.
    at = team_app(RITA, REVIEW, **{"review.reviewer": "ada@example.com"})
    assert "review.reviewer" not in at.query_params and "review.reviewer" not in keys(at.text_input)
    assert "review.folder" not in keys(at.text_input)  # a folder on the server: admins only
    at.file_uploader(key="review.uploads").set_value([photo]).run()
    [item] = at.session_state["review.queue"]
    at.button(key="review_save").click().run()
    assert not at.exception, at.exception
    assert LabelStore(workspace=workspace_dir()).history(item)["reviewer"].unique().tolist() == [RITA]

    # ada, an admin, decides the same photo again; rita may not undo that, only her own.
    admin = team_app(ADA, REVIEW)
    admin.file_uploader(key="review.uploads").set_value([photo]).run()
    admin.button(key="review_skip").click().run()
    at = team_app(RITA, REVIEW)
    at.file_uploader(key="review.uploads").set_value([photo]).run()
    history = at.dataframe[-1].value
    assert history["reviewer"].unique().tolist() == [RITA, ADA] and history["reviewer"].iloc[-1] == ADA  # whose name
    choice = at.selectbox(key=f"review.undo_choice.{item}")
    assert len(choice.options) == 1 and RITA in choice.options[0] and ADA not in choice.options[0]
    at.session_state["review.section"] = "Export"
    at.run()
    assert "review.export_to" not in keys(at.text_input)


def test_an_admin_opens_folders_exports_trains_and_undoes_anyones_decision(run, tmp_path):
    record, catalogue, home = run
    second = int(catalogue.frame["id"].iloc[1])
    photo = (f"{second}.jpg", catalogue.image_path(second).read_bytes(), "image/jpeg")
    rita = team_app(RITA, REVIEW)
    rita.file_uploader(key="review.uploads").set_value([photo]).run()
    [item] = rita.session_state["review.queue"]
    rita.button(key="review_save").click().run()

    at = team_app(ADA)
    assert "dataset.folder" in keys(at.text_input) and texts(at.sidebar.text) == ["Ada (ada@example.com) · admin"]
    assert not team_app(ADA, TRAIN).button(key="train.start").disabled
    review = team_app(ADA, REVIEW)
    assert "review.folder" in keys(review.text_input)
    review.file_uploader(key="review.uploads").set_value([photo]).run()
    choice = review.selectbox(key=f"review.undo_choice.{item}")
    assert RITA in choice.options[0] and choice.value is not None
    button(review, "Undo it").click().run()
    assert not review.exception, review.exception
    history = LabelStore(workspace=workspace_dir()).history(item)
    assert history["reviewer"].tolist()[-2:] == [ADA, ADA] and history["kind"].iloc[-1] == "undo"
    review.session_state["review.section"] = "Export"
    review.run()
    # An export outside the allowed folders is refused, and says so without telling what exists.
    review.text_input(key="review.export_to").set_value(str(tmp_path / "elsewhere"))
    button(review, "Export").click().run()
    assert any("not a folder this dashboard may use" in text for text in texts(review.error))
    assert not (tmp_path / "elsewhere").exists()
    review.text_input(key="review.export_to").set_value(str(home / "exports" / "team"))
    button(review, "Export").click().run()
    assert review.success and (home / "exports" / "team" / "styles.csv").is_file()


def test_a_dataset_link_outside_the_allowed_folders_opens_the_default_and_reveals_nothing(run, tmp_path):
    _, catalogue, _ = run
    warnings = []
    for linked in (tmp_path, tmp_path / "no-such-folder"):
        at = team_app(ADA, **{"dataset_dir": str(linked)})
        assert at.session_state["dataset_dir"] == str(catalogue.root)  # the default, not the link
        [warning] = texts(at.warning)
        warnings.append(warning.replace(str(linked), "PATH"))
    assert warnings[0] == warnings[1] and "not a folder this dashboard may use" in warnings[0]


def test_a_dataset_inside_the_allowed_folders_whose_photos_link_outside_them_is_refused(run, tmp_path):
    _, catalogue, home = run
    secret = tmp_path / "secret" / "images"
    shutil.copytree(catalogue.images_dir, secret)
    linked = home / "linked"
    linked.mkdir()
    shutil.copyfile(catalogue.root / "styles.csv", linked / "styles.csv")
    (linked / "images").symlink_to(secret)
    try:
        at = team_app(ADA, **{"dataset_dir": str(linked)})
        assert at.session_state["dataset_dir"] == str(catalogue.root)  # the default, not the link
        [warning] = texts(at.warning)
        assert f"{linked.resolve() / 'images'}: not a folder this dashboard may use" in warning
    finally:
        shutil.rmtree(linked)


def test_a_photo_of_an_allowed_dataset_that_links_outside_the_allowed_folders_is_not_shown(run, tmp_path):
    """The dataset lies under the allowed folders, one photo file in its images/ is a link out of
    them: the Review page names the photo and why in its place, and shows nothing of it."""
    from core.access.roles import Actor, Role

    _, catalogue, _ = run
    product_id = int(catalogue.frame["id"].iloc[40])  # a row no other test here shows
    photo, secret = catalogue.image_path(product_id), tmp_path / "secret.jpg"
    photo.rename(secret)
    photo.symlink_to(secret)
    try:
        store = LabelStore(workspace=workspace_dir())
        [item] = store.add_catalogue_items(catalogue, [product_id], Actor(ADA, Role.ADMIN))
        at = AppTest.from_file(HOME, default_timeout=90)
        at.secrets["auth"] = AUTH
        at.user = {"is_logged_in": True, "email": "xena@example.com", "email_verified": True, "name": "Xena"}
        at.session_state["review.queue"] = [item.item]
        at.session_state["review.current"] = item.item
        at.run()
        at.switch_page(REVIEW).run()
        assert not at.exception, at.exception
        assert f"{photo.name}: lies outside the folders this dashboard may use once its links are followed: " \
               "not read" in texts(at.text)
        assert not at.get("image") and not at.get("imgs")
    finally:
        photo.unlink()
        secret.rename(photo)


def test_a_broken_access_file_shows_nothing(run, monkeypatch, tmp_path):
    (tmp_path / "access.toml").write_text('admin = "ada@example.com"\n')
    monkeypatch.setenv(ACCESS_ENV, str(tmp_path / "access.toml"))
    at = team_app(ADA)
    assert not at.metric and not at.sidebar.text_input
    assert "admin must be a list of strings" in texts(at.error)[0] and "Nothing can be shown" in texts(at.error)[0]


def test_a_login_without_a_verified_email_sees_nothing_but_why_and_may_log_out(run, monkeypatch, tmp_path):
    unverified = team_app(ADA, claims={"email_verified": False})
    silent = team_app(ADA, claims={"email_verified": None})  # a provider that sends no such claim
    for at in (unverified, silent):
        assert not at.metric and not at.sidebar.text and not at.sidebar.text_input
        assert [element.label for element in at.button] == ["Log out"]
    assert texts(unverified.error) == [
        "your login provider says your email address ada@example.com is not verified (email_verified is false); "
        "verify it with the provider, or log out and log in with another account. Nothing can be shown until this "
        "is fixed."]
    assert texts(silent.error)[0].startswith("your login provider does not say whether your email address "
                                             "ada@example.com is verified (it sent no email_verified claim)")
    # An access file that accepts a provider without the claim lets the second in, never the first.
    access = tmp_path / "access.toml"
    access.write_text(f'admin = ["{ADA}"]\nemail_verified_claim = "optional"\n')
    monkeypatch.setenv(ACCESS_ENV, str(access))
    assert texts(team_app(ADA, claims={"email_verified": None}).sidebar.text) == ["Ada (ada@example.com) · admin"]
    assert "is not verified" in texts(team_app(ADA, claims={"email_verified": False}).error)[0]


def test_the_team_page_shows_a_reviewer_their_own_numbers_and_an_admin_everyones(run):
    from core.access.roles import Actor, Role

    _, catalogue, _ = run
    store = LabelStore(workspace=workspace_dir())
    items = store.add_catalogue_items(catalogue, [int(i) for i in catalogue.frame["id"].iloc[-4:]],
                                      Actor(ADA, Role.ADMIN))
    for item in items:
        store.review(item.item, {"usage": "Casual"}, Actor(RITA, Role.REVIEWER), seconds=5.0)
        store.review(item.item, {"usage": "Sports"}, Actor("sam@example.com", Role.REVIEWER), seconds=7.0)
    rita = team_app(RITA, "../pages/team.py")
    effort = next(frame.value for frame in rita.dataframe if "seconds_per_decision" in frame.value.columns)
    assert set(effort["reviewer"]) == {RITA}
    assert not any("kappa" in frame.value.columns for frame in rita.dataframe)  # agreement: a lead's view
    assert "team.gold_count" not in [box.key for box in rita.number_input]
    ada = team_app(ADA, "../pages/team.py")
    effort = next(frame.value for frame in ada.dataframe if "seconds_per_decision" in frame.value.columns)
    assert {RITA, "sam@example.com"} <= set(effort["reviewer"])
    assert any("kappa" in frame.value.columns for frame in ada.dataframe)


def test_two_reviewers_on_one_shared_queue_see_different_photos_and_gold_is_mixed_in(run):
    from core.access.roles import Actor, Role
    from core.labels.leases import TeamSettings, holders, set_team_settings
    from core.labels.team import set_gold

    _, catalogue, _ = run
    store = LabelStore(workspace=workspace_dir())
    ada = Actor(ADA, Role.ADMIN)
    ids = [int(i) for i in catalogue.frame["id"].iloc[20:26]]  # rows no other test here decides
    items = [item.item for item in store.add_catalogue_items(catalogue, ids, ada)]
    sessions = []
    tia, uma = "tia@example.com", "uma@example.com"  # reviewers with no queue or decision from other tests
    for email in (tia, uma):
        at = AppTest.from_file(HOME, default_timeout=90)
        at.secrets["auth"] = AUTH
        at.user = {"is_logged_in": True, "email": email, "email_verified": True, "name": email}
        at.session_state["review.queue"] = items
        at.session_state["review.current"] = items[0]
        at.run()
        at.switch_page(REVIEW).run()
        assert not at.exception, at.exception
        sessions.append(at)
    shown = [at.session_state["review.current"] for at in sessions]
    assert shown[0] != shown[1] and holders(store, items) == dict(zip(shown, [tia, uma]))

    gold = [item.item for item in store.add_catalogue_items(catalogue, [int(catalogue.frame["id"].iloc[-1])], ada)]
    set_gold(store, gold, ada)
    set_team_settings(store, catalogue.root, TeamSettings(gold_share=0.5, double_share=0.0), ada)
    rita = sessions[0]
    rita.segmented_control(key="review.source").set_value("Catalogue: least confident first").run()
    rita.number_input(key="review.limit").set_value(4).run()
    rita.button(key="review.load_confident").click().run()
    assert not rita.exception, rita.exception
    assert gold[0] in rita.session_state["review.queue"] and len(rita.session_state["review.queue"]) == 5


def test_a_gold_item_one_reviewer_decided_goes_to_the_next_one_too_and_the_catalogue_keeps_it(run):
    """Yara saves a gold item of a shared queue: her answer counts for her, the catalogue keeps the
    trusted labels, and Zoe, on the same queue, still gets the gold item to decide."""
    from core.access.roles import Actor, Role
    from core.labels.team import decisions, set_gold

    _, catalogue, _ = run
    store = LabelStore(workspace=workspace_dir())
    [gold, earlier] = store.add_catalogue_items(catalogue, [int(catalogue.frame["id"].iloc[i]) for i in (50, 51)],
                                                Actor(ADA, Role.ADMIN))
    set_gold(store, [gold.item], Actor(ADA, Role.ADMIN))
    before = store.current([gold.item])[gold.item]
    yara = Actor("yara@example.com", Role.REVIEWER)
    store.review(earlier.item, {"season": "Winter"}, yara)  # a decision of hers before the gold one
    sessions = {}
    for email in ("yara@example.com", "zoe@example.com"):  # reviewers with no queue or decision from other tests
        at = AppTest.from_file(HOME, default_timeout=90)
        at.secrets["auth"] = AUTH
        at.user = {"is_logged_in": True, "email": email, "email_verified": True, "name": email}
        at.session_state["review.queue"] = [gold.item]
        at.session_state["review.current"] = gold.item
        at.run()
        at.switch_page(REVIEW).run()
        assert not at.exception, at.exception
        sessions[email] = at
    sessions["yara@example.com"].button(key="review_save").click().run()
    assert not sessions["yara@example.com"].exception, sessions["yara@example.com"].exception
    answers = decisions(store, catalogue.root)
    assert set(answers.loc[answers["item"] == gold.item, "reviewer"]) == {"yara@example.com"}
    assert answers.loc[answers["item"] == gold.item, "gold"].all()
    assert store.current([gold.item])[gold.item] == before  # unreviewed, its labels the trusted ones
    # An undo right after the answer does not reach past it to her earlier decision; a second one does.
    sessions["yara@example.com"].button(key="review_undo").click().run()
    assert [toast.value for toast in sessions["yara@example.com"].toast][0].startswith(
        "Your last decision cannot be undone")
    assert store.current([earlier.item])[earlier.item]["season"] == "Winter"
    sessions["yara@example.com"].button(key="review_undo").click().run()
    assert store.current([earlier.item])[earlier.item]["season"] != "Winter"
    zoe = sessions["zoe@example.com"]
    zoe.run()
    assert zoe.session_state["review.current"] == gold.item  # hers to decide as well
    assert not any("Every open photo" in info.value for info in zoe.info)


def test_a_decision_for_a_photo_whose_hold_ran_out_and_went_to_another_is_not_saved_anywhere(run):
    from core.access.roles import Actor, Role
    from core.labels.leases import claim, release

    _, catalogue, _ = run
    store = LabelStore(workspace=workspace_dir())
    vera, will = Actor("vera@example.com", Role.REVIEWER), Actor("will@example.com", Role.REVIEWER)
    ids = [int(i) for i in catalogue.frame["id"].iloc[30:34]]  # rows no other test here decides
    items = [item.item for item in store.add_catalogue_items(catalogue, ids, Actor(ADA, Role.ADMIN))]
    at = AppTest.from_file(HOME, default_timeout=90)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": vera.identity, "email_verified": True, "name": "Vera"}
    at.session_state["review.queue"] = items
    at.session_state["review.current"] = items[0]
    at.run()
    at.switch_page(REVIEW).run()
    held = at.session_state["review.current"]
    release(store, held, vera)  # her 5 minutes ran out while she looked away ...
    assert claim(store, held, will)  # ... and Will took the photo
    at.button(key="review_save").click().run()
    assert not at.exception, at.exception
    assert any(warning.value.startswith("Nothing was saved") for warning in at.warning)
    log = store.log_frame(catalogue.root)
    assert vera.identity not in set(log["reviewer"])  # not on the photo Will holds, not on the next one
    assert at.session_state["review.current"] != held
