#!/bin/sh
# Oblako restore from one deploy/backup.sh directory, onto an EMPTY database and storage.
#
#   deploy/restore.sh BACKUP_DIRECTORY
#
# Stop the service first (systemctl stop oblako-web oblako-worker 'oblako-media@*'). The
# database named by DATABASE_URL must exist and be empty (PostgreSQL: createdb -O oblako
# oblako); STORAGE_DIR (and MEDIA_RECORDINGS_DIR) must be empty or absent. Then, as `oblako`:
#   flask db upgrade            (a backup from an older release is brought up to this one)
#   flask oblako verify-storage (every row finds its file with its SHA-256; exit 0)
# and start the service. Settings: as deploy/backup.sh.
set -eu
umask 077

src=${1:?usage: restore.sh BACKUP_DIRECTORY}
. "$(dirname "$0")/settings.sh"  # DATABASE_URL, STORAGE_DIR, RECORDINGS_DIR

(cd "$src" && sha256sum --quiet --check SHA256SUMS)  # a damaged copy stops here

for dir in "$STORAGE_DIR" "$RECORDINGS_DIR"; do
    if [ -d "$dir" ] && [ -n "$(find "$dir" -type f -print -quit)" ]; then
        echo "restore: $dir is not empty; restore onto an empty store" >&2
        exit 2
    fi
done

case "$DATABASE_URL" in
    postgres*)
        pg_url=$(printf '%s' "$DATABASE_URL" | sed 's|^postgres[a-z]*+[a-z0-9]*://|postgresql://|; s|^postgres://|postgresql://|')
        pg_restore --no-owner --exit-on-error --dbname="$pg_url" "$src/db.dump"
        ;;
    sqlite*)
        db_path=${DATABASE_URL#sqlite:///}
        if [ -s "$db_path" ]; then
            echo "restore: $db_path exists; restore onto an empty database" >&2
            exit 2
        fi
        mkdir -p "$(dirname "$db_path")"
        cp "$src/db.sqlite" "$db_path"
        ;;
    *)
        echo "restore: DATABASE_URL is not set (or not PostgreSQL / SQLite)" >&2
        exit 2
        ;;
esac

mkdir -p "$STORAGE_DIR"
tar -C "$STORAGE_DIR" -xf "$src/storage.tar"
if [ -f "$src/recordings.tar" ]; then
    mkdir -p "$RECORDINGS_DIR"
    tar -C "$RECORDINGS_DIR" -xf "$src/recordings.tar"
fi
echo "restored from $src: now run 'flask db upgrade' and 'flask oblako verify-storage'"
