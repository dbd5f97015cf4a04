"""The ``curvelab`` command: start the whole stack locally (``up``), one part
of it (``api``, ``worker``, ``ui``), or a demo run (``demo``).

It lives in backend because it needs only the settings and the presets; it
starts the worker and the UI as separate processes, so neither TensorFlow nor
Streamlit is ever imported here.
"""
