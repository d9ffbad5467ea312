"""Start llama.cpp's HTTP server (xllamacpp, in-process) on 127.0.0.1 and run until SIGTERM/SIGINT.

usage: llama_launcher.py --model FILE.gguf --port N [--alias NAME] [--host 127.0.0.1] [--ctx-size N]
                          [--verbosity N] [--load-only] [--metrics]

--load-only exits once the model is loaded (with --verbosity 4, llama.cpp has logged its buffer sizes).
"""

from __future__ import annotations

import argparse
import os
import signal
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--alias", default="smollm2-135m")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--verbosity", type=int, default=None)
    parser.add_argument("--load-only", action="store_true")
    parser.add_argument("--metrics", action="store_true", help="serve GET /metrics, as llama-server --metrics")
    args = parser.parse_args()

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = 1
    params.cpuparams.n_threads = 2
    params.endpoint_metrics = args.metrics
    if args.verbosity is not None:
        params.verbosity = args.verbosity
    server = xlc.Server(params)
    print(f"listening={server.listening_address}", flush=True)
    if args.load_only:
        os._exit(0)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
