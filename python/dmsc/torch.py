"""``import dmsc.torch`` registers dmsc as the ``torch.distributed`` backend ``"dmsc"``.

Then ``torch.distributed.init_process_group("dmsc")`` runs the group's collectives on CPU
tensors over dmsc; see :mod:`dmsc.torch_backend` for what is supported. Needs torch (an
optional dependency: ``import dmsc`` alone never imports it).
"""

from __future__ import annotations

from .torch_backend import BACKEND_NAME, DmscBackend, create_backend, register

__all__ = ["BACKEND_NAME", "DmscBackend", "create_backend", "register"]

register()
