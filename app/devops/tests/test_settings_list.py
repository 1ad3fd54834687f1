"""One list of the app's settings, roles/app/vars/settings.yml, and what must agree with it.

The list names every environment variable the app reads, with its default and meaning. These tests
fail, naming the variable, when the app reads a variable the list lacks (or the list names one the
app does not read), when a literal default in the code differs from the list's, when the settings
table of docs/architecture.md is not the list, row for row, or when a template of the app role
writes a variable that the list does not allow in the environment file.

They read files of the repository around app/ and skip when app/ runs from a copy without them.
"""

import ast
import inspect
import os
import re
import runpy
from pathlib import Path

import pytest
import yaml

from deploy.tests.helpers import APP_DIR
from devops.env import Env

REPO_DIR = APP_DIR.parent
SETTINGS_LIST = Path("roles/app/vars/settings.yml")
DOC = Path("docs/architecture.md")
DOC_HEADING = "## Settings"
ENV_TEMPLATE = Path("roles/app/templates/app.env.j2")
ENTRYPOINT = Path("roles/app/templates/entrypoint.sh.j2")
FIELDS = {"name", "default", "meaning", "env_file"}
NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")

pytestmark = pytest.mark.skipif(
    not (REPO_DIR / "roles").is_dir(), reason="app/ runs outside the repository"
)

#: ``Env`` methods that take the variable's name first: ``env.boolean("DJANGO_DEBUG", False)``.
ENV_METHODS = {
    name: inspect.signature(method)
    for name, method in vars(Env).items()
    if inspect.isfunction(method) and list(inspect.signature(method).parameters)[1:2] == ["name"]
}
#: Marks a read without a default in the code.
NO_DEFAULT = object()


def settings_list():
    """The entries of roles/app/vars/settings.yml."""
    with open(REPO_DIR / SETTINGS_LIST, encoding="utf-8") as stream:
        return yaml.safe_load(stream)["app__settings"]


def listed_names():
    return [entry["name"] for entry in settings_list()]


class Read:
    """One place where the app reads an environment variable."""

    def __init__(self, name, where, default):
        self.name = name
        self.where = where
        self.default = default


def _constant(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, bool)):
        return node.value
    return None


def _is_environ(node):
    """``os.environ``, ``self.environ``: any attribute named environ."""
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _read_in(node):
    """``(name, default node or NO_DEFAULT)`` when ``node`` reads an environment variable."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        name = _constant(node.args[0])
        if not isinstance(name, str) or not NAME.match(name):
            return None
        method = node.func.attr
        if method in ENV_METHODS:
            if len(node.args) > 1:
                return name, node.args[1]
            for keyword in node.keywords:
                if keyword.arg == "default":
                    return name, keyword.value
            parameter = ENV_METHODS[method].parameters.get("default")
            if parameter is None or parameter.default is inspect.Parameter.empty:
                return name, NO_DEFAULT
            return name, ast.Constant(parameter.default)
        environ_call = _is_environ(node.func.value) and method in ("get", "setdefault", "pop")
        getenv = method == "getenv" and isinstance(node.func.value, ast.Name)
        if environ_call or getenv:
            return name, node.args[1] if len(node.args) > 1 else NO_DEFAULT
    if isinstance(node, ast.Subscript) and _is_environ(node.value):
        name = _constant(node.slice)
        if isinstance(name, str) and NAME.match(name):
            return name, NO_DEFAULT
    if isinstance(node, ast.Compare) and any(_is_environ(item) for item in node.comparators):
        name = _constant(node.left)
        if isinstance(name, str) and NAME.match(name):
            return name, NO_DEFAULT
    return None


def code_reads():
    """Every read of an environment variable in the app's modules (tests and conftest aside)."""
    reads = []
    for path in sorted(APP_DIR.rglob("*.py")):
        relative = path.relative_to(APP_DIR)
        if "tests" in relative.parts or relative.name == "conftest.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            found = _read_in(node)
            if found:
                reads.append(Read(found[0], f"app/{relative}:{node.lineno}", found[1]))
    return reads


def rendered_default(node):
    """The literal default as the docs write it (`true`, `6379`), or None when it is not literal.

    An empty default means "unset"; the list says what the app does then, so it is not compared.
    """
    if node is NO_DEFAULT:
        return None
    value = _constant(node)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def doc_rows():
    """``(line number, cells)`` of the table under the settings heading of docs/architecture.md."""
    lines = (REPO_DIR / DOC).read_text(encoding="utf-8").splitlines()
    starts = [number for number, line in enumerate(lines) if line.startswith(DOC_HEADING)]
    assert len(starts) == 1, f"{DOC} has {len(starts)} headings starting with {DOC_HEADING!r}"
    rows = []
    for number in range(starts[0] + 1, len(lines)):
        line = lines[number]
        if line.startswith("## "):
            break
        if line.startswith("|"):
            rows.append((number + 1, [cell.strip() for cell in line.strip().strip("|").split("|")]))
        elif rows:
            break
    assert len(rows) > 2, f"{DOC}: no table under {DOC_HEADING!r}"
    return rows[2:]  # the header and the separator


def doc_row(entry):
    """The line of the docs table that shows one entry of the list."""
    return f"| `{entry['name']}` | {entry['default']} | {entry['meaning']} |"


def test_the_list_is_well_formed():
    problems = []
    seen = set()
    for number, entry in enumerate(settings_list()):
        label = entry.get("name", f"entry {number}")
        if set(entry) != FIELDS:
            problems.append(f"{label}: fields {sorted(entry)}, expected {sorted(FIELDS)}")
            continue
        if not (isinstance(entry["name"], str) and NAME.match(entry["name"])):
            problems.append(f"{label}: not an environment variable name")
        if entry["name"] in seen:
            problems.append(f"{label}: listed twice")
        seen.add(entry["name"])
        if not isinstance(entry["env_file"], bool):
            problems.append(f"{label}: env_file must be true or false")
        for field in ("default", "meaning"):
            text = entry[field]
            if not (isinstance(text, str) and text.strip()) or "|" in text or "\n" in text:
                problems.append(f"{label}: {field} must be one line of text without '|'")
    assert not problems, f"{SETTINGS_LIST}:\n" + "\n".join(problems)


def test_the_app_reads_exactly_the_listed_variables():
    listed = set(listed_names())
    read = {}
    for found in code_reads():
        read.setdefault(found.name, []).append(found.where)
    problems = [
        f"{name} is read by the app ({', '.join(read[name])}) but not listed in {SETTINGS_LIST}"
        for name in sorted(set(read) - listed)
    ] + [
        f"{name} is listed in {SETTINGS_LIST} but the app does not read it"
        for name in sorted(listed - set(read))
    ]
    assert not problems, "\n".join(problems)


def test_literal_defaults_agree_with_the_list():
    defaults = {entry["name"]: entry["default"] for entry in settings_list()}
    problems = []
    for found in code_reads():
        expected = rendered_default(found.default)
        if expected is None or found.name not in defaults:
            continue
        if not defaults[found.name].startswith(f"`{expected}`"):
            problems.append(
                f"{found.name}: the app's default is `{expected}` ({found.where}),"
                f" {SETTINGS_LIST} says {defaults[found.name]!r}"
            )
    assert not problems, "\n".join(problems)


class RecordingEnviron(dict):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values):
        super().__init__(values)
        self.names = set()

    def get(self, name, default=None):
        self.names.add(name)
        return super().get(name, default)

    def setdefault(self, name, default=None):
        self.names.add(name)
        return super().setdefault(name, default)

    def __getitem__(self, name):
        self.names.add(name)
        return super().__getitem__(name)

    def __contains__(self, name):
        self.names.add(name)
        return super().__contains__(name)


@pytest.mark.parametrize("channel_layer", ["redis", "memory"])
def test_settings_read_no_unlisted_variable(monkeypatch, channel_layer):
    """Executing devops/settings.py reads listed variables only (dynamic names included)."""
    environ = RecordingEnviron({"DJANGO_SECRET_KEY": "k", "CHANNEL_LAYER": channel_layer})
    monkeypatch.setattr(os, "environ", environ)
    runpy.run_path(str(APP_DIR / "devops" / "settings.py"))
    unlisted = sorted(environ.names - set(listed_names()))
    assert not unlisted, f"devops/settings.py read {unlisted}, not listed in {SETTINGS_LIST}"
    unseen = sorted(environ.names - {found.name for found in code_reads()})
    assert not unseen, f"devops/settings.py read {unseen}, which this test's code scan misses"


def test_docs_table_is_the_list():
    entries = settings_list()
    rows = doc_rows()
    shown = [cells[0].strip("`") for _, cells in rows]
    listed = [entry["name"] for entry in entries]
    problems = [
        f"{DOC}'s settings table lacks {entry['name']}; add the row: {doc_row(entry)}"
        for entry in entries
        if entry["name"] not in shown
    ] + [
        f"{DOC}:{number} shows {cells[0]}, which {SETTINGS_LIST} does not list"
        for number, cells in rows
        if cells[0].strip("`") not in listed
    ]
    assert not problems, "\n".join(problems)
    assert shown == listed, f"{DOC}'s settings table is not in the order of {SETTINGS_LIST}"
    for (number, cells), entry in zip(rows, entries):
        line = "| " + " | ".join(cells) + " |"
        assert line == doc_row(entry), (
            f"{DOC}:{number}: the row of {entry['name']} differs from {SETTINGS_LIST};"
            f" expected: {doc_row(entry)}"
        )


def test_env_template_writes_listed_variables_only():
    allowed = {entry["name"] for entry in settings_list() if entry["env_file"]}
    problems = []
    text = (REPO_DIR / ENV_TEMPLATE).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        match = re.match(r"([A-Z][A-Z0-9_]*)=", line)
        if match and match.group(1) not in allowed:
            problems.append(
                f"{ENV_TEMPLATE}:{number} writes {match.group(1)}, which {SETTINGS_LIST}"
                " does not list with env_file: true"
            )
    assert not problems, "\n".join(problems)


def test_entrypoint_allow_list_is_the_list():
    """The entrypoint takes its allow-list from the list; names spelled out there must match it."""
    text = (REPO_DIR / ENTRYPOINT).read_text(encoding="utf-8")
    block = re.search(r"\{%-?\s*set\s+app__image_settings\s*=(.*?)-?%\}", text, re.DOTALL)
    assert block, f"{ENTRYPOINT} sets no app__image_settings (its allow-list)"
    spelled = re.findall(r"'([A-Z][A-Z0-9_]*)'", block.group(1))
    if "app__settings" in block.group(1) and not spelled:
        return
    allowed = [entry["name"] for entry in settings_list() if entry["env_file"]]
    problems = [
        f"{ENTRYPOINT} allows {name}, which {SETTINGS_LIST} does not list with env_file: true"
        for name in spelled
        if name not in allowed
    ] + [f"{ENTRYPOINT} does not allow {name}" for name in allowed if name not in spelled]
    assert not problems, "\n".join(problems)
