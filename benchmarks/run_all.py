"""Run every benchmark under benchmarks/ and write benchmarks/RESULTS.md.

Each benchmark is a script that measures a figure against its own baseline in the same run and
prints, as the last JSON-object line of its stdout, a summary such as
``{"name": "train_throughput", "ratio": 0.97, "target": 0.95, ...}``. This runner executes them
one at a time (they would disturb each other's timings), collects those lines, and writes one
table per benchmark together with the machine and the date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"


def machine_description() -> str:
    from megadocs.provenance import cpu_name

    parts = [f"{os.cpu_count()} x {cpu_name()}", f"Python {platform.python_version()}", platform.platform()]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name(0)}")
        else:
            parts.append("no GPU")
    except ImportError:
        pass
    return "; ".join(parts)


def last_json_object(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def run_benchmark(script: Path) -> tuple[dict | None, float, str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=HERE.parent)
    elapsed = time.perf_counter() - started
    result = last_json_object(proc.stdout)
    error = "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
    return result, elapsed, error


def render(rows: list[tuple[str, dict | None, float, str]]) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmark results",
        "",
        f"- Date: {now}",
        f"- Machine: {machine_description()}",
        "- Each benchmark measures its figures against a baseline in the same run (ratios), comparable "
        "across machines; absolute numbers are for the machine its section names. gpu_check, rehearsal "
        "and status_scale report absolute figures of their own.",
        "",
    ]
    for name, result, elapsed, error in rows:
        out.append(f"## {name}")
        out.append("")
        if result is None:
            out.append(f"Failed after {elapsed:.0f} s: {error or 'no JSON summary line printed'}")
            out.append("")
            continue
        out.append("| figure | value |")
        out.append("|---|---|")
        tables = result.pop("tables", None) or {}
        for key, value in result.items():
            if isinstance(value, float):
                value = f"{value:.4g}"
            elif isinstance(value, (dict, list)):
                value = json.dumps(value)
            out.append(f"| {key} | {value} |")
        out.append(f"| runtime (s) | {elapsed:.0f} |")
        out.append("")
        for title, table in tables.items():  # a benchmark's own tables: {title: [row dicts]}
            columns = list(table[0])
            out += [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            out += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in table]
            out.append("")
    return "\n".join(out)


KEPT = "The figures of its last successful run, kept:"


def merge_sections(new: str, old: str, names: set[str], failed: frozenset[str] = frozenset()) -> str:
    """``new`` (the header and the sections just run) plus the sections of ``old`` for the
    benchmarks not run this time, so ``run_all.py NAME`` updates one section in place. A section
    in ``failed`` is its failure line above the figures of ``old``'s section (its last successful
    run, with that run's date and machine), so a failed rerun loses no measurement."""
    def sections(text: str) -> dict[str, str]:
        parts = text.split("\n## ")
        return {part.split("\n", 1)[0].strip(): "## " + part for part in parts[1:]}

    def measured(body: str) -> str:
        """A section's figures without its heading or an earlier failure line above them."""
        content = body.split("\n", 1)[1] if "\n" in body else ""
        if KEPT in content:
            return content.split(KEPT, 1)[1]
        return "" if "\nFailed after " in "\n" + content else content

    def stamp_of(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if line.startswith(("- Date:", "- Machine:")))

    previous = sections(old)
    kept = {name: body for name, body in previous.items() if name not in names}
    fresh = sections(new)
    stamp, old_stamp = stamp_of(new), stamp_of(old.split("\n## ", 1)[0])
    fresh = {name: body.replace("\n\n", f"\n\n{stamp}\n\n", 1) for name, body in fresh.items()}
    for name in failed & fresh.keys() & previous.keys():
        figures = measured(previous[name]).strip()
        if figures:  # a section written as the whole file's only run has its date in the file's header
            figures = figures if "- Date:" in figures else f"{old_stamp}\n\n{figures}"
            fresh[name] = f"{fresh[name].rstrip()}\n\n{KEPT}\n\n{figures}\n"
    head = old.split("\n## ", 1)[0]
    ordered = sorted({**kept, **fresh}.items())
    return head.rstrip("\n") + "\n\n" + "\n".join(body.rstrip("\n") + "\n" for _, body in ordered)


def write_results(text: str, names: set[str], path: Path = RESULTS, failed: frozenset[str] = frozenset()) -> None:
    """Write the sections just run (``text``, :func:`render`) into ``path``, keeping every section of
    the file they do not replace: ``gpu_check`` (the device check, never run here) and the others a
    partial run (``run_all.py NAME``) left out. A benchmark that failed (``failed``) says so in its
    section, above the figures its last successful run measured, which stay."""
    path.write_text(merge_sections(text, path.read_text(), names, failed) if path.exists() else text)


def main(argv: list[str]) -> int:
    only = set(argv)
    # gpu_check.py is the device check (a GPU, its own results file: benchmarks/README.md)
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in (Path(__file__).name, "gpu_check.py"))
    rows = []
    for script in scripts:
        if only and script.stem not in only:
            continue
        print(f"== {script.stem}", flush=True)
        result, elapsed, error = run_benchmark(script)
        print(json.dumps(result) if result else f"failed: {error}", flush=True)
        rows.append((script.stem, result, elapsed, error))
    write_results(render(rows) + "\n", {row[0] for row in rows}, failed=frozenset(r[0] for r in rows if r[1] is None))
    print(f"wrote {RESULTS}")
    return 0 if all(r[1] is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
