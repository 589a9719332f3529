#!/usr/bin/python
"""enclave_directories: make a set of directories with owner, group and mode in a single round trip, and say which
of them did not exist before.

A stat loop followed by ansible.builtin.file in a loop cost two module runs per directory per host on every run
(the base role's five contract directories: ten runs per host, 7 to 10 s of every no-op deploy on the sandbox).
Here the controller sends the whole list once; the host creates what is missing (parents included, each created
parent given the same owner, group and mode, as ansible.builtin.file does) and fixes attributes where they differ.
"""

from __future__ import annotations

import os
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: enclave_directories
short_description: Make a set of directories with owner, group and mode in one round trip
description:
  - Each listed directory that is missing is created, with every missing parent; each created directory gets the
    entry's owner, group and mode (as ansible.builtin.file with state=directory does). Existing directories get
    owner, group and mode fixed where they differ.
  - A listed path that exists and is not a directory fails the task, naming it, and nothing after it is touched.
  - Check mode reports what would change; diff mode shows each directory's state before and after.
options:
  directories:
    description: The directories, in order (a parent before its children).
    type: list
    elements: dict
    required: true
    suboptions:
      path: {description: Absolute path of the directory., type: path, required: true}
      owner: {description: Its owner., type: str, required: true}
      group: {description: Its group., type: str, required: true}
      mode: {description: Its mode (octal string)., type: str, required: true}
"""

RETURN = r"""
created:
  description: The listed paths (as given) that did not exist before this run; parents created on the way are not
    listed. In check mode, those that would be created.
  type: list
  elements: str
  returned: always
"""


def _missing_chain(path: Path) -> list[Path]:
    """`path` and each missing parent of it, outermost first."""
    chain = []
    while not path.exists() and not path.is_symlink():
        chain.append(path)
        path = path.parent
    return list(reversed(chain))


def main() -> None:
    module = AnsibleModule(
        argument_spec={"directories": {"type": "list", "elements": "dict", "required": True, "options": {
            "path": {"type": "path", "required": True}, "owner": {"type": "str", "required": True},
            "group": {"type": "str", "required": True}, "mode": {"type": "str", "required": True}}}},
        supports_check_mode=True,
    )
    changed = False
    created = []
    diffs = []
    for entry in module.params["directories"]:
        path = Path(entry["path"])
        if not path.is_absolute():
            module.fail_json(msg=f"enclave_directories: {path} is not an absolute path", created=created)
        if path.exists() and not path.is_dir():
            module.fail_json(msg=f"enclave_directories: {path} exists and is not a directory", created=created)
        wanted = {"owner": entry["owner"], "group": entry["group"], "mode": entry["mode"]}
        chain = _missing_chain(path)
        if chain:
            created.append(entry["path"])
            changed = True
            diffs.append({"before": {"path": str(path), "state": "absent"},
                          "after": {"path": str(path), "state": "directory"}})
            if module.check_mode:
                continue  # attributes of a directory not yet made cannot be compared
            for step in chain:
                os.mkdir(step)
                attributes = module.load_file_common_arguments(wanted, path=str(step))
                changed = module.set_fs_attributes_if_different(attributes, changed, expand=False)
            continue
        diff = {"before": {"path": str(path)}, "after": {"path": str(path)}}
        attributes = module.load_file_common_arguments(wanted, path=str(path))
        changed = module.set_fs_attributes_if_different(attributes, changed, diff=diff, expand=False)
        if diff["before"] != diff["after"]:
            diffs.append(diff)

    result = {"changed": changed, "created": created}
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
