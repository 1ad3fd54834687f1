"""The benchmark suite behind bench/run.py: one module per concern (see bench/README.md, "Files")."""
