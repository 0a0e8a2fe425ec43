#!/usr/bin/env python3
"""Copies api/openapi.json into the OpenAPI section at the end of docs/api.md (make api-docs).
With --check, only says whether the copy is current (exit 1 if not)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "<!-- The OpenAPI document: written by scripts/api_docs.py from api/openapi.json -->"


def expected():
    with open(os.path.join(ROOT, "docs", "api.md")) as f:
        doc = f.read()
    with open(os.path.join(ROOT, "api", "openapi.json")) as f:
        spec = f.read().rstrip("\n")
    head = doc.split(MARK)[0].rstrip("\n")
    return doc, "%s\n\n%s\n\n```json\n%s\n```\n" % (head, MARK, spec)


def main():
    doc, want = expected()
    if "--check" in sys.argv[1:]:
        sys.exit(0 if doc == want else 1)
    with open(os.path.join(ROOT, "docs", "api.md"), "w") as f:
        f.write(want)


if __name__ == "__main__":
    main()
