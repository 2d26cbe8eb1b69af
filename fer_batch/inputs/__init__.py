"""Inputs: what a user names, read as frames (the first layer a run's data passes).

In the order each module may import the ones before it: ``images`` (image files decoded), ``video`` (video
files decoded and sampled), ``streams`` (stream URLs and cameras in real time), ``sources`` (files, folders,
stdin, live inputs found), ``frames`` (:class:`~fer_batch.inputs.frames.FrameSource`: every input as one stream
of frames). Imports only the base modules (``errors``, ``records``, ``runtime``) below it.
"""
