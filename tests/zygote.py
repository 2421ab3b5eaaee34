"""Fresh processes without their imports: a zygote imports torch, TVM and roigen once and
forks a child per run.  A child starts with no kernel built or loaded, as a new process
would, but skips the ~6 s of imports a new interpreter pays on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

SERVER = r"""
import json, os, sys, traceback
import torch, tvm, roigen.build, roigen.cache, roigen.ops  # what the children import; nothing runs

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(err, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stdout is the zygote's reply channel
        os.environ.update(job["env"])
        sys.argv = ["-c", *job["argv"]]
        code = 0
        try:
            exec(compile(job["script"], "<child>", "exec"), {"__name__": "__main__"})
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
"""


class Zygote:
    def __init__(self):
        self._proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        self._dir = tempfile.TemporaryDirectory(prefix="zygote-")

    def run(self, script: str, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        """Run `script` with `argv` in a forked child: its exit code (-N if killed by signal N)
        and stderr, as subprocess.run would give them."""
        stderr = Path(self._dir.name) / "stderr"
        job = {"script": script, "argv": argv, "env": env, "stderr": str(stderr)}
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        code = json.loads(self._proc.stdout.readline())
        return subprocess.CompletedProcess(argv, code, "", stderr.read_text())

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=60)
        self._dir.cleanup()
