"""The only package that speaks to Label Studio; everything else sees `aldaemon.records`."""

from aldaemon.labelstudio.gateway import LabelStudioGateway
from aldaemon.labelstudio.http import count_requests
from aldaemon.labelstudio.labeling_config import parse_labeling_config
from aldaemon.labelstudio.projects import (
    NOT_GIVEN,
    SAMPLING_MODES,
    UNCERTAINTY_SAMPLING,
    NotGiven,
)
from aldaemon.labelstudio.webhooks import WEBHOOK_SECRET_HEADER

__all__ = [
    "NOT_GIVEN",
    "SAMPLING_MODES",
    "UNCERTAINTY_SAMPLING",
    "WEBHOOK_SECRET_HEADER",
    "LabelStudioGateway",
    "NotGiven",
    "count_requests",
    "parse_labeling_config",
]
