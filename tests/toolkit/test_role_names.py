"""The roles' own names: a task result (`register:`) or a fact (`set_fact`) outranks every role's defaults and
vars, so one named like a role variable silently replaces it for the rest of the play. An earlier commit derived
`asgi__executable` in roles/asgi/vars/main.yml while a stat task registered the same name: supervisor was given the
stat result as the command line and daphne never started."""

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"


def tasks_in(items):
    """Every task of a task list, blocks' tasks included."""
    for item in items or []:
        if not isinstance(item, dict):
            continue
        yield item
        for key in ("block", "rescue", "always"):
            yield from tasks_in(item.get(key))


def names_set_by(task):
    """The names a task gives values to for the rest of the play."""
    if "register" in task:
        yield "register", task["register"]
    for module in ("set_fact", "ansible.builtin.set_fact"):
        if isinstance(task.get(module), dict):
            for name in task[module]:
                if name != "cacheable":
                    yield "set_fact", name


def role_variables():
    """Each name in a role's defaults/main.yml or vars/main.yml, with the file that defines it."""
    names = {}
    for path in sorted(ROLES.glob("*/defaults/main.yml")) + sorted(ROLES.glob("*/vars/main.yml")):
        for name in yaml.safe_load(path.read_text()) or {}:
            names[name] = path.relative_to(ROLES.parent)
    return names


def task_files():
    return sorted(ROLES.glob("*/tasks/**/*.yml")) + sorted(ROLES.glob("*/handlers/**/*.yml"))


def test_the_roles_have_tasks_and_variables():
    assert len(task_files()) > 20
    assert "asgi_program" in role_variables()


@pytest.mark.parametrize("path", task_files(), ids=lambda p: str(p.relative_to(ROLES)))
def test_no_task_result_or_fact_shadows_a_role_variable(path):
    variables = role_variables()
    clashes = [
        f"{how}: {name} (defined in {variables[name]})"
        for task in tasks_in(yaml.safe_load(path.read_text()))
        for how, name in names_set_by(task)
        if name in variables
    ]
    assert not clashes, clashes


def test_a_clash_is_found():
    """The check itself: the task that broke daphne's command line is reported."""
    task = {"ansible.builtin.stat": {"path": "/x"}, "register": "asgi__executable"}
    nested = {"block": [{"ansible.builtin.set_fact": {"asgi_program": "x", "cacheable": False}}]}
    found = [name for item in tasks_in([task, nested]) for _, name in names_set_by(item)]
    assert found == ["asgi__executable", "asgi_program"]
    assert {"asgi__executable", "asgi_program"} <= set(role_variables())
