"""Inside: what a network has learned. First-layer filters before and after training, the
feature maps of one test image block by block, every BatchNorm layer's gamma and beta
(d2l 7.5.4: "let us look at gamma and beta"), and predictions with a confusion matrix.

The page only arranges widgets; `cnnlab.views.inside` computes and `cnnlab.views.figures`
draws. Models and results are cached by (run id, checkpoint) or (spec, seed), so every student
looking at the same run shares one copy (`pages/_inside_models.py`).
"""

from __future__ import annotations

import streamlit as st

from cnnlab.analysis.layers import inspect_spec
from cnnlab.arch import presets
from cnnlab.arch.checks import check
from cnnlab.arch.specs import Spec
from cnnlab.errors import CnnlabError
from cnnlab.runs.store import Run, Status
from cnnlab.training.data import FashionMNIST
from cnnlab.training.files import CLASSES
from cnnlab.views import inside
from cnnlab.views.inside import Subject
from cnnlab.views.figures import (
    batch_norm_chart,
    batch_norm_overview,
    confusion_heatmap,
    feature_map_grid,
    filter_grid,
    filters_before_after,
    prediction_gallery,
)
from cnnlab.views.text import error_markdown, markdown_text, run_option
from pages._inside_models import evaluation, filters, maps, model_for, norms, test_set
from pages._shared import run_store

RUN, UNTRAINED = "A training run", "An untrained model"
ARCHITECTURE_SPEC = "the spec on the Architecture page"
GALLERY_SIZE = 16
MAX_CHANNELS = 16


# --- choosing what to look at ----------------------------------------------------------------


def choose_run(runs: list[Run]) -> Subject | None:
    """The run and checkpoint to show, or None (after saying why)."""
    if not runs:
        st.info("No run has saved a checkpoint yet. Train one on the **Train** page (a run saves "
                "its weights after every epoch), or look at an untrained model.",
                icon=":material/info:")
        return None
    store = run_store()
    by_id = {r.id: r for r in runs}
    wanted = st.session_state.get("selected_run")
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    run_id = left.selectbox("Run", list(by_id), index=list(by_id).index(wanted)
                            if wanted in by_id else 0, key="inside.run", bind="query-params",
                            format_func=lambda i: run_option(by_id[i], test_acc=True))
    run = by_id[run_id]
    latest = inside.latest_checkpoint(store, run_id)
    chosen = right.selectbox(
        "Checkpoint", inside.checkpoint_choices(store, run_id),
        key=f"inside.checkpoint.{run_id}", bind="query-params",
        format_func=lambda choice: inside.checkpoint_option(choice, latest))
    if run.status is Status.RUNNING:
        note = f"showing its checkpoint {markdown_text(latest)}" if latest else "no checkpoint yet"
        st.info(f"This run is still training ({note}; one is saved after every epoch).",
                icon=":material/hourglass_top:")
        st.button("Load the newest checkpoint", icon=":material/refresh:")
    checkpoint = inside.chosen_checkpoint(chosen, latest)
    if checkpoint is None:
        return None
    subject = Subject.of_run(run, checkpoint)
    st.caption(inside.subject_caption(run.model, subject.spec, "weights of checkpoint "
                                      f"**{markdown_text(checkpoint)}**"))
    return subject


def choose_spec() -> Subject:
    """An untrained model: a preset or the Architecture page's spec, and its seed."""
    edited = st.session_state.get("spec")
    options = ([ARCHITECTURE_SPEC] if isinstance(edited, Spec) else []) + list(presets.PRESETS)
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    name = left.selectbox(
        "Network", options, key="inside.preset", bind="query-params",
        index=0 if options[0] == ARCHITECTURE_SPEC else options.index("bn-lenet"),
        format_func=lambda o: (f"{o} ({edited.family}, {edited.input_size} px)"
                               if o == ARCHITECTURE_SPEC else o))
    seed = int(right.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1,
                                  key="inside.seed", bind="query-params"))
    spec = edited if name == ARCHITECTURE_SPEC else presets.PRESETS[name]
    st.caption(inside.subject_caption("Architecture page" if name == ARCHITECTURE_SPEC else name,
                                      spec, f"untrained: Xavier-uniform initialisation, seed {seed}"))
    return Subject.of_spec(spec, seed)


def choose() -> Subject:
    """What to look at, loaded; the page stops (after saying why) when it cannot be."""
    try:
        runs = inside.runs_with_weights(run_store())
    except CnnlabError as exc:  # the store itself failed (disk, permissions): say so, go on
        st.error(f"Cannot read the runs: {error_markdown(exc)}", icon=":material/error:")
        runs = []
    default = RUN if runs else UNTRAINED
    source = st.segmented_control("Look at", [RUN, UNTRAINED], default=default,
                                  key="inside.source", bind="query-params") or default
    try:
        subject = choose_run(runs) if source == RUN else choose_spec()
        if subject is None:
            st.stop()
        check(subject.spec)  # an edited spec must still be valid to be built
        model_for(*subject.key)
    except (CnnlabError, KeyError, OSError) as exc:  # KeyError: a run deleted meanwhile
        st.error(f"Cannot load this network: {error_markdown(exc)}", icon=":material/error:")
        st.stop()
    return subject


def sample_images() -> FashionMNIST | None:
    try:
        return test_set()
    except CnnlabError as exc:
        st.warning(f"No Fashion-MNIST images to show: {error_markdown(exc)}",
                   icon=":material/warning:")
        return None


# --- the four sections ----------------------------------------------------------------------


def filters_section(subject: Subject) -> None:
    st.header("First-layer filters")
    try:
        if subject.before is not None:
            st.caption("Each small square is one filter of the first convolution: red weights "
                       "add the pixel, blue ones subtract it. *Before*: the Xavier "
                       "initialisation from the run's seed, exactly where training started. "
                       "*After*: the checkpoint.")
            st.plotly_chart(filters_before_after(filters(*subject.before), filters(*subject.key),
                                                 labels=("Before training", subject.after)))
        else:
            st.caption("Each small square is one filter of the first convolution, as "
                       "initialised: random noise until training shapes it into edge and blob "
                       "detectors.")
            st.plotly_chart(filter_grid(filters(*subject.key)))
    except inside.InsideError as exc:
        st.info(error_markdown(exc), icon=":material/info:")


def feature_maps_section(subject: Subject, data: FashionMNIST | None) -> None:
    st.header("Feature maps, block by block")
    spec = subject.spec
    if data is None or not inside.fits_fashion_mnist(spec):
        st.info("Feature maps need a network for 1-channel Fashion-MNIST images (this one "
                f"takes {spec.in_channels} channel(s) and has {spec.num_classes} classes).",
                icon=":material/info:")
        return
    count = len(data.test_labels)
    index = st.slider("Test image", 0, count - 1, 0, key="inside.image", bind="query-params",
                      help=f"One of the {count:,} test images of the bundled sample")
    st.caption(f"Test image {index}: a **{CLASSES[int(data.test_labels[index])]}**. "
               f"The top row is what the network sees (resized to {spec.input_size} px); below, "
               f"what each block hands on (at most {MAX_CHANNELS} channels, each scaled to its "
               "own range: bright is high). Dense layers are left out.")
    try:
        st.plotly_chart(feature_map_grid(maps(*subject.key, index, spec.input_size),
                                         max_channels=MAX_CHANNELS))
    except (RuntimeError, ValueError) as exc:  # torch's own errors from the forward pass
        st.error(f"The forward pass failed: {error_markdown(exc)}", icon=":material/error:")


def batch_norm_section(subject: Subject) -> None:
    st.header("Batch normalization: γ and β")
    layers = norms(*subject.key)
    if not layers:
        st.info("This network has no BatchNorm layers. Batch normalization arrives in d2l 7.5: "
                "try **bn-lenet**, **bn-lenet-scratch**, **resnet18** or **densenet**.",
                icon=":material/info:")
        return
    st.caption("BatchNorm normalises each channel, then scales it by γ and shifts it by β, both "
               "learned (d2l eq. 7.5.1). They start at γ = 1 (dotted) and β = 0; the running "
               "mean and variance are what the layer uses at prediction time.")
    if len(layers) > 1:
        st.plotly_chart(batch_norm_overview(layers))
    paths = [layer.path for layer in layers]
    shown = st.multiselect("Layers to show channel by channel", paths,
                           default=inside.layers_to_expand(paths), key="inside.bn")
    note = inside.textbook_bn_note(subject.spec, layers)
    if note:
        st.caption(note)
    columns = st.columns(2)
    for i, layer in enumerate(layer for layer in layers if layer.path in shown):
        with columns[i % 2]:
            st.plotly_chart(batch_norm_chart(*layer))


def predictions_section(subject: Subject, data: FashionMNIST | None) -> None:
    st.header("Predictions")
    spec = subject.spec
    if data is None or not inside.fits_fashion_mnist(spec):
        st.info("Predictions need a network for Fashion-MNIST's 1-channel images and 10 "
                "classes.", icon=":material/info:")
        return
    sizes = inside.eval_sizes(len(data.test_labels))
    suggested = inside.suggested_eval_size(inspect_spec(spec).total_flops, sizes=tuple(sizes))
    left, right = st.columns([1, 2], vertical_alignment="bottom")
    n = left.selectbox("Test images to predict", sizes, index=sizes.index(suggested),
                       key=f"inside.eval.{spec.family}.{spec.input_size}")
    which = right.segmented_control("Show", ["first images", "mistakes"], default="first images",
                                    key="inside.gallery")
    try:
        result = evaluation(*subject.key, n, spec.input_size)
    except (RuntimeError, ValueError) as exc:  # torch's own errors from the forward pass
        st.error(f"Prediction failed: {error_markdown(exc)}", icon=":material/error:")
        return
    st.caption(f"On the first {n:,} of the {len(data.test_labels):,} test images in the "
               "bundled sample (class-balanced, drawn from Fashion-MNIST's 10,000 test "
               f"images): accuracy **{result.accuracy:.1%}**.")
    note = inside.never_predicted_note(result, spec, trained=subject.trained,
                                       class_names=CLASSES)
    if note:
        st.warning(note, icon=":material/visibility_off:")
    picked = inside.gallery(result, which == "mistakes", GALLERY_SIZE)
    if picked:
        st.plotly_chart(prediction_gallery(data.test_images[:n], result.probs, result.targets,
                                           CLASSES, indices=picked))
    else:
        st.success("No mistakes on these images.", icon=":material/check:")
    st.plotly_chart(confusion_heatmap(result.matrix, CLASSES))


# --- the page --------------------------------------------------------------------------------

st.title("Inside a network")
st.caption("What the weights look like and what the layers see: the first layer's filters, the "
           "feature maps of one image, BatchNorm's γ and β (d2l 7.5), and the predictions.")
subject = choose()
images = sample_images()
filters_section(subject)
feature_maps_section(subject, images)
batch_norm_section(subject)
predictions_section(subject, images)
