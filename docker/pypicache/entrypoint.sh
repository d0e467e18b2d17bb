#!/bin/sh
# Start the command as the cache's owner: as root, first give it every file of the cache that
# another user owns (the volume of an image that ran as root), then drop root for good.
set -eu

if [ "$(id -u)" = 0 ]; then
    uid=10001  # the Dockerfile's pypicache user
    mkdir -p "$PYPI_CACHE_DIR"
    # The walk stats every file: minutes on a large cache, past the healthcheck's start
    # period. So it runs only when the top of the cache has another owner: the directory
    # itself or an entry right in it (files/, pages/, tmp/, locks/, the catalog and its
    # -wal), which is what a volume written by root, or a command run as root, leaves.
    if [ -n "$(find "$PYPI_CACHE_DIR" -maxdepth 1 ! -user "$uid" -print -quit)" ]; then
        # -xdev: never cross into another file system mounted below the cache.
        find "$PYPI_CACHE_DIR" -xdev ! -user "$uid" -exec chown -h "$uid:$uid" {} +
    fi
    exec setpriv --reuid="$uid" --regid="$uid" --clear-groups -- "$@"
fi
exec "$@"
