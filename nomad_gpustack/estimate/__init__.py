"""GPU memory estimation from model headers: how many GPUs a model needs, and of what size. A leaf: it
takes plain values (model facts, engine settings, GPU sizes) and imports nothing of the spec or compiler.

Pure core: `gguf`, `safetensors` (header readers), `facts` (ModelFacts), `engine` (an engine's memory
settings from argv tokens, env and categories), `memory` (formulas per engine), `plan` (estimate, check,
choose), `gpus` (known GPU models). I/O: `local` (local files, headers only), `hub` (the Hugging Face Hub
and its cache), `lookup` (which one, for a `ModelSource`).

A deployment's estimate (its metadata looked up, its engine's inputs read, the `nomadgs estimate` document)
is `compile.estimation`'s, the layer that reads deployments.
"""
