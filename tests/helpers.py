"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

#: ``--set`` values that make a synthetic-lt run take about a second on one CPU core.
TINY_SYNTHETIC = ("classes=4", "n_max=24", "test_per_class=5", "batch_size=16")


def tree_snapshot(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size: compare before/after to prove nothing changed."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file()}
