"""The Detect widget's model menu: models one click away, a file dialog for the rest.

The entries come from :func:`napari_vae_anomaly.models.catalog.model_entries` (bundled demo
model, the one just trained, recent models, the preferences' model folder) and are rebuilt
each time the menu opens, so a model trained meanwhile or dropped into the folder shows up.
Each entry's tooltip is its model card summary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QMenu

GROUP_TITLES = {"bundled": "", "trained": "Just trained", "recent": "Recent",
                "folder": "Model folder"}


def fill_model_menu(menu: QMenu, entries: list[Any], on_pick: Callable[[Path], Any],
                    on_browse: Callable[[], Any]) -> None:
    """Replace ``menu``'s actions by ``entries`` (grouped under section titles) + Browse."""
    from ..models.catalog import card_tooltip

    menu.clear()
    menu.setToolTipsVisible(True)
    group = None
    for entry in entries:
        if entry.group != group:
            group = entry.group
            if GROUP_TITLES.get(group):
                menu.addSection(GROUP_TITLES[group])
        action = menu.addAction(entry.label)
        action.setToolTip(card_tooltip(entry.path))
        action.setData(str(entry.path))
        action.triggered.connect(lambda _checked=False, p=entry.path: on_pick(p))
    if entries:
        menu.addSeparator()
    menu.addAction("Browse for a model file...").triggered.connect(lambda *_: on_browse())


def attach_model_menu(button: Any, entries: Callable[[], list[Any]],
                      on_pick: Callable[[Path], Any], on_browse: Callable[[], Any]) -> QMenu:
    """Give ``button`` a menu rebuilt from ``entries()`` each time it opens."""
    menu = QMenu(button)
    menu.aboutToShow.connect(lambda: fill_model_menu(menu, entries(), on_pick, on_browse))
    fill_model_menu(menu, entries(), on_pick, on_browse)
    button.setMenu(menu)
    return menu
