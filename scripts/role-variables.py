#!/usr/bin/env python3
"""Print the Markdown table of a role's variables from its documented defaults/main.yml.

    scripts/role-variables.py roles/ROLE

Each variable's description is the comment block above it, so the README table and the defaults
cannot drift apart: regenerate the table after changing a default.
"""

import re
import sys
from pathlib import Path


def rows(defaults):
    """Yield (name, default, description); consecutive variables share the comment above them."""
    comment, after_variable = [], False
    lines = defaults.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("#"):
            if after_variable:
                comment, after_variable = [], False
            comment.append(line.lstrip("# ").strip())
            continue
        match = re.match(r"^([a-z][a-z0-9_]*):\s*(.*)$", line)
        if not match:
            continue
        name, value = match.groups()
        if value in ("", ">-", "|"):
            block = []
            for follow in lines[index + 1 :]:
                if follow and not follow.startswith(" "):
                    break
                block.append(follow.strip())
            value = " ".join(b for b in block if b) if value else "[]"
        value = value if len(value) < 60 else value[:57] + "..."
        after_variable = True
        yield name, value, " ".join(comment)


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    defaults = Path(argv[1]) / "defaults" / "main.yml"
    print("| variable | default | description |")
    print("| --- | --- | --- |")
    for name, value, text in rows(defaults):
        value = value.replace("|", "\\|")
        print(f"| `{name}` | `{value}` | {text} |")


if __name__ == "__main__":
    main(sys.argv)
