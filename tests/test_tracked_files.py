"""Every tracked text file is free of merge-conflict markers.

A merge that left ``<<<<<<<``/``>>>>>>>`` in README.md reached main once: Python files fail ruff
on them, but Markdown, YAML and notebooks said nothing.
"""

from __future__ import annotations

import re
import subprocess

from tests.tree import ROOT

MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def tracked_text_files() -> dict[str, str]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    texts = {}
    for name in filter(None, names.decode().split("\0")):
        try:
            texts[name] = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary files (figures, wheels) hold no markers a merge could leave
    return texts


def test_the_marker_pattern_sees_a_conflict():
    text = "intro\n<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> main\n"
    assert len(MARKER.findall(text)) == 3
    assert not MARKER.search("a rule\n=========\nand a heading\n")


def test_no_tracked_file_holds_a_merge_conflict():
    texts = tracked_text_files()
    assert "README.md" in texts and "docs/architecture.md" in texts
    conflicted = {name: text[m.start():].splitlines()[0] for name, text in texts.items() if (m := MARKER.search(text))}
    assert not conflicted, conflicted
