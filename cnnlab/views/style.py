"""The look every cnnlab figure shares: one font size and one palette.

Okabe-Ito's eight colours stay apart for colour-blind readers and on a washed-out classroom
projector; Plotly's and Streamlit's defaults draw overlaid lines in near shades of blue.
"""

from __future__ import annotations

FONT = {"size": 15}  # readable from the back of a classroom

# Okabe & Ito, "Color Universal Design" (2008), in the order runs take them.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#F0E442",
           "#000000")
BLUE, VERMILLION, GREEN, ORANGE, SKY, PURPLE, YELLOW, BLACK = PALETTE
GREY = "#777777"  # reference lines (the book's result), and whatever is neither kind

# Right and wrong predictions: GitHub's green and red, readable as text on white.
GOOD, BAD = "#1a7f37", "#cf222e"


def run_colour(number: int) -> str:
    """The colour of the `number`th overlaid run (0-based); the palette repeats after eight."""
    return PALETTE[number % len(PALETTE)]
