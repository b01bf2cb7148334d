#!/bin/sh
# Oblako backup: the database first, then the stored files (documents, conclusions, recordings).
#
#   deploy/backup.sh [DESTINATION]        (default /var/backups/oblako)
#
# Writes DESTINATION/<UTC time>/ with db.dump (PostgreSQL, pg_dump custom format) or db.sqlite
# (embedded default), storage.tar (STORAGE_DIR), recordings.tar (MEDIA_RECORDINGS_DIR when it is
# not inside STORAGE_DIR) and SHA256SUMS. Restore with deploy/restore.sh (README, "Backups").
#
# Why this order: the web app writes a file before the row that points to it commits, and the
# media server does the same for recordings. A dump taken first can only name files that
# already exist when the copy of the files starts, so every row of the dump finds its file;
# files written meanwhile are extra, and `flask oblako verify-storage` lists them as
# unreferenced after a restore (the periodic sweep moves them aside).
#
# Settings come from the environment, else from OBLAKO_ENV_FILE (default /etc/oblako/oblako.env):
# DATABASE_URL, STORAGE_DIR, MEDIA_RECORDINGS_DIR. Run it as the `oblako` user (cron or a
# systemd timer); copy the result off the host.
set -eu
umask 077

. "$(dirname "$0")/settings.sh"  # DATABASE_URL, STORAGE_DIR, RECORDINGS_DIR
PYTHON=${OBLAKO_PYTHON:-python3}

dest=${1:-/var/backups/oblako}/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$dest"

# 1. The database.
case "$DATABASE_URL" in
    postgres*)
        # pg_dump takes libpq URLs: postgresql://, without SQLAlchemy's "+psycopg".
        pg_url=$(printf '%s' "$DATABASE_URL" | sed 's|^postgres[a-z]*+[a-z0-9]*://|postgresql://|; s|^postgres://|postgresql://|')
        pg_dump --format=custom --no-owner --file="$dest/db.dump" "$pg_url"
        ;;
    sqlite*)
        db_path=${DATABASE_URL#sqlite:///}
        # SQLite's online backup: a consistent copy while the service writes (WAL).
        "$PYTHON" -c 'import sqlite3, sys
src = sqlite3.connect(sys.argv[1]); dst = sqlite3.connect(sys.argv[2])
src.backup(dst); dst.close(); src.close()' "$db_path" "$dest/db.sqlite"
        ;;
    *)
        echo "backup: DATABASE_URL is not set (or not PostgreSQL / SQLite)" >&2
        exit 2
        ;;
esac

# 2. The files, after the database. Temp files of uploads in flight are left out.
tar -C "$STORAGE_DIR" --exclude='*.part' -cf "$dest/storage.tar" .
case "$(realpath -m "$RECORDINGS_DIR")/" in
    "$(realpath -m "$STORAGE_DIR")"/*) ;;  # inside STORAGE_DIR: already in storage.tar
    *) [ -d "$RECORDINGS_DIR" ] && tar -C "$RECORDINGS_DIR" --exclude='*.part' -cf "$dest/recordings.tar" . ;;
esac

(cd "$dest" && sha256sum -- * > SHA256SUMS)
echo "$dest"
