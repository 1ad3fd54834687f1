#!/usr/bin/env python3
"""Keep each role's defaults, argument spec and README variables table in one voice.

    scripts/role-docs.py check [ROLE...]     fail, naming role and variable, where they disagree (bin/toolkit lint)
    scripts/role-docs.py render [ROLE...]    rewrite the README tables with aar-doc (after changing a spec)

Without ROLE: every role under roles/. Run it with the tooling venv's Python (.venv: PyYAML, ansible-core, aar-doc).

The one source is defaults/main.yml: every variable has its own comment directly above it (its description) and its
value (its default). meta/argument_specs.yml must repeat both in the `main` entry point: `default` equal to the value
as YAML, `description` equal to the comment lines joined with single spaces; other entry points (tasks_from) hold only
their own options. The README's table between aar-doc's markers (<!-- BEGIN_ANSIBLE_DOCS --> .. END) is rendered by
aar-doc from the spec with scripts/role-docs.md.j2; the prose around the markers is written by hand.
"""

import difflib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "scripts" / "role-docs.md.j2"
BEGIN, END = "<!-- BEGIN_ANSIBLE_DOCS -->", "<!-- END_ANSIBLE_DOCS -->"
VARIABLE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):")


def documented_defaults(path):
    """{name: description or None} in file order; the description is the comment block directly above."""
    found, comment = {}, []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            comment.append(line.lstrip("#").strip())
            continue
        match = VARIABLE.match(line)
        if match:
            found[match.group(1)] = " ".join(comment) if comment else None
        if not line.startswith(" "):
            comment = []
    return found


def description_text(value):
    return " ".join(value) if isinstance(value, list) else value


def aar_doc():
    local = Path(sys.executable).parent / "aar-doc"
    return str(local) if local.exists() else shutil.which("aar-doc") or sys.exit("role-docs: aar-doc is not installed")


def render(role_dir, readme):
    """Let aar-doc inject the table into readme (a file path); its own messages are returned on failure."""
    result = subprocess.run(
        [aar_doc(), "--output-file", str(readme), "--output-template", str(TEMPLATE), str(role_dir), "markdown"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return None if result.returncode == 0 else (result.stdout + result.stderr).strip()


def check_role(role_dir):
    """Yield one message per disagreement."""
    role = role_dir.name
    defaults_path = role_dir / "defaults" / "main.yml"
    spec_path = role_dir / "meta" / "argument_specs.yml"
    readme = role_dir / "README.md"
    if not spec_path.exists():
        yield f"{role}: meta/argument_specs.yml is missing"
        return
    comments = documented_defaults(defaults_path) if defaults_path.exists() else {}
    values = (yaml.safe_load(defaults_path.read_text()) if defaults_path.exists() else None) or {}
    specs = (yaml.safe_load(spec_path.read_text()) or {}).get("argument_specs") or {}
    options = (specs.get("main") or {}).get("options") or {}

    for name in values:
        if comments.get(name) is None:
            yield f"{role}: {name}: no description (a comment directly above it) in defaults/main.yml"
        if name not in options:
            yield f"{role}: {name}: in defaults/main.yml, missing from the main entry point of meta/argument_specs.yml"
    for name, option in options.items():
        if name not in values:
            yield f"{role}: {name}: in meta/argument_specs.yml (main), missing from defaults/main.yml"
            continue
        if "default" not in option:
            yield f"{role}: {name}: no default in meta/argument_specs.yml; defaults/main.yml has {values[name]!r}"
        elif option["default"] != values[name]:
            yield (
                f"{role}: {name}: default {option['default']!r} in meta/argument_specs.yml, "
                f"{values[name]!r} in defaults/main.yml"
            )
        described = description_text(option.get("description"))
        if comments.get(name) is not None and described != comments[name]:
            yield (
                f"{role}: {name}: description differs:\n    spec:     {described!r}\n    defaults: {comments[name]!r}"
            )
    for entry_point, spec in specs.items():
        if entry_point != "main":
            for name in (spec or {}).get("options") or {}:
                if name in values:
                    yield f"{role}: {name}: documented in entry point {entry_point}; variables of defaults/ go in main"

    # The literal defaults must pass the spec's own types and choices (templated ones are only known at run time).
    literal = {n: v for n, v in values.items() if n in options and not (isinstance(v, str) and "{{" in v)}
    typed = {n: {k: v for k, v in options[n].items() if k != "default"} for n in literal}
    for message in ArgumentSpecValidator(typed).validate(literal).error_messages:
        yield f"{role}: defaults/main.yml does not fit meta/argument_specs.yml: {message}"

    if not readme.exists():
        yield f"{role}: README.md is missing"
        return
    text = readme.read_text()
    if BEGIN not in text.splitlines() or END not in text.splitlines():
        yield f"{role}: README.md has no {BEGIN} / {END} lines for the generated variables table"
        return
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "README.md"
        copy.write_text(text)
        failure = render(role_dir, copy)
        if failure:
            yield f"{role}: aar-doc failed: {failure}"
            return
        rendered = copy.read_text()
    if rendered != text:
        diff = difflib.unified_diff(
            text.splitlines(), rendered.splitlines(), f"roles/{role}/README.md", "aar-doc", lineterm="", n=0
        )
        shown = "\n".join(f"    {line}" for line in list(diff)[:12])
        yield (
            f"{role}: README.md's variables table is not what aar-doc renders from meta/argument_specs.yml "
            f"(run scripts/role-docs.py render {role}):\n{shown}"
        )


def role_dirs(names):
    if names:
        return [ROOT / "roles" / name for name in names]
    return sorted(p.parent.parent for p in (ROOT / "roles").glob("*/meta/main.yml"))


def main(argv):
    if len(argv) < 2 or argv[1] not in ("check", "render"):
        sys.exit(__doc__)
    roles = role_dirs(argv[2:])
    missing = [str(r) for r in roles if not r.is_dir()]
    if missing:
        sys.exit(f"role-docs: no such role: {', '.join(missing)}")
    if argv[1] == "render":
        failed = 0
        for role_dir in roles:
            lines = (role_dir / "README.md").read_text().splitlines() if (role_dir / "README.md").exists() else []
            if BEGIN not in lines or END not in lines:
                print(f"role-docs: {role_dir.name}: put {BEGIN} and {END} lines in README.md first", file=sys.stderr)
                failed += 1
                continue
            failure = render(role_dir, role_dir / "README.md")
            if failure:
                print(f"role-docs: {role_dir.name}: aar-doc failed: {failure}", file=sys.stderr)
                failed += 1
        return 1 if failed else 0
    problems = [message for role_dir in roles for message in check_role(role_dir)]
    for message in problems:
        print(message, file=sys.stderr)
    if problems:
        print(f"role-docs: {len(problems)} disagreement(s) between defaults, specs and READMEs", file=sys.stderr)
        return 1
    print(f"role-docs: {len(roles)} roles: defaults, argument specs and README tables agree")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
