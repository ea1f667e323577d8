"""Issue 15: a Ray worker on a node without the driver's plugin file imports the shipped copy.

A real remote cluster is not available here, so the worker side of the Ray task (``ensure_plugins``) runs in a
fresh process given the payload the driver built (``plugin_payload``), on a "node" whose file system lacks the
plugin file, or holds another version of it at the same path, or holds the same file (a local cluster). The
task code is the same function the Ray task calls; only Ray's transport is left out (tested on a real local
cluster in test_plugins_runners.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = """\
import keras

import optimizers

optimizers.register("ShippedSGD", lambda model, learning_rate: keras.optimizers.SGD(learning_rate),
                    hyperparams=("learning_rate",), search={"learning_rate": {"log_uniform": [1e-3, 1e-1]}})
"""
OTHER_VERSION = PLUGIN.replace("ShippedSGD", "EditedSGD")

DRIVER = """\
import base64, json, sys
from optimizers import plugins
from runners.executors.ray import plugin_payload
plugins.load(sys.argv[1])
payload = [{**p, "source": base64.b64encode(p["source"]).decode()} for p in plugin_payload()]
print(json.dumps(payload))
"""
WORKER = """\
import base64, json, sys
import optimizers
from optimizers import plugins
from runners.executors.ray import ensure_plugins
payload = [{**p, "source": base64.b64decode(p["source"])} for p in json.loads(sys.stdin.read())]
ensure_plugins(payload)
ensure_plugins(payload)  # a second task in the same worker process: imported once
optimizers.make("ShippedSGD", None, learning_rate=0.01)
print(json.dumps({"provenance": plugins.provenance(), "names": sorted(optimizers.names())}))
"""


def _python(code: str, *args: str, stdin: str = "", tmpdir: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NLWU_ARG_")}
    env.update(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def _payload(plugin: Path) -> list[dict]:
    payload = json.loads(_python(DRIVER, str(plugin)))
    assert [p["path"] for p in payload] == [str(plugin.resolve())]
    assert base64.b64decode(payload[0]["source"]).decode() == PLUGIN
    return payload


def test_worker_imports_the_driver_file_where_unchanged_else_the_shipped_copy(tmp_path):
    plugin = tmp_path / "driver" / "shipped_plugin.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN)
    sha = hashlib.sha256(PLUGIN.encode()).hexdigest()
    payload = _payload(plugin)
    assert payload[0]["sha256"] == sha
    copy_under = lambda node: node / "nlwu-plugins" / sha / "shipped_plugin.py"  # noqa: E731

    # a node with the same file at the same path (a local cluster, a shared file system): imported in place
    node = tmp_path / "node_same"
    node.mkdir()
    answer = json.loads(_python(WORKER, stdin=json.dumps(payload), tmpdir=node))
    assert [p["path"] for p in answer["provenance"]] == [str(plugin.resolve())]
    assert not copy_under(node).exists()

    # a node with another version of the file at the driver's path: that version is NOT imported
    plugin.write_text(OTHER_VERSION)
    node = tmp_path / "node_edited"
    node.mkdir()
    answer = json.loads(_python(WORKER, stdin=json.dumps(payload), tmpdir=node))
    assert [(p["path"], p["sha256"]) for p in answer["provenance"]] == [(str(copy_under(node)), sha)]
    assert "EditedSGD" not in answer["names"] and "ShippedSGD" in answer["names"]

    # a node without the file (a remote machine): the copy under $TMPDIR/nlwu-plugins/<sha256>/ is imported
    plugin.unlink()
    node = tmp_path / "node_remote"
    node.mkdir()
    answer = json.loads(_python(WORKER, stdin=json.dumps(payload), tmpdir=node))
    assert copy_under(node).read_text() == PLUGIN
    assert answer["provenance"] == [
        {"module": "shipped_plugin", "path": str(copy_under(node)), "sha256": sha, "optimizers": ["ShippedSGD"]}
    ]
    assert "ShippedSGD" in answer["names"]
