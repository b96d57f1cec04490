#!/usr/bin/env bash
# Makes password authentication real for the roles rotor rotates on the machine's
# PostgreSQL, which otherwise trusts every local login (so a password would prove nothing).
#
# Idempotent, safe to run concurrently (a lock serialises runs):
# - puts, once, at the top of pg_hba.conf, rules requiring scram-sha-256 over TCP on
#   loopback for members of the group role `rotor_managed` (the first matching rule wins, so
#   they take precedence over the trust rules below them);
# - creates `rotor_managed NOLOGIN` if missing, and ensures password_encryption is
#   scram-sha-256;
# - reloads the configuration and waits until a wrong password is really refused.
#
# Needs the superuser `postgres` reachable with trust on 127.0.0.1 (the machine's setup)
# and write access to pg_hba.conf (root, or the postgres user).
set -euo pipefail

export PGOPTIONS="-c client_min_messages=warning"
PSQL=(psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "${PGDATABASE:-test}")

exec 9>/tmp/rotor-setup-postgres.lock
flock 9

hba=$("${PSQL[@]}" -c 'SHOW hba_file')
if ! grep -q '+rotor_managed' "$hba"; then
    if [ ! -w "$hba" ]; then
        echo "setup-postgres: $hba is not writable by $(id -un); run as root or postgres" >&2
        exit 1
    fi
    tmp=$(mktemp)
    {
        echo "# rotor: roles rotor rotates (members of rotor_managed) must prove their password."
        echo "host all +rotor_managed 127.0.0.1/32 scram-sha-256"
        echo "host all +rotor_managed ::1/128 scram-sha-256"
        cat "$hba"
    } >"$tmp"
    # Rewritten in place so the file keeps its owner and mode.
    cat "$tmp" >"$hba"
    rm -f "$tmp"
    echo "setup-postgres: added scram-sha-256 rules for +rotor_managed to $hba"
fi

"${PSQL[@]}" <<'SQL'
DO $$
BEGIN
    CREATE ROLE rotor_managed NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;
SQL

if [ "$("${PSQL[@]}" -c 'SHOW password_encryption')" != "scram-sha-256" ]; then
    "${PSQL[@]}" -c "ALTER SYSTEM SET password_encryption = 'scram-sha-256'"
fi
"${PSQL[@]}" -c 'SELECT pg_reload_conf()' >/dev/null

# The reload is asynchronous: wait until a member of rotor_managed is refused a wrong
# password, which is the property the tests rely on.
probe="rotor_setup_probe"
"${PSQL[@]}" <<SQL
DROP ROLE IF EXISTS $probe;
CREATE ROLE $probe LOGIN PASSWORD 'right-$$-password' IN ROLE rotor_managed;
SQL
refused=no
for _ in $(seq 1 100); do
    if ! PGPASSWORD="wrong-password" psql -X -q -h 127.0.0.1 -U "$probe" -d "${PGDATABASE:-test}" \
        -c 'SELECT 1' >/dev/null 2>&1; then
        refused=yes
        break
    fi
    sleep 0.1
done
"${PSQL[@]}" -c "DROP ROLE IF EXISTS $probe"
if [ "$refused" != yes ]; then
    echo "setup-postgres: a wrong password still logs in as a rotor_managed member; check $hba" >&2
    exit 1
fi
echo "setup-postgres: password authentication is enforced for +rotor_managed"
