"""StreamPulse dashboard entry page: `streamlit run dashboard/app.py`.

Thin on purpose: the UI is dashboard/views.py, the logic dashboard/state.py and loader.py, the
figures dashboard/charts.py.
"""

import sys
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the project root.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import streamlit as st  # noqa: E402

from dashboard import views  # noqa: E402

st.set_page_config(page_title="StreamPulse", page_icon="📈", layout="wide")
views.main()
