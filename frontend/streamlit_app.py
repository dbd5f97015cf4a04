"""The UI's entry point: page setup, the API health banner, sign-in, navigation.

Run with ``curvelab ui`` (or ``curvelab up``); pages live in ``app_pages/``
(not ``pages/``, which would switch on Streamlit's older auto-discovery).
Deep links: ``/run?id=<run_id>``, ``/compare?ids=a,b``, ``/sweep?id=<sweep_id>``
and the Runs page's filters (``/?status=succeeded&page=2``: the Runs page is
the root); one opened before signing in opens once signed in.
"""

from pathlib import Path

import streamlit as st

from frontend.api_client import get_client
from frontend.auth import sign_in_form, sign_out_button
from frontend.health import health_banner

PAGES = Path(__file__).parent / "app_pages"

st.set_page_config(page_title="curvelab", layout="wide")
pages = [
    st.Page(PAGES / "runs.py", title="Runs", url_path="runs", default=True),
    st.Page(PAGES / "new_run.py", title="New run", url_path="new-run"),
    st.Page(PAGES / "datasets.py", title="Datasets", url_path="datasets"),
    st.Page(PAGES / "run.py", title="Run", url_path="run"),
    st.Page(PAGES / "compare.py", title="Compare", url_path="compare"),
    st.Page(PAGES / "sweep.py", title="Sweep", url_path="sweep"),
]
client = get_client()
# Every page needs the API: say plainly when it is not there, then stop.
access = health_banner(client)
if access == "down":
    st.stop()
if access == "sign-in":
    # The pages stay known (hidden) so the URL, a deep link included, is kept
    # for after sign-in; none of them runs, and nothing but the form is drawn.
    st.navigation(pages, position="hidden")
    sign_in_form()
    st.stop()
navigation = st.navigation(pages)
sign_out_button()
navigation.run()
