"""bench/ on sys.path, as when bench/run.py runs (it imports devbench and wsload from its own directory)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
