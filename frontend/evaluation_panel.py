"""The run page's "What the model learned", once a run has trained: the
confusion matrix, the per-class table, the most confident mistakes, and a box
to try the model on an image. Thin Streamlit over evaluation_view; a final
run's evaluation cannot change, so its reads are cached.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import streamlit as st

from frontend.api_client import ApiClient, ApiError, get_client
from frontend.evaluation_view import (
    confusion_figure,
    mistake_caption,
    per_class_rows,
    prediction_figure,
    summary_markdown,
    weights_label,
)
from frontend.fit_summary_view import is_external

IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "ppm"]
GALLERY_COLUMNS = 6
THUMBNAIL = 160
TOP_K = 5
_SCORE = st.column_config.NumberColumn(format="%.3f", width="small")


@st.cache_data(ttl=600, max_entries=256, show_spinner=False)
def _evaluation(cache_key: str, run_id: str, weights: str | None) -> dict[str, Any]:
    # cache_key (the API, and whose credential) is only part of the key:
    # another API, or another credential, is another entry.
    del cache_key
    return get_client().run_evaluation(run_id, weights)


@st.cache_data(ttl=600, max_entries=1024, show_spinner=False)
def _thumbnail(cache_key: str, run_id: str, weights: str, n: int) -> bytes:
    del cache_key
    return get_client().mistake_image(run_id, n, weights, size=THUMBNAIL)


def evaluation_section(client: ApiClient, run: dict[str, Any]) -> None:
    # An external run's data never reached the server: the API answers 409.
    if run["status"] != "succeeded" or is_external(run):
        return
    run_id = run["id"]
    st.subheader("What the model learned", anchor=False)
    try:
        evaluation = _evaluation(client.cache_key, run_id, None)
    except ApiError as exc:
        st.caption(f"No evaluation: {exc.detail}")
        try_an_image(client, run_id, None)
        return
    choices = {evaluation["weights"]: evaluation}
    for other in evaluation.get("available") or []:
        if other not in choices:
            choices[other] = _evaluation(client.cache_key, run_id, other)
    row = st.container(horizontal=True, vertical_alignment="center", gap="small")
    picked = row.segmented_control(
        "Weights",
        list(choices),
        default=evaluation["weights"],
        required=True,
        format_func=lambda w: weights_label(w, choices[w]["epoch"]),
        key=f"weights-{run_id}",
        label_visibility="collapsed",
        help="Best: the epoch of lowest val_loss, kept as well as the last.",
    )
    evaluation = choices[picked or evaluation["weights"]]
    weights = evaluation["weights"]
    row.download_button(
        "Download these weights",
        data=partial(client.run_model, run_id, weights),
        file_name=f"curvelab-{run_id}-{weights}.keras",
        mime="application/octet-stream",
        on_click="ignore",
        key=f"download-{weights}-{run_id}",
    )
    st.markdown(summary_markdown(evaluation))
    matrix, table, mistakes, trying = st.tabs(
        ["Confusion matrix", "Per class", "Most confident mistakes", "Try an image"]
    )
    with matrix:
        normalised = st.toggle(
            "Row-normalised",
            key=f"normalised-{run_id}",
            help="Each row as shares of its class: the recall of each class on the diagonal.",
        )
        st.plotly_chart(
            confusion_figure(evaluation["classes"], evaluation["confusion"], normalised=normalised),
            key=f"confusion-{run_id}",
            config={"displaylogo": False},
        )
    with table:
        st.dataframe(
            per_class_rows(evaluation),
            hide_index=True,
            column_config={"precision": _SCORE, "recall": _SCORE, "F1": _SCORE},
            placeholder="—",  # a score that is undefined: no image predicted as the class
            key=f"per-class-{run_id}",
        )
    with mistakes:
        gallery(client, run_id, evaluation)
    with trying:
        try_an_image(client, run_id, weights)


def gallery(client: ApiClient, run_id: str, evaluation: dict[str, Any]) -> None:
    listed = evaluation.get("mistakes") or []
    if not listed:
        st.markdown("No mistakes on the validation images.")
        return
    st.caption("Validation images the model got wrong, most confident first: true → predicted.")
    columns = st.columns(GALLERY_COLUMNS)
    for n, mistake in enumerate(listed):
        with columns[n % GALLERY_COLUMNS]:
            try:
                image = _thumbnail(client.cache_key, run_id, evaluation["weights"], n)
            except ApiError as exc:
                st.caption(f"{mistake_caption(mistake)}  \n(no image: {exc.detail})")
                continue
            st.image(image, caption=mistake_caption(mistake), width="stretch")


def try_an_image(client: ApiClient, run_id: str, weights: str | None) -> None:
    uploaded = st.file_uploader(
        "Try an image",
        type=IMAGE_TYPES,
        key=f"try-{run_id}",
        help="Resized, coloured and scaled as the run's training images were.",
    )
    if uploaded is None:
        return
    # Every widget click reruns the page: ask once per image and weights.
    asked = f"prediction-{run_id}-{uploaded.file_id}-{weights}"
    if asked not in st.session_state:
        try:
            st.session_state[asked] = client.predict(
                run_id, uploaded.name, uploaded.getvalue(), top_k=TOP_K, weights=weights
            )
        except ApiError as exc:
            st.session_state[asked] = {"error": exc.detail}
    answer = st.session_state[asked]
    if "error" in answer:
        st.error(f"Could not predict: {answer['error']}")
        st.button("Try again", on_click=st.session_state.pop, args=(asked, None), key=f"re-{asked}")
        return
    image, bars = st.columns([1, 3], gap="medium")
    image.image(uploaded.getvalue(), caption=uploaded.name, width="stretch")
    with bars:
        best = answer["top"][0]
        st.markdown(
            f"**{best['name']}** ({best['probability']:.1%}), with the "
            f"{weights_label(answer['weights'], answer.get('epoch')).lower()} weights"
        )
        st.plotly_chart(
            prediction_figure(answer["top"]),
            key=f"prediction-{run_id}",
            config={"displaylogo": False},
        )
