"""cnnlab: a lab for the Modern Convolutional Neural Networks chapter of Dive into Deep Learning.

`cnnlab.specs` describes architectures as data, `cnnlab.models.build` turns a spec into a
module, `cnnlab.inspect` tabulates it on the meta device, `cnnlab.diagram` draws it.
"""
