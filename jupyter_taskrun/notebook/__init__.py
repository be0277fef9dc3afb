"""The notebook side: the ``%%taskrun`` magic, task handles and the live ipywidgets panels.

Talks to the server only over HTTP through ``jupyter_taskrun.client``; imports nothing from the
server or execution sides (tests/test_layering.py), so it works against a remote server.
"""
