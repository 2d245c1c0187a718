"""One rank of the logging tests (see test_logging.py): join, all-reduce, leave, and report
what reached Python's ``logging``.

``capture``: a handler on the root logger keeps every record; at exit (after dmsc's own
exit hook has delivered its pending lines: atexit runs hooks last-registered first) the
records are printed as one ``RECORDS <json>`` line. ``plain``: logging is left unconfigured.
"""

import atexit
import json
import logging
import sys

records = []


class Keep(logging.Handler):
    def emit(self, record):
        records.append({"name": record.name, "level": record.levelno, "msg": record.getMessage()})


mode = sys.argv[1]
if mode == "capture":
    logging.getLogger().addHandler(Keep())
    # Registered before dmsc is imported, so it runs after dmsc's exit hook.
    atexit.register(lambda: print("RECORDS " + json.dumps(records), flush=True))

import numpy as np  # noqa: E402

import dmsc  # noqa: E402

comm = dmsc.init(timeout=60)
a = np.ones(1000, np.float32)
comm.all_reduce(a)
assert a[0] == comm.size
comm.destroy()
print("LOG-WORKER-DONE", flush=True)
