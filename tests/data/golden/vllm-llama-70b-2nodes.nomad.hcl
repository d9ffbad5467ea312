job "llama-70b" {
  name = "llama-70b"
  type = "service"

  constraint {
    attribute = "${attr.driver.docker.runtimes}"
    value     = "nvidia"
    operator  = "set_contains"
  }

  constraint {
    value    = "true"
    operator = "distinct_hosts"
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
        NOMADGS_MODEL_REPO   = "meta-llama/Llama-3.3-70B-Instruct"
        NOMADGS_MODEL_FILE   = ""
        NOMADGS_MODEL_DIR    = "/models/huggingface/meta-llama/Llama-3.3-70B-Instruct"
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
          "/models/huggingface/meta-llama/Llama-3.3-70B-Instruct",
          "--host",
          "${NOMAD_IP_http}",
          "--port",
          "${NOMAD_PORT_http}",
          "--served-model-name",
          "llama-70b",
          "--tensor-parallel-size",
          "8",
          "--pipeline-parallel-size",
          "2",
          "--distributed-executor-backend",
          "mp",
          "--nnodes",
          "2",
          "--node-rank",
          "0",
          "--master-addr",
          "${NOMAD_IP_http}",
          "--master-port",
          "${NOMAD_PORT_dist}",
          "--max-model-len=8192",
        ]
        network_mode       = "host"
        image_pull_timeout = "30m"
        shm_size           = 10737418240
      }

      env {
        VLLM_NO_USAGE_STATS = "1"
        CUDA_DEVICE_ORDER   = "PCI_BUS_ID"
      }

      service {
        name = "llama-70b"
        tags = [
          "nomadgs",
          "openai",
          "model=llama-70b",
          "backend=vLLM",
          "version=0.19.0",
          "nomadgs-metrics",
        ]
        port         = "http"
        address_mode = "host"
        provider     = "consul"

        check {
          name     = "llama-70b health"
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
          gpustack_model           = "llama-70b"
          gpustack_backend         = "vLLM"
          gpustack_backend_version = "0.19.0"
          gpustack_framework       = "cuda"
          gpustack_api             = "openai"
          nomadgs_job              = "llama-70b"
          metrics_path             = "/metrics"
        }
      }

      service {
        name         = "llama-70b-leader"
        tags         = ["replica-${NOMAD_ALLOC_INDEX}"]
        port         = "dist"
        address_mode = "host"
        provider     = "consul"
      }

      resources {
        cpu    = 4000
        memory = 16384

        device "nvidia/gpu" {
          count = 8
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

      port "dist" {}
    }
  }

  group "worker-0-1" {
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
        NOMADGS_MODEL_REPO   = "meta-llama/Llama-3.3-70B-Instruct"
        NOMADGS_MODEL_FILE   = ""
        NOMADGS_MODEL_DIR    = "/models/huggingface/meta-llama/Llama-3.3-70B-Instruct"
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
          "/models/huggingface/meta-llama/Llama-3.3-70B-Instruct",
          "--tensor-parallel-size",
          "8",
          "--pipeline-parallel-size",
          "2",
          "--distributed-executor-backend",
          "mp",
          "--nnodes",
          "2",
          "--node-rank",
          "${NOMADGS_NODE_RANK}",
          "--master-addr",
          "${NOMADGS_LEADER_IP}",
          "--master-port",
          "${NOMADGS_LEADER_PORT}",
          "--headless",
          "--max-model-len=8192",
        ]
        network_mode       = "host"
        image_pull_timeout = "30m"
        shm_size           = 10737418240
      }

      env {
        VLLM_NO_USAGE_STATS = "1"
        CUDA_DEVICE_ORDER   = "PCI_BUS_ID"
        NOMADGS_NODE_RANK   = "1"
      }

      service {
        name         = "llama-70b-worker"
        tags         = ["replica-0-rank-1", "rank-1"]
        port         = "http"
        address_mode = "host"
        provider     = "consul"
      }

      resources {
        cpu    = 4000
        memory = 16384

        device "nvidia/gpu" {
          count = 8
        }
      }

      template {
        destination = "local/nomadgs-distributed.env"
        data        = <<-EOT
          {{ with service "replica-0.llama-70b-leader" }}{{ with index . 0 -}}
          NOMADGS_LEADER_IP={{ .Address }}
          NOMADGS_LEADER_PORT={{ .Port }}
          {{ end }}{{ else }}{{ key "nomadgs/wait/llama-70b/leader" }}{{ end }}
        EOT
        change_mode = "restart"
        env         = true
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
      interval         = "30m"
      attempts         = 2
      delay            = "30s"
      mode             = "fail"
      render_templates = true
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
    gpustack_model           = "llama-70b"
    gpustack_backend         = "vLLM"
    gpustack_backend_version = "0.19.0"
    gpustack_framework       = "cuda"
    gpustack_source          = "huggingface"
    gpustack_model_ref       = "meta-llama/Llama-3.3-70B-Instruct"
    gpustack_gpus            = "8"
    nomadgs_service          = "llama-70b"
    nomadgs_managed          = "true"
  }

  ui {
    description = "llama-70b: meta-llama/Llama-3.3-70B-Instruct served by vLLM 0.19.0 on 8× cuda. vLLM is a high-throughput, memory-efficient inference and serving engine for LLMs, with an OpenAI-compatible API. Tensor parallelism follows the GPUs of each replica."

    link {
      label = "Hugging Face"
      url   = "https://huggingface.co/meta-llama/Llama-3.3-70B-Instruct"
    }
  }
}
