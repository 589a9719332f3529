#!/usr/bin/python
"""enclave_files: write a set of small text files into one directory in a single round trip.

ansible.builtin.copy in a loop costs a connection round trip or more per file: installing the on-host tools
(about twenty files) took 10 to 20 s of every no-op run on an idle sandbox and up to 90 s of an update under load.
Here the controller sends every file's text at once; the host writes only the files whose bytes differ (each
replaced atomically) and fixes owner, group and mode where they differ.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: enclave_files
short_description: Write a set of small text files into one directory in one round trip
description:
  - Each file whose bytes differ is replaced atomically (a temporary file in the same directory, then rename);
    owner, group and mode are then set where they differ. Files already right are not touched.
  - The directory must exist. Files in it that are not named are left alone.
  - Check mode reports what would change; diff mode shows each changed file's text.
options:
  dest:
    description: The directory the files go into.
    type: path
    required: true
  files:
    description: File name (no directories) to the file's text, written as UTF-8.
    type: dict
    required: true
extends_documentation_fragment: [files]
"""

RETURN = r"""
written:
  description: The names of the files whose bytes were (or, in check mode, would be) written.
  type: list
  elements: str
  returned: always
"""


def _refused_names(names: list[str]) -> list[str]:
    return [n for n in names if not n or n in (".", "..") or "/" in n or "\0" in n]


def _current(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _replace(path: Path, data: bytes) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".enclave-files-")
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def main() -> None:
    module = AnsibleModule(
        argument_spec={"dest": {"type": "path", "required": True}, "files": {"type": "dict", "required": True}},
        add_file_common_args=True,
        supports_check_mode=True,
    )
    dest = module.params["dest"]
    files = module.params["files"]
    refused = _refused_names(sorted(files))
    if refused:
        module.fail_json(msg=f"enclave_files: file names only, no directories: {refused}")
    if not Path(dest).is_dir():
        module.fail_json(msg=f"enclave_files: {dest} is not a directory")

    changed = False
    written = []
    diffs = []
    for name in sorted(files):
        path = Path(dest) / name
        data = str(files[name]).encode("utf-8")
        before = _current(path)
        if before != data:
            written.append(name)
            changed = True
            if module._diff:
                diffs.append({"before_header": str(path), "after_header": str(path),
                              "before": "" if before is None else before.decode("utf-8", "replace"),
                              "after": data.decode("utf-8")})
            if module.check_mode:
                continue  # attributes of a file not yet written cannot be compared
            _replace(path, data)
        attributes = module.load_file_common_arguments(module.params, path=str(path))
        changed = module.set_fs_attributes_if_different(attributes, changed)

    result = {"changed": changed, "written": written}
    if diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
