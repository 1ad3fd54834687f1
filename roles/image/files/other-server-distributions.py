"""Print the distributions that only the ASGI server the image does not run needs, one name per line.

Run with the venv's Python, given that server's distribution name (daphne or uvicorn). A distribution is printed
when the server needs it (its requirements with any of its extras, theirs with the extras they ask for) and no other
installed distribution needs it: channels' optional `daphne` extra keeps nothing, but a requirement of another
distribution on one of the server's dependencies keeps that dependency. Nothing is printed when the server is not
installed.
"""

import sys
from importlib.metadata import distributions

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a venv without packaging of its own: pip's copy (pip is still there while the image builds)
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name


def installed():
    return {canonicalize_name(d.metadata["Name"]): d for d in distributions()}


def needs(dist, dists, extras):
    """(name, extras) of the installed distributions `dist` requires on this platform with these extras of its own."""
    for line in dist.requires or []:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        marker = requirement.marker
        if name in dists and (marker is None or any(marker.evaluate({"extra": e}) for e in {"", *extras})):
            yield name, frozenset(requirement.extras)


def closure(roots, dists):
    """Every distribution the roots ((name, extras) pairs) need, with the extras each requirement asks for."""
    seen, todo = set(), list(roots)
    while todo:
        name, extras = todo.pop()
        if (name, extras) not in seen:
            seen.add((name, extras))
            todo.extend(needs(dists[name], dists, extras))
    return {name for name, _ in seen}


def only_needed_by(server, dists):
    if server not in dists:
        return set()
    # The server with any of its extras (uvicorn[standard]); everything else as installed, without extras of its own.
    theirs = closure([(server, frozenset(dists[server].metadata.get_all("Provides-Extra") or []))], dists)
    ours = closure([(name, frozenset()) for name in set(dists) - theirs], dists)
    return theirs - ours


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} SERVER_DISTRIBUTION")
    print("\n".join(sorted(only_needed_by(canonicalize_name(sys.argv[1]), installed()))))
