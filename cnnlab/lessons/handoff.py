"""What an experiment card hands to the Train page: the form's value of every field for a
config, so the page shows exactly the lesson's run (`cnnlab.views.train_form` reads them back)."""

from __future__ import annotations

from typing import Any

from cnnlab.training import resources
from cnnlab.training.config import TrainConfig
from cnnlab.views import train_form


def train_values(config: TrainConfig, full_found: bool, gpus: list[str]) -> dict[str, Any]:
    """Every field of the Train page's form (train_form.FIELDS) holding `config`. The form
    offers only the data sets this server has: "auto" (or "full" where it is missing) becomes
    the first it offers, as "auto" becomes the first device it offers. No subset is the whole
    set, as the form writes it."""
    values = train_form.first_values(config, full_found, gpus)
    offered = train_form.data_options(full_found)
    data = config.data if config.data in offered else offered[0]
    values.update(data=data, subset=config.subset or resources.train_size(data))
    if config.device in train_form.device_options(gpus):
        values["device"] = config.device
    return values
