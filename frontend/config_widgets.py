"""One widget (two for the image size) per TrainConfig field, drawn from its
:class:`~frontend.config_form.FormField`, with the API's message right under it.

Values come from session state (``cfg.<field>``), which the page fills from a
preset or a cloned run, so no widget passes its own default.
"""

from __future__ import annotations

import streamlit as st

from frontend import architectures
from frontend.config_form import FIELDS, FormField, widget_keys

# Short fields that share a row with the next one, so each group fits the screen.
SIDE_BY_SIDE = {"augment.rotate", "convs_per_block"}
ARCHITECTURE = FIELDS["architecture"]


def draw_architecture(error: str | None = None) -> str:
    """The architecture select, with its choice's line beside it; returns the choice.

    The page draws it above its form: a widget inside a form reruns nothing
    until submit, and the Network group must follow the choice at once."""
    (key,) = widget_keys(ARCHITECTURE)
    select, line = st.columns([1, 2], vertical_alignment="bottom")
    chosen = str(
        select.selectbox(
            ARCHITECTURE.label,
            ARCHITECTURE.options,
            key=key,
            format_func=architectures.label,
            help=ARCHITECTURE.help,
        )
    )
    line.caption(architectures.description(chosen))
    if error:
        st.error(error)
    if chosen in architectures.APPLICATIONS:
        # Streamlit drops the state of a widget not drawn in a run; the hidden
        # conv_bn knobs keep their preset's or clone's values for a switch back.
        for name in architectures.CONV_BN_ONLY:
            for hidden in widget_keys(FIELDS[name]):
                st.session_state[hidden] = st.session_state[hidden]
    return chosen


def network_note(architecture: str) -> None:
    """What the Network knobs left in view do for an application."""
    if architecture not in architectures.APPLICATIONS:
        return
    st.caption(
        f"{architectures.label(architecture)} has its own layers: filters, convs, kernel, "
        "BatchNorm and dense units apply to conv_bn only. BatchNorm momentum applies to "
        "every BatchNormalization layer of the network, dropout to its head."
    )


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
