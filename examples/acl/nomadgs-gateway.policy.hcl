# The Nomad ACL policy of `nomadgs gateway` when it scales models to zero and back (on when NOMAD_ADDR or
# --address is set; --no-scale-to-zero turns it off, and then the gateway needs no Nomad token at all).
#
#   list-jobs   follow the job list (one blocking query on /v1/jobs?meta=true) to know the models that may be
#               at zero instances, which Consul does not list
#   read-job    read a group's count before scaling it (GET /v1/job/:id/scale) and a job's modify index
#   scale-job   scale a group to 1 when a request arrives, and to 0 when idle (POST /v1/job/:id/scale)
#
# Create the policy and a token for the gateway:
#   nomad acl policy apply -description "nomadgs gateway: scale to zero" nomadgs-gateway nomadgs-gateway.policy.hcl
#   nomad acl token create -name nomadgs-gateway -policy nomadgs-gateway
# and give the token's Secret ID to the gateway as NOMAD_TOKEN (or --token-file). Use the namespace of your
# model jobs (NOMAD_NAMESPACE / --namespace) instead of "default".
namespace "default" {
  capabilities = ["list-jobs", "read-job", "scale-job"]
}
