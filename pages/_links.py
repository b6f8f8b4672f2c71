"""Opening an exact configuration on another page (a lesson's, or a pasted link's): the one
place that knows which session keys the Architecture and Train pages read, and how a page
keeps its state in the URL (`cnnlab.views.links` says what the parameters hold)."""

from __future__ import annotations

import streamlit as st

from cnnlab.arch.presets import preset_name
from cnnlab.arch.specs import Spec
from cnnlab.errors import Problem
from cnnlab.training import resources
from cnnlab.training.config import TrainConfig
from cnnlab.views import train_form
from cnnlab.views.links import query_changes
from pages._train_state import key, show_form_values
from pages._shared import show_problems

ARCHITECTURE, TRAIN = "pages/architecture.py", "pages/train.py"


def open_on_architecture(spec: Spec) -> None:
    """Show `spec` on the Architecture page (its current spec lives in "spec")."""
    st.session_state["spec"] = spec
    st.switch_page(ARCHITECTURE)


def show_on_train(spec: Spec, config: TrainConfig, *, as_preset: bool = False) -> None:
    """Set the Train page's form to `spec` and `config`, ready to start. With `as_preset`, a
    spec equal to a preset is picked by that name, leaving the Architecture page's spec alone
    (unless it is that spec: the Train page then offers it as the Architecture page's)."""
    name = preset_name(spec) if as_preset and st.session_state.get("spec") != spec else None
    if name is None:
        st.session_state["spec"] = spec
    st.session_state[key("model")] = name or train_form.FROM_ARCHITECTURE
    show_form_values(train_form.config_values(config, resources.full_data_found(),
                                              resources.gpu_names()))
    # The page puts the textbook's recipe back whenever its model differs from "recipe_for";
    # this spec's values are the ones wanted, so the page must not replace them.
    st.session_state[key("recipe_for")] = spec


def open_on_train(spec: Spec, config: TrainConfig) -> None:
    """Show `spec` and `config` on the Train page, ready to start."""
    show_on_train(spec, config)
    st.switch_page(TRAIN)


# --- the view in the URL ----------------------------------------------------------------------


def link_problems(problems: list[Problem]) -> None:
    """Say which parameters of a pasted link could not be read (each named, its text escaped);
    the page shows its default for them."""
    st.warning("Some of this link's settings could not be read, so the page shows its default "
               "instead:", icon=":material/link_off:")
    show_problems(problems)


def keep_in_url(wanted: dict[str, str], owned: frozenset[str]) -> None:
    """Make the `owned` query parameters say `wanted`, leaving the others (widgets bound to the
    URL, `run`) alone; a reload or a shared link then opens the same view."""
    to_set, stale = query_changes(st.query_params.to_dict(), wanted, owned)
    for name in stale:
        del st.query_params[name]
    if to_set:
        st.query_params.update(to_set)
