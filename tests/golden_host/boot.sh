#!/bin/sh
# PID 1 of a golden host: point PostgreSQL at this instance's port, then hand
# over to supervisord (this instance's programs: /golden/programs.conf).
set -eu
. /golden/ports.env
conf=/etc/postgresql/15/main/postgresql.conf
sed -i -E -e "s/^#?port = [0-9]+/port = $GOLDEN_PG_PORT/" \
    -e "s/^#?listen_addresses = '[^']*'/listen_addresses = '127.0.0.1'/" "$conf"
grep -q "^port = $GOLDEN_PG_PORT\b" "$conf" || { echo "golden-host: could not set port in $conf" >&2; exit 1; }
grep -q "^listen_addresses = '127.0.0.1'" "$conf" || { echo "golden-host: could not set listen_addresses" >&2; exit 1; }
mkdir -p /run/postgresql /var/log/supervisor
chown postgres:postgres /run/postgresql
cp /golden/programs.conf /etc/supervisor/conf.d/golden.conf
echo "golden-host: starting supervisord"
exec /usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf
