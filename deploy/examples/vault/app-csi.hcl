# Vault policy `app-csi`: what the Vault CSI provider reads for the example workload's pods
# (SecretProviderClass app-vault), through the Kubernetes auth role `app-csi` bound to
# ServiceAccount app in namespace app (deploy/README.md, "Workloads"). Read only: the two
# views rotor writes and the operator-managed documents the app uses. Never the store's
# `rotor-store/` paths (versions before they are promoted), nor rotor's own
# `rotor/postgres-admin` (the admin URL is rotor's, not the app's).
path "secret/data/rotor/database" {
  capabilities = ["read"]
}

path "secret/data/rotor/jwt" {
  capabilities = ["read"]
}

path "secret/data/rotor/api-keys" {
  capabilities = ["read"]
}

path "secret/data/rotor/supabase" {
  capabilities = ["read"]
}

path "secret/data/rotor/redis" {
  capabilities = ["read"]
}

path "secret/data/rotor/slack" {
  capabilities = ["read"]
}
