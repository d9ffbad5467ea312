# Copyright: nomad-gpustack developers
# Apache License 2.0 (see the repository's LICENSE)
"""The `model_endpoints` lookup: healthy OpenAI base URLs of a model, from Consul."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: model_endpoints
short_description: OpenAI base URLs of the healthy instances of a model, from Consul
version_added: "0.1.0"
description:
  - Reads Consul's catalog and health checks for the services nomad-gpustack registers (tagged C(nomadgs)) and
    returns the OpenAI base URLs (C(http://host:port/v1)) of the instances of each model whose checks pass, as
    C(nomadgs endpoints) lists them. For templating client configurations.
  - A model with instances but none healthy gives no URL; a model with no instance at all is an error that names
    the closest model (a typo must not look like a model that is down).
  - Runs on the controller. With C(lookup), several URLs come back joined by commas; use C(query) (or
    C(wantlist=true)) for a list.
author:
  - nomad-gpustack developers (!UNKNOWN)
options:
  _terms:
    description: Model names, as C(nomadgs endpoints) lists them.
    required: true
    type: list
    elements: str
  consul_addr:
    description: Consul HTTP address. Defaults to E(CONSUL_HTTP_ADDR), else C(127.0.0.1:8500).
    type: str
    env:
      - name: CONSUL_HTTP_ADDR
  token:
    description: Consul ACL token. Defaults to E(CONSUL_HTTP_TOKEN).
    type: str
    env:
      - name: CONSUL_HTTP_TOKEN
  datacenter:
    description: Consul datacenter to read (default the agent's).
    type: str
  ca_cert:
    description: CA certificate file to verify Consul's certificate. Defaults to E(CONSUL_CACERT).
    type: path
    env:
      - name: CONSUL_CACERT
  validate_certs:
    description: Verify Consul's TLS certificate. On unless this is V(false) or E(CONSUL_HTTP_SSL_VERIFY) is false.
    type: bool
requirements:
  - nomad-gpustack (the Python package) in the Python that runs Ansible
notes:
  - E(CONSUL_HTTP_SSL), E(CONSUL_CAPATH), E(CONSUL_CLIENT_CERT), E(CONSUL_CLIENT_KEY) and E(CONSUL_TLS_SERVER_NAME)
    are honoured as by the C(consul) CLI.
"""

EXAMPLES = r"""
- name: A client configuration with every healthy replica of Qwen
  ansible.builtin.copy:
    dest: /etc/myapp/llm.json
    content: "{{ {'base_urls': query('nomad_gpustack.nomad.model_endpoints', 'Qwen2.5-7B-Instruct')} | to_nice_json }}"
    mode: "0644"

- name: One URL, from another Consul
  ansible.builtin.debug:
    msg: "{{ lookup('nomad_gpustack.nomad.model_endpoints', 'bge-m3', consul_addr='https://consul.example.com:8501') }}"
"""

RETURN = r"""
_raw:
  description: The OpenAI base URLs of the healthy instances of the models, sorted, each once.
  type: list
  elements: str
  sample: ["http://10.0.0.5:25123/v1", "http://10.0.0.6:21873/v1"]
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.nomad_gpustack.nomad.plugins.module_utils.bridge import install_hint

try:
    from nomad_gpustack.errors import NomadgsError

    IMPORT_ERROR = None
except ImportError as exc:
    IMPORT_ERROR = exc


def consul_settings(options):
    """ConsulSettings from the lookup's options over the CONSUL_* environment."""
    from dataclasses import replace

    from nomad_gpustack.settings import ConsulSettings

    settings = ConsulSettings.from_env(
        os.environ, address=options.get("consul_addr"), token=options.get("token"), datacenter=options.get("datacenter")
    )
    tls = settings.tls
    if options.get("ca_cert"):
        tls = replace(tls, ca_cert=options["ca_cert"])
    if options.get("validate_certs") is not None:
        tls = replace(tls, skip_verify=not options["validate_certs"])
    return replace(settings, tls=tls)


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if IMPORT_ERROR is not None:
            raise AnsibleLookupError(
                "nomad_gpustack.nomad.model_endpoints needs the nomad-gpustack package in the Python that runs "
                "Ansible. " + install_hint()
            )
        from nomad_gpustack.serving.lookup import healthy_base_urls

        self.set_options(var_options=variables, direct=kwargs)
        options = {
            name: self.get_option(name) for name in ("consul_addr", "token", "datacenter", "ca_cert", "validate_certs")
        }
        try:
            settings = consul_settings(options)
            urls = []
            for model in terms:
                urls.extend(u for u in healthy_base_urls(str(model), consul=settings) if u not in urls)
        except NomadgsError as exc:
            message = str(exc)
            if settings_token := options.get("token"):
                message = message.replace(settings_token, "********")
            raise AnsibleLookupError(f"model_endpoints: {message}") from None
        return urls
