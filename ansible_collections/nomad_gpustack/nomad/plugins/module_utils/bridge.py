# Copyright: nomad-gpustack developers
# Apache License 2.0 (see the repository's LICENSE)
"""The bridge from the collection's modules to the nomad_gpustack package: options, settings, errors, notes.

The package does the work (the same functions as the `nomadgs` command); this file only translates between
Ansible's parameters and results and the package's settings and errors. The package must be installed in
the Python that runs the module (`ansible_python_interpreter`).
"""

from __future__ import annotations

import os
import sys

from ansible.module_utils.basic import env_fallback, missing_required_lib

try:
    import nomad_gpustack

    HAS_NOMADGS = True
    NOMADGS_VERSION = nomad_gpustack.__version__
except ImportError:
    HAS_NOMADGS = False
    NOMADGS_VERSION = None

PACKAGE = "nomad-gpustack"
HIDDEN = "********"

# Nomad connection options, shared by the modules; documented in doc_fragments/connection.py.
CONNECTION_ARGS = dict(
    nomad_addr=dict(type="str", aliases=["address"], fallback=(env_fallback, ["NOMAD_ADDR"])),
    token=dict(type="str", no_log=True, fallback=(env_fallback, ["NOMAD_TOKEN"])),
    namespace=dict(type="str", fallback=(env_fallback, ["NOMAD_NAMESPACE"])),
    region=dict(type="str", fallback=(env_fallback, ["NOMAD_REGION"])),
    ca_cert=dict(type="path", fallback=(env_fallback, ["NOMAD_CACERT"])),
    ca_path=dict(type="path", fallback=(env_fallback, ["NOMAD_CAPATH"])),
    client_cert=dict(type="path", fallback=(env_fallback, ["NOMAD_CLIENT_CERT"])),
    client_key=dict(type="path", no_log=False, fallback=(env_fallback, ["NOMAD_CLIENT_KEY"])),
    tls_server_name=dict(type="str", fallback=(env_fallback, ["NOMAD_TLS_SERVER_NAME"])),
    validate_certs=dict(type="bool"),
)

# Following a rollout the task starts (model, model_rollout); documented in doc_fragments/rollout.py.
ROLLOUT_ARGS = dict(
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="str", default="2h"),
    force=dict(type="bool", default=False),
)


def install_hint():
    """How to install the package into the Python of this process. It is on no package index: it installs from
    a clone of its repository, or from a wheel built in one."""
    return (
        "nomad-gpustack is on no package index: install it from a clone of its repository with "
        f"`{sys.executable or 'python3'} -m pip install PATH`, PATH being the clone or a wheel built in it "
        "(`python3 -m pip wheel --no-deps -w dist .`), of the collection's version."
    )


def require_package(module):
    """Fail with the install line when nomad_gpustack cannot be imported."""
    if not HAS_NOMADGS:
        # The usual cause with connection: local: interpreter discovery found another Python than Ansible's.
        module.fail_json(
            msg=f"{missing_required_lib(PACKAGE)} {install_hint()} With connection: local, "
            f'`ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"` runs the modules in the Python '
            "that runs Ansible."
        )


def nomad_settings(params):
    """NomadSettings from the module's options over the NOMAD_* environment (as the CLI's flags are)."""
    from nomad_gpustack.settings import NomadSettings

    validate = params.get("validate_certs")
    return NomadSettings.from_env(
        os.environ,
        address=params.get("nomad_addr"),
        token=params.get("token"),
        token_source="the token option (or NOMAD_TOKEN)",
        namespace=params.get("namespace"),
        region=params.get("region"),
        ca_cert=params.get("ca_cert"),
        ca_path=params.get("ca_path"),
        client_cert=params.get("client_cert"),
        client_key=params.get("client_key"),
        server_name=params.get("tls_server_name"),
        skip_verify=None if validate is None else not validate,
    )


# The package's messages name the command's flags; in a module they are these options.
OPTION_WORDS = (
    ("use --force", "set force: true"),
    ("(watch with --wait-for-capacity)", "(wait_for_capacity: true waits for it)"),
    ("NOMAD_ADDR or --address", "nomad_addr or NOMAD_ADDR"),
    ("(or --namespace)", "(or the namespace option)"),
    ("(or --region)", "(or the region option)"),
    ("give --model PATH", "set the model option"),
    ("(--model PATH)", "(the model option)"),
)


def in_module_words(value):
    """`value` (text, or lists and dicts of it) with the command's flags named as this module's options."""
    if isinstance(value, str):
        for flag, option in OPTION_WORDS:
            value = value.replace(flag, option)
        return value
    if isinstance(value, dict):
        return {k: in_module_words(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [in_module_words(v) for v in value]
    return value


def scrub(value, secrets):
    """`value` (text, or lists and dicts of it) with every secret replaced: exception texts never echo one."""
    secrets = [s for s in secrets if s]
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, HIDDEN)
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return value


def error_result(exc):
    """The failure of a NomadgsError as module results: the CLI's plain words in `msg`, located problems."""
    from nomad_gpustack.errors import InputError, exit_code_for

    result = dict(msg=str(exc) or type(exc).__name__, exit_code=exit_code_for(exc))
    if isinstance(exc, InputError):
        result["problems"] = [
            dict(
                file=p.file,
                line=p.line,
                column=p.column,
                field=p.field,
                message=p.message,
                hint=p.hint,
            )
            for p in exc.problems
        ]
    return result


class Notes:
    """Collects the runner's notes and the watcher's progress for the module's result (a module cannot print)."""

    def __init__(self, module):
        self.module = module
        self.lines = []
        self.last = None

    # nomad_gpustack.nomad.runner.Notes
    def info(self, message):
        self.lines.append(message)

    def warning(self, message):
        self.module.warn(message)

    # nomad_gpustack.nomad.watcher.Reporter
    def update(self, assessment, elapsed):
        if assessment.headline != self.last:
            self.last = assessment.headline
            self.lines.append(f"{elapsed:.0f}s {assessment.phase}: {assessment.headline}")

    def note(self, message):
        self.lines.append(message)


def run_guarded(module, work, found=None):
    """Run `work()`, turning errors into a failed result in plain words: never a traceback, never the token.

    `found`: results `work` gathered before it failed (a dict it fills), returned with the failure."""
    from nomad_gpustack.errors import NomadgsError, exit_code_for

    secrets = [module.params.get("token"), os.environ.get("NOMAD_TOKEN"), os.environ.get("NOMAD_HTTP_AUTH")]
    try:
        result = work()
    except NomadgsError as exc:
        failure = in_module_words(error_result(exc))
        module.fail_json(**scrub({**(found or {}), **failure}, secrets))
    except KeyboardInterrupt as exc:
        module.fail_json(msg="interrupted", exit_code=exit_code_for(exc))
    except Exception as exc:  # a bug: say so in one line; the traceback would only hide the message
        module.fail_json(msg=scrub(f"unexpected error in nomad-gpustack: {type(exc).__name__}: {exc}", secrets))
    failed = result.pop("failed", False)
    if failed:
        result["msg"] = in_module_words(result.get("msg", ""))
        module.fail_json(**scrub(result, secrets))
    module.exit_json(**scrub(result, secrets))
