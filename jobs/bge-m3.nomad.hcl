job "bge-m3" {
  name = "bge-m3"
  type = "service"

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
        NOMADGS_MODEL_REPO   = "BAAI/bge-m3"
        NOMADGS_MODEL_FILE   = ""
        NOMADGS_MODEL_DIR    = "/models/huggingface/BAAI/bge-m3"
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

    task "text-embeddings-inference" {
      driver         = "docker"
      kill_timeout   = "30s"
      shutdown_delay = "30s"

      config {
        image = "ghcr.io/huggingface/text-embeddings-inference:cpu-1.9"
        args = [
          "--model-id",
          "/models/huggingface/BAAI/bge-m3",
          "--port",
          "${NOMAD_PORT_http}",
        ]
        network_mode       = "host"
        image_pull_timeout = "30m"
        shm_size           = 10737418240
      }

      service {
        name = "bge-m3"
        tags = [
          "nomadgs",
          "openai",
          "model=bge-m3",
          "backend=Text-Embeddings-Inference",
          "version=CPU-1.9",
          "nomadgs-metrics",
          "embedding",
        ]
        port         = "http"
        address_mode = "host"
        provider     = "consul"

        check {
          name     = "bge-m3 health"
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
          gpustack_model           = "bge-m3"
          gpustack_backend         = "Text-Embeddings-Inference"
          gpustack_backend_version = "CPU-1.9"
          gpustack_framework       = "cpu"
          gpustack_api             = "openai"
          nomadgs_job              = "bge-m3"
          gpustack_categories      = "embedding"
          metrics_path             = "/metrics"
        }
      }

      resources {
        cpu    = 8000
        memory = 8192
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
    gpustack_model           = "bge-m3"
    gpustack_backend         = "Text-Embeddings-Inference"
    gpustack_backend_version = "CPU-1.9"
    gpustack_framework       = "cpu"
    gpustack_source          = "huggingface"
    gpustack_model_ref       = "BAAI/bge-m3"
    gpustack_gpus            = "0"
    nomadgs_service          = "bge-m3"
    nomadgs_managed          = "true"
    gpustack_categories      = "embedding"
  }

  ui {
    description = "bge-m3: BAAI/bge-m3 served by Text-Embeddings-Inference CPU-1.9 on CPU. TEI (Text Embeddings Inference) is a high-performance engine by Hugging Face specifically optimized for deploying embedding and reranking models on CUDA or CPU."

    link {
      label = "Hugging Face"
      url   = "https://huggingface.co/BAAI/bge-m3"
    }
  }
}
