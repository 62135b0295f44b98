"""A self-contained HTML report: figures embedded as base64 PNG, claims checked one by one.

No I/O beyond reading the figure files named and writing the one HTML file; open it from disk and
everything shows.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import os
from typing import Any, Sequence

from genviz_jax import files


@dataclasses.dataclass
class Claim:
  """One claim of the paper with the measured value and whether it holds here."""
  key: str
  statement: str
  measured: Any
  paper: Any = None
  holds: bool | None = None  # None: not measured in this run
  detail: str = ""

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Section:
  title: str
  text: str = ""
  figures: Sequence[str] = ()  # PNG/GIF paths
  table: Sequence[Sequence[Any]] | None = None  # first row is the header


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    if math.isnan(v):
      return "nan"
    return f"{v:.4g}"
  if isinstance(v, (list, tuple)):
    return "[" + ", ".join(_fmt(x) for x in v) + "]"
  return html.escape(str(v))


def _img(path: str) -> str:
  if not os.path.exists(path):
    return f"<p class='missing'>figure missing: {html.escape(os.path.basename(path))}</p>"
  mime = "image/gif" if path.endswith(".gif") else "image/png"
  with open(path, "rb") as f:
    data = base64.b64encode(f.read()).decode("ascii")
  name = html.escape(os.path.basename(path))
  return f"<figure><img alt='{name}' src='data:{mime};base64,{data}'><figcaption>{name}</figcaption></figure>"


def _table(rows: Sequence[Sequence[Any]]) -> str:
  head, *body = rows
  out = ["<table><tr>" + "".join(f"<th>{_fmt(h)}</th>" for h in head) + "</tr>"]
  out += ["<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in body]
  return "".join(out) + "</table>"


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}
figure{display:inline-block;margin:0.5em}img{max-width:100%}figcaption{font-size:80%;color:#666}
.yes{color:#070;font-weight:bold}.no{color:#b00;font-weight:bold}.na{color:#888}.missing{color:#b00}"""


def render_html(title: str, intro: str, claims: Sequence[Claim], sections: Sequence[Section]) -> str:
  parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{intro}</p>",
           "<h2>Claims of the paper, checked</h2><table><tr><th>claim</th><th>measured</th>"
           "<th>paper</th><th>holds</th><th>detail</th></tr>"]
  for c in claims:
    cls, word = {True: ("yes", "yes"), False: ("no", "NO"), None: ("na", "not run")}[c.holds]
    parts.append(f"<tr><td>{html.escape(c.statement)}</td><td>{_fmt(c.measured)}</td>"
                 f"<td>{_fmt(c.paper) if c.paper is not None else ''}</td>"
                 f"<td class='{cls}'>{word}</td><td>{html.escape(c.detail)}</td></tr>")
  parts.append("</table>")
  for s in sections:
    parts.append(f"<h2>{html.escape(s.title)}</h2>")
    if s.text:
      parts.append(f"<p>{s.text}</p>")
    if s.table:
      parts.append(_table(s.table))
    parts.extend(_img(p) for p in s.figures)
  parts.append("</body></html>")
  return "\n".join(parts)


def write_report(path: str, title: str, intro: str, claims: Sequence[Claim],
                 sections: Sequence[Section]) -> str:
  """Writes the report atomically; returns its path."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(render_html(title, intro, claims, sections))
  os.replace(tmp, path)
  return path


def write_job_outputs(workdir: str, title: str, intro: str, claims: Sequence[Claim],
                      sections: Sequence[Section], results: dict) -> dict[str, str]:
  """A job's WORKDIR/paper_summary.json (claims, how many hold, each phase's wall time, every
  phase's numbers under "results") and WORKDIR/report.html; returns their paths."""
  summary = {"claims": [c.to_json() for c in claims],
             "claims_hold": sum(c.holds is True for c in claims), "claims_total": len(claims),
             "phase_wall_time_s": {k: v.get("wall_time_s") for k, v in results.items()},
             "results": results}
  summary_path = os.path.join(workdir, "paper_summary.json")
  files.write_json_atomic(summary_path, summary)
  report_path = write_report(os.path.join(workdir, "report.html"), title, intro, claims, sections)
  return {"report": report_path, "summary": summary_path}
