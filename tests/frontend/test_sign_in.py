"""Sign-in through AppTest against a live API with a token: the UI process has
none, a session without one sees the form and nothing else, a wrong token is
refused, the right one shows everything, sign-out and a rotated token return
to the form, and one session's sign-in is no other session's."""

from __future__ import annotations

from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from frontend.api_client import SESSION_CLIENT, shared_client
from frontend.auth import EXPIRED, REFUSED, SIGNED_OUT, TOKEN
from tests.frontend.conftest import API_TOKEN, FRONTEND, LiveApi, open_app_page

SECRET_DATASET, SECRET_RUN = "secret-letters", "secret-run"
TINY = {"image_size": [16, 16], "filters": [4], "epochs": 2}


@pytest.fixture
def seeded(locked_api: LiveApi) -> dict[str, Any]:
    """A dataset and a finished run whose names no stranger may read."""
    dataset = locked_api.upload_dataset(SECRET_DATASET)
    run = locked_api.create_run(dataset["id"], TINY, name=SECRET_RUN)
    locked_api.train_fake_epochs(run["id"], 2)
    return {"dataset": dataset, "run": run}


def shown(app: AppTest) -> str:
    """Everything the page sent to the browser, as text: every element's
    message, tables' bytes and images included."""
    found: list[str] = []

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            found.append(str(proto))
        for child in (getattr(node, "children", None) or {}).values():
            walk(child)

    walk(app._tree)
    return "\n".join(found)


def assert_only_the_form(app: AppTest, *secrets: str) -> None:
    assert not app.exception
    assert [t.label for t in app.text_input] == ["API token"]
    assert app.text_input(key=TOKEN).proto.type == app.text_input(key=TOKEN).proto.PASSWORD
    assert [b.label for b in app.button] == ["Sign in"]  # no Sign out, no page's button
    assert not app.dataframe and not app.image and not app.sidebar.caption
    assert not app.get("plotly_chart") and not app.get("imgs")
    text = shown(app)
    for secret in secrets:
        assert secret not in text
    assert API_TOKEN not in text


def sign_in(app: AppTest, token: str) -> AppTest:
    app.text_input(key=TOKEN).input(token)
    return app.button[0].click().run()


def open_app() -> AppTest:
    return AppTest.from_file(str(FRONTEND / "streamlit_app.py"), default_timeout=30).run()


@pytest.mark.parametrize("page", ["runs", "datasets", "new_run", "compare", "run"])
def test_without_a_credential_every_page_is_the_sign_in_form(
    seeded: dict[str, Any], page: str
) -> None:
    query = {"id": seeded["run"]["id"]} if page == "run" else {}
    if page == "datasets":
        query = {"id": seeded["dataset"]["id"]}
    app = open_app_page(page, **query)
    assert_only_the_form(app, SECRET_DATASET, SECRET_RUN, seeded["dataset"]["classes"][0]["name"])
    assert app.title[0].value == "Sign in to curvelab"
    assert SESSION_CLIENT not in app.session_state


def test_a_wrong_token_is_refused_with_a_clear_message(seeded: dict[str, Any]) -> None:
    app = sign_in(open_app(), "not-the-token")
    assert [e.value for e in app.error] == [REFUSED]
    assert "refused this token" in app.error[0].value
    assert_only_the_form(app, SECRET_DATASET, SECRET_RUN)
    assert SESSION_CLIENT not in app.session_state


def test_the_right_token_shows_the_data_then_sign_out_forgets_it(
    seeded: dict[str, Any], locked_api: LiveApi
) -> None:
    app = sign_in(open_app(), f"  {API_TOKEN}\n")  # pasted with spaces around
    assert not app.exception and not app.error
    runs = app.dataframe[0].value
    assert list(runs["run"]) == [SECRET_RUN] and list(runs["dataset"]) == [SECRET_DATASET]
    assert app.sidebar.button(key="auth.sign-out").label == "Sign out"
    # The token is this session's, nowhere else: not in the shared client, not in the URL.
    assert app.session_state[SESSION_CLIENT].has_token
    assert not shared_client().has_token
    assert API_TOKEN not in str(dict(app.query_params)) and API_TOKEN not in shown(app)
    assert SECRET_RUN in shown(app)  # what the form's check looks for, where it is shown

    app.switch_page("app_pages/datasets.py").run()
    assert not app.exception
    assert app.subheader[0].value == SECRET_DATASET
    assert app.image, "the dataset's sample thumbnails"

    app.sidebar.button(key="auth.sign-out").click().run()
    assert_only_the_form(app, SECRET_DATASET, SECRET_RUN)
    assert app.info[0].value == SIGNED_OUT
    assert SESSION_CLIENT not in app.session_state


def test_a_deep_link_opened_before_sign_in_opens_after_it(seeded: dict[str, Any]) -> None:
    app = open_app_page("run", id=seeded["run"]["id"])
    assert_only_the_form(app, SECRET_RUN)
    sign_in(app, API_TOKEN)
    assert not app.exception
    assert app.subheader[0].value == SECRET_RUN


def test_a_token_that_stops_working_returns_to_sign_in(
    seeded: dict[str, Any], locked_api: LiveApi
) -> None:
    app = sign_in(open_app(), API_TOKEN)
    assert list(app.dataframe[0].value["run"]) == [SECRET_RUN]
    locked_api.restart(api_token="a-new-token-after-rotation")
    app.run()
    assert_only_the_form(app, SECRET_DATASET, SECRET_RUN)
    assert app.info[0].value == EXPIRED
    sign_in(app, "a-new-token-after-rotation")
    assert list(app.dataframe[0].value["run"]) == [SECRET_RUN]


def test_one_session_signing_in_signs_no_other_session_in(seeded: dict[str, Any]) -> None:
    alice = sign_in(open_app(), API_TOKEN)
    assert list(alice.dataframe[0].value["run"]) == [SECRET_RUN]
    stranger = open_app()  # another browser, same UI process
    assert_only_the_form(stranger, SECRET_DATASET, SECRET_RUN)


def test_an_api_without_a_token_needs_no_sign_in(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset("open-letters")
    run = live_api.create_run(dataset["id"], TINY, name="open-run")
    live_api.train_fake_epochs(run["id"], 1)
    app = open_app()
    assert not app.exception
    assert list(app.dataframe[0].value["run"]) == ["open-run"]
    # No form (the Runs page's own inputs are its filters), no Sign out.
    assert TOKEN not in [t.key for t in app.text_input] and not app.sidebar.button


def test_a_401_inside_a_cached_read_also_returns_to_sign_in() -> None:
    """The refusal hook stops the run (st.rerun) from wherever the call was
    made, a cached read included; the session is signed out, not broken."""
    import httpx

    from frontend import auth
    from frontend.api_client import ApiClient

    refused = httpx.MockTransport(lambda request: httpx.Response(401, json={"detail": "no"}))
    client = ApiClient("http://api.test", transport=refused).signed_in("old", auth._refused)

    def script() -> None:  # runs as its own script: no outside names
        import streamlit as st

        from frontend import auth
        from frontend.api_client import get_client

        @st.cache_data
        def runs(cache_key: str) -> dict:
            return get_client().list_runs()

        if not auth.signed_in():
            st.text(f"signed out: {st.session_state.get(auth.NOTICE)}")
            st.stop()
        st.text(f"runs: {runs(get_client().cache_key)}")

    app = AppTest.from_function(script, default_timeout=30)
    app.session_state[SESSION_CLIENT] = client
    app.run()
    assert not app.exception
    assert [t.value for t in app.text] == [f"signed out: {EXPIRED}"]
