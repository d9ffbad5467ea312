job "kokoro" {
  name = "kokoro"
  type = "service"

  constraint {
    attribute = "${attr.driver.docker.runtimes}"
    value     = "nvidia"
    operator  = "set_contains"
  }

  group "inference" {
    count = 1

    task "kokoro-fastapi" {
      driver         = "docker"
      kill_timeout   = "30s"
      shutdown_delay = "30s"

      config {
        image = "ghcr.io/remsky/kokoro-fastapi-gpu:latest"
        args = [
          "python",
          "-m",
          "uvicorn",
          "api.src.main:app",
          "--host",
          "0.0.0.0",
          "--port",
          "${NOMAD_PORT_http}",
          "--log-level",
          "debug",
        ]
        network_mode       = "host"
        image_pull_timeout = "30m"
        shm_size           = 10737418240
      }

      service {
        name = "kokoro"
        tags = [
          "nomadgs",
          "openai",
          "model=kokoro",
          "backend=Kokoro-FastAPI",
          "version=latest-gpu",
          "text_to_speech",
        ]
        port         = "http"
        address_mode = "host"
        provider     = "consul"

        check {
          name     = "kokoro health"
          type     = "http"
          path     = "/health"
          interval = "10s"
          timeout  = "5s"
          method   = "GET"

          check_restart {
            limit           = 3
            grace           = "10m"
            ignore_warnings = false
          }
        }

        meta {
          gpustack_model           = "kokoro"
          gpustack_backend         = "Kokoro-FastAPI"
          gpustack_backend_version = "latest-gpu"
          gpustack_framework       = "cuda"
          gpustack_api             = "openai"
          nomadgs_job              = "kokoro"
          gpustack_categories      = "text_to_speech"
        }
      }

      resources {
        cpu    = 4000
        memory = 8192

        device "nvidia/gpu" {
          count = 1

          constraint {
            attribute = "${device.attr.memory}"
            value     = "4 GiB"
            operator  = ">="
          }
        }
      }
    }

    restart {
      interval = "30m"
      attempts = 2
      delay    = "30s"
      mode     = "fail"
    }

    reschedule {
      delay          = "30s"
      delay_function = "exponential"
      max_delay      = "1h"
      unlimited      = true
    }

    update {
      max_parallel      = 1
      health_check      = "checks"
      min_healthy_time  = "10s"
      healthy_deadline  = "10m"
      progress_deadline = "20m"
      auto_revert       = true
    }

    network {
      mode = "host"

      port "http" {}
    }
  }

  meta {
    gpustack_model           = "kokoro"
    gpustack_backend         = "Kokoro-FastAPI"
    gpustack_backend_version = "latest-gpu"
    gpustack_framework       = "cuda"
    gpustack_source          = "image"
    gpustack_model_ref       = ""
    gpustack_gpus            = "1"
    nomadgs_service          = "kokoro"
    nomadgs_managed          = "true"
    gpustack_categories      = "text_to_speech"
  }

  ui {
    description = "kokoro: its image's built-in model served by Kokoro-FastAPI latest-gpu on 1× cuda. Kokoro-82M text-to-speech; voices af_bella, am_adam, bf_emma, ..."
  }
}
