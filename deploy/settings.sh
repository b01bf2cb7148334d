# Sourced by deploy/backup.sh and deploy/restore.sh (not run on its own): the settings both
# read, from the environment, else from OBLAKO_ENV_FILE (default /etc/oblako/oblako.env).
ENV_FILE=${OBLAKO_ENV_FILE:-/etc/oblako/oblako.env}
setting() {  # $1: name; the environment wins over the file (read, never sourced)
    eval "value=\${$1:-}"
    if [ -z "$value" ] && [ -r "$ENV_FILE" ]; then
        value=$(sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1 | sed "s/^['\"]//; s/['\"]\$//")
    fi
    printf '%s' "$value"
}

DATABASE_URL=$(setting DATABASE_URL)
STORAGE_DIR=$(setting STORAGE_DIR)
RECORDINGS_DIR=$(setting MEDIA_RECORDINGS_DIR)
[ -n "$STORAGE_DIR" ] || STORAGE_DIR=/var/lib/oblako/storage
[ -n "$RECORDINGS_DIR" ] || RECORDINGS_DIR=$STORAGE_DIR/recordings
