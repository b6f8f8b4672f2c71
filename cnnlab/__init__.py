"""cnnlab: a lab for the Modern Convolutional Neural Networks chapter of Dive into Deep Learning.

The folders follow the data flow: `arch` (what a network is: specs, presets, checks, builders),
`analysis` (what it costs and looks like: the layer table on the meta device, diagrams, code),
`training` (how it learns: config, recipes, data, the loop), `runs` (where runs live and who
runs them: the store, the job manager, the worker) and `views` (how results are shown: pure
functions to figures and page-ready rows). `cli` is the command line; the Streamlit app
(`app.py`, `pages/`) only arranges widgets around these.
"""
