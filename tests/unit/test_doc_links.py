"""Every link of the README and the runbook to a heading (`[x](#anchor)`, `[x](docs/runbook.md#anchor)`) or to a
file of the repository leads somewhere: a renamed heading or a moved file breaks a test, not a reader's click."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/runbook.md")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation but `-` and `_` dropped, spaces as
    `-`; a repeated heading gets `-1`, `-2`, ..."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", markdown), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def links(markdown: str) -> list[str]:
    """Every link target outside code blocks, but those that leave the repository."""
    return [target for target in LINK.findall(FENCE.sub("", markdown)) if not re.match(r"[a-z]+:", target)]


def test_anchors_are_githubs() -> None:
    markdown = "# Stepwise\n## `sam local invoke`\n### Diagnose: stepwise doctor\n## Notes\n## Notes\n```\n# no\n```"
    assert anchors(markdown) == {"stepwise", "sam-local-invoke", "diagnose-stepwise-doctor", "notes", "notes-1"}


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_link_leads_to_a_heading_or_a_file(document: str) -> None:
    path = ROOT / document
    found = links(path.read_text())
    assert found  # the documents do link
    broken = []
    for target in found:
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists() or (anchor and anchor not in anchors(linked.read_text())):
            broken.append(target)
    assert broken == []
