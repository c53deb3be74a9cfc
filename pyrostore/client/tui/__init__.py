"""``pyrostore client``: shop and watch the cluster in a full-screen terminal client (Textual).

It talks to the store only through :class:`pyrostore.Client`, in worker threads, so the screen
never waits on the network. The client fails over between frontends by itself; when none
answers, the status line and the cluster tab say so and the next refresh tries again. The
rows and panels it shows are the pure functions of :mod:`pyrostore.client.views`.

One module per tab (:mod:`.books`, :mod:`.orders`, :mod:`.admin`, :mod:`.cluster`), the buy
dialog (:mod:`.dialogs`), what forms accept (:mod:`.forms`), what tabs share (:mod:`.status`),
and the app that holds them (:mod:`.app`).
"""

from pyrostore.client.tui.app import StoreApp

__all__ = ["StoreApp"]
