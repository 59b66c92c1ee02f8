"""Roles, the access file, allowed folders (core.access.roles), the logins accepted (a verified email),
and the refusals of the functions that train, export and open datasets when the person may not
(the run registry records who asked)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core import workspace
from core.access.roles import (
    ACCESS_ENV,
    DATA_ROOTS_ENV,
    AccessConfig,
    AccessConfigError,
    AccessDenied,
    Actor,
    FolderRefused,
    LoginRefused,
    Permission,
    Role,
    VerifiedClaim,
    allowed_roots,
    command_line_actor,
    dataset_dir_for,
    load_access_config,
    login_email,
    require,
    require_folder,
)
from core.data import CatalogueError
from core.data.catalogue import load_catalogue
from core.data.demo import generate_demo
from core.labels.corrections import export_dataset
from core.labels.store import LabelStore
from training.config import TrainConfig
from training.launcher import cancel_run, launch_evaluation, launch_run, resume_run
from training.registry import RunRegistry

from conftest import ANN, BOB


@pytest.fixture
def home(workspace_home, monkeypatch):
    """An empty workspace of its own, no dataset configured, no extra roots, no access file set."""
    for name in (DATA_ROOTS_ENV, ACCESS_ENV):
        monkeypatch.delenv(name, raising=False)
    return workspace_home


def test_each_role_may_what_the_one_before_may_and_more():
    viewer, reviewer, admin = (Actor("p@example.com", role) for role in Role)
    assert [permission for permission in Permission if viewer.may(permission)] == [Permission.READ]
    assert [permission for permission in Permission if reviewer.may(permission)] == [Permission.READ, Permission.REVIEW]
    assert all(admin.may(permission) for permission in Permission)
    with pytest.raises(AccessDenied, match="p@example.com is a reviewer and may not export a corrected catalogue: "
                                           "that needs the admin role"):
        require(reviewer, Permission.EXPORT)
    with pytest.raises(TypeError, match="expected the acting person"):
        require("ann", Permission.REVIEW)
    assert command_line_actor().role == Role.ADMIN and command_line_actor().roots is None


def test_a_person_is_a_checked_name(home):
    assert Actor("  ann@example.com ", Role.REVIEWER).identity == "ann@example.com"
    for bad, rule in (("", "must not be empty"), ("=cmd|' /C calc'!A0", "must not start with"),
                      ("ann\nbob", "must not hold control or invisible"),
                      ("a" * 256, "must be at most 255 characters, got 256")):
        with pytest.raises(ValueError, match=f"a person's name {rule}"):
            Actor(bad, Role.REVIEWER)
    with pytest.raises(AccessConfigError, match="role: unknown role 'owner'; valid: viewer, reviewer, admin"):
        Actor("ann", "owner")


def test_the_access_file_maps_emails_then_domains_then_the_default(home):
    (home / "access.toml").write_text(
        'default_role = "viewer"\nadmin = ["Ann@Example.com"]\nreviewer = ["@example.com"]\n'
        'viewer = ["guest@partner.org"]\ndata_roots = ["~/catalogues"]\n')
    config = load_access_config()
    assert config.role_of("ann@example.com") == Role.ADMIN  # the email wins over its domain, any case
    assert config.role_of("bob@EXAMPLE.com") == Role.REVIEWER
    assert config.role_of("guest@partner.org") == config.role_of("eve@elsewhere.net") == Role.VIEWER
    assert config.data_roots == (Path("~/catalogues").expanduser().resolve(),)
    assert load_access_config(home / "missing.toml").role_of("ann@example.com") == Role.VIEWER  # no file: viewers


@pytest.mark.parametrize("content, message", [
    ('admin = ["ann@example.com"]\nreviewer = ["ann@example.com"]\n',
     "'ann@example.com' is listed as both reviewer and admin"),
    ('owner = ["ann@example.com"]\n',
     "unknown key\\(s\\) owner; valid: admin, data_roots, default_role, email_verified_claim, reviewer, viewer"),
    ('email_verified_claim = "never"\n', "email_verified_claim: 'never' is not one of 'required', 'optional'"),
    ('admin = "ann@example.com"\n', "admin must be a list of strings, got 'ann@example.com'"),
    ('admin = ["ann"]\n', "admin: 'ann' is neither an email nor an @domain"),
    ('default_role = "root"\n', "default_role: unknown role 'root'"),
    ('admin = [\n', "cannot be read as TOML"),
])
def test_a_bad_access_file_is_refused_naming_the_problem(home, content, message):
    (home / "access.toml").write_text(content)
    with pytest.raises(AccessConfigError, match=message):
        load_access_config()


@pytest.mark.parametrize("claims", [
    {"email": "Ann@Example.com", "email_verified": True},
    {"email": "ann@example.com", "email_verified": "true"},  # some providers send the claim as text
])
def test_a_login_is_its_verified_email(claims):
    assert login_email(claims, AccessConfig()) == "ann@example.com"


@pytest.mark.parametrize("claims, message", [
    ({"email": "ann@example.com", "email_verified": False}, "says your email address ann@example.com is not verified"),
    ({"email": "ann@example.com", "email_verified": "False"},
     "says your email address ann@example.com is not verified"),
    ({"email": "ann@example.com"}, "does not say whether your email address ann@example.com is verified .* "
                                   'email_verified_claim = "optional" in the access file'),
    ({"email": "ann@example.com", "email_verified": "yes"}, "sent email_verified = 'yes' for ann@example.com, "
                                                            "neither true nor false"),
    ({"email_verified": True}, "sent no email address"),
])
def test_a_login_without_a_verified_email_is_refused_saying_why(claims, message):
    with pytest.raises(LoginRefused, match=message):
        login_email(claims, AccessConfig())


def test_the_access_file_may_accept_logins_without_the_claim_but_never_an_unverified_one(home):
    assert load_access_config().email_verified_claim == VerifiedClaim.REQUIRED
    (home / "access.toml").write_text('email_verified_claim = "optional"\n')
    config = load_access_config()
    assert login_email({"email": "ann@example.com"}, config) == "ann@example.com"
    with pytest.raises(LoginRefused, match="is not verified"):
        login_email({"email": "ann@example.com", "email_verified": False}, config)


def test_allowed_roots_default_to_the_workspace_and_the_dataset_and_the_variable_wins(home, tmp_path, monkeypatch):
    data = tmp_path / "shop" / "catalogue"
    assert allowed_roots() == (home.resolve(),)
    monkeypatch.setenv(workspace.DATA_ENV, str(data))
    assert allowed_roots() == (home.resolve(), data.resolve())
    (home / "access.toml").write_text(f'data_roots = ["{tmp_path / "from-file"}"]\n')
    assert allowed_roots()[-1] == (tmp_path / "from-file").resolve()
    monkeypatch.setenv(DATA_ROOTS_ENV, os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert allowed_roots() == (home.resolve(), data.resolve(), (tmp_path / "a").resolve(), (tmp_path / "b").resolve())


def test_folders_are_resolved_before_the_check_and_refused_alike_whether_they_exist_or_not(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "secret"
    (root / "data").mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside)
    admin = Actor("ann", Role.ADMIN, roots=(root.resolve(),))
    assert require_folder(admin, Permission.EXPORT, root / "data" / ".." / "data") == (root / "data").resolve()
    assert require_folder(admin, Permission.EXPORT, root / "new-export") == (root / "new-export").resolve()
    messages = []
    for path in (outside, tmp_path / "no-such-folder", root / ".." / "secret", root / "link", "/etc", "x\0y"):
        with pytest.raises(FolderRefused) as refused:
            require_folder(admin, Permission.EXPORT, path)
        messages.append(str(refused.value).replace(str(path), "PATH"))
    assert len(set(messages)) == 1, messages  # nothing tells which exist
    assert messages[0] == f"PATH: not a folder this dashboard may use; it may use folders under {root.resolve()} " \
                          f"({DATA_ROOTS_ENV} adds more)"
    with pytest.raises(AccessDenied, match="is a reviewer and may not export"):  # the role first
        require_folder(Actor("bob", Role.REVIEWER, roots=(root,)), Permission.EXPORT, root)


def test_opening_a_dataset_checks_the_role_the_path_and_the_folder_found_in_it(tmp_path):
    root = tmp_path / "root"
    demo = generate_demo(root / "demo", n=50, seed=1)
    admin = Actor("ann", Role.ADMIN, roots=(root.resolve(),))
    viewer = Actor("vic", Role.VIEWER, roots=(root.resolve(),))
    assert dataset_dir_for(admin, demo) == demo.resolve()
    assert dataset_dir_for(viewer, demo, Permission.READ) == demo.resolve()  # a link: anyone, inside the roots
    with pytest.raises(AccessDenied, match="vic is a viewer and may not open a folder as the dataset"):
        dataset_dir_for(viewer, demo)
    with pytest.raises(FolderRefused):
        dataset_dir_for(viewer, tmp_path, Permission.READ)
    with pytest.raises(CatalogueError, match="does not exist"):  # inside the roots, what is wrong is said
        dataset_dir_for(admin, root / "gone")


@pytest.mark.parametrize("part", ["images", "styles.csv"])
def test_a_dataset_whose_photos_or_catalogue_link_outside_the_roots_is_refused_as_the_folder_is(tmp_path, part):
    root, outside = tmp_path / "root", tmp_path / "secret"
    demo = generate_demo(root / "demo", n=50, seed=1)
    secret = generate_demo(outside / "demo", n=50, seed=2)
    (demo / part).rename(tmp_path / "moved")
    (demo / part).symlink_to(secret / part)
    admin = Actor("ann", Role.ADMIN, roots=(root.resolve(),))
    viewer = Actor("vic", Role.VIEWER, roots=(root.resolve(),))
    for actor, permission in ((admin, Permission.OPEN_FOLDER), (viewer, Permission.READ)):
        with pytest.raises(FolderRefused) as refused:
            dataset_dir_for(actor, demo, permission)
        assert str(refused.value) == f"{demo.resolve() / part}: not a folder this dashboard may use; it may use " \
                                     f"folders under {root.resolve()} ({DATA_ROOTS_ENV} adds more)"
    (demo / part).unlink()
    (tmp_path / "moved").rename(root / "kept")
    (demo / part).symlink_to(root / "kept")  # a link to elsewhere under the roots is fine
    assert dataset_dir_for(admin, demo) == demo.resolve()


@pytest.fixture
def demo(home, tmp_path):
    return generate_demo(tmp_path / "data" / "demo", n=50, seed=2)


def tiny(demo) -> TrainConfig:
    return TrainConfig.from_recipe("default").with_overrides([f"data={demo}", "epochs=1", "image_size=64",
                                                              "max_samples=50"])


def test_only_an_admin_launches_cancels_resumes_and_evaluates_and_the_registry_names_who(home, demo):
    registry = RunRegistry()
    for call in (lambda: launch_run(tiny(demo), BOB, registry), lambda: cancel_run("nope", BOB, registry),
                 lambda: resume_run("nope", BOB, registry)):
        with pytest.raises(AccessDenied, match="bob is a reviewer and may not start, cancel or resume training runs"):
            call()
    assert registry.list() == []  # nothing registered, nothing started
    queued = registry.create(tiny(demo).to_dict(), ANN.identity)
    with pytest.raises(AccessDenied, match="may not start evaluations"):
        launch_evaluation(queued, demo, BOB)
    outside_admin = Actor("ann", Role.ADMIN, roots=(home.resolve(),))
    with pytest.raises(FolderRefused):  # the demo lies outside the workspace: not a folder this admin may use
        launch_run(tiny(demo), outside_admin, registry)
    cancelled = cancel_run(queued.id, Actor("chief@example.com", Role.ADMIN), registry)
    assert (cancelled.launched_by, cancelled.cancelled_by, cancelled.resumed_by) == ("ann", "chief@example.com", None)
    reopened = registry.reopen(queued.id, "dee@example.com")
    assert reopened.resumed_by == "dee@example.com"
    with pytest.raises(ValueError, match="who asked must be a person's identity"):
        registry.create(tiny(demo).to_dict(), " ")


def test_only_an_admin_exports_and_only_under_their_roots(home, demo, tmp_path):
    catalogue, store = load_catalogue(demo), LabelStore(workspace=home)
    with pytest.raises(AccessDenied, match="bob is a reviewer and may not export a corrected catalogue"):
        export_dataset(catalogue, store, home / "exports" / "one", BOB)
    admin = Actor("ann", Role.ADMIN, roots=(home.resolve(),))
    with pytest.raises(FolderRefused):
        export_dataset(catalogue, store, tmp_path / "elsewhere", admin)
    assert not (home / "exports").exists() and not (tmp_path / "elsewhere").exists()
    assert export_dataset(catalogue, store, home / "exports" / "one", admin).rows == 50
