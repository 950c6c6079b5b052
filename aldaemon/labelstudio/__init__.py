"""The only package that speaks to Label Studio; everything else sees `aldaemon.records`."""

from aldaemon.labelstudio.gateway import (
    NOT_GIVEN,
    SAMPLING_MODES,
    WEBHOOK_SECRET_HEADER,
    LabelStudioGateway,
    NotGiven,
)
from aldaemon.labelstudio.labeling_config import parse_labeling_config

__all__ = [
    "NOT_GIVEN",
    "SAMPLING_MODES",
    "WEBHOOK_SECRET_HEADER",
    "LabelStudioGateway",
    "NotGiven",
    "parse_labeling_config",
]
