"""The OpenAPI 3 document shipped in the package (``jupyter_taskrun/openapi.json``)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from typing import Any


@lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    return json.loads(files("jupyter_taskrun").joinpath("openapi.json").read_text(encoding="utf-8"))
