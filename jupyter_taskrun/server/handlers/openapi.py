"""The OpenAPI 3 document shipped in the package (``jupyter_taskrun/openapi.json``).

Its ``Submission`` schema is made from the one definition of a submission
(``schemas/submission.json``, see ``jupyter_taskrun.schema``) each time the document is loaded, so
the served document cannot drift from what the server validates; the checked-in file holds the same
schema (``python -m jupyter_taskrun.schema openapi`` writes it, ``tests/test_schema.py`` checks it).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from typing import Any

from ...schema import openapi_document


@lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    spec = json.loads(files("jupyter_taskrun").joinpath("openapi.json").read_text(encoding="utf-8"))
    return openapi_document(spec)
