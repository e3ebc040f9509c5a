"""The dataset formats vreid reads: one list for the config (``data.format``) and the loader
(``vreid.data.loader.FORMATS``), in a module light enough for the CLI's start-up."""

from typing import Literal

DatasetFormat = Literal[
    "aic20", "aic20-sim", "aic21", "aic21-sim", "veri776", "vehicleid", "veriwild", "folder"
]
"""Every dataset format vreid reads (``vreid.data.load_dataset``); ``auto`` detects one."""
