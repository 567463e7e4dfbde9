"""The demo's report folder: an HTML index (offline, self-contained images) listing every stage with its
figures, tables of figures, the files it wrote and the command that remakes each of them."""
from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..outputs import atomic_write_text


@dataclass
class ReportFigure:
    """A PNG shown in the index, optionally with an interactive HTML version beside it."""

    png: str
    caption: str
    html_page: str | None = None
    command: str = ""  # the command that remakes this PNG (default: its stage's)


@dataclass
class Stage:
    """One pipeline stage of the report."""

    title: str
    status: str  # "done", "failed", "skipped"
    summary: str = ""
    command: str = ""
    files: list[str] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    table: list[tuple[str, str]] = field(default_factory=list)
    seconds: float | None = None


def write_report(folder: str | Path, title: str, stages: list[Stage], headline: str = "") -> Path:
    """Write FOLDER/report.html (images embedded as data URIs; links to the files and interactive pages): the
    `headline` (the stages' main figures) and a table of contents first, then every stage."""
    folder = Path(folder)
    contents = "".join(f'<li><a href="#stage-{number}">{html.escape(stage.title)}</a> [{html.escape(stage.status)}]'
                       f"</li>" for number, stage in enumerate(stages, 1))
    rows = [f"<h2>Summary</h2><pre>{html.escape(headline.strip())}</pre>" if headline.strip() else "",
            f"<h2>Contents</h2><ol>{contents}</ol>"]
    for number, stage in enumerate(stages, 1):
        timing = f" ({stage.seconds:.1f} s)" if stage.seconds is not None else ""
        parts = [f'<section id="stage-{number}" data-stage="{number}" data-status="{html.escape(stage.status)}">',
                 f"<h2>{number}. {html.escape(stage.title)} <small>[{html.escape(stage.status)}{timing}]</small></h2>"]
        if stage.summary:
            parts.append(f"<p>{html.escape(stage.summary)}</p>")
        if stage.command:
            parts.append(f"<p>command: <code>{html.escape(stage.command)}</code></p>")
        if stage.files:
            parts.append("<p>files: " + ", ".join(f'<a href="{html.escape(f)}">{html.escape(f)}</a>'
                                                    for f in stage.files) + "</p>")
        if stage.table:
            parts.append("<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                                             for k, v in stage.table) + "</table>")
        for figure in stage.figures:
            image = base64.b64encode((folder / figure.png).read_bytes()).decode()
            links = f'<a href="{html.escape(figure.png)}">{html.escape(figure.png)}</a>'
            if figure.html_page:
                links += f' &middot; interactive: <a href="{html.escape(figure.html_page)}">{html.escape(figure.html_page)}</a>'
            parts.append(f'<figure><img alt="{html.escape(figure.caption)}" src="data:image/png;base64,{image}">'
                         f"<figcaption>{html.escape(figure.caption)} ({links}; made by: "
                         f"<code>{html.escape(figure.command or stage.command)}</code>)</figcaption></figure>")
        rows.append("\n".join(parts + ["</section>"]))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="gaincell">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>{html.escape(title)}</title>
<style>body {{ font: 14px sans-serif; margin: 20px; max-width: 1100px; }} img {{ max-width: 100%; }}
table {{ border-collapse: collapse; }} td {{ border: 1px solid #ccc; padding: 2px 8px; font-size: 13px; }}
code {{ background: #f4f4f4; padding: 1px 4px; }} small {{ color: #666; }}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>gaincell {__version__}, written {time.strftime("%Y-%m-%d %H:%M:%S")}.
Every figure names the file it shows and the command that remakes it.</p>
{chr(10).join(rows)}
</body></html>
"""
    return atomic_write_text(folder / "report.html", page)
