"""The committed copy of an executed notebook: what a reader opens in JupyterLab or on GitHub.

Why its own step: an executed notebook carries its run's machine (absolute paths in papermill's
record) and its tqdm bars as widgets, whose state JupyterLab cannot restore: they show frozen at
"0%". The committed copy has paths relative to the checkout and every bar as the finished text
bar it ended as, so a refresh changes only what the run changed.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

from .layout import shown_path


def write_committed_copy(executed: Path, target: Path) -> None:
    """Copy an executed notebook for committing, with papermill's record of where it ran (its
    ``input_path`` and ``output_path``) made relative to the checkout: an absolute path names one
    machine's folders, which a reader elsewhere cannot use and every re-run changes."""
    nb = without_widgets(json.loads(Path(executed).read_text()))
    record = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if record.get(key):
            record[key] = shown_path(record[key])
    Path(target).write_text(notebook_text(nb))


def notebook_text(nb: dict) -> str:
    """A notebook as the committed copies are written (one-space indent, UTF-8 as it is), so a
    refresh changes only what the run changed."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


BAR_WIDTH = 10  # tqdm's text bar in a notebook: ``|██████████|``


BAR_EIGHTHS = " ▏▎▍▌▋▊▉"


def without_widgets(nb: dict) -> dict:
    """The notebook without ipywidgets: each progress bar's view becomes the text of its last
    state (``desc: 100%|██████████| 96/96 [..]``), and the saved widget state goes.

    Why: a committed notebook is read without its kernel. JupyterLab then draws a widget view
    from the state saved in the metadata as a bar frozen where the view first showed it (0%), and
    GitHub shows the view's text fallback, also captured at 0%. The last state holds the finished
    bar; its text is what a reader should see. A bar tqdm closed itself (``leave=False``) has no
    saved state and is dropped, as the live notebook hid it. Without any saved state the text
    fallback stays (the best there is)."""
    saved = nb.get("metadata", {}).pop("widgets", None)
    states = (saved or {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.get("cells", []):
        if "outputs" in cell:
            kept = (_widget_as_text(output, states, saved is not None) for output in cell["outputs"])
            cell["outputs"] = [output for output in kept if output is not None]
    return nb


def _widget_as_text(output: dict, states: dict, state_saved: bool) -> dict | None:
    """One output without its widget view: the bar's final text, the fallback text, or nothing."""
    data = output.get("data") or {}
    if WIDGET_VIEW not in data:
        return output
    model_id = str((data[WIDGET_VIEW] or {}).get("model_id", ""))
    rest = {mime: value for mime, value in data.items() if mime != WIDGET_VIEW}
    if state_saved and model_id not in states:
        return None  # closed by tqdm (leave=False): the live notebook no longer showed it
    final = _final_bar_text(model_id, states)
    if final is not None:
        rest["text/plain"] = [final]
    return {**output, "data": rest} if rest else None


def _final_bar_text(model_id: str, states: dict) -> str | None:
    """tqdm.notebook's bar as text from its saved state: an HBox of (HTML prefix, FloatProgress,
    HTML suffix); None for any other widget. The share and the count are the progress widget's
    (the saved HTML can lag it by the last refresh: ``0%|██████████| 0/7`` for a finished bar)."""
    def state(ref: str) -> dict:
        return (states.get(ref.removeprefix("IPY_MODEL_")) or {}).get("state") or {}

    children = [state(str(ref)) for ref in state(model_id).get("children", [])]
    if len(children) != 3 or "max" not in children[1]:
        return None
    prefix, progress, suffix = children
    done, total = float(progress.get("value", 0)), float(progress["max"])
    return (f"{_with_share(_html_text(prefix.get('value', '')), done, total)}|{_text_bar(done, total)}|"
            f"{_with_count(_html_text(suffix.get('value', '')), done, total)}")


TQDM_SHARE = re.compile(r"(?P<head>.*?)\s*\d+%$")


TQDM_COUNT = re.compile(r"(?P<space>\s*)\d+/\d+(?P<tail>.*)$")


def _with_share(prefix: str, done: float, total: float) -> str:
    """``desc:  37%`` with the share of ``done`` in ``total``, as tqdm pads it (3 digits)."""
    match = TQDM_SHARE.fullmatch(prefix)
    if match is None or total <= 0:
        return prefix
    share = f"{min(max(done / total, 0.0), 1.0) * 100:3.0f}%"
    return f"{match['head']} {share}" if match["head"] else share


def _with_count(suffix: str, done: float, total: float) -> str:
    """`` 3/8 [..]`` with the widget's count (whole numbers only: a scaled count stays as it is)."""
    match = TQDM_COUNT.fullmatch(suffix)
    if match is None or not (done.is_integer() and total.is_integer()):
        return suffix
    return f"{match['space']}{int(done)}/{int(total)}{match['tail']}"


def _html_text(value: str) -> str:
    """An HTML widget's value as plain text (tqdm writes figure spaces and escapes ``<``)."""
    return html.unescape(str(value)).replace("\u2007", " ").replace("\xa0", " ")


def _text_bar(value: float, total: float) -> str:
    """The bar tqdm draws in text for ``value`` of ``total``, in eighths of a block."""
    share = min(max(float(value) / float(total), 0.0), 1.0) if total else 0.0
    full, eighths = divmod(int(share * BAR_WIDTH * 8), 8)
    return ("█" * full + (BAR_EIGHTHS[eighths] if eighths and full < BAR_WIDTH else "")).ljust(BAR_WIDTH)
