"""curvelab's client: one Keras callback that streams your own ``model.fit``
to a curvelab server, which explains its curves.

    import curvelab
    cb = curvelab.Callback(name="my run", probe_data=(x_train[:512], y_train[:512]))
    model.fit(x_train, y_train, validation_data=(x_val, y_val), callbacks=[cb])
    print(cb.run_id, cb.url)

``Callback`` is imported on first use: ``curvelab sync`` (and the server's
worker, which imports the measurement modules) need no callback machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Callback", "__version__", "sync"]

if TYPE_CHECKING:
    from curvelab import sync
    from curvelab.callback import Callback


def __getattr__(name: str) -> Any:
    if name == "Callback":
        from curvelab.callback import Callback

        return Callback
    if name == "sync":  # the module: curvelab.sync.sync(path), as `curvelab sync FILE`
        return importlib.import_module("curvelab.sync")
    raise AttributeError(f"module 'curvelab' has no attribute {name!r}")
