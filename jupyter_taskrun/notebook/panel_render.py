"""Task outputs as *untrusted* HTML for the widget panel (``TaskPanel``).

A task's outputs were produced by code the viewer did not necessarily write (an admin
may open another user's task), so they are never handed to JupyterLab's trusted
renderers (a ``widgets.Output`` renders its outputs as trusted: scripts, ``onerror``
handlers, ``Javascript(...)`` and ``iframe srcdoc`` would all run in the viewer's page).
Instead every output is rendered here, in the kernel, to a string of HTML that carries
no script, and shown with ``widgets.HTML`` (inserted with ``innerHTML``):

* ``text/html`` (and Markdown rendered to HTML) goes through ``sanitize_html``: an
  allow-list of tags and attributes, re-serialised from the parsed tokens (every text
  escaped, every attribute quoted), no event handlers, no ``style`` elements, only a
  small set of CSS properties, links only to ``http(s)``/``mailto``/fragments, images
  only from ``data:image/(png|jpeg|gif|webp)`` URIs;
* images (``png``, ``jpeg``, ``gif``, ``webp``) become ``<img src="data:…;base64,…">``;
  ``image/svg+xml`` too (an SVG loaded as an image never runs its scripts);
* ``application/javascript`` is never run (a short note says it was left out);
* everything else is shown as escaped text (``text/plain``, ``text/latex``, JSON).

Only the standard library is used (``html.parser``), so this works in any kernel.
"""

from __future__ import annotations

import base64
import html
import json
import re
from html.parser import HTMLParser
from typing import Any

__all__ = ["ansi_to_html", "render_output", "sanitize_html"]

_ANSI_SGR = re.compile(r"\x1b\[([0-9;]*)m")
_ANSI_OTHER = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-ln-~]|\x1b[@-Z\\-_]")

_MONO = "var(--jp-code-font-family, monospace)"

#: elements kept (with their content); everything else is dropped but its text kept
ALLOWED_TAGS = frozenset(
    """a abbr b bdi bdo blockquote br caption cite code col colgroup dd del details dfn div dl dt em
    figcaption figure h1 h2 h3 h4 h5 h6 hr i img ins kbd li mark ol p pre q s samp small span strong
    sub summary sup table tbody td tfoot th thead time tr u ul var wbr""".split()
)
#: elements dropped together with everything inside them
DROP_CONTENT = frozenset(
    """script style template iframe frame frameset object embed applet noscript noembed noframes
    textarea title xmp plaintext select option svg math head base link meta audio video canvas
    form button input""".split()
)
VOID = frozenset({"br", "col", "hr", "img", "wbr"})
_GLOBAL_ATTRS = frozenset({"title", "lang", "dir", "class", "style", "align", "valign"})
ALLOWED_ATTRS: dict[str, frozenset[str]] = {
    "a": frozenset({"href", "name"}),
    "img": frozenset({"src", "alt", "width", "height"}),
    "td": frozenset({"colspan", "rowspan", "headers", "nowrap"}),
    "th": frozenset({"colspan", "rowspan", "headers", "scope", "nowrap"}),
    "col": frozenset({"span", "width"}),
    "colgroup": frozenset({"span", "width"}),
    "table": frozenset({"border", "cellpadding", "cellspacing", "summary", "width"}),
    "ol": frozenset({"start", "type", "reversed"}),
    "li": frozenset({"value"}),
    "time": frozenset({"datetime"}),
    "details": frozenset({"open"}),
    "q": frozenset(),
    "blockquote": frozenset(),
}
_CSS_PROPERTIES = frozenset(
    """color background-color font-weight font-style font-size font-family text-align text-decoration
    text-transform vertical-align white-space padding padding-left padding-right padding-top padding-bottom
    margin margin-left margin-right margin-top margin-bottom border border-left border-right border-top
    border-bottom border-collapse border-color border-style border-width border-spacing width height
    min-width max-width line-height letter-spacing word-break overflow-wrap display list-style-type
    caption-side empty-cells table-layout""".split()
)
_CSS_DISPLAY = frozenset({"block", "inline", "inline-block", "none", "table", "table-row", "table-cell", "list-item"})
_CSS_BAD_VALUE = re.compile(r"[\\<>@{}]|/\*|url\s*\(|expression|image|var\s*\(|attr\s*\(|element\s*\(|-moz-binding|behavior", re.I)
_SAFE_SCHEMES = ("http", "https", "mailto")
_DATA_IMAGE = re.compile(r"^data:image/(png|jpe?g|gif|webp);base64,[a-z0-9+/=\s]*$", re.I)
_URL_JUNK = re.compile(r"[\x00-\x20\x7f]+")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):", re.I)
_NUMBERISH = re.compile(r"^\s*\d{1,5}(\.\d+)?\s*(%|px)?\s*$")


def _safe_url(value: str, *, image: bool) -> str | None:
    """The URL when harmless, else None (``javascript:``, ``data:text/html``, ``vbscript:``…)."""
    compact = _URL_JUNK.sub("", value)  # what browsers ignore inside a URL
    if image:
        return value.strip() if _DATA_IMAGE.match(compact) else None
    m = _SCHEME.match(compact)
    if m:
        return value.strip() if m.group(1).lower() in _SAFE_SCHEMES else None
    if compact.startswith("//"):  # protocol-relative: fine, it is http(s)
        return value.strip()
    return value.strip()  # relative or fragment


def _safe_style(value: str) -> str:
    kept = []
    for decl in value.split(";"):
        name, sep, val = decl.partition(":")
        name, val = name.strip().lower(), val.strip()
        if not sep or not val or name not in _CSS_PROPERTIES or _CSS_BAD_VALUE.search(val):
            continue
        if name == "display" and val.lower() not in _CSS_DISPLAY:
            continue
        if not re.fullmatch(r"[#%(),.\-\w\s'\"!]*", val):
            continue
        kept.append(f"{name}: {val}")
    return "; ".join(kept)


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[str] = []  # open allowed elements
        self.drop_depth = 0
        self.drop_tag: list[str] = []

    # -- tokens ----------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], *, closed: bool) -> None:
        tag = tag.lower()
        if self.drop_depth:
            if tag in DROP_CONTENT and not closed and tag not in VOID:
                self.drop_depth += 1
                self.drop_tag.append(tag)
            return
        if tag in DROP_CONTENT:
            if not closed and tag not in ("link", "meta", "base", "input"):
                self.drop_depth = 1
                self.drop_tag = [tag]
            return
        if tag not in ALLOWED_TAGS:
            return
        allowed = ALLOWED_ATTRS.get(tag, frozenset()) | _GLOBAL_ATTRS
        parts = [tag]
        for name, value in attrs:
            name = name.lower()
            if name not in allowed or value is None and name not in ("open", "nowrap", "reversed"):
                continue
            value = value or ""
            if name == "href":
                value = _safe_url(value, image=False)
            elif name == "src":
                value = _safe_url(value, image=True)
            elif name == "style":
                value = _safe_style(value)
                if not value:
                    continue
            elif name in ("width", "height") and not _NUMBERISH.match(value):
                continue
            elif name == "class":
                value = " ".join(c for c in value.split() if re.fullmatch(r"[\w-]{1,64}", c) and not c.startswith(("jp-", "lm-", "p-")))
            if value is None:
                continue
            parts.append(f'{name}="{html.escape(value, quote=True)}"')
        if tag == "a":
            parts.append('rel="noopener noreferrer nofollow" target="_blank"')
        if tag == "img" and not any(p.startswith("src=") for p in parts):
            alt = next((v for n, v in attrs if n.lower() == "alt" and v), "")
            if alt:
                self.out.append(html.escape(alt))
            return
        self.out.append("<" + " ".join(parts) + ">")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        tag = tag.lower()
        if self.drop_depth:
            if tag in self.drop_tag:
                while self.drop_tag:
                    self.drop_depth -= 1
                    if self.drop_tag.pop() == tag:
                        break
            return
        if tag in VOID or tag not in self.stack:
            return
        while self.stack:
            top = self.stack.pop()
            self.out.append(f"</{top}>")
            if top == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.drop_depth:
            self.out.append(html.escape(data, quote=False))

    def handle_comment(self, data: str) -> None:  # dropped
        pass

    def handle_decl(self, decl: str) -> None:  # <!DOCTYPE>: dropped
        pass

    def handle_pi(self, data: str) -> None:
        pass

    def unknown_decl(self, data: str) -> None:  # <![CDATA[…]]>: dropped
        pass

    def result(self) -> str:
        self.close()
        while self.stack:
            self.out.append(f"</{self.stack.pop()}>")
        return "".join(self.out)


def sanitize_html(text: str) -> str:
    """Untrusted HTML → HTML that runs no script (allow-list; see the module docstring)."""
    s = _Sanitizer()
    s.feed(text if isinstance(text, str) else str(text))
    return s.result()


# ---------------------------------------------------------------------------
# ANSI (tracebacks) → HTML
# ---------------------------------------------------------------------------

_ANSI_COLORS = {
    30: "var(--jp-ansi-black, #3e424d)",
    31: "var(--jp-ansi-red, #e75c58)",
    32: "var(--jp-ansi-green, #00a250)",
    33: "var(--jp-ansi-yellow, #ddb62b)",
    34: "var(--jp-ansi-blue, #208ffb)",
    35: "var(--jp-ansi-magenta, #d160c4)",
    36: "var(--jp-ansi-cyan, #60c6c8)",
    37: "var(--jp-ansi-white, #c5c1b4)",
}


def ansi_to_html(text: str) -> str:
    """Escaped text with ANSI foreground colours and bold kept as ``<span>``s (nothing else)."""
    text = _ANSI_OTHER.sub("", text)
    out: list[str] = []
    pos = 0
    color: str | None = None
    bold = False
    open_span = False
    for m in _ANSI_SGR.finditer(text):
        out.append(html.escape(text[pos : m.start()], quote=False))
        pos = m.end()
        codes = [int(c) for c in m.group(1).split(";") if c.isdigit()] or [0]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c == 0:
                color, bold = None, False
            elif c == 1:
                bold = True
            elif c == 22:
                bold = False
            elif c in _ANSI_COLORS:
                color = _ANSI_COLORS[c]
            elif 90 <= c <= 97:
                color = _ANSI_COLORS[c - 60]
            elif c == 39:
                color = None
            elif c in (38, 48):  # 256-colour / RGB: skip its arguments
                i += 2 if i + 1 < len(codes) and codes[i + 1] == 5 else 4
            i += 1
        if open_span:
            out.append("</span>")
            open_span = False
        if color or bold:
            style = (f"color:{color};" if color else "") + ("font-weight:bold;" if bold else "")
            out.append(f'<span style="{style}">')
            open_span = True
    out.append(html.escape(text[pos:], quote=False))
    if open_span:
        out.append("</span>")
    return "".join(out)


# ---------------------------------------------------------------------------
# One output → HTML
# ---------------------------------------------------------------------------

_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_PRE = f'<pre class="taskrun-output-text" style="margin:0;font-family:{_MONO};font-size:12px;white-space:pre-wrap;word-break:break-word">'


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value, indent=1, default=str)


def _dimension(meta: Any, key: str) -> str:
    value = meta.get(key) if isinstance(meta, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 100_000:
        return f' {key}="{int(value)}"'
    return ""


def _markdown_html(text: str) -> str | None:
    try:
        import mistune  # nbconvert's Markdown renderer, present wherever nbconvert is
    except ImportError:
        return None
    try:
        return str(mistune.html(text)) if hasattr(mistune, "html") else str(mistune.markdown(text))
    except Exception:  # noqa: BLE001 - fall back to the text
        return None


def render_output(out: dict[str, Any]) -> str:
    """One nbformat output (``display_data``, ``execute_result``, ``stream``, ``error``) → safe HTML."""
    kind = out.get("output_type")
    if kind == "stream":
        cls = "taskrun-output-stderr" if out.get("name") == "stderr" else "taskrun-output-stdout"
        return f'<div class="{cls}">{_PRE}{html.escape(_text(out.get("text", "")), quote=False)}</pre></div>'
    if kind == "error":
        tb = out.get("traceback") or [f"{out.get('ename', '')}: {out.get('evalue', '')}"]
        return f"{_PRE}{ansi_to_html(chr(10).join(str(line) for line in tb))}</pre>"
    data: dict[str, Any] = out["data"] if isinstance(out.get("data"), dict) else {}
    meta: dict[str, Any] = out["metadata"] if isinstance(out.get("metadata"), dict) else {}
    if "text/html" in data:
        return '<div class="taskrun-output-html">' + sanitize_html(_text(data["text/html"])) + "</div>"
    if "text/markdown" in data:
        rendered = _markdown_html(_text(data["text/markdown"]))
        if rendered is not None:
            return '<div class="taskrun-output-markdown">' + sanitize_html(rendered) + "</div>"
    for mime in (*_IMAGE_TYPES, "image/svg+xml"):
        if mime not in data:
            continue
        raw = data[mime]
        if mime == "image/svg+xml":
            payload = base64.b64encode(_text(raw).encode("utf-8")).decode("ascii")
        else:
            payload = re.sub(r"[^A-Za-z0-9+/=]", "", _text(raw))
        m = meta.get(mime) if isinstance(meta.get(mime), dict) else meta
        return (
            f'<img class="taskrun-output-image" alt="{html.escape(mime)} output" style="max-width:100%"'
            f'{_dimension(m, "width")}{_dimension(m, "height")} src="data:{mime};base64,{payload}">'
        )
    text = data.get("text/plain")
    has_js = "application/javascript" in data or "text/javascript" in data
    if has_js and (text is None or _text(text).startswith("<IPython.core.display.Javascript")):
        return '<div class="taskrun-output-note" style="font-size:11px;opacity:.7">JavaScript output not run</div>'
    for mime in ("text/latex", "application/json"):
        if text is None and mime in data:
            text = data[mime]
    if text is None:
        mimes = ", ".join(sorted(data)) or "empty"
        return f'<div class="taskrun-output-note" style="font-size:11px;opacity:.7">{html.escape(mimes)} output not shown</div>'
    return _PRE + html.escape(_text(text), quote=False) + "</pre>"
