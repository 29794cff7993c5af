"""Every relative link in the repository's Markdown files names a file or directory that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# A Markdown file named in backticks (`docs/blocks.md`) is a link too, for a reader.
NAMED_MD = re.compile(r"`([A-Za-z0-9_./-]+\.md)`")
FENCE = re.compile(r"^(```|~~~)")


def markdown_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=30).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).is_file()]


def links(text: str) -> list[tuple[int, str]]:
    found, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            found += [(n, m.group(1)) for m in LINK.finditer(line)]
            found += [(n, m.group(1)) for m in NAMED_MD.finditer(line)]
    return found


def test_relative_links_name_existing_files() -> None:
    broken = []
    files = markdown_files()
    assert files, "no Markdown files found"
    for md in files:
        for line, target in links(md.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, mailto:, or an anchor in the same file
            path = target.split("#", 1)[0]
            if not path:
                continue
            resolved = (ROOT / path.lstrip("/")) if path.startswith("/") else (md.parent / path)
            if not resolved.exists() and not (ROOT / path).exists():
                broken.append(f"{md.relative_to(ROOT)}:{line}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_the_link_finder_finds_links() -> None:
    text = "see [a](docs/a.md) and [b](https://x.y) and ![img](i.png), `docs/n.md`\n```\n[c](in-code.md)\n```\n"
    assert links(text) == [(1, "docs/a.md"), (1, "https://x.y"), (1, "docs/n.md")]
