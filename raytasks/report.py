"""A self-contained HTML research report of finished tasks: figures, metrics, trades.

One file, no network: figures are inline SVG drawn with matplotlib, styles are
inline, and a Content-Security-Policy allows no script at all. Everything that
came from a user (names, tags, parameters, result keys and values, errors) is
HTML-escaped, so it shows as text and is never markup. What a section shows
follows what the task's result holds:

- ``equity_curve`` + ``equity_dates``: equity against buy and hold
  (``benchmark_curve``), dated axes, and the drawdown of both;
- ``sweep``: the Sharpe ratio of every SMA pair as a heat-map;
- ``out_of_sample``: forecast against actual over the test period;
- ``forecast`` (volatility), ``ranking`` (batch), ``rounds`` (tune);
- ``risk`` / ``quality`` / ``metrics`` and top-level figures: a metrics table;
- ``trade_log``: a trades table.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .models import Task

MAX_TRADES = 60
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;
background:#f5f6f8}main{max-width:1080px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0 0 6px}
.sub{color:#5b6475;margin:0 0 18px}section{background:#fff;border:1px solid #dde1e8;
border-radius:8px;padding:18px 20px;margin:0 0 20px}.meta{color:#5b6475;margin:0 0 12px}
.tag{display:inline-block;background:#eef1f6;border-radius:4px;padding:0 6px;margin-right:4px}
.figs{display:flex;flex-wrap:wrap;gap:12px}.fig{flex:1 1 460px;min-width:320px;
max-width:720px}
.fig svg{width:100%;height:auto}.fig p{margin:2px 0 0;color:#5b6475;font-size:12px}
table{border-collapse:collapse;margin:8px 0 4px;font-variant-numeric:tabular-nums}
td,th{border-bottom:1px solid #e6e9ef;padding:3px 10px 3px 0;text-align:left}
th{color:#5b6475;font-weight:600}td.n{text-align:right}.err{color:#a11d2b}
pre{white-space:pre-wrap;word-break:break-word;background:#f7f8fa;padding:8px;
border-radius:4px;max-height:240px;overflow:auto}
"""


def escape(value: Any) -> str:
    """Anything as text for HTML (quotes too, so it is safe inside attributes as well)."""
    return html.escape(str(value), quote=True)


def render(tasks: Sequence[Task], title: str = "raytasks research report") -> str:
    """The whole report of ``tasks`` as one HTML document."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(_section(task) for task in tasks)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{escape(title)}</h1><p class=\"sub\">{len(tasks)} task(s), generated {now} "
        f"by raytasks</p>\n{body}\n</main></body></html>\n")


def write(tasks: Sequence[Task], path: str | Path,
          title: str = "raytasks research report") -> Path:
    """Write the report to ``path`` (parents created); returns the absolute path."""
    out = Path(path).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(tasks, title), encoding="utf-8")
    return out


# ----------------------------------------------------------------------- sections


def _section(task: Task) -> str:
    result = task.result if isinstance(task.result, dict) else {}
    kind = result.get("kind") or task.parameters.get("kind", "")
    times = [f"created {task.created_at:%Y-%m-%d %H:%M:%S}"]
    if task.started_at is not None:
        times.append(f"waited {(task.started_at - task.created_at).total_seconds():.2f} s")
        if task.finished_at is not None:
            times.append(f"ran {(task.finished_at - task.started_at).total_seconds():.2f} s")
    tags = "".join(f"<span class=\"tag\">{escape(t)}</span>" for t in task.tags)
    parts = [
        f"<section><h2>{escape(task.name)}</h2>",
        f"<p class=\"meta\">{escape(task.task_type)} {escape(kind)} · "
        f"<b>{escape(task.status.value)}</b> · attempt {task.attempt} · "
        f"{escape(', '.join(times))} · id <code>{escape(task.id)}</code> {tags}</p>",
        _parameters(task.parameters),
    ]
    if task.error is not None:
        parts.append(f"<p class=\"err\">{escape(task.error.reason)}: {escape(task.error.type)}"
                     f": {escape(task.error.message)}</p>")
    figures = list(_figures(result))
    if figures:
        parts.append("<div class=\"figs\">" + "".join(
            f"<div class=\"fig\">{svg}<p>{escape(caption)}</p></div>"
            for caption, svg in figures) + "</div>")
    parts.append(_metrics(result))
    parts.append(_trades(result.get("trade_log")))
    if task.result is not None and not isinstance(task.result, dict):
        parts.append(f"<pre>{escape(json.dumps(task.result, ensure_ascii=False)[:4000])}</pre>")
    if task.lineage:
        from .lineage import describe

        parts.append("<details class=\"meta\"><summary>lineage: what this result came "
                     "from</summary><pre>" + escape("\n".join(describe(task.lineage))) +
                     "</pre></details>")
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def _parameters(parameters: dict[str, Any]) -> str:
    if not parameters:
        return ""
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in parameters.items())
    return f"<p class=\"meta\">parameters: {escape(text[:1500])}</p>"


def _scalars(prefix: str, values: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            continue
        if isinstance(value, str) and len(value) > 80:
            continue
        yield f"{prefix}{key}", value


def _metrics(result: dict[str, Any]) -> str:
    rows = list(_scalars("", result))
    for group in ("risk", "quality", "metrics", "best", "best_params", "fitted"):
        if isinstance(result.get(group), dict):
            rows += list(_scalars(f"{group}.", result[group]))
    rows = [(k, v) for k, v in rows if k != "kind"]
    if not rows:
        return ""
    cells = "".join(f"<tr><th>{escape(k)}</th><td class=\"n\">{escape(_fmt(v))}</td></tr>"
                    for k, v in rows)
    return f"<table class=\"metrics\"><tbody>{cells}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value.is_integer() or abs(value) >= 1e5:
            return f"{value:,.0f}"
        return f"{value:,.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _trades(log: Any) -> str:
    if not isinstance(log, list) or not log:
        return ""
    rows = [r for r in log if isinstance(r, dict)][:MAX_TRADES]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(r.get(c, '')))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    more = f" (first {len(rows)} of {len(log)})" if len(log) > len(rows) else ""
    return (f"<p class=\"meta\">trades{escape(more)}</p><table class=\"trades\"><thead><tr>"
            f"{head}</tr></thead><tbody>{body}</tbody></table>")


# ------------------------------------------------------------------------ figures


def _figures(result: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """(caption, inline SVG) for every series the result holds that we know how to draw."""
    curve: Any = result.get("equity_curve")
    dates: Any = result.get("equity_dates")
    if _numbers(curve) and isinstance(dates, list) and len(dates) == len(curve):
        bench: Any = result.get("benchmark_curve")
        bench = bench if _numbers(bench) and len(bench) == len(curve) else None
        yield ("equity against buy and hold (CNY)" if bench else "equity (CNY)",
               equity_figure(dates, curve, bench))
        yield "drawdown from the running peak", drawdown_figure(dates, curve, bench)
    sweep = result.get("sweep")
    if isinstance(sweep, dict) and all(_numbers(sweep.get(k)) for k in ("fast", "slow",
                                                                          "sharpe")):
        yield ("Sharpe ratio of every SMA pair (fast × slow)",
               heatmap_figure(sweep["fast"], sweep["slow"], sweep["sharpe"]))
    oos = result.get("out_of_sample")
    if isinstance(oos, dict) and _numbers(oos.get("actual")) and _numbers(oos.get("forecast")):
        yield ("forecast against actual return, out of sample",
               forecast_figure(oos.get("dates") or [], oos["actual"], oos["forecast"]))
    if result.get("kind") == "volatility" and _numbers(result.get("forecast")):
        yield "forecast daily volatility by day ahead", _bars(
            list(range(1, len(result["forecast"]) + 1)), result["forecast"], "day ahead",
            "volatility")
    ranking = result.get("ranking")
    if isinstance(ranking, list) and ranking and all(isinstance(r, dict) for r in ranking):
        top = ranking[:30]
        yield "predicted return by stock", _bars(
            [str(r.get("stock_code", "")) for r in top],
            [float(r.get("predicted_return", 0.0)) for r in top], "", "predicted return")
    rounds = result.get("rounds")
    if isinstance(rounds, list) and rounds and all(isinstance(r, list) for r in rounds):
        yield "validation RMSE of the trials by round (successive halving)", \
            rounds_figure(rounds)


def _numbers(values: Any) -> bool:
    return isinstance(values, list) and bool(values) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _figure(width: float = 6.4, height: float = 3.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.grid(True, color="#e3e6ec", linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.StringIO()
    # text stays text (searchable, selectable); matplotlib escapes it for XML
    with _rc({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # matplotlib's RDF block only names its own version and the time: no use to a reader
    start, end = text.find("<metadata>"), text.find("</metadata>")
    return text[:start] + text[end + len("</metadata>"):] if 0 <= start < end else text


def _rc(values: dict[str, Any]) -> Any:
    import matplotlib

    mpl: Any = matplotlib
    return mpl.rc_context(values)


def _dates(values: Sequence[str]) -> Any:
    import pandas as pd

    return pd.to_datetime(list(values), errors="coerce")


def equity_figure(dates: Sequence[str], equity: Sequence[float],
                  benchmark: Sequence[float] | None) -> str:
    fig, ax = _figure()
    x = _dates(dates)
    ax.plot(x, equity, color="#2563eb", linewidth=1.4, label="strategy")
    if benchmark is not None:
        ax.plot(x, benchmark, color="#9ca3af", linewidth=1.2, label="buy and hold")
    ax.set_xlabel("date")
    ax.set_ylabel("equity (CNY)")
    ax.legend(frameon=False, loc="upper left")
    fig.autofmt_xdate()
    return _svg(fig)


def drawdowns(values: Sequence[float]) -> np.ndarray:
    """Each point's fall from the running peak, as a fraction (0 at a new high)."""
    arr = np.asarray(values, float)
    peak = np.maximum.accumulate(arr)
    return np.asarray(arr / peak - 1.0)


def drawdown_figure(dates: Sequence[str], equity: Sequence[float],
                    benchmark: Sequence[float] | None) -> str:
    fig, ax = _figure(height=2.4)
    x = _dates(dates)
    dd = drawdowns(equity) * 100
    ax.fill_between(x, dd, 0, color="#dc2626", alpha=0.35, linewidth=0, label="strategy")
    if benchmark is not None:
        ax.plot(x, drawdowns(benchmark) * 100, color="#6b7280", linewidth=0.9,
                label="buy and hold")
    ax.set_xlabel("date")
    ax.set_ylabel("drawdown (%)")
    ax.legend(frameon=False, loc="lower left")
    fig.autofmt_xdate()
    return _svg(fig)


def heatmap_figure(fast: Sequence[int], slow: Sequence[int], sharpe: Sequence[float]) -> str:
    fasts, slows = sorted(set(fast)), sorted(set(slow))
    grid = np.full((len(fasts), len(slows)), np.nan)
    fi, si = {v: i for i, v in enumerate(fasts)}, {v: i for i, v in enumerate(slows)}
    for f, s, v in zip(fast, slow, sharpe, strict=True):
        grid[fi[f], si[s]] = v
    fig, ax = _figure(height=3.4)
    ax.grid(False)
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="RdYlGn",
                      extent=(-0.5, len(slows) - 0.5, -0.5, len(fasts) - 0.5))
    ax.set_xticks(range(len(slows)), [str(s) for s in slows], fontsize=7, rotation=90)
    ax.set_yticks(range(len(fasts)), [str(f) for f in fasts], fontsize=7)
    ax.set_xlabel("slow SMA window (days)")
    ax.set_ylabel("fast SMA window (days)")
    fig.colorbar(image, ax=ax, label="Sharpe ratio")
    return _svg(fig)


def forecast_figure(dates: Sequence[str], actual: Sequence[float],
                    forecast: Sequence[float]) -> str:
    fig, ax = _figure()
    use_dates = len(dates) == len(actual)
    x = _dates(dates) if use_dates else np.arange(len(actual))
    ax.plot(x, np.asarray(actual) * 100, color="#9ca3af", linewidth=0.8, label="actual")
    ax.plot(x, np.asarray(forecast) * 100, color="#2563eb", linewidth=1.2, label="forecast")
    ax.axhline(0, color="#1d2330", linewidth=0.6)
    ax.set_xlabel("date" if use_dates else "test observation")
    ax.set_ylabel("return over the horizon (%)")
    ax.legend(frameon=False, loc="upper left")
    if use_dates:
        fig.autofmt_xdate()
    return _svg(fig)


def rounds_figure(rounds: list[list[dict[str, Any]]]) -> str:
    fig, ax = _figure(height=2.6)
    for i, trials in enumerate(rounds):
        scores = [t.get("valid_rmse") for t in trials if isinstance(t, dict)]
        ax.scatter([i + 1] * len(scores), scores, color="#2563eb", s=14)
    ax.set_xlabel("round")
    ax.set_ylabel("validation RMSE")
    ax.set_xticks(range(1, len(rounds) + 1))
    return _svg(fig)


def _bars(labels: Sequence[Any], values: Sequence[float], xlabel: str, ylabel: str) -> str:
    fig, ax = _figure(height=2.6)
    ax.bar(range(len(values)), values, color="#2563eb")
    ax.set_xticks(range(len(values)), [str(v) for v in labels], fontsize=7,
                  rotation=90 if len(values) > 8 else 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _svg(fig)


__all__ = ["drawdowns", "escape", "render", "write"]
