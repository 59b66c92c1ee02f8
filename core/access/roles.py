"""Who may do what: roles, permissions, and the folders the dashboard may touch.

Team mode (login configured in .streamlit/secrets.toml): a person is the identity their OpenID
provider vouches for, their email; their role comes from the access file. Local mode (no login)
and the command line: one local user who owns the machine, an admin. The checks live here and in
the functions that write (the label store, the launcher, the photo-folder loader, the export), so
a refused call raises AccessDenied, naming who, their role and what was refused, whatever a page
shows or hides.

The access file, TOML, is the one FASHION_TAGGER_ACCESS names, else <workspace>/access.toml:

    default_role = "viewer"             # everyone else who logs in (viewer when left out)
    admin = ["ann@example.com"]         # emails, or "@example.com" for everyone at that domain
    reviewer = ["@example.com"]
    viewer = ["guest@partner.org"]
    data_roots = ["/data/catalogues"]   # FASHION_TAGGER_DATA_ROOTS (os.pathsep-separated) wins when set
    email_verified_claim = "required"   # or "optional" (VerifiedClaim)

An email listed is matched before its domain; one entry under two roles is refused. Without the
file, everyone who logs in is a viewer.

A login is its provider's `email` claim, and only when the provider says it verified that address
(`email_verified` true): anyone can put someone else's address on an account at many providers,
and a role follows the address. A login whose `email_verified` is false is refused; one without the
claim is refused too unless the access file says `email_verified_claim = "optional"`, for a
provider that verifies every address it sends and does not say so.

Allowed folders: the dashboard opens datasets, loads photos from and exports into folders under
its roots only: the workspace, the folder FASHION_TAGGER_DATA names, and the data roots, compared
once resolved (`~`, `..`, symbolic links). A refused path gets the same message whether it exists
or not. The command line has no roots: its user already owns the machine.
"""

from __future__ import annotations

import dataclasses
import enum
import getpass
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from core import workspace
from core.data.catalogue import IMAGES_DIR, STYLES_FILE, resolve_dataset_dir
from core.untrusted import MAX_NAME_CHARS, check_typed

ACCESS_ENV = "FASHION_TAGGER_ACCESS"
ACCESS_FILE = "access.toml"  # in the workspace, unless ACCESS_ENV names another file
DATA_ROOTS_ENV = "FASHION_TAGGER_DATA_ROOTS"


class Role(enum.StrEnum):
    """What a person may do, each role all the previous one may and more."""

    VIEWER = "viewer"  # reads every page
    REVIEWER = "reviewer"  # also decides labels and undoes their own decisions
    ADMIN = "admin"  # also trains, opens folders, exports and undoes anyone's decision


class Permission(enum.StrEnum):
    READ = "read"
    REVIEW = "review"
    UNDO_ANY = "undo_any"
    TRAIN = "train"
    EVALUATE = "evaluate"
    OPEN_FOLDER = "open_folder"
    LOAD_FOLDER = "load_folder"
    EXPORT = "export"
    CALIBRATE = "calibrate"
    LEAD = "lead"


DOING = {  # what a permission lets a person do, for messages
    Permission.READ: "read the pages, and open a dataset someone linked to",
    Permission.REVIEW: "record review decisions (label, skip, undo their own, queue photos)",
    Permission.UNDO_ANY: "undo another person's decision",
    Permission.TRAIN: "start, cancel or resume training runs",
    Permission.EVALUATE: "start evaluations in the background",
    Permission.OPEN_FOLDER: "open a folder as the dataset",
    Permission.LOAD_FOLDER: "load photos from a folder on the server",
    Permission.EXPORT: "export a corrected catalogue",
    Permission.CALIBRATE: "certify a source's heads from its reviewed photos, and set its audit share",
    Permission.LEAD: "set gold items and double review, settle disagreements, and see every reviewer's numbers",
}
PERMISSIONS = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.REVIEWER: frozenset({Permission.READ, Permission.REVIEW}),
    Role.ADMIN: frozenset(Permission),
}


class AccessDenied(PermissionError):
    """A person tried what their role does not allow; the message names who, the role and what."""


class FolderRefused(AccessDenied):
    """A path outside the folders the dashboard may use; the message does not say whether it exists."""


class AccessConfigError(ValueError):
    """The access file or FASHION_TAGGER_DATA_ROOTS is malformed; the message names the problem."""


class LoginRefused(ValueError):
    """A login whose identity the dashboard does not accept (no email, or one not verified); the
    message says why and what to do."""


class VerifiedClaim(enum.StrEnum):
    """What a login without the provider's `email_verified` claim gets (the access file's
    `email_verified_claim`). A login whose claim is false is refused either way."""

    REQUIRED = "required"  # refused (the default)
    OPTIONAL = "optional"  # accepted: for a provider that verifies every address it sends and does not say so


@dataclasses.dataclass(frozen=True)
class Actor:
    """A person acting: who (as logged with every write), their role, and where they may go."""

    identity: str  # the provider's email in team mode; the local user's name otherwise
    role: Role
    name: str = ""  # for display (the provider's name claim); the identity when empty
    roots: tuple[Path, ...] | None = None  # the folders they may use (allowed_roots); None: any (command line)

    def __post_init__(self) -> None:
        object.__setattr__(self, "identity", check_typed(self.identity, "a person's name", MAX_NAME_CHARS))
        object.__setattr__(self, "role", _role(self.role, "role"))

    def may(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]

    @property
    def shown(self) -> str:
        """How the person is shown: their name and identity, or the identity."""
        return f"{self.name} ({self.identity})" if self.name and self.name != self.identity else self.identity


def require(actor: Actor, permission: Permission) -> None:
    """AccessDenied unless `actor`'s role allows `permission`."""
    if not isinstance(actor, Actor):
        raise TypeError(f"expected the acting person (core.access.roles.Actor), got {actor!r}")
    if not actor.may(permission):
        needed = next(role for role in Role if permission in PERMISSIONS[role])
        raise AccessDenied(f"{actor.identity} is a {actor.role} and may not {DOING[permission]}: "
                           f"that needs the {needed} role")


def require_folder(actor: Actor, permission: Permission, path: str | Path) -> Path:
    """`path` resolved, when `actor` may `permission` and the path lies under their roots;
    AccessDenied or FolderRefused (one message, whether the path exists or not) otherwise."""
    require(actor, permission)
    return within_roots(actor, path)


def within_roots(actor: Actor, path: str | Path) -> Path:
    """`path` resolved (`~`, `..`, symbolic links), when it lies under `actor`'s roots (any path
    when they have none); FolderRefused, one message whether the path exists or not, otherwise."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # an unknown ~user, a link loop, a NUL byte: refused alike
        resolved = None
    if actor.roots is None and resolved is not None:
        return resolved
    if resolved is None or not any(resolved == root or root in resolved.parents for root in actor.roots or ()):
        raise FolderRefused(f"{path}: not a folder this dashboard may use; it may use folders under "
                            f"{', '.join(map(str, actor.roots or ()))} ({DATA_ROOTS_ENV} adds more)")
    return resolved


def dataset_dir_for(actor: Actor, path: str | Path, permission: Permission = Permission.OPEN_FOLDER) -> Path:
    """The dataset folder at `path` (core.data.catalogue.resolve_dataset_dir, CatalogueError naming
    what is wrong) when `actor` may open it: `permission` (OPEN_FOLDER for a typed folder, an
    admin's; READ for a link someone shared), and the path, the folder found in it (a Kaggle
    subfolder may be a link elsewhere) and its styles.csv and images/ (links too, maybe) under their
    roots, resolved. A path outside them is refused before anything about it is looked at."""
    root = within_roots(actor, resolve_dataset_dir(require_folder(actor, permission, path)))
    for part in (STYLES_FILE, IMAGES_DIR):
        within_roots(actor, root / part)
    return root


def command_line_actor() -> Actor:
    """The command line's user: the machine's login name, an admin, no roots."""
    try:
        return Actor(getpass.getuser(), Role.ADMIN)
    except (OSError, KeyError, ValueError):  # no login name (a bare container), or an unusual one
        return Actor("local", Role.ADMIN)


@dataclasses.dataclass(frozen=True)
class AccessConfig:
    """The access file's content (module docstring)."""

    default_role: Role = Role.VIEWER
    emails: Mapping[str, Role] = dataclasses.field(default_factory=dict)  # lower-case email -> role
    domains: Mapping[str, Role] = dataclasses.field(default_factory=dict)  # lower-case "@domain" -> role
    data_roots: tuple[Path, ...] = ()  # resolved
    email_verified_claim: VerifiedClaim = VerifiedClaim.REQUIRED
    path: Path | None = None  # the file read; None when there is none

    def role_of(self, email: str) -> Role:
        """The role of the person with `email`: theirs, their domain's, else the default."""
        email = email.strip().lower()
        if email in self.emails:
            return self.emails[email]
        return (self.domains.get("@" + email.rpartition("@")[2], self.default_role) if "@" in email
                else self.default_role)


def login_email(claims: Mapping, config: AccessConfig) -> str:
    """The email a login's identity claims (the provider's ID token, as `st.user` holds it) vouch
    for, lower-case; LoginRefused when there is none, or the provider does not say it is verified
    (module docstring). Some providers send `email_verified` as the text "true" or "false"."""
    email = str(claims.get("email") or "").strip().lower()
    if not email:
        raise LoginRefused("your login provider sent no email address; ask an admin to request the email scope "
                           "from it")
    verified = claims.get("email_verified")
    if isinstance(verified, str):
        verified = {"true": True, "false": False}.get(verified.strip().lower(), verified)
    if verified is True:
        return email
    if verified is False:
        raise LoginRefused(f"your login provider says your email address {email} is not verified (email_verified "
                           "is false); verify it with the provider, or log out and log in with another account")
    if verified is None and config.email_verified_claim == VerifiedClaim.OPTIONAL:
        return email
    if verified is None:
        raise LoginRefused(f"your login provider does not say whether your email address {email} is verified (it "
                           "sent no email_verified claim); an admin may accept such logins with "
                           'email_verified_claim = "optional" in the access file, if the provider verifies every '
                           "address it sends")
    raise LoginRefused(f"your login provider sent email_verified = {verified!r} for {email}, neither true nor false")


def access_file() -> Path:
    """The access file's path (it need not exist)."""
    value = os.environ.get(ACCESS_ENV)
    return Path(value).expanduser().resolve() if value else workspace.workspace_dir() / ACCESS_FILE


def load_access_config(path: str | Path | None = None) -> AccessConfig:
    """The access file at `path` (default: access_file()); the defaults when there is none.
    AccessConfigError naming the problem for a file that cannot be used."""
    path = Path(path) if path is not None else access_file()
    try:
        content = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return AccessConfig()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise AccessConfigError(f"{path}: cannot be read as TOML: {error}") from error
    known = {"default_role", "data_roots", "email_verified_claim", *Role}
    unknown = sorted(set(content) - known)
    if unknown:
        raise AccessConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    entries: dict[str, Role] = {}
    for role in Role:
        for entry in _strings(content.get(role, []), f"{path}: {role}"):
            entry = entry.strip().lower()
            if "@" not in entry or entry.endswith("@"):
                raise AccessConfigError(f"{path}: {role}: {entry!r} is neither an email nor an @domain")
            if entry in entries and entries[entry] != role:
                raise AccessConfigError(f"{path}: {entry!r} is listed as both {entries[entry]} and {role}")
            entries[entry] = role
    return AccessConfig(
        default_role=_role(content.get("default_role", Role.VIEWER), f"{path}: default_role"),
        emails={entry: role for entry, role in entries.items() if not entry.startswith("@")},
        domains={entry: role for entry, role in entries.items() if entry.startswith("@")},
        data_roots=tuple(_resolved(root) for root in _strings(content.get("data_roots", []), f"{path}: data_roots")),
        email_verified_claim=_verified_claim(content.get("email_verified_claim", VerifiedClaim.REQUIRED), path),
        path=path,
    )


def allowed_roots(config: AccessConfig | None = None) -> tuple[Path, ...]:
    """The folders the dashboard may use: the workspace, the folder FASHION_TAGGER_DATA names, and
    FASHION_TAGGER_DATA_ROOTS' folders (os.pathsep-separated) when set, else the config's data_roots."""
    config = config or load_access_config()
    value = os.environ.get(DATA_ROOTS_ENV)
    extra = [_resolved(part) for part in value.split(os.pathsep) if part.strip()] if value else config.data_roots
    configured = workspace.configured_dataset_dir()
    return tuple(dict.fromkeys([workspace.workspace_dir(), *([configured] if configured else []), *extra]))


def _role(value: object, what: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise AccessConfigError(f"{what}: unknown role {value!r}; valid: {', '.join(Role)}") from None


def _verified_claim(value: object, path: Path) -> VerifiedClaim:
    try:
        return VerifiedClaim(value)
    except ValueError:
        raise AccessConfigError(f"{path}: email_verified_claim: {value!r} is not one of "
                                f"{', '.join(map(repr, map(str, VerifiedClaim)))}") from None


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AccessConfigError(f"{what} must be a list of strings, got {value!r}")
    return value


def _resolved(path: str) -> Path:
    return Path(path.strip()).expanduser().resolve()
