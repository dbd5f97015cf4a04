"""One widget (two for the image size) per TrainConfig field, drawn from its
:class:`~frontend.config_form.FormField`, with the API's message right under it.

Values come from session state (``cfg.<field>``), which the page fills from a
preset or a cloned run, so no widget passes its own default.
"""

from __future__ import annotations

import streamlit as st

from frontend.config_form import FormField, widget_keys

# Short fields that share a row with the next one, so each group fits the screen.
SIDE_BY_SIDE = {"augment.rotate", "convs_per_block"}


def draw_group(fields: tuple[FormField, ...], errors: dict[str, str]) -> None:
    index = 0
    while index < len(fields):
        field = fields[index]
        if field.name in SIDE_BY_SIDE and index + 1 < len(fields):
            for column, paired in zip(st.columns(2), fields[index : index + 2], strict=True):
                with column:
                    draw_field(paired, errors.get(paired.name))
            index += 2
        else:
            draw_field(field, errors.get(field.name))
            index += 1


def draw_field(field: FormField, error: str | None = None) -> None:
    keys = widget_keys(field)
    # Streamlit refuses a number input whose bounds and step mix int and float.
    low, high = field.min, field.max
    if field.kind == "size":
        height, width = st.columns(2)
        bounds = (int(low or 0), int(high or 0))
        height.number_input("Height", *bounds, step=1, key=keys[0], help=field.help)
        width.number_input("Width", *bounds, step=1, key=keys[1], help=field.help)
    elif field.kind == "bool":
        st.checkbox(field.label, key=keys[0], help=field.help)
    elif field.kind == "choice" and len(field.options) == 2:
        st.radio(field.label, field.options, key=keys[0], help=field.help, horizontal=True)
    elif field.kind == "choice":
        st.selectbox(field.label, field.options, key=keys[0], help=field.help)
    elif field.kind == "int_list":
        st.text_input(field.label, key=keys[0], help=field.help)
    elif field.kind == "float":
        st.number_input(
            field.label, float(low or 0), float(high or 0), step=float(field.step or 0.01),
            key=keys[0], help=field.help, format="%g",
        )  # fmt: skip
    else:  # int, optional_int
        bounds = (int(low or 0), int(high or 0))
        st.number_input(field.label, *bounds, step=1, key=keys[0], help=field.help)
    if error:
        st.error(error)
