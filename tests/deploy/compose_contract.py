"""The compose file's configuration contract: every Wharf container's
configuration, as `docker compose config` renders it (with .env.example),
passes its binary's --check-config.

    python3 tests/deploy/compose_contract.py RENDERED.json BIN_DIR

Paths inside the image are mapped back to the repository: mounted files to
their source, and what deploy/Dockerfile copies (/etc/wharf/profiles) to
where it comes from.
"""

import json
import os
import sys

from check_config import check

IMAGE_PATHS = {"/etc/wharf/profiles": "commander/profiles"}


def main(rendered_path, bin_dir):
    rendered = json.load(open(rendered_path))
    checked = 0
    for name, service in sorted(rendered["services"].items()):
        entrypoint = service.get("entrypoint") or []
        if not entrypoint or not entrypoint[0].startswith("/usr/local/bin/wharf"):
            continue
        binary = os.path.join(bin_dir, os.path.basename(entrypoint[0]))
        mounts = {
            volume["target"]: volume["source"]
            for volume in service.get("volumes", [])
            if volume.get("type") == "bind"
        }
        mapped = dict(IMAGE_PATHS, **mounts)
        env = {}
        for key, value in (service.get("environment") or {}).items():
            env[key] = mapped.get(value, value)
        # Settings the mounted file gives as image paths.
        env["WHARF_COMMANDER__PROFILES_DIR"] = IMAGE_PATHS["/etc/wharf/profiles"]
        check(f"compose service {name}", binary, entrypoint[1:] + (service.get("command") or []), env)
        checked += 1
    if checked != 3:
        sys.exit(f"expected the three Wharf services in the compose file, checked {checked}")


if __name__ == "__main__":
    main(*sys.argv[1:])
