# Vault policy `rotor-csi`: what the Vault CSI provider reads for rotor's own pod (the
# SecretProviderClass rotor-vault), through the Kubernetes auth role `rotor-csi`
# (deploy/README.md, step 2). Read only, and only the operator-managed documents rotor
# itself needs: never a view rotor writes (rotor's pod mounts none) nor the store's
# `rotor-store/` paths, which also hold versions that were never promoted. The workloads'
# CSI reads have their own policy (deploy/examples/vault/app-csi.hcl).
path "secret/data/rotor/postgres-admin" {
  capabilities = ["read"]
}
