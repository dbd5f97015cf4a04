"""The UI's entry point: page setup, the API health banner, navigation.

Run with ``curvelab ui`` (or ``curvelab up``); pages live in ``app_pages/``
(not ``pages/``, which would switch on Streamlit's older auto-discovery).
Deep links: ``/run?id=<run_id>`` and ``/compare?ids=a,b``.
"""

from pathlib import Path

import streamlit as st

from frontend.api_client import get_client
from frontend.health import health_banner

PAGES = Path(__file__).parent / "app_pages"

st.set_page_config(page_title="curvelab", layout="wide")
navigation = st.navigation(
    [
        st.Page(PAGES / "runs.py", title="Runs", url_path="runs", default=True),
        st.Page(PAGES / "new_run.py", title="New run", url_path="new-run"),
        st.Page(PAGES / "datasets.py", title="Datasets", url_path="datasets"),
        st.Page(PAGES / "run.py", title="Run", url_path="run"),
        st.Page(PAGES / "compare.py", title="Compare", url_path="compare"),
    ]
)
# Every page needs the API: say plainly when it is not there, then stop.
if not health_banner(get_client()):
    st.stop()
navigation.run()
