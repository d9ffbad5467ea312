job "qwen2-5-0-5b-instruct-gguf" {
  name = "qwen2.5-0.5b-instruct-gguf"
  type = "service"

  group "inference" {
    count = 2

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
        NOMADGS_MODEL_REPO   = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
        NOMADGS_MODEL_FILE   = "qwen2.5-0.5b-instruct-q4_k_m.gguf"
        NOMADGS_MODEL_DIR    = "/models/huggingface/Qwen/Qwen2.5-0.5B-Instruct-GGUF"
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

      volume_mount {
        volume      = "models"
        destination = "/models"
        read_only   = false
      }
    }

    task "llama-cpp" {
      driver         = "docker"
      kill_timeout   = "30s"
      shutdown_delay = "30s"

      config {
        image = "ghcr.io/ggml-org/llama.cpp:server"
        args = [
          "-m",
          "/models/huggingface/Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf",
          "--host",
          "0.0.0.0",
          "--port",
          "${NOMAD_PORT_http}",
          "--alias",
          "qwen2.5-0.5b-instruct-gguf",
          "--ctx-size",
          "8192",
          "--threads",
          "4",
          "--metrics",
        ]
        network_mode       = "host"
        image_pull_timeout = "30m"
        shm_size           = 10737418240
      }

      service {
        name = "qwen2-5-0-5b-instruct-gguf"
        tags = [
          "nomadgs",
          "openai",
          "model=qwen2.5-0.5b-instruct-gguf",
          "backend=llama.cpp",
          "version=cpu",
          "nomadgs-metrics",
          "llm",
        ]
        port         = "http"
        address_mode = "host"
        provider     = "consul"

        check {
          name     = "qwen2.5-0.5b-instruct-gguf health"
          type     = "http"
          path     = "/v1/models"
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
          gpustack_model           = "qwen2.5-0.5b-instruct-gguf"
          gpustack_backend         = "llama.cpp"
          gpustack_backend_version = "cpu"
          gpustack_framework       = "cpu"
          gpustack_api             = "openai"
          nomadgs_job              = "qwen2-5-0-5b-instruct-gguf"
          gpustack_categories      = "llm"
          metrics_path             = "/metrics"
        }
      }

      resources {
        cpu    = 4000
        memory = 4096
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
      healthy_deadline  = "10m"
      progress_deadline = "20m"
      auto_revert       = true
    }

    network {
      mode = "host"

      port "http" {}
    }
  }

  spread {
    attribute = "${node.unique.id}"
    weight    = 100
  }

  meta {
    gpustack_model           = "qwen2.5-0.5b-instruct-gguf"
    gpustack_backend         = "llama.cpp"
    gpustack_backend_version = "cpu"
    gpustack_framework       = "cpu"
    gpustack_source          = "huggingface"
    gpustack_model_ref       = "Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf"
    gpustack_gpus            = "0"
    nomadgs_service          = "qwen2-5-0-5b-instruct-gguf"
    nomadgs_managed          = "true"
    gpustack_categories      = "llm"
  }

  ui {
    description = "qwen2.5-0.5b-instruct-gguf: Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf served by llama.cpp cpu on CPU. llama.cpp (https://github.com/ggml-org/llama.cpp) is a lightweight, high-performance inference engine for running large language models locally."

    link {
      label = "Hugging Face"
      url   = "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF"
    }
  }
}
