job "nomadgs-gateway" {
  name = "nomadgs-gateway"
  type = "service"

  constraint {
    value    = "true"
    operator = "distinct_hosts"
  }

  group "gateway" {
    count = 2

    task "gateway" {
      driver       = "docker"
      kill_timeout = "35s"
      kill_signal  = "SIGTERM"

      config {
        image = "local/nomadgs:0.1.0"
        args = [
          "gateway",
          "--listen",
          "${NOMAD_ADDR_http}",
          "--workers",
          "auto",
          "--drain-timeout",
          "30s",
          "--no-scale-to-zero",
        ]
        network_mode = "host"
      }

      env {
        CONSUL_HTTP_ADDR = "http://127.0.0.1:8500"
        NO_COLOR         = "1"
      }

      resources {
        cpu    = 1000
        memory = 512
      }

      template {
        destination = "secrets/gateway.env"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/nomadgs-gateway" }}
          {{ with .api_keys }}NOMADGS_GATEWAY_API_KEYS={{ . }}{{ end }}
          {{ with .nomad_token }}NOMAD_TOKEN={{ . }}{{ end }}
          {{ end }}
        EOT
        change_mode = "restart"
        env         = true
      }
    }

    update {
      max_parallel     = 1
      health_check     = "checks"
      min_healthy_time = "10s"
      healthy_deadline = "5m"
    }

    network {
      port "http" {
        static = 8080
      }
    }

    service {
      name     = "nomadgs-gateway"
      tags     = ["nomadgs-metrics"]
      port     = "http"
      provider = "consul"

      check {
        name     = "gateway health"
        type     = "http"
        path     = "/health"
        interval = "10s"
        timeout  = "2s"
      }

      meta {
        metrics_path = "/metrics"
      }
    }
  }
}
