"""Side-by-side benchmarks of pypicache (issue 7): `python -m bench [--quick]`."""
