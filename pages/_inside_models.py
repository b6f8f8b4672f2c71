"""The Inside page's networks and results, cached by what identifies them and shared by every
session: a class looking at one run loads it once. A subject's key
(`cnnlab.views.inside.Subject`: ("run", run id, checkpoint) or ("spec", spec JSON, seed)) is
strings, so it keys the caches. The model object is shared, and feature_maps adds hooks to it
for one forward pass, so all work on shared models goes through one lock.
"""

from __future__ import annotations

import threading

import streamlit as st

from cnnlab.arch.parse import spec_from_json
from cnnlab.training.data import load_fashion_mnist
from cnnlab.views import inside
from pages._shared import run_store


@st.cache_resource
def model_lock() -> threading.Lock:
    return threading.Lock()


@st.cache_resource(max_entries=6, show_spinner="Loading the network…")
def model_for(kind: str, ident: str, detail: str):
    return inside.subject_model(run_store(), (kind, ident, detail))


@st.cache_data(max_entries=32, show_spinner=False)
def filters(kind: str, ident: str, detail: str):
    if kind == "spec":  # a fresh copy: "before training" need not keep a whole model cached
        return inside.first_layer_filters(inside.untrained_model(spec_from_json(ident),
                                                                 int(detail)))
    with model_lock():
        return inside.first_layer_filters(model_for(kind, ident, detail))


@st.cache_data(max_entries=64, show_spinner="Running the image through the network…")
def maps(kind: str, ident: str, detail: str, index: int, input_size: int):
    with model_lock():
        return inside.feature_maps(model_for(kind, ident, detail), test_set().test_images[index],
                                   input_size, include_input=True)


@st.cache_data(max_entries=32, show_spinner=False)
def norms(kind: str, ident: str, detail: str):
    with model_lock():
        return inside.batch_norm_layers(model_for(kind, ident, detail))


@st.cache_data(max_entries=16, show_spinner="Predicting the test images…")
def evaluation(kind: str, ident: str, detail: str, n: int, input_size: int):
    data = test_set()
    with model_lock():
        return inside.evaluate_images(model_for(kind, ident, detail), data.test_images[:n],
                                      data.test_labels[:n], input_size)


@st.cache_resource(show_spinner=False)
def test_set():
    # The bundled sample's 1,000 test images: always there, class-balanced, drawn from the
    # real test set, and small enough to predict in seconds on a CPU.
    return load_fashion_mnist(source="sample")
