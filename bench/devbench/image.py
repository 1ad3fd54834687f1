"""Image build: playbooks/image.yml under bench-image names (build container, repository, result file), so the
images, tags and result file of `bin/toolkit image-test` stay as they are; size and reference from the build's
result file."""

import json

from .common import LOGS, ROOT, log, sh
from .playbook import playbook

CONTAINER = "bench-image"
REPOSITORY = "devops-channels/bench-image"
RESULT_FILE = LOGS / "image-result.json"


def figures(seconds, result):
    """The row of the report from the build's result file (keys ref and size, in bytes)."""
    size = str(result.get("size", ""))
    return {
        "measured": True,
        "build_s": seconds,
        "image": result.get("ref"),
        "size_mb": round(int(size) / 1e6) if size.isdigit() else None,
    }


def run(args):
    path = ROOT / "playbooks" / "image.yml"
    if not path.exists():
        return {"measured": False, "reason": "playbooks/image.yml does not exist"}
    log(f"image: playbooks/image.yml (build container {CONTAINER}, repository {REPOSITORY})")
    names = {"image_build_container": CONTAINER, "image_repository": REPOSITORY, "image_result_file": str(RESULT_FILE)}
    RESULT_FILE.unlink(missing_ok=True)
    try:
        seconds, returncode, recap, _ = playbook(path, log_name="image", extra=names)
        if returncode != 0 or not RESULT_FILE.exists():
            failed = f" in {recap.failures()[-1]}" if recap and recap.failures() else ""
            logs = ".cache/bench/image.json and image.stderr"
            return {"measured": False, "reason": f"playbooks/image.yml failed (exit {returncode}{failed}, see {logs})"}
        row = figures(seconds, json.loads(RESULT_FILE.read_text()))
        log(f"image: {seconds:.0f} s, {row['image']}, {row['size_mb']} MB")
        return row
    finally:
        sh("docker", "rm", "-f", CONTAINER, check=False)
        for tag in sh("docker", "images", REPOSITORY, "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
            sh("docker", "rmi", tag, check=False)
