# Apply nomadgs-rendered jobs with Terraform's Nomad provider.
#
#   nomadgs render examples/vllm-qwen2.5-7b-instruct.yaml --format hcl -o jobs/
#   terraform init && terraform apply
#
# Both forms work; pick one per job. The HCL form reads like a hand-written jobspec in plans;
# the JSON form is exactly what the HTTP API receives.

terraform {
  required_providers {
    nomad = {
      source  = "hashicorp/nomad"
      version = ">= 2.0"
    }
  }
}

provider "nomad" {
  # NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT ... are read from the environment.
}

# HCL jobspec, parsed by the provider.
resource "nomad_job" "qwen_7b" {
  jobspec = file("${path.module}/../../jobs/qwen2-5-7b-instruct.nomad.hcl")

  # Model loading is slow; let Terraform wait for the deployment like `nomadgs submit` does.
  detach = false
}

# API JSON ({"Job": {...}}), as `nomadgs render --format json` writes it.
resource "nomad_job" "llamacpp_cpu" {
  jobspec = file("${path.module}/../../jobs/qwen2-5-0-5b-instruct-gguf.nomad.json")
  json    = true
  detach  = false
}
