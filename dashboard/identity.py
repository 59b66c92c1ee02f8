"""Who is using the dashboard: the logged-in person in team mode (Streamlit's OpenID Connect login,
`[auth]` in .streamlit/secrets.toml), or the machine's one local user in local mode (no `[auth]`).

In team mode a person is their provider's email, shown and never typed, with the role the access
file gives it (core.access.roles); nobody reads a page before logging in. In local mode the dashboard
listens on this machine only (.streamlit/config.toml) and its user is an admin who may open any
folder the machine lets them read (listening on the network, the allowed roots apply), named by the name
field in the sidebar or, left empty, by their login name on the machine. The name is kept in the
session apart from the field (a jump between pages, st.switch_page, drops the field's state and the
address's parameters) and in the page's address, `review.reviewer`, for reloads. The checks live in
core: a page hides or disables what a refusal would say no to, no more.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import streamlit as st

from core.access.roles import (
    AccessConfig,
    Actor,
    Role,
    access_file,
    allowed_roots,
    command_line_actor,
    load_access_config,
    login_email,
)
from dashboard.text import plain

REVIEWER_KEY = "review.reviewer"  # local mode: the name field's key, and its query parameter
KEPT_NAME_KEY = "identity.kept_name"  # local mode: the name as last typed, kept across page jumps
NAMED_KEY = "identity.named"  # local mode: a name was given in this session


def login_configured() -> bool:
    """Whether `[auth]` is in the app's secrets (team mode)."""
    try:
        return "auth" in st.secrets
    except FileNotFoundError:  # no secrets file at all: local mode
        return False


@st.cache_data(show_spinner=False, max_entries=4)
def _access_config(path: str, stamp: int | None) -> AccessConfig:
    return load_access_config(path)


def access_config() -> AccessConfig:
    """The access file (core.access.roles), read again when it changes; AccessConfigError when malformed."""
    path = access_file()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = None
    return _access_config(str(path), stamp)


def current_actor() -> Actor | None:
    """The person using this session; None in team mode before login.
    Raises AccessConfigError for a malformed access file, LoginRefused for a login whose email is
    missing or not verified (core.access.roles.login_email)."""
    config = access_config()
    roots = allowed_roots(config)
    if login_configured():
        if not st.user.get("is_logged_in"):
            return None
        email = login_email(st.user, config)
        return Actor(email, config.role_of(email), name=str(st.user.get("name") or ""), roots=roots)
    # One person on their own machine opens their own folders; listening on the network keeps the roots.
    return Actor(local_name() or command_line_actor().identity, Role.ADMIN,
                 roots=None if listens_on_this_machine_only() else roots)


def listens_on_this_machine_only() -> bool:
    """Whether the server listens on a loopback address only (local mode's 127.0.0.1, .streamlit/config.toml)."""
    address = st.get_option("server.address")
    if address == "localhost":
        return True
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it may be reachable from elsewhere
        return False


def local_name() -> str:
    """Local mode: the name typed in the sidebar (or kept in the address), checked as any identity
    (core.untrusted.check_typed); '' when none, or when it breaks a rule (the sidebar says which)."""
    typed = st.session_state.get(REVIEWER_KEY)
    if typed is None:  # the field's state is gone (a new session, or a jump): the name as kept
        typed = kept_name()
    try:
        return Actor(typed, Role.ADMIN).identity if typed.strip() else ""
    except ValueError:
        return ""


def kept_name() -> str:
    """Local mode: the name typed last in this session, else the one in the page's address (a reload, a link)."""
    return st.session_state.get(KEPT_NAME_KEY, st.query_params.get(REVIEWER_KEY, ""))


def person() -> Actor:
    """The person using this session; the entry script made sure there is one (sign_in)."""
    actor = current_actor()
    if actor is None:
        st.stop()
    return actor


def sign_in() -> Actor | None:
    """The person using this session, after the login screen when team mode needs one; None when
    nobody may go on (the login screen, or what is wrong, is shown)."""
    try:
        actor = current_actor()
    except ValueError as error:  # AccessConfigError and LoginRefused included: fail closed
        st.error(f"{plain(error)}. Nothing can be shown until this is fixed.", icon=":material/lock:")
        if login_configured() and st.user.get("is_logged_in"):
            logout_button()  # another account may be let in
        return None
    if actor is None:
        login_screen()
    return actor


def login_screen() -> None:
    st.title("Fashion Tagger")
    st.write("This dashboard is shared by a team: log in with your organisation's account to see it.")
    auth = st.secrets["auth"]
    providers = [name for name, value in auth.items() if isinstance(value, Mapping)]  # [auth.<provider>] sections
    for provider in providers or [None]:
        label = f"Log in with {provider}" if provider else "Log in"
        if st.button(label, key=f"login.{provider}", type="primary", icon=":material/login:"):
            st.login(provider)


def logout_button() -> None:
    if st.button("Log out", key="identity.logout", icon=":material/logout:"):
        st.logout()


def identity_sidebar(actor: Actor) -> None:
    """Sidebar: who is acting and as what; team mode: a logout button; local mode: the name field."""
    with st.sidebar:
        st.subheader("You")
        if login_configured():
            st.query_params.pop(REVIEWER_KEY, None)  # the login names the person, never the address
            st.text(f"{actor.shown} · {actor.role}")
            logout_button()
            return
        if REVIEWER_KEY not in st.session_state:  # a reload or a jump: the name comes back
            st.session_state[REVIEWER_KEY] = kept_name()
        typed = st.text_input("Your name", key=REVIEWER_KEY,
                              placeholder=f"{command_line_actor().identity} when left empty").strip()
        try:
            name = Actor(typed, Role.ADMIN).identity if typed else ""
        except ValueError as error:
            st.error(f"{plain(error)}. Decisions are recorded as {plain(actor.identity)} meanwhile.")
            name = ""
        st.session_state[KEPT_NAME_KEY] = typed
        if name:
            st.query_params[REVIEWER_KEY] = name
            st.session_state[NAMED_KEY] = True
        else:
            st.query_params.pop(REVIEWER_KEY, None)
        if not typed and st.session_state.get(NAMED_KEY):  # emptied, e.g. by the browser's own undo (Ctrl+Z)
            st.warning(f"Your name is empty: decisions are recorded as {plain(actor.identity)} until you type it "
                       "again.", icon=":material/person_off:")
        st.caption(f"Local mode: recorded with every decision as {plain(actor.identity)}, admin of this "
                   "machine's dashboard.")
