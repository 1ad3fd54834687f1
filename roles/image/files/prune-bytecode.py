"""Delete the compiled bytecode of every module the processes do not import when they start, keep the rest.

Run with the release's Python and environment (the app role's bin/run) and -B, given the directory the servers import
the project from and what they import: applications (module:attribute), modules, and packages with every submodule
(package.*). It sets Django up, imports those, creates the channel layer, loads the URLconf, the migrate command and
every app's migrations (the container's entrypoint migrates at start); then, in every site-packages directory of
sys.path and in the standard library, it deletes each bytecode file that no imported module was read from. A module
imported later still works: Python compiles it from its source (in memory, where the process may not write). Prints
a JSON summary.
"""

import importlib
import json
import os
import pkgutil
import sys
import sysconfig

import django


def import_all(package):
    """The package and each submodule that imports here (not an optional one whose dependency is missing)."""
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if info.name.rpartition(".")[2] == "__main__":  # runs the program when imported
            continue
        try:
            importlib.import_module(info.name)
        except Exception:  # an optional part (another platform, a dependency that is not installed): skip it
            pass


def warm_up(targets):
    django.setup()
    for target in targets:
        module, _, attribute = target.partition(":")
        if module.endswith(".*"):
            import_all(module[:-2])
        elif attribute:
            getattr(importlib.import_module(module), attribute)
        else:
            importlib.import_module(module)
    from channels.layers import get_channel_layer
    from django.conf import settings
    from django.core.management import load_command_class
    from django.db.migrations.loader import MigrationLoader
    from django.urls import get_resolver

    get_channel_layer()
    if getattr(settings, "ROOT_URLCONF", None):
        len(get_resolver().url_patterns)  # the first request imports the URLconf and its views
    # The container's entrypoint migrates before the processes start: the command and every app's migrations.
    load_command_class("django.core", "migrate")
    MigrationLoader(None, ignore_no_migrations=True)


def used_bytecode():
    """The bytecode file of every module imported so far (what the interpreter would read for it)."""
    return {
        os.path.realpath(module.__cached__)
        for module in list(sys.modules.values())
        if getattr(module, "__cached__", None)
    }


def prune(roots, used):
    kept = pruned = 0
    for root in roots:
        for directory, _, files in os.walk(root):
            if os.path.basename(directory) != "__pycache__":
                continue
            for name in files:
                path = os.path.join(directory, name)
                size = os.path.getsize(path)
                if os.path.realpath(path) in used:
                    kept += size
                else:
                    os.remove(path)
                    pruned += size
            if not os.listdir(directory):
                os.rmdir(directory)
    return kept, pruned


def main(project_directory, targets):
    sys.path.insert(0, project_directory)
    warm_up(targets)
    site_packages = {p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)}
    roots = sorted({os.path.realpath(p) for p in site_packages | {sysconfig.get_paths()["stdlib"]}})
    kept, pruned = prune(roots, used_bytecode())
    print(json.dumps({"roots": roots, "kept_bytes": kept, "pruned_bytes": pruned}))


if __name__ == "__main__":
    if not sys.flags.dont_write_bytecode:
        sys.exit("run with python -B: the import must not write bytecode of its own")
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} PROJECT_DIRECTORY MODULE[:ATTRIBUTE]|PACKAGE.* ...")
    main(sys.argv[1], sys.argv[2:])
