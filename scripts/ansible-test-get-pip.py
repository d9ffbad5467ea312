"""Stand-in for the get-pip.py that ansible-test downloads to bootstrap pip in its sanity venvs.

ansible-test fetches that script from a host this machine cannot reach; pip comes from the interpreter's own
`ensurepip` instead, then the packages ansible-test asks for come from the package index as usual.
"""

from __future__ import annotations

import subprocess
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")  # get-pip.py's own options

packages = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], check=True)
if packages:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *packages], check=True)
