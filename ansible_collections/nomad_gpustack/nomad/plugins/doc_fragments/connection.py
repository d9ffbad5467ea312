# Copyright: nomad-gpustack developers
# Apache License 2.0 (see the repository's LICENSE)
"""Options shared by the plugins that talk to Nomad."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  nomad_addr:
    description:
      - Nomad HTTP address, C(http://) or C(https://).
      - Defaults to E(NOMAD_ADDR), else C(http://127.0.0.1:4646).
    type: str
    aliases: [address]
  token:
    description:
      - Nomad ACL token (the secret ID), sent as C(X-Nomad-Token). Never logged nor returned.
      - Defaults to E(NOMAD_TOKEN).
    type: str
  namespace:
    description:
      - Nomad namespace. Defaults to E(NOMAD_NAMESPACE), else the job's own namespace, else C(default).
    type: str
  region:
    description:
      - Nomad region to send the requests to. Defaults to E(NOMAD_REGION).
    type: str
  ca_cert:
    description:
      - CA certificate file to verify Nomad's certificate. Defaults to E(NOMAD_CACERT).
    type: path
  ca_path:
    description:
      - Folder of CA certificates to verify Nomad's certificate. Defaults to E(NOMAD_CAPATH).
    type: path
  client_cert:
    description:
      - Client certificate for mutual TLS. Defaults to E(NOMAD_CLIENT_CERT).
    type: path
  client_key:
    description:
      - Key of O(client_cert). Defaults to E(NOMAD_CLIENT_KEY).
    type: path
  tls_server_name:
    description:
      - Server name to verify in Nomad's certificate instead of the address's host.
        Defaults to E(NOMAD_TLS_SERVER_NAME).
    type: str
  validate_certs:
    description:
      - Verify Nomad's TLS certificate. On unless this is V(false) or E(NOMAD_SKIP_VERIFY) is true.
      - Without verification the connection (and the token) can be intercepted.
    type: bool
notes:
  - E(NOMAD_HTTP_AUTH) (C(user:password) for HTTP basic auth in front of Nomad) is honoured as by the C(nomad) CLI.
  - The nomad-gpustack package is on no package index. Install it in the Python that runs the module from a clone
    of its repository, C(python3 -m pip install PATH) with PATH the clone or a wheel built in it
    (C(python3 -m pip wheel --no-deps -w dist .)); the collection's README says how.
  - 'With C(connection: local), C(ansible_python_interpreter: "{{ ansible_playbook_python }}") runs the module in the
    Python that runs Ansible; otherwise Ansible may pick another Python of the host, one without the package.'
requirements:
  - nomad-gpustack (the Python package, same version as this collection) in the Python that runs the plugin
"""
