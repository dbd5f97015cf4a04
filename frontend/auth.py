"""Who a UI session acts as: sign-in with the API's token, sign-out.

When the API asks for a token (``CURVELAB_API_TOKEN`` set on the API), the UI
process holds none. A person signs in with it; the token is checked against
the API before it is kept, then lives in this browser session's
``st.session_state`` only: never in the process-wide client, a cache key
(only a hash), a cookie or the URL. Every call of the session goes through a
client of its own that sends it (``ApiClient.signed_in``). A token that stops
working mid-session (a 401) sends the session back to sign-in with a message.
A reload of the page is a new session, which signs in again.
"""

from __future__ import annotations

import streamlit as st

from frontend.api_client import SESSION_CLIENT, ApiClient, ApiError, shared_client

# Session-state keys of sign-in.
NOTICE, FORM, TOKEN = "auth.notice", "auth.form", "auth.token"

REFUSED = (
    "The API refused this token: check that it is the API's `CURVELAB_API_TOKEN` "
    "(no spaces, the whole of it) and try again."
)
EXPIRED = (
    "The API no longer accepts the token this session signed in with "
    "(it may have been changed): sign in again."
)
SIGNED_OUT = "Signed out: this session holds no token now."


def signed_in() -> bool:
    return isinstance(st.session_state.get(SESSION_CLIENT), ApiClient)


def sign_in(token: str) -> str | None:
    """Check ``token`` against the API and keep it for this session; what went
    wrong, in words, when it is not kept."""
    token = token.strip()
    if not token:
        return "Enter the API's token."
    shared = shared_client()
    try:
        # A cheap read that needs the token (health is open to all).
        shared.signed_in(token).list_presets()
    except ApiError as exc:
        if exc.status == 401:
            return REFUSED
        return f"Could not check the token: {exc.detail}"
    st.session_state[SESSION_CLIENT] = shared.signed_in(token, on_refused=_refused)
    return None


def sign_out(notice: str | None = None) -> None:
    """Forget this session's token and everything the session kept; ``notice``
    is said on the sign-in form that follows."""
    st.session_state.clear()
    if notice:
        st.session_state[NOTICE] = notice


def _refused() -> None:
    """A call of the signed-in session was answered 401: back to sign-in."""
    sign_out(EXPIRED)
    st.rerun()


def sign_in_form() -> None:
    """The whole page while the API wants a token this session has not given:
    nothing of the API's data (nor its address), only the form."""
    st.title("Sign in to curvelab")
    if notice := st.session_state.pop(NOTICE, None):
        st.info(notice)
    st.markdown(
        "This curvelab asks for its API's token. Sign in with it: this browser session "
        "keeps it until you sign out or close the page, and sends it with every call."
    )
    with st.form(FORM, enter_to_submit=True):
        token = st.text_input("API token", type="password", key=TOKEN)
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        error = sign_in(token)
        if error:
            st.error(error)
        else:
            st.session_state.pop(TOKEN, None)
            st.rerun()


def sign_out_button() -> None:
    """In the sidebar of every page, once signed in."""
    if signed_in():
        st.sidebar.button("Sign out", key="auth.sign-out", on_click=sign_out, args=(SIGNED_OUT,))
