#!/bin/sh
# Start the command as the cache's owner: as root, first give it every file of the cache that
# another user owns (the volume of an image that ran as root), then drop root for good.
set -eu

if [ "$(id -u)" = 0 ]; then
    uid=10001  # the Dockerfile's pypicache user
    mkdir -p "$PYPI_CACHE_DIR"
    # -xdev: never cross into another file system mounted below the cache.
    find "$PYPI_CACHE_DIR" -xdev ! -user "$uid" -exec chown -h "$uid:$uid" {} +
    exec setpriv --reuid="$uid" --regid="$uid" --clear-groups -- "$@"
fi
exec "$@"
