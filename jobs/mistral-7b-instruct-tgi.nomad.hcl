job "mistral-7b-instruct-tgi" {
  name = "mistral-7b-instruct-tgi"
  type = "service"

  constraint {
    attribute = "${attr.driver.docker.runtimes}"
    value     = "nvidia"
    operator  = "set_contains"
  }

  group "inference" {
    count = 1

    task "download-model" {
      driver = "docker"

      lifecycle {
        hook    = "prestart"
        sidecar = false
      }

      config {
        image      = "python:3.12-slim"
        entrypoint = ["/bin/sh"]
        args       = ["/local/download.sh"]
      }

      env {
        NOMADGS_MODEL_SOURCE = "huggingface"
        NOMADGS_MODEL_REPO   = "mistralai/Mistral-7B-Instruct-v0.3"
        NOMADGS_MODEL_FILE   = ""
        NOMADGS_MODEL_DIR    = "/models/huggingface/mistralai/Mistral-7B-Instruct-v0.3"
      }

      resources {
        cpu    = 1000
        memory = 2048
      }

      template {
        destination = "local/download.sh"
        data        = <<-EOT
          #!/bin/sh
          # Download the model into the models host volume once; allocations that find it there skip this.
          set -e
          dir="$NOMADGS_MODEL_DIR"
          if [ -f "$dir/.nomadgs-complete" ]; then
            echo "model already present in $dir"
            exit 0
          fi
          mkdir -p "$dir"
          echo "downloading $NOMADGS_MODEL_REPO $NOMADGS_MODEL_FILE from $NOMADGS_MODEL_SOURCE into $dir"
          case "$NOMADGS_MODEL_SOURCE" in
            huggingface)
              # a prepared downloader image already has the tool: no install, no network beyond the hub
              command -v hf >/dev/null 2>&1 ||
                pip install --quiet --no-cache-dir --disable-pip-version-check "huggingface_hub[hf_xet]>=0.34"
              if [ -n "$NOMADGS_MODEL_FILE" ]; then
                hf download "$NOMADGS_MODEL_REPO" "$NOMADGS_MODEL_FILE" --local-dir "$dir"
              else
                hf download "$NOMADGS_MODEL_REPO" --local-dir "$dir"
              fi
              ;;
            model_scope)
              command -v modelscope >/dev/null 2>&1 ||
                pip install --quiet --no-cache-dir --disable-pip-version-check modelscope
              if [ -n "$NOMADGS_MODEL_FILE" ]; then
                modelscope download --model "$NOMADGS_MODEL_REPO" "$NOMADGS_MODEL_FILE" --local_dir "$dir"
              else
                modelscope download --model "$NOMADGS_MODEL_REPO" --local_dir "$dir"
              fi
              ;;
          esac
          touch "$dir/.nomadgs-complete"
          echo "model downloaded to $dir"
        EOT
        change_mode = "noop"
        perms       = "0755"
      }

      template {
        destination = "secrets/model-token.env"
        data        = "{{ with nomadVar \"nomad/jobs/mistral-7b-instruct-tgi\" }}{{ with .HF_TOKEN }}HF_TOKEN={{ . }}{{ end }}{{ end }}\n"
        change_mode = "noop"
        env         = true
      }

      volume_mount {
        volume      = "models"
        destination = "/models"
        read_only   = false
      }
    }

    task "custom" {
      driver         = "docker"
      kill_timeout   = "30s"
      shutdown_delay = "30s"

      config {
        image = "ghcr.io/huggingface/text-generation-inference:3.3.4"
        args = [
          "--model-id",
          "/models/huggingface/mistralai/Mistral-7B-Instruct-v0.3",
          "--hostname",
          "${NOMAD_IP_http}",
          "--port",
          "${NOMAD_PORT_http}",
          "--max-input-tokens",
          "8192",
        ]
        network_mode       = "host"
        image_pull_timeout = "30m"
        shm_size           = 10737418240
      }

      env {
        MAX_INPUT                        = "8192"
        GPUSTACK_MODEL_HEALTH_CHECK_PATH = "/health"
      }

      service {
        name = "mistral-7b-instruct-tgi"
        tags = [
          "nomadgs",
          "openai",
          "model=mistral-7b-instruct-tgi",
          "backend=Custom",
          "nomadgs-metrics",
          "llm",
        ]
        port         = "http"
        address_mode = "host"
        provider     = "consul"

        check {
          name     = "mistral-7b-instruct-tgi health"
          type     = "http"
          path     = "/health"
          interval = "10s"
          timeout  = "5s"
          method   = "GET"

          check_restart {
            limit           = 3
            grace           = "30m"
            ignore_warnings = false
          }
        }

        meta {
          gpustack_model           = "mistral-7b-instruct-tgi"
          gpustack_backend         = "Custom"
          gpustack_backend_version = ""
          gpustack_framework       = "cuda"
          gpustack_api             = "openai"
          nomadgs_job              = "mistral-7b-instruct-tgi"
          gpustack_categories      = "llm"
          metrics_path             = "/metrics"
        }
      }

      resources {
        cpu    = 4000
        memory = 24576

        device "nvidia/gpu" {
          count = 1

          constraint {
            attribute = "${device.attr.memory}"
            value     = "24 GiB"
            operator  = ">="
          }
        }
      }

      volume_mount {
        volume      = "models"
        destination = "/models"
        read_only   = false
      }
    }

    volume "models" {
      type      = "host"
      source    = "models"
      read_only = false
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
      healthy_deadline  = "30m"
      progress_deadline = "40m"
      auto_revert       = true
    }

    network {
      mode = "host"

      port "http" {}
    }
  }

  meta {
    gpustack_model           = "mistral-7b-instruct-tgi"
    gpustack_backend         = "Custom"
    gpustack_backend_version = ""
    gpustack_framework       = "cuda"
    gpustack_source          = "huggingface"
    gpustack_model_ref       = "mistralai/Mistral-7B-Instruct-v0.3"
    gpustack_gpus            = "1"
    nomadgs_service          = "mistral-7b-instruct-tgi"
    nomadgs_managed          = "true"
    gpustack_categories      = "llm"
  }

  ui {
    description = "mistral-7b-instruct-tgi: mistralai/Mistral-7B-Instruct-v0.3 served by Custom on 1× cuda."

    link {
      label = "Hugging Face"
      url   = "https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.3"
    }
  }
}
