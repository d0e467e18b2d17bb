"""Side-by-side benchmarks of pypicache: `python -m bench [--quick]`."""
