# The Consul ACL policy of `nomadgs gateway` (Consul with ACLs on; give its token as CONSUL_HTTP_TOKEN).
#
#   service_prefix, node_prefix  read  follow the models' services and their checks (the routing table)
#   key_prefix "nomadgs/activity/"  write  scale to zero with several gateways: each writes when it last served
#               each model that may be scaled to zero (nomadgs/activity/<model>/<gateway>) and reads the others'
#               before it scales one down; without it no model is scaled to zero (waking them still works)
#
# Create the policy and a token for the gateway:
#   consul acl policy create -name nomadgs-gateway -rules @nomadgs-gateway.consul.hcl
#   consul acl token create -description "nomadgs gateway" -policy-name nomadgs-gateway
service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
key_prefix "nomadgs/activity/" {
  policy = "write"
}
