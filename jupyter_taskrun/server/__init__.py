"""The server side: the jupyter_server extension, the ``TaskRun`` service and what it owns.

Guarantee: nothing here is imported by the client or notebook sides (tests/test_layering.py).
Parts: ``app`` (extension), ``service`` (TaskRun: configuration, submit, cancel, queries),
``dispatch`` (queued → running → outcome), ``recorder`` (status and events: persist, then
publish), ``follow`` (replay-then-live streams), ``recovery`` (the restart policy: interrupted
tasks failed, or re-queued when they opt in), ``cleanup`` (deleting finished tasks: one, a
filtered batch, retention), ``store`` (SQLite), ``queue`` (bounded priority queue), ``broker``
(live fan-out), ``telemetry``, ``auth`` and ``handlers/`` (parse → call the service → serialise).
"""
