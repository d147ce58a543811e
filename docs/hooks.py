"""MkDocs hooks: the README becomes the home page, and links to repository files outside docs/ stay readable.

The same Markdown is read on the repository host and on the site. On the host, README.md links to `docs/x.md` and
docs pages link to `../examples/...`; on the site, the README is `index.md` inside the docs and files outside
docs/ are not published. These hooks rewrite each relative link by where its target really is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")


def on_files(files: Files, config: Any) -> Files:
    """Publish the README as the home page."""
    files.append(File.generated(config, "index.md", abs_src_path=str(ROOT / "README.md")))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    docs = Path(config["docs_dir"]).resolve()
    source = Path(page.file.abs_src_path).resolve().parent
    here = (docs / page.file.src_uri).parent

    def rewrite(match: re.Match[str]) -> str:
        text, target = match.group(1), match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        real = (source / path).resolve()
        if real == ROOT / "README.md":
            real = docs / "index.md"
        if real.is_relative_to(docs):
            relative = os.path.relpath(real, here).replace(os.sep, "/")
            return f"[{text}]({relative}{'#' + anchor if anchor else ''})"
        shown = real.relative_to(ROOT).as_posix() if real.is_relative_to(ROOT) else path
        return text if shown in text else f"{text} (`{shown}` in the repository)"

    return LINK.sub(rewrite, markdown)
