"""Recording stores: plugins implementing the ``store_recording`` hook."""
