# Vault policy `rotor-csi`: what the Vault CSI provider reads for the pods that mount
# SecretProviderClass rotor-vault, through the Kubernetes auth role `rotor-csi`
# (deploy/README.md, step 2). Read only, and only the documents below `rotor/`: the views
# rotor writes (rotor/database, rotor/jwt) and the operator-managed documents beside them
# (api-keys, supabase, redis, slack, postgres-admin). Never the store's `rotor-store/`
# paths, which also hold versions that were never promoted.
path "secret/data/rotor/*" {
  capabilities = ["read"]
}
