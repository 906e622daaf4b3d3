"""Copy the committed result tables into the README's "Results of the default run" section.

The README shows some tables of ``results/`` inline, each under a header line of the form
``**Title** (`results/<path>.md`)``. After ``dvc repro`` this script replaces the block that follows each such
header (up to the next header of that form, the next ``## `` section or the line ``<!-- end of results block -->``)
with the current content of the named file (less a leading ``# `` title line, which the header replaces), so the
README never shows numbers other than the committed ones. Run from the repository root::

    python scripts/sync_readme_results.py            # rewrite README.md in place (atomically)
    python scripts/sync_readme_results.py --check    # exit 1 listing the blocks that differ
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from iqalab.io import write_text

#: a header line naming the results file whose content follows it
HEADER = re.compile(r"^\*\*[^*]+\*\* \(`(results/[^`]+\.md)`\)\s*$")
#: a line that ends a block early, so that README prose can follow it (invisible when rendered)
END = "<!-- end of results block -->"


def sync(readme: str, root: Path) -> tuple[str, list[str]]:
    """Return ``readme`` with every results block replaced by its file, and the paths whose block changed.

    Raises FileNotFoundError naming the header's path when a named results file does not exist.
    """
    lines = readme.split("\n")
    out: list[str] = []
    changed: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        match = HEADER.match(line)
        i += 1
        if not match:
            continue
        rel = match.group(1)
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(f"README header names {rel}, which does not exist under {root}")
        j = i
        while j < len(lines) and not HEADER.match(lines[j]) and not lines[j].startswith("## ") \
                and lines[j].strip() != END:
            j += 1
        old = lines[i:j]
        content = path.read_text(encoding="utf-8").strip("\n").split("\n")
        if content and content[0].startswith("# "):  # the file's own title: the README's header stands for it
            content = content[1:]
            while content and not content[0].strip():
                content = content[1:]
        new = [""] + content + [""]
        if old != new:
            changed.append(rel)
        out.extend(new)
        i = j
    return "\n".join(out), changed


def main(argv: list[str] | None = None) -> int:
    """Command line: rewrite the README in place, or only check it with ``--check``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--check", action="store_true", help="exit 1 when a block differs; write nothing")
    args = parser.parse_args(argv)
    root = args.readme.resolve().parent
    text, changed = sync(args.readme.read_text(encoding="utf-8"), root)
    for rel in changed:
        sys.stderr.write(f"{'differs' if args.check else 'updated'}: {rel}\n")
    if args.check:
        return 1 if changed else 0
    if changed:
        write_text(args.readme, text)  # atomic: a failed write leaves the old README
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
