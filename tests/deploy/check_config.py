"""What the compose and Helm contract checks share: running one Wharf
binary's --check-config with a container's environment."""

import os
import subprocess
import sys


def check(label, binary, args, env):
    """Runs `binary args --check-config` with `env` (and PATH); exits with
    the binary's problems when the configuration is refused."""
    command = [binary] + args + ["--check-config"]
    result = subprocess.run(
        command, env=dict(env, PATH=os.environ.get("PATH", "")), capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"{label}: {' '.join(command)} failed:\n{result.stderr}")
    print(f"{label}: {result.stdout.strip()}")
