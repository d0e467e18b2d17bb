"""`python -m pypicache`: the `pypicache` command, where its console script is not on PATH."""
from pypicache.cli import main

main()
