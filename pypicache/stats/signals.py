"""Signals lower layers send without knowing who listens (blinker, as Flask's own signals)."""
from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

# Sent by the download thread (pypicache/fetch.py) once a file is published and recorded:
# sender=the Fetcher, path=..., size=bytes, seconds=time the body took to arrive.
file_cached = _signals.signal("file-cached")

# Sent by Upstream.get (pypicache/httpclient.py) after every upstream request: sender=the Upstream,
# outcome="ok", "not_found" or "error", seconds=time to the headers, message=the error's.
upstream_answered = _signals.signal("upstream-answered")

# Sent by the fetch-ahead threads (pypicache/prefetch.py), sender=the Prefetcher. fetched_ahead:
# the upstream was asked for something no client had asked for yet, kind="page", "metadata"
# or "file", key="page:<project>" or the file's path, at=when that fetch began (time.time()).
# fetch_ahead_dropped: count=work left undone (queue full, paused, no download slot to spare).
# fetch_ahead_failed: kind=the step that failed (fetching ahead then pauses).
AHEAD_KINDS = ("page", "metadata", "file")
fetched_ahead = _signals.signal("fetched-ahead")
fetch_ahead_dropped = _signals.signal("fetch-ahead-dropped")
fetch_ahead_failed = _signals.signal("fetch-ahead-failed")

# Sent by pypicache/auth.py for every login it did not already know: sender=the Logins, outcome=
# "accepted" or "refused" (a bcrypt check ran) or "throttled" (answered without one).
login_checked = _signals.signal("login-checked")

# Sent by pypicache/policyserve.py once per request and rule that refused something (or would have,
# in report mode): sender=the PolicyService, rule=..., mode="enforce" or "report",
# what="project" (a page refused), "page" (files left off a page) or "file" (a download),
# project=its canonical name, who=the client (policyserve.Who: address, user), refused=
# {filename (the project's name for a whole project): policy.Refusal} of this rule.
policy_refused = _signals.signal("policy-refused")

# Sent by the upload view (pypicache/views/uploads.py) for every upload it answers: sender=the local
# index (pypicache/uploads.py), outcome="accepted" or "refused".
upload_received = _signals.signal("upload-received")
