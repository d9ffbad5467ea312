job "qwen2-5-7b-instruct-autoscaled" {
  name        = "Qwen2.5-7B-Instruct-autoscaled"
  type        = "service"
  datacenters = ["dc1"]

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
        NOMADGS_MODEL_REPO   = "Qwen/Qwen2.5-7B-Instruct"
        NOMADGS_MODEL_FILE   = ""
        NOMADGS_MODEL_DIR    = "/models/huggingface/Qwen/Qwen2.5-7B-Instruct"
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

    task "vllm" {
      driver         = "docker"
      kill_timeout   = "30s"
      shutdown_delay = "30s"

      config {
        image      = "vllm/vllm-openai:v0.19.0"
        entrypoint = ["vllm", "serve"]
        args = [
          "/models/huggingface/Qwen/Qwen2.5-7B-Instruct",
          "--host",
          "${NOMAD_IP_http}",
          "--port",
          "${NOMAD_PORT_http}",
          "--served-model-name",
          "Qwen2.5-7B-Instruct-autoscaled",
          "--tensor-parallel-size",
          "1",
          "--max-model-len=16384",
          "--max-num-seqs=64",
          "--enable-prefix-caching",
        ]
        network_mode       = "host"
        image_pull_timeout = "30m"
        shm_size           = 10737418240
      }

      env {
        VLLM_NO_USAGE_STATS = "1"
      }

      service {
        name = "qwen2-5-7b-instruct-autoscaled"
        tags = [
          "nomadgs",
          "openai",
          "model=Qwen2.5-7B-Instruct-autoscaled",
          "backend=vLLM",
          "version=0.19.0",
          "nomadgs-metrics",
          "llm",
        ]
        port         = "http"
        address_mode = "host"
        provider     = "consul"

        check {
          name     = "Qwen2.5-7B-Instruct-autoscaled health"
          type     = "http"
          path     = "/v1/models"
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
          gpustack_model           = "Qwen2.5-7B-Instruct-autoscaled"
          gpustack_backend         = "vLLM"
          gpustack_backend_version = "0.19.0"
          gpustack_framework       = "cuda"
          gpustack_api             = "openai"
          nomadgs_job              = "qwen2-5-7b-instruct-autoscaled"
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

    scaling {
      min     = 1
      max     = 4
      enabled = true
      type    = "horizontal"

      policy {
        evaluation_interval = "30s"
        cooldown            = "10m"

        check "in_flight" {
          source       = "prometheus"
          query        = "((sum(avg_over_time(nomadgs_gateway_requests_in_flight{model=\"Qwen2.5-7B-Instruct-autoscaled\"}[1m])) or vector(0)) + (sum(avg_over_time(nomadgs_gateway_requests_held{model=\"Qwen2.5-7B-Instruct-autoscaled\"}[1m])) or vector(0))) / clamp_min(max(nomadgs_gateway_instances{model=\"Qwen2.5-7B-Instruct-autoscaled\"}) or vector(0), 1)"
          query_window = "1m"

          strategy "target-value" {
            target = 32
          }
        }

        check "schedule-baseline" {
          strategy "fixed-value" {
            value = 1
          }
        }

        check "schedule-workday" {
          schedule {
            start    = "0 8 * * MON-FRI"
            duration = "10h"
          }

          strategy "fixed-value" {
            value = 2
          }
        }
      }
    }
  }

  spread {
    attribute = "${node.unique.id}"
    weight    = 100
  }

  meta {
    gpustack_model           = "Qwen2.5-7B-Instruct-autoscaled"
    gpustack_backend         = "vLLM"
    gpustack_backend_version = "0.19.0"
    gpustack_framework       = "cuda"
    gpustack_source          = "huggingface"
    gpustack_model_ref       = "Qwen/Qwen2.5-7B-Instruct"
    gpustack_gpus            = "1"
    nomadgs_service          = "qwen2-5-7b-instruct-autoscaled"
    nomadgs_managed          = "true"
    gpustack_categories      = "llm"
  }

  ui {
    description = "Qwen2.5-7B-Instruct-autoscaled: Qwen/Qwen2.5-7B-Instruct served by vLLM 0.19.0 on 1× cuda. vLLM is a high-throughput, memory-efficient inference and serving engine for LLMs, with an OpenAI-compatible API. Tensor parallelism follows the GPUs of each replica."

    link {
      label = "Hugging Face"
      url   = "https://huggingface.co/Qwen/Qwen2.5-7B-Instruct"
    }
  }
}
