# A single-node Consul agent for running the platform in `consul` discovery mode on one VM:
#   consul agent -config-file=mesh/consul/agent.hcl
# In production, run a client agent on every VM (server = false, retry_join = [...]) and a
# three- or five-node server cluster; the services only ever talk to their local agent.
datacenter = "dc1"
data_dir   = "/var/lib/consul"
server           = true
bootstrap_expect = 1

# The services register over the local HTTP API (CONSUL_HTTP_ADDR) and are checked over gRPC.
bind_addr   = "127.0.0.1"
client_addr = "127.0.0.1"
ports {
  http = 8500
  grpc = 8502
}

ui_config {
  enabled = true
}

# With ACLs on, give each service a token with `service:write` on its own name and
# `service:read` on the peers it calls, and pass it as CONSUL_HTTP_TOKEN.
acl {
  enabled        = false
  default_policy = "deny"
}
