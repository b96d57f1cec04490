# Vault policy `rotor`: what rotor itself may do, for the Kubernetes auth role `rotor`
# (deploy/README.md, step 2). Least privilege for deploy/config/rotor.toml: KV v2 mount
# `secret`, store path_prefix `rotor-store`, views `rotor/database` and `rotor/jwt`. Change
# the paths here with those keys: tests/suite/deploy.rs fails when a path rotor writes is
# missing, and runs the store and both views on a real OpenBao with a token that holds
# this policy alone.
#
# Vault picks the most specific matching path, so the wider read-only rules below do not
# weaken the narrower ones, and nothing grants delete: rotor never deletes a KV path.

# The store: everything it writes lives below {path_prefix}/_rotor: each secret's values
# (KV version N is rotor version N), its state document `{tenant}/{key}/_rotor`, and the
# layout marker `_layout`. Writes are check-and-set (create for a new path, update after).
path "secret/data/rotor-store/_rotor/*" {
  capabilities = ["create", "read", "update"]
}

# The label mirror in each value path's custom metadata (cas_required, rotor_current, ...),
# and the listing of tenants and keys at start-up.
path "secret/metadata/rotor-store/_rotor/*" {
  capabilities = ["create", "read", "update", "list"]
}

# The layout 1 migration at start-up: before the marker exists, rotor lists the prefix and
# reads any secret rotor wrote there before it moved below _rotor. Read and list only: the
# old paths are left for an operator to delete.
path "secret/data/rotor-store/*" {
  capabilities = ["read"]
}

path "secret/metadata/rotor-store/*" {
  capabilities = ["read", "list"]
}

# The views: exactly their documents. Read, because every write is a check-and-set on the
# KV version read; create and update, for the first and every later write.
path "secret/data/rotor/database" {
  capabilities = ["create", "read", "update"]
}

path "secret/data/rotor/jwt" {
  capabilities = ["create", "read", "update"]
}

# The token's own lifetime: looked up at start (token auth) and renewed at two thirds of
# its TTL. Vault's `default` policy grants these too; stated here so the role works with
# token_no_default_policy = true.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
