"""The LiveKit fleet: worker, telephony provisioning, outbound calls and campaigns."""
