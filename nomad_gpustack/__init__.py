"""nomad-gpustack: compile GPUStack inference backends into HashiCorp Nomad jobs, submit and watch them.

The public API is small: load files with `nomad_gpustack.spec.loader`, compile with
`nomad_gpustack.compile.build.build`, and render with `nomad_gpustack.compile.build.render_text`.
The `nomadgs` command is built on the same functions.
"""

__version__ = "0.1.0"
