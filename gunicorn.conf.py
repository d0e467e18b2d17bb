"""gunicorn settings for a checkout: the package's own (pypicache/gunicorn_conf.py), so that
`gunicorn -c gunicorn.conf.py` and `make serve` run what `pypicache serve` runs."""
import os
import sys

# gunicorn puts its working directory on sys.path only after it has read this file;
# put the project root there first so `pypicache` imports wherever gunicorn is started from.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Read afresh each time this file is read (gunicorn's reload on SIGHUP, a test's runpy), as
# the settings were when they lived here: an import alone would keep the first process's.
sys.modules.pop("pypicache.gunicorn_conf", None)
from pypicache.gunicorn_conf import *  # noqa: E402,F401,F403  (needs the path above)
