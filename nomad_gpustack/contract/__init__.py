"""The contract between the compiler and everything that reads its jobs: the one vocabulary both sides share.

`jobspec` (Nomad's job, as the API structs define it), `metadata` (the meta keys and service tags a compiled
job carries, each writer beside its reader), `request` (what one replica asks the scheduler for),
`frameworks` and `drivers` (what each accelerator framework and task driver needs of a job), and
`deploymentjob` (a compiled deployment as the Nomad side uses it). It imports nothing above the top-level
base modules, so the spec, the compiler, the Nomad side and discovery may all import it.
"""
