"""The HTML report (`resnets report DIR... --out report.html`): one self-contained page from
experiment and run folders.

- load.py: reading the folders (runs, summaries, curves, a run's eval/ from `resnets eval --out`), every
  damaged file or line left out and named;
- page.py: what each section shows, as plain values, and the page written atomically;
- recipe.py: a run's recipe named with what the run overrode ("paper-cifar, overridden: epochs 8, batch 64");
- templates/: report.html.j2 (Jinja2, autoescaped) and report.css, inlined into the page.
"""

from .load import Run, Source, load_run, load_source, summarize
from .page import build_report, render

__all__ = ["Run", "Source", "build_report", "load_run", "load_source", "render", "summarize"]
