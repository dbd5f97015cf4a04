"""The UI's entry point: page setup and navigation, nothing else.

Run with ``curvelab ui`` (or ``curvelab up``); pages live in ``app_pages/``
(not ``pages/``, which would switch on Streamlit's older auto-discovery).
"""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "app_pages"

st.set_page_config(page_title="curvelab", layout="wide")
navigation = st.navigation(
    [
        st.Page(PAGES / "overview.py", title="Overview", url_path="overview", default=True),
    ]
)
navigation.run()
