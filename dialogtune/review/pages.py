"""The review pages as server-rendered HTML, plus their stylesheet and the keyboard script (no build step).

Every piece of text from a dialogue, a summary or a rater is passed through `html.escape`, so a
dialogue holding ``<script>`` or ``<img onerror=...>`` shows as text. The pages carry no inline
script or style: the app's Content-Security-Policy allows only /review.js and /review.css.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from dialogtune.review.sampling import sentences

SCALE_LABELS = {"consistency": "Consistency: are its facts supported by the dialogue?",
                "relevance": "Relevance: does it cover what matters?"}
KEYS = ("Keys: <kbd>A</kbd> / <kbd>B</kbd> / <kbd>T</kbd> preference (T = tie) · <kbd>1</kbd>–<kbd>5</kbd> fill the next "
        "score (consistency A, relevance A, consistency B, relevance B) · <kbd>Backspace</kbd> clears the last score · "
        "<kbd>Enter</kbd> submits")


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f'<title>{escape(title)}</title><link rel="stylesheet" href="/review.css"></head><body>{body}'
            f'<script src="/review.js"></script></body></html>')


def rater_url(rater: str) -> str:
    return f"/rate/{quote(rater, safe='')}"


def start_page(needs_token: bool, error: str | None = None) -> str:
    """Where a rater enters a name; the same name later continues where that rater left off."""
    token = ('<label>Study token <input name="token" type="password" required autocomplete="off"></label>'
             if needs_token else "")
    problem = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return _page("dialogtune review", f"""<main class="start"><h1>Summary review</h1>
<p>You will read dialogues and two summaries of each, A and B, and say which is better. You are not told which
system wrote which summary; that is the point. Enter the same name again later to continue where you left off.</p>
{problem}<form method="post" action="/start" id="start"><label>Your name <input name="name" required maxlength="40"
autocomplete="username" autofocus></label>{token}<button type="submit">Start</button></form></main>""")


def _scale(name: str, criterion: str) -> str:
    radios = "".join(f'<label><input type="radio" name="{name}" value="{v}"{" required" if v == 1 else ""}> {v}</label>'
                     for v in range(1, 6))
    return f'<fieldset class="scale" id="f-{name}"><legend>{escape(SCALE_LABELS[criterion])}</legend>{radios}</fieldset>'


def _summary(side: str, text: str) -> str:
    marks = "".join(f'<label class="sentence"><input type="checkbox" name="unsupported_{side}" value="{i}"> {escape(s)}</label> '
                    for i, s in enumerate(sentences(text)))
    return (f'<section class="summary" id="summary-{side}"><h2>Summary {side.upper()}</h2><p class="text">{marks}</p>'
            f'<p class="hint">Tick a sentence that states something the dialogue does not support (optional).</p>'
            f'{_scale(f"consistency_{side}", "consistency")}{_scale(f"relevance_{side}", "relevance")}</section>')


def _progress(rater: str, done: int, total: int) -> str:
    return (f'<header><span class="rater">Rater: <b id="rater">{escape(rater)}</b></span>'
            f'<progress id="progress" value="{done}" max="{total}" aria-label="items answered"></progress>'
            f'<span id="progress-text">{done} of {total} answered</span></header>')


def item_page(rater: str, item: dict[str, Any], done: int, total: int) -> str:
    """One item: the dialogue, summaries A and B, their scales, the preference and the keyboard help."""
    prefs = "".join(f'<label><input type="radio" name="preference" value="{v}"{" required" if v == "A" else ""}> {label}</label>'
                    for v, label in (("A", "A is better"), ("tie", "About the same"), ("B", "B is better")))
    action = f"{rater_url(rater)}/{int(item['item_id'])}"
    return _page(f"Review: item {done + 1} of {total}", f"""{_progress(rater, done, total)}<main>
<section class="dialogue"><h2>Dialogue</h2><pre id="dialogue">{escape(item['dialogue'])}</pre></section>
<form id="judgement" method="post" action="{escape(action)}"><div class="summaries">{_summary('a', item['summary_a'])}
{_summary('b', item['summary_b'])}</div><fieldset id="f-preference" class="preference"><legend>Which summary is better overall?</legend>
{prefs}</fieldset><p id="missing" class="error" hidden>Answer the highlighted questions first.</p>
<button type="submit" id="submit">Submit and next (Enter)</button></form><p class="keys">{KEYS}</p></main>""")


def done_page(rater: str, total: int) -> str:
    return _page("Review: done", f"""{_progress(rater, total, total)}<main><h1>All {total} items answered</h1>
<p id="done">Thank you, {escape(rater)}. Your answers are saved; you can close this page.</p></main>""")


CSS = """body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}h2{font-size:1.1em;margin:.5em 0}
header{display:flex;gap:1em;align-items:center;padding:.5em 1em;background:#fff;border-bottom:1px solid #ddd;position:sticky;top:0}
header progress{flex:1;height:1em}main{max-width:1100px;margin:1em auto;padding:0 1em}
pre{white-space:pre-wrap;background:#fff;border:1px solid #ddd;padding:.75em;font-size:.95em}
.summaries{display:grid;grid-template-columns:1fr 1fr;gap:1em}.summary{background:#fff;border:1px solid #ddd;padding:.5em 1em}
.summary .text{font-size:1.05em;line-height:1.5}.sentence{cursor:pointer}.sentence:has(input:checked){background:#ffd6d6}
.hint,.keys{color:#666;font-size:.85em}fieldset{border:1px solid #ccc;margin:.5em 0}fieldset label{margin-right:1em}
fieldset.next{border-color:#1a73e8;box-shadow:0 0 0 2px #1a73e833}fieldset.missing{border-color:#c00}
.preference{background:#fff;font-size:1.1em}.error{color:#c00}button{font-size:1.05em;padding:.4em 1.2em}
.start{max-width:520px}.start label{display:block;margin:.75em 0}kbd{border:1px solid #aaa;border-radius:3px;padding:0 .3em}
"""

JS = r"""(function () {
  'use strict';
  var form = document.getElementById('judgement');
  if (!form) { return; }
  var scales = ['consistency_a', 'relevance_a', 'consistency_b', 'relevance_b'];
  var filled = [];
  function value(name) {
    var el = form.querySelector('input[name="' + name + '"]:checked');
    return el ? el.value : null;
  }
  function set(name, v) {
    var el = form.querySelector('input[name="' + name + '"][value="' + v + '"]');
    if (el) { el.checked = true; }
  }
  function next() { return scales.find(function (n) { return value(n) === null; }); }
  function refresh() {
    var n = next();
    scales.forEach(function (s) { document.getElementById('f-' + s).classList.toggle('next', s === n); });
  }
  function missing() {
    var absent = ['preference'].concat(scales).filter(function (n) { return value(n) === null; });
    ['preference'].concat(scales).forEach(function (n) {
      document.getElementById('f-' + n).classList.toggle('missing', absent.indexOf(n) >= 0);
    });
    document.getElementById('missing').hidden = absent.length === 0;
    return absent;
  }
  form.addEventListener('change', function (e) {
    var i = scales.indexOf(e.target.name);
    if (i >= 0 && filled.indexOf(e.target.name) < 0) { filled.push(e.target.name); }
    refresh();
  });
  form.addEventListener('submit', function (e) {
    if (missing().length) { e.preventDefault(); return; }
    document.getElementById('submit').disabled = true;  // one answer per item, even on a double press
  });
  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || (e.target.tagName === 'INPUT' && e.target.type === 'text')) { return; }
    var k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (k === 'a' || k === 'b') { set('preference', k.toUpperCase()); }
    else if (k === 't') { set('preference', 'tie'); }
    else if ('12345'.indexOf(k) >= 0 && k.length === 1) {
      var n = next();
      if (n) { set(n, k); filled.push(n); }
    }
    else if (k === 'Backspace') {
      var last = filled.pop();
      if (last) { form.querySelectorAll('input[name="' + last + '"]').forEach(function (el) { el.checked = false; }); }
    }
    else if (k === 'Enter') { if (!missing().length) { form.requestSubmit(); } }
    else { return; }
    e.preventDefault();
    refresh();
  });
  refresh();
})();
"""
