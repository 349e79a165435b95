"""Print every ``*.tf`` file of a folder as JSON (python-hcl2), for the Terraform tests.

Runs inside the ``lint`` tool environment (python-hcl2 clashes with checkov's parser);
usage: ``python hcl_dump.py FOLDER`` → ``{"file.tf": {...}, ...}`` on stdout. A file that
does not parse is reported as ``{"__error__": message}`` so the test can name it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hcl2
from hcl2 import SerializationOptions

OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)


def main(folder: str) -> None:
    out = {}
    for path in sorted(Path(folder).glob("*.tf")):
        try:
            with path.open() as f:
                out[path.name] = hcl2.load(f, serialization_options=OPTIONS)
        except Exception as exc:  # any parse failure is a finding, reported by name
            out[path.name] = {"__error__": f"{type(exc).__name__}: {exc}"}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
