"""The one check of where a call may be placed or sent, so a value one command accepts is
never refused by another.

- `phone_number`: E.164 (the `+` optional: 3 to 15 digits; spaces and dashes dropped).
  What an outbound call dials (`dialplan call --to`, campaign rows) and the fleet config's
  numbers: LiveKit dials through a trunk, which adds the host, so a full SIP URI is
  refused there ("SipCallTo should be a phone number or SIP user").
- `dial_target`: a phone number or a SIP/tel URI: where `transfer_call` may send a caller
  (a SIP REFER takes either)."""

from __future__ import annotations

import re

E164 = re.compile(r"^\+?[0-9]{3,15}$")
_URI = re.compile(r"^((sip|sips):[^\s@]+@[^\s]+|tel:\+?[0-9\-]{3,20})$")
HOW = "a phone number in E.164 (+15550100) or a SIP URI (sip:desk@pbx.example.com)"


class NotDialable(ValueError):
    """Not a phone number or SIP/tel URI; the message says what is expected."""


def phone_number(value: str) -> str:
    """``value`` as E.164 digits (spaces and dashes dropped), or `NotDialable`."""
    cleaned = value.strip().replace(" ", "").replace("-", "")
    if not E164.match(cleaned):
        raise NotDialable(f"{value!r} is not a phone number; write it in E.164, e.g. +15550100")
    return cleaned


def dial_target(value: str) -> str:
    """A phone number (normalized like `phone_number`) or a SIP/tel URI, or `NotDialable`."""
    text = value.strip()
    if _URI.match(text):
        return text
    cleaned = text.replace(" ", "").replace("-", "")
    if E164.match(cleaned):
        return cleaned
    raise NotDialable(f"{value!r} is not {HOW}")
