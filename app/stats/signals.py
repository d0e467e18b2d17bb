"""Signals lower layers send without knowing who listens (blinker, as Flask's own signals)."""
from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

# Sent by the download thread (app/fetch.py) once a file is published and recorded:
# sender=the Fetcher, path=..., size=bytes, seconds=time the body took to arrive.
file_cached = _signals.signal("file-cached")

# Sent by Upstream.get (app/upstream.py) after every upstream request: sender=the Upstream,
# outcome="ok", "not_found" or "error", seconds=time to the headers, message=the error's.
upstream_answered = _signals.signal("upstream-answered")

# Sent by app/auth.py for every login it did not already know: sender=the Logins, outcome=
# "accepted" or "refused" (a bcrypt check ran) or "throttled" (answered without one).
login_checked = _signals.signal("login-checked")
