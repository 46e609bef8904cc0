"""SMS segment counting for billing: the project's one counter (`smsparts`), which the
producer's cost estimates use too, so what a campaign is estimated at is what it is billed."""

from __future__ import annotations

from smsparts import GSM_ALL as GSM_ALL
from smsparts import GSM_BASIC as GSM_BASIC
from smsparts import GSM_EXTENSION as GSM_EXTENSION
from smsparts import encoding_of as encoding_of
from smsparts import is_gsm as is_gsm
from smsparts import segment_count as segment_count
