"""Opening a lesson's exact configuration on another page: the one place that knows which
session keys the Architecture and Train pages read."""

from __future__ import annotations

import streamlit as st

from cnnlab.arch.specs import Spec
from cnnlab.lessons.handoff import train_values
from cnnlab.training import resources
from cnnlab.training.config import TrainConfig
from pages._run_view import key

ARCHITECTURE, TRAIN = "pages/architecture.py", "pages/train.py"
# The Train page's model choice that means st.session_state["spec"] (pages/train.py's
# FROM_ARCHITECTURE; importing that page would run it).
FROM_ARCHITECTURE = "architecture"


def open_on_architecture(spec: Spec) -> None:
    """Show `spec` on the Architecture page (its current spec lives in "spec")."""
    st.session_state["spec"] = spec
    st.switch_page(ARCHITECTURE)


def open_on_train(spec: Spec, config: TrainConfig) -> None:
    """Show `spec` and `config` on the Train page, ready to start."""
    st.session_state["spec"] = spec
    st.session_state[key("model")] = FROM_ARCHITECTURE
    for field, value in train_values(config, resources.full_data_found(),
                                     resources.gpu_names()).items():
        st.session_state[key(field)] = value
    # The page puts the textbook's recipe back whenever its model differs from "recipe_for";
    # this spec's values are the lesson's, so the page must not replace them.
    st.session_state[key("recipe_for")] = spec
    st.switch_page(TRAIN)
